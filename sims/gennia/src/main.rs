//! `gennia-sim`: run the Gennia public Clients API simulator.
use clap::{CommandFactory, FromArgMatches, Parser};
use gennia_sim::{Assumptions, BusinessRules, ErrorDialect, GenniaConfig, InitialStatus};
use sim_kit::cli::{CommonArgs, add_common_args, init_tracing, wait_for_signal};

/// A faithful, stateful, fault-injecting simulator of Gennia's public Clients API.
#[derive(Parser, Debug)]
#[command(name = "gennia-sim", version)]
struct Args {
    /// The hub's workspace API key (gsk_...); generated and printed when absent.
    #[arg(long, env = "GENNIA_SIM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// How business errors look: codes (one per rule), validation (every 400
    /// VALIDATION_ERROR) or spring ({timestamp,status,error,message,path}).
    #[arg(
        long,
        env = "GENNIA_SIM_ERROR_DIALECT",
        value_enum,
        default_value = "codes"
    )]
    error_dialect: ErrorDialect,
    /// Every response property present, null when unset (empty lists null too).
    #[arg(long, env = "GENNIA_SIM_NULLS")]
    nulls: bool,
    /// What a new workspace with a plan starts as: active, or pending_onboarding until a
    /// user finishes onboarding.
    #[arg(
        long,
        env = "GENNIA_SIM_INITIAL_STATUS",
        value_enum,
        default_value = "active"
    )]
    initial_status: InitialStatus,
    /// One login email per person: a user email already in another workspace is refused.
    #[arg(long, env = "GENNIA_SIM_UNIQUE_LOGIN_EMAIL")]
    unique_login_email: bool,
    /// At most this many users per workspace (default: not enforced).
    #[arg(long, env = "GENNIA_SIM_SEATS", value_parser = clap::value_parser!(u32).range(1..))]
    seats: Option<u32>,
    /// Characters the API key format check wants after gsk_ (Gennia's CLI asks for 10).
    #[arg(long, env = "GENNIA_SIM_API_KEY_MIN_CHARS", default_value_t = gennia_sim::api::DEFAULT_KEY_MIN_CHARS)]
    api_key_min_chars: usize,
    /// enforce, or relaxed: accept everything the OpenAPI excerpt allows (contract test).
    #[arg(
        long,
        env = "GENNIA_SIM_BUSINESS_RULES",
        value_enum,
        default_value = "enforce"
    )]
    business_rules: BusinessRules,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let matches = add_common_args(Args::command(), "GENNIA_SIM", "127.0.0.1:8081").get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let common = CommonArgs::from_matches(&matches);
    init_tracing(common.log_json);
    let cfg = GenniaConfig {
        kit: common.kit_config(),
        api_key: args.api_key,
        assumptions: Assumptions {
            error_dialect: args.error_dialect,
            nulls: args.nulls,
            initial_status: args.initial_status,
            unique_login_email: args.unique_login_email,
            seats: args.seats,
            api_key_min_chars: args.api_key_min_chars,
            business_rules: args.business_rules,
        },
    };
    let started = match gennia_sim::spawn(cfg).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gennia-sim: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Tests and scripts parse these two lines; the key is the simulator's own credential.
    println!("api key: {}", started.api_key);
    println!("listening on {}", started.base_url());
    tracing::info!(control = common.control, "gennia-sim started");
    wait_for_signal().await;
    tracing::info!("shutting down");
    started.sim.shutdown().await;
    std::process::ExitCode::SUCCESS
}
