//! One way to read and format time: milliseconds since the Unix epoch (what the
//! statistics core and the windows work in) and RFC 3339 text (what reports, triggers
//! and logs show).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The wall clock in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

/// A time in milliseconds since the epoch (negative before it), saturating.
pub fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The times RFC 3339 text can show here: from the epoch to the end of year 9999
/// (humantime formats nothing outside, and panics on times before the epoch).
pub const FORMATTABLE_MS: std::ops::RangeInclusive<i64> = 0..=253_402_300_799_999;

/// Milliseconds since the epoch as RFC 3339 (UTC, milliseconds); a time outside
/// [`FORMATTABLE_MS`] shows as the nearest end of it (event times outside it are
/// refused before they reach a window, so this is only a guard).
pub fn format_ms(ms: i64) -> String {
    let ms = ms.clamp(*FORMATTABLE_MS.start(), *FORMATTABLE_MS.end());
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())).to_string()
}

/// The current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_trip_through_rfc3339_on_both_sides_of_the_epoch() {
        for ms in [0, 1_733_300_000_123, *FORMATTABLE_MS.end()] {
            let text = format_ms(ms);
            let back = humantime::parse_rfc3339_weak(&text).map(to_ms).expect("rfc3339");
            assert_eq!(back, ms, "{text}");
        }
        assert_eq!(to_ms(UNIX_EPOCH - Duration::from_millis(1_500)), -1_500);
    }

    #[test]
    fn times_outside_what_rfc3339_can_show_are_clamped_never_a_panic() {
        assert_eq!(format_ms(-1_500), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(i64::MIN), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(i64::MAX), "9999-12-31T23:59:59.999Z");
    }
}
