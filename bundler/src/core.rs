//! The bundler's state and the producer side: `add`, `add_wait`, `flush`, `close`.
//!
//! Invariants (all under `Inner::state`'s lock):
//! - Every accepted item is in exactly one place: an `open` bundle, a `ready` bundle, or a
//!   handler call in flight. Its bytes stay taken from `room` until that handler call is over.
//!   Room is also taken ahead of use, as credit: `Inner::credit` for items that go straight
//!   into their bundles, a lane's for the items it stages. Credit is not buffered, and goes
//!   back to `room` whenever a producer runs short, and on close.
//! - Every bundle has an id, increasing in the order bundles are opened; `unfinished` holds the
//!   ids of bundles sealed and not yet handled. A bundle's items reached the state after every
//!   item of a bundle with a smaller id did, for the same key (an item staged in a lane reaches
//!   it when the lane moves, so it may land in a newer bundle than items another handle added
//!   after it). `flush` relies on this: it moves every lane's items first, then seals.
//! - `opened` lists open bundles in deadline order. That is opening order, except that items
//!   moved from a lane (see `lane.rs`) date their bundle from when they were added, which may
//!   be earlier: such an entry is put in its place, and if the bundle was open already, it
//!   gets a second, earlier entry (see `schedule`). Entries whose bundle was sealed since are
//!   stale and skipped lazily.
//! - `due` lists open bundles that passed a threshold while the budget had no call left; they
//!   go, oldest first, with the next calls the budget allows.
//!
//! Locks are taken in one order: a lane's, then the state's; the list of lanes is taken with
//! nothing else and released before any lane is locked, except by `buffered_bytes`, which
//! takes it under the state's lock and nothing after it.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::{Future, poll_fn};
use std::hash::Hash;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

use tokio::sync::{Notify, Semaphore, TryAcquireError};
use tokio::time::Instant;

use crate::builder::{Builder, Config};
use crate::error::{AddError, AddErrorKind};
use crate::lane::{GRANT, Lane, LaneState, Lanes, STAGE, STAGE_MAX};
use crate::metrics::{Metrics, Reason};

type KeyMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type KeySet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// What became of an item a producer tried to add without waiting.
enum Added<K, T> {
    /// It is in its bundle, or staged in the producer's lane.
    Yes,
    /// No room for it now; nothing was taken.
    Short(K, T),
    /// The bundler is closed.
    Closed(T),
}

impl<K, T> Added<K, T> {
    /// Why the semaphore had no room for the item.
    fn refused(err: TryAcquireError, key: K, item: T) -> Self {
        match err {
            TryAcquireError::Closed => Added::Closed(item),
            TryAcquireError::NoPermits => Added::Short(key, item),
        }
    }
}

/// `Inner::watch` while the dispatcher is looking at the lanes and the state.
pub(crate) const LOOKING: u64 = 0;
/// `Inner::watch` while the dispatcher waits with no timer.
const NO_TIMER: u64 = u64::MAX;

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
/// `Bundler` is a cheap handle: clone it for each producer. Items added through one handle
/// reach the handler in the order they were added (with `handler_limit = 1`), whichever thread
/// adds them; items added through different handles may interleave either way. Each handle has
/// a staging buffer of its own, which it fills while another thread holds the bundler's lock,
/// so that producers on different threads do not take turns at that lock item by item: a
/// handle per producer is also the fast way. Clone once per producer, not per item: a clone
/// registers its buffer with the bundler, and its drop moves what it staged.
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
/// Like [`Bundler`], a cheap handle to clone for each producer: the items one handle adds to
/// a key reach the handler in that order when calls of the key go one at a time
/// (`handler_limit = 1` or [`one_call_per_key`](Builder::one_call_per_key)).
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
    /// This handle's staging buffer.
    lane: Arc<Lane<K, T>>,
}

/// Closes the bundler when the last handle goes.
struct CloseOnDrop<K, T> {
    inner: Arc<Inner<K, T>>,
    /// `Inner::begin_close` and `Inner::retire`, taken where `K`'s bounds are known, so that
    /// the handle types need none.
    close: fn(&Inner<K, T>),
    retire: Retire<K, T>,
}

/// `Inner::retire`, for a handle's lane.
type Retire<K, T> = fn(&Inner<K, T>, &Arc<Lane<K, T>>);

impl<K, T> Drop for CloseOnDrop<K, T> {
    fn drop(&mut self) {
        (self.close)(&self.inner);
    }
}

impl<K, T> Drop for KeyedBundler<K, T> {
    fn drop(&mut self) {
        // Before `guard` goes: the lane's items join their bundles, then the last handle's
        // drop closes the bundler.
        (self.guard.retire)(&self.guard.inner, &self.lane);
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
    /// Every handle's lane.
    lanes: Mutex<Lanes<K, T>>,
    /// `add_wait` calls about to wait for room: counted before they ask for the credit back
    /// (`shortage`), until they are in the semaphore's queue or served. While there are any,
    /// lanes and the state give their credit back and take room item by item, behind them.
    /// Once queued, a call needs no counting: the semaphore has no room free for anyone while
    /// anyone is queued (Tokio's hands what comes back to the queue first, and a new waiter
    /// takes what is free before it queues for the rest), so nobody can take room ahead of it.
    room_waiters: AtomicUsize,
    /// Room taken from `room` ahead of use by items that go straight into their bundles (see
    /// [`take_room`](Inner::take_room)): the single-producer path takes room from the
    /// semaphore once per [`GRANT`] items, not for each. Read and written only under the
    /// state's lock, except by `buffered_bytes`, which only reads it; an atomic so that it
    /// can do that without the lock.
    credit: AtomicUsize,
    /// When the dispatcher will look next, in `ticks`: [`LOOKING`] while it looks,
    /// [`NO_TIMER`] when it waits for a notification only. A lane whose first staged item is
    /// due earlier wakes it.
    pub(crate) watch: AtomicU64,
    /// The origin of `ticks`.
    epoch: Instant,
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

    /// Lists an open bundle in `opened`, which stays sorted by deadline. Returns whether the
    /// dispatcher needs waking: a bundle opened now has the latest deadline, and only the
    /// first needs the dispatcher's timer; one dated from a lane's first item may go before
    /// others.
    fn schedule(&mut self, deadline: Instant, id: u64, key: &K) -> bool {
        let len = self.opened.len();
        let at = if self
            .opened
            .back()
            .is_none_or(|last| last.deadline <= deadline)
        {
            len
        } else {
            self.opened.partition_point(|o| o.deadline <= deadline)
        };
        let entry = Opened {
            deadline,
            id,
            key: key.clone(),
        };
        self.opened.insert(at, entry);
        len == 0 || at < len
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

    fn lanes(&self) -> MutexGuard<'_, Lanes<K, T>> {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes accepted and not yet handled: room taken, less the credit held unused (by the
    /// lanes and by the state).
    pub(crate) fn buffered_bytes(&self) -> usize {
        let lanes: usize = (self.lanes().lanes.iter())
            .map(|lane| lane.credit.load(Ordering::Relaxed))
            .sum();
        let credit = lanes + self.credit.load(Ordering::Relaxed);
        (self.config.buffered_byte_limit - self.room.available_permits()).saturating_sub(credit)
    }

    /// A lane for a new handle.
    fn new_lane(&self) -> Arc<Lane<K, T>> {
        let mut lanes = self.lanes();
        let lane = Arc::new(Lane::new(lanes.closed));
        lanes.lanes.push(Arc::clone(&lane));
        lane
    }

    /// `at` as a value of `watch`: nanoseconds since `epoch`, plus one (0 is [`LOOKING`]).
    pub(crate) fn ticks(&self, at: Option<Instant>) -> u64 {
        at.map_or(NO_TIMER, |at| {
            let nanos = at.saturating_duration_since(self.epoch).as_nanos();
            nanos.min(u128::from(NO_TIMER - 2)) as u64 + 1
        })
    }

    /// Called with a lane's lock held, after its first item was staged: wakes the dispatcher
    /// unless it will look anyway before the item is due. The dispatcher stores [`LOOKING`]
    /// before it locks any lane, so either it finds the item, or this load sees [`LOOKING`] or
    /// the time it chose without the item.
    fn watch_lane(&self, since: Instant) {
        let due = self.ticks(since.checked_add(self.config.delay.get()));
        let watch = self.watch.load(Ordering::SeqCst);
        if watch == LOOKING || watch > due {
            self.dispatcher.notify_one();
        }
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
            lanes: Mutex::new(Lanes::new()),
            room_waiters: AtomicUsize::new(0),
            credit: AtomicUsize::new(0),
            watch: AtomicU64::new(LOOKING),
            epoch: Instant::now(),
        });
        tokio::spawn(crate::dispatch::run(Arc::clone(&inner), handler));
        let lane = inner.new_lane();
        KeyedBundler {
            guard: Arc::new(CloseOnDrop {
                inner,
                close: Inner::begin_close,
                retire: Inner::retire,
            }),
            lane,
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
        let cost = match inner.cost(size) {
            Ok(cost) => cost,
            Err(kind) => return Err(AddError::new(kind, item)),
        };
        match inner.try_add(&self.lane, key, item, cost) {
            Added::Yes => Ok(()),
            Added::Closed(item) => Err(AddError::new(AddErrorKind::Closed, item)),
            Added::Short(key, item) => match inner.shortage(cost) {
                Ok(true) => inner.insert(key, item, cost),
                Ok(false) => {
                    let limit = inner.config.buffered_byte_limit;
                    let kind = AddErrorKind::Overflow { size: cost, limit };
                    Err(AddError::new(kind, item))
                }
                Err(kind) => Err(AddError::new(kind, item)),
            },
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
        // The same first steps as `add`'s, written out: one helper for both, handing the key
        // and item back through an `Option`, cost 12% more instructions per item (46.5 M
        // against 41.5 M, `bundle_items 200000` under callgrind), inlined or not.
        let inner = self.inner();
        let cost = match inner.cost(size) {
            Ok(cost) => cost,
            Err(kind) => return Err(AddError::new(kind, item)),
        };
        match inner.try_add(&self.lane, key, item, cost) {
            Added::Yes => Ok(()),
            Added::Closed(item) => Err(AddError::new(AddErrorKind::Closed, item)),
            // Boxed: waiting needs a large future (the semaphore's waiter among others), which
            // would otherwise be moved with every `add_wait` future, and dropped out of line,
            // the many that never wait included.
            Added::Short(key, item) => Box::pin(inner.add_when_room(key, item, cost)).await,
        }
    }

    /// Sends every open bundle and waits until every item added before this call was handled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the bundles are sent when `flush` is first polled, whether or not it is
    /// awaited to the end.
    pub async fn flush(&self) {
        let inner = self.inner();
        // What producers staged before this call joins its bundles first.
        inner.drain_lanes(None);
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

    /// Holds the state's lock, as another thread adding would: this handle's items are
    /// staged in its lane meanwhile.
    #[cfg(test)]
    pub(crate) fn hold_lock(&self) -> MutexGuard<'_, State<K, T>> {
        self.inner().lock()
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
    /// What an item of `size` counts against the limits, or why it can never fit.
    fn cost(&self, size: usize) -> Result<usize, AddErrorKind> {
        let cost = size.saturating_add(self.config.item_overhead);
        // Also the bound of a semaphore's `acquire_many`, so `cost as u32` below is exact.
        let limit = self.config.item_limit.min(u32::MAX as usize);
        if cost > limit {
            return Err(AddErrorKind::Oversized { size: cost, limit });
        }
        Ok(cost)
    }

    /// Takes room for `cost` bytes from the semaphore now, if there is some. Fair: none is
    /// free while anyone waits.
    fn room_now(&self, cost: usize) -> Result<(), TryAcquireError> {
        self.room
            .try_acquire_many(cost as u32)
            .map(tokio::sync::SemaphorePermit::forget)
    }

    /// Takes room for `cost` bytes for an item that goes straight into its bundle, under the
    /// state's lock: from [`Inner::credit`], else from the semaphore (see
    /// [`top_up`](Inner::top_up)).
    ///
    /// Fair, as taking from the semaphore item by item is: an `add_wait` call that waits
    /// counts itself in `room_waiters`, then gives this credit back under the state's lock
    /// (`shortage`), before it queues on the semaphore. Whoever takes the lock after that
    /// sees it counted, so takes no more credit than its own item needs, and none is left
    /// over for the next; once it is queued, the semaphore has no room free for anyone until
    /// it is served. So until then, every item's room comes from the semaphore, which serves
    /// the waiter first.
    #[inline(always)]
    fn take_room(&self, _state: &mut State<K, T>, cost: usize) -> Result<(), TryAcquireError> {
        // `_state`: proof that the lock is held, which makes this load and store one update.
        let credit = self.credit.load(Ordering::Relaxed);
        let left = match credit.checked_sub(cost) {
            Some(left) => left,
            None => {
                let waiters = self.room_waiters.load(Ordering::SeqCst) > 0;
                self.top_up(credit, cost, waiters, 0)?
            }
        };
        self.credit.store(left, Ordering::Relaxed);
        Ok(())
    }

    /// The rest of `add_wait` for an item that found no room: waits for it, first come, first
    /// served, then puts the item into its bundle.
    async fn add_when_room(&self, key: K, item: T, cost: usize) -> Result<(), AddError<T>> {
        // Counted before the lanes and the state give their credit back, so that none takes
        // more of it until this call is queued: room goes first come, first served.
        let mut waiting = Some(Waiting::new(&self.room_waiters));
        match self.shortage(cost) {
            Ok(true) => {}
            Ok(false) => {
                let mut acquire = pin!(self.room.acquire_many(cost as u32));
                let acquired = poll_fn(|cx| {
                    let poll = acquire.as_mut().poll(cx);
                    // Queued or served: from now on the semaphore keeps later adds behind
                    // this one by itself. Counted any longer, this call would keep others
                    // taking room item by item after it was served, until its task runs.
                    // (Tokio's `Acquire` takes its place in the queue on its first poll; the
                    // one exception, a task dump under `tokio_unstable`, returns before it and
                    // leaves this waiter uncounted and unqueued until its next poll.)
                    waiting = None;
                    poll
                })
                .await;
                match acquired {
                    Ok(permit) => permit.forget(),
                    Err(_closed) => return Err(AddError::new(AddErrorKind::Closed, item)),
                }
            }
            Err(kind) => return Err(AddError::new(kind, item)),
        }
        drop(waiting);
        self.insert(key, item, cost)
    }

    /// Gives [`Inner::credit`] back to the semaphore, under the state's lock.
    fn return_state_credit(&self, _state: &mut State<K, T>) {
        let credit = self.credit.load(Ordering::Relaxed);
        if credit > 0 {
            self.credit.store(0, Ordering::Relaxed);
            self.room.add_permits(credit);
        }
    }

    /// Takes from the semaphore what `credit` lacks for an item of `cost` bytes and, unless
    /// an `add_wait` call is about to wait (`waiters`), up to [`GRANT`] items' worth more (at
    /// most a sixteenth of `buffered_byte_limit`) while at least `reserve` bytes of room are
    /// free, so that the next items need not touch the semaphore. Returns the credit left
    /// once the item's room is taken from it.
    ///
    /// Lanes keep a quarter of the limit in reserve, so that none sits on the last of it while
    /// others stage; the state's credit serves every producer that does not stage, and keeps
    /// none.
    fn top_up(
        &self,
        credit: usize,
        cost: usize,
        waiters: bool,
        reserve: usize,
    ) -> Result<usize, TryAcquireError> {
        let need = cost - credit;
        let available = self.room.available_permits();
        if !waiters && available >= reserve {
            let more = cost
                .saturating_mul(GRANT)
                .min(self.config.buffered_byte_limit / 16)
                .min(available)
                .clamp(need, u32::MAX as usize);
            if let Ok(permit) = self.room.try_acquire_many(more as u32) {
                permit.forget();
                return Ok(credit + more - cost);
            }
        }
        // `need <= cost`, which `cost` bounds by `u32::MAX`.
        self.room.try_acquire_many(need as u32)?.forget();
        Ok(0)
    }

    /// Puts an item whose room was taken into its bundle, under `guard`.
    fn insert_now(
        &self,
        guard: MutexGuard<'_, State<K, T>>,
        key: K,
        item: T,
        cost: usize,
    ) -> Added<K, T> {
        match self.insert_guarded(guard, key, item, cost) {
            Ok(()) => Added::Yes,
            Err(err) => Added::Closed(err.into_item()),
        }
    }

    /// Adds an item of `cost` bytes without waiting, through `lane`.
    ///
    /// While the lane is empty, the item goes straight into its bundle, with its room taken
    /// under the state's lock ([`take_room`](Inner::take_room)), unless another thread holds
    /// that lock: then it takes its room from the semaphore (which is fair: none is free while
    /// anyone waits) and is staged. Once the lane stages, every item is staged behind, until
    /// the lane's items move.
    #[inline]
    fn try_add(&self, lane: &Lane<K, T>, key: K, item: T, cost: usize) -> Added<K, T> {
        if !lane.busy.load(Ordering::Relaxed) {
            // The lane holds neither items nor credit (or another producer sharing the
            // handle staged some just now, which this item may go ahead of): the path of a
            // bundler without lanes, and of every item on a current-thread runtime.
            let mut guard = match self.state.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => return self.try_stage(lane, key, item, cost),
            };
            if guard.closed {
                return Added::Closed(item);
            }
            if let Err(err) = self.take_room(&mut guard, cost) {
                return Added::refused(err, key, item);
            }
            let wake = self.insert_locked(&mut guard, key, item, cost, None);
            drop(guard);
            if wake {
                self.dispatcher.notify_one();
            }
            return Added::Yes;
        }
        self.try_add_lane(lane, key, item, cost)
    }

    /// [`try_add`](Inner::try_add) through an empty lane while another thread holds the
    /// state's lock: the item takes its room from the semaphore and is staged (or, if the
    /// lane is closed, waits for the lock).
    #[inline(never)]
    fn try_stage(&self, lane: &Lane<K, T>, key: K, item: T, cost: usize) -> Added<K, T> {
        if let Err(err) = self.room_now(cost) {
            return Added::refused(err, key, item);
        }
        let mut staging = lane.lock();
        if staging.closed {
            drop(staging);
            return self.insert_now(self.lock(), key, item, cost);
        }
        self.stage(lane, &mut staging, key, item, cost);
        Added::Yes
    }

    /// [`try_add`](Inner::try_add) through a lane that holds items or credit.
    #[inline(never)]
    fn try_add_lane(&self, lane: &Lane<K, T>, key: K, item: T, cost: usize) -> Added<K, T> {
        let mut staging = lane.lock();
        if staging.staged.is_empty() {
            if !self.take_credit(lane, &mut staging, cost, false)
                && let Err(err) = self.room_now(cost)
            {
                return Added::refused(err, key, item);
            }
            let guard = match self.state.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) if !staging.closed => {
                    self.stage(lane, &mut staging, key, item, cost);
                    return Added::Yes;
                }
                Err(TryLockError::WouldBlock) => self.lock(),
            };
            return self.insert_now(guard, key, item, cost);
        }
        // A closed lane is empty: closing moved its items, and nothing is staged after.
        if !self.take_credit(lane, &mut staging, cost, true) {
            // The item will wait or be refused: what is staged goes ahead of it, now.
            self.move_staged(lane, &mut staging);
            return Added::Short(key, item);
        }
        self.stage(lane, &mut staging, key, item, cost);
        let staged = staging.staged.len();
        if staged >= STAGE && staged.is_multiple_of(STAGE / 4) {
            // Moving takes the lock for a while: waiting for another thread's move would put
            // this one to sleep. So stage on while the lock is taken, up to a bound.
            match self.state.try_lock() {
                Ok(mut state) => {
                    let wake = self.move_staged_locked(lane, &mut staging, &mut state);
                    drop(state);
                    if wake {
                        self.dispatcher.notify_one();
                    }
                }
                Err(TryLockError::WouldBlock) if staged < STAGE_MAX => {}
                Err(_) => self.move_staged(lane, &mut staging),
            }
        }
        Added::Yes
    }

    /// Takes `cost` bytes of room for an item of `lane`: from its credit, or with `grant`
    /// from the semaphore, topping the credit up by [`GRANT`] items' worth while room is
    /// plentiful (a quarter of `buffered_byte_limit` left), so that lanes do not sit on the
    /// last of it. False when there is not enough room.
    ///
    /// While an `add_wait` call is about to wait for room (see `Inner::room_waiters`), the
    /// lane gives its credit back and takes room for this item only, from the semaphore,
    /// which is fair (none is free while anyone waits): the waiter comes first.
    fn take_credit(
        &self,
        lane: &Lane<K, T>,
        staging: &mut LaneState<K, T>,
        cost: usize,
        grant: bool,
    ) -> bool {
        let mut credit = staging.credit;
        let waiters = self.room_waiters.load(Ordering::SeqCst) > 0;
        if waiters && credit > 0 {
            self.return_credit(lane, staging);
            credit = 0;
        }
        let left = match credit.checked_sub(cost) {
            Some(left) => left,
            None if grant => {
                match self.top_up(credit, cost, waiters, self.config.buffered_byte_limit / 4) {
                    Ok(left) => left,
                    Err(_) => return false,
                }
            }
            None => return false,
        };
        lane.set_credit(staging, left);
        true
    }

    /// Gives a lane's unused credit back to the semaphore.
    fn return_credit(&self, lane: &Lane<K, T>, staging: &mut LaneState<K, T>) {
        if staging.credit > 0 {
            self.room.add_permits(staging.credit);
            lane.set_credit(staging, 0);
        }
    }

    /// Puts an item, whose room was taken, at the back of a lane.
    fn stage(
        &self,
        lane: &Lane<K, T>,
        staging: &mut LaneState<K, T>,
        key: K,
        item: T,
        cost: usize,
    ) {
        let first = staging.staged.is_empty();
        if first {
            staging.since = Instant::now();
            staging.staged.reserve(STAGE);
        }
        staging.staged.push((key, item, cost));
        if first {
            lane.update(staging);
            self.watch_lane(staging.since);
        }
    }

    /// Moves a lane's items into their bundles, in order, under the state's lock. Items
    /// opening a bundle date it from when the lane's first item was added, so that none waits
    /// longer than `delay_threshold` in all.
    pub(crate) fn move_staged(&self, lane: &Lane<K, T>, staging: &mut LaneState<K, T>) {
        if staging.staged.is_empty() {
            return;
        }
        let wake = self.move_staged_locked(lane, staging, &mut self.lock());
        if wake {
            self.dispatcher.notify_one();
        }
    }

    /// [`move_staged`](Inner::move_staged) with the state's lock taken. Returns whether the
    /// dispatcher needs waking.
    fn move_staged_locked(
        &self,
        lane: &Lane<K, T>,
        staging: &mut LaneState<K, T>,
        state: &mut State<K, T>,
    ) -> bool {
        let since = staging.since;
        let mut wake = false;
        for (key, item, cost) in staging.staged.drain(..) {
            wake |= self.insert_locked(state, key, item, cost, Some(since));
        }
        lane.update(staging);
        wake
    }

    /// Moves the items of every lane into their bundles: all of them, or with `due`, the
    /// lanes whose first item's delay has passed by then. Returns when the first lane still
    /// holding items is due.
    pub(crate) fn drain_lanes(&self, due: Option<Instant>) -> Option<Instant> {
        // Only lanes holding something. The dispatcher stored `watch` before this load, and a
        // producer sets `busy` before it loads `watch`, all `SeqCst`: either this sees the
        // lane busy, or the producer sees the dispatcher looking and wakes it.
        let lanes: Vec<_> = (self.lanes().lanes.iter())
            .filter(|lane| lane.busy.load(Ordering::SeqCst))
            .cloned()
            .collect();
        let delay = self.config.delay.get();
        let mut next: Option<Instant> = None;
        for lane in &lanes {
            let mut staging = lane.lock();
            if staging.staged.is_empty() {
                continue;
            }
            let at = staging.since.checked_add(delay);
            match (due, at) {
                (Some(now), Some(at)) if at > now => next = Some(next.map_or(at, |n| n.min(at))),
                (Some(_), None) => {}
                _ => self.move_staged(lane, &mut staging),
            }
        }
        next
    }

    /// A producer found no room for `cost` bytes. Lanes give back their credit and move their
    /// items (so that a waiting bundle can be sent), the state gives back its credit, then the
    /// room is asked for once more; failing that, pressure is relieved. Returns whether the
    /// room was taken, or the error when the bundler is closed.
    fn shortage(&self, cost: usize) -> Result<bool, AddErrorKind> {
        let lanes = self.lanes().lanes.clone();
        // A lane that holds neither items nor credit has nothing to give.
        for lane in lanes
            .iter()
            // SeqCst, as in `drain_lanes`: after a waiter counted itself (`Waiting::new`),
            // every lane that took credit while it saw no waiter must be seen here.
            .filter(|lane| lane.busy.load(Ordering::SeqCst))
        {
            let mut staging = lane.lock();
            self.move_staged(lane, &mut staging);
            self.return_credit(lane, &mut staging);
        }
        // After the caller counted itself in `room_waiters` if it waits (see `take_room`).
        // The state's lock is held from the credit's return to the try: a plain `add`, which
        // does not count itself, must not see the credit taken again meanwhile (by another
        // producer's `take_room`, which would take a sixteenth of the limit ahead) and be
        // refused an item that fits.
        let acquired = {
            let mut state = self.lock();
            self.return_state_credit(&mut state);
            self.room.try_acquire_many(cost as u32)
        };
        match acquired {
            Ok(permit) => {
                permit.forget();
                Ok(true)
            }
            Err(TryAcquireError::Closed) => Err(AddErrorKind::Closed),
            Err(TryAcquireError::NoPermits) => {
                self.relieve_pressure();
                Ok(false)
            }
        }
    }

    /// Closes the lanes (moving their items into their bundles), then the bundler: the
    /// dispatcher never sees it closed with items in a lane.
    fn begin_close(&self) {
        let lanes = {
            let mut lanes = self.lanes();
            lanes.closed = true;
            lanes.lanes.clone()
        };
        for lane in &lanes {
            let mut staging = lane.lock();
            staging.closed = true;
            self.move_staged(lane, &mut staging);
            self.return_credit(lane, &mut staging);
        }
        {
            let mut state = self.lock();
            if state.closed {
                return;
            }
            state.closed = true;
            self.return_state_credit(&mut state);
            self.room.close();
            state.seal_all(Reason::Close);
        }
        self.dispatcher.notify_one();
    }

    /// A handle is dropped: its lane's items join their bundles, its credit goes back.
    fn retire(&self, lane: &Arc<Lane<K, T>>) {
        {
            let mut staging = lane.lock();
            staging.closed = true;
            self.move_staged(lane, &mut staging);
            self.return_credit(lane, &mut staging);
        }
        self.lanes().remove(lane);
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
        self.insert_guarded(self.lock(), key, item, cost)
    }

    /// [`insert`](Inner::insert) with the state's lock taken.
    #[inline(always)]
    fn insert_guarded(
        &self,
        mut guard: MutexGuard<'_, State<K, T>>,
        key: K,
        item: T,
        cost: usize,
    ) -> Result<(), AddError<T>> {
        if guard.closed {
            drop(guard);
            self.room.add_permits(cost);
            return Err(AddError::new(AddErrorKind::Closed, item));
        }
        let wake = self.insert_locked(&mut guard, key, item, cost, None);
        drop(guard);
        if wake {
            self.dispatcher.notify_one();
        }
        Ok(())
    }

    /// Puts an item into its key's open bundle, opening one (dated `opened_at`, or now) if
    /// needed, and seals it when it reaches a threshold or a limit. Returns whether the
    /// dispatcher needs waking.
    #[inline(always)]
    fn insert_locked(
        &self,
        state: &mut State<K, T>,
        key: K,
        item: T,
        cost: usize,
        opened_at: Option<Instant>,
    ) -> bool {
        let config = &self.config;
        let mut wake = false;
        // Set when items from a lane join a bundle opened after the first of them was added.
        let mut earlier = None;
        // The common case in one hash lookup: the key's bundle is open and the item fits.
        let (id, items, bytes) = match state.open.get_mut(&key) {
            Some(open)
                if open.items.len() < config.count_limit
                    && open.bytes.saturating_add(cost) <= config.byte_limit =>
            {
                open.items.push(item);
                open.bytes += cost;
                if let Some(at) = opened_at
                    && at < open.opened_at
                {
                    open.opened_at = at;
                    earlier = Some(at);
                }
                (open.id, open.items.len(), open.bytes)
            }
            _ => {
                wake = self.open_bundle(state, &key, opened_at);
                let open = state.open.get_mut(&key).expect("just opened");
                open.items.push(item);
                open.bytes += cost;
                (open.id, open.items.len(), open.bytes)
            }
        };
        if let Some(at) = earlier {
            // The bundle's entry in `opened` is due later; this one goes first, and the
            // other is skipped once the bundle is sealed.
            wake |= state.schedule(at + config.delay.get(), id, &key);
        }
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
        wake
    }

    /// Opens a new bundle for `key`, sending the one it has (which the next item would take
    /// past a limit) and, at `key_limit`, the oldest open one. Returns whether the dispatcher
    /// needs waking.
    fn open_bundle(&self, state: &mut State<K, T>, key: &K, opened_at: Option<Instant>) -> bool {
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
        let opened_at = opened_at.map_or(now, |at| at.min(now));
        wake |= state.schedule(opened_at + config.delay.get(), id, key);
        let open = Open {
            id,
            items: Vec::with_capacity(config.count_threshold.min(4096)),
            bytes: 0,
            opened_at,
            due: false,
        };
        state.open.insert(key.clone(), open);
        wake
    }
}

impl<K, T> Clone for KeyedBundler<K, T> {
    /// Another handle, with its own staging buffer: give each producer one.
    fn clone(&self) -> Self {
        KeyedBundler {
            guard: Arc::clone(&self.guard),
            lane: self.guard.inner.new_lane(),
        }
    }
}

/// Counts an `add_wait` call about to wait for room, until dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(waiters: &'a AtomicUsize) -> Self {
        waiters.fetch_add(1, Ordering::SeqCst);
        Waiting(waiters)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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
    pub fn add_wait(
        &self,
        item: T,
        size: usize,
    ) -> impl Future<Output = Result<(), AddError<T>>> + '_ {
        // Not an `async fn`: its future would hold `KeyedBundler::add_wait`'s, and copy the
        // item from one to the other.
        self.keyed.add_wait((), item, size)
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

#[cfg(test)]
impl<T: Send + 'static> Bundler<T> {
    pub(crate) fn keyed(&self) -> &KeyedBundler<(), T> {
        &self.keyed
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
