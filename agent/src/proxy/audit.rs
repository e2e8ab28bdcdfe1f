//! Recording what the proxy does, fail closed: a substitution that cannot be recorded does not
//! happen; leak attempts and refused callers are recorded best effort (they are refused anyway).

use std::sync::Arc;

use maestro_wire::agent_api::{UsageAction, UsageReport};
use tokio::sync::OnceCell;

use super::peer::{self, Owner};
use crate::dispatch::Peer;
use crate::identity::rfc3339_now;
use crate::usage::UsageQueue;

/// One client connection: the socket's owner, and the process behind it once asked for.
pub struct ConnCtx {
    pub owner: Owner,
    peer: OnceCell<Peer>,
}

impl ConnCtx {
    pub fn new(owner: Owner) -> Self {
        ConnCtx { owner, peer: OnceCell::new() }
    }

    /// The process on the other end (looked up once per connection, off the async threads).
    pub async fn peer(&self) -> &Peer {
        self.peer
            .get_or_init(|| async {
                let owner = self.owner;
                tokio::task::spawn_blocking(move || Peer::identify(owner.uid, peer::pid_of(owner)))
                    .await
                    .unwrap_or_else(|_| Peer::identify(owner.uid, None))
            })
            .await
    }

    /// The peer if it was already looked up (for records made where nothing can wait).
    pub fn peer_now(&self) -> Peer {
        self.peer.get().cloned().unwrap_or_else(|| Peer::identify(self.owner.uid, None))
    }
}

/// A record of `peer`.
pub fn report(
    peer: &Peer,
    action: UsageAction,
    secret: Option<&str>,
    detail: String,
) -> UsageReport {
    UsageReport {
        secret: secret.map(str::to_owned),
        action,
        at: rfc3339_now(),
        pid: peer.pid,
        uid: Some(peer.uid),
        command: Some(peer.who.command.clone()),
        detail: Some(detail),
        count: None,
        last_at: None,
        exe: peer.who.exe.clone(),
        claimed_command: peer.who.comm.clone(),
        outside_exec: None,
    }
}

/// Records substitutions of `secrets` (all or none); `Err` means the request must not be sent.
pub fn substituted(
    usage: &Arc<UsageQueue>,
    peer: &Peer,
    secrets: &[&str],
    detail: &str,
) -> Result<(), String> {
    let reports = secrets
        .iter()
        .map(|s| report(peer, UsageAction::Substituted, Some(s), detail.to_owned()))
        .collect();
    usage.push_all(reports).map_err(|_| {
        "maestro proxy: refused: this use of a sealed secret cannot be recorded (the agent's \
         usage queue is full; the broker may be unreachable); try again later"
            .to_owned()
    })
}

/// Records a leak attempt (always refused, recorded best effort).
pub fn leak(usage: &Arc<UsageQueue>, peer: &Peer, secret: &str, detail: String) {
    usage.push_denial(report(peer, UsageAction::LeakAttempt, Some(secret), detail));
}
