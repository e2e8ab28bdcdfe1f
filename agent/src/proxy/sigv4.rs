//! AWS Signature Version 4: a request the client signed with the placeholder key id is signed
//! again, with the real keys (the `aws-sigv4` crate), over exactly the headers the client
//! signed, in the client's region, service and time, with the body hash the client declared
//! (`x-amz-content-sha256`: a hex hash, `UNSIGNED-PAYLOAD`, or
//! `STREAMING-UNSIGNED-PAYLOAD-TRAILER`), so the body itself is never buffered. Without that
//! header (STS and most non-S3 services) the proxy hashes the (small, buffered) body.
//! Chunk-signed uploads (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`) sign every chunk with the
//! secret key; they are refused with a reason.

use std::borrow::Cow;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode,
    sign,
};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http::Method;
use http::header::{self, HeaderMap, HeaderValue};

use super::sealed::SigV4Keys;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const CONTENT_SHA256: &str = "x-amz-content-sha256";

#[derive(Debug, thiserror::Error)]
pub enum SigV4Error {
    #[error(
        "refused: chunk-signed AWS uploads (STREAMING-AWS4-HMAC-SHA256-PAYLOAD) cannot be re-signed \
         for a sealed key; configure the client for unsigned payloads with trailing checksums (the \
         default of current aws-cli and boto3 over https)"
    )]
    ChunkSigned,
    #[error("the AWS signature has no valid x-amz-date header; sign with a current AWS SDK")]
    Date,
    #[error("cannot re-sign the AWS request: {0}")]
    Sign(String),
}

/// The client's `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    pub key_id: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    /// The buffered body, when the proxy must hash it.
    pub body: Option<Bytes>,
}

impl ClientAuth {
    pub fn parse(headers: &HeaderMap) -> Option<ClientAuth> {
        let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let rest = v.strip_prefix(ALGORITHM)?.trim_start();
        let mut credential = None;
        let mut signed = None;
        for part in rest.split(',') {
            let (k, val) = part.trim().split_once('=')?;
            match k {
                "Credential" => credential = Some(val),
                "SignedHeaders" => signed = Some(val),
                _ => {}
            }
        }
        let mut scope = credential?.split('/');
        let key_id = scope.next()?.to_owned();
        let _date = scope.next()?;
        let region = scope.next()?.to_owned();
        let service = scope.next()?.to_owned();
        let signed_headers = signed?.split(';').map(|h| h.trim().to_ascii_lowercase()).collect();
        Some(ClientAuth { key_id, region, service, signed_headers, body: None })
    }

    /// The client declared no body hash: the proxy must hash the body itself.
    pub fn needs_body_hash(&self, headers: &HeaderMap) -> bool {
        !headers.contains_key(CONTENT_SHA256)
    }
}

/// `20240102T030405Z`.
pub(crate) fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| text.get(r)?.parse::<u32>().ok();
    let month = time::Month::try_from(u8::try_from(n(4..6)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::try_from(n(0..4)?).ok()?,
        month,
        u8::try_from(n(6..8)?).ok()?,
    )
    .ok()?;
    let t = time::Time::from_hms(
        u8::try_from(n(9..11)?).ok()?,
        u8::try_from(n(11..13)?).ok()?,
        u8::try_from(n(13..15)?).ok()?,
    )
    .ok()?;
    Some(time::PrimitiveDateTime::new(date, t).assume_utc().into())
}

/// Signs the request again with the real keys: replaces `authorization`, `x-amz-date` and
/// `x-amz-security-token`.
pub fn resign(
    headers: &mut HeaderMap,
    method: &Method,
    authority: &str,
    path_and_query: &str,
    auth: &ClientAuth,
    keys: &SigV4Keys,
) -> Result<(), SigV4Error> {
    let time = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_amz_date)
        .ok_or(SigV4Error::Date)?;
    let body = match headers.get(CONTENT_SHA256).map(|v| v.to_str().unwrap_or("")) {
        Some(h) if h.starts_with("STREAMING-AWS4-") => return Err(SigV4Error::ChunkSigned),
        Some("UNSIGNED-PAYLOAD") => SignableBody::UnsignedPayload,
        Some("STREAMING-UNSIGNED-PAYLOAD-TRAILER") => SignableBody::StreamingUnsignedPayloadTrailer,
        Some(h) => SignableBody::Precomputed(h.to_owned()),
        None => SignableBody::Bytes(auth.body.as_deref().unwrap_or(&[])),
    };
    // Exactly the headers the client signed, except those the signer makes itself.
    let mut signed: Vec<(&str, String)> = Vec::new();
    for name in &auth.signed_headers {
        match name.as_str() {
            "x-amz-date" | "x-amz-security-token" | "authorization" => continue,
            "host" => signed.push(("host", authority.to_owned())),
            other => {
                let values: Vec<&str> =
                    headers.get_all(other).iter().filter_map(|v| v.to_str().ok()).collect();
                if !values.is_empty() {
                    signed.push((other, values.join(",")));
                }
            }
        }
    }
    let identity = Credentials::new(
        keys.key_id.expose(),
        keys.secret_key.expose(),
        keys.session_token.as_ref().map(|t| t.expose().to_owned()),
        None,
        "maestro-sealed",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.excluded_headers = Some(Vec::<Cow<'static, str>>::new());
    if auth.service == "s3" || auth.service.starts_with("s3-") || auth.service == "s3express" {
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&auth.region)
        .name(&auth.service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| SigV4Error::Sign(e.to_string()))?;
    let uri = format!("https://{authority}{path_and_query}");
    let request = SignableRequest::new(
        method.as_str(),
        uri,
        signed.iter().map(|(k, v)| (*k, v.as_str())),
        body,
    )
    .map_err(|e| SigV4Error::Sign(e.to_string()))?;
    let params = params.into();
    let (instructions, _signature) =
        sign(request, &params).map_err(|e| SigV4Error::Sign(e.to_string()))?.into_parts();
    let (new_headers, _) = instructions.into_parts();
    for h in new_headers {
        let mut v =
            HeaderValue::from_str(h.value()).map_err(|e| SigV4Error::Sign(e.to_string()))?;
        v.set_sensitive(true);
        headers.insert(h.name(), v);
    }
    Ok(())
}
