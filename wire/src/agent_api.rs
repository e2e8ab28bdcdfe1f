//! The broker's agent API: mutual TLS with a session certificate issued by the broker's CA.
//! The session is taken from the certificate's URI SAN, never from the request.
//!
//! | method | path | auth | body | answer |
//! |---|---|---|---|---|
//! | POST | `/v1/enroll` | enrollment token in body | [`EnrollRequest`] | [`CertIssued`] |
//! | POST | `/v1/agent/renew` | mTLS | [`RenewRequest`] | [`CertIssued`] |
//! | GET | `/v1/agent/events` | mTLS | | NDJSON stream of [`AgentEvent`] |
//! | GET | `/v1/agent/secrets` | mTLS | | [`MaterialSet`]: every active secret |
//! | GET | `/v1/agent/secrets/{name}` | mTLS | | [`SecretMaterial`] |
//! | POST | `/v1/agent/usage` | mTLS | [`UsageBatch`] | [`UsageAccepted`] |
//!
//! The event stream is one long-lived response, one JSON object per line (`\n`-terminated),
//! starting with a [`AgentEvent::Snapshot`]. Clients must frame by line and buffer partial
//! lines: HTTP/2 delivers data in arbitrary chunks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::SecretValue;
use crate::catalog::Exposure;

/// What `maestro sessions create --bundle-out` writes (mode 0600) and `maestro-agent run
/// --bundle` reads: everything a sandbox needs to enroll.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Base URL of the broker, e.g. `https://127.0.0.1:8443`: the first one tried.
    pub broker_url: String,
    /// Every broker URL in the order the agent tries them (brokers sharing one store), the
    /// first normally equal to `broker_url`. Absent in bundles written before failover existed:
    /// then `broker_url` alone is used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub broker_urls: Vec<String>,
    /// The broker's CA certificate, PEM.
    pub ca_pem: String,
    pub session_id: String,
    pub enrollment_token: SecretValue,
    pub enrollment_expires_at: String,
}

impl Bundle {
    /// The broker URLs in the order to try them: `broker_url` first, then the others of
    /// `broker_urls`, each once (a trailing `/` does not make a URL different).
    pub fn urls(&self) -> Vec<String> {
        let mut urls: Vec<String> = Vec::with_capacity(1 + self.broker_urls.len());
        for url in std::iter::once(&self.broker_url).chain(&self.broker_urls) {
            let url = url.trim().trim_end_matches('/');
            if !url.is_empty() && !urls.iter().any(|u| u == url) {
                urls.push(url.to_owned());
            }
        }
        urls
    }
}

/// Whether `url`'s host is `localhost` or a loopback address (127.0.0.0/8, `::1`): inside a
/// sandbox with its own network namespace, that is the sandbox itself, not the broker's host.
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `POST /v1/enroll`: trade a one-time token and a CSR for a session certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub token: SecretValue,
    /// PKCS#10 CSR, PEM. Only its public key is used.
    pub csr_pem: String,
}

/// `POST /v1/agent/renew`: a fresh certificate for the same session, before the current expires.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub csr_pem: String,
}

/// A session certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertIssued {
    pub session_id: String,
    /// The leaf certificate, PEM.
    pub cert_pem: String,
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// RFC 3339.
    pub not_after: String,
    /// How long the agent may keep secrets without hearing from the broker, in seconds.
    /// A hint; the agent's own `--lease` wins when shorter.
    pub lease_seconds: u64,
}

/// A secret that is active in the session, without its values.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActiveSecret {
    pub name: String,
    pub kind: String,
    pub version: u64,
    pub variables: Vec<String>,
    pub files: Vec<String>,
}

/// One line of the event stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    /// First event on every connection: the whole active set.
    Snapshot {
        session_id: String,
        active: Vec<ActiveSecret>,
        /// Seconds between heartbeats; a silence of several of these means the stream is dead.
        heartbeat_seconds: u64,
        /// The session was created with decoys (`sessions create --decoys`): the agent serves
        /// the credentials of [`crate::decoys::DECOYS`] and reports any read of them at once.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        decoys: bool,
        /// The session's label, for `maestro-exec --list` (absent: none, or an older broker).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    Activated {
        secret: ActiveSecret,
    },
    Deactivated {
        name: String,
    },
    /// A new version (edit or OAuth refresh): fetch the material again.
    Updated {
        secret: ActiveSecret,
    },
    /// The session is over: tear down.
    Ended {
        reason: String,
    },
    Heartbeat {
        at: String,
    },
}

/// The values of one active secret, as the agent needs them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretMaterial {
    pub name: String,
    pub kind: String,
    pub version: u64,
    /// Field values with the kind's defaults already applied.
    pub fields: BTreeMap<String, SecretValue>,
    /// For tokens that expire (OAuth): RFC 3339.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// For OAuth secrets whose refresh was refused: the user must re-authorize.
    #[serde(default)]
    pub needs_reauth: Option<String>,
    /// `sealed`: the sandbox gets placeholders and the agent's proxy sends the values, only to
    /// `hosts`. Absent (an older broker) means plain.
    #[serde(default)]
    pub exposure: Exposure,
    /// For a sealed secret: the host patterns its values may be sent to, already resolved by the
    /// broker (the user's narrowed list, or the kind's defaults; see `catalog::seal`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// When the broker deactivates it (`activate --for`; RFC 3339); absent: at the session's
    /// end. Shown by `maestro-exec --list`; the broker's `deactivated` event is what removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_until: Option<String>,
}

/// `GET /v1/agent/secrets`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaterialSet {
    pub secrets: Vec<SecretMaterial>,
}

/// What a usage report is about.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UsageAction {
    Injected,
    FileRead,
    Denied,
    /// The egress proxy substituted a sealed secret in a request (`detail`: method, host and
    /// path, never the query or body).
    Substituted,
    /// A sealed secret's placeholder was headed for a host it does not belong to; refused.
    LeakAttempt,
    /// A decoy credential of the session (`sessions create --decoys`) was read or used: no
    /// legitimate tool touches one. `secret` names the decoy, `detail` what was done with it.
    DecoyRead,
    /// `maestro-exec scan` found a secret's value or placeholder in a file or a git object
    /// (`detail`: the file and line or the commit; never the value).
    ScanFinding,
}

/// One use of a secret inside the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UsageReport {
    /// Secret name; `None` for a denial not tied to one secret.
    pub secret: Option<String>,
    pub action: UsageAction,
    /// RFC 3339, when it happened in the sandbox.
    pub at: String,
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    /// The process's command name (`/proc/<pid>/comm`).
    pub command: Option<String>,
    /// A file path under the mount, or why access was denied.
    pub detail: Option<String>,
    /// How many uses this record stands for: the agent coalesces repeated uses with the same
    /// secret, action, pid, uid, executable and path into one record. Absent means 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// RFC 3339, when the last of the `count` uses happened (`at` is the first). Absent when
    /// `count` is absent or 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_at: Option<String>,
    /// The full path of the executable the kernel reports for `pid` (`/proc/<pid>/exe`).
    /// `command` is its file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// The command name the caller claimed for itself (the socket request's `command`, or the
    /// process's own `comm` when it differs from the executable): a detail, never the record's
    /// command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_command: Option<String>,
    /// For a file read: `true` when the reader is not in a process tree started through
    /// `maestro-exec` (no ancestor asked the agent's socket for an environment), `false` when it
    /// is. Absent: unknown (the rule `outside_exec` then stays quiet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside_exec: Option<bool>,
}

/// `POST /v1/agent/usage`: at most [`crate::limits::MAX_USAGE_BATCH`] reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageBatch {
    pub reports: Vec<UsageReport>,
    /// The sandbox user's uid as the agent knows it: a use by another uid is flagged
    /// (`foreign_uid`). Absent from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_uid: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsageAccepted {
    pub accepted: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(urls: &[&str]) -> String {
        format!(
            r#"{{"broker_url":"https://a:1/","ca_pem":"x","session_id":"s","enrollment_token":"t",
              "enrollment_expires_at":"2026-01-01T00:00:00Z"{}}}"#,
            if urls.is_empty() {
                String::new()
            } else {
                format!(r#","broker_urls":{}"#, serde_json::to_string(urls).unwrap())
            }
        )
    }

    #[test]
    fn loopback_urls_are_recognised() {
        for url in [
            "https://127.0.0.1:8443",
            "https://127.1.2.3",
            "https://localhost:1/x",
            "https://LOCALHOST.",
            "https://[::1]:8443/",
            "https://a.localhost",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in ["https://10.0.0.1:8443", "https://broker:8443", "https://[fd00::1]", "x"] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }

    #[test]
    fn an_old_bundle_has_its_one_url() {
        let b: Bundle = serde_json::from_str(&bundle(&[])).unwrap();
        assert_eq!(b.urls(), ["https://a:1"]);
        // Written back, it stays what an older agent reads.
        assert!(!serde_json::to_string(&b).unwrap().contains("broker_urls"));
    }

    #[test]
    fn several_urls_keep_their_order_first_url_first_each_once() {
        let b: Bundle =
            serde_json::from_str(&bundle(&["https://c:3", "https://a:1", "https://b:2/"])).unwrap();
        assert_eq!(b.urls(), ["https://a:1", "https://c:3", "https://b:2"]);
    }
}
