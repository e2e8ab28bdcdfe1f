//! API tokens and service accounts (issue 13 part 3) and OAuth provider edit and removal
//! (part 2), end to end on the real binaries, on SQLite and on PostgreSQL with two brokers:
//!
//! * a token refused outside its scopes (403, one line naming the missing scope) with nothing
//!   changed, and allowed within them;
//! * create, list (never the value), revoke; a revoked token refused at once, also by the
//!   other broker; an expired token refused; a disabled user's tokens refused at once and a
//!   removed user's for good; a removed service account's tokens refused;
//! * forged, truncated, oversized tokens refused alike; the database holds hashes only, and no
//!   token value is in any file or log but the `--out` file it was asked to go to (0600);
//! * a provider edited (client id, secret, scopes), connected through after the edit, its
//!   removal refused naming the secret that uses it, then allowed once the secret is gone.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod oauth_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use maestro_tests::broker::{Api, Broker};
use maestro_tests::pg::{PeerBroker, Postgres};
use maestro_tests::util::files_containing;
use oauth_support::{OAuthServer, Pending, add_provider, browser, oauth_available, visit};
use reqwest::Method;
use serde_json::{Value, json};

/// The longest a revocation, expiry or disabling may take to be refused by any broker.
const WITHIN: Duration = Duration::from_secs(1);

/// Creates a token through the API; returns `(id, token)`.
async fn new_token(api: &Api, body: Value) -> (String, String) {
    let created = api.post("/v1/tokens", body).await.ok();
    let token = created["token"].as_str().expect("the token is in the answer").to_owned();
    assert!(token.starts_with("mst_"), "{created}");
    (created["info"]["id"].as_str().unwrap().to_owned(), token)
}

/// Polls `api` (acting with a token that should stop working) until it gets `status`; panics
/// after [`WITHIN`]. Returns the refusal's message.
async fn refused_within(api: &Api, status: u16, code: &str) -> String {
    let start = Instant::now();
    loop {
        let r = api.get("/v1/sessions").await;
        if r.status == status {
            return r.expect_error(status, code);
        }
        assert!(start.elapsed() < WITHIN, "still accepted after {WITHIN:?}: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that none of `values` is in a file under `dir` (but `allowed`) or in `logs`.
fn assert_nowhere(values: &[&str], dirs: &[&Path], allowed: &[&Path], logs: &[String]) {
    for value in values {
        for dir in dirs {
            let found: Vec<_> = files_containing(dir, value.as_bytes())
                .into_iter()
                .filter(|p| !allowed.contains(&p.as_path()))
                .collect();
            assert!(found.is_empty(), "a token value is in {found:?}");
        }
        for log in logs {
            assert!(!log.contains(value), "a token value is in a log");
        }
    }
}

/// The scope rules, seen through `a` and `b` (the same broker on SQLite, two brokers on one
/// PostgreSQL database): what the token may not do is refused and changes nothing.
async fn scopes_are_enforced(admin_a: &Api, admin_b: &Api) {
    admin_a.add_generic("DEPLOY_KEY", &[("DEPLOY_KEY", "planted-deploy-value")]).await.ok();
    admin_a
        .post("/v1/service-accounts", json!({"name": "ci", "description": "CI runner"}))
        .await
        .ok();
    let (_, ci) = new_token(
        admin_a,
        json!({"name": "ci-sessions", "scopes": ["sessions:write", "sessions:read", "activate"],
               "expires_in_secs": 3600, "service_account": "ci"}),
    )
    .await;
    let ci_b = Api { token: ci.clone(), ..admin_b.clone() };
    let who = ci_b.get("/v1/whoami").await.ok();
    assert_eq!(who["service_account"], "ci", "{who}");
    assert_eq!(who["scopes"], json!(["sessions:read", "sessions:write", "activate"]));

    // Outside its scopes: 403, one line naming the scope, and nothing changed.
    let refusals = [
        (Method::GET, "/v1/secrets", None, "secrets:read"),
        (
            Method::POST,
            "/v1/secrets",
            Some(json!({"name": "NEW", "kind": "generic", "fields": {"NEW": "v"}})),
            "secrets:write",
        ),
        (Method::DELETE, "/v1/secrets/DEPLOY_KEY", None, "secrets:write"),
        (
            Method::PATCH,
            "/v1/secrets/DEPLOY_KEY",
            Some(json!({"description": "changed"})),
            "secrets:write",
        ),
        (Method::GET, "/v1/audit", None, "audit:read"),
        (Method::GET, "/v1/tokens", None, "admin"),
        (
            Method::POST,
            "/v1/tokens",
            Some(json!({"name": "escalate", "scopes": ["admin"]})),
            "admin",
        ),
        (Method::POST, "/v1/service-accounts", Some(json!({"name": "evil"})), "admin"),
        (Method::DELETE, "/v1/oauth/providers/gh", None, "admin"),
    ];
    for (method, path, body, scope) in refusals {
        let r = ci_b.call(method.clone(), path, body).await;
        let message = r.expect_error(403, "forbidden");
        assert!(message.contains(&format!("'{scope}'")), "{method} {path}: {message}");
    }
    let secrets = admin_a.get("/v1/secrets").await.ok();
    let names: Vec<&str> =
        secrets.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["DEPLOY_KEY"], "nothing was created or deleted");
    assert_eq!(admin_a.get("/v1/secrets/DEPLOY_KEY").await.ok()["version"], 1, "nothing edited");
    let tokens = admin_a.get("/v1/tokens").await.ok();
    assert_eq!(tokens.as_array().unwrap().len(), 2, "no token was made: {tokens}");
    let accounts = admin_a.get("/v1/service-accounts").await.ok();
    assert_eq!(accounts.as_array().unwrap().len(), 1, "{accounts}");
    assert_eq!(accounts[0]["owner"].as_str().unwrap().split(':').next(), Some("user"));

    // Within them: a control plane makes a session and activates a secret in it.
    let created = ci_b.post("/v1/sessions", json!({"label": "ci-run"})).await.ok();
    let session = created["session"]["id"].as_str().unwrap().to_owned();
    ci_b.activate(&session, &["DEPLOY_KEY"]).await.ok();
    let shown = ci_b.get(&format!("/v1/sessions/{session}")).await.ok();
    assert!(shown.to_string().contains("DEPLOY_KEY"), "{shown}");
    // The session is its owner's: the admin sees it.
    admin_a.get(&format!("/v1/sessions/{session}")).await.ok();
    admin_a.post(&format!("/v1/sessions/{session}/end"), json!({})).await.ok();

    // Its use was recorded (at most once a minute), and the listing never shows a value.
    let start = Instant::now();
    loop {
        let list = admin_b.get("/v1/tokens").await.ok();
        let ci_row =
            list.as_array().unwrap().iter().find(|t| t["name"] == "ci-sessions").unwrap().clone();
        assert!(!list.to_string().contains(&ci), "a listing shows a token's value");
        assert_eq!(ci_row["service_account"], "ci");
        assert_eq!(ci_row["expired"], false);
        assert!(ci_row["expires_at"].is_string());
        if ci_row["last_used_at"].is_string() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "last use never recorded: {ci_row}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A storm of requests through both brokers, seconds later, writes no new last use (at most
    // one write a minute per token).
    let last_used = |list: Value| {
        list.as_array().unwrap().iter().find(|t| t["name"] == "ci-sessions").unwrap()
            ["last_used_at"]
            .clone()
    };
    let first = last_used(admin_a.get("/v1/tokens").await.ok());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ci_a = Api { token: ci.clone(), ..admin_a.clone() };
    for _ in 0..100 {
        ci_a.get("/v1/sessions").await.ok();
        ci_b.get("/v1/sessions").await.ok();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(last_used(admin_b.get("/v1/tokens").await.ok()), first, "a storm wrote last use");

    // Removing the service account revokes its tokens, on both brokers.
    let gone = admin_a.delete("/v1/service-accounts/ci").await.ok();
    assert_eq!(gone["revoked"], 1);
    refused_within(&ci_b, 401, "unauthorized").await;
    let trail = admin_b.get("/v1/audit?action=token_changed").await.ok().to_string();
    assert!(trail.contains("service account ci created (by token "), "{trail}");
    assert!(trail.contains("service account ci removed, its tokens revoked"), "{trail}");
}

/// Revocation, expiry, forged tokens: through `a`, checked on `b`.
async fn revocation_and_expiry(admin_a: &Api, admin_b: &Api) -> Vec<String> {
    let (id, mine) = new_token(
        admin_a,
        json!({"name": "laptop", "scopes": ["sessions:read"], "expires_in_secs": 86400}),
    )
    .await;
    let mine_b = Api { token: mine.clone(), ..admin_b.clone() };
    mine_b.get("/v1/sessions").await.ok();
    admin_a.delete(&format!("/v1/tokens/{id}")).await.ok();
    let message = refused_within(&mine_b, 401, "unauthorized").await;
    assert!(message.contains("not valid"), "{message}");
    admin_a.delete(&format!("/v1/tokens/{id}")).await.expect_error(404, "not_found");
    admin_a.delete("/v1/tokens/not-an-id").await.expect_error(404, "not_found");

    // Expiry: valid now, refused once it passed.
    let (_, short) = new_token(
        admin_a,
        json!({"name": "short", "scopes": ["sessions:read"], "expires_in_secs": 2}),
    )
    .await;
    let short_b = Api { token: short.clone(), ..admin_b.clone() };
    let start = Instant::now();
    let message = loop {
        let r = short_b.get("/v1/sessions").await;
        if r.status == 401 {
            break r.expect_error(401, "unauthorized");
        }
        assert_eq!(r.status, 200, "{r:?}");
        assert!(start.elapsed() < Duration::from_secs(10), "never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(message.contains("expired"), "{message}");
    let list = admin_b.get("/v1/tokens").await.ok();
    let row = list.as_array().unwrap().iter().find(|t| t["name"] == "short").unwrap().clone();
    assert_eq!(row["expired"], true, "{row}");

    // Bad requests for tokens are refused and make none.
    for (body, code) in [
        (json!({"name": "x", "scopes": []}), "bad_request"),
        (json!({"name": "x", "scopes": ["root"]}), "bad_request"),
        (json!({"name": "Bad Name", "scopes": ["admin"]}), "invalid_name"),
        (json!({"name": "x", "scopes": ["admin"], "expires_in_secs": 0}), "bad_request"),
        (json!({"name": "x", "scopes": ["admin"], "service_account": "nobody"}), "not_found"),
    ] {
        admin_a
            .post("/v1/tokens", body)
            .await
            .expect_error(if code == "not_found" { 404 } else { 400 }, code);
    }

    // Each creation and revocation is in the user's trail (read on the other broker), naming
    // the token and who made the change, never its value; the refused requests above made none.
    let trail = admin_b.get("/v1/audit?action=token_changed").await.ok();
    let details: Vec<String> = trail
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["detail"].as_str().unwrap_or_default().to_owned())
        .collect();
    let created = format!("token laptop ({id}) created: scopes sessions:read, expires ");
    assert!(
        details.iter().any(|d| d.starts_with(&created) && d.contains("(by token ")),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.starts_with(&format!("token {id} revoked (by token "))),
        "{details:?}"
    );
    assert!(details.iter().any(|d| d.starts_with("token short (")), "{details:?}");
    assert!(!details.iter().any(|d| d.contains(" x ") || d.starts_with("token x ")), "{details:?}");
    for value in [&mine, &short] {
        assert!(!trail.to_string().contains(value.as_str()), "a token's value is in the trail");
    }

    // Forged tokens: random ones of the right shape, a real one with its last character
    // changed, truncated, oversized, not bearer: all refused alike, never a 500.
    let real_admin = admin_a.token.clone();
    let mut forged: Vec<String> =
        (0..50).map(|i| format!("mst_{}", maestro_tests::pg::random_word(43 - (i % 3)))).collect();
    let mut flipped = real_admin.clone();
    let last = flipped.pop().unwrap();
    flipped.push(if last == 'A' { 'B' } else { 'A' });
    forged.push(flipped);
    forged.push(real_admin[..real_admin.len() - 1].to_owned());
    forged.push(format!("{real_admin}x"));
    forged.push("x".repeat(300));
    let mut messages = std::collections::BTreeSet::new();
    for f in &forged {
        let r = Api { token: f.clone(), ..admin_b.clone() }.get("/v1/secrets").await;
        messages.insert(r.expect_error(401, "unauthorized"));
    }
    assert!(messages.len() <= 2, "forged tokens are refused alike: {messages:?}");
    let raw = admin_b
        .client
        .get(format!("{}/v1/secrets", admin_b.base))
        .header("authorization", format!("Basic {real_admin}"))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 401);
    vec![mine, short]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_on_sqlite() {
    let broker = Broker::start();
    let admin = broker.admin();
    scopes_are_enforced(&admin, &admin).await;
    let mut values = revocation_and_expiry(&admin, &admin).await;

    // The CLI: service account, a token written to a new 0600 file, listed, revoked.
    let t = &broker.admin_token;
    broker.maestro(t, &["sa", "create", "deployer", "--description", "deploys"]).ok();
    let out_file = broker.data_dir().parent().unwrap().join("deployer.token");
    let made = broker
        .maestro(
            t,
            &[
                "tokens",
                "create",
                "deploy",
                "--service-account",
                "deployer",
                "--scope",
                "secrets:read,sessions:read",
                "--expires",
                "30d",
                "--out",
                out_file.to_str().unwrap(),
            ],
        )
        .ok();
    assert!(made.stdout.contains("written to"), "{made:?}");
    let mode = std::fs::metadata(&out_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let deploy = std::fs::read_to_string(&out_file).unwrap().trim().to_owned();
    assert!(!made.stdout.contains(&deploy) && !made.stderr.contains(&deploy));
    values.push(deploy.clone());
    broker.maestro(&deploy, &["secrets", "ls"]).ok();
    let refused = broker.maestro(&deploy, &["sessions", "create"]);
    assert_eq!(refused.status, 1);
    assert!(
        refused.stderr.contains("'sessions:write'") && refused.stderr.lines().count() == 1,
        "{refused:?}"
    );
    let again = broker.maestro(
        t,
        &["tokens", "create", "deploy", "--scope", "admin", "--out", out_file.to_str().unwrap()],
    );
    assert_eq!(again.status, 1, "an existing --out file is not overwritten: {again:?}");
    let ls = broker.maestro(t, &["tokens", "ls"]).ok();
    assert!(
        ls.stdout.contains("deploy")
            && ls.stdout.contains("deployer")
            && !ls.stdout.contains(&deploy),
        "{}",
        ls.stdout
    );
    let listed = broker.maestro(t, &["tokens", "ls", "--json"]).ok().json();
    let id = listed.as_array().unwrap().iter().find(|r| r["name"] == "deploy").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sa = broker.maestro(t, &["service-accounts", "ls"]).ok();
    assert!(sa.stdout.contains("deployer") && sa.stdout.contains("user:admin"), "{}", sa.stdout);
    // Printed once on stdout without --out; the CLI's note on stderr holds no value.
    let printed = broker
        .maestro(t, &["tokens", "create", "once", "--scope", "audit:read", "--expires", "never"])
        .ok();
    let once = printed.stdout.trim().to_owned();
    assert!(once.starts_with("mst_") && !printed.stderr.contains(&once), "{printed:?}");
    values.push(once.clone());
    broker.maestro(&once, &["audit"]).ok();
    broker.maestro(t, &["tokens", "revoke", &id]).ok();
    let revoked = broker.maestro(&deploy, &["secrets", "ls"]);
    assert!(revoked.status == 1 && revoked.stderr.contains("not valid"), "{revoked:?}");
    broker.maestro(t, &["sa", "rm", "deployer"]).ok();

    // The operator: list users, disable (refused at once), enable, remove.
    let bob = broker.add_user("bob");
    values.push(bob.clone());
    let bob_api = broker.api(&bob);
    bob_api.add_generic("BOB_KEY", &[("BOB_KEY", "planted-bob")]).await.ok();
    let (bob_session, _) = bob_api.new_session(json!({})).await;
    let users = broker.admin_command(&["user", "ls", "--json"], &[]).ok().json();
    let row = users.as_array().unwrap().iter().find(|u| u["name"] == "bob").unwrap().clone();
    assert_eq!(
        (row["secrets"].as_i64(), row["live_sessions"].as_i64(), row["tokens"].as_i64()),
        (Some(1), Some(1), Some(1)),
        "{row}"
    );
    assert!(row["disabled_at"].is_null());
    broker.admin_command(&["user", "disable", "bob"], &[]).ok();
    let message = refused_within(&bob_api, 403, "forbidden").await;
    assert!(message.contains("disabled"), "{message}");
    broker.admin_command(&["user", "enable", "bob"], &[]).ok();
    bob_api.get("/v1/sessions").await.ok();
    let rm = broker.admin_command(&["user", "rm", "bob"], &[]);
    assert!(
        rm.status != 0 && rm.stderr.contains(&bob_session) && rm.stderr.lines().count() == 1,
        "{rm:?}"
    );
    bob_api.get("/v1/secrets/BOB_KEY").await.ok();
    bob_api.post(&format!("/v1/sessions/{bob_session}/end"), json!({})).await.ok();
    broker.admin_command(&["user", "rm", "bob"], &[]).ok();
    refused_within(&bob_api, 401, "unauthorized").await;
    let missing = broker.admin_command(&["user", "disable", "bob"], &[]);
    assert!(missing.status != 0 && missing.stderr.contains("no user named bob"), "{missing:?}");
    broker.add_user("bob");

    // Hashes only: no token value in the data directory (database, WAL) or the broker's log;
    // the one file holding one is the --out file.
    let log = broker.log();
    assert!(log.contains("API token created"), "token creation is logged (without value)");
    values.push(broker.admin_token.clone());
    let tmp = broker.data_dir().parent().unwrap().to_owned();
    let admin_token_file = broker.data_dir().join("admin.token");
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    assert_nowhere(&refs, &[&tmp], &[&out_file, &admin_token_file], &[log]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_on_postgres_with_two_brokers() {
    let Some(pg) = Postgres::start() else { return };
    let db = pg.create_database("maestro_tokens");
    let options = db.broker_options();
    let a = Broker::start_with(options.clone());
    let b = PeerBroker::start(&a, &options);
    let admin_a = a.admin();
    let admin_b = b.api(&a.admin_token);
    scopes_are_enforced(&admin_a, &admin_b).await;
    let mut values = revocation_and_expiry(&admin_a, &admin_b).await;

    // A user disabled by the operator (on A's machine) is refused by B at once.
    let url = db.url();
    let env = [("MAESTRO_DATABASE_URL", url.as_str())];
    let bob = a.admin_command(&["user", "add", "bob"], &env).ok().stdout.trim().to_owned();
    values.push(bob.clone());
    let bob_b = b.api(&bob);
    bob_b.get("/v1/sessions").await.ok();
    a.admin_command(&["user", "disable", "bob"], &env).ok();
    refused_within(&bob_b, 403, "forbidden").await;
    a.admin_command(&["user", "enable", "bob"], &env).ok();
    bob_b.add_generic("BOB_KEY", &[("BOB_KEY", "planted-bob")]).await.ok();
    let (bob_session, _) = bob_b.new_session(json!({})).await;
    bob_b.activate(&bob_session, &["BOB_KEY"]).await.ok();
    let rm = a.admin_command(&["user", "rm", "bob"], &env);
    assert!(rm.status != 0 && rm.stderr.contains(&bob_session), "{rm:?}");
    bob_b.post(&format!("/v1/sessions/{bob_session}/end"), json!({})).await.ok();
    bob_b.post("/v1/service-accounts", json!({"name": "bob-ci"})).await.ok();
    a.admin_command(&["user", "rm", "bob"], &env).ok();
    let left = pg.psql(&db.name, "SELECT (SELECT COUNT(*) FROM secrets) || ' ' || (SELECT COUNT(*) FROM service_accounts) || ' ' || (SELECT COUNT(*) FROM users WHERE name = 'bob')").ok();
    assert_eq!(left.stdout.trim(), "1 0 0", "bob's rows are gone, the admin's secret stays");
    refused_within(&bob_b, 401, "unauthorized").await;

    // The database holds hashes: no token value in any row of api_tokens or users.
    let dump = pg.psql(&db.name, "SELECT encode(token_hash, 'hex'), name, scopes FROM api_tokens; SELECT encode(token_hash, 'hex') FROM users").ok();
    values.push(a.admin_token.clone());
    for v in &values {
        assert!(!dump.stdout.contains(v.as_str()), "a token value is in the database");
        assert!(
            !a.log().contains(v.as_str()) && !b.log().contains(v.as_str()),
            "a token value is in a log"
        );
    }
    let hex = maestro_tests::pg::hex(&sha256(&a.admin_token));
    assert!(dump.stdout.contains(&hex), "the admin's token is stored as its SHA-256");
}

fn sha256(text: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).to_vec()
}

/// Edits a provider through `other`, connects through `a` with the edited client secret, and
/// checks that removal is refused while the secret uses it.
async fn provider_edit_and_removal(a: &Broker, other: &Api) {
    let server = OAuthServer::start().await;
    let token = a.admin_token.clone();
    add_provider(a, &token, &server, "gh", &["--scope", "repo"]).ok();

    // A scoped token may read providers, not change them.
    let (_, reader) = new_token(other, json!({"name": "reader", "scopes": ["secrets:read"]})).await;
    let reader = Api { token: reader, ..other.clone() };
    reader.get("/v1/oauth/providers").await.ok();
    let m = reader
        .patch("/v1/oauth/providers/gh", json!({"client_id": "evil"}))
        .await
        .expect_error(403, "forbidden");
    assert!(m.contains("'admin'"), "{m}");

    // Edits: bad ones refused with nothing changed, then a real one (the same client secret
    // sealed anew from another file, a scope added, the client id kept).
    other.patch("/v1/oauth/providers/gh", json!({})).await.expect_error(400, "bad_request");
    other
        .patch("/v1/oauth/providers/gh", json!({"auth_url": "http://example.com/a"}))
        .await
        .expect_error(400, "bad_request");
    other
        .patch("/v1/oauth/providers/nope", json!({"client_id": "x"}))
        .await
        .expect_error(404, "not_found");
    let secret_file = a.data_dir().parent().unwrap().join("new-client-secret");
    std::fs::write(&secret_file, format!("{}\n", oauth_support::CLIENT_SECRET)).unwrap();
    let edited = a
        .maestro(
            &token,
            &[
                "oauth",
                "providers",
                "edit",
                "gh",
                "--client-secret-file",
                secret_file.to_str().unwrap(),
                "--scope",
                "repo",
                "--scope",
                "read:org",
                "--json",
            ],
        )
        .ok()
        .json();
    std::fs::remove_file(&secret_file).unwrap();
    assert_eq!(edited["scopes"], json!(["repo", "read:org"]), "{edited}");
    let listed = other.get("/v1/oauth/providers").await.ok();
    assert_eq!(listed[0]["scopes"], json!(["repo", "read:org"]), "{listed}");
    let edited = other
        .patch("/v1/oauth/providers/gh", json!({"client_id": oauth_support::CLIENT_ID}))
        .await
        .ok();
    assert_eq!(edited["client_id"], oauth_support::CLIENT_ID);

    // A connection through the edited provider works: its new client secret opens.
    let pending = Pending::start(a, &token, &["oauth", "connect", "gh", "--name", "GH"]);
    let page = visit(&browser(a), &pending.url()).await;
    assert_eq!(page.status, 200, "{page:?}");
    let (code, _, log) = pending.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{log}");

    // Removal refused, naming the secret, through either broker; then allowed.
    let m = other.delete("/v1/oauth/providers/gh").await.expect_error(409, "conflict");
    assert!(m.contains("GH"), "{m}");
    let refused = a.maestro(&token, &["oauth", "providers", "rm", "gh"]);
    assert!(refused.status == 1 && refused.stderr.contains("GH"), "{refused:?}");
    other.get("/v1/oauth/providers").await.ok().as_array().unwrap().first().expect("still there");
    other.delete("/v1/secrets/GH").await.ok();
    a.maestro(&token, &["oauth", "providers", "rm", "gh"]).ok();
    assert_eq!(other.get("/v1/oauth/providers").await.ok(), json!([]));
    other.delete("/v1/oauth/providers/gh").await.expect_error(404, "not_found");

    let planted = server.planted().await;
    let logs = [("broker", a.log())];
    oauth_support::assert_nowhere(&planted, a.data_dir().parent().unwrap(), &logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_providers_edit_and_removal_on_sqlite() {
    if !oauth_available() {
        return;
    }
    let broker = Broker::start();
    let admin = broker.admin();
    provider_edit_and_removal(&broker, &admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_providers_edit_and_removal_on_postgres() {
    if !oauth_available() {
        return;
    }
    let Some(pg) = Postgres::start() else { return };
    let db = pg.create_database("maestro_provider_edit");
    let options = db.broker_options();
    let a = Broker::start_with(options.clone());
    let b = PeerBroker::start(&a, &options);
    provider_edit_and_removal(&a, &b.api(&a.admin_token)).await;
}
