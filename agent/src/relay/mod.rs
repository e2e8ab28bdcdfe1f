//! Sockets the agent serves for sealed secrets it uses itself: one unix socket per active sealed
//! secret of a kind whose seal is [`Sealing::Agent`] (an ssh-agent for an `ssh` key, see
//! [`crate::ssh`]; a PostgreSQL relay for a `postgres` login, see [`postgres`]; a MySQL relay
//! for a `mysql` login, see [`mysql`]).
//!
//! What every such socket shares, and so lives here once:
//!
//! * the set of sockets follows the active set (the store's watcher calls [`Sockets::set`] with
//!   its lock held): a socket for each active sealed secret the service serves (a new one for a
//!   new version), none for the others, none at all while out of touch with the broker;
//! * a deactivation, the session's end or the lease running out closes the socket and every
//!   open connection of it at once: the accept task is aborted, which drops the listener and the
//!   `JoinSet` of connection tasks, which aborts them, and their sockets close as the runtime
//!   drops them. A client then connecting finds no socket (`ENOENT`) and says so;
//! * the socket is mode 0666 so that every uid may connect and a foreign one gets refused and
//!   recorded: SO_PEERCRED decides (the sandbox user, and root where the service allows it),
//!   before anything is read; refusals are recorded at most once a second per socket;
//! * at most [`Service::MAX_CONNECTIONS`] open connections per socket; one more is closed at once.
//!
//! What differs (the protocol, what is loaded from the secret, what happens at revocation) is
//! the [`Service`] trait. The certificate checks the database relays share are in `verify`.

pub mod mysql;
pub mod postgres;
mod verify;

use std::collections::BTreeMap;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use maestro_wire::catalog::{self, AgentSeal, Exposure, Kind, RelayProtocol, Sealing};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::dispatch::Peer;
use crate::state::{Entry, Secrets};
use crate::usage::UsageQueue;

/// A foreign uid's refusal is recorded at most once per this interval per socket.
const REFUSAL_RECORD_INTERVAL: Duration = Duration::from_secs(1);

/// One kind of socket the agent serves for a sealed secret.
pub trait Service: Send + Sync + 'static {
    /// What one socket's connections share (the secret's material, as the service needs it).
    type Shared: Send + Sync + 'static;
    /// What the socket is, for logs and records ("ssh-agent socket").
    const WHAT: &'static str;
    /// Open connections of one socket at most.
    const MAX_CONNECTIONS: usize;
    /// Whether root may connect too (besides the sandbox user).
    const ALLOW_ROOT: bool;

    /// Whether this service serves a sealed secret of a kind with this seal.
    fn serves(seal: &AgentSeal) -> bool;

    /// Where the socket of sealed secret `name` is, `dir` being the agent socket's directory.
    fn socket_path(dir: &Path, name: &str) -> PathBuf;

    /// What the connections of a new socket for `e` share; the error says why it is not served.
    fn open(&self, e: &Entry) -> Result<Self::Shared, String>;

    /// Serves one connection of an allowed peer until it ends or is aborted.
    fn connection(
        shared: Arc<Self::Shared>,
        stream: UnixStream,
        uid: u32,
        pid: Option<u32>,
    ) -> impl Future<Output = ()> + Send + 'static;

    /// The socket of `shared` was closed; `revoked` when its secret left the active set (not
    /// only changed version).
    fn closed(&self, _shared: &Self::Shared, _revoked: bool) {}
}

/// Who may use one socket, and where its refusals go.
#[derive(Clone)]
pub struct Gate {
    /// The secret's name.
    pub secret: String,
    pub sandbox_uid: u32,
    pub allow_root: bool,
    pub usage: Arc<UsageQueue>,
}

impl Gate {
    fn allows(&self, uid: u32) -> bool {
        uid == self.sandbox_uid || (self.allow_root && uid == 0)
    }
}

/// One served socket.
struct Served<T> {
    version: u64,
    path: PathBuf,
    task: JoinHandle<()>,
    shared: Arc<T>,
}

/// The sockets of service `S` for the active sealed secrets it serves.
pub struct Sockets<S: Service> {
    service: S,
    /// The agent socket's directory; the sockets are below it.
    dir: PathBuf,
    sandbox_uid: u32,
    usage: Arc<UsageQueue>,
    runtime: tokio::runtime::Handle,
    served: Mutex<BTreeMap<String, Served<S::Shared>>>,
}

impl<S: Service> Sockets<S> {
    /// `dir` is the agent socket's directory; call from within the runtime.
    pub fn new(service: S, dir: &Path, sandbox_uid: u32, usage: Arc<UsageQueue>) -> Self {
        Sockets {
            service,
            dir: dir.to_owned(),
            sandbox_uid,
            usage,
            runtime: tokio::runtime::Handle::current(),
            served: Mutex::new(BTreeMap::new()),
        }
    }

    /// Follows the active set: a socket for each active sealed secret this service serves (a
    /// new one for a new version), none for the others. Nothing is served while out of touch.
    pub fn set(&self, secrets: &Secrets) {
        let wanted: Vec<&Entry> = if secrets.in_touch() {
            secrets.entries().filter(|e| served_by::<S>(e)).collect()
        } else {
            Vec::new()
        };
        let mut served = self.served.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<String> = served
            .iter()
            .filter(|(name, s)| {
                !wanted.iter().any(|e| &e.material.name == *name && e.material.version == s.version)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(s) = served.remove(&name) {
                let still_active = wanted.iter().any(|e| e.material.name == name);
                self.stop(&name, s, !still_active);
            }
        }
        for e in wanted {
            if served.contains_key(&e.material.name) {
                continue;
            }
            match self.start(e) {
                Ok(s) => {
                    served.insert(e.material.name.clone(), s);
                }
                Err(why) => tracing::error!(
                    secret = %e.material.name,
                    "the sealed secret's {} is not served: {why}",
                    S::WHAT
                ),
            }
        }
    }

    /// How many sockets are served (for tests and the benchmark).
    pub fn count(&self) -> usize {
        self.served.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn start(&self, e: &Entry) -> Result<Served<S::Shared>, String> {
        let shared = Arc::new(self.service.open(e)?);
        let path = S::socket_path(&self.dir, &e.material.name);
        let listener = self.bind(&path)?;
        let gate = Gate {
            secret: e.material.name.clone(),
            sandbox_uid: self.sandbox_uid,
            allow_root: S::ALLOW_ROOT,
            usage: self.usage.clone(),
        };
        let task = self.runtime.spawn(serve::<S>(listener, gate, shared.clone()));
        tracing::info!(secret = %e.material.name, socket = %path.display(), "serving a sealed secret's {}", S::WHAT);
        Ok(Served { version: e.material.version, path, task, shared })
    }

    fn bind(&self, path: &Path) -> Result<UnixListener, String> {
        // Every directory between the agent socket's and the socket: searchable by the sandbox
        // user, writable by the agent only.
        let mut dirs: Vec<&Path> = path
            .ancestors()
            .skip(1)
            .take_while(|d| d.starts_with(&self.dir) && *d != self.dir)
            .collect();
        dirs.reverse();
        for d in dirs {
            std::fs::create_dir_all(d)
                .and_then(|()| std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)))
                .map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("cannot remove the old socket {}: {e}", path.display()));
            }
            _ => {}
        }
        let std_listener = std::os::unix::net::UnixListener::bind(path)
            .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
        // Every uid may connect so that a foreign one gets refused and recorded (SO_PEERCRED
        // decides, as on the agent socket).
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .and_then(|()| std_listener.set_nonblocking(true))
            .map_err(|e| format!("cannot set up {}: {e}", path.display()))?;
        let _guard = self.runtime.enter();
        UnixListener::from_std(std_listener)
            .map_err(|e| format!("cannot serve {}: {e}", path.display()))
    }

    /// Closes a socket and all its connections at once.
    fn stop(&self, name: &str, s: Served<S::Shared>, revoked: bool) {
        // Aborting the accept task drops the listener and its JoinSet, which aborts every
        // connection task: their sockets close as the runtime drops them, right away.
        s.task.abort();
        let _ = std::fs::remove_file(&s.path);
        // A directory of its own (the PostgreSQL socket's) goes too; a shared one stays while
        // it holds other sockets (remove_dir fails on a non-empty directory).
        if let Some(parent) = s.path.parent().filter(|p| *p != self.dir) {
            let _ = std::fs::remove_dir(parent);
        }
        self.service.closed(&s.shared, revoked);
        tracing::info!(secret = %name, "closed the sealed secret's {}", S::WHAT);
    }
}

/// Where the agent's socket for sealed secret `name` of `kind` is, `dir` being the agent
/// socket's directory; `None` for a kind the agent does not serve itself.
pub fn socket_path(kind: &Kind, dir: &str, name: &str) -> Option<PathBuf> {
    let Sealing::Agent(seal) = &kind.sealing else { return None };
    let dir = Path::new(dir);
    Some(match seal.service {
        catalog::Service::SshAgent(_) => <crate::ssh::SshAgent as Service>::socket_path(dir, name),
        catalog::Service::Relay { protocol: RelayProtocol::Postgres } => {
            <postgres::Postgres as Service>::socket_path(dir, name)
        }
        catalog::Service::Relay { protocol: RelayProtocol::Mysql } => {
            <mysql::Mysql as Service>::socket_path(dir, name)
        }
    })
}

/// Whether service `S` serves this entry (a sealed secret of a kind whose seal it serves).
fn served_by<S: Service>(e: &Entry) -> bool {
    e.material.exposure == Exposure::Sealed
        && catalog::kind(&e.material.kind)
            .is_some_and(|k| matches!(&k.sealing, Sealing::Agent(seal) if S::serves(seal)))
}

/// Accepts connections until aborted; the connections live in the JoinSet (aborted with it).
pub async fn serve<S: Service>(listener: UnixListener, gate: Gate, shared: Arc<S::Shared>) {
    let mut conns: JoinSet<()> = JoinSet::new();
    let mut refusal_recorded: Option<Instant> = None;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(cred) = stream.peer_cred() else { continue };
                let (uid, pid) = (cred.uid(), cred.pid().and_then(|p| u32::try_from(p).ok()));
                if !gate.allows(uid) {
                    // Closed before anything is read.
                    drop(stream);
                    if refusal_recorded.is_none_or(|at| at.elapsed() >= REFUSAL_RECORD_INTERVAL) {
                        refusal_recorded = Some(Instant::now());
                        let peer = Peer::identify(uid, pid);
                        tracing::warn!(uid, pid, secret = %gate.secret, "{}: refused a uid that is not the sandbox user", S::WHAT);
                        let mut r = peer.denial(format!("{} of {}: uid {uid} is not the sandbox user", S::WHAT, gate.secret));
                        r.secret = Some(gate.secret.clone());
                        gate.usage.push_denial(r);
                    }
                    continue;
                }
                if conns.len() >= S::MAX_CONNECTIONS {
                    tracing::warn!(secret = %gate.secret, "{}: {} connections open; refused one", S::WHAT, S::MAX_CONNECTIONS);
                    continue;
                }
                conns.spawn(S::connection(shared.clone(), stream, uid, pid));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}
