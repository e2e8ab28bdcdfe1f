//! Sealed SSH keys: an ssh-agent socket per active sealed `ssh` secret.
//!
//! The sandbox gets `SSH_AUTH_SOCK` (`<agent socket's directory>/ssh/NAME.sock`) and never the
//! key: the agent holds it decrypted in its own (locked) memory and signs for the sandbox user
//! only (SO_PEERCRED on every connection). Every signature is recorded as usage (pid, uid,
//! command; detail `ssh signature for HOST`) before it is given, fail closed. With the key's
//! `hosts` set, a signature is given only inside an SSH session the client bound to a server
//! with OpenSSH's `session-bind@openssh.com` (the server's host key, checked by its signature
//! of the session id) whose host key the key's `known_hosts` names as one of `hosts`, and only
//! for data of that very session (see [`conn`]).
//!
//! The set of sockets follows the active set (the store's watcher, with its lock held): a
//! deactivation, the session's end or the lease running out closes the socket and every open
//! connection of it at once (their tasks are aborted and their sockets dropped), and ends the
//! processes that got a signature from it and still run (SIGTERM, the pid checked against its
//! start time and uid), so an SSH session opened with the key ends too.

mod conn;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use maestro_wire::catalog::ssh::load_key;
use maestro_wire::catalog::{self, AgentSeal, Exposure, Sealing, Service};
use ssh_key::PrivateKey;
use tokio::net::UnixListener;

use crate::served::{self, Gate, Served, SocketSet};
use crate::state::{Entry, Secrets};
use crate::usage::UsageQueue;

/// The sockets' directory under the agent socket's directory.
const SUBDIR: &str = "ssh";
/// Open connections of one socket at most (ssh opens one per session, briefly).
const MAX_CONNECTIONS: usize = 64;
/// Processes remembered per key for ending them at deactivation.
const MAX_SIGNERS: usize = 1024;

/// Where the ssh-agent socket of sealed secret `name` is, `dir` being the agent socket's
/// directory.
pub fn socket_path(dir: &str, name: &str) -> PathBuf {
    Path::new(dir).join(SUBDIR).join(format!("{name}.sock"))
}

/// A sealed key as the agent holds it.
pub(crate) struct Key {
    pub name: String,
    pub private: PrivateKey,
    /// The `hosts` patterns, when the key is limited to hosts.
    pub hosts: Option<String>,
    /// The `known_hosts` text (empty when not set): which host key is which server.
    pub known_hosts: String,
}

/// A process that got a signature: its pid and start time (clock ticks since boot).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Signer {
    pid: u32,
    start: u64,
}

/// What one socket's connections share.
pub(crate) struct Shared {
    pub key: Key,
    pub sandbox_uid: u32,
    pub usage: Arc<UsageQueue>,
    signers: Mutex<Vec<Signer>>,
}

impl Shared {
    /// Remembers a process that got a signature (to end it when the key goes).
    pub fn signed_for(&self, pid: Option<u32>) {
        let Some(signer) = pid.and_then(|pid| start_time(pid).map(|start| Signer { pid, start }))
        else {
            return;
        };
        let mut s = self.signers.lock().unwrap_or_else(|e| e.into_inner());
        if !s.contains(&signer) {
            if s.len() >= MAX_SIGNERS {
                s.remove(0);
            }
            s.push(signer);
        }
    }
}

/// The ssh-agent sockets of the active sealed `ssh` secrets.
pub struct SshAgents {
    /// The agent socket's directory; the sockets are in its `ssh` subdirectory.
    sockets: PathBuf,
    dir: PathBuf,
    sandbox_uid: u32,
    usage: Arc<UsageQueue>,
    runtime: tokio::runtime::Handle,
    served: SocketSet,
}

impl SshAgents {
    /// `sockets` is the agent socket's directory; call from within the runtime.
    pub fn new(sockets: &Path, sandbox_uid: u32, usage: Arc<UsageQueue>) -> Self {
        SshAgents {
            sockets: sockets.to_owned(),
            dir: sockets.join(SUBDIR),
            sandbox_uid,
            usage,
            runtime: tokio::runtime::Handle::current(),
            served: SocketSet::new("ssh-agent socket"),
        }
    }

    /// Follows the active set: a socket for each active sealed key (a new one for a new
    /// version), none for the others. Nothing is served while out of touch.
    pub fn set(&self, secrets: &Secrets) {
        let wanted: Vec<&Entry> = if secrets.in_touch() {
            secrets.entries().filter(|e| served_here(e)).collect()
        } else {
            Vec::new()
        };
        self.served.follow(&wanted, |e| self.start(e));
    }

    fn start(&self, e: &Entry) -> Result<Served, String> {
        let kind = catalog::kind(&e.material.kind).ok_or("unknown kind")?;
        let Sealing::Agent(AgentSeal { service: Service::SshAgent(seal), .. }) = &kind.sealing
        else {
            return Err("not an ssh-agent kind".into());
        };
        let field = |f: &str| e.material.fields.get(f).map(|v| v.expose());
        let private = load_key(field(seal.key).unwrap_or(""), field(seal.passphrase))
            .map_err(|p| format!("its {} {p}", seal.key))?;
        if !catalog::ssh::agent_can_sign(&private) {
            return Err(format!("a {} key is not signed with by the agent", private.algorithm()));
        }
        let hosts = field(seal.hosts).map(str::to_owned);
        let known_hosts = field(seal.known_hosts).unwrap_or("").to_owned();
        let path = socket_path(&self.sockets.to_string_lossy(), &e.material.name);
        let listener = served::bind(&self.dir, &path, &self.runtime)?;
        let shared = Arc::new(Shared {
            key: Key { name: e.material.name.clone(), private, hosts, known_hosts },
            sandbox_uid: self.sandbox_uid,
            usage: self.usage.clone(),
            signers: Mutex::new(Vec::new()),
        });
        let task = self.runtime.spawn(serve(listener, shared.clone()));
        let sandbox_uid = self.sandbox_uid;
        let on_stop = move |revoke: bool| {
            if revoke {
                let signers =
                    std::mem::take(&mut *shared.signers.lock().unwrap_or_else(|e| e.into_inner()));
                for signer in signers {
                    end_signer(signer, sandbox_uid, &shared.key.name);
                }
            }
        };
        Ok(Served { version: e.material.version, path, task, on_stop: Some(Box::new(on_stop)) })
    }
}

/// Whether the agent serves this entry itself (a sealed secret of an agent kind).
fn served_here(e: &Entry) -> bool {
    e.material.exposure == Exposure::Sealed
        && catalog::kind(&e.material.kind).is_some_and(|k| {
            matches!(k.sealing, Sealing::Agent(AgentSeal { service: Service::SshAgent(_), .. }))
        })
}

/// A process's start time (field 22 of /proc/PID/stat), to tell it from a later one of the same
/// pid.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command (field 2) is in parentheses and may hold spaces: count after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Sends SIGTERM to a signer that is still the same process of the sandbox user.
fn end_signer(signer: Signer, sandbox_uid: u32, secret: &str) {
    let same = start_time(signer.pid) == Some(signer.start)
        && std::fs::metadata(format!("/proc/{}", signer.pid)).is_ok_and(|m| m.uid() == sandbox_uid);
    if !same {
        return;
    }
    let Ok(pid) = i32::try_from(signer.pid) else { return };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM)
    {
        Ok(()) => tracing::info!(secret, pid, "ended a process that signed with a revoked ssh key"),
        Err(e) => tracing::warn!(
            secret,
            pid,
            "cannot end a process that signed with a revoked ssh key: {e}"
        ),
    }
}

/// Accepts connections of the sandbox user until aborted (see [`served::accept`]).
async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    let gate = Gate {
        label: "ssh-agent socket",
        secret: shared.key.name.clone(),
        sandbox_uid: shared.sandbox_uid,
        root_too: false,
        max_connections: MAX_CONNECTIONS,
        usage: shared.usage.clone(),
    };
    served::accept(listener, gate, |stream, uid, pid| {
        conn::serve(stream, uid, pid, shared.clone())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;
    use tokio::task::JoinHandle;

    /// A socket served for `sandbox_uid`, in a temporary directory.
    fn served(sandbox_uid: u32) -> (tempfile::TempDir, PathBuf, Arc<Shared>, JoinHandle<()>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let key = PrivateKey::random(&mut ssh_key::rand_core::OsRng, ssh_key::Algorithm::Ed25519)
            .unwrap();
        let shared = Arc::new(Shared {
            key: Key { name: "K".into(), private: key, hosts: None, known_hosts: String::new() },
            sandbox_uid,
            usage: UsageQueue::new(64),
            signers: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(serve(listener, shared.clone()));
        (dir, path, shared, task)
    }

    /// Lists identities on `c`: whether an answer came (11 = request identities, 12 = answer).
    async fn answered(c: &mut UnixStream) -> bool {
        if c.write_all(&[0, 0, 0, 1, 11]).await.is_err() {
            return false;
        }
        let mut len = [0u8; 4];
        let read = tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut len)).await;
        if !matches!(read, Ok(Ok(_))) {
            return false;
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        c.read_exact(&mut body).await.is_ok() && body.first() == Some(&12)
    }

    async fn closed(c: &mut UnixStream) -> bool {
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    #[tokio::test]
    async fn a_foreign_uid_is_closed_unanswered_and_recorded() {
        let (_dir, path, shared, _task) = served(me().wrapping_add(4242));
        let mut c = UnixStream::connect(&path).await.unwrap();
        assert!(!answered(&mut c).await);
        let records = shared.usage.take(10);
        assert_eq!(records.len(), 1, "{records:?}");
        assert!(records[0].detail.as_deref().unwrap_or("").contains("is not the sandbox user"));
        assert_eq!(records[0].secret.as_deref(), Some("K"));
    }

    #[tokio::test]
    async fn connections_are_capped_and_aborting_the_socket_closes_every_one_at_once() {
        let (_dir, path, _shared, task) = served(me());
        let mut open = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut c = UnixStream::connect(&path).await.unwrap();
            assert!(answered(&mut c).await);
            open.push(c);
        }
        // One too many: closed at once.
        let mut extra = UnixStream::connect(&path).await.unwrap();
        assert!(closed(&mut extra).await);
        // One ends: its slot is free again.
        drop(open.pop());
        let reached = async {
            loop {
                let mut c = UnixStream::connect(&path).await.unwrap();
                if answered(&mut c).await {
                    return c;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        open.push(tokio::time::timeout(Duration::from_secs(5), reached).await.unwrap());
        // Deactivation: the task aborted, every connection closed.
        task.abort();
        for c in &mut open {
            assert!(closed(c).await);
        }
    }

    #[test]
    fn paths_and_start_times() {
        assert_eq!(
            socket_path("/run/maestro", "deploy-key"),
            Path::new("/run/maestro/ssh/deploy-key.sock")
        );
        let me = std::process::id();
        assert!(start_time(me).is_some());
        assert_eq!(start_time(me), start_time(me));
        assert_eq!(start_time(u32::MAX), None);
    }
}
