//! The simulator's clock and timestamp formats (organizations use `…000000+00:00`,
//! everything else `…000Z`).
//!
//! Every time-dependent rule (idempotency window, key and secret grace, rate-limit buckets,
//! daily caps, monthly periods, timestamps) reads [`crate::model::State::now`], which is the
//! wall clock plus the offset that `POST /_sim/clock` advances. Nothing else reads the wall clock.
use jiff::{Timestamp, tz::TimeZone};

pub const DAY_US: i64 = 86_400 * 1_000_000;

/// The wall clock; only `State::now` may call it (plus the offset).
pub fn wall_now_us() -> i64 {
    Timestamp::now().as_microsecond()
}

/// Start of the UTC calendar month containing `us`, and the start of the next one.
pub fn month_bounds(us: i64) -> (i64, i64) {
    let dt = civil(us);
    let start = jiff::civil::date(dt.year(), dt.month(), 1);
    let next = if dt.month() == 12 {
        jiff::civil::date(dt.year() + 1, 1, 1)
    } else {
        jiff::civil::date(dt.year(), dt.month() + 1, 1)
    };
    let at = |d: jiff::civil::Date| {
        d.to_zoned(TimeZone::UTC)
            .map(|z| z.timestamp().as_microsecond())
            .unwrap_or(0)
    };
    (at(start), at(next))
}

fn civil(us: i64) -> jiff::civil::DateTime {
    Timestamp::from_microsecond(us)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_zoned(TimeZone::UTC)
        .datetime()
}

fn date_part(dt: &jiff::civil::DateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

/// Organization style: microseconds with an explicit `+00:00` offset.
pub fn fmt_org(us: i64) -> String {
    let dt = civil(us);
    format!("{}.{:06}+00:00", date_part(&dt), us.rem_euclid(1_000_000))
}

/// Everything else: milliseconds with a `Z` suffix.
pub fn fmt_z(us: i64) -> String {
    let dt = civil(us);
    format!("{}.{:03}Z", date_part(&dt), us.rem_euclid(1_000_000) / 1000)
}

/// Input timestamps must end in `Z`; offsets are rejected as the docs say.
pub fn parse_z(s: &str) -> Option<i64> {
    if !s.ends_with('Z') {
        return None;
    }
    s.parse::<Timestamp>().ok().map(|t| t.as_microsecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let us = 1_780_324_200_123_456; // 2026-06-01T14:30:00.123456Z
        assert_eq!(fmt_org(us), "2026-06-01T14:30:00.123456+00:00");
        assert_eq!(fmt_z(us), "2026-06-01T14:30:00.123Z");
        assert_eq!(parse_z("2026-06-01T14:30:00.123456Z"), Some(us));
        assert_eq!(parse_z("2026-06-01T14:30:00+00:00"), None);
        let (a, b) = month_bounds(us);
        assert_eq!(fmt_z(a), "2026-06-01T00:00:00.000Z");
        assert_eq!(fmt_z(b), "2026-07-01T00:00:00.000Z");
        let dec = parse_z("2026-12-31T23:59:59Z").unwrap();
        assert_eq!(fmt_z(month_bounds(dec).1), "2027-01-01T00:00:00.000Z");
    }
}
