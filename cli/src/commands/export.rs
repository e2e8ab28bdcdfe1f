//! `maestro audit export`: the caller's audit records as JSON lines on stdout (one record a
//! line, [`AuditLine`], fields in docs/cli.md "History and export"), for SIEM tools. With
//! `--follow` it keeps polling for records appended since, until interrupted.
//!
//! Position: every request names where it starts with `after=<seq>` (the trail's position,
//! not a time), oldest first, so that a record is written once and in order. A record never
//! changes once written (the trail is append-only; an agent coalesces repeats before it
//! reports, so later uses arrive as a new record with its own `seq`, `count` and `last_at`).
//!
//! No gaps: on PostgreSQL a `seq` is drawn when a transaction inserts and becomes visible when
//! it commits, so a record can appear after one with a higher `seq`. The follower therefore
//! reads again from the highest `seq` it had written [`SETTLE`] ago, not from the last one,
//! and skips what it already wrote (by `seq`): a record whose transaction took longer than
//! that to commit is the only one it could miss. (SQLite has one writer: `seq` order is commit
//! order there.)

use std::collections::{BTreeSet, VecDeque};
use std::io::{self, Write};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use maestro_wire::api::AuditEvent;
use maestro_wire::export::AuditLine;

use super::{Output, output};
use crate::args::ExportArgs;
use crate::client::Client;
use crate::input;

/// Records asked for per request (the broker's largest page).
const PAGE: i64 = 10_000;
/// How long a record may take to become visible after a record with a higher `seq` has.
pub const SETTLE: Duration = Duration::from_secs(10);

/// Where the export writes: stdout, flushed after every page. A reader that went away ends
/// the export quietly (`| head`).
struct Sink {
    out: io::Stdout,
    closed: bool,
}

impl Sink {
    fn write(&mut self, events: &[AuditEvent]) -> anyhow::Result<()> {
        let mut text = String::new();
        for e in events {
            text.push_str(&serde_json::to_string(&AuditLine::from(e))?);
            text.push('\n');
        }
        let mut out = self.out.lock();
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            other => other.context("cannot write the export to stdout"),
        }
    }
}

/// `since` as the broker reads it: a duration before now becomes one fixed time here, so that
/// every request of a long export names the same start.
fn absolute(what: &str, text: &str) -> anyhow::Result<String> {
    match humantime::parse_duration(text) {
        Ok(ago) => {
            let at = SystemTime::now().checked_sub(ago).with_context(|| {
                format!("--{what} {text} reaches before 1970; give a shorter duration")
            })?;
            Ok(humantime::format_rfc3339_seconds(at).to_string())
        }
        // An RFC 3339 time, checked by the broker (its one-line error names the forms).
        Err(_) => Ok(text.to_owned()),
    }
}

pub async fn run(client: &Client, args: ExportArgs) -> anyhow::Result<Output> {
    if !args.follow {
        return export(client, args).await;
    }
    // Interrupted between requests or during one: every line written so far is whole (a page
    // is written without an await in between).
    tokio::select! {
        done = export(client, args) => done,
        _ = tokio::signal::ctrl_c() => Ok(output(String::new())),
    }
}

async fn export(client: &Client, args: ExportArgs) -> anyhow::Result<Output> {
    if let Some(name) = &args.secret {
        input::secret_name(name)?;
    }
    let mut filters: Vec<(&str, String)> = vec![("since", absolute("since", &args.since)?)];
    if let Some(until) = &args.until {
        filters.push(("until", absolute("until", until)?));
    }
    if let Some(secret) = &args.secret {
        filters.push(("secret", secret.clone()));
    }
    if let Some(session) = &args.session {
        filters.push(("session", session.clone()));
    }
    filters.extend(args.action.iter().map(|a| ("action", a.clone())));
    let filters = &filters;
    let fetch = |after: i64| async move {
        let mut query = filters.clone();
        query.push(("after", after.to_string()));
        query.push(("limit", PAGE.to_string()));
        client.get_query(&["v1", "audit"], &query).await?.parse::<Vec<AuditEvent>>()
    };

    let mut sink = Sink { out: io::stdout(), closed: false };
    // Seqs written above the floor, and (when, highest seq written by then) of each request.
    let mut written: BTreeSet<i64> = BTreeSet::new();
    let mut marks: VecDeque<(Instant, i64)> = VecDeque::new();
    let mut highest = 0_i64;
    let mut floor = 0_i64;
    let interval = Duration::from_secs(args.interval);
    loop {
        // Every page from the floor up; a full page means more are there now.
        let mut after = floor;
        loop {
            let asked_at = Instant::now();
            let events = fetch(after).await?;
            let full = events.len() as i64 >= PAGE;
            after = events.last().map_or(after, |e| e.seq);
            let new: Vec<AuditEvent> =
                events.into_iter().filter(|e| e.seq > floor && !written.contains(&e.seq)).collect();
            sink.write(&new)?;
            if sink.closed {
                return Ok(output(String::new()));
            }
            written.extend(new.iter().map(|e| e.seq));
            highest = highest.max(after);
            marks.push_back((asked_at, highest));
            if !full {
                break;
            }
        }
        if !args.follow {
            return Ok(output(String::new()));
        }
        tokio::time::sleep(interval).await;
        // The floor moves up to what was written at least SETTLE ago.
        while let Some(&(at, seq)) = marks.front() {
            if at.elapsed() < SETTLE {
                break;
            }
            floor = floor.max(seq);
            marks.pop_front();
        }
        written = written.split_off(&(floor + 1));
    }
}
