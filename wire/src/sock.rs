//! The agent's unix-socket protocol, spoken by `maestro-exec` (client) and `maestro-agent`
//! (server). One JSON object per line each way; one request, one response, then close; except
//! [`Action::Scan`], which goes on with the content to scan (see "Scanning" below).
//!
//! Both ends check each other with `SO_PEERCRED`, from the kernel: the agent serves only root
//! and the sandbox user (others are refused right after accept, before anything is read), and
//! the client trusts only a server running as root. Who made a request is recorded from the
//! kernel too (`/proc/<pid>/exe`); names in requests are the caller's claim only.

use serde::{Deserialize, Serialize};

use crate::{PROTOCOL_VERSION, SecretValue};

/// Default path of the agent socket.
pub const DEFAULT_SOCKET: &str = "/run/maestro/agent.sock";
/// Environment variable that overrides the socket path for `maestro-exec`.
pub const SOCKET_ENV: &str = "MAESTRO_AGENT_SOCK";

/// A request with the protocol version of the client. (No `deny_unknown_fields`: serde does not
/// support it together with `flatten`, and a newer client's extra keys should not break us.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    #[serde(flatten)]
    pub action: Action,
}

impl Request {
    pub fn new(action: Action) -> Self {
        Self { version: PROTOCOL_VERSION, action }
    }
}

/// What the client asks for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// The environment variables of the active secrets (all, or only the named ones), for a
    /// command about to run. Recorded as an injection of each secret.
    Env {
        #[serde(default)]
        only: Vec<String>,
        /// The command about to run (argv[0]). Recorded only as what the caller claims: the
        /// record's command is the executable the kernel reports for the caller.
        #[serde(default)]
        command: Option<String>,
    },
    /// The active secrets' names, kinds and variables; never values.
    List,
    /// The values of the active secrets of the given kinds (all kinds if empty), for the
    /// credential helpers (git, AWS `credential_process`). Recorded as an injection.
    Material {
        #[serde(default)]
        kinds: Vec<String>,
        #[serde(default)]
        only: Vec<String>,
        /// The helper's caller, as it claims (see `Env::command`).
        #[serde(default)]
        command: Option<String>,
    },
    /// `maestro-exec scan`: the agent answers [`Response::ScanReady`] and the connection goes on
    /// with items to scan (see "Scanning" below).
    Scan,
}

/// The agent's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Env {
        vars: Vec<EnvVar>,
        /// Hosts for which git must send the repository path to its credential helper
        /// (`credential.https://HOST.useHttpPath`): those of active git secrets with owners.
        /// maestro-exec adds them to the command's git configuration (`GIT_CONFIG_COUNT`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        git_path_hosts: Vec<String>,
    },
    List {
        secrets: Vec<ListedSecret>,
        /// The agent's session (absent from an older agent), so that the user can be told
        /// which session to activate secrets in.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<ListedSession>,
    },
    Material {
        secrets: Vec<MaterialEntry>,
    },
    /// The agent takes items to scan on this connection, within these limits.
    ScanReady {
        limits: ScanLimits,
        /// How many active secrets are looked for (values under 6 bytes are not).
        #[serde(default)]
        secrets: u32,
    },
    /// What one scanned item holds (at most [`MAX_SCAN_FINDINGS_PER_ITEM`] findings, and how
    /// many more there were).
    ScanResult {
        findings: Vec<ScanFinding>,
        #[serde(default)]
        more: u64,
    },
    Error {
        code: SockErrorCode,
        message: String,
    },
}

/// One environment variable for the command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: SecretValue,
    /// The secret whose value this is, for `maestro-exec`'s output masking (the value is
    /// replaced with `<SECRET>`); absent for variables that hold no secret value (the proxy's
    /// settings, a sealed secret's placeholders), which are never masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// The agent's session as `maestro-exec --list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListedSession {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// One active secret as `maestro-exec --list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListedSecret {
    pub name: String,
    pub kind: String,
    pub version: u64,
    pub variables: Vec<String>,
    /// Absolute paths under the mount.
    pub files: Vec<String>,
    /// Set when the secret's OAuth token needs re-authorization: the message and the command.
    #[serde(default)]
    pub needs_reauth: Option<String>,
    /// `sealed`: the variables and files hold placeholders; the agent's proxy sends the values
    /// to `hosts` only.
    #[serde(default)]
    pub exposure: crate::catalog::Exposure,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// When the broker deactivates it (RFC 3339); absent: at the session's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_until: Option<String>,
    /// The values of the fields the catalog says are not secret (a GitLab `host`, a git
    /// secret's `owners`), so that the git helper can choose a secret before asking for values.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub shown_fields: std::collections::BTreeMap<String, String>,
}

/// One secret's field values, for the credential helpers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaterialEntry {
    pub name: String,
    pub kind: String,
    pub fields: std::collections::BTreeMap<String, SecretValue>,
    /// RFC 3339, for tokens that expire.
    pub expires_at: Option<String>,
}

/// Why the agent refused.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SockErrorCode {
    /// The caller's uid is neither root nor the sandbox user.
    Forbidden,
    /// The agent is out of touch with the broker past its lease (fail closed), shutting down,
    /// cannot record the use now (its audit queue is full), or the caller's uid has too many
    /// connections being answered.
    Unavailable,
    /// A name given with `--only` is not active in this session.
    NotActive,
    /// The request could not be parsed, or the protocol version differs.
    BadRequest,
    Internal,
}

// Scanning.
//
// After `{"version":1,"action":"scan"}` and the agent's `scan_ready`, the client sends items, one
// at a time, each answered before the next is sent:
//
// * a header line, [`ScanItem`] as JSON (at most [`MAX_SCAN_LABEL_BYTES`]);
// * the content in chunks, each a 4-byte big-endian length and that many bytes (at most
//   `limits.max_chunk_bytes`); a zero length ends the item;
// * the agent answers one line, [`Response::ScanResult`] or [`Response::Error`] (after which it
//   closes the connection).
//
// The client ends by closing its side where a header would come. The agent never opens a path:
// the content comes from the client, which read it with its own rights.

/// The longest header line of a scanned item.
pub const MAX_SCAN_LABEL_BYTES: usize = 4096;
/// Findings returned (and recorded) per item at most; more are only counted.
pub const MAX_SCAN_FINDINGS_PER_ITEM: usize = 100;

/// What the agent takes on one scan connection.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScanLimits {
    /// Largest item (a file, a git object).
    pub max_item_bytes: u64,
    /// Largest chunk.
    pub max_chunk_bytes: u32,
    /// Bytes on one connection at most (the client opens another one beyond).
    pub max_connection_bytes: u64,
    /// Seconds one connection may last (the client opens another one well before).
    pub max_connection_secs: u64,
}

/// The header of one scanned item.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScanItem {
    /// Where the content comes from, as the client names it (a path, `COMMIT:PATH`): the
    /// caller's claim, recorded as the finding's detail with the line.
    pub label: String,
    /// Whether findings are told by line (files) or by item only (git objects).
    #[serde(default)]
    pub lines: bool,
}

/// What was found.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FoundKind {
    /// A secret's value.
    Value,
    /// A sealed secret's placeholder (a leak signal: it names this session's activation).
    Placeholder,
}

/// One occurrence of an active secret in a scanned item. Never the value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScanFinding {
    pub secret: String,
    pub found: FoundKind,
    /// `raw`, `base64`, `base64url`, `hex`, `HEX`, `url-escaped`, `json-escaped`.
    pub encoding: String,
    /// 1-based line of the occurrence's first byte.
    pub line: u64,
    /// Byte offset of the occurrence in the item.
    pub offset: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips() {
        let req = Request::new(Action::Env { only: vec!["A".into()], command: Some("ls".into()) });
        let line = serde_json::to_string(&req).unwrap();
        let back: Request = serde_json::from_str(&line).unwrap();
        assert_eq!(back.version, crate::PROTOCOL_VERSION);
        assert_eq!(back.action, req.action);
        let list: Request = serde_json::from_str(r#"{"version":1,"action":"list"}"#).unwrap();
        assert_eq!(list.action, Action::List);
    }
}
