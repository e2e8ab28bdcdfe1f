//! In-process tests of the broker's rules through its router: each request goes through
//! `tower::ServiceExt::oneshot` to the real router, over a real SQLite store in a temporary
//! data directory, with no TLS, no port and no binary. The agent API's client certificate is
//! one the broker's CA really issued (through `/v1/enroll`), put where the TLS layer puts it.
//! End-to-end tests (`tests/tests/broker_*.rs`) still prove the whole with real binaries.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum_server::tls::TlsInfo;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::app::{App, Settings};
use crate::datadir::DataDir;
use crate::events::Hub;
use crate::tokens;

/// A broker over a temporary data directory, and the tokens of two users.
struct Broker {
    _dir: tempfile::TempDir,
    router: Router,
    app: Arc<App>,
    alice: String,
    bob: String,
}

/// An answer: status, headers and JSON body (`Null` when not JSON).
struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Answer {
    /// Asserts an `ApiError` with this status and code whose message contains `text`.
    fn refused(&self, status: u16, code: &str, text: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.body["error"], code, "{}", self.body);
        let message = self.body["message"].as_str().unwrap_or_default();
        assert!(message.contains(text), "{message:?} lacks {text:?}");
    }
}

async fn broker() -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path().join("data"));
    let opened = crate::server::open(&data).await.unwrap();
    let alice = std::fs::read_to_string(data.admin_token()).unwrap().trim().to_owned();
    let bob = tokens::generate(tokens::USER_TOKEN_PREFIX).unwrap();
    opened
        .store
        .create_user("bob", &tokens::hash(bob.expose()), crate::clock::now())
        .await
        .unwrap();
    let settings = Settings {
        cert_ttl: Duration::from_secs(3600),
        heartbeat: Duration::from_secs(5),
        renew_overlap: Duration::from_secs(60),
        body_timeout: Duration::from_secs(30),
        public_url: None,
    };
    let app = Arc::new(
        App::new(opened, Hub::new(), settings, "https://localhost/v1/oauth/callback".into())
            .unwrap(),
    );
    let router = super::router(app.clone());
    Broker { _dir: dir, router, app, alice, bob: bob.expose().to_owned() }
}

impl Broker {
    /// A request with `token`, a JSON body when given, and the client certificate `cert`.
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        cert: Option<&[u8]>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let mut req = req.body(body).unwrap();
        if let Some(der) = cert {
            let mut info = TlsInfo::default();
            info.peer_certificates = vec![der.to_vec()];
            req.extensions_mut().insert(Arc::new(info));
        }
        self.raw(req).await
    }

    async fn raw(&self, req: Request<Body>) -> Answer {
        let response = self.router.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 24).await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer { status, headers, body }
    }

    async fn user(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.send(method, path, Some(&self.alice), body, None).await
    }

    /// Creates a generic secret of alice's providing these variables.
    async fn secret(&self, name: &str, vars: &[&str]) {
        let fields: serde_json::Map<String, Value> =
            vars.iter().map(|v| ((*v).to_owned(), json!(format!("value-of-{v}")))).collect();
        let a = self
            .user(
                Method::POST,
                "/v1/secrets",
                Some(json!({"name": name, "kind": "generic", "fields": fields})),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    }

    /// A new session of alice's: its id and enrollment token.
    async fn session(&self) -> (String, String) {
        let a = self.user(Method::POST, "/v1/sessions", Some(json!({}))).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        (
            a.body["session"]["id"].as_str().unwrap().to_owned(),
            a.body["enrollment_token"].as_str().unwrap().to_owned(),
        )
    }

    async fn activate(&self, session: &str, names: &[&str]) -> Answer {
        self.user(
            Method::POST,
            &format!("/v1/sessions/{session}/activate"),
            Some(json!({ "names": names })),
        )
        .await
    }

    /// The session's client certificate (DER), issued by the broker's CA through enrollment.
    async fn enroll(&self, token: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::default().serialize_request(&key).unwrap();
        let a = self
            .send(
                Method::POST,
                "/v1/enroll",
                None,
                Some(json!({"token": token, "csr_pem": csr.pem().unwrap()})),
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let pem = a.body["cert_pem"].as_str().unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        pem.contents
    }

    /// The names active in a session.
    async fn active(&self, session: &str) -> Vec<String> {
        let a = self.user(Method::GET, &format!("/v1/sessions/{session}"), None).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        serde_json::from_value(a.body["active"].clone()).unwrap()
    }
}

#[tokio::test]
async fn two_secrets_providing_one_variable_are_refused_naming_both() {
    let b = broker().await;
    b.secret("EXISTING", &["SHARED_VAR", "ONLY_MINE"]).await;
    b.secret("CLASHES", &["SHARED_VAR"]).await;
    b.secret("FREE", &["FREE_VAR"]).await;
    let (session, _) = b.session().await;
    assert_eq!(b.activate(&session, &["EXISTING"]).await.status, StatusCode::OK);
    // All or nothing: FREE is not activated with CLASHES.
    let a = b.activate(&session, &["FREE", "CLASHES"]).await;
    a.refused(409, "conflict", "CLASHES and EXISTING both provide variable SHARED_VAR");
    assert!(a.body["message"].as_str().unwrap().ends_with("nothing was activated"));
    assert_eq!(b.active(&session).await, vec!["EXISTING".to_owned()]);
    // Two clashing secrets in one call clash with each other.
    let (other, _) = b.session().await;
    let a = b.activate(&other, &["EXISTING", "CLASHES"]).await;
    a.refused(409, "conflict", "CLASHES and EXISTING both provide variable SHARED_VAR");
    assert!(b.active(&other).await.is_empty());
    // The refusal left no activation record.
    let trail = b.user(Method::GET, "/v1/audit", None).await;
    let activated: Vec<&Value> =
        trail.body.as_array().unwrap().iter().filter(|e| e["action"] == "activated").collect();
    assert_eq!(activated.len(), 1, "{activated:?}");
    assert_eq!(activated[0]["secret"], "EXISTING");
}

#[tokio::test]
async fn activating_a_missing_or_foreign_secret_is_refused() {
    let b = broker().await;
    b.secret("MINE", &["MINE_VAR"]).await;
    let (session, _) = b.session().await;
    b.activate(&session, &["NOPE"]).await.refused(404, "not_found", "no secret named NOPE");
    b.activate(&session, &["MINE", "NOPE"]).await.refused(404, "not_found", "NOPE");
    assert!(b.active(&session).await.is_empty());
    b.activate(&session, &["bad-name"]).await.refused(400, "invalid_name", "invalid secret name");
    b.activate(&session, &[]).await.refused(400, "bad_request", "at least one secret");
    // Bob sees neither alice's secret nor her session.
    let a = b
        .send(
            Method::POST,
            &format!("/v1/sessions/{session}/activate"),
            Some(&b.bob),
            Some(json!({"names": ["MINE"]})),
            None,
        )
        .await;
    a.refused(404, "not_found", &format!("no session {session}"));
    b.activate("0123456789abcdef", &["MINE"]).await.refused(
        404,
        "not_found",
        "no session 0123456789abcdef",
    );
}

#[tokio::test]
async fn deactivation_removes_and_tells_the_agent() {
    let b = broker().await;
    b.secret("ONE", &["ONE_VAR"]).await;
    b.secret("TWO", &["TWO_VAR"]).await;
    let (session, _) = b.session().await;
    let mut events = b.app.hub.subscribe(&session);
    assert_eq!(b.activate(&session, &["ONE", "TWO"]).await.status, StatusCode::OK);
    let a = b
        .user(
            Method::POST,
            &format!("/v1/sessions/{session}/deactivate"),
            Some(json!({"names": ["ONE", "ONE"]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["active"], json!(["TWO"]));
    // Deactivating what is not active changes nothing; a name of no secret is refused.
    let a = b
        .user(
            Method::POST,
            &format!("/v1/sessions/{session}/deactivate"),
            Some(json!({"names": ["ONE"]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = b
        .user(
            Method::POST,
            &format!("/v1/sessions/{session}/deactivate"),
            Some(json!({"names": ["GHOST"]})),
        )
        .await;
    a.refused(404, "not_found", "no secret named GHOST");
    let mut seen = Vec::new();
    while let Ok(event) = events.events.try_recv() {
        seen.push(serde_json::to_value(event).unwrap());
    }
    let kinds: Vec<String> = seen
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["type"],
                e["name"].as_str().or(e["secret"]["name"].as_str()).unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec!["\"activated\" ONE", "\"activated\" TWO", "\"deactivated\" ONE"],
        "{seen:?}"
    );
}

#[tokio::test]
async fn an_ended_session_refuses_activation_and_a_second_end() {
    let b = broker().await;
    b.secret("ONE", &["ONE_VAR"]).await;
    let (session, _) = b.session().await;
    assert_eq!(b.activate(&session, &["ONE"]).await.status, StatusCode::OK);
    let a = b.user(Method::POST, &format!("/v1/sessions/{session}/end"), None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["state"], "ended");
    assert_eq!(a.body["ended_reason"], "user");
    assert_eq!(a.body["active"], json!([]));
    b.activate(&session, &["ONE"]).await.refused(409, "session_ended", "has ended");
    let a = b
        .user(
            Method::POST,
            &format!("/v1/sessions/{session}/deactivate"),
            Some(json!({"names": ["ONE"]})),
        )
        .await;
    a.refused(409, "session_ended", "nothing can be deactivated");
    b.user(Method::POST, &format!("/v1/sessions/{session}/end"), None).await.refused(
        409,
        "session_ended",
        "ending is final",
    );
}

#[tokio::test]
async fn bodies_that_are_not_json_are_refused() {
    let b = broker().await;
    let (session, _) = b.session().await;
    let path = format!("/v1/sessions/{session}/activate");
    let req = |content_type: &str, body: &str| {
        Request::builder()
            .method(Method::POST)
            .uri(&path)
            .header(header::AUTHORIZATION, format!("Bearer {}", b.alice))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    b.raw(req("application/json", "{\"names\": [")).await.refused(400, "malformed_json", "");
    b.raw(req("application/json", "{\"names\": 7}")).await.refused(400, "malformed_json", "");
    b.raw(req("application/json", "{\"names\": [], \"extra\": 1}")).await.refused(
        400,
        "malformed_json",
        "",
    );
    b.raw(req("text/plain", "{\"names\": [\"A\"]}")).await.refused(
        415,
        "malformed_json",
        "Content-Type: application/json",
    );
    // Without a token, nothing is read and the answer is 401.
    let a = b
        .raw(
            Request::builder()
                .method(Method::POST)
                .uri(&path)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{\"names\": [\"A\"]}"))
                .unwrap(),
        )
        .await;
    a.refused(401, "unauthorized", "missing API token");
}

#[tokio::test]
async fn editing_a_secret_makes_a_new_version_and_checks_conflicts() {
    let b = broker().await;
    b.secret("EDITED", &["A_VAR"]).await;
    b.secret("OTHER", &["B_VAR"]).await;
    let (session, _) = b.session().await;
    assert_eq!(b.activate(&session, &["EDITED", "OTHER"]).await.status, StatusCode::OK);
    let mut events = b.app.hub.subscribe(&session);
    let edit = |body: Value| b.user(Method::PATCH, "/v1/secrets/EDITED", Some(body));
    let a = edit(json!({"fields": {"C_VAR": "c"}, "description": "two vars"})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["version"], 2);
    assert_eq!(a.body["field_names"], json!(["A_VAR", "C_VAR"]));
    assert_eq!(a.body["description"], "two vars");
    assert!(!a.body.to_string().contains("value-of-"), "a value in {}", a.body);
    let event = serde_json::to_value(events.events.try_recv().unwrap()).unwrap();
    assert_eq!(event["type"], "updated", "{event}");
    assert_eq!(event["secret"]["version"], 2);
    // A new field that another active secret provides is refused, and nothing changes.
    let a = edit(json!({"fields": {"B_VAR": "b"}})).await;
    a.refused(409, "conflict", "EDITED and OTHER both provide variable B_VAR");
    assert!(a.body["message"].as_str().unwrap().contains(&format!("active in session {session}")));
    let a = edit(json!({"remove_fields": ["NOT_THERE"]})).await;
    a.refused(400, "invalid_field", "no field 'NOT_THERE'");
    edit(json!({})).await.refused(400, "bad_request", "nothing to change");
    let a = b.user(Method::GET, "/v1/secrets/EDITED", None).await;
    assert_eq!(a.body["version"], 2);
    b.user(Method::PATCH, "/v1/secrets/MISSING", Some(json!({"description": "x"}))).await.refused(
        404,
        "not_found",
        "no secret named MISSING",
    );
}

#[tokio::test]
async fn usage_reports_stay_within_their_session() {
    let b = broker().await;
    b.secret("USED", &["USED_VAR"]).await;
    b.secret("NEVER", &["NEVER_VAR"]).await;
    let (session, token) = b.session().await;
    assert_eq!(b.activate(&session, &["USED"]).await.status, StatusCode::OK);
    let cert = b.enroll(&token).await;
    let now = crate::clock::now();
    let report = |secret: &str, at: i64| {
        json!({"reports": [{
            "secret": secret, "action": "injected", "at": crate::clock::rfc3339(at),
            "pid": 42, "uid": 1000, "command": "env", "detail": null
        }]})
    };
    let usage =
        |body: Value| b.send(Method::POST, "/v1/agent/usage", None, Some(body), Some(&cert));
    let a = usage(report("USED", now)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    usage(report("NEVER", now)).await.refused(
        403,
        "forbidden",
        &format!("names secret NEVER, which was never active in session {session}"),
    );
    usage(report("USED", now - 86_400)).await.refused(400, "bad_request", "before session");
    usage(report("USED", now + 86_400)).await.refused(400, "bad_request", "in the future");
    // Without the certificate: refused before anything is read.
    b.send(Method::POST, "/v1/agent/usage", None, Some(report("USED", now)), None).await.refused(
        401,
        "unauthorized",
        "client certificate",
    );
    // What was accepted and what was refused are in the trail.
    let trail = b.user(Method::GET, "/v1/audit", None).await;
    let actions: Vec<(String, String)> = trail
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["session"] == json!(session))
        .map(|e| (e["action"].as_str().unwrap().to_owned(), e["detail"].to_string()))
        .collect();
    assert_eq!(actions.iter().filter(|(a, _)| a == "injected").count(), 1, "{actions:?}");
    assert_eq!(actions.iter().filter(|(a, _)| a == "denied").count(), 3, "{actions:?}");
}

#[tokio::test]
async fn audit_pages_walk_back_with_a_cursor() {
    let b = broker().await;
    for i in 0..5 {
        b.secret(&format!("S{i}"), &[&format!("V{i}")]).await;
    }
    let all = b.user(Method::GET, "/v1/audit", None).await;
    let all = all.body.as_array().unwrap().clone();
    assert_eq!(all.len(), 5);
    let mut seen = Vec::new();
    let mut path = "/v1/audit?limit=2".to_owned();
    loop {
        let a = b.user(Method::GET, &path, None).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let page = a.body.as_array().unwrap().clone();
        assert!(page.len() <= 2);
        seen.splice(0..0, page);
        match a.headers.get("maestro-next-before") {
            Some(seq) => path = format!("/v1/audit?limit=2&before={}", seq.to_str().unwrap()),
            None => break,
        }
    }
    assert_eq!(seen, all, "the pages, oldest first, are the whole trail");
    b.user(Method::GET, "/v1/audit?limit=0", None).await.refused(400, "bad_request", "limit");
    b.user(Method::GET, "/v1/audit?before=x", None).await.refused(400, "bad_request", "before");
    b.user(Method::GET, "/v1/audit?page=1", None).await.refused(
        400,
        "bad_request",
        "unknown query parameter",
    );
    // A secret's history pages the same way; bob sees none of alice's trail.
    let a = b.user(Method::GET, "/v1/secrets/S3/history?limit=1", None).await;
    assert_eq!(a.body.as_array().unwrap().len(), 1);
    assert_eq!(a.body[0]["secret"], "S3");
    let a = b.send(Method::GET, "/v1/audit", Some(&b.bob), None, None).await;
    assert_eq!(a.body, json!([]));
}

/// `(status, code, message)` of creating `body`'s secret.
async fn create(b: &Broker, body: Value) -> Answer {
    b.user(Method::POST, "/v1/secrets", Some(body)).await
}

#[tokio::test]
async fn sealing_what_cannot_be_sealed_or_widening_hosts_is_refused_and_stores_nothing() {
    let b = broker().await;
    let gcp_json = json!({
        "type": "service_account", "project_id": "proj-1", "private_key_id": "k1",
        "client_email": "ci@proj-1.iam.gserviceaccount.com", "client_id": "1",
        "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n",
        "token_uri": "https://oauth2.googleapis.com/token"
    })
    .to_string();
    let unsealable = [
        ("gcp", json!({"service_account_json": gcp_json})),
        ("mongodb", json!({"uri": "mongodb://u:p@db.example.com/x"})),
    ];
    for (kind, fields) in unsealable {
        let a = create(
            &b,
            json!({"name": "NOPE", "kind": kind, "fields": fields, "exposure": "sealed"}),
        )
        .await;
        a.refused(400, "invalid_exposure", &format!("a {kind} secret cannot be sealed: "));
        // The catalog's reason, on one line.
        assert!(!a.body["message"].as_str().unwrap().contains('\n'));
    }
    let generic = |hosts: Value| {
        json!({"name": "NOPE", "kind": "generic", "fields": {"API_KEY": "v-123"},
               "exposure": "sealed", "hosts": hosts})
    };
    create(&b, generic(json!([]))).await.refused(400, "invalid_exposure", "--allow-host");
    let aws = |hosts: Value| {
        json!({"name": "NOPE", "kind": "aws", "exposure": "sealed", "hosts": hosts,
               "fields": {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "s/k+1"}})
    };
    for (body, text) in [
        (aws(json!(["evil.example.com"])), "not one a aws secret may be sent to"),
        (aws(json!(["amazonaws.com"])), "not one a aws secret may be sent to"),
        (aws(json!(["*.com"])), "is not a host pattern"),
        (aws(json!(["https://s3.amazonaws.com/"])), "is not a host pattern"),
        (aws(json!(["s3.amazonaws.com:443"])), "is not a host pattern"),
        (generic(json!(["*.com"])), "is not a host pattern"),
        (generic(json!(["*"])), "is not a host pattern"),
        (generic(json!(["api.example.com/path"])), "is not a host pattern"),
        (generic(json!([format!("{}.example.com", "a".repeat(300))])), "is not a host pattern"),
        (generic(json!(vec!["api.example.com"; 1000])), "at most 32 hosts"),
        (generic(json!(["api.example.com\nevil.com"])), "is not a host pattern"),
    ] {
        create(&b, body).await.refused(400, "invalid_exposure", text);
    }
    // Hosts on a plain secret are refused rather than silently ignored.
    let a = create(
        &b,
        json!({"name": "NOPE", "kind": "generic", "fields": {"API_KEY": "v"},
               "hosts": ["api.example.com"]}),
    )
    .await;
    a.refused(400, "invalid_exposure", "--exposure sealed");
    // Not a value of the enum: refused as malformed JSON.
    let a = create(
        &b,
        json!({"name": "NOPE", "kind": "generic", "fields": {"API_KEY": "v"}, "exposure": "open"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    // Nothing was stored, and no record says otherwise.
    assert_eq!(b.user(Method::GET, "/v1/secrets", None).await.body, json!([]));
    assert_eq!(b.user(Method::GET, "/v1/audit", None).await.body, json!([]));
}

#[tokio::test]
async fn exposure_and_hosts_round_trip_and_reach_the_agents_material() {
    let b = broker().await;
    let a = create(
        &b,
        json!({"name": "OPENAI", "kind": "openai", "fields": {"api_key": "sk-abcdefghijklmnopqrstuvwxyz"},
               "exposure": "sealed"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["exposure"], "sealed");
    assert_eq!(a.body["hosts"], json!(["api.openai.com"]));
    assert_eq!(a.body["user_hosts"], json!([]));
    let a = create(
        &b,
        json!({"name": "AWS", "kind": "aws", "exposure": "sealed",
               "hosts": ["S3.us-east-1.amazonaws.com", "*.s3.amazonaws.com", "s3.us-east-1.amazonaws.com"],
               "fields": {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "s/k+1"}}),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    // Lowercased, repeats dropped.
    let narrowed = json!(["s3.us-east-1.amazonaws.com", "*.s3.amazonaws.com"]);
    assert_eq!((&a.body["hosts"], &a.body["user_hosts"]), (&narrowed, &narrowed));
    let a = create(
        &b,
        json!({"name": "GL", "kind": "gitlab", "exposure": "sealed",
               "fields": {"token": "glpat-0123456789abcdefghij", "host": "Git.Example.com:8443"}}),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["hosts"], json!(["git.example.com"]));
    b.secret("PLAIN", &["PLAIN_VAR"]).await;
    let listed = b.user(Method::GET, "/v1/secrets", None).await.body;
    let exposures: Vec<(String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().into(), s["exposure"].as_str().unwrap().into()))
        .collect();
    assert_eq!(
        exposures,
        [("AWS", "sealed"), ("GL", "sealed"), ("OPENAI", "sealed"), ("PLAIN", "plain")]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );

    // The agent's material carries the exposure and the effective hosts.
    let (session, token) = b.session().await;
    let a = b.activate(&session, &["OPENAI", "AWS", "GL", "PLAIN"]).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let cert = b.enroll(&token).await;
    let a = b.send(Method::GET, "/v1/agent/secrets", None, None, Some(&cert)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let material: std::collections::BTreeMap<String, (Value, Value)> = a.body["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (s["name"].as_str().unwrap().to_owned(), (s["exposure"].clone(), s["hosts"].clone()))
        })
        .collect();
    assert_eq!(material["OPENAI"], (json!("sealed"), json!(["api.openai.com"])));
    assert_eq!(material["AWS"], (json!("sealed"), narrowed.clone()));
    assert_eq!(material["GL"], (json!("sealed"), json!(["git.example.com"])));
    // A plain secret's hosts are left out of the JSON (an older agent reads it as before).
    assert_eq!(material["PLAIN"], (json!("plain"), Value::Null));
}

#[tokio::test]
async fn editing_exposure_or_hosts_makes_a_version_tells_the_agent_and_refusals_change_nothing() {
    let b = broker().await;
    let aws = json!({"name": "AWS", "kind": "aws",
        "fields": {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "s/k+1"}});
    assert_eq!(create(&b, aws).await.status, StatusCode::CREATED);
    let (session, _) = b.session().await;
    assert_eq!(b.activate(&session, &["AWS"]).await.status, StatusCode::OK);
    let mut events = b.app.hub.subscribe(&session);
    let edit = |body: Value| b.user(Method::PATCH, "/v1/secrets/AWS", Some(body));
    let show = || b.user(Method::GET, "/v1/secrets/AWS", None);
    let before = show().await.body;
    assert_eq!((&before["exposure"], &before["version"]), (&json!("plain"), &json!(1)));

    // Refused edits: widening hosts, hosts on a plain secret, a kind that cannot be sealed.
    edit(json!({"exposure": "sealed", "hosts": ["evil.example.com"]})).await.refused(
        400,
        "invalid_exposure",
        "evil.example.com",
    );
    edit(json!({"hosts": ["s3.amazonaws.com"]})).await.refused(
        400,
        "invalid_exposure",
        "--exposure sealed",
    );
    edit(json!({"exposure": "sealed", "hosts": vec!["s3.amazonaws.com"; 1000]})).await.refused(
        400,
        "invalid_exposure",
        "at most 32 hosts",
    );
    assert_eq!(show().await.body, before, "a refused edit changes nothing");

    // Sealed with the kind's defaults: version 2, an `updated` event for the session.
    let a = edit(json!({"exposure": "sealed"})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!((&a.body["version"], &a.body["hosts"]), (&json!(2), &json!(["*.amazonaws.com"])));
    // Narrowed: version 3.
    let a = edit(json!({"hosts": ["sts.amazonaws.com"]})).await;
    assert_eq!((&a.body["version"], &a.body["hosts"]), (&json!(3), &json!(["sts.amazonaws.com"])));
    // A kind change re-checks the stored hosts: sts.amazonaws.com is not one of openai's.
    let a =
        edit(json!({"kind": "openai", "fields": {"api_key": "sk-abcdefghijklmnopqrstuvwx"}})).await;
    a.refused(400, "invalid_exposure", "sts.amazonaws.com");
    let sealed = show().await.body;
    assert_eq!(sealed["version"], 3);
    // Back to the kind's defaults, then plain (which drops the hosts).
    let a = edit(json!({"hosts": []})).await;
    assert_eq!((&a.body["version"], &a.body["user_hosts"]), (&json!(4), &json!([])));
    let a = edit(json!({"exposure": "plain"})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!((&a.body["version"], &a.body["exposure"]), (&json!(5), &json!("plain")));
    assert_eq!(a.body["hosts"], json!([]));

    let mut updated = Vec::new();
    while let Ok(event) = events.events.try_recv() {
        let e = serde_json::to_value(event).unwrap();
        updated.push((e["type"].clone(), e["secret"]["version"].clone()));
    }
    let want: Vec<(Value, Value)> = (2..=5).map(|v| (json!("updated"), json!(v))).collect();
    assert_eq!(updated, want, "one event per accepted edit, none for the refused ones");
    // The history says what changed.
    let h = b.user(Method::GET, "/v1/secrets/AWS/history", None).await.body;
    let details: Vec<&str> = h
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "edited")
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(
        details,
        [
            "version 2, exposure sealed",
            "version 3, hosts sts.amazonaws.com",
            "version 4, hosts: the kind's defaults",
            "version 5, exposure plain"
        ]
    );
}

#[tokio::test]
async fn substitution_and_leak_attempt_reports_are_stored_and_shown() {
    let b = broker().await;
    let a = create(
        &b,
        json!({"name": "KEY", "kind": "generic", "fields": {"API_KEY": "v-0123456789abcdef"},
               "exposure": "sealed", "hosts": ["api.example.com"]}),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let (session, token) = b.session().await;
    assert_eq!(b.activate(&session, &["KEY"]).await.status, StatusCode::OK);
    let cert = b.enroll(&token).await;
    let at = crate::clock::rfc3339(crate::clock::now());
    let body = json!({"reports": [
        {"secret": "KEY", "action": "substituted", "at": at, "pid": 42, "uid": 1000,
         "command": "curl", "detail": "GET api.example.com/v1/models"},
        {"secret": "KEY", "action": "leak_attempt", "at": at, "pid": 43, "uid": 1000,
         "command": "python3", "detail": "POST evil.example.net/collect"}
    ]});
    let a = b.send(Method::POST, "/v1/agent/usage", None, Some(body), Some(&cert)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let h = b.user(Method::GET, "/v1/secrets/KEY/history", None).await.body;
    let seen: Vec<(String, String, String)> = h
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["session"] == json!(session))
        .filter(|e| e["action"] == "substituted" || e["action"] == "leak_attempt")
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["command"].as_str().unwrap().to_owned(),
                e["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("substituted".into(), "curl".into(), "GET api.example.com/v1/models".into()),
            ("leak_attempt".into(), "python3".into(), "POST evil.example.net/collect".into()),
        ]
    );
}

#[tokio::test]
async fn audit_filters_and_cursors_page_both_ways_and_usage_answers() {
    let b = broker().await;
    for i in 0..5 {
        b.secret(&format!("S{i}"), &[&format!("V{i}")]).await;
    }
    let a = b.user(Method::GET, "/v1/audit?secret=S2", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let page = a.body.as_array().unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0]["secret"], "S2");
    let a = b
        .user(Method::GET, "/v1/audit?action=created&since=1h&until=2099-01-01T00:00:00Z", None)
        .await;
    assert_eq!(a.body.as_array().unwrap().len(), 5, "{}", a.body);
    let a = b.user(Method::GET, "/v1/audit?action=deleted", None).await;
    assert_eq!(a.body, json!([]));
    // From the oldest with after=0, two at a time, following the cursor: every record once.
    let all = b.user(Method::GET, "/v1/audit", None).await.body;
    let mut seen: Vec<Value> = Vec::new();
    let mut path = "/v1/audit?limit=2&after=0".to_owned();
    loop {
        let a = b.user(Method::GET, &path, None).await;
        let page = a.body.as_array().unwrap().clone();
        let cursor = a.headers.get("maestro-next-cursor").unwrap().to_str().unwrap().to_owned();
        if page.is_empty() {
            break;
        }
        seen.extend(page);
        path = format!("/v1/audit?limit=2&cursor={cursor}");
    }
    assert_eq!(json!(seen), all, "paging towards newer gives the whole trail in order");
    b.user(Method::GET, "/v1/audit?cursor=bogus", None).await.refused(400, "bad_request", "cursor");
    b.user(Method::GET, "/v1/audit?session=nosuch", None).await.refused(
        400,
        "bad_request",
        "no session of yours",
    );
    let a = b.user(Method::GET, "/v1/secrets/S1/usage", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["secret"], "S1");
    assert_eq!(a.body["uses"], 0);
    let a = b.user(Method::GET, "/v1/secrets/NOPE/usage", None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[path = "alert_tests.rs"]
mod alerts;
