//! Tiers, endpoint classes and the limiter (§3.4 of the API reference): per-minute limits per
//! (API key, endpoint class) and a daily write-light cap per key, all on the simulator's clock.
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::time::DAY_US;

const MINUTE_US: i64 = 60_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    #[default]
    Standard,
    Pilot,
    Partner,
    /// Not a documented tier: no limits at all, for benchmarks and tests only (assumed).
    Unlimited,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Standard => "standard",
            Tier::Pilot => "pilot",
            Tier::Partner => "partner",
            Tier::Unlimited => "unlimited",
        }
    }

    /// Requests per minute for a class; `None` means unlimited.
    pub fn per_minute(self, class: Class) -> Option<u32> {
        let (read, write) = match self {
            Tier::Standard => (120, 60),
            Tier::Pilot => (1200, 600),
            Tier::Partner => (6000, 3000),
            Tier::Unlimited => return None,
        };
        Some(match class {
            Class::Read => read,
            Class::Write => write,
        })
    }

    /// The documented daily write-light cap; `None` for reads and for `unlimited`.
    pub fn per_day(self, class: Class) -> Option<u32> {
        if class != Class::Write {
            return None;
        }
        match self {
            Tier::Standard => Some(10_000),
            Tier::Pilot => Some(100_000),
            Tier::Partner => Some(500_000),
            Tier::Unlimited => None,
        }
    }
}

impl std::str::FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "standard" => Ok(Tier::Standard),
            "pilot" => Ok(Tier::Pilot),
            "partner" => Ok(Tier::Partner),
            "unlimited" => Ok(Tier::Unlimited),
            other => Err(format!("unknown tier {other:?}")),
        }
    }
}

/// How the per-minute limit is enforced. The docs say "bucket" without details, so both are
/// assumptions; the token bucket is the default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Capacity = the per-minute limit, refilled continuously at limit/60 per second.
    #[default]
    TokenBucket,
    /// At most `limit` requests per clock minute (windows start on whole minutes).
    FixedWindow,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::TokenBucket => "token-bucket",
            Algorithm::FixedWindow => "fixed-window",
        }
    }
}

pub use sim_kit::Class;

/// The `X-RateLimit-Endpoint-Class` value (and `details.endpointClass`) of a class.
pub fn class_name(class: Class) -> &'static str {
    match class {
        Class::Read => "read-light",
        Class::Write => "write-light",
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Minute,
    Day,
}

/// The daily cap's state after one request.
#[derive(Debug, Clone, Copy)]
pub struct Daily {
    pub limit: u32,
    pub remaining: u32,
    pub reset_secs: u64,
}

/// What the limiter said about one request; `retry_after` is set when it was refused.
#[derive(Debug, Clone, Copy)]
pub struct Verdict {
    pub limit: u32,
    pub remaining: u32,
    pub reset_secs: u64,
    pub daily: Option<Daily>,
    pub retry_after: Option<u64>,
    pub refused_by: Option<Window>,
}

struct Bucket {
    tokens: f64,
    last_us: i64,
}

struct FixedWin {
    window: i64,
    used: u32,
}

struct DayCount {
    day: i64,
    used: u32,
}

/// One request to count: the key (daily cap), the bucket it draws on (the key itself, or an
/// organization with `--rate-limit-scope child-org`), its class, and the token-bucket
/// capacity when `--rate-limit-burst` replaces the per-minute limit.
#[derive(Debug, Clone, Copy)]
pub struct Take {
    pub key: Uuid,
    pub bucket: Uuid,
    pub class: Class,
    pub burst: Option<u32>,
}

#[cfg(test)]
impl Take {
    /// A request counted on its own key's bucket with the documented capacity.
    pub fn on_key(key: Uuid, class: Class) -> Take {
        Take {
            key,
            bucket: key,
            class,
            burst: None,
        }
    }
}

#[derive(Default)]
pub struct Limiter {
    algorithm: Algorithm,
    /// Replaces the tier's daily write cap (`--daily-write-cap`, test-only).
    daily_override: Option<u32>,
    buckets: HashMap<(Uuid, Class), Bucket>,
    windows: HashMap<(Uuid, Class), FixedWin>,
    days: HashMap<Uuid, DayCount>,
}

/// A token bucket's capacity (the burst, else the per-minute limit) and refill per second.
fn bucket_shape(limit: u32, burst: Option<u32>) -> (f64, f64) {
    (
        f64::from(burst.unwrap_or(limit).max(1)),
        f64::from(limit) / 60.0,
    )
}

fn ceil_secs(us: i64) -> u64 {
    (us.max(0) as u64).div_ceil(1_000_000)
}

impl Limiter {
    pub fn new(algorithm: Algorithm, daily_override: Option<u32>) -> Limiter {
        Limiter {
            algorithm,
            daily_override,
            ..Limiter::default()
        }
    }

    /// Counts one request of (key, class) at simulator time `now_us`. The daily cap is checked
    /// first (a refused request does not use a per-minute slot); a request refused by the
    /// per-minute limit does not count against the day. Days are UTC calendar days.
    pub fn take(&mut self, tier: Tier, t: Take, now_us: i64) -> Option<Verdict> {
        let (key, class) = (t.key, t.class);
        let limit = tier.per_minute(class)?;
        let day = now_us.div_euclid(DAY_US);
        let day_reset = ceil_secs((day + 1) * DAY_US - now_us);
        let cap = tier
            .per_day(class)
            .map(|c| self.daily_override.unwrap_or(c));
        let daily_used = cap.map(|cap| {
            let d = self.days.entry(key).or_insert(DayCount { day, used: 0 });
            if d.day != day {
                *d = DayCount { day, used: 0 };
            }
            (cap, d.used)
        });
        if let Some((cap, used)) = daily_used
            && used >= cap
        {
            let (remaining, reset_secs) = self.peek_minute(limit, &t, now_us);
            return Some(Verdict {
                limit,
                remaining,
                reset_secs,
                daily: Some(Daily {
                    limit: cap,
                    remaining: 0,
                    reset_secs: day_reset,
                }),
                retry_after: Some(day_reset.max(1)),
                refused_by: Some(Window::Day),
            });
        }
        let (remaining, reset_secs, retry_after) = self.take_minute(limit, &t, now_us);
        let daily = daily_used.map(|(cap, used)| {
            let used = if retry_after.is_none() {
                if let Some(d) = self.days.get_mut(&key) {
                    d.used += 1;
                }
                used + 1
            } else {
                used
            };
            Daily {
                limit: cap,
                remaining: cap.saturating_sub(used),
                reset_secs: day_reset,
            }
        });
        Some(Verdict {
            limit,
            remaining,
            reset_secs,
            daily,
            retry_after,
            refused_by: retry_after.map(|_| Window::Minute),
        })
    }

    /// (remaining, reset) of the per-minute limit without taking anything.
    fn peek_minute(&mut self, limit: u32, t: &Take, now_us: i64) -> (u32, u64) {
        let (burst, key, class) = (t.burst, t.bucket, t.class);
        match self.algorithm {
            Algorithm::TokenBucket => {
                let (cap, rate) = bucket_shape(limit, burst);
                let tokens = self.buckets.get(&(key, class)).map_or(cap, |b| {
                    let elapsed = (now_us - b.last_us).max(0) as f64 / 1e6;
                    (b.tokens + elapsed * rate).min(cap)
                });
                (tokens.floor() as u32, ((cap - tokens) / rate).ceil() as u64)
            }
            Algorithm::FixedWindow => {
                let window = now_us.div_euclid(MINUTE_US);
                let used = self
                    .windows
                    .get(&(key, class))
                    .filter(|w| w.window == window)
                    .map_or(0, |w| w.used);
                let reset = if used == 0 {
                    0
                } else {
                    ceil_secs((window + 1) * MINUTE_US - now_us)
                };
                (limit.saturating_sub(used), reset)
            }
        }
    }

    /// Takes one slot: (remaining, reset seconds, retry-after when refused).
    fn take_minute(&mut self, limit: u32, t: &Take, now_us: i64) -> (u32, u64, Option<u64>) {
        let (burst, key, class) = (t.burst, t.bucket, t.class);
        match self.algorithm {
            Algorithm::TokenBucket => {
                let (cap, rate) = bucket_shape(limit, burst);
                let b = self.buckets.entry((key, class)).or_insert(Bucket {
                    tokens: cap,
                    last_us: now_us,
                });
                let elapsed = (now_us - b.last_us).max(0) as f64 / 1e6;
                b.tokens = (b.tokens + elapsed * rate).min(cap);
                b.last_us = b.last_us.max(now_us);
                let retry_after = if b.tokens >= 1.0 {
                    b.tokens -= 1.0;
                    None
                } else {
                    Some(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
                };
                (
                    b.tokens.floor() as u32,
                    ((cap - b.tokens) / rate).ceil() as u64,
                    retry_after,
                )
            }
            Algorithm::FixedWindow => {
                let window = now_us.div_euclid(MINUTE_US);
                let w = self
                    .windows
                    .entry((key, class))
                    .or_insert(FixedWin { window, used: 0 });
                if w.window != window {
                    *w = FixedWin { window, used: 0 };
                }
                let until_next = ceil_secs((window + 1) * MINUTE_US - now_us).max(1);
                let retry_after = if w.used < limit {
                    w.used += 1;
                    None
                } else {
                    Some(until_next)
                };
                (limit.saturating_sub(w.used), until_next, retry_after)
            }
        }
    }

    pub fn clear(&mut self) {
        self.buckets.clear();
        self.windows.clear();
        self.days.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_780_000_000_000_000; // a whole second, mid-day UTC

    #[test]
    fn standard_write_bucket_refuses_the_61st_and_refills() {
        let mut l = Limiter::default();
        let k = Uuid::new_v4();
        for i in 0..60 {
            let v = l
                .take(Tier::Standard, Take::on_key(k, Class::Write), T0)
                .unwrap();
            assert!(v.retry_after.is_none(), "request {i} refused");
        }
        let v = l
            .take(Tier::Standard, Take::on_key(k, Class::Write), T0)
            .unwrap();
        assert_eq!(v.retry_after, Some(1));
        assert_eq!(v.refused_by, Some(Window::Minute));
        assert_eq!(v.remaining, 0);
        assert_eq!(v.daily.unwrap().remaining, 10_000 - 60);
        // reads have their own bucket and no daily cap
        let r = l
            .take(Tier::Standard, Take::on_key(k, Class::Read), T0)
            .unwrap();
        assert!(r.retry_after.is_none() && r.daily.is_none());
        assert!(
            l.take(
                Tier::Standard,
                Take::on_key(k, Class::Write),
                T0 + 1_000_000
            )
            .unwrap()
            .retry_after
            .is_none()
        );
        assert!(
            l.take(Tier::Unlimited, Take::on_key(k, Class::Write), T0)
                .is_none()
        );
    }

    #[test]
    fn a_small_burst_refills_at_the_documented_rate_and_buckets_can_be_per_org() {
        let mut l = Limiter::default();
        let (k, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let take = |l: &mut Limiter, bucket, t| {
            l.take(
                Tier::Standard,
                Take {
                    key: k,
                    bucket,
                    class: Class::Write,
                    burst: Some(3),
                },
                t,
            )
            .unwrap()
        };
        for _ in 0..3 {
            assert!(take(&mut l, a, T0).retry_after.is_none());
        }
        assert_eq!(take(&mut l, a, T0).retry_after, Some(1), "burst of 3");
        // Another org's bucket is untouched; the daily count is the key's.
        let v = take(&mut l, b, T0);
        assert!(v.retry_after.is_none());
        assert_eq!(v.daily.unwrap().remaining, 10_000 - 4);
        // 60/min refills one token a second.
        assert!(take(&mut l, a, T0 + 1_000_000).retry_after.is_none());
    }

    #[test]
    fn fixed_window_resets_on_the_minute() {
        let mut l = Limiter::new(Algorithm::FixedWindow, None);
        let k = Uuid::new_v4();
        let start = T0 - T0.rem_euclid(MINUTE_US) + 15_000_000; // :15 into a minute
        for _ in 0..60 {
            assert!(
                l.take(Tier::Standard, Take::on_key(k, Class::Write), start)
                    .unwrap()
                    .retry_after
                    .is_none()
            );
        }
        let v = l
            .take(Tier::Standard, Take::on_key(k, Class::Write), start)
            .unwrap();
        assert_eq!(v.retry_after, Some(45));
        let next = start + 45_000_000;
        let v = l
            .take(Tier::Standard, Take::on_key(k, Class::Write), next)
            .unwrap();
        assert!(v.retry_after.is_none());
        assert_eq!(v.remaining, 59);
    }

    #[test]
    fn daily_cap_refuses_until_utc_midnight() {
        let mut l = Limiter::default();
        let k = Uuid::new_v4();
        let mut t = T0;
        for _ in 0..10_000 {
            assert!(
                l.take(Tier::Standard, Take::on_key(k, Class::Write), t)
                    .unwrap()
                    .retry_after
                    .is_none()
            );
            t += 1_000_000; // 1/s stays within the minute limit
        }
        let v = l
            .take(Tier::Standard, Take::on_key(k, Class::Write), t)
            .unwrap();
        assert_eq!(v.refused_by, Some(Window::Day));
        let midnight = (t.div_euclid(DAY_US) + 1) * DAY_US;
        assert_eq!(v.retry_after, Some(ceil_secs(midnight - t)));
        let v = l
            .take(Tier::Standard, Take::on_key(k, Class::Write), midnight)
            .unwrap();
        assert!(v.retry_after.is_none());
        assert_eq!(v.daily.unwrap().remaining, 9_999);
    }
}
