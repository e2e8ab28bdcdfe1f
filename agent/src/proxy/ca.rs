//! The session CA: made in memory at start, its key never written anywhere, and leaf
//! certificates it signs for the hosts the proxy terminates TLS for (cached, bounded).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

/// How long the CA is valid: longer than any session is expected to last.
const CA_VALIDITY: Duration = Duration::from_secs(400 * 24 * 3600);
/// How long a leaf is valid; a cached leaf is made anew once less than a day is left.
const LEAF_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
const LEAF_RENEW_BEFORE: Duration = Duration::from_secs(24 * 3600);
/// Certificates are valid from a little before now, for clocks slightly behind.
const BACKDATE: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot make the session CA: {0}")]
    Ca(String),
    #[error("cannot make a certificate for {host}: {reason}")]
    Leaf { host: String, reason: String },
}

struct Cached {
    config: Arc<ServerConfig>,
    not_after: OffsetDateTime,
}

/// The CA, its leaf key, and the leaf cache.
pub struct SessionCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    pem: String,
    /// One key for every leaf: all leaves live in this process anyway, and signing is all a new
    /// host costs.
    leaf_key: KeyPair,
    cache: Mutex<(HashMap<String, Cached>, VecDeque<String>)>,
    capacity: usize,
}

fn random_serial() -> SerialNumber {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // Serials only need to be unique per issuer; the CA itself is fresh per session.
        b = (OffsetDateTime::now_utc().unix_timestamp_nanos() as u128).to_be_bytes();
    }
    b[0] &= 0x7f;
    SerialNumber::from_slice(&b)
}

impl SessionCa {
    pub fn new(capacity: usize) -> Result<SessionCa, CaError> {
        let err = |e: rcgen::Error| CaError::Ca(e.to_string());
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let mut tag = [0u8; 6];
        let _ = getrandom::fill(&mut tag);
        dn.push(DnType::CommonName, format!("Maestro session CA {}", hex::encode(tag)));
        dn.push(DnType::OrganizationName, "Maestro secrets (sealed-secret proxy)");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random_serial());
        params.key_identifier_method = rcgen::KeyIdMethod::Sha256;
        let cert = params.self_signed(&key).map_err(err)?;
        let pem = cert.pem();
        let cert_der = cert.der().clone();
        let issuer = Issuer::new(params, key);
        let leaf_key = KeyPair::generate().map_err(err)?;
        Ok(SessionCa {
            issuer,
            cert_der,
            pem,
            leaf_key,
            cache: Mutex::new((HashMap::new(), VecDeque::new())),
            capacity: capacity.max(1),
        })
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A TLS server configuration presenting a leaf for `host` (normalized), offering h2 and
    /// http/1.1.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        let now = OffsetDateTime::now_utc();
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = cache.0.get(host)
                && c.not_after - now > LEAF_RENEW_BEFORE
            {
                return Ok(c.config.clone());
            }
        }
        let (config, not_after) = self.make(host, now)?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *cache;
        if map.insert(host.to_owned(), Cached { config: config.clone(), not_after }).is_none() {
            order.push_back(host.to_owned());
            while map.len() > self.capacity {
                match order.pop_front() {
                    Some(old) => {
                        map.remove(&old);
                    }
                    None => break,
                }
            }
        }
        Ok(config)
    }

    fn make(
        &self,
        host: &str,
        now: OffsetDateTime,
    ) -> Result<(Arc<ServerConfig>, OffsetDateTime), CaError> {
        let err = |reason: String| CaError::Leaf { host: host.to_owned(), reason };
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => {
                SanType::DnsName(host.try_into().map_err(|e: rcgen::Error| err(e.to_string()))?)
            }
        };
        params.subject_alt_names = vec![san];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - BACKDATE;
        let not_after = now + LEAF_VALIDITY;
        params.not_after = not_after;
        params.serial_number = Some(random_serial());
        let cert =
            params.signed_by(&self.leaf_key, &self.issuer).map_err(|e| err(e.to_string()))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        let chain = vec![cert.der().clone(), self.cert_der.clone()];
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| err(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok((Arc::new(config), not_after))
    }
}
