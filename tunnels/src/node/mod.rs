//! A node: frames in, bundled per destination, sent over a link within a budget; the inbox
//! polled on an adaptive heartbeat; frames out.
//!
//! ```text
//! send(to, frame) ──▶ keyed bundler (per destination, sized by the link) ──▶ Link::send
//!                                                                 │ then rush(): a reply is likely
//! heartbeat ──beat──▶ Link::poll ──▶ deliver(batch)               ▼
//!    ▲ faster() when batches came, slower() when none ◀───────────┘
//! ```
//!
//! - [`pacing`]: how the heart's rate follows what polls find, as a pure function.
//! - [`spend`]: a ceiling in dollars a day ([`NodeConfig::max_dollars_per_day`]) that every
//!   poll and send waits on.
//!
//! A poll (or a delivery) that panics is logged and counted in
//! [`NodeStats::poll_panics`], and the node goes on polling: a bug in one batch's handling must
//! not stop a node from receiving, silently, for the rest of its life.

use std::num::NonZeroU32;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bundler::{AddError, Budget, KeyedBundler};
use bytes::Bytes;
use cardio::Heartbeat;
use futures_util::FutureExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::link::{Link, NodeId, Received};

pub mod pacing;
pub mod spend;

use pacing::{Pace, Pacing, Polled};
use spend::{Kind, Spend};

/// What a poll that found batches does to the heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnData {
    /// Halve the interval.
    Faster,
    /// Jump to the shortest interval (the default: traffic tends to come in bursts).
    #[default]
    Rush,
}

/// The poll budget `tunnel up` applies unless told otherwise: 100,000 polls a day, a fifth of
/// them at once. It never binds in the cost simulation's hour-long traces (`adaptive+budget`
/// there equals `adaptive`), and caps the polling of a node busy all day at $0.08 a day on S3
/// Standard when it talks to one peer (a poll is then one or two GETs; each further active peer
/// adds a GET, up to a LIST); past the burst, it polls about once every 0.9 s.
pub const DEFAULT_POLL_BUDGET: Budget = poll_budget(NonZeroU32::new(100_000).expect("nonzero"));

/// A budget of `polls` a day, a fifth of them at once (at least one).
pub const fn poll_budget(polls: NonZeroU32) -> Budget {
    let burst = match NonZeroU32::new(polls.get() / 5) {
        Some(burst) => burst,
        None => NonZeroU32::MIN,
    };
    Budget::per_day(polls).with_burst(burst)
}

/// Polling at the speed of the data while it flows in bulk.
///
/// A poll that finds, or a send that carries, at least [`bytes`](Bulk::bytes) is bulk: the
/// node then polls again [`gap`](Bulk::gap) later, [`polls`](Bulk::polls) times, instead of
/// waiting for its heartbeat (`min_poll`, 200 ms). The receiver of a bulk transfer reads each
/// batch moments after it was written, and the sender reads its peer's acknowledgements as
/// soon: the round trip while data flows is a few calls, not a poll interval, and TCP's window
/// goes as far. While the polls last, sends do not wait for company either
/// ([`send_delay`](Bulk::send_delay)). Each such poll is a GET or two, 12.5 times cheaper on S3
/// than a PUT, but a stream that does not wait for its acknowledgements gains only latency from
/// them, and its acknowledgements, answered sooner, go in more and smaller PUTs: in the cost
/// simulation the `bulk` trace (a steady 200 Mbit/s) costs 22% more per GiB, and the `web`
/// trace, whose responses sometimes reach `bytes`, 4.6% more (`costsim --bulk-polls 20`; pings
/// and keystrokes never reach it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bulk {
    /// The batch size, sent or received, that counts as bulk.
    pub bytes: usize,
    /// The polls at the speed of the data each bulk batch buys (not added up: refilled). They
    /// are beats out of turn of the poll heartbeat ([`cardio::Heartbeat::beat_now`]), so the
    /// poll budget caps them with the others.
    pub polls: u32,
    /// The time between them.
    pub gap: Duration,
    /// How long a frame waits for company while the bulk polls last, instead of
    /// [`NodeConfig::send_delay`]: a bundle then goes as soon as the previous send to its
    /// peer is done (what piles up meanwhile goes with the next), so neither the data nor its
    /// acknowledgements wait. Back to `send_delay` once the polls are spent.
    pub send_delay: Duration,
}

impl Default for Bulk {
    fn default() -> Self {
        Bulk {
            bytes: 256 << 10,
            polls: 20,
            gap: Duration::from_millis(10),
            send_delay: Duration::ZERO,
        }
    }
}

/// Settings of a node. The defaults are the ones the cost simulation justifies; see the README.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// The shortest interval between polls.
    pub min_poll: Duration,
    /// The longest interval between polls, when idle.
    pub max_poll: Duration,
    /// What `slower()` multiplies and `faster()` divides the interval by.
    pub poll_factor: f64,
    /// What a poll that found batches does.
    pub on_data: OnData,
    /// For this long after the last traffic (sent or received), empty polls slow the heart
    /// only up to [`linger_poll`](NodeConfig::linger_poll): conversations pause and resume, and
    /// a GET probe is cheap. After it, the heart backs off to `max_poll`.
    pub linger: Duration,
    /// The longest interval while lingering.
    pub linger_poll: Duration,
    /// A ceiling on polls.
    pub poll_budget: Option<Budget>,
    /// A ceiling on sends.
    pub send_budget: Option<Budget>,
    /// How long a frame waits for company before its batch goes.
    pub send_delay: Duration,
    /// Frames accepted and not yet sent, in bytes: the node's memory and its backpressure.
    /// Under a [`max_dollars_per_day`](NodeConfig::max_dollars_per_day) on a link that bills
    /// bytes, at most what the ceiling's bucket pays to send (at least 128 KiB), so that
    /// nothing accepted waits longer than the bucket takes to refill.
    pub buffered_bytes: usize,
    /// Sends in flight at once, to different peers: one peer's sends go one after another,
    /// in order (what waits for a busy peer goes in its next send), while sends to others go
    /// beside them. A hub answering many clients needs many; two nodes use one.
    pub concurrent_sends: usize,
    /// Seeds the poll jitter, for runs that must repeat exactly (the cost simulation).
    pub seed: Option<u64>,
    /// The most frames one send carries (beside the link's own limits). `usize::MAX` unless
    /// you want one object per packet, as the seed's design had.
    pub frames_per_send: usize,
    /// Polling at the speed of the data while it flows in bulk; `None` (the default): always
    /// on the heart. [`Bulk::default()`] made a 100 MB transfer over a local S3 server 5 times
    /// faster (11.0 to 56.9 MB/s at the median), for $0.0072 per GiB against $0.0046 (README,
    /// "Bulk transfers: where the time goes").
    pub bulk: Option<Bulk>,
    /// A ceiling on what the node's calls cost, in dollars a day, priced by the link's
    /// [`prices`](Link::prices): no 24 hours spend more, whatever the traffic (see [`spend`]
    /// for exactly what that means). When it binds, polls wait for money (the node polls more
    /// slowly) and so do sends (bundles wait longer, and grow). `None` (the default): no
    /// ceiling in dollars.
    pub max_dollars_per_day: Option<f64>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            min_poll: Duration::from_millis(200),
            max_poll: Duration::from_secs(60),
            poll_factor: 1.25,
            on_data: OnData::Rush,
            linger: Duration::from_secs(300),
            linger_poll: Duration::from_millis(400),
            poll_budget: None,
            send_budget: None,
            send_delay: Duration::from_millis(20),
            buffered_bytes: 64 << 20,
            concurrent_sends: 128,
            seed: None,
            frames_per_send: usize::MAX,
            bulk: None,
            max_dollars_per_day: None,
        }
    }
}

/// Counts of a node's traffic.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Frames handed to the link's sends that succeeded.
    pub frames_sent: AtomicU64,
    /// Frames of sends that failed after retries: lost.
    pub frames_lost: AtomicU64,
    /// Frames delivered.
    pub frames_received: AtomicU64,
    /// Polls made.
    pub polls: AtomicU64,
    /// Polls that failed.
    pub poll_errors: AtomicU64,
    /// Polls or deliveries that panicked (logged; the node went on).
    pub poll_panics: AtomicU64,
    /// Polls made at the speed of the data, between heartbeats ([`Bulk`]); counted in
    /// `polls` too.
    pub bulk_polls: AtomicU64,
}

/// A running node. Dropping it stops the poll loop; call [`shutdown`](Node::shutdown) to send
/// what is pending first.
#[derive(Debug)]
pub struct Node {
    bundler: KeyedBundler<NodeId, Bytes>,
    heart: cardio::Handle,
    stop: CancellationToken,
    poller: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    stats: Arc<NodeStats>,
    spend: Option<Arc<Spend>>,
}

impl Node {
    /// Starts a node on `link`: `deliver` gets every batch addressed to it, in order per sender.
    ///
    /// # Panics
    ///
    /// Panics outside a Tokio runtime, if the poll bounds are invalid (see
    /// [`cardio::heartbeat`]), or if [`max_dollars_per_day`](NodeConfig::max_dollars_per_day)
    /// is not a positive number.
    pub fn start<L, D>(link: Arc<L>, config: NodeConfig, mut deliver: D) -> Node
    where
        L: Link,
        D: FnMut(Received) + Send + 'static,
    {
        let stop = CancellationToken::new();
        let mut heart = Heartbeat::builder(config.min_poll, config.max_poll)
            .factor(config.poll_factor)
            .jitter(0.05)
            .name("tunnel-poll")
            .cancel_on(stop.clone());
        if let Some(budget) = config.poll_budget {
            heart = heart.budget(budget);
        }
        if let Some(seed) = config.seed {
            heart = heart.jitter_seed(seed);
        }
        let mut heart = heart.build();
        let handle = heart.handle();
        let stats = Arc::new(NodeStats::default());
        // When the node last sent or received, as milliseconds since `epoch`; NEVER before
        // any traffic (starting is not traffic: an idle node must not linger).
        let epoch = tokio::time::Instant::now();
        let last_traffic = Arc::new(AtomicU64::new(NEVER));

        let spend = config.max_dollars_per_day.map(|per_day| {
            let spend = Spend::new(per_day, dearest(&*link).0);
            Arc::new(spend.unwrap_or_else(|e| panic!("NodeConfig::max_dollars_per_day: {e}")))
        });
        let mut limits = link.limits().with_max_items(config.frames_per_send);
        let mut buffered_bytes = config.buffered_bytes;
        if let Some(spend) = &spend {
            // Where bytes are billed, no send may cost more than the bucket holds for sends:
            // it would overshoot the ceiling by the difference.
            let affordable = affordable_bytes(&*link, spend);
            limits = limits.with_max_bundle_bytes(affordable);
            // Nor may the node accept more than that bucket pays to send: what it accepts then
            // leaves within the hours the bucket takes to refill. A buffer of 64 MiB under a
            // ceiling of $0.001 a day on CloudWatch Logs (2 MB ingested a day) held packets
            // for months (the cost simulation's web trace, `costsim --max-dollars-per-day`).
            buffered_bytes = buffered_bytes.min(affordable);
        }
        let delay = bundler::SharedDelay::new(config.send_delay);
        let mut bundler = bundler::Bundler::builder()
            .name("tunnel-send")
            .limits(limits)
            .count_threshold(usize::MAX)
            .byte_threshold(usize::MAX)
            .shared_delay(delay.clone())
            .buffered_byte_limit(buffered_bytes)
            .handler_limit(config.concurrent_sends)
            // A peer's batches are numbered as they are sent: one send per peer at a time
            // keeps them in the order the frames came.
            .one_call_per_key(true)
            // Under load, what piles up during a send goes with the next one: objects grow
            // with the load instead of queueing.
            .merge_when_busy(true);
        if let Some(budget) = config.send_budget {
            bundler = bundler.budget(budget);
        }
        let bulk = Arc::new(BulkPolls::new(config.bulk, delay, config.send_delay));
        let bundler = bundler.build_keyed({
            let (link, heart, stats) = (Arc::clone(&link), handle.clone(), Arc::clone(&stats));
            let (last_traffic, bulk) = (Arc::clone(&last_traffic), Arc::clone(&bulk));
            let spend = spend.clone();
            move |to: NodeId, frames: Vec<Bytes>| {
                let (link, heart, stats) = (Arc::clone(&link), heart.clone(), Arc::clone(&stats));
                let (last_traffic, bulk) = (Arc::clone(&last_traffic), Arc::clone(&bulk));
                let spend = spend.clone();
                async move {
                    let n = frames.len() as u64;
                    if let Some(spend) = &spend {
                        let bytes: usize = frames.iter().map(Bytes::len).sum();
                        spend
                            .ready(Kind::Send, send_estimate(&*link, bytes, frames.len()))
                            .await;
                    }
                    let sent = link.send(to, &frames).await;
                    if let Some(spend) = &spend {
                        spend.settle(Kind::Send, link.cost());
                    }
                    match sent {
                        Ok(()) => {
                            stats.frames_sent.fetch_add(n, Ordering::Relaxed);
                            // The peer's answers to megabytes come soon: read them as they come.
                            bulk.saw(|| frames.iter().map(Bytes::len).sum());
                        }
                        Err(_) => {
                            stats.frames_lost.fetch_add(n, Ordering::Relaxed);
                        }
                    }
                    last_traffic.store(millis_since(epoch), Ordering::Relaxed);
                    heart.rush();
                }
            }
        });

        let pacing = Pacing::of(&config);
        let poller = tokio::spawn({
            let stats = Arc::clone(&stats);
            let stop = stop.clone();
            let spend = spend.clone();
            async move {
                while bulk.wait(&mut heart, &stop, &stats).await {
                    if let Some(spend) = &spend {
                        tokio::select! {
                            () = spend.ready(Kind::Poll, spend.poll_estimate()) => {}
                            () = stop.cancelled() => break,
                        }
                    }
                    stats.polls.fetch_add(1, Ordering::Relaxed);
                    let polled = AssertUnwindSafe(link.poll()).catch_unwind().await;
                    if let Some(spend) = &spend {
                        spend.settle(Kind::Poll, link.cost());
                    }
                    let polled = match polled {
                        Ok(Ok(batches)) if !batches.is_empty() => {
                            last_traffic.store(millis_since(epoch), Ordering::Relaxed);
                            bulk.saw(|| {
                                let frames = batches.iter().flat_map(|batch| &batch.frames);
                                frames.map(Bytes::len).sum()
                            });
                            for batch in batches {
                                let n = batch.frames.len() as u64;
                                stats.frames_received.fetch_add(n, Ordering::Relaxed);
                                let (sender, seq) = (batch.sender, batch.seq);
                                let delivered =
                                    std::panic::catch_unwind(AssertUnwindSafe(|| deliver(batch)));
                                if let Err(panic) = delivered {
                                    stats.poll_panics.fetch_add(1, Ordering::Relaxed);
                                    tracing::error!(
                                        sender = format_args!("{sender:016x}"),
                                        seq,
                                        panic = panic_message(&*panic),
                                        "delivering a batch panicked; going on with the next"
                                    );
                                }
                            }
                            Polled::Data
                        }
                        Ok(Ok(_)) => Polled::Empty,
                        Ok(Err(_)) => {
                            stats.poll_errors.fetch_add(1, Ordering::Relaxed);
                            Polled::Failed
                        }
                        Err(panic) => {
                            stats.poll_panics.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(
                                panic = panic_message(&*panic),
                                "a poll panicked; polling goes on"
                            );
                            Polled::Failed
                        }
                    };
                    let last = last_traffic.load(Ordering::Relaxed);
                    let since_traffic = (last != NEVER)
                        .then(|| Duration::from_millis(millis_since(epoch).saturating_sub(last)));
                    match pacing.next(polled, heart.interval(), since_traffic) {
                        Pace::Faster => drop(heart.faster()),
                        Pace::Rush => drop(heart.rush()),
                        Pace::Slower => drop(heart.slower()),
                        Pace::Hold => {}
                    }
                }
            }
        });
        Node {
            bundler,
            heart: handle,
            stop,
            poller: tokio::sync::Mutex::new(Some(poller)),
            stats,
            spend,
        }
    }

    /// Queues `frame` for `to`. Never blocks.
    ///
    /// # Errors
    ///
    /// Hands the frame back when the node's buffer is full, the frame is too large for the
    /// link, or the node is shutting down.
    pub fn send(&self, to: NodeId, frame: Bytes) -> Result<(), AddError<Bytes>> {
        let size = frame.len();
        self.bundler.add(to, frame, size)
    }

    /// Queues `frame` for `to`, waiting for room in the buffer.
    ///
    /// # Errors
    ///
    /// Hands the frame back when it is too large for the link or the node is shutting down.
    pub async fn send_wait(&self, to: NodeId, frame: Bytes) -> Result<(), AddError<Bytes>> {
        let size = frame.len();
        self.bundler.add_wait(to, frame, size).await
    }

    /// The poll heartbeat, to read or change its rate.
    pub fn heart(&self) -> &cardio::Handle {
        &self.heart
    }

    /// The node's counts (clone the `Arc` to read them after [`shutdown`](Node::shutdown)).
    pub fn stats(&self) -> &Arc<NodeStats> {
        &self.stats
    }

    /// The dollar ceiling's bucket, with a [`max_dollars_per_day`](NodeConfig::max_dollars_per_day).
    pub fn spend(&self) -> Option<&Arc<Spend>> {
        self.spend.as_ref()
    }

    /// Sends everything queued, then stops polling. Frames sent after it started are handed
    /// back as closed; calling it again waits for the first call to finish.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves the node closed to new frames; what was queued is still sent
    /// (the bundler's handler tasks go on) and the poller stops at its next beat.
    pub async fn shutdown(&self) {
        let mut poller = self.poller.lock().await;
        self.bundler.close().await;
        self.stop.cancel();
        // The poller ends at its next tick; a poll under way finishes first.
        if let Some(poller) = poller.as_mut() {
            let _ = poller.await;
        }
        *poller = None;
    }
}

/// The polls a node may make at the speed of the data ([`Bulk`]), and the wake-up of a poller
/// waiting on its heart when a bulk send buys some.
struct BulkPolls {
    bulk: Option<Bulk>,
    left: AtomicU32,
    bought: tokio::sync::Notify,
    /// The send bundler's delay: `bulk_delay` while polls are left, else `send_delay`.
    delay: bundler::SharedDelay,
    send_delay: Duration,
    /// [`Bulk::send_delay`], never longer than `send_delay`.
    bulk_delay: Duration,
}

impl BulkPolls {
    fn new(bulk: Option<Bulk>, delay: bundler::SharedDelay, send_delay: Duration) -> Self {
        BulkPolls {
            bulk,
            left: AtomicU32::new(0),
            bought: tokio::sync::Notify::new(),
            delay,
            send_delay,
            bulk_delay: bulk.map_or(send_delay, |b| b.send_delay.min(send_delay)),
        }
    }

    /// A batch of `bytes()` was sent or received: bulk buys (refills) the polls, and sends
    /// stop waiting for company. The bytes are counted only when bulk polls are on.
    fn saw(&self, bytes: impl FnOnce() -> usize) {
        if let Some(bulk) = self.bulk
            && bytes() >= bulk.bytes
        {
            self.delay.set(self.bulk_delay);
            let before = self.left.fetch_max(bulk.polls, Ordering::Relaxed);
            if before == 0 {
                self.bought.notify_one();
            }
        }
    }

    fn take(&self) -> bool {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Waits for the next poll: a bulk poll `gap` from now if one is left (a beat out of turn,
    /// so within the poll budget), else the heart's beat (or a bulk send buying polls
    /// meanwhile). False once the node stops.
    async fn wait(
        &self,
        heart: &mut Heartbeat,
        stop: &CancellationToken,
        stats: &NodeStats,
    ) -> bool {
        let Some(bulk) = self.bulk else {
            return heart.tick().await.is_some();
        };
        loop {
            if self.take() {
                self.delay.set(self.bulk_delay);
                tokio::select! {
                    () = tokio::time::sleep(bulk.gap) => {}
                    () = stop.cancelled() => return false,
                }
                if heart.beat_now().is_some() {
                    stats.bulk_polls.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                // The budget has no poll to spare: the heart says when.
                self.left.store(0, Ordering::Relaxed);
            }
            // No bulk poll now: sends wait for company again. A bulk batch seen meanwhile
            // notifies `bought`, and the next turn sets the bulk delay back.
            self.delay.set(self.send_delay);
            tokio::select! {
                beat = heart.tick() => return beat.is_some(),
                () = self.bought.notified() => {}
            }
        }
    }
}

/// The dearest price per call and per GB of `link`'s operations.
fn dearest<L: Link>(link: &L) -> (f64, f64) {
    let prices = link.prices();
    prices.ops.iter().fold((0.0, 0.0), |(call, gb), (_, p)| {
        (f64::max(call, p.per_1k_calls / 1e3), f64::max(gb, p.per_gb))
    })
}

/// What a send of `frames` frames of `bytes` in all may cost on `link`, at most: two of its
/// dearest calls (a PUT and a bell's, on S3) and, where bytes are billed, twice its bytes
/// (the text encoding of a log event is 1.6 times the bytes it carries) plus 64 a frame.
fn send_estimate<L: Link>(link: &L, bytes: usize, frames: usize) -> f64 {
    let (per_call, per_gb) = dearest(link);
    2.0 * per_call + per_gb * (2 * bytes + 64 * frames) as f64 / 1e9
}

/// The largest batch whose [`send_estimate`] the sends' half of `spend`'s bucket can pay
/// (at least 128 KiB, room for the largest frame); no limit where bytes are free.
fn affordable_bytes<L: Link>(link: &L, spend: &Spend) -> usize {
    let (per_call, per_gb) = dearest(link);
    if per_gb <= 0.0 {
        return usize::MAX;
    }
    let dollars = spend.capacity(Kind::Send) - 2.0 * per_call;
    // Frames of at least 1,280 bytes (the smallest MTU's) cost 64 more each.
    let bytes = dollars / per_gb * 1e9 / (2.0 + 64.0 / 1_280.0);
    (bytes.max(0.0) as usize).max(128 << 10)
}

/// What a panic said, if it said it in a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

/// `last_traffic` before there was any.
const NEVER: u64 = u64::MAX;

fn millis_since(epoch: tokio::time::Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
