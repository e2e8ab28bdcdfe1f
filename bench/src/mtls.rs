//! Light mTLS clients for holding many connections open: one TCP connection, one TLS session
//! with a session certificate from the broker's CA, and a hand-written HTTP/1.1 request.
//!
//! A reqwest client per agent would cost the bench more memory than the broker spends per
//! stream; these cost one rustls connection and a small task each, so 10,000 of them fit. Each
//! is what an agent holds: its own connection, its own certificate, its own event stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

/// Longest response head (and snapshot) read before giving up on a connection.
const MAX_HEAD_BYTES: usize = 256 * 1024;
/// How long one connection may take to be set up.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// A session certificate and its key, PEM.
#[derive(Clone)]
pub struct Identity {
    pub session_id: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A TLS client configuration that trusts `ca_pem` and presents `identity`, speaking HTTP/1.1.
pub fn client_config(ca_pem: &str, identity: &Identity) -> anyhow::Result<Arc<ClientConfig>> {
    crate::fixture::init_crypto();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.context("the CA PEM is bad")?).context("the CA certificate is bad")?;
    }
    let chain = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("the session certificate PEM is bad")?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
        .context("the session key PEM is bad")?;
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .context("the session certificate and key do not go together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> anyhow::Result<Tls> {
    let tcp = TcpStream::connect(addr).await.context("cannot connect to the broker")?;
    tcp.set_nodelay(true).context("cannot set TCP_NODELAY")?;
    let name = ServerName::IpAddress(addr.ip().into());
    TlsConnector::from(config).connect(name, tcp).await.context("the TLS handshake failed")
}

/// Reads until `done` says the bytes so far are complete; returns them.
async fn read_until(tls: &mut Tls, done: impl Fn(&[u8]) -> bool) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    while !done(&buf) {
        let n = tls.read(&mut chunk).await.context("cannot read from the broker")?;
        if n == 0 {
            bail!("the broker closed the connection: {}", String::from_utf8_lossy(&buf));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_HEAD_BYTES {
            bail!("the broker's answer is larger than {MAX_HEAD_BYTES} bytes");
        }
    }
    Ok(buf)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// An open event stream, read in the background.
pub struct HeldStream {
    task: JoinHandle<()>,
    /// When an `ended` event arrived, once it has.
    ended: watch::Receiver<Option<Instant>>,
}

impl HeldStream {
    /// Opens `GET /v1/agent/events` and reads up to its snapshot.
    pub async fn open(addr: SocketAddr, config: Arc<ClientConfig>) -> anyhow::Result<HeldStream> {
        tokio::time::timeout(OPEN_TIMEOUT, Self::open_inner(addr, config))
            .await
            .context("opening an event stream timed out")?
    }

    async fn open_inner(addr: SocketAddr, config: Arc<ClientConfig>) -> anyhow::Result<HeldStream> {
        let mut tls = connect(addr, config).await?;
        let request = format!(
            "GET /v1/agent/events HTTP/1.1\r\nHost: {addr}\r\nAccept: application/x-ndjson\r\n\r\n"
        );
        tls.write_all(request.as_bytes()).await.context("cannot send the request")?;
        // tokio-rustls may keep the last TLS record buffered until flushed.
        tls.flush().await.context("cannot send the request")?;
        let head = read_until(&mut tls, |b| {
            contains(b, b"\r\n\r\n")
                && (!b.starts_with(b"HTTP/1.1 200") || contains(b, b"\"type\":\"snapshot\""))
        })
        .await?;
        if !head.starts_with(b"HTTP/1.1 200") {
            let text = String::from_utf8_lossy(&head);
            bail!("the broker refused the event stream: {}", text.lines().next().unwrap_or(""));
        }
        let (tx, ended) = watch::channel(None);
        let task = tokio::spawn(async move {
            // Keep the last bytes of each read, so a marker split across two reads is found.
            let mut tail: Vec<u8> = Vec::new();
            let mut chunk = vec![0u8; 4096];
            loop {
                match tls.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        tail.extend_from_slice(&chunk[..n]);
                        if contains(&tail, b"\"type\":\"ended\"") {
                            let _ = tx.send(Some(Instant::now()));
                        }
                        let keep = tail.len().saturating_sub(32);
                        tail.drain(..keep);
                    }
                }
            }
        });
        Ok(HeldStream { task, ended })
    }

    /// Waits for the `ended` event; returns when it arrived.
    pub async fn wait_ended(&mut self, timeout: Duration) -> anyhow::Result<Instant> {
        let seen = tokio::time::timeout(timeout, self.ended.wait_for(Option::is_some))
            .await
            .context("no `ended` event arrived")?
            .context("the stream closed without an `ended` event")?;
        (*seen).context("the stream closed without an `ended` event")
    }
}

impl Drop for HeldStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An idle keep-alive connection: one `GET /healthz` answered, then held open.
pub struct IdleConnection {
    task: JoinHandle<()>,
}

impl IdleConnection {
    pub async fn open(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
    ) -> anyhow::Result<IdleConnection> {
        let open = async {
            let mut tls = connect(addr, config).await?;
            let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
            tls.write_all(request.as_bytes()).await.context("cannot send the request")?;
            tls.flush().await.context("cannot send the request")?;
            let answer = read_until(&mut tls, |b| contains(b, b"\"ok\"")).await?;
            if !answer.starts_with(b"HTTP/1.1 200") {
                bail!("/healthz did not answer 200");
            }
            Ok::<_, anyhow::Error>(tls)
        };
        let mut tls = tokio::time::timeout(OPEN_TIMEOUT, open)
            .await
            .context("opening an idle connection timed out")??;
        let task = tokio::spawn(async move {
            let mut chunk = [0u8; 512];
            while matches!(tls.read(&mut chunk).await, Ok(n) if n > 0) {}
        });
        Ok(IdleConnection { task })
    }
}

impl Drop for IdleConnection {
    fn drop(&mut self) {
        self.task.abort();
    }
}
