//! When to look at an object again: jittered resync, per-object exponential backoff.
use rand::Rng;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// "Needs a human or new credentials": retry rarely; a spec or provider change
/// triggers a reconcile anyway.
pub const SLOW: Duration = Duration::from_secs(300);
pub const SOON: Duration = Duration::from_secs(1);

/// `d` ±10 %, so objects created together do not resync together.
pub fn jitter(d: Duration) -> Duration {
    let factor = rand::rng().random_range(0.9..=1.1);
    d.mul_f64(factor)
}

/// Consecutive failures per object; reset on success.
#[derive(Debug)]
pub struct Backoff<K> {
    failures: Mutex<HashMap<K, u32>>,
}

impl<K: Eq + Hash> Default for Backoff<K> {
    fn default() -> Self {
        Backoff {
            failures: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash> Backoff<K> {
    /// Records a failure and returns how long to wait: 1 s, 2 s, 4 s ... capped at 5 min,
    /// each with jitter.
    pub fn failed(&self, key: K) -> Duration {
        let n = {
            let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(key).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        jitter(backoff_delay(n))
    }

    pub fn succeeded(&self, key: &K) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key);
    }

    pub fn failures(&self, key: &K) -> u32 {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).copied().unwrap_or(0)
    }
}

/// Delay before the retry that follows the `n`-th consecutive failure (n >= 1).
pub fn backoff_delay(n: u32) -> Duration {
    let exp = n.saturating_sub(1).min(20);
    BACKOFF_BASE.saturating_mul(1u32 << exp).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent_and_varies() {
        let base = Duration::from_secs(600);
        let samples: Vec<Duration> = (0..200).map(|_| jitter(base)).collect();
        assert!(
            samples
                .iter()
                .all(|d| *d >= Duration::from_secs(540) && *d <= Duration::from_secs(660))
        );
        let first = samples[0];
        assert!(samples.iter().any(|d| *d != first), "no spread at all");
    }

    #[test]
    fn backoff_grows_caps_and_resets_per_object() {
        assert_eq!(backoff_delay(1), Duration::from_secs(1));
        assert_eq!(backoff_delay(2), Duration::from_secs(2));
        assert_eq!(backoff_delay(5), Duration::from_secs(16));
        assert_eq!(backoff_delay(30), BACKOFF_MAX);
        let b = Backoff::default();
        let d1 = b.failed("a");
        let d2 = b.failed("a");
        let d3 = b.failed("a");
        assert!(d1 <= Duration::from_millis(1100));
        assert!(
            d3 >= Duration::from_millis(3600) && d3 <= Duration::from_millis(4400),
            "{d2:?} {d3:?}"
        );
        assert_eq!(b.failures(&"b"), 0);
        assert!(b.failed("b") <= Duration::from_millis(1100));
        b.succeeded(&"a");
        assert_eq!(b.failures(&"a"), 0);
        assert!(b.failed("a") <= Duration::from_millis(1100));
    }
}
