//! One socket request in, one response out: the caller's uid is checked first (root and the
//! sandbox user only), then the request is parsed and handed to its action.
//!
//! Pure apart from the usage queue, so that it is tested without a socket.

use std::sync::Arc;

use maestro_wire::PROTOCOL_VERSION;
use maestro_wire::agent_api::{UsageAction, UsageReport};
use maestro_wire::sock::{Action, Response, SockErrorCode};
use serde::Deserialize;

use crate::actions;
use crate::cgroup::SessionCgroup;
use crate::identity::rfc3339_now;
use crate::state::Store;
use crate::usage::{UsageQueue, Who};

/// A request as it arrives. `maestro_wire::sock::Request` cannot be deserialized as it stands:
/// serde does not support `deny_unknown_fields` together with `flatten` and refuses every
/// request, so the agent reads this mirror of it (same JSON) instead.
#[derive(Debug, Deserialize)]
struct IncomingRequest {
    version: u32,
    #[serde(flatten)]
    action: Action,
}

/// What every request is served with.
pub struct Ctx {
    pub store: Arc<Store>,
    pub usage: Arc<UsageQueue>,
    /// The one non-root uid the socket serves.
    pub sandbox_uid: u32,
    /// The session's cgroup, which a caller that asks for secrets joins (see [`crate::cgroup`]).
    pub cgroup: Option<Arc<SessionCgroup>>,
}

/// Who is asking, from the kernel: SO_PEERCRED, then `/proc/<pid>/exe` and `comm`.
#[derive(Debug, Clone)]
pub struct Peer {
    pub uid: u32,
    pub pid: Option<u32>,
    pub who: Who,
}

impl Peer {
    /// Identifies the process behind a connection's credentials.
    pub fn identify(uid: u32, pid: Option<u32>) -> Peer {
        let pid = pid.filter(|p| *p > 0);
        let exe = pid.and_then(maestro_fs::executable_of);
        let comm = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok());
        Peer { uid, pid, who: Who::new(exe.as_deref(), comm.as_deref()) }
    }

    /// A denial of this peer as a usage record.
    pub fn denial(&self, detail: String) -> UsageReport {
        UsageReport {
            secret: None,
            action: UsageAction::Denied,
            at: rfc3339_now(),
            pid: self.pid,
            uid: Some(self.uid),
            command: Some(self.who.command.clone()),
            detail: Some(detail),
            count: None,
            last_at: None,
            exe: self.who.exe.clone(),
            claimed_command: self.who.comm.clone(),
            outside_exec: None,
        }
    }
}

/// An error response.
pub fn error(code: SockErrorCode, message: impl Into<String>) -> Response {
    Response::Error { code, message: message.into() }
}

/// Whether `uid` may use the socket.
pub fn allowed(ctx: &Ctx, uid: u32) -> bool {
    uid == 0 || uid == ctx.sandbox_uid
}

/// The refusal for a foreign uid, recorded as a denial (best effort: a refusal needs no record
/// to be safe, and denials never take the slots that allowed uses need).
pub fn refuse(ctx: &Ctx, peer: &Peer) -> Response {
    ctx.usage.push_denial(
        peer.denial(format!("agent socket: uid {} is not the sandbox user", peer.uid)),
    );
    refusal(ctx, peer.uid)
}

/// The answer a foreign uid gets.
pub fn refusal(ctx: &Ctx, uid: u32) -> Response {
    error(
        SockErrorCode::Forbidden,
        format!(
            "uid {uid} may not use this agent: it serves root and the sandbox user (uid {}) only",
            ctx.sandbox_uid
        ),
    )
}

/// Serves one request line.
pub fn dispatch(ctx: &Ctx, peer: &Peer, line: &[u8]) -> Response {
    if !allowed(ctx, peer.uid) {
        return refuse(ctx, peer);
    }
    // A request holds no value, but serde's messages can quote input: report the position only.
    let request: IncomingRequest = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => {
            return error(
                SockErrorCode::BadRequest,
                format!(
                    "the request is not one this agent understands (line {}, column {}); use the \
                     maestro-exec that came with this agent",
                    e.line(),
                    e.column()
                ),
            );
        }
    };
    if request.version != PROTOCOL_VERSION {
        return error(
            SockErrorCode::BadRequest,
            format!(
                "maestro-exec speaks protocol version {}, this agent speaks {PROTOCOL_VERSION}; use \
                 the maestro-exec that came with this agent",
                request.version
            ),
        );
    }
    if !matches!(request.action, Action::List | Action::Scan)
        && peer.uid == ctx.sandbox_uid
        && let (Some(cgroup), Some(pid)) = (&ctx.cgroup, peer.pid)
    {
        // Whatever the sandbox user runs with the session's secrets ends with the session.
        // (Root callers stay where they are: root can leave any cgroup anyway, and a root
        // daemon that asks should not die with a session.)
        cgroup.adopt(pid);
    }
    if !matches!(request.action, Action::List)
        && let Some(pid) = peer.pid
    {
        // What this process and its children read is "through maestro-exec" (rule
        // `outside_exec`, see `crate::exec_tree`).
        ctx.usage.exec_tree.started(pid);
    }
    match request.action {
        Action::Env { only, command } => actions::env(ctx, peer, &only, command.as_deref()),
        Action::List => actions::list(ctx),
        Action::Material { kinds, only, command } => {
            actions::material(ctx, peer, &kinds, &only, command.as_deref())
        }
        // The listener hands the connection to `crate::scan` on this answer.
        Action::Scan => Response::ScanReady { limits: crate::scan::limits(), secrets: 0 },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use maestro_fs::Snapshot;
    use maestro_wire::SecretValue;
    use maestro_wire::agent_api::SecretMaterial;

    use super::*;
    use crate::state::Publish;
    use maestro_wire::sock::Request;

    #[test]
    fn the_mirror_parses_what_the_wire_request_type_writes() {
        let json = serde_json::to_vec(&Request::new(Action::List)).unwrap();
        let r: IncomingRequest = serde_json::from_slice(&json).unwrap();
        assert_eq!((r.version, r.action), (PROTOCOL_VERSION, Action::List));
    }

    struct Nowhere;
    impl Publish for Nowhere {
        fn publish(&self, _: Snapshot) {}
    }

    fn ctx() -> Ctx {
        let store = Arc::new(Store::new("/m", Duration::from_secs(60), Box::new(Nowhere)));
        let mut fields = BTreeMap::new();
        fields.insert("API_TOKEN".to_owned(), SecretValue::from("planted-dispatch-value"));
        store
            .sync(
                vec![SecretMaterial {
                    active_until: None,
                    name: "API".into(),
                    kind: "generic".into(),
                    version: 3,
                    fields,
                    expires_at: None,
                    exposure: Default::default(),
                    hosts: Vec::new(),
                    needs_reauth: None,
                }],
                Instant::now(),
            )
            .unwrap();
        Ctx { store, usage: UsageQueue::new(100), sandbox_uid: 1000, cgroup: None }
    }

    fn peer(uid: u32) -> Peer {
        Peer {
            uid,
            pid: Some(42),
            who: Who::new(Some("/usr/local/bin/maestro-exec"), Some("maestro-exec")),
        }
    }

    fn env_request() -> Vec<u8> {
        serde_json::to_vec(&Request::new(Action::Env {
            only: vec![],
            command: Some("make".into()),
        }))
        .unwrap()
    }

    #[test]
    fn a_foreign_uid_is_refused_and_recorded() {
        let ctx = ctx();
        let Response::Error { code, message } = dispatch(&ctx, &peer(1001), &env_request()) else {
            panic!("served a foreign uid");
        };
        assert_eq!(code, SockErrorCode::Forbidden);
        assert_eq!(
            message,
            "uid 1001 may not use this agent: it serves root and the sandbox user (uid 1000) only"
        );
        let reports = ctx.usage.take(10);
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].action, UsageAction::Denied);
        assert_eq!(reports[0].uid, Some(1001));
    }

    #[test]
    fn the_sandbox_user_and_root_get_variables_and_injections_are_recorded() {
        let ctx = ctx();
        for uid in [1000, 0] {
            let Response::Env { vars, .. } = dispatch(&ctx, &peer(uid), &env_request()) else {
                panic!("not served");
            };
            assert_eq!(vars[0].name, "API_TOKEN");
            assert_eq!(vars[0].value.expose(), "planted-dispatch-value");
        }
        let reports = ctx.usage.take(10);
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].action, UsageAction::Injected);
        assert_eq!(reports[0].secret.as_deref(), Some("API"));
        // Who asked is the executable the kernel names; the name it gave is only a claim.
        assert_eq!(reports[0].command.as_deref(), Some("maestro-exec"));
        assert_eq!(reports[0].exe.as_deref(), Some("/usr/local/bin/maestro-exec"));
        assert_eq!(reports[0].claimed_command.as_deref(), Some("make"));
        assert!(!format!("{reports:?}").contains("planted"));
    }

    #[test]
    fn an_injection_that_cannot_be_recorded_is_refused() {
        let mut ctx = ctx();
        ctx.usage = UsageQueue::new(1);
        ctx.usage.push(peer(1000).denial("fills the only slot".into())).unwrap();
        let Response::Error { code, message } = dispatch(&ctx, &peer(1000), &env_request()) else {
            panic!("values handed out without a record");
        };
        assert_eq!(code, SockErrorCode::Unavailable);
        assert!(message.starts_with("the agent cannot record this use now"), "{message}");
        // Once the record went out, the same request is served and recorded.
        let taken = ctx.usage.take(10);
        ctx.usage.sent(taken.len());
        assert!(matches!(dispatch(&ctx, &peer(1000), &env_request()), Response::Env { .. }));
        assert_eq!(ctx.usage.take(10)[0].action, UsageAction::Injected);
    }

    #[test]
    fn bad_requests_get_clear_errors_without_echoing_input() {
        let ctx = ctx();
        let Response::Error { code, message } =
            dispatch(&ctx, &peer(1000), b"{\"version\":1,\"action\":\"steal\",\"x\":\"planted\"}")
        else {
            panic!()
        };
        assert_eq!(code, SockErrorCode::BadRequest);
        assert!(message.contains("line 1"), "{message}");
        assert!(!message.contains("planted"));
        let Response::Error { message, .. } =
            dispatch(&ctx, &peer(1000), b"{\"version\":99,\"action\":\"list\"}")
        else {
            panic!()
        };
        assert!(message.contains("protocol version 99"), "{message}");
    }

    #[test]
    fn material_serves_the_credential_helpers_and_is_recorded() {
        let ctx = ctx();
        let ask = |kinds: Vec<String>| {
            let r =
                Request::new(Action::Material { kinds, only: vec![], command: Some("git".into()) });
            dispatch(&ctx, &peer(1000), &serde_json::to_vec(&r).unwrap())
        };
        let Response::Material { secrets } = ask(vec![]) else { panic!("not served") };
        assert_eq!(secrets.len(), 1);
        assert_eq!(secrets[0].fields["API_TOKEN"].expose(), "planted-dispatch-value");
        let Response::Material { secrets } = ask(vec!["github".into()]) else { panic!() };
        assert!(secrets.is_empty());
        let reports = ctx.usage.take(10);
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].detail.as_deref(), Some("credential helper"));
        assert_eq!(reports[0].command.as_deref(), Some("maestro-exec"));
        assert_eq!(reports[0].claimed_command.as_deref(), Some("git"));
    }

    #[test]
    fn list_shows_no_values() {
        let ctx = ctx();
        let line = serde_json::to_vec(&Request::new(Action::List)).unwrap();
        let resp = dispatch(&ctx, &peer(1000), &line);
        let json = serde_json::to_string(&resp).unwrap();
        assert!(json.contains("\"/m/API_TOKEN\""), "{json}");
        assert!(!json.contains("planted"));
        assert!(ctx.usage.is_empty());
    }

    #[test]
    fn unavailable_and_not_active_are_told_apart() {
        let ctx = ctx();
        let only = Request::new(Action::Env { only: vec!["NOPE".into()], command: None });
        let Response::Error { code, .. } =
            dispatch(&ctx, &peer(1000), &serde_json::to_vec(&only).unwrap())
        else {
            panic!()
        };
        assert_eq!(code, SockErrorCode::NotActive);
        ctx.store.drop_all();
        let Response::Error { code, message } = dispatch(&ctx, &peer(1000), &env_request()) else {
            panic!()
        };
        assert_eq!(code, SockErrorCode::Unavailable);
        assert!(message.starts_with("secrets are unavailable"), "{message}");
    }
}
