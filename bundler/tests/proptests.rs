//! Property tests on the paused clock: random settings, API limits, budgets, item sizes,
//! producers (some waiting for room, some not) and handler delays. Whatever happens, every
//! accepted item is handled exactly once, refused items come back, order holds with one handler,
//! no bundle breaks its limits, and the budget is never exceeded. Failing cases are kept in
//! `proptest-regressions/` beside this file, in the repository.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bundler::{ApiLimits, Budget, Bundler};
use proptest::prelude::*;
use tokio::time::{Instant, sleep};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Item {
    producer: usize,
    seq: usize,
    size: usize,
}

#[derive(Debug, Clone)]
struct Settings {
    count_threshold: usize,
    byte_threshold: usize,
    byte_limit: Option<usize>,
    buffered_byte_limit: usize,
    handler_limit: usize,
    delay: Duration,
    limits: Option<ApiLimits>,
    budget: Option<Budget>,
    merge_when_busy: bool,
    one_call_per_key: bool,
}

#[derive(Debug, Clone)]
struct Scenario {
    settings: Settings,
    /// Per producer: (size, pause before adding, wait for room).
    producers: Vec<Vec<(usize, Duration, bool)>>,
    handler_pauses: Vec<Duration>,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn settings() -> impl Strategy<Value = Settings> {
    let limits = prop::option::of((20usize..300, 1usize..15, 0usize..6).prop_map(
        |(bytes, items, overhead)| {
            ApiLimits::new("test", bytes, items, bytes).with_item_overhead(overhead)
        },
    ));
    let budget = prop::option::of((1u32..20, 1u64..5_000, 1u32..5).prop_map(
        |(calls, per_ms, burst)| {
            Budget::new(NonZeroU32::new(calls).unwrap(), ms(per_ms))
                .with_burst(NonZeroU32::new(burst).unwrap())
        },
    ));
    (
        1usize..20,
        1usize..400,
        prop::option::of(10usize..300),
        50usize..2_000,
        1usize..4,
        (1u64..100).prop_map(ms),
        (limits, budget, any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(ct, bt, bl, bbl, hl, delay, (limits, budget, merge_when_busy, one_call_per_key))| {
                Settings {
                    count_threshold: ct,
                    byte_threshold: bt,
                    byte_limit: bl,
                    buffered_byte_limit: bbl,
                    handler_limit: hl,
                    delay,
                    limits,
                    budget,
                    merge_when_busy,
                    one_call_per_key,
                }
            },
        )
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let producer =
        prop::collection::vec((0usize..80, (0u64..20).prop_map(ms), any::<bool>()), 0..60);
    (
        settings(),
        prop::collection::vec(producer, 1..4),
        prop::collection::vec((0u64..30).prop_map(ms), 1..10),
    )
        .prop_map(|(settings, producers, handler_pauses)| Scenario {
            settings,
            producers,
            handler_pauses,
        })
}

/// What a run saw.
#[derive(Debug, Default)]
struct Outcome {
    accepted: Vec<Item>,
    /// Each handler call: when it started, and its bundle.
    calls: Vec<(Instant, Vec<Item>)>,
    /// When each call (by its index in `calls`) ended.
    ends: BTreeMap<usize, Instant>,
    buffered_after_close: usize,
}

fn run(s: &Scenario) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let st = &s.settings;
        let mut builder = Bundler::builder()
            .count_threshold(st.count_threshold)
            .byte_threshold(st.byte_threshold)
            .buffered_byte_limit(st.buffered_byte_limit)
            .handler_limit(st.handler_limit)
            .delay_threshold(st.delay)
            .merge_when_busy(st.merge_when_busy)
            .one_call_per_key(st.one_call_per_key);
        if let Some(limit) = st.byte_limit {
            builder = builder.byte_limit(limit);
        }
        if let Some(limits) = st.limits {
            builder = builder.limits(limits);
        }
        if let Some(budget) = st.budget {
            builder = builder.budget(budget);
        }
        let pauses = s.handler_pauses.clone();
        let ends = Arc::new(Mutex::new(BTreeMap::new()));
        let bundler = builder.build({
            let (calls, ends) = (Arc::clone(&calls), Arc::clone(&ends));
            move |bundle: Vec<Item>| {
                let ends = Arc::clone(&ends);
                let (pause, index) = {
                    let mut calls = calls.lock().unwrap();
                    let pause = pauses[calls.len() % pauses.len()];
                    calls.push((Instant::now(), bundle));
                    (pause, calls.len() - 1)
                };
                async move {
                    sleep(pause).await;
                    ends.lock().unwrap().insert(index, Instant::now());
                }
            }
        });
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let mut producers = Vec::new();
        for (producer, plan) in s.producers.iter().cloned().enumerate() {
            let bundler = bundler.clone();
            let accepted = Arc::clone(&accepted);
            producers.push(tokio::spawn(async move {
                for (seq, (size, pause, wait)) in plan.into_iter().enumerate() {
                    sleep(pause).await;
                    let item = Item {
                        producer,
                        seq,
                        size,
                    };
                    let result = if wait {
                        bundler.add_wait(item, size).await
                    } else {
                        bundler.add(item, size)
                    };
                    match result {
                        Ok(()) => accepted.lock().unwrap().push(item),
                        Err(err) => {
                            assert!(!err.is_closed(), "closed before close()");
                            assert!(!wait || err.is_oversized(), "add_wait only fails for size");
                            assert_eq!(err.into_item(), item, "the refused item comes back");
                        }
                    }
                }
            }));
        }
        for producer in producers {
            producer.await.unwrap();
        }
        bundler.close().await;
        let accepted = std::mem::take(&mut *accepted.lock().unwrap());
        let calls = std::mem::take(&mut *calls.lock().unwrap());
        let ends = std::mem::take(&mut *ends.lock().unwrap());
        Outcome {
            accepted,
            calls,
            ends,
            buffered_after_close: bundler.buffered_bytes(),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn nothing_accepted_is_lost_or_handled_twice(s in scenario()) {
        let out = run(&s);
        let mut accepted = out.accepted.clone();
        let mut handled: Vec<Item> = out.calls.iter().flat_map(|(_, b)| b.iter().copied()).collect();
        accepted.sort();
        handled.sort();
        prop_assert_eq!(accepted, handled);
        prop_assert_eq!(out.buffered_after_close, 0);
    }

    #[test]
    fn one_handler_keeps_each_producers_order(s in scenario()) {
        let mut s = s;
        s.settings.handler_limit = 1;
        let out = run(&s);
        let mut last: BTreeMap<usize, usize> = BTreeMap::new();
        for item in out.calls.iter().flat_map(|(_, b)| b.iter()) {
            if let Some(prev) = last.insert(item.producer, item.seq) {
                prop_assert!(prev < item.seq, "producer {}: {} after {}", item.producer, item.seq, prev);
            }
        }
    }

    #[test]
    fn one_call_per_key_keeps_each_producers_order_with_any_handler_limit(s in scenario()) {
        // An unkeyed bundler is one key: its calls go one at a time, whatever the limit.
        let mut s = s;
        s.settings.one_call_per_key = true;
        let out = run(&s);
        for (i, pair) in out.calls.windows(2).enumerate() {
            let ended = out.ends[&i];
            prop_assert!(pair[1].0 >= ended, "call {} started before call {} ended", i + 1, i);
        }
        let mut last: BTreeMap<usize, usize> = BTreeMap::new();
        for item in out.calls.iter().flat_map(|(_, b)| b.iter()) {
            if let Some(prev) = last.insert(item.producer, item.seq) {
                prop_assert!(prev < item.seq, "producer {}: {} after {}", item.producer, item.seq, prev);
            }
        }
    }

    #[test]
    fn no_bundle_breaks_its_limits(s in scenario()) {
        let out = run(&s);
        let st = &s.settings;
        let overhead = st.limits.map_or(0, |l| l.item_overhead());
        let byte_limit = st.byte_limit.unwrap_or(usize::MAX).min(st.limits.map_or(usize::MAX, |l| l.max_bundle_bytes()));
        let count_limit = st.limits.map_or(usize::MAX, |l| l.max_items());
        for (_, bundle) in &out.calls {
            prop_assert!(!bundle.is_empty());
            let bytes: usize = bundle.iter().map(|i| i.size + overhead).sum();
            prop_assert!(bytes <= byte_limit, "{} bytes > {}", bytes, byte_limit);
            prop_assert!(bundle.len() <= count_limit, "{} items > {}", bundle.len(), count_limit);
        }
    }

    #[test]
    fn the_budget_is_never_exceeded(s in scenario()) {
        let mut s = s;
        let budget = s.settings.budget.unwrap_or_else(|| {
            Budget::new(NonZeroU32::new(3).unwrap(), Duration::from_secs(1))
                .with_burst(NonZeroU32::new(2).unwrap())
        });
        s.settings.budget = Some(budget);
        let out = run(&s);
        let rate = f64::from(budget.beats().get()) / budget.per().as_secs_f64();
        let burst = f64::from(budget.burst().get());
        let times: Vec<Instant> = out.calls.iter().map(|(t, _)| *t).collect();
        for i in 0..times.len() {
            for j in i..times.len() {
                let calls = (j - i + 1) as f64;
                let stretch = (times[j] - times[i]).as_secs_f64();
                prop_assert!(
                    calls <= burst + rate * stretch + 1e-9,
                    "{} calls in {} s; budget allows {} + {}/s", calls, stretch, burst, rate
                );
            }
        }
    }
}
