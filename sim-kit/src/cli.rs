//! Command-line pieces every simulator shares: the common flags (with the simulator's own
//! environment prefix), tracing set-up and the shutdown signal.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command, value_parser};

use crate::{FaultConfig, KitConfig, LoseMode};

/// The flags shared by every simulator.
#[derive(Debug, Clone)]
pub struct CommonArgs {
    pub listen: SocketAddr,
    pub control: bool,
    pub state_file: Option<PathBuf>,
    pub faults: FaultConfig,
    pub log_json: bool,
}

impl CommonArgs {
    pub fn kit_config(&self) -> KitConfig {
        KitConfig {
            listen: self.listen,
            control: self.control,
            state_file: self.state_file.clone(),
            faults: self.faults.clone(),
        }
    }

    pub fn from_matches(m: &ArgMatches) -> CommonArgs {
        let f = |id: &str| m.get_one::<f64>(id).copied().unwrap_or(0.0);
        CommonArgs {
            listen: m
                .get_one::<SocketAddr>("listen")
                .copied()
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            control: m.get_flag("control"),
            state_file: m.get_one::<PathBuf>("state-file").cloned(),
            faults: FaultConfig {
                error5xx: f("fault-5xx"),
                rate_limit429: f("fault-429"),
                lose_response: f("fault-lose-response"),
                lose_response_mode: m
                    .get_one::<LoseMode>("fault-lose-mode")
                    .copied()
                    .unwrap_or_default(),
                reset: f("fault-reset"),
                latency: f("fault-latency-prob"),
                latency_ms: m.get_one::<u64>("fault-latency-ms").copied().unwrap_or(0),
                read: None,
                write: None,
            },
            log_json: m.get_flag("log-json"),
        }
    }
}

/// The variable name, leaked once at start-up (clap keeps `&'static str` names).
fn env(prefix: &str, name: &str) -> &'static str {
    Box::leak(format!("{prefix}_{name}").into_boxed_str())
}

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not a probability between 0 and 1"))
    }
}

/// Adds `--listen`, `--control`, `--state-file`, the `--fault-*` flags and `--log-json`,
/// each also read from `<PREFIX>_<NAME>` (e.g. `GENNIA_SIM_LISTEN`).
pub fn add_common_args(cmd: Command, prefix: &str, default_listen: &'static str) -> Command {
    let prob = |id: &'static str, var: &str, help: &'static str| {
        Arg::new(id)
            .long(id)
            .env(env(prefix, var))
            .default_value("0")
            .value_parser(probability)
            .help(help)
    };
    cmd.arg(
        Arg::new("listen")
            .long("listen")
            .env(env(prefix, "LISTEN"))
            .default_value(default_listen)
            .value_parser(value_parser!(SocketAddr))
            .help("Address to listen on (port 0 picks one)"),
    )
    .arg(
        Arg::new("control")
            .long("control")
            .env(env(prefix, "CONTROL"))
            .action(ArgAction::SetTrue)
            .help("Serve the /_sim/ control API"),
    )
    .arg(
        Arg::new("state-file")
            .long("state-file")
            .env(env(prefix, "STATE_FILE"))
            .value_parser(value_parser!(PathBuf))
            .help("Persist state to this file (atomic writes) and load it on start"),
    )
    .arg(prob(
        "fault-5xx",
        "FAULT_5XX",
        "Probability of a 500/502/503 before executing",
    ))
    .arg(prob(
        "fault-429",
        "FAULT_429",
        "Probability of an injected 429",
    ))
    .arg(prob(
        "fault-lose-response",
        "FAULT_LOSE_RESPONSE",
        "Probability of committing and then losing the response (502 or dropped connection)",
    ))
    .arg(
        Arg::new("fault-lose-mode")
            .long("fault-lose-mode")
            .env(env(prefix, "FAULT_LOSE_MODE"))
            .default_value("mixed")
            .value_parser(|s: &str| s.parse::<LoseMode>())
            .help("How a lost response shows: mixed, bad-gateway or drop"),
    )
    .arg(prob(
        "fault-reset",
        "FAULT_RESET",
        "Probability of dropping the connection before executing",
    ))
    .arg(
        Arg::new("fault-latency-ms")
            .long("fault-latency-ms")
            .env(env(prefix, "FAULT_LATENCY_MS"))
            .default_value("0")
            .value_parser(value_parser!(u64).range(0..=60_000))
            .help("Added latency in milliseconds (applied with --fault-latency-prob)"),
    )
    .arg(prob(
        "fault-latency-prob",
        "FAULT_LATENCY_PROB",
        "Probability of adding the latency",
    ))
    .arg(
        Arg::new("log-json")
            .long("log-json")
            .env(env(prefix, "LOG_JSON"))
            .action(ArgAction::SetTrue)
            .help("Log as JSON lines"),
    )
}

/// `RUST_LOG`-driven tracing to stderr (stdout carries the start-up lines scripts parse).
pub fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

/// Parses `90s`, `15m`, `24h`, `7d`, `250ms` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => return Ok(Duration::from_millis(n)),
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86400),
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use ms, s, m, h, d)"
            ));
        }
    };
    Ok(Duration::from_secs(secs))
}

/// SIGINT or SIGTERM, so the state file gets its final write either way.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_args_and_env_prefix() {
        let cmd = add_common_args(Command::new("x"), "X_SIM", "127.0.0.1:0");
        let m = cmd
            .clone()
            .try_get_matches_from([
                "x",
                "--control",
                "--fault-5xx",
                "0.5",
                "--fault-lose-mode",
                "drop",
            ])
            .unwrap();
        let a = CommonArgs::from_matches(&m);
        assert!(a.control);
        assert_eq!(a.faults.error5xx, 0.5);
        assert_eq!(a.faults.lose_response_mode, LoseMode::Drop);
        assert!(
            cmd.clone()
                .try_get_matches_from(["x", "--fault-429", "2"])
                .is_err()
        );
        let help = cmd.clone().render_long_help().to_string();
        assert!(help.contains("X_SIM_FAULT_LOSE_RESPONSE"), "{help}");
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("5y").is_err());
    }
}
