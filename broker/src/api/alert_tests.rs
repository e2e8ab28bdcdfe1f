//! In-process tests of issue 12's alerts through the router (see `super`): each rule flags
//! what it should, ordinary repeated use stays quiet, rules turn off per secret, the actions
//! are taken, decoy reads are accepted only from sessions with decoys, and bad settings are
//! refused with nothing changed.

use super::*;

/// A usage report of `secret`, now.
fn use_of(secret: &str, action: &str, command: &str, uid: u32) -> Value {
    json!({"secret": secret, "action": action, "at": crate::clock::rfc3339(crate::clock::now()),
           "pid": 42, "uid": uid, "command": command, "detail": null})
}

impl Broker {
    /// A session of alice's labelled `label`, with `names` active (and decoys if asked),
    /// enrolled: its id and client certificate.
    async fn enrolled(&self, label: &str, names: &[&str], decoys: bool) -> (String, Vec<u8>) {
        let a = self
            .user(Method::POST, "/v1/sessions", Some(json!({"label": label, "decoys": decoys})))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        assert_eq!(a.body["session"]["decoys"], json!(decoys));
        let id = a.body["session"]["id"].as_str().unwrap().to_owned();
        if !names.is_empty() {
            assert_eq!(self.activate(&id, names).await.status, StatusCode::OK);
        }
        let cert = self.enroll(a.body["enrollment_token"].as_str().unwrap()).await;
        (id, cert)
    }

    async fn report(&self, cert: &[u8], reports: Vec<Value>, sandbox_uid: Option<u32>) -> Answer {
        let mut body = json!({ "reports": reports });
        if let Some(uid) = sandbox_uid {
            body["sandbox_uid"] = json!(uid);
        }
        self.send(Method::POST, "/v1/agent/usage", None, Some(body), Some(cert)).await
    }

    async fn alerts(&self, query: &str) -> Vec<Value> {
        let a = self.user(Method::GET, &format!("/v1/alerts{query}"), None).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        a.body.as_array().unwrap().clone()
    }
}

fn rules(alerts: &[Value]) -> Vec<String> {
    let mut r: Vec<String> =
        alerts.iter().map(|a| a["rule"].as_str().unwrap().to_owned()).collect();
    r.sort();
    r
}

#[tokio::test]
async fn each_rule_flags_what_it_should_and_ordinary_use_stays_quiet() {
    let b = broker().await;
    b.secret("KEY", &["KEY_VAR"]).await;
    let (dev, cert) = b.enrolled("dev", &["KEY"], false).await;
    // Ordinary use: the same command again and again at a normal rate, by the sandbox user.
    for _ in 0..10 {
        let a = b.report(&cert, vec![use_of("KEY", "injected", "python3", 1000)], Some(1000)).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    assert_eq!(b.alerts("").await, Vec::<Value>::new(), "ordinary use is quiet");

    // new_command, foreign_uid, leak_attempt, scan_finding in one batch.
    let mut leak = use_of("KEY", "leak_attempt", "python3", 1000);
    leak["detail"] = json!("POST evil.example.net");
    let batch = vec![
        use_of("KEY", "injected", "nc", 1000),
        use_of("KEY", "injected", "python3", 0),
        leak,
        use_of("KEY", "scan_finding", "maestro-exec", 1000),
    ];
    assert_eq!(b.report(&cert, batch, Some(1000)).await.status, StatusCode::OK);
    let got = b.alerts("").await;
    assert_eq!(rules(&got), ["foreign_uid", "leak_attempt", "new_command", "scan_finding"]);
    let nc = got.iter().find(|a| a["rule"] == "new_command").unwrap();
    assert_eq!(nc["reason"], "`nc` used KEY for the first time (seen before: python3)");
    assert_eq!(nc["session_label"], "dev");
    assert_eq!(nc["secret"], "KEY");
    // The same new command again is no longer new.
    assert_eq!(
        b.report(&cert, vec![use_of("KEY", "injected", "nc", 1000)], Some(1000)).await.status,
        StatusCode::OK
    );
    assert_eq!(b.alerts("").await.len(), 4);

    // new_label: another session whose label differs from every earlier one.
    let (_ci, ci_cert) = b.enrolled("ci", &["KEY"], false).await;
    b.report(&ci_cert, vec![use_of("KEY", "injected", "python3", 1000)], Some(1000)).await;
    let got = b.alerts("?session=ci").await;
    assert_eq!(rules(&got), ["new_label"], "{got:?}");
    assert!(got[0]["reason"].as_str().unwrap().contains("earlier sessions: dev"));

    // outside_exec: the secret was only ever used through maestro-exec.
    let mut read = use_of("KEY", "file_read", "python3", 1000);
    read["outside_exec"] = json!(true);
    b.report(&cert, vec![read], Some(1000)).await;
    assert_eq!(rules(&b.alerts(&format!("?session={dev}&limit=1")).await), ["outside_exec"]);

    // burst: a coalesced record of 500 uses in the last minute.
    let mut many = use_of("KEY", "injected", "python3", 1000);
    many["count"] = json!(500);
    b.report(&cert, vec![many], Some(1000)).await;
    let latest = b.alerts("?limit=1").await;
    assert_eq!(rules(&latest), ["burst"]);
    assert!(latest[0]["reason"].as_str().unwrap().contains("times in the last minute"));

    // The marker on the secret, and acknowledging.
    let meta = b.user(Method::GET, "/v1/secrets/KEY", None).await.body;
    let count = meta["alerts"].as_u64().unwrap();
    assert_eq!(count, 7, "{meta}");
    let id = latest[0]["id"].as_i64().unwrap();
    let a = b.user(Method::POST, "/v1/alerts/ack", Some(json!({"ids": [id]}))).await;
    assert_eq!(a.body["acked"], json!([id]), "{}", a.body);
    let meta = b.user(Method::GET, "/v1/secrets/KEY", None).await.body;
    assert_eq!(meta["alerts"].as_u64().unwrap(), count - 1);
    // Acknowledged twice, or by another user: refused.
    b.user(Method::POST, "/v1/alerts/ack", Some(json!({"ids": [id]}))).await.refused(
        404,
        "not_found",
        "no alert of yours",
    );
    let bob = b.send(Method::GET, "/v1/alerts", Some(&b.bob.clone()), None, None).await;
    assert_eq!(bob.body, json!([]), "another user sees none of them");
}

#[tokio::test]
async fn rules_turned_off_stay_quiet_and_bad_names_change_nothing() {
    let b = broker().await;
    let a = create(
        &b,
        json!({"name": "QUIET", "kind": "generic", "fields": {"Q": "v"},
               "alerts_off": ["new_command", "foreign_uid"]}),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["alerts_off"], json!(["foreign_uid", "new_command"]));
    let (_s, cert) = b.enrolled("dev", &["QUIET"], false).await;
    b.report(&cert, vec![use_of("QUIET", "injected", "python3", 1000)], Some(1000)).await;
    b.report(&cert, vec![use_of("QUIET", "injected", "nc", 0)], Some(1000)).await;
    assert_eq!(b.alerts("").await, Vec::<Value>::new());
    // An unknown rule is refused, nothing changed (no new version either).
    b.user(Method::PATCH, "/v1/secrets/QUIET", Some(json!({"alerts_off": ["bursts"]})))
        .await
        .refused(400, "bad_request", "'bursts' is not an alert rule");
    let meta = b.user(Method::GET, "/v1/secrets/QUIET", None).await.body;
    assert_eq!(
        (meta["version"].as_u64(), meta["alerts_off"].clone()),
        (Some(1), json!(["foreign_uid", "new_command"]))
    );
    // Turning them back on is a settings change, not a new version.
    let a = b
        .user(
            Method::PATCH,
            "/v1/secrets/QUIET",
            Some(json!({"alerts_off": [], "on_alert": ["deactivate"]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        (a.body["version"].as_u64(), a.body["on_alert"].clone()),
        (Some(1), json!(["deactivate"]))
    );
}

#[tokio::test]
async fn deactivate_and_end_session_actions_are_taken() {
    let b = broker().await;
    let a = create(
        &b,
        json!({"name": "DEACT", "kind": "generic", "fields": {"D": "v"}, "on_alert": ["deactivate"]}),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    b.secret("OTHER", &["O"]).await;
    let (s, cert) = b.enrolled("dev", &["DEACT", "OTHER"], false).await;
    let baseline: Vec<Value> =
        (0..10).map(|_| use_of("DEACT", "injected", "python3", 1000)).collect();
    b.report(&cert, baseline, Some(1000)).await;
    b.report(&cert, vec![use_of("DEACT", "injected", "nc", 1000)], Some(1000)).await;
    assert_eq!(b.active(&s).await, ["OTHER"], "the flagged secret was deactivated, only it");
    let alert = &b.alerts("").await[0];
    assert_eq!(alert["actions"], json!(["deactivate"]));
    // The user's default: end the session.
    let a =
        b.user(Method::PUT, "/v1/alerts/config", Some(json!({"on_alert": ["end-session"]}))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    b.report(&cert, vec![use_of("OTHER", "injected", "python3", 1000)], Some(1000)).await;
    b.report(&cert, vec![use_of("OTHER", "injected", "python3", 0)], Some(1000)).await;
    let session = b.user(Method::GET, &format!("/v1/sessions/{s}"), None).await.body;
    assert_eq!(session["state"], "ended", "{session} {:?}", b.alerts("").await);
    assert_eq!(session["ended_reason"], "alert: foreign_uid");
}

#[tokio::test]
async fn decoy_reads_are_flagged_only_in_sessions_with_decoys() {
    let b = broker().await;
    let a =
        b.user(Method::PUT, "/v1/alerts/config", Some(json!({"on_alert": ["end-session"]}))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    // Without decoys: the report is ignored (not refused: the rest of the batch is recorded).
    let (plain, plain_cert) = b.enrolled("plain", &[], false).await;
    let a = b
        .report(&plain_cert, vec![use_of("aws-prod-admin", "decoy_read", "cat", 1000)], None)
        .await;
    assert_eq!((a.status, a.body["accepted"].as_u64()), (StatusCode::OK, Some(0)), "{}", a.body);
    assert_eq!(b.alerts("").await, Vec::<Value>::new());
    assert_eq!(
        b.user(Method::GET, &format!("/v1/sessions/{plain}"), None).await.body["state"],
        "live"
    );
    // A decoy read naming no decoy is ignored too.
    let (d, cert) = b.enrolled("decoyed", &[], true).await;
    let a = b.report(&cert, vec![use_of("NOT_A_DECOY", "decoy_read", "cat", 1000)], None).await;
    assert_eq!(a.body["accepted"].as_u64(), Some(0), "{}", a.body);
    // With decoys: recorded, flagged at once, the session ended.
    let a = b.report(&cert, vec![use_of("aws-prod-admin", "decoy_read", "cat", 1000)], None).await;
    assert_eq!(a.body["accepted"].as_u64(), Some(1), "{}", a.body);
    let got = b.alerts("").await;
    assert_eq!(rules(&got), ["decoy"]);
    assert_eq!(got[0]["reason"], "decoy credential aws-prod-admin was read");
    let session = b.user(Method::GET, &format!("/v1/sessions/{d}"), None).await.body;
    assert_eq!(
        (session["state"].as_str(), session["decoys"].as_bool()),
        (Some("ended"), Some(true))
    );
    let trail =
        b.user(Method::GET, &format!("/v1/audit?session={d}&action=decoy_read"), None).await;
    assert_eq!(trail.body.as_array().unwrap().len(), 1, "{}", trail.body);
}

#[tokio::test]
async fn webhook_settings_are_checked_and_the_signing_secret_never_shown() {
    let b = broker().await;
    let put = |body: Value| b.user(Method::PUT, "/v1/alerts/config", Some(body));
    let secret = "whsec-planted-0123456789";
    put(json!({"webhook_url": "http://hooks.example.com/x", "webhook_secret": secret}))
        .await
        .refused(400, "bad_request", "use https");
    put(json!({"webhook_url": format!("https://x.example.com/{}", "a".repeat(3000)), "webhook_secret": secret}))
        .await
        .refused(400, "bad_request", "at most 2048 bytes");
    put(json!({"webhook_url": "https://hooks.example.com/x"})).await.refused(
        400,
        "bad_request",
        "needs a signing secret",
    );
    put(json!({"webhook_url": "https://hooks.example.com/x", "webhook_secret": "short"}))
        .await
        .refused(400, "bad_request", "16 to 1024 bytes");
    put(json!({"webhook_url": "https://hooks.example.com/x", "webhook_secret": secret, "on_alert": ["explode"]}))
        .await
        .refused(400, "malformed_json", "");
    let c = b.user(Method::GET, "/v1/alerts/config", None).await.body;
    assert_eq!(
        c,
        json!({"webhook_url": null, "webhook_secret_set": false, "on_alert": []}),
        "nothing changed"
    );
    let a = put(json!({"webhook_url": "https://hooks.example.com/x", "webhook_secret": secret,
                       "on_alert": ["notify", "notify"]}))
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        a.body,
        json!({"webhook_url": "https://hooks.example.com/x", "webhook_secret_set": true, "on_alert": ["notify"]})
    );
    assert!(!a.body.to_string().contains(secret));
    // Rotation of the master key covers the signing secret's data key.
    let keys = b.app.alerts.alert_data_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    // Removing the webhook drops its key.
    let a = put(json!({"webhook_url": ""})).await;
    assert_eq!(a.body["webhook_secret_set"], false, "{}", a.body);
    assert!(b.app.alerts.alert_data_keys().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_flood_of_odd_uses_is_one_alert_until_acknowledged() {
    let b = broker().await;
    b.secret("FLOOD", &["F"]).await;
    let (_s, cert) = b.enrolled("dev", &["FLOOD"], false).await;
    // 50 batches of 20 uses by uid 0, and within one batch 40 uses by 40 new commands.
    for _ in 0..50 {
        let batch: Vec<Value> =
            (0..20).map(|_| use_of("FLOOD", "injected", "python3", 0)).collect();
        assert_eq!(b.report(&cert, batch, Some(1000)).await.status, StatusCode::OK);
    }
    let got = b.alerts("").await;
    assert_eq!(rules(&got), ["burst", "foreign_uid"], "{got:?}");
    let batch: Vec<Value> =
        (0..40).map(|i| use_of("FLOOD", "injected", &format!("tool{i}"), 1000)).collect();
    b.report(&cert, batch, Some(1000)).await;
    let got = b.alerts("?limit=1000").await;
    assert_eq!(got.len(), 2 + crate::domain::alerts::MAX_ALERTS_PER_BATCH, "capped per batch");
    // Acknowledged, the same odd use is raised again.
    let id = got.iter().find(|a| a["rule"] == "foreign_uid").unwrap()["id"].as_i64().unwrap();
    b.user(Method::POST, "/v1/alerts/ack", Some(json!({"ids": [id]}))).await;
    b.report(&cert, vec![use_of("FLOOD", "injected", "python3", 0)], Some(1000)).await;
    let again = b.alerts("?unacked=1&limit=1").await;
    assert_eq!(rules(&again), ["foreign_uid"]);
}
