//! `maestro-bench`: the measurements behind `scripts/bench.sh`. Each subcommand sets up its own
//! broker, sessions and agents in temporary directories (on loopback, FUSE mounts never at
//! `/run/secrets`), measures, tears everything down, and prints one Markdown table row per
//! measurement; `all` runs every section in order. See docs/benchmarks.md.
//!
//! It must run as root (FUSE and tmpfs mounts) from the release build: it starts the
//! `maestro-broker`, `maestro-agent` and `maestro-exec` next to its own executable.

mod agent_life;
mod broker_load;
mod exec;
mod files;
mod fixture;
mod history;
mod latency;
mod masking;
mod mtls;
mod mysql;
mod one_secret;
mod postgres;
mod proxy;
mod report;
mod sandbox;
mod ssh;
mod stats;
mod usage_alerts;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use nix::sys::resource::{Resource, getrlimit, setrlimit};

use crate::exec::Wrappers;
use crate::fixture::Bins;
use crate::report::{Machine, Report, Row};
use crate::sandbox::Sandbox;

/// Open files the bench and its broker each need: 10,000 streams, 1,000 idle connections, and
/// their own files.
const OPEN_FILES: u64 = 12_000;

#[derive(Parser)]
#[command(name = "maestro-bench", version, about = "Benchmarks of Maestro secrets (run as root)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every section, in order; what scripts/bench.sh runs.
    All(AllArgs),
    /// 1. `maestro-exec -- true` against `env`, `dotenv run` and `dotenvx run` (hyperfine);
    ///    output masking's added cost and rate.
    Exec(AllArgs),
    /// 1b alone: output masking's added cost (1, 10, 100 secrets) and rate (hyperfine on PATH).
    Masking(Common),
    /// 2. Hot open+read+close under the mount against tmpfs, 1 and 8 readers.
    Files(Common),
    /// 3. Revocation and activation latency, API call → file and socket agree.
    Latency(Common),
    /// 4. Broker: fetches with 100 and 1,000 streams open, enrollments, memory per stream.
    Broker(Common),
    /// 5. Agent: memory with 100 secrets, start → ready, teardown.
    Agent(Common),
    /// 6. The sealed-secrets proxy: added latency and throughput against direct, revocation.
    Proxy(Common),
    /// 7. History: the usage summary and pages at 1,000,000 audit records, SQLite and PostgreSQL.
    History(HistoryArgs),
    /// 8. Sealed SSH keys: signature latency through the agent's socket, revocation.
    Ssh(Common),
    /// 9. Sealed PostgreSQL logins: set-up and round trip through the relay against direct,
    ///    revocation.
    Postgres(Common),
    /// 10. Sealed MySQL logins: set-up and round trip through the relay against direct,
    ///     revocation.
    Mysql(Common),
    /// The client side of `ssh`, run as the sandbox user (internal).
    #[command(hide = true)]
    SshClient {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        hold: bool,
    },
    /// Sets up the sandbox the rows use (a broker, an agent, the first N of 100 secrets
    /// active), prints where its socket and mount are, and waits for Ctrl-C: for profiling.
    Sandbox {
        /// How many secrets to activate.
        #[arg(long, default_value_t = 10)]
        active: usize,
    },
}

#[derive(Args, Clone)]
struct Common {
    /// Fewer tries and shorter runs (the whole of `all --quick` takes under 3 minutes).
    #[arg(long)]
    quick: bool,
    /// Also write the table here (Markdown).
    #[arg(long, value_name = "PATH")]
    markdown: Option<PathBuf>,
    /// Also write the raw figures here (JSON).
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct HistoryArgs {
    #[command(flatten)]
    common: Common,
    /// Audit records to seed in each engine [default: 1000000; 200000 with --quick]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1000..=100_000_000))]
    records: Option<u64>,
}

#[derive(Args, Clone)]
struct WrapperArgs {
    /// hyperfine, which times whole commands.
    #[arg(long, default_value = "hyperfine", value_name = "PATH")]
    hyperfine: PathBuf,
    /// python-dotenv's `dotenv` command (pip install 'python-dotenv[cli]').
    #[arg(long, value_name = "PATH")]
    dotenv: PathBuf,
    /// dotenvx's `dotenvx` command (npm install @dotenvx/dotenvx).
    #[arg(long, value_name = "PATH")]
    dotenvx: PathBuf,
}

#[derive(Args, Clone)]
struct AllArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    wrappers: WrapperArgs,
}

/// What every section needs to know about the run.
pub struct Settings {
    pub quick: bool,
    pub hyperfine: PathBuf,
}

fn section(title: &str) {
    eprintln!("==> {title}");
}

/// Checks what the run needs before anything starts.
fn preflight() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "maestro-bench must run as root: the agent mounts FUSE and the file rows mount a tmpfs"
        );
    }
    if !std::path::Path::new("/dev/fuse").exists() {
        bail!(
            "/dev/fuse is missing: load the fuse module (modprobe fuse) or run where FUSE is available"
        );
    }
    // Raise the soft limit as far as the hard one allows (raising the hard limit needs
    // CAP_SYS_RESOURCE, which containers often drop).
    let (_, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).context("cannot read the open-files limit")?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
        .context("cannot raise the open-files soft limit to the hard limit")?;
    if hard < OPEN_FILES {
        bail!(
            "the open-files limit is {hard}; the broker rows hold {OPEN_FILES} connections' worth: \
             raise it (ulimit -Hn {OPEN_FILES}) and re-run"
        );
    }
    Ok(())
}

/// Runs a subcommand; `None` when it measured nothing (`sandbox`).
async fn run(command: Command) -> anyhow::Result<Option<(Common, Vec<Row>)>> {
    let bins = Bins::locate()?;
    match command {
        Command::All(args) => {
            let settings =
                Settings { quick: args.common.quick, hyperfine: args.wrappers.hyperfine.clone() };
            let wrappers =
                Wrappers { dotenv: args.wrappers.dotenv, dotenvx: args.wrappers.dotenvx };
            let mut rows = Vec::new();
            {
                section("setting up a broker, 100 secrets, a session and its agent");
                let mut sandbox = Sandbox::new(&bins).await?;
                section("1. exec overhead (hyperfine; 1, 10, 100 active secrets)");
                rows.extend(exec::run(&settings, &mut sandbox, &wrappers).await?);
                section("1b. output masking (hyperfine; added cost and rate)");
                rows.extend(masking::run(&settings, &mut sandbox).await?);
                section("2. file read against tmpfs (1 and 8 readers)");
                rows.extend(files::run(&settings, &sandbox).await?);
                section("3. revocation and activation latency");
                rows.extend(latency::run(&settings, &mut sandbox).await?);
                section("5. agent memory, start-up and teardown");
                rows.extend(agent_life::run(&settings, &sandbox).await?);
            }
            section("4. broker under load (a broker of its own)");
            let broker_rows = broker_load::run(&settings, &bins).await?;
            // Keep the order in the table: broker rows before agent rows.
            let agent_at =
                rows.iter().position(|r| r.id.starts_with("agent.")).unwrap_or(rows.len());
            rows.splice(agent_at..agent_at, broker_rows);
            section("6. the sealed-secrets egress proxy (a broker and agent of their own)");
            rows.extend(proxy::run(&settings, &bins).await?);
            section("7. history: the usage summary and pages at 1,000,000 records");
            rows.extend(history::run(&settings, &bins, None).await?);
            section("8. sealed SSH keys (a broker and agent of their own)");
            rows.extend(ssh::run(&settings, &bins).await?);
            section("9. sealed PostgreSQL logins (a cluster, broker and agent of their own)");
            rows.extend(postgres::run(&settings, &bins).await?);
            section("10. sealed MySQL logins (a MariaDB server, broker and agent of their own)");
            rows.extend(mysql::run(&settings, &bins).await?);
            Ok(Some((args.common, rows)))
        }
        Command::Exec(args) => {
            let settings =
                Settings { quick: args.common.quick, hyperfine: args.wrappers.hyperfine.clone() };
            let wrappers =
                Wrappers { dotenv: args.wrappers.dotenv, dotenvx: args.wrappers.dotenvx };
            let mut sandbox = Sandbox::new(&bins).await?;
            let mut rows = exec::run(&settings, &mut sandbox, &wrappers).await?;
            rows.extend(masking::run(&settings, &mut sandbox).await?);
            Ok(Some((args.common, rows)))
        }
        Command::Masking(common) => {
            let mut sandbox = Sandbox::new(&bins).await?;
            let rows = masking::run(&settings_of(&common), &mut sandbox).await?;
            Ok(Some((common, rows)))
        }
        Command::Files(common) => {
            let mut sandbox = Sandbox::new(&bins).await?;
            sandbox.activate_first(1).await?;
            let rows = files::run(&settings_of(&common), &sandbox).await?;
            Ok(Some((common, rows)))
        }
        Command::Latency(common) => {
            let mut sandbox = Sandbox::new(&bins).await?;
            let rows = latency::run(&settings_of(&common), &mut sandbox).await?;
            Ok(Some((common, rows)))
        }
        Command::Broker(common) => {
            let rows = broker_load::run(&settings_of(&common), &bins).await?;
            Ok(Some((common, rows)))
        }
        Command::Sandbox { active } => {
            let mut sandbox = Sandbox::new(&bins).await?;
            sandbox.activate_first(active.min(sandbox::SECRETS)).await?;
            println!("MAESTRO_AGENT_SOCK={}", sandbox.agent.socket.display());
            println!("mount: {}", sandbox.agent.mount.display());
            println!("agent pid: {}", sandbox.agent.proc.pid()?);
            println!("broker: {} (pid {})", sandbox.broker.url, sandbox.broker.proc.pid()?);
            println!("logs: {}", sandbox.dir().display());
            println!("waiting for Ctrl-C (SIGINT) or SIGTERM");
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("cannot watch SIGTERM")?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("maestro-bench: stopping; the sandbox is torn down");
            Ok(None)
        }
        Command::Proxy(common) => {
            let rows = proxy::run(&settings_of(&common), &bins).await?;
            Ok(Some((common, rows)))
        }
        Command::History(args) => {
            let records = args.records.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
            let rows = history::run(&settings_of(&args.common), &bins, records).await?;
            Ok(Some((args.common, rows)))
        }
        Command::Ssh(common) => {
            let rows = ssh::run(&settings_of(&common), &bins).await?;
            Ok(Some((common, rows)))
        }
        Command::Postgres(common) => {
            let rows = postgres::run(&settings_of(&common), &bins).await?;
            Ok(Some((common, rows)))
        }
        Command::Mysql(common) => {
            let rows = mysql::run(&settings_of(&common), &bins).await?;
            Ok(Some((common, rows)))
        }
        Command::SshClient { socket, count, hold } => {
            ssh::client(&socket, count, hold)?;
            Ok(None)
        }
        Command::Agent(common) => {
            let sandbox = Sandbox::new(&bins).await?;
            let rows = agent_life::run(&settings_of(&common), &sandbox).await?;
            Ok(Some((common, rows)))
        }
    }
}

fn settings_of(common: &Common) -> Settings {
    Settings { quick: common.quick, hyperfine: PathBuf::from("hyperfine") }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::SshClient { socket, count, hold } = &cli.command {
        // The client side of the ssh rows: the sandbox user, no root, no runtime.
        return match ssh::client(socket, *count, *hold) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "maestro-bench ssh-client: {}",
                    maestro_wire::errors::one_line(e.chain())
                );
                ExitCode::FAILURE
            }
        };
    }
    let result = preflight().and_then(|()| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let Some((common, rows)) = runtime.block_on(run(cli.command))? else {
            return Ok(());
        };
        let report = Report {
            date: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .context("cannot format the date")?,
            mode: if common.quick { "quick" } else { "full" }.to_owned(),
            machine: Machine::detect(),
            rows,
        };
        println!("{}", report.markdown());
        if let (Some(markdown), Some(json)) = (&common.markdown, &common.json) {
            report.write(markdown, json)?;
        } else if common.markdown.is_some() || common.json.is_some() {
            bail!("give both --markdown and --json, or neither");
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("maestro-bench: {}", maestro_wire::errors::one_line(e.chain()));
            ExitCode::FAILURE
        }
    }
}
