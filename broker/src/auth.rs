//! Who is asking: a user (bearer token) or a session's agent (client certificate).
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
use maestro_wire::api::AuditAction;
use tracing::{info, warn};
use x509_parser::extensions::GeneralName;

use crate::api::error::Failure;
use crate::app::SharedApp;
use crate::clock;
use crate::store::{AuditRecord, SessionRecord, UserRecord};
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

/// The session whose certificate the client presented.
#[derive(Debug, Clone)]
pub struct AgentSession {
    pub session: SessionRecord,
    /// When the presented certificate expires (unix seconds).
    pub cert_not_after: i64,
    /// Whether the presented certificate is the session's newest (not one in its overlap
    /// after a renewal).
    pub cert_is_newest: bool,
}

/// What a client certificate says, before the session is looked up.
#[derive(Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    pub session_id: String,
    pub not_after: i64,
    /// The serial, lower-case hex (as the CA records it).
    pub serial: String,
}

/// Reads the session id and expiry from a DER certificate.
pub fn peer_identity(der: &[u8]) -> Result<PeerIdentity, Failure> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| Failure::unauthorized("the client certificate cannot be parsed"))?;
    let san = cert.subject_alternative_name().ok().flatten().ok_or_else(|| {
        Failure::unauthorized("the client certificate names no Maestro session (no URI SAN)")
    })?;
    let mut sessions = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(uri) => uri.strip_prefix(maestro_wire::SESSION_URI_PREFIX),
        _ => None,
    });
    let session_id = match (sessions.next(), sessions.next()) {
        (Some(id), None) if !id.is_empty() => id.to_owned(),
        _ => {
            return Err(Failure::unauthorized(
                "the client certificate must name exactly one Maestro session",
            ));
        }
    };
    Ok(PeerIdentity {
        session_id,
        not_after: cert.validity().not_after.timestamp(),
        serial: hex::encode(cert.raw_serial()),
    })
}

impl FromRequestParts<SharedApp> for AgentSession {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, app: &SharedApp) -> Result<Self, Failure> {
        authenticate_agent(parts, app, 0).await
    }
}

/// How long after its session ended an agent may still upload usage reports: the last reads
/// before teardown belong in the audit trail. Nothing else is served to an ended session.
pub const USAGE_GRACE_SECS: i64 = 60;

/// An agent uploading usage: like [`AgentSession`], but also accepted for
/// [`USAGE_GRACE_SECS`] after the session ended (write-only: the route returns no material).
pub struct UsageReporter(pub AgentSession);

impl FromRequestParts<SharedApp> for UsageReporter {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, app: &SharedApp) -> Result<Self, Failure> {
        authenticate_agent(parts, app, USAGE_GRACE_SECS).await.map(Self)
    }
}

/// Records a refused certificate, within the session's quota of records
/// ([`crate::quota`]): a copy of an old certificate must not be a way to flood the trail.
async fn record_denial(app: &SharedApp, record: &AuditRecord) {
    let Some(session) = record.session_id.as_deref() else { return };
    if app.usage_quota.take(session, 1).is_err() {
        return;
    }
    if let Err(e) = app.store.append_audit(std::slice::from_ref(record)).await {
        warn!(error = %e, "could not record a denied request");
    }
}

/// Authenticates the client certificate and its session; `grace` seconds after the session
/// ended, it is still accepted (0: only live sessions).
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
    let peer = peer_identity(&leaf)?;
    let now = clock::now();
    if peer.not_after <= now {
        return Err(Failure::unauthorized(format!(
            "the client certificate expired at {}; renew it before it expires (POST /v1/agent/renew)",
            clock::rfc3339(peer.not_after)
        )));
    }
    let session = app.store.session(&peer.session_id).await?.ok_or_else(|| {
        warn!(session = %peer.session_id, "certificate for an unknown session");
        Failure::unauthorized("the client certificate names an unknown session")
    })?;
    let ended_at = session.ended_at.unwrap_or(session.expires_at);
    let within_grace = grace > 0 && now - ended_at <= grace;
    if !session.is_live(now) && !within_grace {
        let record = AuditRecord {
            session_id: Some(session.id.clone()),
            detail: Some(format!("ended session's certificate used for {}", parts.uri.path())),
            ..AuditRecord::new(session.owner_id, now, AuditAction::Denied)
        };
        record_denial(app, &record).await;
        info!(session = %session.id, "refused an ended session's certificate");
        return Err(Failure::forbidden(format!(
            "session {} has ended; its certificate is no longer accepted",
            session.id
        )));
    }
    if !session.serials.accepts(&peer.serial, now) {
        let record = AuditRecord {
            session_id: Some(session.id.clone()),
            detail: Some(format!(
                "retired certificate {} used for {}",
                peer.serial,
                parts.uri.path()
            )),
            ..AuditRecord::new(session.owner_id, now, AuditAction::Denied)
        };
        record_denial(app, &record).await;
        info!(session = %session.id, serial = %peer.serial, "refused a retired certificate");
        return Err(Failure::unauthorized(
            "this client certificate was replaced by a renewal and is no longer accepted; use the newest certificate of the session",
        ));
    }
    let cert_is_newest = session.serials.current.as_deref() == Some(peer.serial.as_str());
    Ok(AgentSession { session, cert_not_after: peer.not_after, cert_is_newest })
}
