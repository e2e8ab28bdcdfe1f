//! The authorization code flow: starting an authorization (`connect`, `reconnect`), what
//! `connect` polls, and the callback that exchanges the code and stores the secret.
//!
//! Every check a user can fail (unknown provider, taken name, scopes beyond the provider's
//! allowed set) happens before an authorization URL exists. The `state` is random, single-use
//! (the authorization moves from `pending` to `exchanging` in one guarded update), expires with
//! its authorization after 10 minutes, and is stored only as a hash. The PKCE verifier stays in
//! memory. A wrong, reused or expired state, or an error from the provider, ends the callback
//! with a page that says so, and stores nothing.

use maestro_wire::SecretValue;
use maestro_wire::agent_api::AgentEvent;
use maestro_wire::api::{AuditAction, ErrorCode};
use maestro_wire::catalog::seal::Exposure;
use maestro_wire::oauth::{
    self as wire, AUTHORIZATION_TTL_SECS, AuthorizationStarted, AuthorizationState,
    AuthorizationStatus, Connect, Reconnect,
};
use reqwest::Url;
use tracing::{info, warn};

use super::endpoint::{Client, EndpointError, Grant, clean_code, clean_description};
use super::fields::token_fields;
use super::providers::{self, scope_failure};
use super::refresh::new_token_record;
use super::store::{PendingRecord, PendingStatus, ProviderRecord, TokenView};
use super::{pkce, sealing};
use crate::app::App;
use crate::clock;
use crate::domain::material;
use crate::domain::meta::meta;
use crate::domain::teams::{self, Action, Owner};
use crate::domain::{DomainError, DomainResult};
use crate::store::{AuditRecord, SecretRecord, StoreError, UserRecord};
use crate::tokens;

/// The largest callback query read.
const MAX_CALLBACK_QUERY: usize = 16 * 1024;

fn wire_state(s: PendingStatus) -> AuthorizationState {
    match s {
        PendingStatus::Pending => AuthorizationState::Pending,
        PendingStatus::Exchanging => AuthorizationState::Exchanging,
        PendingStatus::Done => AuthorizationState::Done,
        PendingStatus::Failed => AuthorizationState::Failed,
        PendingStatus::Expired => AuthorizationState::Expired,
        PendingStatus::Cancelled => AuthorizationState::Cancelled,
    }
}

/// A provider the user may connect through: their own, or a team's (`team/NAME`) where their
/// role may activate the team's secrets; with its owner.
async fn owned_provider(
    app: &App,
    user: &UserRecord,
    name: &str,
) -> DomainResult<(Owner, ProviderRecord)> {
    let unknown = || {
        DomainError::not_found(format!(
            "no OAuth provider named {name}; `maestro oauth providers ls` lists yours"
        ))
    };
    let (owner, bare) = teams::resolve_provider(app, user, name, Action::Activate).await?;
    if !wire::is_valid_provider_name(bare) {
        return Err(unknown());
    }
    let provider =
        app.oauth.store.provider_by_name(owner.principal.id, bare).await?.ok_or_else(unknown)?;
    Ok((owner, provider))
}

/// The scopes to ask for: the requested ones (all allowed when none), checked against the
/// provider's allowed set, plus the preset's implied ones.
fn scopes_for(provider: &ProviderRecord, requested: &[String]) -> DomainResult<Vec<String>> {
    let mut scopes = wire::check_scopes(requested).map_err(scope_failure)?;
    if scopes.is_empty() {
        scopes = provider.scopes.clone();
    }
    wire::check_allowed(&provider.name, &provider.scopes, &scopes).map_err(scope_failure)?;
    if let Some(preset) = wire::preset(&provider.preset) {
        for implied in preset.implied_scopes {
            if !scopes.iter().any(|s| s == implied) {
                scopes.push((*implied).to_owned());
            }
        }
    }
    Ok(scopes)
}

/// `POST /v1/oauth/connect`.
pub async fn connect(
    app: &App,
    user: &UserRecord,
    body: Connect,
) -> DomainResult<AuthorizationStarted> {
    let (provider_owner, provider) = owned_provider(app, user, &body.provider).await?;
    // The secret is the member's own (their account, through the team's provider), or the
    // team's (`team/NAME`: a shared account, admins only, through the team's own provider).
    let (owner, bare) = teams::resolve(app, user, &body.name, Action::WriteSecrets).await?;
    if owner.team.is_some() && owner.principal.id != provider_owner.principal.id {
        return Err(DomainError::bad_request(format!(
            "a team's secret connects through one of the team's own providers; use {}/PROVIDER",
            owner.team_name().unwrap_or_default()
        )));
    }
    let user = &owner.principal;
    if app.store.secret_by_name(user.id, bare).await?.is_some() {
        return Err(DomainError::new(
            ErrorCode::AlreadyExists,
            format!(
                "secret {0} already exists; `maestro oauth reconnect {0}` authorizes it again, or choose another --name",
                body.name
            ),
        ));
    }
    let scopes = scopes_for(&provider, &body.scopes)?;
    start(app, user, &provider, bare, scopes, None).await
}

/// The OAuth state of a user's secret, or a failure that says it is not an OAuth secret.
pub async fn oauth_secret(
    app: &App,
    user: &UserRecord,
    name: &str,
) -> DomainResult<(SecretRecord, TokenView)> {
    let (owner, bare) = teams::resolve(app, user, name, Action::WriteSecrets).await?;
    let secret = app.store.secret_by_name(owner.principal.id, bare).await?.ok_or_else(|| {
        DomainError::not_found(format!("no secret named {name}; `maestro secrets ls` lists yours"))
    })?;
    let view = app.oauth.store.token(&secret.id).await?.ok_or_else(|| {
        DomainError::bad_request(format!(
            "{name} was not made by an OAuth connection; connect one with `maestro oauth connect PROVIDER --name NAME`"
        ))
    })?;
    Ok((secret, view))
}

/// `POST /v1/oauth/reconnect`.
pub async fn reconnect(
    app: &App,
    user: &UserRecord,
    body: Reconnect,
) -> DomainResult<AuthorizationStarted> {
    let (secret, view) = oauth_secret(app, user, &body.name).await?;
    // A team's secret is authorized again for the team (its admins poll it).
    let owner = UserRecord { id: secret.owner_id, name: user.name.clone() };
    let user = &owner;
    let provider =
        app.oauth.store.provider_by_id(&view.token.provider_id).await?.ok_or_else(|| {
            DomainError::internal("reconnecting", &"a token row without its provider")
        })?;
    let requested = if body.scopes.is_empty() {
        // The scopes granted last time, as far as the provider still allows them.
        view.token.scopes.iter().filter(|s| provider.scopes.contains(s)).cloned().collect()
    } else {
        body.scopes
    };
    let scopes = scopes_for(&provider, &requested)?;
    start(app, user, &provider, &secret.name, scopes, Some(secret.id)).await
}

/// Makes the state, verifier and authorization URL, and records the authorization.
async fn start(
    app: &App,
    user: &UserRecord,
    provider: &ProviderRecord,
    secret_name: &str,
    scopes: Vec<String>,
    reconnect: Option<String>,
) -> DomainResult<AuthorizationStarted> {
    let random = |e: tokens::RandomError| DomainError::internal("starting an authorization", &e);
    let state = pkce::new_state().map_err(random)?;
    let verifier = pkce::new_verifier().map_err(random)?;
    let id = tokens::random_id::<16>().map_err(random)?;
    let now = clock::now();
    let expires_at = now + AUTHORIZATION_TTL_SECS as i64;
    let mut url = Url::parse(&provider.auth_url)
        .map_err(|e| DomainError::internal("building the authorization URL", &e))?;
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &provider.client_id)
            .append_pair("redirect_uri", &app.oauth.redirect_uri);
        if !scopes.is_empty() {
            query.append_pair("scope", &scopes.join(" "));
        }
        query
            .append_pair("state", state.expose())
            .append_pair("code_challenge", &pkce::challenge(&verifier))
            .append_pair("code_challenge_method", pkce::METHOD);
        if let Some(preset) = wire::preset(&provider.preset) {
            for (k, v) in preset.extra_auth_params {
                query.append_pair(k, v);
            }
        }
    }
    let state_hash = pkce::state_hash(state.expose());
    let pending = PendingRecord {
        id: id.clone(),
        state_hash: state_hash.clone(),
        owner_id: user.id,
        provider_id: provider.id.clone(),
        provider_name: provider.name.clone(),
        secret_name: secret_name.to_owned(),
        reconnect_secret_id: reconnect,
        scopes: scopes.clone(),
        status: PendingStatus::Pending,
        message: None,
        created_at: now,
        expires_at,
        finished_at: None,
    };
    app.oauth.store.insert_pending(&pending).await?;
    app.oauth.keep_verifier(state_hash, expires_at, verifier);
    info!(user = %user.name, provider = %provider.name, secret = %secret_name, authorization = %id, "OAuth authorization started");
    Ok(AuthorizationStarted {
        id,
        provider: provider.name.clone(),
        secret_name: secret_name.to_owned(),
        scopes,
        authorization_url: url.into(),
        redirect_uri: app.oauth.redirect_uri.clone(),
        expires_at: clock::rfc3339(expires_at),
    })
}

async fn owned_pending(app: &App, user: &UserRecord, id: &str) -> DomainResult<PendingRecord> {
    let unknown = || {
        DomainError::not_found(format!(
            "no authorization {id}; start one with `maestro oauth connect`"
        ))
    };
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(unknown());
    }
    match app.oauth.store.pending_by_id(id).await? {
        Some(p) if teams::may_act_for(app, user, p.owner_id, Action::WriteSecrets).await? => Ok(p),
        _ => Err(unknown()),
    }
}

/// Marks an open authorization past its expiry as expired; returns it as it is now.
async fn settle_expiry(app: &App, mut p: PendingRecord) -> DomainResult<PendingRecord> {
    let now = clock::now();
    if matches!(p.status, PendingStatus::Pending | PendingStatus::Exchanging) && p.expires_at <= now
    {
        let message = format!(
            "the authorization expired at {} without a callback (they last 10 minutes); nothing was stored: run the command again",
            clock::rfc3339(p.expires_at)
        );
        if app
            .oauth
            .store
            .move_pending(&p.id, p.status, PendingStatus::Expired, Some(&message), now)
            .await?
        {
            app.oauth.forget_verifier(&p.state_hash);
        }
        p = app.oauth.store.pending_by_id(&p.id).await?.unwrap_or(p);
    }
    Ok(p)
}

async fn status_of(app: &App, p: PendingRecord) -> DomainResult<AuthorizationStatus> {
    let secret = if p.status == PendingStatus::Done {
        match app.store.secret_by_name(p.owner_id, &p.secret_name).await? {
            Some(s) => Some(meta(app, &s).await?),
            None => None,
        }
    } else {
        None
    };
    Ok(AuthorizationStatus {
        id: p.id,
        provider: p.provider_name,
        secret_name: p.secret_name,
        state: wire_state(p.status),
        scopes: p.scopes,
        message: p.message,
        expires_at: clock::rfc3339(p.expires_at),
        secret,
    })
}

/// `GET /v1/oauth/authorizations/{id}`.
pub async fn status(app: &App, user: &UserRecord, id: &str) -> DomainResult<AuthorizationStatus> {
    let p = owned_pending(app, user, id).await?;
    let p = settle_expiry(app, p).await?;
    status_of(app, p).await
}

/// `POST /v1/oauth/authorizations/{id}/cancel`: a pending authorization can no longer complete.
pub async fn cancel(app: &App, user: &UserRecord, id: &str) -> DomainResult<AuthorizationStatus> {
    let p = settle_expiry(app, owned_pending(app, user, id).await?).await?;
    if p.status == PendingStatus::Pending {
        let message = "cancelled: the command stopped waiting before the authorization completed; nothing was stored";
        if app
            .oauth
            .store
            .move_pending(
                &p.id,
                PendingStatus::Pending,
                PendingStatus::Cancelled,
                Some(message),
                clock::now(),
            )
            .await?
        {
            app.oauth.forget_verifier(&p.state_hash);
        }
    }
    let p = app.oauth.store.pending_by_id(id).await?.unwrap_or(p);
    status_of(app, p).await
}

/// How a callback ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackResult {
    /// The secret is stored.
    Authorized,
    /// The callback or the provider's answer was refused.
    Refused,
    /// A fault of the broker.
    Failed,
}

/// What the callback answers: how it ended and one line for the page.
#[derive(Debug)]
pub struct CallbackOutcome {
    pub result: CallbackResult,
    pub message: String,
}

fn refused(message: impl Into<String>) -> CallbackOutcome {
    CallbackOutcome { result: CallbackResult::Refused, message: message.into() }
}

/// The parameters of a callback. `code` is a credential (short-lived, single-use): kept in a
/// [`SecretValue`].
#[derive(Default)]
struct CallbackQuery {
    state: Option<SecretValue>,
    code: Option<SecretValue>,
    error: Option<String>,
    error_description: Option<String>,
}

fn parse_query(query: &str) -> CallbackQuery {
    let mut out = CallbackQuery::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "state" => out.state = Some(SecretValue::new(value.into_owned())),
            "code" => out.code = Some(SecretValue::new(value.into_owned())),
            "error" => out.error = Some(value.into_owned()),
            "error_description" => out.error_description = Some(value.into_owned()),
            _ => {}
        }
    }
    out
}

/// `GET /v1/oauth/callback`: never fails as an API call; the outcome is the page.
pub async fn callback(app: &App, query: Option<&str>) -> CallbackOutcome {
    let query = query.unwrap_or("");
    if query.len() > MAX_CALLBACK_QUERY {
        return refused("The callback's query is too long; this is not an authorization answer.");
    }
    let q = parse_query(query);
    let Some(state) = q.state.as_ref().filter(|s| !s.is_empty()) else {
        return refused(
            "This callback has no state parameter, so it belongs to no authorization. Open the URL that `maestro oauth connect` printed.",
        );
    };
    let state_hash = pkce::state_hash(state.expose());
    let pending = match app.oauth.store.pending_by_state(&state_hash).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            info!("OAuth callback with an unknown state refused");
            return refused(
                "This authorization is unknown: its state matches none that this broker started (a wrong, forged or mistyped link). Nothing was stored; run `maestro oauth connect` again.",
            );
        }
        Err(e) => return internal(&e),
    };
    let now = clock::now();
    if pending.status != PendingStatus::Pending {
        info!(authorization = %pending.id, status = pending.status.as_str(), "OAuth callback for a used state refused");
        return refused(format!(
            "This authorization was already used (it is {}); each authorization URL works once. Nothing was stored; run `maestro oauth connect` again for a new one.",
            pending.status.as_str()
        ));
    }
    if pending.expires_at <= now {
        let message = format!(
            "the authorization expired at {} (they last 10 minutes); nothing was stored: run the command again",
            clock::rfc3339(pending.expires_at)
        );
        let _ = app
            .oauth
            .store
            .move_pending(
                &pending.id,
                PendingStatus::Pending,
                PendingStatus::Expired,
                Some(&message),
                now,
            )
            .await;
        app.oauth.forget_verifier(&state_hash);
        return refused(format!("This authorization {message}."));
    }
    match app
        .oauth
        .store
        .move_pending(&pending.id, PendingStatus::Pending, PendingStatus::Exchanging, None, now)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return refused(
                "This authorization was already used; each authorization URL works once. Nothing was stored; run `maestro oauth connect` again.",
            );
        }
        Err(e) => return internal(&e),
    }
    let verifier = app.oauth.take_verifier(&state_hash);
    let outcome = complete(app, &pending, &q, verifier).await;
    if let Err(message) = &outcome {
        if let Err(e) = app
            .oauth
            .store
            .move_pending(
                &pending.id,
                PendingStatus::Exchanging,
                PendingStatus::Failed,
                Some(message),
                clock::now(),
            )
            .await
        {
            warn!(error = %e, "cannot record a failed OAuth authorization");
        }
        warn!(authorization = %pending.id, secret = %pending.secret_name, reason = %message, "OAuth authorization failed");
    }
    match outcome {
        Ok(message) => CallbackOutcome { result: CallbackResult::Authorized, message },
        Err(message) => refused(sentence(&message)),
    }
}

/// A reason as a sentence for the page: capital first letter, full stop.
fn sentence(reason: &str) -> String {
    let mut chars = reason.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => String::new(),
    }
}

fn internal(e: &dyn std::fmt::Display) -> CallbackOutcome {
    tracing::error!(cause = %e, "OAuth callback failed");
    CallbackOutcome {
        result: CallbackResult::Failed,
        message: "The broker failed while handling this callback; see its log, then run `maestro oauth connect` again.".to_owned(),
    }
}

/// Exchanges the code and stores the secret; `Err` is the one-line reason (lower case first).
async fn complete(
    app: &App,
    pending: &PendingRecord,
    q: &CallbackQuery,
    verifier: Option<SecretValue>,
) -> Result<String, String> {
    let again = if pending.reconnect_secret_id.is_some() {
        format!("`maestro oauth reconnect {}`", pending.secret_name)
    } else {
        "`maestro oauth connect`".to_owned()
    };
    if let Some(error) = &q.error {
        let code = clean_code(error);
        let described = q
            .error_description
            .as_deref()
            .and_then(clean_description)
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        let hint = if code == "access_denied" { " (the authorization was denied)" } else { "" };
        return Err(format!(
            "the provider {} refused the authorization: {code}{hint}{described}; nothing was stored. Run {again} to try again",
            pending.provider_name
        ));
    }
    let Some(code) = q.code.as_ref().filter(|c| !c.is_empty()) else {
        return Err(format!(
            "the callback carries neither a code nor an error; nothing was stored. Run {again} again"
        ));
    };
    let Some(verifier) = verifier else {
        return Err(format!(
            "this broker restarted since the authorization began, and its PKCE verifier lived only in memory; nothing was stored. Run {again} again"
        ));
    };
    let store_failed = |step: &str, e: &dyn std::fmt::Display| {
        tracing::error!(cause = %e, "{step}");
        format!(
            "the broker failed while {step}; nothing was stored (see its log). Run {again} again"
        )
    };
    let provider = match app.oauth.store.provider_by_id(&pending.provider_id).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return Err(format!(
                "the provider {} is gone; nothing was stored",
                pending.provider_name
            ));
        }
        Err(e) => return Err(store_failed("reading the provider", &e)),
    };
    let client_secret = providers::client_secret(&app.master, &provider).map_err(|f| f.message)?;
    let client = Client {
        http: &app.oauth.http,
        client_id: &provider.client_id,
        client_secret: &client_secret,
    };
    let grant = client
        .exchange_code(&provider.token_url, code, &app.oauth.redirect_uri, &verifier)
        .await
        .map_err(|e: EndpointError| {
            format!(
                "the code exchange at {} failed: {e}; nothing was stored. Run {again} again",
                provider.token_url
            )
        })?;
    let granted = grant.scopes.clone().unwrap_or_else(|| pending.scopes.clone());
    let result = match &pending.reconnect_secret_id {
        None => store_new(app, pending, &provider, grant).await,
        Some(secret_id) => store_reconnected(app, pending, &provider, secret_id, grant).await,
    };
    match result {
        Ok(version) => {
            app.oauth.wake.notify_one();
            info!(secret = %pending.secret_name, provider = %provider.name, version, "OAuth connection stored");
            Ok(format!(
                "Maestro stored {} (provider {}, version {version}, scopes: {}). You can close this page.",
                pending.secret_name,
                provider.name,
                if granted.is_empty() { "none".to_owned() } else { granted.join(" ") }
            ))
        }
        Err(StepError::Taken) => Err(format!(
            "a secret named {} was created while the authorization ran; nothing was stored. Delete it or choose another --name, then run {again}",
            pending.secret_name
        )),
        Err(StepError::Gone) => Err(format!(
            "the secret {} was deleted while the authorization ran; nothing was stored. Use `maestro oauth connect` to make it again",
            pending.secret_name
        )),
        Err(StepError::Failed(f)) => Err(store_failed("storing the secret", &f.message)),
    }
}

/// Why storing an authorized secret failed.
enum StepError {
    Taken,
    Gone,
    Failed(DomainError),
}

impl From<DomainError> for StepError {
    fn from(f: DomainError) -> Self {
        Self::Failed(f)
    }
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists { .. } => Self::Taken,
            other => Self::Failed(other.into()),
        }
    }
}

/// Stores a new secret from a grant; its version.
async fn store_new(
    app: &App,
    pending: &PendingRecord,
    provider: &ProviderRecord,
    grant: Grant,
) -> Result<u64, StepError> {
    let now = clock::now();
    let id = tokens::random_id::<16>().map_err(|e| DomainError::internal("making an id", &e))?;
    let scopes = grant.scopes.clone().unwrap_or_else(|| pending.scopes.clone());
    let record = SecretRecord {
        id: id.clone(),
        owner_id: pending.owner_id,
        name: pending.secret_name.clone(),
        kind: provider.kind.clone(),
        description: Some(format!("OAuth connection to provider {}", provider.name)),
        tags: Vec::new(),
        version: 1,
        field_names: Vec::new(),
        data_key_id: String::new(),
        wrapped_key: Vec::new(),
        created_at: now,
        updated_at: now,
        // Made plain, as every new secret; `maestro secrets edit --exposure sealed` seals it.
        exposure: Exposure::Plain,
        hosts: Vec::new(),
        compromised_at: None,
        life: crate::store::Lifecycle { value_changed_at: now, ..Default::default() },
    };
    let fields = token_fields(provider, grant.access_token, None)?;
    let sealed = material::seal_version(app, record, &fields)?;
    let (key_id, key, wrapped) =
        sealing::new_key(&app.master, pending.owner_id, &sealing::token_subject(&id))
            .map_err(|e| DomainError::internal("sealing a refresh token", &e))?;
    let token = new_token_record(
        &id,
        pending.owner_id,
        provider,
        (key_id, &key, wrapped),
        1,
        grant.refresh_token.as_ref(),
        scopes.clone(),
        grant.expires_in,
    )?;
    let audit = AuditRecord {
        secret_id: Some(id),
        secret_name: Some(pending.secret_name.clone()),
        detail: Some(format!(
            "version 1, kind {}, OAuth connection to provider {}, scopes: {}",
            provider.kind,
            provider.name,
            scopes.join(" ")
        )),
        ..AuditRecord::new(pending.owner_id, now, AuditAction::Created)
    };
    app.oauth
        .store
        .insert_oauth_secret(&sealed.record, &sealed.fields, &token, &pending.id, &audit)
        .await?;
    Ok(1)
}

/// Replaces the tokens of the secret a reconnect names; its new version.
async fn store_reconnected(
    app: &App,
    pending: &PendingRecord,
    provider: &ProviderRecord,
    secret_id: &str,
    grant: Grant,
) -> Result<u64, StepError> {
    let _serialized = app.activation_lock.lock().await;
    let _across_brokers = app.store.lock_owner(pending.owner_id).await?;
    let secret = app
        .store
        .secret_by_name(pending.owner_id, &pending.secret_name)
        .await?
        .filter(|s| s.id == secret_id)
        .ok_or(StepError::Gone)?;
    let view = app.oauth.store.token(secret_id).await?.ok_or(StepError::Gone)?;
    let current = if secret.kind == provider.kind {
        Some(material::open_fields(app, &secret, None).await?)
    } else {
        None
    };
    let fields = token_fields(provider, grant.access_token, current)?;
    let now = clock::now();
    let record = SecretRecord {
        kind: provider.kind.clone(),
        version: secret.version + 1,
        updated_at: now,
        // A new grant is a new value: a compromised mark is cleared.
        compromised_at: None,
        life: crate::store::Lifecycle { value_changed_at: now, ..secret.life.clone() },
        ..secret.clone()
    };
    let sealed = material::seal_version(app, record, &fields)?;
    // The row keeps its data key; the old refresh token is replaced (whatever was left of the
    // old grant, the provider revokes or lets expire).
    let key = sealing::open_key(
        &app.master,
        &view.token.data_key_id,
        view.owner_id,
        &sealing::token_subject(secret_id),
        &view.token.wrapped_key,
    )
    .map_err(|e| DomainError::internal("opening a token key", &e))?;
    let scopes = grant.scopes.clone().unwrap_or_else(|| pending.scopes.clone());
    let generation = view.token.generation + 1;
    let token = new_token_record(
        secret_id,
        view.owner_id,
        provider,
        (view.token.data_key_id.clone(), &key, view.token.wrapped_key.clone()),
        generation,
        grant.refresh_token.as_ref(),
        scopes.clone(),
        grant.expires_in,
    )?;
    let audit = AuditRecord {
        secret_id: Some(secret.id.clone()),
        secret_name: Some(secret.name.clone()),
        detail: Some(format!(
            "version {}, reconnected to OAuth provider {}, scopes: {}",
            sealed.record.version,
            provider.name,
            scopes.join(" ")
        )),
        ..AuditRecord::new(pending.owner_id, now, AuditAction::Edited)
    };
    app.oauth
        .store
        .replace_oauth_secret(
            secret.version,
            &sealed.record,
            &sealed.fields,
            view.token.generation,
            &token,
            Some(&pending.id),
            &audit,
        )
        .await?;
    for session in app.store.secret_active_in(secret_id).await? {
        app.hub.publish(
            &session,
            AgentEvent::Updated { secret: material::active_secret(&sealed.record) },
        );
    }
    Ok(sealed.record.version)
}
