//! The token routes (bearer token, `admin` scope; `whoami` any token): `GET`/`POST
//! /v1/tokens`, `DELETE /v1/tokens/{id}`, `GET`/`POST /v1/service-accounts`, `DELETE
//! /v1/service-accounts/{name}`, `GET /v1/whoami`. Each calls one rule of
//! [`crate::domain::tokens`]. A team's service accounts and tokens: `?team=TEAM` on the
//! lists, `TEAM/NAME` (percent-encoded in the path) for a service account.

use axum::Json;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use maestro_wire::tokens::{
    CreateServiceAccount, CreateToken, Revoked, ServiceAccountInfo, TokenCreated, TokenInfo,
};

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath};
use crate::app::SharedApp;
use crate::auth::Caller;
use crate::domain::DomainError;
use crate::domain::tokens;

/// The token routes.
pub fn routes() -> Router<SharedApp> {
    Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/tokens", get(list).post(create))
        .route("/v1/tokens/{id}", delete(revoke))
        .route("/v1/service-accounts", get(list_accounts).post(create_account))
        .route("/v1/service-accounts/{name}", delete(remove_account))
}

/// `?team=TEAM`: a team's tokens or service accounts instead of the caller's.
fn team_query(query: Option<&str>) -> Result<Option<String>, DomainError> {
    let mut team = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if key != "team" || team.is_some() {
            return Err(DomainError::bad_request(
                "the only query parameter here is team=TEAM, given once",
            ));
        }
        team = Some(value.into_owned());
    }
    Ok(team)
}

/// `GET /v1/whoami`.
async fn whoami(caller: Caller) -> Json<serde_json::Value> {
    Json(tokens::whoami(&caller))
}

/// `POST /v1/tokens`: the token is in this answer and nowhere else.
async fn create(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateToken>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    Ok((StatusCode::CREATED, Json(tokens::create(&app, &caller, body).await?)))
}

/// `GET /v1/tokens`.
async fn list(
    State(app): State<SharedApp>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    let team = team_query(query.as_deref())?;
    Ok(Json(tokens::list(&app, &caller, team.as_deref()).await?))
}

/// `DELETE /v1/tokens/{id}`.
async fn revoke(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Revoked>> {
    Ok(Json(tokens::revoke(&app, &caller, &id).await?))
}

/// `POST /v1/service-accounts`.
async fn create_account(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateServiceAccount>,
) -> ApiResult<(StatusCode, Json<ServiceAccountInfo>)> {
    Ok((StatusCode::CREATED, Json(tokens::create_account(&app, &caller, body).await?)))
}

/// `GET /v1/service-accounts`.
async fn list_accounts(
    State(app): State<SharedApp>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<ServiceAccountInfo>>> {
    let team = team_query(query.as_deref())?;
    Ok(Json(tokens::list_accounts(&app, &caller, team.as_deref()).await?))
}

/// `DELETE /v1/service-accounts/{name}`: its tokens are revoked with it.
async fn remove_account(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Revoked>> {
    Ok(Json(tokens::remove_account(&app, &caller, &name).await?))
}
