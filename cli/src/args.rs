//! The command line: every subcommand and flag of `maestro`, as clap derives them.
//!
//! Parsing stops at shapes (which flags, how many values). Meaning (field values, TTLs, names)
//! is checked by the modules that use them, so that their errors are one line and exit 1, not
//! clap's multi-line usage errors.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// maestro: keep secrets in the Maestro broker and activate them for sandbox sessions.
#[derive(Debug, Parser)]
#[command(name = "maestro", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the broker is and how to trust and authenticate to it. Each flag overrides its
/// environment variable.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connection (every command)")]
pub struct GlobalArgs {
    /// Base URL of the broker [env: MAESTRO_URL; default: https://127.0.0.1:8443]
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// PEM file of the broker's CA certificate, the only root trusted [env: MAESTRO_CA;
    /// default: DATA_DIR/ca.pem when it exists]
    #[arg(long, global = true, value_name = "PATH")]
    pub ca: Option<PathBuf>,
    /// File holding the API token [env: MAESTRO_TOKEN or MAESTRO_TOKEN_FILE; default:
    /// DATA_DIR/admin.token when it exists]
    #[arg(long, global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// The broker's data directory, used only to find ca.pem and admin.token
    /// [env: MAESTRO_DATA_DIR; default: $XDG_DATA_HOME/maestro, /var/lib/maestro for root,
    /// else ~/.local/share/maestro, as `maestro-broker serve`]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add, edit, remove, list and activate secrets.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Create, list, show and end sandbox sessions.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Show your whole audit trail: activations, fetches, injections, file reads, denials.
    Audit(AuditArgs),
    /// Show the integrations catalog: kinds, their fields, variables and files.
    Kinds(KindsArgs),
    /// Connect OAuth providers (GitHub, GitLab, Microsoft, custom); the broker refreshes tokens.
    #[command(subcommand)]
    Oauth(crate::commands::oauth::OauthCommand),
    /// Unusual usage the broker flagged (docs/alerts.md): list, acknowledge, configure actions.
    #[command(subcommand)]
    Alerts(crate::commands::alerts::AlertsCommand),
    /// Teams and their members (owner, admin, member, viewer); team secrets are `team/NAME`.
    #[command(subcommand)]
    Teams(crate::commands::teams::TeamsCommand),
    /// API tokens with scopes and an expiry: list, create (shown once), revoke.
    #[command(subcommand)]
    Tokens(crate::commands::tokens::TokensCommand),
    /// Service accounts (non-human principals for CI or a control plane): list, create, remove.
    #[command(subcommand, visible_alias = "sa")]
    ServiceAccounts(crate::commands::tokens::ServiceAccountsCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(CompletionsArgs),
    /// Print the man page of `maestro` on stdout, or write one page per command into a directory.
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write maestro.1 and one page per subcommand (maestro-secrets-add.1, ...) into DIR
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Register a new secret.
    Add(AddArgs),
    /// Make a new version of a secret: set or remove fields, change kind, description, tags,
    /// exposure or hosts.
    Edit(EditArgs),
    /// Delete a secret (it is deactivated in every session first). Asks first on a terminal.
    Rm(RmArgs),
    /// A secret's value leaked: deactivate it in every session, mark it compromised until it is
    /// edited with a new value, revoke it at the provider where possible (OAuth), and print how
    /// to rotate it at the provider.
    Compromised(NameArgs),
    /// List your secrets (`--active`: every secret active anywhere, with time left).
    Ls(SecretsLsArgs),
    /// Show a secret's metadata (never a value).
    Show(NameArgs),
    /// Show a secret's usage history.
    History(HistoryArgs),
    /// Show a secret's usage summary: uses per session, per command and per day, first and
    /// last use.
    Usage(NameArgs),
    /// Activate secrets in a live session (`--for 2h`: deactivated automatically after 2h).
    Activate(ActivationArgs),
    /// Deactivate secrets in a session.
    Deactivate(ActivationArgs),
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Create a session; prints its id, then its one-time enrollment token.
    Create(CreateSessionArgs),
    /// List your sessions.
    Ls(JsonArgs),
    /// Show a session's state and active secrets.
    Show(SessionArgs),
    /// End a session for good (its agent drops every secret).
    End(SessionArgs),
}

/// Where a secret's field values come from. Prefer files or stdin: argv is visible to every
/// user of the machine through /proc.
#[derive(Debug, Args, Default)]
pub struct FieldArgs {
    /// A field and its value (visible in argv: prefer --field-file or --field-stdin)
    #[arg(long = "field", value_name = "F=VALUE", allow_hyphen_values = true)]
    pub field: Vec<String>,
    /// A field whose value is the content of PATH
    #[arg(long = "field-file", value_name = "F=PATH")]
    pub field_file: Vec<String>,
    /// A field whose value is all of standard input
    #[arg(long = "field-stdin", value_name = "F")]
    pub field_stdin: Option<String>,
    /// github and gitlab: the owners or repository path prefixes this token serves, e.g.
    /// alice,acme/infra (the `owners` field; git gets the secret for those only, and it sets
    /// no variables; `--remove-field owners` makes it the default again)
    #[arg(long, value_name = "LIST")]
    pub owners: Option<String>,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Secret name: [A-Z][A-Z0-9_]{0,63}, e.g. AWS_PROD
    pub name: String,
    /// Integration kind (see `maestro kinds`)
    #[arg(long)]
    pub kind: String,
    #[command(flatten)]
    pub fields: FieldArgs,
    /// Free text shown by `secrets ls` and `secrets show`
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// A tag (repeat for several)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// plain (the sandbox sees the values) or sealed (it sees placeholders; the agent sends the
    /// values only to the secret's hosts) [default: plain]
    #[arg(long, value_name = "plain|sealed")]
    pub exposure: Option<String>,
    /// For a sealed secret: a host its values may be sent to, within the kind's defaults
    /// (repeat for several; required for generic), e.g. api.example.com or *.example.com
    #[arg(long = "allow-host", value_name = "HOST")]
    pub allow_hosts: Vec<String>,
    #[command(flatten)]
    pub alerts: crate::commands::alerts::SecretAlertFlags,
    /// How long an activation lasts when `activate` gives no --for, e.g. 1h [default: until
    /// the session ends]
    #[arg(long, value_name = "DURATION")]
    pub activation_default: Option<String>,
    /// The longest activation allowed, e.g. 8h; a longer --for is refused
    #[arg(long, value_name = "DURATION")]
    pub activation_max: Option<String>,
    /// How often the value should change, e.g. 90d; past it the secret is marked in
    /// `secrets ls` and `secrets show`
    #[arg(long, value_name = "DURATION")]
    pub rotate_every: Option<String>,
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EditArgs {
    /// Name of the secret to edit
    pub name: String,
    /// New kind; every field of the new kind must then be given
    #[arg(long)]
    pub kind: Option<String>,
    #[command(flatten)]
    pub fields: FieldArgs,
    /// Remove a field (repeat for several)
    #[arg(long = "remove-field", value_name = "F")]
    pub remove_fields: Vec<String>,
    /// New description
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// Replace the tags with these (repeat for several)
    #[arg(long = "tag", value_name = "TAG", conflicts_with = "clear_tags")]
    pub tags: Vec<String>,
    /// Remove every tag
    #[arg(long)]
    pub clear_tags: bool,
    /// New exposure: plain or sealed (plain drops the hosts named)
    #[arg(long, value_name = "plain|sealed")]
    pub exposure: Option<String>,
    /// Replace the hosts a sealed secret's values may be sent to (repeat for several)
    #[arg(long = "allow-host", value_name = "HOST", conflicts_with = "default_hosts")]
    pub allow_hosts: Vec<String>,
    /// Go back to the kind's default hosts
    #[arg(long)]
    pub default_hosts: bool,
    #[command(flatten)]
    pub alerts: crate::commands::alerts::SecretAlertFlags,
    /// How long an activation lasts when `activate` gives no --for, e.g. 1h, or none
    #[arg(long, value_name = "DURATION")]
    pub activation_default: Option<String>,
    /// The longest activation allowed, e.g. 8h, or none; a longer --for is refused
    #[arg(long, value_name = "DURATION")]
    pub activation_max: Option<String>,
    /// How often the value should change, e.g. 90d, or none; past it the secret is marked in
    /// `secrets ls` and `secrets show`
    #[arg(long, value_name = "DURATION")]
    pub rotate_every: Option<String>,
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// Secret name
    pub name: String,
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Secret name
    pub name: String,
    /// Do not ask for confirmation (asked only when stdin and stderr are terminals)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Secret name
    pub name: String,
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Args)]
pub struct JsonArgs {
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SecretsLsArgs {
    /// List every secret active in a live session instead, with the session's label and the
    /// time left
    #[arg(long)]
    pub active: bool,
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ActivationArgs {
    /// The session: its id, a unique id prefix or its label [default: the only live session]
    #[arg(long, value_name = "SESSION")]
    pub session: Option<String>,
    /// `activate` only: deactivate automatically after this long, e.g. 2h [default: the
    /// secret's default activation time, else until the session ends]
    #[arg(long = "for", value_name = "DURATION")]
    pub for_: Option<String>,
    /// Secret names
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Print the session as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CreateSessionArgs {
    /// Lifetime, e.g. 12h, 90m, 30s [default: 12h; at most 30 days]
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
    /// Free text shown by `sessions ls`
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
    /// Write the sandbox's enrollment bundle to PATH (mode 0600) instead of printing the token
    #[arg(long, value_name = "PATH")]
    pub bundle_out: Option<PathBuf>,
    /// A broker URL for the bundle, repeatable: the agent tries them in order and moves to the
    /// next that answers when one stops [default: the --url this command uses]
    #[arg(long = "broker-url", value_name = "URL", requires = "bundle_out")]
    pub broker_url: Vec<String>,
    /// Serve decoy credentials in the session; any read of one is flagged at once and acted on
    /// (docs/alerts.md)
    #[arg(long)]
    pub decoys: bool,
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SessionArgs {
    /// The session's id
    pub id: String,
    /// Print the broker's answer as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub export: Option<AuditCommand>,
    /// Only records about this secret
    #[arg(long, value_name = "NAME")]
    pub secret: Option<String>,
    /// Only records about this session (its id, a unique id prefix, or its label)
    #[arg(long, value_name = "ID|LABEL")]
    pub session: Option<String>,
    /// Only these actions (repeat, or a comma list: file_read,injected)
    #[arg(long, value_name = "ACTION")]
    pub action: Vec<String>,
    /// Only records of this command name
    #[arg(long, value_name = "NAME")]
    pub command: Option<String>,
    /// Only records of this uid
    #[arg(long, value_name = "UID")]
    pub uid: Option<u32>,
    /// Only records at or after this time (RFC 3339, or a duration before now: 30m, 1h, 7d)
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only records at or before this time (RFC 3339 or a duration before now)
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Print the records as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Write records as JSON lines, one a line, for SIEM tools (fields: docs/cli.md,
    /// "History and export"); --follow keeps writing new ones until interrupted.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Records from this time on (RFC 3339, or a duration before now: 30m, 1h, 7d)
    #[arg(long, value_name = "TIME")]
    pub since: String,
    /// Records up to this time (RFC 3339 or a duration before now)
    #[arg(long, value_name = "TIME", conflicts_with = "follow")]
    pub until: Option<String>,
    /// Keep polling and write new records as they are appended, until interrupted
    #[arg(long)]
    pub follow: bool,
    /// Seconds between polls with --follow
    #[arg(long, value_name = "SECONDS", default_value_t = 2, requires = "follow",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub interval: u64,
    /// Only records about this secret
    #[arg(long, value_name = "NAME")]
    pub secret: Option<String>,
    /// Only records about this session (its id, a unique id prefix, or its label)
    #[arg(long, value_name = "ID|LABEL")]
    pub session: Option<String>,
    /// Only these actions (repeat, or a comma list: file_read,injected)
    #[arg(long, value_name = "ACTION")]
    pub action: Vec<String>,
}

/// Which audit records to fetch: by default the newest 10,000; pages with `--limit` and
/// `--before`; everything with `--all`.
#[derive(Debug, Args, Clone, Default)]
pub struct PageArgs {
    /// Only the newest N records (1 to 10000) [default: 10000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub limit: Option<i64>,
    /// Only records older than this SEQ (the SEQ of the oldest record of the page before)
    #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(i64).range(1..))]
    pub before: Option<i64>,
    /// Every record, fetched page by page
    #[arg(long, conflicts_with_all = ["limit", "before"])]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct KindsArgs {
    /// Show one kind in detail
    pub kind: Option<String>,
    /// Print the catalog as JSON
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,
    /// Print the catalog as the Markdown table docs/integrations.md shows
    #[arg(long, conflicts_with = "kind")]
    pub markdown: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_contract_forms() {
        let cli = Cli::try_parse_from([
            "maestro",
            "secrets",
            "add",
            "AWS_PROD",
            "--kind",
            "aws",
            "--field",
            "access_key_id=AKIA1",
            "--field-file",
            "secret_access_key=/tmp/k",
            "--field-stdin",
            "session_token",
            "--tag",
            "prod",
            "--tag",
            "aws",
        ])
        .unwrap();
        let Command::Secrets(SecretsCommand::Add(add)) = cli.command else { panic!("not add") };
        assert_eq!(add.fields.field, ["access_key_id=AKIA1"]);
        assert_eq!(add.fields.field_file, ["secret_access_key=/tmp/k"]);
        assert_eq!(add.fields.field_stdin.as_deref(), Some("session_token"));
        assert_eq!(add.tags, ["prod", "aws"]);

        let cli = Cli::try_parse_from([
            "maestro",
            "secrets",
            "activate",
            "--session",
            "s1",
            "A",
            "B",
            "--url",
            "https://x",
        ])
        .unwrap();
        assert_eq!(cli.global.url.as_deref(), Some("https://x"));
        let Command::Secrets(SecretsCommand::Activate(a)) = cli.command else { panic!() };
        assert_eq!(a.names, ["A", "B"]);
        assert!(Cli::try_parse_from(["maestro", "secrets", "activate", "--session", "s"]).is_err());
    }

    #[test]
    fn exposure_and_hosts_flags() {
        let cli = Cli::try_parse_from([
            "maestro",
            "secrets",
            "add",
            "API",
            "--kind",
            "generic",
            "--exposure",
            "sealed",
            "--allow-host",
            "api.example.com",
            "--allow-host",
            "*.example.net",
        ])
        .unwrap();
        let Command::Secrets(SecretsCommand::Add(add)) = cli.command else { panic!("not add") };
        assert_eq!(add.exposure.as_deref(), Some("sealed"));
        assert_eq!(add.allow_hosts, ["api.example.com", "*.example.net"]);
        let cli =
            Cli::try_parse_from(["maestro", "secrets", "edit", "X", "--default-hosts"]).unwrap();
        let Command::Secrets(SecretsCommand::Edit(e)) = cli.command else { panic!() };
        assert!(e.default_hosts && e.allow_hosts.is_empty());
        assert!(
            Cli::try_parse_from([
                "maestro",
                "secrets",
                "edit",
                "X",
                "--default-hosts",
                "--allow-host",
                "a.b"
            ])
            .is_err()
        );
    }

    #[test]
    fn a_field_value_may_start_with_a_dash() {
        let cli =
            Cli::try_parse_from(["maestro", "secrets", "edit", "X", "--field", "A=-b"]).unwrap();
        let Command::Secrets(SecretsCommand::Edit(e)) = cli.command else { panic!() };
        assert_eq!(e.fields.field, ["A=-b"]);
    }
}
