//! The life of secrets (issue 13 parts 5 to 7), with the real broker, agent, CLI and
//! `maestro-exec`:
//!
//! * `activate --for 2s` (the session named by its label): the file is gone from a real agent's
//!   FUSE mount once the time has passed, `maestro-exec --list` showed the session's id, label
//!   and the time left before, and the history holds one `expired` record;
//! * a secret's maximum: a longer `--for` is refused with one line and nothing changes; with no
//!   `--for` the maximum applies, and `secrets ls --active` shows the time left;
//! * bad durations are refused before anything is sent;
//! * `--rotate-every`: past it the secret is marked in `secrets ls` and `secrets show`; an edit
//!   of its description keeps the mark, an edit with a new value clears it;
//! * sessions named by a unique id prefix or a label; an ambiguous prefix or label refused,
//!   naming the candidates; no `--session` with 0, 1 and 2 live sessions;
//! * PostgreSQL with two brokers: an activation expires once (one `expired` record) and the
//!   agent's stream on the other broker hears the deactivation;
//! * an end that passes while the broker is down is expired when it starts again (the end is
//!   stored, not a timer).
// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use maestro_tests::agent::{AgentOptions, SANDBOX_UID, Sandbox, fuse_available, wait_until};
use maestro_tests::broker::{Broker, TestAgent};
use maestro_tests::pg::{PeerBroker, Postgres};
use maestro_wire::agent_api::AgentEvent;
use serde_json::{Value, json};

/// A failure guard, not a timing assertion: expiry runs each second.
const EXPIRES_WITHIN: Duration = Duration::from_secs(10);

/// An RFC 3339 time as the broker writes it, in unix seconds.
fn unix(text: &str) -> i64 {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp()
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The audit records of one action about one secret.
fn records(audit: &Value, action: &str, secret: &str) -> usize {
    audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action && e["secret"] == secret)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_for_a_time_leaves_the_mount_and_is_recorded_expired() {
    if !fuse_available() {
        return;
    }
    let sb = Sandbox::new();
    sb.api.add_generic("BRIEF", &[("BRIEF_TOKEN", "planted-brief-4c1")]).await.ok();
    let (session, bundle) = sb.new_session("life");
    let agent = sb.start_agent(&bundle, AgentOptions::default());

    // Named by its label; the only live session is used and said when none is named.
    let out = sb.maestro(&["secrets", "activate", "--session", "life", "--for", "3s", "BRIEF"]);
    let out = out.ok();
    assert!(out.stdout.contains(&format!("in session {session} (life)")), "{out:?}");
    assert!(out.stdout.contains("BRIEF is deactivated in "), "{out:?}");
    assert!(
        wait_until(Duration::from_secs(5), || agent.file("BRIEF_TOKEN").exists()).is_some(),
        "activation did not reach the agent:\n{}",
        agent.log()
    );
    let listed = agent.exec_as(SANDBOX_UID, &["--list"]).ok();
    assert!(listed.stdout.starts_with(&format!("session {session} (label life)\n")), "{listed:?}");
    assert!(listed.stdout.contains("  active until "), "{listed:?}");
    let shown = sb.maestro(&["sessions", "show", &session[..8]]).ok();
    assert!(shown.stdout.contains("BRIEF ("), "time left in sessions show: {shown:?}");

    let gone = wait_until(EXPIRES_WITHIN, || !agent.file("BRIEF_TOKEN").exists());
    assert!(gone.is_some(), "the expired secret is still in the mount:\n{}", agent.log());
    assert!(!agent.listed_names().contains(&"BRIEF".to_owned()));
    let history = sb.api.get("/v1/secrets/BRIEF/history").await.ok();
    assert_eq!(records(&history, "expired", "BRIEF"), 1, "{history}");
    let meta = sb.api.get("/v1/secrets/BRIEF").await.ok();
    assert_eq!(meta["active_in_sessions"], json!([]));
    let filtered = sb.maestro(&["audit", "--action", "expired"]).ok();
    assert!(filtered.stdout.contains("BRIEF"), "{filtered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maximum_refuses_longer_activations_and_bad_durations_change_nothing() {
    let sb = Sandbox::new();
    sb.maestro(&[
        "secrets",
        "add",
        "CAPPED",
        "--kind",
        "generic",
        "--field",
        "CAPPED_TOKEN=planted-capped-9e2",
        "--activation-max",
        "1h",
    ])
    .ok();
    // A default longer than the maximum is refused.
    let bad = sb.maestro(&["secrets", "edit", "CAPPED", "--activation-default", "2h"]);
    assert_ne!(bad.status, 0);
    assert!(bad.stderr.contains("longer than the longest activation"), "{bad:?}");
    let (session, _bundle) = sb.new_session("capped");

    let refused =
        sb.maestro(&["secrets", "activate", "--session", &session, "--for", "2h", "CAPPED"]);
    assert_ne!(refused.status, 0);
    assert_eq!(refused.stderr.lines().count(), 1, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("CAPPED may be active for at most 1h at a time; --for 2h is longer"),
        "{refused:?}"
    );
    let shown = sb.api.get(&format!("/v1/sessions/{session}")).await.ok();
    assert_eq!(shown["active"], json!([]), "nothing changed");

    for (args, says) in [
        (vec!["secrets", "activate", "--for", "2x", "CAPPED"], "invalid --for '2x'"),
        (vec!["secrets", "activate", "--for", "0s", "CAPPED"], "--for must be at least 1s"),
        (vec!["secrets", "activate", "--for", "31d", "CAPPED"], "longer than the maximum of 30d"),
        (vec!["secrets", "deactivate", "--for", "1h", "CAPPED"], "--for is for `activate` only"),
        (vec!["secrets", "edit", "CAPPED", "--rotate-every", "soon"], "invalid --rotate-every"),
        (vec!["secrets", "edit", "CAPPED", "--activation-max", "1.5s"], "whole number"),
    ] {
        let out = sb.maestro(&args);
        assert_ne!(out.status, 0, "{args:?}");
        assert!(out.stderr.contains(says), "{args:?}: {out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    }
    let audit = sb.api.get("/v1/audit").await.ok();
    assert_eq!(records(&audit, "activated", "CAPPED"), 0, "{audit}");
    assert_eq!(records(&audit, "edited", "CAPPED"), 0, "{audit}");

    // No --for: the maximum applies. No --session: the only live session, said on stderr.
    let out = sb.maestro(&["secrets", "activate", "CAPPED"]).ok();
    assert!(
        out.stderr.contains(&format!("using session {session} (capped), the only live one")),
        "{out:?}"
    );
    let active = sb.maestro(&["secrets", "ls", "--active"]).ok();
    let line = active.stdout.lines().find(|l| l.starts_with("CAPPED")).expect("listed");
    assert!(line.contains(&session) && line.contains("capped"), "{active:?}");
    assert!(line.contains("59m") || line.contains("1h"), "time left: {active:?}");
    let api = sb.api.get("/v1/activations").await.ok();
    let left = unix(api[0]["expires_at"].as_str().unwrap()) - unix_now();
    assert!(left > 3000 && left <= 3600, "{api}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_past_its_rotation_period_is_marked_until_its_value_changes() {
    let sb = Sandbox::new();
    let add = [
        "secrets",
        "add",
        "ROT",
        "--kind",
        "generic",
        "--field",
        "ROT_TOKEN=planted-rot-1",
        "--rotate-every",
        "2s",
    ];
    sb.maestro(&add).ok();
    let ls = sb.maestro(&["secrets", "ls"]).ok();
    assert!(!ls.stdout.contains("(ROTATE)"), "{ls:?}");
    let due = wait_until(Duration::from_secs(10), || {
        sb.maestro(&["secrets", "ls"]).stdout.contains("ROT (ROTATE)")
    });
    assert!(due.is_some(), "never marked for rotation");
    let show = sb.maestro(&["secrets", "show", "ROT"]).ok();
    assert!(show.stdout.contains("ROTATE:") && show.stdout.contains("rotation period of 2s"));
    // Only metadata: the value is as old as before.
    sb.maestro(&["secrets", "edit", "ROT", "--description", "still old"]).ok();
    let meta = sb.api.get("/v1/secrets/ROT").await.ok();
    assert_eq!(meta["rotation_due"], true, "{meta}");
    // The same value again is no new value either.
    sb.maestro(&["secrets", "edit", "ROT", "--field", "ROT_TOKEN=planted-rot-1"]).ok();
    assert_eq!(sb.api.get("/v1/secrets/ROT").await.ok()["rotation_due"], true);
    sb.maestro(&["secrets", "edit", "ROT", "--field", "ROT_TOKEN=planted-rot-2"]).ok();
    let meta = sb.api.get("/v1/secrets/ROT").await.ok();
    assert!(meta.get("rotation_due").is_none_or(|d| d == false), "{meta}");
    let age = unix_now() - unix(meta["value_changed_at"].as_str().unwrap());
    assert!(age < 2, "{meta}");
    // Removing the period removes the mark for good.
    sb.maestro(&["secrets", "edit", "ROT", "--rotate-every", "none"]).ok();
    assert!(sb.api.get("/v1/secrets/ROT").await.ok().get("rotate_every_seconds").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_named_by_prefix_or_label_and_ambiguity_is_refused() {
    let sb = Sandbox::new();
    sb.api.add_generic("PICK", &[("PICK_TOKEN", "planted-pick-3")]).await.ok();

    // No live session.
    let none = sb.maestro(&["secrets", "activate", "PICK"]);
    assert_ne!(none.status, 0);
    assert!(none.stderr.contains("no live session to use"), "{none:?}");

    let (first, _) = sb.new_session("dup");
    // One live session: used, and said.
    let one = sb.maestro(&["secrets", "activate", "PICK"]).ok();
    assert!(one.stderr.contains(&format!("using session {first} (dup)")), "{one:?}");
    sb.maestro(&["secrets", "deactivate", "--session", &first[..6], "PICK"]).ok();

    let (second, _) = sb.new_session("dup");
    // Two live sessions and no --session: refused, naming both.
    let two = sb.maestro(&["secrets", "activate", "PICK"]);
    assert_ne!(two.status, 0);
    assert_eq!(two.stderr.lines().count(), 1, "{two:?}");
    assert!(
        two.stderr.contains("2 live sessions")
            && two.stderr.contains(&first)
            && two.stderr.contains(&second),
        "{two:?}"
    );
    // A label of two live sessions: refused, naming both.
    let dup = sb.maestro(&["secrets", "activate", "--session", "dup", "PICK"]);
    assert_ne!(dup.status, 0);
    assert!(
        dup.stderr.contains("'dup' is the label of 2 sessions")
            && dup.stderr.contains(&first)
            && dup.stderr.contains(&second),
        "{dup:?}"
    );
    // A prefix of both (the empty-ish one letter they may share) or of one.
    let common: String =
        first.chars().zip(second.chars()).take_while(|(a, b)| a == b).map(|(a, _)| a).collect();
    if !common.is_empty() {
        let amb = sb.maestro(&["secrets", "activate", "--session", &common, "PICK"]);
        assert_ne!(amb.status, 0);
        assert!(amb.stderr.contains(&first) && amb.stderr.contains(&second), "{amb:?}");
    }
    let unique = &second[..common.len() + 1];
    let out = sb.maestro(&["secrets", "activate", "--session", unique, "PICK"]).ok();
    assert!(out.stdout.contains(&format!("in session {second}")), "{out:?}");
    let audit = sb.api.get("/v1/audit").await.ok();
    assert_eq!(records(&audit, "activated", "PICK"), 2, "{audit}");

    // An unknown name: not found, nothing changed.
    let unknown = sb.maestro(&["secrets", "activate", "--session", "nosuch", "PICK"]);
    assert_ne!(unknown.status, 0);
    assert!(unknown.stderr.contains("no session nosuch"), "{unknown:?}");

    // A label reused after its session ended names the live one.
    sb.maestro(&["sessions", "end", &first]).ok();
    let out = sb.maestro(&["secrets", "deactivate", "--session", "dup", "PICK"]).ok();
    assert!(out.stdout.contains(&format!("in session {second}")), "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_two_brokers_an_activation_expires_once_and_the_other_broker_tells_the_agent() {
    let Some(pg) = Postgres::start() else { return };
    let db = pg.create_database("maestro_life");
    let options = db.broker_options();
    let a = Broker::start_with(options.clone());
    let b = PeerBroker::start(&a, &options);
    let api = a.admin();
    api.add_generic("SHORT", &[("SHORT_VAR", "planted-short-7")]).await.ok();
    let (session, token) = api.new_session(json!({"label": "pg-life"})).await;
    let mut agent = TestAgent::enroll(&a, &token).await.unwrap();
    agent.rebase(&b.url);
    let mut events = agent.events().await.unwrap();
    match events.next_event(Duration::from_secs(5)).await {
        Some(AgentEvent::Snapshot { label, .. }) => assert_eq!(label.as_deref(), Some("pg-life")),
        other => panic!("expected a snapshot, got {other:?}"),
    }
    api.post(
        &format!("/v1/sessions/{session}/activate"),
        json!({"names": ["SHORT"], "for_seconds": 2}),
    )
    .await
    .ok();
    let material = agent.get("/v1/agent/secrets/SHORT").await.unwrap().ok();
    assert!(material["active_until"].is_string(), "{material}");
    let deadline = Instant::now() + EXPIRES_WITHIN;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.next_event(left).await {
            Some(AgentEvent::Activated { .. }) => continue,
            Some(AgentEvent::Deactivated { name }) => {
                assert_eq!(name, "SHORT");
                break;
            }
            other => panic!("expected the expiry's deactivation, got {other:?}"),
        }
    }
    // Both brokers scan each second; give the slower one time to try again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let audit = api.get("/v1/audit").await.ok();
    assert_eq!(records(&audit, "expired", "SHORT"), 1, "recorded once: {audit}");
    let shown = b.api(&a.admin_token).get(&format!("/v1/sessions/{session}")).await.ok();
    assert_eq!(shown["active"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_whose_time_passed_while_the_broker_was_down_expires_when_it_is_back() {
    let mut broker = Broker::start();
    let api = broker.admin();
    api.add_generic("DOWN", &[("DOWN_VAR", "planted-down-5")]).await.ok();
    let (session, _token) = api.new_session(json!({})).await;
    api.post(
        &format!("/v1/sessions/{session}/activate"),
        json!({"names": ["DOWN"], "for_seconds": 2}),
    )
    .await
    .ok();
    broker.stop();
    // The end passes while no broker runs: only the stored end can bring it back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.restart();
    let api = broker.admin();
    let mut done = false;
    let deadline = Instant::now() + EXPIRES_WITHIN;
    while Instant::now() < deadline {
        let audit = api.get("/v1/audit").await.ok();
        if records(&audit, "expired", "DOWN") == 1 {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(done, "the expiry was not recorded after the restart:\n{}", broker.log());
    let shown = api.get(&format!("/v1/sessions/{session}")).await.ok();
    assert_eq!(shown["active"], json!([]));
}
