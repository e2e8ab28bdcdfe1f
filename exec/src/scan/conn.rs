//! The scan side of the agent's socket: a connection that takes items (a header line, the
//! content in length-prefixed chunks, a zero length) and answers each with its findings. The
//! content is read here, with the caller's rights; the agent only matches it.
//!
//! A connection is replaced by a fresh one well before the agent's per-connection limits
//! (bytes, seconds), so a long history scan never runs into them.

use std::io::{self, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use maestro_wire::jsonline;
use maestro_wire::sock::{Action, Request, Response, ScanFinding, ScanItem, ScanLimits};
use zeroize::Zeroizing;

use crate::client::{self, Failure};
use crate::line;

/// How long the agent has to take a chunk or to answer an item.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest chunk sent (the agent may take more).
const CHUNK_BYTES: usize = 256 * 1024;
/// Longest answer line (at most 100 findings of a few dozen bytes each).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// The findings of one item.
#[derive(Debug, Default)]
pub struct Outcome {
    pub findings: Vec<ScanFinding>,
    /// Findings beyond those listed.
    pub more: u64,
    /// The content was cut at the item limit.
    pub truncated: bool,
    /// Reading the content failed part way (what was read is scanned).
    pub read_error: Option<io::Error>,
}

struct Open {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    limits: ScanLimits,
    since: Instant,
    sent: u64,
}

/// A scan connection to the agent, reopened as needed.
pub struct ScanConn {
    socket: PathBuf,
    open: Option<Open>,
    limits: Option<ScanLimits>,
}

impl ScanConn {
    /// Connects now, so that a missing agent is told before any work.
    pub fn new(socket: &Path) -> Result<ScanConn, Failure> {
        let mut conn = ScanConn { socket: socket.to_owned(), open: None, limits: None };
        conn.open()?;
        Ok(conn)
    }

    /// The largest item the agent takes.
    pub fn max_item_bytes(&self) -> u64 {
        self.limits.map_or(0, |l| l.max_item_bytes)
    }

    fn io_failure(&self, e: &io::Error) -> Failure {
        Failure(format!("scanning through the agent at {} failed: {e}", self.socket.display()))
    }

    fn open(&mut self) -> Result<&mut Open, Failure> {
        if self.open.is_none() {
            let mut writer = client::connect(&self.socket)?;
            writer
                .set_read_timeout(Some(IO_TIMEOUT))
                .and_then(|()| writer.set_write_timeout(Some(IO_TIMEOUT)))
                .map_err(|e| self.io_failure(&e))?;
            let request = jsonline::to_line(&Request::new(Action::Scan))
                .map_err(|_| Failure("cannot encode the request".to_owned()))?;
            // A refused uid is answered at once and closed: the answer is still there to read.
            if let Err(e) = writer.write_all(&request)
                && !matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset)
            {
                return Err(self.io_failure(&e));
            }
            let mut reader = BufReader::new(writer.try_clone().map_err(|e| self.io_failure(&e))?);
            let limits = match answer(&mut reader, &self.socket)? {
                Response::ScanReady { limits, secrets } => {
                    if secrets == 0 && self.limits.is_none() {
                        eprintln!(
                            "maestro-exec scan: warning: no active secret to look for (activate one \
                             for this session; values under 6 bytes are never looked for)"
                        );
                    }
                    limits
                }
                Response::Error { code, message } => return Err(client::refusal(code, message)),
                _ => return Err(unexpected()),
            };
            self.limits = Some(limits);
            self.open = Some(Open { writer, reader, limits, since: Instant::now(), sent: 0 });
        }
        self.open.as_mut().ok_or_else(unexpected)
    }

    /// Scans one item whose content is read from `content` (at most the agent's item limit;
    /// the rest is left unread and the outcome marked truncated). `size` is what the caller
    /// expects, to open a fresh connection before this one would reach its limits.
    pub fn scan(
        &mut self,
        item: &ScanItem,
        content: &mut dyn Read,
        size: u64,
    ) -> Result<Outcome, Failure> {
        if let Some(open) = &self.open {
            let l = open.limits;
            if open.sent.saturating_add(size) > l.max_connection_bytes / 2
                || open.since.elapsed().as_secs() >= l.max_connection_secs / 3
            {
                // Closing at an item boundary ends the connection cleanly.
                self.open = None;
            }
        }
        let socket = self.socket.clone();
        let open = self.open()?;
        let max_item = open.limits.max_item_bytes;
        let chunk_max = CHUNK_BYTES.min(open.limits.max_chunk_bytes as usize).max(1);
        let io_agent = |e: io::Error| {
            Failure(format!("scanning through the agent at {} failed: {e}", socket.display()))
        };
        let header =
            jsonline::to_line(item).map_err(|_| Failure("cannot encode a scan item".into()))?;
        let mut buf = Zeroizing::new(vec![0u8; chunk_max + 4]);
        let writer = &mut open.writer;
        let sent = (|| -> io::Result<(u64, bool, Option<io::Error>)> {
            writer.write_all(&header)?;
            let mut total: u64 = 0;
            loop {
                let room = usize::try_from(max_item - total).unwrap_or(usize::MAX).min(chunk_max);
                if room == 0 {
                    // At the limit: is there more?
                    let mut probe = [0u8; 1];
                    let truncated = matches!(content.read(&mut probe), Ok(n) if n > 0);
                    writer.write_all(&[0u8; 4])?;
                    return Ok((total, truncated, None));
                }
                let n = match content.read(&mut buf[4..4 + room]) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // The item is ended cleanly and the reading error told afterwards.
                        writer.write_all(&[0u8; 4])?;
                        return Ok((total, false, Some(e)));
                    }
                };
                let len = u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
                buf[..4].copy_from_slice(&len);
                writer.write_all(&buf[..4 + n])?;
                total += n as u64;
            }
            writer.write_all(&[0u8; 4])?;
            Ok((total, false, None))
        })();
        let (total, truncated, read_failure) = match sent {
            Ok(sent) => sent,
            Err(e) => {
                // The agent may have refused and closed: its reason is the better message.
                let reason = answer(&mut open.reader, &socket);
                self.open = None;
                return Err(match reason {
                    Ok(Response::Error { code, message }) => client::refusal(code, message),
                    _ => io_agent(e),
                });
            }
        };
        open.sent += total;
        match answer(&mut open.reader, &socket)? {
            Response::ScanResult { findings, more } => {
                Ok(Outcome { findings, more, truncated, read_error: read_failure })
            }
            Response::Error { code, message } => {
                self.open = None;
                Err(client::refusal(code, message))
            }
            _ => Err(unexpected()),
        }
    }
}

fn answer(reader: &mut BufReader<UnixStream>, socket: &Path) -> Result<Response, Failure> {
    let line = line::read_line(reader, MAX_ANSWER_BYTES)
        .map_err(|e| client::answer_failure(e, socket, IO_TIMEOUT))?;
    client::parse_answer(&line)
}

fn unexpected() -> Failure {
    Failure(
        "the agent answered something else than a scan result; use the maestro-exec that came \
         with the agent"
            .to_owned(),
    )
}
