//! Row 4, the broker: secret-material fetches per second and their latency over mTLS while 100
//! and 1,000 agents' event streams are held open (10,000 too in a full run), enrollments (CSR
//! signing) per second, broker memory per open event stream, and what the alert rules cost a
//! usage batch ([`crate::usage_alerts`]).
//!
//! Everything runs on loopback against a broker of its own, with its data directory on the
//! disk. Every stream is its own TCP connection with its own session certificate, enrolled
//! through the real broker. Every loop is bounded in count and in time.
//!
//! References, measured in the same run:
//! * fetches: `GET /healthz` from the same clients, at the same concurrency (TLS and HTTP only);
//! * enrollments: signing the same kind of CSR in this process, one thread (the signature alone);
//! * memory: an idle keep-alive mTLS connection (the connection alone, without its stream).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{StreamExt, TryStreamExt};
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, SanType,
};
use rustls::ClientConfig;

use crate::Settings;
use crate::fixture::{Bins, BrokerProc, UserApi, dummy_value, mtls_client, new_csr, work_dir};
use crate::mtls::{HeldStream, Identity, IdleConnection, client_config};
use crate::report::{Figure, Row, Spread, Unit, format_bytes, format_seconds, format_value};
use crate::stats::Summary;

const SECTION: &str = "Broker";
/// Requests in flight while sessions are created and agents enroll (as many agents starting).
const SETUP_CONCURRENCY: usize = 8;
/// Connections opened at once while streams are set up.
const OPEN_CONCURRENCY: usize = 64;
/// Fetching agents, each with its own certificate and connection, one request at a time.
const FETCH_CLIENTS: usize = 16;
/// Upper bound of requests per client in one timed run (the time bound usually ends it first).
const MAX_REQUESTS_PER_CLIENT: usize = 200_000;
/// Idle connections opened for the memory reference.
const IDLE_CONNECTIONS: usize = 1000;
/// CSRs signed in-process for the enrollment reference.
const REFERENCE_SIGNATURES: usize = 500;
const SECRET: &str = "BENCH_FETCH";
const FETCH_RATE_TARGET: f64 = 5000.0;
const FETCH_P99_LIMIT: f64 = 0.020;
const STREAMS_TARGET: f64 = 10_000.0;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// What one timed request loop measured.
struct Load {
    rate: f64,
    latency: Summary,
}

/// `FETCH_CLIENTS` clients each sending `GET path` back to back for `duration`.
async fn load(
    clients: &[reqwest::Client],
    base: &str,
    path: &str,
    duration: Duration,
) -> anyhow::Result<Load> {
    let url = format!("{base}{path}");
    // A short warm-up: connections and handshakes are not what is measured.
    let warm = Instant::now() + Duration::from_millis(300);
    let deadline = warm + duration;
    let tasks: Vec<_> = clients
        .iter()
        .map(|client| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                for _ in 0..MAX_REQUESTS_PER_CLIENT {
                    let start = Instant::now();
                    if start >= deadline {
                        break;
                    }
                    let response = client.get(&url).send().await.context("a request failed")?;
                    let status = response.status();
                    let body = response.bytes().await.context("an answer was cut")?;
                    if !status.is_success() {
                        bail!("GET {url}: {status}: {}", String::from_utf8_lossy(&body));
                    }
                    if start >= warm {
                        samples.push(start.elapsed());
                    }
                }
                Ok::<_, anyhow::Error>(samples)
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.context("a load task panicked")??);
    }
    let measured = Instant::now().saturating_duration_since(warm).as_secs_f64();
    let latency = Summary::of_durations(&all).context("no request was measured")?;
    Ok(Load { rate: all.len() as f64 / measured, latency })
}

/// Creates `count` sessions and enrolls an agent identity for each; returns the identities and
/// the enrollment latencies and rate.
async fn enroll_all(api: &UserApi, count: usize) -> anyhow::Result<(Vec<Identity>, Summary, f64)> {
    let sessions: Vec<_> = futures_util::stream::iter(0..count)
        .map(|_| api.new_session("bench-broker"))
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect()
        .await?;
    let csrs = tokio::task::spawn_blocking(move || {
        (0..count).map(|_| new_csr()).collect::<anyhow::Result<Vec<_>>>()
    })
    .await
    .context("the CSR thread panicked")??;
    let start = Instant::now();
    let enrolled: Vec<(Identity, Duration)> =
        futures_util::stream::iter(sessions.into_iter().zip(csrs))
            .map(|(created, (csr, key))| async move {
                let t = Instant::now();
                let issued = api.enroll(&created.enrollment_token, &csr).await?;
                Ok::<_, anyhow::Error>((
                    Identity {
                        session_id: issued.session_id,
                        cert_pem: issued.cert_pem,
                        key_pem: key,
                    },
                    t.elapsed(),
                ))
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .try_collect()
            .await?;
    let rate = count as f64 / start.elapsed().as_secs_f64();
    let latencies: Vec<Duration> = enrolled.iter().map(|(_, d)| *d).collect();
    let latency = Summary::of_durations(&latencies).context("no enrollment was measured")?;
    Ok((enrolled.into_iter().map(|(i, _)| i).collect(), latency, rate))
}

/// Signs `REFERENCE_SIGNATURES` CSRs in this process the way the broker's CA does; signatures
/// per second.
fn reference_signing() -> anyhow::Result<f64> {
    let ca_key = KeyPair::generate().context("cannot generate a CA key")?;
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    let issuer = Issuer::new(ca_params, ca_key);
    let csrs = (0..REFERENCE_SIGNATURES).map(|_| new_csr()).collect::<anyhow::Result<Vec<_>>>()?;
    let start = Instant::now();
    for (i, (csr, _)) in csrs.iter().enumerate() {
        let csr = CertificateSigningRequestParams::from_pem(csr).context("a CSR does not parse")?;
        let mut params = CertificateParams::default();
        let uri = maestro_wire::session_uri(&format!("reference-{i}"));
        params.subject_alt_names =
            vec![SanType::URI(uri.as_str().try_into().context("bad URI SAN")?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.signed_by(&csr.public_key, &issuer).context("cannot sign")?;
    }
    Ok(REFERENCE_SIGNATURES as f64 / start.elapsed().as_secs_f64())
}

/// Opens streams for `identities` (those not open yet), `OPEN_CONCURRENCY` at a time.
async fn open_streams(
    addr: SocketAddr,
    configs: &[Arc<ClientConfig>],
) -> anyhow::Result<Vec<HeldStream>> {
    futures_util::stream::iter(configs.iter().cloned())
        .map(|config| HeldStream::open(addr, config))
        .buffer_unordered(OPEN_CONCURRENCY)
        .try_collect()
        .await
}

/// The broker's RSS once it has settled (allocations of the last burst done).
async fn settled_rss(broker: &BrokerProc) -> anyhow::Result<u64> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.proc.rss_bytes()
}

pub async fn run(settings: &Settings, bins: &Bins) -> anyhow::Result<Vec<Row>> {
    let dir = work_dir("maestro-bench-broker-")?;
    let broker = BrokerProc::start(bins, dir.path(), &[])?;
    let api = broker.api()?;
    let addr: SocketAddr = broker
        .url
        .trim_start_matches("https://")
        .parse()
        .context("the broker's URL is not IP:port")?;
    api.add_generic(SECRET, "BENCH_FETCH_VAR", dummy_value(0)).await?;
    let levels: &[usize] = if settings.quick { &[100, 1000] } else { &[100, 1000, 10_000] };
    let total = levels.iter().copied().max().unwrap_or(1000);

    let (identities, enroll_latency, enroll_rate) = enroll_all(&api, total).await?;
    let sign_rate = tokio::task::spawn_blocking(reference_signing)
        .await
        .context("the signing thread panicked")??;
    let fetchers = &identities[..FETCH_CLIENTS];
    for identity in fetchers {
        api.activate(&identity.session_id, &[SECRET.to_owned()]).await?;
    }
    let clients = fetchers
        .iter()
        .map(|i| mtls_client(&broker.ca_pem, &i.cert_pem, &i.key_pem))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let configs = identities
        .iter()
        .map(|i| client_config(&broker.ca_pem, i))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let duration = if settings.quick { Duration::from_secs(3) } else { Duration::from_secs(10) };

    let mut rows = vec![
        Row::new(
            "broker.enroll",
            SECTION,
            Figure::new(
                format!("enrollments (CSR signing), {SETUP_CONCURRENCY} at a time, {total} agents"),
                Unit::PerSecond,
                Summary::of(&[enroll_rate]).context("no rate")?,
            ),
            Spread::Note,
            Some(Figure::new(
                "signing alone, in-process, 1 thread",
                Unit::PerSecond,
                Summary::of(&[sign_rate]).context("no rate")?,
            )),
        )
        .note(format!(
            "latency median {}, p99 {}",
            format_seconds(enroll_latency.median),
            format_seconds(enroll_latency.p99)
        )),
    ];

    // What the unusual-usage rules cost ingestion (issue 12).
    rows.push(
        crate::usage_alerts::row(&clients[0], &clients[1], &broker.url, SECRET, settings.quick)
            .await?,
    );

    let baseline = settled_rss(&broker).await?;
    let mut streams: Vec<HeldStream> = Vec::new();
    let mut rss_at_top = baseline;
    for &level in levels {
        let more = open_streams(addr, &configs[streams.len()..level]).await?;
        streams.extend(more);
        rss_at_top = settled_rss(&broker).await?;
        if level > 1000 {
            continue;
        }
        let fetch =
            load(&clients, &broker.url, &format!("/v1/agent/secrets/{SECRET}"), duration).await?;
        let health = load(&clients, &broker.url, "/healthz", duration).await?;
        let met = fetch.rate >= FETCH_RATE_TARGET && fetch.latency.p99 < FETCH_P99_LIMIT;
        rows.push(
            Row::new(
                &format!("broker.fetch.{level}"),
                SECTION,
                Figure::new(
                    format!("secret fetches over mTLS, {FETCH_CLIENTS} agents fetching, {level} event streams open"),
                    Unit::PerSecond,
                    Summary::of(&[fetch.rate]).context("no rate")?,
                ),
                Spread::Note,
                Some(Figure::new(
                    "`GET /healthz`, same clients",
                    Unit::PerSecond,
                    Summary::of(&[health.rate]).context("no rate")?,
                )),
            )
            .note(format!(
                "latency median {}, p99 {}",
                format_seconds(fetch.latency.median),
                format_seconds(fetch.latency.p99)
            ))
            .target(
                "≥ 5,000/s, p99 < 20 ms",
                format!("{}, p99 {}", format_value(fetch.rate, Unit::PerSecond), format_seconds(fetch.latency.p99)),
                met,
            ),
        );
    }
    let top = streams.len();
    let per_stream = (rss_at_top.saturating_sub(baseline)) as f64 / top as f64;

    let idle_configs = &configs[..IDLE_CONNECTIONS.min(configs.len())];
    let before_idle = broker.proc.rss_bytes()?;
    let idle: Vec<IdleConnection> = futures_util::stream::iter(idle_configs.iter().cloned())
        .map(|config| IdleConnection::open(addr, config))
        .buffer_unordered(OPEN_CONCURRENCY)
        .try_collect()
        .await?;
    let after_idle = settled_rss(&broker).await?;
    let per_idle = (after_idle.saturating_sub(before_idle)) as f64 / idle.len() as f64;
    drop(idle);
    drop(streams);

    let projected = per_stream * STREAMS_TARGET + baseline as f64;
    let (figure, met) = if top as f64 >= STREAMS_TARGET {
        (
            format!("{} with {top} streams", format_bytes(rss_at_top as f64)),
            (rss_at_top as f64) < GIB,
        )
    } else {
        (format!("{} projected from {top} streams", format_bytes(projected)), projected < GIB)
    };
    rows.push(
        Row::new(
            "broker.memory_per_stream",
            SECTION,
            Figure::new(
                format!(
                    "broker memory per open event stream ({top} streams; RSS {} → {})",
                    format_bytes(baseline as f64),
                    format_bytes(rss_at_top as f64)
                ),
                Unit::Bytes,
                Summary::of(&[per_stream]).context("no figure")?,
            ),
            Spread::Note,
            Some(Figure::new(
                format!("an idle keep-alive mTLS connection ({} held)", idle_configs.len()),
                Unit::Bytes,
                Summary::of(&[per_idle]).context("no figure")?,
            )),
        )
        .note("one figure: RSS growth over the streams opened".to_owned())
        .target("10,000 streams < 1 GiB", figure, met),
    );
    drop(broker);
    Ok(rows)
}
