//! Secrets between the API and the store: validation of what users send, sealing and opening
//! of values, what a secret provides (for conflict checks), and the metadata users see.

use std::collections::BTreeMap;

use maestro_wire::SecretValue;
use maestro_wire::agent_api::{ActiveSecret, SecretMaterial};
use maestro_wire::api::{AuditAction, ErrorCode, SecretMeta};
use maestro_wire::catalog::{self, Outputs, ValidationError};
use maestro_wire::limits::{MAX_DESCRIPTION_BYTES, MAX_TAG_BYTES, MAX_TAGS};
use maestro_wire::names;
use tracing::error;

use crate::api::error::{ApiResult, Failure};
use crate::app::App;
use crate::clock;
use crate::seal::{DataKey, FieldBinding, KeyBinding, SealError};
use crate::store::{ActiveMaterial, AuditRecord, SealedField, SecretRecord};
use crate::tokens;

/// Checks a secret name against `[A-Z][A-Z0-9_]{0,63}`.
pub fn check_name(name: &str) -> ApiResult<()> {
    if names::is_valid_secret_name(name) {
        Ok(())
    } else {
        let shown: String = name.chars().take(80).collect();
        Err(Failure::new(
            ErrorCode::InvalidName,
            format!(
                "invalid secret name '{}': use 1 to 64 of A-Z, 0-9 and _, starting with a letter (like AWS_PROD)",
                shown.escape_default()
            ),
        ))
    }
}

/// Checks a description or label: size, and no control characters but newline and tab.
pub fn check_text(what: &str, text: &str) -> ApiResult<()> {
    if text.len() > MAX_DESCRIPTION_BYTES {
        return Err(Failure::new(
            ErrorCode::TooLarge,
            format!("the {what} is {} bytes; the limit is {MAX_DESCRIPTION_BYTES}", text.len()),
        ));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(Failure::bad_request(format!(
            "the {what} contains control characters; use plain text"
        )));
    }
    Ok(())
}

/// Checks tags: how many, how long, printable, no repeats.
pub fn check_tags(tags: &[String]) -> ApiResult<()> {
    if tags.len() > MAX_TAGS {
        return Err(Failure::new(
            ErrorCode::TooMany,
            format!("a secret has at most {MAX_TAGS} tags; this one has {}", tags.len()),
        ));
    }
    for (i, tag) in tags.iter().enumerate() {
        if tag.is_empty() || tag.len() > MAX_TAG_BYTES {
            return Err(Failure::bad_request(format!(
                "tag {} is {} bytes; a tag has 1 to {MAX_TAG_BYTES} bytes",
                i + 1,
                tag.len()
            )));
        }
        if tag.chars().any(|c| c.is_control()) {
            return Err(Failure::bad_request(format!("tag {} contains control characters", i + 1)));
        }
        if tags[..i].contains(tag) {
            return Err(Failure::bad_request(format!("tag '{tag}' is given twice")));
        }
    }
    Ok(())
}

/// Validates fields against their kind, with defaults filled in.
pub fn check_fields(
    kind: &str,
    fields: &BTreeMap<String, SecretValue>,
) -> ApiResult<BTreeMap<String, SecretValue>> {
    catalog::validate(kind, fields).map_err(|e| {
        let code = match &e {
            ValidationError::UnknownKind(_) => ErrorCode::UnknownKind,
            ValidationError::MissingField { .. } | ValidationError::NoFields => {
                ErrorCode::MissingField
            }
            ValidationError::UnknownField { .. } | ValidationError::InvalidField { .. } => {
                ErrorCode::InvalidField
            }
            ValidationError::TooLarge { .. } => ErrorCode::TooLarge,
            ValidationError::TooManyFields(_) => ErrorCode::TooMany,
        };
        // The catalog's messages name fields and limits, never values.
        Failure::new(code, e.to_string())
    })
}

/// What a secret provides when active.
pub fn outputs(secret: &SecretRecord) -> Outputs {
    match catalog::kind(&secret.kind) {
        Some(kind) => catalog::outputs(kind, secret.field_names.iter().map(String::as_str)),
        None => Outputs::default(),
    }
}

/// Outputs of a kind with these field names.
pub fn outputs_of(kind: &str, field_names: &[String]) -> Outputs {
    match catalog::kind(kind) {
        Some(k) => catalog::outputs(k, field_names.iter().map(String::as_str)),
        None => Outputs::default(),
    }
}

/// The first clash between a candidate and already active secrets, as an error naming both
/// secrets and what they share.
pub fn conflict(
    candidate: &str,
    candidate_outputs: &Outputs,
    active: &[(String, Outputs)],
) -> Option<Failure> {
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
            return Some(Failure::new(
                ErrorCode::Conflict,
                format!(
                    "{candidate} and {other} both provide {shared}; deactivate {other} first, or activate them in different sessions"
                ),
            ));
        }
    }
    None
}

/// A sealed new version: the record and its sealed fields.
pub struct Sealed {
    pub record: SecretRecord,
    pub fields: Vec<SealedField>,
}

/// Seals `fields` as version `record.version` of `record` under a new data key, and fills in
/// the record's data key and field names.
pub fn seal_version(
    app: &App,
    mut record: SecretRecord,
    fields: &BTreeMap<String, SecretValue>,
) -> ApiResult<Sealed> {
    let sealing = |e: SealError| Failure::internal("sealing a secret", &e);
    let data_key = DataKey::generate().map_err(sealing)?;
    record.data_key_id =
        tokens::random_id::<16>().map_err(|e| Failure::internal("sealing a secret", &e))?;
    record.wrapped_key = app
        .master
        .wrap(
            &data_key,
            &KeyBinding {
                key_id: &record.data_key_id,
                owner_id: record.owner_id,
                secret_id: &record.id,
                version: record.version,
            },
        )
        .map_err(sealing)?;
    record.field_names = fields.keys().cloned().collect();
    let mut sealed = Vec::with_capacity(fields.len());
    for (name, value) in fields {
        let binding = FieldBinding {
            owner_id: record.owner_id,
            secret_id: &record.id,
            version: record.version,
            field: name,
        };
        sealed.push(SealedField {
            name: name.clone(),
            blob: data_key.seal(value.expose().as_bytes(), &binding).map_err(sealing)?,
        });
    }
    Ok(Sealed { record, fields: sealed })
}

/// The integrity failure of one secret. Recorded as a denial and logged (names only).
async fn integrity_failure(app: &App, secret: &SecretRecord, session: Option<&str>) -> Failure {
    error!(secret = %secret.name, owner = secret.owner_id, "a stored ciphertext failed its integrity check");
    let record = AuditRecord {
        secret_id: Some(secret.id.clone()),
        secret_name: Some(secret.name.clone()),
        session_id: session.map(str::to_owned),
        detail: Some("integrity check failed".to_owned()),
        ..AuditRecord::new(secret.owner_id, clock::now(), AuditAction::Denied)
    };
    if let Err(e) = app.store.append_audit(std::slice::from_ref(&record)).await {
        error!(error = %e, "could not record an integrity failure");
    }
    Failure::new(
        ErrorCode::Integrity,
        format!(
            "secret {} failed its integrity check: its stored ciphertext was modified or does not belong to it; delete it and add it again",
            secret.name
        ),
    )
}

/// Opens every field of a secret's current version. A tampered, moved or replayed ciphertext
/// is an integrity error; no value is returned for it.
pub async fn open_fields(
    app: &App,
    secret: &SecretRecord,
    session: Option<&str>,
) -> ApiResult<BTreeMap<String, SecretValue>> {
    let sealed = app.store.secret_fields(&secret.id).await?;
    open_sealed(app, secret, &sealed, session).await
}

/// Opens the sealed fields of a secret's current version, already read with its record.
async fn open_sealed(
    app: &App,
    secret: &SecretRecord,
    sealed: &[SealedField],
    session: Option<&str>,
) -> ApiResult<BTreeMap<String, SecretValue>> {
    let key = match app.master.unwrap_key(
        &secret.wrapped_key,
        &KeyBinding {
            key_id: &secret.data_key_id,
            owner_id: secret.owner_id,
            secret_id: &secret.id,
            version: secret.version,
        },
    ) {
        Ok(key) => key,
        Err(_) => return Err(integrity_failure(app, secret, session).await),
    };
    let stored_names: Vec<&String> = sealed.iter().map(|f| &f.name).collect();
    if stored_names.len() != secret.field_names.len()
        || !stored_names.iter().zip(&secret.field_names).all(|(a, b)| *a == b)
    {
        // A field row was added or removed behind our back.
        return Err(integrity_failure(app, secret, session).await);
    }
    let mut out = BTreeMap::new();
    for field in sealed {
        let binding = FieldBinding {
            owner_id: secret.owner_id,
            secret_id: &secret.id,
            version: secret.version,
            field: &field.name,
        };
        let plain = match key.open(&field.blob, &binding) {
            Ok(p) => p,
            Err(_) => return Err(integrity_failure(app, secret, session).await),
        };
        let value = match SecretValue::from_utf8(&plain) {
            Ok(v) => v,
            Err(_) => return Err(integrity_failure(app, secret, session).await),
        };
        out.insert(field.name.clone(), value);
    }
    Ok(out)
}

/// A secret as its agent sees it in events (no values).
pub fn active_secret(secret: &SecretRecord) -> ActiveSecret {
    let o = outputs(secret);
    ActiveSecret {
        name: secret.name.clone(),
        kind: secret.kind.clone(),
        version: secret.version,
        variables: o.variables,
        files: o.files,
    }
}

/// The values of an active secret for its session's agent, from what
/// [`crate::store::Store::active_material`] read.
pub async fn material(
    app: &App,
    active: &ActiveMaterial,
    session: &str,
) -> ApiResult<SecretMaterial> {
    let secret = &active.secret;
    let oauth = active.oauth.clone().unwrap_or_default();
    Ok(SecretMaterial {
        name: secret.name.clone(),
        kind: secret.kind.clone(),
        version: secret.version,
        fields: open_sealed(app, secret, &active.fields, Some(session)).await?,
        expires_at: oauth.expires_at.map(clock::rfc3339),
        needs_reauth: oauth.needs_reauth,
    })
}

/// A secret's metadata as its owner sees it.
pub async fn meta(app: &App, secret: &SecretRecord) -> ApiResult<SecretMeta> {
    let usage = app.store.secret_usage(&secret.id).await?;
    let active = app.store.secret_active_in(&secret.id).await?;
    let o = outputs(secret);
    Ok(SecretMeta {
        name: secret.name.clone(),
        kind: secret.kind.clone(),
        description: secret.description.clone(),
        tags: secret.tags.clone(),
        version: secret.version,
        field_names: secret.field_names.clone(),
        variables: o.variables,
        files: o.files,
        created_at: clock::rfc3339(secret.created_at),
        updated_at: clock::rfc3339(secret.updated_at),
        last_used_at: usage.last_used_at.map(clock::rfc3339),
        used_by_sessions: usage.sessions,
        active_in_sessions: active,
        oauth: crate::oauth::meta(app, secret).await?,
    })
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
        assert_eq!(f.body.error, ErrorCode::Conflict);
        assert!(f.body.message.contains("AWS_DEV and AWS_PROD both provide variable AWS_REGION"));
        let f = conflict("X", &outs(&[], &["aws/credentials"]), &active).unwrap();
        assert!(f.body.message.contains("file aws/credentials"));
        assert!(conflict("AWS_PROD", &outs(&["AWS_REGION"], &[]), &active).is_none());
        assert!(conflict("Y", &outs(&["OTHER"], &["OTHER"]), &active).is_none());
    }

    #[test]
    fn names_tags_and_texts() {
        assert!(check_name("AWS_PROD").is_ok());
        let f = check_name("bad-name").unwrap_err();
        assert_eq!(f.body.error, ErrorCode::InvalidName);
        assert!(check_tags(&["a".into(), "a".into()]).is_err());
        assert!(check_tags(&vec!["t".to_owned(); MAX_TAGS + 1]).is_err());
        assert!(check_text("description", &"x".repeat(MAX_DESCRIPTION_BYTES + 1)).is_err());
        assert!(check_text("description", "two\nlines").is_ok());
        assert!(check_text("description", "bell\u{7}").is_err());
    }
}
