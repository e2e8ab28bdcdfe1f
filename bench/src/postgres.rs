//! Row 9, sealed PostgreSQL logins: connection set-up and a query's round trip through the
//! agent's relay socket against a direct TCP connection to the same server (a temporary cluster
//! on loopback, SCRAM-SHA-256, as the tests start it), and how soon after a deactivation a
//! relayed connection running a query is closed.
//!
//! The client is sqlx in this process (root: the relay serves root and the sandbox user). Both
//! paths log in with SCRAM-SHA-256: directly the client does it, through the relay the agent
//! does it towards the server and the client does none.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use maestro_tests::pg::Postgres;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Executor};

use crate::Settings;
use crate::fixture::Bins;
use crate::one_secret::{OneSecret, revocation_row};
use crate::report::{Figure, Row, Spread, Unit, format_seconds};
use crate::stats::Summary;

const SECTION: &str = "Sealed secrets: PostgreSQL logins through the agent's relay";
const SECRET: &str = "BENCH_PG";
const CHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// The targets.
const SETUP_ADDED_P99: f64 = 0.002;
const ROUNDTRIP_ADDED: f64 = 0.000_1;

/// `n` connection set-ups (connect, log in, first ReadyForQuery, close) and `n` round trips of
/// `select 1` (simple protocol) on one connection.
async fn measure(options: &PgConnectOptions, n: usize) -> anyhow::Result<(Summary, Summary)> {
    let mut setup = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let c = options.connect().await.context("cannot connect")?;
        setup.push(t.elapsed().as_secs_f64());
        c.close().await.context("cannot close")?;
    }
    let mut c = options.connect().await.context("cannot connect")?;
    let mut trips = Vec::with_capacity(n * 10);
    for _ in 0..n * 10 {
        let t = Instant::now();
        c.execute(sqlx::raw_sql("select 1")).await.context("the query failed")?;
        trips.push(t.elapsed().as_secs_f64());
    }
    c.close().await.context("cannot close")?;
    Ok((
        Summary::of(&setup).context("nothing was measured")?,
        Summary::of(&trips).context("nothing was measured")?,
    ))
}

pub async fn run(settings: &Settings, bins: &Bins) -> anyhow::Result<Vec<Row>> {
    let pg = Postgres::start().ok_or_else(|| {
        anyhow!("PostgreSQL is not installed (apt-get install postgresql) or this is not root")
    })?;
    let db = pg.create_database("bench_relay");
    let one = OneSecret::start(
        bins,
        "bench-pg",
        SECRET,
        serde_json::json!({"name": SECRET, "kind": "postgres", "exposure": "sealed",
            "fields": {"host": "127.0.0.1", "port": db.port.to_string(), "user": db.name,
                       "password": db.password, "database": db.name, "sslmode": "disable"}}),
    )
    .await?;
    let host = one.variable("PGHOST")?;

    let direct = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(db.port)
        .username(&db.name)
        .password(&db.password)
        .database(&db.name)
        .ssl_mode(sqlx::postgres::PgSslMode::Disable)
        .statement_cache_capacity(0);
    let relayed = PgConnectOptions::new()
        .socket(Path::new(&host))
        .port(5432)
        .username(&db.name)
        .database(&db.name)
        .statement_cache_capacity(0);
    let n = if settings.quick { 100 } else { 500 };
    let (direct_setup, direct_trip) = measure(&direct, n).await.context("direct")?;
    let (relay_setup, relay_trip) = measure(&relayed, n).await.context("through the relay")?;

    // Revocation: a relayed connection inside `pg_sleep` until the agent closes it, after the
    // deactivate call returned.
    let tries = if settings.quick { 10 } else { 30 };
    let mut closed = Vec::with_capacity(tries);
    for i in 0..tries {
        if i > 0 {
            one.activate().await?;
        }
        let mut c: PgConnection = relayed.connect().await.context("cannot connect")?;
        let sleeping = tokio::spawn(async move {
            let r = c.execute(sqlx::raw_sql("select pg_sleep(60)")).await;
            (Instant::now(), r.is_err())
        });
        // The query is on its way before the deactivation.
        tokio::time::sleep(Duration::from_millis(50)).await;
        one.deactivate().await?;
        let returned = Instant::now();
        let (at, failed) = tokio::time::timeout(CHANGE_TIMEOUT, sleeping)
            .await
            .context("the relayed connection outlived the deactivation")?
            .context("the query's task")?;
        if !failed {
            bail!("the query finished instead of its connection closing");
        }
        closed.push(at.saturating_duration_since(returned).as_secs_f64());
    }
    let closed = Summary::of(&closed).context("nothing was measured")?;
    drop(one);
    drop(pg);
    let setup_added = relay_setup.p99 - direct_setup.p99;
    let trip_added = relay_trip.median - direct_trip.median;
    Ok(vec![
        Row::new(
            "pg.setup",
            SECTION,
            Figure::new(
                format!("connect + SCRAM log-in through the relay socket ({n} connections)"),
                Unit::Seconds,
                relay_setup,
            ),
            Spread::P99,
            Some(Figure::new("direct over TCP to the same server", Unit::Seconds, direct_setup)),
        )
        .target(
            "< 2 ms added at p99",
            format!("added p99 {}", format_seconds(setup_added)),
            setup_added < SETUP_ADDED_P99,
        ),
        Row::new(
            "pg.roundtrip",
            SECTION,
            Figure::new(
                format!("select 1 through the relay, one connection ({} queries)", n * 10),
                Unit::Seconds,
                relay_trip,
            ),
            Spread::P99,
            Some(Figure::new("direct over TCP", Unit::Seconds, direct_trip)),
        )
        .target(
            "< 0.1 ms added per round trip",
            format!(
                "added median {}, p99 {}",
                format_seconds(trip_added),
                format_seconds(relay_trip.p99 - direct_trip.p99)
            ),
            trip_added < ROUNDTRIP_ADDED,
        ),
        revocation_row("pg.revocation", SECTION, "relayed connection", closed),
    ])
}
