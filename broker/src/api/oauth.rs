//! The `/v1/oauth/...` routes (see the route table in `maestro_wire::api`), thin over
//! [`crate::oauth`]. Every route takes
//! the user's bearer token except the callback, where the single-use `state` is the
//! capability; the callback answers a short HTML page, never JSON, since a browser reads it.

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath};
use crate::app::SharedApp;
use crate::auth::CurrentUser;
use crate::oauth::authorize::{self, CallbackResult};
use crate::oauth::{providers, refresh};
use axum::Json;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_FRAME_OPTIONS};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use maestro_wire::api::SecretMeta;
use maestro_wire::oauth::{
    AddProvider, AuthorizationStarted, AuthorizationStatus, Connect, EditProvider, ProviderInfo,
    ProviderRemoved, Reconnect, RefreshNow,
};

/// The OAuth routes, merged into the broker's router.
pub fn routes() -> Router<SharedApp> {
    Router::new()
        .route("/v1/oauth/providers", post(add_provider).get(list_providers))
        .route("/v1/oauth/providers/{name}", patch(edit_provider).delete(remove_provider))
        .route("/v1/oauth/connect", post(connect))
        .route("/v1/oauth/reconnect", post(reconnect))
        .route("/v1/oauth/refresh", post(refresh_now))
        .route("/v1/oauth/authorizations/{id}", get(status))
        .route("/v1/oauth/authorizations/{id}/cancel", post(cancel))
        .route(crate::oauth::CALLBACK_PATH, get(callback))
}

/// `POST /v1/oauth/providers`.
async fn add_provider(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<AddProvider>,
) -> ApiResult<(StatusCode, Json<ProviderInfo>)> {
    Ok((StatusCode::CREATED, Json(providers::add(&app, &user, body).await?)))
}

/// `GET /v1/oauth/providers`.
async fn list_providers(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
) -> ApiResult<Json<Vec<ProviderInfo>>> {
    Ok(Json(providers::list(&app, &user).await?))
}

/// `PATCH /v1/oauth/providers/{name}`.
async fn edit_provider(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<EditProvider>,
) -> ApiResult<Json<ProviderInfo>> {
    Ok(Json(providers::edit(&app, &user, &name, body).await?))
}

/// `DELETE /v1/oauth/providers/{name}`: refused while secrets use it.
async fn remove_provider(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<ProviderRemoved>> {
    Ok(Json(providers::remove(&app, &user, &name).await?))
}

/// `POST /v1/oauth/connect`.
async fn connect(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<Connect>,
) -> ApiResult<(StatusCode, Json<AuthorizationStarted>)> {
    Ok((StatusCode::CREATED, Json(authorize::connect(&app, &user, body).await?)))
}

/// `POST /v1/oauth/reconnect`.
async fn reconnect(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<Reconnect>,
) -> ApiResult<(StatusCode, Json<AuthorizationStarted>)> {
    Ok((StatusCode::CREATED, Json(authorize::reconnect(&app, &user, body).await?)))
}

/// `POST /v1/oauth/refresh`.
async fn refresh_now(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<RefreshNow>,
) -> ApiResult<Json<SecretMeta>> {
    Ok(Json(refresh::refresh_named(&app, &user, &body.name).await?))
}

/// `GET /v1/oauth/authorizations/{id}`.
async fn status(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<AuthorizationStatus>> {
    Ok(Json(authorize::status(&app, &user, &id).await?))
}

/// `POST /v1/oauth/authorizations/{id}/cancel`.
async fn cancel(
    State(app): State<SharedApp>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<AuthorizationStatus>> {
    Ok(Json(authorize::cancel(&app, &user, &id).await?))
}

/// `GET /v1/oauth/callback`: where the provider sends the browser back.
async fn callback(State(app): State<SharedApp>, RawQuery(query): RawQuery) -> Response {
    let outcome = authorize::callback(&app, query.as_deref()).await;
    let status = match outcome.result {
        CallbackResult::Authorized => StatusCode::OK,
        CallbackResult::Refused => StatusCode::BAD_REQUEST,
        CallbackResult::Failed => StatusCode::INTERNAL_SERVER_ERROR,
    };
    page(status, &outcome.message)
}

/// The broker's message without the clauses that name a command (`maestro oauth connect`) or a
/// flag: the callback is read in a browser, and the page's own line says what to do next.
fn without_commands(message: &str) -> String {
    let speaks_cli = |clause: &str| clause.contains('`') || clause.contains(" --");
    let mut sentences = Vec::new();
    for sentence in message.split_inclusive(". ") {
        let sentence = sentence.trim_end();
        let kept: Vec<&str> = sentence.split("; ").filter(|c| !speaks_cli(c)).collect();
        if kept.is_empty() {
            continue;
        }
        let mut text = kept.join("; ");
        if !text.ends_with('.') {
            text.push('.');
        }
        sentences.push(text);
    }
    sentences.join(" ")
}

/// Text safe inside HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The callback page's policy: the Secret Manager's stylesheet and icon from this origin, and
/// nothing else (no script at all).
pub const CALLBACK_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; form-action 'none'";

/// A page with one message, in the Secret Manager's look, with a link back to its OAuth
/// section (relative, so that it also works behind a path prefix: the page is at
/// `/v1/oauth/callback`). The URL that led here holds a code: no referrer leaves it, no frame
/// shows it, no script runs on it.
fn page(status: StatusCode, message: &str) -> Response {
    let ok = status.is_success();
    let title = if ok { "Authorized" } else { "Authorization failed" };
    let (tone, next) = if ok {
        ("ok", "The Secret Manager shows the new secret; you may close this tab.")
    } else {
        ("bad", "Start the connection again from the Secret Manager, or from the command line.")
    };
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Maestro: {title}</title>\
         <link rel=\"icon\" href=\"../../ui/favicon.png\" type=\"image/png\">\
         <link rel=\"stylesheet\" href=\"../../ui/app.css\"></head>\n\
         <body class=\"callback\"><main class=\"callback-main\">\
         <p class=\"brand\"><span class=\"brand-mark\" aria-hidden=\"true\">M</span>\
         <span class=\"brand-text\">Maestro<small>Secret Manager</small></span></p>\
         <section class=\"card flow {tone}\" aria-labelledby=\"callback-title\">\
         <h1 id=\"callback-title\">{title}</h1>\n<p id=\"callback-message\">{}</p>\
         <p class=\"help\">{next}</p>\
         <p class=\"buttons left\"><a id=\"callback-back\" class=\"button primary\" \
         href=\"../../ui/#/oauth\">Back to the Secret Manager</a></p></section></main></body></html>\n",
        escape(&without_commands(message))
    );
    (
        status,
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (REFERRER_POLICY, "no-referrer"),
            (X_FRAME_OPTIONS, "DENY"),
            (CONTENT_SECURITY_POLICY, CALLBACK_CSP),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_name_no_command() {
        assert_eq!(
            without_commands(
                "This authorization is unknown (a mistyped link). Nothing was stored; run `maestro oauth connect` again."
            ),
            "This authorization is unknown (a mistyped link). Nothing was stored."
        );
        assert_eq!(
            without_commands(
                "a secret named X was created meanwhile; nothing was stored. Delete it or choose another --name, then run `maestro oauth connect`"
            ),
            "a secret named X was created meanwhile; nothing was stored."
        );
        assert_eq!(without_commands("Authorized: stored GITHUB."), "Authorized: stored GITHUB.");
    }

    #[test]
    fn pages_escape_what_they_quote() {
        assert_eq!(escape("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
    }
}
