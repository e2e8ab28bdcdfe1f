//! `maestro-exec`: asks the agent for the active secrets' variables and runs a command with
//! them added to the caller's environment, like `env VAR=... CMD`, its output masked (the
//! injected values show as `<NAME>`; see [`mask`]); and, as subcommands, the credential helpers
//! that git and the AWS SDKs run themselves (never masked: their output is the protocol).
//!
//! It runs before every command, so it is small and quick: a blocking unix socket (opened
//! close-on-exec, so nothing of it reaches the command), arguments parsed by hand, no runtime,
//! no logging set-up, and no dependency but the wire crate, libc and nix. Exit status: the
//! command's own (it replaces this process, or with masking this process exits with it; 128 + N
//! when signal N ended it), 125 for maestro-exec's own errors, 126 when the command cannot run,
//! 127 when it is not found.
//!
//! Modules: [`args`] (the command line), [`client`] (the agent's socket), [`line`] (reading one
//! answer line), [`command`] (`--list` and running CMD), [`mask`] (output masking: the relay and
//! the pseudo-terminal), [`helpers`] (git and AWS), [`rfc3339`] (expiry times), [`scan`] (`scan`
//! and `git-hooks`: committed secrets); `unsafe` only in [`sys`] (two libc calls) and
//! [`mask::pty`] (three ioctls and a pre-exec hook).
#![deny(unsafe_code)]

pub mod args;
pub mod client;
pub mod command;
pub mod helpers;
pub mod line;
// Output masking; its pty module makes three ioctl(2) calls and a pre_exec hook (unsafe).
#[allow(unsafe_code)]
pub mod mask;
pub mod rfc3339;
pub mod scan;
// SO_PEERCRED and access(2) through libc: std wraps neither.
#[allow(unsafe_code)]
pub mod sys;

use std::ffi::OsString;
use std::io::{self, Write};

use crate::args::{Invocation, USAGE};
use crate::client::Failure;

/// maestro-exec's own errors.
pub const EXIT_OWN: i32 = 125;
/// The command exists but cannot be run.
pub const EXIT_CANNOT_RUN: i32 = 126;
/// The command is not found.
pub const EXIT_NOT_FOUND: i32 = 127;

/// The whole program; returns the exit status (when it did not exec).
pub fn main_with(args: &[OsString]) -> i32 {
    if let Some(code) = helpers::dispatch(args).or_else(|| scan::dispatch(args)) {
        return code;
    }
    let outcome = match args::parse(args) {
        Err(message) => Err(Failure(message)),
        Ok(Invocation::Help) => {
            let _ = io::stdout().write_all(USAGE.as_bytes());
            Ok(0)
        }
        Ok(Invocation::Version) => {
            let _ = writeln!(io::stdout(), "maestro-exec {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        Ok(Invocation::List { json }) => command::list(json),
        Ok(Invocation::Run { only, command, mask }) => command::run(only, command, mask),
    };
    match outcome {
        Ok(code) => code,
        Err(Failure(message)) => {
            eprintln!("maestro-exec: {message}");
            EXIT_OWN
        }
    }
}
