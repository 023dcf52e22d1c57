//! Shared set-up for the provider tests: an in-process simulator and a client for it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use layers_sim::{FaultConfig, RunningSim, SimConfig, Tier};
use orgops::provider::layers::{LayersConfig, LayersProvider, RateTier};
use orgops::provider::{IdempotencyKey, Secret};
use serde_json::Value;

pub async fn sim(tier: Tier, parent_credits: u64) -> RunningSim {
    layers_sim::spawn(SimConfig {
        tier,
        parent_credits,
        faults: FaultConfig::default(),
        ..Default::default()
    })
    .await
    .expect("simulator starts")
}

/// Config with short retry delays so fault tests run in seconds.
pub fn fast_config(base_url: &str, key: &str, tier: RateTier) -> LayersConfig {
    let mut cfg = LayersConfig::new(base_url, Secret::new(key));
    cfg.tier = Some(tier);
    cfg.max_attempts = 8;
    cfg.retry_base_delay = Duration::from_millis(10);
    cfg.retry_max_delay = Duration::from_millis(200);
    cfg.max_retry_time = Duration::from_secs(30);
    cfg.request_timeout = Duration::from_secs(10);
    cfg
}

pub fn provider(sim: &RunningSim, tier: RateTier) -> LayersProvider {
    LayersProvider::new(fast_config(&sim.base_url(), &sim.parent_key, tier)).expect("provider")
}

pub fn key(s: impl Into<String>) -> IdempotencyKey {
    IdempotencyKey(s.into())
}

pub fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub async fn state(sim: &RunningSim) -> Value {
    reqwest::get(format!("{}/_sim/state", sim.base_url()))
        .await
        .expect("state")
        .json()
        .await
        .expect("state json")
}

pub async fn counters(sim: &RunningSim) -> Value {
    reqwest::get(format!("{}/_sim/counters", sim.base_url()))
        .await
        .expect("counters")
        .json()
        .await
        .expect("counters json")
}

/// Requests the simulator counted for (method, route template), by status.
pub async fn count(sim: &RunningSim, method: &str, route: &str) -> BTreeMap<u64, u64> {
    let c = counters(sim).await;
    let mut out = BTreeMap::new();
    for row in c["requests"].as_array().into_iter().flatten() {
        if row["method"] == method && row["route"] == route {
            let status = row["status"].as_u64().unwrap_or(0);
            *out.entry(status).or_insert(0) += row["count"].as_u64().unwrap_or(0);
        }
    }
    out
}

pub async fn set_faults(sim: &RunningSim, faults: Value) {
    let resp = reqwest::Client::new()
        .put(format!("{}/_sim/faults", sim.base_url()))
        .json(&faults)
        .send()
        .await
        .expect("faults");
    assert!(resp.status().is_success(), "fault config refused");
}

/// The owner marker the provider tests write on the orgs they will archive, suspend or
/// clean up: destructive calls take a proof of ownership (`orgops::provider::owned`).
pub const OWNER_MARKER: &str = "ns/test/uid-1";

pub fn test_owner() -> orgops::provider::owned::Owner {
    orgops::provider::owned::Owner {
        namespace: "ns".into(),
        name: "test".into(),
        uid: "uid-1".into(),
    }
}

/// `metadata` with this tests' owner marker added.
pub fn marked(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut m = meta(pairs);
    m.insert("orgops.dev/owner".into(), OWNER_MARKER.into());
    m
}

/// The proof a destructive call needs: the org read fresh, carrying [`OWNER_MARKER`].
pub async fn proof(p: &dyn orgops::provider::Provider, org_id: &str) -> orgops::provider::Owned {
    orgops::provider::owned::prove(p, None, org_id, &test_owner())
        .await
        .unwrap_or_else(|e| panic!("prove ownership of {org_id}: {e}"))
}
