//! Property tests: random rate changes (from the consumer and from a handle on another task),
//! random consumer delays, random bounds, factors, jitter and budgets, all on the paused clock.
//! Failing cases are kept in `proptest-regressions/` beside this file, in the repository.

use std::num::NonZeroU32;
use std::time::Duration;

use cardio::{Budget, Heartbeat};
use proptest::prelude::*;
use tokio::time::{Instant, sleep};

#[derive(Debug, Clone, Copy)]
enum Change {
    Faster,
    Slower,
    Rush,
    Keep,
}

impl Change {
    fn apply(self, handle: &cardio::Handle) {
        match self {
            Change::Faster => drop(handle.faster()),
            Change::Slower => drop(handle.slower()),
            Change::Rush => drop(handle.rush()),
            Change::Keep => {}
        }
    }
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        Just(Change::Faster),
        Just(Change::Slower),
        Just(Change::Rush),
        Just(Change::Keep),
    ]
}

#[derive(Debug, Clone)]
struct Scenario {
    min: Duration,
    max: Duration,
    factor: f64,
    jitter: f64,
    budget: Option<Budget>,
    /// After each beat the consumer applies a change, then works for a while.
    consumer: Vec<(Change, Duration)>,
    /// Meanwhile another task waits, then applies a change through a handle.
    remote: Vec<(Duration, Change)>,
}

fn scenario(prompt: bool, with_budget: bool) -> impl Strategy<Value = Scenario> {
    (1u64..=200, 1u64..=64)
        .prop_flat_map(move |(min_ms, spread)| {
            let max_ms = min_ms * spread;
            let delay = if prompt { 0..=0 } else { 0..=3 * max_ms };
            let budget = if with_budget {
                (1u32..=50, 1u64..=20_000, 1u32..=10)
                    .prop_map(|(beats, per_ms, burst)| {
                        Some(
                            Budget::new(NonZeroU32::new(beats).unwrap(), ms(per_ms))
                                .with_burst(NonZeroU32::new(burst).unwrap()),
                        )
                    })
                    .boxed()
            } else {
                Just(None).boxed()
            };
            (
                Just(ms(min_ms)),
                Just(ms(max_ms)),
                prop_oneof![Just(2.0), Just(1.5), Just(3.0), 1.1f64..8.0],
                prop_oneof![Just(0.0), 0.0f64..0.5],
                budget,
                prop::collection::vec((change(), delay.prop_map(ms)), 1..80),
                prop::collection::vec(((0..=2 * max_ms).prop_map(ms), change()), 0..40),
            )
        })
        .prop_map(
            |(min, max, factor, jitter, budget, consumer, remote)| Scenario {
                min,
                max,
                factor,
                jitter,
                budget,
                consumer,
                remote,
            },
        )
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Runs a scenario on a paused clock and returns when each beat came.
fn run(s: &Scenario) -> Vec<Instant> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let mut builder = Heartbeat::builder(s.min, s.max)
            .factor(s.factor)
            .jitter(s.jitter);
        if let Some(budget) = s.budget {
            builder = builder.budget(budget);
        }
        let mut heart = builder.build();
        let handle = heart.handle();
        let remote = s.remote.clone();
        let changer = tokio::spawn(async move {
            for (wait, change) in remote {
                sleep(wait).await;
                change.apply(&handle);
            }
        });
        let own = heart.handle();
        let mut times = Vec::with_capacity(s.consumer.len());
        for &(change, work) in &s.consumer {
            times.push(heart.tick().await.expect("not cancelled").at());
            change.apply(&own);
            if !work.is_zero() {
                sleep(work).await;
            }
        }
        changer.abort();
        times
    })
}

/// The timer rounds each deadline up to the next millisecond.
const TIMER_RESOLUTION: Duration = Duration::from_millis(1);

/// How late a beat may come and still count as on time (`cardio`'s `TIMER_SLACK`).
const ON_TIME_SLACK: Duration = Duration::from_millis(5);

fn gaps(times: &[Instant]) -> impl Iterator<Item = Duration> + '_ {
    times.windows(2).map(|w| w[1] - w[0])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Beats are due at least `min` (less jitter) apart. A beat delivered up to 5 ms late (the
    /// timer's rounding, or a consumer a moment late) keeps the schedule's phase, so two
    /// deliveries may be up to that much closer; a later one restarts the schedule from itself.
    #[test]
    fn no_two_beats_closer_than_min(s in scenario(false, false)) {
        let shortest = s
            .min
            .mul_f64(1.0 - s.jitter)
            .saturating_sub(ON_TIME_SLACK + Duration::from_nanos(1));
        for gap in gaps(&run(&s)) {
            prop_assert!(gap >= shortest, "gap {gap:?} < {shortest:?}");
        }
    }

    #[test]
    fn a_prompt_consumer_never_waits_longer_than_max(s in scenario(true, false)) {
        let longest = s.max.mul_f64(1.0 + s.jitter) + TIMER_RESOLUTION;
        for gap in gaps(&run(&s)) {
            prop_assert!(gap <= longest, "gap {gap:?} > {longest:?}");
        }
    }

    #[test]
    fn no_stretch_of_time_holds_more_beats_than_the_budget(s in scenario(false, true)) {
        let budget = s.budget.unwrap();
        let times = run(&s);
        let shortest = s
            .min
            .mul_f64(1.0 - s.jitter)
            .saturating_sub(ON_TIME_SLACK + Duration::from_nanos(1));
        for gap in gaps(&times) {
            prop_assert!(gap >= shortest, "gap {gap:?} < {shortest:?}");
        }
        let rate = f64::from(budget.beats().get()) / budget.per().as_secs_f64();
        let burst = f64::from(budget.burst().get());
        for i in 0..times.len() {
            for j in i..times.len() {
                let beats = (j - i + 1) as f64;
                let stretch = (times[j] - times[i]).as_secs_f64();
                prop_assert!(
                    beats <= burst + rate * stretch + 1e-9,
                    "{beats} beats in {stretch} s; budget allows {burst} + {rate}/s"
                );
            }
        }
    }
}
