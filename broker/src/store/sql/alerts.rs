//! Every statement of [`AlertStore`], written once and compiled once per driver, like
//! `sql/store.rs` beside it (which explains how).
//!
//! Each broker sharing a database runs the webhook task; `claim_webhooks` is a guarded
//! `UPDATE`: its outer `WHERE` repeats the claim's conditions, so on PostgreSQL a broker that
//! waited for another's claim of the same row re-reads it, finds it leased, and skips it.

use maestro_wire::alerts::AlertAction;

use super::Eng;
use super::statements::{Conn, DbRow, commit, get};
use crate::store::alerts::{
    AlertQuery, AlertRecord, AlertStore, Profile, ProfileUpdate, SecretAlertSettings,
    UserAlertSettings, WebhookState,
};
use crate::store::sql::{SqlStore, id_u32, json_list, to_json};
use crate::store::{DataKeyRecord, StoreError, StoreFuture, query_failed};

/// The store this file implements.
type This = SqlStore<Eng>;

macro_rules! alert_columns {
    () => {
        "id, owner_id, at, rule, reason, secret_id, secret_name, session_id, command, uid, \
         actions, acked_at, webhook, attempts"
    };
}

const ALERT_SELECT: &str = concat!("SELECT ", alert_columns!(), " FROM alerts ");

/// How many commands and labels a profile loads at most: below this, a profile holds all of
/// them and a batch needs no lookup per command.
const LOADED: usize = 1000;

/// Actions as their stored JSON list.
fn actions_json(actions: &[AlertAction]) -> String {
    let names: Vec<String> = actions.iter().map(|a| a.as_str().to_owned()).collect();
    to_json(&names)
}

/// A stored JSON list of actions.
fn actions_of(text: &str) -> Result<Vec<AlertAction>, StoreError> {
    json_list(text, "alert action list")?
        .iter()
        .map(|a| AlertAction::parse(a).ok_or(StoreError::Corrupt { what: "alert action" }))
        .collect()
}

fn u64_of(value: i64, what: &'static str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt { what })
}

fn i64_of(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn alert_from_row(row: &DbRow) -> Result<AlertRecord, StoreError> {
    Ok(AlertRecord {
        id: get(row, "id")?,
        owner_id: get(row, "owner_id")?,
        at: get(row, "at")?,
        rule: get(row, "rule")?,
        reason: get(row, "reason")?,
        secret_id: get(row, "secret_id")?,
        secret_name: get(row, "secret_name")?,
        session_id: get(row, "session_id")?,
        command: get(row, "command")?,
        uid: id_u32(get(row, "uid")?, "alert uid")?,
        actions: actions_of(&get::<String>(row, "actions")?)?,
        acked_at: get(row, "acked_at")?,
        webhook: WebhookState::parse(&get::<String>(row, "webhook")?)
            .ok_or(StoreError::Corrupt { what: "alert webhook state" })?,
        attempts: u32::try_from(get::<i64>(row, "attempts")?).unwrap_or(u32::MAX),
    })
}

/// The values seen as `what` with a secret, oldest first (at most [`LOADED`]), and whether
/// that is all of them.
async fn seen_values(
    pool: &sqlx::Pool<super::Db>,
    secret_id: &str,
    what: &str,
) -> Result<(Vec<String>, bool), StoreError> {
    let mut values: Vec<String> = sqlx::query_scalar(
        "SELECT value FROM alert_seen WHERE secret_id = $1 AND what = $2 \
         ORDER BY first_at, value LIMIT $3",
    )
    .bind(secret_id)
    .bind(what)
    .bind(i64::try_from(LOADED + 1).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await
    .map_err(query_failed("reading what a secret was used with"))?;
    let complete = values.len() <= LOADED;
    values.truncate(LOADED);
    Ok((values, complete))
}

async fn insert_alert(conn: &mut Conn, a: &AlertRecord) -> Result<i64, StoreError> {
    sqlx::query_scalar(
        "INSERT INTO alerts (owner_id, at, rule, reason, secret_id, secret_name, session_id, \
         command, uid, actions, webhook, next_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
    )
    .bind(a.owner_id)
    .bind(a.at)
    .bind(a.rule.as_str())
    .bind(a.reason.as_str())
    .bind(a.secret_id.as_deref())
    .bind(a.secret_name.as_deref())
    .bind(a.session_id.as_deref())
    .bind(a.command.as_deref())
    .bind(a.uid.map(i64::from))
    .bind(actions_json(&a.actions))
    .bind(a.webhook.as_str())
    .bind((a.webhook == WebhookState::Pending).then_some(0_i64))
    .fetch_one(conn)
    .await
    .map_err(query_failed("storing an alert"))
}

impl AlertStore for This {
    fn profile<'a>(&'a self, secret_id: &'a str, since: i64) -> StoreFuture<'a, Profile> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT first_at, uses, outside_exec_reads FROM alert_profiles \
                 WHERE secret_id = $1",
            )
            .bind(secret_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_failed("reading a secret's usage profile"))?;
            let mut profile = Profile::default();
            if let Some(row) = row {
                profile.first_at = Some(get(&row, "first_at")?);
                profile.uses = u64_of(get(&row, "uses")?, "use count")?;
                profile.outside_exec_reads =
                    u64_of(get(&row, "outside_exec_reads")?, "use count")?;
                (profile.commands, profile.commands_complete) =
                    seen_values(&self.pool, secret_id, "command").await?;
                (profile.labels, profile.labels_complete) =
                    seen_values(&self.pool, secret_id, "label").await?;
            }
            // The last minute, from the trail itself (migration 6's index on secret and time).
            let recent: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(COALESCE(use_count, 1)), 0) AS BIGINT) FROM audit \
                 WHERE secret_id = $1 AND at >= $2 \
                 AND action IN ('injected', 'file_read', 'substituted')",
            )
            .bind(secret_id)
            .bind(since)
            .fetch_one(&self.pool)
            .await
            .map_err(query_failed("counting a secret's recent uses"))?;
            profile.recent_uses = u64_of(recent, "use count")?;
            Ok(profile)
        })
    }

    fn seen<'a>(
        &'a self,
        secret_id: &'a str,
        what: &'a str,
        value: &'a str,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let found: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM alert_seen WHERE secret_id = $1 AND what = $2 AND value = $3",
            )
            .bind(secret_id)
            .bind(what)
            .bind(value)
            .fetch_one(&self.pool)
            .await
            .map_err(query_failed("reading what a secret was used with"))?;
            Ok(found > 0)
        })
    }

    fn record_uses<'a>(
        &'a self,
        updates: &'a [ProfileUpdate],
        alerts: &'a [AlertRecord],
    ) -> StoreFuture<'a, Vec<i64>> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            for u in updates {
                // The secret may have been deleted meanwhile: its profile goes with it.
                let exists: Option<String> =
                    sqlx::query_scalar("SELECT id FROM secrets WHERE id = $1")
                        .bind(u.secret_id.as_str())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(query_failed("reading a secret"))?;
                if exists.is_none() {
                    continue;
                }
                sqlx::query(
                    "INSERT INTO alert_profiles (secret_id, first_at, uses, outside_exec_reads) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (secret_id) DO UPDATE SET \
                     first_at = CASE WHEN excluded.first_at < alert_profiles.first_at \
                         THEN excluded.first_at ELSE alert_profiles.first_at END, \
                     uses = alert_profiles.uses + excluded.uses, \
                     outside_exec_reads = alert_profiles.outside_exec_reads \
                         + excluded.outside_exec_reads",
                )
                .bind(u.secret_id.as_str())
                .bind(u.first_at)
                .bind(i64_of(u.uses))
                .bind(i64_of(u.outside_exec_reads))
                .execute(&mut *tx)
                .await
                .map_err(query_failed("updating a secret's usage profile"))?;
                for (what, values) in [("command", &u.commands), ("label", &u.labels)] {
                    for value in values {
                        sqlx::query(
                            "INSERT INTO alert_seen (secret_id, what, value, first_at) \
                             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        )
                        .bind(u.secret_id.as_str())
                        .bind(what)
                        .bind(value.as_str())
                        .bind(u.first_at)
                        .execute(&mut *tx)
                        .await
                        .map_err(query_failed("recording what a secret was used with"))?;
                    }
                }
            }
            let mut ids = Vec::with_capacity(alerts.len());
            for a in alerts {
                ids.push(insert_alert(&mut tx, a).await?);
            }
            commit(tx).await?;
            Ok(ids)
        })
    }

    fn secret_alert_settings<'a>(
        &'a self,
        secret_id: &'a str,
    ) -> StoreFuture<'a, SecretAlertSettings> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT rules_off, on_alert FROM alert_secret_settings WHERE secret_id = $1",
            )
            .bind(secret_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_failed("reading a secret's alert settings"))?;
            let Some(row) = row else { return Ok(SecretAlertSettings::default()) };
            Ok(SecretAlertSettings {
                rules_off: json_list(&get::<String>(&row, "rules_off")?, "rule list")?,
                on_alert: get::<Option<String>>(&row, "on_alert")?
                    .map(|t| actions_of(&t))
                    .transpose()?,
            })
        })
    }

    fn put_secret_alert_settings<'a>(
        &'a self,
        secret_id: &'a str,
        settings: &'a SecretAlertSettings,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO alert_secret_settings (secret_id, rules_off, on_alert) \
                 VALUES ($1, $2, $3) ON CONFLICT (secret_id) DO UPDATE SET \
                 rules_off = excluded.rules_off, on_alert = excluded.on_alert",
            )
            .bind(secret_id)
            .bind(to_json(&settings.rules_off))
            .bind(settings.on_alert.as_deref().map(actions_json))
            .execute(&self.pool)
            .await
            .map_err(query_failed("storing a secret's alert settings"))?;
            Ok(())
        })
    }

    fn user_alert_settings(&self, owner_id: i64) -> StoreFuture<'_, UserAlertSettings> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT u.on_alert, u.webhook_url, u.data_key_id, d.wrapped, u.webhook_secret, \
                 u.generation FROM alert_user_settings u \
                 LEFT JOIN data_keys d ON d.id = u.data_key_id WHERE u.owner_id = $1",
            )
            .bind(owner_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_failed("reading a user's alert settings"))?;
            let Some(row) = row else {
                return Ok(UserAlertSettings { owner_id, ..Default::default() });
            };
            Ok(UserAlertSettings {
                owner_id,
                on_alert: actions_of(&get::<String>(&row, "on_alert")?)?,
                webhook_url: get(&row, "webhook_url")?,
                data_key_id: get(&row, "data_key_id")?,
                wrapped_key: get(&row, "wrapped")?,
                webhook_secret: get(&row, "webhook_secret")?,
                generation: u64_of(get(&row, "generation")?, "signing secret generation")?,
            })
        })
    }

    fn put_user_alert_settings<'a>(
        &'a self,
        s: &'a UserAlertSettings,
        new_key: Option<(&'a str, &'a [u8])>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            if let Some((id, wrapped)) = new_key {
                sqlx::query("INSERT INTO data_keys (id, wrapped, created_at) VALUES ($1, $2, $3)")
                    .bind(id)
                    .bind(wrapped)
                    .bind(crate::clock::now())
                    .execute(&mut *tx)
                    .await
                    .map_err(query_failed("storing a data key"))?;
            }
            sqlx::query(
                "INSERT INTO alert_user_settings (owner_id, on_alert, webhook_url, data_key_id, \
                 webhook_secret, generation) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (owner_id) DO UPDATE SET on_alert = excluded.on_alert, \
                 webhook_url = excluded.webhook_url, data_key_id = excluded.data_key_id, \
                 webhook_secret = excluded.webhook_secret, generation = excluded.generation",
            )
            .bind(s.owner_id)
            .bind(actions_json(&s.on_alert))
            .bind(s.webhook_url.as_deref())
            .bind(s.data_key_id.as_deref())
            .bind(s.webhook_secret.as_deref())
            .bind(i64_of(s.generation))
            .execute(&mut *tx)
            .await
            .map_err(query_failed("storing a user's alert settings"))?;
            // A replaced key is deleted by the table's trigger.
            commit(tx).await
        })
    }

    fn has_similar_alert<'a>(&'a self, a: &'a AlertRecord, since: i64) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let found: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM alerts WHERE owner_id = $1 AND session_id = $2 \
                 AND rule = $3 AND COALESCE(secret_name, '') = $4 \
                 AND COALESCE(command, '') = $5 AND at >= $6 AND acked_at IS NULL",
            )
            .bind(a.owner_id)
            .bind(a.session_id.as_deref().unwrap_or(""))
            .bind(a.rule.as_str())
            .bind(a.secret_name.as_deref().unwrap_or(""))
            .bind(a.command.as_deref().unwrap_or(""))
            .bind(since)
            .fetch_one(&self.pool)
            .await
            .map_err(query_failed("looking for a similar alert"))?;
            Ok(found > 0)
        })
    }

    fn alerts<'a>(&'a self, q: &'a AlertQuery) -> StoreFuture<'a, Vec<AlertRecord>> {
        Box::pin(async move {
            let sql = format!(
                "{ALERT_SELECT} WHERE owner_id = $1 \
                 AND ($2 IS NULL OR secret_name = $2) AND ($3 IS NULL OR session_id = $3) \
                 AND ($4 = 0 OR acked_at IS NULL) AND id < $5 ORDER BY id DESC LIMIT $6"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(q.owner_id)
                .bind(q.secret_name.as_deref())
                .bind(q.session_id.as_deref())
                .bind(i64::from(q.unacked_only))
                .bind(q.before.unwrap_or(i64::MAX))
                .bind(q.limit)
                .fetch_all(&self.pool)
                .await
                .map_err(query_failed("listing alerts"))?;
            rows.iter().map(alert_from_row).collect()
        })
    }

    fn unacked_alerts(&self, owner_id: i64) -> StoreFuture<'_, Vec<(String, u64)>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT secret_name, COUNT(*) AS n FROM alerts \
                 WHERE owner_id = $1 AND acked_at IS NULL AND secret_name IS NOT NULL \
                 GROUP BY secret_name",
            )
            .bind(owner_id)
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("counting alerts"))?;
            rows.iter()
                .map(|row| Ok((get(row, "secret_name")?, u64_of(get(row, "n")?, "alert count")?)))
                .collect()
        })
    }

    fn ack_alerts<'a>(
        &'a self,
        owner_id: i64,
        ids: &'a [i64],
        now: i64,
    ) -> StoreFuture<'a, Vec<i64>> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let mut acked = Vec::new();
            for id in ids {
                let done = sqlx::query(
                    "UPDATE alerts SET acked_at = $1 \
                     WHERE id = $2 AND owner_id = $3 AND acked_at IS NULL",
                )
                .bind(now)
                .bind(*id)
                .bind(owner_id)
                .execute(&mut *tx)
                .await
                .map_err(query_failed("acknowledging an alert"))?;
                if done.rows_affected() == 1 {
                    acked.push(*id);
                }
            }
            commit(tx).await?;
            Ok(acked)
        })
    }

    fn claim_webhooks(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> StoreFuture<'_, Vec<AlertRecord>> {
        Box::pin(async move {
            let sql = format!(
                "UPDATE alerts SET lease_until_ms = $1, attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM alerts WHERE webhook = 'pending' \
                     AND next_at_ms <= $2 \
                     AND (lease_until_ms IS NULL OR lease_until_ms <= $2) \
                     ORDER BY next_at_ms LIMIT $3) \
                 AND webhook = 'pending' AND next_at_ms <= $2 \
                 AND (lease_until_ms IS NULL OR lease_until_ms <= $2) \
                 RETURNING {}",
                alert_columns!()
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(now_ms.saturating_add(lease_ms))
                .bind(now_ms)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(query_failed("claiming webhook deliveries"))?;
            rows.iter().map(alert_from_row).collect()
        })
    }

    fn finish_webhook(
        &self,
        id: i64,
        state: WebhookState,
        retry_at_ms: Option<i64>,
    ) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query(
                "UPDATE alerts SET webhook = $1, next_at_ms = $2, lease_until_ms = NULL \
                 WHERE id = $3",
            )
            .bind(state.as_str())
            .bind(retry_at_ms)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(query_failed("recording a webhook delivery"))?;
            Ok(())
        })
    }

    fn alert_data_keys(&self) -> StoreFuture<'_, Vec<DataKeyRecord>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT d.id, d.wrapped, u.owner_id FROM data_keys d \
                 JOIN alert_user_settings u ON u.data_key_id = d.id ORDER BY d.id",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("reading webhook data keys"))?;
            rows.iter()
                .map(|row| {
                    let owner_id: i64 = get(row, "owner_id")?;
                    Ok(DataKeyRecord {
                        id: get(row, "id")?,
                        owner_id,
                        secret_id: crate::domain::alerts::webhook_subject(owner_id),
                        version: 1,
                        wrapped: get(row, "wrapped")?,
                    })
                })
                .collect()
        })
    }
}
