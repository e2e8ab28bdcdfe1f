//! Row 7, history that scales (issue 12): a secret's usage summary and filtered pages of the
//! audit trail with 1,000,000 records, on SQLite and on PostgreSQL.
//!
//! A broker of its own gets 20 secrets through the API; then 2,000 sessions and the records
//! (spread over 90 days, a dozen commands, some coalesced: `maestro_tests::seed`) are written
//! straight into its database, because the API would take hours to make them. Each figure is
//! the whole HTTPS request through the real broker (query, labels, aggregation, JSON), timed
//! after one warm-up, median of several runs.
//!
//! PostgreSQL: a temporary cluster as the tests run it (`maestro_tests::pg`: Debian's server,
//! `fsync=off`, default memory settings), `ANALYZE`d after the load as autovacuum would. Without
//! the server binaries or root the PostgreSQL rows are skipped with a message.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use maestro_tests::seed::{self, Plan, Seeded};
use sqlx::Connection;

use crate::Settings;
use crate::fixture::{Bins, BrokerProc, UserApi, dummy_value, work_dir};
use crate::report::{Figure, Row, Spread, Unit, format_seconds};
use crate::stats::Summary;

const SECTION: &str = "History";
/// Records seeded in each engine (quick mode: [`QUICK_RECORDS`]).
pub const RECORDS: usize = 1_000_000;
pub const QUICK_RECORDS: usize = 200_000;
const SECRETS: usize = 20;
const SESSIONS: usize = 2000;
const DAYS: i64 = 90;
/// The summary must answer within this at a million records (the figure docs quote).
const SUMMARY_LIMIT: f64 = 1.0;

/// The filtered requests timed besides the summary: (id, what, path after the secret name).
fn queries(secret: &str) -> [(&'static str, String, String); 3] {
    [
        (
            "page_filtered",
            "a filtered page: one secret, one command, last 30 days, 100 records".to_owned(),
            format!("/v1/audit?secret={secret}&command=git&since=30d&limit=100"),
        ),
        (
            "page_label",
            "a page of one session label (10 sessions), 100 records".to_owned(),
            "/v1/audit?session=agent-0100&limit=100".to_owned(),
        ),
        (
            "page_newest",
            "the newest 100 records, no filter".to_owned(),
            "/v1/audit?limit=100".to_owned(),
        ),
    ]
}

/// GET `path`, read the whole answer; its time.
async fn timed_get(api: &UserApi, path: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let bytes = api.get_bytes(path).await?;
    let took = start.elapsed();
    if bytes.is_empty() {
        bail!("GET {path}: an empty answer");
    }
    Ok(took)
}

/// Median of `runs` timed GETs after one warm-up.
async fn measure(api: &UserApi, path: &str, runs: usize) -> anyhow::Result<Summary> {
    timed_get(api, path).await?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        samples.push(timed_get(api, path).await?);
    }
    Summary::of_durations(&samples).context("no runs were measured")
}

/// Makes the secrets through the API.
async fn make_secrets(api: &UserApi) -> anyhow::Result<()> {
    for i in 0..SECRETS {
        api.add_generic(&format!("HIST_{i:02}"), "TOKEN", dummy_value(i)).await?;
    }
    Ok(())
}

/// The plan for the owner of `secrets` (`(id, name)`, read back from the database).
fn plan(owner_id: i64, secrets: Vec<(String, String)>, records: usize) -> anyhow::Result<Plan> {
    if secrets.len() != SECRETS {
        bail!("the broker's database holds {} secrets, not the {SECRETS} made", secrets.len());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    Ok(Plan {
        owner_id,
        secrets,
        sessions: SESSIONS,
        records,
        now: i64::try_from(now).context("the clock is past 2262")?,
        days: DAYS,
    })
}

const OWNER_SQL: &str = "SELECT owner_id FROM secrets LIMIT 1";
const SECRETS_SQL: &str = "SELECT id, name FROM secrets ORDER BY name";

/// The rows of one engine, measured against a broker whose store holds `seeded`.
async fn rows_of(
    engine: &str,
    api: &UserApi,
    seeded: &Seeded,
    seed_time: Duration,
    runs: usize,
) -> anyhow::Result<Vec<Row>> {
    let (secret, want) = seeded
        .expected
        .iter()
        .max_by_key(|(_, e)| e.records)
        .context("the seeding made no uses")?;
    // The summary must be right before it is timed.
    let usage: serde_json::Value =
        serde_json::from_slice(&api.get_bytes(&format!("/v1/secrets/{secret}/usage")).await?)
            .context("the usage summary is not JSON")?;
    if usage["uses"] != want.uses || usage["records"] != want.records {
        bail!(
            "the {engine} summary of {secret} says {} uses in {} records; {} in {} were seeded",
            usage["uses"],
            usage["records"],
            want.uses,
            want.records
        );
    }
    let records = seeded.records;
    let summary = measure(api, &format!("/v1/secrets/{secret}/usage"), runs).await?;
    let mut rows = vec![Row::new(
        &format!("history.{engine}.summary"),
        SECTION,
        Figure::new(
            format!(
                "{engine}: usage summary of the busiest secret ({} records, {} uses, {} sessions) \
                 among {records} records",
                want.records, want.uses, want.sessions
            ),
            Unit::Seconds,
            summary,
        ),
        Spread::MinMax,
        None,
    )
    .note(format!("{runs} runs; seeding took {}", format_seconds(seed_time.as_secs_f64())))
    .target(
        "< 1 s",
        format_seconds(summary.median),
        summary.median < SUMMARY_LIMIT,
    )];
    for (id, what, path) in queries(secret) {
        let figure = measure(api, &path, runs).await?;
        rows.push(
            Row::new(
                &format!("history.{engine}.{id}"),
                SECTION,
                Figure::new(format!("{engine}: {what}"), Unit::Seconds, figure),
                Spread::MinMax,
                None,
            )
            .note(format!("{runs} runs")),
        );
    }
    Ok(rows)
}

/// SQLite: the broker's own file.
async fn sqlite(bins: &Bins, records: usize, runs: usize) -> anyhow::Result<Vec<Row>> {
    let dir = work_dir("maestro-bench-history-")?;
    let broker = BrokerProc::start(bins, dir.path(), &[])?;
    let api = broker.api()?;
    let db = dir.path().join("data").join("maestro.db");
    make_secrets(&api).await?;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{}", db.display()))
        .await
        .context("cannot open the broker's SQLite file")?;
    let owner = sqlx::query_scalar(OWNER_SQL).fetch_one(&mut conn).await?;
    let secrets = sqlx::query_as(SECRETS_SQL).fetch_all(&mut conn).await?;
    conn.close().await.context("cannot close the SQLite file")?;
    let plan = plan(owner, secrets, records)?;
    eprintln!("    seeding {records} records into SQLite");
    let start = Instant::now();
    let seeded = seed::seed_sqlite(&db, &plan).await.context("cannot seed the SQLite file")?;
    let seed_time = start.elapsed();
    rows_of("sqlite", &api, &seeded, seed_time, runs).await
}

/// PostgreSQL: a temporary cluster, `None` when it cannot run here.
async fn postgres(bins: &Bins, records: usize, runs: usize) -> anyhow::Result<Option<Vec<Row>>> {
    let Some(server) = maestro_tests::pg::Postgres::start() else {
        return Ok(None);
    };
    let database = server.create_database("maestro_bench");
    // The test cluster logs every statement; a million rows of INSERT would be its log.
    let quiet = server.psql("postgres", "ALTER ROLE maestro_bench SET log_statement = 'none'");
    if quiet.status != 0 {
        bail!("cannot quiet the bench role's statement log: {}", quiet.stderr.trim());
    }
    let dir = work_dir("maestro-bench-history-pg-")?;
    let url = database.url();
    let broker = BrokerProc::start(bins, dir.path(), &["--database", &url])?;
    let api = broker.api()?;
    make_secrets(&api).await?;
    let mut conn =
        sqlx::PgConnection::connect(&url).await.context("cannot connect to PostgreSQL")?;
    let owner = sqlx::query_scalar(OWNER_SQL).fetch_one(&mut conn).await?;
    let secrets = sqlx::query_as(SECRETS_SQL).fetch_all(&mut conn).await?;
    conn.close().await.context("cannot close the PostgreSQL connection")?;
    let plan = plan(owner, secrets, records)?;
    eprintln!("    seeding {records} records into PostgreSQL");
    let start = Instant::now();
    let seeded = seed::seed_postgres(&url, &plan).await.context("cannot seed PostgreSQL")?;
    let seed_time = start.elapsed();
    let rows = rows_of("postgresql", &api, &seeded, seed_time, runs).await?;
    drop(broker);
    drop(server);
    Ok(Some(rows))
}

/// Both engines' rows, with `records` (default: [`RECORDS`], quick [`QUICK_RECORDS`]).
pub async fn run(
    settings: &Settings,
    bins: &Bins,
    records: Option<usize>,
) -> anyhow::Result<Vec<Row>> {
    let records = records.unwrap_or(if settings.quick { QUICK_RECORDS } else { RECORDS });
    let runs = if settings.quick { 5 } else { 15 };
    let mut rows = sqlite(bins, records, runs).await?;
    match postgres(bins, records, runs).await? {
        Some(pg) => rows.extend(pg),
        None => eprintln!(
            "maestro-bench: the PostgreSQL history rows are skipped (see the SKIPPED line above)"
        ),
    }
    Ok(rows)
}
