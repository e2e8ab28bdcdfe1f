//! The soak and fault suite (issue 9), on the real binaries.
//!
//! * Sessions in waves on three brokers sharing one PostgreSQL database: each session is
//!   created, two secrets activated, an agent started with a bundle naming every broker (in a
//!   rotated order, so the load is spread), a file read under the mount and a `maestro-exec`,
//!   then the session ended; after each end the agent must have exited, its mount be gone, no
//!   process of the session remain, and neither the mount, the socket nor `maestro-exec` give
//!   the secrets any more.
//! * While a wave runs: `kill -9` of a broker (agents move to the next broker of their bundle;
//!   a long-lived witness agent keeps its secrets and follows a change made through another
//!   broker), then a `pg_ctl restart` of the database (brokers answer with clear errors
//!   meanwhile and recover).
//! * An agent's network cut for longer than its lease (secrets gone), then restored (back):
//!   a broker and an agent in two network namespaces made here, joined by a veth pair whose
//!   addresses exist only inside them; removed again whatever happens.
//! * A broker's disk made full (its SQLite data directory on a 16 MiB tmpfs): writes fail with a
//!   clear error, reads work, `PRAGMA integrity_check` says ok, writes work again once the space
//!   is back, and nothing acknowledged is lost across a restart.
//!
//! Every write a broker acknowledged (sessions, activations, secrets added, session ends, and
//! the file reads and injections the agents reported) is counted and looked for in the
//! database at the end. The report prints what was held and what was lost; the test fails
//! when a must-be-zero count is not zero.
//!
//! `soak_short` (50 sessions, every fault) runs with the other tests; `soak_full` is ignored
//! here and run by `scripts/soak.sh` (`SOAK_SESSIONS`, default 1,000; `SOAK_WAVE`, default 20).

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use maestro_tests::agent::{
    Agent, AgentOptions, SANDBOX_UID, alive, as_uid, descendants, fuse_available, is_mounted,
    run_cmd,
};
use maestro_tests::broker::{Broker, BrokerOptions, CmdOutput, launch, plain_client};
use maestro_tests::pg::{Database, PeerBroker, Postgres, random_word};
use maestro_tests::util::{ChildGuard, bin, temp_dir};
use maestro_wire::SecretValue;
use maestro_wire::agent_api::Bundle;
use reqwest::Method;
use serde_json::{Value, json};

/// The agent's lease in the waves: far longer than any failover.
const WAVE_LEASE: &str = "60s";
/// The agent's lease in the network cut.
const CUT_LEASE: Duration = Duration::from_secs(3);
/// Heartbeats of the brokers: a dead stream is noticed in about 3 s.
const HEARTBEAT: &str = "1s";
/// Give-up bounds (never timing assertions: the machine is shared).
const READY_WITHIN: Duration = Duration::from_secs(90);
const EXIT_WITHIN: Duration = Duration::from_secs(60);
const CALL_GIVE_UP: Duration = Duration::from_secs(120);
const CHANGE_WITHIN: Duration = Duration::from_secs(60);
/// Secrets the sessions draw from.
const POOL: usize = 12;
const READY_LINE: &str = "maestro-agent: ready";

#[test]
fn soak_short() {
    if !fuse_available() {
        return;
    }
    run(Settings { sessions: env_usize("SOAK_SHORT_SESSIONS", 50), wave: 10 });
}

#[test]
#[ignore = "long: run by scripts/soak.sh"]
fn soak_full() {
    if !fuse_available() {
        return;
    }
    run(Settings { sessions: env_usize("SOAK_SESSIONS", 1000), wave: env_usize("SOAK_WAVE", 20) });
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(default)
}

struct Settings {
    sessions: usize,
    wave: usize,
}

/// What was acknowledged, done and seen; filled by every session thread.
#[derive(Default)]
struct Ledger {
    sessions: Vec<String>,
    activations: Vec<(String, String)>,
    secrets_added: Vec<String>,
    ends: Vec<String>,
    /// (session, secret) → file reads that returned the value.
    reads: HashMap<(String, String), u64>,
    /// (session, secret) → `maestro-exec` runs that got the value.
    injections: HashMap<(String, String), u64>,
    completed: usize,
    failures: Vec<String>,
    survived: Vec<String>,
    leftovers: usize,
    /// Error answers of the brokers during faults: "status code: message" → how many.
    clear_errors: BTreeMap<String, usize>,
    unclear_errors: Vec<String>,
    transport_errors: usize,
    /// Lines of agents' logs about usage reports lost or dropped.
    agent_notes: Vec<String>,
    /// Sessions whose agent said it lost usage reports.
    announced: HashSet<String>,
}

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records an error answer: clear when it is an `ApiError` with a one-line message.
fn note_error(ledger: &Mutex<Ledger>, status: u16, body: &Value, raw: &[u8]) {
    let code = body["error"].as_str().unwrap_or("");
    let message = body["message"].as_str().unwrap_or("");
    let mut l = lock(ledger);
    if !code.is_empty() && !message.is_empty() && !message.contains('\n') {
        *l.clear_errors.entry(format!("{status} {code}: {message}")).or_default() += 1;
    } else {
        let text: String = String::from_utf8_lossy(raw).chars().take(200).collect();
        l.unclear_errors.push(format!("{status}: {text:?}"));
    }
}

/// Why a user-API call did not succeed.
enum CallError {
    Refused(u16, Value),
    GaveUp(String),
}

impl std::fmt::Debug for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Refused(status, body) => write!(f, "refused: HTTP {status} {body}"),
            CallError::GaveUp(last) => write!(f, "gave up after {CALL_GIVE_UP:?}: {last}"),
        }
    }
}

/// The control plane: the user API through whichever broker answers, retrying transport
/// errors and 5xx answers (recorded) on the next broker until [`CALL_GIVE_UP`].
struct Plane {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    urls: Mutex<Vec<String>>,
    token: String,
}

impl Plane {
    fn urls(&self) -> Vec<String> {
        self.urls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_url(&self, index: usize, url: &str) {
        self.urls.lock().unwrap_or_else(|e| e.into_inner())[index] = url.to_owned();
    }

    fn call(
        &self,
        ledger: &Mutex<Ledger>,
        prefer: usize,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CallError> {
        let give_up = Instant::now() + CALL_GIVE_UP;
        let mut k = prefer;
        loop {
            let urls = self.urls();
            let base = &urls[k % urls.len()];
            let mut req = self
                .client
                .request(method.clone(), format!("{base}{path}"))
                .bearer_auth(&self.token)
                .timeout(Duration::from_secs(30));
            if let Some(b) = &body {
                req = req.json(b);
            }
            let answer = self.rt.block_on(async {
                let resp = req.send().await?;
                let status = resp.status().as_u16();
                Ok::<_, reqwest::Error>((status, resp.bytes().await?))
            });
            let last = match answer {
                Ok((status, raw)) => {
                    let value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
                    if (200..300).contains(&status) {
                        return Ok(value);
                    }
                    note_error(ledger, status, &value, &raw);
                    if status < 500 && status != 429 {
                        return Err(CallError::Refused(status, value));
                    }
                    format!("HTTP {status} from {base}: {value}")
                }
                Err(e) => {
                    lock(ledger).transport_errors += 1;
                    format!("{base}: {e}")
                }
            };
            if Instant::now() >= give_up {
                return Err(CallError::GaveUp(last));
            }
            k += 1;
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// A secret of the pool: its name, variable and value.
#[derive(Clone)]
struct PoolSecret {
    name: String,
    var: String,
    value: String,
}

/// Everything the session threads share.
struct Ctx {
    plane: Plane,
    ledger: Mutex<Ledger>,
    pool: Vec<PoolSecret>,
    work: PathBuf,
    ca_pem: String,
}

/// Detaches a mount left behind, whatever happened.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

/// `cat PATH` as the sandbox user.
fn read_as_sandbox(path: &Path) -> CmdOutput {
    let mut cmd = as_uid(SANDBOX_UID, "cat");
    cmd.arg(path);
    run_cmd(cmd)
}

/// `maestro-exec sh -c 'printf %s "$VAR"'` as the sandbox user against `socket`.
fn exec_var(socket: &Path, var: &str) -> CmdOutput {
    let mut cmd = as_uid(SANDBOX_UID, bin("maestro-exec"));
    cmd.args(["--no-mask", "sh", "-c", &format!("printf %s \"${var}\"")])
        .env("MAESTRO_AGENT_SOCK", socket);
    run_cmd(cmd)
}

/// Writes a bundle (0600) as `maestro sessions create --bundle-out` would.
fn write_bundle(path: &Path, urls: &[String], created: &Value, ca_pem: &str) {
    let bundle = Bundle {
        broker_url: urls[0].clone(),
        broker_urls: urls.to_vec(),
        ca_pem: created["ca_pem"].as_str().unwrap_or(ca_pem).to_owned(),
        session_id: created["session"]["id"].as_str().unwrap_or_default().to_owned(),
        enrollment_token: SecretValue::from(
            created["enrollment_token"].as_str().unwrap_or_default(),
        ),
        enrollment_expires_at: created["enrollment_expires_at"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    };
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).unwrap();
    file.write_all(&serde_json::to_vec(&bundle).unwrap()).unwrap();
}

fn rotated(urls: &[String], by: usize) -> Vec<String> {
    (0..urls.len()).map(|k| urls[(by + k) % urls.len()].clone()).collect()
}

/// One session, start to end. Problems go to the ledger.
fn session(ctx: &Ctx, i: usize) {
    if let Err(why) = session_inner(ctx, i) {
        lock(&ctx.ledger).failures.push(format!("session #{i}: {why}"));
    }
}

fn session_inner(ctx: &Ctx, i: usize) -> Result<(), String> {
    let plane = &ctx.plane;
    let ledger = &ctx.ledger;
    let created = plane
        .call(
            ledger,
            i,
            Method::POST,
            "/v1/sessions",
            Some(json!({"ttl_seconds": 3600, "label": format!("soak-{i}")})),
        )
        .map_err(|e| format!("create: {e:?}"))?;
    let id = created["session"]["id"].as_str().ok_or("no session id")?.to_owned();
    lock(ledger).sessions.push(id.clone());

    let file_secret = &ctx.pool[i % ctx.pool.len()];
    let exec_secret = &ctx.pool[(i + 1) % ctx.pool.len()];
    plane
        .call(
            ledger,
            i,
            Method::POST,
            &format!("/v1/sessions/{id}/activate"),
            Some(json!({"names": [file_secret.name, exec_secret.name]})),
        )
        .map_err(|e| format!("activate: {e:?}"))?;
    {
        let mut l = lock(ledger);
        l.activations.push((id.clone(), file_secret.name.clone()));
        l.activations.push((id.clone(), exec_secret.name.clone()));
    }

    let dir = ctx.work.join(format!("s{i}"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let bundle = dir.join("bundle.json");
    write_bundle(&bundle, &rotated(&plane.urls(), i), &created, &ctx.ca_pem);
    let mount = dir.join("secrets");
    let socket = dir.join("run").join("agent.sock");
    let _mount_guard = MountGuard(mount.clone());
    let options = AgentOptions {
        lease: Some(WAVE_LEASE.into()),
        grace: Some("2s".into()),
        rust_log: "warn".into(),
        // CMD and a process it leaves in the background: both must be gone after the end.
        command: vec!["sh".into(), "-c".into(), "sleep 600 & exec sleep 600".into()],
        ..AgentOptions::default()
    };
    let mut cmd = Agent::command(&bundle, &mount, &socket, &options);
    cmd.env("RUST_LOG", &options.rust_log);
    let mut agent = ChildGuard::spawn("maestro-agent", cmd);
    if agent.wait_for_stdout(READY_WITHIN, |l| l == READY_LINE).is_none() {
        return Err(format!("agent not ready: {}", tail(&agent.log(), 4)));
    }

    let path = mount.join(&file_secret.var);
    let out = read_as_sandbox(&path);
    if out.status != 0 || out.stdout != file_secret.value {
        return Err(format!("read {}: {} {}", file_secret.var, out.status, out.stderr.trim()));
    }
    *lock(ledger).reads.entry((id.clone(), file_secret.name.clone())).or_default() += 1;
    let out = exec_var(&socket, &exec_secret.var);
    if out.status != 0 || out.stdout != exec_secret.value {
        return Err(format!("maestro-exec: {} {}", out.status, out.stderr.trim()));
    }
    *lock(ledger).injections.entry((id.clone(), exec_secret.name.clone())).or_default() += 1;

    let agent_pid = agent.pid().ok_or("agent without pid")?;
    let processes = descendants(agent_pid);

    match plane.call(ledger, i, Method::POST, &format!("/v1/sessions/{id}/end"), Some(json!({}))) {
        Ok(_) => lock(ledger).ends.push(id.clone()),
        // An end that went through before a broker died, retried on another: it is ended.
        Err(CallError::Refused(..)) => {
            let shown = plane
                .call(ledger, i, Method::GET, &format!("/v1/sessions/{id}"), None)
                .map_err(|e| format!("show after end: {e:?}"))?;
            if shown["state"] != "ended" {
                return Err(format!("end refused and the session is {}", shown["state"]));
            }
        }
        Err(e) => return Err(format!("end: {e:?}")),
    }

    let status = agent.wait_exit(EXIT_WITHIN);
    let mut survived = Vec::new();
    match status {
        None => {
            survived.push("the agent still ran");
            agent.kill9();
        }
        Some(s) if !s.success() => {
            lock(ledger)
                .failures
                .push(format!("session #{i}: agent exit {s}: {}", tail(&agent.log(), 3)));
        }
        Some(_) => {}
    }
    // What the agent said about its usage reports (explains a lost report).
    let log = agent.log();
    for l in log.lines().filter(|l| l.contains("usage reports") && !l.contains("kept for later")) {
        let mut ledger = lock(ledger);
        ledger.agent_notes.push(format!("session #{i} {id}: {l}"));
        if l.contains("lost") || l.contains("dropped") {
            ledger.announced.insert(id.clone());
        }
    }
    if is_mounted(&mount) {
        survived.push("the mount");
    }
    if path.exists() {
        survived.push("the file");
    }
    if UnixStream::connect(&socket).is_ok() {
        survived.push("the socket");
    }
    let out = exec_var(&socket, &exec_secret.var);
    if out.status == 0 && out.stdout == exec_secret.value {
        survived.push("maestro-exec");
    }
    let left: Vec<u32> = processes.into_iter().filter(|p| alive(*p)).collect();
    for pid in &left {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    {
        let mut l = lock(ledger);
        l.leftovers += left.len();
        if !survived.is_empty() {
            l.survived.push(format!("session #{i} {id}: {}", survived.join(", ")));
        }
        l.completed += 1;
    }
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// What a fault step held and what went wrong in it.
#[derive(Default)]
struct Fault {
    name: String,
    held: Vec<String>,
    problems: Vec<String>,
    took: Duration,
    /// Writes this step's own broker acknowledged, and how many of them were not found.
    acked: usize,
    lost: usize,
}

impl Fault {
    fn new(name: &str) -> Self {
        Fault { name: name.to_owned(), ..Fault::default() }
    }

    fn check(&mut self, ok: bool, held: String, problem: impl FnOnce() -> String) {
        if ok {
            self.held.push(held);
        } else {
            self.problems.push(problem());
        }
    }
}

/// A long-lived agent that lives through the faults of the waves.
struct Witness {
    agent: ChildGuard,
    mount: PathBuf,
    socket: PathBuf,
    secret: PoolSecret,
    _guard: MountGuard,
}

impl Witness {
    fn reads(&self) -> bool {
        let out = read_as_sandbox(&self.mount.join(&self.secret.var));
        out.status == 0 && out.stdout == self.secret.value
    }

    fn execs(&self) -> bool {
        let out = exec_var(&self.socket, &self.secret.var);
        out.status == 0 && out.stdout == self.secret.value
    }
}

fn sql_rows(pg: &Postgres, db: &Database, sql: &str) -> Vec<Vec<String>> {
    let out = pg.psql(&db.name, sql);
    assert_eq!(out.status, 0, "{sql}: {}", out.stderr);
    out.stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

fn add_secret(ctx: &Ctx, prefer: usize, name: &str, var: &str, value: &str) -> bool {
    let body = json!({"name": name, "kind": "generic", "fields": {var: value}});
    match ctx.plane.call(&ctx.ledger, prefer, Method::POST, "/v1/secrets", Some(body)) {
        Ok(_) => {
            lock(&ctx.ledger).secrets_added.push(name.to_owned());
            true
        }
        Err(e) => {
            lock(&ctx.ledger).failures.push(format!("add secret {name}: {e:?}"));
            false
        }
    }
}

fn wait_for(within: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run(settings: Settings) {
    let started = Instant::now();
    let Some(pg) = Postgres::start() else { return };
    let db = pg.create_database(&format!("maestro_soak_{}", random_word(6)));
    let mut options = db.broker_options();
    options.args = vec!["--heartbeat".into(), HEARTBEAT.into()];
    let a = Mutex::new(Broker::start_with(options.clone()));
    let (a_url, a_dir, token) = {
        let a = lock_broker(&a);
        (a.url.clone(), a.data_dir().to_owned(), a.admin_token.clone())
    };
    let b = PeerBroker::start(&lock_broker(&a), &options);
    let c = PeerBroker::try_start(&a_dir, &options)
        .unwrap_or_else(|log| panic!("the third broker did not start:\n{log}"));
    let ca_pem = std::fs::read_to_string(a_dir.join("ca.pem")).unwrap();
    let work = temp_dir("maestro-soak-");
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ctx = Ctx {
        plane: Plane {
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
            client: plain_client(&ca_pem),
            urls: Mutex::new(vec![a_url.clone(), b.url.clone(), c.url.clone()]),
            token,
        },
        ledger: Mutex::new(Ledger::default()),
        pool: (0..POOL)
            .map(|j| PoolSecret {
                name: format!("SOAK_P{j}"),
                var: format!("SOAK_P{j}_VAR"),
                value: format!("soak-pool-{j}-{}", random_word(12)),
            })
            .collect(),
        work: work.path().to_owned(),
        ca_pem,
    };
    for (j, s) in ctx.pool.iter().enumerate() {
        assert!(add_secret(&ctx, j, &s.name, &s.var, &s.value), "cannot add the pool");
    }
    let setup = started.elapsed();

    // The witness: bundle A, B, C (A first), alive through both wave faults.
    let witness_secret = PoolSecret {
        name: "SOAK_WITNESS".into(),
        var: "SOAK_WITNESS_VAR".into(),
        value: format!("soak-witness-{}", random_word(12)),
    };
    assert!(add_secret(&ctx, 0, &witness_secret.name, &witness_secret.var, &witness_secret.value));
    let witness = start_witness(&ctx, witness_secret);

    let waves = settings.sessions.div_ceil(settings.wave);
    let kill_wave = waves / 3;
    let restart_wave = (2 * waves / 3).max(kill_wave + 1);
    let mut faults: Vec<Fault> = Vec::new();
    let waves_started = Instant::now();
    for w in 0..waves {
        let first = w * settings.wave;
        let count = settings.wave.min(settings.sessions - first);
        std::thread::scope(|s| {
            for i in first..first + count {
                let ctx = &ctx;
                s.spawn(move || session(ctx, i));
                std::thread::sleep(Duration::from_millis(20));
            }
            // One secret added per wave; in the fault waves, during the fault.
            if w == kill_wave {
                faults.push(kill_a_broker(&ctx, &a, &options, &witness));
            } else if w == restart_wave {
                faults.push(restart_postgres(&ctx, &pg, &witness));
            }
            add_secret(&ctx, w, &format!("SOAK_ADD{w}"), &format!("SOAK_ADD{w}_VAR"), "added");
        });
        if w % 5 == 4 || w + 1 == waves {
            let l = lock(&ctx.ledger);
            eprintln!(
                "soak: wave {}/{waves}: {} sessions completed, {} failures, {:?}",
                w + 1,
                l.completed,
                l.failures.len(),
                waves_started.elapsed()
            );
        }
    }
    let waves_took = waves_started.elapsed();

    // The witness survived both faults with its secret.
    let mut end_witness = Fault::new("witness agent (A, B, C; through the kill and the restart)");
    end_witness.check(
        witness.reads() && witness.execs(),
        "still serves its secret after every fault".into(),
        || "lost its secret".into(),
    );
    drop(witness);
    faults.push(end_witness);

    let cut = network_cut();
    faults.push(cut);
    let full = disk_full();
    faults.push(full);

    // Everything acknowledged is in the database.
    let verify_started = Instant::now();
    let Unrecorded { lost, silent, announced } = verify(&ctx, &pg, &db);
    let verify_took = verify_started.elapsed();

    let l = lock(&ctx.ledger);
    let usage_acked: u64 = l.reads.values().sum::<u64>() + l.injections.values().sum::<u64>();
    let fault_acked: usize = faults.iter().map(|f| f.acked).sum();
    let fault_lost: usize = faults.iter().map(|f| f.lost).sum();
    let acked =
        l.sessions.len() + l.activations.len() + l.secrets_added.len() + l.ends.len() + fault_acked;
    let mut report = String::new();
    let mut line = |s: String| {
        report.push_str(&s);
        report.push('\n');
    };
    line("==================== soak report ====================".into());
    line(format!(
        "sessions run: {} of {} ({} waves of {}; 3 brokers on one PostgreSQL database)",
        l.completed, settings.sessions, waves, settings.wave
    ));
    line(format!(
        "acknowledged writes: {acked} (sessions {}, activations {}, secrets added {}, session \
         ends {}; disk-full broker {})",
        l.sessions.len(),
        l.activations.len(),
        l.secrets_added.len(),
        l.ends.len(),
        fault_acked
    ));
    line(format!("lost acknowledged writes: {} (must be 0)", lost.len() + fault_lost));
    for m in lost.iter().take(10) {
        line(format!("  lost: {m}"));
    }
    line(format!(
        "uses made in sandboxes: {usage_acked} (file reads {}, injections {}); missing from the \
         audit trail silently: {} (must be 0); missing with the agent saying it lost them: {}",
        l.reads.values().sum::<u64>(),
        l.injections.values().sum::<u64>(),
        silent.len(),
        announced.len()
    ));
    for m in silent.iter().take(10) {
        line(format!("  silently missing: {m}"));
    }
    for m in announced.iter().take(10) {
        line(format!("  announced missing: {m}"));
    }
    line(format!("sessions whose secrets survived their end: {} (must be 0)", l.survived.len()));
    for m in l.survived.iter().take(10) {
        line(format!("  survived: {m}"));
    }
    line(format!("processes left behind: {} (must be 0)", l.leftovers));
    for m in l.agent_notes.iter().take(10) {
        line(format!("  agent: {m}"));
    }
    line(format!("failed sessions or steps: {} (must be 0)", l.failures.len()));
    for m in l.failures.iter().take(10) {
        line(format!("  failed: {m}"));
    }
    line(format!(
        "broker error answers: {} clear, {} unclear (must be 0); {} connections refused or cut",
        l.clear_errors.values().sum::<usize>(),
        l.unclear_errors.len(),
        l.transport_errors
    ));
    for (m, n) in l.clear_errors.iter().take(10) {
        line(format!("  {n} x {m}"));
    }
    for m in l.unclear_errors.iter().take(5) {
        line(format!("  unclear: {m}"));
    }
    let mut fault_problems = 0;
    for f in &faults {
        line(format!("fault: {} ({:.1} s)", f.name, f.took.as_secs_f64()));
        for h in &f.held {
            line(format!("  held: {h}"));
        }
        for p in &f.problems {
            line(format!("  PROBLEM: {p}"));
        }
        fault_problems += f.problems.len();
    }
    line(format!("fault problems: {fault_problems} (must be 0)"));
    line(format!(
        "durations: set-up {:.1} s, waves {:.1} s ({:.2} s per session), verification {:.1} s, \
         total {:.1} s",
        setup.as_secs_f64(),
        waves_took.as_secs_f64(),
        waves_took.as_secs_f64() / settings.sessions as f64,
        verify_took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    ));
    line("=====================================================".into());
    println!("{report}");
    if let Ok(path) = std::env::var("SOAK_REPORT") {
        let _ = std::fs::write(path, &report);
    }
    assert!(
        lost.is_empty()
            && fault_lost == 0
            && silent.is_empty()
            && l.survived.is_empty()
            && l.leftovers == 0
            && l.failures.is_empty()
            && l.unclear_errors.is_empty()
            && fault_problems == 0
            && l.completed == settings.sessions,
        "the soak found problems:\n{report}"
    );
    drop(l);
    drop(b);
    drop(c);
}

fn lock_broker(a: &Mutex<Broker>) -> std::sync::MutexGuard<'_, Broker> {
    a.lock().unwrap_or_else(|e| e.into_inner())
}

fn start_witness(ctx: &Ctx, secret: PoolSecret) -> Witness {
    let created = ctx
        .plane
        .call(&ctx.ledger, 0, Method::POST, "/v1/sessions", Some(json!({"label": "witness"})))
        .expect("witness session");
    let id = created["session"]["id"].as_str().unwrap().to_owned();
    lock(&ctx.ledger).sessions.push(id.clone());
    ctx.plane
        .call(
            &ctx.ledger,
            0,
            Method::POST,
            &format!("/v1/sessions/{id}/activate"),
            Some(json!({"names": [secret.name]})),
        )
        .expect("witness activation");
    lock(&ctx.ledger).activations.push((id, secret.name.clone()));
    let dir = ctx.work.join("witness");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bundle = dir.join("bundle.json");
    write_bundle(&bundle, &ctx.plane.urls(), &created, &ctx.ca_pem);
    let mount = dir.join("secrets");
    let socket = dir.join("run").join("agent.sock");
    let guard = MountGuard(mount.clone());
    let options = AgentOptions { lease: Some(WAVE_LEASE.into()), ..AgentOptions::default() };
    let cmd = Agent::command(&bundle, &mount, &socket, &options);
    let agent = ChildGuard::spawn("maestro-agent (witness)", cmd);
    assert!(
        agent.wait_for_stdout(READY_WITHIN, |l| l == READY_LINE).is_some(),
        "the witness agent is not ready:\n{}",
        agent.log()
    );
    let witness = Witness { agent, mount, socket, secret, _guard: guard };
    assert!(witness.reads() && witness.execs(), "the witness has no secret");
    witness
}

/// `kill -9` of broker A while a wave runs; A comes back on a new port afterwards.
fn kill_a_broker(
    ctx: &Ctx,
    a: &Mutex<Broker>,
    options: &BrokerOptions,
    witness: &Witness,
) -> Fault {
    let mut fault = Fault::new("kill -9 of broker A under load");
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    lock_broker(a).kill9();
    fault.held.push("broker A killed with SIGKILL while the wave ran".into());
    fault.check(
        witness.reads() && witness.execs(),
        "the witness (bundle A, B, C) serves its secret right after the kill".into(),
        || format!("the witness lost its secret at the kill: {}", tail(&witness.agent.log(), 5)),
    );
    // A change made through B reaches the witness: it follows B now.
    let extra = "SOAK_WITNESS_EXTRA";
    let added = add_secret(ctx, 1, extra, "SOAK_WITNESS_EXTRA_VAR", "extra");
    let id = witness_session(ctx);
    let activated = added
        && ctx
            .plane
            .call(
                &ctx.ledger,
                1,
                Method::POST,
                &format!("/v1/sessions/{id}/activate"),
                Some(json!({"names": [extra]})),
            )
            .is_ok();
    if activated {
        lock(&ctx.ledger).activations.push((id, extra.to_owned()));
    }
    let arrived = activated
        && wait_for(CHANGE_WITHIN, || witness.mount.join("SOAK_WITNESS_EXTRA_VAR").exists())
            .is_some();
    fault.check(arrived, "an activation made through broker B reached the witness".into(), || {
        format!("the activation through B did not arrive: {}", tail(&witness.agent.log(), 5))
    });
    fault.check(
        witness.agent.log().contains("moved to the next broker of the bundle"),
        "the witness says it moved to the next broker".into(),
        || "the witness never said it moved".into(),
    );
    // Wait for the wave's agents to finish with A gone, then bring A back.
    std::thread::sleep(Duration::from_secs(3));
    let mut broker = lock_broker(a);
    match broker.try_start_again(options) {
        Ok(()) => {
            ctx.plane.set_url(0, &broker.url);
            fault.held.push(format!("broker A restarted on {}", broker.url));
        }
        Err(log) => fault.problems.push(format!("broker A did not restart: {}", tail(&log, 5))),
    }
    fault.took = started.elapsed();
    fault
}

fn witness_session(ctx: &Ctx) -> String {
    let l = lock(&ctx.ledger);
    l.activations
        .iter()
        .find(|(_, s)| s == "SOAK_WITNESS")
        .map(|(id, _)| id.clone())
        .expect("the witness session is recorded")
}

/// `pg_ctl restart` while a wave runs.
fn restart_postgres(ctx: &Ctx, pg: &Postgres, witness: &Witness) -> Fault {
    let mut fault = Fault::new("PostgreSQL restarted under load (pg_ctl restart -m fast)");
    std::thread::sleep(Duration::from_millis(1500));
    let before = lock(&ctx.ledger).clear_errors.values().sum::<usize>();
    let started = Instant::now();
    let took = pg.restart();
    fault.held.push(format!("pg_ctl restart took {:.1} s", took.as_secs_f64()));
    fault.check(
        witness.reads() && witness.execs(),
        "the witness serves its secret across the restart".into(),
        || "the witness lost its secret across the restart".into(),
    );
    // Every broker answers again.
    for (k, url) in ctx.plane.urls().iter().enumerate() {
        let recovered = wait_for(CHANGE_WITHIN, || {
            let req = ctx
                .plane
                .client
                .get(format!("{url}/v1/secrets/SOAK_WITNESS"))
                .bearer_auth(&ctx.plane.token)
                .timeout(Duration::from_secs(10));
            ctx.plane.rt.block_on(async { req.send().await.is_ok_and(|r| r.status() == 200) })
        });
        fault.check(
            recovered.is_some(),
            format!("broker {} answers reads again", ["A", "B", "C"][k % 3]),
            || format!("broker {url} did not recover"),
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = lock(&ctx.ledger).clear_errors.values().sum::<usize>();
    fault.held.push(format!("{} clear error answers during the restart", after - before));
    fault.took = started.elapsed();
    fault
}

/// What was acknowledged but is not in the database, and the uses (file reads and injections
/// that gave the sandbox a value) that no audit record shows.
fn verify(ctx: &Ctx, pg: &Postgres, db: &Database) -> Unrecorded {
    let l = lock(&ctx.ledger);
    let mut lost = Vec::new();
    let mut silent = Vec::new();
    let mut announced = Vec::new();
    let sessions: HashMap<String, bool> =
        sql_rows(pg, db, "SELECT id, (ended_at IS NOT NULL)::text FROM sessions")
            .into_iter()
            .map(|r| (r[0].clone(), r.get(1).is_some_and(|v| v == "true")))
            .collect();
    for id in &l.sessions {
        if !sessions.contains_key(id) {
            lost.push(format!("session {id}"));
        }
    }
    for id in &l.ends {
        if sessions.get(id) != Some(&true) {
            lost.push(format!("end of session {id}"));
        }
    }
    let secrets: HashSet<String> =
        sql_rows(pg, db, "SELECT name FROM secrets").into_iter().map(|r| r[0].clone()).collect();
    for name in &l.secrets_added {
        if !secrets.contains(name) {
            lost.push(format!("secret {name}"));
        }
    }
    let activated: HashSet<(String, String)> = sql_rows(
        pg,
        db,
        "SELECT session_id, secret_name FROM audit WHERE action = 'activated' AND session_id \
         IS NOT NULL AND secret_name IS NOT NULL",
    )
    .into_iter()
    .map(|r| (r[0].clone(), r.get(1).cloned().unwrap_or_default()))
    .collect();
    for pair in &l.activations {
        if !activated.contains(pair) {
            lost.push(format!("activation of {} in {}", pair.1, pair.0));
        }
    }
    // Usage: one row per report, or coalesced rows with a count, whichever the store keeps.
    let counted = !sql_rows(
        pg,
        db,
        "SELECT 1 FROM information_schema.columns WHERE table_name = 'audit' AND column_name \
         = 'use_count'",
    )
    .is_empty();
    // A row of one use leaves `use_count` empty.
    let sum = if counted { "SUM(COALESCE(use_count, 1))" } else { "COUNT(*)" };
    let used: HashMap<(String, String, String), u64> = sql_rows(
        pg,
        db,
        &format!(
            "SELECT session_id, secret_name, action, {sum} FROM audit WHERE action IN \
             ('file_read', 'injected') AND session_id IS NOT NULL GROUP BY 1, 2, 3"
        ),
    )
    .into_iter()
    .map(|r| ((r[0].clone(), r[1].clone(), r[2].clone()), r[3].parse().unwrap_or(0)))
    .collect();
    for (action, map) in [("file_read", &l.reads), ("injected", &l.injections)] {
        for ((session, secret), n) in map {
            let found = used
                .get(&(session.clone(), secret.clone(), action.to_owned()))
                .copied()
                .unwrap_or(0);
            if found < *n {
                // What the database holds for that session explains the loss.
                let rows = sql_rows(
                    pg,
                    db,
                    &format!(
                        "SELECT action, coalesce(secret_name, '-'), at FROM audit WHERE \
                         session_id = '{session}' ORDER BY seq"
                    ),
                );
                let rows: Vec<String> = rows.iter().map(|r| r.join(" ")).collect();
                let list = if l.announced.contains(session) { &mut announced } else { &mut silent };
                list.push(format!(
                    "{} {action} of {secret} in {session} (its audit: {})",
                    n - found,
                    rows.join(", ")
                ));
            }
        }
    }
    Unrecorded { lost, silent, announced }
}

/// The outcome of [`verify`].
struct Unrecorded {
    /// Acknowledged writes not found.
    lost: Vec<String>,
    /// Uses no audit record shows, their agent silent about it.
    silent: Vec<String>,
    /// Uses no audit record shows, whose agent logged that it lost usage reports.
    announced: Vec<String>,
}

/// Two network namespaces joined by a veth pair; deleted on drop (which removes the pair).
struct NetPair {
    broker_ns: String,
    agent_ns: String,
    agent_if: String,
}

const BROKER_ADDR: &str = "10.213.0.1";
const AGENT_ADDR: &str = "10.213.0.2";

fn ip(args: &[&str]) -> Result<(), String> {
    let out = run_cmd({
        let mut c = Command::new("ip");
        c.args(args);
        c
    });
    if out.status == 0 { Ok(()) } else { Err(format!("ip {}: {}", args.join(" "), out.stderr)) }
}

impl NetPair {
    fn create() -> Result<NetPair, String> {
        let tag = std::process::id() % 100_000;
        let pair = NetPair {
            broker_ns: format!("msoak-b-{tag}"),
            agent_ns: format!("msoak-a-{tag}"),
            agent_if: format!("msa{tag}"),
        };
        let broker_if = format!("msb{tag}");
        // Leftovers of an earlier run with the same pid.
        let _ = ip(&["netns", "del", &pair.broker_ns]);
        let _ = ip(&["netns", "del", &pair.agent_ns]);
        ip(&["netns", "add", &pair.broker_ns])?;
        ip(&["netns", "add", &pair.agent_ns])?;
        let (b, a) = (pair.broker_ns.as_str(), pair.agent_ns.as_str());
        ip(&["-n", b, "link", "add", &broker_if, "type", "veth", "peer", "name", &pair.agent_if])?;
        ip(&["-n", b, "link", "set", &pair.agent_if, "netns", a])?;
        ip(&["-n", b, "addr", "add", &format!("{BROKER_ADDR}/30"), "dev", &broker_if])?;
        ip(&["-n", a, "addr", "add", &format!("{AGENT_ADDR}/30"), "dev", &pair.agent_if])?;
        for (ns, dev) in [(b, "lo"), (b, broker_if.as_str()), (a, "lo"), (a, &pair.agent_if)] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(pair)
    }

    /// `program` run in namespace `ns` (network only: mounts stay shared, so the agent's FUSE
    /// mount is visible here).
    fn command(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{ns}")).arg("--").arg(program);
        cmd
    }

    fn link(&self, up: bool) -> Result<(), String> {
        ip(&["-n", &self.agent_ns, "link", "set", &self.agent_if, if up { "up" } else { "down" }])
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.agent_ns]);
        let _ = ip(&["netns", "del", &self.broker_ns]);
    }
}

/// A broker in one namespace, an agent in the other, the agent's link cut past its lease.
fn network_cut() -> Fault {
    let mut fault = Fault::new(&format!(
        "agent network cut for longer than its lease ({} s), then restored",
        CUT_LEASE.as_secs()
    ));
    let started = Instant::now();
    if let Err(e) = network_cut_inner(&mut fault) {
        fault.problems.push(e);
    }
    fault.took = started.elapsed();
    fault
}

fn network_cut_inner(fault: &mut Fault) -> Result<(), String> {
    let pair = NetPair::create()?;
    let tmp = temp_dir("maestro-soak-cut-");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let data = tmp.path().join("data");
    let mut cmd = NetPair::command(&pair.broker_ns, bin("maestro-broker"));
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", &format!("{BROKER_ADDR}:0"), "--hostname", BROKER_ADDR])
        .args(["--heartbeat", "300ms"])
        .env_remove("MAESTRO_MASTER_KEY")
        .env_remove("MAESTRO_DATA_DIR")
        .env_remove("MAESTRO_DATABASE_URL")
        .env("RUST_LOG", "info");
    let broker = ChildGuard::spawn("maestro-broker (netns)", cmd);
    let url = broker
        .wait_for_stdout(READY_WITHIN, |l| l.starts_with("maestro-broker: listening on "))
        .ok_or_else(|| format!("the broker in the namespace did not start: {}", broker.log()))?
        .trim_start_matches("maestro-broker: listening on ")
        .trim()
        .to_owned();
    let token = std::fs::read_to_string(data.join("admin.token")).map_err(|e| e.to_string())?;
    let cli = |args: &[&str]| {
        let mut c = NetPair::command(&pair.broker_ns, bin("maestro"));
        c.args(args)
            .env_remove("MAESTRO_TOKEN_FILE")
            .env("MAESTRO_URL", &url)
            .env("MAESTRO_TOKEN", token.trim())
            .env("MAESTRO_CA", data.join("ca.pem"));
        run_cmd(c)
    };
    let value = format!("soak-cut-{}", random_word(12));
    // The value goes to the CLI on its standard input, never in its argv.
    let mut add = NetPair::command(&pair.broker_ns, bin("maestro"));
    add.args(["secrets", "add", "SOAK_CUT", "--kind", "generic", "--field-stdin", "SOAK_CUT_VAR"])
        .env_remove("MAESTRO_TOKEN_FILE")
        .env("MAESTRO_URL", &url)
        .env("MAESTRO_TOKEN", token.trim())
        .env("MAESTRO_CA", data.join("ca.pem"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = add.spawn().map_err(|e| format!("cannot run maestro secrets add: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(value.as_bytes()).map_err(|e| format!("secrets add stdin: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("secrets add: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("secrets add in the namespace: {stderr}"));
    }
    let bundle = tmp.path().join("bundle.json");
    let out = cli(&["sessions", "create", "--bundle-out", &bundle.to_string_lossy()]);
    let id = out.stdout.lines().next().unwrap_or_default().trim().to_owned();
    if out.status != 0 || id.is_empty() {
        return Err(format!("sessions create in the namespace: {}", out.stderr));
    }
    let out = cli(&["secrets", "activate", "--session", &id, "SOAK_CUT"]);
    if out.status != 0 {
        return Err(format!("activate in the namespace: {}", out.stderr));
    }
    let mount = tmp.path().join("secrets");
    let socket = tmp.path().join("run").join("agent.sock");
    let _guard = MountGuard(mount.clone());
    let options = AgentOptions {
        lease: Some(format!("{}s", CUT_LEASE.as_secs())),
        ..AgentOptions::default()
    };
    let plain = Agent::command(&bundle, &mount, &socket, &options);
    let mut cmd = NetPair::command(&pair.agent_ns, plain.get_program());
    cmd.args(plain.get_args()).env("RUST_LOG", "info");
    let mut agent = ChildGuard::spawn("maestro-agent (netns)", cmd);
    if agent.wait_for_stdout(READY_WITHIN, |l| l == READY_LINE).is_none() {
        return Err(format!("the agent in the namespace is not ready: {}", agent.log()));
    }
    let path = mount.join("SOAK_CUT_VAR");
    let serves = || {
        let out = read_as_sandbox(&path);
        out.status == 0 && out.stdout == value
    };
    let execs = || {
        let out = exec_var(&socket, "SOAK_CUT_VAR");
        out.status == 0 && out.stdout == value
    };
    fault.check(serves() && execs(), "secret served before the cut".into(), || {
        "no secret before the cut".into()
    });

    pair.link(false)?;
    let cut_at = Instant::now();
    let gone = wait_for(CUT_LEASE + CHANGE_WITHIN, || !path.exists() && !execs());
    fault.check(
        gone.is_some(),
        format!(
            "secret gone from the mount and from maestro-exec {:.1} s after the cut",
            gone.unwrap_or_default().as_secs_f64()
        ),
        || "the secret outlived the lease while the network was cut".into(),
    );
    // Stay cut for twice the lease in all.
    std::thread::sleep((CUT_LEASE * 2).saturating_sub(cut_at.elapsed()));
    fault.check(!path.exists() && !execs(), "still gone at twice the lease".into(), || {
        "the secret came back while the network was cut".into()
    });
    pair.link(true)?;
    let back = wait_for(CHANGE_WITHIN, || serves() && execs());
    fault.check(
        back.is_some(),
        format!(
            "secret back {:.1} s after the link came up",
            back.unwrap_or_default().as_secs_f64()
        ),
        || format!("the secret did not come back: {}", tail(&agent.log(), 5)),
    );
    let out = cli(&["sessions", "end", &id]);
    if out.status != 0 {
        return Err(format!("sessions end in the namespace: {}", out.stderr));
    }
    let exited = agent.wait_exit(EXIT_WITHIN).is_some_and(|s| s.success());
    fault.check(exited && !is_mounted(&mount), "the agent tore down at the end".into(), || {
        "the agent in the namespace did not tear down".into()
    });
    drop(agent);
    drop(broker);
    drop(pair);
    fault.held.push("namespaces removed".into());
    Ok(())
}

/// Unmounts the tmpfs on drop.
struct TmpfsGuard(PathBuf);

impl Drop for TmpfsGuard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A SQLite broker whose data directory fills up.
fn disk_full() -> Fault {
    let mut fault = Fault::new("broker disk full (SQLite data directory on a 16 MiB tmpfs)");
    let started = Instant::now();
    if let Err(e) = disk_full_inner(&mut fault) {
        fault.problems.push(e);
    }
    fault.took = started.elapsed();
    fault
}

fn disk_full_inner(fault: &mut Fault) -> Result<(), String> {
    let tmp = temp_dir("maestro-soak-disk-");
    let disk = tmp.path().join("disk");
    std::fs::create_dir(&disk).map_err(|e| e.to_string())?;
    let out = run_cmd({
        let mut c = Command::new("mount");
        c.args(["-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs"]).arg(&disk);
        c
    });
    if out.status != 0 {
        return Err(format!("cannot mount a tmpfs: {}", out.stderr));
    }
    let _tmpfs = TmpfsGuard(disk.clone());
    let data = disk.join("data");
    let options = BrokerOptions::default();
    let (mut broker, url) = launch(&data, &options).map_err(|log| tail(&log, 5))?;
    let ca = std::fs::read_to_string(data.join("ca.pem")).map_err(|e| e.to_string())?;
    let token = std::fs::read_to_string(data.join("admin.token")).map_err(|e| e.to_string())?;
    let token = token.trim().to_owned();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = plain_client(&ca);
    let call = |url: &str, method: Method, path: &str, body: Option<Value>| {
        let mut req = client
            .request(method, format!("{url}{path}"))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(30));
        if let Some(b) = body {
            req = req.json(&b);
        }
        rt.block_on(async {
            match req.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let raw = r.bytes().await.unwrap_or_default();
                    (status, serde_json::from_slice(&raw).unwrap_or(Value::Null))
                }
                Err(e) => (0, json!({"transport": e.to_string()})),
            }
        })
    };
    let secret = |name: &str, size: usize| {
        json!({"name": name, "kind": "generic",
               "fields": {format!("{name}_VAR"): "d".repeat(size)}})
    };
    let mut acked: Vec<String> = Vec::new();
    for j in 0..3 {
        let name = format!("DISK_BEFORE{j}");
        let (status, body) = call(&url, Method::POST, "/v1/secrets", Some(secret(&name, 64)));
        if status != 201 && status != 200 {
            return Err(format!("write before the fill: {status} {body}"));
        }
        acked.push(name);
    }

    // Fill the disk.
    let filler = disk.join("filler");
    {
        let mut f = std::fs::File::create(&filler).map_err(|e| e.to_string())?;
        let chunk = vec![0u8; 256 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    fault.held.push("the tmpfs is full".into());

    // Writes now fail, with a clear error; some may still fit in pages SQLite holds.
    let mut refused = Vec::new();
    for j in 0..40 {
        let name = format!("DISK_FULL{j}");
        let (status, body) = call(&url, Method::POST, "/v1/secrets", Some(secret(&name, 8192)));
        if (200..300).contains(&status) {
            acked.push(name);
            continue;
        }
        let message = body["message"].as_str().unwrap_or("").to_owned();
        if status < 400 || body["error"].as_str().is_none() || message.is_empty() {
            fault.problems.push(format!("an unclear answer on a full disk: {status} {body}"));
        }
        refused.push(format!("{status} {}: {message}", body["error"].as_str().unwrap_or("")));
        if refused.len() >= 5 {
            break;
        }
    }
    if refused.is_empty() {
        fault.problems.push("the full disk never refused a write".into());
    } else {
        let mut kinds = refused.clone();
        kinds.dedup();
        fault.held.push(format!(
            "{} writes refused on the full disk (after {} more were accepted): {}",
            refused.len(),
            acked.len() - 3,
            kinds.join(" / ")
        ));
    }
    // The CLI says it in one line.
    let cli = |args: &[&str]| {
        let mut c = Command::new(bin("maestro"));
        c.args(args)
            .env_remove("MAESTRO_TOKEN_FILE")
            .env("MAESTRO_URL", &url)
            .env("MAESTRO_TOKEN", &token)
            .env("MAESTRO_CA", data.join("ca.pem"));
        run_cmd(c)
    };
    let big = format!("DISK_CLI_VAR={}", "c".repeat(8192));
    let out = cli(&["secrets", "add", "DISK_CLI", "--kind", "generic", "--field", &big]);
    if out.status == 0 {
        acked.push("DISK_CLI".into());
        fault.held.push("the CLI's write still fit".into());
    } else {
        fault.check(
            out.stderr.trim().lines().count() == 1,
            format!("the CLI says: {}", out.stderr.trim()),
            || format!("the CLI's error is not one line: {:?}", out.stderr),
        );
    }
    // Reads still work.
    let reads =
        acked.iter().all(|n| call(&url, Method::GET, &format!("/v1/secrets/{n}"), None).0 == 200);
    let (list, _) = call(&url, Method::GET, "/v1/secrets", None);
    fault.check(reads && list == 200, "reads work on the full disk".into(), || {
        format!("reads failed on the full disk (list: {list})")
    });

    // Space returns: writes work again.
    std::fs::remove_file(&filler).map_err(|e| e.to_string())?;
    let mut last = (0, Value::Null);
    let after = wait_for(Duration::from_secs(30), || {
        last = call(&url, Method::POST, "/v1/secrets", Some(secret("DISK_AFTER", 64)));
        last.0 == 201 || last.0 == 200 || (last.0 == 409 && last.1["error"] == "already_exists")
    });
    fault.check(after.is_some(), "writes work again once the space is back".into(), || {
        format!(
            "writes still fail after the space came back: {} {}; broker: {}",
            last.0,
            last.1,
            tail(&broker.log(), 6)
        )
    });
    if after.is_some() {
        acked.push("DISK_AFTER".into());
    }

    // No corruption: a clean stop, SQLite's own check, a restart, and every acknowledged write.
    let status = broker.terminate(Duration::from_secs(20));
    fault.check(status.is_some_and(|s| s.success()), "the broker stopped cleanly".into(), || {
        format!("the broker did not stop cleanly: {}", tail(&broker.log(), 5))
    });
    let db = data.join("maestro.db");
    let check = run_cmd({
        let mut c = Command::new("sqlite3");
        c.arg(&db).arg("PRAGMA integrity_check;");
        c
    });
    fault.check(
        check.status == 0 && check.stdout.trim() == "ok",
        "sqlite3 PRAGMA integrity_check: ok".into(),
        || format!("integrity_check: {} {}", check.stdout.trim(), check.stderr.trim()),
    );
    let (broker2, url2) = launch(&data, &options).map_err(|log| tail(&log, 5))?;
    let missing: Vec<&String> = acked
        .iter()
        .filter(|n| call(&url2, Method::GET, &format!("/v1/secrets/{n}"), None).0 != 200)
        .collect();
    fault.acked = acked.len();
    fault.lost = missing.len();
    fault.check(
        missing.is_empty(),
        format!("all {} acknowledged writes present after a restart", acked.len()),
        || format!("lost after the disk filled: {missing:?}"),
    );
    drop(broker2);
    Ok(())
}
