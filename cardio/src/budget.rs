//! A budget of beats: a token bucket, kept as a GCRA (generic cell rate algorithm).
//!
//! The bucket holds at most `burst` tokens and gains one every `emission = per / beats`. GCRA
//! keeps a single instant instead of a token count: the theoretical arrival time `tat` of the
//! next beat if beats came exactly at the rate. A beat at `t` conforms when
//! `t >= tat - (burst - 1) * emission`, and moves `tat` to `max(tat, t) + emission`.
//! This bounds the beats in any stretch of time `T` to `burst + T / emission`, which is the
//! promise the crate makes. The emission interval is rounded *up* to whole nanoseconds so that
//! rounding can only make the heart spend less than the budget, never more.

use std::num::NonZeroU32;
use std::time::Duration;

use tokio::time::Instant;

/// A ceiling on beats: at most `beats` per `per`, with room for a burst.
///
/// In any stretch of time `T`, a heartbeat under this budget beats at most
/// `burst + beats × T / per` times, whatever `faster()` and `rush()` ask: when they ask for more,
/// the heart stretches its interval instead. Multiply by the price of the call your loop makes
/// on each beat and you have a hard ceiling in dollars.
///
/// The default burst is one 24th of `beats` (at least 1): for a daily budget, an hour's share.
/// It lets a poller go quick for a while when work arrives, and still keeps any 24 hours within
/// about 4% of the budget.
///
/// # Examples
///
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use cardio::Budget;
///
/// // One S3 LIST a second on average costs $0.43 a day; this heart can never cost more than
/// // $0.45 ($0.005 per 1,000 calls on (86,400 + 3,600) beats) in any 24 hours.
/// let budget = Budget::per_day(NonZeroU32::new(86_400).unwrap());
/// assert_eq!(budget.burst().get(), 3_600);
///
/// // Ten beats a minute, never more than two back to back.
/// let strict = Budget::new(NonZeroU32::new(10).unwrap(), Duration::from_secs(60))
///     .with_burst(NonZeroU32::new(2).unwrap());
/// assert_eq!(strict.emission_interval(), Duration::from_secs(6));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    beats: NonZeroU32,
    per: Duration,
    burst: NonZeroU32,
}

impl Budget {
    /// At most `beats` beats per `per`, with the default burst (`beats / 24`, at least 1).
    ///
    /// # Panics
    ///
    /// Panics if `per` is zero.
    pub const fn new(beats: NonZeroU32, per: Duration) -> Self {
        assert!(
            !per.is_zero(),
            "cardio::Budget::new: `per` must not be zero"
        );
        let burst = match NonZeroU32::new(beats.get() / 24) {
            Some(b) => b,
            None => NonZeroU32::MIN,
        };
        Budget { beats, per, burst }
    }

    /// At most `beats` beats per day (86,400 seconds).
    pub const fn per_day(beats: NonZeroU32) -> Self {
        Budget::new(beats, Duration::from_secs(86_400))
    }

    /// Sets how many beats may come back to back, each as soon as the interval allows.
    pub const fn with_burst(mut self, burst: NonZeroU32) -> Self {
        self.burst = burst;
        self
    }

    /// Beats allowed per window.
    pub const fn beats(&self) -> NonZeroU32 {
        self.beats
    }

    /// The window.
    pub const fn per(&self) -> Duration {
        self.per
    }

    /// Beats allowed back to back.
    pub const fn burst(&self) -> NonZeroU32 {
        self.burst
    }

    /// The average time between beats once the burst is spent: `per / beats`, rounded up to
    /// whole nanoseconds.
    pub const fn emission_interval(&self) -> Duration {
        let per = self.per.as_nanos();
        let beats = self.beats.get() as u128;
        let nanos = per.div_ceil(beats);
        // `per` fits in u64 seconds, so `nanos` fits in a Duration.
        Duration::new(
            (nanos / 1_000_000_000) as u64,
            (nanos % 1_000_000_000) as u32,
        )
    }
}

/// The running state of a [`Budget`]: what has been spent, and when the next unit may be.
///
/// A heartbeat keeps one internally; it is public so that other rate-limited code (the
/// `bundler` crate's call budget, for one) enforces budgets with the same arithmetic. Time is
/// passed in, so the bucket works on any clock, Tokio's paused one included.
///
/// # Examples
///
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use cardio::{Budget, TokenBucket};
/// use tokio::time::Instant;
///
/// let budget = Budget::new(NonZeroU32::new(1).unwrap(), Duration::from_secs(10))
///     .with_burst(NonZeroU32::new(2).unwrap());
/// let mut bucket = TokenBucket::new(budget);
/// let t0 = Instant::now();
/// assert!(bucket.try_take(t0).is_ok());
/// assert!(bucket.try_take(t0).is_ok()); // the burst
/// assert_eq!(bucket.try_take(t0), Err(t0 + Duration::from_secs(10)));
/// ```
#[derive(Debug, Clone)]
pub struct TokenBucket {
    budget: Budget,
    emission: Duration,
    /// `(burst - 1) * emission`: how far ahead of the rate a beat may come.
    tolerance: Duration,
    /// Theoretical arrival time of the next beat; `None` while the bucket is full.
    tat: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket for `budget`.
    pub fn new(budget: Budget) -> Self {
        let emission = budget.emission_interval();
        let tolerance = emission.saturating_mul(budget.burst.get() - 1);
        TokenBucket {
            budget,
            emission,
            tolerance,
            tat: None,
        }
    }

    /// The budget this bucket enforces.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// The earliest instant at which a token is available, or `None` if the bucket has held
    /// one since before any instant this clock can name.
    pub fn earliest(&self) -> Option<Instant> {
        self.tat?.checked_sub(self.tolerance)
    }

    /// Takes a token at `now` if one is available, or returns when one will be.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Instant> {
        match self.earliest() {
            Some(earliest) if earliest > now => Err(earliest),
            _ => {
                self.take(now);
                Ok(())
            }
        }
    }

    /// Takes a token at `now`, whether or not one is available: the caller has checked
    /// [`earliest`](TokenBucket::earliest). Taking one early borrows from the future.
    pub fn take(&mut self, now: Instant) {
        let base = match self.tat {
            Some(tat) if tat > now => tat,
            _ => now,
        };
        self.tat = Some(base + self.emission);
    }
}
