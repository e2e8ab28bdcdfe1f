//! API tokens and service accounts: create (a token's value is returned this once, and only
//! its SHA-256 is stored), list (never a value), revoke. A token acts for its user, as the user
//! or as one of the user's service accounts, within its scopes; the routes that manage tokens
//! need `admin` ([`crate::auth::required_scope`]), and no token can grant a scope it lacks.
//!
//! A team's service accounts (`TEAM/NAME`) are managed by the team's admins and owners
//! ([`Action::ManageServiceAccounts`]); their tokens have the team's row as their user, so they
//! act as the team principal. Each change is recorded in the team's trail, naming the member
//! who made it. A team's token itself cannot manage tokens or service accounts.

use maestro_wire::api::{AuditAction, ErrorCode};
use maestro_wire::tokens::{
    CreateServiceAccount, CreateToken, MAX_DESCRIPTION_BYTES, MAX_SERVICE_ACCOUNTS_PER_USER,
    MAX_TOKEN_TTL_SECS, MAX_TOKENS_PER_USER, Revoked, Scope, ServiceAccountInfo, TokenCreated,
    TokenInfo, allows, is_valid_name, parse_scopes,
};
use tracing::info;

use super::teams::{Action, check_team_name, team_for, team_names};
use super::{DomainError, DomainResult};
use crate::app::App;
use crate::auth::Caller;
use crate::clock;
use crate::store::AuditRecord;
use crate::store::tokens::{OWNER_TEAM, OWNER_USER, Refusal, ServiceAccountRecord, TokenRecord};
use crate::tokens::{self, USER_TOKEN_PREFIX};

fn bad_name(what: &str) -> DomainError {
    DomainError::new(
        ErrorCode::InvalidName,
        format!(
            "invalid {what} name: use 1 to 64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit (like ci-deploy)"
        ),
    )
}

/// Whose tokens and service accounts a request manages: the caller's user, or a team the
/// caller may manage them for.
struct Principal {
    id: i64,
    /// The team's name, for a team's.
    team: Option<String>,
}

impl Principal {
    /// A service account's name as users write it.
    fn scoped(&self, name: &str) -> String {
        match &self.team {
            Some(team) => format!("{team}/{name}"),
            None => name.to_owned(),
        }
    }
}

/// Refuses a team's token: a team principal manages no tokens, service accounts or teams.
pub fn refuse_team(caller: &Caller) -> DomainResult<()> {
    if caller.is_team {
        return Err(DomainError::forbidden(
            "a team's service account token cannot manage tokens, service accounts or teams; use a member's token (an admin of the team manages its service accounts)",
        ));
    }
    Ok(())
}

/// The caller's user, or the team named if the caller may manage its service accounts (not a
/// member: not found; a role below admin: forbidden, naming it).
async fn principal(app: &App, caller: &Caller, team: Option<&str>) -> DomainResult<Principal> {
    refuse_team(caller)?;
    match team {
        None => Ok(Principal { id: caller.user.id, team: None }),
        Some(team) => {
            let (record, _) =
                team_for(app, &caller.user, team, Action::ManageServiceAccounts).await?;
            Ok(Principal { id: record.id, team: Some(record.name) })
        }
    }
}

/// Splits a service account's name as users write it: `NAME` or `TEAM/NAME`.
fn split_account(text: &str) -> DomainResult<(Option<&str>, &str)> {
    let (team, name) = match text.split_once('/') {
        Some((team, name)) => (Some(team), name),
        None => (None, text),
    };
    if let Some(team) = team {
        check_team_name(team)?;
    }
    if !is_valid_name(name) {
        return Err(bad_name("service account"));
    }
    Ok((team, name))
}

/// The `token_changed` record of a change the caller made, in the trail of `owner` (the
/// caller's user, or the team): `what` names the token or account (never a token's value) and
/// the caller's token says who (and, in a team's trail, which member).
fn record(caller: &Caller, owner: &Principal, now: i64, what: String) -> AuditRecord {
    let token = match &caller.service_account {
        Some(account) => format!("service account {account}'s token {}", caller.token_id),
        None => format!("token {}", caller.token_id),
    };
    let by = match owner.team {
        Some(_) => format!("{}, {token}", caller.user.name),
        None => token,
    };
    AuditRecord {
        detail: Some(format!("{what} (by {by})")),
        ..AuditRecord::new(owner.id, now, AuditAction::TokenChanged)
    }
}

/// A token as its owner sees it.
pub fn info(t: &TokenRecord, now: i64) -> TokenInfo {
    info_in(t, now, None)
}

/// A token as its owner sees it, its service account named `TEAM/NAME` for a team's.
fn info_in(t: &TokenRecord, now: i64, team: Option<&str>) -> TokenInfo {
    TokenInfo {
        id: t.id.clone(),
        name: t.name.clone(),
        service_account: t.service_account.as_deref().map(|a| match team {
            Some(team) => format!("{team}/{a}"),
            None => a.to_owned(),
        }),
        scopes: t.scopes.clone(),
        created_at: clock::rfc3339(t.created_at),
        expires_at: t.expires_at.map(clock::rfc3339),
        last_used_at: t.last_used_at.map(clock::rfc3339),
        expired: t.expires_at.is_some_and(|at| at <= now),
    }
}

/// Makes a token for the caller's user or one of their service accounts.
pub async fn create(app: &App, caller: &Caller, body: CreateToken) -> DomainResult<TokenCreated> {
    refuse_team(caller)?;
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
    let (team, account) = match &body.service_account {
        Some(text) => {
            let (team, name) = split_account(text)?;
            (team, Some(name.to_owned()))
        }
        None => (None, None),
    };
    let owner = principal(app, caller, team).await?;
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
        user_id: owner.id,
        service_account: account.clone(),
        name: body.name.clone(),
        scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        created_at: now,
        expires_at,
        last_used_at: None,
    };
    let audit = record_of_token(caller, &owner, now, &record);
    match app
        .tokens
        .insert_token(&record, &tokens::hash(token.expose()), MAX_TOKENS_PER_USER, &audit)
        .await?
    {
        Ok(()) => {}
        Err(Refusal::Missing) => {
            return Err(DomainError::not_found(format!(
                "no service account named {}; see `maestro service-accounts ls{}`",
                owner.scoped(account.as_deref().unwrap_or_default()),
                team_flag(&owner)
            )));
        }
        Err(_) => {
            let who = owner
                .team
                .as_ref()
                .map_or_else(|| "you hold".to_owned(), |t| format!("team {t} holds"));
            return Err(DomainError::new(
                ErrorCode::TooMany,
                format!(
                    "{who} {MAX_TOKENS_PER_USER} tokens already; revoke some first (`maestro tokens ls{}`)",
                    team_flag(&owner)
                ),
            ));
        }
    }
    let shown = info_in(&record, now, owner.team.as_deref());
    info!(user = %caller.user.name, token = %record.id, name = %record.name,
        service_account = shown.service_account.as_deref().unwrap_or("-"), "API token created");
    Ok(TokenCreated { info: shown, token })
}

/// The record of a new token: its name, id, whom it acts as, scopes and expiry.
fn record_of_token(caller: &Caller, owner: &Principal, now: i64, t: &TokenRecord) -> AuditRecord {
    let of = t
        .service_account
        .as_deref()
        .map(|a| format!(" of service account {}", owner.scoped(a)))
        .unwrap_or_default();
    let expires = t.expires_at.map_or_else(|| "never".to_owned(), clock::rfc3339);
    record(
        caller,
        owner,
        now,
        format!(
            "token {} ({}){of} created: scopes {}, expires {expires}",
            t.name,
            t.id,
            t.scopes.join(",")
        ),
    )
}

/// ` --team TEAM` for a team's commands in messages.
fn team_flag(owner: &Principal) -> String {
    owner.team.as_ref().map(|t| format!(" --team {t}")).unwrap_or_default()
}

/// The caller's user's tokens and their service accounts', or a team's (for its admins).
pub async fn list(app: &App, caller: &Caller, team: Option<&str>) -> DomainResult<Vec<TokenInfo>> {
    let owner = principal(app, caller, team).await?;
    let now = clock::now();
    let tokens = app.tokens.list_tokens(owner.id).await?;
    Ok(tokens.iter().map(|t| info_in(t, now, owner.team.as_deref())).collect())
}

/// Revokes one of the caller's user's tokens, or of a team the caller administers, at once on
/// every broker (nothing caches it).
pub async fn revoke(app: &App, caller: &Caller, id: &str) -> DomainResult<Revoked> {
    refuse_team(caller)?;
    let not_found = || {
        DomainError::not_found(
            "no such token id; `maestro tokens ls` lists yours, `maestro tokens ls --team TEAM` a team's (the ID column)",
        )
    };
    let valid = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return Err(not_found());
    }
    let owner = match app.tokens.token_owner(id).await? {
        None => return Err(not_found()),
        Some(owner) if owner == caller.user.id => Principal { id: owner, team: None },
        Some(owner) => {
            // A team's token: only for a member whose role allows it; anyone else's: not found.
            let teams = team_names(app, caller.user.id).await?;
            let Some(team) = teams.get(&owner) else { return Err(not_found()) };
            principal(app, caller, Some(team)).await?
        }
    };
    let audit = record(caller, &owner, clock::now(), format!("token {id} revoked"));
    if !app.tokens.delete_token(owner.id, id, &audit).await? {
        return Err(not_found());
    }
    info!(user = %caller.user.name, token = %id, team = owner.team.as_deref().unwrap_or("-"), "API token revoked");
    Ok(Revoked { revoked: 1 })
}

fn account_info(a: &ServiceAccountRecord, owner: &str, team: Option<&str>) -> ServiceAccountInfo {
    let (name, owner) = match team {
        Some(team) => (format!("{team}/{}", a.name), format!("{}:{team}", a.owner_kind)),
        None => (a.name.clone(), format!("{}:{owner}", a.owner_kind)),
    };
    ServiceAccountInfo {
        name,
        description: a.description.clone(),
        owner,
        created_at: clock::rfc3339(a.created_at),
        tokens: u64::try_from(a.tokens).unwrap_or(0),
    }
}

/// Adds a service account owned by the caller's user, or by a team (`team`, or a name
/// `TEAM/NAME`) the caller administers.
pub async fn create_account(
    app: &App,
    caller: &Caller,
    body: CreateServiceAccount,
) -> DomainResult<ServiceAccountInfo> {
    refuse_team(caller)?;
    let (named_team, name) = split_account(&body.name)?;
    let team = match (named_team, body.team.as_deref()) {
        (Some(a), Some(b)) if a != b => {
            return Err(DomainError::bad_request(format!(
                "the name says team {a} but \"team\" says {b}; give one of them"
            )));
        }
        (a, b) => a.or(b),
    };
    let description = body.description.as_deref().map(str::trim).filter(|d| !d.is_empty());
    if let Some(d) = description
        && (d.len() > MAX_DESCRIPTION_BYTES || d.chars().any(char::is_control))
    {
        return Err(DomainError::bad_request(format!(
            "the description must be one line of at most {MAX_DESCRIPTION_BYTES} bytes"
        )));
    }
    let owner = principal(app, caller, team).await?;
    let kind = if owner.team.is_some() { OWNER_TEAM } else { OWNER_USER };
    let now = clock::now();
    let audit =
        record(caller, &owner, now, format!("service account {} created", owner.scoped(name)));
    let added = app
        .tokens
        .insert_service_account(
            kind,
            owner.id,
            name,
            description,
            now,
            MAX_SERVICE_ACCOUNTS_PER_USER,
            &audit,
        )
        .await?;
    match added {
        Ok(account) => {
            let shown = account_info(&account, &caller.user.name, owner.team.as_deref());
            info!(user = %caller.user.name, service_account = %shown.name, "service account created");
            Ok(shown)
        }
        Err(Refusal::Taken) => Err(DomainError::new(
            ErrorCode::AlreadyExists,
            format!(
                "{} already has a service account named {}; choose another name",
                owner.team.as_ref().map_or_else(|| "you".to_owned(), |t| format!("team {t}")),
                owner.scoped(name)
            ),
        )),
        Err(_) => Err(DomainError::new(
            ErrorCode::TooMany,
            format!(
                "{} {MAX_SERVICE_ACCOUNTS_PER_USER} service accounts already; remove some first",
                owner
                    .team
                    .as_ref()
                    .map_or_else(|| "you own".to_owned(), |t| format!("team {t} owns"))
            ),
        )),
    }
}

/// The service accounts of the caller's user, or of a team the caller administers.
pub async fn list_accounts(
    app: &App,
    caller: &Caller,
    team: Option<&str>,
) -> DomainResult<Vec<ServiceAccountInfo>> {
    let owner = principal(app, caller, team).await?;
    let list = app.tokens.list_service_accounts(owner.id).await?;
    Ok(list.iter().map(|a| account_info(a, &caller.user.name, owner.team.as_deref())).collect())
}

/// Removes a service account (`NAME`, or `TEAM/NAME` for a team's) and revokes its tokens.
pub async fn remove_account(app: &App, caller: &Caller, name: &str) -> DomainResult<Revoked> {
    refuse_team(caller)?;
    let (team, bare) = split_account(name)?;
    let owner = principal(app, caller, team).await?;
    let shown = owner.scoped(bare);
    let what = format!("service account {shown} removed, its tokens revoked");
    let audit = record(caller, &owner, clock::now(), what);
    match app.tokens.delete_service_account(owner.id, bare, &audit).await? {
        Ok(count) => {
            info!(user = %caller.user.name, service_account = %shown, tokens = count, "service account removed");
            Ok(Revoked { revoked: u64::try_from(count).unwrap_or(0) })
        }
        Err(_) => Err(DomainError::not_found(format!(
            "no service account named {shown}; see `maestro service-accounts ls{}`",
            team_flag(&owner)
        ))),
    }
}

/// What `GET /v1/whoami` answers: the user, the principal and the token's scopes.
pub fn whoami(caller: &Caller) -> serde_json::Value {
    serde_json::json!({
        "user": caller.user.name,
        "service_account": caller.service_account,
        "team": caller.is_team.then(|| caller.user.name.trim_start_matches("team/")),
        "token_id": caller.token_id,
        "scopes": caller.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "all_scopes": Scope::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    })
}
