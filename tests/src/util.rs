//! Binaries, temporary directories and child processes for the tests.
//!
//! * [`bin`] finds a workspace binary next to the test executable (`target/debug/`), or fails
//!   with a message that says how to build it.
//! * [`temp_dir`] makes a temporary directory that is removed on drop.
//! * [`ChildGuard`] runs a process with its output captured line by line; dropping it kills
//!   the process (SIGKILL) and, when the test is failing, prints everything the process said.

// A test fixture: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The directory that holds the workspace's binaries (`target/debug`), found from the test
/// executable's own path (`target/debug/deps/<test>-<hash>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let mut dir = exe.parent().expect("the test executable is in a directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The path of a workspace binary, e.g. `bin("maestro-broker")`.
///
/// # Panics
/// If the binary has not been built; the message says which command builds it.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` before the end-to-end tests \
         (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A temporary directory, removed when dropped.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().expect("can make a temporary directory")
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => out.push(path),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// The files under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            let mut bytes = Vec::new();
            std::fs::File::open(p).and_then(|mut f| f.read_to_end(&mut bytes)).is_ok()
                && bytes.windows(needle.len()).any(|w| w == needle)
        })
        .collect()
}

/// Pids of the processes of `uid` (the sandbox user's, for the memory scans).
pub fn uid_pids(uid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid))
        .collect()
}

/// Where `needle` is in the environment, command line or readable memory of `pid`, if anywhere
/// (`/proc/PID/mem`, read as root: a secret the sandbox must never hold, searched for in full).
pub fn process_holds(pid: u32, needle: &[u8]) -> Option<String> {
    for what in ["environ", "cmdline"] {
        if let Ok(bytes) = std::fs::read(format!("/proc/{pid}/{what}"))
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            return Some(what.to_owned());
        }
    }
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else { continue };
        if !perms.starts_with('r') {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else { continue };
        let (a, b) = (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap());
        if b - a > 1 << 30 || mem.seek(SeekFrom::Start(a)).is_err() {
            continue;
        }
        let mut buf = vec![0u8; (b - a) as usize];
        let mut read = 0;
        while read < buf.len() {
            match mem.read(&mut buf[read..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
        if buf[..read].windows(needle.len()).any(|w| w == needle) {
            return Some(format!("memory {line}"));
        }
    }
    None
}

/// A running child process whose stdout and stderr are captured.
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    stdout_lines: Receiver<String>,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

fn pump(
    stream: impl Read + Send + 'static,
    tag: &'static str,
    log: Arc<Mutex<String>>,
    lines: Option<Sender<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end_matches('\n').to_owned();
                    if let Ok(mut log) = log.lock() {
                        log.push_str(tag);
                        log.push_str(&line);
                        log.push('\n');
                    }
                    if let Some(tx) = &lines {
                        let _ = tx.send(line);
                    }
                }
            }
        }
    })
}

impl ChildGuard {
    /// Starts `command` with stdout and stderr captured (stdin closed).
    pub fn spawn(name: &str, mut command: Command) -> Self {
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child =
            command.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = channel();
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(pump(out, "", log.clone(), Some(tx)));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(pump(err, "", log.clone(), None));
        }
        Self {
            name: name.to_owned(),
            child: Some(child),
            log,
            stdout_lines: rx,
            readers,
            status: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits for a stdout line that satisfies `pred`; returns it, or `None` at the timeout or
    /// when the process closes its stdout (exits).
    pub fn wait_for_stdout(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout_lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return Some(line),
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Everything the process wrote so far (stdout and stderr, interleaved by line).
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits for the process to exit by itself, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.status = Some(status);
                self.join_readers();
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }

    /// Sends a signal.
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        self.signal(Signal::SIGKILL);
        if let Some(child) = self.child.as_mut() {
            self.status = child.wait().ok();
        }
        self.join_readers();
    }

    /// SIGTERM and wait up to `timeout` for a clean exit; SIGKILL after that. Returns the
    /// exit status of a clean exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal(Signal::SIGTERM);
        match self.wait_exit(timeout) {
            Some(status) => Some(status),
            None => {
                self.kill9();
                None
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.is_running() {
            self.kill9();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- {} output -----\n{}----- end of {} output -----",
                self.name,
                self.log(),
                self.name
            );
        }
    }
}

/// The current time in RFC 3339 (UTC, whole seconds), as agents date their usage reports.
pub fn now_rfc3339() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
