//! Bodies: the one boxed type the proxy passes around, the streaming scanner as a body, and
//! reading a small body whole (up to a limit) without losing it when it is bigger.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

use super::replace::{Forbidden, Rules, Scanner};
use super::upstream::BoxError;

/// Every body the proxy sends or answers with.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// What a scanning body reports while the stream passes.
pub trait ScanEvents: Send + Sync {
    /// A secret is about to be replaced for the first time in this body: record it, or refuse
    /// (the body then fails before the real value leaves).
    fn substituted(&self, secret: usize) -> Result<(), String>;
    /// A placeholder going where it does not belong: the body fails.
    fn forbidden(&self, secret: usize);
}

/// The body error that stops a request mid-stream.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Stopped(pub String);

/// A body passed through a [`Scanner`].
pub struct ScanBody<R: Rules> {
    inner: ProxyBody,
    scanner: Scanner<R>,
    events: Option<std::sync::Arc<dyn ScanEvents>>,
    reported: usize,
    done: bool,
}

impl<R: Rules> ScanBody<R> {
    pub fn new(inner: ProxyBody, rules: R, events: Option<std::sync::Arc<dyn ScanEvents>>) -> Self {
        ScanBody { inner, scanner: Scanner::new(rules), events, reported: 0, done: false }
    }

    fn check(&mut self, r: Result<(), Forbidden>) -> Result<(), BoxError> {
        if let Err(Forbidden(secret)) = r {
            self.done = true;
            if let Some(ev) = &self.events {
                ev.forbidden(secret);
            }
            return Err(Box::new(Stopped(
                "a sealed placeholder in the body is going to a host it does not belong to".into(),
            )));
        }
        while self.reported < self.scanner.used.len() {
            let secret = self.scanner.used[self.reported];
            self.reported += 1;
            if let Some(ev) = &self.events
                && let Err(why) = ev.substituted(secret)
            {
                self.done = true;
                return Err(Box::new(Stopped(why)));
            }
        }
        Ok(())
    }
}

impl<R: Rules + Unpin + 'static> Body for ScanBody<R> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let mut out = BytesMut::new();
                        let r = this.scanner.feed(&data, false, &mut out);
                        this.check(r)?;
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                        }
                    }
                    Err(other) => {
                        // Trailers: what is held back goes first, then the trailers.
                        let mut out = BytesMut::new();
                        let r = this.scanner.feed(&[], true, &mut out);
                        this.check(r)?;
                        this.done = true;
                        if !out.is_empty() {
                            // Trailers after flushed data are dropped rather than reordered.
                            return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                        }
                        return Poll::Ready(Some(Ok(other)));
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    let mut out = BytesMut::new();
                    let r = this.scanner.feed(&[], true, &mut out);
                    this.check(r)?;
                    this.done = true;
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A body read as far as a limit.
pub enum Read {
    /// The whole body.
    Whole(Bytes),
    /// It was bigger: what was read, and the rest still to come.
    Partial(Bytes, ProxyBody),
}

/// Reads a body whole if it is at most `limit` bytes.
pub async fn read_up_to(mut body: ProxyBody, limit: usize) -> Result<Read, BoxError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > limit {
                return Ok(Read::Partial(buf.freeze(), body));
            }
        }
    }
    Ok(Read::Whole(buf.freeze()))
}

/// A body that first yields `head`, then the rest.
pub fn chain(head: Bytes, rest: ProxyBody) -> ProxyBody {
    let head = futures_util::stream::once(async move { Ok::<_, BoxError>(Frame::data(head)) });
    let rest = http_body_util::BodyStream::new(rest);
    use futures_util::StreamExt;
    http_body_util::StreamBody::new(head.chain(rest)).boxed_unsync()
}
