//! The usage summary over a million audit records (issue 12): a real broker on a real SQLite
//! file, 20 secrets made through the API, 2,000 sessions and 1,000,000 records written
//! straight into its database by the bench's seeding code (`maestro_tests::seed`), then
//! `GET /v1/secrets/{name}/usage` and a filtered page of `GET /v1/audit` through the API.
//!
//! The figures must be exactly what was seeded. Time is not asserted beyond a generous
//! deadline (10 s per answer; docs/benchmarks.md has the medians); the measured times are
//! printed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use maestro_tests::broker::Broker;
use maestro_tests::seed::{self, Plan};
use serde_json::json;
use sqlx::Connection;

/// How many records the test seeds (1,000,000 unless `MAESTRO_SCALE_RECORDS` says otherwise).
fn records() -> usize {
    std::env::var("MAESTRO_SCALE_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

/// Longest an answer may take (a deadline, not a benchmark).
const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_of_a_million_records_is_right_and_answers() {
    let broker = Broker::start();
    let api = broker.admin();
    for i in 0..20 {
        api.post(
            "/v1/secrets",
            json!({"name": format!("SCALE_{i:02}"), "kind": "generic",
                   "fields": {"TOKEN": format!("value-{i}-xxxxxxxx")}}),
        )
        .await
        .ok();
    }
    let db = broker.data_dir().join("maestro.db");
    let (owner_id, secrets) = {
        let mut conn =
            sqlx::SqliteConnection::connect(&format!("sqlite:{}", db.display())).await.unwrap();
        let owner: i64 = sqlx::query_scalar("SELECT owner_id FROM secrets LIMIT 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let secrets: Vec<(String, String)> =
            sqlx::query_as("SELECT id, name FROM secrets ORDER BY name")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        conn.close().await.unwrap();
        (owner, secrets)
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
        as i64;
    let plan = Plan { owner_id, secrets, sessions: 2000, records: records(), now, days: 90 };
    let started = Instant::now();
    let seeded = seed::seed_sqlite(&db, &plan).await.unwrap();
    eprintln!("seeded {} records in {:.1?}", plan.records, started.elapsed());

    let (name, want) = seeded.expected.iter().max_by_key(|(_, e)| e.records).unwrap();
    let started = Instant::now();
    let usage = api.get(&format!("/v1/secrets/{name}/usage")).await.ok();
    let took = started.elapsed();
    eprintln!("summary of {name} ({} records, {} uses) in {took:.1?}", want.records, want.uses);
    assert!(took < DEADLINE, "the summary took {took:?}");
    assert_eq!(usage["uses"], want.uses);
    assert_eq!(usage["records"], want.records);
    assert_eq!(usage["sessions"].as_array().unwrap().len(), want.sessions);
    let commands: std::collections::BTreeMap<String, u64> = usage["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["command"].as_str().unwrap().to_owned(), c["uses"].as_u64().unwrap()))
        .collect();
    assert_eq!(commands, want.commands);
    let days: u64 =
        usage["days"].as_array().unwrap().iter().map(|d| d["uses"].as_u64().unwrap()).sum();
    assert_eq!(days, want.uses);
    // Every session row carries its label.
    let first = &usage["sessions"][0];
    assert!(first["label"].as_str().unwrap().starts_with("agent-"), "{first}");

    // A filtered page: one secret, one command, the last 30 days, 100 records.
    let started = Instant::now();
    let page = api.get(&format!("/v1/audit?secret={name}&command=git&since=30d&limit=100")).await;
    let took = started.elapsed();
    eprintln!("a filtered page in {took:.1?}");
    assert!(took < DEADLINE, "the page took {took:?}");
    let page = page.ok();
    let page = page.as_array().unwrap();
    assert!(!page.is_empty());
    for e in page {
        assert_eq!(
            (e["secret"].as_str(), e["command"].as_str()),
            (Some(name.as_str()), Some("git"))
        );
        assert!(e["session_label"].as_str().unwrap().starts_with("agent-"));
    }
    assert!(page.windows(2).all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64()));
}
