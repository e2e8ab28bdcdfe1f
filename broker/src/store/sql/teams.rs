//! Every statement of [`TeamStore`], written once and compiled once per driver, like
//! `sql/store.rs` beside it (which explains how).
//!
//! A membership change locks the team's row first (`UPDATE teams SET name = name`: a row lock
//! on PostgreSQL; SQLite's write transaction is exclusive already), so that the last-owner
//! check and the change it guards see the same members on every broker.

use maestro_wire::api::AuditAction;

use super::Eng;
use super::statements::{
    Conn, DbRow, USAGE_GROUPS, USAGE_GROUPS_BY, audit_from_row, commit, get, insert_audit,
    usage_group_from_row,
};
use crate::store::sql::{SqlStore, is_unique_violation};
use crate::store::teams::{KIND_TEAM, MemberChange, MemberRecord, TeamRecord, TeamRefusal, TeamStore};
use crate::store::{
    ActivationRow, AuditRecord, AuditRow, StoreError, StoreFuture, UsageGroup, query_failed,
};

/// The store this file implements.
type This = SqlStore<Eng>;

/// The role whose holders may not activate the team's secrets.
const ROLE_WITHOUT_ACTIVATION: &str = "viewer";

fn team_from_row(row: &DbRow) -> Result<TeamRecord, StoreError> {
    Ok(TeamRecord { id: get(row, "id")?, name: get(row, "name")?, created_at: get(row, "created_at")? })
}

fn member_from_row(row: &DbRow) -> Result<MemberRecord, StoreError> {
    Ok(MemberRecord {
        user_id: get(row, "user_id")?,
        name: get(row, "name")?,
        role: get(row, "role")?,
        added_at: get(row, "added_at")?,
    })
}

/// Locks the team's row until the transaction ends (see the module docs).
async fn lock_team(conn: &mut Conn, team_id: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE teams SET name = name WHERE id = $1")
        .bind(team_id)
        .execute(conn)
        .await
        .map_err(query_failed("locking a team"))?;
    Ok(())
}

/// A user's id and role in the team (`None` role: not a member); `None`: no such user.
async fn user_and_role(
    conn: &mut Conn,
    team_id: i64,
    user: &str,
) -> Result<Option<(i64, Option<String>)>, StoreError> {
    let row = sqlx::query(
        "SELECT u.id, m.role FROM users u \
         LEFT JOIN team_members m ON m.user_id = u.id AND m.team_id = $1 \
         WHERE u.name = $2 AND u.kind = 'user'",
    )
    .bind(team_id)
    .bind(user)
    .fetch_optional(conn)
    .await
    .map_err(query_failed("reading a team member"))?;
    row.map(|row| Ok((get(&row, "id")?, get(&row, "role")?))).transpose()
}

/// How many owners the team has.
async fn owners(conn: &mut Conn, team_id: i64) -> Result<i64, StoreError> {
    sqlx::query_scalar("SELECT COUNT(*) FROM team_members WHERE team_id = $1 AND role = 'owner'")
        .bind(team_id)
        .fetch_one(conn)
        .await
        .map_err(query_failed("counting a team's owners"))
}

/// Ends the team's activations in the user's live sessions, recording a `deactivated` per
/// activation (in the member's trail, where their session's records are).
async fn end_activations(
    conn: &mut Conn,
    team_id: i64,
    user_id: i64,
    now: i64,
    detail: &str,
) -> Result<Vec<ActivationRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT a.session_id, se.label AS session_label, a.secret_id, s.name AS secret_name, \
         a.activated_at, a.expires_at FROM activations a \
         JOIN sessions se ON se.id = a.session_id JOIN secrets s ON s.id = a.secret_id \
         WHERE se.owner_id = $1 AND s.owner_id = $2 AND se.ended_at IS NULL \
         ORDER BY a.session_id, s.name",
    )
    .bind(user_id)
    .bind(team_id)
    .fetch_all(&mut *conn)
    .await
    .map_err(query_failed("reading a member's activations"))?;
    let mut ended = Vec::with_capacity(rows.len());
    for row in &rows {
        let a = ActivationRow {
            session_id: get(row, "session_id")?,
            session_label: get(row, "session_label")?,
            secret_id: get(row, "secret_id")?,
            secret_name: get(row, "secret_name")?,
            secret_owner_id: team_id,
            activated_at: get(row, "activated_at")?,
            expires_at: get(row, "expires_at")?,
        };
        sqlx::query("DELETE FROM activations WHERE session_id = $1 AND secret_id = $2")
            .bind(a.session_id.as_str())
            .bind(a.secret_id.as_str())
            .execute(&mut *conn)
            .await
            .map_err(query_failed("deactivating a team secret"))?;
        let record = AuditRecord {
            secret_id: Some(a.secret_id.clone()),
            secret_name: Some(a.secret_name.clone()),
            session_id: Some(a.session_id.clone()),
            detail: Some(detail.to_owned()),
            ..AuditRecord::new(user_id, now, AuditAction::Deactivated)
        };
        insert_audit(conn, &record).await?;
        ended.push(a);
    }
    Ok(ended)
}

impl TeamStore for This {
    fn create_team<'a>(
        &'a self,
        name: &'a str,
        creator: i64,
        now: i64,
        max: i64,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, Result<TeamRecord, TeamRefusal>> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let teams: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM team_members WHERE user_id = $1")
                    .bind(creator)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(query_failed("counting a user's teams"))?;
            if teams >= max {
                return Ok(Err(TeamRefusal::Limit));
            }
            // The principal: no token can name it (tokens are rows of `api_tokens`), and its
            // placeholder hash is unique because the name is.
            let principal = format!("team/{name}");
            let placeholder = format!("team principal {name}");
            let id = sqlx::query_scalar::<_, i64>(
                "INSERT INTO users (name, token_hash, created_at, kind) VALUES ($1, $2, $3, $4) \
                 RETURNING id",
            )
            .bind(principal.as_str())
            .bind(placeholder.as_bytes())
            .bind(now)
            .bind(KIND_TEAM)
            .fetch_one(&mut *tx)
            .await;
            let id = match id {
                Ok(id) => id,
                Err(e) if is_unique_violation(&e) => return Ok(Err(TeamRefusal::Taken)),
                Err(e) => return Err(StoreError::Query { step: "adding a team", source: e }),
            };
            let inserted = sqlx::query("INSERT INTO teams (id, name, created_at) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(name)
                .bind(now)
                .execute(&mut *tx)
                .await;
            match inserted {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => return Ok(Err(TeamRefusal::Taken)),
                Err(e) => return Err(StoreError::Query { step: "adding a team", source: e }),
            }
            sqlx::query(
                "INSERT INTO team_members (team_id, user_id, role, added_at) \
                 VALUES ($1, $2, 'owner', $3)",
            )
            .bind(id)
            .bind(creator)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(query_failed("adding a team's owner"))?;
            insert_audit(&mut tx, &AuditRecord { owner_id: id, ..audit.clone() }).await?;
            commit(tx).await?;
            Ok(Ok(TeamRecord { id, name: name.to_owned(), created_at: now }))
        })
    }

    fn team_by_name<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<TeamRecord>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT id, name, created_at FROM teams WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_failed("reading a team"))?;
            row.as_ref().map(team_from_row).transpose()
        })
    }

    fn teams_of(&self, user_id: i64) -> StoreFuture<'_, Vec<(TeamRecord, String)>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT t.id, t.name, t.created_at, m.role FROM teams t \
                 JOIN team_members m ON m.team_id = t.id WHERE m.user_id = $1 ORDER BY t.name",
            )
            .bind(user_id)
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("listing a user's teams"))?;
            rows.iter().map(|row| Ok((team_from_row(row)?, get(row, "role")?))).collect()
        })
    }

    fn member_role(&self, team_id: i64, user_id: i64) -> StoreFuture<'_, Option<String>> {
        Box::pin(async move {
            sqlx::query_scalar("SELECT role FROM team_members WHERE team_id = $1 AND user_id = $2")
                .bind(team_id)
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_failed("reading a team member's role"))
        })
    }

    fn members(&self, team_id: i64) -> StoreFuture<'_, Vec<MemberRecord>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT m.user_id, u.name, m.role, m.added_at FROM team_members m \
                 JOIN users u ON u.id = m.user_id WHERE m.team_id = $1 ORDER BY u.name",
            )
            .bind(team_id)
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("listing a team's members"))?;
            rows.iter().map(member_from_row).collect()
        })
    }

    fn set_member<'a>(
        &'a self,
        team_id: i64,
        user: &'a str,
        role: &'a str,
        now: i64,
        deactivate_detail: &'a str,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, Result<MemberChange, TeamRefusal>> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            lock_team(&mut tx, team_id).await?;
            let Some((user_id, before)) = user_and_role(&mut tx, team_id, user).await? else {
                return Ok(Err(TeamRefusal::NoSuchUser));
            };
            if before.as_deref() == Some("owner")
                && role != "owner"
                && owners(&mut tx, team_id).await? <= 1
            {
                return Ok(Err(TeamRefusal::LastOwner));
            }
            sqlx::query(
                "INSERT INTO team_members (team_id, user_id, role, added_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (team_id, user_id) DO UPDATE SET role = excluded.role",
            )
            .bind(team_id)
            .bind(user_id)
            .bind(role)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(query_failed("setting a team member's role"))?;
            let deactivated = if role == ROLE_WITHOUT_ACTIVATION {
                end_activations(&mut tx, team_id, user_id, now, deactivate_detail).await?
            } else {
                Vec::new()
            };
            insert_audit(&mut tx, audit).await?;
            let row = sqlx::query(
                "SELECT m.user_id, u.name, m.role, m.added_at FROM team_members m \
                 JOIN users u ON u.id = m.user_id WHERE m.team_id = $1 AND m.user_id = $2",
            )
            .bind(team_id)
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(query_failed("reading a team member"))?;
            let member = member_from_row(&row)?;
            commit(tx).await?;
            Ok(Ok(MemberChange { member: Some(member), before, deactivated }))
        })
    }

    fn remove_member<'a>(
        &'a self,
        team_id: i64,
        user: &'a str,
        now: i64,
        deactivate_detail: &'a str,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, Result<MemberChange, TeamRefusal>> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            lock_team(&mut tx, team_id).await?;
            let Some((user_id, before)) = user_and_role(&mut tx, team_id, user).await? else {
                return Ok(Err(TeamRefusal::NoSuchUser));
            };
            let Some(before) = before else { return Ok(Err(TeamRefusal::NotMember)) };
            if before == "owner" && owners(&mut tx, team_id).await? <= 1 {
                return Ok(Err(TeamRefusal::LastOwner));
            }
            sqlx::query("DELETE FROM team_members WHERE team_id = $1 AND user_id = $2")
                .bind(team_id)
                .bind(user_id)
                .execute(&mut *tx)
                .await
                .map_err(query_failed("removing a team member"))?;
            let deactivated =
                end_activations(&mut tx, team_id, user_id, now, deactivate_detail).await?;
            insert_audit(&mut tx, audit).await?;
            commit(tx).await?;
            Ok(Ok(MemberChange { member: None, before: Some(before), deactivated }))
        })
    }

    fn secret_trail<'a>(
        &'a self,
        secret_id: &'a str,
        before: Option<i64>,
        limit: i64,
    ) -> StoreFuture<'a, Vec<(AuditRow, String)>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT a.seq, a.owner_id, a.at, a.action, a.secret_id, a.secret_name,                  a.session_id, a.pid, a.uid, a.command, a.detail, a.use_count, a.last_at, a.exe,                  a.claimed_command, u.name AS principal FROM audit a                  LEFT JOIN users u ON u.id = a.owner_id                  WHERE a.secret_id = $1 AND a.seq < $2 ORDER BY a.seq DESC LIMIT $3",
            )
            .bind(secret_id)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("reading a team secret's history"))?;
            let mut out = rows
                .iter()
                .map(|row| {
                    let name: Option<String> = get(row, "principal")?;
                    Ok((audit_from_row(row)?, name.unwrap_or_else(|| "(removed user)".to_owned())))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            out.reverse();
            Ok(out)
        })
    }

    fn secret_usage_all<'a>(&'a self, secret_id: &'a str) -> StoreFuture<'a, Vec<UsageGroup>> {
        Box::pin(async move {
            // As `Store::secret_usage_groups`, without the owner: every member's uses.
            let sql = format!("{USAGE_GROUPS} {USAGE_GROUPS_BY}");
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(secret_id)
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("summing a team secret's usage"))?;
            rows.iter().map(usage_group_from_row).collect()
        })
    }

    fn delete_team<'a>(
        &'a self,
        team_id: i64,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, Result<(), TeamRefusal>> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            lock_team(&mut tx, team_id).await?;
            let owned: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM secrets WHERE owner_id = $1 \
                 UNION ALL SELECT 'provider ' || name FROM oauth_providers WHERE owner_id = $1 \
                 ORDER BY 1",
            )
            .bind(team_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(query_failed("reading what a team owns"))?;
            if !owned.is_empty() {
                return Ok(Err(TeamRefusal::NotEmpty(owned)));
            }
            // Sessions its service accounts made: refused while one is live, the ended ones
            // go with the team (their audit records stay).
            let live: Vec<String> = sqlx::query_scalar(
                "SELECT 'live session ' || id FROM sessions WHERE owner_id = $1 \
                 AND ended_at IS NULL AND expires_at > $2 ORDER BY created_at",
            )
            .bind(team_id)
            .bind(audit.at)
            .fetch_all(&mut *tx)
            .await
            .map_err(query_failed("reading a team's sessions"))?;
            if !live.is_empty() {
                return Ok(Err(TeamRefusal::NotEmpty(live)));
            }
            for sql in [
                "DELETE FROM team_members WHERE team_id = $1",
                "DELETE FROM oauth_authorizations WHERE owner_id = $1",
                "DELETE FROM alerts WHERE owner_id = $1",
                "DELETE FROM alert_user_settings WHERE owner_id = $1",
                "DELETE FROM activations WHERE session_id IN (SELECT id FROM sessions WHERE owner_id = $1)",
                "DELETE FROM certificates WHERE session_id IN (SELECT id FROM sessions WHERE owner_id = $1)",
                "DELETE FROM enrollment_tokens WHERE session_id IN (SELECT id FROM sessions WHERE owner_id = $1)",
                "DELETE FROM sessions WHERE owner_id = $1",
                // Its service accounts' tokens: refused at once by every broker (no cache).
                "DELETE FROM api_tokens WHERE user_id = $1",
                "DELETE FROM service_accounts WHERE owner_id = $1",
                "DELETE FROM teams WHERE id = $1",
                "DELETE FROM users WHERE id = $1 AND kind = 'team'",
            ] {
                sqlx::query(sql)
                    .bind(team_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(query_failed("deleting a team"))?;
            }
            insert_audit(&mut tx, audit).await?;
            commit(tx).await?;
            Ok(Ok(()))
        })
    }
}
