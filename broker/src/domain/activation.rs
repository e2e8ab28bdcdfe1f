//! Activation: which secrets are active in which session. Every change is serialized (in this
//! broker by [`App::activation_lock`], across brokers sharing a store by
//! [`crate::store::Store::lock_owner`]) so that the conflict check and the write it guards see
//! the same state; the change and its audit records commit together, and the session's agent
//! is told at once.

use std::collections::HashMap;

use maestro_wire::agent_api::AgentEvent;
use maestro_wire::api::{Activation, AuditAction, ErrorCode, SessionInfo};
use maestro_wire::catalog::Outputs;
use maestro_wire::limits::MAX_NAMES_PER_CALL;
use tracing::info;

use super::error::{DomainError, DomainResult};
use super::leak;
use super::material::{active_secret, outputs};
use super::secrets;
use super::sessions;
use super::validate::check_name;
use crate::app::App;
use crate::clock;
use crate::store::{AuditRecord, SecretRecord, UserRecord};

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
        check_name(name)?;
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    Ok(names)
}

/// Activates secrets of `user`'s in a live session of theirs: all or nothing. A secret that
/// would provide a variable or file another active one (or another in the same call)
/// provides is refused, naming both.
pub async fn activate(
    app: &App,
    user: &UserRecord,
    id: &str,
    body: &Activation,
) -> DomainResult<SessionInfo> {
    let names = activation_names(body, "activate")?;
    let _serialized = app.activation_lock.lock().await;
    let _across_brokers = app.store.lock_owner(user.id).await?;
    let session = sessions::live_owned(app, user, id, "activate").await?;
    let mut wanted = Vec::with_capacity(names.len());
    for name in &names {
        let secret = secrets::owned(app, user, name).await?;
        leak::check_activatable(&secret)?;
        wanted.push(secret);
    }
    let active = app.store.active_secrets(&session.id).await?;
    let mut provided: Vec<(String, Outputs)> =
        active.iter().map(|s| (s.name.clone(), outputs(s))).collect();
    let mut added = Vec::new();
    for secret in wanted {
        if active.iter().any(|a| a.id == secret.id) {
            continue;
        }
        let outputs = outputs(&secret);
        if let Some(clash) = secrets::conflict(&secret.name, &outputs, &provided) {
            return Err(DomainError::new(
                ErrorCode::Conflict,
                format!("{}; nothing was activated", clash.message),
            ));
        }
        provided.push((secret.name.clone(), outputs));
        added.push(secret);
    }
    let now = clock::now();
    let ids: Vec<String> = added.iter().map(|s| s.id.clone()).collect();
    let audit = records(&added, user, &session.id, now, AuditAction::Activated);
    app.store.change_activations(&session.id, &ids, &[], now, &audit).await?;
    for secret in &added {
        app.hub.publish(&session.id, AgentEvent::Activated { secret: active_secret(secret) });
    }
    if !added.is_empty() {
        let names: Vec<&str> = added.iter().map(|s| s.name.as_str()).collect();
        info!(user = %user.name, session = %session.id, secrets = ?names, "activated");
    }
    sessions::info(app, &session).await
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
        let secret = secrets::owned(app, user, name).await?;
        if active.contains_key(&secret.name) {
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
