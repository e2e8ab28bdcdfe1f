//! Sessions: creation with a one-time enrollment token, what their owner sees, how they end
//! (by the user, or at their TTL), and the task that ends expired sessions (and activations
//! whose time has passed) and tells their agents at once.
//!
//! A user names a session by its id, a unique id prefix or its label ([`owned`]), resolved as
//! the audit filter resolves them ([`super::history::resolve_session`]); a name that fits
//! several sessions is refused, naming them.

use std::sync::Arc;
use std::time::Duration;

use maestro_wire::api::{
    AuditAction, CreateSession, ErrorCode, SessionCreated, SessionInfo, SessionState,
};
use maestro_wire::limits::{
    DEFAULT_SESSION_TTL_SECS, ENROLLMENT_TOKEN_TTL_SECS, MAX_SESSION_TTL_SECS,
};
use tokio::sync::watch;
use tracing::{error, info};

use super::error::{DomainError, DomainResult};
use super::secrets::optional_text;
use super::validate::check_text;
use crate::app::App;
use crate::clock;
use crate::store::{AuditRecord, EnrollmentRecord, SessionRecord, UserRecord};
use crate::tokens;

/// How often the expiry task looks for sessions past their TTL.
const EXPIRY_SCAN: Duration = Duration::from_secs(1);

/// A session as its owner sees it.
pub async fn info(app: &App, session: &SessionRecord) -> DomainResult<SessionInfo> {
    let now = clock::now();
    let live = session.is_live(now);
    let rows = if live {
        app.store.list_activations(session.owner_id, Some(&session.id), None).await?
    } else {
        Vec::new()
    };
    let teams = super::teams::team_names(app, session.owner_id).await?;
    let mut activations: Vec<_> =
        rows.iter().map(|r| super::activation::activation_info_in(r, &teams)).collect();
    activations.sort_by(|a, b| a.secret.cmp(&b.secret));
    let active = activations.iter().map(|a| a.secret.clone()).collect();
    Ok(SessionInfo {
        id: session.id.clone(),
        label: session.label.clone(),
        state: if live { SessionState::Live } else { SessionState::Ended },
        created_at: clock::rfc3339(session.created_at),
        expires_at: clock::rfc3339(session.expires_at),
        ended_at: session.ended_at.or((!live).then_some(session.expires_at)).map(clock::rfc3339),
        ended_reason: session.ended_reason.clone().or_else(|| (!live).then(|| "ttl".to_owned())),
        active,
        agent_connected: live && app.hub.connected(&session.id),
        enrolled: session.enrolled,
        decoys: session.decoys,
        activations,
    })
}

/// Ends a session for good and tells its agent. `None` if it had already ended.
pub async fn end(app: &App, id: &str, reason: &str) -> DomainResult<Option<SessionRecord>> {
    let ended = app.store.end_session(id, reason, clock::now()).await?;
    if ended.is_some() {
        app.hub.end(id, reason);
        info!(session = %id, reason, "session ended");
    }
    Ok(ended)
}

/// A session of `user`'s by its id, a unique id prefix or its label; another user's session
/// is answered exactly like a missing one. A prefix or label that fits several of the user's
/// live sessions (or, when it fits no live one, several ended ones) is refused, naming them.
pub async fn owned(app: &App, user: &UserRecord, id: &str) -> DomainResult<SessionRecord> {
    let unknown =
        || DomainError::not_found(format!("no session {id}; `maestro sessions ls` lists yours"));
    if id.is_empty() || id.len() > 128 {
        return Err(unknown());
    }
    if let Some(s) = app.store.session(id).await?
        && s.owner_id == user.id
    {
        return Ok(s);
    }
    let mine = app.store.list_sessions(user.id).await?;
    if !mine.iter().any(|s| s.id.starts_with(id) || s.label.as_deref() == Some(id)) {
        return Err(unknown());
    }
    pick(&mine, id, clock::now())
}

/// The one session of `sessions` that `wanted` (an id prefix or a label) names, the live ones
/// first: a label reused by a new session names the live one.
fn pick(sessions: &[SessionRecord], wanted: &str, now: i64) -> DomainResult<SessionRecord> {
    let live: Vec<SessionRecord> = sessions.iter().filter(|s| s.is_live(now)).cloned().collect();
    let ids = match super::history::resolve_session(&live, wanted) {
        Ok(ids) => ids,
        Err(_) => super::history::resolve_session(sessions, wanted)?,
    };
    match ids.as_slice() {
        [one] => sessions
            .iter()
            .find(|s| &s.id == one)
            .cloned()
            .ok_or_else(|| DomainError::not_found(format!("no session {wanted}"))),
        many => Err(DomainError::new(
            ErrorCode::Conflict,
            format!(
                "'{}' is the label of {} sessions: {}; name one by its id or a unique id prefix",
                wanted.escape_default(),
                many.len(),
                many.iter()
                    .map(|id| describe(sessions.iter().find(|s| &s.id == id), id, now))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// A candidate of an ambiguous name: its id, label and state.
fn describe(session: Option<&SessionRecord>, id: &str, now: i64) -> String {
    match session {
        Some(s) => format!(
            "{} ({}{})",
            s.id,
            s.label.as_deref().map(|l| format!("{l}, ")).unwrap_or_default(),
            if s.is_live(now) { "live" } else { "ended" }
        ),
        None => id.to_owned(),
    }
}

/// A live session of `user`'s, for a change (`verb`: activate, deactivate) that an ended
/// session refuses.
pub async fn live_owned(
    app: &App,
    user: &UserRecord,
    id: &str,
    verb: &str,
) -> DomainResult<SessionRecord> {
    let session = owned(app, user, id).await?;
    if !session.is_live(clock::now()) {
        return Err(DomainError::new(
            ErrorCode::SessionEnded,
            format!(
                "session {} has ended; nothing can be {verb}d in it; create a new session",
                session.id
            ),
        ));
    }
    Ok(session)
}

/// Creates a session and its one-time enrollment token.
pub async fn create(
    app: &App,
    user: &UserRecord,
    body: CreateSession,
) -> DomainResult<SessionCreated> {
    let ttl = body.ttl_seconds.unwrap_or(DEFAULT_SESSION_TTL_SECS);
    if ttl == 0 || ttl > MAX_SESSION_TTL_SECS {
        return Err(DomainError::bad_request(format!(
            "a session's TTL is between 1 second and {} days; {ttl} seconds is not",
            MAX_SESSION_TTL_SECS / 86_400
        )));
    }
    if let Some(label) = &body.label {
        check_text("label", label)?;
    }
    let internal = |e: tokens::RandomError| DomainError::internal("making a session", &e);
    let id = tokens::random_id::<16>().map_err(internal)?;
    let token = tokens::generate(tokens::ENROLLMENT_TOKEN_PREFIX).map_err(internal)?;
    let now = clock::now();
    let ttl = i64::try_from(ttl).unwrap_or(i64::MAX);
    let session = SessionRecord {
        id: id.clone(),
        owner_id: user.id,
        label: optional_text(body.label),
        created_at: now,
        expires_at: now.saturating_add(ttl),
        ended_at: None,
        ended_reason: None,
        enrolled: false,
        decoys: body.decoys,
        serials: Default::default(),
    };
    let enrollment = EnrollmentRecord {
        token_hash: tokens::hash(token.expose()),
        session_id: id.clone(),
        expires_at: now + ENROLLMENT_TOKEN_TTL_SECS as i64,
        used_at: None,
    };
    let audit = AuditRecord {
        session_id: Some(id.clone()),
        detail: session.label.clone(),
        ..AuditRecord::new(user.id, now, AuditAction::SessionCreated)
    };
    app.store.insert_session(&session, &enrollment, &audit).await?;
    info!(user = %user.name, session = %id, "session created");
    Ok(SessionCreated {
        session: info(app, &session).await?,
        enrollment_token: token,
        enrollment_expires_at: clock::rfc3339(enrollment.expires_at),
        ca_pem: app.ca.cert_pem().to_owned(),
        broker_url: app.settings.public_url.clone(),
    })
}

/// Every session of `user`'s.
pub async fn list(app: &App, user: &UserRecord) -> DomainResult<Vec<SessionInfo>> {
    let mut out = Vec::new();
    for session in app.store.list_sessions(user.id).await? {
        out.push(info(app, &session).await?);
    }
    Ok(out)
}

/// One session of `user`'s.
pub async fn show(app: &App, user: &UserRecord, id: &str) -> DomainResult<SessionInfo> {
    let session = owned(app, user, id).await?;
    info(app, &session).await
}

/// Ends a session of `user`'s at their request: final; ending it twice is refused.
pub async fn end_owned(app: &App, user: &UserRecord, id: &str) -> DomainResult<SessionInfo> {
    let session = owned(app, user, id).await?;
    let ended = end(app, &session.id, "user").await?.ok_or_else(|| {
        DomainError::new(
            ErrorCode::SessionEnded,
            format!(
                "session {id} already ended at {}; ending is final",
                clock::rfc3339(session.ended_at.unwrap_or(session.expires_at))
            ),
        )
    })?;
    info(app, &ended).await
}

/// Ends sessions whose TTL has passed, until `shutdown` turns true.
pub async fn expire_task(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EXPIRY_SCAN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        super::activation::expire_due(&app).await;
        let due = match app.store.expired_sessions(clock::now()).await {
            Ok(due) => due,
            Err(e) => {
                error!(error = %e, "cannot look for expired sessions");
                continue;
            }
        };
        for id in due {
            if let Err(e) = end(&app, &id, "ttl").await {
                error!(session = %id, error = %e, "cannot end an expired session");
            }
        }
    }
}
