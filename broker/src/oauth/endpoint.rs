//! Talking to a provider's token endpoint (code exchange, refresh; RFC 6749 section 4.1.3 and
//! 6) and revocation endpoint (RFC 7009).
//!
//! Written directly on reqwest rather than with the `oauth2` crate: that crate is built on
//! reqwest 0.12 (this workspace uses 0.13), parses GitHub's answers wrong (GitHub reports
//! errors with HTTP 200, and scopes comma-separated), and keeps tokens in plain `String`s.
//! Here tokens go from the response bytes (a zeroizing buffer) straight into
//! [`SecretValue`]s, and every failure is classified as the provider *refusing* (an OAuth
//! `error`: re-authorization needed) or as *transient* (network, 5xx, 429: retry later).
//!
//! Client authentication is `client_secret_post` (client id and secret in the form body),
//! which GitHub, GitLab and Microsoft all accept. Requests ask for JSON (`Accept`), which
//! GitHub needs; a form-encoded answer is read too.

use std::fmt;

use maestro_wire::SecretValue;
use maestro_wire::oauth::parse_scopes;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde::Deserialize;
use zeroize::Zeroizing;

/// Largest answer read from a provider.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Longest piece of a provider's error description kept in a message.
const MAX_DESCRIPTION_CHARS: usize = 200;

/// What a token endpoint granted.
#[derive(Debug)]
pub struct Grant {
    pub access_token: SecretValue,
    pub refresh_token: Option<SecretValue>,
    /// Seconds; `None` when the token does not expire (or the provider does not say).
    pub expires_in: Option<u64>,
    /// The granted scopes, when the answer names them.
    pub scopes: Option<Vec<String>>,
}

/// Why a call to a provider failed. Messages hold URLs, status codes and the provider's error
/// code and description; never a token, a code or the client secret.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The provider answered with an OAuth error (`invalid_grant`, `access_denied`, ...).
    #[error("{}", refused_text(.code, .description.as_deref()))]
    Refused { code: String, description: Option<String> },
    /// No answer: connection refused, DNS, TLS, timeout.
    #[error("cannot reach {url} ({detail})")]
    Unreachable { url: String, detail: String },
    /// An HTTP error without an OAuth error body.
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    /// A success that is not a token response.
    #[error("{url} answered something that is not an OAuth token response ({what})")]
    BadAnswer { url: String, what: &'static str },
    /// The answer is larger than any token response.
    #[error("{url} answered more than {MAX_ANSWER_BYTES} bytes")]
    TooLarge { url: String },
}

fn refused_text(code: &str, description: Option<&str>) -> String {
    match description {
        Some(d) => format!("the provider answered {code} ({d})"),
        None => format!("the provider answered {code}"),
    }
}

impl EndpointError {
    /// Whether trying again later may succeed (refresh retries these with backoff).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::BadAnswer { .. } | Self::TooLarge { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            Self::Refused { .. } => false,
        }
    }
}

/// A provider's error code as it may be shown: RFC 6749 allows printable ASCII but `"` and
/// `\`; anything else, or more than 64 characters, is replaced.
pub fn clean_code(code: &str) -> String {
    let ok = !code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| (0x20..=0x7E).contains(&b) && b != b'"' && b != b'\\');
    if ok { code.to_owned() } else { "an unreadable error".to_owned() }
}

/// A provider's free-text description, as one short line.
pub fn clean_description(text: &str) -> Option<String> {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_DESCRIPTION_CHARS)
        .collect();
    if text.chars().count() > MAX_DESCRIPTION_CHARS {
        out.push_str("...");
    }
    let out = out.trim().to_owned();
    (!out.is_empty()).then_some(out)
}

/// The client of one provider: its endpoints' HTTP client and its credentials.
pub struct Client<'a> {
    pub http: &'a reqwest::Client,
    pub client_id: &'a str,
    pub client_secret: &'a SecretValue,
}

impl fmt::Debug for Client<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

/// A token response, as JSON or as a form.
#[derive(Deserialize, Default)]
struct RawAnswer {
    access_token: Option<SecretValue>,
    refresh_token: Option<SecretValue>,
    expires_in: Option<serde_json::Value>,
    scope: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

impl RawAnswer {
    fn from_form(body: &[u8]) -> Self {
        let mut out = Self::default();
        for (key, value) in form_urlencoded::parse(body) {
            match key.as_ref() {
                "access_token" => out.access_token = Some(SecretValue::new(value.into_owned())),
                "refresh_token" => out.refresh_token = Some(SecretValue::new(value.into_owned())),
                "expires_in" => out.expires_in = Some(serde_json::Value::from(value.as_ref())),
                "scope" => out.scope = Some(value.into_owned()),
                "error" => out.error = Some(value.into_owned()),
                "error_description" => out.error_description = Some(value.into_owned()),
                _ => {}
            }
        }
        out
    }

    /// The provider's refusal, if this answer is one. `sent` are the secret values the
    /// request carried: a provider that echoes one back in its error code or description gets
    /// that text dropped, since the error reaches logs and `maestro secrets show`.
    fn refusal(&self, sent: &[&str]) -> Option<EndpointError> {
        let echoes = |text: &str| sent.iter().any(|v| !v.is_empty() && text.contains(v));
        self.error.as_deref().map(|code| EndpointError::Refused {
            code: if echoes(code) { "an unreadable error".to_owned() } else { clean_code(code) },
            description: self
                .error_description
                .as_deref()
                .filter(|d| !echoes(d))
                .and_then(clean_description),
        })
    }
}

/// `expires_in` as a number or a numeric string (both are seen in the wild).
fn seconds(value: &serde_json::Value) -> Option<u64> {
    match value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The causes of a reqwest error, without its outer "error sending request for url (...)".
fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "no answer within 30 s".to_owned();
    }
    let mut parts: Vec<String> = Vec::new();
    let mut current = std::error::Error::source(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    if parts.is_empty() { "the request failed".to_owned() } else { parts.join(": ") }
}

impl Client<'_> {
    /// The form body with the client's credentials, in a zeroizing buffer. (A separate
    /// function: the serializer is not `Send` and must not live across an await.)
    fn encode(&self, form: &[(&str, &str)]) -> Zeroizing<Vec<u8>> {
        let mut body = form_urlencoded::Serializer::new(String::with_capacity(1024));
        for (k, v) in form {
            body.append_pair(k, v);
        }
        body.append_pair("client_id", self.client_id);
        body.append_pair("client_secret", self.client_secret.expose());
        Zeroizing::new(body.finish().into_bytes())
    }

    /// POSTs a form and returns the status and the (bounded, zeroizing) answer.
    async fn post(
        &self,
        url: &str,
        form: &[(&str, &str)],
    ) -> Result<(StatusCode, Zeroizing<Vec<u8>>), EndpointError> {
        let body = self.encode(form);
        let unreachable = |e: reqwest::Error| EndpointError::Unreachable {
            url: url.to_owned(),
            detail: describe(&e),
        };
        let mut response = self
            .http
            .post(url)
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(reqwest::Body::from(axum::body::Bytes::from_owner(body)))
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let mut buf = Zeroizing::new(Vec::with_capacity(4096));
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if buf.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(EndpointError::TooLarge { url: url.to_owned() });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok((status, buf))
    }

    /// Posts a token request and reads the grant.
    async fn token_request(
        &self,
        url: &str,
        form: &[(&str, &str)],
        sent: &[&str],
    ) -> Result<Grant, EndpointError> {
        let (status, body) = self.post(url, form).await?;
        let trimmed =
            body.iter().position(|b| !b.is_ascii_whitespace()).map_or(&[][..], |i| &body[i..]);
        let answer = if trimmed.first() == Some(&b'{') {
            serde_json::from_slice::<RawAnswer>(trimmed).ok()
        } else if status.is_success() {
            Some(RawAnswer::from_form(trimmed))
        } else {
            None
        };
        // GitHub answers errors with HTTP 200: an `error` wins over the status.
        if let Some(refused) = answer.as_ref().and_then(|a| a.refusal(sent)) {
            return Err(refused);
        }
        if !status.is_success() {
            return Err(EndpointError::Status { url: url.to_owned(), status: status.as_u16() });
        }
        let bad = |what| EndpointError::BadAnswer { url: url.to_owned(), what };
        let answer = answer.ok_or_else(|| bad("not JSON"))?;
        let access_token =
            answer.access_token.filter(|t| !t.is_empty()).ok_or_else(|| bad("no access_token"))?;
        Ok(Grant {
            access_token,
            refresh_token: answer.refresh_token.filter(|t| !t.is_empty()),
            expires_in: answer.expires_in.as_ref().and_then(seconds),
            scopes: answer.scope.as_deref().map(parse_scopes),
        })
    }

    /// Exchanges an authorization code (with its PKCE verifier) for tokens.
    pub async fn exchange_code(
        &self,
        token_url: &str,
        code: &SecretValue,
        redirect_uri: &str,
        verifier: &SecretValue,
    ) -> Result<Grant, EndpointError> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.expose()),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier.expose()),
        ];
        let sent = [code.expose(), verifier.expose(), self.client_secret.expose()];
        self.token_request(token_url, &form, &sent).await
    }

    /// Trades a refresh token for a new access token (and maybe a new refresh token).
    pub async fn refresh(
        &self,
        token_url: &str,
        refresh_token: &SecretValue,
    ) -> Result<Grant, EndpointError> {
        let form = [("grant_type", "refresh_token"), ("refresh_token", refresh_token.expose())];
        let sent = [refresh_token.expose(), self.client_secret.expose()];
        self.token_request(token_url, &form, &sent).await
    }

    /// RFC 7009: revokes a token; `hint` is `refresh_token` or `access_token`.
    pub async fn revoke(
        &self,
        revoke_url: &str,
        token: &SecretValue,
        hint: &str,
    ) -> Result<(), EndpointError> {
        let (status, body) =
            self.post(revoke_url, &[("token", token.expose()), ("token_type_hint", hint)]).await?;
        if status.is_success() {
            return Ok(());
        }
        let sent = [token.expose(), self.client_secret.expose()];
        if let Some(refused) =
            serde_json::from_slice::<RawAnswer>(&body).ok().as_ref().and_then(|a| a.refusal(&sent))
        {
            return Err(refused);
        }
        Err(EndpointError::Status { url: revoke_url.to_owned(), status: status.as_u16() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_never_repeats_a_value_the_request_sent() {
        let answer: RawAnswer = serde_json::from_slice(
            br#"{"error":"invalid_grant","error_description":"refresh token rt-planted-42 is revoked"}"#,
        )
        .unwrap();
        let text = answer.refusal(&["rt-planted-42"]).unwrap().to_string();
        assert_eq!(text, "the provider answered invalid_grant");
        let echoed: RawAnswer = serde_json::from_slice(br#"{"error":"rt-planted-42"}"#).unwrap();
        assert!(!echoed.refusal(&["rt-planted-42"]).unwrap().to_string().contains("planted"));
        let kept = answer.refusal(&["something-else"]).unwrap().to_string();
        assert!(kept.contains("is revoked"), "{kept}");
    }

    #[test]
    fn answers_in_json_and_form_and_github_errors() {
        let json: RawAnswer = serde_json::from_slice(
            br#"{"access_token":"a1","expires_in":"7200","scope":"repo,gist","refresh_token":"r1"}"#,
        )
        .unwrap();
        assert_eq!(json.expires_in.as_ref().and_then(seconds), Some(7200));
        assert_eq!(parse_scopes(json.scope.as_deref().unwrap()), ["repo", "gist"]);
        let form = RawAnswer::from_form(b"access_token=a2&scope=api+read_user&token_type=bearer");
        assert_eq!(form.access_token.unwrap().expose(), "a2");
        assert_eq!(parse_scopes(&form.scope.unwrap()), ["api", "read_user"]);
        let github: RawAnswer = serde_json::from_slice(
            br#"{"error":"bad_verification_code","error_description":"The code passed is incorrect or expired."}"#,
        )
        .unwrap();
        let e = github.refusal(&[]).unwrap();
        assert!(!e.is_transient());
        assert_eq!(
            e.to_string(),
            "the provider answered bad_verification_code (The code passed is incorrect or expired.)"
        );
    }

    #[test]
    fn classification_and_cleaning() {
        let status = |s| EndpointError::Status { url: "u".into(), status: s };
        assert!(status(503).is_transient() && status(429).is_transient());
        assert!(!status(404).is_transient());
        assert_eq!(clean_code("invalid_grant"), "invalid_grant");
        assert_eq!(clean_code("bad\ncode"), "an unreadable error");
        assert_eq!(clean_description("two\nlines").as_deref(), Some("two lines"));
        assert_eq!(clean_description(&"x".repeat(300)).unwrap().len(), 203);
        assert_eq!(clean_description("  "), None);
    }
}
