//! Running the agent under test: a real `maestro-agent run` on a FUSE mount in a temporary
//! directory (never `/run/secrets`), with a bundle from the real `maestro` CLI, and
//! `maestro-exec` or readers run as an unprivileged uid through `setpriv`.
//!
//! * [`Sandbox`]: a broker (see [`crate::broker`]), a user, and a 0755 temporary directory
//!   that holds the mount point, the socket directory and the bundles.
//! * [`Agent`]: a running agent. Dropping it kills the agent (and with it the processes it
//!   started), lazily unmounts a mount it left behind, and prints its log if the test failed.
//! * [`fuse_available`]: whether this machine can run these tests; without root or /dev/fuse
//!   they skip with a message, unless `MAESTRO_REQUIRE_FUSE` is set (CI), where that fails.
// A fixture's panics are how a test reports that its set-up failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use maestro_wire::sock::{Action, ListedSecret, Request, Response};
use nix::sys::signal::Signal;

use crate::broker::{Api, Broker, BrokerOptions, CmdOutput};
use crate::util::{ChildGuard, bin, temp_dir};

/// The unprivileged sandbox user of the tests.
pub const SANDBOX_UID: u32 = 1000;
/// Another unprivileged uid, which must be refused everywhere.
pub const OTHER_UID: u32 = 1001;
/// How long an agent may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the end-to-end agent tests can run here (root and /dev/fuse). When they cannot,
/// prints why and returns false, or panics when `MAESTRO_REQUIRE_FUSE` is set.
pub fn fuse_available() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let fuse = Path::new("/dev/fuse").exists();
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    if root && fuse && setpriv {
        return true;
    }
    let why = format!(
        "agent end-to-end test skipped: needs root ({root}), /dev/fuse ({fuse}) and setpriv \
         ({setpriv})"
    );
    assert!(std::env::var_os("MAESTRO_REQUIRE_FUSE").is_none(), "{why}");
    eprintln!("{why}");
    false
}

/// Runs a command to completion with its output captured.
pub fn run_cmd(mut cmd: Command) -> CmdOutput {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    CmdOutput {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A command that runs `program` as `uid` (same gid, no supplementary groups).
pub fn as_uid(uid: u32, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg("--")
        .arg(program);
    cmd
}

/// Whether `path` is a mount point now (from /proc/mounts).
pub fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let wanted = path.to_string_lossy();
    mounts.lines().any(|l| l.split_whitespace().nth(1) == Some(wanted.as_ref()))
}

/// Polls `check` every 2 ms until it holds or `timeout` passes; returns how long it took.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Median and 99th percentile of some durations, in milliseconds.
pub fn median_p99(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p99 = ((samples.len() * 99).div_ceil(100)).saturating_sub(1);
    (ms(samples[samples.len() / 2]), ms(samples[p99]))
}

/// A broker, a user, and a temporary directory for the sandbox side.
pub struct Sandbox {
    pub broker: Broker,
    /// The user's API token.
    pub token: String,
    pub api: Api,
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// A broker with 300 ms heartbeats (fast fail-closed tests) and one user.
    pub fn new() -> Self {
        Self::with(BrokerOptions::args(&["--heartbeat", "300ms"]))
    }

    /// A broker with these options and one user.
    pub fn with(options: BrokerOptions) -> Self {
        let broker = Broker::start_with(options);
        let token = broker.add_user("sandbox-tester");
        let api = broker.api(&token);
        let dir = temp_dir("maestro-agent-");
        // The sandbox user must reach the mount and the socket inside it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("can chmod the temporary directory");
        Self { broker, token, api, dir }
    }

    /// The temporary directory (mount point, socket directory, bundles).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where agents mount the secrets.
    pub fn mount(&self) -> PathBuf {
        self.dir().join("secrets")
    }

    /// Where agents listen.
    pub fn socket(&self) -> PathBuf {
        self.dir().join("run").join("agent.sock")
    }

    /// Runs the `maestro` CLI as the user.
    pub fn maestro(&self, args: &[&str]) -> CmdOutput {
        self.broker.maestro(&self.token, args)
    }

    /// Creates a session with the CLI; returns its id and the bundle it wrote.
    pub fn new_session(&self, label: &str) -> (String, PathBuf) {
        let bundle = self.dir().join(format!("{label}.bundle.json"));
        let out = self
            .maestro(&[
                "sessions",
                "create",
                "--label",
                label,
                "--bundle-out",
                &bundle.to_string_lossy(),
            ])
            .ok();
        let id =
            out.stdout.lines().next().expect("the session id is printed first").trim().to_owned();
        (id, bundle)
    }

    /// Asserts the user has no alerts (the unusual-usage rules stay quiet on ordinary use),
    /// after giving the agents time to send their last usage batch (they send at least once a
    /// second).
    pub fn assert_no_alerts(&self) {
        std::thread::sleep(Duration::from_millis(1500));
        self.broker.assert_no_alerts(&self.token);
    }

    /// Starts an agent on this sandbox's mount and socket.
    pub fn start_agent(&self, bundle: &Path, options: AgentOptions) -> Agent {
        Agent::start(bundle, &self.mount(), &self.socket(), options)
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

/// How to run the agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// `--lease`.
    pub lease: Option<String>,
    /// `--grace`.
    pub grace: Option<String>,
    /// `RUST_LOG`.
    pub rust_log: String,
    /// `-- CMD...`.
    pub command: Vec<String>,
    /// `--user`.
    pub user: u32,
    /// Pass the bundle in `MAESTRO_BUNDLE` rather than `--bundle`.
    pub bundle_in_env: bool,
    /// More arguments for `maestro-agent run`, before `--`.
    pub extra_args: Vec<String>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            lease: None,
            grace: None,
            rust_log: "info".into(),
            command: Vec::new(),
            user: SANDBOX_UID,
            bundle_in_env: false,
            extra_args: Vec::new(),
        }
    }
}

/// A running agent.
pub struct Agent {
    pub mount: PathBuf,
    pub socket: PathBuf,
    process: Option<ChildGuard>,
}

impl Agent {
    /// Starts `maestro-agent run` and waits for its ready line.
    pub fn start(bundle: &Path, mount: &Path, socket: &Path, options: AgentOptions) -> Agent {
        let mut cmd = Self::command(bundle, mount, socket, &options);
        cmd.env("RUST_LOG", &options.rust_log);
        let process = ChildGuard::spawn("maestro-agent", cmd);
        let ready = process.wait_for_stdout(READY_TIMEOUT, |l| l == "maestro-agent: ready");
        let agent =
            Agent { mount: mount.to_owned(), socket: socket.to_owned(), process: Some(process) };
        assert!(ready.is_some(), "maestro-agent did not say it was ready:\n{}", agent.log());
        agent
    }

    /// Like [`Agent::start`], with the agent inside the cgroup v2 directory `cgroup` from its
    /// first instruction: a shell writes its own pid to `cgroup.procs`, then execs the agent.
    pub fn start_in_cgroup(
        bundle: &Path,
        mount: &Path,
        socket: &Path,
        options: AgentOptions,
        cgroup: &Path,
    ) -> Agent {
        let agent = Self::command(bundle, mount, socket, &options);
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("echo $$ > \"$0/cgroup.procs\" && exec \"$@\"")
            .arg(cgroup)
            .arg(agent.get_program())
            .args(agent.get_args());
        for (key, value) in agent.get_envs() {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        cmd.env("RUST_LOG", &options.rust_log);
        let process = ChildGuard::spawn("maestro-agent", cmd);
        let ready = process.wait_for_stdout(READY_TIMEOUT, |l| l == "maestro-agent: ready");
        let agent =
            Agent { mount: mount.to_owned(), socket: socket.to_owned(), process: Some(process) };
        assert!(ready.is_some(), "maestro-agent did not say it was ready:\n{}", agent.log());
        agent
    }

    /// The command line `start` uses, for tests that run it themselves.
    pub fn command(bundle: &Path, mount: &Path, socket: &Path, options: &AgentOptions) -> Command {
        let mut cmd = Command::new(bin("maestro-agent"));
        cmd.arg("run").env_remove("MAESTRO_BUNDLE").env_remove("MAESTRO_AGENT_SOCK");
        if options.bundle_in_env {
            cmd.env("MAESTRO_BUNDLE", bundle);
        } else {
            cmd.arg("--bundle").arg(bundle);
        }
        cmd.arg("--mount")
            .arg(mount)
            .arg("--socket")
            .arg(socket)
            .arg("--user")
            .arg(format!("{0}:{0}", options.user));
        if let Some(lease) = &options.lease {
            cmd.args(["--lease", lease]);
        }
        if let Some(grace) = &options.grace {
            cmd.args(["--grace", grace]);
        }
        cmd.args(&options.extra_args);
        if !options.command.is_empty() {
            cmd.arg("--").args(&options.command);
        }
        cmd
    }

    fn process(&self) -> &ChildGuard {
        self.process.as_ref().expect("the agent process is held until the agent is dropped")
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.process().pid().expect("the agent has a pid")
    }

    /// Everything the agent printed (stdout and stderr).
    pub fn log(&self) -> String {
        self.process.as_ref().map(ChildGuard::log).unwrap_or_default()
    }

    /// Whether the agent process still runs.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(ChildGuard::is_running)
    }

    /// Waits for the agent to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.as_mut().and_then(|p| p.wait_exit(timeout))
    }

    /// Sends a signal to the agent.
    pub fn signal(&self, signal: Signal) {
        self.process().signal(signal);
    }

    /// `kill -9` the agent and reap it.
    pub fn kill9(&mut self) {
        if let Some(p) = self.process.as_mut() {
            p.kill9();
        }
    }

    /// Runs `maestro-exec ARGS` as `uid` against this agent.
    pub fn exec_as(&self, uid: u32, args: &[&str]) -> CmdOutput {
        let mut cmd = as_uid(uid, bin("maestro-exec"));
        cmd.args(args).env("MAESTRO_AGENT_SOCK", &self.socket);
        run_cmd(cmd)
    }

    /// Runs `program ARGS` as `uid` (a reader of the mount).
    pub fn run_as(&self, uid: u32, program: &str, args: &[&str]) -> CmdOutput {
        let mut cmd = as_uid(uid, program);
        cmd.args(args);
        run_cmd(cmd)
    }

    /// One request on the socket, as root (cheap enough to poll).
    pub fn ask(&self, action: Action) -> std::io::Result<Response> {
        let mut stream = UnixStream::connect(&self.socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut line = serde_json::to_vec(&Request::new(action)).map_err(std::io::Error::other)?;
        line.push(b'\n');
        stream.write_all(&line)?;
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer)?;
        serde_json::from_str(&answer).map_err(std::io::Error::other)
    }

    /// The active secrets as the socket lists them; `None` when the agent answers with an
    /// error (unavailable) or cannot be reached.
    pub fn listed(&self) -> Option<Vec<ListedSecret>> {
        match self.ask(Action::List) {
            Ok(Response::List { secrets, .. }) => Some(secrets),
            _ => None,
        }
    }

    /// Names of the active secrets on the socket (empty when unavailable).
    pub fn listed_names(&self) -> Vec<String> {
        self.listed().unwrap_or_default().into_iter().map(|s| s.name).collect()
    }

    /// A file under the mount.
    pub fn file(&self, relative: &str) -> PathBuf {
        self.mount.join(relative)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // The child guard kills the agent (the processes it started die with it: their
        // parent-death signal) and prints its log if the test is failing.
        self.process.take();
        if is_mounted(&self.mount) {
            let _ = nix::mount::umount2(&self.mount, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Pids of the living descendants of `root` (from /proc).
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(rest) = stat.rfind(')').map(|i| stat[i + 1..].to_owned()) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            continue;
        }
        if let Some(ppid) = fields.get(1).and_then(|p| p.parse::<u32>().ok()) {
            parent_of.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

/// Whether a process is alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 1..].split_whitespace().next() != Some("Z")))
        .unwrap_or(false)
}
