//! Registering providers: checking what the user sent against the preset, resolving endpoints,
//! scopes and the kind tokens become, sealing the client secret; and what users see of one.

use maestro_wire::SecretValue;
use maestro_wire::api::ErrorCode;
use maestro_wire::names::is_valid_variable_name;
use maestro_wire::oauth::{
    self as wire, AddProvider, DEFAULT_GENERIC_VARIABLE, EditProvider, MAX_CLIENT_ID_BYTES,
    MAX_CLIENT_SECRET_BYTES, MAX_URL_BYTES, Preset, ProviderInfo, ProviderRemoved, ScopeError,
};
use reqwest::Url;
use tracing::info;

use super::OAuth;
use super::sealing::{self, CLIENT_SECRET};
use super::store::{ProviderRecord, ProviderRemoval};
use crate::app::App;
use crate::clock;
use crate::domain::teams::{self, Action, Owner};
use crate::domain::{DomainError, DomainResult};
use crate::seal::MasterKey;
use crate::store::{StoreError, UserRecord};
use crate::tokens;

/// A scope error as the API answers it.
pub fn scope_failure(e: ScopeError) -> DomainError {
    let code = match e {
        ScopeError::TooMany(_) => ErrorCode::TooMany,
        _ => ErrorCode::BadRequest,
    };
    DomainError::new(code, e.to_string())
}

/// Whether a host is this machine: test servers and local providers may use plain HTTP.
fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else { return false };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// Checks a provider endpoint: an absolute `https` URL (plain `http` only on a loopback
/// address), without credentials or fragment, of bounded length.
pub fn check_url(flag: &str, text: &str) -> DomainResult<Url> {
    let bad = |why: &str| {
        DomainError::bad_request(format!("--{flag} {why}; give the provider's https:// endpoint"))
    };
    if text.len() > MAX_URL_BYTES {
        return Err(bad(&format!("is longer than {MAX_URL_BYTES} bytes")));
    }
    let url = Url::parse(text).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => return Err(bad("uses plain http, which is allowed only for loopback addresses")),
        _ => return Err(bad("is not an https:// URL")),
    }
    if url.host().is_none() {
        return Err(bad("names no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("holds credentials; give them as --client-id and --client-secret-file"));
    }
    if url.fragment().is_some() {
        return Err(bad("has a #fragment"));
    }
    Ok(url)
}

/// Checks a client id: printable ASCII without spaces, 1 to 256 bytes.
fn check_client_id(id: &str) -> DomainResult<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_CLIENT_ID_BYTES
        && id.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(DomainError::bad_request(format!(
            "the client id must be 1 to {MAX_CLIENT_ID_BYTES} printable characters without spaces; copy it from the provider's OAuth app settings"
        )))
    }
}

/// Checks a client secret without quoting it.
fn check_client_secret(secret: &SecretValue) -> DomainResult<()> {
    if secret.is_empty() {
        return Err(DomainError::bad_request(
            "the client secret is empty; --client-secret-file must hold the OAuth app's client secret",
        ));
    }
    if secret.len() > MAX_CLIENT_SECRET_BYTES {
        return Err(DomainError::new(
            ErrorCode::TooLarge,
            format!("the client secret is longer than {MAX_CLIENT_SECRET_BYTES} bytes"),
        ));
    }
    if secret.expose().chars().any(char::is_control) {
        return Err(DomainError::bad_request(
            "the client secret holds control characters (a line break?); the file must hold it on one line",
        ));
    }
    Ok(())
}

/// The endpoints: the preset's, or the ones given (required for `custom`).
fn endpoints(
    preset: &Preset,
    body: &AddProvider,
) -> DomainResult<(String, String, Option<String>)> {
    let (auth, token) = match (&body.auth_url, &body.token_url, preset.auth_url, preset.token_url) {
        (Some(a), Some(t), _, _) => (a.clone(), t.clone()),
        (None, None, Some(a), Some(t)) => (a.to_owned(), t.to_owned()),
        (None, None, _, _) => {
            return Err(DomainError::bad_request(
                "--preset custom needs --auth-url and --token-url (and --revoke-url if the provider has an RFC 7009 endpoint)",
            ));
        }
        _ => {
            return Err(DomainError::bad_request(
                "give --auth-url and --token-url together (both endpoints of the same server)",
            ));
        }
    };
    check_url("auth-url", &auth)?;
    check_url("token-url", &token)?;
    let revoke = match &body.revoke_url {
        Some(r) => {
            check_url("revoke-url", r)?;
            Some(r.clone())
        }
        // A preset's revocation endpoint belongs to its own server, not to an override's.
        None if body.auth_url.is_none() => preset.revoke_url.map(str::to_owned),
        None => None,
    };
    Ok((auth, token, revoke))
}

/// The kind tokens become and the field that holds them.
fn kind_and_field(preset: &Preset, body: &AddProvider) -> DomainResult<(String, String)> {
    let kind = match (&body.kind, preset.name) {
        (Some(k), "custom") => k.clone(),
        (Some(_), _) => {
            return Err(DomainError::bad_request(format!(
                "--kind is only for --preset custom; {} tokens become {} secrets",
                preset.name, preset.kind
            )));
        }
        (None, _) => preset.kind.to_owned(),
    };
    if kind != "generic" && body.variable.is_some() {
        return Err(DomainError::bad_request(format!(
            "--variable is only for providers whose tokens become generic secrets; {kind} secrets have their own variables"
        )));
    }
    let variable = body.variable.clone().unwrap_or_else(|| DEFAULT_GENERIC_VARIABLE.to_owned());
    if !is_valid_variable_name(&variable) {
        return Err(DomainError::bad_request(
            "--variable must be a variable name: A-Z, 0-9 and _, not starting with a digit",
        ));
    }
    let field = wire::token_field(&kind, &variable).ok_or_else(|| {
        let kinds: Vec<&str> = wire::TOKEN_KINDS.iter().map(|(k, _)| *k).collect();
        DomainError::new(
            ErrorCode::UnknownKind,
            format!(
                "an OAuth token cannot become a '{kind}' secret; use --kind generic or one of: {}",
                kinds.join(", ")
            ),
        )
    })?;
    Ok((kind, field.to_owned()))
}

/// Checks a registration and seals it into a record.
pub fn register(
    master: &MasterKey,
    user: &UserRecord,
    body: &AddProvider,
) -> DomainResult<ProviderRecord> {
    if !wire::is_valid_provider_name(&body.name) {
        return Err(DomainError::new(
            ErrorCode::InvalidName,
            "invalid provider name: use 1 to 32 of a-z, 0-9, '-' and '_', starting with a letter (like github-work)",
        ));
    }
    let preset = wire::preset(&body.preset).ok_or_else(|| {
        let names: Vec<&str> = wire::PRESETS.iter().map(|p| p.name).collect();
        DomainError::bad_request(format!("unknown preset; use one of: {}", names.join(", ")))
    })?;
    check_client_id(&body.client_id)?;
    check_client_secret(&body.client_secret)?;
    let (auth_url, token_url, revoke_url) = endpoints(preset, body)?;
    let (kind, token_field) = kind_and_field(preset, body)?;
    let mut scopes = wire::check_scopes(&body.scopes).map_err(scope_failure)?;
    if scopes.is_empty() {
        scopes = preset.default_scopes.iter().map(|s| (*s).to_owned()).collect();
    }
    wire::check_preset_scopes(preset, &scopes).map_err(scope_failure)?;
    for implied in preset.implied_scopes {
        if !scopes.iter().any(|s| s == implied) {
            scopes.push((*implied).to_owned());
        }
    }

    let id = format!("oauthp-{}", tokens::random_id::<16>().map_err(internal)?);
    let (data_key_id, key, wrapped_key) = sealing::new_key(master, user.id, &id)
        .map_err(|e| DomainError::internal("sealing a client secret", &e))?;
    let client_secret = sealing::seal(&key, user.id, &id, 1, CLIENT_SECRET, &body.client_secret)
        .map_err(|e| DomainError::internal("sealing a client secret", &e))?;
    Ok(ProviderRecord {
        id,
        owner_id: user.id,
        name: body.name.clone(),
        preset: preset.name.to_owned(),
        kind,
        token_field,
        client_id: body.client_id.clone(),
        auth_url,
        token_url,
        revoke_url,
        scopes,
        data_key_id,
        wrapped_key,
        client_secret,
        created_at: clock::now(),
    })
}

fn internal(e: tokens::RandomError) -> DomainError {
    DomainError::internal("making an id", &e)
}

/// Opens a provider's client secret.
pub fn client_secret(master: &MasterKey, p: &ProviderRecord) -> DomainResult<SecretValue> {
    let integrity = |_| {
        DomainError::new(
            ErrorCode::Integrity,
            format!(
                "the client secret of OAuth provider {} failed its integrity check; register the provider again under another name",
                p.name
            ),
        )
    };
    let key = sealing::open_key(master, &p.data_key_id, p.owner_id, &p.id, &p.wrapped_key)
        .map_err(integrity)?;
    sealing::open(&key, p.owner_id, &p.id, 1, CLIENT_SECRET, &p.client_secret).map_err(integrity)
}

/// What deleting one of a provider's secrets does at the provider.
pub fn revocation_text(p: &ProviderRecord) -> String {
    match &p.revoke_url {
        Some(url) => format!("tokens are revoked at {url} (RFC 7009)"),
        None => wire::preset(&p.preset)
            .and_then(|preset| preset.no_revocation)
            .unwrap_or("the provider has no revocation endpoint")
            .to_owned(),
    }
}

/// A provider as its owner sees it.
pub fn info(oauth: &OAuth, p: &ProviderRecord) -> ProviderInfo {
    ProviderInfo {
        name: p.name.clone(),
        preset: p.preset.clone(),
        kind: p.kind.clone(),
        token_field: p.token_field.clone(),
        client_id: p.client_id.clone(),
        auth_url: p.auth_url.clone(),
        token_url: p.token_url.clone(),
        revoke_url: p.revoke_url.clone(),
        revocation: revocation_text(p),
        scopes: p.scopes.clone(),
        redirect_uri: oauth.redirect_uri.clone(),
        created_at: clock::rfc3339(p.created_at),
    }
}

/// A provider as the user who named it sees it: a team's as `team/NAME`.
fn present(owner: &Owner, mut info: ProviderInfo) -> ProviderInfo {
    info.name = owner.scoped(&info.name);
    info
}

/// Registers a provider of `user`'s, or of a team's (`team/NAME`, admins and owners); its
/// client secret is sealed before it is stored.
pub async fn add(
    app: &App,
    actor: &UserRecord,
    mut body: AddProvider,
) -> DomainResult<ProviderInfo> {
    let scoped = body.name.clone();
    let (owner, bare) =
        teams::resolve_provider(app, actor, &scoped, Action::ManageProviders).await?;
    body.name = bare.to_owned();
    let user = &owner.principal;
    let record = register(&app.master, user, &body)?;
    drop(body);
    app.oauth.store.insert_provider(&record).await.map_err(|e| match e {
        StoreError::AlreadyExists { name, .. } => DomainError::new(
            ErrorCode::AlreadyExists,
            format!("you already have an OAuth provider named {name}; choose another name"),
        ),
        other => other.into(),
    })?;
    info!(user = %actor.name, provider = %scoped, preset = %record.preset, "OAuth provider added");
    Ok(present(&owner, info(&app.oauth, &record)))
}

/// The providers of `user`'s, then those of the teams they are a member of (`team/NAME`).
pub async fn list(app: &App, user: &UserRecord) -> DomainResult<Vec<ProviderInfo>> {
    let mut owners = vec![Owner::personal(user)];
    owners.extend(teams::owners_of(app, user).await?);
    let mut out = Vec::new();
    for owner in &owners {
        for p in app.oauth.store.list_providers(owner.principal.id).await? {
            out.push(present(owner, info(&app.oauth, &p)));
        }
    }
    Ok(out)
}

/// Checks and applies an edit to a provider record: endpoints, client id, scopes, and a new
/// client secret (sealed under a new data key). Name, preset and kind stay.
pub fn apply_edit(
    master: &MasterKey,
    old: &ProviderRecord,
    body: &EditProvider,
) -> DomainResult<ProviderRecord> {
    let nothing = body.client_id.is_none()
        && body.client_secret.is_none()
        && body.auth_url.is_none()
        && body.token_url.is_none()
        && body.revoke_url.is_none()
        && body.scopes.is_none();
    if nothing {
        return Err(DomainError::bad_request(
            "nothing to change; give --client-id, --client-secret-file, --auth-url with --token-url, --revoke-url or --scope",
        ));
    }
    let preset = wire::preset(&old.preset).ok_or(DomainError::new(
        ErrorCode::Internal,
        "the provider's preset is unknown to this broker; upgrade maestro-broker",
    ))?;
    let mut new = old.clone();
    if let Some(id) = &body.client_id {
        check_client_id(id)?;
        new.client_id = id.clone();
    }
    match (&body.auth_url, &body.token_url) {
        (Some(a), Some(t)) => {
            check_url("auth-url", a)?;
            check_url("token-url", t)?;
            new.auth_url = a.clone();
            new.token_url = t.clone();
        }
        (None, None) => {}
        _ => {
            return Err(DomainError::bad_request(
                "give --auth-url and --token-url together (both endpoints of the same server)",
            ));
        }
    }
    match body.revoke_url.as_deref() {
        Some("") => new.revoke_url = None,
        Some(r) => {
            check_url("revoke-url", r)?;
            new.revoke_url = Some(r.to_owned());
        }
        None => {}
    }
    if let Some(given) = &body.scopes {
        let mut scopes = wire::check_scopes(given).map_err(scope_failure)?;
        if scopes.is_empty() {
            scopes = preset.default_scopes.iter().map(|s| (*s).to_owned()).collect();
        }
        wire::check_preset_scopes(preset, &scopes).map_err(scope_failure)?;
        for implied in preset.implied_scopes {
            if !scopes.iter().any(|s| s == implied) {
                scopes.push((*implied).to_owned());
            }
        }
        new.scopes = scopes;
    }
    if let Some(secret) = &body.client_secret {
        check_client_secret(secret)?;
        let (data_key_id, key, wrapped_key) = sealing::new_key(master, old.owner_id, &old.id)
            .map_err(|e| DomainError::internal("sealing a client secret", &e))?;
        new.client_secret = sealing::seal(&key, old.owner_id, &old.id, 1, CLIENT_SECRET, secret)
            .map_err(|e| DomainError::internal("sealing a client secret", &e))?;
        new.data_key_id = data_key_id;
        new.wrapped_key = wrapped_key;
    }
    Ok(new)
}

fn no_provider(name: &str) -> DomainError {
    DomainError::not_found(format!(
        "you have no OAuth provider named {}; see `maestro oauth providers ls`",
        name.chars().take(40).collect::<String>().escape_default()
    ))
}

/// Edits a provider of `user`'s. Secrets already connected keep their tokens; the new client
/// secret, endpoints and scopes apply from the next refresh or connection.
pub async fn edit(
    app: &App,
    actor: &UserRecord,
    name: &str,
    body: EditProvider,
) -> DomainResult<ProviderInfo> {
    let (owner, bare) = teams::resolve_provider(app, actor, name, Action::ManageProviders).await?;
    let user = &owner.principal;
    let old =
        app.oauth.store.provider_by_name(user.id, bare).await?.ok_or_else(|| no_provider(name))?;
    let new = apply_edit(&app.master, &old, &body)?;
    drop(body);
    app.oauth.store.update_provider(&old, &new).await?;
    info!(user = %actor.name, provider = %name, "OAuth provider edited");
    Ok(present(&owner, info(&app.oauth, &new)))
}

/// Removes a provider of `user`'s; refused, naming them, while secrets hold its tokens.
pub async fn remove(app: &App, actor: &UserRecord, name: &str) -> DomainResult<ProviderRemoved> {
    let (owner, bare) = teams::resolve_provider(app, actor, name, Action::ManageProviders).await?;
    match app.oauth.store.delete_provider(owner.principal.id, bare).await? {
        ProviderRemoval::Removed => {
            info!(user = %actor.name, provider = %name, "OAuth provider removed");
            Ok(ProviderRemoved { name: name.to_owned() })
        }
        ProviderRemoval::Missing => Err(no_provider(name)),
        ProviderRemoval::InUse(secrets) => Err(DomainError::new(
            ErrorCode::Conflict,
            format!(
                "OAuth provider {name} is used by the secrets {}; delete them first (`maestro secrets rm NAME`)",
                secrets.join(", ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(preset: &str) -> AddProvider {
        AddProvider {
            name: "gh".into(),
            preset: preset.into(),
            client_id: "Iv1.abc".into(),
            client_secret: SecretValue::from("planted-client-secret"),
            auth_url: None,
            token_url: None,
            revoke_url: None,
            scopes: vec![],
            kind: None,
            variable: None,
        }
    }

    fn user() -> UserRecord {
        UserRecord { id: 1, name: "u".into() }
    }

    #[test]
    fn presets_fill_endpoints_scopes_and_kind() {
        let master = MasterKey::generate().unwrap();
        let p = register(&master, &user(), &body("github")).unwrap();
        assert_eq!(p.auth_url, "https://github.com/login/oauth/authorize");
        assert_eq!((p.kind.as_str(), p.token_field.as_str()), ("github", "token"));
        assert_eq!(p.scopes, ["repo", "read:org"]);
        assert!(p.revoke_url.is_none());
        assert!(!p.client_secret.windows(7).any(|w| w == b"planted"));
        assert_eq!(client_secret(&master, &p).unwrap().expose(), "planted-client-secret");
        let ms = register(&master, &user(), &body("microsoft")).unwrap();
        assert_eq!((ms.kind.as_str(), ms.token_field.as_str()), ("generic", "ACCESS_TOKEN"));
        assert!(ms.scopes.contains(&"offline_access".to_owned()));
        let gl = register(&master, &user(), &body("gitlab")).unwrap();
        assert_eq!(gl.revoke_url.as_deref(), Some("https://gitlab.com/oauth/revoke"));
    }

    #[test]
    fn bad_registrations_are_refused_with_the_reason() {
        let master = MasterKey::generate().unwrap();
        let msg = |b: AddProvider| register(&master, &user(), &b).unwrap_err().message;
        assert!(msg(body("custom")).contains("needs --auth-url and --token-url"));
        let mut b = body("custom");
        b.auth_url = Some("http://example.com/authorize".into());
        b.token_url = Some("https://example.com/token".into());
        assert!(msg(b).contains("plain http"));
        let mut b = body("github");
        b.scopes = vec!["api".into()];
        assert!(msg(b).contains("does not know the scope 'api'"));
        let mut b = body("github");
        b.kind = Some("generic".into());
        assert!(msg(b).contains("--kind is only for --preset custom"));
        let mut b = body("custom");
        b.auth_url = Some("http://127.0.0.1:9/authorize".into());
        b.token_url = Some("http://[::1]:9/token".into());
        b.kind = Some("openai".into());
        assert!(msg(b).contains("cannot become a 'openai' secret"));
        let mut b = body("github");
        b.client_secret = SecretValue::from("two\nlines-planted");
        let m = msg(b);
        assert!(m.contains("control characters") && !m.contains("planted"), "{m}");
        assert!(
            msg(AddProvider { name: "Bad".into(), ..body("github") }).contains("provider name")
        );
    }
}
