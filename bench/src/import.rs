//! `orgops-bench import`: N Layers orgs made out of band (a partner's existing fleet), then
//! `orgops import` timed as a user runs it (the binary, against the control plane and the
//! simulator). Prints the time, the requests it made by route (writes must be 0), its CPU and
//! memory, and what the same reads need at each documented tier's read budget.
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use serde_json::json;

use crate::cluster;
use crate::error::{Result, failed};
use crate::machine;
use crate::naive::send;
use crate::procs::{SimProc, bin, log_dir, workspace_root};
use crate::simapi::SimApi;

/// The fleet's shape, per org index: every org is created with an externalId; every 2nd is
/// funded by an earlier orgops (a marked allocation), every 3rd also by a script
/// (unmarked), every 4th capped, every 10th suspended, every 20th has a key, every 25th a
/// webhook endpoint.
async fn seed_one(http: &reqwest::Client, base: &str, key: &str, i: usize) -> Result<()> {
    let body = json!({"name": format!("Customer {i:05}"), "metadata": {"externalId": format!("fleet-{i:05}")}});
    let org = send(
        http.post(format!("{base}/v1/organizations")),
        key,
        Some(body),
    )
    .await?;
    let id = org["id"]
        .as_str()
        .ok_or_else(|| failed(format!("create org: no id in {org}")))?
        .to_string();
    let at = |rest: &str| format!("{base}/v1/organizations/{id}{rest}");
    if i.is_multiple_of(2) {
        let body = json!({"credits": 100, "metadata": {"orgops.dev/allocation": "true"}});
        send(http.post(at("/credits/allocate")), key, Some(body)).await?;
    }
    if i.is_multiple_of(3) {
        let body = json!({"credits": 50});
        send(http.post(at("/credits/allocate")), key, Some(body)).await?;
    }
    if i.is_multiple_of(4) {
        let body = json!({"monthlyCreditCap": 1000});
        send(http.patch(at("/credit-config")), key, Some(body)).await?;
    }
    if i.is_multiple_of(20) {
        let body = json!({"name": "backend", "scopes": ["content:read"]});
        send(http.post(at("/api-keys")), key, Some(body)).await?;
    }
    if i.is_multiple_of(25) {
        let body = json!({"url": "https://crm.example.com/hooks", "events": ["post.published"]});
        let in_child = http
            .post(format!("{base}/v1/webhook-endpoints"))
            .header("X-Layers-Organization", &id);
        send(in_child, key, Some(body)).await?;
    }
    if i.is_multiple_of(10) {
        send(http.post(at("/suspend")), key, None).await?;
    }
    Ok(())
}

/// Seconds `reads` GETs need at `per_minute` reads a minute, with the client's burst
/// (1 % short of the bucket, as `orgops`'s limiter) spent first.
fn at_budget(reads: u64, per_minute: u64) -> f64 {
    let burst = per_minute.saturating_sub((per_minute / 100).max(2));
    reads.saturating_sub(burst) as f64 * 60.0 / per_minute as f64
}

/// `orgops import` of `orgs` Layers orgs at `tier`.
pub async fn run(common: &crate::scenarios::Common, orgs: usize, tier: &str) -> Result<()> {
    println!("machine: {}", machine::describe());
    let client = cluster::client(&common.kubeconfig).await?;
    cluster::install_crds(&common.kubeconfig, &workspace_root())?;
    let sim = SimProc::start(tier, &[])?;
    let api = SimApi::new(&sim.base_url);
    let ns = format!(
        "bench-import-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    cluster::create_namespace(&client, &ns).await?;
    cluster::create_provider(&client, &ns, &ns, &sim.base_url, &sim.parent_key).await?;

    let http = reqwest::Client::new();
    let seeded = Instant::now();
    stream::iter(0..orgs)
        .map(|i| seed_one(&http, &sim.base_url, &sim.parent_key, i))
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await?;
    let seeding = api.counters().await?;
    println!(
        "seeded {orgs} orgs out of band in {:.1}s ({} API requests)",
        seeded.elapsed().as_secs_f64(),
        seeding.total()
    );

    let dir = log_dir()?.join(format!("{ns}-out"));
    let _ = std::fs::remove_dir_all(&dir);
    let before = api.counters().await?;
    let orgops = bin("ORGOPS_BIN", "target/release/orgops");
    let started = Instant::now();
    let mut child = Command::new(&orgops)
        .args(["import", "--provider", &ns, "-n", &ns, "-o"])
        .arg(&dir)
        .args(["--concurrency", &common.concurrency.to_string()])
        .env("KUBECONFIG", &common.kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("spawn {}: {e}", orgops.display())))?;
    // CPU and peak memory from /proc while it runs (gone once it exits).
    let pid = child.id();
    let (mut cpu, mut rss) = (0.0, 0.0);
    let status = loop {
        if let Some(c) = machine::cpu_seconds(pid) {
            cpu = c;
        }
        if let Some(r) = machine::peak_rss_mib(pid) {
            rss = r;
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let wall = started.elapsed();
    let output = child.wait_with_output()?;
    if !status.success() {
        return Err(failed(format!(
            "orgops import failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let calls = api.counters().await?.since(&before);
    let (reads, writes) = calls.reads_writes();
    let files = std::fs::read_dir(&dir)?.count();

    println!(
        "== orgops import of {orgs} Layers orgs (tier {tier}, concurrency {}) ==",
        common.concurrency
    );
    print!("{}", String::from_utf8_lossy(&output.stdout));
    println!(
        "wall time: {:.1}s ({:.0} orgs/s); orgops CPU {cpu:.1}s, peak RSS {rss:.1} MiB; {files} files written",
        wall.as_secs_f64(),
        orgs as f64 / wall.as_secs_f64()
    );
    println!(
        "API requests: {} reads ({:.2} per org), {writes} writes (must be 0), 429s {}",
        reads,
        reads as f64 / orgs as f64,
        calls.with_status(429)
    );
    for (route, count) in calls.by_route() {
        println!(
            "  {route:<60} {count:>8}  {:.2}/org",
            count as f64 / orgs as f64
        );
    }
    println!(
        "the same {reads} reads at a documented tier's read budget (the client's burst first; a lower bound, not a measurement):"
    );
    for (name, per_minute) in [("standard", 120), ("pilot", 1_200), ("partner", 6_000)] {
        let secs = at_budget(reads, per_minute);
        println!(
            "  {name:<9} {per_minute:>6} reads/min: at least {secs:.0}s ({:.1} min)",
            secs / 60.0
        );
    }
    if writes != 0 {
        return Err(failed(format!(
            "orgops import made {writes} provider writes"
        )));
    }
    if !common.keep {
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = cluster::delete_namespace(&client, &ns).await {
            eprintln!("cleanup of namespace {ns}: {e}");
        }
        if let Err(e) = cluster::delete_provider(&client, &ns).await {
            eprintln!("cleanup of OrgProvider {ns}: {e}");
        }
    } else {
        println!(
            "kept namespace {ns}, OrgProvider {ns} and {}",
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_read_budget_spends_the_burst_first() {
        assert_eq!(super::at_budget(100, 6_000), 0.0);
        // 46,000 reads at the partner tier: 5,940 at once, the rest at 100 a second.
        assert!((super::at_budget(46_000, 6_000) - 400.6).abs() < 0.01);
        assert!((super::at_budget(1_000, 120) - 441.0).abs() < 0.01);
    }
}
