//! [`CwlLink`]: its settings, its state, and the [`Link`] implementation that the outbox and the
//! inbox carry out.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bundler::ApiLimits;
use bytes::Bytes;
use cardio::{Budget, TokenBucket};
use tokio::time::Instant;

use super::inbox::Inbox;
use super::layout::check_prefix;
use super::limits::{
    CLASSIC_EVENT_BYTES, EVENT_OVERHEAD, MAX_CALL_BYTES, MAX_EVENT_BYTES, MAX_EVENTS,
};
use super::outbox::Outbox;
use super::store::{Call, LogStore};
use crate::link::{
    Ledger, Link, LinkError, LinkStats, NodeId, Prices, Received, Retry, RetryPolicy, StoreError,
    StoreErrorKind, Usage, metric_names,
};
use crate::wire::text::{self, TextEncoding};
use crate::wire::{FRAME_OVERHEAD, HEADER_LEN, MAX_FRAME_LEN, TRAILER_LEN};

/// The read rate `tunnel up` gives a node unless told otherwise: 2 GetLogEvents calls a second
/// on average, 10 at once. An account has 10 a second (see the module docs): five nodes
/// busy at once, or thousands idle (an idle node reads about once a minute).
pub const DEFAULT_READ_RATE: Budget =
    Budget::new(NonZeroU32::new(2).expect("nonzero"), Duration::from_secs(1))
        .with_burst(NonZeroU32::new(10).expect("nonzero"));

/// The gap a node leaves between its reads, adapted to the account's quota, which every node
/// of the account shares: no gap until a read is throttled; each throttle doubles it (from
/// 100 ms up to 30 s), each read the service answers shortens it by a sixteenth, and each wait
/// is jittered (half to one and a half of the gap) so that the nodes spread out. A fleet
/// whose reads outrun the quota settles near its share each: without it, the nodes that read
/// most (clients waiting for replies) take every token the quota refills, and a node whose
/// polls are throttled (a hub with many senders) slows its heart until it reads nothing.
#[derive(Debug)]
pub(super) struct ReadBackoff {
    gap: Duration,
    next: Option<Instant>,
    rng: rand_chacha::ChaCha8Rng,
}

impl ReadBackoff {
    /// The gap after a first throttle.
    pub(super) const FIRST: Duration = Duration::from_millis(100);
    /// The longest.
    pub(super) const MAX: Duration = Duration::from_secs(30);

    fn new(seed: u64) -> ReadBackoff {
        use rand::SeedableRng as _;
        ReadBackoff {
            gap: Duration::ZERO,
            next: None,
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// When the next read may go, at `now` or later; the one after it waits a gap more.
    fn take(&mut self, now: Instant) -> Instant {
        use rand::Rng as _;
        let at = self.next.map_or(now, |next| next.max(now));
        self.next =
            (!self.gap.is_zero()).then(|| at + self.gap.mul_f64(self.rng.random_range(0.5..1.5)));
        at
    }

    fn throttled(&mut self, now: Instant) {
        self.gap = (self.gap * 2).clamp(Self::FIRST, Self::MAX);
        self.next = Some(now + self.gap);
    }

    fn answered(&mut self) {
        self.gap -= self.gap / 16;
        if self.gap < Self::FIRST / 4 {
            self.gap = Duration::ZERO;
        }
    }
}

/// How a receiver reads its streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// GetLogEvents on each sender's stream, by token, and on the bell (the default).
    #[default]
    Token,
    /// FilterLogEvents over every stream named for this node, from the last event's time: the
    /// seed's way, one call a poll whatever the number of senders, against a quota of 5 calls
    /// a second for the whole account. For the cost simulation's baseline.
    Filter,
}

/// A read rate of `per_second` GetLogEvents calls a second on average (fractions allowed, down
/// to one call an hour), five seconds' worth at once; `None` if it is not a positive number.
///
/// ```
/// use tunnels::link::cwl::read_rate;
///
/// let rate = read_rate(0.5).unwrap();
/// assert_eq!(rate.emission_interval().as_secs(), 2);
/// assert!(read_rate(0.0).is_none());
/// ```
pub fn read_rate(per_second: f64) -> Option<Budget> {
    if !per_second.is_finite() || per_second <= 0.0 {
        return None;
    }
    let per_hour = NonZeroU32::new((per_second * 3_600.0).round().min(f64::from(u32::MAX)) as u32)?;
    let burst = NonZeroU32::new((per_second * 5.0).round() as u32).unwrap_or(NonZeroU32::MIN);
    Some(Budget::new(per_hour, Duration::from_secs(3_600)).with_burst(burst))
}

/// Settings of a CloudWatch Logs link.
#[derive(Debug, Clone, PartialEq)]
pub struct CwlLinkConfig {
    /// The log group: one per network.
    pub group: String,
    /// Prefix of every stream name ("" or anything without `:` or `*`, such as `tunnel/`).
    pub prefix: String,
    /// How batches are written as text.
    pub encoding: TextEncoding,
    /// The largest event a send writes, message plus 26 bytes: at most 1 MB (the newest API
    /// reference), 256 KB by default (the limit every version of the service has taken). Four
    /// of 256 KB fill one call.
    pub event_bytes: usize,
    /// The GetLogEvents calls this node may make: the account's quota is shared by every node.
    pub read_rate: Budget,
    /// How the receiver reads.
    pub read: ReadMode,
    /// A sender rings a destination's bell when it starts talking to it, and again when it
    /// speaks after this long.
    pub ring_every: Duration,
    /// A receiver stops reading a sender's stream after this long without a new event (the
    /// sender rings when it speaks again); it keeps its place.
    pub forget_after: Duration,
    /// A receiver that is hearing from senders reads its bell at most this often; with none,
    /// on every poll.
    pub bell_every: Duration,
    /// How long a missing batch is waited for before it is counted lost and skipped.
    pub gap_grace: Duration,
    /// The retention set on a log group the link creates, in days (`None`: leave the group's).
    pub retention_days: Option<u32>,
    /// Retries of throttled and failed writes. (A read that fails ends the poll; the next poll
    /// reads on from the same place.)
    pub retry: RetryPolicy,
    /// Prices, for the cost a link reports.
    pub prices: Prices,
    /// The network's keys, if it seals its batches ([`Sealing`](crate::link::Sealing)): every
    /// batch sent is sealed, every event read must open.
    pub sealing: Option<std::sync::Arc<crate::link::Sealing>>,
}

impl Default for CwlLinkConfig {
    fn default() -> Self {
        CwlLinkConfig {
            group: "tunnel".into(),
            prefix: String::new(),
            encoding: TextEncoding::Z85,
            event_bytes: CLASSIC_EVENT_BYTES,
            read_rate: DEFAULT_READ_RATE,
            read: ReadMode::Token,
            ring_every: Duration::from_secs(60),
            forget_after: Duration::from_secs(180),
            bell_every: Duration::from_secs(5),
            gap_grace: Duration::from_secs(10),
            retention_days: Some(1),
            retry: RetryPolicy::default(),
            prices: Prices::CLOUDWATCH_LOGS_STANDARD,
            sealing: None,
        }
    }
}

/// A link over CloudWatch Logs (or anything that behaves like it).
#[derive(Debug)]
pub struct CwlLink<S> {
    pub(super) store: S,
    pub(super) me: NodeId,
    pub(super) epoch: u64,
    pub(super) config: CwlLinkConfig,
    pub(super) outboxes: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<Outbox>>>>,
    pub(super) inbox: tokio::sync::Mutex<Inbox>,
    pub(super) ledger: Ledger,
    pub(super) reads: Mutex<TokenBucket>,
    /// Reads held back after the account's quota throttled one.
    pub(super) throttle: Mutex<ReadBackoff>,
    /// The largest batch (binary) one event carries.
    pub(super) batch_bytes: usize,
    group_ready: AtomicBool,
    clock: (i64, Instant),
    retry: Retry,
    rings: AtomicU64,
    bells: metrics::Counter,
    pub(super) deferred: AtomicU64,
    deferred_metric: metrics::Counter,
}

/// The most bytes whose text fits `message` bytes.
fn binary_capacity(message: usize, encoding: TextEncoding) -> usize {
    let mut n = match encoding {
        TextEncoding::Z85 => message.saturating_sub(2) / 5 * 4,
        TextEncoding::Base64 => message.saturating_sub(1) / 4 * 3,
    };
    while n > 0 && text::encoded_len(n, encoding) > message {
        n -= 1;
    }
    n
}

impl<S: LogStore> CwlLink<S> {
    /// A link for node `me` in its life `epoch` (a new one at each start: the start time in
    /// microseconds is a good choice).
    ///
    /// # Errors
    ///
    /// A stream prefix the service would refuse, an empty group, or an event size outside
    /// what one batch of one byte needs and the service's 1 MB.
    pub fn new(store: S, me: NodeId, epoch: u64, config: CwlLinkConfig) -> Result<Self, String> {
        check_prefix(&config.prefix)?;
        if config.group.is_empty() || config.group.len() > 512 {
            return Err(format!(
                "log group name {:?}: 1 to 512 characters",
                config.group
            ));
        }
        let min = text::encoded_len(
            HEADER_LEN + TRAILER_LEN + FRAME_OVERHEAD + 1,
            config.encoding,
        ) + EVENT_OVERHEAD;
        if !(min..=MAX_EVENT_BYTES).contains(&config.event_bytes) {
            return Err(format!(
                "event size {} outside {min}..={MAX_EVENT_BYTES}",
                config.event_bytes
            ));
        }
        let batch_bytes = binary_capacity(config.event_bytes - EVENT_OVERHEAD, config.encoding)
            - crate::link::seal::overhead(config.sealing.as_ref());
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Ok(CwlLink {
            store,
            me,
            epoch,
            outboxes: Mutex::default(),
            inbox: tokio::sync::Mutex::new(Inbox::new(config.gap_grace)),
            ledger: Ledger::new(me, Call::NAMES, config.prices.clone()),
            reads: Mutex::new(TokenBucket::new(config.read_rate)),
            throttle: Mutex::new(ReadBackoff::new(me ^ epoch.rotate_left(17))),
            batch_bytes,
            group_ready: AtomicBool::new(false),
            clock: (now_ms, Instant::now()),
            retry: Retry::new(config.retry, me ^ epoch.rotate_left(32)),
            rings: AtomicU64::new(0),
            bells: metrics::counter!(metric_names::BELLS, "node" => format!("{me:016x}")),
            deferred: AtomicU64::new(0),
            deferred_metric: metrics::counter!(metric_names::READS_DEFERRED, "node" => format!("{me:016x}")),
            config,
        })
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
    pub fn config(&self) -> &CwlLinkConfig {
        &self.config
    }

    /// Bells rung so far.
    pub fn rings(&self) -> u64 {
        self.rings.load(Ordering::Relaxed)
    }

    /// Reads left for a later poll because the node's read rate was spent.
    pub fn deferred_reads(&self) -> u64 {
        self.deferred.load(Ordering::Relaxed)
    }

    /// The most events one PutLogEvents call of this link carries.
    pub fn events_per_call(&self) -> usize {
        (MAX_CALL_BYTES / self.config.event_bytes).clamp(1, MAX_EVENTS)
    }

    pub(super) fn rang(&self) {
        self.rings.fetch_add(1, Ordering::Relaxed);
        self.bells.increment(1);
    }

    /// The time in milliseconds since the Unix epoch, following tokio's clock (so that a
    /// simulation on a paused clock writes simulated times).
    pub(super) fn now_ms(&self) -> i64 {
        let (ms, at) = self.clock;
        ms + Instant::now().duration_since(at).as_millis() as i64
    }

    /// Takes one read from the node's read rate; false (counted) if it is spent.
    pub(super) fn may_read(&self) -> bool {
        let mut bucket = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
        let ok = bucket.try_take(Instant::now()).is_ok();
        if !ok {
            self.deferred.fetch_add(1, Ordering::Relaxed);
            self.deferred_metric.increment(1);
        }
        ok
    }

    /// Runs a write of `kind` carrying `bytes`, retrying throttling and failures with backoff
    /// and jitter; every attempt is counted.
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

    /// One read, not retried: counted, and the bytes that came back counted too.
    pub(super) async fn read(
        &self,
        stream: &str,
        from: super::store::ReadFrom<'_>,
        limit: Option<u32>,
    ) -> Result<super::store::LogPage, StoreError> {
        self.read_gap().await;
        let op = Call::GetLogEvents as usize;
        self.ledger.call(op, 0);
        let page = self
            .store
            .get_events(&self.config.group, stream, from, limit)
            .await;
        match &page {
            Ok(page) => self
                .ledger
                .bytes(op, page.events.iter().map(|e| e.message.len() as u64).sum()),
            Err(e) => tracing::debug!(%stream, error = %e, "read failed"),
        }
        self.read_answered(page.as_ref().err());
        page
    }

    /// Waits out the gap the account's quota asks between this node's reads ([`ReadBackoff`]).
    pub(super) async fn read_gap(&self) {
        let at = self
            .throttle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(Instant::now());
        tokio::time::sleep_until(at).await;
    }

    /// Tells the read backoff how a read went: throttled by the account's quota, or not.
    pub(super) fn read_answered(&self, error: Option<&StoreError>) {
        let mut backoff = self.throttle.lock().unwrap_or_else(PoisonError::into_inner);
        match error {
            Some(e) if e.kind() == StoreErrorKind::Throttled => backoff.throttled(Instant::now()),
            _ => backoff.answered(),
        }
    }

    /// What a node checks at start: that it may create (or use) the log group, and read its
    /// own streams. Creates the group, with its retention, if it is missing.
    ///
    /// # Errors
    ///
    /// The call that failed: [`StoreErrorKind::AccessDenied`] names the IAM action in its
    /// message; [`StoreErrorKind::NotFound`] means the group is missing and could not be
    /// created; [`StoreErrorKind::Unavailable`], the service could not be reached.
    pub async fn check(&self) -> Result<(), StoreError> {
        // One read of our own mark, not retried: an unreachable service or refused credentials
        // show at once, not after the retry window.
        let mark = super::layout::mark_stream(&self.config.prefix, self.me);
        let read = self
            .read(&mark, super::store::ReadFrom::Tail, Some(1))
            .await;
        if let Err(e) = &read
            && e.kind() != StoreErrorKind::NotFound
        {
            return Err(e.clone());
        }
        let created = match self.ensure_group().await {
            Ok(()) => true,
            // A group made by someone else, with a policy that lets nodes use it only.
            Err(e) if e.kind() == StoreErrorKind::AccessDenied => {
                tracing::warn!(
                    group = %self.config.group,
                    error = %e,
                    "may not create the log group or set its retention; using it as it is"
                );
                false
            }
            Err(e) => return Err(e),
        };
        match read {
            Ok(_) => Ok(()),
            // The group exists (it was just created, or found): the stream is missing, as it
            // is until this node first receives. (Services word this answer differently.)
            Err(e) if e.kind() == StoreErrorKind::NotFound && created => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates the log group (and sets its retention) once per life of the link.
    async fn ensure_group(&self) -> Result<(), StoreError> {
        if self.group_ready.load(Ordering::Relaxed) {
            return Ok(());
        }
        let group = &self.config.group;
        self.call(Call::CreateLogGroup, 0, || self.store.create_group(group))
            .await?;
        if let Some(days) = self.config.retention_days {
            match self
                .call(Call::PutRetentionPolicy, 0, || {
                    self.store.set_retention(group, days)
                })
                .await
            {
                Ok(()) => {}
                // Events are then kept as long as the group says; the link works the same.
                Err(e) if e.kind() == StoreErrorKind::AccessDenied => tracing::warn!(
                    %group,
                    error = %e,
                    "may not set the log group's retention: events stay as long as it keeps them"
                ),
                Err(e) => return Err(e),
            }
        }
        self.group_ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Creates `stream`, and its group if that is missing too.
    async fn ensure_stream(&self, stream: &str) -> Result<(), StoreError> {
        let group = &self.config.group;
        match self
            .call(Call::CreateLogStream, 0, || {
                self.store.create_stream(group, stream)
            })
            .await
        {
            Err(e) if e.kind() == StoreErrorKind::NotFound => {
                self.group_ready.store(false, Ordering::Relaxed);
                self.ensure_group().await?;
                self.call(Call::CreateLogStream, 0, || {
                    self.store.create_stream(group, stream)
                })
                .await
            }
            done => done,
        }
    }

    /// PutLogEvents of `events` into `stream`, creating the stream (and the group) on demand.
    pub(super) async fn put(
        &self,
        stream: &str,
        events: &[super::store::LogEvent],
    ) -> Result<(), StoreError> {
        let bytes = super::limits::call_bytes(events);
        let group = &self.config.group;
        let put = || {
            self.call(Call::PutLogEvents, bytes, || {
                self.store.put_events(group, stream, events)
            })
        };
        match put().await {
            Err(e) if e.kind() == StoreErrorKind::NotFound => {
                self.ensure_stream(stream).await?;
                put().await
            }
            done => done,
        }
    }
}

impl<S: LogStore> Link for CwlLink<S> {
    fn limits(&self) -> ApiLimits {
        let per_event = self.batch_bytes - HEADER_LEN - TRAILER_LEN;
        let max_item = (MAX_FRAME_LEN + FRAME_OVERHEAD).min(per_event);
        let events = self.events_per_call();
        // Frames do not span events: packed in order, each event but the last may leave up to
        // one frame's room unused. Bundles this size always go in one call.
        ApiLimits::new(
            "logs:PutLogEvents",
            per_event * events - (max_item - 1) * (events - 1),
            usize::MAX,
            max_item,
        )
        .with_item_overhead(FRAME_OVERHEAD)
    }

    async fn send(&self, to: NodeId, frames: &[Bytes]) -> Result<(), LinkError> {
        self.send_batches(to, frames).await
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
