//! The bundler's state and the producer side: `add`, `add_wait`, `flush`, `close`.
//!
//! Invariants (all under `Inner::state`'s lock):
//! - Every accepted item is in exactly one place: an `open` bundle, a `ready` bundle, or a
//!   handler call in flight. Its bytes stay taken from `room` until that handler call is over.
//! - Every bundle has an id, increasing in the order bundles are opened; `unfinished` holds the
//!   ids of bundles sealed and not yet handled. A bundle's items were all added after any item
//!   of a bundle with a smaller id was, for the same key, which is what `flush` relies on.
//! - `opened` lists open bundles in opening order (so in deadline order, since the delay is the
//!   same for all). Entries whose bundle was sealed since are stale and skipped lazily.
//! - `due` lists open bundles that passed a threshold while the budget had no call left; they
//!   go, oldest first, with the next calls the budget allows.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{Notify, Semaphore, TryAcquireError};
use tokio::time::Instant;

use crate::builder::{Builder, Config};
use crate::error::{AddError, AddErrorKind};
use crate::metrics::{Metrics, Reason};

type KeyMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type KeySet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// The outcome of asking for room for an item of `cost` bytes.
enum Room {
    /// The room was taken.
    Taken(usize),
    /// Not enough room now.
    Short(usize),
}

/// Batches items into bundles by count, bytes and delay, and hands each bundle to a handler.
///
/// The Rust successor of Go's `support/bundler`, built with [`Bundler::builder`]:
///
/// - [`add`](Bundler::add) never blocks; it hands the item back with an [`AddError`] when the
///   item can never fit, when there is no room now, or after close.
/// - [`add_wait`](Bundler::add_wait) waits for room, first come first served.
/// - [`flush`](Bundler::flush) returns once every item added before it was handled.
/// - [`close`](Bundler::close) stops accepting, hands every accepted item to the handler and
///   waits for the handler calls to finish.
///
/// A bundle goes to the handler when it reaches `count_threshold` or `byte_threshold`, when the
/// next item would break `byte_limit` (or the [`ApiLimits`](crate::ApiLimits)), or
/// `delay_threshold` after its first item. With `handler_limit = 1` (the default) bundles are
/// handled one at a time, in order. A handler that panics loses its own bundle, nothing else:
/// the bundler counts the panic and goes on.
///
/// `Bundler` is a cheap handle: clone it for each producer.
///
/// # Dropping without `close`
///
/// When the last handle is dropped, the bundler closes itself in the background: every accepted
/// item still goes to the handler, as long as the Tokio runtime runs. Nothing waits for that,
/// so call [`close`](Bundler::close) to know when it is done.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let bundler = bundler::Bundler::builder()
///     .count_threshold(3)
///     .delay_threshold(Duration::from_millis(100))
///     .build(|bundle: Vec<u32>| async move {
///         println!("one call for {bundle:?}");
///     });
/// for i in 0..8 {
///     bundler.add(i, 4).unwrap(); // [0, 1, 2] and [3, 4, 5] go at once
/// }
/// bundler.close().await; // [6, 7] goes now, not after the delay
/// # }
/// ```
pub struct Bundler<T> {
    keyed: KeyedBundler<(), T>,
}

/// A [`Bundler`] that keeps one open bundle per key, and hands the key to the handler with each
/// bundle: a tunnel bundles per destination, a log shipper per stream.
///
/// `buffered_byte_limit` is shared by all keys, and at most `key_limit` keys have an open
/// bundle at once (a new key beyond it sends the oldest open bundle first).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let bundler = bundler::Bundler::builder()
///     .count_threshold(100)
///     .build_keyed(|destination: &'static str, packets: Vec<Vec<u8>>| async move {
///         println!("{} packets to {destination}", packets.len());
///     });
/// bundler.add("node-a", vec![0u8; 1280], 1280).unwrap();
/// bundler.add("node-b", vec![0u8; 80], 80).unwrap();
/// bundler.close().await; // one call per destination
/// # }
/// ```
pub struct KeyedBundler<K, T> {
    guard: Arc<CloseOnDrop<K, T>>,
}

/// Closes the bundler when the last handle goes.
struct CloseOnDrop<K, T> {
    inner: Arc<Inner<K, T>>,
}

impl<K, T> Drop for CloseOnDrop<K, T> {
    fn drop(&mut self) {
        self.inner.begin_close();
    }
}

pub(crate) struct Inner<K, T> {
    pub(crate) config: Config,
    /// Bytes that may still be accepted: `buffered_byte_limit` minus what is buffered. A FIFO
    /// semaphore, so `add_wait` callers get room in the order they asked, and cancel safe.
    pub(crate) room: Semaphore,
    state: Mutex<State<K, T>>,
    /// Wakes the dispatcher: a bundle was sealed, the first open bundle appeared, a handler
    /// finished, or closing began.
    pub(crate) dispatcher: Notify,
    /// Wakes `flush` and `close`: a handler call finished.
    pub(crate) progress: Notify,
    pub(crate) metrics: Metrics,
}

pub(crate) struct State<K, T> {
    pub(crate) open: KeyMap<K, Open<T>>,
    pub(crate) opened: VecDeque<Opened<K>>,
    pub(crate) due: VecDeque<(u64, K)>,
    pub(crate) ready: VecDeque<Sealed<K, T>>,
    pub(crate) unfinished: BTreeSet<u64>,
    next_id: u64,
    /// Whether the budget (if any) had a call left when the dispatcher last looked.
    pub(crate) call_available: bool,
    pub(crate) in_flight: usize,
    /// Keys with a handler call running, with `one_call_per_key`.
    pub(crate) busy: KeySet<K>,
    pub(crate) closed: bool,
}

pub(crate) struct Open<T> {
    id: u64,
    items: Vec<T>,
    bytes: usize,
    opened_at: Instant,
    /// Passed a threshold while the budget had no call left; listed in `due`.
    due: bool,
}

pub(crate) struct Opened<K> {
    pub(crate) deadline: Instant,
    pub(crate) id: u64,
    pub(crate) key: K,
}

/// A bundle on its way to the handler.
pub(crate) struct Sealed<K, T> {
    pub(crate) key: K,
    pub(crate) items: Vec<T>,
    pub(crate) bytes: usize,
    pub(crate) opened_at: Instant,
    pub(crate) reason: Reason,
    pub(crate) id: u64,
    /// Ids of bundles merged into this one while the budget was short.
    pub(crate) merged: Vec<u64>,
}

impl<K: Hash + Eq + Clone, T> State<K, T> {
    fn new() -> Self {
        State {
            open: KeyMap::default(),
            opened: VecDeque::new(),
            due: VecDeque::new(),
            ready: VecDeque::new(),
            unfinished: BTreeSet::new(),
            next_id: 0,
            call_available: true,
            in_flight: 0,
            busy: KeySet::default(),
            closed: false,
        }
    }

    pub(crate) fn is_open(&self, id: u64, key: &K) -> bool {
        self.open.get(key).is_some_and(|open| open.id == id)
    }

    /// Moves the open bundle of `key`, if any, to the ready queue.
    pub(crate) fn seal(&mut self, key: &K, reason: Reason) {
        if let Some(open) = self.open.remove(key) {
            self.push_ready(key.clone(), open, reason);
        }
    }

    /// Seals the oldest open bundle, to make room for a new key.
    fn seal_oldest(&mut self) {
        while let Some(oldest) = self.opened.pop_front() {
            if self.is_open(oldest.id, &oldest.key) {
                self.seal(&oldest.key, Reason::Limit);
                return;
            }
        }
    }

    /// Seals the oldest bundle that passed a threshold while the budget was short. Returns
    /// whether there was one.
    pub(crate) fn seal_next_due(&mut self) -> bool {
        while let Some((id, key)) = self.due.pop_front() {
            if self.is_open(id, &key) {
                self.seal(&key, Reason::Budget);
                return true;
            }
        }
        false
    }

    /// Marks an open bundle as waiting for a call from the budget.
    pub(crate) fn mark_due(&mut self, id: u64, key: &K) {
        if let Some(open) = self.open.get_mut(key)
            && open.id == id
            && !open.due
        {
            open.due = true;
            self.due.push_back((id, key.clone()));
        }
    }
}

impl<K, T> Inner<K, T> {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State<K, T>> {
        // Nothing panics while holding the lock; handlers never run under it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn buffered_bytes(&self) -> usize {
        self.config.buffered_byte_limit - self.room.available_permits()
    }

    fn begin_close(&self) {
        {
            let mut state = self.lock();
            if state.closed {
                return;
            }
            state.closed = true;
            self.room.close();
            state.seal_all(Reason::Close);
        }
        self.dispatcher.notify_one();
    }

    /// Waits until `done` holds, re-checking after each finished handler call.
    async fn wait_until(&self, done: impl Fn(&State<K, T>) -> bool) {
        loop {
            let mut progress = pin!(self.progress.notified());
            // Enabled before the check, so a call finishing in between still wakes us.
            progress.as_mut().enable();
            if done(&self.lock()) {
                return;
            }
            progress.await;
        }
    }
}

impl<K, T> State<K, T> {
    fn push_ready(&mut self, key: K, open: Open<T>, reason: Reason) {
        self.unfinished.insert(open.id);
        self.ready.push_back(Sealed {
            key,
            items: open.items,
            bytes: open.bytes,
            opened_at: open.opened_at,
            reason,
            id: open.id,
            merged: Vec::new(),
        });
    }

    /// Seals every open bundle, oldest first.
    fn seal_all(&mut self, reason: Reason) {
        let mut all: Vec<_> = self.open.drain().collect();
        all.sort_unstable_by_key(|(_, open)| open.id);
        for (key, open) in all {
            self.push_ready(key, open, reason);
        }
        self.opened.clear();
        self.due.clear();
    }
}

impl<K, T> KeyedBundler<K, T>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Send + 'static,
{
    pub(crate) fn start<H, F>(config: Config, handler: H) -> Self
    where
        H: Fn(K, Vec<T>) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let inner = Arc::new(Inner {
            room: Semaphore::new(config.buffered_byte_limit),
            metrics: Metrics::register(&config.name),
            config,
            state: Mutex::new(State::new()),
            dispatcher: Notify::new(),
            progress: Notify::new(),
        });
        tokio::spawn(crate::dispatch::run(Arc::clone(&inner), handler));
        KeyedBundler {
            guard: Arc::new(CloseOnDrop { inner }),
        }
    }

    fn inner(&self) -> &Inner<K, T> {
        &self.guard.inner
    }

    /// Adds `item`, which counts `size` bytes (in whatever unit the thresholds and limits use;
    /// the API's per-item overhead is added), to the open bundle of `key`. Never blocks.
    ///
    /// # Errors
    ///
    /// Hands the item back in an [`AddError`] when it is larger than any bundle may be
    /// ([`AddErrorKind::Oversized`]), when accepting it would exceed `buffered_byte_limit`
    /// ([`AddErrorKind::Overflow`]), or after close ([`AddErrorKind::Closed`]).
    pub fn add(&self, key: K, item: T, size: usize) -> Result<(), AddError<T>> {
        let inner = self.inner();
        match inner.take_room(size) {
            Ok(Room::Taken(cost)) => inner.insert(key, item, cost),
            Ok(Room::Short(cost)) => {
                let limit = inner.config.buffered_byte_limit;
                let kind = AddErrorKind::Overflow { size: cost, limit };
                Err(AddError::new(kind, item))
            }
            Err(kind) => Err(AddError::new(kind, item)),
        }
    }

    /// Adds `item` to the open bundle of `key`, waiting until there is room for it. Callers
    /// get room in the order they asked.
    ///
    /// # Errors
    ///
    /// Hands the item back at once when it can never fit ([`AddErrorKind::Oversized`]), and
    /// when the bundler is closed, before or while waiting ([`AddErrorKind::Closed`]).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future before it completes gives back the room it had
    /// reserved, and the item (which was not accepted) is dropped with it.
    pub async fn add_wait(&self, key: K, item: T, size: usize) -> Result<(), AddError<T>> {
        let inner = self.inner();
        let cost = match inner.take_room(size) {
            Ok(Room::Taken(cost)) => cost,
            Ok(Room::Short(cost)) => {
                // Boxed: the semaphore's waiter is large, and would otherwise be moved with
                // every `add_wait` future, the many that never wait included.
                let wait = Box::pin(inner.room.acquire_many(cost as u32));
                match wait.await {
                    Ok(permit) => permit.forget(),
                    Err(_closed) => return Err(AddError::new(AddErrorKind::Closed, item)),
                }
                cost
            }
            Err(kind) => return Err(AddError::new(kind, item)),
        };
        inner.insert(key, item, cost)
    }

    /// Sends every open bundle and waits until every item added before this call was handled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the bundles are sent when `flush` is first polled, whether or not it is
    /// awaited to the end.
    pub async fn flush(&self) {
        let inner = self.inner();
        let target = {
            let mut state = inner.lock();
            state.seal_all(Reason::Manual);
            state.next_id
        };
        inner.dispatcher.notify_one();
        inner
            .wait_until(|state| state.unfinished.first().is_none_or(|id| *id >= target))
            .await;
    }

    /// Stops accepting items, hands every accepted item to the handler, and waits until every
    /// handler call has finished. Later calls to `add` fail with [`AddErrorKind::Closed`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: closing begins when `close` is first polled and completes in the
    /// background if the future is dropped.
    pub async fn close(&self) {
        let inner = self.inner();
        inner.begin_close();
        inner
            .wait_until(|state| state.unfinished.is_empty() && state.open.is_empty())
            .await;
    }

    /// Bytes accepted and not yet handled, overheads included.
    pub fn buffered_bytes(&self) -> usize {
        self.inner().buffered_bytes()
    }

    /// Keys that have an open bundle.
    pub fn open_keys(&self) -> usize {
        self.inner().lock().open.len()
    }

    /// Whether the bundler was closed.
    pub fn is_closed(&self) -> bool {
        self.inner().lock().closed
    }
}

impl<K, T> Inner<K, T>
where
    K: Hash + Eq + Clone,
{
    /// Takes room for an item of `size` now if there is some, without queueing. Fair, because
    /// Tokio's semaphore hands freed permits to queued waiters first, so none are free while
    /// anyone waits. Fails when the item can never fit, or after close.
    fn take_room(&self, size: usize) -> Result<Room, AddErrorKind> {
        let cost = size.saturating_add(self.config.item_overhead);
        // Also the bound of a semaphore's `acquire_many`, so `cost as u32` below is exact.
        let limit = self.config.item_limit.min(u32::MAX as usize);
        if cost > limit {
            return Err(AddErrorKind::Oversized { size: cost, limit });
        }
        match self.room.try_acquire_many(cost as u32) {
            Ok(permit) => {
                permit.forget();
                Ok(Room::Taken(cost))
            }
            Err(TryAcquireError::Closed) => Err(AddErrorKind::Closed),
            Err(TryAcquireError::NoPermits) => {
                self.relieve_pressure();
                Ok(Room::Short(cost))
            }
        }
    }

    /// A producer found no room. If nothing is on its way to the handler, all buffered bytes
    /// sit in open bundles that would free nothing until their delay passes: send the oldest
    /// now (a `limit` flush, the limit being `buffered_byte_limit`) instead of stalling.
    fn relieve_pressure(&self) {
        let mut state = self.lock();
        if state.ready.is_empty() && !state.open.is_empty() {
            state.seal_oldest();
            drop(state);
            self.dispatcher.notify_one();
        }
    }

    /// Puts an item, whose `cost` bytes of room were taken, into its key's open bundle.
    fn insert(&self, key: K, item: T, cost: usize) -> Result<(), AddError<T>> {
        let config = &self.config;
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.closed {
            drop(guard);
            self.room.add_permits(cost);
            return Err(AddError::new(AddErrorKind::Closed, item));
        }
        let mut wake = false;
        // The common case in one hash lookup: the key's bundle is open and the item fits.
        let (id, items, bytes) = match state.open.get_mut(&key) {
            Some(open)
                if open.items.len() < config.count_limit
                    && open.bytes.saturating_add(cost) <= config.byte_limit =>
            {
                open.items.push(item);
                open.bytes += cost;
                (open.id, open.items.len(), open.bytes)
            }
            _ => {
                wake = self.open_bundle(state, &key);
                let open = state.open.get_mut(&key).expect("just opened");
                open.items.push(item);
                open.bytes += cost;
                (open.id, open.items.len(), open.bytes)
            }
        };
        let reason = if items >= config.count_limit || bytes >= config.byte_limit {
            Some(Reason::Limit)
        } else if items >= config.count_threshold {
            Some(Reason::Count)
        } else if bytes >= config.byte_threshold {
            Some(Reason::Bytes)
        } else {
            None
        };
        match reason {
            // Limits always send; thresholds only when the budget has a call for it.
            Some(reason) if reason == Reason::Limit || state.call_available => {
                state.seal(&key, reason);
                wake = true;
            }
            Some(_) => state.mark_due(id, &key),
            None => {}
        }
        drop(guard);
        if wake {
            self.dispatcher.notify_one();
        }
        Ok(())
    }

    /// Opens a new bundle for `key`, sending the one it has (which the next item would take
    /// past a limit) and, at `key_limit`, the oldest open one. Returns whether the dispatcher
    /// needs waking.
    fn open_bundle(&self, state: &mut State<K, T>, key: &K) -> bool {
        let config = &self.config;
        let mut wake = false;
        if state.open.contains_key(key) {
            state.seal(key, Reason::Limit);
            wake = true;
        } else if state.open.len() >= config.key_limit {
            state.seal_oldest();
            wake = true;
        }
        let id = state.next_id;
        state.next_id += 1;
        let now = Instant::now();
        // Later bundles have later deadlines: only the first needs the dispatcher's timer.
        wake |= state.opened.is_empty();
        state.opened.push_back(Opened {
            deadline: now + config.delay_threshold,
            id,
            key: key.clone(),
        });
        let open = Open {
            id,
            items: Vec::with_capacity(config.count_threshold.min(4096)),
            bytes: 0,
            opened_at: now,
            due: false,
        };
        state.open.insert(key.clone(), open);
        wake
    }
}

impl<K, T> Clone for KeyedBundler<K, T> {
    fn clone(&self) -> Self {
        KeyedBundler {
            guard: Arc::clone(&self.guard),
        }
    }
}

impl<K, T> std::fmt::Debug for KeyedBundler<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = &self.guard.inner;
        f.debug_struct("KeyedBundler")
            .field("config", &inner.config)
            .field("buffered_bytes", &inner.buffered_bytes())
            .finish_non_exhaustive()
    }
}

impl Bundler<()> {
    /// Starts configuring a bundler. See [`Builder`] for the settings and their defaults; the
    /// item type comes from the handler given to [`Builder::build`].
    ///
    /// (This lives on `Bundler<()>` only so that `Bundler::builder()` needs no type annotation.)
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl<T: Send + 'static> Bundler<T> {
    pub(crate) fn from_keyed(keyed: KeyedBundler<(), T>) -> Self {
        Bundler { keyed }
    }

    /// Adds `item`, which counts `size` bytes, to the open bundle. Never blocks.
    ///
    /// # Errors
    ///
    /// Hands the item back in an [`AddError`] when it is larger than any bundle may be, when
    /// accepting it would exceed `buffered_byte_limit`, or after close.
    pub fn add(&self, item: T, size: usize) -> Result<(), AddError<T>> {
        self.keyed.add((), item, size)
    }

    /// Adds `item`, waiting until there is room for it; first come, first served.
    ///
    /// # Errors
    ///
    /// Hands the item back at once when it can never fit, and when the bundler is closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future gives back the room it had reserved.
    pub async fn add_wait(&self, item: T, size: usize) -> Result<(), AddError<T>> {
        self.keyed.add_wait((), item, size).await
    }

    /// Sends the open bundle and waits until every item added before this call was handled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the bundle is sent when `flush` is first polled.
    pub async fn flush(&self) {
        self.keyed.flush().await;
    }

    /// Stops accepting items, hands every accepted item to the handler, and waits until every
    /// handler call has finished.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: closing completes in the background if the future is dropped.
    pub async fn close(&self) {
        self.keyed.close().await;
    }

    /// Bytes accepted and not yet handled, overheads included.
    pub fn buffered_bytes(&self) -> usize {
        self.keyed.buffered_bytes()
    }

    /// Whether the bundler was closed.
    pub fn is_closed(&self) -> bool {
        self.keyed.is_closed()
    }
}

impl<T> Clone for Bundler<T> {
    fn clone(&self) -> Self {
        Bundler {
            keyed: self.keyed.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Bundler<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = &self.keyed.guard.inner;
        f.debug_struct("Bundler")
            .field("config", &inner.config)
            .field("buffered_bytes", &inner.buffered_bytes())
            .finish_non_exhaustive()
    }
}
