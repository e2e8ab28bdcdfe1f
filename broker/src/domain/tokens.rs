//! API tokens and service accounts: create (a token's value is returned this once, and only
//! its SHA-256 is stored), list (never a value), revoke. A token acts for its user, as the user
//! or as one of the user's service accounts, within its scopes; the routes that manage tokens
//! need `admin` ([`crate::auth::required_scope`]), and no token can grant a scope it lacks.

use maestro_wire::api::{AuditAction, ErrorCode};
use maestro_wire::tokens::{
    CreateServiceAccount, CreateToken, MAX_DESCRIPTION_BYTES, MAX_SERVICE_ACCOUNTS_PER_USER,
    MAX_TOKEN_TTL_SECS, MAX_TOKENS_PER_USER, Revoked, Scope, ServiceAccountInfo, TokenCreated,
    TokenInfo, allows, is_valid_name, parse_scopes,
};
use tracing::info;

use super::{DomainError, DomainResult};
use crate::app::App;
use crate::auth::Caller;
use crate::clock;
use crate::store::AuditRecord;
use crate::store::tokens::{Refusal, ServiceAccountRecord, TokenRecord};
use crate::tokens::{self, USER_TOKEN_PREFIX};

fn bad_name(what: &str) -> DomainError {
    DomainError::new(
        ErrorCode::InvalidName,
        format!(
            "invalid {what} name: use 1 to 64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit (like ci-deploy)"
        ),
    )
}

/// The `token_changed` record of a change the caller made: `what` names the token or account
/// (never a token's value) and the caller's token says who.
fn record(caller: &Caller, now: i64, what: String) -> AuditRecord {
    let by = match &caller.service_account {
        Some(account) => format!("service account {account}'s token {}", caller.token_id),
        None => format!("token {}", caller.token_id),
    };
    AuditRecord {
        detail: Some(format!("{what} (by {by})")),
        ..AuditRecord::new(caller.user.id, now, AuditAction::TokenChanged)
    }
}

/// A token as its owner sees it.
pub fn info(t: &TokenRecord, now: i64) -> TokenInfo {
    TokenInfo {
        id: t.id.clone(),
        name: t.name.clone(),
        service_account: t.service_account.clone(),
        scopes: t.scopes.clone(),
        created_at: clock::rfc3339(t.created_at),
        expires_at: t.expires_at.map(clock::rfc3339),
        last_used_at: t.last_used_at.map(clock::rfc3339),
        expired: t.expires_at.is_some_and(|at| at <= now),
    }
}

/// Makes a token for the caller's user or one of their service accounts.
pub async fn create(app: &App, caller: &Caller, body: CreateToken) -> DomainResult<TokenCreated> {
    if !is_valid_name(&body.name) {
        return Err(bad_name("token"));
    }
    let scopes = parse_scopes(&body.scopes).map_err(|e| DomainError::bad_request(e.to_string()))?;
    if let Some(lacking) = scopes.iter().find(|s| !allows(&caller.scopes, **s)) {
        return Err(DomainError::forbidden(format!(
            "a token cannot grant the scope '{}', which it lacks itself",
            lacking.as_str()
        )));
    }
    if let Some(account) = &body.service_account
        && !is_valid_name(account)
    {
        return Err(bad_name("service account"));
    }
    let now = clock::now();
    let expires_at = match body.expires_in_secs {
        None => None,
        Some(secs) if (1..=MAX_TOKEN_TTL_SECS).contains(&secs) => {
            Some(now.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX)))
        }
        Some(_) => {
            return Err(DomainError::bad_request(
                "a token's expiry must be between 1 second and 10 years from now (or never)",
            ));
        }
    };
    let random = |e: tokens::RandomError| DomainError::internal("making a token", &e);
    let token = tokens::generate(USER_TOKEN_PREFIX).map_err(random)?;
    let record = TokenRecord {
        id: tokens::random_id::<8>().map_err(random)?,
        user_id: caller.user.id,
        service_account: body.service_account.clone(),
        name: body.name.clone(),
        scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        created_at: now,
        expires_at,
        last_used_at: None,
    };
    let audit = record_of_token(caller, now, &record);
    match app
        .tokens
        .insert_token(&record, &tokens::hash(token.expose()), MAX_TOKENS_PER_USER, &audit)
        .await?
    {
        Ok(()) => {}
        Err(Refusal::Missing) => {
            return Err(DomainError::not_found(format!(
                "no service account named {}; see `maestro service-accounts ls`",
                body.service_account.as_deref().unwrap_or_default()
            )));
        }
        Err(_) => {
            return Err(DomainError::new(
                ErrorCode::TooMany,
                format!(
                    "you hold {MAX_TOKENS_PER_USER} tokens already; revoke some first (`maestro tokens ls`)"
                ),
            ));
        }
    }
    info!(user = %caller.user.name, token = %record.id, name = %record.name,
        service_account = record.service_account.as_deref().unwrap_or("-"), "API token created");
    Ok(TokenCreated { info: info(&record, now), token })
}

/// The record of a new token: its name, id, whom it acts as, scopes and expiry.
fn record_of_token(caller: &Caller, now: i64, t: &TokenRecord) -> AuditRecord {
    let of = t
        .service_account
        .as_deref()
        .map(|a| format!(" of service account {a}"))
        .unwrap_or_default();
    let expires = t.expires_at.map_or_else(|| "never".to_owned(), clock::rfc3339);
    record(
        caller,
        now,
        format!(
            "token {} ({}){of} created: scopes {}, expires {expires}",
            t.name,
            t.id,
            t.scopes.join(",")
        ),
    )
}

/// The caller's user's tokens and their service accounts'.
pub async fn list(app: &App, caller: &Caller) -> DomainResult<Vec<TokenInfo>> {
    let now = clock::now();
    Ok(app.tokens.list_tokens(caller.user.id).await?.iter().map(|t| info(t, now)).collect())
}

/// Revokes one of the caller's user's tokens, at once on every broker (nothing caches it).
pub async fn revoke(app: &App, caller: &Caller, id: &str) -> DomainResult<Revoked> {
    let valid = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let audit = record(caller, clock::now(), format!("token {id} revoked"));
    if !valid || !app.tokens.delete_token(caller.user.id, id, &audit).await? {
        return Err(DomainError::not_found(
            "no such token id; `maestro tokens ls` lists yours (the ID column)",
        ));
    }
    info!(user = %caller.user.name, token = %id, "API token revoked");
    Ok(Revoked { revoked: 1 })
}

fn account_info(a: &ServiceAccountRecord, owner: &str) -> ServiceAccountInfo {
    ServiceAccountInfo {
        name: a.name.clone(),
        description: a.description.clone(),
        owner: format!("{}:{owner}", a.owner_kind),
        created_at: clock::rfc3339(a.created_at),
        tokens: u64::try_from(a.tokens).unwrap_or(0),
    }
}

/// Adds a service account owned by the caller's user.
pub async fn create_account(
    app: &App,
    caller: &Caller,
    body: CreateServiceAccount,
) -> DomainResult<ServiceAccountInfo> {
    if !is_valid_name(&body.name) {
        return Err(bad_name("service account"));
    }
    let description = body.description.as_deref().map(str::trim).filter(|d| !d.is_empty());
    if let Some(d) = description
        && (d.len() > MAX_DESCRIPTION_BYTES || d.chars().any(char::is_control))
    {
        return Err(DomainError::bad_request(format!(
            "the description must be one line of at most {MAX_DESCRIPTION_BYTES} bytes"
        )));
    }
    let now = clock::now();
    let audit = record(caller, now, format!("service account {} created", body.name));
    let added = app
        .tokens
        .insert_service_account(
            caller.user.id,
            &body.name,
            description,
            now,
            MAX_SERVICE_ACCOUNTS_PER_USER,
            &audit,
        )
        .await?;
    match added {
        Ok(account) => {
            info!(user = %caller.user.name, service_account = %account.name, "service account created");
            Ok(account_info(&account, &caller.user.name))
        }
        Err(Refusal::Taken) => Err(DomainError::new(
            ErrorCode::AlreadyExists,
            format!("you already have a service account named {}; choose another name", body.name),
        )),
        Err(_) => Err(DomainError::new(
            ErrorCode::TooMany,
            format!(
                "you own {MAX_SERVICE_ACCOUNTS_PER_USER} service accounts already; remove some first"
            ),
        )),
    }
}

/// The service accounts of the caller's user.
pub async fn list_accounts(app: &App, caller: &Caller) -> DomainResult<Vec<ServiceAccountInfo>> {
    let list = app.tokens.list_service_accounts(caller.user.id).await?;
    Ok(list.iter().map(|a| account_info(a, &caller.user.name)).collect())
}

/// Removes a service account and revokes its tokens.
pub async fn remove_account(app: &App, caller: &Caller, name: &str) -> DomainResult<Revoked> {
    if !is_valid_name(name) {
        return Err(bad_name("service account"));
    }
    let what = format!("service account {name} removed, its tokens revoked");
    let audit = record(caller, clock::now(), what);
    match app.tokens.delete_service_account(caller.user.id, name, &audit).await? {
        Ok(count) => {
            info!(user = %caller.user.name, service_account = %name, tokens = count, "service account removed");
            Ok(Revoked { revoked: u64::try_from(count).unwrap_or(0) })
        }
        Err(_) => Err(DomainError::not_found(format!(
            "no service account named {name}; see `maestro service-accounts ls`"
        ))),
    }
}

/// What `GET /v1/whoami` answers: the user, the principal and the token's scopes.
pub fn whoami(caller: &Caller) -> serde_json::Value {
    serde_json::json!({
        "user": caller.user.name,
        "service_account": caller.service_account,
        "token_id": caller.token_id,
        "scopes": caller.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "all_scopes": Scope::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    })
}
