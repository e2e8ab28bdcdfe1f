//! The one way every Maestro binary prints an error: the error and its causes on one line,
//! outermost first, joined by `: `, each message once. Our errors often already quote their
//! source (`cannot open the database X: <sqlx error>`), and libraries repeat theirs (sqlx,
//! reqwest, io errors wrapping io errors), so a message that the line already holds is left out.
//!
//! It takes any chain of `std::error::Error`s: [`causes`] walks one through `source()`, and
//! `anyhow::Error::chain()` gives the same items, so this crate needs no anyhow.

use std::error::Error;

/// The error, then each of its sources in turn.
pub fn causes<'a>(
    error: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(error), |&e| e.source())
}

/// The messages of `chain` on one line, outermost first, each left out when the line so far
/// already contains it.
pub fn one_line<'a>(chain: impl IntoIterator<Item = &'a (dyn Error + 'static)>) -> String {
    let mut out = String::new();
    for cause in chain {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::*;

    /// An error with a message and an optional source.
    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);

    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    fn chain(messages: &[&'static str]) -> E {
        messages.iter().rev().fold(None, |source, m| Some(E(m, source.map(Box::new)))).unwrap()
    }

    #[test]
    fn joins_the_chain_outermost_first() {
        let e = chain(&["cannot start", "cannot bind 1.2.3.4:1", "address in use"]);
        assert_eq!(one_line(causes(&e)), "cannot start: cannot bind 1.2.3.4:1: address in use");
        assert_eq!(one_line(causes(&chain(&["alone"]))), "alone");
    }

    #[test]
    fn a_cause_already_quoted_is_left_out() {
        let e = chain(&["cannot open db: disk full", "disk full", "disk full", "errno 28"]);
        assert_eq!(one_line(causes(&e)), "cannot open db: disk full: errno 28");
    }
}
