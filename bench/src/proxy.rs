//! Row 6, the sealed-secrets egress proxy: what a request costs through the agent's proxy
//! against the same client calling the same HTTPS stand-in directly, kept alive and on a new
//! connection each time, requests per second both ways, and how soon after a deactivation the
//! proxy stops putting the value into requests.
//!
//! The stand-in is an HTTPS server in this process with a certificate for `api.openai.com` from
//! a CA of its own; the agent reaches it through its test-only upstream override
//! (`--test-only-upstream`). It answers `real` when the request carried the sealed value and
//! `placeholder` otherwise, so each client sees what arrived.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use maestro_wire::sock::{Action, Response as SockResponse};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::Settings;
use crate::fixture::{AgentProc, Bins, BrokerProc, ask, init_crypto, work_dir, write_bundle};
use crate::report::{Figure, Row, Spread, Unit, format_seconds};
use crate::stats::Summary;

const SECTION: &str = "Sealed secrets: the egress proxy";
const HOST: &str = "api.openai.com";
const SECRET: &str = "BENCH_SEALED";
/// The sealed value: the shape of an OpenAI key, so its placeholder has that shape too.
const REAL: &str = "sk-proj-BENCHbenchBENCHbench0123456789abcdefABCDEF";
/// Targets of the issue: added latency at p99.
const KEPT_ALIVE_P99_LIMIT: f64 = 0.001;
const NEW_CONNECTION_P99_LIMIT: f64 = 0.003;
const REVOCATION_P99_LIMIT: f64 = 0.050;
const CHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// The HTTPS stand-in: how many requests carried the real value.
struct StandIn {
    addr: SocketAddr,
    ca_pem: String,
    real_seen: Arc<AtomicU64>,
}

fn test_ca() -> anyhow::Result<(Issuer<'static, KeyPair>, String)> {
    let mut params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "maestro-bench stand-in CA");
    let key = KeyPair::generate().context("cannot make the stand-in CA's key")?;
    let cert = params.self_signed(&key).context("cannot sign the stand-in CA")?;
    let pem = cert.pem();
    Ok((Issuer::new(params, key), pem))
}

async fn start_standin() -> anyhow::Result<StandIn> {
    init_crypto();
    let (issuer, ca_pem) = test_ca()?;
    let key = KeyPair::generate().context("cannot make the stand-in's key")?;
    let cert = CertificateParams::new(vec![HOST.to_owned()])
        .context("stand-in certificate parameters")?
        .signed_by(&key, &issuer)
        .context("cannot sign the stand-in's certificate")?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .context("cannot build the stand-in's TLS configuration")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.context("cannot bind the stand-in")?;
    let addr = listener.local_addr().context("the stand-in has no address")?;
    let real_seen = Arc::new(AtomicU64::new(0));
    let seen = real_seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let real = req
                            .headers()
                            .get(hyper::header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|v| v == format!("Bearer {REAL}"));
                        if real {
                            seen.fetch_add(1, Ordering::Relaxed);
                        }
                        let body = if real { "real" } else { "placeholder" };
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            body,
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(StandIn { addr, ca_pem, real_seen })
}

/// The session's proxy, its CA and the placeholder, as `maestro-exec` would get them.
struct Seen {
    proxy: String,
    ca_pem: String,
    placeholder: String,
}

fn env_of(agent: &AgentProc) -> anyhow::Result<Seen> {
    let vars = match ask(&agent.socket, Action::Env { only: vec![], command: None })? {
        SockResponse::Env { vars, .. } => vars,
        other => bail!("the agent did not give its environment: {other:?}"),
    };
    let var = |name: &str| {
        vars.iter()
            .find(|v| v.name == name)
            .map(|v| v.value.expose().to_owned())
            .ok_or_else(|| anyhow!("the agent's environment has no {name}"))
    };
    let ca_file = var("NODE_EXTRA_CA_CERTS")?;
    Ok(Seen {
        proxy: var("HTTPS_PROXY")?,
        ca_pem: std::fs::read_to_string(&ca_file)
            .with_context(|| format!("cannot read the session CA {ca_file}"))?,
        placeholder: var("OPENAI_API_KEY")?,
    })
}

fn client(
    trust: &str,
    proxy: Option<&str>,
    direct: Option<SocketAddr>,
    keep_alive: bool,
) -> anyhow::Result<reqwest::Client> {
    let ca = reqwest::Certificate::from_pem(trust.as_bytes()).context("a CA PEM is bad")?;
    let mut b = reqwest::Client::builder().tls_certs_only([ca]).timeout(Duration::from_secs(30));
    b = match proxy {
        Some(p) => b.proxy(reqwest::Proxy::all(p).context("the proxy URL is bad")?),
        None => b.no_proxy(),
    };
    if let Some(addr) = direct {
        b = b.resolve(HOST, addr);
    }
    if !keep_alive {
        b = b.pool_max_idle_per_host(0);
    }
    b.build().context("cannot build an HTTPS client")
}

/// One request; what the stand-in saw.
async fn call(client: &reqwest::Client, url: &str, key: &str) -> anyhow::Result<String> {
    let r = client.get(url).bearer_auth(key).send().await.context("a request failed")?;
    let status = r.status();
    let text = r.text().await.context("a response had no body")?;
    if !status.is_success() {
        bail!("the request got {status}: {text}");
    }
    Ok(text)
}

/// `n` requests one after the other; each one's time.
async fn sequential(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    n: usize,
    expect: &str,
) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let seen = call(client, url, key).await?;
        out.push(t.elapsed());
        if seen != expect {
            bail!("the stand-in saw the {seen} value, not the {expect} one");
        }
    }
    Ok(out)
}

/// Requests per second with `streams` requests in flight for `length`.
async fn throughput(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    streams: usize,
    length: Duration,
) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let (client, url, key, done) =
            (client.clone(), url.to_owned(), key.to_owned(), done.clone());
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < length {
                call(&client, &url, &key).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await.context("a load task panicked")??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

fn summary(v: &[Duration]) -> anyhow::Result<Summary> {
    Summary::of_durations(v).context("nothing was measured")
}

/// The proxy's figure minus the direct one, per statistic.
fn added(proxy: &Summary, direct: &Summary) -> (f64, f64) {
    (proxy.median - direct.median, proxy.p99 - direct.p99)
}

pub async fn run(settings: &Settings, bins: &Bins) -> anyhow::Result<Vec<Row>> {
    let standin = start_standin().await?;
    let dir = work_dir("maestro-bench-proxy-")?;
    let ca_file = dir.path().join("standin-ca.pem");
    std::fs::write(&ca_file, &standin.ca_pem).context("cannot write the stand-in's CA")?;
    let broker = BrokerProc::start(bins, dir.path(), &[])?;
    let api = broker.api()?;
    api.post_json(
        "/v1/secrets",
        &serde_json::json!({"name": SECRET, "kind": "openai", "fields": {"api_key": REAL},
                            "exposure": "sealed"}),
    )
    .await?;
    let created = api.new_session("bench-proxy").await?;
    let bundle = dir.path().join("proxy.bundle.json");
    write_bundle(&bundle, &broker.url, &created)?;
    let agent_dir = dir.path().join("agent");
    std::fs::create_dir(&agent_dir).context("cannot create the agent's directory")?;
    let upstream = format!("{HOST}={}", standin.addr);
    let ca_arg = ca_file.to_string_lossy().into_owned();
    let agent = AgentProc::start_with(
        bins,
        &bundle,
        &agent_dir,
        &["--test-only-upstream", &upstream, "--test-only-upstream-ca", &ca_arg],
    )?;
    let session = created.session.id.clone();
    let names = vec![SECRET.to_owned()];
    api.activate(&session, &names).await?;
    agent.wait_listed(1, CHANGE_TIMEOUT)?;
    let seen = env_of(&agent)?;
    let via_url = format!("https://{HOST}/v1/models");
    let direct_url = format!("https://{HOST}:{}/v1/models", standin.addr.port());

    let n = if settings.quick { 300 } else { 2000 };
    let fresh_n = if settings.quick { 100 } else { 400 };
    let via = client(&seen.ca_pem, Some(&seen.proxy), None, true)?;
    let direct = client(&standin.ca_pem, None, Some(standin.addr), true)?;
    // Warm both paths (leaf certificate, pooled upstream connection).
    sequential(&via, &via_url, &seen.placeholder, 20, "real").await?;
    sequential(&direct, &direct_url, REAL, 20, "real").await?;
    let via_kept = summary(&sequential(&via, &via_url, &seen.placeholder, n, "real").await?)?;
    let direct_kept = summary(&sequential(&direct, &direct_url, REAL, n, "real").await?)?;
    let via_new_client = client(&seen.ca_pem, Some(&seen.proxy), None, false)?;
    let direct_new_client = client(&standin.ca_pem, None, Some(standin.addr), false)?;
    let via_new =
        summary(&sequential(&via_new_client, &via_url, &seen.placeholder, fresh_n, "real").await?)?;
    let direct_new =
        summary(&sequential(&direct_new_client, &direct_url, REAL, fresh_n, "real").await?)?;
    let length = Duration::from_secs(if settings.quick { 2 } else { 5 });
    let via_rps = throughput(&via, &via_url, &seen.placeholder, 32, length).await?;
    let direct_rps = throughput(&direct, &direct_url, REAL, 32, length).await?;

    // Revocation: after the deactivate call returns, requests through the proxy until one
    // arrives without the value.
    let tries = if settings.quick { 30 } else { 100 };
    let mut revoke = Vec::with_capacity(tries);
    let mut leaked_after = 0u64;
    for i in 0..tries {
        if i > 0 {
            api.activate(&session, &names).await?;
            agent.wait_listed(1, CHANGE_TIMEOUT)?;
        }
        let seen = env_of(&agent)?;
        // A new client per activation: a connection opened while nothing was sealed is a plain
        // tunnel for its whole life.
        let c = client(&seen.ca_pem, Some(&seen.proxy), None, true)?;
        if call(&c, &via_url, &seen.placeholder).await? != "real" {
            bail!("activation {i}: the proxy did not put the value in");
        }
        api.deactivate(&session, &names).await?;
        let returned = Instant::now();
        loop {
            if call(&c, &via_url, &seen.placeholder).await? == "placeholder" {
                revoke.push(returned.elapsed());
                break;
            }
            leaked_after += 1;
            if returned.elapsed() > CHANGE_TIMEOUT {
                bail!("the proxy still put the value in {CHANGE_TIMEOUT:?} after the deactivation");
            }
        }
    }
    let revoke = summary(&revoke)?;
    let (kept_med, kept_p99) = added(&via_kept, &direct_kept);
    let (new_med, new_p99) = added(&via_new, &direct_new);
    let total = standin.real_seen.load(Ordering::Relaxed);
    drop(agent);
    drop(broker);
    Ok(vec![
        Row::new(
            "proxy.kept_alive",
            SECTION,
            Figure::new(format!("request through the proxy, kept alive ({n} requests)"), Unit::Seconds, via_kept),
            Spread::P99,
            Some(Figure::new("the same client, directly", Unit::Seconds, direct_kept)),
        )
        .target(
            "added p99 < 1 ms",
            format!("added: median {}, p99 {}", format_seconds(kept_med), format_seconds(kept_p99)),
            kept_p99 < KEPT_ALIVE_P99_LIMIT,
        ),
        Row::new(
            "proxy.new_connection",
            SECTION,
            Figure::new(
                format!("request through the proxy, new connection each ({fresh_n} requests)"),
                Unit::Seconds,
                via_new,
            ),
            Spread::P99,
            Some(Figure::new("the same client, directly", Unit::Seconds, direct_new)),
        )
        .target(
            "added p99 < 3 ms",
            format!("added: median {}, p99 {}", format_seconds(new_med), format_seconds(new_p99)),
            new_p99 < NEW_CONNECTION_P99_LIMIT,
        ),
        Row::new(
            "proxy.throughput",
            SECTION,
            Figure::new("requests/s through the proxy, 32 in flight", Unit::PerSecond, Summary::of(&[via_rps]).context("no rate")?),
            Spread::Note,
            Some(Figure::new("directly", Unit::PerSecond, Summary::of(&[direct_rps]).context("no rate")?)),
        )
        .note(format!("ratio {:.2}; the stand-in saw the value {total} times in all", via_rps / direct_rps)),
        Row::new(
            "proxy.revocation",
            SECTION,
            Figure::new(
                format!("deactivate call returned → next request through the proxy without the value ({tries} tries)"),
                Unit::Seconds,
                revoke,
            ),
            Spread::P99,
            None,
        )
        .note(format!("{leaked_after} requests still carried it after the call returned, in all tries"))
        .target(
            "p99 < 50 ms",
            format!("p99 {}", format_seconds(revoke.p99)),
            revoke.p99 < REVOCATION_P99_LIMIT,
        ),
    ])
}
