//! The agent's life: session end, signals and CMD's exit tear everything down; kill -9 leaves
//! nothing readable and the next agent starts at the same mount; a broker out of reach past
//! the lease means no secrets until it is back; and no planted value ends up in the agent's
//! trace logs, its /proc environ or cmdline, or any file once the session is over.
// Helpers of a test panic to fail it, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use maestro_tests::agent::{
    AgentOptions, SANDBOX_UID, Sandbox, alive, descendants, fuse_available, is_mounted, wait_until,
};
use maestro_tests::util::{files_containing, temp_dir};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const WITHIN: Duration = Duration::from_secs(2);
const TEARDOWN: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_end_tears_everything_down() {
    if !fuse_available() {
        return;
    }
    let sb = Sandbox::new();
    sb.api.add_generic("API", &[("API_TOKEN", "planted-end-value")]).await.ok();
    let (session, bundle) = sb.new_session("end");
    // CMD leaves a background child and a double-forked orphan, which the agent adopts.
    let options = AgentOptions {
        command: vec![
            "sh".into(),
            "-c".into(),
            "sleep 1001 & (sleep 1002 &) ; exec sleep 1003".into(),
        ],
        ..AgentOptions::default()
    };
    let mut agent = sb.start_agent(&bundle, options);
    sb.api.activate(&session, &["API"]).await.ok();
    wait_until(WITHIN, || agent.file("API_TOKEN").exists()).expect("API active");
    let started = wait_until(Duration::from_secs(5), || descendants(agent.pid()).len() >= 3);
    assert!(started.is_some(), "CMD's processes: {:?}", descendants(agent.pid()));
    let processes = descendants(agent.pid());
    // A reader outside the agent's tree keeps a file open: the unmount must not wait for it.
    let mut holder = maestro_tests::agent::as_uid(SANDBOX_UID, "sh");
    holder.args(["-c", &format!("exec sleep 1004 < {}", agent.file("API_TOKEN").display())]);
    let mut holder = holder.spawn().unwrap();
    wait_until(WITHIN, || {
        std::fs::read_link(format!("/proc/{}/fd/0", holder.id()))
            .is_ok_and(|p| p.ends_with("API_TOKEN"))
    })
    .expect("the holder opened the file");

    sb.maestro(&["sessions", "end", &session]).ok();
    let t = Instant::now();
    let status = agent.wait_exit(TEARDOWN);
    let took = t.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "agent did not exit 0 in time:\n{}",
        agent.log()
    );
    assert!(!is_mounted(&agent.mount), "still mounted");
    assert!(!agent.socket.exists(), "socket still there");
    for pid in &processes {
        assert!(!alive(*pid), "process {pid} started by the agent is still alive");
    }
    println!("session end -> agent exited, unmounted, socket gone, processes ended in {took:?}");
    assert!(took <= TEARDOWN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_the_exit_of_cmd_end_the_agent() {
    if !fuse_available() {
        return;
    }
    let sb = Sandbox::new();
    // Without CMD, SIGTERM: clean exit 0.
    let (_, bundle) = sb.new_session("term");
    let mut agent = sb.start_agent(&bundle, AgentOptions::default());
    agent.signal(Signal::SIGTERM);
    let status = agent.wait_exit(TEARDOWN);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", agent.log());
    assert!(!is_mounted(&agent.mount) && !agent.socket.exists());
    drop(agent);

    // With CMD: it runs as the sandbox user without capabilities, learns the socket, does not
    // inherit the bundle's variable, and its exit status becomes the agent's.
    let (_, bundle) = sb.new_session("cmd");
    let script = "grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' \
                  /proc/self/status; echo \"SOCK=$MAESTRO_AGENT_SOCK\"; echo \"BUNDLE=${MAESTRO_BUNDLE-}\"; \
                  maestro-exec --list >/dev/null && echo LIST=ok; exit 7";
    let bin_dir = maestro_tests::util::bin_dir();
    let options = AgentOptions {
        command: vec![
            "env".into(),
            format!("PATH={}:/usr/bin:/bin", bin_dir.display()),
            "sh".into(),
            "-c".into(),
            script.into(),
        ],
        bundle_in_env: true,
        ..AgentOptions::default()
    };
    let mut agent = sb.start_agent(&bundle, options);
    let status = agent.wait_exit(TEARDOWN);
    let log = agent.log();
    assert_eq!(status.and_then(|s| s.code()), Some(7), "{log}");
    for line in [
        "Uid:\t1000\t1000\t1000\t1000",
        "Gid:\t1000\t1000\t1000\t1000",
        "CapInh:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "CapAmb:\t0000000000000000",
        "NoNewPrivs:\t1",
        "BUNDLE=",
        "LIST=ok",
    ] {
        assert!(log.lines().any(|l| l == line), "missing {line:?} in:\n{log}");
    }
    assert!(log.contains(&format!("SOCK={}", agent.socket.display())), "{log}");
    assert!(!is_mounted(&agent.mount) && !agent.socket.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_leaves_nothing_readable_and_the_next_start_succeeds() {
    if !fuse_available() {
        return;
    }
    let sb = Sandbox::new();
    sb.api.add_generic("API", &[("API_TOKEN", "planted-kill9-value")]).await.ok();
    let (session, bundle) = sb.new_session("first");
    let options =
        AgentOptions { command: vec!["sleep".into(), "1000".into()], ..AgentOptions::default() };
    let mut agent = sb.start_agent(&bundle, options);
    sb.api.activate(&session, &["API"]).await.ok();
    wait_until(WITHIN, || agent.file("API_TOKEN").exists()).expect("API active");
    let cmd = descendants(agent.pid());
    assert_eq!(cmd.len(), 1);

    agent.kill9();
    // The mount is dead: nothing can be read from it, by anyone.
    let read = std::fs::read(agent.file("API_TOKEN"));
    assert!(read.is_err(), "read {read:?} after kill -9");
    let listing = std::fs::read_dir(&agent.mount).map(|d| d.count());
    assert!(listing.is_err(), "{listing:?}");
    let out = agent.exec_as(SANDBOX_UID, &["--", "env"]);
    assert_eq!(out.status, 125);
    assert!(out.stderr.starts_with("maestro-exec: no agent at "), "{out:?}");
    assert!(!out.stdout.contains("planted"));
    // CMD dies with the agent.
    assert!(wait_until(WITHIN, || !alive(cmd[0])).is_some(), "CMD survived the agent");

    // The next agent at the same mount and socket cleans up and serves.
    let (session2, bundle2) = sb.new_session("second");
    let agent2 = sb.start_agent(&bundle2, AgentOptions::default());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let at_mount = mounts
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(&*agent2.mount.to_string_lossy()))
        .count();
    assert_eq!(at_mount, 1, "{mounts}");
    assert!(agent2.log().contains("cleaned a stale mount"), "{}", agent2.log());
    sb.api.activate(&session2, &["API"]).await.ok();
    wait_until(WITHIN, || agent2.file("API_TOKEN").exists()).expect("API active again");
    let out =
        agent2.run_as(SANDBOX_UID, "cat", &[&agent2.file("API_TOKEN").to_string_lossy()]).ok();
    assert_eq!(out.stdout, "planted-kill9-value");
    drop(agent);
}

/// Sends SIGCONT to the broker when dropped, so a failing test does not leave it stopped.
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGCONT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_dropped_while_the_broker_is_away_past_the_lease() {
    if !fuse_available() {
        return;
    }
    let sb = Sandbox::new();
    sb.api.add_generic("API", &[("API_TOKEN", "planted-lease-value")]).await.ok();
    let (session, bundle) = sb.new_session("lease");
    let options = AgentOptions { lease: Some("2s".into()), ..AgentOptions::default() };
    let agent = sb.start_agent(&bundle, options);
    sb.api.activate(&session, &["API"]).await.ok();
    let file = agent.file("API_TOKEN");
    wait_until(WITHIN, || file.exists()).expect("API active");

    let broker = sb.broker.pid().expect("broker pid");
    kill(Pid::from_raw(broker as i32), Signal::SIGSTOP).unwrap();
    let resume = Resume(broker);
    let t = Instant::now();
    let gone = wait_until(Duration::from_secs(6), || !file.exists());
    assert!(gone.is_some(), "secrets survived a stopped broker past the lease:\n{}", agent.log());
    println!("broker stopped -> secrets dropped after {:?} (lease 2 s)", t.elapsed());
    assert!(t.elapsed() >= Duration::from_millis(1500), "dropped before the lease ran out");
    let out = agent.exec_as(SANDBOX_UID, &["--", "env"]);
    assert_eq!(out.status, 125);
    assert_eq!(
        out.stderr,
        "maestro-exec: secrets are unavailable: the agent is out of touch with the broker; they \
         come back when it reconnects\n"
    );
    assert!(std::fs::read_dir(&agent.mount).unwrap().next().is_none(), "the mount is not empty");

    drop(resume);
    let t = Instant::now();
    let back = wait_until(Duration::from_secs(30), || file.exists());
    assert!(back.is_some(), "secrets did not come back:\n{}", agent.log());
    println!("broker resumed -> secrets back after {:?}", t.elapsed());
    let out = agent
        .exec_as(SANDBOX_UID, &["--no-mask", "--", "sh", "-c", "printf %s \"$API_TOKEN\""])
        .ok();
    assert_eq!(out.stdout, "planted-lease-value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_planted_value_in_logs_proc_or_files() {
    if !fuse_available() {
        return;
    }
    let planted = ["planted-json-value-4d2e", "planted-file-value-8b7c", "planted-edit-value-1a9f"];
    let sb = Sandbox::new();
    sb.api.add_generic("VIA_API", &[("VIA_API_VAR", planted[0])]).await.ok();
    let values = temp_dir("maestro-values-");
    let value_file = values.path().join("v");
    std::fs::write(&value_file, planted[1]).unwrap();
    sb.maestro(&[
        "secrets",
        "add",
        "VIA_CLI",
        "--kind",
        "generic",
        "--field-file",
        &format!("VIA_CLI_VAR={}", value_file.display()),
    ])
    .ok();
    let (session, bundle) = sb.new_session("leaks");
    let options = AgentOptions { rust_log: "trace".into(), ..AgentOptions::default() };
    let mut agent = sb.start_agent(&bundle, options);
    sb.api.activate(&session, &["VIA_API", "VIA_CLI"]).await.ok();
    wait_until(WITHIN, || agent.listed_names().len() == 2).expect("both active");

    // Use them every way there is.
    let out = agent
        .exec_as(
            SANDBOX_UID,
            &["--no-mask", "--", "sh", "-c", "printf '%s %s' \"$VIA_API_VAR\" \"$VIA_CLI_VAR\""],
        )
        .ok();
    assert_eq!(out.stdout, format!("{} {}", planted[0], planted[1]));
    agent.run_as(SANDBOX_UID, "cat", &[&agent.file("VIA_CLI_VAR").to_string_lossy()]).ok();
    agent.run_as(1001, "cat", &[&agent.file("VIA_API_VAR").to_string_lossy()]);
    agent.exec_as(SANDBOX_UID, &["--list", "--json"]).ok();
    std::fs::write(&value_file, planted[2]).unwrap();
    sb.maestro(&[
        "secrets",
        "edit",
        "VIA_CLI",
        "--field-file",
        &format!("VIA_CLI_VAR={}", value_file.display()),
    ])
    .ok();
    drop(values);
    wait_until(WITHIN, || {
        std::fs::read_to_string(agent.file("VIA_CLI_VAR")).is_ok_and(|v| v == planted[2])
    })
    .expect("edit reached the agent");
    sb.api.deactivate(&session, &["VIA_API"]).await.ok();
    wait_until(WITHIN, || !agent.file("VIA_API_VAR").exists()).expect("deactivated");
    // Let a usage batch go out while the agent logs at trace.
    std::thread::sleep(Duration::from_millis(1500));

    let pid = agent.pid();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    for value in planted {
        let v = value.as_bytes();
        assert!(!environ.windows(v.len()).any(|w| w == v), "{value} in /proc/{pid}/environ");
        assert!(!cmdline.windows(v.len()).any(|w| w == v), "{value} in /proc/{pid}/cmdline");
    }

    sb.maestro(&["sessions", "end", &session]).ok();
    assert_eq!(agent.wait_exit(TEARDOWN).and_then(|s| s.code()), Some(0), "{}", agent.log());
    let log = agent.log();
    assert!(log.lines().count() > 20, "trace logging is not on:\n{log}");
    for value in planted {
        assert!(!log.contains(value), "{value} in the agent's log");
        let dirs = [sb.dir(), sb.broker.data_dir()];
        for dir in dirs {
            let found = files_containing(dir, value.as_bytes());
            assert!(found.is_empty(), "{value} in {found:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_renewed_before_they_expire_without_losing_secrets() {
    if !fuse_available() {
        return;
    }
    // 4 s certificates: the broker closes an event stream when the certificate it was opened
    // with expires, so the agent must have renewed (new key, new client) to reconnect.
    let sb = Sandbox::with(maestro_tests::broker::BrokerOptions::args(&[
        "--heartbeat",
        "300ms",
        "--cert-ttl",
        "4s",
    ]));
    sb.api.add_generic("API", &[("API_TOKEN", "planted-renew-value")]).await.ok();
    sb.api.add_generic("LATER", &[("LATER_VAR", "planted-later-value")]).await.ok();
    let (session, bundle) = sb.new_session("renew");
    let agent = sb.start_agent(&bundle, AgentOptions::default());
    sb.api.activate(&session, &["API"]).await.ok();
    let file = agent.file("API_TOKEN");
    wait_until(WITHIN, || file.exists()).expect("API active");
    // Three certificate lifetimes; the file must never disappear.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(12) {
        assert!(file.exists(), "secrets lost at {:?}:\n{}", start.elapsed(), agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let renewals = agent.log().matches("session certificate renewed").count();
    assert!(renewals >= 3, "{renewals} renewals in 12 s:\n{}", agent.log());
    // Still in touch: an activation reaches it.
    sb.api.activate(&session, &["LATER"]).await.ok();
    assert!(wait_until(WITHIN, || agent.file("LATER_VAR").exists()).is_some(), "{}", agent.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_just_before_the_session_ends_reach_the_audit_trail() {
    if !fuse_available() {
        return;
    }
    let sb = Sandbox::new();
    sb.api.add_generic("LAST", &[("LAST_TOKEN", "planted-last-value")]).await.ok();
    let (session, bundle) = sb.new_session("last-reads");
    let mut agent = sb.start_agent(&bundle, AgentOptions::default());
    sb.api.activate(&session, &["LAST"]).await.ok();
    wait_until(WITHIN, || agent.file("LAST_TOKEN").exists()).expect("LAST active");
    // Three reads in a burst: the agent batches them, so they are still queued when the
    // session ends a moment later; the broker must take them after the end.
    let path = agent.file("LAST_TOKEN");
    for _ in 0..3 {
        let out = agent.run_as(SANDBOX_UID, "cat", &[path.to_str().unwrap()]);
        assert_eq!(out.status, 0, "read failed: {}", out.stderr);
    }
    sb.maestro(&["sessions", "end", &session]).ok();
    let status = agent.wait_exit(TEARDOWN);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "agent:\n{}", agent.log());
    let history = sb.maestro(&["secrets", "history", "LAST", "--json"]).ok().json();
    let reads = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "file_read" && e["session"] == session.as_str())
        .count();
    assert!(reads >= 3, "expected 3 file reads in the audit trail, got {reads}: {history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_signals_are_forwarded_to_cmd() {
    if !fuse_available() {
        return;
    }
    let sb = Sandbox::new();
    let (_, bundle) = sb.new_session("signals");
    // CMD traps each signal and says so on its stdout, which the agent's log captures.
    let script = "for s in HUP QUIT USR1 USR2; do trap \"echo got-$s\" $s; done; echo armed; \
                  while :; do sleep 0.05; done";
    let options = AgentOptions {
        command: vec!["sh".into(), "-c".into(), script.into()],
        ..AgentOptions::default()
    };
    let mut agent = sb.start_agent(&bundle, options);
    wait_until(TEARDOWN, || agent.log().lines().any(|l| l == "armed"))
        .unwrap_or_else(|| panic!("CMD did not start:\n{}", agent.log()));
    for (signal, name) in [
        (Signal::SIGHUP, "HUP"),
        (Signal::SIGQUIT, "QUIT"),
        (Signal::SIGUSR1, "USR1"),
        (Signal::SIGUSR2, "USR2"),
    ] {
        agent.signal(signal);
        let line = format!("got-{name}");
        wait_until(WITHIN, || agent.log().lines().any(|l| l == line))
            .unwrap_or_else(|| panic!("SIG{name} did not reach CMD:\n{}", agent.log()));
        assert!(agent.is_running(), "SIG{name} must not end the agent:\n{}", agent.log());
    }
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit(TEARDOWN).is_some(), "SIGTERM ends it:\n{}", agent.log());
    assert!(!is_mounted(&agent.mount) && !agent.socket.exists());
}
