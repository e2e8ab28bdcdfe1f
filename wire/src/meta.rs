//! `GET /v1/meta`: what a client must know of this broker before it sends anything, built from
//! the constants the broker itself checks against ([`crate::limits`], [`crate::oauth`],
//! [`crate::alerts`], [`crate::tokens`]) and the audit actions it records, so that the web UI names a limit or an
//! action exactly as the broker does instead of holding a copy. No user data: the route needs
//! no token.

use serde::{Deserialize, Serialize};

use crate::alerts::{self, AlertAction, MAX_WEBHOOK_SECRET_BYTES, MAX_WEBHOOK_URL_BYTES};
use crate::api::AuditAction;
use crate::limits;
use crate::oauth;
use crate::tokens::{self, Scope};

/// The answer of `GET /v1/meta`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    pub limits: Limits,
    /// Every audit action, by the name records carry, in the broker's order.
    pub audit_actions: Vec<String>,
    /// Every alert rule (`alerts_off`) and action (`on_alert`).
    pub alert_rules: Vec<String>,
    pub alert_actions: Vec<String>,
    /// Every token scope, by name, in the broker's order (the token form's checkboxes).
    pub token_scopes: Vec<String>,
    /// The redirect URI every OAuth provider's app must list: known before any provider is
    /// registered (a provider asks for it first).
    pub oauth_redirect_uri: Option<String>,
}

/// The size limits a form checks before it sends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Limits {
    pub max_field_bytes: usize,
    pub max_fields: usize,
    pub max_tags: usize,
    pub max_tag_bytes: usize,
    pub max_description_bytes: usize,
    pub max_names_per_call: usize,
    pub max_session_ttl_secs: u64,
    pub default_session_ttl_secs: u64,
    pub oauth_max_url_bytes: usize,
    pub oauth_max_client_id_bytes: usize,
    pub oauth_max_client_secret_bytes: usize,
    pub oauth_max_scopes: usize,
    pub oauth_max_scope_bytes: usize,
    pub max_webhook_url_bytes: usize,
    pub max_webhook_secret_bytes: usize,
    /// The longest a token can be made to live (`never` is its own choice).
    pub max_token_ttl_secs: u64,
}

impl Meta {
    /// This build's values, with the broker's OAuth redirect URI.
    pub fn current(oauth_redirect_uri: Option<String>) -> Self {
        Self {
            limits: Limits {
                max_field_bytes: limits::MAX_FIELD_BYTES,
                max_fields: limits::MAX_FIELDS,
                max_tags: limits::MAX_TAGS,
                max_tag_bytes: limits::MAX_TAG_BYTES,
                max_description_bytes: limits::MAX_DESCRIPTION_BYTES,
                max_names_per_call: limits::MAX_NAMES_PER_CALL,
                max_session_ttl_secs: limits::MAX_SESSION_TTL_SECS,
                default_session_ttl_secs: limits::DEFAULT_SESSION_TTL_SECS,
                oauth_max_url_bytes: oauth::MAX_URL_BYTES,
                oauth_max_client_id_bytes: oauth::MAX_CLIENT_ID_BYTES,
                oauth_max_client_secret_bytes: oauth::MAX_CLIENT_SECRET_BYTES,
                oauth_max_scopes: oauth::MAX_SCOPES,
                oauth_max_scope_bytes: oauth::MAX_SCOPE_BYTES,
                max_webhook_url_bytes: MAX_WEBHOOK_URL_BYTES,
                max_webhook_secret_bytes: MAX_WEBHOOK_SECRET_BYTES,
                max_token_ttl_secs: tokens::MAX_TOKEN_TTL_SECS,
            },
            audit_actions: AuditAction::ALL.iter().map(|a| a.stored_name().to_owned()).collect(),
            alert_rules: alerts::RULES.iter().map(|r| (*r).to_owned()).collect(),
            alert_actions: AlertAction::ALL.iter().map(|a| a.as_str().to_owned()).collect(),
            token_scopes: Scope::ALL.iter().map(|s| s.as_str().to_owned()).collect(),
            oauth_redirect_uri,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_action_and_the_limits() {
        let meta = Meta::current(None);
        assert_eq!(meta.audit_actions.len(), AuditAction::ALL.len());
        assert!(meta.audit_actions.iter().any(|a| a == "file_read"));
        assert!(meta.alert_actions.iter().any(|a| a == "end-session"));
        assert_eq!(meta.limits.max_fields, limits::MAX_FIELDS);
        assert_eq!(meta.token_scopes.len(), Scope::ALL.len());
        assert_eq!(meta.token_scopes.first().map(String::as_str), Some("secrets:read"));
        assert_eq!(meta.token_scopes.last().map(String::as_str), Some("admin"));
        assert_eq!(meta.limits.max_token_ttl_secs, tokens::MAX_TOKEN_TTL_SECS);
        let json = serde_json::to_value(&meta).unwrap_or_default();
        assert_eq!(json["limits"]["max_field_bytes"], 64 * 1024);
    }
}
