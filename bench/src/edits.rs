//! Edits first (issue 32): while a backlog of new CustomerOrgs converges, a person edits
//! already-Ready customers; each edit's latency to Ready at its new generation is printed
//! (p50, p99) against the goal, with how much of the backlog was still waiting then.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::cluster;
use crate::error::{Result, failed};
use crate::procs::{OperatorProc, SimProc};
use crate::scenarios::Common;

/// An edit: the generation it made, when, and when that generation was first Ready.
type Edit = (i64, Instant, Option<Instant>);

/// `warm` customers converge first; then `backlog` new ones are applied and, while they
/// wait, `edits` of the warm ones are edited one every 100 ms.
pub async fn run(common: &Common, warm: usize, backlog: usize, edits: usize) -> Result<()> {
    println!("machine: {}", crate::machine::describe());
    let client = cluster::client(&common.kubeconfig).await?;
    cluster::install_crds(&common.kubeconfig, &crate::procs::workspace_root())?;
    let sim = SimProc::start("unlimited", &[])?;
    let id = uuid::Uuid::new_v4().simple().to_string()[..6].to_string();
    let ns = format!("bench-{id}");
    cluster::create_namespace(&client, &ns).await?;
    cluster::create_provider(&client, &ns, &ns, &sim.base_url, &sim.parent_key).await?;
    let org = |i| cluster::bench_org(&ns, &ns, &ns, i);
    cluster::apply_all(
        &client,
        &ns,
        (0..warm).map(org).collect(),
        common.apply_parallel,
    )
    .await?;
    let watch = cluster::WriteWatch::start(&client, &ns).await?;
    let mut op = OperatorProc::start(
        &common.kubeconfig,
        &ns,
        "10m",
        common.concurrency,
        &common.operator_args,
    )?;
    cluster::wait_all_ready(&watch, warm, common.timeout, |_| op.check_alive()).await?;
    println!("{warm} customers Ready; applying a backlog of {backlog} new ones");

    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &cluster::customer_org());
    // Edited name -> (generation wanted, edited at, Ready at).
    let pending: Arc<Mutex<HashMap<String, Edit>>> = Arc::default();
    let seen = pending.clone();
    let observer = tokio::spawn(
        watcher(api.clone(), watcher::Config::default())
            .applied_objects()
            .for_each(move |obj| {
                let seen = seen.clone();
                async move {
                    let Ok(obj) = obj else { return };
                    let name = obj.metadata.name.clone().unwrap_or_default();
                    let mut map = seen.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some((generation, _, ready)) = map.get_mut(&name)
                        && ready.is_none()
                        && obj.metadata.generation >= Some(*generation)
                        && cluster::is_ready(&obj)
                    {
                        *ready = Some(Instant::now());
                    }
                }
            }),
    );
    let backlog_objs = (warm..warm + backlog).map(org).collect();
    let applying = {
        let client = client.clone();
        let ns = ns.clone();
        let parallel = common.apply_parallel;
        tokio::spawn(async move { cluster::apply_all(&client, &ns, backlog_objs, parallel).await })
    };
    // Let the backlog build up before the person acts.
    while *watch.ready.borrow() < warm + backlog / 10 && !applying.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Spread over the warm customers (7919 is prime: distinct while warm < 7919).
    let offset = usize::from_str_radix(&id[..4], 16).unwrap_or(0);
    let chosen: Vec<usize> = (0..edits.min(warm))
        .map(|k| (offset + k * 7919) % warm)
        .collect();
    let mut waiting_at_edits = Vec::new();
    for (k, i) in chosen.iter().enumerate() {
        let name = format!("c-{i:05}");
        let patch = json!({"spec": {"displayName": format!("Edited {i:05} {k}")}});
        let edited = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let generation = edited.metadata.generation.unwrap_or(0);
        pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, (generation, Instant::now(), None));
        waiting_at_edits.push((warm + backlog).saturating_sub(*watch.ready.borrow()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    loop {
        op.check_alive()?;
        let done = pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .all(|(_, _, r)| r.is_some());
        if done {
            break;
        }
        if started.elapsed() > common.timeout {
            return Err(failed("the edits did not all become Ready in time"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let backlog_left = (warm + backlog).saturating_sub(*watch.ready.borrow());
    let mut latencies: Vec<f64> = pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .filter_map(|(_, at, r)| r.map(|r| r.duration_since(*at).as_secs_f64()))
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "== edits first: {} edits of Ready customers during a backlog of {backlog} (concurrency {}) ==",
        latencies.len(),
        common.concurrency
    );
    println!(
        "edit -> Ready at the new generation: p50 {:.2}s, p99 {:.2}s, max {:.2}s (goal p99 <= 2s)",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    println!(
        "backlog still not Ready while editing: {}..{} objects; when the last edit was Ready: {backlog_left}",
        waiting_at_edits.iter().min().copied().unwrap_or(0),
        waiting_at_edits.iter().max().copied().unwrap_or(0),
    );
    applying.abort();
    observer.abort();
    op.kill();
    if !common.keep {
        let _ = cluster::delete_namespace(&client, &ns).await;
        let _ = cluster::delete_provider(&client, &ns).await;
    }
    Ok(())
}
