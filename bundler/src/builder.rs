//! Settings, named after Go's `support/bundler` so that its users find them.

use std::future::Future;
use std::hash::Hash;
use std::time::Duration;

use cardio::Budget;
use metrics::SharedString;

use crate::core::{Bundler, KeyedBundler};
use crate::delay::{MAX_DELAY, SharedDelay};
use crate::limits::ApiLimits;

/// Configures a [`Bundler`] or a [`KeyedBundler`]. Made by [`Bundler::builder`].
///
/// | setting | default | why |
/// |---|---|---|
/// | [`delay_threshold`](Builder::delay_threshold) | 1 s | Go's default: an item waits at most a second for company |
/// | [`count_threshold`](Builder::count_threshold) | 10 | Go's default |
/// | [`byte_threshold`](Builder::byte_threshold) | 1,000,000 | Go's default: about a megabyte per call |
/// | [`byte_limit`](Builder::byte_limit) | none (or the API's) | a bundle may exceed the threshold by its last item unless limited |
/// | [`buffered_byte_limit`](Builder::buffered_byte_limit) | 1,000,000,000 | Go's default: a gigabyte in memory at most |
/// | [`handler_limit`](Builder::handler_limit) | 1 | Go's default: bundles handled one at a time, in order |
/// | [`key_limit`](Builder::key_limit) | 1,024 | open bundles (keys) at once; the oldest is sent to make room |
/// | [`limits`](Builder::limits) | none | [`ApiLimits`] of the API the handler calls |
/// | [`budget`](Builder::budget) | none | at most so many handler calls per window |
/// | [`merge_when_busy`](Builder::merge_when_busy) | off | bundles go as they were cut, as in Go |
/// | [`one_call_per_key`](Builder::one_call_per_key) | off | a key's bundles may be handled at once |
/// | [`name`](Builder::name) | `"bundler"` | the `bundler` label on every metric |
///
/// Thresholds decide when a bundle is *worth* sending; limits decide when it *must* go. With a
/// budget, thresholds yield to it (a bundle keeps growing while no call is left) and limits do
/// not.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use bundler::{ApiLimits, Bundler};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let bundler = Bundler::builder()
///     .delay_threshold(Duration::from_millis(200))
///     .count_threshold(1_000)
///     .limits(ApiLimits::CLOUDWATCH_PUT_LOG_EVENTS)
///     .buffered_byte_limit(16 << 20)
///     .build(|events: Vec<String>| async move {
///         // one PutLogEvents call for all of `events`
/// #       drop(events);
///     });
/// bundler.add("hello".to_string(), 5).unwrap();
/// bundler.close().await;
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `.build(handler)` is called"]
pub struct Builder {
    delay_threshold: Duration,
    shared_delay: Option<SharedDelay>,
    count_threshold: usize,
    byte_threshold: usize,
    byte_limit: Option<usize>,
    buffered_byte_limit: usize,
    handler_limit: usize,
    key_limit: usize,
    limits: Option<ApiLimits>,
    budget: Option<Budget>,
    merge_when_busy: bool,
    one_call_per_key: bool,
    name: SharedString,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            delay_threshold: Duration::from_secs(1),
            shared_delay: None,
            count_threshold: 10,
            byte_threshold: 1_000_000,
            byte_limit: None,
            buffered_byte_limit: 1_000_000_000,
            handler_limit: 1,
            key_limit: 1_024,
            limits: None,
            budget: None,
            merge_when_busy: false,
            one_call_per_key: false,
            name: SharedString::const_str("bundler"),
        }
    }
}

/// Settings resolved for use: thresholds clamped to limits, limits merged with the API's.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) delay: SharedDelay,
    pub(crate) count_threshold: usize,
    pub(crate) byte_threshold: usize,
    /// Hard limits of one bundle.
    pub(crate) byte_limit: usize,
    pub(crate) count_limit: usize,
    /// The most one item may count.
    pub(crate) item_limit: usize,
    pub(crate) item_overhead: usize,
    pub(crate) buffered_byte_limit: usize,
    pub(crate) handler_limit: usize,
    pub(crate) key_limit: usize,
    pub(crate) budget: Option<Budget>,
    pub(crate) merge_when_busy: bool,
    pub(crate) one_call_per_key: bool,
    pub(crate) name: SharedString,
}

impl Builder {
    /// Sends a bundle this long after its first item arrived, however small it is. A delay
    /// beyond a century (`Duration::MAX`, say) is a century: deadlines are instants, which
    /// cannot hold more.
    pub fn delay_threshold(mut self, delay: Duration) -> Self {
        self.delay_threshold = delay.min(MAX_DELAY);
        self
    }

    /// The delay threshold as a [`SharedDelay`], to change while the bundler runs (a node
    /// that sends at once while data flows in bulk, and waits for company otherwise). It
    /// replaces [`delay_threshold`](Builder::delay_threshold).
    pub fn shared_delay(mut self, delay: SharedDelay) -> Self {
        self.shared_delay = Some(delay);
        self
    }

    /// Sends a bundle once it holds this many items.
    ///
    /// # Panics
    ///
    /// Panics if `count` is zero.
    pub fn count_threshold(mut self, count: usize) -> Self {
        assert!(count > 0, "bundler: `count_threshold` must not be zero");
        self.count_threshold = count;
        self
    }

    /// Sends a bundle once its items count this many bytes (in the unit sizes are given in).
    ///
    /// # Panics
    ///
    /// Panics if `bytes` is zero.
    pub fn byte_threshold(mut self, bytes: usize) -> Self {
        assert!(bytes > 0, "bundler: `byte_threshold` must not be zero");
        self.byte_threshold = bytes;
        self
    }

    /// The most bytes one bundle may count: an item that would take a bundle past it starts the
    /// next one, and an item larger than it is refused. With [`limits`](Builder::limits), the
    /// smaller of the two applies.
    ///
    /// # Panics
    ///
    /// Panics if `bytes` is zero.
    pub fn byte_limit(mut self, bytes: usize) -> Self {
        assert!(bytes > 0, "bundler: `byte_limit` must not be zero");
        self.byte_limit = Some(bytes);
        self
    }

    /// The most bytes accepted but not yet handled, across all bundles and keys: the bound of
    /// the bundler's memory and its backpressure. `add` refuses what would exceed it;
    /// `add_wait` waits until handlers finish and free room.
    ///
    /// # Panics
    ///
    /// Panics if `bytes` is zero.
    pub fn buffered_byte_limit(mut self, bytes: usize) -> Self {
        assert!(bytes > 0, "bundler: `buffered_byte_limit` must not be zero");
        self.buffered_byte_limit = bytes;
        self
    }

    /// How many handler calls may run at once. With 1, bundles are handled strictly in the
    /// order they were sent.
    ///
    /// # Panics
    ///
    /// Panics if `handlers` is zero.
    pub fn handler_limit(mut self, handlers: usize) -> Self {
        assert!(handlers > 0, "bundler: `handler_limit` must not be zero");
        self.handler_limit = handlers;
        self
    }

    /// How many keys may have an open bundle at once in a [`KeyedBundler`]. A new key beyond it
    /// sends the oldest open bundle first.
    ///
    /// # Panics
    ///
    /// Panics if `keys` is zero.
    pub fn key_limit(mut self, keys: usize) -> Self {
        assert!(keys > 0, "bundler: `key_limit` must not be zero");
        self.key_limit = keys;
        self
    }

    /// Keeps every bundle within what one call of an API accepts, counting each item's
    /// overhead. See [`ApiLimits`].
    pub fn limits(mut self, limits: ApiLimits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// At most so many handler calls per window (a token bucket, see [`cardio::Budget`]).
    ///
    /// While the budget has no call left, bundles that reach a threshold keep growing toward
    /// the limits instead of being sent, and bundles already waiting for the same key are
    /// merged. When even full bundles cannot keep up, buffered bytes reach
    /// `buffered_byte_limit`: `add` reports overflow and `add_wait` waits. Nothing is dropped,
    /// and `flush` and `close` wait for the budget too.
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// While every handler call slot is taken, merges bundles that wait for the same key (in
    /// order, within the limits), so that the next call carries all that piled up. Default off,
    /// which keeps Go's behaviour (bundles go as they were cut).
    ///
    /// Turn it on when a call's cost matters more than the shape of bundles: under a load
    /// higher than the handler keeps up with, bundles then grow with the load instead of
    /// queueing, and latency stays at about one call.
    pub fn merge_when_busy(mut self, merge: bool) -> Self {
        self.merge_when_busy = merge;
        self
    }

    /// At most one handler call per key at a time: each key's bundles are handled one after
    /// another, in order, while other keys' go beside them, up to `handler_limit` in all.
    /// Default off: with `handler_limit` above 1, two bundles of one key may be handled at
    /// once, and finish in either order.
    ///
    /// Turn it on when a key is a destination whose order matters (a peer, a log stream, a
    /// partition) and there are many of them: a slow call to one key no longer holds the
    /// others back, and none is ever reordered. The bundles that wait for a busy key are
    /// merged (in order, within the limits) when its call ends, so a busy key's next call
    /// carries all that piled up.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use bundler::Bundler;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let bundler = Bundler::builder()
    ///     .delay_threshold(Duration::from_millis(20))
    ///     .handler_limit(64) // up to 64 destinations at once
    ///     .one_call_per_key(true) // and each one's calls in order
    ///     .build_keyed(|peer: u64, packets: Vec<Vec<u8>>| async move {
    ///         // one call to `peer` carrying `packets`
    /// #       drop((peer, packets));
    ///     });
    /// bundler.add(1, vec![0u8; 100], 100).unwrap();
    /// bundler.add(2, vec![0u8; 100], 100).unwrap();
    /// bundler.close().await;
    /// # }
    /// ```
    pub fn one_call_per_key(mut self, one: bool) -> Self {
        self.one_call_per_key = one;
        self
    }

    /// Names the bundler in metrics (label `bundler`). Default `"bundler"`.
    pub fn name(mut self, name: impl Into<SharedString>) -> Self {
        self.name = name.into();
        self
    }

    /// Starts a bundler whose `handler` gets each bundle as a `Vec<T>`.
    ///
    /// # Panics
    ///
    /// Panics if called outside a Tokio runtime: the bundler runs its dispatcher and each
    /// handler call as Tokio tasks.
    pub fn build<T, H, F>(self, handler: H) -> Bundler<T>
    where
        T: Send + 'static,
        H: Fn(Vec<T>) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        Bundler::from_keyed(self.build_keyed(move |(), bundle| handler(bundle)))
    }

    /// Starts a bundler with one open bundle per key, whose `handler` gets the key with each
    /// bundle.
    ///
    /// # Panics
    ///
    /// Panics if called outside a Tokio runtime.
    pub fn build_keyed<K, T, H, F>(self, handler: H) -> KeyedBundler<K, T>
    where
        K: Hash + Eq + Clone + Send + 'static,
        T: Send + 'static,
        H: Fn(K, Vec<T>) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        KeyedBundler::start(self.config(), handler)
    }

    fn config(self) -> Config {
        let (api_bytes, count_limit, api_item, item_overhead) = match self.limits {
            Some(l) => (
                l.max_bundle_bytes(),
                l.max_items(),
                l.max_item_bytes(),
                l.item_overhead(),
            ),
            None => (usize::MAX, usize::MAX, usize::MAX, 0),
        };
        let byte_limit = self.byte_limit.unwrap_or(usize::MAX).min(api_bytes);
        Config {
            delay: (self.shared_delay).unwrap_or_else(|| SharedDelay::new(self.delay_threshold)),
            // A threshold past a limit would never be reached: the limit sends first.
            count_threshold: self.count_threshold.min(count_limit),
            byte_threshold: self.byte_threshold.min(byte_limit),
            byte_limit,
            count_limit,
            item_limit: api_item.min(byte_limit).min(self.buffered_byte_limit),
            item_overhead,
            // Tokio's semaphore holds at most `usize::MAX >> 3` permits.
            buffered_byte_limit: self
                .buffered_byte_limit
                .min(tokio::sync::Semaphore::MAX_PERMITS),
            handler_limit: self.handler_limit,
            key_limit: self.key_limit,
            budget: self.budget,
            merge_when_busy: self.merge_when_busy,
            one_call_per_key: self.one_call_per_key,
            name: self.name,
        }
    }
}
