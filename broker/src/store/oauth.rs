//! What OAuth keeps, behind its own trait so that each store engine implements it beside
//! [`crate::store::Store`] without either trait knowing of the other.
//!
//! Three tables (migration 2 of `store/schema.rs` and `store/pg_schema.rs`; the statements are
//! in `store/sql/oauth.rs`):
//!
//! * **providers**: per user; the client secret sealed under the provider's own data key;
//! * **authorizations**: pending connections, keyed by the SHA-256 of their single-use `state`
//!   (the state itself and the PKCE verifier are never stored);
//! * **tokens**: one row per OAuth secret: the refresh token sealed under the row's own data
//!   key (the access token is the secret's catalog field, sealed like any value), expiry,
//!   granted scopes, when to refresh, and whether the user must re-authorize.
//!
//! The data keys of providers and token rows live in the shared `data_keys` table, so that
//! `rotate-master-key` re-wraps them with the others ([`OAuthStore::oauth_data_keys`]); a
//! trigger deletes a row's key with the row. A secret made or refreshed by OAuth is written
//! with its token row and audit record in one transaction.

use super::{AuditRecord, DataKeyRecord, SealedField, SecretRecord, StoreFuture};

/// A registered provider.
#[derive(Debug, Clone)]
pub struct ProviderRecord {
    /// Random, `oauthp-` and hex: part of its sealed secret's associated data.
    pub id: String,
    pub owner_id: i64,
    pub name: String,
    pub preset: String,
    pub kind: String,
    pub token_field: String,
    pub client_id: String,
    pub auth_url: String,
    pub token_url: String,
    pub revoke_url: Option<String>,
    /// The allowed set.
    pub scopes: Vec<String>,
    pub data_key_id: String,
    pub wrapped_key: Vec<u8>,
    /// Sealed.
    pub client_secret: Vec<u8>,
    pub created_at: i64,
}

/// What removing a provider did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderRemoval {
    Removed,
    /// No provider of that name.
    Missing,
    /// Refused: these secrets hold its tokens.
    InUse(Vec<String>),
}

/// An authorization's stored status (see `maestro_wire::oauth::AuthorizationState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingStatus {
    Pending,
    Exchanging,
    Done,
    Failed,
    Expired,
    Cancelled,
}

impl PendingStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Exchanging => "exchanging",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    /// The status of a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Exchanging, Self::Done, Self::Failed, Self::Expired, Self::Cancelled]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// An authorization that was started.
#[derive(Debug, Clone)]
pub struct PendingRecord {
    pub id: String,
    /// SHA-256 of the `state`.
    pub state_hash: Vec<u8>,
    pub owner_id: i64,
    pub provider_id: String,
    /// Joined from the provider, for answers.
    pub provider_name: String,
    pub secret_name: String,
    /// Set for `reconnect`: the secret whose tokens it replaces.
    pub reconnect_secret_id: Option<String>,
    pub scopes: Vec<String>,
    pub status: PendingStatus,
    pub message: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub finished_at: Option<i64>,
}

/// The OAuth state of one secret.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub secret_id: String,
    pub provider_id: String,
    pub data_key_id: String,
    pub wrapped_key: Vec<u8>,
    /// One more at each store of a refresh token: its sealed blob is bound to it.
    pub generation: u64,
    /// Sealed; `None` when the provider gave none.
    pub refresh_token: Option<Vec<u8>>,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// When the access token expires (unix seconds); `None`: it does not.
    pub expires_at: Option<i64>,
    /// When to refresh next (unix milliseconds); `None`: never.
    pub refresh_at_ms: Option<i64>,
    /// Transient refresh failures in a row.
    pub failures: u32,
    /// Set when the provider refused a refresh: why, and what to run.
    pub needs_reauth: Option<String>,
    pub last_refresh_at: Option<i64>,
    pub updated_at: i64,
}

/// A token row with what the refresh task and the API need to act on it.
#[derive(Debug, Clone)]
pub struct TokenView {
    pub token: TokenRecord,
    pub owner_id: i64,
    pub secret_name: String,
    pub provider_name: String,
}

/// OAuth's persistence. Every method that changes more than one row does it in one
/// transaction; [`crate::store::StoreError::Changed`] when a guarded row moved meanwhile.
pub trait OAuthStore: Send + Sync {
    // Providers.

    /// Adds a provider and its data key; [`crate::store::StoreError::AlreadyExists`] if the
    /// user has one of that name.
    fn insert_provider<'a>(&'a self, provider: &'a ProviderRecord) -> StoreFuture<'a, ()>;
    fn provider_by_name<'a>(
        &'a self,
        owner_id: i64,
        name: &'a str,
    ) -> StoreFuture<'a, Option<ProviderRecord>>;
    fn provider_by_id<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<ProviderRecord>>;
    /// A user's providers, by name.
    fn list_providers(&self, owner_id: i64) -> StoreFuture<'_, Vec<ProviderRecord>>;
    /// Replaces provider `old`'s editable columns by `new`'s (same id). A new data key (a new
    /// client secret) is stored and the old one deleted, in one transaction;
    /// [`crate::store::StoreError::Changed`] if the row changed since `old` was read.
    fn update_provider<'a>(
        &'a self,
        old: &'a ProviderRecord,
        new: &'a ProviderRecord,
    ) -> StoreFuture<'a, ()>;
    /// Removes a provider of the owner's (its pending authorizations and data key with it),
    /// unless secrets use it.
    fn delete_provider<'a>(
        &'a self,
        owner_id: i64,
        name: &'a str,
    ) -> StoreFuture<'a, ProviderRemoval>;

    // Authorizations.

    /// Adds an authorization, and forgets those that ended more than a day ago.
    fn insert_pending<'a>(&'a self, pending: &'a PendingRecord) -> StoreFuture<'a, ()>;
    fn pending_by_id<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<PendingRecord>>;
    fn pending_by_state<'a>(
        &'a self,
        state_hash: &'a [u8],
    ) -> StoreFuture<'a, Option<PendingRecord>>;
    /// Moves an authorization from `from` to `to` (with a message) if it is still in `from`;
    /// whether it did. This is what makes a `state` single-use.
    fn move_pending<'a>(
        &'a self,
        id: &'a str,
        from: PendingStatus,
        to: PendingStatus,
        message: Option<&'a str>,
        now: i64,
    ) -> StoreFuture<'a, bool>;

    // Secrets with tokens.

    /// Stores a new secret (its data key, fields), its token row (with its data key) and the
    /// audit record, and marks the authorization `done`, in one transaction.
    fn insert_oauth_secret<'a>(
        &'a self,
        secret: &'a SecretRecord,
        fields: &'a [SealedField],
        token: &'a TokenRecord,
        pending_id: &'a str,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, ()>;
    /// Replaces version `old_version` of a secret by `secret` (new data key and fields) and its
    /// token row of `old_generation` by `token`, records `audit`, and marks the authorization
    /// `done` when one is given, in one transaction.
    #[allow(clippy::too_many_arguments)]
    fn replace_oauth_secret<'a>(
        &'a self,
        old_version: u64,
        secret: &'a SecretRecord,
        fields: &'a [SealedField],
        old_generation: u64,
        token: &'a TokenRecord,
        pending_id: Option<&'a str>,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, ()>;
    /// The token row of a secret, if it is an OAuth secret.
    fn token<'a>(&'a self, secret_id: &'a str) -> StoreFuture<'a, Option<TokenView>>;

    // Refresh.

    /// The earliest `refresh_at_ms` of the tokens that do not need re-authorization.
    fn next_refresh_at(&self) -> StoreFuture<'_, Option<i64>>;
    /// Secret ids whose refresh is due at `now_ms`, earliest first, at most `limit`.
    fn due_refreshes(&self, now_ms: i64, limit: i64) -> StoreFuture<'_, Vec<String>>;
    /// Takes a due refresh for this broker: moves its `refresh_at_ms` to `lease_until_ms` if
    /// it is still due and of `generation`; whether it did (another broker sharing the store
    /// may have taken it).
    fn claim_refresh<'a>(
        &'a self,
        secret_id: &'a str,
        generation: u64,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> StoreFuture<'a, bool>;
    /// Schedules the next attempt after a transient failure (`failures` in a row), with an
    /// audit record when one is given.
    fn reschedule_refresh<'a>(
        &'a self,
        secret_id: &'a str,
        generation: u64,
        refresh_at_ms: i64,
        failures: u32,
        audit: Option<&'a AuditRecord>,
    ) -> StoreFuture<'a, ()>;
    /// Marks a token as needing re-authorization (no more refreshes) and records `audit`;
    /// whether the row was still of `generation`.
    fn mark_needs_reauth<'a>(
        &'a self,
        secret_id: &'a str,
        generation: u64,
        reason: &'a str,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, bool>;

    // Keys.

    /// The wrapped data keys of providers and token rows, with what they are bound to, for
    /// master key rotation (the binding's `secret_id` is the provider id, or
    /// `<secret id>/oauth`; its version is 1).
    fn oauth_data_keys(&self) -> StoreFuture<'_, Vec<DataKeyRecord>>;
}
