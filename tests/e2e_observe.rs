//! Issue 16 end to end: `spec.managementPolicy: Observe` on an org that exists at the
//! partner (made by someone else), then `Full`. Real control plane, `layers-sim`,
//! `orgops run`; writes are counted by the simulator.
mod support;

use serde_json::{Value, json};
use support::world::{World, condition, count, live_orgs};
use support::{apply_yaml_ok, wait_for_some};

fn posts(counters: &Value, route: &str) -> u64 {
    count(counters, |m, r| m == "POST" && r == route)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_writes_nothing_reports_drift_and_full_then_converges_without_duplicates() {
    let w = World::new("observe", "3s").await;
    let ns = w.env.ns.clone();
    let http = reqwest::Client::new();
    // An org made before orgops, by another tool: same externalId, another name.
    let resp = http
        .post(format!("{}/v1/organizations", w.sim.base_url()))
        .bearer_auth(w.sim.parent_key())
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&json!({"name": "Legacy Name", "metadata": {"externalId": format!("{ns}-legacy")}}))
        .send()
        .await
        .expect("simulator");
    assert!(resp.status().is_success(), "create: {}", resp.status());
    let org: Value = resp.json().await.expect("org JSON");
    let org_id = org["id"].as_str().expect("org id").to_string();

    // `orgops plan` says a new object would adopt it, and what adopting leads to.
    let dir = tempfile::tempdir().expect("tempdir");
    let full = dir.path().join("full.yaml");
    std::fs::write(&full, w.corg_yaml("legacy", "")).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orgops"))
        .args(["plan", "-o", "json", "-f", &full.to_string_lossy()])
        .env("KUBECONFIG", &support::ControlPlane::ensure().kubeconfig)
        .output()
        .expect("orgops plan");
    assert_eq!(out.status.code(), Some(2));
    let plan: Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    let obj = &plan["objects"][0];
    assert!(
        obj["adopts"].as_str().is_some_and(|a| a.contains(&org_id)),
        "{plan:#}"
    );
    let ops: Vec<&str> = obj["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["op"].as_str())
        .collect();
    assert_eq!(ops.first(), Some(&"claim-org"), "{ops:?}");
    for op in ["update-org", "allocate", "mint-key", "create-webhook"] {
        assert!(ops.contains(&op), "{op} missing: {ops:?}");
    }

    let writes_before = w.writes().await;
    apply_yaml_ok(&w.corg_yaml("legacy", "  managementPolicy: Observe\n"));
    let seen = wait_for_some("legacy Drifted", support::world::CONVERGE, || async {
        let v = w.corg("legacy");
        let (status, reason, _) = condition(&v, "Ready")?;
        (status == "False" && reason == "Drifted").then_some(v)
    })
    .await;
    let (_, _, message) = condition(&seen, "Ready").expect("Ready");
    for field in [
        "spec.displayName",
        "spec.credits.allocated (500 credits not yet moved)",
        "spec.apiKeys[integration] (no key)",
        "spec.webhooks[crm] (no endpoint)",
    ] {
        assert!(message.contains(field), "{field} missing in {message:?}");
    }
    assert_eq!(
        seen["status"]["orgId"],
        org_id.as_str(),
        "status filled from observation"
    );
    assert_eq!(
        condition(&seen, "Stalled").map(|c| c.0),
        Some("False".into())
    );
    assert!(w.events("legacy").contains("Drifted"), "a Drifted Event");
    // Several more passes: still not a single write, no Secret written, no marker.
    w.org_reads(3).await;
    assert_eq!(
        w.writes().await,
        writes_before,
        "Observe wrote to the provider"
    );
    assert!(
        !w.env
            .kubectl(&["get", "secret", "legacy-integration"])
            .status
            .success()
    );
    let state = w.sim.state().await;
    let ours: Vec<Value> = live_orgs(&state)
        .into_iter()
        .filter(|o| o["id"] == org_id.as_str())
        .collect();
    assert!(
        ours[0]["metadata"].get("orgops.dev/owner").is_none(),
        "Observe claimed the org"
    );

    // Full: converge, with one org, one transfer, one key, one endpoint.
    let before = w.sim.counters().await;
    w.env.kubectl_ok(&[
        "patch",
        "customerorg",
        "legacy",
        "--type=merge",
        "-p",
        r#"{"spec":{"managementPolicy":"Full"}}"#,
    ]);
    let ready = w.wait_ready("legacy").await;
    assert_eq!(
        ready["status"]["orgId"],
        org_id.as_str(),
        "the observed org, not a new one"
    );
    w.org_reads(3).await;
    let after = w.sim.counters().await;
    assert_eq!(
        posts(&after, "/v1/organizations"),
        posts(&before, "/v1/organizations")
    );
    for (route, n) in [
        ("/v1/organizations/:orgId/credits/allocate", 1),
        ("/v1/organizations/:orgId/api-keys", 1),
        ("/v1/webhook-endpoints", 1),
    ] {
        assert_eq!(posts(&after, route) - posts(&before, route), n, "{route}");
    }
    let state = w.sim.state().await;
    let same_ext: Vec<Value> = live_orgs(&state)
        .into_iter()
        .filter(|o| o["metadata"]["externalId"] == format!("{ns}-legacy").as_str())
        .collect();
    assert_eq!(same_ext.len(), 1, "one org for the customer");
    assert_eq!(same_ext[0]["name"], "Acme Coffee");
    assert!(
        same_ext[0]["metadata"]["orgops.dev/owner"]
            .as_str()
            .is_some_and(|m| m.starts_with(&format!("{ns}/legacy/"))),
        "claimed with the owner marker"
    );
    // Converged means quiet: more passes, no more writes.
    let quiet = w.writes().await;
    w.org_reads(3).await;
    assert_eq!(w.writes().await, quiet, "writes after convergence");
    w.cleanup().await;
}
