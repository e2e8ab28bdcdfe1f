//! The user API over real HTTPS: secrets and sessions for two users who cannot see each
//! other's, and every bad input answered with its own clear error while nothing changes.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use maestro_tests::broker::{Api, Broker};
use reqwest::Method;
use serde_json::{Value, json};

/// One bad request: what it is, method, path, body, expected status, error code, message part.
type BadCase<'a> = (&'a str, Method, String, Option<Value>, u16, &'a str, &'a str);

/// Everything a user can see, to prove that a refused request changed nothing.
async fn state(api: &Api) -> Value {
    let secrets = api.get("/v1/secrets").await.ok();
    let sessions = api.get("/v1/sessions").await.ok();
    let audit = api.get("/v1/audit").await.ok();
    json!({ "secrets": secrets, "sessions": sessions, "audit": audit })
}

#[tokio::test(flavor = "multi_thread")]
async fn two_users_see_only_their_own() {
    let broker = Broker::start();
    let alice = broker.admin();
    let bob = broker.api(&broker.add_user("bob"));

    let meta = alice
        .post(
            "/v1/secrets",
            json!({
                "name": "AWS_PROD", "kind": "aws",
                "fields": {"access_key_id": "AKIAPLANTED1", "secret_access_key": "planted-aws-1"},
                "description": "production", "tags": ["prod", "aws"]
            }),
        )
        .await;
    assert_eq!(meta.status, 201, "{meta:?}");
    let meta = meta.body;
    assert_eq!(meta["version"], 1);
    assert_eq!(meta["kind"], "aws");
    assert_eq!(meta["tags"], json!(["prod", "aws"]));
    assert_eq!(meta["field_names"], json!(["access_key_id", "region", "secret_access_key"]));
    assert!(meta["variables"].as_array().unwrap().contains(&json!("AWS_REGION")));
    assert!(meta["files"].as_array().unwrap().contains(&json!("aws/credentials")));
    assert!(!meta.to_string().contains("planted"), "no value in metadata: {meta}");

    // Same name, other user: allowed, separate.
    bob.add_generic("AWS_PROD", &[("TOKEN", "planted-bob")]).await.ok();
    assert_eq!(alice.get("/v1/secrets").await.ok().as_array().unwrap().len(), 1);
    let bobs = bob.get("/v1/secrets").await.ok();
    assert_eq!(bobs[0]["kind"], "generic");

    alice.add_generic("GENERIC_ONE", &[("API_TOKEN", "planted-generic")]).await.ok();
    let (session, _) = alice.new_session(json!({"label": "alice's sandbox"})).await;

    // Bob cannot see, edit, delete, activate or audit Alice's secret or session.
    bob.get("/v1/secrets/GENERIC_ONE").await.expect_error(404, "not_found");
    bob.patch("/v1/secrets/GENERIC_ONE", json!({"description": "x"}))
        .await
        .expect_error(404, "not_found");
    bob.delete("/v1/secrets/GENERIC_ONE").await.expect_error(404, "not_found");
    bob.get("/v1/secrets/GENERIC_ONE/history").await.expect_error(404, "not_found");
    bob.get(&format!("/v1/sessions/{session}")).await.expect_error(404, "not_found");
    bob.post(&format!("/v1/sessions/{session}/end"), json!({}))
        .await
        .expect_error(404, "not_found");
    bob.activate(&session, &["AWS_PROD"]).await.expect_error(404, "not_found");
    assert!(bob.get("/v1/sessions").await.ok().as_array().unwrap().is_empty());
    let (bob_session, _) = bob.new_session(json!({})).await;
    bob.activate(&bob_session, &["GENERIC_ONE"]).await.expect_error(404, "not_found");
    let bob_audit = bob.get("/v1/audit").await.ok().to_string();
    assert!(!bob_audit.contains("GENERIC_ONE") && !bob_audit.contains(&session));

    // Alice's session works for Alice.
    let info = alice.activate(&session, &["GENERIC_ONE"]).await.ok();
    assert_eq!(info["active"], json!(["GENERIC_ONE"]));
    assert_eq!(info["label"], "alice's sandbox");
    let shown = alice.get(&format!("/v1/sessions/{session}")).await.ok();
    assert_eq!(shown["state"], "live");
    assert_eq!(shown["enrolled"], false);

    // Edit makes a new version and keeps unnamed fields.
    let edited = alice
        .patch(
            "/v1/secrets/GENERIC_ONE",
            json!({"fields": {"SECOND": "planted-second"}, "tags": ["t"]}),
        )
        .await
        .ok();
    assert_eq!(edited["version"], 2);
    assert_eq!(edited["field_names"], json!(["API_TOKEN", "SECOND"]));
    let edited =
        alice.patch("/v1/secrets/GENERIC_ONE", json!({"remove_fields": ["SECOND"]})).await.ok();
    assert_eq!(edited["version"], 3);
    assert_eq!(edited["field_names"], json!(["API_TOKEN"]));
    assert_eq!(edited["active_in_sessions"], json!([session]));

    let history = alice.get("/v1/secrets/GENERIC_ONE/history").await.ok();
    let actions: Vec<&str> =
        history.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["created", "activated", "edited", "edited"]);

    // Delete deactivates it everywhere; ending is final.
    let deleted = alice.delete("/v1/secrets/GENERIC_ONE").await.ok();
    assert_eq!(deleted["deactivated_in"], json!([session]));
    alice.get("/v1/secrets/GENERIC_ONE").await.expect_error(404, "not_found");
    let ended = alice.post(&format!("/v1/sessions/{session}/end"), json!({})).await.ok();
    assert_eq!(ended["state"], "ended");
    assert_eq!(ended["ended_reason"], "user");
    alice
        .post(&format!("/v1/sessions/{session}/end"), json!({}))
        .await
        .expect_error(409, "session_ended");
    let kinds = alice.get("/v1/kinds").await.ok();
    assert!(kinds["kinds"].as_array().unwrap().iter().any(|k| k["name"] == "aws"));

    // Bob's secret is untouched by all of it.
    assert_eq!(bob.get("/v1/secrets/AWS_PROD").await.ok()["version"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_its_own_error_and_changes_nothing() {
    let broker = Broker::start();
    let api = broker.admin();
    let other = broker.api(&broker.add_user("other"));
    api.add_generic("EXISTING", &[("SHARED_VAR", "v1")]).await.ok();
    api.add_generic("CLASHES", &[("SHARED_VAR", "v2")]).await.ok();
    let (session, _) = api.new_session(json!({})).await;
    api.activate(&session, &["EXISTING"]).await.ok();
    let (ended, _) = api.new_session(json!({})).await;
    api.post(&format!("/v1/sessions/{ended}/end"), json!({})).await.ok();
    other.add_generic("OTHERS", &[("X", "v")]).await.ok();
    let (others_session, _) = other.new_session(json!({})).await;

    let before = state(&api).await;
    let big = "x".repeat(maestro_wire::limits::MAX_FIELD_BYTES + 1);
    let many: serde_json::Map<String, Value> =
        (0..=maestro_wire::limits::MAX_FIELDS).map(|i| (format!("F{i}"), json!("v"))).collect();
    let cases: Vec<BadCase> = vec![
        (
            "bad name",
            Method::POST,
            "/v1/secrets".into(),
            Some(json!({"name": "bad-name", "kind": "generic", "fields": {"A": "v"}})),
            400,
            "invalid_name",
            "invalid secret name",
        ),
        (
            "lower-case name",
            Method::POST,
            "/v1/secrets".into(),
            Some(json!({"name": "aws_prod", "kind": "generic", "fields": {"A": "v"}})),
            400,
            "invalid_name",
            "invalid secret name",
        ),
        (
            "unknown kind",
            Method::POST,
            "/v1/secrets".into(),
            Some(json!({"name": "NEW", "kind": "nosuchkind", "fields": {"A": "v"}})),
            400,
            "unknown_kind",
            "unknown kind 'nosuchkind'",
        ),
        (
            "missing required field",
            Method::POST,
            "/v1/secrets".into(),
            Some(json!({"name": "NEW", "kind": "aws", "fields": {"access_key_id": "AKIA"}})),
            400,
            "missing_field",
            "requires field 'secret_access_key'",
        ),
        (
            "unknown field",
            Method::POST,
            "/v1/secrets".into(),
            Some(json!({"name": "NEW", "kind": "aws", "fields": {"nope": "x"}})),
            400,
            "invalid_field",
            "has no field 'nope'",
        ),
        (
            "oversized value",
            Method::POST,
            "/v1/secrets".into(),
            Some(json!({"name": "NEW", "kind": "generic", "fields": {"A": big}})),
            413,
            "too_large",
            "the limit is 65536 bytes",
        ),
        (
            "too many fields",
            Method::POST,
            "/v1/secrets".into(),
            Some(json!({"name": "NEW", "kind": "generic", "fields": many})),
            400,
            "too_many",
            "at most 32 fields",
        ),
        (
            "name taken",
            Method::POST,
            "/v1/secrets".into(),
            Some(json!({"name": "EXISTING", "kind": "generic", "fields": {"A": "v"}})),
            409,
            "already_exists",
            "EXISTING already exists",
        ),
        (
            "unknown JSON field",
            Method::POST,
            "/v1/secrets".into(),
            Some(json!({"name": "NEW", "kind": "generic", "fields": {"A": "v"}, "value": "x"})),
            400,
            "malformed_json",
            "unknown field `value`",
        ),
        (
            "a JSON array where an object belongs",
            Method::POST,
            "/v1/sessions".into(),
            Some(json!([])),
            400,
            "malformed_json",
            "JSON object",
        ),
        (
            "wrong JSON type",
            Method::POST,
            "/v1/secrets".into(),
            Some(json!({"name": "NEW", "kind": "generic", "fields": {"A": 12345}})),
            400,
            "malformed_json",
            "wrong type",
        ),
        (
            "unknown session",
            Method::POST,
            "/v1/sessions/0123456789abcdef/activate".into(),
            Some(json!({"names": ["EXISTING"]})),
            404,
            "not_found",
            "no session 0123456789abcdef",
        ),
        (
            "another user's session",
            Method::POST,
            format!("/v1/sessions/{others_session}/activate"),
            Some(json!({"names": ["EXISTING"]})),
            404,
            "not_found",
            "no session",
        ),
        (
            "another user's secret",
            Method::POST,
            format!("/v1/sessions/{session}/activate"),
            Some(json!({"names": ["OTHERS"]})),
            404,
            "not_found",
            "no secret named OTHERS",
        ),
        (
            "conflicting activation",
            Method::POST,
            format!("/v1/sessions/{session}/activate"),
            Some(json!({"names": ["CLASHES"]})),
            409,
            "conflict",
            "CLASHES and EXISTING both provide variable SHARED_VAR",
        ),
        (
            "activation in an ended session",
            Method::POST,
            format!("/v1/sessions/{ended}/activate"),
            Some(json!({"names": ["EXISTING"]})),
            409,
            "session_ended",
            "has ended",
        ),
        (
            "empty activation",
            Method::POST,
            format!("/v1/sessions/{session}/activate"),
            Some(json!({"names": []})),
            400,
            "bad_request",
            "at least one secret",
        ),
        (
            "bad TTL",
            Method::POST,
            "/v1/sessions".into(),
            Some(json!({"ttl_seconds": 0})),
            400,
            "bad_request",
            "TTL",
        ),
        (
            "TTL too long",
            Method::POST,
            "/v1/sessions".into(),
            Some(json!({"ttl_seconds": 31 * 24 * 3600})),
            400,
            "bad_request",
            "TTL",
        ),
        (
            "edit with nothing",
            Method::PATCH,
            "/v1/secrets/EXISTING".into(),
            Some(json!({})),
            400,
            "bad_request",
            "nothing to change",
        ),
        (
            "edit removing a missing field",
            Method::PATCH,
            "/v1/secrets/EXISTING".into(),
            Some(json!({"remove_fields": ["NOPE"]})),
            400,
            "invalid_field",
            "no field 'NOPE'",
        ),
        (
            "kind change with removals",
            Method::PATCH,
            "/v1/secrets/EXISTING".into(),
            Some(json!({"kind": "openai", "remove_fields": ["SHARED_VAR"]})),
            400,
            "bad_request",
            "changing the kind replaces every field",
        ),
        (
            "too many tags",
            Method::PATCH,
            "/v1/secrets/EXISTING".into(),
            Some(json!({"tags": vec!["t"; 33]})),
            400,
            "too_many",
            "at most 32 tags",
        ),
        (
            "long description",
            Method::PATCH,
            "/v1/secrets/EXISTING".into(),
            Some(json!({"description": "d".repeat(2000)})),
            413,
            "too_large",
            "limit is 1024",
        ),
    ];
    for (what, method, path, body, status, code, text) in cases {
        let r = api.call(method, &path, body).await;
        let message = r.expect_error(status, code);
        assert!(message.contains(text), "{what}: message {message:?} lacks {text:?}");
        assert!(!message.contains("planted"), "{what}: {message}");
    }

    // Malformed bodies in every way Axum could have answered in plain text.
    let r = api
        .raw(Method::POST, "/v1/secrets", Some("application/json"), b"{\"name\":".to_vec())
        .await;
    let m = r.expect_error(400, "malformed_json");
    assert!(m.contains("not valid JSON"), "{m}");
    let r = api.raw(Method::POST, "/v1/secrets", Some("text/plain"), b"{}".to_vec()).await;
    r.expect_error(415, "malformed_json");
    let r = api.raw(Method::POST, "/v1/secrets", None, b"{}".to_vec()).await;
    r.expect_error(415, "malformed_json");
    let huge = vec![b' '; maestro_wire::limits::MAX_BODY_BYTES + 10];
    let r = api.raw(Method::POST, "/v1/secrets", Some("application/json"), huge).await;
    r.expect_error(413, "too_large");
    api.get("/v1/no/such/route").await.expect_error(404, "not_found");
    api.call(Method::PUT, "/v1/secrets", None).await.expect_error(405, "bad_request");

    // A bad or missing token.
    let stranger = broker.api("mst_not-a-real-token");
    stranger.get("/v1/secrets").await.expect_error(401, "unauthorized");
    let r = api.client.get(format!("{}/v1/secrets", broker.url)).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // The conflict check also covers an edit of a secret that is active somewhere.
    api.activate(&session, &["EXISTING"]).await.ok();
    let second = api.add_generic("SECOND", &[("SECOND_VAR", "v")]).await.ok();
    assert_eq!(second["version"], 1);
    let after_add = state(&api).await;
    api.activate(&session, &["SECOND"]).await.ok();
    let r = api.patch("/v1/secrets/SECOND", json!({"fields": {"SHARED_VAR": "v"}})).await;
    let m = r.expect_error(409, "conflict");
    assert!(m.contains("SECOND and EXISTING both provide variable SHARED_VAR"), "{m}");
    assert_eq!(api.get("/v1/secrets/SECOND").await.ok()["version"], 1);
    // Two secrets in one call that clash with each other: nothing activated.
    api.deactivate(&session, &["EXISTING", "SECOND"]).await.ok();
    let r = api.activate(&session, &["EXISTING", "CLASHES"]).await;
    r.expect_error(409, "conflict");
    let shown = api.get(&format!("/v1/sessions/{session}")).await.ok();
    assert_eq!(shown["active"], json!([]));

    // Nothing the refused requests touched changed (the audit trail only grew by the
    // successful calls made after `before`).
    let now = state(&api).await;
    assert_eq!(
        before["sessions"].as_array().unwrap().len(),
        now["sessions"].as_array().unwrap().len()
    );
    let names = |s: &Value| -> Vec<String> {
        s["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&after_add), names(&now));
    assert_eq!(names(&before), vec!["CLASHES", "EXISTING"]);
    let version = |s: &Value, n: &str| {
        s["secrets"].as_array().unwrap().iter().find(|m| m["name"] == n).unwrap()["version"].clone()
    };
    assert_eq!(version(&before, "EXISTING"), version(&now, "EXISTING"));
    let audit_before = before["audit"].as_array().unwrap().len();
    let audit_after_add = after_add["audit"].as_array().unwrap().len();
    assert_eq!(audit_after_add, audit_before + 1, "refused requests left no audit records");
}
