//! Session lifetimes as people write them (`12h`, `90m`, `30s`, `1d 6h`), parsed with humantime.

use maestro_wire::limits::MAX_SESSION_TTL_SECS;

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
}
