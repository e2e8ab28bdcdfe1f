//! One function per socket request. Each reads the active secrets under the store's lock and
//! records what it handed out as usage (never the values).

use maestro_wire::agent_api::{UsageAction, UsageReport};
use maestro_wire::sock::{Response, SockErrorCode};

use crate::dispatch::{Ctx, Peer, error};
use crate::identity::rfc3339_now;
use crate::state::StateError;
use crate::usage::clean_command;

fn state_error(e: StateError) -> Response {
    let code = match e {
        StateError::NotActive(_) => SockErrorCode::NotActive,
        StateError::Unavailable => SockErrorCode::Unavailable,
        _ => SockErrorCode::Internal,
    };
    error(code, e.to_string())
}

/// Records one injection per secret handed out.
fn record_injections(ctx: &Ctx, peer: &Peer, names: &[String], command: Option<&str>, what: &str) {
    let command = command.map(clean_command).or_else(|| peer.command.clone());
    let at = rfc3339_now();
    for name in names {
        ctx.usage.push(UsageReport {
            secret: Some(name.clone()),
            action: UsageAction::Injected,
            at: at.clone(),
            pid: peer.pid,
            uid: Some(peer.uid),
            command: command.clone(),
            detail: Some(what.to_owned()),
        });
    }
}

/// `Action::Env`: the variables for a command about to run.
pub fn env(ctx: &Ctx, peer: &Peer, only: &[String], command: Option<&str>) -> Response {
    match ctx.store.read(|s| s.env(only)) {
        Ok((vars, names)) => {
            record_injections(ctx, peer, &names, command, "environment");
            Response::Env { vars }
        }
        Err(e) => state_error(e),
    }
}

/// `Action::List`: names, kinds, variables, files.
pub fn list(ctx: &Ctx) -> Response {
    match ctx.store.read(|s| s.list()) {
        Ok(secrets) => Response::List { secrets },
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
            record_injections(ctx, peer, &names, command, "credential helper");
            Response::Material { secrets }
        }
        Err(e) => state_error(e),
    }
}
