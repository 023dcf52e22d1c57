//! Exactly once where two writers race (issue 10, items 3 and 8), against the simulator
//! in-process: the allocation key is a compare-and-swap on the observed ledger sum, and
//! a replica that is not the leader starts no write at all.

mod provider_support;

use std::collections::BTreeMap;

use kube::api::Api;
use layers_sim::Tier;
use orgops::api::{CustomerOrg, CustomerOrgSpec, CustomerOrgStatus};
use orgops::provider::layers::RateTier;
use orgops::provider::*;
use orgops::reconcile::{apply, plan};
use provider_support::*;

#[tokio::test]
async fn two_writers_that_saw_one_ledger_move_credits_once() {
    let sim = sim(Tier::Partner, 100_000).await;
    let p = provider(&sim, RateTier::Partner);
    let org = p
        .create_org(
            &NewOrg {
                name: "race".into(),
                metadata: BTreeMap::new(),
                billing_email: None,
                extras: Default::default(),
            },
            &key("create-race"),
        )
        .await
        .unwrap();
    // Both read the ledger at 0; one wants 500, the other (a deposed leader, or a second
    // CustomerOrg adopting the same org) 800.
    let k = plan::allocation_key(&org.id, 0, 0);
    let marker = meta(&[(plan::ALLOCATION_MARKER, "true")]);
    let (a, b) = tokio::join!(
        p.allocate_credits(&org.id, 500, &marker, &k),
        p.allocate_credits(&org.id, 800, &marker, &k)
    );
    let ok = [&a, &b].iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "exactly one transfer: {a:?} {b:?}");
    let refused = [a, b].into_iter().find_map(Result::err).unwrap();
    assert!(
        matches!(
            refused,
            orgops::provider::error::ProviderError::IdempotencyConflict(_)
        ),
        "the loser is told to re-read: {refused}"
    );
    let rows = p.list_allocations(&org.id).await.unwrap();
    let moved = plan::marked_sum(&rows);
    assert!(moved == 500 || moved == 800, "moved {moved}");
    assert_eq!(rows.len(), 1, "one transfer in the ledger: {rows:?}");
}

#[tokio::test]
async fn a_replica_without_the_lease_starts_no_write() {
    let sim = sim(Tier::Partner, 1_000).await;
    let p = provider(&sim, RateTier::Partner);
    let mut corg = CustomerOrg::new(
        "acme",
        serde_json::from_value::<CustomerOrgSpec>(serde_json::json!({
            "displayName": "Acme",
            "credits": {"allocated": 100}
        }))
        .unwrap(),
    );
    corg.metadata.namespace = Some("customers".into());
    corg.metadata.uid = Some("uid-1".into());
    corg.metadata.generation = Some(1);
    let observed = plan::Observed {
        found: plan::Found::Nothing,
        keys: None,
        webhooks: None,
        ledger: None,
        secrets: BTreeMap::new(),
        owned: Vec::new(),
        capabilities: p.capabilities(),
    };
    let the_plan = plan::plan(&corg, &observed);
    assert!(!the_plan.actions.is_empty());
    // No API server is needed: no step that touches Secrets runs.
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client, "customers");
    let mut status = CustomerOrgStatus::default();
    let applied = apply::apply(&p, &secrets, &corg, &the_plan, &mut status, &|| false).await;
    assert!(matches!(applied.failure, Some(apply::StepError::NotLeader)));
    assert_eq!(applied.writes, 0);
    let c = counters(&sim).await;
    let writes: u64 = c["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["method"] != "GET")
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(writes, 0, "a non-leader wrote: {c}");
    // The leader does the same plan.
    let applied = apply::apply(&p, &secrets, &corg, &the_plan, &mut status, &|| true).await;
    assert!(applied.failure.is_none(), "{:?}", applied.failure);
    assert!(status.org_id.is_some());
}
