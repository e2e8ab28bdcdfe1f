//! Validation of what users send about secrets and sessions: names, texts, tags, and fields
//! against their kind. Every message names the field or limit at fault, never a value.

use std::collections::BTreeMap;

use maestro_wire::SecretValue;
use maestro_wire::api::ErrorCode;
use maestro_wire::catalog::{self, ValidationError};
use maestro_wire::limits::{MAX_DESCRIPTION_BYTES, MAX_TAG_BYTES, MAX_TAGS};
use maestro_wire::names;

use super::error::{DomainError, DomainResult};

/// Checks a secret name against `[A-Z][A-Z0-9_]{0,63}`.
pub fn check_name(name: &str) -> DomainResult<()> {
    if names::is_valid_secret_name(name) {
        Ok(())
    } else {
        let shown: String = name.chars().take(80).collect();
        Err(DomainError::new(
            ErrorCode::InvalidName,
            format!(
                "invalid secret name '{}': use 1 to 64 of A-Z, 0-9 and _, starting with a letter (like AWS_PROD)",
                shown.escape_default()
            ),
        )
        .at_field("name"))
    }
}

/// Checks a description or label: size, and no control characters but newline and tab.
pub fn check_text(what: &str, text: &str) -> DomainResult<()> {
    if text.len() > MAX_DESCRIPTION_BYTES {
        return Err(DomainError::new(
            ErrorCode::TooLarge,
            format!("the {what} is {} bytes; the limit is {MAX_DESCRIPTION_BYTES}", text.len()),
        )
        .at_field(what));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(DomainError::bad_request(format!(
            "the {what} contains control characters; use plain text"
        ))
        .at_field(what));
    }
    Ok(())
}

/// Checks tags: how many, how long, printable, no repeats.
pub fn check_tags(tags: &[String]) -> DomainResult<()> {
    if tags.len() > MAX_TAGS {
        return Err(DomainError::new(
            ErrorCode::TooMany,
            format!("a secret has at most {MAX_TAGS} tags; this one has {}", tags.len()),
        )
        .at_field("tags"));
    }
    for (i, tag) in tags.iter().enumerate() {
        if tag.is_empty() || tag.len() > MAX_TAG_BYTES {
            return Err(DomainError::bad_request(format!(
                "tag {} is {} bytes; a tag has 1 to {MAX_TAG_BYTES} bytes",
                i + 1,
                tag.len()
            ))
            .at_field("tags"));
        }
        if tag.chars().any(|c| c.is_control()) {
            return Err(DomainError::bad_request(format!(
                "tag {} contains control characters",
                i + 1
            ))
            .at_field("tags"));
        }
        if tags[..i].contains(tag) {
            return Err(
                DomainError::bad_request(format!("tag '{tag}' is given twice")).at_field("tags")
            );
        }
    }
    Ok(())
}

/// Validates fields against their kind, with defaults filled in.
pub fn check_fields(
    kind: &str,
    fields: &BTreeMap<String, SecretValue>,
) -> DomainResult<BTreeMap<String, SecretValue>> {
    catalog::validate(kind, fields).map_err(|e| {
        let code = match &e {
            ValidationError::UnknownKind(_) => ErrorCode::UnknownKind,
            ValidationError::MissingField { .. } | ValidationError::NoFields => {
                ErrorCode::MissingField
            }
            ValidationError::UnknownField { .. } | ValidationError::InvalidField { .. } => {
                ErrorCode::InvalidField
            }
            ValidationError::TooLarge { .. } => ErrorCode::TooLarge,
            ValidationError::TooManyFields(_) => ErrorCode::TooMany,
        };
        let field = match &e {
            ValidationError::UnknownKind(_) => Some("kind".to_owned()),
            ValidationError::MissingField { field, .. }
            | ValidationError::UnknownField { field, .. }
            | ValidationError::InvalidField { field, .. }
            | ValidationError::TooLarge { field, .. } => Some(field.clone()),
            ValidationError::TooManyFields(_) | ValidationError::NoFields => None,
        };
        // The catalog's messages name fields and limits, never values.
        let error = DomainError::new(code, e.to_string());
        match field {
            Some(field) => error.at_field(field),
            None => error,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_tags_and_texts() {
        assert!(check_name("AWS_PROD").is_ok());
        let f = check_name("bad-name").unwrap_err();
        assert_eq!(f.code, ErrorCode::InvalidName);
        assert_eq!(f.field.as_deref(), Some("name"));
        let f = check_fields("aws", &BTreeMap::new()).unwrap_err();
        assert_eq!(f.field.as_deref(), Some("access_key_id"));
        assert_eq!(
            check_tags(&["a".into(), "a".into()]).unwrap_err().field.as_deref(),
            Some("tags")
        );
        assert!(check_tags(&["a".into(), "a".into()]).is_err());
        assert!(check_tags(&vec!["t".to_owned(); MAX_TAGS + 1]).is_err());
        assert!(check_text("description", &"x".repeat(MAX_DESCRIPTION_BYTES + 1)).is_err());
        assert!(check_text("description", "two\nlines").is_ok());
        assert!(check_text("description", "bell\u{7}").is_err());
    }
}
