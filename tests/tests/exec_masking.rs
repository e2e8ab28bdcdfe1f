//! Output masking by `maestro-exec` (issue 12 part 4), end to end: the real broker, agent and
//! maestro-exec as the sandbox user, CMD's output read through a pipe and, with `script` from
//! util-linux, through a pseudo-terminal.
//!
//! * every listed encoding of an injected value is masked as `<NAME>` (raw, base64 at its three
//!   alignments, base64url, hex lower and upper, URL- and JSON-escaped), on stdout and stderr;
//! * a value written in two halves with a pause between is masked, under a pipe and a pty;
//! * a random 10 MB binary file passes byte for byte (hashes compared), and a value planted in
//!   binary is masked without touching the bytes around it;
//! * CMD's exit status, its death by a signal (128 + signal), a signal forwarded to it;
//! * under a pty CMD sees a terminal of the real one's size, and the terminal is restored;
//! * `--no-mask` shows the value; the value is in no log or error output.
// Helpers of a test panic to fail it, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use maestro_tests::agent::{
    Agent, AgentOptions, SANDBOX_UID, Sandbox, as_uid, fuse_available, wait_until,
};
use maestro_tests::util::{ChildGuard, bin};
use nix::sys::signal::Signal;
use sha2::{Digest, Sha256};

/// The planted value: holds characters that URL and JSON escaping change.
const VALUE: &str = "pl4nted-mask/v+lue\"q\\z=0x9";
const NAME: &str = "MASKED";
const MASK: &str = "<MASKED>";

/// A sandbox with one active secret, MASKED, whose variable MASKED_TOKEN holds [`VALUE`].
async fn sandbox() -> Option<(Sandbox, Agent)> {
    if !fuse_available() {
        return None;
    }
    let sb = Sandbox::new();
    sb.api.add_generic(NAME, &[("MASKED_TOKEN", VALUE)]).await.ok();
    let (session, bundle) = sb.new_session("masking");
    let agent = sb.start_agent(&bundle, AgentOptions::default());
    sb.api.activate(&session, &[NAME]).await.ok();
    assert!(
        wait_until(Duration::from_secs(5), || agent.listed_names().len() == 1).is_some(),
        "activation did not reach the agent:\n{}",
        agent.log()
    );
    Some((sb, agent))
}

/// `maestro-exec ARGS` as the sandbox user, stdin null, output captured as bytes.
fn exec_bytes(agent: &Agent, args: &[&str]) -> std::process::Output {
    let mut cmd = as_uid(SANDBOX_UID, bin("maestro-exec"));
    cmd.args(args).env("MAESTRO_AGENT_SOCK", &agent.socket).stdin(Stdio::null());
    cmd.output().expect("maestro-exec runs")
}

fn hex(bytes: &[u8], upper: bool) -> String {
    bytes.iter().map(|b| if upper { format!("{b:02X}") } else { format!("{b:02x}") }).collect()
}

fn url_escaped(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(
            |b| {
                if b.is_ascii_alphanumeric() {
                    (*b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            },
        )
        .collect()
}

/// One line per listed encoding of [`VALUE`], each inside other text, labelled.
fn encoded_lines() -> Vec<(String, String)> {
    let v = VALUE.as_bytes();
    let mut lines = vec![("raw".to_owned(), VALUE.to_owned())];
    for k in 0..3 {
        // The value at each alignment of a larger encoded stream.
        let mut framed = b"ab".to_vec()[..k].to_vec();
        framed.extend_from_slice(v);
        framed.extend_from_slice(b"-tail");
        lines.push((format!("base64 @{k}"), STANDARD_NO_PAD.encode(&framed)));
        lines.push((format!("base64url @{k}"), URL_SAFE_NO_PAD.encode(&framed)));
    }
    lines.push(("hex".to_owned(), hex(v, false)));
    lines.push(("HEX".to_owned(), hex(v, true)));
    lines.push(("url".to_owned(), url_escaped(v)));
    let json = serde_json::to_string(VALUE).unwrap();
    lines.push(("json".to_owned(), json[1..json.len() - 1].to_owned()));
    lines
}

/// Checks that each labelled line came out masked and that no encoding survived.
fn assert_masked(label: &str, out: &[u8], sent: &[(String, String)]) {
    let text = String::from_utf8_lossy(out);
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(got.len(), sent.len(), "{label}: {text}");
    for ((what, encoded), line) in sent.iter().zip(&got) {
        assert!(line.starts_with(&format!("{what}: ")), "{label}: {line}");
        assert!(line.contains(MASK), "{label}: {what} not masked: {line}");
        assert!(!line.contains(encoded.as_str()), "{label}: {what} left whole: {line}");
    }
    assert!(!text.contains(VALUE), "{label}: the value came through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_encoding_is_masked_on_stdout_and_stderr_and_binary_passes_byte_for_byte() {
    let Some((sb, agent)) = sandbox().await else { return };
    let dir = tempfile::tempdir_in(sb.dir()).unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();

    // Every encoding, inside text, on stdout and on stderr.
    let lines = encoded_lines();
    let text: String = lines.iter().map(|(what, e)| format!("{what}: [{e}] end\n")).collect();
    let file = dir.path().join("encodings.txt");
    std::fs::write(&file, &text).unwrap();
    let file = file.to_string_lossy().into_owned();
    let out = exec_bytes(&agent, &["cat", &file]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_masked("stdout", &out.stdout, &lines);
    let out = exec_bytes(&agent, &["--", "sh", "-c", "cat \"$1\" >&2", "sh", &file]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert_masked("stderr", &out.stderr, &lines);

    // A value written in two halves by two processes, half a second apart.
    let split = "printf 'split: %.9s' \"$MASKED_TOKEN\"; sleep 0.5; \
                 printf '%s done\\n' \"${MASKED_TOKEN#?????????}\"";
    let out = exec_bytes(&agent, &["--", "sh", "-c", split]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("split: {MASK} done\n"));

    // --no-mask: CMD is exec'd, its output untouched.
    let out = exec_bytes(&agent, &["--no-mask", "--", "printenv", "MASKED_TOKEN"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{VALUE}\n"));

    // 10 MB of random bytes pass byte for byte.
    let mut random = vec![0u8; 10 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in &mut random {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 32) as u8;
    }
    let big = dir.path().join("random.bin");
    std::fs::write(&big, &random).unwrap();
    let out = exec_bytes(&agent, &["cat", &big.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout.len(), random.len());
    assert_eq!(Sha256::digest(&out.stdout), Sha256::digest(&random), "binary output changed");

    // The value planted in the middle of binary: masked, the bytes around it untouched.
    let at = 5 << 20;
    let mut planted = random[..at].to_vec();
    planted.extend_from_slice(VALUE.as_bytes());
    planted.extend_from_slice(&random[at..]);
    std::fs::write(&big, &planted).unwrap();
    let out = exec_bytes(&agent, &["cat", &big.to_string_lossy()]);
    let mut expected = random[..at].to_vec();
    expected.extend_from_slice(MASK.as_bytes());
    expected.extend_from_slice(&random[at..]);
    assert_eq!(Sha256::digest(&out.stdout), Sha256::digest(&expected), "planted binary");

    // A flood on stdout and stderr at once: both relayed whole, nothing stuck.
    let out = exec_bytes(
        &agent,
        &["sh", "-c", "head -c 5000000 /dev/zero >&2 & head -c 7000000 /dev/zero; wait"],
    );
    assert_eq!((out.stdout.len(), out.stderr.len()), (7_000_000, 5_000_000));

    // A reader that goes away early: CMD meets the closed pipe as it would without
    // maestro-exec, and the pipeline ends.
    let mut cmd = as_uid(SANDBOX_UID, "sh");
    cmd.args(["-c", "\"$EXEC\" -- sh -c 'yes \"$MASKED_TOKEN\"' | head -n 3"])
        .env("EXEC", bin("maestro-exec"))
        .env("MAESTRO_AGENT_SOCK", &agent.socket);
    let mut early = ChildGuard::spawn("maestro-exec | head", cmd);
    let ended = early.wait_exit(Duration::from_secs(20));
    assert!(ended.is_some(), "the pipeline did not end: {}", early.log());
    assert_eq!(early.log(), format!("{MASK}\n{MASK}\n{MASK}\n"));

    // Exit statuses: CMD's own, and 128 + signal when a signal ended it.
    let out = exec_bytes(&agent, &["sh", "-c", "echo \"$MASKED_TOKEN\"; exit 7"]);
    assert_eq!(
        (out.status.code(), String::from_utf8_lossy(&out.stdout)),
        (Some(7), "<MASKED>\n".into())
    );
    let out = exec_bytes(&agent, &["sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.status.code(), Some(128 + 15));
    let missing = exec_bytes(&agent, &["no-such-command-xyz"]);
    assert_eq!(missing.status.code(), Some(127));

    // A signal sent to maestro-exec reaches CMD (which is its child now).
    let mut cmd = as_uid(SANDBOX_UID, bin("maestro-exec"));
    cmd.args([
        "--",
        "sh",
        "-c",
        "trap 'echo \"got TERM $MASKED_TOKEN\"; exit 42' TERM; echo ready; \
         while :; do sleep 0.1; done",
    ])
    .env("MAESTRO_AGENT_SOCK", &agent.socket);
    let mut child = ChildGuard::spawn("maestro-exec", cmd);
    assert!(
        child.wait_for_stdout(Duration::from_secs(10), |l| l == "ready").is_some(),
        "{}",
        child.log()
    );
    child.signal(Signal::SIGTERM);
    let status = child.wait_exit(Duration::from_secs(10)).expect("maestro-exec ended");
    assert_eq!(status.code(), Some(42), "{}", child.log());
    assert!(child.log().contains(&format!("got TERM {MASK}")), "{}", child.log());

    // The injection is recorded as before: the pid and executable are maestro-exec's (CMD's
    // parent now), the command CMD's name, as claimed.
    let mut recorded = false;
    for _ in 0..50 {
        let events: Vec<maestro_wire::api::AuditEvent> =
            serde_json::from_value(sb.api.get("/v1/audit").await.ok()).unwrap();
        recorded = events.iter().any(|e| {
            e.secret.as_deref() == Some(NAME)
                && e.command.as_deref() == Some("maestro-exec")
                && e.claimed_command.as_deref() == Some("cat")
                && e.uid == Some(SANDBOX_UID)
                && e.pid.is_some()
        });
        if recorded {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recorded, "no injection record for the masked cat");
    let audit = sb.api.get("/v1/audit").await.ok().to_string();
    assert!(!audit.contains(VALUE), "the value is in the audit trail");

    // The value is in no log: the agent's, nor any error output above.
    assert!(!agent.log().contains(VALUE), "the value is in the agent's log");
    assert!(!child.log().contains(VALUE));
    assert!(!String::from_utf8_lossy(&missing.stderr).contains(VALUE));
}

/// Runs `script` (util-linux) as the sandbox user: `line` runs in a shell under a new
/// pseudo-terminal, whose output `script` copies to its stdout.
fn under_pty(agent: &Agent, line: &str) -> (Option<i32>, String) {
    let mut cmd = as_uid(SANDBOX_UID, "script");
    cmd.args(["-q", "-e", "-c", line, "/dev/null"])
        .env("MAESTRO_AGENT_SOCK", &agent.socket)
        .env("EXEC", bin("maestro-exec"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("script runs");
    // Keep script's stdin open (no keys typed) until the command is done.
    let stdin = child.stdin.take();
    let out = child.wait_with_output().expect("script ends");
    drop(stdin);
    (out.status.code(), String::from_utf8_lossy(&out.stdout).replace('\r', ""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_pseudo_terminal_output_is_masked_and_the_terminal_kept() {
    let Some((_sb, agent)) = sandbox().await else { return };
    let inner = "test -t 0 && test -t 1 && echo is-a-tty; stty size; \
                 printf 'raw: %s\\n' \"$MASKED_TOKEN\"; \
                 printf 'split: %.9s' \"$MASKED_TOKEN\"; sleep 0.5; \
                 printf '%s done\\n' \"${MASKED_TOKEN#?????????}\"; \
                 printf 'err: %s\\n' \"$MASKED_TOKEN\" >&2";
    let line = format!(
        "stty rows 33 cols 101; before=$(stty -g); \"$EXEC\" -- sh -c '{}'; echo status=$?; \
         [ \"$before\" = \"$(stty -g)\" ] && echo restored",
        inner.replace('\'', "'\\''")
    );
    let (status, out) = under_pty(&agent, &line);
    assert_eq!(status, Some(0), "{out}");
    assert!(out.contains("is-a-tty\n"), "CMD did not get a terminal: {out}");
    assert!(out.contains("33 101\n"), "the window size was not copied: {out}");
    assert!(out.contains(&format!("raw: {MASK}\n")), "{out}");
    assert!(out.contains(&format!("split: {MASK} done\n")), "{out}");
    assert!(out.contains(&format!("err: {MASK}\n")), "{out}");
    assert!(out.contains("status=0\n"), "{out}");
    assert!(out.contains("restored\n"), "the terminal was not restored: {out}");
    assert!(!out.contains(VALUE), "{out}");

    // A resize of the real terminal reaches CMD's (maestro-exec runs in the background of the
    // shell here, so it also shows that the terminal is then left alone).
    let line = "stty rows 24 cols 80; \
                \"$EXEC\" -- sh -c 'trap \"stty size </dev/tty\" WINCH; echo ready; sleep 1; sleep 1' & \
                sleep 0.5; stty rows 40 cols 120; kill -WINCH $!; wait $!; echo status=$?";
    let (status, out) = under_pty(&agent, line);
    assert_eq!(status, Some(0), "{out}");
    assert!(out.contains("ready\n") && out.contains("40 120\n"), "no resize: {out}");
    assert!(out.contains("status=0\n"), "{out}");

    // CMD stopped in its terminal (as by ^Z): maestro-exec gives the terminal back and stops
    // itself; here its process group is orphaned (no job-control shell), so the stop is
    // discarded and CMD is continued at once.
    let line = "before=$(stty -g); \"$EXEC\" -- sh -c 'kill -STOP $$; echo continued'; \
                echo status=$?; [ \"$before\" = \"$(stty -g)\" ] && echo restored";
    let (status, out) = under_pty(&agent, line);
    assert_eq!(status, Some(0), "{out}");
    assert!(out.contains("continued\nstatus=0\nrestored\n"), "{out}");

    // CMD's exit status under a pty.
    let (status, out) = under_pty(&agent, "\"$EXEC\" -- sh -c 'exit 5'");
    assert_eq!(status, Some(5), "{out}");

    // Without masking CMD still gets the terminal, and the value.
    let (_, out) =
        under_pty(&agent, "\"$EXEC\" --no-mask -- sh -c 'test -t 1 && printenv MASKED_TOKEN'");
    assert!(out.contains(VALUE), "{out}");
}
