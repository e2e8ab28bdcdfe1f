//! Every statement of [`crate::store::Store`], written once and compiled once per driver.
//!
//! This file is not a module of its own: `store/sqlite.rs` and `store/postgres.rs` each
//! compile it (`compile_statements!` in `store/sql.rs`) with their own `Db` (the typed sqlx
//! driver) and `Eng` (the [`SqlEngine`]), so the same statement texts run on both engines with typed drivers (no
//! `sqlx::Any`) and without generic bounds on every column type. The statements use `$N`
//! placeholders and `RETURNING`, which both drivers accept. What differs between the engines
//! (how a write transaction begins, the statements that lock rows, the fast paths) comes
//! from `Eng` or from the including module.

use maestro_wire::api::AuditAction;
use maestro_wire::catalog::seal::Exposure;
use sqlx::{Row, Transaction};

use super::{Db, Eng};
use crate::store::sql::{
    SqlEngine, SqlStore, count_i64, count_u64, id_u32, is_unique_violation, json_list, to_json,
    version_i64, version_u64,
};
use crate::store::sqlite::session_cache::Lookup;
use crate::store::{
    ActivationRow, ActiveMaterial, AuditRecord, AuditRow, Lifecycle, NewActivation, CertificateRecord, DataKeyRecord, EnrollmentRecord,
    OAuthState, OwnerLock, SealedField, SecretRecord, SessionRecord, SessionSerials, Store,
    StoreError, StoreFuture, UsageSummary, UserRecord, query_failed,
};
use crate::store::{AuditPosition, AuditQuery, UsageGroup};

/// The store this file implements.
type This = SqlStore<Eng>;
/// A connection of the driver.
pub(super) type Conn = <Db as sqlx::Database>::Connection;
/// A row of the driver.
pub(super) type DbRow = <Db as sqlx::Database>::Row;
/// A write transaction.
pub(super) type Tx = Transaction<'static, Db>;

macro_rules! secret_select {
    ($($rest:literal)*) => {
        concat!(
            "SELECT s.id, s.owner_id, s.name, s.kind, s.description, s.tags, s.field_names, \
             s.version, s.data_key_id, d.wrapped, s.created_at, s.updated_at, s.exposure, s.hosts, s.compromised_at, \
             s.activation_default, s.activation_max, s.rotate_every, s.value_changed_at \
             FROM secrets s JOIN data_keys d ON d.id = s.data_key_id ",
            $($rest),*
        )
    };
}

macro_rules! session_select {
    ($($rest:literal)*) => {
        concat!(
            "SELECT id, owner_id, label, created_at, expires_at, ended_at, ended_reason, \
             enrolled, cert_serial, previous_serial, previous_until, decoys FROM sessions ",
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

macro_rules! activation_select {
    ($($rest:literal)*) => {
        concat!(
            "SELECT a.session_id, se.label AS session_label, a.secret_id, s.name AS secret_name, \
             s.owner_id AS secret_owner_id, a.activated_at, a.expires_at FROM activations a \
             JOIN sessions se ON se.id = a.session_id JOIN secrets s ON s.id = a.secret_id ",
            $($rest),*
        )
    };
}

fn activation_from_row(row: &DbRow) -> Result<ActivationRow, StoreError> {
    Ok(ActivationRow {
        session_id: get(row, "session_id")?,
        session_label: get(row, "session_label")?,
        secret_id: get(row, "secret_id")?,
        secret_name: get(row, "secret_name")?,
        secret_owner_id: get(row, "secret_owner_id")?,
        activated_at: get(row, "activated_at")?,
        expires_at: get(row, "expires_at")?,
    })
}

/// Adds an activation, or sets the end of one already there (a renewal keeps its start).
async fn insert_activation(
    conn: &mut Conn,
    session_id: &str,
    activation: &NewActivation,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO activations (session_id, secret_id, activated_at, expires_at) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (session_id, secret_id) DO UPDATE SET expires_at = excluded.expires_at",
    )
    .bind(session_id)
    .bind(activation.secret_id.as_str())
    .bind(now)
    .bind(activation.expires_at)
    .execute(conn)
    .await
    .map_err(query_failed("activating a secret"))?;
    Ok(())
}

impl This {
    /// Begins a write transaction the engine's way (SQLite: `BEGIN IMMEDIATE`).
    pub(super) async fn write_tx(&self) -> Result<Tx, StoreError> {
        Eng::begin_write(&self.pool).await.map_err(query_failed("starting a transaction"))
    }
}

pub(super) async fn commit(tx: Tx) -> Result<(), StoreError> {
    tx.commit().await.map_err(query_failed("committing a transaction"))
}

pub(super) fn get<'r, T>(row: &'r DbRow, column: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Db> + sqlx::Type<Db>,
{
    row.try_get(column).map_err(query_failed("reading a row"))
}

pub(super) fn secret_from_row(row: &DbRow) -> Result<SecretRecord, StoreError> {
    Ok(SecretRecord {
        id: get(row, "id")?,
        owner_id: get(row, "owner_id")?,
        name: get(row, "name")?,
        kind: get(row, "kind")?,
        description: get(row, "description")?,
        tags: json_list(&get::<String>(row, "tags")?, "tag list")?,
        version: version_u64(get(row, "version")?)?,
        field_names: json_list(&get::<String>(row, "field_names")?, "field name list")?,
        data_key_id: get(row, "data_key_id")?,
        wrapped_key: get(row, "wrapped")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        exposure: Exposure::parse(get(row, "exposure")?)
            .ok_or(StoreError::Corrupt { what: "secret exposure" })?,
        hosts: json_list(&get::<String>(row, "hosts")?, "host list")?,
        compromised_at: get(row, "compromised_at")?,
        life: Lifecycle {
            activation_default: get(row, "activation_default")?,
            activation_max: get(row, "activation_max")?,
            rotate_every: get(row, "rotate_every")?,
            value_changed_at: get(row, "value_changed_at")?,
        },
    })
}

pub(super) fn session_from_row(row: &DbRow) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id: get(row, "id")?,
        owner_id: get(row, "owner_id")?,
        label: get(row, "label")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        ended_at: get(row, "ended_at")?,
        ended_reason: get(row, "ended_reason")?,
        enrolled: get(row, "enrolled")?,
        decoys: get(row, "decoys")?,
        serials: SessionSerials {
            current: get(row, "cert_serial")?,
            previous: get(row, "previous_serial")?,
            previous_until: get(row, "previous_until")?,
        },
    })
}

/// Adds one row of a material read to its answer: a new secret, or one more field of the last
/// one (rows come ordered by secret, then field). A material read has one row per field, and
/// one row with no field for a secret without fields.
pub(super) fn add_material_row(
    answer: &mut Vec<ActiveMaterial>,
    row: &DbRow,
) -> Result<(), StoreError> {
    let id: &str = get(row, "id")?;
    if answer.last().is_none_or(|last| last.secret.id != id) {
        let oauth = if get::<bool>(row, "oauth")? {
            Some(OAuthState {
                expires_at: get(row, "oauth_expires_at")?,
                needs_reauth: get(row, "oauth_needs_reauth")?,
            })
        } else {
            None
        };
        answer.push(ActiveMaterial {
            secret: secret_from_row(row)?,
            fields: Vec::new(),
            oauth,
            active_until: get(row, "active_until")?,
        });
    }
    if let (Some(name), Some(last)) = (get::<Option<String>>(row, "field_name")?, answer.last_mut())
    {
        last.fields.push(SealedField { name, blob: get(row, "field_blob")? });
    }
    Ok(())
}

pub(super) fn audit_from_row(row: &DbRow) -> Result<AuditRow, StoreError> {
    let action: String = get(row, "action")?;
    Ok(AuditRow {
        seq: get(row, "seq")?,
        record: AuditRecord {
            owner_id: get(row, "owner_id")?,
            at: get(row, "at")?,
            action: AuditAction::from_stored_name(&action)
                .ok_or(StoreError::Corrupt { what: "audit action" })?,
            secret_id: get(row, "secret_id")?,
            secret_name: get(row, "secret_name")?,
            session_id: get(row, "session_id")?,
            pid: id_u32(get(row, "pid")?, "pid")?,
            uid: id_u32(get(row, "uid")?, "uid")?,
            command: get(row, "command")?,
            detail: get(row, "detail")?,
            count: count_u64(get(row, "use_count")?)?,
            last_at: get(row, "last_at")?,
            exe: get(row, "exe")?,
            claimed_command: get(row, "claimed_command")?,
        },
    })
}

/// A secret's uses grouped by session, command and UTC day; the caller adds its filter
/// between this and [`USAGE_GROUPS_BY`]. PostgreSQL's SUM of a BIGINT is a NUMERIC: cast back.
/// `at / 86400` is the UTC day (integer division on both engines; `at` is never negative).
pub(super) const USAGE_GROUPS: &str = "SELECT session_id, command, at / 86400 AS day, \
     CAST(SUM(COALESCE(use_count, 1)) AS BIGINT) AS uses, COUNT(*) AS records, \
     MIN(at) AS first_at, MAX(COALESCE(last_at, at)) AS last_at FROM audit \
     WHERE secret_id = $1 AND action IN ('fetched', 'injected', 'file_read', 'substituted')";
pub(super) const USAGE_GROUPS_BY: &str = "GROUP BY session_id, command, at / 86400";

/// One row of [`USAGE_GROUPS`].
pub(super) fn usage_group_from_row(row: &DbRow) -> Result<UsageGroup, StoreError> {
    Ok(UsageGroup {
        session_id: get(row, "session_id")?,
        command: get(row, "command")?,
        day: get(row, "day")?,
        uses: get(row, "uses")?,
        records: get(row, "records")?,
        first_at: get(row, "first_at")?,
        last_at: get(row, "last_at")?,
    })
}

pub(super) async fn insert_audit(conn: &mut Conn, r: &AuditRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit (owner_id, at, action, secret_id, secret_name, session_id, pid, uid, \
         command, detail, use_count, last_at, exe, claimed_command) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(r.owner_id)
    .bind(r.at)
    .bind(r.action.stored_name())
    .bind(r.secret_id.as_deref())
    .bind(r.secret_name.as_deref())
    .bind(r.session_id.as_deref())
    .bind(r.pid.map(i64::from))
    .bind(r.uid.map(i64::from))
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

pub(super) async fn insert_data_key(
    conn: &mut Conn,
    secret: &SecretRecord,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO data_keys (id, wrapped, created_at) VALUES ($1, $2, $3)")
        .bind(secret.data_key_id.as_str())
        .bind(secret.wrapped_key.as_slice())
        .bind(secret.updated_at)
        .execute(conn)
        .await
        .map_err(query_failed("storing a data key"))?;
    Ok(())
}

async fn insert_fields(
    conn: &mut Conn,
    secret: &SecretRecord,
    fields: &[SealedField],
) -> Result<(), StoreError> {
    for field in fields {
        sqlx::query("INSERT INTO secret_fields (secret_id, name, ciphertext) VALUES ($1, $2, $3)")
            .bind(secret.id.as_str())
            .bind(field.name.as_str())
            .bind(field.blob.as_slice())
            .execute(&mut *conn)
            .await
            .map_err(query_failed("storing a sealed field"))?;
    }
    Ok(())
}

async fn insert_certificate(conn: &mut Conn, cert: &CertificateRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO certificates (serial, session_id, not_before, not_after, issued_at, reason) \
         VALUES ($1, $2, $3, $4, $5, $6)",
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

/// Adds a secret's rows: its data key, the secret, its sealed fields.
pub(super) async fn insert_secret_rows(
    conn: &mut Conn,
    secret: &SecretRecord,
    fields: &[SealedField],
) -> Result<(), StoreError> {
    insert_data_key(conn, secret).await?;
    sqlx::query(
        "INSERT INTO secrets (id, owner_id, name, kind, description, tags, field_names, \
         version, data_key_id, created_at, updated_at, exposure, hosts, compromised_at, \
         activation_default, activation_max, rotate_every, value_changed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
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
    .bind(secret.exposure.as_str())
    .bind(to_json(&secret.hosts))
    .bind(secret.compromised_at)
    .bind(secret.life.activation_default)
    .bind(secret.life.activation_max)
    .bind(secret.life.rotate_every)
    .bind(secret.life.value_changed_at)
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::AlreadyExists { what: "secret", name: secret.name.clone() }
        } else {
            StoreError::Query { step: "adding a secret", source: e }
        }
    })?;
    insert_fields(conn, secret, fields).await
}

/// Replaces version `old_version` of a secret by `secret` and its fields, deleting the old data
/// key and ciphertexts; [`StoreError::Changed`] if the stored version moved.
pub(super) async fn replace_version(
    conn: &mut Conn,
    old_version: u64,
    secret: &SecretRecord,
    fields: &[SealedField],
) -> Result<(), StoreError> {
    // PostgreSQL: FOR UPDATE, so a concurrent edit waits here, then finds the version changed.
    let old_key: Option<String> = sqlx::query_scalar(Eng::SECRET_AT_VERSION)
        .bind(secret.id.as_str())
        .bind(secret.owner_id)
        .bind(version_i64(old_version))
        .fetch_optional(&mut *conn)
        .await
        .map_err(query_failed("reading a secret"))?;
    let Some(old_key) = old_key else {
        return Err(StoreError::Changed { what: "secret" });
    };
    sqlx::query("DELETE FROM secret_fields WHERE secret_id = $1")
        .bind(secret.id.as_str())
        .execute(&mut *conn)
        .await
        .map_err(query_failed("deleting old sealed fields"))?;
    insert_data_key(conn, secret).await?;
    sqlx::query(
        "UPDATE secrets SET kind = $1, description = $2, tags = $3, field_names = $4, \
         version = $5, data_key_id = $6, updated_at = $7, exposure = $8, hosts = $9, \
         compromised_at = $10, activation_default = $11, activation_max = $12, \
         rotate_every = $13, value_changed_at = $14 WHERE id = $15",
    )
    .bind(secret.kind.as_str())
    .bind(secret.description.as_deref())
    .bind(to_json(&secret.tags))
    .bind(to_json(&secret.field_names))
    .bind(version_i64(secret.version))
    .bind(secret.data_key_id.as_str())
    .bind(secret.updated_at)
    .bind(secret.exposure.as_str())
    .bind(to_json(&secret.hosts))
    .bind(secret.compromised_at)
    .bind(secret.life.activation_default)
    .bind(secret.life.activation_max)
    .bind(secret.life.rotate_every)
    .bind(secret.life.value_changed_at)
    .bind(secret.id.as_str())
    .execute(&mut *conn)
    .await
    .map_err(query_failed("updating a secret"))?;
    insert_fields(conn, secret, fields).await?;
    sqlx::query("DELETE FROM data_keys WHERE id = $1")
        .bind(old_key.as_str())
        .execute(conn)
        .await
        .map_err(query_failed("deleting an old data key"))?;
    Ok(())
}

/// Checks that a session is live. PostgreSQL holds its row (`FOR SHARE`) until the
/// transaction ends: an end in progress on another broker is waited for, and then seen.
async fn session_live(conn: &mut Conn, id: &str, now: i64) -> Result<(), StoreError> {
    let row = sqlx::query(Eng::SESSION_LIVE)
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

async fn upsert_meta(conn: &mut Conn, key: &str, value: &[u8]) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO meta (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(key)
    .bind(value)
    .execute(conn)
    .await
    .map_err(query_failed("writing store metadata"))?;
    Ok(())
}

impl Store for This {
    fn lock_owner(&self, owner_id: i64) -> StoreFuture<'_, OwnerLock> {
        Box::pin(self.engine_lock_owner(owner_id))
    }

    fn meta_get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_failed("reading store metadata"))
        })
    }

    fn meta_put<'a>(&'a self, key: &'a str, value: &'a [u8]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut conn =
                self.pool.acquire().await.map_err(query_failed("writing store metadata"))?;
            upsert_meta(&mut conn, key, value).await
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
                    Ok(DataKeyRecord {
                        id: get(row, "id")?,
                        owner_id: get(row, "owner_id")?,
                        secret_id: get(row, "secret_id")?,
                        version: version_u64(get(row, "version")?)?,
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
            // Nothing may add, edit or delete a secret while its key is being re-wrapped
            // (SQLite: `BEGIN IMMEDIATE` already keeps every other writer out).
            if let Some(lock) = Eng::LOCK_DATA_KEYS {
                sqlx::query(lock)
                    .execute(&mut *tx)
                    .await
                    .map_err(query_failed("locking the data keys"))?;
            }
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM data_keys")
                .fetch_one(&mut *tx)
                .await
                .map_err(query_failed("counting data keys"))?;
            if usize::try_from(count).ok() != Some(rewrapped.len()) {
                return Err(StoreError::Changed { what: "set of data keys" });
            }
            for (id, wrapped) in rewrapped {
                let done = sqlx::query("UPDATE data_keys SET wrapped = $1 WHERE id = $2")
                    .bind(wrapped.as_slice())
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(query_failed("re-wrapping a data key"))?;
                if done.rows_affected() != 1 {
                    return Err(StoreError::Changed { what: "set of data keys" });
                }
            }
            upsert_meta(&mut tx, check_key, check_value).await?;
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
            // Since migration 9 the token lives in `api_tokens` (as `initial`, with `admin`);
            // `users.token_hash` (NOT NULL UNIQUE) holds only a random placeholder.
            let random = |what| move |_| StoreError::Random { what };
            let placeholder = crate::tokens::random_bytes::<32>()
                .map_err(random("a user's placeholder hash"))?;
            let token_id =
                crate::tokens::random_id::<8>().map_err(random("a token id"))?;
            let mut tx = self.write_tx().await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO users (name, token_hash, created_at) VALUES ($1, $2, $3) RETURNING id",
            )
            .bind(name)
            .bind(placeholder.as_slice())
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::AlreadyExists { what: "user", name: name.to_owned() }
                } else {
                    StoreError::Query { step: "adding a user", source: e }
                }
            })?;
            sqlx::query(
                "INSERT INTO api_tokens (id, token_hash, user_id, name, scopes, created_at) \
                 VALUES ($1, $2, $3, 'initial', '[\"admin\"]', $4)",
            )
            .bind(token_id.as_str())
            .bind(token_hash)
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(query_failed("adding a user's first token"))?;
            commit(tx).await?;
            Ok(UserRecord { id, name: name.to_owned() })
        })
    }

    fn user_by_token<'a>(&'a self, token_hash: &'a [u8]) -> StoreFuture<'a, Option<UserRecord>> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT u.id, u.name FROM api_tokens t JOIN users u ON u.id = t.user_id \
                 WHERE t.token_hash = $1",
            )
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
            sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE kind = 'user'")
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
            let row = sqlx::query(secret_select!("WHERE s.owner_id = $1 AND s.name = $2"))
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
            let rows = sqlx::query(secret_select!("WHERE s.owner_id = $1 ORDER BY s.name"))
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
                "SELECT name, ciphertext FROM secret_fields WHERE secret_id = $1 ORDER BY name",
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
            // Lock the row first: a concurrent edit or delete is waited for.
            let found: Option<String> = sqlx::query_scalar(Eng::SECRET_TO_DELETE)
                .bind(secret.id.as_str())
                .bind(secret.owner_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(query_failed("reading a secret"))?;
            if found.is_none() {
                return Err(StoreError::Changed { what: "secret" });
            }
            let sessions: Vec<String> = sqlx::query_scalar(
                "SELECT a.session_id FROM activations a JOIN sessions s ON s.id = a.session_id \
                 WHERE a.secret_id = $1 AND s.ended_at IS NULL ORDER BY a.session_id",
            )
            .bind(secret.id.as_str())
            .fetch_all(&mut *tx)
            .await
            .map_err(query_failed("reading activations"))?;
            sqlx::query("DELETE FROM activations WHERE secret_id = $1")
                .bind(secret.id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(query_failed("deleting activations"))?;
            sqlx::query("DELETE FROM secret_fields WHERE secret_id = $1")
                .bind(secret.id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(query_failed("deleting sealed fields"))?;
            let done = sqlx::query("DELETE FROM secrets WHERE id = $1 AND owner_id = $2")
                .bind(secret.id.as_str())
                .bind(secret.owner_id)
                .execute(&mut *tx)
                .await
                .map_err(query_failed("deleting a secret"))?;
            if done.rows_affected() != 1 {
                return Err(StoreError::Changed { what: "secret" });
            }
            sqlx::query("DELETE FROM data_keys WHERE id = $1")
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
                    ..about(AuditAction::Deactivated)
                };
                insert_audit(&mut tx, &record).await?;
            }
            insert_audit(&mut tx, &about(AuditAction::Deleted)).await?;
            commit(tx).await?;
            Ok(sessions)
        })
    }

    fn mark_compromised<'a>(
        &'a self,
        secret: &'a SecretRecord,
        now: i64,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            // Lock the row first: a concurrent edit or delete is waited for.
            let found: Option<String> = sqlx::query_scalar(Eng::SECRET_TO_DELETE)
                .bind(secret.id.as_str())
                .bind(secret.owner_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(query_failed("reading a secret"))?;
            if found.is_none() {
                return Err(StoreError::Changed { what: "secret" });
            }
            let sessions: Vec<String> = sqlx::query_scalar(
                "SELECT a.session_id FROM activations a JOIN sessions s ON s.id = a.session_id \
                 WHERE a.secret_id = $1 AND s.ended_at IS NULL ORDER BY a.session_id",
            )
            .bind(secret.id.as_str())
            .fetch_all(&mut *tx)
            .await
            .map_err(query_failed("reading activations"))?;
            sqlx::query("DELETE FROM activations WHERE secret_id = $1")
                .bind(secret.id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(query_failed("deactivating a compromised secret"))?;
            sqlx::query(
                "UPDATE secrets SET compromised_at = COALESCE(compromised_at, $1) WHERE id = $2",
            )
            .bind(now)
            .bind(secret.id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(query_failed("marking a secret compromised"))?;
            for session in &sessions {
                let record = AuditRecord {
                    secret_id: Some(secret.id.clone()),
                    secret_name: Some(secret.name.clone()),
                    session_id: Some(session.clone()),
                    detail: Some("secret compromised".to_owned()),
                    ..AuditRecord::new(secret.owner_id, now, AuditAction::Deactivated)
                };
                insert_audit(&mut tx, &record).await?;
            }
            insert_audit(&mut tx, audit).await?;
            commit(tx).await?;
            Ok(sessions)
        })
    }

    fn secret_usage<'a>(&'a self, secret_id: &'a str) -> StoreFuture<'a, UsageSummary> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT session_id, MAX(seq) AS last_seq, MAX(COALESCE(last_at, at)) AS last_at FROM audit \
                 WHERE secret_id = $1 AND action IN ('fetched', 'injected', 'file_read') \
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
                 WHERE a.secret_id = $1 AND s.ended_at IS NULL ORDER BY a.session_id",
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
                "WHERE owner_id = $1 AND secret_id = $2 AND seq < $3 ORDER BY seq DESC LIMIT $4"
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
                "INSERT INTO sessions (id, owner_id, label, created_at, expires_at, decoys) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(session.id.as_str())
            .bind(session.owner_id)
            .bind(session.label.as_deref())
            .bind(session.created_at)
            .bind(session.expires_at)
            .bind(session.decoys)
            .execute(&mut *tx)
            .await
            .map_err(query_failed("adding a session"))?;
            sqlx::query(
                "INSERT INTO enrollment_tokens (token_hash, session_id, expires_at) \
                 VALUES ($1, $2, $3)",
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
            let cache = self.engine.session_cache();
            let ticket = match cache.map(|c| c.lookup(id)) {
                Some(Lookup::Hit(record)) => return Ok(Some(record)),
                Some(Lookup::Miss(ticket)) => Some(ticket),
                Some(Lookup::Bypass) | None => None,
            };
            let row = sqlx::query(session_select!("WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_failed("reading a session"))?;
            let record = row.as_ref().map(session_from_row).transpose()?;
            if let (Some(cache), Some(ticket), Some(record)) = (cache, ticket, &record) {
                cache.offer(ticket, record);
            }
            Ok(record)
        })
    }

    fn list_sessions(&self, owner_id: i64) -> StoreFuture<'_, Vec<SessionRecord>> {
        Box::pin(async move {
            let rows =
                sqlx::query(session_select!("WHERE owner_id = $1 ORDER BY created_at DESC, id"))
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
            let _change = self.engine.session_cache().map(|c| c.change(id));
            let mut tx = self.write_tx().await?;
            // The race between brokers (expiry runs on each) is decided here: a second UPDATE
            // waits for the first to commit, then finds the row ended and changes nothing.
            let row = sqlx::query(
                "UPDATE sessions SET ended_at = $1, ended_reason = $2 \
                 WHERE id = $3 AND ended_at IS NULL \
                 RETURNING id, owner_id, label, created_at, expires_at, ended_at, ended_reason, \
                 enrolled, cert_serial, previous_serial, previous_until, decoys",
            )
            .bind(now)
            .bind(reason)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(query_failed("ending a session"))?;
            let Some(row) = row else {
                return Ok(None);
            };
            let session = session_from_row(&row)?;
            let active = sqlx::query(
                "SELECT s.id, s.name FROM activations a JOIN secrets s ON s.id = a.secret_id \
                 WHERE a.session_id = $1 ORDER BY s.name",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(query_failed("reading activations"))?;
            sqlx::query("DELETE FROM activations WHERE session_id = $1")
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
                    ..base(AuditAction::Deactivated)
                };
                insert_audit(&mut tx, &record).await?;
            }
            let ended =
                AuditRecord { detail: Some(reason.to_owned()), ..base(AuditAction::SessionEnded) };
            insert_audit(&mut tx, &ended).await?;
            commit(tx).await?;
            Ok(Some(session))
        })
    }

    fn expired_sessions(&self, now: i64) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            sqlx::query_scalar(
                "SELECT id FROM sessions WHERE ended_at IS NULL AND expires_at <= $1 \
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
                "JOIN activations a ON a.secret_id = s.id WHERE a.session_id = $1 ORDER BY s.name"
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
        Box::pin(self.engine_material(session_id, name))
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
                    "INSERT INTO activations (session_id, secret_id, activated_at) \
                     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(session_id)
                .bind(secret_id.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(query_failed("activating a secret"))?;
            }
            for secret_id in remove {
                sqlx::query("DELETE FROM activations WHERE session_id = $1 AND secret_id = $2")
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

    fn activate<'a>(
        &'a self,
        session_id: &'a str,
        add: &'a [NewActivation],
        now: i64,
        audit: &'a [AuditRecord],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            session_live(&mut tx, session_id, now).await?;
            for activation in add {
                insert_activation(&mut tx, session_id, activation, now).await?;
            }
            for record in audit {
                insert_audit(&mut tx, record).await?;
            }
            commit(tx).await
        })
    }

    fn list_activations<'a>(
        &'a self,
        owner_id: i64,
        session_id: Option<&'a str>,
        secret_id: Option<&'a str>,
    ) -> StoreFuture<'a, Vec<ActivationRow>> {
        Box::pin(async move {
            let mut b = sqlx::QueryBuilder::<Db>::new(activation_select!(
                "WHERE se.ended_at IS NULL AND se.owner_id = "
            ));
            b.push_bind(owner_id);
            if let Some(session) = session_id {
                b.push(" AND a.session_id = ").push_bind(session.to_owned());
            }
            if let Some(secret) = secret_id {
                b.push(" AND a.secret_id = ").push_bind(secret.to_owned());
            }
            b.push(" ORDER BY se.created_at DESC, a.session_id, s.name");
            let rows = b
                .build()
                .fetch_all(&self.pool)
                .await
                .map_err(query_failed("listing activations"))?;
            rows.iter().map(activation_from_row).collect()
        })
    }

    fn owners_with_expired_activations(&self, now: i64) -> StoreFuture<'_, Vec<i64>> {
        Box::pin(async move {
            sqlx::query_scalar(
                "SELECT DISTINCT se.owner_id FROM activations a \
                 JOIN sessions se ON se.id = a.session_id \
                 WHERE a.expires_at IS NOT NULL AND a.expires_at <= $1 ORDER BY se.owner_id",
            )
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("finding expired activations"))
        })
    }

    fn expire_activations(
        &self,
        owner_id: i64,
        now: i64,
    ) -> StoreFuture<'_, Vec<ActivationRow>> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let rows = sqlx::query(activation_select!(
                "WHERE se.owner_id = $1 AND a.expires_at IS NOT NULL AND a.expires_at <= $2 \
                 ORDER BY a.session_id, s.name"
            ))
            .bind(owner_id)
            .bind(now)
            .fetch_all(&mut *tx)
            .await
            .map_err(query_failed("reading expired activations"))?;
            let due = rows.iter().map(activation_from_row).collect::<Result<Vec<_>, _>>()?;
            let mut expired = Vec::with_capacity(due.len());
            for row in due {
                // The DELETE decides: on PostgreSQL a broker that read the same row waits for
                // the other's transaction, then deletes nothing and records nothing.
                let done = sqlx::query(
                    "DELETE FROM activations WHERE session_id = $1 AND secret_id = $2 \
                     AND expires_at IS NOT NULL AND expires_at <= $3",
                )
                .bind(row.session_id.as_str())
                .bind(row.secret_id.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(query_failed("deactivating an expired activation"))?;
                if done.rows_affected() != 1 {
                    continue;
                }
                let record = AuditRecord {
                    secret_id: Some(row.secret_id.clone()),
                    secret_name: Some(row.secret_name.clone()),
                    session_id: Some(row.session_id.clone()),
                    detail: row.expires_at.map(|at| {
                        format!("activation ended at {}", crate::clock::rfc3339(at))
                    }),
                    ..AuditRecord::new(owner_id, now, AuditAction::Expired)
                };
                insert_audit(&mut tx, &record).await?;
                expired.push(row);
            }
            commit(tx).await?;
            Ok(expired)
        })
    }

    fn enrollment<'a>(&'a self, token_hash: &'a [u8]) -> StoreFuture<'a, Option<EnrollmentRecord>> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT token_hash, session_id, expires_at, used_at FROM enrollment_tokens \
                 WHERE token_hash = $1",
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
            let _change = self.engine.session_cache().map(|c| c.change(&cert.session_id));
            let mut tx = self.write_tx().await?;
            // Two brokers racing on one token: the second UPDATE waits, then finds it used.
            let done = sqlx::query(
                "UPDATE enrollment_tokens SET used_at = $1 \
                 WHERE token_hash = $2 AND session_id = $3 AND used_at IS NULL \
                 AND expires_at > $4",
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
            sqlx::query("UPDATE sessions SET enrolled = TRUE, cert_serial = $1 WHERE id = $2")
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
            let _change = self.engine.session_cache().map(|c| c.change(&cert.session_id));
            let mut tx = self.write_tx().await?;
            session_live(&mut tx, &cert.session_id, cert.issued_at).await?;
            insert_certificate(&mut tx, cert).await?;
            sqlx::query(
                "UPDATE sessions SET previous_serial = cert_serial, previous_until = $1, \
                 cert_serial = $2 WHERE id = $3",
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
                 WHERE session_id = $1 AND action = 'activated' AND secret_name IS NOT NULL \
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
        Box::pin(self.engine_append_audit(records))
    }

    fn audit_for_owner(
        &self,
        owner_id: i64,
        before: Option<i64>,
        limit: i64,
    ) -> StoreFuture<'_, Vec<AuditRow>> {
        Box::pin(async move {
            let rows = sqlx::query(audit_select!(
                "WHERE owner_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
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

    fn audit_query<'a>(&'a self, q: &'a AuditQuery) -> StoreFuture<'a, Vec<AuditRow>> {
        Box::pin(async move {
            // Each filter is its own condition with a bound value (no `$n IS NULL OR ...`), so
            // the planner can pick the index that fits (migration 5).
            //
            // Several sessions (a label): the owner's `seq` index gives the order for free, and
            // without statistics SQLite walks it back through the whole trail looking for the
            // sessions' records (4 s at a million records). `+owner_id` (the same value, not an
            // indexed column) steers both engines to the session index instead: read the
            // sessions' records, then sort them (docs/benchmarks.md, row 7).
            let several_sessions = q.sessions.as_ref().is_some_and(|s| s.len() > 1);
            let mut b = sqlx::QueryBuilder::<Db>::new(if several_sessions {
                audit_select!("WHERE +owner_id = ")
            } else {
                audit_select!("WHERE owner_id = ")
            });
            b.push_bind(q.owner_id);
            if let Some(name) = &q.secret_name {
                b.push(" AND secret_name = ").push_bind(name.clone());
            }
            if let Some(sessions) = &q.sessions {
                b.push(" AND session_id IN (");
                let mut list = b.separated(", ");
                for id in sessions {
                    list.push_bind(id.clone());
                }
                // An empty list matches nothing (and `IN ()` is not SQL).
                if sessions.is_empty() {
                    list.push("NULL");
                }
                b.push(")");
            }
            if !q.actions.is_empty() {
                b.push(" AND action IN (");
                let mut list = b.separated(", ");
                for action in &q.actions {
                    list.push_bind(action.stored_name());
                }
                b.push(")");
            }
            if let Some(command) = &q.command {
                b.push(" AND command = ").push_bind(command.clone());
            }
            if let Some(uid) = q.uid {
                b.push(" AND uid = ").push_bind(i64::from(uid));
            }
            if let Some(since) = q.since {
                b.push(" AND at >= ").push_bind(since);
            }
            if let Some(until) = q.until {
                b.push(" AND at <= ").push_bind(until);
            }
            let ascending = match q.position {
                AuditPosition::Newest => false,
                AuditPosition::Before(seq) => {
                    b.push(" AND seq < ").push_bind(seq);
                    false
                }
                AuditPosition::After(seq) => {
                    b.push(" AND seq > ").push_bind(seq);
                    true
                }
            };
            b.push(if ascending { " ORDER BY seq ASC LIMIT " } else { " ORDER BY seq DESC LIMIT " });
            b.push_bind(q.limit);
            let rows = b
                .build()
                .fetch_all(&self.pool)
                .await
                .map_err(query_failed("reading the audit trail"))?;
            let mut out = rows.iter().map(audit_from_row).collect::<Result<Vec<_>, _>>()?;
            if !ascending {
                out.reverse();
            }
            Ok(out)
        })
    }

    fn secret_usage_groups<'a>(
        &'a self,
        owner_id: i64,
        secret_id: &'a str,
    ) -> StoreFuture<'a, Vec<UsageGroup>> {
        Box::pin(async move {
            let sql = format!("{USAGE_GROUPS} AND owner_id = $2 {USAGE_GROUPS_BY}");
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(secret_id)
            .bind(owner_id)
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("summing a secret's usage"))?;
            rows.iter().map(usage_group_from_row).collect()
        })
    }
}

#[cfg(any(test, feature = "testing"))]
impl crate::store::testing::ContractStore for This {
    fn execute_raw(&self, sql: &'static str) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let done = sqlx::query(sql)
                .execute(&self.pool)
                .await
                .map_err(query_failed("running a statement of the contract suite"))?;
            Ok(done.rows_affected())
        })
    }

    fn count_rows(&self, table: &'static str) -> StoreFuture<'_, i64> {
        Box::pin(async move {
            // `table` is one of the suite's own constants.
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&self.pool)
                .await
                .map_err(query_failed("counting rows for the contract suite"))
        })
    }
}
