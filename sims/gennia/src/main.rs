//! `gennia-sim`: run the Gennia public Clients API simulator.
use clap::{CommandFactory, FromArgMatches, Parser};
use gennia_sim::GenniaConfig;
use sim_kit::cli::{CommonArgs, add_common_args, init_tracing, wait_for_signal};

/// A faithful, stateful, fault-injecting simulator of Gennia's public Clients API.
#[derive(Parser, Debug)]
#[command(name = "gennia-sim", version)]
struct Args {
    /// The hub's workspace API key (gsk_...); generated and printed when absent.
    #[arg(long, env = "GENNIA_SIM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
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
