//! The broker's user API: JSON over HTTPS with a bearer token (`Authorization: Bearer <token>`).
//!
//! Routes (all under the broker's base URL):
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/healthz` | | `{"status":"ok"}` |
//! | GET | `/v1/kinds` | | [`crate::catalog::CatalogView`] |
//! | GET | `/v1/meta` | (no token) | [`crate::meta::Meta`]: limits, audit actions, alert names, the OAuth redirect URI |
//! | POST | `/v1/secrets` | [`CreateSecret`] | [`SecretMeta`] (201) |
//! | GET | `/v1/secrets` | | `Vec<SecretMeta>` |
//! | GET | `/v1/secrets/{name}` | | [`SecretMeta`] |
//! | PATCH | `/v1/secrets/{name}` | [`EditSecret`] | [`SecretMeta`] (a new version) |
//! | DELETE | `/v1/secrets/{name}` | | [`Deleted`] |
//! | GET | `/v1/secrets/{name}/history[?limit&before]` | | `Vec<AuditEvent>` (a page) |
//! | POST | `/v1/secrets/{name}/compromised` | | [`Compromised`]: deactivated everywhere, marked, revoked where it can be, rotation steps |
//! | POST | `/v1/sessions` | [`CreateSession`] | [`SessionCreated`] (201) |
//! | GET | `/v1/sessions` | | `Vec<SessionInfo>` |
//! | GET | `/v1/sessions/{id}` | | [`SessionInfo`] |
//! | POST | `/v1/sessions/{id}/end` | | [`SessionInfo`] |
//! | POST | `/v1/sessions/{id}/activate` | [`Activation`] | [`SessionInfo`] |
//! | POST | `/v1/sessions/{id}/deactivate` | [`Activation`] | [`SessionInfo`] |
//! | GET | `/v1/activations` | | `Vec<ActivationInfo>`: every secret active in a live session of the caller's, with the time left |
//! | GET | `/v1/audit[?limit&before]` | | `Vec<AuditEvent>`: a page of the caller's audit trail (the newest `limit`, at most and by default 10,000, with `seq` below `before`); a full page names the next one's `before` in the `Maestro-Next-Before` header |
//! | GET | `/v1/audit?secret&session&action&command&uid&since&until&after&cursor` | | `Vec<AuditEvent>`: the same, filtered (docs/broker.md, "History and export"); the next page's cursor is in the `Maestro-Next-Cursor` header |
//! | GET | `/v1/secrets/{name}/usage` | | [`SecretUsage`]: uses per session, command and day |
//! | POST | `/v1/oauth/providers` | [`crate::oauth::AddProvider`] | [`crate::oauth::ProviderInfo`] (201) |
//! | GET | `/v1/oauth/providers` | | `Vec<ProviderInfo>` |
//! | POST | `/v1/oauth/connect` | [`crate::oauth::Connect`] | [`crate::oauth::AuthorizationStarted`] (201) |
//! | POST | `/v1/oauth/reconnect` | [`crate::oauth::Reconnect`] | [`crate::oauth::AuthorizationStarted`] (201) |
//! | GET | `/v1/oauth/authorizations/{id}` | | [`crate::oauth::AuthorizationStatus`] |
//! | POST | `/v1/oauth/authorizations/{id}/cancel` | | [`crate::oauth::AuthorizationStatus`] |
//! | POST | `/v1/oauth/refresh` | [`crate::oauth::RefreshNow`] | [`SecretMeta`] |
//! | GET | `/v1/oauth/callback?code&state` | (no token: the `state` is the capability) | a short HTML page |
//!
//! No route of this API ever returns a secret value: values travel one way, in.
//! Every error is an HTTP 4xx/5xx with an [`ApiError`] body.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::SecretValue;
use crate::catalog::seal::Exposure;

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    pub error: ErrorCode,
    /// One line: what went wrong and what to do. Never contains a secret value.
    pub message: String,
    /// The request's field at fault, when there is one (`name`, `tags`, `description`,
    /// `label`, `hosts`, `exposure`, or a field of the secret's kind), so that a form can
    /// show the message beside its input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// What kind of error an [`ApiError`] is; stable, for programs to match on.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request body is not the JSON this route expects.
    MalformedJson,
    /// A secret name does not match `[A-Z][A-Z0-9_]{0,63}`.
    InvalidName,
    /// The kind is not in the catalog.
    UnknownKind,
    /// A required field of the kind is missing.
    MissingField,
    /// A field is not one of the kind's, or its value fails the kind's validation.
    InvalidField,
    /// A value, description or body is larger than its limit.
    TooLarge,
    /// More fields, tags or names than allowed.
    TooMany,
    /// Any other invalid argument (bad TTL, empty list).
    BadRequest,
    /// Missing or invalid credentials (token or certificate).
    Unauthorized,
    /// Valid credentials that may not do this (an ended session's certificate).
    Forbidden,
    /// No such secret or session (for this user).
    NotFound,
    /// The name is already taken.
    AlreadyExists,
    /// Two active secrets would provide the same variable or file.
    Conflict,
    /// The session has ended; it cannot change any more.
    SessionEnded,
    /// The enrollment token is unknown, used or expired.
    InvalidToken,
    /// A stored ciphertext failed its integrity check.
    Integrity,
    /// The OAuth flow failed (provider error, bad state, refused refresh).
    OAuth,
    /// A fault of the broker itself; the log says more.
    Internal,
    /// A quota was reached (a session's usage records); retry after the `Retry-After` header.
    QuotaReached,
    /// The request body did not arrive in time.
    Timeout,
    /// The exposure or hosts do not fit the kind: it cannot be sealed, a host is not one of
    /// the kind's, a sealed generic secret names none, or hosts were given for a plain secret.
    InvalidExposure,
}

/// `POST /v1/secrets`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSecret {
    pub name: String,
    pub kind: String,
    #[serde(default)]
    pub fields: BTreeMap<String, SecretValue>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// `sealed`: the sandbox gets placeholders and the agent sends the values only to the
    /// secret's hosts. Absent means plain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<Exposure>,
    /// For a sealed secret: host patterns (`api.example.com`, `*.example.com`) that narrow the
    /// kind's default hosts (required for `generic`). Empty: the kind's defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Rules turned off for this secret (names of `crate::alerts::RULES`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts_off: Option<Vec<String>>,
    /// What happens on its alerts; absent: the user's default (`PUT /v1/alerts/config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_alert: Option<Vec<crate::alerts::AlertAction>>,
    /// How long an activation lasts when `activate` gives no `for_seconds`; absent: until the
    /// session ends (or `activation_max_seconds`, when that is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_default_seconds: Option<u64>,
    /// The longest activation allowed; a longer `for_seconds` is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_max_seconds: Option<u64>,
    /// How often its value should change: past this age it is marked as due for rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_every_seconds: Option<u64>,
}

/// `PATCH /v1/secrets/{name}`: makes a new version. Fields named in `fields` are set (added or
/// replaced), fields in `remove_fields` are dropped, the others are kept. The old version is gone.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditSecret {
    /// Changing the kind replaces every field: `fields` must then hold the whole new set.
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub fields: BTreeMap<String, SecretValue>,
    #[serde(default)]
    pub remove_fields: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// `Some` replaces the tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// `Some` changes the exposure (`plain` drops the hosts the user named).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<Exposure>,
    /// `Some` replaces the hosts the user named; `Some(empty)` goes back to the kind's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// `Some` replaces the rules turned off for this secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts_off: Option<Vec<String>>,
    /// `Some` replaces what happens on its alerts (`Some(empty)`: nothing at all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_alert: Option<Vec<crate::alerts::AlertAction>>,
    /// Go back to the user's default actions.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_on_alert: bool,
    /// `Some` replaces the default activation time; `Some(0)` removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_default_seconds: Option<u64>,
    /// `Some` replaces the longest activation allowed; `Some(0)` removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_max_seconds: Option<u64>,
    /// `Some` replaces the rotation period; `Some(0)` removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_every_seconds: Option<u64>,
}

/// A secret's metadata: everything but its values.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SecretMeta {
    pub name: String,
    pub kind: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    /// Starts at 1, one more with each edit (and each OAuth refresh).
    pub version: u64,
    pub field_names: Vec<String>,
    /// The environment variables it provides when active.
    pub variables: Vec<String>,
    /// The files it provides under the mount, relative to the mount.
    pub files: Vec<String>,
    /// RFC 3339 times.
    pub created_at: String,
    pub updated_at: String,
    pub last_used_at: Option<String>,
    /// Sessions that used it (fetched, injected or read a file), most recent first.
    pub used_by_sessions: Vec<String>,
    /// Live sessions in which it is active now.
    pub active_in_sessions: Vec<String>,
    /// Present for secrets made by an OAuth connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthMeta>,
    /// `plain` (the sandbox sees the values) or `sealed` (it sees placeholders). Absent (an
    /// older broker) means plain.
    #[serde(default)]
    pub exposure: Exposure,
    /// For a sealed secret: the hosts its values may be sent to (the user's list, or else the
    /// kind's defaults). Empty for a plain secret.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The hosts the user named (a subset of the kind's defaults); empty when the secret uses
    /// the kind's defaults.
    #[serde(default)]
    pub user_hosts: Vec<String>,
    /// The values of the fields that are not secret (region, host, port, user, database,
    /// domain: `shown` in the catalog). Every other field stays write-only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shown_fields: BTreeMap<String, String>,
    /// When it was declared compromised (RFC 3339; `maestro secrets compromised`): it cannot be
    /// activated until an edit gives it a new value. Absent: not compromised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compromised_at: Option<String>,
    /// Alerts of this secret not acknowledged yet (`maestro alerts ls`).
    #[serde(default)]
    pub alerts: u64,
    /// The team that owns it (its `name` is then `team/NAME`); absent: the caller's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Rules turned off for this secret.
    #[serde(default)]
    pub alerts_off: Vec<String>,
    /// Its own actions on an alert; absent: the user's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_alert: Option<Vec<crate::alerts::AlertAction>>,
    /// How long an activation lasts when none is given (absent: until the session ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_default_seconds: Option<u64>,
    /// The longest activation allowed (absent: no limit but the session's end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_max_seconds: Option<u64>,
    /// How often its value should change (absent: no rotation period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_every_seconds: Option<u64>,
    /// When its value last changed (RFC 3339): created, or an edit that gave a field a new
    /// value (an edit of its description, tags or settings does not count). Absent from an
    /// older broker. Ages and times left are left to clients: an answer that does not change
    /// while nothing changes can be compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_changed_at: Option<String>,
    /// Its age is past `rotate_every_seconds`: rotate its value at the provider, then edit it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rotation_due: bool,
    /// Where it is active now, with the time left (a live session of its owner's each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activations: Vec<ActivationInfo>,
}

/// One activation: a secret active in a live session, and until when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActivationInfo {
    pub secret: String,
    pub session: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_label: Option<String>,
    /// RFC 3339.
    pub activated_at: String,
    /// When the broker deactivates it (RFC 3339); absent: when the session ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// OAuth state of a secret, without its tokens.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OAuthMeta {
    pub provider: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<String>,
    pub needs_reauth: bool,
    /// When `needs_reauth`: why, and the command to run.
    pub reauth_hint: Option<String>,
    pub last_refresh_at: Option<String>,
}

/// `DELETE /v1/secrets/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Deleted {
    pub name: String,
    /// Sessions it was removed from.
    pub deactivated_in: Vec<String>,
    /// For OAuth secrets: what the revocation at the provider did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<String>,
}

/// The answer to `POST /v1/secrets/{name}/compromised`: what the leak response did, and what the
/// owner does next at the provider.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Compromised {
    pub name: String,
    pub kind: String,
    /// RFC 3339: when it was marked (the first mark, if it was already compromised).
    pub compromised_at: String,
    /// Live sessions it was deactivated in (their agents drop it at once).
    pub deactivated_in: Vec<String>,
    /// What revocation at the provider did, in one line: `revoked ...`, `not revoked: ...`
    /// (not revocable by Maestro, and what to do instead) or `revocation at URL failed ...`.
    pub revocation: String,
    /// How to rotate the value at its provider, from the catalog.
    pub rotation: RotationSteps,
}

/// How to rotate a kind's value at its provider (the catalog's `rotation`, owned).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RotationSteps {
    /// One line of steps.
    pub steps: String,
    /// The provider's documentation, when there is a page for it.
    pub link: Option<String>,
}

impl From<&crate::catalog::Rotation> for RotationSteps {
    fn from(r: &crate::catalog::Rotation) -> Self {
        Self { steps: r.steps.to_owned(), link: r.link.map(str::to_owned) }
    }
}

/// `POST /v1/sessions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// Defaults to 12 hours; at most 30 days.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    #[serde(default)]
    pub label: Option<String>,
    /// Serve decoy credentials in the session and flag any read of them (`--decoys`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub decoys: bool,
}

/// The answer to `POST /v1/sessions`: the session and its one-time enrollment token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionCreated {
    pub session: SessionInfo,
    /// Single use, valid for 10 minutes. Shown once; the broker keeps only a hash.
    pub enrollment_token: SecretValue,
    pub enrollment_expires_at: String,
    /// The broker's CA certificate (PEM), which a sandbox needs to trust the broker.
    pub ca_pem: String,
    /// The broker's `--public-url`, when it has one: the URL an enrollment bundle should carry,
    /// since the URL a client used (often `https://127.0.0.1:8443`) may not be reachable from a
    /// sandbox. Absent: use the URL the client talked to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_url: Option<String>,
}

/// Whether a session can still be used.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Live,
    Ended,
}

/// A session as its owner sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: String,
    pub label: Option<String>,
    pub state: SessionState,
    pub created_at: String,
    pub expires_at: String,
    pub ended_at: Option<String>,
    /// `user`, `ttl`, ... when ended.
    pub ended_reason: Option<String>,
    /// Names of its active secrets, sorted.
    pub active: Vec<String>,
    /// Whether an agent holds its event stream open now (as seen by this broker).
    pub agent_connected: bool,
    pub enrolled: bool,
    /// Whether it was created with decoys.
    #[serde(default)]
    pub decoys: bool,
    /// Its active secrets with the time each has left (sorted by name, like `active`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activations: Vec<ActivationInfo>,
}

/// `POST /v1/sessions/{id}/activate` and `/deactivate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Activation {
    pub names: Vec<String>,
    /// `activate` only: how long the activation lasts (`--for`); absent: each secret's default.
    /// Longer than a secret's maximum is refused. Activating an active secret again sets its
    /// time anew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_seconds: Option<u64>,
}

/// What an audit record is about.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    Created,
    Edited,
    Deleted,
    Activated,
    Deactivated,
    /// The agent fetched the secret's material from the broker.
    Fetched,
    /// `maestro-exec` put its variables into a command's environment.
    Injected,
    /// A process opened one of its files under the mount.
    FileRead,
    /// Access refused (wrong uid, inactive secret, ended session, bad certificate).
    Denied,
    SessionCreated,
    SessionEnded,
    Enrolled,
    Refreshed,
    RefreshFailed,
    /// The agent's egress proxy put a sealed secret's real value into an outbound request.
    Substituted,
    /// A sealed secret's placeholder was sent towards a host it does not belong to; refused.
    LeakAttempt,
    /// A decoy credential of the session was read or used.
    DecoyRead,
    /// `maestro-exec scan` found a secret's value or placeholder in a file or a git object.
    ScanFinding,
    /// The owner declared the secret compromised (`maestro secrets compromised`).
    Compromised,
    /// An activation's time (`activate --for`, or the secret's default) ran out: deactivated.
    Expired,
    /// A team was created or its members changed (`maestro teams`); `detail` says how.
    TeamChanged,
    /// An API token or a service account was created, revoked or removed (`maestro tokens`,
    /// `maestro service-accounts`); `detail` names it, never the token.
    TokenChanged,
}

impl AuditAction {
    /// Every action, in the order of the enum.
    pub const ALL: [AuditAction; 22] = [
        Self::Created,
        Self::Edited,
        Self::Deleted,
        Self::Activated,
        Self::Deactivated,
        Self::Fetched,
        Self::Injected,
        Self::FileRead,
        Self::Denied,
        Self::SessionCreated,
        Self::SessionEnded,
        Self::Enrolled,
        Self::Refreshed,
        Self::RefreshFailed,
        Self::Substituted,
        Self::LeakAttempt,
        Self::DecoyRead,
        Self::ScanFinding,
        Self::Compromised,
        Self::Expired,
        Self::TeamChanged,
        Self::TokenChanged,
    ];

    /// The actions that count as a use of a secret (last use, sessions that used it).
    pub const USES: [AuditAction; 4] =
        [Self::Fetched, Self::Injected, Self::FileRead, Self::Substituted];

    /// The name the broker stores in its audit table: the same as the JSON name, and a stored
    /// name never changes (old records must read back).
    pub fn stored_name(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Edited => "edited",
            Self::Deleted => "deleted",
            Self::Activated => "activated",
            Self::Deactivated => "deactivated",
            Self::Fetched => "fetched",
            Self::Injected => "injected",
            Self::FileRead => "file_read",
            Self::Denied => "denied",
            Self::SessionCreated => "session_created",
            Self::SessionEnded => "session_ended",
            Self::Enrolled => "enrolled",
            Self::Refreshed => "refreshed",
            Self::RefreshFailed => "refresh_failed",
            Self::Substituted => "substituted",
            Self::LeakAttempt => "leak_attempt",
            Self::DecoyRead => "decoy_read",
            Self::ScanFinding => "scan_finding",
            Self::Compromised => "compromised",
            Self::Expired => "expired",
            Self::TeamChanged => "team_changed",
            Self::TokenChanged => "token_changed",
        }
    }

    /// The action of a stored name.
    pub fn from_stored_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.stored_name() == name)
    }
}

/// One append-only audit record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEvent {
    /// Increasing; gives the order.
    pub seq: i64,
    pub at: String,
    pub action: AuditAction,
    pub secret: Option<String>,
    pub session: Option<String>,
    /// For agent reports: the process that used the secret.
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    pub command: Option<String>,
    /// A file path, a refusal reason; never a value.
    pub detail: Option<String>,
    /// For an agent's coalesced report: how many uses the record stands for (absent: one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// For a coalesced report: when the last of its uses happened (`at` is the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_at: Option<String>,
    /// The executable the kernel reported for `pid` (its full path); `command` is its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// The command name the process claimed for itself, when it differs: a detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_command: Option<String>,
    /// The label of `session`, when it has one (so that lists show labels, not only ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_label: Option<String>,
    /// In a team secret's history: the user whose trail holds the record (the member whose
    /// session activated or used it); absent: the team's own records, or a user's trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// The header of an audit listing that carries the cursor of the next page (`?cursor=`):
/// older records for a listing from the newest or with `before`, newer ones with `after`.
pub const NEXT_CURSOR_HEADER: &str = "maestro-next-cursor";

/// `GET /v1/secrets/{name}/usage`: how a secret has been used, from its audit records
/// (`fetched`, `injected`, `file_read`, `substituted`). A coalesced record counts its `count`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SecretUsage {
    pub secret: String,
    /// Uses in all.
    pub uses: u64,
    /// Audit records they are in (fewer than `uses` when an agent coalesced them).
    pub records: u64,
    pub first_used_at: Option<String>,
    pub last_used_at: Option<String>,
    /// Per session, most recently used first.
    pub sessions: Vec<SessionUsage>,
    /// Per command, most uses first.
    pub commands: Vec<CommandUsage>,
    /// Per UTC day that had uses, oldest first.
    pub days: Vec<DayUsage>,
}

/// A secret's uses in one session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionUsage {
    /// `None` for uses recorded without a session.
    pub session: Option<String>,
    pub label: Option<String>,
    pub uses: u64,
    pub first_used_at: String,
    pub last_used_at: String,
}

/// A secret's uses by one command (`None`: not reported, e.g. a fetch by the agent).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommandUsage {
    pub command: Option<String>,
    pub uses: u64,
    pub last_used_at: String,
}

/// A secret's uses on one UTC day.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DayUsage {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub uses: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_audit_names_are_the_json_names_and_read_back() {
        for action in AuditAction::ALL {
            let json = serde_json::to_value(action).unwrap();
            assert_eq!(json, serde_json::json!(action.stored_name()));
            assert_eq!(AuditAction::from_stored_name(action.stored_name()), Some(action));
        }
        assert_eq!(AuditAction::from_stored_name("unknown"), None);
    }
}
