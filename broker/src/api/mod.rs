//! The HTTP face of the broker: one router for the user API and the agent API, every error in
//! the [`maestro_wire::api::ApiError`] format, and a request log that names routes, never
//! bodies.

pub mod agent;
pub mod error;
pub mod extract;
pub mod user;

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maestro_wire::api::ErrorCode;
use maestro_wire::limits::MAX_BODY_BYTES;
use tracing::{debug, info};

use crate::app::SharedApp;
use error::Failure;

/// The whole API.
pub fn router(app: SharedApp) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/v1/kinds", get(user::kinds))
        .route("/v1/secrets", post(user::create_secret).get(user::list_secrets))
        .route(
            "/v1/secrets/{name}",
            get(user::show_secret).patch(user::edit_secret).delete(user::delete_secret),
        )
        .route("/v1/secrets/{name}/history", get(user::secret_history))
        .route("/v1/sessions", post(user::create_session).get(user::list_sessions))
        .route("/v1/sessions/{id}", get(user::show_session))
        .route("/v1/sessions/{id}/end", post(user::end_session))
        .route("/v1/sessions/{id}/activate", post(user::activate))
        .route("/v1/sessions/{id}/deactivate", post(user::deactivate))
        .route("/v1/audit", get(user::audit))
        .route("/v1/enroll", post(agent::enroll))
        .route("/v1/agent/renew", post(agent::renew))
        .route("/v1/agent/events", get(agent::events))
        .route("/v1/agent/secrets", get(agent::all_material))
        .route("/v1/agent/secrets/{name}", get(agent::one_material))
        .route("/v1/agent/usage", post(agent::usage))
        .merge(crate::oauth::api::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(log_request))
        .with_state(app)
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn not_found() -> Failure {
    Failure::not_found("no such route; see the route tables in the README")
}

async fn method_not_allowed() -> Failure {
    Failure::with_status(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::BadRequest,
        "this route does not take that method; see the route tables in the README",
    )
}

/// Logs method, path, status and time of each request (never headers or bodies), and marks
/// every answer `no-store`: none of them belongs in a cache.
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    let mut response = next.run(req).await;
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let status = response.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if method == Method::GET && response.status().is_success() {
        debug!(%method, %path, status, ms, "request");
    } else {
        info!(%method, %path, status, ms, "request");
    }
    response
}
