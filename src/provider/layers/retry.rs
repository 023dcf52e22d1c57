//! When to re-send a request, and how long to wait first.

use std::time::Duration;

use crate::provider::error::ProviderError;

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub max_retry_time: Duration,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// Full-jitter exponential backoff after failed attempt number `attempt` (1-based):
    /// uniform in [0, min(max_delay, base * 2^(attempt-1))], but never shorter than the
    /// server's `Retry-After`. `unit` is a random number in [0, 1).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        let exp = 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
        let ceiling = (self.base_delay.as_secs_f64() * exp).min(self.max_delay.as_secs_f64());
        let jittered = Duration::from_secs_f64(ceiling * unit.clamp(0.0, 1.0));
        match retry_after {
            Some(ra) => ra.max(jittered),
            None => jittered,
        }
    }

    /// Whether to send attempt `attempt + 1` after `err`. `retry_safe` is true only for
    /// requests idempotent by method or state, or carrying an idempotency key.
    pub fn should_retry(
        &self,
        err: &ProviderError,
        retry_safe: bool,
        attempt: u32,
        elapsed: Duration,
        delay: Duration,
    ) -> bool {
        retry_safe
            && err.is_retryable()
            && attempt < self.max_attempts
            && elapsed + delay <= self.max_retry_time
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::error::ApiFailure;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            max_retry_time: Duration::from_secs(30),
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }

    fn server_error() -> ProviderError {
        ProviderError::from_api(ApiFailure {
            status: 500,
            code: "INTERNAL".into(),
            message: String::new(),
            request_id: None,
            retry_after: None,
        })
    }

    #[test]
    fn backoff_grows_exponentially_within_the_cap() {
        let p = policy();
        assert_eq!(
            p.delay(1, None, 0.999_999),
            Duration::from_secs_f64(0.1 * 0.999_999)
        );
        assert!(p.delay(3, None, 1.0) <= Duration::from_millis(400));
        assert!(p.delay(3, None, 1.0) > Duration::from_millis(399));
        // Capped at max_delay however many attempts.
        assert_eq!(p.delay(40, None, 1.0), Duration::from_secs(2));
        // Full jitter: the lower end is zero.
        assert_eq!(p.delay(4, None, 0.0), Duration::ZERO);
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = policy();
        let ra = Some(Duration::from_secs(3));
        assert_eq!(p.delay(1, ra, 0.5), Duration::from_secs(3));
        assert_eq!(
            p.delay(1, Some(Duration::ZERO), 1.0),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn only_safe_requests_are_retried_and_within_bounds() {
        let p = policy();
        let err = server_error();
        let d = Duration::from_millis(10);
        assert!(p.should_retry(&err, true, 1, Duration::ZERO, d));
        assert!(
            !p.should_retry(&err, false, 1, Duration::ZERO, d),
            "unkeyed write"
        );
        assert!(
            !p.should_retry(&err, true, 5, Duration::ZERO, d),
            "attempts"
        );
        assert!(
            !p.should_retry(&err, true, 2, Duration::from_secs(30), d),
            "total time"
        );
        let invalid = ProviderError::Invalid("x".into());
        assert!(!p.should_retry(&invalid, true, 1, Duration::ZERO, d));
    }
}
