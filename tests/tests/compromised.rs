//! Leak response (`maestro secrets compromised NAME`), with the real broker, agents, CLI and an
//! OAuth server (`oauth2-mock-server`, see `oauth_support`):
//!
//! * a secret active in two sessions with real agents is gone from both mounts (polled; the time
//!   is printed) and from both sockets, while the session's other secret stays;
//! * while compromised it cannot be activated (one line saying to edit it first), `secrets ls`
//!   and `secrets show` mark it, an edit of its metadata or with the same value keeps the mark,
//!   an edit with a new value clears it and it can be activated again;
//! * an unknown or malformed name is refused with nothing changed;
//! * the answer carries the kind's rotation steps (AWS: the IAM console steps and link) and says
//!   the value is not revocable by Maestro;
//! * an OAuth secret's refresh and access tokens are revoked at the provider (RFC 7009, checked
//!   by the server's log), a failing endpoint and a provider without one are said so;
//! * no planted value is in any output or log.
// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod oauth_support;

use std::path::Path;
use std::time::{Duration, Instant};

use maestro_tests::agent::{Agent, AgentOptions, SANDBOX_UID, Sandbox, fuse_available, wait_until};
use maestro_tests::broker::Broker;
use maestro_wire::api::{AuditAction, AuditEvent};
use oauth_support::{
    OAuthServer, Pending, add_provider, assert_nowhere, browser, oauth_available, visit,
};
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(5);
const DONE: Duration = Duration::from_secs(30);

const PLANTED: &str = "planted-leaked-token-5d1c9e";
const PLANTED_NEW: &str = "planted-rotated-token-77b2f0";
const PLANTED_OTHER: &str = "planted-other-token-0a4e11";

async fn audit(api: &maestro_tests::broker::Api) -> Vec<AuditEvent> {
    serde_json::from_value(api.get("/v1/audit").await.ok()).expect("audit records")
}

/// An agent of its own (mount and socket) for `bundle`, under `dir`.
fn agent_in(dir: &Path, bundle: &Path) -> Agent {
    let mount = dir.join("secrets");
    let socket = dir.join("run").join("agent.sock");
    Agent::start(bundle, &mount, &socket, AgentOptions::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compromised_secret_leaves_every_session_and_stays_off_until_it_has_a_new_value() {
    if !fuse_available() {
        return;
    }
    let sb = Sandbox::new();
    sb.api.add_generic("LEAKY", &[("LEAKY_TOKEN", PLANTED)]).await.ok();
    sb.api.add_generic("OTHER", &[("OTHER_TOKEN", PLANTED_OTHER)]).await.ok();
    let mut outputs = Vec::new();
    let mut agents = Vec::new();
    let mut sessions = Vec::new();
    for label in ["one", "two"] {
        let (session, bundle) = sb.new_session(label);
        let dir = sb.dir().join(label);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let agent = agent_in(&dir, &bundle);
        sb.api.activate(&session, &["LEAKY", "OTHER"]).await.ok();
        assert!(
            wait_until(WITHIN, || agent.file("LEAKY_TOKEN").exists()).is_some(),
            "activation did not reach the agent of {label}:\n{}",
            agent.log()
        );
        let read =
            agent.run_as(SANDBOX_UID, "cat", &[&agent.file("LEAKY_TOKEN").to_string_lossy()]).ok();
        assert_eq!(read.stdout.trim(), PLANTED);
        agents.push(agent);
        sessions.push(session);
    }
    // sessions[i] is agents[i]'s; the answer lists them sorted.
    let mut sorted = sessions.clone();
    sorted.sort();

    // The leak response: gone from both mounts and sockets, the other secret stays.
    let started = Instant::now();
    let out = sb.maestro(&["secrets", "compromised", "LEAKY"]).ok();
    let answered = started.elapsed();
    let gone = wait_until(WITHIN, || {
        agents.iter().all(|a| {
            !a.file("LEAKY_TOKEN").exists() && !a.listed_names().contains(&"LEAKY".to_owned())
        })
    });
    let gone = gone.unwrap_or_else(|| {
        panic!("the compromised secret is still served:\n{}\n{}", agents[0].log(), agents[1].log())
    });
    eprintln!(
        "compromised: the CLI answered in {:.1} ms; the secret was gone from both mounts {:.1} ms after that ({:.1} ms from the start of the command)",
        answered.as_secs_f64() * 1e3,
        gone.as_secs_f64() * 1e3,
        (answered + gone).as_secs_f64() * 1e3
    );
    for agent in &agents {
        assert_eq!(agent.listed_names(), ["OTHER"]);
        assert!(agent.file("OTHER_TOKEN").exists());
    }
    assert!(out.stdout.starts_with("marked LEAKY compromised at "), "{out:?}");
    for want in [
        format!("deactivated in sessions: {}\n", sorted.join(", ")),
        "revocation: not revocable by Maestro: rotate the value at the provider (steps below)\n"
            .to_owned(),
        "rotate it at the provider (generic): Issue a new value wherever this one came from, then revoke or delete the old one there\n".to_owned(),
        "then `maestro secrets edit LEAKY --field-file FIELD=PATH` with the new value".to_owned(),
    ] {
        assert!(out.stdout.contains(&want), "missing {want:?} in\n{}", out.stdout);
    }
    outputs.push(out.stdout.clone());
    let records = audit(&sb.api).await;
    let compromised: Vec<_> =
        records.iter().filter(|r| r.action == AuditAction::Compromised).collect();
    assert_eq!(compromised.len(), 1, "{records:?}");
    assert_eq!(compromised[0].secret.as_deref(), Some("LEAKY"));
    let deactivated = records
        .iter()
        .filter(|r| {
            r.action == AuditAction::Deactivated
                && r.detail.as_deref() == Some("secret compromised")
        })
        .count();
    assert_eq!(deactivated, 2, "{records:?}");

    // Refused while compromised, whatever the route; ls and show mark it.
    let refused = sb.maestro(&["secrets", "activate", "--session", &sessions[0], "LEAKY"]);
    assert_eq!(refused.status, 1, "{refused:?}");
    assert!(
        refused.stderr.starts_with("maestro: LEAKY was marked compromised at ")
            && refused.stderr.ends_with(
                ": edit it with a new value first (`maestro secrets edit LEAKY --field-file FIELD=PATH`); nothing was activated\n"
            )
            && refused.stderr.lines().count() == 1,
        "{refused:?}"
    );
    let both = sb.api.activate(&sessions[1], &["OTHER", "LEAKY"]).await;
    both.expect_error(409, "conflict");
    let ls = sb.maestro(&["secrets", "ls"]).ok();
    assert!(ls.stdout.contains("LEAKY (COMPROMISED)"), "{ls:?}");
    assert!(!ls.stdout.contains("OTHER (COMPROMISED)"), "{ls:?}");
    let show = sb.maestro(&["secrets", "show", "LEAKY"]).ok();
    assert!(show.stdout.contains("COMPROMISED"), "{show:?}");
    let shown = sb.api.get("/v1/secrets/LEAKY").await.ok();
    assert!(shown["compromised_at"].is_string(), "{shown}");
    assert!(sb.api.get("/v1/secrets/OTHER").await.ok().get("compromised_at").is_none());

    // Metadata, or the same value again, is not a new value: still compromised.
    sb.maestro(&["secrets", "edit", "LEAKY", "--description", "leaked in a commit"]).ok();
    let same = sb.dir().join("same.value");
    std::fs::write(&same, PLANTED).unwrap();
    sb.maestro(&[
        "secrets",
        "edit",
        "LEAKY",
        "--field-file",
        &format!("LEAKY_TOKEN={}", same.display()),
    ])
    .ok();
    let refused = sb.maestro(&["secrets", "activate", "--session", &sessions[0], "LEAKY"]);
    assert_eq!(refused.status, 1, "{refused:?}");
    assert!(sb.api.get("/v1/secrets/LEAKY").await.ok()["compromised_at"].is_string());

    // A new value clears the mark; it can be activated again and serves the new value.
    let fresh = sb.dir().join("new.value");
    std::fs::write(&fresh, PLANTED_NEW).unwrap();
    let edited = sb
        .maestro(&[
            "secrets",
            "edit",
            "LEAKY",
            "--field-file",
            &format!("LEAKY_TOKEN={}", fresh.display()),
        ])
        .ok();
    outputs.push(edited.stdout);
    assert!(sb.api.get("/v1/secrets/LEAKY").await.ok().get("compromised_at").is_none());
    assert!(!sb.maestro(&["secrets", "ls"]).ok().stdout.contains("COMPROMISED"));
    sb.maestro(&["secrets", "activate", "--session", &sessions[0], "LEAKY"]).ok();
    assert!(wait_until(WITHIN, || agents[0].file("LEAKY_TOKEN").exists()).is_some());
    let read = agents[0]
        .run_as(SANDBOX_UID, "cat", &[&agents[0].file("LEAKY_TOKEN").to_string_lossy()])
        .ok();
    assert_eq!(read.stdout.trim(), PLANTED_NEW);
    let edits: Vec<_> = audit(&sb.api)
        .await
        .into_iter()
        .filter(|r| r.action == AuditAction::Edited && r.secret.as_deref() == Some("LEAKY"))
        .filter_map(|r| r.detail)
        .collect();
    assert!(edits.last().unwrap().contains("no longer compromised"), "{edits:?}");
    assert!(!edits[0].contains("no longer compromised"), "{edits:?}");

    // Nothing of the values in any output or log.
    outputs.push(sb.broker.log());
    outputs.extend(agents.iter().map(Agent::log));
    for text in &outputs {
        for planted in [PLANTED, PLANTED_NEW, PLANTED_OTHER] {
            assert!(!text.contains(planted), "a value leaked into:\n{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compromised_prints_the_kinds_rotation_steps_and_refuses_unknown_names() {
    let broker = Broker::start();
    let token = broker.add_user("leak-tester");
    let api = broker.api(&token);
    api.post(
        "/v1/secrets",
        json!({"name": "AWS_PROD", "kind": "aws", "fields": {
            "access_key_id": "AKIAPLANTED0000LEAK",
            "secret_access_key": "planted-aws-secret-4b7d",
            "region": "eu-west-1"}}),
    )
    .await
    .ok();
    let before = audit(&api).await.len();

    // Unknown and malformed names: refused, nothing recorded.
    let unknown = broker.maestro(&token, &["secrets", "compromised", "NOPE"]);
    assert_eq!(unknown.status, 1, "{unknown:?}");
    assert_eq!(unknown.stderr, "maestro: no secret named NOPE; `maestro secrets ls` lists yours\n");
    let bad = broker.maestro(&token, &["secrets", "compromised", "not-a-name"]);
    assert_eq!(bad.status, 1, "{bad:?}");
    assert_eq!(bad.stderr.lines().count(), 1, "{bad:?}");
    api.post("/v1/secrets/NOPE/compromised", json!({})).await.expect_error(404, "not_found");
    assert_eq!(audit(&api).await.len(), before);
    assert!(api.get("/v1/secrets/AWS_PROD").await.ok().get("compromised_at").is_none());

    // The catalog's steps and link, in the CLI, the API answer and `maestro kinds aws`.
    let out = broker.maestro(&token, &["secrets", "compromised", "AWS_PROD"]).ok();
    assert!(out.stdout.contains("it was active in no session\n"), "{out:?}");
    assert!(out.stdout.contains("rotate it at the provider (aws): IAM console > Users > Security credentials: create a new access key, then deactivate and delete the old one\n"), "{out:?}");
    assert!(out.stdout.contains("  docs: https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_access-keys.html#rotating_access_keys_console\n"), "{out:?}");
    let again =
        broker.maestro(&token, &["secrets", "compromised", "AWS_PROD", "--json"]).ok().json();
    assert_eq!(again["kind"], "aws");
    assert_eq!(again["deactivated_in"], json!([]));
    assert!(again["rotation"]["steps"].as_str().unwrap().starts_with("IAM console"));
    assert!(
        again["rotation"]["link"].as_str().unwrap().starts_with("https://docs.aws.amazon.com/")
    );
    assert!(again["revocation"].as_str().unwrap().starts_with("not revocable by Maestro"));
    let kinds = broker.maestro(&token, &["kinds", "aws"]).ok();
    assert!(kinds.stdout.contains("IAM console > Users > Security credentials"), "{kinds:?}");
    // Marked twice: the first time stays.
    let first = api.get("/v1/secrets/AWS_PROD").await.ok()["compromised_at"].clone();
    assert_eq!(again["compromised_at"], first);
    for text in [&out.stdout, &broker.log()] {
        assert!(!text.contains("planted-aws-secret-4b7d") && !text.contains("AKIAPLANTED0000LEAK"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compromised_oauth_secret_is_revoked_at_the_provider() {
    if !oauth_available() {
        return;
    }
    let server = OAuthServer::start().await;
    let broker = Broker::start();
    let token = broker.add_user("oauth-leak");
    let api = broker.api(&token);
    let web = browser(&broker);
    let revoke = server.endpoint("/revoke");
    add_provider(&broker, &token, &server, "with-revoke", &["--revoke-url", &revoke]).ok();
    add_provider(&broker, &token, &server, "no-revoke", &[]).ok();
    for (provider, name) in [
        ("with-revoke", "GH_A"),
        ("with-revoke", "GH_B"),
        ("no-revoke", "GH_C"),
        ("with-revoke", "GH_D"),
    ] {
        let pending =
            Pending::start(&broker, &token, &["oauth", "connect", provider, "--name", name]);
        let url = pending.url();
        assert_eq!(visit(&web, &url).await.status, 200);
        assert_eq!(pending.finish(DONE).0, 0);
    }
    let (session, _) = api.new_session(json!({"label": "leak"})).await;
    api.activate(&session, &["GH_A"]).await.ok();
    let log = server.log().await;
    let refresh_a = log["issued"]["refresh_tokens"][0].as_str().unwrap().to_owned();
    let access_a = log["issued"]["access_tokens"][0].as_str().unwrap().to_owned();

    // RFC 7009 at the provider's endpoint, authenticated as the client: refresh then access.
    let out = broker.maestro(&token, &["secrets", "compromised", "GH_A"]).ok();
    assert!(
        out.stdout.contains(&format!(
            "revocation: revoked the refresh token and access token at {revoke}\n"
        )),
        "{out:?}"
    );
    assert!(out.stdout.contains(&format!("deactivated in sessions: {session}\n")), "{out:?}");
    assert!(
        out.stdout.contains("rotate it at the provider (github): GitHub > Settings"),
        "{out:?}"
    );
    let revocations = server.log().await["revocations"].clone();
    let revocations = revocations.as_array().unwrap();
    assert_eq!(revocations.len(), 2, "{revocations:?}");
    assert_eq!(revocations[0]["token"], refresh_a.as_str());
    assert_eq!(revocations[0]["token_type_hint"], "refresh_token");
    assert_eq!(revocations[1]["token"], access_a.as_str());
    assert_eq!(revocations[1]["token_type_hint"], "access_token");
    assert!(revocations.iter().all(|r| r["client_ok"] == true));
    let shown = api.get(&format!("/v1/sessions/{session}")).await.ok();
    assert_eq!(shown["active"], json!([]));

    // A failing endpoint: marked all the same, and the answer says what to do.
    server.configure(json!({"fail_revoke": 1})).await;
    let answer = api.post("/v1/secrets/GH_B/compromised", json!({})).await.ok();
    let text = answer["revocation"].as_str().unwrap();
    assert!(text.starts_with(&format!("revocation at {revoke} failed")), "{text}");
    assert!(api.get("/v1/secrets/GH_B").await.ok()["compromised_at"].is_string());

    // No endpoint (GitHub has none): said so.
    let out = broker.maestro(&token, &["secrets", "compromised", "GH_C"]).ok();
    assert!(
        out.stdout.contains("revocation: not revoked: GitHub has no RFC 7009 revocation endpoint"),
        "{out:?}"
    );

    // The grant ended with the refresh token (as at Google): the access token's `invalid_token`
    // that follows is no failure.
    server.configure(json!({"invalid_token_revoke": 1})).await;
    let answer = api.post("/v1/secrets/GH_D/compromised", json!({})).await.ok();
    assert_eq!(
        answer["revocation"].as_str().unwrap(),
        format!("revoked the refresh token and access token at {revoke}")
    );
    let last = server.log().await["revocations"].as_array().unwrap().last().cloned().unwrap();
    assert_eq!(
        (last["known_as"].as_str(), last["status"].as_i64()),
        (Some("access_token"), Some(400))
    );

    let planted = server.planted().await;
    assert_nowhere(
        &planted,
        broker.data_dir(),
        &[("broker", broker.log()), ("maestro", out.stdout)],
    );
}

/// Activations racing the leak response: whatever order they land in, once `compromised` has
/// answered the secret is active nowhere (an activation before it is undone, one after it is
/// refused); a name too long for a secret is refused before anything is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activations_racing_compromised_leave_the_secret_active_nowhere() {
    let broker = Broker::start();
    let token = broker.add_user("leak-racer");
    let api = broker.api(&token);
    api.add_generic("RACE", &[("RACE_TOKEN", "planted-race-token-8c2d")]).await.ok();
    let mut sessions = Vec::new();
    for n in 0..4 {
        sessions.push(api.new_session(json!({"label": format!("race-{n}")})).await.0);
    }
    // Each racer activates in its session over and over (a repeat is a no-op) until refused.
    let mut racers = Vec::new();
    for session in &sessions {
        let (api, session) = (api.clone(), session.clone());
        racers.push(tokio::spawn(async move {
            for accepted in 0..200 {
                let r = api.activate(&session, &["RACE"]).await;
                if r.status == 409 {
                    assert_eq!(r.code(), "conflict", "{r:?}");
                    return accepted;
                }
                assert_eq!(r.status, 200, "{r:?}");
            }
            panic!("activations were never refused");
        }));
    }
    // The mark lands while activations are arriving: once the secret is active somewhere.
    let deadline = Instant::now() + WITHIN;
    while api.get("/v1/secrets/RACE").await.ok()["active_in_sessions"] == json!([]) {
        assert!(Instant::now() < deadline, "no activation went through");
    }
    let marked = api.post("/v1/secrets/RACE/compromised", json!({})).await.ok();
    let mut accepted = 0;
    for racer in racers {
        accepted += racer.await.unwrap();
    }
    eprintln!(
        "race: {accepted} activations accepted before the mark, every racer refused after it; deactivated in {} sessions",
        marked["deactivated_in"].as_array().unwrap().len()
    );
    assert!(!marked["deactivated_in"].as_array().unwrap().is_empty(), "{marked}");
    // Activations that answered after the mark were refused; none is left active.
    let meta = api.get("/v1/secrets/RACE").await.ok();
    assert_eq!(meta["active_in_sessions"], json!([]), "{meta}");
    for session in &sessions {
        let info = api.get(&format!("/v1/sessions/{session}")).await.ok();
        assert_eq!(info["active"], json!([]), "{info}");
    }
    api.activate(&sessions[0], &["RACE"]).await.expect_error(409, "conflict");

    // Forged names: too long, or not a secret name at all.
    let long = "A".repeat(300);
    api.post(&format!("/v1/secrets/{long}/compromised"), json!({}))
        .await
        .expect_error(400, "invalid_name");
    api.post("/v1/secrets/..%2Fx/compromised", json!({})).await.expect_error(400, "invalid_name");
    assert!(!broker.log().contains("planted-race-token-8c2d"));
}
