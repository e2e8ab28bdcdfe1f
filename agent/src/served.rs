//! The plumbing every socket the agent serves for a sealed secret shares (the ssh-agent of a
//! sealed `ssh` key, the relay of a sealed database login): binding it, admitting connections
//! by peer credentials, and a set of sockets that follows the active set.
//!
//! A socket is bound 0666 so that every uid can connect and a foreign one is refused and
//! recorded (SO_PEERCRED decides, as on the agent socket). Its connections run in a `JoinSet`
//! owned by the accept task: aborting that task (deactivation, session end, lease run out)
//! drops the listener and aborts every connection at once, closing their sockets.

use std::collections::BTreeMap;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::dispatch::Peer;
use crate::state::Entry;
use crate::usage::UsageQueue;

/// A foreign uid's refusal is recorded at most once per this interval per socket.
const REFUSAL_RECORD_INTERVAL: Duration = Duration::from_secs(1);

/// Binds `path` in `dir` (made, mode 0755) as a socket every uid may connect to, replacing a
/// stale one. Call with the runtime's handle: the listener is registered with it.
pub(crate) fn bind(
    dir: &Path,
    path: &Path,
    runtime: &tokio::runtime::Handle,
) -> Result<UnixListener, String> {
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)))
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("cannot remove the old socket {}: {e}", path.display()));
        }
        _ => {}
    }
    let std_listener = std::os::unix::net::UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .and_then(|()| std_listener.set_nonblocking(true))
        .map_err(|e| format!("cannot set up {}: {e}", path.display()))?;
    let _guard = runtime.enter();
    UnixListener::from_std(std_listener)
        .map_err(|e| format!("cannot serve {}: {e}", path.display()))
}

/// Who may connect to a socket, how many at once, and where refusals are recorded.
pub(crate) struct Gate {
    /// What the socket is, for logs and records ("ssh-agent socket").
    pub label: &'static str,
    /// The secret it serves.
    pub secret: String,
    pub sandbox_uid: u32,
    /// Whether root may connect too (the ssh-agent serves the sandbox user only).
    pub root_too: bool,
    pub max_connections: usize,
    pub usage: Arc<UsageQueue>,
}

impl Gate {
    fn admits(&self, uid: u32) -> bool {
        uid == self.sandbox_uid || (self.root_too && uid == 0)
    }
}

/// Accepts connections until aborted, runs each admitted one as `conn(stream, uid, pid)` in a
/// `JoinSet` that is aborted with this future. A foreign uid is closed before anything is read
/// and recorded as a denial (rate-limited); a connection over the cap is closed.
pub(crate) async fn accept<F, Fut>(listener: UnixListener, gate: Gate, mut conn: F)
where
    F: FnMut(UnixStream, u32, Option<u32>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
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
                if !gate.admits(uid) {
                    drop(stream);
                    if refusal_recorded.is_none_or(|at| at.elapsed() >= REFUSAL_RECORD_INTERVAL) {
                        refusal_recorded = Some(Instant::now());
                        let peer = Peer::identify(uid, pid);
                        tracing::warn!(uid, pid, secret = %gate.secret, "{}: refused a uid that is not the sandbox user", gate.label);
                        let mut r = peer.denial(format!("{} of {}: uid {uid} is not the sandbox user", gate.label, gate.secret));
                        r.secret = Some(gate.secret.clone());
                        gate.usage.push_denial(r);
                    }
                    continue;
                }
                if conns.len() >= gate.max_connections {
                    tracing::warn!(secret = %gate.secret, "{}: {} connections open; refused one", gate.label, gate.max_connections);
                    continue;
                }
                conns.spawn(conn(stream, uid, pid));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// One served socket of a secret.
pub(crate) struct Served {
    pub version: u64,
    pub path: PathBuf,
    /// The accept task (see [`accept`]).
    pub task: JoinHandle<()>,
    /// Run once the socket is closed, `true` when the secret is no longer active (not only
    /// replaced by a new version).
    pub on_stop: Option<Box<dyn FnOnce(bool) + Send>>,
}

/// The sockets of one service, by secret name.
pub(crate) struct SocketSet {
    label: &'static str,
    served: Mutex<BTreeMap<String, Served>>,
}

impl SocketSet {
    pub fn new(label: &'static str) -> Self {
        SocketSet { label, served: Mutex::new(BTreeMap::new()) }
    }

    /// Serves exactly `wanted`: closes the sockets of secrets not in it (or of another
    /// version), starts one with `start` for each new one.
    pub fn follow(&self, wanted: &[&Entry], start: impl Fn(&Entry) -> Result<Served, String>) {
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
            match start(e) {
                Ok(s) => {
                    tracing::info!(secret = %e.material.name, socket = %s.path.display(), "serving a sealed secret's {}", self.label);
                    served.insert(e.material.name.clone(), s);
                }
                Err(why) => tracing::error!(
                    secret = %e.material.name,
                    "the sealed secret's {} is not served: {why}", self.label
                ),
            }
        }
    }

    fn stop(&self, name: &str, mut s: Served, revoke: bool) {
        // Aborting the accept task drops the listener and its JoinSet, which aborts every
        // connection task: their sockets close as the runtime drops them, right away.
        s.task.abort();
        let _ = std::fs::remove_file(&s.path);
        if let Some(f) = s.on_stop.take() {
            f(revoke);
        }
        tracing::info!(secret = %name, "closed the sealed secret's {}", self.label);
    }
}
