//! Sealed PostgreSQL logins against a real server on a loopback port (SCRAM-SHA-256 in pg_hba,
//! passwords stored as SCRAM), the clients run as the sandbox user through `maestro-exec`:
//!
//! * the sandbox gets PGHOST (the relay socket's directory), PGPORT, PGUSER, PGDATABASE and a
//!   DATABASE_URL without password; no file under the mount holds the password;
//! * psql, psycopg (v3) and pg_dump work through the agent's relay socket; a migration with
//!   `maestro-exec -- psql -f migrate.sql` succeeds;
//! * a connection for another database or user is refused with the relay's message, printed by
//!   psql; another uid is refused at the socket; an oversized or garbled startup is refused;
//! * while a long query runs, the password is in no sandbox process's environment, command line
//!   or memory (`/proc/PID/mem`, read as root);
//! * deactivation ends the long-running psql and removes the socket: new connections fail;
//! * the audit shows each connection (command, database and user) and its end;
//! * against a server that takes log-ins over TLS only, the relay encrypts and verifies as the
//!   secret's sslmode asks (verify-full, verify-ca, require), refuses a certificate for another
//!   name or from an unknown CA with a message psql prints, and gets no log-in without TLS; the
//!   secret's sslrootcert verifies the server for the relay and, plain, for libpq itself.
// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod integrations_support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use integrations_support::servers::Postgres;
use integrations_support::{World, clients_available, postgres_bin, venv_python};
use maestro_tests::agent::{OTHER_UID, SANDBOX_UID, as_uid, run_cmd, wait_until};
use maestro_tests::broker::CmdOutput;
use maestro_tests::util::{ChildGuard, files_containing, process_holds, uid_pids};
use serde_json::json;

/// Long and odd enough never to turn up by chance; holds what URLs and pgpass would escape.
const PASSWORD: &str = "Sealed-pg-p@ss:w/rd-7f3a9c2e1b5d";

/// `maestro-exec -- ARGS` as the sandbox user.
fn exec(world: &World, args: &[&str]) -> CmdOutput {
    let mut cmd = world.exec(&["--"]);
    cmd.args(args);
    run_cmd(cmd)
}

fn psql(world: &World, sql: &str) -> CmdOutput {
    exec(world, &["psql", "-w", "-X", "-v", "ON_ERROR_STOP=1", "-tAc", sql])
}

fn var(world: &World, name: &str) -> Option<String> {
    let out = exec(world, &["printenv", name]);
    (out.status == 0).then(|| out.stdout.trim().to_owned())
}

/// Sends `bytes` to the socket as the test (root) and reads the answer to its end.
fn raw_answer(socket: &Path, bytes: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_postgres_login_serves_psql_psycopg_and_pg_dump_without_the_password() {
    let bin = postgres_bin();
    let initdb =
        bin.as_ref().map_or_else(|| PathBuf::from("postgresql-initdb"), |b| b.join("initdb"));
    let python = venv_python();
    if !clients_available(&[
        initdb.as_os_str(),
        "psql".as_ref(),
        "pg_dump".as_ref(),
        python.as_os_str(),
    ]) {
        return;
    }
    let pg = Postgres::start(&bin.unwrap(), "app", PASSWORD, "appdb");
    let world = World::new("sealed-pg");
    let reply = world
        .sb
        .api
        .post(
            "/v1/secrets",
            json!({"name": "PG_APP", "kind": "postgres", "exposure": "sealed",
                   "fields": {"host": "127.0.0.1", "port": pg.port.to_string(), "user": "app",
                              "password": PASSWORD, "database": "appdb", "sslmode": "prefer"}}),
        )
        .await;
    reply.ok();
    world.activate(&["PG_APP"], &["PG_APP"]).await;

    // The variables: a socket directory, no password anywhere.
    let host = var(&world, "PGHOST").unwrap();
    assert!(host.ends_with("/pg/PG_APP"), "{host}");
    let socket = Path::new(&host).join(".s.PGSQL.5432");
    assert!(socket.exists(), "{}", socket.display());
    assert_eq!(var(&world, "PGPORT").as_deref(), Some("5432"));
    assert_eq!(var(&world, "PGUSER").as_deref(), Some("app"));
    assert_eq!(var(&world, "PGDATABASE").as_deref(), Some("appdb"));
    assert_eq!(
        var(&world, "DATABASE_URL").unwrap(),
        format!("postgresql://app@/appdb?host={host}")
    );
    assert_eq!(var(&world, "PGPASSWORD"), None);
    assert_eq!(var(&world, "PGPASSFILE"), None);
    let env = exec(&world, &["env"]);
    assert!(!env.stdout.contains(PASSWORD), "{env:?}");
    let found = files_containing(&world.sb.mount(), PASSWORD.as_bytes());
    assert!(found.is_empty(), "the password is in {found:?}");

    // psql with the variables, then with DATABASE_URL alone.
    let out = psql(&world, "select current_user || '@' || current_database()");
    assert_eq!(out.status, 0, "{out:?}\n{}", world.agent.log());
    assert_eq!(out.stdout.trim(), "app@appdb");
    let out = exec(
        &world,
        &[
            "sh",
            "-c",
            "unset PGHOST PGPORT PGUSER PGDATABASE; exec psql -w -X \"$DATABASE_URL\" -tAc 'select 41+1'",
        ],
    );
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), "42");

    // A migration from a file.
    world.write_home(
        "migrate.sql",
        "BEGIN;\nCREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);\n\
         INSERT INTO notes (body) VALUES ('first'), ('second');\nCOMMIT;\n",
    );
    let out =
        exec(&world, &["psql", "-w", "-X", "-v", "ON_ERROR_STOP=1", "-q", "-f", "migrate.sql"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(psql(&world, "select count(*) from notes").stdout.trim(), "2");

    // psycopg 3, from DATABASE_URL.
    let script = "import os, psycopg\n\
                  with psycopg.connect(os.environ['DATABASE_URL']) as c:\n\
                  \x20   print(c.execute('select body from notes order by id').fetchall())\n";
    let out = exec(&world, &[python.to_str().unwrap(), "-c", script]);
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), "[('first',), ('second',)]");

    // pg_dump.
    let out = exec(&world, &["pg_dump", "-w", "--no-owner", "-t", "notes"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(out.stdout.contains("CREATE TABLE public.notes"), "{out:?}");
    assert!(out.stdout.contains("second"), "{out:?}");

    // Another database, another user: refused with the relay's message.
    let out = exec(&world, &["psql", "-w", "-X", "-d", "postgres", "-tAc", "select 1"]);
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("serves database \"appdb\" only, not \"postgres\""), "{out:?}");
    let out = exec(&world, &["psql", "-w", "-X", "-U", "postgres", "-tAc", "select 1"]);
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("logs in as user \"app\" only, not \"postgres\""), "{out:?}");

    // Another uid: closed unanswered at the socket.
    let out = run_cmd({
        let mut c = as_uid(OTHER_UID, "psql");
        c.env_clear()
            .args(["-w", "-X", "-h", &host, "-U", "app", "-d", "appdb", "-tAc", "select 7"]);
        c
    });
    assert_ne!(out.status, 0, "{out:?}");
    assert!(!out.stdout.contains('7'), "{out:?}");

    // Oversized and garbled startups: refused with an error, the connection closed.
    let mut big = 20_000u32.to_be_bytes().to_vec();
    big.extend([0, 3, 0, 0]);
    let answer = String::from_utf8_lossy(&raw_answer(&socket, &big)).into_owned();
    assert!(answer.starts_with('E') && answer.contains("invalid startup packet"), "{answer}");
    let answer = raw_answer(&socket, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(String::from_utf8_lossy(&answer).contains("invalid startup packet"), "{answer:?}");

    // A long query: the password is in no process of the sandbox user meanwhile.
    let mut long = ChildGuard::spawn("psql-long", {
        let mut c = world.exec(&["--"]);
        c.args(["psql", "-w", "-X", "-tAc", "select 'started'; select pg_sleep(600)"]);
        c
    });
    let running = wait_until(Duration::from_secs(20), || {
        psql(&world, "select count(*) from pg_stat_activity where query like '%pg_sleep(600)%' and pid <> pg_backend_pid()")
            .stdout
            .trim()
            == "1"
    });
    assert!(running.is_some(), "the long query did not start: {}", long.log());
    let pids = uid_pids(SANDBOX_UID);
    assert!(!pids.is_empty());
    for pid in &pids {
        assert_eq!(process_holds(*pid, PASSWORD.as_bytes()), None, "process {pid} holds it");
    }

    // Deactivation ends it and removes the socket; new connections fail.
    let started = Instant::now();
    world.deactivate(&["PG_APP"], &[]).await;
    let ended = long.wait_exit(Duration::from_secs(10));
    assert!(ended.is_some(), "the long psql outlived the deactivation: {}", long.log());
    eprintln!("the relayed psql ended {:?} after the deactivation was asked", started.elapsed());
    assert!(long.log().contains("server closed the connection"), "{}", long.log());
    assert!(!socket.exists(), "{} is still there", socket.display());
    let out = run_cmd({
        let mut c = as_uid(SANDBOX_UID, "psql");
        c.env_clear()
            .args(["-w", "-X", "-h", &host, "-U", "app", "-d", "appdb", "-tAc", "select 1"]);
        c
    });
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("No such file or directory"), "{out:?}");

    // The audit: each connection with its command, database and user, its end, the refusals.
    let mut history = String::new();
    let seen = wait_until(Duration::from_secs(10), || {
        history = world.sb.maestro(&["secrets", "history", "PG_APP"]).ok().stdout;
        history.contains("postgres connection to database appdb as app on 127.0.0.1")
            && history.contains("ended after")
            && history.contains("closed by the agent")
            && history.contains("not \"postgres\"")
            && history.contains(&format!("PostgreSQL socket of PG_APP: uid {OTHER_UID}"))
    });
    assert!(seen.is_some(), "{history}\n{}", world.agent.log());
    let connected: Vec<&str> =
        history.lines().filter(|l| l.contains("postgres connection to database appdb")).collect();
    assert!(connected.iter().any(|l| l.contains(" psql ")), "{history}");
    assert!(connected.iter().any(|l| l.contains(" pg_dump ")), "{history}");
    world.assert_no_leak(&[PASSWORD]);
    drop(pg);
}

/// Adds a sealed `postgres` secret for the TLS server, activates it alone, and runs one query
/// through its relay as the sandbox user.
async fn tls_query(world: &World, name: &str, host: &str, port: u16, sslmode: &str) -> CmdOutput {
    tls_query_with(world, name, "sealed", json!({"host": host, "sslmode": sslmode}), port).await
}

/// The same with `more` fields (host, sslmode, sslrootcert ...) and an exposure.
async fn tls_query_with(
    world: &World,
    name: &str,
    exposure: &str,
    more: serde_json::Value,
    port: u16,
) -> CmdOutput {
    let mut fields = json!({"port": port.to_string(), "user": "app", "password": PASSWORD,
                            "database": "appdb"});
    for (k, v) in more.as_object().unwrap() {
        fields[k] = v.clone();
    }
    let reply = world
        .sb
        .api
        .post(
            "/v1/secrets",
            json!({"name": name, "kind": "postgres", "exposure": exposure, "fields": fields}),
        )
        .await;
    reply.ok();
    world.activate(&[name], &[name]).await;
    // Whether this very connection is encrypted, from the server's side.
    let out = psql(world, "select ssl from pg_stat_ssl where pid = pg_backend_pid()");
    world.deactivate(&[name], &[]).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_logs_in_over_tls_verified_as_the_sslmode_asks() {
    let bin = postgres_bin();
    let initdb =
        bin.as_ref().map_or_else(|| PathBuf::from("postgresql-initdb"), |b| b.join("initdb"));
    if !clients_available(&[initdb.as_os_str(), "psql".as_ref()]) {
        return;
    }
    // The server takes TCP log-ins over TLS only; its certificate names 127.0.0.1.
    let (pg, ca_pem) = Postgres::start_tls(&bin.unwrap(), "app", PASSWORD, "appdb");
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &ca_pem).unwrap();
    let options = maestro_tests::agent::AgentOptions {
        extra_args: vec!["--test-only-upstream-ca".into(), ca.path().to_string_lossy().into()],
        ..Default::default()
    };
    let world = World::with_agent("sealed-pg-tls", options);
    let port = pg.port;

    // verify-full: the chain and the name check out; the server sees an encrypted connection.
    let out = tls_query(&world, "PG_FULL", "127.0.0.1", port, "verify-full").await;
    assert_eq!((out.status, out.stdout.trim()), (0, "t"), "{out:?}\n{}", world.agent.log());
    // require: encrypted, the certificate not checked.
    let out = tls_query(&world, "PG_REQUIRE", "127.0.0.1", port, "require").await;
    assert_eq!((out.status, out.stdout.trim()), (0, "t"), "{out:?}");
    // The certificate names 127.0.0.1, not localhost: verify-ca takes it (the chain only),
    // verify-full refuses, and psql prints why.
    let out = tls_query(&world, "PG_CA", "localhost", port, "verify-ca").await;
    assert_eq!((out.status, out.stdout.trim()), (0, "t"), "{out:?}");
    let out = tls_query(&world, "PG_NAME", "localhost", port, "verify-full").await;
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("TLS with the PostgreSQL server localhost"), "{out:?}");
    assert!(out.stderr.to_lowercase().contains("not valid for name"), "{out:?}");
    // disable: the relay does not encrypt, and this server takes no log-in without TLS.
    let out = tls_query(&world, "PG_PLAIN", "127.0.0.1", port, "disable").await;
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("no encryption"), "{out:?}");

    // An agent that does not know the CA refuses the server under verify-full.
    let stranger = World::new("sealed-pg-tls-unknown-ca");
    let out = tls_query(&stranger, "PG_FULL", "127.0.0.1", port, "verify-full").await;
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("TLS with the PostgreSQL server 127.0.0.1"), "{out:?}");
    assert!(out.stderr.contains("UnknownIssuer"), "{out:?}");
    // Given the CA in the secret's sslrootcert, it verifies the server with that CA alone.
    let with_root = json!({"host": "127.0.0.1", "sslmode": "verify-full", "sslrootcert": ca_pem});
    let out = tls_query_with(&stranger, "PG_ROOT", "sealed", with_root.clone(), port).await;
    assert_eq!((out.status, out.stdout.trim()), (0, "t"), "{out:?}\n{}", stranger.agent.log());
    // Plain, libpq itself verifies with the certificate file the mount holds (PGSSLROOTCERT).
    let out = tls_query_with(&stranger, "PG_PLAIN_ROOT", "plain", with_root, port).await;
    assert_eq!((out.status, out.stdout.trim()), (0, "t"), "{out:?}");

    world.assert_no_leak(&[PASSWORD]);
    stranger.assert_no_leak(&[PASSWORD]);
    drop(pg);
}
