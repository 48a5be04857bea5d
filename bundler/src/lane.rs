//! Lanes: each handle's staging buffer, which keeps producers on different threads from taking
//! turns at the shared lock item by item.
//!
//! Four producers on two worker threads used to spend most of their time moving cache lines
//! between the cores (the lock, the semaphore, the open bundle and its items), not bundling.
//! So each handle (each clone of a [`KeyedBundler`](crate::KeyedBundler)) owns a lane. While
//! nobody else holds the shared lock, an item goes straight into its bundle, exactly as with
//! one producer. When another thread holds it, the item is staged in the lane instead, and
//! the lane's items move into their bundles together: when the lane holds [`STAGE`] of them
//! and the lock is free (or [`STAGE_MAX`] in any case), when the producer runs short of room,
//! when their delay comes (the dispatcher moves them), and on `flush`, `close` and the
//! handle's drop. A staging producer also takes room for many items at once
//! ([`Lane::credit`]), so that it does not touch the semaphore for each item either; the
//! credit goes back as soon as anyone is short of room, so `add` still refuses only what
//! does not fit, and `add_wait` still serves first come, first served.
//!
//! On a current-thread runtime the shared lock is never held by anyone else when a producer
//! runs, so lanes stay empty and every item goes straight into its bundle, its room taken under
//! the shared lock from credit the state holds for all such items (`Inner::take_room`).
//!
//! Invariants:
//! - A lane's items are in the order they were added through its handle, and move in that
//!   order, under the lane's lock and then the shared one (always in that order). An item
//!   goes straight into its bundle only while the lane is empty (`busy` false, as the
//!   producer that staged last sees it). So the items of one handle reach the shared state,
//!   hence the handler when there is one handler, in the order added. Items added through
//!   two handles may reach it in either order, which is why each producer should add
//!   through a handle of its own.
//! - Staged items move with the time the lane's first one was added; a bundle they open or
//!   join is due `delay_threshold` after it, so no item waits longer than that for company.
//! - Every staged item had its room taken before it was staged: staged bytes count in
//!   `buffered_byte_limit`, and so does credit, room taken and not yet used.
//! - Nothing is staged in a closed lane; `close` closes every lane and moves its items before
//!   it marks the bundler closed, so the dispatcher never exits with items in a lane.
//! - A lane's first staged item makes sure the dispatcher will look before `since + delay`:
//!   the producer marks the lane busy, then reads `Inner::watch`; the dispatcher writes it,
//!   then looks at the busy lanes (see `Inner::watch_lane` and `Inner::drain_lanes`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;

/// How many items a lane stages before it moves them into their bundles: enough to pay for
/// taking the shared lock, few enough that the lock is not held long.
pub(crate) const STAGE: usize = 64;

/// How many items a lane stages at most: past [`STAGE`], it moves them only if the shared lock
/// is free (waiting for it would put the thread to sleep), up to this.
pub(crate) const STAGE_MAX: usize = 4 * STAGE;

/// How many items' worth of room a staging lane takes from the semaphore at once (never more
/// than a sixteenth of `buffered_byte_limit`).
pub(crate) const GRANT: usize = 64;

/// One handle's staging buffer.
pub(crate) struct Lane<K, T> {
    state: Mutex<LaneState<K, T>>,
    /// A copy of `LaneState::credit`, readable without the lane's lock, for
    /// `buffered_bytes`. Written under the lane's lock.
    pub(crate) credit: AtomicUsize,
    /// Whether the lane holds items or credit, readable without its lock: while it holds
    /// neither, its handle adds without taking the lane's lock. Written under the lane's
    /// lock; the producer that staged an item reads its own write, which is all the order of
    /// its items needs.
    pub(crate) busy: AtomicBool,
}

pub(crate) struct LaneState<K, T> {
    /// Items whose room was taken, in the order they were added, with their cost.
    pub(crate) staged: Vec<(K, T, usize)>,
    /// When the first of `staged` was added.
    pub(crate) since: Instant,
    /// Room taken from the semaphore ahead of use.
    pub(crate) credit: usize,
    /// Closing has begun: nothing more is staged here.
    pub(crate) closed: bool,
}

/// Every live handle's lane.
pub(crate) struct Lanes<K, T> {
    pub(crate) lanes: Vec<Arc<Lane<K, T>>>,
    /// Closing has begun: new handles get closed lanes.
    pub(crate) closed: bool,
}

impl<K, T> Lane<K, T> {
    pub(crate) fn new(closed: bool) -> Self {
        Lane {
            state: Mutex::new(LaneState {
                staged: Vec::new(),
                since: Instant::now(),
                credit: 0,
                closed,
            }),
            credit: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, LaneState<K, T>> {
        // Nothing panics while holding it: moving items only pushes, looks up keys and adds
        // the delay to an instant (which the builder bounds so that it cannot overflow).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the credit, keeping the copy readable without the lock in step.
    pub(crate) fn set_credit(&self, lane: &mut LaneState<K, T>, credit: usize) {
        lane.credit = credit;
        self.credit.store(credit, Ordering::Relaxed);
        self.update(lane);
    }

    /// Keeps `busy` up to date after `lane` changed. `SeqCst`, because the dispatcher skips
    /// lanes that are not busy (see `Inner::drain_lanes`); it changes once per batch.
    pub(crate) fn update(&self, lane: &LaneState<K, T>) {
        let busy = !lane.staged.is_empty() || lane.credit > 0;
        if self.busy.load(Ordering::Relaxed) != busy {
            self.busy.store(busy, Ordering::SeqCst);
        }
    }
}

impl<K, T> Lanes<K, T> {
    pub(crate) fn new() -> Self {
        Lanes {
            lanes: Vec::new(),
            closed: false,
        }
    }

    /// Forgets `lane` (its handle is gone).
    pub(crate) fn remove(&mut self, lane: &Arc<Lane<K, T>>) {
        self.lanes.retain(|l| !Arc::ptr_eq(l, lane));
    }
}

#[cfg(test)]
mod tests {
    //! A lane stages items only while another thread holds the state's lock; these tests hold
    //! it themselves (`hold_lock`) to stage on the paused clock.

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::sync::Semaphore;
    use tokio::time::{Instant, sleep};

    use crate::{AddErrorKind, Bundler};

    const DELAY: Duration = Duration::from_millis(100);

    type Log = Arc<Mutex<Vec<(Duration, Vec<u32>)>>>;

    /// A bundler whose handler records each bundle, and returns once `gate` has a permit.
    fn bundler(builder: crate::Builder, gate: &Arc<Semaphore>) -> (Bundler<u32>, Log) {
        let log = Log::default();
        let start = Instant::now();
        let bundler = builder.build({
            let (log, gate) = (Arc::clone(&log), Arc::clone(gate));
            move |bundle| {
                log.lock().unwrap().push((start.elapsed(), bundle));
                let gate = Arc::clone(&gate);
                async move { gate.acquire().await.unwrap().forget() }
            }
        });
        (bundler, log)
    }

    fn open_gate() -> Arc<Semaphore> {
        Arc::new(Semaphore::new(Semaphore::MAX_PERMITS))
    }

    fn bundles(log: &Log) -> Vec<(Duration, Vec<u32>)> {
        log.lock().unwrap().clone()
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_staged_item_goes_by_its_delay_and_the_next_goes_behind_it() {
        let builder = Bundler::builder()
            .count_threshold(10)
            .delay_threshold(DELAY);
        let (bundler, log) = bundler(builder, &open_gate());
        settle().await; // the dispatcher waits with no timer
        {
            let _held = bundler.keyed().hold_lock();
            bundler.add(1, 1).unwrap(); // staged: it must wake the dispatcher
        }
        bundler.add(2, 1).unwrap(); // the lane is not empty: staged behind 1
        assert_eq!(
            bundler.buffered_bytes(),
            2,
            "staged bytes count, credit does not"
        );
        // 0 ms: 1 and 2 staged. 100 ms: the lane is due, its items open a bundle dated 0 ms,
        // which goes at once.
        sleep(DELAY - Duration::from_millis(1)).await;
        settle().await;
        assert!(bundles(&log).is_empty());
        sleep(Duration::from_millis(1)).await;
        settle().await;
        assert_eq!(bundles(&log), [(DELAY, vec![1, 2])]);
        bundler.close().await;
        assert_eq!(bundler.buffered_bytes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn staged_items_bring_a_younger_bundles_deadline_forward() {
        let builder = Bundler::builder()
            .count_threshold(10)
            .delay_threshold(DELAY);
        let (bundler, log) = bundler(builder, &open_gate());
        {
            let _held = bundler.keyed().hold_lock();
            bundler.add(1, 1).unwrap(); // 0 ms: staged in this handle's lane
        }
        sleep(Duration::from_millis(50)).await;
        let other = bundler.clone();
        other.add(2, 1).unwrap(); // 50 ms: opens the bundle, due at 150 ms
        // 100 ms: 1 is due, joins the bundle, and takes it along: no item waits past its delay.
        sleep(Duration::from_millis(60)).await;
        settle().await;
        assert_eq!(bundles(&log), [(DELAY, vec![2, 1])]);
        bundler.close().await;
    }

    #[tokio::test(start_paused = true)]
    async fn flush_close_and_drop_take_what_lanes_staged() {
        let builder = Bundler::builder()
            .count_threshold(10)
            .delay_threshold(Duration::from_secs(3600));
        let (bundler, log) = bundler(builder, &open_gate());
        {
            let _held = bundler.keyed().hold_lock();
            bundler.add(1, 1).unwrap();
        }
        bundler.flush().await;
        assert_eq!(bundles(&log), [(Duration::ZERO, vec![1])]);

        let other = bundler.clone();
        {
            let _held = bundler.keyed().hold_lock();
            other.add(2, 1).unwrap();
            bundler.add(3, 1).unwrap();
        }
        drop(other); // 2 joins its bundle
        bundler.close().await; // and 3 with it
        assert_eq!(bundles(&log)[1], (Duration::ZERO, vec![2, 3]));
        assert!(bundler.add(4, 1).unwrap_err().is_closed());
        assert_eq!(bundler.buffered_bytes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_producer_short_of_room_sends_its_staged_items_ahead() {
        let gate = Arc::new(Semaphore::new(0));
        let builder = Bundler::builder()
            .count_threshold(100)
            .delay_threshold(Duration::from_secs(3600))
            .buffered_byte_limit(10);
        let (bundler, log) = bundler(builder, &gate);
        {
            let _held = bundler.keyed().hold_lock();
            bundler.add(1, 4).unwrap();
        }
        bundler.add(2, 4).unwrap(); // staged behind 1, its room from the semaphore
        assert_eq!(bundler.buffered_bytes(), 8);
        // No room for 3: 1 and 2 join their bundle, which goes to free room.
        let err = bundler.add(3, 4).unwrap_err();
        assert_eq!(err.kind(), AddErrorKind::Overflow { size: 4, limit: 10 });
        settle().await;
        assert_eq!(bundles(&log), [(Duration::ZERO, vec![1, 2])]);
        gate.add_permits(1);
        settle().await;
        bundler.add(3, 4).unwrap();
        gate.add_permits(10);
        bundler.close().await;
        assert_eq!(bundles(&log)[1].1, [3]);
        assert_eq!(bundler.buffered_bytes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lane_gives_its_credit_back_to_whoever_waits_first() {
        let gate = Arc::new(Semaphore::new(0));
        let builder = Bundler::builder()
            .count_threshold(100)
            .delay_threshold(Duration::from_secs(3600))
            .buffered_byte_limit(1_600);
        let (bundler, log) = bundler(builder, &gate);
        {
            let _held = bundler.keyed().hold_lock();
            bundler.add(1, 10).unwrap();
        }
        // Staged behind 1, with room for ten more such items taken ahead (a sixteenth of the
        // limit): that credit is not buffered.
        bundler.add(2, 10).unwrap();
        assert_eq!(bundler.buffered_bytes(), 20);
        // Room for 1,590 bytes only with the credit back, and not even then.
        let waiter = tokio::spawn({
            let other = bundler.clone();
            async move { other.add_wait(3, 1_590).await.unwrap() }
        });
        settle().await;
        assert!(!waiter.is_finished());
        assert_eq!(
            bundles(&log),
            [(Duration::ZERO, vec![1, 2])],
            "sent to free room"
        );
        // The waiter came first: this producer's lane may not use what it took earlier.
        let err = bundler.add(4, 10).unwrap_err();
        assert!(matches!(err.kind(), AddErrorKind::Overflow { .. }));
        gate.add_permits(1); // [1, 2] handled: 20 bytes free, the waiter has its 1,590
        waiter.await.unwrap();
        gate.add_permits(10);
        bundler.close().await;
        assert_eq!(bundles(&log)[1].1, [3]);
        assert_eq!(bundler.buffered_bytes(), 0);
    }
}
