//! Staying in touch with the broker: the event stream (reconnected with capped, jittered
//! backoff), the lease watchdog that fails closed, and certificate renewal.
//!
//! Every line from the broker counts as contact. The stream is declared dead after two missed
//! heartbeats, and the lease runs from the last contact: past it, every secret is dropped and
//! the stream is reopened; the snapshot that starts every connection brings the secrets back.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use maestro_wire::agent_api::AgentEvent;
use maestro_wire::limits::MAX_EVENT_LINE_BYTES;
use maestro_wire::names::is_valid_secret_name;
use thiserror::Error;
use tokio::sync::{Notify, mpsc};

use crate::backoff::Backoff;
use crate::broker::{Broker, BrokerError};
use crate::framing::{FramingError, LineFramer};
use crate::identity::renewal_delay;
use crate::state::{StateError, Store};

/// Silence allowed before the first event of a connection.
const FIRST_EVENT_TIMEOUT: Duration = Duration::from_secs(20);
/// Reconnection delays.
const BACKOFF_INITIAL: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// What the link tells the rest of the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A snapshot was applied: the secrets are current.
    Synced { secrets: usize },
    /// The session is over.
    Ended { reason: String },
}

#[derive(Debug, Error)]
enum LinkError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("the event stream broke: {0}")]
    Read(#[source] reqwest::Error),
    #[error("the broker closed the event stream")]
    Closed,
    #[error("nothing from the broker for {0:?}; the stream is presumed dead")]
    Silent(Duration),
    #[error(transparent)]
    Framing(#[from] FramingError),
    #[error("the lease ran out; reconnecting for a fresh snapshot")]
    LeaseExpired,
}

/// The lease the agent applies: the shorter of `--lease` and the broker's hint, but never so
/// short that the gap between two heartbeats would end it. Returns it and whether it was
/// lengthened for that reason.
pub fn effective_lease(cli: Duration, hint: Duration, heartbeat: Duration) -> (Duration, bool) {
    let wanted = if hint.is_zero() { cli } else { cli.min(hint) };
    let floor = heartbeat + (heartbeat / 2).max(Duration::from_secs(1));
    if !heartbeat.is_zero() && wanted < floor { (floor, true) } else { (wanted, false) }
}

/// How long a silence means a dead stream: two missed heartbeats.
pub fn silence_limit(heartbeat: Duration) -> Duration {
    if heartbeat.is_zero() { FIRST_EVENT_TIMEOUT } else { heartbeat * 2 + Duration::from_secs(1) }
}

/// Everything the link works with.
pub struct Link {
    pub broker: Arc<Broker>,
    pub store: Arc<Store>,
    /// `--lease`.
    pub lease: Duration,
    /// Notified by the watchdog when the lease ran out.
    pub lease_expired: Arc<Notify>,
    pub events: mpsc::Sender<LinkEvent>,
}

/// Follows the event stream until the session ends, reconnecting as needed.
pub async fn run(link: Link) {
    let mut backoff = Backoff::new(BACKOFF_INITIAL, BACKOFF_CAP);
    loop {
        match follow(&link, &mut backoff).await {
            Ok(reason) => {
                let _ = link.events.send(LinkEvent::Ended { reason }).await;
                return;
            }
            Err(LinkError::Broker(BrokerError::SessionEnded)) => {
                let reason = "the broker refuses the session's certificate".to_owned();
                let _ = link.events.send(LinkEvent::Ended { reason }).await;
                return;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                // The broker closes a stream when the certificate it was opened with expires:
                // routine after a renewal, not a warning.
                if matches!(e, LinkError::Closed) {
                    tracing::info!("{e}; reconnecting in {} ms", delay.as_millis());
                } else {
                    tracing::warn!("{e}; reconnecting in {} ms", delay.as_millis());
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One connection of the event stream. `Ok` carries the reason the session ended.
async fn follow(link: &Link, backoff: &mut Backoff) -> Result<String, LinkError> {
    let mut resp = link.broker.open_events().await?;
    tracing::debug!("event stream open");
    let mut framer = LineFramer::new(MAX_EVENT_LINE_BYTES);
    let mut silence = FIRST_EVENT_TIMEOUT;
    loop {
        let chunk = tokio::select! {
            read = tokio::time::timeout(silence, resp.chunk()) => read,
            () = link.lease_expired.notified() => return Err(LinkError::LeaseExpired),
        };
        let chunk = match chunk {
            Err(_) => return Err(LinkError::Silent(silence)),
            Ok(Err(e)) => return Err(LinkError::Read(e)),
            Ok(Ok(None)) => return Err(LinkError::Closed),
            Ok(Ok(Some(c))) => c,
        };
        let lines = framer.push(&chunk)?;
        if lines.is_empty() {
            continue;
        }
        link.store.touch(Instant::now());
        for line in lines {
            let event: AgentEvent = match serde_json::from_slice(&line) {
                Ok(e) => e,
                Err(e) => {
                    // A newer broker's event: skip it (position only; events hold no values,
                    // but serde quotes input and the rule is simple: never echo it).
                    tracing::warn!(
                        line = e.line(),
                        column = e.column(),
                        "skipped an unknown event"
                    );
                    continue;
                }
            };
            if let Some(reason) = apply(link, event, &mut silence, backoff).await? {
                return Ok(reason);
            }
        }
    }
}

fn log_state_error(e: &StateError) {
    tracing::error!("{e}");
}

/// Applies one event. `Some(reason)` when the session ended.
async fn apply(
    link: &Link,
    event: AgentEvent,
    silence: &mut Duration,
    backoff: &mut Backoff,
) -> Result<Option<String>, LinkError> {
    match event {
        AgentEvent::Snapshot { session_id, active, heartbeat_seconds, decoys, label } => {
            link.store.set_session(session_id, label);
            let heartbeat = Duration::from_secs(heartbeat_seconds);
            *silence = silence_limit(heartbeat);
            let (lease, lengthened) =
                effective_lease(link.lease, link.broker.lease_hint(), heartbeat);
            if lengthened {
                tracing::warn!(
                    lease_ms = lease.as_millis() as u64,
                    heartbeat_s = heartbeat_seconds,
                    "the lease is shorter than the broker's heartbeat allows; using a longer one"
                );
            }
            link.store.set_lease(lease);
            let materials = link.broker.material_all().await?;
            if let Err(e) = link.store.set_decoys(decoys) {
                log_state_error(&e);
            }
            match link.store.sync(materials, Instant::now()) {
                Ok(skipped) => skipped.iter().for_each(log_state_error),
                Err(e) => log_state_error(&e),
            }
            let secrets = link.store.read(|s| s.len());
            tracing::info!(secrets, announced = active.len(), "in touch with the broker");
            backoff.reset();
            let _ = link.events.send(LinkEvent::Synced { secrets }).await;
        }
        AgentEvent::Activated { secret } | AgentEvent::Updated { secret } => {
            if !is_valid_secret_name(&secret.name) {
                tracing::warn!("skipped an event for a secret with an invalid name");
                return Ok(None);
            }
            match link.broker.material(&secret.name).await? {
                Some(m) => match link.store.upsert(m) {
                    Ok(()) => {
                        tracing::info!(secret = %secret.name, version = secret.version, "secret active")
                    }
                    Err(e) => log_state_error(&e),
                },
                // Deactivated meanwhile; its own event follows, this makes sure.
                None => {
                    let _ = link.store.remove(&secret.name);
                }
            }
        }
        AgentEvent::Deactivated { name } => match link.store.remove(&name) {
            Ok(true) => tracing::info!(secret = %name, "secret deactivated"),
            Ok(false) => {}
            Err(e) => log_state_error(&e),
        },
        AgentEvent::Ended { reason } => return Ok(Some(reason)),
        AgentEvent::Heartbeat { .. } => {}
    }
    Ok(None)
}

/// Drops every secret when the lease runs out, and tells the link to start over.
pub async fn watch_lease(store: Arc<Store>, expired: Arc<Notify>) {
    loop {
        let now = Instant::now();
        match store.lease().deadline() {
            Some(deadline) if deadline > now => tokio::time::sleep_until(deadline.into()).await,
            // Not yet in touch, or already failed closed: look again shortly.
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
        if store.check_lease(Instant::now()) {
            tracing::warn!(
                lease_ms = store.lease().length().as_millis() as u64,
                "out of touch with the broker for longer than the lease: every secret dropped"
            );
            // Only a link that is reading a stream needs telling; a permit stored for a link
            // that is reconnecting anyway would needlessly end its next, healthy stream.
            expired.notify_waiters();
        }
    }
}

/// Renews the certificate at two thirds of its remaining life, with a fresh key each time.
pub async fn renew_certificates(broker: Arc<Broker>) {
    let mut backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));
    loop {
        let delay = renewal_delay(SystemTime::now(), broker.not_after());
        tokio::time::sleep(delay).await;
        match broker.renew().await {
            Ok(()) => {
                backoff.reset();
                tracing::info!("session certificate renewed with a new key");
            }
            Err(BrokerError::SessionEnded) => return,
            Err(e) => {
                let retry = backoff.next_delay();
                tracing::warn!(
                    "cannot renew the certificate: {e}; retrying in {} s",
                    retry.as_secs()
                );
                tokio::time::sleep(retry).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn lease_is_the_shorter_of_flag_and_hint_but_outlasts_a_heartbeat() {
        assert_eq!(effective_lease(S(60), S(300), S(10)), (S(60), false));
        assert_eq!(effective_lease(S(60), S(30), S(10)), (S(30), false));
        assert_eq!(effective_lease(S(60), S(0), S(10)), (S(60), false));
        // A 2 s lease with 1 s heartbeats holds; with 15 s heartbeats it would flap.
        assert_eq!(effective_lease(S(2), S(60), S(1)), (S(2), false));
        assert_eq!(effective_lease(S(2), S(60), S(15)), (Duration::from_millis(22_500), true));
    }

    #[test]
    fn a_dead_stream_is_two_missed_heartbeats() {
        assert_eq!(silence_limit(S(1)), S(3));
        assert_eq!(silence_limit(S(15)), S(31));
        assert_eq!(silence_limit(S(0)), FIRST_EVENT_TIMEOUT);
    }
}
