//! The relay loop: CMD's output streams each go through their own [`Masker`] to maestro-exec's
//! stdout or stderr; the real terminal's keys go to CMD's pty; signals are forwarded; and the
//! loop ends with CMD's exit status once its output has ended.
//!
//! One thread and poll(2): the signals arrive on a signalfd (blocked otherwise, so none of them
//! can kill maestro-exec and leave the terminal raw). A stream's held-back bytes (the end of a
//! read that may begin a value) are let through after [`IDLE`] without new output, except a
//! beginning of a value (see [`Masker::flush_idle`]).
//!
//! Job control under a pty: ^Z reaches CMD through its terminal and stops it there; the relay
//! then gives the real terminal back (restored), stops itself so that the user's shell takes
//! over, and on `fg` puts the terminal back in raw mode, copies its size, and continues CMD.
//!
//! The matcher is built when the first output arrives ([`LazyMatcher`]): a command that prints
//! nothing never pays for it.

use std::cell::{OnceCell, RefCell};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::Child;

use maestro_wire::SecretValue;
use maestro_wire::matcher::{Masker, Matcher};
use maestro_wire::sock::EnvVar;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::signalfd::{SignalFd, siginfo};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use zeroize::Zeroizing;

use crate::client::Failure;
use crate::mask::pty;

/// How long a stream stays quiet before its held-back bytes are let through, in ms.
pub const IDLE: u16 = 20;
/// One read's worth of output, once output flows.
const CHUNK: usize = 256 * 1024;
/// The first reads' buffer: a command that prints little never touches (nor zeroizes) more.
const FIRST_CHUNK: usize = 4096;

/// The matcher for the injected values, built on first use; the values are kept (in zeroizing
/// types) until then and dropped once it is built.
pub struct LazyMatcher {
    vars: RefCell<Option<Vec<EnvVar>>>,
    built: OnceCell<Matcher>,
}

impl LazyMatcher {
    pub fn new(vars: Vec<EnvVar>) -> Self {
        Self { vars: RefCell::new(Some(vars)), built: OnceCell::new() }
    }

    /// The matcher, built now if it was not yet.
    pub fn get(&self) -> Result<&Matcher, Failure> {
        if let Some(m) = self.built.get() {
            return Ok(m);
        }
        let vars = self.vars.borrow_mut().take().unwrap_or_default();
        let named: Vec<(String, &SecretValue)> =
            vars.iter().filter_map(|v| v.secret.as_ref().map(|s| (s.clone(), &v.value))).collect();
        let m = Matcher::new(&named).map_err(|e| Failure(e.to_string()))?;
        Ok(self.built.get_or_init(|| m))
    }
}

/// One output stream of CMD's: a pipe, or the pty's master.
pub struct Output<'m> {
    /// `None` once the stream ended (or its reader went away).
    pub from: Option<File>,
    pub to: File,
    /// Made with the stream's first bytes.
    pub masker: Option<Masker<'m>>,
    /// A pty master: EIO means every slave is closed, and after CMD exits it is drained
    /// rather than read to the end (background processes may hold the slave forever).
    pub pty: bool,
}

/// Everything the loop needs.
pub struct Relay<'m> {
    pub outputs: Vec<Output<'m>>,
    /// The real terminal's keys and CMD's pty master (pty mode with a terminal on stdin).
    pub input: Option<(File, File)>,
    /// Pty mode: the real terminal (its size is copied) and the master (where it is copied to).
    pub resize: Option<(File, File)>,
    pub signals: SignalFd,
    pub child: Child,
    pub matcher: &'m LazyMatcher,
    /// Pty mode with the keys forwarded: the real terminal's raw mode.
    pub raw: Option<pty::RawMode>,
}

impl<'m> Relay<'m> {
    /// Relays until CMD has exited and its output ended; returns CMD's exit status.
    pub fn run(mut self) -> Result<i32, Failure> {
        let mut buf = Zeroizing::new(vec![0u8; FIRST_CHUNK]);
        let mut out = Zeroizing::new(Vec::new());
        // CMD may have ended before its SIGCHLD could be caught (see `mask::run`).
        let mut status = self.reap();
        loop {
            if status.is_some() {
                for o in self.outputs.iter_mut().filter(|o| o.pty && o.from.is_some()) {
                    drain(o, self.matcher, &mut buf, &mut out)?;
                }
                if self.outputs.iter().all(|o| o.from.is_none()) {
                    break;
                }
            }
            let pending = self
                .outputs
                .iter()
                .any(|o| o.from.is_some() && o.masker.as_ref().is_some_and(|m| m.pending() > 0));
            let (ready, signalled, typed) = self.wait(pending)?;
            if ready.iter().all(|r| !r) && !signalled && !typed {
                // Quiet for IDLE: let the held-back bytes through.
                for o in &mut self.outputs {
                    out.clear();
                    if let Some(m) = &mut o.masker {
                        m.flush_idle(&mut out);
                    }
                    emit(o, &out);
                }
                continue;
            }
            for (o, _) in self.outputs.iter_mut().zip(ready).filter(|(_, r)| *r) {
                let n = read_once(o, self.matcher, &mut buf, &mut out)?;
                if n == buf.len() && buf.len() < CHUNK {
                    // Output flows: read it in large chunks from now on (the small buffer is
                    // zeroized as it goes; `out` only ever holds masked bytes).
                    buf = Zeroizing::new(vec![0u8; CHUNK]);
                }
            }
            if typed {
                self.forward_input(&mut buf);
            }
            // After the output: what CMD wrote before it stopped or ended is shown first.
            if signalled {
                while let Ok(Some(info)) = self.signals.read_signal() {
                    self.on_signal(&info);
                }
                if status.is_none() {
                    status = self.reap();
                }
            }
        }
        match status {
            Some(code) => Ok(code),
            None => {
                let s = self.child.wait();
                let s = s.map_err(|e| Failure(format!("cannot wait for the command: {e}")))?;
                Ok(s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)))
            }
        }
    }

    /// CMD's exit status if it ended (128 + N for signal N). When CMD stopped under its pty
    /// (^Z), stops maestro-exec too, with the real terminal restored, and continues CMD when
    /// maestro-exec is continued.
    fn reap(&mut self) -> Option<i32> {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).ok()?);
        loop {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG | WaitPidFlag::WUNTRACED)) {
                Ok(WaitStatus::Exited(_, code)) => return Some(code),
                Ok(WaitStatus::Signaled(_, signal, _)) => return Some(128 + signal as i32),
                Ok(WaitStatus::Stopped(..)) if self.resize.is_some() => self.suspend(pid),
                Err(nix::errno::Errno::EINTR) => {}
                _ => return None,
            }
        }
    }

    fn suspend(&mut self, cmd: Pid) {
        // Everything CMD wrote shows before the shell's prompt: a pty hands its output over a
        // little after the writer's stop is reported, so wait for it a moment.
        let mut out = Zeroizing::new(Vec::new());
        let mut buf = Zeroizing::new(vec![0u8; FIRST_CHUNK]);
        let matcher = self.matcher;
        for o in self.outputs.iter_mut().filter(|o| o.pty) {
            while let Some(from) = &o.from {
                let mut fds = [PollFd::new(from.as_fd(), PollFlags::POLLIN)];
                if !matches!(poll(&mut fds, PollTimeout::from(IDLE)), Ok(n) if n > 0) {
                    break;
                }
                if !matches!(read_once(o, matcher, &mut buf, &mut out), Ok(n) if n > 0) {
                    break;
                }
            }
        }
        for o in &mut self.outputs {
            out.clear();
            if let Some(m) = &mut o.masker {
                m.flush_idle(&mut out);
            }
            emit(o, &out);
        }
        if let Some(raw) = &self.raw {
            raw.restore();
        }
        // SIGTSTP is not among the blocked signals: this stops maestro-exec until `fg`.
        let _ = nix::sys::signal::raise(Signal::SIGTSTP);
        if let Some(raw) = &self.raw {
            raw.reapply();
        }
        if let Some((terminal, master)) = &self.resize
            && let Some(size) = pty::window_size(terminal.as_fd())
        {
            let _ = pty::set_window_size(master.as_fd(), &size);
        }
        let _ = kill(cmd, Signal::SIGCONT);
    }

    /// Polls; returns which open outputs are readable, whether a signal came and whether a
    /// key came. All false after IDLE when something is held back.
    fn wait(&self, pending: bool) -> Result<(Vec<bool>, bool, bool), Failure> {
        let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
        let open: Vec<BorrowedFd<'_>> =
            self.outputs.iter().filter_map(|o| o.from.as_ref().map(|f| f.as_fd())).collect();
        fds.extend(open.iter().map(|fd| PollFd::new(*fd, PollFlags::POLLIN)));
        if let Some((keys, _)) = &self.input {
            fds.push(PollFd::new(keys.as_fd(), PollFlags::POLLIN));
        }
        let timeout = if pending { PollTimeout::from(IDLE) } else { PollTimeout::NONE };
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {
                return Ok((vec![false; self.outputs.len()], true, false));
            }
            Err(e) => return Err(Failure(format!("cannot wait for the command's output: {e}"))),
        }
        let hit = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
        let signalled = hit(&fds[0]);
        let mut it = fds[1..1 + open.len()].iter();
        let ready =
            self.outputs.iter().map(|o| o.from.is_some() && it.next().is_some_and(hit)).collect();
        let typed =
            self.input.is_some() && fds.last().is_some_and(hit) && fds.len() > 1 + open.len();
        Ok((ready, signalled, typed))
    }

    /// Forwards a signal to CMD, or copies the terminal's new size to CMD's pty.
    fn on_signal(&mut self, info: &siginfo) {
        let Ok(signal) = Signal::try_from(i32::try_from(info.ssi_signo).unwrap_or(0)) else {
            return;
        };
        if signal == Signal::SIGCHLD {
            return;
        }
        if let Some((terminal, master)) = &self.resize {
            if signal == Signal::SIGWINCH {
                if let Some(size) = pty::window_size(terminal.as_fd()) {
                    let _ = pty::set_window_size(master.as_fd(), &size);
                }
                return;
            }
        } else if info.ssi_code == libc::SI_KERNEL {
            // Under pipes CMD shares our terminal's process group: a signal from the terminal
            // (^C, a resize, a hang-up) reached it as well; forwarding would deliver it twice.
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// Copies what the terminal has to CMD's pty.
    fn forward_input(&mut self, buf: &mut [u8]) {
        let Some((keys, master)) = &mut self.input else { return };
        let done = match keys.read(buf) {
            Ok(0) => true,
            Ok(n) => master.write_all(&buf[..n]).is_err(),
            Err(e) => !matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock),
        };
        if done {
            self.input = None;
        }
    }
}

/// Reads once from `o` and writes the masked result; ends the stream on end of file. Returns
/// how many bytes came.
fn read_once<'m>(
    o: &mut Output<'m>,
    matcher: &'m LazyMatcher,
    buf: &mut [u8],
    out: &mut Vec<u8>,
) -> Result<usize, Failure> {
    let Some(from) = &mut o.from else { return Ok(0) };
    out.clear();
    match from.read(buf) {
        Ok(0) => {}
        Ok(n) => {
            let masker = match &mut o.masker {
                Some(m) => m,
                None => o.masker.insert(Masker::new(matcher.get()?)),
            };
            masker.push(&buf[..n], out);
            emit(o, out);
            return Ok(n);
        }
        Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock) => {
            return Ok(0);
        }
        // EIO from a pty master: every slave is closed. Anything else: the stream is gone.
        Err(_) => {}
    }
    if let Some(m) = &mut o.masker {
        m.finish(out);
    }
    emit(o, out);
    o.from = None;
    Ok(0)
}

/// After CMD exited: reads what its pty still holds, without waiting, and ends the stream.
fn drain<'m>(
    o: &mut Output<'m>,
    matcher: &'m LazyMatcher,
    buf: &mut [u8],
    out: &mut Vec<u8>,
) -> Result<(), Failure> {
    if let Some(from) = &o.from {
        let flags = fcntl(from, FcntlArg::F_GETFL).map(OFlag::from_bits_truncate);
        if let Ok(flags) = flags {
            let _ = fcntl(from, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK));
        }
    }
    while read_once(o, matcher, buf, out)? > 0 {}
    if o.from.take().is_some() {
        out.clear();
        if let Some(m) = &mut o.masker {
            m.finish(out);
        }
        emit(o, out);
    }
    Ok(())
}

/// Writes masked bytes; when the reader is gone (EPIPE), stops reading the stream too, so that
/// CMD meets the closed pipe as it would without maestro-exec.
fn emit(o: &mut Output<'_>, bytes: &[u8]) {
    if !bytes.is_empty() && o.to.write_all(bytes).is_err() {
        o.from = None;
    }
}
