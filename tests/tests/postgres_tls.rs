//! The broker reaches PostgreSQL over TLS when the URL asks for it: with
//! `sslmode=verify-full&sslrootcert=CA`, every connection of the broker is encrypted (as
//! `pg_stat_ssl` shows) and the server's certificate is checked; a CA that did not sign the
//! server's certificate stops start-up with a clear message.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use maestro_tests::broker::{Broker, BrokerOptions, launch};
use maestro_tests::pg::Postgres;
use maestro_tests::util::temp_dir;

#[tokio::test(flavor = "multi_thread")]
async fn the_broker_talks_to_postgres_over_verified_tls() {
    let Some((pg, ca)) = Postgres::start_with_tls() else { return };
    let db = pg.create_database("maestro_tls");
    let url = format!("{}?sslmode=verify-full&sslrootcert={}", db.url(), ca.display());
    let broker = Broker::start_with(BrokerOptions::default().env("MAESTRO_DATABASE_URL", &url));
    let api = broker.admin();
    api.add_generic("OVER_TLS", &[("TLS_VAR", "planted-pg-tls-value")]).await.ok();
    assert_eq!(api.get("/v1/secrets").await.ok().as_array().unwrap().len(), 1);

    // Every connection of the broker's role is a TLS connection.
    let out = pg.psql(
        "postgres",
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.usename = 'maestro_tls'",
    );
    assert_eq!(out.status, 0, "{out:?}");
    let counts: Vec<u32> = out.stdout.trim().split('|').map(|n| n.parse().unwrap()).collect();
    assert!(counts[1] > 0, "the broker holds connections: {out:?}");
    assert_eq!(counts[0], counts[1], "every broker connection uses TLS: {out:?}");

    // A CA that did not sign the server's certificate: refused, in one line, no password shown.
    let foreign = temp_dir("maestro-pg-foreign-ca-");
    let foreign_ca = foreign.path().join("ca.pem");
    std::fs::write(&foreign_ca, broker.ca_pem()).unwrap();
    let bad_url = format!("{}?sslmode=verify-full&sslrootcert={}", db.url(), foreign_ca.display());
    let data = temp_dir("maestro-pg-tls-data-");
    let err = launch(data.path(), &BrokerOptions::default().env("MAESTRO_DATABASE_URL", &bad_url))
        .map(|_| ())
        .expect_err("a broker must not start against a server its CA does not vouch for");
    assert!(!err.contains(&db.password), "the password leaked into the error: {err}");
    let lower = err.to_lowercase();
    assert!(
        lower.contains("certificate") || lower.contains("tls"),
        "the refusal names the TLS problem: {err}"
    );
    println!("refused: {}", err.lines().last().unwrap_or_default());
}
