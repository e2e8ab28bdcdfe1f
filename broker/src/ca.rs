//! The broker's certificate authority.
//!
//! One CA key pair (ECDSA P-256) made at first start, kept in `ca.key`/`ca.pem` (0600). It signs:
//!
//! * the broker's own server certificate, made anew at every start, for `localhost`,
//!   `127.0.0.1`, `::1` and every `--hostname`, with the server-auth EKU;
//! * session client certificates, from a CSR sent with an enrollment token (or, to renew, over
//!   mTLS with the session's current certificate).
//!
//! # Session certificate policy
//!
//! Of the CSR only the public key is used; the CSR's own signature is checked first, so the
//! requester holds the private key. Everything else is ours: the subject, one URI SAN
//! `spiffe://maestro/session/<id>` naming the session the token (or current certificate) belongs
//! to, `CA:FALSE`, digital-signature key usage and the client-auth EKU only, a random 128-bit
//! serial, `not_before` five minutes in the past (clock skew), and `not_after` no later than
//! the session's expiry, 24 hours from now, and the broker's `--cert-ttl`. A CSR that asks for
//! other names, CA rights or other usages gets none of them.

use std::net::IpAddr;

use maestro_wire::limits::MAX_CSR_BYTES;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use zeroize::Zeroizing;

use crate::clock;
use crate::datadir::{self, DataDir, DataDirError};
use crate::tokens::{self, RandomError};

/// How far in the past certificates start, to allow for clock skew.
pub const BACKDATE_SECS: i64 = 300;
const CA_VALIDITY_SECS: i64 = 10 * 365 * 24 * 3600;
const SERVER_VALIDITY_SECS: i64 = 365 * 24 * 3600;
const MAX_PEM_FILE: u64 = 64 * 1024;

/// Why a CA operation failed. CSR problems are the requester's; the rest are the broker's.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot make a key pair: {0}")]
    KeyGeneration(rcgen::Error),
    #[error("cannot sign a certificate: {0}")]
    Sign(rcgen::Error),
    #[error("{path} is not a valid {what}: {problem}; restore it from a backup")]
    Load { path: String, what: &'static str, problem: String },
    #[error(
        "the CA files exist only in part ({missing} is missing); restore both ca.key and ca.pem"
    )]
    Partial { missing: String },
    #[error("the CSR is {size} bytes; the limit is {MAX_CSR_BYTES} bytes")]
    CsrTooLarge { size: usize },
    #[error(
        "the CSR is not a valid PKCS#10 request signed by its own key ({0}); send a PEM \"CERTIFICATE REQUEST\""
    )]
    BadCsr(String),
    #[error("the session has no time left for a certificate")]
    NoTimeLeft,
    #[error(transparent)]
    Files(#[from] DataDirError),
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// A certificate the CA issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    /// Lower-case hex.
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// The loaded CA: the signing key and the certificate clients trust.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

fn random_serial() -> Result<(SerialNumber, String), RandomError> {
    let mut bytes = *tokens::random_bytes::<16>()?;
    // Positive (top bit clear) and of full length (second bit set): RFC 5280 wants positive
    // serials, and a fixed length avoids a leading zero being stripped.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok((SerialNumber::from_slice(&bytes), hex::encode(bytes)))
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Maestro");
    dn.push(DnType::CommonName, common_name);
    dn
}

impl Ca {
    /// Loads the CA from the data directory, or makes one if neither file exists.
    pub fn load_or_create(dir: &DataDir) -> Result<Self, CaError> {
        let key = datadir::read_small(&dir.ca_key(), MAX_PEM_FILE)?.map(Zeroizing::new);
        let cert = datadir::read_small(&dir.ca_pem(), MAX_PEM_FILE)?;
        match (key, cert) {
            (Some(key), Some(cert)) => Self::load(dir, &key, &cert),
            (None, None) => {
                let (ca, key_pem) = Self::create(clock::now())?;
                datadir::write_private(&dir.ca_key(), key_pem.as_bytes())?;
                datadir::write_private(&dir.ca_pem(), ca.cert_pem.as_bytes())?;
                Ok(ca)
            }
            (None, Some(_)) => {
                Err(CaError::Partial { missing: dir.ca_key().display().to_string() })
            }
            (Some(_), None) => {
                Err(CaError::Partial { missing: dir.ca_pem().display().to_string() })
            }
        }
    }

    fn load(dir: &DataDir, key: &[u8], cert: &[u8]) -> Result<Self, CaError> {
        let load_err = |path: std::path::PathBuf, what, problem: String| CaError::Load {
            path: path.display().to_string(),
            what,
            problem,
        };
        let key_text = std::str::from_utf8(key)
            .map_err(|_| load_err(dir.ca_key(), "PEM private key", "not text".into()))?;
        let key = KeyPair::from_pem(key_text)
            .map_err(|e| load_err(dir.ca_key(), "PEM private key", e.to_string()))?;
        let cert_pem = String::from_utf8(cert.to_vec())
            .map_err(|_| load_err(dir.ca_pem(), "PEM certificate", "not text".into()))?;
        let der = pem_certificate_der(&cert_pem).ok_or_else(|| {
            load_err(dir.ca_pem(), "PEM certificate", "no CERTIFICATE block".into())
        })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| load_err(dir.ca_pem(), "PEM certificate", e.to_string()))?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(load_err(
                dir.ca_pem(),
                "certificate for ca.key",
                "its public key is not ca.key's".into(),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&der.into(), key)
            .map_err(|e| load_err(dir.ca_pem(), "CA certificate", e.to_string()))?;
        Ok(Self { issuer, cert_pem })
    }

    /// A new CA; returns it and its private key in PEM.
    pub fn create(now: i64) -> Result<(Self, Zeroizing<String>), CaError> {
        let key = KeyPair::generate().map_err(CaError::KeyGeneration)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn("Maestro broker CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?.0);
        params.not_before = clock::datetime(now - BACKDATE_SECS);
        params.not_after = clock::datetime(now + CA_VALIDITY_SECS);
        let cert = params.self_signed(&key).map_err(CaError::Sign)?;
        let key_pem = Zeroizing::new(key.serialize_pem());
        let cert_pem = cert.pem();
        let issuer = Issuer::new(params, key);
        Ok((Self { issuer, cert_pem }, key_pem))
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A new server key and certificate for these names; returns (certificate PEM, key PEM).
    pub fn server_certificate(
        &self,
        hostnames: &[String],
        now: i64,
    ) -> Result<(String, Zeroizing<String>), CaError> {
        let key = KeyPair::generate().map_err(CaError::KeyGeneration)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn("Maestro broker");
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
        for h in hostnames {
            if !names.contains(h) {
                names.push(h.clone());
            }
        }
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => name.as_str().try_into().map(SanType::DnsName).map_err(CaError::Sign),
            })
            .collect::<Result<_, _>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.serial_number = Some(random_serial()?.0);
        params.not_before = clock::datetime(now - BACKDATE_SECS);
        params.not_after = clock::datetime(now + SERVER_VALIDITY_SECS);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).map_err(CaError::Sign)?;
        Ok((cert.pem(), Zeroizing::new(key.serialize_pem())))
    }

    /// Signs a session certificate for the CSR's public key; see the module docs for the
    /// policy. `not_after` is the latest end the caller allows (already the minimum of the
    /// session's expiry and the TTLs).
    pub fn sign_session(
        &self,
        csr_pem: &str,
        session_id: &str,
        now: i64,
        not_after: i64,
    ) -> Result<Issued, CaError> {
        if csr_pem.len() > MAX_CSR_BYTES {
            return Err(CaError::CsrTooLarge { size: csr_pem.len() });
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        if not_after <= now {
            return Err(CaError::NoTimeLeft);
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&format!("maestro session {session_id}"));
        let uri = maestro_wire::session_uri(session_id);
        params.subject_alt_names =
            vec![SanType::URI(uri.as_str().try_into().map_err(CaError::Sign)?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let (serial, serial_hex) = random_serial()?;
        params.serial_number = Some(serial);
        let not_before = now - BACKDATE_SECS;
        params.not_before = clock::datetime(not_before);
        params.not_after = clock::datetime(not_after);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&csr.public_key, &self.issuer).map_err(CaError::Sign)?;
        Ok(Issued { cert_pem: cert.pem(), serial: serial_hex, not_before, not_after })
    }
}

/// The DER of the first CERTIFICATE block of a PEM text.
pub fn pem_certificate_der(pem: &str) -> Option<Vec<u8>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).ok().map(|c| c.to_vec())
}

#[cfg(test)]
mod tests {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;

    use super::*;

    fn parse(pem: &str) -> Vec<u8> {
        pem_certificate_der(pem).unwrap()
    }

    #[test]
    fn session_certificate_takes_only_the_public_key() {
        let now = clock::now();
        let (ca, _) = Ca::create(now).unwrap();
        // A CSR that asks for another SAN, CA rights and server auth.
        let key = KeyPair::generate().unwrap();
        let mut asked = CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
        asked
            .subject_alt_names
            .push(SanType::URI("spiffe://maestro/session/other".try_into().unwrap()));
        asked.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        asked.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        asked.distinguished_name = dn("i am the CA");
        let csr = asked.serialize_request(&key).unwrap().pem().unwrap();

        let issued = ca.sign_session(&csr, "abc123", now, now + 3600).unwrap();
        let der = parse(&issued.cert_pem);
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
        assert_eq!(cert.public_key().raw, key.subject_public_key_info().as_slice());
        let mut uris = Vec::new();
        let mut saw_bc = false;
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for n in &san.general_names {
                        match n {
                            GeneralName::URI(u) => uris.push(u.to_string()),
                            other => panic!("unexpected SAN {other:?}"),
                        }
                    }
                }
                ParsedExtension::BasicConstraints(bc) => {
                    saw_bc = true;
                    assert!(!bc.ca);
                }
                ParsedExtension::ExtendedKeyUsage(eku) => {
                    assert!(eku.client_auth && !eku.server_auth && !eku.any);
                }
                _ => {}
            }
        }
        assert!(saw_bc);
        assert_eq!(uris, vec!["spiffe://maestro/session/abc123".to_owned()]);
        assert_eq!(cert.validity().not_after.timestamp(), now + 3600);
        assert_eq!(cert.validity().not_before.timestamp(), now - BACKDATE_SECS);
        assert_eq!(hex::encode(cert.raw_serial()), issued.serial);
        assert!(!cert.subject().to_string().contains("i am the CA"));

        let again = ca.sign_session(&csr, "abc123", now, now + 3600).unwrap();
        assert_ne!(again.serial, issued.serial);
    }

    #[test]
    fn bad_csrs_are_refused() {
        let now = clock::now();
        let (ca, _) = Ca::create(now).unwrap();
        assert!(matches!(ca.sign_session("garbage", "s", now, now + 60), Err(CaError::BadCsr(_))));
        let big = "A".repeat(MAX_CSR_BYTES + 1);
        assert!(matches!(
            ca.sign_session(&big, "s", now, now + 60),
            Err(CaError::CsrTooLarge { .. })
        ));
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap();
        assert!(matches!(ca.sign_session(&csr, "s", now, now), Err(CaError::NoTimeLeft)));
    }

    #[test]
    fn ca_round_trips_through_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        let ca = Ca::load_or_create(&dir).unwrap();
        let again = Ca::load_or_create(&dir).unwrap();
        assert_eq!(ca.cert_pem(), again.cert_pem());
        let (server, _) =
            again.server_certificate(&["broker.example".into()], clock::now()).unwrap();
        let der = parse(&server);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san.value.general_names.iter().map(|n| n.to_string()).collect();
        assert!(names.iter().any(|n| n.contains("broker.example")), "{names:?}");
        assert!(names.iter().any(|n| n.contains("localhost")));
        std::fs::remove_file(dir.ca_key()).unwrap();
        assert!(matches!(Ca::load_or_create(&dir), Err(CaError::Partial { .. })));
    }
}
