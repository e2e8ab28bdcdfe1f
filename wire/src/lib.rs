//! Wire types shared by every Maestro component, and the integrations catalog.
//!
//! This crate is the one place where the protocols live:
//!
//! * [`api`]: the broker's user API (bearer token over HTTPS), used by the `maestro` CLI.
//! * [`agent_api`]: the broker's agent API (mutual TLS), used by `maestro-agent`.
//! * [`sock`]: the agent's unix-socket protocol, used by `maestro-exec`.
//! * [`alerts`]: unusual-usage rules, alert actions and the `/v1/alerts` types.
//! * [`oauth`]: OAuth provider presets and the `/v1/oauth` API types.
//! * [`catalog`]: integration kinds as data: fields, defaults, validation, variables, files.
//! * [`matcher`]: finding secret values and their encodings in byte streams (masking, scanning).
//! * [`secret`]: [`SecretValue`], the only type that carries a secret value.
//! * [`jsonline`]: one JSON message per line in zeroizing buffers (the agent socket's framing).
//! * [`errors`] and [`logging`]: how every binary prints an error and caps library logs.
//!
//! It does no I/O. Secret values only ever travel inside [`SecretValue`], which redacts itself
//! in `Debug`/`Display` and zeroizes its memory on drop, so a value cannot reach a log line by
//! accident.
#![forbid(unsafe_code)]

pub mod agent_api;
pub mod alerts;
pub mod api;
pub mod catalog;
pub mod datadir;
pub mod decoys;
pub mod duration;
pub mod errors;
pub mod export;
pub mod jsonline;
pub mod limits;
pub mod logging;
pub mod matcher;
pub mod meta;
pub mod names;
pub mod oauth;
pub mod secret;
pub mod sock;
pub mod teams;
pub mod text;
pub mod tokens;

pub use secret::SecretValue;

/// Version of the agent socket protocol and of the agent API. Bumped on incompatible changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// The URI SAN prefix of every session certificate: `spiffe://maestro/session/<id>`.
pub const SESSION_URI_PREFIX: &str = "spiffe://maestro/session/";

/// The URI SAN that names a session in its client certificate.
pub fn session_uri(session_id: &str) -> String {
    format!("{SESSION_URI_PREFIX}{session_id}")
}
