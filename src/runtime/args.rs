//! Flags of `orgops run`; every flag can also come from the environment.
use std::time::Duration;

/// `orgops run` options.
#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// Namespaces to watch for CustomerOrgs (comma-separated). Empty: all namespaces.
    #[arg(
        long,
        env = "ORGOPS_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub namespaces: Vec<String>,

    /// How often a converged CustomerOrg is checked against the API (±10 % jitter), e.g. 30s, 10m, 1h.
    #[arg(long, env = "ORGOPS_RESYNC_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub resync_interval: Duration,

    /// How often a converged CustomerOrg is verified in depth (keys, webhook endpoints and
    /// the ledger listed, not only the org read), to notice out-of-band deletions the org's
    /// summary cannot show. Spread per object; 0s verifies on every pass.
    #[arg(long, env = "ORGOPS_VERIFY_INTERVAL", default_value = "1h", value_parser = parse_duration_or_zero)]
    pub verify_interval: Duration,

    /// How long an object that needs something outside its spec (a parent top-up, new
    /// credentials) waits before the next attempt; never shorter than the resync interval.
    /// A spec or provider change retries at once anyway.
    #[arg(long, env = "ORGOPS_SLOW_RETRY", default_value = "5m", value_parser = parse_duration)]
    pub slow_retry: Duration,

    /// Timeout of each request to a partner API (a timed-out write is retried under its
    /// idempotency key where it has one). Default: each client's own, 30s.
    #[arg(long, env = "ORGOPS_PROVIDER_REQUEST_TIMEOUT", value_parser = parse_duration)]
    pub provider_request_timeout: Option<Duration>,
    /// How often an OrgProvider reads its parent's balance while customers wait on funds
    /// (a refused or held top-up): a top-up of the parent re-triggers exactly the customers
    /// it can fund within about this long. Otherwise it is read at each resync.
    #[arg(long, env = "ORGOPS_FUNDS_CHECK_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub funds_check_interval: Duration,

    /// Where Argo CD's Applications live, for the change log's GitOps revision: a tracking
    /// annotation without a namespace prefix names an Application here.
    #[arg(long, env = "ORGOPS_ARGOCD_NAMESPACE", default_value = "argocd")]
    pub argocd_namespace: String,

    /// Maximum number of CustomerOrgs reconciled at the same time.
    #[arg(long, env = "ORGOPS_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "ORGOPS_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: std::net::SocketAddr,

    /// Only the holder of a coordination.k8s.io Lease runs the controllers.
    #[arg(long, env = "ORGOPS_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub leader_election: bool,

    /// Namespace of the leader-election Lease (default: $POD_NAMESPACE, else orgops-system).
    #[arg(long, env = "ORGOPS_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Name of the leader-election Lease.
    #[arg(long, env = "ORGOPS_LEASE_NAME", default_value = "orgops-leader")]
    pub lease_name: String,

    /// How long a Lease its holder stopped renewing stays taken (a crashed leader is
    /// replaced after about this long). The holder renews every third of it and writes only
    /// until its last confirmed renewal + this - a fifth of it (the leader fence).
    #[arg(long, env = "ORGOPS_LEASE_DURATION", default_value = "15s", value_parser = parse_lease_duration)]
    pub lease_duration: Duration,

    /// Only CustomerOrgs and ParentWebhooks matching this label selector are watched,
    /// cached and reconciled by this replica: one shard (docs/architecture.md "Shards").
    /// Each shard needs its own `--lease-name`. Empty: every object.
    #[arg(long, env = "ORGOPS_SHARD_SELECTOR", default_value = "")]
    pub shard_selector: String,

    /// How many shards share each parent key: this replica uses 1/N of each provider's
    /// client-side rate budget, so shards together stay within it (no 429s together).
    #[arg(long, env = "ORGOPS_RATE_SHARES", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rate_shares: u32,

    /// Log format: text or json (levels from RUST_LOG, default info).
    #[arg(long, env = "ORGOPS_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl RunArgs {
    /// Watched namespaces with blanks removed; empty means all namespaces.
    pub fn watched_namespaces(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .namespaces
            .iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The shard's label selector, `None` when this replica takes every object.
    pub fn shard_selector(&self) -> Option<&str> {
        Some(self.shard_selector.trim()).filter(|s| !s.is_empty())
    }

    pub fn lease_namespace(&self) -> String {
        self.lease_namespace
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| {
                std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|n| !n.is_empty())
            })
            .unwrap_or_else(|| "orgops-system".to_string())
    }
}

/// Parses durations such as `500ms`, `30s`, `10m`, `1h30m` (a bare number is seconds).
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("invalid duration {input:?}: expected a number"));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {input:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            other => {
                return Err(format!(
                    "invalid duration {input:?}: unknown unit {other:?} (use ms, s, m or h)"
                ));
            }
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    if total.is_zero() {
        return Err(format!("invalid duration {input:?}: must be positive"));
    }
    Ok(total)
}

/// A lease duration: whole seconds (the Lease records seconds), at least 2 s.
pub fn parse_lease_duration(input: &str) -> Result<Duration, String> {
    let d = parse_duration(input)?;
    if d < Duration::from_secs(2) || d.subsec_nanos() != 0 {
        return Err(format!(
            "invalid lease duration {input:?}: a whole number of seconds, at least 2s"
        ));
    }
    Ok(d)
}

/// Like `parse_duration`, but zero is allowed (`0`, `0s`): "on every pass".
pub fn parse_duration_or_zero(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s.trim_end_matches(['s', 'm', 'h']).trim_end_matches("ms") == "0" || s == "0ms" {
        return Ok(Duration::ZERO);
    }
    parse_duration(input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn durations_parse_like_kubectl_users_write_them() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn defaults_and_flags() {
        let cli = Cli::try_parse_from(["orgops"]).expect("defaults parse");
        assert!(cli.run.watched_namespaces().is_empty());
        assert_eq!(cli.run.resync_interval, Duration::from_secs(600));
        assert_eq!(cli.run.concurrency, 16);
        assert_eq!(cli.run.slow_retry, Duration::from_secs(300));
        assert_eq!(cli.run.funds_check_interval, Duration::from_secs(15));
        assert_eq!(cli.run.shard_selector(), None);
        assert_eq!(cli.run.rate_shares, 1);
        let shard = Cli::try_parse_from([
            "orgops",
            "--shard-selector= orgops.dev/shard=1 ",
            "--rate-shares=2",
        ])
        .expect("a shard");
        assert_eq!(shard.run.shard_selector(), Some("orgops.dev/shard=1"));
        assert_eq!(shard.run.rate_shares, 2);
        assert!(Cli::try_parse_from(["orgops", "--rate-shares=0"]).is_err());
        assert!(cli.run.leader_election);
        assert_eq!(cli.run.lease_name, "orgops-leader");
        assert_eq!(cli.run.lease_duration, Duration::from_secs(15));
        let short = Cli::try_parse_from(["orgops", "--lease-duration=4s"]).expect("4s");
        assert_eq!(short.run.lease_duration, Duration::from_secs(4));
        assert!(Cli::try_parse_from(["orgops", "--lease-duration=1s"]).is_err());
        assert!(Cli::try_parse_from(["orgops", "--lease-duration=2500ms"]).is_err());

        let cli = Cli::try_parse_from([
            "orgops",
            "--namespaces",
            "b, a,,b",
            "--resync-interval",
            "3s",
            "--leader-election=false",
            "--log-format",
            "json",
        ])
        .expect("flags parse");
        assert_eq!(cli.run.watched_namespaces(), vec!["a", "b"]);
        assert_eq!(cli.run.resync_interval, Duration::from_secs(3));
        assert!(!cli.run.leader_election);
        assert_eq!(cli.run.log_format, LogFormat::Json);
        assert!(Cli::try_parse_from(["orgops", "--concurrency", "0"]).is_err());
    }
}
