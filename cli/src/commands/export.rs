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
//! it commits, so a record can appear after one with a higher `seq`. Each poll therefore reads
//! again from a floor, not from the last `seq` written, and skips what it already wrote (by
//! `seq`). The floor is the highest `seq` a request had seen at least [`SETTLE`] before the
//! start of the last complete pass over the pages: every lower `seq` was drawn before that
//! request, so unless its transaction took longer than `SETTLE` to commit, that pass saw it.
//! (SQLite has one writer at a time: `seq` order is commit order there.) The cost is reading
//! the last `SETTLE` of records again on each poll, and the whole catch-up during the first
//! `SETTLE` after it.

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
    let mut position = Position::default();
    let interval = Duration::from_secs(args.interval);
    loop {
        // A pass: every page from the floor up; a full page means more are there now.
        let pass_started = Instant::now();
        let mut after = position.floor;
        loop {
            let asked_at = Instant::now();
            let events = fetch(after).await?;
            let full = events.len() as i64 >= PAGE;
            after = events.last().map_or(after, |e| e.seq);
            sink.write(&position.take(events, asked_at))?;
            if sink.closed {
                return Ok(output(String::new()));
            }
            if !full {
                break;
            }
        }
        if !args.follow {
            return Ok(output(String::new()));
        }
        position.settle(pass_started);
        tokio::time::sleep(interval).await;
    }
}

/// Where a follower is: what it wrote above its floor, and what each request had seen.
#[derive(Debug, Default)]
struct Position {
    /// Every record at or below it has been written (or was not visible for over SETTLE).
    floor: i64,
    /// Seqs written above the floor.
    written: BTreeSet<i64>,
    /// (when a request was sent, the highest seq seen by then).
    marks: VecDeque<(Instant, i64)>,
    highest: i64,
}

impl Position {
    /// The records of a page asked for at `asked_at` that were not written yet.
    fn take(&mut self, events: Vec<AuditEvent>, asked_at: Instant) -> Vec<AuditEvent> {
        let new: Vec<AuditEvent> = events
            .into_iter()
            .filter(|e| e.seq > self.floor && !self.written.contains(&e.seq))
            .collect();
        self.written.extend(new.iter().map(|e| e.seq));
        self.highest = self.highest.max(new.iter().map(|e| e.seq).max().unwrap_or(0));
        self.marks.push_back((asked_at, self.highest));
        new
    }

    /// After a complete pass that started at `pass_started`: every seq up to what a request
    /// had seen SETTLE before then was drawn before that request, so it was visible when the
    /// pass read past it. The floor moves up to there; below it nothing is asked for again.
    fn settle(&mut self, pass_started: Instant) {
        while let Some(&(at, seq)) = self.marks.front() {
            if pass_started.saturating_duration_since(at) < SETTLE {
                break;
            }
            self.floor = self.floor.max(seq);
            self.marks.pop_front();
        }
        self.written = self.written.split_off(&(self.floor + 1));
    }
}

#[cfg(test)]
mod tests {
    use maestro_wire::api::AuditAction;

    use super::*;

    fn events(seqs: &[i64]) -> Vec<AuditEvent> {
        seqs.iter()
            .map(|&seq| AuditEvent {
                seq,
                at: "2026-12-01T00:00:00Z".into(),
                action: AuditAction::Injected,
                secret: None,
                session: None,
                pid: None,
                uid: None,
                command: None,
                detail: None,
                count: None,
                last_at: None,
                exe: None,
                claimed_command: None,
                session_label: None,
                by: None,
            })
            .collect()
    }

    fn seqs(events: &[AuditEvent]) -> Vec<i64> {
        events.iter().map(|e| e.seq).collect()
    }

    /// A record that commits after one with a higher seq (PostgreSQL) is still written, once;
    /// records already written are never written again.
    #[test]
    fn a_late_commit_is_written_once_and_nothing_twice() {
        let t0 = Instant::now();
        let mut p = Position::default();
        // Catch-up: 1, 2 and 4 are visible; 3 is still in flight.
        assert_eq!(seqs(&p.take(events(&[1, 2, 4]), t0)), [1, 2, 4]);
        p.settle(t0);
        assert_eq!(p.floor, 0, "nothing is settled before SETTLE has passed");
        // A poll 2 s later reads from the floor: 3 has committed, 5 is new.
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(seqs(&p.take(events(&[1, 2, 3, 4, 5]), t1)), [3, 5]);
        p.settle(t1);
        // Polls after SETTLE: the floor moves up to what the catch-up had seen, no further.
        let t2 = t0 + SETTLE + Duration::from_secs(1);
        assert_eq!(seqs(&p.take(events(&[1, 2, 3, 4, 5, 6]), t2)), [6]);
        p.settle(t2);
        assert_eq!(p.floor, 4);
        assert_eq!(p.written.iter().copied().collect::<Vec<_>>(), [5, 6]);
        // The next pass asks from 4: 5 and 6 are not written again, 7 is.
        let t3 = t2 + Duration::from_secs(2);
        assert_eq!(seqs(&p.take(events(&[5, 6, 7]), t3)), [7]);
    }

    #[test]
    fn the_floor_follows_the_pass_start_not_the_clock() {
        let t0 = Instant::now();
        let mut p = Position::default();
        p.take(events(&[1, 2]), t0);
        // A pass that started before t0 + SETTLE settles nothing, however late it ends.
        p.settle(t0 + SETTLE - Duration::from_millis(1));
        assert_eq!(p.floor, 0);
        p.settle(t0 + SETTLE);
        assert_eq!(p.floor, 2);
        assert!(p.written.is_empty());
    }
}
