//! Receiving: list or probe the inbox, ask the sequencer about each batch, GET (many at once),
//! DELETE, hand over.
//!
//! # Invariants
//!
//! - A stream moves (`Sequencer::delivered`) only once a GET returned the batch's bytes.
//! - A batch is handed over only once its object is deleted, so no later poll, and no receiver
//!   after a restart, finds it again. Until then it waits in `ready`, with its key in `done`.
//! - Every change to the inbox's state is made between two awaits, so a poll that is dropped
//!   leaves it consistent: what it had read is handed over by the next poll.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::time::Instant;

use super::S3Link;
use super::keys::{Listed, batch_key, bell_key, inbox_prefix, parse_listed};
use super::link::Strategy;
use super::store::{Call, ObjectStore};
use crate::link::{
    LinkError, NodeId, Outcome, Received, Sequencer, Skipped, StoreError, Verdict, hand_over,
};
use crate::wire::{Batch, Header};

/// The most batches of one stream a round of GETs takes: one sender's 8 MB objects do not
/// fill the poll's memory, and many senders share the GETs in flight.
const RUN: usize = 4;

/// Senders beyond which a LIST costs less than probing each (a LIST is 12.5 GETs).
const PROBE_LIMIT: usize = 12;

/// A batch to take: its key, what it must be, and what the sequencer skipped to reach it.
type Take = (String, Header, Option<(u64, Skipped)>);

/// A receiver's state.
#[derive(Debug)]
pub(super) struct Inbox {
    seq: Sequencer,
    last_list: Option<Instant>,
    last_bell: Option<Instant>,
    /// Batches taken, handed over once `done` is deleted.
    ready: Vec<Received>,
    /// Keys read (batches, duplicates, foreign objects) whose objects are still to delete, in
    /// the order they were read, and the same as a set (a LIST after a failed DELETE finds them
    /// again).
    done: Vec<String>,
    pending: HashSet<String>,
}

impl Inbox {
    pub(super) fn new(grace: Duration) -> Inbox {
        Inbox {
            seq: Sequencer::new(grace),
            last_list: None,
            last_bell: None,
            ready: Vec::new(),
            done: Vec::new(),
            pending: HashSet::new(),
        }
    }

    /// Queues `key` for deletion; false if it already was.
    fn done(&mut self, key: String) -> bool {
        let new = self.pending.insert(key.clone());
        if new {
            self.done.push(key);
        }
        new
    }
}

impl<S: ObjectStore> S3Link<S> {
    pub(super) async fn poll_inbox(&self) -> Result<Vec<Received>, LinkError> {
        let mut guard = self.inbox.lock().await;
        let inbox = &mut *guard;
        let synced = self.sync(inbox).await;
        // Delete what was read even when a later call failed; then hand it over.
        let deleted = self.delete_done(inbox).await;
        // Batches already taken from the inbox are handed over whatever failed after them.
        hand_over(synced, deleted, &mut inbox.ready)
    }

    async fn delete_done(&self, inbox: &mut Inbox) -> Result<(), StoreError> {
        while !inbox.done.is_empty() {
            let n = inbox.done.len().min(1_000);
            let chunk = &inbox.done[..n];
            self.call(Call::Delete, 0, || self.store.delete_many(chunk))
                .await?;
            for key in inbox.done.drain(..n) {
                inbox.pending.remove(&key);
            }
        }
        Ok(())
    }

    /// Whether a stream's sender spoke recently enough to be probed. A silent one is still
    /// remembered (the sequencer drops its late duplicates), only not probed.
    fn is_active(&self, last_progress: Instant, now: Instant) -> bool {
        now.duration_since(last_progress) < self.config.forget_after
    }

    async fn sync(&self, inbox: &mut Inbox) -> Result<(), StoreError> {
        let now = Instant::now();
        let active = inbox
            .seq
            .expected()
            .filter(|e| e.newest && self.is_active(e.last_progress, now))
            .count();
        let strategy = match self.config.strategy {
            Strategy::Auto if active >= PROBE_LIMIT => Strategy::List,
            Strategy::Auto => Strategy::Probe,
            chosen => chosen,
        };
        // A missing batch's grace period ended: only a LIST sees what came after it.
        let gap_due = inbox.seq.poll_timeout().is_some_and(|at| at <= now);
        let mut list = strategy == Strategy::List
            || gap_due
            || inbox
                .last_list
                .is_none_or(|at| now.duration_since(at) >= self.config.list_every);
        let bell = bell_key(&self.config.prefix, self.me);
        // With no active sender the bell is the only way to hear of one: check it every poll.
        let bell_due = active == 0
            || inbox
                .last_bell
                .is_none_or(|at| now.duration_since(at) >= self.config.bell_every);
        if !list && bell_due {
            inbox.last_bell = Some(now);
            list = self.get(&bell).await?.is_some();
        }
        if list && strategy == Strategy::Probe {
            // Delete the bell before listing: a ring before this is answered by the LIST, a
            // ring after it stays for the next poll.
            let _ = inbox.done(bell);
            self.delete_done(inbox).await?;
        }
        if list {
            self.sync_by_list(inbox, now).await?;
            inbox.last_list = Some(now);
        } else {
            self.sync_by_probe(inbox, now).await?;
        }
        Ok(())
    }

    /// Reads the inbox by listing it, in key order: each sender's batches in order.
    async fn sync_by_list(&self, inbox: &mut Inbox, now: Instant) -> Result<(), StoreError> {
        let prefix = inbox_prefix(&self.config.prefix, self.me);
        let mut start_after: Option<String> = None;
        loop {
            let after = start_after.as_deref();
            let keys = self
                .call(Call::List, 0, || self.store.list(&prefix, after, 1_000))
                .await?;
            let full = keys.len() == 1_000;
            start_after = keys.last().cloned();
            let mut left = Vec::with_capacity(keys.len());
            for key in keys {
                match parse_listed(&prefix, &key) {
                    Listed::Batch(sender, epoch, seq) => left.push((key, sender, epoch, seq)),
                    Listed::Foreign => {
                        tracing::warn!(%key, "rejected an object with a key that is not a batch's; deleting it");
                        if inbox.done(key) {
                            self.ledger.note(Outcome::Rejected, 1);
                        }
                    }
                    Listed::Outside => {
                        // Not ours to delete.
                        self.ledger.note(Outcome::Rejected, 1);
                        tracing::warn!(%key, %prefix, "the store listed a key outside the inbox; ignoring it");
                    }
                }
            }
            // In rounds: each takes, for every stream, the run of batches (up to `RUN`) that
            // follows what it delivered, all at once; a key after a hole in its run, or past
            // `RUN`, waits for the next round, when the sequencer knows what the run delivered.
            while !left.is_empty() {
                let mut take = Vec::new();
                let mut later = Vec::new();
                // Per stream taken from in this round: the sequence number its run reached, and
                // the run's length.
                let mut runs: HashMap<(NodeId, u64), (u64, usize)> = HashMap::new();
                for (key, sender, epoch, seq) in left {
                    let header = Header { sender, epoch, seq };
                    if let Some((next, len)) = runs.get_mut(&(sender, epoch)) {
                        if seq == *next && *len < RUN {
                            *next += 1;
                            *len += 1;
                            take.push((key, header, None));
                        } else {
                            later.push((key, sender, epoch, seq));
                        }
                        continue;
                    }
                    let skipped = match inbox.seq.offer(sender, epoch, seq, now) {
                        Verdict::Duplicate => {
                            if inbox.done(key) {
                                self.ledger.note(Outcome::Duplicate, 1);
                            }
                            continue;
                        }
                        // Its later keys wait with it: the sequencer answers the same for them.
                        Verdict::Wait { .. } => continue,
                        Verdict::Deliver => None,
                        Verdict::Skip { missing, reason } => Some((missing, reason)),
                    };
                    runs.insert((sender, epoch), (seq + 1, 1));
                    take.push((key, header, skipped));
                }
                if take.is_empty() {
                    break;
                }
                self.take(inbox, take, now).await?;
                left = later;
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Reads the inbox by probing each active sender's next key: every stream at once, then
    /// again for the streams that had one, until none has.
    async fn sync_by_probe(&self, inbox: &mut Inbox, now: Instant) -> Result<(), StoreError> {
        let mut streams: Vec<(NodeId, u64, u64)> = inbox
            .seq
            .expected()
            // A silent sender rings when it speaks again. An older epoch that spoke recently is
            // probed too: a dead life's last PUT may still land.
            .filter(|e| self.is_active(e.last_progress, now))
            .map(|e| (e.sender, e.epoch, e.next))
            .collect();
        while !streams.is_empty() {
            let take: Vec<_> = streams
                .iter()
                .map(|&(sender, epoch, seq)| Header { sender, epoch, seq })
                .filter(|h| inbox.seq.offer(h.sender, h.epoch, h.seq, now) == Verdict::Deliver)
                .map(|h| {
                    let key = batch_key(&self.config.prefix, self.me, h.sender, h.epoch, h.seq);
                    (key, h, None)
                })
                .collect();
            let found = self.take(inbox, take, now).await?;
            streams = found
                .into_iter()
                .map(|h| (h.sender, h.epoch, h.seq + 1))
                .collect();
        }
        Ok(())
    }

    /// GETs the batches the sequencer said to take (each stream's in order, each at most
    /// [`concurrent_gets`](super::S3LinkConfig::concurrent_gets) at once), then, in order,
    /// moves their streams and queues them to be handed over once deleted. A stream stops at
    /// its first object that is not there (gone since it was listed, or not there yet: the
    /// stream still expects it) or whose GET failed; the other streams go on, and the first
    /// failure is returned once they have. Returns the headers of the batches taken.
    ///
    /// Nothing changes in the inbox until every GET has answered, so a poll dropped while they
    /// run leaves it as it was.
    async fn take(
        &self,
        inbox: &mut Inbox,
        take: Vec<Take>,
        now: Instant,
    ) -> Result<Vec<Header>, StoreError> {
        let mut gets = Vec::with_capacity(take.len());
        for (i, (key, ..)) in take.iter().enumerate() {
            let get = self.get(key);
            gets.push(async move { (i, get.await) });
        }
        // As each answers, the next starts (a slow GET holds up no other), then in key order.
        let mut bodies: Vec<(usize, Result<Option<Bytes>, StoreError>)> =
            futures_util::stream::iter(gets)
                .buffer_unordered(self.config.concurrent_gets.max(1))
                .collect()
                .await;
        bodies.sort_unstable_by_key(|(i, _)| *i);
        let bodies = bodies.into_iter().map(|(_, body)| body);
        let mut stopped: HashSet<(NodeId, u64)> = HashSet::new();
        let mut failed = None;
        let mut taken = Vec::new();
        for ((key, expect, skipped), body) in take.into_iter().zip(bodies) {
            let stream = (expect.sender, expect.epoch);
            if stopped.contains(&stream) {
                continue;
            }
            let body = match body {
                Ok(Some(body)) => body,
                Ok(None) => {
                    stopped.insert(stream);
                    continue;
                }
                Err(err) => {
                    stopped.insert(stream);
                    failed.get_or_insert(err);
                    continue;
                }
            };
            // The sequencer decides, as each batch before it moved the stream; with what
            // came before it taken, the next of a run is what it expects.
            if skipped.is_none()
                && inbox
                    .seq
                    .offer(expect.sender, expect.epoch, expect.seq, now)
                    != Verdict::Deliver
            {
                stopped.insert(stream);
                continue;
            }
            // The bytes are ours: the stream moves on.
            inbox
                .seq
                .delivered(expect.sender, expect.epoch, expect.seq, now);
            if let Some((missing, reason)) = skipped {
                self.ledger.skipped(expect.sender, missing, reason);
            }
            if let Some(received) = self.decode(body, expect) {
                inbox.ready.push(received);
            }
            let _ = inbox.done(key);
            taken.push(expect);
        }
        failed.map_or(Ok(taken), Err)
    }

    /// Checks that an object is the batch its key says; `None` (counted) if it is not.
    fn decode(&self, body: Bytes, expect: Header) -> Option<Received> {
        let body = match &self.config.sealing {
            None => body,
            Some(sealing) => match sealing.open(&body, self.me, expect.sender) {
                Ok(plain) => Bytes::from(plain),
                Err(_) => {
                    self.ledger.note(Outcome::Unauthentic, 1);
                    return None;
                }
            },
        };
        let batch = match Batch::new_checked(&body[..]) {
            Ok(batch) if batch.header() == expect => batch,
            checked => {
                self.ledger.note(Outcome::Rejected, 1);
                tracing::warn!(
                    sender = format_args!("{:016x}", expect.sender),
                    seq = expect.seq,
                    len = body.len(),
                    problem = %checked.map_or_else(|e| e.to_string(), |_| "header disagrees with key".into()),
                    "rejected an object that is not a valid batch; deleting it"
                );
                return None;
            }
        };
        let frames = batch.frame_ranges().map(|r| body.slice(r)).collect();
        self.ledger.note(Outcome::Delivered, 1);
        Some(Received {
            sender: expect.sender,
            epoch: expect.epoch,
            seq: expect.seq,
            frames,
        })
    }
}
