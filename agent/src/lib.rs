//! The sandbox side of Maestro secrets: `maestro-agent` (the image entrypoint) and
//! `maestro-exec` (what the sandbox user runs in terminals).
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
//!   fds, locked memory), [`privs`] (capabilities behind a trait), [`logging`].
//! * broker: [`identity`] (key pair, CSR), [`broker`] (the mTLS client), [`framing`] (event lines),
//!   [`link`] (stream, reconnects, lease watchdog, renewal), [`backoff`].
//! * secrets: [`state`] (the active set, rendering, fail-closed lease), [`usage`] (audit reports).
//! * socket: [`listener`], [`dispatch`], [`actions`], [`jsonline`].
//! * processes: [`child`] (CMD as the sandbox user, reaping), [`teardown`], [`run`] (wiring).
//! * [`exec`]: `maestro-exec`, which uses none of the above but [`jsonline`]: it stays small.
//! * [`helpers`]: `maestro-exec`'s credential helpers for git and the AWS SDKs.
//!
//! No secret value reaches a log line, an error message, argv, the environment of the agent or a
//! file: values live in [`maestro_wire::SecretValue`] and zeroizing buffers only.

pub mod actions;
pub mod backoff;
pub mod broker;
pub mod cgroup;
pub mod child;
pub mod config;
pub mod dispatch;
pub mod exec;
pub mod framing;
pub mod harden;
pub mod helpers;
pub mod identity;
pub mod jsonline;
pub mod link;
pub mod listener;
pub mod logging;
pub mod privs;
pub mod run;
pub mod state;
pub mod teardown;
pub mod usage;
