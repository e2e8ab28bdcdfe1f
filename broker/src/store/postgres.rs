//! The PostgreSQL engine of [`Store`], for several brokers sharing one store.
//!
//! It keeps the SQLite engine's semantics: the same tables, the same transactions (a change and
//! its audit records commit together), the same associated data (sealing happens before the
//! store), the same error mapping. Where SQLite serializes writers with `BEGIN IMMEDIATE`,
//! PostgreSQL's row locks do it here, and the statements are written so that two brokers racing
//! on the same row decide the race in the database:
//!
//! * ending a session is `UPDATE ... WHERE ended_at IS NULL`: one broker wins, the others see
//!   no row and do nothing (session expiry runs on every broker);
//! * a change that needs a live session reads it `FOR SHARE`, so it waits for an end in
//!   progress and then sees it;
//! * an edit locks the secret's row at the version it read (`FOR UPDATE`), so a concurrent edit
//!   finds the version changed;
//! * a conflict check across brokers holds a transaction-level advisory lock per owner
//!   ([`Store::lock_owner`]).
//!
//! Cross-process locks of their own ([`PgLock`]) stand in for the data directory's file locks,
//! which only reach one machine: the key lock (first start, rotation), and the serving lock
//! that `rotate-master-key` needs free.
//!
//! PostgreSQL keeps deleted rows until `VACUUM` reclaims them: an old version's ciphertexts and
//! wrapped data key linger in dead tuples until autovacuum runs. They stay sealed under the
//! master key; see docs/postgresql.md on vacuuming after an edit meant to purge.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgPool, Pool, Transaction};

use super::sql::{SqlEngine, SqlStore, compile_statements};
use super::{ActiveMaterial, AuditRecord, OwnerLock, StoreError, pg_schema, query_failed};

// The statements of both store traits, shared with SQLite.
compile_statements!(sqlx::Postgres, PgEngine);

use statements::{add_material_row, commit, insert_audit};

/// The first key of every advisory lock the broker takes (two-int key space), so that its
/// locks never collide with another application's on the same database.
const LOCK_CLASS: i32 = 0x6d61_6501;
/// The first key of the per-owner activation locks.
const OWNER_LOCK_CLASS: i32 = 0x6d61_6502;
/// Second keys under [`LOCK_CLASS`].
const KEYS_LOCK: i32 = 1;
const SERVING_LOCK: i32 = 2;
const MIGRATE_LOCK: i32 = 3;

/// Connections per broker: requests, the expiry task, one per held owner lock.
const MAX_CONNECTIONS: u32 = 16;
/// How long a request waits for a free connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// The PostgreSQL store.
pub type PgStore = SqlStore<PgEngine>;

/// What PostgreSQL adds to the shared statements: row locks, and the URL that the
/// cross-broker locks and the event feed connect to.
#[derive(Debug, Clone)]
pub struct PgEngine {
    url: DatabaseUrl,
}

impl SqlEngine for PgEngine {
    type Db = sqlx::Postgres;

    const SESSION_LIVE: &'static str =
        "SELECT ended_at, expires_at FROM sessions WHERE id = $1 FOR SHARE";
    const SECRET_AT_VERSION: &'static str = "SELECT data_key_id FROM secrets \
         WHERE id = $1 AND owner_id = $2 AND version = $3 FOR UPDATE";
    const SECRET_TO_DELETE: &'static str =
        "SELECT id FROM secrets WHERE id = $1 AND owner_id = $2 FOR UPDATE";
    const LOCK_DATA_KEYS: Option<&'static str> =
        Some("LOCK TABLE data_keys, secrets IN SHARE ROW EXCLUSIVE MODE");

    async fn begin_write(pool: &Pool<Db>) -> Result<Transaction<'static, Db>, sqlx::Error> {
        pool.begin().await
    }
}

/// A PostgreSQL URL. Its password (if any) never reaches `Debug`, a log line or an error:
/// those show [`DatabaseUrl::label`], the URL without it.
#[derive(Clone)]
pub struct DatabaseUrl {
    options: PgConnectOptions,
    label: String,
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseUrl").field(&self.label).finish()
    }
}

impl DatabaseUrl {
    /// Parses `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?...]`. The password may also
    /// come from `PGPASSWORD` or `~/.pgpass`. The error never repeats the text (it may hold a
    /// password).
    pub fn parse(text: &str) -> Result<Self, String> {
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err("use a PostgreSQL URL, postgres://USER@HOST:PORT/DATABASE (leave \
                        --database and MAESTRO_DATABASE_URL out for SQLite in the data directory)"
                .to_owned());
        }
        let options = PgConnectOptions::from_str(text)
            .map_err(|e| format!("the PostgreSQL URL does not parse ({e}); check its syntax"))?;
        let Some(database) = options.get_database().map(str::to_owned) else {
            return Err(
                "the PostgreSQL URL names no database: add /DATABASE after the host".to_owned()
            );
        };
        let host = match options.get_socket() {
            Some(socket) => socket.display().to_string(),
            None => options.get_host().to_owned(),
        };
        let label = format!(
            "postgres://{}@{host}:{}/{database}",
            options.get_username(),
            options.get_port()
        );
        let options = options.application_name("maestro-broker");
        Ok(Self { options, label })
    }

    /// The URL without its password, for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The connection options.
    pub fn options(&self) -> &PgConnectOptions {
        &self.options
    }
}

/// An active secret with its data key, token state and sealed fields: one row per field (one
/// row with no field for a secret without fields). (SQLite batches
/// the reads waiting at one moment into one statement of its own.)
macro_rules! material_select {
    ($($rest:literal)*) => {
        concat!(
            "SELECT s.id, s.owner_id, s.name, s.kind, s.description, s.tags, s.field_names, \
             s.version, s.data_key_id, d.wrapped, s.created_at, s.updated_at, s.exposure, s.hosts, s.compromised_at, \
             s.activation_default, s.activation_max, s.rotate_every, s.value_changed_at, \
             a.expires_at AS active_until, t.secret_id IS NOT NULL AS oauth, t.expires_at AS oauth_expires_at, \
             t.needs_reauth AS oauth_needs_reauth, \
             f.name AS field_name, f.ciphertext AS field_blob \
             FROM activations a JOIN secrets s ON s.id = a.secret_id \
             JOIN data_keys d ON d.id = s.data_key_id \
             LEFT JOIN oauth_tokens t ON t.secret_id = s.id \
             LEFT JOIN secret_fields f ON f.secret_id = s.id \
             WHERE a.session_id = $1 ",
            $($rest),*
        )
    };
}

/// A cross-broker lock held on a connection of its own (a session-level advisory lock),
/// released when the connection closes: when this value is dropped, or when the process dies.
#[derive(Debug)]
pub struct PgLock {
    _conn: PgConnection,
}

impl PgStore {
    /// Connects to the database and brings its schema up to date.
    pub async fn open(url: &DatabaseUrl) -> Result<Self, StoreError> {
        let open_failed = |source| StoreError::Open { path: url.label().to_owned(), source };
        // One connection first: a pool would retry until its timeout and then report only
        // that, where this says "connection refused" or "password authentication failed".
        let probe = PgConnection::connect_with(url.options()).await.map_err(open_failed)?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(url.options().clone())
            .await
            .map_err(open_failed)?;
        let store = Self { pool, engine: PgEngine { url: url.clone() } };
        store.migrate().await?;
        Ok(store)
    }

    /// The database's URL without its password.
    pub fn label(&self) -> &str {
        self.engine.url.label()
    }

    /// The connection pool (the event feed sends its notifications through it).
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        for (version, sql) in pg_schema::MIGRATIONS {
            let failed = |source| StoreError::Migrate { version: *version, source };
            let mut tx = self.pool.begin().await.map_err(failed)?;
            // Brokers starting together: one migrates, the others wait and then skip.
            sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
                .bind(LOCK_CLASS)
                .bind(MIGRATE_LOCK)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            sqlx::raw_sql(
                "CREATE TABLE IF NOT EXISTS maestro_schema (version BIGINT NOT NULL); \
                 INSERT INTO maestro_schema (version) \
                 SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM maestro_schema)",
            )
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
            let current: i64 = sqlx::query_scalar("SELECT MAX(version) FROM maestro_schema")
                .fetch_one(&mut *tx)
                .await
                .map_err(query_failed("reading the schema version"))?;
            if current > pg_schema::latest() {
                return Err(StoreError::TooNew { found: current, supported: pg_schema::latest() });
            }
            if *version <= current {
                tx.commit().await.map_err(failed)?;
                continue;
            }
            sqlx::raw_sql(AssertSqlSafe(*sql)).execute(&mut *tx).await.map_err(failed)?;
            sqlx::query("UPDATE maestro_schema SET version = $1")
                .bind(*version)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            tx.commit().await.map_err(failed)?;
        }
        Ok(())
    }

    async fn lock_connection(&self) -> Result<PgConnection, StoreError> {
        PgConnection::connect_with(self.engine.url.options())
            .await
            .map_err(|source| StoreError::Open { path: self.label().to_owned(), source })
    }

    /// Waits for the key lock (first start's key check, rotation).
    pub async fn key_lock(&self) -> Result<PgLock, StoreError> {
        let mut conn = self.lock_connection().await?;
        sqlx::query("SELECT pg_advisory_lock($1, $2)")
            .bind(LOCK_CLASS)
            .bind(KEYS_LOCK)
            .execute(&mut conn)
            .await
            .map_err(query_failed("taking the master key lock"))?;
        Ok(PgLock { _conn: conn })
    }

    /// The serving lock, shared by every serving broker; fails while a rotation holds it.
    pub async fn serving_lock(&self) -> Result<PgLock, StoreError> {
        self.try_lock(
            "SELECT pg_try_advisory_lock_shared($1, $2)",
            StoreError::RotationRunning { database: self.label().to_owned() },
        )
        .await
    }

    /// The serving lock, exclusively; fails while any broker serves.
    pub async fn rotation_lock(&self) -> Result<PgLock, StoreError> {
        self.try_lock(
            "SELECT pg_try_advisory_lock($1, $2)",
            StoreError::BrokersServing { database: self.label().to_owned() },
        )
        .await
    }

    async fn try_lock(&self, sql: &'static str, busy: StoreError) -> Result<PgLock, StoreError> {
        let mut conn = self.lock_connection().await?;
        let taken: bool = sqlx::query_scalar(sql)
            .bind(LOCK_CLASS)
            .bind(SERVING_LOCK)
            .fetch_one(&mut conn)
            .await
            .map_err(query_failed("taking the serving lock"))?;
        if taken { Ok(PgLock { _conn: conn }) } else { Err(busy) }
    }

    /// Takes the owner's transaction-level advisory lock, held until the returned value drops.
    async fn engine_lock_owner(&self, owner_id: i64) -> Result<OwnerLock, StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(OWNER_LOCK_CLASS)
            .bind(owner_lock_key(owner_id))
            .execute(&mut *tx)
            .await
            .map_err(query_failed("taking the owner's activation lock"))?;
        // Dropping the transaction rolls it back, which releases the lock.
        Ok(OwnerLock::holding(tx))
    }

    /// One statement per read.
    async fn engine_material(
        &self,
        session_id: &str,
        name: Option<&str>,
    ) -> Result<Vec<ActiveMaterial>, StoreError> {
        let query = match name {
            Some(name) => {
                sqlx::query(material_select!("AND s.name = $2 ORDER BY s.name, s.id, f.name"))
                    .bind(session_id)
                    .bind(name)
            }
            None => sqlx::query(material_select!("ORDER BY s.name, s.id, f.name")).bind(session_id),
        };
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("reading active secrets' material"))?;
        let mut out = Vec::new();
        for row in &rows {
            add_material_row(&mut out, row)?;
        }
        Ok(out)
    }

    /// The records in one transaction.
    async fn engine_append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        for record in records {
            insert_audit(&mut tx, record).await?;
        }
        commit(tx).await
    }
}

/// The two keys of an owner's advisory lock. Owners whose ids agree in their low 31 bits
/// share a lock, which only serializes them a little more.
fn owner_lock_key(owner_id: i64) -> i32 {
    i32::try_from(owner_id.rem_euclid(1 << 31)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_hide_their_password() {
        let url =
            DatabaseUrl::parse("postgres://maestro:hunter2-pw@db.example:6543/secrets").unwrap();
        assert_eq!(url.label(), "postgres://maestro@db.example:6543/secrets");
        assert!(!format!("{url:?}").contains("hunter2-pw"));
        assert_eq!(url.options().get_port(), 6543);
        let e = DatabaseUrl::parse("mysql://u:hunter2-pw@h/d").unwrap_err();
        assert!(e.contains("PostgreSQL URL") && !e.contains("hunter2-pw"), "{e}");
        let e = DatabaseUrl::parse("postgres://u:hunter2-pw@h:notaport/d").unwrap_err();
        assert!(!e.contains("hunter2-pw"), "{e}");
        let e = DatabaseUrl::parse("postgres://u:hunter2-pw@h").unwrap_err();
        assert!(e.contains("names no database"), "{e}");
    }
}
