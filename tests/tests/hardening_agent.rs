//! The sandbox side under attack (issue 9): the real broker, agent and maestro-exec; the sandbox
//! user uid 1000 and a foreign uid 1001 through setpriv; python3 for the attackers.
//!
//! * a flood of opens from two uid-1000 loops cannot push a real read of another secret or a
//!   `maestro-exec` injection out of the audit trail, the counts add up, and the database does
//!   not grow by megabytes (point 1);
//! * 400 idle connections of uid 1001, or a uid-1000 slowloris, do not starve uid 1000's
//!   `maestro-exec`; the foreign uid is recorded (point 4);
//! * the command recorded is the executable the kernel names, not what the caller claims or
//!   calls itself (`PR_SET_NAME`), with control and format characters escaped (point 5);
//! * a CMD that ignores SIGTERM and forks every millisecond, and processes double-forked to
//!   leave the agent's tree, are all gone when the agent exits (point 8);
//! * `maestro-exec` run by root refuses a socket served by uid 1000 (point 9).
//!
//! No timing is asserted: deadlines are generous "give up" bounds only.
// Helpers of a test panic to fail it, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use maestro_tests::agent::{
    Agent, AgentOptions, OTHER_UID, SANDBOX_UID, Sandbox, as_uid, fuse_available, run_cmd,
    wait_until,
};
use maestro_tests::broker::CmdOutput;
use maestro_tests::util::{ChildGuard, bin, temp_dir};
use maestro_wire::api::AuditEvent;

const WITHIN: Duration = Duration::from_secs(10);

async fn audit(sb: &Sandbox) -> Vec<AuditEvent> {
    serde_json::from_value(sb.api.get("/v1/audit").await.ok()).expect("audit records")
}

fn action(e: &AuditEvent) -> String {
    serde_json::to_value(e.action).unwrap().as_str().unwrap().to_owned()
}

/// How many uses a record stands for: the agent coalesces repeated uses into one record with
/// a count (absent: one).
fn uses(e: &AuditEvent) -> u64 {
    e.count.unwrap_or(1)
}

/// Polls the audit trail until `done` holds (or a generous deadline passes).
async fn audit_until(sb: &Sandbox, mut done: impl FnMut(&[AuditEvent]) -> bool) -> Vec<AuditEvent> {
    let mut seen = Vec::new();
    for _ in 0..150 {
        seen = audit(sb).await;
        if done(&seen) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    seen
}

/// Runs a command to completion; returns its output and its pid.
fn run_with_pid(mut cmd: Command) -> (CmdOutput, u32) {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let out = CmdOutput {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (out, pid)
}

/// A python3 that every uid can run (a root-only shim such as pyenv's may come first in PATH).
fn python() -> &'static str {
    ["/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"]
        .into_iter()
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
        .expect("a python3 that other uids can run, for the attackers of these tests")
}

fn python_as(uid: u32, script: &str, args: &[&str]) -> Command {
    let mut cmd = as_uid(uid, python());
    cmd.arg("-c").arg(script).args(args);
    cmd
}

/// The file name of the executable `python3` resolves to (python3.11, say).
fn python_exe_name() -> String {
    let out = run_cmd({
        let mut c = Command::new(python());
        c.args(["-c", "import os, sys; print(os.path.basename(os.path.realpath(sys.executable)))"]);
        c
    });
    out.stdout.trim().to_owned()
}

fn dir_bytes(dir: &Path) -> u64 {
    maestro_tests::util::files_under(dir)
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

const FLOOD: &str = r#"
import sys, time
path, secs = sys.argv[1], float(sys.argv[2])
ok = failed = 0
end = time.monotonic() + secs
while time.monotonic() < end:
    try:
        with open(path, "rb") as f:
            f.read()
        ok += 1
    except OSError:
        failed += 1
print(ok, failed)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_opens_cannot_push_a_real_read_or_an_injection_out_of_the_audit() {
    if !fuse_available() {
        return;
    }
    let sb = Sandbox::new();
    sb.api.add_generic("FLOOD", &[("FLOOD_TOKEN", "planted-flood-value")]).await.ok();
    sb.api.add_generic("OTHER", &[("OTHER_TOKEN", "planted-other-value")]).await.ok();
    let (session, bundle) = sb.new_session("flood");
    let agent = sb.start_agent(&bundle, AgentOptions::default());
    sb.api.activate(&session, &["FLOOD", "OTHER"]).await.ok();
    assert!(
        wait_until(WITHIN, || agent.listed_names().len() == 2).is_some(),
        "activation did not reach the agent\n{}",
        agent.log()
    );
    let flood_file = agent.file("FLOOD_TOKEN").to_string_lossy().into_owned();
    let other_file = agent.file("OTHER_TOKEN").to_string_lossy().into_owned();
    let db_before = dir_bytes(sb.broker.data_dir());

    let mut opens_made = 0u64;
    let mut reads = Vec::new();
    let mut injections = Vec::new();
    for round in 0..3 {
        let loops: Vec<_> = (0..2)
            .map(|_| {
                python_as(SANDBOX_UID, FLOOD, &[&flood_file, "3"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        // During the flood: one real read of another secret, one injection.
        let (read, read_pid) = run_with_pid({
            let mut c = as_uid(SANDBOX_UID, "cat");
            c.arg(&other_file);
            c
        });
        assert_eq!(read.ok().stdout, "planted-other-value", "round {round}");
        let (exec, exec_pid) = run_with_pid({
            let mut c = as_uid(SANDBOX_UID, bin("maestro-exec"));
            c.args(["--only", "OTHER", "--", "true"]).env("MAESTRO_AGENT_SOCK", &agent.socket);
            c
        });
        assert_eq!(exec.status, 0, "round {round}: {exec:?}");
        reads.push(read_pid);
        injections.push(exec_pid);
        for l in loops {
            let out = l.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let mut counts = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
            let (ok, failed) = (counts.next().unwrap(), counts.next().unwrap());
            println!("round {round}: a flood loop made {ok} opens ({failed} refused)");
            opens_made += ok;
        }
    }

    // Every read and every injection is there, and the flood's counts add up.
    let flood_uses = |seen: &[AuditEvent]| -> u64 {
        seen.iter()
            .filter(|e| action(e) == "file_read" && e.secret.as_deref() == Some("FLOOD"))
            .map(uses)
            .sum()
    };
    let seen = audit_until(&sb, |seen| flood_uses(seen) >= opens_made).await;
    for pid in &reads {
        assert!(
            seen.iter().any(|e| action(e) == "file_read"
                && e.secret.as_deref() == Some("OTHER")
                && e.pid == Some(*pid)
                && e.command.as_deref() == Some("cat")),
            "the read by pid {pid} is missing from the audit trail"
        );
    }
    for pid in &injections {
        assert!(
            seen.iter().any(|e| action(e) == "injected"
                && e.secret.as_deref() == Some("OTHER")
                && e.pid == Some(*pid)),
            "the injection to pid {pid} is missing from the audit trail"
        );
    }
    let recorded = flood_uses(&seen);
    let rows = seen.iter().filter(|e| e.secret.as_deref() == Some("FLOOD")).count();
    println!("{opens_made} opens made, {recorded} uses recorded in {rows} audit records");
    assert!(opens_made > 0);
    assert_eq!(recorded, opens_made, "recorded uses differ from the opens made");
    // The history of the other secret shows both, through the CLI.
    let history = sb.maestro(&["secrets", "history", "OTHER", "--json"]).ok();
    let history: Vec<AuditEvent> = serde_json::from_str(&history.stdout).unwrap();
    for pid in reads.iter().chain(&injections) {
        assert!(history.iter().any(|e| e.pid == Some(*pid)), "pid {pid} not in the history");
    }
    let grown = dir_bytes(sb.broker.data_dir()).saturating_sub(db_before);
    println!("the broker's data directory grew by {grown} bytes");
    assert!(grown < 2 * 1024 * 1024, "the database grew by {grown} bytes");
    assert!(!agent.log().contains("dropped"), "{}", agent.log());
}

const HOLD_CONNECTIONS: &str = r#"
import socket, sys, time
path, n = sys.argv[1], int(sys.argv[2])
held = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    held.append(s)
print("holding", len(held), flush=True)
time.sleep(float(sys.argv[3]))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_of_another_uid_or_of_the_sandbox_user_do_not_starve_maestro_exec() {
    if !fuse_available() {
        return;
    }
    let sb = Sandbox::new();
    sb.api.add_generic("API", &[("API_TOKEN", "planted-api-value")]).await.ok();
    let (session, bundle) = sb.new_session("starve");
    let agent = sb.start_agent(&bundle, AgentOptions::default());
    sb.api.activate(&session, &["API"]).await.ok();
    assert!(wait_until(WITHIN, || agent.listed_names().len() == 1).is_some(), "{}", agent.log());
    let socket = agent.socket.to_string_lossy().into_owned();

    for (uid, count) in [(OTHER_UID, "400"), (SANDBOX_UID, "200")] {
        let holder =
            ChildGuard::spawn("holder", python_as(uid, HOLD_CONNECTIONS, &[&socket, count, "60"]));
        assert!(
            holder.wait_for_stdout(WITHIN, |l| l.starts_with("holding")).is_some(),
            "uid {uid} could not open its connections: {}",
            holder.log()
        );
        // Several requests while the connections are held: each is answered.
        for _ in 0..5 {
            let out = agent
                .exec_as(SANDBOX_UID, &["--no-mask", "--", "sh", "-c", "printf %s \"$API_TOKEN\""]);
            assert_eq!(out.status, 0, "uid {uid} holding {count} connections: {out:?}");
            assert_eq!(out.stdout, "planted-api-value");
        }
        drop(holder);
    }
    // The foreign uid was refused at once and recorded (once per second, with a count).
    let seen = audit_until(&sb, |seen| {
        seen.iter().any(|e| action(e) == "denied" && e.uid == Some(OTHER_UID))
    })
    .await;
    let denial = seen
        .iter()
        .find(|e| action(e) == "denied" && e.uid == Some(OTHER_UID))
        .expect("the foreign uid's connections are recorded");
    assert!(denial.detail.as_deref().unwrap().starts_with("agent socket: uid 1001"), "{denial:?}");
    assert!(agent.log().contains("refused connections of a uid"), "{}", agent.log());
    let foreign_rows = seen.iter().filter(|e| e.uid == Some(OTHER_UID)).count();
    println!("400 connections of uid 1001 became {foreign_rows} audit records");
    assert!(foreign_rows < 50);
}

const ENV_REQUEST: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(b'{"version":1,"action":"env","command":"make"}\n')
answer = s.makefile().readline()
print("env" if '"type":"env"' in answer else answer)
"#;

const RENAMED_READER: &str = r#"
import ctypes, sys
libc = ctypes.CDLL(None)
PR_SET_NAME = 15
libc.prctl(PR_SET_NAME, sys.argv[2].encode(), 0, 0, 0)
print(open("/proc/self/comm").read().strip() == sys.argv[2], open(sys.argv[1]).read())
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorded_command_is_the_executable_the_kernel_names_not_the_callers_claim() {
    if !fuse_available() {
        return;
    }
    let sb = Sandbox::new();
    sb.api.add_generic("API", &[("API_TOKEN", "planted-api-value")]).await.ok();
    let (session, bundle) = sb.new_session("who");
    let agent = sb.start_agent(&bundle, AgentOptions::default());
    sb.api.activate(&session, &["API"]).await.ok();
    assert!(wait_until(WITHIN, || agent.listed_names().len() == 1).is_some(), "{}", agent.log());
    let python = python_exe_name();
    let file = agent.file("API_TOKEN").to_string_lossy().into_owned();

    // A raw request that claims to be `make`.
    let (asked, asked_pid) =
        run_with_pid(python_as(SANDBOX_UID, ENV_REQUEST, &[&agent.socket.to_string_lossy()]));
    assert_eq!(asked.ok().stdout.trim(), "env");
    // A reader that names itself `make` (PR_SET_NAME), one that names itself with a
    // right-to-left override, and `exec -a` giving cat another argv[0].
    let (renamed, renamed_pid) =
        run_with_pid(python_as(SANDBOX_UID, RENAMED_READER, &[&file, "make"]));
    assert_eq!(renamed.ok().stdout.trim(), "True planted-api-value");
    let (bidi, bidi_pid) =
        run_with_pid(python_as(SANDBOX_UID, RENAMED_READER, &[&file, "ev\u{202e}lif"]));
    assert_eq!(bidi.ok().stdout.trim(), "True planted-api-value");
    let (argv0, argv0_pid) = run_with_pid({
        let mut c = as_uid(SANDBOX_UID, "bash");
        c.args(["-c", &format!("exec -a make cat {file}")]);
        c
    });
    assert_eq!(argv0.ok().stdout, "planted-api-value");

    let pids = [asked_pid, renamed_pid, bidi_pid, argv0_pid];
    let seen =
        audit_until(&sb, |seen| pids.iter().all(|p| seen.iter().any(|e| e.pid == Some(*p)))).await;
    let record = |pid: u32| {
        seen.iter()
            .find(|e| e.pid == Some(pid))
            .unwrap_or_else(|| panic!("no record of pid {pid}: {seen:#?}"))
    };
    let injected = record(asked_pid);
    assert_eq!(action(injected), "injected");
    assert_eq!(injected.command.as_deref(), Some(python.as_str()), "{injected:?}");
    assert_eq!(injected.claimed_command.as_deref(), Some("make"), "{injected:?}");
    let renamed = record(renamed_pid);
    assert_eq!(action(renamed), "file_read");
    assert_eq!(renamed.command.as_deref(), Some(python.as_str()), "{renamed:?}");
    assert_eq!(renamed.detail.as_deref(), Some("API_TOKEN"));
    assert_eq!(renamed.claimed_command.as_deref(), Some("make"), "{renamed:?}");
    let bidi = record(bidi_pid);
    assert_eq!(bidi.command.as_deref(), Some(python.as_str()));
    let detail = bidi.claimed_command.as_deref().unwrap();
    assert!(detail.contains("ev\\u{202e}lif") && !detail.contains('\u{202e}'), "{bidi:?}");
    let argv0 = record(argv0_pid);
    assert_eq!(
        (argv0.command.as_deref(), argv0.detail.as_deref()),
        (Some("cat"), Some("API_TOKEN"))
    );
    let printed = sb.maestro(&["audit"]).ok().stdout;
    assert!(!printed.contains('\u{202e}'), "{printed}");
}

/// Pids of processes whose environment holds `marker`.
fn marked(marker: &str) -> Vec<u32> {
    let needle = marker.as_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

/// Forks every millisecond with the parent exiting (its pid keeps changing), ignores SIGTERM,
/// and every 100th round double-forks a sleeper that is orphaned at once. It gives up by
/// itself after 60 s, so that a failing test does not leave it running for ever.
const ROAMER: &str = r#"
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
start = time.monotonic()
n = 0
while time.monotonic() - start < 60:
    time.sleep(0.001)
    if os.fork() != 0:
        os._exit(0)
    n += 1
    if n % 100 == 0 and os.fork() == 0:
        if os.fork() == 0:
            time.sleep(60)
        os._exit(0)
"#;

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].split_whitespace().nth(1)?.parse().ok()
}

/// Runs the roaming CMD under an agent started by `start`, ends the agent with SIGTERM, and
/// checks that nothing of the session is left the moment the agent has exited.
fn contain(label: &str, start: impl FnOnce(&Sandbox, &Path, AgentOptions) -> Agent) {
    let sb = Sandbox::new();
    let (_session, bundle) = sb.new_session(label);
    let marker = format!("MAESTRO_TEST_MARKER={label}-{}", std::process::id());
    let py = python();
    let script = format!(
        "trap '' TERM; {py} -c '{ROAMER}' & {py} -c '{ROAMER}' & while :; do sleep 0.2; done"
    );
    let options = AgentOptions {
        grace: Some("1s".into()),
        command: vec!["env".into(), marker.clone(), "bash".into(), "-c".into(), script],
        ..AgentOptions::default()
    };
    let mut agent = start(&sb, &bundle, options);
    // The session's processes roam: wait until there are several, and orphans that the agent
    // (their subreaper) adopted among them.
    let me = agent.pid();
    assert!(
        wait_until(WITHIN, || {
            let now = marked(&marker);
            now.len() >= 10 && now.iter().any(|p| parent_of(*p) == Some(me))
        })
        .is_some(),
        "the command did not start its processes: {:?}\n{}",
        marked(&marker),
        agent.log()
    );
    // A process of the sandbox user started outside the agent's tree that asks for secrets
    // joins the session's cgroup, and ends with it.
    let (key, value) = marker.split_once('=').unwrap();
    let mut outsider = as_uid(SANDBOX_UID, bin("maestro-exec"));
    outsider
        .args(["--", "sleep", "60"])
        .env("MAESTRO_AGENT_SOCK", &agent.socket)
        .env(key, value)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut outsider = outsider.spawn().unwrap();
    let in_session = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .is_ok_and(|c| c.contains("/maestro/session-"))
    };
    assert!(
        wait_until(WITHIN, || in_session(outsider.id())).is_some(),
        "maestro-exec's caller did not join the session cgroup\n{}",
        agent.log()
    );
    let before = marked(&marker).len();
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    let status = agent.wait_exit(Duration::from_secs(60)).expect("the agent exits");
    // No waiting: the agent says the session is over only once nothing of it is left.
    let left = marked(&marker);
    println!("{label}: {before} processes of the session before the end, {} after", left.len());
    assert!(left.is_empty(), "processes outlived the session: {left:?}\n{}", agent.log());
    let outsider = outsider.wait().unwrap();
    assert!(outsider.code().is_none(), "maestro-exec's command was not killed: {outsider:?}");
    let log = agent.log();
    assert!(log.contains("the session's processes run in their own cgroup"), "{log}");
    assert!(log.contains("processes_left=0"), "{log}");
    assert!(status.code().is_some(), "{status:?}");
}

#[test]
fn nothing_of_the_session_outlives_it() {
    if !fuse_available() {
        return;
    }
    contain("contain", |sb, bundle, options| sb.start_agent(bundle, options));
}

#[test]
fn what_an_agent_killed_with_sigkill_left_behind_ends_when_the_next_one_starts() {
    if !fuse_available() {
        return;
    }
    let sb = Sandbox::new();
    let (_session, bundle) = sb.new_session("killed");
    let marker = format!("MAESTRO_TEST_MARKER=killed-{}", std::process::id());
    let options = AgentOptions {
        // Background sleepers: not CMD, so no parent-death signal ends them with the agent.
        command: vec![
            "env".into(),
            marker.clone(),
            "sh".into(),
            "-c".into(),
            // Not holding the agent's output pipes, which the fixture reads to their end.
            "exec >/dev/null 2>&1; sleep 60 & sleep 60 & exec sleep 60".into(),
        ],
        ..AgentOptions::default()
    };
    let mut agent = sb.start_agent(&bundle, options);
    assert!(wait_until(WITHIN, || marked(&marker).len() >= 3).is_some(), "{}", agent.log());
    agent.kill9();
    // CMD dies with the agent; the sleepers it started outlive it, for now.
    assert!(wait_until(WITHIN, || marked(&marker).len() == 2).is_some(), "{:?}", marked(&marker));
    drop(agent);
    let (_session, bundle) = sb.new_session("after");
    let next = sb.start_agent(&bundle, AgentOptions::default());
    // Ready means the previous session's cgroup was swept.
    let left = marked(&marker);
    assert!(left.is_empty(), "processes of the killed agent's session survive: {left:?}");
    assert!(next.log().contains("agent that died without tearing down"), "{}", next.log());
}

/// The cgroup2 mount point, from mountinfo.
fn cgroup2_mount() -> Option<std::path::PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(std::path::PathBuf::from))?
    })
}

#[test]
fn nothing_of_the_session_outlives_it_when_the_agent_is_in_a_nested_cgroup() {
    if !fuse_available() {
        return;
    }
    let Some(mount) = cgroup2_mount() else {
        assert!(std::env::var_os("MAESTRO_REQUIRE_FUSE").is_none(), "no cgroup2 mount here");
        eprintln!("skipped: no cgroup2 mount");
        return;
    };
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap().trim_start_matches('/');
    let nested = mount.join(own).join(format!("maestro-test-{}", std::process::id()));
    std::fs::create_dir(&nested).unwrap();
    contain("nested", |sb, bundle, options| {
        Agent::start_in_cgroup(bundle, &sb.mount(), &sb.socket(), options, &nested)
    });
    // The agent left its `maestro` node (empty) and nothing else; the test cleans up.
    let _ = std::fs::remove_dir(nested.join("maestro"));
    std::fs::remove_dir(&nested).unwrap();
}

const FAKE_AGENT: &str = r#"
import os, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o777)
s.listen(4)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    try:
        c.makefile().readline()
        c.sendall(b'{"type":"env","vars":[{"name":"LD_PRELOAD","value":"/nonexistent/evil.so"},{"name":"PWNED","value":"1"}]}\n')
    except OSError:
        pass
    c.close()
"#;

#[test]
fn maestro_exec_refuses_a_socket_not_served_by_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run a server as another uid");
        return;
    }
    let dir = temp_dir("maestro-fake-agent-");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = dir.path().join("agent.sock");
    let server = ChildGuard::spawn(
        "fake-agent",
        python_as(SANDBOX_UID, FAKE_AGENT, &[&socket.to_string_lossy()]),
    );
    assert!(server.wait_for_stdout(WITHIN, |l| l == "listening").is_some(), "{}", server.log());
    let ran = dir.path().join("ran");
    for args in [
        vec![
            "--".to_owned(),
            "sh".into(),
            "-c".into(),
            format!("echo \"$PWNED\" > {}", ran.display()),
        ],
        vec!["--list".to_owned()],
    ] {
        let mut cmd = Command::new(bin("maestro-exec"));
        cmd.args(&args).env("MAESTRO_AGENT_SOCK", &socket);
        let out = run_cmd(cmd);
        assert_eq!(out.status, 125, "{out:?}");
        assert_eq!(
            out.stderr,
            format!(
                "maestro-exec: the agent socket {} is served by uid 1000, not root; refusing to \
                 trust it (check MAESTRO_AGENT_SOCK)\n",
                socket.display()
            )
        );
        assert!(!ran.exists(), "the command ran with the fake agent's environment");
    }
}
