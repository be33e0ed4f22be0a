//! Dates and times for the emulator, without a date library: UTC only, which is all LiteLLM's admin API shows.

use std::time::{SystemTime, UNIX_EPOCH};

/// A moment in UTC, in whole milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Instant(i64);

impl Instant {
    pub(crate) fn now() -> Self {
        // A clock before 1970 is not worth an error path: it reads as the epoch.
        let millis = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        Instant(i64::try_from(millis).unwrap_or(i64::MAX))
    }

    #[cfg(test)]
    pub(crate) fn from_millis(millis: i64) -> Self {
        Instant(millis)
    }

    fn days_and_millis(self) -> (i64, i64) {
        (self.0.div_euclid(DAY_MS), self.0.rem_euclid(DAY_MS))
    }

    /// `2026-11-26T23:41:54.971000Z`, the way LiteLLM prints `created_at` (milliseconds padded to six digits).
    pub(crate) fn timestamp(self) -> String {
        let (days, ms) = self.days_and_millis();
        let (y, m, d) = civil_from_days(days);
        let (h, min, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{frac:03}000Z")
    }

    /// `2026-12-01T00:00:00Z`, the way LiteLLM prints `budget_reset_at`.
    fn whole_seconds(self) -> String {
        let mut stamp = self.timestamp();
        stamp.truncate(19);
        stamp.push('Z');
        stamp
    }

    /// The date, `YYYY-MM-DD`.
    #[cfg(test)]
    pub(crate) fn date(self) -> String {
        let (y, m, d) = civil_from_days(self.days_and_millis().0);
        format!("{y:04}-{m:02}-{d:02}")
    }
}

const DAY_MS: i64 = 86_400_000;

/// Whether `text` is a real calendar date written `YYYY-MM-DD`.
pub(crate) fn is_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return false;
    }
    let digits = |range: std::ops::Range<usize>| text.get(range).and_then(|part| part.parse::<i64>().ok());
    match (digits(0..4), digits(5..7), digits(8..10)) {
        (Some(y), Some(m), Some(d)) => (1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m),
        _ => false,
    }
}

/// A budget period as LiteLLM's duration parser reads it: a number and `s`, `m` (minutes), `h`, `d`, `w` or `mo`,
/// or one of the words `hourly`, `daily`, `weekly`, `monthly`. A bare number is seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Period {
    Seconds(i64),
    Minutes(i64),
    Hours(i64),
    Days(i64),
    Weeks(i64),
    Months(i64),
}

impl Period {
    pub(crate) fn parse(text: &str) -> Option<Period> {
        match text {
            "hourly" => return Some(Period::Hours(1)),
            "daily" => return Some(Period::Days(1)),
            "weekly" => return Some(Period::Weeks(1)),
            "monthly" => return Some(Period::Months(1)),
            _ => {}
        }
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let n: i64 = number.parse().ok()?;
        Some(match unit {
            "" | "s" => Period::Seconds(n),
            "m" => Period::Minutes(n),
            "h" => Period::Hours(n),
            "d" => Period::Days(n),
            "w" => Period::Weeks(n),
            "mo" => Period::Months(n),
            _ => return None,
        })
    }

    /// Newer proxies refuse a `budget_duration` without a unit or with a zero length ("30" is refused, "30d" is
    /// not); older ones store anything.
    pub(crate) fn is_valid_budget_duration(text: &str) -> bool {
        let has_unit = text.ends_with(|c: char| c.is_ascii_alphabetic());
        match Period::parse(text) {
            Some(
                Period::Seconds(n)
                | Period::Minutes(n)
                | Period::Hours(n)
                | Period::Days(n)
                | Period::Weeks(n)
                | Period::Months(n),
            ) => has_unit && n > 0,
            None => false,
        }
    }
}

/// When a budget with this duration resets next, roughly as LiteLLM standardises it: whole days and longer
/// reset at midnight UTC, `30d` and months on the first of a month (observed: on 2026-11-27 both `1d` and an
/// unparseable value gave 2026-11-28, `30d` gave 2026-12-01), shorter periods at the next multiple of the period.
/// Only its presence is compared with the real proxies, so the edge cases need not match to the second.
pub(crate) fn budget_reset_at(duration: &str, now: Instant) -> String {
    let (days, ms) = now.days_and_millis();
    let midnight = |day: i64| Instant(day * DAY_MS).whole_seconds();
    let first_of_month_after = |months: i64| {
        let (y, m, _) = civil_from_days(days);
        let index = y * 12 + (m - 1) + months.max(1);
        midnight(days_from_civil(index.div_euclid(12), index.rem_euclid(12) + 1, 1))
    };
    match Period::parse(duration) {
        Some(Period::Seconds(n)) if n > 0 => Instant(now.0 + n * 1000).whole_seconds(),
        Some(Period::Minutes(n)) if n > 0 => next_multiple(now, n * 60_000),
        Some(Period::Hours(n)) if n > 0 => {
            let step = n * 3_600_000;
            Instant(days * DAY_MS + ((ms / step + 1) * step).min(DAY_MS)).whole_seconds()
        }
        Some(Period::Days(30)) => first_of_month_after(1),
        Some(Period::Days(n)) if n > 0 => midnight(days + n),
        // 1970-01-01 was a Thursday; weeks start on Monday.
        Some(Period::Weeks(n)) if n > 0 => midnight(days - (days + 3).rem_euclid(7) + 7 * n),
        Some(Period::Months(n)) => first_of_month_after(n),
        _ => midnight(days + 1),
    }
}

/// The first multiple of `step_ms` (counted from the epoch) after `now`.
fn next_multiple(now: Instant, step_ms: i64) -> String {
    Instant((now.0 / step_ms + 1) * step_ms).whole_seconds()
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-27T10:15:30.250Z
    const NOW: i64 = 1_795_774_530_250;

    #[test]
    fn prints_like_litellm() {
        let now = Instant::from_millis(NOW);
        assert_eq!(now.timestamp(), "2026-11-27T10:15:30.250000Z");
        assert_eq!(now.date(), "2026-11-27");
        assert_eq!(Instant::from_millis(0).timestamp(), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn resets_like_the_observed_proxies() {
        let now = Instant::from_millis(NOW);
        assert_eq!(budget_reset_at("30d", now), "2026-12-01T00:00:00Z");
        assert_eq!(budget_reset_at("1d", now), "2026-11-28T00:00:00Z");
        assert_eq!(budget_reset_at("nonsense", now), "2026-11-28T00:00:00Z");
        assert_eq!(budget_reset_at("1mo", now), "2026-12-01T00:00:00Z");
        assert_eq!(budget_reset_at("2mo", now), "2027-01-01T00:00:00Z");
        assert_eq!(budget_reset_at("1h", now), "2026-11-27T11:00:00Z");
        assert_eq!(budget_reset_at("15m", now), "2026-11-27T10:30:00Z");
        assert_eq!(budget_reset_at("1w", now), "2026-11-30T00:00:00Z"); // the next Monday
    }

    #[test]
    fn validates_dates_and_durations() {
        assert!(is_date("2025-01-31") && is_date("2024-02-29"));
        assert!(!is_date("2025-02-29") && !is_date("bad") && !is_date("2025-1-01") && !is_date("2025-13-01"));
        assert!(Period::is_valid_budget_duration("30d") && Period::is_valid_budget_duration("1mo"));
        assert!(Period::is_valid_budget_duration("monthly"));
        assert!(!Period::is_valid_budget_duration("30") && !Period::is_valid_budget_duration("0d"));
        assert!(!Period::is_valid_budget_duration("d") && !Period::is_valid_budget_duration("3x"));
        assert_eq!(days_from_civil(2026, 11, 27), civil_days(2026, 11, 27));
    }

    fn civil_days(y: i64, m: i64, d: i64) -> i64 {
        (0..100_000).find(|&days| civil_from_days(days) == (y, m, d)).unwrap_or(-1)
    }
}
