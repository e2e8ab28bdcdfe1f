//! Encryption at rest: envelope encryption with XChaCha20-Poly1305.
//!
//! * The **master key** (32 bytes) lives outside the database: in `<data-dir>/master.key`
//!   (mode 0600) or in `MAESTRO_MASTER_KEY` (base64). It only wraps data keys.
//! * Each version of each secret has its own random **data key**, stored wrapped by the master
//!   key. Editing a secret makes a new data key and deletes the old one with the old ciphertexts.
//! * Each field value is sealed separately under the data key with a fresh 192-bit nonce.
//!
//! The associated data of every seal binds the ciphertext to its row: a wrapped data key to its
//! key id, owner, secret id and version; a field to owner, secret id, version and field name.
//! Copying a ciphertext into another row, or replaying an old version, fails the integrity check
//! exactly like a flipped bit does, and a failed check is an error, never a wrong value.
//!
//! Stored format of a sealed blob: one format byte (`1`), the 24-byte nonce, the ciphertext with
//! its 16-byte tag.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::tokens::{RandomError, random_bytes};

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const FORMAT_V1: u8 = 1;

/// Domain separation: a blob sealed for one purpose never opens as another.
const DOMAIN_FIELD: &str = "maestro/field/v1";
const DOMAIN_DATA_KEY: &str = "maestro/data-key/v1";
const DOMAIN_CHECK: &str = "maestro/master-key-check/v1";
/// The plaintext of the check value that proves a master key is the one the database was
/// sealed with. Not secret; its ciphertext is only useful with the key.
const CHECK_PLAINTEXT: &[u8] = b"maestro master key check";

/// Why sealing or opening failed. No variant holds key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The authentication tag did not verify: tampered, moved to another row, or another key.
    #[error(
        "integrity check failed: the stored ciphertext was modified, moved, or sealed under another key"
    )]
    Integrity,
    /// The blob is too short or of an unknown format.
    #[error("stored ciphertext is malformed (truncated or of an unknown format)")]
    Malformed,
    /// A master key given as text is not 32 bytes of base64.
    #[error("{source_name} is not a master key: expected 32 bytes in base64 ({problem})")]
    BadMasterKey { source_name: String, problem: &'static str },
    #[error(transparent)]
    Random(#[from] RandomError),
    /// The AEAD refused to encrypt (only possible for absurd lengths).
    #[error("encryption failed: plaintext too long")]
    Encrypt,
}

/// The key that wraps every data key. Zeroized on drop, redacted in `Debug`.
pub struct MasterKey(Zeroizing<[u8; KEY_LEN]>);

/// The key that seals one version of one secret. Zeroized on drop, redacted in `Debug`.
pub struct DataKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// What a wrapped data key is bound to.
#[derive(Debug, Clone, Copy)]
pub struct KeyBinding<'a> {
    pub key_id: &'a str,
    pub owner_id: i64,
    pub secret_id: &'a str,
    pub version: u64,
}

/// What a sealed field value is bound to.
#[derive(Debug, Clone, Copy)]
pub struct FieldBinding<'a> {
    pub owner_id: i64,
    pub secret_id: &'a str,
    pub version: u64,
    pub field: &'a str,
}

impl KeyBinding<'_> {
    fn aad(&self) -> Vec<u8> {
        aad(
            DOMAIN_DATA_KEY,
            &[
                self.key_id.as_bytes(),
                &self.owner_id.to_be_bytes(),
                self.secret_id.as_bytes(),
                &self.version.to_be_bytes(),
            ],
        )
    }
}

impl FieldBinding<'_> {
    fn aad(&self) -> Vec<u8> {
        aad(
            DOMAIN_FIELD,
            &[
                &self.owner_id.to_be_bytes(),
                self.secret_id.as_bytes(),
                &self.version.to_be_bytes(),
                self.field.as_bytes(),
            ],
        )
    }
}

/// Length-prefixed parts, so that no two different bindings share an encoding.
fn aad(domain: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    for part in std::iter::once(domain.as_bytes()).chain(parts.iter().copied()) {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

fn seal_raw(key: &[u8; KEY_LEN], plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
    let cipher = XChaCha20Poly1305::new_from_slice(key).map_err(|_| SealError::Encrypt)?;
    let nonce_bytes = random_bytes::<NONCE_LEN>()?;
    let nonce = XNonce::from(*nonce_bytes);
    let ciphertext =
        cipher.encrypt(&nonce, Payload { msg: plaintext, aad }).map_err(|_| SealError::Encrypt)?;
    let mut blob = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
    blob.push(FORMAT_V1);
    blob.extend_from_slice(nonce_bytes.as_slice());
    blob.extend_from_slice(&ciphertext);
    Ok(blob)
}

fn open_raw(key: &[u8; KEY_LEN], blob: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if blob.len() < 1 + NONCE_LEN + TAG_LEN || blob[0] != FORMAT_V1 {
        return Err(SealError::Malformed);
    }
    let cipher = XChaCha20Poly1305::new_from_slice(key).map_err(|_| SealError::Integrity)?;
    let nonce = XNonce::try_from(&blob[1..1 + NONCE_LEN]).map_err(|_| SealError::Malformed)?;
    cipher
        .decrypt(&nonce, Payload { msg: &blob[1 + NONCE_LEN..], aad })
        .map(Zeroizing::new)
        .map_err(|_| SealError::Integrity)
}

impl MasterKey {
    /// A new random master key.
    pub fn generate() -> Result<Self, SealError> {
        Ok(Self(random_bytes::<KEY_LEN>()?))
    }

    /// Parses a key from base64 (standard or URL-safe, padding optional, surrounding whitespace
    /// ignored). `source_name` says where it came from, for the error message.
    pub fn from_base64(text: &str, source_name: &str) -> Result<Self, SealError> {
        let bad =
            |problem| SealError::BadMasterKey { source_name: source_name.to_owned(), problem };
        let trimmed = text.trim();
        let decoded = Zeroizing::new(
            STANDARD
                .decode(trimmed)
                .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed.trim_end_matches('=')))
                .map_err(|_| bad("not base64"))?,
        );
        if decoded.len() != KEY_LEN {
            return Err(bad("wrong length"));
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&decoded);
        Ok(Self(key))
    }

    /// The key as standard base64, for the key file.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_slice()))
    }

    /// Wraps a data key for storage.
    pub fn wrap(&self, key: &DataKey, binding: &KeyBinding<'_>) -> Result<Vec<u8>, SealError> {
        seal_raw(&self.0, key.0.as_slice(), &binding.aad())
    }

    /// Unwraps a stored data key.
    pub fn unwrap_key(&self, blob: &[u8], binding: &KeyBinding<'_>) -> Result<DataKey, SealError> {
        let plain = open_raw(&self.0, blob, &binding.aad())?;
        if plain.len() != KEY_LEN {
            return Err(SealError::Malformed);
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&plain);
        Ok(DataKey(key))
    }

    /// A value stored beside the data that proves, later, that a key is this one.
    pub fn check_value(&self) -> Result<Vec<u8>, SealError> {
        seal_raw(&self.0, CHECK_PLAINTEXT, &aad(DOMAIN_CHECK, &[]))
    }

    /// Whether `blob` (from [`MasterKey::check_value`]) was made with this key.
    pub fn opens_check(&self, blob: &[u8]) -> bool {
        open_raw(&self.0, blob, &aad(DOMAIN_CHECK, &[]))
            .is_ok_and(|plain| plain.as_slice() == CHECK_PLAINTEXT)
    }
}

impl DataKey {
    /// A new random data key.
    pub fn generate() -> Result<Self, SealError> {
        Ok(Self(random_bytes::<KEY_LEN>()?))
    }

    /// Seals one field value.
    pub fn seal(&self, plaintext: &[u8], binding: &FieldBinding<'_>) -> Result<Vec<u8>, SealError> {
        seal_raw(&self.0, plaintext, &binding.aad())
    }

    /// Opens one field value; the plaintext is zeroized when dropped.
    pub fn open(
        &self,
        blob: &[u8],
        binding: &FieldBinding<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        open_raw(&self.0, blob, &binding.aad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(version: u64, name: &str) -> FieldBinding<'_> {
        FieldBinding { owner_id: 1, secret_id: "s1", version, field: name }
    }

    #[test]
    fn field_round_trip_and_binding() {
        let dk = DataKey::generate().unwrap();
        let blob = dk.seal(b"planted-value", &field(1, "A")).unwrap();
        assert!(!blob.windows(7).any(|w| w == b"planted"));
        assert_eq!(dk.open(&blob, &field(1, "A")).unwrap().as_slice(), b"planted-value");
        // Another row: other field, other version, other owner.
        assert!(matches!(dk.open(&blob, &field(1, "B")), Err(SealError::Integrity)));
        assert!(matches!(dk.open(&blob, &field(2, "A")), Err(SealError::Integrity)));
        let other_owner = FieldBinding { owner_id: 2, ..field(1, "A") };
        assert!(matches!(dk.open(&blob, &other_owner), Err(SealError::Integrity)));
        // Another key.
        let dk2 = DataKey::generate().unwrap();
        assert!(matches!(dk2.open(&blob, &field(1, "A")), Err(SealError::Integrity)));
    }

    #[test]
    fn tamper_is_integrity_error_never_a_value() {
        let dk = DataKey::generate().unwrap();
        let blob = dk.seal(b"value", &field(1, "A")).unwrap();
        for i in 1..blob.len() {
            let mut t = blob.clone();
            t[i] ^= 0x01;
            assert!(matches!(dk.open(&t, &field(1, "A")), Err(SealError::Integrity)), "byte {i}");
        }
        assert!(matches!(dk.open(&blob[..20], &field(1, "A")), Err(SealError::Malformed)));
        let mut wrong_format = blob.clone();
        wrong_format[0] = 9;
        assert!(matches!(dk.open(&wrong_format, &field(1, "A")), Err(SealError::Malformed)));
    }

    #[test]
    fn nonces_differ() {
        let dk = DataKey::generate().unwrap();
        let a = dk.seal(b"same", &field(1, "A")).unwrap();
        let b = dk.seal(b"same", &field(1, "A")).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn data_key_wrap_and_master_check() {
        let mk = MasterKey::generate().unwrap();
        let dk = DataKey::generate().unwrap();
        let binding = KeyBinding { key_id: "k1", owner_id: 1, secret_id: "s1", version: 3 };
        let wrapped = mk.wrap(&dk, &binding).unwrap();
        let back = mk.unwrap_key(&wrapped, &binding).unwrap();
        let blob = dk.seal(b"v", &field(1, "A")).unwrap();
        assert_eq!(back.open(&blob, &field(1, "A")).unwrap().as_slice(), b"v");
        let moved = KeyBinding { version: 2, ..binding };
        assert!(matches!(mk.unwrap_key(&wrapped, &moved), Err(SealError::Integrity)));

        let check = mk.check_value().unwrap();
        assert!(mk.opens_check(&check));
        let other = MasterKey::generate().unwrap();
        assert!(!other.opens_check(&check));
        assert!(matches!(other.unwrap_key(&wrapped, &binding), Err(SealError::Integrity)));
    }

    #[test]
    fn master_key_text_forms() {
        let mk = MasterKey::generate().unwrap();
        let text = mk.to_base64();
        let back = MasterKey::from_base64(&format!("  {}\n", text.as_str()), "test").unwrap();
        assert!(back.opens_check(&mk.check_value().unwrap()));
        let e = MasterKey::from_base64("c2hvcnQ=", "MAESTRO_MASTER_KEY").unwrap_err();
        assert_eq!(
            e.to_string(),
            "MAESTRO_MASTER_KEY is not a master key: expected 32 bytes in base64 (wrong length)"
        );
        assert!(MasterKey::from_base64("%%%", "x").is_err());
        assert_eq!(format!("{mk:?}"), "MasterKey(<redacted>)");
    }
}
