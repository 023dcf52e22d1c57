//! Issue 27, item 6, at the provider client: a write sent under an idempotency key while
//! the original request with that key still runs (two passes, or a replica and a zombie,
//! racing on one slow commit) gets, in the simulator's `--idempotency-in-flight conflict`
//! mode, `409 IDEMPOTENCY_CONFLICT` ("still in progress", `Retry-After`). That is "try
//! again later with the same key", never a refusal that needs a human: both calls get the
//! one key the original minted.

mod provider_support;

use std::time::Duration;

use layers_sim::{Assumptions, InFlightMode, SimConfig, Tier};
use orgops::provider::layers::{LayersProvider, RateTier};
use orgops::provider::*;
use provider_support::*;
use serde_json::json;

/// A simulator answering in-flight duplicates with 409, a provider, an org, and the key
/// spec the tests mint.
async fn world() -> (layers_sim::RunningSim, LayersProvider, Org, NewApiKey) {
    let sim = layers_sim::spawn(SimConfig {
        tier: Tier::Unlimited,
        assumptions: Assumptions {
            idempotency_in_flight: InFlightMode::Conflict,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .expect("simulator starts");
    let cfg = fast_config(&sim.base_url(), &sim.parent_key, RateTier::Unlimited);
    let p = LayersProvider::new(cfg).expect("provider");
    let new = NewOrg {
        name: "slow commit".into(),
        metadata: meta(&[("externalId", "slow")]),
        billing_email: None,
        extras: Default::default(),
    };
    let org = p
        .create_org(&new, &key("create-slow"))
        .await
        .expect("create");
    let spec = NewApiKey {
        name: "integration".into(),
        scopes: vec!["content:read".into()],
        env: KeyEnv::Live,
    };
    (sim, p, org, spec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_of_a_request_still_in_flight_is_retried_not_refused() {
    let (sim, p, org, spec) = world().await;

    // Every write commits after 2 s; a second mint under the same key starts while the
    // first one runs.
    set_faults(&sim, json!({"slowCommit": 1.0, "slowCommitMs": 2000})).await;
    let mint_key = key("mint-slow");
    let first = p.mint_key(&org.id, &spec, &mint_key);
    let second = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        p.mint_key(&org.id, &spec, &mint_key).await
    };
    let (first, second) = tokio::join!(first, second);
    set_faults(&sim, json!({})).await;
    let first = first.expect("the original mint");
    let err = match &second {
        Ok(_) => None,
        Err(e) => Some((e.code().to_string(), e.needs_human(), e.is_retryable())),
    };
    let second = second.unwrap_or_else(|_| {
        panic!("the duplicate did not complete: {err:?} (code, needs_human, retryable)")
    });
    assert_eq!(first.key.id, second.key.id, "one key for one request");
    let keys = p.list_keys(&org.id).await.expect("list keys");
    assert_eq!(keys.len(), 1, "one key: {keys:?}");
    let conflicts = count(&sim, "POST", "/v1/organizations/:orgId/api-keys").await;
    assert!(
        conflicts.get(&409).is_some_and(|n| *n > 0),
        "the in-flight duplicate was met: {conflicts:?}"
    );
}

/// The path the issue names: a commit slower than the client's patience. The first
/// attempt gets no answer (the simulator's late-commit fault: the connection closes while
/// the write goes on, what a client sees after its own timeout); the re-send under the same
/// key meets the original still running, waits out the in-flight 409 (`Retry-After`) and
/// gets the original's answer: one key, no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_client_timeout_waits_out_the_original() {
    let (sim, p, org, spec) = world().await;
    let mut cfg = fast_config(&sim.base_url(), &sim.parent_key, RateTier::Unlimited);
    cfg.max_attempts = 1;
    let impatient = LayersProvider::new(cfg).expect("provider");
    let mint_key = key("mint-slow");
    set_faults(&sim, json!({"lateCommit": 1.0, "slowCommitMs": 2500})).await;
    let gave_up = impatient.mint_key(&org.id, &spec, &mint_key).await;
    set_faults(&sim, json!({})).await;
    assert!(gave_up.is_err(), "the first attempt got no answer");
    let minted = p.mint_key(&org.id, &spec, &mint_key).await;
    let minted = minted.unwrap_or_else(|e| panic!("the mint failed: {} {e}", e.code()));
    let keys = p.list_keys(&org.id).await.expect("list keys");
    assert_eq!(keys.len(), 1, "one key: {keys:?}");
    assert_eq!(keys[0].id, minted.key.id);
    let mints = count(&sim, "POST", "/v1/organizations/:orgId/api-keys").await;
    assert!(
        mints.get(&409).is_some_and(|n| *n > 0),
        "the retry met the original still running: {mints:?}"
    );
}
