//! What unusual-usage alerts keep (issue 12), behind its own trait so that each store engine
//! implements it beside [`crate::store::Store`] (as [`super::oauth`] does).
//!
//! Tables of migration 6 (`store/schema.rs`, `store/pg_schema.rs`; statements in
//! `store/sql/alerts.rs`):
//!
//! * **alerts**: one row per flagged use, with the actions taken and its webhook delivery state;
//!   a broker delivers a row only after claiming it with a lease ([`AlertStore::claim_webhooks`]),
//!   so with several brokers on one database each alert is delivered once.
//! * **alert_profiles** and **alert_seen**: what the rules know of a secret's past, kept up to
//!   date as uses are recorded, so that gathering a secret's history is a few primary-key reads
//!   whatever the size of the audit trail.
//! * **alert_secret_settings** and **alert_user_settings**: rules turned off, actions, and the
//!   user's webhook (its signing secret sealed under a data key of its own, re-wrapped by
//!   `rotate-master-key` with the others).

use maestro_wire::alerts::AlertAction;

use super::{DataKeyRecord, StoreFuture};

/// Where an alert's webhook delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookState {
    /// No notify action (or no webhook configured when it was raised).
    None,
    Pending,
    Delivered,
    /// Every attempt failed.
    Failed,
}

impl WebhookState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    /// The state of a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::None, Self::Pending, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRecord {
    /// Given by the store on insert (ignored there).
    pub id: i64,
    pub owner_id: i64,
    pub at: i64,
    pub rule: String,
    pub reason: String,
    pub secret_id: Option<String>,
    pub secret_name: Option<String>,
    pub session_id: Option<String>,
    pub command: Option<String>,
    pub uid: Option<u32>,
    pub actions: Vec<AlertAction>,
    pub acked_at: Option<i64>,
    pub webhook: WebhookState,
    /// Delivery attempts so far.
    pub attempts: u32,
}

/// What the store knows of one secret's past uses (see [`AlertStore::profile`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// `None`: never used (since migration 6).
    pub first_at: Option<i64>,
    pub uses: u64,
    /// File reads reported as outside any `maestro-exec` process tree.
    pub outside_exec_reads: u64,
    /// Commands seen with it, oldest first (at most 1000).
    pub commands: Vec<String>,
    /// Whether `commands` is all of them (else [`AlertStore::seen`] answers for the others).
    pub commands_complete: bool,
    /// Session labels seen with it, oldest first (at most 1000).
    pub labels: Vec<String>,
    pub labels_complete: bool,
    /// Uses in the window asked for (the audit trail's, coalesced records counted in full).
    pub recent_uses: u64,
}

/// What one usage batch adds to a secret's profile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileUpdate {
    pub secret_id: String,
    pub first_at: i64,
    pub uses: u64,
    pub outside_exec_reads: u64,
    pub commands: Vec<String>,
    pub labels: Vec<String>,
}

/// A secret's own alert settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretAlertSettings {
    pub rules_off: Vec<String>,
    /// `None`: the user's default.
    pub on_alert: Option<Vec<AlertAction>>,
}

/// A user's alert settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserAlertSettings {
    pub owner_id: i64,
    pub on_alert: Vec<AlertAction>,
    pub webhook_url: Option<String>,
    /// The signing secret's data key (id, wrapped) and sealed value.
    pub data_key_id: Option<String>,
    pub wrapped_key: Option<Vec<u8>>,
    pub webhook_secret: Option<Vec<u8>>,
    /// Bumped with each new signing secret (part of its sealing binding).
    pub generation: u64,
}

/// A filtered page of a user's alerts, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertQuery {
    pub owner_id: i64,
    pub secret_name: Option<String>,
    pub session_id: Option<String>,
    pub unacked_only: bool,
    /// Ids below this one (paging towards older).
    pub before: Option<i64>,
    pub limit: i64,
}

/// The alerts' persistence. See the module docs.
pub trait AlertStore: Send + Sync {
    /// A secret's profile; `recent_uses` counts its uses at or after `since`.
    fn profile<'a>(&'a self, secret_id: &'a str, since: i64) -> StoreFuture<'a, Profile>;
    /// Whether `value` was seen as `what` (`command`, `label`) with the secret.
    fn seen<'a>(
        &'a self,
        secret_id: &'a str,
        what: &'a str,
        value: &'a str,
    ) -> StoreFuture<'a, bool>;
    /// Adds a batch's uses to the profiles and stores its alerts, in one transaction; returns
    /// the alerts' ids, in order.
    fn record_uses<'a>(
        &'a self,
        updates: &'a [ProfileUpdate],
        alerts: &'a [AlertRecord],
    ) -> StoreFuture<'a, Vec<i64>>;

    /// A secret's settings (default when it has none).
    fn secret_alert_settings<'a>(
        &'a self,
        secret_id: &'a str,
    ) -> StoreFuture<'a, SecretAlertSettings>;
    /// Replaces a secret's settings.
    fn put_secret_alert_settings<'a>(
        &'a self,
        secret_id: &'a str,
        settings: &'a SecretAlertSettings,
    ) -> StoreFuture<'a, ()>;
    /// A user's settings (default when they have none).
    fn user_alert_settings(&self, owner_id: i64) -> StoreFuture<'_, UserAlertSettings>;
    /// Replaces a user's settings; a new signing secret comes with its new data key
    /// (`new_key`: id and wrapped key), and the old key is deleted with it.
    fn put_user_alert_settings<'a>(
        &'a self,
        settings: &'a UserAlertSettings,
        new_key: Option<(&'a str, &'a [u8])>,
    ) -> StoreFuture<'a, ()>;

    /// Whether `a`'s session already has an alert not acknowledged of the same rule, secret
    /// and command raised at or after `since` (a repeat is not raised again).
    fn has_similar_alert<'a>(&'a self, a: &'a AlertRecord, since: i64) -> StoreFuture<'a, bool>;
    /// A filtered page of a user's alerts, newest first.
    fn alerts<'a>(&'a self, query: &'a AlertQuery) -> StoreFuture<'a, Vec<AlertRecord>>;
    /// Alerts of a user's not acknowledged yet, per secret name.
    fn unacked_alerts(&self, owner_id: i64) -> StoreFuture<'_, Vec<(String, u64)>>;
    /// Acknowledges a user's alerts; returns the ids that were theirs and not acknowledged.
    fn ack_alerts<'a>(
        &'a self,
        owner_id: i64,
        ids: &'a [i64],
        now: i64,
    ) -> StoreFuture<'a, Vec<i64>>;

    /// Claims up to `limit` pending webhook deliveries due at `now_ms` for `lease_ms`: each
    /// claimed row's attempt count goes up by one, and no other broker claims it until the
    /// lease passes.
    fn claim_webhooks(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> StoreFuture<'_, Vec<AlertRecord>>;
    /// Records a delivery's outcome: delivered, failed for good, or retry at `retry_at_ms`.
    fn finish_webhook(
        &self,
        id: i64,
        state: WebhookState,
        retry_at_ms: Option<i64>,
    ) -> StoreFuture<'_, ()>;

    /// The data keys of webhook signing secrets, for `rotate-master-key`.
    fn alert_data_keys(&self) -> StoreFuture<'_, Vec<DataKeyRecord>>;
}
