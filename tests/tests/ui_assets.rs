//! The Secret Manager web UI as the real broker serves it over HTTPS: the page and its assets
//! with their content types and security headers, `/` sending a browser to `/ui/`, nothing
//! loaded from another origin, no token needed for the assets while the API still wants one,
//! the OAuth presets served as the wire crate holds them, and every API route the client
//! script calls existing on the broker, with the method the script uses.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use maestro_tests::broker::{Broker, init_crypto};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;

const CSP: &str = "default-src 'self'; frame-ancestors 'none'; form-action 'self'";

/// A client that trusts only the broker's CA and does not follow redirects.
fn browser(broker: &Broker) -> reqwest::Client {
    init_crypto();
    let ca = reqwest::Certificate::from_pem(broker.ca_pem().as_bytes()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

fn assert_security_headers(path: &str, headers: &HeaderMap) {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    assert_eq!(get("content-security-policy"), CSP, "{path}: {headers:?}");
    assert_eq!(get("x-content-type-options"), "nosniff", "{path}");
    assert_eq!(get("referrer-policy"), "no-referrer", "{path}");
    assert_eq!(get("cache-control"), "no-store", "{path}");
}

/// GETs `path` without credentials: status, headers, body.
async fn fetch(client: &reqwest::Client, broker: &Broker, path: &str) -> (u16, HeaderMap, Vec<u8>) {
    let response = client.get(format!("{}{path}", broker.url)).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap().to_vec();
    (status, headers, body)
}

/// The values of every `attr="..."` in `html`.
fn attribute_values(html: &str, attr: &str) -> Vec<String> {
    let needle = format!(" {attr}=\"");
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find(&needle) {
        rest = &rest[at + needle.len()..];
        let end = rest.find('"').expect("attribute value is closed");
        out.push(rest[..end].to_owned());
        rest = &rest[end..];
    }
    out
}

/// The whole client: `js/main.js` and every module it imports, directly or not, each fetched
/// from the broker (which must serve it as JavaScript with the UI's headers), concatenated.
async fn script(client: &reqwest::Client, broker: &Broker) -> String {
    let mut seen: Vec<String> = vec!["main.js".to_owned()];
    let mut text = String::new();
    let mut at = 0;
    while at < seen.len() {
        let path = format!("/ui/js/{}", seen[at]);
        let (status, headers, body) = fetch(client, broker, &path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(headers["content-type"], "text/javascript; charset=utf-8", "{path}");
        assert_security_headers(&path, &headers);
        let module = String::from_utf8(body).unwrap();
        for line in module.lines().filter(|l| l.starts_with("import ")) {
            let from = line.split(" from './").nth(1).expect("imports are relative: ./name.js");
            let name = from.trim_end_matches(';').trim_end_matches('\'').to_owned();
            if !seen.contains(&name) {
                seen.push(name);
            }
        }
        text.push_str(&module);
        text.push('\n');
        at += 1;
    }
    assert!(seen.len() > 5, "main.js imports too few modules: {seen:?}");
    text
}

fn content_type_for(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("png") => "image/png",
        other => panic!("unexpected asset type {other:?} in {path}"),
    }
}

fn assert_no_other_origin(name: &str, text: &str) {
    let lower = text.to_ascii_lowercase();
    for needle in ["http://", "https://", "ws://", "wss://", "src=\"//", "href=\"//", "@import"] {
        assert!(!lower.contains(needle), "{name} names another origin ({needle})");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn page_is_served_with_security_headers_and_root_redirects() {
    let broker = Broker::start();
    let client = browser(&broker);

    let (status, headers, body) = fetch(&client, &broker, "/ui/").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_security_headers("/ui/", &headers);
    let html = String::from_utf8(body).unwrap();
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert!(html.contains("<title>Maestro · Secret Manager</title>"));
    // The parts a user needs are on the page: sign-in, secrets, sessions, history, OAuth
    // (providers, connecting, an authorization in progress, a secret's OAuth state).
    for id in [
        "signin-token",
        "view-secrets",
        "secret-form",
        "view-secret",
        "session-form",
        "view-session",
        "view-audit",
        "view-oauth",
        "provider-form",
        "connect-form",
        "oauth-flow",
        "secret-oauth",
        "reconnect-form",
        "confirm-dialog",
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "the page has no #{id}");
    }
    // The placeholder of the time before OAuth existed is gone.
    assert!(!html.contains("Not available yet"), "the OAuth placeholder is still there");
    // The API token and an OAuth app's client secret go into password inputs, never plain
    // text ones.
    assert!(html.contains("type=\"password\" id=\"signin-token\""));
    assert!(html.contains("type=\"password\" id=\"provider-client-secret\""));

    for path in ["/", "/ui"] {
        let (status, headers, _) = fetch(&client, &broker, path).await;
        assert!((300..400).contains(&status), "{path} answered {status}");
        assert_eq!(headers["location"], "/ui/", "{path}");
        assert_security_headers(path, &headers);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn assets_load_with_their_types_and_name_no_other_origin() {
    let broker = Broker::start();
    let client = browser(&broker);
    let (_, _, body) = fetch(&client, &broker, "/ui/").await;
    let html = String::from_utf8(body).unwrap();
    assert_no_other_origin("index.html", &html);
    // The CSP forbids inline code and style: they would silently do nothing.
    assert!(!html.contains("<style"), "inline <style>");
    assert!(!html.contains(" style=\""), "style attribute");
    assert!(!html.contains(" onclick=\"") && !html.contains(" onload=\""), "inline handler");

    let mut assets: BTreeSet<String> = BTreeSet::new();
    for attr in ["src", "href"] {
        for value in attribute_values(&html, attr) {
            if value.starts_with('#') {
                continue; // in-page links of the client-side router
            }
            assert!(
                !value.contains(':') && !value.starts_with('/'),
                "{attr}=\"{value}\" is not relative to /ui/"
            );
            assets.insert(value);
        }
    }
    let expected: BTreeSet<String> =
        ["js/main.js", "app.css", "favicon.png"].iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(assets, expected, "the page loads exactly these assets");

    for asset in &assets {
        let path = format!("/ui/{asset}");
        let (status, headers, body) = fetch(&client, &broker, &path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(headers["content-type"], content_type_for(asset), "{path}");
        assert_security_headers(&path, &headers);
        assert!(!body.is_empty(), "{path} is empty");
        if !asset.ends_with(".png") {
            assert_no_other_origin(asset, &String::from_utf8(body).unwrap());
        }
    }
    assert_no_other_origin("the modules", &script(&client, &broker).await);
    let (_, _, css) = fetch(&client, &broker, "/ui/app.css").await;
    assert!(!String::from_utf8(css).unwrap().contains("url("), "app.css loads something");
}

#[tokio::test(flavor = "multi_thread")]
async fn assets_need_no_token_and_the_api_still_does() {
    let broker = Broker::start();
    let client = browser(&broker);
    let (status, _, _) = fetch(&client, &broker, "/ui/js/main.js").await;
    assert_eq!(status, 200);

    let (status, _, body) = fetch(&client, &broker, "/v1/secrets").await;
    assert_eq!(status, 401);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "unauthorized");

    // Unknown paths, under /ui/ too, still get the API's JSON 404.
    for path in ["/ui/nope.js", "/ui/js/nope.js", "/ui/app.js", "/v1/nope"] {
        let (status, _, body) = fetch(&client, &broker, path).await;
        assert_eq!(status, 404, "{path}");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "not_found", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn oauth_presets_are_served_as_the_wire_crate_holds_them() {
    let broker = Broker::start();
    let client = browser(&broker);
    assert!(
        script(&client, &broker).await.contains("'oauth-presets.json'"),
        "the client no longer loads the presets; update this test"
    );
    let (status, headers, body) = fetch(&client, &broker, "/ui/oauth-presets.json").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert_security_headers("/ui/oauth-presets.json", &headers);
    let served: Value = serde_json::from_slice(&body).unwrap();
    let expected = serde_json::to_value(maestro_wire::oauth::PRESETS).unwrap();
    assert_eq!(served, expected);
    // What the provider form reads from each preset.
    for preset in served.as_array().unwrap() {
        for key in ["name", "auth_url", "token_url", "revoke_url", "no_revocation", "kind"] {
            assert!(preset.get(key).is_some(), "a preset has no {key}: {preset}");
        }
        for key in ["default_scopes", "implied_scopes"] {
            assert!(preset[key].is_array(), "{key} of {preset}");
        }
        assert!(preset["accepted_scopes"].is_array() || preset["accepted_scopes"].is_null());
    }
}

/// The API paths written in the client's modules (`'v1/...'` and `` `v1/...` ``) without their query
/// strings, each `${...}` replaced by `NOPE` and `${verb}` by both verbs it takes.
fn script_api_paths(js: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for quote in ['\'', '`'] {
        let start = format!("{quote}v1/");
        let mut rest = js;
        while let Some(at) = rest.find(&start) {
            rest = &rest[at + 1..];
            let end = rest.find(quote).expect("string is closed");
            // A query string is not part of the route.
            let template = rest[..end].split('?').next().unwrap_or_default();
            rest = &rest[end..];
            let verbs: &[&str] =
                if template.contains("${verb}") { &["activate", "deactivate"] } else { &[""] };
            for verb in verbs {
                let mut path = template.replace("${verb}", verb);
                while let Some(open) = path.find("${") {
                    let close = open + path[open..].find('}').expect("placeholder is closed");
                    path.replace_range(open..=close, "NOPE");
                }
                out.insert(format!("/{path}"));
            }
        }
    }
    out
}

/// `${...}` placeholders replaced by `NOPE`.
fn nope(template: &str) -> String {
    let mut path = template.to_owned();
    while let Some(open) = path.find("${") {
        let close = open + path[open..].find('}').expect("placeholder is closed");
        path.replace_range(open..=close, "NOPE");
    }
    path
}

/// The calls `api('METHOD', 'v1/...'` (or a template) in the client's modules: method and path, with
/// `${verb}` expanded to both verbs and other placeholders replaced by `NOPE`.
fn script_api_calls(js: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut rest = js;
    while let Some(at) = rest.find("api('") {
        rest = &rest[at + "api('".len()..];
        let end = rest.find('\'').expect("method is closed");
        let method = rest[..end].to_owned();
        rest = &rest[end + 1..];
        let Some(args) = rest.strip_prefix(", ") else { continue };
        let Some(quote) = args.chars().next().filter(|c| *c == '\'' || *c == '`') else {
            continue;
        };
        let args = &args[1..];
        let end = args.find(quote).expect("path is closed");
        let template = args[..end].split('?').next().unwrap_or_default();
        let verbs: &[&str] =
            if template.contains("${verb}") { &["activate", "deactivate"] } else { &[""] };
        for verb in verbs {
            out.insert((method.clone(), format!("/{}", nope(&template.replace("${verb}", verb)))));
        }
    }
    out
}

#[test]
fn script_calls_are_read_with_their_methods() {
    let js = "api('GET', 'v1/a'); api('POST', `v1/b/${enc(x)}/end`, {}); api('POST', path);\n\
              api('GET', `v1/a?${query}`);\n\
              api('POST', `v1/s/${enc(id)}/${verb}`, { names });";
    let calls = script_api_calls(js);
    let expected: BTreeSet<(String, String)> = [
        ("GET", "/v1/a"),
        ("POST", "/v1/b/NOPE/end"),
        ("POST", "/v1/s/NOPE/activate"),
        ("POST", "/v1/s/NOPE/deactivate"),
    ]
    .iter()
    .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
    .collect();
    assert_eq!(calls, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_api_path_of_the_script_is_a_broker_route() {
    let broker = Broker::start();
    let client = browser(&broker);
    let paths = script_api_paths(&script(&client, &broker).await);
    for expected in [
        "/v1/kinds",
        "/v1/secrets",
        "/v1/secrets/NOPE",
        "/v1/secrets/NOPE/history",
        "/v1/secrets/NOPE/usage",
        "/v1/sessions",
        "/v1/sessions/NOPE",
        "/v1/sessions/NOPE/end",
        "/v1/sessions/NOPE/activate",
        "/v1/sessions/NOPE/deactivate",
        "/v1/audit",
        "/v1/oauth/providers",
        "/v1/oauth/connect",
        "/v1/oauth/reconnect",
        "/v1/oauth/refresh",
        "/v1/oauth/authorizations/NOPE",
        "/v1/oauth/authorizations/NOPE/cancel",
        "/v1/tokens",
        "/v1/tokens/NOPE",
        "/v1/service-accounts",
        "/v1/service-accounts/NOPE",
        "/v1/whoami",
    ] {
        assert!(paths.contains(expected), "the client does not call {expected}: {paths:?}");
    }
    let api = broker.admin();
    for path in &paths {
        // A route that exists answers (a missing secret or session, or the wrong method);
        // only a path the broker does not have answers "no such route".
        let reply = api.get(path).await;
        assert!(
            !(reply.status == 404 && reply.message().starts_with("no such route")),
            "the client calls {path}, which the broker does not serve: {reply:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_api_call_of_the_script_uses_a_method_its_route_takes() {
    let broker = Broker::start();
    let client = browser(&broker);
    let calls = script_api_calls(&script(&client, &broker).await);
    for (method, path) in [
        ("POST", "/v1/oauth/providers"),
        ("GET", "/v1/oauth/providers"),
        ("POST", "/v1/oauth/connect"),
        ("POST", "/v1/oauth/reconnect"),
        ("POST", "/v1/oauth/refresh"),
        ("GET", "/v1/oauth/authorizations/NOPE"),
        ("POST", "/v1/oauth/authorizations/NOPE/cancel"),
        ("POST", "/v1/secrets"),
        ("PATCH", "/v1/secrets/NOPE"),
        ("DELETE", "/v1/secrets/NOPE"),
        ("POST", "/v1/sessions/NOPE/activate"),
        ("POST", "/v1/tokens"),
        ("DELETE", "/v1/tokens/NOPE"),
        ("POST", "/v1/service-accounts"),
        ("DELETE", "/v1/service-accounts/NOPE"),
    ] {
        let call = (method.to_owned(), path.to_owned());
        assert!(calls.contains(&call), "the client does not call {method} {path}: {calls:?}");
    }
    let api = broker.admin();
    for (method, path) in &calls {
        // Bodies are a JSON string, which no route takes (serde reads a struct from an array,
        // not from a string): whatever the route, it refuses the request and changes nothing;
        // only a missing route or method answers as such.
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let changes = method != Method::GET;
        let body = (method == Method::POST || method == Method::PATCH)
            .then(|| Value::from("not a request"));
        let reply = api.call(method.clone(), path, body).await;
        assert!(
            !(reply.status == 404 && reply.message().starts_with("no such route")),
            "the client calls {method} {path}, which the broker does not serve: {reply:?}"
        );
        assert_ne!(
            reply.status, 405,
            "the client calls {method} {path}, a method it does not take"
        );
        assert!(
            !changes || reply.status >= 400,
            "{method} {path} with a wrong body or a missing name succeeded: {reply:?}"
        );
    }
    // Nothing was made by those calls.
    assert_eq!(api.get("/v1/secrets").await.ok(), Value::Array(vec![]));
    assert_eq!(api.get("/v1/sessions").await.ok(), Value::Array(vec![]));
    assert_eq!(api.get("/v1/oauth/providers").await.ok(), Value::Array(vec![]));
}

/// `GET /v1/meta`: what the page checks before it sends, from the broker's own constants,
/// with no token (and nothing of any user in it), and only with GET.
#[tokio::test(flavor = "multi_thread")]
async fn meta_is_served_without_a_token_from_the_wire_constants() {
    let broker = Broker::start();
    let client = browser(&broker);
    let (status, headers, body) = fetch(&client, &broker, "/v1/meta").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let served: Value = serde_json::from_slice(&body).unwrap();
    let redirect = served["oauth_redirect_uri"].as_str().unwrap().to_owned();
    assert_eq!(redirect, format!("{}/v1/oauth/callback", broker.url));
    let expected = serde_json::to_value(maestro_wire::meta::Meta::current(Some(redirect))).unwrap();
    assert_eq!(served, expected);
    assert_eq!(served["limits"]["max_field_bytes"], maestro_wire::limits::MAX_FIELD_BYTES);
    let actions = served["audit_actions"].as_array().unwrap();
    assert_eq!(actions.len(), maestro_wire::api::AuditAction::ALL.len());
    // The token form's scopes and longest lifetime, as the broker checks them.
    let scopes = maestro_wire::tokens::Scope::ALL.map(|s| Value::from(s.as_str()));
    assert_eq!(served["token_scopes"], Value::Array(scopes.to_vec()));
    assert_eq!(served["limits"]["max_token_ttl_secs"], maestro_wire::tokens::MAX_TOKEN_TTL_SECS);
    // Nothing of a user: the same for everyone, before and after one exists.
    broker.admin().add_generic("SOMETHING", &[("SOME_VAR", "planted-meta-value")]).await.ok();
    let (_, _, again) = fetch(&client, &broker, "/v1/meta").await;
    assert_eq!(again, body);
    assert!(!String::from_utf8(again).unwrap().contains("SOMETHING"));
    // Read-only.
    let reply = client.post(format!("{}/v1/meta", broker.url)).send().await.unwrap();
    assert_eq!(reply.status(), 405);
}

/// A refusal names the request's field at fault, so that the page shows it beside its input.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_name_the_field_at_fault() {
    let broker = Broker::start();
    let api = broker.admin();
    let cases = [
        (serde_json::json!({"name": "bad-name", "kind": "generic", "fields": {"A": "x"}}), "name"),
        (
            serde_json::json!({"name": "OK", "kind": "generic", "fields": {"A": "x"}, "tags": ["a", "a"]}),
            "tags",
        ),
        (
            serde_json::json!({"name": "OK", "kind": "aws", "fields": {"access_key_id": "AKIA1"}}),
            "secret_access_key",
        ),
        (
            serde_json::json!({"name": "OK", "kind": "aws",
                "fields": {"access_key_id": "AKIA 1", "secret_access_key": "s"}}),
            "access_key_id",
        ),
        (
            serde_json::json!({"name": "OK", "kind": "generic", "fields": {"A": "x"},
                "exposure": "sealed"}),
            "hosts",
        ),
        (
            serde_json::json!({"name": "OK", "kind": "generic", "fields": {"A": "x"},
                "description": "x".repeat(maestro_wire::limits::MAX_DESCRIPTION_BYTES + 1)}),
            "description",
        ),
    ];
    for (body, field) in cases {
        let reply = api.post("/v1/secrets", body.clone()).await;
        assert!(reply.status >= 400, "{body}: {reply:?}");
        assert_eq!(reply.body["field"], field, "{body}: {reply:?}");
    }
    // An error about no field carries none.
    let reply = api.get("/v1/secrets/NOPE").await;
    assert_eq!(reply.status, 404);
    assert!(reply.body.get("field").is_none(), "{reply:?}");
    let reply = api.post("/v1/sessions", serde_json::json!({"label": "bell\u{7}"})).await;
    assert_eq!(reply.body["field"], "label", "{reply:?}");
}

/// The OAuth callback page: the UI's stylesheet and icon from this origin, no script, never
/// framed, and a link back to the Secret Manager.
#[tokio::test(flavor = "multi_thread")]
async fn the_oauth_callback_page_is_styled_and_leads_back() {
    let broker = Broker::start();
    let client = browser(&broker);
    let (status, headers, body) =
        fetch(&client, &broker, "/v1/oauth/callback?state=planted-state-x9q&code=planted-code-k2w")
            .await;
    assert_eq!(status, 400);
    assert_eq!(
        headers["content-security-policy"],
        "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; form-action 'none'"
    );
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("<link rel=\"stylesheet\" href=\"../../ui/app.css\">"), "{html}");
    assert!(html.contains("href=\"../../ui/#/oauth\">Back to the Secret Manager</a>"), "{html}");
    assert!(!html.contains("<script") && !html.contains(" style=") && !html.contains("<style"));
    assert_no_other_origin("the callback page", &html);
    // The query (a code, a state) is never echoed into the page, nor a command of the CLI.
    assert!(!html.contains("planted-"), "{html}");
    assert!(!html.contains("`maestro") && !html.contains(" --"), "{html}");
}

/// The page words the broker's messages for the browser: what names a command, a flag or an
/// environment variable (written for the CLI) is replaced by what to do on the page. Run with
/// Node (which `scripts/test.sh` has for the OAuth tests) on `forBrowser` as api.js defines it.
#[test]
fn broker_messages_are_worded_for_the_browser() {
    let api = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../broker/ui/js/api.js"),
    )
    .unwrap();
    let start = api.find("const BROWSER_HINTS = ").expect("the hints");
    let end = api.find("export async function api(").expect("the end of forBrowser()");
    let code = format!(
        "{}\nconst [code, ...messages] = JSON.parse(process.argv[1]);\n\
         process.stdout.write(JSON.stringify(messages.map((m) => forBrowser(code, m))));",
        api[start..end].replace("export function", "function")
    );
    let run = |code_name: &str, messages: &[&str]| -> Vec<String> {
        let mut args = vec![code_name];
        args.extend_from_slice(messages);
        let out = std::process::Command::new("node")
            .args(["-e", &code, &serde_json::to_string(&args).unwrap()])
            .output()
            .expect("node runs (scripts/test.sh needs it for the OAuth tests)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // The broker's own messages, as they are.
    assert_eq!(
        run("not_found", &["no secret named AWS_PROD; `maestro secrets ls` lists yours"]),
        ["no secret named AWS_PROD; pick one from the list (it may have been deleted meanwhile)"]
    );
    assert_eq!(
        run(
            "already_exists",
            &[
                "secret AWS_PROD already exists; choose another name, or change it with `maestro secrets edit AWS_PROD`"
            ]
        ),
        [
            "secret AWS_PROD already exists; choose another name, or edit the existing one from the list"
        ]
    );
    assert_eq!(
        run(
            "session_ended",
            &["the session has ended; create a new session with `maestro sessions create`"]
        ),
        ["the session has ended; create a new session under Sessions"]
    );
    let unauthorized = run(
        "unauthorized",
        &[
            "the API token is not valid; check MAESTRO_TOKEN, or ask for a new one with `maestro-broker user add`",
        ],
    );
    assert!(unauthorized[0].contains("sign in with a current one"), "{unauthorized:?}");
    let compromised = run(
        "conflict",
        &[
            "AWS_PROD was marked compromised at 2025-12-05T08:00:00Z: edit it with a new value first (`maestro secrets edit AWS_PROD --field-file FIELD=PATH`); nothing was activated",
        ],
    );
    assert_eq!(
        compromised,
        [
            "AWS_PROD was marked compromised at 2025-12-05T08:00:00Z: edit it with a new value first; nothing was activated"
        ]
    );
    let missing = run(
        "missing_field",
        &[
            "kind 'aws' requires field 'secret_access_key'; add --field secret_access_key=... (or --field-file)",
        ],
    );
    assert_eq!(missing, ["kind 'aws' requires field 'secret_access_key'; give it a value"]);
    let oauth = run(
        "oauth",
        &[
            "This authorization was already used; each authorization URL works once. Nothing was stored; run `maestro oauth connect` again.",
        ],
    );
    assert_eq!(
        oauth,
        [
            "This authorization was already used; each authorization URL works once. Nothing was stored; start the connection again from this page"
        ]
    );
    // A message for everyone stays as it is.
    assert_eq!(
        run("too_many", &["a secret has at most 32 tags; this one has 33"]),
        ["a secret has at most 32 tags; this one has 33"]
    );
}
