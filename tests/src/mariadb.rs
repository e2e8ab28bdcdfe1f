//! A temporary MariaDB server for the tests and the benchmark: mariadb-install-db and mariadbd
//! run as Debian's `mysql` user on a loopback port, with one password-protected user
//! (mysql_native_password, MariaDB's default) and one database; stopped when dropped.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use nix::unistd::User;

use crate::agent::run_cmd;
use crate::broker::CmdOutput;
use crate::util::{ChildGuard, temp_dir};

fn must(out: CmdOutput, what: &str) -> CmdOutput {
    assert_eq!(out.status, 0, "{what} failed: {out:?}");
    out
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Quotes a string for SQL inside single quotes (MariaDB: backslash escapes too).
fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A temporary MariaDB server with one password-protected user and one database.
pub struct Mariadb {
    pub port: u16,
    dir: tempfile::TempDir,
    server: Option<ChildGuard>,
}

impl Mariadb {
    /// mariadb-install-db, mariadbd on 127.0.0.1, then `login`@'%' with `password` and all
    /// rights on `database`.
    pub fn start(login: &str, password: &str, database: &str) -> Self {
        Self::start_with(login, password, database, None)
    }

    /// The same, with TLS from `tls` (certificate and key, PEM) and `login` required to use it
    /// (`REQUIRE SSL`).
    pub fn start_with(
        login: &str,
        password: &str,
        database: &str,
        tls: Option<(&str, &str)>,
    ) -> Self {
        let user = User::from_name("mysql")
            .unwrap()
            .expect("user mysql is missing: install Debian's mariadb-server");
        let dir = temp_dir("maestro-mariadb-");
        std::os::unix::fs::chown(dir.path(), Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("data");
        let mut install = Command::new("mariadb-install-db");
        install.arg("--no-defaults").arg(format!("--datadir={}", data.display())).args([
            "--user=mysql",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]);
        must(run_cmd(install), "mariadb-install-db");
        let port = free_port();
        let socket = dir.path().join("mysqld.sock");
        let mut cmd = Command::new("mariadbd");
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", dir.path().join("mysqld.pid").display()))
            .arg(format!("--port={port}"))
            .args(["--user=mysql", "--bind-address=127.0.0.1", "--skip-name-resolve"])
            .args(["--skip-log-bin", "--innodb-flush-log-at-trx-commit=0"]);
        if let Some((cert, key)) = tls {
            for (name, pem) in [("server-cert.pem", cert), ("server-key.pem", key)] {
                let path = dir.path().join(name);
                std::fs::write(&path, pem).unwrap();
                std::os::unix::fs::chown(&path, Some(user.uid.as_raw()), None).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
                let option = if name == "server-cert.pem" { "--ssl-cert" } else { "--ssl-key" };
                cmd.arg(format!("{option}={}", path.display()));
            }
        }
        let server = ChildGuard::spawn("mariadbd", cmd);
        let me = Self { port, dir, server: Some(server) };
        // Ready when the socket exists and the server answers on it; polled gently, since
        // each ping is a process.
        let ping = || {
            let mut ping = Command::new("mariadb-admin");
            ping.arg("--no-defaults").arg(format!("--socket={}", socket.display()));
            ping.args(["--user=root", "ping"]);
            run_cmd(ping).status == 0
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !(socket.exists() && ping()) {
            assert!(
                std::time::Instant::now() < deadline,
                "mariadbd did not come up within 30 s:\n{}",
                me.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let sql = format!(
            "CREATE DATABASE `{database}`; CREATE USER {}@'%' IDENTIFIED BY {}; \
             GRANT ALL ON `{database}`.* TO {}@'%';{}",
            sql_string(login),
            sql_string(password),
            sql_string(login),
            if tls.is_some() {
                format!(" ALTER USER {}@'%' REQUIRE SSL;", sql_string(login))
            } else {
                String::new()
            }
        );
        let mut setup = Command::new("mariadb");
        setup.arg("--no-defaults").arg(format!("--socket={}", socket.display())).args([
            "--user=root",
            "-e",
            &sql,
        ]);
        must(run_cmd(setup), "creating the MariaDB user");
        me
    }

    /// The server's own unix socket (root logs in there without a password).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    /// A `mariadb` command as root on the server's own socket.
    pub fn root_client(&self) -> Command {
        let mut c = Command::new("mariadb");
        c.arg("--no-defaults").arg(format!("--socket={}", self.socket().display()));
        c.arg("--user=root");
        c
    }

    fn log(&self) -> String {
        self.server.as_ref().map(ChildGuard::log).unwrap_or_default()
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.terminate(Duration::from_secs(10));
        }
    }
}
