//! Bundles N items of 64 B from one producer on a current-thread runtime, for counting
//! instructions per item under `valgrind --tool=callgrind` (see `beats.rs` for why):
//!
//! ```sh
//! cargo build --release -p benches --example bundle_items
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/bundle_items 1000000
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(1_000_000, |a| a.parse().expect("N"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let total = rt.block_on(async {
        let total = Arc::new(AtomicUsize::new(0));
        let bundler = bundler::Bundler::builder()
            .count_threshold(1_000)
            .byte_threshold(usize::MAX)
            .delay_threshold(Duration::from_millis(10))
            .buffered_byte_limit(4_096 * 64)
            .build({
                let total = Arc::clone(&total);
                move |batch: Vec<Bytes>| {
                    total.fetch_add(batch.iter().map(Bytes::len).sum(), Ordering::Relaxed);
                    std::future::ready(())
                }
            });
        let item = Bytes::from(vec![7u8; 64]);
        for _ in 0..n {
            bundler.add_wait(item.clone(), 64).await.expect("fits");
        }
        bundler.close().await;
        total.load(Ordering::Relaxed)
    });
    assert_eq!(total, n * 64);
}
