//! [`S3Link`]: its settings, its state, and the [`Link`] implementation that the outbox and the
//! inbox carry out.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bundler::ApiLimits;
use bytes::Bytes;

use super::inbox::Inbox;
use super::outbox::Outbox;
use super::store::{Call, ObjectStore};
use crate::link::Sealing;
use crate::link::{
    Ledger, Link, LinkError, LinkStats, NodeId, Prices, Received, Retry, RetryPolicy, StoreError,
    Usage, metric_names,
};
use crate::wire::{FRAME_OVERHEAD, HEADER_LEN, MAX_FRAME_LEN, TRAILER_LEN};

/// How a receiver looks for new batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Probe while few senders are active, list when many are (the default).
    #[default]
    Auto,
    /// LIST the inbox on every poll.
    List,
    /// GET the next key of each known sender and the bell on every poll.
    Probe,
}

/// Settings of an S3 link.
#[derive(Debug, Clone, PartialEq)]
pub struct S3LinkConfig {
    /// Key prefix for all of this network's objects ("" or ending in `/`).
    pub prefix: String,
    /// Receive strategy.
    pub strategy: Strategy,
    /// The largest object a send writes. Larger objects mean fewer PUTs per GiB.
    pub object_bytes: usize,
    /// A sender rings a destination's bell at most this often while it sends to it.
    pub ring_every: Duration,
    /// A receiver stops probing for a sender silent this long (it rings when it speaks again);
    /// it still remembers where the sender was, to drop duplicates.
    pub forget_after: Duration,
    /// A probing receiver that is hearing from senders checks its bell at most this often (one
    /// GET saved on most polls); with no active sender it checks on every poll.
    pub bell_every: Duration,
    /// A probing receiver LISTs its inbox at least this often anyway.
    pub list_every: Duration,
    /// How long a missing batch is waited for before it is counted lost and skipped.
    pub gap_grace: Duration,
    /// GETs in flight at once while a poll reads what it found: different senders' batches
    /// together, and up to 4 of one sender's next ones (each sender's handed over in order).
    /// A poll holds at most this many objects (each up to `object_bytes`) in memory, and at
    /// most 4 of one sender's. A hub that many clients write to needs many: one GET takes
    /// tens of milliseconds, and a thousand clients pinging once a second write a thousand
    /// objects a second. 0 counts as 1.
    pub concurrent_gets: usize,
    /// Retries of throttled and failed calls.
    pub retry: RetryPolicy,
    /// Prices, for the cost a link reports.
    pub prices: Prices,
    /// The network's keys, if it seals its batches ([`Sealing`]): every batch sent is sealed,
    /// every object read must open.
    pub sealing: Option<Arc<Sealing>>,
}

impl Default for S3LinkConfig {
    fn default() -> Self {
        S3LinkConfig {
            prefix: String::new(),
            strategy: Strategy::Auto,
            object_bytes: 8 << 20,
            ring_every: Duration::from_secs(60),
            forget_after: Duration::from_secs(180),
            bell_every: Duration::from_secs(5),
            list_every: Duration::from_secs(3_600),
            gap_grace: Duration::from_secs(10),
            concurrent_gets: 64,
            retry: RetryPolicy::default(),
            prices: Prices::S3_STANDARD,
            sealing: None,
        }
    }
}

/// A link over an object store laid out as S3 buckets are.
#[derive(Debug)]
pub struct S3Link<S> {
    pub(super) store: S,
    pub(super) me: NodeId,
    pub(super) epoch: u64,
    pub(super) config: S3LinkConfig,
    pub(super) outboxes: Mutex<HashMap<NodeId, Outbox>>,
    pub(super) inbox: tokio::sync::Mutex<Inbox>,
    pub(super) ledger: Ledger,
    retry: Retry,
    rings: AtomicU64,
    bells: metrics::Counter,
}

impl<S: ObjectStore> S3Link<S> {
    /// A link for node `me` in its life `epoch` (a new one at each start: the start time in
    /// microseconds is a good choice).
    ///
    /// # Panics
    ///
    /// Panics if `config.prefix` is neither empty nor ends in `/`, or if `object_bytes` cannot
    /// hold one batch of one byte.
    pub fn new(store: S, me: NodeId, epoch: u64, config: S3LinkConfig) -> Self {
        assert!(
            config.prefix.is_empty() || config.prefix.ends_with('/'),
            "S3 link prefix must be empty or end in '/', got {:?}",
            config.prefix
        );
        assert!(
            config.object_bytes > HEADER_LEN + TRAILER_LEN + FRAME_OVERHEAD,
            "S3 link object_bytes too small for a batch"
        );
        S3Link {
            store,
            me,
            epoch,
            outboxes: Mutex::default(),
            inbox: tokio::sync::Mutex::new(Inbox::new(config.gap_grace)),
            ledger: Ledger::new(me, Call::NAMES, config.prices.clone()),
            retry: Retry::new(config.retry, me ^ epoch.rotate_left(32)),
            rings: AtomicU64::new(0),
            bells: metrics::counter!(metric_names::BELLS, "node" => format!("{me:016x}")),
            config,
        }
    }

    /// The bytes sealing adds to a batch: none in a network without a key.
    pub(super) fn seal_overhead(&self) -> usize {
        crate::link::seal::overhead(self.config.sealing.as_ref())
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// This node's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The store underneath.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The link's settings.
    pub fn config(&self) -> &S3LinkConfig {
        &self.config
    }

    /// Bells rung so far.
    pub fn rings(&self) -> u64 {
        self.rings.load(Ordering::Relaxed)
    }

    pub(super) fn rang(&self) {
        self.rings.fetch_add(1, Ordering::Relaxed);
        self.bells.increment(1);
    }

    /// Runs a store call of `kind` carrying `bytes`, retrying throttling and failures with
    /// backoff and jitter within the retry window. Every attempt is counted as the billed call
    /// it is.
    pub(super) async fn call<T, F, Fut>(
        &self,
        kind: Call,
        bytes: usize,
        attempt: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.ledger
            .retried(&self.retry, kind as usize, bytes, attempt)
            .await
    }

    /// GETs `key`, counting the bytes that came back.
    pub(super) async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let body = self.call(Call::Get, 0, || self.store.get(key)).await?;
        if let Some(body) = &body {
            self.ledger.bytes(Call::Get as usize, body.len() as u64);
        }
        Ok(body)
    }
}

impl<S: ObjectStore> Link for S3Link<S> {
    fn limits(&self) -> ApiLimits {
        ApiLimits::new(
            "s3:PutObject",
            self.config.object_bytes - HEADER_LEN - TRAILER_LEN - self.seal_overhead(),
            usize::MAX,
            MAX_FRAME_LEN + FRAME_OVERHEAD,
        )
        .with_item_overhead(FRAME_OVERHEAD)
    }

    async fn send(&self, to: NodeId, frames: &[Bytes]) -> Result<(), LinkError> {
        self.send_batch(to, frames).await
    }

    async fn poll(&self) -> Result<Vec<Received>, LinkError> {
        self.poll_inbox().await
    }

    fn usage(&self) -> Usage {
        self.ledger.usage()
    }

    fn prices(&self) -> &Prices {
        self.ledger.prices()
    }

    fn stats(&self) -> &LinkStats {
        self.ledger.stats()
    }
}
