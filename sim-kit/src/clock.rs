//! The simulator clock: wall time plus an offset that `POST /_sim/clock` moves forward,
//! so tests can expire tokens, invitations or idempotency keys without waiting.
use std::sync::atomic::{AtomicI64, Ordering};

use jiff::{Timestamp, tz::TimeZone};

#[derive(Debug, Default)]
pub struct Clock {
    offset_us: AtomicI64,
}

impl Clock {
    /// Microseconds since the Unix epoch, simulated.
    pub fn now_us(&self) -> i64 {
        Timestamp::now()
            .as_microsecond()
            .saturating_add(self.offset_us.load(Ordering::Relaxed))
    }

    pub fn offset_us(&self) -> i64 {
        self.offset_us.load(Ordering::Relaxed)
    }

    /// Moves the clock forward (never back).
    pub fn advance_us(&self, us: i64) {
        self.offset_us.fetch_add(us.max(0), Ordering::Relaxed);
    }
}

/// RFC 3339 UTC with whole seconds and `Z` (`2026-06-01T14:30:00Z`).
pub fn fmt_secs(us: i64) -> String {
    let ts = Timestamp::from_microsecond(us).unwrap_or(Timestamp::UNIX_EPOCH);
    ts.to_zoned(TimeZone::UTC)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// RFC 3339 UTC with milliseconds and `Z` (`2026-06-01T14:30:00.123Z`).
pub fn fmt_millis(us: i64) -> String {
    let ts = Timestamp::from_microsecond(us).unwrap_or(Timestamp::UNIX_EPOCH);
    ts.to_zoned(TimeZone::UTC)
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Parses an RFC 3339 timestamp with an offset or `Z`.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    s.parse::<Timestamp>().ok().map(|t| t.as_microsecond())
}

/// `us` plus whole calendar months (UTC).
pub fn add_months(us: i64, months: i32) -> i64 {
    let ts = Timestamp::from_microsecond(us).unwrap_or(Timestamp::UNIX_EPOCH);
    ts.to_zoned(TimeZone::UTC)
        .checked_add(jiff::Span::new().months(months))
        .map(|z| z.timestamp().as_microsecond())
        .unwrap_or(us)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_advance() {
        let us = 1_780_324_200_123_456; // 2026-06-01T14:30:00.123456Z
        assert_eq!(fmt_secs(us), "2026-06-01T14:30:00Z");
        assert_eq!(fmt_millis(us), "2026-06-01T14:30:00.123Z");
        assert_eq!(parse_rfc3339("2026-06-01T14:30:00.123456Z"), Some(us));
        assert_eq!(fmt_secs(add_months(us, 1)), "2026-07-01T14:30:00Z");
        let c = Clock::default();
        let before = c.now_us();
        c.advance_us(3_600_000_000);
        c.advance_us(-5);
        assert!(c.now_us() >= before + 3_600_000_000);
        assert_eq!(c.offset_us(), 3_600_000_000);
    }
}
