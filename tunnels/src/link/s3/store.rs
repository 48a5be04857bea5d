//! The few object-store calls the S3 link needs, as a trait.
//!
//! The S3 link's logic (key layout, polling strategy, delivery) is plain code over
//! [`ObjectStore`], so the same code runs against AWS ([`S3Store`](super::S3Store)), against
//! local S3-compatible servers, and in the cost simulation on
//! [`MemoryStore`](super::MemoryStore).

use std::future::Future;

use bytes::Bytes;

use crate::link::StoreError;

/// An object store: S3, or anything that behaves like it for these four calls.
///
/// Keys are listed in UTF-8 binary order, as S3 lists them.
pub trait ObjectStore: Send + Sync + 'static {
    /// Stores `body` under `key`, replacing what was there.
    fn put(&self, key: &str, body: Bytes) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The object under `key`, or `None` if there is none.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Bytes>, StoreError>> + Send;

    /// Up to `max_keys` keys that start with `prefix` and sort after `start_after`, in order.
    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Deletes `keys` (at most 1,000, as S3's DeleteObjects); missing keys are not an error.
    fn delete_many(&self, keys: &[String]) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The kinds of call, as they are billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    /// PutObject.
    Put,
    /// GetObject, found or not.
    Get,
    /// ListObjectsV2.
    List,
    /// DeleteObjects.
    Delete,
}

impl Call {
    /// Every kind, in the order of the link's [`Usage`](crate::link::Usage).
    pub const ALL: [Call; 4] = [Call::Put, Call::Get, Call::List, Call::Delete];

    /// Their names, as the link's [`Usage`](crate::link::Usage) and prices know them.
    pub const NAMES: &'static [&'static str] = &["put", "get", "list", "delete"];

    /// Lower-case name, for labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Call::Put => "put",
            Call::Get => "get",
            Call::List => "list",
            Call::Delete => "delete",
        }
    }
}
