//! Host names and host patterns: `api.openai.com` (that host) or `*.amazonaws.com` (any
//! subdomain at any depth, not the apex). Compared lowercase, without a trailing dot or a port.

/// A host as the proxy compares it: lowercase, no trailing dot, IPv6 brackets removed.
pub fn normalize(host: &str) -> String {
    let h = host.trim_end_matches('.');
    let h = h.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(h);
    h.to_ascii_lowercase()
}

/// Whether a (normalized) host matches one pattern.
pub fn matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            let Some(cut) = host.len().checked_sub(suffix.len() + 1) else { return false };
            cut > 0
                && host.as_bytes()[cut] == b'.'
                && host.is_char_boundary(cut + 1)
                && suffix.eq_ignore_ascii_case(&host[cut + 1..])
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// Whether a (normalized) host matches any of the patterns.
pub fn matches_any<S: AsRef<str>>(patterns: &[S], host: &str) -> bool {
    patterns.iter().any(|p| matches(p.as_ref(), host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard_patterns() {
        assert!(matches("api.openai.com", "api.openai.com"));
        assert!(!matches("api.openai.com", "xapi.openai.com"));
        assert!(!matches("api.openai.com", "api.openai.com.evil.net"));
        assert!(matches("*.amazonaws.com", "sts.amazonaws.com"));
        assert!(matches("*.amazonaws.com", "bucket.s3.us-east-1.amazonaws.com"));
        assert!(!matches("*.amazonaws.com", "amazonaws.com"));
        assert!(!matches("*.amazonaws.com", "evilamazonaws.com"));
        assert!(!matches("*.amazonaws.com", ".amazonaws.com"));
        assert_eq!(normalize("API.OpenAI.com."), "api.openai.com");
        assert_eq!(normalize("[::1]"), "::1");
        assert!(matches_any(&["a.com", "*.b.com"], "x.b.com"));
    }
}
