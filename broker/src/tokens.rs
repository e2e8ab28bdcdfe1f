//! Random identifiers and bearer tokens. A token is shown once; the database keeps only its
//! SHA-256, so a copy of the database does not let anyone in.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use maestro_wire::SecretValue;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Prefix of user API tokens (`maestro token`), so that secret scanners can spot them.
pub const USER_TOKEN_PREFIX: &str = "mst_";
/// Prefix of one-time enrollment tokens.
pub const ENROLLMENT_TOKEN_PREFIX: &str = "mse_";

/// The operating system's random number generator failed; nothing can be made safely.
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed ({0}); check /dev/urandom and retry")]
pub struct RandomError(getrandom::Error);

/// `N` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<Zeroizing<[u8; N]>, RandomError> {
    let mut buf = Zeroizing::new([0u8; N]);
    getrandom::fill(buf.as_mut_slice()).map_err(RandomError)?;
    Ok(buf)
}

/// A new token: `prefix` followed by 32 random bytes in unpadded base64url.
pub fn generate(prefix: &str) -> Result<SecretValue, RandomError> {
    let bytes = random_bytes::<32>()?;
    let mut text = String::with_capacity(prefix.len() + 43);
    text.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(bytes.as_slice(), &mut text);
    Ok(SecretValue::new(text))
}

/// What the database stores of a token.
pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A random identifier: `bytes` random bytes in lower-case hex.
pub fn random_id<const N: usize>() -> Result<String, RandomError> {
    Ok(hex::encode(random_bytes::<N>()?.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_hashed() {
        let a = generate(USER_TOKEN_PREFIX).unwrap();
        let b = generate(USER_TOKEN_PREFIX).unwrap();
        assert!(a.expose().starts_with("mst_"));
        assert_eq!(a.len(), 4 + 43);
        assert_ne!(a.expose(), b.expose());
        assert_eq!(hash(a.expose()).len(), 32);
        assert_ne!(hash(a.expose()), hash(b.expose()));
        assert_eq!(random_id::<16>().unwrap().len(), 32);
    }
}
