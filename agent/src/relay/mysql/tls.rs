//! TLS from the relay to the MySQL server, verified with rustls: `VERIFY_IDENTITY` checks the
//! chain and the server's name, `VERIFY_CA` the chain only (MySQL's meanings). The roots are
//! the secret's `ssl_ca` certificates, or the system's without one.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::ServerName;

use crate::relay::verify::{ChainOnly, pem_roots};

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// The chain only.
    Ca,
    /// The chain and the name.
    Identity,
}

/// The client configuration for a secret: `ca` is its `ssl_ca` field (PEM), if set.
pub fn config(ca: Option<&str>, verify: Verify) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(pem) => roots = pem_roots(pem, "ssl_ca")?,
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err("no system root certificates; set the secret's ssl_ca".to_owned());
            }
        }
    }
    let config = match verify {
        Verify::Identity => {
            rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth()
        }
        Verify::Ca => {
            let inner = WebPkiServerVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| format!("cannot build the certificate verifier: {e}"))?;
            rustls::ClientConfig::builder()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
                .with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}

/// The server name to verify (and send): a DNS name or an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_owned()).map_err(|_| format!("'{host}' is not a server name"))
}
