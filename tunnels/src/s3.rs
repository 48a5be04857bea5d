//! The S3 link: batches as objects in a bucket, one inbox per node.
//!
//! # Key layout
//!
//! ```text
//! {prefix}{dest}/{sender}/{epoch}/{seq}    a batch, every number 16 lower-case hex digits
//! {prefix}{dest}.bell                      "look at your inbox": rung by senders
//! ```
//!
//! Hex of fixed width sorts like the numbers, so listing an inbox (S3 lists in UTF-8 binary
//! order) gives each sender's batches in order, epoch by epoch. A receiver deletes what it read
//! (DELETE is free), so an inbox holds only what is new, and a LIST of it is short.
//!
//! # Receiving: list or probe
//!
//! - **list** (Hoshino's way): LIST the inbox, GET what is new, DELETE it. A LIST costs as much
//!   as a PUT, $0.005 per 1,000.
//! - **probe**: GET the next expected key of each sender we know ($0.0004 per 1,000, 12.5 times
//!   cheaper than a LIST), and GET our bell. A sender PUTs the bell *after* its batch when it
//!   starts talking to us and then every `ring_every` while it does; a receiver that finds the
//!   bell deletes it *before* it LISTs, so no ring is lost between the two. A LIST also runs
//!   every `list_every`, to recover from anything else.
//!
//! [`Strategy::Auto`] probes while fewer senders are active than a LIST is worth in GETs, and
//! lists when more are.
//!
//! # Order, duplicates, gaps
//!
//! Each sender numbers its batches per destination from 0 in each epoch (a new epoch when it
//! restarts). The receiver delivers each sender's batches in order and drops any it has passed
//! (a retried PUT), by (sender, epoch, seq). A missing batch with later ones present is waited
//! for `gap_grace` (a PUT may still be under way), then counted lost and skipped. An object that
//! is not a valid batch, or whose header disagrees with its key, is counted, deleted and
//! skipped; it never stops the inbox.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bundler::ApiLimits;
use bytes::Bytes;
use tokio::time::Instant;

use crate::link::{Link, LinkError, NodeId, Received};
use crate::store::{Call, Calls, ObjectStore, Prices, StoreError};
use crate::wire::{Batch, FRAME_OVERHEAD, HEADER_LEN, Header, MAX_FRAME_LEN, TRAILER_LEN};

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

/// Retries of throttled and failed calls: exponential backoff with jitter, for at most
/// `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first wait.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Give up once this long has passed since the first try.
    pub window: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
            window: Duration::from_secs(120),
        }
    }
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
    /// Retries of throttled and failed calls.
    pub retry: RetryPolicy,
    /// Prices, for the cost a link reports.
    pub prices: Prices,
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
            retry: RetryPolicy::default(),
            prices: Prices::S3_STANDARD,
        }
    }
}

/// Counts of what a link saw, beside its calls.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Batches delivered.
    pub delivered: AtomicU64,
    /// Batches dropped as already delivered.
    pub duplicates: AtomicU64,
    /// Objects that were not valid batches, or disagreed with their key.
    pub rejected: AtomicU64,
    /// Batches given up on after `gap_grace`.
    pub lost: AtomicU64,
    /// Calls retried after throttling or failure.
    pub retries: AtomicU64,
    /// Bells rung.
    pub rings: AtomicU64,
}

/// What a link counts beside its calls; see [`LinkStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stat {
    Delivered,
    Duplicate,
    Rejected,
    Lost,
    Retry,
    Ring,
}

impl Stat {
    const ALL: [Stat; 6] = [
        Stat::Delivered,
        Stat::Duplicate,
        Stat::Rejected,
        Stat::Lost,
        Stat::Retry,
        Stat::Ring,
    ];
}

impl LinkStats {
    fn counter(&self, stat: Stat) -> &AtomicU64 {
        match stat {
            Stat::Delivered => &self.delivered,
            Stat::Duplicate => &self.duplicates,
            Stat::Rejected => &self.rejected,
            Stat::Lost => &self.lost,
            Stat::Retry => &self.retries,
            Stat::Ring => &self.rings,
        }
    }
}

/// Names of the metrics an S3 link records, each labelled `node` (16 hex digits).
pub mod metric_names {
    /// Counter: store calls, labelled `kind` (put, get, list, delete), retries included.
    pub const CALLS: &str = "tunnel_store_calls_total";
    /// Gauge: what the calls so far cost at the link's prices, in dollars.
    pub const COST: &str = "tunnel_store_cost_dollars";
    /// Counter: batches received, labelled `outcome` (delivered, duplicate, rejected, lost).
    pub const BATCHES: &str = "tunnel_batches_total";
    /// Counter: store calls retried after throttling or failure.
    pub const RETRIES: &str = "tunnel_store_retries_total";
    /// Counter: bells rung.
    pub const BELLS: &str = "tunnel_bells_total";
}

/// Metric handles, registered once per link (see `cardio`'s for why).
#[derive(Debug)]
struct LinkMetrics {
    calls: [metrics::Counter; 4],
    cost: metrics::Gauge,
    stats: [metrics::Counter; 6],
}

impl LinkMetrics {
    fn register(me: NodeId) -> Self {
        let node = format!("{me:016x}");
        let n = || node.clone();
        LinkMetrics {
            calls: Call::ALL.map(|kind| {
                metrics::counter!(metric_names::CALLS, "node" => n(), "kind" => kind.as_str())
            }),
            cost: metrics::gauge!(metric_names::COST, "node" => n()),
            stats: Stat::ALL.map(|stat| match stat {
                Stat::Retry => metrics::counter!(metric_names::RETRIES, "node" => n()),
                Stat::Ring => metrics::counter!(metric_names::BELLS, "node" => n()),
                outcome => {
                    let outcome = match outcome {
                        Stat::Delivered => "delivered",
                        Stat::Duplicate => "duplicate",
                        Stat::Rejected => "rejected",
                        _ => "lost",
                    };
                    metrics::counter!(metric_names::BATCHES, "node" => n(), "outcome" => outcome)
                }
            }),
        }
    }
}

/// A link over an object store laid out as S3 buckets are.
#[derive(Debug)]
pub struct S3Link<S> {
    store: S,
    me: NodeId,
    epoch: u64,
    config: S3LinkConfig,
    tx: Mutex<HashMap<NodeId, Outbox>>,
    rx: tokio::sync::Mutex<Inbox>,
    calls: Calls,
    stats: LinkStats,
    metrics: LinkMetrics,
    jitter: Mutex<u64>,
}

#[derive(Debug)]
struct Outbox {
    next_seq: u64,
    last_ring: Option<Instant>,
}

#[derive(Debug, Default)]
struct Inbox {
    peers: HashMap<NodeId, Peer>,
    last_list: Option<Instant>,
    last_bell: Option<Instant>,
}

#[derive(Debug)]
struct Peer {
    epoch: u64,
    next: u64,
    last_seen: Instant,
    /// Since when `next` is missing while later batches are there.
    gap_since: Option<Instant>,
}

/// Senders beyond which a LIST costs less than probing each (a LIST is 12.5 GETs).
const PROBE_LIMIT: usize = 12;

/// The key of a batch.
pub fn batch_key(prefix: &str, dest: NodeId, sender: NodeId, epoch: u64, seq: u64) -> String {
    format!("{prefix}{dest:016x}/{sender:016x}/{epoch:016x}/{seq:016x}")
}

/// The key of a node's bell.
pub fn bell_key(prefix: &str, dest: NodeId) -> String {
    format!("{prefix}{dest:016x}.bell")
}

/// Parses `sender/epoch/seq` after an inbox prefix.
fn parse_key(rest: &str) -> Option<(NodeId, u64, u64)> {
    let mut parts = rest.split('/');
    let mut hex = || {
        let part = parts.next()?;
        (part.len() == 16 && part.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u64::from_str_radix(part, 16).ok())
            .flatten()
    };
    let parsed = (hex()?, hex()?, hex()?);
    parts.next().is_none().then_some(parsed)
}

impl<S: ObjectStore> S3Link<S> {
    /// A link for node `me` in its life `epoch` (a new one at each start: the start time in
    /// milliseconds is a good choice).
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
            tx: Mutex::default(),
            rx: tokio::sync::Mutex::default(),
            calls: Calls::default(),
            stats: LinkStats::default(),
            metrics: LinkMetrics::register(me),
            jitter: Mutex::new(me ^ epoch.rotate_left(32)),
            config,
        }
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

    /// Calls this link made, by kind (retries included: each is billed).
    pub fn calls(&self) -> &Calls {
        &self.calls
    }

    /// What this link's calls cost so far, in dollars.
    pub fn cost(&self) -> f64 {
        self.config.prices.cost(&self.calls.by_kind())
    }

    /// What the link saw.
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// Counts `n` of `stat`, in the stats and in the metrics.
    fn note(&self, stat: Stat, n: u64) {
        self.stats.counter(stat).fetch_add(n, Ordering::Relaxed);
        self.metrics.stats[stat as usize].increment(n);
    }

    fn inbox(&self) -> String {
        format!("{}{:016x}/", self.config.prefix, self.me)
    }

    /// Runs a store call, retrying throttling and failures with backoff and jitter within the
    /// retry window. Every attempt is counted as the billed call it is.
    async fn call<T, F, Fut>(&self, kind: Call, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let start = Instant::now();
        let policy = self.config.retry;
        let mut wait = policy.base;
        loop {
            self.calls.count(kind);
            self.metrics.calls[kind as usize].increment(1);
            self.metrics.cost.set(self.cost());
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(err) if err.is_retryable() && start.elapsed() + wait <= policy.window => {
                    self.note(Stat::Retry, 1);
                    tracing::debug!(call = kind.as_str(), error = %err, ?wait, "retrying");
                    tokio::time::sleep(self.jittered(wait)).await;
                    wait = (wait * 2).min(policy.max);
                }
                Err(err) => {
                    tracing::warn!(call = kind.as_str(), error = %err, "store call failed");
                    return Err(err);
                }
            }
        }
    }

    /// `wait` spread over [wait / 2, wait], so that nodes throttled together retry apart.
    fn jittered(&self, wait: Duration) -> Duration {
        let mut state = self.jitter.lock().unwrap_or_else(|e| e.into_inner());
        *state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        let unit = (*state >> 11) as f64 / (1u64 << 53) as f64;
        wait.mul_f64(0.5 + unit / 2.0)
    }

    async fn delete(&self, keys: &mut Vec<String>) -> Result<(), StoreError> {
        for chunk in keys.chunks(1_000) {
            self.call(Call::Delete, || self.store.delete_many(chunk))
                .await?;
        }
        keys.clear();
        Ok(())
    }

    /// Fetches a batch the inbox should hold at `key`, and checks it is what the key says.
    /// Returns `None` for an object that is gone or not a valid batch (counted).
    async fn fetch(&self, key: &str, expect: Header) -> Result<Option<Received>, StoreError> {
        let Some(body) = self.call(Call::Get, || self.store.get(key)).await? else {
            return Ok(None);
        };
        Ok(self.decode(body, expect))
    }

    fn decode(&self, body: Bytes, expect: Header) -> Option<Received> {
        let batch = match Batch::new_checked(&body[..]) {
            Ok(batch) if batch.header() == expect => batch,
            checked => {
                self.note(Stat::Rejected, 1);
                tracing::warn!(
                    sender = format_args!("{:016x}", expect.sender),
                    seq = expect.seq,
                    len = body.len(),
                    problem = %checked.map_or_else(|e| e.to_string(), |_| "header disagrees with key".into()),
                    "rejected an object that is not a valid batch; deleting it"
                );
                return None;
            }
        };
        let frames = batch.frame_ranges().map(|r| body.slice(r)).collect();
        self.note(Stat::Delivered, 1);
        Some(Received {
            sender: expect.sender,
            epoch: expect.epoch,
            seq: expect.seq,
            frames,
        })
    }

    /// Reads the inbox by listing it; see the module docs for the rules.
    async fn sync_by_list(
        &self,
        inbox: &mut Inbox,
        out: &mut Vec<Received>,
        done: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        let prefix = self.inbox();
        let now = Instant::now();
        let mut start_after: Option<String> = None;
        // Senders whose next batch is missing: their later keys wait for the next poll.
        let mut blocked: Vec<NodeId> = Vec::new();
        loop {
            let after = start_after.as_deref();
            let keys = self
                .call(Call::List, || self.store.list(&prefix, after, 1_000))
                .await?;
            let full = keys.len() == 1_000;
            start_after = keys.last().cloned();
            for key in keys {
                let Some((sender, epoch, seq)) = parse_key(&key[prefix.len()..]) else {
                    self.note(Stat::Rejected, 1);
                    tracing::warn!(%key, "rejected an object with a key that is not a batch's; deleting it");
                    done.push(key);
                    continue;
                };
                if blocked.contains(&sender) {
                    continue;
                }
                let peer = inbox.peers.entry(sender).or_insert(Peer {
                    epoch,
                    next: seq,
                    last_seen: now,
                    gap_since: None,
                });
                if epoch != peer.epoch {
                    if epoch < peer.epoch {
                        // A life of the sender's before the one we follow.
                        self.note(Stat::Duplicate, 1);
                        done.push(key);
                        continue;
                    }
                    *peer = Peer {
                        epoch,
                        next: seq,
                        last_seen: now,
                        gap_since: None,
                    };
                }
                if seq < peer.next {
                    self.note(Stat::Duplicate, 1);
                    done.push(key);
                    continue;
                }
                if seq > peer.next {
                    let since = *peer.gap_since.get_or_insert(now);
                    if now.duration_since(since) < self.config.gap_grace {
                        blocked.push(sender);
                        continue;
                    }
                    self.note(Stat::Lost, seq - peer.next);
                    tracing::warn!(
                        sender = format_args!("{sender:016x}"),
                        batches = seq - peer.next,
                        "batches missing past the grace period: counted lost"
                    );
                    peer.next = seq;
                }
                peer.gap_since = None;
                peer.last_seen = now;
                peer.next = seq + 1;
                if let Some(received) = self.fetch(&key, Header { sender, epoch, seq }).await? {
                    out.push(received);
                }
                done.push(key);
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Whether a sender spoke recently enough to be probed. A silent one is still remembered
    /// (its epoch and next sequence number drop late duplicates), only not probed.
    fn is_active(&self, peer: &Peer, now: Instant) -> bool {
        now.duration_since(peer.last_seen) < self.config.forget_after
    }

    /// Reads the inbox by probing each active sender's next key.
    async fn sync_by_probe(
        &self,
        inbox: &mut Inbox,
        out: &mut Vec<Received>,
        done: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        for (&sender, peer) in &mut inbox.peers {
            if !self.is_active(peer, now) {
                // It rings when it speaks again.
                continue;
            }
            loop {
                let key = batch_key(&self.config.prefix, self.me, sender, peer.epoch, peer.next);
                let expect = Header {
                    sender,
                    epoch: peer.epoch,
                    seq: peer.next,
                };
                let Some(body) = self.call(Call::Get, || self.store.get(&key)).await? else {
                    break;
                };
                peer.next += 1;
                peer.last_seen = now;
                peer.gap_since = None;
                if let Some(received) = self.decode(body, expect) {
                    out.push(received);
                }
                done.push(key);
            }
        }
        Ok(())
    }

    async fn poll_inbox(
        &self,
        out: &mut Vec<Received>,
        done: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        let mut inbox = self.rx.lock().await;
        let now = Instant::now();
        let active = inbox
            .peers
            .values()
            .filter(|peer| self.is_active(peer, now))
            .count();
        let strategy = match self.config.strategy {
            Strategy::Auto if active >= PROBE_LIMIT => Strategy::List,
            Strategy::Auto => Strategy::Probe,
            chosen => chosen,
        };
        let mut list = strategy == Strategy::List
            || inbox
                .last_list
                .is_none_or(|at| now.duration_since(at) >= self.config.list_every);
        let bell = bell_key(&self.config.prefix, self.me);
        // With no active sender the bell is the only way to hear of one: check it every poll.
        let bell_due = active == 0
            || inbox
                .last_bell
                .is_none_or(|at| now.duration_since(at) >= self.config.bell_every);
        if !list && bell_due {
            inbox.last_bell = Some(now);
            list = self
                .call(Call::Get, || self.store.get(&bell))
                .await?
                .is_some();
        }
        if list && strategy == Strategy::Probe {
            // Delete the bell before listing: a ring before this is answered by the LIST, a
            // ring after it stays for the next poll.
            done.push(bell);
            self.delete(done).await?;
        }
        if list {
            self.sync_by_list(&mut inbox, out, done).await?;
            inbox.last_list = Some(now);
        } else {
            self.sync_by_probe(&mut inbox, out, done).await?;
        }
        Ok(())
    }
}

impl<S: ObjectStore> Link for S3Link<S> {
    fn limits(&self) -> ApiLimits {
        ApiLimits::new(
            "s3:PutObject",
            self.config.object_bytes - HEADER_LEN - TRAILER_LEN,
            usize::MAX,
            MAX_FRAME_LEN + FRAME_OVERHEAD,
        )
        .with_item_overhead(FRAME_OVERHEAD)
    }

    async fn send(&self, to: NodeId, frames: &[Bytes]) -> Result<(), LinkError> {
        let now = Instant::now();
        let (seq, ring) = {
            let mut tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
            let outbox = tx.entry(to).or_insert(Outbox {
                next_seq: 0,
                last_ring: None,
            });
            // A sequence number is used up even if the PUT fails: a PUT that timed out may
            // still have landed, and a number must never name two different batches.
            let seq = outbox.next_seq;
            outbox.next_seq += 1;
            let ring = outbox
                .last_ring
                .is_none_or(|at| now.duration_since(at) >= self.config.ring_every);
            if ring {
                outbox.last_ring = Some(now);
            }
            (seq, ring)
        };
        let header = Header {
            sender: self.me,
            epoch: self.epoch,
            seq,
        };
        let mut buf = Vec::new();
        header
            .emit(frames, &mut buf)
            .map_err(|_| LinkError::TooLarge)?;
        if buf.len() > self.config.object_bytes {
            return Err(LinkError::TooLarge);
        }
        let body = Bytes::from(buf);
        let key = batch_key(&self.config.prefix, to, self.me, self.epoch, seq);
        self.call(Call::Put, || self.store.put(&key, body.clone()))
            .await?;
        if ring {
            // After the batch, so a receiver that hears the bell finds the batch.
            let bell = bell_key(&self.config.prefix, to);
            match self
                .call(Call::Put, || self.store.put(&bell, Bytes::new()))
                .await
            {
                Ok(()) => self.note(Stat::Ring, 1),
                Err(_) => {
                    // The batch is there; ring again with the next one.
                    let mut tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(outbox) = tx.get_mut(&to) {
                        outbox.last_ring = None;
                    }
                }
            }
        }
        Ok(())
    }

    async fn poll(&self) -> Result<Vec<Received>, LinkError> {
        let mut out = Vec::new();
        let mut done = Vec::new();
        let result = self.poll_inbox(&mut out, &mut done).await;
        // Delete what was read even when a later call failed; what a failed delete leaves is
        // recognised as already delivered next time.
        let deleted = self.delete(&mut done).await;
        match (result.and(deleted), out.is_empty()) {
            // Batches already taken from the inbox are delivered whatever failed after them.
            (Err(err), true) => Err(err.into()),
            _ => Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_like_their_numbers() {
        let a = batch_key("net/", 1, 2, 3, 9);
        let b = batch_key("net/", 1, 2, 3, 10);
        let c = batch_key("net/", 1, 2, 4, 0);
        assert!(a < b && b < c);
        assert_eq!(
            a,
            "net/0000000000000001/0000000000000002/0000000000000003/0000000000000009"
        );
        assert_eq!(bell_key("net/", 255), "net/00000000000000ff.bell");
        assert_eq!(
            parse_key("0000000000000002/0000000000000003/000000000000000a"),
            Some((2, 3, 10))
        );
        assert_eq!(parse_key("2/3/10"), None);
        assert_eq!(parse_key("0000000000000002/0000000000000003"), None);
        assert_eq!(
            parse_key("0000000000000002/0000000000000003/000000000000000a/x"),
            None
        );
        assert_eq!(
            parse_key("000000000000000g/0000000000000003/000000000000000a"),
            None
        );
    }
}
