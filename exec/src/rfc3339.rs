//! RFC 3339 times (`2030-01-01T00:00:00Z`, the broker's `expires_at`) to unix seconds, with the
//! rules of the `time` crate's `Rfc3339` parser, which the broker writes them with: four-digit
//! year, a valid calendar date, any one byte between date and time, an optional fraction, `Z`
//! (either case) or an offset of at most 23:59, and a leap second only where one can be (the
//! last second of a month, in UTC). A few dozen lines here keep `time` out of `maestro-exec`;
//! the unit tests check them against `time` itself.

/// Seconds since the epoch of `text`, or `None` when it is not an RFC 3339 time.
pub fn unix_seconds(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let (year, b) = digits(b, 4)?;
    let (month, b) = digits(b.strip_prefix(b"-")?, 2)?;
    let (day, b) = digits(b.strip_prefix(b"-")?, 2)?;
    let b = b.get(1..)?;
    let (hour, b) = digits(b, 2)?;
    let (minute, b) = digits(b.strip_prefix(b":")?, 2)?;
    let (second, mut b) = digits(b.strip_prefix(b":")?, 2)?;
    if let Some(rest) = b.strip_prefix(b".") {
        let n = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        b = &rest[n..];
    }
    let offset = match b {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (oh, rest) = digits(rest, 2)?;
            let (om, rest) = digits(rest.strip_prefix(b":")?, 2)?;
            if !rest.is_empty() || oh > 23 || om > 59 {
                return None;
            }
            let secs = i64::from(oh * 3600 + om * 60);
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    // A leap second stands for the last instant of the second before it.
    let leap = second == 60;
    let second = second.min(59);
    let days = days_from_civil(i64::from(year), month, day);
    let utc = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset;
    if leap {
        let (utc_day, utc_second) = (utc.div_euclid(86_400), utc.rem_euclid(86_400));
        if utc_second != 86_399 || day_of_month(utc_day + 1) != 1 {
            return None;
        }
    }
    Some(utc)
}

/// Exactly `n` ASCII digits at the start of `b`, and what follows them.
fn digits(b: &[u8], n: usize) -> Option<(u32, &[u8])> {
    let head = b.get(..n)?;
    let mut value = 0;
    for c in head {
        if !c.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(c - b'0');
    }
    Some((value, &b[n..]))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let march_based_month = i64::from((month + 9) % 12);
    let day_of_year = (153 * march_based_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The day of the month of a day since 1970-01-01 (the inverse of [`days_from_civil`]).
fn day_of_month(days: i64) -> i64 {
    let z = days + 719_468;
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_based_month = (5 * day_of_year + 2) / 153;
    day_of_year - (153 * march_based_month + 2) / 5 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the `time` crate, which the broker formats with, makes of `text`.
    fn reference(text: &str) -> Option<i64> {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(|t| t.unix_timestamp())
    }

    #[test]
    fn known_times() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix_seconds("2030-01-01T00:00:00Z"), Some(1_893_456_000));
        assert_eq!(unix_seconds("2030-01-01T01:00:00+01:00"), Some(1_893_456_000));
        assert_eq!(unix_seconds("2016-12-31T23:59:60Z"), Some(1_483_228_799));
        assert_eq!(unix_seconds("next tuesday"), None);
        assert_eq!(unix_seconds("2030-02-29T00:00:00Z"), None);
        assert_eq!(unix_seconds("2030-01-01T00:00:00"), None);
    }

    /// Every combination of edge values of each field, then the same strings cut short and with
    /// one byte replaced: this parser and `time` must agree on all of them.
    #[test]
    fn agrees_with_the_time_crate() {
        let years = ["0000", "1969", "1970", "2000", "2024", "2100", "9999", "20x4"];
        let months = ["00", "01", "02", "06", "12", "13"];
        let days = ["00", "01", "28", "29", "30", "31", "32"];
        let separators = ["T", "t", " ", "_", ""];
        let times =
            ["00:00:00", "23:59:59", "23:59:60", "24:00:00", "12:60:00", "00:00:60", "1:00:00"];
        let fractions = ["", ".5", ".123456789123", "."];
        let offsets = ["Z", "z", "+00:00", "-00:00", "+23:59", "-23:59", "+24:00", "+01:60", ""];
        let mut checked = 0;
        let mut agree = |text: &str| {
            assert_eq!(unix_seconds(text), reference(text), "{text:?}");
            checked += 1;
        };
        for y in years {
            for m in months {
                for d in days {
                    for s in separators {
                        for t in times {
                            for f in fractions {
                                for o in offsets {
                                    agree(&format!("{y}-{m}-{d}{s}{t}{f}{o}"));
                                }
                            }
                        }
                    }
                }
            }
        }
        // Leap seconds around month ends in several offsets.
        for day in ["2016-12-31", "2016-06-30", "2016-02-29", "2015-02-28", "2016-01-01"] {
            for (t, o) in [("23:59:60", "Z"), ("00:59:60", "+01:00"), ("22:59:60", "-01:00")] {
                agree(&format!("{day}T{t}{o}"));
            }
        }
        // Cut and mutated forms of a valid time.
        let base = "2030-07-15T08:30:45.25+05:30";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for cut in 0..=base.len() {
            agree(&base[..cut]);
        }
        for _ in 0..20_000 {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let at = (state >> 33) as usize % base.len();
            let byte = b"0123456789+-:.TZz x"[(state >> 20) as usize % 19];
            let mut bytes = base.as_bytes().to_vec();
            bytes[at] = byte;
            agree(std::str::from_utf8(&bytes).unwrap());
        }
        assert!(checked > 100_000);
    }
}
