//! Checks on names, ids and free text given on the command line, made before anything is sent.
//!
//! The broker checks all of this again; checking here gives the same answer without a round
//! trip and, for names that end up in a URL path, keeps `..` or `/` from changing which route is
//! called.

use maestro_wire::catalog::seal::Exposure;
use maestro_wire::limits::{MAX_DESCRIPTION_BYTES, MAX_NAMES_PER_CALL, MAX_TAG_BYTES, MAX_TAGS};
use maestro_wire::teams::Scoped;

/// Longest session id accepted.
const MAX_SESSION_ID: usize = 128;
/// Longest piece of a bad argument quoted back in an error.
const MAX_QUOTE: usize = 80;

/// Why an argument is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error(
        "invalid secret name '{0}': names match [A-Z][A-Z0-9_]{{0,63}}, e.g. AWS_PROD, or team/NAME for a team's secret"
    )]
    SecretName(String),
    #[error(
        "invalid session id '{0}'; give a session's id, a unique id prefix or its label (see \
         `maestro sessions ls`)"
    )]
    SessionId(String),
    #[error("--{0} is longer than {MAX_DESCRIPTION_BYTES} bytes; shorten it")]
    TextTooLong(&'static str),
    #[error("--{0} must not hold control characters (newlines, tabs); write one line")]
    TextControl(&'static str),
    #[error("at most {MAX_TAGS} tags; {0} were given")]
    TooManyTags(usize),
    #[error(
        "invalid tag '{0}': tags are 1 to {MAX_TAG_BYTES} bytes without spaces or control \
         characters"
    )]
    Tag(String),
    #[error("at most {MAX_NAMES_PER_CALL} secrets in one call; {0} were given")]
    TooManyNames(usize),
    #[error(
        "nothing to change; give --field, --field-file, --field-stdin, --remove-field, --kind, \
         --description, --tag, --clear-tags, --exposure, --allow-host, --default-hosts, \
         --alerts-off or --on-alert"
    )]
    NothingToEdit,
    #[error("invalid --exposure '{0}': use plain or sealed")]
    Exposure(String),
}

/// `--exposure`: plain or sealed. (The broker checks it against the kind and the hosts.)
pub fn exposure(text: Option<&str>) -> Result<Option<Exposure>, InputError> {
    match text {
        None => Ok(None),
        Some(t) => Exposure::parse(t).map(Some).ok_or_else(|| InputError::Exposure(quote(t))),
    }
}

/// A secret name as users write it: `NAME`, or `team/NAME` for a team's secret.
pub fn secret_name(name: &str) -> Result<(), InputError> {
    if Scoped::parse(name).is_some() { Ok(()) } else { Err(InputError::SecretName(quote(name))) }
}

/// How a user names a session: its id, a unique id prefix or its label (the broker resolves
/// them). It goes into a URL path as one percent-encoded segment: one line, bounded, and not
/// only dots (`.` and `..` would be taken as path steps).
pub fn session_id(id: &str) -> Result<(), InputError> {
    // An id, a prefix of one, or a label (free text: it travels as one encoded path segment).
    let ok = !id.trim().is_empty()
        && id.len() <= MAX_SESSION_ID
        && !id.chars().any(char::is_control)
        && !id.bytes().all(|b| b == b'.');
    if ok { Ok(()) } else { Err(InputError::SessionId(quote(id))) }
}

/// A description or label: one line, bounded.
pub fn text(flag: &'static str, value: &str) -> Result<(), InputError> {
    if value.len() > MAX_DESCRIPTION_BYTES {
        return Err(InputError::TextTooLong(flag));
    }
    if value.chars().any(char::is_control) {
        return Err(InputError::TextControl(flag));
    }
    Ok(())
}

pub fn tags(tags: &[String]) -> Result<(), InputError> {
    if tags.len() > MAX_TAGS {
        return Err(InputError::TooManyTags(tags.len()));
    }
    for tag in tags {
        let ok = !tag.is_empty()
            && tag.len() <= MAX_TAG_BYTES
            && !tag.chars().any(|c| c.is_control() || c.is_whitespace());
        if !ok {
            return Err(InputError::Tag(quote(tag)));
        }
    }
    Ok(())
}

/// The secret names of an activation call.
pub fn secret_names(names: &[String]) -> Result<(), InputError> {
    if names.len() > MAX_NAMES_PER_CALL {
        return Err(InputError::TooManyNames(names.len()));
    }
    names.iter().try_for_each(|n| secret_name(n))
}

/// A bad argument, shortened and without control characters, to quote in an error.
fn quote(text: &str) -> String {
    let mut out: String =
        text.chars().take(MAX_QUOTE).map(|c| if c.is_control() { '?' } else { c }).collect();
    if text.chars().count() > MAX_QUOTE {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_name_rules() {
        assert!(secret_name("AWS_PROD").is_ok());
        assert!(secret_name("infra/AWS_PROD").is_ok());
        for bad in ["aws", "../X", "A/B", "", "A-B", "infra/", "infra/db", "a/b/C", "/A"] {
            let e = secret_name(bad).unwrap_err();
            assert!(e.to_string().contains("[A-Z][A-Z0-9_]{0,63}"), "{e}");
        }
        let long = format!("A{}", "B".repeat(200));
        let e = secret_name(&long).unwrap_err().to_string();
        assert!(e.len() < 200, "{e}");
    }

    #[test]
    fn session_ids() {
        for good in ["3f2a-11_x.y", "3f2a", "ci runner", "team/ci"] {
            assert!(session_id(good).is_ok(), "{good}");
        }
        for bad in ["", " ", ".", "..", "a\nb", "a\tb", &"x".repeat(129)] {
            assert!(session_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn free_text_and_tags() {
        assert!(text("description", "prod account").is_ok());
        assert_eq!(text("label", "a\nb"), Err(InputError::TextControl("label")));
        let long = "x".repeat(MAX_DESCRIPTION_BYTES + 1);
        assert_eq!(text("description", &long), Err(InputError::TextTooLong("description")));
        assert!(tags(&["prod".into(), "team-a".into()]).is_ok());
        assert!(matches!(tags(&["a b".into()]), Err(InputError::Tag(_))));
        assert!(matches!(tags(&[String::new()]), Err(InputError::Tag(_))));
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        assert_eq!(tags(&many), Err(InputError::TooManyTags(MAX_TAGS + 1)));
    }

    #[test]
    fn activation_names() {
        assert!(secret_names(&["A".into(), "B".into()]).is_ok());
        assert!(secret_names(&["A".into(), "b".into()]).is_err());
        let many: Vec<String> = (0..=MAX_NAMES_PER_CALL).map(|i| format!("S{i}")).collect();
        assert!(matches!(secret_names(&many), Err(InputError::TooManyNames(_))));
    }
}
