//! The operator process end to end: real kube-apiserver, real kubectl, the simulator,
//! `orgops run` under the deploy/ RBAC (ServiceAccount token, leader election on).
mod support;

use serde_json::Value;
use support::world::*;
use support::{
    Operator, Sim, TestEnv, apply_yaml, apply_yaml_ok, kubectl, wait_for, wait_for_some,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_converges_once_and_then_stays_quiet() {
    let w = World::new("converge", "3s").await;
    // The status writes are counted below: a CustomerOrg reconciled before the operator
    // has checked its provider gets a "provider pending" status first (a third write; a
    // loaded CI machine showed it once).
    support::corgs::wait_provider_ready(&w.provider).await;
    apply_yaml_ok(&w.corg_yaml("acme", ""));
    let corg = w.wait_ready("acme").await;
    let org_id = text(&corg["status"]["orgId"], "status.orgId");
    assert_eq!(
        corg["metadata"]["finalizers"],
        serde_json::json!(["orgops.dev/offboard"])
    );

    // The org, its metadata, cap and refill are in the simulator.
    let state = w.sim.state().await;
    let orgs = live_orgs(&state);
    assert_eq!(orgs.len(), 1, "exactly one org: {orgs:?}");
    let org = &orgs[0];
    assert_eq!(org["id"], org_id.as_str());
    assert_eq!(org["name"], "Acme Coffee");
    assert_eq!(org["metadata"]["plan"], "growth");
    assert_eq!(org["creditConfig"]["monthlyCreditCap"], 5000);
    assert_eq!(org["creditConfig"]["refillThreshold"], 100);
    assert_eq!(org["creditConfig"]["refillAmount"], 200);
    assert_eq!(org["balance"], 500);

    // The key's Secret authenticates as the child; the webhook lives inside the child.
    let secret_name = text(
        &corg["status"]["apiKeys"][0]["secretName"],
        "status.apiKeys[0].secretName",
    );
    let key = wait_for_some("the key Secret", CONVERGE, || async {
        secret_value(&w.env, &secret_name, "apiKey")
    })
    .await;
    assert_eq!(whoami_with(&w.sim, &key).await, 200);
    let endpoints: Vec<&Value> = state["webhookEndpoints"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|e| e["organizationId"] == org_id.as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(endpoints.len(), 1, "one webhook inside the child: {state}");

    // Converged: several resyncs (3 s) cost no API writes and no cluster writes.
    w.org_reads(1).await;
    let writes = w.writes().await;
    let rv = w.corg("acme")["metadata"]["resourceVersion"].clone();
    w.org_reads(4).await;
    assert_eq!(w.writes().await, writes, "API writes at steady state");
    assert_eq!(
        w.corg("acme")["metadata"]["resourceVersion"],
        rv,
        "cluster writes at steady state"
    );
    let reads = count(&w.sim.counters().await, |m, _| m == "GET");
    assert!(reads > 0, "resync must still read the org");

    // The operator's metrics endpoint works and carries no per-object labels.
    let metrics = w.op.metrics().await;
    // A new customer's CustomerOrg status writes (issue 18): only the verifying pass writes
    // (the creating pass's status would have been superseded at once). The counter also
    // holds the OrgProvider's one status write (Ready).
    let kube_writes = |kind: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("orgops_kube_writes_total{{kind=\"{kind}\"}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(
        kube_writes("status"),
        2.0,
        "status writes for one new org and its provider:\n{metrics}"
    );
    assert!(
        metrics.contains("orgops_reconciles_total{result=\"ok\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("orgops_leader 1"), "{metrics}");
    assert!(!metrics.contains("acme"), "object names in metrics");

    // Nothing secret in the operator's log.
    let log = w.op.log();
    assert!(!log.contains(w.sim.parent_key()), "parent key in the log");
    assert!(!log.contains(&key), "minted key in the log");
    assert!(!log.contains("whsec_"), "signing secret in the log");
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_resume_and_archived_is_terminal() {
    let w = World::new("suspend", "30s").await;
    apply_yaml_ok(&w.corg_yaml("acme", ""));
    let corg = w.wait_ready("acme").await;
    let org_id = text(&corg["status"]["orgId"], "orgId");
    let secret_name = text(&corg["status"]["apiKeys"][0]["secretName"], "secret");
    let key = secret_value(&w.env, &secret_name, "apiKey").expect("key Secret");

    apply_yaml_ok(&w.corg_yaml("acme", "  state: suspended\n"));
    w.wait_ready("acme").await;
    let state = w.sim.state().await;
    let org = live_orgs(&state)
        .into_iter()
        .find(|o| o["id"] == org_id.as_str())
        .expect("org");
    assert_eq!(org["status"], "suspended");
    assert_eq!(whoami_with(&w.sim, &key).await, 503);

    apply_yaml_ok(&w.corg_yaml("acme", "  state: active\n"));
    w.wait_ready("acme").await;
    assert_eq!(whoami_with(&w.sim, &key).await, 200);

    apply_yaml_ok(&w.corg_yaml("acme", "  state: archived\n"));
    wait_for("archived in the simulator", CONVERGE, || async {
        let state = w.sim.state().await;
        state["orgs"].as_array().is_some_and(|o| {
            o.iter()
                .any(|o| o["id"] == org_id.as_str() && o["status"] == "archived")
        })
    })
    .await;
    let refused = apply_yaml(&w.corg_yaml("acme", "  state: active\n"));
    assert!(
        !refused.status.success(),
        "archived -> active must be refused at admission"
    );
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_up_moves_exactly_the_difference_once() {
    let w = World::new("topup", "3s").await;
    apply_yaml_ok(&w.corg_yaml("acme", ""));
    let corg = w.wait_ready("acme").await;
    let org_id = text(&corg["status"]["orgId"], "orgId");
    let yaml = w
        .corg_yaml("acme", "")
        .replace("allocated: 500", "allocated: 800");
    apply_yaml_ok(&yaml);
    w.wait_ready("acme").await;
    // Resyncs after the top-up move nothing more.
    w.org_reads(3).await;
    let state = w.sim.state().await;
    let ledger = state["ledgers"][org_id.as_str()]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let allocations: Vec<i64> = ledger
        .iter()
        .filter(|e| e["eventType"] == "allocation")
        .map(|e| e["credits"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(allocations.iter().sum::<i64>(), 800, "ledger: {ledger:?}");
    assert_eq!(
        allocations.len(),
        2,
        "one initial transfer and one top-up: {ledger:?}"
    );
    assert!(
        w.events("acme").contains("txn_"),
        "CreditsAllocated Event with the txn id"
    );
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_band_changes_are_corrected_on_resync() {
    let w = World::new("drift", "3s").await;
    apply_yaml_ok(&w.corg_yaml("acme", ""));
    let corg = w.wait_ready("acme").await;
    let org_id = text(&corg["status"]["orgId"], "orgId");
    let http = reqwest::Client::new();
    let base = w.sim.base_url().to_string();
    let resp = http
        .post(format!("{base}/v1/organizations/{org_id}/suspend"))
        .bearer_auth(w.sim.parent_key())
        .send()
        .await
        .expect("suspend out of band");
    assert!(resp.status().is_success());
    let resp = http
        .patch(format!("{base}/v1/organizations/{org_id}"))
        .bearer_auth(w.sim.parent_key())
        .header("Idempotency-Key", "drift-test-edit")
        .json(&serde_json::json!({"name": "Someone Else"}))
        .send()
        .await
        .expect("rename out of band");
    assert!(resp.status().is_success(), "{}", resp.status());
    wait_for("drift corrected in the simulator", CONVERGE, || async {
        let state = w.sim.state().await;
        live_orgs(&state).iter().any(|o| {
            o["id"] == org_id.as_str() && o["status"] == "active" && o["name"] == "Acme Coffee"
        })
    })
    .await;
    wait_for("a DriftCorrected Event", CONVERGE, || async {
        w.events("acme").contains("DriftCorrected")
    })
    .await;
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_archives_and_orphan_leaves_the_org() {
    let w = World::new("delete", "30s").await;
    apply_yaml_ok(&w.corg_yaml("gone", ""));
    apply_yaml_ok(&w.corg_yaml("kept", "  deletionPolicy: Orphan\n"));
    let gone = text(&w.wait_ready("gone").await["status"]["orgId"], "orgId");
    let kept = text(&w.wait_ready("kept").await["status"]["orgId"], "orgId");

    w.env
        .kubectl_ok(&["delete", "customerorg", "gone", "--timeout=60s"]);
    w.env
        .kubectl_ok(&["delete", "customerorg", "kept", "--timeout=60s"]);
    let state = w.sim.state().await;
    let status_of = |id: &str| {
        state["orgs"]
            .as_array()
            .and_then(|o| o.iter().find(|o| o["id"] == id))
            .map(|o| o["status"].clone())
    };
    assert_eq!(status_of(&gone), Some(Value::from("archived")));
    assert_eq!(status_of(&kept), Some(Value::from("active")));
    let events = w.events("gone");
    assert!(events.contains("Archived"), "Archived Event: {events}");
    assert!(
        events.contains("500"),
        "reclaimed credits in the Event: {events}"
    );
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_api_calls_and_rotation_yields_a_new_key() {
    let w = World::new("pause", "2s").await;
    apply_yaml_ok(&w.corg_yaml("acme", ""));
    let corg = w.wait_ready("acme").await;
    let secret_name = text(&corg["status"]["apiKeys"][0]["secretName"], "secret");
    let old_key = secret_value(&w.env, &secret_name, "apiKey").expect("key Secret");

    w.env
        .kubectl_ok(&["annotate", "customerorg", "acme", "orgops.dev/paused=true"]);
    wait_for("Reconciling reason Paused", CONVERGE, || async {
        condition(&w.corg("acme"), "Reconciling").is_some_and(|c| c.1 == "Paused")
    })
    .await;
    let org_calls = |c: &Value| count(c, |_, route| route.starts_with("/v1/organizations/"));
    let before = org_calls(&w.sim.counters().await);
    w.resyncs(4).await;
    assert_eq!(
        org_calls(&w.sim.counters().await),
        before,
        "API calls while paused"
    );

    w.env
        .kubectl_ok(&["annotate", "customerorg", "acme", "orgops.dev/paused-"]);
    w.env.kubectl_ok(&[
        "annotate",
        "customerorg",
        "acme",
        "orgops.dev/rotate-keys=1",
    ]);
    let new_key = wait_for_some("a rotated key", CONVERGE, || async {
        secret_value(&w.env, &secret_name, "apiKey").filter(|k| *k != old_key)
    })
    .await;
    assert_eq!(whoami_with(&w.sim, &new_key).await, 200);
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_cluster_reapply_creates_nothing_new() {
    let mut w = World::new("lost", "30s").await;
    let yaml = w.corg_yaml("acme", "");
    apply_yaml_ok(&yaml);
    let corg = w.wait_ready("acme").await;
    let org_id = text(&corg["status"]["orgId"], "orgId");
    let secret_name = text(&corg["status"]["apiKeys"][0]["secretName"], "secret");
    let hook_secret = text(
        &corg["status"]["webhooks"][0]["secretName"],
        "webhook secret",
    );
    let orgs_before = w.sim.state().await["orgs"].as_array().map_or(0, Vec::len);
    let transfers = |s: &Value| {
        s["ledgers"][org_id.as_str()].as_array().map_or(0, |l| {
            l.iter().filter(|e| e["eventType"] == "allocation").count()
        })
    };
    let transfers_before = transfers(&w.sim.state().await);

    // The cluster forgets everything without offboarding. A lost cluster has no operator
    // running: a live one would re-add its finalizer and archive the org on the delete.
    // Deleted first: the finalizer policy gives an object that is not being deleted its
    // finalizer back.
    w.op.kill();
    w.env
        .kubectl_ok(&["delete", "customerorg", "acme", "--wait=false"]);
    w.env.drop_finalizers("customerorg", "acme");
    w.env
        .kubectl_ok(&["wait", "--for=delete", "customerorg/acme", "--timeout=30s"]);
    // Its Secrets are gone with it (not left to the garbage collector, whose monitor for a
    // freshly installed CRD may take its discovery period to start).
    w.env.kubectl_ok(&[
        "delete",
        "secret",
        &secret_name,
        &hook_secret,
        "--ignore-not-found",
    ]);

    apply_yaml_ok(&yaml);
    w.op.restart();
    let corg = w.wait_ready("acme").await;
    assert_eq!(
        corg["status"]["orgId"],
        org_id.as_str(),
        "adopted, not created"
    );
    let state = w.sim.state().await;
    assert_eq!(
        state["orgs"].as_array().map_or(0, Vec::len),
        orgs_before,
        "no new org"
    );
    assert_eq!(transfers(&state), transfers_before, "no new transfer");
    let key = wait_for_some("the key Secret", CONVERGE, || async {
        secret_value(&w.env, &secret_name, "apiKey")
    })
    .await;
    assert_eq!(whoami_with(&w.sim, &key).await, 200);
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_provider_is_reported_and_causes_no_writes() {
    let env = TestEnv::new("noprov").await;
    let sim = Sim::start(&[]);
    let provider = format!("p-{}", env.ns);
    apply_yaml_ok(&format!(
        r#"apiVersion: orgops.dev/v1alpha1
kind: OrgProvider
metadata: {{name: {provider}}}
spec:
  type: layers
  baseUrl: {url}
  credentialsSecretRef: {{namespace: {ns}, name: parent-key, key: apiKey}}
"#,
        url = sim.base_url(),
        ns = env.ns
    ));
    let lease = format!("orgops-leader-{}", env.ns);
    let op = Operator::start(&env, &["--resync-interval", "3s", "--lease-name", &lease]).await;
    apply_yaml_ok(&format!(
        r#"apiVersion: orgops.dev/v1alpha1
kind: CustomerOrg
metadata: {{name: acme, namespace: {ns}}}
spec:
  providerRef: {{name: {provider}}}
  displayName: Acme Coffee
"#,
        ns = env.ns
    ));
    let reason = |env: &TestEnv| {
        let out = env.kubectl(&[
            "get",
            "customerorg",
            "acme",
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Ready")].reason}"#,
        ]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    wait_for("Ready=False CredentialsMissing", CONVERGE, || async {
        reason(&env) == "CredentialsMissing"
    })
    .await;
    assert_eq!(
        count(&sim.counters().await, |m, _| m != "GET"),
        0,
        "no writes without a provider"
    );

    // A wrong key: Unauthorized. Then the right key: applied without a restart.
    env.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "parent-key",
        "--from-literal=apiKey=lp_wrong",
    ]);
    wait_for("Ready=False Unauthorized", CONVERGE, || async {
        reason(&env) == "Unauthorized"
    })
    .await;
    let fixed = format!(r#"{{"stringData":{{"apiKey":"{}"}}}}"#, sim.parent_key());
    env.kubectl_ok(&[
        "patch",
        "secret",
        "parent-key",
        "--type=merge",
        "-p",
        &fixed,
    ]);
    wait_for("OrgProvider Ready after rotation", CONVERGE, || async {
        let out = kubectl(&[
            "get",
            "orgprovider",
            &provider,
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
        ]);
        out.stdout == b"True"
    })
    .await;
    assert!(
        op.log().matches("lp_wrong").next().is_none(),
        "key in the log"
    );
    assert!(
        !op.log().contains(sim.parent_key()),
        "parent key in the log"
    );
    let _ = kubectl(&["delete", "orgprovider", &provider, "--ignore-not-found"]);
    drop(op);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_rejection_stalls_with_the_message_and_does_not_retry() {
    let w = World::new("reject", "2s").await;
    // Valid at admission (40 entries, values under 500) but over the API's 16 KB metadata limit.
    let big = "x".repeat(450);
    let entries: Vec<String> = (0..40).map(|i| format!("k{i}: {big}")).collect();
    let yaml = w.corg_yaml("acme", "").replace(
        "metadata: {plan: growth}",
        &format!("metadata: {{{}}}", entries.join(", ")),
    );
    apply_yaml_ok(&yaml);
    let corg = w.wait_stalled("acme", "ApiRejected").await;
    let (ready, _, message) = condition(&corg, "Ready").expect("Ready condition");
    assert_eq!(ready, "False");
    assert!(message.contains("16 KB"), "API message in Ready: {message}");
    wait_for("a Warning ApiRejected Event", CONVERGE, || async {
        let events: Value = serde_json::from_str(&w.events("acme")).unwrap_or_default();
        events["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|e| e["type"] == "Warning" && e["reason"] == "ApiRejected")
        })
    })
    .await;
    assert!(live_orgs(&w.sim.state().await).is_empty(), "no org created");

    // Same generation: no retry storm, not even reads, across several 2 s resyncs.
    w.resyncs(1).await;
    let before = w.org_requests().await;
    let rv = w.corg("acme")["metadata"]["resourceVersion"].clone();
    w.resyncs(4).await;
    assert_eq!(
        w.org_requests().await,
        before,
        "API calls while rejected: {}",
        w.sim.counters().await
    );
    assert_eq!(
        w.corg("acme")["metadata"]["resourceVersion"],
        rv,
        "cluster writes while rejected"
    );
    let events: Value = serde_json::from_str(&w.events("acme")).expect("events JSON");
    let warnings: u64 = events["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|e| e["reason"] == "ApiRejected")
                .map(|e| e["series"]["count"].as_u64().unwrap_or(1))
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(warnings, 1, "one Warning per episode: {events}");

    // A rejected object does not hold up the others.
    apply_yaml_ok(&w.corg_yaml("other", ""));
    w.wait_ready("other").await;
    assert_eq!(live_orgs(&w.sim.state().await).len(), 1);

    // Fixing the spec (new generation) converges.
    apply_yaml_ok(&w.corg_yaml("acme", ""));
    w.wait_ready("acme").await;
    assert_eq!(live_orgs(&w.sim.state().await).len(), 2);
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_provider_is_reported_in_conditions() {
    let w = World::new("noref", "30s").await;
    let yaml = w
        .corg_yaml("acme", "")
        .replace(&format!("name: {}}}", w.provider), "name: nowhere}");
    assert!(yaml.contains("providerRef: {name: nowhere}"), "{yaml}");
    apply_yaml_ok(&yaml);
    let corg = w.wait_stalled("acme", "ProviderNotFound").await;
    let (ready, reason, message) = condition(&corg, "Ready").expect("Ready condition");
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "ProviderNotFound")
    );
    assert!(message.contains("nowhere"), "{message}");
    assert_eq!(
        w.org_requests().await,
        0,
        "no API call without its provider"
    );
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_secret_is_never_overwritten() {
    let w = World::new("foreign", "30s").await;
    w.env.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "acme-integration",
        "--from-literal=apiKey=mine",
    ]);
    apply_yaml_ok(&w.corg_yaml("acme", ""));
    let corg = w.wait_stalled("acme", "SecretConflict").await;
    let (_, _, message) = condition(&corg, "Stalled").expect("Stalled condition");
    assert!(message.contains("acme-integration"), "{message}");
    assert_eq!(
        secret_value(&w.env, "acme-integration", "apiKey").as_deref(),
        Some("mine")
    );
    let owners = w.env.kubectl_ok(&[
        "get",
        "secret",
        "acme-integration",
        "-o",
        "jsonpath={.metadata.ownerReferences}",
    ]);
    assert!(owners.trim().is_empty(), "owner added: {owners}");
    let state = w.sim.state().await;
    let org_id = corg["status"]["orgId"].as_str().expect("orgId");
    let keys: Vec<&Value> = state["apiKeys"].as_array().map_or(Vec::new(), |k| {
        k.iter().filter(|k| k["organizationId"] == org_id).collect()
    });
    assert!(
        keys.is_empty(),
        "no key minted without a Secret to hold it: {keys:?}"
    );
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_customer_org_with_the_same_external_id_is_an_adoption_conflict() {
    let w = World::new("dupext", "30s").await;
    apply_yaml_ok(&w.corg_yaml("first", ""));
    let org_id = text(&w.wait_ready("first").await["status"]["orgId"], "orgId");
    let second = w.corg_yaml("second", "").replace(
        &format!("externalId: {}-second", w.env.ns),
        &format!("externalId: {}-first", w.env.ns),
    );
    apply_yaml_ok(&second);
    let corg = w.wait_stalled("second", "AdoptionConflict").await;
    let (_, _, message) = condition(&corg, "Stalled").expect("Stalled condition");
    assert!(message.contains(&org_id), "{message}");
    assert!(corg["status"]["orgId"].is_null(), "second took the org");
    assert_eq!(live_orgs(&w.sim.state().await).len(), 1, "no second org");
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_key_is_revoked_and_webhook_url_change_is_patched() {
    let w = World::new("edits", "30s").await;
    apply_yaml_ok(&w.corg_yaml("acme", ""));
    let corg = w.wait_ready("acme").await;
    let key_id = text(&corg["status"]["apiKeys"][0]["id"], "key id");
    let secret_name = text(&corg["status"]["apiKeys"][0]["secretName"], "secret");
    let hook_id = text(&corg["status"]["webhooks"][0]["id"], "webhook id");
    let patches = |c: &Value| count(c, |m, route| m == "PATCH" && route.contains("webhook"));
    assert_eq!(patches(&w.sim.counters().await), 0);

    let yaml = w
        .corg_yaml("acme", "")
        .replace(
            "  apiKeys:\n  - name: integration\n    scopes: [content:read, content:write]\n",
            "  apiKeys: []\n",
        )
        .replace(
            "https://crm.example.com/layers/webhooks",
            "https://crm.example.com/v2/hooks",
        );
    assert!(yaml.contains("apiKeys: []") && yaml.contains("/v2/hooks"));
    apply_yaml_ok(&yaml);
    let corg = w.wait_ready("acme").await;
    assert!(
        corg["status"]["apiKeys"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{}",
        corg["status"]
    );

    let state = w.sim.state().await;
    let key = state["apiKeys"]
        .as_array()
        .and_then(|k| k.iter().find(|k| k["id"] == key_id.as_str()))
        .expect("key in the simulator");
    assert_eq!(key["status"], "revoked", "{key}");
    let hook = state["webhookEndpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["id"] == hook_id.as_str()))
        .expect("the same webhook endpoint");
    assert_eq!(hook["url"], "https://crm.example.com/v2/hooks");
    assert_eq!(
        patches(&w.sim.counters().await),
        1,
        "one PATCH, no re-create"
    );
    wait_for("the key Secret deleted", CONVERGE, || async {
        !w.env
            .kubectl(&["get", "secret", &secret_name])
            .status
            .success()
    })
    .await;
    w.cleanup().await;
}

/// Two replicas that find the Lease free at the same moment (a fresh install, a rollout)
/// never both lead: each takes it with a compare-and-swap on the resourceVersion it read
/// (`leader::try_acquire`, a replace), so the second swap on that version gets 409. (With
/// server-side applies under one field manager both once believed they held it, ~10 s of
/// two writers found by the Layers chaos suite; the race itself is a few milliseconds
/// wide, so this checks the mechanism on the real API server.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_lease_taken_by_one_replica_is_not_taken_by_another() {
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::api::{Api, PostParams};
    use orgops::runtime::leader::{LeaseConfig, try_acquire};
    let env = support::TestEnv::new("lease").await;
    let leases: Api<Lease> = Api::namespaced(env.client().await, &env.ns);
    let free = leases
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "orgops"}, "spec": {},
            }))
            .expect("Lease"),
        )
        .await
        .expect("a free Lease");
    let cfg = |who: &str| LeaseConfig {
        namespace: env.ns.clone(),
        name: "orgops".into(),
        identity: who.into(),
        duration: std::time::Duration::from_secs(15),
    };
    let first = try_acquire(&leases, &free, &cfg("replica-a")).await;
    assert!(
        matches!(first, Ok(Some(_))),
        "the free Lease is taken: {first:?}"
    );
    let second = try_acquire(&leases, &free, &cfg("replica-b")).await;
    assert!(
        matches!(second, Ok(None)),
        "a second swap on the same version must conflict, got {second:?}"
    );
    let lease = leases.get("orgops").await.expect("Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("replica-a")
    );
    env.cleanup().await;
}
