//! Chaos suite (issues #7, #10 and #27): a flaky Layers API (5xx, lost responses, 429,
//! latency, and a share of writes committing after longer than the client's timeout, with
//! the simulator answering a duplicate of a request still running with its in-flight
//! conflict), two operator replicas with leader election SIGKILLed at random moments (the
//! leader every other time, so the Lease moves) or frozen with SIGSTOP past their Lease and
//! let run again as zombies, users editing every spec field meanwhile (credits, state,
//! displayName, keys and webhooks added, changed and removed, rotation, Orphan and Archive
//! deletes, customers with and without `externalId`), racing pairs (two CustomerOrgs adopting
//! one org, pairs sharing one `externalId` created at the same instant; every loser deleted
//! afterwards) and customers spending with auto-refill on. Afterwards an audit of the
//! simulator's state and the cluster proves nothing was lost, duplicated, left live that the
//! specs do not list, or archived or suspended that no spec asked for; that money is
//! conserved; and that no replica's write reached the API outside its fenced window.
//!
//! Scale: `ORGOPS_CHAOS_ORGS` (default and "full" 200; 40 for a quick local run),
//! `ORGOPS_CHAOS_KILLS` (default 12, half of them of the leader) and
//! `ORGOPS_CHAOS_ZOMBIES` (default 4). Needs `cargo build -p layers-sim` first. The summary
//! line goes to stderr even when output is captured.
#[path = "../support/mod.rs"]
mod support;

mod audit;
mod customers;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::json;
use support::chaos::{Replicas, fence_audit, fence_audit_catches_violations};
use support::{Sim, TestEnv};

use audit::{Kind, SimView, audit, audit_catches_tampering, is_adoption_conflict};
use customers::{
    Customer, Edit, apply_edit, initial_customers, manifest, planned_edits, racing_pair, twin_pairs,
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
                        // One of each racing pair is expected to stay Stalled.
                        (false, Some(o)) if c.pair.is_some() && is_adoption_conflict(o) => {}
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
    let zombies = env_usize("ORGOPS_CHAOS_ZOMBIES", 4);
    let settle_secs = env_usize("ORGOPS_CHAOS_SETTLE_SECS", 240.max(n * 3)) as u64;

    let env = TestEnv::new("chaos").await;
    // A duplicate of a request still running gets the in-flight 409 (`Retry-After`).
    let sim = Sim::start(&["--tier", "unlimited", "--idempotency-in-flight", "conflict"]);
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

    // Faults from the first request on: 10 % 5xx, 5 % lost responses, 5 % 429, latency;
    // 2 % of writes held 4 s, longer than the replicas' 3 s request timeout
    // (`--provider-request-timeout`: the client gives up, the simulator cancels the request
    // with its connection) and 2 % answered by a closed connection while they go on and
    // commit 4 s later (`lateCommit`): the retry under the same key meets the original still
    // running (the in-flight conflict), as does a new leader's after a freeze.
    sim.set_faults(
        json!({"error5xx": 0.10, "loseResponse": 0.05, "rateLimit429": 0.05,
                          "latency": 0.2, "latencyMs": 300,
                          "slowCommit": 0.02, "lateCommit": 0.02, "slowCommitMs": 4_000}),
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
    let mut replicas = Replicas::start(
        &env,
        &client,
        &["--concurrency=8", "--provider-request-timeout=3s"],
    )
    .await;

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

    // Kill or freeze at random moments; apply a share of the edits each round, alternately
    // while both run (racing their writes) and while the victim is down or frozen.
    let mut edits = planned_edits(&customers);
    {
        let mut rng = rand::rng();
        for i in (1..edits.len()).rev() {
            edits.swap(i, rand::Rng::random_range(&mut rng, 0..=i));
        }
    }
    let per_round = edits.len().div_ceil((kills + zombies).max(1));
    let mut edits = edits.into_iter();
    let twins = twin_pairs(&env.ns, 4);
    let rounds = replicas
        .chaos_rounds(kills, zombies, async |round| {
            if round == 2 {
                let rotate =
                    json!({"metadata": {"annotations": {"orgops.dev/rotate-secret": "chaos-1"}}});
                pwhs.patch("firehose", &PatchParams::default(), &Patch::Merge(rotate))
                    .await
                    .expect("rotate the firehose secret");
            }
            if round == 1 {
                // The racing pairs appear mid-chaos, each pair's two objects at once.
                let mut pairs = racing_pair(&adopt_id);
                pairs.extend(twins.iter().cloned());
                create_all(&corgs, &env.ns, &provider, &mut pairs).await;
                customers.extend(pairs);
            }
            let batch: Vec<Edit> = edits.by_ref().take(per_round).collect();
            for e in batch {
                edit(&corgs, &sim, &mut customers, e).await;
            }
        })
        .await;
    for e in edits {
        edit(&corgs, &sim, &mut customers, e).await;
    }
    stop_spending.store(true, Ordering::Relaxed);
    let (spends, refills) = spender.await.expect("spender task");
    let chaos_done = started.elapsed();

    let mut pending = settle(&corgs, &customers, Duration::from_secs(settle_secs)).await;
    // Every racing pair's loser (AdoptionConflict) is deleted, deletionPolicy Archive: its
    // deletion may archive nothing, above all not the winner's org.
    let conflicted: Vec<String> = corgs
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .iter()
        .filter(|o| is_adoption_conflict(o))
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    for c in customers.iter_mut().filter(|c| c.pair.is_some()) {
        if conflicted.contains(&c.name) {
            corgs
                .delete(&c.name, &DeleteParams::default())
                .await
                .unwrap_or_else(|e| panic!("delete the loser {}: {e}", c.name));
            c.deleted = true;
            c.loser = true;
        }
    }
    pending.extend(settle(&corgs, &customers, Duration::from_secs(60)).await);
    let settled = started.elapsed();
    let counters = sim.counters().await;
    let faults = counters["faultsInjected"].as_u64().unwrap_or(0);
    // 409s the operator met: in-flight duplicates and idempotency conflicts, mostly.
    let conflicts: u64 = counters["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["status"] == 409)
        .filter_map(|r| r["count"].as_u64())
        .sum();
    sim.set_faults(json!({})).await;
    let mut audit = audit(&env, &sim, &customers, starting_total).await;
    audit::firehose(&env, &sim, &pwhs, &mut audit).await;
    for p in pending {
        audit.add(
            Kind::Wrong,
            format!("not settled after {settle_secs}s: {p}"),
        );
    }
    if replicas.logged(sim.parent_key()) {
        audit.add(Kind::Wrong, "an operator logged the parent key".into());
    }
    let started_ms = replicas.started_ms;
    let (leases, stopped_ms) = replicas.stop().await;
    let transitions = leases
        .windows(2)
        .filter(|w| w[1].1.is_some() && w[1].1 != w[0].1)
        .count();
    let writes = sim.writes().await;

    let fence = fence_audit(&writes, &leases, (started_ms, stopped_ms), &[]);
    for v in &fence.outside {
        audit.add(Kind::OutsideFence, v.clone());
    }
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
        fence_audit_catches_violations();
    }

    // Written to the process's stderr directly, so the line shows in CI even though the
    // test harness captures println! output of passing tests.
    let pairs = customers.iter().filter(|c| c.loser).count();
    let line = format!(
        "chaos: {} customers, {} kills, {} leader changes, {} zombie pauses, {faults} faults injected \
         ({conflicts} 409 answers met), \
         {} lost, {} duplicated, {} orphaned, {} wrongly offboarded, {} writes outside a fence \
         (of {} writes by {} replicas), {pairs} racing pairs' losers deleted; {} migrated from flat \
         projects, the firehose audited (one parent endpoint, rotated once)\n\
         chaos: {spends} spends, {refills} auto-refills; {}; {} keys re-issued after a lost Secret; \
         Lease transitions seen {transitions}; \
         chaos phase {:.0}s, settled at {:.0}s, total {:.0}s\n",
        customers.len(),
        rounds.kills,
        rounds.leader_changes,
        rounds.zombies,
        audit.count(Kind::Lost),
        audit.count(Kind::Duplicated),
        audit.count(Kind::Orphaned),
        audit.count(Kind::WronglyOffboarded),
        audit.count(Kind::OutsideFence),
        fence.writes,
        fence.replicas,
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
        rounds.leader_changes >= kills / 2 + zombies && rounds.zombies == zombies,
        "only {} leader changes and {} zombies in {kills} kills and {zombies} freezes",
        rounds.leader_changes,
        rounds.zombies
    );
    assert!(
        conflicts > 0,
        "no 409 was met, so the in-flight conflict of a slow commit was not exercised"
    );
    assert!(
        fence.writes > 0 && fence.replicas >= 2,
        "the fence audit saw {} writes by {} replicas",
        fence.writes,
        fence.replicas
    );
    assert!(
        spends > 0,
        "no spend succeeded, so auto-refill was never exercised"
    );
}
