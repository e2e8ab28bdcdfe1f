//! Activation: which secrets are active in which session. Every change is serialized (in this
//! broker by [`App::activation_lock`], across brokers sharing a store by
//! [`crate::store::Store::lock_owner`]) so that the conflict check and the write it guards see
//! the same state; the change and its audit records commit together, and the session's agent
//! is told at once.
//!
//! An activation may end before its session does (`activate --for`, or the secret's default
//! time): its end is stored with it, and [`expire_due`] (run by every broker each second)
//! deactivates it once the time has passed, recorded as `expired`, under the same locks, so
//! that of several brokers on one database exactly one records it.

use std::collections::HashMap;

use maestro_wire::agent_api::AgentEvent;
use maestro_wire::api::{Activation, ActivationInfo, AuditAction, ErrorCode, SessionInfo};
use maestro_wire::catalog::Outputs;
use maestro_wire::duration::format_secs;
use maestro_wire::limits::{MAX_ACTIVATION_SECS, MAX_NAMES_PER_CALL};
use tracing::{error, info};

use super::error::{DomainError, DomainResult};
use super::leak;
use super::material::{active_secret, outputs};
use super::secrets;
use super::sessions;
use super::teams::{self, Action};
use crate::app::App;
use crate::clock;
use crate::store::{ActivationRow, AuditRecord, NewActivation, SecretRecord, UserRecord};

/// Checks and de-duplicates the names of an activation call, keeping their order.
fn activation_names(body: &Activation, verb: &str) -> DomainResult<Vec<String>> {
    if body.names.is_empty() {
        return Err(DomainError::bad_request(format!("name at least one secret to {verb}")));
    }
    if body.names.len() > MAX_NAMES_PER_CALL {
        return Err(DomainError::new(
            ErrorCode::TooMany,
            format!(
                "at most {MAX_NAMES_PER_CALL} secrets per call; this one names {}",
                body.names.len()
            ),
        ));
    }
    let mut names: Vec<String> = Vec::with_capacity(body.names.len());
    for name in &body.names {
        teams::parse_scoped(name)?;
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    Ok(names)
}

/// How long an activation of `secret` lasts (seconds; `None`: until the session ends): the
/// time asked for, else the secret's default, else its maximum. Longer than its maximum is
/// refused.
fn activation_time(secret: &SecretRecord, asked: Option<u64>) -> DomainResult<Option<i64>> {
    let life = &secret.life;
    let asked = asked.map(|a| i64::try_from(a).unwrap_or(i64::MAX));
    if let (Some(asked), Some(max)) = (asked, life.activation_max)
        && asked > max
    {
        return Err(DomainError::new(
            ErrorCode::InvalidField,
            format!(
                "{} may be active for at most {} at a time; --for {} is longer; nothing was activated",
                secret.name,
                format_secs(max.unsigned_abs()),
                format_secs(asked.unsigned_abs())
            ),
        ));
    }
    Ok(asked.or(life.activation_default).or(life.activation_max))
}

/// Checks an activation time as a caller sends it.
fn check_for(for_seconds: Option<u64>) -> DomainResult<()> {
    match for_seconds {
        Some(secs) if secs == 0 || secs > MAX_ACTIVATION_SECS => {
            Err(DomainError::bad_request(format!(
                "an activation lasts between 1 second and {} days; {secs} seconds is not",
                MAX_ACTIVATION_SECS / 86_400
            )))
        }
        _ => Ok(()),
    }
}

/// Activates secrets of `user`'s, or of teams where they may activate (`team/NAME`), in a
/// live session of theirs: all or nothing. A secret whose name is that of another secret
/// active in the session (a team's `DB` beside one's own `DB`) is refused: the agent and the
/// mount know a secret by its bare name. A secret that
/// would provide a variable or file another active one (or another in the same call)
/// provides is refused, naming both. Each activation lasts `body.for_seconds`, else the
/// secret's default time; activating an active secret again sets its time anew.
pub async fn activate(
    app: &App,
    user: &UserRecord,
    id: &str,
    body: &Activation,
) -> DomainResult<SessionInfo> {
    let names = activation_names(body, "activate")?;
    check_for(body.for_seconds)?;
    let _serialized = app.activation_lock.lock().await;
    let _across_brokers = app.store.lock_owner(user.id).await?;
    let session = sessions::live_owned(app, user, id, "activate").await?;
    let mut wanted: Vec<(SecretRecord, Option<i64>, Option<String>)> =
        Vec::with_capacity(names.len());
    for name in &names {
        let (owner, bare) = teams::resolve(app, user, name, Action::Activate).await?;
        let secret = secrets::owned_by(app, &owner, bare).await?;
        leak::check_activatable(&secret)?;
        let time = activation_time(&secret, body.for_seconds)?;
        wanted.push((secret, time, owner.team_name().map(str::to_owned)));
    }
    let now = clock::now();
    let current = app.store.list_activations(user.id, Some(&session.id), None).await?;
    let active = app.store.active_secrets(&session.id).await?;
    let mut provided: Vec<(String, Outputs)> =
        active.iter().map(|s| (s.name.clone(), outputs(s))).collect();
    let mut added = Vec::new();
    let mut renewed = Vec::new();
    let mut named: Vec<(String, String)> =
        active.iter().map(|s| (s.name.clone(), s.id.clone())).collect();
    for (secret, time, team) in wanted {
        let until = time.map(|t| now.saturating_add(t));
        if let Some(row) = current.iter().find(|a| a.secret_id == secret.id) {
            if row.expires_at != until {
                renewed.push((secret, until, team));
            }
            continue;
        }
        if named.iter().any(|(n, id)| *n == secret.name && *id != secret.id) {
            let shown = maestro_wire::teams::scoped_name(team.as_deref(), &secret.name);
            return Err(DomainError::new(
                ErrorCode::Conflict,
                format!(
                    "{shown}: another secret named {} is active in this session (the mount and the agent know secrets by name); deactivate it first, or use another session; nothing was activated",
                    secret.name
                ),
            ));
        }
        named.push((secret.name.clone(), secret.id.clone()));
        let outputs = outputs(&secret);
        if let Some(clash) = secrets::conflict(&secret.name, &outputs, &provided) {
            return Err(DomainError::new(
                ErrorCode::Conflict,
                format!("{}; nothing was activated", clash.message),
            ));
        }
        provided.push((secret.name.clone(), outputs));
        added.push((secret, until, team));
    }
    let changes: Vec<NewActivation> = added
        .iter()
        .chain(&renewed)
        .map(|(s, until, _)| NewActivation { secret_id: s.id.clone(), expires_at: *until })
        .collect();
    let audit: Vec<AuditRecord> = added
        .iter()
        .chain(&renewed)
        .map(|(s, until, team)| AuditRecord {
            secret_id: Some(s.id.clone()),
            secret_name: Some(s.name.clone()),
            session_id: Some(session.id.clone()),
            detail: activation_detail(*until, team.as_deref()),
            ..AuditRecord::new(user.id, now, AuditAction::Activated)
        })
        .collect();
    app.store.activate(&session.id, &changes, now, &audit).await?;
    for (secret, _, _) in &added {
        app.hub.publish(&session.id, AgentEvent::Activated { secret: active_secret(secret) });
    }
    // The agent fetches the material again, and with it the new end.
    for (secret, _, _) in &renewed {
        app.hub.publish(&session.id, AgentEvent::Updated { secret: active_secret(secret) });
    }
    if !changes.is_empty() {
        let names: Vec<&str> =
            added.iter().chain(&renewed).map(|(s, _, _)| s.name.as_str()).collect();
        info!(user = %user.name, session = %session.id, secrets = ?names, for_seconds = ?body.for_seconds, "activated");
    }
    sessions::info(app, &session).await
}

/// The audit detail of an activation: its end, and the team whose secret it is.
fn activation_detail(until: Option<i64>, team: Option<&str>) -> Option<String> {
    let until = until.map(|u| format!("until {}", clock::rfc3339(u)));
    let team = team.map(|t| format!("team {t}"));
    match (until, team) {
        (Some(u), Some(t)) => Some(format!("{u}, {t}")),
        (u, t) => u.or(t),
    }
}

/// An activation as its owner sees it.
pub fn activation_info(row: &ActivationRow) -> ActivationInfo {
    activation_info_in(row, &HashMap::new())
}

/// An activation as its owner sees it, a team's secret named `team/NAME` (`teams`: the names
/// of the teams by id, [`teams::team_names`]).
pub fn activation_info_in(row: &ActivationRow, teams: &HashMap<i64, String>) -> ActivationInfo {
    let team = teams.get(&row.secret_owner_id).map(String::as_str);
    ActivationInfo {
        secret: maestro_wire::teams::scoped_name(team, &row.secret_name),
        session: row.session_id.clone(),
        session_label: row.session_label.clone(),
        activated_at: clock::rfc3339(row.activated_at),
        expires_at: row.expires_at.map(clock::rfc3339),
    }
}

/// Every secret active in a live session of `user`'s, with the time left.
pub async fn list(app: &App, user: &UserRecord) -> DomainResult<Vec<ActivationInfo>> {
    let rows = app.store.list_activations(user.id, None, None).await?;
    let teams = teams::team_names(app, user.id).await?;
    Ok(rows.iter().map(|r| activation_info_in(r, &teams)).collect())
}

/// Deactivates every activation whose time has passed, owner by owner under the same locks
/// as a user's change, and tells the agents at once. Of several brokers sharing the store, the
/// one that deletes an activation records it; the others find nothing left to do.
pub async fn expire_due(app: &App) {
    let now = clock::now();
    let owners = match app.store.owners_with_expired_activations(now).await {
        Ok(owners) => owners,
        Err(e) => {
            error!(error = %e, "cannot look for expired activations");
            return;
        }
    };
    for owner in owners {
        if let Err(e) = expire_owner(app, owner, now).await {
            error!(error = %e, "cannot deactivate expired activations");
        }
    }
}

/// [`expire_due`] for one owner; the agents are told while the locks are held, as for a
/// user's change.
async fn expire_owner(app: &App, owner: i64, now: i64) -> DomainResult<()> {
    let _serialized = app.activation_lock.lock().await;
    let _across_brokers = app.store.lock_owner(owner).await?;
    for row in app.store.expire_activations(owner, now).await? {
        app.hub.publish(&row.session_id, AgentEvent::Deactivated { name: row.secret_name.clone() });
        info!(session = %row.session_id, secret = %row.secret_name, "activation expired");
    }
    Ok(())
}

/// Deactivates secrets of `user`'s in a live session of theirs; names that are not active
/// there are skipped, names of no secret refused.
pub async fn deactivate(
    app: &App,
    user: &UserRecord,
    id: &str,
    body: &Activation,
) -> DomainResult<SessionInfo> {
    let names = activation_names(body, "deactivate")?;
    let _serialized = app.activation_lock.lock().await;
    let _across_brokers = app.store.lock_owner(user.id).await?;
    let session = sessions::live_owned(app, user, id, "deactivate").await?;
    let active: HashMap<String, SecretRecord> = app
        .store
        .active_secrets(&session.id)
        .await?
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let mut removed = Vec::new();
    for name in &names {
        let (owner, bare) = teams::resolve(app, user, name, Action::See).await?;
        let secret = secrets::owned_by(app, &owner, bare).await?;
        if active.get(&secret.name).is_some_and(|a| a.id == secret.id) {
            removed.push(secret);
        }
    }
    let now = clock::now();
    let ids: Vec<String> = removed.iter().map(|s| s.id.clone()).collect();
    let audit = records(&removed, user, &session.id, now, AuditAction::Deactivated);
    app.store.change_activations(&session.id, &[], &ids, now, &audit).await?;
    for secret in &removed {
        app.hub.publish(&session.id, AgentEvent::Deactivated { name: secret.name.clone() });
    }
    sessions::info(app, &session).await
}

/// One audit record per changed secret.
fn records(
    secrets: &[SecretRecord],
    user: &UserRecord,
    session: &str,
    now: i64,
    action: AuditAction,
) -> Vec<AuditRecord> {
    secrets
        .iter()
        .map(|s| AuditRecord {
            secret_id: Some(s.id.clone()),
            secret_name: Some(s.name.clone()),
            session_id: Some(session.to_owned()),
            ..AuditRecord::new(user.id, now, action)
        })
        .collect()
}
