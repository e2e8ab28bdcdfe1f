//! Limits on connections, below HTTP: a cap on open connections, and an idle timeout.
//!
//! * [`LimitAcceptor`] takes a permit of a semaphore for every accepted TCP connection and
//!   holds it as long as the connection lives; when none is left, the connection is closed at
//!   once (before its TLS handshake), so that idle or half-open connections cannot pile up
//!   until the broker runs out of file descriptors or memory.
//! * [`IdleStream`] closes a connection on which nothing was read and nothing written for the
//!   idle timeout. This is what catches a client that stops in the middle of a request line,
//!   negotiates HTTP/2 and never sends the preface, or stalls an upload: hyper's own timeouts
//!   do not cover each of those. An agent's event stream writes a heartbeat every few seconds,
//!   so it is never idle; the broker keeps the idle timeout above three heartbeats.

use std::future::{Future, Ready, ready};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tracing::warn;

/// Accepts a TCP connection only while fewer than the cap are open; sets `TCP_NODELAY` and
/// wraps the stream in an [`IdleStream`].
#[derive(Clone, Debug)]
pub struct LimitAcceptor {
    permits: Arc<Semaphore>,
    idle: Duration,
    refused: Arc<AtomicU64>,
}

impl LimitAcceptor {
    /// At most `max_connections` open at once; each closed after `idle` without traffic.
    pub fn new(max_connections: usize, idle: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_connections)),
            idle,
            refused: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl<S> Accept<TcpStream, S> for LimitAcceptor {
    type Stream = IdleStream;
    type Service = S;
    type Future = Ready<io::Result<(IdleStream, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            // Logged for the first refusal and then every 1000th, not for each: a flood of
            // connections must not become a flood of log lines.
            let refused = self.refused.fetch_add(1, Ordering::Relaxed);
            if refused.is_multiple_of(1000) {
                warn!(
                    refused = refused + 1,
                    "refused a connection: the broker holds its maximum of open connections (--max-connections)"
                );
            }
            return ready(Err(io::Error::other("too many open connections")));
        };
        // Events are small writes on a long-lived stream: without TCP_NODELAY, one sent
        // right after another waits ~40 ms for the peer's delayed ACK (Nagle).
        if let Err(e) = stream.set_nodelay(true) {
            return ready(Err(e));
        }
        ready(Ok((IdleStream::new(stream, permit, self.idle), service)))
    }
}

/// A TCP stream that fails (and so closes) once nothing moved either way for its idle time,
/// and holds its connection permit until dropped.
#[derive(Debug)]
pub struct IdleStream {
    inner: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl IdleStream {
    fn new(inner: TcpStream, permit: OwnedSemaphorePermit, idle: Duration) -> Self {
        Self { inner, _permit: permit, idle, deadline: Box::pin(tokio::time::sleep(idle)) }
    }

    fn touch(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }

    /// `Ready(Err)` once the deadline passed; otherwise registers the waker.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }

    /// What a read or write that moved `moved` bytes (or is pending) means for the deadline:
    /// progress resets it; waiting past it fails the call, which closes the connection. A peer
    /// that stops reading is as idle as one that stops writing.
    fn settle<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
        moved: impl FnOnce(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(Ok(v)) => {
                if moved(&v) {
                    self.touch();
                }
                Poll::Ready(Ok(v))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the connection was idle too long")
}

impl AsyncRead for IdleStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let after = buf.filled().len();
        self.settle(cx, poll, |_| after > before)
    }
}

impl AsyncWrite for IdleStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.settle(cx, poll, |n| *n > 0)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.settle(cx, poll, |n| *n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
