//! The S3 link's logic over the in-memory store, on the paused clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tunnels::link::s3::{
    Call, LatencyModel, MemoryStore, ObjectStore, S3Link, S3LinkConfig, Strategy, batch_key,
    bell_key,
};
use tunnels::wire::Header;
use tunnels::{Link, Node, NodeConfig, Received};

const A: u64 = 0xa;
const B: u64 = 0xb;

fn link(store: &MemoryStore, me: u64, epoch: u64) -> S3Link<MemoryStore> {
    S3Link::new(
        store.clone(),
        me,
        epoch,
        S3LinkConfig {
            prefix: "net/".into(),
            ..S3LinkConfig::default()
        },
    )
}

fn frames(items: &[&'static str]) -> Vec<Bytes> {
    items
        .iter()
        .map(|s| Bytes::from_static(s.as_bytes()))
        .collect()
}

fn payloads(received: &[Received]) -> Vec<Vec<&[u8]>> {
    received
        .iter()
        .map(|r| r.frames.iter().map(|f| &f[..]).collect())
        .collect()
}

/// Calls by kind: PUT, GET, LIST, DELETE.
fn calls(link: &S3Link<MemoryStore>) -> [u64; 4] {
    Call::ALL.map(|kind| link.usage().calls(kind.as_str()))
}

#[tokio::test(start_paused = true)]
async fn delivers_in_order_and_leaves_the_inbox_empty() {
    let store = MemoryStore::new(LatencyModel::S3_STANDARD, 1);
    let (a, b) = (link(&store, A, 1), link(&store, B, 1));
    a.send(B, &frames(&["one", "two"])).await.unwrap();
    a.send(B, &frames(&["three"])).await.unwrap();
    // Two PUTs of batches and one bell: the first time A talks to B.
    assert_eq!(calls(&a), [3, 0, 0, 0]);

    let got = b.poll().await.unwrap();
    assert_eq!(payloads(&got), [vec![&b"one"[..], b"two"], vec![b"three"]]);
    assert_eq!((got[0].sender, got[0].epoch, got[0].seq), (A, 1, 0));
    assert_eq!(got[1].seq, 1);
    assert!(
        store.keys().is_empty(),
        "batches read are deleted, and the bell"
    );
    // The first poll lists (it knows no senders yet): it deletes its bell, lists, GETs two
    // batches and deletes them.
    assert_eq!(calls(&b), [0, 2, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn probing_costs_a_get_per_known_sender_and_one_for_the_bell() {
    let store = MemoryStore::new(LatencyModel::NONE, 1);
    let (a, b) = (link(&store, A, 1), link(&store, B, 1));
    a.send(B, &frames(&["hello"])).await.unwrap();
    assert_eq!(b.poll().await.unwrap().len(), 1); // lists
    let before = calls(&b);
    assert!(b.poll().await.unwrap().is_empty());
    let after = calls(&b);
    // The bell, then A's next key: two GETs, no LIST.
    assert_eq!(after[1] - before[1], 2);
    assert_eq!(after[2], before[2]);

    // A's next batch is found by the probe, not a LIST.
    a.send(B, &frames(&["again"])).await.unwrap();
    let got = b.poll().await.unwrap();
    assert_eq!(payloads(&got), [vec![&b"again"[..]]]);
    assert_eq!(calls(&b)[2], before[2], "still no second LIST");
}

#[tokio::test(start_paused = true)]
async fn a_new_sender_rings_and_is_found_by_a_probing_receiver() {
    let store = MemoryStore::new(LatencyModel::NONE, 1);
    let b = link(&store, B, 1);
    assert!(b.poll().await.unwrap().is_empty()); // the first poll lists
    assert!(b.poll().await.unwrap().is_empty()); // then probes the bell
    let c = link(&store, 0xc, 7);
    c.send(B, &frames(&["hi from c"])).await.unwrap();
    assert!(store.keys().contains(&bell_key("net/", B)));
    let got = b.poll().await.unwrap();
    assert_eq!(payloads(&got), [vec![&b"hi from c"[..]]]);
    assert!(store.keys().is_empty(), "bell and batch deleted");
    assert_eq!(
        b.stats()
            .delivered
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_retried_put_is_not_delivered_twice() {
    let store = MemoryStore::new(LatencyModel::NONE, 1);
    let (a, b) = (link(&store, A, 1), link(&store, B, 1));
    a.send(B, &frames(&["once"])).await.unwrap();
    let key = batch_key("net/", B, A, 1, 0);
    let object = store.get(&key).await.unwrap().unwrap();
    assert_eq!(b.poll().await.unwrap().len(), 1);
    // The same PUT lands again (it was retried after a timeout that hid its success).
    store.insert(key.clone(), object);
    a.send(B, &frames(&["next"])).await.unwrap();
    let got = b.poll().await.unwrap();
    assert_eq!(payloads(&got), [vec![&b"next"[..]]]);
    // The probe went straight to seq 1; a LIST (the bell of a later ring, or the hourly one)
    // deletes the stray copy as a duplicate.
    tokio::time::advance(Duration::from_secs(3_601)).await;
    assert!(b.poll().await.unwrap().is_empty());
    assert_eq!(
        b.stats()
            .duplicates
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(!store.keys().contains(&key));
}

#[tokio::test(start_paused = true)]
async fn a_restarted_sender_is_followed_in_its_new_epoch() {
    let store = MemoryStore::new(LatencyModel::NONE, 1);
    let b = link(&store, B, 1);
    let a1 = link(&store, A, 100);
    a1.send(B, &frames(&["life one, 0"])).await.unwrap();
    a1.send(B, &frames(&["life one, 1"])).await.unwrap();
    assert_eq!(b.poll().await.unwrap().len(), 2);
    // A restarts: a new epoch, numbering from 0 again, and a ring (it forgot it rang).
    let a2 = link(&store, A, 200);
    a2.send(B, &frames(&["life two, 0"])).await.unwrap();
    let got = b.poll().await.unwrap();
    assert_eq!(payloads(&got), [vec![&b"life two, 0"[..]]]);
    assert_eq!((got[0].epoch, got[0].seq), (200, 0));
}

#[tokio::test(start_paused = true)]
async fn foreign_and_broken_objects_are_counted_deleted_and_skipped() {
    let store = MemoryStore::new(LatencyModel::NONE, 1);
    let (a, b) = (link(&store, A, 1), link(&store, B, 1));
    a.send(B, &frames(&["before"])).await.unwrap();
    // Random bytes under a valid batch key of another sender.
    store.insert(
        batch_key("net/", B, 0xc, 1, 0),
        Bytes::from_static(b"\x00\x01garbage"),
    );
    // A key that is not a batch key at all.
    store.insert("net/000000000000000b/not-a-batch", Bytes::from_static(b"x"));
    // A truncated batch, and one with a wrong magic, under D's keys.
    let mut good = Vec::new();
    Header {
        sender: 0xd,
        epoch: 1,
        seq: 0,
    }
    .emit(&[b"d".as_slice()], &mut good)
    .unwrap();
    store.insert(
        batch_key("net/", B, 0xd, 1, 0),
        Bytes::from(good[..good.len() - 3].to_vec()),
    );
    let mut magic = good.clone();
    magic[0] = b'X';
    store.insert(batch_key("net/", B, 0xd, 1, 1), Bytes::from(magic));
    // A valid batch whose header disagrees with its key (E's key, D's header).
    store.insert(batch_key("net/", B, 0xe, 1, 0), Bytes::from(good.clone()));
    a.send(B, &frames(&["after"])).await.unwrap();

    let got = b.poll().await.unwrap();
    assert_eq!(payloads(&got), [vec![&b"before"[..]], vec![b"after"]]);
    assert_eq!(
        b.stats()
            .rejected
            .load(std::sync::atomic::Ordering::Relaxed),
        5
    );
    assert!(store.keys().is_empty(), "all of it deleted");
    // Traffic goes on.
    a.send(B, &frames(&["later"])).await.unwrap();
    assert_eq!(payloads(&b.poll().await.unwrap()), [vec![&b"later"[..]]]);
}

#[tokio::test(start_paused = true)]
async fn a_missing_batch_is_waited_for_then_skipped() {
    let store = MemoryStore::new(LatencyModel::NONE, 1);
    let (a, b) = (link(&store, A, 1), link(&store, B, 1));
    for text in ["zero", "one", "two"] {
        a.send(B, &frames(&[text])).await.unwrap();
    }
    store
        .delete_many(&[batch_key("net/", B, A, 1, 1)])
        .await
        .unwrap();
    let got = b.poll().await.unwrap();
    assert_eq!(payloads(&got), [vec![&b"zero"[..]]], "waits for one");
    // Within the grace period a LIST still waits; after it, "one" is counted lost.
    tokio::time::advance(Duration::from_secs(11)).await;
    store.put(&bell_key("net/", B), Bytes::new()).await.unwrap(); // make the receiver list
    let got = b.poll().await.unwrap();
    assert_eq!(payloads(&got), [vec![&b"two"[..]]]);
    assert_eq!(b.stats().lost.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn an_outage_is_retried_through_and_nothing_is_lost() {
    let store = MemoryStore::new(LatencyModel::S3_STANDARD, 3);
    let (a, b) = (link(&store, A, 1), link(&store, B, 1));
    store.set_unavailable(true);
    let healer = tokio::spawn({
        let store = store.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            store.set_unavailable(false);
        }
    });
    // The send retries with backoff (no busy loop: a handful of tries in 10 s).
    a.send(B, &frames(&["through the outage"])).await.unwrap();
    healer.await.unwrap();
    let retries = a.stats().retries.load(std::sync::atomic::Ordering::Relaxed);
    assert!((3..=10).contains(&retries), "{retries} retries in 10 s");
    assert_eq!(
        payloads(&b.poll().await.unwrap()),
        [vec![&b"through the outage"[..]]]
    );
}

#[tokio::test(start_paused = true)]
async fn auto_lists_when_many_senders_are_active() {
    let store = MemoryStore::new(LatencyModel::NONE, 1);
    let b = link(&store, B, 1);
    let senders: Vec<_> = (0..12).map(|i| link(&store, 0x100 + i, 1)).collect();
    for s in &senders {
        s.send(B, &frames(&["hi"])).await.unwrap();
    }
    assert_eq!(b.poll().await.unwrap().len(), 12);
    let lists = calls(&b)[2];
    for s in &senders {
        s.send(B, &frames(&["again"])).await.unwrap();
    }
    assert_eq!(b.poll().await.unwrap().len(), 12);
    // Twelve probes would cost 13 GETs; a LIST is worth 12.5: it lists.
    assert_eq!(calls(&b)[2], lists + 1);

    let probing = S3Link::new(
        store.clone(),
        0xf,
        1,
        S3LinkConfig {
            prefix: "net/".into(),
            strategy: Strategy::Probe,
            ..S3LinkConfig::default()
        },
    );
    probing.poll().await.unwrap();
    probing.poll().await.unwrap();
    assert_eq!(
        probing.usage().calls("list"),
        1,
        "only the first poll lists"
    );
}

#[tokio::test(start_paused = true)]
async fn two_nodes_ping_pong_over_the_memory_store() {
    let store = MemoryStore::new(LatencyModel::S3_STANDARD, 5);
    let got_a = Arc::new(Mutex::new(Vec::new()));
    let got_b = Arc::new(Mutex::new(Vec::new()));
    let (tx_b, mut rx_b) = tokio::sync::mpsc::unbounded_channel();
    let node_a = Node::start(Arc::new(link(&store, A, 1)), NodeConfig::default(), {
        let got = Arc::clone(&got_a);
        move |r: Received| got.lock().unwrap().extend(r.frames)
    });
    let node_b = Node::start(Arc::new(link(&store, B, 1)), NodeConfig::default(), {
        let got = Arc::clone(&got_b);
        move |r: Received| {
            got.lock().unwrap().extend(r.frames.iter().cloned());
            tx_b.send(r.frames).unwrap();
        }
    });
    // B echoes whatever it gets.
    let echo = tokio::spawn({
        let node_b = node_b;
        async move {
            while let Some(frames) = rx_b.recv().await {
                for frame in frames {
                    node_b.send(A, frame).unwrap();
                }
            }
            node_b
        }
    });
    for i in 0..20u32 {
        node_a
            .send(B, Bytes::from(i.to_be_bytes().to_vec()))
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let expected: Vec<Bytes> = (0..20u32)
        .map(|i| Bytes::from(i.to_be_bytes().to_vec()))
        .collect();
    assert_eq!(*got_b.lock().unwrap(), expected);
    assert_eq!(
        *got_a.lock().unwrap(),
        expected,
        "every echo came back, in order"
    );
    node_a.shutdown().await;
    echo.abort();
}

#[tokio::test(start_paused = true)]
async fn calls_costs_and_outcomes_are_metrics() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use tunnels::link::metric_names;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let store = MemoryStore::new(LatencyModel::NONE, 1);
    let (a, b) =
        metrics::with_local_recorder(&recorder, || (link(&store, A, 1), link(&store, B, 1)));
    a.send(B, &frames(&["counted"])).await.unwrap();
    assert_eq!(b.poll().await.unwrap().len(), 1);

    let snapshot = snapshotter.snapshot().into_vec();
    let value = |name: &str, node: u64, label: Option<(&str, &str)>| {
        let node = format!("{node:016x}");
        snapshot
            .iter()
            .find(|(key, _, _, _)| {
                let key = key.key();
                key.name() == name
                    && key.labels().any(|l| l.key() == "node" && l.value() == node)
                    && label
                        .is_none_or(|(k, v)| key.labels().any(|l| l.key() == k && l.value() == v))
            })
            .map(|(_, _, _, value)| value)
            .unwrap_or_else(|| panic!("no {name} for {node}"))
    };
    // A: a batch and a bell; B: deletes its bell, lists, gets, deletes.
    assert_eq!(
        *value(metric_names::CALLS, A, Some(("kind", "put"))),
        DebugValue::Counter(2)
    );
    assert_eq!(
        *value(metric_names::CALLS, B, Some(("kind", "list"))),
        DebugValue::Counter(1)
    );
    assert_eq!(
        *value(metric_names::CALLS, B, Some(("kind", "delete"))),
        DebugValue::Counter(2)
    );
    assert_eq!(*value(metric_names::BELLS, A, None), DebugValue::Counter(1));
    assert_eq!(
        *value(metric_names::BATCHES, B, Some(("outcome", "delivered"))),
        DebugValue::Counter(1)
    );
    match value(metric_names::COST, A, None) {
        DebugValue::Gauge(dollars) => {
            assert!((dollars.into_inner() - 2.0 * 0.005 / 1_000.0).abs() < 1e-12)
        }
        other => panic!("not a gauge: {other:?}"),
    }
}

/// A hub's poll: 100 senders with 3 batches each. With 64 GETs at once (4 per sender), the poll takes a
/// fraction of the time one GET at a time takes, on S3's latency; either way every batch is
/// delivered once, each sender's in order.
#[tokio::test(start_paused = true)]
async fn a_poll_reads_many_senders_batches_at_once_and_in_order() {
    let mut took = Vec::new();
    for concurrent_gets in [1, 64] {
        let store = MemoryStore::new(LatencyModel::S3_STANDARD, 5);
        let hub = S3Link::new(
            store.clone(),
            B,
            1,
            S3LinkConfig {
                prefix: "net/".into(),
                concurrent_gets,
                ..S3LinkConfig::default()
            },
        );
        let senders: Vec<_> = (0..100).map(|i| link(&store, 0x100 + i, 1)).collect();
        for round in ["one", "two", "three"] {
            for s in &senders {
                s.send(B, &frames(&[round])).await.unwrap();
            }
        }
        let started = tokio::time::Instant::now();
        let received = hub.poll().await.unwrap();
        took.push(started.elapsed());
        assert_eq!(received.len(), 300, "concurrent_gets {concurrent_gets}");
        for s in &senders {
            let mine: Vec<_> = received.iter().filter(|r| r.sender == s.me()).collect();
            assert_eq!(
                mine.iter().map(|r| r.seq).collect::<Vec<_>>(),
                [0, 1, 2],
                "concurrent_gets {concurrent_gets}: sender {:x}",
                s.me()
            );
            assert_eq!(
                payloads(&mine.into_iter().cloned().collect::<Vec<_>>()),
                [vec![&b"one"[..]], vec![b"two"], vec![b"three"]]
            );
        }
        assert_eq!(calls(&hub)[1], 300, "one GET per batch");
        assert!(hub.poll().await.unwrap().is_empty());
        assert!(
            store
                .keys()
                .iter()
                .all(|k| !k.starts_with("net/000000000000000b/"))
        );
    }
    assert!(
        took[1] * 6 < took[0],
        "64 GETs at once: {:?}, one at a time: {:?}",
        took[1],
        took[0]
    );
}

/// A store whose GET of one key fails, once, with an error not retried.
#[derive(Clone)]
struct FailOnce {
    store: MemoryStore,
    key: Arc<Mutex<Option<String>>>,
}

impl ObjectStore for FailOnce {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), tunnels::link::StoreError> {
        self.store.put(key, body).await
    }
    async fn get(&self, key: &str) -> Result<Option<Bytes>, tunnels::link::StoreError> {
        let fail = {
            let mut failing = self.key.lock().unwrap();
            if failing.as_deref() == Some(key) {
                failing.take()
            } else {
                None
            }
        };
        match fail {
            Some(_) => Err(tunnels::link::StoreError::new(
                tunnels::link::StoreErrorKind::AccessDenied,
                "denied, once",
            )),
            None => self.store.get(key).await,
        }
    }
    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, tunnels::link::StoreError> {
        self.store.list(prefix, after, limit).await
    }
    async fn delete_many(&self, keys: &[String]) -> Result<(), tunnels::link::StoreError> {
        self.store.delete_many(keys).await
    }
}

/// One GET failing among many: the poll hands over what it read (the failing sender's
/// batches before the failure, every other sender's), and the next poll the rest, each
/// exactly once and in order.
#[tokio::test(start_paused = true)]
async fn a_get_that_fails_among_many_loses_nothing_and_reorders_nothing() {
    let memory = MemoryStore::new(LatencyModel::S3_STANDARD, 6);
    let failing = FailOnce {
        store: memory.clone(),
        key: Arc::default(),
    };
    let hub = S3Link::new(
        failing.clone(),
        B,
        1,
        S3LinkConfig {
            prefix: "net/".into(),
            ..S3LinkConfig::default()
        },
    );
    let senders: Vec<_> = (0..20).map(|i| link(&memory, 0x100 + i, 1)).collect();
    for round in ["one", "two", "three"] {
        for s in &senders {
            s.send(B, &frames(&[round])).await.unwrap();
        }
    }
    let victim = senders[7].me();
    *failing.key.lock().unwrap() = Some(batch_key("net/", B, victim, 1, 1));

    let first = hub.poll().await.unwrap();
    let of = |received: &[Received], sender| {
        received
            .iter()
            .filter(|r| r.sender == sender)
            .map(|r| r.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of(&first, victim),
        [0],
        "the victim's batch before the failure"
    );
    for s in senders.iter().filter(|s| s.me() != victim) {
        assert_eq!(of(&first, s.me()), [0, 1, 2]);
    }
    let second = hub.poll().await.unwrap();
    assert_eq!(second.len(), 2);
    assert_eq!(of(&second, victim), [1, 2], "the rest, in order, once");
    assert!(hub.poll().await.unwrap().is_empty());
}
