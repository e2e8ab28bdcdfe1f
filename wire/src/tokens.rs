//! API tokens, their scopes, and service accounts (`/v1/tokens`, `/v1/service-accounts`).
//!
//! A token acts for a user: the user's own token, or one of a service account the user owns
//! (a non-human principal for CI or a control plane). A team's service account (`TEAM/NAME`,
//! managed by the team's admins) has tokens that act as the team itself. Either way it may do only what its
//! scopes allow; `admin` allows everything, including managing tokens and service accounts.
//! A token's value is shown once, when it is created; the broker keeps only its SHA-256.

use serde::{Deserialize, Serialize};

use crate::SecretValue;

/// What a token may do. Each user API route needs one (see `docs/broker.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// List and show secrets, their history and usage, OAuth providers.
    SecretsRead,
    /// Add, edit, delete secrets, declare them compromised; connect OAuth accounts.
    SecretsWrite,
    /// List and show sessions.
    SessionsRead,
    /// Create and end sessions.
    SessionsWrite,
    /// Activate and deactivate secrets in sessions.
    Activate,
    /// Read the audit trail and alerts.
    AuditRead,
    /// Acknowledge alerts and set their actions.
    AlertsWrite,
    /// Everything, including tokens, service accounts and OAuth providers.
    Admin,
}

impl Scope {
    /// Every scope, in the order they are listed.
    pub const ALL: [Scope; 8] = [
        Scope::SecretsRead,
        Scope::SecretsWrite,
        Scope::SessionsRead,
        Scope::SessionsWrite,
        Scope::Activate,
        Scope::AuditRead,
        Scope::AlertsWrite,
        Scope::Admin,
    ];

    /// The scope's name, as tokens carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SecretsRead => "secrets:read",
            Self::SecretsWrite => "secrets:write",
            Self::SessionsRead => "sessions:read",
            Self::SessionsWrite => "sessions:write",
            Self::Activate => "activate",
            Self::AuditRead => "audit:read",
            Self::AlertsWrite => "alerts:write",
            Self::Admin => "admin",
        }
    }

    /// The scope named `text`.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Every scope's name, comma-separated (for error messages).
    pub fn names() -> String {
        Self::ALL.map(Scope::as_str).join(", ")
    }
}

/// Why a scope list is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeListError {
    #[error("a token needs at least one scope; give some of: {}", Scope::names())]
    Empty,
    #[error("unknown scope '{0}'; use some of: {names}", names = Scope::names())]
    Unknown(String),
}

/// Parses scope names (duplicates dropped), sorted.
pub fn parse_scopes(names: &[String]) -> Result<Vec<Scope>, ScopeListError> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let scope = Scope::parse(name.trim())
            .ok_or_else(|| ScopeListError::Unknown(name.chars().take(40).collect()))?;
        if !out.contains(&scope) {
            out.push(scope);
        }
    }
    if out.is_empty() {
        return Err(ScopeListError::Empty);
    }
    out.sort();
    Ok(out)
}

/// Whether a token with `held` may act where `needed` is required (`admin` covers all).
pub fn allows(held: &[Scope], needed: Scope) -> bool {
    held.iter().any(|s| *s == needed || *s == Scope::Admin)
}

/// The longest a token can be made to live: 10 years (`never` is its own choice).
pub const MAX_TOKEN_TTL_SECS: u64 = 10 * 365 * 24 * 3600;
/// Token and service account names: `[a-z0-9][a-z0-9._-]{0,63}`.
pub const MAX_TOKEN_NAME_BYTES: usize = 64;
/// The most tokens one user may hold (their own and their service accounts').
pub const MAX_TOKENS_PER_USER: i64 = 1000;
/// The most service accounts one user (or team) may own.
pub const MAX_SERVICE_ACCOUNTS_PER_USER: i64 = 200;
/// Longest service account description.
pub const MAX_DESCRIPTION_BYTES: usize = 512;

/// Whether `name` may name a token or a service account.
pub fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.len() <= MAX_TOKEN_NAME_BYTES
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    /// Scope names (see [`Scope`]).
    pub scopes: Vec<String>,
    /// Seconds from now until it expires; `None`: never.
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
    /// The service account it is for (`NAME`, or `TEAM/NAME` for a team's); `None`: the
    /// caller's own.
    #[serde(default)]
    pub service_account: Option<String>,
}

/// A token as listed: never its value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenInfo {
    /// Public id, used to revoke it.
    pub id: String,
    pub name: String,
    /// The service account it acts as (`TEAM/NAME` for a team's); `None`: the user's own token.
    #[serde(default)]
    pub service_account: Option<String>,
    pub scopes: Vec<String>,
    pub created_at: String,
    /// `None`: never expires.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Updated at most once a minute.
    #[serde(default)]
    pub last_used_at: Option<String>,
    pub expired: bool,
}

/// The answer to `POST /v1/tokens`: the token, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenCreated {
    pub info: TokenInfo,
    pub token: SecretValue,
}

/// `POST /v1/service-accounts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateServiceAccount {
    /// `NAME`, or `TEAM/NAME` for a team's.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The team that owns it (also given as `TEAM/NAME`); `None`: the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

/// A service account as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceAccountInfo {
    /// `NAME`, or `TEAM/NAME` for a team's.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// What owns it: `user:NAME` or `team:TEAM`.
    pub owner: String,
    pub created_at: String,
    /// Its tokens that are not revoked (expired ones included).
    pub tokens: u64,
}

/// The answer to `DELETE /v1/tokens/{id}` and `DELETE /v1/service-accounts/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Revoked {
    /// How many tokens were revoked.
    pub revoked: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_sort_and_admin_covers_all() {
        let s =
            parse_scopes(&["activate".into(), "secrets:read".into(), "activate".into()]).unwrap();
        assert_eq!(s, [Scope::SecretsRead, Scope::Activate]);
        assert!(allows(&s, Scope::Activate) && !allows(&s, Scope::SecretsWrite));
        assert!(allows(&[Scope::Admin], Scope::SessionsWrite));
        assert_eq!(parse_scopes(&[]), Err(ScopeListError::Empty));
        assert!(matches!(parse_scopes(&["root".into()]), Err(ScopeListError::Unknown(_))));
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(is_valid_name("ci") && is_valid_name("deploy-bot.2"));
        assert!(!is_valid_name("") && !is_valid_name("-x") && !is_valid_name("Ci"));
        assert!(!is_valid_name(&"a".repeat(65)) && !is_valid_name("a b"));
    }
}
