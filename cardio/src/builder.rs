//! The builder for a [`Heartbeat`] with more than the defaults.

use std::time::Duration;

use metrics::SharedString;
use tokio_util::sync::CancellationToken;

use crate::budget::Budget;
use crate::heartbeat::Heartbeat;

/// Configures a [`Heartbeat`] before it starts. Made by [`Heartbeat::builder`].
///
/// | setting | default | why |
/// |---|---|---|
/// | [`factor`](Builder::factor) | 2 | halving and doubling reach either bound in log₂(max/min) steps |
/// | [`start`](Builder::start) | `min` | a poller that just started most likely has work |
/// | [`jitter`](Builder::jitter) | 0 | exact timelines unless asked; a fleet wants 0.1 or so |
/// | [`name`](Builder::name) | `"cardio"` | the `heartbeat` label on every metric |
/// | [`cancel_on`](Builder::cancel_on) | none | the stream ends only when dropped |
/// | [`budget`](Builder::budget) | none | no ceiling beyond `min` |
///
/// # Examples
///
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use cardio::{Budget, Heartbeat};
/// use tokio_util::sync::CancellationToken;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let shutdown = CancellationToken::new();
/// let mut heart = Heartbeat::builder(Duration::from_millis(100), Duration::from_secs(60))
///     .start(Duration::from_secs(1))
///     .jitter(0.1)
///     .name("s3-inbox")
///     .budget(Budget::per_day(NonZeroU32::new(20_000).unwrap()))
///     .cancel_on(shutdown.clone())
///     .build();
///
/// assert!(heart.tick().await.is_some());
/// shutdown.cancel();
/// assert!(heart.tick().await.is_none());
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `.build()` is called"]
pub struct Builder {
    pub(crate) min: Duration,
    pub(crate) max: Duration,
    pub(crate) factor: f64,
    pub(crate) start: Option<Duration>,
    pub(crate) jitter: f64,
    pub(crate) jitter_seed: Option<u64>,
    pub(crate) name: SharedString,
    pub(crate) cancel: Option<CancellationToken>,
    pub(crate) budget: Option<Budget>,
}

impl Builder {
    #[track_caller]
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        check_bounds("Heartbeat::builder", min, max);
        Builder {
            min,
            max,
            factor: 2.0,
            start: None,
            jitter: 0.0,
            jitter_seed: None,
            name: SharedString::const_str("cardio"),
            cancel: None,
            budget: None,
        }
    }

    /// How much `faster()` divides and `slower()` multiplies the interval by. Default 2.
    ///
    /// # Panics
    ///
    /// Panics unless `factor` is finite and greater than 1.
    pub fn factor(mut self, factor: f64) -> Self {
        assert!(
            factor.is_finite() && factor > 1.0,
            "cardio: `factor` must be finite and greater than 1, got {factor}"
        );
        self.factor = factor;
        self
    }

    /// The interval the heart starts with, after its first beat (which comes at once).
    /// Default `min`.
    ///
    /// # Panics
    ///
    /// Panics if `start` is outside `[min, max]`.
    pub fn start(mut self, start: Duration) -> Self {
        assert!(
            self.min <= start && start <= self.max,
            "cardio: `start` ({start:?}) must lie between `min` ({:?}) and `max` ({:?})",
            self.min,
            self.max
        );
        self.start = Some(start);
        self
    }

    /// Spreads each interval at random over `interval × [1 - jitter, 1 + jitter]`, so that a
    /// fleet of pollers started together does not call an API in lockstep. Default 0.
    ///
    /// Jitter applies after the clamp: with jitter `j`, gaps lie in `[min × (1 - j), max × (1 + j)]`.
    ///
    /// # Panics
    ///
    /// Panics unless `0 <= jitter < 1`.
    pub fn jitter(mut self, jitter: f64) -> Self {
        assert!(
            (0.0..1.0).contains(&jitter),
            "cardio: `jitter` must be at least 0 and less than 1, got {jitter}"
        );
        self.jitter = jitter;
        self
    }

    /// Seeds the jitter's random numbers, for runs that must repeat exactly (simulations,
    /// tests). By default each heartbeat draws its seed from the process's random keys.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = Some(seed);
        self
    }

    /// Names the heartbeat in metrics (label `heartbeat`). Default `"cardio"`.
    pub fn name(mut self, name: impl Into<SharedString>) -> Self {
        self.name = name.into();
        self
    }

    /// Ends the heartbeat when `token` is cancelled: `tick()` returns `None` and the stream ends.
    pub fn cancel_on(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Caps the beats with a [`Budget`]: whatever `faster()` and `rush()` ask, the heart never
    /// beats more often than the budget allows, and stretches the interval instead.
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Starts the heartbeat. Its first beat is due at once.
    ///
    /// # Panics
    ///
    /// Panics if called outside a Tokio runtime with the time driver enabled.
    pub fn build(self) -> Heartbeat {
        Heartbeat::from_builder(self)
    }
}

/// The checks shared by `heartbeat()` and `Heartbeat::builder()`: they name the arguments, since
/// Go's cardio takes the two bounds the other way round.
#[track_caller]
pub(crate) fn check_bounds(caller: &str, min: Duration, max: Duration) {
    assert!(
        !min.is_zero(),
        "cardio::{caller}(min, max): `min`, the shortest interval between beats, must not be zero"
    );
    assert!(
        min <= max,
        "cardio::{caller}(min, max): `min` ({min:?}), the shortest interval between beats, \
         is greater than `max` ({max:?}), the longest; did you pass them the other way round?"
    );
}
