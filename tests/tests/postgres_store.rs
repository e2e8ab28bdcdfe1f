//! The broker with its store in PostgreSQL (`MAESTRO_DATABASE_URL`): the user-API flow
//! (secrets, sessions, activation, conflicts, audit) on a real temporary cluster; the audit
//! trail refuses UPDATE, DELETE and TRUNCATE; a tampered or moved ciphertext fails with an
//! integrity error; a wrong or missing master key and a foreign CA stop start-up; planted
//! values reach neither the database (`pg_dump`, in plain text or hex) nor any log (the
//! broker's at trace level, the server's with every statement and its parameters); `user add`
//! and `rotate-master-key` work on the database (OAuth providers' keys included), and a
//! rotation waits for every broker to stop.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use maestro_tests::broker::{Broker, BrokerOptions, TestAgent};
use maestro_tests::pg::{Database, PeerBroker, Postgres, copy_key_material, hex};
use maestro_tests::util::{files_containing, temp_dir};
use serde_json::json;

const PLANTED: &[&str] = &[
    "planted-pg-generic-0b7e",
    "planted-pg-aws-secret-91c2",
    "AKIAPGPLANTED4XQ",
    "planted-pg-edited-d3a8",
    "planted-pg-first-version-55",
];

/// `maestro-broker ARGS` on `broker`'s data directory with the database in the environment.
fn admin(broker: &Broker, db: &Database, args: &[&str]) -> maestro_tests::broker::CmdOutput {
    broker.admin_command(args, &[("MAESTRO_DATABASE_URL", &db.url())])
}

#[tokio::test(flavor = "multi_thread")]
async fn user_api_flow_on_postgres() {
    let Some(pg) = Postgres::start() else { return };
    let db = pg.create_database("maestro_flow");
    let broker = Broker::start_with(db.broker_options());
    assert!(
        !broker.data_dir().join("maestro.db").exists(),
        "with a PostgreSQL URL no SQLite file is made"
    );
    let api = broker.admin();
    let bob_token = admin(&broker, &db, &["user", "add", "bob"]).ok().stdout.trim().to_owned();
    let bob = broker.api(&bob_token);
    let taken = admin(&broker, &db, &["user", "add", "bob"]);
    assert_ne!(taken.status, 0);
    assert!(taken.stderr.contains("user 'bob' already exists"), "{taken:?}");

    // Secrets: create, names taken, bad input, isolation between users.
    let aws = |name: &str, key: &str| {
        json!({"name": name, "kind": "aws", "fields": {
            "access_key_id": key, "secret_access_key": PLANTED[1]}, "tags": ["cloud"]})
    };
    api.post("/v1/secrets", aws("AWS_PROD", PLANTED[2])).await.ok();
    api.post("/v1/secrets", aws("AWS_DEV", "AKIADEVKEY")).await.ok();
    api.add_generic("GEN", &[("GEN_VAR", PLANTED[0])]).await.ok();
    api.add_generic("GEN", &[("GEN_VAR", "x")]).await.expect_error(409, "already_exists");
    api.add_generic("bad-name", &[("V", "x")]).await.expect_error(400, "invalid_name");
    api.post("/v1/secrets", json!({"name": "NOKIND", "kind": "nope", "fields": {"A": "b"}}))
        .await
        .expect_error(400, "unknown_kind");
    let listed = api.get("/v1/secrets").await.ok();
    let names: Vec<&str> =
        listed.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["AWS_DEV", "AWS_PROD", "GEN"]);
    assert_eq!(bob.get("/v1/secrets").await.ok(), json!([]));
    bob.get("/v1/secrets/AWS_PROD").await.expect_error(404, "not_found");
    // Bob may use the same names: uniqueness is per owner.
    bob.add_generic("GEN", &[("GEN_VAR", "bobs")]).await.ok();

    let edited =
        api.patch("/v1/secrets/GEN", json!({"fields": {"GEN_VAR": PLANTED[3]}})).await.ok();
    assert_eq!(edited["version"], 2);

    // Sessions and activation, with the conflict check.
    let (session, token) = api.new_session(json!({"label": "pg flow"})).await;
    let shown = api.activate(&session, &["AWS_PROD", "GEN"]).await.ok();
    assert_eq!(shown["active"], json!(["AWS_PROD", "GEN"]));
    let m = api.activate(&session, &["AWS_DEV"]).await.expect_error(409, "conflict");
    assert!(m.contains("AWS_DEV and AWS_PROD both provide variable AWS_"), "{m}");
    assert!(m.contains("nothing was activated"), "{m}");
    let shown = api.get(&format!("/v1/sessions/{session}")).await.ok();
    assert_eq!(shown["active"], json!(["AWS_PROD", "GEN"]), "a refused activation changes nothing");
    bob.activate(&session, &["GEN"]).await.expect_error(404, "not_found");
    let m = api
        .patch("/v1/secrets/GEN", json!({"fields": {"AWS_REGION": "eu-west-1"}}))
        .await
        .expect_error(409, "conflict");
    assert!(m.contains("active in session"), "an edit that would clash is refused: {m}");

    // The agent gets the values, which went through the database sealed.
    let agent = TestAgent::enroll(&broker, &token).await.unwrap();
    TestAgent::enroll(&broker, &token).await.err().unwrap().expect_error(401, "invalid_token");
    let set = agent.get("/v1/agent/secrets").await.unwrap().ok().to_string();
    for value in [PLANTED[1], PLANTED[2], PLANTED[3]] {
        assert!(set.contains(value), "the agent gets {value}");
    }
    assert!(!set.contains(PLANTED[0]), "the old version is gone");
    agent
        .post(
            "/v1/agent/usage",
            json!({"reports": [{"secret": "GEN", "action": "injected",
                "at": maestro_tests::util::now_rfc3339(), "pid": 4242, "uid": 1000, "command": "env",
                "detail": null}]}),
        )
        .await
        .unwrap()
        .ok();
    let meta = api.get("/v1/secrets/GEN").await.ok();
    assert_eq!(meta["used_by_sessions"], json!([session]));
    assert_eq!(meta["active_in_sessions"], json!([session]));

    api.deactivate(&session, &["GEN"]).await.ok();
    api.delete("/v1/secrets/GEN").await.ok();
    api.get("/v1/secrets/GEN").await.expect_error(404, "not_found");
    bob.get("/v1/secrets/GEN").await.ok();

    api.post(&format!("/v1/sessions/{session}/end"), json!({})).await.ok();
    api.post(&format!("/v1/sessions/{session}/end"), json!({}))
        .await
        .expect_error(409, "session_ended");
    api.activate(&session, &["AWS_DEV"]).await.expect_error(409, "session_ended");
    agent.get("/v1/agent/secrets").await.unwrap().expect_error(403, "forbidden");

    // The audit trail, in order, with the agent's report.
    let audit = api.get("/v1/audit").await.ok();
    let actions: Vec<&str> =
        audit.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for wanted in [
        "created",
        "edited",
        "session_created",
        "activated",
        "enrolled",
        "fetched",
        "injected",
        "deactivated",
        "deleted",
        "session_ended",
        "denied",
    ] {
        assert!(actions.contains(&wanted), "{wanted} is in the audit trail: {actions:?}");
    }
    let injected = audit.as_array().unwrap().iter().find(|e| e["action"] == "injected").unwrap();
    assert_eq!((injected["pid"].as_u64(), injected["command"].as_str()), (Some(4242), Some("env")));
    let history = api.get("/v1/secrets/AWS_PROD/history").await.ok();
    assert!(history.as_array().unwrap().iter().any(|e| e["action"] == "activated"));
    assert!(!bob.get("/v1/audit").await.ok().to_string().contains("AWS_PROD"));

    // The CLI works the same against it.
    let ls = broker.maestro(&broker.admin_token, &["secrets", "ls", "--json"]).ok().json();
    assert_eq!(ls.as_array().unwrap().len(), 2);

    // Append-only, even for SQL typed by hand as the database's owner.
    let mut conn = db.connect().await;
    for sql in ["UPDATE audit SET detail = 'x'", "DELETE FROM audit", "TRUNCATE audit"] {
        let e = sqlx::query(sql).execute(&mut conn).await.unwrap_err();
        assert!(e.to_string().contains("append-only"), "{sql}: {e}");
    }
    let rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit").fetch_one(&mut conn).await.unwrap();
    assert_eq!(usize::try_from(rows).unwrap(), actions.len() + 1, "the trail is whole (+ bob's)");
}

#[tokio::test(flavor = "multi_thread")]
async fn tampering_wrong_keys_and_a_foreign_ca_are_refused() {
    let Some(pg) = Postgres::start() else { return };
    let db = pg.create_database("maestro_tamper");
    let options = db.broker_options();
    let mut broker = Broker::start_with(options.clone());
    let api = broker.admin();
    api.add_generic("TAMPERED", &[("TAMPERED_VAR", "planted-pg-tamper-1")]).await.ok();
    api.add_generic("SWAPPED", &[("SWAPPED_VAR", "planted-pg-tamper-2")]).await.ok();
    api.add_generic("INTACT", &[("INTACT_VAR", "planted-pg-intact")]).await.ok();
    let (session, token) = api.new_session(json!({})).await;
    api.activate(&session, &["TAMPERED", "SWAPPED", "INTACT"]).await.ok();
    let agent = TestAgent::enroll(&broker, &token).await.unwrap();

    // Flip one bit of TAMPERED's ciphertext; give SWAPPED a copy of it (valid, but another
    // row's), while the broker serves.
    let mut conn = db.connect().await;
    let field_of = |name: &'static str| {
        sqlx::query_scalar::<_, Vec<u8>>(
            "SELECT f.ciphertext FROM secret_fields f JOIN secrets s ON s.id = f.secret_id \
             WHERE s.name = $1",
        )
        .bind(name)
    };
    let original = field_of("TAMPERED").fetch_one(&mut conn).await.unwrap();
    let mut flipped = original.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    for (name, blob) in [("TAMPERED", flipped), ("SWAPPED", original)] {
        let done = sqlx::query(
            "UPDATE secret_fields SET ciphertext = $1 \
             WHERE secret_id = (SELECT id FROM secrets WHERE name = $2)",
        )
        .bind(blob)
        .bind(name)
        .execute(&mut conn)
        .await
        .unwrap();
        assert_eq!(done.rows_affected(), 1);
    }
    for name in ["TAMPERED", "SWAPPED"] {
        let r = agent.get(&format!("/v1/agent/secrets/{name}")).await.unwrap();
        let m = r.expect_error(500, "integrity");
        assert!(m.contains(name), "{m}");
        assert!(!r.body.to_string().contains("planted"), "{r:?}");
    }
    agent.get("/v1/agent/secrets").await.unwrap().expect_error(500, "integrity");
    let intact = agent.get("/v1/agent/secrets/INTACT").await.unwrap().ok();
    assert_eq!(intact["fields"]["INTACT_VAR"], "planted-pg-intact");
    let audit = api.get("/v1/audit").await.ok().to_string();
    assert!(audit.contains("integrity check failed"), "the failure is audited");
    broker.stop();

    // A wrong master key does not start, and says which database it checked.
    let wrong =
        options.clone().env("MAESTRO_MASTER_KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    let log = broker.try_start_again(&wrong).unwrap_err();
    let label = format!("postgres://maestro_tamper@127.0.0.1:{}/maestro_tamper", db.port);
    assert!(log.contains(&format!("master key does not open the data keys in {label}")), "{log}");
    assert!(!log.contains(&db.password), "the database password is in an error: {log}");

    // A data directory without the key material (a broker set up by mistake) refuses too,
    // and makes no key of its own.
    let tmp = temp_dir("maestro-peer-");
    let dir = tmp.path().join("data");
    let fresh = PeerBroker::try_start_in(tmp, dir, &options);
    let log = fresh.err().expect("a broker without the master key refuses to start");
    assert!(log.contains("master.key is missing but") && log.contains(&label), "{log}");

    // The right master key with another CA: agents enrolled through one broker would be
    // refused by the other; it does not start.
    let tmp = temp_dir("maestro-peer-");
    let dir = tmp.path().join("data");
    copy_key_material(broker.data_dir(), &dir);
    std::fs::remove_file(dir.join("ca.key")).unwrap();
    std::fs::remove_file(dir.join("ca.pem")).unwrap();
    let log = PeerBroker::try_start_in(tmp, dir, &options).err().expect("a foreign CA refuses");
    assert!(log.contains("is not the CA of the brokers on") && log.contains(&label), "{log}");

    broker.start_again(&options);
    let mut agent = agent;
    agent.rebase(&broker.url);
    let intact = agent.get("/v1/agent/secrets/INTACT").await.unwrap().ok();
    assert_eq!(intact["fields"]["INTACT_VAR"], "planted-pg-intact", "the right key still opens");
}

#[tokio::test(flavor = "multi_thread")]
async fn planted_values_reach_neither_the_database_nor_a_log() {
    let Some(pg) = Postgres::start() else { return };
    let db = pg.create_database("maestro_plant");
    let options = db.broker_options().env("RUST_LOG", "trace");
    let broker = Broker::start_with(options.clone());
    let peer = PeerBroker::start(&broker, &options);
    let api = broker.admin();
    api.add_generic("PLANT_GENERIC", &[("GENERIC_VAR", PLANTED[0])]).await.ok();
    api.post(
        "/v1/secrets",
        json!({"name": "PLANT_AWS", "kind": "aws", "fields": {
            "access_key_id": PLANTED[2], "secret_access_key": PLANTED[1]}}),
    )
    .await
    .ok();
    api.add_generic("PLANT_EDIT", &[("EDIT_VAR", PLANTED[4])]).await.ok();
    api.patch("/v1/secrets/PLANT_EDIT", json!({"fields": {"EDIT_VAR": PLANTED[3]}})).await.ok();
    // Bad input that quotes a value must not echo it anywhere either.
    api.post(
        "/v1/secrets",
        json!({"name": "BAD", "kind": "generic", "fields": {"A": 1}, "x": PLANTED[0]}),
    )
    .await
    .expect_error(400, "malformed_json");
    let (session, token) = api.new_session(json!({})).await;
    // Activated through the second broker: its events go through NOTIFY.
    peer.api(&broker.admin_token)
        .activate(&session, &["PLANT_GENERIC", "PLANT_AWS", "PLANT_EDIT"])
        .await
        .ok();
    let mut agent = TestAgent::enroll(&broker, &token).await.unwrap();
    agent.rebase(&peer.url);
    let mut events = agent.events().await.unwrap();
    events.next_event(std::time::Duration::from_secs(5)).await.expect("a snapshot");
    let set = agent.get("/v1/agent/secrets").await.unwrap().ok().to_string();
    for value in &PLANTED[..4] {
        assert!(set.contains(value), "the agent gets {value}");
    }
    api.patch("/v1/secrets/PLANT_GENERIC", json!({"fields": {"GENERIC_VAR": PLANTED[0]}}))
        .await
        .ok();
    events
        .next_event(std::time::Duration::from_secs(5))
        .await
        .expect("an update from the first broker");
    drop(events);

    let dump = pg.dump(&db.name);
    assert!(dump.len() > 1000 && dump.windows(6).any(|w| w == b"secret"), "a real dump");
    let server_log = pg.log();
    assert!(server_log.contains("INSERT INTO secret_fields"), "the server logs every statement");
    let logs = [
        ("pg_dump", String::from_utf8_lossy(&dump).into_owned()),
        ("the PostgreSQL server log", server_log),
        ("the first broker's trace log", broker.log()),
        ("the second broker's trace log", peer.log()),
    ];
    for value in PLANTED {
        for (what, text) in &logs {
            assert!(!text.contains(value), "{value} is in {what}");
            assert!(!text.contains(&hex(value.as_bytes())), "{value} is in {what}, in hex");
        }
        for dir in [broker.data_dir(), peer.data_dir()] {
            let found = files_containing(dir, value.as_bytes());
            assert!(found.is_empty(), "{value} found in {found:?}");
        }
    }
    for (what, text) in &logs[2..] {
        assert!(!text.contains(&db.password), "the database password is in {what}");
        assert!(!text.contains(&broker.admin_token), "the admin token is in {what}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_waits_for_every_broker_and_user_add_runs_beside_them() {
    let Some(pg) = Postgres::start() else { return };
    let db = pg.create_database("maestro_rotate");
    // The URL without its password on the command line, the password from PGPASSWORD.
    let options = BrokerOptions::args(&["--database", &db.url_without_password()])
        .env("PGPASSWORD", &db.password);
    let mut broker = Broker::start_with(options.clone());
    let api = broker.admin();
    api.add_generic("ROTATED", &[("ROTATED_VAR", "planted-pg-rotated")]).await.ok();
    // An OAuth provider: its sealed client secret has a data key of its own to re-wrap.
    api.post(
        "/v1/oauth/providers",
        json!({"name": "gh", "preset": "github", "client_id": "pg-client",
            "client_secret": "planted-pg-client-secret"}),
    )
    .await
    .ok();
    let (session, token) = api.new_session(json!({})).await;
    api.activate(&session, &["ROTATED"]).await.ok();
    let mut agent = TestAgent::enroll(&broker, &token).await.unwrap();

    // From another machine's data directory (same key material), while a broker serves.
    let other = temp_dir("maestro-admin-");
    let other_dir = other.path().join("data");
    copy_key_material(broker.data_dir(), &other_dir);
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(maestro_tests::util::bin("maestro-broker"));
        cmd.args(args)
            .arg("--data-dir")
            .arg(&other_dir)
            .env_remove("MAESTRO_MASTER_KEY")
            .env("MAESTRO_DATABASE_URL", db.url());
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (status, token_out, err) = run(&["user", "add", "carol"]);
    assert_eq!(status, Some(0), "user add beside a serving broker: {err}");
    broker.api(token_out.trim()).get("/v1/secrets").await.ok();
    let (status, _, err) = run(&["rotate-master-key"]);
    assert_ne!(status, Some(0));
    let label = format!("postgres://maestro_rotate@127.0.0.1:{}/maestro_rotate", db.port);
    assert!(err.contains(&format!("brokers are serving on {label}")), "{err}");
    assert_eq!(
        std::fs::read(other_dir.join("master.key")).unwrap(),
        std::fs::read(broker.data_dir().join("master.key")).unwrap(),
        "nothing changed"
    );

    broker.stop();
    let (status, out, err) = run(&["rotate-master-key"]);
    assert_eq!(status, Some(0), "{err}");
    assert!(out.contains("re-wrapped 2 data keys"), "{out}");
    // The broker with the old key no longer starts; with the new key file it does.
    let log = broker.try_start_again(&options).unwrap_err();
    assert!(log.contains("master key does not open the data keys in"), "{log}");
    std::fs::copy(other_dir.join("master.key"), broker.data_dir().join("master.key")).unwrap();
    broker.start_again(&options);
    agent.rebase(&broker.url);
    let got = agent.get("/v1/agent/secrets/ROTATED").await.unwrap().ok();
    assert_eq!(got["fields"]["ROTATED_VAR"], "planted-pg-rotated");
    let providers = broker.admin().get("/v1/oauth/providers").await.ok();
    assert_eq!(providers[0]["name"], "gh", "{providers}");
}

#[test]
fn a_bad_database_url_is_refused_without_repeating_it() {
    let dir = temp_dir("maestro-badurl-");
    for (url, wanted) in [
        ("mysql://maestro:planted-pw-31@db/maestro", "use a PostgreSQL URL"),
        ("postgres://maestro:planted-pw-31@db", "names no database"),
    ] {
        let out = std::process::Command::new(maestro_tests::util::bin("maestro-broker"))
            .args(["user", "add", "x", "--data-dir"])
            .arg(dir.path().join("data"))
            .env("MAESTRO_DATABASE_URL", url)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.starts_with("maestro-broker: invalid --database"), "{stderr}");
        assert!(stderr.contains(wanted) && !stderr.contains("planted-pw-31"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    assert!(!dir.path().join("data").exists(), "nothing was made");
}
