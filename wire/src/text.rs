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

/// `text` with control and format characters (and the backslash) escaped, cut at a character
/// boundary so that the result is at most `max_bytes` bytes long.
pub fn escape_shown(text: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_bytes));
    let mut utf8 = [0u8; 4];
    for c in text.chars() {
        let escaped;
        let piece: &str = if c == '\\' {
            "\\\\"
        } else if c.is_control() || is_format(c) {
            escaped = format!("\\u{{{:x}}}", c as u32);
            &escaped
        } else {
            c.encode_utf8(&mut utf8)
        };
        if out.len() + piece.len() > max_bytes {
            break;
        }
        out.push_str(piece);
    }
    out
}

/// `text` cut at a character boundary to at most `max_bytes` bytes.
pub fn truncate_bytes(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
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
        // Cut by bytes, never inside an escape or a character.
        assert_eq!(escape_shown("ab\u{202e}", 8), "ab");
        assert_eq!(escape_shown("héllo", 2), "h");
        assert_eq!(truncate_bytes("héllo", 2), "h");
        assert_eq!(truncate_bytes("héllo", 64), "héllo");
    }
}
