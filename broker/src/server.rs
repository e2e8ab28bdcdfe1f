//! Opening a data directory (first-start initialization included) and serving HTTPS.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use maestro_wire::SecretValue;
use tracing::info;

use crate::app::{App, Settings};
use crate::ca::{Ca, CaError};
use crate::clock;
use crate::datadir::{self, DataDir, DataDirError, DirLock};
use crate::events::Hub;
use crate::keys::{self, KeyError};
use crate::seal::MasterKey;
use crate::store::engine::Engine;
use crate::store::{Store, StoreError};
use crate::tls::{self, TlsError};
use crate::tokens;

/// How long shutdown waits for requests in flight once the event streams are closed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the broker could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "cannot listen on {addr}: {source}; pick another --listen address or stop what uses it"
    )]
    Listen { addr: String, source: std::io::Error },
    #[error("cannot make a token: {0}")]
    Random(#[from] tokens::RandomError),
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
    #[error("cannot watch for SIGTERM/SIGINT: {0}")]
    Signals(std::io::Error),
    #[error(
        "invalid user name '{0}': use 1 to 32 of a-z, 0-9, '-' and '_', starting with a letter"
    )]
    UserName(String),
    #[error("no user named {0}; `maestro-broker user ls` lists them")]
    NoSuchUser(String),
    #[error(
        "user {name} has live sessions ({sessions}); end them first (`maestro sessions end ID`), or disable the user"
    )]
    UserHasSessions { name: String, sessions: String },
    #[error(transparent)]
    OAuth(#[from] crate::oauth::SetupError),
}

/// Options of `maestro-broker serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub data_dir: DataDir,
    pub listen: String,
    pub hostnames: Vec<String>,
    /// With `public_url`: where browsers and sandboxes reach the broker (OAuth callbacks,
    /// enrollment bundles).
    pub settings: Settings,
    /// Connection limits and timeouts.
    pub limits: ConnectionLimits,
}

/// Limits on connections, named in docs/hardening.md ("Broker limits and timeouts").
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Connections open at once (`--max-connections`); more are closed at accept.
    pub max_connections: usize,
    /// Time for the TLS handshake, and then for a whole request head (the first request of a
    /// connection, the HTTP/2 preface included, and each later HTTP/1 request)
    /// (`--header-timeout`).
    pub header_timeout: Duration,
    /// A connection with no traffic either way for this long is closed (`--idle-timeout`);
    /// at least three heartbeats, so that event streams stay open.
    pub idle_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub max_h2_streams: u32,
}

/// The default connection cap: [`DEFAULT_MAX_CONNECTIONS`], or the open-files limit less 256
/// (the database, log and key files need descriptors too) when that is lower, and at least 64.
/// At the cap new connections are closed at once, where past the limit `accept` would fail.
pub fn default_max_connections() -> usize {
    let files = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| usize::try_from(soft).unwrap_or(usize::MAX))
        .unwrap_or(1024);
    files.saturating_sub(256).clamp(64, DEFAULT_MAX_CONNECTIONS)
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_h2_streams: MAX_H2_STREAMS,
        }
    }
}

/// Defaults of [`ConnectionLimits`]. The connection cap is at most this, and below the
/// open-files limit ([`default_max_connections`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const MAX_H2_STREAMS: u32 = 64;
/// Largest HTTP/1 read buffer (a request head must fit).
const MAX_H1_BUFFER: usize = 64 * 1024;
/// Largest HTTP/2 header list.
const MAX_H2_HEADER_LIST: u32 = 16 * 1024;
/// HTTP/2 flow-control windows: what a client may send before the broker reads it, per stream
/// and per connection (so an unread upload holds at most this much).
const H2_WINDOW: u32 = 1024 * 1024;

/// An opened data directory: the store (and its engine), checked master key and CA.
pub struct Opened {
    pub engine: Engine,
    pub store: Arc<dyn Store>,
    pub master: MasterKey,
    pub ca: Ca,
}

/// Opens a data directory, making whatever a first start needs: the directory (0700), the
/// database, the master key, the CA, and the first user `admin` with its token in
/// `admin.token`. Every file is 0600.
pub async fn open(dir: &DataDir) -> Result<Opened, ServeError> {
    dir.ensure()?;
    let _keys = dir.key_lock()?;
    let engine = open_engine(dir).await?;
    let _shared_keys = engine.key_lock().await?;
    open_locked(dir, engine).await
}

/// The data directory's database (SQLite inside it, or PostgreSQL), schema up to date.
async fn open_engine(dir: &DataDir) -> Result<Engine, ServeError> {
    dir.prepare_database()?;
    Ok(Engine::open(dir).await?)
}

/// [`open`], for a caller that holds the key locks (the directory's and the engine's).
async fn open_locked(dir: &DataDir, engine: Engine) -> Result<Opened, ServeError> {
    let store = engine.store();
    let master = keys::open_master_key(dir, store.as_ref()).await?;
    let ca = Ca::load_or_create(dir)?;
    engine.check_ca(dir, ca.cert_pem()).await?;
    if store.user_count().await? == 0 {
        let token = tokens::generate(tokens::USER_TOKEN_PREFIX)?;
        // The file first: a crash before the insert just means a new token next start.
        let mut text = zeroize::Zeroizing::new(token.expose().to_owned());
        text.push('\n');
        datadir::write_private(&dir.admin_token(), text.as_bytes())?;
        store.create_user("admin", &tokens::hash(token.expose()), clock::now()).await?;
        info!(path = %dir.admin_token().display(), "made the first user, admin");
    }
    dir.prepare_database()?;
    Ok(Opened { engine, store, master, ca })
}

/// Whether `name` is a valid user name.
pub fn valid_user_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && name.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// `maestro-broker user add NAME`: returns the new user's token.
pub async fn add_user(dir: &DataDir, name: &str) -> Result<SecretValue, ServeError> {
    if !valid_user_name(name) {
        return Err(ServeError::UserName(name.to_owned()));
    }
    let opened = open(dir).await?;
    let token = tokens::generate(tokens::USER_TOKEN_PREFIX)?;
    opened.store.create_user(name, &tokens::hash(token.expose()), clock::now()).await?;
    opened.engine.close().await;
    Ok(token)
}

/// `maestro-broker user ls`: every user, with counts, by name.
pub async fn list_users(
    dir: &DataDir,
) -> Result<Vec<crate::store::tokens::UserSummary>, ServeError> {
    let engine = open_engine(dir).await?;
    let users = crate::app::token_store(&engine).list_users(clock::now()).await;
    engine.close().await;
    Ok(users?)
}

/// `maestro-broker user disable|enable NAME`: a disabled user's tokens are refused from the
/// next request on, by every broker on the database (tokens are not cached).
pub async fn set_user_disabled(
    dir: &DataDir,
    name: &str,
    disabled: bool,
) -> Result<(), ServeError> {
    if !valid_user_name(name) {
        return Err(ServeError::UserName(name.to_owned()));
    }
    let engine = open_engine(dir).await?;
    let at = disabled.then(clock::now);
    let found = crate::app::token_store(&engine).set_user_disabled(name, at).await;
    engine.close().await;
    if found? { Ok(()) } else { Err(ServeError::NoSuchUser(name.to_owned())) }
}

/// `maestro-broker user rm NAME`: the user and everything they own; refused while they have
/// live sessions (their agents hold secrets that only ending the session takes back).
pub async fn remove_user(dir: &DataDir, name: &str) -> Result<(), ServeError> {
    use crate::store::tokens::Refusal;
    if !valid_user_name(name) {
        return Err(ServeError::UserName(name.to_owned()));
    }
    let engine = open_engine(dir).await?;
    let removed = crate::app::token_store(&engine).delete_user(name, clock::now()).await;
    engine.close().await;
    match removed? {
        Ok(()) => Ok(()),
        Err(Refusal::LiveSessions(ids)) => {
            Err(ServeError::UserHasSessions { name: name.to_owned(), sessions: ids.join(", ") })
        }
        Err(_) => Err(ServeError::NoSuchUser(name.to_owned())),
    }
}

/// `maestro-broker rotate-master-key`: returns how many data keys were re-wrapped.
pub async fn rotate_master_key(dir: &DataDir) -> Result<usize, ServeError> {
    dir.ensure()?;
    let _lock = dir.lock()?;
    let _keys = dir.key_lock()?;
    let engine = open_engine(dir).await?;
    let _shared_keys = engine.key_lock().await?;
    // A shared database: no broker may be serving with the old key.
    let _no_brokers = engine.rotation_lock().await?;
    let opened = open_locked(dir, engine).await?;
    let oauth = crate::app::oauth_store(&opened.engine);
    let alerts = crate::app::alert_store(&opened.engine);
    let count = keys::rotate(dir, opened.store.as_ref(), oauth.as_ref(), alerts.as_ref()).await?;
    opened.engine.close().await;
    Ok(count)
}

/// SIGTERM and SIGINT, watched from before the broker says it listens, so that a signal
/// sent right after the listening line is never lost.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<Self, ServeError> {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
        let int = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
        Ok(Self { term, int })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => info!("SIGTERM: shutting down"),
            _ = self.int.recv() => info!("SIGINT: shutting down"),
        }
    }
}

/// `maestro-broker serve`: runs until SIGTERM/SIGINT.
pub async fn serve(mut options: ServeOptions) -> Result<(), ServeError> {
    // The port and the public URL first: a port in use or a bad URL must fail before a data
    // directory, store, CA or admin token is created.
    let listener = TcpListener::bind(&options.listen)
        .map_err(|source| ServeError::Listen { addr: options.listen.clone(), source })?;
    let addr: SocketAddr = listener
        .local_addr()
        .map_err(|source| ServeError::Listen { addr: options.listen.clone(), source })?;
    let redirect_uri =
        crate::oauth::OAuth::redirect_uri(options.settings.public_url.as_deref(), addr)?;
    let mut hostnames = options.hostnames.clone();
    if let Some(url) = &options.settings.public_url {
        // Sandboxes verify the broker by the public URL's host: the certificate must name it.
        let host = reqwest::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned));
        if let Some(host) = host.map(|h| h.trim_matches(['[', ']']).to_owned())
            && !hostnames.contains(&host)
        {
            hostnames.push(host);
        }
        options.settings.public_url = Some(url.trim_end_matches('/').to_owned());
    }

    let dir = &options.data_dir;
    dir.ensure()?;
    let _lock: DirLock = dir.lock()?;
    let opened = open(dir).await?;
    let (server_pem, server_key) = opened.ca.server_certificate(&hostnames, clock::now())?;
    datadir::write_private(&dir.server_key(), server_key.as_bytes())?;
    datadir::write_private(&dir.server_pem(), server_pem.as_bytes())?;
    let tls_config = tls::server_config(opened.ca.cert_pem(), &server_pem, &server_key)?;
    drop(server_key);

    let engine = opened.engine.clone();
    let hub = Hub::new();
    // With brokers sharing a PostgreSQL store: their events, and the lock rotation checks.
    let serving = engine.start_serving(&hub).await?;
    let app = Arc::new(App::new(opened, hub.clone(), options.settings, redirect_uri)?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let expiry = tokio::spawn(crate::domain::sessions::expire_task(app.clone(), stop_rx.clone()));
    let webhooks = tokio::spawn(crate::domain::webhook::task(app.clone(), stop_rx.clone()));
    let refresher = tokio::spawn(crate::oauth::refresh::task(app.clone(), stop_rx));

    let handle: Handle<SocketAddr> = Handle::new();
    let limits = &options.limits;
    // Event streams write a heartbeat each interval: never idle for three of them.
    let idle = limits.idle_timeout.max(app.settings.heartbeat * 3);
    let acceptor = crate::conn::LimitAcceptor::new(limits.max_connections, idle);
    let header_timeout = limits.header_timeout;
    let mut server =
        axum_server::from_tcp_rustls(listener, RustlsConfig::from_config(Arc::new(tls_config)))
            .map_err(|source| ServeError::Listen { addr: options.listen.clone(), source })?
            .map(|tls| tls.handshake_timeout(header_timeout).acceptor(acceptor))
            // The first request's head (after an HTTP/2 preface) within the header timeout:
            // hyper's own timeouts do not cover protocol detection or the preface.
            .first_request_timeout(header_timeout)
            .handle(handle.clone());
    {
        let builder = server.http_builder();
        builder.http1().header_read_timeout(header_timeout).max_buf_size(MAX_H1_BUFFER);
        builder
            .http2()
            .max_concurrent_streams(limits.max_h2_streams)
            .max_header_list_size(MAX_H2_HEADER_LIST)
            .initial_stream_window_size(H2_WINDOW)
            .initial_connection_window_size(H2_WINDOW)
            .max_pending_accept_reset_streams(Some(limits.max_h2_streams as usize));
    }

    let signals = StopSignals::install()?;
    {
        let handle = handle.clone();
        let hub = hub.clone();
        tokio::spawn(async move {
            signals.wait().await;
            // Event streams never end on their own: close them, then let requests finish.
            hub.shutdown();
            let _ = stop_tx.send(true);
            handle.graceful_shutdown(Some(SHUTDOWN_GRACE));
        });
    }

    let mut out = std::io::stdout().lock();
    // The tests and scripts wait for the `listening on` line, so it comes last, flushed.
    let _ = writeln!(out, "maestro-broker: data directory: {}", dir.root().display());
    let _ = writeln!(out, "maestro-broker: CA certificate: {}", dir.ca_pem().display());
    let _ = writeln!(out, "maestro-broker: admin token: {}", dir.admin_token().display());
    let _ = writeln!(out, "maestro-broker: listening on https://{addr}");
    let _ = out.flush();
    drop(out);
    info!(%addr, data_dir = %dir.root().display(), "serving");

    let result =
        server.serve(crate::api::router(app).merge(crate::ui::router()).into_make_service()).await;
    expiry.abort();
    refresher.abort();
    webhooks.abort();
    drop(serving);
    engine.close().await;
    info!("stopped");
    result.map_err(ServeError::Serve)
}
