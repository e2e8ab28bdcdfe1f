//! The JSON-lines record of `maestro audit export` (issue 12): one audit record per line, for
//! SIEM tools. The field names and their order are stable; every field is always present
//! (`null` when the record has no such part), so that a parser needs no optional-field rules.
//! A new field would be added at the end with `v` unchanged; a change of meaning of an existing
//! field bumps `v`. docs/cli.md ("History and export") lists the fields.

use serde::{Deserialize, Serialize};

use crate::api::{AuditAction, AuditEvent};

/// The version of the line format.
pub const EXPORT_VERSION: u32 = 1;

/// One exported audit record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditLine {
    /// Format version ([`EXPORT_VERSION`]).
    pub v: u32,
    /// Position in the trail: increasing, unique per broker store; the key to deduplicate on.
    pub seq: i64,
    /// When it happened (RFC 3339, UTC); for a coalesced record, its first use.
    pub at: String,
    /// For a coalesced record, its last use; else `null`.
    pub last_at: Option<String>,
    /// The action's stored name (`injected`, `file_read`, ...).
    pub action: AuditAction,
    /// How many uses the record stands for (1 unless an agent coalesced repeats).
    pub count: u64,
    pub secret: Option<String>,
    pub session: Option<String>,
    pub session_label: Option<String>,
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    /// The process's command name (from the kernel).
    pub command: Option<String>,
    /// The process's executable (full path, from the kernel).
    pub exe: Option<String>,
    /// The name the process claimed for itself when it differs from `command`.
    pub claimed_command: Option<String>,
    /// A file path or a refusal reason; never a value.
    pub detail: Option<String>,
}

impl From<&AuditEvent> for AuditLine {
    fn from(e: &AuditEvent) -> Self {
        Self {
            v: EXPORT_VERSION,
            seq: e.seq,
            at: e.at.clone(),
            last_at: e.last_at.clone(),
            action: e.action,
            count: e.count.unwrap_or(1),
            secret: e.secret.clone(),
            session: e.session.clone(),
            session_label: e.session_label.clone(),
            pid: e.pid,
            uid: e.uid,
            command: e.command.clone(),
            exe: e.exe.clone(),
            claimed_command: e.claimed_command.clone(),
            detail: e.detail.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_present_in_the_documented_order() {
        let e = AuditEvent {
            seq: 7,
            at: "2026-12-01T10:00:00Z".into(),
            action: AuditAction::FileRead,
            secret: Some("AWS_PROD".into()),
            session: Some("s1".into()),
            pid: Some(42),
            uid: Some(1000),
            command: Some("cat".into()),
            detail: None,
            count: None,
            last_at: None,
            exe: None,
            claimed_command: None,
            session_label: Some("ci".into()),
            by: None,
        };
        let line = serde_json::to_string(&AuditLine::from(&e)).unwrap();
        assert_eq!(
            line,
            r#"{"v":1,"seq":7,"at":"2026-12-01T10:00:00Z","last_at":null,"action":"file_read","count":1,"secret":"AWS_PROD","session":"s1","session_label":"ci","pid":42,"uid":1000,"command":"cat","exe":null,"claimed_command":null,"detail":null}"#
        );
    }
}
