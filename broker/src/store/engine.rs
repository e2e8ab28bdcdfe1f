//! Which database engine holds the store, chosen at start-up: SQLite in the data directory (the
//! default), or PostgreSQL when `--database postgres://...` (or `MAESTRO_DATABASE_URL`) is given,
//! so that several brokers can share one store.
//!
//! Besides opening the store, the engine owns what only a shared database needs: the locks
//! that keep brokers, `user add` and `rotate-master-key` apart across machines (a data
//! directory's file locks only reach one machine), the check that every broker on a database
//! uses the same CA, and the feed that carries events between brokers
//! ([`super::pg_events`]). With SQLite each of these is a no-op: one broker owns the file.

use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use super::postgres::DatabaseUrl;
use super::postgres::{PgLock, PgStore};
use super::sqlite::SqliteStore;
use super::{Store, StoreError};
use crate::datadir::DataDir;
use crate::events::Hub;

/// The environment variable that selects PostgreSQL (same as `--database`).
pub const ENV_DATABASE_URL: &str = "MAESTRO_DATABASE_URL";

/// The meta key of the CA certificate's SHA-256, on a shared database.
const CA_META_KEY: &str = "ca_cert_sha256";

/// An opened store and its engine.
#[derive(Clone)]
pub enum Engine {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PgStore>),
}

/// A lock held on the engine's behalf; released when dropped.
#[must_use = "the lock is released when this value is dropped"]
pub struct EngineLock {
    _held: Option<PgLock>,
}

impl EngineLock {
    fn none() -> Self {
        Self { _held: None }
    }
}

/// What a serving broker keeps running for the engine (cross-broker events); stops on drop.
#[must_use = "the broker's links to the other brokers stop when this value is dropped"]
pub struct Serving {
    _lock: EngineLock,
    _events: Option<super::pg_events::Feed>,
}

impl Engine {
    /// Opens the data directory's database: PostgreSQL if it has a URL, else SQLite in the
    /// directory (which [`DataDir::prepare_database`] made private first). Brings the schema up
    /// to date.
    pub async fn open(dir: &DataDir) -> Result<Self, StoreError> {
        match dir.database_url() {
            Some(url) => Ok(Self::Postgres(Arc::new(PgStore::open(url).await?))),
            None => Ok(Self::Sqlite(Arc::new(SqliteStore::open(&dir.database()).await?))),
        }
    }

    /// The store, for the broker's state.
    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            Self::Sqlite(s) => s.clone(),
            Self::Postgres(s) => s.clone(),
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(s) => s.close().await,
            Self::Postgres(s) => s.close().await,
        }
    }

    /// Held while the master key is checked (and, on a fresh database, made) and during a
    /// rotation: on a shared database, two brokers starting at once must not both make a key.
    /// Waits for the lock. SQLite: the data directory's `keys.lock` does this job.
    pub async fn key_lock(&self) -> Result<EngineLock, StoreError> {
        match self {
            Self::Sqlite(_) => Ok(EngineLock::none()),
            Self::Postgres(s) => Ok(EngineLock { _held: Some(s.key_lock().await?) }),
        }
    }

    /// Held by `rotate-master-key` for its whole run. Fails at once while a broker serves on
    /// the shared database: it would keep using the old master key. SQLite: the data
    /// directory's `broker.lock` does this job.
    pub async fn rotation_lock(&self) -> Result<EngineLock, StoreError> {
        match self {
            Self::Sqlite(_) => Ok(EngineLock::none()),
            Self::Postgres(s) => Ok(EngineLock { _held: Some(s.rotation_lock().await?) }),
        }
    }

    /// On a shared database, refuses a CA other than the one the other brokers use (an agent
    /// enrolled through one broker must be accepted by all), and records it on first use.
    pub async fn check_ca(&self, dir: &DataDir, ca_pem: &str) -> Result<(), StoreError> {
        let Self::Postgres(store) = self else { return Ok(()) };
        let digest = Sha256::digest(ca_pem.as_bytes()).to_vec();
        match store.meta_get(CA_META_KEY).await? {
            Some(known) if known == digest => Ok(()),
            Some(_) => Err(StoreError::ForeignCa {
                file: dir.ca_pem().display().to_string(),
                database: store.label().to_owned(),
            }),
            None => store.meta_put(CA_META_KEY, &digest).await,
        }
    }

    /// Starts what a serving broker needs from its engine. PostgreSQL: a shared lock that
    /// `rotate-master-key` checks, and the event feed between brokers feeding `hub`.
    pub async fn start_serving(&self, hub: &Hub) -> Result<Serving, StoreError> {
        match self {
            Self::Sqlite(_) => Ok(Serving { _lock: EngineLock::none(), _events: None }),
            Self::Postgres(store) => {
                let lock = store.serving_lock().await?;
                let feed = super::pg_events::Feed::start(store.clone(), hub.clone()).await?;
                Ok(Serving { _lock: EngineLock { _held: Some(lock) }, _events: Some(feed) })
            }
        }
    }
}
