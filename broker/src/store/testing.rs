//! The store contract suite: every behaviour of [`Store`] and [`OAuthStore`] tested once,
//! against the traits, and run on each engine (in the style of Vault's
//! `sdk/physical/testing.go`): on SQLite by the broker's unit tests (`sqlite.rs`), on a real
//! PostgreSQL cluster by `tests/tests/postgres_store.rs`. Each test gets a fresh, empty store.
//!
//! Besides single-caller behaviour it holds the concurrency rules a broker relies on, which
//! each engine keeps its own way (SQLite: one writer at a time; PostgreSQL: row locks and
//! guarded updates): two activations of one secret racing, two edits from one version, two
//! ends of one session, two uses of one enrollment token, a session's end racing its
//! enrollment and its activations.

// Test code: a failed expectation is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use maestro_wire::alerts::AlertAction;
use maestro_wire::api::AuditAction;
use maestro_wire::catalog::seal::Exposure;

use super::alerts::{
    AlertQuery, AlertRecord, AlertStore, ProfileUpdate, SecretAlertSettings, UserAlertSettings,
    WebhookState,
};
use super::oauth::{OAuthStore, PendingRecord, PendingStatus, ProviderRecord, TokenRecord};
use super::teams::{TeamRefusal, TeamStore};
use super::tokens::{OWNER_TEAM, OWNER_USER, Refusal, TokenRecord as ApiTokenRecord, TokenStore};
use super::{
    ActiveMaterial, AuditPosition, AuditQuery, AuditRecord, AuditRow, CertificateRecord,
    EnrollmentRecord, SealedField, SecretRecord, SessionRecord, Store, StoreError, StoreFuture,
};

/// A store under test: both traits, and two raw statements the suite needs to look past them.
pub trait ContractStore: Store + OAuthStore + AlertStore + TeamStore + TokenStore {
    /// Runs a statement of the suite's own (`UPDATE audit ...`), as written.
    fn execute_raw(&self, sql: &'static str) -> StoreFuture<'_, u64>;
    /// How many rows `table` holds.
    fn count_rows(&self, table: &'static str) -> StoreFuture<'_, i64>;
}

/// One contract test.
pub type Contract = fn(Arc<dyn ContractStore>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! contracts {
    ($($name:ident),* $(,)?) => {
        /// Every contract test, by name.
        pub const ALL: &[(&str, Contract)] = &[$((stringify!($name), |s| Box::pin($name(s)))),*];
    };
}

contracts!(
    secrets_versions_and_names,
    activations_sessions_and_audit,
    audit_is_append_only,
    enrollment_token_is_single_use,
    material_reads_see_only_their_own_sessions_active_secrets,
    appended_audit_records_keep_their_order_and_every_column,
    a_session_ended_while_agents_read_it_is_never_seen_live_afterwards,
    an_oauth_secret_lives_with_its_token_row_and_keys,
    an_agents_material_carries_its_token_state,
    racing_activations_of_one_secret_leave_one_activation,
    racing_edits_from_one_version_let_one_win,
    racing_ends_of_a_session_end_it_once,
    racing_enrollments_with_one_token_let_one_win,
    a_session_end_racing_its_enrollment_and_activations_leaves_nothing_live,
    audit_pages_go_back_from_the_newest,
    a_secrets_exposure_and_hosts_read_back_everywhere,
    marking_a_secret_compromised_deactivates_it_everywhere_until_a_new_version_clears_it,
    alert_profiles_settings_and_alerts_round_trip,
    webhook_deliveries_are_claimed_once_and_retried,
    filtered_audit_pages_and_usage_groups,
    activations_with_an_end_expire_once_and_keep_their_settings,
    a_team_secret_is_stored_once_and_leaves_a_removed_members_sessions,
    racing_demotions_of_two_owners_leave_one_owner,
    a_teams_service_account_token_acts_as_the_team_and_nothing_else_does,
);

/// Runs every contract test, each on a store `fresh` makes (with whatever must outlive it).
pub async fn run_all<G, F, Fut>(mut fresh: F)
where
    F: FnMut(&'static str) -> Fut,
    Fut: Future<Output = (G, Arc<dyn ContractStore>)>,
{
    for (name, test) in ALL {
        eprintln!("store contract: {name}");
        let (guard, store) = fresh(name).await;
        test(store).await;
        drop(guard);
    }
}

fn secret(owner: i64, id: &str, name: &str, version: u64) -> SecretRecord {
    SecretRecord {
        id: id.into(),
        owner_id: owner,
        name: name.into(),
        kind: "generic".into(),
        description: None,
        tags: vec!["t".into()],
        version,
        field_names: vec!["A".into()],
        data_key_id: format!("{id}-k{version}"),
        wrapped_key: vec![1, 2, 3],
        created_at: 10,
        updated_at: 10 + i64::try_from(version).unwrap(),
        exposure: Exposure::Plain,
        hosts: Vec::new(),
        compromised_at: None,
        life: Default::default(),
    }
}

/// A session `id` of `owner` (expires at 1000) and its enrollment token (hash = the id).
pub fn session(owner: i64, id: &str) -> (SessionRecord, EnrollmentRecord) {
    (
        SessionRecord {
            id: id.into(),
            owner_id: owner,
            label: None,
            created_at: 10,
            expires_at: 1000,
            ended_at: None,
            ended_reason: None,
            enrolled: false,
            decoys: false,
            serials: Default::default(),
        },
        EnrollmentRecord {
            token_hash: id.as_bytes().to_vec(),
            session_id: id.into(),
            expires_at: 100,
            used_at: None,
        },
    )
}

pub async fn secrets_versions_and_names(s: Arc<dyn ContractStore>) {
    let u = s.create_user("alice", b"h1", 1).await.unwrap();
    assert!(matches!(
        s.create_user("alice", b"h2", 1).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    assert_eq!(s.user_by_token(b"h1").await.unwrap(), Some(u.clone()));
    let a = secret(u.id, "s1", "A", 1);
    let audit = AuditRecord::new(u.id, 10, AuditAction::Created);
    let fields = [SealedField { name: "A".into(), blob: vec![9; 40] }];
    s.insert_secret(&a, &fields, &audit).await.unwrap();
    assert!(matches!(
        s.insert_secret(&secret(u.id, "s2", "A", 1), &fields, &audit).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    let v2 = secret(u.id, "s1", "A", 2);
    let new_fields = [SealedField { name: "A".into(), blob: vec![8; 40] }];
    s.replace_secret(1, &v2, &new_fields, &audit).await.unwrap();
    assert!(matches!(
        s.replace_secret(1, &v2, &new_fields, &audit).await,
        Err(StoreError::Changed { .. })
    ));
    let got = s.secret_by_name(u.id, "A").await.unwrap().unwrap();
    assert_eq!(got.version, 2);
    assert_eq!(got.data_key_id, "s1-k2");
    assert_eq!(s.secret_fields("s1").await.unwrap()[0].blob, vec![8; 40]);
    assert_eq!(s.data_keys().await.unwrap().len(), 1, "old data key is deleted");
    assert!(s.secret_by_name(u.id + 1, "A").await.unwrap().is_none());
}

pub async fn activations_sessions_and_audit(s: Arc<dyn ContractStore>) {
    let u = s.create_user("alice", b"h1", 1).await.unwrap();
    let a = secret(u.id, "s1", "A", 1);
    let audit = AuditRecord::new(u.id, 10, AuditAction::Created);
    s.insert_secret(&a, &[], &audit).await.unwrap();
    let (sess, tok) = session(u.id, "sess1");
    s.insert_session(&sess, &tok, &audit).await.unwrap();
    s.change_activations("sess1", &["s1".into()], &[], 20, &[]).await.unwrap();
    assert_eq!(s.active_secrets("sess1").await.unwrap().len(), 1);
    assert_eq!(s.secret_active_in("s1").await.unwrap(), vec!["sess1".to_owned()]);
    let ended = s.end_session("sess1", "user", 30).await.unwrap().unwrap();
    assert_eq!(ended.ended_at, Some(30));
    assert!(s.end_session("sess1", "user", 31).await.unwrap().is_none());
    assert!(s.active_secrets("sess1").await.unwrap().is_empty());
    assert!(matches!(
        s.change_activations("sess1", &["s1".into()], &[], 40, &[]).await,
        Err(StoreError::SessionEnded)
    ));
    // Expiry is a property of time, not only of ended_at.
    let (sess2, tok2) = session(u.id, "sess2");
    s.insert_session(&sess2, &tok2, &audit).await.unwrap();
    assert_eq!(s.expired_sessions(999).await.unwrap(), Vec::<String>::new());
    assert_eq!(s.expired_sessions(1000).await.unwrap(), vec!["sess2".to_owned()]);
    assert!(matches!(
        s.change_activations("sess2", &["s1".into()], &[], 1000, &[]).await,
        Err(StoreError::SessionEnded)
    ));
    let trail = s.audit_for_owner(u.id, None, 100).await.unwrap();
    assert!(trail.iter().any(|r| r.record.action == AuditAction::SessionEnded));
    assert!(trail.windows(2).all(|w| w[0].seq < w[1].seq));
}

pub async fn audit_is_append_only(s: Arc<dyn ContractStore>) {
    s.append_audit(&[AuditRecord::new(1, 1, AuditAction::Denied)]).await.unwrap();
    let e = s.execute_raw("UPDATE audit SET detail = 'x'").await.unwrap_err();
    assert!(e.to_string().contains("append-only"));
    let e = s.execute_raw("DELETE FROM audit").await.unwrap_err();
    assert!(e.to_string().contains("append-only"));
}

pub async fn enrollment_token_is_single_use(s: Arc<dyn ContractStore>) {
    let u = s.create_user("alice", b"h1", 1).await.unwrap();
    let audit = AuditRecord::new(u.id, 10, AuditAction::Enrolled);
    let (sess, tok) = session(u.id, "sess1");
    s.insert_session(&sess, &tok, &audit).await.unwrap();
    let cert = |serial: &str| CertificateRecord {
        serial: serial.into(),
        session_id: "sess1".into(),
        not_before: 0,
        not_after: 500,
        issued_at: 20,
        reason: "enroll",
    };
    s.complete_enrollment(b"sess1", 20, &cert("01"), &audit).await.unwrap();
    assert!(matches!(
        s.complete_enrollment(b"sess1", 21, &cert("02"), &audit).await,
        Err(StoreError::TokenUnusable)
    ));
    assert!(s.session("sess1").await.unwrap().unwrap().enrolled);
    let (sess2, tok2) = session(u.id, "sess2");
    s.insert_session(&sess2, &tok2, &audit).await.unwrap();
    let late = CertificateRecord { session_id: "sess2".into(), ..cert("03") };
    assert!(matches!(
        s.complete_enrollment(b"sess2", 100, &late, &audit).await,
        Err(StoreError::TokenUnusable)
    ));
}

/// A secret `name` of `owner` whose fields are `fields` (blob = the field name's bytes).
async fn add_secret(s: &dyn ContractStore, owner: i64, id: &str, name: &str, fields: &[&str]) {
    let record = SecretRecord {
        field_names: fields.iter().map(|f| (*f).to_owned()).collect(),
        ..secret(owner, id, name, 1)
    };
    let sealed: Vec<SealedField> = fields
        .iter()
        .map(|f| SealedField { name: (*f).to_owned(), blob: format!("{id}/{f}").into_bytes() })
        .collect();
    let audit = AuditRecord::new(owner, 10, AuditAction::Created);
    s.insert_secret(&record, &sealed, &audit).await.unwrap();
}

/// `(secret id, [field names], [field blobs as text])` of each secret read.
fn summary(material: &[ActiveMaterial]) -> Vec<(String, Vec<String>, Vec<String>)> {
    material
        .iter()
        .map(|m| {
            assert!(m.oauth.is_none());
            (
                m.secret.id.clone(),
                m.fields.iter().map(|f| f.name.clone()).collect(),
                m.fields.iter().map(|f| String::from_utf8(f.blob.clone()).unwrap()).collect(),
            )
        })
        .collect()
}

fn expected(rows: &[(&str, &[&str])]) -> Vec<(String, Vec<String>, Vec<String>)> {
    rows.iter()
        .map(|(id, fields)| {
            (
                (*id).to_owned(),
                fields.iter().map(|f| (*f).to_owned()).collect(),
                fields.iter().map(|f| format!("{id}/{f}")).collect(),
            )
        })
        .collect()
}

pub async fn material_reads_see_only_their_own_sessions_active_secrets(s: Arc<dyn ContractStore>) {
    let alice = s.create_user("alice", b"h1", 1).await.unwrap();
    let bob = s.create_user("bob", b"h2", 1).await.unwrap();
    add_secret(s.as_ref(), alice.id, "a-zed", "ZED", &["Z2", "Z1"]).await;
    add_secret(s.as_ref(), alice.id, "a-api", "API", &["KEY"]).await;
    add_secret(s.as_ref(), alice.id, "a-empty", "EMPTY", &[]).await;
    add_secret(s.as_ref(), alice.id, "a-idle", "IDLE", &["X"]).await;
    add_secret(s.as_ref(), bob.id, "b-api", "API", &["KEY", "URL"]).await;
    let audit = AuditRecord::new(alice.id, 10, AuditAction::Created);
    let (s1, t1) = session(alice.id, "s1");
    s.insert_session(&s1, &t1, &audit).await.unwrap();
    let (s2, t2) = session(bob.id, "s2");
    s.insert_session(&s2, &t2, &audit).await.unwrap();
    let add = ["a-zed".to_owned(), "a-api".to_owned(), "a-empty".to_owned()];
    s.change_activations("s1", &add, &[], 20, &[]).await.unwrap();
    s.change_activations("s2", &["b-api".to_owned()], &[], 20, &[]).await.unwrap();

    // Secrets by name, fields by name; a secret without fields has none.
    let mine = expected(&[("a-api", &["KEY"]), ("a-empty", &[]), ("a-zed", &["Z1", "Z2"])]);
    assert_eq!(summary(&s.active_material("s1", None).await.unwrap()), mine);
    let theirs = expected(&[("b-api", &["KEY", "URL"])]);
    assert_eq!(summary(&s.active_material("s2", None).await.unwrap()), theirs);
    // By name: the session's own secret of that name, nothing for an inactive one.
    let api = s.active_material("s1", Some("API")).await.unwrap();
    assert_eq!(summary(&api), expected(&[("a-api", &["KEY"])]));
    assert_eq!(api[0].secret.owner_id, alice.id);
    assert!(s.active_material("s1", Some("IDLE")).await.unwrap().is_empty());
    assert!(s.active_material("s1", Some("NOPE")).await.unwrap().is_empty());
    assert!(s.active_material("unknown", None).await.unwrap().is_empty());

    // Reads running at once share statements; each still gets exactly its own answer.
    let reads = (0..60).map(|i| {
        let s = &s;
        async move {
            match i % 4 {
                0 => (i, summary(&s.active_material("s1", None).await.unwrap())),
                1 => (i, summary(&s.active_material("s2", None).await.unwrap())),
                2 => (i, summary(&s.active_material("s1", Some("ZED")).await.unwrap())),
                _ => (i, summary(&s.active_material("s2", Some("ZED")).await.unwrap())),
            }
        }
    });
    for (i, got) in futures_util::future::join_all(reads).await {
        let want = match i % 4 {
            0 => mine.clone(),
            1 => theirs.clone(),
            2 => expected(&[("a-zed", &["Z1", "Z2"])]),
            _ => Vec::new(),
        };
        assert_eq!(got, want, "read {i}");
    }

    // An ended session has nothing active.
    s.end_session("s1", "user", 30).await.unwrap();
    assert!(s.active_material("s1", None).await.unwrap().is_empty());
    assert_eq!(summary(&s.active_material("s2", None).await.unwrap()), theirs);
}

/// Appends 50 records from several callers at once (5 each), then one record alone, then a
/// batch too large for one statement (SQLite: one statement per record, one transaction).
/// Returns the records appended at once, those appended after (in order), and the trail.
pub async fn append_at_once_then_alone(
    s: &dyn ContractStore,
) -> (Vec<AuditRecord>, Vec<AuditRecord>, Vec<AuditRow>) {
    let full = AuditRecord {
        secret_id: Some("id-1".into()),
        secret_name: Some("NAME".into()),
        session_id: Some("sess".into()),
        pid: Some(u32::MAX),
        uid: Some(0),
        command: Some("cat \"quoted\" \\ ünïcode".into()),
        detail: Some("line\nbreak".into()),
        ..AuditRecord::new(7, i64::MAX, AuditAction::FileRead)
    };
    let records: Vec<AuditRecord> = (0..50)
        .map(|i| {
            if i % 2 == 0 {
                AuditRecord { at: i, ..full.clone() }
            } else {
                AuditRecord::new(7, i, AuditAction::Fetched)
            }
        })
        .collect();
    let appends = records.chunks(5).map(|chunk| s.append_audit(chunk));
    for outcome in futures_util::future::join_all(appends).await {
        outcome.unwrap();
    }
    s.append_audit(std::slice::from_ref(&full)).await.unwrap();
    let large: Vec<AuditRecord> =
        (0..300).map(|i| AuditRecord { at: 1000 + i, ..full.clone() }).collect();
    s.append_audit(&large).await.unwrap();
    let trail = s.audit_for_owner(7, None, 1000).await.unwrap();
    assert!(trail.windows(2).all(|w| w[0].seq < w[1].seq));
    let mut after = vec![full];
    after.extend(large);
    (records, after, trail)
}

pub async fn appended_audit_records_keep_their_order_and_every_column(s: Arc<dyn ContractStore>) {
    let (at_once, after, trail) = append_at_once_then_alone(s.as_ref()).await;
    let got: Vec<AuditRecord> = trail.iter().map(|r| r.record.clone()).collect();
    // The callers that ran at once may commit in any order (SQLite's group commit keeps
    // theirs: see its own test); each caller's records keep their order.
    let (got_at_once, got_after) = got.split_at(at_once.len());
    for chunk in at_once.chunks(5) {
        let positions: Vec<usize> = chunk
            .iter()
            .map(|r| got_at_once.iter().position(|g| g == r).expect("every record was appended"))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "a caller's order: {positions:?}");
    }
    assert_eq!(got_after, after.as_slice());
}

pub async fn a_session_ended_while_agents_read_it_is_never_seen_live_afterwards(
    s: Arc<dyn ContractStore>,
) {
    let u = s.create_user("alice", b"h1", 1).await.unwrap();
    let audit = AuditRecord::new(u.id, 10, AuditAction::Created);
    for round in 0..20 {
        let id = format!("race{round}");
        let (sess, tok) = session(u.id, &id);
        s.insert_session(&sess, &tok, &audit).await.unwrap();
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let (s, id) = (s.clone(), id.clone());
                tokio::spawn(async move {
                    for _ in 0..25 {
                        s.session(&id).await.unwrap();
                    }
                })
            })
            .collect();
        s.end_session(&id, "user", 30).await.unwrap();
        assert!(!s.session(&id).await.unwrap().unwrap().is_live(31), "round {round}");
        for reader in readers {
            reader.await.unwrap();
        }
        assert!(!s.session(&id).await.unwrap().unwrap().is_live(31), "round {round}");
    }
}

fn provider(owner: i64) -> ProviderRecord {
    ProviderRecord {
        id: "oauthp-1".into(),
        owner_id: owner,
        name: "gh".into(),
        preset: "github".into(),
        kind: "github".into(),
        token_field: "token".into(),
        client_id: "cid".into(),
        auth_url: "https://a".into(),
        token_url: "https://t".into(),
        revoke_url: None,
        scopes: vec!["repo".into()],
        data_key_id: "pk".into(),
        wrapped_key: vec![1; 8],
        client_secret: vec![2; 40],
        created_at: 5,
    }
}

fn oauth_secret(owner: i64, version: u64) -> SecretRecord {
    SecretRecord {
        kind: "github".into(),
        tags: vec![],
        field_names: vec!["token".into()],
        data_key_id: format!("sk{version}"),
        wrapped_key: vec![3; 8],
        updated_at: 10,
        ..secret(owner, "s1", "GH", version)
    }
}

fn token(generation: u64, refresh_at_ms: Option<i64>) -> TokenRecord {
    TokenRecord {
        secret_id: "s1".into(),
        provider_id: "oauthp-1".into(),
        data_key_id: "tk".into(),
        wrapped_key: vec![4; 8],
        generation,
        refresh_token: Some(vec![5; 40]),
        scopes: vec!["repo".into()],
        expires_at: Some(100),
        refresh_at_ms,
        failures: 0,
        needs_reauth: None,
        last_refresh_at: Some(10),
        updated_at: 10,
    }
}

fn pending(owner: i64) -> PendingRecord {
    PendingRecord {
        id: "a1".into(),
        state_hash: vec![9; 32],
        owner_id: owner,
        provider_id: "oauthp-1".into(),
        provider_name: "gh".into(),
        secret_name: "GH".into(),
        reconnect_secret_id: None,
        scopes: vec!["repo".into()],
        status: PendingStatus::Pending,
        message: None,
        created_at: 10,
        expires_at: 610,
        finished_at: None,
    }
}

pub async fn an_oauth_secret_lives_with_its_token_row_and_keys(s: Arc<dyn ContractStore>) {
    let u = s.create_user("alice", b"h", 1).await.unwrap();
    s.insert_provider(&provider(u.id)).await.unwrap();
    assert!(matches!(
        s.insert_provider(&ProviderRecord {
            id: "oauthp-2".into(),
            data_key_id: "pk2".into(),
            ..provider(u.id)
        })
        .await,
        Err(StoreError::AlreadyExists { .. })
    ));
    assert_eq!(s.list_providers(u.id).await.unwrap().len(), 1);
    assert_eq!(s.provider_by_name(u.id, "gh").await.unwrap().unwrap().client_secret, vec![2; 40]);

    // The state is single-use: only one move out of `pending` succeeds.
    s.insert_pending(&pending(u.id)).await.unwrap();
    let by_state = s.pending_by_state(&[9; 32]).await.unwrap().unwrap();
    assert_eq!((by_state.provider_name.as_str(), by_state.status), ("gh", PendingStatus::Pending));
    assert!(
        s.move_pending("a1", PendingStatus::Pending, PendingStatus::Exchanging, None, 11)
            .await
            .unwrap()
    );
    assert!(
        !s.move_pending("a1", PendingStatus::Pending, PendingStatus::Exchanging, None, 11)
            .await
            .unwrap()
    );

    let audit = AuditRecord::new(u.id, 12, AuditAction::Created);
    s.insert_oauth_secret(&oauth_secret(u.id, 1), &[], &token(1, Some(5_000)), "a1", &audit)
        .await
        .unwrap();
    assert_eq!(s.pending_by_id("a1").await.unwrap().unwrap().status, PendingStatus::Done);
    let view = s.token("s1").await.unwrap().unwrap();
    assert_eq!((view.secret_name.as_str(), view.provider_name.as_str()), ("GH", "gh"));
    // Every wrapped key is a secret's or OAuth's, as rotation needs.
    let keys = s.oauth_data_keys().await.unwrap();
    let subjects: Vec<&str> = keys.iter().map(|k| k.secret_id.as_str()).collect();
    assert_eq!(subjects, ["oauthp-1", "s1/oauth"]);
    assert_eq!(keys.len() + s.data_keys().await.unwrap().len(), 3);

    // Refresh: due, claimed once, replaced with a new generation and version.
    assert_eq!(s.next_refresh_at().await.unwrap(), Some(5_000));
    assert!(s.due_refreshes(4_999, 10).await.unwrap().is_empty());
    assert_eq!(s.due_refreshes(5_000, 10).await.unwrap(), ["s1"]);
    assert!(s.claim_refresh("s1", 1, 5_000, 65_000).await.unwrap());
    assert!(!s.claim_refresh("s1", 1, 5_000, 65_000).await.unwrap(), "claimed once");
    let refreshed = AuditRecord::new(u.id, 13, AuditAction::Refreshed);
    s.replace_oauth_secret(
        1,
        &oauth_secret(u.id, 2),
        &[],
        1,
        &token(2, Some(9_000)),
        None,
        &refreshed,
    )
    .await
    .unwrap();
    assert!(matches!(
        s.replace_oauth_secret(
            1,
            &oauth_secret(u.id, 3),
            &[],
            1,
            &token(3, None),
            None,
            &refreshed
        )
        .await,
        Err(StoreError::Changed { .. })
    ));
    assert_eq!(s.token("s1").await.unwrap().unwrap().token.generation, 2);
    assert_eq!(s.secret_by_name(u.id, "GH").await.unwrap().unwrap().version, 2);

    // A refusal stops refreshes; a forced claim ignores the schedule but not the mark.
    let failed = AuditRecord::new(u.id, 14, AuditAction::RefreshFailed);
    assert!(s.claim_refresh("s1", 2, i64::MAX, 70_000).await.unwrap(), "forced");
    assert!(s.mark_needs_reauth("s1", 2, "refused", &failed).await.unwrap());
    assert_eq!(s.next_refresh_at().await.unwrap(), None);
    assert!(!s.claim_refresh("s1", 2, i64::MAX, 70_000).await.unwrap());

    // Deleting the secret takes its token row and the row's key with it.
    let record = s.secret_by_name(u.id, "GH").await.unwrap().unwrap();
    s.delete_secret(&record, 20).await.unwrap();
    assert!(s.token("s1").await.unwrap().is_none());
    assert_eq!(s.oauth_data_keys().await.unwrap().len(), 1, "the provider's key only");
    let count = s.count_rows("data_keys").await.unwrap();
    assert_eq!(count, 1, "no orphaned key");
}

pub async fn an_agents_material_carries_its_token_state(s: Arc<dyn ContractStore>) {
    let u = s.create_user("alice", b"h", 1).await.unwrap();
    s.insert_provider(&provider(u.id)).await.unwrap();
    s.insert_pending(&pending(u.id)).await.unwrap();
    assert!(
        s.move_pending("a1", PendingStatus::Pending, PendingStatus::Exchanging, None, 11)
            .await
            .unwrap()
    );
    let audit = AuditRecord::new(u.id, 12, AuditAction::Created);
    let field = SealedField { name: "token".into(), blob: vec![7; 40] };
    s.insert_oauth_secret(&oauth_secret(u.id, 1), &[field], &token(1, Some(5_000)), "a1", &audit)
        .await
        .unwrap();
    let session = crate::store::SessionRecord {
        id: "sess".into(),
        owner_id: u.id,
        label: None,
        created_at: 10,
        expires_at: 1000,
        ended_at: None,
        ended_reason: None,
        enrolled: false,
        decoys: false,
        serials: Default::default(),
    };
    let enrollment = crate::store::EnrollmentRecord {
        token_hash: vec![1; 32],
        session_id: "sess".into(),
        expires_at: 100,
        used_at: None,
    };
    s.insert_session(&session, &enrollment, &audit).await.unwrap();
    s.change_activations("sess", &["s1".to_owned()], &[], 20, &[]).await.unwrap();
    let read = s.active_material("sess", Some("GH")).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].fields.len(), 1);
    assert_eq!(
        read[0].oauth,
        Some(crate::store::OAuthState { expires_at: Some(100), needs_reauth: None })
    );
    let failed = AuditRecord::new(u.id, 14, AuditAction::RefreshFailed);
    assert!(s.claim_refresh("s1", 1, i64::MAX, 70_000).await.unwrap());
    assert!(s.mark_needs_reauth("s1", 1, "refused", &failed).await.unwrap());
    let read = s.active_material("sess", None).await.unwrap();
    assert_eq!(read[0].oauth.as_ref().and_then(|o| o.needs_reauth.as_deref()), Some("refused"));
}

/// Runs `n` copies of `f` at once, each on its own task; their outcomes in order.
async fn race<T, Fut>(
    s: &Arc<dyn ContractStore>,
    n: usize,
    f: impl Fn(Arc<dyn ContractStore>, usize) -> Fut,
) -> Vec<T>
where
    T: Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(f(s.clone(), i))).collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

pub async fn racing_activations_of_one_secret_leave_one_activation(s: Arc<dyn ContractStore>) {
    let u = s.create_user("alice", b"h1", 1).await.unwrap();
    let audit = AuditRecord::new(u.id, 10, AuditAction::Created);
    s.insert_secret(&secret(u.id, "s1", "A", 1), &[], &audit).await.unwrap();
    s.insert_secret(&secret(u.id, "s2", "B", 1), &[], &audit).await.unwrap();
    let (sess, tok) = session(u.id, "sess1");
    s.insert_session(&sess, &tok, &audit).await.unwrap();
    let owner = u.id;
    for round in 0..5 {
        let outcomes = race(&s, 8, move |s, i| async move {
            let id = if i % 2 == 0 { "s1" } else { "s2" };
            let record = AuditRecord {
                secret_id: Some(id.to_owned()),
                session_id: Some("sess1".to_owned()),
                ..AuditRecord::new(owner, 20, AuditAction::Activated)
            };
            let _lock = s.lock_owner(owner).await.unwrap();
            s.change_activations("sess1", &[id.to_owned()], &[], 20, &[record]).await
        })
        .await;
        for outcome in outcomes {
            outcome.unwrap();
        }
        let active: Vec<String> =
            s.active_secrets("sess1").await.unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(active, ["s1", "s2"], "round {round}: each secret active once");
        s.change_activations("sess1", &[], &["s1".to_owned(), "s2".to_owned()], 21, &[])
            .await
            .unwrap();
    }
    let trail = s.audit_for_owner(u.id, None, 1000).await.unwrap();
    let activated = trail.iter().filter(|r| r.record.action == AuditAction::Activated).count();
    assert_eq!(activated, 5 * 8, "every change recorded its audit record");
}

pub async fn racing_edits_from_one_version_let_one_win(s: Arc<dyn ContractStore>) {
    let u = s.create_user("alice", b"h1", 1).await.unwrap();
    let audit = AuditRecord::new(u.id, 10, AuditAction::Edited);
    s.insert_secret(&secret(u.id, "s1", "A", 1), &[], &audit).await.unwrap();
    let owner = u.id;
    for from in 1..4u64 {
        let outcomes = race(&s, 6, move |s, i| async move {
            let next = SecretRecord {
                data_key_id: format!("s1-k{}-{i}", from + 1),
                ..secret(owner, "s1", "A", from + 1)
            };
            let fields =
                [SealedField { name: "A".into(), blob: vec![u8::try_from(i).unwrap(); 8] }];
            let audit = AuditRecord::new(owner, 10, AuditAction::Edited);
            s.replace_secret(from, &next, &fields, &audit).await
        })
        .await;
        let won = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(won, 1, "from version {from}: {outcomes:?}");
        assert!(
            outcomes.iter().all(|o| matches!(o, Ok(()) | Err(StoreError::Changed { .. }))),
            "{outcomes:?}"
        );
        let stored = s.secret_by_name(u.id, "A").await.unwrap().unwrap();
        assert_eq!(stored.version, from + 1);
        assert_eq!(s.secret_fields("s1").await.unwrap().len(), 1, "the winner's fields only");
        assert_eq!(s.data_keys().await.unwrap().len(), 1, "the losers left no data key");
    }
}

pub async fn racing_ends_of_a_session_end_it_once(s: Arc<dyn ContractStore>) {
    let u = s.create_user("alice", b"h1", 1).await.unwrap();
    let audit = AuditRecord::new(u.id, 10, AuditAction::Created);
    s.insert_secret(&secret(u.id, "s1", "A", 1), &[], &audit).await.unwrap();
    let (sess, tok) = session(u.id, "sess1");
    s.insert_session(&sess, &tok, &audit).await.unwrap();
    s.change_activations("sess1", &["s1".to_owned()], &[], 20, &[]).await.unwrap();
    let outcomes =
        race(&s, 6, |s, _| async move { s.end_session("sess1", "user", 30).await.unwrap() }).await;
    assert_eq!(outcomes.iter().filter(|o| o.is_some()).count(), 1, "{outcomes:?}");
    let trail = s.audit_for_owner(u.id, None, 100).await.unwrap();
    let count = |action| trail.iter().filter(|r| r.record.action == action).count();
    assert_eq!(count(AuditAction::SessionEnded), 1);
    assert_eq!(count(AuditAction::Deactivated), 1);
    assert!(s.active_secrets("sess1").await.unwrap().is_empty());
}

pub async fn racing_enrollments_with_one_token_let_one_win(s: Arc<dyn ContractStore>) {
    let u = s.create_user("alice", b"h1", 1).await.unwrap();
    let audit = AuditRecord::new(u.id, 10, AuditAction::Enrolled);
    let (sess, tok) = session(u.id, "sess1");
    s.insert_session(&sess, &tok, &audit).await.unwrap();
    let outcomes = race(&s, 6, |s, i| async move {
        let audit = AuditRecord::new(1, 20, AuditAction::Enrolled);
        s.complete_enrollment(b"sess1", 20, &certificate("sess1", &format!("0{i}")), &audit).await
    })
    .await;
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1, "{outcomes:?}");
    assert!(
        outcomes.iter().all(|o| matches!(o, Ok(()) | Err(StoreError::TokenUnusable))),
        "{outcomes:?}"
    );
    let stored = s.session("sess1").await.unwrap().unwrap();
    assert!(stored.enrolled);
    let winner = outcomes.iter().position(Result::is_ok).unwrap();
    assert_eq!(stored.serials.current, Some(format!("0{winner}")), "the winner's certificate");
}

pub async fn a_session_end_racing_its_enrollment_and_activations_leaves_nothing_live(
    s: Arc<dyn ContractStore>,
) {
    let u = s.create_user("alice", b"h1", 1).await.unwrap();
    let audit = AuditRecord::new(u.id, 10, AuditAction::Created);
    s.insert_secret(&secret(u.id, "s1", "A", 1), &[], &audit).await.unwrap();
    for round in 0..10 {
        let id = format!("race{round}");
        let (sess, tok) = session(u.id, &id);
        s.insert_session(&sess, &tok, &audit).await.unwrap();
        let outcomes = race(&s, 3, {
            let id = id.clone();
            move |s, i| {
                let id = id.clone();
                async move {
                    let audit = AuditRecord::new(1, 20, AuditAction::Enrolled);
                    match i {
                        0 => s.end_session(&id, "user", 20).await.map(|_| "ended"),
                        1 => s
                            .complete_enrollment(id.as_bytes(), 20, &certificate(&id, &id), &audit)
                            .await
                            .map(|()| "enrolled"),
                        _ => s
                            .change_activations(&id, &["s1".to_owned()], &[], 20, &[])
                            .await
                            .map(|()| "activated"),
                    }
                }
            }
        })
        .await;
        // The end always wins in the end; the others either came first or were refused.
        assert_eq!(outcomes[0].as_ref().ok(), Some(&"ended"), "round {round}: {outcomes:?}");
        for outcome in &outcomes[1..] {
            assert!(
                matches!(outcome, Ok(_) | Err(StoreError::SessionEnded)),
                "round {round}: {outcomes:?}"
            );
        }
        let stored = s.session(&id).await.unwrap().unwrap();
        assert!(!stored.is_live(21), "round {round}");
        assert_eq!(stored.enrolled, outcomes[1].is_ok(), "round {round}: {outcomes:?}");
        assert!(s.active_secrets(&id).await.unwrap().is_empty(), "round {round}: {outcomes:?}");
        assert!(s.active_material(&id, None).await.unwrap().is_empty(), "round {round}");
        assert!(!s.secret_active_in("s1").await.unwrap().contains(&id), "round {round}");
    }
}

pub async fn audit_pages_go_back_from_the_newest(s: Arc<dyn ContractStore>) {
    let records: Vec<AuditRecord> = (0..25)
        .map(|i| AuditRecord {
            secret_id: Some(if i % 5 == 0 { "s1" } else { "s2" }.to_owned()),
            ..AuditRecord::new(7, i, AuditAction::Fetched)
        })
        .collect();
    s.append_audit(&records).await.unwrap();
    s.append_audit(&[AuditRecord::new(8, 100, AuditAction::Denied)]).await.unwrap();
    let newest = s.audit_for_owner(7, None, 10).await.unwrap();
    let at: Vec<i64> = newest.iter().map(|r| r.record.at).collect();
    assert_eq!(at, (15..25).collect::<Vec<_>>(), "the newest page, oldest first");
    let before = s.audit_for_owner(7, Some(newest[0].seq), 10).await.unwrap();
    let at: Vec<i64> = before.iter().map(|r| r.record.at).collect();
    assert_eq!(at, (5..15).collect::<Vec<_>>());
    let history = s.secret_history(7, "s1", None, 3).await.unwrap();
    let at: Vec<i64> = history.iter().map(|r| r.record.at).collect();
    assert_eq!(at, [10, 15, 20]);
    let older = s.secret_history(7, "s1", Some(history[0].seq), 10).await.unwrap();
    let at: Vec<i64> = older.iter().map(|r| r.record.at).collect();
    assert_eq!(at, [0, 5]);
    assert!(s.secret_history(8, "s1", None, 10).await.unwrap().is_empty(), "owner's only");
    let usage = s.secret_usage("s1").await.unwrap();
    assert_eq!(usage.last_used_at, Some(20));
}

fn certificate(session_id: &str, serial: &str) -> CertificateRecord {
    CertificateRecord {
        serial: serial.into(),
        session_id: session_id.into(),
        not_before: 0,
        not_after: 500,
        issued_at: 20,
        reason: "enroll",
    }
}

/// A secret's exposure and the hosts its owner named are stored with each version and read
/// back by every read of a secret (by name, listed, active, an agent's material); a version
/// that changes them replaces them; a secret written without them is plain.
pub async fn a_secrets_exposure_and_hosts_read_back_everywhere(s: Arc<dyn ContractStore>) {
    let u = s.create_user("alice", b"h1", 1).await.unwrap();
    let audit = AuditRecord::new(u.id, 10, AuditAction::Created);
    let hosts = vec!["api.example.com".to_owned(), "*.example.net".to_owned()];
    let sealed = SecretRecord {
        exposure: Exposure::Sealed,
        hosts: hosts.clone(),
        ..secret(u.id, "s1", "S", 1)
    };
    let fields = [SealedField { name: "A".into(), blob: vec![9; 40] }];
    s.insert_secret(&sealed, &fields, &audit).await.unwrap();
    s.insert_secret(&secret(u.id, "p1", "P", 1), &fields, &audit).await.unwrap();
    let (sess, token) = session(u.id, "sess1");
    s.insert_session(&sess, &token, &audit).await.unwrap();
    s.change_activations("sess1", &["s1".to_owned(), "p1".to_owned()], &[], 20, &[]).await.unwrap();

    let read = |r: &SecretRecord| (r.name.clone(), r.exposure, r.hosts.clone());
    let want_sealed = ("S".to_owned(), Exposure::Sealed, hosts.clone());
    let want_plain = ("P".to_owned(), Exposure::Plain, Vec::<String>::new());
    assert_eq!(read(&s.secret_by_name(u.id, "S").await.unwrap().unwrap()), want_sealed);
    assert_eq!(read(&s.secret_by_name(u.id, "P").await.unwrap().unwrap()), want_plain);
    let listed: Vec<_> = s.list_secrets(u.id).await.unwrap().iter().map(read).collect();
    assert_eq!(listed, [want_plain.clone(), want_sealed.clone()]);
    let active: Vec<_> = s.active_secrets("sess1").await.unwrap().iter().map(read).collect();
    assert!(active.contains(&want_sealed) && active.contains(&want_plain), "{active:?}");
    let material = s.active_material("sess1", None).await.unwrap();
    let material: Vec<_> = material.iter().map(|m| read(&m.secret)).collect();
    assert_eq!(material, [want_plain.clone(), want_sealed.clone()]);
    let one = s.active_material("sess1", Some("S")).await.unwrap();
    assert_eq!(read(&one[0].secret), want_sealed);

    // A new version back to plain drops the hosts; another seals it again with one host.
    let v2 = SecretRecord { exposure: Exposure::Plain, hosts: Vec::new(), ..sealed.clone() };
    let v2 = SecretRecord { version: 2, data_key_id: "s1-k2".into(), ..v2 };
    s.replace_secret(1, &v2, &fields, &audit).await.unwrap();
    let got = s.secret_by_name(u.id, "S").await.unwrap().unwrap();
    assert_eq!((got.version, got.exposure, got.hosts), (2, Exposure::Plain, vec![]));
    let v3 = SecretRecord {
        version: 3,
        data_key_id: "s1-k3".into(),
        exposure: Exposure::Sealed,
        hosts: vec!["api.example.com".into()],
        ..v2
    };
    s.replace_secret(2, &v3, &fields, &audit).await.unwrap();
    let got = s.active_material("sess1", Some("S")).await.unwrap();
    assert_eq!(
        (got[0].secret.version, got[0].secret.exposure, got[0].secret.hosts.clone()),
        (3, Exposure::Sealed, vec!["api.example.com".to_owned()])
    );
}

/// Marking a secret compromised deactivates it in every live session (a `Deactivated` record
/// each, then the `Compromised` one), keeps the first time it was marked, and is read back by
/// every read of the secret; a version written without the mark clears it; a secret that is gone
/// is [`StoreError::Changed`].
pub async fn marking_a_secret_compromised_deactivates_it_everywhere_until_a_new_version_clears_it(
    s: Arc<dyn ContractStore>,
) {
    let u = s.create_user("alice", b"h1", 1).await.unwrap();
    let audit = AuditRecord::new(u.id, 10, AuditAction::Created);
    add_secret(&*s, u.id, "s1", "LEAKED", &["A"]).await;
    add_secret(&*s, u.id, "s2", "OTHER", &["A"]).await;
    for id in ["sess1", "sess2", "sess3"] {
        let (sess, token) = session(u.id, id);
        s.insert_session(&sess, &token, &audit).await.unwrap();
    }
    for id in ["sess1", "sess2"] {
        s.change_activations(id, &["s1".to_owned(), "s2".to_owned()], &[], 20, &[]).await.unwrap();
    }
    s.change_activations("sess3", &["s2".to_owned()], &[], 20, &[]).await.unwrap();
    let leaked = s.secret_by_name(u.id, "LEAKED").await.unwrap().unwrap();
    assert_eq!(leaked.compromised_at, None);
    let mark = AuditRecord {
        secret_id: Some("s1".into()),
        secret_name: Some("LEAKED".into()),
        ..AuditRecord::new(u.id, 30, AuditAction::Compromised)
    };
    let sessions = s.mark_compromised(&leaked, 30, &mark).await.unwrap();
    assert_eq!(sessions, ["sess1", "sess2"]);
    for id in ["sess1", "sess2"] {
        let names: Vec<_> =
            s.active_secrets(id).await.unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["OTHER"], "{id}");
    }
    assert_eq!(s.active_secrets("sess3").await.unwrap().len(), 1);
    let trail = s.secret_history(u.id, "s1", None, 100).await.unwrap();
    let actions: Vec<_> =
        trail.iter().map(|r| (r.record.action, r.record.session_id.clone())).collect();
    assert_eq!(
        actions[actions.len() - 3..],
        [
            (AuditAction::Deactivated, Some("sess1".to_owned())),
            (AuditAction::Deactivated, Some("sess2".to_owned())),
            (AuditAction::Compromised, None),
        ]
    );
    // Read back everywhere; marked again later, the first time stays.
    assert_eq!(s.secret_by_name(u.id, "LEAKED").await.unwrap().unwrap().compromised_at, Some(30));
    let listed = s.list_secrets(u.id).await.unwrap();
    assert_eq!(listed.iter().map(|r| r.compromised_at).collect::<Vec<_>>(), [Some(30), None]);
    let again = s.mark_compromised(&leaked, 40, &mark).await.unwrap();
    assert!(again.is_empty());
    assert_eq!(s.secret_by_name(u.id, "LEAKED").await.unwrap().unwrap().compromised_at, Some(30));
    // A new version that keeps the mark keeps it; one without it clears it.
    let fields = [SealedField { name: "A".into(), blob: vec![9; 40] }];
    let v2 = SecretRecord {
        version: 2,
        data_key_id: "s1-k2".into(),
        ..s.secret_by_name(u.id, "LEAKED").await.unwrap().unwrap()
    };
    s.replace_secret(1, &v2, &fields, &audit).await.unwrap();
    assert_eq!(s.secret_by_name(u.id, "LEAKED").await.unwrap().unwrap().compromised_at, Some(30));
    let v3 = SecretRecord { version: 3, data_key_id: "s1-k3".into(), compromised_at: None, ..v2 };
    s.replace_secret(2, &v3, &fields, &audit).await.unwrap();
    assert_eq!(s.secret_by_name(u.id, "LEAKED").await.unwrap().unwrap().compromised_at, None);
    // A secret that is gone.
    let ghost = secret(u.id, "nope", "GHOST", 1);
    assert!(matches!(s.mark_compromised(&ghost, 50, &mark).await, Err(StoreError::Changed { .. })));
}

fn alert(owner: i64, secret: Option<(&str, &str)>, session: &str, rule: &str) -> AlertRecord {
    AlertRecord {
        id: 0,
        owner_id: owner,
        at: 50,
        rule: rule.into(),
        reason: format!("{rule} happened"),
        secret_id: secret.map(|(id, _)| id.to_owned()),
        secret_name: secret.map(|(_, name)| name.to_owned()),
        session_id: Some(session.into()),
        command: Some("nc".into()),
        uid: Some(0),
        actions: vec![AlertAction::Notify, AlertAction::EndSession],
        acked_at: None,
        webhook: WebhookState::None,
        attempts: 0,
    }
}

pub async fn alert_profiles_settings_and_alerts_round_trip(s: Arc<dyn ContractStore>) {
    let u = s.create_user("alice", b"h1", 1).await.unwrap();
    let bob = s.create_user("bob", b"h2", 1).await.unwrap();
    add_secret(s.as_ref(), u.id, "s1", "KEY", &["A"]).await;
    // Nothing known of a secret never used.
    let p = s.profile("s1", 0).await.unwrap();
    assert_eq!((p.first_at, p.uses, p.recent_uses), (None, 0, 0));
    // A batch's profile update and two alerts, in one transaction.
    let update = ProfileUpdate {
        secret_id: "s1".into(),
        first_at: 40,
        uses: 3,
        outside_exec_reads: 1,
        commands: vec!["python3".into(), "curl".into()],
        labels: vec!["dev".into()],
    };
    let alerts = [
        alert(u.id, Some(("s1", "KEY")), "sess1", "new_command"),
        alert(u.id, None, "sess2", "decoy"),
    ];
    let ids = s.record_uses(std::slice::from_ref(&update), &alerts).await.unwrap();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] < ids[1]);
    // Twice: counts add up, what was seen stays once, the first time stays the earliest.
    let again = ProfileUpdate { first_at: 45, commands: vec!["curl".into()], ..update.clone() };
    s.record_uses(std::slice::from_ref(&again), &[]).await.unwrap();
    let p = s.profile("s1", 0).await.unwrap();
    assert_eq!((p.first_at, p.uses, p.outside_exec_reads), (Some(40), 6, 2));
    let mut commands = p.commands.clone();
    commands.sort();
    assert_eq!(commands, ["curl", "python3"]);
    assert_eq!(p.labels, ["dev"]);
    assert!(s.seen("s1", "command", "curl").await.unwrap());
    assert!(!s.seen("s1", "command", "nc").await.unwrap());
    assert!(s.seen("s1", "label", "dev").await.unwrap());
    // Recent uses come from the trail: coalesced records count in full, old ones not at all.
    let uses = [
        AuditRecord {
            secret_id: Some("s1".into()),
            count: Some(5),
            ..AuditRecord::new(u.id, 100, AuditAction::Injected)
        },
        AuditRecord {
            secret_id: Some("s1".into()),
            ..AuditRecord::new(u.id, 101, AuditAction::FileRead)
        },
        AuditRecord {
            secret_id: Some("s1".into()),
            ..AuditRecord::new(u.id, 101, AuditAction::Denied)
        },
        AuditRecord {
            secret_id: Some("s1".into()),
            ..AuditRecord::new(u.id, 10, AuditAction::Injected)
        },
    ];
    s.append_audit(&uses).await.unwrap();
    assert_eq!(s.profile("s1", 60).await.unwrap().recent_uses, 6);

    // Listing: filters, newest first, owner only; acknowledging.
    let all =
        s.alerts(&AlertQuery { owner_id: u.id, limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(all.iter().map(|a| a.id).collect::<Vec<_>>(), [ids[1], ids[0]]);
    assert_eq!(all[1], AlertRecord { id: ids[0], ..alerts[0].clone() });
    let of_key = AlertQuery {
        owner_id: u.id,
        secret_name: Some("KEY".into()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(s.alerts(&of_key).await.unwrap().len(), 1);
    let of_sess2 = AlertQuery {
        owner_id: u.id,
        session_id: Some("sess2".into()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(s.alerts(&of_sess2).await.unwrap()[0].rule, "decoy");
    let before =
        AlertQuery { owner_id: u.id, before: Some(ids[1]), limit: 10, ..Default::default() };
    assert_eq!(s.alerts(&before).await.unwrap().len(), 1);
    assert!(
        s.alerts(&AlertQuery { owner_id: bob.id, limit: 10, ..Default::default() })
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.unacked_alerts(u.id).await.unwrap(), [("KEY".to_owned(), 1)]);
    // Repeats: same session, rule, secret and command, not acknowledged, within the window.
    assert!(s.has_similar_alert(&alerts[0], 50).await.unwrap());
    assert!(s.has_similar_alert(&alerts[1], 0).await.unwrap(), "no secret, matched as such");
    assert!(!s.has_similar_alert(&alerts[0], 51).await.unwrap(), "older than the window");
    let other_cmd = AlertRecord { command: Some("curl".into()), ..alerts[0].clone() };
    assert!(!s.has_similar_alert(&other_cmd, 0).await.unwrap());
    let other_session = AlertRecord { session_id: Some("sess9".into()), ..alerts[0].clone() };
    assert!(!s.has_similar_alert(&other_session, 0).await.unwrap());
    assert!(s.ack_alerts(bob.id, &[ids[0]], 70).await.unwrap().is_empty(), "not bob's");
    assert_eq!(s.ack_alerts(u.id, &[ids[0], ids[0], 9999], 70).await.unwrap(), [ids[0]]);
    assert!(s.unacked_alerts(u.id).await.unwrap().is_empty());
    assert!(!s.has_similar_alert(&alerts[0], 0).await.unwrap(), "acknowledged");
    let unacked =
        AlertQuery { owner_id: u.id, unacked_only: true, limit: 10, ..Default::default() };
    assert_eq!(s.alerts(&unacked).await.unwrap().len(), 1);

    // Settings: per secret and per user, the user's signing secret with a key of its own.
    assert_eq!(s.secret_alert_settings("s1").await.unwrap(), SecretAlertSettings::default());
    let settings = SecretAlertSettings {
        rules_off: vec!["burst".into()],
        on_alert: Some(vec![AlertAction::Deactivate]),
    };
    s.put_secret_alert_settings("s1", &settings).await.unwrap();
    assert_eq!(s.secret_alert_settings("s1").await.unwrap(), settings);
    let none = UserAlertSettings { owner_id: u.id, ..Default::default() };
    assert_eq!(s.user_alert_settings(u.id).await.unwrap(), none);
    let hook = UserAlertSettings {
        owner_id: u.id,
        on_alert: vec![AlertAction::Notify],
        webhook_url: Some("https://hooks.example.com/x".into()),
        data_key_id: Some("whk1".into()),
        wrapped_key: Some(vec![9, 9]),
        webhook_secret: Some(vec![7; 40]),
        generation: 1,
    };
    s.put_user_alert_settings(&hook, Some(("whk1", &[9, 9]))).await.unwrap();
    assert_eq!(s.user_alert_settings(u.id).await.unwrap(), hook);
    let keys = s.alert_data_keys().await.unwrap();
    assert_eq!((keys.len(), keys[0].id.as_str(), keys[0].owner_id), (1, "whk1", u.id));
    // A new signing secret replaces the key (the old one is deleted); removing drops it.
    let next = UserAlertSettings {
        data_key_id: Some("whk2".into()),
        wrapped_key: Some(vec![8]),
        generation: 2,
        ..hook.clone()
    };
    s.put_user_alert_settings(&next, Some(("whk2", &[8]))).await.unwrap();
    let keys = s.alert_data_keys().await.unwrap();
    assert_eq!(keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["whk2"]);
    let data_keys = s.count_rows("data_keys").await.unwrap();
    s.put_user_alert_settings(&none, None).await.unwrap();
    assert!(s.alert_data_keys().await.unwrap().is_empty());
    assert_eq!(s.count_rows("data_keys").await.unwrap(), data_keys - 1);

    // A deleted secret takes its profile and settings with it (its alerts stay).
    let rec = s.secret_by_name(u.id, "KEY").await.unwrap().unwrap();
    s.delete_secret(&rec, 80).await.unwrap();
    assert_eq!(s.count_rows("alert_profiles").await.unwrap(), 0);
    assert_eq!(s.count_rows("alert_seen").await.unwrap(), 0);
    assert_eq!(s.count_rows("alert_secret_settings").await.unwrap(), 0);
    assert_eq!(s.count_rows("alerts").await.unwrap(), 2);
    // A profile update for a secret deleted meanwhile is skipped, the alerts stored.
    let ids = s.record_uses(&[update], &[alert(u.id, None, "sess1", "burst")]).await.unwrap();
    assert_eq!((ids.len(), s.count_rows("alert_profiles").await.unwrap()), (1, 0));
}

pub async fn webhook_deliveries_are_claimed_once_and_retried(s: Arc<dyn ContractStore>) {
    let u = s.create_user("alice", b"h1", 1).await.unwrap();
    let pending =
        AlertRecord { webhook: WebhookState::Pending, ..alert(u.id, None, "sess1", "decoy") };
    let quiet = alert(u.id, None, "sess1", "burst");
    let ids = s.record_uses(&[], &[pending.clone(), quiet]).await.unwrap();
    // Brokers racing for the due deliveries: each is claimed by one of them.
    let claims =
        race(&s, 4, |s, _| async move { s.claim_webhooks(1_000, 30_000, 10).await.unwrap() }).await;
    let claimed: Vec<i64> = claims.iter().flatten().map(|a| a.id).collect();
    assert_eq!(claimed, [ids[0]], "{claims:?}");
    let one = claims.iter().flatten().next().unwrap();
    assert_eq!((one.attempts, one.webhook), (1, WebhookState::Pending));
    // Leased: nobody claims it again until the lease passes.
    assert!(s.claim_webhooks(2_000, 30_000, 10).await.unwrap().is_empty());
    // A failed attempt retries when due (not before), counting attempts.
    s.finish_webhook(ids[0], WebhookState::Pending, Some(5_000)).await.unwrap();
    assert!(s.claim_webhooks(4_999, 30_000, 10).await.unwrap().is_empty());
    let again = s.claim_webhooks(5_000, 30_000, 10).await.unwrap();
    assert_eq!((again.len(), again[0].attempts), (1, 2));
    // A lease that ran out (its broker died) is claimed again.
    let taken_over = s.claim_webhooks(5_000 + 30_000, 30_000, 10).await.unwrap();
    assert_eq!((taken_over.len(), taken_over[0].attempts), (1, 3));
    s.finish_webhook(ids[0], WebhookState::Delivered, None).await.unwrap();
    assert!(s.claim_webhooks(i64::MAX / 2, 30_000, 10).await.unwrap().is_empty());
    let listed =
        s.alerts(&AlertQuery { owner_id: u.id, limit: 10, ..Default::default() }).await.unwrap();
    let states: Vec<_> = listed.iter().map(|a| (a.rule.as_str(), a.webhook)).collect();
    assert_eq!(states, [("burst", WebhookState::None), ("decoy", WebhookState::Delivered)]);
}

/// Filtered pages of a user's trail (`audit_query`: every filter, both directions, an empty
/// session list) and a secret's usage groups (`secret_usage_groups`: coalesced counts, UTC
/// days, only uses, only the owner's records), through the indexes of migration 5.
pub async fn filtered_audit_pages_and_usage_groups(s: Arc<dyn ContractStore>) {
    const DAY: i64 = 86_400;
    // Owner 7: 30 records over three days, two secrets, two sessions, three commands.
    let mut records: Vec<AuditRecord> = (0..30)
        .map(|i| AuditRecord {
            secret_id: Some(if i % 3 == 0 { "s1" } else { "s2" }.to_owned()),
            secret_name: Some(if i % 3 == 0 { "ONE" } else { "TWO" }.to_owned()),
            session_id: Some(if i % 2 == 0 { "sa" } else { "sb" }.to_owned()),
            uid: Some(if i == 29 { 0 } else { 1000 }),
            command: Some(["git", "aws", "curl"][i as usize % 3].to_owned()),
            count: (i == 3).then_some(5),
            last_at: (i == 3).then_some(3 * (DAY / 10) + 40),
            ..AuditRecord::new(
                7,
                i * (DAY / 10),
                if i % 5 == 4 { AuditAction::Denied } else { AuditAction::Injected },
            )
        })
        .collect();
    // Another owner's use of the same secret id, and a non-use record of owner 7.
    records.push(AuditRecord {
        secret_id: Some("s1".into()),
        secret_name: Some("ONE".into()),
        ..AuditRecord::new(8, 5, AuditAction::Injected)
    });
    records.push(AuditRecord {
        secret_id: Some("s1".into()),
        secret_name: Some("ONE".into()),
        ..AuditRecord::new(7, 50, AuditAction::Activated)
    });
    s.append_audit(&records).await.unwrap();
    let q = |f: fn(&mut AuditQuery)| {
        let mut query = AuditQuery { owner_id: 7, limit: 100, ..AuditQuery::default() };
        f(&mut query);
        query
    };
    let at = |rows: &[AuditRow]| rows.iter().map(|r| r.record.at / (DAY / 10)).collect::<Vec<_>>();

    let all = s.audit_query(&q(|_| {})).await.unwrap();
    assert_eq!(all.len(), 31, "the owner's records only");
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "oldest first");
    let one = s.audit_query(&q(|q| q.secret_name = Some("ONE".into()))).await.unwrap();
    assert_eq!(one.len(), 11);
    let sb = s.audit_query(&q(|q| q.sessions = Some(vec!["sb".into()]))).await.unwrap();
    assert_eq!(at(&sb), (0..30).filter(|i| i % 2 == 1).collect::<Vec<_>>());
    let none = s.audit_query(&q(|q| q.sessions = Some(Vec::new()))).await.unwrap();
    assert!(none.is_empty(), "an empty session list matches nothing");
    let denied = s.audit_query(&q(|q| q.actions = vec![AuditAction::Denied])).await.unwrap();
    assert_eq!(at(&denied), [4, 9, 14, 19, 24, 29]);
    let two = s
        .audit_query(&q(|q| q.actions = vec![AuditAction::Denied, AuditAction::Activated]))
        .await
        .unwrap();
    assert_eq!(two.len(), 7);
    let curl = s.audit_query(&q(|q| q.command = Some("curl".into()))).await.unwrap();
    assert_eq!(at(&curl), [2, 5, 8, 11, 14, 17, 20, 23, 26, 29]);
    let root = s.audit_query(&q(|q| q.uid = Some(0))).await.unwrap();
    assert_eq!(at(&root), [29]);
    let range = s
        .audit_query(&q(|q| {
            q.since = Some(10 * (DAY / 10));
            q.until = Some(12 * (DAY / 10));
        }))
        .await
        .unwrap();
    assert_eq!(at(&range), [10, 11, 12], "since and until are inclusive");
    let combined = s
        .audit_query(&q(|q| {
            q.secret_name = Some("TWO".into());
            q.command = Some("aws".into());
            q.sessions = Some(vec!["sa".into(), "sb".into()]);
            q.actions = vec![AuditAction::Injected];
        }))
        .await
        .unwrap();
    assert_eq!(at(&combined), [1, 7, 10, 13, 16, 22, 25, 28]);

    // Paging: the newest page, then older ones, then newer ones from the start: each record
    // once, in order.
    let newest = s.audit_query(&q(|q| q.limit = 12)).await.unwrap();
    assert_eq!(newest.last().unwrap().seq, all.last().unwrap().seq);
    let mut seen: Vec<i64> = newest.iter().map(|r| r.seq).collect();
    let mut before = newest[0].seq;
    loop {
        let mut query = q(|q| q.limit = 12);
        query.position = AuditPosition::Before(before);
        let page = s.audit_query(&query).await.unwrap();
        let Some(first) = page.first() else { break };
        before = first.seq;
        seen.splice(0..0, page.iter().map(|r| r.seq));
    }
    assert_eq!(seen, all.iter().map(|r| r.seq).collect::<Vec<_>>(), "older pages");
    let mut forward = Vec::new();
    let mut after = 0;
    loop {
        let mut query = q(|q| q.limit = 7);
        query.position = AuditPosition::After(after);
        let page = s.audit_query(&query).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        forward.extend(page.iter().map(|r| r.seq));
    }
    assert_eq!(forward, seen, "newer pages");

    // Usage groups of s1 for owner 7: uses only (no denied, no activated), owner 7 only.
    let mut groups = s.secret_usage_groups(7, "s1").await.unwrap();
    groups.sort_by(|a, b| {
        (a.day, &a.session_id, &a.command).cmp(&(b.day, &b.session_id, &b.command))
    });
    // s1's uses: i in {0, 3, 6, 12, 15, 18, 21, 27} (9 and 24 are denied).
    let uses: i64 = groups.iter().map(|g| g.uses).sum();
    let records: i64 = groups.iter().map(|g| g.records).sum();
    assert_eq!((uses, records), (8 + 4, 8), "a coalesced record counts its count");
    // One group per (session, command, day): s1 is always `git`; even i are in sa.
    let keys: Vec<(i64, &str, i64)> =
        groups.iter().map(|g| (g.day, g.session_id.as_deref().unwrap(), g.records)).collect();
    assert_eq!(keys, [(0, "sa", 2), (0, "sb", 1), (1, "sa", 2), (1, "sb", 1), (2, "sb", 2)]);
    let coalesced = groups.iter().find(|g| g.uses == 5).unwrap();
    assert_eq!(
        (coalesced.first_at, coalesced.last_at, coalesced.command.as_deref()),
        (3 * (DAY / 10), 3 * (DAY / 10) + 40, Some("git"))
    );
    assert!(s.secret_usage_groups(9, "s1").await.unwrap().is_empty(), "owner's only");
    assert!(s.secret_usage_groups(7, "nope").await.unwrap().is_empty());
}

/// An activation's end and a secret's life settings are stored and read back; an activation is
/// renewed in place; expired activations are deleted with one `expired` record each, and a second
/// expiry (another broker) finds nothing; racing expiries record each once.
pub async fn activations_with_an_end_expire_once_and_keep_their_settings(
    s: Arc<dyn ContractStore>,
) {
    use super::{Lifecycle, NewActivation};
    let u = s.create_user("alice", b"h1", 1).await.unwrap();
    let audit = AuditRecord::new(u.id, 10, AuditAction::Created);
    let life = Lifecycle {
        activation_default: Some(60),
        activation_max: Some(600),
        rotate_every: Some(86_400),
        value_changed_at: 10,
    };
    s.insert_secret(
        &SecretRecord { life: life.clone(), ..secret(u.id, "s1", "A", 1) },
        &[],
        &audit,
    )
    .await
    .unwrap();
    s.insert_secret(&secret(u.id, "s2", "B", 1), &[], &audit).await.unwrap();
    assert_eq!(s.secret_by_name(u.id, "A").await.unwrap().unwrap().life, life);
    let (sess, tok) = session(u.id, "sess1");
    s.insert_session(&sess, &tok, &audit).await.unwrap();
    let add = |id: &str, end: Option<i64>| NewActivation { secret_id: id.into(), expires_at: end };
    s.activate("sess1", &[add("s1", Some(50)), add("s2", None)], 20, &[]).await.unwrap();
    // Renewed: the end moves, the start stays.
    s.activate("sess1", &[add("s1", Some(80))], 30, &[]).await.unwrap();
    let rows = s.list_activations(u.id, Some("sess1"), None).await.unwrap();
    assert_eq!(rows.len(), 2);
    let a = rows.iter().find(|r| r.secret_name == "A").unwrap();
    assert_eq!((a.activated_at, a.expires_at), (20, Some(80)));
    assert_eq!(s.list_activations(u.id + 1, None, None).await.unwrap(), vec![]);
    let material = s.active_material("sess1", Some("A")).await.unwrap();
    assert_eq!(material[0].active_until, Some(80));
    assert!(s.owners_with_expired_activations(79).await.unwrap().is_empty());
    assert_eq!(s.owners_with_expired_activations(80).await.unwrap(), vec![u.id]);
    let (x, y) = tokio::join!(s.expire_activations(u.id, 80), s.expire_activations(u.id, 80));
    let expired: Vec<_> = x.unwrap().into_iter().chain(y.unwrap()).collect();
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0].secret_name, "A");
    assert!(s.expire_activations(u.id, 90).await.unwrap().is_empty());
    let names: Vec<String> =
        s.active_secrets("sess1").await.unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["B"]);
    let trail = s.audit_for_owner(u.id, None, 100).await.unwrap();
    assert_eq!(trail.iter().filter(|r| r.record.action == AuditAction::Expired).count(), 1);
}

pub async fn a_team_secret_is_stored_once_and_leaves_a_removed_members_sessions(
    s: Arc<dyn ContractStore>,
) {
    let alice = s.create_user("alice", b"h1", 1).await.unwrap();
    let bob = s.create_user("bob", b"h2", 1).await.unwrap();
    let created = AuditRecord::new(0, 5, AuditAction::TeamChanged);
    let team = s.create_team("infra", alice.id, 5, 10, &created).await.unwrap().unwrap();
    assert_ne!(team.id, alice.id);
    assert_eq!(
        s.create_team("infra", bob.id, 5, 10, &created).await.unwrap(),
        Err(TeamRefusal::Taken)
    );
    assert_eq!(
        s.create_team("other", bob.id, 5, 0, &created).await.unwrap(),
        Err(TeamRefusal::Limit)
    );
    assert_eq!(s.team_by_name("infra").await.unwrap(), Some(team.clone()));
    assert_eq!(s.user_count().await.unwrap(), 2, "a team's principal is no user");
    assert_eq!(s.member_role(team.id, alice.id).await.unwrap().as_deref(), Some("owner"));
    assert_eq!(s.member_role(team.id, bob.id).await.unwrap(), None);
    let audit = AuditRecord::new(team.id, 6, AuditAction::TeamChanged);
    assert_eq!(
        s.set_member(team.id, "nobody", "member", 6, "d", &audit).await.unwrap(),
        Err(TeamRefusal::NoSuchUser)
    );
    assert_eq!(
        s.set_member(team.id, "team/infra", "member", 6, "d", &audit).await.unwrap(),
        Err(TeamRefusal::NoSuchUser),
        "a team's principal cannot be made a member"
    );
    let added = s.set_member(team.id, "bob", "member", 6, "d", &audit).await.unwrap().unwrap();
    assert_eq!((added.before, added.member.unwrap().role.as_str()), (None, "member"));
    let names: Vec<String> =
        s.members(team.id).await.unwrap().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(s.teams_of(bob.id).await.unwrap(), vec![(team.clone(), "member".to_owned())]);
    // One secret of the team's, active in a session of each member's: one stored copy.
    add_secret(&*s, team.id, "t1", "DB", &["A"]).await;
    add_secret(&*s, bob.id, "b1", "MINE", &["A"]).await;
    for (owner, id) in [(alice.id, "sa"), (bob.id, "sb1"), (bob.id, "sb2")] {
        let (sess, tok) = session(owner, id);
        s.insert_session(&sess, &tok, &AuditRecord::new(owner, 7, AuditAction::SessionCreated))
            .await
            .unwrap();
        s.change_activations(id, &["t1".into()], &[], 8, &[]).await.unwrap();
    }
    s.change_activations("sb1", &["b1".into()], &[], 8, &[]).await.unwrap();
    assert_eq!(s.count_rows("secrets").await.unwrap(), 2);
    assert_eq!(s.count_rows("secret_fields").await.unwrap(), 2);
    assert_eq!(s.secret_active_in("t1").await.unwrap(), ["sa", "sb1", "sb2"]);
    // Uses recorded in each member's trail all show in the team secret's trail and usage.
    let used = |owner: i64, session: &str| AuditRecord {
        secret_id: Some("t1".into()),
        secret_name: Some("DB".into()),
        session_id: Some(session.into()),
        command: Some("psql".into()),
        ..AuditRecord::new(owner, 9, AuditAction::FileRead)
    };
    s.append_audit(&[used(alice.id, "sa"), used(bob.id, "sb1")]).await.unwrap();
    let trail = s.secret_trail("t1", None, 10).await.unwrap();
    let who: Vec<&str> = trail.iter().map(|(_, by)| by.as_str()).collect();
    assert_eq!(who, ["alice", "bob"]);
    let uses: i64 = s.secret_usage_all("t1").await.unwrap().iter().map(|g| g.uses).sum();
    assert_eq!(uses, 2);
    // Lowered to viewer: the team's secret leaves bob's sessions, his own stays.
    let lowered =
        s.set_member(team.id, "bob", "viewer", 10, "lowered", &audit).await.unwrap().unwrap();
    assert_eq!(lowered.before.as_deref(), Some("member"));
    let sessions: Vec<&str> = lowered.deactivated.iter().map(|a| a.session_id.as_str()).collect();
    assert_eq!(sessions, ["sb1", "sb2"]);
    assert_eq!(s.secret_active_in("t1").await.unwrap(), ["sa"]);
    assert_eq!(s.active_secrets("sb1").await.unwrap().len(), 1, "bob's own secret stays");
    let bobs = s.audit_for_owner(bob.id, None, 100).await.unwrap();
    let deactivated: Vec<_> = bobs
        .iter()
        .filter(|r| r.record.action == AuditAction::Deactivated)
        .map(|r| (r.record.session_id.clone().unwrap(), r.record.detail.clone().unwrap()))
        .collect();
    assert_eq!(deactivated, [("sb1".into(), "lowered".into()), ("sb2".into(), "lowered".into())]);
    // Back to member, active again, then removed: gone again.
    s.set_member(team.id, "bob", "member", 11, "d", &audit).await.unwrap().unwrap();
    s.change_activations("sb1", &["t1".into()], &[], 12, &[]).await.unwrap();
    let removed = s.remove_member(team.id, "bob", 13, "removed", &audit).await.unwrap().unwrap();
    assert_eq!(removed.member, None);
    assert_eq!(removed.deactivated.len(), 1);
    assert_eq!(s.member_role(team.id, bob.id).await.unwrap(), None);
    assert_eq!(s.secret_active_in("t1").await.unwrap(), ["sa"]);
    assert_eq!(
        s.remove_member(team.id, "bob", 14, "d", &audit).await.unwrap(),
        Err(TeamRefusal::NotMember)
    );
    // The last owner stays.
    assert_eq!(
        s.remove_member(team.id, "alice", 14, "d", &audit).await.unwrap(),
        Err(TeamRefusal::LastOwner)
    );
    assert_eq!(
        s.set_member(team.id, "alice", "admin", 14, "d", &audit).await.unwrap(),
        Err(TeamRefusal::LastOwner)
    );
    assert_eq!(s.member_role(team.id, alice.id).await.unwrap().as_deref(), Some("owner"));
    // A team that owns a secret is not deleted; an empty one is.
    let deleted = AuditRecord {
        detail: Some("team deleted".into()),
        ..AuditRecord::new(alice.id, 16, AuditAction::TeamChanged)
    };
    assert_eq!(
        s.delete_team(team.id, &deleted).await.unwrap(),
        Err(TeamRefusal::NotEmpty(vec!["DB".into()]))
    );
    let empty = s.create_team("empty", alice.id, 15, 10, &created).await.unwrap().unwrap();
    s.delete_team(empty.id, &deleted).await.unwrap().unwrap();
    assert_eq!(s.team_by_name("empty").await.unwrap(), None);
    let trail = s.audit_for_owner(alice.id, None, 100).await.unwrap();
    let recorded = trail.iter().filter(|r| r.record.detail.as_deref() == Some("team deleted"));
    assert_eq!(recorded.count(), 1, "the refused delete recorded nothing");
}

pub async fn racing_demotions_of_two_owners_leave_one_owner(s: Arc<dyn ContractStore>) {
    let alice = s.create_user("alice", b"h1", 1).await.unwrap();
    s.create_user("bob", b"h2", 1).await.unwrap();
    let created = AuditRecord::new(0, 5, AuditAction::TeamChanged);
    let team = s.create_team("infra", alice.id, 5, 10, &created).await.unwrap().unwrap();
    let audit = AuditRecord::new(team.id, 6, AuditAction::TeamChanged);
    for round in 0..4 {
        s.set_member(team.id, "bob", "owner", 6, "d", &audit).await.unwrap().unwrap();
        s.set_member(team.id, "alice", "owner", 6, "d", &audit).await.unwrap().unwrap();
        let id = team.id;
        let outcomes = race(&s, 2, move |s, i| async move {
            let who = if i == 0 { "alice" } else { "bob" };
            if round % 2 == 0 {
                s.set_member(
                    id,
                    who,
                    "member",
                    7,
                    "d",
                    &AuditRecord::new(id, 7, AuditAction::TeamChanged),
                )
                .await
                .unwrap()
            } else {
                s.remove_member(id, who, 7, "d", &AuditRecord::new(id, 7, AuditAction::TeamChanged))
                    .await
                    .unwrap()
            }
        })
        .await;
        let refused = outcomes.iter().filter(|o| *o == &Err(TeamRefusal::LastOwner)).count();
        assert_eq!(refused, 1, "round {round}: one of the two demotions is refused");
        let owners =
            s.members(team.id).await.unwrap().into_iter().filter(|m| m.role == "owner").count();
        assert_eq!(owners, 1, "round {round}");
        if s.member_role(team.id, alice.id).await.unwrap().is_none() {
            s.set_member(team.id, "alice", "member", 8, "d", &audit).await.unwrap().unwrap();
        }
        if s.members(team.id).await.unwrap().iter().all(|m| m.name != "bob") {
            s.set_member(team.id, "bob", "member", 8, "d", &audit).await.unwrap().unwrap();
        }
    }
}

fn api_token(id: &str, user_id: i64, account: Option<&str>) -> ApiTokenRecord {
    ApiTokenRecord {
        id: id.into(),
        user_id,
        service_account: account.map(Into::into),
        name: id.into(),
        scopes: vec!["secrets:read".into()],
        created_at: 5,
        expires_at: None,
        last_used_at: None,
    }
}

pub async fn a_teams_service_account_token_acts_as_the_team_and_nothing_else_does(
    s: Arc<dyn ContractStore>,
) {
    let alice = s.create_user("alice", b"h1", 1).await.unwrap();
    let created = AuditRecord::new(0, 5, AuditAction::TeamChanged);
    let team = s.create_team("infra", alice.id, 5, 10, &created).await.unwrap().unwrap();
    let audit = AuditRecord::new(team.id, 5, AuditAction::TokenChanged);
    let account = s
        .insert_service_account(OWNER_TEAM, team.id, "ci", None, 5, 10, &audit)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((account.owner_kind.as_str(), account.owner_id), (OWNER_TEAM, team.id));
    let mine = AuditRecord::new(alice.id, 5, AuditAction::TokenChanged);
    s.insert_service_account(OWNER_USER, alice.id, "ci", None, 5, 10, &mine)
        .await
        .unwrap()
        .unwrap();
    // A team's token: through its own account only.
    s.insert_token(&api_token("t1", team.id, Some("ci")), b"hash-t1", 10, &audit)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        s.insert_token(&api_token("t2", team.id, None), b"hash-t2", 10, &audit).await.unwrap(),
        Err(Refusal::Missing),
        "a team has no token of its own"
    );
    let found = s.authenticate(b"hash-t1").await.unwrap().unwrap();
    assert_eq!((found.user.id, found.user_kind.as_str()), (team.id, OWNER_TEAM));
    assert_eq!(found.token.service_account.as_deref(), Some("ci"));
    assert_eq!(s.token_owner("t1").await.unwrap(), Some(team.id));
    assert_eq!(s.list_service_accounts(team.id).await.unwrap()[0].tokens, 1);
    // Forged rows: alice's account's token moved onto the team, a team token of no account.
    s.insert_token(&api_token("t3", alice.id, Some("ci")), b"hash-t3", 10, &mine)
        .await
        .unwrap()
        .unwrap();
    s.insert_token(&api_token("t4", alice.id, None), b"hash-t4", 10, &mine).await.unwrap().unwrap();
    assert_eq!(s.authenticate(b"hash-t3").await.unwrap().unwrap().user_kind, OWNER_USER);
    s.execute_raw(
        "UPDATE api_tokens SET user_id = (SELECT id FROM teams) WHERE id IN ('t3', 't4')",
    )
    .await
    .unwrap();
    assert_eq!(s.authenticate(b"hash-t3").await.unwrap(), None);
    assert_eq!(s.authenticate(b"hash-t4").await.unwrap(), None);
    s.execute_raw(
        "UPDATE api_tokens SET user_id = (SELECT MIN(id) FROM users) WHERE id IN ('t3', 't4')",
    )
    .await
    .unwrap();
    assert!(s.authenticate(b"hash-t4").await.unwrap().is_some());
    // A team token cannot be moved onto a user either.
    s.execute_raw("UPDATE api_tokens SET user_id = (SELECT MIN(id) FROM users) WHERE id = 't1'")
        .await
        .unwrap();
    assert_eq!(s.authenticate(b"hash-t1").await.unwrap(), None);
    s.execute_raw("UPDATE api_tokens SET user_id = (SELECT id FROM teams) WHERE id = 't1'")
        .await
        .unwrap();
    assert!(s.authenticate(b"hash-t1").await.unwrap().is_some());
    // Deleting the team: refused while a session of the team's is live, then its accounts
    // and tokens go with it.
    let (live, token) = session(team.id, "team-session");
    s.insert_session(&live, &token, &AuditRecord::new(team.id, 10, AuditAction::SessionCreated))
        .await
        .unwrap();
    let deleted = AuditRecord::new(alice.id, 20, AuditAction::TeamChanged);
    assert_eq!(
        s.delete_team(team.id, &deleted).await.unwrap(),
        Err(TeamRefusal::NotEmpty(vec!["live session team-session".into()]))
    );
    assert!(s.authenticate(b"hash-t1").await.unwrap().is_some(), "nothing changed");
    s.execute_raw("UPDATE sessions SET ended_at = 15 WHERE id = 'team-session'").await.unwrap();
    s.delete_team(team.id, &deleted).await.unwrap().unwrap();
    assert_eq!(s.authenticate(b"hash-t1").await.unwrap(), None);
    assert_eq!(s.token_owner("t1").await.unwrap(), None);
    assert!(s.list_service_accounts(team.id).await.unwrap().is_empty());
    assert_eq!(s.count_rows("sessions").await.unwrap(), 0);
    assert_eq!(s.list_service_accounts(alice.id).await.unwrap().len(), 1, "alice's stays");
}
