//! Text that came from a process (a command name, an executable path, a name it claims) made
//! safe to show: Unicode control characters (Cc: newlines, escapes that drive a terminal) and
//! format characters (Cf: bidirectional overrides, zero-width characters that hide or reorder
//! what a reader sees) are escaped as `\u{…}`, so a record cannot forge a line, recolour a
//! terminal or pass one name off as another. A backslash is escaped too, so the escaped text
//! is unambiguous.

/// Whether `c` is a Unicode format character (general category Cf).
fn is_format(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// `text` with control and format characters (and `\`) escaped, cut to at most `max_chars`
/// characters of the original.
pub fn escape_shown(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars * 2));
    for c in text.chars().take(max_chars) {
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() || is_format(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_format_characters_only() {
        assert_eq!(escape_shown("cat", 64), "cat");
        assert_eq!(escape_shown("pyth\u{202e}3nohtyp", 64), "pyth\\u{202e}3nohtyp");
        assert_eq!(escape_shown("a\nb\x1b[31m", 64), "a\\u{a}b\\u{1b}[31m");
        assert_eq!(escape_shown("zero\u{200b}width\u{feff}", 64), "zero\\u{200b}width\\u{feff}");
        assert_eq!(escape_shown("c:\\x", 64), "c:\\\\x");
        assert_eq!(escape_shown("héllo wörld", 64), "héllo wörld");
        assert_eq!(escape_shown("abcdef", 3), "abc");
    }
}
