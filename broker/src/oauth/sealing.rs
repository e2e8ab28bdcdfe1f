//! Sealing of what OAuth keeps besides a secret's fields: a provider's client secret and a
//! token row's refresh token, each under a data key of its own, wrapped by the master key.
//!
//! Same envelope as [`crate::seal`], with bindings of their own: a key is bound to its id, the
//! owner and its *subject* (the provider id, or `<secret id>/oauth`) at version 1; a value is
//! bound to the owner, the subject, a generation and what it is. A refresh token moved to
//! another row, or an older one replayed into its own row, fails the integrity check.

use maestro_wire::SecretValue;

use crate::seal::{DataKey, FieldBinding, KeyBinding, MasterKey, SealError};
use crate::tokens::{self, RandomError};

/// What the client secret is sealed as.
pub const CLIENT_SECRET: &str = "oauth/client_secret";
/// What a refresh token is sealed as.
pub const REFRESH_TOKEN: &str = "oauth/refresh_token";

/// Why sealing or opening failed.
#[derive(Debug, thiserror::Error)]
pub enum SealingError {
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error("a sealed OAuth value is not UTF-8 text")]
    NotText,
}

/// The subject of a token row's key.
pub fn token_subject(secret_id: &str) -> String {
    format!("{secret_id}/oauth")
}

/// A new data key for `subject`: its id, the key, and the key wrapped for storage.
pub fn new_key(
    master: &MasterKey,
    owner_id: i64,
    subject: &str,
) -> Result<(String, DataKey, Vec<u8>), SealingError> {
    let id = tokens::random_id::<16>()?;
    let key = DataKey::generate()?;
    let wrapped = master.wrap(&key, &binding(&id, owner_id, subject))?;
    Ok((id, key, wrapped))
}

/// Unwraps a stored key of `subject`.
pub fn open_key(
    master: &MasterKey,
    key_id: &str,
    owner_id: i64,
    subject: &str,
    wrapped: &[u8],
) -> Result<DataKey, SealingError> {
    Ok(master.unwrap_key(wrapped, &binding(key_id, owner_id, subject))?)
}

fn binding<'a>(key_id: &'a str, owner_id: i64, subject: &'a str) -> KeyBinding<'a> {
    KeyBinding { key_id, owner_id, secret_id: subject, version: 1 }
}

/// Seals `value` as `what` of `subject` at `generation`.
pub fn seal(
    key: &DataKey,
    owner_id: i64,
    subject: &str,
    generation: u64,
    what: &str,
    value: &SecretValue,
) -> Result<Vec<u8>, SealingError> {
    let binding = FieldBinding { owner_id, secret_id: subject, version: generation, field: what };
    Ok(key.seal(value.expose().as_bytes(), &binding)?)
}

/// Opens a value sealed by [`seal`] with the same binding.
pub fn open(
    key: &DataKey,
    owner_id: i64,
    subject: &str,
    generation: u64,
    what: &str,
    blob: &[u8],
) -> Result<SecretValue, SealingError> {
    let binding = FieldBinding { owner_id, secret_id: subject, version: generation, field: what };
    let plain = key.open(blob, &binding)?;
    SecretValue::from_utf8(&plain).map_err(|_| SealingError::NotText)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bound_to_subject_generation_and_purpose() {
        let master = MasterKey::generate().unwrap();
        let (id, key, wrapped) = new_key(&master, 1, "s1/oauth").unwrap();
        let value = SecretValue::from("planted-refresh");
        let blob = seal(&key, 1, "s1/oauth", 3, REFRESH_TOKEN, &value).unwrap();
        let key = open_key(&master, &id, 1, "s1/oauth", &wrapped).unwrap();
        assert_eq!(open(&key, 1, "s1/oauth", 3, REFRESH_TOKEN, &blob).unwrap(), value);
        assert!(open(&key, 1, "s1/oauth", 2, REFRESH_TOKEN, &blob).is_err(), "an old generation");
        assert!(open(&key, 1, "s2/oauth", 3, REFRESH_TOKEN, &blob).is_err(), "another row");
        assert!(open(&key, 1, "s1/oauth", 3, CLIENT_SECRET, &blob).is_err(), "another purpose");
        assert!(open_key(&master, &id, 1, "s2/oauth", &wrapped).is_err());
    }
}
