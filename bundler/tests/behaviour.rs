//! The bundler's behaviour on Tokio's paused clock: Go's pinned cases first, then what Go got
//! wrong, then what it never had (keys, API limits, budgets).

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bundler::{AddErrorKind, ApiLimits, Budget, Bundler, KeyedBundler};
use tokio::sync::Semaphore;
use tokio::time::{Instant, sleep};

const DELAY: Duration = Duration::from_millis(100);

/// What the handler saw: when (since the test started), which key, which items.
type Log<K, T> = Arc<Mutex<Vec<(Duration, K, Vec<T>)>>>;

fn log<K, T>() -> Log<K, T> {
    Arc::new(Mutex::new(Vec::new()))
}

/// A handler that records each bundle.
fn recording<T: Send + 'static>(
    log: &Log<(), T>,
    start: Instant,
) -> impl Fn(Vec<T>) -> std::future::Ready<()> + Send + 'static {
    let log = Arc::clone(log);
    move |bundle| {
        log.lock().unwrap().push((start.elapsed(), (), bundle));
        std::future::ready(())
    }
}

fn bundles<K: Clone, T: Clone>(log: &Log<K, T>) -> Vec<Vec<T>> {
    log.lock()
        .unwrap()
        .iter()
        .map(|(_, _, b)| b.clone())
        .collect()
}

fn times<K, T>(log: &Log<K, T>) -> Vec<Duration> {
    log.lock().unwrap().iter().map(|(t, _, _)| *t).collect()
}

/// Lets spawned tasks run without moving the paused clock.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn go_count_threshold_three_of_eight_items() {
    // Go's TestBundlerCount1: items 0..8 with a count threshold of 3 give [0,1,2] and [3,4,5]
    // at once, and [6,7] when the delay passes.
    let start = Instant::now();
    let log = log();
    let bundler = Bundler::builder()
        .count_threshold(3)
        .delay_threshold(DELAY)
        .build(recording(&log, start));
    for i in 0..8 {
        bundler.add(i, 1).unwrap();
    }
    settle().await;
    assert_eq!(bundles(&log), [vec![0, 1, 2], vec![3, 4, 5]]);
    sleep(DELAY).await;
    settle().await;
    assert_eq!(bundles(&log), [vec![0, 1, 2], vec![3, 4, 5], vec![6, 7]]);
    assert_eq!(times(&log), [Duration::ZERO, Duration::ZERO, DELAY]);
    bundler.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_shared_delay_changed_while_running_applies_to_the_next_bundles() {
    let start = Instant::now();
    let log = log();
    let delay = bundler::SharedDelay::new(DELAY);
    let bundler = Bundler::builder()
        .count_threshold(1_000)
        .shared_delay(delay.clone())
        .build(recording(&log, start));
    bundler.add(0, 1).unwrap();
    sleep(DELAY).await;
    settle().await;
    // Set to nothing: the next bundle goes as soon as its first item is in.
    delay.set(Duration::ZERO);
    bundler.add(1, 1).unwrap();
    settle().await;
    assert_eq!(bundles(&log), [vec![0], vec![1]]);
    // Back to DELAY: the next one waits for company again.
    delay.set(DELAY);
    bundler.add(2, 1).unwrap();
    bundler.add(3, 1).unwrap();
    settle().await;
    assert_eq!(bundles(&log).len(), 2);
    sleep(DELAY).await;
    settle().await;
    assert_eq!(bundles(&log), [vec![0], vec![1], vec![2, 3]]);
    assert_eq!(times(&log), [DELAY, DELAY, DELAY * 2]);
    bundler.close().await;
}

#[tokio::test(start_paused = true)]
async fn byte_threshold_sends_once_reached() {
    let start = Instant::now();
    let log = log();
    let bundler = Bundler::builder()
        .byte_threshold(10)
        .count_threshold(1_000)
        .delay_threshold(DELAY)
        .build(recording(&log, start));
    for i in 0..7 {
        bundler.add(i, 4).unwrap(); // 4, 8, 12 ≥ 10: three items a bundle
    }
    settle().await;
    assert_eq!(bundles(&log), [vec![0, 1, 2], vec![3, 4, 5]]);
    bundler.close().await;
    assert_eq!(bundles(&log)[2], [6]);
}

#[tokio::test(start_paused = true)]
async fn byte_limit_splits_before_the_item_that_would_break_it() {
    let start = Instant::now();
    let log = log();
    let bundler = Bundler::builder()
        .byte_threshold(100)
        .byte_limit(10)
        .count_threshold(1_000)
        .delay_threshold(DELAY)
        .build(recording(&log, start));
    for (i, size) in [4, 4, 4, 6, 10, 1].into_iter().enumerate() {
        bundler.add(i, size).unwrap();
    }
    settle().await;
    // 4+4 = 8, +4 = 12 > 10: [0,1] goes; 4+6 = 10 reaches the limit: [2,3] goes; [4] is 10.
    assert_eq!(bundles(&log), [vec![0, 1], vec![2, 3], vec![4]]);
    bundler.close().await;
    assert_eq!(bundles(&log)[3], [5]);
}

#[tokio::test(start_paused = true)]
async fn an_oversized_item_is_handed_back() {
    let log = log();
    let bundler = Bundler::builder()
        .byte_limit(10)
        .build(recording(&log, Instant::now()));
    let err = bundler.add("big", 11).unwrap_err();
    assert_eq!(
        err.kind(),
        AddErrorKind::Oversized {
            size: 11,
            limit: 10
        }
    );
    assert!(err.is_oversized());
    assert_eq!(err.into_item(), "big");
    // add_wait does not block on it forever (Go's does): it fails at once.
    let err = bundler.add_wait("big", 11).await.unwrap_err();
    assert!(err.is_oversized());
    // Larger than everything that may be buffered is just as hopeless.
    let small = Bundler::builder()
        .buffered_byte_limit(5)
        .build(recording(&log, Instant::now()));
    assert_eq!(
        small.add_wait("x", 6).await.unwrap_err().kind(),
        AddErrorKind::Oversized { size: 6, limit: 5 }
    );
    bundler.close().await;
    small.close().await;
    assert!(bundles(&log).is_empty());
}

/// A handler that waits for a permit before it returns, so a test decides when room frees up.
fn gated<T: Send + 'static>(
    log: &Log<(), T>,
    gate: &Arc<Semaphore>,
) -> impl Fn(Vec<T>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + 'static {
    let log = Arc::clone(log);
    let gate = Arc::clone(gate);
    move |bundle| {
        let log = Arc::clone(&log);
        let gate = Arc::clone(&gate);
        Box::pin(async move {
            gate.acquire().await.unwrap().forget();
            log.lock().unwrap().push((Duration::ZERO, (), bundle));
        })
    }
}

/// A bundler that sends each item alone, holds `buffered` bytes, and whose handler returns only
/// when the test adds a permit to the gate.
fn gated_bundler(buffered: usize) -> (Bundler<u32>, Log<(), u32>, Arc<Semaphore>) {
    let log = log();
    let gate = Arc::new(Semaphore::new(0));
    let bundler = Bundler::builder()
        .count_threshold(1)
        .buffered_byte_limit(buffered)
        .build(gated(&log, &gate));
    (bundler, log, gate)
}

#[tokio::test(start_paused = true)]
async fn overflow_hands_the_item_back_and_add_wait_waits_for_room() {
    let (bundler, log, gate) = gated_bundler(10);
    bundler.add(1, 5).unwrap();
    bundler.add(2, 5).unwrap();
    assert_eq!(bundler.buffered_bytes(), 10);
    let err = bundler.add(3, 5).unwrap_err();
    assert_eq!(err.kind(), AddErrorKind::Overflow { size: 5, limit: 10 });
    assert_eq!(
        err.to_string(),
        "no room for an item of 5 bytes within the buffered byte limit of 10"
    );
    assert_eq!(err.into_item(), 3);

    // add_wait blocks until the handler frees room.
    let waiter = tokio::spawn({
        let bundler = bundler.clone();
        async move { bundler.add_wait(3, 5).await.map_err(|e| e.into_item()) }
    });
    settle().await;
    assert!(!waiter.is_finished(), "no room yet");
    gate.add_permits(1); // the handler of [1] returns: 5 bytes free
    settle().await;
    assert!(waiter.is_finished());
    waiter.await.unwrap().unwrap();
    gate.add_permits(10);
    bundler.close().await;
    assert_eq!(bundles(&log), [vec![1], vec![2], vec![3]]);
}

#[tokio::test(start_paused = true)]
async fn add_wait_serves_first_come_first() {
    let (bundler, log, gate) = gated_bundler(10);
    bundler.add(0, 10).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for (item, size) in [(1, 8), (2, 2)] {
        let (bundler, order) = (bundler.clone(), Arc::clone(&order));
        waiters.push(tokio::spawn(async move {
            bundler.add_wait(item, size).await.unwrap();
            order.lock().unwrap().push(item);
        }));
        settle().await;
    }
    // 10 bytes free up: the first waiter (8) is served before the second (2), although the
    // second alone would have fitted in any 2 bytes.
    gate.add_permits(1);
    settle().await;
    gate.add_permits(10);
    for waiter in waiters {
        waiter.await.unwrap();
    }
    bundler.close().await;
    assert_eq!(*order.lock().unwrap(), [1, 2]);
    assert_eq!(bundles(&log), [vec![0], vec![1], vec![2]]);
}

#[tokio::test(start_paused = true)]
async fn room_taken_ahead_is_not_buffered_and_goes_back_to_whoever_needs_it() {
    let log = log();
    let gate = Arc::new(Semaphore::new(0));
    let bundler = Bundler::builder()
        .count_threshold(100)
        .delay_threshold(Duration::from_secs(3600))
        .buffered_byte_limit(1_600)
        .build(gated(&log, &gate));
    // Takes room for ten such items at once (a sixteenth of the limit): only 10 bytes are
    // buffered, and 1,500 left free.
    bundler.add(1, 10).unwrap();
    assert_eq!(bundler.buffered_bytes(), 10);
    // Fits only with the other 90 bytes back, which is where it finds them.
    bundler.add(2, 1_590).unwrap();
    assert_eq!(bundler.buffered_bytes(), 1_600);
    gate.add_permits(1);
    bundler.flush().await; // [1, 2]
    assert_eq!(bundler.buffered_bytes(), 0);

    // Room taken ahead again; then a waiter that needs all of it and 5 bytes more.
    bundler.add(3, 10).unwrap();
    let waiter = tokio::spawn({
        let bundler = bundler.clone();
        async move { bundler.add_wait(4, 1_595).await.unwrap() }
    });
    settle().await;
    assert!(!waiter.is_finished());
    assert_eq!(bundles(&log), [vec![1, 2]], "[3] sent to free room");
    // The waiter came first: none of the room taken ahead is left for a later add, not even a
    // byte.
    let err = bundler.add(5, 1).unwrap_err();
    assert!(matches!(err.kind(), AddErrorKind::Overflow { .. }));
    gate.add_permits(1); // [3] handled: 10 bytes free, 5 for the waiter
    waiter.await.unwrap();
    bundler.add(5, 1).unwrap();
    assert_eq!(bundler.buffered_bytes(), 1_596);
    gate.add_permits(10);
    bundler.close().await;
    assert_eq!(bundles(&log), [vec![1, 2], vec![3], vec![4, 5]]);
    assert_eq!(bundler.buffered_bytes(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_add_wait_gives_its_room_back() {
    let (bundler, log, gate) = gated_bundler(10);
    bundler.add(0, 6).unwrap();
    // Waits for 8 bytes, holding the 4 that are free meanwhile, then gives up.
    let gave_up = tokio::time::timeout(Duration::from_secs(1), bundler.add_wait(1, 8)).await;
    assert!(gave_up.is_err());
    assert_eq!(
        bundler.buffered_bytes(),
        6,
        "the waiter's partial room came back"
    );
    bundler.add(2, 4).unwrap();
    gate.add_permits(10);
    bundler.close().await;
    assert_eq!(bundler.buffered_bytes(), 0);
    assert_eq!(bundles(&log), [vec![0], vec![2]]);
}

#[tokio::test(start_paused = true)]
async fn flush_waits_for_what_was_added_before_it() {
    let log = log();
    let gate = Arc::new(Semaphore::new(0));
    let bundler = Bundler::builder()
        .count_threshold(100)
        .delay_threshold(Duration::from_secs(3600))
        .build(gated(&log, &gate));
    bundler.add(1, 1).unwrap();
    bundler.add(2, 1).unwrap();
    let flushes: Vec<_> = (0..3)
        .map(|_| {
            let bundler = bundler.clone();
            tokio::spawn(async move { bundler.flush().await })
        })
        .collect();
    settle().await;
    assert!(
        flushes.iter().all(|f| !f.is_finished()),
        "the handler has not returned"
    );
    gate.add_permits(1);
    for flush in flushes {
        flush.await.unwrap();
    }
    assert_eq!(bundles(&log), [vec![1, 2]]);
    // An item added after a flush began is not waited for; a flush with nothing pending
    // returns at once.
    bundler.flush().await;
    bundler.add(3, 1).unwrap();
    gate.add_permits(1);
    bundler.close().await;
    assert_eq!(bundles(&log), [vec![1, 2], vec![3]]);
}

#[tokio::test(start_paused = true)]
async fn close_hands_over_everything_and_then_refuses() {
    let start = Instant::now();
    let log = log();
    let bundler = Bundler::builder()
        .count_threshold(100)
        .delay_threshold(Duration::from_secs(3600))
        .build(recording(&log, start));
    for i in 0..5 {
        bundler.add(i, 1).unwrap();
    }
    bundler.close().await;
    assert_eq!(bundles(&log), [vec![0, 1, 2, 3, 4]]);
    assert_eq!(
        times(&log),
        [Duration::ZERO],
        "close does not wait for the delay"
    );
    assert!(bundler.is_closed());
    let err = bundler.add(5, 1).unwrap_err();
    assert!(err.is_closed());
    assert_eq!(err.to_string(), "bundler is closed");
    assert_eq!(bundler.add_wait(6, 1).await.unwrap_err().into_item(), 6);
    bundler.close().await; // closing twice is fine
}

#[tokio::test(start_paused = true)]
async fn close_wakes_add_wait_with_the_item() {
    let (bundler, log, gate) = gated_bundler(4);
    bundler.add(0, 4).unwrap();
    let waiter = tokio::spawn({
        let bundler = bundler.clone();
        async move { bundler.add_wait(1, 4).await }
    });
    settle().await;
    let closing = tokio::spawn({
        let bundler = bundler.clone();
        async move { bundler.close().await }
    });
    let err = waiter.await.unwrap().unwrap_err();
    assert!(err.is_closed());
    assert_eq!(err.into_item(), 1);
    gate.add_permits(1);
    closing.await.unwrap();
    assert_eq!(bundles(&log), [vec![0]]);
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_still_hands_over_what_was_accepted() {
    let start = Instant::now();
    let log = log();
    let bundler = Bundler::builder()
        .count_threshold(100)
        .delay_threshold(Duration::from_secs(3600))
        .build(recording(&log, start));
    bundler.add(1, 1).unwrap();
    let clone = bundler.clone();
    drop(bundler);
    clone.add(2, 1).unwrap(); // a clone keeps it open
    drop(clone);
    settle().await;
    assert_eq!(bundles(&log), [vec![1, 2]]);
    assert_eq!(times(&log), [Duration::ZERO]);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_does_not_wedge_the_bundler() {
    let handled = Arc::new(Mutex::new(Vec::new()));
    let bundler = Bundler::builder().count_threshold(2).build({
        let handled = Arc::clone(&handled);
        move |bundle: Vec<u32>| {
            let handled = Arc::clone(&handled);
            async move {
                assert!(!bundle.contains(&13), "the handler panics on 13");
                handled.lock().unwrap().push(bundle);
            }
        }
    });
    // A handler that panics before it even returns a future.
    let sync_panic = Bundler::builder()
        .count_threshold(1)
        .build(|bundle: Vec<u32>| {
            assert!(bundle[0] != 7, "panics synchronously on 7");
            async {}
        });
    for i in [1, 2, 13, 14, 5, 6] {
        bundler.add(i, 1).unwrap();
    }
    bundler.flush().await;
    bundler.close().await;
    assert_eq!(*handled.lock().unwrap(), [vec![1, 2], vec![5, 6]]);
    assert_eq!(
        bundler.buffered_bytes(),
        0,
        "the panicked bundle's room came back"
    );

    sync_panic.add(7, 1).unwrap();
    sync_panic.add(8, 1).unwrap();
    sync_panic.close().await;
    assert_eq!(sync_panic.buffered_bytes(), 0);
}

#[tokio::test(start_paused = true)]
async fn one_handler_at_a_time_keeps_order() {
    let start = Instant::now();
    let log = log();
    let recorder = recording(&log, start);
    let bundler = Bundler::builder()
        .count_threshold(7)
        .handler_limit(1)
        .build(move |bundle: Vec<u32>| {
            // Later bundles are quicker: only the limit keeps them from overtaking.
            let pause = Duration::from_millis(100 - u64::from(bundle[0]));
            let done = recorder(bundle);
            async move {
                sleep(pause).await;
                done.await;
            }
        });
    for i in 0..50 {
        bundler.add(i, 1).unwrap();
    }
    bundler.close().await;
    let handled: Vec<u32> = bundles(&log).concat();
    assert_eq!(handled, (0..50).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn handler_limit_bounds_concurrent_calls() {
    let running = Arc::new(Mutex::new((0usize, 0usize))); // (now, most)
    let bundler = Bundler::builder()
        .count_threshold(1)
        .handler_limit(3)
        .build({
            let running = Arc::clone(&running);
            move |_bundle: Vec<u32>| {
                let running = Arc::clone(&running);
                async move {
                    {
                        let mut r = running.lock().unwrap();
                        r.0 += 1;
                        r.1 = r.1.max(r.0);
                    }
                    sleep(Duration::from_millis(10)).await;
                    running.lock().unwrap().0 -= 1;
                }
            }
        });
    for i in 0..20 {
        bundler.add(i, 1).unwrap();
    }
    bundler.close().await;
    assert_eq!(running.lock().unwrap().1, 3);
}

#[tokio::test(start_paused = true)]
async fn keyed_bundles_one_per_key_and_bounds_open_keys() {
    let log: Log<&'static str, u32> = log();
    let bundler: KeyedBundler<&'static str, u32> = Bundler::builder()
        .count_threshold(3)
        .key_limit(2)
        .delay_threshold(Duration::from_secs(3600))
        .build_keyed({
            let log = Arc::clone(&log);
            move |key, bundle| {
                log.lock().unwrap().push((Duration::ZERO, key, bundle));
                std::future::ready(())
            }
        });
    bundler.add("a", 1, 1).unwrap();
    bundler.add("b", 2, 1).unwrap();
    bundler.add("a", 3, 1).unwrap();
    bundler.add("a", 4, 1).unwrap(); // "a" reaches 3 items
    settle().await;
    assert_eq!(bundler.open_keys(), 1);
    bundler.add("a", 5, 1).unwrap();
    assert_eq!(bundler.open_keys(), 2);
    bundler.add("c", 6, 1).unwrap(); // a third key: the oldest open bundle ("b") goes
    settle().await;
    assert_eq!(bundler.open_keys(), 2);
    bundler.close().await;
    let calls: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .map(|(_, k, b)| (*k, b.clone()))
        .collect();
    assert_eq!(
        calls,
        [
            ("a", vec![1, 3, 4]),
            ("b", vec![2]),
            ("a", vec![5]),
            ("c", vec![6])
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_buffer_sends_the_oldest_bundle_instead_of_stalling() {
    // Every buffered byte sits in open bundles below their thresholds, with an hour to go.
    // A producer who finds no room sends the oldest one at once, instead of waiting the hour.
    let start = Instant::now();
    let log: Log<char, u32> = log();
    let bundler = Bundler::builder()
        .count_threshold(100)
        .buffered_byte_limit(10)
        .delay_threshold(Duration::from_secs(3600))
        .build_keyed({
            let log = Arc::clone(&log);
            move |key, bundle| {
                log.lock().unwrap().push((start.elapsed(), key, bundle));
                std::future::ready(())
            }
        });
    bundler.add('a', 1, 5).unwrap();
    bundler.add('b', 2, 5).unwrap();
    bundler.add_wait('c', 3, 5).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    // `add` that finds no room is refused, and also sends the oldest bundle, so a retry fits.
    assert!(bundler.add('d', 4, 5).unwrap_err().is_overflow());
    settle().await;
    bundler.add('d', 4, 5).unwrap();
    bundler.close().await;
    let calls: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .map(|(t, k, b)| (*t, *k, b.clone()))
        .collect();
    assert_eq!(
        calls,
        [
            (Duration::ZERO, 'a', vec![1]),
            (Duration::ZERO, 'b', vec![2]),
            (Duration::ZERO, 'c', vec![3]),
            (Duration::ZERO, 'd', vec![4]),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn merge_when_busy_sends_what_piled_up_in_one_call() {
    for merge in [false, true] {
        let log = log();
        let gate = Arc::new(Semaphore::new(0));
        let bundler = Bundler::builder()
            .count_threshold(2)
            .byte_limit(5)
            .merge_when_busy(merge)
            .build(gated(&log, &gate));
        bundler.add(0, 1).unwrap();
        bundler.add(1, 1).unwrap();
        settle().await; // [0, 1] is in the handler, which waits on the gate
        for i in 2..8 {
            bundler.add(i, 1).unwrap();
        }
        settle().await;
        gate.add_permits(100);
        bundler.close().await;
        let expected: Vec<Vec<u32>> = if merge {
            // What waited goes in as few calls as the byte limit allows.
            vec![vec![0, 1], vec![2, 3, 4, 5], vec![6, 7]]
        } else {
            vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6, 7]]
        };
        assert_eq!(bundles(&log), expected, "merge_when_busy({merge})");
    }
}

#[tokio::test(start_paused = true)]
async fn cloudwatch_profile_counts_26_bytes_an_event() {
    let log = log();
    let bundler = Bundler::builder()
        .count_threshold(100_000)
        .byte_threshold(usize::MAX)
        .buffered_byte_limit(64 << 20)
        .limits(ApiLimits::CLOUDWATCH_PUT_LOG_EVENTS)
        .build(recording(&log, Instant::now()));
    // 1,048,576 / (1,000 + 26) = 1,022.0: 1,022 events a call (1,048,572 bytes), not 1,048.
    for i in 0..3_000u32 {
        bundler.add(i, 1_000).unwrap();
    }
    // Empty messages still count 26 bytes, and at most 10,000 events go in a call.
    let empty = Bundler::builder()
        .count_threshold(100_000)
        .buffered_byte_limit(64 << 20)
        .limits(ApiLimits::CLOUDWATCH_PUT_LOG_EVENTS)
        .build(recording(&log, Instant::now()));
    bundler.close().await;
    let sizes: Vec<usize> = bundles(&log).iter().map(Vec::len).collect();
    assert_eq!(sizes, [1_022, 1_022, 956]);
    for i in 0..25_000u32 {
        empty.add(i, 0).unwrap();
    }
    // An event of 1,048,551 bytes plus its 26 is over the limit; 1,048,550 is the largest.
    assert_eq!(
        empty.add(0, 1_048_551).unwrap_err().kind(),
        AddErrorKind::Oversized {
            size: 1_048_577,
            limit: 1_048_576
        }
    );
    empty.close().await;
    let sizes: Vec<usize> = bundles(&log)[3..].iter().map(Vec::len).collect();
    assert_eq!(sizes, [10_000, 10_000, 5_000]);
}

#[tokio::test(start_paused = true)]
async fn sqs_profile_sends_ten_messages_a_call() {
    let log = log();
    let bundler = Bundler::builder()
        .count_threshold(1_000)
        .limits(ApiLimits::SQS_SEND_MESSAGE_BATCH)
        .build(recording(&log, Instant::now()));
    for i in 0..25u32 {
        bundler.add(i, 100).unwrap();
    }
    assert_eq!(
        bundler.add(99, 1_048_577).unwrap_err().kind(),
        AddErrorKind::Oversized {
            size: 1_048_577,
            limit: 1_048_576
        }
    );
    bundler.close().await;
    let sizes: Vec<usize> = bundles(&log).iter().map(Vec::len).collect();
    assert_eq!(sizes, [10, 10, 5]);
}

#[tokio::test(start_paused = true)]
async fn a_budget_grows_bundles_instead_of_calls() {
    // Two calls back to back, then one every 10 s. Items arrive every 100 ms for 30 s with a
    // count threshold of 1: unbudgeted, that is 300 calls.
    let start = Instant::now();
    let log = log();
    let budget = Budget::new(NonZeroU32::new(1).unwrap(), Duration::from_secs(10))
        .with_burst(NonZeroU32::new(2).unwrap());
    let bundler = Bundler::builder()
        .count_threshold(1)
        .limits(ApiLimits::SQS_SEND_MESSAGE_BATCH)
        .budget(budget)
        .build(recording(&log, start));
    for i in 0..300u32 {
        bundler.add(i, 10).unwrap();
        sleep(Duration::from_millis(100)).await;
    }
    bundler.close().await;
    let calls = times(&log);
    // Any stretch T holds at most 2 + T / 10 s calls.
    for (i, a) in calls.iter().enumerate() {
        for (j, b) in calls.iter().enumerate().skip(i) {
            let allowed = 2.0 + (*b - *a).as_secs_f64() / 10.0;
            assert!((j - i + 1) as f64 <= allowed, "{calls:?}");
        }
    }
    let handled: Vec<u32> = bundles(&log).concat();
    assert_eq!(
        handled,
        (0..300).collect::<Vec<_>>(),
        "every item, once, in order"
    );
    assert!(
        bundles(&log).iter().all(|b| b.len() <= 10),
        "within the SQS limit"
    );
    // The burst sends items 0 and 1 alone; the other 298 go ten a call (the SQS limit): 32
    // calls, one every 10 s, instead of 300.
    assert_eq!(calls.len(), 32);
    assert_eq!(bundles(&log)[2].len(), 10);
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_backs_up_into_add_and_add_wait() {
    let budget = Budget::new(NonZeroU32::new(1).unwrap(), Duration::from_secs(60))
        .with_burst(NonZeroU32::new(1).unwrap());
    let log = log();
    let bundler = Bundler::builder()
        .count_threshold(1)
        .byte_limit(4)
        .buffered_byte_limit(12)
        .budget(budget)
        .build(recording(&log, Instant::now()));
    for i in 0..3 {
        bundler.add(i, 4).unwrap();
    }
    settle().await;
    // One call went; full bundles wait for the budget, holding their bytes.
    assert_eq!(bundles(&log).len(), 1);
    bundler.add(3, 4).unwrap();
    assert!(bundler.add(4, 4).unwrap_err().is_overflow());
    let start = Instant::now();
    bundler.add_wait(4, 4).await.unwrap(); // room comes with the next call, a minute later
    assert_eq!(start.elapsed(), Duration::from_secs(60));
    bundler.close().await;
    assert_eq!(bundles(&log).concat(), [0, 1, 2, 3, 4]);
}

/// Calls that take `call` each, many keys: with `one_call_per_key` no key's calls overlap, each
/// key's items come in order, other keys go beside a busy one, and what waits for a busy key
/// goes in its next call.
#[tokio::test(start_paused = true)]
async fn one_call_per_key_keeps_each_key_in_order_and_the_others_moving() {
    const KEYS: u32 = 8;
    const CALL: Duration = Duration::from_millis(300);
    // (key, first item, start, end) of every call, and the calls running at each moment.
    type Calls = Arc<Mutex<Vec<(u32, Vec<u32>, Instant, Instant)>>>;
    let calls: Calls = Arc::default();
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let bundler: KeyedBundler<u32, u32> = Bundler::builder()
        .delay_threshold(Duration::from_millis(10))
        .count_threshold(usize::MAX)
        .handler_limit(4)
        .one_call_per_key(true)
        .build_keyed({
            let (calls, running, most) = (calls.clone(), running.clone(), most.clone());
            move |key, items| {
                let (calls, running, most) = (calls.clone(), running.clone(), most.clone());
                async move {
                    let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    let start = Instant::now();
                    sleep(CALL).await;
                    running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    calls
                        .lock()
                        .unwrap()
                        .push((key, items, start, Instant::now()));
                }
            }
        });
    // Items 0.. for every key, one every 20 ms per key, for 3 s.
    for i in 0..150 {
        for key in 0..KEYS {
            bundler.add(key, i, 1).unwrap();
        }
        sleep(Duration::from_millis(20)).await;
    }
    bundler.close().await;

    let calls = calls.lock().unwrap().clone();
    for key in 0..KEYS {
        let mut mine: Vec<_> = calls.iter().filter(|c| c.0 == key).collect();
        mine.sort_by_key(|c| c.2);
        for pair in mine.windows(2) {
            assert!(pair[1].2 >= pair[0].3, "key {key}: two calls at once");
        }
        let items: Vec<u32> = mine.iter().flat_map(|c| c.1.clone()).collect();
        assert_eq!(
            items,
            (0..150).collect::<Vec<_>>(),
            "key {key}: every item once, in order"
        );
        // A call takes 300 ms and items come every 20 ms: each call carries what piled up
        // while the key was busy, so a key makes a few calls a second, not fifty.
        assert!(mine.len() < 40, "key {key}: {} calls", mine.len());
    }
    assert_eq!(
        most.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "keys went beside each other up to handler_limit"
    );
}

/// Without `one_call_per_key`, a second handler slot lets two calls of one key run at once.
#[tokio::test(start_paused = true)]
async fn without_one_call_per_key_a_key_may_have_two_calls_at_once() {
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let bundler: KeyedBundler<u32, u32> = Bundler::builder()
        .delay_threshold(Duration::from_millis(10))
        .count_threshold(1)
        .handler_limit(2)
        .build_keyed({
            let (running, most) = (running.clone(), most.clone());
            move |_key, _items| {
                let (running, most) = (running.clone(), most.clone());
                async move {
                    let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    sleep(Duration::from_millis(300)).await;
                    running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
    bundler.add(7, 0, 1).unwrap();
    bundler.add(7, 1, 1).unwrap();
    bundler.close().await;
    assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_delay_of_duration_max_means_only_thresholds_and_close_send() {
    // `Instant + Duration::MAX` overflows: the first add used to panic.
    let log = log();
    let bundler = Bundler::builder()
        .delay_threshold(Duration::MAX)
        .count_threshold(3)
        .build(recording(&log, Instant::now()));
    for i in 0..4 {
        bundler.add(i, 1).unwrap();
    }
    settle().await;
    assert_eq!(bundles(&log), [vec![0, 1, 2]]);
    tokio::time::advance(Duration::from_secs(365 * 86_400)).await;
    settle().await;
    assert_eq!(bundles(&log).len(), 1, "the fourth item waits for company");
    bundler.close().await;
    assert_eq!(bundles(&log), [vec![0, 1, 2], vec![3]]);
}
