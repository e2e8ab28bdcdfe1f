//! Real servers for the client tests, on loopback ports, in temporary directories, stopped and
//! removed when dropped (their logs printed if the test is failing):
//!
//! * [`Postgres`]: a temporary PostgreSQL cluster (initdb + pg_ctl) run as Debian's `postgres`
//!   user, password (SCRAM) authentication on 127.0.0.1.
//! * [`Mariadb`]: a temporary MariaDB server (mariadb-install-db + mariadbd) run as `mysql`.
//! * [`GitServer`]: `tests/support/git_https_server.py`, git's smart HTTP over TLS around
//!   `git http-backend`, demanding basic auth, with a certificate of a CA made by the test.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use maestro_tests::agent::run_cmd;
use maestro_tests::broker::CmdOutput;
use maestro_tests::util::{ChildGuard, temp_dir};
use nix::unistd::User;

use super::support;

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A system user (created by the server's Debian package).
fn system_user(name: &str) -> User {
    User::from_name(name)
        .unwrap()
        .unwrap_or_else(|| panic!("user {name} is missing: install the server's Debian package"))
}

/// `program` run as `user` (its uid and primary gid, no supplementary groups).
fn as_user(user: &User, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .arg("--clear-groups")
        .arg("--")
        .arg(program);
    cmd
}

/// A temporary directory owned by `user`, searchable by everyone.
fn owned_dir(prefix: &str, user: &User) -> tempfile::TempDir {
    let dir = temp_dir(prefix);
    std::os::unix::fs::chown(dir.path(), Some(user.uid.as_raw()), Some(user.gid.as_raw())).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn must(out: CmdOutput, what: &str) -> CmdOutput {
    assert_eq!(out.status, 0, "{what} failed: {out:?}");
    out
}

/// A temporary PostgreSQL cluster with one password-protected user and one database.
pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    user: User,
    dir: tempfile::TempDir,
}

impl Postgres {
    /// initdb (superuser `login` with `password`, SCRAM on TCP, trust on the private socket),
    /// start on 127.0.0.1, and create `database`.
    // Each test crate that includes this module uses a different part of it.
    #[allow(dead_code)]
    pub fn start(bin: &Path, login: &str, password: &str, database: &str) -> Self {
        Self::start_with(bin, login, password, database, None)
    }

    /// Like [`Postgres::start`], TLS on with a certificate for 127.0.0.1 from a fresh CA, and
    /// TCP log-ins accepted over TLS only (`hostssl`); returns the CA's PEM too.
    #[allow(dead_code)]
    pub fn start_tls(bin: &Path, login: &str, password: &str, database: &str) -> (Self, String) {
        let (ca_pem, cert_pem, key_pem) = server_certificate();
        (Self::start_with(bin, login, password, database, Some((&cert_pem, &key_pem))), ca_pem)
    }

    fn start_with(
        bin: &Path,
        login: &str,
        password: &str,
        database: &str,
        tls: Option<(&str, &str)>,
    ) -> Self {
        let user = system_user("postgres");
        let dir = owned_dir("maestro-pg-", &user);
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, password).unwrap();
        std::os::unix::fs::chown(&pwfile, Some(user.uid.as_raw()), None).unwrap();
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600)).unwrap();
        let data = dir.path().join("data");
        let mut initdb = as_user(&user, bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", login, "-E", "UTF8", "--no-sync", "--auth-host=scram-sha-256"])
            .arg("--auth-local=trust")
            .arg(format!("--pwfile={}", pwfile.display()));
        must(run_cmd(initdb), "initdb");
        std::fs::remove_file(&pwfile).unwrap();
        let mut options = String::new();
        if let Some((cert, key)) = tls {
            // The server reads its key only when the postgres user owns it, mode 0600.
            for (name, content) in [("server.pem", cert), ("server.key", key)] {
                let path = dir.path().join(name);
                std::fs::write(&path, content).unwrap();
                std::os::unix::fs::chown(&path, Some(user.uid.as_raw()), None).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            options = format!(
                " -c ssl=on -c ssl_cert_file={0}/server.pem -c ssl_key_file={0}/server.key",
                dir.path().display()
            );
            // TCP log-ins over TLS only: a relay that did not encrypt gets no pg_hba entry.
            let hba = data.join("pg_hba.conf");
            let text = std::fs::read_to_string(&hba).unwrap();
            let text: String = text
                .lines()
                .map(|l| match l.strip_prefix("host ") {
                    Some(rest) => format!("hostssl {rest}\n"),
                    None => format!("{l}\n"),
                })
                .collect();
            std::fs::write(&hba, text).unwrap();
        }
        let port = free_port();
        let server = Self { port, bin: bin.to_owned(), user, dir };
        let mut start = as_user(&server.user, server.bin.join("pg_ctl"));
        start
            .arg("-D")
            .arg(&data)
            .arg("-o")
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={} -c fsync=off{options}",
                server.dir.path().display()
            ))
            .arg("-l")
            .arg(server.log_path())
            .args(["-w", "-t", "30", "start"]);
        must(run_cmd(start), "pg_ctl start");
        let mut create = as_user(&server.user, server.bin.join("psql"));
        create
            .arg("-h")
            .arg(server.dir.path())
            .args(["-p", &port.to_string(), "-U", login, "-d", "postgres", "-v", "ON_ERROR_STOP=1"])
            .args(["-c", &format!("CREATE DATABASE \"{database}\"")]);
        must(run_cmd(create), "CREATE DATABASE");
        server
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut stop = as_user(&self.user, self.bin.join("pg_ctl"));
        stop.arg("-D").arg(self.dir.path().join("data")).args(["-m", "immediate", "-w", "stop"]);
        let stopped = run_cmd(stop).status == 0;
        if !stopped {
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
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            eprintln!("----- postgres log -----\n{log}----- end of postgres log -----");
        }
    }
}

/// A temporary MariaDB server (in the fixture library: the benchmark starts one too).
// Each test crate that includes this module uses a different part of it.
#[allow(unused_imports)]
pub use maestro_tests::mariadb::Mariadb;

/// git's smart HTTP over TLS, demanding basic auth, serving one repository with one commit.
pub struct GitServer {
    /// `https://127.0.0.1:PORT/project.git`.
    pub url: String,
    /// `127.0.0.1:PORT`: the host git names in its credential requests.
    pub host: String,
    /// The CA certificate that signed the server's (for `GIT_SSL_CAINFO`).
    pub ca_file: PathBuf,
    /// The commit the repository's `main` points at.
    pub head: String,
    _dir: tempfile::TempDir,
    server: ChildGuard,
}

impl GitServer {
    /// Serves a new repository; only `user` with password `token` gets in.
    pub fn start(user: &str, token: &str) -> Self {
        Self::start_with_owners(user, token, &[])
    }

    /// Like [`GitServer::start`], and serves the same repository as `OWNER/project.git` for
    /// each of `owners`, where only `user` with that owner's token gets in (one host, several
    /// accounts).
    pub fn start_with_owners(user: &str, token: &str, owners: &[(&str, &str)]) -> Self {
        let dir = temp_dir("maestro-git-");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let git = |args: &[&str]| {
            let mut cmd = Command::new("git");
            cmd.args(args).current_dir(dir.path()).env("GIT_CONFIG_NOSYSTEM", "1");
            cmd.env("HOME", dir.path());
            must(run_cmd(cmd), &format!("git {args:?}"))
        };
        git(&["init", "-q", "-b", "main", "work"]);
        git(&[
            "-C",
            "work",
            "-c",
            "user.name=Maestro Test",
            "-c",
            "user.email=test@example.com",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "first",
        ]);
        std::fs::create_dir(dir.path().join("repos")).unwrap();
        git(&["clone", "-q", "--bare", "work", "repos/project.git"]);
        let head = git(&["-C", "repos/project.git", "rev-parse", "main"]).stdout.trim().to_owned();
        for (owner, _) in owners {
            std::fs::create_dir(dir.path().join("repos").join(owner)).unwrap();
            git(&["clone", "-q", "--bare", "work", &format!("repos/{owner}/project.git")]);
        }

        let (ca_pem, cert_pem, key_pem) = server_certificate();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        std::fs::set_permissions(&ca_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let private = |name: &str, content: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            path
        };
        let cert = private("server.pem", &cert_pem);
        let key = private("server.key", &key_pem);
        let password = private("password", token);

        let mut cmd = Command::new("python3");
        cmd.arg(support("git_https_server.py"))
            .arg("--root")
            .arg(dir.path().join("repos"))
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .args(["--user", user])
            .arg("--password-file")
            .arg(password)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir.path());
        for (owner, owner_token) in owners {
            let file = private(&format!("password-{owner}"), owner_token);
            let mut arg = std::ffi::OsString::from(format!("{owner}="));
            arg.push(file);
            cmd.arg("--owner").arg(arg);
        }
        let server = ChildGuard::spawn("git_https_server.py", cmd);
        let line =
            server.wait_for_stdout(Duration::from_secs(30), |l| l.starts_with("listening on "));
        let port: u16 = match line {
            Some(l) => l["listening on ".len()..].trim().parse().unwrap(),
            None => panic!("the git server did not start:\n{}", server.log()),
        };
        Self {
            url: format!("https://127.0.0.1:{port}/project.git"),
            host: format!("127.0.0.1:{port}"),
            ca_file,
            head,
            _dir: dir,
            server,
        }
    }

    /// The server's request log: one line per request, with its status and whether
    /// credentials were sent (never what they were).
    pub fn log(&self) -> String {
        self.server.log()
    }
}

/// A CA, and a server certificate for 127.0.0.1 that it signed: (CA PEM, cert PEM, key PEM).
pub fn server_certificate() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Names of their own: OpenSSL takes a certificate whose subject is its issuer's for a
    // self-signed one (rcgen's default name is the same for both).
    ca_params.distinguished_name.push(DnType::CommonName, "maestro test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST))];
    params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}
