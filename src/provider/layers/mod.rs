//! The Layers Partner API implementation of [`Provider`](crate::provider::Provider).

pub(crate) mod client;
pub mod model;

pub mod parent_webhooks;
mod provider;
pub use provider::CAPABILITIES;
pub mod ratelimit;
pub mod retry;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::provider::error::ProviderError;
use crate::provider::metrics::ProviderMetrics;
use crate::provider::types::Secret;

use crate::provider::org_index::OrgIndex;
use client::Http;
use ratelimit::Buckets;

/// Rate-limit tier of a Layers credential (reference §3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateTier {
    Standard,
    Pilot,
    Partner,
    Unlimited,
}

impl RateTier {
    pub fn as_str(self) -> &'static str {
        match self {
            RateTier::Standard => "standard",
            RateTier::Pilot => "pilot",
            RateTier::Partner => "partner",
            RateTier::Unlimited => "unlimited",
        }
    }

    /// Requests per minute for reads (GET) and writes (everything else); `None` = unlimited.
    pub fn per_minute(self) -> Option<(u32, u32)> {
        match self {
            RateTier::Standard => Some((120, 60)),
            RateTier::Pilot => Some((1200, 600)),
            RateTier::Partner => Some((6000, 3000)),
            RateTier::Unlimited => None,
        }
    }

    /// The tier whoami reports. Tiers this client does not know (`sandbox`, `internal`,
    /// future ones) get the most conservative limits.
    pub fn from_whoami(tier: &str) -> RateTier {
        tier.parse().unwrap_or(RateTier::Standard)
    }
}

impl fmt::Display for RateTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown rate-limit tier {0:?} (expected standard, pilot, partner or unlimited)")]
pub struct UnknownTier(String);

impl FromStr for RateTier {
    type Err = UnknownTier;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "standard" => Ok(RateTier::Standard),
            "pilot" => Ok(RateTier::Pilot),
            "partner" => Ok(RateTier::Partner),
            "unlimited" => Ok(RateTier::Unlimited),
            _ => Err(UnknownTier(s.to_string())),
        }
    }
}

/// How to reach one Layers API with one parent credential.
#[derive(Clone)]
pub struct LayersConfig {
    pub base_url: String,
    pub api_key: Secret,
    /// `None` = not known yet: standard-tier limits until [`LayersProvider::set_tier`].
    pub tier: Option<RateTier>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Retries stop when the next one would start later than this after the first attempt.
    pub max_retry_time: Duration,
    pub metrics: Option<ProviderMetrics>,
    /// First backoff ceiling; doubles per attempt up to `retry_max_delay` (full jitter).
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
    /// How long the cached `externalId` index may be reused before a lookup lists every
    /// live child again (this client's own writes keep it current in between). Orgs
    /// created by anyone else become visible to lookups after at most this long.
    pub org_index_max_age: Duration,
    /// The replica's leader fence: every attempt of a write is checked and stamped right
    /// before it is sent (`crate::fence::stamp`); `None` outside the operator.
    pub fence: Option<crate::fence::Fence>,
    /// Replicas (shards) sharing this parent key's rate budget: each uses 1/N of it.
    pub rate_shares: u32,
}

impl LayersConfig {
    pub fn new(base_url: impl Into<String>, api_key: Secret) -> LayersConfig {
        LayersConfig {
            base_url: base_url.into(),
            api_key,
            tier: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_attempts: 5,
            max_retry_time: Duration::from_secs(60),
            metrics: None,
            retry_base_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(10),
            org_index_max_age: Duration::from_secs(30),
            fence: None,
            rate_shares: 1,
        }
    }
}

impl fmt::Debug for LayersConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayersConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key)
            .field("tier", &self.tier)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("max_retry_time", &self.max_retry_time)
            .field("org_index_max_age", &self.org_index_max_age)
            .field("fence", &self.fence)
            .field("rate_shares", &self.rate_shares)
            .finish_non_exhaustive()
    }
}

/// A Layers API client for one parent credential. Cheap to share behind an `Arc`.
pub struct LayersProvider {
    http: Http,
    buckets: Arc<Buckets>,
    orgs: OrgIndex,
}

impl LayersProvider {
    pub fn new(cfg: LayersConfig) -> Result<LayersProvider, ProviderError> {
        let buckets = Buckets::shared(&cfg.base_url, &cfg.api_key);
        buckets.set_tier_share(cfg.tier.unwrap_or(RateTier::Standard), cfg.rate_shares);
        let http = Http::new(&cfg, buckets.clone())?;
        Ok(LayersProvider {
            http,
            buckets,
            orgs: OrgIndex::new(cfg.org_index_max_age),
        })
    }

    /// Resizes the limiters of this credential (e.g. after whoami). A no-op when the
    /// tier is unchanged, so calling it on every whoami does not grant a fresh burst.
    pub fn set_tier(&self, tier: RateTier) {
        self.buckets.set_tier(tier);
    }

    pub fn tier(&self) -> RateTier {
        self.buckets.tier()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_parse_and_print() {
        for t in [
            RateTier::Standard,
            RateTier::Pilot,
            RateTier::Partner,
            RateTier::Unlimited,
        ] {
            assert_eq!(t.as_str().parse::<RateTier>().unwrap(), t);
        }
        assert_eq!("Pilot".parse::<RateTier>().unwrap(), RateTier::Pilot);
        assert!("gold".parse::<RateTier>().is_err());
        assert_eq!(RateTier::from_whoami("sandbox"), RateTier::Standard);
        assert_eq!(RateTier::from_whoami("partner"), RateTier::Partner);
    }

    #[test]
    fn config_debug_redacts_the_key() {
        let cfg = LayersConfig::new("http://127.0.0.1:1", Secret::new("lp_live_supersecret"));
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("supersecret"));
        assert!(shown.contains("[REDACTED]"));
    }
}
