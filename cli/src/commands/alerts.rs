//! `maestro alerts ...`: the unusual usage the broker flagged (docs/alerts.md): `ls` (filters
//! by secret and session), `ack ID...`, and `config` (the webhook and the default actions);
//! and the alert flags of `secrets add` / `secrets edit`.
//!
//! Every argument is checked, and the signing secret read, before the first request: a bad
//! input changes nothing at the broker.

use std::io::Read;
use std::os::fd::AsFd;

use clap::{Args, Subcommand};
use maestro_wire::SecretValue;
use maestro_wire::alerts::{
    self as wire, AckAlerts, Acked, Alert, AlertAction, AlertConfig, AlertConfigUpdate,
    MAX_WEBHOOK_SECRET_BYTES, MAX_WEBHOOK_URL_BYTES,
};
use reqwest::Method;
use zeroize::Zeroizing;

use super::{Output, output};
use crate::client::Client;
use crate::table::{Table, clean, key_values, list, opt, time};

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// List alerts, newest first.
    Ls(LsArgs),
    /// Acknowledge alerts (they stop showing as a marker on their secret).
    Ack(AckArgs),
    /// Show or change the webhook and what happens on an alert by default.
    Config(ConfigArgs),
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only alerts of this secret
    #[arg(long, value_name = "NAME")]
    pub secret: Option<String>,
    /// Only alerts of this session (its id, a unique id prefix, or its label)
    #[arg(long, value_name = "ID|LABEL")]
    pub session: Option<String>,
    /// Only alerts not acknowledged yet
    #[arg(long)]
    pub unacked: bool,
    /// At most N alerts (1 to 1000) [default: 100]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AckArgs {
    /// Alert ids (from `maestro alerts ls`)
    #[arg(required = true, value_name = "ID", value_parser = clap::value_parser!(i64).range(1..))]
    pub ids: Vec<i64>,
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The webhook alerts are POSTed to (https, or http to a loopback address); needs a
    /// signing secret (--webhook-secret-stdin) the first time
    #[arg(long, value_name = "URL", conflicts_with = "no_webhook")]
    pub webhook: Option<String>,
    /// Read the webhook's signing secret (16 to 1024 bytes) from standard input
    #[arg(long)]
    pub webhook_secret_stdin: bool,
    /// Remove the webhook and its signing secret
    #[arg(long)]
    pub no_webhook: bool,
    /// What happens on an alert by default: a comma list of notify, deactivate, end-session,
    /// or none
    #[arg(long, value_name = "ACTIONS")]
    pub on_alert: Option<String>,
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
}

/// The alert flags of `secrets add` and `secrets edit`.
#[derive(Debug, Args, Default)]
pub struct SecretAlertFlags {
    /// Rules turned off for this secret: a comma list (new_command, foreign_uid, burst,
    /// new_label, outside_exec, leak_attempt, scan_finding, decoy), or none
    #[arg(long, value_name = "RULES")]
    pub alerts_off: Option<String>,
    /// What happens on this secret's alerts: a comma list of notify, deactivate,
    /// end-session; none; or default (the user's, `maestro alerts config`)
    #[arg(long, value_name = "ACTIONS")]
    pub on_alert: Option<String>,
}

/// A bad flag of this module.
#[derive(Debug, thiserror::Error)]
pub enum AlertInputError {
    #[error("invalid rule '{0}' in --alerts-off; the rules are {1} (or none)")]
    Rule(String, String),
    #[error("invalid action '{0}' in --on-alert; use notify, deactivate, end-session or none")]
    Action(String),
    #[error(
        "--on-alert default is only for `secrets edit`; `maestro alerts config` sets the default"
    )]
    DefaultHere,
    #[error("the webhook URL is longer than {MAX_WEBHOOK_URL_BYTES} bytes")]
    UrlTooLong,
    #[error("cannot read the signing secret from standard input: {0}")]
    Stdin(std::io::Error),
    #[error("the signing secret on standard input is longer than {MAX_WEBHOOK_SECRET_BYTES} bytes")]
    SecretTooLong,
    #[error("the signing secret is not UTF-8 text")]
    SecretNotText,
}

fn split(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// `--on-alert`: `Ok(None)` default, `Ok(Some(list))` a list (empty for none).
fn parse_actions(text: &str) -> Result<Option<Vec<AlertAction>>, AlertInputError> {
    match text.trim() {
        "default" => Ok(None),
        "none" => Ok(Some(Vec::new())),
        t => split(t)
            .map(|a| AlertAction::parse(a).ok_or_else(|| AlertInputError::Action(clean(a))))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
    }
}

impl SecretAlertFlags {
    pub fn is_empty(&self) -> bool {
        self.alerts_off.is_none() && self.on_alert.is_none()
    }

    /// `--alerts-off` as the API takes it.
    pub fn rules_off(&self) -> Result<Option<Vec<String>>, AlertInputError> {
        let Some(text) = &self.alerts_off else { return Ok(None) };
        if text.trim() == "none" {
            return Ok(Some(Vec::new()));
        }
        split(text)
            .map(|r| {
                if wire::is_rule(r) {
                    Ok(r.to_owned())
                } else {
                    Err(AlertInputError::Rule(clean(r), wire::RULES.join(", ")))
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// `--on-alert`: `None` not given, `Some(None)` back to the default, `Some(Some(list))`.
    pub fn on_alert(&self) -> Result<Option<Option<Vec<AlertAction>>>, AlertInputError> {
        self.on_alert.as_deref().map(parse_actions).transpose()
    }
}

pub async fn run(client: &Client, command: AlertsCommand) -> anyhow::Result<Output> {
    match command {
        AlertsCommand::Ls(args) => ls(client, args).await,
        AlertsCommand::Ack(args) => ack(client, args).await,
        AlertsCommand::Config(args) => config(client, args).await,
    }
}

async fn ls(client: &Client, args: LsArgs) -> anyhow::Result<Output> {
    if let Some(name) = &args.secret {
        crate::input::secret_name(name)?;
    }
    let mut query = Vec::new();
    if let Some(s) = args.secret {
        query.push(("secret", s));
    }
    if let Some(s) = args.session {
        query.push(("session", s));
    }
    if args.unacked {
        query.push(("unacked", "1".to_owned()));
    }
    if let Some(l) = args.limit {
        query.push(("limit", l.to_string()));
    }
    let answer = client.get_query(&["v1", "alerts"], &query).await?;
    if args.json {
        return Ok(answer.pretty::<Vec<Alert>>()?);
    }
    let alerts: Vec<Alert> = answer.parse()?;
    if alerts.is_empty() {
        return Ok(output("no alerts\n".to_owned()));
    }
    Ok(output(table(&alerts)))
}

fn table(alerts: &[Alert]) -> String {
    let mut t =
        Table::new(&["ID", "AT", "RULE", "SECRET", "SESSION", "ACTIONS", "ACKED", "REASON"]);
    for a in alerts {
        t.row(vec![
            a.id.to_string(),
            time(&a.at),
            a.rule.clone(),
            opt(a.secret.as_deref()),
            a.session_label.clone().or_else(|| a.session_id.clone()).unwrap_or_else(|| "-".into()),
            actions_line(Some(&a.actions)),
            if a.acked_at.is_some() { "yes" } else { "no" }.to_owned(),
            clean(&a.reason),
        ]);
    }
    t.render()
}

/// The unacknowledged alerts of a secret (for `secrets show`).
pub async fn unacked_of(client: &Client, name: &str) -> anyhow::Result<Vec<Alert>> {
    let query = [("secret", name.to_owned()), ("unacked", "1".to_owned()), ("limit", "20".into())];
    Ok(client.get_query(&["v1", "alerts"], &query).await?.parse()?)
}

/// The flags block of `secrets show`.
pub fn flags_block(alerts: &[Alert]) -> String {
    let mut out = String::from("flags:\n");
    for a in alerts {
        out.push_str(&format!("  [{}] {} {}: {}\n", a.id, time(&a.at), a.rule, clean(&a.reason)));
    }
    out
}

/// `secrets show`'s alert count.
pub fn count_line(n: u64) -> String {
    if n == 0 { "none".to_owned() } else { format!("{n} not acknowledged (maestro alerts ls)") }
}

/// Actions for people: `default` when the secret has none of its own.
pub fn actions_line(actions: Option<&[AlertAction]>) -> String {
    match actions {
        None => "default".to_owned(),
        Some([]) => "none".to_owned(),
        Some(list) => list.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(","),
    }
}

async fn ack(client: &Client, args: AckArgs) -> anyhow::Result<Output> {
    let body = AckAlerts { ids: args.ids };
    let answer = client.send(Method::POST, &["v1", "alerts", "ack"], &body).await?;
    if args.json {
        return Ok(answer.pretty::<Acked>()?);
    }
    let acked: Acked = answer.parse()?;
    let ids: Vec<String> = acked.acked.iter().map(i64::to_string).collect();
    Ok(output(format!("acknowledged {}\n", list(&ids))))
}

/// Reads the signing secret from standard input (one trailing newline dropped).
fn read_secret() -> Result<SecretValue, AlertInputError> {
    // Read fd 0 through a duplicate, not through `io::stdin()`, whose internal buffer would
    // keep a copy of the secret that is never zeroized (as `crate::fields` does).
    let fd = std::io::stdin().as_fd().try_clone_to_owned().map_err(AlertInputError::Stdin)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_WEBHOOK_SECRET_BYTES + 4));
    std::fs::File::from(fd)
        .take(MAX_WEBHOOK_SECRET_BYTES as u64 + 3)
        .read_to_end(&mut buf)
        .map_err(AlertInputError::Stdin)?;
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    if buf.len() > MAX_WEBHOOK_SECRET_BYTES {
        return Err(AlertInputError::SecretTooLong);
    }
    SecretValue::from_utf8(&buf).map_err(|_| AlertInputError::SecretNotText)
}

async fn config(client: &Client, args: ConfigArgs) -> anyhow::Result<Output> {
    let changing = args.webhook.is_some()
        || args.webhook_secret_stdin
        || args.no_webhook
        || args.on_alert.is_some();
    let answer = if changing {
        if args.webhook.as_ref().is_some_and(|u| u.len() > MAX_WEBHOOK_URL_BYTES) {
            return Err(AlertInputError::UrlTooLong.into());
        }
        let on_alert = match args.on_alert.as_deref().map(parse_actions).transpose()? {
            Some(None) => return Err(AlertInputError::DefaultHere.into()),
            Some(Some(list)) => Some(list),
            None => None,
        };
        let webhook_secret = if args.webhook_secret_stdin { Some(read_secret()?) } else { None };
        let body = AlertConfigUpdate {
            webhook_url: if args.no_webhook { Some(String::new()) } else { args.webhook },
            webhook_secret,
            on_alert,
        };
        client.send(Method::PUT, &["v1", "alerts", "config"], &body).await?
    } else {
        client.get(&["v1", "alerts", "config"]).await?
    };
    if args.json {
        return Ok(answer.pretty::<AlertConfig>()?);
    }
    let c: AlertConfig = answer.parse()?;
    Ok(output(key_values(&[
        ("webhook", opt(c.webhook_url.as_deref())),
        ("signing secret", if c.webhook_secret_set { "set" } else { "-" }.to_owned()),
        ("on alert", actions_line(Some(&c.on_alert))),
    ])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_rules_and_actions_and_refuse_others() {
        let f = SecretAlertFlags {
            alerts_off: Some("new_command, burst".into()),
            on_alert: Some("notify,end-session".into()),
        };
        assert_eq!(f.rules_off().unwrap(), Some(vec!["new_command".into(), "burst".into()]));
        assert_eq!(
            f.on_alert().unwrap(),
            Some(Some(vec![AlertAction::Notify, AlertAction::EndSession]))
        );
        let none =
            SecretAlertFlags { alerts_off: Some("none".into()), on_alert: Some("default".into()) };
        assert_eq!(none.rules_off().unwrap(), Some(vec![]));
        assert_eq!(none.on_alert().unwrap(), Some(None));
        let bad = SecretAlertFlags {
            alerts_off: Some("bursts".into()),
            on_alert: Some("explode".into()),
        };
        assert!(bad.rules_off().unwrap_err().to_string().contains("invalid rule 'bursts'"));
        assert!(bad.on_alert().unwrap_err().to_string().contains("invalid action 'explode'"));
        assert!(SecretAlertFlags::default().is_empty());
    }
}
