//! The metrics a heartbeat records, read back through `metrics-util`'s debugging recorder.

use std::num::NonZeroU32;
use std::time::Duration;

use cardio::Heartbeat;
use cardio::metrics::names;
use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tokio::time::sleep;

/// One snapshot of the recorder. Taking it resets the counters, so each test takes one per check.
type Snapshot = Vec<(
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

fn value<'a>(snapshot: &'a Snapshot, name: &str, heart: &str) -> Option<&'a DebugValue> {
    snapshot
        .iter()
        .find(|(key, _, _, _)| {
            key.key().name() == name
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == "heartbeat" && l.value() == heart)
        })
        .map(|(_, _, _, value)| value)
}

fn counter(snapshot: &Snapshot, name: &str, heart: &str) -> u64 {
    match value(snapshot, name, heart) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name}: expected a counter, found {other:?}"),
    }
}

fn gauge(snapshot: &Snapshot, name: &str, heart: &str) -> f64 {
    match value(snapshot, name, heart) {
        Some(DebugValue::Gauge(g)) => g.into_inner(),
        other => panic!("{name}: expected a gauge, found {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn records_interval_beats_changes_coalescing_and_budget() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let budget = cardio::Budget::new(NonZeroU32::new(1).unwrap(), Duration::from_secs(10))
        .with_burst(NonZeroU32::new(2).unwrap());
    let mut heart = metrics::with_local_recorder(&recorder, || {
        Heartbeat::builder(Duration::from_secs(1), Duration::from_secs(8))
            .name("inbox")
            .budget(budget)
            .build()
    });
    let snapshot = snapshotter.snapshot().into_vec();
    assert_eq!(gauge(&snapshot, names::INTERVAL_SECONDS, "inbox"), 1.0);

    heart.tick().await; // 0 s
    heart.slower(); // 2 s
    heart.slower(); // 4 s
    heart.faster(); // 2 s
    let snapshot = snapshotter.snapshot().into_vec();
    assert_eq!(gauge(&snapshot, names::INTERVAL_SECONDS, "inbox"), 2.0);
    assert_eq!(counter(&snapshot, names::BEATS, "inbox"), 1);
    assert_eq!(counter(&snapshot, names::SLOWER, "inbox"), 2);
    assert_eq!(counter(&snapshot, names::FASTER, "inbox"), 1);
    heart.tick().await; // 2 s: the second token of the burst
    heart.rush(); // 1 s, but the budget allows the next beat only at 10 s
    heart.tick().await; // 10 s; the next token comes at 20 s
    sleep(Duration::from_secs(25)).await; // late by 15 intervals of 1 s: 15 beats missed
    let beat = heart.tick().await.unwrap(); // 35 s
    assert_eq!(beat.coalesced(), 15);

    let snapshot = snapshotter.snapshot().into_vec();
    assert_eq!(
        counter(&snapshot, names::BEATS, "inbox"),
        3,
        "beats since the last snapshot"
    );
    assert_eq!(counter(&snapshot, names::RUSH, "inbox"), 1);
    // Held back: the beat at 10 s (due at 3 s) and the one at 35 s (due at 11 s, allowed at 20 s).
    assert_eq!(counter(&snapshot, names::BUDGET_DEFERRED, "inbox"), 2);
    assert_eq!(counter(&snapshot, names::COALESCED, "inbox"), 15);
    // Coalescing slows the heart one step: 1 s becomes 2 s.
    assert_eq!(gauge(&snapshot, names::INTERVAL_SECONDS, "inbox"), 2.0);
}
