//! Who is asking, as extractors of the HTTP layer: a user (bearer token) or a session's agent
//! (client certificate, judged by [`crate::domain::agents::authenticate`]).
//!
//! * [`CurrentUser`]: `Authorization: Bearer <token>`; the token's SHA-256 is looked up.
//! * [`AgentSession`]: the leaf certificate the client presented during the TLS handshake
//!   (already verified against our CA, its validity and EKU by [`crate::tls`]). The session is
//!   read from its URI SAN `spiffe://maestro/session/<id>` and nowhere else. The session must
//!   exist and be live; a certificate of an ended session is refused (and audited as denied).
//!   Its expiry is checked again here because an HTTP/2 connection may outlive it. Of a
//!   session's certificates only the newest is accepted, and for a short overlap after a
//!   renewal the one it replaced ([`crate::store::SessionSerials`]): a renewal retires the old
//!   certificate although it is still within its validity.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum_server::tls::TlsInfo;

use crate::api::error::Failure;
use crate::app::SharedApp;
use crate::domain::agents;
pub use crate::domain::agents::{AgentSession, USAGE_GRACE_SECS};
use crate::store::UserRecord;
use crate::tokens;

/// The user a request acts for.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub UserRecord);

impl FromRequestParts<SharedApp> for CurrentUser {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, app: &SharedApp) -> Result<Self, Failure> {
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
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .ok_or_else(|| {
                Failure::unauthorized("the Authorization header must be `Bearer <token>`")
            })?;
        match app.store.user_by_token(&tokens::hash(token)).await? {
            Some(user) => Ok(Self(user)),
            None => Err(Failure::unauthorized(
                "the API token is not valid; check MAESTRO_TOKEN, or ask for a new one with `maestro-broker user add`",
            )),
        }
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
