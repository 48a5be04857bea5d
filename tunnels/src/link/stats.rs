//! What a link counts, and the metrics it records: calls, bytes and dollars by operation,
//! batches by outcome, retries.

use std::sync::atomic::{AtomicU64, Ordering};

use std::future::Future;

use super::cost::{Meter, Prices, Usage};
use super::retry::{Attempt, Retry};
use super::sequencer::Skipped;
use super::{NodeId, StoreError};

/// Names of the metrics a link records, each labelled `node` (16 hex digits).
pub mod metric_names {
    /// Counter: calls, labelled `kind` (the link's operation: put, get, list, delete on S3),
    /// retries included.
    pub const CALLS: &str = "tunnel_store_calls_total";
    /// Histogram: how long calls took, in seconds, labelled `kind`; retries and their waits
    /// included (what the node waited for).
    pub const CALL_SECONDS: &str = "tunnel_store_call_seconds";
    /// Counter: bytes the calls carried, labelled `kind`.
    pub const BYTES: &str = "tunnel_store_bytes_total";
    /// Gauge: what the calls so far cost at the link's prices, in dollars.
    pub const COST: &str = "tunnel_store_cost_dollars";
    /// Counter: batches received, labelled `outcome` (delivered, duplicate, rejected, lost,
    /// skipped: before the first batch a receiver met of a stream, as after a restart;
    /// unauthentic: in a sealed network, not sealed with its key for this place, or too old).
    pub const BATCHES: &str = "tunnel_batches_total";
    /// Counter: calls retried after throttling or failure.
    pub const RETRIES: &str = "tunnel_store_retries_total";
    /// Counter: bells rung (S3: "look at your inbox" objects; CloudWatch Logs: ring events).
    pub const BELLS: &str = "tunnel_bells_total";
    /// Counter: CloudWatch Logs reads left for a later poll because the node's read rate was
    /// spent.
    pub const READS_DEFERRED: &str = "tunnel_reads_deferred_total";
}

/// Counts of what a link saw, beside its calls.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Batches delivered.
    pub delivered: AtomicU64,
    /// Batches dropped as already delivered.
    pub duplicates: AtomicU64,
    /// Objects that were not valid batches, or disagreed with where they were found.
    pub rejected: AtomicU64,
    /// Batches given up on after the grace period.
    pub lost: AtomicU64,
    /// Batches before the first one a receiver met of a stream (it restarted, and its previous
    /// life delivered them; or, rarely, the first batches of a sender's life never landed).
    pub skipped: AtomicU64,
    /// Calls retried after throttling or failure.
    pub retries: AtomicU64,
    /// In a sealed network: batches refused by their seal (another key, tampered, moved,
    /// unsealed) or their age (replayed from before this receiver's life, or too old).
    pub unauthentic: AtomicU64,
}

/// What a link counts beside its calls; see [`LinkStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Delivered,
    Duplicate,
    Rejected,
    Lost,
    Skipped,
    Retry,
    Unauthentic,
}

impl Outcome {
    const ALL: [Outcome; 7] = [
        Outcome::Delivered,
        Outcome::Duplicate,
        Outcome::Rejected,
        Outcome::Lost,
        Outcome::Skipped,
        Outcome::Retry,
        Outcome::Unauthentic,
    ];
}

impl LinkStats {
    fn counter(&self, outcome: Outcome) -> &AtomicU64 {
        match outcome {
            Outcome::Delivered => &self.delivered,
            Outcome::Duplicate => &self.duplicates,
            Outcome::Rejected => &self.rejected,
            Outcome::Lost => &self.lost,
            Outcome::Skipped => &self.skipped,
            Outcome::Retry => &self.retries,
            Outcome::Unauthentic => &self.unauthentic,
        }
    }
}

/// A link's books: its meter and prices, its stats, and the metric handles for all of them,
/// registered once (see `cardio`'s metrics for why).
#[derive(Debug)]
pub(crate) struct Ledger {
    meter: Meter,
    prices: Prices,
    stats: LinkStats,
    calls: Vec<metrics::Counter>,
    bytes: Vec<metrics::Counter>,
    seconds: Vec<metrics::Histogram>,
    cost: metrics::Gauge,
    outcomes: [metrics::Counter; 7],
}

impl Ledger {
    /// Books for node `me`'s link with operations `ops`, billed at `prices`.
    pub(crate) fn new(me: NodeId, ops: &'static [&'static str], prices: Prices) -> Self {
        let node = format!("{me:016x}");
        let n = || node.clone();
        Ledger {
            meter: Meter::new(ops),
            prices,
            stats: LinkStats::default(),
            calls: ops
                .iter()
                .map(|&kind| metrics::counter!(metric_names::CALLS, "node" => n(), "kind" => kind))
                .collect(),
            bytes: ops
                .iter()
                .map(|&kind| metrics::counter!(metric_names::BYTES, "node" => n(), "kind" => kind))
                .collect(),
            seconds: ops
                .iter()
                .map(|&kind| {
                    metrics::histogram!(metric_names::CALL_SECONDS, "node" => n(), "kind" => kind)
                })
                .collect(),
            cost: metrics::gauge!(metric_names::COST, "node" => n()),
            outcomes: Outcome::ALL.map(|outcome| {
                let label = match outcome {
                    Outcome::Retry => {
                        return metrics::counter!(metric_names::RETRIES, "node" => n());
                    }
                    Outcome::Delivered => "delivered",
                    Outcome::Duplicate => "duplicate",
                    Outcome::Rejected => "rejected",
                    Outcome::Lost => "lost",
                    Outcome::Skipped => "skipped",
                    Outcome::Unauthentic => "unauthentic",
                };
                metrics::counter!(metric_names::BATCHES, "node" => n(), "outcome" => label)
            }),
        }
    }

    /// Counts one call of operation `op` (an index into the link's operations) carrying
    /// `bytes`, and what it costs.
    pub(crate) fn call(&self, op: usize, bytes: u64) {
        self.meter.record(op, bytes);
        self.calls[op].increment(1);
        self.bytes[op].increment(bytes);
        self.cost.set(self.cost());
    }

    /// Counts `bytes` a call of `op` returned.
    pub(crate) fn bytes(&self, op: usize, bytes: u64) {
        self.meter.record_bytes(op, bytes);
        self.bytes[op].increment(bytes);
        self.cost.set(self.cost());
    }

    /// Counts `n` of `outcome`, in the stats and in the metrics.
    pub(crate) fn note(&self, outcome: Outcome, n: u64) {
        self.stats.counter(outcome).fetch_add(n, Ordering::Relaxed);
        self.outcomes[outcome as usize].increment(n);
    }

    /// Books an attempt of a retried call of `op` carrying `bytes`: each attempt is billed.
    pub(crate) fn attempt(&self, op: usize, bytes: u64, attempt: Attempt<'_, StoreError>) {
        match attempt {
            Attempt::Start => self.call(op, bytes),
            Attempt::Retrying { error, wait } => {
                self.note(Outcome::Retry, 1);
                tracing::debug!(call = self.meter.name(op), %error, ?wait, "retrying");
            }
            Attempt::GaveUp { error } => {
                tracing::warn!(call = self.meter.name(op), %error, "call failed");
            }
        }
    }

    /// Runs a call of `op` carrying `bytes` under `retry` (throttling and failures retried
    /// with backoff and jitter), booking every attempt as the billed call it is.
    pub(crate) async fn retried<T, F, Fut>(
        &self,
        retry: &Retry,
        op: usize,
        bytes: usize,
        attempt: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let started = tokio::time::Instant::now();
        let result = retry
            .run(|a| self.attempt(op, bytes as u64, a), attempt)
            .await;
        self.seconds[op].record(started.elapsed().as_secs_f64());
        result
    }

    /// Counts and logs `missing` batches of `sender` the sequencer skipped, for `reason`.
    pub(crate) fn skipped(&self, sender: NodeId, missing: u64, reason: Skipped) {
        let sender = format_args!("{sender:016x}");
        match reason {
            Skipped::Lost => {
                self.note(Outcome::Lost, missing);
                tracing::warn!(%sender, batches = missing, "batches missing past the grace period: counted lost");
            }
            Skipped::BeforeStart => {
                self.note(Outcome::Skipped, missing);
                tracing::info!(%sender, batches = missing, "met a sender mid-stream: skipped what came before");
            }
        }
    }

    pub(crate) fn usage(&self) -> Usage {
        self.meter.usage()
    }

    pub(crate) fn prices(&self) -> &Prices {
        &self.prices
    }

    pub(crate) fn cost(&self) -> f64 {
        self.prices.cost(&self.meter.usage())
    }

    pub(crate) fn stats(&self) -> &LinkStats {
        &self.stats
    }
}
