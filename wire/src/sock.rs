//! The agent's unix-socket protocol, spoken by `maestro-exec` (client) and `maestro-agent`
//! (server). One JSON object per line each way; one request, one response, then close.
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
}

/// The agent's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Env { vars: Vec<EnvVar> },
    List { secrets: Vec<ListedSecret> },
    Material { secrets: Vec<MaterialEntry> },
    Error { code: SockErrorCode, message: String },
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
