//! The user API (bearer token): secrets, sessions, activation, audit. See the route table in
//! `maestro_wire::api`. Each handler extracts, calls one rule of [`crate::domain`], and
//! serializes the answer. No handler here returns a secret value.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maestro_wire::api::{
    Activation, AuditEvent, Compromised, CreateSecret, CreateSession, Deleted, EditSecret,
    NEXT_CURSOR_HEADER, SecretMeta, SecretUsage, SessionCreated, SessionInfo,
};
use maestro_wire::catalog::{self, CatalogView};

use super::error::ApiResult;
use super::extract::{ApiJson, ApiJsonOrEmpty, ApiPath};
use crate::app::SharedApp;
use crate::auth::CurrentUser;
use crate::domain::audit;
use crate::domain::{activation, history, leak, secrets, sessions};
use crate::store::{AuditPosition, AuditRow};

/// The header that carries the cursor of the next page of an audit listing.
pub const NEXT_BEFORE_HEADER: &str = "maestro-next-before";

/// `GET /v1/meta`: the limits, audit actions and alert names the broker checks against, and
/// its OAuth redirect URI; no token needed (nothing of a user's).
pub async fn meta(State(app): State<SharedApp>) -> Json<maestro_wire::meta::Meta> {
    Json(maestro_wire::meta::Meta::current(Some(app.oauth.redirect_uri.clone())))
}

/// `GET /v1/kinds`.
pub async fn kinds() -> Json<CatalogView> {
    Json(catalog::view())
}

/// `POST /v1/secrets`.
pub async fn create_secret(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<CreateSecret>,
) -> ApiResult<(StatusCode, Json<SecretMeta>)> {
    Ok((StatusCode::CREATED, Json(secrets::create(&app, &user, body).await?)))
}

/// `GET /v1/secrets`.
pub async fn list_secrets(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
) -> ApiResult<Json<Vec<SecretMeta>>> {
    Ok(Json(secrets::list(&app, &user).await?))
}

/// `GET /v1/secrets/{name}`.
pub async fn show_secret(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<SecretMeta>> {
    Ok(Json(secrets::show(&app, &user, &name).await?))
}

/// `PATCH /v1/secrets/{name}`: a new version; the old one is gone.
pub async fn edit_secret(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<EditSecret>,
) -> ApiResult<Json<SecretMeta>> {
    Ok(Json(secrets::edit(&app, &user, &name, body).await?))
}

/// `DELETE /v1/secrets/{name}`: also deactivates it everywhere.
pub async fn delete_secret(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Deleted>> {
    Ok(Json(secrets::delete(&app, &user, &name).await?))
}

/// `POST /v1/secrets/{name}/compromised`: the leak response (see [`leak::compromised`]).
pub async fn compromised_secret(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Compromised>> {
    Ok(Json(leak::compromised(&app, &user, &name).await?))
}

/// `GET /v1/secrets/{name}/history[?limit=N&before=SEQ]`: a page of its records, oldest
/// first; when the page is full, the cursor of the next (older) one in the
/// `Maestro-Next-Before` header. A team secret's records say whose trail holds them (`by`).
pub async fn secret_history(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath(name): ApiPath<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let page = audit::page_of(query.as_deref())?;
    let (rows, by): (Vec<AuditRow>, Vec<Option<String>>) =
        secrets::history(&app, &user, &name, page).await?.into_iter().unzip();
    let mut events: Vec<AuditEvent> = rows.iter().map(crate::audit::to_event).collect();
    for (event, by) in events.iter_mut().zip(by) {
        event.by = by;
    }
    let mut response = Json(events).into_response();
    if let Some(seq) = page.next_before(&rows) {
        response.headers_mut().insert(NEXT_BEFORE_HEADER, seq.into());
    }
    Ok(response)
}

/// `POST /v1/sessions`: the session and its one-time enrollment token.
pub async fn create_session(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiJsonOrEmpty(body): ApiJsonOrEmpty<CreateSession>,
) -> ApiResult<(StatusCode, Json<SessionCreated>)> {
    Ok((StatusCode::CREATED, Json(sessions::create(&app, &user, body).await?)))
}

/// `GET /v1/sessions`.
pub async fn list_sessions(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
) -> ApiResult<Json<Vec<SessionInfo>>> {
    Ok(Json(sessions::list(&app, &user).await?))
}

/// `GET /v1/sessions/{id}`.
pub async fn show_session(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<SessionInfo>> {
    Ok(Json(sessions::show(&app, &user, &id).await?))
}

/// `POST /v1/sessions/{id}/end`: final.
pub async fn end_session(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<SessionInfo>> {
    Ok(Json(sessions::end_owned(&app, &user, &id).await?))
}

/// `POST /v1/sessions/{id}/activate`: all or nothing.
pub async fn activate(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Activation>,
) -> ApiResult<Json<SessionInfo>> {
    Ok(Json(activation::activate(&app, &user, &id, &body).await?))
}

/// `GET /v1/activations`: every secret active in a live session of the caller's.
pub async fn activations(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
) -> ApiResult<Json<Vec<maestro_wire::api::ActivationInfo>>> {
    Ok(Json(activation::list(&app, &user).await?))
}

/// `POST /v1/sessions/{id}/deactivate`.
pub async fn deactivate(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Activation>,
) -> ApiResult<Json<SessionInfo>> {
    Ok(Json(activation::deactivate(&app, &user, &id, &body).await?))
}

/// `GET /v1/audit[?limit=N&before=SEQ&secret=...&cursor=...]`: a filtered page of the caller's
/// audit trail, oldest first; the next page's cursor in `Maestro-Next-Cursor` (and, paging
/// towards older records, its `before` in `Maestro-Next-Before`, as before filters existed).
pub async fn audit(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let filters = history::parse_filters(query.as_deref(), crate::clock::now())?;
    let after = matches!(filters.position, AuditPosition::After(_));
    let listing = history::list(&app, &user, filters).await?;
    let next_before = (!after)
        .then(|| listing.next.as_deref().and_then(|c| history::parse_cursor(c).ok()))
        .flatten();
    let mut response = Json(listing.events).into_response();
    if let Some(AuditPosition::Before(seq)) = next_before {
        response.headers_mut().insert(NEXT_BEFORE_HEADER, seq.into());
    }
    if let Some(cursor) = listing.next.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(NEXT_CURSOR_HEADER, cursor);
    }
    Ok(response)
}

/// `GET /v1/secrets/{name}/usage`: uses per session, command and day, first and last use.
pub async fn secret_usage(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<SecretUsage>> {
    Ok(Json(history::usage(&app, &user, &name).await?))
}
