//! Decoy credentials (`maestro sessions create --decoys`): real-looking, useless credentials the
//! agent serves beside a session's real secrets. No legitimate tool reads one, so any read or use
//! is reported at once as [`crate::agent_api::UsageAction::DecoyRead`] and flagged by the broker.
//!
//! The names are fixed here so the broker can accept a decoy report for a name that is not one of
//! the user's secrets, and the agent knows which files to serve. A decoy whose name is also the
//! name of an active real secret of the session is not served (the real secret wins).

/// One decoy: a secret-like name and the files the agent serves for it under the mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoy {
    /// The directory under the mount, and the name in audit records and alerts.
    pub name: &'static str,
    /// What it imitates (a catalog kind), for people reading an alert.
    pub imitates: &'static str,
    /// File names inside the decoy's directory.
    pub files: &'static [&'static str],
}

/// Every decoy a session with decoys gets: an AWS key pair file and a token file.
pub const DECOYS: &[Decoy] = &[
    Decoy { name: "aws-prod-admin", imitates: "aws", files: &["credentials"] },
    Decoy { name: "deploy-token", imitates: "generic", files: &["token"] },
];

/// The decoy of this name, if it is one.
pub fn decoy(name: &str) -> Option<&'static Decoy> {
    DECOYS.iter().find(|d| d.name == name)
}
