//! Takes N beats of `cardio` or of `tokio::time::interval` on the paused clock, for counting
//! instructions per beat under `valgrind --tool=callgrind`, which repeats to the instruction
//! where wall-clock benches on a shared machine swing by ten percent:
//!
//! ```sh
//! cargo build --release -p benches --example beats
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/beats cardio 100000
//! ```

use std::time::Duration;

use tokio::time::MissedTickBehavior;

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "cardio".into());
    let n: u64 = args.next().map_or(100_000, |a| a.parse().expect("N"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let period = Duration::from_millis(10);
    match which.as_str() {
        "tokio" => {
            let mut interval = rt.block_on(async { tokio::time::interval(period) });
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            for _ in 0..n {
                std::hint::black_box(rt.block_on(interval.tick()));
            }
        }
        "cardio" => {
            let mut heart = rt.block_on(async { cardio::heartbeat(period, period) });
            for _ in 0..n {
                std::hint::black_box(rt.block_on(heart.tick()));
            }
        }
        other => panic!("expected `tokio` or `cardio`, got {other}"),
    }
}
