//! `maestro-agent run`: the wiring, in order.
//!
//! Single-threaded set-up (bundle, environment, capabilities, subreaper), then a current-thread
//! runtime: the main thread runs every task, so CMD is forked from a thread that lives as long as
//! the agent (its death signal follows that thread), and the agent stays small. The FUSE session
//! has its own thread; blocking work (the unmount) goes to the blocking pool.
//!
//! Then: clean a stale mount, mount (empty), enroll, follow the event stream until the first
//! snapshot is applied, listen on the socket, say `maestro-agent: ready`, start CMD, and wait for
//! the end: the session's end, a signal, or CMD's exit. Teardown runs whatever the end was.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use maestro_fs::MountOptions;
use maestro_wire::agent_api::Bundle;
use maestro_wire::errors;
use nix::sys::signal::Signal as NixSignal;
use thiserror::Error;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{Notify, mpsc};
use zeroize::Zeroizing;

use crate::backoff::Backoff;
use crate::broker::{Broker, BrokerError};
use crate::cgroup::SessionCgroup;
use crate::child::{self, ChildError};
use crate::config::{Config, MAX_BUNDLE_BYTES};
use crate::dispatch::Ctx;
use crate::link::{self, Link, LinkEvent};
use crate::listener::{self, ListenerError};
use crate::privs::{self, PrivsError};
use crate::proxy::{Proxy, ProxyConfig, ProxyHandle};
use crate::relay::Sockets;
use crate::relay::mysql::Mysql;
use crate::relay::postgres::Postgres;
use crate::sealing;
use crate::ssh::SshAgents;
use crate::state::{Egress, Store};
use crate::teardown::{self, Cause, MountSlot, Parts};
use crate::usage::{self, FsObserver, QUEUE_CAPACITY, UsageQueue};

/// The line a script waits for on stdout.
pub const READY_LINE: &str = "maestro-agent: ready";
/// The filesystem's name in /proc/mounts.
pub const FSNAME: &str = "maestro-secrets";
/// How long enrollment keeps retrying a broker that is not there yet.
const ENROLL_RETRY_FOR: Duration = Duration::from_secs(120);

#[derive(Debug, Error)]
pub enum RunError {
    #[error(
        "cannot read the bundle {path}: {source}; pass the file `maestro sessions create --bundle-out` wrote"
    )]
    ReadBundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the bundle {path} is larger than {max} bytes; pass the file `maestro sessions create --bundle-out` wrote"
    )]
    BundleTooLarge { path: PathBuf, max: u64 },
    #[error(
        "the bundle {path} is not a session bundle (line {line}, column {column}); pass the file `maestro sessions create --bundle-out` wrote"
    )]
    ParseBundle { path: PathBuf, line: usize, column: usize },
    #[error(transparent)]
    Privs(#[from] PrivsError),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Child(#[from] ChildError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("cannot create the mount point {path}: {source}")]
    CreateMountPoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Fs(#[from] maestro_fs::FsError),
    #[error("enrollment failed: {0}")]
    Enroll(#[source] BrokerError),
    /// The broker was unreachable at a loopback URL: inside a sandbox, that is the sandbox.
    #[error("enrollment failed: {problem}; {hint}")]
    EnrollLoopback { problem: String, hint: String },
    #[error(transparent)]
    Listen(#[from] ListenerError),
    #[error("the session ended before the agent was ready: {0}")]
    EndedEarly(String),
}

/// Reads and parses the bundle; the token stays in zeroizing memory.
pub fn read_bundle(path: &Path) -> Result<Bundle, RunError> {
    let err = |source| RunError::ReadBundle { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(err)?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(4096));
    file.take(MAX_BUNDLE_BYTES + 1).read_to_end(&mut bytes).map_err(err)?;
    if bytes.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(RunError::BundleTooLarge { path: path.to_owned(), max: MAX_BUNDLE_BYTES });
    }
    serde_json::from_slice(&bytes).map_err(|e| RunError::ParseBundle {
        path: path.to_owned(),
        line: e.line(),
        column: e.column(),
    })
}

/// Runs the agent; returns its exit status. Call after `harden::harden_process`, on the main
/// thread, before any other thread exists.
pub fn run(config: Config) -> Result<i32, RunError> {
    let mut bundle = read_bundle(&config.bundle)?;
    if let Some(first) = config.broker_urls.first() {
        // `--broker-url`: the broker as this sandbox reaches it, whatever the bundle says.
        bundle.broker_url = first.clone();
        bundle.broker_urls = config.broker_urls.clone();
    }
    // SAFETY: no other thread exists yet (the runtime is built below).
    unsafe { crate::harden::scrub_environment() };
    // Directories the agent creates (mount point, socket directory, their parents) must be
    // reachable by the sandbox user whatever umask the entrypoint inherited.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    // Before the capabilities go: a cgroup root is often writable with CAP_DAC_OVERRIDE only.
    let cgroup = session_cgroup();
    privs::restrict(&privs::LinuxCaps, privs::AGENT_CAPS)?;
    child::become_subreaper()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
        .map_err(RunError::Runtime)?;
    let result = runtime.block_on(session(config, bundle, cgroup));
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// The signals the agent handles.
struct Signals {
    term: Signal,
    int: Signal,
    child: Signal,
    forwarded: Vec<(NixSignal, Signal)>,
}

impl Signals {
    fn install() -> Result<Self, RunError> {
        let s = |kind| signal(kind).map_err(RunError::Signals);
        let mut forwarded = Vec::new();
        for (nix_sig, kind) in [
            (NixSignal::SIGHUP, SignalKind::hangup()),
            (NixSignal::SIGQUIT, SignalKind::quit()),
            (NixSignal::SIGUSR1, SignalKind::user_defined1()),
            (NixSignal::SIGUSR2, SignalKind::user_defined2()),
        ] {
            forwarded.push((nix_sig, s(kind)?));
        }
        Ok(Signals {
            term: s(SignalKind::terminate())?,
            int: s(SignalKind::interrupt())?,
            child: s(SignalKind::child())?,
            forwarded,
        })
    }

    /// The next SIGTERM or SIGINT.
    async fn stop(&mut self) -> NixSignal {
        stop(&mut self.term, &mut self.int).await
    }
}

/// The next SIGTERM or SIGINT.
async fn stop(term: &mut Signal, int: &mut Signal) -> NixSignal {
    tokio::select! {
        _ = term.recv() => NixSignal::SIGTERM,
        _ = int.recv() => NixSignal::SIGINT,
    }
}

/// The next signal to forward to CMD.
async fn to_forward(forwarded: &mut [(NixSignal, Signal)]) -> NixSignal {
    let waits = forwarded.iter_mut().map(|(sig, stream)| {
        let sig = *sig;
        Box::pin(async move {
            stream.recv().await;
            sig
        })
    });
    futures_util::future::select_all(waits).await.0
}

/// Creates the mount point if it is missing. A dead mount left by a killed agent answers
/// ENOTCONN rather than NotFound: it is left for `clean_stale_mount`.
fn ensure_mount_point(path: &Path) -> Result<(), RunError> {
    if matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
            .map_err(|source| RunError::CreateMountPoint { path: path.to_owned(), source })?;
    }
    Ok(())
}

/// The session's cgroup, or why there is none (logged; teardown falls back).
fn session_cgroup() -> Option<Arc<SessionCgroup>> {
    match SessionCgroup::create() {
        Ok(cg) => {
            tracing::info!(cgroup = %cg.path().display(), "the session's processes run in their own cgroup");
            Some(Arc::new(cg))
        }
        Err(e) => {
            tracing::warn!(
                "no session cgroup ({e}); at the end the agent kills its descendants instead \
                 (it is their subreaper), which a process that leaves the agent's tree escapes"
            );
            None
        }
    }
}

async fn session(
    config: Config,
    bundle: Bundle,
    cgroup: Option<Arc<SessionCgroup>>,
) -> Result<i32, RunError> {
    let mut signals = Signals::install()?;
    let mount_str = config.mount_str().map_err(RunError::Config)?;
    ensure_mount_point(&config.mount)?;
    if maestro_fs::clean_stale_mount(&config.mount)? {
        tracing::warn!(mount = %config.mount.display(), "cleaned a stale mount left by an earlier agent");
    }
    let usage = UsageQueue::new(QUEUE_CAPACITY);
    usage.set_sandbox_uid(config.user.uid);
    let options = MountOptions {
        uid: config.user.uid,
        gid: config.user.gid,
        allowed_uids: Vec::new(),
        fsname: FSNAME.to_owned(),
    };
    let mount = maestro_fs::mount(&config.mount, options, Arc::new(FsObserver(usage.clone())))?;
    let slot = MountSlot::new(mount);
    let store = Arc::new(Store::new(&mount_str, config.lease, Box::new(slot.clone())));
    // Made now, served only if the broker's snapshot says the session has decoys.
    match crate::decoys::DecoySet::generate() {
        Ok(set) => store.prepare_decoys(set),
        Err(e) => tracing::error!("{e}; this agent serves no decoys"),
    }
    // Sealed ssh keys and database logins: their sockets next to the agent socket.
    let sockets = config.socket.parent().unwrap_or(std::path::Path::new("/"));
    store.set_sockets(&sockets.to_string_lossy());
    let proxy = start_egress(&config, usage.clone(), &store, sockets)?;
    let mut parts = Parts {
        cgroup,
        store: store.clone(),
        mount: slot,
        socket: None,
        usage: usage.clone(),
        broker: None,
        grace: config.grace,
        command: None,
        tasks: Vec::new(),
        proxy: Some(proxy),
    };
    // From here on, teardown runs whatever happens.
    let outcome = serve(&config, bundle, &mut signals, &mut parts).await;
    let cause = match &outcome {
        Ok(cause) => cause.clone(),
        Err(_) => Cause::Failed,
    };
    let code = teardown::teardown(parts, cause).await;
    outcome.map(|_| code)
}

/// The system's roots, for the CA bundle the sandbox's tools read (with the session CA added).
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";
/// A roots file larger than this is not read (Debian's is about 220 KiB).
const MAX_ROOTS_BYTES: u64 = 8 << 20;

fn system_roots() -> String {
    let read = std::fs::File::open(SYSTEM_ROOTS).and_then(|f| {
        let mut text = String::new();
        f.take(MAX_ROOTS_BYTES).read_to_string(&mut text).map(|_| text)
    });
    match read {
        Ok(text) => text,
        Err(e) => {
            tracing::warn!(
                "cannot read the system roots {SYSTEM_ROOTS} ({e}); the sandbox's CA bundle holds \
                 only the session CA, so tools that read it trust nothing else"
            );
            String::new()
        }
    }
}

/// Starts the egress proxy, points the store's variables and files at it, and makes every
/// change of the active set reach it.
fn start_egress(
    config: &Config,
    usage: Arc<UsageQueue>,
    store: &Arc<Store>,
    sockets: &std::path::Path,
) -> Result<Arc<ProxyHandle>, RunError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut pc = ProxyConfig::new(vec![0, config.user.uid], usage.clone());
    pc.listen = config.egress.listen;
    pc.pass_through = config.egress.pass_through.clone();
    pc.test_only_upstreams = config.egress.test_only_upstreams.clone();
    if let Some(path) = &config.egress.test_only_upstream_ca {
        let pem = std::fs::read_to_string(path).map_err(|e| {
            RunError::Config(format!(
                "cannot read --test-only-upstream-ca {}: {e}; pass a PEM file",
                path.display()
            ))
        })?;
        pc.test_only_upstream_ca = Some(pem);
    }
    let ssh = SshAgents::ssh(sockets, config.user.uid, usage.clone());
    let pg = Sockets::new(
        Postgres::new(usage.clone(), pc.test_only_upstream_ca.clone()),
        sockets,
        config.user.uid,
        usage.clone(),
    );
    let mysql = Sockets::new(Mysql::new(usage.clone()), sockets, config.user.uid, usage.clone());
    let proxy = Arc::new(Proxy::start(pc).map_err(|e| RunError::Config(e.to_string()))?);
    let ca_pem = proxy.ca_pem().to_owned();
    let mut bundle_pem = system_roots();
    if !bundle_pem.is_empty() && !bundle_pem.ends_with('\n') {
        bundle_pem.push('\n');
    }
    bundle_pem.push_str(&ca_pem);
    store
        .set_egress(Egress {
            proxy_url: format!("http://{}", proxy.local_addr()),
            ca_pem,
            bundle_pem,
        })
        .map_err(|e| RunError::Config(e.to_string()))?;
    let watched = proxy.clone();
    store.watch(Box::new(move |secrets| {
        if let Err(e) = watched.set(sealing::sealed_set(secrets)) {
            tracing::error!("sealed secrets are not substituted: {e}");
        }
        ssh.set(secrets);
        pg.set(secrets);
        mysql.set(secrets);
    }));
    Ok(proxy)
}

/// Enrolls, retrying while the broker is unreachable (it may be starting too).
async fn enroll(bundle: &Bundle) -> Result<Broker, RunError> {
    let started = tokio::time::Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    let hint = loopback_hint(&bundle.urls());
    loop {
        match Broker::enroll(bundle).await {
            Ok(b) => return Ok(b),
            Err(e) if e.is_transient() && started.elapsed() < ENROLL_RETRY_FOR => {
                let delay = backoff.next_delay();
                match &hint {
                    Some(hint) => {
                        tracing::warn!("{e}; {hint}; retrying in {} ms", delay.as_millis())
                    }
                    None => tracing::warn!("{e}; retrying in {} ms", delay.as_millis()),
                }
                tokio::time::sleep(delay).await;
            }
            Err(e) => {
                return Err(match hint {
                    Some(hint) if e.is_transient() => RunError::EnrollLoopback {
                        problem: errors::one_line(errors::causes(&e)),
                        hint,
                    },
                    _ => RunError::Enroll(e),
                });
            }
        }
    }
}

/// What to say when the broker cannot be reached at a loopback URL: inside a sandbox with its
/// own network (a container), 127.0.0.1 is the sandbox itself, not the broker's host.
fn loopback_hint(urls: &[String]) -> Option<String> {
    let url = urls.iter().find(|u| maestro_wire::agent_api::is_loopback_url(u))?;
    Some(format!(
        "the broker URL {url} is a loopback address, which inside a sandbox is the sandbox \
         itself: start the broker with --public-url https://ADDRESS:PORT that the sandbox can \
         reach and make a new bundle, or pass maestro-agent run --broker-url"
    ))
}

/// Everything between the mount and the end; returns why it ended.
async fn serve(
    config: &Config,
    bundle: Bundle,
    signals: &mut Signals,
    parts: &mut Parts,
) -> Result<Cause, RunError> {
    let broker = tokio::select! {
        b = enroll(&bundle) => Arc::new(b?),
        sig = signals.stop() => return Ok(Cause::Signal(sig.as_str())),
    };
    drop(bundle);
    tracing::info!(session = broker.session_id(), "enrolled");
    parts.broker = Some(broker.clone());

    let (events_tx, mut events) = mpsc::channel(16);
    let lease_expired = Arc::new(Notify::new());
    parts.tasks.push(tokio::spawn(link::run(Link {
        broker: broker.clone(),
        store: parts.store.clone(),
        lease: config.lease,
        lease_expired: lease_expired.clone(),
        events: events_tx,
    })));
    parts.tasks.push(tokio::spawn(link::watch_lease(parts.store.clone(), lease_expired)));
    parts.tasks.push(tokio::spawn(link::renew_certificates(broker.clone())));
    parts.tasks.push(tokio::spawn(usage::run_poster(parts.usage.clone(), broker.clone())));

    // Ready once the first snapshot is applied.
    tokio::select! {
        ev = events.recv() => match ev {
            Some(LinkEvent::Synced { .. }) => {}
            Some(LinkEvent::Ended { reason }) => return Err(RunError::EndedEarly(reason)),
            None => return Err(RunError::EndedEarly("the event stream task stopped".into())),
        },
        sig = signals.stop() => return Ok(Cause::Signal(sig.as_str())),
    }

    let sock = listener::bind(&config.socket)?;
    parts.socket = Some(config.socket.clone());
    let ctx = Arc::new(Ctx {
        store: parts.store.clone(),
        usage: parts.usage.clone(),
        sandbox_uid: config.user.uid,
        cgroup: parts.cgroup.clone(),
    });
    parts.tasks.push(tokio::spawn(listener::serve(sock, ctx)));

    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{READY_LINE}");
        let _ = out.flush();
    }
    tracing::info!(
        mount = %config.mount.display(),
        socket = %config.socket.display(),
        user = config.user.uid,
        "ready"
    );

    if !config.command.is_empty() {
        let socket = (!config.socket_is_default()).then_some(config.socket.as_path());
        let pid = child::spawn(&config.command, config.user, socket, parts.cgroup.as_deref())?;
        tracing::info!(pid, "started the command");
        parts.command = Some(pid);
    }
    wait_for_end(config, signals, &mut events, parts.command).await
}

/// Waits for the session's end, a stop signal, or CMD's exit; forwards signals to CMD.
async fn wait_for_end(
    config: &Config,
    signals: &mut Signals,
    events: &mut mpsc::Receiver<LinkEvent>,
    command: Option<u32>,
) -> Result<Cause, RunError> {
    let Signals { term, int, child: chld, forwarded } = signals;
    // Armed when a stop signal was forwarded to CMD: CMD gets --grace to end on its own.
    let mut stop_deadline: Option<(tokio::time::Instant, &'static str)> = None;
    loop {
        let grace_over = async {
            match stop_deadline {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = events.recv() => match ev {
                Some(LinkEvent::Synced { .. }) => {}
                Some(LinkEvent::Ended { reason }) => return Ok(Cause::SessionEnded(reason)),
                None => return Ok(Cause::Failed),
            },
            _ = chld.recv() => {
                if let Some(code) = child::reap(command) {
                    tracing::info!(code, "the command exited");
                    return Ok(Cause::CommandExited(code));
                }
            }
            sig = stop(term, int) => match command {
                Some(pid) => {
                    child::signal(pid, sig);
                    if stop_deadline.is_none() {
                        stop_deadline = Some((tokio::time::Instant::now() + config.grace, sig.as_str()));
                    }
                }
                None => return Ok(Cause::Signal(sig.as_str())),
            },
            sig = to_forward(forwarded) => {
                if let Some(pid) = command {
                    child::signal(pid, sig);
                }
            }
            () = grace_over => {
                let name = stop_deadline.map_or("SIGTERM", |(_, n)| n);
                return Ok(Cause::Signal(name));
            }
        }
    }
}
