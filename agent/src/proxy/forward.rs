//! One request through the proxy: leak checks, substitution (request target, headers, form and
//! JSON bodies), AWS re-signing, the audit record, the upstream call, and the scrubbed answer.

use std::convert::Infallible;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use super::Shared;
use super::audit::{self, ConnCtx};
use super::body::{self, ProxyBody, Read, ScanBody, ScanEvents};
use super::hosts;
use super::replace::{Forbidden, RequestRules, ScrubRules, scan_all};
use super::sealed::{Active, Part};
use super::sigv4;

/// Where the requests of a client connection go.
pub struct Target {
    /// Normalized host.
    pub host: String,
    pub port: u16,
    /// Inside a TLS connection the proxy terminated (https upstream); false for plain http.
    pub tls: bool,
}

impl Target {
    fn authority(&self) -> String {
        let host =
            if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let default = if self.tls { 443 } else { 80 };
        if self.port == default { host } else { format!("{host}:{}", self.port) }
    }
}

/// Longest "METHOD host/path" kept in a record, in bytes once escaped.
const MAX_DETAIL_BYTES: usize = 600;

/// Headers that belong to one connection, never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// A one-line answer from the proxy itself.
pub fn answer(status: StatusCode, line: &str) -> Response<ProxyBody> {
    let mut r = Response::new(body::full(format!("{line}\n")));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in listed {
        if !(keep_upgrade && n == header::UPGRADE) {
            headers.remove(n);
        }
    }
    // `te: trailers` is end to end (gRPC needs it); any other TE value is not.
    let te_trailers =
        headers.get(header::TE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for n in HOP_BY_HOP {
        if keep_upgrade && (*n == "upgrade" || *n == "connection") {
            continue;
        }
        headers.remove(*n);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The per-request context for records.
struct Recorder {
    shared: Arc<Shared>,
    conn: Arc<ConnCtx>,
    active: Arc<Active>,
    detail: String,
    host: String,
    tls: bool,
    /// Why a streaming body was stopped, for the answer.
    stopped: std::sync::Mutex<Option<(StatusCode, String)>>,
}

impl Recorder {
    fn secret_name(&self, secret: usize) -> &str {
        self.active.secrets.get(secret).map_or("?", |s| s.name.as_str())
    }

    fn leak_line(&self, secret: usize, tls: bool) -> String {
        let name = self.secret_name(secret);
        if tls {
            format!(
                "maestro proxy: refused: the request carries the placeholder of sealed secret {name}, \
                 which belongs to {} only, not {}; the attempt is recorded",
                self.active.secrets.get(secret).map(|s| s.hosts.join(", ")).unwrap_or_default(),
                self.host
            )
        } else {
            format!(
                "maestro proxy: refused: the request carries the placeholder of sealed secret {name} \
                 over plain http; use https (a real value is never sent unencrypted); the attempt is \
                 recorded"
            )
        }
    }

    fn leak(&self, secret: usize, place: &str) {
        let peer = self.conn.peer_now();
        let detail = maestro_wire::text::escape_shown(
            &format!("{}: placeholder in {place}", self.detail),
            MAX_DETAIL_BYTES + 200,
        );
        tracing::warn!(secret = self.secret_name(secret), uid = peer.uid, pid = ?peer.pid, "{detail}: leak attempt refused");
        audit::leak(&self.shared.usage, &peer, self.secret_name(secret), detail);
    }
}

impl Recorder {
    fn stop(&self, status: StatusCode, line: String) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = Some((status, line));
    }
}

impl ScanEvents for Recorder {
    fn substituted(&self, secret: usize) -> Result<(), String> {
        let peer = self.conn.peer_now();
        let r = audit::substituted(
            &self.shared.usage,
            &peer,
            &[self.secret_name(secret)],
            &self.detail,
        );
        if let Err(why) = &r {
            self.stop(StatusCode::SERVICE_UNAVAILABLE, why.clone());
        }
        r
    }

    fn forbidden(&self, secret: usize) {
        self.leak(secret, "the body");
        self.stop(StatusCode::FORBIDDEN, self.leak_line(secret, self.tls));
    }
}

fn content_kind(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .is_some_and(|t| {
            t == "application/x-www-form-urlencoded"
                || t == "application/json"
                || t.ends_with("+json")
        })
}

/// Replaces placeholders in one header value (a Basic credential is decoded first).
fn scan_header(
    rules: &RequestRules,
    value: &HeaderValue,
) -> Result<(Option<HeaderValue>, Vec<usize>), Forbidden> {
    let bytes = value.as_bytes();
    let (mut new, mut used) = scan_all(rules, bytes)?;
    let current = new.as_deref().unwrap_or(bytes);
    if current.len() > 6 && current[..6].eq_ignore_ascii_case(b"basic ") {
        let encoded = current[6..].trim_ascii();
        if let Ok(decoded) = B64.decode(encoded) {
            let decoded = zeroize::Zeroizing::new(decoded);
            if let (Some(swapped), u) = scan_all(rules, &decoded)? {
                let swapped = zeroize::Zeroizing::new(swapped);
                let mut out = b"Basic ".to_vec();
                out.extend_from_slice(B64.encode(&*swapped).as_bytes());
                new = Some(out);
                used.extend(u);
            }
        }
    }
    match new {
        None => Ok((None, used)),
        Some(b) => match HeaderValue::from_bytes(&b) {
            Ok(mut v) => {
                v.set_sensitive(true);
                Ok((Some(v), used))
            }
            // A real value that cannot be a header value: keep the placeholder.
            Err(_) => Ok((None, Vec::new())),
        },
    }
}

/// Serves one request from a client connection.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnCtx>,
    target: Arc<Target>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    Ok(match serve(shared, conn, target, req).await {
        Ok(r) => r,
        Err(r) => r,
    })
}

type Answer = Response<ProxyBody>;

async fn serve(
    shared: Arc<Shared>,
    conn: Arc<ConnCtx>,
    target: Arc<Target>,
    mut req: Request<Incoming>,
) -> Result<Answer, Answer> {
    // Inside a terminated TLS connection the request must be for the host it was opened to.
    if target.tls {
        let named = req.uri().host().map(str::to_owned).or_else(|| {
            req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(|h| {
                h.rsplit_once(':')
                    .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
                    .map_or(h, |(h, _)| h)
                    .to_owned()
            })
        });
        if let Some(h) = named
            && hosts::normalize(&h) != target.host
        {
            return Err(answer(
                StatusCode::MISDIRECTED_REQUEST,
                &format!(
                    "maestro proxy: this connection was opened to {}; open one to {h}",
                    target.host
                ),
            ));
        }
    }
    let upgrade = req.version() != Version::HTTP_2 && req.headers().contains_key(header::UPGRADE);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let active = shared.sealed.load_full();
    let (mut parts, incoming) = req.into_parts();
    let mut body = body::boxed(incoming);
    strip_hop_by_hop(&mut parts.headers, upgrade);
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    // Method, host and path only (never the query or the body), escaped and bounded: the
    // broker refuses details over 1 KiB.
    let detail = maestro_wire::text::escape_shown(
        &format!("{} {}{}", parts.method, target.host, parts.uri.path()),
        MAX_DETAIL_BYTES,
    );
    let rec = Arc::new(Recorder {
        shared: shared.clone(),
        conn: conn.clone(),
        active: active.clone(),
        detail: detail.clone(),
        host: target.host.clone(),
        tls: target.tls,
        stopped: std::sync::Mutex::new(None),
    });
    let mut used: Vec<usize> = Vec::new();
    let mut scrub = false;
    let mut sign: Option<(usize, sigv4::ClientAuth)> = None;
    let mut path_and_query = path_and_query;
    if !active.is_empty() {
        // Identify the caller now: records made while a body streams cannot wait.
        conn.peer().await;
        let allowed = if target.tls {
            active.allowed_for(&target.host)
        } else {
            vec![false; active.secrets.len()]
        };
        scrub = allowed.iter().any(|a| *a);
        let rules =
            RequestRules { active: active.clone(), allowed: allowed.clone(), substitute: true };
        let leak = |secret: usize, place: &str| {
            rec.leak(secret, place);
            answer(StatusCode::FORBIDDEN, &rec.leak_line(secret, target.tls))
        };
        // AWS: a request signed with a placeholder key id.
        if let Some(auth) = sigv4::ClientAuth::parse(&parts.headers)
            && let Some(secret) = active.sigv4_by_key_id(&auth.key_id)
        {
            if !allowed[secret] {
                return Err(leak(secret, "the AWS signature"));
            }
            sign = Some((secret, auth));
        }
        if let Some(q) = parts.uri.query()
            && q.contains("X-Amz-Credential=")
            && let Ok((Some(_), _)) = scan_all(&rules, q.as_bytes())
        {
            return Err(answer(
                StatusCode::BAD_REQUEST,
                "maestro proxy: refused: pre-signed AWS URLs made with a sealed key cannot be re-signed; \
                 sign the request normally (headers) or presign outside the sandbox",
            ));
        }
        // Each part of the request with the secrets whose values may go there: a placeholder
        // in any other part is refused as a leak, even towards one of its hosts.
        let rules_in = |part: Part<'_>| RequestRules {
            active: active.clone(),
            allowed: active.allowed_in(&allowed, part),
            substitute: true,
        };
        match scan_all(&rules_in(Part::Target), path_and_query.as_bytes()) {
            Err(Forbidden(s)) => return Err(leak(s, "the request target")),
            Ok((Some(new), u)) => {
                path_and_query = String::from_utf8(new).map_err(|_| bad_value())?;
                used.extend(u);
            }
            Ok((None, _)) => {}
        }
        let names: Vec<HeaderName> = parts.headers.keys().cloned().collect();
        for name in names {
            if sign.is_some() && name == header::AUTHORIZATION {
                continue;
            }
            let values: Vec<HeaderValue> = parts.headers.get_all(&name).iter().cloned().collect();
            let mut changed = false;
            let mut out = Vec::with_capacity(values.len());
            for v in values {
                match scan_header(&rules_in(Part::Header(name.as_str())), &v) {
                    Err(Forbidden(s)) => return Err(leak(s, &format!("the {name} header"))),
                    Ok((Some(new), u)) => {
                        changed = true;
                        used.extend(u);
                        out.push(new);
                    }
                    Ok((None, _)) => out.push(v),
                }
            }
            if changed {
                parts.headers.remove(&name);
                for v in out {
                    parts.headers.append(name.clone(), v);
                }
            }
        }
        // The body.
        let limit = shared.limits.max_buffered_body;
        let needs_hash = sign.as_ref().is_some_and(|(_, a)| a.needs_body_hash(&parts.headers));
        let buffer = needs_hash || (scrub && content_kind(&parts.headers));
        let events: Arc<dyn ScanEvents> = rec.clone();
        let rules = rules_in(Part::Body);
        let body_allowed = rules.allowed.clone();
        if body_is_empty(&body) {
            body = body::empty();
        } else if buffer {
            match body::read_up_to(body, limit).await.map_err(|_| {
                answer(StatusCode::BAD_REQUEST, "maestro proxy: the request body could not be read")
            })? {
                Read::Whole(bytes) => {
                    let bytes = match scan_all(&rules, &bytes) {
                        Err(Forbidden(s)) => return Err(leak(s, "the body")),
                        Ok((Some(new), u)) => {
                            used.extend(u);
                            Bytes::from(new)
                        }
                        Ok((None, _)) => bytes,
                    };
                    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                    if let Some((_, auth)) = &mut sign {
                        auth.body = Some(bytes.clone());
                    }
                    body = body::full(bytes);
                }
                Read::Partial(head, rest) => {
                    if needs_hash {
                        return Err(answer(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            &format!(
                                "maestro proxy: an AWS request body without x-amz-content-sha256 is \
                                 hashed by the proxy, up to {limit} bytes; send the header \
                                 (UNSIGNED-PAYLOAD or the body's hash) for bigger bodies"
                            ),
                        ));
                    }
                    let lengths_kept = same_lengths(&active, &body_allowed);
                    if !lengths_kept {
                        parts.headers.remove(header::CONTENT_LENGTH);
                    }
                    body = body::boxed(ScanBody::new(body::chain(head, rest), rules, Some(events)));
                    // Substitutions in a streamed body are recorded as they happen.
                    parts
                        .headers
                        .insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
                }
            }
        } else {
            let keep =
                RequestRules { active: active.clone(), allowed: body_allowed, substitute: false };
            body = body::boxed(ScanBody::new(body, keep, Some(events)));
        }
        dedup(&mut used);
        if let Some((secret, auth)) = &sign {
            let keys = active.secrets.get(*secret).and_then(|s| s.sigv4.as_ref());
            let Some(keys) = keys else { return Err(bad_value()) };
            sigv4::resign(
                &mut parts.headers,
                &parts.method,
                &target.authority(),
                &path_and_query,
                auth,
                keys,
            )
            .map_err(|e| answer(StatusCode::BAD_REQUEST, &format!("maestro proxy: {e}")))?;
            if !used.contains(secret) {
                used.push(*secret);
            }
        }
        if !used.is_empty() {
            let peer = conn.peer().await;
            let names: Vec<&str> = used.iter().map(|s| rec.secret_name(*s)).collect();
            audit::substituted(&shared.usage, peer, &names, &detail)
                .map_err(|why| answer(StatusCode::SERVICE_UNAVAILABLE, &why))?;
            tracing::debug!(secrets = ?names, "{detail}: substituted");
            parts.headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        }
    }
    // Upstream.
    let scheme = if target.tls { "https" } else { "http" };
    let uri: Uri = format!("{scheme}://{}{path_and_query}", target.authority())
        .parse()
        .map_err(|_| bad_value())?;
    let mut up = Request::from_parts(parts, body);
    *up.uri_mut() = uri;
    *up.version_mut() = Version::HTTP_11;
    let upstream_upgrade = upgrade;
    let client = if upgrade { &shared.client_h1 } else { &shared.client };
    let sent =
        tokio::time::timeout(shared.limits.upstream_response_timeout, client.request(up)).await;
    let mut resp = match sent {
        Err(_) => {
            return Err(answer(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("maestro proxy: {} did not answer in time", target.host),
            ));
        }
        Ok(Err(e)) => {
            // The body scanner stopped the request (a leak, or a use that cannot be recorded).
            if let Some((status, line)) =
                rec.stopped.lock().unwrap_or_else(|e| e.into_inner()).take()
            {
                return Err(answer(status, &line));
            }
            let mut why = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                why = format!("{why}: {s}");
                src = s.source();
            }
            tracing::info!("{detail}: upstream failed: {why}");
            return Err(answer(
                StatusCode::BAD_GATEWAY,
                &format!("maestro proxy: cannot reach {}: {why}", target.host),
            ));
        }
        Ok(Ok(r)) => r,
    };
    if upstream_upgrade && resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream = hyper::upgrade::on(&mut resp);
        if let Some(client) = client_upgrade {
            let idle = shared.limits.idle_timeout;
            tokio::spawn(async move {
                if let (Ok(c), Ok(u)) = (client.await, upstream.await) {
                    let mut c = hyper_util::rt::TokioIo::new(c);
                    let mut u = hyper_util::rt::TokioIo::new(u);
                    let _ = tokio::time::timeout(
                        idle * 12,
                        tokio::io::copy_bidirectional(&mut c, &mut u),
                    )
                    .await;
                }
            });
        }
        let (parts, _) = resp.into_parts();
        return Ok(Response::from_parts(parts, body::empty()));
    }
    let (mut parts, incoming) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    let mut body = body::boxed(incoming);
    if scrub {
        let rules = ScrubRules { active: active.clone() };
        let names: Vec<HeaderName> = parts.headers.keys().cloned().collect();
        for name in names {
            let values: Vec<HeaderValue> = parts.headers.get_all(&name).iter().cloned().collect();
            let mut out = Vec::new();
            let mut changed = false;
            for v in values {
                match scan_all(&rules, v.as_bytes()) {
                    Ok((Some(new), _)) => {
                        changed = true;
                        out.push(
                            HeaderValue::from_bytes(&new).unwrap_or(HeaderValue::from_static("")),
                        );
                    }
                    _ => out.push(v),
                }
            }
            if changed {
                parts.headers.remove(&name);
                for v in out {
                    parts.headers.append(name.clone(), v);
                }
            }
        }
        if !active.reals.iter().all(|r| r.real.len() == r.shown.len()) {
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        body = body::boxed(ScanBody::new(body, rules, None));
    }
    parts.version = Version::HTTP_11;
    Ok(Response::from_parts(parts, body))
}

fn bad_value() -> Answer {
    answer(
        StatusCode::BAD_REQUEST,
        "maestro proxy: a sealed value cannot be placed in this request (it would not be valid there)",
    )
}

fn dedup(v: &mut Vec<usize>) {
    let mut seen = Vec::new();
    v.retain(|s| {
        let new = !seen.contains(s);
        seen.push(*s);
        new
    });
}

fn same_lengths(active: &Active, allowed: &[bool]) -> bool {
    active.placeholder_entries.iter().all(|e| {
        !allowed.get(e.secret).copied().unwrap_or(false)
            || active.secrets[e.secret].swaps.iter().all(|s| s.placeholder.len() == s.real.len())
    })
}

fn body_is_empty(body: &ProxyBody) -> bool {
    use http_body::Body;
    body.is_end_stream() || body.size_hint().exact() == Some(0)
}
