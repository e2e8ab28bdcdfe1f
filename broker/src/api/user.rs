//! The user API (bearer token): secrets, sessions, activation, audit. See the route table in
//! `maestro_wire::api`. No handler here returns a secret value.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use maestro_wire::agent_api::AgentEvent;
use maestro_wire::api::{
    Activation, AuditAction, AuditEvent, CreateSecret, CreateSession, Deleted, EditSecret,
    ErrorCode, SecretMeta, SessionCreated, SessionInfo,
};
use maestro_wire::catalog::{self, CatalogView, Outputs};
use maestro_wire::limits::{
    DEFAULT_SESSION_TTL_SECS, ENROLLMENT_TOKEN_TTL_SECS, MAX_NAMES_PER_CALL, MAX_SESSION_TTL_SECS,
};
use tracing::info;

use super::error::{ApiResult, Failure};
use super::extract::{ApiJson, ApiJsonOrEmpty, ApiPath};
use crate::app::{App, SharedApp};
use crate::auth::CurrentUser;
use crate::clock;
use crate::secrets::{self, check_fields, check_name, check_tags, check_text};
use crate::sessions;
use crate::store::{AuditRecord, EnrollmentRecord, SecretRecord, SessionRecord, UserRecord};
use crate::tokens;

/// Most audit records one answer (one page) holds, and the default page size.
pub const AUDIT_PAGE: i64 = 10_000;

/// `GET /v1/kinds`.
pub async fn kinds() -> Json<CatalogView> {
    Json(catalog::view())
}

async fn owned_secret(app: &App, user: &UserRecord, name: &str) -> ApiResult<SecretRecord> {
    check_name(name)?;
    app.store.secret_by_name(user.id, name).await?.ok_or_else(|| {
        Failure::not_found(format!("no secret named {name}; `maestro secrets ls` lists yours"))
    })
}

async fn owned_session(app: &App, user: &UserRecord, id: &str) -> ApiResult<SessionRecord> {
    let unknown =
        || Failure::not_found(format!("no session {id}; `maestro sessions ls` lists yours"));
    if id.is_empty() || id.len() > 128 {
        return Err(unknown());
    }
    match app.store.session(id).await? {
        // Another user's session is answered exactly like a missing one.
        Some(s) if s.owner_id == user.id => Ok(s),
        _ => Err(unknown()),
    }
}

fn optional_text(text: Option<String>) -> Option<String> {
    text.filter(|t| !t.is_empty())
}

/// `POST /v1/secrets`.
pub async fn create_secret(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<CreateSecret>,
) -> ApiResult<(StatusCode, Json<SecretMeta>)> {
    check_name(&body.name)?;
    if let Some(d) = &body.description {
        check_text("description", d)?;
    }
    check_tags(&body.tags)?;
    let fields = check_fields(&body.kind, &body.fields)?;
    let now = clock::now();
    let id = tokens::random_id::<16>().map_err(|e| Failure::internal("making an id", &e))?;
    let record = SecretRecord {
        id,
        owner_id: user.id,
        name: body.name.clone(),
        kind: body.kind.clone(),
        description: optional_text(body.description),
        tags: body.tags,
        version: 1,
        field_names: Vec::new(),
        data_key_id: String::new(),
        wrapped_key: Vec::new(),
        created_at: now,
        updated_at: now,
    };
    let sealed = secrets::seal_version(&app, record, &fields)?;
    let audit = AuditRecord {
        secret_id: Some(sealed.record.id.clone()),
        secret_name: Some(sealed.record.name.clone()),
        detail: Some(format!("version 1, kind {}", sealed.record.kind)),
        ..AuditRecord::new(user.id, now, AuditAction::Created)
    };
    app.store.insert_secret(&sealed.record, &sealed.fields, &audit).await?;
    info!(user = %user.name, secret = %sealed.record.name, "secret created");
    Ok((StatusCode::CREATED, Json(secrets::meta(&app, &sealed.record).await?)))
}

/// `GET /v1/secrets`.
pub async fn list_secrets(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
) -> ApiResult<Json<Vec<SecretMeta>>> {
    let mut out = Vec::new();
    for secret in app.store.list_secrets(user.id).await? {
        out.push(secrets::meta(&app, &secret).await?);
    }
    Ok(Json(out))
}

/// `GET /v1/secrets/{name}`.
pub async fn show_secret(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<SecretMeta>> {
    let secret = owned_secret(&app, &user, &name).await?;
    Ok(Json(secrets::meta(&app, &secret).await?))
}

/// `PATCH /v1/secrets/{name}`: a new version; the old one is gone.
pub async fn edit_secret(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<EditSecret>,
) -> ApiResult<Json<SecretMeta>> {
    let _serialized = app.activation_lock.lock().await;
    let _across_brokers = app.store.lock_owner(user.id).await?;
    let secret = owned_secret(&app, &user, &name).await?;
    if body.kind.is_none()
        && body.fields.is_empty()
        && body.remove_fields.is_empty()
        && body.description.is_none()
        && body.tags.is_none()
    {
        return Err(Failure::bad_request(
            "nothing to change: give fields, fields to remove, a description, tags or a kind",
        ));
    }
    if let Some(d) = &body.description {
        check_text("description", d)?;
    }
    if let Some(tags) = &body.tags {
        check_tags(tags)?;
    }
    let kind = body.kind.clone().unwrap_or_else(|| secret.kind.clone());
    let merged = if kind != secret.kind {
        if !body.remove_fields.is_empty() {
            return Err(Failure::bad_request(
                "changing the kind replaces every field: give the whole new set of fields and no fields to remove",
            ));
        }
        body.fields.clone()
    } else {
        let mut current = secrets::open_fields(&app, &secret, None).await?;
        for field in &body.remove_fields {
            if current.remove(field).is_none() {
                return Err(Failure::new(
                    ErrorCode::InvalidField,
                    format!("secret {name} has no field '{field}' to remove"),
                ));
            }
        }
        for (field, value) in &body.fields {
            current.insert(field.clone(), value.clone());
        }
        current
    };
    let fields = check_fields(&kind, &merged)?;
    let field_names: Vec<String> = fields.keys().cloned().collect();
    let new_outputs = secrets::outputs_of(&kind, &field_names);
    let active_in = app.store.secret_active_in(&secret.id).await?;
    for session in &active_in {
        let others = outputs_in(&app, session, Some(&secret.id)).await?;
        if let Some(clash) = secrets::conflict(&secret.name, &new_outputs, &others) {
            return Err(Failure::new(
                ErrorCode::Conflict,
                format!(
                    "{} (it is active in session {session}); nothing changed",
                    clash.body.message
                ),
            ));
        }
    }
    let now = clock::now();
    let record = SecretRecord {
        kind,
        description: match body.description {
            Some(d) => optional_text(Some(d)),
            None => secret.description.clone(),
        },
        tags: body.tags.unwrap_or_else(|| secret.tags.clone()),
        version: secret.version + 1,
        updated_at: now,
        ..secret.clone()
    };
    let sealed = secrets::seal_version(&app, record, &fields)?;
    let audit = AuditRecord {
        secret_id: Some(secret.id.clone()),
        secret_name: Some(secret.name.clone()),
        detail: Some(format!("version {}", sealed.record.version)),
        ..AuditRecord::new(user.id, now, AuditAction::Edited)
    };
    app.store.replace_secret(secret.version, &sealed.record, &sealed.fields, &audit).await?;
    for session in &active_in {
        app.hub.publish(
            session,
            AgentEvent::Updated { secret: secrets::active_secret(&sealed.record) },
        );
    }
    info!(user = %user.name, secret = %name, version = sealed.record.version, "secret edited");
    Ok(Json(secrets::meta(&app, &sealed.record).await?))
}

/// What the secrets active in a session provide, except `skip`.
async fn outputs_in(
    app: &App,
    session: &str,
    skip: Option<&str>,
) -> ApiResult<Vec<(String, Outputs)>> {
    Ok(app
        .store
        .active_secrets(session)
        .await?
        .iter()
        .filter(|s| Some(s.id.as_str()) != skip)
        .map(|s| (s.name.clone(), secrets::outputs(s)))
        .collect())
}

/// `DELETE /v1/secrets/{name}`: also deactivates it everywhere.
pub async fn delete_secret(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Deleted>> {
    let serialized = app.activation_lock.lock().await;
    let across_brokers = app.store.lock_owner(user.id).await?;
    let secret = owned_secret(&app, &user, &name).await?;
    // An OAuth secret's tokens are read before they are deleted, and revoked after.
    let revocation = crate::oauth::prepare_revocation(&app, &secret).await?;
    let sessions = app.store.delete_secret(&secret, clock::now()).await?;
    for session in &sessions {
        app.hub.publish(session, AgentEvent::Deactivated { name: secret.name.clone() });
    }
    drop((across_brokers, serialized));
    info!(user = %user.name, secret = %name, "secret deleted");
    let revocation = match revocation {
        Some(r) => Some(r.run(&app).await),
        None => None,
    };
    Ok(Json(Deleted { name: secret.name, deactivated_in: sessions, revocation }))
}

/// A page of audit records asked for with `?limit=N&before=SEQ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Only records with a sequence number below this (the `seq` of the oldest record of the
    /// page before); `None`: from the newest.
    pub before: Option<i64>,
    pub limit: i64,
}

/// Reads `limit` (1 to [`AUDIT_PAGE`], default [`AUDIT_PAGE`]) and `before` (a record's `seq`).
pub fn page_of(query: Option<&str>) -> ApiResult<Page> {
    let mut page = Page { before: None, limit: AUDIT_PAGE };
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "limit" => {
                page.limit =
                    value.parse::<i64>().ok().filter(|n| (1..=AUDIT_PAGE).contains(n)).ok_or_else(
                        || {
                            Failure::bad_request(format!(
                                "limit must be a number from 1 to {AUDIT_PAGE}"
                            ))
                        },
                    )?;
            }
            "before" => {
                page.before =
                    Some(value.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        Failure::bad_request(
                            "before must be the seq of an audit record (a positive number)",
                        )
                    })?);
            }
            _ => {
                return Err(Failure::bad_request(
                    "unknown query parameter; this route takes limit and before",
                ));
            }
        }
    }
    Ok(page)
}

/// The answer for a page: the records, oldest first, and when the page is full, the cursor of
/// the next (older) one in the `Maestro-Next-Before` header.
fn page_answer(rows: &[crate::store::AuditRow], page: Page) -> axum::response::Response {
    use axum::response::IntoResponse;
    let events: Vec<AuditEvent> = rows.iter().map(crate::audit::to_event).collect();
    let next = (rows.len() as i64 >= page.limit).then(|| rows.first().map(|r| r.seq)).flatten();
    let mut response = Json(events).into_response();
    if let Some(seq) = next {
        response.headers_mut().insert(NEXT_BEFORE_HEADER, seq.into());
    }
    response
}

/// The header that carries the cursor of the next page of an audit listing.
pub const NEXT_BEFORE_HEADER: &str = "maestro-next-before";

/// `GET /v1/secrets/{name}/history[?limit=N&before=SEQ]`: a page of its records.
pub async fn secret_history(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath(name): ApiPath<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> ApiResult<axum::response::Response> {
    let page = page_of(query.as_deref())?;
    let secret = owned_secret(&app, &user, &name).await?;
    let rows = app.store.secret_history(user.id, &secret.id, page.before, page.limit).await?;
    Ok(page_answer(&rows, page))
}

/// `POST /v1/sessions`: the session and its one-time enrollment token.
pub async fn create_session(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiJsonOrEmpty(body): ApiJsonOrEmpty<CreateSession>,
) -> ApiResult<(StatusCode, Json<SessionCreated>)> {
    let ttl = body.ttl_seconds.unwrap_or(DEFAULT_SESSION_TTL_SECS);
    if ttl == 0 || ttl > MAX_SESSION_TTL_SECS {
        return Err(Failure::bad_request(format!(
            "a session's TTL is between 1 second and {} days; {ttl} seconds is not",
            MAX_SESSION_TTL_SECS / 86_400
        )));
    }
    if let Some(label) = &body.label {
        check_text("label", label)?;
    }
    let internal = |e: tokens::RandomError| Failure::internal("making a session", &e);
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
    Ok((
        StatusCode::CREATED,
        Json(SessionCreated {
            session: sessions::info(&app, &session).await?,
            enrollment_token: token,
            enrollment_expires_at: clock::rfc3339(enrollment.expires_at),
            ca_pem: app.ca.cert_pem().to_owned(),
        }),
    ))
}

/// `GET /v1/sessions`.
pub async fn list_sessions(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
) -> ApiResult<Json<Vec<SessionInfo>>> {
    let mut out = Vec::new();
    for session in app.store.list_sessions(user.id).await? {
        out.push(sessions::info(&app, &session).await?);
    }
    Ok(Json(out))
}

/// `GET /v1/sessions/{id}`.
pub async fn show_session(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<SessionInfo>> {
    let session = owned_session(&app, &user, &id).await?;
    Ok(Json(sessions::info(&app, &session).await?))
}

/// `POST /v1/sessions/{id}/end`: final.
pub async fn end_session(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<SessionInfo>> {
    let session = owned_session(&app, &user, &id).await?;
    let ended = sessions::end(&app, &session.id, "user").await?.ok_or_else(|| {
        Failure::new(
            ErrorCode::SessionEnded,
            format!(
                "session {id} already ended at {}; ending is final",
                clock::rfc3339(session.ended_at.unwrap_or(session.expires_at))
            ),
        )
    })?;
    Ok(Json(sessions::info(&app, &ended).await?))
}

/// Checks and de-duplicates the names of an activation call, keeping their order.
fn activation_names(body: &Activation, verb: &str) -> ApiResult<Vec<String>> {
    if body.names.is_empty() {
        return Err(Failure::bad_request(format!("name at least one secret to {verb}")));
    }
    if body.names.len() > MAX_NAMES_PER_CALL {
        return Err(Failure::new(
            ErrorCode::TooMany,
            format!(
                "at most {MAX_NAMES_PER_CALL} secrets per call; this one names {}",
                body.names.len()
            ),
        ));
    }
    let mut names: Vec<String> = Vec::with_capacity(body.names.len());
    for name in &body.names {
        check_name(name)?;
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    Ok(names)
}

async fn live_owned_session(
    app: &App,
    user: &UserRecord,
    id: &str,
    verb: &str,
) -> ApiResult<SessionRecord> {
    let session = owned_session(app, user, id).await?;
    if !session.is_live(clock::now()) {
        return Err(Failure::new(
            ErrorCode::SessionEnded,
            format!("session {id} has ended; nothing can be {verb}d in it; create a new session"),
        ));
    }
    Ok(session)
}

/// `POST /v1/sessions/{id}/activate`: all or nothing.
pub async fn activate(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Activation>,
) -> ApiResult<Json<SessionInfo>> {
    let names = activation_names(&body, "activate")?;
    let _serialized = app.activation_lock.lock().await;
    let _across_brokers = app.store.lock_owner(user.id).await?;
    let session = live_owned_session(&app, &user, &id, "activate").await?;
    let mut wanted = Vec::with_capacity(names.len());
    for name in &names {
        wanted.push(owned_secret(&app, &user, name).await?);
    }
    let active = app.store.active_secrets(&session.id).await?;
    let mut provided: Vec<(String, Outputs)> =
        active.iter().map(|s| (s.name.clone(), secrets::outputs(s))).collect();
    let mut added = Vec::new();
    for secret in wanted {
        if active.iter().any(|a| a.id == secret.id) {
            continue;
        }
        let outputs = secrets::outputs(&secret);
        if let Some(clash) = secrets::conflict(&secret.name, &outputs, &provided) {
            return Err(Failure::new(
                ErrorCode::Conflict,
                format!("{}; nothing was activated", clash.body.message),
            ));
        }
        provided.push((secret.name.clone(), outputs));
        added.push(secret);
    }
    let now = clock::now();
    let ids: Vec<String> = added.iter().map(|s| s.id.clone()).collect();
    let audit: Vec<AuditRecord> = added
        .iter()
        .map(|s| AuditRecord {
            secret_id: Some(s.id.clone()),
            secret_name: Some(s.name.clone()),
            session_id: Some(session.id.clone()),
            ..AuditRecord::new(user.id, now, AuditAction::Activated)
        })
        .collect();
    app.store.change_activations(&session.id, &ids, &[], now, &audit).await?;
    for secret in &added {
        app.hub
            .publish(&session.id, AgentEvent::Activated { secret: secrets::active_secret(secret) });
    }
    if !added.is_empty() {
        let names: Vec<&str> = added.iter().map(|s| s.name.as_str()).collect();
        info!(user = %user.name, session = %session.id, secrets = ?names, "activated");
    }
    Ok(Json(sessions::info(&app, &session).await?))
}

/// `POST /v1/sessions/{id}/deactivate`.
pub async fn deactivate(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Activation>,
) -> ApiResult<Json<SessionInfo>> {
    let names = activation_names(&body, "deactivate")?;
    let _serialized = app.activation_lock.lock().await;
    let _across_brokers = app.store.lock_owner(user.id).await?;
    let session = live_owned_session(&app, &user, &id, "deactivate").await?;
    let active: HashMap<String, SecretRecord> = app
        .store
        .active_secrets(&session.id)
        .await?
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let mut removed = Vec::new();
    for name in &names {
        let secret = owned_secret(&app, &user, name).await?;
        if active.contains_key(&secret.name) {
            removed.push(secret);
        }
    }
    let now = clock::now();
    let ids: Vec<String> = removed.iter().map(|s| s.id.clone()).collect();
    let audit: Vec<AuditRecord> = removed
        .iter()
        .map(|s| AuditRecord {
            secret_id: Some(s.id.clone()),
            secret_name: Some(s.name.clone()),
            session_id: Some(session.id.clone()),
            ..AuditRecord::new(user.id, now, AuditAction::Deactivated)
        })
        .collect();
    app.store.change_activations(&session.id, &[], &ids, now, &audit).await?;
    for secret in &removed {
        app.hub.publish(&session.id, AgentEvent::Deactivated { name: secret.name.clone() });
    }
    Ok(Json(sessions::info(&app, &session).await?))
}

/// `GET /v1/audit[?limit=N&before=SEQ]`: a page of the caller's audit trail, oldest first.
pub async fn audit(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> ApiResult<axum::response::Response> {
    let page = page_of(query.as_deref())?;
    let rows = app.store.audit_for_owner(user.id, page.before, page.limit).await?;
    Ok(page_answer(&rows, page))
}
