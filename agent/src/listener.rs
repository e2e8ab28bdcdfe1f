//! The agent's unix socket: bound once the secrets are ready, mode 0666 so that a refused user
//! gets a clear answer rather than EACCES, caller checked with SO_PEERCRED right after accept
//! (a foreign uid is answered and closed before anything is read, and recorded once a second
//! per uid), connections capped per uid (a new one evicts the uid's oldest idle one), one
//! request line in (size- and time-limited) and one response line out per connection.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use maestro_wire::jsonline;
use maestro_wire::limits::MAX_SOCK_REQUEST_BYTES;
use maestro_wire::sock::{Response, SockErrorCode};
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;

use crate::dispatch::{self, Ctx, Peer};

/// Time a client has to send its request (and to take its answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Error)]
pub enum ListenerError {
    #[error("cannot create the socket directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0} exists and is not a socket; remove it or choose another --socket")]
    NotASocket(PathBuf),
    #[error("another agent is serving {0}; stop it or choose another --socket")]
    AlreadyServing(PathBuf),
    #[error("cannot remove the stale socket {path}: {source}")]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot set the mode of {path}: {source}")]
    Chmod {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Creates the parent directory (0755) if needed, replaces a stale socket file, binds, and opens
/// the socket to every uid (the uid check is the agent's, with a clear answer).
pub fn bind(path: &Path) -> Result<UnixListener, ListenerError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|source| ListenerError::CreateDir { path: dir.to_owned(), source })?;
        // The umask may have narrowed the mode; the sandbox user must reach the socket.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|source| ListenerError::CreateDir { path: dir.to_owned(), source })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ListenerError::AlreadyServing(path.to_owned()));
            }
            std::fs::remove_file(path)
                .map_err(|source| ListenerError::RemoveStale { path: path.to_owned(), source })?;
            tracing::info!(socket = %path.display(), "replaced a stale socket file");
        }
        Ok(_) => return Err(ListenerError::NotASocket(path.to_owned())),
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)
        .map_err(|source| ListenerError::Bind { path: path.to_owned(), source })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|source| ListenerError::Chmod { path: path.to_owned(), source })?;
    Ok(listener)
}

/// Removes the socket file if it is still a socket (teardown).
pub fn remove(path: &Path) {
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_socket()
        && let Err(e) = std::fs::remove_file(path)
    {
        tracing::warn!(socket = %path.display(), "cannot remove the socket: {e}");
    }
}

/// Connections of one uid (root, the sandbox user) served at once.
pub const MAX_CONNECTIONS_PER_UID: usize = 32;
/// Refused connections of a foreign uid are recorded at most once per this interval per uid
/// (as one denial record, and one log line with how many there were).
const FOREIGN_RECORD_INTERVAL: Duration = Duration::from_secs(1);
/// Foreign uids remembered for that rate limit at most (forgotten all at once beyond).
const FOREIGN_UIDS_TRACKED: usize = 1024;

/// The connections of each served uid, oldest first, with a way to end those that have not
/// sent their request yet.
#[derive(Default)]
struct Slots {
    by_uid: Mutex<HashMap<u32, UidConnections>>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct UidConnections {
    /// Every connection of the uid being served (waiting for its request or answered).
    total: usize,
    /// Those still waiting for their request, oldest first, with their eviction signal.
    waiting: VecDeque<(u64, Arc<Notify>)>,
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, UidConnections>> {
        self.by_uid.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for a new connection of `uid`. At the cap, the uid's oldest connection
    /// that has not sent its request yet is told to close; when every connection of the uid is
    /// being answered, there is no slot (`None`).
    fn enter(&self, uid: u32) -> Option<(u64, Arc<Notify>)> {
        let mut map = self.lock();
        let conns = map.entry(uid).or_default();
        if conns.total >= MAX_CONNECTIONS_PER_UID {
            let (_, oldest) = conns.waiting.pop_front()?;
            oldest.notify_one();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evict = Arc::new(Notify::new());
        conns.total += 1;
        conns.waiting.push_back((id, evict.clone()));
        Some((id, evict))
    }

    /// The connection sent its request: it can no longer be evicted.
    fn started(&self, uid: u32, id: u64) {
        if let Some(conns) = self.lock().get_mut(&uid) {
            conns.waiting.retain(|(i, _)| *i != id);
        }
    }

    fn leave(&self, uid: u32, id: u64) {
        let mut map = self.lock();
        if let Some(conns) = map.get_mut(&uid) {
            conns.waiting.retain(|(i, _)| *i != id);
            conns.total = conns.total.saturating_sub(1);
            if conns.total == 0 {
                map.remove(&uid);
            }
        }
    }
}

/// When each foreign uid was last recorded, and how many of its connections were refused
/// since.
#[derive(Default)]
struct ForeignLog {
    seen: HashMap<u32, (Instant, u64)>,
}

impl ForeignLog {
    /// Counts a refused connection; returns how many to record now (the count since the last
    /// record), or `None` while the uid's interval has not passed.
    fn refused(&mut self, uid: u32) -> Option<u64> {
        if self.seen.len() >= FOREIGN_UIDS_TRACKED && !self.seen.contains_key(&uid) {
            self.seen.clear();
        }
        let now = Instant::now();
        match self.seen.get_mut(&uid) {
            Some((at, n)) if now.duration_since(*at) < FOREIGN_RECORD_INTERVAL => {
                *n += 1;
                None
            }
            Some((at, n)) => {
                let count = *n + 1;
                *at = now;
                *n = 0;
                Some(count)
            }
            None => {
                self.seen.insert(uid, (now, 0));
                Some(1)
            }
        }
    }
}

/// Accepts connections until the task is dropped. The caller's uid comes from SO_PEERCRED
/// right after accept, before anything is read: a foreign uid gets its refusal at once (one
/// non-blocking write) and is closed, holding nothing; root and the sandbox user get at most
/// [`MAX_CONNECTIONS_PER_UID`] connections each, and [`REQUEST_TIMEOUT`] to send a request.
pub async fn serve(listener: UnixListener, ctx: Arc<Ctx>) {
    let slots = Arc::new(Slots::default());
    let mut foreign = ForeignLog::default();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and the like: pause rather than spin.
                tracing::warn!("cannot accept a socket connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(cred) = stream.peer_cred() else { continue };
        let (uid, pid) = (cred.uid(), cred.pid().and_then(|p| u32::try_from(p).ok()));
        if !dispatch::allowed(&ctx, uid) {
            refuse_foreign(&stream, &ctx, uid, pid, &mut foreign);
            continue;
        }
        let Some((id, evict)) = slots.enter(uid) else {
            tracing::warn!(
                uid,
                "connection refused: uid {uid} has {MAX_CONNECTIONS_PER_UID} requests being answered"
            );
            answer_now(
                &stream,
                &dispatch::error(
                    SockErrorCode::Unavailable,
                    format!(
                        "uid {uid} has {MAX_CONNECTIONS_PER_UID} connections to the agent being \
                         answered; try again in a moment"
                    ),
                ),
            );
            continue;
        };
        let ctx = ctx.clone();
        let slots = slots.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &ctx, uid, pid, evict, &slots, id).await {
                tracing::debug!("socket client: {e}");
            }
            slots.leave(uid, id);
        });
    }
}

/// Refuses a foreign uid at once: the refusal is written without waiting (it fits in the
/// socket's buffer; a client that does not read loses it), and the connection is closed.
fn refuse_foreign(
    stream: &UnixStream,
    ctx: &Ctx,
    uid: u32,
    pid: Option<u32>,
    foreign: &mut ForeignLog,
) {
    answer_now(stream, &dispatch::refusal(ctx, uid));
    if let Some(count) = foreign.refused(uid) {
        let peer = Peer::identify(uid, pid);
        tracing::warn!(
            uid,
            pid,
            command = %peer.who.command,
            connections = count,
            "agent socket: refused connections of a uid that is neither root nor the sandbox user"
        );
        let mut report = peer.denial(format!("agent socket: uid {uid} is not the sandbox user"));
        report.count = (count > 1).then_some(count);
        ctx.usage.push_denial(report);
    }
}

/// Writes a short answer without waiting.
fn answer_now(stream: &UnixStream, response: &maestro_wire::sock::Response) {
    if let Ok(bytes) = jsonline::to_line(response) {
        let _ = stream.try_write(&bytes);
    }
}

async fn handle(
    mut stream: UnixStream,
    ctx: &Ctx,
    uid: u32,
    pid: Option<u32>,
    evict: Arc<Notify>,
    slots: &Slots,
    id: u64,
) -> io::Result<()> {
    let read = tokio::select! {
        read = read_request(&mut stream) => read,
        () = evict.notified() => {
            return Err(io::Error::other(format!(
                "closed an idle connection of uid {uid}: a newer one needed its slot"
            )));
        }
    };
    slots.started(uid, id);
    let peer = Peer::identify(uid, pid);
    let response = match read {
        Ok(line) => dispatch::dispatch(ctx, &peer, &line),
        Err(RequestError::TooLong) if dispatch::allowed(ctx, peer.uid) => dispatch::error(
            SockErrorCode::BadRequest,
            format!("the request is longer than {MAX_SOCK_REQUEST_BYTES} bytes"),
        ),
        Err(RequestError::TooLong) => dispatch::refuse(ctx, &peer),
        Err(RequestError::Io(e)) => return Err(e),
    };
    if matches!(response, Response::ScanReady { .. }) {
        return crate::scan::serve(stream, ctx.store.clone(), ctx.usage.clone(), peer).await;
    }
    let bytes = match jsonline::to_line(&response) {
        Ok(b) => b,
        Err(_) => jsonline::to_line(&dispatch::error(
            SockErrorCode::Internal,
            "the agent could not encode its answer; see its log",
        ))
        .map_err(io::Error::other)?,
    };
    drop(response);
    // A client that does not read its answer does not keep the slot.
    let write = async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, write).await.map_err(|_| {
        io::Error::new(io::ErrorKind::TimedOut, "the client did not take its answer")
    })?
}

enum RequestError {
    TooLong,
    Io(io::Error),
}

async fn read_request(stream: &mut UnixStream) -> Result<Vec<u8>, RequestError> {
    let mut line = Vec::with_capacity(512);
    let limit = MAX_SOCK_REQUEST_BYTES as u64 + 1;
    let mut reader = BufReader::new(stream).take(limit);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
    match read {
        Err(_) => Err(RequestError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no request within {} s", REQUEST_TIMEOUT.as_secs()),
        ))),
        Ok(Err(e)) => Err(RequestError::Io(e)),
        Ok(Ok(_)) if line.last() == Some(&b'\n') => {
            line.pop();
            Ok(line)
        }
        Ok(Ok(_)) if line.len() as u64 >= limit => Err(RequestError::TooLong),
        // EOF without a newline: take what came as the request.
        Ok(Ok(_)) => Ok(line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_at_its_cap_evicts_its_oldest_idle_connection() {
        let slots = Slots::default();
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS_PER_UID {
            held.push(slots.enter(1000).unwrap());
        }
        // The first one sent its request: it is answered, not evictable.
        slots.started(1000, held[0].0);
        let newest = slots.enter(1000).unwrap();
        // The oldest idle one (the second) was told to close.
        let told = Arc::clone(&held[1].1);
        assert!(
            tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(
                async {
                    tokio::time::timeout(Duration::from_secs(1), told.notified()).await.is_ok()
                }
            )
        );
        // Other uids have their own slots.
        assert!(slots.enter(0).is_some());
        for (id, _) in held.iter().chain([&newest]) {
            slots.leave(1000, *id);
        }
        assert!(!slots.lock().contains_key(&1000));
    }

    #[test]
    fn a_uid_whose_connections_are_all_answered_gets_no_slot() {
        let slots = Slots::default();
        for _ in 0..MAX_CONNECTIONS_PER_UID {
            let (id, _) = slots.enter(1000).unwrap();
            slots.started(1000, id);
        }
        assert!(slots.enter(1000).is_none());
    }

    #[test]
    fn foreign_uids_are_recorded_once_per_interval_with_a_count() {
        let mut log = ForeignLog::default();
        assert_eq!(log.refused(1001), Some(1));
        for _ in 0..399 {
            assert_eq!(log.refused(1001), None);
        }
        assert_eq!(log.refused(1002), Some(1));
        log.seen.get_mut(&1001).unwrap().0 -= FOREIGN_RECORD_INTERVAL;
        assert_eq!(log.refused(1001), Some(400));
    }
}
