//! Sealed database logins: a unix socket per active sealed secret of a relay kind, speaking
//! the database's own protocol, that logs in to the real server with the password for each
//! client connection and then relays bytes (see [`mysql`]).
//!
//! The sandbox gets the socket's path and the user and database names, never the password.
//! Root and the sandbox user may connect (SO_PEERCRED); every connection is recorded as usage
//! before it reaches the server (fail closed), and its end too. The sockets follow the active
//! set like the ssh-agent sockets ([`crate::served`]): deactivation, the session's end or the
//! lease running out closes a socket and every relayed connection of it at once.

pub mod mysql;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use maestro_wire::catalog::{self, AgentSeal, Exposure, RelayProtocol, Sealing, Service};
use tokio::net::UnixListener;

use crate::served::{self, Gate, Served, SocketSet};
use crate::state::{Entry, Secrets};
use crate::usage::UsageQueue;

/// A relay socket's open connections at most (a connection pool of an application included).
const MAX_CONNECTIONS: usize = 256;

/// The relay protocol of a sealed entry, if the agent relays it.
fn protocol_of(e: &Entry) -> Option<RelayProtocol> {
    if e.material.exposure != Exposure::Sealed {
        return None;
    }
    match catalog::kind(&e.material.kind)?.sealing {
        Sealing::Agent(AgentSeal { service: Service::Relay { protocol }, .. }) => Some(protocol),
        _ => None,
    }
}

/// The directory under the agent socket's directory where a protocol's sockets are.
fn subdir(protocol: RelayProtocol) -> &'static str {
    match protocol {
        RelayProtocol::Mysql => "mysql",
    }
}

/// Where the relay socket of sealed secret `name` is, `dir` being the agent socket's directory.
pub fn socket_path(dir: &str, protocol: RelayProtocol, name: &str) -> PathBuf {
    Path::new(dir).join(subdir(protocol)).join(format!("{name}.sock"))
}

/// The relay sockets of the active sealed database logins.
pub struct Relays {
    /// The agent socket's directory.
    sockets: PathBuf,
    sandbox_uid: u32,
    usage: Arc<UsageQueue>,
    runtime: tokio::runtime::Handle,
    served: SocketSet,
}

impl Relays {
    /// `sockets` is the agent socket's directory; call from within the runtime.
    pub fn new(sockets: &Path, sandbox_uid: u32, usage: Arc<UsageQueue>) -> Self {
        Relays {
            sockets: sockets.to_owned(),
            sandbox_uid,
            usage,
            runtime: tokio::runtime::Handle::current(),
            served: SocketSet::new("database relay socket"),
        }
    }

    /// Follows the active set (see [`crate::ssh::SshAgents::set`]).
    pub fn set(&self, secrets: &Secrets) {
        let wanted: Vec<&Entry> = if secrets.in_touch() {
            secrets.entries().filter(|e| protocol_of(e).is_some()).collect()
        } else {
            Vec::new()
        };
        self.served.follow(&wanted, |e| self.start(e));
    }

    fn start(&self, e: &Entry) -> Result<Served, String> {
        let protocol = protocol_of(e).ok_or("not a relayed kind")?;
        let name = &e.material.name;
        let path = socket_path(&self.sockets.to_string_lossy(), protocol, name);
        let task = match protocol {
            RelayProtocol::Mysql => {
                let target = mysql::Target::from_fields(name, &e.material.fields)?;
                let listener = self.bind(protocol, &path)?;
                let shared = Arc::new(mysql::Shared {
                    target,
                    usage: self.usage.clone(),
                    served: AtomicU64::new(0),
                });
                let gate = self.gate("mysql relay socket", name);
                self.runtime.spawn(served::accept(listener, gate, move |stream, uid, pid| {
                    mysql::serve(stream, uid, pid, shared.clone())
                }))
            }
        };
        Ok(Served { version: e.material.version, path, task, on_stop: None })
    }

    fn bind(&self, protocol: RelayProtocol, path: &Path) -> Result<UnixListener, String> {
        served::bind(&self.sockets.join(subdir(protocol)), path, &self.runtime)
    }

    fn gate(&self, label: &'static str, secret: &str) -> Gate {
        Gate {
            label,
            secret: secret.to_owned(),
            sandbox_uid: self.sandbox_uid,
            root_too: true,
            max_connections: MAX_CONNECTIONS,
            usage: self.usage.clone(),
        }
    }
}
