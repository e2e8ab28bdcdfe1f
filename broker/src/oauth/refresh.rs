//! Refreshing tokens before they expire, so that an active secret is always valid.
//!
//! * **When**: at 2/3 of the token's life, less a random jitter of up to 1/10 of it (so that
//!   tokens issued together do not all refresh at once), and never sooner than a second after
//!   it was issued. A token without a refresh token is looked at when it expires, to mark it.
//! * **How**: the task sleeps until the earliest due refresh (or 30 s, or a wake-up), claims
//!   each due token with a lease (so that brokers sharing a store never refresh one token
//!   twice: the provider would see a rotated refresh token reused), calls the token endpoint,
//!   and stores the new access token as a new version of the secret with the new (rotated)
//!   refresh token, in one transaction. Sessions where the secret is active get `updated`.
//! * **Failures**: a transient one (network, 5xx, 429) is retried after 1 s, 2 s, 4 s, ... up
//!   to 5 minutes; a refusal (`invalid_grant`: the refresh token was revoked or expired) marks
//!   the secret as needing re-authorization, with the command that repairs it, and tells the
//!   sessions where it is active (their agents show it in `maestro-exec --list`).

use std::sync::Arc;
use std::time::Duration;

use maestro_wire::SecretValue;
use maestro_wire::agent_api::AgentEvent;
use maestro_wire::api::{AuditAction, ErrorCode, SecretMeta};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::endpoint::{Client, Grant};
use super::fields::token_fields;
use super::providers;
use super::sealing::{self, REFRESH_TOKEN};
use super::store::{ProviderRecord, TokenRecord, TokenView};
use crate::app::App;
use crate::clock;
use crate::domain::material;
use crate::domain::meta::meta;
use crate::domain::{DomainError, DomainResult};
use crate::seal::DataKey;
use crate::store::{AuditRecord, SecretRecord, StoreError, UserRecord};

/// Longest sleep of the task between looks at the schedule.
const IDLE: Duration = Duration::from_secs(30);
/// How long a claimed refresh is this broker's before another may take it over.
const LEASE_MS: i64 = 60_000;
/// Longest wait between retries of a transient failure.
const MAX_BACKOFF_MS: i64 = 300_000;
/// Most refreshes taken per look.
const BATCH: i64 = 32;
/// How often storing a refresh is retried when the secret changed meanwhile (an edit).
const STORE_ATTEMPTS: usize = 3;

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A random number in `0..=max` (0 when the system generator fails: jitter is not security).
fn jitter(max: i64) -> i64 {
    if max <= 0 {
        return 0;
    }
    crate::tokens::random_bytes::<8>()
        .map(|b| (u64::from_le_bytes(*b) % (max as u64 + 1)) as i64)
        .unwrap_or(0)
}

/// When to refresh a token issued at `issued_ms` that lives `expires_in` seconds.
pub fn refresh_at(issued_ms: i64, expires_in: Option<u64>, has_refresh_token: bool) -> Option<i64> {
    let life_ms = i64::try_from(expires_in?).ok()?.saturating_mul(1000);
    if !has_refresh_token {
        return Some(issued_ms.saturating_add(life_ms));
    }
    let wait = (life_ms * 2 / 3 - jitter(life_ms / 10)).max(1000);
    Some(issued_ms.saturating_add(wait))
}

/// The wait before retry number `failures` (1, 2, 4, ... seconds, at most 5 minutes, plus up
/// to a fifth of jitter).
pub fn backoff_ms(failures: u32) -> i64 {
    let base =
        1000_i64.saturating_mul(1_i64 << failures.saturating_sub(1).min(20)).min(MAX_BACKOFF_MS);
    base + jitter(base / 5)
}

/// Builds a token row: the refresh token sealed at `generation` under the row's key.
#[allow(clippy::too_many_arguments)]
pub fn new_token_record(
    secret_id: &str,
    owner_id: i64,
    provider: &ProviderRecord,
    key: (String, &DataKey, Vec<u8>),
    generation: u64,
    refresh_token: Option<&SecretValue>,
    scopes: Vec<String>,
    expires_in: Option<u64>,
) -> DomainResult<TokenRecord> {
    let (data_key_id, data_key, wrapped_key) = key;
    let subject = sealing::token_subject(secret_id);
    let refresh_blob = match refresh_token {
        Some(t) => Some(
            sealing::seal(data_key, owner_id, &subject, generation, REFRESH_TOKEN, t)
                .map_err(|e| DomainError::internal("sealing a refresh token", &e))?,
        ),
        None => None,
    };
    let now = clock::now();
    let issued_ms = now_ms();
    Ok(TokenRecord {
        secret_id: secret_id.to_owned(),
        provider_id: provider.id.clone(),
        data_key_id,
        wrapped_key,
        generation,
        refresh_at_ms: refresh_at(issued_ms, expires_in, refresh_blob.is_some()),
        refresh_token: refresh_blob,
        scopes,
        expires_at: expires_in.and_then(|s| i64::try_from(s).ok()).map(|s| now.saturating_add(s)),
        failures: 0,
        needs_reauth: None,
        last_refresh_at: Some(now),
        updated_at: now,
    })
}

/// Opens a token row's data key.
fn open_key(
    app: &App,
    token: &TokenRecord,
    owner_id: i64,
) -> Result<DataKey, sealing::SealingError> {
    sealing::open_key(
        &app.master,
        &token.data_key_id,
        owner_id,
        &sealing::token_subject(&token.secret_id),
        &token.wrapped_key,
    )
}

/// Opens a token row's refresh token (`None` when the provider gave none).
pub fn open_refresh_token(
    app: &App,
    token: &TokenRecord,
    owner_id: i64,
) -> Result<Option<SecretValue>, sealing::SealingError> {
    let Some(blob) = &token.refresh_token else { return Ok(None) };
    let key = open_key(app, token, owner_id)?;
    let subject = sealing::token_subject(&token.secret_id);
    sealing::open(&key, owner_id, &subject, token.generation, REFRESH_TOKEN, blob).map(Some)
}

/// How one refresh went.
#[derive(Debug)]
pub enum Outcome {
    /// The new version.
    Refreshed(Box<SecretRecord>),
    /// The provider refused: the secret now needs re-authorization (the hint).
    NeedsReauth(String),
    /// Try again later (why).
    Transient(String),
    /// Someone else has it, or it no longer exists.
    Skipped,
}

/// The task: runs until `shutdown` turns true.
pub async fn task(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let wait = match app.oauth.store.next_refresh_at().await {
            Ok(Some(at)) => {
                Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)).min(IDLE)
            }
            Ok(None) => IDLE,
            Err(e) => {
                error!(error = %e, "cannot read the OAuth refresh schedule");
                Duration::from_secs(1)
            }
        };
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = app.oauth.wake.notified() => continue,
                _ = shutdown.changed() => return,
            }
        }
        let due = match app.oauth.store.due_refreshes(now_ms(), BATCH).await {
            Ok(due) => due,
            Err(e) => {
                error!(error = %e, "cannot read the due OAuth refreshes");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for secret_id in due {
            if *shutdown.borrow() {
                return;
            }
            if let Err(f) = refresh_due(&app, &secret_id, false).await {
                error!(error = %f.message, "an OAuth refresh failed inside the broker");
            }
        }
    }
}

/// Claims and refreshes one token; `forced` takes it even when not due (`maestro oauth
/// refresh`).
pub async fn refresh_due(app: &App, secret_id: &str, forced: bool) -> DomainResult<Outcome> {
    let Some(view) = app.oauth.store.token(secret_id).await? else { return Ok(Outcome::Skipped) };
    if let Some(hint) = &view.token.needs_reauth {
        return Ok(Outcome::NeedsReauth(hint.clone()));
    }
    let now = now_ms();
    let due_by = if forced { i64::MAX } else { now };
    if !app
        .oauth
        .store
        .claim_refresh(secret_id, view.token.generation, due_by, now + LEASE_MS)
        .await?
    {
        return Ok(Outcome::Skipped);
    }
    let outcome = refresh_claimed(app, &view).await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(f) => {
            // A fault of ours (database, sealing): retry later, like a transient failure.
            Outcome::Transient(f.message)
        }
    };
    match &outcome {
        Outcome::Refreshed(record) => {
            info!(secret = %view.secret_name, provider = %view.provider_name, version = record.version, "OAuth token refreshed");
        }
        Outcome::NeedsReauth(hint) => {
            warn!(secret = %view.secret_name, provider = %view.provider_name, reason = %hint, "OAuth refresh refused: the secret needs re-authorization");
            let audit = AuditRecord {
                secret_id: Some(secret_id.to_owned()),
                secret_name: Some(view.secret_name.clone()),
                detail: Some(format!("refused; needs re-authorization: {hint}")),
                ..AuditRecord::new(view.owner_id, clock::now(), AuditAction::RefreshFailed)
            };
            if app
                .oauth
                .store
                .mark_needs_reauth(secret_id, view.token.generation, hint, &audit)
                .await?
            {
                // Same version, new state: agents fetch the material again and show the hint.
                if let Some(secret) =
                    app.store.secret_by_name(view.owner_id, &view.secret_name).await?
                {
                    for session in app.store.secret_active_in(secret_id).await? {
                        app.hub.publish(
                            &session,
                            AgentEvent::Updated { secret: material::active_secret(&secret) },
                        );
                    }
                }
            }
        }
        Outcome::Transient(why) => {
            let failures = view.token.failures.saturating_add(1);
            let delay = backoff_ms(failures);
            warn!(secret = %view.secret_name, provider = %view.provider_name, failures, retry_ms = delay, error = %why, "OAuth refresh failed; retrying");
            let audit = (failures == 1).then(|| AuditRecord {
                secret_id: Some(secret_id.to_owned()),
                secret_name: Some(view.secret_name.clone()),
                detail: Some(format!("transient: {why}; retrying with backoff")),
                ..AuditRecord::new(view.owner_id, clock::now(), AuditAction::RefreshFailed)
            });
            app.oauth
                .store
                .reschedule_refresh(
                    secret_id,
                    view.token.generation,
                    now_ms() + delay,
                    failures,
                    audit.as_ref(),
                )
                .await?;
        }
        Outcome::Skipped => {}
    }
    Ok(outcome)
}

/// The user-facing hint of a refusal.
fn reauth_hint(secret: &str, why: &str) -> String {
    format!("{why}; run `maestro oauth reconnect {secret}`")
}

async fn refresh_claimed(app: &App, view: &TokenView) -> DomainResult<Outcome> {
    let token = &view.token;
    let Some(provider) = app.oauth.store.provider_by_id(&token.provider_id).await? else {
        return Ok(Outcome::Skipped);
    };
    let refresh_token = match open_refresh_token(app, token, view.owner_id) {
        Ok(Some(t)) => t,
        Ok(None) => {
            let when = token.expires_at.map(clock::rfc3339).unwrap_or_else(|| "now".to_owned());
            return Ok(Outcome::NeedsReauth(reauth_hint(
                &view.secret_name,
                &format!(
                    "the access token expired at {when} and {} gave no refresh token",
                    provider.name
                ),
            )));
        }
        Err(_) => {
            return Ok(Outcome::NeedsReauth(reauth_hint(
                &view.secret_name,
                "the stored refresh token failed its integrity check",
            )));
        }
    };
    let client_secret = providers::client_secret(&app.master, &provider)?;
    let client = Client {
        http: &app.oauth.http,
        client_id: &provider.client_id,
        client_secret: &client_secret,
    };
    let grant = match client.refresh(&provider.token_url, &refresh_token).await {
        Ok(g) => g,
        Err(e) if e.is_transient() => return Ok(Outcome::Transient(e.to_string())),
        Err(e) => {
            return Ok(Outcome::NeedsReauth(reauth_hint(
                &view.secret_name,
                &format!("{} refused to refresh the token: {e}", provider.name),
            )));
        }
    };
    store_refresh(app, view, &provider, grant, refresh_token).await
}

/// Stores a refreshed grant as a new version, retrying when the secret changed meanwhile.
async fn store_refresh(
    app: &App,
    view: &TokenView,
    provider: &ProviderRecord,
    grant: Grant,
    old_refresh_token: SecretValue,
) -> DomainResult<Outcome> {
    let token = &view.token;
    // A provider that does not rotate refresh tokens keeps the old one valid.
    let refresh_token = grant.refresh_token.unwrap_or(old_refresh_token);
    let scopes = grant.scopes.unwrap_or_else(|| token.scopes.clone());
    let key = open_key(app, token, view.owner_id)
        .map_err(|e| DomainError::internal("opening a token key", &e))?;
    let generation = token.generation + 1;
    let record = new_token_record(
        &token.secret_id,
        view.owner_id,
        provider,
        (token.data_key_id.clone(), &key, token.wrapped_key.clone()),
        generation,
        Some(&refresh_token),
        scopes,
        grant.expires_in,
    )?;
    for attempt in 1..=STORE_ATTEMPTS {
        let _serialized = app.activation_lock.lock().await;
        let _across_brokers = app.store.lock_owner(view.owner_id).await?;
        let Some(secret) = app.store.secret_by_name(view.owner_id, &view.secret_name).await? else {
            return Ok(Outcome::Skipped);
        };
        if secret.id != token.secret_id {
            return Ok(Outcome::Skipped);
        }
        let current = if secret.kind == provider.kind {
            Some(material::open_fields(app, &secret, None).await?)
        } else {
            None
        };
        let fields = token_fields(provider, grant.access_token.clone(), current)?;
        let now = clock::now();
        let next = SecretRecord {
            kind: provider.kind.clone(),
            version: secret.version + 1,
            updated_at: now,
            // A refreshed token is a new value.
            life: crate::store::Lifecycle { value_changed_at: now, ..secret.life.clone() },
            ..secret.clone()
        };
        let sealed = material::seal_version(app, next, &fields)?;
        let audit = AuditRecord {
            secret_id: Some(secret.id.clone()),
            secret_name: Some(secret.name.clone()),
            detail: Some(format!(
                "version {}, token from provider {}{}",
                sealed.record.version,
                provider.name,
                record
                    .expires_at
                    .map(|e| format!(", expires at {}", clock::rfc3339(e)))
                    .unwrap_or_default()
            )),
            ..AuditRecord::new(view.owner_id, now, AuditAction::Refreshed)
        };
        match app
            .oauth
            .store
            .replace_oauth_secret(
                secret.version,
                &sealed.record,
                &sealed.fields,
                token.generation,
                &record,
                None,
                &audit,
            )
            .await
        {
            Ok(()) => {
                for session in app.store.secret_active_in(&secret.id).await? {
                    app.hub.publish(
                        &session,
                        AgentEvent::Updated { secret: material::active_secret(&sealed.record) },
                    );
                }
                return Ok(Outcome::Refreshed(Box::new(sealed.record)));
            }
            Err(StoreError::Changed { what: "secret" }) if attempt < STORE_ATTEMPTS => continue,
            Err(StoreError::Changed { .. }) => {
                return Ok(Outcome::Transient(
                    "the secret changed while it was refreshed".to_owned(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Outcome::Transient("the secret kept changing while it was refreshed".to_owned()))
}

/// Refreshes the token of `user`'s OAuth secret `name` now (`maestro oauth refresh`).
pub async fn refresh_named(app: &App, user: &UserRecord, name: &str) -> DomainResult<SecretMeta> {
    let (secret, view) = super::authorize::oauth_secret(app, user, name).await?;
    if view.token.refresh_token.is_none() && view.token.needs_reauth.is_none() {
        return Err(DomainError::bad_request(format!(
            "{} has no refresh token: {} issued a token that is not refreshed (it does not expire, or the provider gives no refresh tokens); `maestro oauth reconnect {}` gets a new one",
            secret.name, view.provider_name, secret.name
        )));
    }
    refresh_now(app, &secret.id, &secret.name).await
}

/// Refreshes one secret's token now.
pub async fn refresh_now(app: &App, secret_id: &str, name: &str) -> DomainResult<SecretMeta> {
    match refresh_due(app, secret_id, true).await? {
        Outcome::Refreshed(record) => meta(app, &record).await,
        Outcome::NeedsReauth(hint) => Err(DomainError::new(
            ErrorCode::OAuth,
            format!("{name} needs re-authorization: {hint}"),
        )),
        Outcome::Transient(why) => Err(DomainError::upstream(
            ErrorCode::OAuth,
            format!(
                "the refresh of {name} failed ({why}); the broker retries on its own with backoff"
            ),
        )),
        Outcome::Skipped => Err(DomainError::new(
            ErrorCode::Conflict,
            format!(
                "{name} is being refreshed right now, or has no token that can be refreshed; retry in a moment"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_two_thirds_with_jitter_and_a_floor() {
        for _ in 0..50 {
            let at = refresh_at(0, Some(3600), true).unwrap();
            assert!((3600 * 2 / 3 * 1000 - 360_000..=3600 * 2 / 3 * 1000).contains(&at), "{at}");
            let short = refresh_at(0, Some(3), true).unwrap();
            assert!((1700..=2000).contains(&short), "{short}");
        }
        assert_eq!(refresh_at(0, Some(1), true), Some(1000));
        assert_eq!(refresh_at(5, None, true), None);
        assert_eq!(refresh_at(0, Some(60), false), Some(60_000));
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert!((1000..=1200).contains(&backoff_ms(1)));
        assert!((4000..=4800).contains(&backoff_ms(3)));
        assert!((300_000..=360_000).contains(&backoff_ms(40)));
    }
}
