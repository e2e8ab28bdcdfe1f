//! Events between brokers that share a PostgreSQL store: `LISTEN/NOTIFY`.
//!
//! An agent's event stream is held by one broker, but the change it must hear of can be made
//! through any other. Each broker therefore relays what it publishes on its own hub (after the
//! change committed) as a notification on one channel, and feeds what the others publish into
//! its hub, so the agent hears of it within milliseconds, not a poll interval.
//!
//! A notification carries the session id and the event as the agent will see it: names, kinds,
//! variable names and file paths, never a value (events hold none). Each broker tags its own
//! with a random origin and skips them when they come back. An event too large for a
//! notification (PostgreSQL's limit is 8000 bytes) is sent as "resync": the receiving broker
//! closes that session's streams, and the agent reconnects and gets a fresh snapshot.
//!
//! Notifications are not stored: one sent while a broker's listening connection was down is
//! lost to it. So when the connection is lost, the broker listens again and then closes every
//! stream it holds; their agents reconnect and read the current state from the database.

use std::sync::Arc;
use std::time::Duration;

use maestro_wire::agent_api::AgentEvent;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::postgres::PgStore;
use super::{StoreError, query_failed};
use crate::events::Hub;
use crate::tokens;

/// The notification channel (per database: brokers on other databases never hear it).
pub const CHANNEL: &str = "maestro_events";
/// Largest payload sent as is; PostgreSQL refuses 8000 bytes and more.
const MAX_PAYLOAD: usize = 7900;
/// Pause between attempts to listen again after the connection was lost.
const RELISTEN_PAUSE: Duration = Duration::from_millis(500);

/// One notification.
#[derive(Debug, Serialize, Deserialize)]
struct Notice {
    /// The broker that sent it.
    origin: String,
    session: String,
    /// `None`: too large to send; close the session's streams so their agents resync.
    #[serde(default)]
    event: Option<AgentEvent>,
}

/// The kind of an event, for log lines (which never show an event's contents).
fn kind(event: &AgentEvent) -> &'static str {
    match event {
        AgentEvent::Snapshot { .. } => "snapshot",
        AgentEvent::Activated { .. } => "activated",
        AgentEvent::Deactivated { .. } => "deactivated",
        AgentEvent::Updated { .. } => "updated",
        AgentEvent::Ended { .. } => "ended",
        AgentEvent::Heartbeat { .. } => "heartbeat",
    }
}

/// The payload for an event, or the resync notice when it does not fit.
fn payload(origin: &str, session: &str, event: AgentEvent) -> Result<String, serde_json::Error> {
    let notice =
        Notice { origin: origin.to_owned(), session: session.to_owned(), event: Some(event) };
    let text = serde_json::to_string(&notice)?;
    if text.len() <= MAX_PAYLOAD {
        return Ok(text);
    }
    serde_json::to_string(&Notice { event: None, ..notice })
}

/// The running feed: relays this broker's events out and the others' in. Stops on drop.
pub struct Feed {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Feed {
    /// Listens on the channel (before returning, so that no event published after the broker
    /// says it is listening is missed) and starts relaying `hub`'s events.
    pub async fn start(store: Arc<PgStore>, hub: Hub) -> Result<Self, StoreError> {
        let origin = tokens::random_id::<16>()
            .map_err(|_| StoreError::Random { what: "the broker's event origin id" })?;
        let listener = listen(&store).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        hub.set_relay(tx);
        let sender = tokio::spawn(send_loop(store.clone(), origin.clone(), rx));
        let receiver = tokio::spawn(receive_loop(store, origin, hub, listener));
        Ok(Self { tasks: vec![sender, receiver] })
    }
}

async fn listen(store: &PgStore) -> Result<PgListener, StoreError> {
    let mut listener = PgListener::connect_with(store.pool())
        .await
        .map_err(query_failed("connecting the event feed"))?;
    // A lost connection is handled here, by listening anew: see the module docs.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await.map_err(query_failed("listening for other brokers' events"))?;
    Ok(listener)
}

/// Sends this broker's events, in the order they were published.
async fn send_loop(
    store: Arc<PgStore>,
    origin: String,
    mut rx: mpsc::UnboundedReceiver<(String, AgentEvent)>,
) {
    while let Some((session, event)) = rx.recv().await {
        let what = kind(&event);
        let text = match payload(&origin, &session, event) {
            Ok(text) => text,
            Err(e) => {
                warn!(session = %session, event = what, error = %e, "cannot encode an event for the other brokers");
                continue;
            }
        };
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(&text)
            .execute(store.pool())
            .await;
        match sent {
            Ok(_) => debug!(session = %session, event = what, "event sent to the other brokers"),
            // Their feeds will have lost their connections too if the database is down, and
            // resync their streams when they are back.
            Err(e) => {
                warn!(session = %session, event = what, error = %e, "cannot send an event to the other brokers")
            }
        }
    }
}

/// Feeds the other brokers' events into the hub, listening anew whenever the connection drops.
async fn receive_loop(store: Arc<PgStore>, origin: String, hub: Hub, mut listener: PgListener) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => deliver(&hub, &origin, notification.payload()),
            Ok(None) | Err(_) if store.pool().is_closed() => return,
            Ok(None) => {
                warn!("lost the connection that carries other brokers' events; listening again");
                match relisten(&store, &hub).await {
                    Some(again) => listener = again,
                    None => return,
                }
            }
            Err(e) => {
                warn!(error = %e, "the connection that carries other brokers' events failed; listening again");
                match relisten(&store, &hub).await {
                    Some(again) => listener = again,
                    None => return,
                }
            }
        }
    }
}

/// Listens again (retrying), then closes every stream: events sent meanwhile were lost, and
/// the agents' reconnections read the current state. `None` once the broker is stopping.
async fn relisten(store: &PgStore, hub: &Hub) -> Option<PgListener> {
    loop {
        tokio::time::sleep(RELISTEN_PAUSE).await;
        if store.pool().is_closed() {
            return None;
        }
        match listen(store).await {
            Ok(listener) => {
                hub.resync(None);
                info!("listening for other brokers' events again; event streams closed to resync");
                return Some(listener);
            }
            Err(e) => warn!(error = %e, "cannot listen for other brokers' events yet"),
        }
    }
}

fn deliver(hub: &Hub, origin: &str, text: &str) {
    let notice: Notice = match serde_json::from_str(text) {
        Ok(n) => n,
        Err(e) => {
            // Someone else's NOTIFY on our channel: not ours to act on.
            warn!(error = %e, "ignored a notification that is not a broker event");
            return;
        }
    };
    if notice.origin == origin {
        return;
    }
    match notice.event {
        Some(event) => {
            debug!(session = %notice.session, event = kind(&event), "event from another broker");
            hub.publish_local(&notice.session, event);
        }
        None => hub.resync(Some(&notice.session)),
    }
}

#[cfg(test)]
mod tests {
    use maestro_wire::agent_api::ActiveSecret;

    use super::*;

    #[test]
    fn large_events_become_resync_notices() {
        let small = AgentEvent::Deactivated { name: "AWS_PROD".into() };
        let text = payload("me", "s1", small.clone()).unwrap();
        let notice: Notice = serde_json::from_str(&text).unwrap();
        assert_eq!((notice.origin.as_str(), notice.event), ("me", Some(small)));
        let big = AgentEvent::Activated {
            secret: ActiveSecret {
                name: "BIG".into(),
                kind: "generic".into(),
                version: 1,
                variables: vec!["V".repeat(64); 200],
                files: Vec::new(),
            },
        };
        let text = payload("me", "s1", big).unwrap();
        assert!(text.len() <= MAX_PAYLOAD);
        let notice: Notice = serde_json::from_str(&text).unwrap();
        assert_eq!((notice.session.as_str(), notice.event), ("s1", None));
    }

    #[tokio::test]
    async fn delivery_skips_own_events_and_resyncs_on_request() {
        let hub = Hub::new();
        let mut sub = hub.subscribe("s1");
        let own = payload("me", "s1", AgentEvent::Deactivated { name: "A".into() }).unwrap();
        deliver(&hub, "me", &own);
        let other = payload("other", "s1", AgentEvent::Deactivated { name: "B".into() }).unwrap();
        deliver(&hub, "me", &other);
        deliver(&hub, "me", "not json");
        assert_eq!(sub.events.recv().await.unwrap(), AgentEvent::Deactivated { name: "B".into() });
        let resync = serde_json::to_string(&Notice {
            origin: "other".into(),
            session: "s1".into(),
            event: None,
        })
        .unwrap();
        deliver(&hub, "me", &resync);
        assert!(matches!(
            sub.events.recv().await,
            Err(tokio::sync::broadcast::error::RecvError::Closed)
        ));
    }
}
