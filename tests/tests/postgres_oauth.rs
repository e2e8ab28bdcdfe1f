//! OAuth on a PostgreSQL store shared by two brokers, against the real OAuth 2.0 test server
//! (`oauth_support`): a secret connected through broker A is seen through broker B; both brokers
//! run the refresh task on the same tokens, and since the server makes every refresh token
//! single-use, a refresh taken by both would make the secret need re-authorization: it must
//! not. The agent on B hears each refresh as `updated`. No token and no client secret reaches
//! the database (`pg_dump`, plain or hex) or a log.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod oauth_support;

use std::time::{Duration, Instant};

use maestro_tests::broker::{Broker, TestAgent};
use maestro_tests::pg::{PeerBroker, Postgres, hex};
use maestro_wire::agent_api::AgentEvent;
use oauth_support::{OAuthServer, Pending, add_provider, browser, oauth_available, visit};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_tokens_are_refreshed_once_across_two_brokers() {
    if !oauth_available() {
        return;
    }
    let Some(pg) = Postgres::start() else { return };
    let db = pg.create_database("maestro_oauth");
    let server = OAuthServer::start().await;
    let options = db.broker_options();
    let a = Broker::start_with(options.clone());
    let b = PeerBroker::start(&a, &options);
    let token = a.admin_token.clone();

    add_provider(&a, &token, &server, "gh", &["--scope", "repo"]).ok();
    // Short-lived access tokens: refreshed about every 3 seconds.
    server.configure(json!({"token_lifetime": 4})).await;
    let pending = Pending::start(&a, &token, &["oauth", "connect", "gh", "--name", "GH"]);
    let page = visit(&browser(&a), &pending.url()).await;
    assert_eq!(page.status, 200, "{page:?}");
    let (code, _, log) = pending.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{log}");

    let api_b = b.api(&token);
    let meta = api_b.get("/v1/secrets/GH").await.ok();
    assert_eq!(meta["oauth"]["provider"], "gh", "B sees the secret connected through A: {meta}");
    let (session, enroll) = api_b.new_session(json!({})).await;
    api_b.activate(&session, &["GH"]).await.ok();
    let mut agent = TestAgent::enroll(&a, &enroll).await.unwrap();
    agent.rebase(&b.url);
    let mut events = agent.events().await.unwrap();
    assert!(matches!(
        events.next_event(Duration::from_secs(5)).await,
        Some(AgentEvent::Snapshot { .. })
    ));

    // Three refreshes, each heard on B's stream, whichever broker made it.
    let mut versions = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while versions.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.next_event(left).await {
            Some(AgentEvent::Updated { secret }) if secret.name == "GH" => {
                versions.push(secret.version)
            }
            Some(AgentEvent::Activated { .. }) => continue,
            other => panic!("expected refreshes as updated events, got {other:?} ({versions:?})"),
        }
    }
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    let meta = a.admin().get("/v1/secrets/GH").await.ok();
    assert_eq!(meta["oauth"]["needs_reauth"], false, "no refresh token was used twice: {meta}");
    let material = agent.get("/v1/agent/secrets/GH").await.unwrap().ok();
    let access = material["fields"]["token"].as_str().unwrap().to_owned();
    assert!(server.access_tokens().await.contains(&access), "B serves the latest token");

    let planted = server.planted().await;
    let dump = String::from_utf8_lossy(&pg.dump(&db.name)).into_owned();
    let server_log = pg.log();
    for value in &planted {
        for (what, text) in [
            ("pg_dump", &dump),
            ("the PostgreSQL log", &server_log),
            ("broker A's log", &a.log()),
            ("broker B's log", &b.log()),
        ] {
            assert!(!text.contains(value.as_str()), "a token or the client secret is in {what}");
            assert!(!text.contains(&hex(value.as_bytes())), "a token is in {what}, in hex");
        }
    }
}
