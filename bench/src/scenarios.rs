//! The benchmark scenarios. Each prints its figures; none asserts on time.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::bound;
use crate::cluster;
use crate::error::{BenchError, Result, failed};
use crate::machine;
use crate::naive;
use crate::procs::{OperatorProc, SimProc, workspace_root};
use crate::simapi::{Counters, SimApi};

#[derive(Clone, Debug)]
pub struct Common {
    pub kubeconfig: PathBuf,
    pub concurrency: u16,
    pub apply_parallel: usize,
    pub timeout: Duration,
    pub operator_args: Vec<String>,
    pub keep: bool,
}

#[derive(Clone, Debug)]
pub struct ConvergeOpts {
    pub orgs: usize,
    pub tier: String,
    pub naive: bool,
    pub restart: bool,
    pub steady: bool,
    /// Measure the API server's own bound for the same writes (and the ratio).
    pub bound: bool,
    /// Resync interval for the restart and steady-state phases.
    pub resync: Duration,
    pub steady_periods: u32,
    /// Latency the simulator adds to every request (a stand-in for the network).
    pub latency_ms: u64,
    /// Where to write the run's SVG charts (none when unset).
    pub svg_dir: Option<PathBuf>,
}

/// Simulator flags that add a fixed latency to every request.
fn latency_args(ms: u64) -> Vec<String> {
    if ms == 0 {
        return Vec::new();
    }
    [
        "--fault-latency-ms",
        &ms.to_string(),
        "--fault-latency-prob",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// An isolated run: its own simulator, namespace and OrgProvider.
struct Run {
    client: kube::Client,
    ns: String,
    provider: String,
    sim: SimProc,
    api: SimApi,
    watch: cluster::WriteWatch,
}

impl Run {
    async fn setup(common: &Common, tier: &str, orgs: usize, sim_args: &[String]) -> Result<Run> {
        let root = workspace_root();
        let client = cluster::client(&common.kubeconfig).await?;
        cluster::install_crds(&common.kubeconfig, &root)?;
        let sim = SimProc::start(tier, sim_args)?;
        let api = SimApi::new(&sim.base_url);
        let id = uuid::Uuid::new_v4().simple().to_string()[..6].to_string();
        let ns = format!("bench-{id}");
        let provider = ns.clone();
        cluster::create_namespace(&client, &ns).await?;
        cluster::create_provider(&client, &ns, &provider, &sim.base_url, &sim.parent_key).await?;
        let objs = (0..orgs)
            .map(|i| cluster::bench_org(&ns, &provider, &ns, i))
            .collect();
        let t = Instant::now();
        cluster::apply_all(&client, &ns, objs, common.apply_parallel).await?;
        println!(
            "created {orgs} CustomerOrgs in namespace {ns} in {:.1}s (server-side apply, {} in parallel)",
            t.elapsed().as_secs_f64(),
            common.apply_parallel
        );
        let watch = cluster::WriteWatch::start(&client, &ns).await?;
        Ok(Run {
            client,
            ns,
            provider,
            sim,
            api,
            watch,
        })
    }

    async fn teardown(self, keep: bool) {
        if keep {
            println!(
                "kept namespace {} and OrgProvider {}",
                self.ns, self.provider
            );
            return;
        }
        if let Err(e) = cluster::delete_namespace(&self.client, &self.ns).await {
            eprintln!("cleanup of namespace {}: {e}", self.ns);
        }
        if let Err(e) = cluster::delete_provider(&self.client, &self.provider).await {
            eprintln!("cleanup of OrgProvider {}: {e}", self.provider);
        }
        drop(self.sim);
    }
}

/// Converges N objects from a standing start; then (optionally) restart and steady state.
pub async fn converge(common: &Common, opts: &ConvergeOpts) -> Result<()> {
    println!("machine: {}", machine::describe());
    let n = opts.orgs;
    let sim_args = latency_args(opts.latency_ms);
    println!("simulator latency per request: {} ms", opts.latency_ms);
    let naive_wall = if opts.naive {
        Some(naive_baseline(n, &sim_args).await?)
    } else {
        None
    };

    let run = Run::setup(common, &opts.tier, n, &sim_args).await?;
    let writes_before = run.watch.snapshot();
    let calls_before = run.api.counters().await?;
    let requests_before = cluster::apiserver_requests(&run.client).await;
    // Converge with the default (long) resync so resyncs do not add load while converging.
    let mut op = OperatorProc::start(
        &common.kubeconfig,
        &run.ns,
        "10m",
        common.concurrency,
        &common.operator_args,
    )?;
    let pid = op.pid();
    let meter = machine::CpuMeter::start(&[
        ("operator", pid),
        ("simulator", Some(run.sim.pid())),
        (
            "kube-apiserver",
            machine::control_plane_pid(&common.kubeconfig, "kube-apiserver"),
        ),
        (
            "etcd",
            machine::control_plane_pid(&common.kubeconfig, "etcd"),
        ),
        ("bench", Some(std::process::id())),
    ]);
    let mut last_print = Instant::now();
    let started = Instant::now();
    // For the charts: objects Ready over time, and the operator's memory against them.
    let mut ready_over_time = vec![(0.0, 0.0)];
    let mut memory = Vec::new();
    let waited = cluster::wait_all_ready(&run.watch, n, common.timeout, |ready| {
        op.check_alive()?;
        ready_over_time.push((started.elapsed().as_secs_f64(), ready as f64));
        if let Some(rss) = pid.and_then(machine::rss_mib) {
            memory.push((ready as f64, rss));
        }
        if last_print.elapsed() >= Duration::from_secs(15) {
            println!(
                "  ... {ready}/{n} Ready after {:.0}s",
                started.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        Ok(())
    })
    .await;
    // On a timeout the figures so far are still worth printing.
    let (wall, converged) = match waited {
        Ok(wall) => (wall, true),
        Err(e @ BenchError::Timeout { .. }) => {
            println!("NOT CONVERGED: {e}; figures below cover the whole wait");
            (started.elapsed(), false)
        }
        Err(e) => return Err(e),
    };
    let cpu = pid.and_then(machine::cpu_seconds);
    let rss = pid.and_then(machine::peak_rss_mib);
    let ready_now = *run.watch.ready.borrow() as f64;
    ready_over_time.push((wall.as_secs_f64(), ready_now));
    if let Some(now) = pid.and_then(machine::rss_mib) {
        memory.push((ready_now, now));
    }
    let cpu_line = meter.report("converge");
    let requests = cluster::diff(
        &requests_before,
        &cluster::apiserver_requests(&run.client).await,
    );
    let calls = run.api.counters().await?.since(&calls_before);
    let writes = cluster::diff(&writes_before, &writes_now(&run, &op).await);

    println!(
        "== converge {n} CustomerOrgs (tier {}, concurrency {}) ==",
        opts.tier, common.concurrency
    );
    println!(
        "wall time to all Ready: {:.1}s ({:.1} orgs/s)",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64()
    );
    println!(
        "operator CPU: {}",
        cpu.map_or("n/a".into(), |c| format!("{c:.1}s"))
    );
    println!(
        "operator peak RSS (VmHWM): {}",
        rss.map_or("n/a".into(), |r| format!("{r:.1} MiB"))
    );
    println!("{cpu_line}");
    print_calls(&calls, n);
    print_writes(&writes, n);
    print_requests("converge", &requests, n);
    let mut bound_over_time = None;
    if opts.bound && converged {
        let (bound, progress) = print_bound(common, &run.client, n).await?;
        println!(
            "converge / API server bound: {:.2}x (goal <= 1.5x)",
            wall.as_secs_f64() / bound.as_secs_f64()
        );
        bound_over_time = Some(progress);
    }
    if let Some(dir) = &opts.svg_dir {
        write_charts(
            dir,
            n,
            &ready_over_time,
            bound_over_time.as_deref(),
            &memory,
        )?;
    }
    if let Some(naive) = naive_wall {
        println!(
            "naive sequence: {:.1}s for {n}; operator is {:.1}x faster",
            naive.as_secs_f64(),
            naive.as_secs_f64() / wall.as_secs_f64()
        );
    }

    if converged && (opts.restart || opts.steady) {
        restart_and_steady(common, opts, &run, &mut op).await?;
    }
    op.kill();
    run.teardown(common.keep).await;
    Ok(())
}

/// The run's charts: `converge-ready-N.svg` (objects Ready over time, the operator against
/// the API server's bound for the same writes) and `converge-memory-N.svg` (the operator's
/// resident memory against the objects Ready).
fn write_charts(
    dir: &std::path::Path,
    n: usize,
    ready: &[(f64, f64)],
    bound: Option<&[(f64, f64)]>,
    memory: &[(f64, f64)],
) -> Result<()> {
    use crate::chart::{Chart, Series};
    std::fs::create_dir_all(dir).map_err(|e| failed(format!("create {}: {e}", dir.display())))?;
    let mut series = vec![Series {
        label: "orgops (operator + simulator)",
        color: "#1f77b4",
        points: ready,
    }];
    if let Some(b) = bound {
        series.push(Series {
            label: "API server bound (same writes, no operator)",
            color: "#ff7f0e",
            points: b,
        });
    }
    let charts = [
        (
            format!("converge-ready-{n}.svg"),
            Chart {
                title: &format!("{n} new CustomerOrgs: Ready over time"),
                x_label: "seconds since each run started (the operator; the bound's first write)",
                y_label: "CustomerOrgs Ready",
                series: &series,
            }
            .svg(),
        ),
        (
            format!("converge-memory-{n}.svg"),
            Chart {
                title: &format!("Operator memory while {n} CustomerOrgs converge"),
                x_label: "CustomerOrgs Ready",
                y_label: "resident memory (MiB)",
                series: &[Series {
                    label: "orgops RSS (VmRSS)",
                    color: "#2ca02c",
                    points: memory,
                }],
            }
            .svg(),
        ),
    ];
    for (name, svg) in charts {
        let path = dir.join(name);
        std::fs::write(&path, svg).map_err(|e| failed(format!("write {}: {e}", path.display())))?;
        println!("chart: {}", path.display());
    }
    Ok(())
}

/// Measures and prints the API server's own bound for `n` new orgs; returns its time and
/// the objects Ready over time.
async fn print_bound(
    common: &Common,
    client: &kube::Client,
    n: usize,
) -> Result<(Duration, Vec<(f64, f64)>)> {
    let procs = [
        (
            "kube-apiserver",
            machine::control_plane_pid(&common.kubeconfig, "kube-apiserver"),
        ),
        (
            "etcd",
            machine::control_plane_pid(&common.kubeconfig, "etcd"),
        ),
        ("bench", Some(std::process::id())),
    ];
    let (bound, cpu_line, progress) = bound::measure(
        client,
        n,
        usize::from(common.concurrency),
        common.apply_parallel,
        || machine::CpuMeter::start(&procs),
    )
    .await?;
    let writes = n * bound::WRITES_PER_ORG;
    println!(
        "API server bound: the same {writes} writes ({} per org: {}) from one client, {} at a time, in {:.1}s ({:.0} writes/s, {:.1} orgs/s)",
        bound::WRITES_PER_ORG,
        bound::WRITES_NAMED,
        common.concurrency,
        bound.as_secs_f64(),
        writes as f64 / bound.as_secs_f64(),
        n as f64 / bound.as_secs_f64()
    );
    println!("{cpu_line}");
    Ok((bound, progress))
}

/// `orgops-bench bound`: the API server's bound alone.
pub async fn bound_only(common: &Common, n: usize) -> Result<()> {
    println!("machine: {}", machine::describe());
    let client = cluster::client(&common.kubeconfig).await?;
    cluster::install_crds(&common.kubeconfig, &workspace_root())?;
    print_bound(common, &client, n).await.map(drop)
}

async fn naive_baseline(n: usize, sim_args: &[String]) -> Result<Duration> {
    let sim = SimProc::start("unlimited", sim_args)?;
    let r = naive::run(&sim.base_url, &sim.parent_key, n).await?;
    println!(
        "== naive baseline (seed 002, six calls per customer, sequential) ==\n{} customers, {} calls in {:.1}s ({:.2} ms per customer)",
        r.orgs,
        r.calls,
        r.wall.as_secs_f64(),
        r.wall.as_secs_f64() * 1000.0 / r.orgs as f64
    );
    Ok(r.wall)
}

async fn restart_and_steady(
    common: &Common,
    opts: &ConvergeOpts,
    run: &Run,
    op: &mut OperatorProc,
) -> Result<()> {
    let n = opts.orgs;
    let resync = opts.resync;
    let resync_arg = format!("{}s", resync.as_secs().max(1));
    op.kill();
    let before = run.api.counters().await?;
    // The new process's counters start at zero.
    let writes_before = run.watch.snapshot();
    *op = OperatorProc::start(
        &common.kubeconfig,
        &run.ns,
        &resync_arg,
        common.concurrency,
        &common.operator_args,
    )?;
    let window = resync + Duration::from_secs(10);
    let mut per_second = Vec::new();
    let mut prev = before.clone();
    let start = Instant::now();
    while start.elapsed() < window {
        tokio::time::sleep(Duration::from_secs(1)).await;
        op.check_alive()?;
        let now = run.api.counters().await?;
        per_second.push(now.since(&prev).total());
        prev = now;
    }
    let total = prev.since(&before);
    let writes = cluster::diff(&writes_before, &writes_now(run, op).await);
    if opts.restart {
        let peak = per_second.iter().copied().max().unwrap_or(0);
        let mean = total.total() as f64 / per_second.len().max(1) as f64;
        println!(
            "== restart with {n} converged objects (resync {resync_arg}, first {}s) ==",
            window.as_secs()
        );
        println!(
            "API requests: {} total, {:.2} per org; peak {peak}/s, mean {mean:.1}/s",
            total.total(),
            total.total() as f64 / n as f64
        );
        println!("per-second series: {per_second:?}");
        println!(
            "Kubernetes writes in the window: {} changes, {} status writes ({writes:?})",
            cluster::effective_writes(&writes),
            cluster::status_writes(&writes),
        );
    }
    if opts.steady {
        // One more period lets the restart's work finish before measuring.
        tokio::time::sleep(resync).await;
        let calls_before = run.api.counters().await?;
        let writes_before = writes_now(run, op).await;
        let window = resync * opts.steady_periods;
        let start = Instant::now();
        while start.elapsed() < window {
            tokio::time::sleep(Duration::from_secs(5)).await;
            op.check_alive()?;
        }
        let calls = run.api.counters().await?.since(&calls_before);
        let writes = cluster::diff(&writes_before, &writes_now(run, op).await);
        let periods = f64::from(opts.steady_periods);
        println!(
            "== steady state: {n} objects, {} resync periods of {resync_arg} ==",
            opts.steady_periods
        );
        println!(
            "API calls per org per resync: {:.2} (by route: {:?})",
            calls.total() as f64 / n as f64 / periods,
            calls.by_route()
        );
        println!(
            "Kubernetes writes: {} changes, {} status writes ({writes:?})",
            cluster::effective_writes(&writes),
            cluster::status_writes(&writes),
        );
    }
    Ok(())
}

/// At a rate-limited tier: 429s seen and converge time against the tier's theoretical
/// minimum. The per-minute limits (reads, writes) are the documented ones the simulator
/// enforces (`sim/src/ratelimit.rs`).
pub async fn standard(common: &Common, orgs: usize, tier: &str) -> Result<()> {
    let (read_limit, write_limit): (u64, u64) = match tier {
        "standard" => (120, 60),
        "partner" => (6000, 3000),
        other => return Err(failed(format!("tier {other}: standard or partner"))),
    };
    println!("machine: {}", machine::describe());
    let run = Run::setup(common, tier, orgs, &[]).await?;
    let calls_before = run.api.counters().await?;
    let mut op = OperatorProc::start(
        &common.kubeconfig,
        &run.ns,
        "10m",
        common.concurrency,
        &common.operator_args,
    )?;
    let wall =
        cluster::wait_all_ready(&run.watch, orgs, common.timeout, |_| op.check_alive()).await?;
    let calls = run.api.counters().await?.since(&calls_before);
    let (reads, _) = calls.reads_writes();
    let writes = calls.ok_writes();
    // Buckets start full (capacity = per-minute limit) and refill limit/60 per second.
    let floor =
        |used: u64, per_min: u64| used.saturating_sub(per_min) as f64 / (per_min as f64 / 60.0);
    let minimum = floor(writes, write_limit).max(floor(reads, read_limit));
    println!("== {tier} tier: {orgs} CustomerOrgs ==");
    println!("wall time to all Ready: {:.1}s", wall.as_secs_f64());
    println!("429 responses: {}", calls.with_status(429));
    println!(
        "requests: {reads} reads, {writes} successful writes ({} total)",
        calls.total()
    );
    println!(
        "theoretical minimum for these requests (write bucket {write_limit} + {:.0}/s, read bucket {read_limit} + {:.0}/s): {minimum:.1}s; measured/minimum = {}",
        write_limit as f64 / 60.0,
        read_limit as f64 / 60.0,
        if minimum > 0.0 {
            format!("{:.2}", wall.as_secs_f64() / minimum)
        } else {
            "n/a (fits in the initial burst)".into()
        }
    );
    print_calls(&calls, orgs);
    op.kill();
    run.teardown(common.keep).await;
    Ok(())
}

/// Only the naive sequence (for a quick comparison without a cluster).
pub async fn naive_only(orgs: usize, latency_ms: u64) -> Result<()> {
    println!("machine: {}", machine::describe());
    println!("simulator latency per request: {latency_ms} ms");
    naive_baseline(orgs, &latency_args(latency_ms))
        .await
        .map(|_| ())
}

fn print_calls(calls: &Counters, n: usize) {
    println!(
        "API calls: {} total, {:.2} per org; 429s {}",
        calls.total(),
        calls.total() as f64 / n as f64,
        calls.with_status(429)
    );
    for (route, count) in calls.by_route() {
        println!(
            "  {route:<60} {count:>8}  {:.2}/org",
            count as f64 / n as f64
        );
    }
}

/// Changes seen in the namespace plus the operator's own write-attempt counters.
async fn writes_now(run: &Run, op: &OperatorProc) -> BTreeMap<String, u64> {
    let mut all = run.watch.snapshot();
    all.extend(cluster::operator_write_attempts(&op.metrics_addr).await);
    all
}

/// The API server's requests on the three kinds, all clients (the operator's and the
/// benchmark's watches' lists), per org: where the control plane's work goes.
pub fn print_requests(phase: &str, requests: &BTreeMap<String, u64>, n: usize) {
    let total: u64 = requests.values().sum();
    println!(
        "API server requests during {phase} (CustomerOrgs, Secrets, Events; verb resource code): {total}, {:.2} per org",
        total as f64 / n as f64
    );
    for (k, v) in requests {
        println!("  {k:<40} {v:>8}  {:.2}/org", *v as f64 / n as f64);
    }
}

fn print_writes(writes: &BTreeMap<String, u64>, n: usize) {
    let total = cluster::effective_writes(writes);
    println!(
        "Kubernetes writes (changes to CustomerOrgs, Secrets, Events in the namespace): {total}, {:.2} per org",
        total as f64 / n as f64
    );
    for (k, v) in writes {
        println!("  {k:<40} {v:>8}  {:.2}/org", *v as f64 / n as f64);
    }
}
