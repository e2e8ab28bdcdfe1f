//! The broker refreshes OAuth tokens, and fresh tokens reach a running sandbox, against a real
//! OAuth 2.0 server (`oauth2-mock-server`, see `oauth_support`) with a real agent on a FUSE
//! mount:
//!
//! * with a token lifetime of a few seconds, the agent shows at least two successive tokens
//!   after the first through the mounted file, `maestro-exec` and the git credential helper
//!   (with `password_expiry_utc`), all issued by the server, without any restart; every
//!   refresh used the rotated refresh token the previous one returned;
//! * a refused refresh (`invalid_grant`) marks the secret: `maestro secrets show` and
//!   `maestro-exec --list` say so with the command to run, and refreshing stops;
//!   `maestro oauth reconnect` repairs it, and refreshing resumes;
//! * deleting the secret revokes its tokens; no token is in any file under the data directory
//!   or in the broker's or the agent's log;
//! * two accounts connected through one provider, one given `owners`, are active together: the
//!   git helper answers each repository path with its account's token, and refreshes keep the
//!   owners.
// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod oauth_support;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use maestro_tests::agent::{
    Agent, AgentOptions, SANDBOX_UID, Sandbox, as_uid, fuse_available, wait_until,
};
use maestro_tests::util::bin;
use oauth_support::{
    OAuthServer, Pending, add_provider, assert_nowhere, browser, oauth_available, visit,
};
use serde_json::json;

/// Seconds each access token lives: refreshed at about 2/3 of that.
const LIFETIME: u64 = 4;
const DONE: Duration = Duration::from_secs(30);

/// The token as the mounted file shows it to the sandbox user.
fn from_file(agent: &Agent) -> Option<String> {
    let out = agent.run_as(SANDBOX_UID, "cat", &[agent.file("GH_TOKEN").to_str().unwrap()]);
    (out.status == 0).then(|| out.stdout.trim().to_owned())
}

/// The token in the environment of a command `maestro-exec` starts.
fn from_exec(agent: &Agent) -> Option<String> {
    let out = agent.exec_as(SANDBOX_UID, &["--no-mask", "printenv", "GH_TOKEN"]);
    (out.status == 0).then(|| out.stdout.trim().to_owned())
}

/// The git helper's answer for github.com: the password and its expiry.
fn from_git(agent: &Agent) -> Option<(String, i64)> {
    let mut cmd = as_uid(SANDBOX_UID, bin("maestro-exec"));
    cmd.args(["git-credential", "get"])
        .env("MAESTRO_AGENT_SOCK", &agent.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"protocol=https\nhost=github.com\n\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let value = |key: &str| text.lines().find_map(|l| l.strip_prefix(key).map(str::to_owned));
    assert_eq!(value("username=").as_deref(), Some("x-access-token"), "{text}");
    Some((value("password=")?, value("password_expiry_utc=")?.parse().unwrap()))
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn push_new(seen: &mut Vec<String>, token: Option<String>) {
    if let Some(t) = token.filter(|t| !t.is_empty())
        && seen.last() != Some(&t)
    {
        seen.push(t);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshed_tokens_reach_the_sandbox_and_a_refused_refresh_needs_reconnect() {
    if !oauth_available() || !fuse_available() {
        return;
    }
    let server = OAuthServer::start().await;
    server.configure(json!({"token_lifetime": LIFETIME})).await;
    let sb = Sandbox::new();
    let web = browser(&sb.broker);
    let revoke = server.endpoint("/revoke");
    add_provider(&sb.broker, &sb.token, &server, "gh", &["--revoke-url", &revoke]).ok();
    let pending =
        Pending::start(&sb.broker, &sb.token, &["oauth", "connect", "gh", "--name", "GH"]);
    assert_eq!(visit(&web, &pending.url()).await.status, 200);
    assert_eq!(pending.finish(DONE).0, 0);

    let (session, bundle) = sb.new_session("oauth-refresh");
    let mut agent = sb.start_agent(&bundle, AgentOptions::default());
    sb.api.activate(&session, &["GH"]).await.ok();
    assert!(wait_until(Duration::from_secs(2), || from_file(&agent).is_some()).is_some());
    let (agent_pid, broker_pid) = (agent.pid(), sb.broker.pid());

    // Three ways in, each must see the first token and at least two refreshed ones.
    let mut files = Vec::new();
    let mut execs = Vec::new();
    let mut gits = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while [&files, &execs, &gits].iter().any(|s| s.len() < 3) && Instant::now() < deadline {
        push_new(&mut files, from_file(&agent));
        push_new(&mut execs, from_exec(&agent));
        if let Some((password, expiry)) = from_git(&agent) {
            let t = now();
            assert!(
                expiry >= t - 2 && expiry <= t + LIFETIME as i64 + 2,
                "password_expiry_utc {expiry} is not within the token's life (now {t})"
            );
            push_new(&mut gits, Some(password));
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let issued = server.access_tokens().await;
    for (way, seen) in [("the file", &files), ("maestro-exec", &execs), ("the git helper", &gits)] {
        assert!(seen.len() >= 3, "{way} saw {} tokens in 60 s", seen.len());
        let order: Vec<usize> = seen
            .iter()
            .map(|t| {
                issued
                    .iter()
                    .position(|i| i == t)
                    .unwrap_or_else(|| panic!("{way} saw a token the server never issued"))
            })
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{way} saw tokens out of order: {order:?}");
    }
    assert!(agent.is_running() && agent.pid() == agent_pid, "the agent restarted");
    assert_eq!(sb.broker.pid(), broker_pid, "the broker restarted");
    let log = server.log().await;
    let refreshes: Vec<_> = log["token_requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["grant_type"] == "refresh_token")
        .collect();
    assert!(refreshes.len() >= 2, "{log}");
    assert!(
        refreshes.iter().all(|r| r["status"] == 200 && r["refresh_token_known"] == true),
        "every refresh used the rotated refresh token: {refreshes:?}"
    );
    let meta = sb.api.get("/v1/secrets/GH").await.ok();
    assert!(meta["version"].as_u64().unwrap() >= 3, "{meta}");
    assert!(meta["oauth"]["last_refresh_at"].is_string());
    let history = sb.api.get("/v1/secrets/GH/history").await.ok();
    assert!(history.as_array().unwrap().iter().any(|e| e["action"] == "refreshed"), "{history}");

    // The provider refuses the refresh token: re-authorization needed, shown where the user
    // and the sandbox look.
    server.configure(json!({"refuse_refresh": 1})).await;
    let shown = || sb.maestro(&["secrets", "show", "GH"]).ok().stdout;
    assert!(
        wait_until(Duration::from_secs(3 * LIFETIME), || shown().contains("needs reauth:"))
            .is_some(),
        "no re-authorization mark:\n{}",
        shown()
    );
    let text = shown();
    assert!(
        text.contains("invalid_grant") && text.contains("run `maestro oauth reconnect GH`"),
        "{text}"
    );
    let listed = || agent.exec_as(SANDBOX_UID, &["--list"]).stdout;
    assert!(
        wait_until(Duration::from_secs(2), || listed().contains("needs re-authorization:"))
            .is_some(),
        "{}",
        listed()
    );
    assert!(listed().contains("run `maestro oauth reconnect GH`"), "{}", listed());
    let meta = sb.api.get("/v1/secrets/GH").await.ok();
    assert_eq!(meta["oauth"]["needs_reauth"], true);
    let history = sb.api.get("/v1/secrets/GH/history").await.ok();
    assert!(history.to_string().contains("needs re-authorization"), "{history}");
    // Refreshing stopped: no more requests while it waits for the user.
    let before = server.log().await["token_requests"].as_array().unwrap().len();
    tokio::time::sleep(Duration::from_secs(LIFETIME + 1)).await;
    assert_eq!(server.log().await["token_requests"].as_array().unwrap().len(), before);

    // Reconnect repairs it; the sandbox gets the new token, and refreshing resumes.
    let pending = Pending::start(&sb.broker, &sb.token, &["oauth", "reconnect", "GH"]);
    assert_eq!(visit(&web, &pending.url()).await.status, 200);
    let (code, line, log) = pending.finish(DONE);
    assert_eq!(code, 0, "{log}");
    assert!(line.unwrap().starts_with("reconnected GH (provider gh, kind github, version "));
    assert!(!shown().contains("needs reauth"), "{}", shown());
    assert!(
        wait_until(Duration::from_secs(2), || !listed().contains("needs re-authorization"))
            .is_some(),
        "{}",
        listed()
    );
    let latest = server.access_tokens().await.last().unwrap().clone();
    assert!(
        wait_until(Duration::from_secs(2), || from_file(&agent).as_ref() == Some(&latest))
            .is_some()
    );
    assert!(
        wait_until(Duration::from_secs(3 * LIFETIME), || from_file(&agent)
            .is_some_and(|t| t != latest))
        .is_some(),
        "refreshing did not resume after the reconnect"
    );

    // Deleting revokes; nothing of any token is in the data directory or a log.
    let out = sb.maestro(&["secrets", "rm", "GH"]).ok();
    assert!(
        out.stdout.contains(&format!(
            "revocation: revoked the refresh token and access token at {revoke}"
        )),
        "{out:?}"
    );
    assert!(wait_until(Duration::from_secs(2), || from_file(&agent).is_none()).is_some());
    let planted = server.planted().await;
    assert_nowhere(
        &planted,
        sb.broker.data_dir(),
        &[("broker", sb.broker.log()), ("agent", agent.log())],
    );
    drop(agent);
}

/// The git helper's password for a github.com repository path (`None`: no answer).
fn git_for_path(agent: &Agent, path: &str) -> Option<String> {
    let mut cmd = as_uid(SANDBOX_UID, bin("maestro-exec"));
    cmd.args(["git-credential", "get"])
        .env("MAESTRO_AGENT_SOCK", &agent.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let input = format!("protocol=https\nhost=github.com\npath={path}\n\n");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().find_map(|l| l.strip_prefix("password=").map(str::to_owned))
}

/// Two accounts connected through one provider, active together: git gets each repository's
/// token by its owner, and refreshes keep the owners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_to_one_provider_answer_git_per_owner_across_refreshes() {
    if !oauth_available() || !fuse_available() {
        return;
    }
    let server = OAuthServer::start().await;
    server.configure(json!({"token_lifetime": LIFETIME})).await;
    let sb = Sandbox::new();
    let web = browser(&sb.broker);
    add_provider(&sb.broker, &sb.token, &server, "gh", &[]).ok();
    // Bad owners are refused before any authorization starts.
    let out = sb.maestro(&["oauth", "connect", "gh", "--name", "GH_WORK", "--owners", "a/../b"]);
    assert_eq!(out.status, 1, "{out:?}");
    assert!(out.stderr.starts_with("maestro: --owners has \"..\", which is no owner"), "{out:?}");
    assert!(server.log().await["token_requests"].as_array().unwrap().is_empty());
    // The work account through `connect --owners`, the default one without.
    let connect = [
        &["oauth", "connect", "gh", "--name", "GH_WORK", "--owners", "acme"][..],
        &["oauth", "connect", "gh", "--name", "GH"][..],
    ];
    for args in connect {
        let pending = Pending::start(&sb.broker, &sb.token, args);
        assert_eq!(visit(&web, &pending.url()).await.status, 200);
        let (code, _, log) = pending.finish(DONE);
        assert_eq!(code, 0, "{log}");
        if args.contains(&"--owners") {
            assert!(log.contains("owners of GH_WORK (version 2): acme; git gets it"), "{log}");
        }
    }
    let meta = sb.api.get("/v1/secrets/GH_WORK").await.ok();
    assert_eq!(meta["shown_fields"]["owners"], "acme", "{meta}");

    let (session, bundle) = sb.new_session("oauth-owners");
    let agent = sb.start_agent(&bundle, AgentOptions::default());
    sb.api.activate(&session, &["GH_WORK", "GH"]).await.ok();
    assert!(wait_until(Duration::from_secs(2), || from_file(&agent).is_some()).is_some());
    let work = git_for_path(&agent, "acme/app.git").expect("an answer for acme");
    let default = git_for_path(&agent, "alice/x.git").expect("an answer for alice");
    assert_ne!(work, default);
    // The default provides GH_TOKEN; the work account only answers git.
    assert_eq!(from_file(&agent).as_deref(), Some(default.as_str()));

    // Both refresh (tokens live 4 s); the work account keeps its owners and its repositories.
    let mut refreshed = None;
    wait_until(Duration::from_secs(20), || {
        refreshed = git_for_path(&agent, "acme/app.git").filter(|t| *t != work);
        refreshed.is_some()
    });
    let refreshed = refreshed.expect("the work account's token was refreshed");
    let issued = server.access_tokens().await;
    assert!(issued.contains(&refreshed), "a token the server never issued");
    let meta = sb.api.get("/v1/secrets/GH_WORK").await.ok();
    assert!(meta["version"].as_u64().unwrap() >= 3, "{meta}");
    assert_eq!(meta["shown_fields"]["owners"], "acme", "{meta}");
    let now_default = git_for_path(&agent, "acme-other/x.git").unwrap();
    assert_ne!(now_default, git_for_path(&agent, "acme/app.git").unwrap());
    let planted = server.planted().await;
    assert_nowhere(
        &planted,
        sb.broker.data_dir(),
        &[("broker", sb.broker.log()), ("agent", agent.log())],
    );
}
