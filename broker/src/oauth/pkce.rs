//! The single-use `state` and the PKCE verifier and challenge (RFC 7636, method S256).
//!
//! The state travels in the authorization URL and comes back to the callback; the database
//! keeps only its SHA-256. The verifier never leaves the broker's memory until the code
//! exchange, where it goes to the provider's token endpoint; the challenge
//! (`BASE64URL(SHA256(verifier))`) is what the authorization URL carries.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use maestro_wire::SecretValue;
use sha2::{Digest, Sha256};

use crate::tokens::{RandomError, random_bytes};

/// The PKCE method: the only one worth using (`plain` shows the verifier in the URL).
pub const METHOD: &str = "S256";

/// 32 random bytes in unpadded base64url: 43 characters, within RFC 7636's 43 to 128.
fn random_text() -> Result<SecretValue, RandomError> {
    let bytes = random_bytes::<32>()?;
    Ok(SecretValue::new(URL_SAFE_NO_PAD.encode(bytes.as_slice())))
}

/// A new state.
pub fn new_state() -> Result<SecretValue, RandomError> {
    random_text()
}

/// A new verifier.
pub fn new_verifier() -> Result<SecretValue, RandomError> {
    random_text()
}

/// The S256 challenge of a verifier.
pub fn challenge(verifier: &SecretValue) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.expose().as_bytes()))
}

/// What the database keeps of a state.
pub fn state_hash(state: &str) -> Vec<u8> {
    Sha256::digest(state.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_7636_appendix_b_example() {
        let verifier = SecretValue::from("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(challenge(&verifier), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn verifiers_fit_the_rfc_and_differ() {
        let a = new_verifier().unwrap();
        let b = new_verifier().unwrap();
        assert_eq!(a.len(), 43);
        assert!(a.expose().bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a, b);
        assert_eq!(state_hash("s").len(), 32);
    }
}
