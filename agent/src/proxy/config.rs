//! The proxy's settings, limits and timeouts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::usage::UsageQueue;

/// Everything [`super::Proxy::start`] needs.
pub struct ProxyConfig {
    /// Where to listen: a loopback address; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The uids served (root and the sandbox user); any other owner of a connecting socket is
    /// refused and recorded as a denial.
    pub allowed_uids: Vec<u32>,
    /// Host patterns that always get a plain CONNECT tunnel (clients that pin certificates).
    pub pass_through: Vec<String>,
    /// Where substitutions, leak attempts and denials are recorded.
    pub usage: Arc<UsageQueue>,
    pub limits: Limits,
    /// TEST ONLY: connect to this address instead of resolving a host matching the pattern.
    /// The agent sets it only from its hidden `--test-only-upstream` flag, with a warning.
    pub test_only_upstreams: Vec<(String, SocketAddr)>,
    /// TEST ONLY: one more root (PEM) trusted for upstream connections, beside the system roots.
    pub test_only_upstream_ca: Option<String>,
}

impl ProxyConfig {
    /// Defaults: 127.0.0.1 on a free port, default limits, no pass-through, no test overrides.
    pub fn new(allowed_uids: Vec<u32>, usage: Arc<UsageQueue>) -> Self {
        ProxyConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            allowed_uids,
            pass_through: Vec::new(),
            usage,
            limits: Limits::default(),
            test_only_upstreams: Vec::new(),
            test_only_upstream_ca: None,
        }
    }
}

/// Bounds on everything a client can make the proxy hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Request line and headers of one request (HTTP/1.1 read buffer; HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Open client connections, in all.
    pub max_connections: usize,
    /// Open client connections of one uid.
    pub max_connections_per_uid: usize,
    /// Concurrent HTTP/2 streams on one client connection.
    pub max_h2_streams: u32,
    /// A connection (or tunnel) with no byte moving either way is closed after this.
    pub idle_timeout: Duration,
    /// Time for a client to send a request's headers.
    pub header_read_timeout: Duration,
    /// Time for a client to finish the TLS handshake with the proxy.
    pub tls_handshake_timeout: Duration,
    /// Time to connect (TCP and TLS) to an upstream host.
    pub upstream_connect_timeout: Duration,
    /// Time for an upstream host to answer with response headers.
    pub upstream_response_timeout: Duration,
    /// Pooled upstream connections are closed after this long unused.
    pub upstream_pool_idle: Duration,
    /// Form and JSON bodies up to this size are buffered and substituted whole; bigger ones
    /// stream through the streaming replacer. Also the most an AWS body to hash may be.
    pub max_buffered_body: usize,
    /// Leaf certificates kept (one per host).
    pub leaf_cache: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_connections: 1024,
            max_connections_per_uid: 512,
            max_h2_streams: 128,
            idle_timeout: Duration::from_secs(300),
            header_read_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            upstream_connect_timeout: Duration::from_secs(10),
            upstream_response_timeout: Duration::from_secs(600),
            upstream_pool_idle: Duration::from_secs(90),
            max_buffered_body: 1024 * 1024,
            leaf_cache: 1024,
        }
    }
}
