//! Broker failover: two brokers on one PostgreSQL database, a bundle that names both
//! (`maestro sessions create --broker-url A --broker-url B`), and the first one killed with
//! `kill -9` under an agent that uses it. The agent moves to the second broker and keeps serving
//! its secrets (the lease is long enough; failover never drops them), a deactivation and an
//! activation made through the second broker reach it, the file reads made around the kill are
//! in the audit trail, and the session's end through the second broker tears the agent down.
//! A bundle that lists the dead broker first still enrolls through the second.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use maestro_tests::agent::{
    AgentOptions, SANDBOX_UID, Sandbox, fuse_available, is_mounted, wait_until,
};
use maestro_tests::broker::BrokerOptions;
use maestro_tests::pg::{PeerBroker, Postgres};
use maestro_wire::agent_api::Bundle;
use serde_json::Value;

/// A generous bound for things that happen in milliseconds when the machine is idle.
const WITHIN: Duration = Duration::from_secs(20);

fn options(db: &maestro_tests::pg::Database) -> BrokerOptions {
    let mut options = db.broker_options();
    options.args = vec!["--heartbeat".into(), "300ms".into()];
    options
}

/// A sandbox whose broker keeps its store in `db`, acting as the broker's first user (the
/// user `Sandbox` adds goes to a SQLite file: `maestro-broker user add` is not given the URL).
fn sandbox_on(db: &maestro_tests::pg::Database) -> Sandbox {
    let mut sb = Sandbox::with(options(db));
    sb.token = sb.broker.admin_token.clone();
    sb.api = sb.broker.admin();
    sb
}

/// Creates a session whose bundle names `urls`, in order.
fn session_with_urls(sb: &Sandbox, label: &str, urls: &[&str]) -> (String, std::path::PathBuf) {
    let bundle = sb.dir().join(format!("{label}.bundle.json"));
    let mut args = vec!["sessions", "create", "--label", label];
    let path = bundle.to_string_lossy().into_owned();
    args.extend(["--bundle-out", &path]);
    for url in urls {
        args.extend(["--broker-url", url]);
    }
    let out = sb.maestro(&args).ok();
    (out.stdout.lines().next().unwrap().trim().to_owned(), bundle)
}

fn read_bundle(path: &Path) -> Bundle {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The entries of a history or audit answer, whether a bare array or a page of them.
fn entries(value: &Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.clone(),
        Value::Object(map) => map.values().find_map(|v| v.as_array().cloned()).unwrap_or_default(),
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_moves_to_the_next_broker_when_its_broker_is_killed() {
    if !fuse_available() {
        return;
    }
    let Some(pg) = Postgres::start() else { return };
    let db = pg.create_database("maestro_failover");
    let opts = options(&db);
    let mut sb = sandbox_on(&db);
    let b = PeerBroker::start(&sb.broker, &opts);
    let api_b = b.api(&sb.token);
    let a_url = sb.broker.url.clone();

    sb.api.add_generic("KEPT", &[("KEPT_TOKEN", "planted-kept-value")]).await.ok();
    sb.api.add_generic("GONE", &[("GONE_TOKEN", "planted-gone-value")]).await.ok();
    sb.api.add_generic("LATER", &[("LATER_TOKEN", "planted-later-value")]).await.ok();
    let (session, bundle) = session_with_urls(&sb, "failover", &[&a_url, &b.url]);
    let written = read_bundle(&bundle);
    assert_eq!(written.broker_url, a_url);
    assert_eq!(written.urls(), [a_url.as_str(), b.url.as_str()]);

    // A lease far longer than the failover: secrets must not be dropped while it happens.
    let agent = sb.start_agent(
        &bundle,
        AgentOptions { lease: Some("60s".into()), ..AgentOptions::default() },
    );
    sb.api.activate(&session, &["KEPT", "GONE"]).await.ok();
    assert!(
        wait_until(WITHIN, || agent.listed_names().len() == 2).is_some(),
        "activation did not reach the agent: {}",
        agent.log()
    );
    let kept = agent.file("KEPT_TOKEN");
    let read = || agent.run_as(SANDBOX_UID, "cat", &[kept.to_str().unwrap()]);
    assert_eq!(read().stdout, "planted-kept-value");

    // kill -9 the broker the agent uses, then read at once: the report of this read is queued
    // while the agent switches and must reach the audit trail through B.
    sb.broker.kill9();
    let out = read();
    assert_eq!((out.status, out.stdout.as_str()), (0, "planted-kept-value"), "{out:?}");
    let out = agent.exec_as(SANDBOX_UID, &["--no-mask", "sh", "-c", "printf %s \"$KEPT_TOKEN\""]);
    assert_eq!(out.stdout, "planted-kept-value", "maestro-exec after the kill: {out:?}");

    // Changes made through B reach the agent: it follows B's event stream now.
    api_b.deactivate(&session, &["GONE"]).await.ok();
    assert!(
        wait_until(WITHIN, || !agent.file("GONE_TOKEN").exists()).is_some(),
        "the deactivation through B did not reach the agent:\n{}",
        agent.log()
    );
    api_b.activate(&session, &["LATER"]).await.ok();
    assert!(
        wait_until(WITHIN, || agent.file("LATER_TOKEN").exists()).is_some(),
        "the activation through B did not reach the agent:\n{}",
        agent.log()
    );
    let later = agent.run_as(SANDBOX_UID, "cat", &[agent.file("LATER_TOKEN").to_str().unwrap()]);
    assert_eq!(later.stdout, "planted-later-value", "material fetched through B");
    // The secret never left while the agent switched.
    assert_eq!(read().stdout, "planted-kept-value");
    assert!(
        agent.log().contains("moved to the next broker of the bundle"),
        "the agent says it moved:\n{}",
        agent.log()
    );
    assert!(
        !agent.log().contains("every secret dropped"),
        "failover dropped the secrets:\n{}",
        agent.log()
    );

    // Every read of KEPT (one before the kill, two after) reached the audit trail through B.
    let reads = || async {
        let history = api_b.get("/v1/secrets/KEPT/history").await.ok();
        entries(&history)
            .iter()
            .filter(|e| e["action"] == "file_read" && e["session"] == session.as_str())
            .map(|e| e["count"].as_u64().unwrap_or(1))
            .sum::<u64>()
    };
    let mut found = 0;
    for _ in 0..100 {
        found = reads().await;
        if found >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(found >= 3, "expected at least 3 reads of KEPT in the audit trail, got {found}");

    // The end through B tears the agent down.
    let mut agent = agent;
    api_b.post(&format!("/v1/sessions/{session}/end"), serde_json::json!({})).await.ok();
    let status = agent.wait_exit(WITHIN);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "agent:\n{}", agent.log());
    assert!(!is_mounted(&agent.mount));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_whose_first_broker_is_down_enrolls_through_the_next() {
    if !fuse_available() {
        return;
    }
    let Some(pg) = Postgres::start() else { return };
    let db = pg.create_database("maestro_failover_enroll");
    let opts = options(&db);
    let mut sb = sandbox_on(&db);
    let b = PeerBroker::start(&sb.broker, &opts);
    let a_url = sb.broker.url.clone();
    sb.api.add_generic("FIRST", &[("FIRST_TOKEN", "planted-first-value")]).await.ok();
    let (session, bundle) = session_with_urls(&sb, "enroll-next", &[&a_url, &b.url]);
    sb.api.activate(&session, &["FIRST"]).await.ok();
    sb.broker.kill9();
    let agent = sb.start_agent(&bundle, AgentOptions::default());
    let out = agent.exec_as(SANDBOX_UID, &["--no-mask", "sh", "-c", "printf %s \"$FIRST_TOKEN\""]);
    assert_eq!(out.stdout, "planted-first-value", "{out:?}\n{}", agent.log());
    let shown = b.api(&sb.token).get(&format!("/v1/sessions/{session}")).await.ok();
    assert_eq!(shown["enrolled"], true, "{shown}");
}

#[test]
fn a_broker_url_that_is_not_https_is_refused_before_a_session_is_made() {
    if !fuse_available() {
        return;
    }
    let sb = Sandbox::new();
    let bundle = sb.dir().join("bad.bundle.json");
    let out = sb.maestro(&[
        "sessions",
        "create",
        "--bundle-out",
        &bundle.to_string_lossy(),
        "--broker-url",
        "http://127.0.0.1:1",
    ]);
    assert_ne!(out.status, 0);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out:?}");
    assert!(out.stderr.contains("--broker-url") && out.stderr.contains("https://"), "{out:?}");
    assert!(!bundle.exists());
    let sessions = sb.maestro(&["sessions", "ls", "--json"]).ok().json();
    assert_eq!(entries(&sessions).len(), 0, "no session was made: {sessions}");
}
