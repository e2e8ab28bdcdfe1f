//! The set-up every measurement runs on: the real release binaries, a broker in a temporary data
//! directory on the disk (not tmpfs: its fsyncs are part of what users get), the user API, session
//! bundles, and agents on FUSE mounts in temporary directories (never `/run/secrets`).
//!
//! Every process is held by a [`Proc`] that kills it when dropped, and an [`AgentProc`] also
//! detaches a mount its agent left behind, so an error or a panic anywhere leaves nothing running.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use maestro_wire::SecretValue;
use maestro_wire::agent_api::{Bundle, CertIssued, EnrollRequest};
use maestro_wire::api::{Activation, CreateSecret, CreateSession, SessionCreated};
use maestro_wire::sock::{Action, ListedSecret, Request, Response};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a broker or an agent may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The sandbox user the agents serve (besides root, which the bench runs as).
pub const SANDBOX_UID: u32 = 1000;

/// Where the release binaries are: next to this one (`target/release`).
#[derive(Debug, Clone)]
pub struct Bins {
    dir: PathBuf,
}

impl Bins {
    pub fn locate() -> anyhow::Result<Bins> {
        let exe = std::env::current_exe().context("cannot find the maestro-bench executable")?;
        let dir = exe.parent().map(Path::to_path_buf).context("maestro-bench has no directory")?;
        let bins = Bins { dir };
        for name in ["maestro-broker", "maestro-agent", "maestro-exec"] {
            bins.path(name)?;
        }
        Ok(bins)
    }

    /// The path of a workspace binary, which must exist.
    pub fn path(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(name);
        if !path.is_file() {
            bail!(
                "{} is missing: build it with `cargo build --release --bins` (scripts/bench.sh does)",
                path.display()
            );
        }
        Ok(path)
    }
}

/// A temporary directory the sandbox user can enter (mount points and sockets live in it).
/// With `MAESTRO_BENCH_KEEP` set, it is left in place (with the broker's and agents' logs).
pub fn work_dir(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    let mut dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("cannot make a temporary directory")?;
    if std::env::var_os("MAESTRO_BENCH_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("maestro-bench: keeping {}", dir.path().display());
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .context("cannot chmod the temporary directory")?;
    Ok(dir)
}

/// A child process that is killed (SIGKILL) and reaped when dropped. Its stdout lines arrive on
/// a channel; its stderr goes to a log file.
pub struct Proc {
    name: String,
    child: Option<Child>,
    lines: Receiver<String>,
    log: PathBuf,
}

impl Proc {
    /// Starts `command` with stdout piped and stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> anyhow::Result<Proc> {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(err);
        let mut child = command.spawn().with_context(|| format!("cannot start {name}"))?;
        let out = child.stdout.take().context("the child's stdout is piped")?;
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody listens any more; keep draining so the child never blocks.
                    continue;
                }
            }
        });
        Ok(Proc { name: name.to_owned(), child: Some(child), lines, log: log.to_owned() })
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child.as_ref().map(Child::id).with_context(|| format!("{} has exited", self.name))
    }

    /// Waits for a stdout line that satisfies `pred`.
    pub fn wait_line(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return Ok(line),
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => {
                    bail!(
                        "{} did not say it was ready within {timeout:?}{}",
                        self.name,
                        self.tail()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("{} exited before it was ready{}", self.name, self.tail())
                }
            }
        }
    }

    /// The end of the log file, for error messages.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(15);
        format!("; the end of {}:\n{}", self.log.display(), lines[start..].join("\n"))
    }

    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = i32::try_from(self.pid()?).context("pid out of range")?;
        kill(Pid::from_raw(pid), signal).with_context(|| format!("cannot signal {}", self.name))
    }

    /// Waits (polling every `poll`) until the process has exited; returns when it did.
    pub fn wait_exit(&mut self, timeout: Duration, poll: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().with_context(|| format!("{} is not held", self.name))?;
        loop {
            if child.try_wait().context("cannot wait for a child")?.is_some() {
                let at = Instant::now();
                self.child = None;
                return Ok(at);
            }
            if Instant::now() >= deadline {
                bail!("{} did not exit within {timeout:?}", self.name);
            }
            std::thread::sleep(poll);
        }
    }

    /// Resident memory in bytes (VmRSS).
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        rss_of(self.pid()?)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// VmRSS of `pid`, in bytes.
pub fn rss_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kib * 1024)
}

/// Installs the rustls provider every client here uses (once per process).
pub fn init_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A running `maestro-broker serve` on `127.0.0.1:0`.
pub struct BrokerProc {
    pub proc: Proc,
    pub url: String,
    pub ca_pem: String,
    pub admin_token: String,
}

impl BrokerProc {
    /// Starts a broker with its data directory under `dir` and `extra` serve arguments.
    pub fn start(bins: &Bins, dir: &Path, extra: &[&str]) -> anyhow::Result<BrokerProc> {
        let data = dir.join("data");
        let mut cmd = Command::new(bins.path("maestro-broker")?);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("MAESTRO_MASTER_KEY")
            .env_remove("MAESTRO_DATA_DIR")
            .env("RUST_LOG", std::env::var("MAESTRO_BENCH_BROKER_LOG").unwrap_or("info".into()));
        let proc = Proc::spawn("maestro-broker", cmd, &dir.join("broker.log"))?;
        let line =
            proc.wait_line(START_TIMEOUT, |l| l.starts_with("maestro-broker: listening on "))?;
        let url = line.trim_start_matches("maestro-broker: listening on ").trim().to_owned();
        let ca_pem = std::fs::read_to_string(data.join("ca.pem")).context("cannot read ca.pem")?;
        let admin_token = std::fs::read_to_string(data.join("admin.token"))
            .context("cannot read admin.token")?
            .trim()
            .to_owned();
        Ok(BrokerProc { proc, url, ca_pem, admin_token })
    }

    /// A user-API client acting as the first user.
    pub fn api(&self) -> anyhow::Result<UserApi> {
        Ok(UserApi {
            client: plain_client(&self.ca_pem)?,
            base: self.url.clone(),
            token: self.admin_token.clone(),
        })
    }
}

/// A reqwest client that trusts only the broker's CA.
pub fn plain_client(ca_pem: &str) -> anyhow::Result<reqwest::Client> {
    init_crypto();
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).context("the CA PEM is bad")?;
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(60))
        .build()
        .context("cannot build an HTTPS client")
}

/// A reqwest client that trusts the broker's CA and presents a session certificate.
pub fn mtls_client(ca_pem: &str, cert_pem: &str, key_pem: &str) -> anyhow::Result<reqwest::Client> {
    init_crypto();
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).context("the CA PEM is bad")?;
    let identity = reqwest::Identity::from_pem(format!("{key_pem}\n{cert_pem}").as_bytes())
        .context("the session certificate or key PEM is bad")?;
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(identity)
        .timeout(Duration::from_secs(60))
        .build()
        .context("cannot build an mTLS client")
}

/// The user API, as the first user.
#[derive(Clone)]
pub struct UserApi {
    pub client: reqwest::Client,
    pub base: String,
    token: String,
}

impl UserApi {
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<T> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {path}: the broker did not answer"))?;
        let status = response.status();
        let bytes = response.bytes().await.with_context(|| format!("POST {path}: no body"))?;
        if !status.is_success() {
            bail!("POST {path} failed ({status}): {}", String::from_utf8_lossy(&bytes));
        }
        serde_json::from_slice(&bytes).with_context(|| format!("POST {path}: unexpected answer"))
    }

    /// GETs `path` and returns the answer's body; an error answer is an error.
    pub async fn get_bytes(&self, path: &str) -> anyhow::Result<bytes::Bytes> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("GET {path}: the broker did not answer"))?;
        let status = response.status();
        let bytes = response.bytes().await.with_context(|| format!("GET {path}: no body"))?;
        if !status.is_success() {
            bail!("GET {path} failed ({status}): {}", String::from_utf8_lossy(&bytes));
        }
        Ok(bytes)
    }

    /// Registers a generic secret `name` whose one variable `variable` holds `value`.
    pub async fn add_generic(
        &self,
        name: &str,
        variable: &str,
        value: SecretValue,
    ) -> anyhow::Result<()> {
        let body = CreateSecret {
            name: name.to_owned(),
            kind: "generic".to_owned(),
            fields: [(variable.to_owned(), value)].into_iter().collect(),
            description: Some("maestro-bench".to_owned()),
            tags: Vec::new(),
            exposure: None,
            hosts: Vec::new(),
            alerts_off: None,
            on_alert: None,
            activation_default_seconds: None,
            activation_max_seconds: None,
            rotate_every_seconds: None,
        };
        let _: serde_json::Value = self.send("/v1/secrets", &body).await?;
        Ok(())
    }

    /// POSTs any JSON body (fields the typed requests do not have yet).
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        self.send(path, body).await
    }

    /// Creates a session (1 hour).
    pub async fn new_session(&self, label: &str) -> anyhow::Result<SessionCreated> {
        let body =
            CreateSession { ttl_seconds: Some(3600), label: Some(label.to_owned()), decoys: false };
        self.send("/v1/sessions", &body).await
    }

    pub async fn activate(&self, session: &str, names: &[String]) -> anyhow::Result<()> {
        let body = Activation { names: names.to_vec(), for_seconds: None };
        let _: serde_json::Value =
            self.send(&format!("/v1/sessions/{session}/activate"), &body).await?;
        Ok(())
    }

    pub async fn deactivate(&self, session: &str, names: &[String]) -> anyhow::Result<()> {
        let body = Activation { names: names.to_vec(), for_seconds: None };
        let _: serde_json::Value =
            self.send(&format!("/v1/sessions/{session}/deactivate"), &body).await?;
        Ok(())
    }

    pub async fn end_session(&self, session: &str) -> anyhow::Result<()> {
        let _: serde_json::Value =
            self.send(&format!("/v1/sessions/{session}/end"), &serde_json::json!({})).await?;
        Ok(())
    }

    /// The same API on a new client: a new TLS connection for the next request.
    pub fn fresh(&self, ca_pem: &str) -> anyhow::Result<UserApi> {
        Ok(UserApi {
            client: plain_client(ca_pem)?,
            base: self.base.clone(),
            token: self.token.clone(),
        })
    }

    /// `POST /v1/enroll` with a session's token and a CSR (no bearer token: the enrollment
    /// token is the credential).
    pub async fn enroll(&self, token: &SecretValue, csr_pem: &str) -> anyhow::Result<CertIssued> {
        let body = EnrollRequest { token: token.clone(), csr_pem: csr_pem.to_owned() };
        let response = self
            .client
            .post(format!("{}/v1/enroll", self.base))
            .json(&body)
            .send()
            .await
            .context("POST /v1/enroll: the broker did not answer")?;
        let status = response.status();
        let bytes = response.bytes().await.context("POST /v1/enroll: no body")?;
        if !status.is_success() {
            bail!("POST /v1/enroll failed ({status}): {}", String::from_utf8_lossy(&bytes));
        }
        serde_json::from_slice(&bytes).context("POST /v1/enroll: unexpected answer")
    }
}

/// A new key pair (in memory) and a CSR for it, as an agent makes them: (CSR PEM, key PEM).
pub fn new_csr() -> anyhow::Result<(String, String)> {
    let key = rcgen::KeyPair::generate().context("cannot generate a key")?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .context("cannot make a CSR")?
        .pem()
        .context("cannot encode a CSR")?;
    Ok((csr, key.serialize_pem()))
}

/// Writes the bundle of a new session to `path` (0600), as `maestro sessions create
/// --bundle-out` does.
pub fn write_bundle(path: &Path, url: &str, created: &SessionCreated) -> anyhow::Result<()> {
    let bundle = Bundle {
        broker_url: url.to_owned(),
        broker_urls: Vec::new(),
        ca_pem: created.ca_pem.clone(),
        session_id: created.session.id.clone(),
        enrollment_token: created.enrollment_token.clone(),
        enrollment_expires_at: created.enrollment_expires_at.clone(),
    };
    let bytes = serde_json::to_vec(&bundle).context("cannot serialize a bundle")?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(&bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// A running `maestro-agent run` on a temporary mount.
pub struct AgentProc {
    pub proc: Proc,
    pub mount: PathBuf,
    pub socket: PathBuf,
}

impl AgentProc {
    /// Starts an agent (not waiting for it): its mount and socket go under `dir`.
    pub fn spawn(bins: &Bins, bundle: &Path, dir: &Path) -> anyhow::Result<AgentProc> {
        Self::spawn_with(bins, bundle, dir, &[])
    }

    /// Like [`AgentProc::spawn`], with more `run` arguments.
    pub fn spawn_with(
        bins: &Bins,
        bundle: &Path,
        dir: &Path,
        extra: &[&str],
    ) -> anyhow::Result<AgentProc> {
        let mount = dir.join("secrets");
        let socket = dir.join("run").join("agent.sock");
        let mut cmd = Command::new(bins.path("maestro-agent")?);
        cmd.arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg("--mount")
            .arg(&mount)
            .arg("--socket")
            .arg(&socket)
            .arg("--user")
            .arg(format!("{SANDBOX_UID}:{SANDBOX_UID}"))
            .args(extra)
            .env_remove("MAESTRO_BUNDLE")
            .env_remove("MAESTRO_AGENT_SOCK")
            .env("RUST_LOG", "info");
        let proc = Proc::spawn("maestro-agent", cmd, &dir.join("agent.log"))?;
        Ok(AgentProc { proc, mount, socket })
    }

    /// Waits for the agent's ready line.
    pub fn wait_ready(&self) -> anyhow::Result<Instant> {
        self.proc.wait_line(START_TIMEOUT, |l| l == "maestro-agent: ready")?;
        Ok(Instant::now())
    }

    /// Starts an agent and waits until it is ready.
    pub fn start(bins: &Bins, bundle: &Path, dir: &Path) -> anyhow::Result<AgentProc> {
        Self::start_with(bins, bundle, dir, &[])
    }

    /// Like [`AgentProc::start`], with more `run` arguments.
    pub fn start_with(
        bins: &Bins,
        bundle: &Path,
        dir: &Path,
        extra: &[&str],
    ) -> anyhow::Result<AgentProc> {
        let agent = AgentProc::spawn_with(bins, bundle, dir, extra)?;
        agent.wait_ready()?;
        Ok(agent)
    }

    /// The names of the active secrets, as `maestro-exec --list` would get them.
    pub fn listed(&self) -> anyhow::Result<Vec<ListedSecret>> {
        match ask(&self.socket, Action::List)? {
            Response::List { secrets, .. } => Ok(secrets),
            Response::Error { message, .. } => Err(anyhow!("the agent refused: {message}")),
            other => Err(anyhow!("unexpected answer from the agent: {other:?}")),
        }
    }

    /// Waits until the agent lists exactly `count` active secrets.
    pub fn wait_listed(&self, count: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.listed()?.len();
            if n == count {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the agent lists {n} active secrets after {timeout:?}, not {count}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.proc.signal(Signal::SIGKILL);
        let _ = self.proc.wait_exit(Duration::from_secs(5), Duration::from_millis(5));
        if is_mounted(&self.mount) {
            let _ = nix::mount::umount2(&self.mount, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Whether `path` is a mount point now.
pub fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let wanted = path.to_string_lossy();
    mounts.lines().any(|l| l.split_whitespace().nth(1) == Some(wanted.as_ref()))
}

/// One request on the agent's socket: the protocol `maestro-exec` speaks.
pub fn ask(socket: &Path, action: Action) -> anyhow::Result<Response> {
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("no agent answers on {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).context("socket timeout")?;
    let mut line = serde_json::to_vec(&Request::new(action)).context("cannot encode a request")?;
    line.push(b'\n');
    stream.write_all(&line).context("cannot write to the agent's socket")?;
    let mut answer = Vec::new();
    BufReader::new(stream.take(maestro_wire::limits::MAX_SOCK_RESPONSE_BYTES as u64))
        .read_until(b'\n', &mut answer)
        .context("cannot read the agent's answer")?;
    serde_json::from_slice(&answer).context("the agent's answer is not a response")
}

/// A dummy value for benchmark secret number `i`: 40 characters, like an API key.
pub fn dummy_value(i: usize) -> SecretValue {
    SecretValue::new(format!("bench-{i:04}-{}", "x".repeat(29)))
}
