//! Retries of throttled and failed calls: exponential backoff with jitter, within a window.
//!
//! Every attempt is a call the service bills, so [`Retry::run`] reports each one to the caller
//! (which counts it in its [`Meter`](super::cost::Meter)) before making it. The jitter spreads
//! the waits of nodes throttled together, so that they do not retry in step; its generator is
//! seeded, so a simulated run repeats exactly.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

/// How long and how often to retry.
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
    /// 100 ms doubling to 5 s, for two minutes: an S3 outage of a minute is waited out.
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
            window: Duration::from_secs(120),
        }
    }
}

/// Whether an error is worth another try.
pub trait Retryable {
    /// Throttling, a 5xx, a timeout: trying again may succeed.
    fn is_retryable(&self) -> bool;
}

/// What [`Retry::run`] tells its caller about each attempt.
#[derive(Debug)]
pub enum Attempt<'a, E> {
    /// An attempt is about to be made (count it: it is billed).
    Start,
    /// The last attempt failed with `error`; the next one follows after `wait`.
    Retrying {
        /// What failed.
        error: &'a E,
        /// How long until the next attempt.
        wait: Duration,
    },
    /// The last attempt failed with `error` and no other follows.
    GaveUp {
        /// What failed.
        error: &'a E,
    },
}

/// A retry policy and its jitter generator.
#[derive(Debug)]
pub struct Retry {
    policy: RetryPolicy,
    rng: Mutex<ChaCha8Rng>,
}

impl Retry {
    /// Retries under `policy`, with jitter drawn from a generator seeded with `seed`.
    pub fn new(policy: RetryPolicy, seed: u64) -> Self {
        Retry {
            policy,
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        }
    }

    /// The policy.
    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// Runs `attempt` until it succeeds, fails with an error that is not retryable, or the
    /// window would close before the next try; `observe` hears of every attempt.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops retrying; an attempt under way is dropped with it (and may
    /// still have reached the service).
    pub async fn run<T, E, F, Fut>(
        &self,
        mut observe: impl FnMut(Attempt<'_, E>),
        mut attempt: F,
    ) -> Result<T, E>
    where
        E: Retryable,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let start = Instant::now();
        let mut wait = self.policy.base;
        loop {
            observe(Attempt::Start);
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(error)
                    if error.is_retryable() && start.elapsed() + wait <= self.policy.window =>
                {
                    let jittered = self.jittered(wait);
                    observe(Attempt::Retrying {
                        error: &error,
                        wait: jittered,
                    });
                    tokio::time::sleep(jittered).await;
                    wait = (wait * 2).min(self.policy.max);
                }
                Err(error) => {
                    observe(Attempt::GaveUp { error: &error });
                    return Err(error);
                }
            }
        }
    }

    /// `wait` spread over [wait / 2, wait], so that nodes throttled together retry apart.
    fn jittered(&self, wait: Duration) -> Duration {
        let unit: f64 = self.rng.lock().unwrap_or_else(|e| e.into_inner()).random();
        wait.mul_f64(0.5 + unit / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Failed(bool);

    impl Retryable for Failed {
        fn is_retryable(&self) -> bool {
            self.0
        }
    }

    #[tokio::test(start_paused = true)]
    async fn backs_off_with_jitter_within_the_window_and_reports_every_attempt() {
        let retry = Retry::new(
            RetryPolicy {
                base: Duration::from_millis(100),
                max: Duration::from_secs(1),
                window: Duration::from_secs(5),
            },
            7,
        );
        let (mut starts, mut waits, mut gave_up) = (0, Vec::new(), false);
        let started = Instant::now();
        let result: Result<(), Failed> = retry
            .run(
                |attempt| match attempt {
                    Attempt::Start => starts += 1,
                    Attempt::Retrying { wait, .. } => waits.push(wait),
                    Attempt::GaveUp { .. } => gave_up = true,
                },
                || async { Err(Failed(true)) },
            )
            .await;
        assert_eq!(result, Err(Failed(true)));
        assert!(gave_up);
        assert_eq!(starts, waits.len() + 1, "every attempt is reported");
        // Waits double from 100 ms to the 1 s cap, each jittered into [wait / 2, wait].
        let mut nominal = Duration::from_millis(100);
        for wait in &waits {
            assert!(
                *wait >= nominal / 2 && *wait <= nominal,
                "{wait:?} for {nominal:?}"
            );
            nominal = (nominal * 2).min(Duration::from_secs(1));
        }
        assert!(started.elapsed() <= Duration::from_secs(5));
        assert!(waits.len() >= 5, "{} retries in a 5 s window", waits.len());
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_retry_what_cannot_succeed() {
        let retry = Retry::new(RetryPolicy::default(), 1);
        let mut starts = 0;
        let result: Result<(), Failed> = retry
            .run(
                |attempt| {
                    if let Attempt::Start = attempt {
                        starts += 1;
                    }
                },
                || async { Err(Failed(false)) },
            )
            .await;
        assert_eq!(result, Err(Failed(false)));
        assert_eq!(starts, 1);
    }
}
