//! Sessions: what their owner sees, how they end (by the user, or at their TTL), and the task
//! that ends expired sessions and tells their agents at once.

use std::sync::Arc;
use std::time::Duration;

use maestro_wire::api::{SessionInfo, SessionState};
use tokio::sync::watch;
use tracing::{error, info};

use crate::api::error::ApiResult;
use crate::app::App;
use crate::clock;
use crate::store::SessionRecord;

/// How often the expiry task looks for sessions past their TTL.
const EXPIRY_SCAN: Duration = Duration::from_secs(1);

/// A session as its owner sees it.
pub async fn info(app: &App, session: &SessionRecord) -> ApiResult<SessionInfo> {
    let now = clock::now();
    let live = session.is_live(now);
    let active = if live {
        app.store.active_secrets(&session.id).await?.into_iter().map(|s| s.name).collect()
    } else {
        Vec::new()
    };
    Ok(SessionInfo {
        id: session.id.clone(),
        label: session.label.clone(),
        state: if live { SessionState::Live } else { SessionState::Ended },
        created_at: clock::rfc3339(session.created_at),
        expires_at: clock::rfc3339(session.expires_at),
        ended_at: session.ended_at.or((!live).then_some(session.expires_at)).map(clock::rfc3339),
        ended_reason: session.ended_reason.clone().or_else(|| (!live).then(|| "ttl".to_owned())),
        active,
        agent_connected: live && app.hub.connected(&session.id),
        enrolled: session.enrolled,
    })
}

/// Ends a session for good and tells its agent. `None` if it had already ended.
pub async fn end(app: &App, id: &str, reason: &str) -> ApiResult<Option<SessionRecord>> {
    let ended = app.store.end_session(id, reason, clock::now()).await?;
    if ended.is_some() {
        app.hub.end(id, reason);
        info!(session = %id, reason, "session ended");
    }
    Ok(ended)
}

/// Ends sessions whose TTL has passed, until `shutdown` turns true.
pub async fn expire_task(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EXPIRY_SCAN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let due = match app.store.expired_sessions(clock::now()).await {
            Ok(due) => due,
            Err(e) => {
                error!(error = %e, "cannot look for expired sessions");
                continue;
            }
        };
        for id in due {
            if let Err(e) = end(&app, &id, "ttl").await {
                error!(session = %id, error = ?e.body.message, "cannot end an expired session");
            }
        }
    }
}
