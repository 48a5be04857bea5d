//! An S3 in memory, for the cost simulation and tests: a latency model fitted to published S3
//! figures, calls counted as they are billed, a switch to make it unavailable, and (when asked
//! for) S3's request rates per prefix.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::store::{Call, ObjectStore};
use crate::link::{Meter, StoreError, StoreErrorKind, Usage};

/// S3's request rates per prefix, as the service applies them: above them it answers
/// `503 SlowDown`, which the link retries with backoff ([`StoreErrorKind::Throttled`]).
///
/// AWS publishes 3,500 PUT/COPY/POST/DELETE and 5,500 GET/HEAD requests a second per
/// partitioned prefix; LIST is counted with GET here (it is a GET on the bucket). A bucket
/// starts with few partitions and splits them as load grows over minutes, so the model is the
/// conservative one, S3 before it scales out: every key of one destination node, its inbox
/// `{prefix}{dest}/` and its bell `{prefix}{dest}.bell`, is one prefix. The key layout
/// ([`keys`](super::keys)) puts each destination under its own prefix: load spreads over one
/// prefix per receiving node, and the hot one is the inbox of a node many senders talk to (a
/// hub's). A prefix is the key after the network's prefix up to the first `/` or `.`; a LIST
/// counts against the prefix it lists, a DeleteObjects against its first key's.
///
/// Rates are counted in slots of one second of Tokio's clock since the store was made; the
/// first request over the rate in a slot and every one after it are throttled. A throttled
/// request is billed as a normal call (AWS's pricing does not say 503s are free; the
/// simulation errs towards cost) and counted ([`MemoryStore::throttled`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// The network's key prefix ("" or ending in `/`), not part of a partition's name.
    pub prefix: String,
    /// PUT, DELETE (and COPY, POST) requests a second per prefix.
    pub puts_per_sec: u32,
    /// GET, HEAD and LIST requests a second per prefix.
    pub gets_per_sec: u32,
}

impl RateLimits {
    /// S3's published rates, for a network under `prefix`.
    pub fn s3(prefix: impl Into<String>) -> Self {
        RateLimits {
            prefix: prefix.into(),
            puts_per_sec: 3_500,
            gets_per_sec: 5_500,
        }
    }

    /// The partition `key` (or a LIST's prefix) counts against.
    pub fn partition<'k>(&self, key: &'k str) -> &'k str {
        let rest = key.strip_prefix(self.prefix.as_str()).unwrap_or(key);
        let end = rest.find(['/', '.']).unwrap_or(rest.len());
        &rest[..end]
    }
}

/// A prefix's requests, PUT-class and GET-class: in the current one-second slot, and the most
/// in any slot so far (throttled ones included: what was asked of the prefix).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixRate {
    slot: u64,
    now: [u32; 2],
    /// The most PUT-class requests in one second.
    pub peak_puts: u32,
    /// The most GET-class requests (LIST included) in one second.
    pub peak_gets: u32,
    /// Requests throttled, both classes.
    pub throttled: u64,
}

#[derive(Debug)]
struct Rates {
    limits: RateLimits,
    start: tokio::time::Instant,
    prefixes: HashMap<String, PrefixRate>,
    throttled: u64,
    /// Throttled requests by kind, in the order of [`Call::ALL`].
    by_kind: [u64; 4],
}

impl Rates {
    /// Counts a request of `kind` to `key`'s prefix; false if it is over the rate.
    fn admit(&mut self, kind: Call, key: &str) -> bool {
        let slot = tokio::time::Instant::now()
            .duration_since(self.start)
            .as_secs();
        let (class, limit) = match kind {
            Call::Put | Call::Delete => (0, self.limits.puts_per_sec),
            Call::Get | Call::List => (1, self.limits.gets_per_sec),
        };
        let partition = self.limits.partition(key);
        let rate = match self.prefixes.get_mut(partition) {
            Some(rate) => rate,
            None => self.prefixes.entry(partition.to_owned()).or_default(),
        };
        if rate.slot != slot {
            rate.slot = slot;
            rate.now = [0; 2];
        }
        rate.now[class] += 1;
        rate.peak_puts = rate.peak_puts.max(rate.now[0]);
        rate.peak_gets = rate.peak_gets.max(rate.now[1]);
        let admitted = rate.now[class] <= limit;
        if !admitted {
            rate.throttled += 1;
            self.throttled += 1;
            self.by_kind[kind as usize] += 1;
        }
        admitted
    }
}

/// How long each call takes: a log-normal distribution per call kind, given by its median and
/// 99th percentile.
///
/// The defaults follow AWS's performance guidance for small objects in the same region: tens of
/// milliseconds at the median, a tail several times longer. A log-normal is the usual fit for
/// request latency: never negative, and skewed to the right.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyModel {
    /// Per kind, in the order of [`Call::ALL`]: (median, 99th percentile).
    pub per_call: [(Duration, Duration); 4],
}

impl LatencyModel {
    /// S3 Standard from within the region: PUT 30 ms median and 120 ms p99, GET 20/80 ms,
    /// LIST 30/120 ms, DELETE 20/80 ms.
    pub const S3_STANDARD: LatencyModel = LatencyModel {
        per_call: [
            (Duration::from_millis(30), Duration::from_millis(120)),
            (Duration::from_millis(20), Duration::from_millis(80)),
            (Duration::from_millis(30), Duration::from_millis(120)),
            (Duration::from_millis(20), Duration::from_millis(80)),
        ],
    };

    /// No latency at all.
    pub const NONE: LatencyModel = LatencyModel {
        per_call: [(Duration::ZERO, Duration::ZERO); 4],
    };

    /// A draw for a call of `kind`, given a standard normal deviate `z`.
    fn sample(&self, kind: Call, z: f64) -> Duration {
        let (median, p99) = self.per_call[kind as usize];
        if median.is_zero() {
            return Duration::ZERO;
        }
        // p99 = median * exp(2.326 * sigma)
        let sigma = (p99.as_secs_f64() / median.as_secs_f64()).ln() / 2.326;
        // Capped at 20 sigmas' worth of tail, far past anything a run draws.
        Duration::from_secs_f64(median.as_secs_f64() * (sigma * z.clamp(-20.0, 20.0)).exp())
    }
}

/// An object store in memory, with a latency model, call accounting and a switch to make it
/// unavailable. Cloning shares the store.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<MemoryInner>,
}

#[derive(Debug)]
struct MemoryInner {
    objects: Mutex<BTreeMap<String, Bytes>>,
    latency: LatencyModel,
    rng: Mutex<ChaCha8Rng>,
    meter: Meter,
    unavailable: AtomicBool,
    rates: Option<Mutex<Rates>>,
}

impl MemoryStore {
    /// An empty store whose calls take the time `latency` draws, from a generator seeded with
    /// `seed` (the same seed, the same run). It has no request rates: see
    /// [`with_rate_limits`](MemoryStore::with_rate_limits).
    pub fn new(latency: LatencyModel, seed: u64) -> Self {
        Self::build(latency, seed, None)
    }

    /// The same, throttling each prefix's requests above `limits` as S3 does (`503 SlowDown`,
    /// retryable), and counting each prefix's peak rate.
    pub fn with_rate_limits(latency: LatencyModel, seed: u64, limits: RateLimits) -> Self {
        let rates = Rates {
            limits,
            start: tokio::time::Instant::now(),
            prefixes: HashMap::new(),
            throttled: 0,
            by_kind: [0; 4],
        };
        Self::build(latency, seed, Some(Mutex::new(rates)))
    }

    fn build(latency: LatencyModel, seed: u64, rates: Option<Mutex<Rates>>) -> Self {
        MemoryStore {
            inner: Arc::new(MemoryInner {
                objects: Mutex::default(),
                latency,
                rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
                meter: Meter::new(Call::NAMES),
                unavailable: AtomicBool::new(false),
                rates,
            }),
        }
    }

    /// Requests throttled for a prefix's rate (billed, and counted in [`usage`](Self::usage)
    /// too); always 0 without rate limits.
    pub fn throttled(&self) -> u64 {
        self.rates().map_or(0, |r| r.throttled)
    }

    /// The throttled requests by kind, as a [`Usage`] to price (no bytes).
    pub fn throttled_usage(&self) -> Usage {
        let mut usage = Usage::new();
        let by_kind = self.rates().map_or([0; 4], |r| r.by_kind);
        for kind in Call::ALL {
            usage.add(kind.as_str(), by_kind[kind as usize], 0);
        }
        usage
    }

    /// Each prefix's requests so far (peaks a second, throttled), by prefix; empty without rate
    /// limits.
    pub fn prefix_rates(&self) -> HashMap<String, PrefixRate> {
        self.rates().map(|r| r.prefixes.clone()).unwrap_or_default()
    }

    fn rates(&self) -> Option<std::sync::MutexGuard<'_, Rates>> {
        self.inner
            .rates
            .as_ref()
            .map(|r| r.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Calls made so far, by kind, counted as they are billed (failed ones included), and the
    /// bytes of the objects put and got.
    pub fn usage(&self) -> Usage {
        self.inner.meter.usage()
    }

    /// Makes every call fail as unavailable (a 5xx or a network outage) until set back.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.inner.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// Stores an object directly, with no latency and no accounting (for tests that drop
    /// foreign objects into an inbox).
    pub fn insert(&self, key: impl Into<String>, body: Bytes) {
        self.objects().insert(key.into(), body);
    }

    /// The keys stored, in order.
    pub fn keys(&self) -> Vec<String> {
        self.objects().keys().cloned().collect()
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Bytes>> {
        self.inner
            .objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits out a call's latency and counts it; fails if the store is unavailable, or if the
    /// call is over its prefix's rate (`key`: the object's key, or the LIST's prefix).
    async fn call(&self, kind: Call, key: &str, bytes: usize) -> Result<(), StoreError> {
        self.inner.meter.record(kind as usize, bytes as u64);
        let admitted = self.rates().is_none_or(|mut r| r.admit(kind, key));
        let z: f64 = self
            .inner
            .rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sample(StandardNormal);
        let latency = self.inner.latency.sample(kind, z);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if self.inner.unavailable.load(Ordering::SeqCst) {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "memory store is switched off",
            ));
        }
        if !admitted {
            return Err(StoreError::new(
                StoreErrorKind::Throttled,
                "SlowDown: please reduce your request rate (the prefix's rate)",
            ));
        }
        Ok(())
    }
}

impl ObjectStore for MemoryStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.call(Call::Put, key, body.len()).await?;
        self.objects().insert(key.to_owned(), body);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        self.call(Call::Get, key, 0).await?;
        let body = self.objects().get(key).cloned();
        if let Some(body) = &body {
            self.inner
                .meter
                .record_bytes(Call::Get as usize, body.len() as u64);
        }
        Ok(body)
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.call(Call::List, prefix, 0).await?;
        let objects = self.objects();
        let from = match start_after {
            Some(after) if after >= prefix => std::ops::Bound::Excluded(after.to_owned()),
            _ => std::ops::Bound::Included(prefix.to_owned()),
        };
        Ok(objects
            .range((from, std::ops::Bound::Unbounded))
            .map(|(key, _)| key)
            .take_while(|key| key.starts_with(prefix))
            .take(max_keys.min(1_000))
            .cloned()
            .collect())
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), StoreError> {
        let first = keys.first().map_or("", String::as_str);
        self.call(Call::Delete, first, 0).await?;
        let mut objects = self.objects();
        for key in keys {
            objects.remove(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn lists_in_order_after_a_key_within_a_prefix() {
        let store = MemoryStore::new(LatencyModel::NONE, 1);
        for key in ["a/2", "a/1", "b/1", "a/3", "a0"] {
            store.put(key, Bytes::new()).await.unwrap();
        }
        assert_eq!(
            store.list("a/", None, 10).await.unwrap(),
            ["a/1", "a/2", "a/3"]
        );
        assert_eq!(
            store.list("a/", Some("a/1"), 10).await.unwrap(),
            ["a/2", "a/3"]
        );
        assert_eq!(store.list("a/", Some("a/2"), 1).await.unwrap(), ["a/3"]);
        assert_eq!(store.list("a/", Some("0"), 1).await.unwrap(), ["a/1"]);
        store
            .delete_many(&["a/1".into(), "zz".into()])
            .await
            .unwrap();
        assert_eq!(store.get("a/1").await.unwrap(), None);
        let calls = Call::ALL.map(|kind| store.usage().calls(kind.as_str()));
        assert_eq!(calls, [5, 1, 4, 1]);
        assert_eq!(store.usage().total_calls(), 11);
    }

    #[tokio::test(start_paused = true)]
    async fn latency_follows_the_model() {
        let store = MemoryStore::new(LatencyModel::S3_STANDARD, 7);
        let mut took = Vec::new();
        for _ in 0..2_000 {
            let start = tokio::time::Instant::now();
            store.get("x").await.unwrap();
            took.push(start.elapsed());
        }
        took.sort();
        let median = took[1_000].as_secs_f64();
        let p99 = took[1_980].as_secs_f64();
        assert!((0.017..0.023).contains(&median), "median {median}");
        assert!((0.065..0.100).contains(&p99), "p99 {p99}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unavailable_store_fails_retryably_and_still_bills() {
        let store = MemoryStore::new(LatencyModel::NONE, 1);
        store.set_unavailable(true);
        let err = store.put("k", Bytes::new()).await.unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(
            err.to_string(),
            "store unavailable: memory store is switched off"
        );
        store.set_unavailable(false);
        store.put("k", Bytes::new()).await.unwrap();
        assert_eq!(store.usage().calls("put"), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_prefix_over_its_rate_is_throttled_and_others_are_not() {
        let store = MemoryStore::with_rate_limits(LatencyModel::NONE, 1, RateLimits::s3("net/"));
        let hub = "net/0000000000000001";
        for i in 0..3_500 {
            store
                .put(&format!("{hub}/{i}"), Bytes::new())
                .await
                .unwrap();
        }
        // The 3,501st PUT in the second, to the same prefix (its bell counts against it).
        let err = store.put(&format!("{hub}.bell"), Bytes::new()).await;
        let err = err.unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Throttled);
        assert!(err.is_retryable(), "the link must retry it");
        // Another prefix has a rate of its own, and GETs theirs.
        store
            .put("net/0000000000000002/x", Bytes::new())
            .await
            .unwrap();
        store.get(&format!("{hub}/0")).await.unwrap();
        assert_eq!(
            store.list(&format!("{hub}/"), None, 1).await.unwrap().len(),
            1
        );
        assert_eq!(store.throttled(), 1);
        assert_eq!(store.throttled_usage().calls("put"), 1);
        // Billed like any call.
        assert_eq!(store.usage().calls("put"), 3_502);
        let rates = store.prefix_rates();
        let hot = rates["0000000000000001"];
        assert_eq!((hot.peak_puts, hot.peak_gets, hot.throttled), (3_501, 2, 1));
        assert_eq!(rates["0000000000000002"].peak_puts, 1);
        // The next second starts afresh.
        tokio::time::sleep(Duration::from_secs(1)).await;
        store
            .put(&format!("{hub}.bell"), Bytes::new())
            .await
            .unwrap();
        assert_eq!(store.throttled(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn stores_have_no_rates_unless_asked() {
        let store = MemoryStore::new(LatencyModel::NONE, 1);
        for i in 0..4_000 {
            store.put(&format!("a/{i}"), Bytes::new()).await.unwrap();
        }
        assert_eq!(store.throttled(), 0);
        assert!(store.prefix_rates().is_empty());
    }
}
