//! The Secret Manager web UI as the real broker serves it over HTTPS: the page and its assets
//! with their content types and security headers, `/` sending a browser to `/ui/`, nothing
//! loaded from another origin, no token needed for the assets while the API still wants one,
//! and every API route the client script calls existing on the broker.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use maestro_tests::broker::{Broker, init_crypto};
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
    // The parts a user needs are on the page: sign-in, secrets, sessions, history, OAuth.
    for id in [
        "signin-token",
        "view-secrets",
        "secret-form",
        "view-secret",
        "session-form",
        "view-session",
        "view-audit",
        "view-oauth",
        "confirm-dialog",
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "the page has no #{id}");
    }
    // The API token is pasted into a password input, never a plain text one.
    assert!(html.contains("type=\"password\" id=\"signin-token\""));

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
        ["app.js", "app.css", "favicon.png"].iter().map(|s| (*s).to_owned()).collect();
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
    let (_, _, css) = fetch(&client, &broker, "/ui/app.css").await;
    assert!(!String::from_utf8(css).unwrap().contains("url("), "app.css loads something");
}

#[tokio::test(flavor = "multi_thread")]
async fn assets_need_no_token_and_the_api_still_does() {
    let broker = Broker::start();
    let client = browser(&broker);
    let (status, _, _) = fetch(&client, &broker, "/ui/app.js").await;
    assert_eq!(status, 200);

    let (status, _, body) = fetch(&client, &broker, "/v1/secrets").await;
    assert_eq!(status, 401);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "unauthorized");

    // Unknown paths, under /ui/ too, still get the API's JSON 404.
    for path in ["/ui/nope.js", "/v1/nope"] {
        let (status, _, body) = fetch(&client, &broker, path).await;
        assert_eq!(status, 404, "{path}");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "not_found", "{path}");
    }
}

/// The API paths written in `app.js` (`'v1/...'` and `` `v1/...` ``), each `${...}` replaced
/// by `NOPE` and `${verb}` by both verbs it takes.
fn script_api_paths(js: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for quote in ['\'', '`'] {
        let start = format!("{quote}v1/");
        let mut rest = js;
        while let Some(at) = rest.find(&start) {
            rest = &rest[at + 1..];
            let end = rest.find(quote).expect("string is closed");
            let template = &rest[..end];
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

#[tokio::test(flavor = "multi_thread")]
async fn every_api_path_of_the_script_is_a_broker_route() {
    let broker = Broker::start();
    let client = browser(&broker);
    let (_, _, js) = fetch(&client, &broker, "/ui/app.js").await;
    let paths = script_api_paths(&String::from_utf8(js).unwrap());
    for expected in [
        "/v1/kinds",
        "/v1/secrets",
        "/v1/secrets/NOPE",
        "/v1/secrets/NOPE/history",
        "/v1/sessions",
        "/v1/sessions/NOPE",
        "/v1/sessions/NOPE/end",
        "/v1/sessions/NOPE/activate",
        "/v1/sessions/NOPE/deactivate",
        "/v1/audit",
    ] {
        assert!(paths.contains(expected), "app.js does not call {expected}: {paths:?}");
    }
    let api = broker.admin();
    for path in &paths {
        // A route that exists answers (a missing secret or session, or the wrong method);
        // only a path the broker does not have answers "no such route".
        let reply = api.get(path).await;
        assert!(
            !(reply.status == 404 && reply.message().starts_with("no such route")),
            "app.js calls {path}, which the broker does not serve: {reply:?}"
        );
    }
}
