//! `kubectl orgops` against the real control plane, the layers-sim binary and the orgops
//! operator (run `cargo build -p orgops -p layers-sim --bins` first).
//!
//! One world, several customers: Ready, Stalled (API rejection), paused, a deleted key
//! Secret, a revoked parent key, and every sample of deploy/samples/. Each view must name
//! the right cause, fit in 100 columns, parse as JSON, and never contain a secret.

mod plugin;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

use plugin::plugin;
use serde_json::Value;
use support::world::World;
use support::{ControlPlane, apply_yaml_ok, kubectl, wait_for_some};

const CONVERGE: Duration = Duration::from_secs(90);

/// Every output seen, for the secret scan at the end.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    fn status(&mut self, ns: &str, args: &[&str]) -> String {
        let mut all = vec!["status", "-n", ns];
        all.extend_from_slice(args);
        let run = plugin(&all);
        assert!(run.ok, "kubectl orgops {all:?} failed: {}", run.stderr);
        self.0.push(run.stdout.clone());
        self.0.push(run.stderr);
        run.stdout
    }

    /// The text view, checked to fit in 100 columns.
    fn text(&mut self, ns: &str, args: &[&str]) -> String {
        let out = self.status(ns, args);
        for line in out.lines() {
            assert!(
                line.chars().count() <= 100,
                "line over 100 columns ({}):\n{line}\n--- whole output ---\n{out}",
                line.chars().count()
            );
            assert!(!line.contains('\x1b'), "colour codes when piped: {line:?}");
        }
        out
    }

    fn json(&mut self, ns: &str, name: &str) -> Value {
        let out = self.status(ns, &[name, "-o", "json"]);
        let v: Value = serde_json::from_str(&out).expect("status -o json parses");
        assert_eq!(v["apiVersion"], "orgops.dev/kubectl-view/v1");
        assert_eq!(v["kind"], "CustomerOrgView");
        v
    }
}

/// The WHY line: `WHY        <cause> (from <source>)`.
fn why(out: &str) -> String {
    out.lines()
        .find(|l| l.starts_with("WHY"))
        .unwrap_or_else(|| panic!("no WHY line in:\n{out}"))
        .to_string()
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect()
}

/// The world's CustomerOrg (credits, a key, a webhook) with `metadata` as its metadata.
fn corg_yaml(w: &World, name: &str, metadata: &str) -> String {
    const STANDARD: &str = "metadata: {plan: growth}";
    let yaml = w.corg_yaml(name, "");
    assert!(yaml.contains(STANDARD), "World::corg_yaml changed:\n{yaml}");
    yaml.replace(STANDARD, &format!("metadata: {metadata}"))
}

/// Each sample CustomerOrg, moved to `ns` and pointed at `provider`.
fn samples(ns: &str, provider: &str) -> Vec<(String, String)> {
    let dir = support::workspace_root().join("deploy/samples");
    let mut out = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("read deploy/samples")
        .flatten()
        .map(|e| e.path())
        // Files only: per-provider subdirectories (e.g. gennia/) are not Layers samples.
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("read sample");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let Ok(mut v) = <serde_yaml::Value as serde::Deserialize>::deserialize(doc) else {
                continue;
            };
            if v["kind"] != "CustomerOrg" {
                continue;
            }
            let name = v["metadata"]["name"].as_str().expect("name").to_string();
            v["metadata"]["namespace"] = ns.into();
            let spec = v["spec"].as_mapping_mut().expect("spec");
            let mut pref = serde_yaml::Mapping::new();
            pref.insert("name".into(), provider.into());
            spec.insert("providerRef".into(), pref.into());
            // Unique per test run: externalId is how the operator adopts.
            let ext = format!("{ns}-{name}");
            spec.insert("externalId".into(), ext.into());
            out.push((name, serde_yaml::to_string(&v).expect("sample YAML")));
        }
    }
    out
}

fn corg(ns: &str, name: &str) -> Value {
    let out = kubectl(&["get", "customerorg", name, "-n", ns, "-o", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn has_condition(v: &Value, type_: &str, status: &str, reason: Option<&str>) -> bool {
    let generation = &v["metadata"]["generation"];
    v["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter().any(|c| {
            c["type"] == type_
                && c["status"] == status
                && reason.is_none_or(|r| c["reason"] == r)
                && &c["observedGeneration"] == generation
        })
    })
}

async fn wait_condition(ns: &str, name: &str, type_: &str, status: &str, reason: Option<&str>) {
    wait_for_some(
        &format!("{name}: {type_}={status} {reason:?}"),
        CONVERGE,
        || async { has_condition(&corg(ns, name), type_, status, reason).then_some(()) },
    )
    .await;
}

fn secret_value(ns: &str, name: &str, key: &str) -> String {
    let out = kubectl(&[
        "get",
        "secret",
        name,
        "-n",
        ns,
        "-o",
        &format!("go-template={{{{index .data \"{key}\" | base64decode}}}}"),
    ]);
    assert!(out.status.success(), "read Secret {name}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_cause_for_each_kind_of_trouble() {
    // The OrgProvider's tier is `auto` (the default) either way.
    let mut w = World::with("kubectl-status", &[], &["--resync-interval", "2s"]).await;
    let ns = w.env.ns.clone();
    let provider = w.provider.clone();

    let plain = "{plan: growth}";
    // Valid at admission, over the API's 16 KB metadata limit.
    let big = "x".repeat(450);
    let entries: Vec<String> = (0..40).map(|i| format!("k{i}: {big}")).collect();
    let too_big = format!("{{{}}}", entries.join(", "));
    for (name, meta) in [
        ("ready", plain),
        ("held", plain),
        ("lost", plain),
        ("rejected", too_big.as_str()),
    ] {
        apply_yaml_ok(&corg_yaml(&w, name, meta));
    }
    let samples = samples(&ns, &provider);
    assert!(samples.len() >= 3, "samples found: {}", samples.len());
    for (_, yaml) in &samples {
        apply_yaml_ok(yaml);
    }
    for name in ["ready", "held", "lost"]
        .into_iter()
        .chain(samples.iter().map(|(n, _)| n.as_str()))
    {
        wait_condition(&ns, name, "Ready", "True", None).await;
    }
    wait_condition(&ns, "rejected", "Stalled", "True", Some("ApiRejected")).await;
    let mut seen = Seen::default();

    // `kubectl orgops plan` is `orgops plan`: the applied, converged samples plan nothing.
    let dir = std::env::temp_dir().join(format!("orgops-plugin-plan-{ns}"));
    std::fs::create_dir_all(&dir).expect("plan input dir");
    for (name, yaml) in &samples {
        std::fs::write(dir.join(format!("{name}.yaml")), yaml).expect("write sample");
    }
    let plan = Command::new(env!("CARGO_BIN_EXE_kubectl-orgops"))
        .env("KUBECONFIG", &ControlPlane::ensure().kubeconfig)
        .args(["plan", "-f", &dir.to_string_lossy(), "-o", "json"])
        .output()
        .expect("run kubectl-orgops plan");
    let plan_out = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert_eq!(
        plan.status.code(),
        Some(0),
        "converged samples plan no change:\n{plan_out}\n{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let planned: serde_json::Value = serde_json::from_str(&plan_out).expect("plan JSON");
    assert_eq!(
        planned["objects"].as_array().map(Vec::len),
        Some(samples.len()),
        "{plan_out}"
    );
    seen.0.push(plan_out);
    let _ = std::fs::remove_dir_all(&dir);

    // Ready, with the ledger and key verification.
    let out = seen.text(&ns, &["ready", "--live", "--verify"]);
    assert!(
        out.lines().next().unwrap_or_default().contains("Ready"),
        "{out}"
    );
    assert!(why(&out).contains("Ready (from CustomerOrg)"), "{out}");
    assert!(
        out.contains("txn_"),
        "ledger rows with transfer ids:\n{out}"
    );
    assert!(
        out.contains("marked allocations sum 500 (spec 500)"),
        "{out}"
    );
    assert!(out.contains("authenticating"), "key verified:\n{out}");
    assert!(
        !out.contains("MISSING") && !out.contains("NOT OWNED"),
        "{out}"
    );
    let v = seen.json(&ns, "ready");
    assert_eq!(v["ready"], true);
    assert_eq!(v["diagnosis"]["cause"], "Ready");
    let v = {
        let run = seen.status(&ns, &["ready", "-o", "json", "--live", "--verify"]);
        serde_json::from_str::<Value>(&run).expect("live JSON parses")
    };
    assert_eq!(v["live"]["markedSum"], 500);
    assert!(
        v["live"]["ledger"][0]["transferId"]
            .as_str()
            .is_some_and(|t| t.starts_with("txn_")),
        "{v}"
    );
    assert_eq!(v["apiKeys"][0]["secret"]["authenticating"], true);

    // Stalled by the API: the full message, wrapped, never cut.
    let out = seen.text(&ns, &["rejected"]);
    assert!(
        why(&out).contains("ApiRejected (from CustomerOrg)"),
        "{out}"
    );
    let message = corg(&ns, "rejected")["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Stalled"))
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("16 KB"), "{message}");
    assert!(
        squash(&out).contains(&squash(&message)),
        "full message:\n{out}"
    );
    assert_eq!(
        seen.json(&ns, "rejected")["diagnosis"]["cause"],
        "ApiRejected"
    );

    // Paused, by the plugin itself; without --yes and no terminal it refuses.
    let refused = plugin(&["pause", "held", "-n", &ns]);
    assert!(!refused.ok, "pause without --yes must refuse");
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("no API calls"),
        "says what it causes"
    );
    assert!(corg(&ns, "held")["metadata"]["annotations"]["orgops.dev/paused"].is_null());
    let paused = plugin(&["pause", "held", "-n", &ns, "--yes"]);
    assert!(paused.ok, "{}", paused.stderr);
    assert_eq!(
        corg(&ns, "held")["metadata"]["annotations"]["orgops.dev/paused"],
        "true"
    );
    wait_condition(&ns, "held", "Reconciling", "False", Some("Paused")).await;
    let out = seen.text(&ns, &["held"]);
    assert!(why(&out).contains("Paused (from CustomerOrg)"), "{out}");
    assert!(
        out.contains("kubectl orgops resume held"),
        "next step:\n{out}"
    );
    assert_eq!(seen.json(&ns, "held")["diagnosis"]["cause"], "Paused");

    // The table: each not-Ready row names its cause.
    let table = seen.text(&ns, &[]);
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no row {name}:\n{table}"))
            .to_string()
    };
    assert!(row("rejected").ends_with("ApiRejected"), "{table}");
    assert!(row("held").ends_with("Paused"), "{table}");
    assert!(row("ready").contains("True"), "{table}");
    let wide = seen.status(&ns, &["-o", "wide"]);
    assert!(squash(&wide).contains(&squash(&message)), "{wide}");
    let list: Value =
        serde_json::from_str(&seen.status(&ns, &["-o", "json"])).expect("list JSON parses");
    assert_eq!(list["apiVersion"], "orgops.dev/kubectl-view/v1");
    assert_eq!(list["kind"], "CustomerOrgSummaryList");

    // Every sample's view fits in 100 columns (checked by `text`), live too.
    for (name, _) in &samples {
        let out = seen.text(&ns, &[name, "--live", "--verify"]);
        assert!(why(&out).contains("Ready"), "{out}");
    }

    // The secrets this test knows, read before anything is deleted.
    let mut secrets = vec![w.sim.parent_key().to_string()];
    for name in ["ready", "held", "lost", "acme-coffee", "globex", "initech"] {
        let v = corg(&ns, name);
        for k in v["status"]["apiKeys"].as_array().into_iter().flatten() {
            let s = k["secretName"].as_str().expect("secretName");
            secrets.push(secret_value(&ns, s, "apiKey"));
        }
        for w in v["status"]["webhooks"].as_array().into_iter().flatten() {
            let s = w["secretName"].as_str().expect("secretName");
            let value = secret_value(&ns, s, "signingSecret");
            assert!(value.starts_with("whsec_"), "a signing secret");
            secrets.push(value);
        }
    }
    assert!(secrets.len() >= 10, "known secrets: {}", secrets.len());

    // A deleted key Secret, seen before the operator notices (it is stopped).
    w.op.kill();
    w.env.kubectl_ok(&["delete", "secret", "lost-integration"]);
    let out = seen.text(&ns, &["lost"]);
    assert!(
        why(&out).contains("SecretMissing (from Secret/lost-integration)"),
        "{out}"
    );
    assert!(out.contains("MISSING"), "{out}");
    assert_eq!(
        seen.json(&ns, "lost")["diagnosis"]["cause"],
        "SecretMissing"
    );
    let table = seen.text(&ns, &[]);
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("lost") && l.ends_with("SecretMissing")),
        "{table}"
    );
    w.op.restart();
    // The operator recovers it: a new key in a new Secret.
    wait_for_some("lost-integration recreated", CONVERGE, || async {
        w.env
            .kubectl(&["get", "secret", "lost-integration"])
            .status
            .success()
            .then_some(())
    })
    .await;
    secrets.push(secret_value(&ns, "lost-integration", "apiKey"));

    // The provider's parent key is revoked: the deepest cause is the OrgProvider.
    let resp = reqwest::Client::new()
        .patch(format!("{}/_sim/switches", w.sim.base_url()))
        .json(&serde_json::json!({"parentKeyRevoked": true}))
        .send()
        .await
        .expect("PATCH /_sim/switches");
    assert!(resp.status().is_success(), "{}", resp.status());
    wait_for_some("OrgProvider Ready=False Unauthorized", CONVERGE, || async {
        let out = kubectl(&["get", "orgprovider", &provider, "-o", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| {
                c["type"] == "Ready" && c["status"] == "False" && c["reason"] == "Unauthorized"
            })
            .then_some(())
    })
    .await;
    let out = seen.text(&ns, &["ready", "--live"]);
    assert!(
        why(&out).contains(&format!("Unauthorized (from OrgProvider/{provider})")),
        "{out}"
    );
    assert!(
        out.contains("live read failed"),
        "--live shows the refusal:\n{out}"
    );
    let v = seen.json(&ns, "ready");
    assert_eq!(v["diagnosis"]["cause"], "Unauthorized");
    assert_eq!(v["ready"], false);
    let table = seen.text(&ns, &[]);
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("ready") && l.ends_with("Unauthorized")),
        "{table}"
    );
    let wide = seen.status(&ns, &["-o", "wide"]);
    assert!(
        wide.contains(&format!("OrgProvider/{provider}: whoami failed")),
        "{wide}"
    );

    // No secret value in anything printed.
    for text in &seen.0 {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a secret value appeared in the output:\n{text}"
            );
        }
    }

    w.cleanup().await;
}

#[test]
fn plan_without_an_orgops_binary_says_so() {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-orgops"))
        .args(["plan", "-f", "deploy/samples"])
        .env("PATH", "/nonexistent")
        .output()
        .expect("run kubectl-orgops");
    // Next to the test binary's kubectl-orgops there may be an orgops build: then it runs
    // `orgops plan`, which cannot read the (relative, absent) input and exits 1 too.
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("plan:") || stderr.contains("deploy/samples: cannot read"),
        "{stderr}"
    );
}

/// `status NAME --live --verify -o json` of a Ready customer: the live read worked, the org
/// is active at the provider and the OrgProvider's credentials passed whoami.
fn assert_live_and_verified(ns: &str, name: &str) {
    let run = plugin(&["status", "-n", ns, name, "--live", "--verify", "-o", "json"]);
    assert!(
        run.ok,
        "kubectl orgops status --live --verify failed: {}",
        run.stderr
    );
    let v: Value = serde_json::from_str(&run.stdout).expect("JSON view");
    assert!(v["live"]["error"].is_null(), "{v:#}");
    assert_eq!(v["live"]["state"], "active", "{v:#}");
    let verified = v["provider"]["verified"].as_str().unwrap_or_default();
    assert!(verified.starts_with("whoami ok"), "{v:#}");
}

/// Issue 31: `--live` and `--verify` read Gennia as well as Layers. Gennia has no ledger and
/// no per-customer keys: `--live` shows the client's state at the provider and `--verify`
/// checks the OrgProvider's own credentials with whoami; with the workspace key revoked,
/// the refusal is the diagnosis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_and_verify_read_gennia() {
    use support::corgs::CorgWaits;
    let w = support::gennia::GenniaWorld::new("status-gennia", "30s").await;
    let ns = w.env.ns.clone();
    let spec = format!(
        "  gennia:\n    planId: {}\n    users:\n    - {{email: ada@live.example, name: Ada, role: admin}}\n",
        w.plan_id
    );
    apply_yaml_ok(&w.corg_yaml("live", "Live Co", &spec));
    w.wait_ready("live").await;
    assert_live_and_verified(&ns, "live");
    let text = plugin(&["status", "-n", &ns, "live", "--live", "--verify"]);
    assert!(
        text.ok
            && text.stdout.contains("verify: whoami ok")
            && text.stdout.contains("no allocation ledger"),
        "{}",
        text.stdout
    );
    // The workspace key stops working: the live read names the refusal.
    support::kubectl_ok(&[
        "-n",
        &ns,
        "patch",
        "secret",
        &format!("{}-key", w.provider),
        "--type=merge",
        "-p",
        r#"{"stringData":{"apiKey":"gsk_revoked_0000000000"}}"#,
    ]);
    let refused = plugin(&[
        "status", "-n", &ns, "live", "--live", "--verify", "-o", "json",
    ]);
    assert!(refused.ok, "{}", refused.stderr);
    let v: Value = serde_json::from_str(&refused.stdout).expect("JSON view");
    assert!(
        v["provider"]["verified"]
            .as_str()
            .is_some_and(|s| s.starts_with("whoami refused")),
        "{v:#}"
    );
    for key in [w.sim.api_key(), "gsk_revoked_0000000000"] {
        assert!(
            !refused.stdout.contains(key),
            "a key value was printed:\n{}",
            refused.stdout
        );
    }
    w.cleanup().await;
}

/// Issue 31: the same for YouHodler (OAuth client credentials): the client's state at the
/// provider, whoami with the OrgProvider's credentials, and a revoked client secret named
/// as the refusal, no secret printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_and_verify_read_youhodler() {
    use support::corgs::CorgWaits;
    let w = support::youhodler::YouhodlerWorld::new("status-yh", "30s", &[]).await;
    let ns = w.env.ns.clone();
    apply_yaml_ok(&w.corg_yaml("live", "Live Trading", "  externalId: yh-live-1\n"));
    w.wait_ready("live").await;
    assert_live_and_verified(&ns, "live");
    w.sim.revoke_secret(true).await;
    let refused = plugin(&[
        "status", "-n", &ns, "live", "--live", "--verify", "-o", "json",
    ]);
    assert!(refused.ok, "{}", refused.stderr);
    let v: Value = serde_json::from_str(&refused.stdout).expect("JSON view");
    assert!(v["live"]["error"].is_string(), "{v:#}");
    assert_eq!(v["diagnosis"]["cause"], "LiveReadFailed", "{v:#}");
    assert!(
        !refused.stdout.contains(&w.sim.client_secret),
        "the client secret was printed"
    );
    w.cleanup().await;
}
