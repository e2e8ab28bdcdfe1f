//! Sealed secrets outside the agent, with the real broker, CLI and (for OAuth) a real OAuth
//! server: a secret's exposure and hosts set with `maestro secrets add/edit`, checked against
//! the catalog (kinds that cannot be sealed, hosts wider than a kind's, malformed or oversized
//! host lists are refused with one line and change nothing), shown by `secrets ls/show` and
//! `kinds`, delivered to the agent in its material, and the agent's `substituted` and
//! `leak_attempt` reports shown by `secrets history` and `maestro audit`.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli_support;
mod oauth_support;

use std::time::Duration;

use cli_support::{fails_with_one_line, ls_snapshot, not_printed};
use maestro_tests::broker::{Broker, TestAgent};
use maestro_tests::util::temp_dir;
use maestro_wire::api::{AuditEvent, SecretMeta};
use maestro_wire::catalog::seal::Exposure;
use oauth_support::{OAuthServer, Pending, add_provider, browser, oauth_available, visit};
use serde_json::{Value, json};

const PLANTED_KEY: &str = "sk-planted0sealed0cli0key0a1b2c3d4e5f6";
const PLANTED_AWS: &str = "planted/sealed+aws+secret+key+0123456789";

/// `secrets show NAME --json`.
fn meta(broker: &Broker, token: &str, name: &str) -> SecretMeta {
    serde_json::from_str(&broker.maestro(token, &["secrets", "show", name, "--json"]).ok().stdout)
        .unwrap()
}

/// Creates a session, activates `names`, enrolls a test agent and returns its material, by
/// secret name: `(exposure, hosts)`.
async fn material(broker: &Broker, token: &str, names: &[&str]) -> Vec<(String, Value, Value)> {
    let out = broker.maestro(token, &["sessions", "create", "--ttl", "10m"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    let mut args = vec!["secrets", "activate", "--session", lines[0]];
    args.extend_from_slice(names);
    broker.maestro(token, &args).ok();
    let agent = TestAgent::enroll(broker, lines[1]).await.unwrap();
    let set = agent.get("/v1/agent/secrets").await.unwrap().ok();
    set["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (s["name"].as_str().unwrap().to_owned(), s["exposure"].clone(), s["hosts"].clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn what_cannot_be_sealed_and_hosts_that_widen_are_refused_and_nothing_is_stored() {
    let broker = Broker::start();
    let me = broker.admin_token.clone();
    let tmp = temp_dir("maestro-sealed-");
    let gcp = tmp.path().join("gcp.json");
    std::fs::write(
        &gcp,
        json!({
            "type": "service_account", "project_id": "proj-1", "private_key_id": "k1",
            "client_email": "ci@proj-1.iam.gserviceaccount.com", "client_id": "1",
            "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n",
            "token_uri": "https://oauth2.googleapis.com/token"
        })
        .to_string(),
    )
    .unwrap();
    let gcp_arg = format!("service_account_json={}", gcp.display());
    let before = ls_snapshot(&broker, &me);

    // Kinds that cannot be sealed: the catalog's reason, on one line.
    let add = |args: &[&str]| {
        let mut all = vec!["secrets", "add", "X"];
        all.extend_from_slice(args);
        broker.maestro(&me, &all)
    };
    let out = add(&["--kind", "gcp", "--field-file", &gcp_arg, "--exposure", "sealed"]);
    fails_with_one_line(&out, &["a gcp secret cannot be sealed: "]);
    let out = add(&[
        "--kind",
        "mongodb",
        "--field",
        "uri=mongodb://u:p@db.example.com/x",
        "--exposure",
        "sealed",
    ]);
    fails_with_one_line(&out, &["a mongodb secret cannot be sealed: "]);
    let out = add(&[
        "--kind",
        "postgres",
        "--field",
        "host=db.example.com",
        "--field",
        "user=u",
        "--field",
        "password=p",
        "--exposure",
        "sealed",
        "--allow-host",
        "db.example.com",
    ]);
    // A sealed login goes to its host field's server only (the agent's relay); no --allow-host.
    fails_with_one_line(
        &out,
        &["a sealed postgres secret takes where it may be used from its host field"],
    );

    // A sealed generic secret must name its hosts.
    let generic = ["--kind", "generic", "--field", "API_KEY=v-123", "--exposure", "sealed"];
    fails_with_one_line(&add(&generic), &["needs the hosts", "--allow-host HOST"]);

    // Hosts that widen a kind's defaults, or are not host patterns.
    let aws = [
        "--kind",
        "aws",
        "--field",
        "access_key_id=AKIAIOSFODNN7EXAMPLE",
        "--field",
        &format!("secret_access_key={PLANTED_AWS}"),
        "--exposure",
        "sealed",
    ];
    for (host, text) in [
        ("evil.example.com", "host 'evil.example.com' is not one a aws secret may be sent to"),
        ("amazonaws.com", "is not one a aws secret may be sent to"),
        ("*.com", "'*.com' is not a host pattern"),
        ("https://s3.amazonaws.com/", "is not a host pattern"),
        ("s3.amazonaws.com:443", "is not a host pattern"),
    ] {
        let mut args = aws.to_vec();
        args.extend_from_slice(&["--allow-host", host]);
        let out = add(&args);
        fails_with_one_line(&out, &[text]);
        not_printed(&out, PLANTED_AWS);
    }
    let long = format!("{}.example.com", "a".repeat(300));
    let mut args = generic.to_vec();
    args.extend_from_slice(&["--allow-host", &long]);
    fails_with_one_line(&add(&args), &["is not a host pattern"]);
    let mut args = generic.to_vec();
    for _ in 0..1000 {
        args.extend_from_slice(&["--allow-host", "api.example.com"]);
    }
    fails_with_one_line(&add(&args), &["at most 32 hosts; this one names 1000"]);
    // Hosts for a plain secret, and an exposure that does not exist.
    let out =
        add(&["--kind", "generic", "--field", "API_KEY=v", "--allow-host", "api.example.com"]);
    fails_with_one_line(&out, &["--exposure sealed"]);
    let out = add(&["--kind", "generic", "--field", "API_KEY=v", "--exposure", "open"]);
    fails_with_one_line(&out, &["invalid --exposure 'open': use plain or sealed"]);

    // Nothing was stored, and the trail holds no record of any of it.
    assert_eq!(ls_snapshot(&broker, &me), before);
    let trail: Vec<AuditEvent> =
        serde_json::from_str(&broker.maestro(&me, &["audit", "--json"]).ok().stdout).unwrap();
    assert!(trail.is_empty(), "{trail:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn exposure_and_hosts_are_set_shown_edited_and_reach_the_agent() {
    let broker = Broker::start();
    let me = broker.admin_token.clone();

    // add --exposure sealed: the kind's defaults, shown in the one line.
    let out = broker.maestro_stdin(
        &me,
        &[
            "secrets",
            "add",
            "OPENAI",
            "--kind",
            "openai",
            "--field-stdin",
            "api_key",
            "--exposure",
            "sealed",
        ],
        Some(PLANTED_KEY.as_bytes()),
    );
    let out = out.ok();
    not_printed(&out, PLANTED_KEY);
    assert!(
        out.stdout.starts_with("created OPENAI (openai, version 1, sealed to api.openai.com)"),
        "{out:?}"
    );
    let out = broker
        .maestro(
            &me,
            &[
                "secrets",
                "add",
                "AWS",
                "--kind",
                "aws",
                "--field",
                "access_key_id=AKIAIOSFODNN7EXAMPLE",
                "--field",
                &format!("secret_access_key={PLANTED_AWS}"),
                "--exposure",
                "sealed",
                "--allow-host",
                "STS.amazonaws.com",
                "--allow-host",
                "*.s3.amazonaws.com",
            ],
        )
        .ok();
    assert!(out.stdout.contains("sealed to sts.amazonaws.com, *.s3.amazonaws.com"), "{out:?}");
    broker
        .maestro(
            &me,
            &[
                "secrets",
                "add",
                "API",
                "--kind",
                "generic",
                "--field",
                "API_TOKEN=v-0123456789",
                "--exposure",
                "sealed",
                "--allow-host",
                "api.example.com",
            ],
        )
        .ok();
    broker.maestro(&me, &["secrets", "add", "PLAIN", "--kind", "generic", "--field", "P=v"]).ok();

    // ls: an EXPOSURE column.
    let out = broker.maestro(&me, &["secrets", "ls"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].contains("EXPOSURE"), "{out:?}");
    let row = |name: &str| lines.iter().find(|l| l.starts_with(&format!("{name} "))).unwrap();
    assert!(row("OPENAI").contains("sealed") && row("PLAIN").contains("plain"), "{out:?}");

    // show: the exposure and the effective hosts, the kind's defaults said as such.
    let out = broker.maestro(&me, &["secrets", "show", "OPENAI"]).ok();
    assert!(out.stdout.contains("sealed"), "{out:?}");
    assert!(out.stdout.contains("api.openai.com (the kind's defaults)"), "{out:?}");
    let out = broker.maestro(&me, &["secrets", "show", "AWS"]).ok();
    assert!(out.stdout.contains("sts.amazonaws.com, *.s3.amazonaws.com"), "{out:?}");
    assert!(!out.stdout.contains("defaults"), "{out:?}");
    not_printed(&out, PLANTED_AWS);
    let aws = meta(&broker, &me, "AWS");
    assert_eq!((aws.exposure, aws.version), (Exposure::Sealed, 1));
    assert_eq!(aws.user_hosts, ["sts.amazonaws.com", "*.s3.amazonaws.com"]);

    // The agent's material carries them.
    let got = material(&broker, &me, &["OPENAI", "AWS", "API", "PLAIN"]).await;
    assert_eq!(
        got,
        [
            ("API".to_owned(), json!("sealed"), json!(["api.example.com"])),
            ("AWS".to_owned(), json!("sealed"), json!(["sts.amazonaws.com", "*.s3.amazonaws.com"])),
            ("OPENAI".to_owned(), json!("sealed"), json!(["api.openai.com"])),
            ("PLAIN".to_owned(), json!("plain"), Value::Null),
        ]
    );

    // A refused edit leaves the secret and its version as they were.
    let before = broker.maestro(&me, &["secrets", "show", "AWS", "--json"]).ok().stdout;
    for (args, text) in [
        (vec!["--allow-host", "evil.example.com"], "evil.example.com"),
        (vec!["--allow-host", "*.com"], "is not a host pattern"),
        (vec!["--kind", "gcp", "--field", "service_account_json=x"], "service_account_json"),
        (
            vec!["--kind", "openai", "--field", "api_key=sk-abcdefghijklmnopqrstuvwxyz"],
            "sts.amazonaws.com",
        ),
    ] {
        let mut all = vec!["secrets", "edit", "AWS"];
        all.extend_from_slice(&args);
        fails_with_one_line(&broker.maestro(&me, &all), &[text]);
    }
    assert_eq!(broker.maestro(&me, &["secrets", "show", "AWS", "--json"]).ok().stdout, before);
    let out = broker.maestro(&me, &["secrets", "edit", "PLAIN", "--allow-host", "api.example.com"]);
    fails_with_one_line(&out, &["--exposure sealed"]);

    // --allow-host replaces, --default-hosts goes back, --exposure plain drops them.
    let out = broker.maestro(&me, &["secrets", "edit", "AWS", "--allow-host", "s3.amazonaws.com"]);
    assert!(
        out.ok().stdout.starts_with("updated AWS to version 2 (aws, sealed to s3.amazonaws.com)")
    );
    let out = broker.maestro(&me, &["secrets", "edit", "AWS", "--default-hosts"]).ok();
    assert!(out.stdout.contains("version 3 (aws, sealed to *.amazonaws.com)"), "{out:?}");
    let out = broker.maestro(&me, &["secrets", "edit", "AWS", "--exposure", "plain"]).ok();
    assert!(out.stdout.starts_with("updated AWS to version 4 (aws): "), "{out:?}");
    let aws = meta(&broker, &me, "AWS");
    assert_eq!((aws.exposure, aws.hosts.len(), aws.user_hosts.len()), (Exposure::Plain, 0, 0));
    let out = broker.maestro(&me, &["secrets", "edit", "PLAIN", "--exposure", "sealed"]);
    fails_with_one_line(&out, &["--allow-host HOST"]);
    let out = broker
        .maestro(
            &me,
            &["secrets", "edit", "PLAIN", "--exposure", "sealed", "--allow-host", "x.example.com"],
        )
        .ok();
    assert!(out.stdout.contains("sealed to x.example.com"), "{out:?}");
    // The history says what changed.
    let out = broker.maestro(&me, &["secrets", "history", "AWS"]).ok();
    for want in ["hosts s3.amazonaws.com", "hosts: the kind's defaults", "exposure plain"] {
        assert!(out.stdout.contains(want), "{want}: {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kinds_say_which_can_be_sealed_where_to_and_why_not() {
    let broker = Broker::start();
    let me = broker.admin_token.clone();
    let out = broker.maestro(&me, &["kinds"]).ok();
    assert!(out.stdout.lines().next().unwrap().contains("SEALED TO"), "{out:?}");
    let line = |k: &str| out.stdout.lines().find(|l| l.starts_with(&format!("{k} "))).unwrap();
    assert!(line("anthropic").contains("api.anthropic.com"), "{out:?}");
    assert!(line("gcp").contains(" - "), "{out:?}");
    let out = broker.maestro(&me, &["kinds", "mongodb"]).ok();
    assert!(out.stdout.contains("sealed:") && out.stdout.contains("no: "), "{out:?}");
    let out = broker.maestro(&me, &["kinds", "github"]).ok();
    assert!(out.stdout.contains("default hosts:") && out.stdout.contains("api.github.com"));
    assert!(out.stdout.contains("substituted in:"), "{out:?}");
    let all: Value =
        serde_json::from_str(&broker.maestro(&me, &["kinds", "--json"]).ok().stdout).unwrap();
    for kind in all["kinds"].as_array().unwrap() {
        let sealing = &kind["sealing"];
        match sealing["sealing"].as_str().unwrap() {
            "unsupported" => assert!(!sealing["why"].as_str().unwrap().is_empty(), "{kind}"),
            "swap" | "sig_v4" => assert!(sealing["substituted_in"].is_string(), "{kind}"),
            // Served by the agent itself (an ssh-agent socket): what it serves, what it hides.
            "agent" => {
                assert!(sealing["served"].is_string(), "{kind}");
                assert!(!sealing["hidden"].as_array().unwrap().is_empty(), "{kind}");
            }
            other => panic!("unknown sealing {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn substitutions_and_leak_attempts_are_shown_by_history_and_audit() {
    let broker = Broker::start();
    let me = broker.admin_token.clone();
    broker
        .maestro(
            &me,
            &[
                "secrets",
                "add",
                "KEY",
                "--kind",
                "generic",
                "--field",
                "API_KEY=v-0123456789ab",
                "--exposure",
                "sealed",
                "--allow-host",
                "api.example.com",
            ],
        )
        .ok();
    let out = broker.maestro(&me, &["sessions", "create", "--ttl", "10m"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    broker.maestro(&me, &["secrets", "activate", "--session", lines[0], "KEY"]).ok();
    let agent = TestAgent::enroll(&broker, lines[1]).await.unwrap();
    let set = agent.get("/v1/agent/secrets").await.unwrap().ok();
    assert_eq!(set["secrets"][0]["hosts"], json!(["api.example.com"]));
    let at = set["secrets"][0]["version"].clone();
    assert_eq!(at, 1);
    let now = broker.api(&me).get(&format!("/v1/sessions/{}", lines[0])).await.ok();
    let when = now["created_at"].as_str().unwrap().to_owned();
    let reports = json!({"reports": [
        {"secret": "KEY", "action": "substituted", "at": when, "pid": 4242, "uid": 1000,
         "command": "curl", "detail": "GET api.example.com/v1/models"},
        {"secret": "KEY", "action": "leak_attempt", "at": when, "pid": 4343, "uid": 1000,
         "command": "python3", "detail": "POST evil.example.net/collect"}
    ]});
    let r = agent.post("/v1/agent/usage", reports).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");

    let out = broker.maestro(&me, &["secrets", "history", "KEY"]).ok();
    let sub = out.stdout.lines().find(|l| l.contains("substituted")).expect("a substituted row");
    assert!(sub.contains("4242") && sub.contains("curl"), "{out:?}");
    assert!(sub.contains("GET api.example.com/v1/models"), "{out:?}");
    let leak = out.stdout.lines().find(|l| l.contains("leak_attempt")).expect("a leak row");
    assert!(leak.contains("POST evil.example.net/collect") && leak.contains("python3"));
    let out = broker.maestro(&me, &["audit", "--secret", "KEY"]).ok();
    assert!(out.stdout.contains("leak_attempt") && out.stdout.contains("substituted"), "{out:?}");
    let trail: Vec<AuditEvent> =
        serde_json::from_str(&broker.maestro(&me, &["audit", "--json"]).ok().stdout).unwrap();
    let leak = trail.iter().find(|e| e.detail.as_deref() == Some("POST evil.example.net/collect"));
    assert_eq!(leak.map(|e| (e.pid, e.session.as_deref())), Some((Some(4343), Some(lines[0]))));
}

/// A secret made by `maestro oauth connect` (GitHub preset) is sealed with `secrets edit`, and
/// stays sealed across a token refresh (a new version made by the broker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth_secret_is_sealed_with_edit_and_stays_sealed_across_a_refresh() {
    if !oauth_available() {
        return;
    }
    let server = OAuthServer::start().await;
    let broker = Broker::start();
    let token = broker.add_user("oauth-sealer");
    add_provider(&broker, &token, &server, "gh", &[]).ok();
    let pending = Pending::start(&broker, &token, &["oauth", "connect", "gh", "--name", "GH"]);
    assert_eq!(visit(&browser(&broker), &pending.url()).await.status, 200);
    assert_eq!(pending.finish(Duration::from_secs(30)).0, 0);
    assert_eq!(meta(&broker, &token, "GH").exposure, Exposure::Plain);

    let out = broker.maestro(&token, &["secrets", "edit", "GH", "--exposure", "sealed"]).ok();
    assert!(
        out.stdout.contains("sealed to github.com, api.github.com, uploads.github.com"),
        "{out:?}"
    );
    let out =
        broker.maestro(&token, &["secrets", "edit", "GH", "--allow-host", "api.github.com"]).ok();
    assert!(out.stdout.contains("version 3 (github, sealed to api.github.com)"), "{out:?}");
    broker.maestro(&token, &["oauth", "refresh", "GH"]).ok();
    let gh = meta(&broker, &token, "GH");
    assert_eq!((gh.version, gh.exposure), (4, Exposure::Sealed));
    assert_eq!(gh.hosts, ["api.github.com"]);
    assert!(gh.oauth.is_some());
}
