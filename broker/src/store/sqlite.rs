//! The SQLite engine of [`Store`]: one file, WAL, `synchronous=FULL` (a write acknowledged to a
//! client survives `kill -9` and power loss), `secure_delete=ON` (freed pages are zeroed, so a
//! deleted ciphertext does not linger in the file), foreign keys on.
//!
//! Write transactions start with `BEGIN IMMEDIATE`, so two writers queue on the busy timeout
//! instead of failing when a read lock cannot be upgraded.
//!
//! sqlx runs each SQLite connection on a thread of its own and hands every statement to it and
//! back; on this kind of machine a hand-off costs more than the statement. The hot path (an
//! agent fetching material) therefore costs as few statements as it can: the session comes
//! from memory ([`session_cache`]), the material comes in one statement shared with the other
//! fetches waiting at the same moment ([`material_reader`]), and the audit records share one
//! statement and transaction with the other callers' ([`audit_writer`]).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Pool, Transaction};

use super::sql::{SqlEngine, SqlStore, compile_statements, count_i64};
use super::{ActiveMaterial, AuditRecord, OwnerLock, StoreError, query_failed, schema};

/// Group commit of audit records appended on their own.
mod audit_writer;
/// Group reads of the material agents fetch.
mod material_reader;
/// Session rows in memory, for authenticating agents without a database round trip.
pub mod session_cache;

// The statements of both store traits, shared with PostgreSQL.
compile_statements!(sqlx::Sqlite, SqliteEngine);

/// The SQLite store.
pub type SqliteStore = SqlStore<SqliteEngine>;

/// What SQLite adds to the shared statements: its fast paths.
#[derive(Debug, Clone)]
pub struct SqliteEngine {
    audit: audit_writer::AuditWriter,
    material: material_reader::MaterialReader,
    sessions: session_cache::SessionCache,
}

impl SqlEngine for SqliteEngine {
    type Db = sqlx::Sqlite;

    // One writer at a time (`BEGIN IMMEDIATE`): nothing to lock row by row.
    const SESSION_LIVE: &'static str = "SELECT ended_at, expires_at FROM sessions WHERE id = $1";
    const SECRET_AT_VERSION: &'static str =
        "SELECT data_key_id FROM secrets WHERE id = $1 AND owner_id = $2 AND version = $3";
    const SECRET_TO_DELETE: &'static str = "SELECT id FROM secrets WHERE id = $1 AND owner_id = $2";
    const LOCK_DATA_KEYS: Option<&'static str> = None;

    async fn begin_write(pool: &Pool<Db>) -> Result<Transaction<'static, Db>, sqlx::Error> {
        pool.begin_with("BEGIN IMMEDIATE").await
    }

    fn session_cache(&self) -> Option<&session_cache::SessionCache> {
        Some(&self.sessions)
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let open_failed = |source| StoreError::Open { path: path.display().to_string(), source };
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(open_failed)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .pragma("secure_delete", "ON")
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // A ping before each use is a round trip to the connection's thread that guards
            // against a dropped network link; a local file has none to lose.
            .test_before_acquire(false)
            // A COMMIT that fails on a full disk can leave a connection that believes it is
            // still in a transaction (SQLite rolled back by itself, so the ROLLBACK that
            // follows fails) and would refuse every later BEGIN: close it instead of reusing
            // it. The ping lets that queued ROLLBACK run first.
            .after_release(|conn, _| {
                Box::pin(async move {
                    sqlx::Connection::ping(conn).await?;
                    Ok(!sqlx::Connection::is_in_transaction(conn))
                })
            })
            .connect_with(options)
            .await
            .map_err(open_failed)?;
        let engine = SqliteEngine {
            audit: audit_writer::AuditWriter::start(pool.clone()),
            material: material_reader::MaterialReader::start(pool.clone()),
            sessions: session_cache::SessionCache::default(),
        };
        let store = Self { pool, engine };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let current: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&self.pool)
            .await
            .map_err(query_failed("reading the schema version"))?;
        if current > schema::latest() {
            return Err(StoreError::TooNew { found: current, supported: schema::latest() });
        }
        for (version, sql) in schema::MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            let failed = |source| StoreError::Migrate { version: *version, source };
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(failed)?;
            sqlx::raw_sql(*sql).execute(&mut *tx).await.map_err(failed)?;
            // PRAGMA takes no bound parameters; `version` is one of our own constants.
            sqlx::query(AssertSqlSafe(format!("PRAGMA user_version = {version}")))
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            tx.commit().await.map_err(failed)?;
        }
        Ok(())
    }

    /// One broker owns the file, and its own mutex serializes changes of an owner.
    async fn engine_lock_owner(&self, _owner_id: i64) -> Result<OwnerLock, StoreError> {
        Ok(OwnerLock::default())
    }

    /// Shares one statement with the reads waiting at the same moment.
    async fn engine_material(
        &self,
        session_id: &str,
        name: Option<&str>,
    ) -> Result<Vec<ActiveMaterial>, StoreError> {
        self.engine.material.read(session_id, name).await
    }

    /// Shares a transaction (one fsync) with the appends waiting at the same moment; returns
    /// once these records are committed.
    async fn engine_append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        self.engine.audit.append(records).await
    }
}

/// Appends `records` in one statement: the rows travel as one JSON array of arrays (text and
/// numbers only, never a value of a secret), in order, so that their sequence numbers follow
/// it. One statement instead of one per record, each of which costs a hand-off to the
/// connection's thread; on its own (outside a transaction) it is a transaction of its own,
/// all rows or none.
pub(super) async fn insert_audit_batch<'e>(
    executor: impl sqlx::SqliteExecutor<'e>,
    records: &[&AuditRecord],
) -> Result<(), StoreError> {
    use serde_json::Value;
    let rows: Vec<Value> = records
        .iter()
        .map(|r| {
            Value::Array(vec![
                r.owner_id.into(),
                r.at.into(),
                r.action.stored_name().into(),
                r.secret_id.as_deref().into(),
                r.secret_name.as_deref().into(),
                r.session_id.as_deref().into(),
                r.pid.map(i64::from).into(),
                r.uid.map(i64::from).into(),
                r.command.as_deref().into(),
                r.detail.as_deref().into(),
                count_i64(r.count).into(),
                r.last_at.into(),
                r.exe.as_deref().into(),
                r.claimed_command.as_deref().into(),
            ])
        })
        .collect();
    let json = Value::Array(rows).to_string();
    sqlx::query(
        "INSERT INTO audit (owner_id, at, action, secret_id, secret_name, session_id, pid, uid, \
         command, detail, use_count, last_at, exe, claimed_command) \
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
         value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, value ->> 11, \
         value ->> 12, value ->> 13 FROM json_each($1) ORDER BY key",
    )
    .bind(json)
    .execute(executor)
    .await
    .map_err(query_failed("appending to the audit trail"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use maestro_wire::api::AuditAction;

    use super::*;
    use crate::store::testing::{self, ContractStore, session};
    use crate::store::{CertificateRecord, Store};

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
        (dir, store)
    }

    /// The store contract suite ([`crate::store::testing`]) on SQLite.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_contract_holds_on_sqlite() {
        testing::run_all(|_| async {
            let (dir, store) = store().await;
            (dir, Arc::new(store) as Arc<dyn ContractStore>)
        })
        .await;
    }

    /// The shared statements use `$N` placeholders (one of them twice) and `RETURNING`: the
    /// SQLite driver takes both as PostgreSQL does.
    #[tokio::test]
    async fn sqlite_takes_numbered_placeholders_and_returning() {
        let (_d, s) = store().await;
        let (a, b, again): (i64, String, i64) = sqlx::query_as("SELECT $2, $1, $2")
            .bind("one")
            .bind(2_i64)
            .fetch_one(&s.pool)
            .await
            .unwrap();
        assert_eq!((a, b.as_str(), again), (2, "one", 2));
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (name, token_hash, created_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind("alice")
        .bind(&b"h"[..])
        .bind(1_i64)
        .fetch_one(&s.pool)
        .await
        .unwrap();
        let name: String = sqlx::query_scalar("SELECT name FROM users WHERE id = $1")
            .bind(id)
            .fetch_one(&s.pool)
            .await
            .unwrap();
        assert_eq!(name, "alice");
        let user = s.create_user("bob", b"h2", 1).await.unwrap();
        assert_eq!(user.id, id + 1, "create_user reads its id back with RETURNING");
    }

    /// The group commit keeps the order of the callers that share a statement.
    #[tokio::test]
    async fn appended_audit_records_keep_their_order_and_every_column() {
        let (_d, s) = store().await;
        let (at_once, after, trail) = testing::append_at_once_then_alone(&s).await;
        let got: Vec<_> = trail.into_iter().map(|r| r.record).collect();
        let mut want = at_once;
        want.extend(after);
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn cached_sessions_follow_every_change() {
        let (_d, s) = store().await;
        let u = s.create_user("alice", b"h1", 1).await.unwrap();
        let audit = AuditRecord::new(u.id, 10, AuditAction::Enrolled);
        let (sess, tok) = session(u.id, "sess1");
        assert!(s.session("sess1").await.unwrap().is_none(), "an unknown session");
        s.insert_session(&sess, &tok, &audit).await.unwrap();
        assert_eq!(s.session("sess1").await.unwrap(), Some(sess.clone()));
        // Cached now; enrollment and the end both show at once.
        assert_eq!(s.session("sess1").await.unwrap(), Some(sess.clone()));
        let cert = CertificateRecord {
            serial: "01".into(),
            session_id: "sess1".into(),
            not_before: 0,
            not_after: 500,
            issued_at: 20,
            reason: "enroll",
        };
        s.complete_enrollment(b"sess1", 20, &cert, &audit).await.unwrap();
        assert!(s.session("sess1").await.unwrap().unwrap().enrolled);
        assert!(s.session("sess1").await.unwrap().unwrap().is_live(30));
        s.end_session("sess1", "user", 30).await.unwrap();
        let ended = s.session("sess1").await.unwrap().unwrap();
        assert_eq!((ended.ended_at, ended.ended_reason.as_deref()), (Some(30), Some("user")));
        assert!(!ended.is_live(31));
        // What the database holds, read past the cache.
        let row = sqlx::query(
            "SELECT id, owner_id, label, created_at, expires_at, ended_at, ended_reason, \
             enrolled, cert_serial, previous_serial, previous_until, decoys FROM sessions \
             WHERE id = $1",
        )
        .bind("sess1")
        .fetch_one(&s.pool)
        .await
        .unwrap();
        assert_eq!(statements::session_from_row(&row).unwrap(), ended);
    }
}

#[cfg(test)]
mod migration_tests {
    use maestro_wire::catalog::seal::Exposure;
    use sqlx::Connection;

    use super::*;
    use crate::store::Store;

    /// A database written by a broker before migration 3 (schema 2), with a renewed session
    /// and an audit record, opened by this one: the session keeps its newest certificate, and
    /// the old record stands for one use.
    #[tokio::test]
    async fn migration_3_keeps_existing_sessions_and_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("maestro.db");
        {
            let options = SqliteConnectOptions::from_str("sqlite://")
                .unwrap()
                .filename(&path)
                .create_if_missing(true);
            let mut conn = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
            for (_, sql) in schema::MIGRATIONS.iter().filter(|(v, _)| *v <= 2) {
                sqlx::raw_sql(*sql).execute(&mut conn).await.unwrap();
            }
            sqlx::raw_sql(
                "PRAGMA user_version = 2;
                 INSERT INTO users (id, name, token_hash, created_at) VALUES (1, 'u', x'01', 1);
                 INSERT INTO sessions (id, owner_id, created_at, expires_at, enrolled)
                     VALUES ('s1', 1, 10, 100000, 1);
                 INSERT INTO certificates VALUES ('aa', 's1', 10, 1000, 10, 'enroll');
                 INSERT INTO certificates VALUES ('bb', 's1', 20, 1000, 20, 'renew');
                 INSERT INTO audit (owner_id, at, action, session_id, command)
                     VALUES (1, 30, 'injected', 's1', 'env');",
            )
            .execute(&mut conn)
            .await
            .unwrap();
            conn.close().await.unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        let session = store.session("s1").await.unwrap().unwrap();
        assert_eq!(session.serials.current.as_deref(), Some("bb"));
        assert!(session.serials.accepts("bb", 50));
        assert!(!session.serials.accepts("aa", 50));
        let trail = store.audit_for_owner(1, None, 10).await.unwrap();
        assert_eq!(trail.len(), 1);
        assert_eq!((trail[0].record.count, trail[0].record.exe.as_deref()), (None, None));
        assert_eq!(trail[0].record.command.as_deref(), Some("env"));
        // Migration 9: the user's token moved to `api_tokens` as `initial`, with `admin`.
        use crate::store::tokens::TokenStore;
        let found = store.authenticate(&[1]).await.unwrap().unwrap();
        assert_eq!((found.user.name.as_str(), found.token.name.as_str()), ("u", "initial"));
        assert_eq!(found.token.scopes, ["admin"]);
        assert_eq!((found.token.expires_at, found.user_disabled), (None, false));
        let left: Vec<u8> = sqlx::query_scalar("SELECT token_hash FROM users WHERE id = 1")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(left.len(), 32, "a random placeholder, not the token's hash");
        store.close().await;
    }

    /// A database written by a broker before sealed secrets (schema 3), with a secret active
    /// in a session, opened by this one: the secret reads back plain, with no hosts, from
    /// every read (by name, listed, an agent's material).
    #[tokio::test]
    async fn migration_4_opens_every_existing_secret_as_plain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("maestro.db");
        {
            let options = SqliteConnectOptions::from_str("sqlite://")
                .unwrap()
                .filename(&path)
                .create_if_missing(true);
            let mut conn = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
            for (_, sql) in schema::MIGRATIONS.iter().filter(|(v, _)| *v <= 3) {
                sqlx::raw_sql(*sql).execute(&mut conn).await.unwrap();
            }
            sqlx::raw_sql(
                r#"PRAGMA user_version = 3;
                 INSERT INTO users (id, name, token_hash, created_at) VALUES (1, 'u', x'01', 1);
                 INSERT INTO data_keys VALUES ('k1', x'0203', 1);
                 INSERT INTO secrets (id, owner_id, name, kind, description, tags, field_names,
                     version, data_key_id, created_at, updated_at)
                     VALUES ('s1', 1, 'OPENAI', 'openai', NULL, '[]', '["api_key"]', 3, 'k1', 1, 2);
                 INSERT INTO secret_fields VALUES ('s1', 'api_key', x'09');
                 INSERT INTO sessions (id, owner_id, created_at, expires_at, enrolled)
                     VALUES ('sess', 1, 10, 100000, 1);
                 INSERT INTO activations VALUES ('sess', 's1', 20);"#,
            )
            .execute(&mut conn)
            .await
            .unwrap();
            conn.close().await.unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        let plain = |r: &crate::store::SecretRecord| {
            (r.version, r.exposure, r.hosts.is_empty()) == (3, Exposure::Plain, true)
        };
        assert!(plain(&store.secret_by_name(1, "OPENAI").await.unwrap().unwrap()));
        assert!(store.list_secrets(1).await.unwrap().iter().all(plain));
        let material = store.active_material("sess", None).await.unwrap();
        assert_eq!(material.len(), 1);
        assert!(plain(&material[0].secret));
        store.close().await;
    }
    /// A database written by a broker before teams (schema 9) opened by this one: its users
    /// stay users (listed, counted), their secrets read back, and a team can be made beside
    /// them without touching them.
    #[tokio::test]
    async fn migration_10_keeps_users_and_adds_teams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("maestro.db");
        {
            let options = SqliteConnectOptions::from_str("sqlite://")
                .unwrap()
                .filename(&path)
                .create_if_missing(true);
            let mut conn = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
            for (_, sql) in schema::MIGRATIONS.iter().filter(|(v, _)| *v <= 9) {
                sqlx::raw_sql(*sql).execute(&mut conn).await.unwrap();
            }
            sqlx::raw_sql(
                r#"PRAGMA user_version = 9;
                 INSERT INTO users (id, name, token_hash, created_at) VALUES (1, 'u', x'01', 1);
                 INSERT INTO data_keys VALUES ('k1', x'0203', 1);
                 INSERT INTO secrets (id, owner_id, name, kind, description, tags, field_names,
                     version, data_key_id, created_at, updated_at)
                     VALUES ('s1', 1, 'OPENAI', 'openai', NULL, '[]', '["api_key"]', 1, 'k1', 1, 2);"#,
            )
            .execute(&mut conn)
            .await
            .unwrap();
            conn.close().await.unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        use crate::store::teams::TeamStore;
        use crate::store::tokens::TokenStore;
        let kind: String = sqlx::query_scalar("SELECT kind FROM users WHERE id = 1")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(kind, "user");
        assert!(store.secret_by_name(1, "OPENAI").await.unwrap().is_some());
        let audit =
            crate::store::AuditRecord::new(0, 5, maestro_wire::api::AuditAction::TeamChanged);
        let team = store.create_team("infra", 1, 5, 10, &audit).await.unwrap().unwrap();
        assert_eq!(store.user_count().await.unwrap(), 1);
        let users: Vec<String> =
            store.list_users(10).await.unwrap().into_iter().map(|u| u.name).collect();
        assert_eq!(users, ["u"], "a team's principal is not listed as a user");
        assert_eq!(store.member_role(team.id, 1).await.unwrap().as_deref(), Some("owner"));
        store.close().await;
    }
}
