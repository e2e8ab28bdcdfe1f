//! Connections to the real hosts: TLS verified against the system roots (read with
//! `rustls-native-certs`, i.e. the image's own CA bundle, corporate roots included), h2 or
//! HTTP/1.1 by ALPN, kept alive in a pool (hyper-util's client with hyper-rustls).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;

use super::body::ProxyBody;
use super::config::{Limits, ProxyConfig};
use super::hosts;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The pooled upstream client.
pub type UpstreamClient = Client<Bounded<HttpsConnector<Connector>>, ProxyBody>;

/// A connector whose whole connection set-up (TCP and the TLS handshake) is bounded in time.
#[derive(Clone)]
pub struct Bounded<S> {
    inner: S,
    timeout: Duration,
}

impl<S> tower_service::Service<Uri> for Bounded<S>
where
    S: tower_service::Service<Uri> + Send + Clone + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let fut = self.inner.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r.map_err(Into::into),
                Err(_) => Err("the upstream connection (TCP and TLS) timed out".into()),
            }
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no trusted root certificates found on this system; install ca-certificates")]
    NoRoots,
    #[error("the --test-only-upstream-ca file holds no usable certificate")]
    TestCa,
}

/// TCP connections: resolves the host (or takes a test-only address), bounded by a timeout.
#[derive(Clone)]
pub struct Connector {
    overrides: Arc<Vec<(String, SocketAddr)>>,
    timeout: Duration,
}

impl Connector {
    pub fn new(config: &ProxyConfig) -> Self {
        Connector {
            overrides: Arc::new(config.test_only_upstreams.clone()),
            timeout: config.limits.upstream_connect_timeout,
        }
    }

    /// Opens a TCP connection to `host:port`.
    pub async fn connect(&self, host: &str, port: u16) -> std::io::Result<TcpStream> {
        let host = hosts::normalize(host);
        let target = self.overrides.iter().find(|(p, _)| hosts::matches(p, &host)).map(|(_, a)| *a);
        let fut = async {
            let stream = match target {
                Some(addr) => TcpStream::connect(addr).await?,
                None => TcpStream::connect((host.as_str(), port)).await?,
            };
            let _ = stream.set_nodelay(true);
            Ok(stream)
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connecting to {host}:{port} timed out"),
            )),
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().to_owned();
            let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            this.connect(&host, port).await.map(TokioIo::new)
        })
    }
}

/// The roots upstream certificates are verified against.
pub fn roots(test_ca: Option<&str>) -> Result<RootCertStore, UpstreamError> {
    let mut store = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = store.add(cert);
    }
    if let Some(pem) = test_ca {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()).flatten() {
            if store.add(cert).is_ok() {
                added += 1;
            }
        }
        if added == 0 {
            return Err(UpstreamError::TestCa);
        }
    }
    if store.is_empty() {
        return Err(UpstreamError::NoRoots);
    }
    Ok(store)
}

/// The pooled client; `http1_only` for requests that upgrade the connection (WebSocket),
/// which HTTP/2 cannot carry.
pub fn client(
    config: &ProxyConfig,
    limits: &Limits,
    http1_only: bool,
) -> Result<UpstreamClient, UpstreamError> {
    let roots = roots(config.test_only_upstream_ca.as_deref())?;
    let mut tls =
        rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    tls.alpn_protocols = if http1_only {
        vec![b"http/1.1".to_vec()]
    } else {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    };
    let https = HttpsConnector::from((Connector::new(config), tls));
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(limits.upstream_pool_idle)
        .pool_max_idle_per_host(32)
        .http2_max_header_list_size(limits.max_header_bytes as u32)
        .build(Bounded { inner: https, timeout: limits.upstream_connect_timeout }))
}
