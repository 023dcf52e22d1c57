//! Client-side token buckets, one per credential and endpoint class, mirroring the
//! server's (capacity = per-minute limit, refill = limit/60 per second) with a smaller
//! burst, so requests wait here instead of provoking 429s. A 429 pauses the whole class.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::RateTier;
use crate::provider::types::Secret;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Every GET.
    Read,
    /// Everything else.
    Write,
}

impl Class {
    pub fn of(method: &reqwest::Method) -> Class {
        if method == reqwest::Method::GET {
            Class::Read
        } else {
            Class::Write
        }
    }
}

/// Client burst for a server bucket of `per_minute` capacity: 1 % short (2 tokens at
/// least), so requests reordered in flight cannot drain the server bucket (at the partner
/// tier 30 tokens are 0.6 s of refill). Was 5 %: at 1,000 new orgs on the partner tier the
/// 150 tokens held back cost 3 s of a 40 s minimum (docs/benchmarks.md, issue 18). A 429
/// anyway (e.g. a previous process spent the bucket) pauses the class for Retry-After.
/// A pause at least this long (a daily write cap's Retry-After) is reported to the caller
/// instead of waited out.
pub const LONG_PAUSE: Duration = Duration::from_secs(60);

pub fn client_burst(per_minute: u32) -> u32 {
    let margin = (per_minute / 100).max(2);
    per_minute.saturating_sub(margin).max(1)
}

/// This replica's part of a per-minute budget shared by `shares` replicas.
pub fn share_of(per_minute: u32, shares: u32) -> u32 {
    (per_minute / shares.max(1)).max(1)
}

fn limiter(per_minute: u32) -> Option<DefaultDirectRateLimiter> {
    let burst = NonZeroU32::new(client_burst(per_minute))?;
    let quota = Quota::with_period(Duration::from_secs_f64(60.0 / f64::from(per_minute)))?;
    Some(RateLimiter::direct(quota.allow_burst(burst)))
}

#[derive(Default)]
struct ClassBucket {
    limiter: RwLock<Option<Arc<DefaultDirectRateLimiter>>>,
    paused_until: Mutex<Option<Instant>>,
}

impl ClassBucket {
    fn pause_deadline(&self) -> Option<Instant> {
        let guard = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        (*guard).filter(|t| *t > Instant::now())
    }

    /// Waits for a token; `Err(left)` at once when a 429 paused the class for at least
    /// `LONG_PAUSE` (the daily cap): a caller must not hold a reconcile slot for hours.
    async fn acquire(&self) -> Result<(), Duration> {
        loop {
            if let Some(deadline) = self.pause_deadline() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left >= LONG_PAUSE {
                    return Err(left);
                }
                tokio::time::sleep_until(deadline).await;
                continue;
            }
            let current = self
                .limiter
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(l) = current {
                l.until_ready().await;
            }
            // A 429 seen by another caller while we waited pauses us too.
            if self.pause_deadline().is_none() {
                return Ok(());
            }
        }
    }

    fn pause(&self, for_: Duration) {
        let until = Instant::now() + for_;
        let mut guard = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none_or(|t| t < until) {
            *guard = Some(until);
        }
    }

    fn resize(&self, per_minute: Option<u32>) {
        let next = per_minute.and_then(limiter).map(Arc::new);
        *self.limiter.write().unwrap_or_else(|p| p.into_inner()) = next;
    }
}

/// The buckets of one credential against one API.
pub struct Buckets {
    read: ClassBucket,
    write: ClassBucket,
    /// The tier in use and this replica's share of its budget (1/N: N shards share the
    /// parent key, `--rate-shares`).
    tier: Mutex<Option<(RateTier, u32)>>,
}

static SHARED: OnceLock<Mutex<HashMap<String, Arc<Buckets>>>> = OnceLock::new();

impl Buckets {
    pub fn new() -> Buckets {
        Buckets {
            read: ClassBucket::default(),
            write: ClassBucket::default(),
            tier: Mutex::new(None),
        }
    }

    /// The process-wide buckets of this credential, so that two clients built from the
    /// same key (e.g. after the OrgProvider is re-read) share one budget.
    pub fn shared(base_url: &str, api_key: &Secret) -> Arc<Buckets> {
        let digest = Sha256::digest(api_key.expose().as_bytes());
        let id = format!("{}|{}", base_url.trim_end_matches('/'), hex::encode(digest));
        let map = SHARED.get_or_init(|| Mutex::new(HashMap::new()));
        let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id)
            .or_insert_with(|| Arc::new(Buckets::new()))
            .clone()
    }

    pub fn set_tier(&self, tier: RateTier) {
        let shares = self.shares();
        self.set_tier_share(tier, shares);
    }

    /// Uses `1/shares` of `tier`'s budget (at least one request a minute per class).
    pub fn set_tier_share(&self, tier: RateTier, shares: u32) {
        let shares = shares.max(1);
        let mut current = self.tier.lock().unwrap_or_else(|p| p.into_inner());
        if *current == Some((tier, shares)) {
            return;
        }
        let limits = tier.per_minute();
        self.read.resize(limits.map(|l| share_of(l.0, shares)));
        self.write.resize(limits.map(|l| share_of(l.1, shares)));
        *current = Some((tier, shares));
    }

    pub fn tier(&self) -> RateTier {
        (*self.tier.lock().unwrap_or_else(|p| p.into_inner()))
            .map_or(RateTier::Standard, |(t, _)| t)
    }

    fn shares(&self) -> u32 {
        (*self.tier.lock().unwrap_or_else(|p| p.into_inner())).map_or(1, |(_, s)| s)
    }

    fn bucket(&self, class: Class) -> &ClassBucket {
        match class {
            Class::Read => &self.read,
            Class::Write => &self.write,
        }
    }

    /// Waits for a token of `class`; returns how long it waited, or `Err(left)` without
    /// waiting when the class is paused for `LONG_PAUSE` or more.
    pub async fn acquire(&self, class: Class) -> Result<Duration, Duration> {
        let start = Instant::now();
        self.bucket(class).acquire().await?;
        Ok(start.elapsed())
    }

    /// Makes every caller of `class` wait `for_` (a 429's Retry-After).
    pub fn pause(&self, class: Class, for_: Duration) {
        self.bucket(class).pause(for_);
    }
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets::new()
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_long_pause_is_reported_not_waited_out() {
        let b = super::Buckets::new();
        b.pause(super::Class::Write, std::time::Duration::from_secs(7200));
        let left = b.acquire(super::Class::Write).await.unwrap_err();
        assert!(left > std::time::Duration::from_secs(7000));
        assert!(
            b.acquire(super::Class::Read).await.is_ok(),
            "reads are not paused"
        );
    }

    use super::*;

    #[test]
    fn shards_sharing_a_key_split_its_budget() {
        assert_eq!(share_of(600, 1), 600);
        assert_eq!(share_of(600, 2), 300);
        assert_eq!(share_of(60, 3), 20);
        assert_eq!(share_of(1, 4), 1, "never zero");
        // Two shards' buckets together stay within the server's capacity.
        assert!(2 * client_burst(share_of(600, 2)) <= 600);
    }

    #[test]
    fn burst_stays_below_the_server_capacity() {
        assert_eq!(client_burst(60), 58);
        assert_eq!(client_burst(120), 118);
        assert_eq!(client_burst(600), 594);
        assert_eq!(client_burst(3000), 2970);
        assert_eq!(client_burst(2), 1);
    }

    #[tokio::test]
    async fn burst_is_immediate_then_paced_at_the_refill_rate() {
        let b = Buckets::new();
        b.set_tier(RateTier::Pilot); // write: 600/min -> burst 594, 10 per second
        let start = Instant::now();
        for _ in 0..594 {
            b.acquire(Class::Write).await.unwrap();
        }
        assert!(start.elapsed() < Duration::from_millis(200));
        let paced = Instant::now();
        for _ in 0..5 {
            b.acquire(Class::Write).await.unwrap();
        }
        let waited = paced.elapsed();
        assert!(waited >= Duration::from_millis(400), "{waited:?}");
        assert!(waited < Duration::from_millis(900), "{waited:?}");
        // The read class has its own bucket.
        let read = Instant::now();
        b.acquire(Class::Read).await.unwrap();
        assert!(read.elapsed() < Duration::from_millis(50));
    }

    #[tokio::test]
    async fn a_pause_holds_every_caller_of_the_class() {
        let b = Buckets::new();
        b.set_tier(RateTier::Unlimited);
        b.pause(Class::Write, Duration::from_millis(300));
        let start = Instant::now();
        b.acquire(Class::Read).await.unwrap();
        assert!(start.elapsed() < Duration::from_millis(100));
        b.acquire(Class::Write).await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn same_credential_shares_buckets_and_same_tier_keeps_state() {
        let key = Secret::new("lp_live_ratelimit_test_key");
        let a = Buckets::shared("http://127.0.0.1:9/", &key);
        let b = Buckets::shared("http://127.0.0.1:9", &key);
        assert!(Arc::ptr_eq(&a, &b));
        let other = Buckets::shared("http://127.0.0.1:9", &Secret::new("lp_live_other"));
        assert!(!Arc::ptr_eq(&a, &other));
        a.set_tier(RateTier::Standard);
        let before = a.write.limiter.read().unwrap().clone().unwrap();
        a.set_tier(RateTier::Standard);
        let after = a.write.limiter.read().unwrap().clone().unwrap();
        assert!(
            Arc::ptr_eq(&before, &after),
            "same tier must not reset the bucket"
        );
        a.set_tier(RateTier::Unlimited);
        assert!(a.write.limiter.read().unwrap().is_none());
    }
}
