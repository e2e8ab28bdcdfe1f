//! Row 9, sealed MySQL logins: connection set-up and query round trip through the agent's
//! relay socket against a direct connection to the same MariaDB server, and how soon after a
//! deactivation an open relayed connection is closed.
//!
//! The client is a minimal one of this module (greeting, mysql_native_password login,
//! `COM_QUERY DO 1`), the same code for both paths: direct over TCP with the password, through
//! the relay's unix socket without one (root may use the socket, like the sandbox user).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use maestro_tests::mariadb::Mariadb;
use sha1::{Digest, Sha1};

use crate::Settings;
use crate::fixture::Bins;
use crate::one_secret::{OneSecret, revocation_row};
use crate::report::{Figure, Row, Spread, Unit, format_seconds};
use crate::stats::Summary;

const SECTION: &str = "Sealed secrets: MySQL logins through the agent's relay";
const SECRET: &str = "BENCH_MYSQL";
const PASSWORD: &str = "bench-mysql-password";
const CHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// The targets: under 2 ms added at p99 for set-up, under 0.1 ms per round trip, and a
/// deactivation ends a connection within 100 ms.
const SETUP_ADDED_LIMIT: f64 = 0.002;
const ROUND_TRIP_ADDED_LIMIT: f64 = 0.000_1;

fn read_packet(s: &mut impl Read) -> anyhow::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).context("the server closed the connection")?;
    let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).context("the server closed the connection")?;
    Ok((h[3], p))
}

fn write_packet(s: &mut impl Write, seq: u8, payload: &[u8]) -> anyhow::Result<()> {
    let mut out = (payload.len() as u32).to_le_bytes()[..3].to_vec();
    out.push(seq);
    out.extend_from_slice(payload);
    s.write_all(&out).context("the server closed the connection")
}

fn scramble(nonce: &[u8], password: &str) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let s1 = Sha1::digest(password.as_bytes());
    let s2 = Sha1::digest(s1);
    let mask = Sha1::new().chain_update(nonce).chain_update(s2).finalize();
    s1.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect()
}

/// Reads the greeting and logs in as `user` to `db` with `password` (native scramble).
fn login<S: Read + Write>(s: &mut S, user: &str, password: &str, db: &str) -> anyhow::Result<()> {
    let (_, g) = read_packet(s)?;
    if g.first() != Some(&10) {
        bail!("not a protocol 10 greeting: {}", String::from_utf8_lossy(&g));
    }
    let v_end = g.iter().position(|b| *b == 0).context("a garbled greeting")?;
    let rest = g.get(v_end + 1..).context("a garbled greeting")?;
    let mut nonce = rest.get(4..12).context("a garbled greeting")?.to_vec();
    nonce.extend_from_slice(rest.get(31..43).context("a garbled greeting")?);
    // PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH | LONG_PASSWORD | TRANSACTIONS | WITH_DB.
    let caps: u32 = 0x200 | 0x8000 | 0x8_0000 | 1 | 0x2000 | 8;
    let mut p = caps.to_le_bytes().to_vec();
    p.extend_from_slice(&(1u32 << 24).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    let auth = scramble(&nonce, password);
    p.push(auth.len() as u8);
    p.extend_from_slice(&auth);
    p.extend_from_slice(db.as_bytes());
    p.push(0);
    p.extend_from_slice(b"mysql_native_password\0");
    write_packet(s, 1, &p)?;
    let (seq, answer) = read_packet(s)?;
    match answer.first() {
        Some(0) => Ok(()),
        Some(0xfe) => {
            // An auth switch to mysql_native_password with a new nonce.
            let nonce = answer.split(|b| *b == 0).nth(1).context("a garbled auth switch")?;
            write_packet(s, seq + 1, &scramble(nonce, password))?;
            match read_packet(s)?.1.first() {
                Some(0) => Ok(()),
                _ => bail!("the login was refused after an auth switch"),
            }
        }
        _ => bail!("the login was refused: {}", String::from_utf8_lossy(&answer)),
    }
}

/// One `DO 1` and its OK.
fn query<S: Read + Write>(s: &mut S) -> anyhow::Result<()> {
    write_packet(s, 0, b"\x03DO 1")?;
    match read_packet(s)?.1.first() {
        Some(0) => Ok(()),
        _ => bail!("DO 1 failed"),
    }
}

pub async fn run(settings: &Settings, bins: &Bins) -> anyhow::Result<Vec<Row>> {
    let db = Mariadb::start("bench", PASSWORD, "benchdb");
    let port = db.port;
    let one = OneSecret::start(
        bins,
        "bench-mysql",
        SECRET,
        serde_json::json!({"name": SECRET, "kind": "mysql", "exposure": "sealed",
            "fields": {"host": "127.0.0.1", "port": port.to_string(), "user": "bench",
                       "password": PASSWORD, "database": "benchdb"}}),
    )
    .await?;
    let sock = one.variable("MYSQL_UNIX_PORT")?;

    let direct = || -> anyhow::Result<TcpStream> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).context("cannot reach MariaDB")?;
        s.set_nodelay(true)?;
        login(&mut s, "bench", PASSWORD, "benchdb")?;
        Ok(s)
    };
    let relayed = || -> anyhow::Result<UnixStream> {
        let mut s = UnixStream::connect(&sock).context("cannot reach the relay")?;
        login(&mut s, "bench", "", "benchdb")?;
        Ok(s)
    };

    // Set-up: connect and log in, alternating the two paths so that both see the same load.
    // The usage queue coalesces nothing here (each connection has its own number), so the
    // count stays well under what the agent posts in a second.
    let n = if settings.quick { 100 } else { 400 };
    let (mut setup_direct, mut setup_relay) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let t = Instant::now();
        let s = direct()?;
        setup_direct.push(t.elapsed().as_secs_f64());
        drop(s);
        let t = Instant::now();
        let s = relayed()?;
        setup_relay.push(t.elapsed().as_secs_f64());
        drop(s);
    }
    let setup_direct = Summary::of(&setup_direct).context("nothing was measured")?;
    let setup_relay = Summary::of(&setup_relay).context("nothing was measured")?;

    // Round trips on one connection each.
    let m = if settings.quick { 2000 } else { 10_000 };
    let mut d = direct()?;
    let mut r = relayed()?;
    let (mut rt_direct, mut rt_relay) = (Vec::with_capacity(m), Vec::with_capacity(m));
    for _ in 0..m {
        let t = Instant::now();
        query(&mut d)?;
        rt_direct.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        query(&mut r)?;
        rt_relay.push(t.elapsed().as_secs_f64());
    }
    drop((d, r));
    let rt_direct = Summary::of(&rt_direct).context("nothing was measured")?;
    let rt_relay = Summary::of(&rt_relay).context("nothing was measured")?;

    // Revocation: a logged-in relayed connection until the agent closes it after the
    // deactivate call returned.
    let tries = if settings.quick { 10 } else { 30 };
    let mut closed = Vec::with_capacity(tries);
    for i in 0..tries {
        if i > 0 {
            one.activate().await?;
        }
        let mut s = relayed()?;
        query(&mut s)?;
        one.deactivate().await?;
        let returned = Instant::now();
        let waited = tokio::task::spawn_blocking(move || {
            s.set_read_timeout(Some(CHANGE_TIMEOUT))?;
            let mut byte = [0u8; 1];
            match s.read(&mut byte) {
                Ok(0) => Ok(()),
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => Ok(()),
                _ => Err(std::io::Error::other("still open")),
            }
        })
        .await
        .context("the revocation wait")?;
        waited.context("the agent kept the relayed connection open after the deactivation")?;
        closed.push(returned.elapsed().as_secs_f64());
    }
    let closed = Summary::of(&closed).context("nothing was measured")?;
    drop(one);
    drop(db);

    let setup_added = setup_relay.p99 - setup_direct.p99;
    let rt_added = rt_relay.median - rt_direct.median;
    Ok(vec![
        Row::new(
            "mysql.setup",
            SECTION,
            Figure::new(
                format!("connect and log in through the relay ({n} connections)"),
                Unit::Seconds,
                setup_relay,
            ),
            Spread::P99,
            Some(Figure::new("direct over TCP with the password", Unit::Seconds, setup_direct)),
        )
        .target(
            "< 2 ms added at p99",
            format!("added: p99 {}", format_seconds(setup_added)),
            setup_added < SETUP_ADDED_LIMIT,
        ),
        Row::new(
            "mysql.round_trip",
            SECTION,
            Figure::new(
                format!("DO 1 through the relay, one connection ({m} queries)"),
                Unit::Seconds,
                rt_relay,
            ),
            Spread::P99,
            Some(Figure::new("the same, direct over TCP", Unit::Seconds, rt_direct)),
        )
        .target(
            "< 0.1 ms added per round trip",
            format!(
                "added: median {}, p99 {}",
                format_seconds(rt_added),
                format_seconds(rt_relay.p99 - rt_direct.p99)
            ),
            rt_added < ROUND_TRIP_ADDED_LIMIT,
        ),
        revocation_row("mysql.revocation", SECTION, "relayed connection", closed),
    ])
}
