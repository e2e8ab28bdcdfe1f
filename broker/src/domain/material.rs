//! Secret material: what a secret provides when active and what its agent sees of it (no
//! values), sealing a new version of a secret's values under a fresh data key, and
//! opening them again (an integrity failure is recorded as a denial). Both the secrets rules
//! and OAuth (which writes a new version at each refresh) use it, and neither depends on the
//! other for it.

use std::collections::BTreeMap;

use maestro_wire::SecretValue;
use maestro_wire::agent_api::{ActiveSecret, SecretMaterial};
use maestro_wire::api::{AuditAction, ErrorCode};
use maestro_wire::catalog::{self, Outputs};
use tracing::error;

use super::error::{DomainError, DomainResult};
use super::exposure;
use crate::app::App;
use crate::clock;
use crate::seal::{DataKey, FieldBinding, KeyBinding, SealError};
use crate::store::{ActiveMaterial, AuditRecord, SealedField, SecretRecord};
use crate::tokens;

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
) -> DomainResult<Sealed> {
    let sealing = |e: SealError| DomainError::internal("sealing a secret", &e);
    let data_key = DataKey::generate().map_err(sealing)?;
    record.data_key_id =
        tokens::random_id::<16>().map_err(|e| DomainError::internal("sealing a secret", &e))?;
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
async fn integrity_failure(app: &App, secret: &SecretRecord, session: Option<&str>) -> DomainError {
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
    DomainError::new(
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
) -> DomainResult<BTreeMap<String, SecretValue>> {
    let sealed = app.store.secret_fields(&secret.id).await?;
    open_sealed(app, secret, &sealed, session).await
}

/// Opens the sealed fields of a secret's current version, already read with its record.
async fn open_sealed(
    app: &App,
    secret: &SecretRecord,
    sealed: &[SealedField],
    session: Option<&str>,
) -> DomainResult<BTreeMap<String, SecretValue>> {
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

/// The values of an active secret for its session's agent, from what
/// [`crate::store::Store::active_material`] read.
pub async fn material(
    app: &App,
    active: &ActiveMaterial,
    session: &str,
) -> DomainResult<SecretMaterial> {
    let secret = &active.secret;
    let oauth = active.oauth.clone().unwrap_or_default();
    let fields = open_sealed(app, secret, &active.fields, Some(session)).await?;
    let hosts = exposure::effective_hosts(
        &secret.name,
        &secret.kind,
        secret.exposure,
        Some(&fields),
        &secret.hosts,
    );
    Ok(SecretMaterial {
        name: secret.name.clone(),
        kind: secret.kind.clone(),
        version: secret.version,
        fields,
        expires_at: oauth.expires_at.map(clock::rfc3339),
        exposure: secret.exposure,
        hosts,
        needs_reauth: oauth.needs_reauth,
        active_until: active.active_until.map(clock::rfc3339),
    })
}
