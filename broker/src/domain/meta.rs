//! What a secret's owner sees of it ([`SecretMeta`]): names, outputs, versions, use, where it
//! is active, and for an OAuth secret its token's state. Both the secrets rules and OAuth
//! answer with it, so it depends on neither.

use std::collections::BTreeMap;

use maestro_wire::api::{OAuthMeta, SecretMeta};
use maestro_wire::catalog;
use maestro_wire::secret::SecretValue;

use super::error::DomainResult;
use super::exposure;
use super::material::{open_fields, outputs};
use crate::app::App;
use crate::clock;
use crate::store::SecretRecord;

/// A secret's metadata as its owner sees it.
pub async fn meta(app: &App, secret: &SecretRecord) -> DomainResult<SecretMeta> {
    let usage = app.store.secret_usage(&secret.id).await?;
    let active = app.store.secret_active_in(&secret.id).await?;
    let o = outputs(secret);
    let fields = opened_if_needed(app, secret).await;
    let hosts = exposure::effective_hosts(
        &secret.name,
        &secret.kind,
        secret.exposure,
        fields.as_ref(),
        &secret.hosts,
    );
    let (alerts, alert_settings) =
        super::alerts::secret_view(app, secret.owner_id, &secret.id, &secret.name).await?;
    let now = clock::now();
    let activations = app
        .store
        .list_activations(secret.owner_id, None, Some(&secret.id))
        .await?
        .iter()
        .map(super::activation::activation_info)
        .collect();
    let life = &secret.life;
    let age = now.saturating_sub(life.value_changed_at).max(0);
    let secs = |s: Option<i64>| s.map(i64::unsigned_abs);
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
        oauth: oauth_meta(app, secret).await?,
        exposure: secret.exposure,
        hosts,
        user_hosts: secret.hosts.clone(),
        shown_fields: shown_fields(secret, fields.as_ref()),
        compromised_at: secret.compromised_at.map(clock::rfc3339),
        alerts,
        alerts_off: alert_settings.rules_off,
        on_alert: alert_settings.on_alert,
        activation_default_seconds: secs(life.activation_default),
        activation_max_seconds: secs(life.activation_max),
        rotate_every_seconds: secs(life.rotate_every),
        value_changed_at: Some(clock::rfc3339(life.value_changed_at)),
        rotation_due: life.rotate_every.is_some_and(|every| age >= every),
        activations,
        team: None,
    })
}

/// The secret's values, opened only when its metadata needs some: a kind whose default host is
/// one of its fields (GitLab), or a kind with fields that are not secret (a region, a host).
/// If they do not open (an integrity failure, recorded as a denial), the secret is shown with no
/// host and no field values rather than failing the whole answer (a listing of every secret),
/// and its agent gets nothing either.
async fn opened_if_needed(
    app: &App,
    secret: &SecretRecord,
) -> Option<BTreeMap<String, SecretValue>> {
    let has_shown = catalog::kind(&secret.kind).is_some_and(|k| {
        k.fields.iter().any(|f| f.shown && secret.field_names.iter().any(|n| n == f.name))
    });
    if !has_shown && !exposure::hosts_need_fields(&secret.kind, secret.exposure) {
        return None;
    }
    open_fields(app, secret, None).await.ok()
}

/// The values of the fields the catalog marks as not secret ([`catalog::Field::shown`]).
fn shown_fields(
    secret: &SecretRecord,
    fields: Option<&BTreeMap<String, SecretValue>>,
) -> BTreeMap<String, String> {
    let (Some(kind), Some(fields)) = (catalog::kind(&secret.kind), fields) else {
        return BTreeMap::new();
    };
    kind.fields
        .iter()
        .filter(|f| f.shown)
        .filter_map(|f| fields.get(f.name).map(|v| (f.name.to_owned(), v.expose().to_owned())))
        .collect()
}

/// The OAuth metadata of a secret, for `GET /v1/secrets/...`; `None` for other secrets.
async fn oauth_meta(app: &App, secret: &SecretRecord) -> DomainResult<Option<OAuthMeta>> {
    let Some(view) = app.oauth.store.token(&secret.id).await? else { return Ok(None) };
    let t = &view.token;
    Ok(Some(OAuthMeta {
        provider: view.provider_name.clone(),
        scopes: t.scopes.clone(),
        expires_at: t.expires_at.map(clock::rfc3339),
        needs_reauth: t.needs_reauth.is_some(),
        reauth_hint: t.needs_reauth.clone(),
        last_refresh_at: t.last_refresh_at.map(clock::rfc3339),
    }))
}
