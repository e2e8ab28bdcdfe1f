//! What OAuth keeps: the records and the [`OAuthStore`] trait live in the store module
//! ([`crate::store::oauth`]), so that the store does not depend on OAuth; this module names
//! them where OAuth's code looks for them.

pub use crate::store::oauth::{
    OAuthStore, PendingRecord, PendingStatus, ProviderRecord, ProviderRemoval, TokenRecord,
    TokenView,
};
