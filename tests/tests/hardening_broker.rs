//! Issue 9, the broker's side, each property attacked: usage reports outside their session,
//! a renewed session's old certificate, oversized and stalled uploads to the unauthenticated
//! enrollment route, half request lines and missing HTTP/2 prefaces, a flood of idle
//! connections, a core dump or ptrace of the broker, early errors over HTTP/2, and audit
//! listings that page instead of truncating.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use maestro_tests::broker::{Broker, BrokerOptions, TestAgent, client_with_identity, new_csr};
use maestro_tests::util::{ChildGuard, bin, now_rfc3339, temp_dir};
use rcgen::CertificateParams;
use serde_json::{Value, json};

/// A generous bound for things that must happen "soon": never a timing assertion.
const GIVE_UP: Duration = Duration::from_secs(60);

fn report(secret: &str, action: &str, at: &str) -> Value {
    json!({"secret": secret, "action": action, "at": at, "pid": 4242, "uid": 1000,
           "command": "cat", "detail": "USED_VAR"})
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_reports_outside_their_session_are_refused() {
    let broker = Broker::start();
    let api = broker.admin();
    api.add_generic("USED", &[("USED_VAR", "v")]).await.ok();
    api.add_generic("NEVER", &[("NEVER_VAR", "v")]).await.ok();
    let (session, token) = api.new_session(json!({})).await;
    api.activate(&session, &["USED"]).await.ok();
    let agent = TestAgent::enroll(&broker, &token).await.unwrap();
    let before_never = api.get("/v1/secrets/NEVER").await.ok();
    let before_used = api.get("/v1/secrets/USED").await.ok();

    // A secret of the owner that was never active in this session.
    let r = agent
        .post("/v1/agent/usage", json!({"reports": [report("NEVER", "file_read", &now_rfc3339())]}))
        .await
        .unwrap();
    let m = r.expect_error(403, "forbidden");
    assert!(m.contains("NEVER") && m.contains("never active"), "{m}");
    // A time before the session was created.
    let r = agent
        .post(
            "/v1/agent/usage",
            json!({"reports": [report("USED", "file_read", "2020-01-01T00:00:00Z")]}),
        )
        .await
        .unwrap();
    let m = r.expect_error(400, "bad_request");
    assert!(m.contains("before session"), "{m}");
    // A time in the future.
    let r = agent
        .post(
            "/v1/agent/usage",
            json!({"reports": [report("USED", "injected", "2099-01-01T00:00:00Z")]}),
        )
        .await
        .unwrap();
    let m = r.expect_error(400, "bad_request");
    assert!(m.contains("in the future"), "{m}");
    // A good report in the same batch as a bad one: the batch is refused whole.
    let r = agent
        .post(
            "/v1/agent/usage",
            json!({"reports": [report("USED", "file_read", &now_rfc3339()),
                               report("NEVER", "file_read", &now_rfc3339())]}),
        )
        .await
        .unwrap();
    r.expect_error(403, "forbidden");

    // Nothing changed in what `secrets show` says of either secret.
    assert_eq!(api.get("/v1/secrets/NEVER").await.ok(), before_never);
    assert_eq!(api.get("/v1/secrets/USED").await.ok(), before_used);
    let out = broker.maestro(&broker.admin_token, &["secrets", "show", "NEVER", "--json"]).ok();
    let shown = out.json();
    assert_eq!(shown["last_used_at"], Value::Null);
    assert_eq!(shown["used_by_sessions"], json!([]));
    // Each refusal is in the audit trail as a denial of the session.
    let audit = api.get("/v1/audit").await.ok();
    let refusals: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "denied" && e["session"] == session.as_str())
        .filter(|e| e["detail"].as_str().unwrap_or("").starts_with("refused: usage report"))
        .collect();
    assert_eq!(refusals.len(), 4, "{audit:#}");

    // A secret deactivated a moment ago may still have a read in flight: accepted.
    api.deactivate(&session, &["USED"]).await.ok();
    let accepted = agent
        .post("/v1/agent/usage", json!({"reports": [report("USED", "file_read", &now_rfc3339())]}))
        .await
        .unwrap()
        .ok();
    assert_eq!(accepted["accepted"], 1);
    let used = api.get("/v1/secrets/USED").await.ok();
    assert_eq!(used["used_by_sessions"], json!([session]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_has_a_quota_of_usage_records() {
    let broker = Broker::start();
    let api = broker.admin();
    api.add_generic("USED", &[("USED_VAR", "v")]).await.ok();
    let (session, token) = api.new_session(json!({})).await;
    api.activate(&session, &["USED"]).await.ok();
    let agent = TestAgent::enroll(&broker, &token).await.unwrap();
    let at = now_rfc3339();
    let batch: Vec<Value> = (0..maestro_wire::limits::MAX_USAGE_BATCH)
        .map(|_| report("USED", "file_read", &at))
        .collect();
    let mut accepted = 0u64;
    let mut refusal = None;
    let started = Instant::now();
    // The burst is 100,000 records: a flood reaches it within 101 full batches (and what the
    // rate refills meanwhile).
    for _ in 0..130 {
        let r = agent.post("/v1/agent/usage", json!({ "reports": batch })).await.unwrap();
        if r.status == 200 {
            accepted += r.body["accepted"].as_u64().unwrap();
        } else {
            refusal = Some(r);
            break;
        }
    }
    let refusal = refusal.expect("the quota is reached");
    let m = refusal.expect_error(429, "quota_reached");
    assert!(m.contains("quota") && m.contains(&session), "{m}");
    // The burst, and what the rate (30,000 a minute) refilled meanwhile, give or take a batch.
    let refilled = (started.elapsed().as_secs_f64() * 500.0).ceil() as u64;
    assert!(accepted >= 99_000, "{accepted} records accepted before the quota");
    assert!(
        accepted <= 100_000 + refilled + 1000,
        "{accepted} records accepted: more than the burst and {refilled} refilled"
    );
    // The refusal says when to retry.
    let r = agent
        .client
        .post(format!("{}/v1/agent/usage", agent.base))
        .json(&json!({ "reports": batch }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "Retry-After: {retry}");
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_retires_the_old_certificate() {
    // An overlap long enough that "during the overlap" holds on a busy machine.
    let broker = Broker::start_with(BrokerOptions::args(&["--renew-overlap", "10s"]));
    let api = broker.admin();
    api.add_generic("KEPT", &[("KEPT_VAR", "v")]).await.ok();
    let (session, token) = api.new_session(json!({})).await;
    api.activate(&session, &["KEPT"]).await.ok();
    let old = TestAgent::enroll(&broker, &token).await.unwrap();
    old.get("/v1/agent/secrets").await.unwrap().ok();

    let (csr, key) = new_csr(&CertificateParams::default());
    let renewed = old.post("/v1/agent/renew", json!({"csr_pem": csr})).await.unwrap().ok();
    let new_client =
        client_with_identity(&broker.ca_pem(), renewed["cert_pem"].as_str().unwrap(), &key);
    // During the overlap the old certificate still works, but cannot renew again.
    old.get("/v1/agent/secrets").await.unwrap().ok();
    let (csr2, _) = new_csr(&CertificateParams::default());
    let r = old.post("/v1/agent/renew", json!({"csr_pem": csr2})).await.unwrap();
    r.expect_error(403, "forbidden");

    tokio::time::sleep(Duration::from_secs(11)).await;
    // After it, the old certificate gets nothing: material, events, usage.
    let r = old.get("/v1/agent/secrets").await.unwrap();
    let m = r.expect_error(401, "unauthorized");
    assert!(m.contains("replaced by a renewal"), "{m}");
    old.get("/v1/agent/secrets/KEPT").await.unwrap().expect_error(401, "unauthorized");
    old.events().await.err().expect("events refused").expect_error(401, "unauthorized");
    old.post("/v1/agent/usage", json!({"reports": [report("KEPT", "file_read", &now_rfc3339())]}))
        .await
        .unwrap()
        .expect_error(401, "unauthorized");
    // A fresh connection with the old certificate: refused the same way.
    let fresh = client_with_identity(&broker.ca_pem(), &old.issued.cert_pem, &old.key_pem);
    let r = fresh.get(format!("{}/v1/agent/secrets", broker.url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // The new one works, and the refusals are recorded.
    let r = new_client.get(format!("{}/v1/agent/secrets", broker.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let audit = api.get("/v1/audit").await.ok();
    assert!(
        audit.as_array().unwrap().iter().any(|e| e["action"] == "denied"
            && e["detail"].as_str().unwrap_or("").starts_with("retired certificate")),
        "{audit:#}"
    );
}

// Raw TLS clients, to do what no well-behaved HTTP client does.

fn tls_config(ca_pem: &str, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    maestro_tests::broker::init_crypto();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config =
        rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to the broker that negotiated `alpn`.
fn connect(broker: &Broker, alpn: &[u8]) -> Tls {
    let addr = broker.url.trim_start_matches("https://").to_owned();
    let tcp = TcpStream::connect(&addr).unwrap();
    tcp.set_read_timeout(Some(GIVE_UP)).unwrap();
    tcp.set_write_timeout(Some(GIVE_UP)).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(tls_config(&broker.ca_pem(), alpn), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    assert_eq!(tls.conn.alpn_protocol(), Some(alpn));
    tls
}

/// Reads until the broker closes the connection; returns what it sent, or `None` if it was
/// still open when the read timed out (`GIVE_UP`).
fn read_until_closed(tls: &mut Tls) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            // A reset or an unclean TLS close is a close too.
            Err(_) => return Some(got),
        }
    }
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn oversized_and_stalled_enrollments_are_cut_short() {
    let broker = Broker::start_with(BrokerOptions::args(&["--body-timeout", "2s"]));
    let pid = broker.pid().unwrap();
    let rss_before = vm_rss_kib(pid);

    // Eight connections announce a 31 MiB body, send 1 MiB of it and stall.
    let mut handles = Vec::new();
    for _ in 0..8 {
        let mut tls = connect(&broker, b"http/1.1");
        handles.push(std::thread::spawn(move || {
            let head = format!(
                "POST /v1/enroll HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                31 * 1024 * 1024
            );
            tls.write_all(head.as_bytes()).unwrap();
            // The broker may refuse (and close) before all of this is sent.
            let chunk = vec![b' '; 64 * 1024];
            for _ in 0..16 {
                if tls.write_all(&chunk).is_err() {
                    break;
                }
            }
            read_until_closed(&mut tls)
        }));
    }
    // Chunked (no length announced), more than the route takes, then a stall.
    let mut chunked = connect(&broker, b"http/1.1");
    let head = "POST /v1/enroll HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    chunked.write_all(head.as_bytes()).unwrap();
    for _ in 0..8 {
        let _ = chunked.write_all(format!("{:x}\r\n{}\r\n", 4096, " ".repeat(4096)).as_bytes());
    }
    let chunked_answer = read_until_closed(&mut chunked).expect("the broker closes it");
    let text = String::from_utf8_lossy(&chunked_answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("\"too_large\""), "{text}");

    for h in handles {
        let answer = h.join().unwrap().expect("the broker closes a stalled oversized upload");
        // Refused with a 413 JSON error (or closed without one).
        if !answer.is_empty() {
            let text = String::from_utf8_lossy(&answer);
            assert!(text.starts_with("HTTP/1.1 413"), "{text}");
            assert!(text.contains("\"too_large\""), "{text}");
        }
    }
    let rss_after = vm_rss_kib(pid);
    println!("broker VmRSS: {rss_before} KiB before, {rss_after} KiB after the flood");
    assert!(
        rss_after < rss_before + 50 * 1024,
        "the broker grew from {rss_before} KiB to {rss_after} KiB"
    );

    // A small body that stalls half way: 408 once the body timeout passes, or closed.
    let mut stalled = connect(&broker, b"http/1.1");
    let head = "POST /v1/enroll HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"token\":";
    stalled.write_all(head.as_bytes()).unwrap();
    let answer = read_until_closed(&mut stalled).expect("a stalled upload is dropped");
    if !answer.is_empty() {
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("\"timeout\""), "{text}");
    }
    // The broker still serves.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async { broker.admin().get("/v1/secrets").await.ok() });
}

#[test]
fn stalled_request_heads_and_missing_h2_prefaces_are_closed() {
    let broker = Broker::start_with(BrokerOptions::args(&[
        "--header-timeout",
        "2s",
        "--idle-timeout",
        "3s",
        "--heartbeat",
        "1s",
    ]));
    // Half a request line, then nothing.
    let mut half = connect(&broker, b"http/1.1");
    half.write_all(b"GET /healthz HT").unwrap();
    // HTTP/2 negotiated, and no preface.
    let mut no_preface = connect(&broker, b"h2");
    // A whole first request, then half of a second one on the same connection.
    let mut second = connect(&broker, b"http/1.1");
    second.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\nGET /heal").unwrap();
    // HTTP/2 preface and settings, then silence.
    let mut idle_h2 = connect(&broker, b"h2");
    idle_h2
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();

    for (what, tls) in [
        ("half a request line", &mut half),
        ("h2 without a preface", &mut no_preface),
        ("half a second request", &mut second),
        ("an idle h2 connection", &mut idle_h2),
    ] {
        let started = Instant::now();
        let got = read_until_closed(tls);
        assert!(got.is_some(), "{what}: still open after {:?}", started.elapsed());
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async { broker.admin().get("/v1/secrets").await.ok() });
}

#[test]
fn a_flood_of_idle_connections_is_capped_and_the_broker_keeps_serving() {
    let broker = Broker::start_with(BrokerOptions::args(&[
        "--max-connections",
        "16",
        "--header-timeout",
        "2s",
        "--idle-timeout",
        "2s",
        "--heartbeat",
        "500ms",
    ]));
    let addr = broker.url.trim_start_matches("https://").to_owned();
    // 48 TCP connections that never even start TLS.
    let mut idle: Vec<TcpStream> = (0..48)
        .map(|_| {
            let s = TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(GIVE_UP)).unwrap();
            s
        })
        .collect();
    // Every one is closed by the broker: the extras at once, the others when idle.
    for (i, s) in idle.iter_mut().enumerate() {
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e)
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            other => panic!("connection {i} still open after {GIVE_UP:?}: {other:?}"),
        }
    }
    assert!(
        broker.log_contains("refused a connection: the broker holds its maximum", GIVE_UP),
        "{}",
        broker.log()
    );
    // And the broker serves authenticated requests.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let api = broker.admin();
        let deadline = Instant::now() + GIVE_UP;
        loop {
            let r = api
                .client
                .get(format!("{}/v1/secrets", api.base))
                .bearer_auth(&api.token)
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 200 => break,
                other => assert!(Instant::now() < deadline, "not served again: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// One HTTP/2 frame: 9-byte header (length, type, flags, stream) and payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut frame = len.to_be_bytes()[1..].to_vec();
    frame.extend([kind, flags]);
    frame.extend(stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Reads one frame: (type, flags, stream, payload); `None` when the connection ends.
fn read_h2_frame(tls: &mut Tls) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    tls.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    tls.read_exact(&mut payload).ok()?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some((head[3], head[4], stream, payload))
}

#[test]
fn an_http2_connection_gets_at_most_64_streams_at_once() {
    let broker = Broker::start_with(BrokerOptions::args(&["--body-timeout", "20s"]));
    let mut tls = connect(&broker, b"h2");
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    tls.write_all(&h2_frame(4, 0, 0, &[])).unwrap();
    // The broker's settings: the stream cap, the header list and the window it announces.
    let (kind, _, _, settings) = read_h2_frame(&mut tls).expect("the server's SETTINGS");
    assert_eq!(kind, 4);
    let announced: Vec<(u16, u32)> = settings
        .chunks(6)
        .map(|c| (u16::from_be_bytes([c[0], c[1]]), u32::from_be_bytes([c[2], c[3], c[4], c[5]])))
        .collect();
    assert!(announced.contains(&(3, 64)), "SETTINGS_MAX_CONCURRENT_STREAMS: {announced:?}");
    assert!(announced.contains(&(4, 1024 * 1024)), "SETTINGS_INITIAL_WINDOW_SIZE: {announced:?}");
    assert!(announced.contains(&(6, 16 * 1024)), "SETTINGS_MAX_HEADER_LIST_SIZE: {announced:?}");
    tls.write_all(&h2_frame(4, 1, 0, &[])).unwrap();
    // 100 uploads to the enrollment route that never send their body: each holds a stream.
    // HPACK: POST, https, :path /v1/enroll, :authority x, content-type application/json.
    let mut block = vec![0x83, 0x87, 0x04, 10];
    block.extend_from_slice(b"/v1/enroll");
    block.extend([0x01, 1, b'x', 0x0f, 0x10, 16]);
    block.extend_from_slice(b"application/json");
    for i in 0..100u32 {
        tls.write_all(&h2_frame(1, 0x4, 2 * i + 1, &block)).unwrap();
    }
    // The extra ones are refused (RST_STREAM, REFUSED_STREAM), the connection stays up.
    let mut refused = std::collections::BTreeSet::new();
    while refused.len() < 36 {
        let Some((kind, _, stream, payload)) = read_h2_frame(&mut tls) else { break };
        if kind == 3 && payload == 7u32.to_be_bytes() {
            refused.insert(stream);
        }
        assert_ne!(kind, 7, "GOAWAY: the connection was dropped, not capped");
    }
    assert_eq!(refused.len(), 36, "streams refused: {refused:?}");
    assert!(refused.iter().all(|s| *s > 2 * 63 + 1), "only streams past the 64th: {refused:?}");
}

/// The HTTP/2 variant: connections that open 4 enrollment streams each and push
/// megabytes into them. Each stream is refused past its 16 KiB (RST_STREAM), a client that
/// ignores flow control loses its connection, and the broker holds little meanwhile.
#[test]
fn http2_enrollment_uploads_are_refused_and_hold_little() {
    let broker = Broker::start();
    let pid = broker.pid().unwrap();
    let rss_before = vm_rss_kib(pid);
    let mut block = vec![0x83, 0x87, 0x04, 10];
    block.extend_from_slice(b"/v1/enroll");
    block.extend([0x01, 1, b'x', 0x0f, 0x10, 16]);
    block.extend_from_slice(b"application/json");
    let mut threads = Vec::new();
    for _ in 0..8 {
        let mut tls = connect(&broker, b"h2");
        let block = block.clone();
        threads.push(std::thread::spawn(move || {
            tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
            tls.write_all(&h2_frame(4, 0, 0, &[])).unwrap();
            let chunk = vec![b' '; 16 * 1024];
            let mut sent = 0usize;
            'streams: for stream in [1u32, 3, 5, 7] {
                if tls.write_all(&h2_frame(1, 0x4, stream, &block)).is_err() {
                    break;
                }
                // 8 MiB per stream, far past its limit and past the flow-control windows.
                for _ in 0..512 {
                    if tls.write_all(&h2_frame(0, 0, stream, &chunk)).is_err() {
                        break 'streams;
                    }
                    sent += chunk.len();
                }
            }
            let mut refused = 0;
            let mut closed = false;
            while refused < 4 {
                match read_h2_frame(&mut tls) {
                    Some((3, _, _, _)) => refused += 1,
                    Some((7, ..)) | None => {
                        closed = true;
                        break;
                    }
                    Some(_) => {}
                }
            }
            (sent, refused, closed)
        }));
    }
    for t in threads {
        let (sent, refused, closed) = t.join().unwrap();
        assert!(refused == 4 || closed, "sent {sent} bytes: {refused} streams refused");
    }
    let rss_after = vm_rss_kib(pid);
    println!("broker VmRSS: {rss_before} KiB before, {rss_after} KiB after the flood");
    assert!(
        rss_after < rss_before + 50 * 1024,
        "the broker grew from {rss_before} KiB to {rss_after} KiB"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async { broker.admin().get("/v1/secrets").await.ok() });
}

#[tokio::test(flavor = "multi_thread")]
async fn early_errors_over_http2_are_json_every_time() {
    let broker = Broker::start();
    let ca = reqwest::Certificate::from_pem(broker.ca_pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .http2_prior_knowledge()
        .timeout(GIVE_UP)
        .build()
        .unwrap();
    for i in 0..40 {
        // Bodies of several sizes: small ones, and larger than a flow-control window.
        let body = vec![b'x'; [2, 4096, 70_000, 300_000, 2_000_000][i % 5]];
        let r = client
            .post(format!("{}/v1/secrets", broker.url))
            .bearer_auth(&broker.admin_token)
            .header("content-type", "text/plain")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("try {i}: {e:?}"));
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 415, "try {i}");
        let body: Value = r.json().await.unwrap_or_else(|e| panic!("try {i}: {e:?}"));
        assert_eq!(body["error"], "malformed_json", "try {i}");
    }
}

/// The same over curl (nghttp2), which reported the reset stream ("Stream error in the HTTP/2
/// framing layer") for bodies of about 100 KiB when the broker answered before reading them.
#[test]
fn early_errors_over_http2_are_json_every_time_for_curl() {
    let broker = Broker::start();
    let tmp = temp_dir("maestro-h2-");
    let body = tmp.path().join("body");
    for i in 0..40 {
        std::fs::write(&body, vec![b'x'; 100_000 + i * 1000]).unwrap();
        // The token goes to curl on its standard input (`-H @-`), never in its argv.
        let mut curl = Command::new("curl")
            .args(["-sS", "--http2", "--max-time", "60", "--cacert"])
            .arg(broker.ca_path())
            .args(["-H", "@-", "-H", "content-type: text/plain", "--data-binary"])
            .arg(format!("@{}", body.display()))
            .args(["-w", "\n%{http_code} %{http_version}"])
            .arg(format!("{}/v1/secrets", broker.url))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("curl runs (scripts/test.sh installs it)");
        let header = format!("authorization: Bearer {}\n", broker.admin_token);
        std::io::Write::write_all(&mut curl.stdin.take().unwrap(), header.as_bytes()).unwrap();
        let out = curl.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "try {i}: curl failed: {stderr}");
        let (json, status) = stdout.rsplit_once('\n').unwrap();
        assert_eq!(status, "415 2", "try {i}: {stdout}");
        let body: Value = serde_json::from_str(json).unwrap();
        assert_eq!(body["error"], "malformed_json", "try {i}");
    }
}

#[test]
fn the_broker_is_not_dumpable_and_has_no_core_limit() {
    // As root (the fixture): not dumpable, core limit 0, memory locked.
    let broker = Broker::start();
    let pid = broker.pid().unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
    assert_eq!(core.split_whitespace().collect::<Vec<_>>()[4..6], ["0", "0"], "{core}");
    assert!(broker.log_contains("memory locked (mlockall)", GIVE_UP), "{}", broker.log());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let locked: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(locked > 0, "VmLck is {locked} kB");

    // As an ordinary user: the kernel makes its /proc files root's (not the user's), so
    // another process of that user can neither read its memory nor its environment.
    let tmp = temp_dir("maestro-dumpable-");
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for dir in [tmp.path(), data.as_path()] {
        nix::unistd::chown(dir, Some(1000.into()), Some(1000.into())).unwrap();
    }
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=1000", "--regid=1000", "--clear-groups", "--"])
        .arg(bin("maestro-broker"))
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("MAESTRO_MASTER_KEY")
        .env("RUST_LOG", "info");
    let mut child = ChildGuard::spawn("maestro-broker (uid 1000)", cmd);
    let listening = child.wait_for_stdout(GIVE_UP, |l| l.contains("listening on"));
    assert!(listening.is_some(), "{}", child.log());
    let pid = child.pid().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.lines().any(|l| l.starts_with("Uid:\t1000")), "{status}");
    for file in ["environ", "mem", "maps"] {
        let meta = std::fs::metadata(format!("/proc/{pid}/{file}")).unwrap();
        assert_eq!(meta.uid(), 0, "/proc/{pid}/{file} belongs to uid {}", meta.uid());
    }
    let read = Command::new("setpriv")
        .args(["--reuid=1000", "--regid=1000", "--clear-groups", "--", "cat"])
        .arg(format!("/proc/{pid}/environ"))
        .output()
        .unwrap();
    assert!(!read.status.success(), "uid 1000 read the broker's environment");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
    assert_eq!(core.split_whitespace().collect::<Vec<_>>()[4..6], ["0", "0"], "{core}");
    child.terminate(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_and_history_page_instead_of_truncating() {
    let broker = Broker::start();
    let api = broker.admin();
    api.add_generic("PAGED", &[("PAGED_VAR", "v")]).await.ok();
    for i in 0..6 {
        api.patch("/v1/secrets/PAGED", json!({"description": format!("edit {i}")})).await.ok();
    }
    let all = api.get("/v1/audit").await.ok();
    let all = all.as_array().unwrap().clone();
    assert_eq!(all.len(), 7);
    let seqs: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();

    // The newest three, then the three before them, with the cursor the broker names.
    let page = api.client.get(format!("{}/v1/audit?limit=3", api.base)).bearer_auth(&api.token);
    let r = page.send().await.unwrap();
    let next: i64 = r.headers()["maestro-next-before"].to_str().unwrap().parse().unwrap();
    let first: Vec<Value> = r.json().await.unwrap();
    assert_eq!(first, all[4..]);
    assert_eq!(next, seqs[4]);
    let second = api.get(&format!("/v1/audit?limit=3&before={next}")).await.ok();
    assert_eq!(second.as_array().unwrap(), &all[1..4]);
    let history = api.get(&format!("/v1/secrets/PAGED/history?limit=2&before={}", seqs[3])).await;
    assert_eq!(history.ok().as_array().unwrap(), &all[1..3]);
    api.get("/v1/audit?limit=0").await.expect_error(400, "bad_request");
    api.get("/v1/audit?limit=10001").await.expect_error(400, "bad_request");
    api.get("/v1/audit?before=x").await.expect_error(400, "bad_request");
    api.get("/v1/audit?offset=3").await.expect_error(400, "bad_request");

    // The CLI: the same listing by default, a page with --limit/--before, everything with --all.
    let token = broker.admin_token.clone();
    let default = broker.maestro(&token, &["audit", "--json"]).ok().json();
    assert_eq!(default.as_array().unwrap(), &all);
    let page = broker.maestro(&token, &["audit", "--json", "--limit", "2"]).ok().json();
    assert_eq!(page.as_array().unwrap(), &all[5..]);
    let before = seqs[5].to_string();
    let args = ["audit", "--json", "--limit", "2", "--before", before.as_str()];
    let page = broker.maestro(&token, &args).ok().json();
    assert_eq!(page.as_array().unwrap(), &all[3..5]);
    let every = broker.maestro(&token, &["audit", "--json", "--all"]).ok().json();
    assert_eq!(every.as_array().unwrap(), &all);
    let history = broker.maestro(&token, &["secrets", "history", "PAGED", "--json", "--all"]);
    assert_eq!(history.ok().json().as_array().unwrap(), &all);
    let out = broker.maestro(&token, &["audit", "--all", "--limit", "3"]);
    assert_ne!(out.status, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn coalesced_reports_are_stored_whole_and_shown_escaped() {
    let broker = Broker::start();
    let api = broker.admin();
    api.add_generic("SHOWN", &[("SHOWN_VAR", "v")]).await.ok();
    let (session, token) = api.new_session(json!({})).await;
    api.activate(&session, &["SHOWN"]).await.ok();
    let agent = TestAgent::enroll(&broker, &token).await.unwrap();
    let first = now_rfc3339();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let last = now_rfc3339();
    // A command name that reverses what follows it (U+202E) and recolours a terminal.
    let command = "evil\u{202e}gpj.exe\x1b[31m";
    let r = agent
        .post(
            "/v1/agent/usage",
            json!({"reports": [{"secret": "SHOWN", "action": "file_read", "at": first,
                "pid": 77, "uid": 1000, "command": command, "detail": "SHOWN_VAR\u{200b}",
                "count": 5, "last_at": last, "exe": "/tmp/evil\u{202e}gpj.exe",
                "claimed_command": "make"}]}),
        )
        .await
        .unwrap();
    assert_eq!(r.ok()["accepted"], 1);

    // Stored whole: the count, the last time, the executable and the claimed name.
    let history = api.get("/v1/secrets/SHOWN/history").await.ok();
    let read = history.as_array().unwrap().iter().find(|e| e["action"] == "file_read").unwrap();
    assert_eq!(read["count"], 5);
    assert_eq!(read["last_at"], last.as_str());
    assert_eq!(read["at"], first.as_str());
    assert_eq!(read["exe"], "/tmp/evil\u{202e}gpj.exe");
    assert_eq!(read["claimed_command"], "make");
    // The last use is the last of the coalesced ones.
    assert_eq!(api.get("/v1/secrets/SHOWN").await.ok()["last_used_at"], last.as_str());
    // A last_at before at is refused.
    let r = agent
        .post(
            "/v1/agent/usage",
            json!({"reports": [{"secret": "SHOWN", "action": "file_read", "at": last,
                "pid": 77, "uid": 1000, "command": "cat", "detail": null, "last_at": first}]}),
        )
        .await
        .unwrap();
    r.expect_error(400, "bad_request");

    // Shown escaped: no raw override, zero-width space or escape reaches the terminal.
    for args in [&["audit"][..], &["secrets", "history", "SHOWN"][..]] {
        let out = broker.maestro(&broker.admin_token, args).ok();
        let text = out.stdout;
        for raw in ['\u{202e}', '\u{200b}', '\x1b'] {
            assert!(!text.contains(raw), "{args:?} printed {raw:?} raw:\n{text}");
        }
        assert!(text.contains("evil\\u{202e}gpj.exe"), "{args:?}:\n{text}");
        assert!(text.contains("SHOWN_VAR\\u{200b}"), "{args:?}:\n{text}");
        assert!(text.contains("exe /tmp/evil\\u{202e}gpj.exe; claimed make"), "{args:?}:\n{text}");
        assert!(text.contains("file_read (5x until"), "{args:?}:\n{text}");
    }
}

/// The web UI's display of text: every text node and `textContent` that can carry data goes
/// through `shown`, which escapes control and format characters; run with Node (which
/// `scripts/test.sh` has for the OAuth tests) on the function as the script defines it.
#[test]
fn the_web_ui_shows_control_and_format_characters_escaped() {
    // Every module of the client, in one text.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../broker/ui/js");
    let mut modules: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    modules.sort();
    let script: String =
        modules.iter().map(|p| std::fs::read_to_string(p).unwrap() + "\n").collect();
    let util = std::fs::read_to_string(dir.join("util.js")).unwrap();
    let start = util.find("export const HIDDEN = ").expect("the HIDDEN pattern") + "export ".len();
    let end = start + util[start..].find("\n}\n").expect("the end of shown()") + 3;
    let code = format!(
        "{}\nprocess.stdout.write(shown(process.argv[1]));",
        util[start..end].replace("export function", "function")
    );
    let out = Command::new("node")
        .args(["-e", &code, "evil\u{202e}gpj.exe\x1b[31m zero\u{200b}width é \\u{41}"])
        .output()
        .expect("node runs (scripts/test.sh needs it for the OAuth tests)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "evil\\u{202e}gpj.exe\\u{1b}[31m zero\\u{200b}width é \\u{41}"
    );
    // Text reaches the page only through it.
    assert!(script.contains("parent.appendChild(document.createTextNode(shown(child)))"));
    assert!(script.contains("else if (key === 'text') el.textContent = shown(value);"));
    for line in script.lines().filter(|l| l.contains(".textContent = ")) {
        let value = line.split(".textContent = ").nth(1).unwrap().trim();
        // A statement over several lines builds fixed help text; a literal holds no data.
        let fixed = !value.ends_with(';')
            || value.starts_with('\'')
            || (value.starts_with('`') && !value.contains("${"));
        assert!(value.starts_with("shown(") || fixed, "text set without shown(): {line}");
    }
}

/// Migration 3 on a PostgreSQL database written before it (schema 2, made here by taking its
/// columns and index back out): the renewed session keeps its newest certificate only, and
/// the old records read back as one use each.
#[tokio::test(flavor = "multi_thread")]
async fn migration_3_upgrades_an_existing_postgres_database() {
    let Some(pg) = maestro_tests::pg::Postgres::start() else { return };
    let db = pg.create_database("maestro_upgrade");
    let options = db.broker_options();
    let mut broker = Broker::start_with(options.clone());
    let api = broker.admin();
    api.add_generic("OLD", &[("OLD_VAR", "v")]).await.ok();
    let (session, token) = api.new_session(json!({})).await;
    api.activate(&session, &["OLD"]).await.ok();
    let mut first = TestAgent::enroll(&broker, &token).await.unwrap();
    // A later second, so that the newest certificate is the renewed one by its issue time.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (csr, key) = new_csr(&CertificateParams::default());
    let renewed = first.post("/v1/agent/renew", json!({"csr_pem": csr})).await.unwrap().ok();
    let before = api.get("/v1/audit").await.ok();
    broker.stop();

    let downgrade = "ALTER TABLE sessions DROP COLUMN cert_serial, DROP COLUMN previous_serial, \
                     DROP COLUMN previous_until; DROP INDEX audit_session; \
                     ALTER TABLE audit DROP COLUMN use_count, DROP COLUMN last_at, \
                     DROP COLUMN exe, DROP COLUMN claimed_command; \
                     ALTER TABLE secrets DROP COLUMN exposure, DROP COLUMN hosts; \
                     DROP INDEX IF EXISTS audit_owner_secret_name, audit_owner_session, \
                     audit_owner_action, audit_owner_command, audit_usage; \
                     ALTER TABLE secrets DROP COLUMN compromised_at; \
                     DROP TABLE alerts, alert_seen, alert_profiles, alert_secret_settings, \
                     alert_user_settings; DROP FUNCTION maestro_drop_old_webhook_key; \
                     DROP INDEX audit_secret_at; ALTER TABLE sessions DROP COLUMN decoys; \
                     UPDATE users SET token_hash = (SELECT t.token_hash FROM api_tokens t \
                         WHERE t.user_id = users.id AND t.name = 'initial'); \
                     DROP TABLE api_tokens, service_accounts; \
                     ALTER TABLE users DROP COLUMN disabled_at; \
                     DROP INDEX activations_expiry; ALTER TABLE activations DROP COLUMN expires_at; \
                     ALTER TABLE secrets DROP COLUMN activation_default, \
                     DROP COLUMN activation_max, DROP COLUMN rotate_every, \
                     DROP COLUMN value_changed_at; \
                     DROP TABLE team_members, teams; ALTER TABLE users DROP COLUMN kind; \
                     UPDATE maestro_schema SET version = 2;";
    let out = pg.psql(&db.name, downgrade);
    assert_eq!(out.status, 0, "{}", out.stderr);
    broker.start_again(&options);
    assert_eq!(
        pg.psql(&db.name, "SELECT MAX(version) FROM maestro_schema").stdout.trim(),
        maestro_broker::store::pg_schema::latest().to_string()
    );

    // The old records read back unchanged; the secret from before sealed secrets is plain
    // (migration 4); the renewed certificate works, the first does not.
    assert_eq!(broker.admin().get("/v1/audit").await.ok(), before);
    let old = broker.admin().get("/v1/secrets/OLD").await.ok();
    assert_eq!(
        (old["exposure"].as_str(), old["hosts"].as_array().map(Vec::len)),
        (Some("plain"), Some(0))
    );
    let newest =
        client_with_identity(&broker.ca_pem(), renewed["cert_pem"].as_str().unwrap(), &key);
    let r = newest.get(format!("{}/v1/agent/secrets", broker.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    first.rebase(&broker.url);
    first.get("/v1/agent/secrets").await.unwrap().expect_error(401, "unauthorized");
}
