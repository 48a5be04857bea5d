//! State shared between a [`Heartbeat`](crate::Heartbeat) and its [`Handle`]s.
//!
//! Invariant: `interval` always holds a whole number of nanoseconds in `[min, max]`. Whoever
//! changes it wakes the heartbeat's task through `waker`, so a pending beat is rescheduled at
//! once. The heartbeat arms `waker` *before* it reads the interval for the last time, so no
//! change can slip between its read and its sleep (see [`WakeSlot`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Waker;
use std::time::Duration;

use crate::metrics::Metrics;

#[derive(Debug)]
pub(crate) struct Shared {
    /// The current interval in nanoseconds, always within `[min, max]`.
    interval: AtomicU64,
    min: u64,
    max: u64,
    factor: f64,
    pub(crate) waker: WakeSlot,
    pub(crate) metrics: Metrics,
}

impl Shared {
    pub(crate) fn new(min: u64, max: u64, start: u64, factor: f64, metrics: Metrics) -> Self {
        debug_assert!(0 < min && min <= start && start <= max);
        metrics.interval.set(nanos_to_secs(start));
        Shared {
            interval: AtomicU64::new(start),
            min,
            max,
            factor,
            waker: WakeSlot::default(),
            metrics,
        }
    }

    pub(crate) fn interval_nanos(&self) -> u64 {
        // SeqCst: one half of the store-buffer pattern described on `WakeSlot`.
        self.interval.load(Ordering::SeqCst)
    }

    pub(crate) fn min_nanos(&self) -> u64 {
        self.min
    }

    pub(crate) fn max_nanos(&self) -> u64 {
        self.max
    }

    /// Divides the interval by the factor.
    pub(crate) fn faster(&self) -> Duration {
        self.metrics.faster.increment(1);
        self.update(|n| (n as f64 / self.factor) as u64)
    }

    /// Multiplies the interval by the factor.
    pub(crate) fn slower(&self) -> Duration {
        self.metrics.slower.increment(1);
        self.slow_down()
    }

    /// `slower()` without counting it as a caller's request: the heart slowing itself down.
    pub(crate) fn slow_down(&self) -> Duration {
        // Saturate rather than wrap: `f64 as u64` clamps to `u64::MAX`, and the clamp to `max`
        // follows.
        self.update(|n| (n as f64 * self.factor) as u64)
    }

    /// Sets the interval to `min`.
    pub(crate) fn rush(&self) -> Duration {
        self.metrics.rush.increment(1);
        self.update(|_| 0)
    }

    /// Applies `f` to the interval, clamps the result to `[min, max]`, and wakes the heartbeat if
    /// the interval changed. Returns the new interval.
    fn update(&self, f: impl Fn(u64) -> u64) -> Duration {
        let clamp = |n: u64| n.clamp(self.min, self.max);
        let previous = self
            .interval
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| Some(clamp(f(n))))
            .unwrap_or_else(|n| n);
        let new = clamp(f(previous));
        if new != previous {
            self.metrics.interval.set(nanos_to_secs(new));
            self.waker.wake();
        }
        Duration::from_nanos(new)
    }
}

/// Where the heartbeat leaves its waker for whoever changes the interval.
///
/// `tokio`'s timers and `AtomicWaker` register the waker on every pending poll: two
/// compare-and-swaps per beat. A heartbeat's waker rarely changes and its interval changes far
/// less often than it beats, so this slot stays *armed* across beats, and a pending poll only
/// reads `armed` and compares wakers. Registering and waking take the lock, which keeps
/// `armed == waker.is_some()`.
///
/// Why no change is missed: the heartbeat arms the slot, then reads the interval; a changer
/// writes the interval, then reads `armed`. With all four accesses `SeqCst`, at least one side
/// sees the other's write: either the heartbeat sees the new interval, or the changer sees the
/// slot armed and wakes it.
#[derive(Debug, Default)]
pub(crate) struct WakeSlot {
    armed: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl WakeSlot {
    /// Whether a waker is registered and no wake has taken it since.
    pub(crate) fn is_armed(&self) -> bool {
        self.armed.load(Ordering::SeqCst)
    }

    pub(crate) fn register(&self, waker: &Waker) {
        let mut slot = self.waker.lock().unwrap_or_else(PoisonError::into_inner);
        *slot = Some(waker.clone());
        self.armed.store(true, Ordering::SeqCst);
    }

    pub(crate) fn wake(&self) {
        if !self.armed.load(Ordering::SeqCst) {
            return;
        }
        let waker = {
            let mut slot = self.waker.lock().unwrap_or_else(PoisonError::into_inner);
            self.armed.store(false, Ordering::SeqCst);
            slot.take()
        };
        // Wake outside the lock: the woken task may register again at once.
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

fn nanos_to_secs(n: u64) -> f64 {
    n as f64 / 1e9
}

/// A cheap, cloneable handle that changes the rate of a [`Heartbeat`](crate::Heartbeat) from
/// anywhere: another task, another thread, a callback.
///
/// Every change takes effect at once: the heart's pending beat is rescheduled to the last beat
/// plus the new interval (and fires immediately if that time has passed). A handle that outlives
/// its heartbeat keeps working on a value nobody reads; it never panics.
///
/// # Examples
///
/// A sender task tells the receiving poller that a reply is likely:
///
/// ```
/// use std::time::Duration;
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut heart = cardio::heartbeat(Duration::from_millis(50), Duration::from_secs(30));
/// let handle = heart.handle();
///
/// tokio::spawn(async move {
///     // ... a request was sent ...
///     handle.rush();
/// });
/// heart.tick().await;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

impl Handle {
    /// Halves the interval (divides it by the factor), down to `min`, and returns the new one.
    pub fn faster(&self) -> Duration {
        self.shared.faster()
    }

    /// Doubles the interval (multiplies it by the factor), up to `max`, and returns the new one.
    pub fn slower(&self) -> Duration {
        self.shared.slower()
    }

    /// Jumps to the shortest interval, `min`, and returns it.
    pub fn rush(&self) -> Duration {
        self.shared.rush()
    }

    /// The current interval between beats (before jitter and budget).
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.shared.interval_nanos())
    }
}
