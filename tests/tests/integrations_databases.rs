//! Database clients connect with the injected login, to real servers started by the test
//! (loopback ports, password authentication), as the sandbox user:
//!
//! * psql to a temporary PostgreSQL cluster (SCRAM): with the PG* variables, then with only
//!   DATABASE_URL, then with only the pgpass file on the mount; each fails after deactivation;
//! * the mariadb client to a temporary MariaDB server: with the MYSQL_* variables, then with
//!   only the `[client]` option file on the mount, then with only DATABASE_URL (decoded the way
//!   applications do, `tests/support/mysql_url.py`); each fails after deactivation.
//!
//! The passwords hold the characters each format must escape: `@ : / \ " '`.
// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod integrations_support;

use std::path::PathBuf;

use integrations_support::servers::{Mariadb, Postgres};
use integrations_support::{
    World, assert_failed_without, clients_available, postgres_bin, support,
};
use maestro_tests::agent::run_cmd;
use maestro_tests::broker::CmdOutput;
use serde_json::json;

const PG_PASSWORD: &str = "pl@nted:pg/pass\\word\"'";
const MY_PASSWORD: &str = "pl@nted:my/pass\\word\"'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_connects_with_the_variables_the_url_and_the_pgpass_file() {
    let bin = postgres_bin();
    let initdb =
        bin.as_ref().map_or_else(|| PathBuf::from("postgresql-initdb"), |b| b.join("initdb"));
    if !clients_available(&[initdb.as_os_str(), "psql".as_ref()]) {
        return;
    }
    let pg = Postgres::start(&bin.unwrap(), "app", PG_PASSWORD, "appdb");
    let port = pg.port.to_string();
    let world = World::new("psql");
    world
        .add(
            "PG_APP",
            "postgres",
            json!({"host": "127.0.0.1", "port": port, "user": "app", "password": PG_PASSWORD,
                   "database": "appdb"}),
        )
        .await;
    let query = "select current_user || '@' || current_database()";
    let target = ["-h", "127.0.0.1", "-p", &port, "-U", "app", "-d", "appdb"];
    // -w: never prompt; -X: no ~/.psqlrc.
    let with_variables = || {
        let mut cmd = world.exec(&["--", "psql", "-w", "-X", "-tAc", query]);
        cmd.env_remove("PGPASSFILE");
        run_cmd(cmd)
    };
    let with_url_only = || {
        run_cmd(world.exec(&[
            "--",
            "sh",
            "-c",
            "unset PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE PGPASSFILE PGSSLMODE; \
             exec psql -w -X \"$DATABASE_URL\" -tAc \"$0\"",
            query,
        ]))
    };
    let with_pgpass_only = || {
        let mut cmd = world.command("psql");
        cmd.args(["-w", "-X"]).args(target).args(["-tAc", query]);
        cmd.env("PGPASSFILE", world.mounted("postgres/pgpass"));
        run_cmd(cmd)
    };
    let without_password = || {
        let mut cmd = world.exec(&["--", "psql", "-w", "-X"]);
        cmd.args(target).args(["-tAc", query]).env("PGPASSFILE", "/nonexistent");
        let mut cmd = cmd;
        cmd.env_remove("PGPASSWORD");
        run_cmd(cmd)
    };

    // The server demands a password: an explicit target alone is refused.
    let out = without_password();
    assert_failed_without(&out, PG_PASSWORD, "psql without a password");
    assert!(out.stderr.contains("no password supplied"), "{out:?}");

    world.activate(&["PG_APP"], &["PG_APP"]).await;
    let ok = |out: CmdOutput, how: &str| {
        assert_eq!(out.status, 0, "psql {how}: {out:?}");
        assert_eq!(out.stdout.trim(), "app@appdb", "psql {how}");
    };
    ok(with_variables(), "with the variables");
    ok(with_url_only(), "with only DATABASE_URL");
    ok(with_pgpass_only(), "with only the pgpass file");

    world.deactivate(&["PG_APP"], &[]).await;
    assert_failed_without(&with_variables(), PG_PASSWORD, "psql with the variables");
    assert_failed_without(&with_url_only(), PG_PASSWORD, "psql with DATABASE_URL");
    let out = with_pgpass_only();
    assert_failed_without(&out, PG_PASSWORD, "psql with the pgpass file");
    assert!(out.stderr.contains("no password supplied"), "{out:?}");
    assert_failed_without(&without_password(), PG_PASSWORD, "psql after deactivation");
    world.assert_no_leak(&[PG_PASSWORD]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_client_connects_with_the_variables_the_option_file_and_the_url() {
    if !clients_available(&[
        "mariadb-install-db".as_ref(),
        "mariadbd".as_ref(),
        "mariadb".as_ref(),
        "python3".as_ref(),
    ]) {
        return;
    }
    let db = Mariadb::start("app", MY_PASSWORD, "appdb");
    let port = db.port.to_string();
    let world = World::new("mariadb");
    world
        .add(
            "MY_APP",
            "mysql",
            json!({"host": "127.0.0.1", "port": port, "user": "app", "password": MY_PASSWORD,
                   "database": "appdb"}),
        )
        .await;
    let query = "SELECT CONCAT(CURRENT_USER(), ' ', DATABASE())";
    // The client reads MYSQL_HOST, MYSQL_TCP_PORT and MYSQL_PWD itself; the user and database
    // come from the variables of the same names.
    let with_variables = || {
        run_cmd(world.exec(&[
            "--",
            "sh",
            "-c",
            "exec mariadb -N -B -u \"$MYSQL_USER\" --database=\"$MYSQL_DATABASE\" -e \"$0\"",
            query,
        ]))
    };
    let with_option_file = || {
        let mut cmd = world.command("mariadb");
        cmd.arg(format!("--defaults-extra-file={}", world.mounted("mysql/my.cnf")));
        cmd.args(["-N", "-B", "-e", query]);
        run_cmd(cmd)
    };
    let with_url_only = || {
        let mut cmd = world.exec(&["--", "python3"]);
        cmd.arg(support("mysql_url.py")).args(["-N", "-B", "-e", query]);
        run_cmd(cmd)
    };
    let without_password = || {
        let mut cmd = world.command("mariadb");
        cmd.args(["--no-defaults", "--protocol=tcp", "-h", "127.0.0.1", "-P", &port, "-u", "app"]);
        cmd.args(["--database=appdb", "-N", "-B", "-e", query]);
        run_cmd(cmd)
    };

    let out = without_password();
    assert_failed_without(&out, MY_PASSWORD, "mariadb without a password");
    assert!(out.stderr.contains("Access denied for user 'app'"), "{out:?}");

    world.activate(&["MY_APP"], &["MY_APP"]).await;
    let ok = |out: CmdOutput, how: &str| {
        assert_eq!(out.status, 0, "mariadb {how}: {out:?}");
        assert_eq!(out.stdout.trim(), "app@% appdb", "mariadb {how}");
    };
    ok(with_variables(), "with the variables");
    ok(with_option_file(), "with only the option file");
    ok(with_url_only(), "with only DATABASE_URL");

    world.deactivate(&["MY_APP"], &[]).await;
    assert_failed_without(&with_variables(), MY_PASSWORD, "mariadb with the variables");
    assert_failed_without(&with_option_file(), MY_PASSWORD, "mariadb with the option file");
    assert_failed_without(&with_url_only(), MY_PASSWORD, "mariadb with DATABASE_URL");
    world.assert_no_leak(&[MY_PASSWORD]);
    drop(db);
}
