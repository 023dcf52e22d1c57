//! Chaos suite (issue #7): a flaky Layers API, an operator SIGKILLed at random moments,
//! and users editing, suspending, resuming and deleting CustomerOrgs meanwhile. Afterwards an
//! audit of the simulator's ledger and the cluster proves nothing was lost or duplicated.
//!
//! Scale: `ORGOPS_CHAOS_ORGS` (default and "full" 200; 40 for a quick local run) and `ORGOPS_CHAOS_KILLS`
//! (default 10). Needs `cargo build -p layers-sim` first. The summary line goes to stderr
//! even when output is captured.
#[path = "../support/mod.rs"]
mod support;

mod audit;
mod customers;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use rand::Rng;
use serde_json::json;
use support::{Operator, Sim, TestEnv};

use audit::{Kind, SimView, audit, audit_catches_tampering};
use customers::{Customer, Edit, apply_edit, initial_customers, manifest, planned_edits};

const MANAGER: &str = "chaos-test";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub(crate) fn customer_orgs() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("orgops.dev", "v1alpha1", "CustomerOrg"),
        "customerorgs",
    )
}

fn org_providers() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("orgops.dev", "v1alpha1", "OrgProvider"),
        "orgproviders",
    )
}

fn ready_at_generation(obj: &DynamicObject) -> bool {
    let generation = obj.metadata.generation.unwrap_or(0);
    let status = &obj.data["status"];
    status["conditions"].as_array().is_some_and(|conds| {
        conds.iter().any(|c| {
            c["type"] == "Ready"
                && c["status"] == "True"
                && c["observedGeneration"]
                    .as_i64()
                    .or_else(|| status["observedGeneration"].as_i64())
                    == Some(generation)
        })
    })
}

/// Waits until every live object is Ready at its generation and every deleted one is gone.
/// Returns the names still pending (empty on success).
async fn settle(
    api: &Api<DynamicObject>,
    customers: &[Customer],
    timeout: Duration,
) -> Vec<String> {
    let start = Instant::now();
    loop {
        let mut pending = Vec::new();
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                let by_name: HashMap<String, &DynamicObject> = list
                    .items
                    .iter()
                    .map(|o| (o.metadata.name.clone().unwrap_or_default(), o))
                    .collect();
                for c in customers {
                    match (c.deleted, by_name.get(&c.name)) {
                        (true, Some(_)) => {
                            pending.push(format!("{} (deleted, finalizer not removed)", c.name))
                        }
                        (false, None) => pending.push(format!("{} (missing)", c.name)),
                        (false, Some(o)) if !ready_at_generation(o) => {
                            let conds = o.data["status"]["conditions"].to_string();
                            pending.push(format!("{} (not Ready: {conds})", c.name));
                        }
                        _ => {}
                    }
                }
            }
            Err(e) => pending.push(format!("list failed: {e}")),
        }
        if pending.is_empty() || start.elapsed() >= timeout {
            return pending;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_loses_nothing_and_duplicates_nothing() {
    let n = env_usize("ORGOPS_CHAOS_ORGS", 200);
    let kills = env_usize("ORGOPS_CHAOS_KILLS", 10);
    let settle_secs = env_usize("ORGOPS_CHAOS_SETTLE_SECS", 240.max(n * 3)) as u64;

    let env = TestEnv::new("chaos").await;
    let sim = Sim::start(&["--tier", "unlimited"]);
    let starting_total = SimView::parse(&sim.state().await).parent_balance;
    let client = env.client().await;

    // The provider: parent key in a Secret, an OrgProvider named after the namespace.
    let provider = env.ns.clone();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &env.ns);
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "layers-parent-key", "namespace": env.ns},
        "stringData": {"apiKey": sim.parent_key()}});
    secrets
        .patch(
            "layers-parent-key",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(secret),
        )
        .await
        .expect("create parent key Secret");
    let providers: Api<DynamicObject> = Api::all_with(client.clone(), &org_providers());
    let prov = json!({"apiVersion": "orgops.dev/v1alpha1", "kind": "OrgProvider",
        "metadata": {"name": provider},
        "spec": {"type": "layers", "baseUrl": sim.base_url(),
                 "credentialsSecretRef": {"namespace": env.ns, "name": "layers-parent-key", "key": "apiKey"},
                 "rateLimit": {"tier": "auto"}}});
    providers
        .patch(
            &provider,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(prov),
        )
        .await
        .expect("create OrgProvider");

    // Faults from the first request on: 10 % 5xx, 5 % lost responses, 5 % 429, latency.
    sim.set_faults(
        json!({"error5xx": 0.10, "loseResponse": 0.05, "rateLimit429": 0.05,
                          "latency": 0.2, "latencyMs": 300}),
    )
    .await;

    let corgs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &env.ns, &customer_orgs());
    let mut customers = initial_customers(&env.ns, n);
    stream::iter(customers.iter().map(|c| manifest(&env.ns, &provider, c)))
        .map(|obj| {
            let api = corgs.clone();
            async move {
                let name = obj["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                api.patch(
                    &name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(obj),
                )
                .await
                .unwrap_or_else(|e| panic!("create {name}: {e}"));
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;

    // One replica and no leader election (the fixture's default): a restarted process works at
    // once, so every kill lands on real work instead of on a wait for an expired Lease.
    let mut op = Operator::start(&env, &["--concurrency", "8"]).await;

    // Kill at random moments; apply a share of the edits each round, alternately while the
    // operator is up (racing its writes) and while it is down (found on restart).
    let mut edits = planned_edits(&customers);
    {
        let mut rng = rand::rng();
        for i in (1..edits.len()).rev() {
            edits.swap(i, rng.random_range(0..=i));
        }
    }
    let per_round = edits.len().div_ceil(kills.max(1));
    let mut edits = edits.into_iter();
    for round in 0..kills {
        let (up, down) = {
            let mut rng = rand::rng();
            (
                rng.random_range(1_000..6_000u64),
                rng.random_range(100..2_000u64),
            )
        };
        tokio::time::sleep(Duration::from_millis(up)).await;
        let batch: Vec<Edit> = edits.by_ref().take(per_round).collect();
        if round % 2 == 0 {
            for e in &batch {
                apply_edit(&corgs, &mut customers, *e).await;
            }
        }
        assert!(
            op.is_running(),
            "the operator exited on its own; log: {}",
            op.log_path().display()
        );
        op.kill();
        if round % 2 == 1 {
            for e in &batch {
                apply_edit(&corgs, &mut customers, *e).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(down)).await;
        op.restart();
    }
    for e in edits {
        apply_edit(&corgs, &mut customers, e).await;
    }

    let pending = settle(&corgs, &customers, Duration::from_secs(settle_secs)).await;
    let faults = sim.counters().await["faultsInjected"].as_u64().unwrap_or(0);
    sim.set_faults(json!({})).await;
    let mut audit = audit(&env, &sim, &customers, starting_total).await;
    for p in pending {
        audit.add(
            Kind::Wrong,
            format!("not settled after {settle_secs}s: {p}"),
        );
    }
    let log = op.log();
    if log.contains(sim.parent_key()) {
        audit.add(Kind::Wrong, "the operator logged the parent key".into());
    }
    drop(op);
    if audit.violations.is_empty() {
        audit_catches_tampering(&env, &sim, &customers, starting_total).await;
    }

    // Written to the process's stderr directly, so the line shows in CI even though the
    // test harness captures println! output of passing tests.
    let line = format!(
        "chaos: {n} orgs, {kills} kills, {faults} faults injected, {} lost, {} duplicated\n",
        audit.count(Kind::Lost),
        audit.count(Kind::Duplicated)
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    let mut listed: Vec<String> = audit
        .violations
        .iter()
        .map(|(k, m)| format!("{k:?}: {m}"))
        .collect();
    listed.sort();
    let _ = providers.delete(&provider, &DeleteParams::default()).await;
    if listed.is_empty() {
        env.cleanup().await;
    }
    assert!(
        listed.is_empty(),
        "{} violations:\n{}",
        listed.len(),
        listed.join("\n")
    );
    assert!(
        faults > 0,
        "the simulator injected no faults, so this run proved nothing"
    );
}
