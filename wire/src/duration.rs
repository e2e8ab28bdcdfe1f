//! Durations as Maestro shows them (`2h`, `1h30m`, `90d`): activation times, time left,
//! rotation periods and ages. Parsing what people type is the CLI's (humantime); this side
//! only formats, so the broker, the CLI and `maestro-exec` print the same text.

/// Whole seconds as at most two units, largest first (`3d4h`, `2h`, `1h30m`, `45s`); `0s`.
/// Seconds are dropped once a duration reaches an hour, and minutes once it reaches a day:
/// what is left of an activation is read at a glance, not to the second.
pub fn format_secs(secs: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let mut left = secs;
    let mut shown = 0;
    for (size, unit) in UNITS {
        if left >= size && shown < 2 {
            out.push_str(&format!("{}{unit}", left / size));
            left %= size;
            shown += 1;
        } else if shown > 0 {
            // Only adjacent units: 1d and 3 minutes reads `1d`.
            shown = 2;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_units_at_most_largest_first() {
        assert_eq!(format_secs(0), "0s");
        assert_eq!(format_secs(45), "45s");
        assert_eq!(format_secs(90), "1m30s");
        assert_eq!(format_secs(7200), "2h");
        assert_eq!(format_secs(5400), "1h30m");
        assert_eq!(format_secs(3601), "1h");
        assert_eq!(format_secs(90 * 86_400), "90d");
        assert_eq!(format_secs(86_400 + 4 * 3600 + 59), "1d4h");
        assert_eq!(format_secs(86_400 + 180), "1d");
    }
}
