//! `youhodler-sim`: run the YouHodler Business API (clients) simulator.
use clap::{CommandFactory, FromArgMatches, Parser};
use sim_kit::cli::{CommonArgs, add_common_args, init_tracing, wait_for_signal};
use uuid::Uuid;
use youhodler_sim::{
    Assumptions, Lifecycle, PatchMetadata, StateConflict, UnknownQuery, YouHodlerConfig,
};

/// A faithful, stateful, fault-injecting simulator of the YouHodler Business API clients surface.
#[derive(Parser, Debug)]
#[command(name = "youhodler-sim", version)]
struct Args {
    /// OAuth client id of the service account; generated and printed when absent.
    #[arg(long, env = "YOUHODLER_SIM_CLIENT_ID")]
    client_id: Option<String>,
    /// OAuth client secret; generated and printed when absent.
    #[arg(long, env = "YOUHODLER_SIM_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// The enterprise id (tenant root); generated when absent.
    #[arg(long, env = "YOUHODLER_SIM_ENTERPRISE_ID")]
    enterprise_id: Option<Uuid>,
    /// Access-token lifetime in seconds.
    #[arg(long, env = "YOUHODLER_SIM_TOKEN_TTL", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    token_ttl: u64,
    /// When suspend/reactivate take effect: sync (inside the 201) or async:SECONDS (the 201
    /// shows the old status; applied that many simulator-clock seconds later).
    #[arg(long, env = "YOUHODLER_SIM_LIFECYCLE", default_value = "sync")]
    lifecycle: Lifecycle,
    /// The one query parameter carrying a page token (default: page_token and
    /// next_page_token both).
    #[arg(long, env = "YOUHODLER_SIM_PAGE_TOKEN_PARAM")]
    page_token_param: Option<String>,
    /// The largest page_size accepted.
    #[arg(long, env = "YOUHODLER_SIM_MAX_PAGE_SIZE", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    max_page_size: u32,
    /// What an unknown query parameter gets: ignore or reject (400).
    #[arg(
        long,
        env = "YOUHODLER_SIM_UNKNOWN_QUERY",
        value_enum,
        default_value = "ignore"
    )]
    unknown_query: UnknownQuery,
    /// How PATCH treats metadata: replace the map, or merge (RFC 7396: null removes a key).
    #[arg(
        long,
        env = "YOUHODLER_SIM_PATCH_METADATA",
        value_enum,
        default_value = "replace"
    )]
    patch_metadata: PatchMetadata,
    /// What suspending a suspended (or reactivating an active) client gets: conflict (409
    /// state_conflict) or not-admissible (422).
    #[arg(
        long,
        env = "YOUHODLER_SIM_STATE_CONFLICT",
        value_enum,
        default_value = "conflict"
    )]
    state_conflict: StateConflict,
    /// Whether a second client with an external_id in use is refused (409).
    #[arg(long, env = "YOUHODLER_SIM_UNIQUE_EXTERNAL_ID", default_value_t = true, action = clap::ArgAction::Set)]
    unique_external_id: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let matches = add_common_args(Args::command(), "YOUHODLER_SIM", "127.0.0.1:8082").get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let common = CommonArgs::from_matches(&matches);
    init_tracing(common.log_json);
    let cfg = YouHodlerConfig {
        kit: common.kit_config(),
        client_id: args.client_id,
        client_secret: args.client_secret,
        enterprise_id: args.enterprise_id,
        token_ttl_secs: args.token_ttl,
        assumptions: Assumptions {
            lifecycle: args.lifecycle,
            page_token_param: args.page_token_param,
            max_page_size: args.max_page_size,
            unknown_query: args.unknown_query,
            patch_metadata: args.patch_metadata,
            state_conflict: args.state_conflict,
            unique_external_id: args.unique_external_id,
        },
    };
    let started = match youhodler_sim::spawn(cfg).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("youhodler-sim: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Tests and scripts parse these lines; the secret is the simulator's own credential.
    println!("client id: {}", started.client_id);
    println!("client secret: {}", started.client_secret);
    println!("enterprise id: {}", started.enterprise_id);
    println!("listening on {}", started.base_url());
    tracing::info!(control = common.control, "youhodler-sim started");
    wait_for_signal().await;
    tracing::info!("shutting down");
    started.sim.shutdown().await;
    std::process::ExitCode::SUCCESS
}
