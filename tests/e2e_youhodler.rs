//! YouHodler end to end: the real control plane, the `orgops` binary and `youhodler-sim`.
//! Create → Ready; rename and metadata through `If-Match`, an out-of-band change between
//! read and write (412) re-read and converged; suspend / resume with a reason; token expiry
//! invisible; a revoked client secret reported with no storm; delete → suspended + Event;
//! a lost cluster re-applied → zero new clients; unsupported fields → zero calls. The
//! client secret and tokens never show in logs, Events or status.

mod support;

use serde_json::{Value, json};
use support::corgs::{CorgWaits, current, wait_provider_ready};
use support::world::CONVERGE;
use support::youhodler::{
    YouhodlerWorld, client_requests, client_writes, requests, token_requests,
};
use support::{apply_yaml_ok, kubectl, wait_for};

const CREATE: &str = "/clients";
const ONE: &str = "/clients/:client_id";

fn spec(ext: &str, metadata: &str, tail: &str) -> String {
    format!("  externalId: {ext}\n  metadata: {metadata}\n{tail}")
}

/// Everything a user could read about the object and the operator: no secret, no token.
fn assert_no_credentials(w: &YouhodlerWorld, name: &str) {
    let log = w.op.log();
    // The object itself when it still exists (a deleted one left its Events).
    let corg = String::from_utf8_lossy(
        &w.env
            .kubectl(&[
                "get",
                "customerorg",
                name,
                "--ignore-not-found",
                "-o",
                "json",
            ])
            .stdout,
    )
    .to_string();
    let events = serde_json::to_string(&w.events(name)).unwrap_or_default();
    let provider = String::from_utf8_lossy(
        &kubectl(&["get", "orgprovider", &w.provider, "-o", "json"]).stdout,
    )
    .to_string();
    for (what, text) in [
        ("operator log", &log),
        ("CustomerOrg", &corg),
        ("Events", &events),
        ("OrgProvider", &provider),
    ] {
        assert!(
            !text.contains(&w.sim.client_secret),
            "the client secret is in the {what}"
        );
        // Access tokens are JWT-shaped: base64url of `{"` starts every one.
        assert!(!text.contains("eyJ"), "a token is in the {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_if_match_412_suspend_resume_token_expiry_delete() {
    let w = YouhodlerWorld::new("yh-life", "5s", &[]).await;
    let provider = wait_provider_ready(&w.provider).await;
    assert_eq!(
        provider["status"]["organizationId"],
        w.sim.enterprise_id.as_str(),
        "the enterprise found with GET /enterprises: {provider}"
    );
    let caps: Vec<&str> = provider["status"]["capabilities"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for yes in ["externalId", "displayName updates", "state.suspended"] {
        assert!(caps.contains(&yes), "youhodler supports {yes}: {caps:?}");
    }
    for no in [
        "apiKeys",
        "webhooks",
        "credits.allocated",
        "state.archived",
        "billingEmail",
    ] {
        assert!(
            !caps.contains(&no),
            "youhodler must not list {no}: {caps:?}"
        );
    }

    // Create → Ready: one client, external_id, metadata and the owner marker.
    let ext = format!("cust-{}", w.env.ns);
    let display = format!("Acme {}", w.env.ns);
    apply_yaml_ok(&w.corg_yaml("acme", &display, &spec(&ext, "{tier: gold}", "")));
    let corg = w.wait_ready("acme").await;
    let client = w.client(&ext).await;
    let id = client["id"].as_str().expect("client id").to_string();
    assert_eq!(corg["status"]["orgId"], id.as_str(), "status.orgId");
    assert_eq!(corg["status"]["state"], "active");
    assert_eq!(client["display_name"], display.as_str());
    assert_eq!(client["metadata"]["tier"], "gold");
    assert!(
        client["metadata"]["orgops.dev/owner"].is_string(),
        "the owner marker: {client}"
    );
    let c = w.sim.counters().await;
    assert_eq!(requests(&c, "POST", CREATE, 201), 1, "one create: {c}");

    // Rename and metadata edit: PATCH with If-Match.
    let renamed = format!("Acme Coffee {}", w.env.ns);
    apply_yaml_ok(&w.corg_yaml(
        "acme",
        &renamed,
        &spec(&ext, "{tier: platinum, region: eu}", ""),
    ));
    w.wait_ready("acme").await;
    let client = w.client(&ext).await;
    assert_eq!(client["display_name"], renamed.as_str());
    assert_eq!(client["metadata"]["tier"], "platinum");
    assert_eq!(client["metadata"]["region"], "eu");
    let c = w.sim.counters().await;
    assert!(requests(&c, "PATCH", ONE, 200) >= 1, "a PATCH: {c}");
    assert_eq!(
        requests(&c, "PATCH", ONE, 400),
        0,
        "every PATCH carried If-Match: {c}"
    );

    // Out of band between our read and our write: writes are slowed, and someone in the
    // console keeps editing the client until one of our PATCHes meets a stale ETag (412).
    w.sim
        .set_faults(json!({"write": {"latency": 1.0}, "latencyMs": 1500}))
        .await;
    apply_yaml_ok(&w.corg_yaml(
        "acme",
        &renamed,
        &spec(&ext, "{tier: diamond, region: eu}", ""),
    ));
    let mut edits = 0u32;
    wait_for("a PATCH answered 412", CONVERGE, || {
        edits += 1;
        let name = format!("Console edit {edits}");
        let (sim, id) = (&w.sim, id.clone());
        async move {
            sim.edit_client(&id, json!({"display_name": name})).await;
            requests(&sim.counters().await, "PATCH", ONE, 412) >= 1
        }
    })
    .await;
    w.sim.set_faults(json!({})).await;
    w.wait_client(&ext, "re-read and converged after the 412", |c| {
        c["display_name"] == renamed.as_str() && c["metadata"]["tier"] == "diamond"
    })
    .await;
    w.wait_ready("acme").await;

    // Suspend with a reason (201), then resume.
    let reason = "Invoice 2026-11 unpaid after three reminders";
    apply_yaml_ok(&w.corg_yaml(
        "acme",
        &renamed,
        &spec(
            &ext,
            "{tier: diamond, region: eu}",
            &format!("  state: suspended\n  suspendReason: {reason}\n"),
        ),
    ));
    let corg = w.wait_ready("acme").await;
    assert_eq!(corg["status"]["state"], "suspended");
    let client = w.client(&ext).await;
    assert_eq!(client["status"], "suspended");
    assert_eq!(client["last_reason"], reason);
    let c = w.sim.counters().await;
    assert!(
        requests(&c, "POST", "/clients/:client_id/suspend", 201) >= 1,
        "suspend answered 201: {c}"
    );
    apply_yaml_ok(&w.corg_yaml(
        "acme",
        &renamed,
        &spec(&ext, "{tier: diamond, region: eu}", ""),
    ));
    let corg = w.wait_ready("acme").await;
    assert_eq!(corg["status"]["state"], "active");
    assert_eq!(w.client(&ext).await["status"], "active");

    // Token expiry mid-run: the simulator's clock passes the token's lifetime; the next
    // change converges as if nothing happened.
    let tokens_before = token_requests(&w.sim.counters().await);
    w.sim.advance_clock(7200).await;
    apply_yaml_ok(&w.corg_yaml(
        "acme",
        &renamed,
        &spec(&ext, "{tier: diamond, region: us}", ""),
    ));
    let corg = w.wait_ready("acme").await;
    assert_eq!(w.client(&ext).await["metadata"]["region"], "us");
    assert!(
        token_requests(&w.sim.counters().await) > tokens_before,
        "a new token was fetched"
    );
    assert!(
        current(&corg, "Stalled").is_none_or(|c| c["status"] == "False"),
        "token expiry must not stall: {}",
        corg["status"]
    );

    // Delete (deletionPolicy Archive): no close endpoint, so the client is suspended and an
    // Event says so.
    w.env
        .kubectl_ok(&["delete", "customerorg", "acme", "--wait=false"]);
    w.wait_gone("acme").await;
    assert_eq!(
        w.client(&ext).await["status"],
        "suspended",
        "deletion suspends"
    );
    wait_for(
        "an Event about suspending instead of archiving",
        CONVERGE,
        || {
            let found = w.events("acme").iter().any(|e| {
                let note = e["note"].as_str().unwrap_or_default().to_lowercase();
                e["reason"] == "Suspended" && note.contains("youhodler") && note.contains("archive")
            });
            async move { found }
        },
    )
    .await;
    assert_eq!(w.sim.clients().await.len(), 1, "still exactly one client");
    assert_no_credentials(&w, "acme");
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_client_secret_is_reported_with_no_request_storm() {
    let w = YouhodlerWorld::new("yh-revoked", "3s", &[]).await;
    let ext = format!("cust-{}", w.env.ns);
    let display = format!("Initech {}", w.env.ns);
    apply_yaml_ok(&w.corg_yaml("initech", &display, &spec(&ext, "{}", "")));
    w.wait_ready("initech").await;

    w.sim.revoke_secret(true).await;
    let ready_reason = |v: &Value, reason: &str| {
        current(v, "Ready").is_some_and(|c| c["status"] == "False" && c["reason"] == reason)
    };
    wait_for("OrgProvider Ready=False Unauthorized", CONVERGE, || async {
        let out = kubectl(&["get", "orgprovider", &w.provider, "-o", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                c["type"] == "Ready" && c["status"] == "False" && c["reason"] == "Unauthorized"
            })
        })
    })
    .await;
    // Its CustomerOrgs say why, pass after pass, without calling the API.
    let before = w.sim.counters().await;
    for n in 1..=3 {
        apply_yaml_ok(&w.corg_yaml("initech", &format!("{display} {n}"), &spec(&ext, "{}", "")));
        let corg = w
            .wait_corg("initech", "Ready=False Unauthorized", |v| {
                ready_reason(v, "Unauthorized")
            })
            .await;
        let message = current(&corg, "Ready").map(|c| c["message"].to_string());
        eprintln!("revoked: {message:?}");
    }
    let after = w.sim.counters().await;
    let calls = |c: &Value| client_requests(c) + token_requests(c);
    assert!(
        calls(&after) - calls(&before) <= 2,
        "a revoked secret caused {} requests over three passes",
        calls(&after) - calls(&before)
    );
    assert_eq!(client_writes(&after), client_writes(&before), "no writes");

    // Restored and the Secret touched (as a rotation would): Ready again, converged.
    w.sim.revoke_secret(false).await;
    w.env.kubectl_ok(&[
        "annotate",
        "secret",
        &format!("{}-credentials", w.provider),
        "rotated=yes",
        "--overwrite",
    ]);
    wait_provider_ready(&w.provider).await;
    w.wait_ready("initech").await;
    assert_eq!(
        w.client(&ext).await["display_name"],
        format!("{display} 3").as_str()
    );
    assert_no_credentials(&w, "initech");
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_cluster_reapplied_creates_nothing() {
    let w = YouhodlerWorld::new("yh-lost", "5s", &[]).await;
    let ext = format!("cust-{}", w.env.ns);
    let display = format!("Globex {}", w.env.ns);
    let orphan = spec(&ext, "{tier: gold}", "  deletionPolicy: Orphan\n");
    apply_yaml_ok(&w.corg_yaml("globex", &display, &orphan));
    let corg = w.wait_ready("globex").await;
    let id = corg["status"]["orgId"].as_str().expect("orgId").to_string();

    // The cluster is lost: the object goes without touching the client (Orphan).
    w.env
        .kubectl_ok(&["delete", "customerorg", "globex", "--wait=false"]);
    w.wait_gone("globex").await;
    assert_eq!(w.client(&ext).await["status"], "active");
    let creates = |c: &Value| support::world::count(c, |m, r| m == "POST" && r == CREATE);
    let creates_before = creates(&w.sim.counters().await);

    // A fresh object (another name, no status) with the same externalId: adopted.
    apply_yaml_ok(&w.corg_yaml("globex-rebuilt", &display, &spec(&ext, "{tier: gold}", "")));
    let corg = w.wait_ready("globex-rebuilt").await;
    assert_eq!(corg["status"]["orgId"], id.as_str(), "adopted, not created");
    let c = w.sim.counters().await;
    assert_eq!(creates(&c), creates_before, "no create request: {c}");
    assert_eq!(w.sim.clients().await.len(), 1, "zero new clients");
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_fields_stall_with_zero_calls() {
    let w = YouhodlerWorld::new("yh-unsupported", "3s", &[]).await;
    wait_provider_ready(&w.provider).await;
    let ext = format!("cust-{}", w.env.ns);
    let display = format!("Hooli {}", w.env.ns);
    let tail = r#"  billingEmail: ap@hooli.example
  apiKeys:
  - name: integration
    scopes: [content:read]
  credits: {allocated: 100}
"#;
    apply_yaml_ok(&w.corg_yaml("hooli", &display, &spec(&ext, "{}", tail)));
    let corg = w.wait_stalled("hooli", "UnsupportedByProvider").await;
    let message = current(&corg, "Stalled")
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string();
    for field in [
        "spec.apiKeys",
        "spec.credits.allocated",
        "spec.billingEmail",
    ] {
        assert!(
            message.contains(field),
            "the message names {field}: {message}"
        );
    }
    w.env
        .kubectl_ok(&["label", "customerorg", "hooli", "touched=yes"]);
    w.provider_checks(2).await;
    let c = w.sim.counters().await;
    assert_eq!(client_requests(&c), 0, "zero client API calls: {c}");

    apply_yaml_ok(&w.corg_yaml("hooli", &display, &spec(&ext, "{}", "")));
    w.wait_ready("hooli").await;
    w.client(&ext).await;
    w.cleanup().await;
}
