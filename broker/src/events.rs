//! The per-session event hub: what reaches a connected agent, and when.
//!
//! Each session with at least one open event stream has a broadcast channel. API handlers
//! publish after their change is committed, so an agent never hears of a change that did not
//! happen; a stream subscribes *before* it reads the snapshot, so it cannot miss a change made
//! while it connects (it may see one twice: events are idempotent for the agent). A stream that
//! falls too far behind is closed; the agent reconnects and gets a fresh snapshot.
//!
//! When brokers share a PostgreSQL store, what one publishes also goes out through a relay to
//! the others ([`crate::store::pg_events`]), which hand it to their own streams with
//! [`Hub::publish_local`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use maestro_wire::agent_api::AgentEvent;
use tokio::sync::{broadcast, mpsc, watch};

/// Events kept for a slow stream before it is closed.
const CHANNEL_CAPACITY: usize = 256;

/// The hub. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    channels: Mutex<HashMap<String, Channel>>,
    shutdown: watch::Sender<bool>,
    /// Where published events also go: the other brokers on a shared store. Set once.
    relay: OnceLock<mpsc::UnboundedSender<(String, AgentEvent)>>,
}

#[derive(Debug)]
struct Channel {
    tx: broadcast::Sender<AgentEvent>,
    streams: usize,
}

/// An open event stream's subscription. Dropping it marks the stream closed.
#[derive(Debug)]
pub struct Subscription {
    pub events: broadcast::Receiver<AgentEvent>,
    pub shutdown: watch::Receiver<bool>,
    _guard: StreamGuard,
}

#[derive(Debug)]
struct StreamGuard {
    hub: Hub,
    session_id: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut channels = self.hub.channels();
        if let Some(channel) = channels.get_mut(&self.session_id) {
            channel.streams = channel.streams.saturating_sub(1);
            if channel.streams == 0 {
                channels.remove(&self.session_id);
            }
        }
    }
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        let (shutdown, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                channels: Mutex::new(HashMap::new()),
                shutdown,
                relay: OnceLock::new(),
            }),
        }
    }

    fn channels(&self) -> MutexGuard<'_, HashMap<String, Channel>> {
        // A panic while holding this lock leaves the map consistent (every change is one
        // insert, remove or counter update), so a poisoned lock is still usable.
        self.inner.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a stream for a session.
    pub fn subscribe(&self, session_id: &str) -> Subscription {
        let mut channels = self.channels();
        let channel = channels
            .entry(session_id.to_owned())
            .or_insert_with(|| Channel { tx: broadcast::channel(CHANNEL_CAPACITY).0, streams: 0 });
        channel.streams += 1;
        Subscription {
            events: channel.tx.subscribe(),
            shutdown: self.inner.shutdown.subscribe(),
            _guard: StreamGuard { hub: self.clone(), session_id: session_id.to_owned() },
        }
    }

    /// Sends an event to a session's open streams, if any, and to the other brokers.
    pub fn publish(&self, session_id: &str, event: AgentEvent) {
        if let Some(relay) = self.inner.relay.get() {
            // An error only means the relay stopped (the broker is stopping).
            let _ = relay.send((session_id.to_owned(), event.clone()));
        }
        self.publish_local(session_id, event);
    }

    /// Sends an event to this broker's streams of a session only (one that another broker
    /// published).
    pub fn publish_local(&self, session_id: &str, event: AgentEvent) {
        if let Some(channel) = self.channels().get(session_id) {
            // An error only means no stream is listening right now.
            let _ = channel.tx.send(event);
        }
    }

    /// From now on, also hands every published event to `relay`. Only the first call counts.
    pub fn set_relay(&self, relay: mpsc::UnboundedSender<(String, AgentEvent)>) {
        let _ = self.inner.relay.set(relay);
    }

    /// Closes the open streams of one session (`None`: of every session) without ending
    /// them: their agents reconnect and get a fresh snapshot. For when events may have been
    /// lost on the way from another broker.
    pub fn resync(&self, session_id: Option<&str>) {
        let mut channels = self.channels();
        for (id, channel) in channels.iter_mut() {
            if session_id.is_none_or(|s| s == id) {
                // Dropping the old sender closes its receivers; the stream count stays, since
                // each closing stream's guard still counts itself down.
                channel.tx = broadcast::channel(CHANNEL_CAPACITY).0;
            }
        }
    }

    /// Tells a session's streams that it ended; they send `ended` and close.
    pub fn end(&self, session_id: &str, reason: &str) {
        self.publish(session_id, AgentEvent::Ended { reason: reason.to_owned() });
    }

    /// Whether an agent holds a stream of this session open.
    pub fn connected(&self, session_id: &str) -> bool {
        self.channels().get(session_id).is_some_and(|c| c.streams > 0)
    }

    /// Closes every stream (the broker is stopping; agents will reconnect to a new one).
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publish_reaches_subscribers_and_guard_counts() {
        let hub = Hub::new();
        assert!(!hub.connected("s"));
        let mut sub = hub.subscribe("s");
        assert!(hub.connected("s"));
        hub.publish("s", AgentEvent::Deactivated { name: "A".into() });
        hub.publish("other", AgentEvent::Deactivated { name: "B".into() });
        assert_eq!(sub.events.recv().await.unwrap(), AgentEvent::Deactivated { name: "A".into() });
        hub.end("s", "user");
        assert_eq!(sub.events.recv().await.unwrap(), AgentEvent::Ended { reason: "user".into() });
        drop(sub);
        assert!(!hub.connected("s"));
        let sub = hub.subscribe("s");
        hub.shutdown();
        assert!(*sub.shutdown.borrow());
    }

    #[tokio::test]
    async fn relay_gets_published_events_but_not_local_ones() {
        let hub = Hub::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        hub.set_relay(tx);
        let mut sub = hub.subscribe("s");
        hub.publish("s", AgentEvent::Deactivated { name: "A".into() });
        hub.publish_local("s", AgentEvent::Deactivated { name: "B".into() });
        assert_eq!(rx.recv().await.unwrap().1, AgentEvent::Deactivated { name: "A".into() });
        assert!(rx.try_recv().is_err(), "events from other brokers are not relayed back");
        assert_eq!(sub.events.recv().await.unwrap(), AgentEvent::Deactivated { name: "A".into() });
        assert_eq!(sub.events.recv().await.unwrap(), AgentEvent::Deactivated { name: "B".into() });
        let mut other = hub.subscribe("t");
        hub.resync(Some("s"));
        assert!(matches!(sub.events.recv().await, Err(broadcast::error::RecvError::Closed)));
        hub.publish_local("t", AgentEvent::Deactivated { name: "C".into() });
        assert!(other.events.recv().await.is_ok(), "other sessions' streams stay open");
        assert!(hub.connected("s"), "a resync closes streams; their guards count them down");
        drop(sub);
        assert!(!hub.connected("s"));
    }
}
