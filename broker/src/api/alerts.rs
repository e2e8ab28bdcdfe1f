//! The alerts API (bearer token): `GET /v1/alerts`, `POST /v1/alerts/ack`, and the user's
//! defaults at `GET`/`PUT /v1/alerts/config`. Each handler calls one rule of
//! [`crate::domain::alerts`].

use axum::Json;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::routing::{get, post};
use maestro_wire::alerts::{AckAlerts, Acked, Alert, AlertConfig, AlertConfigUpdate};

use super::error::ApiResult;
use super::extract::ApiJson;
use crate::app::SharedApp;
use crate::auth::CurrentUser;
use crate::domain::alerts::{self, ListQuery};
use crate::domain::error::DomainError;

/// The alert routes.
pub fn routes() -> Router<SharedApp> {
    Router::new()
        .route("/v1/alerts", get(list))
        .route("/v1/alerts/ack", post(ack))
        .route("/v1/alerts/config", get(config).put(set_config))
}

/// Reads `secret`, `session`, `unacked`, `before` and `limit`; anything else is refused.
fn parse_query(query: Option<&str>) -> Result<ListQuery, DomainError> {
    let mut q = ListQuery::default();
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let number = |what: &str| {
            value.parse::<i64>().map_err(|_| {
                DomainError::bad_request(format!("{what} must be a number; '{value}' is not"))
            })
        };
        match key.as_ref() {
            "secret" => q.secret = Some(value.to_string()),
            "session" => q.session = Some(value.to_string()),
            "unacked" => q.unacked = Some(matches!(value.as_ref(), "1" | "true")),
            "before" => q.before = Some(number("before")?),
            "limit" => {
                q.limit =
                    Some(u32::try_from(number("limit")?).map_err(|_| {
                        DomainError::bad_request("limit must be between 1 and 1000")
                    })?)
            }
            other => {
                return Err(DomainError::bad_request(format!(
                    "unknown filter '{}'; GET /v1/alerts takes secret, session, unacked, before and limit",
                    other.chars().take(64).collect::<String>().escape_default()
                )));
            }
        }
    }
    Ok(q)
}

/// `GET /v1/alerts[?secret=NAME&session=ID|PREFIX|LABEL&unacked=1&before=ID&limit=N]`:
/// newest first.
pub async fn list(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<Alert>>> {
    let q = parse_query(query.as_deref())?;
    Ok(Json(alerts::list(&app, &user, q).await?))
}

/// `POST /v1/alerts/ack`.
pub async fn ack(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<AckAlerts>,
) -> ApiResult<Json<Acked>> {
    Ok(Json(Acked { acked: alerts::ack(&app, &user, &body.ids).await? }))
}

/// `GET /v1/alerts/config`: the webhook URL (never its signing secret) and default actions.
pub async fn config(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
) -> ApiResult<Json<AlertConfig>> {
    Ok(Json(alerts::config(&app, &user).await?))
}

/// `PUT /v1/alerts/config`: all or nothing.
pub async fn set_config(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<AlertConfigUpdate>,
) -> ApiResult<Json<AlertConfig>> {
    Ok(Json(alerts::set_config(&app, &user, body).await?))
}
