//! Every statement of [`TokenStore`], written once and compiled once per driver, like
//! `sql/store.rs` beside it (which explains how).
//!
//! A token is found by the SHA-256 of what the client sent, through the unique index on
//! `token_hash`: the lookup compares hashes, never the token, so how long it takes says nothing
//! an attacker can use to guess a token byte by byte.

use super::Eng;
use super::statements::{Conn, DbRow, commit, get, insert_audit};
use crate::store::sql::{SqlStore, is_unique_violation, json_list, to_json};
use crate::store::tokens::{
    OWNER_TEAM, OWNER_USER, Refusal, ServiceAccountRecord, TokenAuth, TokenRecord, TokenStore, UserSummary,
};
use crate::store::{AuditRecord, StoreError, StoreFuture, UserRecord, query_failed};

/// The store this file implements.
type This = SqlStore<Eng>;

const TOKEN_SELECT: &str = "SELECT t.id, t.user_id, sa.name AS service_account, t.name, \
     t.scopes, t.created_at, t.expires_at, t.last_used_at \
     FROM api_tokens t LEFT JOIN service_accounts sa ON sa.id = t.service_account_id ";

const ACCOUNT_SELECT: &str = "SELECT sa.id, sa.owner_kind, sa.owner_id, sa.name, \
     sa.description, sa.created_at, \
     (SELECT COUNT(*) FROM api_tokens t WHERE t.service_account_id = sa.id) AS tokens \
     FROM service_accounts sa ";

fn token_from_row(row: &DbRow) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        id: get(row, "id")?,
        user_id: get(row, "user_id")?,
        service_account: get(row, "service_account")?,
        name: get(row, "name")?,
        scopes: json_list(&get::<String>(row, "scopes")?, "token scope list")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        last_used_at: get(row, "last_used_at")?,
    })
}

fn account_from_row(row: &DbRow) -> Result<ServiceAccountRecord, StoreError> {
    Ok(ServiceAccountRecord {
        id: get(row, "id")?,
        owner_kind: get(row, "owner_kind")?,
        owner_id: get(row, "owner_id")?,
        name: get(row, "name")?,
        description: get(row, "description")?,
        created_at: get(row, "created_at")?,
        tokens: get(row, "tokens")?,
    })
}

/// Runs a statement that deletes a user's rows of one table (`$1` is the user's id).
async fn delete_owned(conn: &mut Conn, sql: &'static str, id: i64) -> Result<(), StoreError> {
    sqlx::query(sql).bind(id).execute(conn).await.map_err(query_failed("removing a user's rows"))?;
    Ok(())
}

impl TokenStore for This {
    fn authenticate<'a>(&'a self, token_hash: &'a [u8]) -> StoreFuture<'a, Option<TokenAuth>> {
        Box::pin(async move {
            // A team's row acts only through a service account of that team; a user's token is
            // their own or of a service account the user owns.
            let sql = format!(
                "{TOKEN_SELECT} JOIN users u ON u.id = t.user_id \
                 WHERE t.token_hash = $1 AND ( \
                   (u.kind = $2 AND (t.service_account_id IS NULL \
                      OR (sa.owner_kind = $2 AND sa.owner_id = u.id))) \
                   OR (u.kind = $3 AND sa.owner_kind = $3 AND sa.owner_id = u.id))"
            );
            let sql = sql.replacen(
                "SELECT t.id,",
                "SELECT u.name AS user_name, u.disabled_at AS user_disabled_at, \
                 u.kind AS user_kind, t.id,",
                1,
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(token_hash)
                .bind(OWNER_USER)
                .bind(OWNER_TEAM)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_failed("looking up a token"))?;
            let Some(row) = row else { return Ok(None) };
            let token = token_from_row(&row)?;
            let user = UserRecord { id: token.user_id, name: get(&row, "user_name")? };
            let user_disabled = get::<Option<i64>>(&row, "user_disabled_at")?.is_some();
            let user_kind = get(&row, "user_kind")?;
            Ok(Some(TokenAuth { token, user, user_disabled, user_kind }))
        })
    }

    fn touch_token<'a>(&'a self, id: &'a str, now: i64, since: i64) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            sqlx::query(
                "UPDATE api_tokens SET last_used_at = $1 \
                 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
            )
            .bind(now)
            .bind(id)
            .bind(since)
            .execute(&self.pool)
            .await
            .map_err(query_failed("recording a token's last use"))?;
            Ok(())
        })
    }

    fn insert_token<'a>(
        &'a self,
        t: &'a TokenRecord,
        token_hash: &'a [u8],
        max: i64,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, Result<(), Refusal>> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens WHERE user_id = $1")
                .bind(t.user_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(query_failed("counting a user's tokens"))?;
            if count >= max {
                return Ok(Err(Refusal::Limit));
            }
            let kind: Option<String> = sqlx::query_scalar("SELECT kind FROM users WHERE id = $1")
                .bind(t.user_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(query_failed("reading a token's user"))?;
            let Some(kind) = kind else { return Ok(Err(Refusal::Missing)) };
            let account: Option<i64> = match &t.service_account {
                // A team acts only through its service accounts.
                None if kind != OWNER_USER => return Ok(Err(Refusal::Missing)),
                None => None,
                Some(name) => {
                    let id: Option<i64> = sqlx::query_scalar(
                        "SELECT id FROM service_accounts \
                         WHERE owner_kind = $1 AND owner_id = $2 AND name = $3",
                    )
                    .bind(kind.as_str())
                    .bind(t.user_id)
                    .bind(name.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(query_failed("reading a service account"))?;
                    match id {
                        Some(id) => Some(id),
                        None => return Ok(Err(Refusal::Missing)),
                    }
                }
            };
            sqlx::query(
                "INSERT INTO api_tokens (id, token_hash, user_id, service_account_id, name, \
                 scopes, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(t.id.as_str())
            .bind(token_hash)
            .bind(t.user_id)
            .bind(account)
            .bind(t.name.as_str())
            .bind(to_json(&t.scopes))
            .bind(t.created_at)
            .bind(t.expires_at)
            .execute(&mut *tx)
            .await
            .map_err(query_failed("adding a token"))?;
            insert_audit(&mut tx, audit).await?;
            commit(tx).await?;
            Ok(Ok(()))
        })
    }

    fn list_tokens(&self, user_id: i64) -> StoreFuture<'_, Vec<TokenRecord>> {
        Box::pin(async move {
            let sql = format!("{TOKEN_SELECT} WHERE t.user_id = $1 ORDER BY t.created_at, t.id");
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(user_id)
                .fetch_all(&self.pool)
                .await
                .map_err(query_failed("listing tokens"))?;
            rows.iter().map(token_from_row).collect()
        })
    }

    fn token_owner<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<i64>> {
        Box::pin(async move {
            sqlx::query_scalar("SELECT user_id FROM api_tokens WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_failed("reading a token"))
        })
    }

    fn delete_token<'a>(
        &'a self,
        user_id: i64,
        id: &'a str,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let done = sqlx::query("DELETE FROM api_tokens WHERE id = $1 AND user_id = $2")
                .bind(id)
                .bind(user_id)
                .execute(&mut *tx)
                .await
                .map_err(query_failed("revoking a token"))?;
            if done.rows_affected() == 0 {
                return Ok(false);
            }
            insert_audit(&mut tx, audit).await?;
            commit(tx).await?;
            Ok(true)
        })
    }

    fn insert_service_account<'a>(
        &'a self,
        owner_kind: &'a str,
        owner_id: i64,
        name: &'a str,
        description: Option<&'a str>,
        now: i64,
        max: i64,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, Result<ServiceAccountRecord, Refusal>> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let count: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM service_accounts WHERE owner_kind = $1 AND owner_id = $2",
            )
            .bind(owner_kind)
            .bind(owner_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(query_failed("counting service accounts"))?;
            if count >= max {
                return Ok(Err(Refusal::Limit));
            }
            let inserted: Result<i64, sqlx::Error> = sqlx::query_scalar(
                "INSERT INTO service_accounts (owner_kind, owner_id, name, description, created_at) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .bind(owner_kind)
            .bind(owner_id)
            .bind(name)
            .bind(description)
            .bind(now)
            .fetch_one(&mut *tx)
            .await;
            let id = match inserted {
                Ok(id) => id,
                Err(e) if is_unique_violation(&e) => return Ok(Err(Refusal::Taken)),
                Err(e) => return Err(StoreError::Query { step: "adding a service account", source: e }),
            };
            insert_audit(&mut tx, audit).await?;
            commit(tx).await?;
            Ok(Ok(ServiceAccountRecord {
                id,
                owner_kind: owner_kind.to_owned(),
                owner_id,
                name: name.to_owned(),
                description: description.map(str::to_owned),
                created_at: now,
                tokens: 0,
            }))
        })
    }

    fn list_service_accounts(&self, owner_id: i64) -> StoreFuture<'_, Vec<ServiceAccountRecord>> {
        Box::pin(async move {
            let sql = format!(
                "{ACCOUNT_SELECT} WHERE sa.owner_id = $1 ORDER BY sa.name"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(owner_id)
                .fetch_all(&self.pool)
                .await
                .map_err(query_failed("listing service accounts"))?;
            rows.iter().map(account_from_row).collect()
        })
    }

    fn delete_service_account<'a>(
        &'a self,
        owner_id: i64,
        name: &'a str,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, Result<i64, Refusal>> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let id: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM service_accounts WHERE owner_id = $1 AND name = $2",
            )
            .bind(owner_id)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(query_failed("reading a service account"))?;
            let Some(id) = id else { return Ok(Err(Refusal::Missing)) };
            let tokens = sqlx::query("DELETE FROM api_tokens WHERE service_account_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(query_failed("revoking a service account's tokens"))?
                .rows_affected();
            sqlx::query("DELETE FROM service_accounts WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(query_failed("removing a service account"))?;
            insert_audit(&mut tx, audit).await?;
            commit(tx).await?;
            Ok(Ok(i64::try_from(tokens).unwrap_or(i64::MAX)))
        })
    }

    fn list_users(&self, now: i64) -> StoreFuture<'_, Vec<UserSummary>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT u.id, u.name, u.created_at, u.disabled_at, \
                 (SELECT COUNT(*) FROM api_tokens t WHERE t.user_id = u.id) AS tokens, \
                 (SELECT COUNT(*) FROM secrets s WHERE s.owner_id = u.id) AS secrets, \
                 (SELECT COUNT(*) FROM sessions s WHERE s.owner_id = u.id \
                    AND s.ended_at IS NULL AND s.expires_at > $1) AS live_sessions \
                 FROM users u WHERE u.kind = 'user' ORDER BY u.name",
            )
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("listing users"))?;
            rows.iter()
                .map(|row| {
                    Ok(UserSummary {
                        id: get(row, "id")?,
                        name: get(row, "name")?,
                        created_at: get(row, "created_at")?,
                        disabled_at: get(row, "disabled_at")?,
                        tokens: get(row, "tokens")?,
                        secrets: get(row, "secrets")?,
                        live_sessions: get(row, "live_sessions")?,
                    })
                })
                .collect()
        })
    }

    fn set_user_disabled<'a>(
        &'a self,
        name: &'a str,
        disabled_at: Option<i64>,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let done = sqlx::query("UPDATE users SET disabled_at = $1 WHERE name = $2 AND kind = 'user'")
                .bind(disabled_at)
                .bind(name)
                .execute(&self.pool)
                .await
                .map_err(query_failed("disabling a user"))?;
            Ok(done.rows_affected() > 0)
        })
    }

    fn delete_user<'a>(&'a self, name: &'a str, now: i64) -> StoreFuture<'a, Result<(), Refusal>> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let id: Option<i64> =
                sqlx::query_scalar("SELECT id FROM users WHERE name = $1 AND kind = 'user'")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(query_failed("reading a user"))?;
            let Some(id) = id else { return Ok(Err(Refusal::Missing)) };
            let live: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM sessions WHERE owner_id = $1 AND ended_at IS NULL \
                 AND expires_at > $2 ORDER BY created_at",
            )
            .bind(id)
            .bind(now)
            .fetch_all(&mut *tx)
            .await
            .map_err(query_failed("reading a user's sessions"))?;
            if !live.is_empty() {
                return Ok(Err(Refusal::LiveSessions(live)));
            }
            // The data keys of their secrets and webhook, deleted after the rows that use them.
            let mut keys: Vec<String> =
                sqlx::query_scalar("SELECT data_key_id FROM secrets WHERE owner_id = $1")
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(query_failed("reading a user's data keys"))?;
            let webhook: Vec<Option<String>> = sqlx::query_scalar(
                "SELECT data_key_id FROM alert_user_settings WHERE owner_id = $1",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(query_failed("reading a user's data keys"))?;
            keys.extend(webhook.into_iter().flatten());
            // In the order foreign keys need; provider and token rows drop their own keys
            // (triggers), secrets' fields and alert rows go with their secret (cascades).
            for sql in [
                "DELETE FROM oauth_tokens WHERE secret_id IN (SELECT id FROM secrets WHERE owner_id = $1)",
                "DELETE FROM activations WHERE secret_id IN (SELECT id FROM secrets WHERE owner_id = $1) \
                 OR session_id IN (SELECT id FROM sessions WHERE owner_id = $1)",
                "DELETE FROM oauth_authorizations WHERE owner_id = $1",
                "DELETE FROM alerts WHERE owner_id = $1",
                "DELETE FROM alert_user_settings WHERE owner_id = $1",
                "DELETE FROM secrets WHERE owner_id = $1",
                "DELETE FROM oauth_providers WHERE owner_id = $1",
                "DELETE FROM certificates WHERE session_id IN (SELECT id FROM sessions WHERE owner_id = $1)",
                "DELETE FROM enrollment_tokens WHERE session_id IN (SELECT id FROM sessions WHERE owner_id = $1)",
                "DELETE FROM sessions WHERE owner_id = $1",
                "DELETE FROM api_tokens WHERE user_id = $1",
                "DELETE FROM team_members WHERE user_id = $1",
                "DELETE FROM service_accounts WHERE owner_kind = 'user' AND owner_id = $1",
                "DELETE FROM users WHERE id = $1",
            ] {
                delete_owned(&mut tx, sql, id).await?;
            }
            for key in &keys {
                sqlx::query("DELETE FROM data_keys WHERE id = $1")
                    .bind(key.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(query_failed("removing a user's data keys"))?;
            }
            commit(tx).await?;
            Ok(Ok(()))
        })
    }
}
