//! The agent API's mutual TLS: who is refused (no certificate, another CA, expired, ended
//! session, reused or expired enrollment token, another session's material), and what a CSR
//! can and cannot obtain.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use maestro_tests::broker::{
    Broker, BrokerOptions, TestAgent, client_with_identity, foreign_identity, new_csr, plain_client,
};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, SanType};
use serde_json::json;
use x509_parser::extensions::{GeneralName, ParsedExtension};

fn cert_der(pem: &str) -> Vec<u8> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
    p.contents
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_reaches_only_its_own_active_secrets() {
    let broker = Broker::start();
    let api = broker.admin();
    api.add_generic("ONE", &[("ONE_VAR", "planted-one")]).await.ok();
    api.add_generic("TWO", &[("TWO_VAR", "planted-two")]).await.ok();
    api.add_generic("IDLE", &[("IDLE_VAR", "planted-idle")]).await.ok();
    let (s1, t1) = api.new_session(json!({})).await;
    let (s2, t2) = api.new_session(json!({})).await;
    api.activate(&s1, &["ONE"]).await.ok();
    api.activate(&s2, &["TWO"]).await.ok();
    let a1 = TestAgent::enroll(&broker, &t1).await.expect("enrolls");
    let a2 = TestAgent::enroll(&broker, &t2).await.expect("enrolls");
    assert_eq!(a1.session_id, s1);

    let set = a1.get("/v1/agent/secrets").await.unwrap().ok();
    assert_eq!(set["secrets"].as_array().unwrap().len(), 1);
    assert_eq!(set["secrets"][0]["name"], "ONE");
    assert_eq!(set["secrets"][0]["fields"]["ONE_VAR"], "planted-one");
    let one = a1.get("/v1/agent/secrets/ONE").await.unwrap().ok();
    assert_eq!(one["fields"]["ONE_VAR"], "planted-one");
    // Another session's secret, and an inactive one: not found for this session.
    let r = a1.get("/v1/agent/secrets/TWO").await.unwrap();
    assert!(r.expect_error(404, "not_found").contains("not active in this session"));
    a1.get("/v1/agent/secrets/IDLE").await.unwrap().expect_error(404, "not_found");
    assert_eq!(a2.get("/v1/agent/secrets").await.unwrap().ok()["secrets"][0]["name"], "TWO");

    // The session comes from the certificate only: a session named in the path or a query is
    // not a thing the API has. The user API does not accept the certificate as a user.
    let r = a1.get("/v1/secrets").await.unwrap();
    r.expect_error(401, "unauthorized");

    // No certificate.
    let anonymous = plain_client(&broker.ca_pem());
    for path in ["/v1/agent/secrets", "/v1/agent/events", "/v1/agent/secrets/ONE"] {
        let r = anonymous.get(format!("{}{path}", broker.url)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
    }

    // A certificate for session 1 from another CA: refused in the handshake, and logged.
    let (cert, key) = foreign_identity(&s1);
    let forged = client_with_identity(&broker.ca_pem(), &cert, &key);
    let r = forged.get(format!("{}/v1/agent/secrets", broker.url)).send().await;
    assert!(r.is_err(), "a foreign CA's certificate must be refused: {r:?}");
    assert!(
        broker.log_contains("refused a client certificate", Duration::from_secs(5)),
        "{}",
        broker.log()
    );

    // The session ends: its certificate is refused from then on (403), and audited.
    api.post(&format!("/v1/sessions/{s1}/end"), json!({})).await.ok();
    let r = a1.get("/v1/agent/secrets").await.unwrap();
    assert!(r.expect_error(403, "forbidden").contains("has ended"));
    a1.get("/v1/agent/events").await.unwrap().expect_error(403, "forbidden");
    let r = a1
        .post("/v1/agent/renew", json!({"csr_pem": new_csr(&CertificateParams::default()).0}))
        .await
        .unwrap();
    r.expect_error(403, "forbidden");
    let audit = api.get("/v1/audit").await.ok();
    assert!(
        audit.as_array().unwrap().iter().any(|e| e["action"] == "denied" && e["session"] == s1)
    );
    // Session 2 is unaffected.
    a2.get("/v1/agent/secrets").await.unwrap().ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn enrollment_tokens_are_single_use_and_expire() {
    let broker = Broker::start();
    let api = broker.admin();
    let (session, token) = api.new_session(json!({})).await;
    TestAgent::enroll(&broker, &token).await.expect("first use enrolls");
    let r = TestAgent::enroll(&broker, &token).await.err().expect("reuse is refused");
    assert!(r.expect_error(401, "invalid_token").contains("already used"));
    let r = TestAgent::enroll(&broker, "mse_unknown").await.err().expect("unknown is refused");
    r.expect_error(401, "invalid_token");

    // Expire a fresh token by moving its expiry into the past in the real database file
    // (ten minutes is too long to wait).
    let (_s2, token2) = api.new_session(json!({})).await;
    let url = format!("sqlite://{}", broker.data_dir().join("maestro.db").display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await.unwrap();
    let hash = sha256(&token2);
    let done = sqlx::query("UPDATE enrollment_tokens SET expires_at = 1 WHERE token_hash = ?")
        .bind(hash)
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 1);
    let r = TestAgent::enroll(&broker, &token2).await.err().expect("expired is refused");
    assert!(r.expect_error(401, "invalid_token").contains("expired"));

    // A token of an ended session does not enroll.
    let (s3, token3) = api.new_session(json!({})).await;
    api.post(&format!("/v1/sessions/{s3}/end"), json!({})).await.ok();
    let r = TestAgent::enroll(&broker, &token3).await.err().expect("ended session refused");
    r.expect_error(403, "forbidden");

    // Garbage CSRs are refused without using the token up.
    let (s4, token4) = api.new_session(json!({})).await;
    let client = plain_client(&broker.ca_pem());
    let r = client
        .post(format!("{}/v1/enroll", broker.url))
        .json(&json!({"token": token4, "csr_pem": "not a csr"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let agent = TestAgent::enroll(&broker, &token4).await.expect("token still usable");
    assert_eq!(agent.session_id, s4);
    let shown = api.get(&format!("/v1/sessions/{session}")).await.ok();
    assert_eq!(shown["enrolled"], true);
}

fn sha256(text: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn csr_gets_only_the_session_name_and_client_auth() {
    let broker = Broker::start();
    let api = broker.admin();
    let (session, token) = api.new_session(json!({"ttl_seconds": 3600})).await;
    let (other_session, _) = api.new_session(json!({})).await;
    let mut asked = CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
    asked
        .subject_alt_names
        .push(SanType::URI(maestro_wire::session_uri(&other_session).as_str().try_into().unwrap()));
    asked.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    asked.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let (csr, key) = new_csr(&asked);
    let agent = TestAgent::enroll_with(&broker, &token, &csr, &key).await.expect("enrolls");
    let der = cert_der(&agent.issued.cert_pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();

    let mut uris = Vec::new();
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::URI(u) => uris.push(u.to_string()),
                        other => panic!("the CSR's SAN {other:?} reached the certificate"),
                    }
                }
            }
            ParsedExtension::BasicConstraints(bc) => assert!(!bc.ca, "CA rights were granted"),
            ParsedExtension::ExtendedKeyUsage(eku) => {
                assert!(eku.client_auth && !eku.server_auth && !eku.any, "{eku:?}");
            }
            _ => {}
        }
    }
    assert_eq!(uris, vec![maestro_wire::session_uri(&session)]);
    assert!(!cert.is_ca());
    // Validity: at most the session's remaining life (1 h) and 24 h; a random serial.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let not_after = cert.validity().not_after.timestamp();
    assert!(not_after <= now + 3600 + 5 && not_after > now + 3500, "{not_after} vs {now}");
    assert!(cert.validity().not_before.timestamp() < now);
    assert!(cert.raw_serial().len() >= 16);

    // The certificate works for its own session only.
    assert_eq!(agent.get("/v1/agent/secrets").await.unwrap().ok()["secrets"], json!([]));

    // Renewal over mTLS: a fresh certificate, new serial, same session; it works.
    let (csr2, key2) = new_csr(&CertificateParams::default());
    let renewed = agent.post("/v1/agent/renew", json!({"csr_pem": csr2})).await.unwrap().ok();
    assert_eq!(renewed["session_id"], session);
    let der2 = cert_der(renewed["cert_pem"].as_str().unwrap());
    let (_, cert2) = x509_parser::parse_x509_certificate(&der2).unwrap();
    assert_ne!(cert2.raw_serial(), cert.raw_serial());
    let renewed_client =
        client_with_identity(&broker.ca_pem(), renewed["cert_pem"].as_str().unwrap(), &key2);
    let r = renewed_client.get(format!("{}/v1/agent/secrets", broker.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_certificate_is_refused() {
    let broker = Broker::start_with(BrokerOptions::args(&["--cert-ttl", "2s"]));
    let api = broker.admin();
    let (_session, token) = api.new_session(json!({})).await;
    let agent = TestAgent::enroll(&broker, &token).await.expect("enrolls");
    agent.get("/v1/agent/secrets").await.unwrap().ok();
    let der = cert_der(&agent.issued.cert_pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let ttl =
        cert.validity().not_after.timestamp() - time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(ttl <= 2, "--cert-ttl caps the certificate: {ttl}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A new connection: the handshake refuses the expired certificate.
    let fresh = client_with_identity(&broker.ca_pem(), &agent.issued.cert_pem, &agent.key_pem);
    let r = fresh.get(format!("{}/v1/agent/secrets", broker.url)).send().await;
    assert!(r.is_err(), "an expired certificate must be refused: {r:?}");
    assert!(
        broker.log_contains("refused a client certificate", Duration::from_secs(5)),
        "{}",
        broker.log()
    );
    assert!(broker.log().to_lowercase().contains("expired"), "{}", broker.log());
    // The connection opened before expiry is refused too (checked per request).
    if let Ok(r) = agent.get("/v1/agent/secrets").await {
        r.expect_error(401, "unauthorized");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_reports_reach_the_audit_trail() {
    let broker = Broker::start();
    let api = broker.admin();
    api.add_generic("USED", &[("USED_VAR", "v")]).await.ok();
    let (session, token) = api.new_session(json!({})).await;
    api.activate(&session, &["USED"]).await.ok();
    let agent = TestAgent::enroll(&broker, &token).await.unwrap();
    // Reports must fall within the session's life: its creation time is one such time.
    let created = api.get(&format!("/v1/sessions/{session}")).await.ok()["created_at"].clone();
    let when = created.as_str().unwrap().to_owned();
    let report = |action: &str, detail: Option<&str>| {
        json!({"secret": "USED", "action": action, "at": when,
               "pid": 4242, "uid": 1000, "command": "terraform", "detail": detail})
    };
    let before = api.get("/v1/audit").await.ok();

    // A bad batch is refused whole: nothing is recorded.
    let too_many: Vec<_> =
        (0..=maestro_wire::limits::MAX_USAGE_BATCH).map(|_| report("injected", None)).collect();
    let r = agent.post("/v1/agent/usage", json!({ "reports": too_many })).await.unwrap();
    r.expect_error(400, "too_many");
    let mut bad_time = report("injected", None);
    bad_time["at"] = json!("yesterday");
    let r = agent
        .post("/v1/agent/usage", json!({"reports": [report("injected", None), bad_time]}))
        .await
        .unwrap();
    r.expect_error(400, "bad_request");
    assert_eq!(api.get("/v1/audit").await.ok(), before);

    let batch = json!({"reports": [
        report("injected", None),
        report("file_read", Some("USED_VAR")),
        report("denied", Some("uid 1001 is not the sandbox user")),
    ]});
    let accepted = agent.post("/v1/agent/usage", batch).await.unwrap().ok();
    assert_eq!(accepted["accepted"], 3);
    let history = api.get("/v1/secrets/USED/history").await.ok();
    let injected = history
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "injected")
        .expect("an injected record");
    assert_eq!(injected["pid"], 4242);
    assert_eq!(injected["uid"], 1000);
    assert_eq!(injected["command"], "terraform");
    assert_eq!(injected["session"], session);
    assert_eq!(injected["at"], created);
    let actions: Vec<&str> =
        history.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["created", "activated", "injected", "file_read", "denied"]);
    let meta = api.get("/v1/secrets/USED").await.ok();
    assert_eq!(meta["used_by_sessions"], json!([session]));
    assert_eq!(meta["last_used_at"], created);
}
