//! The HTTPS client of the broker's user API, and the translation of every way a call can fail
//! into one line that says what to do.
//!
//! Trust: when a CA certificate is configured it is the only root (no system roots), since the
//! broker runs its own CA. Redirects are not followed, so the bearer token never goes anywhere
//! but the configured URL. Request bodies that hold values are serialized into zeroizing buffers
//! that reqwest owns until sent and that are wiped when dropped; answers are read, bounded, into
//! zeroizing buffers too.

use std::error::Error as StdError;
use std::time::Duration;

use maestro_wire::api::{ApiError, ErrorCode};
use maestro_wire::errors;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Body, Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::config::{CaFile, Config, Origin};

/// Per-request limit, including reading the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read (a long audit trail fits).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// Longest piece of a non-Maestro answer quoted in an error.
const MAX_QUOTED_CHARS: usize = 200;

/// Why a call to the broker failed. Each message is one line and never holds a value.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    NoToken(String),
    #[error("the API token has characters that cannot go in an HTTP header; check MAESTRO_TOKEN")]
    BadToken,
    #[error(
        "{path} holds no usable PEM certificate ({reason}); set MAESTRO_CA to the broker's ca.pem"
    )]
    BadCa { path: String, reason: String },
    #[error("cannot set up the HTTPS client ({0})")]
    Build(String),
    #[error("cannot encode the request ({0})")]
    Encode(serde_json::Error),
    #[error(
        "the broker at {url} is not reachable (connection refused); start it with \
         `maestro-broker serve` or point MAESTRO_URL at it"
    )]
    Refused { url: String },
    #[error("cannot resolve the host of {url} ({detail}); check MAESTRO_URL")]
    Dns { url: String, detail: String },
    #[error("TLS with the broker at {url} failed ({detail}); {hint}")]
    Tls { url: String, detail: String, hint: String },
    #[error(
        "the broker at {url} did not answer within 30 s; check that it is running and that \
         MAESTRO_URL points at it"
    )]
    Timeout { url: String },
    #[error("cannot talk to the broker at {url} ({detail}); check MAESTRO_URL and the broker")]
    Transport { url: String, detail: String },
    #[error("{message}{hint}")]
    Api { status: u16, code: ErrorCode, message: String, hint: &'static str },
    #[error(
        "the broker at {url} answered HTTP {status} ({quote}); check that MAESTRO_URL points at a \
         Maestro broker"
    )]
    Unexpected { url: String, status: u16, quote: String },
    #[error("the broker's answer is larger than {MAX_ANSWER_BYTES} bytes; refusing to read it")]
    AnswerTooLarge,
    #[error(
        "the broker's answer is not the JSON expected ({0}); check that maestro and the broker \
         are the same version"
    )]
    BadAnswer(serde_json::Error),
}

/// A broker answer's body, wiped when dropped.
pub struct Answer(Zeroizing<Vec<u8>>);

impl Answer {
    /// The answer as the wire type the route documents.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.0).map_err(ClientError::BadAnswer)
    }

    /// The answer pretty-printed, with its newline, through its wire type `T`: that checks it
    /// and keeps the fields in the order the type documents. The text is zeroizing because an
    /// answer may hold a token (`sessions create`).
    pub fn pretty<T: DeserializeOwned + Serialize>(
        &self,
    ) -> Result<Zeroizing<String>, ClientError> {
        pretty_json(&self.parse::<T>()?).map_err(ClientError::BadAnswer)
    }
}

/// A client bound to one broker and one token.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    url_text: String,
    auth: HeaderValue,
    ca: Option<CaFile>,
}

impl Client {
    /// Builds the client; fails when no token is configured or the CA file is unusable.
    pub fn new(config: &Config) -> Result<Self, ClientError> {
        let token = config.token.as_ref().map_err(|e| ClientError::NoToken(e.clone()))?;
        let header = Zeroizing::new(format!("Bearer {}", token.expose()));
        let mut auth = HeaderValue::from_str(&header).map_err(|_| ClientError::BadToken)?;
        auth.set_sensitive(true);

        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true)
            .user_agent(concat!("maestro/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.ca {
            let bad =
                |reason: String| ClientError::BadCa { path: ca.path.display().to_string(), reason };
            let certs =
                reqwest::Certificate::from_pem_bundle(&ca.pem).map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no CERTIFICATE block".to_owned()));
            }
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().map_err(|e| ClientError::Build(one_line(&describe(&e))))?;
        Ok(Self {
            http,
            base: config.url.clone(),
            url_text: config.url_text.clone(),
            auth,
            ca: config.ca.clone(),
        })
    }

    pub async fn get(&self, path: &[&str]) -> Result<Answer, ClientError> {
        self.call(Method::GET, path, None).await
    }

    /// GET with query parameters (`?limit=...&before=...`).
    pub async fn get_query(
        &self,
        path: &[&str],
        query: &[(&str, String)],
    ) -> Result<Answer, ClientError> {
        let mut url = self.endpoint(path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        self.call_url(Method::GET, url, None).await
    }

    pub async fn delete(&self, path: &[&str]) -> Result<Answer, ClientError> {
        self.call(Method::DELETE, path, None).await
    }

    /// POST or PATCH with a JSON body.
    pub async fn send<T: Serialize>(
        &self,
        method: Method,
        path: &[&str],
        body: &T,
    ) -> Result<Answer, ClientError> {
        let mut buf = Zeroizing::new(Vec::with_capacity(4096));
        serde_json::to_writer(&mut *buf, body).map_err(ClientError::Encode)?;
        // The body owns the zeroizing buffer: it is wiped when reqwest drops it.
        let body = Body::from(bytes::Bytes::from_owner(buf));
        self.call(method, path, Some(body)).await
    }

    /// POST without a body.
    pub async fn post_empty(&self, path: &[&str]) -> Result<Answer, ClientError> {
        self.call(Method::POST, path, None).await
    }

    fn endpoint(&self, path: &[&str]) -> Url {
        let mut url = self.base.clone();
        // `Config` checked that the URL can be a base, so this always applies.
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(path);
        }
        url
    }

    async fn call(
        &self,
        method: Method,
        path: &[&str],
        body: Option<Body>,
    ) -> Result<Answer, ClientError> {
        self.call_url(method, self.endpoint(path), body).await
    }

    async fn call_url(
        &self,
        method: Method,
        url: Url,
        body: Option<Body>,
    ) -> Result<Answer, ClientError> {
        let mut request = self.http.request(method, url).header(AUTHORIZATION, self.auth.clone());
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let mut response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let capacity = response.content_length().map_or(8192, |n| n as usize).min(MAX_ANSWER_BYTES);
        let mut buf = Zeroizing::new(Vec::with_capacity(capacity));
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport_error(&e))? {
            if buf.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(ClientError::AnswerTooLarge);
            }
            buf.extend_from_slice(&chunk);
        }
        if status.is_success() {
            return Ok(Answer(buf));
        }
        Err(self.status_error(status, &buf))
    }

    fn status_error(&self, status: StatusCode, body: &[u8]) -> ClientError {
        match serde_json::from_slice::<ApiError>(body) {
            Ok(api) => ClientError::Api {
                status: status.as_u16(),
                code: api.error,
                message: one_line(&api.message),
                hint: if status == StatusCode::UNAUTHORIZED
                    && !api.message.contains("MAESTRO_TOKEN")
                {
                    " (check MAESTRO_TOKEN or MAESTRO_TOKEN_FILE)"
                } else {
                    ""
                },
            },
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let mut quote: String =
                    one_line(text.trim()).chars().take(MAX_QUOTED_CHARS).collect();
                if quote.is_empty() {
                    quote = status.canonical_reason().unwrap_or("no body").to_owned();
                }
                ClientError::Unexpected {
                    url: self.url_text.clone(),
                    status: status.as_u16(),
                    quote,
                }
            }
        }
    }

    fn transport_error(&self, err: &reqwest::Error) -> ClientError {
        let url = self.url_text.clone();
        if err.is_timeout() {
            return ClientError::Timeout { url };
        }
        match classify(err) {
            Cause::Refused => ClientError::Refused { url },
            Cause::Tls(detail) => ClientError::Tls { url, detail, hint: self.tls_hint() },
            Cause::Other if err.is_dns() => {
                ClientError::Dns { url, detail: one_line(&describe(err)) }
            }
            Cause::Other => ClientError::Transport { url, detail: one_line(&describe(err)) },
        }
    }

    fn tls_hint(&self) -> String {
        match &self.ca {
            None => "set MAESTRO_CA to the broker's CA certificate (ca.pem in its data directory)"
                .to_owned(),
            Some(ca) => {
                let from = match &ca.origin {
                    Origin::Flag => "--ca".to_owned(),
                    Origin::Env(name) => (*name).to_owned(),
                    Origin::DataDir(_) => "the data directory's ca.pem".to_owned(),
                };
                format!(
                    "check that {from} ({}) is this broker's CA certificate, or set MAESTRO_CA",
                    ca.path.display()
                )
            }
        }
    }
}

enum Cause {
    Refused,
    Tls(String),
    Other,
}

/// Finds the root cause in reqwest's error chain. `io::Error::source` skips the error it wraps,
/// so the walk steps into each `io::Error`'s inner error instead.
fn classify(err: &reqwest::Error) -> Cause {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Cause::Tls(one_line(&tls.to_string()));
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return Cause::Refused;
            }
            // TLS errors arrive as io::Error(Other, io::Error(InvalidData, rustls::Error)).
            if let Some(inner) = io.get_ref() {
                current = Some(inner);
                continue;
            }
        }
        current = e.source();
    }
    Cause::Other
}

/// The causes of an error, outermost first, without repeats (`maestro_wire::errors`); reqwest's
/// own outer message ("error sending request for url ...") only when there is nothing below it.
fn describe(err: &(dyn StdError + 'static)) -> String {
    match err.source() {
        Some(source) => errors::one_line(errors::causes(source)),
        None => err.to_string(),
    }
}

/// `value` as pretty JSON and a newline, built in one zeroizing buffer.
pub fn pretty_json<T: Serialize>(value: &T) -> Result<Zeroizing<String>, serde_json::Error> {
    let mut buf = Zeroizing::new(Vec::with_capacity(16 * 1024));
    serde_json::to_writer_pretty(&mut *buf, value)?;
    buf.push(b'\n');
    // serde_json writes UTF-8 only; the fallback is never taken but must not panic.
    Ok(Zeroizing::new(String::from_utf8(std::mem::take(&mut *buf)).unwrap_or_default()))
}

/// Control characters (newlines first) would break the one-line rule or a terminal.
pub fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_strips_controls() {
        assert_eq!(one_line("a\nb\r\x1b[31mc"), "a b  [31mc");
    }

    #[test]
    fn api_errors_show_the_message_as_is_with_a_token_hint_on_401() {
        let e = ClientError::Api {
            status: 404,
            code: ErrorCode::NotFound,
            message: "no secret 'X'; run `maestro secrets ls`".into(),
            hint: "",
        };
        assert_eq!(e.to_string(), "no secret 'X'; run `maestro secrets ls`");
    }
}
