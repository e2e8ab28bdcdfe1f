//! Questions asked on a terminal: a hidden prompt for `--field-stdin` and a yes/no confirmation.
//!
//! Both happen only when the standard input is a terminal (and the prompt can be shown on
//! stderr), so scripts that pipe values or run `secrets rm` non-interactively never block.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use nix::sys::termios::{self, LocalFlags, SetArg, Termios};
use zeroize::Zeroizing;

/// Whether the user can be asked: stdin is a terminal and stderr shows the question.
pub fn interactive() -> bool {
    io::stdin().is_terminal() && io::stderr().is_terminal()
}

/// Puts the terminal back as it was, whatever way the prompt ends.
struct EchoRestore<'a> {
    fd: &'a OwnedFd,
    saved: Termios,
}

impl Drop for EchoRestore<'_> {
    fn drop(&mut self) {
        // Nothing more can be done if this fails; the shell's `reset` repairs a terminal.
        let _ = termios::tcsetattr(self.fd, SetArg::TCSANOW, &self.saved);
    }
}

/// Shows `prompt` on stderr and reads one line from the terminal on stdin with echo off.
/// Reads at most `cap` bytes; the trailing newline is not part of the answer.
pub fn read_hidden(prompt: &str, cap: usize) -> io::Result<Zeroizing<Vec<u8>>> {
    // A duplicate of fd 0, read directly: `io::stdin()`'s buffer would keep an unzeroized copy.
    let fd = io::stdin().as_fd().try_clone_to_owned()?;
    let saved = termios::tcgetattr(&fd).map_err(io::Error::from)?;
    let mut quiet = saved.clone();
    // Echo off, but the newline still echoed so the next output starts on its own line; ISIG
    // stays on, so Ctrl-C still stops the command (the guard cannot run then, hence ECHONL:
    // the user sees the newline and `stty echo` is the documented way back).
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    let mut err = io::stderr().lock();
    write!(err, "{prompt}")?;
    err.flush()?;
    termios::tcsetattr(&fd, SetArg::TCSAFLUSH, &quiet).map_err(io::Error::from)?;
    let guard = EchoRestore { fd: &fd, saved };
    let line = read_line(&mut File::from(fd.try_clone()?), cap);
    drop(guard);
    line
}

/// Asks `question [y/N]` on stderr and reads the answer from the terminal: yes only for `y`/`yes`.
pub fn confirm(question: &str) -> io::Result<bool> {
    let mut err = io::stderr().lock();
    write!(err, "{question} [y/N] ")?;
    err.flush()?;
    let fd = io::stdin().as_fd().try_clone_to_owned()?;
    let answer = read_line(&mut File::from(fd), 64)?;
    let answer = String::from_utf8_lossy(&answer).trim().to_ascii_lowercase();
    Ok(answer == "y" || answer == "yes")
}

/// Reads up to the first newline (not included), at most `cap` bytes, one byte at a time so
/// that nothing after the line is consumed.
fn read_line(reader: &mut dyn Read, cap: usize) -> io::Result<Zeroizing<Vec<u8>>> {
    // Allocated once: growing would leave copies of the value behind, never zeroized.
    let mut line = Zeroizing::new(Vec::with_capacity(cap));
    let mut byte = [0u8; 1];
    loop {
        match reader.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() >= cap => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "the line is too long"));
            }
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_stops_at_the_newline_and_the_cap() {
        let mut input: &[u8] = b"secret value\r\nrest";
        assert_eq!(&read_line(&mut input, 100).unwrap()[..], b"secret value");
        assert_eq!(input, b"rest");
        let mut long: &[u8] = b"0123456789\n";
        assert!(read_line(&mut long, 5).is_err());
        let mut none: &[u8] = b"";
        assert!(read_line(&mut none, 5).unwrap().is_empty());
    }
}
