//! Several producers on two worker threads, on the real clock: the case the lanes are for (see
//! `src/lane.rs`), where items are staged while another thread holds the lock. Random settings,
//! producers (each with its own clone, some waiting for room, some flushing as they go) and
//! keys. Whatever happens: every accepted item is handled exactly once; with one handler (or one
//! call per key) each producer's items of a key arrive in the order added; every `flush` returns
//! only once the items whose `add` had returned before it began were handled, whoever added
//! them; no bundle breaks its limits; nothing stays buffered after `close`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bundler::{ApiLimits, Bundler};
use proptest::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Item {
    producer: usize,
    seq: usize,
    size: usize,
}

#[derive(Debug, Clone)]
struct Scenario {
    count_threshold: usize,
    byte_limit: Option<usize>,
    limits: Option<ApiLimits>,
    buffered_byte_limit: usize,
    handler_limit: usize,
    one_call_per_key: bool,
    delay: Duration,
    keys: usize,
    /// Per producer: items, the largest size, whether it waits for room, and a flush every
    /// so many items (0: never).
    producers: Vec<(usize, usize, bool, usize)>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let limits = prop::option::of((100usize..2_000, 5usize..200, 0usize..4).prop_map(
        |(bytes, items, overhead)| {
            ApiLimits::new("test", bytes, items, bytes).with_item_overhead(overhead)
        },
    ));
    let producer = (
        100usize..3_000,
        1usize..40,
        any::<bool>(),
        prop_oneof![Just(0usize), 50usize..1_000],
    );
    (
        (1usize..300, prop::option::of(50usize..3_000), limits),
        (200usize..20_000, 1usize..4, any::<bool>()),
        (1u64..6).prop_map(Duration::from_millis),
        prop_oneof![Just(1usize), 2usize..20],
        prop::collection::vec(producer, 2..6),
    )
        .prop_map(
            |(
                (count, byte_limit, limits),
                (buffered, handlers, per_key),
                delay,
                keys,
                producers,
            )| {
                Scenario {
                    count_threshold: count,
                    byte_limit,
                    limits,
                    buffered_byte_limit: buffered,
                    handler_limit: handlers,
                    one_call_per_key: per_key,
                    delay,
                    keys,
                    producers,
                }
            },
        )
}

/// What a run saw.
#[derive(Debug, Default)]
struct Outcome {
    accepted: Vec<(usize, Item)>,
    /// Each handler call's key and bundle, in the order the calls began.
    calls: Vec<(usize, Vec<Item>)>,
    /// For each flush: items whose `add` had returned before it began, not handled when it
    /// returned.
    missed_by_flush: Vec<(usize, Item)>,
    buffered_after_close: usize,
}

fn run(s: &Scenario) -> Outcome {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let handled = Arc::new(Mutex::new(BTreeSet::new()));
        let mut builder = Bundler::builder()
            .count_threshold(s.count_threshold)
            .buffered_byte_limit(s.buffered_byte_limit)
            .handler_limit(s.handler_limit)
            .one_call_per_key(s.one_call_per_key)
            .delay_threshold(s.delay);
        if let Some(limit) = s.byte_limit {
            builder = builder.byte_limit(limit);
        }
        if let Some(limits) = s.limits {
            builder = builder.limits(limits);
        }
        let bundler = builder.build_keyed({
            let (calls, handled) = (Arc::clone(&calls), Arc::clone(&handled));
            move |key: usize, bundle: Vec<Item>| {
                let yields = bundle.len() % 3;
                {
                    let mut handled = handled.lock().unwrap();
                    handled.extend(bundle.iter().map(|item| (key, *item)));
                }
                calls.lock().unwrap().push((key, bundle));
                async move {
                    for _ in 0..yields {
                        tokio::task::yield_now().await;
                    }
                }
            }
        });
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let missed = Arc::new(Mutex::new(Vec::new()));
        // Takes the state's lock over and over (`open_keys` does), as a busy producer on the
        // other thread would: producers find it held, and stage, far more often.
        let done = Arc::new(AtomicBool::new(false));
        let contender = tokio::spawn({
            let (bundler, done) = (bundler.clone(), Arc::clone(&done));
            async move {
                while !done.load(Ordering::Relaxed) {
                    for _ in 0..64 {
                        std::hint::black_box(bundler.open_keys());
                    }
                    tokio::task::yield_now().await;
                }
            }
        });
        let mut tasks = Vec::new();
        for (producer, &(items, max_size, wait, flush_every)) in s.producers.iter().enumerate() {
            let bundler = bundler.clone();
            let (accepted, handled, missed) = (
                Arc::clone(&accepted),
                Arc::clone(&handled),
                Arc::clone(&missed),
            );
            let keys = s.keys;
            tasks.push(tokio::spawn(async move {
                for seq in 0..items {
                    let size = (seq * 7 + producer * 13) % max_size;
                    let item = Item {
                        producer,
                        seq,
                        size,
                    };
                    let key = (seq / 3 + producer) % keys;
                    let result = if wait {
                        bundler.add_wait(key, item, size).await
                    } else {
                        bundler.add(key, item, size)
                    };
                    match result {
                        Ok(()) => accepted.lock().unwrap().push((key, item)),
                        Err(err) => {
                            assert!(!wait || err.is_oversized(), "add_wait only fails for size");
                            assert!(!err.is_closed(), "closed before close()");
                            assert_eq!(err.into_item(), item, "the refused item comes back");
                        }
                    }
                    if flush_every > 0 && seq % flush_every == flush_every - 1 {
                        // Every item accepted so far, by any producer, must be handled when
                        // this flush returns.
                        let before: Vec<_> = accepted.lock().unwrap().clone();
                        bundler.flush().await;
                        let handled = handled.lock().unwrap();
                        let mut missed = missed.lock().unwrap();
                        missed.extend(before.into_iter().filter(|i| !handled.contains(i)));
                    }
                    if seq % 512 == 511 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        done.store(true, Ordering::Relaxed);
        contender.await.unwrap();
        bundler.close().await;
        let accepted = std::mem::take(&mut *accepted.lock().unwrap());
        let calls = std::mem::take(&mut *calls.lock().unwrap());
        let missed_by_flush = std::mem::take(&mut *missed.lock().unwrap());
        Outcome {
            accepted,
            calls,
            missed_by_flush,
            buffered_after_close: bundler.buffered_bytes(),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn several_producers_on_two_workers(s in scenario()) {
        let out = run(&s);

        let mut accepted = out.accepted.clone();
        let mut handled: Vec<(usize, Item)> = out
            .calls
            .iter()
            .flat_map(|(key, bundle)| bundle.iter().map(|item| (*key, *item)))
            .collect();
        accepted.sort();
        handled.sort();
        prop_assert_eq!(accepted, handled, "exactly once");
        prop_assert_eq!(out.buffered_after_close, 0);
        prop_assert!(out.missed_by_flush.is_empty(), "flush returned before {:?}", &out.missed_by_flush[..out.missed_by_flush.len().min(5)]);

        let overhead = s.limits.map_or(0, |l| l.item_overhead());
        let byte_limit = s.byte_limit.unwrap_or(usize::MAX).min(s.limits.map_or(usize::MAX, |l| l.max_bundle_bytes()));
        let count_limit = s.limits.map_or(usize::MAX, |l| l.max_items());
        for (_, bundle) in &out.calls {
            prop_assert!(!bundle.is_empty());
            let bytes: usize = bundle.iter().map(|i| i.size + overhead).sum();
            prop_assert!(bytes <= byte_limit, "{} bytes > {}", bytes, byte_limit);
            prop_assert!(bundle.len() <= count_limit, "{} items > {}", bundle.len(), count_limit);
        }

        if s.handler_limit == 1 || s.one_call_per_key {
            let mut last: BTreeMap<(usize, usize), usize> = BTreeMap::new();
            for (key, bundle) in &out.calls {
                for item in bundle {
                    if let Some(prev) = last.insert((*key, item.producer), item.seq) {
                        prop_assert!(prev < item.seq, "producer {} key {}: {} after {}", item.producer, key, item.seq, prev);
                    }
                }
            }
        }
    }
}
