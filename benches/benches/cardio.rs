//! CPU cost of one beat: `cardio` against `tokio::time::interval` at the same period, on the
//! paused clock, so that the figures measure the timer machinery and not the passage of time.
//! Each iteration takes one beat: poll (pending), the runtime auto-advances the clock to the
//! deadline, poll again (ready), reschedule.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tokio::runtime::{Builder, Runtime};
use tokio::time::MissedTickBehavior;

const PERIOD: Duration = Duration::from_millis(10);

fn paused_runtime() -> Runtime {
    Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

fn per_beat(c: &mut Criterion) {
    let mut group = c.benchmark_group("beat");

    let rt = paused_runtime();
    let mut interval = rt.block_on(async {
        let mut i = tokio::time::interval(PERIOD);
        // The behaviour closest to cardio's: never a burst of catch-up ticks.
        i.set_missed_tick_behavior(MissedTickBehavior::Delay);
        i
    });
    group.bench_function("tokio_interval", |b| {
        b.iter(|| black_box(rt.block_on(interval.tick())))
    });

    let rt = paused_runtime();
    let mut heart = rt.block_on(async { cardio::heartbeat(PERIOD, PERIOD) });
    group.bench_function("cardio_heartbeat", |b| {
        b.iter(|| black_box(rt.block_on(heart.tick())))
    });

    let rt = paused_runtime();
    let mut heart = rt.block_on(async {
        cardio::Heartbeat::builder(PERIOD, PERIOD)
            .jitter(0.1)
            .budget(cardio::Budget::new(
                std::num::NonZeroU32::new(1_000).unwrap(),
                Duration::from_secs(1),
            ))
            .build()
    });
    group.bench_function("cardio_heartbeat_jitter_budget", |b| {
        b.iter(|| black_box(rt.block_on(heart.tick())))
    });
    group.finish();
}

fn rate_changes(c: &mut Criterion) {
    let mut group = c.benchmark_group("rate_change");
    let rt = paused_runtime();
    let heart = rt.block_on(async {
        cardio::Heartbeat::builder(Duration::from_millis(1), Duration::from_secs(60))
            .start(Duration::from_secs(1))
            .build()
    });
    group.bench_function("faster_then_slower", |b| {
        b.iter(|| {
            black_box(heart.faster());
            black_box(heart.slower());
        })
    });
    let handle = heart.handle();
    group.bench_function("handle_faster_then_slower", |b| {
        b.iter(|| {
            black_box(handle.faster());
            black_box(handle.slower());
        })
    });
    // A change that reschedules the pending beat: the cost a poller pays per poll result.
    let rt = paused_runtime();
    let mut heart = rt.block_on(async {
        cardio::Heartbeat::builder(Duration::from_millis(1), Duration::from_secs(60))
            .start(Duration::from_millis(8))
            .build()
    });
    group.bench_function("beat_with_faster_and_slower", |b| {
        b.iter(|| {
            heart.faster();
            heart.slower();
            black_box(rt.block_on(heart.tick()))
        })
    });
    group.finish();
}

criterion_group!(benches, per_beat, rate_changes);
criterion_main!(benches);
