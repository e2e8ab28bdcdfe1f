//! The broker's rules, with no HTTP in them: each operation takes the broker's state
//! ([`crate::app::App`], which holds no axum type) and the caller it acts for, and returns a
//! [`DomainError`] with a stable code. The HTTP layer ([`crate::api`]) extracts, calls one of
//! these, and serializes; it maps a `DomainError` to a status and a JSON body in one place.
//! Tasks that are not HTTP (session expiry, OAuth refresh) call the same functions.
//!
//! * [`secrets`]: create, edit, delete, list; conflicts between secrets.
//! * [`validate`]: names, texts, tags and fields as users send them.
//! * [`sessions`]: create, end (by the user or at the TTL), what the owner sees.
//! * [`activation`]: activate and deactivate, serialized, all or nothing.
//! * [`material`]: what a secret provides, sealing and opening values (used by secrets and
//!   OAuth alike, so that neither needs the other for them).
//! * [`meta`]: what an owner sees of a secret (used by secrets and OAuth alike).
//! * [`audit`]: pages of the audit trail.
//! * [`history`]: filtered pages of the trail and a secret's usage summary.
//! * [`leak`]: `compromised`: deactivate everywhere, mark, revoke, rotation steps.
//! * [`agents`]: enrollment, renewal, material and usage reports of a session's agent.
//! * [`tokens`]: API tokens (scoped, expiring) and service accounts.
//! * [`alerts`] and [`webhook`]: unusual usage flagged (rules in [`alert_rules`]) and acted on.

pub mod activation;
pub mod agents;
pub mod alert_rules;
pub mod alerts;
pub mod audit;
pub mod error;
pub mod exposure;
pub mod history;
pub mod leak;
pub mod material;
pub mod meta;
pub mod secrets;
pub mod sessions;
pub mod teams;
pub mod tokens;
pub mod validate;
pub mod webhook;

pub use error::{DomainError, DomainResult};
