//! One SQL store for both engines: [`SqlStore`], parameterized by a [`SqlEngine`].
//!
//! The statements of [`crate::store::Store`] and [`crate::store::oauth::OAuthStore`] are
//! written once, in `sql/store.rs` and `sql/oauth.rs`, and compiled once per typed sqlx
//! driver: `store/sqlite.rs` and `store/postgres.rs` each compile them with
//! `compile_statements!`, naming their driver (`Db`) and engine (`Eng`). That keeps sqlx's
//! typed drivers (SQLite's pragmas, no row copies on the fetch path; no `sqlx::Any`) without a
//! generic bound per column type.
//! Both drivers accept `$N` placeholders and `RETURNING` (see the SQLite engine's tests).
//!
//! What really differs lives in the engine: how a write transaction begins, the few statements
//! that lock rows, the schema files (`schema.rs`, `pg_schema.rs`: column types differ), and
//! each engine's extras: PostgreSQL's advisory locks and NOTIFY feed, SQLite's fast paths
//! (session cache, batched material reads, audit group commit).

use std::future::Future;

use sqlx::{Pool, Transaction};

use super::StoreError;
use super::sqlite::session_cache::SessionCache;

/// Compiles the shared statements for one driver in the module that invokes it: `Db` names
/// the driver, `Eng` the engine, `statements` holds [`crate::store::Store`]'s statements and
/// the row helpers, `oauth` [`crate::store::oauth::OAuthStore`]'s.
macro_rules! compile_statements {
    ($db:ty, $eng:ty) => {
        /// The driver the shared statements are compiled for here.
        type Db = $db;
        /// The engine the shared statements are compiled for here.
        type Eng = $eng;
        // Compiled once per driver on purpose (see `super::sql`).
        #[allow(clippy::duplicate_mod)]
        #[path = "sql/alerts.rs"]
        mod alerts;
        #[allow(clippy::duplicate_mod)]
        #[path = "sql/oauth.rs"]
        mod oauth;
        #[allow(clippy::duplicate_mod)]
        #[path = "sql/store.rs"]
        pub(super) mod statements;
        #[allow(clippy::duplicate_mod)]
        #[path = "sql/teams.rs"]
        mod teams;
        #[allow(clippy::duplicate_mod)]
        #[path = "sql/tokens.rs"]
        mod tokens;
    };
}
pub(crate) use compile_statements;

/// What an engine adds to the shared statements.
pub trait SqlEngine: Send + Sync + 'static {
    /// The typed sqlx driver.
    type Db: sqlx::Database;

    /// `SELECT ended_at, expires_at` of session `$1`; PostgreSQL holds the row (`FOR SHARE`)
    /// until the transaction ends, so an end in progress on another broker is waited for.
    const SESSION_LIVE: &'static str;
    /// `SELECT data_key_id` of secret `$1` of owner `$2` at version `$3`; PostgreSQL locks the
    /// row (`FOR UPDATE`), so a concurrent edit waits, then finds the version changed.
    const SECRET_AT_VERSION: &'static str;
    /// `SELECT id` of secret `$1` of owner `$2`, locking the row where the engine can, before
    /// it is deleted.
    const SECRET_TO_DELETE: &'static str;
    /// A statement that keeps every writer of data keys and secrets out during a re-wrap, where
    /// beginning the write transaction does not already.
    const LOCK_DATA_KEYS: Option<&'static str>;

    /// Begins a write transaction (SQLite: `BEGIN IMMEDIATE`, so that two writers queue on
    /// the busy timeout instead of failing when a read lock cannot be upgraded).
    fn begin_write(
        pool: &Pool<Self::Db>,
    ) -> impl Future<Output = Result<Transaction<'static, Self::Db>, sqlx::Error>> + Send;

    /// Session rows kept in memory, where one process owns the database (SQLite).
    fn session_cache(&self) -> Option<&SessionCache> {
        None
    }
}

/// The store, on engine `E`.
#[derive(Debug, Clone)]
pub struct SqlStore<E: SqlEngine> {
    pub(crate) pool: Pool<E::Db>,
    pub(crate) engine: E,
}

impl<E: SqlEngine> SqlStore<E> {
    /// Closes every connection (SQLite: checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A JSON list column.
pub(crate) fn json_list(text: &str, what: &'static str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|_| StoreError::Corrupt { what })
}

/// A list as its JSON column.
pub(crate) fn to_json(list: &[String]) -> String {
    serde_json::Value::from(list.to_vec()).to_string()
}

/// A version as stored (both engines store signed 64-bit integers).
pub(crate) fn version_i64(version: u64) -> i64 {
    i64::try_from(version).unwrap_or(i64::MAX)
}

/// A stored version.
pub(crate) fn version_u64(version: i64) -> Result<u64, StoreError> {
    u64::try_from(version).map_err(|_| StoreError::Corrupt { what: "version" })
}

/// A pid or uid column (stored as a signed 64-bit integer: PostgreSQL has no unsigned ones).
pub(crate) fn id_u32(value: Option<i64>, what: &'static str) -> Result<Option<u32>, StoreError> {
    value.map(|v| u32::try_from(v).map_err(|_| StoreError::Corrupt { what })).transpose()
}

/// A stored use count (never negative).
pub(crate) fn count_u64(count: Option<i64>) -> Result<Option<u64>, StoreError> {
    count
        .map(|c| u64::try_from(c).map_err(|_| StoreError::Corrupt { what: "use count" }))
        .transpose()
}

/// A use count as stored.
pub(crate) fn count_i64(count: Option<u64>) -> Option<i64> {
    count.map(|c| i64::try_from(c).unwrap_or(i64::MAX))
}

/// Whether a statement failed on a unique constraint (both drivers report it the same way).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}
