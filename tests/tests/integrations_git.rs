//! git takes GitHub and GitLab tokens through `maestro-exec git-credential`, set up with the one
//! documented line, as the sandbox user:
//!
//! * `git credential fill` gets the github.com token (conventional username, the token as
//!   password) and nothing for another host, where git falls back to its own behaviour;
//! * the helper itself: silent for other hosts, for plain http, for store/erase, and when no
//!   agent runs;
//! * `git ls-remote` against a local HTTPS git server that demands basic auth (git's own
//!   `http-backend` behind `tests/support/git_https_server.py`) succeeds with a GitLab secret for
//!   that host, and fails before activation and after deactivation.
// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod integrations_support;

use std::process::Command;

use integrations_support::servers::GitServer;
use integrations_support::{World, clients_available, run_with_stdin};
use maestro_tests::agent::run_cmd;
use maestro_tests::broker::CmdOutput;
use maestro_tests::util::bin_dir;
use serde_json::json;

/// The documented line (docs/integrations.md), run as the sandbox user.
fn configure_helper(world: &World) {
    let mut cmd = world.command("git");
    cmd.args(["config", "--global", "credential.helper", "!maestro-exec git-credential"]);
    run_cmd(cmd).ok();
    let config = std::fs::read_to_string(world.home.join(".gitconfig")).unwrap();
    assert!(config.contains("helper = !maestro-exec git-credential"), "{config}");
}

/// git as the sandbox user, never prompting, without the machine's git configuration.
fn git(world: &World, args: &[&str]) -> Command {
    let mut cmd = world.command("git");
    cmd.args(args).env("GIT_TERMINAL_PROMPT", "0").env("GIT_CONFIG_NOSYSTEM", "1");
    cmd
}

fn fill(world: &World, protocol: &str, host: &str) -> CmdOutput {
    run_with_stdin(
        git(world, &["credential", "fill"]),
        &format!("protocol={protocol}\nhost={host}\n\n"),
    )
}

fn helper(world: &World, operation: &str, input: &str) -> CmdOutput {
    run_with_stdin(world.exec(&["git-credential", operation]), input)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_credential_fill_gets_the_github_token_and_nothing_for_other_hosts() {
    if !clients_available(&["git".as_ref()]) {
        return;
    }
    let world = World::new("git-fill");
    world.add("GH", "github", json!({"token": "ghp_plantedfill"})).await;
    configure_helper(&world);

    // Not active yet: git gets no answer and, unable to prompt, gives up.
    let out = fill(&world, "https", "github.com");
    assert_ne!(out.status, 0, "{out:?}");
    assert!(!out.stdout.contains("password="), "{out:?}");

    world.activate(&["GH"], &["GH"]).await;
    let out = fill(&world, "https", "github.com").ok();
    assert_eq!(
        out.stdout,
        "protocol=https\nhost=github.com\nusername=x-access-token\npassword=ghp_plantedfill\n"
    );
    for (protocol, host) in
        [("https", "example.com"), ("https", "gitlab.com"), ("http", "github.com")]
    {
        let out = fill(&world, protocol, host);
        assert_ne!(out.status, 0, "{protocol}://{host}: {out:?}");
        assert!(!out.stdout.contains("ghp_planted"), "{protocol}://{host}: {out:?}");
        assert!(!out.stderr.contains("ghp_planted"), "{out:?}");
    }

    // The helper alone: an answer only for its host; store and erase accepted in silence.
    let silent = |out: CmdOutput, what: &str| {
        assert_eq!((out.status, out.stdout.as_str(), out.stderr.as_str()), (0, "", ""), "{what}");
    };
    let out = helper(&world, "get", "protocol=https\nhost=github.com\npath=o/r.git\n\n").ok();
    assert_eq!(out.stdout, "username=x-access-token\npassword=ghp_plantedfill\n");
    silent(helper(&world, "get", "protocol=https\nhost=example.com\n\n"), "other host");
    silent(
        helper(&world, "store", "protocol=https\nhost=github.com\nusername=x\npassword=y\n\n"),
        "store",
    );
    silent(helper(&world, "erase", "protocol=https\nhost=github.com\n\n"), "erase");
    silent(helper(&world, "frobnicate", ""), "an operation of a later git");
    let out = helper(&world, "get", &"x".repeat(70 * 1024));
    assert_eq!((out.status, out.stdout.as_str()), (0, ""), "{out:?}");
    assert!(out.stderr.contains("longer than"), "{out:?}");

    // Outside a sandbox (no agent) the helper says nothing at all, and git carries on.
    let mut cmd = world.exec(&["git-credential", "get"]);
    cmd.env("MAESTRO_AGENT_SOCK", world.home.join("no-agent.sock"));
    silent(run_with_stdin(cmd, "protocol=https\nhost=github.com\n\n"), "no agent");
    let mut cmd = Command::new(bin_dir().join("maestro-exec"));
    cmd.arg("git-credential");
    let out = run_cmd(cmd);
    assert_eq!(out.status, 125);
    assert!(
        out.stderr
            .starts_with("maestro-exec: usage: maestro-exec git-credential <get|store|erase>")
    );

    world.deactivate(&["GH"], &[]).await;
    let out = fill(&world, "https", "github.com");
    assert_ne!(out.status, 0);
    assert!(!out.stdout.contains("ghp_planted"), "{out:?}");
    world.assert_no_leak(&["ghp_plantedfill"]);
    // Ordinary use: the unusual-usage rules stay quiet (issue 12).
    world.sb.assert_no_alerts();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_ls_remote_over_https_uses_the_helper_until_deactivated() {
    if !clients_available(&["git".as_ref(), "python3".as_ref()]) {
        return;
    }
    let token = "glpat-plantedremote";
    let server = GitServer::start("oauth2", token);
    let world = World::new("git-remote");
    world.add("GL_LOCAL", "gitlab", json!({"token": token, "host": server.host})).await;
    configure_helper(&world);
    let ls_remote = || {
        let mut cmd = git(&world, &["ls-remote", &server.url]);
        cmd.env("GIT_SSL_CAINFO", &server.ca_file);
        run_cmd(cmd)
    };

    // The server demands credentials: without the secret, git has none.
    let out = ls_remote();
    assert_ne!(out.status, 0, "{out:?}");
    assert!(server.log().contains("-> 401 (credentials sent: False)"), "{}", server.log());

    world.activate(&["GL_LOCAL"], &["GL_LOCAL"]).await;
    let out = ls_remote().ok();
    assert!(out.stdout.contains(&format!("{}\tHEAD\n", server.head)), "{out:?}");
    assert!(out.stdout.contains(&format!("{}\trefs/heads/main\n", server.head)), "{out:?}");
    assert!(server.log().contains("-> 200 (credentials sent: True)"), "{}", server.log());

    world.deactivate(&["GL_LOCAL"], &[]).await;
    let out = ls_remote();
    assert_ne!(out.status, 0, "{out:?}");
    assert!(!out.stdout.contains(&server.head), "{out:?}");
    assert!(!out.stderr.contains(token) && !out.stdout.contains(token), "{out:?}");
    assert!(!server.log().contains(token));
    world.assert_no_leak(&[token]);
}
