//! The SQLite engine of [`OAuthStore`], and its schema (migration 2).
//!
//! A child of the SQLite store so that it shares its pool, its transaction discipline
//! (`BEGIN IMMEDIATE`) and its row helpers. Times are unix seconds, except `refresh_at_ms`
//! (milliseconds: tokens that live a few seconds are refreshed on time).

use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqliteRow};

use super::{
    SqliteStore, commit, get, insert_audit, insert_secret_rows, is_unique_violation, json_list,
    replace_version, to_json, version_i64,
};
use crate::oauth::store::{
    OAuthStore, PendingRecord, PendingStatus, ProviderRecord, TokenRecord, TokenView,
};
use crate::store::{
    AuditRecord, DataKeyRecord, SealedField, SecretRecord, StoreError, StoreFuture, query_failed,
};

/// Migration 2: OAuth providers, authorizations and token state.
pub const SCHEMA: &str = r#"
CREATE TABLE oauth_providers (
    id TEXT PRIMARY KEY,
    owner_id INTEGER NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    preset TEXT NOT NULL,
    kind TEXT NOT NULL,
    token_field TEXT NOT NULL,
    client_id TEXT NOT NULL,
    auth_url TEXT NOT NULL,
    token_url TEXT NOT NULL,
    revoke_url TEXT,
    scopes TEXT NOT NULL,
    data_key_id TEXT NOT NULL UNIQUE REFERENCES data_keys(id),
    client_secret BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (owner_id, name)
);
CREATE TRIGGER oauth_providers_drop_key AFTER DELETE ON oauth_providers
BEGIN DELETE FROM data_keys WHERE id = OLD.data_key_id; END;

CREATE TABLE oauth_authorizations (
    id TEXT PRIMARY KEY,
    state_hash BLOB NOT NULL UNIQUE,
    owner_id INTEGER NOT NULL REFERENCES users(id),
    provider_id TEXT NOT NULL REFERENCES oauth_providers(id) ON DELETE CASCADE,
    secret_name TEXT NOT NULL,
    reconnect_secret_id TEXT REFERENCES secrets(id) ON DELETE CASCADE,
    scopes TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX oauth_authorizations_expiry ON oauth_authorizations (expires_at);

CREATE TABLE oauth_tokens (
    secret_id TEXT PRIMARY KEY REFERENCES secrets(id) ON DELETE CASCADE,
    provider_id TEXT NOT NULL REFERENCES oauth_providers(id),
    data_key_id TEXT NOT NULL UNIQUE REFERENCES data_keys(id),
    generation INTEGER NOT NULL,
    refresh_token BLOB,
    scopes TEXT NOT NULL,
    expires_at INTEGER,
    refresh_at_ms INTEGER,
    failures INTEGER NOT NULL DEFAULT 0,
    needs_reauth TEXT,
    last_refresh_at INTEGER,
    updated_at INTEGER NOT NULL
);
CREATE INDEX oauth_tokens_due ON oauth_tokens (refresh_at_ms) WHERE needs_reauth IS NULL;
CREATE TRIGGER oauth_tokens_drop_key AFTER DELETE ON oauth_tokens
BEGIN DELETE FROM data_keys WHERE id = OLD.data_key_id; END;
"#;

const PROVIDER_SELECT: &str = "SELECT p.id, p.owner_id, p.name, p.preset, p.kind, \
     p.token_field, p.client_id, p.auth_url, p.token_url, p.revoke_url, p.scopes, \
     p.data_key_id, d.wrapped, p.client_secret, p.created_at \
     FROM oauth_providers p JOIN data_keys d ON d.id = p.data_key_id ";

const PENDING_SELECT: &str = "SELECT a.id, a.state_hash, a.owner_id, a.provider_id, \
     p.name AS provider_name, a.secret_name, a.reconnect_secret_id, a.scopes, a.status, \
     a.message, a.created_at, a.expires_at, a.finished_at \
     FROM oauth_authorizations a JOIN oauth_providers p ON p.id = a.provider_id ";

const TOKEN_SELECT: &str = "SELECT t.secret_id, t.provider_id, t.data_key_id, d.wrapped, \
     t.generation, t.refresh_token, t.scopes, t.expires_at, t.refresh_at_ms, t.failures, \
     t.needs_reauth, t.last_refresh_at, t.updated_at, s.owner_id, s.name AS secret_name, \
     p.name AS provider_name \
     FROM oauth_tokens t JOIN data_keys d ON d.id = t.data_key_id \
     JOIN secrets s ON s.id = t.secret_id JOIN oauth_providers p ON p.id = t.provider_id ";

/// How long a finished authorization is kept (for `connect` to read its outcome).
const PENDING_KEEP_SECS: i64 = 24 * 3600;

fn generation_of(row: &SqliteRow) -> Result<u64, StoreError> {
    u64::try_from(get::<i64>(row, "generation")?)
        .map_err(|_| StoreError::Corrupt { what: "token generation" })
}

fn provider_from_row(row: &SqliteRow) -> Result<ProviderRecord, StoreError> {
    Ok(ProviderRecord {
        id: get(row, "id")?,
        owner_id: get(row, "owner_id")?,
        name: get(row, "name")?,
        preset: get(row, "preset")?,
        kind: get(row, "kind")?,
        token_field: get(row, "token_field")?,
        client_id: get(row, "client_id")?,
        auth_url: get(row, "auth_url")?,
        token_url: get(row, "token_url")?,
        revoke_url: get(row, "revoke_url")?,
        scopes: json_list(&get::<String>(row, "scopes")?, "scope list")?,
        data_key_id: get(row, "data_key_id")?,
        wrapped_key: get(row, "wrapped")?,
        client_secret: get(row, "client_secret")?,
        created_at: get(row, "created_at")?,
    })
}

fn pending_from_row(row: &SqliteRow) -> Result<PendingRecord, StoreError> {
    let status: String = get(row, "status")?;
    Ok(PendingRecord {
        id: get(row, "id")?,
        state_hash: get(row, "state_hash")?,
        owner_id: get(row, "owner_id")?,
        provider_id: get(row, "provider_id")?,
        provider_name: get(row, "provider_name")?,
        secret_name: get(row, "secret_name")?,
        reconnect_secret_id: get(row, "reconnect_secret_id")?,
        scopes: json_list(&get::<String>(row, "scopes")?, "scope list")?,
        status: PendingStatus::parse(&status)
            .ok_or(StoreError::Corrupt { what: "authorization status" })?,
        message: get(row, "message")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        finished_at: get(row, "finished_at")?,
    })
}

fn token_from_row(row: &SqliteRow) -> Result<TokenView, StoreError> {
    let failures: i64 = get(row, "failures")?;
    Ok(TokenView {
        token: TokenRecord {
            secret_id: get(row, "secret_id")?,
            provider_id: get(row, "provider_id")?,
            data_key_id: get(row, "data_key_id")?,
            wrapped_key: get(row, "wrapped")?,
            generation: generation_of(row)?,
            refresh_token: get(row, "refresh_token")?,
            scopes: json_list(&get::<String>(row, "scopes")?, "scope list")?,
            expires_at: get(row, "expires_at")?,
            refresh_at_ms: get(row, "refresh_at_ms")?,
            failures: u32::try_from(failures).unwrap_or(u32::MAX),
            needs_reauth: get(row, "needs_reauth")?,
            last_refresh_at: get(row, "last_refresh_at")?,
            updated_at: get(row, "updated_at")?,
        },
        owner_id: get(row, "owner_id")?,
        secret_name: get(row, "secret_name")?,
        provider_name: get(row, "provider_name")?,
    })
}

async fn insert_key(
    conn: &mut SqliteConnection,
    id: &str,
    wrapped: &[u8],
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO data_keys (id, wrapped, created_at) VALUES (?, ?, ?)")
        .bind(id)
        .bind(wrapped)
        .bind(now)
        .execute(conn)
        .await
        .map_err(query_failed("storing a data key"))?;
    Ok(())
}

/// Marks an authorization done, if it is still being exchanged.
async fn finish_pending(conn: &mut SqliteConnection, id: &str, now: i64) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE oauth_authorizations SET status = 'done', finished_at = ? \
         WHERE id = ? AND status = 'exchanging'",
    )
    .bind(now)
    .bind(id)
    .execute(conn)
    .await
    .map_err(query_failed("finishing an authorization"))?;
    if done.rows_affected() != 1 {
        return Err(StoreError::Changed { what: "authorization" });
    }
    Ok(())
}

impl OAuthStore for SqliteStore {
    fn insert_provider<'a>(&'a self, p: &'a ProviderRecord) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            insert_key(&mut tx, &p.data_key_id, &p.wrapped_key, p.created_at).await?;
            sqlx::query(
                "INSERT INTO oauth_providers (id, owner_id, name, preset, kind, token_field, \
                 client_id, auth_url, token_url, revoke_url, scopes, data_key_id, client_secret, \
                 created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(p.id.as_str())
            .bind(p.owner_id)
            .bind(p.name.as_str())
            .bind(p.preset.as_str())
            .bind(p.kind.as_str())
            .bind(p.token_field.as_str())
            .bind(p.client_id.as_str())
            .bind(p.auth_url.as_str())
            .bind(p.token_url.as_str())
            .bind(p.revoke_url.as_deref())
            .bind(to_json(&p.scopes))
            .bind(p.data_key_id.as_str())
            .bind(p.client_secret.as_slice())
            .bind(p.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::AlreadyExists { what: "OAuth provider", name: p.name.clone() }
                } else {
                    StoreError::Query { step: "adding an OAuth provider", source: e }
                }
            })?;
            commit(tx).await
        })
    }

    fn provider_by_name<'a>(
        &'a self,
        owner_id: i64,
        name: &'a str,
    ) -> StoreFuture<'a, Option<ProviderRecord>> {
        Box::pin(async move {
            let sql = format!("{PROVIDER_SELECT} WHERE p.owner_id = ? AND p.name = ?");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(owner_id)
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_failed("reading an OAuth provider"))?;
            row.as_ref().map(provider_from_row).transpose()
        })
    }

    fn provider_by_id<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<ProviderRecord>> {
        Box::pin(async move {
            let sql = format!("{PROVIDER_SELECT} WHERE p.id = ?");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_failed("reading an OAuth provider"))?;
            row.as_ref().map(provider_from_row).transpose()
        })
    }

    fn list_providers(&self, owner_id: i64) -> StoreFuture<'_, Vec<ProviderRecord>> {
        Box::pin(async move {
            let sql = format!("{PROVIDER_SELECT} WHERE p.owner_id = ? ORDER BY p.name");
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(owner_id)
                .fetch_all(&self.pool)
                .await
                .map_err(query_failed("listing OAuth providers"))?;
            rows.iter().map(provider_from_row).collect()
        })
    }

    fn insert_pending<'a>(&'a self, a: &'a PendingRecord) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            sqlx::query("DELETE FROM oauth_authorizations WHERE expires_at < ?")
                .bind(a.created_at - PENDING_KEEP_SECS)
                .execute(&mut *tx)
                .await
                .map_err(query_failed("forgetting old authorizations"))?;
            sqlx::query(
                "INSERT INTO oauth_authorizations (id, state_hash, owner_id, provider_id, \
                 secret_name, reconnect_secret_id, scopes, status, message, created_at, \
                 expires_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(a.id.as_str())
            .bind(a.state_hash.as_slice())
            .bind(a.owner_id)
            .bind(a.provider_id.as_str())
            .bind(a.secret_name.as_str())
            .bind(a.reconnect_secret_id.as_deref())
            .bind(to_json(&a.scopes))
            .bind(a.status.as_str())
            .bind(a.message.as_deref())
            .bind(a.created_at)
            .bind(a.expires_at)
            .bind(a.finished_at)
            .execute(&mut *tx)
            .await
            .map_err(query_failed("storing an authorization"))?;
            commit(tx).await
        })
    }

    fn pending_by_id<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<PendingRecord>> {
        Box::pin(async move {
            let sql = format!("{PENDING_SELECT} WHERE a.id = ?");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_failed("reading an authorization"))?;
            row.as_ref().map(pending_from_row).transpose()
        })
    }

    fn pending_by_state<'a>(
        &'a self,
        state_hash: &'a [u8],
    ) -> StoreFuture<'a, Option<PendingRecord>> {
        Box::pin(async move {
            let sql = format!("{PENDING_SELECT} WHERE a.state_hash = ?");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(state_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_failed("reading an authorization"))?;
            row.as_ref().map(pending_from_row).transpose()
        })
    }

    fn move_pending<'a>(
        &'a self,
        id: &'a str,
        from: PendingStatus,
        to: PendingStatus,
        message: Option<&'a str>,
        now: i64,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let open = matches!(to, PendingStatus::Pending | PendingStatus::Exchanging);
            let done = sqlx::query(
                "UPDATE oauth_authorizations SET status = ?, message = ?, finished_at = ? \
                 WHERE id = ? AND status = ?",
            )
            .bind(to.as_str())
            .bind(message)
            .bind(if open { None } else { Some(now) })
            .bind(id)
            .bind(from.as_str())
            .execute(&self.pool)
            .await
            .map_err(query_failed("updating an authorization"))?;
            Ok(done.rows_affected() == 1)
        })
    }

    fn insert_oauth_secret<'a>(
        &'a self,
        secret: &'a SecretRecord,
        fields: &'a [SealedField],
        token: &'a TokenRecord,
        pending_id: &'a str,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            insert_secret_rows(&mut tx, secret, fields).await?;
            insert_key(&mut tx, &token.data_key_id, &token.wrapped_key, token.updated_at).await?;
            sqlx::query(
                "INSERT INTO oauth_tokens (secret_id, provider_id, data_key_id, generation, \
                 refresh_token, scopes, expires_at, refresh_at_ms, failures, needs_reauth, \
                 last_refresh_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(token.secret_id.as_str())
            .bind(token.provider_id.as_str())
            .bind(token.data_key_id.as_str())
            .bind(version_i64(token.generation))
            .bind(token.refresh_token.as_deref())
            .bind(to_json(&token.scopes))
            .bind(token.expires_at)
            .bind(token.refresh_at_ms)
            .bind(i64::from(token.failures))
            .bind(token.needs_reauth.as_deref())
            .bind(token.last_refresh_at)
            .bind(token.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(query_failed("storing OAuth token state"))?;
            finish_pending(&mut tx, pending_id, secret.updated_at).await?;
            insert_audit(&mut tx, audit).await?;
            commit(tx).await
        })
    }

    fn replace_oauth_secret<'a>(
        &'a self,
        old_version: u64,
        secret: &'a SecretRecord,
        fields: &'a [SealedField],
        old_generation: u64,
        token: &'a TokenRecord,
        pending_id: Option<&'a str>,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            replace_version(&mut tx, old_version, secret, fields).await?;
            let done = sqlx::query(
                "UPDATE oauth_tokens SET generation = ?, refresh_token = ?, scopes = ?, \
                 expires_at = ?, refresh_at_ms = ?, failures = ?, needs_reauth = ?, \
                 last_refresh_at = ?, updated_at = ? WHERE secret_id = ? AND generation = ?",
            )
            .bind(version_i64(token.generation))
            .bind(token.refresh_token.as_deref())
            .bind(to_json(&token.scopes))
            .bind(token.expires_at)
            .bind(token.refresh_at_ms)
            .bind(i64::from(token.failures))
            .bind(token.needs_reauth.as_deref())
            .bind(token.last_refresh_at)
            .bind(token.updated_at)
            .bind(token.secret_id.as_str())
            .bind(version_i64(old_generation))
            .execute(&mut *tx)
            .await
            .map_err(query_failed("updating OAuth token state"))?;
            if done.rows_affected() != 1 {
                return Err(StoreError::Changed { what: "OAuth token" });
            }
            if let Some(id) = pending_id {
                finish_pending(&mut tx, id, secret.updated_at).await?;
            }
            insert_audit(&mut tx, audit).await?;
            commit(tx).await
        })
    }

    fn token<'a>(&'a self, secret_id: &'a str) -> StoreFuture<'a, Option<TokenView>> {
        Box::pin(async move {
            let sql = format!("{TOKEN_SELECT} WHERE t.secret_id = ?");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(secret_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_failed("reading OAuth token state"))?;
            row.as_ref().map(token_from_row).transpose()
        })
    }

    fn next_refresh_at(&self) -> StoreFuture<'_, Option<i64>> {
        Box::pin(async move {
            sqlx::query_scalar(
                "SELECT MIN(refresh_at_ms) FROM oauth_tokens WHERE needs_reauth IS NULL",
            )
            .fetch_one(&self.pool)
            .await
            .map_err(query_failed("finding the next token refresh"))
        })
    }

    fn due_refreshes(&self, now_ms: i64, limit: i64) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            sqlx::query_scalar(
                "SELECT secret_id FROM oauth_tokens WHERE needs_reauth IS NULL \
                 AND refresh_at_ms <= ? ORDER BY refresh_at_ms LIMIT ?",
            )
            .bind(now_ms)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("finding due token refreshes"))
        })
    }

    fn claim_refresh<'a>(
        &'a self,
        secret_id: &'a str,
        generation: u64,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let done = sqlx::query(
                "UPDATE oauth_tokens SET refresh_at_ms = ? WHERE secret_id = ? AND generation = ? \
                 AND needs_reauth IS NULL \
                 AND (refresh_at_ms <= ? OR (refresh_at_ms IS NULL AND ? = 1))",
            )
            .bind(lease_until_ms)
            .bind(secret_id)
            .bind(version_i64(generation))
            .bind(now_ms)
            // `i64::MAX` asks for the token whatever its schedule (a forced refresh).
            .bind(i64::from(now_ms == i64::MAX))
            .execute(&self.pool)
            .await
            .map_err(query_failed("claiming a token refresh"))?;
            Ok(done.rows_affected() == 1)
        })
    }

    fn reschedule_refresh<'a>(
        &'a self,
        secret_id: &'a str,
        generation: u64,
        refresh_at_ms: i64,
        failures: u32,
        audit: Option<&'a AuditRecord>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            sqlx::query(
                "UPDATE oauth_tokens SET refresh_at_ms = ?, failures = ? \
                 WHERE secret_id = ? AND generation = ?",
            )
            .bind(refresh_at_ms)
            .bind(i64::from(failures))
            .bind(secret_id)
            .bind(version_i64(generation))
            .execute(&mut *tx)
            .await
            .map_err(query_failed("scheduling a token refresh"))?;
            if let Some(record) = audit {
                insert_audit(&mut tx, record).await?;
            }
            commit(tx).await
        })
    }

    fn mark_needs_reauth<'a>(
        &'a self,
        secret_id: &'a str,
        generation: u64,
        reason: &'a str,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let done = sqlx::query(
                "UPDATE oauth_tokens SET needs_reauth = ?, refresh_at_ms = NULL \
                 WHERE secret_id = ? AND generation = ?",
            )
            .bind(reason)
            .bind(secret_id)
            .bind(version_i64(generation))
            .execute(&mut *tx)
            .await
            .map_err(query_failed("marking a token for re-authorization"))?;
            if done.rows_affected() != 1 {
                return Ok(false);
            }
            insert_audit(&mut tx, audit).await?;
            commit(tx).await?;
            Ok(true)
        })
    }

    fn oauth_data_keys(&self) -> StoreFuture<'_, Vec<DataKeyRecord>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT d.id, d.wrapped, p.owner_id, p.id AS subject FROM data_keys d \
                 JOIN oauth_providers p ON p.data_key_id = d.id \
                 UNION ALL \
                 SELECT d.id, d.wrapped, s.owner_id, t.secret_id || '/oauth' AS subject \
                 FROM data_keys d JOIN oauth_tokens t ON t.data_key_id = d.id \
                 JOIN secrets s ON s.id = t.secret_id ORDER BY 1",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("reading OAuth data keys"))?;
            rows.iter()
                .map(|row| {
                    Ok(DataKeyRecord {
                        id: row.try_get("id").map_err(query_failed("reading a row"))?,
                        owner_id: get(row, "owner_id")?,
                        secret_id: get(row, "subject")?,
                        version: 1,
                        wrapped: get(row, "wrapped")?,
                    })
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use maestro_wire::api::AuditAction;

    use super::*;
    use crate::store::Store;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
        (dir, store)
    }

    fn provider(owner: i64) -> ProviderRecord {
        ProviderRecord {
            id: "oauthp-1".into(),
            owner_id: owner,
            name: "gh".into(),
            preset: "github".into(),
            kind: "github".into(),
            token_field: "token".into(),
            client_id: "cid".into(),
            auth_url: "https://a".into(),
            token_url: "https://t".into(),
            revoke_url: None,
            scopes: vec!["repo".into()],
            data_key_id: "pk".into(),
            wrapped_key: vec![1; 8],
            client_secret: vec![2; 40],
            created_at: 5,
        }
    }

    fn secret(owner: i64, version: u64) -> SecretRecord {
        SecretRecord {
            id: "s1".into(),
            owner_id: owner,
            name: "GH".into(),
            kind: "github".into(),
            description: None,
            tags: vec![],
            version,
            field_names: vec!["token".into()],
            data_key_id: format!("sk{version}"),
            wrapped_key: vec![3; 8],
            created_at: 10,
            updated_at: 10,
        }
    }

    fn token(generation: u64, refresh_at_ms: Option<i64>) -> TokenRecord {
        TokenRecord {
            secret_id: "s1".into(),
            provider_id: "oauthp-1".into(),
            data_key_id: "tk".into(),
            wrapped_key: vec![4; 8],
            generation,
            refresh_token: Some(vec![5; 40]),
            scopes: vec!["repo".into()],
            expires_at: Some(100),
            refresh_at_ms,
            failures: 0,
            needs_reauth: None,
            last_refresh_at: Some(10),
            updated_at: 10,
        }
    }

    fn pending(owner: i64) -> PendingRecord {
        PendingRecord {
            id: "a1".into(),
            state_hash: vec![9; 32],
            owner_id: owner,
            provider_id: "oauthp-1".into(),
            provider_name: "gh".into(),
            secret_name: "GH".into(),
            reconnect_secret_id: None,
            scopes: vec!["repo".into()],
            status: PendingStatus::Pending,
            message: None,
            created_at: 10,
            expires_at: 610,
            finished_at: None,
        }
    }

    #[tokio::test]
    async fn an_oauth_secret_lives_with_its_token_row_and_keys() {
        let (_d, s) = store().await;
        let u = s.create_user("alice", b"h", 1).await.unwrap();
        s.insert_provider(&provider(u.id)).await.unwrap();
        assert!(matches!(
            s.insert_provider(&ProviderRecord {
                id: "oauthp-2".into(),
                data_key_id: "pk2".into(),
                ..provider(u.id)
            })
            .await,
            Err(StoreError::AlreadyExists { .. })
        ));
        assert_eq!(s.list_providers(u.id).await.unwrap().len(), 1);
        assert_eq!(
            s.provider_by_name(u.id, "gh").await.unwrap().unwrap().client_secret,
            vec![2; 40]
        );

        // The state is single-use: only one move out of `pending` succeeds.
        s.insert_pending(&pending(u.id)).await.unwrap();
        let by_state = s.pending_by_state(&[9; 32]).await.unwrap().unwrap();
        assert_eq!(
            (by_state.provider_name.as_str(), by_state.status),
            ("gh", PendingStatus::Pending)
        );
        assert!(
            s.move_pending("a1", PendingStatus::Pending, PendingStatus::Exchanging, None, 11)
                .await
                .unwrap()
        );
        assert!(
            !s.move_pending("a1", PendingStatus::Pending, PendingStatus::Exchanging, None, 11)
                .await
                .unwrap()
        );

        let audit = AuditRecord::new(u.id, 12, AuditAction::Created);
        s.insert_oauth_secret(&secret(u.id, 1), &[], &token(1, Some(5_000)), "a1", &audit)
            .await
            .unwrap();
        assert_eq!(s.pending_by_id("a1").await.unwrap().unwrap().status, PendingStatus::Done);
        let view = s.token("s1").await.unwrap().unwrap();
        assert_eq!((view.secret_name.as_str(), view.provider_name.as_str()), ("GH", "gh"));
        // Every wrapped key is a secret's or OAuth's, as rotation needs.
        let keys = s.oauth_data_keys().await.unwrap();
        let subjects: Vec<&str> = keys.iter().map(|k| k.secret_id.as_str()).collect();
        assert_eq!(subjects, ["oauthp-1", "s1/oauth"]);
        assert_eq!(keys.len() + s.data_keys().await.unwrap().len(), 3);

        // Refresh: due, claimed once, replaced with a new generation and version.
        assert_eq!(s.next_refresh_at().await.unwrap(), Some(5_000));
        assert!(s.due_refreshes(4_999, 10).await.unwrap().is_empty());
        assert_eq!(s.due_refreshes(5_000, 10).await.unwrap(), ["s1"]);
        assert!(s.claim_refresh("s1", 1, 5_000, 65_000).await.unwrap());
        assert!(!s.claim_refresh("s1", 1, 5_000, 65_000).await.unwrap(), "claimed once");
        let refreshed = AuditRecord::new(u.id, 13, AuditAction::Refreshed);
        s.replace_oauth_secret(
            1,
            &secret(u.id, 2),
            &[],
            1,
            &token(2, Some(9_000)),
            None,
            &refreshed,
        )
        .await
        .unwrap();
        assert!(matches!(
            s.replace_oauth_secret(1, &secret(u.id, 3), &[], 1, &token(3, None), None, &refreshed)
                .await,
            Err(StoreError::Changed { .. })
        ));
        assert_eq!(s.token("s1").await.unwrap().unwrap().token.generation, 2);
        assert_eq!(s.secret_by_name(u.id, "GH").await.unwrap().unwrap().version, 2);

        // A refusal stops refreshes; a forced claim ignores the schedule but not the mark.
        let failed = AuditRecord::new(u.id, 14, AuditAction::RefreshFailed);
        assert!(s.claim_refresh("s1", 2, i64::MAX, 70_000).await.unwrap(), "forced");
        assert!(s.mark_needs_reauth("s1", 2, "refused", &failed).await.unwrap());
        assert_eq!(s.next_refresh_at().await.unwrap(), None);
        assert!(!s.claim_refresh("s1", 2, i64::MAX, 70_000).await.unwrap());

        // Deleting the secret takes its token row and the row's key with it.
        let record = s.secret_by_name(u.id, "GH").await.unwrap().unwrap();
        s.delete_secret(&record, 20).await.unwrap();
        assert!(s.token("s1").await.unwrap().is_none());
        assert_eq!(s.oauth_data_keys().await.unwrap().len(), 1, "the provider's key only");
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM data_keys").fetch_one(&s.pool).await.unwrap();
        assert_eq!(count, 1, "no orphaned key");
    }

    #[tokio::test]
    async fn an_agents_material_carries_its_token_state() {
        let (_d, s) = store().await;
        let u = s.create_user("alice", b"h", 1).await.unwrap();
        s.insert_provider(&provider(u.id)).await.unwrap();
        s.insert_pending(&pending(u.id)).await.unwrap();
        assert!(
            s.move_pending("a1", PendingStatus::Pending, PendingStatus::Exchanging, None, 11)
                .await
                .unwrap()
        );
        let audit = AuditRecord::new(u.id, 12, AuditAction::Created);
        let field = SealedField { name: "token".into(), blob: vec![7; 40] };
        s.insert_oauth_secret(&secret(u.id, 1), &[field], &token(1, Some(5_000)), "a1", &audit)
            .await
            .unwrap();
        let session = crate::store::SessionRecord {
            id: "sess".into(),
            owner_id: u.id,
            label: None,
            created_at: 10,
            expires_at: 1000,
            ended_at: None,
            ended_reason: None,
            enrolled: false,
            serials: Default::default(),
        };
        let enrollment = crate::store::EnrollmentRecord {
            token_hash: vec![1; 32],
            session_id: "sess".into(),
            expires_at: 100,
            used_at: None,
        };
        s.insert_session(&session, &enrollment, &audit).await.unwrap();
        s.change_activations("sess", &["s1".to_owned()], &[], 20, &[]).await.unwrap();
        let read = s.active_material("sess", Some("GH")).await.unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].fields.len(), 1);
        assert_eq!(
            read[0].oauth,
            Some(crate::store::OAuthState { expires_at: Some(100), needs_reauth: None })
        );
        let failed = AuditRecord::new(u.id, 14, AuditAction::RefreshFailed);
        assert!(s.claim_refresh("s1", 1, i64::MAX, 70_000).await.unwrap());
        assert!(s.mark_needs_reauth("s1", 1, "refused", &failed).await.unwrap());
        let read = s.active_material("sess", None).await.unwrap();
        assert_eq!(read[0].oauth.as_ref().and_then(|o| o.needs_reauth.as_deref()), Some("refused"));
    }
}
