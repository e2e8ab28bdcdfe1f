//! The Maestro broker (placeholder docs, filled in below).
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod ca;
pub mod clock;
pub mod datadir;
pub mod events;
pub mod keys;
pub mod seal;
pub mod secrets;
pub mod sessions;
pub mod store;
pub mod tls;
pub mod tokens;
pub mod server;
