//! The agent API (mutual TLS): enrollment, renewal, the event stream, secret material and
//! usage reports. See the route table in `maestro_wire::agent_api`. The session always comes
//! from the client certificate ([`AgentSession`]), never from the request. The rules are
//! [`crate::domain::agents`]'; the event stream, which is HTTP through and through, is here.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use maestro_wire::agent_api::{
    AgentEvent, CertIssued, EnrollRequest, MaterialSet, RenewRequest, SecretMaterial, UsageAccepted,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, Interval, Sleep};
use tracing::{debug, warn};

use super::error::{ApiResult, Failure};
use super::extract::{ApiJson, ApiPath};
use crate::app::SharedApp;
use crate::auth::{AgentSession, UsageReporter};
use crate::clock;
use crate::domain::agents::{self, IncomingBatch};
use crate::domain::material;
use crate::events::Subscription;

/// `POST /v1/enroll`: one-time token + CSR → the session's first certificate.
pub async fn enroll(
    State(app): State<SharedApp>,
    ApiJson(body): ApiJson<EnrollRequest>,
) -> ApiResult<Json<CertIssued>> {
    Ok(Json(agents::enroll(&app, body).await?))
}

/// `POST /v1/agent/renew`: a fresh certificate for the same session.
pub async fn renew(
    State(app): State<SharedApp>,
    agent: AgentSession,
    ApiJson(body): ApiJson<RenewRequest>,
) -> ApiResult<Json<CertIssued>> {
    Ok(Json(agents::renew(&app, &agent, body).await?))
}

/// `GET /v1/agent/secrets`: the values of every secret active in the session.
pub async fn all_material(
    State(app): State<SharedApp>,
    agent: AgentSession,
) -> ApiResult<Json<MaterialSet>> {
    Ok(Json(agents::all_material(&app, &agent).await?))
}

/// `GET /v1/agent/secrets/{name}`: the values of one active secret.
pub async fn one_material(
    State(app): State<SharedApp>,
    agent: AgentSession,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<SecretMaterial>> {
    Ok(Json(agents::one_material(&app, &agent, &name).await?))
}

/// `POST /v1/agent/usage`: what happened to the session's secrets inside the sandbox (see
/// [`agents::usage`]).
pub async fn usage(
    State(app): State<SharedApp>,
    UsageReporter(agent): UsageReporter,
    ApiJson(batch): ApiJson<IncomingBatch>,
) -> ApiResult<Json<UsageAccepted>> {
    Ok(Json(agents::usage(&app, &agent, batch).await?))
}

/// One NDJSON line.
fn line(event: &AgentEvent) -> Bytes {
    let mut text = serde_json::to_vec(event).unwrap_or_else(|_| b"{}".to_vec());
    text.push(b'\n');
    Bytes::from(text)
}

/// The state of one open event stream.
struct Stream {
    pending: VecDeque<AgentEvent>,
    sub: Subscription,
    heartbeat: Interval,
    cert_expiry: std::pin::Pin<Box<Sleep>>,
    session_id: String,
    session_expires_at: i64,
    done: bool,
}

impl Stream {
    /// The next line, or `None` to close the stream.
    async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if let Some(event) = self.pending.pop_front() {
            self.done = matches!(event, AgentEvent::Ended { .. });
            return Some(line(&event));
        }
        if *self.sub.shutdown.borrow() {
            return None;
        }
        tokio::select! {
            received = self.sub.events.recv() => match received {
                Ok(event) => {
                    self.done = matches!(event, AgentEvent::Ended { .. });
                    Some(line(&event))
                }
                Err(RecvError::Lagged(missed)) => {
                    warn!(session = %self.session_id, missed, "event stream fell behind; closing it so the agent resyncs");
                    None
                }
                Err(RecvError::Closed) => None,
            },
            _ = self.heartbeat.tick() => {
                Some(line(&AgentEvent::Heartbeat { at: clock::rfc3339(clock::now()) }))
            }
            _ = self.sub.shutdown.changed() => None,
            _ = &mut self.cert_expiry => {
                if clock::now() >= self.session_expires_at {
                    // The certificate ends with the session: the session is over, whichever of
                    // this timer and the expiry task notices first.
                    self.done = true;
                    return Some(line(&AgentEvent::Ended { reason: "ttl".to_owned() }));
                }
                debug!(session = %self.session_id, "closing an event stream: its certificate expired");
                None
            }
        }
    }
}

/// `GET /v1/agent/events`: the snapshot, then every change, as NDJSON, until the session ends.
pub async fn events(State(app): State<SharedApp>, agent: AgentSession) -> ApiResult<Response> {
    let session_id = agent.session.id.clone();
    // Subscribe before reading the state, so nothing that happens meanwhile is missed.
    let sub = app.hub.subscribe(&session_id);
    let session = app.store.session(&session_id).await?;
    let mut pending = VecDeque::new();
    match session {
        Some(s) if s.is_live(clock::now()) => {
            let active = app.store.active_secrets(&session_id).await?;
            pending.push_back(AgentEvent::Snapshot {
                session_id: session_id.clone(),
                active: active.iter().map(material::active_secret).collect(),
                heartbeat_seconds: app.settings.heartbeat.as_secs().max(1),
                decoys: s.decoys,
                label: s.label.clone(),
            });
        }
        Some(s) => pending.push_back(AgentEvent::Ended {
            reason: s.ended_reason.unwrap_or_else(|| "ttl".to_owned()),
        }),
        None => {
            return Err(Failure::unauthorized("the client certificate names an unknown session"));
        }
    }
    let period = app.settings.heartbeat.max(Duration::from_millis(100));
    let until_expiry = u64::try_from(agent.cert_not_after - clock::now()).unwrap_or(0);
    let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
    // A stalled reader gets one heartbeat when it resumes, not a burst of them.
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = Stream {
        pending,
        sub,
        heartbeat,
        cert_expiry: Box::pin(tokio::time::sleep(Duration::from_secs(until_expiry))),
        session_id: session_id.clone(),
        session_expires_at: agent.session.expires_at,
        done: false,
    };
    debug!(session = %session_id, "event stream opened");
    let body = futures_util::stream::unfold(stream, |mut s| async move {
        let next = s.next().await;
        next.map(|bytes| (Ok::<_, Infallible>(bytes), s))
    });
    Ok((
        [(CONTENT_TYPE, "application/x-ndjson"), (CACHE_CONTROL, "no-store")],
        Body::from_stream(body),
    )
        .into_response())
}
