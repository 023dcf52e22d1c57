//! Tiers and per-(key, endpoint class) token buckets (§3.4 of the API reference).
use std::collections::HashMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    #[default]
    Standard,
    Pilot,
    Partner,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    Read,
    Write,
}

impl Class {
    pub fn of(method: &http::Method) -> Class {
        if method == http::Method::GET || method == http::Method::HEAD {
            Class::Read
        } else {
            Class::Write
        }
    }
    pub fn header_name(self) -> &'static str {
        match self {
            Class::Read => "read-light",
            Class::Write => "write-light",
        }
    }
}

/// What the limiter said about one request; `retry_after` is set when it was refused.
#[derive(Debug, Clone, Copy)]
pub struct Verdict {
    pub limit: u32,
    pub remaining: u32,
    pub reset_secs: u64,
    pub retry_after: Option<u64>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Default)]
pub struct Limiter {
    buckets: HashMap<(Uuid, Class), Bucket>,
}

impl Limiter {
    /// Takes one token from the bucket of (key, class). Capacity = per-minute limit,
    /// refill = limit / 60 tokens per second.
    pub fn take(&mut self, tier: Tier, key: Uuid, class: Class, now: Instant) -> Option<Verdict> {
        let limit = tier.per_minute(class)?;
        let cap = f64::from(limit);
        let rate = cap / 60.0;
        let b = self.buckets.entry((key, class)).or_insert(Bucket {
            tokens: cap,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(cap);
        b.last = now;
        let retry_after = if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            None
        } else {
            Some(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        };
        Some(Verdict {
            limit,
            remaining: b.tokens.floor() as u32,
            reset_secs: ((cap - b.tokens) / rate).ceil() as u64,
            retry_after,
        })
    }

    pub fn clear(&mut self) {
        self.buckets.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn standard_write_bucket_refuses_the_61st_and_refills() {
        let mut l = Limiter::default();
        let k = Uuid::new_v4();
        let t0 = Instant::now();
        for i in 0..60 {
            let v = l.take(Tier::Standard, k, Class::Write, t0).unwrap();
            assert!(v.retry_after.is_none(), "request {i} refused");
        }
        let v = l.take(Tier::Standard, k, Class::Write, t0).unwrap();
        assert_eq!(v.retry_after, Some(1));
        assert_eq!(v.remaining, 0);
        // reads have their own bucket
        assert!(
            l.take(Tier::Standard, k, Class::Read, t0)
                .unwrap()
                .retry_after
                .is_none()
        );
        let later = t0 + Duration::from_secs(1);
        assert!(
            l.take(Tier::Standard, k, Class::Write, later)
                .unwrap()
                .retry_after
                .is_none()
        );
        assert!(l.take(Tier::Unlimited, k, Class::Write, t0).is_none());
    }
}
