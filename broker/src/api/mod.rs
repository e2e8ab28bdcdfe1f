//! The HTTP face of the broker: one router for the user API and the agent API, every error in
//! the [`maestro_wire::api::ApiError`] format, and a request log that names routes, never
//! bodies.

pub mod agent;
pub mod alerts;
pub mod error;
pub mod extract;
pub mod oauth;
pub mod teams;
pub mod tokens;
pub mod user;

#[cfg(test)]
mod tests;

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::{CACHE_CONTROL, CONNECTION, CONTENT_LENGTH};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maestro_wire::api::ErrorCode;
use maestro_wire::limits::{
    MAX_BODY_BYTES, MAX_ENROLL_BODY_BYTES, MAX_OTHER_BODY_BYTES, MAX_USAGE_BODY_BYTES,
};
use tracing::{debug, info};

use crate::app::SharedApp;
use error::Failure;

/// The whole API.
pub fn router(app: SharedApp) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/v1/kinds", get(user::kinds))
        .route("/v1/meta", get(user::meta))
        .route("/v1/secrets", post(user::create_secret).get(user::list_secrets))
        .route(
            "/v1/secrets/{name}",
            get(user::show_secret).patch(user::edit_secret).delete(user::delete_secret),
        )
        .route("/v1/secrets/{name}/history", get(user::secret_history))
        .route("/v1/secrets/{name}/usage", get(user::secret_usage))
        .route("/v1/secrets/{name}/compromised", post(user::compromised_secret))
        .route("/v1/sessions", post(user::create_session).get(user::list_sessions))
        .route("/v1/sessions/{id}", get(user::show_session))
        .route("/v1/sessions/{id}/end", post(user::end_session))
        .route("/v1/sessions/{id}/activate", post(user::activate))
        .route("/v1/sessions/{id}/deactivate", post(user::deactivate))
        .route("/v1/activations", get(user::activations))
        .route("/v1/audit", get(user::audit))
        .route("/v1/enroll", post(agent::enroll))
        .route("/v1/agent/renew", post(agent::renew))
        .route("/v1/agent/events", get(agent::events))
        .route("/v1/agent/secrets", get(agent::all_material))
        .route("/v1/agent/secrets/{name}", get(agent::one_material))
        .route("/v1/agent/usage", post(agent::usage))
        .merge(oauth::routes())
        .merge(alerts::routes())
        .merge(tokens::routes())
        .merge(teams::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(app.clone(), read_body))
        .layer(middleware::from_fn(log_request))
        .with_state(app)
}

/// The largest body a route takes: a few KiB where no credential is needed (enrollment) or
/// none but a certificate is (renewal), the size of a full batch for usage reports, a secret
/// at its limits where values are sent, and [`MAX_OTHER_BODY_BYTES`] elsewhere.
pub fn body_limit(method: &Method, path: &str) -> usize {
    match (method, path) {
        (_, "/v1/enroll" | "/v1/agent/renew") => MAX_ENROLL_BODY_BYTES,
        (_, "/v1/agent/usage") => MAX_USAGE_BODY_BYTES,
        (&Method::POST, "/v1/secrets") => MAX_BODY_BYTES,
        (&Method::PATCH, p) if p.starts_with("/v1/secrets/") => MAX_BODY_BYTES,
        _ => MAX_OTHER_BODY_BYTES,
    }
}

/// Whether the request carries a credential worth reading its body for: a client certificate
/// (checked against our CA in the handshake) on the agent API, a valid token elsewhere.
/// Without one the handler refuses it before it reads any body.
async fn has_credential(parts: &mut axum::http::request::Parts, app: &SharedApp) -> bool {
    if parts.uri.path() == "/v1/enroll" {
        return true;
    }
    if parts.uri.path().starts_with("/v1/agent/") {
        return parts
            .extensions
            .get::<std::sync::Arc<axum_server::tls::TlsInfo>>()
            .is_some_and(|info| !info.peer_certificates.is_empty());
    }
    crate::auth::authenticate(parts, app).await.is_ok()
}

/// Reads the whole request body, within the route's size limit ([`body_limit`]) and the body
/// timeout (`--body-timeout`), before the handler runs:
///
/// * an upload larger than the route takes is refused after at most its limit (413), and a
///   stalled one when the timeout passes (408), so a client cannot make the broker hold a large
///   body or a connection for long;
/// * every handler sees a body that has ended, so an early answer (415 for a `text/plain`
///   body) is a complete exchange: over HTTP/2, answering before the request's body was read
///   made hyper reset the stream, and the client saw a reset instead of the JSON error.
///
/// Requests without a credential (a token, or a client certificate on the agent API) are not
/// read at all: their handler refuses them first. Bodies may hold secret values: the buffer is
/// handed on, and the JSON extractor wipes it once parsed.
async fn read_body(
    axum::extract::State(app): axum::extract::State<SharedApp>,
    req: Request,
    next: Next,
) -> Response {
    use axum::body::{Body, HttpBody};
    use futures_util::StreamExt;
    use zeroize::{Zeroize, Zeroizing};

    /// Why a body could not be read.
    enum Unread {
        TooLarge,
        Failed,
    }

    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let limit = body_limit(req.method(), req.uri().path());
    let (mut parts, body) = req.into_parts();
    if !has_credential(&mut parts, &app).await {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let too_large = || {
        let mut response = Failure::new(
            ErrorCode::TooLarge,
            format!("the request body is larger than {limit} bytes, the limit of this route; send less at once"),
        )
        .into_response();
        // HTTP/1: the rest of the body is not read, so the connection cannot be reused.
        response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
        response
    };
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let capacity = declared.map_or(0, |n| usize::try_from(n).unwrap_or(limit).min(limit));
    // Wiped when dropped: on an error, and when the timeout drops this future half way.
    let mut buf = Zeroizing::new(Vec::with_capacity(capacity));
    let read = async {
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { return Err(Unread::Failed) };
            if buf.len() + chunk.len() > limit {
                return Err(Unread::TooLarge);
            }
            if buf.len() + chunk.len() > buf.capacity() {
                // Grow by hand so that the old buffer, which may hold a value, is wiped.
                let mut bigger =
                    Vec::with_capacity((buf.len() + chunk.len()).max(buf.len() * 2).min(limit));
                bigger.extend_from_slice(&buf);
                buf.zeroize();
                *buf = bigger;
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match tokio::time::timeout(app.settings.body_timeout, read).await {
        Ok(Ok(())) => {
            let body = Body::from(std::mem::take(&mut *buf));
            next.run(Request::from_parts(parts, body)).await
        }
        Ok(Err(Unread::TooLarge)) => too_large(),
        Ok(Err(Unread::Failed)) => Failure::bad_request(
            "the request body could not be read (the connection failed); retry",
        )
        .into_response(),
        Err(_) => {
            let mut response = Failure::new(
                ErrorCode::Timeout,
                format!(
                    "the request body did not arrive within {} s; send it at once",
                    app.settings.body_timeout.as_secs()
                ),
            )
            .into_response();
            response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn not_found() -> Failure {
    Failure::not_found("no such route; the API is described in docs/broker.md")
}

async fn method_not_allowed() -> Failure {
    Failure::with_status(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::BadRequest,
        "this route does not take that method; the API is described in docs/broker.md",
    )
}

/// Logs method, path, status and time of each request (never headers or bodies), and marks
/// every answer `no-store`: none of them belongs in a cache.
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    // The path only: a query string can carry an OAuth code or state.
    tracing::trace!(%method, %path, "request received");
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
