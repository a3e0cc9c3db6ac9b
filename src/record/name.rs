//! Recording file names: `{app}_{stream}_{YYYYMMDD}_{HHMMSS}.flv` in UTC, from the stream
//! key and the start time, with anything unsafe in a file name replaced by `_`.

use std::time::SystemTime;

use crate::util::time::Civil;

/// Longest app and stream parts kept, so a 512-byte stream name still fits the usual
/// 255-byte file name limit with the date and a collision suffix.
const MAX_APP: usize = 64;
const MAX_STREAM: usize = 128;

/// Keeps ASCII letters, digits, `-`, `_` and `.`; anything else (`/`, spaces, non-ASCII,
/// shell metacharacters) becomes `_`, so the name stays one harmless path component.
pub fn sanitize(part: &str, max: usize) -> String {
    let s: String = part
        .chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "_".to_string()
    } else {
        s
    }
}

/// The file name without collision suffix or extension, for stream key `app/name`.
pub fn base_name(key: &str, started: SystemTime) -> String {
    let (app, stream) = key.split_once('/').unwrap_or(("", key));
    format!(
        "{}_{}_{}",
        sanitize(app, MAX_APP),
        sanitize(stream, MAX_STREAM),
        Civil::from_system(started).stamp()
    )
}

/// The n-th candidate for a base name: `base.flv`, then `base_1.flv`, `base_2.flv`...
pub fn candidate(base: &str, n: u32) -> String {
    if n == 0 {
        format!("{base}.flv")
    } else {
        format!("{base}_{n}.flv")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use std::time::UNIX_EPOCH;

    #[test]
    fn civil_dates() {
        let c = |s| Civil::from_unix(s).stamp();
        assert_eq!(c(0), "19700101_000000");
        assert_eq!(c(86_399), "19700101_235959");
        assert_eq!(c(-1), "19691231_235959");
        // Leap days: 2000 is a leap year (divisible by 400), 1900 and 2100 are not.
        assert_eq!(c(951_782_400), "20000229_000000");
        assert_eq!(c(951_868_800), "20000301_000000");
        assert_eq!(c(4_107_456_000), "21000228_000000");
        assert_eq!(c(4_107_542_400), "21000301_000000");
        assert_eq!(c(-2_203_977_600), "19000228_000000");
        assert_eq!(c(-2_203_891_200), "19000301_000000");
        assert_eq!(
            c(1_709_164_800 + 12 * 3600 + 34 * 60 + 56),
            "20240229_123456"
        );
        assert_eq!(c(1_735_689_599), "20241231_235959");
        assert_eq!(c(1_735_689_600), "20250101_000000");
        // Past 2038 and u32 seconds.
        assert_eq!(c(4_294_967_296), "21060207_062816");
        assert_eq!(c(253_402_300_799), "99991231_235959");
    }

    #[test]
    fn civil_matches_a_day_by_day_walk() {
        // Walk 1970..2400 one day at a time with plain month lengths.
        let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
        for day in 0..(430 * 366) {
            let got = Civil::from_unix(day * 86_400);
            assert_eq!((got.year, got.month, got.day), (y, m, d), "day {day}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn names() {
        let t = UNIX_EPOCH + Duration::from_secs(1_709_164_800 + 45_296);
        assert_eq!(base_name("live/test", t), "live_test_20240229_123456");
        assert_eq!(
            base_name("live/a/b c?d*é", t),
            "live_a_b_c_d___20240229_123456"
        );
        assert_eq!(base_name("live/../x", t), "live_.._x_20240229_123456");
        assert_eq!(candidate("x", 0), "x.flv");
        assert_eq!(candidate("x", 2), "x_2.flv");
        let long = "n".repeat(600);
        assert!(base_name(&format!("live/{long}"), t).len() < 220);
        assert_eq!(sanitize("", 10), "_");
    }
}
