//! Size limits on everything that comes from outside. Shared so that client and server agree.

/// Largest value of one field of a secret.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;
/// Most fields one secret may have.
pub const MAX_FIELDS: usize = 32;
/// Longest description of a secret or label of a session.
pub const MAX_DESCRIPTION_BYTES: usize = 1024;
/// Most tags on one secret, and the longest tag.
pub const MAX_TAGS: usize = 32;
pub const MAX_TAG_BYTES: usize = 64;
/// Largest JSON body the broker accepts, on the routes that take a secret's values (`POST
/// /v1/secrets`, `PATCH /v1/secrets/{name}`): a secret at its limits fits, with room for
/// escaping. These routes need a user's token, checked before the body is read.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Largest body of `POST /v1/enroll` (unauthenticated) and `POST /v1/agent/renew`: a token and
/// a CSR.
pub const MAX_ENROLL_BODY_BYTES: usize = 16 * 1024;
/// Largest body of `POST /v1/agent/usage` (a full batch of reports at their limits).
pub const MAX_USAGE_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Largest body of every other route.
pub const MAX_OTHER_BODY_BYTES: usize = 1024 * 1024;
/// Most secrets named in one activation call.
pub const MAX_NAMES_PER_CALL: usize = 256;
/// Most usage reports in one batch.
pub const MAX_USAGE_BATCH: usize = 1000;
/// Longest line on the agent socket (a request, or a response holding every active value).
pub const MAX_SOCK_REQUEST_BYTES: usize = 64 * 1024;
pub const MAX_SOCK_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// `maestro-exec scan`: largest file or git object scanned (bigger ones are skipped with a
/// warning), largest chunk of content on the socket, bytes and seconds per scan connection
/// (the client reconnects before either), and scans served at once by one agent.
pub const MAX_SCAN_ITEM_BYTES: u64 = 256 * 1024 * 1024;
pub const MAX_SCAN_CHUNK_BYTES: u32 = 1024 * 1024;
pub const MAX_SCAN_CONNECTION_BYTES: u64 = 4 * 1024 * 1024 * 1024;
pub const MAX_SCAN_CONNECTION_SECS: u64 = 300;
pub const MAX_SCANS_AT_ONCE: usize = 2;
/// Longest event line on the agent event stream.
pub const MAX_EVENT_LINE_BYTES: usize = 1024 * 1024;
/// Longest CSR in PEM form.
pub const MAX_CSR_BYTES: usize = 16 * 1024;
/// Longest session TTL a user may ask for, and the default.
pub const MAX_SESSION_TTL_SECS: u64 = 30 * 24 * 3600;
pub const DEFAULT_SESSION_TTL_SECS: u64 = 12 * 3600;
/// The longest activation (`activate --for`, a secret's default or maximum): a session's
/// longest TTL, since an activation never outlives its session.
pub const MAX_ACTIVATION_SECS: u64 = MAX_SESSION_TTL_SECS;
/// The longest rotation period (`--rotate-every`): ten years.
pub const MAX_ROTATION_PERIOD_SECS: u64 = 3650 * 24 * 3600;
/// Lifetime of a one-time enrollment token.
pub const ENROLLMENT_TOKEN_TTL_SECS: u64 = 600;
/// Longest lifetime of a session client certificate.
pub const MAX_CERT_TTL_SECS: u64 = 24 * 3600;
