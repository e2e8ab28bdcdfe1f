//! Persistence behind one trait, so that the broker does not care which database holds it.
//!
//! One implementation, [`sql::SqlStore`], serves both engines with the same statements:
//! [`sqlite::SqliteStore`] is the embedded default, [`postgres::PgStore`] is for several
//! brokers sharing one store. The trait is object-safe (every method returns a boxed future)
//! so that the engine can be chosen at start-up ([`engine`]). Every behaviour of the trait is
//! tested once, on both engines, by the contract suite in `testing.rs`.
//!
//! What the store holds: users (token hashes), secrets (metadata and the id of their data key),
//! field ciphertexts, wrapped data keys, sessions, activations, enrollment tokens (hashes), issued
//! certificates, and the append-only audit trail. It never sees a plaintext value or key: sealing
//! happens before, in [`crate::seal`].
//!
//! Every method that changes more than one row does so in one transaction, and every mutation
//! that the user can see records its audit row in that same transaction.

pub mod alerts;
pub mod engine;
pub mod oauth;
pub mod pg_events;
pub mod pg_schema;
pub mod postgres;
pub mod schema;
pub mod sql;
pub mod sqlite;
pub mod teams;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tokens;

use std::future::Future;
use std::pin::Pin;

use maestro_wire::api::AuditAction;
use maestro_wire::catalog::seal::Exposure;

/// A future returned by a [`Store`] method.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Why a store operation failed. Messages name tables and steps, never values.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error("cannot open the database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    /// A schema migration failed at start-up.
    #[error("database migration {version} failed: {source}")]
    Migrate { version: i64, source: sqlx::Error },
    /// The database was written by a newer broker.
    #[error(
        "the database has schema version {found}, newer than this broker ({supported}); upgrade maestro-broker"
    )]
    TooNew { found: i64, supported: i64 },
    /// A query failed.
    #[error("database error while {step}: {source}")]
    Query { step: &'static str, source: sqlx::Error },
    /// A row holds something this broker cannot read back.
    #[error("the database holds an unreadable {what}; it was edited by hand or is corrupt")]
    Corrupt { what: &'static str },
    /// A unique name is taken.
    #[error("{what} '{name}' already exists")]
    AlreadyExists { what: &'static str, name: String },
    /// A row disappeared or changed between read and write (a concurrent edit or delete).
    #[error("the {what} changed while this request was working on it; retry")]
    Changed { what: &'static str },
    /// The session ended before the change could be recorded.
    #[error("the session has ended")]
    SessionEnded,
    /// The enrollment token is unknown, already used, or expired.
    #[error("the enrollment token is unknown, already used, or expired")]
    TokenUnusable,
    /// `rotate-master-key` on a shared database while brokers serve on it.
    #[error(
        "brokers are serving on {database}; stop every broker that shares it, then rotate the master key"
    )]
    BrokersServing { database: String },
    /// A broker starting on a shared database while the master key is being rotated.
    #[error(
        "a master key rotation is running on {database}; start the broker again when it has finished"
    )]
    RotationRunning { database: String },
    /// A broker whose CA is not the one the other brokers on a shared database use.
    #[error(
        "{file} is not the CA of the brokers on {database}: copy ca.key and ca.pem (with master.key) from the data directory of a broker that uses this database"
    )]
    ForeignCa { file: String, database: String },
    /// The operating system's random source failed.
    #[error("cannot make {what}: the system's random source failed")]
    Random { what: &'static str },
}

/// Held while a change to what is active where is checked and written (see
/// [`Store::lock_owner`]); released when dropped.
#[must_use = "the lock is released when this value is dropped"]
#[derive(Default)]
pub struct OwnerLock {
    _held: Option<Box<dyn Send>>,
}

impl OwnerLock {
    /// A lock that lasts as long as `held` (a transaction holding an advisory lock, ...).
    pub fn holding(held: impl Send + 'static) -> Self {
        Self { _held: Some(Box::new(held)) }
    }
}

/// Shorthand for mapping a `sqlx::Error` to [`StoreError::Query`].
pub(crate) fn query_failed(step: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { step, source }
}

/// A user of the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: i64,
    pub name: String,
}

/// One version of a secret: metadata and its wrapped data key (values are in [`SealedField`]s).
#[derive(Debug, Clone)]
pub struct SecretRecord {
    /// Random, never reused; part of every field's associated data.
    pub id: String,
    pub owner_id: i64,
    pub name: String,
    pub kind: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub version: u64,
    /// Names of its fields, sorted.
    pub field_names: Vec<String>,
    pub data_key_id: String,
    pub wrapped_key: Vec<u8>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Plain or sealed (rows from before sealing read back as plain).
    pub exposure: Exposure,
    /// The hosts the owner named for a sealed secret; empty: the kind's defaults.
    pub hosts: Vec<String>,
    /// When its owner declared it compromised; cleared by an edit that changes a value.
    pub compromised_at: Option<i64>,
    /// How long its activations last and how often its value should change (migration 8).
    pub life: Lifecycle,
}

/// A secret's activation times, rotation period and the time its value last changed
/// (migration 8). Durations are seconds; `None`: not set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lifecycle {
    /// How long an activation lasts when `activate` names no time.
    pub activation_default: Option<i64>,
    /// The longest activation allowed.
    pub activation_max: Option<i64>,
    /// Past this age its value is due for rotation.
    pub rotate_every: Option<i64>,
    /// When its value last changed: created, or an edit or refresh that gave a field a new
    /// value (an edit of metadata or settings only keeps it). Rows from before migration 8
    /// read their `updated_at`.
    pub value_changed_at: i64,
}

/// One secret active in a live session (a row of `activations` with names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationRow {
    pub session_id: String,
    pub session_label: Option<String>,
    pub secret_id: String,
    pub secret_name: String,
    /// The secret's owner: the session's owner, or a team (migration 10).
    pub secret_owner_id: i64,
    pub activated_at: i64,
    /// When it is deactivated by the broker; `None`: at the session's end.
    pub expires_at: Option<i64>,
}

/// An activation to add or renew: the secret, and until when (`None`: the session's end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewActivation {
    pub secret_id: String,
    pub expires_at: Option<i64>,
}

/// One sealed field value.
#[derive(Debug, Clone)]
pub struct SealedField {
    pub name: String,
    pub blob: Vec<u8>,
}

/// An active secret with everything its agent's fetch needs, read in one statement (one
/// snapshot): the record, its sealed fields (sorted by name) and, for an OAuth secret, its
/// token state.
#[derive(Debug, Clone)]
pub struct ActiveMaterial {
    pub secret: SecretRecord,
    pub fields: Vec<SealedField>,
    /// `None` for a secret that is not OAuth's.
    pub oauth: Option<OAuthState>,
    /// When the activation ends (`activate --for`); `None`: at the session's end.
    pub active_until: Option<i64>,
}

/// What an agent learns of an OAuth secret's token besides its fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OAuthState {
    /// When the access token expires (unix seconds), if the provider said.
    pub expires_at: Option<i64>,
    /// Why the secret needs re-authorization, if it does.
    pub needs_reauth: Option<String>,
}

/// A wrapped data key with what it is bound to, for master key rotation.
#[derive(Debug, Clone)]
pub struct DataKeyRecord {
    pub id: String,
    pub owner_id: i64,
    pub secret_id: String,
    pub version: u64,
    pub wrapped: Vec<u8>,
}

/// A session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    pub owner_id: i64,
    pub label: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub ended_at: Option<i64>,
    pub ended_reason: Option<String>,
    pub enrolled: bool,
    /// Created with decoys (`sessions create --decoys`, migration 6).
    pub decoys: bool,
    /// Which client certificates of the session are still accepted.
    pub serials: SessionSerials,
}

/// The serials of a session's accepted certificates: the newest, and for a short overlap
/// after a renewal the one before it (an agent may have requests in flight with it). Every
/// other certificate of the session, though within its validity, is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionSerials {
    /// The newest certificate's serial (hex); `None` before enrollment.
    pub current: Option<String>,
    /// The certificate the newest replaced, accepted until `previous_until`.
    pub previous: Option<String>,
    pub previous_until: Option<i64>,
}

impl SessionSerials {
    /// Whether a certificate with `serial` (lower-case hex) is accepted at `now`.
    pub fn accepts(&self, serial: &str, now: i64) -> bool {
        self.current.as_deref() == Some(serial)
            || (self.previous.as_deref() == Some(serial)
                && self.previous_until.is_some_and(|until| now < until))
    }
}

impl SessionRecord {
    /// Whether the session can still be used at `now`.
    pub fn is_live(&self, now: i64) -> bool {
        self.ended_at.is_none() && self.expires_at > now
    }
}

/// A one-time enrollment token (its hash).
#[derive(Debug, Clone)]
pub struct EnrollmentRecord {
    pub token_hash: Vec<u8>,
    pub session_id: String,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// A certificate the CA issued.
#[derive(Debug, Clone)]
pub struct CertificateRecord {
    /// Hex.
    pub serial: String,
    pub session_id: String,
    pub not_before: i64,
    pub not_after: i64,
    pub issued_at: i64,
    /// `enroll` or `renew`.
    pub reason: &'static str,
}

/// One audit record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub owner_id: i64,
    pub at: i64,
    pub action: AuditAction,
    /// The secret's id, when the record is about a secret that existed.
    pub secret_id: Option<String>,
    pub secret_name: Option<String>,
    pub session_id: Option<String>,
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    pub command: Option<String>,
    pub detail: Option<String>,
    /// For a coalesced usage report: how many uses it stands for (`None`: one).
    pub count: Option<u64>,
    /// For a coalesced usage report: when the last of its uses happened (`at` is the first).
    pub last_at: Option<i64>,
    /// The executable the kernel reported for `pid` (its full path).
    pub exe: Option<String>,
    /// The command name the process claimed for itself, when it differs: a detail.
    pub claimed_command: Option<String>,
}

impl AuditRecord {
    /// A record with only the required parts; fill in the rest with struct update syntax.
    pub fn new(owner_id: i64, at: i64, action: AuditAction) -> Self {
        Self {
            owner_id,
            at,
            action,
            secret_id: None,
            secret_name: None,
            session_id: None,
            pid: None,
            uid: None,
            command: None,
            detail: None,
            count: None,
            last_at: None,
            exe: None,
            claimed_command: None,
        }
    }
}

/// An appended audit record with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: i64,
    pub record: AuditRecord,
}

/// How a secret has been used, from the audit trail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageSummary {
    pub last_used_at: Option<i64>,
    /// Most recent first, without repeats.
    pub sessions: Vec<String>,
}

/// Where a filtered audit listing starts ([`AuditQuery`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditPosition {
    /// The newest records.
    #[default]
    Newest,
    /// The newest records with a sequence number below this one (paging towards older).
    Before(i64),
    /// The oldest records with a sequence number above this one (paging towards newer, and
    /// following the trail as it grows).
    After(i64),
}

/// A filtered page of a user's audit trail. Every filter that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub owner_id: i64,
    pub secret_name: Option<String>,
    /// Any of these sessions (a label can name several).
    pub sessions: Option<Vec<String>>,
    /// Any of these actions; empty: every action.
    pub actions: Vec<AuditAction>,
    pub command: Option<String>,
    pub uid: Option<u32>,
    /// `at` at or after this time (unix seconds).
    pub since: Option<i64>,
    /// `at` at or before this time.
    pub until: Option<i64>,
    pub position: AuditPosition,
    pub limit: i64,
}

/// One group of a secret's uses: one session, one command, one UTC day (day number since the
/// epoch), summed over the records of the group. See [`Store::secret_usage_groups`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageGroup {
    pub session_id: Option<String>,
    pub command: Option<String>,
    pub day: i64,
    pub uses: i64,
    pub records: i64,
    pub first_at: i64,
    pub last_at: i64,
}

/// The broker's persistence. See the module docs for its guarantees.
pub trait Store: Send + Sync {
    // Serialization across brokers.

    /// Serializes changes to what is active where (activate, deactivate, edit, delete) of one
    /// owner across every broker that shares the store, so that a conflict check and the write
    /// it guards see the same state. Hold it from before the check until after the write. The
    /// default does nothing: a store that one broker owns is serialized by that broker's mutex.
    fn lock_owner(&self, _owner_id: i64) -> StoreFuture<'_, OwnerLock> {
        Box::pin(async { Ok(OwnerLock::default()) })
    }

    // Meta and keys.

    /// A small value of the store's own (the master key check, ...).
    fn meta_get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;
    /// Sets a meta value.
    fn meta_put<'a>(&'a self, key: &'a str, value: &'a [u8]) -> StoreFuture<'a, ()>;
    /// Every wrapped data key.
    fn data_keys(&self) -> StoreFuture<'_, Vec<DataKeyRecord>>;
    /// Replaces every wrapped data key and the master key check, in one transaction. Fails
    /// with [`StoreError::Changed`] if the set of keys changed meanwhile.
    fn rewrap_data_keys<'a>(
        &'a self,
        rewrapped: &'a [(String, Vec<u8>)],
        check_key: &'a str,
        check_value: &'a [u8],
    ) -> StoreFuture<'a, ()>;

    // Users.

    /// Adds a user; [`StoreError::AlreadyExists`] if the name is taken.
    fn create_user<'a>(
        &'a self,
        name: &'a str,
        token_hash: &'a [u8],
        now: i64,
    ) -> StoreFuture<'a, UserRecord>;
    /// The user whose token has this hash.
    fn user_by_token<'a>(&'a self, token_hash: &'a [u8]) -> StoreFuture<'a, Option<UserRecord>>;
    /// How many users there are.
    fn user_count(&self) -> StoreFuture<'_, i64>;

    // Secrets.

    /// Adds a secret with its fields and data key.
    fn insert_secret<'a>(
        &'a self,
        secret: &'a SecretRecord,
        fields: &'a [SealedField],
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, ()>;
    /// A user's secret by name.
    fn secret_by_name<'a>(
        &'a self,
        owner_id: i64,
        name: &'a str,
    ) -> StoreFuture<'a, Option<SecretRecord>>;
    /// A user's secrets, by name.
    fn list_secrets(&self, owner_id: i64) -> StoreFuture<'_, Vec<SecretRecord>>;
    /// The sealed fields of a secret's current version.
    fn secret_fields<'a>(&'a self, secret_id: &'a str) -> StoreFuture<'a, Vec<SealedField>>;
    /// Replaces a secret's version `old_version` by `secret` (a higher version, a new data key)
    /// and its fields; the old data key and ciphertexts are deleted. [`StoreError::Changed`]
    /// if the stored version is no longer `old_version`.
    fn replace_secret<'a>(
        &'a self,
        old_version: u64,
        secret: &'a SecretRecord,
        fields: &'a [SealedField],
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, ()>;
    /// Deletes a secret, its fields, its data key and its activations; records `Deleted` and a
    /// `Deactivated` per live session it was active in, which it returns.
    fn delete_secret<'a>(
        &'a self,
        secret: &'a SecretRecord,
        now: i64,
    ) -> StoreFuture<'a, Vec<String>>;
    /// Marks a secret compromised at `now` (kept if it already was) and deactivates it in every
    /// live session, in one transaction: records `audit` (the `Compromised` record) and a
    /// `Deactivated` per session, which it returns. [`StoreError::Changed`] if the secret is
    /// gone.
    fn mark_compromised<'a>(
        &'a self,
        secret: &'a SecretRecord,
        now: i64,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, Vec<String>>;
    /// Last use and the sessions that used a secret (fetched, injected, file read).
    fn secret_usage<'a>(&'a self, secret_id: &'a str) -> StoreFuture<'a, UsageSummary>;
    /// Live sessions in which a secret is active.
    fn secret_active_in<'a>(&'a self, secret_id: &'a str) -> StoreFuture<'a, Vec<String>>;
    /// A page of a secret's audit trail: its newest `limit` records with a sequence number
    /// below `before` (all when `None`), oldest first.
    fn secret_history<'a>(
        &'a self,
        owner_id: i64,
        secret_id: &'a str,
        before: Option<i64>,
        limit: i64,
    ) -> StoreFuture<'a, Vec<AuditRow>>;

    // Sessions.

    /// Adds a session with its enrollment token.
    fn insert_session<'a>(
        &'a self,
        session: &'a SessionRecord,
        token: &'a EnrollmentRecord,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, ()>;
    /// A session by id, whoever owns it.
    fn session<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<SessionRecord>>;
    /// A user's sessions, newest first.
    fn list_sessions(&self, owner_id: i64) -> StoreFuture<'_, Vec<SessionRecord>>;
    /// Ends a live session (final): clears its activations and records `SessionEnded`.
    /// Returns the ended session, or `None` if it was already ended.
    fn end_session<'a>(
        &'a self,
        id: &'a str,
        reason: &'a str,
        now: i64,
    ) -> StoreFuture<'a, Option<SessionRecord>>;
    /// Live sessions whose TTL has passed at `now`.
    fn expired_sessions(&self, now: i64) -> StoreFuture<'_, Vec<String>>;
    /// The secrets active in a session, by name.
    fn active_secrets<'a>(&'a self, session_id: &'a str) -> StoreFuture<'a, Vec<SecretRecord>>;
    /// The sealed material of the secrets active in a session, by name: all of them (`name`
    /// `None`) or the one named (empty if it is not active there). One statement, so the
    /// record, its fields and its token state come from the same snapshot.
    fn active_material<'a>(
        &'a self,
        session_id: &'a str,
        name: Option<&'a str>,
    ) -> StoreFuture<'a, Vec<ActiveMaterial>>;
    /// Adds and removes activations of a live session, with their audit records, in one
    /// transaction; [`StoreError::SessionEnded`] if the session is no longer live.
    fn change_activations<'a>(
        &'a self,
        session_id: &'a str,
        add: &'a [String],
        remove: &'a [String],
        now: i64,
        audit: &'a [AuditRecord],
    ) -> StoreFuture<'a, ()>;

    /// Adds activations to a live session, or sets the end of those already there (an
    /// activation renewed with a new time), with their audit records, in one transaction;
    /// [`StoreError::SessionEnded`] if the session is no longer live.
    fn activate<'a>(
        &'a self,
        session_id: &'a str,
        add: &'a [NewActivation],
        now: i64,
        audit: &'a [AuditRecord],
    ) -> StoreFuture<'a, ()>;
    /// The secrets active in live sessions of `owner_id`'s, by session then secret name:
    /// all, or those of one session, or those of one secret.
    fn list_activations<'a>(
        &'a self,
        owner_id: i64,
        session_id: Option<&'a str>,
        secret_id: Option<&'a str>,
    ) -> StoreFuture<'a, Vec<ActivationRow>>;
    /// The owners with an activation whose end has passed at `now`.
    fn owners_with_expired_activations(&self, now: i64) -> StoreFuture<'_, Vec<i64>>;
    /// Deletes `owner_id`'s activations whose end has passed at `now` and records an `expired`
    /// audit record for each, in one transaction; returns what it deleted. Each activation is
    /// deleted (and recorded) once, whichever broker sharing the store gets there first.
    fn expire_activations(&self, owner_id: i64, now: i64) -> StoreFuture<'_, Vec<ActivationRow>>;

    // Enrollment and certificates.

    /// An enrollment token by hash.
    fn enrollment<'a>(&'a self, token_hash: &'a [u8]) -> StoreFuture<'a, Option<EnrollmentRecord>>;
    /// Marks the token used and records the certificate, in one transaction.
    /// [`StoreError::TokenUnusable`] if the token was used or expired meanwhile,
    /// [`StoreError::SessionEnded`] if the session ended.
    fn complete_enrollment<'a>(
        &'a self,
        token_hash: &'a [u8],
        now: i64,
        cert: &'a CertificateRecord,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, ()>;
    /// Records a renewed certificate: it becomes the session's current one, and the one it
    /// replaces stays accepted until `previous_until` (then only the new one is).
    fn record_certificate<'a>(
        &'a self,
        cert: &'a CertificateRecord,
        previous_until: i64,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, ()>;

    // Audit.

    /// The secrets that were ever activated in a session (active now or not), as
    /// `(name, secret id)` from its `activated` audit records: what its agent may report use of.
    fn session_activation_history<'a>(
        &'a self,
        session_id: &'a str,
    ) -> StoreFuture<'a, Vec<(String, Option<String>)>>;

    /// Appends records in one transaction (an agent's usage batch).
    fn append_audit<'a>(&'a self, records: &'a [AuditRecord]) -> StoreFuture<'a, ()>;
    /// A page of a user's audit trail: the newest `limit` records with a sequence number below
    /// `before` (all when `None`), oldest first.
    fn audit_for_owner(
        &self,
        owner_id: i64,
        before: Option<i64>,
        limit: i64,
    ) -> StoreFuture<'_, Vec<AuditRow>>;
    /// A filtered page of a user's audit trail (see [`AuditQuery`]), oldest first.
    fn audit_query<'a>(&'a self, query: &'a AuditQuery) -> StoreFuture<'a, Vec<AuditRow>>;
    /// A secret's uses ([`AuditAction::USES`]) grouped by session, command and UTC day, with
    /// coalesced records counted by their use count. One index-only scan (migration 5).
    fn secret_usage_groups<'a>(
        &'a self,
        owner_id: i64,
        secret_id: &'a str,
    ) -> StoreFuture<'a, Vec<UsageGroup>>;
}
