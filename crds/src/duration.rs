//! Durations as users write them in a `DiLoCoServer`: `15m`, `2h`, `90d`, `5y`, or sums such
//! as `1h30m`. Kubernetes' own Go-style durations stop at hours, which is awkward for
//! certificate lifetimes, so days (`d`, 24 h) and years (`y`, 365 d) are accepted too.

use std::time::Duration;

/// The schema pattern of a duration field: one or more `<digits><unit>` terms.
pub const DURATION_PATTERN: &str = r"^([0-9]+(s|m|h|d|y))+$";

/// A duration string that does not parse (the API server's pattern rejects it first; this is
/// for values the schema cannot catch, such as overflow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidDuration(pub String);

impl std::fmt::Display for InvalidDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} is not a duration: write terms such as 90s, 15m, 2h, 90d or 5y",
            self.0
        )
    }
}

impl std::error::Error for InvalidDuration {}

/// Parses `15m`, `1h30m`, `90d`, `5y` into a [`Duration`].
pub fn parse_duration(text: &str) -> Result<Duration, InvalidDuration> {
    let invalid = || InvalidDuration(text.to_string());
    let mut total: u64 = 0;
    let mut digits = String::new();
    for ch in text.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let unit: u64 = match ch {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'y' => 365 * 86_400,
            _ => return Err(invalid()),
        };
        let value: u64 = digits.parse().map_err(|_| invalid())?;
        total = value
            .checked_mul(unit)
            .and_then(|seconds| total.checked_add(seconds))
            .ok_or_else(invalid)?;
        digits.clear();
    }
    if !digits.is_empty() || text.is_empty() {
        return Err(invalid());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_sums_parse() {
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(
            parse_duration("5y"),
            Ok(Duration::from_secs(5 * 365 * 86_400))
        );
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn malformed_durations_are_errors() {
        for bad in [
            "",
            "15",
            "m",
            "1.5h",
            "15 m",
            "-1h",
            "1w",
            "99999999999999999999y",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }
}
