//! A bill in dollars: a ceiling of dollars a day, turned into the pace of a node's polls and
//! sends.
//!
//! A [`Spend`] is a bucket of dollars. It holds at most a fifth of the day's ceiling and fills
//! at the rest of it spread over the day, so that whatever the traffic, no 24 hours spend more
//! than the ceiling: at most the full bucket at once, plus four fifths of the ceiling trickling
//! in over the day. Before each poll and each send, the node waits until the bucket holds what
//! the call will cost ([`Spend::ready`]); after it, the bucket pays what the link's meter says
//! it did cost ([`Spend::settle`]), retries included.
//!
//! What a user sees when the ceiling binds:
//! - **polling slower**: a beat whose poll the bucket cannot pay waits for it to fill (a GET
//!   costs $0.0000004 on S3, so that takes a tight ceiling), and
//! - **bundles waiting longer**: a send waits too, and frames that come meanwhile join it, so
//!   each PUT carries more; past the node's buffer, new frames are refused (backpressure), and
//!   nothing already accepted is dropped.
//!
//! The bucket is two halves, one for polls and one for sends, and what one half cannot hold
//! spills into the other: a node busy sending keeps reading its inbox (its peers'
//! acknowledgements), one that only polls may spend all of it on polls, and a ceiling that is
//! spent slows both. Where polls cost nothing (CloudWatch Logs' reads), it all goes to sends.
//!
//! # The guarantee, exactly
//!
//! Over any 24 hours, a node spends at most the ceiling plus what the calls under way cost
//! beyond their estimate: a send's estimate is exact up to its encoding (its bytes are known),
//! a poll's is the link's dearest call (a poll that finds many batches costs a GET each more,
//! paid back before the next call). The bucket lives in the process: a node restarted often
//! starts each life with a full bucket.
//!
//! # Examples
//!
//! ```
//! use tunnels::node::spend::{Kind, Spend};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // $1 a day: $0.20 at once (half of it for polls), then $0.80 spread over the day.
//! let spend = Spend::new(1.0, 0.000_005).unwrap();
//! assert!((spend.available() - 0.2).abs() < 1e-9);
//! spend.ready(Kind::Poll, 0.000_005).await; // at once: the bucket is full
//! spend.settle(Kind::Poll, 0.15); // the link's meter says $0.15 so far
//! assert!((spend.available() - 0.05).abs() < 1e-9);
//! assert!((spend.spent_last_day() - 0.15).abs() < 1e-9);
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The share of the day's ceiling the bucket holds at once.
pub const BURST_SHARE: f64 = 0.2;

/// The share of the ceiling polls are sure of, when they cost anything; the rest is sends'.
pub const POLL_SHARE: f64 = 0.5;

const DAY: Duration = Duration::from_secs(86_400);

/// The bucket's accounting slots of spend: a minute each, a day's worth kept.
const SLOT: Duration = Duration::from_secs(60);

/// What a call is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A poll of the inbox.
    Poll,
    /// A send of a batch.
    Send,
}

impl Kind {
    /// Its name in metrics (`kind="poll"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Poll => "poll",
            Kind::Send => "send",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A ceiling that is not a positive, finite number of dollars.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BadCeiling(pub f64);

impl fmt::Display for BadCeiling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a dollar ceiling must be a positive number of dollars a day, not {}",
            self.0
        )
    }
}

impl std::error::Error for BadCeiling {}

/// A bucket of dollars that a node's calls draw from; see the [module](self).
#[derive(Debug)]
pub struct Spend {
    per_day: f64,
    /// Of each half, by [`Kind`].
    capacity: [f64; 2],
    /// Dollars a second into each half.
    rate: [f64; 2],
    poll_estimate: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Dollars in each half of the bucket (below zero after a call cost more than its
    /// estimate).
    level: [f64; 2],
    /// When `level` was last filled.
    filled: Instant,
    /// What the link's meter said at the last settlement.
    billed: f64,
    /// Spend per minute slot, the oldest first: (slot number, dollars).
    slots: VecDeque<(u64, f64)>,
    epoch: Instant,
    /// Calls held back, by kind, and for how long in all.
    waits: [u64; 2],
    waited: [Duration; 2],
    /// Calls waiting now, by kind.
    waiting: [u32; 2],
}

/// A snapshot of a [`Spend`], for metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpendStats {
    /// The ceiling, dollars a day.
    pub per_day: f64,
    /// Spent over the last 24 hours.
    pub spent_last_day: f64,
    /// Spent since the node started.
    pub spent: f64,
    /// Dollars in the bucket now.
    pub available: f64,
    /// Calls that waited for the bucket, by [`Kind`] (poll, send).
    pub waits: [u64; 2],
    /// How long they waited in all.
    pub waited: [Duration; 2],
    /// Calls waiting for it now.
    pub waiting: [u32; 2],
}

impl Spend {
    /// A full bucket for a ceiling of `per_day` dollars a day, over a link whose dearest call
    /// costs `dearest_call` dollars (a poll's estimate; see [`Prices`](crate::link::Prices)).
    ///
    /// # Errors
    ///
    /// [`BadCeiling`] unless `per_day` is positive and finite.
    pub fn new(per_day: f64, dearest_call: f64) -> Result<Spend, BadCeiling> {
        if !(per_day.is_finite() && per_day > 0.0) {
            return Err(BadCeiling(per_day));
        }
        let poll_estimate = dearest_call.max(0.0);
        let shares = if poll_estimate > 0.0 {
            [POLL_SHARE, 1.0 - POLL_SHARE]
        } else {
            [0.0, 1.0]
        };
        let capacity = shares.map(|share| share * per_day * BURST_SHARE);
        let rate = shares.map(|share| share * per_day * (1.0 - BURST_SHARE) / DAY.as_secs_f64());
        let now = Instant::now();
        Ok(Spend {
            per_day,
            capacity,
            rate,
            poll_estimate,
            state: Mutex::new(State {
                level: capacity,
                filled: now,
                billed: 0.0,
                slots: VecDeque::new(),
                epoch: now,
                waits: [0; 2],
                waited: [Duration::ZERO; 2],
                waiting: [0; 2],
            }),
        })
    }

    /// The ceiling, dollars a day.
    pub fn per_day(&self) -> f64 {
        self.per_day
    }

    /// What `kind`'s half of the bucket holds when full.
    pub fn capacity(&self, kind: Kind) -> f64 {
        self.capacity[kind.index()]
    }

    /// What a poll is expected to cost: the link's dearest call.
    pub fn poll_estimate(&self) -> f64 {
        self.poll_estimate
    }

    /// Waits until `kind`'s half of the bucket can pay `estimate` dollars for a call. An
    /// estimate larger than the half waits for it to be full (the overshoot is paid back
    /// before the next call).
    pub async fn ready(&self, kind: Kind, estimate: f64) {
        let k = kind.index();
        let need = estimate.max(0.0).min(self.capacity[k]);
        let mut started: Option<Instant> = None;
        loop {
            let short = {
                let mut state = self.lock();
                self.fill(&mut state);
                let short = need - state.level[k];
                match (short > 0.0, started) {
                    (false, Some(at)) => {
                        state.waiting[kind.index()] -= 1;
                        state.waited[kind.index()] += at.elapsed();
                    }
                    (true, None) => {
                        started = Some(Instant::now());
                        state.waits[kind.index()] += 1;
                        state.waiting[kind.index()] += 1;
                    }
                    _ => {}
                }
                short
            };
            if short <= 0.0 {
                return;
            }
            // At least a millisecond, as the timer counts.
            let wait =
                Duration::from_secs_f64(self.time_to_fill(k, short)).max(Duration::from_millis(1));
            let _undo = WaitGuard {
                spend: self,
                kind,
                started,
            };
            tokio::time::sleep(wait).await;
            std::mem::forget(_undo);
        }
    }

    /// Pays from `kind`'s half what the link's meter says it has cost in all, `billed`
    /// dollars (the link's [`cost`](crate::Link::cost)), since the last settlement. Call it
    /// after every call.
    pub fn settle(&self, kind: Kind, billed: f64) {
        let mut state = self.lock();
        let due = billed - state.billed;
        if due <= 0.0 {
            return;
        }
        state.billed = billed;
        self.fill(&mut state);
        // A half that holds nothing (the polls', where they are free) pays nothing: what a
        // poll's settlement finds billed is a send's.
        let k = match kind.index() {
            k if self.capacity[k] > 0.0 => k,
            k => 1 - k,
        };
        state.level[k] -= due;
        let slot = (Instant::now() - state.epoch).as_secs() / SLOT.as_secs();
        match state.slots.back_mut() {
            Some((last, dollars)) if *last == slot => *dollars += due,
            _ => state.slots.push_back((slot, due)),
        }
        let day = DAY.as_secs() / SLOT.as_secs();
        while state
            .slots
            .front()
            .is_some_and(|(first, _)| first + day <= slot)
        {
            state.slots.pop_front();
        }
    }

    /// Dollars in the bucket now, both halves.
    pub fn available(&self) -> f64 {
        let mut state = self.lock();
        self.fill(&mut state);
        state.level.iter().sum()
    }

    /// Spent over the last 24 hours (to the minute).
    pub fn spent_last_day(&self) -> f64 {
        let state = self.lock();
        Self::last_day(&state)
    }

    /// A snapshot, for metrics.
    pub fn stats(&self) -> SpendStats {
        let mut state = self.lock();
        self.fill(&mut state);
        SpendStats {
            per_day: self.per_day,
            spent_last_day: Self::last_day(&state),
            spent: state.billed,
            available: state.level.iter().sum(),
            waits: state.waits,
            waited: state.waited,
            waiting: state.waiting,
        }
    }

    fn last_day(state: &State) -> f64 {
        let now = (Instant::now() - state.epoch).as_secs() / SLOT.as_secs();
        let day = DAY.as_secs() / SLOT.as_secs();
        state
            .slots
            .iter()
            .filter(|(slot, _)| slot + day > now)
            .map(|(_, dollars)| dollars)
            .sum()
    }

    /// Seconds until half `k` has `short` dollars more, or until the other half is full and
    /// spills into it (when the wait is computed again).
    fn time_to_fill(&self, k: usize, short: f64) -> f64 {
        let level = self.lock().level;
        let other = 1 - k;
        let other_full_in = (self.capacity[other] - level[other]) / self.rate[other];
        if other_full_in.is_nan() || other_full_in <= 0.0 {
            return short / (self.rate[0] + self.rate[1]);
        }
        let alone = short / self.rate[k];
        if alone.is_finite() {
            alone.min(other_full_in)
        } else {
            other_full_in
        }
    }

    /// Fills both halves for the time since the last fill; what a full half cannot hold
    /// spills into the other.
    fn fill(&self, state: &mut State) {
        let now = Instant::now();
        let elapsed = (now - state.filled).as_secs_f64();
        state.filled = now;
        let mut spilled = [0.0; 2];
        for k in 0..2 {
            state.level[k] += elapsed * self.rate[k];
            spilled[1 - k] = (state.level[k] - self.capacity[k]).max(0.0);
            state.level[k] = state.level[k].min(self.capacity[k]);
        }
        for ((level, spilled), capacity) in state.level.iter_mut().zip(spilled).zip(self.capacity) {
            *level = (*level + spilled).min(capacity);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Counts a wait as over when its future is dropped (a node stopping while a poll waits).
struct WaitGuard<'a> {
    spend: &'a Spend,
    kind: Kind,
    started: Option<Instant>,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if let Some(at) = self.started {
            let mut state = self.spend.lock();
            state.waiting[self.kind.index()] -= 1;
            state.waited[self.kind.index()] += at.elapsed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_bucket_pays_at_once_and_an_empty_one_waits_for_the_trickle() {
        // $86.40 a day: $17.28 at once, half for polls; then $0.0008 a second.
        let spend = Spend::new(86.4, 0.01).unwrap();
        let start = Instant::now();
        spend.ready(Kind::Poll, 1.0).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        spend.settle(Kind::Poll, 8.64);
        assert!((spend.available() - 8.64).abs() < 1e-9);
        // The send half is full, so all of the trickle goes to polls: a dollar in 1,250 s.
        spend.ready(Kind::Poll, 1.0).await;
        let took = start.elapsed().as_secs_f64();
        assert!((1_249.0..1_252.0).contains(&took), "{took}");
        let stats = spend.stats();
        assert_eq!(stats.waits, [1, 0]);
        assert!((stats.waited[0].as_secs_f64() - took).abs() < 1.0);
        assert_eq!(stats.waiting, [0, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn polls_keep_their_half_while_sends_wait_for_theirs() {
        let spend = Spend::new(1.0, 0.000_005).unwrap();
        // Sends spent their $0.10.
        spend.settle(Kind::Send, 0.1);
        let start = Instant::now();
        spend.ready(Kind::Poll, 0.000_005).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "polls have their own half");
        spend.ready(Kind::Send, 0.01).await;
        // The polls' half is full and spills: a cent at $0.80 a day takes 1,080 s.
        let took = start.elapsed().as_secs_f64();
        assert!((1_079.0..1_082.0).contains(&took), "{took}");
    }

    #[tokio::test(start_paused = true)]
    async fn over_polls_that_cost_nothing_sends_have_the_whole_bucket() {
        let spend = Spend::new(1.0, 0.0).unwrap();
        spend.settle(Kind::Send, 0.19);
        let start = Instant::now();
        spend.ready(Kind::Send, 0.01).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        spend.ready(Kind::Poll, 0.0).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "a free poll never waits");
    }

    #[tokio::test(start_paused = true)]
    async fn an_estimate_beyond_the_bucket_waits_for_it_full_then_pays_back() {
        let spend = Spend::new(1.0, 0.0).unwrap();
        spend.settle(Kind::Send, 0.1);
        let start = Instant::now();
        spend.ready(Kind::Send, 5.0).await;
        // Filled from 0.1 to 0.2 at $0.8 a day: 3 h.
        let took = start.elapsed().as_secs_f64();
        assert!((10_790.0..10_830.0).contains(&took), "{took}");
        spend.settle(Kind::Send, 5.1);
        assert!((spend.available() + 4.8).abs() < 1e-6);
    }

    #[tokio::test(start_paused = true)]
    async fn no_day_spends_more_than_the_ceiling_whatever_is_asked() {
        // A caller that spends as fast as the bucket lets it, for three days, polls and sends.
        let spend = Spend::new(2.0, 0.001).unwrap();
        let mut billed = 0.0;
        let start = Instant::now();
        let mut spent = Vec::new();
        let mut n = 0u64;
        while start.elapsed() < 3 * DAY {
            let kind = if n.is_multiple_of(3) {
                Kind::Poll
            } else {
                Kind::Send
            };
            n += 1;
            spend.ready(kind, 0.001).await;
            billed += 0.001;
            spend.settle(kind, billed);
            spent.push((start.elapsed(), billed));
        }
        // Over every 24 hours (to the call), at most $2.
        let mut from = 0;
        for &(at, total) in &spent {
            while spent[from].0 + DAY < at {
                from += 1;
            }
            let before = if from == 0 { 0.0 } else { spent[from - 1].1 };
            assert!(total - before <= 2.0 + 1e-9, "{} at {at:?}", total - before);
        }
        // And it spent what it may: $0.40 at once, then $1.60 a day, less the polls' half
        // (they take a third of the calls: their $0.20 stays full and spills to sends).
        assert!(billed > 4.99, "{billed}");
        assert!((spend.spent_last_day() - 1.6).abs() < 0.01);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_dropped_is_no_longer_counted_as_waiting() {
        let spend = Spend::new(1.0, 0.0).unwrap();
        spend.settle(Kind::Send, 0.2);
        let waiting = tokio::time::timeout(Duration::from_secs(1), spend.ready(Kind::Send, 0.1));
        assert!(waiting.await.is_err());
        let stats = spend.stats();
        assert_eq!(stats.waits, [0, 1]);
        assert_eq!(stats.waiting, [0, 0]);
        assert_eq!(stats.waited[1], Duration::from_secs(1));
    }

    #[test]
    fn a_ceiling_is_a_positive_number_of_dollars() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = Spend::new(bad, 0.0).unwrap_err();
            assert!(err.to_string().contains("positive number of dollars"));
        }
    }
}
