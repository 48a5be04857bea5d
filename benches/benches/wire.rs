//! The wire format's cost: encoding and checking a batch, and the two text forms (base64 and
//! Z85) that a text-only transport such as CloudWatch Logs would carry, and sealing a batch
//! (and opening it) with the network's key.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tunnels::wire::sealed::{self, Key, Keys, Place};
use tunnels::wire::text::{self, TextEncoding};
use tunnels::wire::{Batch, Header};

/// A batch of 1,500-byte frames of about `bytes`.
fn batch(bytes: usize) -> Vec<u8> {
    let frames: Vec<Vec<u8>> = (0..bytes / 1_502)
        .map(|i| (0..1_500).map(|j| (i * 31 + j * 7) as u8).collect())
        .collect();
    let mut buf = Vec::new();
    Header {
        sender: 1,
        epoch: 2,
        seq: 3,
    }
    .emit(&frames, &mut buf)
    .expect("fits");
    buf
}

fn wire(c: &mut Criterion) {
    let encoded = batch(1 << 20);
    let checked = Batch::new_checked(&encoded[..]).expect("valid");
    let frames: Vec<&[u8]> = checked.frames().collect();
    let mut group = c.benchmark_group("batch_1MiB");
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    let mut buf = Vec::new();
    let header = Header {
        sender: 1,
        epoch: 2,
        seq: 3,
    };
    group.bench_function("emit", |b| {
        b.iter(|| header.emit(black_box(&frames), &mut buf).expect("fits"))
    });
    group.bench_function("check_and_iterate", |b| {
        b.iter(|| {
            let batch = Batch::new_checked(black_box(&encoded[..])).expect("valid");
            batch.frames().map(<[u8]>::len).sum::<usize>()
        })
    });
    // Sealing (XChaCha20-Poly1305 with the associated data of the batch's place), beside the
    // plain encoding above: the cost a sealed network adds per batch.
    let keys = Keys::new(Key::generate(), None).expect("one key");
    let place = Place {
        network: b"s3://bench/net/",
        destination: 0xb,
    };
    let mut sealed = Vec::new();
    group.bench_function("seal", |b| {
        b.iter(|| sealed::seal(black_box(&encoded), &keys, &place, 1, &mut sealed).expect("valid"))
    });
    let mut opened = Vec::new();
    group.bench_function("open", |b| {
        b.iter(|| sealed::open(black_box(&sealed), &keys, &place, &mut opened).expect("authentic"))
    });
    group.finish();

    let mut group = c.benchmark_group("text_1MiB");
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    for (name, encoding) in [("base64", TextEncoding::Base64), ("z85", TextEncoding::Z85)] {
        let mut out = String::new();
        group.bench_function(format!("{name}_encode"), |b| {
            b.iter(|| {
                out.clear();
                text::encode(black_box(&encoded), encoding, &mut out);
            })
        });
        let mut back = Vec::new();
        group.bench_function(format!("{name}_decode"), |b| {
            b.iter(|| {
                back.clear();
                text::decode(black_box(&out), &mut back).expect("valid");
            })
        });
        eprintln!(
            "{name}: {} bytes of text for {} bytes ({:.3}x)",
            out.len(),
            encoded.len(),
            out.len() as f64 / encoded.len() as f64
        );
    }
    group.finish();
}

criterion_group!(benches, wire);
criterion_main!(benches);
