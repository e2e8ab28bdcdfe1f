//! Shared fixture for the end-to-end tests: finds the real binaries, makes temporary
//! directories, starts the broker and the agent, and cleans up (processes, mounts) on drop,
//! dumping their logs when a test fails.
//!
//! * [`util`]: binaries, temp dirs, child processes that die with the test, log dumps.
//! * [`broker`]: a running `maestro-broker` with its data dir, the `maestro` CLI bound to it,
//!   and a test agent client holding a real enrolled certificate.
//! * [`agent`]: a running `maestro-agent` on a temporary mount, and `maestro-exec` runs.
//! * [`mariadb`]: a temporary MariaDB server.
//! * [`pg`]: a temporary PostgreSQL cluster, and brokers sharing one database.
//! * [`seed`]: a large audit trail written straight into a broker's database.
//! * [`browser`]: headless Chromium driven over WebDriver, for the web UI tests.

// The fixture is test code compiled as a library: panicking on a broken setup is its job.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod agent;
pub mod broker;
pub mod browser;
pub mod mariadb;
pub mod pg;
pub mod seed;
pub mod util;
