//! The listener and client connections: who is connecting (refused unless root or the sandbox
//! user), CONNECT (a plain tunnel, or TLS terminated with a session-CA leaf), and absolute-form
//! plain http requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use maestro_wire::agent_api::UsageAction;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Shared;
use super::audit::{self, ConnCtx};
use super::body::{self, ProxyBody};
use super::forward::{self, Target, answer};
use super::hosts;
use super::idle::{Activity, Tracked};
use super::peer;
use crate::dispatch::Peer;

/// Accepts clients until the task is dropped.
pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let slots = Arc::new(tokio::sync::Semaphore::new(shared.limits.max_connections));
    loop {
        let (stream, peer_addr) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("egress proxy: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small writes (a TLS handshake's flights, a short answer) must not wait for the peer's
        // delayed ACK: on loopback that costs 40 ms a round.
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Over the limit: closed at once.
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            serve_client(shared, stream, peer_addr).await;
            drop(slot);
        });
    }
}

/// Counts a uid's open connections while held.
struct UidSlot {
    counts: Arc<Mutex<HashMap<u32, usize>>>,
    uid: u32,
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = c.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.remove(&self.uid);
            }
        }
    }
}

async fn refuse_raw(mut stream: TcpStream, status: &str, line: &str) {
    // Let the client's request head arrive first (briefly, and bounded): an answer written
    // before the client has sent anything is an "unexpected message" to HTTP clients, which then
    // show a transport error instead of the refusal.
    let mut head = [0u8; 8 * 1024];
    let mut got = 0;
    let _ = tokio::time::timeout(std::time::Duration::from_millis(250), async {
        while got < head.len() {
            match stream.read(&mut head[got..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
            if head[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let msg = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{line}\n",
        line.len() + 1
    );
    let _ =
        tokio::time::timeout(std::time::Duration::from_secs(2), stream.write_all(msg.as_bytes()))
            .await;
    let _ = stream.shutdown().await;
}

async fn serve_client(shared: Arc<Shared>, stream: TcpStream, peer_addr: SocketAddr) {
    let Ok(local) = stream.local_addr() else { return };
    let owner =
        tokio::task::spawn_blocking(move || peer::owner_of(peer_addr, local)).await.ok().flatten();
    let Some(owner) = owner else {
        refuse_raw(
            stream,
            "403 Forbidden",
            "maestro proxy: refused: the owner of this connection is unknown",
        )
        .await;
        return;
    };
    if !shared.allowed_uids.contains(&owner.uid) {
        let p = tokio::task::spawn_blocking(move || Peer::identify(owner.uid, peer::pid_of(owner)))
            .await
            .unwrap_or_else(|_| Peer::identify(owner.uid, None));
        shared.usage.push_denial(audit::report(
            &p,
            UsageAction::Denied,
            None,
            format!("egress proxy: uid {} is not root or the sandbox user", owner.uid),
        ));
        let line = format!(
            "maestro proxy: refused: uid {} may not use this proxy; it serves root and the sandbox user only",
            owner.uid
        );
        refuse_raw(stream, "403 Forbidden", &line).await;
        return;
    }
    let uid_slot = {
        let mut c = shared.uid_conns.lock().unwrap_or_else(|e| e.into_inner());
        let n = c.entry(owner.uid).or_insert(0);
        if *n >= shared.limits.max_connections_per_uid {
            None
        } else {
            *n += 1;
            Some(UidSlot { counts: shared.uid_conns.clone(), uid: owner.uid })
        }
    };
    let Some(_uid_slot) = uid_slot else {
        refuse_raw(
            stream,
            "503 Service Unavailable",
            "maestro proxy: too many open connections from this user; close some",
        )
        .await;
        return;
    };
    let conn = Arc::new(ConnCtx::new(owner));
    // While a sealed secret is active every request is recorded with its process: start looking
    // it up now, so the /proc scan overlaps the CONNECT and the TLS handshake instead of
    // delaying the first request.
    if !shared.sealed.load().is_empty() {
        let early = conn.clone();
        tokio::spawn(async move {
            early.peer().await;
        });
    }
    let activity = Activity::new();
    let io = TokioIo::new(Tracked::new(stream, activity.clone()));
    let svc = {
        let shared = shared.clone();
        let conn = conn.clone();
        service_fn(move |req| outer(shared.clone(), conn.clone(), req))
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.header_read_timeout)
        .max_buf_size(shared.limits.max_header_bytes.max(8192));
    let served = builder.serve_connection(io, svc).with_upgrades();
    tokio::select! {
        _ = served => {}
        _ = activity.idle_for(shared.limits.idle_timeout) => {}
    }
}

/// Splits `host:port` (CONNECT's authority form).
fn authority(uri: &http::Uri) -> Option<(String, u16)> {
    let host = uri.host()?;
    Some((hosts::normalize(host), uri.port_u16().unwrap_or(443)))
}

async fn outer(
    shared: Arc<Shared>,
    conn: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    if let Some(host) = req.uri().host()
        && let Some(refusal) = placeholder_in_host(&shared, &conn, req.method(), host).await
    {
        return Ok(refusal);
    }
    if req.method() == Method::CONNECT {
        let Some((host, port)) = authority(req.uri()) else {
            return Ok(answer(StatusCode::BAD_REQUEST, "maestro proxy: CONNECT needs host:port"));
        };
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(up) => tunnel_or_terminate(shared, conn, host, port, up).await,
                Err(e) => tracing::debug!("egress proxy: CONNECT upgrade failed: {e}"),
            }
        });
        return Ok(Response::new(body::empty()));
    }
    if req.uri().scheme() == Some(&http::uri::Scheme::HTTP)
        && let Some(host) = req.uri().host()
    {
        let target = Arc::new(Target {
            host: hosts::normalize(host),
            port: req.uri().port_u16().unwrap_or(80),
            tls: false,
        });
        return forward::handle(shared, conn, target, req).await;
    }
    Ok(answer(
        StatusCode::BAD_REQUEST,
        "maestro proxy: this is a forward proxy: send CONNECT host:port, or http:// requests in absolute form",
    ))
}

/// A placeholder in a host name would leave through DNS: refused and recorded.
async fn placeholder_in_host(
    shared: &Arc<Shared>,
    conn: &Arc<ConnCtx>,
    method: &Method,
    host: &str,
) -> Option<Response<ProxyBody>> {
    let active = shared.sealed.load_full();
    if active.is_empty() {
        return None;
    }
    // Host names are case-insensitive (clients lowercase them): so is this comparison.
    let host = host.to_ascii_lowercase();
    let secret = active.secrets.iter().find(|s| {
        s.swaps
            .iter()
            .map(|w| w.placeholder.as_str())
            .chain(s.sigv4.as_ref().map(|k| k.placeholder_key_id.as_str()))
            .any(|p| host.contains(&p.to_ascii_lowercase()))
    })?;
    let name = secret.name.as_str();
    let peer = conn.peer().await;
    audit::leak(
        &shared.usage,
        peer,
        name,
        format!("{method} (host name withheld): placeholder in the host name"),
    );
    Some(answer(
        StatusCode::FORBIDDEN,
        &format!(
            "maestro proxy: refused: the host name carries the placeholder of sealed secret {name}; \
             the attempt is recorded"
        ),
    ))
}

async fn tunnel_or_terminate(
    shared: Arc<Shared>,
    conn: Arc<ConnCtx>,
    host: String,
    port: u16,
    upgraded: hyper::upgrade::Upgraded,
) {
    let activity = Activity::new();
    let client = Tracked::new(TokioIo::new(upgraded), activity.clone());
    let active = shared.sealed.load();
    if active.is_empty() || hosts::matches_any(&shared.pass_through, &host) {
        let Ok(upstream) = shared.connector.connect(&host, port).await else { return };
        let mut client = client;
        let mut upstream = upstream;
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
            _ = activity.idle_for(shared.limits.idle_timeout) => {}
        }
        return;
    }
    drop(active);
    let config = match shared.ca.server_config(&host) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("egress proxy: {e}");
            return;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let tls =
        match tokio::time::timeout(shared.limits.tls_handshake_timeout, acceptor.accept(client))
            .await
        {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                tracing::debug!("egress proxy: TLS handshake with a client for {host} failed: {e}");
                return;
            }
            Err(_) => return,
        };
    let target = Arc::new(Target { host, port, tls: true });
    let svc = {
        let shared = shared.clone();
        service_fn(move |req| forward::handle(shared.clone(), conn.clone(), target.clone(), req))
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.header_read_timeout)
        .max_buf_size(shared.limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(shared.limits.max_header_bytes as u32)
        .max_concurrent_streams(shared.limits.max_h2_streams);
    let served = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
    tokio::select! {
        _ = served => {}
        _ = activity.idle_for(shared.limits.idle_timeout) => {}
    }
}
