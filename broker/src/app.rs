//! The state every request handler and domain rule shares (no HTTP type in it).

use std::sync::Arc;
use std::time::Duration;

use crate::ca::Ca;
use crate::events::Hub;
use crate::oauth::state::{OAuth, SetupError};
use crate::oauth::store::OAuthStore;
use crate::seal::MasterKey;
use crate::server::Opened;
use crate::store::Store;
use crate::store::alerts::AlertStore;
use crate::store::engine::Engine;
use crate::store::teams::TeamStore;
use crate::store::tokens::TokenStore;

/// Settings from the command line that handlers need.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Longest life of a session certificate (`--cert-ttl`), capped at 24 h.
    pub cert_ttl: Duration,
    /// Interval of event stream heartbeats (`--heartbeat`).
    pub heartbeat: Duration,
    /// How long a renewed certificate's predecessor stays accepted (`--renew-overlap`).
    pub renew_overlap: Duration,
    /// Time for a request's whole body to arrive (`--body-timeout`).
    pub body_timeout: Duration,
    /// `--public-url`: the URL sandboxes and browsers reach this broker at, which enrollment
    /// bundles carry (`None`: clients use the URL they talked to).
    pub public_url: Option<String>,
}

impl Settings {
    /// How long an agent may keep secrets without hearing from us: six heartbeats, at least
    /// 15 seconds, so a few lost heartbeats on a busy machine do not wipe a sandbox.
    pub fn lease_seconds(&self) -> u64 {
        (self.heartbeat.as_secs() * 6).max(15)
    }
}

/// The broker's shared state.
pub struct App {
    pub store: Arc<dyn Store>,
    pub master: MasterKey,
    pub ca: Ca,
    pub hub: Hub,
    pub settings: Settings,
    /// OAuth providers, authorizations and token refresh.
    pub oauth: OAuth,
    /// Serializes changes to what is active where (activate, deactivate, edit, delete), so
    /// that a conflict check and the write it guards see the same state. A store shared by
    /// several brokers adds a lock per owner across them ([`Store::lock_owner`]).
    pub activation_lock: tokio::sync::Mutex<()>,
    /// Each session's quota of usage records.
    pub usage_quota: crate::quota::UsageQuota,
    /// Unusual-usage alerts, their settings and webhook deliveries.
    pub alerts: Arc<dyn AlertStore>,
    /// Wakes the webhook task when an alert is queued (it also polls, for other brokers').
    pub webhook_wake: Arc<tokio::sync::Notify>,
    /// API tokens, service accounts and the operator's view of users.
    pub tokens: Arc<dyn TokenStore>,
    /// Teams and their members.
    pub teams: Arc<dyn TeamStore>,
    /// When this broker last recorded each token's use (see [`crate::auth`]).
    pub token_uses: crate::auth::LastUses,
}

impl App {
    /// The broker's state over an opened data directory, as `serve` builds it (and the
    /// in-process router tests): OAuth over the engine's store, callbacks at `redirect_uri`.
    pub fn new(
        opened: Opened,
        hub: Hub,
        settings: Settings,
        redirect_uri: String,
    ) -> Result<Self, SetupError> {
        let oauth = OAuth::new(oauth_store(&opened.engine), redirect_uri)?;
        let opened_engine = opened.engine.clone();
        Ok(Self {
            store: opened.store,
            master: opened.master,
            ca: opened.ca,
            hub,
            settings,
            oauth,
            activation_lock: tokio::sync::Mutex::new(()),
            usage_quota: crate::quota::UsageQuota::default(),
            alerts: alert_store(&opened_engine),
            webhook_wake: Arc::new(tokio::sync::Notify::new()),
            tokens: token_store(&opened_engine),
            teams: team_store(&opened_engine),
            token_uses: crate::auth::LastUses::default(),
        })
    }
}

/// The OAuth store of an engine: both engines keep OAuth state.
pub fn oauth_store(engine: &Engine) -> Arc<dyn OAuthStore> {
    match engine {
        Engine::Sqlite(s) => s.clone(),
        Engine::Postgres(s) => s.clone(),
    }
}

/// The alert store of an engine: both engines keep alerts.
pub fn alert_store(engine: &Engine) -> Arc<dyn AlertStore> {
    match engine {
        Engine::Sqlite(s) => s.clone(),
        Engine::Postgres(s) => s.clone(),
    }
}

/// The team store of an engine: both engines keep teams.
pub fn team_store(engine: &Engine) -> Arc<dyn TeamStore> {
    match engine {
        Engine::Sqlite(s) => s.clone(),
        Engine::Postgres(s) => s.clone(),
    }
}

/// The token store of an engine: both engines keep tokens.
pub fn token_store(engine: &Engine) -> Arc<dyn TokenStore> {
    match engine {
        Engine::Sqlite(s) => s.clone(),
        Engine::Postgres(s) => s.clone(),
    }
}

/// What handlers get as state.
pub type SharedApp = Arc<App>;
