//! The end of a session, whatever ended it (the broker's `ended` event, SIGTERM/SIGINT, CMD
//! exiting, or a fatal error after the mount): nothing readable first, then nothing left.
//!
//! Order: every secret dropped and the filesystem emptied (values zeroized); the socket closed
//! and its file removed; the filesystem unmounted (lazily when files are still open); the
//! processes of the session ended (SIGTERM, then after the grace period `cgroup.kill` of the
//! session cgroup and SIGKILL sweeps of the agent's descendants) and checked gone (the session
//! is not reported a success while one is left); the last usage reports sent if the broker
//! still listens.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use maestro_fs::{Mount, Snapshot};
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::cgroup::SessionCgroup;
use crate::child;
use crate::listener;
use crate::state::{Publish, Store};
use crate::usage::{self, UsageQueue};

/// Time allowed for the unmount (the filesystem waits for open files, then aborts them).
const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(4);
/// Time allowed for the last usage reports, tried again while the broker is away or busy: the
/// uses already happened, so their records are worth waiting for (the broker takes them for a
/// minute after the session ended); past this the loss is logged with its count.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between two tries of the last flush.
const FLUSH_RETRY: Duration = Duration::from_millis(250);
/// Time allowed for usage batches already on their way when teardown starts (waited for only
/// while one is).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// The mount, shared between the store (which publishes to it) and teardown (which takes it).
#[derive(Default)]
pub struct MountSlot(Mutex<Option<Mount>>);

impl MountSlot {
    pub fn new(mount: Mount) -> Arc<Self> {
        Arc::new(MountSlot(Mutex::new(Some(mount))))
    }

    fn take(&self) -> Option<Mount> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Publish for Arc<MountSlot> {
    fn publish(&self, snapshot: Snapshot) {
        if let Some(mount) = self.0.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            mount.publish(snapshot);
        }
    }
}

/// Why the session is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The broker ended the session.
    SessionEnded(String),
    /// SIGTERM or SIGINT (and CMD, if any, did not end on its own first).
    Signal(&'static str),
    /// CMD exited with this status.
    CommandExited(i32),
    /// Something failed after the mount.
    Failed,
}

/// What teardown undoes.
pub struct Parts {
    pub store: Arc<Store>,
    pub mount: Arc<MountSlot>,
    pub socket: Option<PathBuf>,
    pub usage: Arc<UsageQueue>,
    pub broker: Option<Arc<Broker>>,
    pub grace: Duration,
    pub command: Option<u32>,
    /// The session's cgroup, killed as a whole and removed.
    pub cgroup: Option<Arc<SessionCgroup>>,
    /// Background tasks (link, watchdog, listener, ...) to stop.
    pub tasks: Vec<JoinHandle<()>>,
    /// The egress proxy for sealed secrets.
    pub proxy: Option<Arc<crate::proxy::ProxyHandle>>,
}

/// Tears everything down; returns the agent's exit status.
pub async fn teardown(parts: Parts, cause: Cause) -> i32 {
    tracing::info!(?cause, "tearing down");
    parts.store.drop_all();
    if let Some(proxy) = &parts.proxy {
        proxy.stop();
    }
    for task in &parts.tasks {
        task.abort();
    }
    if let Some(socket) = &parts.socket {
        listener::remove(socket);
    }
    if let Some(mount) = parts.mount.take() {
        let unmount = tokio::task::spawn_blocking(move || mount.unmount());
        match tokio::time::timeout(UNMOUNT_TIMEOUT, unmount).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("{e}"),
            Ok(Err(e)) => tracing::warn!("the unmount task failed: {e}"),
            Err(_) => tracing::warn!("the unmount did not finish in time; it ends with the agent"),
        }
    }
    let (command_status, left) =
        child::end_all(parts.grace, parts.command, parts.cgroup.as_deref()).await;
    // Batches the stopped poster had on their way finish (or come back for the flush below).
    if let Some(broker) = &parts.broker {
        parts.usage.put_back(broker.settle_usage(SETTLE_TIMEOUT).await);
    }
    if let Some(cg) = &parts.cgroup
        && left == 0
    {
        cg.remove();
    }
    // The broker still takes usage reports for a minute after the session ended, so the
    // last reads before teardown reach the audit trail.
    if let Some(broker) = &parts.broker
        && !parts.usage.is_empty()
    {
        last_flush(&parts.usage, broker).await;
    }
    let code = match cause {
        Cause::CommandExited(code) => code,
        Cause::Failed => 1,
        // CMD ended by our signal: report how it ended, as a container runtime would.
        Cause::Signal(_) => command_status.unwrap_or(0),
        Cause::SessionEnded(_) => 0,
    };
    if left > 0 {
        // Not a success while a process of the session lives on.
        tracing::error!(processes = left, "session over, but processes of the session are left");
        return if code == 0 { 1 } else { code };
    }
    tracing::info!(code, processes_left = 0, "session over");
    code
}

/// Sends the last usage reports, trying again until [`FLUSH_TIMEOUT`] while the broker does
/// not take them (away, failing over, or slow under load).
async fn last_flush(queue: &UsageQueue, broker: &Broker) {
    let deadline = tokio::time::Instant::now() + FLUSH_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, usage::flush(queue, broker)).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) if tokio::time::Instant::now() + FLUSH_RETRY < deadline => {
                tracing::info!("the last usage reports were not taken yet ({e}); trying again");
                tokio::time::sleep(FLUSH_RETRY).await;
                // Batches that failed after their sender stopped waiting come back for the try.
                queue.put_back(broker.settle_usage(Duration::ZERO).await);
            }
            Ok(Err(e)) => {
                tracing::warn!(reports = queue.len(), "last usage reports lost: {e}");
                return;
            }
            Err(_) => {
                tracing::warn!(
                    reports = queue.len(),
                    "last usage reports lost: the broker did not take them within {FLUSH_TIMEOUT:?}"
                );
                return;
            }
        }
    }
}
