//! Every statement of [`OAuthStore`], written once and compiled once per driver, like
//! `sql/store.rs` beside it (which explains how). Times are unix seconds, except
//! `refresh_at_ms` (milliseconds: tokens that live a few seconds are refreshed on time).
//!
//! Every broker sharing a database runs the refresh task; `claim_refresh` is a guarded
//! `UPDATE`, so one broker takes each refresh (on PostgreSQL a second one waits for the
//! first's commit, then finds the token no longer due).

use super::Eng;
use super::statements::{
    Conn, DbRow, commit, get, insert_audit, insert_secret_rows, replace_version,
};
use crate::store::oauth::{
    OAuthStore, PendingRecord, PendingStatus, ProviderRecord, ProviderRemoval, TokenRecord,
    TokenView,
};
use crate::store::sql::{SqlStore, is_unique_violation, json_list, to_json, version_i64};
use crate::store::{
    AuditRecord, DataKeyRecord, SealedField, SecretRecord, StoreError, StoreFuture, query_failed,
};

/// The store this file implements.
type This = SqlStore<Eng>;

const PROVIDER_SELECT: &str = "SELECT p.id, p.owner_id, p.name, p.preset, p.kind, \
     p.token_field, p.client_id, p.auth_url, p.token_url, p.revoke_url, p.scopes, p.data_key_id, \
     d.wrapped, p.client_secret, p.created_at \
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

fn generation_of(row: &DbRow) -> Result<u64, StoreError> {
    u64::try_from(get::<i64>(row, "generation")?)
        .map_err(|_| StoreError::Corrupt { what: "token generation" })
}

fn provider_from_row(row: &DbRow) -> Result<ProviderRecord, StoreError> {
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

fn pending_from_row(row: &DbRow) -> Result<PendingRecord, StoreError> {
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

fn token_from_row(row: &DbRow) -> Result<TokenView, StoreError> {
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

async fn insert_key(conn: &mut Conn, id: &str, wrapped: &[u8], now: i64) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO data_keys (id, wrapped, created_at) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(wrapped)
        .bind(now)
        .execute(conn)
        .await
        .map_err(query_failed("storing a data key"))?;
    Ok(())
}

/// Marks an authorization done, if it is still being exchanged.
async fn finish_pending(conn: &mut Conn, id: &str, now: i64) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE oauth_authorizations SET status = 'done', finished_at = $1 \
         WHERE id = $2 AND status = 'exchanging'",
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

impl OAuthStore for This {
    fn insert_provider<'a>(&'a self, p: &'a ProviderRecord) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            insert_key(&mut tx, &p.data_key_id, &p.wrapped_key, p.created_at).await?;
            sqlx::query(
                "INSERT INTO oauth_providers (id, owner_id, name, preset, kind, token_field, \
                 client_id, auth_url, token_url, revoke_url, scopes, data_key_id, client_secret, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
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
            let sql = format!("{PROVIDER_SELECT} WHERE p.owner_id = $1 AND p.name = $2");
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
            let sql = format!("{PROVIDER_SELECT} WHERE p.id = $1");
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
            let sql = format!("{PROVIDER_SELECT} WHERE p.owner_id = $1 ORDER BY p.name");
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(owner_id)
                .fetch_all(&self.pool)
                .await
                .map_err(query_failed("listing OAuth providers"))?;
            rows.iter().map(provider_from_row).collect()
        })
    }

    fn update_provider<'a>(
        &'a self,
        old: &'a ProviderRecord,
        new: &'a ProviderRecord,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let new_key = new.data_key_id != old.data_key_id;
            if new_key {
                insert_key(&mut tx, &new.data_key_id, &new.wrapped_key, new.created_at).await?;
            }
            let done = sqlx::query(
                "UPDATE oauth_providers SET client_id = $1, auth_url = $2, token_url = $3, \
                 revoke_url = $4, scopes = $5, data_key_id = $6, client_secret = $7 \
                 WHERE id = $8 AND data_key_id = $9",
            )
            .bind(new.client_id.as_str())
            .bind(new.auth_url.as_str())
            .bind(new.token_url.as_str())
            .bind(new.revoke_url.as_deref())
            .bind(to_json(&new.scopes))
            .bind(new.data_key_id.as_str())
            .bind(new.client_secret.as_slice())
            .bind(old.id.as_str())
            .bind(old.data_key_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(query_failed("editing an OAuth provider"))?;
            if done.rows_affected() != 1 {
                return Err(StoreError::Changed { what: "OAuth provider" });
            }
            if new_key {
                sqlx::query("DELETE FROM data_keys WHERE id = $1")
                    .bind(old.data_key_id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(query_failed("deleting an OAuth provider's old data key"))?;
            }
            commit(tx).await
        })
    }

    fn delete_provider<'a>(
        &'a self,
        owner_id: i64,
        name: &'a str,
    ) -> StoreFuture<'a, ProviderRemoval> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let id: Option<String> = sqlx::query_scalar(
                "SELECT id FROM oauth_providers WHERE owner_id = $1 AND name = $2",
            )
            .bind(owner_id)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(query_failed("reading an OAuth provider"))?;
            let Some(id) = id else { return Ok(ProviderRemoval::Missing) };
            let users: Vec<String> = sqlx::query_scalar(
                "SELECT s.name FROM oauth_tokens t JOIN secrets s ON s.id = t.secret_id \
                 WHERE t.provider_id = $1 ORDER BY s.name",
            )
            .bind(id.as_str())
            .fetch_all(&mut *tx)
            .await
            .map_err(query_failed("reading an OAuth provider's secrets"))?;
            if !users.is_empty() {
                return Ok(ProviderRemoval::InUse(users));
            }
            sqlx::query("DELETE FROM oauth_providers WHERE id = $1")
                .bind(id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(query_failed("removing an OAuth provider"))?;
            commit(tx).await?;
            Ok(ProviderRemoval::Removed)
        })
    }

    fn insert_pending<'a>(&'a self, a: &'a PendingRecord) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            sqlx::query("DELETE FROM oauth_authorizations WHERE expires_at < $1")
                .bind(a.created_at - PENDING_KEEP_SECS)
                .execute(&mut *tx)
                .await
                .map_err(query_failed("forgetting old authorizations"))?;
            sqlx::query(
                "INSERT INTO oauth_authorizations (id, state_hash, owner_id, provider_id, \
                 secret_name, reconnect_secret_id, scopes, status, message, created_at, \
                 expires_at, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
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
            let sql = format!("{PENDING_SELECT} WHERE a.id = $1");
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
            let sql = format!("{PENDING_SELECT} WHERE a.state_hash = $1");
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
                "UPDATE oauth_authorizations SET status = $1, message = $2, finished_at = $3 \
                 WHERE id = $4 AND status = $5",
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
                 last_refresh_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
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
                "UPDATE oauth_tokens SET generation = $1, refresh_token = $2, scopes = $3, \
                 expires_at = $4, refresh_at_ms = $5, failures = $6, needs_reauth = $7, \
                 last_refresh_at = $8, updated_at = $9 WHERE secret_id = $10 AND generation = $11",
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
            let sql = format!("{TOKEN_SELECT} WHERE t.secret_id = $1");
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
                 AND refresh_at_ms <= $1 ORDER BY refresh_at_ms LIMIT $2",
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
                "UPDATE oauth_tokens SET refresh_at_ms = $1 WHERE secret_id = $2 AND generation = $3 \
                 AND needs_reauth IS NULL \
                 AND (refresh_at_ms <= $4 OR (refresh_at_ms IS NULL AND $5 = 1))",
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
                "UPDATE oauth_tokens SET refresh_at_ms = $1, failures = $2 \
                 WHERE secret_id = $3 AND generation = $4",
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
                "UPDATE oauth_tokens SET needs_reauth = $1, refresh_at_ms = NULL \
                 WHERE secret_id = $2 AND generation = $3",
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
                        id: get(row, "id")?,
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
