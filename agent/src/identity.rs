//! The agent's TLS identity: a key pair made in memory (never written anywhere), the CSR that
//! carries its public key to the broker, and when to renew the certificate the broker returns.

use std::time::{Duration, SystemTime};

use thiserror::Error;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("cannot generate a key pair: {0}")]
    GenerateKey(#[source] rcgen::Error),
    #[error("cannot build the certificate signing request: {0}")]
    BuildCsr(#[source] rcgen::Error),
    #[error("the broker's certificate expiry {0:?} is not an RFC 3339 time; upgrade the broker")]
    BadNotAfter(String),
}

/// A fresh key pair and its CSR, waiting for the broker's certificate.
pub struct PendingIdentity {
    key_pem: Zeroizing<String>,
    /// PKCS#10, PEM. Only its public key matters to the broker.
    pub csr_pem: String,
}

impl std::fmt::Debug for PendingIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingIdentity").field("key_pem", &"<redacted>").finish()
    }
}

impl PendingIdentity {
    /// An ECDSA P-256 key pair and a CSR signed with it.
    pub fn generate() -> Result<Self, IdentityError> {
        let key = rcgen::KeyPair::generate().map_err(IdentityError::GenerateKey)?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, "maestro-agent");
        let csr = params.serialize_request(&key).map_err(IdentityError::BuildCsr)?;
        let csr_pem = csr.pem().map_err(IdentityError::BuildCsr)?;
        Ok(PendingIdentity { key_pem: Zeroizing::new(key.serialize_pem()), csr_pem })
    }

    /// The certificate and the key as one PEM buffer, the form reqwest takes an identity in.
    pub fn with_certificate(&self, cert_pem: &str) -> Zeroizing<Vec<u8>> {
        let mut pem = Zeroizing::new(Vec::with_capacity(cert_pem.len() + self.key_pem.len() + 1));
        pem.extend_from_slice(cert_pem.as_bytes());
        if !cert_pem.ends_with('\n') {
            pem.push(b'\n');
        }
        pem.extend_from_slice(self.key_pem.as_bytes());
        pem
    }
}

/// Parses the certificate's `not_after` (RFC 3339).
pub fn parse_not_after(text: &str) -> Result<SystemTime, IdentityError> {
    let t = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| IdentityError::BadNotAfter(text.chars().take(64).collect()))?;
    Ok(SystemTime::from(t))
}

/// When to renew a certificate valid until `not_after`, seen at `now`: two thirds of the way
/// through its remaining life, which leaves a third for retries when the broker is away.
pub fn renewal_delay(now: SystemTime, not_after: SystemTime) -> Duration {
    let remaining = not_after.duration_since(now).unwrap_or(Duration::ZERO);
    remaining * 2 / 3
}

/// RFC 3339 for a usage report's time.
pub fn rfc3339_now() -> String {
    OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_a_csr_and_an_identity_pem() {
        let id = PendingIdentity::generate().unwrap();
        assert!(id.csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let pem =
            id.with_certificate("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----");
        let text = std::str::from_utf8(&pem).unwrap();
        assert!(text.contains("-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----"));
        assert!(!format!("{id:?}").contains("PRIVATE"));
        // Each identity has its own key.
        let other = PendingIdentity::generate().unwrap();
        assert_ne!(*other.key_pem, *id.key_pem);
    }

    #[test]
    fn renews_at_two_thirds_of_the_remaining_life() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let not_after = now + Duration::from_secs(3600);
        assert_eq!(renewal_delay(now, not_after), Duration::from_secs(2400));
        assert_eq!(renewal_delay(not_after, now), Duration::ZERO);
        let t = parse_not_after("1970-01-12T13:46:40Z").unwrap();
        assert_eq!(t, now);
        assert!(parse_not_after("tomorrow").is_err());
    }
}
