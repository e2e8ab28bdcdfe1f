//! The audit trail: what users see of a record (the stored action names live beside the wire's
//! audit types, `AuditAction::stored_name`).
//!
//! Records are appended by the store in the same transaction as the change they describe, and
//! never updated or deleted (the SQLite schema enforces this with triggers). A record names a
//! secret, a session, a process; never a value.

use maestro_wire::api::AuditEvent;

use crate::clock;
use crate::store::AuditRow;

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
        session_label: None,
        by: None,
    }
}
