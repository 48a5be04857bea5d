//! The metrics a bundler records, read back through `metrics-util`'s debugging recorder.

use std::num::NonZeroU32;
use std::time::Duration;

use bundler::metrics::names;
use bundler::{Budget, Bundler};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tokio::time::sleep;

type Snapshot = Vec<(
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// The value of `name` for bundler `bundler`, with `reason` if given.
fn find<'a>(
    snapshot: &'a Snapshot,
    name: &str,
    bundler: &str,
    reason: Option<&str>,
) -> &'a DebugValue {
    snapshot
        .iter()
        .find(|(key, _, _, _)| {
            let key = key.key();
            key.name() == name
                && key
                    .labels()
                    .any(|l| l.key() == "bundler" && l.value() == bundler)
                && reason
                    .is_none_or(|r| key.labels().any(|l| l.key() == "reason" && l.value() == r))
        })
        .map(|(_, _, _, value)| value)
        .unwrap_or_else(|| panic!("no {name} for {bundler} {reason:?}"))
}

fn bundles(snapshot: &Snapshot, bundler: &str, reason: &str) -> u64 {
    match find(snapshot, names::BUNDLES, bundler, Some(reason)) {
        DebugValue::Counter(n) => *n,
        other => panic!("not a counter: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn counts_bundles_by_reason_and_records_their_shape() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (bundler, budgeted) = metrics::with_local_recorder(&recorder, || {
        let bundler = Bundler::builder()
            .name("reasons")
            .count_threshold(3)
            .byte_threshold(100)
            .byte_limit(120)
            .delay_threshold(Duration::from_millis(50))
            .build(|bundle: Vec<&'static str>| async move {
                assert!(!bundle.contains(&"boom"), "a handler that panics");
            });
        let budgeted = Bundler::builder()
            .name("budgeted")
            .count_threshold(1)
            .budget(
                Budget::new(NonZeroU32::new(1).unwrap(), Duration::from_secs(10))
                    .with_burst(NonZeroU32::new(1).unwrap()),
            )
            .build(|_: Vec<u8>| async {});
        (bundler, budgeted)
    });

    for item in ["a", "b", "c"] {
        bundler.add(item, 1).unwrap(); // count
    }
    bundler.add("d", 100).unwrap(); // bytes
    bundler.add("e", 60).unwrap();
    bundler.add("f", 70).unwrap(); // 60 + 70 > 120: "e" goes for the limit
    sleep(Duration::from_millis(60)).await; // "f" went for the delay, at 50 ms
    bundler.add("boom", 1).unwrap();
    bundler.flush().await; // manual, and the handler panics
    bundler.add("h", 1).unwrap();
    bundler.close().await; // close

    budgeted.add(1, 1).unwrap(); // the one call of the burst
    tokio::task::yield_now().await; // the dispatcher sends it
    budgeted.add(2, 1).unwrap(); // passes its threshold with no call left ...
    sleep(Duration::from_secs(11)).await; // ... and goes with the next call, at 10 s
    budgeted.close().await;

    let snapshot = snapshotter.snapshot().into_vec();
    for (reason, n) in [
        ("count", 1),
        ("bytes", 1),
        ("limit", 1),
        ("delay", 1),
        ("manual", 1),
        ("close", 1),
    ] {
        assert_eq!(bundles(&snapshot, "reasons", reason), n, "{reason}");
    }
    assert_eq!(bundles(&snapshot, "reasons", "budget"), 0);
    assert_eq!(bundles(&snapshot, "budgeted", "count"), 1);
    assert_eq!(
        bundles(&snapshot, "budgeted", "budget") + bundles(&snapshot, "budgeted", "close"),
        1
    );
    match find(&snapshot, names::BUNDLE_ITEMS, "reasons", None) {
        DebugValue::Histogram(values) => {
            let mut items: Vec<f64> = values.iter().map(|v| v.into_inner()).collect();
            items.sort_by(f64::total_cmp);
            assert_eq!(items, [1.0, 1.0, 1.0, 1.0, 1.0, 3.0]);
        }
        other => panic!("not a histogram: {other:?}"),
    }
    match find(&snapshot, names::BUNDLE_BYTES, "reasons", None) {
        DebugValue::Histogram(values) => {
            let total: f64 = values.iter().map(|v| v.into_inner()).sum();
            assert_eq!(total, 3.0 + 100.0 + 60.0 + 70.0 + 1.0 + 1.0);
        }
        other => panic!("not a histogram: {other:?}"),
    }
    assert_eq!(
        *find(&snapshot, names::HANDLER_PANICS, "reasons", None),
        DebugValue::Counter(1)
    );
    assert!(matches!(
        find(&snapshot, names::BUFFERED_BYTES, "reasons", None),
        DebugValue::Gauge(_)
    ));
    assert!(matches!(
        find(&snapshot, names::HANDLERS_IN_FLIGHT, "reasons", None),
        DebugValue::Gauge(_)
    ));
}
