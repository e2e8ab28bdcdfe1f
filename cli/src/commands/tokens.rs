//! `maestro tokens ...` and `maestro service-accounts ...` (alias `sa`): API tokens with scopes
//! and an expiry, for people and for service accounts (non-human principals for CI or a
//! control plane), listed without their values and revoked at once. A team's service accounts
//! are `TEAM/NAME` (or `--team TEAM`), managed by the team's admins and owners.
//!
//! A new token is shown once: on stdout as the command's whole output (so that scripts can
//! capture it), or, with `--out PATH`, written to a new file of mode 0600 (usable as
//! `MAESTRO_TOKEN_FILE`) and not printed at all.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use maestro_wire::teams::is_valid_team_name;
use maestro_wire::tokens::{
    CreateServiceAccount, CreateToken, MAX_TOKEN_TTL_SECS, Revoked, Scope, ServiceAccountInfo,
    TokenCreated, TokenInfo, is_valid_name, parse_scopes,
};
use reqwest::Method;

use super::{Output, json_output, output};
use crate::client::Client;
use crate::table::{Table, clean, list, opt, opt_time, time};

/// The expiry of a token when `--expires` is not given.
const DEFAULT_EXPIRY: &str = "90d";

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// List your tokens and your service accounts' (never their values), or a team's.
    Ls(TeamListArgs),
    /// Create a token with scopes and an expiry; it is shown once.
    Create(CreateTokenArgs),
    /// Revoke a token at once (on every broker of the database).
    Revoke(RevokeArgs),
}

#[derive(Debug, Subcommand)]
pub enum ServiceAccountsCommand {
    /// List your service accounts, or a team's (--team).
    Ls(TeamListArgs),
    /// Create a service account; then `maestro tokens create NAME --service-account SA`.
    Create(CreateAccountArgs),
    /// Remove a service account and revoke its tokens.
    Rm(RmAccountArgs),
}

#[derive(Debug, Args)]
pub struct TeamListArgs {
    /// A team's instead of yours (its admins and owners)
    #[arg(long, value_name = "TEAM")]
    pub team: Option<String>,
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CreateTokenArgs {
    /// Token name: [a-z0-9][a-z0-9._-]{0,63}, e.g. ci-deploy
    pub name: String,
    /// A scope (repeat, or comma-separated): secrets:read, secrets:write, sessions:read,
    /// sessions:write, activate, audit:read, alerts:write, admin
    #[arg(long = "scope", value_name = "S", required = true, value_delimiter = ',')]
    pub scopes: Vec<String>,
    /// How long it is valid, e.g. 30d, 12h, or `never`
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_EXPIRY)]
    pub expires: String,
    /// The service account it acts as, TEAM/NAME for a team's (default: yourself)
    #[arg(long, value_name = "NAME")]
    pub service_account: Option<String>,
    /// Write the token to this new file (mode 0600) instead of printing it
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Print the broker's answer as JSON (the token included, unless --out)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The token's id (the ID column of `maestro tokens ls`)
    pub id: String,
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CreateAccountArgs {
    /// Service account name: [a-z0-9][a-z0-9._-]{0,63}, e.g. ci (TEAM/NAME for a team's)
    pub name: String,
    /// Owned by this team (you must be its admin or owner)
    #[arg(long, value_name = "TEAM")]
    pub team: Option<String>,
    /// What it is for (one line)
    #[arg(long)]
    pub description: Option<String>,
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RmAccountArgs {
    /// The service account's name (TEAM/NAME for a team's)
    pub name: String,
    /// Of this team
    #[arg(long, value_name = "TEAM")]
    pub team: Option<String>,
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
}

/// Why a `tokens` or `service-accounts` command cannot go on. Never holds a token.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error(
        "invalid {what} name '{name}': use 1 to 64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
    )]
    Name { what: &'static str, name: String },
    #[error(
        "invalid team name '{0}': use 1 to 32 of a-z, 0-9 and -, starting with a letter (like infra)"
    )]
    Team(String),
    #[error("the name says team {0} but --team says {1}; give one of them")]
    TwoTeams(String, String),
    #[error("{0}")]
    Scopes(String),
    #[error(
        "invalid --expires '{0}'; write a duration from 1s to 10 years, such as 30d or 12h, or `never`"
    )]
    Expires(String),
    #[error(
        "cannot write the token to {path} ({source}); give a path of a file that does not exist yet"
    )]
    Out { path: String, source: io::Error },
}

pub async fn run_tokens(client: &Client, command: TokensCommand) -> anyhow::Result<Output> {
    match command {
        TokensCommand::Ls(args) => list_tokens(client, args).await,
        TokensCommand::Create(args) => create_token(client, args).await,
        TokensCommand::Revoke(args) => revoke(client, args).await,
    }
}

pub async fn run_accounts(
    client: &Client,
    command: ServiceAccountsCommand,
) -> anyhow::Result<Output> {
    match command {
        ServiceAccountsCommand::Ls(args) => list_accounts(client, args).await,
        ServiceAccountsCommand::Create(args) => create_account(client, args).await,
        ServiceAccountsCommand::Rm(args) => remove_account(client, args).await,
    }
}

fn check_name(what: &'static str, name: &str) -> Result<(), TokensError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(TokensError::Name { what, name: clean(&name.chars().take(80).collect::<String>()) })
    }
}

fn check_team(team: &str) -> Result<(), TokensError> {
    if is_valid_team_name(team) {
        Ok(())
    } else {
        Err(TokensError::Team(clean(&team.chars().take(80).collect::<String>())))
    }
}

/// A service account's name as written (`NAME` or `TEAM/NAME`) with `--team`: the name the
/// broker takes (`TEAM/NAME` for a team's).
fn account_name(text: &str, team: Option<&str>) -> Result<String, TokensError> {
    let (named, bare) = match text.split_once('/') {
        Some((t, n)) => (Some(t), n),
        None => (None, text),
    };
    check_name("service account", bare)?;
    let team = match (named, team) {
        (Some(a), Some(b)) if a != b => {
            return Err(TokensError::TwoTeams(clean(a), clean(b)));
        }
        (a, b) => a.or(b),
    };
    match team {
        Some(team) => {
            check_team(team)?;
            Ok(format!("{team}/{bare}"))
        }
        None => Ok(bare.to_owned()),
    }
}

/// `?team=TEAM`, checked.
fn team_query(team: Option<&str>) -> Result<Vec<(&'static str, String)>, TokensError> {
    match team {
        Some(team) => {
            check_team(team)?;
            Ok(vec![("team", team.to_owned())])
        }
        None => Ok(Vec::new()),
    }
}

/// `--expires`: seconds, or `None` for `never`.
fn parse_expires(text: &str) -> Result<Option<u64>, TokensError> {
    let text = text.trim();
    if text == "never" {
        return Ok(None);
    }
    let bad = || TokensError::Expires(clean(text));
    let d = humantime::parse_duration(text).map_err(|_| bad())?;
    if d.subsec_nanos() != 0 || d.as_secs() == 0 || d.as_secs() > MAX_TOKEN_TTL_SECS {
        return Err(bad());
    }
    Ok(Some(d.as_secs()))
}

fn expires_cell(t: &TokenInfo) -> String {
    match &t.expires_at {
        None => "never".to_owned(),
        Some(at) if t.expired => format!("{} (expired)", time(at)),
        Some(at) => time(at),
    }
}

async fn list_tokens(client: &Client, args: TeamListArgs) -> anyhow::Result<Output> {
    let query = team_query(args.team.as_deref())?;
    let answer = client.get_query(&["v1", "tokens"], &query).await?;
    if args.json {
        return Ok(answer.pretty::<Vec<TokenInfo>>()?);
    }
    let tokens: Vec<TokenInfo> = answer.parse()?;
    if tokens.is_empty() {
        return Ok(output(
            "no tokens; create one with `maestro tokens create NAME --scope S`\n".to_owned(),
        ));
    }
    let mut table =
        Table::new(&["ID", "NAME", "ACCOUNT", "SCOPES", "CREATED", "EXPIRES", "LAST USED"]);
    for t in &tokens {
        table.row(vec![
            t.id.clone(),
            t.name.clone(),
            opt(t.service_account.as_deref()),
            list(&t.scopes),
            time(&t.created_at),
            expires_cell(t),
            opt_time(t.last_used_at.as_deref()),
        ]);
    }
    Ok(output(table.render()))
}

async fn create_token(client: &Client, args: CreateTokenArgs) -> anyhow::Result<Output> {
    check_name("token", &args.name)?;
    let service_account = match &args.service_account {
        Some(account) => Some(account_name(account, None)?),
        None => None,
    };
    let scopes = parse_scopes(&args.scopes).map_err(|e| TokensError::Scopes(e.to_string()))?;
    let expires_in_secs = parse_expires(&args.expires)?;
    // Before the broker makes the token: a path that cannot be written fails with nothing made.
    let mut file =
        match &args.out {
            Some(path) => Some((
                path.clone(),
                OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(
                    |source| TokensError::Out { path: path.display().to_string(), source },
                )?,
            )),
            None => None,
        };
    let body = CreateToken {
        name: args.name,
        scopes: scopes.iter().map(|s| Scope::as_str(*s).to_owned()).collect(),
        expires_in_secs,
        service_account,
    };
    let answer = client.send(Method::POST, &["v1", "tokens"], &body).await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            if let Some((path, _)) = file.take() {
                let _ = std::fs::remove_file(path);
            }
            return Err(e.into());
        }
    };
    let created: TokenCreated = answer.parse()?;
    let Some((path, mut handle)) = file else {
        if args.json {
            return json_output(&created);
        }
        let t = &created.info;
        // On stderr, so that stdout is the token alone.
        let _ = writeln!(
            io::stderr().lock(),
            "maestro: token {} ({}) created with {}, expires {}; it is shown only now",
            t.id,
            t.name,
            list(&t.scopes),
            expires_cell(t)
        );
        let mut text = created.token.expose().to_owned();
        text.push('\n');
        return Ok(output(text));
    };
    let mut line = zeroize::Zeroizing::new(created.token.expose().to_owned());
    line.push('\n');
    handle
        .write_all(line.as_bytes())
        .and_then(|()| handle.sync_all())
        .map_err(|source| TokensError::Out { path: path.display().to_string(), source })?;
    if args.json {
        return json_output(&created.info);
    }
    let t = &created.info;
    Ok(output(format!(
        "token {} ({}) written to {}, scopes {}, expires {}\n",
        t.id,
        t.name,
        path.display(),
        list(&t.scopes),
        expires_cell(t)
    )))
}

async fn revoke(client: &Client, args: RevokeArgs) -> anyhow::Result<Output> {
    let id = clean(&args.id);
    let answer = client.delete(&["v1", "tokens", &args.id]).await?;
    if args.json {
        return Ok(answer.pretty::<Revoked>()?);
    }
    Ok(output(format!("token {id} revoked\n")))
}

async fn list_accounts(client: &Client, args: TeamListArgs) -> anyhow::Result<Output> {
    let query = team_query(args.team.as_deref())?;
    let answer = client.get_query(&["v1", "service-accounts"], &query).await?;
    if args.json {
        return Ok(answer.pretty::<Vec<ServiceAccountInfo>>()?);
    }
    let accounts: Vec<ServiceAccountInfo> = answer.parse()?;
    if accounts.is_empty() {
        return Ok(output(
            "no service accounts; create one with `maestro service-accounts create NAME`\n"
                .to_owned(),
        ));
    }
    let mut table = Table::new(&["NAME", "OWNER", "TOKENS", "CREATED", "DESCRIPTION"]);
    for a in &accounts {
        table.row(vec![
            a.name.clone(),
            a.owner.clone(),
            a.tokens.to_string(),
            time(&a.created_at),
            opt(a.description.as_deref()),
        ]);
    }
    Ok(output(table.render()))
}

async fn create_account(client: &Client, args: CreateAccountArgs) -> anyhow::Result<Output> {
    let name = account_name(&args.name, args.team.as_deref())?;
    let body = CreateServiceAccount { name, description: args.description, team: None };
    let answer = client.send(Method::POST, &["v1", "service-accounts"], &body).await?;
    if args.json {
        return Ok(answer.pretty::<ServiceAccountInfo>()?);
    }
    let a: ServiceAccountInfo = answer.parse()?;
    Ok(output(format!(
        "service account {} created; give it a token with `maestro tokens create NAME --service-account {} --scope S`\n",
        a.name, a.name
    )))
}

async fn remove_account(client: &Client, args: RmAccountArgs) -> anyhow::Result<Output> {
    let name = account_name(&args.name, args.team.as_deref())?;
    let answer = client.delete(&["v1", "service-accounts", &name]).await?;
    if args.json {
        return Ok(answer.pretty::<Revoked>()?);
    }
    let r: Revoked = answer.parse()?;
    Ok(output(format!("service account {name} removed; {} token(s) revoked\n", r.revoked)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_forms() {
        assert_eq!(parse_expires("never").unwrap(), None);
        assert_eq!(parse_expires("30d").unwrap(), Some(30 * 86400));
        assert_eq!(parse_expires("90s").unwrap(), Some(90));
        for bad in ["0s", "11years", "soon", "1.5s", ""] {
            assert!(parse_expires(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn team_account_names() {
        assert_eq!(account_name("ci", None).unwrap(), "ci");
        assert_eq!(account_name("ci", Some("infra")).unwrap(), "infra/ci");
        assert_eq!(account_name("infra/ci", None).unwrap(), "infra/ci");
        assert_eq!(account_name("infra/ci", Some("infra")).unwrap(), "infra/ci");
        assert!(account_name("infra/ci", Some("ops")).is_err());
        assert!(account_name("Infra/ci", None).is_err() && account_name("infra/C", None).is_err());
    }
}
