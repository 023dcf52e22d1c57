//! `layers-sim`: run the Layers Partner API simulator.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use layers_sim::{
    Assumptions, CreditEvents, FaultConfig, InFlightMode, LoseMode, RateLimitAlgorithm,
    RateLimitScope, SimConfig, SuspendedWrites, Tier, UnknownFields,
};
use sim_kit::cli::parse_duration;

/// A faithful, stateful, fault-injecting simulator of the Layers Partner API.
#[derive(Parser, Debug)]
#[command(name = "layers-sim", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "LAYERS_SIM_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The partner (org:admin) API key; generated and printed when absent.
    #[arg(long, env = "LAYERS_SIM_PARENT_KEY", hide_env_values = true)]
    parent_key: Option<String>,
    /// Credits in the partner's prepaid wallet at start and after /_sim/reset.
    #[arg(long, env = "LAYERS_SIM_PARENT_CREDITS", default_value_t = 1_000_000)]
    parent_credits: u64,
    /// The parent key's scopes, comma-separated, from the documented catalogue.
    #[arg(
        long,
        env = "LAYERS_SIM_PARENT_SCOPES",
        default_value = "org:admin,projects:read,projects:write,content:read,content:write"
    )]
    parent_scopes: String,
    /// Rate-limit tier for every key (`unlimited` is not documented: tests and benchmarks only).
    #[arg(long, env = "LAYERS_SIM_TIER", value_enum, default_value = "standard")]
    tier: Tier,
    /// How the per-minute limit is enforced.
    #[arg(
        long,
        env = "LAYERS_SIM_RATE_LIMIT_ALGORITHM",
        value_enum,
        default_value = "token-bucket"
    )]
    rate_limit_algorithm: RateLimitAlgorithm,
    /// Replace the tier's daily write-light cap (tests only; default: the documented figure).
    #[arg(long, env = "LAYERS_SIM_DAILY_WRITE_CAP", value_parser = clap::value_parser!(u32).range(1..))]
    daily_write_cap: Option<u32>,
    /// What a duplicate gets while the original request (same Idempotency-Key) still runs.
    #[arg(
        long,
        env = "LAYERS_SIM_IDEMPOTENCY_IN_FLIGHT",
        value_enum,
        default_value = "wait"
    )]
    idempotency_in_flight: InFlightMode,
    /// What GET …/credits/events shows of an allocation's description and metadata
    /// (assumed: with-metadata; documented = only the fields the reference shows).
    #[arg(
        long,
        env = "LAYERS_SIM_CREDIT_EVENTS",
        value_enum,
        default_value = "with-metadata"
    )]
    credit_events: CreditEvents,
    /// Whether the parent may change a suspended child (refuse: only resume, archive, reads).
    #[arg(
        long,
        env = "LAYERS_SIM_SUSPENDED_WRITES",
        value_enum,
        default_value = "allow"
    )]
    suspended_writes: SuspendedWrites,
    /// Per-minute token-bucket capacity (default: the per-minute limit); refill unchanged.
    #[arg(long, env = "LAYERS_SIM_RATE_LIMIT_BURST", value_parser = clap::value_parser!(u32).range(1..))]
    rate_limit_burst: Option<u32>,
    /// Whose requests share a bucket: the API key, or the organization a request is about.
    #[arg(
        long,
        env = "LAYERS_SIM_RATE_LIMIT_SCOPE",
        value_enum,
        default_value = "parent-key"
    )]
    rate_limit_scope: RateLimitScope,
    /// What an unknown request-body field gets: a 422, or nothing (ignored).
    #[arg(
        long,
        env = "LAYERS_SIM_UNKNOWN_FIELDS",
        value_enum,
        default_value = "reject"
    )]
    unknown_fields: UnknownFields,
    /// Whether 4xx outcomes are stored and replayed under their Idempotency-Key.
    #[arg(long = "idempotency-4xx", env = "LAYERS_SIM_IDEMPOTENCY_4XX", default_value = "store", value_parser = ["store", "skip"])]
    idempotency_4xx: String,
    /// What archiving a child does to its webhook endpoints.
    #[arg(long, env = "LAYERS_SIM_ARCHIVE_WEBHOOKS", default_value = "keep", value_parser = ["keep", "delete"])]
    archive_webhooks: String,
    /// Serve the /_sim/ control API.
    #[arg(long, env = "LAYERS_SIM_CONTROL")]
    control: bool,
    /// Persist state to this file (atomic writes) and load it on start.
    #[arg(long, env = "LAYERS_SIM_STATE_FILE")]
    state_file: Option<PathBuf>,
    /// Idempotency replay window, e.g. 24h, 90s, 15m.
    #[arg(long, env = "LAYERS_SIM_IDEMPOTENCY_WINDOW", default_value = "24h", value_parser = parse_duration)]
    idempotency_window: Duration,
    /// Probability of a 500/502/503 before executing.
    #[arg(
        long = "fault-5xx",
        env = "LAYERS_SIM_FAULT_5XX",
        default_value_t = 0.0
    )]
    fault_5xx: f64,
    /// Probability of an injected 429.
    #[arg(
        long = "fault-429",
        env = "LAYERS_SIM_FAULT_429",
        default_value_t = 0.0
    )]
    fault_429: f64,
    /// Probability of committing and then losing the response (502 or dropped connection).
    #[arg(long, env = "LAYERS_SIM_FAULT_LOSE_RESPONSE", default_value_t = 0.0)]
    fault_lose_response: f64,
    /// How a lost response shows: mixed, bad-gateway or drop.
    #[arg(long, env = "LAYERS_SIM_FAULT_LOSE_MODE", default_value = "mixed", value_parser = parse_lose_mode)]
    fault_lose_mode: LoseMode,
    /// Probability of dropping the connection before executing.
    #[arg(long, env = "LAYERS_SIM_FAULT_RESET", default_value_t = 0.0)]
    fault_reset: f64,
    /// Added latency in milliseconds (applied with --fault-latency-prob).
    #[arg(long, env = "LAYERS_SIM_FAULT_LATENCY_MS", default_value_t = 0)]
    fault_latency_ms: u64,
    /// Probability of adding the latency.
    #[arg(long, env = "LAYERS_SIM_FAULT_LATENCY_PROB", default_value_t = 0.0)]
    fault_latency_prob: f64,
    /// Probability that a write is held in flight before executing (with --fault-slow-commit-ms).
    #[arg(long, env = "LAYERS_SIM_FAULT_SLOW_COMMIT", default_value_t = 0.0)]
    fault_slow_commit: f64,
    /// How long a slow commit holds the request in flight, in milliseconds.
    #[arg(long, env = "LAYERS_SIM_FAULT_SLOW_COMMIT_MS", default_value_t = 0)]
    fault_slow_commit_ms: u64,
    /// Probability that a write's connection is closed at once and the write commits
    /// --fault-slow-commit-ms later anyway (a commit that survives the client giving up).
    #[arg(long, env = "LAYERS_SIM_FAULT_LATE_COMMIT", default_value_t = 0.0)]
    fault_late_commit: f64,
    /// Log as JSON lines.
    #[arg(long, env = "LAYERS_SIM_LOG_JSON")]
    log_json: bool,
}

fn parse_lose_mode(s: &str) -> Result<LoseMode, String> {
    s.parse()
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let parent_scopes = match layers_sim::parse_scopes(&args.parent_scopes) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("layers-sim: --parent-scopes: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let cfg = SimConfig {
        parent_scopes,
        rate_limit_algorithm: args.rate_limit_algorithm,
        daily_write_cap: args.daily_write_cap,
        assumptions: Assumptions {
            credit_events: args.credit_events,
            suspended_writes: args.suspended_writes,
            idempotency_in_flight: args.idempotency_in_flight,
            idempotency_store_4xx: args.idempotency_4xx == "store",
            archive_deletes_webhooks: args.archive_webhooks == "delete",
            rate_limit_burst: args.rate_limit_burst,
            rate_limit_scope: args.rate_limit_scope,
            unknown_fields: args.unknown_fields,
        },
        listen: args.listen,
        parent_key: args.parent_key,
        parent_credits: args.parent_credits,
        tier: args.tier,
        control: args.control,
        state_file: args.state_file,
        idempotency_window: args.idempotency_window,
        faults: FaultConfig {
            error5xx: args.fault_5xx,
            rate_limit429: args.fault_429,
            lose_response: args.fault_lose_response,
            lose_response_mode: args.fault_lose_mode,
            reset: args.fault_reset,
            latency: args.fault_latency_prob,
            latency_ms: args.fault_latency_ms,
            slow_commit: args.fault_slow_commit,
            slow_commit_ms: args.fault_slow_commit_ms,
            late_commit: args.fault_late_commit,
            read: None,
            write: None,
        },
    };
    let sim = match layers_sim::spawn(cfg).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("layers-sim: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Tests and scripts parse these two lines; the key is the simulator's own credential.
    println!("parent key: {}", sim.parent_key);
    println!("listening on {}", sim.base_url());
    tracing::info!(parent_org = %sim.parent_org_id, tier = ?args.tier, rate_limit_algorithm = args.rate_limit_algorithm.name(), control = args.control, "layers-sim started");
    sim_kit::cli::wait_for_signal().await;
    tracing::info!("shutting down");
    sim.shutdown().await;
    std::process::ExitCode::SUCCESS
}
