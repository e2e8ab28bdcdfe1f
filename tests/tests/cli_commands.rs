//! Every `maestro` command against a real broker, in its human form and with `--json`: the
//! JSON is the broker's answer (checked against the wire types), the text shows what the
//! contract says it shows, and no value is ever printed.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli_support;

use cli_support::{env, fails_with_one_line, keys, not_printed, run_env};
use maestro_tests::broker::{Broker, TestAgent};
use maestro_tests::util::temp_dir;
use maestro_wire::api::{AuditEvent, Deleted, SecretMeta, SessionCreated, SessionInfo};
use serde_json::{Value, json};

const PLANTED_KEY: &str = "planted-cli-secret-key-5d1e";
const PLANTED_TOKEN: &str = "planted-cli-api-token-8b7f";

#[tokio::test(flavor = "multi_thread")]
async fn secrets_commands_text_and_json() {
    let broker = Broker::start();
    let me = broker.admin_token.clone();
    let tmp = temp_dir("maestro-cli-");
    let key_file = tmp.path().join("key");
    std::fs::write(&key_file, format!("{PLANTED_KEY}\n")).unwrap();
    let key_arg = format!("secret_access_key={}", key_file.display());

    // add, text form: one line naming the secret, its kind, version, variables and files.
    let out = broker
        .maestro(
            &me,
            &[
                "secrets",
                "add",
                "AWS_PROD",
                "--kind",
                "aws",
                "--field",
                "access_key_id=AKIACMD1",
                "--field-file",
                &key_arg,
                "--description",
                "prod account",
                "--tag",
                "prod",
            ],
        )
        .ok();
    not_printed(&out, PLANTED_KEY);
    assert_eq!(out.stdout.lines().count(), 1, "{out:?}");
    assert!(out.stdout.starts_with("created AWS_PROD (aws, version 1)"), "{out:?}");
    assert!(out.stdout.contains("AWS_ACCESS_KEY_ID") && out.stdout.contains("aws/credentials"));

    // add, JSON form: a SecretMeta.
    let out = broker.maestro_stdin(
        &me,
        &["secrets", "add", "API", "--kind", "generic", "--field-stdin", "API_TOKEN", "--json"],
        Some(PLANTED_TOKEN.as_bytes()),
    );
    let out = out.ok();
    not_printed(&out, PLANTED_TOKEN);
    let meta: SecretMeta = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!((meta.name.as_str(), meta.kind.as_str(), meta.version), ("API", "generic", 1));
    assert_eq!(meta.variables, ["API_TOKEN"]);

    // ls: a table with a header, and the JSON list.
    let out = broker.maestro(&me, &["secrets", "ls"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].contains("KIND"), "{out:?}");
    assert!(lines.iter().any(|l| l.starts_with("AWS_PROD") && l.contains("prod account")));
    assert!(lines.iter().any(|l| l.starts_with("API ") && l.contains("generic")));
    let list: Vec<SecretMeta> =
        serde_json::from_str(&broker.maestro(&me, &["secrets", "ls", "--json"]).ok().stdout)
            .unwrap();
    assert_eq!(list.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["API", "AWS_PROD"]);

    // show: metadata only.
    let out = broker.maestro(&me, &["secrets", "show", "AWS_PROD"]).ok();
    not_printed(&out, PLANTED_KEY);
    for want in [
        "name:",
        "AWS_PROD",
        "fields:",
        "secret_access_key",
        "variables:",
        "AWS_SECRET_ACCESS_KEY",
        "files:",
        "aws/credentials",
        "version:",
        "last used:",
        "never",
        "used by sessions:",
        "active in sessions:",
        "prod account",
    ] {
        assert!(out.stdout.contains(want), "show lacks {want}: {}", out.stdout);
    }
    let shown: SecretMeta = serde_json::from_str(
        &broker.maestro(&me, &["secrets", "show", "AWS_PROD", "--json"]).ok().stdout,
    )
    .unwrap();
    assert_eq!(shown.tags, ["prod"]);
    assert_eq!(shown.field_names, ["access_key_id", "region", "secret_access_key"]);

    // edit: text and JSON, each a new version.
    let out = broker.maestro(&me, &["secrets", "edit", "API", "--field", "EXTRA=x2"]).ok();
    assert!(out.stdout.starts_with("updated API to version 2"), "{out:?}");
    let edited: SecretMeta = serde_json::from_str(
        &broker
            .maestro(
                &me,
                &["secrets", "edit", "API", "--remove-field", "EXTRA", "--tag", "t1", "--json"],
            )
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!((edited.version, edited.field_names.clone()), (3, vec!["API_TOKEN".to_owned()]));
    assert_eq!(edited.tags, ["t1"]);
    let edited: SecretMeta = serde_json::from_str(
        &broker.maestro(&me, &["secrets", "edit", "API", "--clear-tags", "--json"]).ok().stdout,
    )
    .unwrap();
    assert!(edited.tags.is_empty());
    let edited: SecretMeta = serde_json::from_str(
        &broker
            .maestro(&me, &["secrets", "edit", "API", "--description", "the API", "--json"])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(edited.description.as_deref(), Some("the API"));

    // activate / deactivate, text and JSON, and their effect on show.
    let created = broker.maestro(&me, &["sessions", "create", "--json"]).ok();
    let created: SessionCreated = serde_json::from_str(&created.stdout).unwrap();
    let sid = created.session.id.clone();
    let out = broker.maestro(&me, &["secrets", "activate", "--session", &sid, "AWS_PROD"]).ok();
    assert_eq!(out.stdout, format!("activated AWS_PROD in session {sid}; active now: AWS_PROD\n"));
    let info: SessionInfo = serde_json::from_str(
        &broker
            .maestro(&me, &["secrets", "activate", "--session", &sid, "API", "--json"])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(info.active, ["API", "AWS_PROD"]);
    let shown: SecretMeta = serde_json::from_str(
        &broker.maestro(&me, &["secrets", "show", "API", "--json"]).ok().stdout,
    )
    .unwrap();
    assert_eq!(shown.active_in_sessions, std::slice::from_ref(&sid));
    let text = broker.maestro(&me, &["secrets", "show", "API"]).ok().stdout;
    assert!(
        text.lines().any(|l| l.starts_with("active in sessions:") && l.ends_with(&sid)),
        "{text}"
    );

    // Use by an agent shows up as last use, sessions that used it, and history.
    let agent = TestAgent::enroll(&broker, created.enrollment_token.expose()).await.unwrap();
    let material = agent.get("/v1/agent/secrets").await.unwrap().ok().to_string();
    assert!(material.contains(PLANTED_TOKEN) && material.contains(PLANTED_KEY));
    let shown: SecretMeta = serde_json::from_str(
        &broker.maestro(&me, &["secrets", "show", "API", "--json"]).ok().stdout,
    )
    .unwrap();
    assert!(shown.last_used_at.is_some(), "{shown:?}");
    assert_eq!(shown.used_by_sessions, std::slice::from_ref(&sid));
    let text = broker.maestro(&me, &["secrets", "show", "API"]).ok().stdout;
    assert!(!text.contains("never"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("used by sessions:") && l.ends_with(&sid)),
        "{text}"
    );

    let history: Vec<AuditEvent> = serde_json::from_str(
        &broker.maestro(&me, &["secrets", "history", "API", "--json"]).ok().stdout,
    )
    .unwrap();
    let actions: Vec<String> = history
        .iter()
        .map(|e| serde_json::to_value(e.action).unwrap().as_str().unwrap().to_owned())
        .collect();
    for want in ["created", "edited", "activated", "fetched"] {
        assert!(actions.iter().any(|a| a == want), "history lacks {want}: {actions:?}");
    }
    let out = broker.maestro(&me, &["secrets", "history", "API"]).ok();
    assert!(out.stdout.lines().next().unwrap().starts_with("SEQ"), "{out:?}");
    assert!(out.stdout.contains("fetched") && out.stdout.contains(&sid), "{out:?}");
    not_printed(&out, PLANTED_TOKEN);

    let out = broker.maestro(&me, &["secrets", "deactivate", "--session", &sid, "API"]).ok();
    assert_eq!(out.stdout, format!("deactivated API in session {sid}; active now: AWS_PROD\n"));
    let info: SessionInfo = serde_json::from_str(
        &broker
            .maestro(&me, &["secrets", "deactivate", "--session", &sid, "AWS_PROD", "--json"])
            .ok()
            .stdout,
    )
    .unwrap();
    assert!(info.active.is_empty());

    // rm: text and JSON.
    broker.maestro(&me, &["secrets", "activate", "--session", &sid, "API"]).ok();
    let out = broker.maestro(&me, &["secrets", "rm", "API"]).ok();
    assert_eq!(out.stdout, format!("deleted API\ndeactivated in sessions: {sid}\n"));
    let deleted: Deleted = serde_json::from_str(
        &broker.maestro(&me, &["secrets", "rm", "AWS_PROD", "--json"]).ok().stdout,
    )
    .unwrap();
    assert_eq!(deleted.name, "AWS_PROD");
    assert_eq!(broker.maestro(&me, &["secrets", "ls", "--json"]).ok().json(), json!([]));
    let out = broker.maestro(&me, &["secrets", "ls"]).ok();
    assert!(out.stdout.starts_with("no secrets"), "{out:?}");
    fails_with_one_line(&broker.maestro(&me, &["secrets", "show", "API"]), &["API"]);

    // Nothing planted reached the broker's log either.
    assert!(!broker.log().contains(PLANTED_KEY) && !broker.log().contains(PLANTED_TOKEN));
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_and_audit_text_and_json() {
    let broker = Broker::start();
    let me = broker.admin_token.clone();
    broker
        .maestro(&me, &["secrets", "add", "ONE", "--kind", "generic", "--field", "ONE_VAR=1"])
        .ok();

    let out = broker.maestro(&me, &["sessions", "ls"]).ok();
    assert!(out.stdout.starts_with("no sessions"), "{out:?}");

    // create: id then token; JSON holds the same parts as the broker's SessionCreated.
    let out = broker.maestro(&me, &["sessions", "create", "--label", "first"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    let first = lines[0].to_owned();
    let created: Value = broker.maestro(&me, &["sessions", "create", "--json"]).ok().json();
    let typed: SessionCreated = serde_json::from_value(created.clone()).unwrap();
    assert!(!typed.enrollment_token.is_empty() && typed.ca_pem.contains("BEGIN CERTIFICATE"));
    assert_eq!(typed.ca_pem, broker.ca_pem());
    let second = typed.session.id.clone();

    // ls: table and JSON.
    let out = broker.maestro(&me, &["sessions", "ls"]).ok();
    let table: Vec<&str> = out.stdout.lines().collect();
    assert!(table[0].starts_with("ID") && table[0].contains("STATE"), "{out:?}");
    assert!(
        table.iter().any(|l| l.starts_with(&first) && l.contains("live") && l.contains("first"))
    );
    let list: Vec<SessionInfo> =
        serde_json::from_str(&broker.maestro(&me, &["sessions", "ls", "--json"]).ok().stdout)
            .unwrap();
    let mut ids: Vec<&str> = list.iter().map(|s| s.id.as_str()).collect();
    ids.sort_unstable();
    let mut want = vec![first.as_str(), second.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);

    // show: state and active secrets, text and JSON.
    broker.maestro(&me, &["secrets", "activate", "--session", &first, "ONE"]).ok();
    let out = broker.maestro(&me, &["sessions", "show", &first]).ok();
    for want in
        ["id:", first.as_str(), "state:", "live", "label:", "first", "active secrets:", "ONE"]
    {
        assert!(out.stdout.contains(want), "show lacks {want}: {out:?}");
    }
    let info: SessionInfo = serde_json::from_str(
        &broker.maestro(&me, &["sessions", "show", &first, "--json"]).ok().stdout,
    )
    .unwrap();
    assert_eq!(
        (info.label.as_deref(), info.active.clone()),
        (Some("first"), vec!["ONE".to_owned()])
    );

    // end: text and JSON; an ended session shows why.
    let out = broker.maestro(&me, &["sessions", "end", &first]).ok();
    assert_eq!(out.stdout, format!("ended session {first}\n"));
    let ended: SessionInfo = serde_json::from_str(
        &broker.maestro(&me, &["sessions", "end", &second, "--json"]).ok().stdout,
    )
    .unwrap();
    assert_eq!(serde_json::to_value(ended.state).unwrap(), "ended");
    let out = broker.maestro(&me, &["sessions", "show", &first]).ok();
    assert!(out.stdout.lines().any(|l| l.starts_with("state:") && l.ends_with("ended")), "{out:?}");
    assert!(out.stdout.contains("ended because:"), "{out:?}");
    fails_with_one_line(
        &broker.maestro(&me, &["secrets", "activate", "--session", &first, "ONE"]),
        &["ended"],
    );

    // audit: the whole trail, filters, text and JSON.
    let trail: Vec<AuditEvent> =
        serde_json::from_str(&broker.maestro(&me, &["audit", "--json"]).ok().stdout).unwrap();
    let seqs: Vec<i64> = trail.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let actions: Vec<Value> =
        trail.iter().map(|e| serde_json::to_value(e.action).unwrap()).collect();
    for want in ["created", "session_created", "activated", "session_ended"] {
        assert!(actions.contains(&json!(want)), "audit lacks {want}: {actions:?}");
    }
    let only: Vec<AuditEvent> = serde_json::from_str(
        &broker.maestro(&me, &["audit", "--session", &second, "--json"]).ok().stdout,
    )
    .unwrap();
    assert!(!only.is_empty() && only.iter().all(|e| e.session.as_deref() == Some(second.as_str())));
    let only: Vec<AuditEvent> = serde_json::from_str(
        &broker.maestro(&me, &["audit", "--secret", "ONE", "--json"]).ok().stdout,
    )
    .unwrap();
    assert!(!only.is_empty() && only.iter().all(|e| e.secret.as_deref() == Some("ONE")));
    let out = broker.maestro(&me, &["audit"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("SEQ") && lines[0].contains("SECRET"), "{out:?}");
    assert_eq!(lines.len(), trail.len() + 1, "{out:?}");

    // Another user's audit trail is empty of all this.
    let bob = broker.add_user("bob");
    let theirs: Vec<AuditEvent> =
        serde_json::from_str(&broker.maestro(&bob, &["audit", "--json"]).ok().stdout).unwrap();
    assert!(theirs.iter().all(|e| e.secret.as_deref() != Some("ONE")), "{theirs:?}");
}

#[test]
fn kinds_needs_no_broker() {
    let tmp = temp_dir("maestro-cli-");
    // A URL where nothing listens: `kinds` reads the local catalog only.
    let nowhere = env(&[("MAESTRO_URL", "https://127.0.0.1:9")]);
    let out = run_env(tmp.path(), &nowhere, &["kinds"], None);
    assert_eq!(out.status, 0, "{out:?}");
    for kind in maestro_wire::catalog::KINDS {
        assert!(
            out.stdout.lines().any(|l| l.starts_with(kind.name)),
            "{} missing: {out:?}",
            kind.name
        );
    }
    assert!(out.stdout.contains("access_key_id*") && out.stdout.contains("region=us-east-1"));

    let out = run_env(tmp.path(), &nowhere, &["kinds", "--json"], None);
    let catalog: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(catalog, serde_json::to_value(maestro_wire::catalog::view()).unwrap());
    assert_eq!(keys(&catalog["kinds"], "name")[..2], ["generic", "aws"]);

    let out = run_env(tmp.path(), &nowhere, &["kinds", "aws"], None);
    assert!(out.stdout.contains("AWS_ACCESS_KEY_ID (field access_key_id)"), "{out:?}");
    assert!(out.stdout.contains("maestro-exec aws-credential-process"), "{out:?}");
    assert!(out.stdout.contains("create a new access key, then deactivate"), "{out:?}");
    assert_eq!(
        serde_json::to_value(&maestro_wire::catalog::kind("aws").unwrap().rotation).unwrap()["link"],
        "https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_access-keys.html#rotating_access_keys_console"
    );
    let one: Value = serde_json::from_str(
        &run_env(tmp.path(), &nowhere, &["kinds", "aws", "--json"], None).stdout,
    )
    .unwrap();
    assert_eq!(one["name"], "aws");
    fails_with_one_line(
        &run_env(tmp.path(), &nowhere, &["kinds", "nope"], None),
        &["unknown kind 'nope'"],
    );
}

/// Fields the catalog marks as not secret (region, host, port, user, database) are shown back by
/// `secrets show` and the API; the secret ones (password, keys) never are.
#[tokio::test(flavor = "multi_thread")]
async fn show_gives_back_the_fields_that_are_not_secret() {
    let broker = Broker::start();
    let me = broker.admin_token.clone();
    let password = "planted-pg-password-41ac";
    let pw_field = format!("password={password}");
    broker
        .maestro(
            &me,
            &[
                "secrets",
                "add",
                "PG",
                "--kind",
                "postgres",
                "--field",
                "host=db.internal",
                "--field",
                "user=app",
                "--field",
                &pw_field,
                "--field",
                "database=orders",
            ],
        )
        .ok();
    broker
        .maestro(
            &me,
            &[
                "secrets",
                "add",
                "AWS_EU",
                "--kind",
                "aws",
                "--field",
                "access_key_id=AKIASHOWN1",
                "--field",
                "secret_access_key=planted-shown-aws-key",
                "--field",
                "region=eu-west-3",
            ],
        )
        .ok();
    let out = broker.maestro(&me, &["secrets", "show", "PG"]).ok();
    assert!(
        out.stdout.contains("database=orders, host=db.internal, password, port=5432, user=app"),
        "{out:?}"
    );
    not_printed(&out, password);
    let json: SecretMeta = serde_json::from_str(
        &broker.maestro(&me, &["secrets", "show", "PG", "--json"]).ok().stdout,
    )
    .unwrap();
    let shown: Vec<&str> = json.shown_fields.keys().map(String::as_str).collect();
    assert_eq!(shown, ["database", "host", "port", "user"]);
    let out = broker.maestro(&me, &["secrets", "show", "AWS_EU"]).ok();
    assert!(out.stdout.contains("region=eu-west-3"), "{out:?}");
    assert!(out.stdout.contains("access_key_id, region=eu-west-3, secret_access_key"), "{out:?}");
    not_printed(&out, "planted-shown-aws-key");
    not_printed(&out, "AKIASHOWN1");
    // The listing carries them too (the web UI's edit form fills them in from it).
    let list = broker.maestro(&me, &["secrets", "ls", "--json"]).ok().stdout;
    assert!(list.contains("eu-west-3") && !list.contains(password), "{list}");
}
