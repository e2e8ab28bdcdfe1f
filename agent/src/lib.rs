//! `maestro-agent`, the sandbox image's entrypoint. (`maestro-exec`, what the sandbox user runs in
//! terminals, and its credential helpers are their own crate, `maestro-exec`: they share nothing
//! with the agent but the wire crate.)
//!
//! The agent enrolls with the broker (its key is made in memory and never written), follows
//! the session's event stream, holds the active secrets in locked memory, shows them as files
//! under a FUSE mount and hands their variables to `maestro-exec` over a unix socket. It fails
//! closed when it loses the broker for longer than its lease, and on session end it unmounts,
//! zeroizes, removes its socket, ends the processes it started and exits.
//!
//! Modules, by job:
//!
//! * start-up: [`config`] (validated settings), [`harden`] (non-dumpable, no core, no inherited
//!   fds, locked memory), [`privs`] (capabilities behind a trait), [`logging`], [`cgroup`] (the
//!   session's processes).
//! * broker: [`identity`] (key pair, CSR), [`broker`] (the mTLS client), [`framing`] (event lines),
//!   [`link`] (stream, reconnects, lease watchdog, renewal), [`backoff`].
//! * secrets: [`state`] (the active set, rendering, fail-closed lease), [`usage`] (audit reports),
//!   [`decoys`] (decoy credentials and their values).
//! * socket: [`listener`], [`dispatch`], [`actions`], [`scan`] (`maestro-exec scan`'s matching).
//! * processes: [`child`] (CMD as the sandbox user, reaping), [`teardown`], [`run`] (wiring).
//!
//! `unsafe` is denied here except in the modules that make raw system calls, each allowed at its
//! declaration below with the reason.
//!
//! No secret value reaches a log line, an error message, argv, the environment of the agent or a
//! file: values live in [`maestro_wire::SecretValue`] and zeroizing buffers only.
#![deny(unsafe_code)]

pub mod actions;
pub mod backoff;
pub mod broker;
pub mod cgroup;
// prctl, setres[ug]id, setgroups, close_range and a cgroup write between fork and exec.
#[allow(unsafe_code)]
pub mod child;
pub mod config;
pub mod decoys;
pub mod dispatch;
pub mod exec_tree;
pub mod framing;
// close_range, close, mlockall, and the environment change before any thread exists.
#[allow(unsafe_code)]
pub mod harden;
pub mod identity;
pub mod link;
pub mod listener;
pub mod logging;
pub mod placeholders;
pub mod privs;
pub mod proxy;
pub mod relay;
pub mod sealing;
pub mod served;
// One call: harden::scrub_environment, sound only before the runtime's threads start.
#[allow(unsafe_code)]
pub mod run;
pub mod scan;
pub mod ssh;
pub mod state;
pub mod teardown;
pub mod usage;
