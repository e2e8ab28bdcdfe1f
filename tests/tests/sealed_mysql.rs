//! Sealed MySQL / MariaDB logins (kind `mysql`, `exposure: sealed`) through the agent's relay
//! socket, against a real MariaDB server on a loopback port (mysql_native_password, MariaDB's
//! default; MariaDB has no caching_sha2_password, whose login the agent's unit tests cover):
//!
//! * the sandbox gets `MYSQL_UNIX_PORT`, `MYSQL_HOST=localhost`, `MYSQL_HOME` (the directory of a
//!   `[client]` option file naming the socket), the user and database names and a
//!   `DATABASE_URL` with `?socket=`, never the password;
//! * the `mariadb` client (with the variables, with the option file) and PyMySQL (from
//!   `DATABASE_URL`) log in and query through it;
//! * another user or database is refused with a MySQL error the client prints; another uid is
//!   refused at the socket; an oversized, garbled or silent handshake is refused and closed;
//! * TLS to the server: VERIFY_IDENTITY and VERIFY_CA against the secret's ssl_ca, refusals of a
//!   wrong name or CA, and of a TLS-only account without TLS;
//! * the password is in no file, no variable and no sandbox process's memory while a session
//!   is open;
//! * deactivation ends a long-running session and removes the socket; new connections fail;
//! * the audit shows each connection (command, user, database) and its end.
// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod integrations_support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use integrations_support::servers::Mariadb;
use integrations_support::{World, clients_available, support, venv_python};
use maestro_tests::agent::{OTHER_UID, SANDBOX_UID, as_uid, run_cmd, wait_until};
use maestro_tests::broker::CmdOutput;
use maestro_tests::util::{ChildGuard, files_containing, process_holds, uid_pids};
use serde_json::json;

const PASSWORD: &str = "pl@nted:my/sealed\\pass\"'";
const QUERY: &str = "SELECT CONCAT(CURRENT_USER(), ' ', DATABASE())";

fn available() -> bool {
    let python = venv_python();
    if !clients_available(&[
        "mariadb-install-db".as_ref(),
        "mariadbd".as_ref(),
        "mariadb".as_ref(),
        python.as_os_str(),
    ]) {
        return false;
    }
    let pymysql = run_cmd({
        let mut c = std::process::Command::new(&python);
        c.args(["-c", "import pymysql"]);
        c
    });
    if pymysql.status != 0 {
        let why = "integration test skipped: PyMySQL is not in the test venv (run \
                   tests/support/install-clients.sh)";
        assert!(std::env::var_os("MAESTRO_REQUIRE_CLIENTS").is_none(), "{why}");
        eprintln!("{why}");
        return false;
    }
    true
}

fn exec(world: &World, args: &[&str]) -> CmdOutput {
    run_cmd(world.exec(args))
}

fn var(world: &World, name: &str) -> Option<String> {
    let out = exec(world, &["--", "printenv", name]);
    (out.status == 0).then(|| out.stdout.trim().to_owned())
}

/// `mariadb ARGS` through maestro-exec, the user from MYSQL_USER.
fn mariadb(world: &World, args: &str) -> CmdOutput {
    exec(world, &["--", "sh", "-c", &format!("exec mariadb -N -B -u \"$MYSQL_USER\" {args}")])
}

/// Reads one MySQL packet from a raw connection: (sequence id, payload).
fn read_packet(c: &mut UnixStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 4];
    c.read_exact(&mut h).ok()?;
    let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
    let mut p = vec![0u8; len];
    c.read_exact(&mut p).ok()?;
    Some((h[3], p))
}

/// Whether the relay closed `c` (after an optional ERR packet, returned).
fn closed_after(c: &mut UnixStream) -> (bool, Option<String>) {
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let err = read_packet(c)
        .filter(|(_, p)| p.first() == Some(&0xff))
        .map(|(_, p)| String::from_utf8_lossy(&p[9..]).into_owned());
    let mut rest = [0u8; 64];
    let closed = matches!(c.read(&mut rest), Ok(0) | Err(_));
    (closed, err)
}

/// A raw connection that has read the relay's greeting.
fn greeted(sock: &str) -> UnixStream {
    let mut c = UnixStream::connect(sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (seq, greeting) = read_packet(&mut c).expect("a greeting");
    assert_eq!((seq, greeting[0]), (0, 10), "a protocol 10 greeting");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_mysql_login_works_through_the_relay_and_never_reaches_the_sandbox() {
    if !available() {
        return;
    }
    let db = Mariadb::start("app", PASSWORD, "appdb");
    let world = World::new("sealed-mysql");
    world
        .sb
        .api
        .post(
            "/v1/secrets",
            json!({"name": "MY_DB", "kind": "mysql", "exposure": "sealed",
                   "fields": {"host": "127.0.0.1", "port": db.port.to_string(), "user": "app",
                              "password": PASSWORD, "database": "appdb"}}),
        )
        .await
        .ok();
    world.activate(&["MY_DB"], &["MY_DB"]).await;

    // The variables: the socket, no password.
    let sock = var(&world, "MYSQL_UNIX_PORT").unwrap();
    assert!(sock.ends_with("/mysql/MY_DB.sock"), "{sock}");
    assert_eq!(var(&world, "MYSQL_HOST").as_deref(), Some("localhost"));
    assert_eq!(var(&world, "MYSQL_HOME").unwrap(), world.mounted("mysql"));
    assert_eq!(var(&world, "MYSQL_USER").as_deref(), Some("app"));
    assert_eq!(var(&world, "MYSQL_DATABASE").as_deref(), Some("appdb"));
    assert_eq!(
        var(&world, "DATABASE_URL").unwrap(),
        format!("mysql://app@localhost/appdb?socket={sock}")
    );
    assert_eq!(var(&world, "MYSQL_PWD"), None);
    assert_eq!(var(&world, "MYSQL_TCP_PORT"), None);
    let env = exec(&world, &["--", "env"]);
    assert!(!env.stdout.contains("pl@nted"), "{env:?}");

    // A silent client, left to time out while the rest runs.
    let mut silent = greeted(&sock);

    // The mariadb client with the variables, with the option file; PyMySQL from DATABASE_URL.
    let out = mariadb(&world, &format!("-e \"{QUERY}\""));
    assert_eq!(out.status, 0, "{out:?}\n{}", world.agent.log());
    assert_eq!(out.stdout.trim(), "app@% appdb");
    // MYSQL_HOME's option file names the user and the database too.
    let out = exec(&world, &["--", "mariadb", "-N", "-B", "-e", QUERY]);
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), "app@% appdb");
    let out = run_cmd({
        let mut c = world.command("mariadb");
        c.arg(format!("--defaults-extra-file={}", world.mounted("mysql/my.cnf")));
        c.args(["-N", "-B", "-e", QUERY]);
        c
    });
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), "app@% appdb");
    let out = run_cmd({
        let mut c = world.exec(&["--"]);
        c.arg(venv_python()).arg(support("pymysql_url.py")).arg(QUERY);
        c
    });
    assert_eq!(out.status, 0, "{out:?}\n{}", world.agent.log());
    assert_eq!(out.stdout.trim(), "app@% appdb");
    // Writes and reads back: a table in the database.
    let out = mariadb(
        &world,
        "-e \"CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('through the relay'); SELECT v FROM t\"",
    );
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), "through the relay");

    // Another user, another database: refused with the reason, printed by the client.
    let out = exec(&world, &["--", "mariadb", "-u", "root", "-e", "SELECT 1"]);
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("ERROR 1045 (28000)"), "{out:?}");
    assert!(out.stderr.contains("secret MY_DB logs in only as 'app', not 'root'"), "{out:?}");
    let out = mariadb(&world, "--database=mysql -e \"SELECT 1\"");
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("ERROR 1044 (42000)"), "{out:?}");
    assert!(out.stderr.contains("connects only to database 'appdb', not 'mysql'"), "{out:?}");
    let out = run_cmd({
        let mut c = world.exec(&["--", "env"]);
        c.arg(format!("DATABASE_URL=mysql://root@localhost/appdb?socket={sock}"));
        c.arg(venv_python()).arg(support("pymysql_url.py")).arg(QUERY);
        c
    });
    assert!(
        out.stderr.contains("ERROR 1045: maestro: secret MY_DB logs in only as 'app'"),
        "{out:?}"
    );

    // Another uid: closed before any greeting.
    let out = run_cmd({
        let mut c = as_uid(OTHER_UID, "mariadb");
        c.env_clear().args(["--no-defaults", "-u", "app", "-e", "SELECT 1"]);
        c.arg(format!("--socket={sock}"));
        c
    });
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("Lost connection"), "{out:?}");

    // Oversized and garbled handshakes: an ERR, then closed.
    let mut c = greeted(&sock);
    c.write_all(&[0xff, 0xff, 0xff, 1]).unwrap();
    let (closed, err) = closed_after(&mut c);
    assert!(closed && err.as_deref().is_some_and(|e| e.contains("over the limit")), "{err:?}");
    let mut c = greeted(&sock);
    c.write_all(&[10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    let (closed, err) = closed_after(&mut c);
    assert!(closed && err.as_deref().is_some_and(|e| e.contains("malformed")), "{err:?}");
    // A request for TLS (which the relay does not offer on its local socket): the reason.
    let mut c = greeted(&sock);
    let mut tls = vec![32, 0, 0, 1];
    tls.extend_from_slice(&(0x200u32 | 0x800 | 0x8000).to_le_bytes());
    tls.extend_from_slice(&[0, 0, 0, 1, 45]);
    tls.extend_from_slice(&[0; 23]);
    c.write_all(&tls).unwrap();
    let (closed, err) = closed_after(&mut c);
    assert!(closed && err.as_deref().is_some_and(|e| e.contains("takes no TLS")), "{err:?}");

    // A long session: the password is nowhere in the sandbox while it runs.
    let mut session = ChildGuard::spawn("mariadb", {
        let mut c = world.exec(&["--", "sh", "-c"]);
        c.arg(
            "exec mariadb -n -N -B -u \"$MYSQL_USER\" -e \"SELECT 'started'; SELECT SLEEP(120)\"",
        );
        c
    });
    session
        .wait_for_stdout(Duration::from_secs(10), |l| l.contains("started"))
        .unwrap_or_else(|| panic!("no session: {}\n{}", session.log(), world.agent.log()));
    let found = files_containing(&world.sb.mount(), PASSWORD.as_bytes());
    assert!(found.is_empty(), "the password is in {found:?}");
    let pids = uid_pids(SANDBOX_UID);
    assert!(!pids.is_empty());
    for pid in &pids {
        assert_eq!(process_holds(*pid, PASSWORD.as_bytes()), None, "process {pid}");
    }

    // The silent client was closed by now (the handshake's time limit).
    let (closed, _) = closed_after(&mut silent);
    assert!(closed, "a silent client is never closed");

    // Deactivation ends the session and removes the socket; new connections fail.
    let started = Instant::now();
    world.deactivate(&["MY_DB"], &[]).await;
    let ended = session.wait_exit(Duration::from_secs(10));
    assert!(ended.is_some(), "the session outlived the deactivation: {}", session.log());
    eprintln!("mysql session ended {:?} after the deactivation was asked", started.elapsed());
    assert!(session.log().contains("Lost connection"), "{}", session.log());
    assert!(!Path::new(&sock).exists(), "{sock} is still there");
    let out = run_cmd({
        let mut c = as_uid(SANDBOX_UID, "mariadb");
        c.env_clear().args(["--no-defaults", "-u", "app", "-e", "SELECT 1"]);
        c.arg(format!("--socket={sock}"));
        c
    });
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("Can't connect to local server through socket"), "{out:?}");

    // The audit: each connection with its command, user and database, its end; the refusals.
    let mut history = String::new();
    let seen = wait_until(Duration::from_secs(10), || {
        history = world.sb.maestro(&["secrets", "history", "MY_DB"]).ok().stdout;
        history.contains("closed by the agent") && history.contains("is not the sandbox user")
    });
    assert!(seen.is_some(), "{history}");
    let opened: Vec<&str> = history.lines().filter(|l| l.contains("opened")).collect();
    assert!(opened.iter().any(|l| l.contains(" mariadb ")), "{history}");
    assert!(opened.iter().any(|l| l.contains(" python")), "{history}");
    assert!(
        opened.iter().all(|l| l.contains("as app to database 'appdb' on 127.0.0.1")),
        "{history}"
    );
    assert!(history.contains(&format!("mysql relay socket of MY_DB: uid {OTHER_UID}")));
    world.assert_no_leak(&[PASSWORD]);
    drop(db);
}

/// Registers a sealed mysql secret for `db` with `extra` fields; `host` 127.0.0.1 unless given.
async fn add_sealed(world: &World, name: &str, db: &Mariadb, extra: serde_json::Value) {
    let mut fields = json!({"host": "127.0.0.1", "port": db.port.to_string(), "user": "app",
                            "password": PASSWORD, "database": "appdb"});
    for (k, v) in extra.as_object().unwrap() {
        fields[k] = v.clone();
    }
    world
        .sb
        .api
        .post(
            "/v1/secrets",
            json!({"name": name, "kind": "mysql", "exposure": "sealed", "fields": fields}),
        )
        .await
        .ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_logs_in_over_verified_tls_where_the_secret_asks_for_it() {
    if !available() {
        return;
    }
    let (ca, cert, key) = integrations_support::servers::server_certificate();
    let (other_ca, _, _) = integrations_support::servers::server_certificate();
    // The account may log in over TLS only.
    let db = Mariadb::start_with("app", PASSWORD, "appdb", Some((&cert, &key)));
    let world = World::new("sealed-mysql-tls");
    let ssl_version = "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS \
                       WHERE VARIABLE_NAME = 'Ssl_version'";
    let cases = [
        // (name, extra fields, expected: Ok(TLS version prefix) or Err(message part))
        ("VERIFIED", json!({"ssl_mode": "VERIFY_IDENTITY", "ssl_ca": ca}), Ok("TLSv1.")),
        (
            "CA_ONLY",
            json!({"host": "localhost", "ssl_mode": "VERIFY_CA", "ssl_ca": ca}),
            Ok("TLSv1."),
        ),
        (
            "WRONG_NAME",
            json!({"host": "localhost", "ssl_mode": "VERIFY_IDENTITY", "ssl_ca": ca}),
            Err("certificate not valid for name"),
        ),
        (
            "WRONG_CA",
            json!({"ssl_mode": "VERIFY_IDENTITY", "ssl_ca": other_ca}),
            Err("failed: invalid peer certificate"),
        ),
        ("NO_TLS", json!({}), Err("Access denied for user 'app'")),
    ];
    for (name, extra, expected) in cases {
        add_sealed(&world, name, &db, extra).await;
        world.activate(&[name], &[name]).await;
        let out = mariadb(&world, &format!("-e \"{ssl_version}\""));
        match expected {
            Ok(prefix) => {
                assert_eq!(out.status, 0, "{name}: {out:?}\n{}", world.agent.log());
                assert!(out.stdout.trim().starts_with(prefix), "{name}: {out:?}");
            }
            Err(part) => {
                assert_ne!(out.status, 0, "{name}: {out:?}");
                assert!(out.stderr.contains(part), "{name}: {out:?}");
            }
        }
        world.deactivate(&[name], &[]).await;
    }
    world.assert_no_leak(&[PASSWORD]);
    drop(db);
}
