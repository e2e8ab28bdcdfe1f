//! The MySQL / MariaDB relay of a sealed `mysql` secret: one client connection on the agent's
//! unix socket becomes one login to the real server with the password, then bytes both ways.
//!
//! Per connection, within [`HANDSHAKE_TIMEOUT`]:
//! 1. connect to the server (TLS as the secret's `ssl_mode` asks, after the greeting) and read
//!    its greeting;
//! 2. greet the client as that server (its version, connection id, status and capabilities,
//!    less compression and TLS) with a fresh nonce of the relay's own;
//! 3. read the client's login and take it without a password (the socket is the
//!    authentication: root and the sandbox user only); another user or database is refused
//!    with an ERR packet the client prints;
//! 4. record the connection as usage (fail closed);
//! 5. log in to the server as the client asked (its capabilities, charset, MariaDB extended
//!    capabilities and connection attributes kept) with the password, answering auth
//!    switches ([`auth`]);
//! 6. hand the server's OK to the client, then copy bytes both ways until one side closes or
//!    the socket is closed (deactivation, session end): the end is recorded too.
//!
//! Both sides agree on the capabilities because the relay offers the client only what the
//! server offered and sends the server only what the client chose of that; the flags that shape
//! only the login packet are the relay's own business.

mod auth;
pub mod packet;
mod tls;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use maestro_wire::SecretValue;
use maestro_wire::agent_api::UsageAction;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use zeroize::Zeroizing;

use maestro_wire::catalog::{AgentSeal, RelayProtocol, Service as SealService};

use self::packet::{ClientHello, Greeting, Login, cap};
use super::Service;
use crate::dispatch::Peer;
use crate::proxy::audit::report;
use crate::state::Entry;
use crate::usage::UsageQueue;

/// The client's login and the server login together take at most this long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting to the server takes at most this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The relay sockets' subdirectory of the agent socket's directory.
const SUBDIR: &str = "mysql";

/// MySQL's error codes and states for the refusals the client prints.
const ER_ACCESS_DENIED: (u16, &str) = (1045, "28000");
const ER_DB_ACCESS_DENIED: (u16, &str) = (1044, "42000");
const ER_HANDSHAKE: (u16, &str) = (1043, "08S01");
const ER_CANT_CONNECT: (u16, &str) = (2003, "HY000");

/// TLS to the server.
pub struct Tls {
    pub config: Arc<rustls::ClientConfig>,
    pub name: rustls::pki_types::ServerName<'static>,
}

/// The server login a sealed `mysql` secret stands for.
pub struct Target {
    pub secret: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: Option<String>,
    pub password: SecretValue,
    pub tls: Option<Tls>,
    /// The server's RSA public key (PEM), for caching_sha2_password without TLS.
    pub server_key: Option<String>,
}

impl Target {
    /// A target from a secret's fields (defaults applied).
    pub fn from_fields(
        secret: &str,
        fields: &std::collections::BTreeMap<String, SecretValue>,
    ) -> Result<Target, String> {
        let get = |f: &str| fields.get(f).map(|v| v.expose().to_owned());
        let host = get("host").ok_or("it has no host")?;
        let port = get("port")
            .unwrap_or_else(|| "3306".to_owned())
            .parse()
            .map_err(|_| "its port is not a port".to_owned())?;
        let tls = match get("ssl_mode").as_deref() {
            None | Some("DISABLED") => None,
            Some(mode) => {
                let verify =
                    if mode == "VERIFY_CA" { tls::Verify::Ca } else { tls::Verify::Identity };
                Some(Tls {
                    config: tls::config(get("ssl_ca").as_deref(), verify)?,
                    name: tls::server_name(&host)?,
                })
            }
        };
        Ok(Target {
            secret: secret.to_owned(),
            user: get("user").ok_or("it has no user")?,
            database: get("database"),
            password: fields.get("password").cloned().ok_or("it has no password")?,
            server_key: get("server_public_key"),
            host,
            port,
            tls,
        })
    }
}

/// The MySQL relay service: a socket per active sealed `mysql` secret (see [`super::Sockets`]).
pub struct Mysql {
    usage: Arc<UsageQueue>,
}

impl Mysql {
    pub fn new(usage: Arc<UsageQueue>) -> Self {
        Mysql { usage }
    }
}

impl Service for Mysql {
    type Shared = Shared;
    const WHAT: &'static str = "mysql relay socket";
    /// A connection pool of an application included.
    const MAX_CONNECTIONS: usize = 256;
    /// Root in the sandbox (an entrypoint running migrations) may connect too.
    const ALLOW_ROOT: bool = true;

    fn serves(seal: &AgentSeal) -> bool {
        matches!(seal.service, SealService::Relay { protocol: RelayProtocol::Mysql })
    }

    fn socket_path(dir: &Path, name: &str) -> PathBuf {
        dir.join(SUBDIR).join(format!("{name}.sock"))
    }

    fn open(&self, e: &Entry) -> Result<Shared, String> {
        Ok(Shared {
            target: Target::from_fields(&e.material.name, &e.material.fields)?,
            usage: self.usage.clone(),
            served: AtomicU64::new(0),
        })
    }

    fn connection(
        shared: Arc<Shared>,
        stream: UnixStream,
        uid: u32,
        pid: Option<u32>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        serve(stream, uid, pid, shared)
    }
}

/// What one socket's connections share.
pub struct Shared {
    pub target: Target,
    pub usage: Arc<UsageQueue>,
    /// Connections served so far (a number per connection, for the records).
    pub served: AtomicU64,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A refusal for the client: the ERR packet's code, state and message.
struct Refusal {
    code: (u16, &'static str),
    message: String,
    /// The server's own ERR packet, passed on as it is.
    raw: Option<Vec<u8>>,
}

impl Refusal {
    fn new(code: (u16, &'static str), message: impl Into<String>) -> Refusal {
        Refusal { code, message: message.into(), raw: None }
    }
    fn packet(&self) -> Vec<u8> {
        self.raw.clone().unwrap_or_else(|| packet::err(self.code.0, self.code.1, &self.message))
    }
}

/// The record of a connection's end, made when it is dropped: also when the connection's task
/// is aborted (the secret deactivated, the session ended).
struct Ending {
    usage: Arc<UsageQueue>,
    peer: Peer,
    secret: String,
    what: String,
    started: Instant,
    how: Option<String>,
}

impl Drop for Ending {
    fn drop(&mut self) {
        let how = self.how.take().unwrap_or_else(|| {
            "closed by the agent (the secret was deactivated or the session ended)".to_owned()
        });
        let detail = format!(
            "{} ended after {:.1} s: {how}",
            self.what,
            self.started.elapsed().as_secs_f64()
        );
        let r = report(&self.peer, UsageAction::Injected, Some(&self.secret), detail);
        if self.usage.push(r).is_err() {
            tracing::warn!(secret = %self.secret, "the end of a mysql connection is not recorded: the usage queue is full");
        }
    }
}

/// Serves one client connection until it ends or is aborted.
pub async fn serve(mut client: UnixStream, uid: u32, pid: Option<u32>, shared: Arc<Shared>) {
    let peer = tokio::task::spawn_blocking(move || Peer::identify(uid, pid))
        .await
        .unwrap_or_else(|_| Peer::identify(uid, None));
    let login = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut client, &shared, &peer));
    let (mut upstream, mut ending) = match login.await {
        Ok(Ok(pair)) => pair,
        Ok(Err((seq, refusal))) => {
            tracing::info!(secret = %shared.target.secret, uid, pid, "mysql relay: refused a connection: {}", refusal.message);
            let _ = packet::write(&mut client, seq, &refusal.packet()).await;
            return;
        }
        Err(_) => {
            tracing::info!(secret = %shared.target.secret, uid, pid, "mysql relay: a login took longer than {HANDSHAKE_TIMEOUT:?}; closed");
            return;
        }
    };
    let how = match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => format!("closed ({up} bytes to the server, {down} back)"),
        Err(e) => format!("connection error: {e}"),
    };
    ending.how = Some(how);
}

/// Steps 1-6 of the module's list; on refusal, the sequence id and the ERR for the client.
async fn handshake(
    client: &mut UnixStream,
    shared: &Shared,
    peer: &Peer,
) -> Result<(Box<dyn Io>, Ending), (u8, Refusal)> {
    let t = &shared.target;
    // 1. The server and its greeting.
    let connect =
        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((t.host.as_str(), t.port)));
    let mut tcp = match connect.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let m = format!(
                "maestro: cannot reach the MySQL server {}:{} of secret {}: {e}",
                t.host, t.port, t.secret
            );
            return Err((0, Refusal::new(ER_CANT_CONNECT, m)));
        }
        Err(_) => {
            let m = format!(
                "maestro: the MySQL server {}:{} of secret {} did not answer within {CONNECT_TIMEOUT:?}",
                t.host, t.port, t.secret
            );
            return Err((0, Refusal::new(ER_CANT_CONNECT, m)));
        }
    };
    let _ = tcp.set_nodelay(true);
    let first = packet::read(&mut tcp).await.map_err(|e| {
        (
            0,
            Refusal::new(
                ER_CANT_CONNECT,
                format!("maestro: the MySQL server of secret {} sent no greeting: {e}", t.secret),
            ),
        )
    })?;
    if first.payload.first() == Some(&0xff) {
        // The server refuses (too many connections, host blocked): its words.
        return Err((
            0,
            Refusal {
                raw: Some(first.payload.to_vec()),
                ..Refusal::new(ER_CANT_CONNECT, "the server refused")
            },
        ));
    }
    let server = Greeting::parse(&first.payload).map_err(|e| {
        (
            0,
            Refusal::new(
                ER_CANT_CONNECT,
                format!("maestro: the MySQL server of secret {} sent a {e}", t.secret),
            ),
        )
    })?;
    let needed = cap::PROTOCOL_41 | cap::SECURE_CONNECTION | cap::PLUGIN_AUTH;
    if server.capabilities & needed != needed {
        let m = format!(
            "maestro: the MySQL server of secret {} is too old (no protocol 4.1 with auth plugins)",
            t.secret
        );
        return Err((0, Refusal::new(ER_CANT_CONNECT, m)));
    }

    // 2. The client's greeting.
    let mut nonce = vec![0u8; packet::NONCE_LEN];
    getrandom::fill(&mut nonce)
        .map_err(|_| (0, Refusal::new(ER_HANDSHAKE, "maestro: no randomness")))?;
    for b in &mut nonce {
        // Printable, never NUL (clients read the nonce up to a NUL).
        *b = 0x21 + (*b % 0x5e);
    }
    let offered = server.capabilities & !cap::NEVER;
    let client_plugin = match server.plugin.as_slice() {
        auth::CACHING_SHA2 => auth::CACHING_SHA2,
        _ => auth::NATIVE,
    };
    let greeting =
        Greeting { capabilities: offered, nonce, plugin: client_plugin.to_vec(), ..server.clone() };
    let hs = |e: packet::PacketError| (2, Refusal::new(ER_HANDSHAKE, format!("maestro: {e}")));
    packet::write(client, 0, &greeting.encode()).await.map_err(hs)?;

    // 3. The client's login, for the secret's user and database only.
    let hello = packet::read(client).await.map_err(hs)?;
    let login = match Login::parse(&hello.payload).map_err(hs)? {
        ClientHello::Login(l) => l,
        ClientHello::Tls => {
            let m = "maestro: this socket takes no TLS (it is a local socket; the agent speaks TLS to the server); connect without it (mariadb --skip-ssl, ssl_disabled=True)";
            return Err((2, Refusal::new(ER_HANDSHAKE, m)));
        }
    };
    if login.capabilities & (cap::COMPRESS | cap::ZSTD_COMPRESSION) != 0 {
        return Err((
            2,
            Refusal::new(
                ER_HANDSHAKE,
                "maestro: this socket does not compress; connect without compression",
            ),
        ));
    }
    let user = String::from_utf8_lossy(&login.user);
    if login.user != t.user.as_bytes() {
        let m = format!(
            "maestro: secret {} logs in only as '{}', not '{}'; connect with -u {} (MYSQL_USER)",
            t.secret,
            t.user,
            user.chars().take(64).collect::<String>(),
            t.user
        );
        return Err((2, Refusal::new(ER_ACCESS_DENIED, m)));
    }
    let database: Option<Vec<u8>> = match (&login.database, &t.database) {
        (None, d) => d.as_ref().map(|d| d.as_bytes().to_vec()),
        (Some(asked), Some(d)) if asked == d.as_bytes() => Some(asked.clone()),
        (Some(asked), d) => {
            let asked = String::from_utf8_lossy(asked).chars().take(64).collect::<String>();
            let m = match d {
                Some(d) => format!(
                    "maestro: secret {} connects only to database '{d}', not '{asked}' (MYSQL_DATABASE)",
                    t.secret
                ),
                None => format!(
                    "maestro: secret {} names no database; connect without one, then USE '{asked}' if the account may",
                    t.secret
                ),
            };
            return Err((2, Refusal::new(ER_DB_ACCESS_DENIED, m)));
        }
    };

    // 4. The record, before anything reaches the server.
    let n = shared.served.fetch_add(1, Ordering::Relaxed) + 1;
    let db_text = database.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
    let what = format!(
        "mysql connection #{n} as {} to database '{db_text}' on {}:{}",
        t.user, t.host, t.port
    );
    let r = report(peer, UsageAction::Injected, Some(&t.secret), format!("{what} opened"));
    if shared.usage.push(r).is_err() {
        let m = "maestro: refused: this use of a sealed secret cannot be recorded (the agent's usage queue is full; the broker may be unreachable); try again later";
        return Err((2, Refusal::new(ER_ACCESS_DENIED, m)));
    }
    let mut ending = Ending {
        usage: shared.usage.clone(),
        peer: peer.clone(),
        secret: t.secret.clone(),
        what,
        started: Instant::now(),
        how: Some("the login to the server did not complete".to_owned()),
    };

    // 5. The server login, with the password.
    let mut up = (login.capabilities & offered & !cap::LOGIN_ONLY & !cap::NEVER)
        | (server.capabilities
            & (cap::SECURE_CONNECTION | cap::PLUGIN_AUTH | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA));
    if database.is_some() {
        up |= cap::CONNECT_WITH_DB;
    }
    if login.attributes.is_some() {
        up |= server.capabilities & cap::CONNECT_ATTRS;
    }
    let fail = |m: String| (2, Refusal::new(ER_ACCESS_DENIED, m));
    let mut seq = 1u8;
    let mut stream: Box<dyn Io> = match &t.tls {
        None => Box::new(tcp),
        Some(tls) => {
            if server.capabilities & cap::SSL == 0 {
                return Err(fail(format!(
                    "maestro: the MySQL server of secret {} offers no TLS and the secret's ssl_mode asks for it",
                    t.secret
                )));
            }
            up |= cap::SSL;
            packet::write(&mut tcp, seq, &login.tls_request(up))
                .await
                .map_err(|e| fail(format!("maestro: {e}")))?;
            seq += 1;
            let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
            let s = connector.connect(tls.name.clone(), tcp).await.map_err(|e| {
                fail(format!("maestro: TLS to the MySQL server of secret {} failed: {e}", t.secret))
            })?;
            Box::new(s)
        }
    };
    let creds = auth::Credentials {
        password: t.password.expose().as_bytes(),
        tls: t.tls.is_some(),
        server_key: t.server_key.as_deref(),
    };
    let plugin = auth::first_plugin(&server.plugin);
    let refused = |e: auth::AuthError| match e {
        auth::AuthError::Refused(raw) => (
            2,
            Refusal { raw: Some(raw), ..Refusal::new(ER_ACCESS_DENIED, "refused by the server") },
        ),
        e => {
            fail(format!("maestro: cannot log in to the MySQL server of secret {}: {e}", t.secret))
        }
    };
    let answer: Zeroizing<Vec<u8>> =
        auth::first_answer(&server.plugin, &server.nonce, &creds).map_err(refused)?;
    let first_login = login.encode(up, &answer, plugin, database.as_deref());
    packet::write(&mut stream, seq, &first_login)
        .await
        .map_err(|e| fail(format!("maestro: {e}")))?;
    let ok = auth::finish(&mut stream, plugin.to_vec(), server.nonce.clone(), &creds)
        .await
        .map_err(refused)?;

    // 6. The server's OK, as the answer to the client's login.
    packet::write(client, 2, &ok.payload).await.map_err(hs)?;
    ending.how = None;
    Ok((stream, ending))
}
