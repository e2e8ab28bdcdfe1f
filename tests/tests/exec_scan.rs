//! `maestro-exec scan` and its git hooks, end to end: the real broker, agent and maestro-exec,
//! run as the sandbox user (uid 1000), with real git repositories.
//!
//! * a value found in a working tree (file and line right), as is, in base64 inside a larger
//!   encoded text, and in hex; a clean tree exits 0; a link out of the tree is not followed;
//! * a root-only file is refused by the kernel to the caller, so the agent never sees it;
//! * a value in a commit buried under 100 others, found by commit and file, before and after
//!   `git gc` (packed, no loose objects);
//! * the pre-commit hook refuses a commit and the pre-push hook a push to a local bare repo;
//! * every finding reaches the broker's audit as `scan_finding` (API and `maestro audit`);
//! * forged and oversized scan requests and a flood of scan connections are refused; a quiet
//!   scan connection is closed;
//! * no output, log or audit record holds the value.
// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use maestro_tests::agent::{
    Agent, AgentOptions, OTHER_UID, SANDBOX_UID, Sandbox, as_uid, fuse_available, run_cmd,
    wait_until,
};
use maestro_tests::broker::CmdOutput;
use maestro_tests::util::bin;
use maestro_wire::api::{AuditAction, AuditEvent};
use maestro_wire::sock::{Action, Request, Response, SockErrorCode};
use serde_json::json;

const VALUE: &str = "planted-scan-token-5d2e91";
const SEALED: &str = "sk-proj-plantedsealedscan0123456789";
const WITHIN: Duration = Duration::from_secs(5);

/// A sandbox with the generic secret API (API_TOKEN = VALUE) active and its agent.
async fn ready(label: &str) -> (Sandbox, Agent, String) {
    let sb = Sandbox::new();
    sb.api.add_generic("API", &[("API_TOKEN", VALUE)]).await.ok();
    let (session, bundle) = sb.new_session(label);
    let agent = sb.start_agent(&bundle, AgentOptions::default());
    sb.api.activate(&session, &["API"]).await.ok();
    assert!(
        wait_until(WITHIN, || agent.listed_names() == ["API"]).is_some(),
        "activation did not reach the agent\n{}",
        agent.log()
    );
    (sb, agent, session)
}

/// A directory the sandbox user owns, inside the sandbox's directory.
fn user_dir(sb: &Sandbox, name: &str) -> std::path::PathBuf {
    let dir = sb.dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    chown(&dir);
    dir
}

fn chown(path: &Path) {
    let ok = Command::new("chown")
        .arg("-R")
        .arg(format!("{SANDBOX_UID}:{SANDBOX_UID}"))
        .arg(path)
        .status();
    assert!(ok.unwrap().success());
}

/// A command run as the sandbox user with a home of its own and the agent's socket.
fn as_user(sb: &Sandbox, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = as_uid(SANDBOX_UID, program);
    cmd.env("HOME", user_dir(sb, "home"))
        .env("MAESTRO_AGENT_SOCK", sb.socket())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Sandbox")
        .env("GIT_AUTHOR_EMAIL", "sandbox@example.com")
        .env("GIT_COMMITTER_NAME", "Sandbox")
        .env("GIT_COMMITTER_EMAIL", "sandbox@example.com");
    cmd
}

fn scan(sb: &Sandbox, args: &[&str]) -> CmdOutput {
    let mut cmd = as_user(sb, bin("maestro-exec"));
    cmd.arg("scan").args(args);
    let out = run_cmd(cmd);
    for value in [VALUE, SEALED] {
        assert!(!out.stdout.contains(value) && !out.stderr.contains(value), "value printed");
    }
    out
}

fn git(sb: &Sandbox, repo: &Path, args: &[&str]) -> CmdOutput {
    let mut cmd = as_user(sb, "git");
    cmd.arg("-C").arg(repo).args(args);
    run_cmd(cmd)
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

fn b64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n =
            c.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=c.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

async fn scan_findings(sb: &Sandbox) -> Vec<AuditEvent> {
    let all: Vec<AuditEvent> =
        serde_json::from_value(sb.api.get("/v1/audit?action=scan_finding").await.ok()).unwrap();
    all.into_iter().filter(|e| e.action == AuditAction::ScanFinding).collect()
}

async fn wait_for_finding(sb: &Sandbox, detail: &str) -> Vec<AuditEvent> {
    for _ in 0..100 {
        let seen = scan_findings(sb).await;
        if seen.iter().any(|e| e.detail.as_deref().is_some_and(|d| d.contains(detail))) {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no scan_finding with {detail:?} in the audit: {:#?}", scan_findings(sb).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_finds_values_in_a_tree_and_in_history_packed_or_not_and_the_audit_has_them() {
    if !fuse_available() {
        return;
    }
    let (sb, agent, session) = ready("scan").await;
    // A sealed secret: the sandbox sees a placeholder, which is worth reporting too.
    let sealed = json!({"name": "OPENAI", "kind": "openai", "exposure": "sealed",
        "fields": {"api_key": SEALED}});
    sb.api.post("/v1/secrets", sealed).await.ok();
    sb.api.activate(&session, &["OPENAI"]).await.ok();
    assert!(wait_until(WITHIN, || agent.listed_names().len() == 2).is_some(), "{}", agent.log());
    let shown =
        agent.exec_as(SANDBOX_UID, &["--only", "OPENAI", "--", "printenv", "OPENAI_API_KEY"]);
    let placeholder = shown.ok().stdout.trim().to_owned();
    assert!(placeholder.starts_with("sk-proj-") && placeholder != SEALED, "{placeholder}");

    // A working tree: raw on line 3, base64 inside a larger encoded text on line 2, hex on line 1.
    let tree = sb.dir().join("tree");
    write(&tree.join("src/config.txt"), &format!("# settings\nmode = fast\ntoken = {VALUE}\n"));
    let encoded = b64(format!("{{\"user\":\"bob\",\"token\":\"{VALUE}\",\"n\":1}}").as_bytes());
    write(&tree.join("enc/b64.txt"), &format!("header\n{encoded}\n"));
    let hex: String = VALUE.bytes().map(|b| format!("{b:02x}")).collect();
    write(&tree.join("enc/hex.txt"), &format!("{hex}\n"));
    write(&tree.join("clean/readme.txt"), "nothing to see\n");
    write(&tree.join("notes/env.txt"), &format!("OPENAI_API_KEY={placeholder}\n"));
    // Outside the tree, reached by a link: not followed.
    write(&sb.dir().join("outside/leak.txt"), &format!("{VALUE}\n"));
    std::os::unix::fs::symlink(sb.dir().join("outside/leak.txt"), tree.join("link.txt")).unwrap();
    // Root's only: the kernel refuses it to the sandbox user, so the agent never gets it.
    write(&tree.join("root-only.txt"), &format!("{VALUE}\n"));
    std::fs::set_permissions(tree.join("root-only.txt"), std::fs::Permissions::from_mode(0o600))
        .unwrap();

    let out = scan(&sb, &["--no-history", &tree.to_string_lossy()]);
    assert_eq!(out.status, 1, "{out:?}");
    let t = tree.to_string_lossy();
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            format!("{t}/enc/b64.txt:2: API (base64)"),
            format!("{t}/enc/hex.txt:1: API (hex)"),
            format!("{t}/notes/env.txt:1: OPENAI (placeholder, raw)"),
            format!("{t}/src/config.txt:3: API (raw)"),
        ],
        "{out:?}"
    );
    assert!(
        out.stderr.contains(&format!("cannot read {t}/root-only.txt: Permission denied")),
        "{out:?}"
    );

    // Standard input, from a pipe.
    let mut cmd = as_user(&sb, bin("maestro-exec"));
    cmd.args(["scan", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("diff --git a/x b/x\n+{VALUE}\n").as_bytes()).unwrap();
    drop(stdin);
    let piped = child.wait_with_output().unwrap();
    assert_eq!(piped.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&piped.stdout), "(stdin):2: API (raw)\n");

    // A clean tree exits 0 and prints nothing.
    let out = scan(&sb, &[&tree.join("clean").to_string_lossy()]);
    assert_eq!((out.status, out.stdout.as_str(), out.stderr.as_str()), (0, "", ""), "{out:?}");

    // A figure, not an assertion: 4 MiB of text with the value at its very end.
    let big = sb.dir().join("big");
    let line =
        "the quick brown fox jumps over the lazy dog 0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ\n";
    let mut text = line.repeat((4 << 20) / line.len());
    text.push_str(VALUE);
    write(&big.join("big.txt"), &text);
    let start = std::time::Instant::now();
    let out = scan(&sb, &[&big.to_string_lossy()]);
    let took = start.elapsed();
    assert_eq!(out.status, 1, "{out:?}");
    assert!(out.stdout.ends_with(&format!("big.txt:{}: API (raw)\n", text.lines().count())));
    eprintln!(
        "scan of {} MiB: {:.0} ms, {:.0} MB/s (this build's maestro-exec and agent)",
        text.len() >> 20,
        took.as_secs_f64() * 1000.0,
        text.len() as f64 / took.as_secs_f64() / 1e6
    );

    // A repository whose value was committed once and removed, then buried under 100 commits.
    let repo = user_dir(&sb, "repo");
    assert_eq!(git(&sb, &repo, &["init", "-q", "-b", "main"]).status, 0);
    let user_write = |rel: &str, text: &str| {
        write(&repo.join(rel), text);
        chown(&repo.join(rel));
    };
    user_write("conf/app.env", "NAME=demo\n");
    git(&sb, &repo, &["add", "."]).ok();
    git(&sb, &repo, &["commit", "-qm", "first"]).ok();
    user_write("conf/app.env", &format!("NAME=demo\nAPI_TOKEN={VALUE}\n"));
    git(&sb, &repo, &["commit", "-qam", "add the token"]).ok();
    let leaked = git(&sb, &repo, &["rev-parse", "HEAD"]).ok().stdout.trim()[..12].to_owned();
    user_write("conf/app.env", "NAME=demo\nAPI_TOKEN=${API_TOKEN}\n");
    git(&sb, &repo, &["commit", "-qam", "take it out"]).ok();
    for i in 0..100 {
        user_write("counter.txt", &format!("{i}\n"));
        git(&sb, &repo, &["add", "counter.txt"]).ok();
        git(&sb, &repo, &["commit", "-qm", &format!("commit {i}")]).ok();
    }
    let expected = format!("{leaked}:conf/app.env:2: API (raw)");
    let out = scan(&sb, &[&repo.to_string_lossy()]);
    assert_eq!(out.status, 1, "{out:?}");
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), [expected.as_str()], "{out:?}");
    // Without the history, the working tree is clean.
    assert_eq!(scan(&sb, &["--no-history", &repo.to_string_lossy()]).status, 0);

    // Packed: no loose object left, found all the same.
    git(&sb, &repo, &["gc", "-q", "--prune=now"]).ok();
    let loose = git(&sb, &repo, &["count-objects"]).ok();
    assert!(loose.stdout.starts_with("0 objects"), "{loose:?}");
    let out = scan(&sb, &[&repo.to_string_lossy()]);
    assert_eq!((out.status, out.stdout.trim()), (1, expected.as_str()), "{out:?}");

    // Each finding is in the broker's audit, with where, never the value.
    wait_for_finding(&sb, &format!("{t}/notes/env.txt:1 (placeholder, raw)")).await;
    let seen = wait_for_finding(&sb, &format!("{leaked}:conf/app.env:2 (raw)")).await;
    wait_for_finding(&sb, &format!("{t}/src/config.txt:3 (raw)")).await;
    wait_for_finding(&sb, &format!("{t}/enc/b64.txt:2 (base64)")).await;
    let placeholder_records =
        seen.iter().filter(|e| e.detail.as_deref().is_some_and(|d| d.contains("placeholder")));
    assert!(placeholder_records.clone().count() > 0, "{seen:#?}");
    assert!(placeholder_records.clone().all(|e| e.secret.as_deref() == Some("OPENAI")));
    assert!(
        seen.iter().all(|e| matches!(e.secret.as_deref(), Some("API" | "OPENAI"))),
        "{seen:#?}"
    );
    assert!(seen.iter().all(|e| e.uid == Some(SANDBOX_UID)), "{seen:#?}");
    let cli = sb.maestro(&["audit", "--action", "scan_finding"]).ok();
    assert!(cli.stdout.contains("conf/app.env:2"), "{cli:?}");
    assert!(!format!("{seen:?}{cli:?}").contains(VALUE));
    // The root-only file never reached the agent.
    assert!(!format!("{seen:?}").contains("root-only"), "{seen:#?}");
    for value in [VALUE, SEALED] {
        assert!(!agent.log().contains(value), "the agent logged a value");
        assert!(!sb.broker.log().contains(value), "the broker logged a value");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hooks_refuse_a_commit_and_a_push_that_hold_a_value() {
    if !fuse_available() {
        return;
    }
    let (sb, agent, _) = ready("hooks").await;
    let repo = user_dir(&sb, "work");
    let remote = user_dir(&sb, "remote.git");
    assert_eq!(git(&sb, &remote, &["init", "-q", "--bare", "-b", "main"]).status, 0);
    assert_eq!(git(&sb, &repo, &["init", "-q", "-b", "main"]).status, 0);
    let mut install = as_user(&sb, bin("maestro-exec"));
    install.args(["git-hooks", "install"]).arg(&repo);
    let out = run_cmd(install).ok();
    assert_eq!(out.stdout.matches(": installed").count(), 2, "{out:?}");

    let user_write = |rel: &str, text: &str| {
        write(&repo.join(rel), text);
        chown(&repo.join(rel));
    };
    // A clean commit and push go through (the hooks run and find nothing).
    user_write("readme.txt", "hello\n");
    git(&sb, &repo, &["add", "."]).ok();
    git(&sb, &repo, &["commit", "-qm", "clean"]).ok();
    git(&sb, &repo, &["push", "-q", &remote.to_string_lossy(), "main"]).ok();

    // A staged value: the commit is refused, saying where and what to do.
    user_write("settings.ini", &format!("[api]\ntoken={VALUE}\n"));
    git(&sb, &repo, &["add", "settings.ini"]).ok();
    let out = git(&sb, &repo, &["commit", "-qm", "leak"]);
    assert_ne!(out.status, 0, "{out:?}");
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("settings.ini:2: API (raw)"), "{all}");
    assert!(all.contains("commit refused"), "{all}");
    assert!(all.contains("maestro secrets compromised NAME"), "{all}");
    assert!(!all.contains(VALUE));
    assert_eq!(git(&sb, &repo, &["rev-list", "--count", "HEAD"]).ok().stdout.trim(), "1");

    // Committed anyway (--no-verify): the push is refused and the remote keeps its commit.
    git(&sb, &repo, &["commit", "-q", "--no-verify", "-m", "leak"]).ok();
    let leaked = git(&sb, &repo, &["rev-parse", "HEAD"]).ok().stdout.trim()[..12].to_owned();
    let before = git(&sb, &remote, &["rev-parse", "main"]).ok().stdout;
    let out = git(&sb, &repo, &["push", "-q", &remote.to_string_lossy(), "main"]);
    assert_ne!(out.status, 0, "{out:?}");
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains(&format!("{leaked}:settings.ini:2: API (raw)")), "{all}");
    assert!(all.contains("push refused"), "{all}");
    assert!(!all.contains(VALUE));
    assert_eq!(git(&sb, &remote, &["rev-parse", "main"]).ok().stdout, before);
    wait_for_finding(&sb, "settings.ini:2 (raw)").await;
    assert!(!agent.log().contains(VALUE));
}

/// A raw scan connection as root: the request, then the agent's first answer.
fn raw_scan(sb: &Sandbox) -> (UnixStream, BufReader<UnixStream>, Response) {
    let mut stream = UnixStream::connect(sb.socket()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut line = serde_json::to_vec(&Request::new(Action::Scan)).unwrap();
    line.push(b'\n');
    stream.write_all(&line).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let first = answer(&mut reader);
    (stream, reader, first)
}

fn answer(reader: &mut BufReader<UnixStream>) -> Response {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

fn refused(response: Response, code: SockErrorCode, text: &str) {
    let Response::Error { code: got, message } = response else {
        panic!("not refused: {response:?}");
    };
    assert_eq!(got, code, "{message}");
    assert!(message.contains(text), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_oversized_and_flooding_scan_requests_are_refused() {
    if !fuse_available() {
        return;
    }
    let (sb, agent, _) = ready("forged").await;

    // Each connection is dropped (and its scan slot given back) at the end of its block.
    // A header line longer than the limit.
    {
        let (mut s, mut r, first) = raw_scan(&sb);
        assert!(matches!(first, Response::ScanReady { .. }), "{first:?}");
        s.write_all(format!("{{\"label\":\"{}\"}}\n", "x".repeat(5000)).as_bytes()).unwrap();
        refused(answer(&mut r), SockErrorCode::BadRequest, "header is longer than 4096 bytes");
    }

    // A header that is not one.
    {
        let (mut s, mut r, _) = raw_scan(&sb);
        s.write_all(b"{\"label\":42,\"planted\":true}\n").unwrap();
        refused(answer(&mut r), SockErrorCode::BadRequest, "header is not understood");
    }

    // A chunk announced larger than the limit.
    {
        let (mut s, mut r, _) = raw_scan(&sb);
        s.write_all(b"{\"label\":\"f\",\"lines\":true}\n").unwrap();
        s.write_all(&u32::MAX.to_be_bytes()).unwrap();
        refused(answer(&mut r), SockErrorCode::BadRequest, "a chunk is longer than 1048576 bytes");
    }

    // A well-formed item is answered with findings by line and offset.
    {
        let (mut s, mut r, _) = raw_scan(&sb);
        s.write_all(b"{\"label\":\"raw\",\"lines\":true}\n").unwrap();
        let content = format!("a\nb {VALUE}\n");
        s.write_all(&u32::try_from(content.len()).unwrap().to_be_bytes()).unwrap();
        s.write_all(content.as_bytes()).unwrap();
        s.write_all(&[0; 4]).unwrap();
        let Response::ScanResult { findings, more } = answer(&mut r) else { panic!() };
        assert_eq!((findings.len(), more), (1, 0));
        assert_eq!(
            (findings[0].line, findings[0].offset, findings[0].secret.as_str()),
            (2, 4, "API")
        );
    }

    // A flood: two scans at once are served, the third is told to wait.
    let held: Vec<_> = (0..2).map(|_| raw_scan(&sb)).collect();
    assert!(held.iter().all(|(_, _, first)| matches!(first, Response::ScanReady { .. })));
    let (_, _, third) = raw_scan(&sb);
    refused(third, SockErrorCode::Unavailable, "running 2 scans already");
    drop(held);
    assert!(
        wait_until(WITHIN, || matches!(raw_scan(&sb).2, Response::ScanReady { .. })).is_some(),
        "scan slots were not given back"
    );

    // A client that goes quiet loses its connection and its slot (10 s for each read).
    let (_quiet, mut r, _) = raw_scan(&sb);
    let start = std::time::Instant::now();
    let mut rest = String::new();
    let closed = r.read_line(&mut rest);
    let took = start.elapsed();
    assert!(matches!(closed, Ok(0)), "{closed:?} {rest:?}");
    assert!(took < Duration::from_secs(30), "a quiet scan connection was held {took:?}");
    eprintln!("a quiet scan connection was closed after {:.1} s", took.as_secs_f64());

    // Another uid is refused before anything is scanned.
    let dir = user_dir(&sb, "other");
    write(&dir.join("f.txt"), &format!("{VALUE}\n"));
    let mut cmd = as_uid(OTHER_UID, bin("maestro-exec"));
    cmd.args(["scan", "--no-history"]).arg(&dir).env("MAESTRO_AGENT_SOCK", sb.socket());
    let out = run_cmd(cmd);
    assert_eq!(out.status, 2, "{out:?}");
    assert!(out.stderr.contains("uid 1001 may not use this agent"), "{out:?}");
    assert!(!agent.log().contains(VALUE));
}
