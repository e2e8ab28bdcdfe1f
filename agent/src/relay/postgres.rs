//! Sealed PostgreSQL logins: a unix socket per active sealed `postgres` secret that speaks the
//! PostgreSQL protocol to the sandbox's clients and logs in to the real server with the password
//! for each connection, so the sandbox never holds the password.
//!
//! The socket is `<agent socket's directory>/pg/NAME/.s.PGSQL.5432`: libpq finds it from
//! `PGHOST=<that directory>` and `PGPORT=5432`, which the sandbox gets with `PGUSER`,
//! `PGDATABASE` and `DATABASE_URL=postgresql://USER@/DATABASE?host=<that directory>`.
//!
//! Per client connection (SO_PEERCRED: the sandbox user or root, see [`crate::relay`]):
//!
//! 1. the client's startup, within [`STARTUP_TIMEOUT`] and [`MAX_STARTUP`] bytes (PostgreSQL's
//!    own limit): SSLRequest and GSSENCRequest are answered `N` (a unix socket needs neither);
//!    a CancelRequest is passed on to the server as it is;
//! 2. a user or database other than the secret's, or a replication connection, is refused with
//!    an ErrorResponse the client prints (`FATAL: ...`), and recorded as a denial;
//! 3. the connection is recorded as usage (pid, uid, command, database and user) before anything
//!    goes to the server; a connection that cannot be recorded is refused (fail closed);
//! 4. the relay connects to the server (TLS as `sslmode` asks: `verify-full` checks the chain and
//!    the name, `verify-ca` the chain, `require`/`prefer`/`allow` encrypt without checking, as
//!    libpq does), sends the client's startup parameters and answers the server's
//!    authentication with the password: SCRAM-SHA-256 (the server's final signature checked),
//!    md5, or cleartext (only to a verified server or over loopback: a cleartext request from a
//!    server nobody verified could be anyone's). The codecs and SCRAM are `postgres-protocol`'s;
//! 5. the client gets AuthenticationOk, then both directions are relayed byte for byte (the
//!    server's ParameterStatus, BackendKeyData and ReadyForQuery are the first bytes it sees);
//! 6. its end is recorded, whether the client, the server or the agent (a revocation aborts the
//!    task: the record is written as it is dropped) ended it.
//!
//! The server's own errors during log-in (a wrong password, a missing database) reach the
//! client as the server sent them; they never hold the password.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use maestro_wire::SecretValue;
use maestro_wire::agent_api::UsageAction;
use maestro_wire::catalog::{AgentSeal, PG_RELAY_PORT, RelayProtocol, Service as SealService};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use zeroize::{Zeroize, Zeroizing};

use super::Service;
use super::verify::{ChainOnly, Unverified, pem_roots};
use crate::dispatch::Peer;
use crate::proxy::audit::report;
use crate::state::Entry;
use crate::usage::UsageQueue;

/// The sockets' directory under the agent socket's directory.
const SUBDIR: &str = "pg";
/// PostgreSQL's own limit on a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP: usize = 10_000;
/// A client must have sent its startup within this long of connecting.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting to the server, TLS and the log-in, together, take at most this long.
const SERVER_TIMEOUT: Duration = Duration::from_secs(30);
/// A server message during log-in is at most this long (SCRAM's are under 200 bytes; an
/// ErrorResponse a few hundred).
const MAX_AUTH_MESSAGE: usize = 64 * 1024;
/// Startup parameters at most (libpq sends under ten).
const MAX_PARAMETERS: usize = 64;
/// SSLRequest/GSSENCRequest rounds before the startup (libpq sends at most one of each).
const MAX_NEGOTIATIONS: usize = 2;

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;

/// libpq's `sslmode`, as the relay applies it towards the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(text: Option<&str>) -> Result<SslMode, String> {
        Ok(match text.unwrap_or("prefer") {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(format!("its sslmode '{other}' is not one libpq knows")),
        })
    }

    /// Whether TLS is asked for at all (`allow` asks only after a refusal, which the relay,
    /// logging in with a password, never needs: it goes without).
    fn asks(self) -> bool {
        !matches!(self, SslMode::Disable | SslMode::Allow)
    }

    fn required(self) -> bool {
        matches!(self, SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull)
    }

    fn verified(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// A sealed login as the relay holds it.
pub struct Login {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: SecretValue,
    /// The database (the user's name when the secret names none, as the server has it).
    pub database: String,
    pub sslmode: SslMode,
    /// The TLS configuration for `sslmode` (None for disable/allow).
    tls: Option<Arc<rustls::ClientConfig>>,
    pub usage: Arc<UsageQueue>,
}

/// The PostgreSQL relay service.
pub struct Postgres {
    usage: Arc<UsageQueue>,
    /// TEST ONLY: an extra CA the server's certificate may chain to (the agent's
    /// `--test-only-upstream-ca`).
    test_ca: Option<String>,
}

impl Postgres {
    pub fn new(usage: Arc<UsageQueue>, test_ca: Option<String>) -> Self {
        Postgres { usage, test_ca }
    }

    /// The TLS client configuration for `mode`; `rootcert` is the secret's `sslrootcert` (PEM),
    /// the roots verify-ca and verify-full check the server with instead of the system's.
    fn tls(
        &self,
        mode: SslMode,
        rootcert: Option<&str>,
    ) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
        if !mode.asks() {
            return Ok(None);
        }
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?;
        let config = if mode.verified() {
            let roots = match rootcert {
                Some(pem) => pem_roots(pem, "sslrootcert")?,
                None => crate::proxy::upstream::roots(self.test_ca.as_deref())
                    .map_err(|e| format!("cannot load the roots to verify the server with: {e}"))?,
            };
            if mode == SslMode::VerifyFull {
                builder.with_root_certificates(roots).with_no_client_auth()
            } else {
                let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| format!("cannot set up TLS verification: {e}"))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
                    .with_no_client_auth()
            }
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified { provider }))
                .with_no_client_auth()
        };
        Ok(Some(Arc::new(config)))
    }
}

impl Service for Postgres {
    type Shared = Login;
    const WHAT: &'static str = "PostgreSQL socket";
    /// Connection pools open tens.
    const MAX_CONNECTIONS: usize = 128;
    /// Root in the sandbox (an entrypoint running migrations) may connect too.
    const ALLOW_ROOT: bool = true;

    fn serves(seal: &AgentSeal) -> bool {
        matches!(seal.service, SealService::Relay { protocol: RelayProtocol::Postgres })
    }

    fn socket_path(dir: &Path, name: &str) -> PathBuf {
        dir.join(SUBDIR).join(name).join(format!(".s.PGSQL.{PG_RELAY_PORT}"))
    }

    fn open(&self, e: &Entry) -> Result<Login, String> {
        let field = |f: &str| e.material.fields.get(f).map(|v| v.expose());
        let need = |f: &str| field(f).ok_or_else(|| format!("its {f} field is missing"));
        let user = need("user")?.to_owned();
        let port = field("port")
            .unwrap_or("5432")
            .parse()
            .map_err(|_| "its port field is not a port".to_owned())?;
        let sslmode = SslMode::parse(field("sslmode"))?;
        Ok(Login {
            name: e.material.name.clone(),
            host: need("host")?.to_owned(),
            port,
            database: field("database").unwrap_or(&user).to_owned(),
            user,
            password: e
                .material
                .fields
                .get("password")
                .cloned()
                .ok_or("its password is missing")?,
            sslmode,
            tls: self.tls(sslmode, field("sslrootcert"))?,
            usage: self.usage.clone(),
        })
    }

    fn connection(
        shared: Arc<Login>,
        stream: UnixStream,
        uid: u32,
        pid: Option<u32>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        serve(shared, stream, uid, pid)
    }
}

/// Why a connection is refused: told to the client as a PostgreSQL error.
#[derive(Debug)]
struct Refusal {
    /// SQLSTATE.
    code: &'static str,
    message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal { code, message: message.into() }
}

/// What the client sent first.
enum Startup {
    /// A normal startup: protocol minor version and parameters.
    Login { minor: u16, parameters: Vec<(String, String)> },
    /// A CancelRequest's 16 bytes, to pass on.
    Cancel([u8; 16]),
}

/// An ErrorResponse (severity FATAL). postgres-protocol encodes only frontend messages, so this
/// one backend message is written here.
fn error_response(code: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(message.len() + 32);
    for (field, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', code), (b'M', message)] {
        body.push(field);
        // A NUL would end the field early; none of ours has one, a client's name might.
        body.extend(value.bytes().filter(|b| *b != 0));
        body.push(0);
    }
    body.push(0);
    let mut out = vec![b'E'];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// AuthenticationOk.
const AUTHENTICATION_OK: [u8; 9] = [b'R', 0, 0, 0, 8, 0, 0, 0, 0];

/// NegotiateProtocolVersion: the server side speaks 3.0, and `unknown` options are not known.
fn negotiate_protocol_version(unknown: &[String]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&0u32.to_be_bytes());
    body.extend_from_slice(&(unknown.len() as u32).to_be_bytes());
    for o in unknown {
        body.extend(o.bytes());
        body.push(0);
    }
    let mut out = vec![b'v'];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Reads the client's startup (after any SSLRequest/GSSENCRequest, answered `N`).
async fn read_startup(client: &mut UnixStream) -> Result<Startup, Refusal> {
    let bad = |why: &str| refuse("08P01", format!("invalid startup packet: {why}"));
    for _ in 0..=MAX_NEGOTIATIONS {
        let mut len = [0u8; 4];
        client.read_exact(&mut len).await.map_err(|_| bad("the connection ended"))?;
        let len = u32::from_be_bytes(len) as usize;
        if !(8..=MAX_STARTUP).contains(&len) {
            return Err(bad(&format!("its length {len} is not between 8 and {MAX_STARTUP}")));
        }
        let mut body = Zeroizing::new(vec![0u8; len - 4]);
        client.read_exact(&mut body).await.map_err(|_| bad("the connection ended"))?;
        let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        match code {
            SSL_REQUEST | GSSENC_REQUEST if len == 8 => {
                client.write_all(b"N").await.map_err(|_| bad("the connection ended"))?;
            }
            CANCEL_REQUEST if len == 16 => {
                let mut packet = [0u8; 16];
                packet[..4].copy_from_slice(&16u32.to_be_bytes());
                packet[4..].copy_from_slice(&body);
                return Ok(Startup::Cancel(packet));
            }
            v if v >> 16 == 3 => {
                return Ok(Startup::Login {
                    minor: (v & 0xffff) as u16,
                    parameters: parameters(&body[4..]).map_err(bad)?,
                });
            }
            v => {
                return Err(refuse(
                    "0A000",
                    format!(
                        "unsupported frontend protocol {}.{}: the relay speaks 3.0",
                        v >> 16,
                        v & 0xffff
                    ),
                ));
            }
        }
    }
    Err(bad("too many SSL or GSS encryption requests"))
}

/// The name/value pairs of a startup packet (NUL-terminated strings, an empty name last).
fn parameters(mut rest: &[u8]) -> Result<Vec<(String, String)>, &'static str> {
    let mut out = Vec::new();
    let next = |rest: &mut &[u8]| -> Result<String, &'static str> {
        let end = rest.iter().position(|b| *b == 0).ok_or("a parameter is not terminated")?;
        let s = std::str::from_utf8(&rest[..end]).map_err(|_| "a parameter is not UTF-8")?;
        *rest = &rest[end + 1..];
        Ok(s.to_owned())
    };
    loop {
        let name = next(&mut rest)?;
        if name.is_empty() {
            return if rest.is_empty() { Ok(out) } else { Err("bytes after the parameters") };
        }
        if out.len() >= MAX_PARAMETERS {
            return Err("too many parameters");
        }
        let value = next(&mut rest)?;
        out.push((name, value));
    }
}

/// Checks the client's user and database against the secret's.
fn check_target(login: &Login, parameters: &[(String, String)]) -> Result<(), Refusal> {
    let get = |k: &str| parameters.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let Some(user) = get("user").filter(|u| !u.is_empty()) else {
        return Err(refuse("28000", "no PostgreSQL user name specified in startup packet"));
    };
    let name = &login.name;
    if user != login.user {
        return Err(refuse(
            "28000",
            format!(
                "the sealed secret {name} logs in as user \"{}\" only, not \"{user}\"; connect as \"{}\" (PGUSER is set to it)",
                login.user, login.user
            ),
        ));
    }
    let database = get("database").filter(|d| !d.is_empty()).unwrap_or(user);
    if database != login.database {
        return Err(refuse(
            "28000",
            format!(
                "the sealed secret {name} serves database \"{}\" only, not \"{database}\"; connect to \"{}\" (PGDATABASE and DATABASE_URL name it)",
                login.database, login.database
            ),
        ));
    }
    if get("replication").is_some_and(|r| !matches!(r, "false" | "off" | "no" | "0")) {
        return Err(refuse(
            "28000",
            format!(
                "the sealed secret {name} does not relay replication connections; use a plain secret for pg_basebackup or logical replication"
            ),
        ));
    }
    Ok(())
}

/// Writes the record of a connection's end when dropped: also when a revocation aborts its task.
struct EndRecord {
    login: Arc<Login>,
    peer: Peer,
    started: Instant,
    how: &'static str,
}

impl Drop for EndRecord {
    fn drop(&mut self) {
        let l = &self.login;
        let detail = format!(
            "postgres connection to database {} as {} on {}:{} ended after {} ms ({})",
            l.database,
            l.user,
            l.host,
            l.port,
            self.started.elapsed().as_millis(),
            self.how
        );
        // Already served: a full queue loses this record, not the connection.
        let _ = l.usage.push(report(&self.peer, UsageAction::Injected, Some(&l.name), detail));
    }
}

/// Serves one client connection until it ends or the task is aborted.
async fn serve(login: Arc<Login>, mut client: UnixStream, uid: u32, pid: Option<u32>) {
    let startup = tokio::time::timeout(STARTUP_TIMEOUT, read_startup(&mut client)).await;
    let startup = match startup {
        Ok(Ok(s)) => s,
        Ok(Err(r)) => return tell(&mut client, &r).await,
        Err(_) => {
            let r = refuse("08P01", "the client sent no startup packet in time");
            return tell(&mut client, &r).await;
        }
    };
    let peer = tokio::task::spawn_blocking(move || Peer::identify(uid, pid))
        .await
        .unwrap_or_else(|_| Peer::identify(uid, None));
    let (minor, parameters) = match startup {
        Startup::Cancel(packet) => return cancel(&login, &peer, packet).await,
        Startup::Login { minor, parameters } => (minor, parameters),
    };
    if let Err(r) = check_target(&login, &parameters) {
        tracing::warn!(secret = %login.name, uid, pid, "postgres connection refused: {}", r.message);
        login.usage.push_denial(report(
            &peer,
            UsageAction::Denied,
            Some(&login.name),
            format!("postgres connection refused: {}", r.message),
        ));
        return tell(&mut client, &r).await;
    }
    // Fail closed: a connection that cannot be recorded is not made.
    let detail = format!(
        "postgres connection to database {} as {} on {}:{}",
        login.database, login.user, login.host, login.port
    );
    if login.usage.push(report(&peer, UsageAction::Injected, Some(&login.name), detail)).is_err() {
        let r = refuse(
            "53000",
            "the maestro agent cannot record this connection (its usage queue is full); try again in a moment",
        );
        return tell(&mut client, &r).await;
    }
    let mut end = EndRecord {
        login: login.clone(),
        peer,
        started: Instant::now(),
        how: "closed by the agent: the secret is no longer active",
    };
    // `_pq_.` options are protocol extensions the relay does not speak: dropped towards the
    // server, and named to the client as unknown, as a 3.0 server does.
    let (unknown, forwarded): (Vec<_>, Vec<_>) =
        parameters.into_iter().partition(|(n, _)| n.starts_with("_pq_."));
    let mut server = match tokio::time::timeout(SERVER_TIMEOUT, log_in(&login, &forwarded)).await {
        Ok(Ok(s)) => s,
        Ok(Err(LoginError::Server(raw))) => {
            end.how = "the server refused the log-in";
            let _ = client.write_all(&raw).await;
            return;
        }
        Ok(Err(LoginError::Refused(r))) => {
            end.how = "the relay could not log in";
            tracing::warn!(secret = %login.name, "postgres log-in failed: {}", r.message);
            return tell(&mut client, &r).await;
        }
        Err(_) => {
            end.how = "the server did not answer in time";
            let r = refuse(
                "08001",
                format!(
                    "the server {}:{} did not complete the log-in within {} s",
                    login.host,
                    login.port,
                    SERVER_TIMEOUT.as_secs()
                ),
            );
            return tell(&mut client, &r).await;
        }
    };
    let mut hello = Vec::new();
    if minor != 0 || !unknown.is_empty() {
        let names: Vec<String> = unknown.into_iter().map(|(n, _)| n).collect();
        hello.extend(negotiate_protocol_version(&names));
    }
    hello.extend_from_slice(&AUTHENTICATION_OK);
    if client.write_all(&hello).await.is_err() {
        end.how = "closed by the client";
        return;
    }
    end.how = match tokio::io::copy_bidirectional(&mut client, &mut server).await {
        Ok(_) => "closed by the client or the server",
        Err(_) => "the connection failed",
    };
}

/// Sends a refusal to the client and ends the connection.
async fn tell(client: &mut UnixStream, r: &Refusal) {
    let _ = client.write_all(&error_response(r.code, &r.message)).await;
    let _ = client.shutdown().await;
}

/// The server connection, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Upstream = Pin<Box<dyn Io>>;

enum LoginError {
    /// The server's own ErrorResponse, to pass on as it is.
    Server(Vec<u8>),
    Refused(Refusal),
}

impl From<Refusal> for LoginError {
    fn from(r: Refusal) -> Self {
        LoginError::Refused(r)
    }
}

/// Connects to the server, with TLS as `sslmode` asks.
async fn connect(login: &Login) -> Result<(Upstream, bool), Refusal> {
    let at = format!("{}:{}", login.host, login.port);
    let unreachable = |e: io::Error| {
        refuse("08001", format!("the relay cannot reach the PostgreSQL server {at}: {e}"))
    };
    let mut tcp =
        TcpStream::connect((login.host.as_str(), login.port)).await.map_err(unreachable)?;
    let _ = tcp.set_nodelay(true);
    let Some(tls) = &login.tls else { return Ok((Box::pin(tcp), false)) };
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    tcp.write_all(&request).await.map_err(unreachable)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(unreachable)?;
    match answer[0] {
        b'S' => {}
        b'N' if !login.sslmode.required() => return Ok((Box::pin(tcp), false)),
        b'N' => {
            return Err(refuse(
                "08001",
                format!(
                    "the PostgreSQL server {at} does not do TLS, which sslmode {:?} requires",
                    login.sslmode
                ),
            ));
        }
        _ => return Err(refuse("08P01", format!("the server {at} answered SSLRequest wrongly"))),
    }
    let name = ServerName::try_from(login.host.clone())
        .map_err(|_| refuse("08001", format!("'{}' is not a host name for TLS", login.host)))?;
    let tls = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| refuse("08001", format!("TLS with the PostgreSQL server {at} failed: {e}")))?;
    Ok((Box::pin(tls), login.sslmode.verified()))
}

/// Reads one backend message (tag, length, body) of at most `max` bytes, as received.
async fn read_message(server: &mut Upstream, max: usize) -> Result<Vec<u8>, Refusal> {
    let lost = |_| refuse("08006", "the PostgreSQL server closed the connection during log-in");
    let mut head = [0u8; 5];
    server.read_exact(&mut head).await.map_err(lost)?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if !(4..=max).contains(&len) {
        return Err(refuse(
            "08P01",
            format!("the server sent a message of {len} bytes during log-in"),
        ));
    }
    let mut raw = Vec::with_capacity(len + 1);
    raw.extend_from_slice(&head);
    raw.resize(len + 1, 0);
    server.read_exact(&mut raw[5..]).await.map_err(lost)?;
    Ok(raw)
}

/// Sends `buf` to the server and wipes it (it may hold the password or a hash of it).
async fn send_secret(server: &mut Upstream, mut buf: BytesMut) -> Result<(), Refusal> {
    let sent = server.write_all(&buf).await;
    buf.as_mut().zeroize();
    sent.map_err(|_| refuse("08006", "the PostgreSQL server closed the connection during log-in"))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Connects and logs in to the server with the secret's password; the server stream once it
/// said AuthenticationOk.
async fn log_in(login: &Login, parameters: &[(String, String)]) -> Result<Upstream, LoginError> {
    let (mut server, verified) = connect(login).await?;
    let mut buf = BytesMut::new();
    frontend::startup_message(parameters.iter().map(|(n, v)| (n.as_str(), v.as_str())), &mut buf)
        .map_err(|e| refuse("08P01", format!("cannot encode the startup: {e}")))?;
    server
        .write_all(&buf)
        .await
        .map_err(|_| refuse("08006", "the PostgreSQL server closed the connection"))?;
    let password = login.password.expose().as_bytes();
    let mut scram: Option<ScramSha256> = None;
    let mut scram_done = false;
    let unexpected = |what: &str| {
        LoginError::Refused(refuse(
            "08P01",
            format!(
                "the PostgreSQL server sent {what} during log-in, which the relay does not answer"
            ),
        ))
    };
    loop {
        let raw = read_message(&mut server, MAX_AUTH_MESSAGE).await?;
        match raw[0] {
            b'E' => return Err(LoginError::Server(raw)),
            // A NoticeResponse or NegotiateProtocolVersion (not expected: the startup is 3.0
            // without options): nothing to answer.
            b'N' | b'v' => continue,
            _ => {}
        }
        let mut bytes = BytesMut::from(&raw[..]);
        let message = Message::parse(&mut bytes)
            .map_err(|e| refuse("08P01", format!("the server sent a malformed message: {e}")))?
            .ok_or_else(|| refuse("08P01", "the server sent a truncated message"))?;
        let mut out = BytesMut::new();
        let encode = |e: io::Error| refuse("08P01", format!("cannot encode the answer: {e}"));
        match message {
            Message::AuthenticationOk => {
                if scram.is_some() && !scram_done {
                    return Err(refuse(
                        "28000",
                        "the PostgreSQL server ended SCRAM without proving it knows the password; not logged in",
                    )
                    .into());
                }
                return Ok(server);
            }
            Message::AuthenticationCleartextPassword => {
                if !verified && !is_loopback(&login.host) {
                    return Err(refuse(
                        "28000",
                        format!(
                            "the server {}:{} asks for the password in clear text but was not verified; set the secret's sslmode to verify-full (or use SCRAM on the server)",
                            login.host, login.port
                        ),
                    )
                    .into());
                }
                frontend::password_message(password, &mut out).map_err(encode)?;
            }
            Message::AuthenticationMd5Password(body) => {
                let hash = Zeroizing::new(md5_hash(login.user.as_bytes(), password, body.salt()));
                frontend::password_message(hash.as_bytes(), &mut out).map_err(encode)?;
            }
            Message::AuthenticationSasl(body) => {
                let mut mechanisms = body.mechanisms();
                let mut scram_offered = false;
                while let Ok(Some(m)) = mechanisms.next() {
                    scram_offered |= m == SCRAM_SHA_256;
                }
                if !scram_offered || scram.is_some() {
                    return Err(unexpected("a SASL mechanism other than SCRAM-SHA-256"));
                }
                // No channel binding: the relay does not check the server's certificate hash.
                let s = ScramSha256::new(password, ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)
                    .map_err(encode)?;
                scram = Some(s);
            }
            Message::AuthenticationSaslContinue(body) => {
                let s = scram.as_mut().ok_or_else(|| unexpected("SASL data out of turn"))?;
                s.update(body.data())
                    .map_err(|e| refuse("08P01", format!("SCRAM with the server failed: {e}")))?;
                frontend::sasl_response(s.message(), &mut out).map_err(encode)?;
            }
            Message::AuthenticationSaslFinal(body) => {
                let s = scram.as_mut().ok_or_else(|| unexpected("SASL data out of turn"))?;
                s.finish(body.data()).map_err(|e| {
                    refuse(
                        "28000",
                        format!(
                            "the PostgreSQL server's SCRAM proof is wrong ({e}); not logged in"
                        ),
                    )
                })?;
                scram_done = true;
                continue;
            }
            Message::AuthenticationGss
            | Message::AuthenticationGssContinue(_)
            | Message::AuthenticationSspi
            | Message::AuthenticationKerberosV5
            | Message::AuthenticationScmCredential => {
                return Err(unexpected("a GSSAPI, SSPI or Kerberos request"));
            }
            _ => return Err(unexpected("a message that is not part of authentication")),
        }
        send_secret(&mut server, out).await?;
    }
}

/// Passes a CancelRequest on to the server (it carries no password: the key the server gave
/// the client's own connection is the authority) and records it.
async fn cancel(login: &Login, peer: &Peer, packet: [u8; 16]) {
    let detail = format!("postgres cancel request to {}:{}", login.host, login.port);
    if login.usage.push(report(peer, UsageAction::Injected, Some(&login.name), detail)).is_err() {
        return;
    }
    let sent = tokio::time::timeout(SERVER_TIMEOUT, async {
        let (mut server, _) = connect(login).await.ok()?;
        server.write_all(&packet).await.ok()?;
        // The server closes the connection when it has read the request.
        let mut rest = [0u8; 1];
        let _ = server.read(&mut rest).await;
        Some(())
    })
    .await;
    if !matches!(sent, Ok(Some(()))) {
        tracing::warn!(secret = %login.name, "a postgres cancel request did not reach the server");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login() -> Arc<Login> {
        Arc::new(Login {
            name: "PG".into(),
            host: "127.0.0.1".into(),
            port: 1,
            user: "app".into(),
            password: SecretValue::from("planted-password"),
            database: "appdb".into(),
            sslmode: SslMode::Disable,
            tls: None,
            usage: UsageQueue::new(64),
        })
    }

    fn startup(params: &[(&str, &str)], version: u32) -> Vec<u8> {
        let mut body = version.to_be_bytes().to_vec();
        for (k, v) in params {
            body.extend(k.bytes().chain([0]).chain(v.bytes()).chain([0]));
        }
        body.push(0);
        let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        out.extend(body);
        out
    }

    /// Runs one connection with `input` from the client: everything it answered.
    async fn answer(login: &Arc<Login>, input: Vec<u8>) -> Vec<u8> {
        let (mut c, s) = UnixStream::pair().unwrap();
        let task = tokio::spawn(serve(login.clone(), s, 1000, None));
        c.write_all(&input).await.unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(15), c.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "the relay kept the connection open");
        let _ = task.await;
        out
    }

    fn message_of(out: &[u8]) -> String {
        assert_eq!(out.first(), Some(&b'E'), "{out:?}");
        String::from_utf8_lossy(out).into_owned()
    }

    #[tokio::test]
    async fn another_user_or_database_is_refused_with_an_error_the_client_prints() {
        let l = login();
        let out = answer(&l, startup(&[("user", "postgres"), ("database", "appdb")], 196608)).await;
        let text = message_of(&out);
        assert!(text.contains("logs in as user \"app\" only, not \"postgres\""), "{text}");
        let out = answer(&l, startup(&[("user", "app"), ("database", "other")], 196608)).await;
        assert!(message_of(&out).contains("serves database \"appdb\" only, not \"other\""));
        // No database: the user's name, as the server has it.
        let out = answer(&l, startup(&[("user", "app")], 196608)).await;
        assert!(message_of(&out).contains("not \"app\""));
        let out = answer(
            &l,
            startup(&[("user", "app"), ("database", "appdb"), ("replication", "true")], 196608),
        )
        .await;
        assert!(message_of(&out).contains("replication"));
        let records = l.usage.take(10);
        assert!(records.iter().all(|r| r.action == UsageAction::Denied), "{records:?}");
        assert!(!records.is_empty());
    }

    #[tokio::test]
    async fn ssl_and_gss_requests_get_n_then_oversized_or_garbled_startups_are_refused() {
        let l = login();
        let mut input = vec![0, 0, 0, 8, 4, 210, 22, 47];
        input.extend([0, 0, 0, 8, 4, 210, 22, 48]);
        input.extend(startup(&[("user", "x")], 196608));
        let out = answer(&l, input).await;
        assert_eq!(&out[..2], b"NN");
        assert!(message_of(&out[2..]).contains("not \"x\""));
        // Over PostgreSQL's limit: refused before reading on.
        let mut big = ((MAX_STARTUP + 1) as u32).to_be_bytes().to_vec();
        big.extend([0, 3, 0, 0]);
        assert!(message_of(&answer(&l, big).await).contains("invalid startup packet"));
        // A protocol nobody speaks; a packet without its terminator; a length under 8.
        let out = answer(&l, startup(&[("user", "app")], 0x0002_0000)).await;
        assert!(message_of(&out).contains("unsupported frontend protocol 2.0"));
        let mut cut = startup(&[("user", "app")], 196608);
        cut.pop();
        cut.pop();
        let n = cut.len() as u32;
        cut[..4].copy_from_slice(&n.to_be_bytes());
        assert!(message_of(&answer(&l, cut).await).contains("invalid startup packet"));
        assert!(message_of(&answer(&l, vec![0, 0, 0, 3]).await).contains("invalid startup"));
        // Garbage.
        let out = answer(&l, b"GET / HTTP/1.1\r\n\r\n".to_vec()).await;
        assert!(message_of(&out).contains("invalid startup packet"));
    }

    #[tokio::test]
    async fn a_silent_client_is_closed_after_the_startup_timeout() {
        let l = login();
        let (mut c, s) = UnixStream::pair().unwrap();
        let task = tokio::spawn(serve(l, s, 1000, None));
        c.write_all(&[0, 0]).await.unwrap();
        let mut out = Vec::new();
        c.read_to_end(&mut out).await.unwrap();
        assert!(message_of(&out).contains("no startup packet in time"));
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_server_that_cannot_be_reached_is_named_and_the_connection_recorded() {
        let l = login();
        let out = answer(&l, startup(&[("user", "app"), ("database", "appdb")], 196608)).await;
        let text = message_of(&out);
        assert!(text.contains("cannot reach the PostgreSQL server 127.0.0.1:1"), "{text}");
        assert!(!text.contains("planted"));
        let details: Vec<String> = l.usage.take(10).into_iter().filter_map(|r| r.detail).collect();
        assert_eq!(details.len(), 2, "{details:?}");
        assert!(details[0].starts_with("postgres connection to database appdb as app"));
        assert!(details[1].contains("ended after"), "{details:?}");
    }

    #[test]
    fn paths_and_messages() {
        assert_eq!(
            Postgres::socket_path(Path::new("/run/maestro"), "PG_APP"),
            Path::new("/run/maestro/pg/PG_APP/.s.PGSQL.5432")
        );
        let e = error_response("28000", "no\0pe");
        assert_eq!(e[0], b'E');
        assert_eq!(u32::from_be_bytes([e[1], e[2], e[3], e[4]]) as usize, e.len() - 1);
        assert!(e.windows(4).any(|w| w == b"nope"));
        assert_eq!(parameters(b"user\0a\0\0").unwrap(), [("user".into(), "a".into())]);
        assert!(parameters(b"user\0a\0\0x").is_err());
        assert!(parameters(b"user\0a").is_err());
        assert!(is_loopback("127.0.0.1") && is_loopback("::1") && !is_loopback("db.example"));
        assert_eq!(SslMode::parse(None), Ok(SslMode::Prefer));
        assert!(SslMode::parse(Some("verify-ful")).is_err());
    }
}
