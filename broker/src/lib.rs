//! # maestro-broker
//!
//! The broker is the only place where Maestro secrets live at rest, and the only party that
//! decides which sandbox session may have which secret. It keeps secrets sealed in a store,
//! runs a small certificate authority, serves the user API (bearer token) and the agent API
//! (mutual TLS) on one HTTPS port, pushes each session's changes to its agent as they happen,
//! and keeps an append-only audit trail of every use.
//!
//! ## What it does
//!
//! * **Seals values** ([`seal`]): XChaCha20-Poly1305 per field value, under a random data key
//!   per secret version, wrapped by a master key kept outside the database ([`keys`]). The
//!   associated data binds each ciphertext to its owner, secret, version and field, so a moved,
//!   replayed or flipped ciphertext fails with an integrity error, never a wrong value.
//! * **Stores** ([`store`]) behind one object-safe trait; SQLite (WAL, `synchronous=FULL`,
//!   `secure_delete=ON`) is the embedded default. Every change and its audit record commit in
//!   one transaction.
//! * **Issues certificates** ([`ca`]): one CA per broker; a session's agent trades a one-time
//!   enrollment token (10 minutes, single use) and a CSR for a short-lived client certificate.
//! * **Serves** ([`api`], [`server`]): the user API (`maestro_wire::api`) and the agent API
//!   (`maestro_wire::agent_api`), every error as a JSON `ApiError`.
//! * **Pushes events** ([`events`]): a snapshot on connect, then activated, deactivated,
//!   updated and ended, with heartbeats, as NDJSON on one long-lived response.
//! * **Keeps its rules** ([`domain`]) apart from HTTP: secrets, sessions and activation,
//!   material (sealing and opening), audit pages, each returning a domain error with a stable
//!   code that the HTTP layer maps once.
//! * **Ends sessions** ([`domain::sessions`]) by request or at their TTL, for good.
//!
//! * **Bounds what clients can hold** ([`conn`], [`api`]): a cap on open connections, header,
//!   body and idle timeouts, per-route body limits, a per-session quota of usage records
//!   ([`quota`]); and the process is not dumpable, has no core limit and locks its memory where
//!   the host allows ([`harden`]).
//!
//! ## What it never does
//!
//! * It never writes a secret value to a file, a log line (at any level, `trace` included), an
//!   error message or a panic. Values travel in [`maestro_wire::SecretValue`], which redacts
//!   itself; the request log names routes, never bodies or headers; JSON errors name positions
//!   and fields, never values. Tests plant values and search every file and a trace log.
//! * It never returns a value on the user API: values travel one way, in. Only a session's
//!   agent, holding that session's certificate, gets the values of the secrets active in it.
//! * It never makes a new master key when the old one is missing and the database holds data.
//!
//! ## CA and mutual TLS policy
//!
//! * Client certificates are optional in the TLS handshake so that both APIs share one port;
//!   a certificate that is presented must chain to the broker's CA, be within its validity and
//!   carry the client-auth EKU, or the handshake fails (and the reason is logged, since a TLS 1.3
//!   client often sees only a closed connection).
//! * The session is read from the certificate's URI SAN `spiffe://maestro/session/<id>` and
//!   from nowhere else. The session must be live: an ended session's certificate gets 403 and a
//!   `denied` audit record; expiry is checked again per request because HTTP/2 connections
//!   outlive certificates.
//! * Of a session's certificates only the newest is accepted, and the one it replaced for a
//!   short overlap after a renewal (`--renew-overlap`); only the newest may renew.
//! * Of a CSR only the public key is used (after its signature is checked). The certificate's
//!   subject, SAN, `CA:FALSE`, client-auth EKU, random 128-bit serial and validity are the
//!   broker's: at most the session's remaining life, 24 hours, and `--cert-ttl`.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod ca;
pub mod clock;
pub mod conn;
pub mod datadir;
pub mod domain;
pub mod events;
pub mod harden;
pub mod keys;
pub mod oauth;
pub mod quota;
pub mod seal;
pub mod server;
pub mod store;
pub mod tls;
pub mod tokens;
pub mod ui;
