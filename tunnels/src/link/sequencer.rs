//! Exactly-once, in-order delivery per (sender, epoch), as plain logic: no I/O, time passed in.
//!
//! Every link numbers a sender's batches to a destination from 0 in each of the sender's lives
//! (epochs), and a receiver asks its [`Sequencer`] what to do with each batch it finds, in the
//! spirit of boringtun's `decapsulate`: [`offer`](Sequencer::offer) answers
//! [`Verdict::Deliver`], [`Verdict::Duplicate`], [`Verdict::Wait`] or [`Verdict::Skip`], and
//! moves nothing but the gap timers. Only [`delivered`](Sequencer::delivered), called once the
//! caller holds the batch's bytes, moves a stream forward, so a call that fails between the
//! verdict and the bytes (a GET past its retries, a poll that is cancelled) leaves the batch
//! expected, and the next poll finds it again.
//!
//! # Invariants
//!
//! - A stream (sender, epoch) is met at sequence 0, whatever number the receiver happens to see
//!   first: a batch 0 that lands after batches 1 and 2 is waited for, not dropped.
//! - Within a stream, sequence numbers are delivered in increasing order, each at most once.
//! - A missing batch is waited for `grace` from the moment a later one was first offered; after
//!   that the later one is delivered and the missing ones are skipped, as lost.
//! - An older epoch of a sender is kept while it may still deliver: a dead life's last PUT may
//!   be retried for minutes and land after the new life began. It retires once a newer epoch
//!   exists and it has been quiet for [`RETIRE_AFTER`] with nothing missing. Batches of a
//!   retired epoch (or of an older one met after it retired) are duplicates.
//!
//! # A receiver that restarts
//!
//! A sequencer's state is in memory. A receiver that restarts meets every sender mid-epoch: the
//! links delete what they delivered, so the first batch it finds of a stream is usually not 0.
//! It cannot tell "delivered by my previous life" from "0 lands late", so it waits: the first
//! batch it meets of each stream is held for `grace` (10 s by default on S3), then the missing
//! ones before it are skipped as [`Skipped::BeforeStart`] rather than counted lost. That wait,
//! once per sender after a restart, is the whole cost: no call is made for it. Links hand a batch
//! over only once its object is deleted, so a restarted receiver never delivers again a batch
//! its previous life handed over, with one exception: a duplicate that lands after the original
//! was deleted (a retried PUT whose first attempt reached the service late) is new to the new
//! life. A running receiver drops it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use super::NodeId;

/// How long an older epoch of a sender stays live after its last delivery: a day, past any
/// retry window and as long as an S3 lifecycle rule keeps a stray object. A stream costs a few
/// dozen bytes of memory.
pub const RETIRE_AFTER: Duration = Duration::from_secs(86_400);

/// What to do with a batch a receiver found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It is the next of its stream: take its bytes, then call
    /// [`delivered`](Sequencer::delivered).
    Deliver,
    /// Delivered already, or of an epoch that was retired: drop it (and delete it).
    Duplicate,
    /// Earlier batches of its stream are missing: keep it, and ask again; at `until` the
    /// missing ones will be given up on.
    Wait {
        /// When the grace period of the gap ends.
        until: Instant,
    },
    /// Earlier batches are missing past the grace period: take this one's bytes, then call
    /// [`delivered`](Sequencer::delivered), which skips the `missing` ones.
    Skip {
        /// How many batches before this one are given up on.
        missing: u64,
        /// Why they are missing, as far as the receiver can tell.
        reason: Skipped,
    },
}

/// Why batches were skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// They never arrived within the grace period: lost.
    Lost,
    /// They came before the first batch the receiver met of the stream: most likely its
    /// previous life delivered them (or, rarely, the first batches of a sender's life never
    /// landed).
    BeforeStart,
}

/// Where a live stream is: for receivers that probe for the next batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// The sender.
    pub sender: NodeId,
    /// Its epoch.
    pub epoch: u64,
    /// The next sequence number to deliver.
    pub next: u64,
    /// When the stream last delivered (or was met).
    pub last_progress: Instant,
    /// Whether this is the sender's newest epoch.
    pub newest: bool,
}

/// The delivery state of a receiver: where each (sender, epoch) is.
///
/// # Examples
///
/// Batch 0 lands after batch 1; batch 1 waits for it, then both go, in order:
///
/// ```
/// use std::time::Duration;
/// use tokio::time::Instant;
/// use tunnels::link::{Sequencer, Verdict};
///
/// let (sender, epoch) = (0xa, 1);
/// let mut seq = Sequencer::new(Duration::from_secs(10));
/// let now = Instant::now();
/// assert!(matches!(seq.offer(sender, epoch, 1, now), Verdict::Wait { .. }));
/// assert_eq!(seq.offer(sender, epoch, 0, now), Verdict::Deliver);
/// // ... GET batch 0; only once its bytes are here:
/// seq.delivered(sender, epoch, 0, now);
/// assert_eq!(seq.offer(sender, epoch, 1, now), Verdict::Deliver);
/// seq.delivered(sender, epoch, 1, now);
/// assert_eq!(seq.offer(sender, epoch, 0, now), Verdict::Duplicate);
/// ```
#[derive(Debug, Clone)]
pub struct Sequencer {
    grace: Duration,
    senders: HashMap<NodeId, SenderState>,
}

#[derive(Debug, Clone)]
struct SenderState {
    /// The newest epoch seen.
    newest: u64,
    /// The newest epoch retired: it and older ones not in `streams` are over.
    retired: Option<u64>,
    streams: BTreeMap<u64, Stream>,
}

#[derive(Debug, Clone)]
struct Stream {
    next: u64,
    /// Since when a batch past `next` is known while `next` is missing.
    gap_since: Option<Instant>,
    last_progress: Instant,
    delivered_any: bool,
}

impl Stream {
    fn new(now: Instant) -> Stream {
        Stream {
            next: 0,
            gap_since: None,
            last_progress: now,
            delivered_any: false,
        }
    }
}

impl Sequencer {
    /// A receiver's sequencer, waiting `grace` for missing batches.
    pub fn new(grace: Duration) -> Self {
        Sequencer {
            grace,
            senders: HashMap::new(),
        }
    }

    /// The grace period.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// What to do with batch `seq` of `sender` in `epoch`, found at `now`. Moves only the gap
    /// timers (and meets a new stream); never the delivery state.
    pub fn offer(&mut self, sender: NodeId, epoch: u64, seq: u64, now: Instant) -> Verdict {
        let grace = self.grace;
        let Some(stream) = self.stream(sender, epoch, now) else {
            return Verdict::Duplicate;
        };
        if seq < stream.next {
            return Verdict::Duplicate;
        }
        if seq == stream.next {
            return Verdict::Deliver;
        }
        let since = *stream.gap_since.get_or_insert(now);
        let until = since + grace;
        if now < until {
            return Verdict::Wait { until };
        }
        let reason = if !stream.delivered_any {
            Skipped::BeforeStart
        } else {
            Skipped::Lost
        };
        Verdict::Skip {
            missing: seq - stream.next,
            reason,
        }
    }

    /// Records that the caller holds batch `seq` of (`sender`, `epoch`), after
    /// [`offer`](Sequencer::offer) answered [`Verdict::Deliver`] or [`Verdict::Skip`] for it:
    /// the stream moves past it. A batch that was not offered first, or is behind the stream,
    /// changes nothing.
    pub fn delivered(&mut self, sender: NodeId, epoch: u64, seq: u64, now: Instant) {
        let grace = self.grace;
        let Some(state) = self.senders.get_mut(&sender) else {
            return;
        };
        if let Some(stream) = state.streams.get_mut(&epoch)
            && seq >= stream.next
        {
            debug_assert!(
                seq == stream.next || stream.gap_since.is_some_and(|since| now >= since + grace),
                "delivered {seq} while {} is still waited for",
                stream.next
            );
            stream.next = seq + 1;
            stream.gap_since = None;
            stream.last_progress = now;
            stream.delivered_any = true;
        }
        // Older epochs that have gone quiet with nothing missing can go.
        let newest = state.newest;
        let mut retired = state.retired;
        state.streams.retain(|&e, s| {
            let keep = e == newest
                || s.gap_since.is_some()
                || now.duration_since(s.last_progress) < RETIRE_AFTER;
            if !keep {
                retired = retired.max(Some(e));
            }
            keep
        });
        state.retired = retired;
    }

    /// Resumes stream (`sender`, `epoch`) at `next`, as a receiver that restarted learns from
    /// where its previous life wrote it down: batches before `next` are duplicates, and a gap
    /// after it is counted lost, not skipped. Never moves a stream back; does nothing for a
    /// retired epoch.
    pub fn resume(&mut self, sender: NodeId, epoch: u64, next: u64, now: Instant) {
        if let Some(stream) = self.stream(sender, epoch, now)
            && next > stream.next
        {
            stream.next = next;
            stream.gap_since = None;
            stream.delivered_any = true;
        }
    }

    /// The earliest time a gap's grace period ends, if any batch is waiting: the receiver
    /// should look again by then (quinn-proto's `poll_timeout`).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.senders
            .values()
            .flat_map(|state| state.streams.values())
            .filter_map(|stream| stream.gap_since)
            .min()
            .map(|since| since + self.grace)
    }

    /// Every live stream and the batch it expects next.
    pub fn expected(&self) -> impl Iterator<Item = Expected> + '_ {
        self.senders.iter().flat_map(|(&sender, state)| {
            state.streams.iter().map(move |(&epoch, stream)| Expected {
                sender,
                epoch,
                next: stream.next,
                last_progress: stream.last_progress,
                newest: epoch == state.newest,
            })
        })
    }

    /// The stream (sender, epoch), met now if it is new; `None` if the epoch was retired.
    fn stream(&mut self, sender: NodeId, epoch: u64, now: Instant) -> Option<&mut Stream> {
        let state = self.senders.entry(sender).or_insert_with(|| SenderState {
            newest: epoch,
            retired: None,
            streams: BTreeMap::new(),
        });
        if state.retired.is_some_and(|retired| epoch <= retired)
            && !state.streams.contains_key(&epoch)
        {
            return None;
        }
        state.newest = state.newest.max(epoch);
        Some(
            state
                .streams
                .entry(epoch)
                .or_insert_with(|| Stream::new(now)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = 0xa;
    const GRACE: Duration = Duration::from_secs(10);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_resumed_stream_drops_what_came_before_and_counts_a_later_gap_lost() {
        let t0 = Instant::now();
        let mut seq = Sequencer::new(GRACE);
        seq.resume(A, 1, 5, t0);
        assert_eq!(seq.offer(A, 1, 4, t0), Verdict::Duplicate);
        assert_eq!(seq.offer(A, 1, 5, t0), Verdict::Deliver);
        seq.resume(A, 1, 2, t0);
        assert_eq!(seq.offer(A, 1, 5, t0), Verdict::Deliver, "never moved back");
        assert!(matches!(seq.offer(A, 1, 7, t0), Verdict::Wait { .. }));
        assert_eq!(
            seq.offer(A, 1, 7, t0 + GRACE),
            Verdict::Skip {
                missing: 2,
                reason: Skipped::Lost
            }
        );
    }

    #[test]
    fn delivers_in_order_and_drops_what_it_passed() {
        let t0 = Instant::now();
        let mut seq = Sequencer::new(GRACE);
        for n in 0..3 {
            assert_eq!(seq.offer(A, 1, n, t0), Verdict::Deliver);
            seq.delivered(A, 1, n, t0);
        }
        assert_eq!(seq.offer(A, 1, 1, t0), Verdict::Duplicate);
        assert_eq!(seq.offer(A, 1, 3, t0), Verdict::Deliver);
    }

    #[test]
    fn an_offer_alone_moves_nothing() {
        // The GET after the verdict failed: the batch is still the one expected.
        let t0 = Instant::now();
        let mut seq = Sequencer::new(GRACE);
        assert_eq!(seq.offer(A, 1, 0, t0), Verdict::Deliver);
        assert_eq!(seq.offer(A, 1, 0, t0), Verdict::Deliver);
        assert_eq!(seq.offer(A, 1, 1, t0), Verdict::Wait { until: t0 + GRACE });
    }

    #[test]
    fn a_new_stream_starts_at_zero_and_waits_for_a_late_first_batch() {
        // Timeline: 1 and 2 land first (t0), 0 lands at t0 + 3 s.
        let t0 = Instant::now();
        let mut seq = Sequencer::new(GRACE);
        assert_eq!(seq.offer(A, 7, 1, t0), Verdict::Wait { until: t0 + GRACE });
        assert_eq!(seq.offer(A, 7, 2, t0), Verdict::Wait { until: t0 + GRACE });
        assert_eq!(seq.poll_timeout(), Some(t0 + GRACE));
        let t1 = t0 + secs(3);
        assert_eq!(seq.offer(A, 7, 0, t1), Verdict::Deliver);
        seq.delivered(A, 7, 0, t1);
        assert_eq!(seq.poll_timeout(), None, "the gap is closed");
        assert_eq!(seq.offer(A, 7, 1, t1), Verdict::Deliver);
    }

    #[test]
    fn a_gap_past_the_grace_period_is_skipped_as_lost() {
        // 0 delivered at t0; 2 seen at t0 + 1 s; 1 never comes.
        let t0 = Instant::now();
        let mut seq = Sequencer::new(GRACE);
        assert_eq!(seq.offer(A, 1, 0, t0), Verdict::Deliver);
        seq.delivered(A, 1, 0, t0);
        let t1 = t0 + secs(1);
        assert_eq!(seq.offer(A, 1, 2, t1), Verdict::Wait { until: t1 + GRACE });
        assert_eq!(
            seq.offer(A, 1, 2, t1 + GRACE - Duration::from_millis(1)),
            Verdict::Wait { until: t1 + GRACE }
        );
        let t2 = t1 + GRACE;
        assert_eq!(
            seq.offer(A, 1, 2, t2),
            Verdict::Skip {
                missing: 1,
                reason: Skipped::Lost
            }
        );
        seq.delivered(A, 1, 2, t2);
        assert_eq!(seq.offer(A, 1, 1, t2), Verdict::Duplicate, "too late");
        assert_eq!(seq.offer(A, 1, 3, t2), Verdict::Deliver);
    }

    #[test]
    fn a_stream_met_mid_way_skips_what_came_before_as_before_the_start() {
        let t0 = Instant::now();
        let mut seq = Sequencer::new(GRACE);
        assert_eq!(seq.offer(A, 1, 40, t0), Verdict::Wait { until: t0 + GRACE });
        assert_eq!(
            seq.offer(A, 1, 40, t0 + GRACE),
            Verdict::Skip {
                missing: 40,
                reason: Skipped::BeforeStart
            }
        );
    }

    #[test]
    fn epochs_are_streams_of_their_own_and_old_ones_retire_after_a_quiet_day() {
        let t0 = Instant::now();
        let mut seq = Sequencer::new(GRACE);
        seq.offer(A, 1, 0, t0);
        seq.delivered(A, 1, 0, t0);
        // The sender restarts: epoch 2 from 0, while 1's last batch is still on its way.
        assert_eq!(seq.offer(A, 2, 0, t0), Verdict::Deliver);
        seq.delivered(A, 2, 0, t0);
        let t1 = t0 + secs(2);
        assert_eq!(seq.offer(A, 1, 1, t1), Verdict::Deliver, "late, not lost");
        seq.delivered(A, 1, 1, t1);
        let newest: Vec<_> = seq.expected().map(|e| (e.epoch, e.newest)).collect();
        assert_eq!(newest, [(1, false), (2, true)]);
        // Quiet for a day: epoch 1 retires at the next delivery.
        let t2 = t1 + GRACE;
        seq.offer(A, 2, 1, t2);
        seq.delivered(A, 2, 1, t2);
        assert_eq!(
            seq.expected().count(),
            2,
            "a dead life's PUT may land minutes late"
        );
        let t2 = t1 + RETIRE_AFTER;
        seq.offer(A, 2, 2, t2);
        seq.delivered(A, 2, 2, t2);
        assert_eq!(seq.expected().count(), 1);
        assert_eq!(seq.offer(A, 1, 2, t2), Verdict::Duplicate);
        assert_eq!(seq.offer(A, 0, 0, t2), Verdict::Duplicate, "older still");
        assert_eq!(seq.offer(A, 3, 0, t2), Verdict::Deliver, "a newer life");
    }

    #[test]
    fn delivering_what_was_not_offered_changes_nothing() {
        let t0 = Instant::now();
        let mut seq = Sequencer::new(GRACE);
        seq.delivered(A, 1, 0, t0);
        assert_eq!(seq.offer(A, 1, 0, t0), Verdict::Deliver);
    }
}
