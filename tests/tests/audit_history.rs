//! History that scales, end to end (issue 12): the real broker, agent, `maestro-exec` and
//! `maestro` CLI. Uses made through the agent are filtered (secret, session label, action,
//! command), paged through in both directions with no duplicates or gaps, exported as JSON
//! lines, followed (`--follow` picks up a record appended while it runs, once), and summed by
//! `maestro secrets usage` to the figures the trail holds; a bad filter is refused in one line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use maestro_tests::agent::{AgentOptions, SANDBOX_UID, Sandbox, fuse_available, wait_until};
use maestro_tests::util::bin;
use maestro_wire::api::{AuditAction, AuditEvent, SecretUsage};
use serde_json::Value;

const WITHIN: Duration = Duration::from_secs(10);
/// `maestro-exec -- true` runs (each uses both secrets).
const RUNS: usize = 6;
/// The fields of an exported line, in order (docs/cli.md, "History and export").
const LINE_FIELDS: [&str; 15] = [
    "v",
    "seq",
    "at",
    "last_at",
    "action",
    "count",
    "secret",
    "session",
    "session_label",
    "pid",
    "uid",
    "command",
    "exe",
    "claimed_command",
    "detail",
];

async fn trail(sb: &Sandbox, query: &str) -> Vec<AuditEvent> {
    serde_json::from_value(sb.api.get(&format!("/v1/audit{query}")).await.ok()).unwrap()
}

/// Uses of `secret` in `events` (of `action`, or of every use action).
fn uses_of(events: &[AuditEvent], secret: &str, action: Option<AuditAction>) -> u64 {
    events
        .iter()
        .filter(|e| e.secret.as_deref() == Some(secret) && AuditAction::USES.contains(&e.action))
        .filter(|e| action.is_none_or(|a| a == e.action))
        .map(|e| e.count.unwrap_or(1))
        .sum()
}

fn cli_json(sb: &Sandbox, args: &[&str]) -> Vec<AuditEvent> {
    serde_json::from_value(sb.maestro(args).ok().json()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_filters_pages_exports_follows_and_sums_up() {
    if !fuse_available() {
        return;
    }
    let sb = Sandbox::new();
    sb.api.add_generic("HIST_A", &[("HIST_A_TOKEN", "planted-hist-a-5d1c9e")]).await.ok();
    sb.api.add_generic("HIST_B", &[("HIST_B_TOKEN", "planted-hist-b-77e0aa")]).await.ok();
    let (session, bundle) = sb.new_session("hist-run");
    let agent = sb.start_agent(&bundle, AgentOptions::default());
    sb.api.activate(&session, &["HIST_A", "HIST_B"]).await.ok();
    assert!(wait_until(WITHIN, || agent.listed_names().len() == 2).is_some(), "{}", agent.log());
    for _ in 0..RUNS {
        agent.exec_as(SANDBOX_UID, &["--", "true"]).ok();
    }
    let file = agent.file("HIST_A_TOKEN");
    agent.run_as(SANDBOX_UID, "cat", &[&file.to_string_lossy()]).ok();

    // The agent reports in batches: wait for every use.
    let mut all = Vec::new();
    for _ in 0..100 {
        all = trail(&sb, "").await;
        if uses_of(&all, "HIST_A", Some(AuditAction::Injected)) >= RUNS as u64
            && uses_of(&all, "HIST_A", Some(AuditAction::FileRead)) >= 1
            && uses_of(&all, "HIST_B", Some(AuditAction::Injected)) >= RUNS as u64
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(uses_of(&all, "HIST_A", Some(AuditAction::Injected)), RUNS as u64, "{all:#?}");
    assert_eq!(uses_of(&all, "HIST_A", Some(AuditAction::FileRead)), 1, "{all:#?}");
    assert_eq!(uses_of(&all, "HIST_B", Some(AuditAction::Injected)), RUNS as u64);
    // The agent's own fetches of the material are uses too (without a command).
    let fetched = uses_of(&all, "HIST_A", Some(AuditAction::Fetched));
    let total = uses_of(&all, "HIST_A", None);
    assert_eq!(total, RUNS as u64 + 1 + fetched);
    let seqs: Vec<i64> = all.iter().map(|e| e.seq).collect();

    // Filters, through the CLI: each record matches, and nothing that matches is left out.
    let a = cli_json(&sb, &["audit", "--secret", "HIST_A", "--json"]);
    assert_eq!(a.len(), all.iter().filter(|e| e.secret.as_deref() == Some("HIST_A")).count());
    let by_label = cli_json(&sb, &["audit", "--session", "hist-run", "--json"]);
    assert!(!by_label.is_empty());
    assert!(by_label.iter().all(|e| e.session.as_deref() == Some(session.as_str())
        && e.session_label.as_deref() == Some("hist-run")));
    assert_eq!(
        by_label.len(),
        all.iter().filter(|e| e.session.as_deref() == Some(session.as_str())).count()
    );
    let reads = cli_json(&sb, &["audit", "--action", "file_read", "--command", "cat", "--json"]);
    assert_eq!(reads.len(), 1, "{reads:#?}");
    assert_eq!(reads[0].secret.as_deref(), Some("HIST_A"));
    let injected =
        cli_json(&sb, &["audit", "--action", "injected", "--secret", "HIST_B", "--json"]);
    assert_eq!(injected.iter().map(|e| e.count.unwrap_or(1)).sum::<u64>(), RUNS as u64);
    let table = sb.maestro(&["audit", "--session", "hist-run"]).ok();
    assert!(table.stdout.contains("hist-run"), "the table shows labels: {}", table.stdout);

    // Paging, three records a page: older pages from the newest, then newer pages from the
    // start; each record once, in order.
    let mut older: Vec<i64> = Vec::new();
    let mut query = "?limit=3".to_owned();
    loop {
        let page = trail(&sb, &query).await;
        let Some(first) = page.first() else { break };
        assert!(page.len() <= 3);
        older.splice(0..0, page.iter().map(|e| e.seq));
        query = format!("?limit=3&before={}", first.seq);
    }
    assert_eq!(older, seqs, "paging towards older");
    let mut newer: Vec<i64> = Vec::new();
    let mut after = 0;
    loop {
        let page = trail(&sb, &format!("?limit=3&after={after}")).await;
        let Some(last) = page.last() else { break };
        after = last.seq;
        newer.extend(page.iter().map(|e| e.seq));
    }
    assert_eq!(newer, seqs, "paging towards newer");

    // The summary adds up to the trail.
    let usage: SecretUsage =
        serde_json::from_value(sb.maestro(&["secrets", "usage", "HIST_A", "--json"]).ok().json())
            .unwrap();
    assert_eq!(usage.uses, total);
    assert_eq!(
        usage.records as usize,
        all.iter()
            .filter(
                |e| e.secret.as_deref() == Some("HIST_A") && AuditAction::USES.contains(&e.action)
            )
            .count()
    );
    assert_eq!(usage.sessions.len(), 1);
    assert_eq!(usage.sessions[0].label.as_deref(), Some("hist-run"));
    assert_eq!(usage.sessions[0].uses, total);
    let mut per_command: Vec<(Option<&str>, u64)> =
        usage.commands.iter().map(|c| (c.command.as_deref(), c.uses)).collect();
    per_command.sort();
    let mut want = vec![(Some("cat"), 1), (Some("maestro-exec"), RUNS as u64)];
    if fetched > 0 {
        want.insert(0, (None, fetched));
    }
    assert_eq!(per_command, want);
    assert_eq!(usage.days.iter().map(|d| d.uses).sum::<u64>(), total);
    assert!(usage.first_used_at.is_some() && usage.last_used_at >= usage.first_used_at);
    let text = sb.maestro(&["secrets", "usage", "HIST_A"]).ok().stdout;
    for want in ["uses:", "hist-run", "COMMAND", "maestro-exec", "cat", "DAY"] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }

    // Export: every record, one JSON object a line, the documented fields in order.
    let export = sb.maestro(&["audit", "export", "--since", "1h"]).ok();
    let lines: Vec<Value> =
        export.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect::<Vec<_>>(), seqs);
    for (text, line) in export.stdout.lines().zip(&lines) {
        let mut keys: Vec<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
        // In the line's own order (serde_json's `Value` sorts its keys).
        keys.sort_by_key(|k| text.find(&format!("\"{k}\":")).unwrap());
        assert_eq!(keys, LINE_FIELDS, "{text}");
        assert_eq!(line["v"], 1);
    }
    assert!(!export.stdout.contains("planted"), "no value is exported");
    let only_a = sb.maestro(&["audit", "export", "--since", "1h", "--secret", "HIST_A"]).ok();
    assert_eq!(only_a.stdout.lines().count(), a.len());
    let future = sb.maestro(&["audit", "export", "--since", "2999-01-01T00:00:00Z"]).ok();
    assert_eq!(future.stdout, "");

    // Follow: the records so far, then one appended while it runs, each once.
    let mut follower = Command::new(bin("maestro"))
        .args(["audit", "export", "--since", "1h", "--follow", "--interval", "1"])
        .env_remove("MAESTRO_TOKEN_FILE")
        .env("MAESTRO_URL", &sb.broker.url)
        .env("MAESTRO_TOKEN", &sb.token)
        .env("MAESTRO_CA", sb.broker.ca_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut followed: Vec<Value> = Vec::new();
    let read_until = |followed: &mut Vec<Value>, done: &dyn Fn(&[Value]) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !done(followed) && std::time::Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                followed.push(serde_json::from_str(&line).unwrap());
            }
        }
    };
    read_until(&mut followed, &|f| f.len() >= seqs.len());
    assert_eq!(followed.len(), seqs.len());
    sb.api.deactivate(&session, &["HIST_B"]).await.ok();
    read_until(&mut followed, &|f| f.iter().any(|l| l["action"] == "deactivated"));
    // A few more polls: nothing is written twice.
    std::thread::sleep(Duration::from_secs(3));
    while let Ok(line) = rx.try_recv() {
        followed.push(serde_json::from_str(&line).unwrap());
    }
    let _ = follower.kill();
    let _ = follower.wait();
    let followed_seqs: Vec<i64> = followed.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    let distinct: BTreeSet<i64> = followed_seqs.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        followed_seqs.len(),
        "a record was written twice: {followed_seqs:?}"
    );
    assert!(followed_seqs.windows(2).all(|w| w[0] < w[1]), "{followed_seqs:?}");
    let now = trail(&sb, "").await;
    assert_eq!(followed_seqs, now.iter().map(|e| e.seq).collect::<Vec<_>>(), "no gap");
    let last = followed.last().unwrap();
    assert_eq!(
        (last["action"].as_str(), last["secret"].as_str()),
        (Some("deactivated"), Some("HIST_B"))
    );
    assert_eq!(last["session_label"], "hist-run");

    // A bad filter: one line, exit 1, nothing printed on stdout.
    for (args, want) in [
        (&["audit", "--action", "bogus"][..], "maestro: unknown action 'bogus'; actions are "),
        (&["audit", "--session", "no-such-label"][..], "maestro: no session of yours has the id"),
        (&["audit", "export", "--since", "yesterday"][..], "maestro: since must be an RFC 3339"),
        (&["secrets", "usage", "NOPE"][..], "maestro: "),
    ] {
        let out = sb.maestro(args);
        assert_eq!(out.status, 1, "{args:?}: {out:?}");
        assert!(out.stderr.starts_with(want), "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {}", out.stderr);
        assert_eq!(out.stdout, "");
    }
    let clap = sb.maestro(&["audit", "export", "--since", "1h", "--until", "1m", "--follow"]);
    assert_eq!(clap.status, 2, "--until and --follow conflict: {clap:?}");
}
