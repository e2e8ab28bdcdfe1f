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

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row, SqlitePool, Transaction};

use super::{
    ActiveMaterial, AuditRecord, AuditRow, CertificateRecord, DataKeyRecord, EnrollmentRecord,
    SealedField, SecretRecord, SessionRecord, SessionSerials, Store, StoreError, StoreFuture,
    UsageSummary, UserRecord, query_failed, schema,
};
use crate::audit;

/// Group commit of audit records appended on their own.
mod audit_writer;
/// Group reads of the material agents fetch.
mod material_reader;
/// The OAuth tables ([`crate::oauth::store::OAuthStore`]), a child so that it shares the helpers.
pub(super) mod oauth;
/// Session rows in memory, for authenticating agents without a database round trip.
mod session_cache;

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    audit: audit_writer::AuditWriter,
    material: material_reader::MaterialReader,
    sessions: session_cache::SessionCache,
}

type Tx = Transaction<'static, sqlx::Sqlite>;

macro_rules! secret_select {
    ($($rest:literal)*) => {
        concat!(
            "SELECT s.id, s.owner_id, s.name, s.kind, s.description, s.tags, s.field_names, \
             s.version, s.data_key_id, d.wrapped, s.created_at, s.updated_at \
             FROM secrets s JOIN data_keys d ON d.id = s.data_key_id ",
            $($rest),*
        )
    };
}

macro_rules! session_select {
    ($($rest:literal)*) => {
        concat!(
            "SELECT id, owner_id, label, created_at, expires_at, ended_at, ended_reason, \
             enrolled, cert_serial, previous_serial, previous_until FROM sessions ",
            $($rest),*
        )
    };
}

macro_rules! audit_select {
    ($($rest:literal)*) => {
        concat!(
            "SELECT seq, owner_id, at, action, secret_id, secret_name, session_id, pid, uid, \
             command, detail, use_count, last_at, exe, claimed_command FROM audit ",
            $($rest),*
        )
    };
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
        let audit = audit_writer::AuditWriter::start(pool.clone());
        let material = material_reader::MaterialReader::start(pool.clone());
        let sessions = session_cache::SessionCache::default();
        let store = Self { pool, audit, material, sessions };
        store.migrate().await?;
        Ok(store)
    }

    /// Closes every connection (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
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

    async fn write_tx(&self) -> Result<Tx, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(query_failed("starting a transaction"))
    }
}

async fn commit(tx: Tx) -> Result<(), StoreError> {
    tx.commit().await.map_err(query_failed("committing a transaction"))
}

fn get<'r, T>(row: &'r SqliteRow, column: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column).map_err(query_failed("reading a row"))
}

fn json_list(text: &str, what: &'static str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|_| StoreError::Corrupt { what })
}

fn to_json(list: &[String]) -> String {
    serde_json::Value::from(list.to_vec()).to_string()
}

fn version_i64(version: u64) -> i64 {
    i64::try_from(version).unwrap_or(i64::MAX)
}

fn secret_from_row(row: &SqliteRow) -> Result<SecretRecord, StoreError> {
    let version: i64 = get(row, "version")?;
    Ok(SecretRecord {
        id: get(row, "id")?,
        owner_id: get(row, "owner_id")?,
        name: get(row, "name")?,
        kind: get(row, "kind")?,
        description: get(row, "description")?,
        tags: json_list(&get::<String>(row, "tags")?, "tag list")?,
        version: u64::try_from(version).map_err(|_| StoreError::Corrupt { what: "version" })?,
        field_names: json_list(&get::<String>(row, "field_names")?, "field name list")?,
        data_key_id: get(row, "data_key_id")?,
        wrapped_key: get(row, "wrapped")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

fn session_from_row(row: &SqliteRow) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id: get(row, "id")?,
        owner_id: get(row, "owner_id")?,
        label: get(row, "label")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        ended_at: get(row, "ended_at")?,
        ended_reason: get(row, "ended_reason")?,
        enrolled: get::<i64>(row, "enrolled")? != 0,
        serials: SessionSerials {
            current: get(row, "cert_serial")?,
            previous: get(row, "previous_serial")?,
            previous_until: get(row, "previous_until")?,
        },
    })
}

fn audit_from_row(row: &SqliteRow) -> Result<AuditRow, StoreError> {
    let action: String = get(row, "action")?;
    Ok(AuditRow {
        seq: get(row, "seq")?,
        record: AuditRecord {
            owner_id: get(row, "owner_id")?,
            at: get(row, "at")?,
            action: audit::parse_action(&action)
                .ok_or(StoreError::Corrupt { what: "audit action" })?,
            secret_id: get(row, "secret_id")?,
            secret_name: get(row, "secret_name")?,
            session_id: get(row, "session_id")?,
            pid: get(row, "pid")?,
            uid: get(row, "uid")?,
            command: get(row, "command")?,
            detail: get(row, "detail")?,
            count: count_u64(get(row, "use_count")?)?,
            last_at: get(row, "last_at")?,
            exe: get(row, "exe")?,
            claimed_command: get(row, "claimed_command")?,
        },
    })
}

/// A stored use count (never negative).
pub(super) fn count_u64(count: Option<i64>) -> Result<Option<u64>, StoreError> {
    count
        .map(|c| u64::try_from(c).map_err(|_| StoreError::Corrupt { what: "use count" }))
        .transpose()
}

/// A use count as stored.
pub(super) fn count_i64(count: Option<u64>) -> Option<i64> {
    count.map(|c| i64::try_from(c).unwrap_or(i64::MAX))
}

async fn insert_audit(conn: &mut SqliteConnection, r: &AuditRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit (owner_id, at, action, secret_id, secret_name, session_id, pid, uid, \
         command, detail, use_count, last_at, exe, claimed_command) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(r.owner_id)
    .bind(r.at)
    .bind(audit::action_name(r.action))
    .bind(r.secret_id.as_deref())
    .bind(r.secret_name.as_deref())
    .bind(r.session_id.as_deref())
    .bind(r.pid)
    .bind(r.uid)
    .bind(r.command.as_deref())
    .bind(r.detail.as_deref())
    .bind(count_i64(r.count))
    .bind(r.last_at)
    .bind(r.exe.as_deref())
    .bind(r.claimed_command.as_deref())
    .execute(conn)
    .await
    .map_err(query_failed("appending to the audit trail"))?;
    Ok(())
}

/// Appends `records` in one statement: the rows travel as one JSON array of arrays (text and
/// numbers only, never a value of a secret), in order, so that their sequence numbers follow
/// it. One statement instead of one per record, each of which costs a hand-off to the
/// connection's thread; on its own (outside a transaction) it is a transaction of its own,
/// all rows or none.
async fn insert_audit_batch<'e>(
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
                audit::action_name(r.action).into(),
                r.secret_id.as_deref().into(),
                r.secret_name.as_deref().into(),
                r.session_id.as_deref().into(),
                r.pid.into(),
                r.uid.into(),
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
         value ->> 12, value ->> 13 FROM json_each(?) ORDER BY key",
    )
    .bind(json)
    .execute(executor)
    .await
    .map_err(query_failed("appending to the audit trail"))?;
    Ok(())
}

/// Replaces a secret's version inside a transaction: checks the old version, swaps the sealed
/// fields and the data key. Shared by edits and OAuth refreshes.
async fn replace_version(
    conn: &mut SqliteConnection,
    old_version: u64,
    secret: &SecretRecord,
    fields: &[SealedField],
) -> Result<(), StoreError> {
    let old_key: Option<String> = sqlx::query_scalar(
        "SELECT data_key_id FROM secrets WHERE id = ? AND owner_id = ? AND version = ?",
    )
    .bind(secret.id.as_str())
    .bind(secret.owner_id)
    .bind(version_i64(old_version))
    .fetch_optional(&mut *conn)
    .await
    .map_err(query_failed("reading a secret"))?;
    let Some(old_key) = old_key else {
        return Err(StoreError::Changed { what: "secret" });
    };
    sqlx::query("DELETE FROM secret_fields WHERE secret_id = ?")
        .bind(secret.id.as_str())
        .execute(&mut *conn)
        .await
        .map_err(query_failed("deleting old sealed fields"))?;
    insert_data_key(conn, secret).await?;
    sqlx::query(
        "UPDATE secrets SET kind = ?, description = ?, tags = ?, field_names = ?, version = ?, \
         data_key_id = ?, updated_at = ? WHERE id = ?",
    )
    .bind(secret.kind.as_str())
    .bind(secret.description.as_deref())
    .bind(to_json(&secret.tags))
    .bind(to_json(&secret.field_names))
    .bind(version_i64(secret.version))
    .bind(secret.data_key_id.as_str())
    .bind(secret.updated_at)
    .bind(secret.id.as_str())
    .execute(&mut *conn)
    .await
    .map_err(query_failed("updating a secret"))?;
    insert_fields(conn, secret, fields).await?;
    sqlx::query("DELETE FROM data_keys WHERE id = ?")
        .bind(old_key.as_str())
        .execute(conn)
        .await
        .map_err(query_failed("deleting an old data key"))?;
    Ok(())
}

/// A new secret's rows: its data key, the secret, and its sealed fields.
async fn insert_secret_rows(
    conn: &mut SqliteConnection,
    secret: &SecretRecord,
    fields: &[SealedField],
) -> Result<(), StoreError> {
    insert_data_key(&mut *conn, secret).await?;
    sqlx::query(
        "INSERT INTO secrets (id, owner_id, name, kind, description, tags, field_names, \
         version, data_key_id, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(secret.id.as_str())
    .bind(secret.owner_id)
    .bind(secret.name.as_str())
    .bind(secret.kind.as_str())
    .bind(secret.description.as_deref())
    .bind(to_json(&secret.tags))
    .bind(to_json(&secret.field_names))
    .bind(version_i64(secret.version))
    .bind(secret.data_key_id.as_str())
    .bind(secret.created_at)
    .bind(secret.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::AlreadyExists { what: "secret", name: secret.name.clone() }
        } else {
            StoreError::Query { step: "adding a secret", source: e }
        }
    })?;
    insert_fields(&mut *conn, secret, fields).await?;
    Ok(())
}

async fn insert_data_key(
    conn: &mut SqliteConnection,
    secret: &SecretRecord,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO data_keys (id, wrapped, created_at) VALUES (?, ?, ?)")
        .bind(secret.data_key_id.as_str())
        .bind(secret.wrapped_key.as_slice())
        .bind(secret.updated_at)
        .execute(conn)
        .await
        .map_err(query_failed("storing a data key"))?;
    Ok(())
}

async fn insert_fields(
    conn: &mut SqliteConnection,
    secret: &SecretRecord,
    fields: &[SealedField],
) -> Result<(), StoreError> {
    for field in fields {
        sqlx::query("INSERT INTO secret_fields (secret_id, name, ciphertext) VALUES (?, ?, ?)")
            .bind(secret.id.as_str())
            .bind(field.name.as_str())
            .bind(field.blob.as_slice())
            .execute(&mut *conn)
            .await
            .map_err(query_failed("storing a sealed field"))?;
    }
    Ok(())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

async fn session_live(conn: &mut SqliteConnection, id: &str, now: i64) -> Result<(), StoreError> {
    let row = sqlx::query("SELECT ended_at, expires_at FROM sessions WHERE id = ?")
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(query_failed("reading a session"))?;
    match row {
        Some(row) => {
            let ended: Option<i64> = get(&row, "ended_at")?;
            let expires: i64 = get(&row, "expires_at")?;
            if ended.is_none() && expires > now { Ok(()) } else { Err(StoreError::SessionEnded) }
        }
        None => Err(StoreError::Changed { what: "session" }),
    }
}

impl Store for SqliteStore {
    fn meta_get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_failed("reading store metadata"))
        })
    }

    fn meta_put<'a>(&'a self, key: &'a str, value: &'a [u8]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO meta (key, value) VALUES (?, ?) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await
            .map_err(query_failed("writing store metadata"))?;
            Ok(())
        })
    }

    fn data_keys(&self) -> StoreFuture<'_, Vec<DataKeyRecord>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT d.id, d.wrapped, s.owner_id, s.id AS secret_id, s.version \
                 FROM data_keys d JOIN secrets s ON s.data_key_id = d.id ORDER BY d.id",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("reading data keys"))?;
            rows.iter()
                .map(|row| {
                    let version: i64 = get(row, "version")?;
                    Ok(DataKeyRecord {
                        id: get(row, "id")?,
                        owner_id: get(row, "owner_id")?,
                        secret_id: get(row, "secret_id")?,
                        version: u64::try_from(version)
                            .map_err(|_| StoreError::Corrupt { what: "version" })?,
                        wrapped: get(row, "wrapped")?,
                    })
                })
                .collect()
        })
    }

    fn rewrap_data_keys<'a>(
        &'a self,
        rewrapped: &'a [(String, Vec<u8>)],
        check_key: &'a str,
        check_value: &'a [u8],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM data_keys")
                .fetch_one(&mut *tx)
                .await
                .map_err(query_failed("counting data keys"))?;
            if usize::try_from(count).ok() != Some(rewrapped.len()) {
                return Err(StoreError::Changed { what: "set of data keys" });
            }
            for (id, wrapped) in rewrapped {
                let done = sqlx::query("UPDATE data_keys SET wrapped = ? WHERE id = ?")
                    .bind(wrapped.as_slice())
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(query_failed("re-wrapping a data key"))?;
                if done.rows_affected() != 1 {
                    return Err(StoreError::Changed { what: "set of data keys" });
                }
            }
            sqlx::query(
                "INSERT INTO meta (key, value) VALUES (?, ?) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(check_key)
            .bind(check_value)
            .execute(&mut *tx)
            .await
            .map_err(query_failed("writing the master key check"))?;
            commit(tx).await
        })
    }

    fn create_user<'a>(
        &'a self,
        name: &'a str,
        token_hash: &'a [u8],
        now: i64,
    ) -> StoreFuture<'a, UserRecord> {
        Box::pin(async move {
            let done =
                sqlx::query("INSERT INTO users (name, token_hash, created_at) VALUES (?, ?, ?)")
                    .bind(name)
                    .bind(token_hash)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| {
                        if is_unique_violation(&e) {
                            StoreError::AlreadyExists { what: "user", name: name.to_owned() }
                        } else {
                            StoreError::Query { step: "adding a user", source: e }
                        }
                    })?;
            Ok(UserRecord { id: done.last_insert_rowid(), name: name.to_owned() })
        })
    }

    fn user_by_token<'a>(&'a self, token_hash: &'a [u8]) -> StoreFuture<'a, Option<UserRecord>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT id, name FROM users WHERE token_hash = ?")
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_failed("looking up a token"))?;
            row.map(|row| Ok(UserRecord { id: get(&row, "id")?, name: get(&row, "name")? }))
                .transpose()
        })
    }

    fn user_count(&self) -> StoreFuture<'_, i64> {
        Box::pin(async move {
            sqlx::query_scalar("SELECT COUNT(*) FROM users")
                .fetch_one(&self.pool)
                .await
                .map_err(query_failed("counting users"))
        })
    }

    fn insert_secret<'a>(
        &'a self,
        secret: &'a SecretRecord,
        fields: &'a [SealedField],
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            insert_secret_rows(&mut tx, secret, fields).await?;
            insert_audit(&mut tx, audit).await?;
            commit(tx).await
        })
    }

    fn secret_by_name<'a>(
        &'a self,
        owner_id: i64,
        name: &'a str,
    ) -> StoreFuture<'a, Option<SecretRecord>> {
        Box::pin(async move {
            let row = sqlx::query(secret_select!("WHERE s.owner_id = ? AND s.name = ?"))
                .bind(owner_id)
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_failed("reading a secret"))?;
            row.as_ref().map(secret_from_row).transpose()
        })
    }

    fn list_secrets(&self, owner_id: i64) -> StoreFuture<'_, Vec<SecretRecord>> {
        Box::pin(async move {
            let rows = sqlx::query(secret_select!("WHERE s.owner_id = ? ORDER BY s.name"))
                .bind(owner_id)
                .fetch_all(&self.pool)
                .await
                .map_err(query_failed("listing secrets"))?;
            rows.iter().map(secret_from_row).collect()
        })
    }

    fn secret_fields<'a>(&'a self, secret_id: &'a str) -> StoreFuture<'a, Vec<SealedField>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT name, ciphertext FROM secret_fields WHERE secret_id = ? ORDER BY name",
            )
            .bind(secret_id)
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("reading sealed fields"))?;
            rows.iter()
                .map(|row| {
                    Ok(SealedField { name: get(row, "name")?, blob: get(row, "ciphertext")? })
                })
                .collect()
        })
    }

    fn replace_secret<'a>(
        &'a self,
        old_version: u64,
        secret: &'a SecretRecord,
        fields: &'a [SealedField],
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            replace_version(&mut tx, old_version, secret, fields).await?;
            insert_audit(&mut tx, audit).await?;
            commit(tx).await
        })
    }

    fn delete_secret<'a>(
        &'a self,
        secret: &'a SecretRecord,
        now: i64,
    ) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let sessions: Vec<String> = sqlx::query_scalar(
                "SELECT a.session_id FROM activations a JOIN sessions s ON s.id = a.session_id \
                 WHERE a.secret_id = ? AND s.ended_at IS NULL ORDER BY a.session_id",
            )
            .bind(secret.id.as_str())
            .fetch_all(&mut *tx)
            .await
            .map_err(query_failed("reading activations"))?;
            sqlx::query("DELETE FROM activations WHERE secret_id = ?")
                .bind(secret.id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(query_failed("deleting activations"))?;
            sqlx::query("DELETE FROM secret_fields WHERE secret_id = ?")
                .bind(secret.id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(query_failed("deleting sealed fields"))?;
            let done = sqlx::query("DELETE FROM secrets WHERE id = ? AND owner_id = ?")
                .bind(secret.id.as_str())
                .bind(secret.owner_id)
                .execute(&mut *tx)
                .await
                .map_err(query_failed("deleting a secret"))?;
            if done.rows_affected() != 1 {
                return Err(StoreError::Changed { what: "secret" });
            }
            sqlx::query("DELETE FROM data_keys WHERE id = ?")
                .bind(secret.data_key_id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(query_failed("deleting a data key"))?;
            let about = |action| AuditRecord {
                secret_id: Some(secret.id.clone()),
                secret_name: Some(secret.name.clone()),
                ..AuditRecord::new(secret.owner_id, now, action)
            };
            for session in &sessions {
                let record = AuditRecord {
                    session_id: Some(session.clone()),
                    detail: Some("secret deleted".to_owned()),
                    ..about(maestro_wire::api::AuditAction::Deactivated)
                };
                insert_audit(&mut tx, &record).await?;
            }
            insert_audit(&mut tx, &about(maestro_wire::api::AuditAction::Deleted)).await?;
            commit(tx).await?;
            Ok(sessions)
        })
    }

    fn secret_usage<'a>(&'a self, secret_id: &'a str) -> StoreFuture<'a, UsageSummary> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT session_id, MAX(seq) AS last_seq, MAX(COALESCE(last_at, at)) AS last_at FROM audit \
                 WHERE secret_id = ? AND action IN ('fetched', 'injected', 'file_read') \
                 GROUP BY session_id ORDER BY last_seq DESC",
            )
            .bind(secret_id)
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("reading a secret's usage"))?;
            let mut summary = UsageSummary::default();
            for row in &rows {
                let at: i64 = get(row, "last_at")?;
                summary.last_used_at = Some(summary.last_used_at.map_or(at, |l| l.max(at)));
                if let Some(session) = get::<Option<String>>(row, "session_id")? {
                    summary.sessions.push(session);
                }
            }
            Ok(summary)
        })
    }

    fn secret_active_in<'a>(&'a self, secret_id: &'a str) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            sqlx::query_scalar(
                "SELECT a.session_id FROM activations a JOIN sessions s ON s.id = a.session_id \
                 WHERE a.secret_id = ? AND s.ended_at IS NULL ORDER BY a.session_id",
            )
            .bind(secret_id)
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("reading activations"))
        })
    }

    fn secret_history<'a>(
        &'a self,
        owner_id: i64,
        secret_id: &'a str,
        before: Option<i64>,
        limit: i64,
    ) -> StoreFuture<'a, Vec<AuditRow>> {
        Box::pin(async move {
            let rows = sqlx::query(audit_select!(
                "WHERE owner_id = ? AND secret_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?"
            ))
            .bind(owner_id)
            .bind(secret_id)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("reading a secret's history"))?;
            let mut out = rows.iter().map(audit_from_row).collect::<Result<Vec<_>, _>>()?;
            out.reverse();
            Ok(out)
        })
    }

    fn insert_session<'a>(
        &'a self,
        session: &'a SessionRecord,
        token: &'a EnrollmentRecord,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            sqlx::query(
                "INSERT INTO sessions (id, owner_id, label, created_at, expires_at) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(session.id.as_str())
            .bind(session.owner_id)
            .bind(session.label.as_deref())
            .bind(session.created_at)
            .bind(session.expires_at)
            .execute(&mut *tx)
            .await
            .map_err(query_failed("adding a session"))?;
            sqlx::query(
                "INSERT INTO enrollment_tokens (token_hash, session_id, expires_at) \
                 VALUES (?, ?, ?)",
            )
            .bind(token.token_hash.as_slice())
            .bind(token.session_id.as_str())
            .bind(token.expires_at)
            .execute(&mut *tx)
            .await
            .map_err(query_failed("storing an enrollment token"))?;
            insert_audit(&mut tx, audit).await?;
            commit(tx).await
        })
    }

    fn session<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<SessionRecord>> {
        Box::pin(async move {
            let ticket = match self.sessions.lookup(id) {
                session_cache::Lookup::Hit(record) => return Ok(Some(record)),
                session_cache::Lookup::Miss(ticket) => Some(ticket),
                session_cache::Lookup::Bypass => None,
            };
            let row = sqlx::query(session_select!("WHERE id = ?"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_failed("reading a session"))?;
            let record = row.as_ref().map(session_from_row).transpose()?;
            if let (Some(ticket), Some(record)) = (ticket, &record) {
                self.sessions.offer(ticket, record);
            }
            Ok(record)
        })
    }

    fn list_sessions(&self, owner_id: i64) -> StoreFuture<'_, Vec<SessionRecord>> {
        Box::pin(async move {
            let rows =
                sqlx::query(session_select!("WHERE owner_id = ? ORDER BY created_at DESC, id"))
                    .bind(owner_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(query_failed("listing sessions"))?;
            rows.iter().map(session_from_row).collect()
        })
    }

    fn end_session<'a>(
        &'a self,
        id: &'a str,
        reason: &'a str,
        now: i64,
    ) -> StoreFuture<'a, Option<SessionRecord>> {
        Box::pin(async move {
            // Until this is dropped (after the commit, or on failure), reads of the session go
            // to the database.
            let _change = self.sessions.change(id);
            let mut tx = self.write_tx().await?;
            let done = sqlx::query(
                "UPDATE sessions SET ended_at = ?, ended_reason = ? \
                 WHERE id = ? AND ended_at IS NULL",
            )
            .bind(now)
            .bind(reason)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(query_failed("ending a session"))?;
            if done.rows_affected() == 0 {
                return Ok(None);
            }
            let row = sqlx::query(session_select!("WHERE id = ?"))
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .map_err(query_failed("reading a session"))?;
            let session = session_from_row(&row)?;
            let active = sqlx::query(
                "SELECT s.id, s.name FROM activations a JOIN secrets s ON s.id = a.secret_id \
                 WHERE a.session_id = ? ORDER BY s.name",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(query_failed("reading activations"))?;
            sqlx::query("DELETE FROM activations WHERE session_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(query_failed("clearing activations"))?;
            let base = |action| AuditRecord {
                session_id: Some(id.to_owned()),
                ..AuditRecord::new(session.owner_id, now, action)
            };
            for row in &active {
                let record = AuditRecord {
                    secret_id: Some(get(row, "id")?),
                    secret_name: Some(get(row, "name")?),
                    detail: Some("session ended".to_owned()),
                    ..base(maestro_wire::api::AuditAction::Deactivated)
                };
                insert_audit(&mut tx, &record).await?;
            }
            let ended = AuditRecord {
                detail: Some(reason.to_owned()),
                ..base(maestro_wire::api::AuditAction::SessionEnded)
            };
            insert_audit(&mut tx, &ended).await?;
            commit(tx).await?;
            Ok(Some(session))
        })
    }

    fn expired_sessions(&self, now: i64) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            sqlx::query_scalar(
                "SELECT id FROM sessions WHERE ended_at IS NULL AND expires_at <= ? \
                 ORDER BY expires_at",
            )
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("finding expired sessions"))
        })
    }

    fn active_secrets<'a>(&'a self, session_id: &'a str) -> StoreFuture<'a, Vec<SecretRecord>> {
        Box::pin(async move {
            let rows = sqlx::query(secret_select!(
                "JOIN activations a ON a.secret_id = s.id WHERE a.session_id = ? ORDER BY s.name"
            ))
            .bind(session_id)
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("reading active secrets"))?;
            rows.iter().map(secret_from_row).collect()
        })
    }

    fn active_material<'a>(
        &'a self,
        session_id: &'a str,
        name: Option<&'a str>,
    ) -> StoreFuture<'a, Vec<ActiveMaterial>> {
        // Shares one statement with the reads waiting at the same moment.
        Box::pin(self.material.read(session_id, name))
    }

    fn change_activations<'a>(
        &'a self,
        session_id: &'a str,
        add: &'a [String],
        remove: &'a [String],
        now: i64,
        audit: &'a [AuditRecord],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            session_live(&mut tx, session_id, now).await?;
            for secret_id in add {
                sqlx::query(
                    "INSERT OR IGNORE INTO activations (session_id, secret_id, activated_at) \
                     VALUES (?, ?, ?)",
                )
                .bind(session_id)
                .bind(secret_id.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(query_failed("activating a secret"))?;
            }
            for secret_id in remove {
                sqlx::query("DELETE FROM activations WHERE session_id = ? AND secret_id = ?")
                    .bind(session_id)
                    .bind(secret_id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(query_failed("deactivating a secret"))?;
            }
            for record in audit {
                insert_audit(&mut tx, record).await?;
            }
            commit(tx).await
        })
    }

    fn enrollment<'a>(&'a self, token_hash: &'a [u8]) -> StoreFuture<'a, Option<EnrollmentRecord>> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT token_hash, session_id, expires_at, used_at FROM enrollment_tokens \
                 WHERE token_hash = ?",
            )
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_failed("looking up an enrollment token"))?;
            row.map(|row| {
                Ok(EnrollmentRecord {
                    token_hash: get(&row, "token_hash")?,
                    session_id: get(&row, "session_id")?,
                    expires_at: get(&row, "expires_at")?,
                    used_at: get(&row, "used_at")?,
                })
            })
            .transpose()
        })
    }

    fn complete_enrollment<'a>(
        &'a self,
        token_hash: &'a [u8],
        now: i64,
        cert: &'a CertificateRecord,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let _change = self.sessions.change(&cert.session_id);
            let mut tx = self.write_tx().await?;
            let done = sqlx::query(
                "UPDATE enrollment_tokens SET used_at = ? \
                 WHERE token_hash = ? AND session_id = ? AND used_at IS NULL AND expires_at > ?",
            )
            .bind(now)
            .bind(token_hash)
            .bind(cert.session_id.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(query_failed("using an enrollment token"))?;
            if done.rows_affected() != 1 {
                return Err(StoreError::TokenUnusable);
            }
            session_live(&mut tx, &cert.session_id, now).await?;
            insert_certificate(&mut tx, cert).await?;
            sqlx::query("UPDATE sessions SET enrolled = 1, cert_serial = ? WHERE id = ?")
                .bind(cert.serial.as_str())
                .bind(cert.session_id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(query_failed("marking a session enrolled"))?;
            insert_audit(&mut tx, audit).await?;
            commit(tx).await
        })
    }

    fn record_certificate<'a>(
        &'a self,
        cert: &'a CertificateRecord,
        previous_until: i64,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let _change = self.sessions.change(&cert.session_id);
            let mut tx = self.write_tx().await?;
            session_live(&mut tx, &cert.session_id, cert.issued_at).await?;
            insert_certificate(&mut tx, cert).await?;
            sqlx::query(
                "UPDATE sessions SET previous_serial = cert_serial, previous_until = ?, \
                 cert_serial = ? WHERE id = ?",
            )
            .bind(previous_until)
            .bind(cert.serial.as_str())
            .bind(cert.session_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(query_failed("retiring a renewed certificate"))?;
            insert_audit(&mut tx, audit).await?;
            commit(tx).await
        })
    }

    fn session_activation_history<'a>(
        &'a self,
        session_id: &'a str,
    ) -> StoreFuture<'a, Vec<(String, Option<String>)>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT secret_name, secret_id, MAX(seq) AS last FROM audit \
                 WHERE session_id = ? AND action = 'activated' AND secret_name IS NOT NULL \
                 GROUP BY secret_name, secret_id ORDER BY last",
            )
            .bind(session_id)
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("reading a session's activations"))?;
            rows.iter().map(|row| Ok((get(row, "secret_name")?, get(row, "secret_id")?))).collect()
        })
    }

    fn append_audit<'a>(&'a self, records: &'a [AuditRecord]) -> StoreFuture<'a, ()> {
        // Shares a transaction (one fsync) with the appends waiting at the same moment; returns
        // once these records are committed.
        Box::pin(self.audit.append(records))
    }

    fn audit_for_owner(
        &self,
        owner_id: i64,
        before: Option<i64>,
        limit: i64,
    ) -> StoreFuture<'_, Vec<AuditRow>> {
        Box::pin(async move {
            let rows = sqlx::query(audit_select!(
                "WHERE owner_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?"
            ))
            .bind(owner_id)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("reading the audit trail"))?;
            let mut out = rows.iter().map(audit_from_row).collect::<Result<Vec<_>, _>>()?;
            out.reverse();
            Ok(out)
        })
    }
}

async fn insert_certificate(
    conn: &mut SqliteConnection,
    cert: &CertificateRecord,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO certificates (serial, session_id, not_before, not_after, issued_at, reason) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(cert.serial.as_str())
    .bind(cert.session_id.as_str())
    .bind(cert.not_before)
    .bind(cert.not_after)
    .bind(cert.issued_at)
    .bind(cert.reason)
    .execute(conn)
    .await
    .map_err(query_failed("recording a certificate"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use maestro_wire::api::AuditAction;

    use super::*;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
        (dir, store)
    }

    fn secret(owner: i64, id: &str, name: &str, version: u64) -> SecretRecord {
        SecretRecord {
            id: id.into(),
            owner_id: owner,
            name: name.into(),
            kind: "generic".into(),
            description: None,
            tags: vec!["t".into()],
            version,
            field_names: vec!["A".into()],
            data_key_id: format!("{id}-k{version}"),
            wrapped_key: vec![1, 2, 3],
            created_at: 10,
            updated_at: 10 + i64::try_from(version).unwrap(),
        }
    }

    fn session(owner: i64, id: &str) -> (SessionRecord, EnrollmentRecord) {
        (
            SessionRecord {
                id: id.into(),
                owner_id: owner,
                label: None,
                created_at: 10,
                expires_at: 1000,
                ended_at: None,
                ended_reason: None,
                enrolled: false,
                serials: Default::default(),
            },
            EnrollmentRecord {
                token_hash: id.as_bytes().to_vec(),
                session_id: id.into(),
                expires_at: 100,
                used_at: None,
            },
        )
    }

    #[tokio::test]
    async fn secrets_versions_and_names() {
        let (_d, s) = store().await;
        let u = s.create_user("alice", b"h1", 1).await.unwrap();
        assert!(matches!(
            s.create_user("alice", b"h2", 1).await,
            Err(StoreError::AlreadyExists { .. })
        ));
        assert_eq!(s.user_by_token(b"h1").await.unwrap(), Some(u.clone()));
        let a = secret(u.id, "s1", "A", 1);
        let audit = AuditRecord::new(u.id, 10, AuditAction::Created);
        let fields = [SealedField { name: "A".into(), blob: vec![9; 40] }];
        s.insert_secret(&a, &fields, &audit).await.unwrap();
        assert!(matches!(
            s.insert_secret(&secret(u.id, "s2", "A", 1), &fields, &audit).await,
            Err(StoreError::AlreadyExists { .. })
        ));
        let v2 = secret(u.id, "s1", "A", 2);
        let new_fields = [SealedField { name: "A".into(), blob: vec![8; 40] }];
        s.replace_secret(1, &v2, &new_fields, &audit).await.unwrap();
        assert!(matches!(
            s.replace_secret(1, &v2, &new_fields, &audit).await,
            Err(StoreError::Changed { .. })
        ));
        let got = s.secret_by_name(u.id, "A").await.unwrap().unwrap();
        assert_eq!(got.version, 2);
        assert_eq!(got.data_key_id, "s1-k2");
        assert_eq!(s.secret_fields("s1").await.unwrap()[0].blob, vec![8; 40]);
        assert_eq!(s.data_keys().await.unwrap().len(), 1, "old data key is deleted");
        assert!(s.secret_by_name(u.id + 1, "A").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn activations_sessions_and_audit() {
        let (_d, s) = store().await;
        let u = s.create_user("alice", b"h1", 1).await.unwrap();
        let a = secret(u.id, "s1", "A", 1);
        let audit = AuditRecord::new(u.id, 10, AuditAction::Created);
        s.insert_secret(&a, &[], &audit).await.unwrap();
        let (sess, tok) = session(u.id, "sess1");
        s.insert_session(&sess, &tok, &audit).await.unwrap();
        s.change_activations("sess1", &["s1".into()], &[], 20, &[]).await.unwrap();
        assert_eq!(s.active_secrets("sess1").await.unwrap().len(), 1);
        assert_eq!(s.secret_active_in("s1").await.unwrap(), vec!["sess1".to_owned()]);
        let ended = s.end_session("sess1", "user", 30).await.unwrap().unwrap();
        assert_eq!(ended.ended_at, Some(30));
        assert!(s.end_session("sess1", "user", 31).await.unwrap().is_none());
        assert!(s.active_secrets("sess1").await.unwrap().is_empty());
        assert!(matches!(
            s.change_activations("sess1", &["s1".into()], &[], 40, &[]).await,
            Err(StoreError::SessionEnded)
        ));
        // Expiry is a property of time, not only of ended_at.
        let (sess2, tok2) = session(u.id, "sess2");
        s.insert_session(&sess2, &tok2, &audit).await.unwrap();
        assert_eq!(s.expired_sessions(999).await.unwrap(), Vec::<String>::new());
        assert_eq!(s.expired_sessions(1000).await.unwrap(), vec!["sess2".to_owned()]);
        assert!(matches!(
            s.change_activations("sess2", &["s1".into()], &[], 1000, &[]).await,
            Err(StoreError::SessionEnded)
        ));
        let trail = s.audit_for_owner(u.id, None, 100).await.unwrap();
        assert!(trail.iter().any(|r| r.record.action == AuditAction::SessionEnded));
        assert!(trail.windows(2).all(|w| w[0].seq < w[1].seq));
    }

    #[tokio::test]
    async fn audit_is_append_only() {
        let (_d, s) = store().await;
        s.append_audit(&[AuditRecord::new(1, 1, AuditAction::Denied)]).await.unwrap();
        let e = sqlx::query("UPDATE audit SET detail = 'x'").execute(&s.pool).await.unwrap_err();
        assert!(e.to_string().contains("append-only"));
        let e = sqlx::query("DELETE FROM audit").execute(&s.pool).await.unwrap_err();
        assert!(e.to_string().contains("append-only"));
    }

    #[tokio::test]
    async fn enrollment_token_is_single_use() {
        let (_d, s) = store().await;
        let u = s.create_user("alice", b"h1", 1).await.unwrap();
        let audit = AuditRecord::new(u.id, 10, AuditAction::Enrolled);
        let (sess, tok) = session(u.id, "sess1");
        s.insert_session(&sess, &tok, &audit).await.unwrap();
        let cert = |serial: &str| CertificateRecord {
            serial: serial.into(),
            session_id: "sess1".into(),
            not_before: 0,
            not_after: 500,
            issued_at: 20,
            reason: "enroll",
        };
        s.complete_enrollment(b"sess1", 20, &cert("01"), &audit).await.unwrap();
        assert!(matches!(
            s.complete_enrollment(b"sess1", 21, &cert("02"), &audit).await,
            Err(StoreError::TokenUnusable)
        ));
        assert!(s.session("sess1").await.unwrap().unwrap().enrolled);
        let (sess2, tok2) = session(u.id, "sess2");
        s.insert_session(&sess2, &tok2, &audit).await.unwrap();
        let late = CertificateRecord { session_id: "sess2".into(), ..cert("03") };
        assert!(matches!(
            s.complete_enrollment(b"sess2", 100, &late, &audit).await,
            Err(StoreError::TokenUnusable)
        ));
    }

    /// A secret `name` of `owner` whose fields are `fields` (blob = the field name's bytes).
    async fn add_secret(s: &SqliteStore, owner: i64, id: &str, name: &str, fields: &[&str]) {
        let record = SecretRecord {
            field_names: fields.iter().map(|f| (*f).to_owned()).collect(),
            ..secret(owner, id, name, 1)
        };
        let sealed: Vec<SealedField> = fields
            .iter()
            .map(|f| SealedField { name: (*f).to_owned(), blob: format!("{id}/{f}").into_bytes() })
            .collect();
        let audit = AuditRecord::new(owner, 10, AuditAction::Created);
        s.insert_secret(&record, &sealed, &audit).await.unwrap();
    }

    /// `(secret id, [field names], [field blobs as text])` of each secret read.
    fn summary(material: &[ActiveMaterial]) -> Vec<(String, Vec<String>, Vec<String>)> {
        material
            .iter()
            .map(|m| {
                assert!(m.oauth.is_none());
                (
                    m.secret.id.clone(),
                    m.fields.iter().map(|f| f.name.clone()).collect(),
                    m.fields.iter().map(|f| String::from_utf8(f.blob.clone()).unwrap()).collect(),
                )
            })
            .collect()
    }

    fn expected(rows: &[(&str, &[&str])]) -> Vec<(String, Vec<String>, Vec<String>)> {
        rows.iter()
            .map(|(id, fields)| {
                (
                    (*id).to_owned(),
                    fields.iter().map(|f| (*f).to_owned()).collect(),
                    fields.iter().map(|f| format!("{id}/{f}")).collect(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn material_reads_see_only_their_own_sessions_active_secrets() {
        let (_d, s) = store().await;
        let alice = s.create_user("alice", b"h1", 1).await.unwrap();
        let bob = s.create_user("bob", b"h2", 1).await.unwrap();
        add_secret(&s, alice.id, "a-zed", "ZED", &["Z2", "Z1"]).await;
        add_secret(&s, alice.id, "a-api", "API", &["KEY"]).await;
        add_secret(&s, alice.id, "a-empty", "EMPTY", &[]).await;
        add_secret(&s, alice.id, "a-idle", "IDLE", &["X"]).await;
        add_secret(&s, bob.id, "b-api", "API", &["KEY", "URL"]).await;
        let audit = AuditRecord::new(alice.id, 10, AuditAction::Created);
        let (s1, t1) = session(alice.id, "s1");
        s.insert_session(&s1, &t1, &audit).await.unwrap();
        let (s2, t2) = session(bob.id, "s2");
        s.insert_session(&s2, &t2, &audit).await.unwrap();
        let add = ["a-zed".to_owned(), "a-api".to_owned(), "a-empty".to_owned()];
        s.change_activations("s1", &add, &[], 20, &[]).await.unwrap();
        s.change_activations("s2", &["b-api".to_owned()], &[], 20, &[]).await.unwrap();

        // Secrets by name, fields by name; a secret without fields has none.
        let mine = expected(&[("a-api", &["KEY"]), ("a-empty", &[]), ("a-zed", &["Z1", "Z2"])]);
        assert_eq!(summary(&s.active_material("s1", None).await.unwrap()), mine);
        let theirs = expected(&[("b-api", &["KEY", "URL"])]);
        assert_eq!(summary(&s.active_material("s2", None).await.unwrap()), theirs);
        // By name: the session's own secret of that name, nothing for an inactive one.
        let api = s.active_material("s1", Some("API")).await.unwrap();
        assert_eq!(summary(&api), expected(&[("a-api", &["KEY"])]));
        assert_eq!(api[0].secret.owner_id, alice.id);
        assert!(s.active_material("s1", Some("IDLE")).await.unwrap().is_empty());
        assert!(s.active_material("s1", Some("NOPE")).await.unwrap().is_empty());
        assert!(s.active_material("unknown", None).await.unwrap().is_empty());

        // Reads running at once share statements; each still gets exactly its own answer.
        let reads = (0..60).map(|i| {
            let s = &s;
            async move {
                match i % 4 {
                    0 => (i, summary(&s.active_material("s1", None).await.unwrap())),
                    1 => (i, summary(&s.active_material("s2", None).await.unwrap())),
                    2 => (i, summary(&s.active_material("s1", Some("ZED")).await.unwrap())),
                    _ => (i, summary(&s.active_material("s2", Some("ZED")).await.unwrap())),
                }
            }
        });
        for (i, got) in futures_util::future::join_all(reads).await {
            let want = match i % 4 {
                0 => mine.clone(),
                1 => theirs.clone(),
                2 => expected(&[("a-zed", &["Z1", "Z2"])]),
                _ => Vec::new(),
            };
            assert_eq!(got, want, "read {i}");
        }

        // An ended session has nothing active.
        s.end_session("s1", "user", 30).await.unwrap();
        assert!(s.active_material("s1", None).await.unwrap().is_empty());
        assert_eq!(summary(&s.active_material("s2", None).await.unwrap()), theirs);
    }

    #[tokio::test]
    async fn appended_audit_records_keep_their_order_and_every_column() {
        let (_d, s) = store().await;
        let full = AuditRecord {
            secret_id: Some("id-1".into()),
            secret_name: Some("NAME".into()),
            session_id: Some("sess".into()),
            pid: Some(u32::MAX),
            uid: Some(0),
            command: Some("cat \"quoted\" \\ ünïcode".into()),
            detail: Some("line\nbreak".into()),
            ..AuditRecord::new(7, i64::MAX, AuditAction::FileRead)
        };
        let records: Vec<AuditRecord> = (0..50)
            .map(|i| {
                if i % 2 == 0 {
                    AuditRecord { at: i, ..full.clone() }
                } else {
                    AuditRecord::new(7, i, AuditAction::Fetched)
                }
            })
            .collect();
        // Several callers at once (one shared statement), then one alone, then a batch too
        // large for one statement (one statement per record, one transaction).
        let appends = records.chunks(5).map(|chunk| s.append_audit(chunk));
        for outcome in futures_util::future::join_all(appends).await {
            outcome.unwrap();
        }
        s.append_audit(std::slice::from_ref(&full)).await.unwrap();
        let large: Vec<AuditRecord> =
            (0..300).map(|i| AuditRecord { at: 1000 + i, ..full.clone() }).collect();
        s.append_audit(&large).await.unwrap();
        let trail = s.audit_for_owner(7, None, 1000).await.unwrap();
        let got: Vec<AuditRecord> = trail.iter().map(|r| r.record.clone()).collect();
        let mut want = records.clone();
        want.push(full);
        want.extend(large);
        assert_eq!(got, want);
        assert!(trail.windows(2).all(|w| w[0].seq < w[1].seq));
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
        let row = sqlx::query(session_select!("WHERE id = ?"))
            .bind("sess1")
            .fetch_one(&s.pool)
            .await
            .unwrap();
        assert_eq!(session_from_row(&row).unwrap(), ended);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_ended_while_agents_read_it_is_never_seen_live_afterwards() {
        let (_d, s) = store().await;
        let u = s.create_user("alice", b"h1", 1).await.unwrap();
        let audit = AuditRecord::new(u.id, 10, AuditAction::Created);
        for round in 0..20 {
            let id = format!("race{round}");
            let (sess, tok) = session(u.id, &id);
            s.insert_session(&sess, &tok, &audit).await.unwrap();
            let readers: Vec<_> = (0..4)
                .map(|_| {
                    let (s, id) = (s.clone(), id.clone());
                    tokio::spawn(async move {
                        for _ in 0..25 {
                            s.session(&id).await.unwrap();
                        }
                    })
                })
                .collect();
            s.end_session(&id, "user", 30).await.unwrap();
            assert!(!s.session(&id).await.unwrap().unwrap().is_live(31), "round {round}");
            for reader in readers {
                reader.await.unwrap();
            }
            assert!(!s.session(&id).await.unwrap().unwrap().is_live(31), "round {round}");
        }
    }
}

#[cfg(test)]
mod migration_tests {
    use sqlx::Connection;

    use super::*;

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
        store.close().await;
    }
}
