//! What OAuth keeps: the records and the [`OAuthStore`] trait live in the store module
//! ([`crate::store::oauth`]), so that the store does not depend on OAuth; this module names
//! them where OAuth's code looks for them.

pub use crate::store::oauth::{
    OAuthStore, PendingRecord, PendingStatus, ProviderRecord, TokenRecord, TokenView,
};
use crate::store::{AuditRecord, DataKeyRecord, SealedField, SecretRecord, StoreFuture};

/// The store of an engine that does not keep OAuth state (PostgreSQL, until it implements
/// [`OAuthStore`]): every secret reads as a non-OAuth secret, nothing is due, and the OAuth
/// routes refuse before they write (see `crate::oauth::OAuth::enabled`).
#[derive(Debug, Default)]
pub struct Unsupported;

fn unsupported<T>() -> StoreFuture<'static, T> {
    Box::pin(async {
        Err(crate::store::StoreError::Query {
            step: "using OAuth",
            source: sqlx::Error::Protocol("this store engine keeps no OAuth state".to_owned()),
        })
    })
}

impl OAuthStore for Unsupported {
    fn insert_provider<'a>(&'a self, _: &'a ProviderRecord) -> StoreFuture<'a, ()> {
        unsupported()
    }
    fn provider_by_name<'a>(
        &'a self,
        _: i64,
        _: &'a str,
    ) -> StoreFuture<'a, Option<ProviderRecord>> {
        Box::pin(async { Ok(None) })
    }
    fn provider_by_id<'a>(&'a self, _: &'a str) -> StoreFuture<'a, Option<ProviderRecord>> {
        Box::pin(async { Ok(None) })
    }
    fn list_providers(&self, _: i64) -> StoreFuture<'_, Vec<ProviderRecord>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn insert_pending<'a>(&'a self, _: &'a PendingRecord) -> StoreFuture<'a, ()> {
        unsupported()
    }
    fn pending_by_id<'a>(&'a self, _: &'a str) -> StoreFuture<'a, Option<PendingRecord>> {
        Box::pin(async { Ok(None) })
    }
    fn pending_by_state<'a>(&'a self, _: &'a [u8]) -> StoreFuture<'a, Option<PendingRecord>> {
        Box::pin(async { Ok(None) })
    }
    fn move_pending<'a>(
        &'a self,
        _: &'a str,
        _: PendingStatus,
        _: PendingStatus,
        _: Option<&'a str>,
        _: i64,
    ) -> StoreFuture<'a, bool> {
        unsupported()
    }
    fn insert_oauth_secret<'a>(
        &'a self,
        _: &'a SecretRecord,
        _: &'a [SealedField],
        _: &'a TokenRecord,
        _: &'a str,
        _: &'a AuditRecord,
    ) -> StoreFuture<'a, ()> {
        unsupported()
    }
    fn replace_oauth_secret<'a>(
        &'a self,
        _: u64,
        _: &'a SecretRecord,
        _: &'a [SealedField],
        _: u64,
        _: &'a TokenRecord,
        _: Option<&'a str>,
        _: &'a AuditRecord,
    ) -> StoreFuture<'a, ()> {
        unsupported()
    }
    fn token<'a>(&'a self, _: &'a str) -> StoreFuture<'a, Option<TokenView>> {
        Box::pin(async { Ok(None) })
    }
    fn next_refresh_at(&self) -> StoreFuture<'_, Option<i64>> {
        Box::pin(async { Ok(None) })
    }
    fn due_refreshes(&self, _: i64, _: i64) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn claim_refresh<'a>(&'a self, _: &'a str, _: u64, _: i64, _: i64) -> StoreFuture<'a, bool> {
        Box::pin(async { Ok(false) })
    }
    fn reschedule_refresh<'a>(
        &'a self,
        _: &'a str,
        _: u64,
        _: i64,
        _: u32,
        _: Option<&'a AuditRecord>,
    ) -> StoreFuture<'a, ()> {
        unsupported()
    }
    fn mark_needs_reauth<'a>(
        &'a self,
        _: &'a str,
        _: u64,
        _: &'a str,
        _: &'a AuditRecord,
    ) -> StoreFuture<'a, bool> {
        unsupported()
    }
    fn oauth_data_keys(&self) -> StoreFuture<'_, Vec<DataKeyRecord>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}
