//! Issue 12 parts 2 and 3 end to end, with the real broker and CLI, usage reports posted over
//! mutual TLS the way an agent posts them: each rule flagging what it should and ordinary use
//! staying quiet, the marker and flags in `secrets ls` / `show`, `maestro alerts`; a decoy
//! read ending its session within a second; the webhook received by a local HTTP receiver,
//! its signature verified, after a first answer of 500; bad webhook settings refused with
//! nothing changed; a real agent's reads outside `maestro-exec` flagged (and those of CMD and
//! its children not); two brokers on one PostgreSQL database delivering each alert once.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use maestro_tests::broker::{Broker, TestAgent};
use maestro_wire::agent_api::AgentEvent;
use serde_json::{Value, json};
use sha2::Sha256;

/// A usage report of `secret`, now.
fn report(secret: &str, action: &str, command: &str, uid: u32) -> Value {
    json!({"secret": secret, "action": action, "at": maestro_tests::util::now_rfc3339(),
           "pid": 4242, "uid": uid, "command": command, "detail": null})
}

async fn post(agent: &TestAgent, reports: Vec<Value>) -> Value {
    let body = json!({"reports": reports, "sandbox_uid": 1000});
    agent.post("/v1/agent/usage", body).await.unwrap().ok()
}

/// A session of the user's labelled `label` (created with the CLI), with `names` active,
/// enrolled over mutual TLS.
async fn session(
    broker: &Broker,
    token: &str,
    label: &str,
    names: &[&str],
    decoys: bool,
) -> (String, TestAgent) {
    let mut args = vec!["sessions", "create", "--label", label];
    if decoys {
        args.push("--decoys");
    }
    let out = broker.maestro(token, &args).ok();
    let mut lines = out.stdout.lines();
    let id = lines.next().unwrap().trim().to_owned();
    let enroll = lines.next().unwrap().trim().to_owned();
    if !names.is_empty() {
        let mut args = vec!["secrets", "activate", "--session", &id];
        args.extend_from_slice(names);
        broker.maestro(token, &args).ok();
    }
    (id, TestAgent::enroll(broker, &enroll).await.expect("enrolls"))
}

fn alerts(broker: &Broker, token: &str, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["alerts", "ls", "--json"];
    all.extend_from_slice(args);
    broker.maestro(token, &all).ok().json().as_array().unwrap().clone()
}

fn rules(alerts: &[Value]) -> Vec<String> {
    let mut r: Vec<String> =
        alerts.iter().map(|a| a["rule"].as_str().unwrap().to_owned()).collect();
    r.sort();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_flags_what_it_should_and_ordinary_use_stays_quiet() {
    let broker = Broker::start();
    let token = broker.add_user("alerts-tester");
    let api = broker.api(&token);
    api.add_generic("KEY", &[("KEY_VAR", "planted-alert-value-0001")]).await.ok();
    api.add_generic("OFF", &[("OFF_VAR", "v")]).await.ok();
    broker
        .maestro(&token, &["secrets", "edit", "OFF", "--alerts-off", "new_command,foreign_uid"])
        .ok();
    let (dev, agent) = session(&broker, &token, "dev", &["KEY", "OFF"], false).await;

    // Ordinary use: the same command again and again at a normal rate.
    for _ in 0..12 {
        post(
            &agent,
            vec![
                report("KEY", "injected", "terraform", 1000),
                report("OFF", "injected", "terraform", 1000),
            ],
        )
        .await;
    }
    broker.assert_no_alerts(&token);

    // new_command, foreign_uid, leak_attempt, scan_finding; the rules OFF turned off stay quiet.
    post(
        &agent,
        vec![
            report("KEY", "injected", "nc", 1000),
            report("KEY", "injected", "terraform", 0),
            report("KEY", "leak_attempt", "terraform", 1000),
            report("KEY", "scan_finding", "maestro-exec", 1000),
            report("OFF", "injected", "nc", 0),
        ],
    )
    .await;
    let got = alerts(&broker, &token, &[]);
    assert_eq!(
        rules(&got),
        ["foreign_uid", "leak_attempt", "new_command", "scan_finding"],
        "{got:#?}"
    );

    // outside_exec: a file read outside maestro-exec of a secret only used through it.
    let mut read = report("KEY", "file_read", "terraform", 1000);
    read["outside_exec"] = json!(true);
    post(&agent, vec![read]).await;
    // burst: far above the usual rate.
    let mut many = report("KEY", "injected", "terraform", 1000);
    many["count"] = json!(400);
    post(&agent, vec![many]).await;
    // new_label: a session whose label differs from every earlier one.
    let (_ci, ci) = session(&broker, &token, "ci", &["KEY"], false).await;
    post(&ci, vec![report("KEY", "injected", "terraform", 1000)]).await;
    let got = alerts(&broker, &token, &["--secret", "KEY"]);
    assert_eq!(
        rules(&got),
        [
            "burst",
            "foreign_uid",
            "leak_attempt",
            "new_command",
            "new_label",
            "outside_exec",
            "scan_finding"
        ]
    );
    assert_eq!(rules(&alerts(&broker, &token, &["--session", "ci"])), ["new_label"]);
    assert_eq!(alerts(&broker, &token, &["--secret", "OFF"]), Vec::<Value>::new());

    // The marker in `secrets ls`, the flags in `secrets show`, and acknowledging.
    let ls = broker.maestro(&token, &["secrets", "ls"]).ok().stdout;
    let key_row = ls.lines().find(|l| l.starts_with("KEY ")).unwrap();
    assert!(key_row.contains("! 7"), "{ls}");
    let off_row = ls.lines().find(|l| l.starts_with("OFF ")).unwrap();
    assert!(!off_row.contains('!'), "{ls}");
    let show = broker.maestro(&token, &["secrets", "show", "KEY"]).ok().stdout;
    assert!(show.contains("7 not acknowledged"), "{show}");
    assert!(show.contains("`nc` used KEY for the first time (seen before: terraform)"), "{show}");
    let show_off = broker.maestro(&token, &["secrets", "show", "OFF"]).ok().stdout;
    assert!(show_off.contains("foreign_uid, new_command"), "{show_off}");
    let table = broker.maestro(&token, &["alerts", "ls", "--session", &dev]).ok().stdout;
    assert!(table.contains("RULE") && table.contains("outside_exec"), "{table}");
    let id = got[0]["id"].as_i64().unwrap().to_string();
    let acked = broker.maestro(&token, &["alerts", "ack", &id]).ok().stdout;
    assert_eq!(acked, format!("acknowledged {id}\n"));
    assert_eq!(alerts(&broker, &token, &["--unacked"]).len(), 6);
    let again = broker.maestro(&token, &["alerts", "ack", &id]);
    assert_ne!(again.status, 0);
    assert!(again.stderr.contains("no alert of yours"), "{again:?}");
    assert!(!broker.log().contains("planted-alert-value"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decoy_read_is_flagged_and_ends_its_session_within_a_second() {
    let broker = Broker::start();
    let token = broker.add_user("decoy-tester");
    let config = broker.maestro(&token, &["alerts", "config", "--on-alert", "end-session"]).ok();
    assert!(config.stdout.contains("end-session"), "{config:?}");
    let (id, agent) = session(&broker, &token, "decoyed", &[], true).await;
    let shown = broker.maestro(&token, &["sessions", "show", &id]).ok().stdout;
    assert!(shown.contains("decoys"), "{shown}");
    // The agent is told to serve decoys.
    let mut events = agent.events().await.unwrap();
    match events.next_event(Duration::from_secs(5)).await {
        Some(AgentEvent::Snapshot { decoys, .. }) => assert!(decoys, "the snapshot says no decoys"),
        other => panic!("no snapshot: {other:?}"),
    }
    let started = Instant::now();
    post(&agent, vec![report("aws-prod-admin", "decoy_read", "cat", 1000)]).await;
    let api = broker.api(&token);
    let deadline = Instant::now() + Duration::from_secs(5);
    let ended_after = loop {
        let s = api.get(&format!("/v1/sessions/{id}")).await.ok();
        if s["state"] == "ended" {
            assert_eq!(s["ended_reason"], "alert: decoy");
            break started.elapsed();
        }
        assert!(Instant::now() < deadline, "the session was not ended: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("decoy read to session ended: {} ms", ended_after.as_millis());
    assert!(ended_after < Duration::from_secs(1), "took {ended_after:?}");
    // The agent hears of it.
    let ended = events.next_event(Duration::from_secs(5)).await;
    assert!(matches!(ended, Some(AgentEvent::Ended { .. })), "{ended:?}");
    let got = alerts(&broker, &token, &[]);
    assert_eq!(rules(&got), ["decoy"]);
    assert_eq!(got[0]["actions"], json!(["end-session"]));
    assert_eq!(got[0]["reason"], "decoy credential aws-prod-admin was read");

    // A session without decoys: a decoy read is ignored (logged), nothing ends.
    let (plain, plain_agent) = session(&broker, &token, "plain", &[], false).await;
    let r = post(&plain_agent, vec![report("aws-prod-admin", "decoy_read", "cat", 1000)]).await;
    assert_eq!(r["accepted"], 0);
    assert_eq!(api.get(&format!("/v1/sessions/{plain}")).await.ok()["state"], "live");
    assert_eq!(alerts(&broker, &token, &[]).len(), 1);
}

/// What the local receiver saw of one POST.
#[derive(Debug, Clone)]
struct Delivery {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    answered: u16,
}

impl Delivery {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A one-request-per-connection HTTP receiver on loopback answering `statuses` in turn (then
/// 200), recording what it got.
fn receiver(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<Delivery>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        let mut statuses = statuses.into_iter();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                let n = stream.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(p + 4);
                }
            };
            let Some(head_end) = head_end else { continue };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let headers: Vec<(String, String)> = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect();
            let length: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            while buf.len() < head_end + length {
                let n = stream.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let status = statuses.next().unwrap_or(200);
            let reason = if status == 200 { "OK" } else { "Internal Server Error" };
            let _ = stream.write_all(
                format!(
                    "HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
                .as_bytes(),
            );
            record.lock().unwrap().push(Delivery {
                headers,
                body: buf[head_end..].to_vec(),
                answered: status,
            });
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_is_signed_and_retried_after_a_500() {
    let broker = Broker::start();
    let token = broker.add_user("webhook-tester");
    let (url, seen) = receiver(vec![500]);
    let signing = b"whsec-planted-signing-secret-42";
    let out = broker.maestro_stdin(
        &token,
        &["alerts", "config", "--webhook", &url, "--webhook-secret-stdin", "--on-alert", "notify"],
        Some(signing),
    );
    let out = out.ok();
    assert!(out.stdout.contains("signing secret  set") || out.stdout.contains("set"), "{out:?}");
    assert!(!out.stdout.contains("whsec-planted"));
    let api = broker.api(&token);
    api.add_generic("HOOKED", &[("HOOKED_VAR", "v")]).await.ok();
    let (_id, agent) = session(&broker, &token, "dev", &["HOOKED"], false).await;
    post(&agent, vec![report("HOOKED", "leak_attempt", "python3", 1000)]).await;

    // The first POST gets a 500, the retry a 200.
    let deadline = Instant::now() + Duration::from_secs(15);
    while seen.lock().unwrap().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "deliveries: {:?}\n{}",
            seen.lock().unwrap(),
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.iter().map(|d| d.answered).collect::<Vec<_>>(), [500, 200]);
    for d in &got {
        // The documented verification: HMAC-SHA256 of the raw body with the signing secret.
        let mut mac = Hmac::<Sha256>::new_from_slice(signing).unwrap();
        mac.update(&d.body);
        let want = format!("sha256={}", hex_of(&mac.finalize().into_bytes()));
        assert_eq!(d.header("maestro-signature"), Some(want.as_str()));
        let body: Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(body["event"], "maestro.alert");
        assert_eq!(body["alert"]["rule"], "leak_attempt");
        assert_eq!(body["alert"]["secret"], "HOOKED");
        assert_eq!(d.header("maestro-alert-id").unwrap(), body["alert"]["id"].to_string());
    }
    assert_eq!(got[0].body, got[1].body, "a retry sends the same alert");
    // A body changed in transit would not verify.
    let mut mac = Hmac::<Sha256>::new_from_slice(signing).unwrap();
    mac.update(b"{\"forged\":true}");
    assert_ne!(
        got[0].header("maestro-signature").unwrap(),
        format!("sha256={}", hex_of(&mac.finalize().into_bytes()))
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let a = &alerts(&broker, &token, &[])[0];
        if a["webhook"] == "delivered" {
            break;
        }
        assert!(Instant::now() < deadline, "{a}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The signing secret never reaches the log, the config answer or the database file.
    assert!(!broker.log().contains("whsec-planted"));
    let config = broker.maestro(&token, &["alerts", "config", "--json"]).ok().json();
    assert_eq!(config["webhook_secret_set"], true);
    assert!(!config.to_string().contains("whsec-planted"));
    assert!(maestro_tests::util::files_containing(broker.data_dir(), b"whsec-planted").is_empty());
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_oversized_webhook_settings_are_refused_with_nothing_changed() {
    let broker = Broker::start();
    let token = broker.add_user("config-tester");
    let (url, _seen) = receiver(vec![]);
    broker
        .maestro_stdin(
            &token,
            &[
                "alerts",
                "config",
                "--webhook",
                &url,
                "--webhook-secret-stdin",
                "--on-alert",
                "notify,deactivate",
            ],
            Some(b"a-good-signing-secret-0001"),
        )
        .ok();
    let before = broker.maestro(&token, &["alerts", "config", "--json"]).ok().json();
    let refused = |args: &[&str], stdin: Option<&[u8]>, says: &str| {
        let out = broker.maestro_stdin(&token, args, stdin);
        assert_ne!(out.status, 0, "{out:?}");
        assert!(out.stderr.contains(says), "{out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    };
    refused(&["alerts", "config", "--webhook", "http://hooks.example.com/x"], None, "use https");
    refused(
        &["alerts", "config", "--webhook", "https://user:pw@hooks.example.com/"],
        None,
        "no user name",
    );
    refused(&["alerts", "config", "--webhook", "file:///etc/passwd"], None, "invalid webhook URL");
    refused(&["alerts", "config", "--webhook", "ftp://127.0.0.1/x"], None, "scheme must be https");
    let long = format!("https://hooks.example.com/{}", "a".repeat(4096));
    refused(&["alerts", "config", "--webhook", &long], None, "longer than 2048 bytes");
    refused(
        &["alerts", "config", "--webhook", "https://hooks.example.com/x", "--webhook-secret-stdin"],
        Some(b"short"),
        "16 to 1024 bytes",
    );
    refused(
        &["alerts", "config", "--webhook", "https://hooks.example.com/x", "--webhook-secret-stdin"],
        Some(&vec![b'x'; 5000]),
        "longer than 1024 bytes",
    );
    refused(
        &["alerts", "config", "--on-alert", "notify,explode"],
        None,
        "invalid action 'explode'",
    );
    refused(
        &["secrets", "add", "X", "--kind", "generic", "--field", "X=v", "--alerts-off", "bursts"],
        None,
        "invalid rule 'bursts'",
    );
    // The API itself refuses an oversized body.
    let api = broker.api(&token);
    let huge =
        json!({"webhook_url": format!("https://h.example.com/{}", "a".repeat(2 * 1024 * 1024))});
    let r = api.call(reqwest::Method::PUT, "/v1/alerts/config", Some(huge)).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(broker.maestro(&token, &["alerts", "config", "--json"]).ok().json(), before);
    assert_eq!(broker.maestro(&token, &["secrets", "ls", "--json"]).ok().json(), json!([]));
}

/// With a real agent: reads through `maestro-exec` (CMD reading the file itself, and a child
/// of CMD reading it) are inside; a plain read by the sandbox user outside it is flagged, and
/// the agent reports the sandbox uid so that other uids can be judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_agent_reports_reads_outside_maestro_exec() {
    use maestro_tests::agent::{AgentOptions, SANDBOX_UID, Sandbox, fuse_available, wait_until};
    if !fuse_available() {
        return;
    }
    let sb = Sandbox::new();
    sb.api.add_generic("FILEKEY", &[("FILEKEY", "planted-file-key-0042")]).await.ok();
    let (session, bundle) = sb.new_session("exec");
    let agent = sb.start_agent(&bundle, AgentOptions::default());
    sb.api.activate(&session, &["FILEKEY"]).await.ok();
    assert!(
        wait_until(Duration::from_secs(5), || agent.listed_names().len() == 1).is_some(),
        "{}",
        agent.log()
    );
    let file = agent.file("FILEKEY").to_string_lossy().into_owned();
    // The baseline: a dozen reads through maestro-exec, by CMD and by a child of CMD.
    for _ in 0..6 {
        assert_eq!(
            agent.exec_as(SANDBOX_UID, &["--no-mask", "--", "cat", &file]).ok().stdout,
            "planted-file-key-0042"
        );
        let child = format!("cat {file}; true");
        agent.exec_as(SANDBOX_UID, &["--", "sh", "-c", &child]).ok();
    }
    sb.assert_no_alerts();
    // A read outside maestro-exec.
    assert_eq!(agent.run_as(SANDBOX_UID, "cat", &[&file]).ok().stdout, "planted-file-key-0042");
    let deadline = Instant::now() + Duration::from_secs(5);
    let got = loop {
        let got = alerts(&sb.broker, &sb.token, &[]);
        if !got.is_empty() {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "no alert for a read outside maestro-exec\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(rules(&got), ["outside_exec"], "{got:#?}");
    assert_eq!(got[0]["reason"], "FILEKEY read by a process not started through maestro-exec");
    assert_eq!(got[0]["uid"], 1000);
}

/// Two brokers on one PostgreSQL database both run the webhook task: each alert is delivered
/// once, whichever broker raised it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_brokers_on_postgres_each_alert_is_delivered_once() {
    use maestro_tests::pg::{PeerBroker, Postgres};
    let Some(pg) = Postgres::start() else { return };
    let db = pg.create_database("maestro_alerts_two");
    let options = db.broker_options();
    let a = Broker::start_with(options.clone());
    let b = PeerBroker::start(&a, &options);
    let (url, seen) = receiver(vec![]);
    let token = a.admin_token.clone();
    a.maestro_stdin(
        &token,
        &["alerts", "config", "--webhook", &url, "--webhook-secret-stdin", "--on-alert", "notify"],
        Some(b"two-brokers-signing-secret"),
    )
    .ok();
    let api = a.api(&token);
    api.add_generic("TWO", &[("TWO_VAR", "v")]).await.ok();
    let (_id, mut agent) = session(&a, &token, "two", &["TWO"], false).await;
    // Alerts raised through both brokers, one batch each (each a leak attempt of its own
    // command, so each raises its own alert).
    for i in 0..20 {
        agent.rebase(if i % 2 == 0 { &a.url } else { &b.url });
        post(&agent, vec![report("TWO", "leak_attempt", &format!("tool{i}"), 1000)]).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = alerts(&a, &token, &[]);
        if all.len() == 20 && all.iter().all(|x| x["webhook"] == "delivered") {
            break;
        }
        assert!(Instant::now() < deadline, "not all delivered: {all:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut ids: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.header("maestro-alert-id").unwrap().to_owned())
        .collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!((before, ids.len()), (20, 20), "an alert was delivered twice");
}

/// The whole decoy path with a real agent: `sessions create --decoys`, the agent serves the decoy
/// files (real-looking, not in any variable), the sandbox user reads one, the agent reports it at
/// once, the broker flags it and ends the session (the configured action), and the agent tears
/// the sandbox down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_agent_serves_decoys_and_a_read_ends_the_session() {
    use maestro_tests::agent::{AgentOptions, SANDBOX_UID, Sandbox, fuse_available, wait_until};
    if !fuse_available() {
        return;
    }
    let sb = Sandbox::new();
    sb.maestro(&["alerts", "config", "--on-alert", "end-session"]).ok();
    sb.api.add_generic("REAL", &[("REAL", "planted-real-beside-decoys")]).await.ok();
    let bundle = sb.mount().parent().unwrap().join("decoys.bundle.json");
    let out = sb
        .maestro(&[
            "sessions",
            "create",
            "--decoys",
            "--label",
            "lure",
            "--bundle-out",
            bundle.to_str().unwrap(),
        ])
        .ok();
    let session = out.stdout.lines().next().unwrap().trim().to_owned();
    let mut agent = sb.start_agent(&bundle, AgentOptions::default());
    sb.api.activate(&session, &["REAL"]).await.ok();
    let decoy = agent.file("aws-prod-admin/credentials");
    assert!(
        wait_until(Duration::from_secs(10), || decoy.exists() && agent.listed_names().len() == 1)
            .is_some(),
        "no decoy file: {}",
        agent.log()
    );
    // Real-looking, and nowhere in maestro-exec's list or environment.
    let env = agent.exec_as(SANDBOX_UID, &["--no-mask", "--", "env"]).ok().stdout;
    assert!(!env.contains("AKIA") && env.contains("planted-real-beside-decoys"), "{env}");
    assert_eq!(agent.listed_names(), ["REAL"]);
    sb.assert_no_alerts();

    let started = Instant::now();
    let read = agent.run_as(SANDBOX_UID, "cat", &[decoy.to_str().unwrap()]).ok().stdout;
    assert!(
        read.contains("aws_access_key_id = AKIA") || read.contains("aws_access_key_id=AKIA"),
        "{read}"
    );
    let api = sb.broker.api(&sb.token);
    let deadline = Instant::now() + Duration::from_secs(5);
    let ended_after = loop {
        let s = api.get(&format!("/v1/sessions/{session}")).await.ok();
        if s["state"] == "ended" {
            assert_eq!(s["ended_reason"], "alert: decoy", "{s}");
            break started.elapsed();
        }
        assert!(Instant::now() < deadline, "the session was not ended: {s}\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!("decoy read by a real agent's sandbox user to session ended: {ended_after:?}");
    assert!(ended_after < Duration::from_secs(1), "took {ended_after:?}");
    assert!(agent.wait_exit(Duration::from_secs(15)).is_some(), "the agent did not tear down");
    let got = alerts(&sb.broker, &sb.token, &[]);
    assert_eq!(rules(&got), ["decoy"], "{got:?}");
    assert!(got[0]["command"].as_str().unwrap_or_default().contains("cat"), "{got:?}");
    // No decoy value, and no real value, in the logs.
    assert!(
        !agent.log().contains(read.trim())
            && !sb.broker.log().contains("planted-real-beside-decoys")
    );
}
