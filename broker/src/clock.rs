//! Time as the broker stores it (unix seconds, UTC) and as it shows it (RFC 3339).

use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Seconds since the epoch. A clock before 1970 reads as 0 rather than failing: every expiry
/// check then errs on the side of "expired" only for times stored in the future, which is safe.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// RFC 3339 in UTC, e.g. `2026-05-01T10:00:00Z`.
pub fn rfc3339(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{secs}"))
}

/// The same instant as an [`OffsetDateTime`], clamped into the range `time` supports.
pub fn datetime(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Parses RFC 3339 into unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    OffsetDateTime::parse(text, &Rfc3339).ok().map(|t| t.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(parse_rfc3339("1970-01-01T00:01:40Z"), Some(100));
        assert_eq!(parse_rfc3339(&rfc3339(1_800_000_000)), Some(1_800_000_000));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
