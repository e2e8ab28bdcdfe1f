//! Errors as the API answers them: an HTTP status and an [`ApiError`] body with a one-line
//! message that says what went wrong and what to do. A [`DomainError`] becomes one here, in
//! one place (`From<DomainError> for Failure`); the few refusals that are HTTP's own (a wrong
//! method or content type, a body too large or too slow) are made here directly.

use crate::domain::error::{DomainError, Origin};
use crate::store::StoreError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maestro_wire::api::{ApiError, ErrorCode};

/// A failed request.
#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub body: ApiError,
    /// Seconds for a `Retry-After` header (a quota reached).
    pub retry_after: Option<u64>,
}

/// The HTTP status that goes with an error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::MalformedJson
        | ErrorCode::InvalidName
        | ErrorCode::UnknownKind
        | ErrorCode::MissingField
        | ErrorCode::InvalidField
        | ErrorCode::TooMany
        | ErrorCode::BadRequest
        | ErrorCode::InvalidExposure
        | ErrorCode::OAuth => StatusCode::BAD_REQUEST,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Unauthorized | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::AlreadyExists | ErrorCode::Conflict | ErrorCode::SessionEnded => {
            StatusCode::CONFLICT
        }
        ErrorCode::Integrity | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::QuotaReached => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Timeout => StatusCode::REQUEST_TIMEOUT,
    }
}

impl Failure {
    /// A failure with the usual status of its code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::with_status(status_of(code), code, message)
    }

    /// A failure with an explicit status.
    pub fn with_status(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ApiError { error: code, message: message.into(), field: None },
            retry_after: None,
        }
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
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// The one place where a domain error becomes an HTTP answer: the code's usual status, or 502
/// when a third party failed.
impl From<DomainError> for Failure {
    fn from(e: DomainError) -> Self {
        let status = match e.origin {
            Origin::Here => status_of(e.code),
            Origin::Upstream => StatusCode::BAD_GATEWAY,
        };
        let mut failure = Self::with_status(status, e.code, e.message);
        failure.retry_after = e.retry_after;
        failure.body.field = e.field;
        failure
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        DomainError::from(e).into()
    }
}

/// Handlers' result type.
pub type ApiResult<T> = Result<T, Failure>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_errors_keep_their_code_message_and_retry_after() {
        let mut quota = DomainError::new(ErrorCode::QuotaReached, "wait");
        quota.retry_after = Some(7);
        let f = Failure::from(quota);
        assert_eq!(
            (f.status, f.body.error, f.retry_after),
            (StatusCode::TOO_MANY_REQUESTS, ErrorCode::QuotaReached, Some(7))
        );
        assert_eq!(f.body.message, "wait");
        let f = Failure::from(DomainError::upstream(ErrorCode::OAuth, "provider down"));
        assert_eq!((f.status, f.body.error), (StatusCode::BAD_GATEWAY, ErrorCode::OAuth));
        let f = Failure::from(StoreError::SessionEnded);
        assert_eq!((f.status, f.body.error), (StatusCode::CONFLICT, ErrorCode::SessionEnded));
    }
}
