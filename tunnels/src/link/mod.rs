//! Links: what a node needs from a transport, and what every transport shares.
//!
//! A [`Link`] sends a batch of frames to a node in one call and polls for the batches addressed
//! to its own node. Each link is a folder of plain logic over a small trait of the service's
//! calls, so the same code runs against the service, against local servers in the tests, and in
//! the cost simulation:
//!
//! - [`sequencer`]: exactly-once, in-order delivery per (sender, epoch), as a state machine that
//!   every link asks what to do with a batch it found.
//! - [`retry`]: backoff with jitter; every attempt counted as the billed call it is.
//! - [`cost`]: usage by operation (calls and bytes) and the price lists that turn it into dollars.
//! - [`s3`]: the S3 link (keys, inbox, outbox, the store trait, the AWS store, an in-memory model).
//! - [`cwl`]: the CloudWatch Logs link (streams, tokens, marks; the same shape as `s3`).
//! - [`memory`]: a lossless in-process link, for tests of what sits above links.
//!
//! # The delivery contract
//!
//! Every batch a sender's call put into the service is delivered to the destination's node
//! exactly once, in order per (sender, epoch), whatever happens in between: calls that fail and
//! are retried, objects that land late or out of order, a poll that is cancelled, a receiver or
//! a sender that restarts. A batch is counted lost only when it never landed within the grace
//! period. Nothing that is not a valid batch is ever delivered.

use std::fmt;
use std::future::Future;

use bundler::ApiLimits;
use bytes::Bytes;

pub mod cost;
pub mod cwl;
pub mod memory;
pub mod retry;
pub mod s3;
#[cfg(feature = "aws")]
mod sdk;
mod seal;
pub mod sequencer;
mod stats;

pub use cost::{Meter, OpUsage, Price, Prices, Usage};
pub use memory::{MemoryLink, MemoryNetwork};
pub use retry::{Retry, RetryPolicy, Retryable};
#[cfg(feature = "aws")]
pub use sdk::FoundCredentials;
pub use seal::{Refused, Sealing};
pub use sequencer::{RETIRE_AFTER, Sequencer, Skipped, Verdict};
pub(crate) use stats::{Ledger, Outcome};
pub use stats::{LinkStats, metric_names};

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

/// A transport between nodes that bills per call or per byte.
pub trait Link: Send + Sync + 'static {
    /// What one send may carry, counted as the link counts: a node sizes its bundles by this.
    fn limits(&self) -> ApiLimits;

    /// Sends `frames` to `to` in one call (plus retries).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the send; the batch may or may not arrive, and its sequence
    /// number is used up either way (a receiver skips it after its grace period).
    fn send(
        &self,
        to: NodeId,
        frames: &[Bytes],
    ) -> impl Future<Output = Result<(), LinkError>> + Send;

    /// Batches addressed to us since the last poll, each (sender, epoch) in order, none twice.
    ///
    /// A poll that fails after it took batches from the service still returns them; a failure
    /// that persists shows at the next poll.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: a batch is taken from the service and handed over in one
    /// step that cannot be interrupted; what a dropped poll had read is kept and returned by the
    /// next one. Polls are serialised: a second poll at the same time waits for the first.
    fn poll(&self) -> impl Future<Output = Result<Vec<Received>, LinkError>> + Send;

    /// Calls and bytes so far, by operation, retries included.
    fn usage(&self) -> Usage;

    /// The prices the link's usage is billed at.
    fn prices(&self) -> &Prices;

    /// What the link's usage so far costs, in dollars.
    fn cost(&self) -> f64 {
        self.prices().cost(&self.usage())
    }

    /// What the link counted: batches by outcome, retries.
    fn stats(&self) -> &LinkStats;
}

/// What a poll returns once it read (`read`) and made what it took safe from a restart
/// (`secured`: deleted on S3, marked on CloudWatch Logs): the batches in `ready` if they were
/// secured, whatever failed besides; the failure only if there is nothing to hand over.
pub(crate) fn hand_over(
    read: Result<(), StoreError>,
    secured: Result<(), StoreError>,
    ready: &mut Vec<Received>,
) -> Result<Vec<Received>, LinkError> {
    let out = if secured.is_ok() {
        std::mem::take(ready)
    } else {
        Vec::new()
    };
    match (read.and(secured), out.is_empty()) {
        (Err(err), true) => Err(err.into()),
        _ => Ok(out),
    }
}

/// A send or poll that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// The service failed, after retries where retrying made sense.
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

/// What a call to the service under a link (a bucket, a log group) failed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
}

/// The kinds of failure a link reacts to differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// Slow down (S3's 503 SlowDown): retry later, more slowly.
    Throttled,
    /// The service failed or could not be reached (5xx, connection, timeout): retry.
    Unavailable,
    /// The bucket (or log group) does not exist.
    NoSuchBucket,
    /// Credentials are missing or not allowed to do this.
    AccessDenied,
    /// A log stream or log group does not exist (CloudWatch Logs' `ResourceNotFoundException`).
    NotFound,
    /// The service refused the request as malformed: a call outside its limits, or a token it
    /// no longer takes (CloudWatch Logs' `InvalidParameterException`). Not retried.
    BadRequest,
    /// The standard chain found no credentials (or a profile it was told to use is broken).
    NoCredentials,
    /// Anything else; not retried.
    Other,
}

impl StoreError {
    /// An error of `kind` with a message for people.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            message: message.into(),
        }
    }

    /// What kind of failure.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            StoreErrorKind::Throttled | StoreErrorKind::Unavailable
        )
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            StoreErrorKind::Throttled => "throttled",
            StoreErrorKind::Unavailable => "store unavailable",
            StoreErrorKind::NoSuchBucket => "no such bucket",
            StoreErrorKind::AccessDenied => "access denied",
            StoreErrorKind::NoCredentials => "no AWS credentials",
            StoreErrorKind::NotFound => "not found",
            StoreErrorKind::BadRequest => "bad request",
            StoreErrorKind::Other => "store error",
        };
        if self.message.is_empty() {
            f.write_str(what)
        } else {
            write!(f, "{what}: {}", self.message)
        }
    }
}

impl std::error::Error for StoreError {}

impl Retryable for StoreError {
    fn is_retryable(&self) -> bool {
        StoreError::is_retryable(self)
    }
}
