//! Output masking (issue 12): when it injected values worth masking, `maestro-exec CMD` runs
//! CMD as its child instead of exec'ing it, and relays CMD's stdout and stderr through a
//! `maestro_wire::matcher::Masker` each, so that an injected value, or one of its common
//! encodings, shows as `<NAME>` (the secret's name). When stdout is a terminal, CMD runs under a
//! pseudo-terminal ([`pty`]) so that it still sees a terminal; otherwise under pipes. Signals are
//! forwarded and CMD's exit status (128 + signal when a signal ended it) becomes maestro-exec's
//! ([`relay`]).
//!
//! Masking is a safety net against a value landing in a transcript or a log by accident, not a
//! boundary: CMD can always transform a value in a way no encoding list covers.

pub mod pty;
pub mod relay;

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use maestro_wire::matcher::MIN_VALUE_LEN;
use maestro_wire::sock::EnvVar;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::client::Failure;
use relay::{LazyMatcher, Output, Relay};

/// The signals maestro-exec handles while CMD runs (all but SIGCHLD forwarded to it).
const SIGNALS: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGWINCH,
    Signal::SIGCHLD,
];

/// A pipe this large takes a fast writer's output in fewer reads (best effort).
const PIPE_SIZE: i32 = 1 << 20;

/// Whether any injected value is long enough to be masked: if not, CMD is exec'd as without
/// masking, at no cost.
pub fn needed(vars: &[EnvVar]) -> bool {
    vars.iter().any(|v| v.secret.is_some() && v.value.expose().len() >= MIN_VALUE_LEN)
}

fn own(fd: std::os::fd::BorrowedFd<'_>, what: &str) -> Result<File, Failure> {
    fd.try_clone_to_owned().map(File::from).map_err(|e| {
        Failure(format!(
            "cannot duplicate {what} to mask the command's output ({e}); run it with --no-mask"
        ))
    })
}

fn cloexec(fd: &OwnedFd) -> io::Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map(|_| ()).map_err(io::Error::from)
}

fn is_tty(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    nix::unistd::isatty(fd).unwrap_or(false)
}

/// Runs `path` (argv[0] `program`) with `vars` as a child and relays its output masked.
/// `Ok(Err(e))` is a failure to start CMD (the caller turns it into 126 or 127).
pub fn run(
    path: &Path,
    program: &OsStr,
    args: &[OsString],
    vars: Vec<EnvVar>,
) -> Result<Result<i32, io::Error>, Failure> {
    // These fail only when the system is out of descriptors or has no ptys: say so, and how to
    // run the command anyway.
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        Failure(format!("{what} to mask the command's output ({e}); run it with --no-mask"))
    };
    let (stdin, stdout, stderr) = (io::stdin(), io::stdout(), io::stderr());
    // A terminal on stdout gets CMD a pty; without one to open (no /dev/pts in a container),
    // CMD runs under pipes as when stdout is no terminal.
    let opened = if is_tty(stdout.as_fd()) { pty::open_like(stdout.as_fd()).ok() } else { None };

    let mut cmd = Command::new(path);
    cmd.arg0(program).args(args);
    for v in &vars {
        cmd.env(&v.name, v.value.expose());
    }
    let mut master = None;
    let mut keys_to_pty = false;
    if let Some(opened) = opened {
        let pty_err = |e: io::Error| fail("cannot set up a pseudo-terminal", &e);
        cloexec(&opened.master).and_then(|()| cloexec(&opened.slave)).map_err(pty_err)?;
        let slave = |s: &OwnedFd| s.try_clone().map(Stdio::from);
        let slave_err = pty_err;
        cmd.stdout(slave(&opened.slave).map_err(slave_err)?);
        if is_tty(stderr.as_fd()) {
            cmd.stderr(slave(&opened.slave).map_err(slave_err)?);
        } else {
            cmd.stderr(Stdio::piped());
        }
        if is_tty(stdin.as_fd()) {
            cmd.stdin(slave(&opened.slave).map_err(slave_err)?);
            keys_to_pty = true;
        }
        pty::control_terminal(&mut cmd);
        master = Some(File::from(opened.master));
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    // The command's copies of the values and of the slave go now.
    drop(cmd);
    // Blocked only now: CMD inherits the signal mask, and std's posix_spawn (the quick way to
    // start it) cannot clear it. A SIGCHLD of a CMD that already ended is not lost: the relay
    // asks for CMD's status once before waiting. A signal in between acts as without
    // maestro-exec between (^C reaches CMD too; a SIGTERM for maestro-exec alone leaves CMD
    // with closed pipes).
    let mut set = SigSet::empty();
    SIGNALS.iter().for_each(|s| set.add(*s));
    set.thread_block().map_err(|e| fail("cannot block signals", &e))?;
    let signals = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| fail("cannot receive signals", &e))?;
    let matcher = LazyMatcher::new(vars);

    // Keys go to CMD's terminal, which interprets them; the real terminal is raw meanwhile
    // and restored on every way out of here. In the background of the terminal (where reading
    // it would stop maestro-exec), no keys are read.
    let raw = if keys_to_pty { pty::RawMode::enter(stdin.as_fd()) } else { None };
    let mut outputs = Vec::new();
    let mut input = None;
    let mut resize = None;
    if let Some(master) = master {
        let again =
            |f: &File| f.try_clone().map_err(|e| fail("cannot duplicate the pseudo-terminal", &e));
        if raw.is_some() {
            input = Some((own(stdin.as_fd(), "stdin")?, again(&master)?));
        }
        resize = Some((own(stdout.as_fd(), "stdout")?, again(&master)?));
        outputs.push(Output {
            from: Some(master),
            to: own(stdout.as_fd(), "stdout")?,
            masker: None,
            pty: true,
        });
    }
    if let Some(pipe) = child.stdout.take() {
        outputs.push(piped(OwnedFd::from(pipe), own(stdout.as_fd(), "stdout")?));
    }
    if let Some(pipe) = child.stderr.take() {
        outputs.push(piped(OwnedFd::from(pipe), own(stderr.as_fd(), "stderr")?));
    }
    // The relay owns the raw mode (it gives the terminal back while CMD is stopped); dropping
    // the relay, however `run` ends, restores the terminal.
    let code = Relay { outputs, input, resize, signals, child, matcher: &matcher, raw }.run()?;
    Ok(Ok(code))
}

fn piped<'m>(pipe: OwnedFd, to: File) -> Output<'m> {
    let _ = fcntl(&pipe, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    Output { from: Some(File::from(pipe)), to, masker: None, pty: false }
}
