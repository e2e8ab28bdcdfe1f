//! Teams (issue 13 part 1), end to end on the real binaries, on SQLite and on PostgreSQL with
//! two brokers:
//!
//! * each role (owner, admin, member, viewer) does what it should, and is refused what it
//!   should not with one line and nothing changed; a user who is not a member is answered "not
//!   found" whether the team exists or not; the last owner cannot be removed or demoted; a
//!   member cannot activate a team secret into someone else's session; a token's scopes still
//!   apply; team and secret names are bounded; a team's `DB` and one's own `DB` cannot be
//!   active in one session;
//! * a team secret active in two members' sessions is stored once (rows of the SQLite file and
//!   of the PostgreSQL database), and its history names the member behind each use;
//! * a removed member's sessions lose it within 1 s: the file is gone from a real agent's FUSE
//!   mount and the variable from `maestro-exec`'s environment, while the owner's session keeps
//!   it; on PostgreSQL, a real agent of the member's on the other broker loses the file and the
//!   variable as fast (and an agent's event stream there hears it);
//! * a member lowered to viewer loses it the same way;
//! * a team's OAuth provider, registered once by an admin: members connect their own accounts
//!   through it, an admin connects a shared account as a team secret that members activate;
//!   members and viewers cannot change the provider, viewers cannot connect, outsiders do not
//!   find it, and its removal is refused while secrets use it;
//! * a team's service accounts (issue 13 part 3): made by an admin, refused to members and
//!   viewers (nothing changed) and not found for outsiders; their tokens act as the team within
//!   their scopes (the team's secrets only, a session of the team's, a team secret activated in
//!   it, 403 outside the scopes); revoking a token, removing the account or deleting the team
//!   refuses them at once (401, on the other broker too on PostgreSQL); a user's service
//!   account cannot be made to act for a team; every change is in the team's trail, naming
//!   the member, and no token value is in a trail or a log.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod oauth_support;

use std::path::Path;
use std::time::{Duration, Instant};

use maestro_tests::agent::{Agent, AgentOptions, SANDBOX_UID, Sandbox, fuse_available, wait_until};
use maestro_tests::broker::{Api, Broker, TestAgent};
use maestro_tests::pg::{PeerBroker, Postgres};
use maestro_wire::agent_api::AgentEvent;
use oauth_support::{OAuthServer, Pending, add_provider, browser, oauth_available, visit};
use reqwest::Method;
use serde_json::{Value, json};

/// How fast a removal must reach a member's sessions.
const WITHIN: Duration = Duration::from_secs(1);

/// A team secret's path segment: `team/NAME` percent-encoded.
fn path(scoped: &str) -> String {
    format!("/v1/secrets/{}", scoped.replace('/', "%2F"))
}

/// The users of the role tests, each with a client on broker A and one on broker B (the same
/// broker on SQLite).
struct People {
    owner: (Api, Api),
    admin: (Api, Api),
    member: (Api, Api),
    viewer: (Api, Api),
    outsider: (Api, Api),
}

/// The names of a listing.
fn names(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect()
}

/// `(user, role)` of each member.
async fn members(api: &Api, team: &str) -> Vec<(String, String)> {
    let shown = api.get(&format!("/v1/teams/{team}")).await.ok();
    shown["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["user"].as_str().unwrap().to_owned(), m["role"].as_str().unwrap().to_owned()))
        .collect()
}

/// Each role does what it should and nothing more; refusals are one line and change nothing.
async fn roles_are_enforced(p: &People) {
    let (owner, owner_b) = (&p.owner.0, &p.owner.1);
    owner.post("/v1/teams", json!({"name": "infra"})).await.ok();
    for (user, role) in [("adam", "admin"), ("mia", "member"), ("vic", "viewer")] {
        let added = owner
            .call(
                Method::PUT,
                &format!("/v1/teams/infra/members/{user}"),
                Some(json!({"role": role})),
            )
            .await
            .ok();
        assert_eq!((added["role"].as_str(), added["before"].as_str()), (Some(role), None));
    }
    let roster = vec![
        ("adam".to_owned(), "admin".to_owned()),
        ("mia".to_owned(), "member".to_owned()),
        ("olivia".to_owned(), "owner".to_owned()),
        ("vic".to_owned(), "viewer".to_owned()),
    ];
    assert_eq!(members(owner_b, "infra").await, roster);

    // Admin: adds and edits the team's secrets; cannot manage members.
    let (admin, admin_b) = (&p.admin.0, &p.admin.1);
    let created = admin
        .post(
            "/v1/secrets",
            json!({"name": "infra/API", "kind": "generic",
                   "fields": {"TEAM_API_KEY": "planted-team-api-71"}}),
        )
        .await
        .ok();
    assert_eq!(
        (created["name"].as_str(), created["team"].as_str()),
        (Some("infra/API"), Some("infra"))
    );
    let edited = admin_b.patch(&path("infra/API"), json!({"description": "shared"})).await.ok();
    assert_eq!(edited["version"], 2);
    admin
        .post(
            "/v1/secrets",
            json!({"name": "infra/TMP", "kind": "generic", "fields": {"TMP_VAR": "v"}}),
        )
        .await
        .ok();
    let deleted = admin_b.delete(&path("infra/TMP")).await.ok();
    assert_eq!(deleted["name"], "infra/TMP");
    admin.get(&path("infra/TMP")).await.expect_error(404, "not_found");
    let refused = admin_b
        .call(Method::PUT, "/v1/teams/infra/members/otto", Some(json!({"role": "member"})))
        .await
        .expect_error(403, "forbidden");
    assert!(
        refused.contains("your role in team infra is admin") && refused.contains("owner"),
        "{refused}"
    );
    admin.delete("/v1/teams/infra/members/mia").await.expect_error(403, "forbidden");
    admin.delete("/v1/teams/infra").await.expect_error(403, "forbidden");
    assert_eq!(members(owner, "infra").await, roster, "nothing changed");

    // Member: sees and activates in their own sessions; cannot change the secret.
    let (member, member_b) = (&p.member.0, &p.member.1);
    assert!(names(&member_b.get("/v1/secrets").await.ok()).contains(&"infra/API".to_owned()));
    member.get(&path("infra/API")).await.ok();
    member_b.get(&format!("{}/usage", path("infra/API"))).await.ok();
    member_b.get(&format!("{}/history", path("infra/API"))).await.ok();
    for (method, path, body) in [
        (
            Method::POST,
            "/v1/secrets".to_owned(),
            Some(json!({"name": "infra/NEW", "kind": "generic", "fields": {"NEW_VAR": "v"}})),
        ),
        (Method::PATCH, path("infra/API"), Some(json!({"description": "mine now"}))),
        (Method::DELETE, path("infra/API"), None),
        (Method::POST, format!("{}/compromised", path("infra/API")), Some(json!({}))),
    ] {
        let message =
            member_b.call(method.clone(), &path, body).await.expect_error(403, "forbidden");
        assert!(
            message.contains("your role in team infra is member")
                && message.contains("admin or above"),
            "{method} {path}: {message}"
        );
    }
    let after = owner.get(&path("infra/API")).await.ok();
    assert_eq!(
        (after["version"].as_u64(), after["description"].as_str()),
        (Some(2), Some("shared"))
    );
    assert!(after["compromised_at"].is_null());
    let team_secrets: Vec<String> = names(&owner.get("/v1/secrets").await.ok())
        .into_iter()
        .filter(|n| n.starts_with("infra/"))
        .collect();
    assert_eq!(team_secrets, ["infra/API"], "nothing was created or deleted");

    let (mia_session, _) = member.new_session(json!({"label": "mia-1"})).await;
    member.activate(&mia_session, &["infra/API"]).await.ok();
    // Not into someone else's session, even one of a member of the same team.
    let (adam_session, _) = admin.new_session(json!({"label": "adam-1"})).await;
    member_b.activate(&adam_session, &["infra/API"]).await.expect_error(404, "not_found");
    let adams = admin.get(&format!("/v1/sessions/{adam_session}")).await.ok();
    assert_eq!(adams["active"], json!([]), "nothing activated in adam's session");

    // A team's API and one's own API cannot be active in one session (the mount knows names).
    member.add_generic("API", &[("MIA_OWN_KEY", "planted-mia-own-3")]).await.ok();
    let clash = member.activate(&mia_session, &["API"]).await.expect_error(409, "conflict");
    assert!(clash.contains("another secret named API is active"), "{clash}");
    let shown = member.get(&format!("/v1/sessions/{mia_session}")).await.ok();
    assert_eq!(shown["active"], json!(["infra/API"]), "named as members write it: {shown}");

    // Viewer: sees metadata, history, usage and members; cannot activate or change.
    let (viewer, viewer_b) = (&p.viewer.0, &p.viewer.1);
    viewer.get(&path("infra/API")).await.ok();
    viewer_b.get(&format!("{}/history", path("infra/API"))).await.ok();
    viewer_b.get(&format!("{}/usage", path("infra/API"))).await.ok();
    assert_eq!(members(viewer_b, "infra").await, roster);
    let (vic_session, _) = viewer.new_session(json!({})).await;
    let message =
        viewer_b.activate(&vic_session, &["infra/API"]).await.expect_error(403, "forbidden");
    assert!(
        message.contains("your role in team infra is viewer")
            && message.contains("member or above"),
        "{message}"
    );
    let vics = viewer.get(&format!("/v1/sessions/{vic_session}")).await.ok();
    assert_eq!(vics["active"], json!([]));
    viewer
        .patch(&path("infra/API"), json!({"description": "x"}))
        .await
        .expect_error(403, "forbidden");

    // Not a member: "not found", the same whether the team exists or not.
    let (outsider, outsider_b) = (&p.outsider.0, &p.outsider.1);
    let exists = outsider.get(&path("infra/API")).await.expect_error(404, "not_found");
    let missing = outsider_b.get(&path("nosuch/API")).await.expect_error(404, "not_found");
    assert_eq!(exists.replace("infra", "nosuch"), missing, "the answer says nothing of existence");
    outsider.get("/v1/teams/infra").await.expect_error(404, "not_found");
    outsider_b
        .call(Method::PUT, "/v1/teams/infra/members/otto", Some(json!({"role": "owner"})))
        .await
        .expect_error(404, "not_found");
    let (otto_session, _) = outsider.new_session(json!({})).await;
    outsider.activate(&otto_session, &["infra/API"]).await.expect_error(404, "not_found");
    assert!(
        !names(&outsider.get("/v1/secrets").await.ok()).iter().any(|n| n.starts_with("infra/"))
    );
    assert_eq!(outsider.get("/v1/teams").await.ok(), json!([]));
    assert_eq!(members(owner, "infra").await, roster, "nothing changed");

    // The last owner stays.
    let last = owner_b.delete("/v1/teams/infra/members/olivia").await.expect_error(409, "conflict");
    assert!(last.contains("olivia is the last owner of team infra"), "{last}");
    owner
        .call(Method::PUT, "/v1/teams/infra/members/olivia", Some(json!({"role": "admin"})))
        .await
        .expect_error(409, "conflict");
    assert_eq!(members(owner_b, "infra").await, roster, "nothing changed");

    // A token's scopes still apply to team operations.
    let created = owner
        .post(
            "/v1/tokens",
            json!({"name": "read-only", "scopes": ["secrets:read"], "expires_in_secs": 3600}),
        )
        .await
        .ok();
    let read_only = Api { token: created["token"].as_str().unwrap().to_owned(), ..owner_b.clone() };
    read_only.get("/v1/teams/infra").await.ok();
    let m = read_only
        .call(Method::PUT, "/v1/teams/infra/members/otto", Some(json!({"role": "viewer"})))
        .await
        .expect_error(403, "forbidden");
    assert!(m.contains("'admin'"), "{m}");
    let m = read_only
        .post(
            "/v1/secrets",
            json!({"name": "infra/RO", "kind": "generic", "fields": {"RO_VAR": "v"}}),
        )
        .await
        .expect_error(403, "forbidden");
    assert!(m.contains("'secrets:write'"), "{m}");
    assert_eq!(members(owner, "infra").await, roster, "nothing changed");

    // Names are bounded and checked.
    for bad in ["a".repeat(33), "Infra".to_owned(), "-x".to_owned(), "in/fra".to_owned()] {
        let m =
            owner.post("/v1/teams", json!({"name": bad})).await.expect_error(400, "invalid_name");
        assert!(m.starts_with("invalid team name"), "{m}");
    }
    let long = format!("infra/{}", "A".repeat(65));
    admin
        .post("/v1/secrets", json!({"name": long, "kind": "generic", "fields": {"X_VAR": "v"}}))
        .await
        .expect_error(400, "invalid_name");
    outsider.post("/v1/teams", json!({"name": "infra"})).await.expect_error(409, "already_exists");

    // The member's use is in the team secret's history, naming them.
    let history = owner_b.get(&format!("{}/history", path("infra/API"))).await.ok();
    let activated: Vec<(&str, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "activated")
        .map(|e| (e["by"].as_str().unwrap_or(""), e["session"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(activated, [("mia", mia_session.as_str())], "{history}");

    // Removal: the team's secret leaves the member's session at once; their own stays theirs.
    let removed = owner.delete("/v1/teams/infra/members/mia").await.ok();
    assert_eq!(removed["deactivated"][0]["session"], mia_session.as_str(), "{removed}");
    assert_eq!(removed["deactivated"][0]["secret"], "infra/API", "{removed}");
    let shown = member_b.get(&format!("/v1/sessions/{mia_session}")).await.ok();
    assert_eq!(shown["active"], json!([]), "{shown}");
    member.get(&path("infra/API")).await.expect_error(404, "not_found");
    member.get("/v1/secrets/API").await.ok();
    // A member leaves on their own.
    let left = viewer.delete("/v1/teams/infra/members/vic").await.ok();
    assert!(left["role"].is_null());
    // A team that still owns a secret is not deleted.
    let m = owner.delete("/v1/teams/infra").await.expect_error(409, "conflict");
    assert!(m.contains("still owns API"), "{m}");
    // Once it owns nothing, its owner deletes it (an admin may not).
    admin.delete(&path("infra/API")).await.ok();
    admin_b.delete("/v1/teams/infra").await.expect_error(403, "forbidden");
    let r = owner_b.delete("/v1/teams/infra").await;
    assert_eq!(r.status, 204, "{r:?}");
    owner.get("/v1/teams/infra").await.expect_error(404, "not_found");
    assert_eq!(admin.get("/v1/teams").await.ok(), json!([]));
    let trail = owner.get("/v1/audit").await.ok();
    assert!(trail.to_string().contains("team infra deleted by olivia"), "{trail}");
}

/// Users `olivia` (owner), `adam`, `mia`, `vic` and `otto` made with `add`, with clients on
/// `a` and `b`.
fn people_of(tokens: &[String], a: &dyn Fn(&str) -> Api, b: &dyn Fn(&str) -> Api) -> People {
    let pair = |i: usize| (a(&tokens[i]), b(&tokens[i]));
    People { owner: pair(0), admin: pair(1), member: pair(2), viewer: pair(3), outsider: pair(4) }
}

fn people(
    add: impl Fn(&str) -> String,
    a: &dyn Fn(&str) -> Api,
    b: &dyn Fn(&str) -> Api,
) -> People {
    let mut pairs = ["olivia", "adam", "mia", "vic", "otto"].map(|name| {
        let token = add(name);
        (a(&token), b(&token))
    });
    let take = |pairs: &mut [(Api, Api); 5], i: usize| pairs[i].clone();
    People {
        owner: take(&mut pairs, 0),
        admin: take(&mut pairs, 1),
        member: take(&mut pairs, 2),
        viewer: take(&mut pairs, 3),
        outsider: take(&mut pairs, 4),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_does_what_it_should_on_sqlite() {
    let broker = Broker::start();
    let p = people(|n| broker.add_user(n), &|t| broker.api(t), &|t| broker.api(t));
    roles_are_enforced(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_does_what_it_should_on_postgres_with_two_brokers() {
    let Some(pg) = Postgres::start() else { return };
    let db = pg.create_database("maestro_team_roles");
    let options = db.broker_options();
    let a = Broker::start_with(options.clone());
    let b = PeerBroker::start(&a, &options);
    let url = db.url();
    let env = [("MAESTRO_DATABASE_URL", url.as_str())];
    let add = |n: &str| a.admin_command(&["user", "add", n], &env).ok().stdout.trim().to_owned();
    let p = people(add, &|t| a.api(t), &|t| b.api(t));
    roles_are_enforced(&p).await;
}

/// Creates a session as the user with `token` through the CLI; its id and bundle.
fn cli_session(
    broker: &Broker,
    token: &str,
    dir: &Path,
    label: &str,
) -> (String, std::path::PathBuf) {
    let bundle = dir.join(format!("{label}.bundle.json"));
    let out = broker
        .maestro(
            token,
            &["sessions", "create", "--label", label, "--bundle-out", &bundle.to_string_lossy()],
        )
        .ok();
    (out.stdout.lines().next().unwrap().trim().to_owned(), bundle)
}

/// Whether `maestro-exec env` in the agent's sandbox sees `var`.
fn env_has(agent: &Agent, var: &str) -> bool {
    let out = agent.exec_as(SANDBOX_UID, &["env"]);
    out.stdout.lines().any(|l| l.starts_with(&format!("{var}=")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_secret_is_stored_once_and_leaves_a_removed_members_mount_within_a_second() {
    if !fuse_available() {
        return;
    }
    let sb = Sandbox::new();
    let bob = sb.broker.add_user("bob");
    let bob_cli = |args: &[&str]| sb.broker.maestro(&bob, args);

    // The owner (the sandbox's user) makes the team and its secret with the CLI.
    let out = sb.maestro(&["teams", "create", "infra"]).ok();
    assert!(out.stdout.contains("team infra created"), "{out:?}");
    let out = sb.maestro(&["teams", "add", "infra", "bob", "--role", "member"]).ok();
    assert_eq!(out.stdout, "bob added to team infra as member\n");
    sb.maestro(&[
        "secrets",
        "add",
        "infra/DB",
        "--kind",
        "generic",
        "--field",
        "TEAM_DB_URL=planted-team-db-5e1",
    ])
    .ok();
    let listed = bob_cli(&["teams", "ls"]).ok();
    assert!(listed.stdout.contains("infra") && listed.stdout.contains("member"), "{listed:?}");
    let shown = bob_cli(&["teams", "show", "infra"]).ok();
    assert!(shown.stdout.contains("sandbox-tester") && shown.stdout.contains("owner"), "{shown:?}");

    // Active in a session of each member's, each with a real agent and FUSE mount.
    let (own_session, own_bundle) = sb.new_session("owner-box");
    let owner_agent = sb.start_agent(&own_bundle, AgentOptions::default());
    let (bob_session, bob_bundle) = cli_session(&sb.broker, &bob, sb.dir(), "bob-box");
    let bob_mount = sb.dir().join("bob-secrets");
    let bob_socket = sb.dir().join("bob-run").join("agent.sock");
    let bob_agent = Agent::start(&bob_bundle, &bob_mount, &bob_socket, AgentOptions::default());
    sb.maestro(&["secrets", "activate", "--session", &own_session, "infra/DB"]).ok();
    let out = bob_cli(&["secrets", "activate", "--session", &bob_session, "infra/DB"]).ok();
    assert!(out.stdout.contains(&bob_session), "{out:?}");
    for agent in [&owner_agent, &bob_agent] {
        assert!(
            wait_until(Duration::from_secs(5), || agent.file("TEAM_DB_URL").exists()).is_some(),
            "the team secret did not reach the agent:\n{}",
            agent.log()
        );
        let read =
            agent.run_as(SANDBOX_UID, "cat", &[&agent.file("TEAM_DB_URL").to_string_lossy()]).ok();
        assert_eq!(read.stdout, "planted-team-db-5e1");
        assert!(env_has(agent, "TEAM_DB_URL"));
    }

    // One stored copy: one row of `secrets`, one of `secret_fields`, one data key, in the file.
    let url = format!("sqlite://{}", sb.broker.data_dir().join("maestro.db").display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await.unwrap();
    let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
    let secrets =
        count("SELECT COUNT(*) FROM secrets WHERE name = 'DB'").fetch_one(&mut conn).await.unwrap();
    let fields = count("SELECT COUNT(*) FROM secret_fields f JOIN secrets s ON s.id = f.secret_id WHERE s.name = 'DB'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let active = count("SELECT COUNT(*) FROM activations a JOIN secrets s ON s.id = a.secret_id WHERE s.name = 'DB'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let owner_kind: String = sqlx::query_scalar(
        "SELECT u.kind FROM secrets s JOIN users u ON u.id = s.owner_id WHERE s.name = 'DB'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((secrets, fields, active, owner_kind.as_str()), (1, 1, 2, "team"));
    drop(conn);
    let meta = sb.api.get(&path("infra/DB")).await.ok();
    let mut sessions: Vec<&str> = meta["active_in_sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    sessions.sort_unstable();
    let mut expected = [own_session.as_str(), bob_session.as_str()];
    expected.sort_unstable();
    assert_eq!(sessions, expected);

    // Bob's use is in the team secret's history with his name and session.
    let history = sb.maestro(&["secrets", "history", "infra/DB"]).ok();
    let line = |action: &str| {
        history
            .stdout
            .lines()
            .any(|l| l.contains(action) && l.contains(&format!("bob: {bob_session}")))
    };
    assert!(line("activated") && line("file_read"), "the member is named: {history:?}");
    let events = sb.api.get(&format!("{}/history", path("infra/DB"))).await.ok();
    let bob_activated = events.as_array().unwrap().iter().any(|e| {
        e["action"] == "activated" && e["by"] == "bob" && e["session"] == bob_session.as_str()
    });
    assert!(bob_activated, "{events}");

    // Removed: gone from bob's mount and environment within a second; the owner keeps it.
    let start = Instant::now();
    let out = sb.maestro(&["teams", "rm", "infra", "bob"]).ok();
    assert!(out.stdout.contains("bob removed from team infra"), "{out:?}");
    assert!(out.stdout.contains(&bob_session), "{out:?}");
    let gone = wait_until(WITHIN, || !bob_agent.file("TEAM_DB_URL").exists());
    let took = start.elapsed();
    assert!(
        gone.is_some() && took <= WITHIN,
        "still in bob's mount after {took:?}:\n{}",
        bob_agent.log()
    );
    assert!(!env_has(&bob_agent, "TEAM_DB_URL"), "still in bob's environment");
    assert!(owner_agent.file("TEAM_DB_URL").exists(), "the owner's session keeps it");
    assert!(env_has(&owner_agent, "TEAM_DB_URL"));
    eprintln!("removal reached the member's mount in {took:?}");

    // And bob can no longer reach it by name.
    let refused = bob_cli(&["secrets", "activate", "--session", &bob_session, "infra/DB"]);
    assert_ne!(refused.status, 0);
    assert_eq!(refused.stderr.lines().count(), 1, "{refused:?}");
    assert!(refused.stderr.contains("not a member of a team named infra"), "{refused:?}");
    let bobs = sb.broker.api(&bob).get("/v1/audit").await.ok();
    let deactivated = bobs
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "deactivated" && e["detail"] == "bob removed from team infra");
    assert!(deactivated, "{bobs}");

    // Lowered to viewer: the same, for a member who stays.
    sb.maestro(&["teams", "add", "infra", "bob", "--role", "member"]).ok();
    bob_cli(&["secrets", "activate", "--session", &bob_session, "infra/DB"]).ok();
    assert!(
        wait_until(Duration::from_secs(5), || bob_agent.file("TEAM_DB_URL").exists()).is_some()
    );
    let start = Instant::now();
    let out = sb.maestro(&["teams", "add", "infra", "bob", "--role", "viewer"]).ok();
    assert!(out.stdout.contains("changed from member to viewer"), "{out:?}");
    let gone = wait_until(WITHIN, || !bob_agent.file("TEAM_DB_URL").exists());
    assert!(gone.is_some() && start.elapsed() <= WITHIN, "still in bob's mount after lowering");
    bob_cli(&["secrets", "show", "infra/DB"]).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_one_copy_and_a_removal_reaches_an_agent_on_the_other_broker_within_a_second() {
    let Some(pg) = Postgres::start() else { return };
    let db = pg.create_database("maestro_team_removal");
    let options = db.broker_options();
    let a = Broker::start_with(options.clone());
    let b = PeerBroker::start(&a, &options);
    let url = db.url();
    let env = [("MAESTRO_DATABASE_URL", url.as_str())];
    let add = |n: &str| a.admin_command(&["user", "add", n], &env).ok().stdout.trim().to_owned();
    let (olivia, mia) = (add("olivia"), add("mia"));
    let (owner_a, mia_b) = (a.api(&olivia), b.api(&mia));
    owner_a.post("/v1/teams", json!({"name": "infra"})).await.ok();
    owner_a
        .call(Method::PUT, "/v1/teams/infra/members/mia", Some(json!({"role": "member"})))
        .await
        .ok();
    owner_a
        .post(
            "/v1/secrets",
            json!({"name": "infra/DB", "kind": "generic",
                                    "fields": {"TEAM_DB_URL": "planted-team-pg-8d"}}),
        )
        .await
        .ok();
    // Olivia's session on A, Mia's on B; Mia's agent streams from B.
    let (own_session, _) = owner_a.new_session(json!({})).await;
    owner_a.activate(&own_session, &["infra/DB"]).await.ok();
    let (mia_session, token) = mia_b.new_session(json!({})).await;
    let mut agent = TestAgent::enroll(&a, &token).await.unwrap();
    agent.rebase(&b.url);
    let mut events = agent.events().await.unwrap();
    assert!(matches!(
        events.next_event(Duration::from_secs(5)).await,
        Some(AgentEvent::Snapshot { .. })
    ));
    mia_b.activate(&mia_session, &["infra/DB"]).await.ok();
    match events.next_event(Duration::from_secs(5)).await {
        Some(AgentEvent::Activated { secret }) => assert_eq!(secret.name, "DB"),
        other => panic!("expected the activation, got {other:?}"),
    }
    let material = agent.get("/v1/agent/secrets/DB").await.unwrap().ok();
    assert!(material.to_string().contains("planted-team-pg-8d"));

    // One stored copy in the database, active twice.
    let rows = pg
        .psql(
            &db.name,
            "SELECT (SELECT COUNT(*) FROM secrets WHERE name = 'DB') || ' ' || \
             (SELECT COUNT(*) FROM secret_fields f JOIN secrets s ON s.id = f.secret_id WHERE s.name = 'DB') || ' ' || \
             (SELECT COUNT(*) FROM activations a JOIN secrets s ON s.id = a.secret_id WHERE s.name = 'DB') || ' ' || \
             (SELECT u.kind FROM secrets s JOIN users u ON u.id = s.owner_id WHERE s.name = 'DB')",
        )
        .ok();
    assert_eq!(rows.stdout.trim(), "1 1 2 team", "{rows:?}");

    // Removed on A: the agent on B hears it within a second.
    let start = Instant::now();
    owner_a.delete("/v1/teams/infra/members/mia").await.ok();
    match events.next_event(WITHIN).await {
        Some(AgentEvent::Deactivated { name }) => assert_eq!(name, "DB"),
        other => panic!("expected the deactivation within {WITHIN:?}, got {other:?}"),
    }
    let took = start.elapsed();
    assert!(took <= WITHIN, "{took:?}");
    eprintln!("removal reached the agent on the other broker in {took:?}");
    let refused = agent.get("/v1/agent/secrets/DB").await.unwrap();
    assert!(refused.status >= 400, "material still served after removal: {refused:?}");
    let own = owner_a.get(&format!("/v1/sessions/{own_session}")).await.ok();
    assert_eq!(own["active"].as_array().unwrap().len(), 1, "the owner keeps it: {own}");
}

/// Runs `maestro oauth connect ARGS` as the user with `token` and completes the authorization
/// at the test server; the command's exit code and output.
async fn connect(broker: &Broker, token: &str, args: &[&str]) -> (i32, String) {
    let mut all = vec!["oauth", "connect"];
    all.extend_from_slice(args);
    let pending = Pending::start(broker, token, &all);
    let page = visit(&browser(broker), &pending.url()).await;
    assert_eq!(page.status, 200, "{page:?}");
    let (code, _, log) = pending.finish(Duration::from_secs(30));
    (code, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teams_oauth_provider_is_registered_once_and_members_connect_through_it() {
    if !oauth_available() {
        return;
    }
    let broker = Broker::start();
    let server = OAuthServer::start().await;
    let owner = broker.admin();
    let [adam, mia, vic, otto] = ["adam", "mia", "vic", "otto"].map(|n| broker.add_user(n));
    owner.post("/v1/teams", json!({"name": "infra"})).await.ok();
    for (user, role) in [("adam", "admin"), ("mia", "member"), ("vic", "viewer")] {
        owner
            .call(
                Method::PUT,
                &format!("/v1/teams/infra/members/{user}"),
                Some(json!({"role": role})),
            )
            .await
            .ok();
    }
    // The admin registers it once, for the team. (The helper writes `NAME.client-secret`
    // beside the data directory: `infra/` must exist.)
    std::fs::create_dir_all(broker.data_dir().parent().unwrap().join("infra")).unwrap();
    let added =
        add_provider(&broker, &adam, &server, "infra/gh", &["--scope", "repo", "--json"]).ok();
    assert_eq!(added.json()["name"], "infra/gh", "{added:?}");
    // A member may not register, edit or remove the team's providers.
    let refused = add_provider(&broker, &mia, &server, "infra/gh2", &[]);
    assert_ne!(refused.status, 0);
    assert!(refused.stderr.contains("your role in team infra is member"), "{refused:?}");
    let (mia_api, vic_api, otto_api) = (broker.api(&mia), broker.api(&vic), broker.api(&otto));
    mia_api
        .patch("/v1/oauth/providers/infra%2Fgh", json!({"client_id": "evil"}))
        .await
        .expect_error(403, "forbidden");
    mia_api.delete("/v1/oauth/providers/infra%2Fgh").await.expect_error(403, "forbidden");
    let listed = mia_api.get("/v1/oauth/providers").await.ok();
    assert_eq!(names(&listed), ["infra/gh"]);
    assert_eq!(listed[0]["client_id"], oauth_support::CLIENT_ID, "unchanged");
    assert_eq!(otto_api.get("/v1/oauth/providers").await.ok(), json!([]));

    // A member connects their own account through it: the secret is theirs alone.
    let (code, log) = connect(&broker, &mia, &["infra/gh", "--name", "MIA_GH"]).await;
    assert_eq!(code, 0, "{log}");
    let mine = mia_api.get("/v1/secrets/MIA_GH").await.ok();
    assert!(mine["oauth"].is_object() && mine["team"].is_null(), "{mine}");
    owner.get("/v1/secrets/MIA_GH").await.expect_error(404, "not_found");

    // The admin connects a shared account as a team secret; members activate it.
    let (code, log) = connect(&broker, &adam, &["infra/gh", "--name", "infra/GH"]).await;
    assert_eq!(code, 0, "{log}");
    let shared = mia_api.get(&path("infra/GH")).await.ok();
    assert_eq!(shared["team"], "infra", "{shared}");
    assert!(shared["oauth"].is_object(), "{shared}");
    let (session, _) = mia_api.new_session(json!({})).await;
    mia_api.activate(&session, &["infra/GH"]).await.ok();

    // Refused: a member making a team secret, a viewer connecting, an outsider at all.
    let body = |provider: &str, name: &str| json!({"provider": provider, "name": name});
    let m = mia_api
        .post("/v1/oauth/connect", body("infra/gh", "infra/MIA"))
        .await
        .expect_error(403, "forbidden");
    assert!(m.contains("admin or above"), "{m}");
    let m = vic_api
        .post("/v1/oauth/connect", body("infra/gh", "VIC_GH"))
        .await
        .expect_error(403, "forbidden");
    assert!(m.contains("member or above"), "{m}");
    otto_api
        .post("/v1/oauth/connect", body("infra/gh", "OTTO_GH"))
        .await
        .expect_error(404, "not_found");
    // A team secret through a provider that is not the team's is refused.
    add_provider(&broker, &adam, &server, "mine", &[]).ok();
    broker
        .api(&adam)
        .post("/v1/oauth/connect", body("mine", "infra/OTHER"))
        .await
        .expect_error(400, "bad_request");
    for api in [&mia_api, &vic_api] {
        api.get("/v1/secrets/VIC_GH").await.expect_error(404, "not_found");
    }
    mia_api.get(&path("infra/MIA")).await.expect_error(404, "not_found");

    // Edited once by the admin; removal refused while secrets use it, naming them.
    let edited = broker
        .api(&adam)
        .patch("/v1/oauth/providers/infra%2Fgh", json!({"scopes": ["repo", "read:org"]}))
        .await
        .ok();
    assert_eq!(edited["name"], "infra/gh");
    let m = broker
        .api(&adam)
        .delete("/v1/oauth/providers/infra%2Fgh")
        .await
        .expect_error(409, "conflict");
    assert!(m.contains("GH") && m.contains("MIA_GH"), "{m}");
    let planted = server.planted().await;
    oauth_support::assert_nowhere(
        &planted,
        broker.data_dir().parent().unwrap(),
        &[("broker", broker.log())],
    );
}

/// Migration 10 on a PostgreSQL database written before teams (schema 9, made here by taking
/// its tables and column back out: the way down): users, secrets and sessions read back, the
/// users stay users, and teams work on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_10_upgrades_an_existing_postgres_database() {
    let Some(pg) = Postgres::start() else { return };
    let db = pg.create_database("maestro_team_upgrade");
    let options = db.broker_options();
    let mut broker = Broker::start_with(options.clone());
    let api = broker.admin();
    api.add_generic("OLD", &[("OLD_VAR", "planted-old-10")]).await.ok();
    let (session, _) = api.new_session(json!({})).await;
    api.activate(&session, &["OLD"]).await.ok();
    let before = api.get("/v1/audit").await.ok();
    broker.stop();
    let down = "DROP TABLE team_members, teams; ALTER TABLE users DROP COLUMN kind; \
                UPDATE maestro_schema SET version = 9;";
    let out = pg.psql(&db.name, down);
    assert_eq!(out.status, 0, "{}", out.stderr);
    broker.start_again(&options);
    assert_eq!(
        pg.psql(&db.name, "SELECT MAX(version) FROM maestro_schema").stdout.trim(),
        maestro_broker::store::pg_schema::latest().to_string()
    );
    let api = broker.admin();
    assert_eq!(api.get("/v1/audit").await.ok(), before, "the trail reads back unchanged");
    let shown = api.get(&format!("/v1/sessions/{session}")).await.ok();
    assert_eq!(shown["active"], json!(["OLD"]), "the activation reads back: {shown}");
    let kinds = pg.psql(&db.name, "SELECT string_agg(DISTINCT kind, ',') FROM users").ok();
    assert_eq!(kinds.stdout.trim(), "user");
    api.post("/v1/teams", json!({"name": "infra"})).await.ok();
    api.post(
        "/v1/secrets",
        json!({"name": "infra/OLD", "kind": "generic", "fields": {"TEAM_OLD": "v"}}),
    )
    .await
    .ok();
    let url = db.url();
    let users =
        broker.admin_command(&["user", "ls"], &[("MAESTRO_DATABASE_URL", url.as_str())]).ok();
    assert!(!users.stdout.contains("team/infra"), "a team is not listed as a user: {users:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_removed_members_real_agent_on_the_other_broker_loses_the_file_within_a_second()
 {
    if !fuse_available() {
        return;
    }
    let Some(pg) = Postgres::start() else { return };
    let db = pg.create_database("maestro_team_fuse");
    let options = db.broker_options();
    let a = Broker::start_with(options.clone());
    let b = PeerBroker::start(&a, &options);
    let url = db.url();
    let env = [("MAESTRO_DATABASE_URL", url.as_str())];
    let add = |n: &str| a.admin_command(&["user", "add", n], &env).ok().stdout.trim().to_owned();
    let (olivia, mia) = (add("olivia"), add("mia"));
    let owner_a = a.api(&olivia);
    owner_a.post("/v1/teams", json!({"name": "infra"})).await.ok();
    owner_a
        .call(Method::PUT, "/v1/teams/infra/members/mia", Some(json!({"role": "member"})))
        .await
        .ok();
    owner_a
        .post(
            "/v1/secrets",
            json!({"name": "infra/DB", "kind": "generic", "fields": {"TEAM_DB_URL": "planted-team-fuse-4"}}),
        )
        .await
        .ok();
    // Mia's sandbox: a real agent whose bundle names broker B.
    let dir = maestro_tests::util::temp_dir("maestro-team-pg-");
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    let bundle = dir.path().join("mia.bundle.json");
    let out = a
        .maestro(
            &mia,
            &[
                "sessions",
                "create",
                "--label",
                "mia-pg",
                "--bundle-out",
                &bundle.to_string_lossy(),
                "--broker-url",
                &b.url,
            ],
        )
        .ok();
    let session = out.stdout.lines().next().unwrap().trim().to_owned();
    let named = std::fs::read_to_string(&bundle).unwrap();
    assert!(named.contains(&b.url) && !named.contains(&a.url), "the agent's broker is B");
    let agent = Agent::start(
        &bundle,
        &dir.path().join("secrets"),
        &dir.path().join("run").join("agent.sock"),
        AgentOptions::default(),
    );
    b.api(&mia).activate(&session, &["infra/DB"]).await.ok();
    assert!(
        wait_until(Duration::from_secs(5), || agent.file("TEAM_DB_URL").exists()).is_some(),
        "the team secret did not reach the agent:\n{}",
        agent.log()
    );
    assert!(env_has(&agent, "TEAM_DB_URL"));

    // Removed through broker A; the agent streams from B.
    let start = Instant::now();
    owner_a.delete("/v1/teams/infra/members/mia").await.ok();
    let gone = wait_until(WITHIN, || !agent.file("TEAM_DB_URL").exists());
    let took = start.elapsed();
    assert!(
        gone.is_some() && took <= WITHIN,
        "still in the mount after {took:?}:\n{}",
        agent.log()
    );
    assert!(!env_has(&agent, "TEAM_DB_URL"), "still in the environment");
    eprintln!("removal through broker A reached the agent of broker B's mount in {took:?}");
}

/// Polls `api` (acting with a token that should stop working) until it gets 401; panics after
/// [`WITHIN`].
async fn unauthorized_within(api: &Api) {
    let start = Instant::now();
    loop {
        let r = api.get("/v1/whoami").await;
        if r.status == 401 {
            r.expect_error(401, "unauthorized");
            return;
        }
        assert!(start.elapsed() < WITHIN, "still accepted after {WITHIN:?}: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Makes a token; returns `(id, value)`.
async fn make_token(api: &Api, body: Value) -> (String, String) {
    let created = api.post("/v1/tokens", body).await.ok();
    let token = created["token"].as_str().unwrap().to_owned();
    (created["info"]["id"].as_str().unwrap().to_owned(), token)
}

/// Team `ops`'s service accounts, seen through A (the people's first clients) and B (their
/// second: the other broker on PostgreSQL). Returns the token values made.
async fn team_service_accounts(p: &People) -> Vec<String> {
    let (owner, admin, admin_b) = (&p.owner.0, &p.admin.0, &p.admin.1);
    owner.post("/v1/teams", json!({"name": "ops"})).await.ok();
    for (user, role) in [("adam", "admin"), ("mia", "member"), ("vic", "viewer")] {
        let member = format!("/v1/teams/ops/members/{user}");
        owner.call(Method::PUT, &member, Some(json!({"role": role}))).await.ok();
    }
    admin.add_generic("ops/DB", &[("OPS_DB_URL", "planted-ops-db-5")]).await.ok();
    admin.add_generic("ADAM_OWN", &[("ADAM_OWN", "planted-adam-own")]).await.ok();

    // Members and viewers are refused, naming their role and admin; outsiders find no team.
    for (who, role) in [(&p.member.0, "member"), (&p.viewer.1, "viewer")] {
        let body = json!({"name": "ci", "team": "ops"});
        let refused = who.post("/v1/service-accounts", body).await.expect_error(403, "forbidden");
        assert!(
            refused.contains(&format!("your role in team ops is {role}"))
                && refused.contains("admin or above")
                && !refused.contains('\n'),
            "{refused}"
        );
        who.get("/v1/service-accounts?team=ops").await.expect_error(403, "forbidden");
        who.get("/v1/tokens?team=ops").await.expect_error(403, "forbidden");
    }
    for team in ["ops", "nosuch"] {
        let body = json!({"name": "ci", "team": team});
        let missing = p.outsider.0.post("/v1/service-accounts", body).await;
        let message = missing.expect_error(404, "not_found");
        assert!(message.contains(&format!("not a member of a team named {team}")), "{message}");
    }
    assert_eq!(admin.get("/v1/service-accounts?team=ops").await.ok(), json!([]), "none made");
    let odd = admin.get("/v1/tokens?teem=ops").await;
    assert_eq!(odd.status, 400, "{odd:?}");

    // An admin makes one, on A, and a token for it on B.
    let made = admin
        .post("/v1/service-accounts", json!({"name": "ci", "team": "ops", "description": "CI"}))
        .await
        .ok();
    assert_eq!((made["name"].as_str(), made["owner"].as_str()), (Some("ops/ci"), Some("team:ops")));
    let (ci_id, ci) = make_token(
        admin_b,
        json!({"name": "deploy", "scopes": ["secrets:read", "sessions:write", "activate"],
               "service_account": "ops/ci", "expires_in_secs": 3600}),
    )
    .await;
    let (_, auditor) = make_token(
        admin,
        json!({"name": "auditor", "scopes": ["audit:read"], "service_account": "ops/ci"}),
    )
    .await;
    // It cannot grant what the admin's token lacks, nor a member's make one.
    let listed = admin_b.get("/v1/tokens?team=ops").await.ok();
    let sa: Vec<_> =
        listed.as_array().unwrap().iter().map(|t| t["service_account"].clone()).collect();
    assert_eq!(sa, [json!("ops/ci"), json!("ops/ci")], "{listed}");
    let body = json!({"name": "x", "scopes": ["secrets:read"], "service_account": "ops/ci"});
    p.member.1.post("/v1/tokens", body).await.expect_error(403, "forbidden");
    p.outsider
        .1
        .post("/v1/tokens", json!({"name": "x", "scopes": ["admin"], "service_account": "ops/ci"}))
        .await
        .expect_error(404, "not_found");

    // The token acts as the team: its secrets only, its own session, a team secret in it.
    let ci_a = Api { token: ci.clone(), ..admin.clone() };
    let ci_b = Api { token: ci.clone(), ..admin_b.clone() };
    let who = ci_b.get("/v1/whoami").await.ok();
    assert_eq!((who["team"].as_str(), who["service_account"].as_str()), (Some("ops"), Some("ci")));
    let secrets = ci_a.get("/v1/secrets").await.ok();
    assert_eq!(names(&secrets), ["DB"], "the team's secrets only: {secrets}");
    let (session, _) = ci_b.new_session(json!({"label": "ops-ci"})).await;
    ci_a.activate(&session, &["DB"]).await.ok();
    ci_a.activate(&session, &["ADAM_OWN"]).await.expect_error(404, "not_found");
    let shown = ci_b.get(&format!("/v1/sessions/{session}")).await.expect_error(403, "forbidden");
    assert!(shown.contains("'sessions:read'"), "{shown}");
    ci_a.add_generic("NEW", &[("NEW", "v")]).await.expect_error(403, "forbidden");
    ci_a.get("/v1/audit").await.expect_error(403, "forbidden");
    admin.get(&format!("/v1/sessions/{session}")).await.expect_error(404, "not_found");
    // A team's token manages no tokens, even with admin.
    let (_, ops_admin) = make_token(
        admin,
        json!({"name": "full", "scopes": ["admin"], "service_account": "ops/ci"}),
    )
    .await;
    let full = Api { token: ops_admin.clone(), ..admin.clone() };
    full.post("/v1/tokens", json!({"name": "more", "scopes": ["admin"]}))
        .await
        .expect_error(403, "forbidden");
    full.post("/v1/service-accounts", json!({"name": "more"})).await.expect_error(403, "forbidden");
    full.get("/v1/teams/ops").await.expect_error(404, "not_found");
    full.post("/v1/teams", json!({"name": "sub"})).await.expect_error(403, "forbidden");

    // A user's service account cannot be made to act for the team.
    admin.post("/v1/service-accounts", json!({"name": "adam-ci"})).await.ok();
    admin
        .post(
            "/v1/tokens",
            json!({"name": "f", "scopes": ["secrets:read"], "service_account": "ops/adam-ci"}),
        )
        .await
        .expect_error(404, "not_found");
    let (_, own) = make_token(
        admin,
        json!({"name": "own", "scopes": ["secrets:read"], "service_account": "adam-ci"}),
    )
    .await;
    let own_api = Api { token: own.clone(), ..admin.clone() };
    let mine = own_api.get("/v1/secrets").await.ok();
    assert!(
        names(&mine).contains(&"ADAM_OWN".to_owned()),
        "a user's account acts for the user: {mine}"
    );

    // Revoked by an admin on A: refused on B at once.
    let revoked = admin.delete(&format!("/v1/tokens/{ci_id}")).await.ok();
    assert_eq!(revoked["revoked"], 1);
    unauthorized_within(&ci_b).await;
    p.member.0.delete(&format!("/v1/tokens/{ci_id}")).await.expect_error(404, "not_found");

    // The account removed (`TEAM/NAME`, percent-encoded): its tokens refused at once.
    let (_, ci2) = make_token(
        admin,
        json!({"name": "second", "scopes": ["secrets:read"], "service_account": "ops/ci"}),
    )
    .await;
    let ci2_b = Api { token: ci2.clone(), ..admin_b.clone() };
    ci2_b.get("/v1/secrets").await.ok();
    // The trail, read as the team before the account goes.
    let auditor_api = Api { token: auditor.clone(), ..admin_b.clone() };
    let trail = auditor_api.get("/v1/audit?action=token_changed").await.ok().to_string();
    for expected in [
        "service account ops/ci created (by adam,",
        "of service account ops/ci created: scopes secrets:read,sessions:write,activate",
        &format!("token {ci_id} revoked (by adam,"),
    ] {
        assert!(trail.contains(expected), "{expected} not in {trail}");
    }
    assert!(!trail.contains("adam-ci"), "the admin's own account is in the admin's trail");
    p.member.0.delete("/v1/service-accounts/ops%2Fci").await.expect_error(403, "forbidden");
    let gone = admin_b.delete("/v1/service-accounts/ops%2Fci").await.ok();
    assert_eq!(gone["revoked"], 3, "deploy was revoked already; second, auditor and full go");
    unauthorized_within(&Api { token: ci2.clone(), ..admin.clone() }).await;
    unauthorized_within(&auditor_api).await;

    // The team deleted: its accounts' tokens refused at once.
    admin.post("/v1/service-accounts", json!({"name": "ops/last"})).await.ok();
    let (_, last) = make_token(
        admin,
        json!({"name": "last", "scopes": ["sessions:write"], "service_account": "ops/last"}),
    )
    .await;
    let last_b = Api { token: last.clone(), ..admin_b.clone() };
    last_b.post(&format!("/v1/sessions/{session}/end"), json!({})).await.ok();
    admin.delete(&path("ops/DB")).await.ok();
    owner.delete("/v1/teams/ops").await.ok();
    unauthorized_within(&last_b).await;
    vec![ci, auditor, ops_admin, own, ci2, last]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_service_accounts_on_sqlite() {
    let broker = Broker::start();
    let tokens: Vec<String> =
        ["olivia", "adam", "mia", "vic", "otto"].map(|n| broker.add_user(n)).into();
    let p = people_of(&tokens, &|t| broker.api(t), &|t| broker.api(t));
    let mut values = team_service_accounts(&p).await;

    // The CLI: `--team` and `TEAM/NAME`.
    let (olivia, adam, mia) = (&tokens[0], &tokens[1], &tokens[2]);
    broker.maestro(olivia, &["teams", "create", "web"]).ok();
    broker.maestro(olivia, &["teams", "add", "web", "adam", "--role", "admin"]).ok();
    broker.maestro(olivia, &["teams", "add", "web", "mia", "--role", "member"]).ok();
    let made = broker.maestro(adam, &["service-accounts", "create", "ci", "--team", "web"]).ok();
    assert!(made.stdout.contains("web/ci"), "{made:?}");
    let refused = broker.maestro(mia, &["sa", "create", "web/bot"]);
    assert!(
        refused.status == 1
            && refused.stderr.contains("member")
            && refused.stderr.lines().count() == 1,
        "{refused:?}"
    );
    let ls = broker.maestro(adam, &["sa", "ls", "--team", "web"]).ok();
    assert!(ls.stdout.contains("web/ci") && ls.stdout.contains("team:web"), "{}", ls.stdout);
    let token = broker
        .maestro(
            adam,
            &["tokens", "create", "run", "--service-account", "web/ci", "--scope", "secrets:read"],
        )
        .ok()
        .stdout
        .trim()
        .to_owned();
    values.push(token.clone());
    broker.maestro(&token, &["secrets", "ls"]).ok();
    let listed = broker.maestro(adam, &["tokens", "ls", "--team", "web", "--json"]).ok().json();
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(listed[0]["service_account"], "web/ci");
    broker.maestro(adam, &["tokens", "revoke", &id]).ok();
    let after = broker.maestro(&token, &["secrets", "ls"]);
    assert!(after.status == 1 && after.stderr.contains("not valid"), "{after:?}");
    let rm = broker.maestro(adam, &["sa", "rm", "ci", "--team", "web"]).ok();
    assert!(rm.stdout.contains("web/ci removed"), "{rm:?}");

    let log = broker.log();
    let tmp = broker.data_dir().parent().unwrap().to_owned();
    for v in &values {
        assert!(!log.contains(v.as_str()), "a token value is in the log");
        let found = maestro_tests::util::files_containing(&tmp, v.as_bytes());
        assert!(found.is_empty(), "a token value is in {found:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_service_accounts_on_postgres_with_two_brokers() {
    let Some(pg) = Postgres::start() else { return };
    let db = pg.create_database("maestro_team_sa");
    let options = db.broker_options();
    let a = Broker::start_with(options.clone());
    let b = PeerBroker::start(&a, &options);
    let url = db.url();
    let env = [("MAESTRO_DATABASE_URL", url.as_str())];
    let add = |n: &str| a.admin_command(&["user", "add", n], &env).ok().stdout.trim().to_owned();
    let p = people(add, &|t| a.api(t), &|t| b.api(t));
    let mut values = team_service_accounts(&p).await;

    // Forged rows: a user's service account's token moved onto a team's row, and a team's row
    // given a token of no service account, are refused by both brokers (401).
    let (owner_a, owner_b) = &p.owner;
    owner_a.post("/v1/teams", json!({"name": "forge"})).await.ok();
    owner_a.post("/v1/service-accounts", json!({"name": "o-ci"})).await.ok();
    let (_, moved) = make_token(
        owner_a,
        json!({"name": "moved", "scopes": ["secrets:read"], "service_account": "o-ci"}),
    )
    .await;
    let (_, bare) = make_token(owner_a, json!({"name": "bare", "scopes": ["secrets:read"]})).await;
    let moved_b = Api { token: moved.clone(), ..owner_b.clone() };
    moved_b.get("/v1/secrets").await.ok();
    let team = "(SELECT id FROM teams WHERE name = 'forge')";
    pg.psql(
        &db.name,
        &format!(
            "UPDATE api_tokens SET user_id = {team} WHERE name IN ('moved', 'bare'); \
             SELECT 1"
        ),
    )
    .ok();
    for token in [&moved, &bare] {
        unauthorized_within(&Api { token: token.clone(), ..owner_b.clone() }).await;
        unauthorized_within(&Api { token: token.clone(), ..owner_a.clone() }).await;
    }
    values.extend([moved, bare]);

    let dump = pg.psql(&db.name, "SELECT detail FROM audit").ok();
    for v in &values {
        assert!(!dump.stdout.contains(v.as_str()), "a token value is in the audit trail");
        assert!(!a.log().contains(v.as_str()) && !b.log().contains(v.as_str()), "in a log");
    }
}
