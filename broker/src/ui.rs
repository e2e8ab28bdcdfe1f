//! The Secret Manager web UI: static assets compiled into the binary and served at `/ui/`,
//! with `/` redirecting there.
//!
//! The page is a client of the user API on the same origin and nothing else: it holds the
//! user's API token in the tab's `sessionStorage` and sends it as `Authorization: Bearer`, so
//! the assets themselves need no credentials and carry no user data. Every answer of this
//! router forbids framing, inline and foreign scripts, foreign form targets, MIME sniffing,
//! referrers and caching (see [`SECURITY_HEADERS`]); the assets are written to work under
//! exactly that policy (no inline script or style, no external URL).
//!
//! The OAuth provider presets (`maestro_wire::oauth::PRESETS`: endpoints, the scopes each
//! accepts, the defaults) are served as data at `/ui/oauth-presets.json`, so the page's provider
//! form follows the same table as the broker and the CLI instead of a copy of it. They hold no
//! user data and need no token, like the other assets.
//!
//! The router has no state and no fallback, so it merges into the API router:
//! `api::router(app).merge(ui::router())`.

use axum::http::HeaderValue;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderName, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::middleware;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use maestro_wire::oauth::{PRESETS, Preset};

/// The page.
pub const INDEX_HTML: &str = include_str!("../ui/index.html");
/// The client: ES modules under `/ui/js/`, loaded by the page as `<script type="module">` from
/// `main.js`, which imports the others. No build step: each file is served as it is written.
/// A new module needs a line here (and an `import` where it is used).
pub const MODULES: &[(&str, &str)] = &[
    ("main.js", include_str!("../ui/js/main.js")),
    ("router.js", include_str!("../ui/js/router.js")),
    ("api.js", include_str!("../ui/js/api.js")),
    ("state.js", include_str!("../ui/js/state.js")),
    ("constants.js", include_str!("../ui/js/constants.js")),
    ("util.js", include_str!("../ui/js/util.js")),
    ("messages.js", include_str!("../ui/js/messages.js")),
    ("secrets.js", include_str!("../ui/js/secrets.js")),
    ("secret-form.js", include_str!("../ui/js/secret-form.js")),
    ("sessions.js", include_str!("../ui/js/sessions.js")),
    ("audit.js", include_str!("../ui/js/audit.js")),
    ("alerts.js", include_str!("../ui/js/alerts.js")),
    ("oauth.js", include_str!("../ui/js/oauth.js")),
    ("oauth-flow.js", include_str!("../ui/js/oauth-flow.js")),
    ("teams.js", include_str!("../ui/js/teams.js")),
    ("tokens.js", include_str!("../ui/js/tokens.js")),
];
/// The look.
pub const APP_CSS: &str = include_str!("../ui/app.css");
/// The tab icon (32x32 PNG), so that browsers do not ask for a missing `/favicon.ico`.
pub const FAVICON_PNG: &[u8] = include_bytes!("../ui/favicon.png");

/// Where the UI lives.
pub const UI_PATH: &str = "/ui/";

/// The Content-Security-Policy of every UI answer: only this origin's scripts, styles and
/// connections; never framed (clickjacking); forms post nowhere else.
pub const CSP: &str = "default-src 'self'; frame-ancestors 'none'; form-action 'self'";

/// Headers set on every answer of this router.
pub const SECURITY_HEADERS: [(HeaderName, &str); 4] = [
    (CONTENT_SECURITY_POLICY, CSP),
    (X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (REFERRER_POLICY, "no-referrer"),
    // A deployed broker may change its assets with any upgrade; a stale client module against a new
    // API is worse than a reload.
    (CACHE_CONTROL, "no-store"),
];

/// The UI routes: `/` and `/ui` redirect to `/ui/`; `/ui/`, `/ui/js/*.js` (each of
/// [`MODULES`]), `/ui/app.css`, `/ui/favicon.png`, `/ui/oauth-presets.json`. An unknown path
/// under `/ui/` falls through to the API's JSON 404.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new();
    for (name, text) in MODULES {
        // Module scripts must come with a JavaScript MIME type, or the browser refuses them.
        router = router.route(
            &format!("/ui/js/{name}"),
            get(move || async move { asset("text/javascript; charset=utf-8", *text) }),
        );
    }
    router
        .route("/", get(to_ui))
        .route("/ui", get(to_ui))
        .route("/ui/", get(index))
        .route("/ui/app.css", get(app_css))
        .route("/ui/favicon.png", get(favicon))
        .route("/ui/oauth-presets.json", get(oauth_presets))
        .layer(middleware::map_response(secure))
}

async fn to_ui() -> Redirect {
    Redirect::to(UI_PATH)
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

async fn favicon() -> Response {
    asset("image/png", FAVICON_PNG)
}

/// `application/json`: the presets, in the order the provider form offers them.
async fn oauth_presets() -> Json<&'static [Preset]> {
    Json(PRESETS)
}

fn asset(content_type: &'static str, body: impl IntoResponse) -> Response {
    ([(CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response()
}

async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves the UI router alone on a loopback port (plain HTTP: TLS is the server's job,
    /// tested end to end in `tests/tests/ui_*.rs`).
    async fn serve() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router::<()>()).await.unwrap();
        });
        (format!("http://{addr}"), task)
    }

    fn no_redirects() -> reqwest::Client {
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
    }

    fn assert_secure(response: &reqwest::Response) {
        let h = response.headers();
        assert_eq!(h["content-security-policy"], CSP);
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["cache-control"], "no-store");
    }

    #[tokio::test]
    async fn serves_assets_with_types_and_headers() {
        let (base, task) = serve().await;
        let client = no_redirects();
        for (path, content_type, body) in [
            ("/ui/", "text/html; charset=utf-8", INDEX_HTML),
            ("/ui/app.css", "text/css; charset=utf-8", APP_CSS),
        ] {
            let response = client.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            assert_eq!(response.headers()["content-type"], content_type, "{path}");
            assert_secure(&response);
            assert_eq!(response.text().await.unwrap(), body, "{path}");
        }
        for (name, text) in MODULES {
            let response = client.get(format!("{base}/ui/js/{name}")).send().await.unwrap();
            assert_eq!(response.status(), 200, "{name}");
            assert_eq!(response.headers()["content-type"], "text/javascript; charset=utf-8");
            assert_secure(&response);
            assert_eq!(response.text().await.unwrap(), *text, "{name}");
        }
        let response = client.get(format!("{base}/ui/favicon.png")).send().await.unwrap();
        assert_eq!(response.headers()["content-type"], "image/png");
        assert_secure(&response);
        assert_eq!(&response.bytes().await.unwrap()[..], FAVICON_PNG);
        assert!(FAVICON_PNG.starts_with(b"\x89PNG\r\n\x1a\n"));
        task.abort();
    }

    #[tokio::test]
    async fn serves_the_oauth_presets_as_data() {
        let (base, task) = serve().await;
        let response =
            no_redirects().get(format!("{base}/ui/oauth-presets.json")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_secure(&response);
        let presets: Vec<serde_json::Value> = response.json().await.unwrap();
        let names: Vec<&str> = presets.iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["github", "gitlab", "microsoft", "google", "custom"]);
        let github = &presets[0];
        assert_eq!(github["default_scopes"], serde_json::json!(["repo", "read:org"]));
        assert!(github["accepted_scopes"].as_array().unwrap().iter().any(|s| s == "workflow"));
        assert_eq!(presets[2]["implied_scopes"], serde_json::json!(["offline_access"]));
        assert!(presets[4]["auth_url"].is_null() && presets[4]["accepted_scopes"].is_null());
        task.abort();
    }

    #[tokio::test]
    async fn root_redirects_to_the_ui() {
        let (base, task) = serve().await;
        let client = no_redirects();
        for path in ["/", "/ui"] {
            let response = client.get(format!("{base}{path}")).send().await.unwrap();
            assert!(response.status().is_redirection(), "{path}: {}", response.status());
            assert_eq!(response.headers()["location"], UI_PATH);
            assert_secure(&response);
        }
        task.abort();
    }

    #[test]
    fn every_imported_module_is_served_and_every_served_one_is_imported() {
        let served: Vec<&str> = MODULES.iter().map(|(name, _)| *name).collect();
        let mut imported = vec!["main.js"];
        for (name, text) in MODULES {
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let from =
                    line.split(" from './").nth(1).unwrap_or_else(|| panic!("{name}: {line}"));
                let module = from.trim_end_matches(';').trim_end_matches('\'');
                assert!(served.contains(&module), "{name} imports {module}, which is not served");
                imported.push(module);
            }
        }
        for name in served {
            assert!(imported.contains(&name), "{name} is served but no module imports it");
        }
    }

    #[test]
    fn merges_into_a_router_with_a_fallback() {
        // The API router has a fallback; merging panics if this one had one too.
        let api: Router = Router::new().fallback(|| async { "api" });
        let _merged: Router = api.merge(router());
    }

    #[test]
    fn assets_name_no_other_origin_and_nothing_inline() {
        let assets = [("index.html", INDEX_HTML), ("app.css", APP_CSS)];
        for (name, text) in assets.iter().chain(MODULES) {
            let lower = text.to_ascii_lowercase();
            for needle in ["http://", "https://", "src=\"//", "href=\"//", "ws://", "wss://"] {
                assert!(!lower.contains(needle), "{name} contains {needle}");
            }
        }
        let css = APP_CSS.to_ascii_lowercase();
        assert!(!css.contains("url(") && !css.contains("@import"), "app.css loads something");
        let html = INDEX_HTML.to_ascii_lowercase();
        // The CSP forbids inline code and style: they would silently not run.
        assert!(!html.contains("<style"), "inline <style> in index.html");
        assert!(!html.contains(" style="), "style attribute in index.html");
        assert!(!html.contains(" onclick=") && !html.contains(" onload="), "inline handler");
        assert_eq!(html.matches("<script").count(), 1);
        assert!(html.contains("<script type=\"module\" src=\"js/main.js\"></script>"));
        assert!(html.contains("<link rel=\"stylesheet\" href=\"app.css\">"));
        assert!(html.contains("<link rel=\"icon\" href=\"favicon.png\" type=\"image/png\">"));
    }
}
