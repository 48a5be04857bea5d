//! Beats delivered on the real clock over a fixed time, `cardio::heartbeat(i, i)` beside
//! `tokio::time::interval(i)` (`MissedTickBehavior::Delay`, the behaviour closest to cardio's),
//! and the CPU time each takes per beat. Not a criterion bench: what is measured is the rate the
//! timer delivers, which takes real time.
//!
//! ```sh
//! cargo bench -p benches --bench cardio_rate            # 3 s per interval and timer
//! CARDIO_RATE_SECS=10 cargo bench -p benches --bench cardio_rate
//! ```

use std::time::{Duration, Instant};

use tokio::time::MissedTickBehavior;

/// This thread's CPU time so far, from the scheduler's accounting (nanoseconds, unlike the
/// 10 ms ticks of `/proc/self/stat`).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let nanos = stat
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(nanos)
}

/// Beats taken in `span` by a consumer that waits for each, and the CPU they took.
fn count(which: &str, interval: Duration, span: Duration) -> (u64, Duration) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let cpu = thread_cpu();
        let end = Instant::now() + span;
        let mut beats = 0;
        match which {
            "tokio" => {
                let mut timer = tokio::time::interval(interval);
                timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
                while Instant::now() < end {
                    timer.tick().await;
                    beats += 1;
                }
            }
            _ => {
                let mut heart = cardio::heartbeat(interval, interval);
                while Instant::now() < end {
                    heart.tick().await;
                    beats += 1;
                }
            }
        }
        (beats, thread_cpu() - cpu)
    })
}

fn main() {
    // `cargo bench` passes `--bench`; a filter, if any, names intervals in milliseconds.
    let filter: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let secs: u64 = std::env::var("CARDIO_RATE_SECS").map_or(3, |s| s.parse().expect("seconds"));
    let span = Duration::from_secs(secs);
    println!("beats delivered in {secs} s on the real clock, and CPU per beat");
    println!();
    println!(
        "| interval | promised | tokio::time::interval | cardio::heartbeat | cardio/tokio | CPU per beat, tokio | CPU per beat, cardio |"
    );
    println!("|---|---|---|---|---|---|---|");
    for ms in [1, 2, 5, 10, 20, 200] {
        if !filter.is_empty() && !filter.contains(&ms) {
            continue;
        }
        let interval = Duration::from_millis(ms);
        // Beats in [0, span]: the first at once, then one an interval.
        let promised = span.as_millis() as u64 / ms + 1;
        let (tokio_beats, tokio_cpu) = count("tokio", interval, span);
        let (cardio_beats, cardio_cpu) = count("cardio", interval, span);
        let per = |cpu: Duration, beats: u64| cpu.as_secs_f64() * 1e6 / beats as f64;
        println!(
            "| {ms} ms | {promised} | {tokio_beats} | {cardio_beats} | {:.3} | {:.1} µs | {:.1} µs |",
            cardio_beats as f64 / tokio_beats as f64,
            per(tokio_cpu, tokio_beats),
            per(cardio_cpu, cardio_beats),
        );
    }
}
