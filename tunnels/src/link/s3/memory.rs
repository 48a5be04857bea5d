//! An S3 in memory, for the cost simulation and tests: a latency model fitted to published S3
//! figures, calls counted as they are billed, and a switch to make it unavailable.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::store::{Call, ObjectStore};
use crate::link::{Meter, StoreError, StoreErrorKind, Usage};

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
}

impl MemoryStore {
    /// An empty store whose calls take the time `latency` draws, from a generator seeded with
    /// `seed` (the same seed, the same run).
    pub fn new(latency: LatencyModel, seed: u64) -> Self {
        MemoryStore {
            inner: Arc::new(MemoryInner {
                objects: Mutex::default(),
                latency,
                rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
                meter: Meter::new(Call::NAMES),
                unavailable: AtomicBool::new(false),
            }),
        }
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

    /// Waits out a call's latency and counts it; fails if the store is unavailable.
    async fn call(&self, kind: Call, bytes: usize) -> Result<(), StoreError> {
        self.inner.meter.record(kind as usize, bytes as u64);
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
        Ok(())
    }
}

impl ObjectStore for MemoryStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.call(Call::Put, body.len()).await?;
        self.objects().insert(key.to_owned(), body);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        self.call(Call::Get, 0).await?;
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
        self.call(Call::List, 0).await?;
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
        self.call(Call::Delete, 0).await?;
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
}
