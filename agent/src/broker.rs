//! The agent's client of the broker's agent API (mutual TLS; see `maestro_wire::agent_api`):
//! enrollment with the bundle's one-time token, certificate renewal with a fresh key, the event
//! stream, secret material and usage batches.
//!
//! Failover: a bundle may name several brokers that share one store. Every request goes to the
//! broker in use; when it does not answer (no connection, a timeout, a 5xx), the others are tried
//! in the bundle's order, starting after it, and the first that answers becomes the broker in
//! use for everything that follows (events, material, renewal, usage). Secrets are not touched
//! here: the lease (see `link`) alone decides when they go.
//!
//! Bodies that may hold values are read into zeroizing buffers with a size limit, and decoding
//! errors are reported by position only: serde's messages can quote the input.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use maestro_wire::agent_api::{
    Bundle, CertIssued, EnrollRequest, MaterialSet, RenewRequest, SecretMaterial, UsageBatch,
    UsageReport,
};
use maestro_wire::api::{ApiError, ErrorCode};
use maestro_wire::jsonline::extend_zeroizing;
use maestro_wire::limits::MAX_BODY_BYTES;
use serde::de::DeserializeOwned;
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

use crate::identity::{self, IdentityError, PendingIdentity};

/// Time allowed to connect (TCP and TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a whole request that is not the event stream.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for the event stream's response headers.
const STREAM_OPEN_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest error body read from the broker.
const MAX_ERROR_BODY: usize = 64 * 1024;

#[derive(Debug, Error)]
pub enum BrokerError {
    #[error("the bundle's broker URL {0:?} is not an https:// URL; recreate the bundle")]
    InvalidUrl(String),
    #[error(
        "the bundle names no broker URL; recreate it with `maestro sessions create --bundle-out`"
    )]
    NoUrl,
    #[error("the broker CA certificate in the bundle is not a PEM certificate: {0}")]
    BadCa(#[source] reqwest::Error),
    #[error("cannot build the TLS client: {0}")]
    BuildClient(#[source] reqwest::Error),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("cannot reach the broker to {step}: {source}; check that it runs and is reachable")]
    Transport {
        step: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("the broker did not answer in time to {step}; check that it runs and is reachable")]
    Timeout { step: &'static str },
    #[error("the broker refused to {step} (HTTP {status}): {message}")]
    Refused { step: &'static str, status: u16, code: Option<ErrorCode>, message: String },
    #[error("the request to {step} was interrupted: the agent is stopping")]
    Interrupted { step: &'static str },
    #[error("the session has ended; the broker refuses its certificate from now on")]
    SessionEnded,
    #[error("the broker's answer to {step} is larger than {max} bytes")]
    TooLarge { step: &'static str, max: usize },
    #[error(
        "the broker's answer to {step} is not what this agent expects (line {line}, column \
         {column}); use an agent and a broker of the same version"
    )]
    Decode { step: &'static str, line: usize, column: usize },
    #[error(
        "the broker issued a certificate for session {got}, not {expected}; the bundle is wrong"
    )]
    SessionMismatch { expected: String, got: String },
}

impl BrokerError {
    /// Whether trying again later can help (the broker is away or busy), as opposed to a
    /// refusal that will not change.
    pub fn is_transient(&self) -> bool {
        match self {
            BrokerError::Transport { .. } | BrokerError::Timeout { .. } => true,
            BrokerError::Refused { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// Whether another broker of the bundle may answer where this one did not: it is away, too
    /// slow, or failing inside (a 5xx). A refusal (4xx) would be the same on every broker.
    pub fn fails_over(&self) -> bool {
        match self {
            BrokerError::Transport { .. } | BrokerError::Timeout { .. } => true,
            BrokerError::Refused { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// A connection to the broker with the session's certificate. The client is swapped on renewal;
/// requests in flight (the event stream) keep the connection they started on.
pub struct Broker {
    route: Arc<Route>,
    usage: Arc<UsageInFlight>,
    ca: reqwest::Certificate,
    client: RwLock<reqwest::Client>,
    session_id: String,
    not_after: Mutex<SystemTime>,
    /// The broker's lease hint from the latest certificate.
    lease_hint: Mutex<Duration>,
}

/// Usage posts running in their own tasks, and the reports of those that failed after their
/// caller stopped waiting (teardown takes them back with [`Broker::settle_usage`]).
#[derive(Debug, Default)]
struct UsageInFlight {
    running: AtomicUsize,
    orphans: Mutex<Vec<UsageReport>>,
}

/// Counts a usage post as running until it finishes, and says so if it never does.
struct Unfinished {
    reports: usize,
    flight: Arc<UsageInFlight>,
    done: bool,
}

impl Unfinished {
    fn finish(mut self) {
        self.done = true;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        self.flight.running.fetch_sub(1, Ordering::SeqCst);
        if !self.done {
            tracing::warn!(
                reports = self.reports,
                "usage reports lost: the agent stopped before the broker answered"
            );
        }
    }
}

/// The bundle's brokers and the one in use; shared with requests that outlive their caller.
#[derive(Debug)]
struct Route {
    /// Base URLs in the bundle's order, without a trailing `/`.
    urls: Vec<String>,
    /// Index in `urls` of the broker in use.
    current: AtomicUsize,
}

impl Route {
    /// Sends a request built by `make` for a base URL to the broker in use, failing over to
    /// the next that answers (which then stays in use).
    async fn request(
        &self,
        client: &reqwest::Client,
        step: &'static str,
        open_timeout: Option<Duration>,
        make: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, BrokerError> {
        let start = self.current.load(Ordering::Relaxed);
        let (used, resp) =
            first_answer(&self.urls, start, step, open_timeout, |base| make(client, base)).await?;
        if used != start
            && self
                .current
                .compare_exchange(start, used, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                from = %self.urls.get(start).map_or("", String::as_str),
                to = %self.urls.get(used).map_or("", String::as_str),
                "the broker in use stopped answering; moved to the next broker of the bundle"
            );
        }
        Ok(resp)
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("route", &self.route)
            .field("session", &self.session_id)
            .finish()
    }
}

fn builder(ca: &reqwest::Certificate) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tls_certs_only([ca.clone()])
        .connect_timeout(CONNECT_TIMEOUT)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        // TCP keep-alive notices a dead peer on an idle stream even between heartbeats.
        .tcp_keepalive(Duration::from_secs(15))
}

fn mtls_client(
    ca: &reqwest::Certificate,
    identity: &PendingIdentity,
    cert_pem: &str,
) -> Result<reqwest::Client, BrokerError> {
    let pem = identity.with_certificate(cert_pem);
    let id = reqwest::Identity::from_pem(&pem).map_err(BrokerError::BuildClient)?;
    builder(ca).identity(id).build().map_err(BrokerError::BuildClient)
}

impl Broker {
    /// Enrolls: a fresh key, a CSR and the bundle's one-time token for a session certificate.
    /// The bundle's brokers are tried in order, starting with the first.
    pub async fn enroll(bundle: &Bundle) -> Result<Broker, BrokerError> {
        let urls = bundle.urls();
        if urls.is_empty() {
            return Err(BrokerError::NoUrl);
        }
        if let Some(bad) = urls.iter().find(|u| !u.starts_with("https://")) {
            return Err(BrokerError::InvalidUrl(bad.clone()));
        }
        let ca =
            reqwest::Certificate::from_pem(bundle.ca_pem.as_bytes()).map_err(BrokerError::BadCa)?;
        let plain = builder(&ca).build().map_err(BrokerError::BuildClient)?;
        let identity = PendingIdentity::generate()?;
        let request = EnrollRequest {
            token: bundle.enrollment_token.clone(),
            csr_pem: identity.csr_pem.clone(),
        };
        let step = "enroll";
        // The token is single use: once this request is answered it is worth nothing, so the
        // copy reqwest makes of the body need not be wiped.
        let (current, resp) = first_answer(&urls, 0, step, None, |base| {
            plain.post(format!("{base}/v1/enroll")).json(&request).timeout(REQUEST_TIMEOUT)
        })
        .await?;
        let issued: CertIssued = read_json(step, resp, MAX_ERROR_BODY * 4).await?;
        if issued.session_id != bundle.session_id {
            return Err(BrokerError::SessionMismatch {
                expected: bundle.session_id.clone(),
                got: issued.session_id,
            });
        }
        let client = mtls_client(&ca, &identity, &issued.cert_pem)?;
        let not_after = identity::parse_not_after(&issued.not_after)?;
        Ok(Broker {
            route: Arc::new(Route { urls, current: AtomicUsize::new(current) }),
            usage: Arc::default(),
            ca,
            client: RwLock::new(client),
            session_id: issued.session_id,
            not_after: Mutex::new(not_after),
            lease_hint: Mutex::new(Duration::from_secs(issued.lease_seconds)),
        })
    }

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// When the current certificate expires.
    pub fn not_after(&self) -> SystemTime {
        *self.not_after.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The broker's lease hint (the agent uses the shorter of it and `--lease`).
    pub fn lease_hint(&self) -> Duration {
        *self.lease_hint.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn client(&self) -> reqwest::Client {
        self.client.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The base URL of the broker in use.
    pub fn current_url(&self) -> &str {
        let route = &self.route;
        let i = route.current.load(Ordering::Relaxed);
        route.urls.get(i).or(route.urls.first()).map_or("", String::as_str)
    }

    /// Sends a request built by `make` for a base URL to the broker in use, failing over to
    /// the next that answers (which then stays in use). `open_timeout` bounds the wait for the
    /// response headers of a request without a whole-request timeout (the event stream).
    async fn request(
        &self,
        step: &'static str,
        open_timeout: Option<Duration>,
        make: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, BrokerError> {
        self.route.request(&self.client(), step, open_timeout, make).await
    }

    /// A new certificate for a new key, with the current certificate as credential.
    pub async fn renew(&self) -> Result<(), BrokerError> {
        let identity = PendingIdentity::generate()?;
        let step = "renew the certificate";
        let request = RenewRequest { csr_pem: identity.csr_pem.clone() };
        let resp = self
            .request(step, None, |client, base| {
                client
                    .post(format!("{base}/v1/agent/renew"))
                    .json(&request)
                    .timeout(REQUEST_TIMEOUT)
            })
            .await?;
        let issued: CertIssued = read_json(step, resp, MAX_ERROR_BODY * 4).await?;
        if issued.session_id != self.session_id {
            return Err(BrokerError::SessionMismatch {
                expected: self.session_id.clone(),
                got: issued.session_id,
            });
        }
        let client = mtls_client(&self.ca, &identity, &issued.cert_pem)?;
        let not_after = identity::parse_not_after(&issued.not_after)?;
        *self.client.write().unwrap_or_else(|e| e.into_inner()) = client;
        *self.not_after.lock().unwrap_or_else(|e| e.into_inner()) = not_after;
        *self.lease_hint.lock().unwrap_or_else(|e| e.into_inner()) =
            Duration::from_secs(issued.lease_seconds);
        Ok(())
    }

    /// Opens the event stream; the caller reads its body chunk by chunk.
    pub async fn open_events(&self) -> Result<reqwest::Response, BrokerError> {
        let step = "open the event stream";
        self.request(step, Some(STREAM_OPEN_TIMEOUT), |client, base| {
            client.get(format!("{base}/v1/agent/events"))
        })
        .await
    }

    /// Every active secret's material.
    pub async fn material_all(&self) -> Result<Vec<SecretMaterial>, BrokerError> {
        let step = "fetch the active secrets";
        let resp = self
            .request(step, None, |client, base| {
                client.get(format!("{base}/v1/agent/secrets")).timeout(REQUEST_TIMEOUT)
            })
            .await?;
        let set: MaterialSet = read_json(step, resp, MAX_BODY_BYTES).await?;
        Ok(set.secrets)
    }

    /// One secret's material; `None` when it is no longer active.
    pub async fn material(&self, name: &str) -> Result<Option<SecretMaterial>, BrokerError> {
        let step = "fetch a secret";
        // Names are checked against [A-Z][A-Z0-9_]* before they reach a URL.
        let resp = self
            .request(step, None, |client, base| {
                client.get(format!("{base}/v1/agent/secrets/{name}")).timeout(REQUEST_TIMEOUT)
            })
            .await;
        match resp {
            Err(BrokerError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
            Ok(resp) => Ok(Some(read_json(step, resp, MAX_BODY_BYTES).await?)),
        }
    }

    /// Waits (at most `within`) for usage posts whose caller was cancelled, and returns the
    /// reports of those that failed, for a last try.
    pub async fn settle_usage(&self, within: Duration) -> Vec<UsageReport> {
        let deadline = tokio::time::Instant::now() + within;
        while self.usage.running.load(Ordering::SeqCst) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        std::mem::take(&mut *self.usage.orphans.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Sends a batch of usage reports.
    ///
    /// The request runs in a task of its own: a batch already on its way is not lost when the
    /// caller is cancelled (teardown stops the posting task while a batch may be in flight);
    /// it finishes on its own within [`REQUEST_TIMEOUT`] per broker tried.
    pub async fn post_usage(&self, batch: &UsageBatch) -> Result<(), BrokerError> {
        let step = "report usage";
        let route = self.route.clone();
        let client = self.client();
        let batch = batch.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let flight = self.usage.clone();
        flight.running.fetch_add(1, Ordering::SeqCst);
        let reports = batch.reports.len();
        tokio::spawn(async move {
            // Dropped unfinished only when the runtime shuts down first: say so.
            let unfinished = Unfinished { reports, flight: flight.clone(), done: false };
            let resp = route
                .request(&client, step, None, |client, base| {
                    client
                        .post(format!("{base}/v1/agent/usage"))
                        .json(&batch)
                        .timeout(REQUEST_TIMEOUT)
                })
                .await;
            let result = match resp {
                // The answer only counts what was accepted; drain it so the connection can
                // be reused.
                Ok(resp) => {
                    read_json::<serde_json::Value>(step, resp, MAX_ERROR_BODY).await.map(drop)
                }
                Err(e) => Err(e),
            };
            // Nobody waits any more: the reports are kept for teardown's last flush.
            if let Err(Err(e)) = tx.send(result) {
                tracing::warn!(
                    reports = batch.reports.len(),
                    "usage reports kept for teardown's last flush, lost if none follows: {e}"
                );
                flight.orphans.lock().unwrap_or_else(|e| e.into_inner()).extend(batch.reports);
            }
            unfinished.finish();
        });
        rx.await.unwrap_or(Err(BrokerError::Interrupted { step }))
    }
}

/// Tries `urls` from index `start` round to the one before it, and returns the first answer
/// that is not a reason to fail over (a success or a refusal), with the index that gave it.
/// When none answers, the error of the first tried is returned: the broker in use is the one
/// whose trouble matters to the caller.
async fn first_answer(
    urls: &[String],
    start: usize,
    step: &'static str,
    open_timeout: Option<Duration>,
    make: impl Fn(&str) -> reqwest::RequestBuilder,
) -> Result<(usize, reqwest::Response), BrokerError> {
    let mut first_error = None;
    for k in 0..urls.len() {
        let i = (start + k) % urls.len();
        let Some(base) = urls.get(i) else { continue };
        match send(step, make(base), open_timeout).await {
            Ok(resp) => return Ok((i, resp)),
            Err(e) if e.fails_over() => {
                if urls.len() > 1 {
                    tracing::debug!(broker = %base, "{e}");
                }
                first_error.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(first_error.unwrap_or(BrokerError::NoUrl))
}

async fn send(
    step: &'static str,
    request: reqwest::RequestBuilder,
    open_timeout: Option<Duration>,
) -> Result<reqwest::Response, BrokerError> {
    let sent = match open_timeout {
        Some(limit) => match tokio::time::timeout(limit, request.send()).await {
            Ok(sent) => sent,
            Err(_) => return Err(BrokerError::Timeout { step }),
        },
        None => request.send().await,
    };
    match sent {
        Ok(resp) => check_status(step, resp).await,
        Err(e) if e.is_timeout() => Err(BrokerError::Timeout { step }),
        Err(source) => Err(BrokerError::Transport { step, source }),
    }
}

/// Turns an error status into [`BrokerError::Refused`] (or `SessionEnded`) with the broker's
/// one-line message.
async fn check_status(
    step: &'static str,
    resp: reqwest::Response,
) -> Result<reqwest::Response, BrokerError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = read_body(step, resp, MAX_ERROR_BODY).await.unwrap_or_default();
    let api: Option<ApiError> = serde_json::from_slice(&body).ok();
    let code = api.as_ref().map(|a| a.error);
    if status.as_u16() == 403
        && matches!(code, Some(ErrorCode::SessionEnded | ErrorCode::Forbidden))
    {
        return Err(BrokerError::SessionEnded);
    }
    let message = match api {
        Some(a) => a.message,
        None => status.canonical_reason().unwrap_or("no reason given").to_owned(),
    };
    Err(BrokerError::Refused { step, status: status.as_u16(), code, message })
}

/// Reads a whole body into a zeroizing buffer, at most `max` bytes.
async fn read_body(
    step: &'static str,
    mut resp: reqwest::Response,
    max: usize,
) -> Result<Zeroizing<Vec<u8>>, BrokerError> {
    let hint = resp.content_length().map_or(16 * 1024, |n| n.min(max as u64) as usize);
    let mut buf = Zeroizing::new(Vec::with_capacity(hint));
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(buf),
            Err(e) if e.is_timeout() => return Err(BrokerError::Timeout { step }),
            Err(source) => return Err(BrokerError::Transport { step, source }),
        };
        if buf.len() + chunk.len() > max {
            return Err(BrokerError::TooLarge { step, max });
        }
        extend_zeroizing(&mut buf, &chunk);
        wipe(chunk);
    }
}

/// Zeroizes a received chunk when this is its only reference (the usual case); hyper's own
/// buffers are beyond reach, but they are in locked memory like everything else.
pub fn wipe(chunk: bytes::Bytes) {
    if let Ok(mut owned) = chunk.try_into_mut() {
        owned[..].zeroize();
    }
}

async fn read_json<T: DeserializeOwned>(
    step: &'static str,
    resp: reqwest::Response,
    max: usize,
) -> Result<T, BrokerError> {
    let body = read_body(step, resp, max).await?;
    serde_json::from_slice(&body).map_err(|e| BrokerError::Decode {
        step,
        line: e.line(),
        column: e.column(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16) -> BrokerError {
        BrokerError::Refused { step: "s", status, code: None, message: String::new() }
    }

    #[test]
    fn only_an_absent_slow_or_failing_broker_is_left_for_the_next() {
        assert!(BrokerError::Timeout { step: "s" }.fails_over());
        assert!(refused(500).fails_over());
        assert!(refused(503).fails_over());
        // A refusal would be the same on every broker of the store.
        for status in [400, 401, 403, 404, 409, 413, 429] {
            assert!(!refused(status).fails_over(), "{status}");
        }
        assert!(!BrokerError::SessionEnded.fails_over());
        assert!(!BrokerError::Interrupted { step: "s" }.fails_over());
    }

    #[tokio::test]
    async fn with_no_broker_answering_the_first_tried_error_is_returned() {
        // Two closed loopback ports: connection refused on both.
        let closed = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            drop(l);
            format!("https://127.0.0.1:{port}")
        };
        let urls = [closed(), closed()];
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let tried = Mutex::new(Vec::new());
        let result = first_answer(&urls, 1, "test", None, |base| {
            tried.lock().unwrap().push(base.to_owned());
            client.get(format!("{base}/x"))
        })
        .await;
        assert!(matches!(result, Err(BrokerError::Transport { .. })));
        // Starting at the broker in use, then round the others in order.
        assert_eq!(*tried.lock().unwrap(), [urls[1].clone(), urls[0].clone()]);
    }
}
