//! OAuth integrations: the provider presets (as data, like the catalog) and the user API types
//! of `/v1/oauth/...` (routes in [`crate::api`]).
//!
//! A user registers a *provider* (an OAuth app at GitHub, GitLab, Microsoft, or any OAuth 2.0
//! server) with its client id and secret, then *connects* it: the broker returns an
//! authorization URL, the user authorizes in a browser, the provider redirects to the broker's
//! callback, and the broker stores the tokens as a secret of the provider's kind. From then on
//! the broker refreshes the token before it expires.
//!
//! Scopes: a provider's `scopes` are the set a connection may ask for; a preset knows which
//! scopes its provider accepts (`None`: any, as Microsoft's resource-specific scopes are open).

use serde::{Deserialize, Serialize};

use crate::SecretValue;
use crate::api::SecretMeta;

/// Longest provider URL.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest client id.
pub const MAX_CLIENT_ID_BYTES: usize = 256;
/// Longest client secret.
pub const MAX_CLIENT_SECRET_BYTES: usize = 4096;
/// Most scopes on a provider or in one request, and the longest scope.
pub const MAX_SCOPES: usize = 64;
pub const MAX_SCOPE_BYTES: usize = 256;
/// How long an authorization may wait for its callback.
pub const AUTHORIZATION_TTL_SECS: u64 = 600;
/// Field name of the access token in `generic` secrets made by Microsoft and custom providers,
/// unless the provider names another variable.
pub const DEFAULT_GENERIC_VARIABLE: &str = "ACCESS_TOKEN";

/// A provider preset: endpoints, the kind its tokens become, the scopes it accepts.
#[derive(Debug, Serialize)]
pub struct Preset {
    pub name: &'static str,
    pub title: &'static str,
    /// `None` for `custom`: `--auth-url` and `--token-url` are then required.
    pub auth_url: Option<&'static str>,
    pub token_url: Option<&'static str>,
    /// RFC 7009 revocation endpoint, when the provider has one.
    pub revoke_url: Option<&'static str>,
    /// When there is no revocation endpoint: what the user does instead.
    pub no_revocation: Option<&'static str>,
    /// The kind its tokens become (`custom`: the default of `--kind`).
    pub kind: &'static str,
    /// The scopes the provider accepts; `None`: any well-formed scope.
    pub accepted_scopes: Option<&'static [&'static str]>,
    /// The allowed set when `providers add` names no `--scope`.
    pub default_scopes: &'static [&'static str],
    /// Scopes always requested (Microsoft returns a refresh token only with `offline_access`).
    pub implied_scopes: &'static [&'static str],
    /// Extra query parameters of the authorization URL.
    pub extra_auth_params: &'static [(&'static str, &'static str)],
}

const GITHUB_SCOPES: &[&str] = &[
    "repo",
    "repo:status",
    "repo_deployment",
    "public_repo",
    "repo:invite",
    "security_events",
    "admin:repo_hook",
    "write:repo_hook",
    "read:repo_hook",
    "admin:org",
    "write:org",
    "read:org",
    "admin:public_key",
    "write:public_key",
    "read:public_key",
    "admin:org_hook",
    "gist",
    "notifications",
    "user",
    "read:user",
    "user:email",
    "user:follow",
    "project",
    "read:project",
    "delete_repo",
    "write:packages",
    "read:packages",
    "delete:packages",
    "admin:gpg_key",
    "write:gpg_key",
    "read:gpg_key",
    "codespace",
    "workflow",
    "read:audit_log",
    "admin:ssh_signing_key",
    "write:ssh_signing_key",
    "read:ssh_signing_key",
];

const GITLAB_SCOPES: &[&str] = &[
    "api",
    "read_api",
    "read_user",
    "create_runner",
    "manage_runner",
    "k8s_proxy",
    "read_repository",
    "write_repository",
    "read_registry",
    "write_registry",
    "read_virtual_registry",
    "write_virtual_registry",
    "read_observability",
    "write_observability",
    "ai_features",
    "sudo",
    "admin_mode",
    "read_service_ping",
    "openid",
    "profile",
    "email",
];

/// Every preset, in the order `maestro oauth providers add --help` names them.
pub static PRESETS: &[Preset] = &[
    Preset {
        name: "github",
        title: "GitHub (OAuth app or GitHub App)",
        auth_url: Some("https://github.com/login/oauth/authorize"),
        token_url: Some("https://github.com/login/oauth/access_token"),
        revoke_url: None,
        no_revocation: Some(
            "GitHub has no RFC 7009 revocation endpoint; revoke the app's access at https://github.com/settings/applications",
        ),
        kind: "github",
        accepted_scopes: Some(GITHUB_SCOPES),
        default_scopes: &["repo", "read:org"],
        implied_scopes: &[],
        extra_auth_params: &[],
    },
    Preset {
        name: "gitlab",
        title: "GitLab (gitlab.com, or a self-managed GitLab with --auth-url/--token-url)",
        auth_url: Some("https://gitlab.com/oauth/authorize"),
        token_url: Some("https://gitlab.com/oauth/token"),
        revoke_url: Some("https://gitlab.com/oauth/revoke"),
        no_revocation: None,
        kind: "gitlab",
        accepted_scopes: Some(GITLAB_SCOPES),
        default_scopes: &["read_api", "read_repository", "write_repository"],
        implied_scopes: &[],
        extra_auth_params: &[],
    },
    Preset {
        name: "microsoft",
        title: "Microsoft identity platform v2 (Entra ID, Microsoft Graph)",
        auth_url: Some("https://login.microsoftonline.com/common/oauth2/v2.0/authorize"),
        token_url: Some("https://login.microsoftonline.com/common/oauth2/v2.0/token"),
        revoke_url: None,
        no_revocation: Some(
            "the Microsoft identity platform has no RFC 7009 revocation endpoint; revoke the grant at https://myapps.microsoft.com or with Microsoft Graph's revokeSignInSessions",
        ),
        kind: "generic",
        accepted_scopes: None,
        default_scopes: &["offline_access", "User.Read"],
        implied_scopes: &["offline_access"],
        extra_auth_params: &[("response_mode", "query")],
    },
    Preset {
        name: "google",
        title: "Google (Google Cloud and Workspace APIs)",
        auth_url: Some("https://accounts.google.com/o/oauth2/v2/auth"),
        token_url: Some("https://oauth2.googleapis.com/token"),
        // Documented at https://developers.google.com/identity/protocols/oauth2/web-server#tokenrevoke;
        // revoking either token ends the whole grant.
        revoke_url: Some("https://oauth2.googleapis.com/revoke"),
        no_revocation: None,
        kind: "generic",
        accepted_scopes: None,
        default_scopes: &["https://www.googleapis.com/auth/cloud-platform"],
        implied_scopes: &[],
        // Google gives a refresh token only for offline access, and again only with consent.
        extra_auth_params: &[("access_type", "offline"), ("prompt", "consent")],
    },
    Preset {
        name: "custom",
        title: "Any OAuth 2.0 provider: give --auth-url and --token-url (and --revoke-url)",
        auth_url: None,
        token_url: None,
        revoke_url: None,
        no_revocation: Some("the provider was registered without --revoke-url"),
        kind: "generic",
        accepted_scopes: None,
        default_scopes: &[],
        implied_scopes: &[],
        extra_auth_params: &[],
    },
];

/// Looks a preset up by name.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// The kinds an OAuth token can become, and the field that holds the access token.
/// `generic` secrets hold it in a variable the provider names (default
/// [`DEFAULT_GENERIC_VARIABLE`]).
pub const TOKEN_KINDS: &[(&str, &str)] = &[("github", "token"), ("gitlab", "token")];

/// The field of `kind` that holds the access token; `None` for kinds no token can become.
/// For `generic` the caller passes the provider's variable.
pub fn token_field<'a>(kind: &str, generic_variable: &'a str) -> Option<&'a str> {
    if kind == "generic" {
        return Some(generic_variable);
    }
    TOKEN_KINDS.iter().find(|(k, _)| *k == kind).map(|(_, f)| *f)
}

/// Whether `name` is a valid provider name: `[a-z][a-z0-9_-]{0,31}`.
pub fn is_valid_provider_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && name.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Whether `scope` is an RFC 6749 scope token (printable ASCII but space, `"` and `\`), of at
/// most [`MAX_SCOPE_BYTES`].
pub fn is_valid_scope(scope: &str) -> bool {
    !scope.is_empty()
        && scope.len() <= MAX_SCOPE_BYTES
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// The scopes of a token response: space-separated (RFC 6749), or comma-separated (GitHub).
/// Invalid pieces are dropped; the order is kept and repeats removed.
pub fn parse_scopes(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for piece in text.split([' ', ',']).map(str::trim).filter(|s| !s.is_empty()) {
        if is_valid_scope(piece) && !out.iter().any(|s| s == piece) {
            out.push(piece.to_owned());
        }
    }
    out
}

/// Why a provider's or a request's scopes cannot be used. Names the scope, which is not secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("at most {MAX_SCOPES} scopes; {0} were given")]
    TooMany(usize),
    #[error(
        "'{0}' is not a valid scope: 1 to {MAX_SCOPE_BYTES} printable ASCII characters without spaces, quotes or backslashes"
    )]
    Invalid(String),
    #[error("the {preset} preset does not know the scope '{scope}'; it accepts: {accepted}")]
    NotAccepted { preset: String, scope: String, accepted: String },
    #[error(
        "provider {provider} allows the scopes {allowed}, not '{scope}'; ask for fewer scopes, or register the provider again with --scope {scope}"
    )]
    NotAllowed { provider: String, scope: String, allowed: String },
}

/// Checks a list of scopes for form and count; returns them without repeats.
pub fn check_scopes(scopes: &[String]) -> Result<Vec<String>, ScopeError> {
    if scopes.len() > MAX_SCOPES {
        return Err(ScopeError::TooMany(scopes.len()));
    }
    let mut out: Vec<String> = Vec::with_capacity(scopes.len());
    for scope in scopes {
        if !is_valid_scope(scope) {
            let shown: String =
                scope.chars().take(80).map(|c| if c.is_control() { '?' } else { c }).collect();
            return Err(ScopeError::Invalid(shown));
        }
        if !out.contains(scope) {
            out.push(scope.clone());
        }
    }
    Ok(out)
}

/// Checks a provider's allowed set against its preset's accepted scopes.
pub fn check_preset_scopes(preset: &Preset, scopes: &[String]) -> Result<(), ScopeError> {
    if let Some(accepted) = preset.accepted_scopes
        && let Some(bad) = scopes.iter().find(|s| !accepted.contains(&s.as_str()))
    {
        return Err(ScopeError::NotAccepted {
            preset: preset.name.to_owned(),
            scope: bad.clone(),
            accepted: accepted.join(", "),
        });
    }
    Ok(())
}

/// Checks that every requested scope is in the provider's allowed set.
pub fn check_allowed(
    provider: &str,
    allowed: &[String],
    requested: &[String],
) -> Result<(), ScopeError> {
    match requested.iter().find(|s| !allowed.contains(s)) {
        Some(bad) => Err(ScopeError::NotAllowed {
            provider: provider.to_owned(),
            scope: bad.clone(),
            allowed: if allowed.is_empty() { "(none)".to_owned() } else { allowed.join(" ") },
        }),
        None => Ok(()),
    }
}

/// `POST /v1/oauth/providers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddProvider {
    /// `[a-z][a-z0-9_-]{0,31}`, unique per user.
    pub name: String,
    /// `github`, `gitlab`, `microsoft`, `google` or `custom`.
    pub preset: String,
    pub client_id: String,
    pub client_secret: SecretValue,
    /// Required for `custom`; with a preset, overrides its endpoint (GitHub Enterprise Server,
    /// a self-managed GitLab). `--auth-url` and `--token-url` go together.
    #[serde(default)]
    pub auth_url: Option<String>,
    #[serde(default)]
    pub token_url: Option<String>,
    #[serde(default)]
    pub revoke_url: Option<String>,
    /// The allowed set; empty: the preset's default scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `custom` only: the kind tokens become (`generic`, `github` or `gitlab`; default `generic`).
    #[serde(default)]
    pub kind: Option<String>,
    /// For providers whose tokens become `generic` secrets: the variable that holds the token.
    #[serde(default)]
    pub variable: Option<String>,
}

/// A registered provider, without its client secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProviderInfo {
    pub name: String,
    pub preset: String,
    /// The kind its tokens become, and the field that holds the access token.
    pub kind: String,
    pub token_field: String,
    pub client_id: String,
    pub auth_url: String,
    pub token_url: String,
    pub revoke_url: Option<String>,
    /// What deleting one of its secrets does at the provider.
    pub revocation: String,
    /// The scopes a connection may ask for.
    pub scopes: Vec<String>,
    /// The redirect URI to register with the provider's OAuth app.
    pub redirect_uri: String,
    pub created_at: String,
}

/// `PATCH /v1/oauth/providers/{name}`: change what is given, keep the rest. The name, the
/// preset and the kind its tokens become cannot change (secrets depend on them).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditProvider {
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<SecretValue>,
    /// With `token_url`: both endpoints of the same server.
    #[serde(default)]
    pub auth_url: Option<String>,
    #[serde(default)]
    pub token_url: Option<String>,
    /// `Some("")` removes the revocation endpoint.
    #[serde(default)]
    pub revoke_url: Option<String>,
    /// The new allowed set (replaces the old one).
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
}

/// The answer to `DELETE /v1/oauth/providers/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProviderRemoved {
    pub name: String,
}

/// `POST /v1/oauth/connect`: start an authorization that makes a new secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connect {
    pub provider: String,
    /// The secret to make.
    pub name: String,
    /// Within the provider's allowed set; empty: all of it.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// `POST /v1/oauth/reconnect`: authorize an OAuth secret again (new tokens, other scopes).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconnect {
    pub name: String,
    /// Empty: the scopes it was granted last time.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// `POST /v1/oauth/refresh`: refresh an OAuth secret's token now.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshNow {
    pub name: String,
}

/// An authorization that waits for the user: open `authorization_url` in a browser.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthorizationStarted {
    /// For `GET /v1/oauth/authorizations/{id}`.
    pub id: String,
    pub provider: String,
    pub secret_name: String,
    /// The scopes asked for, shown to the user by the provider.
    pub scopes: Vec<String>,
    /// Holds the single-use `state`; valid until `expires_at`.
    pub authorization_url: String,
    pub redirect_uri: String,
    pub expires_at: String,
}

/// Where an authorization is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthorizationState {
    /// Waiting for the callback.
    Pending,
    /// The callback came; the broker is exchanging the code.
    Exchanging,
    /// The secret is stored.
    Done,
    /// The provider refused, or the exchange failed; `message` says why.
    Failed,
    /// No callback within its 10 minutes.
    Expired,
    /// The user gave up (`connect` timed out).
    Cancelled,
}

impl AuthorizationState {
    /// Whether it can still change.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Exchanging)
    }
}

/// `GET /v1/oauth/authorizations/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthorizationStatus {
    pub id: String,
    pub provider: String,
    pub secret_name: String,
    pub state: AuthorizationState,
    /// The scopes asked for.
    pub scopes: Vec<String>,
    /// For `failed`, `expired` and `cancelled`: what happened and what to do.
    pub message: Option<String>,
    pub expires_at: String,
    /// For `done`: the secret (its granted scopes are in `oauth.scopes`).
    pub secret: Option<SecretMeta>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_consistent() {
        for p in PRESETS {
            assert!(crate::catalog::kind(p.kind).is_some(), "{}", p.name);
            assert!(token_field(p.kind, DEFAULT_GENERIC_VARIABLE).is_some(), "{}", p.name);
            assert_eq!(p.revoke_url.is_none(), p.no_revocation.is_some(), "{}", p.name);
            assert_eq!(p.auth_url.is_none(), p.name == "custom");
            for s in p.default_scopes.iter().chain(p.implied_scopes) {
                assert!(is_valid_scope(s), "{s}");
                if let Some(accepted) = p.accepted_scopes {
                    assert!(accepted.contains(s), "{}: {s}", p.name);
                }
            }
        }
        for (kind, field) in TOKEN_KINDS {
            let k = crate::catalog::kind(kind).unwrap();
            assert!(k.fields.iter().any(|f| f.name == *field && f.required), "{kind}");
        }
    }

    #[test]
    fn scopes_parse_both_separators_and_check_form() {
        assert_eq!(parse_scopes("repo,read:org"), ["repo", "read:org"]);
        assert_eq!(parse_scopes(" api  read_user api "), ["api", "read_user"]);
        assert!(is_valid_scope("https://graph.microsoft.com/User.Read"));
        assert!(!is_valid_scope("a b") && !is_valid_scope("a\"b") && !is_valid_scope(""));
        assert_eq!(check_scopes(&["a".into(), "a".into()]).unwrap(), ["a"]);
        assert!(matches!(check_scopes(&["x y".into()]), Err(ScopeError::Invalid(_))));
        let gh = preset("github").unwrap();
        assert!(check_preset_scopes(gh, &["repo".into()]).is_ok());
        let e = check_preset_scopes(gh, &["api".into()]).unwrap_err().to_string();
        assert!(e.starts_with("the github preset does not know the scope 'api'"), "{e}");
        let e = check_allowed("gh", &["repo".into()], &["repo".into(), "gist".into()]);
        assert!(e.unwrap_err().to_string().contains("not 'gist'"));
    }

    #[test]
    fn provider_names() {
        assert!(is_valid_provider_name("github-work"));
        assert!(!is_valid_provider_name("GitHub") && !is_valid_provider_name("1x"));
        assert!(!is_valid_provider_name(&"a".repeat(33)));
    }
}
