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

    /// This moment moved by `millis` (negative: back).
    pub(crate) fn plus_millis(self, millis: i64) -> Self {
        Instant(self.0.saturating_add(millis))
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

    /// `2026-12-01 21:14:22.311000+00:00`, Python's `str()` of an aware UTC datetime (no fraction when it is
    /// zero), as LiteLLM prints times inside error messages.
    pub(crate) fn python(self) -> String {
        let mut stamp = self.timestamp().replacen('T', " ", 1);
        stamp.truncate(if self.0.rem_euclid(1000) == 0 { 19 } else { 26 });
        stamp.push_str("+00:00");
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
    let first_of_month_after = |months: i64| first_of_month_after(now, months).whole_seconds();
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

/// Why a key's `duration` was refused. The messages are LiteLLM's; both generations answer them with a 500.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DurationError {
    /// Newer: no number at the start.
    #[error("Invalid duration format")]
    Invalid,
    /// Newer: a number without a unit it knows.
    #[error("Unsupported duration unit, passed duration: {0}")]
    UnsupportedUnit(String),
    /// Older: `Nmo` with N other than 1.
    #[error("Internal Server Error, Monthly resets currently only support 1 month intervals")]
    Months,
}

/// The number at the start of `text` and what follows it, as Python's `re.match(r"(\d+)…")` reads it.
fn leading_number(text: &str) -> Option<(i64, &str)> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, rest) = text.split_at(split);
    digits.parse().ok().map(|n| (n, rest))
}

/// When a key made now with this `duration` expires on newer proxies (1.108.7's `duration_in_seconds`): exactly
/// that long from now. `hourly`, `daily`, `weekly` and `monthly` are 1h, 24h, 7d and 30d; `Nmo` is N calendar
/// months; the number must come first and trailing text is ignored (`1h30m` is one hour).
pub(crate) fn expiry_exact(duration: &str, now: Instant) -> Result<Instant, DurationError> {
    let normalised = match duration.trim().to_lowercase().as_str() {
        "hourly" => "1h",
        "daily" => "24h",
        "weekly" => "7d",
        "monthly" => "30d",
        _ => duration,
    };
    let (n, unit) = leading_number(normalised).ok_or(DurationError::Invalid)?;
    if unit.starts_with("mo") {
        return Ok(shift_months(now, n));
    }
    let seconds = match unit.chars().next() {
        Some('s') => n,
        Some('m') => n * 60,
        Some('h') => n * 3600,
        Some('d') => n * 86_400,
        Some('w') => n * 604_800,
        _ => return Err(DurationError::UnsupportedUnit(duration.to_owned())),
    };
    Ok(now.plus_millis(seconds.saturating_mul(1000)))
}

/// The same moment `months` calendar months later, the day clamped to the length of that month.
fn shift_months(now: Instant, months: i64) -> Instant {
    let (days, ms) = now.days_and_millis();
    let (y, m, d) = civil_from_days(days);
    let index = y * 12 + (m - 1) + months;
    let (y, m) = (index.div_euclid(12), index.rem_euclid(12) + 1);
    Instant(days_from_civil(y, m, d.min(days_in_month(y, m))) * DAY_MS + ms)
}

/// When a key made now with this `duration` expires on older proxies (1.80.5's `get_next_standardized_reset_time`):
/// at the next boundary of the period, not a full period from now. `Ns`, `Nm` and `Nh` end at the next multiple of
/// N seconds, minutes or hours of the minute, hour or day; `1d` at midnight, `7d` on Monday, `30d` on the first of
/// the month, other `Nd` N midnights on; `1mo` on the first of the month. Zero means now; anything else (no number,
/// `w`, `30` without a unit) the next midnight.
pub(crate) fn expiry_standardised(duration: &str, now: Instant) -> Result<Instant, DurationError> {
    let (days, ms) = now.days_and_millis();
    let midnight = |day: i64| Instant(day * DAY_MS);
    let at = |hour: i64, minute: i64, second: i64| {
        // Past midnight rolls over to the next day only (1.80.5's "overnight case").
        let day = if hour >= 24 { days + 1 } else { days };
        Instant(day * DAY_MS + (hour % 24) * 3_600_000 + minute * 60_000 + second * 1000)
    };
    // `re.match(r"(\d+)([a-z]+)")`: a number, then at least one lower-case letter.
    let parsed = leading_number(duration).and_then(|(n, rest)| {
        let unit_len = rest.find(|c: char| !c.is_ascii_lowercase()).unwrap_or(rest.len());
        (unit_len > 0).then(|| (n, &rest[..unit_len]))
    });
    let Some((n, unit)) = parsed else { return Ok(midnight(days + 1)) };
    let next = |current: i64| current + n - current % n;
    let (hour, minute, second) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60);
    Ok(match unit {
        "mo" if n == 1 => first_of_month_after(now, 1),
        "mo" => return Err(DurationError::Months),
        "s" | "m" | "h" | "d" if n == 0 => now,
        "d" if n == 1 => midnight(days + 1),
        // 1970-01-01 was a Thursday; Python's weekday() is 0 on Monday.
        "d" if n == 7 => midnight(days + 7 - (days + 3).rem_euclid(7)),
        "d" if n == 30 => first_of_month_after(now, 1),
        "d" => midnight(days + n),
        "h" => at(next(hour), 0, 0),
        "m" => {
            let minutes = next(minute);
            at(hour + minutes / 60, minutes % 60, 0)
        }
        "s" => {
            let seconds = next(second);
            let minutes = minute + seconds / 60;
            at(hour + minutes / 60, minutes % 60, seconds % 60)
        }
        _ => midnight(days + 1),
    })
}

/// Midnight of the first day `months` (at least one) months after `now`'s month.
fn first_of_month_after(now: Instant, months: i64) -> Instant {
    let (y, m, _) = civil_from_days(now.days_and_millis().0);
    let index = y * 12 + (m - 1) + months.max(1);
    Instant(days_from_civil(index.div_euclid(12), index.rem_euclid(12) + 1, 1) * DAY_MS)
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
    fn newer_keys_expire_a_full_duration_from_now() {
        let now = Instant::from_millis(NOW);
        let stamp = |duration| expiry_exact(duration, now).map(Instant::timestamp);
        assert_eq!(stamp("30s"), Ok("2026-11-27T10:16:00.250000Z".into()));
        assert_eq!(stamp("1h"), Ok("2026-11-27T11:15:30.250000Z".into()));
        assert_eq!(stamp("1h30m"), Ok("2026-11-27T11:15:30.250000Z".into()));
        assert_eq!(stamp("Monthly"), Ok("2026-12-27T10:15:30.250000Z".into()));
        assert_eq!(stamp("2mo"), Ok("2027-01-27T10:15:30.250000Z".into()));
        assert_eq!(stamp("0s"), Ok(now.timestamp()));
        assert_eq!(stamp("30"), Err(DurationError::UnsupportedUnit("30".into())));
        assert_eq!(stamp("bogus"), Err(DurationError::Invalid));
        assert_eq!(stamp("-5s"), Err(DurationError::Invalid));
        let jan31 = Instant::from_millis(days_from_civil(2027, 1, 31) * DAY_MS);
        assert_eq!(expiry_exact("1mo", jan31).map(Instant::timestamp), Ok("2027-02-28T00:00:00.000000Z".into()));
    }

    #[test]
    fn older_keys_expire_at_the_next_boundary() {
        // The values 1.80.5 gave, at the times they were asked.
        let at = |y, mo, d, h: i64, mi: i64, s: i64, ms: i64| {
            Instant(days_from_civil(y, mo, d) * DAY_MS + ((h * 60 + mi) * 60 + s) * 1000 + ms)
        };
        let stamp = |duration, now| expiry_standardised(duration, now).map(Instant::timestamp);
        let now = at(2026, 12, 1, 21, 14, 9, 486);
        assert_eq!(stamp("20s", now), Ok("2026-12-01T21:14:20.000000Z".into()));
        assert_eq!(stamp("1m", now), Ok("2026-12-01T21:15:00.000000Z".into()));
        assert_eq!(stamp("1h", now), Ok("2026-12-01T22:00:00.000000Z".into()));
        assert_eq!(stamp("1mo", now), Ok("2027-01-01T00:00:00.000000Z".into()));
        for midnight in ["bogus", "30", "", "-5s", "1w", "hourly"] {
            assert_eq!(stamp(midnight, now), Ok("2026-12-02T00:00:00.000000Z".into()), "{midnight}");
        }
        assert_eq!(stamp("0s", now), Ok(now.timestamp()));
        let now = at(2026, 12, 1, 21, 21, 30, 40);
        assert_eq!(stamp("25h", now), Ok("2026-12-02T01:00:00.000000Z".into()));
        assert_eq!(stamp("90s", now), Ok("2026-12-01T21:22:30.000000Z".into()));
        assert_eq!(stamp("7d", now), Ok("2026-12-07T00:00:00.000000Z".into()));
        assert_eq!(stamp("2d", now), Ok("2026-12-03T00:00:00.000000Z".into()));
        assert_eq!(stamp("1h30m", now), Ok("2026-12-01T22:00:00.000000Z".into()));
        assert_eq!(stamp("2mo", now), Err(DurationError::Months));
        assert_eq!(at(2026, 12, 1, 21, 14, 22, 311).python(), "2026-12-01 21:14:22.311000+00:00");
        assert_eq!(at(2026, 12, 1, 21, 14, 20, 0).python(), "2026-12-01 21:14:20+00:00");
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
