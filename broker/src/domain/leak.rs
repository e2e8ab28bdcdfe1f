//! Leak response (`maestro secrets compromised NAME`): a secret whose value got out is taken out
//! of every session at once, marked compromised until an edit gives it a new value (activation
//! is refused meanwhile), revoked at the provider where Maestro can (OAuth tokens, RFC 7009), and
//! answered with the kind's rotation steps from the catalog, since rotating at the provider is
//! the one step Maestro cannot take for the owner.

use maestro_wire::agent_api::AgentEvent;
use maestro_wire::api::{AuditAction, Compromised, ErrorCode, RotationSteps};
use maestro_wire::catalog;
use tracing::info;

use super::error::{DomainError, DomainResult};
use super::secrets::owned_by;
use super::teams::{self, Action};
use crate::app::App;
use crate::clock;
use crate::store::{AuditRecord, SecretRecord, UserRecord};

/// What the answer says when the kind has nothing Maestro can revoke.
const NOT_REVOCABLE: &str =
    "not revocable by Maestro: rotate the value at the provider (steps below)";

/// Declares a secret of `user`'s compromised: deactivates it in every live session (their agents
/// drop it), marks it, records `compromised`, revokes an OAuth secret's tokens at the provider,
/// and answers with what happened and the kind's rotation steps. Marking an already
/// compromised secret again keeps the first time and revokes again.
pub async fn compromised(app: &App, actor: &UserRecord, name: &str) -> DomainResult<Compromised> {
    let (owner, bare) = teams::resolve(app, actor, name, Action::WriteSecrets).await?;
    let user = &owner.principal;
    let serialized = app.activation_lock.lock().await;
    let across_brokers = app.store.lock_owner(user.id).await?;
    let secret = owned_by(app, &owner, bare).await?;
    // An OAuth secret's tokens are read now (while they are the ones that leaked), revoked after
    // the mark is committed, so that a slow provider never holds the owner's lock.
    let revocation = crate::oauth::prepare_revocation(app, &secret).await?;
    let now = clock::now();
    let audit = AuditRecord {
        secret_id: Some(secret.id.clone()),
        secret_name: Some(secret.name.clone()),
        detail: Some(format!("version {}, deactivated everywhere", secret.version)),
        ..AuditRecord::new(user.id, now, AuditAction::Compromised)
    };
    let sessions = app.store.mark_compromised(&secret, now, &audit).await?;
    for session in &sessions {
        app.hub.publish(session, AgentEvent::Deactivated { name: secret.name.clone() });
    }
    drop((across_brokers, serialized));
    info!(user = %actor.name, secret = %name, sessions = sessions.len(), "secret marked compromised");
    let revocation = match revocation {
        Some(r) => r.run(app).await,
        None => NOT_REVOCABLE.to_owned(),
    };
    let marked_at = secret.compromised_at.unwrap_or(now);
    Ok(Compromised {
        name: owner.scoped(&secret.name),
        compromised_at: clock::rfc3339(marked_at),
        deactivated_in: sessions,
        revocation,
        rotation: rotation(&secret.kind),
        kind: secret.kind,
    })
}

/// The catalog's rotation steps for `kind` (a kind no longer in the catalog gets the generic
/// advice).
pub fn rotation(kind: &str) -> RotationSteps {
    match catalog::kind(kind) {
        Some(k) => RotationSteps::from(&k.rotation),
        None => RotationSteps {
            steps: "Issue a new value at the provider, then revoke or delete the old one there"
                .to_owned(),
            link: None,
        },
    }
}

/// Refuses to activate a compromised secret, in one line that says what to do.
pub fn check_activatable(secret: &SecretRecord) -> DomainResult<()> {
    match secret.compromised_at {
        None => Ok(()),
        Some(at) => Err(DomainError::new(
            ErrorCode::Conflict,
            format!(
                "{name} was marked compromised at {}: edit it with a new value first (`maestro secrets edit {name} --field-file FIELD=PATH`); nothing was activated",
                clock::rfc3339(at),
                name = secret.name
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use maestro_wire::catalog::seal::Exposure;

    use super::*;

    fn record(compromised_at: Option<i64>) -> SecretRecord {
        SecretRecord {
            id: "s1".into(),
            owner_id: 1,
            name: "AWS_PROD".into(),
            kind: "aws".into(),
            description: None,
            tags: Vec::new(),
            version: 1,
            field_names: Vec::new(),
            data_key_id: String::new(),
            wrapped_key: Vec::new(),
            created_at: 0,
            updated_at: 0,
            exposure: Exposure::Plain,
            hosts: Vec::new(),
            compromised_at,
            life: Default::default(),
        }
    }

    #[test]
    fn a_compromised_secret_is_refused_in_one_line_that_says_what_to_do() {
        assert!(check_activatable(&record(None)).is_ok());
        let e = check_activatable(&record(Some(1_764_921_600))).unwrap_err();
        assert_eq!(e.code, ErrorCode::Conflict);
        assert_eq!(
            e.message,
            "AWS_PROD was marked compromised at 2025-12-05T08:00:00Z: edit it with a new value first (`maestro secrets edit AWS_PROD --field-file FIELD=PATH`); nothing was activated"
        );
        assert!(!e.message.contains('\n'));
    }

    #[test]
    fn rotation_steps_come_from_the_catalog_with_a_fallback() {
        let aws = rotation("aws");
        assert!(aws.steps.starts_with("IAM console"));
        assert!(aws.link.is_some_and(|l| l.starts_with("https://docs.aws.amazon.com/")));
        for kind in maestro_wire::catalog::KINDS {
            assert!(!rotation(kind.name).steps.is_empty(), "{}", kind.name);
        }
        let gone = rotation("no-such-kind");
        assert!(gone.steps.starts_with("Issue a new value") && gone.link.is_none());
    }
}
