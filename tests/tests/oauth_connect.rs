//! OAuth connections against a real OAuth 2.0 server (`oauth2-mock-server`, see
//! `oauth_support`), with the real broker and CLI:
//!
//! * a provider is registered (client secret sealed), scopes beyond its set are refused before
//!   any redirect, and `connect` goes authorization URL → the server's authorization endpoint →
//!   the broker's callback → a secret with the scopes the server granted, the server having
//!   checked the S256 PKCE verifier;
//! * a wrong state, a reused state and `access_denied` each end with a clear message and no
//!   secret stored; a `connect` that times out cancels its authorization;
//! * deleting an OAuth secret revokes its tokens (RFC 7009), and says so when that fails or the
//!   provider has no endpoint;
//! * no token and no client secret is in any file under the data directory or in any log.
// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod oauth_support;

use std::time::Duration;

use maestro_tests::broker::{Broker, BrokerOptions};
use oauth_support::{
    CLIENT_SECRET, OAuthServer, Pending, add_provider, assert_nowhere, browser, callback_url,
    oauth_available, visit,
};
use serde_json::{Value, json};

const DONE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_pkce_stores_the_granted_scopes_and_refuses_bad_callbacks() {
    if !oauth_available() {
        return;
    }
    let server = OAuthServer::start().await;
    let broker = Broker::start();
    let token = broker.add_user("oauth-tester");
    let api = broker.api(&token);
    let web = browser(&broker);
    let mut outputs = Vec::new();

    // Registration: the client secret is sealed, the redirect URI is the broker's callback.
    let out = add_provider(
        &broker,
        &token,
        &server,
        "gh",
        &["--scope", "repo", "--scope", "gist", "--scope", "read:org"],
    )
    .ok();
    let redirect_uri = format!("{}/v1/oauth/callback", broker.url);
    assert!(
        out.stdout
            .contains(&format!("register this redirect URI with the OAuth app: {redirect_uri}")),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("tokens become github secrets (token); scopes: repo gist read:org"),
        "{out:?}"
    );
    assert!(out.stdout.contains("GitHub has no RFC 7009 revocation endpoint"), "{out:?}");
    let listed = broker.maestro(&token, &["oauth", "providers", "ls", "--json"]).ok().json();
    assert_eq!(listed[0]["name"], "gh");
    assert_eq!(listed[0]["scopes"], json!(["repo", "gist", "read:org"]));
    assert!(!listed.to_string().contains(CLIENT_SECRET));
    let again = add_provider(&broker, &token, &server, "gh", &[]);
    assert_eq!(again.status, 1);
    assert_eq!(
        again.stderr,
        "maestro: you already have an OAuth provider named gh; choose another name\n"
    );
    let bad = add_provider(&broker, &token, &server, "gh2", &["--scope", "api"]);
    assert_eq!(bad.status, 1);
    assert!(
        bad.stderr.starts_with("maestro: the github preset does not know the scope 'api'"),
        "{bad:?}"
    );

    // Scopes beyond the provider's set: refused before any authorization URL exists.
    let out = broker.maestro(
        &token,
        &["oauth", "connect", "gh", "--name", "GH", "--scope", "repo", "--scope", "workflow"],
    );
    assert_eq!(out.status, 1, "{out:?}");
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr.starts_with(
            "maestro: provider gh allows the scopes repo gist read:org, not 'workflow'"
        ),
        "{out:?}"
    );
    let r = api
        .post("/v1/oauth/connect", json!({"provider": "gh", "name": "GH", "scopes": ["admin:org"]}))
        .await;
    assert!(r.expect_error(400, "bad_request").contains("not 'admin:org'"));
    assert!(
        server.log().await["authorizations"].as_array().unwrap().is_empty(),
        "no redirect happened"
    );

    // The happy path; the server withholds one of the scopes asked for.
    server.configure(json!({"withhold_scopes": ["gist"]})).await;
    let pending = Pending::start(
        &broker,
        &token,
        &["oauth", "connect", "gh", "--name", "GH", "--scope", "repo", "--scope", "gist"],
    );
    let url = pending.url();
    assert!(url.starts_with(&server.endpoint("/authorize?")), "{url}");
    assert!(url.contains("code_challenge_method=S256") && url.contains("&state="), "{url}");
    let page = visit(&web, &url).await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.url.starts_with(&format!("{redirect_uri}?")), "{page:?}");
    assert!(
        page.text.contains("Maestro stored GH (provider gh, version 1, scopes: repo)"),
        "{page:?}"
    );
    let (code, line, log) = pending.finish(DONE);
    assert_eq!(code, 0, "{log}");
    // The person at the terminal is told what to do with the URL (on stderr: stdout stays the URL).
    assert!(
        log.contains("open this URL in your browser; waiting for the provider (Ctrl-C to stop)"),
        "{log}"
    );
    let line = line.unwrap();
    assert!(
        line.starts_with(
            "connected GH (provider gh, kind github, version 1): scopes repo; token expires "
        ),
        "{line}"
    );
    outputs.push(log);

    // The server saw S256 PKCE and checked the verifier at the code exchange.
    let log = server.log().await;
    let auth = &log["authorizations"][0];
    assert_eq!(
        (auth["code_challenge_method"].as_str(), auth["code_challenge_present"].as_bool()),
        (Some("S256"), Some(true))
    );
    assert_eq!(auth["state_present"], true);
    assert_eq!(auth["redirect_uri"], redirect_uri.as_str());
    assert_eq!(auth["scope"], "repo gist");
    let exchange = &log["token_requests"][0];
    assert_eq!(exchange["grant_type"], "authorization_code");
    assert_eq!(exchange["code_verifier_present"], true);
    assert_eq!(exchange["redirect_uri"], redirect_uri.as_str());
    assert_eq!(exchange["status"], 200);
    // (And the server does check it: a code asked for with a challenge is refused with a
    // verifier that does not match it.)
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let direct = callback_url(&format!(
        "{}?response_type=code&client_id=x&redirect_uri=https://127.0.0.1:9/cb&state=s&code_challenge={challenge}&code_challenge_method=S256",
        server.endpoint("/authorize")
    ))
    .await;
    let code = direct.split("code=").nth(1).unwrap().split('&').next().unwrap();
    let refused = reqwest::Client::new()
        .post(server.endpoint("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=authorization_code&code={code}&code_verifier={}", "a".repeat(43)))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("code_verifier provided does not match code_challenge")
    );

    // `secrets show` lists the granted scopes; the token is the catalog field.
    let shown = broker.maestro(&token, &["secrets", "show", "GH"]).ok();
    for want in ["kind:", "github", "oauth provider:", "oauth scopes:", "token expires:"] {
        assert!(shown.stdout.contains(want), "{want} missing:\n{}", shown.stdout);
    }
    assert!(
        !shown.stdout.contains("gist") && !shown.stdout.contains("needs reauth"),
        "{}",
        shown.stdout
    );
    let meta = api.get("/v1/secrets/GH").await.ok();
    assert_eq!(meta["field_names"], json!(["token"]));
    assert_eq!(meta["oauth"]["scopes"], json!(["repo"]));
    assert_eq!(meta["oauth"]["provider"], "gh");
    assert_eq!(meta["oauth"]["needs_reauth"], false);
    assert!(meta["oauth"]["expires_at"].is_string());
    let history = api.get("/v1/secrets/GH/history").await.ok();
    assert!(
        history.to_string().contains("OAuth connection to provider gh, scopes: repo"),
        "{history}"
    );

    // A reused state: the callback again, verbatim.
    let reused = visit(&web, &page.url).await;
    assert_eq!(reused.status, 400, "{reused:?}");
    assert!(reused.text.contains("This authorization was already used (it is done)"), "{reused:?}");
    assert_eq!(api.get("/v1/secrets/GH").await.ok()["version"], 1, "nothing changed");
    // A name that is taken: refused before any redirect.
    let out = broker.maestro(&token, &["oauth", "connect", "gh", "--name", "GH"]);
    assert_eq!(
        out.stderr,
        "maestro: secret GH already exists; `maestro oauth reconnect GH` authorizes it again, or choose another --name\n"
    );

    // A wrong state: the page says so, the real authorization is untouched; `connect` times
    // out and cancels it, so that its late callback stores nothing either.
    let pending = Pending::start(
        &broker,
        &token,
        &["oauth", "connect", "gh", "--name", "GH2", "--timeout", "4s"],
    );
    let callback = callback_url(&pending.url()).await;
    assert!(callback.starts_with(&redirect_uri), "{callback}");
    let state = callback.split("state=").nth(1).unwrap().split('&').next().unwrap().to_owned();
    let forged = callback.replace(&state, "forged-state-value");
    let page = visit(&web, &forged).await;
    assert_eq!(page.status, 400, "{page:?}");
    assert!(
        page.text.contains(
            "This authorization is unknown: its state matches none that this broker started"
        ),
        "{page:?}"
    );
    let (code, line, log) = pending.finish(DONE);
    assert_eq!((code, line), (1, None), "{log}");
    assert!(
        log.contains(
            "maestro: no authorization within 4s; it was cancelled and nothing was stored."
        ),
        "{log}"
    );
    outputs.push(log);
    let late = visit(&web, &callback).await;
    assert_eq!(late.status, 400);
    assert!(late.text.contains("already used (it is cancelled)"), "{late:?}");
    api.get("/v1/secrets/GH2").await.expect_error(404, "not_found");
    let page = visit(&web, &format!("{redirect_uri}?code=abc")).await;
    assert!(page.status == 400 && page.text.contains("no state parameter"), "{page:?}");

    // The provider refuses: access_denied.
    server.configure(json!({"deny_authorization": 1})).await;
    let pending = Pending::start(&broker, &token, &["oauth", "connect", "gh", "--name", "GH3"]);
    let page = visit(&web, &pending.url()).await;
    assert_eq!(page.status, 400, "{page:?}");
    assert!(page.text.contains("refused the authorization: access_denied"), "{page:?}");
    let (code, _, log) = pending.finish(DONE);
    assert_eq!(code, 1, "{log}");
    let last = log.lines().last().unwrap();
    assert_eq!(
        last,
        "maestro: the provider gh refused the authorization: access_denied (the authorization was denied) (The resource owner denied the request); nothing was stored. Run `maestro oauth connect` to try again"
    );
    outputs.push(log);
    api.get("/v1/secrets/GH3").await.expect_error(404, "not_found");

    // --json: the authorization object at once, the result after.
    let pending = Pending::start(
        &broker,
        &token,
        &["oauth", "connect", "gh", "--name", "GH4", "--scope", "read:org", "--json"],
    );
    let started: Value = serde_json::from_str(&pending.first_line).unwrap();
    assert_eq!(started["scopes"], json!(["read:org"]));
    assert_eq!(started["redirect_uri"], redirect_uri.as_str());
    assert!(started["id"].is_string() && started["expires_at"].is_string());
    assert_eq!(visit(&web, &pending.url()).await.status, 200);
    let (code, line, log) = pending.finish(DONE);
    assert_eq!(code, 0, "{log}");
    let result: Value = serde_json::from_str(&line.unwrap()).unwrap();
    assert_eq!(result["state"], "done");
    assert_eq!(result["secret"]["oauth"]["scopes"], json!(["read:org"]));
    outputs.push(log);

    // Nothing of the tokens or the client secret anywhere.
    let planted = server.planted().await;
    assert!(planted.len() >= 5, "{planted:?}");
    let mut logs: Vec<(&str, String)> = vec![("broker", broker.log())];
    logs.extend(outputs.into_iter().map(|o| ("maestro", o)));
    assert_nowhere(&planted, broker.data_dir(), &logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_oauth_secret_revokes_its_tokens_and_says_what_happened() {
    if !oauth_available() {
        return;
    }
    let server = OAuthServer::start().await;
    // Every level of the broker's log, the HTTP client's included, is searched for tokens.
    let broker = Broker::start_with(BrokerOptions::default().env("RUST_LOG", "trace"));
    let token = broker.add_user("oauth-revoker");
    let web = browser(&broker);
    let revoke = server.endpoint("/revoke");
    add_provider(&broker, &token, &server, "with-revoke", &["--revoke-url", &revoke]).ok();
    add_provider(&broker, &token, &server, "no-revoke", &[]).ok();
    let connect = |provider: &str, name: &str| {
        let pending =
            Pending::start(&broker, &token, &["oauth", "connect", provider, "--name", name]);
        let url = pending.url();
        (pending, url)
    };
    for (provider, name) in
        [("with-revoke", "GH_A"), ("with-revoke", "GH_B"), ("no-revoke", "GH_C")]
    {
        let (pending, url) = connect(provider, name);
        assert_eq!(visit(&web, &url).await.status, 200);
        assert_eq!(pending.finish(DONE).0, 0);
    }
    let log = server.log().await;
    let refresh_a = log["issued"]["refresh_tokens"][0].as_str().unwrap().to_owned();
    let access_a = log["issued"]["access_tokens"][0].as_str().unwrap().to_owned();

    // RFC 7009: the refresh token, then the access token, with the client's credentials.
    let out = broker.maestro(&token, &["secrets", "rm", "GH_A"]).ok();
    assert_eq!(
        out.stdout,
        format!(
            "deleted GH_A\nrevocation: revoked the refresh token and access token at {revoke}\n"
        )
    );
    let revocations = server.log().await["revocations"].clone();
    assert_eq!(revocations.as_array().unwrap().len(), 2, "{revocations}");
    assert_eq!(revocations[0]["token"], refresh_a.as_str());
    assert_eq!(revocations[0]["token_type_hint"], "refresh_token");
    assert_eq!(revocations[0]["known_as"], "refresh_token");
    assert_eq!(revocations[1]["token"], access_a.as_str());
    assert_eq!(revocations[1]["known_as"], "access_token");
    assert!(revocations.as_array().unwrap().iter().all(|r| r["client_ok"] == true));

    // A failing endpoint: the secret is gone all the same, and the answer says what to do.
    server.configure(json!({"fail_revoke": 1})).await;
    let deleted = broker.api(&token).delete("/v1/secrets/GH_B").await.ok();
    let text = deleted["revocation"].as_str().unwrap();
    assert!(
        text.starts_with(&format!("revocation at {revoke} failed (the provider answered temporarily_unavailable); the refresh token may still be valid: revoke the grant in the provider's settings")),
        "{text}"
    );
    broker.api(&token).get("/v1/secrets/GH_B").await.expect_error(404, "not_found");

    // No endpoint (GitHub has none): said so.
    let out = broker.maestro(&token, &["secrets", "rm", "GH_C"]).ok();
    assert!(out.stdout.contains("revocation: not revoked: GitHub has no RFC 7009 revocation endpoint; revoke the app's access at https://github.com/settings/applications"), "{out:?}");
    assert_eq!(server.log().await["revocations"].as_array().unwrap().len(), 3);

    let planted = server.planted().await;
    assert_nowhere(&planted, broker.data_dir(), &[("broker", broker.log())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_secrets_survive_a_master_key_rotation_and_refresh_on_demand() {
    if !oauth_available() {
        return;
    }
    let server = OAuthServer::start().await;
    let mut broker = Broker::start_with(BrokerOptions::default().env("RUST_LOG", "trace"));
    let token = broker.add_user("oauth-rotator");
    add_provider(&broker, &token, &server, "gh", &[]).ok();
    let pending = Pending::start(&broker, &token, &["oauth", "connect", "gh", "--name", "GH"]);
    assert_eq!(visit(&browser(&broker), &pending.url()).await.status, 200);
    assert_eq!(pending.finish(DONE).0, 0);

    // The provider's and the token row's data keys are re-wrapped with the secrets' keys.
    broker.stop();
    let out = broker.admin_command(&["rotate-master-key"], &[]).ok();
    assert_eq!(out.stdout, "maestro-broker: re-wrapped 3 data keys under a new master key\n");
    broker.restart();

    // The refresh token and the client secret still open: a refresh on demand works.
    let out = broker.maestro(&token, &["oauth", "refresh", "GH"]).ok();
    assert!(out.stdout.starts_with("refreshed:"), "{out:?}");
    assert!(out.stdout.contains("version:") && out.stdout.contains("2\n"), "{out:?}");
    let log = server.log().await;
    let last = log["token_requests"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["grant_type"].as_str(), last["status"].as_u64()),
        (Some("refresh_token"), Some(200))
    );
    assert_eq!(last["refresh_token_known"], true);
    let meta = broker.api(&token).get("/v1/secrets/GH").await.ok();
    assert_eq!(meta["version"], 2);

    // A refused refresh on demand says what to run.
    server.configure(json!({"refuse_refresh": 1})).await;
    let out = broker.maestro(&token, &["oauth", "refresh", "GH"]);
    assert_eq!(out.status, 1);
    assert!(
        out.stderr.starts_with("maestro: GH needs re-authorization: gh refused to refresh the token: the provider answered invalid_grant"),
        "{out:?}"
    );
    assert!(out.stderr.trim_end().ends_with("run `maestro oauth reconnect GH`"), "{out:?}");
    let out = broker.maestro(&token, &["oauth", "refresh", "NOPE"]);
    assert_eq!(out.stderr, "maestro: no secret named NOPE; `maestro secrets ls` lists yours\n");

    let planted = server.planted().await;
    assert_nowhere(&planted, broker.data_dir(), &[("broker", broker.log())]);
}
