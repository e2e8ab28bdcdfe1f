//! The pseudo-terminal CMD runs under when maestro-exec's stdout is a terminal, so that CMD
//! still sees one (colours, line editing, `isatty`): opened with the real terminal's settings
//! and window size, made CMD's controlling terminal, resized when the real one is, and the real
//! terminal put in raw mode while CMD runs (keys go to CMD's terminal, which interprets them)
//! and restored on every way out ([`RawMode`] restores on drop, and maestro-exec's signals are
//! all handled, never fatal).
//!
//! nix has no wrapper for the window-size ioctls nor for TIOCSCTTY: those three are libc calls.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::pty::{OpenptyResult, Winsize, openpty};
use nix::sys::termios::{self, SetArg, Termios};

/// The window size of terminal `fd`, if it is one.
pub fn window_size(fd: BorrowedFd<'_>) -> Option<Winsize> {
    let mut ws = Winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one `winsize` into `ws`, which lives for the whole call; `fd`
    // is borrowed, so open.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &raw mut ws) };
    (rc == 0).then_some(ws)
}

/// Sets the window size of terminal `fd` (on a pty master, the kernel then sends SIGWINCH to
/// the foreground process group of its slave).
pub fn set_window_size(fd: BorrowedFd<'_>, ws: &Winsize) -> io::Result<()> {
    // SAFETY: TIOCSWINSZ reads one `winsize` from `ws`, borrowed for the whole call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, std::ptr::from_ref(ws)) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Opens a pseudo-terminal like the real terminal `like` (its settings and window size).
pub fn open_like(like: BorrowedFd<'_>) -> io::Result<OpenptyResult> {
    let settings = termios::tcgetattr(like).ok();
    let size = window_size(like);
    openpty(size.as_ref(), settings.as_ref()).map_err(io::Error::from)
}

/// Makes the pty whose slave is CMD's stdout the controlling terminal of a new session for CMD
/// (as a login does), so that CMD's terminal signals (^C, ^Z, ^\) and job control work.
pub fn control_terminal(cmd: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec and calls only setsid(2)
    // and ioctl(2), both async-signal-safe; it allocates nothing. By then std has made the
    // slave the child's stdout (fd 1).
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(io::Error::from)?;
            if libc::ioctl(1, libc::TIOCSCTTY, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The real terminal in raw mode while alive; restored (to what it was) when dropped.
pub struct RawMode {
    fd: OwnedFd,
    saved: Termios,
    raw: Termios,
}

impl RawMode {
    /// Puts terminal `fd` in raw mode, unless maestro-exec runs in the background of it (setting
    /// a terminal from the background would stop us with SIGTTOU) or it is no terminal.
    pub fn enter(fd: BorrowedFd<'_>) -> Option<RawMode> {
        let foreground = nix::unistd::tcgetpgrp(fd).ok()? == nix::unistd::getpgrp();
        if !foreground {
            return None;
        }
        let saved = termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        let fd = fd.try_clone_to_owned().ok()?;
        termios::tcsetattr(&fd, SetArg::TCSADRAIN, &raw).ok()?;
        Some(RawMode { fd, saved, raw })
    }

    /// Gives the terminal its own settings back for a while (CMD stopped, see the relay).
    pub fn restore(&self) {
        let _ = termios::tcsetattr(self.fd.as_fd(), SetArg::TCSADRAIN, &self.saved);
    }

    /// Raw mode again, when maestro-exec is continued.
    pub fn reapply(&self) {
        let _ = termios::tcsetattr(self.fd.as_fd(), SetArg::TCSADRAIN, &self.raw);
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        self.restore();
    }
}
