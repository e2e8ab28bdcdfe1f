//! Validation of names that users choose: secret names, field names, variable names.

/// Whether `name` is a valid secret name: `[A-Z][A-Z0-9_]{0,63}`.
pub fn is_valid_secret_name(name: &str) -> bool {
    is_upper_ident(name, 64)
}

/// Whether `name` is a valid environment variable name for a generic secret's field:
/// `[A-Z_][A-Z0-9_]{0,127}` (upper case so that it is also a valid file name under the mount).
pub fn is_valid_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_uppercase() || c == '_' => {}
        _ => return false,
    }
    name.len() <= 128 && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Whether `name` is a valid field name of a catalog kind: `[a-z][a-z0-9_]{0,63}`.
pub fn is_valid_field_key(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_lowercase() => {}
        _ => return false,
    }
    name.len() <= 64 && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_upper_ident(name: &str, max: usize) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_uppercase() => {}
        _ => return false,
    }
    name.len() <= max && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        assert!(is_valid_secret_name("AWS_PROD"));
        assert!(is_valid_secret_name("A"));
        assert!(is_valid_secret_name(&format!("A{}", "B".repeat(63))));
        assert!(!is_valid_secret_name(&format!("A{}", "B".repeat(64))));
        assert!(!is_valid_secret_name("aws"));
        assert!(!is_valid_secret_name("1AWS"));
        assert!(!is_valid_secret_name("_AWS"));
        assert!(!is_valid_secret_name("AWS-PROD"));
        assert!(!is_valid_secret_name(""));
        assert!(!is_valid_secret_name("../X"));
    }

    #[test]
    fn variable_names() {
        assert!(is_valid_variable_name("OPENAI_API_KEY"));
        assert!(is_valid_variable_name("_X"));
        assert!(!is_valid_variable_name("a"));
        assert!(!is_valid_variable_name("A=B"));
        assert!(!is_valid_variable_name("A/B"));
    }
}
