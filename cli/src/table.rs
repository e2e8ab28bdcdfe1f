//! Aligned text tables and `key: value` blocks for the human-readable output.
//!
//! Every cell goes through [`clean`]: text from the broker (descriptions, labels, command names
//! and paths reported by sandboxes) must not be able to break the layout, send escape sequences
//! to the user's terminal, or reorder or hide what the user reads (bidirectional overrides,
//! zero-width characters): Unicode control (Cc) and format (Cf) characters are shown escaped,
//! as `\u{202e}`.

/// A table with a header row; columns are padded to their widest cell, the last one is not.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self { rows: vec![header.iter().map(|h| (*h).to_owned()).collect()] }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|c| clean(c)).collect());
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i] - cell.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key:  value` lines with the values aligned.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (key, value) in pairs {
        let label = format!("{key}:");
        out.push_str(&format!("{label:<width$}  {}\n", clean(value)));
    }
    out
}

/// A list for a cell: comma-separated, or `-` when empty.
pub fn list(items: &[String]) -> String {
    if items.is_empty() { "-".to_owned() } else { items.join(", ") }
}

/// An optional cell: the value or `-`.
pub fn opt(value: Option<&str>) -> String {
    value.map_or_else(|| "-".to_owned(), str::to_owned)
}

/// An RFC 3339 time without its fractional seconds, `T` shown as a space: `2026-11-29 10:05:03Z`.
/// Anything else is shown as it is.
/// Whole seconds from now until an RFC 3339 time (0 once it has passed); `None` if unreadable.
pub fn secs_until(rfc3339: &str) -> Option<u64> {
    let at = humantime::parse_rfc3339(rfc3339).ok()?;
    Some(at.duration_since(std::time::SystemTime::now()).map_or(0, |d| d.as_secs()))
}

/// Whole seconds since an RFC 3339 time (0 if it is ahead); `None` if unreadable.
pub fn secs_since(rfc3339: &str) -> Option<u64> {
    let at = humantime::parse_rfc3339(rfc3339).ok()?;
    Some(std::time::SystemTime::now().duration_since(at).map_or(0, |d| d.as_secs()))
}

pub fn time(rfc3339: &str) -> String {
    let Some((date, rest)) = rfc3339.split_once('T') else { return rfc3339.to_owned() };
    let rest = match rest.find('.') {
        Some(dot) => {
            let zone = rest[dot + 1..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or("", |i| &rest[dot + 1 + i..]);
            format!("{}{zone}", &rest[..dot])
        }
        None => rest.to_owned(),
    };
    format!("{date} {rest}")
}

/// [`time`] of an optional time, `-` when absent.
pub fn opt_time(rfc3339: Option<&str>) -> String {
    rfc3339.map_or_else(|| "-".to_owned(), time)
}

/// Escapes control and format characters as `\\u{…}`. A backslash stays as it is: the agent
/// already escapes what it reports (`\\` included), and escaping it again would double it.
pub fn clean(text: &str) -> String {
    // `escape_shown` also doubles backslashes: escape the pieces between them. No bound: the
    // whole text (cells are bounded where they are stored).
    text.split('\\')
        .map(|piece| maestro_wire::text::escape_shown(piece, usize::MAX))
        .collect::<Vec<_>>()
        .join("\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let mut t = Table::new(&["NAME", "KIND"]);
        t.row(vec!["AWS_PROD".into(), "aws".into()]);
        t.row(vec!["X".into(), "generic".into()]);
        assert_eq!(t.render(), "NAME      KIND\nAWS_PROD  aws\nX         generic\n");
    }

    #[test]
    fn cells_cannot_inject_lines_or_escapes() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["x\ny".into(), "\x1b[2J".into()]);
        let out = t.render();
        assert_eq!(out.lines().count(), 2);
        assert!(!out.contains('\x1b'));
        assert!(out.contains("\\u{1b}[2J"), "{out}");
        assert!(!key_values(&[("k", "a\nb".into())]).trim_end().contains('\n'));
        // Format characters that reorder or hide text are shown escaped too.
        let mut t = Table::new(&["COMMAND"]);
        t.row(vec!["evil\u{202e}gpj.exe\u{200b}".into()]);
        let out = t.render();
        assert!(out.contains("evil\\u{202e}gpj.exe\\u{200b}"), "{out}");
        assert!(!out.contains('\u{202e}') && !out.contains('\u{200b}'));
        // What the agent already escaped is shown once, not escaped again.
        assert_eq!(clean("evil\\u{202e}gpj \\\\ c:\\x"), "evil\\u{202e}gpj \\\\ c:\\x");
    }

    #[test]
    fn times_are_shortened() {
        assert_eq!(time("2026-11-29T10:05:03.123456789Z"), "2026-11-29 10:05:03Z");
        assert_eq!(time("2026-11-29T10:05:03+01:00"), "2026-11-29 10:05:03+01:00");
        assert_eq!(time("2026-11-29T10:05:03.5-02:00"), "2026-11-29 10:05:03-02:00");
        assert_eq!(time("soon"), "soon");
        assert_eq!(opt_time(None), "-");
    }

    #[test]
    fn key_value_alignment() {
        let out = key_values(&[("name", "X".into()), ("last used", "never".into())]);
        assert_eq!(out, "name:       X\nlast used:  never\n");
    }
}
