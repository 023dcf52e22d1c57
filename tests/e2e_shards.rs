//! Shards (issue 32): two operators over one namespace, each with its own Lease, label
//! selector and half of the parent key's rate budget. Each caches, reconciles and writes
//! only its own CustomerOrgs; every customer converges once; the provider sees no 429.
mod support;

use serde_json::Value;
use std::collections::HashSet;
use support::world::{CONVERGE, count_by_status, install_provider};
use support::{Operator, Sim, TestEnv, apply_yaml_ok, wait_for};

const CUSTOMERS: usize = 6;

fn corg_yaml(ns: &str, provider: &str, i: usize) -> String {
    let labels = if i % 2 == 1 {
        "labels: {orgops.dev/shard: \"1\"}, "
    } else {
        ""
    };
    format!(
        "apiVersion: orgops.dev/v1beta1\nkind: CustomerOrg\nmetadata: {{name: c{i}, namespace: {ns}, {labels}}}\nspec:\n  providerRef: {{name: {provider}}}\n  displayName: Shard Customer {i}\n  externalId: {ns}-c{i}\n  credits: {{allocated: 100}}\n"
    )
}

/// The shard's cache: the sum of its `orgops_customer_orgs` gauge.
fn cached(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("orgops_customer_orgs{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn all_ready(list: &Value) -> bool {
    let items = list["items"].as_array().cloned().unwrap_or_default();
    items.len() == CUSTOMERS
        && items.iter().all(|v| {
            v["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["type"] == "Ready"
                        && c["status"] == "True"
                        && c["observedGeneration"] == v["metadata"]["generation"]
                })
            })
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_split_one_namespace() {
    let env = TestEnv::new("shards").await;
    let sim = Sim::start(&["--tier", "standard"]);
    let provider = format!("p-{}", env.ns);
    install_provider(&env, &sim, &provider, "parent-key");
    let lease0 = format!("--lease-name=shard0-{}", env.ns);
    let lease1 = format!("--lease-name=shard1-{}", env.ns);
    let shard0 = Operator::start(
        &env,
        &[
            "--leader-election=true",
            "--lease-duration=4s",
            "--rate-shares=2",
            "--resync-interval=5s",
            &lease0,
            "--shard-selector=orgops.dev/shard notin (1)",
        ],
    )
    .await;
    let shard1 = shard0.sibling("shard1", &[&lease1, "--shard-selector=orgops.dev/shard=1"]);

    for i in 0..CUSTOMERS {
        apply_yaml_ok(&corg_yaml(&env.ns, &provider, i));
    }
    wait_for("every customer Ready", CONVERGE, || async {
        let out = env.kubectl(&["get", "customerorgs", "-o", "json"]);
        serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|v| all_ready(&v))
    })
    .await;

    // Each shard caches only its own objects.
    wait_for("each shard caching its half", CONVERGE, || async {
        cached(&shard0.metrics().await) == (CUSTOMERS as u64).div_ceil(2)
            && cached(&shard1.metrics().await) == CUSTOMERS as u64 / 2
    })
    .await;

    // One org per customer (no shard created another's), written by both shards, and
    // no shard's log names another shard's customer.
    let state = sim.state().await;
    let orgs = state["orgs"].as_array().cloned().unwrap_or_default();
    let customers: HashSet<&str> = orgs
        .iter()
        .filter_map(|o| o["metadata"]["externalId"].as_str())
        .filter(|e| e.starts_with(&format!("{}-c", env.ns)))
        .collect();
    assert_eq!(customers.len(), CUSTOMERS, "one org per customer: {state}");
    assert_eq!(orgs.len(), CUSTOMERS, "no org twice: {state}");
    let replicas: HashSet<String> = sim
        .writes()
        .await
        .iter()
        .filter_map(|w| w["replica"].as_str().map(str::to_string))
        .collect();
    assert_eq!(replicas.len(), 2, "both shards wrote: {replicas:?}");
    for (op, theirs) in [(&shard0, 1), (&shard1, 0)] {
        let log = op.log();
        for i in (theirs..CUSTOMERS).step_by(2) {
            let name = format!("{}/c{i}", env.ns);
            assert!(!log.contains(&name), "{name} in the other shard's log");
        }
    }

    let counters = sim.counters().await;
    assert_eq!(
        count_by_status(&counters, |_, _, status| status == 429),
        0,
        "no 429: {counters}"
    );
    drop((shard0, shard1));
    env.cleanup().await;
}
