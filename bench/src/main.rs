//! `orgops-bench`: measures orgops against the simulator on the local control plane.
//! Figures are printed for docs/benchmarks.md; nothing here asserts on time.
mod bound;
mod chart;
mod cluster;
mod edits;
mod error;
mod import;
mod machine;
mod naive;
mod procs;
mod scenarios;
mod shards;
mod simapi;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "orgops-bench", about = "Benchmarks for the orgops operator")]
struct Cli {
    /// Admin kubeconfig of the control plane (default target/control-plane/kubeconfig).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// `orgops run --concurrency` (and `orgops import --concurrency` for `import`).
    #[arg(long, global = true, default_value_t = 16)]
    concurrency: u16,
    /// CustomerOrgs created in parallel (server-side apply).
    #[arg(long, global = true, default_value_t = 32)]
    apply_parallel: usize,
    /// Give up waiting for all Ready after this many seconds.
    #[arg(long, global = true, default_value_t = 1800)]
    timeout_secs: u64,
    /// Extra argument for `orgops run` (repeatable).
    #[arg(long = "operator-arg", global = true, allow_hyphen_values = true)]
    operator_args: Vec<String>,
    /// Keep the namespace and objects afterwards.
    #[arg(long, global = true)]
    keep: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Converge N CustomerOrgs; then restart and steady state (unless skipped).
    Converge {
        #[arg(long, default_value_t = 1000)]
        orgs: usize,
        #[arg(long, default_value = "unlimited")]
        tier: String,
        #[arg(long)]
        no_naive: bool,
        #[arg(long)]
        no_restart: bool,
        #[arg(long)]
        no_steady: bool,
        /// Skip measuring the API server's own bound (the same writes without the operator).
        #[arg(long)]
        no_bound: bool,
        /// Resync interval (seconds) for the restart and steady-state phases.
        #[arg(long, default_value_t = 20)]
        resync_secs: u64,
        #[arg(long, default_value_t = 3)]
        steady_periods: u32,
        /// Latency (ms) the simulator adds to every request, for the operator and the naive run.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Write SVG charts of the run here (Ready over time against the bound; memory).
        #[arg(long)]
        svg_dir: Option<PathBuf>,
    },
    /// Only the API server's own bound: the writes of N new orgs, without the operator.
    Bound {
        #[arg(long, default_value_t = 1000)]
        orgs: usize,
    },
    /// Converge N CustomerOrgs at a rate-limited tier (standard by default; `--tier partner`:
    /// 3,000 writes a minute): 429s and time against the tier's minimum.
    Standard {
        #[arg(long, default_value_t = 20)]
        orgs: usize,
        /// `standard` or `partner`.
        #[arg(long, default_value = "standard")]
        tier: String,
    },
    /// `orgops import` of N Layers orgs made out of band: time, requests (0 writes), CPU,
    /// memory, and the time the same reads need at each tier's read budget.
    Import {
        #[arg(long, default_value_t = 10_000)]
        orgs: usize,
        #[arg(long, default_value = "unlimited")]
        tier: String,
    },
    /// Edits first: `warm` customers converge, then a backlog of `backlog` new ones is
    /// applied and `edits` warm ones are edited meanwhile; prints edit -> Ready p50/p99.
    Edits {
        #[arg(long, default_value_t = 500)]
        warm: usize,
        #[arg(long, default_value_t = 10_000)]
        backlog: usize,
        #[arg(long, default_value_t = 50)]
        edits: usize,
    },
    /// Shards: `orgs` new customers under one replica, then `orgs` under two shards;
    /// prints each process's peak RSS, the time to Ready and the 429s.
    Shards {
        #[arg(long, default_value_t = 20_000)]
        orgs: usize,
        #[arg(long, default_value = "unlimited")]
        tier: String,
    },
    /// Only the naive six-call sequence against a fresh simulator.
    Naive {
        #[arg(long, default_value_t = 1000)]
        orgs: usize,
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let common = scenarios::Common {
        kubeconfig: cli
            .kubeconfig
            .unwrap_or_else(|| cluster::default_kubeconfig(&procs::workspace_root())),
        concurrency: cli.concurrency,
        apply_parallel: cli.apply_parallel.max(1),
        timeout: Duration::from_secs(cli.timeout_secs),
        operator_args: cli.operator_args,
        keep: cli.keep,
    };
    let result = match cli.command {
        Cmd::Converge {
            orgs,
            tier,
            no_naive,
            no_restart,
            no_steady,
            no_bound,
            resync_secs,
            steady_periods,
            latency_ms,
            svg_dir,
        } => {
            let opts = scenarios::ConvergeOpts {
                orgs,
                tier,
                naive: !no_naive,
                restart: !no_restart,
                steady: !no_steady,
                bound: !no_bound,
                resync: Duration::from_secs(resync_secs.max(1)),
                steady_periods: steady_periods.max(1),
                latency_ms,
                svg_dir,
            };
            scenarios::converge(&common, &opts).await
        }
        Cmd::Standard { orgs, tier } => scenarios::standard(&common, orgs, &tier).await,
        Cmd::Bound { orgs } => scenarios::bound_only(&common, orgs).await,
        Cmd::Import { orgs, tier } => import::run(&common, orgs, &tier).await,
        Cmd::Edits {
            warm,
            backlog,
            edits,
        } => edits::run(&common, warm, backlog, edits).await,
        Cmd::Shards { orgs, tier } => shards::run(&common, orgs, &tier).await,
        Cmd::Naive { orgs, latency_ms } => scenarios::naive_only(orgs, latency_ms).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orgops-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
