//! API tokens, service accounts and the operator's view of users, behind their own trait so
//! that each engine implements it beside [`crate::store::Store`] (statements in
//! `store/sql/tokens.rs`, tables of migration 9).
//!
//! * **api_tokens**: one row per token: its SHA-256 (never the token), a public id, the user it
//!   acts for, the service account it belongs to (none: the user's own), scopes, expiry and
//!   when it was last used. Revoking deletes the row, so the hash is gone with it.
//! * **service_accounts**: principals owned by a user (`owner_kind` `user`) or a team
//!   (`owner_kind` `team`). A team's service account's tokens have the team's row as their
//!   user, so they act as the team principal; [`TokenStore::authenticate`] finds a token whose
//!   user is a team only through such an account (a team never signs in otherwise). Removing
//!   one deletes its tokens.
//!
//! Tokens are not cached: every request reads its token row (one lookup by a unique index),
//! so a revocation, an expiry or a disabled user is seen at once by every broker that shares
//! the database, with no event to miss.

use super::{AuditRecord, StoreFuture, UserRecord};

/// What `owner_kind` says of a service account owned by a user.
pub const OWNER_USER: &str = "user";
/// What `owner_kind` says of a service account owned by a team (the team's `users.kind`).
pub const OWNER_TEAM: &str = "team";

/// A token as stored (without its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Public: 16 hex digits.
    pub id: String,
    pub user_id: i64,
    /// The service account's name; `None`: the user's own token.
    pub service_account: Option<String>,
    pub name: String,
    /// Scope names.
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// What authenticating a token finds: the token, and the user it acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAuth {
    pub token: TokenRecord,
    pub user: UserRecord,
    pub user_disabled: bool,
    /// The user's `kind`: `user`, or `team` for a team's service account's token.
    pub user_kind: String,
}

/// A service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountRecord {
    pub id: i64,
    pub owner_kind: String,
    pub owner_id: i64,
    pub name: String,
    pub description: Option<String>,
    pub created_at: i64,
    /// Its tokens (expired ones included).
    pub tokens: i64,
}

/// A user as the operator sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
    pub tokens: i64,
    pub secrets: i64,
    pub live_sessions: i64,
}

/// Why a change to tokens, service accounts or users was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The owner holds the most allowed already.
    Limit,
    /// The name is taken.
    Taken,
    /// No such row (for this owner).
    Missing,
    /// The user still has live sessions (to remove a user).
    LiveSessions(Vec<String>),
}

/// Tokens' and users' persistence.
pub trait TokenStore: Send + Sync {
    /// The token with this hash and its user, if any (expired or not: the caller judges). A
    /// token whose user is a team is found only if it belongs to a service account of that
    /// team; a user's token only if it is the user's own or of a service account of the user.
    fn authenticate<'a>(&'a self, token_hash: &'a [u8]) -> StoreFuture<'a, Option<TokenAuth>>;
    /// Sets a token's last use to `now` unless it was set at or after `since` already.
    fn touch_token<'a>(&'a self, id: &'a str, now: i64, since: i64) -> StoreFuture<'a, ()>;
    /// Adds a token with its hash and records `audit` in the same transaction;
    /// [`Refusal::Limit`] past `max` tokens of the user, [`Refusal::Missing`] if its service
    /// account is gone (the account is looked up among those of the token's user, of the
    /// user's kind: a team's token must name a team's account).
    fn insert_token<'a>(
        &'a self,
        token: &'a TokenRecord,
        token_hash: &'a [u8],
        max: i64,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, Result<(), Refusal>>;
    /// A user's tokens and their service accounts', oldest first.
    fn list_tokens(&self, user_id: i64) -> StoreFuture<'_, Vec<TokenRecord>>;
    /// The user (or team) a token acts for, if the token exists.
    fn token_owner<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<i64>>;
    /// Revokes (deletes) a token of the user's and records `audit` with it; whether it existed
    /// (nothing is recorded when it did not).
    fn delete_token<'a>(
        &'a self,
        user_id: i64,
        id: &'a str,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, bool>;

    /// Adds a service account owned by a user or a team (`owner_kind`, [`OWNER_USER`] or
    /// [`OWNER_TEAM`]), recording `audit` with it.
    #[allow(clippy::too_many_arguments)]
    fn insert_service_account<'a>(
        &'a self,
        owner_kind: &'a str,
        owner_id: i64,
        name: &'a str,
        description: Option<&'a str>,
        now: i64,
        max: i64,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, Result<ServiceAccountRecord, Refusal>>;
    /// The service accounts a user or team owns, by name.
    fn list_service_accounts(&self, owner_id: i64) -> StoreFuture<'_, Vec<ServiceAccountRecord>>;
    /// Removes a service account of the user's (or team's) and its tokens, recording `audit` with it; how
    /// many tokens went with it.
    fn delete_service_account<'a>(
        &'a self,
        owner_id: i64,
        name: &'a str,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, Result<i64, Refusal>>;

    /// Every user, by name.
    fn list_users(&self, now: i64) -> StoreFuture<'_, Vec<UserSummary>>;
    /// Disables (`Some(time)`) or enables (`None`) a user; whether the user exists.
    fn set_user_disabled<'a>(
        &'a self,
        name: &'a str,
        disabled_at: Option<i64>,
    ) -> StoreFuture<'a, bool>;
    /// Removes a user and everything they own (secrets and their keys, sessions, providers,
    /// tokens, service accounts, alerts); their audit trail stays (it is append-only).
    /// Refused while they have live sessions.
    fn delete_user<'a>(&'a self, name: &'a str, now: i64) -> StoreFuture<'a, Result<(), Refusal>>;
}
