//! Helpers shared by the `integrations_*` tests: a broker with an agent on a temporary mount,
//! the sandbox user's home, commands run as that user with exactly the environment a test
//! chooses, and the client programs that `scripts/test.sh` installs (found, or the test skips
//! with a message; under `MAESTRO_REQUIRE_CLIENTS`, as in CI, a missing one fails).

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Each `integrations_*` test crate uses a different subset of these helpers.
#![allow(dead_code)]

pub mod servers;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use maestro_tests::agent::{Agent, AgentOptions, SANDBOX_UID, Sandbox, as_uid, wait_until};
use maestro_tests::broker::CmdOutput;
use maestro_tests::util::{bin_dir, files_containing};
use serde_json::{Value, json};

/// How long an activation or deactivation may take to reach the agent.
pub const WITHIN: Duration = Duration::from_secs(2);

/// The workspace's root directory.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A script in `tests/support/`.
pub fn support(name: &str) -> PathBuf {
    workspace().join("tests").join("support").join(name)
}

/// The Python of the virtual environment with boto3 and google-auth.
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("MAESTRO_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target").join("integrations-venv"));
    venv.join("bin").join("python")
}

/// Whether every one of `programs` (paths, or names on PATH) can run here. When one cannot,
/// prints why and returns false, or panics when `MAESTRO_REQUIRE_CLIENTS` is set (CI).
pub fn clients_available(programs: &[&OsStr]) -> bool {
    if !maestro_tests::agent::fuse_available() {
        return false;
    }
    let missing: Vec<String> = programs
        .iter()
        .filter(|p| {
            let path = Path::new(p);
            if path.is_absolute() { !path.is_file() } else { on_sandbox_path(p).is_none() }
        })
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "integration test skipped: missing {} (run tests/support/install-clients.sh, which \
         scripts/test.sh runs)",
        missing.join(", ")
    );
    assert!(std::env::var_os("MAESTRO_REQUIRE_CLIENTS").is_none(), "{why}");
    eprintln!("{why}");
    false
}

/// `program` looked up in the directories the sandbox commands search.
fn on_sandbox_path(program: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(&sandbox_path()).map(|d| d.join(program)).find(|p| p.is_file())
}

/// The PATH of sandbox commands: the workspace's binaries (`maestro-exec`), then the system.
pub fn sandbox_path() -> String {
    format!("{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", bin_dir().display())
}

/// The directory of the highest PostgreSQL version installed (Debian's layout).
pub fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

/// A broker, a user, a session, an agent on a temporary mount, and the sandbox user's home.
/// Fields drop in this order: the agent (and its mount) before the directory that holds it.
pub struct World {
    pub agent: Agent,
    pub home: PathBuf,
    pub session: String,
    pub sb: Sandbox,
}

impl World {
    pub fn new(label: &str) -> Self {
        Self::with_agent(label, AgentOptions::default())
    }

    /// Like [`World::new`], the agent started with `options`.
    pub fn with_agent(label: &str, options: AgentOptions) -> Self {
        let sb = Sandbox::new();
        let (session, bundle) = sb.new_session(label);
        let agent = sb.start_agent(&bundle, options);
        let home = sb.dir().join("home");
        std::fs::create_dir(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(SANDBOX_UID), Some(SANDBOX_UID)).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        Self { agent, home, session, sb }
    }

    /// Registers a secret through the user API; panics unless it is created.
    pub async fn add(&self, name: &str, kind: &str, fields: Value) {
        self.sb
            .api
            .post("/v1/secrets", json!({"name": name, "kind": kind, "fields": fields}))
            .await
            .ok();
    }

    /// Activates secrets and waits until the agent lists exactly `expect_active`.
    pub async fn activate(&self, names: &[&str], expect_active: &[&str]) {
        self.sb.api.activate(&self.session, names).await.ok();
        self.wait_active(expect_active);
    }

    /// Deactivates secrets and waits until the agent lists exactly `expect_active`.
    pub async fn deactivate(&self, names: &[&str], expect_active: &[&str]) {
        self.sb.api.deactivate(&self.session, names).await.ok();
        self.wait_active(expect_active);
    }

    fn wait_active(&self, expect: &[&str]) {
        let mut want: Vec<String> = expect.iter().map(|s| (*s).to_owned()).collect();
        want.sort();
        let reached = wait_until(WITHIN, || {
            let mut names = self.agent.listed_names();
            names.sort();
            names == want
        });
        assert!(
            reached.is_some(),
            "the agent lists {:?}, not {want:?}:\n{}",
            self.agent.listed_names(),
            self.agent.log()
        );
    }

    /// `program` as the sandbox user, with only PATH, HOME, LANG and the agent's socket in its
    /// environment.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = as_uid(SANDBOX_UID, program);
        cmd.env_clear()
            .env("PATH", sandbox_path())
            .env("HOME", &self.home)
            .env("LANG", "C.UTF-8")
            .env("MAESTRO_AGENT_SOCK", &self.agent.socket)
            .current_dir(&self.home);
        cmd
    }

    /// `maestro-exec ARGS` as the sandbox user (see [`World::command`]).
    pub fn exec(&self, args: &[&str]) -> Command {
        let mut cmd = self.command(bin_dir().join("maestro-exec"));
        cmd.args(args);
        cmd
    }

    /// The absolute path of a file under the mount, as a string.
    pub fn mounted(&self, relative: &str) -> String {
        self.agent.file(relative).to_string_lossy().into_owned()
    }

    /// Asserts that no value reached the agent's or the broker's log, or a file of the broker.
    pub fn assert_no_leak(&self, values: &[&str]) {
        let logs =
            [("the agent's log", self.agent.log()), ("the broker's log", self.sb.broker.log())];
        for value in values {
            for (what, log) in &logs {
                assert!(!log.contains(value), "{what} holds a secret value:\n{log}");
            }
            let files = files_containing(self.sb.broker.data_dir(), value.as_bytes());
            assert!(files.is_empty(), "the broker's files hold a secret value: {files:?}");
        }
    }

    /// Writes a file into the sandbox user's home (mode 0600, owned by that user).
    pub fn write_home(&self, relative: &str, content: &str) -> PathBuf {
        let path = self.home.join(relative);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
            std::os::unix::fs::chown(dir, Some(SANDBOX_UID), Some(SANDBOX_UID)).unwrap();
        }
        std::fs::write(&path, content).unwrap();
        std::os::unix::fs::chown(&path, Some(SANDBOX_UID), Some(SANDBOX_UID)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }
}

/// Asserts that a command failed and that nothing of `secret` is in what it printed.
pub fn assert_failed_without(out: &CmdOutput, secret: &str, what: &str) {
    assert_ne!(out.status, 0, "{what} succeeded: {out:?}");
    assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret), "{what}: {out:?}");
}

/// Runs a command with `input` on its standard input, its output captured.
pub fn run_with_stdin(mut cmd: Command, input: &str) -> CmdOutput {
    use std::io::Write;
    use std::process::Stdio;
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    CmdOutput {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Pids of the sandbox user's processes.
pub fn sandbox_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}"))
                .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == SANDBOX_UID)
        })
        .collect()
}

/// Where `needle` is in the environment, command line or readable memory of `pid`, if anywhere.
pub fn process_holds(pid: u32, needle: &[u8]) -> Option<String> {
    for what in ["environ", "cmdline"] {
        if let Ok(bytes) = std::fs::read(format!("/proc/{pid}/{what}"))
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            return Some(what.to_owned());
        }
    }
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    use std::io::{Read, Seek, SeekFrom};
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else { continue };
        if !perms.starts_with('r') {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else { continue };
        let (a, b) = (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap());
        if b - a > 1 << 30 || mem.seek(SeekFrom::Start(a)).is_err() {
            continue;
        }
        let mut buf = vec![0u8; (b - a) as usize];
        let mut read = 0;
        while read < buf.len() {
            match mem.read(&mut buf[read..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
        if buf[..read].windows(needle.len()).any(|w| w == needle) {
            return Some(format!("memory {line}"));
        }
    }
    None
}
