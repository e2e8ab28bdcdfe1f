//! The SQLite schema, as numbered migrations applied in order at start-up.
//!
//! Times are unix seconds. Ids of secrets, data keys and sessions are random text made by the
//! broker (they are part of the associated data of ciphertexts, so they exist before the row).
//! The audit table refuses UPDATE and DELETE with triggers: it is append-only even for code
//! that forgets.

/// `(version, statements)`, applied in order; `PRAGMA user_version` records the last one.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_hash BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE data_keys (
    id TEXT PRIMARY KEY,
    wrapped BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE secrets (
    id TEXT PRIMARY KEY,
    owner_id INTEGER NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    description TEXT,
    tags TEXT NOT NULL,
    field_names TEXT NOT NULL,
    version INTEGER NOT NULL,
    data_key_id TEXT NOT NULL UNIQUE REFERENCES data_keys(id),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (owner_id, name)
);

CREATE TABLE secret_fields (
    secret_id TEXT NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    ciphertext BLOB NOT NULL,
    PRIMARY KEY (secret_id, name)
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    owner_id INTEGER NOT NULL REFERENCES users(id),
    label TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    ended_at INTEGER,
    ended_reason TEXT,
    enrolled INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sessions_owner ON sessions (owner_id, created_at);
CREATE INDEX sessions_live_expiry ON sessions (expires_at) WHERE ended_at IS NULL;

CREATE TABLE activations (
    session_id TEXT NOT NULL REFERENCES sessions(id),
    secret_id TEXT NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    activated_at INTEGER NOT NULL,
    PRIMARY KEY (session_id, secret_id)
);
CREATE INDEX activations_secret ON activations (secret_id);

CREATE TABLE enrollment_tokens (
    token_hash BLOB PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);

CREATE TABLE certificates (
    serial TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    not_before INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    issued_at INTEGER NOT NULL,
    reason TEXT NOT NULL
);

CREATE TABLE audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id INTEGER NOT NULL,
    at INTEGER NOT NULL,
    action TEXT NOT NULL,
    secret_id TEXT,
    secret_name TEXT,
    session_id TEXT,
    pid INTEGER,
    uid INTEGER,
    command TEXT,
    detail TEXT
);
CREATE INDEX audit_owner ON audit (owner_id, seq);
CREATE INDEX audit_secret ON audit (secret_id, seq);

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"#,
    ),
    // OAuth providers, authorizations and token state (see `super::oauth`).
    (2, OAUTH),
    // Hardening (issue 9): which certificates of a session are accepted (the newest, and the
    // one before it for a short overlap after a renewal); an index for a session's activation
    // history (what its agent may report use of); a coalesced usage record's count and last
    // time, and the executable and claimed name of its process. Existing sessions keep their
    // newest certificate; existing records stand for one use each.
    (
        3,
        r#"
ALTER TABLE sessions ADD COLUMN cert_serial TEXT;
ALTER TABLE sessions ADD COLUMN previous_serial TEXT;
ALTER TABLE sessions ADD COLUMN previous_until INTEGER;
UPDATE sessions SET cert_serial = (
    SELECT c.serial FROM certificates c WHERE c.session_id = sessions.id
    ORDER BY c.issued_at DESC, c.rowid DESC LIMIT 1
);
CREATE INDEX audit_session ON audit (session_id, action);
ALTER TABLE audit ADD COLUMN use_count BIGINT;
ALTER TABLE audit ADD COLUMN last_at BIGINT;
ALTER TABLE audit ADD COLUMN exe TEXT;
ALTER TABLE audit ADD COLUMN claimed_command TEXT;
"#,
    ),
    // Sealed secrets (issue 11): a secret's exposure (`plain`, as every secret so far, or
    // `sealed`) and the hosts its owner named (a JSON list; empty: the kind's defaults).
    (
        4,
        r#"
ALTER TABLE secrets ADD COLUMN exposure TEXT NOT NULL DEFAULT 'plain';
ALTER TABLE secrets ADD COLUMN hosts TEXT NOT NULL DEFAULT '[]';
"#,
    ),
    // History that scales (issue 12): filtered pages of a user's trail walk an index by filter
    // then `seq` (secret name, session, action, command), and a secret's usage summary is one
    // index-only scan of its uses (SQLite has no INCLUDE: the extra columns are key columns).
    (
        5,
        r#"
CREATE INDEX audit_owner_secret_name ON audit (owner_id, secret_name, seq);
CREATE INDEX audit_owner_session ON audit (owner_id, session_id, seq);
CREATE INDEX audit_owner_action ON audit (owner_id, action, seq);
CREATE INDEX audit_owner_command ON audit (owner_id, command, seq);
CREATE INDEX audit_usage ON audit
    (secret_id, action, owner_id, session_id, command, at, use_count, last_at);
"#,
    ),
    // Unusual-usage alerts and decoys (issue 12 parts 2 and 3): the alerts themselves (with
    // their webhook delivery state: a lease so that one broker of several delivers each), what
    // the rules know of each secret's past (commands and session labels seen, use counts), the
    // per-secret and per-user settings (rules off, actions, the webhook with its signing secret
    // sealed under its own data key), whether a session has decoys, and an index for the
    // last minute of a secret's uses (`burst`).
    (
        6,
        r#"
ALTER TABLE sessions ADD COLUMN decoys INTEGER NOT NULL DEFAULT 0;
CREATE INDEX audit_secret_at ON audit (secret_id, at);

CREATE TABLE alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id INTEGER NOT NULL REFERENCES users(id),
    at INTEGER NOT NULL,
    rule TEXT NOT NULL,
    reason TEXT NOT NULL,
    secret_id TEXT,
    secret_name TEXT,
    session_id TEXT,
    command TEXT,
    uid INTEGER,
    actions TEXT NOT NULL,
    acked_at INTEGER,
    webhook TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at_ms INTEGER,
    lease_until_ms INTEGER
);
CREATE INDEX alerts_owner ON alerts (owner_id, id);
CREATE INDEX alerts_owner_secret ON alerts (owner_id, secret_name, id);
CREATE INDEX alerts_owner_session ON alerts (owner_id, session_id, id);
CREATE INDEX alerts_unacked ON alerts (owner_id, secret_name) WHERE acked_at IS NULL;
CREATE INDEX alerts_webhook_due ON alerts (next_at_ms) WHERE webhook = 'pending';

CREATE TABLE alert_seen (
    secret_id TEXT NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    what TEXT NOT NULL,
    value TEXT NOT NULL,
    first_at INTEGER NOT NULL,
    PRIMARY KEY (secret_id, what, value)
);
CREATE INDEX alert_seen_first ON alert_seen (secret_id, what, first_at);

CREATE TABLE alert_profiles (
    secret_id TEXT PRIMARY KEY REFERENCES secrets(id) ON DELETE CASCADE,
    first_at INTEGER NOT NULL,
    uses INTEGER NOT NULL,
    outside_exec_reads INTEGER NOT NULL
);

CREATE TABLE alert_secret_settings (
    secret_id TEXT PRIMARY KEY REFERENCES secrets(id) ON DELETE CASCADE,
    rules_off TEXT NOT NULL,
    on_alert TEXT
);

CREATE TABLE alert_user_settings (
    owner_id INTEGER PRIMARY KEY REFERENCES users(id),
    on_alert TEXT NOT NULL,
    webhook_url TEXT,
    data_key_id TEXT UNIQUE REFERENCES data_keys(id),
    webhook_secret BLOB,
    generation INTEGER NOT NULL DEFAULT 0
);
CREATE TRIGGER alert_user_settings_drop_key AFTER UPDATE OF data_key_id ON alert_user_settings
WHEN OLD.data_key_id IS NOT NULL AND OLD.data_key_id IS NOT NEW.data_key_id
BEGIN DELETE FROM data_keys WHERE id = OLD.data_key_id; END;
"#,
    ),
    // Leak response (issue 12): when the owner declared a secret compromised (`maestro secrets
    // compromised`); it cannot be activated until an edit gives it a new value, which clears it.
    (
        7,
        r#"
ALTER TABLE secrets ADD COLUMN compromised_at INTEGER;
"#,
    ),
    // The life of secrets (issue 13 parts 5 and 6): when an activation ends (`activate --for`;
    // NULL: at the session's end) with an index for the expiry task, a secret's default and
    // longest activation, its rotation period, and when its value last changed (existing
    // secrets: their last edit, the best that is known).
    (
        8,
        r#"
ALTER TABLE activations ADD COLUMN expires_at INTEGER;
CREATE INDEX activations_expiry ON activations (expires_at) WHERE expires_at IS NOT NULL;
ALTER TABLE secrets ADD COLUMN activation_default INTEGER;
ALTER TABLE secrets ADD COLUMN activation_max INTEGER;
ALTER TABLE secrets ADD COLUMN rotate_every INTEGER;
ALTER TABLE secrets ADD COLUMN value_changed_at INTEGER NOT NULL DEFAULT 0;
UPDATE secrets SET value_changed_at = updated_at;
"#,
    ),
    // API tokens and service accounts (issue 13 part 3). Tokens leave `users.token_hash`: each
    // becomes a row of `api_tokens` (its SHA-256 only) with a public id, scopes, an expiry and
    // when it was last used; a user's token from before is kept as `initial` with `admin`, and
    // `users.token_hash` keeps only a random placeholder (the column is NOT NULL UNIQUE, which
    // SQLite cannot drop). A service account is a principal owned by a user (`owner_kind`
    // 'user'; teams will add 'team'); its tokens act for that owner within their scopes.
    // `users.disabled_at`: a disabled user's tokens are refused.
    (
        9,
        r#"
ALTER TABLE users ADD COLUMN disabled_at INTEGER;

CREATE TABLE service_accounts (
    id INTEGER PRIMARY KEY,
    owner_kind TEXT NOT NULL DEFAULT 'user',
    owner_id INTEGER NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    description TEXT,
    created_at INTEGER NOT NULL,
    UNIQUE (owner_kind, owner_id, name)
);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    token_hash BLOB NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES users(id),
    service_account_id INTEGER REFERENCES service_accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    last_used_at INTEGER
);
CREATE INDEX api_tokens_user ON api_tokens (user_id, created_at);

INSERT INTO api_tokens (id, token_hash, user_id, name, scopes, created_at)
    SELECT lower(hex(randomblob(8))), token_hash, id, 'initial', '["admin"]', created_at FROM users;
UPDATE users SET token_hash = randomblob(32);
"#,
    ),
    // Teams (issue 13 part 1). A team is a principal: a row of `users` with `kind` 'team' (it
    // has no token and cannot sign in), so its secrets, data keys, OAuth providers and audit
    // trail hang off one owner id exactly like a user's, and a team secret is stored once.
    // `teams` names it; `team_members` gives each member a role (owner, admin, member, viewer).
    // Activations stay rows of (session, secret): the session names the member who used it.
    (
        10,
        r#"
ALTER TABLE users ADD COLUMN kind TEXT NOT NULL DEFAULT 'user';

CREATE TABLE teams (
    id INTEGER PRIMARY KEY REFERENCES users(id),
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE team_members (
    team_id INTEGER NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id),
    role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    added_at INTEGER NOT NULL,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user ON team_members (user_id);
"#,
    ),
];

/// Migration 2: OAuth providers, authorizations and token state.
const OAUTH: &str = r#"
CREATE TABLE oauth_providers (
    id TEXT PRIMARY KEY,
    owner_id INTEGER NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    preset TEXT NOT NULL,
    kind TEXT NOT NULL,
    token_field TEXT NOT NULL,
    client_id TEXT NOT NULL,
    auth_url TEXT NOT NULL,
    token_url TEXT NOT NULL,
    revoke_url TEXT,
    scopes TEXT NOT NULL,
    data_key_id TEXT NOT NULL UNIQUE REFERENCES data_keys(id),
    client_secret BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (owner_id, name)
);
CREATE TRIGGER oauth_providers_drop_key AFTER DELETE ON oauth_providers
BEGIN DELETE FROM data_keys WHERE id = OLD.data_key_id; END;

CREATE TABLE oauth_authorizations (
    id TEXT PRIMARY KEY,
    state_hash BLOB NOT NULL UNIQUE,
    owner_id INTEGER NOT NULL REFERENCES users(id),
    provider_id TEXT NOT NULL REFERENCES oauth_providers(id) ON DELETE CASCADE,
    secret_name TEXT NOT NULL,
    reconnect_secret_id TEXT REFERENCES secrets(id) ON DELETE CASCADE,
    scopes TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX oauth_authorizations_expiry ON oauth_authorizations (expires_at);

CREATE TABLE oauth_tokens (
    secret_id TEXT PRIMARY KEY REFERENCES secrets(id) ON DELETE CASCADE,
    provider_id TEXT NOT NULL REFERENCES oauth_providers(id),
    data_key_id TEXT NOT NULL UNIQUE REFERENCES data_keys(id),
    generation INTEGER NOT NULL,
    refresh_token BLOB,
    scopes TEXT NOT NULL,
    expires_at INTEGER,
    refresh_at_ms INTEGER,
    failures INTEGER NOT NULL DEFAULT 0,
    needs_reauth TEXT,
    last_refresh_at INTEGER,
    updated_at INTEGER NOT NULL
);
CREATE INDEX oauth_tokens_due ON oauth_tokens (refresh_at_ms) WHERE needs_reauth IS NULL;
CREATE TRIGGER oauth_tokens_drop_key AFTER DELETE ON oauth_tokens
BEGIN DELETE FROM data_keys WHERE id = OLD.data_key_id; END;
"#;

/// The schema version this broker writes.
pub fn latest() -> i64 {
    MIGRATIONS.last().map(|(v, _)| *v).unwrap_or(0)
}
