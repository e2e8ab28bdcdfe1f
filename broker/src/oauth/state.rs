//! The OAuth part of the broker's state: the OAuth store, the HTTP client for providers, the
//! callback URL and the PKCE verifiers of pending authorizations. It holds no rule and needs
//! nothing of `crate::app`, which holds it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use maestro_wire::SecretValue;
use reqwest::Url;
use tokio::sync::Notify;

use super::store::OAuthStore;
use crate::clock;

/// Path of the callback, under the broker's public URL.
pub const CALLBACK_PATH: &str = "/v1/oauth/callback";
/// Per request to a provider, including reading its answer.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(30);
const PROVIDER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why OAuth could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "--public-url {url} cannot be used ({why}); give the https:// URL at which browsers reach this broker"
    )]
    PublicUrl { url: String, why: String },
    #[error("cannot set up the HTTPS client for OAuth providers ({0})")]
    Client(String),
}

/// The OAuth part of the broker's state.
pub struct OAuth {
    pub store: Arc<dyn OAuthStore>,
    /// Client for providers: no redirects, bounded time.
    pub http: reqwest::Client,
    /// `<public URL>/v1/oauth/callback`, registered with each provider's OAuth app.
    pub redirect_uri: String,
    /// PKCE verifiers of pending authorizations, by state hash, with their expiry: kept in
    /// memory only, never stored.
    verifiers: Mutex<HashMap<Vec<u8>, (i64, SecretValue)>>,
    /// Wakes the refresh task when a token's schedule changed.
    pub wake: Notify,
}

impl OAuth {
    /// OAuth over `store`, with callbacks at `redirect_uri`.
    pub fn new(store: Arc<dyn OAuthStore>, redirect_uri: String) -> Result<Self, SetupError> {
        crate::tls::provider();
        let http = reqwest::Client::builder()
            .timeout(PROVIDER_TIMEOUT)
            .connect_timeout(PROVIDER_CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("maestro-broker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SetupError::Client(e.to_string()))?;
        Ok(Self {
            store,
            http,
            redirect_uri,
            verifiers: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        })
    }

    /// The redirect URI: from `--public-url`, or from the address the broker listens on
    /// (`localhost` for an unspecified address).
    pub fn redirect_uri(public_url: Option<&str>, addr: SocketAddr) -> Result<String, SetupError> {
        let base = match public_url {
            Some(text) => {
                let bad =
                    |why: &str| SetupError::PublicUrl { url: text.to_owned(), why: why.to_owned() };
                let url = Url::parse(text).map_err(|e| bad(&e.to_string()))?;
                if url.scheme() != "https" {
                    return Err(bad("not https"));
                }
                if url.query().is_some() || url.fragment().is_some() || url.host().is_none() {
                    return Err(bad("a base URL has a host and no query or fragment"));
                }
                url.as_str().trim_end_matches('/').to_owned()
            }
            None if addr.ip().is_unspecified() => format!("https://localhost:{}", addr.port()),
            None => format!("https://{addr}"),
        };
        Ok(format!("{base}{CALLBACK_PATH}"))
    }

    fn verifiers(&self) -> MutexGuard<'_, HashMap<Vec<u8>, (i64, SecretValue)>> {
        // Every change is one insert or remove: a poisoned map is still consistent.
        self.verifiers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a verifier until its authorization expires, and forgets expired ones.
    pub fn keep_verifier(&self, state_hash: Vec<u8>, expires_at: i64, verifier: SecretValue) {
        let now = clock::now();
        let mut map = self.verifiers();
        map.retain(|_, (expiry, _)| *expiry > now);
        map.insert(state_hash, (expires_at, verifier));
    }

    /// Takes a verifier out (single use).
    pub fn take_verifier(&self, state_hash: &[u8]) -> Option<SecretValue> {
        self.verifiers().remove(state_hash).map(|(_, v)| v)
    }

    /// Drops a verifier (the authorization was cancelled).
    pub fn forget_verifier(&self, state_hash: &[u8]) {
        self.verifiers().remove(state_hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uri_from_flag_or_address() {
        let addr: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        assert_eq!(
            OAuth::redirect_uri(None, addr).unwrap(),
            "https://127.0.0.1:8443/v1/oauth/callback"
        );
        let any: SocketAddr = "0.0.0.0:9".parse().unwrap();
        assert_eq!(
            OAuth::redirect_uri(None, any).unwrap(),
            "https://localhost:9/v1/oauth/callback"
        );
        assert_eq!(
            OAuth::redirect_uri(Some("https://maestro.example/base/"), addr).unwrap(),
            "https://maestro.example/base/v1/oauth/callback"
        );
        assert!(OAuth::redirect_uri(Some("http://maestro.example"), addr).is_err());
        assert!(OAuth::redirect_uri(Some("https://m.example/?a=b"), addr).is_err());
    }
}
