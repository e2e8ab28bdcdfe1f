//! `maestro-broker`: serve the broker, add users, rotate the master key.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use maestro_broker::app::Settings;
use maestro_broker::datadir::DataDir;
use maestro_broker::server::{self, ServeOptions};
use maestro_broker::store::engine::DatabaseUrl;
use maestro_wire::limits::MAX_CERT_TTL_SECS;
use maestro_wire::{errors, logging};
use tracing_subscriber::EnvFilter;

/// The Maestro broker: encrypted secret store, session CA, user and agent APIs.
#[derive(Debug, Parser)]
#[command(name = "maestro-broker", version)]
struct Cli {
    /// Data directory: database, keys, CA, admin token [default: $XDG_DATA_HOME/maestro,
    /// /var/lib/maestro for root, else ~/.local/share/maestro].
    #[arg(long, global = true, env = "MAESTRO_DATA_DIR", value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
    /// PostgreSQL database shared by several brokers, postgres://USER@HOST:PORT/DATABASE
    /// (default: SQLite in the data dir). Prefer the environment variable: argv is public.
    #[arg(long, global = true, env = "MAESTRO_DATABASE_URL", hide_env_values = true)]
    // Checked in `run`, not by clap: clap's error would quote the URL, password and all.
    database: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the user API and the agent API over HTTPS on one port.
    Serve {
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: String,
        /// Extra host name or address for the server certificate (repeatable).
        #[arg(long = "hostname")]
        hostnames: Vec<String>,
        /// Longest life of a session certificate (at most 24h), e.g. 24h, 10m, 30s.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        cert_ttl: Duration,
        /// Interval between heartbeats on agent event streams.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        heartbeat: Duration,
        /// The https:// URL at which sandboxes and browsers reach this broker: enrollment
        /// bundles carry it, the server certificate names its host, and OAuth providers
        /// redirect to URL/v1/oauth/callback [default: https://ADDRESS:PORT of --listen].
        #[arg(long, env = "MAESTRO_PUBLIC_URL", value_name = "URL")]
        public_url: Option<String>,
        /// How long a renewed certificate's predecessor is still accepted, e.g. 60s.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        renew_overlap: Duration,
        /// Most connections open at once; more are closed at accept [default: the open-files
        /// limit less 256, at most 16384].
        #[arg(long)]
        max_connections: Option<usize>,
        /// Time for a TLS handshake, and for a request's head (an HTTP/2 preface included).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        header_timeout: Duration,
        /// A connection without traffic for this long is closed (at least 3 heartbeats).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        idle_timeout: Duration,
        /// Time for a request's whole body to arrive.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        body_timeout: Duration,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Make a new master key and re-wrap every data key with it (stop the broker first).
    RotateMasterKey,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user and print their API token (shown once).
    Add {
        /// User name: a-z, 0-9, '-', '_'.
        name: String,
    },
    /// List users: created, disabled, tokens, secrets, live sessions.
    Ls {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Disable a user: their tokens are refused at once, on every broker of the database.
    Disable { name: String },
    /// Enable a disabled user again.
    Enable { name: String },
    /// Remove a user and everything they own (refused while they have live sessions); their
    /// audit trail stays.
    Rm { name: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Nothing the broker writes is for other users: files 0600, directories 0700.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(log_filter(std::env::var("RUST_LOG").ok().as_deref()))
        .init();
    // Before the runtime's threads exist, so that every thread is covered. Every command:
    // `rotate-master-key` holds both master keys. Only `serve` says how it went: the admin
    // commands' stderr is their one-line error.
    maestro_broker::harden::harden(matches!(cli.command, Command::Serve { .. }));
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("maestro-broker: {}", errors::one_line(e.chain()));
            ExitCode::FAILURE
        }
    }
}

/// `RUST_LOG` (default `info`; an invalid one means the default), with the HTTP and TLS
/// libraries capped at `info`: at debug and trace they log request and response bodies.
fn log_filter(rust_log: Option<&str>) -> EnvFilter {
    EnvFilter::try_new(logging::filter_directives(rust_log, "info"))
        .unwrap_or_else(|_| EnvFilter::new(logging::filter_directives(None, "info")))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    let database = cli
        .database
        .as_deref()
        .map(DatabaseUrl::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("invalid --database (or MAESTRO_DATABASE_URL): {e}"))?;
    let dir = DataDir::new(data_dir(cli.data_dir)?).with_database_url(database);
    runtime.block_on(async move {
        match cli.command {
            Command::Serve {
                listen,
                hostnames,
                cert_ttl,
                heartbeat,
                public_url,
                renew_overlap,
                max_connections,
                header_timeout,
                idle_timeout,
                body_timeout,
            } => {
                if cert_ttl.as_secs() == 0 || cert_ttl.as_secs() > MAX_CERT_TTL_SECS {
                    anyhow::bail!("--cert-ttl must be between 1s and 24h");
                }
                if heartbeat < Duration::from_millis(100) || heartbeat > Duration::from_secs(3600) {
                    anyhow::bail!("--heartbeat must be between 100ms and 1h");
                }
                if renew_overlap > Duration::from_secs(3600) {
                    anyhow::bail!("--renew-overlap must be at most 1h");
                }
                let max_connections =
                    max_connections.unwrap_or_else(server::default_max_connections);
                if max_connections == 0 {
                    anyhow::bail!("--max-connections must be at least 1");
                }
                for (name, value) in [
                    ("--header-timeout", header_timeout),
                    ("--idle-timeout", idle_timeout),
                    ("--body-timeout", body_timeout),
                ] {
                    if value < Duration::from_millis(100) || value > Duration::from_secs(3600) {
                        anyhow::bail!("{name} must be between 100ms and 1h");
                    }
                }
                let settings =
                    Settings { cert_ttl, heartbeat, renew_overlap, body_timeout, public_url };
                let limits = server::ConnectionLimits {
                    max_connections,
                    header_timeout,
                    idle_timeout,
                    ..Default::default()
                };
                server::serve(ServeOptions { data_dir: dir, listen, hostnames, settings, limits })
                    .await?;
            }
            Command::User { command: UserCommand::Add { name } } => {
                let token = server::add_user(&dir, &name).await?;
                // The one place a token is printed: it is the command's whole output.
                println!("{}", token.expose());
            }
            Command::User { command: UserCommand::Ls { json } } => {
                let users = server::list_users(&dir).await?;
                print!("{}", user_table(&users, json)?);
            }
            Command::User { command: UserCommand::Disable { name } } => {
                server::set_user_disabled(&dir, &name, true).await?;
                println!("maestro-broker: user {name} disabled; their tokens are refused");
            }
            Command::User { command: UserCommand::Enable { name } } => {
                server::set_user_disabled(&dir, &name, false).await?;
                println!("maestro-broker: user {name} enabled");
            }
            Command::User { command: UserCommand::Rm { name } } => {
                server::remove_user(&dir, &name).await?;
                println!(
                    "maestro-broker: user {name} removed with their secrets, sessions and tokens"
                );
            }
            Command::RotateMasterKey => {
                let count = server::rotate_master_key(&dir).await?;
                println!("maestro-broker: re-wrapped {count} data keys under a new master key");
            }
        }
        Ok(())
    })
}

/// `user ls` output: a table, or JSON.
fn user_table(
    users: &[maestro_broker::store::tokens::UserSummary],
    json: bool,
) -> anyhow::Result<String> {
    use maestro_broker::clock::rfc3339;
    if json {
        let list: Vec<serde_json::Value> = users
            .iter()
            .map(|u| {
                serde_json::json!({
                    "name": u.name,
                    "created_at": rfc3339(u.created_at),
                    "disabled_at": u.disabled_at.map(rfc3339),
                    "tokens": u.tokens,
                    "secrets": u.secrets,
                    "live_sessions": u.live_sessions,
                })
            })
            .collect();
        let mut text = serde_json::to_string_pretty(&list)?;
        text.push('\n');
        return Ok(text);
    }
    let mut text = format!(
        "{:<32} {:<20} {:<20} {:>6} {:>7} {:>8}\n",
        "NAME", "CREATED", "DISABLED", "TOKENS", "SECRETS", "SESSIONS"
    );
    for u in users {
        text.push_str(&format!(
            "{:<32} {:<20} {:<20} {:>6} {:>7} {:>8}\n",
            u.name,
            rfc3339(u.created_at),
            u.disabled_at.map_or_else(|| "-".to_owned(), rfc3339),
            u.tokens,
            u.secrets,
            u.live_sessions
        ));
    }
    Ok(text)
}

/// The data directory as an absolute path: `--data-dir` or `MAESTRO_DATA_DIR`, else the
/// per-user default. Absolute, so that what `serve` prints and uses does not depend on where it
/// was started.
fn data_dir(given: Option<std::path::PathBuf>) -> anyhow::Result<std::path::PathBuf> {
    let dir = match given {
        Some(dir) => dir,
        None => maestro_wire::datadir::default_data_dir(nix::unistd::geteuid().is_root(), |k| {
            std::env::var_os(k)
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no data directory: HOME is not set; give --data-dir or MAESTRO_DATA_DIR"
            )
        })?,
    };
    std::path::absolute(&dir)
        .map_err(|e| anyhow::anyhow!("cannot resolve the data directory {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_cannot_open_the_http_stack() {
        let f = log_filter(Some("trace,hyper=trace,rustls=debug")).to_string();
        assert!(f.contains("hyper=info") && !f.contains("hyper=trace"), "{f}");
        assert!(f.contains("rustls=info") && !f.contains("rustls=debug"), "{f}");
        assert!(f.contains("trace"), "{f}");
        let f = log_filter(Some("=bad=[[")).to_string();
        assert!(f.ends_with(",info") && f.contains("h2=info") && !f.contains("bad"), "{f}");
    }
}
