//! Unusual-usage alerts (issue 12): the rules the broker evaluates on every usage record, the
//! actions it can take when one flags, and the `/v1/alerts` API types. Rules and actions are
//! named here once so that broker, CLI and UI agree; `docs/alerts.md` describes each rule.

use serde::{Deserialize, Serialize};

/// Every rule, by the name used to turn it off (`--alerts-off`) and in alerts.
pub const RULES: &[&str] = &[
    "new_command",
    "foreign_uid",
    "burst",
    "new_label",
    "outside_exec",
    "leak_attempt",
    "scan_finding",
    "decoy",
];

/// Whether `name` is a rule.
pub fn is_rule(name: &str) -> bool {
    RULES.contains(&name)
}

/// The header of a webhook POST carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "maestro-signature";
/// The header of a webhook POST naming the alert (the same id on every retry).
pub const ALERT_ID_HEADER: &str = "maestro-alert-id";
/// Longest webhook URL.
pub const MAX_WEBHOOK_URL_BYTES: usize = 2048;
/// Shortest and longest webhook signing secret.
pub const MIN_WEBHOOK_SECRET_BYTES: usize = 16;
pub const MAX_WEBHOOK_SECRET_BYTES: usize = 1024;
/// Most alerts one `GET /v1/alerts` returns.
pub const MAX_ALERTS_PAGE: u32 = 1000;

/// What the broker does when a rule flags a use.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum AlertAction {
    /// POST the alert to the user's webhook.
    Notify,
    /// Deactivate the secret in the session that used it.
    Deactivate,
    /// End the session that used it.
    EndSession,
}

impl AlertAction {
    /// Every action.
    pub const ALL: [Self; 3] = [Self::Notify, Self::Deactivate, Self::EndSession];

    /// The name on the command line and in stored lists.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Notify => "notify",
            Self::Deactivate => "deactivate",
            Self::EndSession => "end-session",
        }
    }

    /// The action of a name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

/// One alert: a use a rule flagged, and what was done about it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Alert {
    pub id: i64,
    /// RFC 3339.
    pub at: String,
    pub rule: String,
    /// One line, for people.
    pub reason: String,
    pub secret: Option<String>,
    pub session_id: Option<String>,
    pub session_label: Option<String>,
    pub command: Option<String>,
    pub uid: Option<u32>,
    /// The actions taken (or, for `notify`, queued).
    pub actions: Vec<AlertAction>,
    /// `none`, `pending`, `delivered` or `failed`.
    pub webhook: String,
    /// RFC 3339, when it was acknowledged.
    pub acked_at: Option<String>,
}

/// `GET /v1/alerts/config` and the answer of `PUT /v1/alerts/config`: the user's defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AlertConfig {
    pub webhook_url: Option<String>,
    /// Whether a signing secret is set (it is never shown back).
    pub webhook_secret_set: bool,
    /// What happens on an alert of a secret that does not say otherwise.
    pub on_alert: Vec<AlertAction>,
}

/// `PUT /v1/alerts/config`: every field absent is kept.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfigUpdate {
    /// `Some("")` removes the webhook (and its signing secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// The signing secret for the webhook's HMAC-SHA256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<crate::SecretValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_alert: Option<Vec<AlertAction>>,
}

/// `POST /v1/alerts/ack`: acknowledges alerts by id.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckAlerts {
    pub ids: Vec<i64>,
}

/// The answer of `POST /v1/alerts/ack`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Acked {
    pub acked: Vec<i64>,
}

/// The body of a webhook POST.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WebhookBody {
    /// Always `maestro.alert`.
    pub event: String,
    /// The id of the user the alert belongs to.
    pub user: i64,
    pub alert: Alert,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_by_name() {
        for a in AlertAction::ALL {
            assert_eq!(AlertAction::parse(a.as_str()), Some(a));
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.as_str()));
        }
        assert_eq!(AlertAction::parse("explode"), None);
        assert!(is_rule("burst") && !is_rule("bursts"));
    }
}
