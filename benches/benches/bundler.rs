//! Throughput of batching: items of 64 B and 1,500 B (`bytes::Bytes`) from producers into
//! bundles of 1,000 items or 10 ms, all in one run:
//!
//! - `mpsc_recv_many`: a bounded `tokio::sync::mpsc` channel drained with `recv_many`, the
//!   ceiling (it batches only what is already queued, with no timer);
//! - `chunks_timeout`: the same channel as a stream through `tokio_stream`'s `chunks_timeout`,
//!   what users pick today;
//! - `bundler`: `Bundler::add_wait` into a handler, the same bounds.
//!
//! Every contender has about the same backpressure (4,096 items, or their bytes, in flight) and
//! a consumer that touches each item. Runtimes: one thread, and two worker threads (the
//! machine's cores). Keyed bundling needs room for a bundle per key: its buffer is a bundle
//! per key, and producers who find it full send the oldest bundle early.

use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

const ITEMS: usize = 200_000;
const BUNDLE: usize = 1_000;
const DELAY: Duration = Duration::from_millis(10);
const IN_FLIGHT: usize = 4_096;

fn runtime(threads: usize) -> Runtime {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_time().build().expect("runtime")
}

/// What every consumer does with a batch: read each item's length, as an encoder would.
fn consume(batch: &[Bytes]) -> usize {
    batch.iter().map(Bytes::len).sum()
}

/// A bounded channel fed by `producers` tasks, which close it when they are done.
fn fed_channel(item: &Bytes, producers: usize) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel::<Bytes>(IN_FLIGHT);
    for _ in 0..producers {
        let (tx, item) = (tx.clone(), item.clone());
        tokio::spawn(async move {
            for _ in 0..ITEMS / producers {
                tx.send(item.clone()).await.expect("open");
            }
        });
    }
    rx
}

async fn mpsc_recv_many(item: Bytes, producers: usize) -> usize {
    let mut rx = fed_channel(&item, producers);
    let mut batch = Vec::with_capacity(BUNDLE);
    let mut total = 0;
    while rx.recv_many(&mut batch, BUNDLE).await > 0 {
        total += consume(&batch);
        batch.clear();
    }
    total
}

async fn chunks_timeout(item: Bytes, producers: usize) -> usize {
    let rx = fed_channel(&item, producers);
    let chunks = ReceiverStream::new(rx).chunks_timeout(BUNDLE, DELAY);
    tokio::pin!(chunks);
    let mut total = 0;
    while let Some(batch) = chunks.next().await {
        total += consume(&batch);
    }
    total
}

async fn bundler(item: Bytes, producers: usize, keys: usize) -> usize {
    let total = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let bundler = bundler::Bundler::builder()
        .count_threshold(BUNDLE)
        .byte_threshold(usize::MAX)
        .delay_threshold(DELAY)
        .buffered_byte_limit(IN_FLIGHT.max(keys * BUNDLE) * item.len())
        .key_limit(keys.max(1))
        .build_keyed({
            let total = std::sync::Arc::clone(&total);
            move |_key: usize, batch: Vec<Bytes>| {
                total.fetch_add(consume(&batch), std::sync::atomic::Ordering::Relaxed);
                std::future::ready(())
            }
        });
    let mut tasks = Vec::new();
    for p in 0..producers {
        let (bundler, item) = (bundler.clone(), item.clone());
        tasks.push(tokio::spawn(async move {
            let size = item.len();
            for i in 0..ITEMS / producers {
                let key = (p + i * producers) % keys;
                bundler
                    .add_wait(key, item.clone(), size)
                    .await
                    .expect("fits");
            }
        }));
    }
    for task in tasks {
        task.await.expect("producer");
    }
    bundler.close().await;
    total.load(std::sync::atomic::Ordering::Relaxed)
}

fn throughput(c: &mut Criterion) {
    for (size, threads) in [(64usize, 1usize), (64, 2), (1_500, 2)] {
        let rt = runtime(threads);
        let item = Bytes::from(vec![7u8; size]);
        let expect = ITEMS * size;
        let runtime = if threads == 1 {
            "current_thread"
        } else {
            "2_workers"
        };
        let mut group = c.benchmark_group(format!("batch_{size}B_{runtime}"));
        group.throughput(Throughput::Elements(ITEMS as u64));
        group.sample_size(20);
        for producers in [1usize, 4] {
            let id = |name: &str| BenchmarkId::new(name, format!("{producers}_producers"));
            group.bench_function(id("mpsc_recv_many"), |b| {
                b.iter(|| assert_eq!(rt.block_on(mpsc_recv_many(item.clone(), producers)), expect))
            });
            group.bench_function(id("chunks_timeout"), |b| {
                b.iter(|| assert_eq!(rt.block_on(chunks_timeout(item.clone(), producers)), expect))
            });
            group.bench_function(id("bundler"), |b| {
                b.iter(|| assert_eq!(rt.block_on(bundler(item.clone(), producers, 1)), expect))
            });
            group.bench_function(id("bundler_100_keys"), |b| {
                b.iter(|| assert_eq!(rt.block_on(bundler(item.clone(), producers, 100)), expect))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, throughput);
criterion_main!(benches);
