//! Where `maestro` finds the broker, its CA and the token (flags, environment, the data
//! directory's files), and the one line it prints when it cannot get through: broker not
//! running, TLS failure, bad token, bad settings.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli_support;

use cli_support::{env, fails_with_one_line, keys, run_env};
use maestro_tests::broker::Broker;
use maestro_tests::util::temp_dir;

fn secret_names(out: &maestro_tests::broker::CmdOutput) -> Vec<String> {
    assert_eq!(out.status, 0, "{out:?}");
    keys(&out.json(), "name")
}

#[test]
fn settings_come_from_flags_env_or_the_data_dir() {
    let broker = Broker::start();
    let me = broker.admin_token.clone();
    broker.maestro(&me, &["secrets", "add", "MINE", "--kind", "generic", "--field", "M=1"]).ok();
    let bob = broker.add_user("bob");
    let tmp = temp_dir("maestro-cli-");
    let data = broker.data_dir().to_str().unwrap().to_owned();
    let url = broker.url.clone();
    let ca = broker.ca_path().to_str().unwrap().to_owned();
    let ls = ["secrets", "ls", "--json"];

    // MAESTRO_DATA_DIR: CA and admin token from the data directory.
    let out =
        run_env(tmp.path(), &env(&[("MAESTRO_URL", &url), ("MAESTRO_DATA_DIR", &data)]), &ls, None);
    assert_eq!(secret_names(&out), ["MINE"]);

    // The default data directory ($XDG_DATA_HOME/maestro, as `maestro-broker serve` uses), with
    // nothing set but the URL, whatever the working directory.
    let xdg = tmp.path().join("xdg");
    std::fs::create_dir(&xdg).unwrap();
    std::os::unix::fs::symlink(broker.data_dir(), xdg.join("maestro")).unwrap();
    let xdg = xdg.to_str().unwrap();
    let out =
        run_env(tmp.path(), &env(&[("MAESTRO_URL", &url), ("XDG_DATA_HOME", xdg)]), &ls, None);
    assert_eq!(secret_names(&out), ["MINE"]);

    // --data-dir, --url, --ca and --token-file flags, and MAESTRO_TOKEN_FILE.
    let elsewhere = temp_dir("maestro-cli-");
    let bob_file = elsewhere.path().join("bob.token");
    std::fs::write(&bob_file, format!("{bob}\n")).unwrap();
    let bob_path = bob_file.to_str().unwrap();
    let out = run_env(
        elsewhere.path(),
        &[],
        &["--url", &url, "--data-dir", &data, "secrets", "ls", "--json"],
        None,
    );
    assert_eq!(secret_names(&out), ["MINE"]);
    let out = run_env(
        elsewhere.path(),
        &[],
        &["secrets", "ls", "--json", "--url", &url, "--ca", &ca, "--token-file", bob_path],
        None,
    );
    assert!(secret_names(&out).is_empty(), "bob sees none of admin's secrets");
    let out = run_env(
        elsewhere.path(),
        &env(&[("MAESTRO_URL", &url), ("MAESTRO_CA", &ca), ("MAESTRO_TOKEN_FILE", bob_path)]),
        &ls,
        None,
    );
    assert!(secret_names(&out).is_empty());
    // MAESTRO_TOKEN wins over the data directory's admin token.
    let out = run_env(
        tmp.path(),
        &env(&[("MAESTRO_URL", &url), ("MAESTRO_TOKEN", &bob), ("XDG_DATA_HOME", xdg)]),
        &ls,
        None,
    );
    assert!(secret_names(&out).is_empty());
    // A flag wins over its variable.
    let out = run_env(
        elsewhere.path(),
        &env(&[
            ("MAESTRO_URL", "https://127.0.0.1:9"),
            ("MAESTRO_CA", &ca),
            ("MAESTRO_TOKEN", &me),
        ]),
        &["--url", &url, "secrets", "ls", "--json"],
        None,
    );
    assert_eq!(secret_names(&out), ["MINE"]);
}

#[test]
fn cannot_get_through_gives_one_line_that_says_what_to_do() {
    let broker = Broker::start();
    let me = broker.admin_token.clone();
    let tmp = temp_dir("maestro-cli-");
    let url = broker.url.clone();
    let ca = broker.ca_path().to_str().unwrap().to_owned();
    let ls = ["secrets", "ls"];

    // Nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = format!("https://127.0.0.1:{port}");
    let out = run_env(
        tmp.path(),
        &env(&[("MAESTRO_URL", &dead), ("MAESTRO_TOKEN", &me), ("MAESTRO_CA", &ca)]),
        &ls,
        None,
    );
    fails_with_one_line(&out, &["not reachable", &dead, "maestro-broker serve", "MAESTRO_URL"]);

    // TLS: no CA configured (system roots do not know the broker's CA), and a foreign CA.
    let out =
        run_env(tmp.path(), &env(&[("MAESTRO_URL", &url), ("MAESTRO_TOKEN", &me)]), &ls, None);
    fails_with_one_line(&out, &["TLS", "MAESTRO_CA"]);
    let foreign = tmp.path().join("foreign-ca.pem");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&foreign, cert.cert.pem()).unwrap();
    let foreign = foreign.to_str().unwrap();
    let out = run_env(
        tmp.path(),
        &env(&[("MAESTRO_URL", &url), ("MAESTRO_TOKEN", &me), ("MAESTRO_CA", foreign)]),
        &ls,
        None,
    );
    fails_with_one_line(&out, &["TLS", "MAESTRO_CA", foreign]);

    // A wrong token: the broker's message, and a hint at MAESTRO_TOKEN.
    let out = run_env(
        tmp.path(),
        &env(&[("MAESTRO_URL", &url), ("MAESTRO_TOKEN", "not-a-token"), ("MAESTRO_CA", &ca)]),
        &ls,
        None,
    );
    fails_with_one_line(&out, &["MAESTRO_TOKEN"]);
    assert!(!out.stderr.contains("not-a-token"), "{out:?}");

    // No token at all, an unreadable token file, a missing or empty CA file, a plain-http URL.
    let out = run_env(tmp.path(), &env(&[("MAESTRO_URL", &url), ("MAESTRO_CA", &ca)]), &ls, None);
    fails_with_one_line(&out, &["no API token", "MAESTRO_TOKEN"]);
    let out = run_env(
        tmp.path(),
        &env(&[
            ("MAESTRO_URL", &url),
            ("MAESTRO_CA", &ca),
            ("MAESTRO_TOKEN_FILE", "/nonexistent/tok"),
        ]),
        &ls,
        None,
    );
    fails_with_one_line(&out, &["/nonexistent/tok"]);
    let out = run_env(
        tmp.path(),
        &env(&[
            ("MAESTRO_URL", &url),
            ("MAESTRO_TOKEN", &me),
            ("MAESTRO_CA", "/nonexistent/ca.pem"),
        ]),
        &ls,
        None,
    );
    fails_with_one_line(&out, &["/nonexistent/ca.pem", "MAESTRO_CA"]);
    let empty = tmp.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let out = run_env(
        tmp.path(),
        &env(&[
            ("MAESTRO_URL", &url),
            ("MAESTRO_TOKEN", &me),
            ("MAESTRO_CA", empty.to_str().unwrap()),
        ]),
        &ls,
        None,
    );
    fails_with_one_line(&out, &["no usable PEM certificate", "MAESTRO_CA"]);
    let plain = url.replace("https://", "http://");
    let out = run_env(
        tmp.path(),
        &env(&[("MAESTRO_URL", &plain), ("MAESTRO_TOKEN", &me), ("MAESTRO_CA", &ca)]),
        &ls,
        None,
    );
    fails_with_one_line(&out, &["https"]);

    // The same settings with the right values work.
    let out = run_env(
        tmp.path(),
        &env(&[("MAESTRO_URL", &url), ("MAESTRO_TOKEN", &me), ("MAESTRO_CA", &ca)]),
        &ls,
        None,
    );
    assert_eq!(out.status, 0, "{out:?}");
}
