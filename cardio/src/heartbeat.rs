//! The heartbeat: one reusable `Sleep`, rescheduled whenever the interval changes.
//!
//! Invariants, true whenever `poll_tick` returns `Pending`:
//! - `sleep` is due at `last + gap(scheduled)` (`last`: when the previous beat was due if it
//!   was on time, else when it was delivered), pushed back to the budget's earliest conforming
//!   instant if that is later (then `held` is set); before the first beat it is due at creation.
//! - `scheduled` equals the shared interval, and the task's waker is registered with the shared
//!   state, so any later change wakes it and is applied on the next poll.

use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_core::{FusedStream, Stream};
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::budget::{Budget, TokenBucket};
use crate::builder::{Builder, check_bounds};
use crate::metrics::Metrics;
use crate::shared::{Handle, Shared};

/// One beat of a [`Heartbeat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    at: Instant,
    coalesced: u64,
}

impl Beat {
    /// When the beat was delivered.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// How many beats were missed, because the consumer came late, and merged into this one.
    /// Zero for a consumer that keeps up.
    pub fn coalesced(&self) -> u64 {
        self.coalesced
    }
}

/// An adaptive heartbeat: a stream of beats whose interval halves on [`faster`] and doubles on
/// [`slower`], always between a shortest interval `min` and a longest `max`.
///
/// Made by [`heartbeat`](crate::heartbeat) or [`Heartbeat::builder`]. The first beat comes at
/// once; after that, beats come one interval after the previous one was due (or, when the
/// consumer took it late, after it was delivered). See the [crate documentation](crate) for the
/// model and what the timer's resolution means for it.
///
/// # Cancel safety
///
/// Taking beats through [`tick`](Heartbeat::tick), [`poll_tick`](Heartbeat::poll_tick) or the
/// [`Stream`] is cancel safe: a beat is consumed only when it is returned.
///
/// [`faster`]: Heartbeat::faster
/// [`slower`]: Heartbeat::slower
pub struct Heartbeat {
    shared: Arc<Shared>,
    sleep: Pin<Box<Sleep>>,
    /// The interval, in nanoseconds, that `sleep`'s deadline was computed from.
    scheduled: u64,
    /// When the last beat was due, if it was on time, else when it was delivered; `None` before
    /// the first.
    last: Option<Instant>,
    /// Whether the budget pushed the pending beat past its interval.
    held: bool,
    jitter: Option<Jitter>,
    budget: Option<TokenBucket>,
    /// Identity of the waker a clone of which was last left in the shared slot.
    armed_with: Option<WakerId>,
    /// Boxed because it is `!Unpin`; allocated once, only when a token is given.
    cancel: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    done: bool,
}

impl Heartbeat {
    /// Starts building a heartbeat that beats between every `min` and every `max`.
    ///
    /// # Panics
    ///
    /// Panics if `min` is zero or greater than `max`; the message names the arguments.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let heart = cardio::Heartbeat::builder(Duration::from_millis(10), Duration::from_secs(10))
    ///     .start(Duration::from_secs(1))
    ///     .build();
    /// assert_eq!(heart.interval(), Duration::from_secs(1));
    /// # }
    /// ```
    #[track_caller]
    pub fn builder(min: Duration, max: Duration) -> Builder {
        Builder::new(min, max)
    }

    pub(crate) fn from_builder(b: Builder) -> Self {
        check_bounds("Heartbeat::builder", b.min, b.max);
        let min = saturating_nanos(b.min);
        let max = saturating_nanos(b.max);
        let start = b.start.map_or(min, saturating_nanos);
        let shared = Arc::new(Shared::new(
            min,
            max,
            start,
            b.factor,
            Metrics::register(b.name),
        ));
        Heartbeat {
            shared,
            // The first beat is due now: a poller polls when it starts.
            sleep: Box::pin(sleep_until(Instant::now())),
            scheduled: start,
            last: None,
            held: false,
            armed_with: None,
            jitter: (b.jitter > 0.0).then(|| Jitter::new(b.jitter, b.jitter_seed)),
            budget: b.budget.map(TokenBucket::new),
            cancel: b.cancel.map(|token| Box::pin(token.cancelled_owned())),
            done: false,
        }
    }

    /// Waits for the next beat. Returns `None` once the heartbeat was cancelled.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: if the future is dropped before it completes, no beat is
    /// lost, and the next call waits for the same beat.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let start = Instant::now();
    /// let mut heart = cardio::heartbeat(Duration::from_secs(1), Duration::from_secs(8));
    ///
    /// heart.tick().await; // at once
    /// heart.slower();
    /// heart.tick().await; // two seconds later
    /// assert_eq!(start.elapsed(), Duration::from_secs(2));
    /// # }
    /// ```
    pub async fn tick(&mut self) -> Option<Beat> {
        std::future::poll_fn(|cx| self.poll_tick(cx)).await
    }

    /// Polls for the next beat; the primitive under [`tick`](Heartbeat::tick) and [`Stream`].
    ///
    /// Returns `Poll::Ready(None)` once the heartbeat was cancelled. When it returns
    /// `Poll::Pending`, the waker in `cx` is woken when the beat is due, or when the interval
    /// changes so that it is due earlier.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Option<Beat>> {
        if self.done || self.poll_cancelled(cx) {
            return Poll::Ready(None);
        }
        loop {
            let interval = self.shared.interval_nanos();
            if interval != self.scheduled {
                // A change can make the beat overdue: it is then due now, at the change, so
                // that it is not mistaken for a beat the consumer came late for.
                self.schedule(interval, Instant::now());
            }
            if self.sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(self.deliver()));
            }
            // Arm the slot before the final look at the interval: a change made after that look
            // wakes us; a change made before it is seen here and applied by the loop.
            self.arm(cx.waker());
            if self.shared.interval_nanos() == self.scheduled {
                return Poll::Pending;
            }
        }
    }

    /// Takes a beat now, out of turn, if the budget has one: for a poller that knows more is
    /// waiting (a page came back full, a transfer is under way) and would rather not wait an
    /// interval for it. `min` does not apply; the [budget](Builder::budget) does, and the next
    /// beat is due an interval after this one. Returns `None`, and changes nothing, when the
    /// budget has no beat to give now or the heart was cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::num::NonZeroU32;
    /// use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let two = NonZeroU32::new(2).unwrap();
    /// let budget = cardio::Budget::new(two, Duration::from_secs(60)).with_burst(two);
    /// let mut heart = cardio::Heartbeat::builder(Duration::from_secs(1), Duration::from_secs(8))
    ///     .budget(budget)
    ///     .build();
    /// heart.tick().await; // at once
    /// assert!(heart.beat_now().is_some()); // out of turn: the second beat of the budget
    /// assert!(heart.beat_now().is_none()); // the budget has no third
    /// # }
    /// ```
    pub fn beat_now(&mut self) -> Option<Beat> {
        if self.done {
            return None;
        }
        let now = Instant::now();
        if let Some(budget) = self.budget.as_mut() {
            budget.try_take(now).ok()?;
        }
        self.shared.metrics.beats.increment(1);
        self.schedule_after(now);
        Some(Beat {
            at: now,
            coalesced: 0,
        })
    }

    /// A beat went out: draws the next gap's jitter and schedules the next beat an interval
    /// after `anchor` (not clamped to now: a beat already due comes at once).
    fn schedule_after(&mut self, anchor: Instant) {
        if let Some(jitter) = self.jitter.as_mut() {
            jitter.resample();
        }
        self.last = Some(anchor);
        self.schedule(self.shared.interval_nanos(), anchor);
    }

    /// Leaves a clone of `waker` in the shared slot, unless the slot is still armed with a clone
    /// of this very waker: the common case, which then costs no atomic write.
    fn arm(&mut self, waker: &Waker) {
        let id = WakerId::of(waker);
        let slot = &self.shared.waker;
        if self.armed_with == Some(id) && slot.is_armed() {
            return;
        }
        slot.register(waker);
        self.armed_with = Some(id);
    }

    fn poll_cancelled(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(cancelled) = self.cancel.as_mut() else {
            return false;
        };
        if cancelled.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.cancel = None;
        self.done = true;
        true
    }

    /// The pending beat is due: account for it and schedule the next one.
    fn deliver(&mut self) -> Beat {
        let now = Instant::now();
        let metrics = &self.shared.metrics;
        let mut coalesced = 0;
        let due = self.sleep.deadline();
        let late = now.saturating_duration_since(due);
        // Delivered within the slack of its deadline, a beat is on time: the timer's rounding,
        // the runtime's delay or a consumer a moment late, none of which should cost a beat.
        let on_time = late <= TIMER_SLACK;
        if self.last.is_some() && !on_time {
            // Beats that would have fallen between the deadline and now were missed by a slow
            // consumer. Deliver one beat, not a burst, and slow down: beating faster than the
            // consumer takes beats buys nothing.
            let late = late.as_nanos();
            let interval = u128::from(self.scheduled);
            if late >= interval {
                coalesced = u64::try_from(late / interval).unwrap_or(u64::MAX);
                metrics.coalesced.increment(coalesced);
                self.shared.slow_down();
            }
        }
        if self.held {
            metrics.budget_deferred.increment(1);
        }
        metrics.beats.increment(1);
        if let Some(budget) = self.budget.as_mut() {
            budget.take(now);
        }
        // On time, the next beat is due an interval after this one was due, so that the timer's
        // rounding (up to its millisecond) does not add to every interval and the rate is the
        // interval's. Taken late by its consumer, the next is due an interval after delivery.
        // (The first beat is due at creation: the schedule starts from its delivery.)
        let anchor = if on_time && self.last.is_some() {
            due
        } else {
            now
        };
        // A beat due already (the timer fired this one late, within the slack) then comes at
        // once, and the schedule keeps its phase.
        self.schedule_after(anchor);
        Beat { at: now, coalesced }
    }

    /// Points `sleep` at the beat due after `last` for an interval of `interval` nanoseconds,
    /// and not before `not_before`.
    fn schedule(&mut self, interval: u64, not_before: Instant) {
        self.scheduled = interval;
        let Some(last) = self.last else {
            // Before the first beat, which is due at creation, whatever the interval.
            return;
        };
        let gap = match &self.jitter {
            Some(jitter) => Duration::from_nanos((interval as f64 * jitter.factor) as u64),
            None => Duration::from_nanos(interval),
        };
        let mut due = last
            .checked_add(gap)
            .unwrap_or_else(|| far_future(last))
            .max(not_before);
        self.held = false;
        if let Some(earliest) = self.budget.as_ref().and_then(TokenBucket::earliest)
            && earliest > due
        {
            due = earliest;
            self.held = true;
        }
        if due != self.sleep.deadline() {
            self.sleep.as_mut().reset(due);
        }
    }

    /// Halves the interval (divides it by the factor), down to `min`, and returns the new one.
    /// The pending beat moves at once to the last beat plus the new interval.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let heart = cardio::Heartbeat::builder(Duration::from_secs(1), Duration::from_secs(60))
    ///     .start(Duration::from_secs(8))
    ///     .build();
    /// assert_eq!(heart.faster(), Duration::from_secs(4));
    /// # }
    /// ```
    pub fn faster(&self) -> Duration {
        self.shared.faster()
    }

    /// Doubles the interval (multiplies it by the factor), up to `max`, and returns the new one.
    /// The pending beat moves at once to the last beat plus the new interval.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let heart = cardio::heartbeat(Duration::from_secs(1), Duration::from_secs(3));
    /// assert_eq!(heart.slower(), Duration::from_secs(2));
    /// assert_eq!(heart.slower(), Duration::from_secs(3)); // clamped to `max`
    /// # }
    /// ```
    pub fn slower(&self) -> Duration {
        self.shared.slower()
    }

    /// Jumps to the shortest interval, `min`, and returns it: the thing to call right after
    /// sending a request whose reply this loop polls for.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let start = Instant::now();
    /// let mut heart = cardio::Heartbeat::builder(Duration::from_millis(100), Duration::from_secs(60))
    ///     .start(Duration::from_secs(60))
    ///     .build();
    /// heart.tick().await; // at once; the next beat is due in a minute
    /// heart.rush(); // ... now in 100 ms
    /// heart.tick().await;
    /// assert_eq!(start.elapsed(), Duration::from_millis(100));
    /// # }
    /// ```
    pub fn rush(&self) -> Duration {
        self.shared.rush()
    }

    /// The current interval between beats, before jitter and budget.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.shared.interval_nanos())
    }

    /// The shortest interval between beats.
    pub fn min(&self) -> Duration {
        Duration::from_nanos(self.shared.min_nanos())
    }

    /// The longest interval between beats.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.shared.max_nanos())
    }

    /// The budget this heart beats under, if any.
    pub fn budget(&self) -> Option<Budget> {
        self.budget.as_ref().map(TokenBucket::budget)
    }

    /// A cheap, cloneable `Send + Sync` handle that changes this heart's rate from elsewhere.
    /// See [`Handle`] for an example.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeat")
            .field("interval", &self.interval())
            .field("min", &self.min())
            .field("max", &self.max())
            .field("next", &self.sleep.deadline())
            .field("last", &self.last)
            .field("budget", &self.budget)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Stream for Heartbeat {
    type Item = Beat;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Beat>> {
        self.get_mut().poll_tick(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done { (0, Some(0)) } else { (0, None) }
    }
}

impl FusedStream for Heartbeat {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

/// What `Waker::will_wake` compares, taken from the waker we were polled with rather than from
/// our clone of it: Tokio's clones can carry another copy of the same vtable, so `will_wake`
/// between a waker and its clone may say no, and the slot would be re-armed on every beat.
/// Equal identities mean the same wake function on the same data; the clone held in the slot
/// keeps that data alive, so an identity cannot be reused by another task while it is armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WakerId {
    data: usize,
    vtable: usize,
}

impl WakerId {
    fn of(waker: &Waker) -> Self {
        WakerId {
            data: waker.data() as usize,
            vtable: std::ptr::from_ref(waker.vtable()) as usize,
        }
    }
}

/// How late a beat may be delivered and still count as on time: Tokio's timer fires up to its
/// resolution (1 ms) after a deadline, the runtime takes a moment more to poll the task, and a
/// busy or virtual machine adds milliseconds now and then. The same 5 ms as Tokio's `Interval`.
pub(crate) const TIMER_SLACK: Duration = Duration::from_millis(5);

fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A deadline that never comes in practice, for intervals too long to add to an `Instant`.
fn far_future(from: Instant) -> Instant {
    const THIRTY_YEARS: Duration = Duration::from_secs(30 * 365 * 86_400);
    from.checked_add(THIRTY_YEARS).unwrap_or(from)
}

/// Random spread of each interval over `[1 - spread, 1 + spread]`.
///
/// A SplitMix64 generator: a heartbeat needs spread, not cryptography, and this keeps the crate
/// free of a random-number dependency. Seeded from the standard library's per-process keys.
#[derive(Debug)]
struct Jitter {
    spread: f64,
    state: u64,
    /// The factor applied to the pending interval; fixed until the next beat, so that a change
    /// of rate mid-sleep does not draw again.
    factor: f64,
}

impl Jitter {
    fn new(spread: f64, seed: Option<u64>) -> Self {
        let mut jitter = Jitter {
            spread,
            state: seed.unwrap_or_else(|| RandomState::new().hash_one(0x6361_7264_696f_u64)),
            factor: 1.0,
        };
        jitter.resample();
        jitter
    }

    /// SplitMix64, written out rather than taken from `rand`: `cardio` depends on tokio,
    /// futures-core and metrics only, so that it builds in seconds, and jitter needs no more
    /// than a well-mixed 64-bit step. The rest of the workspace uses `rand_chacha`.
    fn resample(&mut self) {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 53 bits as a uniform fraction in [0, 1).
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
        self.factor = 1.0 - self.spread + 2.0 * self.spread * unit;
    }
}
