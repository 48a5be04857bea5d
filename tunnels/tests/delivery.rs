//! The delivery contract of the S3 link, over a store that misbehaves: every batch that landed
//! is delivered exactly once, in order per (sender, epoch), and a batch is counted lost only when
//! it never landed. The two ways a batch was lost before the sequencer (a failed GET in a listing
//! poll, a late first batch) are regression tests here; a model-based property test drives a
//! store that fails, delays, reorders and duplicates calls at random, with polls cancelled and
//! receivers and senders restarting.
//!
//! Everything runs on Tokio's paused clock: a simulated hour takes milliseconds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;
use tunnels::link::s3::{
    LatencyModel, MemoryStore, ObjectStore, S3Link, S3LinkConfig, Strategy, batch_key,
};
use tunnels::link::{RetryPolicy, StoreError, StoreErrorKind};
use tunnels::{Link, Received};

const A: u64 = 0xa;
const B: u64 = 0xb;
const C: u64 = 0xc;
const PREFIX: &str = "net/";

/// What the chaos store does to calls, as probabilities.
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    /// A call fails retryably (503, timeout) without effect.
    fail: f64,
    /// A call fails for good (not retried) without effect.
    hard_fail: f64,
    /// A PUT lands up to `late` later and fails on the client (a timeout that hid success).
    land_late: f64,
    /// A PUT lands, succeeds, and lands again up to `late` later (a retried request).
    duplicate: f64,
}

/// A store that misbehaves at random, and remembers when each key first landed.
#[derive(Debug, Clone)]
struct ChaosStore {
    inner: MemoryStore,
    state: Arc<Mutex<ChaosState>>,
}

#[derive(Debug)]
struct ChaosState {
    rng: ChaCha8Rng,
    faults: Faults,
    late: Duration,
    /// GETs of these keys fail once, for good.
    fail_get_once: HashSet<String>,
    /// PUTs of these keys are held back (land later, when released).
    held: HashMap<String, Bytes>,
    hold: HashSet<String>,
    landed: HashMap<String, Instant>,
}

enum Fate {
    Normal,
    Fail(StoreErrorKind),
    LandLate(Duration),
    Duplicate(Duration),
}

impl ChaosStore {
    fn new(seed: u64, faults: Faults, latency: LatencyModel) -> ChaosStore {
        ChaosStore {
            inner: MemoryStore::new(latency, seed),
            state: Arc::new(Mutex::new(ChaosState {
                rng: ChaCha8Rng::seed_from_u64(seed),
                faults,
                late: Duration::from_secs(2),
                fail_get_once: HashSet::new(),
                held: HashMap::new(),
                hold: HashSet::new(),
                landed: HashMap::new(),
            })),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ChaosState> {
        self.state.lock().unwrap()
    }

    fn set_faults(&self, faults: Faults) {
        self.state().faults = faults;
    }

    fn fate(&self, put: bool) -> Fate {
        let mut state = self.state();
        let f = state.faults;
        let late = state.late;
        let r: f64 = state.rng.random();
        let delay = late.mul_f64(state.rng.random());
        if r < f.fail {
            Fate::Fail(StoreErrorKind::Unavailable)
        } else if r < f.fail + f.hard_fail {
            Fate::Fail(StoreErrorKind::Other)
        } else if put && r < f.fail + f.hard_fail + f.land_late {
            Fate::LandLate(delay)
        } else if put && r < f.fail + f.hard_fail + f.land_late + f.duplicate {
            Fate::Duplicate(delay)
        } else {
            Fate::Normal
        }
    }

    fn land(&self, key: &str, body: Bytes) {
        if key.ends_with(".bell") {
            self.inner.insert(key, body);
            return;
        }
        self.state()
            .landed
            .entry(key.to_owned())
            .or_insert_with(Instant::now);
        self.inner.insert(key, body);
    }

    fn land_later(&self, key: &str, body: Bytes, after: Duration) {
        let store = self.clone();
        let key = key.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            store.land(&key, body);
        });
    }

    /// Lands what was held back.
    fn release(&self) {
        let held: Vec<_> = self.state().held.drain().collect();
        for (key, body) in held {
            self.land(&key, body);
        }
    }

    fn landed(&self) -> HashMap<String, Instant> {
        self.state().landed.clone()
    }
}

fn failure(kind: StoreErrorKind) -> StoreError {
    StoreError::new(kind, "chaos")
}

impl ObjectStore for ChaosStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        // The call's latency and billing first, as the service's.
        self.inner.get("").await?;
        if self.state().hold.remove(key) {
            self.state().held.insert(key.to_owned(), body);
            return Ok(());
        }
        match self.fate(true) {
            Fate::Normal => self.land(key, body),
            Fate::Fail(kind) => return Err(failure(kind)),
            Fate::LandLate(after) => {
                self.land_later(key, body, after);
                return Err(failure(StoreErrorKind::Unavailable));
            }
            Fate::Duplicate(after) => {
                self.land(key, body.clone());
                self.land_later(key, body, after);
            }
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        if self.state().fail_get_once.remove(key) {
            return Err(failure(StoreErrorKind::Other));
        }
        if let Fate::Fail(kind) = self.fate(false) {
            return Err(failure(kind));
        }
        self.inner.get(key).await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> Result<Vec<String>, StoreError> {
        if let Fate::Fail(kind) = self.fate(false) {
            return Err(failure(kind));
        }
        self.inner.list(prefix, start_after, max_keys).await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), StoreError> {
        if let Fate::Fail(kind) = self.fate(false) {
            return Err(failure(kind));
        }
        self.inner.delete_many(keys).await
    }
}

fn config(strategy: Strategy) -> S3LinkConfig {
    S3LinkConfig {
        prefix: PREFIX.into(),
        strategy,
        // Sends give up within 3 s, and late objects land within 2 s: everything that lands
        // does so well within the 10 s grace period, so none of it may be counted lost.
        retry: RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            window: Duration::from_secs(3),
        },
        gap_grace: Duration::from_secs(10),
        ..S3LinkConfig::default()
    }
}

fn link(store: &ChaosStore, me: u64, epoch: u64, strategy: Strategy) -> S3Link<ChaosStore> {
    S3Link::new(store.clone(), me, epoch, config(strategy))
}

fn frame(text: &str) -> Vec<Bytes> {
    vec![Bytes::copy_from_slice(text.as_bytes())]
}

fn texts(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .flat_map(|r| &r.frames)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
}

/// Polls until `n` frames came or a simulated minute passed.
async fn poll_for(link: &S3Link<ChaosStore>, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    let until = Instant::now() + Duration::from_secs(60);
    while got.len() < n && Instant::now() < until {
        if let Ok(batches) = link.poll().await {
            got.extend(texts(&batches));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    got
}

#[tokio::test(start_paused = true)]
async fn a_failed_get_in_a_listing_poll_loses_nothing() {
    let store = ChaosStore::new(1, Faults::default(), LatencyModel::NONE);
    let (a, b) = (
        link(&store, A, 1, Strategy::List),
        link(&store, B, 1, Strategy::List),
    );
    store
        .state()
        .fail_get_once
        .insert(batch_key(PREFIX, B, A, 1, 1));
    for n in 0..4 {
        a.send(B, &frame(&n.to_string())).await.unwrap();
    }
    // The first poll takes 0, then the GET of 1 fails: 1 stays, and is not a duplicate later.
    let first = texts(&b.poll().await.unwrap());
    assert_eq!(first, ["0"]);
    let rest = poll_for(&b, 3).await;
    assert_eq!(rest, ["1", "2", "3"]);
    assert_eq!(b.stats().lost.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(
        b.stats()
            .duplicates
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

async fn late_first_batch(strategy: Strategy) {
    let store = ChaosStore::new(1, Faults::default(), LatencyModel::NONE);
    let (a, b) = (link(&store, A, 1, strategy), link(&store, B, 1, strategy));
    // The receiver knows A already (an earlier life), so that a probe would look for it.
    let a0 = link(&store, A, 0, strategy);
    a0.send(B, &frame("earlier life")).await.unwrap();
    assert_eq!(texts(&b.poll().await.unwrap()), ["earlier life"]);
    // Batch 0 of the new life lands after batches 1 and 2 (a PUT that timed out on the client
    // but completed).
    store.state().hold.insert(batch_key(PREFIX, B, A, 1, 0));
    for n in [10, 11, 12] {
        a.send(B, &frame(&n.to_string())).await.unwrap();
    }
    for _ in 0..10 {
        let early = texts(&b.poll().await.unwrap());
        assert!(early.is_empty(), "nothing before 10: {early:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    store.release();
    assert_eq!(poll_for(&b, 3).await, ["10", "11", "12"]);
}

#[tokio::test(start_paused = true)]
async fn a_late_first_batch_is_waited_for_when_listing() {
    late_first_batch(Strategy::List).await;
}

#[tokio::test(start_paused = true)]
async fn a_late_first_batch_is_waited_for_when_probing() {
    late_first_batch(Strategy::Probe).await;
}

#[tokio::test(start_paused = true)]
async fn a_restarted_receiver_delivers_nothing_twice_and_counts_nothing_lost() {
    let store = ChaosStore::new(1, Faults::default(), LatencyModel::NONE);
    let a = link(&store, A, 1, Strategy::Auto);
    let b1 = link(&store, B, 1, Strategy::Auto);
    for n in 0..3 {
        a.send(B, &frame(&n.to_string())).await.unwrap();
    }
    assert_eq!(poll_for(&b1, 3).await, ["0", "1", "2"]);
    drop(b1);
    let b2 = link(&store, B, 1, Strategy::Auto);
    a.send(B, &frame("3")).await.unwrap();
    // It waits out the grace period for 0, 1 and 2 (its previous life took them), then goes on.
    let started = Instant::now();
    assert_eq!(poll_for(&b2, 1).await, ["3"]);
    assert!(started.elapsed() >= Duration::from_secs(10));
    let stats = b2.stats();
    assert_eq!(stats.skipped.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(stats.lost.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn a_poll_cancelled_at_any_point_loses_nothing_and_duplicates_nothing() {
    // Cancel the first poll after 0, 5, 10, ... ms: before, during and after each of its calls.
    for cancel_after in (0..200).step_by(5) {
        let store = ChaosStore::new(3, Faults::default(), LatencyModel::S3_STANDARD);
        let (a, b) = (
            link(&store, A, 1, Strategy::Auto),
            link(&store, B, 1, Strategy::Auto),
        );
        a.send(B, &frame("once")).await.unwrap();
        let mut got = Vec::new();
        if let Ok(Ok(batches)) =
            tokio::time::timeout(Duration::from_millis(cancel_after), b.poll()).await
        {
            got.extend(texts(&batches));
        }
        for _ in 0..5 {
            got.extend(texts(&b.poll().await.unwrap()));
        }
        assert_eq!(got, ["once"], "cancelled after {cancel_after} ms");
    }
}

/// One scripted run of the model: what was sent, what landed, what was delivered.
#[derive(Debug, Default)]
struct Run {
    /// Contents of sends that returned Ok.
    acknowledged: HashSet<String>,
    /// Deliveries in order: (receiver life, sender, epoch, seq, frame).
    delivered: Vec<(u32, u64, u64, u64, String)>,
    /// Batches counted lost and skipped, over the receiver's lives.
    lost: u64,
    skipped: u64,
    receiver_restarts: u32,
}

/// Senders A and C send to B at random times, several sends in flight at once (so PUTs land
/// out of order), A restarting (a new epoch) halfway; B polls on its own schedule, some polls
/// cancelled part-way, restarting now and then if `restarts`. Then the chaos stops and B drains
/// the inbox.
async fn scripted(
    seed: u64,
    faults: Faults,
    strategy: Strategy,
    restarts: bool,
) -> (Run, ChaosStore) {
    let store = ChaosStore::new(seed, faults, LatencyModel::S3_STANDARD);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    let mut senders = Vec::new();
    for (node, lives) in [(A, 2u64), (C, 1)] {
        for epoch in 1..=lives {
            let link = Arc::new(link(&store, node, epoch, strategy));
            let count = rng.random_range(3..25);
            let start = Duration::from_secs(30 * (epoch - 1));
            let mut at = start;
            for n in 0..count {
                at += Duration::from_millis(rng.random_range(0..3_000));
                let (link, acknowledged) = (Arc::clone(&link), Arc::clone(&acknowledged));
                let text = format!("{node:x}/{epoch}/{n}");
                senders.push(tokio::spawn(async move {
                    tokio::time::sleep(at).await;
                    if link.send(B, &frame(&text)).await.is_ok() {
                        acknowledged.lock().unwrap().insert(text);
                    }
                }));
            }
        }
    }

    let mut run = Run::default();
    let mut receiver = link(&store, B, 1, strategy);
    let collect = |run: &mut Run, receiver: &S3Link<ChaosStore>, batches: Vec<Received>| {
        let _ = receiver;
        for batch in batches {
            for f in &batch.frames {
                run.delivered.push((
                    run.receiver_restarts,
                    batch.sender,
                    batch.epoch,
                    batch.seq,
                    String::from_utf8_lossy(f).into_owned(),
                ));
            }
        }
    };
    let retire = |run: &mut Run, receiver: &S3Link<ChaosStore>| {
        use std::sync::atomic::Ordering::Relaxed;
        run.lost += receiver.stats().lost.load(Relaxed);
        run.skipped += receiver.stats().skipped.load(Relaxed);
    };
    let busy_until = Instant::now() + Duration::from_secs(90);
    while Instant::now() < busy_until {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..1_500))).await;
        if rng.random_bool(0.2) {
            let cancel = Duration::from_millis(rng.random_range(0..150));
            if let Ok(Ok(batches)) = tokio::time::timeout(cancel, receiver.poll()).await {
                collect(&mut run, &receiver, batches);
            }
            // What a cancelled poll read is handed over by the next one: poll again before a
            // restart may drop it.
            continue;
        }
        if let Ok(batches) = receiver.poll().await {
            collect(&mut run, &receiver, batches);
        }
        if restarts && rng.random_bool(0.05) {
            retire(&mut run, &receiver);
            receiver = link(&store, B, 1, strategy);
            run.receiver_restarts += 1;
        }
    }
    for sender in senders {
        sender.await.unwrap();
    }
    // The chaos stops; late objects land; B drains its inbox (an hour on covers the hourly
    // LIST that finds a sender whose bell never rang).
    store.set_faults(Faults::default());
    tokio::time::sleep(Duration::from_secs(5)).await;
    for phase in 0..2 {
        let until = Instant::now() + Duration::from_secs(120);
        while Instant::now() < until {
            if let Ok(batches) = receiver.poll().await {
                collect(&mut run, &receiver, batches);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if phase == 0 {
            tokio::time::sleep(Duration::from_secs(3_600)).await;
        }
    }
    retire(&mut run, &receiver);
    run.acknowledged = acknowledged.lock().unwrap().clone();
    (run, store)
}

fn check(run: &Run, store: &ChaosStore) -> Result<(), TestCaseError> {
    // In order per (sender, epoch), none twice, over all of the receiver's lives.
    let mut streams: BTreeMap<(u32, u64, u64), Vec<u64>> = BTreeMap::new();
    let mut frames: HashMap<String, u32> = HashMap::new();
    for (life, sender, epoch, seq, text) in &run.delivered {
        let seqs = streams.entry((*life, *sender, *epoch)).or_default();
        prop_assert!(
            seqs.last().is_none_or(|last| last < seq),
            "life {life}, {sender:x}/{epoch}: {seq} after {seqs:?}"
        );
        seqs.push(*seq);
        if let Some(earlier) = frames.insert(text.clone(), *life) {
            prop_assert!(false, "{text} delivered twice (lives {earlier} and {life})");
        }
        prop_assert!(
            text.starts_with(&format!("{sender:x}/{epoch}/")),
            "{text} delivered as {sender:x}/{epoch}"
        );
    }
    let mut delivered: BTreeMap<(u64, u64), Vec<u64>> = BTreeMap::new();
    for (&(_, sender, epoch), seqs) in &streams {
        let all = delivered.entry((sender, epoch)).or_default();
        all.extend(seqs);
        all.sort();
        all.dedup();
    }
    let streams = delivered;
    // Every acknowledged send was delivered.
    for text in &run.acknowledged {
        prop_assert!(
            frames.contains_key(text),
            "{text} was acknowledged, never delivered"
        );
    }
    // Every batch that landed was delivered (all landed within the grace period); what is
    // counted lost never landed.
    let landed = store.landed();
    let mut never_landed = 0;
    for (&(sender, epoch), seqs) in &streams {
        let max = *seqs.last().expect("a stream has deliveries");
        for seq in 0..=max {
            let key = batch_key(PREFIX, B, sender, epoch, seq);
            if !landed.contains_key(&key) {
                never_landed += 1;
            }
        }
    }
    for key in landed.keys() {
        let rest = &key[PREFIX.len() + 17..];
        let mut parts = rest.split('/').map(|p| u64::from_str_radix(p, 16).unwrap());
        let (sender, epoch, seq) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        prop_assert!(
            streams
                .get(&(sender, epoch))
                .is_some_and(|seqs| seqs.contains(&seq)),
            "{sender:x}/{epoch}/{seq} landed and was never delivered"
        );
    }
    // A receiver cannot tell "never landed" from "my previous life took it" for the batches
    // before the first one it meets of a stream: those count as skipped, not lost.
    prop_assert!(
        run.lost <= never_landed,
        "lost {} > never landed {never_landed}",
        run.lost
    );
    if run.receiver_restarts == 0 {
        prop_assert_eq!(run.lost + run.skipped, never_landed);
    } else {
        prop_assert!(run.lost + run.skipped >= never_landed);
    }
    Ok(())
}

fn strategy() -> impl proptest::strategy::Strategy<Value = Strategy> {
    prop_oneof![
        Just(Strategy::Auto),
        Just(Strategy::List),
        Just(Strategy::Probe)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn every_batch_that_landed_is_delivered_once_in_order(
        seed in any::<u64>(),
        fail in 0.0..0.3f64,
        hard_fail in 0.0..0.1f64,
        land_late in 0.0..0.2f64,
        duplicate in 0.0..0.2f64,
        strategy in strategy(),
        restarts in any::<bool>(),
    ) {
        // A receiver that restarts cannot know what its previous life took, so a copy of a batch
        // that lands after that life deleted the original (a retried PUT whose first attempt
        // came late) is new to it (see the sequencer's docs). Restarts are tested without such
        // copies; a running receiver is tested with them.
        let (land_late, duplicate) = if restarts { (0.0, 0.0) } else { (land_late, duplicate) };
        let faults = Faults { fail, hard_fail, land_late, duplicate };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let (run, store) = runtime.block_on(scripted(seed, faults, strategy, restarts));
        check(&run, &store)?;
    }
}
