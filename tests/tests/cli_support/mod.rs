//! Helpers shared by the `cli_*` end-to-end tests: running `maestro` with exactly the
//! environment a test chooses, the one-line error check, and reading what an enrolled agent
//! receives (to prove which bytes a value really has).

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Each `cli_*` test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use maestro_tests::broker::{Broker, CmdOutput, TestAgent};
use maestro_tests::util::bin;
use serde_json::Value;

/// Every variable `maestro` reads; a run starts without any of them.
const MAESTRO_VARS: &[&str] =
    &["MAESTRO_URL", "MAESTRO_TOKEN", "MAESTRO_TOKEN_FILE", "MAESTRO_CA", "MAESTRO_DATA_DIR"];

/// A `maestro` command with no MAESTRO_* variable set, run in `cwd`, with its default data
/// directory (`$XDG_DATA_HOME/maestro`) pointed at a path under `cwd` that does not exist, so
/// that no broker's data directory on this machine is found by accident.
pub fn command(cwd: &Path, env: &[(String, String)], args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("maestro"));
    cmd.args(args).current_dir(cwd).env("XDG_DATA_HOME", cwd.join("no-default-data"));
    for var in MAESTRO_VARS {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `maestro` with exactly `env` (plus the inherited non-MAESTRO variables).
pub fn run_env(
    cwd: &Path,
    env: &[(String, String)],
    args: &[&str],
    stdin: Option<&[u8]>,
) -> CmdOutput {
    let mut cmd = command(cwd, env, args);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("maestro starts");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        // maestro may refuse before reading stdin; a closed pipe is then expected.
        let _ = pipe.write_all(input);
    }
    let out = child.wait_with_output().expect("maestro can be waited for");
    CmdOutput {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An environment from string pairs.
pub fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// The environment that points `maestro` at `broker` as the user with `token`.
pub fn broker_env(broker: &Broker, token: &str) -> Vec<(String, String)> {
    vec![
        ("MAESTRO_URL".to_owned(), broker.url.clone()),
        ("MAESTRO_TOKEN".to_owned(), token.to_owned()),
        ("MAESTRO_CA".to_owned(), broker.ca_path().display().to_string()),
    ]
}

/// Asserts a failure: non-zero exit 1, stdout empty, exactly one stderr line starting with
/// `maestro: ` that contains every one of `texts`.
pub fn fails_with_one_line(out: &CmdOutput, texts: &[&str]) {
    assert_eq!(out.status, 1, "must fail with exit status 1: {out:?}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr: {out:?}");
    assert!(lines[0].starts_with("maestro: "), "{out:?}");
    for text in texts {
        assert!(out.stderr.contains(text), "stderr lacks {text:?}: {out:?}");
    }
}

/// Asserts that `needle` is nowhere in what a command printed.
pub fn not_printed(out: &CmdOutput, needle: &str) {
    assert!(
        !out.stdout.contains(needle) && !out.stderr.contains(needle),
        "{needle} printed: {out:?}"
    );
}

/// `secrets ls --json` as text, to compare before and after a refused command.
pub fn ls_snapshot(broker: &Broker, token: &str) -> String {
    broker.maestro(token, &["secrets", "ls", "--json"]).ok().stdout
}

/// `sessions ls --json` as text.
pub fn sessions_snapshot(broker: &Broker, token: &str) -> String {
    broker.maestro(token, &["sessions", "ls", "--json"]).ok().stdout
}

/// Creates a session with the CLI (`id` on line 1, token on line 2), activates `names` in it,
/// enrolls a test agent with the token and returns the values the agent receives, by secret
/// and field.
pub async fn material(
    broker: &Broker,
    token: &str,
    names: &[&str],
) -> BTreeMap<String, BTreeMap<String, String>> {
    let out = broker.maestro(token, &["sessions", "create", "--ttl", "10m"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "id and token: {out:?}");
    let mut args = vec!["secrets", "activate", "--session", lines[0]];
    args.extend_from_slice(names);
    broker.maestro(token, &args).ok();
    let agent = TestAgent::enroll(broker, lines[1]).await.expect("the printed token enrolls");
    let set = agent.get("/v1/agent/secrets").await.expect("material").ok();
    let mut out = BTreeMap::new();
    for secret in set["secrets"].as_array().expect("a secret list") {
        let fields: BTreeMap<String, String> = secret["fields"]
            .as_object()
            .expect("fields")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("text value").to_owned()))
            .collect();
        out.insert(secret["name"].as_str().expect("name").to_owned(), fields);
    }
    out
}

/// Seconds since the Unix epoch of an RFC 3339 UTC time (`2026-11-29T10:24:55Z`, fraction
/// allowed), enough to compare the broker's timestamps.
pub fn unix_seconds(rfc3339: &str) -> i64 {
    let (date, time) = rfc3339.split_once('T').expect("an RFC 3339 time");
    let d: Vec<i64> = date.split('-').map(|p| p.parse().expect("date part")).collect();
    let t: Vec<i64> = time[..8].split(':').map(|p| p.parse().expect("time part")).collect();
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m, day) = (if d[1] <= 2 { d[0] - 1 } else { d[0] }, d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]
}

/// A JSON array's `name` (or other `key`) values.
pub fn keys(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .expect("an array")
        .iter()
        .map(|m| m[key].as_str().expect("a string").to_owned())
        .collect()
}
