//! The domain's error: a stable [`ErrorCode`] and a one-line message that says what went wrong
//! and what to do. The HTTP layer turns it into a status and an `ApiError` body in one place
//! (`crate::api::error`); tasks that are not HTTP (session expiry, OAuth refresh) log it.
//! Internal faults are logged here with their cause and carry a generic message; no message
//! ever holds a secret value.

use maestro_wire::api::ErrorCode;
use tracing::error;

use crate::store::StoreError;

/// Where the fault lies, beyond its code: the HTTP layer answers an upstream failure (an
/// OAuth provider) with 502 rather than the code's usual status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Origin {
    /// The request, or the state it found.
    #[default]
    Here,
    /// A third party the broker called (an OAuth provider).
    Upstream,
}

/// A refused or failed domain operation.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DomainError {
    pub code: ErrorCode,
    pub message: String,
    pub origin: Origin,
    /// Seconds after which the same request may succeed (a quota reached).
    pub retry_after: Option<u64>,
    /// The request's field at fault, if one is (see `ApiError::field`).
    pub field: Option<String>,
}

/// Results of domain operations.
pub type DomainResult<T> = Result<T, DomainError>;

impl DomainError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), origin: Origin::Here, retry_after: None, field: None }
    }

    /// The same error, naming the request's field at fault.
    pub fn at_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// A failure of a third party the broker called.
    pub fn upstream(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { origin: Origin::Upstream, ..Self::new(code, message) }
    }

    /// A fault of the broker: logged with its cause, reported without it.
    pub fn internal(context: &str, cause: &dyn std::fmt::Display) -> Self {
        error!(%cause, "{context}");
        Self::new(
            ErrorCode::Internal,
            format!(
                "the broker failed while {context}; retry, and see the broker log if it persists"
            ),
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
}

impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> Self {
        match e {
            // Every body that makes something names it in its `name` field.
            StoreError::AlreadyExists { what, name } => Self::new(
                ErrorCode::AlreadyExists,
                format!(
                    "{what} {name} already exists; choose another name, or change it with `maestro secrets edit {name}`"
                ),
            )
            .at_field("name"),
            StoreError::Changed { what } => Self::new(
                ErrorCode::Conflict,
                format!("the {what} changed while this request was working on it; retry"),
            ),
            StoreError::SessionEnded => Self::new(
                ErrorCode::SessionEnded,
                "the session has ended; create a new session with `maestro sessions create`",
            ),
            StoreError::TokenUnusable => Self::new(
                ErrorCode::InvalidToken,
                "the enrollment token is unknown, already used, or expired; create a new session for a new token",
            ),
            other => Self::internal("using the database", &other),
        }
    }
}
