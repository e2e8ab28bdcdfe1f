//! What the broker leaves on disk and in its logs: planted values never appear in any file
//! under the data directory (also after `kill -9` and restart, which loses no acknowledged
//! write) nor in a `RUST_LOG=trace` log; files are private; a tampered ciphertext and a wrong
//! or missing master key fail as designed; master key rotation is crash-safe.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use maestro_tests::broker::{Broker, BrokerOptions, TestAgent};
use maestro_tests::util::{files_containing, files_under};
use serde_json::json;

const PLANTED: &[&str] = &[
    "planted-generic-7f3a91",
    "planted-aws-secret-c41d",
    "AKIAPLANTED9Q2W",
    "planted-edited-5e6f70",
    "planted-multiline-line2",
];

fn assert_no_planted(broker: &Broker, when: &str) {
    for value in PLANTED {
        let found = files_containing(broker.data_dir(), value.as_bytes());
        assert!(found.is_empty(), "{when}: {value} found in {found:?}");
    }
}

async fn sqlite(broker: &Broker) -> sqlx::SqliteConnection {
    let url = format!("sqlite://{}", broker.data_dir().join("maestro.db").display());
    <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await.expect("opens the database")
}

async fn plant(broker: &Broker) -> (String, TestAgent) {
    let api = broker.admin();
    api.add_generic("PLANT_GENERIC", &[("GENERIC_VAR", PLANTED[0])]).await.ok();
    api.post(
        "/v1/secrets",
        json!({"name": "PLANT_AWS", "kind": "aws", "fields": {
            "access_key_id": PLANTED[2], "secret_access_key": PLANTED[1]}}),
    )
    .await
    .ok();
    api.add_generic("PLANT_EDIT", &[("EDIT_VAR", "first-version-value")]).await.ok();
    api.patch("/v1/secrets/PLANT_EDIT", json!({"fields": {"EDIT_VAR": PLANTED[3]}})).await.ok();
    api.add_generic("PLANT_MULTI", &[("MULTI_VAR", &format!("line1\n{}", PLANTED[4]))]).await.ok();
    let (session, token) = api.new_session(json!({"label": "planted session"})).await;
    api.activate(&session, &["PLANT_GENERIC", "PLANT_AWS", "PLANT_EDIT", "PLANT_MULTI"]).await.ok();
    let agent = TestAgent::enroll(broker, &token).await.expect("enrolls");
    let set = agent.get("/v1/agent/secrets").await.unwrap().ok();
    let text = set.to_string();
    for value in PLANTED {
        assert!(text.contains(value), "the agent gets {value}");
    }
    agent
        .post(
            "/v1/agent/usage",
            json!({"reports": [{"secret": "PLANT_GENERIC", "action": "injected",
                "at": maestro_tests::util::now_rfc3339(), "pid": 42, "uid": 1000, "command": "env", "detail": null}]}),
        )
        .await
        .unwrap()
        .ok();
    (session, agent)
}

#[tokio::test(flavor = "multi_thread")]
async fn planted_values_never_reach_a_file_even_after_kill9() {
    let mut broker = Broker::start();
    let (session, mut agent) = plant(&broker).await;
    let before = broker.admin().get("/v1/secrets").await.ok();
    let audit_before = broker.admin().get("/v1/audit").await.ok();
    assert_no_planted(&broker, "while serving");

    // Private files: the directory 0700, every file 0600.
    let mode = std::fs::metadata(broker.data_dir()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    for file in files_under(broker.data_dir()) {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
    for name in
        ["master.key", "ca.key", "ca.pem", "server.key", "server.pem", "maestro.db", "admin.token"]
    {
        assert!(broker.data_dir().join(name).is_file(), "{name} exists");
    }

    broker.kill9();
    assert!(broker.data_dir().join("maestro.db-wal").exists(), "the WAL was not checkpointed");
    assert_no_planted(&broker, "after kill -9");
    broker.restart();
    assert_no_planted(&broker, "after restart");

    // Every acknowledged write survived.
    let api = broker.admin();
    let after = api.get("/v1/secrets").await.ok();
    let strip = |v: &serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| (m["name"].clone(), m["version"].clone(), m["field_names"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&before), strip(&after));
    let audit_after = api.get("/v1/audit").await.ok();
    assert_eq!(audit_before, audit_after);
    let shown = api.get(&format!("/v1/sessions/{session}")).await.ok();
    assert_eq!(shown["active"].as_array().unwrap().len(), 4);
    assert_eq!(shown["enrolled"], true);
    let generic = api.get("/v1/secrets/PLANT_GENERIC").await.ok();
    assert_eq!(generic["used_by_sessions"], json!([session]));
    assert!(generic["last_used_at"].is_string());
    // The values still open, under the same certificate (same CA) on the new port.
    agent.rebase(&broker.url);
    let set = agent.get("/v1/agent/secrets").await.unwrap().ok().to_string();
    for value in PLANTED {
        assert!(set.contains(value), "{value} survives the restart");
    }
    broker.stop();
    assert_no_planted(&broker, "after a clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_log_holds_no_value() {
    let mut broker = Broker::start_with(BrokerOptions::default().env("RUST_LOG", "trace"));
    let (_session, agent) = plant(&broker).await;
    let api = broker.admin();
    // Refused inputs that carry values must not echo them either.
    api.post(
        "/v1/secrets",
        json!({"name": "BAD", "kind": "generic", "fields": {"A": 1}, "x": PLANTED[0]}),
    )
    .await
    .expect_error(400, "malformed_json");
    api.post(
        "/v1/secrets",
        json!({"name": "BAD", "kind": "mongodb", "fields": {"uri": PLANTED[1]}}),
    )
    .await
    .expect_error(400, "invalid_field");
    api.post(
        "/v1/secrets",
        json!({"name": "BAD", "kind": "gcp", "fields": {"service_account_json": PLANTED[3]}}),
    )
    .await
    .expect_error(400, "invalid_field");
    api.raw(
        reqwest::Method::POST,
        "/v1/secrets",
        Some("application/json"),
        format!("{{\"name\": \"BAD\", \"fields\": {{\"A\": \"{}\"", PLANTED[2]).into_bytes(),
    )
    .await
    .expect_error(400, "malformed_json");
    let mut events = agent.events().await.unwrap();
    events.next(Duration::from_secs(2)).await.expect("snapshot");
    api.patch("/v1/secrets/PLANT_GENERIC", json!({"fields": {"GENERIC_VAR": PLANTED[0]}}))
        .await
        .ok();
    events.next_event(Duration::from_secs(2)).await.expect("updated");
    agent.get("/v1/agent/secrets/PLANT_GENERIC").await.unwrap().ok();
    broker.stop();
    let log = broker.log();
    assert!(log.contains("TRACE"), "RUST_LOG=trace took effect");
    assert!(log.len() > 10_000, "a trace log is long: {} bytes", log.len());
    for value in PLANTED {
        assert!(!log.contains(value), "{value} is in the trace log");
    }
    assert!(!log.contains(&broker.admin_token), "the admin token is in the trace log");
    assert_no_planted(&broker, "after the trace run");
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_ciphertext_is_an_integrity_error() {
    let mut broker = Broker::start();
    let api = broker.admin();
    api.add_generic("TAMPERED", &[("TAMPERED_VAR", "planted-tamper-1")]).await.ok();
    api.add_generic("SWAPPED", &[("TAMPERED_VAR", "planted-tamper-2")]).await.ok();
    api.add_generic("INTACT", &[("INTACT_VAR", "planted-intact")]).await.ok();
    let (session, token) = api.new_session(json!({})).await;
    let (session2, token2) = api.new_session(json!({})).await;
    api.activate(&session, &["TAMPERED", "INTACT"]).await.ok();
    api.activate(&session2, &["SWAPPED"]).await.ok();
    let agent = TestAgent::enroll(&broker, &token).await.unwrap();
    let agent2 = TestAgent::enroll(&broker, &token2).await.unwrap();
    broker.stop();

    // Flip one bit of TAMPERED's ciphertext; give SWAPPED a copy of TAMPERED's original
    // ciphertext (a valid ciphertext, but of another row).
    let mut db = sqlite(&broker).await;
    let field_of = |name: &'static str| {
        sqlx::query_scalar::<_, Vec<u8>>(
            "SELECT f.ciphertext FROM secret_fields f JOIN secrets s ON s.id = f.secret_id WHERE s.name = ?",
        )
        .bind(name)
    };
    let original = field_of("TAMPERED").fetch_one(&mut db).await.unwrap();
    let mut flipped = original.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    for (name, blob) in [("TAMPERED", flipped), ("SWAPPED", original)] {
        let done = sqlx::query(
            "UPDATE secret_fields SET ciphertext = ? WHERE secret_id = (SELECT id FROM secrets WHERE name = ?)",
        )
        .bind(blob)
        .bind(name)
        .execute(&mut db)
        .await
        .unwrap();
        assert_eq!(done.rows_affected(), 1);
    }
    drop(db);
    broker.restart();
    let api = broker.admin();
    let mut agent = agent;
    let mut agent2 = agent2;
    agent.rebase(&broker.url);
    agent2.rebase(&broker.url);

    for (a, name) in [(&agent, "TAMPERED"), (&agent2, "SWAPPED")] {
        let r = a.get(&format!("/v1/agent/secrets/{name}")).await.unwrap();
        let m = r.expect_error(500, "integrity");
        assert!(m.contains(name) && m.contains("integrity"), "{m}");
        assert!(!r.body.to_string().contains("planted"), "{r:?}");
    }
    agent.get("/v1/agent/secrets").await.unwrap().expect_error(500, "integrity");
    // The intact secret still opens; the tampered one cannot be edited into something else.
    let intact = agent.get("/v1/agent/secrets/INTACT").await.unwrap().ok();
    assert_eq!(intact["fields"]["INTACT_VAR"], "planted-intact");
    api.patch("/v1/secrets/TAMPERED", json!({"description": "d"}))
        .await
        .expect_error(500, "integrity");
    let history = api.get("/v1/secrets/TAMPERED/history").await.ok();
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "denied" && e["detail"] == "integrity check failed")
    );
    broker.stop();
    assert!(!broker.log().contains("planted"));
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_or_missing_master_key_stops_startup() {
    let mut broker = Broker::start();
    let api = broker.admin();
    api.add_generic("KEYED", &[("KEYED_VAR", "planted-keyed")]).await.ok();
    broker.stop();
    let dir = broker.data_dir().to_owned();
    let key_file = dir.join("master.key");
    let good = std::fs::read(&key_file).unwrap();
    let other = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    let expected = format!(
        "master key does not open the data keys in {}: wrong key? restore {} or set MAESTRO_MASTER_KEY",
        dir.join("maestro.db").display(),
        key_file.display()
    );
    let err = broker
        .try_start_again(&BrokerOptions::default().env("MAESTRO_MASTER_KEY", other))
        .expect_err("a wrong key in the environment stops start-up");
    assert!(err.contains(&expected), "{err}");
    std::fs::write(&key_file, format!("{other}\n")).unwrap();
    let err = broker.try_start_again(&BrokerOptions::default()).expect_err("wrong key file");
    assert!(err.contains(&expected), "{err}");
    let err = broker
        .try_start_again(&BrokerOptions::default().env("MAESTRO_MASTER_KEY", "not base64!"))
        .expect_err("a malformed key stops start-up");
    assert!(err.contains("MAESTRO_MASTER_KEY is not a master key"), "{err}");

    std::fs::remove_file(&key_file).unwrap();
    let err = broker.try_start_again(&BrokerOptions::default()).expect_err("missing key file");
    assert!(err.contains("master.key is missing but"), "{err}");
    assert!(!key_file.exists(), "a missing key is never silently replaced");

    // The environment form of the right key works, and so does the restored file.
    let good_text = String::from_utf8(good.clone()).unwrap();
    broker.start_again(&BrokerOptions::default().env("MAESTRO_MASTER_KEY", good_text.trim()));
    broker.stop();
    std::fs::write(&key_file, &good).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    broker.start_again(&BrokerOptions::default());
    assert_eq!(broker.admin().get("/v1/secrets/KEYED").await.ok()["version"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn master_key_rotation_rewraps_and_survives_a_crash() {
    let mut broker = Broker::start();
    let api = broker.admin();
    api.add_generic("ROTATED_A", &[("ROT_A", "planted-rot-a")]).await.ok();
    api.add_generic("ROTATED_B", &[("ROT_B", "planted-rot-b")]).await.ok();
    let (session, token) = api.new_session(json!({})).await;
    api.activate(&session, &["ROTATED_A", "ROTATED_B"]).await.ok();
    let mut agent = TestAgent::enroll(&broker, &token).await.unwrap();

    // Not while a broker serves the directory.
    let out = broker.admin_command(&["rotate-master-key"], &[]);
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("another maestro-broker process is using"), "{out:?}");

    broker.stop();
    let dir = broker.data_dir().to_owned();
    let old_key = std::fs::read(dir.join("master.key")).unwrap();
    let out = broker.admin_command(&["rotate-master-key"], &[]).ok();
    assert!(out.stdout.contains("re-wrapped 2 data keys"), "{out:?}");
    let new_key = std::fs::read(dir.join("master.key")).unwrap();
    assert_ne!(old_key, new_key);
    assert!(!dir.join("master.key.new").exists());

    broker.start_again(&BrokerOptions::default());
    agent.rebase(&broker.url);
    let set = agent.get("/v1/agent/secrets").await.unwrap().ok().to_string();
    assert!(set.contains("planted-rot-a") && set.contains("planted-rot-b"));
    broker.stop();

    // A crash after the commit but before the rename: the old key file is still master.key
    // and the new one waits in master.key.new. Start-up finishes the rename.
    std::fs::write(dir.join("master.key"), &old_key).unwrap();
    std::fs::write(dir.join("master.key.new"), &new_key).unwrap();
    broker.start_again(&BrokerOptions::default());
    assert!(
        broker.log_contains("finished an interrupted master key rotation", Duration::from_secs(5)),
        "{}",
        broker.current_log()
    );
    assert_eq!(std::fs::read(dir.join("master.key")).unwrap(), new_key);
    assert!(!dir.join("master.key.new").exists());
    agent.rebase(&broker.url);
    agent.get("/v1/agent/secrets/ROTATED_A").await.unwrap().ok();
    broker.stop();

    // A crash before the commit: master.key is still right, the stray new key is dropped.
    std::fs::write(dir.join("master.key.new"), "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n")
        .unwrap();
    broker.start_again(&BrokerOptions::default());
    assert!(!dir.join("master.key.new").exists());
    assert_eq!(std::fs::read(dir.join("master.key")).unwrap(), new_key);
    agent.rebase(&broker.url);
    agent.get("/v1/agent/secrets/ROTATED_B").await.unwrap().ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn master_key_from_the_environment_rotates_without_files() {
    let k1 = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    let k2 = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
    let mut broker = Broker::start_with(BrokerOptions::default().env("MAESTRO_MASTER_KEY", k1));
    assert!(!broker.data_dir().join("master.key").exists(), "no key file in environment mode");
    broker.admin().add_generic("ENV_KEYED", &[("ENV_VAR", "planted-env")]).await.ok();
    broker.stop();

    let out = broker.admin_command(&["rotate-master-key"], &[("MAESTRO_MASTER_KEY", k1)]);
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("MAESTRO_NEW_MASTER_KEY"), "{out:?}");
    let out = broker
        .admin_command(
            &["rotate-master-key"],
            &[("MAESTRO_MASTER_KEY", k1), ("MAESTRO_NEW_MASTER_KEY", k2)],
        )
        .ok();
    assert!(out.stdout.contains("re-wrapped 1 data keys"), "{out:?}");
    assert!(!broker.data_dir().join("master.key").exists());
    assert!(!broker.data_dir().join("master.key.new").exists());
    let err = broker
        .try_start_again(&BrokerOptions::default().env("MAESTRO_MASTER_KEY", k1))
        .expect_err("the old key no longer opens the data");
    assert!(err.contains("master key does not open the data keys"), "{err}");
    broker.start_again(&BrokerOptions::default().env("MAESTRO_MASTER_KEY", k2));
    let api = broker.admin();
    let (session, token) = api.new_session(json!({})).await;
    api.activate(&session, &["ENV_KEYED"]).await.ok();
    let agent = TestAgent::enroll(&broker, &token).await.unwrap();
    let one = agent.get("/v1/agent/secrets/ENV_KEYED").await.unwrap().ok();
    assert_eq!(one["fields"]["ENV_VAR"], "planted-env");
}
