//! Request extractors that answer in our error format. Axum's own rejections are plain text
//! and may quote the input; these never do.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use maestro_wire::api::ErrorCode;
use serde::de::DeserializeOwned;
use zeroize::Zeroize;

use super::error::Failure;

/// A JSON body. Wrong content type, a body over the limit, bad JSON, or JSON of the wrong
/// shape all become an `ApiError`; the message says where, never what the value was.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Failure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Failure> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| {
                let v = v.trim().to_ascii_lowercase();
                v == "application/json" || v.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(Failure::with_status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::MalformedJson,
                "the request body must be JSON; send Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Failure::new(
                    ErrorCode::TooLarge,
                    "the request body is larger than this route takes; send less at once",
                )
            } else {
                Failure::new(ErrorCode::MalformedJson, "the request body could not be read; retry")
            }
        })?;
        // Own the buffer so that it can be wiped once parsed: it may hold secret values.
        let mut buf: Vec<u8> = bytes.into();
        // Every body of this API is an object; serde would also read a struct whose fields all
        // have defaults from an array (`[]`), which must be an error, not an empty request.
        if !starts_an_object(&buf) {
            buf.zeroize();
            return Err(Failure::new(
                ErrorCode::MalformedJson,
                "the request body must be one JSON object ({...})",
            ));
        }
        let parsed = serde_json::from_slice::<T>(&buf);
        buf.zeroize();
        parsed.map(ApiJson).map_err(|e| Failure::new(ErrorCode::MalformedJson, describe(&e)))
    }
}

/// A JSON body that may also be empty (then `T::default()`), for routes whose whole body is
/// optional, like `POST /v1/sessions`.
#[derive(Debug)]
pub struct ApiJsonOrEmpty<T>(pub T);

impl<S, T> FromRequest<S> for ApiJsonOrEmpty<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = Failure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Failure> {
        let empty = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "0")
            || (req.headers().get(CONTENT_TYPE).is_none()
                && axum::body::HttpBody::is_end_stream(req.body()));
        if empty {
            return Ok(Self(T::default()));
        }
        ApiJson::<T>::from_request(req, state).await.map(|j| Self(j.0))
    }
}

/// Whether the first byte after white space opens a JSON object.
fn starts_an_object(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// A serde_json error in words that cannot contain the input's values: the position, and for
/// shape errors the field name only when serde names a field (its messages for type errors
/// quote the offending value, so those are replaced).
pub fn describe(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let (line, column) = (e.line(), e.column());
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => format!(
            "the request body is not valid JSON (line {line}, column {column}); send one JSON object"
        ),
        Category::Data => {
            let text = e.to_string();
            let named = ["unknown field", "missing field", "duplicate field"]
                .iter()
                .any(|p| text.starts_with(p));
            if named {
                let what = text.split(" at line ").next().unwrap_or(&text);
                format!("the request body does not fit this route: {what}")
            } else {
                format!(
                    "the request body does not fit this route: a value has the wrong type (line {line}, column {column})"
                )
            }
        }
    }
}

/// A path parameter, with a JSON rejection.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Failure> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|_| Failure::bad_request("the URL path is not valid for this route"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_objects_are_bodies() {
        assert!(starts_an_object(b" \n{}"));
        assert!(!starts_an_object(b"[]"));
        assert!(!starts_an_object(b"\"x\""));
        assert!(!starts_an_object(b""));
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        n: u32,
    }

    #[test]
    fn messages_never_quote_values() {
        let e = serde_json::from_str::<Body>(r#"{"n": "planted-secret"}"#).unwrap_err();
        let m = describe(&e);
        assert!(!m.contains("planted"), "{m}");
        assert!(m.contains("wrong type"));
        let e = serde_json::from_str::<Body>(r#"{"x": 1}"#).unwrap_err();
        assert!(describe(&e).contains("unknown field `x`"));
        let e = serde_json::from_str::<Body>(r#"{"n": 1"#).unwrap_err();
        assert!(describe(&e).contains("not valid JSON"));
        let e = serde_json::from_str::<Body>(r#"{}"#).unwrap_err();
        assert!(describe(&e).contains("missing field `n`"));
    }
}
