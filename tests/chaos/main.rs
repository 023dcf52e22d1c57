//! Chaos suite (issues #7 and #10): a flaky Layers API, two operator replicas with leader
//! election SIGKILLed at random moments (the leader every other time, so the Lease moves),
//! users editing every spec field meanwhile (credits, state, displayName, keys and webhooks
//! added, changed and removed, rotation, Orphan and Archive deletes, customers with and without
//! `externalId`, two CustomerOrgs racing to adopt one org) and customers spending with
//! auto-refill on. Afterwards an audit of the simulator's state and the cluster proves nothing
//! was lost, duplicated or left live that the specs do not list, and that money is conserved.
//!
//! Scale: `ORGOPS_CHAOS_ORGS` (default and "full" 200; 40 for a quick local run) and
//! `ORGOPS_CHAOS_KILLS` (default 12, half of them of the leader). Needs `cargo build -p
//! layers-sim` first. The summary line goes to stderr even when output is captured.
#[path = "../support/mod.rs"]
mod support;

mod audit;
mod customers;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use rand::Rng;
use serde_json::json;
use support::chaos::leader_of;
use support::{Operator, Sim, TestEnv, wait_for_some};

use audit::{Kind, SimView, audit, audit_catches_tampering, is_adoption_conflict};
use customers::{
    Customer, Edit, apply_edit, initial_customers, manifest, planned_edits, racing_pair,
};

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

pub(crate) fn parent_webhooks() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("orgops.dev", "v1alpha1", "ParentWebhook"),
        "parentwebhooks",
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
                        // One of the racing pair is expected to stay Stalled.
                        (false, Some(o)) if c.adopt.is_some() && is_adoption_conflict(o) => {}
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

/// Server-side applies the customers, 16 at a time, recording each object's uid.
async fn create_all(
    api: &Api<DynamicObject>,
    ns: &str,
    provider: &str,
    customers: &mut [Customer],
) {
    let uids: Vec<(usize, String)> = stream::iter(customers.iter().enumerate().map(|(i, c)| {
        let api = api.clone();
        let obj = manifest(ns, provider, c);
        let name = c.name.clone();
        async move {
            let created = api
                .patch(
                    &name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(obj),
                )
                .await
                .unwrap_or_else(|e| panic!("create {name}: {e}"));
            (i, created.metadata.uid.unwrap_or_default())
        }
    }))
    .buffer_unordered(16)
    .collect()
    .await;
    for (i, uid) in uids {
        customers[i].uid = uid;
    }
}

/// Applies a user edit; a rotation request first notes the simulator clock.
async fn edit(api: &Api<DynamicObject>, sim: &Sim, customers: &mut [Customer], e: Edit) {
    if let Edit::Rotate(i) = e {
        let now = sim.state().await["clock"]["now"]
            .as_str()
            .map(str::to_string);
        customers[i].rotate_requested_at = now;
    }
    apply_edit(api, customers, e).await;
}

async fn lease_holder(leases: &Api<Lease>, name: &str) -> (Option<String>, i32) {
    match leases.get_opt(name).await {
        Ok(Some(l)) => {
            let spec = l.spec.unwrap_or_default();
            (spec.holder_identity, spec.lease_transitions.unwrap_or(0))
        }
        _ => (None, 0),
    }
}

/// Spends in the spending customers' orgs (auto-refill on) until `stop`: every second each
/// active one settles 40 credits. Returns (successful spends, auto-refills seen).
fn spend_in_background(
    base: String,
    ns: String,
    spenders: Vec<String>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let (spends, refills) = (AtomicU64::new(0), AtomicU64::new(0));
        while !stop.load(Ordering::Relaxed) {
            let state: serde_json::Value = match http.get(format!("{base}/_sim/state")).send().await
            {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => serde_json::Value::Null,
            };
            let view = SimView::parse(&state);
            for name in &spenders {
                let prefix = format!("{ns}/{name}/");
                for org in view.orgs_marked(&prefix) {
                    if org["status"] != "active" {
                        continue;
                    }
                    let body = json!({"orgId": org["id"], "credits": 40});
                    let Ok(resp) = http
                        .post(format!("{base}/_sim/spend"))
                        .json(&body)
                        .send()
                        .await
                    else {
                        continue;
                    };
                    if resp.status().is_success() {
                        spends.fetch_add(1, Ordering::Relaxed);
                        let out: serde_json::Value = resp.json().await.unwrap_or_default();
                        let n = out["refills"].as_array().map_or(0, Vec::len) as u64;
                        refills.fetch_add(n, Ordering::Relaxed);
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        (spends.into_inner(), refills.into_inner())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_loses_nothing_and_duplicates_nothing() {
    let started = Instant::now();
    let n = env_usize("ORGOPS_CHAOS_ORGS", 200);
    let kills = env_usize("ORGOPS_CHAOS_KILLS", 12);
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

    // An existing org (made before orgops, no marker) that two CustomerOrgs will race to adopt.
    let adopted: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v1/organizations", sim.base_url()))
        .bearer_auth(sim.parent_key())
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&json!({"name": "Chaos adopted"}))
        .send()
        .await
        .expect("create the org to adopt")
        .json()
        .await
        .expect("created org JSON");
    let adopt_id = adopted["id"].as_str().expect("created org id").to_string();

    // Flat projects (the older one-project-per-customer shape) for the migrating customers,
    // made before the faults start.
    let mut customers = initial_customers(&env.ns, n);
    for (i, c) in customers.iter_mut().enumerate() {
        if !customers::migrating(i) {
            continue;
        }
        for suffix in ["web", "app"] {
            let project: serde_json::Value = reqwest::Client::new()
                .post(format!("{}/v1/projects", sim.base_url()))
                .bearer_auth(sim.parent_key())
                .json(&json!({"name": format!("{}-{suffix}", &c.name[5..]), "timezone": "UTC"}))
                .send()
                .await
                .expect("create a flat project")
                .json()
                .await
                .expect("project JSON");
            c.migrate
                .push(project["id"].as_str().expect("project id").to_string());
        }
    }

    // Faults from the first request on: 10 % 5xx, 5 % lost responses, 5 % 429, latency.
    sim.set_faults(
        json!({"error5xx": 0.10, "loseResponse": 0.05, "rateLimit429": 0.05,
                          "latency": 0.2, "latencyMs": 300}),
    )
    .await;

    let corgs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &env.ns, &customer_orgs());
    // The firehose (seed 002 step 5): one endpoint on the parent for every child, created
    // while the faults run and rotated once mid-chaos; audited for exactly one endpoint.
    let pwhs: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &env.ns, &parent_webhooks());
    let firehose = json!({"apiVersion": "orgops.dev/v1alpha1", "kind": "ParentWebhook",
        "metadata": {"name": "firehose"},
        "spec": {"providerRef": {"name": provider}, "url": "https://hooks.partner.example/firehose",
                 "events": ["post.published", "content.generated"], "scope": "allChildren"}});
    pwhs.patch(
        "firehose",
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(firehose),
    )
    .await
    .expect("create the firehose ParentWebhook");
    create_all(&corgs, &env.ns, &provider, &mut customers).await;

    // Two replicas competing for one Lease (its own name, so no other test's operator joins).
    let lease_name = format!("chaos-{}", env.ns);
    let leases: Api<Lease> = Api::namespaced(client.clone(), "orgops-system");
    let lease_arg = format!("--lease-name={lease_name}");
    let first = Operator::start(
        &env,
        &["--leader-election=true", &lease_arg, "--concurrency=8"],
    )
    .await;
    let second = first.replica("b");
    let mut ops = [first, second];

    let stop_spending = Arc::new(AtomicBool::new(false));
    let spender = spend_in_background(
        sim.base_url().to_string(),
        env.ns.clone(),
        customers
            .iter()
            .filter(|c| c.spends)
            .map(|c| c.name.clone())
            .collect(),
        stop_spending.clone(),
    );

    // Kill at random moments, the leader every other round; apply a share of the edits each
    // round, alternately while both run (racing their writes) and while the victim is down.
    let mut edits = planned_edits(&customers);
    {
        let mut rng = rand::rng();
        for i in (1..edits.len()).rev() {
            edits.swap(i, rng.random_range(0..=i));
        }
    }
    let per_round = edits.len().div_ceil(kills.max(1));
    let mut edits = edits.into_iter();
    let mut leader_changes = 0usize;
    for round in 0..kills {
        let (up, down) = {
            let mut rng = rand::rng();
            (
                rng.random_range(500..3_000u64),
                rng.random_range(100..1_500u64),
            )
        };
        tokio::time::sleep(Duration::from_millis(up)).await;
        if round == 2 {
            let rotate =
                json!({"metadata": {"annotations": {"orgops.dev/rotate-secret": "chaos-1"}}});
            pwhs.patch("firehose", &PatchParams::default(), &Patch::Merge(rotate))
                .await
                .expect("rotate the firehose secret");
        }
        if round == 1 {
            // The racing pair appears at once, mid-chaos.
            let mut pair = racing_pair(&adopt_id);
            create_all(&corgs, &env.ns, &provider, &mut pair).await;
            customers.extend(pair);
        }
        let batch: Vec<Edit> = edits.by_ref().take(per_round).collect();
        if round % 2 == 0 {
            for e in &batch {
                edit(&corgs, &sim, &mut customers, *e).await;
            }
        }
        let leader = leader_of(&ops).await;
        let kill_leader = round % 2 == 0;
        let victim = if kill_leader { leader } else { 1 - leader };
        let (holder_before, _) = lease_holder(&leases, &lease_name).await;
        for op in ops.iter_mut() {
            assert!(
                op.is_running(),
                "an operator exited on its own; log: {}",
                op.log_path().display()
            );
        }
        ops[victim].kill();
        if round % 2 == 1 {
            for e in &batch {
                edit(&corgs, &sim, &mut customers, *e).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(down)).await;
        ops[victim].restart();
        if kill_leader {
            // The Lease of a SIGKILLed holder expires (15 s) and someone else takes it.
            let leases = leases.clone();
            let lease_name = lease_name.clone();
            wait_for_some("a new Lease holder", Duration::from_secs(60), || {
                let leases = leases.clone();
                let lease_name = lease_name.clone();
                let before = holder_before.clone();
                async move {
                    let (now, _) = lease_holder(&leases, &lease_name).await;
                    (now.is_some() && now != before).then_some(())
                }
            })
            .await;
            leader_of(&ops).await;
            leader_changes += 1;
        }
    }
    for e in edits {
        edit(&corgs, &sim, &mut customers, e).await;
    }
    stop_spending.store(true, Ordering::Relaxed);
    let (spends, refills) = spender.await.expect("spender task");
    let chaos_done = started.elapsed();

    let pending = settle(&corgs, &customers, Duration::from_secs(settle_secs)).await;
    let settled = started.elapsed();
    let faults = sim.counters().await["faultsInjected"].as_u64().unwrap_or(0);
    sim.set_faults(json!({})).await;
    let (_, transitions) = lease_holder(&leases, &lease_name).await;
    let mut audit = audit(&env, &sim, &customers, starting_total).await;
    audit::firehose(&env, &sim, &pwhs, &mut audit).await;
    for p in pending {
        audit.add(
            Kind::Wrong,
            format!("not settled after {settle_secs}s: {p}"),
        );
    }
    for op in &ops {
        if op.log().contains(sim.parent_key()) {
            audit.add(Kind::Wrong, "an operator logged the parent key".into());
        }
    }
    let [a, b] = ops;
    drop(b);
    drop(a);
    if !audit.violations.is_empty() {
        // Evidence for whoever reads the failure: the simulator's state and the objects.
        let dir = support::log_dir();
        let state = sim.state().await;
        let objs = corgs.list(&ListParams::default()).await.ok().map(|l| {
            l.items
                .into_iter()
                .map(|o| json!({"metadata": o.metadata, "data": o.data}))
                .collect::<Vec<_>>()
        });
        for (file, value) in [
            (format!("{}-sim-state.json", env.ns), state),
            (format!("{}-customerorgs.json", env.ns), json!(objs)),
        ] {
            let path = dir.join(file);
            let _ = std::fs::write(&path, value.to_string());
            eprintln!("chaos: evidence in {}", path.display());
        }
    }
    if audit.violations.is_empty() {
        audit_catches_tampering(&env, &sim, &customers, starting_total).await;
    }

    // Written to the process's stderr directly, so the line shows in CI even though the
    // test harness captures println! output of passing tests.
    let line = format!(
        "chaos: {} orgs, {kills} kills, {leader_changes} leader changes, {faults} faults injected, \
         {} lost, {} duplicated, {} orphaned keys or webhooks; {} migrated from flat projects, \
         the firehose audited (one parent endpoint, rotated once)\n\
         chaos: {spends} spends, {refills} auto-refills; {}; {} keys re-issued after a lost Secret; \
         Lease transitions {transitions}; \
         chaos phase {:.0}s, settled at {:.0}s, total {:.0}s\n",
        customers.len(),
        audit.count(Kind::Lost),
        audit.count(Kind::Duplicated),
        audit.count(Kind::Orphaned),
        customers.iter().filter(|c| !c.migrate.is_empty()).count(),
        audit.money,
        audit.reissued,
        chaos_done.as_secs_f64(),
        settled.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    let mut listed: Vec<String> = audit
        .violations
        .iter()
        .map(|(k, m)| format!("{k:?}: {m}"))
        .collect();
    listed.sort();
    let _ = providers.delete(&provider, &DeleteParams::default()).await;
    let _ = leases.delete(&lease_name, &DeleteParams::default()).await;
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
    assert!(
        leader_changes >= kills / 2,
        "only {leader_changes} leader changes in {kills} kills"
    );
    assert!(
        spends > 0,
        "no spend succeeded, so auto-refill was never exercised"
    );
}
