//! `maestro`: the command-line client of the Maestro broker.
//!
//! It registers secrets (values from argv, files or stdin; never echoed back), manages sandbox
//! sessions and their activated secrets, and shows metadata, usage history and the audit trail.
//! It talks to the broker's user API (see `maestro_wire::api`) over HTTPS with a bearer token.
//!
//! Contract with scripts: on success, exit 0 and the result on stdout; on failure, exit 1 and
//! exactly one line `maestro: <what went wrong and what to do>` on stderr. Usage errors are
//! clap's (exit 2).
#![forbid(unsafe_code)]

mod args;
mod bundle;
mod client;
mod commands;
mod config;
mod fields;
mod input;
mod table;
mod terminal;
mod ttl;

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use crate::args::{Cli, Command};
use crate::client::Client;
use crate::commands::Output;
use crate::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(out) => match io::stdout().lock().write_all(out.as_bytes()) {
            // A reader that stops early (`| head -1`) is not an error.
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                fail(&format!("cannot write the output: {e}"))
            }
            _ => ExitCode::SUCCESS,
        },
        Err(e) => fail(&maestro_wire::errors::one_line(e.chain())),
    }
}

/// Prints the one error line and returns exit status 1.
fn fail(message: &str) -> ExitCode {
    let line = client::one_line(message);
    // If stderr itself is gone there is nowhere left to report to; the exit status still says it.
    let _ = writeln!(io::stderr().lock(), "maestro: {line}");
    ExitCode::from(1)
}

fn run(cli: Cli) -> anyhow::Result<Output> {
    // reqwest builds its rustls config from the process default provider; only the first
    // install wins and a second one is harmless, so the result is ignored.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    // Commands that need no broker: no configuration is loaded for them.
    let command = match cli.command {
        Command::Kinds(args) => return commands::kinds::run(args),
        Command::Completions(args) => return commands::generated::completions(args),
        Command::Man(args) => return commands::generated::man(args),
        command => command,
    };
    let config = Config::load(&cli.global)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let client = Client::new(&config)?;
        match command {
            Command::Secrets(command) => commands::secrets::run(&client, command).await,
            Command::Sessions(command) => commands::sessions::run(&client, &config, command).await,
            Command::Audit(args) => commands::audit::run(&client, args).await,
            Command::Oauth(command) => commands::oauth::run(&client, command).await,
            // Answered above without a broker; kept total rather than panicking.
            Command::Kinds(args) => commands::kinds::run(args),
            Command::Completions(args) => commands::generated::completions(args),
            Command::Man(args) => commands::generated::man(args),
            Command::Alerts(command) => commands::alerts::run(&client, command).await,
            Command::Tokens(command) => commands::tokens::run_tokens(&client, command).await,
            Command::Teams(command) => commands::teams::run(&client, command).await,
            Command::ServiceAccounts(command) => {
                commands::tokens::run_accounts(&client, command).await
            }
        }
    })
}
