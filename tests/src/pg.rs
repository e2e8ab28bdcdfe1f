//! A temporary PostgreSQL cluster for the tests of the broker's PostgreSQL store, and brokers
//! that share one database.
//!
//! * [`Postgres`]: a cluster made with Debian's `postgresql` binaries
//!   (`/usr/lib/postgresql/<version>/bin/initdb` and `pg_ctl`) in a temporary directory, run as
//!   the unprivileged `postgres` user (PostgreSQL refuses root), on a free loopback port with
//!   password (SCRAM) authentication, logging every statement with its parameters. Dropping it
//!   stops the server and removes the directory, also when the test failed (then it prints the
//!   server log).
//! * [`Database`]: one database with its own login role, owner of the database, as a broker
//!   would get it from a DBA.
//! * [`PeerBroker`]: a second `maestro-broker serve` on the same database, with a copy of a
//!   first broker's key material (master key, CA key and certificate), as docs/postgresql.md says.
//!
//! Without the binaries or root, [`Postgres::start`] returns `None` and the test skips with a
//! message, unless `MAESTRO_REQUIRE_POSTGRES` is set (`scripts/test.sh` sets it): then it fails.

// A test fixture: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::unistd::User;

use crate::broker::{Api, Broker, BrokerOptions, CmdOutput, launch, plain_client};
use crate::util::{ChildGuard, temp_dir};

/// The environment variable that turns a missing PostgreSQL into a failure.
pub const REQUIRE_ENV: &str = "MAESTRO_REQUIRE_POSTGRES";

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb` and `pg_ctl`.
pub fn find_bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// A random lowercase alphanumeric string (names and passwords of the test).
pub fn random_word(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    getrandom_fill(&mut bytes);
    bytes
        .iter()
        .map(|b| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[usize::from(*b) % 36]))
        .collect()
}

fn getrandom_fill(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom").unwrap().read_exact(buf).unwrap();
}

/// Lowercase hex of `bytes` (how `pg_dump` and the server log show `bytea`).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A running temporary cluster.
pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    user: User,
    /// Owned by `postgres`: the cluster's data, its socket and its log.
    dir: tempfile::TempDir,
    superuser: String,
}

fn run_as(user: &User, mut cmd: Command) -> CmdOutput {
    // std drops supplementary groups when it switches uid as root.
    cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw()).current_dir("/");
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    CmdOutput {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn skip_or_fail<T>(why: &str) -> Option<T> {
    if std::env::var_os(REQUIRE_ENV).is_some() {
        panic!("{why} ({REQUIRE_ENV} is set, so this is a failure, not a skip)");
    }
    eprintln!("SKIPPED: {why}");
    None
}

impl Postgres {
    /// initdb, start on 127.0.0.1 and a free port; `None` (skipped) without the binaries or
    /// root. The superuser can only log in over the cluster's private socket.
    pub fn start() -> Option<Self> {
        Self::start_inner(false).map(|(server, _)| server)
    }

    /// Like [`Postgres::start`], with TLS on (`ssl=on`, a server certificate for 127.0.0.1 from
    /// a fresh test CA); returns the CA certificate's path, for `sslrootcert`.
    pub fn start_with_tls() -> Option<(Self, PathBuf)> {
        Self::start_inner(true).map(|(server, ca)| (server, ca.expect("TLS was asked for")))
    }

    fn start_inner(tls: bool) -> Option<(Self, Option<PathBuf>)> {
        let Some(bin) = find_bin_dir() else {
            return skip_or_fail(
                "PostgreSQL is not installed (apt-get install postgresql; scripts/test.sh does)",
            );
        };
        if !nix::unistd::geteuid().is_root() {
            return skip_or_fail("the PostgreSQL tests run the server as 'postgres': run as root");
        }
        let Some(user) = User::from_name("postgres").ok().flatten() else {
            return skip_or_fail(
                "there is no 'postgres' user (Debian's postgresql package makes it)",
            );
        };
        let dir = temp_dir("maestro-pg-");
        std::os::unix::fs::chown(dir.path(), Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let superuser = "maestro_dba".to_owned();
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", &superuser, "-E", "UTF8", "--no-sync", "--auth-local=trust"])
            .arg("--auth-host=scram-sha-256");
        let out = run_as(&user, initdb);
        assert_eq!(out.status, 0, "initdb failed: {out:?}");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let server = Self { port, bin, user, dir, superuser };
        let mut start = Command::new(server.bin.join("pg_ctl"));
        start
            .arg("-D")
            .arg(server.dir.path().join("data"))
            .arg("-o")
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={} \
                 -c fsync=off -c log_statement=all -c log_min_messages=info",
                server.dir.path().display()
            ))
            .arg("-l")
            .arg(server.log_path())
            .args(["-w", "-t", "60", "start"]);
        let ca_path = tls.then(|| {
            let (ca_path, cert, key) = server.write_tls_files();
            start.arg("-o").arg(format!(
                "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert.display(),
                key.display()
            ));
            ca_path
        });
        let out = run_as(&server.user, start);
        assert_eq!(out.status, 0, "pg_ctl start failed: {out:?}\n{}", server.log());
        Some((server, ca_path))
    }

    /// A test CA and a server certificate for 127.0.0.1 signed by it, owned by `postgres`
    /// (the server refuses a key readable by others). Returns (CA cert, server cert, key).
    fn write_tls_files(&self) -> (PathBuf, PathBuf, PathBuf) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let dir = self.dir.path();
        let paths = (dir.join("ca.crt"), dir.join("server.crt"), dir.join("server.key"));
        std::fs::write(&paths.0, ca.pem()).unwrap();
        std::fs::write(&paths.1, cert.pem()).unwrap();
        std::fs::write(&paths.2, key.serialize_pem()).unwrap();
        for path in [&paths.0, &paths.1, &paths.2] {
            std::os::unix::fs::chown(path, Some(self.user.uid.as_raw()), None).unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        // The broker (root) reads the CA certificate; world-readable is fine for a certificate.
        std::fs::set_permissions(&paths.0, std::fs::Permissions::from_mode(0o644)).unwrap();
        (paths.0, paths.1, paths.2)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's log: with `log_statement=all`, every statement and its parameters.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs `psql -c SQL` as the superuser over the private socket.
    pub fn psql(&self, database: &str, sql: &str) -> CmdOutput {
        let mut psql = Command::new(self.bin.join("psql"));
        psql.arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", &self.superuser, "-d", database])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        run_as(&self.user, psql)
    }

    /// A new database owned by a new login role with a random password.
    pub fn create_database(&self, name: &str) -> Database {
        let password = random_word(24);
        let sql = format!(
            "CREATE ROLE {name} LOGIN PASSWORD '{password}'; CREATE DATABASE {name} OWNER {name};"
        );
        // psql runs the two statements as one transaction unless they are sent apart.
        for statement in sql.split_inclusive(';') {
            let out = self.psql("postgres", statement);
            assert_eq!(out.status, 0, "cannot create database {name}: {}", out.stderr);
        }
        Database { name: name.to_owned(), password, port: self.port }
    }

    /// `pg_ctl restart -m fast`: every connection is cut, the server comes back on the same
    /// port with the same options (the soak's fault). Returns how long `pg_ctl` took.
    pub fn restart(&self) -> Duration {
        let started = std::time::Instant::now();
        let mut restart = Command::new(self.bin.join("pg_ctl"));
        restart
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.log_path())
            .args(["-m", "fast", "-w", "-t", "60", "restart"]);
        let out = run_as(&self.user, restart);
        assert_eq!(out.status, 0, "pg_ctl restart failed: {out:?}\n{}", self.log());
        started.elapsed()
    }

    /// `pg_dump` of a database: schema and every row.
    pub fn dump(&self, database: &str) -> Vec<u8> {
        let mut dump = Command::new(self.bin.join("pg_dump"));
        dump.arg("-h").arg(self.dir.path()).args([
            "-p",
            &self.port.to_string(),
            "-U",
            &self.superuser,
            database,
        ]);
        let user = &self.user;
        dump.uid(user.uid.as_raw()).gid(user.gid.as_raw()).current_dir("/");
        let out = dump.output().unwrap();
        assert!(out.status.success(), "pg_dump failed: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut stop = Command::new(self.bin.join("pg_ctl"));
        stop.arg("-D").arg(self.dir.path().join("data")).args(["-m", "immediate", "-w", "stop"]);
        if run_as(&self.user, stop).status != 0 {
            // The postmaster's pid is the first line of postmaster.pid.
            let pid = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if std::thread::panicking() {
            let log = self.log();
            // The statement log is long: its end is what explains a failure.
            let tail: String = log
                .lines()
                .rev()
                .take(200)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .map(|l| format!("{l}\n"))
                .collect();
            eprintln!(
                "----- postgres log (last 200 lines) -----\n{tail}----- end of postgres log -----"
            );
        }
    }
}

/// One database and the role that owns it.
#[derive(Debug, Clone)]
pub struct Database {
    pub name: String,
    pub password: String,
    pub port: u16,
}

impl Database {
    /// `postgres://NAME:PASSWORD@127.0.0.1:PORT/NAME`.
    pub fn url(&self) -> String {
        format!("postgres://{0}:{1}@127.0.0.1:{2}/{0}", self.name, self.password, self.port)
    }

    /// The URL without the password (which then comes from `PGPASSWORD`).
    pub fn url_without_password(&self) -> String {
        format!("postgres://{0}@127.0.0.1:{1}/{0}", self.name, self.port)
    }

    /// Broker options that put its store in this database (the URL in the environment).
    pub fn broker_options(&self) -> BrokerOptions {
        BrokerOptions::default().env("MAESTRO_DATABASE_URL", &self.url())
    }

    /// A direct connection, as the role that owns the database.
    pub async fn connect(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&self.url()).await.expect("the test database accepts us")
    }
}

/// Copies the key material a broker on a shared database needs from `from` into a new data
/// directory `to` (mode 0700, files 0600).
pub fn copy_key_material(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    for file in ["master.key", "ca.key", "ca.pem"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
        std::fs::set_permissions(to.join(file), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// A second broker serving the same database as a first one, with its own data directory
/// holding a copy of the first one's key material. Dropping it kills it.
pub struct PeerBroker {
    _tmp: tempfile::TempDir,
    data_dir: PathBuf,
    ca_pem: String,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    process: Option<ChildGuard>,
    /// What it printed before it was stopped.
    past_log: String,
}

impl PeerBroker {
    /// Starts a broker next to `first` with `options` (those of `first`, usually).
    pub fn start(first: &Broker, options: &BrokerOptions) -> Self {
        Self::try_start(first.data_dir(), options)
            .unwrap_or_else(|log| panic!("the second maestro-broker did not start:\n{log}"))
    }

    /// Starts a broker with the key material of the data directory `keys_from`; its output if
    /// it does not come up.
    pub fn try_start(keys_from: &Path, options: &BrokerOptions) -> Result<Self, String> {
        let tmp = temp_dir("maestro-peer-");
        let data_dir = tmp.path().join("data");
        copy_key_material(keys_from, &data_dir);
        Self::try_start_in(tmp, data_dir, options)
    }

    /// Starts a broker on a data directory prepared by the caller inside `tmp`.
    pub fn try_start_in(
        tmp: tempfile::TempDir,
        data_dir: PathBuf,
        options: &BrokerOptions,
    ) -> Result<Self, String> {
        let (process, url) = launch(&data_dir, options)?;
        let ca_pem = std::fs::read_to_string(data_dir.join("ca.pem")).unwrap();
        Ok(Self {
            _tmp: tmp,
            data_dir,
            ca_pem,
            url,
            process: Some(process),
            past_log: String::new(),
        })
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A user-API client talking to this broker.
    pub fn api(&self, token: &str) -> Api {
        Api { client: plain_client(&self.ca_pem), base: self.url.clone(), token: token.to_owned() }
    }

    /// Everything it printed.
    pub fn log(&self) -> String {
        let mut log = self.past_log.clone();
        if let Some(p) = &self.process {
            log.push_str(&p.log());
        }
        log
    }

    /// Stops it with SIGTERM; panics unless it exits cleanly within 10 s.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            let status = p.terminate(Duration::from_secs(10));
            self.past_log.push_str(&p.log());
            assert!(
                status.is_some_and(|s| s.success()),
                "broker did not stop cleanly:\n{}",
                p.log()
            );
        }
    }
}
