//! OAuth integrations: providers (GitHub, GitLab, Microsoft, custom), the authorization code
//! flow with PKCE and a single-use state, a broker-side refresh of every token before it
//! expires, and revocation at the provider when an OAuth secret is deleted.
//!
//! * [`providers`]: registering a provider (presets, endpoints, scopes, sealed client secret).
//! * [`authorize`]: `connect` / `reconnect` start an authorization; the callback exchanges the
//!   code and stores the secret.
//! * [`refresh`]: the task that refreshes tokens at about 2/3 of their life, with jitter,
//!   backoff on transient failures, and re-authorization when the provider refuses.
//! * [`endpoint`]: the HTTP calls to a provider's token and revocation endpoints.
//! * the `/v1/oauth/...` routes are `crate::api::oauth`'s.
//! * [`store`]: [`store::OAuthStore`], what each store engine implements for OAuth.
//! * [`sealing`], [`pkce`], [`fields`]: sealing of OAuth values, PKCE, secret fields.
//!
//! The access token is the secret's catalog field (sealed like any value, delivered to agents
//! like any value); the refresh token never leaves the broker. Each refresh is a new version of
//! the secret, pushed to the sessions where it is active as an `updated` event. No token, code,
//! verifier, state or client secret is ever logged: log lines name secrets, providers, URLs and
//! the provider's error codes.

pub mod authorize;
pub mod endpoint;
pub mod fields;
pub mod pkce;
pub mod providers;
pub mod refresh;
pub mod sealing;
pub mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use maestro_wire::SecretValue;
use reqwest::Url;
use tokio::sync::Notify;
use tracing::warn;

use crate::app::App;
use crate::clock;
use crate::domain::DomainResult;
use crate::store::SecretRecord;
use endpoint::Client;
use store::OAuthStore;

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

/// What revoking a deleted OAuth secret's tokens takes, read before the secret is deleted.
pub struct Revocation {
    provider: String,
    plan: Plan,
}

enum Plan {
    /// No endpoint: the text says what the user does instead.
    NoEndpoint(String),
    /// The tokens could not be read (integrity); nothing can be revoked.
    Unreadable(String),
    Revoke {
        url: String,
        client_id: String,
        client_secret: SecretValue,
        tokens: Vec<(SecretValue, &'static str)>,
    },
}

/// Reads what revocation needs; `None` when the secret is not an OAuth secret.
pub async fn prepare_revocation(
    app: &App,
    secret: &SecretRecord,
) -> DomainResult<Option<Revocation>> {
    let Some(view) = app.oauth.store.token(&secret.id).await? else { return Ok(None) };
    let Some(provider) = app.oauth.store.provider_by_id(&view.token.provider_id).await? else {
        return Ok(None);
    };
    let plan = match &provider.revoke_url {
        None => Plan::NoEndpoint(providers::revocation_text(&provider)),
        Some(url) => {
            let refresh = refresh::open_refresh_token(app, &view.token, view.owner_id);
            let secret_fields = crate::domain::material::open_fields(app, secret, None).await;
            let client_secret = providers::client_secret(&app.master, &provider);
            match (refresh, secret_fields, client_secret) {
                (Ok(refresh), Ok(mut fields), Ok(client_secret)) => {
                    let mut tokens = Vec::new();
                    if let Some(r) = refresh {
                        tokens.push((r, "refresh_token"));
                    }
                    if let Some(a) = fields.remove(&provider.token_field) {
                        tokens.push((a, "access_token"));
                    }
                    Plan::Revoke {
                        url: url.clone(),
                        client_id: provider.client_id.clone(),
                        client_secret,
                        tokens,
                    }
                }
                _ => Plan::Unreadable(
                    "not revoked: the stored tokens failed their integrity check; revoke the grant in the provider's settings".to_owned(),
                ),
            }
        }
    };
    Ok(Some(Revocation { provider: provider.name, plan }))
}

impl Revocation {
    /// Revokes (RFC 7009) and says what happened, in one line.
    pub async fn run(self, app: &App) -> String {
        match self.plan {
            Plan::NoEndpoint(text) => format!("not revoked: {text}"),
            Plan::Unreadable(text) => text,
            Plan::Revoke { url, client_id, client_secret, tokens } => {
                let client = Client {
                    http: &app.oauth.http,
                    client_id: &client_id,
                    client_secret: &client_secret,
                };
                let mut revoked = Vec::new();
                for (token, hint) in &tokens {
                    if let Err(e) = client.revoke(&url, token, hint).await {
                        warn!(provider = %self.provider, error = %e, "OAuth revocation failed");
                        let done = if revoked.is_empty() {
                            String::new()
                        } else {
                            format!(" after revoking the {}", revoked.join(" and "))
                        };
                        return format!(
                            "revocation at {url} failed{done} ({e}); the {} may still be valid: revoke the grant in the provider's settings",
                            hint.replace('_', " ")
                        );
                    }
                    revoked.push(hint.replace('_', " "));
                }
                if revoked.is_empty() {
                    "nothing to revoke: no token was stored".to_owned()
                } else {
                    format!("revoked the {} at {url}", revoked.join(" and "))
                }
            }
        }
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
