//! Durations as people write them (`12h`, `90m`, `30s`, `1d 6h`, `90d`), parsed with humantime:
//! session lifetimes (`--ttl`), activation times (`--for`, `--activation-default`,
//! `--activation-max`) and rotation periods (`--rotate-every`).

use maestro_wire::duration::format_secs;
use maestro_wire::limits::MAX_SESSION_TTL_SECS;

/// Why a duration flag other than `--ttl` cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid {flag} '{text}' ({reason}); write a duration such as 2h, 90m or 30d")]
    Unparsable { flag: &'static str, text: String, reason: String },
    #[error("{flag} '{text}' is not a whole number of seconds; write a duration such as 2h or 90s")]
    Fractional { flag: &'static str, text: String },
    #[error("{0} must be at least 1s")]
    Zero(&'static str),
    #[error("{flag} '{text}' is longer than the maximum of {max}; give {max} or less")]
    TooLong { flag: &'static str, text: String, max: String },
}

/// Parses the duration of `flag` into whole seconds, within `1..=max`.
pub fn parse_duration(flag: &'static str, text: &str, max: u64) -> Result<u64, DurationError> {
    let text = text.trim();
    let duration = humantime::parse_duration(text).map_err(|e| DurationError::Unparsable {
        flag,
        text: text.chars().take(80).collect(),
        reason: e.to_string().replace('\n', " "),
    })?;
    if duration.subsec_nanos() != 0 {
        return Err(DurationError::Fractional { flag, text: text.to_owned() });
    }
    match duration.as_secs() {
        0 => Err(DurationError::Zero(flag)),
        secs if secs > max => {
            Err(DurationError::TooLong { flag, text: text.to_owned(), max: format_secs(max) })
        }
        secs => Ok(secs),
    }
}

/// A duration setting of a secret: a duration, or `none` to remove it (sent as 0).
pub fn parse_setting(flag: &'static str, text: &str, max: u64) -> Result<u64, DurationError> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(0);
    }
    parse_duration(flag, text, max)
}

/// Why a `--ttl` cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    #[error("invalid --ttl '{text}' ({reason}); write a duration such as 12h, 90m or 30s")]
    Unparsable { text: String, reason: String },
    #[error("--ttl '{0}' is not a whole number of seconds; write a duration such as 12h or 90s")]
    Fractional(String),
    #[error("--ttl must be at least 1s")]
    Zero,
    #[error("--ttl '{0}' is longer than the maximum of 30 days; give 30d or less")]
    TooLong(String),
}

/// Parses a TTL into whole seconds, within `1..=MAX_SESSION_TTL_SECS`.
pub fn parse_ttl(text: &str) -> Result<u64, TtlError> {
    let text = text.trim();
    let duration = humantime::parse_duration(text).map_err(|e| TtlError::Unparsable {
        text: text.to_owned(),
        reason: e.to_string().replace('\n', " "),
    })?;
    if duration.subsec_nanos() != 0 {
        return Err(TtlError::Fractional(text.to_owned()));
    }
    match duration.as_secs() {
        0 => Err(TtlError::Zero),
        secs if secs > MAX_SESSION_TTL_SECS => Err(TtlError::TooLong(text.to_owned())),
        secs => Ok(secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_forms() {
        assert_eq!(parse_ttl("12h"), Ok(12 * 3600));
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("30m"), Ok(1800));
        assert_eq!(parse_ttl("1d 6h"), Ok(30 * 3600));
        assert_eq!(parse_ttl(" 2h "), Ok(7200));
        assert_eq!(parse_ttl("30d"), Ok(MAX_SESSION_TTL_SECS));
    }

    #[test]
    fn bad_forms_are_one_line_errors() {
        for bad in ["12x", "", "h", "-1h", "twelve hours", "1.5s"] {
            let e = parse_ttl(bad).unwrap_err();
            assert!(!e.to_string().contains('\n'), "{e}");
            assert!(e.to_string().contains("--ttl"), "{e}");
        }
        assert_eq!(parse_ttl("0s"), Err(TtlError::Zero));
        assert_eq!(parse_ttl("0"), Err(TtlError::Zero));
        assert_eq!(parse_ttl("1500ms"), Err(TtlError::Fractional("1500ms".into())));
        assert_eq!(parse_ttl("31d"), Err(TtlError::TooLong("31d".into())));
    }

    #[test]
    fn other_duration_flags_name_themselves() {
        assert_eq!(parse_duration("--for", "2h", 3600 * 24), Ok(7200));
        assert_eq!(parse_duration("--rotate-every", "90d", 3650 * 86_400), Ok(90 * 86_400));
        assert_eq!(parse_setting("--rotate-every", "none", 10), Ok(0));
        assert_eq!(parse_duration("--for", "0s", 10), Err(DurationError::Zero("--for")));
        for bad in ["2x", "", "soon", "-1h", "1.5s"] {
            let e = parse_duration("--for", bad, 86_400).unwrap_err().to_string();
            assert!(e.starts_with("invalid --for") || e.contains("whole number"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let e = parse_duration("--for", "31d", 30 * 86_400).unwrap_err().to_string();
        assert_eq!(e, "--for '31d' is longer than the maximum of 30d; give 30d or less");
    }
}
