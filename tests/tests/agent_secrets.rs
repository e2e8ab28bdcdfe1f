//! The sandbox side serving secrets: the real broker, agent and maestro-exec, the sandbox user
//! uid 1000 (through setpriv) and a foreign uid 1001.
//!
//! * variables and files of activated secrets reach a command and a reader; uid 1001 is refused
//!   by the filesystem and the socket; every use is in the audit trail;
//! * deactivation removes the file and the variable for the next command (asserted within 2 s;
//!   median and 99th percentile over 100 tries printed); edits reach both without a restart;
//! * maestro-exec's exit statuses and one-line errors; its cost next to `env VAR=x true`;
//! * 100 active secrets in locked memory, with only the capabilities the agent needs.
// Helpers of a test panic to fail it, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use maestro_tests::agent::{
    AgentOptions, OTHER_UID, SANDBOX_UID, Sandbox, fuse_available, median_p99, run_cmd, wait_until,
};
use maestro_tests::util::bin;
use maestro_wire::api::AuditEvent;
use maestro_wire::sock::ListedSecret;
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(2);

async fn audit(sandbox: &Sandbox) -> Vec<AuditEvent> {
    serde_json::from_value(sandbox.api.get("/v1/audit").await.ok()).expect("audit records")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variables_and_files_reach_a_command_and_a_reader_and_other_uids_are_refused() {
    if !fuse_available() {
        return;
    }
    let sb = Sandbox::new();
    sb.api.add_generic("API", &[("API_TOKEN", "planted-api-token-7f3a")]).await.ok();
    sb.api
        .post(
            "/v1/secrets",
            json!({"name": "AWS_DEV", "kind": "aws", "fields": {
                "access_key_id": "AKIAPLANTED0001",
                "secret_access_key": "planted-aws-secret-9c1e",
                "region": "eu-west-1"}}),
        )
        .await
        .ok();
    let (session, bundle) = sb.new_session("reach");
    let agent = sb.start_agent(&bundle, AgentOptions::default());
    sb.api.activate(&session, &["API", "AWS_DEV"]).await.ok();
    assert!(
        wait_until(WITHIN, || agent.listed_names().len() == 2).is_some(),
        "activation did not reach the agent: {:?}\n{}",
        agent.listed_names(),
        agent.log()
    );

    // The command sees the variables on top of its own environment.
    let out = agent
        .exec_as(
            SANDBOX_UID,
            &[
                "--no-mask",
                "--",
                "sh",
                "-c",
                "printf '%s|%s|%s|%s|%s' \"$API_TOKEN\" \"$AWS_ACCESS_KEY_ID\" \
               \"$AWS_SECRET_ACCESS_KEY\" \"$AWS_REGION\" \"$KEEP_ME\"",
            ],
        )
        .ok();
    assert_eq!(
        out.stdout,
        "planted-api-token-7f3a|AKIAPLANTED0001|planted-aws-secret-9c1e|eu-west-1|"
    );
    let mut cmd = maestro_tests::agent::as_uid(SANDBOX_UID, bin("maestro-exec"));
    cmd.args([
        "--only",
        "API",
        "--",
        "sh",
        "-c",
        "printf '%s|%s' \"$KEEP_ME\" \"${AWS_REGION-unset}\"",
    ])
    .env("MAESTRO_AGENT_SOCK", &agent.socket)
    .env("KEEP_ME", "kept");
    assert_eq!(run_cmd(cmd).ok().stdout, "kept|unset");

    // A reader sees the files, owned by the sandbox user, read-only.
    let read = agent.run_as(SANDBOX_UID, "cat", &[&agent.file("API_TOKEN").to_string_lossy()]).ok();
    assert_eq!(read.stdout, "planted-api-token-7f3a");
    let creds =
        agent.run_as(SANDBOX_UID, "cat", &[&agent.file("aws/credentials").to_string_lossy()]).ok();
    assert!(
        creds.stdout.starts_with("[default]\naws_access_key_id = AKIAPLANTED0001\n"),
        "{creds:?}"
    );
    let meta = std::fs::metadata(agent.file("API_TOKEN")).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.permissions().mode() & 0o7777), (1000, 1000, 0o400));
    let meta = std::fs::metadata(agent.file("aws")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o500);
    let write = agent.run_as(
        SANDBOX_UID,
        "sh",
        &["-c", &format!("echo x > {}", agent.file("NEW").display())],
    );
    assert_ne!(write.status, 0, "a write under the mount succeeded");

    // Another uid: refused by the filesystem and by the socket, each in one line.
    let denied = agent.run_as(OTHER_UID, "cat", &[&agent.file("API_TOKEN").to_string_lossy()]);
    assert_ne!(denied.status, 0);
    assert!(denied.stderr.contains("Permission denied"), "{denied:?}");
    assert!(!denied.stdout.contains("planted"));
    let refused = agent.exec_as(OTHER_UID, &["--", "env"]);
    assert_eq!(refused.status, 125, "{refused:?}");
    assert_eq!(
        refused.stderr,
        "maestro-exec: uid 1001 may not use this agent: it serves root and the sandbox user \
         (uid 1000) only\n"
    );
    assert!(!refused.stdout.contains("planted"));

    // --list: names, kinds, variables, files; never values.
    let list = agent.exec_as(SANDBOX_UID, &["--list"]).ok();
    assert!(list.stdout.contains("API (generic, version 1)"), "{list:?}");
    assert!(list.stdout.contains(&agent.file("aws/credentials").display().to_string()));
    assert!(!list.stdout.contains("planted") && !list.stdout.contains("AKIAPLANTED"));
    let listed: Vec<ListedSecret> =
        serde_json::from_str(&agent.exec_as(SANDBOX_UID, &["--list", "--json"]).ok().stdout)
            .unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].variables[0], "AWS_ACCESS_KEY_ID");

    // Every use is recorded with who did it, and reaches the broker's audit trail in batches.
    let mut seen = Vec::new();
    let found = async {
        for _ in 0..50 {
            seen = audit(&sb).await;
            let has = |action: &str, uid: u32, secret: Option<&str>| {
                seen.iter().any(|e| {
                    serde_json::to_value(e.action).unwrap() == json!(action)
                        && e.uid == Some(uid)
                        && (secret.is_none() || e.secret.as_deref() == secret)
                })
            };
            if has("injected", 1000, Some("API"))
                && has("file_read", 1000, Some("API"))
                && has("denied", 1001, None)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
    .await;
    assert!(found, "usage missing from the audit trail: {seen:#?}");
    let read_record = seen
        .iter()
        .find(|e| e.detail.as_deref() == Some("API_TOKEN") && e.uid == Some(1000))
        .expect("a file read of API_TOKEN");
    assert_eq!(read_record.command.as_deref(), Some("cat"));
    assert_eq!(read_record.session.as_deref(), Some(session.as_str()));
    // Ordinary use: the unusual-usage rules stay quiet (issue 12).
    sb.assert_no_alerts();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivation_and_edits_reach_the_next_command_without_restart() {
    if !fuse_available() {
        return;
    }
    let sb = Sandbox::new();
    sb.api.add_generic("LAT", &[("LAT_VAR", "planted-latency-value")]).await.ok();
    sb.api.add_generic("EDITED", &[("EDITED_VAR", "planted-before-edit")]).await.ok();
    let (session, bundle) = sb.new_session("latency");
    let agent = sb.start_agent(&bundle, AgentOptions::default());
    let pid = agent.pid();
    let file = agent.file("LAT_VAR");
    let probe = ["--no-mask", "--", "sh", "-c", "printf %s \"${LAT_VAR-unset}\""];

    let (mut activation, mut file_gone, mut socket_gone) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..100 {
        sb.api.activate(&session, &["LAT"]).await.ok();
        let t = Instant::now();
        wait_until(WITHIN, || file.exists())
            .unwrap_or_else(|| panic!("round {round}: activation not seen"));
        activation.push(t.elapsed());
        if round % 10 == 0 {
            assert_eq!(agent.exec_as(SANDBOX_UID, &probe).ok().stdout, "planted-latency-value");
        }
        sb.api.deactivate(&session, &["LAT"]).await.ok();
        // Both measured from the API call's return.
        let t = Instant::now();
        wait_until(WITHIN, || !file.exists())
            .unwrap_or_else(|| panic!("round {round}: the file is still there after 2 s"));
        file_gone.push(t.elapsed());
        wait_until(WITHIN, || !agent.listed_names().contains(&"LAT".to_owned()))
            .unwrap_or_else(|| panic!("round {round}: still listed after 2 s"));
        socket_gone.push(t.elapsed());
        // The next command does not get the variable.
        assert_eq!(agent.exec_as(SANDBOX_UID, &probe).ok().stdout, "unset", "round {round}");
    }
    let (a_med, a_p99) = median_p99(activation);
    let (f_med, f_p99) = median_p99(file_gone);
    let (s_med, s_p99) = median_p99(socket_gone);
    println!(
        "activation -> file visible:            median {a_med:.3} ms, p99 {a_p99:.3} ms (100 tries)"
    );
    println!(
        "deactivation -> file gone (from API):   median {f_med:.3} ms, p99 {f_p99:.3} ms (100 tries)"
    );
    println!(
        "deactivation -> off the socket:        median {s_med:.3} ms, p99 {s_p99:.3} ms (100 tries)"
    );

    // An edit reaches the file and the next command, same agent process.
    sb.api.activate(&session, &["EDITED"]).await.ok();
    let edited = agent.file("EDITED_VAR");
    wait_until(WITHIN, || edited.exists()).expect("EDITED active");
    let value_file = maestro_tests::util::temp_dir("maestro-edit-");
    let path = value_file.path().join("v");
    std::fs::write(&path, "planted-after-edit").unwrap();
    sb.maestro(&[
        "secrets",
        "edit",
        "EDITED",
        "--field-file",
        &format!("EDITED_VAR={}", path.display()),
    ])
    .ok();
    drop(value_file);
    let reached = wait_until(WITHIN, || {
        std::fs::read_to_string(&edited).is_ok_and(|v| v == "planted-after-edit")
    });
    assert!(reached.is_some(), "the edit did not reach the file:\n{}", agent.log());
    let out = agent
        .exec_as(SANDBOX_UID, &["--no-mask", "--", "sh", "-c", "printf %s \"$EDITED_VAR\""])
        .ok();
    assert_eq!(out.stdout, "planted-after-edit");
    let listed = agent.listed().unwrap();
    assert_eq!(listed.iter().find(|s| s.name == "EDITED").unwrap().version, 2);
    assert_eq!(agent.pid(), pid, "the agent restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maestro_exec_exit_statuses_errors_and_cost() {
    if !fuse_available() {
        return;
    }
    // No agent: one line that says how to fix it, status 125.
    let nowhere = maestro_tests::util::temp_dir("maestro-noagent-");
    let sock = nowhere.path().join("agent.sock");
    let mut cmd = std::process::Command::new(bin("maestro-exec"));
    cmd.args(["--", "true"]).env("MAESTRO_AGENT_SOCK", &sock);
    let out = run_cmd(cmd);
    assert_eq!(out.status, 125);
    assert_eq!(
        out.stderr,
        format!(
            "maestro-exec: no agent at {} (is maestro-agent running? set MAESTRO_AGENT_SOCK to \
             its socket)\n",
            sock.display()
        )
    );

    let sb = Sandbox::new();
    sb.api.add_generic("ONE", &[("ONE_VAR", "planted-one")]).await.ok();
    let (session, bundle) = sb.new_session("codes");
    let agent = sb.start_agent(&bundle, AgentOptions::default());
    sb.api.activate(&session, &["ONE"]).await.ok();
    wait_until(WITHIN, || agent.listed_names().len() == 1).expect("ONE active");

    assert_eq!(agent.exec_as(SANDBOX_UID, &["sh", "-c", "exit 3"]).status, 3);
    let missing = agent.exec_as(SANDBOX_UID, &["--", "no-such-command-xyz"]);
    assert_eq!(missing.status, 127);
    assert_eq!(missing.stderr, "maestro-exec: no-such-command-xyz: command not found\n");
    let plain = sb.dir().join("not-executable");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cannot = agent.exec_as(SANDBOX_UID, &[&plain.to_string_lossy()]);
    assert_eq!(cannot.status, 126, "{cannot:?}");
    let inactive = agent.exec_as(SANDBOX_UID, &["--only", "NOPE", "true"]);
    assert_eq!(inactive.status, 125);
    assert_eq!(
        inactive.stderr,
        "maestro-exec: secret NOPE is not active in this session; activate it or drop it from --only\n"
    );
    let usage = agent.exec_as(SANDBOX_UID, &["--bogus"]);
    assert_eq!(usage.status, 125);
    assert_eq!(usage.stderr, "maestro-exec: unknown option --bogus; see maestro-exec --help\n");

    // Cost next to `env VAR=x true` (both as root, 200 runs each). Printed, not asserted.
    let time = |program: &str, args: &[&str]| {
        let mut samples = Vec::new();
        for _ in 0..200 {
            let mut cmd = std::process::Command::new(program);
            cmd.args(args).env("MAESTRO_AGENT_SOCK", &agent.socket);
            let t = Instant::now();
            assert!(cmd.status().unwrap().success());
            samples.push(t.elapsed());
        }
        median_p99(samples)
    };
    let (env_med, env_p99) = time("env", &["VAR=x", "true"]);
    let exec = bin("maestro-exec");
    let (ex_med, ex_p99) = time(&exec.to_string_lossy(), &["true"]);
    println!(
        "env VAR=x true: median {env_med:.3} ms, p99 {env_p99:.3} ms; maestro-exec true (1 secret): \
         median {ex_med:.3} ms, p99 {ex_p99:.3} ms; overhead {:.3} ms",
        ex_med - env_med
    );
}

/// Reads `key:` from /proc/<pid>/status (the value, trimmed).
fn status_field(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
        .unwrap_or_default()
}

fn kib(text: &str) -> u64 {
    text.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_secrets_in_locked_memory_with_few_capabilities() {
    if !fuse_available() {
        return;
    }
    let sb = Sandbox::new();
    let mut names = Vec::new();
    for i in 0..100 {
        let name = format!("S{i:03}");
        sb.api
            .add_generic(
                &name,
                &[(&format!("VAR_{i:03}"), &format!("planted-{i:03}-{}", "x".repeat(40)))],
            )
            .await
            .ok();
        names.push(name);
    }
    let (session, bundle) = sb.new_session("hundred");
    let agent = sb.start_agent(&bundle, AgentOptions::default());
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    sb.api.activate(&session, &refs).await.ok();
    wait_until(Duration::from_secs(10), || agent.listed_names().len() == 100).expect("100 active");
    let out = agent.exec_as(SANDBOX_UID, &["--", "sh", "-c", "env | grep -c '^VAR_'"]).ok();
    assert_eq!(out.stdout.trim(), "100");
    assert_eq!(std::fs::read_dir(&agent.mount).unwrap().count(), 100);
    std::thread::sleep(Duration::from_millis(500));

    let pid = agent.pid();
    let rss = kib(&status_field(pid, "VmRSS:"));
    let locked = kib(&status_field(pid, "VmLck:"));
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let anon = rollup.lines().find_map(|l| l.strip_prefix("Anonymous:")).map(kib).unwrap_or(0);
    println!("agent with 100 secrets: VmRSS {rss} KiB (anonymous {anon} KiB), VmLck {locked} KiB");
    // Locked: everything resident is locked (mlockall, pages locked as they are touched).
    assert!(locked >= rss * 9 / 10, "VmLck {locked} KiB of VmRSS {rss} KiB");
    assert!(anon < 15 * 1024, "anonymous memory {anon} KiB");
    // A debug build's code alone is larger than the budget; the budget is for release builds.
    if !cfg!(debug_assertions) {
        assert!(rss < 15 * 1024, "VmRSS {rss} KiB with 100 secrets");
    }
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
    assert_eq!(core.split_whitespace().collect::<Vec<_>>()[4..6], ["0", "0"], "{core}");

    // Every thread keeps only CAP_KILL, CAP_SETGID, CAP_SETUID, CAP_SETPCAP, CAP_IPC_LOCK and
    // CAP_SYS_ADMIN, in every set; none inheritable or ambient.
    let kept =
        format!("{:016x}", (1u64 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 14) | (1 << 21));
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap();
        let field =
            |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).unwrap().trim().to_owned();
        assert_eq!(field("CapEff:"), kept, "thread {:?}", task.file_name());
        assert_eq!(field("CapPrm:"), kept);
        assert_eq!(field("CapBnd:"), kept);
        assert_eq!(field("CapInh:"), "0000000000000000");
        assert_eq!(field("CapAmb:"), "0000000000000000");
    }
}
