//! The agent's client of the broker's agent API (mutual TLS; see `maestro_wire::agent_api`):
//! enrollment with the bundle's one-time token, certificate renewal with a fresh key, the event
//! stream, secret material and usage batches.
//!
//! Bodies that may hold values are read into zeroizing buffers with a size limit, and decoding
//! errors are reported by position only: serde's messages can quote the input.

use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime};

use maestro_wire::agent_api::{
    Bundle, CertIssued, EnrollRequest, MaterialSet, RenewRequest, SecretMaterial, UsageBatch,
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
}

/// A connection to the broker with the session's certificate. The client is swapped on renewal;
/// requests in flight (the event stream) keep the connection they started on.
pub struct Broker {
    base: String,
    ca: reqwest::Certificate,
    client: RwLock<reqwest::Client>,
    session_id: String,
    not_after: Mutex<SystemTime>,
    /// The broker's lease hint from the latest certificate.
    lease_hint: Mutex<Duration>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("base", &self.base)
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
    pub async fn enroll(bundle: &Bundle) -> Result<Broker, BrokerError> {
        let base = bundle.broker_url.trim_end_matches('/').to_owned();
        if !base.starts_with("https://") {
            return Err(BrokerError::InvalidUrl(bundle.broker_url.clone()));
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
        let resp = send(
            step,
            plain.post(format!("{base}/v1/enroll")).json(&request).timeout(REQUEST_TIMEOUT),
        )
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
            base,
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

    /// A new certificate for a new key, with the current certificate as credential.
    pub async fn renew(&self) -> Result<(), BrokerError> {
        let identity = PendingIdentity::generate()?;
        let step = "renew the certificate";
        let resp = send(
            step,
            self.client()
                .post(format!("{}/v1/agent/renew", self.base))
                .json(&RenewRequest { csr_pem: identity.csr_pem.clone() })
                .timeout(REQUEST_TIMEOUT),
        )
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
        let request = self.client().get(format!("{}/v1/agent/events", self.base)).send();
        match tokio::time::timeout(STREAM_OPEN_TIMEOUT, request).await {
            Err(_) => Err(BrokerError::Timeout { step }),
            Ok(Err(source)) => Err(BrokerError::Transport { step, source }),
            Ok(Ok(resp)) => check_status(step, resp).await,
        }
    }

    /// Every active secret's material.
    pub async fn material_all(&self) -> Result<Vec<SecretMaterial>, BrokerError> {
        let step = "fetch the active secrets";
        let resp = send(
            step,
            self.client().get(format!("{}/v1/agent/secrets", self.base)).timeout(REQUEST_TIMEOUT),
        )
        .await?;
        let set: MaterialSet = read_json(step, resp, MAX_BODY_BYTES).await?;
        Ok(set.secrets)
    }

    /// One secret's material; `None` when it is no longer active.
    pub async fn material(&self, name: &str) -> Result<Option<SecretMaterial>, BrokerError> {
        let step = "fetch a secret";
        // Names are checked against [A-Z][A-Z0-9_]* before they reach a URL.
        let resp = send(
            step,
            self.client()
                .get(format!("{}/v1/agent/secrets/{name}", self.base))
                .timeout(REQUEST_TIMEOUT),
        )
        .await;
        match resp {
            Err(BrokerError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
            Ok(resp) => Ok(Some(read_json(step, resp, MAX_BODY_BYTES).await?)),
        }
    }

    /// Sends a batch of usage reports.
    pub async fn post_usage(&self, batch: &UsageBatch) -> Result<(), BrokerError> {
        let step = "report usage";
        let resp = send(
            step,
            self.client()
                .post(format!("{}/v1/agent/usage", self.base))
                .json(batch)
                .timeout(REQUEST_TIMEOUT),
        )
        .await?;
        // The answer only counts what was accepted; drain it so the connection can be reused.
        let _: serde_json::Value = read_json(step, resp, MAX_ERROR_BODY).await?;
        Ok(())
    }
}

async fn send(
    step: &'static str,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, BrokerError> {
    match request.send().await {
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
