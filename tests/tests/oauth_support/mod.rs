//! Helpers of the `oauth_*` tests: the OAuth 2.0 server (the npm package `oauth2-mock-server`,
//! run by `tests/support/oauth/server.mjs` through its library API), a "browser" that follows
//! authorization URLs (reqwest, trusting the broker's CA), `maestro oauth connect` running in
//! the background, and the search for tokens in files and logs.
//!
//! Without Node.js or the installed package the tests skip with a message, unless
//! `MAESTRO_REQUIRE_OAUTH` is set (`scripts/test.sh`), where that fails.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Each `oauth_*` test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use maestro_tests::broker::{Broker, CmdOutput};
use maestro_tests::util::{ChildGuard, bin, files_containing};
use serde_json::{Value, json};

/// The client credentials registered with the server (and planted: never in a file or log).
pub const CLIENT_ID: &str = "maestro-test-client";
pub const CLIENT_SECRET: &str = "planted-oauth-client-secret-6d1f";

/// The directory of the server script and its `node_modules`.
pub fn support_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("support").join("oauth")
}

/// Whether the OAuth server can run here; prints why not, or panics under
/// `MAESTRO_REQUIRE_OAUTH`.
pub fn oauth_available() -> bool {
    let node = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    let package = support_dir().join("node_modules").join("oauth2-mock-server").is_dir();
    if node && package {
        return true;
    }
    let why = format!(
        "OAuth test skipped: needs node ({node}) and oauth2-mock-server in {} ({package}); run \
         tests/support/oauth/install.sh (scripts/test.sh does)",
        support_dir().display()
    );
    assert!(std::env::var_os("MAESTRO_REQUIRE_OAUTH").is_none(), "{why}");
    eprintln!("{why}");
    false
}

/// The running OAuth server.
pub struct OAuthServer {
    _process: ChildGuard,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    http: reqwest::Client,
}

impl OAuthServer {
    /// Starts the server with the test's client credentials.
    pub async fn start() -> Self {
        let mut cmd = Command::new("node");
        cmd.arg(support_dir().join("server.mjs")).current_dir(support_dir());
        let process = ChildGuard::spawn("oauth2-mock-server", cmd);
        let line = process
            .wait_for_stdout(Duration::from_secs(30), |l| l.contains(" listening on "))
            .unwrap_or_else(|| panic!("the OAuth server did not start:\n{}", process.log()));
        let url = line.rsplit(' ').next().unwrap().to_owned();
        let server = Self { _process: process, url, http: reqwest::Client::new() };
        server.configure(json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})).await;
        server
    }

    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Changes the server's behaviour (see `server.mjs`).
    pub async fn configure(&self, settings: Value) {
        let r = self
            .http
            .post(self.endpoint("/_control/config"))
            .json(&settings)
            .send()
            .await
            .expect("the OAuth server answers");
        assert!(r.status().is_success(), "configuring the OAuth server failed: {r:?}");
    }

    /// What the server was asked and issued.
    pub async fn log(&self) -> Value {
        self.http
            .get(self.endpoint("/_control/log"))
            .send()
            .await
            .expect("the OAuth server answers")
            .json()
            .await
            .expect("the log is JSON")
    }

    /// Every access and refresh token the server issued, and the client secret.
    pub async fn planted(&self) -> Vec<String> {
        let log = self.log().await;
        let mut out = vec![CLIENT_SECRET.to_owned()];
        for list in ["access_tokens", "refresh_tokens"] {
            for t in log["issued"][list].as_array().unwrap() {
                out.push(t.as_str().unwrap().to_owned());
            }
        }
        out
    }

    /// The access tokens issued, in order.
    pub async fn access_tokens(&self) -> Vec<String> {
        let log = self.log().await;
        log["issued"]["access_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect()
    }
}

/// Registers a GitHub-preset provider whose endpoints are the test server's; `extra` are more
/// `providers add` arguments.
pub fn add_provider(
    broker: &Broker,
    token: &str,
    server: &OAuthServer,
    name: &str,
    extra: &[&str],
) -> CmdOutput {
    let secret_file = broker.data_dir().parent().unwrap().join(format!("{name}.client-secret"));
    std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).unwrap();
    let auth = server.endpoint("/authorize");
    let tok = server.endpoint("/token");
    let mut args = vec![
        "oauth",
        "providers",
        "add",
        name,
        "--preset",
        "github",
        "--client-id",
        CLIENT_ID,
        "--client-secret-file",
        secret_file.to_str().unwrap(),
        "--auth-url",
        &auth,
        "--token-url",
        &tok,
    ];
    args.extend_from_slice(extra);
    let out = broker.maestro(token, &args);
    std::fs::remove_file(&secret_file).unwrap();
    out
}

/// `maestro oauth connect|reconnect ...` running in the background.
pub struct Pending {
    process: ChildGuard,
    /// The first line it printed: the authorization URL (or, with `--json`, an object).
    pub first_line: String,
}

impl Pending {
    /// Starts `maestro ARGS` and waits for its first line.
    pub fn start(broker: &Broker, token: &str, args: &[&str]) -> Self {
        let mut cmd = Command::new(bin("maestro"));
        cmd.args(args)
            .env_remove("MAESTRO_TOKEN_FILE")
            .env("MAESTRO_URL", &broker.url)
            .env("MAESTRO_TOKEN", token)
            .env("MAESTRO_CA", broker.ca_path());
        let process = ChildGuard::spawn("maestro oauth", cmd);
        let first_line = process
            .wait_for_stdout(Duration::from_secs(30), |_| true)
            .unwrap_or_else(|| panic!("maestro printed no authorization URL:\n{}", process.log()));
        Self { process, first_line }
    }

    /// The authorization URL (from the plain line or the JSON object).
    pub fn url(&self) -> String {
        if self.first_line.starts_with('{') {
            let v: Value = serde_json::from_str(&self.first_line).unwrap();
            v["authorization_url"].as_str().unwrap().to_owned()
        } else {
            self.first_line.clone()
        }
    }

    /// Waits for the command to end: its exit code, its next stdout line, everything it said.
    pub fn finish(mut self, timeout: Duration) -> (i32, Option<String>, String) {
        let status = self
            .process
            .wait_exit(timeout)
            .unwrap_or_else(|| panic!("maestro oauth did not end:\n{}", self.process.log()));
        let next = self.process.wait_for_stdout(Duration::from_millis(100), |_| true);
        (status.code().unwrap_or(-1), next, self.process.log())
    }
}

/// A browser: trusts the broker's CA, follows redirects (the provider's to the callback).
pub fn browser(broker: &Broker) -> reqwest::Client {
    maestro_tests::broker::init_crypto();
    let ca = reqwest::Certificate::from_pem(broker.ca_pem().as_bytes()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// What a page said.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    /// Where the browser ended (the callback URL, with its code and state).
    pub url: String,
    pub text: String,
}

/// Opens `url` and follows redirects.
pub async fn visit(browser: &reqwest::Client, url: &str) -> Page {
    let r = browser.get(url).send().await.expect("the page loads");
    let status = r.status().as_u16();
    let url = r.url().to_string();
    let text = r.text().await.unwrap();
    Page { status, url, text }
}

/// The provider's redirect to the callback for an authorization URL, without following it.
pub async fn callback_url(authorization_url: &str) -> String {
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(authorization_url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 302, "{r:?}");
    r.headers()["location"].to_str().unwrap().to_owned()
}

/// Asserts that none of `planted` is in a file under `dir` or in any of `logs`.
pub fn assert_nowhere(planted: &[String], dir: &Path, logs: &[(&str, String)]) {
    assert!(planted.len() > 1, "nothing planted");
    for value in planted {
        let found = files_containing(dir, value.as_bytes());
        assert!(found.is_empty(), "a token or the client secret is in {found:?}");
        for (name, log) in logs {
            assert!(
                !log.contains(value.as_str()),
                "a token or the client secret is in the {name} log"
            );
        }
    }
}
