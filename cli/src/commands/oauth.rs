//! `maestro oauth ...`: register OAuth providers, connect them (authorization code flow with
//! PKCE, run by the broker), reconnect a secret, refresh a token now.
//!
//! `connect` and `reconnect` print the authorization URL at once (one line; with `--json`, one
//! JSON object), then poll the broker until the user has authorized in a browser, the provider
//! refused, or `--timeout` passed (then the authorization is cancelled, so that a late callback
//! stores nothing). The result is one more line (or JSON object).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use maestro_wire::SecretValue;
use maestro_wire::api::SecretMeta;
use maestro_wire::catalog::owners;
use maestro_wire::oauth::{
    self as wire, AddProvider, AuthorizationStarted, AuthorizationState, AuthorizationStatus,
    Connect, EditProvider, MAX_CLIENT_SECRET_BYTES, ProviderInfo, ProviderRemoved, Reconnect,
    RefreshNow,
};
use reqwest::Method;
use zeroize::Zeroizing;

use super::{Output, output};
use crate::client::{Client, ClientError};
use crate::input;
use crate::table::{Table, clean, key_values, list, opt_time};

/// How often `connect` asks the broker whether the authorization completed.
const POLL: Duration = Duration::from_millis(500);
/// The longest `--timeout`: an authorization expires after 10 minutes anyway.
const MAX_TIMEOUT: Duration = Duration::from_secs(wire::AUTHORIZATION_TTL_SECS);

#[derive(Debug, Subcommand)]
pub enum OauthCommand {
    /// Register and list OAuth providers (the OAuth apps tokens come from).
    #[command(subcommand)]
    Providers(ProvidersCommand),
    /// Authorize a provider in a browser and store the token as a new secret.
    Connect(ConnectArgs),
    /// Authorize an OAuth secret again: new tokens, other scopes, after a refused refresh.
    Reconnect(ReconnectArgs),
    /// Refresh an OAuth secret's token now (the broker also does it before it expires).
    Refresh(RefreshArgs),
}

#[derive(Debug, Subcommand)]
pub enum ProvidersCommand {
    /// Register a provider with its OAuth app's client id and secret.
    Add(Box<AddProviderArgs>),
    /// List your providers.
    Ls(LsArgs),
    /// Change a provider's client id or secret, endpoints or scopes (name, preset and kind
    /// stay); connected secrets keep their tokens.
    Edit(Box<EditProviderArgs>),
    /// Remove a provider; refused, naming them, while secrets use it.
    Rm(RmProviderArgs),
}

#[derive(Debug, Args)]
pub struct EditProviderArgs {
    /// The provider's name
    pub name: String,
    /// A new client id
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// File holding a new client secret (one line)
    #[arg(long, value_name = "PATH")]
    pub client_secret_file: Option<PathBuf>,
    /// A new authorization endpoint (with --token-url)
    #[arg(long, value_name = "URL", requires = "token_url")]
    pub auth_url: Option<String>,
    /// A new token endpoint (with --auth-url)
    #[arg(long, value_name = "URL", requires = "auth_url")]
    pub token_url: Option<String>,
    /// A new RFC 7009 revocation endpoint
    #[arg(long, value_name = "URL", conflicts_with = "no_revoke_url")]
    pub revoke_url: Option<String>,
    /// Forget the revocation endpoint
    #[arg(long)]
    pub no_revoke_url: bool,
    /// The new set of scopes connections may ask for (repeat; replaces the old set)
    #[arg(long = "scope", value_name = "S")]
    pub scopes: Vec<String>,
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RmProviderArgs {
    /// The provider's name
    pub name: String,
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AddProviderArgs {
    /// Provider name: [a-z][a-z0-9_-]{0,31}, e.g. github-work
    pub name: String,
    /// github, gitlab, microsoft, google or custom
    #[arg(long)]
    pub preset: String,
    /// The OAuth app's client id
    #[arg(long, value_name = "ID")]
    pub client_id: String,
    /// File holding the OAuth app's client secret (one line)
    #[arg(long, value_name = "PATH")]
    pub client_secret_file: PathBuf,
    /// Authorization endpoint (custom; overrides a preset's, with --token-url)
    #[arg(long, value_name = "URL", requires = "token_url")]
    pub auth_url: Option<String>,
    /// Token endpoint (custom; overrides a preset's, with --auth-url)
    #[arg(long, value_name = "URL", requires = "auth_url")]
    pub token_url: Option<String>,
    /// RFC 7009 revocation endpoint, if the provider has one
    #[arg(long, value_name = "URL")]
    pub revoke_url: Option<String>,
    /// A scope connections may ask for (repeat; default: the preset's)
    #[arg(long = "scope", value_name = "S")]
    pub scopes: Vec<String>,
    /// custom only: the kind tokens become: generic (default), github or gitlab
    #[arg(long)]
    pub kind: Option<String>,
    /// For tokens that become generic secrets: the variable holding the token [default:
    /// ACCESS_TOKEN]
    #[arg(long, value_name = "NAME")]
    pub variable: Option<String>,
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The provider's name (see `maestro oauth providers ls`)
    pub provider: String,
    /// Name of the secret to make, e.g. GITHUB
    #[arg(long, value_name = "SECRET_NAME")]
    pub name: String,
    /// A scope to ask for, within the provider's (repeat; default: all of the provider's)
    #[arg(long = "scope", value_name = "S")]
    pub scopes: Vec<String>,
    /// How long to wait for the authorization, e.g. 5m [default: 10m, the most]
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// github and gitlab providers: the owners or repository path prefixes this account
    /// serves, e.g. acme,alice/dotfiles (set on the new secret once connected; see `maestro
    /// secrets add --owners`)
    #[arg(long, value_name = "LIST")]
    pub owners: Option<String>,
    /// Print the authorization and the result as JSON objects, one per line
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReconnectArgs {
    /// The OAuth secret's name
    pub name: String,
    /// A scope to ask for (repeat; default: the ones granted last time)
    #[arg(long = "scope", value_name = "S")]
    pub scopes: Vec<String>,
    /// How long to wait for the authorization, e.g. 5m [default: 10m, the most]
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Print the authorization and the result as JSON objects, one per line
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RefreshArgs {
    /// The OAuth secret's name
    pub name: String,
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
}

/// Why an `oauth` command cannot go on. Never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum OauthError {
    #[error(
        "invalid provider name '{0}': use 1 to 32 of a-z, 0-9, '-' and '_', starting with a letter, or team/NAME for a team's provider"
    )]
    ProviderName(String),
    #[error("unknown preset '{0}'; use github, gitlab, microsoft, google or custom")]
    Preset(String),
    #[error("{0}")]
    Scope(#[from] wire::ScopeError),
    #[error("cannot read the client secret from {path}: {source}")]
    ReadSecret { path: String, source: io::Error },
    #[error("{path} is empty; it must hold the OAuth app's client secret")]
    EmptySecret { path: String },
    #[error(
        "{path} is larger than {MAX_CLIENT_SECRET_BYTES} bytes; it must hold only the client secret"
    )]
    SecretTooLarge { path: String },
    #[error("{path} must hold the client secret on one line, as UTF-8 text")]
    SecretNotOneLine { path: String },
    #[error("invalid --timeout '{0}'; write a duration from 1s to 10m, such as 5m or 90s")]
    Timeout(String),
    #[error("cannot write the authorization URL: {0}")]
    Write(io::Error),
    #[error("{0}")]
    Failed(String),
    #[error(
        "no authorization within {0}; it was cancelled and nothing was stored. Run the command again and open the URL in time"
    )]
    TimedOut(String),
    #[error("--owners {0}")]
    Owners(String),
    #[error(
        "--owners is for providers whose tokens become github or gitlab secrets; {provider} makes {kind} secrets"
    )]
    OwnersKind { provider: String, kind: String },
    #[error(
        "connected {name}, but setting its owners failed: {why}; run `maestro secrets edit {name} --owners LIST`"
    )]
    OwnersNotSet { name: String, why: String },
}

pub async fn run(client: &Client, command: OauthCommand) -> anyhow::Result<Output> {
    match command {
        OauthCommand::Providers(ProvidersCommand::Add(args)) => add_provider(client, *args).await,
        OauthCommand::Providers(ProvidersCommand::Ls(args)) => list_providers(client, args).await,
        OauthCommand::Providers(ProvidersCommand::Edit(args)) => edit_provider(client, *args).await,
        OauthCommand::Providers(ProvidersCommand::Rm(args)) => remove_provider(client, args).await,
        OauthCommand::Connect(args) => connect(client, args).await,
        OauthCommand::Reconnect(args) => reconnect(client, args).await,
        OauthCommand::Refresh(args) => refresh(client, args).await,
    }
}

/// Reads the client secret: bounded, one line (a trailing newline is dropped), zeroized.
fn read_client_secret(path: &Path) -> Result<SecretValue, OauthError> {
    let shown = path.display().to_string();
    let read_err = |source| OauthError::ReadSecret { path: shown.clone(), source };
    let mut file = File::open(path).map_err(read_err)?;
    let cap = MAX_CLIENT_SECRET_BYTES + 3;
    let mut buf = Zeroizing::new(vec![0u8; cap]);
    let mut len = 0;
    while len < cap {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_err(e)),
        }
    }
    buf.truncate(len);
    crate::fields::strip_single_line_newline(&mut buf);
    if buf.is_empty() {
        return Err(OauthError::EmptySecret { path: shown });
    }
    if buf.len() > MAX_CLIENT_SECRET_BYTES {
        return Err(OauthError::SecretTooLarge { path: shown });
    }
    match String::from_utf8(std::mem::take(&mut *buf)) {
        Ok(text) if !text.chars().any(char::is_control) => Ok(SecretValue::new(text)),
        Ok(text) => {
            drop(SecretValue::new(text));
            Err(OauthError::SecretNotOneLine { path: shown })
        }
        Err(e) => {
            drop(Zeroizing::new(e.into_bytes()));
            Err(OauthError::SecretNotOneLine { path: shown })
        }
    }
}

/// A provider's name as users write it: `NAME`, or `team/NAME` for a team's (docs/teams.md).
fn check_provider_name(name: &str) -> Result<(), OauthError> {
    let valid = match name.split_once('/') {
        Some((team, bare)) => {
            maestro_wire::teams::is_valid_team_name(team) && wire::is_valid_provider_name(bare)
        }
        None => wire::is_valid_provider_name(name),
    };
    if valid {
        Ok(())
    } else {
        Err(OauthError::ProviderName(clean(&name.chars().take(80).collect::<String>())))
    }
}

async fn add_provider(client: &Client, args: AddProviderArgs) -> anyhow::Result<Output> {
    check_provider_name(&args.name)?;
    let preset =
        wire::preset(&args.preset).ok_or_else(|| OauthError::Preset(clean(&args.preset)))?;
    let scopes = wire::check_scopes(&args.scopes).map_err(OauthError::from)?;
    wire::check_preset_scopes(preset, &scopes).map_err(OauthError::from)?;
    let client_secret = read_client_secret(&args.client_secret_file)?;
    let body = AddProvider {
        name: args.name,
        preset: args.preset,
        client_id: args.client_id,
        client_secret,
        auth_url: args.auth_url,
        token_url: args.token_url,
        revoke_url: args.revoke_url,
        scopes,
        kind: args.kind,
        variable: args.variable,
    };
    let answer = client.send(Method::POST, &["v1", "oauth", "providers"], &body).await?;
    drop(body);
    if args.json {
        return Ok(answer.pretty::<ProviderInfo>()?);
    }
    let p: ProviderInfo = answer.parse()?;
    Ok(output(format!(
        "added OAuth provider {} ({}): tokens become {} secrets ({}); scopes: {}\n\
         register this redirect URI with the OAuth app: {}\n\
         on deletion: {}\n",
        p.name,
        p.preset,
        p.kind,
        p.token_field,
        scope_list(&p.scopes),
        p.redirect_uri,
        p.revocation
    )))
}

async fn edit_provider(client: &Client, args: EditProviderArgs) -> anyhow::Result<Output> {
    check_provider_name(&args.name)?;
    let scopes = if args.scopes.is_empty() {
        None
    } else {
        Some(wire::check_scopes(&args.scopes).map_err(OauthError::from)?)
    };
    let client_secret = args.client_secret_file.as_deref().map(read_client_secret).transpose()?;
    let body = EditProvider {
        client_id: args.client_id,
        client_secret,
        auth_url: args.auth_url,
        token_url: args.token_url,
        revoke_url: if args.no_revoke_url { Some(String::new()) } else { args.revoke_url },
        scopes,
    };
    let answer =
        client.send(Method::PATCH, &["v1", "oauth", "providers", &args.name], &body).await?;
    drop(body);
    if args.json {
        return Ok(answer.pretty::<ProviderInfo>()?);
    }
    let p: ProviderInfo = answer.parse()?;
    Ok(output(format!(
        "edited OAuth provider {} ({}): client id {}; scopes: {}; token URL {}\n",
        p.name,
        p.preset,
        p.client_id,
        scope_list(&p.scopes),
        p.token_url
    )))
}

async fn remove_provider(client: &Client, args: RmProviderArgs) -> anyhow::Result<Output> {
    check_provider_name(&args.name)?;
    let answer = client.delete(&["v1", "oauth", "providers", &args.name]).await?;
    if args.json {
        return Ok(answer.pretty::<ProviderRemoved>()?);
    }
    Ok(output(format!("removed OAuth provider {}\n", args.name)))
}

fn scope_list(scopes: &[String]) -> String {
    if scopes.is_empty() { "none".to_owned() } else { scopes.join(" ") }
}

async fn list_providers(client: &Client, args: LsArgs) -> anyhow::Result<Output> {
    let answer = client.get(&["v1", "oauth", "providers"]).await?;
    if args.json {
        return Ok(answer.pretty::<Vec<ProviderInfo>>()?);
    }
    let providers: Vec<ProviderInfo> = answer.parse()?;
    if providers.is_empty() {
        return Ok(output(
            "no OAuth providers; add one with `maestro oauth providers add NAME --preset github \
             --client-id ID --client-secret-file PATH`\n"
                .to_owned(),
        ));
    }
    let mut table = Table::new(&["NAME", "PRESET", "KIND", "CLIENT ID", "SCOPES", "TOKEN URL"]);
    for p in &providers {
        table.row(vec![
            p.name.clone(),
            p.preset.clone(),
            p.kind.clone(),
            p.client_id.clone(),
            scope_list(&p.scopes),
            p.token_url.clone(),
        ]);
    }
    let mut text = table.render();
    if let Some(p) = providers.first() {
        text.push_str(&format!(
            "redirect URI (register it with each OAuth app): {}\n",
            p.redirect_uri
        ));
    }
    Ok(output(text))
}

fn parse_timeout(text: Option<&str>) -> Result<Duration, OauthError> {
    let Some(text) = text else { return Ok(MAX_TIMEOUT) };
    let d = humantime::parse_duration(text.trim()).map_err(|_| OauthError::Timeout(clean(text)))?;
    if d < Duration::from_secs(1) || d > MAX_TIMEOUT {
        return Err(OauthError::Timeout(clean(text)));
    }
    Ok(d)
}

async fn connect(client: &Client, args: ConnectArgs) -> anyhow::Result<Output> {
    check_provider_name(&args.provider)?;
    input::secret_name(&args.name)?;
    let scopes = wire::check_scopes(&args.scopes).map_err(OauthError::from)?;
    let timeout = parse_timeout(args.timeout.as_deref())?;
    if let Some(list) = &args.owners {
        owners::parse(list).map_err(OauthError::Owners)?;
        check_owners_kind(client, &args.provider).await?;
    }
    let name = args.name.clone();
    let body = Connect { provider: args.provider, name: args.name, scopes };
    let answer = client.send(Method::POST, &["v1", "oauth", "connect"], &body).await?;
    let started: AuthorizationStarted = answer.parse()?;
    let done = wait(client, started, timeout, args.json, "connected").await?;
    let Some(list) = args.owners else { return Ok(done) };
    // The new secret is version 1 without owners until this edit; it is not active anywhere yet.
    let body = serde_json::json!({ "fields": { "owners": list } });
    let edited = client.send(Method::PATCH, &["v1", "secrets", &name], &body).await;
    let meta: SecretMeta = match edited.map(|a| a.parse::<SecretMeta>()) {
        Ok(Ok(meta)) => meta,
        Ok(Err(e)) => return Err(OauthError::OwnersNotSet { name, why: e.to_string() }.into()),
        Err(e) => return Err(OauthError::OwnersNotSet { name, why: e.to_string() }.into()),
    };
    if args.json {
        return Ok(done);
    }
    let mut text = done;
    text.push_str(&format!(
        "owners of {} (version {}): {list}; git gets it for these repositories only, and it sets no variables\n",
        meta.name, meta.version
    ));
    Ok(text)
}

/// Refuses `--owners` for a provider whose tokens become secrets of a kind without owners
/// (a provider not in the list is left to the broker).
async fn check_owners_kind(client: &Client, provider: &str) -> anyhow::Result<()> {
    let providers: Vec<ProviderInfo> = client.get(&["v1", "oauth", "providers"]).await?.parse()?;
    if let Some(p) = providers.iter().find(|p| p.name == provider)
        && maestro_wire::catalog::kind(&p.kind).and_then(|k| k.owners_field()).is_none()
    {
        return Err(
            OauthError::OwnersKind { provider: p.name.clone(), kind: p.kind.clone() }.into()
        );
    }
    Ok(())
}

async fn reconnect(client: &Client, args: ReconnectArgs) -> anyhow::Result<Output> {
    input::secret_name(&args.name)?;
    let scopes = wire::check_scopes(&args.scopes).map_err(OauthError::from)?;
    let timeout = parse_timeout(args.timeout.as_deref())?;
    let body = Reconnect { name: args.name, scopes };
    let answer = client.send(Method::POST, &["v1", "oauth", "reconnect"], &body).await?;
    let started: AuthorizationStarted = answer.parse()?;
    wait(client, started, timeout, args.json, "reconnected").await
}

/// Prints the authorization, then polls until it is over.
async fn wait(
    client: &Client,
    started: AuthorizationStarted,
    timeout: Duration,
    json: bool,
    done_verb: &str,
) -> anyhow::Result<Output> {
    let line = if json {
        serde_json::to_string(&started).map_err(|e| OauthError::Failed(e.to_string()))?
    } else {
        started.authorization_url.clone()
    };
    if !json {
        // Said on stderr, so stdout stays the bare URL that scripts read.
        let mut err = io::stderr().lock();
        let _ = writeln!(
            err,
            "maestro: open this URL in your browser; waiting for the provider (Ctrl-C to stop)"
        );
    }
    {
        let mut out = io::stdout().lock();
        writeln!(out, "{line}").and_then(|()| out.flush()).map_err(OauthError::Write)?;
    }
    let id = started.id.as_str();
    let deadline = Instant::now() + timeout;
    let status = loop {
        tokio::time::sleep(POLL).await;
        let status = match client.get(&["v1", "oauth", "authorizations", id]).await {
            Ok(answer) => answer.parse::<AuthorizationStatus>()?,
            // A broker restarting is not the end of the wait; anything else is.
            Err(ClientError::Refused { .. } | ClientError::Timeout { .. })
                if Instant::now() < deadline =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if !status.state.is_open() {
            break status;
        }
        if Instant::now() >= deadline {
            let answer =
                client.post_empty(&["v1", "oauth", "authorizations", id, "cancel"]).await?;
            let status: AuthorizationStatus = answer.parse()?;
            if status.state.is_open() || status.state == AuthorizationState::Cancelled {
                let shown = humantime::format_duration(timeout).to_string();
                return Err(OauthError::TimedOut(shown).into());
            }
            break status;
        }
    };
    if status.state != AuthorizationState::Done {
        let message = status.message.clone().unwrap_or_else(|| {
            format!("the authorization ended {:?}; nothing was stored", status.state)
        });
        return Err(OauthError::Failed(message).into());
    }
    if json {
        let mut text =
            serde_json::to_string(&status).map_err(|e| OauthError::Failed(e.to_string()))?;
        text.push('\n');
        return Ok(output(text));
    }
    Ok(output(result_line(done_verb, &status)))
}

fn result_line(verb: &str, status: &AuthorizationStatus) -> String {
    match &status.secret {
        Some(meta) => {
            let oauth = meta.oauth.as_ref();
            format!(
                "{verb} {} (provider {}, kind {}, version {}): scopes {}; token expires {}\n",
                meta.name,
                status.provider,
                meta.kind,
                meta.version,
                oauth.map_or_else(|| "none".to_owned(), |o| scope_list(&o.scopes)),
                opt_time(oauth.and_then(|o| o.expires_at.as_deref()))
            )
        }
        None => format!("{verb} {} (provider {})\n", status.secret_name, status.provider),
    }
}

async fn refresh(client: &Client, args: RefreshArgs) -> anyhow::Result<Output> {
    input::secret_name(&args.name)?;
    let body = RefreshNow { name: args.name };
    let answer = client.send(Method::POST, &["v1", "oauth", "refresh"], &body).await?;
    if args.json {
        return Ok(answer.pretty::<SecretMeta>()?);
    }
    let meta: SecretMeta = answer.parse()?;
    let expires = meta.oauth.as_ref().and_then(|o| o.expires_at.as_deref());
    Ok(output(key_values(&[
        ("refreshed", meta.name.clone()),
        ("version", meta.version.to_string()),
        ("token expires", opt_time(expires)),
        ("scopes", list(&meta.oauth.as_ref().map(|o| o.scopes.clone()).unwrap_or_default())),
    ])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_secret_files_are_one_bounded_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "planted-secret\n").unwrap();
        assert_eq!(read_client_secret(&path).unwrap().expose(), "planted-secret");
        std::fs::write(&path, "a\nplanted\n").unwrap();
        let e = read_client_secret(&path).unwrap_err().to_string();
        assert!(e.contains("one line") && !e.contains("planted"), "{e}");
        std::fs::write(&path, "").unwrap();
        assert!(matches!(read_client_secret(&path), Err(OauthError::EmptySecret { .. })));
        std::fs::write(&path, "x".repeat(MAX_CLIENT_SECRET_BYTES + 1)).unwrap();
        assert!(matches!(read_client_secret(&path), Err(OauthError::SecretTooLarge { .. })));
        assert!(matches!(
            read_client_secret(&dir.path().join("missing")),
            Err(OauthError::ReadSecret { .. })
        ));
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout(None).unwrap(), MAX_TIMEOUT);
        assert_eq!(parse_timeout(Some("90s")).unwrap(), Duration::from_secs(90));
        assert!(parse_timeout(Some("11m")).is_err());
        assert!(parse_timeout(Some("0s")).is_err());
        assert!(parse_timeout(Some("soon")).is_err());
    }
}
