//! Who is asking, as extractors of the HTTP layer: a token's holder (bearer token) or a
//! session's agent (client certificate, judged by [`crate::domain::agents::authenticate`]).
//!
//! * [`Caller`] / [`CurrentUser`]: `Authorization: Bearer <token>`. The token's SHA-256 is
//!   looked up through a unique index ([`crate::store::tokens`]), so no comparison ever sees the
//!   token itself and timing says nothing about how close a guess was. The row is read on every
//!   request, not cached: a revoked (deleted) or expired token and a disabled user are refused
//!   at once, by every broker that shares the database. A token acts for its user (its own or a
//!   service account's; a team's service account's token acts as the team) and only within its scopes: each route needs one ([`required_scope`]),
//!   and a route missing from that table needs `admin` (fails closed). Out of scope: 403 with
//!   one line naming the missing scope, before the handler reads anything.
//! * Last use is recorded at most once a minute per token ([`LastUses`]), off the request's
//!   path, so a flood of requests is not a flood of writes.
//! * [`AgentSession`]: the leaf certificate the client presented during the TLS handshake
//!   (already verified against our CA, its validity and EKU by [`crate::tls`]). The session is
//!   read from its URI SAN `spiffe://maestro/session/<id>` and nowhere else. The session must
//!   exist and be live; a certificate of an ended session is refused (and audited as denied).
//!   Its expiry is checked again here because an HTTP/2 connection may outlive it. Of a
//!   session's certificates only the newest is accepted, and for a short overlap after a
//!   renewal the one it replaced ([`crate::store::SessionSerials`]): a renewal retires the old
//!   certificate although it is still within its validity.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::Method;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum_server::tls::TlsInfo;
use maestro_wire::api::ErrorCode;
use maestro_wire::tokens::{Scope, allows};
use tracing::warn;

use crate::api::error::Failure;
use crate::app::SharedApp;
use crate::clock;
use crate::domain::agents;
pub use crate::domain::agents::{AgentSession, USAGE_GRACE_SECS};
use crate::store::UserRecord;
use crate::tokens;

/// A token's last use is written at most this often.
pub const LAST_USE_EVERY_SECS: i64 = 60;
/// Tokens whose last write this broker remembers; past it the memory starts afresh (the
/// guarded `UPDATE` still keeps the writes to one a minute per broker and token).
const LAST_USES_KEPT: usize = 10_000;
/// Longest `Authorization` value taken.
const MAX_TOKEN_CHARS: usize = 256;

/// When this broker last recorded each token's use.
#[derive(Debug, Default)]
pub struct LastUses(Mutex<HashMap<String, i64>>);

impl LastUses {
    /// Whether `id`'s use at `now` should be written (and, if so, remembers it as written).
    fn due(&self, id: &str, now: i64) -> bool {
        let Ok(mut map) = self.0.lock() else { return false };
        if map.get(id).is_some_and(|at| now - at < LAST_USE_EVERY_SECS) {
            return false;
        }
        if map.len() >= LAST_USES_KEPT {
            map.clear();
        }
        map.insert(id.to_owned(), now);
        true
    }
}

/// Who a request acts for, and what it may do.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user it acts for (a service account's owner, for its tokens).
    pub user: UserRecord,
    /// The token's public id.
    pub token_id: String,
    /// The service account the token belongs to; `None`: the user's own token.
    pub service_account: Option<String>,
    pub scopes: Vec<Scope>,
    /// Whether `user` is a team: the token is a team's service account's, acting as the team
    /// principal (its secrets and sessions, nothing of any member's).
    pub is_team: bool,
}

impl Caller {
    /// Refuses unless the token has `needed` (or `admin`), naming what it lacks.
    pub fn require(&self, needed: Scope, what: &str) -> Result<(), Failure> {
        if allows(&self.scopes, needed) {
            return Ok(());
        }
        Err(Failure::new(
            ErrorCode::Forbidden,
            format!(
                "this token lacks the scope '{}' that {what} needs; use a token that has it (`maestro tokens create NAME --scope {}`)",
                needed.as_str(),
                needed.as_str()
            ),
        ))
    }
}

/// The user a request acts for, once its token was found to have the route's scope.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub UserRecord);

/// The scope a user API route needs (`None`: any valid token). Routes are named by their
/// pattern; one missing here needs `admin`.
pub fn required_scope(method: &Method, route: &str) -> Option<Scope> {
    use Scope::*;
    let read = method == Method::GET || method == Method::HEAD;
    Some(match route {
        "/v1/whoami" => return None,
        "/v1/secrets" | "/v1/secrets/{name}" if read => SecretsRead,
        "/v1/secrets/{name}/history" | "/v1/secrets/{name}/usage" if read => SecretsRead,
        "/v1/secrets" | "/v1/secrets/{name}" | "/v1/secrets/{name}/compromised" => SecretsWrite,
        "/v1/sessions" | "/v1/sessions/{id}" | "/v1/activations" if read => SessionsRead,
        "/v1/sessions" | "/v1/sessions/{id}/end" => SessionsWrite,
        "/v1/sessions/{id}/activate" | "/v1/sessions/{id}/deactivate" => Activate,
        "/v1/audit" | "/v1/alerts" | "/v1/alerts/config" if read => AuditRead,
        "/v1/alerts/ack" | "/v1/alerts/config" => AlertsWrite,
        "/v1/oauth/providers" | "/v1/oauth/authorizations/{id}" if read => SecretsRead,
        "/v1/teams" | "/v1/teams/{team}" if read => SecretsRead,
        "/v1/oauth/connect"
        | "/v1/oauth/reconnect"
        | "/v1/oauth/refresh"
        | "/v1/oauth/authorizations/{id}/cancel" => SecretsWrite,
        _ => Admin,
    })
}

/// Reads and checks the bearer token; the caller is kept in the request's extensions, so a
/// second extractor (or the body reader before the handler) does not look it up again.
pub async fn authenticate(parts: &mut Parts, app: &SharedApp) -> Result<Caller, Failure> {
    if let Some(caller) = parts.extensions.get::<Caller>() {
        return Ok(caller.clone());
    }
    let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
        Failure::unauthorized(
            "missing API token: send Authorization: Bearer <token> (the CLI reads MAESTRO_TOKEN or MAESTRO_TOKEN_FILE)",
        )
    })?;
    let token = header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_CHARS)
        .ok_or_else(|| {
            Failure::unauthorized("the Authorization header must be `Bearer <token>`")
        })?;
    let Some(found) = app.tokens.authenticate(&tokens::hash(token)).await? else {
        return Err(Failure::unauthorized(
            "the API token is not valid (unknown or revoked); check MAESTRO_TOKEN, or make a new one with `maestro tokens create` or `maestro-broker user add`",
        ));
    };
    let now = clock::now();
    if let Some(at) = found.token.expires_at.filter(|at| *at <= now) {
        return Err(Failure::unauthorized(format!(
            "the API token '{}' expired at {}; make a new one with `maestro tokens create`",
            found.token.name,
            clock::rfc3339(at)
        )));
    }
    if found.user_disabled {
        return Err(Failure::new(
            ErrorCode::Forbidden,
            format!(
                "user {} is disabled on this broker; ask its operator (`maestro-broker user enable`)",
                found.user.name
            ),
        ));
    }
    // Unknown names (a newer broker's scope) give nothing.
    let scopes = found.token.scopes.iter().filter_map(|s| Scope::parse(s)).collect();
    if found.token.last_used_at.is_none_or(|at| now - at >= LAST_USE_EVERY_SECS)
        && app.token_uses.due(&found.token.id, now)
    {
        let store = app.tokens.clone();
        let id = found.token.id.clone();
        tokio::spawn(async move {
            if let Err(e) = store.touch_token(&id, now, now - LAST_USE_EVERY_SECS + 1).await {
                warn!(token = %id, error = %e, "cannot record a token's last use");
            }
        });
    }
    let is_team = found.user_kind == crate::store::tokens::OWNER_TEAM;
    let caller = Caller {
        user: found.user,
        token_id: found.token.id,
        service_account: found.token.service_account,
        scopes,
        is_team,
    };
    parts.extensions.insert(caller.clone());
    Ok(caller)
}

impl FromRequestParts<SharedApp> for Caller {
    type Rejection = Failure;

    /// The token's holder, refused unless the token has the route's scope.
    async fn from_request_parts(parts: &mut Parts, app: &SharedApp) -> Result<Self, Failure> {
        let caller = authenticate(parts, app).await?;
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map_or_else(|| parts.uri.path().to_owned(), |m| m.as_str().to_owned());
        if let Some(needed) = required_scope(&parts.method, &route) {
            caller.require(needed, &format!("{} {}", parts.method, parts.uri.path()))?;
        }
        Ok(caller)
    }
}

impl FromRequestParts<SharedApp> for CurrentUser {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, app: &SharedApp) -> Result<Self, Failure> {
        Ok(Self(Caller::from_request_parts(parts, app).await?.user))
    }
}

impl FromRequestParts<SharedApp> for AgentSession {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, app: &SharedApp) -> Result<Self, Failure> {
        authenticate_agent(parts, app, 0).await
    }
}

/// An agent uploading usage: like [`AgentSession`], but also accepted for
/// [`USAGE_GRACE_SECS`] after the session ended (write-only: the route returns no material).
pub struct UsageReporter(pub AgentSession);

impl FromRequestParts<SharedApp> for UsageReporter {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, app: &SharedApp) -> Result<Self, Failure> {
        authenticate_agent(parts, app, USAGE_GRACE_SECS).await.map(Self)
    }
}

/// Authenticates the client certificate the TLS layer put in the request, for its route;
/// `grace` seconds after the session ended, it is still accepted (0: only live sessions).
async fn authenticate_agent(
    parts: &mut Parts,
    app: &SharedApp,
    grace: i64,
) -> Result<AgentSession, Failure> {
    let leaf = parts
        .extensions
        .get::<Arc<TlsInfo>>()
        .and_then(|info| info.peer_certificates.first().cloned())
        .ok_or_else(|| {
            Failure::unauthorized(
                "this route needs the session's client certificate (mutual TLS); enroll with the session's token first",
            )
        })?;
    Ok(agents::authenticate(app, &leaf, parts.uri.path(), grace).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_their_scope_and_unknown_ones_need_admin() {
        let s = |m: Method, r: &str| required_scope(&m, r);
        assert_eq!(s(Method::GET, "/v1/secrets"), Some(Scope::SecretsRead));
        assert_eq!(s(Method::POST, "/v1/secrets"), Some(Scope::SecretsWrite));
        assert_eq!(s(Method::DELETE, "/v1/secrets/{name}"), Some(Scope::SecretsWrite));
        assert_eq!(s(Method::POST, "/v1/sessions"), Some(Scope::SessionsWrite));
        assert_eq!(s(Method::GET, "/v1/activations"), Some(Scope::SessionsRead));
        assert_eq!(s(Method::POST, "/v1/sessions/{id}/activate"), Some(Scope::Activate));
        assert_eq!(s(Method::GET, "/v1/audit"), Some(Scope::AuditRead));
        assert_eq!(s(Method::POST, "/v1/tokens"), Some(Scope::Admin));
        assert_eq!(s(Method::POST, "/v1/oauth/providers"), Some(Scope::Admin));
        assert_eq!(s(Method::GET, "/v1/some-new-route"), Some(Scope::Admin));
        assert_eq!(s(Method::GET, "/v1/teams/{team}"), Some(Scope::SecretsRead));
        assert_eq!(s(Method::POST, "/v1/teams"), Some(Scope::Admin));
        assert_eq!(s(Method::PUT, "/v1/teams/{team}/members/{user}"), Some(Scope::Admin));
        assert_eq!(s(Method::DELETE, "/v1/teams/{team}/members/{user}"), Some(Scope::Admin));
        assert_eq!(s(Method::GET, "/v1/whoami"), None);
    }

    #[test]
    fn last_use_is_written_once_a_minute() {
        let uses = LastUses::default();
        assert!(uses.due("a", 1000));
        assert!(!uses.due("a", 1059));
        assert!(uses.due("b", 1059));
        assert!(uses.due("a", 1060));
    }
}
