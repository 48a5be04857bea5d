//! What a node needs from a transport: send a batch of frames to a node, poll for batches
//! addressed to us.

use std::fmt;
use std::future::Future;

use bundler::ApiLimits;
use bytes::Bytes;

use crate::store::StoreError;

/// A node's address on a link.
pub type NodeId = u64;

/// A batch a link delivered: who sent it, in which of its lives, which one, and its frames
/// (slices of the received object, not copies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The sending node.
    pub sender: NodeId,
    /// The sender's epoch.
    pub epoch: u64,
    /// The batch's sequence number.
    pub seq: u64,
    /// The frames, in order.
    pub frames: Vec<Bytes>,
}

/// A transport between nodes that bills per call.
pub trait Link: Send + Sync + 'static {
    /// What one send may carry, counted as the link counts: a node sizes its bundles by this.
    fn limits(&self) -> ApiLimits;

    /// Sends `frames` to `to` in one call (plus retries).
    fn send(
        &self,
        to: NodeId,
        frames: &[Bytes],
    ) -> impl Future<Output = Result<(), LinkError>> + Send;

    /// Batches addressed to us since the last poll, each sender's in order, none twice.
    fn poll(&self) -> impl Future<Output = Result<Vec<Received>, LinkError>> + Send;
}

/// A send or poll that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// The store failed, after retries where retrying made sense.
    Store(StoreError),
    /// The frames do not fit one batch.
    TooLarge,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Store(e) => e.fmt(f),
            LinkError::TooLarge => f.write_str("frames do not fit one batch"),
        }
    }
}

impl std::error::Error for LinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LinkError::Store(e) => Some(e),
            LinkError::TooLarge => None,
        }
    }
}

impl From<StoreError> for LinkError {
    fn from(e: StoreError) -> Self {
        LinkError::Store(e)
    }
}
