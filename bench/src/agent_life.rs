//! Row 5, the agent: resident memory with 100 active secrets, time from start to ready
//! (enroll, fetch, mount) on loopback, and session-end teardown time.
//!
//! References, measured in the same tries:
//! * memory: an agent of a session with no active secret;
//! * ready: one enrollment made by this process over a fresh TLS connection (key, CSR, signed
//!   certificate), the part of start-up no agent can skip;
//! * teardown: the broker's `ended` event reaching a bare mTLS event stream (both timed from the
//!   end call being sent), the part of teardown that is the broker's and the network's.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::Settings;
use crate::fixture::{AgentProc, UserApi, is_mounted, new_csr, write_bundle};
use crate::mtls::{HeldStream, Identity, client_config};
use crate::report::{Figure, Row, Spread, Unit, format_bytes, format_seconds};
use crate::sandbox::{SECRETS, Sandbox, secret_name};
use crate::stats::Summary;

const SECTION: &str = "Agent";
const RSS_LIMIT: f64 = 15.0 * 1024.0 * 1024.0;
const READY_LIMIT: f64 = 0.200;
const TEARDOWN_LIMIT: f64 = 0.200;
/// How long an agent runs after saying it is ready before its memory is read, so start-up
/// work (first usage reports, lazily made buffers) is counted.
const SETTLE: Duration = Duration::from_millis(300);

/// One agent on a new session with `names` active: (ready time, RSS, teardown time).
async fn one_agent(
    sandbox: &Sandbox,
    dir: &Path,
    names: &[String],
) -> anyhow::Result<(Duration, u64, Duration)> {
    let created = sandbox.api.new_session("bench-agent").await?;
    if !names.is_empty() {
        sandbox.api.activate(&created.session.id, names).await?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let bundle = dir.join("bundle.json");
    write_bundle(&bundle, &sandbox.broker.url, &created)?;
    let start = Instant::now();
    let mut agent = AgentProc::spawn(&sandbox.bins, &bundle, dir)?;
    let ready = agent.wait_ready()? - start;
    let listed = agent.listed()?.len();
    if listed != names.len() {
        bail!("the agent is ready with {listed} secrets, not {}", names.len());
    }
    tokio::time::sleep(SETTLE).await;
    let rss = agent.proc.rss_bytes()?;
    // From the call being sent: the `ended` event may reach the agent before the call returns.
    let ended = Instant::now();
    sandbox.api.end_session(&created.session.id).await?;
    let exited = agent.proc.wait_exit(Duration::from_secs(10), Duration::from_micros(500))?;
    if is_mounted(&agent.mount) {
        bail!("the agent exited but {} is still mounted", agent.mount.display());
    }
    Ok((ready, rss, exited - ended))
}

/// The references: one enrollment over a fresh connection, then the `ended` event's trip.
async fn reference(
    api: &UserApi,
    ca_pem: &str,
    addr: SocketAddr,
) -> anyhow::Result<(Duration, Duration)> {
    let created = api.new_session("bench-reference").await?;
    let start = Instant::now();
    let fresh = api.fresh(ca_pem)?;
    let (csr, key) = new_csr()?;
    let issued = fresh.enroll(&created.enrollment_token, &csr).await?;
    let enrolled = start.elapsed();
    let identity =
        Identity { session_id: issued.session_id, cert_pem: issued.cert_pem, key_pem: key };
    let mut stream = HeldStream::open(addr, client_config(ca_pem, &identity)?).await?;
    let ended = Instant::now();
    api.end_session(&identity.session_id).await?;
    let arrived = stream.wait_ended(Duration::from_secs(10)).await?;
    Ok((enrolled, arrived.saturating_duration_since(ended)))
}

pub async fn run(settings: &Settings, sandbox: &Sandbox) -> anyhow::Result<Vec<Row>> {
    let tries = if settings.quick { 5 } else { 20 };
    let names: Vec<String> = (1..=SECRETS).map(secret_name).collect();
    let addr: SocketAddr = sandbox
        .broker
        .url
        .trim_start_matches("https://")
        .parse()
        .context("the broker's URL is not IP:port")?;
    let (mut ready, mut rss, mut teardown) = (Vec::new(), Vec::new(), Vec::new());
    let (mut empty_rss, mut enroll, mut ended) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..tries {
        let (r, m, t) = one_agent(sandbox, &sandbox.subdir(&format!("life-{i}"))?, &names).await?;
        ready.push(r);
        rss.push(m as f64);
        teardown.push(t);
        let (_, m, _) = one_agent(sandbox, &sandbox.subdir(&format!("empty-{i}"))?, &[]).await?;
        empty_rss.push(m as f64);
        let (e, d) = reference(&sandbox.api, &sandbox.broker.ca_pem, addr).await?;
        enroll.push(e);
        ended.push(d);
    }
    let secs = |v: &[Duration]| Summary::of_durations(v).context("no agent was measured");
    let bytes = |v: &[f64]| Summary::of(v).context("no agent was measured");
    let (rss, ready, teardown) = (bytes(&rss)?, secs(&ready)?, secs(&teardown)?);
    Ok(vec![
        Row::new(
            "agent.rss",
            SECTION,
            Figure::new(
                format!("agent resident memory, {SECRETS} active secrets ({tries} agents)"),
                Unit::Bytes,
                rss,
            ),
            Spread::MinMax,
            Some(Figure::new("agent with no secret", Unit::Bytes, bytes(&empty_rss)?)),
        )
        .target("< 15 MiB", format_bytes(rss.max), rss.max < RSS_LIMIT),
        Row::new(
            "agent.ready",
            SECTION,
            Figure::new(
                format!("agent start → ready (enroll, fetch {SECRETS} secrets, mount)"),
                Unit::Seconds,
                ready,
            ),
            Spread::MinMax,
            Some(Figure::new(
                "one enrollment on a fresh TLS connection",
                Unit::Seconds,
                secs(&enroll)?,
            )),
        )
        .target("< 200 ms", format_seconds(ready.max), ready.max < READY_LIMIT),
        Row::new(
            "agent.teardown",
            SECTION,
            Figure::new(
                "session end (API call sent) → agent exited, mount gone",
                Unit::Seconds,
                teardown,
            ),
            Spread::MinMax,
            Some(Figure::new(
                "the `ended` event reaching a bare mTLS stream",
                Unit::Seconds,
                secs(&ended)?,
            )),
        )
        .target("< 200 ms", format_seconds(teardown.max), teardown.max < TEARDOWN_LIMIT),
    ])
}
