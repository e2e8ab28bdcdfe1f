//! Pushed events: a connected agent hears of every change right after the API call that made
//! it (asserted within 2 s; the median is printed), heartbeats keep the stream alive, and the
//! stream ends when the session does (by the user, by its TTL) or the broker stops.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use maestro_tests::broker::{Broker, BrokerOptions, TestAgent};
use maestro_wire::agent_api::AgentEvent;
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread")]
async fn every_change_reaches_the_stream() {
    let broker = Broker::start_with(BrokerOptions::args(&["--heartbeat", "300ms"]));
    let api = broker.admin();
    api.add_generic("FIRST", &[("FIRST_VAR", "v")]).await.ok();
    api.add_generic("SECOND", &[("SECOND_VAR", "v")]).await.ok();
    let (session, token) = api.new_session(json!({})).await;
    api.activate(&session, &["FIRST"]).await.ok();
    let agent = TestAgent::enroll(&broker, &token).await.unwrap();
    let mut events = agent.events().await.unwrap();

    match events.next(WITHIN).await {
        Some(AgentEvent::Snapshot { session_id, active, heartbeat_seconds, .. }) => {
            assert_eq!(session_id, session);
            assert_eq!(active.len(), 1);
            assert_eq!(active[0].name, "FIRST");
            assert_eq!(active[0].variables, vec!["FIRST_VAR".to_owned()]);
            assert_eq!(heartbeat_seconds, 1);
        }
        other => panic!("expected a snapshot first, got {other:?}"),
    }
    let shown = api.get(&format!("/v1/sessions/{session}")).await.ok();
    assert_eq!(shown["agent_connected"], true);
    // Heartbeats arrive on their own.
    assert!(matches!(events.next(WITHIN).await, Some(AgentEvent::Heartbeat { .. })));

    api.activate(&session, &["SECOND"]).await.ok();
    match events.next_event(WITHIN).await {
        Some(AgentEvent::Activated { secret }) => {
            assert_eq!((secret.name.as_str(), secret.version), ("SECOND", 1));
        }
        other => panic!("expected activated, got {other:?}"),
    }
    api.patch("/v1/secrets/SECOND", json!({"fields": {"MORE": "v"}})).await.ok();
    match events.next_event(WITHIN).await {
        Some(AgentEvent::Updated { secret }) => {
            assert_eq!(secret.version, 2);
            assert_eq!(secret.variables, vec!["MORE".to_owned(), "SECOND_VAR".to_owned()]);
        }
        other => panic!("expected updated, got {other:?}"),
    }
    // An edit of a secret not active here says nothing to this session.
    api.add_generic("ELSEWHERE", &[("ELSE_VAR", "v")]).await.ok();
    api.patch("/v1/secrets/ELSEWHERE", json!({"description": "d"})).await.ok();
    api.deactivate(&session, &["FIRST"]).await.ok();
    assert_eq!(
        events.next_event(WITHIN).await,
        Some(AgentEvent::Deactivated { name: "FIRST".into() })
    );
    api.delete("/v1/secrets/SECOND").await.ok();
    assert_eq!(
        events.next_event(WITHIN).await,
        Some(AgentEvent::Deactivated { name: "SECOND".into() })
    );
    api.post(&format!("/v1/sessions/{session}/end"), json!({})).await.ok();
    assert_eq!(events.next_event(WITHIN).await, Some(AgentEvent::Ended { reason: "user".into() }));
    assert!(events.closed_within(WITHIN).await, "the stream closes after ended");
}

#[tokio::test(flavor = "multi_thread")]
async fn event_latency_median() {
    let broker = Broker::start();
    let api = broker.admin();
    api.add_generic("LATENCY", &[("LATENCY_VAR", "v")]).await.ok();
    let (session, token) = api.new_session(json!({})).await;
    let agent = TestAgent::enroll(&broker, &token).await.unwrap();
    let mut events = agent.events().await.unwrap();
    assert!(matches!(events.next(WITHIN).await, Some(AgentEvent::Snapshot { .. })));

    let mut samples = Vec::new();
    let mut from_start = Vec::new();
    for _ in 0..50 {
        for activate in [true, false] {
            let sent = Instant::now();
            let r = if activate {
                api.activate(&session, &["LATENCY"]).await
            } else {
                api.deactivate(&session, &["LATENCY"]).await
            };
            r.ok();
            let returned = Instant::now();
            let event = events.next_event(WITHIN).await;
            let latency = returned.elapsed();
            from_start.push(sent.elapsed());
            match (activate, event) {
                (true, Some(AgentEvent::Activated { .. }))
                | (false, Some(AgentEvent::Deactivated { .. })) => {}
                (_, other) => panic!("unexpected event {other:?}"),
            }
            assert!(latency < WITHIN, "event took {latency:?}");
            samples.push(latency);
        }
    }
    samples.sort();
    from_start.sort();
    println!(
        "event latency, {} samples: API call returned -> event line received: median {:?}, max {:?}; \
         API call sent -> event line received: median {:?}, max {:?}",
        samples.len(),
        samples[samples.len() / 2],
        samples[samples.len() - 1],
        from_start[from_start.len() / 2],
        from_start[from_start.len() - 1],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ttl_ends_the_session_and_the_stream() {
    let broker = Broker::start();
    let api = broker.admin();
    api.add_generic("SHORT", &[("SHORT_VAR", "v")]).await.ok();
    let (session, token) = api.new_session(json!({"ttl_seconds": 2})).await;
    api.activate(&session, &["SHORT"]).await.ok();
    let agent = TestAgent::enroll(&broker, &token).await.unwrap();
    // The certificate does not outlive the session.
    let not_after = time::OffsetDateTime::parse(
        &agent.issued.not_after,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(not_after.unix_timestamp() <= time::OffsetDateTime::now_utc().unix_timestamp() + 2);
    let mut events = agent.events().await.unwrap();
    assert!(matches!(events.next(WITHIN).await, Some(AgentEvent::Snapshot { .. })));
    assert_eq!(
        events.next_event(Duration::from_secs(5)).await,
        Some(AgentEvent::Ended { reason: "ttl".into() })
    );
    assert!(events.closed_within(WITHIN).await);
    let shown = api.get(&format!("/v1/sessions/{session}")).await.ok();
    assert_eq!(shown["state"], "ended");
    assert_eq!(shown["ended_reason"], "ttl");
    assert_eq!(shown["active"], json!([]));
    api.activate(&session, &["SHORT"]).await.expect_error(409, "session_ended");
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_closes_streams_promptly() {
    let mut broker = Broker::start();
    let api = broker.admin();
    let (_session, token) = api.new_session(json!({})).await;
    let agent = TestAgent::enroll(&broker, &token).await.unwrap();
    let mut events = agent.events().await.unwrap();
    assert!(matches!(events.next(WITHIN).await, Some(AgentEvent::Snapshot { .. })));
    let started = Instant::now();
    broker.stop();
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(events.closed_within(WITHIN).await, "the stream is closed, not left hanging");
}
