//! git takes GitHub and GitLab tokens through `maestro-exec git-credential`, set up with the one
//! documented line, as the sandbox user:
//!
//! * `git credential fill` gets the github.com token (conventional username, the token as
//!   password) and nothing for another host, where git falls back to its own behaviour;
//! * the helper itself: silent for other hosts, for plain http, for store/erase, and when no
//!   agent runs;
//! * `git ls-remote` against a local HTTPS git server that demands basic auth (git's own
//!   `http-backend` behind `tests/support/git_https_server.py`) succeeds with a GitLab secret for
//!   that host, and fails before activation and after deactivation;
//! * several accounts on one host: two GitHub secrets with `owners` (one added with the CLI's
//!   `--owners`) and a default one are active together, `git credential fill` answers per
//!   owner (by the path git sends with `useHttpPath`, which maestro-exec sets), the default
//!   takes the other owners, and what cannot be told (no path, odd paths, an owner nobody
//!   serves) gets no answer and one clear line; a sealed account answers with its
//!   placeholder; and `git clone` of two owners' repositories on
//!   one local server, each with its own token.
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

/// `git credential fill` for a github.com path, through maestro-exec (which makes git send
/// the path) or as plain git (which, without `useHttpPath`, drops it).
fn fill_path(world: &World, via_exec: bool, path: &str) -> CmdOutput {
    let input = format!("protocol=https\nhost=github.com\npath={path}\n\n");
    let mut cmd = if via_exec {
        world.exec(&["--no-mask", "git", "credential", "fill"])
    } else {
        world.command("git")
    };
    if !via_exec {
        cmd.args(["credential", "fill"]);
    }
    cmd.env("GIT_TERMINAL_PROMPT", "0").env("GIT_CONFIG_NOSYSTEM", "1");
    run_with_stdin(cmd, &input)
}

/// The password of a successful `git credential fill`.
fn password(out: &CmdOutput) -> &str {
    assert_eq!(out.status, 0, "{out:?}");
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("password="))
        .unwrap_or_else(|| panic!("no password: {out:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_github_accounts_answer_git_per_owner() {
    if !clients_available(&["git".as_ref()]) {
        return;
    }
    let (alice, bob, default) = ("ghp_plantedalice", "ghp_plantedbob", "ghp_planteddefault");
    let world = World::new("git-owners");
    world.add("GH_ALICE", "github", json!({"token": alice, "owners": "alice"})).await;
    // The CLI's --owners: checked before anything is sent, then the `owners` field.
    let out = world.sb.maestro(&[
        "secrets",
        "add",
        "GH_BOB",
        "--kind",
        "github",
        "--field",
        &format!("token={bob}"),
        "--owners",
        "bob,../x",
    ]);
    assert_eq!(out.status, 1, "{out:?}");
    assert!(out.stderr.contains("--owners has \"..\", which is no owner"), "{out:?}");
    assert!(!out.stderr.contains(bob), "{out:?}");
    world
        .sb
        .maestro(&[
            "secrets",
            "add",
            "GH_BOB",
            "--kind",
            "github",
            "--field",
            &format!("token={bob}"),
            "--owners",
            "Bob, acme/infra",
        ])
        .ok();
    let shown = world.sb.maestro(&["secrets", "show", "GH_BOB"]).ok();
    assert!(shown.stdout.contains("owners=Bob, acme/infra"), "{shown:?}");
    // The broker checks them too.
    let reply = world
        .sb
        .api
        .post(
            "/v1/secrets",
            json!({"name": "GH_BAD", "kind": "github",
                   "fields": {"token": "ghp_x", "owners": "a/%2e%2e"}}),
        )
        .await;
    let message = reply.expect_error(400, "invalid_field");
    assert!(message.contains("owners"), "{message}");
    world.add("GH", "github", json!({"token": default})).await;
    configure_helper(&world);

    // Two accounts and the default, active together: only the default sets GH_TOKEN.
    world.activate(&["GH_ALICE", "GH_BOB", "GH"], &["GH_ALICE", "GH_BOB", "GH"]).await;
    let list = run_cmd(world.exec(&["--list"])).ok();
    assert!(list.stdout.contains("GH_ALICE (github, version 1)\n  variables: \n"), "{list:?}");
    assert!(
        list.stdout.contains("  owners:    Bob, acme/infra (git gets it for these"),
        "{list:?}"
    );
    assert!(list.stdout.contains("GH (github, version 1)\n  variables: GH_TOKEN GITHUB_TOKEN\n"));
    let env = run_cmd(world.exec(&[
        "--no-mask",
        "sh",
        "-c",
        "echo $GH_TOKEN; env | grep -c ^GIT_CONFIG_",
    ]))
    .ok();
    assert_eq!(env.stdout, format!("{default}\n3\n"), "{env:?}");
    assert_eq!(std::fs::read_to_string(world.mounted("GH_TOKEN")).unwrap(), default);

    // Per owner, by the path maestro-exec makes git send; owners are case-insensitive; the
    // longest prefix wins; other owners get the default.
    for (path, want) in [
        ("alice/repo.git", alice),
        ("ALICE/Repo.git", alice),
        ("/alice/repo", alice),
        ("bob/x.git", bob),
        ("acme/infra.git", bob),
        ("acme/infra/sub.git", bob),
        ("acme/web.git", default),
        ("carol/x.git", default),
        ("alicex/x.git", default),
    ] {
        let out = fill_path(&world, true, path);
        assert_eq!(password(&out), want, "{path}: {out:?}");
    }
    // The documented global line does the same for git run without maestro-exec.
    let out = fill_path(&world, false, "alice/repo.git");
    assert!(!out.stdout.contains("password="), "{out:?}");
    assert!(out.stderr.contains("git sent no repository path for github.com"), "{out:?}");
    assert!(
        out.stderr.contains("GH (default), GH_ALICE (alice), GH_BOB (bob, acme/infra)"),
        "{out:?}"
    );
    let mut cmd = world.command("git");
    cmd.args(["config", "--global", "credential.https://github.com.useHttpPath", "true"]);
    run_cmd(cmd).ok();
    assert_eq!(password(&fill_path(&world, false, "bob/y.git")), bob);

    // What cannot be told gets no answer and one line, never a value.
    let huge = format!("alice/{}", "a/".repeat(3000));
    for (path, says) in [
        ("alice/../bob/x.git", "not a plain owner/repository path"),
        ("%2e%2e/bob/x.git", "not a plain owner/repository path"),
        ("alice/%2E%2E/bob", "not a plain owner/repository path"),
        (huge.as_str(), "not a plain owner/repository path"),
    ] {
        let out = fill_path(&world, true, path);
        assert_ne!(out.status, 0, "{path}: {out:?}");
        assert!(!out.stdout.contains("password="), "{path}: {out:?}");
        assert!(out.stderr.contains(says), "{path}: {out:?}");
        for v in [alice, bob, default] {
            assert!(!out.stderr.contains(v), "{out:?}");
        }
    }
    let out = helper(&world, "get", "protocol=https\nhost=github.com\n\n");
    assert_eq!((out.status, out.stdout.as_str()), (0, ""), "{out:?}");
    assert!(out.stderr.contains("git sent no repository path"), "{out:?}");

    // Without the default, an owner nobody serves is refused, naming who serves what.
    world.deactivate(&["GH"], &["GH_ALICE", "GH_BOB"]).await;
    let out = fill_path(&world, true, "carol/x.git");
    assert!(!out.stdout.contains("password="), "{out:?}");
    assert!(
        out.stderr.contains(
            "no active secret serves owner carol (GH_ALICE (alice), GH_BOB (bob, acme/infra))"
        ),
        "{out:?}"
    );
    assert_eq!(password(&fill_path(&world, true, "alice/r.git")), alice);

    // Two secrets serving one owner: refused at request time, naming both.
    world
        .add("GH_ALICE2", "github", json!({"token": "ghp_plantedalice2", "owners": "alice"}))
        .await;
    world.activate(&["GH_ALICE2"], &["GH_ALICE", "GH_ALICE2", "GH_BOB"]).await;
    let out = fill_path(&world, true, "alice/r.git");
    assert!(!out.stdout.contains("password="), "{out:?}");
    assert!(out.stderr.contains("GH_ALICE (alice), GH_ALICE2 (alice) all serve alice"), "{out:?}");
    world.deactivate(&["GH_ALICE2"], &["GH_ALICE", "GH_BOB"]).await;

    // A sealed account: git gets its placeholder, never the value (the agent's proxy puts the
    // value in on the way to github.com).
    let sealed = "ghp_plantedsealedorg";
    let body = json!({"name": "GH_SEALED", "kind": "github", "exposure": "sealed",
                      "fields": {"token": sealed, "owners": "sealedorg"}});
    world.sb.api.post("/v1/secrets", body).await.ok();
    world.activate(&["GH_SEALED"], &["GH_ALICE", "GH_BOB", "GH_SEALED"]).await;
    let out = fill_path(&world, true, "sealedorg/x.git");
    let placeholder = password(&out);
    assert!(placeholder.starts_with("ghp_") && placeholder != sealed, "{out:?}");
    assert!(!out.stdout.contains(sealed) && !out.stderr.contains(sealed), "{out:?}");
    world.deactivate(&["GH_SEALED"], &["GH_ALICE", "GH_BOB"]).await;

    // Dropping GH_BOB's owners while GH is active would give two GH_TOKENs: refused.
    world.activate(&["GH"], &["GH_ALICE", "GH_BOB", "GH"]).await;
    let out = world.sb.maestro(&["secrets", "edit", "GH_BOB", "--remove-field", "owners"]);
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("GH_BOB and GH both provide variable GH_TOKEN"), "{out:?}");
    world.assert_no_leak(&[alice, bob, default, sealed]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_clone_takes_each_owner_s_token_from_one_host() {
    if !clients_available(&["git".as_ref(), "python3".as_ref()]) {
        return;
    }
    let (alice, bob) = ("glpat-plantedclonealice", "glpat-plantedclonebob");
    let server = GitServer::start_with_owners(
        "oauth2",
        "glpat-plantednobody",
        &[("alice", alice), ("bob", bob)],
    );
    let world = World::new("git-clone-owners");
    let add = |name: &'static str, token: &'static str, owners: &'static str| {
        world.add(name, "gitlab", json!({"token": token, "host": server.host, "owners": owners}))
    };
    add("GL_ALICE", alice, "alice").await;
    add("GL_BOB", bob, "bob").await;
    configure_helper(&world);
    world.activate(&["GL_ALICE", "GL_BOB"], &["GL_ALICE", "GL_BOB"]).await;
    let base = server.url.trim_end_matches("project.git").to_owned();
    let clone = |via_exec: bool, owner: &str| {
        let url = format!("{base}{owner}/project.git");
        let dest = format!("clone-{owner}-{via_exec}");
        let mut cmd = if via_exec {
            world.exec(&["--no-mask", "git", "clone", "-q", &url, &dest])
        } else {
            let mut c = world.command("git");
            c.args(["clone", "-q", &url, &dest]);
            c
        };
        cmd.env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_SSL_CAINFO", &server.ca_file);
        run_cmd(cmd)
    };
    for owner in ["alice", "bob"] {
        clone(true, owner).ok();
        let head =
            run_cmd(git(&world, &["-C", &format!("clone-{owner}-true"), "rev-parse", "HEAD"]));
        assert_eq!(head.ok().stdout.trim(), server.head);
    }
    let log = server.log();
    assert!(
        log.contains(
            "/alice/project.git/info/refs?service=git-upload-pack -> 200 (credentials sent: True)"
        ),
        "{log}"
    );
    assert!(
        log.contains(
            "/bob/project.git/info/refs?service=git-upload-pack -> 200 (credentials sent: True)"
        ),
        "{log}"
    );
    // Without useHttpPath git sends no path, and the helper will not guess.
    let out = clone(false, "alice");
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("git sent no repository path"), "{out:?}");
    // An owner nobody serves gets no token.
    let out = clone(true, "carol");
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("no active secret serves owner carol"), "{out:?}");
    assert!(!log.contains(alice) && !server.log().contains(bob));
    world.assert_no_leak(&[alice, bob]);
}
