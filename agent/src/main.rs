//! `maestro-agent`: the sandbox image's entrypoint. Parses the command line, hardens the
//! process, and runs the session (see `maestro_agent::run`). Errors are printed once, as one line.
#![deny(unsafe_code)]

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use maestro_agent::config::{self, Config, User};
use maestro_agent::{harden, logging, run};
use maestro_wire::errors;

#[derive(Parser)]
#[command(name = "maestro-agent", version, about = "Maestro secrets agent: the sandbox entrypoint")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll with the broker, serve the session's active secrets under --mount and on --socket,
    /// optionally run CMD as --user, and tear everything down when the session ends.
    ///
    /// Prints exactly one line, `maestro-agent: ready`, on stdout once the secrets are mounted
    /// and the socket listens.
    Run {
        /// The session bundle written by `maestro sessions create --bundle-out`.
        #[arg(long, env = "MAESTRO_BUNDLE", value_name = "PATH")]
        bundle: PathBuf,
        /// The broker's URL as this sandbox reaches it, replacing the bundle's (repeatable, for
        /// brokers sharing one store; tried in order), e.g. https://broker:8443.
        #[arg(
            long = "broker-url",
            env = "MAESTRO_BROKER_URL",
            value_name = "URL",
            value_delimiter = ','
        )]
        broker_urls: Vec<String>,
        /// Where the secrets filesystem is mounted (created if missing).
        #[arg(long, default_value = config::DEFAULT_MOUNT, value_name = "DIR")]
        mount: PathBuf,
        /// The socket `maestro-exec` talks to.
        #[arg(long, default_value = maestro_wire::sock::DEFAULT_SOCKET, value_name = "PATH")]
        socket: PathBuf,
        /// The sandbox user: owns the files, may use the socket, runs CMD.
        #[arg(long, default_value = config::DEFAULT_USER, value_name = "UID[:GID]", value_parser = config::parse_user)]
        user: User,
        /// How long secrets survive without contact with the broker (e.g. 60s, 2m).
        #[arg(long, default_value = config::DEFAULT_LEASE, value_name = "DURATION", value_parser = config::parse_duration)]
        lease: Duration,
        /// Time between SIGTERM and SIGKILL for the processes it started, at teardown.
        #[arg(long, default_value = config::DEFAULT_GRACE, value_name = "DURATION", value_parser = config::parse_duration)]
        grace: Duration,
        /// Where the egress proxy for sealed secrets listens (a loopback address; port 0 picks a
        /// free one, which `maestro-exec` hands to CMD in HTTPS_PROXY).
        #[arg(long, default_value = config::DEFAULT_PROXY_LISTEN, value_name = "ADDRESS:PORT")]
        proxy_listen: std::net::SocketAddr,
        /// A host (or *.domain) the egress proxy always tunnels without looking inside, for
        /// clients that pin certificates (repeatable). Sealed secrets are never sent to it.
        #[arg(long = "proxy-pass-through", value_name = "HOST")]
        pass_through: Vec<String>,
        /// TEST ONLY, never in production: the egress proxy connects to ADDRESS for HOST (a host
        /// or *.domain) instead of resolving it (repeatable).
        #[arg(long = "test-only-upstream", value_name = "HOST=ADDRESS:PORT", value_parser = config::parse_upstream, hide = true)]
        test_only_upstreams: Vec<(String, std::net::SocketAddr)>,
        /// TEST ONLY, never in production: one more root CA (PEM file) the egress proxy trusts
        /// for its upstream connections.
        #[arg(long = "test-only-upstream-ca", value_name = "PATH", hide = true)]
        test_only_upstream_ca: Option<PathBuf>,
        /// The command to run as --user (after `--`); its exit status becomes the agent's.
        #[arg(last = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Run {
        bundle,
        broker_urls,
        mount,
        socket,
        user,
        lease,
        grace,
        proxy_listen,
        pass_through,
        test_only_upstreams,
        test_only_upstream_ca,
        command,
    } = cli.command;
    logging::init();
    if let Err(e) = harden::harden_process() {
        eprintln!("maestro-agent: {e}");
        return ExitCode::from(1);
    }
    // Absolute, because both are handed on: the mount path is rendered into variables
    // (GOOGLE_APPLICATION_CREDENTIALS), and the socket path is given to CMD, which may change
    // directory.
    let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let config = Config {
        bundle,
        broker_urls,
        mount: absolute(mount),
        socket: absolute(socket),
        user,
        lease,
        grace,
        command,
        egress: config::EgressConfig {
            listen: proxy_listen,
            pass_through,
            test_only_upstreams,
            test_only_upstream_ca,
        },
    };
    match run::run(config) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("maestro-agent: {}", errors::one_line(errors::causes(&e)));
            ExitCode::from(1)
        }
    }
}
