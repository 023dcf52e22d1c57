//! Shards (issue 32): N new CustomerOrgs converge under one replica, then N more under two
//! shards over one namespace (`--shard-selector orgops.dev/shard=K`, `--rate-shares 2`:
//! each shard uses half of the parent key's budget). Prints each process's peak RSS against
//! the goal (each shard ≤ 60 % of the one replica's), the time to all Ready and the
//! simulator's 429 answers.

use std::time::{Duration, Instant};

use crate::cluster;
use crate::error::Result;
use crate::machine;
use crate::procs::{OperatorProc, SimProc, workspace_root};
use crate::scenarios::Common;
use crate::simapi::SimApi;

/// What one phase measured.
struct Phase {
    wall: Duration,
    /// Peak RSS (MiB) and CPU seconds of each operator process.
    procs: Vec<(Option<f64>, Option<f64>)>,
    calls: u64,
    throttled: u64,
}

/// The selector shard `k` of `shards` runs with (none for a single replica).
fn selector(k: u32, shards: u32) -> Option<String> {
    (shards > 1).then(|| format!("orgops.dev/shard={k}"))
}

async fn phase(common: &Common, tier: &str, orgs: usize, shards: u32) -> Result<Phase> {
    let client = cluster::client(&common.kubeconfig).await?;
    let sim = SimProc::start(tier, &[])?;
    let api = SimApi::new(&sim.base_url);
    let id = uuid::Uuid::new_v4().simple().to_string()[..6].to_string();
    let ns = format!("bench-{id}");
    cluster::create_namespace(&client, &ns).await?;
    cluster::create_provider(&client, &ns, &ns, &sim.base_url, &sim.parent_key).await?;
    let objs = (0..orgs)
        .map(|i| {
            let mut obj = cluster::bench_org(&ns, &ns, &ns, i);
            obj["metadata"]["labels"] =
                serde_json::json!({"orgops.dev/shard": (i as u32 % shards).to_string()});
            obj
        })
        .collect();
    cluster::apply_all(&client, &ns, objs, common.apply_parallel).await?;
    let watch = cluster::WriteWatch::start(&client, &ns).await?;
    let before = api.counters().await?;
    let mut ops = Vec::new();
    for k in 0..shards {
        let mut args = common.operator_args.clone();
        if let Some(sel) = selector(k, shards) {
            args.push(format!("--shard-selector={sel}"));
            args.push(format!("--rate-shares={shards}"));
        }
        ops.push(OperatorProc::start(
            &common.kubeconfig,
            &ns,
            "10m",
            common.concurrency,
            &args,
        )?);
    }
    let started = Instant::now();
    let mut last_print = Instant::now();
    let wall = cluster::wait_all_ready(&watch, orgs, common.timeout, |ready| {
        for op in ops.iter_mut() {
            op.check_alive()?;
        }
        if last_print.elapsed() >= Duration::from_secs(15) {
            println!(
                "  ... {ready}/{orgs} Ready after {:.0}s",
                started.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        Ok(())
    })
    .await?;
    let procs: Vec<(Option<f64>, Option<f64>)> = ops
        .iter()
        .map(|op| {
            let pid = op.pid();
            (
                pid.and_then(machine::peak_rss_mib),
                pid.and_then(machine::cpu_seconds),
            )
        })
        .collect();
    let calls = api.counters().await?.since(&before);
    for op in ops.iter_mut() {
        op.kill();
    }
    // Printed now: the teardown of a large run takes minutes.
    println!(
        "{shards} process(es): all {orgs} Ready in {:.1}s; peak RSS {}",
        wall.as_secs_f64(),
        procs
            .iter()
            .map(|p: &(Option<f64>, Option<f64>)| mib(p.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !common.keep {
        let _ = cluster::delete_namespace(&client, &ns).await;
        let _ = cluster::delete_provider(&client, &ns).await;
    }
    Ok(Phase {
        wall,
        procs,
        calls: calls.total(),
        throttled: calls.with_status(429),
    })
}

fn mib(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.1} MiB"))
}

/// One replica, then two shards, each over `orgs` new CustomerOrgs at `tier`.
pub async fn run(common: &Common, orgs: usize, tier: &str) -> Result<()> {
    println!("machine: {}", machine::describe());
    cluster::install_crds(&common.kubeconfig, &workspace_root())?;
    let one = phase(common, tier, orgs, 1).await?;
    let two = phase(common, tier, orgs, 2).await?;
    println!(
        "== shards: {orgs} CustomerOrgs (tier {tier}, concurrency {} per process) ==",
        common.concurrency
    );
    for (label, p) in [("one replica", &one), ("two shards", &two)] {
        println!(
            "{label}: all Ready in {:.1}s; API calls {}, 429s {}",
            p.wall.as_secs_f64(),
            p.calls,
            p.throttled
        );
    }
    let single = one.procs.first().and_then(|p| p.0);
    println!(
        "one replica: peak RSS {}, CPU {}",
        mib(single),
        one.procs
            .first()
            .and_then(|p| p.1)
            .map_or("n/a".into(), |c| format!("{c:.1}s"))
    );
    for (k, (rss, cpu)) in two.procs.iter().enumerate() {
        let share = match (rss, single) {
            (Some(r), Some(s)) if s > 0.0 => format!("{:.0} %", 100.0 * r / s),
            _ => "n/a".into(),
        };
        println!(
            "shard {k}: peak RSS {} ({share} of one replica's; goal <= 60 %), CPU {}",
            mib(*rss),
            cpu.map_or("n/a".into(), |c| format!("{c:.1}s"))
        );
    }
    println!(
        "429 answers with two shards: {} (goal 0; each shard uses 1/2 of the budget)",
        two.throttled
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::selector;

    #[test]
    fn each_shard_selects_its_own_label_and_one_replica_all() {
        assert_eq!(selector(0, 1), None);
        assert_eq!(selector(1, 2).as_deref(), Some("orgops.dev/shard=1"));
    }
}
