//! Reading the audit trail: pages of a user's records (`?limit=N&before=SEQ`). What is
//! recorded is decided by each rule, in the same store transaction as its change; how actions
//! are named and shown is [`crate::audit`]'s.

use super::error::{DomainError, DomainResult};
use crate::app::App;
use crate::store::{AuditRow, UserRecord};

/// Most audit records one answer (one page) holds, and the default page size.
pub const AUDIT_PAGE: i64 = 10_000;

/// A page of audit records asked for with `?limit=N&before=SEQ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Only records with a sequence number below this (the `seq` of the oldest record of the
    /// page before); `None`: from the newest.
    pub before: Option<i64>,
    pub limit: i64,
}

impl Page {
    /// The cursor of the next (older) page when `rows` fill this one.
    pub fn next_before(&self, rows: &[AuditRow]) -> Option<i64> {
        (rows.len() as i64 >= self.limit).then(|| rows.first().map(|r| r.seq)).flatten()
    }
}

/// Reads `limit` (1 to [`AUDIT_PAGE`], default [`AUDIT_PAGE`]) and `before` (a record's `seq`).
pub fn page_of(query: Option<&str>) -> DomainResult<Page> {
    let mut page = Page { before: None, limit: AUDIT_PAGE };
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "limit" => {
                page.limit =
                    value.parse::<i64>().ok().filter(|n| (1..=AUDIT_PAGE).contains(n)).ok_or_else(
                        || {
                            DomainError::bad_request(format!(
                                "limit must be a number from 1 to {AUDIT_PAGE}"
                            ))
                        },
                    )?;
            }
            "before" => {
                page.before =
                    Some(value.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        DomainError::bad_request(
                            "before must be the seq of an audit record (a positive number)",
                        )
                    })?);
            }
            _ => {
                return Err(DomainError::bad_request(
                    "unknown query parameter; this route takes limit and before",
                ));
            }
        }
    }
    Ok(page)
}

/// A page of `user`'s audit trail.
pub async fn for_owner(app: &App, user: &UserRecord, page: Page) -> DomainResult<Vec<AuditRow>> {
    Ok(app.store.audit_for_owner(user.id, page.before, page.limit).await?)
}
