//! The audit trail: how actions are named in the database, and what users see of a record.
//!
//! Records are appended by the store in the same transaction as the change they describe, and
//! never updated or deleted (the SQLite schema enforces this with triggers). A record names a
//! secret, a session, a process; never a value.

use maestro_wire::api::{AuditAction, AuditEvent};

use crate::clock;
use crate::store::AuditRow;

/// Every action, with its stored name (the same as its JSON name).
const NAMES: &[(AuditAction, &str)] = &[
    (AuditAction::Created, "created"),
    (AuditAction::Edited, "edited"),
    (AuditAction::Deleted, "deleted"),
    (AuditAction::Activated, "activated"),
    (AuditAction::Deactivated, "deactivated"),
    (AuditAction::Fetched, "fetched"),
    (AuditAction::Injected, "injected"),
    (AuditAction::FileRead, "file_read"),
    (AuditAction::Denied, "denied"),
    (AuditAction::SessionCreated, "session_created"),
    (AuditAction::SessionEnded, "session_ended"),
    (AuditAction::Enrolled, "enrolled"),
    (AuditAction::Refreshed, "refreshed"),
    (AuditAction::RefreshFailed, "refresh_failed"),
];

/// The actions that count as a use of a secret (last use, sessions that used it).
pub const USES: &[&str] = &["fetched", "injected", "file_read"];

/// The stored name of an action.
pub fn action_name(action: AuditAction) -> &'static str {
    NAMES.iter().find(|(a, _)| *a == action).map(|(_, n)| *n).unwrap_or("unknown")
}

/// The action of a stored name.
pub fn parse_action(name: &str) -> Option<AuditAction> {
    NAMES.iter().find(|(_, n)| *n == name).map(|(a, _)| *a)
}

/// What a user sees of a record.
pub fn to_event(row: &AuditRow) -> AuditEvent {
    let r = &row.record;
    AuditEvent {
        seq: row.seq,
        at: clock::rfc3339(r.at),
        action: r.action,
        secret: r.secret_name.clone(),
        session: r.session_id.clone(),
        pid: r.pid,
        uid: r.uid,
        command: r.command.clone(),
        detail: r.detail.clone(),
        count: r.count,
        last_at: r.last_at.map(clock::rfc3339),
        exe: r.exe.clone(),
        claimed_command: r.claimed_command.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_wire_names() {
        for (action, name) in NAMES {
            assert_eq!(serde_json::to_value(action).unwrap(), serde_json::json!(name));
            assert_eq!(parse_action(name), Some(*action));
            assert_eq!(action_name(*action), *name);
        }
        for used in USES {
            assert!(parse_action(used).is_some());
        }
    }
}
