//! What a secret's owner sees of it ([`SecretMeta`]): names, outputs, versions, use, where it
//! is active, and for an OAuth secret its token's state. Both the secrets rules and OAuth
//! answer with it, so it depends on neither.

use maestro_wire::api::{OAuthMeta, SecretMeta};

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
    let hosts = shown_hosts(app, secret).await;
    let (alerts, alert_settings) =
        super::alerts::secret_view(app, secret.owner_id, &secret.id, &secret.name).await?;
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
        alerts,
        alerts_off: alert_settings.rules_off,
        on_alert: alert_settings.on_alert,
    })
}

/// The effective hosts of a secret, as its owner sees them. Only a kind whose default host is
/// one of its fields (GitLab) needs the values opened; if they do not open (an integrity
/// failure, recorded as a denial), the secret is shown with no host rather than failing the
/// whole answer (a listing of every secret), and its agent gets nothing either.
async fn shown_hosts(app: &App, secret: &SecretRecord) -> Vec<String> {
    let fields = if exposure::hosts_need_fields(&secret.kind, secret.exposure) {
        match open_fields(app, secret, None).await {
            Ok(fields) => Some(fields),
            Err(_) => return Vec::new(),
        }
    } else {
        None
    };
    exposure::effective_hosts(
        &secret.name,
        &secret.kind,
        secret.exposure,
        fields.as_ref(),
        &secret.hosts,
    )
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
