//! An adaptive heartbeat for polling loops: quick when busy, nearly free when idle.
//!
//! APIs such as an S3 inbox or a CloudWatch Logs stream have no push channel: you learn about new
//! data by asking, and every question is billed. A poller on a fixed
//! [`tokio::time::interval`] must choose between latency and cost once and for all: every
//! 500 ms is 172,800 calls a day whether or not anything arrives (about $0.86 a day in S3 LISTs),
//! every minute makes each reply wait up to a minute.
//!
//! A [`Heartbeat`] lets the loop choose per beat. It beats between a shortest interval `min` and
//! a longest `max`:
//!
//! - [`faster()`](Heartbeat::faster) halves the interval: call it when a poll found work, and
//!   the next poll comes sooner;
//! - [`slower()`](Heartbeat::slower) doubles it: call it when a poll found nothing, and an idle
//!   loop backs off to `max` in log₂(max/min) beats;
//! - [`rush()`](Heartbeat::rush) jumps to `min`: call it after sending something whose reply you
//!   will poll for.
//!
//! Each change takes effect at once: the pending beat moves to the last beat plus the new
//! interval (and fires immediately if that time has passed), even when the change comes from
//! another task through a [`Handle`]. Idle at `max = 60 s`, a poller makes 1,440 calls a day;
//! busy, it polls every `min`.
//!
//! More guarantees a poller can build on:
//!
//! - The first beat comes at once; each next one is due one interval after the previous one was
//!   due, or, if that one was delivered more than 5 ms late, one interval after it was
//!   delivered. So beats come at the rate the interval says, and no two beats are due closer
//!   than `min` (less [jitter](Builder::jitter)); see [Timer resolution](#timer-resolution) for
//!   what that means for delivery.
//! - A consumer that falls behind gets one beat, not a burst of catch-up beats; the missed beats
//!   are counted in [`Beat::coalesced`] and the heart slows down one step.
//! - [`beat_now()`](Heartbeat::beat_now) takes a beat out of turn, within the budget, for a
//!   poller that knows more is waiting.
//! - A [`Budget`] caps the beats in any stretch of time, whatever `faster()` asks: the call
//!   budget, and so the bill, has a hard ceiling.
//! - No task is spawned and nothing is allocated per beat: one `Sleep` is reset from beat to
//!   beat. Dropping the [`Heartbeat`] stops everything; handles that outlive it do nothing.
//! - [Metrics](metrics::names) through the `metrics` crate, free when no recorder is installed.
//!
//! # Examples
//!
//! A poll loop that speeds up when it finds work and backs off when it does not:
//!
//! ```
//! use std::time::Duration;
//!
//! # async fn poll_inbox() -> Vec<u8> { Vec::new() }
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let mut heart = cardio::heartbeat(Duration::from_millis(50), Duration::from_secs(30));
//! # let mut n = 0;
//! while let Some(_beat) = heart.tick().await {
//!     let found = poll_inbox().await;
//!     if found.is_empty() {
//!         heart.slower();
//!     } else {
//!         heart.faster();
//!     }
//! #   n += 1; if n == 10 { break; }
//! }
//! # }
//! ```
//!
//! A `Heartbeat` is also a [`Stream`](futures_core::Stream) of [`Beat`]s.
//!
//! # Timer resolution
//!
//! Beats are driven by Tokio's timer, which fires at a deadline rounded up to its millisecond
//! (then the runtime polls the task), and a busy or virtual machine can add a few milliseconds.
//! A beat delivered within 5 ms of its deadline counts as on time (as in Tokio's `Interval`), and
//! the next one is due an interval after this one was *due*: the rounding does not add up from
//! beat to beat, and `heartbeat(1ms, 1ms)` beats a thousand times a second, as
//! `tokio::time::interval(1ms)` does. What `min` promises, precisely:
//!
//! - no two beats are *due* closer than `min` (less jitter);
//! - no two beats are *delivered* closer than `min` less 5 ms: over any stretch of time `t`, at
//!   most `1 + (t + 5 ms) / min` beats (with `min` under 5 ms, the beats of those 5 ms can come
//!   back to back, never more);
//! - a consumer that takes a beat more than 5 ms late gets the next one a whole interval after
//!   delivery, never sooner;
//! - a `min` below a millisecond works: beats come as often as the timer fires, and on average
//!   never faster than `min`.
//!
//! A [`Budget`] is the hard ceiling, by delivery time, whatever the timer does.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod budget;
mod builder;
mod heartbeat;
pub mod metrics;
mod shared;

use std::time::Duration;

pub use budget::{Budget, TokenBucket};
pub use builder::Builder;
pub use heartbeat::{Beat, Heartbeat};
pub use shared::Handle;

/// Starts a heartbeat that beats between every `min` (the shortest interval) and every `max`
/// (the longest), starting at `min`, with the first beat due at once.
///
/// This is [`Heartbeat::builder(min, max).build()`](Heartbeat::builder); use the builder for a
/// factor other than 2, another starting interval, jitter, a name for metrics, cancellation or a
/// budget.
///
/// # Panics
///
/// Panics if `min` is zero or greater than `max` (the message names the arguments: Go's
/// `cardio.Heartbeat` takes them the other way round), or if called outside a Tokio runtime with
/// the time driver enabled.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tokio::time::Instant;
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let start = Instant::now();
/// let mut heart = cardio::heartbeat(Duration::from_millis(100), Duration::from_secs(10));
///
/// heart.tick().await; // the first beat comes at once
/// heart.tick().await; // then every `min` until told otherwise
/// assert_eq!(start.elapsed(), Duration::from_millis(100));
/// # }
/// ```
#[track_caller]
pub fn heartbeat(min: Duration, max: Duration) -> Heartbeat {
    builder::check_bounds("heartbeat", min, max);
    Heartbeat::builder(min, max).build()
}
