//! Exactly-once under faults: 1,000 create -> allocate -> mint sequences with
//! deterministic idempotency keys while ~20 % of requests hit an injected 5xx, 429 or
//! "committed, then the response was lost". Afterwards the simulator holds exactly
//! 1,000 orgs, exactly the intended credits, one key per org, and every minted secret
//! can be recovered by replaying the mint and authenticates as its child.

mod provider_support;

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use futures::StreamExt;
use layers_sim::Tier;
use orgops::provider::layers::{LayersProvider, RateTier};
use orgops::provider::metrics::ProviderMetrics;
use orgops::provider::*;
use provider_support::*;
use serde_json::json;

const N: usize = 1000;
const CONCURRENCY: usize = 200;

fn credits_for(i: usize) -> u64 {
    100 + (i % 7) as u64
}

fn new_org(i: usize) -> NewOrg {
    NewOrg {
        name: format!("customer {i}"),
        metadata: meta(&[("externalId", &format!("cust-{i}"))]),
        billing_email: None,
        extras: Default::default(),
    }
}

fn new_key() -> NewApiKey {
    NewApiKey {
        name: "integration".into(),
        scopes: vec!["content:read".into()],
        env: KeyEnv::Live,
    }
}

/// The controller re-runs a failed step on its next reconcile with the same key; do the
/// same here if a step ever exhausts its in-client retries.
async fn step<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ProviderResult<T>>,
{
    let mut last = None;
    for _ in 0..5 {
        match f().await {
            Ok(v) => return v,
            Err(e) if e.is_retryable() => last = Some(e),
            Err(e) => panic!("non-transient error: {e}"),
        }
    }
    panic!("still failing after 5 reconciles: {last:?}")
}

async fn sequence(p: &LayersProvider, i: usize) -> (String, Secret) {
    let (new, create_key) = (new_org(i), key(format!("create-{i}")));
    let org = step(|| p.create_org(&new, &create_key)).await;
    let marker = meta(&[("orgops.dev/seq", &i.to_string())]);
    let alloc_key = key(format!("alloc-{i}"));
    step(|| p.allocate_credits(&org.id, credits_for(i), &marker, &alloc_key)).await;
    let (spec, mint_key) = (new_key(), key(format!("mint-{i}")));
    let minted = step(|| p.mint_key(&org.id, &spec, &mint_key)).await;
    (org.id, minted.secret)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_sequences_under_faults_are_exactly_once() {
    let parent_credits = 1_000_000;
    let sim = sim(Tier::Unlimited, parent_credits).await;
    let metrics = ProviderMetrics::unregistered();
    let mut cfg = fast_config(&sim.base_url(), &sim.parent_key, RateTier::Unlimited);
    cfg.metrics = Some(metrics.clone());
    let p = LayersProvider::new(cfg).unwrap();

    set_faults(
        &sim,
        json!({ "error5xx": 0.10, "rateLimit429": 0.03, "loseResponse": 0.08 }),
    )
    .await;
    let started = Instant::now();
    let results: Vec<(usize, (String, Secret))> = futures::stream::iter(0..N)
        .map(|i| {
            let p = &p;
            async move { (i, sequence(p, i).await) }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let faulty = started.elapsed();
    let injected = counters(&sim).await["faultsInjected"].as_u64().unwrap();
    set_faults(&sim, json!({})).await;

    // Enough faults happened for the result to mean something.
    assert!(injected > 500, "only {injected} faults injected");
    let by_seq: BTreeMap<usize, (String, Secret)> = results.into_iter().collect();
    assert_eq!(by_seq.len(), N);

    let st = state(&sim).await;
    let orgs = st["orgs"].as_array().unwrap();
    assert_eq!(orgs.len(), N, "exactly one org per sequence");
    let ids: HashSet<&str> = by_seq.values().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), N);
    let want_total: u64 = (0..N).map(credits_for).sum();
    for (i, (id, _)) in &by_seq {
        let org = orgs.iter().find(|o| o["id"] == id.as_str()).unwrap();
        assert_eq!(org["balance"].as_u64(), Some(credits_for(*i)), "org {i}");
        let ledger = st["ledgers"][id.as_str()].as_array().unwrap();
        assert_eq!(ledger.len(), 1, "one allocation event for org {i}");
    }
    assert_eq!(
        st["parent"]["balance"].as_u64(),
        Some(parent_credits - want_total)
    );
    assert_eq!(
        st["apiKeys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["organizationId"] != sim.parent_org_id.as_str())
            .count(),
        N,
        "exactly one key minted per org"
    );

    // Every secret is recoverable: the replayed mint returns it, and it authenticates.
    let checks: Vec<bool> = futures::stream::iter(by_seq.iter())
        .map(|(i, (id, secret))| {
            let p = &p;
            let base = sim.base_url();
            async move {
                let again = p
                    .mint_key(id, &new_key(), &key(format!("mint-{i}")))
                    .await
                    .unwrap();
                let child = LayersProvider::new(fast_config(
                    &base,
                    again.secret.expose(),
                    RateTier::Unlimited,
                ))
                .unwrap();
                again.secret == *secret && child.whoami().await.unwrap().organization_id == *id
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    assert!(checks.iter().all(|ok| *ok));
    println!(
        "{N} sequences in {:.1}s with {injected} injected faults, {} retries' worth of errors",
        faulty.as_secs_f64(),
        metrics.responses_with_status("error")
            + metrics.responses_with_status("500")
            + metrics.responses_with_status("502")
            + metrics.responses_with_status("503")
            + metrics.responses_with_status("429")
    );
    sim.shutdown().await;
}
