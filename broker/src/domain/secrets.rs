//! Secrets: validation of what users send, what a secret provides (for conflict checks), the
//! metadata users see, and the rules of creating, editing, deleting and listing secrets.
//! Sealing and opening values is [`super::material`]'s.

use maestro_wire::agent_api::AgentEvent;
use maestro_wire::api::{AuditAction, CreateSecret, Deleted, EditSecret, ErrorCode, SecretMeta};
use maestro_wire::catalog::Outputs;
use maestro_wire::catalog::seal::Exposure;
use tracing::info;

use super::alerts;
use super::audit::Page;
use super::error::{DomainError, DomainResult};
use super::exposure;
use super::material::{self, active_secret, outputs, outputs_of};
use super::meta::meta;
use super::teams::{self, Action, Owner};
use super::validate::{check_fields, check_name, check_tags, check_text};
use crate::app::App;
use crate::clock;
use crate::store::{AuditRecord, AuditRow, Lifecycle, SecretRecord, UserRecord};
use crate::tokens;

/// The first clash between a candidate and already active secrets, as an error naming both
/// secrets and what they share.
pub fn conflict(
    candidate: &str,
    candidate_outputs: &Outputs,
    active: &[(String, Outputs)],
) -> Option<DomainError> {
    for (other, other_outputs) in active {
        if other == candidate {
            continue;
        }
        let shared_var =
            candidate_outputs.variables.iter().find(|v| other_outputs.variables.contains(v));
        let shared = match shared_var {
            Some(v) => Some(format!("variable {v}")),
            None => candidate_outputs
                .files
                .iter()
                .find(|f| other_outputs.files.contains(f))
                .map(|f| format!("file {f}")),
        };
        if let Some(shared) = shared {
            return Some(DomainError::new(
                ErrorCode::Conflict,
                format!(
                    "{candidate} and {other} both provide {shared}; deactivate {other} first, or activate them in different sessions"
                ),
            ));
        }
    }
    None
}

/// A secret of `user`'s, by name; another user's secret is answered like a missing one.
pub async fn owned(app: &App, user: &UserRecord, name: &str) -> DomainResult<SecretRecord> {
    check_name(name)?;
    app.store.secret_by_name(user.id, name).await?.ok_or_else(|| {
        DomainError::not_found(format!("no secret named {name}; `maestro secrets ls` lists yours"))
    })
}

/// A secret of `owner`'s (the user's own, or a team's), by bare name; answered like a missing
/// one when it is not there, named as the user wrote it.
pub async fn owned_by(app: &App, owner: &Owner, name: &str) -> DomainResult<SecretRecord> {
    if owner.team.is_none() {
        return owned(app, &owner.principal, name).await;
    }
    check_name(name)?;
    let scoped = owner.scoped(name);
    app.store.secret_by_name(owner.principal.id, name).await?.ok_or_else(|| {
        DomainError::not_found(format!(
            "no secret named {scoped}; `maestro secrets ls` lists yours and your teams'"
        ))
    })
}

/// A create's or edit's alert settings, checked (rule names) and without repeats.
type AlertSettings = (Option<Vec<String>>, Option<Vec<maestro_wire::alerts::AlertAction>>);
fn alert_settings(
    rules_off: &Option<Vec<String>>,
    on_alert: &Option<Vec<maestro_wire::alerts::AlertAction>>,
) -> DomainResult<AlertSettings> {
    let rules_off = rules_off.as_deref().map(alerts::check_rules_off).transpose()?;
    Ok((rules_off, on_alert.as_deref().map(alerts::actions_set)))
}

/// A duration setting as sent (`what` names it in errors): `None` unset, `Some(0)` cleared.
fn duration_setting(what: &str, secs: Option<u64>, max: u64) -> DomainResult<Option<Option<i64>>> {
    match secs {
        None => Ok(None),
        Some(0) => Ok(Some(None)),
        Some(s) if s > max => Err(DomainError::bad_request(format!(
            "{what} is at most {} days; {s} seconds is longer",
            max / 86_400
        ))),
        Some(s) => Ok(Some(Some(i64::try_from(s).unwrap_or(i64::MAX)))),
    }
}

/// A secret's activation and rotation settings after a create or an edit (`old`: the current
/// ones), checked: a default time no longer than the maximum.
fn life_settings(
    old: &Lifecycle,
    default: Option<u64>,
    max: Option<u64>,
    rotate_every: Option<u64>,
) -> DomainResult<Lifecycle> {
    use maestro_wire::limits::{MAX_ACTIVATION_SECS, MAX_ROTATION_PERIOD_SECS};
    let life = Lifecycle {
        activation_default: duration_setting(
            "the default activation time",
            default,
            MAX_ACTIVATION_SECS,
        )?
        .unwrap_or(old.activation_default),
        activation_max: duration_setting("the longest activation", max, MAX_ACTIVATION_SECS)?
            .unwrap_or(old.activation_max),
        rotate_every: duration_setting(
            "the rotation period",
            rotate_every,
            MAX_ROTATION_PERIOD_SECS,
        )?
        .unwrap_or(old.rotate_every),
        value_changed_at: old.value_changed_at,
    };
    if let (Some(d), Some(m)) = (life.activation_default, life.activation_max)
        && d > m
    {
        return Err(DomainError::bad_request(format!(
            "the default activation time ({}) is longer than the longest activation ({}); give a default of at most the maximum",
            maestro_wire::duration::format_secs(d.unsigned_abs()),
            maestro_wire::duration::format_secs(m.unsigned_abs())
        )));
    }
    Ok(life)
}

/// An optional text, with the empty text meaning none.
pub fn optional_text(text: Option<String>) -> Option<String> {
    text.filter(|t| !t.is_empty())
}

/// A secret's metadata as the user who named it sees it: a team's secret as `team/NAME`.
fn present(owner: &Owner, mut meta: SecretMeta) -> SecretMeta {
    meta.name = owner.scoped(&meta.name);
    meta.team = owner.team_name().map(str::to_owned);
    meta
}

/// `by USER` for the audit detail of a change a member made to a team's secret.
fn by(owner: &Owner, actor: &UserRecord) -> String {
    if owner.team.is_some() { format!(", by {}", actor.name) } else { String::new() }
}

/// Creates a secret (version 1) with its audit record: the user's own, or a team's
/// (`team/NAME`, admins and owners).
pub async fn create(
    app: &App,
    actor: &UserRecord,
    mut body: CreateSecret,
) -> DomainResult<SecretMeta> {
    let scoped = body.name.clone();
    let (owner, bare) = teams::resolve(app, actor, &scoped, Action::WriteSecrets).await?;
    body.name = bare.to_owned();
    let user = &owner.principal;
    check_name(&body.name)?;
    if let Some(d) = &body.description {
        check_text("description", d)?;
    }
    check_tags(&body.tags)?;
    let (rules_off, on_alert) = alert_settings(&body.alerts_off, &body.on_alert)?;
    let life = life_settings(
        &Lifecycle::default(),
        body.activation_default_seconds,
        body.activation_max_seconds,
        body.rotate_every_seconds,
    )?;
    let fields = check_fields(&body.kind, &body.fields)?;
    let exposed =
        exposure::check(&body.kind, body.exposure.unwrap_or_default(), &fields, &body.hosts)?;
    let now = clock::now();
    let id = tokens::random_id::<16>().map_err(|e| DomainError::internal("making an id", &e))?;
    let record = SecretRecord {
        id,
        owner_id: user.id,
        name: body.name.clone(),
        kind: body.kind.clone(),
        description: optional_text(body.description),
        tags: body.tags,
        version: 1,
        field_names: Vec::new(),
        data_key_id: String::new(),
        wrapped_key: Vec::new(),
        created_at: now,
        updated_at: now,
        exposure: exposed.exposure,
        hosts: exposed.user_hosts,
        compromised_at: None,
        life: Lifecycle { value_changed_at: now, ..life },
    };
    let sealed = material::seal_version(app, record, &fields)?;
    let audit = AuditRecord {
        secret_id: Some(sealed.record.id.clone()),
        secret_name: Some(sealed.record.name.clone()),
        detail: Some(format!(
            "version 1, kind {}, {}{}",
            sealed.record.kind,
            sealed.record.exposure.as_str(),
            by(&owner, actor)
        )),
        ..AuditRecord::new(user.id, now, AuditAction::Created)
    };
    app.store.insert_secret(&sealed.record, &sealed.fields, &audit).await?;
    alerts::set_secret_settings(app, &sealed.record.id, rules_off, on_alert.map(Some)).await?;
    info!(user = %actor.name, secret = %scoped, "secret created");
    Ok(present(&owner, meta(app, &sealed.record).await?))
}

/// The metadata of every secret of `user`'s, then those of the teams they are a member of
/// (named `team/NAME`).
pub async fn list(app: &App, user: &UserRecord) -> DomainResult<Vec<SecretMeta>> {
    let mut out = Vec::new();
    let mut owners = vec![Owner::personal(user)];
    owners.extend(teams::owners_of(app, user).await?);
    for owner in &owners {
        for secret in app.store.list_secrets(owner.principal.id).await? {
            out.push(present(owner, meta(app, &secret).await?));
        }
    }
    Ok(out)
}

/// The metadata of one secret of `user`'s, or of a team's they are a member of.
pub async fn show(app: &App, user: &UserRecord, name: &str) -> DomainResult<SecretMeta> {
    let (owner, bare) = teams::resolve(app, user, name, Action::See).await?;
    let secret = owned_by(app, &owner, bare).await?;
    Ok(present(&owner, meta(app, &secret).await?))
}

/// A new version of a secret (the old one is gone), refused when its new outputs would clash
/// in a session where it is active; the sessions where it is active get an `updated` event.
pub async fn edit(
    app: &App,
    actor: &UserRecord,
    name: &str,
    body: EditSecret,
) -> DomainResult<SecretMeta> {
    let (owner, bare) = teams::resolve(app, actor, name, Action::WriteSecrets).await?;
    let user = &owner.principal;
    let _serialized = app.activation_lock.lock().await;
    let _across_brokers = app.store.lock_owner(user.id).await?;
    let secret = owned_by(app, &owner, bare).await?;
    let (rules_off, on_alert) = alert_settings(&body.alerts_off, &body.on_alert)?;
    let on_alert = if body.clear_on_alert { Some(None) } else { on_alert.map(Some) };
    let has_alert_settings = rules_off.is_some() || on_alert.is_some();
    if body.kind.is_none()
        && body.fields.is_empty()
        && body.remove_fields.is_empty()
        && body.description.is_none()
        && body.tags.is_none()
        && body.exposure.is_none()
        && body.hosts.is_none()
        && body.activation_default_seconds.is_none()
        && body.activation_max_seconds.is_none()
        && body.rotate_every_seconds.is_none()
    {
        if has_alert_settings {
            // Alert settings are no part of the secret's version: no new version for them.
            alerts::set_secret_settings(app, &secret.id, rules_off, on_alert).await?;
            info!(user = %actor.name, secret = %name, "alert settings changed");
            return Ok(present(&owner, meta(app, &secret).await?));
        }
        return Err(DomainError::bad_request(
            "nothing to change: give fields, fields to remove, a description, tags, a kind, an exposure, hosts, activation times, a rotation period or alert settings",
        ));
    }
    if let Some(d) = &body.description {
        check_text("description", d)?;
    }
    if let Some(tags) = &body.tags {
        check_tags(tags)?;
    }
    let kind = body.kind.clone().unwrap_or_else(|| secret.kind.clone());
    let life = life_settings(
        &secret.life,
        body.activation_default_seconds,
        body.activation_max_seconds,
        body.rotate_every_seconds,
    )?;
    // A compromised secret stays marked until an edit gives a field a value it did not have
    // (a metadata-only edit, or one that removes fields, leaves the leaked value in place).
    // The same rule says when the value last changed, for its age (rotation).
    let new_value = if body.fields.is_empty() {
        false
    } else {
        // Fields that hold nothing secret (a host, a git secret's owners) are no new value.
        let kind_spec = maestro_wire::catalog::kind(&kind);
        let secret_field =
            |f: &str| !kind_spec.is_some_and(|k| k.fields.iter().any(|s| s.name == f && s.shown));
        let old = material::open_fields(app, &secret, None).await.ok();
        body.fields
            .iter()
            .any(|(f, v)| secret_field(f) && old.as_ref().and_then(|o| o.get(f)) != Some(v))
    };
    let merged = if kind != secret.kind {
        if !body.remove_fields.is_empty() {
            return Err(DomainError::bad_request(
                "changing the kind replaces every field: give the whole new set of fields and no fields to remove",
            ));
        }
        body.fields.clone()
    } else {
        let mut current = material::open_fields(app, &secret, None).await?;
        for field in &body.remove_fields {
            if current.remove(field).is_none() {
                return Err(DomainError::new(
                    ErrorCode::InvalidField,
                    format!("secret {name} has no field '{field}' to remove"),
                ));
            }
        }
        for (field, value) in &body.fields {
            current.insert(field.clone(), value.clone());
        }
        current
    };
    let fields = check_fields(&kind, &merged)?;
    // The exposure and hosts are checked against the new kind and fields: a kind change or a
    // new GitLab host re-checks the stored ones. Turning plain drops the hosts named.
    let new_exposure = body.exposure.unwrap_or(secret.exposure);
    let hosts = match &body.hosts {
        Some(hosts) => hosts.clone(),
        None if new_exposure == Exposure::Plain => Vec::new(),
        None => secret.hosts.clone(),
    };
    let exposed = exposure::check(&kind, new_exposure, &fields, &hosts)?;
    let field_names: Vec<String> = fields.keys().cloned().collect();
    let new_outputs = outputs_of(&kind, &field_names);
    let active_in = app.store.secret_active_in(&secret.id).await?;
    for session in &active_in {
        let others = outputs_in(app, session, Some(&secret.id)).await?;
        if let Some(clash) = conflict(&secret.name, &new_outputs, &others) {
            return Err(DomainError::new(
                ErrorCode::Conflict,
                format!("{} (it is active in session {session}); nothing changed", clash.message),
            ));
        }
    }
    let now = clock::now();
    let record = SecretRecord {
        kind,
        description: match body.description {
            Some(d) => optional_text(Some(d)),
            None => secret.description.clone(),
        },
        tags: body.tags.unwrap_or_else(|| secret.tags.clone()),
        version: secret.version + 1,
        updated_at: now,
        exposure: exposed.exposure,
        hosts: exposed.user_hosts,
        compromised_at: if new_value { None } else { secret.compromised_at },
        life: Lifecycle {
            value_changed_at: if new_value { now } else { secret.life.value_changed_at },
            ..life
        },
        ..secret.clone()
    };
    let sealed = material::seal_version(app, record, &fields)?;
    let audit = AuditRecord {
        secret_id: Some(secret.id.clone()),
        secret_name: Some(secret.name.clone()),
        detail: Some(edit_detail(&secret, &sealed.record) + &by(&owner, actor)),
        ..AuditRecord::new(user.id, now, AuditAction::Edited)
    };
    app.store.replace_secret(secret.version, &sealed.record, &sealed.fields, &audit).await?;
    alerts::set_secret_settings(app, &secret.id, rules_off, on_alert).await?;
    for session in &active_in {
        app.hub.publish(session, AgentEvent::Updated { secret: active_secret(&sealed.record) });
    }
    info!(user = %actor.name, secret = %name, version = sealed.record.version, "secret edited");
    Ok(present(&owner, meta(app, &sealed.record).await?))
}

/// The audit detail of an edit: the new version, a cleared compromised mark, and a change of
/// exposure or hosts.
fn edit_detail(old: &SecretRecord, new: &SecretRecord) -> String {
    let mut detail = format!("version {}", new.version);
    if old.compromised_at.is_some() && new.compromised_at.is_none() {
        detail.push_str(", new value: no longer compromised");
    } else if new.life.value_changed_at != old.life.value_changed_at {
        detail.push_str(", new value");
    }
    let secs = |s: Option<i64>| {
        s.map_or("none".to_owned(), |s| maestro_wire::duration::format_secs(s.unsigned_abs()))
    };
    if old.life.activation_default != new.life.activation_default {
        detail.push_str(&format!(", default activation {}", secs(new.life.activation_default)));
    }
    if old.life.activation_max != new.life.activation_max {
        detail.push_str(&format!(", longest activation {}", secs(new.life.activation_max)));
    }
    if old.life.rotate_every != new.life.rotate_every {
        detail.push_str(&format!(", rotate every {}", secs(new.life.rotate_every)));
    }
    if old.exposure != new.exposure {
        detail.push_str(&format!(", exposure {}", new.exposure.as_str()));
    }
    if old.hosts != new.hosts {
        if new.hosts.is_empty() {
            detail.push_str(", hosts: the kind's defaults");
        } else {
            detail.push_str(&format!(", hosts {}", new.hosts.join(" ")));
        }
    }
    detail
}

/// What the secrets active in a session provide, except `skip`.
pub async fn outputs_in(
    app: &App,
    session: &str,
    skip: Option<&str>,
) -> DomainResult<Vec<(String, Outputs)>> {
    Ok(app
        .store
        .active_secrets(session)
        .await?
        .iter()
        .filter(|s| Some(s.id.as_str()) != skip)
        .map(|s| (s.name.clone(), outputs(s)))
        .collect())
}

/// Deletes a secret, which also deactivates it everywhere (each session gets a `deactivated`
/// event); an OAuth secret's tokens are revoked at the provider after the delete.
pub async fn delete(app: &App, actor: &UserRecord, name: &str) -> DomainResult<Deleted> {
    let (owner, bare) = teams::resolve(app, actor, name, Action::WriteSecrets).await?;
    let user = &owner.principal;
    let serialized = app.activation_lock.lock().await;
    let across_brokers = app.store.lock_owner(user.id).await?;
    let secret = owned_by(app, &owner, bare).await?;
    // An OAuth secret's tokens are read before they are deleted, and revoked after.
    let revocation = crate::oauth::prepare_revocation(app, &secret).await?;
    let sessions = app.store.delete_secret(&secret, clock::now()).await?;
    for session in &sessions {
        app.hub.publish(session, AgentEvent::Deactivated { name: secret.name.clone() });
    }
    drop((across_brokers, serialized));
    info!(user = %actor.name, secret = %name, "secret deleted");
    let revocation = match revocation {
        Some(r) => Some(r.run(app).await),
        None => None,
    };
    Ok(Deleted { name: owner.scoped(&secret.name), deactivated_in: sessions, revocation })
}

/// A page of a secret's audit records, newest last; for a team's secret, each with the user
/// whose trail holds it (the member whose session activated or used it; the team's own
/// records have none).
pub async fn history(
    app: &App,
    user: &UserRecord,
    name: &str,
    page: Page,
) -> DomainResult<Vec<(AuditRow, Option<String>)>> {
    let (owner, bare) = teams::resolve(app, user, name, Action::See).await?;
    let secret = owned_by(app, &owner, bare).await?;
    if owner.team.is_some() {
        // Members' activations and uses are in their own trails: a team secret's history is
        // every record of the secret, whoever's trail holds it.
        let rows = app.teams.secret_trail(&secret.id, page.before, page.limit).await?;
        let team = owner.principal.id;
        return Ok(rows
            .into_iter()
            .map(|(row, by)| {
                let by = (row.record.owner_id != team).then_some(by);
                (row, by)
            })
            .collect());
    }
    let rows = app.store.secret_history(user.id, &secret.id, page.before, page.limit).await?;
    Ok(rows.into_iter().map(|row| (row, None)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outs(vars: &[&str], files: &[&str]) -> Outputs {
        Outputs {
            variables: vars.iter().map(|s| (*s).to_owned()).collect(),
            files: files.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn conflicts_name_both_secrets_and_the_shared_output() {
        let active = vec![("AWS_PROD".to_owned(), outs(&["AWS_REGION"], &["aws/credentials"]))];
        let f = conflict("AWS_DEV", &outs(&["AWS_REGION"], &[]), &active).unwrap();
        assert_eq!(f.code, ErrorCode::Conflict);
        assert!(f.message.contains("AWS_DEV and AWS_PROD both provide variable AWS_REGION"));
        let f = conflict("X", &outs(&[], &["aws/credentials"]), &active).unwrap();
        assert!(f.message.contains("file aws/credentials"));
        assert!(conflict("AWS_PROD", &outs(&["AWS_REGION"], &[]), &active).is_none());
        assert!(conflict("Y", &outs(&["OTHER"], &["OTHER"]), &active).is_none());
    }
}
