//! The change log (issue 30), end to end: a customer's whole life (create, name and
//! metadata update, credit config, transfers, key mint, scope change, rotation and revoke,
//! webhook create, update and delete, suspend, resume, archive) leaves exactly one record
//! per provider write in the operator's log, on target `orgops::changelog`: as many as the
//! simulator counted writes, each naming the object (uid, generation), the GitOps revision
//! from `orgops.dev/revision`, the call, its idempotency key where it has one, the provider's
//! request id and the ids it produced, with a before/after of what changed; never a secret.
mod support;

use std::collections::BTreeMap;

use serde_json::{Value, json};
use support::world::*;
use support::{apply_yaml_ok, wait_for};

use orgops::changelog::{Outcome, Record, SCHEMA};

/// Provider writes the simulator answered (every non-GET API request).
async fn writes(w: &World) -> u64 {
    count(&w.sim.counters().await, |m, route| {
        m != "GET" && route.starts_with("/v1/")
    })
}

/// The records that stand for a request sent (not a hold, not a ledger observation).
fn sent(records: &[Record]) -> Vec<&Record> {
    records
        .iter()
        .filter(|r| !matches!(r.outcome, Outcome::Held | Outcome::Observed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_write_leaves_one_record() {
    let w = World::with(
        "chlog",
        &["--tier", "unlimited"],
        &["--resync-interval", "5s"],
    )
    .await;
    let yaml = w.corg_yaml("c", "").replace(
        "metadata: {name: c, namespace:",
        "metadata: {annotations: {orgops.dev/revision: 4f2c9e1}, name: c, namespace:",
    );
    apply_yaml_ok(&yaml);
    let mut secrets = Vec::new();
    let mut collect = |corg: &Value| {
        for (list, key) in [("apiKeys", "apiKey"), ("webhooks", "signingSecret")] {
            for entry in corg["status"][list].as_array().into_iter().flatten() {
                let name = text(&entry["secretName"], "secretName");
                secrets.extend(secret_value(&w.env, &name, key));
            }
        }
    };
    collect(&w.wait_ready("c").await);
    let steps: [Value; 7] = [
        json!({"spec": {"displayName": "Acme Coffee Ltd", "metadata": {"plan": "scale"}}}),
        json!({"spec": {"credits": {"allocated": 800, "monthlyCap": 6000}}}),
        json!({"spec": {"apiKeys": [{"name": "integration", "scopes": ["content:read"]}]}}),
        json!({"metadata": {"annotations": {"orgops.dev/rotate-keys": "2026-q1"}}}),
        json!({"spec": {"webhooks": [{"name": "crm", "url": "https://crm.example.com/v2", "events": ["content.generated"]}]}}),
        json!({"spec": {"state": "suspended"}}),
        json!({"spec": {"state": "active", "webhooks": []}}),
    ];
    for step in steps {
        w.patch_corg("c", &step);
        collect(&w.wait_ready("c").await);
    }
    assert!(
        secrets.len() >= 3,
        "the key, its rotation, the signing secret: {}",
        secrets.len()
    );
    w.env
        .kubectl_ok(&["delete", "customerorg", "c", "--wait=true"]);
    wait_for("the archive's record", CONVERGE, || async {
        w.changelog("c").iter().any(|r| r.call == "archive")
    })
    .await;

    let all = w.changelog("c");
    let sent = sent(&all);
    assert_eq!(
        sent.len() as u64,
        writes(&w).await,
        "one record per provider write: {:#?}",
        all.iter().map(|r| (&r.call, r.outcome)).collect::<Vec<_>>()
    );
    let mut by_call: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &sent {
        *by_call.entry(r.call.as_str()).or_default() += 1;
    }
    for call in [
        "create",
        "update",
        "credit-config",
        "transfer",
        "mint",
        "rotate",
        "revoke",
        "webhook-create",
        "webhook-update",
        "webhook-delete",
        "suspend",
        "resume",
        "archive",
    ] {
        assert!(by_call.contains_key(call), "no {call} record: {by_call:?}");
    }
    let uid = all[0].object.uid.clone();
    assert!(!uid.is_empty());
    for r in &all {
        assert_eq!(r.schema, SCHEMA);
        assert_eq!(r.object.uid, uid);
        assert_eq!(r.provider, w.provider);
        let g = r
            .gitops
            .as_ref()
            .expect("the revision annotation is recorded");
        assert_eq!(
            (g.revision.as_deref(), g.source.as_str()),
            (Some("4f2c9e1"), "annotation")
        );
        if matches!(r.outcome, Outcome::Ok) {
            assert!(r.request_id.is_some(), "the provider's request id: {r:?}");
        }
    }
    // The ids and before/after that matter to finance and to an on-call engineer.
    let transfers: Vec<&&Record> = sent.iter().filter(|r| r.call == "transfer").collect();
    assert_eq!(transfers.len(), 2, "500, then 300 more: {transfers:#?}");
    let raise = transfers[1];
    assert!(
        raise
            .idempotency_key
            .as_deref()
            .is_some_and(|k| k.starts_with("orgops-"))
    );
    assert!(
        raise.result["transferId"]
            .as_str()
            .is_some_and(|t| t.starts_with("txn_"))
    );
    assert_eq!(raise.result["credits"], 300);
    assert_eq!(
        (
            raise.changes[0].field.as_str(),
            &raise.changes[0].before,
            &raise.changes[0].after
        ),
        ("credits.allocated", &json!(500), &json!(800))
    );
    assert_eq!(
        raise.object.generation, 3,
        "the generation that asked for it"
    );
    let update = sent
        .iter()
        .find(|r| r.call == "update" && r.changes.iter().any(|c| c.field == "name"))
        .expect("rename");
    let name = update
        .changes
        .iter()
        .find(|c| c.field == "name")
        .expect("name");
    assert_eq!(
        (&name.before, &name.after),
        (&json!("Acme Coffee"), &json!("Acme Coffee Ltd"))
    );
    let mint = sent.iter().find(|r| r.call == "mint").expect("mint");
    assert!(
        mint.result["keyId"]
            .as_str()
            .is_some_and(|k| k.starts_with("key_"))
    );
    let rotate = sent.iter().find(|r| r.call == "rotate").expect("rotate");
    assert!(rotate.result["previousKeyId"].is_string() && rotate.result["keyId"].is_string());
    let suspend = sent.iter().find(|r| r.call == "suspend").expect("suspend");
    assert_eq!(
        (&suspend.changes[0].before, &suspend.changes[0].after),
        (&json!("active"), &json!("suspended"))
    );
    // Never a secret: not the parent key, no key or signing secret the Secrets held.
    let encoded = serde_json::to_string(&all).expect("records");
    assert!(
        !encoded.contains("whsec_"),
        "a signing secret in a change-log record"
    );
    assert!(
        !encoded.contains(w.sim.parent_key()),
        "the parent key in a record"
    );
    for s in &secrets {
        assert!(
            !encoded.contains(s.as_str()),
            "a secret in a change-log record"
        );
    }
    w.cleanup().await;
}
