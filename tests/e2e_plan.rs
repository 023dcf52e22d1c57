//! Issue 16 end to end: `orgops plan` against the real control plane and `layers-sim`,
//! run as a user runs it (the release binary, a read-only kube identity), compared with
//! what the operator then does (the simulator's write counters).
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use serde_json::Value;
use support::world::{World, count, secret_value};
use support::{apply_yaml_ok, kubectl, kubectl_ok, read_only_kubeconfig, wait_for};

fn orgops_plan(kubeconfig: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_orgops"))
        .arg("plan")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("RUST_LOG")
        .output()
        .expect("run orgops plan")
}

fn ops(plan: &Value, name: &str) -> Vec<String> {
    let obj = plan["objects"]
        .as_array()
        .and_then(|a| a.iter().find(|o| o["name"] == name))
        .unwrap_or_else(|| panic!("{name} missing in plan: {plan:#}"));
    obj["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a["op"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The simulator route each plan op writes to.
fn route_of(op: &str) -> (&'static str, &'static str) {
    match op {
        "create-org" => ("POST", "/v1/organizations"),
        "claim-org" | "update-org" => ("PATCH", "/v1/organizations/:orgId"),
        "archive" => ("DELETE", "/v1/organizations/:orgId"),
        "suspend" => ("POST", "/v1/organizations/:orgId/suspend"),
        "resume" => ("POST", "/v1/organizations/:orgId/resume"),
        "set-credit-config" => ("PATCH", "/v1/organizations/:orgId/credit-config"),
        "allocate" => ("POST", "/v1/organizations/:orgId/credits/allocate"),
        "mint-key" => ("POST", "/v1/organizations/:orgId/api-keys"),
        "rotate-key" => ("POST", "/v1/organizations/:orgId/api-keys/:keyId/rotate"),
        "revoke-key" => ("DELETE", "/v1/organizations/:orgId/api-keys/:keyId"),
        "create-webhook" => ("POST", "/v1/webhook-endpoints"),
        "update-webhook" => ("PATCH", "/v1/webhook-endpoints/:endpointId"),
        "delete-webhook" => ("DELETE", "/v1/webhook-endpoints/:endpointId"),
        "rotate-webhook-secret" => ("POST", "/v1/webhook-endpoints/:endpointId/rotate-secret"),
        other => panic!("unknown op {other}"),
    }
}

fn writes_by_route(counters: &Value) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for (m, r) in [
        "create-org",
        "update-org",
        "archive",
        "suspend",
        "resume",
        "set-credit-config",
        "allocate",
        "mint-key",
        "rotate-key",
        "revoke-key",
        "create-webhook",
        "update-webhook",
        "delete-webhook",
        "rotate-webhook-secret",
    ]
    .map(route_of)
    {
        let n = count(counters, |method, route| method == m && route == r);
        out.insert((m.to_string(), r.to_string()), n);
    }
    out
}

fn delta(
    before: &BTreeMap<(String, String), u64>,
    after: &BTreeMap<(String, String), u64>,
) -> BTreeMap<(String, String), u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_exactly_what_the_operator_then_does_and_writes_nothing() {
    let mut w = World::new("plan", "3s").await;
    let ns = w.env.ns.clone();
    let dir = tempfile::tempdir().expect("tempdir");
    // Two customers in the cluster: `kept` will change, `gone` will be pruned.
    apply_yaml_ok(&w.corg_yaml("kept", ""));
    apply_yaml_ok(&w.corg_yaml("gone", ""));
    w.wait_ready("kept").await;
    w.wait_ready("gone").await;
    let ro = read_only_kubeconfig(&ns);
    // The plan's identity cannot write: the role is read-only.
    let denied = std::process::Command::new("kubectl")
        .args([
            "--kubeconfig",
            &ro.to_string_lossy(),
            "-n",
            &ns,
            "delete",
            "customerorg",
            "kept",
        ])
        .output()
        .expect("kubectl");
    assert!(
        !denied.status.success(),
        "the plan's identity must not be able to write"
    );

    // The input: `kept` with a credits raise (500 -> 800), a scope change and a suspend;
    // a new customer; `gone` left out.
    let kept = w
        .corg_yaml("kept", "  state: suspended\n")
        .replace("allocated: 500", "allocated: 800")
        .replace(
            "scopes: [content:read, content:write]",
            "scopes: [content:read]",
        );
    let fresh = w.corg_yaml("fresh", "");
    std::fs::write(dir.path().join("kept.yaml"), &kept).expect("write");
    std::fs::write(dir.path().join("fresh.yaml"), &fresh).expect("write");
    let before = w.sim.counters().await;
    let out = orgops_plan(
        &ro,
        &["-f", &dir.path().to_string_lossy(), "--prune", "-o", "json"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "changes => exit 2; stderr: {stderr}"
    );
    let plan: Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    // Planning wrote nothing to the provider.
    let after_plan = w.sim.counters().await;
    assert_eq!(
        count(&after_plan, |m, _| m != "GET"),
        count(&before, |m, _| m != "GET"),
        "orgops plan must not write to the provider"
    );
    let mut kept_ops = ops(&plan, "kept");
    kept_ops.sort();
    assert_eq!(kept_ops, ["allocate", "mint-key", "revoke-key", "suspend"]);
    let fresh_ops = ops(&plan, "fresh");
    assert_eq!(fresh_ops.first().map(String::as_str), Some("create-org"));
    for op in [
        "allocate",
        "mint-key",
        "create-webhook",
        "set-credit-config",
    ] {
        assert!(
            fresh_ops.iter().any(|o| o == op),
            "{op} missing: {fresh_ops:?}"
        );
    }
    assert_eq!(ops(&plan, "gone"), ["archive"]);
    let allocations: Vec<i64> = plan["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|o| o["actions"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["op"] == "allocate")
        .filter_map(|a| a["credits"].as_i64())
        .collect();
    assert_eq!(allocations.iter().sum::<i64>(), 300 + 500, "{plan:#}");
    assert_eq!(plan["summary"]["keysMinted"], 2);
    assert_eq!(plan["summary"]["keysRevoked"], 1);
    assert_eq!(plan["summary"]["orgsOffboarded"], 1);

    // Markdown for a pull request, text for a terminal: same plan.
    let md = orgops_plan(
        &ro,
        &[
            "-f",
            &dir.path().to_string_lossy(),
            "--prune",
            "-o",
            "markdown",
        ],
    );
    let md_text = String::from_utf8_lossy(&md.stdout);
    assert_eq!(md.status.code(), Some(2));
    assert!(md_text.contains("### orgops plan") && md_text.contains("| `"));
    assert!(md_text.contains("**archive org"), "{md_text}");

    let shown = orgops_plan(&ro, &["-f", &dir.path().to_string_lossy(), "--prune"]);
    println!("{}", String::from_utf8_lossy(&shown.stdout));

    // Apply it the way Git would, and compare what the operator did with the plan.
    let base = writes_by_route(&w.sim.counters().await);
    apply_yaml_ok(&kept);
    apply_yaml_ok(&fresh);
    kubectl_ok(&["delete", "customerorg", "gone", "-n", &ns, "--wait=false"]);
    w.wait_ready("kept").await;
    w.wait_ready("fresh").await;
    wait_for("gone offboarded", support::world::CONVERGE, || async {
        !kubectl(&["get", "customerorg", "gone", "-n", &ns])
            .status
            .success()
    })
    .await;
    // A further full resync of every object, so nothing the operator does later is missed.
    w.resyncs(2).await;
    let done = delta(&base, &writes_by_route(&w.sim.counters().await));
    let mut planned: BTreeMap<(String, String), u64> = BTreeMap::new();
    for name in ["kept", "fresh", "gone"] {
        for op in ops(&plan, name) {
            let (m, r) = route_of(&op);
            *planned.entry((m.to_string(), r.to_string())).or_default() += 1;
        }
    }
    assert_eq!(done, planned, "the operator's writes differ from the plan");

    // Converged: the same input now plans nothing (exit 0), except the prune already done.
    let again = orgops_plan(&ro, &["-f", &dir.path().to_string_lossy(), "--prune"]);
    let text = String::from_utf8_lossy(&again.stdout);
    assert_eq!(again.status.code(), Some(0), "{text}");
    assert!(
        text.contains("Plan: 0 of 2 CustomerOrg(s) change"),
        "{text}"
    );

    // No secret in any output: the parent key, minted keys, signing secrets.
    let mut secrets = vec![w.sim.parent_key().to_string()];
    for name in ["kept-integration", "fresh-integration"] {
        secrets.extend(secret_value(&w.env, name, "apiKey"));
    }
    for name in ["kept-crm-webhook", "fresh-crm-webhook"] {
        secrets.extend(secret_value(&w.env, name, "signingSecret"));
    }
    assert!(secrets.len() >= 3, "known secrets found: {}", secrets.len());
    for s in &secrets {
        for (what, text) in [
            ("json", String::from_utf8_lossy(&out.stdout)),
            ("markdown", md_text.clone()),
            ("text", text.clone()),
        ] {
            assert!(
                !text.contains(s.as_str()),
                "a secret leaked into the {what} plan"
            );
        }
    }
    w.op.kill();
    let _ = kubectl(&[
        "delete",
        "clusterrolebinding",
        &format!("orgops-plan-e2e-{ns}"),
    ]);
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_exits_1_naming_file_and_field_after_planning_the_rest() {
    let w = World::new("planbad", "30s").await;
    let ns = w.env.ns.clone();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a-good.yaml"), w.corg_yaml("good", "")).expect("write");
    std::fs::write(dir.path().join("b-broken.yaml"), "kind: [\n").expect("write");
    std::fs::write(
        dir.path().join("c-schema.yaml"),
        w.corg_yaml("bad", "")
            .replace("allocated: 500", "allocated: -5\n    monthlyCapp: 1"),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("d-kind.yaml"),
        "apiVersion: orgops.dev/v1alpha1\nkind: CustomerOrgz\nmetadata: {name: x}\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("e-provider.yaml"),
        w.corg_yaml("orphaned", "").replace(
            &format!("name: {}}}", w.provider),
            "name: no-such-provider}",
        ),
    )
    .expect("write");
    let ro = read_only_kubeconfig(&ns);
    let out = orgops_plan(&ro, &["-f", &dir.path().to_string_lossy()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    // The valid object is still planned.
    assert!(
        stdout.contains(&format!("CustomerOrg {ns}/good - new")),
        "{stdout}"
    );
    assert!(stdout.contains("+ create org"), "{stdout}");
    for want in [
        "b-broken.yaml#1: invalid YAML",
        "c-schema.yaml#1: .spec.credits.allocated: must be at least 0",
        "c-schema.yaml#1: .spec.credits.monthlyCapp: unknown field",
        "d-kind.yaml#1: unknown kind orgops.dev/v1alpha1 CustomerOrgz",
        "orphaned: OrgProvider \"no-such-provider\" does not exist",
    ] {
        assert!(stderr.contains(want), "{want:?} missing in:\n{stderr}");
    }
    assert!(!stdout.contains(w.sim.parent_key()) && !stderr.contains(w.sim.parent_key()));

    // -k: built by `kubectl kustomize`, like `kubectl apply -k`.
    let kdir = tempfile::tempdir().expect("tempdir");
    std::fs::write(kdir.path().join("good.yaml"), w.corg_yaml("good", "")).expect("write");
    std::fs::write(
        kdir.path().join("kustomization.yaml"),
        "resources: [good.yaml]\ncommonAnnotations: {team: billing}\n",
    )
    .expect("write");
    let out = orgops_plan(&ro, &["-k", &kdir.path().to_string_lossy(), "-o", "json"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    assert_eq!(plan["objects"][0]["name"], "good");
    assert_eq!(
        ops(&plan, "good").first().map(String::as_str),
        Some("create-org")
    );
    std::fs::write(
        kdir.path().join("kustomization.yaml"),
        "resources: [missing.yaml]\n",
    )
    .expect("write");
    let out = orgops_plan(&ro, &["-k", &kdir.path().to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kubectl kustomize failed"));

    // --prune and the offboarding guard: with a full window, the plan says the archive waits.
    apply_yaml_ok(&w.corg_yaml("held", ""));
    w.wait_ready("held").await;
    kubectl_ok(&[
        "patch",
        "orgprovider",
        &w.provider,
        "--type=merge",
        "-p",
        r#"{"spec":{"offboarding":{"maxPerHour":0}}}"#,
    ]);
    let good_only = dir.path().join("a-good.yaml");
    let out = orgops_plan(&ro, &["-f", &good_only.to_string_lossy(), "--prune"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains(&format!("CustomerOrg {ns}/held")), "{text}");
    assert!(text.contains("- archive org"), "{text}");
    assert!(text.contains("held by the offboarding guard"), "{text}");
    // No kubeconfig: exit 1 with a message, nothing planned.
    let none = std::process::Command::new(env!("CARGO_BIN_EXE_orgops"))
        .args(["plan", "-f", &dir.path().to_string_lossy()])
        .env("KUBECONFIG", dir.path().join("missing"))
        .env("HOME", dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("run");
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("cannot reach the cluster"));
    let _ = kubectl(&[
        "delete",
        "clusterrolebinding",
        &format!("orgops-plan-e2e-{ns}"),
    ]);
    w.cleanup().await;
}

/// Issue 31: an OrgProvider and a ParentWebhook in the input are planned, not skipped: a
/// changed provider field with its users and working credentials, a new provider whose
/// credentials Secret is missing (an error: it would never be Ready), a new endpoint with
/// the Secret its signing secret goes to. Nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_covers_org_providers_and_parent_webhooks() {
    let w = World::new("planother", "30s").await;
    let ns = w.env.ns.clone();
    apply_yaml_ok(&w.corg_yaml("user", ""));
    w.wait_ready("user").await;
    let writes_before = w.writes().await;
    let input = format!(
        r#"apiVersion: orgops.dev/v1beta1
kind: OrgProvider
metadata: {{name: {provider}}}
spec:
  type: layers
  baseUrl: {url}
  credentialsSecretRef: {{namespace: {ns}, name: parent-key, key: apiKey}}
  rateLimit: {{tier: partner}}
---
apiVersion: orgops.dev/v1beta1
kind: OrgProvider
metadata: {{name: {provider}-new}}
spec:
  type: gennia
  baseUrl: https://gennia.example.com
  credentialsSecretRef: {{namespace: {ns}, name: no-such-secret, key: apiKey}}
---
apiVersion: orgops.dev/v1beta1
kind: ParentWebhook
metadata: {{name: firehose, namespace: {ns}}}
spec:
  providerRef: {{name: {provider}}}
  url: https://hooks.example.com/firehose
  events: ["post.published", "job.failed"]
"#,
        provider = w.provider,
        url = w.sim.base_url(),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("others.yaml");
    std::fs::write(&file, input).expect("write");
    let ro = read_only_kubeconfig(&ns);
    let out = orgops_plan(&ro, &["-f", &file.to_string_lossy(), "-o", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the missing Secret is an error:\n{stderr}"
    );
    let plan: Value = serde_json::from_slice(&out.stdout).expect("JSON plan");
    let find = |kind: &str, name: &str| {
        plan["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .find(|o| o["kind"] == kind && o["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name} not planned: {plan:#}"))
            .clone()
    };
    let changed = find("OrgProvider", &w.provider);
    assert_eq!(changed["change"], "update", "{changed:#}");
    assert_eq!(
        changed["actions"][0]["text"],
        r#"spec.rateLimit: {"tier":"auto"} -> {"tier":"partner"}"#
    );
    let notes = changed["notes"].to_string();
    assert!(notes.contains("1 CustomerOrg(s) use it"), "{notes}");
    assert!(notes.contains("credentials authenticate"), "{notes}");
    let new = find("OrgProvider", &format!("{}-new", w.provider));
    assert_eq!(new["change"], "error");
    assert!(
        new["errors"]
            .to_string()
            .contains("no-such-secret does not exist"),
        "{new:#}"
    );
    let hook = find("ParentWebhook", "firehose");
    assert_eq!(hook["change"], "create");
    let ops: Vec<&str> = hook["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter_map(|a| a["op"].as_str())
        .collect();
    assert_eq!(ops, ["create-endpoint", "write-secret"]);
    assert!(stderr.contains("error: OrgProvider"), "{stderr}");
    // Nothing was written: no provider change, no ParentWebhook created.
    assert_eq!(w.writes().await, writes_before);
    assert!(
        !kubectl(&["get", "parentwebhook", "firehose", "-n", &ns])
            .status
            .success()
    );
    w.cleanup().await;
}

/// Issue 30: `orgops plan` knows money. The parent holds 3000 credits; the input asks for
/// four top-ups under `guardrails.maxCreditsPerOrg: 2000`: one above the bound is marked
/// HELD (with the approval that would send it), one above it but approved is not, and the
/// rest exceed what the parent holds: the plan prints the shortfall. All three formats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_the_shortfall_and_every_held_transfer() {
    let w = World::with("planmoney", &["--parent-credits", "3000"], &[]).await;
    let ns = w.env.ns.clone();
    w.patch_provider(&serde_json::json!({"spec": {"guardrails": {"maxCreditsPerOrg": 2000}}}));
    let corg = |name: &str, allocated: i64, approval: &str| {
        format!(
            r#"apiVersion: orgops.dev/v1beta1
kind: CustomerOrg
metadata:
  name: {name}
  namespace: {ns}
  annotations: {{{approval}}}
spec:
  providerRef: {{name: {provider}}}
  displayName: Customer {name}
  credits: {{allocated: {allocated}}}
"#,
            provider = w.provider
        )
    };
    let input = [
        corg("a", 1500, ""),
        corg("big", 2500, ""),
        corg("c", 1800, ""),
        corg("approved", 2100, r#"orgops.dev/confirm-credits: "1""#),
    ]
    .join("---\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("money.yaml");
    std::fs::write(&file, input).expect("write");
    let ro = read_only_kubeconfig(&ns);
    let writes_before = w.writes().await;
    let run = |format: &str| {
        let out = orgops_plan(&ro, &["-f", &file.to_string_lossy(), "-o", format]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "changes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };

    let plan: Value = serde_json::from_str(&run("json")).expect("JSON plan");
    let funds = &plan["funds"][0];
    assert_eq!(funds["provider"], w.provider.as_str(), "{plan:#}");
    assert_eq!(funds["parentBalance"], 3000);
    assert_eq!(funds["creditsMoved"], 1500 + 1800 + 2100);
    assert_eq!(funds["creditsHeld"], 2500);
    assert_eq!(funds["transfersHeld"], 1);
    assert_eq!(funds["shortfall"], 1500 + 1800 + 2100 - 3000);
    assert_eq!(plan["summary"]["transfersHeld"], 1);
    assert_eq!(plan["summary"]["shortfall"], 2400);
    let allocate = |name: &str| {
        plan["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .find(|o| o["name"] == name)
            .and_then(|o| {
                o["actions"]
                    .as_array()?
                    .iter()
                    .find(|a| a["op"] == "allocate")
                    .cloned()
            })
            .unwrap_or_else(|| panic!("{name} has no allocate step: {plan:#}"))
    };
    let held = allocate("big");
    assert_eq!(
        held["held"]["guardrails"][0], "maxCreditsPerOrg",
        "{held:#}"
    );
    assert_eq!(
        held["held"]["approveWith"],
        r#"orgops.dev/confirm-credits: "1""#
    );
    assert!(
        held["held"]["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("2500") && r.contains("2000")),
        "{held:#}"
    );
    for name in ["a", "c", "approved"] {
        assert!(allocate(name)["held"].is_null(), "{name} is sent");
    }
    assert!(
        allocate("approved")["text"]
            .as_str()
            .is_some_and(|t| t.contains("cannot cover")),
        "the top-up past the parent's balance says so: {plan:#}"
    );

    let text = run("text");
    assert!(
        text.contains("! move 2500 credits")
            && text.contains("HELD by guardrails.maxCreditsPerOrg")
            && text.contains(r#"approve with orgops.dev/confirm-credits: "1""#),
        "{text}"
    );
    assert!(
        text.contains("the parent holds 3000 credits, this plan moves 5400: SHORT by 2400 credits")
            && text.contains("1 top-up(s) of 2500 credits held by guardrails")
            && text.contains("the parent is 2400 credits short"),
        "{text}"
    );

    let md = run("markdown");
    assert!(
        md.contains(":warning: OrgProvider") && md.contains("SHORT by 2400 credits"),
        "{md}"
    );
    assert!(
        md.contains(":no_entry: ~~**move 2500 credits")
            && md.contains("**HELD by guardrails.maxCreditsPerOrg"),
        "{md}"
    );
    assert_eq!(w.writes().await, writes_before, "plan writes nothing");
    w.cleanup().await;
}
