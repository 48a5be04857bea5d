//! The few object-store calls the S3 link needs, as a trait, and an in-memory store.
//!
//! The S3 link's logic (key layout, polling strategy, duplicates, gaps) is plain code over
//! [`ObjectStore`], so the same code runs against AWS, against local S3-compatible servers, and
//! in the cost simulation on [`MemoryStore`], whose latency follows a model fitted to published
//! S3 figures and whose calls are counted and priced.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;

/// What a store call failed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
}

/// The kinds of store failure the link reacts to differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// Slow down (S3's 503 SlowDown): retry later, more slowly.
    Throttled,
    /// The service failed or could not be reached (5xx, connection, timeout): retry.
    Unavailable,
    /// The bucket does not exist.
    NoSuchBucket,
    /// Credentials are missing or not allowed to do this.
    AccessDenied,
    /// Anything else; not retried.
    Other,
}

impl StoreError {
    /// An error of `kind` with a message for people.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            message: message.into(),
        }
    }

    /// What kind of failure.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            StoreErrorKind::Throttled | StoreErrorKind::Unavailable
        )
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            StoreErrorKind::Throttled => "throttled",
            StoreErrorKind::Unavailable => "store unavailable",
            StoreErrorKind::NoSuchBucket => "no such bucket",
            StoreErrorKind::AccessDenied => "access denied",
            StoreErrorKind::Other => "store error",
        };
        if self.message.is_empty() {
            f.write_str(what)
        } else {
            write!(f, "{what}: {}", self.message)
        }
    }
}

impl std::error::Error for StoreError {}

/// An object store: S3, or anything that behaves like it for these four calls.
///
/// Keys are listed in UTF-8 binary order, as S3 lists them.
pub trait ObjectStore: Send + Sync + 'static {
    /// Stores `body` under `key`, replacing what was there.
    fn put(&self, key: &str, body: Bytes) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The object under `key`, or `None` if there is none.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Bytes>, StoreError>> + Send;

    /// Up to `max_keys` keys that start with `prefix` and sort after `start_after`, in order.
    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Deletes `keys` (at most 1,000, as S3's DeleteObjects); missing keys are not an error.
    fn delete_many(&self, keys: &[String]) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The kinds of call, as they are billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    /// PutObject.
    Put,
    /// GetObject, found or not.
    Get,
    /// ListObjectsV2.
    List,
    /// DeleteObjects.
    Delete,
}

impl Call {
    /// Every kind, in the order of [`Calls::by_kind`].
    pub const ALL: [Call; 4] = [Call::Put, Call::Get, Call::List, Call::Delete];

    /// Lower-case name, for labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Call::Put => "put",
            Call::Get => "get",
            Call::List => "list",
            Call::Delete => "delete",
        }
    }
}

/// Calls made, by kind. Shared and updated atomically.
#[derive(Debug, Default)]
pub struct Calls {
    counts: [AtomicU64; 4],
}

impl Calls {
    /// Counts one call of `kind`.
    pub fn count(&self, kind: Call) {
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Calls of `kind` so far.
    pub fn get(&self, kind: Call) -> u64 {
        self.counts[kind as usize].load(Ordering::Relaxed)
    }

    /// All counts, in the order of [`Call::ALL`].
    pub fn by_kind(&self) -> [u64; 4] {
        Call::ALL.map(|kind| self.get(kind))
    }

    /// All calls.
    pub fn total(&self) -> u64 {
        self.by_kind().iter().sum()
    }
}

/// Request prices in dollars per 1,000 calls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    /// PutObject (and COPY, POST).
    pub put: f64,
    /// GetObject.
    pub get: f64,
    /// ListObjectsV2.
    pub list: f64,
    /// DeleteObjects.
    pub delete: f64,
}

impl Prices {
    /// S3 Standard in us-east-1, late 2026: PUT and LIST $0.005, GET $0.0004 per 1,000;
    /// DELETE free.
    pub const S3_STANDARD: Prices = Prices {
        put: 0.005,
        get: 0.0004,
        list: 0.005,
        delete: 0.0,
    };

    /// The price of one call of `kind`, in dollars.
    pub fn per_call(&self, kind: Call) -> f64 {
        let per_1k = match kind {
            Call::Put => self.put,
            Call::Get => self.get,
            Call::List => self.list,
            Call::Delete => self.delete,
        };
        per_1k / 1_000.0
    }

    /// What `calls` cost, in dollars.
    pub fn cost(&self, calls: &[u64; 4]) -> f64 {
        Call::ALL
            .iter()
            .zip(calls)
            .map(|(&kind, &n)| self.per_call(kind) * n as f64)
            .sum()
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
    rng: Mutex<u64>,
    calls: Calls,
    unavailable: AtomicBool,
}

impl MemoryStore {
    /// An empty store whose calls take the time `latency` draws, from a generator seeded with
    /// `seed` (the same seed, the same run).
    pub fn new(latency: LatencyModel, seed: u64) -> Self {
        MemoryStore {
            inner: Arc::new(MemoryInner {
                objects: Mutex::default(),
                latency,
                rng: Mutex::new(seed),
                calls: Calls::default(),
                unavailable: AtomicBool::new(false),
            }),
        }
    }

    /// Calls made so far, by kind, counted as they are billed (failed ones included).
    pub fn calls(&self) -> &Calls {
        &self.inner.calls
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

    /// Waits out a call's latency and counts it; fails if the store is unavailable.
    async fn call(&self, kind: Call) -> Result<(), StoreError> {
        self.inner.calls.count(kind);
        let z = self.normal();
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
        Ok(())
    }

    /// A standard normal deviate (Box-Muller over SplitMix64).
    fn normal(&self) -> f64 {
        let mut state = self
            .inner
            .rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut next = || {
            *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = *state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let (u1, u2) = (next(), next());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

impl ObjectStore for MemoryStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.call(Call::Put).await?;
        self.objects().insert(key.to_owned(), body);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        self.call(Call::Get).await?;
        Ok(self.objects().get(key).cloned())
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.call(Call::List).await?;
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
        self.call(Call::Delete).await?;
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
        assert_eq!(store.calls().by_kind(), [5, 1, 4, 1]);
        assert_eq!(store.calls().total(), 11);
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
        assert_eq!(store.calls().get(Call::Put), 2);
    }

    #[test]
    fn prices_s3_standard() {
        let p = Prices::S3_STANDARD;
        // Hoshino idle: 172,800 LISTs a day.
        assert!((p.cost(&[0, 0, 172_800, 0]) - 0.864).abs() < 1e-9);
        // A GET probe is 12.5 times cheaper than a LIST.
        assert!((p.per_call(Call::List) / p.per_call(Call::Get) - 12.5).abs() < 1e-9);
    }
}
