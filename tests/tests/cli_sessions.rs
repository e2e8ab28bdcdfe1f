//! `maestro sessions create` against a real broker: the stdout contract scripts rely on (id on
//! line 1, token on line 2 only without a bundle), the bundle file (mode 0600 from the start,
//! exact contents, enrolls a real agent), TTL parsing, and a bundle path that cannot be written
//! failing before any session exists.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli_support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use cli_support::{broker_env, fails_with_one_line, run_env, sessions_snapshot, unix_seconds};
use maestro_tests::broker::{Broker, TestAgent};
use maestro_tests::util::{bin, temp_dir};
use maestro_wire::agent_api::Bundle;
use maestro_wire::api::SessionInfo;
use serde_json::Value;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn create_prints_id_then_token() {
    let broker = Broker::start();
    let me = broker.admin_token.clone();
    let out = broker.maestro(&me, &["sessions", "create", "--ttl", "90s", "--label", "l1"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    let (id, token) = (lines[0], lines[1]);
    let info: SessionInfo =
        serde_json::from_str(&broker.maestro(&me, &["sessions", "show", id, "--json"]).ok().stdout)
            .unwrap();
    assert_eq!(info.id, id);
    assert_eq!(info.label.as_deref(), Some("l1"));
    assert_eq!(unix_seconds(&info.expires_at) - unix_seconds(&info.created_at), 90);
    // The printed token is the session's: it enrolls once.
    let agent = TestAgent::enroll(&broker, token).await.unwrap();
    assert_eq!(agent.session_id, id);
    assert!(TestAgent::enroll(&broker, token).await.is_err(), "single use");

    // TTL forms and the default.
    for (ttl, seconds) in [("30m", 1800), ("1d 6h", 108_000), ("12h", 43_200)] {
        let out = broker.maestro(&me, &["sessions", "create", "--ttl", ttl, "--json"]).ok().json();
        let s = &out["session"];
        let span = unix_seconds(s["expires_at"].as_str().unwrap())
            - unix_seconds(s["created_at"].as_str().unwrap());
        assert_eq!(span, seconds, "--ttl {ttl}");
    }
    let out = broker.maestro(&me, &["sessions", "create", "--json"]).ok().json();
    let s = &out["session"];
    let span = unix_seconds(s["expires_at"].as_str().unwrap())
        - unix_seconds(s["created_at"].as_str().unwrap());
    assert_eq!(span, 12 * 3600, "default TTL");

    // `| head -1`: the reader may go away early; maestro still exits 0.
    let script = format!("set -o pipefail; {} sessions create | head -1", bin("maestro").display());
    let mut sh = Command::new("bash");
    sh.args(["-c", &script]);
    for (k, v) in broker_env(&broker, &me) {
        sh.env(k, v);
    }
    let piped = sh.output().unwrap();
    assert!(piped.status.success(), "{piped:?}");
    let first = String::from_utf8(piped.stdout).unwrap();
    assert_eq!(first.lines().count(), 1);
    broker.maestro(&me, &["sessions", "show", first.trim()]).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn bundle_out_writes_a_0600_bundle_that_enrolls() {
    let broker = Broker::start();
    let me = broker.admin_token.clone();
    let tmp = temp_dir("maestro-cli-");
    let path = tmp.path().join("bundle.json");
    // An existing, world-readable file at the path is replaced by a 0600 one.
    std::fs::write(&path, "old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

    let out =
        broker.maestro(&me, &["sessions", "create", "--bundle-out", path.to_str().unwrap()]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "only the id without the token: {out:?}");
    let id = lines[0];
    assert_eq!(mode(&path), 0o600);
    let raw = std::fs::read_to_string(&path).unwrap();
    // Exactly the five fields of the wire Bundle (it denies unknown fields).
    let bundle: Bundle = serde_json::from_str(&raw).unwrap();
    let value: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(value.as_object().unwrap().len(), 5, "{raw}");
    assert_eq!(bundle.broker_url, broker.url);
    assert_eq!(bundle.ca_pem, broker.ca_pem());
    assert_eq!(bundle.session_id, id);
    assert!(!bundle.enrollment_expires_at.is_empty());
    assert!(!out.stdout.contains(bundle.enrollment_token.expose()));
    // No temporary file is left next to it.
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["bundle.json"]);
    let agent = TestAgent::enroll(&broker, bundle.enrollment_token.expose()).await.unwrap();
    assert_eq!(agent.session_id, id);

    // With --json: the answer without the token, plus where the bundle is.
    let path2 = tmp.path().join("b2.json");
    let out = broker
        .maestro(&me, &["sessions", "create", "--bundle-out", path2.to_str().unwrap(), "--json"])
        .ok()
        .json();
    assert!(out.get("enrollment_token").is_none(), "{out}");
    assert_eq!(out["bundle"], path2.to_str().unwrap());
    let b2: Bundle = serde_json::from_str(&std::fs::read_to_string(&path2).unwrap()).unwrap();
    assert_eq!(out["session"]["id"], b2.session_id.as_str());
    assert_eq!(mode(&path2), 0o600);

    // A relative path lands in the working directory.
    let cwd = temp_dir("maestro-cli-cwd-");
    let env = broker_env(&broker, &me);
    let out = run_env(cwd.path(), &env, &["sessions", "create", "--bundle-out", "rel.json"], None);
    let out = out.ok();
    let rel = cwd.path().join("rel.json");
    let rel_bundle: Bundle = serde_json::from_str(&std::fs::read_to_string(&rel).unwrap()).unwrap();
    assert_eq!(rel_bundle.session_id, out.stdout.trim());
    assert_eq!(mode(&rel), 0o600);
}

#[test]
fn unwritable_bundle_path_creates_no_session() {
    let broker = Broker::start();
    let me = broker.admin_token.clone();
    let tmp = temp_dir("maestro-cli-");
    let before = sessions_snapshot(&broker, &me);
    let missing = tmp.path().join("no/such/dir/bundle.json");
    fails_with_one_line(
        &broker.maestro(&me, &["sessions", "create", "--bundle-out", missing.to_str().unwrap()]),
        &["--bundle-out"],
    );
    fails_with_one_line(
        &broker.maestro(&me, &["sessions", "create", "--bundle-out", tmp.path().to_str().unwrap()]),
        &["is a directory"],
    );
    assert_eq!(sessions_snapshot(&broker, &me), before);
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn unix_seconds_helper() {
    assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), 0);
    assert_eq!(unix_seconds("2000-03-01T00:00:01.5Z"), 951_868_801);
    assert_eq!(unix_seconds("2026-11-29T10:24:55Z") - unix_seconds("2026-11-28T10:24:55Z"), 86_400);
}
