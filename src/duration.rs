//! Durations as people write them in specs and flags: a whole number and a unit (`ms`, `s`, `m`, `h`, `d`, `w`,
//! `mo`). One parser for all of them, checked: no text, however long its number, can overflow a computation
//! later, because a spec duration is refused above [`SPEC_MAX`] before anything adds it to a time.

use std::time::Duration;

/// The longest duration a spec may give: 10 years. Timestamps end at the year 9999, and no key, rotation or
/// budget period needs longer; the CRD refuses longer ones at admission with the same bound.
pub const SPEC_MAX: Duration = Duration::from_secs(3650 * DAY);
/// [`SPEC_MAX`] as the CRD's messages and the README state it.
pub const SPEC_MAX_TEXT: &str = "3650d (10 years)";

const DAY: u64 = 86_400;
/// A month as LiteLLM's budget periods count it when bounding them: 30 days.
const MONTH: u64 = 30 * DAY;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("'{0}' is not a duration: write a whole number and a unit (s, m, h, d or w), for example 30d")]
    Malformed(String),
    #[error("'{0}' is longer than the longest duration allowed, {SPEC_MAX_TEXT}")]
    TooLong(String),
    #[error("'{0}' is zero; it must be at least 1s")]
    Zero(String),
}

/// `30s`, `5m`, `1h`, `90d`, `2w`, `1mo`, `500ms`; anything else is an error, and so is a number too large to
/// represent.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let malformed = || DurationError::Malformed(bounded(text));
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(malformed)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| malformed())?;
    let seconds = match unit {
        "ms" => return Ok(Duration::from_millis(number)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => DAY,
        "w" => 7 * DAY,
        "mo" => MONTH,
        _ => return Err(malformed()),
    };
    number.checked_mul(seconds).map(Duration::from_secs).ok_or_else(|| DurationError::TooLong(bounded(text)))
}

/// A duration the CRD has already checked (a policy's, a proxy's), or `default` when it is unset. A value the
/// CRD would refuse (stored under an older CRD) also gives `default`: the safe setting, never a failed reconcile.
pub fn parse_or(text: Option<&str>, default: Duration) -> Duration {
    text.and_then(|text| parse(text).ok()).unwrap_or(default)
}

/// A duration written in a spec: parsed, and no longer than [`SPEC_MAX`] (nor zero, unless `zero_allowed`).
pub fn parse_spec(text: &str, zero_allowed: bool) -> Result<Duration, DurationError> {
    let duration = parse(text)?;
    if duration > SPEC_MAX {
        return Err(DurationError::TooLong(bounded(text)));
    }
    if duration.is_zero() && !zero_allowed {
        return Err(DurationError::Zero(bounded(text)));
    }
    Ok(duration)
}

/// A duration given as a flag: as [`parse`], and a bare number counts as seconds.
pub fn parse_flag(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map(Duration::from_secs).map_err(|_| format!("'{text}' is too large a number of seconds"));
    }
    parse(text).map_err(|err| err.to_string())
}

/// The text as it goes into a message: a tenant's 600 KiB string does not go into a condition whole.
fn bounded(text: &str) -> String {
    crate::text::bounded_chars(text, 40)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("30d"), Ok(Duration::from_secs(30 * DAY)));
        assert_eq!(parse("2w"), Ok(Duration::from_secs(14 * DAY)));
        assert_eq!(parse("1mo"), Ok(Duration::from_secs(30 * DAY)));
        for bad in ["", "5", "s", "1y", "1.5h", "-1s", " 1s", "1 s", "1é"] {
            assert!(matches!(parse(bad), Err(DurationError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn numbers_too_large_are_errors_not_panics() {
        assert!(matches!(parse("99999999999999999999999s"), Err(DurationError::Malformed(_))));
        assert!(matches!(parse("18446744073709551615w"), Err(DurationError::TooLong(_))));
        assert!(parse("999999999w").is_ok(), "representable, and refused only as a spec value");
    }

    #[test]
    fn spec_durations_end_at_ten_years() {
        assert_eq!(parse_spec("3650d", false), Ok(SPEC_MAX));
        assert_eq!(parse_spec("120mo", false), Ok(Duration::from_secs(3600 * DAY)));
        for long in ["3651d", "522w", "87601h", "999999999w", "9999999d", "122mo"] {
            assert!(matches!(parse_spec(long, false), Err(DurationError::TooLong(_))), "{long}");
        }
        assert_eq!(parse_spec("0s", true), Ok(Duration::ZERO));
        assert!(matches!(parse_spec("0d", false), Err(DurationError::Zero(_))));
        let message = parse_spec("999999999w", false).unwrap_err().to_string();
        assert!(message.contains("999999999w") && message.contains("3650d"), "{message}");
    }

    #[test]
    fn flags_take_bare_seconds() {
        assert_eq!(parse_flag("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_flag(" 5m "), Ok(Duration::from_secs(300)));
        assert!(parse_flag("5x").is_err());
    }

    #[test]
    fn messages_quote_a_bounded_text() {
        let long = format!("{}é", "9".repeat(10_000));
        let message = parse(&long).unwrap_err().to_string();
        assert!(message.len() < 200, "{message}");
    }
}
