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
//! The set of sockets follows the active set ([`crate::relay::Sockets`]): a deactivation, the
//! session's end or the lease running out closes the socket and every open connection of it at
//! once, and (here) ends the processes that got a signature from it and still run (SIGTERM, the
//! pid checked against its start time and uid), so an SSH session opened with the key ends too.

mod conn;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use maestro_wire::catalog::ssh::load_key;
use maestro_wire::catalog::{self, AgentSeal, Sealing, Service as SealService};
use ssh_key::PrivateKey;
use tokio::net::UnixStream;

use crate::relay::{Service, Sockets};
use crate::state::Entry;
use crate::usage::UsageQueue;

/// The sockets' directory under the agent socket's directory.
const SUBDIR: &str = "ssh";
/// Processes remembered per key for ending them at deactivation.
const MAX_SIGNERS: usize = 1024;

/// Where the ssh-agent socket of sealed secret `name` is, `dir` being the agent socket's
/// directory.
pub fn socket_path(dir: &str, name: &str) -> PathBuf {
    <SshAgent as Service>::socket_path(Path::new(dir), name)
}

/// A sealed key as the agent holds it.
pub struct Key {
    pub name: String,
    pub private: PrivateKey,
    /// The `hosts` patterns, when the key is limited to hosts.
    pub hosts: Option<String>,
    /// The `known_hosts` text (empty when not set): which host key is which server.
    pub known_hosts: String,
}

/// A process that got a signature: its pid and start time (clock ticks since boot).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signer {
    pid: u32,
    start: u64,
}

/// What one socket's connections share.
pub struct Shared {
    pub key: Key,
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

/// The ssh-agent service: what an `ssh` socket loads and how it answers (see [`conn`]).
pub struct SshAgent {
    sandbox_uid: u32,
    usage: Arc<UsageQueue>,
}

/// The ssh-agent sockets of the active sealed `ssh` secrets.
pub type SshAgents = Sockets<SshAgent>;

impl SshAgents {
    /// The ssh-agent sockets, under `sockets` (the agent socket's directory); call from within
    /// the runtime.
    pub fn ssh(sockets: &Path, sandbox_uid: u32, usage: Arc<UsageQueue>) -> Self {
        Sockets::new(SshAgent { sandbox_uid, usage: usage.clone() }, sockets, sandbox_uid, usage)
    }
}

impl Service for SshAgent {
    type Shared = Shared;
    const WHAT: &'static str = "ssh-agent socket";
    /// ssh opens one per session, briefly.
    const MAX_CONNECTIONS: usize = 64;
    const ALLOW_ROOT: bool = false;

    fn serves(seal: &AgentSeal) -> bool {
        matches!(seal.service, SealService::SshAgent(_))
    }

    fn socket_path(dir: &Path, name: &str) -> PathBuf {
        dir.join(SUBDIR).join(format!("{name}.sock"))
    }

    fn open(&self, e: &Entry) -> Result<Shared, String> {
        let kind = catalog::kind(&e.material.kind).ok_or("unknown kind")?;
        let Sealing::Agent(AgentSeal { service: SealService::SshAgent(seal), .. }) = &kind.sealing
        else {
            return Err("not an ssh kind".into());
        };
        let field = |f: &str| e.material.fields.get(f).map(|v| v.expose());
        let private = load_key(field(seal.key).unwrap_or(""), field(seal.passphrase))
            .map_err(|p| format!("its {} {p}", seal.key))?;
        if !catalog::ssh::agent_can_sign(&private) {
            return Err(format!("a {} key is not signed with by the agent", private.algorithm()));
        }
        let hosts = field(seal.hosts).map(str::to_owned);
        let known_hosts = field(seal.known_hosts).unwrap_or("").to_owned();
        Ok(Shared {
            key: Key { name: e.material.name.clone(), private, hosts, known_hosts },
            usage: self.usage.clone(),
            signers: Mutex::new(Vec::new()),
        })
    }

    fn connection(
        shared: Arc<Shared>,
        stream: UnixStream,
        uid: u32,
        pid: Option<u32>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        conn::serve(stream, uid, pid, shared)
    }

    /// With `revoked`, ends the processes that got a signature from the key.
    fn closed(&self, shared: &Shared, revoked: bool) {
        if revoked {
            let signers =
                std::mem::take(&mut *shared.signers.lock().unwrap_or_else(|e| e.into_inner()));
            for signer in signers {
                end_signer(signer, self.sandbox_uid, &shared.key.name);
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{Gate, serve};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixListener;
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
            usage: UsageQueue::new(64),
            signers: Mutex::new(Vec::new()),
        });
        let gate = Gate {
            secret: "K".into(),
            sandbox_uid,
            allow_root: false,
            usage: shared.usage.clone(),
        };
        let task = tokio::spawn(serve::<SshAgent>(listener, gate, shared.clone()));
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
        for _ in 0..SshAgent::MAX_CONNECTIONS {
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
