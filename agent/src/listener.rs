//! The agent's unix socket: bound once the secrets are ready, mode 0666 so that a refused user
//! gets a clear answer rather than EACCES, caller checked with SO_PEERCRED, one request line in
//! (size- and time-limited) and one response line out per connection.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use maestro_wire::limits::MAX_SOCK_REQUEST_BYTES;
use maestro_wire::sock::SockErrorCode;
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::dispatch::{self, Ctx, Peer};
use crate::jsonline;
use crate::usage::clean_command;

/// Time a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONCURRENT: usize = 64;

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

/// Accepts connections until the task is dropped.
pub async fn serve(listener: UnixListener, ctx: Arc<Ctx>) {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        match listener.accept().await {
            Ok((stream, _)) => {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, &ctx).await {
                        tracing::debug!("socket client: {e}");
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                // EMFILE and the like: pause rather than spin.
                tracing::warn!("cannot accept a socket connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn command_of(pid: Option<i32>) -> Option<String> {
    let pid = pid.filter(|p| *p > 0)?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(clean_command(&comm))
}

async fn handle(mut stream: UnixStream, ctx: &Ctx) -> io::Result<()> {
    let cred = stream.peer_cred()?;
    let peer = Peer {
        uid: cred.uid(),
        pid: cred.pid().and_then(|p| u32::try_from(p).ok()),
        command: command_of(cred.pid()),
    };
    let response = match read_request(&mut stream).await {
        Ok(line) => dispatch::dispatch(ctx, &peer, &line),
        Err(RequestError::TooLong) if dispatch::allowed(ctx, peer.uid) => dispatch::error(
            SockErrorCode::BadRequest,
            format!("the request is longer than {MAX_SOCK_REQUEST_BYTES} bytes"),
        ),
        Err(RequestError::TooLong) => dispatch::refuse(ctx, &peer),
        Err(RequestError::Io(e)) => return Err(e),
    };
    let bytes = match jsonline::to_line(&response) {
        Ok(b) => b,
        Err(_) => jsonline::to_line(&dispatch::error(
            SockErrorCode::Internal,
            "the agent could not encode its answer; see its log",
        ))
        .map_err(io::Error::other)?,
    };
    drop(response);
    stream.write_all(&bytes).await?;
    stream.shutdown().await
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
        Err(_) => {
            Err(RequestError::Io(io::Error::new(io::ErrorKind::TimedOut, "no request within 5 s")))
        }
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
