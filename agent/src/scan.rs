//! `maestro-exec scan` on the agent's side: the agent holds the values, so it does the matching;
//! the content comes over the socket from `maestro-exec`, which read it with the caller's own
//! rights, so the agent never opens a path on a caller's behalf.
//!
//! A scan connection is taken over from the async listener after `scan_ready` and served on a
//! blocking thread (the runtime has one thread, which matching would hold up): items framed as
//! in `maestro_wire::sock` (header line, length-prefixed chunks, a zero length to end), each
//! answered with its findings. Every finding is recorded as a usage report
//! ([`UsageAction::ScanFinding`], detail `LABEL:LINE` or `LABEL`, never the value), and an item
//! whose findings cannot be recorded is answered with an error (the audit fails closed).
//!
//! Limits: [`MAX_SCANS_AT_ONCE`] scan connections per agent (beyond: `unavailable`), on top of
//! the listener's per-uid connection cap; per item, chunk and connection sizes; [`IDLE_TIMEOUT`]
//! for every read and write; [`MAX_SCAN_CONNECTION_SECS`] per connection. The matcher is built
//! once per connection from the secrets active when it starts.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use maestro_wire::SecretValue;
use maestro_wire::agent_api::{UsageAction, UsageReport};
use maestro_wire::catalog::{self, Check, Kind, seal};
use maestro_wire::jsonline;
use maestro_wire::limits::{
    MAX_SCAN_CHUNK_BYTES, MAX_SCAN_CONNECTION_BYTES, MAX_SCAN_CONNECTION_SECS, MAX_SCAN_ITEM_BYTES,
    MAX_SCANS_AT_ONCE,
};
use maestro_wire::matcher::{Found, MIN_VALUE_LEN, Matcher, StreamScanner};
use maestro_wire::sock::{
    FoundKind, MAX_SCAN_FINDINGS_PER_ITEM, MAX_SCAN_LABEL_BYTES, Response, ScanFinding, ScanItem,
    ScanLimits, SockErrorCode,
};
use zeroize::Zeroizing;

use crate::dispatch::{Peer, error};
use crate::identity::rfc3339_now;
use crate::state::{Secrets, Store};
use crate::usage::{QueueFull, UsageQueue};

/// How long the client may take for each header, chunk, or to take an answer.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// A sealed secret's real value is looked for only from this length on: the sandbox never held
/// it, and a short one could otherwise be guessed by scanning candidates.
pub const SEALED_VALUE_MIN_LEN: usize = 16;
/// Fields that name things rather than grant access, for kinds without a seal that says which
/// fields are the credentials.
const NOT_CREDENTIALS: &[&str] = &["user", "database", "domain"];

/// Longest label kept in a finding's record, in bytes: with the line and encoding the detail
/// stays within the broker's limit, so a long label cannot get a batch of records refused.
const MAX_RECORDED_LABEL_BYTES: usize = 512;

/// Scan connections being served.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// One of the [`MAX_SCANS_AT_ONCE`] slots.
struct Permit;

impl Permit {
    fn take() -> Option<Permit> {
        RUNNING
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_SCANS_AT_ONCE).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The limits a client is told.
pub fn limits() -> ScanLimits {
    ScanLimits {
        max_item_bytes: MAX_SCAN_ITEM_BYTES,
        max_chunk_bytes: MAX_SCAN_CHUNK_BYTES,
        max_connection_bytes: MAX_SCAN_CONNECTION_BYTES,
        max_connection_secs: MAX_SCAN_CONNECTION_SECS,
    }
}

/// Whether `field` of `kind` is a credential (looked for) rather than a name, host or setting.
fn is_credential(kind: &Kind, field: &str) -> bool {
    if kind.free_fields {
        return true;
    }
    if let Ok(seal) = seal::seal_of(kind)
        && !seal.fields.is_empty()
    {
        return seal.fields.iter().any(|f| f.name == field);
    }
    kind.fields.iter().find(|f| f.name == field).is_some_and(|f| {
        f.default.is_none()
            && !f.shown
            && !matches!(
                f.check,
                Check::Host
                    | Check::HostPort
                    | Check::Port
                    | Check::OneOf(_)
                    | Check::HostPatterns
                    | Check::Owners
            )
            && !NOT_CREDENTIALS.contains(&f.name)
    })
}

/// What is looked for: the compiled matcher and, per secret index, its name and whether it is
/// a value or a placeholder.
pub struct Targets {
    matcher: Matcher,
    what: Vec<(String, FoundKind)>,
    /// How many secrets have a value or placeholder long enough to be looked for.
    secrets: u32,
}

impl Targets {
    /// From the active secrets: plain secrets' credential fields, sealed secrets' placeholders
    /// (and their values from [`SEALED_VALUE_MIN_LEN`] bytes on).
    pub fn of(secrets: &Secrets) -> Result<Targets, Response> {
        if !secrets.in_touch() {
            return Err(error(
                SockErrorCode::Unavailable,
                "secrets are unavailable: the agent is out of touch with the broker; scan again \
                 when it reconnects",
            ));
        }
        let mut patterns: Vec<(String, SecretValue)> = Vec::new();
        let mut what = Vec::new();
        for entry in secrets.entries() {
            let Some(kind) = catalog::kind(&entry.material.kind) else { continue };
            for (field, value) in &entry.material.fields {
                if !is_credential(kind, field) {
                    continue;
                }
                let name = entry.material.name.clone();
                match entry.placeholders.get(field) {
                    Some(placeholder) => {
                        patterns.push((name.clone(), SecretValue::from(placeholder.as_str())));
                        what.push((name.clone(), FoundKind::Placeholder));
                        if value.expose().len() >= SEALED_VALUE_MIN_LEN {
                            patterns.push((name.clone(), value.clone()));
                            what.push((name, FoundKind::Value));
                        }
                    }
                    None => {
                        patterns.push((name.clone(), value.clone()));
                        what.push((name, FoundKind::Value));
                    }
                }
            }
        }
        let mut looked_for: Vec<&str> = patterns
            .iter()
            .filter(|(_, v)| v.expose().len() >= MIN_VALUE_LEN)
            .map(|(n, _)| n.as_str())
            .collect();
        looked_for.dedup();
        let secrets = u32::try_from(looked_for.len()).unwrap_or(u32::MAX);
        let refs: Vec<(String, &SecretValue)> =
            patterns.iter().map(|(n, v)| (n.clone(), v)).collect();
        let matcher =
            Matcher::new(&refs).map_err(|e| error(SockErrorCode::Internal, e.to_string()))?;
        Ok(Targets { matcher, what, secrets })
    }

    /// Scans one item's chunks, counting lines; returns the findings in stream order.
    pub fn scanner(&self) -> ItemScan<'_> {
        ItemScan {
            targets: self,
            scanner: StreamScanner::new(&self.matcher),
            tail: Zeroizing::new(Vec::new()),
            newlines: 0,
            offset: 0,
            findings: Vec::new(),
            more: 0,
        }
    }
}

/// One item being scanned.
pub struct ItemScan<'t> {
    targets: &'t Targets,
    scanner: StreamScanner<'t>,
    /// The last bytes before the current chunk (as many as a match can reach back), to count
    /// the lines of a match that started in an earlier chunk.
    tail: Zeroizing<Vec<u8>>,
    /// Newlines before `offset`.
    newlines: u64,
    /// Stream offset of the next chunk.
    offset: u64,
    findings: Vec<ScanFinding>,
    more: u64,
}

impl ItemScan<'_> {
    /// Feeds the next chunk.
    pub fn push(&mut self, chunk: &[u8]) {
        let found = self.scanner.push(chunk);
        self.take(&found, chunk);
        let chunk_newlines = bytecount(chunk);
        self.newlines += chunk_newlines;
        self.offset += chunk.len() as u64;
        let keep = self.targets.matcher.max_len();
        let mut tail = Zeroizing::new(Vec::with_capacity(keep));
        let from_tail = keep.saturating_sub(chunk.len()).min(self.tail.len());
        tail.extend_from_slice(&self.tail[self.tail.len() - from_tail..]);
        tail.extend_from_slice(&chunk[chunk.len().saturating_sub(keep)..]);
        self.tail = tail;
    }

    /// Ends the item: its findings, and how many more there were beyond the cap.
    pub fn finish(mut self) -> (Vec<ScanFinding>, u64) {
        let found = self.scanner.finish();
        self.take(&found, &[]);
        (self.findings, self.more)
    }

    /// Turns matches into findings; `chunk` is the chunk just pushed, at `self.offset`.
    fn take(&mut self, found: &[Found], chunk: &[u8]) {
        for f in found {
            if self.findings.len() >= MAX_SCAN_FINDINGS_PER_ITEM {
                self.more += 1;
                continue;
            }
            let line = if f.start >= self.offset {
                let at = usize::try_from(f.start - self.offset).unwrap_or(chunk.len());
                self.newlines + bytecount(&chunk[..at.min(chunk.len())])
            } else {
                // In the tail: newlines from the match to the chunk are not before it.
                let back = usize::try_from(self.offset - f.start).unwrap_or(usize::MAX);
                let from = self.tail.len().saturating_sub(back);
                self.newlines.saturating_sub(bytecount(&self.tail[from..]))
            } + 1;
            let (secret, kind) = self
                .targets
                .what
                .get(f.secret)
                .cloned()
                .unwrap_or_else(|| (String::new(), FoundKind::Value));
            self.findings.push(ScanFinding {
                secret,
                found: kind,
                encoding: f.encoding.as_str().to_owned(),
                line,
                offset: f.start,
            });
        }
    }
}

fn bytecount(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|b| **b == b'\n').count() as u64
}

/// Serves a scan connection after the request line (the client waits for `scan_ready` before
/// sending anything more, so nothing is left in the listener's buffer).
pub async fn serve(
    stream: tokio::net::UnixStream,
    store: Arc<Store>,
    usage: Arc<UsageQueue>,
    peer: Peer,
) -> io::Result<()> {
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    tokio::task::spawn_blocking(move || serve_blocking(stream, &store, &usage, &peer))
        .await
        .map_err(io::Error::other)?
}

/// The client's side of a scan connection: each read waits at most [`IDLE_TIMEOUT`], and never
/// past the connection's deadline, so a client that trickles bytes cannot hold a scan slot for
/// longer than [`MAX_SCAN_CONNECTION_SECS`].
struct Timed {
    stream: std::os::unix::net::UnixStream,
    deadline: Instant,
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("a scan connection lasted more than {MAX_SCAN_CONNECTION_SECS} s"),
            ));
        }
        self.stream.set_read_timeout(Some(left.min(IDLE_TIMEOUT)))?;
        self.stream.read(buf)
    }
}

fn answer(stream: &mut impl Write, response: &Response) -> io::Result<()> {
    let bytes = jsonline::to_line(response).map_err(io::Error::other)?;
    stream.write_all(&bytes)
}

fn serve_blocking(
    stream: std::os::unix::net::UnixStream,
    store: &Store,
    usage: &UsageQueue,
    peer: &Peer,
) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let Some(_permit) = Permit::take() else {
        return answer(
            &mut writer,
            &error(
                SockErrorCode::Unavailable,
                format!(
                    "the agent is running {MAX_SCANS_AT_ONCE} scans already; try again in a moment"
                ),
            ),
        );
    };
    let targets = match store.read(Targets::of) {
        Ok(t) => t,
        Err(refusal) => return answer(&mut writer, &refusal),
    };
    answer(&mut writer, &Response::ScanReady { limits: limits(), secrets: targets.secrets })?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(MAX_SCAN_CONNECTION_SECS);
    let mut reader = BufReader::with_capacity(64 * 1024, Timed { stream, deadline });
    let mut total: u64 = 0;
    loop {
        let Some(item) = read_header(&mut reader)? else { return Ok(()) };
        let item = match item {
            Ok(item) => item,
            Err(refusal) => return answer(&mut writer, &refusal),
        };
        let mut scan = targets.scanner();
        let mut size: u64 = 0;
        // Allocated once at its largest: a growing buffer would leave copies behind.
        let mut chunk = Zeroizing::new(Vec::with_capacity(MAX_SCAN_CHUNK_BYTES as usize));
        loop {
            let mut len = [0u8; 4];
            reader.read_exact(&mut len)?;
            let len = u32::from_be_bytes(len);
            if len == 0 {
                break;
            }
            size += u64::from(len);
            total += u64::from(len);
            let refusal = if len > MAX_SCAN_CHUNK_BYTES {
                Some(format!("a chunk is longer than {MAX_SCAN_CHUNK_BYTES} bytes"))
            } else if size > MAX_SCAN_ITEM_BYTES {
                Some(format!("{} is larger than {MAX_SCAN_ITEM_BYTES} bytes", item.label))
            } else if total > MAX_SCAN_CONNECTION_BYTES {
                Some(format!("more than {MAX_SCAN_CONNECTION_BYTES} bytes on one scan connection"))
            } else if started.elapsed().as_secs() >= MAX_SCAN_CONNECTION_SECS {
                Some(format!("a scan connection lasted more than {MAX_SCAN_CONNECTION_SECS} s"))
            } else {
                None
            };
            if let Some(why) = refusal {
                let message =
                    format!("scan refused: {why}; use the maestro-exec that came with this agent");
                return answer(&mut writer, &error(SockErrorCode::BadRequest, message));
            }
            chunk.resize(len as usize, 0);
            reader.read_exact(&mut chunk)?;
            scan.push(&chunk);
        }
        let (findings, more) = scan.finish();
        let response = match record(usage, peer, &item, &findings) {
            Ok(()) => Response::ScanResult { findings, more },
            Err(QueueFull) => {
                let refusal = error(
                    SockErrorCode::Unavailable,
                    "the agent cannot record the findings now (its audit queue is full while the \
                     broker catches up); scan again in a few seconds",
                );
                return answer(&mut writer, &refusal);
            }
        };
        answer(&mut writer, &response)?;
    }
}

/// The next item's header; `None` when the client closed at an item boundary.
fn read_header(reader: &mut impl BufRead) -> io::Result<Option<Result<ScanItem, Response>>> {
    let mut line = Vec::with_capacity(256);
    let n = reader.take(MAX_SCAN_LABEL_BYTES as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        let message = format!("a scan item header is longer than {MAX_SCAN_LABEL_BYTES} bytes");
        return Ok(Some(Err(error(SockErrorCode::BadRequest, message))));
    }
    line.pop();
    Ok(Some(serde_json::from_slice::<ScanItem>(&line).map_err(|e| {
        error(
            SockErrorCode::BadRequest,
            format!(
                "a scan item header is not understood (column {}); use the maestro-exec that came \
                 with this agent",
                e.column()
            ),
        )
    })))
}

/// The label as recorded: control characters dropped, cut at [`MAX_RECORDED_LABEL_BYTES`]
/// on a character boundary.
fn recorded_label(label: &str) -> String {
    let mut out = String::new();
    for c in label.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_RECORDED_LABEL_BYTES {
            out.push('…');
            break;
        }
        out.push(c);
    }
    out
}

/// Records each finding as a usage report, all or none.
fn record(
    usage: &UsageQueue,
    peer: &Peer,
    item: &ScanItem,
    findings: &[ScanFinding],
) -> Result<(), QueueFull> {
    if findings.is_empty() {
        return Ok(());
    }
    let label = recorded_label(&item.label);
    let at = rfc3339_now();
    let reports = findings
        .iter()
        .map(|f| {
            let place = if item.lines { format!("{label}:{}", f.line) } else { label.clone() };
            let what = match f.found {
                FoundKind::Value => f.encoding.clone(),
                FoundKind::Placeholder => format!("placeholder, {}", f.encoding),
            };
            UsageReport {
                secret: Some(f.secret.clone()),
                action: UsageAction::ScanFinding,
                at: at.clone(),
                pid: peer.pid,
                uid: Some(peer.uid),
                command: Some(peer.who.command.clone()),
                detail: Some(format!("{place} ({what})")),
                count: None,
                last_at: None,
                exe: peer.who.exe.clone(),
                claimed_command: peer.who.comm.clone(),
                outside_exec: None,
            }
        })
        .collect();
    usage.push_all(reports)
}

#[cfg(test)]
mod tests {
    use maestro_wire::agent_api::SecretMaterial;
    use maestro_wire::catalog::Exposure;

    use super::*;

    fn targets(values: &[(&str, &str)]) -> Targets {
        let owned: Vec<(String, SecretValue)> =
            values.iter().map(|(n, v)| ((*n).to_owned(), SecretValue::from(*v))).collect();
        let refs: Vec<(String, &SecretValue)> = owned.iter().map(|(n, v)| (n.clone(), v)).collect();
        Targets {
            matcher: Matcher::new(&refs).unwrap(),
            what: values.iter().map(|(n, _)| ((*n).to_owned(), FoundKind::Value)).collect(),
            secrets: u32::try_from(values.len()).unwrap(),
        }
    }

    #[test]
    fn lines_are_counted_across_chunks_of_any_size() {
        let t = targets(&[("API", "planted-scan-value-42")]);
        let text = b"one\ntwo\nthree planted-scan-value-42 x\nfour\n\nsix planted-scan-value-42";
        for size in [1, 2, 3, 7, 16, 100] {
            let mut scan = t.scanner();
            for chunk in text.chunks(size) {
                scan.push(chunk);
            }
            let (found, more) = scan.finish();
            let lines: Vec<u64> = found.iter().map(|f| f.line).collect();
            assert_eq!(lines, vec![3, 6], "chunk size {size}");
            assert_eq!(found[0].offset, 14);
            assert_eq!(more, 0);
            assert!(!format!("{found:?}").contains("planted"));
        }
    }

    #[test]
    fn findings_beyond_the_cap_are_counted() {
        let t = targets(&[("API", "planted-scan-value-42")]);
        let text = "planted-scan-value-42\n".repeat(MAX_SCAN_FINDINGS_PER_ITEM + 5);
        let mut scan = t.scanner();
        scan.push(text.as_bytes());
        let (found, more) = scan.finish();
        assert_eq!((found.len(), more), (MAX_SCAN_FINDINGS_PER_ITEM, 5));
        assert_eq!(found[99].line, 100);
    }

    #[test]
    fn only_credentials_are_looked_for() {
        let aws = catalog::kind("aws").unwrap();
        assert!(is_credential(aws, "secret_access_key"));
        assert!(!is_credential(aws, "region"));
        let pg = catalog::kind("postgres").unwrap();
        assert!(is_credential(pg, "password"));
        for field in ["host", "port", "user", "database", "sslmode"] {
            assert!(!is_credential(pg, field), "{field}");
        }
        assert!(is_credential(catalog::kind("generic").unwrap(), "ANYTHING"));
        assert!(is_credential(catalog::kind("gcp").unwrap(), "service_account_json"));
    }

    fn material(name: &str, kind: &str, sealed: bool, fields: &[(&str, &str)]) -> SecretMaterial {
        SecretMaterial {
            active_until: None,
            name: name.into(),
            kind: kind.into(),
            version: 1,
            fields: fields.iter().map(|(k, v)| ((*k).into(), SecretValue::from(*v))).collect(),
            expires_at: None,
            needs_reauth: None,
            exposure: if sealed { Exposure::Sealed } else { Exposure::Plain },
            hosts: vec![],
        }
    }

    fn scan_all(t: &Targets, text: &str) -> Vec<(String, FoundKind, String)> {
        let mut scan = t.scanner();
        scan.push(text.as_bytes());
        scan.finish().0.into_iter().map(|f| (f.secret, f.found, f.encoding)).collect()
    }

    #[test]
    fn placeholders_of_sealed_secrets_and_long_sealed_values_are_looked_for() {
        let mut secrets = Secrets::new("/m");
        let skipped = secrets.replace_all(vec![
            material("OPENAI", "openai", true, &[("api_key", "sk-proj-plantedsealedvalue0123")]),
            material("SHORT", "generic", true, &[("T", "plant3dshort")]),
            material(
                "PG",
                "postgres",
                false,
                &[("host", "db.internal"), ("user", "appuser"), ("password", "planted-pg-pw")],
            ),
        ]);
        assert!(skipped.is_empty(), "{skipped:?}");
        let placeholder = secrets.get("OPENAI").unwrap().placeholders["api_key"].clone();
        let short = secrets.get("SHORT").unwrap().placeholders["T"].clone();
        let t = Targets::of(&secrets).unwrap();
        assert_eq!(t.secrets, 3);
        let text = format!(
            "{placeholder}\nsk-proj-plantedsealedvalue0123\n{short}\nplant3dshort\nplanted-pg-pw\n\
             db.internal appuser\n"
        );
        assert_eq!(
            scan_all(&t, &text),
            [
                ("OPENAI".to_owned(), FoundKind::Placeholder, "raw".to_owned()),
                ("OPENAI".to_owned(), FoundKind::Value, "raw".to_owned()),
                ("SHORT".to_owned(), FoundKind::Placeholder, "raw".to_owned()),
                // The short sealed value is not looked for; the host and user are no credentials.
                ("PG".to_owned(), FoundKind::Value, "raw".to_owned()),
            ]
        );
        secrets.drop_all();
        assert!(Targets::of(&secrets).is_err(), "served while out of touch");
    }

    #[test]
    fn recorded_labels_fit_the_brokers_limit() {
        assert_eq!(recorded_label("src/a\n.rs"), "src/a.rs");
        let long = "é".repeat(2000);
        let cut = recorded_label(&long);
        assert!(cut.len() <= MAX_RECORDED_LABEL_BYTES + '…'.len_utf8(), "{}", cut.len());
        assert!(cut.ends_with('…'));
        // With the longest line number and encoding, the detail stays within the broker's limit.
        let detail = format!("{cut}:{} (placeholder, json-escaped)", u64::MAX);
        assert!(detail.len() <= maestro_wire::limits::MAX_DESCRIPTION_BYTES, "{}", detail.len());
    }

    #[test]
    fn permits_are_bounded_and_given_back() {
        let held: Vec<Permit> = std::iter::from_fn(Permit::take).take(10).collect();
        assert_eq!(held.len(), MAX_SCANS_AT_ONCE);
        drop(held);
        assert!(Permit::take().is_some());
    }
}
