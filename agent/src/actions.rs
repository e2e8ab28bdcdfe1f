//! One function per socket request. Each reads the active secrets under the store's lock and
//! records what it handed out as usage (never the values).

use maestro_wire::agent_api::{UsageAction, UsageReport};
use maestro_wire::sock::{Response, SockErrorCode};

use crate::dispatch::{Ctx, Peer, error};
use crate::identity::rfc3339_now;
use crate::state::StateError;
use crate::usage::{QueueFull, clean_command};

fn state_error(e: StateError) -> Response {
    let code = match e {
        StateError::NotActive(_) => SockErrorCode::NotActive,
        StateError::Unavailable => SockErrorCode::Unavailable,
        _ => SockErrorCode::Internal,
    };
    error(code, e.to_string())
}

/// Records one injection per secret handed out, all or none; `Err` is the response to give
/// instead of the values when they cannot be recorded (the audit fails closed).
fn record_injections(
    ctx: &Ctx,
    peer: &Peer,
    names: &[String],
    claimed: Option<&str>,
    what: &str,
) -> Result<(), Response> {
    // The name in the request is the caller's word: kept as a claim, never as the command.
    let claimed =
        claimed.map(clean_command).filter(|c| !c.is_empty()).or_else(|| peer.who.comm.clone());
    let at = rfc3339_now();
    let reports = names
        .iter()
        .map(|name| UsageReport {
            secret: Some(name.clone()),
            action: UsageAction::Injected,
            at: at.clone(),
            pid: peer.pid,
            uid: Some(peer.uid),
            command: Some(peer.who.command.clone()),
            detail: Some(what.to_owned()),
            count: None,
            last_at: None,
            exe: peer.who.exe.clone(),
            claimed_command: claimed.clone(),
            outside_exec: None,
        })
        .collect();
    ctx.usage.push_all(reports).map_err(|QueueFull| {
        error(
            SockErrorCode::Unavailable,
            "the agent cannot record this use now (its audit queue is full while the broker \
             catches up), so it is refused; try again in a few seconds",
        )
    })
}

/// `Action::Env`: the variables for a command about to run.
pub fn env(ctx: &Ctx, peer: &Peer, only: &[String], command: Option<&str>) -> Response {
    match ctx.store.read(|s| s.env(only).map(|(vars, names)| (vars, names, s.git_path_hosts()))) {
        Ok((vars, names, git_path_hosts)) => {
            match record_injections(ctx, peer, &names, command, "environment") {
                Ok(()) => Response::Env { vars, git_path_hosts },
                Err(refused) => refused,
            }
        }
        Err(e) => state_error(e),
    }
}

/// `Action::List`: names, kinds, variables, files, and the session's id and label.
pub fn list(ctx: &Ctx) -> Response {
    match ctx.store.read(|s| s.list()) {
        Ok(secrets) => Response::List { secrets, session: ctx.store.session() },
        Err(e) => state_error(e),
    }
}

/// `Action::Material`: field values for the credential helpers.
pub fn material(
    ctx: &Ctx,
    peer: &Peer,
    kinds: &[String],
    only: &[String],
    command: Option<&str>,
) -> Response {
    match ctx.store.read(|s| s.material(kinds, only)) {
        Ok(secrets) => {
            let names: Vec<String> = secrets.iter().map(|m| m.name.clone()).collect();
            match record_injections(ctx, peer, &names, command, "credential helper") {
                Ok(()) => Response::Material { secrets },
                Err(refused) => refused,
            }
        }
        Err(e) => state_error(e),
    }
}
