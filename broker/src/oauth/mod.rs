//! OAuth integrations: providers (GitHub, GitLab, Microsoft, custom), the authorization code
//! flow with PKCE and a single-use state, a broker-side refresh of every token before it
//! expires, and revocation at the provider when an OAuth secret is deleted or marked compromised.
//!
//! * [`providers`]: registering a provider (presets, endpoints, scopes, sealed client secret).
//! * [`authorize`]: `connect` / `reconnect` start an authorization; the callback exchanges the
//!   code and stores the secret.
//! * [`refresh`]: the task that refreshes tokens at about 2/3 of their life, with jitter,
//!   backoff on transient failures, and re-authorization when the provider refuses.
//! * [`endpoint`]: the HTTP calls to a provider's token and revocation endpoints.
//! * the `/v1/oauth/...` routes are `crate::api::oauth`'s.
//! * [`store`]: [`store::OAuthStore`], what each store engine implements for OAuth.
//! * [`state`]: [`OAuth`], the OAuth part of the broker's state (no rule in it, so that
//!   `crate::app` needs nothing else of this module).
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
pub mod state;
pub mod store;

use maestro_wire::SecretValue;
use tracing::warn;

use crate::app::App;
use crate::domain::DomainResult;
use crate::store::SecretRecord;
use endpoint::Client;
pub use state::{CALLBACK_PATH, OAuth, SetupError};

/// What revoking an OAuth secret's tokens takes, read before the secret is deleted (or marked
/// compromised).
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
                    let answer = client.revoke(&url, token, hint).await;
                    // RFC 7009 answers 200 for a token that is no longer valid, but some
                    // providers (Google) end the whole grant with the first revocation and
                    // then answer `invalid_token` for the access token: already revoked.
                    let already_gone = matches!(
                        &answer,
                        Err(endpoint::EndpointError::Refused { code, .. })
                            if code == "invalid_token" && !revoked.is_empty()
                    );
                    if let (Err(e), false) = (answer, already_gone) {
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
