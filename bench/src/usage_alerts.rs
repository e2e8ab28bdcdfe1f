//! Part of row 4: what the unusual-usage rules (issue 12) cost usage ingestion. An agent's
//! batch of 1,000 usage records (file reads of one secret by 40 commands, as a busy sandbox
//! sends them once a second) is posted over mTLS and timed; the reference is the same batch as
//! `denied` records, which are stored the same way but not judged by the rules.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use time::format_description::well_known::Rfc3339;

use crate::report::{Figure, Row, Spread, Unit, format_seconds};
use crate::stats::Summary;

/// Records in one batch (the agent's batch size).
const BATCH: usize = 1000;

fn batch(secret: &str, action: &str, round: usize) -> anyhow::Result<serde_json::Value> {
    let at = time::OffsetDateTime::now_utc().format(&Rfc3339).context("formatting the time")?;
    let reports: Vec<serde_json::Value> = (0..BATCH)
        .map(|i| {
            serde_json::json!({"secret": secret, "action": action, "at": at,
                "pid": 10_000 + i, "uid": 1000, "command": format!("tool{}", (i + round) % 40),
                "detail": "BENCH_FETCH_VAR"})
        })
        .collect();
    Ok(serde_json::json!({"reports": reports, "sandbox_uid": 1000}))
}

/// Posts `rounds` batches; the time of each.
async fn post_batches(
    client: &reqwest::Client,
    base: &str,
    secret: &str,
    action: &str,
    rounds: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let body = batch(secret, action, round)?;
        let started = Instant::now();
        let response = client
            .post(format!("{base}/v1/agent/usage"))
            .json(&body)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .context("posting a usage batch")?;
        times.push(started.elapsed());
        if !response.status().is_success() {
            bail!("the broker refused a usage batch: {}", response.status());
        }
    }
    Ok(times)
}

/// The row: `uses` posts through a session where `secret` is active, `denials` through
/// another (each session has its own usage quota).
pub async fn row(
    uses: &reqwest::Client,
    denials: &reqwest::Client,
    base: &str,
    secret: &str,
    quick: bool,
) -> anyhow::Result<Row> {
    let rounds = if quick { 8 } else { 20 };
    // Alternated, so that both see the same machine.
    let mut judged = Vec::new();
    let mut plain = Vec::new();
    for _ in 0..rounds / 4 {
        judged.extend(post_batches(uses, base, secret, "file_read", 4).await?);
        plain.extend(post_batches(denials, base, secret, "denied", 4).await?);
    }
    let judged = Summary::of_durations(&judged).context("no samples")?;
    let plain = Summary::of_durations(&plain).context("no samples")?;
    Ok(Row::new(
        "broker.usage.alerts",
        "Broker",
        Figure::new(
            format!("a usage batch of {BATCH} file reads (40 commands) stored and judged by the alert rules"),
            Unit::Seconds,
            judged,
        ),
        Spread::P99,
        Some(Figure::new(
            "the same batch as `denied` records (stored, not judged)",
            Unit::Seconds,
            plain,
        )),
    )
    .note(format!("per record: {}", format_seconds(judged.median / BATCH as f64))))
}
