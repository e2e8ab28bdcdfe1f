//! Running the broker under test.
//!
//! * [`Broker`]: a real `maestro-broker serve` on `127.0.0.1:0` with its own temporary data
//!   directory; restart, `kill -9`, users, and the `maestro` CLI bound to it.
//! * [`Api`]: a user-API client (reqwest, trusting only the broker's CA).
//! * [`TestAgent`]: an agent-API client holding a real certificate, enrolled with a CSR made
//!   in memory; plus helpers to craft CSRs and certificates of another CA.
//! * [`EventStream`]: the NDJSON event stream, framed by line.

// A test fixture: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use maestro_wire::agent_api::{AgentEvent, CertIssued, EnrollRequest};
use rcgen::{CertificateParams, KeyPair};
use reqwest::Method;
use serde_json::{Value, json};

use crate::util::{ChildGuard, bin, temp_dir};

/// How long a broker may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Installs the rustls provider the clients use (once per process).
pub fn init_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Extra arguments and environment for `maestro-broker serve`.
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl BrokerOptions {
    /// Options with these extra `serve` arguments.
    pub fn args(args: &[&str]) -> Self {
        Self { args: args.iter().map(|s| (*s).to_owned()).collect(), env: Vec::new() }
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// What a command printed.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    /// Panics with the output unless the command succeeded.
    pub fn ok(self) -> Self {
        assert_eq!(self.status, 0, "command failed: {self:?}");
        self
    }

    /// Parses stdout as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }
}

/// A running broker.
pub struct Broker {
    _tmp: tempfile::TempDir,
    data_dir: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    pub admin_token: String,
    options: BrokerOptions,
    process: Option<ChildGuard>,
    /// Output of earlier runs (before a stop, kill or restart).
    past_log: String,
}

/// Starts `maestro-broker serve` on `data_dir` and waits for its listening line. On failure
/// returns everything the process printed.
pub fn launch(data_dir: &Path, options: &BrokerOptions) -> Result<(ChildGuard, String), String> {
    let mut cmd = Command::new(bin("maestro-broker"));
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0"])
        .args(&options.args)
        .env_remove("MAESTRO_MASTER_KEY")
        .env_remove("MAESTRO_DATA_DIR")
        .env("RUST_LOG", "info");
    for (k, v) in &options.env {
        cmd.env(k, v);
    }
    let mut child = ChildGuard::spawn("maestro-broker", cmd);
    let line =
        child.wait_for_stdout(START_TIMEOUT, |l| l.starts_with("maestro-broker: listening on "));
    match line {
        Some(line) => {
            let url = line.trim_start_matches("maestro-broker: listening on ").trim().to_owned();
            Ok((child, url))
        }
        None => {
            child.wait_exit(Duration::from_secs(5));
            Err(child.log())
        }
    }
}

impl Broker {
    /// A broker with default options.
    pub fn start() -> Self {
        Self::start_with(BrokerOptions::default())
    }

    /// A broker with extra `serve` options.
    pub fn start_with(options: BrokerOptions) -> Self {
        init_crypto();
        let tmp = temp_dir("maestro-broker-");
        let data_dir = tmp.path().join("data");
        let (process, url) = launch(&data_dir, &options)
            .unwrap_or_else(|log| panic!("maestro-broker did not start:\n{log}"));
        let admin_token = std::fs::read_to_string(data_dir.join("admin.token"))
            .expect("admin.token exists after start")
            .trim()
            .to_owned();
        Self {
            _tmp: tmp,
            data_dir,
            url,
            admin_token,
            options,
            process: Some(process),
            past_log: String::new(),
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The CA certificate file.
    pub fn ca_path(&self) -> PathBuf {
        self.data_dir.join("ca.pem")
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.ca_path()).expect("ca.pem is readable")
    }

    /// The process id of the running broker.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ChildGuard::pid)
    }

    /// Everything the broker printed, over all its runs.
    pub fn log(&self) -> String {
        let mut log = self.past_log.clone();
        if let Some(p) = &self.process {
            log.push_str(&p.log());
        }
        log
    }

    /// Waits up to `timeout` for `text` to appear in the log (output is read by another
    /// thread, so a line the broker just wrote may not be there yet).
    pub fn log_contains(&self, text: &str, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.log().contains(text) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the current (or last) run printed.
    pub fn current_log(&self) -> String {
        self.process.as_ref().map(ChildGuard::log).unwrap_or_default()
    }

    /// Stops the broker with SIGTERM; panics unless it exits cleanly within 10 s.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            let status = p.terminate(Duration::from_secs(10));
            self.past_log.push_str(&p.log());
            assert!(
                status.is_some_and(|s| s.success()),
                "broker did not stop cleanly on SIGTERM ({status:?}):\n{}",
                p.log()
            );
        }
    }

    /// Kills the broker with SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill9();
            self.past_log.push_str(&p.log());
        }
    }

    /// Starts the broker again on the same data directory (stopping it first if running).
    /// The port changes; `url` is updated.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again(&self.options.clone());
    }

    /// Starts the (stopped) broker again with other options.
    pub fn start_again(&mut self, options: &BrokerOptions) {
        let (process, url) = launch(&self.data_dir, options)
            .unwrap_or_else(|log| panic!("maestro-broker did not restart:\n{log}"));
        self.process = Some(process);
        self.url = url;
    }

    /// Tries to start the stopped broker; returns its output if it does not come up.
    pub fn try_start_again(&mut self, options: &BrokerOptions) -> Result<(), String> {
        let (process, url) = launch(&self.data_dir, options).inspect_err(|log| {
            self.past_log.push_str(log);
        })?;
        self.process = Some(process);
        self.url = url;
        Ok(())
    }

    /// Runs `maestro-broker ARGS --data-dir DIR`.
    pub fn admin_command(&self, args: &[&str], env: &[(&str, &str)]) -> CmdOutput {
        let mut cmd = Command::new(bin("maestro-broker"));
        cmd.args(args).arg("--data-dir").arg(&self.data_dir).env_remove("MAESTRO_MASTER_KEY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(cmd, None)
    }

    /// `maestro-broker user add NAME`: the new user's token.
    pub fn add_user(&self, name: &str) -> String {
        let out = self.admin_command(&["user", "add", name], &[]).ok();
        out.stdout.trim().to_owned()
    }

    /// Runs the `maestro` CLI against this broker as the user with `token`.
    pub fn maestro(&self, token: &str, args: &[&str]) -> CmdOutput {
        self.maestro_stdin(token, args, None)
    }

    /// Runs the `maestro` CLI with `stdin` as its standard input.
    pub fn maestro_stdin(&self, token: &str, args: &[&str], stdin: Option<&[u8]>) -> CmdOutput {
        let mut cmd = Command::new(bin("maestro"));
        cmd.args(args)
            .env_remove("MAESTRO_TOKEN_FILE")
            .env("MAESTRO_URL", &self.url)
            .env("MAESTRO_TOKEN", token)
            .env("MAESTRO_CA", self.ca_path());
        run(cmd, stdin)
    }

    /// Asserts that the user with `token` has no alerts (issue 12: the unusual-usage rules stay
    /// quiet on ordinary use), through the CLI; the panic lists any there are.
    pub fn assert_no_alerts(&self, token: &str) {
        let out = self.maestro(token, &["alerts", "ls", "--json"]).ok();
        let alerts = out.json();
        assert_eq!(alerts, serde_json::json!([]), "ordinary use raised alerts: {alerts:#}");
    }

    /// A user-API client acting with `token`.
    pub fn api(&self, token: &str) -> Api {
        Api {
            client: plain_client(&self.ca_pem()),
            base: self.url.clone(),
            token: token.to_owned(),
        }
    }

    /// A user-API client for the admin.
    pub fn admin(&self) -> Api {
        self.api(&self.admin_token)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // The child guard kills the process and prints its log if the test failed.
        self.process.take();
    }
}

fn run(mut cmd: Command, stdin: Option<&[u8]>) -> CmdOutput {
    use std::io::Write;
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input).expect("can write stdin");
    }
    let out = child.wait_with_output().expect("the command can be waited for");
    CmdOutput {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A reqwest client that trusts only `ca_pem` and presents no certificate.
pub fn plain_client(ca_pem: &str) -> reqwest::Client {
    init_crypto();
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA PEM parses");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client builds")
}

/// A reqwest client that trusts `ca_pem` and presents `cert_pem` with `key_pem`. Event
/// streams are long-lived, so it has no overall timeout (use one per read).
pub fn client_with_identity(ca_pem: &str, cert_pem: &str, key_pem: &str) -> reqwest::Client {
    init_crypto();
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA PEM parses");
    let identity = reqwest::Identity::from_pem(format!("{key_pem}\n{cert_pem}").as_bytes())
        .expect("identity PEM parses");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(identity)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("client builds")
}

/// An answer: status and JSON body (`Null` if the body is not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    /// The `error` code of an `ApiError` body.
    pub fn code(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }

    /// The `message` of an `ApiError` body.
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }

    /// Panics unless the status is 2xx; returns the body.
    pub fn ok(self) -> Value {
        assert!((200..300).contains(&self.status), "request failed: {self:?}");
        self.body
    }

    /// Panics unless this is an error with `status` and `code`; returns the message.
    pub fn expect_error(&self, status: u16, code: &str) -> String {
        assert_eq!((self.status, self.code()), (status, code), "unexpected answer: {self:?}");
        let message = self.message();
        assert!(!message.is_empty() && !message.contains('\n'), "one-line message: {self:?}");
        message.to_owned()
    }
}

async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("the body can be read");
    Reply { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
}

/// A user-API client.
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Api {
    /// Sends a request with a JSON body (or none).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut req =
            self.client.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        reply(req.send().await.expect("the broker answers")).await
    }

    /// Sends raw bytes with an optional content type.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        reply(req.send().await.expect("the broker answers")).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }

    /// Creates a generic secret with one field per `(variable, value)`.
    pub async fn add_generic(&self, name: &str, fields: &[(&str, &str)]) -> Reply {
        let fields: serde_json::Map<String, Value> =
            fields.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
        self.post("/v1/secrets", json!({ "name": name, "kind": "generic", "fields": fields })).await
    }

    /// Creates a session; returns `(id, enrollment token)`.
    pub async fn new_session(&self, body: Value) -> (String, String) {
        let created = self.post("/v1/sessions", body).await.ok();
        (
            created["session"]["id"].as_str().expect("session id").to_owned(),
            created["enrollment_token"].as_str().expect("token").to_owned(),
        )
    }

    pub async fn activate(&self, session: &str, names: &[&str]) -> Reply {
        self.post(&format!("/v1/sessions/{session}/activate"), json!({ "names": names })).await
    }

    pub async fn deactivate(&self, session: &str, names: &[&str]) -> Reply {
        self.post(&format!("/v1/sessions/{session}/deactivate"), json!({ "names": names })).await
    }
}

/// A new key pair and a CSR for it made from `params` (what it asks for is up to the test).
pub fn new_csr(params: &CertificateParams) -> (String, String) {
    let key = KeyPair::generate().expect("key generates");
    let csr = params.serialize_request(&key).expect("CSR serializes").pem().expect("CSR PEM");
    (csr, key.serialize_pem())
}

/// A certificate for `session_id`'s SAN issued by a CA of our own making (not the broker's).
pub fn foreign_identity(session_id: &str) -> (String, String) {
    let ca_key = KeyPair::generate().expect("key generates");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA self-signs");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("key generates");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.subject_alt_names = vec![rcgen::SanType::URI(
        maestro_wire::session_uri(session_id).as_str().try_into().expect("URI"),
    )];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).expect("signs");
    drop(ca_cert);
    (cert.pem(), key.serialize_pem())
}

/// An agent-API client holding an enrolled session certificate.
pub struct TestAgent {
    pub session_id: String,
    pub issued: CertIssued,
    pub key_pem: String,
    pub client: reqwest::Client,
    pub base: String,
    ca_pem: String,
}

impl TestAgent {
    /// Enrolls with `token` and a fresh key; the error is the broker's answer.
    pub async fn enroll(broker: &Broker, token: &str) -> Result<Self, Reply> {
        let (csr, key) = new_csr(&CertificateParams::default());
        Self::enroll_with(broker, token, &csr, &key).await
    }

    /// Enrolls with a given CSR (and its key).
    pub async fn enroll_with(
        broker: &Broker,
        token: &str,
        csr_pem: &str,
        key_pem: &str,
    ) -> Result<Self, Reply> {
        let ca_pem = broker.ca_pem();
        let request = EnrollRequest { token: token.into(), csr_pem: csr_pem.to_owned() };
        let response = plain_client(&ca_pem)
            .post(format!("{}/v1/enroll", broker.url))
            .json(&request)
            .send()
            .await
            .expect("the broker answers");
        let r = reply(response).await;
        if r.status != 200 {
            return Err(r);
        }
        let issued: CertIssued = serde_json::from_value(r.body).expect("a CertIssued");
        let client = client_with_identity(&ca_pem, &issued.cert_pem, key_pem);
        Ok(Self {
            session_id: issued.session_id.clone(),
            issued,
            key_pem: key_pem.to_owned(),
            client,
            base: broker.url.clone(),
            ca_pem,
        })
    }

    /// The same identity, talking to the broker at another URL (after a restart).
    pub fn rebase(&mut self, url: &str) {
        self.base = url.to_owned();
        self.client = client_with_identity(&self.ca_pem, &self.issued.cert_pem, &self.key_pem);
    }

    /// `GET path` with the certificate; `Err` if the TLS connection was refused.
    pub async fn get(&self, path: &str) -> Result<Reply, reqwest::Error> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(30))
            .send()
            .await?;
        Ok(reply(response).await)
    }

    /// `POST path` with a JSON body and the certificate.
    pub async fn post(&self, path: &str, body: Value) -> Result<Reply, reqwest::Error> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(30))
            .json(&body)
            .send()
            .await?;
        Ok(reply(response).await)
    }

    /// Opens the event stream.
    pub async fn events(&self) -> Result<EventStream, Reply> {
        let response = self
            .client
            .get(format!("{}/v1/agent/events", self.base))
            .send()
            .await
            .expect("the broker answers");
        if response.status() != 200 {
            return Err(reply(response).await);
        }
        Ok(EventStream { response, buf: Vec::new(), ended: false })
    }
}

/// The NDJSON event stream, framed by line.
pub struct EventStream {
    response: reqwest::Response,
    buf: Vec<u8>,
    ended: bool,
}

impl EventStream {
    /// The next event, or `None` if the stream ended or `timeout` passed.
    pub async fn next(&mut self, timeout: Duration) -> Option<AgentEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Some(serde_json::from_slice(&line).unwrap_or_else(|e| {
                    panic!("bad event line ({e}): {}", String::from_utf8_lossy(&line))
                }));
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => return None,
                Ok(Ok(Some(chunk))) => self.buf.extend_from_slice(&chunk),
                Ok(Ok(None)) | Ok(Err(_)) => self.ended = true,
            }
        }
    }

    /// The next event that is not a heartbeat.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<AgentEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(AgentEvent::Heartbeat { .. }) => continue,
                other => return other,
            }
        }
    }

    /// Whether the server closed the stream (reads until the end or `timeout`).
    pub async fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            if self.next(left).await.is_none() {
                return self.ended;
            }
        }
    }
}
