//! The TLS server configuration: one port for both faces of the broker.
//!
//! Client certificates are optional at the TLS layer (`allow_unauthenticated`), so that the
//! user API (bearer token, no certificate) and the agent API (session certificate) share a
//! port. A certificate that is presented must chain to the broker's CA, be within its validity
//! and carry the client-auth EKU, or the handshake fails. Whether a route needs a certificate,
//! and whether its session is still live, is decided per request by [`crate::auth`].
//!
//! A TLS 1.3 client whose certificate is refused often sees only "connection closed", so the
//! verifier logs every refusal with its reason.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use tracing::warn;

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} PEM: {problem}")]
    Pem { what: &'static str, problem: String },
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

/// Installs aws-lc-rs as the process's rustls provider (once; later calls are no-ops) and
/// returns it. With two providers compiled in, rustls refuses to guess, so we say which.
pub fn provider() -> Arc<CryptoProvider> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// The server configuration: the server certificate, the CA for client certificates, and
/// ALPN for HTTP/2 and HTTP/1.1.
pub fn server_config(
    ca_pem: &str,
    server_cert_pem: &str,
    server_key_pem: &str,
) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert =
            cert.map_err(|e| TlsError::Pem { what: "CA certificate", problem: e.to_string() })?;
        roots.add(cert).map_err(|e| TlsError::Config(e.to_string()))?;
    }
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let verifier = Arc::new(LoggingVerifier { inner });
    let chain = CertificateDer::pem_slice_iter(server_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { what: "server certificate", problem: e.to_string() })?;
    let key = PrivateKeyDer::from_pem_slice(server_key_pem.as_bytes())
        .map_err(|e| TlsError::Pem { what: "server key", problem: e.to_string() })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The WebPKI verifier, with every refusal logged (the client may never learn why).
#[derive(Debug)]
struct LoggingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for LoggingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner.verify_client_cert(end_entity, intermediates, now).inspect_err(|e| {
            warn!(reason = %e, subject = %describe(end_entity), "refused a client certificate");
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss).inspect_err(|e| {
            warn!(reason = %e, "refused a client certificate's handshake signature");
        })
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss).inspect_err(|e| {
            warn!(reason = %e, "refused a client certificate's handshake signature");
        })
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Subject and SANs of a certificate, for the log (names only: no key material).
fn describe(cert: &CertificateDer<'_>) -> String {
    match x509_parser::parse_x509_certificate(cert) {
        Ok((_, c)) => {
            let sans = c
                .subject_alternative_name()
                .ok()
                .flatten()
                .map(|s| {
                    s.value
                        .general_names
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            format!("subject={} san=[{}]", c.subject(), sans)
        }
        Err(_) => "unparseable certificate".to_owned(),
    }
}
