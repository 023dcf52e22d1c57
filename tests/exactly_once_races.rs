//! Exactly once where two writers race (issue 10, items 3 and 8), against the simulator
//! in-process: the allocation key is a compare-and-swap on the observed ledger sum, and
//! a replica that is not the leader starts no write at all.

mod provider_support;

use std::collections::BTreeMap;

use kube::api::Api;
use layers_sim::Tier;
use orgops::api::{CustomerOrg, CustomerOrgSpec, CustomerOrgStatus};
use orgops::provider::error::ProviderError;
use orgops::provider::layers::{LayersProvider, RateTier};
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
        ledger_note: None,
        secrets: BTreeMap::new(),
        owned: Vec::new(),
        capabilities: p.capabilities(),
    };
    let the_plan = plan::plan(&corg, &observed);
    assert!(!the_plan.actions.is_empty());
    // No API server is needed: no step that touches Secrets runs.
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "customers");
    let mut status = CustomerOrgStatus::default();
    let claims = orgops::reconcile::claims::Claims::new(client.clone(), "orgops-system", "p");
    let prover = apply::Prover {
        provider: &p,
        claims: &claims,
        owner: orgops::reconcile::claims::owner(&corg),
    };
    let closed = orgops::fence::Fence::closed("replica-a");
    let applied = apply::apply(&prover, &secrets, &corg, &the_plan, &mut status, &closed).await;
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
    let open = orgops::fence::Fence::unfenced("replica-a");
    let applied = apply::apply(&prover, &secrets, &corg, &the_plan, &mut status, &open).await;
    assert!(applied.failure.is_none(), "{:?}", applied.failure);
    assert!(status.org_id.is_some());
}

/// The fence is checked again before every attempt, in the client: a write whose first
/// attempt went out inside the window is not retried once the window closed (a leader
/// frozen in its backoff sleep wakes up outside it), and every attempt names its sender
/// and the end of its window.
#[tokio::test]
async fn a_retry_after_the_fence_closed_is_never_sent() {
    let sim = sim(Tier::Partner, 1_000).await;
    let mut cfg = fast_config(&sim.base_url(), &sim.parent_key, RateTier::Partner);
    cfg.retry_base_delay = std::time::Duration::from_millis(400);
    cfg.retry_max_delay = std::time::Duration::from_millis(400);
    let fence = orgops::fence::Fence::closed("replica-a");
    fence.open_until(std::time::Instant::now() + std::time::Duration::from_millis(150));
    cfg.fence = Some(fence.clone());
    let p = LayersProvider::new(cfg).unwrap();
    set_faults(&sim, serde_json::json!({"error5xx": 1.0})).await;
    let new = NewOrg {
        name: "Acme".into(),
        metadata: BTreeMap::new(),
        billing_email: None,
        extras: Default::default(),
    };
    // Retries are full-jitter: wait until the window is surely closed, then look.
    let err = p.create_org(&new, &key("c")).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Fenced(_)),
        "the retry was refused by the fence: {err:?}"
    );
    let sent = count(&sim, "POST", "/v1/organizations").await;
    assert!(
        sent.values().sum::<u64>() >= 1 && !fence.is_open(),
        "attempts inside the window went out: {sent:?}"
    );
    let before = sent.values().sum::<u64>();
    let again = p.create_org(&new, &key("c")).await.unwrap_err();
    assert!(matches!(again, ProviderError::Fenced(_)), "{again:?}");
    let after: u64 = count(&sim, "POST", "/v1/organizations")
        .await
        .values()
        .sum();
    assert_eq!(after, before, "nothing sent with the fence closed");
}
