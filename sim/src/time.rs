//! Timestamp formats: organizations use `…000000+00:00`, everything else `…000Z`.
use jiff::{Timestamp, tz::TimeZone};

pub fn now_us() -> i64 {
    Timestamp::now().as_microsecond()
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
    }
}
