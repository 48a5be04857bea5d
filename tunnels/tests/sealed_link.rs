//! Sealed networks over both links' in-memory services, on the paused clock: nodes holding
//! the key deliver as before, with nothing readable in the store; a node with another key, or
//! none, delivers nothing and is counted; a bundle of the largest size the link allows still
//! goes in one call (the seal's bytes are accounted for).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use tunnels::link::Sealing;
use tunnels::link::cwl::{CwlLink, CwlLinkConfig, LogsModel, MemoryLogs};
use tunnels::link::s3::{LatencyModel, MemoryStore, ObjectStore, S3Link, S3LinkConfig};
use tunnels::wire::sealed::{Key, Keys};
use tunnels::{Link, Received};

const A: u64 = 0xa;
const B: u64 = 0xb;
const NETWORK: &str = "test://net/";

fn sealing(key: &Key) -> Option<Arc<Sealing>> {
    let keys = Keys::new(key.clone(), None).unwrap();
    Some(Arc::new(Sealing::new(keys, NETWORK)))
}

fn s3(store: &MemoryStore, me: u64, sealing: Option<Arc<Sealing>>) -> S3Link<MemoryStore> {
    let config = S3LinkConfig {
        prefix: "net/".into(),
        sealing,
        ..S3LinkConfig::default()
    };
    S3Link::new(store.clone(), me, 1, config)
}

fn cwl(logs: &MemoryLogs, me: u64, sealing: Option<Arc<Sealing>>) -> CwlLink<MemoryLogs> {
    let config = CwlLinkConfig {
        group: "net".into(),
        prefix: "t/".into(),
        sealing,
        ..CwlLinkConfig::default()
    };
    CwlLink::new(logs.clone(), me, 1, config).unwrap()
}

fn secret(i: usize) -> Bytes {
    Bytes::from(format!("secret packet {i}"))
}

/// Polls `link` for a while, a second apart; everything it delivered.
async fn drain(link: &impl Link) -> Vec<Received> {
    let mut got = Vec::new();
    for _ in 0..20 {
        got.extend(link.poll().await.unwrap_or_default());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    got
}

/// Sends three batches from `a` (its key), then one each from `stranger` (another key) and
/// `plain` (no key), to `b`; only `a`'s arrive, the other two are counted unauthentic.
async fn only_the_key_holder_is_delivered(
    a: &impl Link,
    stranger: &impl Link,
    plain: &impl Link,
    b: &impl Link,
) {
    let before = b.stats().delivered.load(Relaxed);
    for i in 0..3 {
        a.send(B, &[secret(i)]).await.unwrap();
    }
    stranger.send(B, &[secret(10)]).await.unwrap();
    plain.send(B, &[secret(11)]).await.unwrap();
    let got = drain(b).await;
    let frames: Vec<&[u8]> = got
        .iter()
        .flat_map(|r| r.frames.iter().map(|f| &f[..]))
        .collect();
    assert_eq!(frames, [&secret(0)[..], &secret(1)[..], &secret(2)[..]]);
    assert!(got.iter().all(|r| r.sender == A));
    let stats = b.stats();
    assert_eq!(stats.unauthentic.load(Relaxed), 2, "{stats:?}");
    assert_eq!(stats.delivered.load(Relaxed), before + 3, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn over_s3_only_batches_sealed_with_the_key_are_delivered_and_none_can_be_read() {
    let store = MemoryStore::new(LatencyModel::S3_STANDARD, 1);
    let key = Key::generate();
    let a = s3(&store, A, sealing(&key));
    let b = s3(&store, B, sealing(&key));
    let stranger = s3(&store, 0xc, sealing(&Key::generate()));
    let plain = s3(&store, 0xd, None);
    // What lies in the bucket holds no frame in the clear.
    a.send(B, &[secret(99)]).await.unwrap();
    let keys = store.list("net/", None, 100).await.unwrap();
    let mut objects = 0;
    for key in &keys {
        if let Some(body) = store.get(key).await.unwrap()
            && !body.is_empty()
        {
            objects += 1;
            assert!(
                !body.windows(6).any(|w| w == b"secret"),
                "{key} in the clear"
            );
        }
    }
    assert_eq!(objects, 1);
    assert_eq!(drain(&b).await.len(), 1);
    only_the_key_holder_is_delivered(&a, &stranger, &plain, &b).await;
}

#[tokio::test(start_paused = true)]
async fn over_cloudwatch_logs_only_batches_sealed_with_the_key_are_delivered() {
    let logs = MemoryLogs::new(LogsModel::CLOUDWATCH, 1);
    let key = Key::generate();
    let a = cwl(&logs, A, sealing(&key));
    let b = cwl(&logs, B, sealing(&key));
    let stranger = cwl(&logs, 0xc, sealing(&Key::generate()));
    let plain = cwl(&logs, 0xd, None);
    only_the_key_holder_is_delivered(&a, &stranger, &plain, &b).await;
}

/// The largest bundle the link announces, sealed, still fits one PutLogEvents call (the
/// in-memory service refuses calls over the limits, as CloudWatch Logs does).
#[tokio::test(start_paused = true)]
async fn a_full_bundle_sealed_still_goes_in_one_call() {
    let logs = MemoryLogs::new(LogsModel::CLOUDWATCH, 2);
    let key = Key::generate();
    let (a, b) = (cwl(&logs, A, sealing(&key)), cwl(&logs, B, sealing(&key)));
    let unsealed = cwl(&logs, 0xe, None);
    let limits = a.limits();
    assert!(limits.max_bundle_bytes() < unsealed.limits().max_bundle_bytes());
    let frame = limits.max_item_bytes() - limits.item_overhead();
    let n = limits.max_bundle_bytes() / limits.encoded_size(frame);
    let frames: Vec<Bytes> = (0..n).map(|i| Bytes::from(vec![i as u8; frame])).collect();
    a.send(B, &frames).await.unwrap();
    let got = drain(&b).await;
    assert_eq!(got.iter().map(|r| r.frames.len()).sum::<usize>(), n);
    assert_eq!(b.stats().unauthentic.load(Relaxed), 0);
}

/// Over CloudWatch Logs, a sealed event copied into another sender's stream (rung in, as a
/// new sender would be) is refused (its sealed header names its real sender), and the same event put again into its own stream after it
/// was read is a duplicate: neither is delivered.
#[tokio::test(start_paused = true)]
async fn over_cloudwatch_logs_a_copied_or_replayed_event_is_not_delivered() {
    use tunnels::link::cwl::layout::{batch_stream, bell_stream, ring};
    use tunnels::link::cwl::{LogEvent, LogStore, ReadFrom};

    let logs = MemoryLogs::new(LogsModel::CLOUDWATCH, 3);
    let key = Key::generate();
    let (a, b) = (cwl(&logs, A, sealing(&key)), cwl(&logs, B, sealing(&key)));
    a.send(B, &[secret(1)]).await.unwrap();
    assert_eq!(drain(&b).await.len(), 1);
    let stream = batch_stream("t/", B, A);
    let sealed = logs
        .get_events("net", &stream, ReadFrom::Time(0), None)
        .await
        .unwrap()
        .events
        .into_iter()
        .next()
        .unwrap();
    let later = |message: &str| LogEvent {
        timestamp: sealed.timestamp + 1_000,
        message: message.to_owned(),
    };
    // Into the stream of C, who rings B's bell as a sender does.
    let c = 0xc;
    let copied = batch_stream("t/", B, c);
    logs.create_stream("net", &copied).await.unwrap();
    logs.put_events("net", &copied, &[later(&sealed.message)])
        .await
        .unwrap();
    logs.put_events("net", &bell_stream("t/", B), &[later(&ring(c, 1))])
        .await
        .unwrap();
    // And again into A's own stream.
    logs.put_events("net", &stream, &[later(&sealed.message)])
        .await
        .unwrap();
    assert!(drain(&b).await.is_empty());
    let stats = b.stats();
    // The copy opens (A did seal it for B) but names A in C's stream: refused as not the
    // stream's own batch.
    assert_eq!(stats.rejected.load(Relaxed), 1, "{stats:?}");
    assert_eq!(stats.duplicates.load(Relaxed), 1, "{stats:?}");
    assert_eq!(stats.delivered.load(Relaxed), 1, "{stats:?}");
}
