//! The `maestro` command set against a real broker, for two users who cannot see each other's
//! secrets or sessions: every command, its `--json` output, values from argv, a file and stdin,
//! the enrollment bundle, and one-line errors with a non-zero exit that change nothing.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;

use maestro_tests::broker::{Broker, CmdOutput, TestAgent};
use maestro_tests::util::temp_dir;
use serde_json::{Value, json};

fn fails_with_one_line(out: &CmdOutput, text: &str) {
    assert_ne!(out.status, 0, "must fail: {out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr: {out:?}");
    assert!(lines[0].starts_with("maestro: "), "{out:?}");
    assert!(out.stderr.contains(text), "stderr lacks {text:?}: {out:?}");
}

fn names(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn whole_command_set_for_two_users() {
    let broker = Broker::start();
    let alice = broker.admin_token.clone();
    let bob = broker.add_user("bob");
    let tmp = temp_dir("maestro-cli-");
    let secret_file = tmp.path().join("aws-secret");
    std::fs::write(&secret_file, "planted-from-file-91ab").unwrap();
    let file_arg = format!("secret_access_key={}", secret_file.display());

    // add: argv, file and stdin forms; description and tags.
    let added = broker
        .maestro(
            &alice,
            &[
                "secrets",
                "add",
                "AWS_PROD",
                "--kind",
                "aws",
                "--field",
                "access_key_id=AKIACLI1",
                "--field-file",
                &file_arg,
                "--description",
                "production",
                "--tag",
                "prod",
                "--tag",
                "aws",
                "--json",
            ],
        )
        .ok()
        .json();
    assert_eq!(added["name"], "AWS_PROD");
    assert_eq!(added["tags"], json!(["prod", "aws"]));
    assert!(!added.to_string().contains("planted"));
    let out = broker
        .maestro_stdin(
            &alice,
            &["secrets", "add", "API", "--kind", "generic", "--field-stdin", "API_TOKEN"],
            Some(b"planted-from-stdin-77c2\n"),
        )
        .ok();
    assert!(!out.stdout.contains("planted") && !out.stderr.contains("planted"), "{out:?}");
    broker
        .maestro(&alice, &["secrets", "add", "SOLO", "--kind", "generic", "--field", "SOLO_VAR=x"])
        .ok();

    // ls, show, edit.
    let listed = broker.maestro(&alice, &["secrets", "ls", "--json"]).ok().json();
    assert_eq!(names(&listed), ["API", "AWS_PROD", "SOLO"]);
    let text = broker.maestro(&alice, &["secrets", "ls"]).ok().stdout;
    assert!(text.contains("AWS_PROD") && text.contains("API"), "{text}");
    let shown = broker.maestro(&alice, &["secrets", "show", "AWS_PROD", "--json"]).ok().json();
    assert_eq!(shown["description"], "production");
    let text = broker.maestro(&alice, &["secrets", "show", "AWS_PROD"]).ok().stdout;
    assert!(text.contains("AWS_ACCESS_KEY_ID") && !text.contains("planted"), "{text}");
    let edited = broker
        .maestro(&alice, &["secrets", "edit", "API", "--field", "EXTRA=planted-edit-3c", "--json"])
        .ok()
        .json();
    assert_eq!(edited["version"], 2);
    assert_eq!(edited["field_names"], json!(["API_TOKEN", "EXTRA"]));
    let edited = broker
        .maestro(&alice, &["secrets", "edit", "API", "--remove-field", "EXTRA", "--json"])
        .ok()
        .json();
    assert_eq!(edited["field_names"], json!(["API_TOKEN"]));

    // sessions create with a bundle, activate, show, ls.
    let bundle_path = tmp.path().join("bundle.json");
    let created = broker
        .maestro(
            &alice,
            &[
                "sessions",
                "create",
                "--ttl",
                "1h",
                "--label",
                "cli test",
                "--bundle-out",
                bundle_path.to_str().unwrap(),
                "--json",
            ],
        )
        .ok()
        .json();
    let session = created["session"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["session"]["label"], "cli test");
    let mode = std::fs::metadata(&bundle_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let bundle: maestro_wire::agent_api::Bundle =
        serde_json::from_str(&std::fs::read_to_string(&bundle_path).unwrap()).unwrap();
    assert_eq!(bundle.session_id, session);
    assert_eq!(bundle.broker_url, broker.url);
    assert_eq!(bundle.ca_pem, broker.ca_pem());

    let activated = broker
        .maestro(
            &alice,
            &["secrets", "activate", "--session", &session, "AWS_PROD", "API", "--json"],
        )
        .ok()
        .json();
    assert_eq!(activated["active"], json!(["API", "AWS_PROD"]));
    let info = broker.maestro(&alice, &["sessions", "show", &session, "--json"]).ok().json();
    assert_eq!(info["state"], "live");
    assert_eq!(info["active"], json!(["API", "AWS_PROD"]));
    let text = broker.maestro(&alice, &["sessions", "show", &session]).ok().stdout;
    assert!(text.contains("AWS_PROD"), "{text}");
    let sessions = broker.maestro(&alice, &["sessions", "ls", "--json"]).ok().json();
    assert_eq!(sessions.as_array().unwrap().len(), 1);
    broker.maestro(&alice, &["sessions", "ls"]).ok();

    // The bundle enrolls an agent, which gets the values given by file and stdin.
    let agent = TestAgent::enroll(&broker, bundle.enrollment_token.expose()).await.unwrap();
    let material = agent.get("/v1/agent/secrets").await.unwrap().ok().to_string();
    assert!(material.contains("planted-from-file-91ab"), "{material}");
    assert!(material.contains("planted-from-stdin-77c2"), "{material}");
    assert!(!material.contains("planted-from-stdin-77c2\\n"), "the trailing newline is dropped");

    // history shows the activation and the fetch.
    let history = broker.maestro(&alice, &["secrets", "history", "AWS_PROD", "--json"]).ok().json();
    let actions: Vec<&str> =
        history.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"activated") && actions.contains(&"fetched"), "{actions:?}");
    broker.maestro(&alice, &["secrets", "history", "AWS_PROD"]).ok();

    // Bob sees none of it.
    assert_eq!(broker.maestro(&bob, &["secrets", "ls", "--json"]).ok().json(), json!([]));
    assert_eq!(broker.maestro(&bob, &["sessions", "ls", "--json"]).ok().json(), json!([]));
    fails_with_one_line(&broker.maestro(&bob, &["secrets", "show", "AWS_PROD"]), "AWS_PROD");
    fails_with_one_line(&broker.maestro(&bob, &["secrets", "rm", "AWS_PROD"]), "AWS_PROD");
    fails_with_one_line(&broker.maestro(&bob, &["sessions", "show", &session]), &session);
    fails_with_one_line(&broker.maestro(&bob, &["sessions", "end", &session]), &session);
    fails_with_one_line(
        &broker.maestro(&bob, &["secrets", "activate", "--session", &session, "AWS_PROD"]),
        &session,
    );
    broker
        .maestro(&bob, &["secrets", "add", "AWS_PROD", "--kind", "generic", "--field", "B=1"])
        .ok();

    // Bad input: one line, non-zero, nothing changed.
    let before = broker.maestro(&alice, &["secrets", "ls", "--json"]).ok().json();
    fails_with_one_line(
        &broker.maestro(
            &alice,
            &["secrets", "add", "bad-name", "--kind", "generic", "--field", "A=1"],
        ),
        "bad-name",
    );
    fails_with_one_line(
        &broker
            .maestro(&alice, &["secrets", "add", "NEW", "--kind", "nosuchkind", "--field", "A=1"]),
        "nosuchkind",
    );
    fails_with_one_line(
        &broker.maestro(
            &alice,
            &["secrets", "add", "NEW", "--kind", "aws", "--field", "access_key_id=A"],
        ),
        "secret_access_key",
    );
    broker
        .maestro(
            &alice,
            &["secrets", "add", "CLASH", "--kind", "generic", "--field", "API_TOKEN=x"],
        )
        .ok();
    fails_with_one_line(
        &broker.maestro(&alice, &["secrets", "activate", "--session", &session, "CLASH"]),
        "API_TOKEN",
    );
    let after = broker.maestro(&alice, &["secrets", "ls", "--json"]).ok().json();
    assert_eq!(names(&after), ["API", "AWS_PROD", "CLASH", "SOLO"]);
    assert_eq!(names(&before), ["API", "AWS_PROD", "SOLO"]);

    // deactivate, rm, end.
    let info = broker
        .maestro(&alice, &["secrets", "deactivate", "--session", &session, "API", "--json"])
        .ok()
        .json();
    assert_eq!(info["active"], json!(["AWS_PROD"]));
    broker.maestro(&alice, &["secrets", "rm", "SOLO"]).ok();
    let listed = broker.maestro(&alice, &["secrets", "ls", "--json"]).ok().json();
    assert_eq!(names(&listed), ["API", "AWS_PROD", "CLASH"]);
    broker.maestro(&alice, &["sessions", "end", &session]).ok();
    let info = broker.maestro(&alice, &["sessions", "show", &session, "--json"]).ok().json();
    assert_eq!(info["state"], "ended");
    fails_with_one_line(
        &broker.maestro(&alice, &["secrets", "activate", "--session", &session, "API"]),
        "ended",
    );
    // Bob's own secret was never touched by Alice's commands.
    let bobs = broker.maestro(&bob, &["secrets", "show", "AWS_PROD", "--json"]).ok().json();
    assert_eq!(bobs["kind"], "generic");
}
