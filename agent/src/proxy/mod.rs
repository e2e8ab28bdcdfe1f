//! The egress proxy for sealed secrets: an HTTP/HTTPS forward proxy on a loopback port that
//! puts real values in place of placeholders in requests towards the hosts a secret belongs
//! to, re-signs AWS requests, scrubs real values from answers, and refuses (and records) a
//! placeholder headed anywhere else.
//!
//! * [`sealed`]: the set of active sealed secrets the agent hands over, and its index.
//! * [`server`]: listener, caller identity ([`peer`]), CONNECT tunnels and TLS termination
//!   with leaves from the session CA ([`ca`]).
//! * [`forward`]: one request: checks, substitution ([`replace`], [`body`]), AWS ([`sigv4`]),
//!   audit ([`audit`]), the upstream call ([`upstream`]).
//! * [`config`]: settings, limits, timeouts; [`hosts`]: host patterns; [`idle`]: idle timeouts.
//!
//! It runs on its own small runtime thread (two workers): TLS handshakes, leaf signing and
//! body scanning then never delay the agent's own event loop (where deactivation arrives),
//! and the proxy may use both cores under load. [`ProxyHandle::set`] is a pointer swap.

pub mod audit;
pub mod body;
pub mod ca;
pub mod config;
pub mod forward;
pub mod hosts;
pub mod idle;
pub mod peer;
pub mod replace;
pub mod sealed;
pub mod server;
pub mod sigv4;
pub mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

pub use config::{Limits, ProxyConfig};
pub use sealed::{SealedError, SealedSecret, SealedSet, SigV4Keys, Swap};

use crate::usage::UsageQueue;

/// What every connection shares.
pub struct Shared {
    pub sealed: ArcSwap<sealed::Active>,
    pub ca: ca::SessionCa,
    pub client: upstream::UpstreamClient,
    /// For requests that upgrade the connection.
    pub client_h1: upstream::UpstreamClient,
    pub connector: upstream::Connector,
    pub usage: Arc<UsageQueue>,
    pub limits: Limits,
    pub allowed_uids: Vec<u32>,
    pub pass_through: Vec<String>,
    pub uid_conns: Arc<Mutex<HashMap<u32, usize>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {addr} for the egress proxy: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the egress proxy must listen on a loopback address, not {0}")]
    NotLoopback(SocketAddr),
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    #[error(transparent)]
    Upstream(#[from] upstream::UpstreamError),
    #[error("cannot start the egress proxy's thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Starts the proxy.
pub struct Proxy;

impl Proxy {
    /// Binds the listener, makes the session CA, and serves on a thread of its own.
    pub fn start(config: ProxyConfig) -> Result<ProxyHandle, ProxyError> {
        if !config.listen.ip().is_loopback() {
            return Err(ProxyError::NotLoopback(config.listen));
        }
        if !config.test_only_upstreams.is_empty() || config.test_only_upstream_ca.is_some() {
            tracing::warn!(
                "TEST ONLY: the egress proxy sends some hosts to fixed addresses or trusts an extra \
                 upstream CA (--test-only-upstream*); never use this outside tests"
            );
        }
        let listener = std::net::TcpListener::bind(config.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| ProxyError::Listen { addr: config.listen, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ProxyError::Listen { addr: config.listen, source })?;
        let ca = ca::SessionCa::new(config.limits.leaf_cache)?;
        let client = upstream::client(&config, &config.limits, false)?;
        let client_h1 = upstream::client(&config, &config.limits, true)?;
        let shared = Arc::new(Shared {
            sealed: ArcSwap::from_pointee(empty_active()),
            ca,
            client,
            client_h1,
            connector: upstream::Connector::new(&config),
            usage: config.usage.clone(),
            limits: config.limits.clone(),
            allowed_uids: config.allowed_uids.clone(),
            pass_through: config.pass_through.iter().map(|p| hosts::normalize(p)).collect(),
            uid_conns: Arc::new(Mutex::new(HashMap::new())),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("maestro-proxy")
            .enable_all()
            .build()
            .map_err(ProxyError::Thread)?;
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("maestro-proxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!("egress proxy: cannot use its listener: {e}");
                            return;
                        }
                    };
                    tokio::select! {
                        () = server::accept_loop(thread_shared, listener) => {}
                        _ = stop_rx => {}
                    }
                });
                runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            })
            .map_err(ProxyError::Thread)?;
        tracing::info!(%addr, "egress proxy listening");
        Ok(ProxyHandle { shared, addr, stop: Mutex::new(Some(stop_tx)), thread: Some(thread) })
    }
}

fn empty_active() -> sealed::Active {
    // An empty set always indexes.
    match sealed::Active::build(SealedSet::default()) {
        Ok(a) => a,
        Err(_) => unreachable!("an empty sealed set always builds"),
    }
}

/// The running proxy.
pub struct ProxyHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProxyHandle {
    /// Replaces the active sealed secrets. Every request that starts afterwards sees the new set;
    /// a set that cannot be used empties it (no substitution at all) and is reported.
    pub fn set(&self, set: SealedSet) -> Result<(), SealedError> {
        match sealed::Active::build(set) {
            Ok(active) => {
                self.shared.sealed.store(Arc::new(active));
                Ok(())
            }
            Err(e) => {
                self.shared.sealed.store(Arc::new(empty_active()));
                Err(e)
            }
        }
    }

    /// Where the proxy listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The session CA certificate, PEM (its key stays in this process's memory).
    pub fn ca_pem(&self) -> &str {
        self.shared.ca.pem()
    }

    /// Stops serving: no new connection is accepted, open ones end; waits for the thread.
    /// Blocks briefly: call it from a blocking context (e.g. `spawn_blocking` or teardown).
    pub fn shutdown(mut self) {
        self.stop_now();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Stops serving without waiting: the set is emptied (nothing is substituted any more),
    /// no new connection is accepted, and open ones end with the proxy's runtime.
    pub fn stop(&self) {
        self.shared.sealed.store(Arc::new(empty_active()));
        let sender = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(s) = sender {
            let _ = s.send(());
        }
    }

    fn stop_now(&mut self) {
        self.stop();
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.stop_now();
    }
}

#[cfg(test)]
mod tests;
