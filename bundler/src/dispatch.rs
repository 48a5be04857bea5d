//! The dispatcher: one task per bundler that sends bundles when their delay passes, takes calls
//! from the budget, and starts handler calls within `handler_limit`.
//!
//! It holds the state's lock only to decide; the handler is called (and its future spawned)
//! after the lock is released, so a handler may call back into the bundler. Before it decides,
//! it moves the items that waited in a producer's lane until their delay (see `lane.rs`).

use std::future::{Future, poll_fn};
use std::hash::Hash;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;

use cardio::TokenBucket;
use tokio::time::{Instant, sleep_until};

use crate::core::{Inner, LOOKING, Sealed, State};
use crate::metrics::Reason;

/// What the dispatcher does after a step.
enum Next {
    /// Wait for a notification, or until the instant if there is one.
    Wait(Option<Instant>),
    /// Closed and everything handled.
    Exit,
}

pub(crate) async fn run<K, T, H, F>(inner: Arc<Inner<K, T>>, handler: H)
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Send + 'static,
    H: Fn(K, Vec<T>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut bucket = inner.config.budget.map(TokenBucket::new);
    let mut timer = pin!(sleep_until(Instant::now()));
    let mut to_send = Vec::new();
    loop {
        // Take the notification slot before looking, so a notification sent while we look is
        // kept for the wait below.
        let mut notified = pin!(inner.dispatcher.notified());
        notified.as_mut().enable();
        // Before looking at any lane: a lane that stages its first item from now on either is
        // seen below or sees this, and wakes us (`Inner::watch_lane`).
        inner.watch.store(LOOKING, Ordering::SeqCst);
        let lanes_due = inner.drain_lanes(Some(Instant::now()));
        let next = step(
            &inner,
            &mut inner.lock(),
            bucket.as_mut(),
            &mut to_send,
            lanes_due,
        );
        if let Next::Wait(at) = next {
            inner.watch.store(inner.ticks(at), Ordering::SeqCst);
        }
        for bundle in to_send.drain(..) {
            send(&inner, &handler, bundle);
        }
        match next {
            Next::Exit => return,
            Next::Wait(None) => notified.await,
            Next::Wait(Some(at)) => {
                timer.as_mut().reset(at);
                poll_fn(|cx| {
                    if notified.as_mut().poll(cx).is_ready() || timer.as_mut().poll(cx).is_ready() {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                })
                .await;
            }
        }
    }
}

/// One look at the state: seal what is due, choose what to send, say when to look again
/// (`lanes_due`: when the first lane still staging items is due).
fn step<K, T>(
    inner: &Inner<K, T>,
    state: &mut State<K, T>,
    mut bucket: Option<&mut TokenBucket>,
    to_send: &mut Vec<Sealed<K, T>>,
    lanes_due: Option<Instant>,
) -> Next
where
    K: Hash + Eq + Clone,
{
    let config = &inner.config;
    let now = Instant::now();
    // When the budget's next call comes, if not now.
    let next_call = |bucket: &Option<&mut TokenBucket>| {
        bucket
            .as_ref()
            .and_then(|b| b.earliest())
            .filter(|at| *at > now)
    };
    state.call_available = next_call(&bucket).is_none();

    // Bundles whose delay has passed.
    while let Some(oldest) = state.opened.front() {
        if !state.is_open(oldest.id, &oldest.key) {
            state.opened.pop_front();
            continue;
        }
        if oldest.deadline > now {
            break;
        }
        let oldest = state.opened.pop_front().expect("looked at above");
        if state.call_available {
            state.seal(&oldest.key, Reason::Delay);
        } else {
            state.mark_due(oldest.id, &oldest.key);
        }
    }

    // Start handler calls while there are slots, bundles and calls in the budget.
    while state.in_flight < config.handler_limit {
        let Some(next) = next_ready(state, config.one_call_per_key) else {
            break;
        };
        if let Some(bucket) = bucket.as_deref_mut() {
            if bucket.try_take(now).is_err() {
                state.call_available = false;
                break;
            }
            state.call_available = next_call(&Some(&mut *bucket)).is_none();
        }
        let mut bundle = state.ready.remove(next).expect("found above");
        // Merge when the budget is short, or (if asked) when this call took the last slot,
        // so what waits behind it grows instead of queueing; or when the key's bundles go one
        // at a time, since what waits for it would wait anyway.
        let last_slot = state.in_flight + 1 == config.handler_limit;
        if bucket.is_some() || (config.merge_when_busy && last_slot) || config.one_call_per_key {
            merge_same_key(state, &mut bundle, config.count_limit, config.byte_limit);
        }
        if config.one_call_per_key {
            state.busy.insert(bundle.key.clone());
        }
        state.in_flight += 1;
        to_send.push(bundle);
    }

    inner.metrics.open_keys.set(state.open.len() as f64);
    inner.metrics.in_flight.set(state.in_flight as f64);
    inner.metrics.buffered.set(inner.buffered_bytes() as f64);

    if state.closed && state.open.is_empty() && state.ready.is_empty() && state.in_flight == 0 {
        return Next::Exit;
    }
    let mut wake = state
        .opened
        .iter()
        .find(|o| state.is_open(o.id, &o.key))
        .map(|o| o.deadline);
    if let Some(at) = lanes_due {
        wake = Some(wake.map_or(at, |w| w.min(at)));
    }
    let waiting = !state.ready.is_empty() || !state.due.is_empty();
    if waiting && state.in_flight < config.handler_limit {
        // Otherwise a finishing handler call wakes us.
        if let Some(at) = next_call(&bucket) {
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
    }
    Next::Wait(wake)
}

/// Where in the ready queue the next bundle to send is: the first, or with `one_call_per_key`
/// the first whose key has no call running. Seals a due bundle when none is ready (the budget
/// permitting); `None` when there is nothing to send.
fn next_ready<K: Hash + Eq + Clone, T>(
    state: &mut State<K, T>,
    one_per_key: bool,
) -> Option<usize> {
    loop {
        let found = if one_per_key {
            state
                .ready
                .iter()
                .position(|b| !state.busy.contains(&b.key))
        } else {
            (!state.ready.is_empty()).then_some(0)
        };
        if found.is_some() || !(state.call_available && state.seal_next_due()) {
            return found;
        }
    }
}

/// Folds the ready bundles of the same key that follow `bundle` into it, in order, as far as
/// the limits allow: fewer, fuller calls.
fn merge_same_key<K: Eq, T>(
    state: &mut State<K, T>,
    bundle: &mut Sealed<K, T>,
    count_limit: usize,
    byte_limit: usize,
) {
    let mut i = 0;
    while i < state.ready.len() {
        let next = &state.ready[i];
        if next.key != bundle.key {
            i += 1;
            continue;
        }
        if bundle.items.len() + next.items.len() > count_limit
            || bundle.bytes + next.bytes > byte_limit
        {
            // Merging past it would reorder this key's items.
            return;
        }
        let next = state.ready.remove(i).expect("index checked");
        bundle.items.extend(next.items);
        bundle.bytes += next.bytes;
        bundle.merged.push(next.id);
        bundle.merged.extend(next.merged);
        bundle.opened_at = bundle.opened_at.min(next.opened_at);
    }
}

/// Calls the handler with a bundle and spawns the call. Whatever happens to the call (it
/// returns, panics, or the runtime drops it), `Done` gives back the bundle's room and marks it
/// handled.
fn send<K, T, H, F>(inner: &Arc<Inner<K, T>>, handler: &H, bundle: Sealed<K, T>)
where
    H: Fn(K, Vec<T>) -> F,
    F: Future<Output = ()> + Send + 'static,
    K: Hash + Eq + Clone + Send + 'static,
    T: Send + 'static,
{
    let metrics = &inner.metrics;
    metrics.bundle(bundle.reason).increment(1);
    metrics.items.record(bundle.items.len() as f64);
    metrics.bytes.record(bundle.bytes as f64);
    metrics.age.record(
        Instant::now()
            .duration_since(bundle.opened_at)
            .as_secs_f64(),
    );
    let done = Done {
        inner: Arc::clone(inner),
        key: inner.config.one_call_per_key.then(|| bundle.key.clone()),
        id: bundle.id,
        merged: bundle.merged,
        bytes: bundle.bytes,
    };
    // The handler's synchronous part runs here, in the dispatcher: a panic there must not take
    // the dispatcher down.
    match catch_unwind(AssertUnwindSafe(|| handler(bundle.key, bundle.items))) {
        Ok(call) => {
            tokio::spawn(async move {
                let _done = done;
                call.await;
            });
        }
        Err(_panic) => {
            metrics.panics.increment(1);
            drop(done);
        }
    }
}

/// Marks a bundle handled when dropped.
struct Done<K: Hash + Eq, T> {
    inner: Arc<Inner<K, T>>,
    /// The key whose call this is, with `one_call_per_key`.
    key: Option<K>,
    id: u64,
    merged: Vec<u64>,
    bytes: usize,
}

impl<K: Hash + Eq, T> Drop for Done<K, T> {
    fn drop(&mut self) {
        let inner = &self.inner;
        if std::thread::panicking() {
            inner.metrics.panics.increment(1);
        }
        // The room first: once the call counts as finished, `close` may return, and what it
        // held must no longer count as buffered by then.
        inner.room.add_permits(self.bytes);
        {
            let mut state = inner.lock();
            state.in_flight -= 1;
            if let Some(key) = &self.key {
                state.busy.remove(key);
            }
            state.unfinished.remove(&self.id);
            for id in &self.merged {
                state.unfinished.remove(id);
            }
        }
        inner.dispatcher.notify_one();
        inner.progress.notify_waiters();
    }
}
