//! Receiving: the bell and each sender's stream read forward by token, the sequencer asked
//! about each batch, a mark written, then the batches handed over.
//!
//! # Invariants
//!
//! - A page's events are taken, and the stream's token moved past them, between two awaits: a
//!   poll that is dropped leaves the inbox consistent, and what it had taken is handed over by
//!   the next poll.
//! - A batch is handed over only once a mark that covers it is written: a receiver that
//!   restarts resumes from its last mark and never delivers it again.
//! - A batch past a gap is held in memory (the token has moved past it) until the gap fills or
//!   its grace period ends; a mark never points past a held batch.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use tokio::time::Instant;

use super::CwlLink;
use super::layout::{Mark, MarkEntry, batch_stream, bell_stream, mark_stream, parse_ring};
use super::limits::EVENT_OVERHEAD;
use super::link::ReadMode;
use super::store::{Call, LogEvent, LogStore, ReadFrom};
use crate::link::{
    LinkError, NodeId, Outcome, Received, Sequencer, Skipped, StoreError, StoreErrorKind, Verdict,
    hand_over,
};
use crate::wire::{Batch, text};

/// Reads of one stream in one poll, at most (the read rate bounds them too).
const MAX_PAGES: usize = 16;

/// A page this large (message bytes) suggests more is waiting: read on in the same poll.
const FULL_PAGE: usize = 256 << 10;

/// Where a stream is read from.
#[derive(Debug, Clone)]
struct Cursor {
    /// The token of the next read, once a read gave one.
    token: Option<String>,
    /// The time of the last event read (a read without a token starts there).
    position: i64,
    /// When the stream last had something new.
    last_heard: Instant,
}

impl Cursor {
    fn new(position: i64, now: Instant) -> Cursor {
        Cursor {
            token: None,
            position,
            last_heard: now,
        }
    }
}

/// A batch past a gap, waiting for the batches before it.
#[derive(Debug)]
struct Held {
    received: Received,
    at: i64,
}

/// A receiver's state.
#[derive(Debug)]
pub(super) struct Inbox {
    seq: Sequencer,
    resumed: bool,
    bell: Cursor,
    last_bell: Option<Instant>,
    senders: HashMap<NodeId, Cursor>,
    held: BTreeMap<(NodeId, u64, u64), Held>,
    /// Batches taken, handed over once a mark covers them.
    ready: Vec<Received>,
    /// Which active sender a poll reads first: it moves on every poll, so that when the read
    /// rate runs out part-way, every sender is read in turn and none is starved.
    turn: usize,
}

impl Inbox {
    pub(super) fn new(grace: std::time::Duration) -> Inbox {
        Inbox {
            seq: Sequencer::new(grace),
            resumed: false,
            bell: Cursor::new(0, Instant::now()),
            last_bell: None,
            senders: HashMap::new(),
            held: BTreeMap::new(),
            ready: Vec::new(),
            turn: 0,
        }
    }
}

/// Why a read stopped.
enum Stop {
    /// The stream is read to its end (or does not exist yet).
    Done,
    /// The node's read rate is spent: the rest waits for a later poll.
    Spent,
}

impl<S: LogStore> CwlLink<S> {
    pub(super) async fn poll_inbox(&self) -> Result<Vec<Received>, LinkError> {
        let mut guard = self.inbox.lock().await;
        let inbox = &mut *guard;
        let synced = self.sync(inbox).await;
        let marked = if inbox.ready.is_empty() {
            Ok(())
        } else {
            self.write_mark(inbox).await
        };
        hand_over(synced, marked, &mut inbox.ready)
    }

    async fn sync(&self, inbox: &mut Inbox) -> Result<(), StoreError> {
        let now = Instant::now();
        if !inbox.resumed {
            if !self.may_read() {
                return Ok(());
            }
            self.resume(inbox, now).await?;
        }
        if self.config.read == ReadMode::Filter {
            let read = self.read_filter(inbox, now).await;
            self.release_held(inbox, Instant::now());
            return read;
        }
        let active = |inbox: &Inbox| -> Vec<NodeId> {
            let mut ids: Vec<_> = inbox
                .senders
                .iter()
                .filter(|(_, c)| now.duration_since(c.last_heard) < self.config.forget_after)
                .map(|(&id, _)| id)
                .collect();
            ids.sort_unstable();
            ids
        };
        let bell_due = active(inbox).is_empty()
            || inbox
                .last_bell
                .is_none_or(|at| now.duration_since(at) >= self.config.bell_every);
        let mut result = Ok(());
        if bell_due {
            inbox.last_bell = Some(now);
            match self.read_bell(inbox, now).await {
                Ok(Stop::Done) => {}
                Ok(Stop::Spent) => return Ok(()),
                Err(e) => result = Err(e),
            }
        }
        if result.is_ok() {
            let mut senders = active(inbox);
            if !senders.is_empty() {
                let first = inbox.turn % senders.len();
                senders.rotate_left(first);
                inbox.turn = inbox.turn.wrapping_add(1);
            }
            for sender in senders {
                match self.read_sender(inbox, sender, now).await {
                    Ok(Stop::Done) => {}
                    Ok(Stop::Spent) => break,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
        }
        self.release_held(inbox, Instant::now());
        result
    }

    /// Reads the last mark, if any, and resumes from it.
    async fn resume(&self, inbox: &mut Inbox, now: Instant) -> Result<(), StoreError> {
        let stream = mark_stream(&self.config.prefix, self.me);
        let last = match self.read(&stream, ReadFrom::Tail, Some(1)).await {
            Ok(page) => page.events.into_iter().last(),
            Err(e) if e.kind() == StoreErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        inbox.resumed = true;
        let Some(event) = last else {
            return Ok(());
        };
        let Some(mark) = Mark::parse(&event.message) else {
            self.ledger.note(Outcome::Rejected, 1);
            tracing::warn!(%stream, "the last mark is not a mark; reading every stream from its start");
            return Ok(());
        };
        inbox.bell.position = mark.bell;
        for entry in &mark.streams {
            inbox.seq.resume(entry.sender, entry.epoch, entry.next, now);
            let cursor = inbox
                .senders
                .entry(entry.sender)
                .or_insert_with(|| Cursor::new(entry.position, now));
            cursor.position = cursor.position.min(entry.position);
        }
        tracing::info!(streams = mark.streams.len(), "resumed from the last mark");
        Ok(())
    }

    /// Reads `stream` on from `cursor`, handing each page's events to `take`.
    async fn read_on(
        &self,
        stream: &str,
        cursor: &mut Cursor,
        mut take: impl FnMut(&LogEvent),
    ) -> Result<Stop, StoreError> {
        for _ in 0..MAX_PAGES {
            if !self.may_read() {
                return Ok(Stop::Spent);
            }
            let from = match &cursor.token {
                Some(token) => ReadFrom::Token(token),
                None => ReadFrom::Time(cursor.position),
            };
            let page = match self.read(stream, from, None).await {
                Ok(page) => page,
                Err(e) if e.kind() == StoreErrorKind::NotFound => return Ok(Stop::Done),
                Err(e) if e.kind() == StoreErrorKind::BadRequest && cursor.token.is_some() => {
                    // Expired (24 h): read on from the last event's time; the sequencer drops
                    // what repeats.
                    tracing::info!(%stream, error = %e, "token refused; reading on from the last event's time");
                    cursor.token = None;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let moved =
                page.next_forward_token.is_some() && page.next_forward_token != cursor.token;
            let bytes: usize = page
                .events
                .iter()
                .map(|e| e.message.len() + EVENT_OVERHEAD)
                .sum();
            for event in &page.events {
                take(event);
                cursor.position = cursor.position.max(event.timestamp);
            }
            if page.next_forward_token.is_some() {
                cursor.token = page.next_forward_token;
            }
            // Read on while the token moves and the page was empty (the service may return
            // nothing while more exists) or large; otherwise the next poll reads on.
            if !moved || !(page.events.is_empty() || bytes >= FULL_PAGE) {
                return Ok(Stop::Done);
            }
        }
        Ok(Stop::Done)
    }

    /// Reads every stream named for this node with FilterLogEvents, from the last event's time
    /// (kept as the bell's position): the sequencer drops what repeats.
    async fn read_filter(&self, inbox: &mut Inbox, now: Instant) -> Result<(), StoreError> {
        let prefix = format!("{}{:016x}/", self.config.prefix, self.me);
        let start = inbox.bell.position;
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            if !self.may_read() {
                return Ok(());
            }
            self.read_gap().await;
            let op = Call::FilterLogEvents as usize;
            self.ledger.call(op, 0);
            let page = self
                .store
                .filter_events(&self.config.group, &prefix, start, token.as_deref())
                .await;
            self.read_answered(page.as_ref().err());
            let page = match page {
                Ok(page) => page,
                Err(e) if e.kind() == StoreErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            self.ledger.bytes(
                op,
                page.events
                    .iter()
                    .map(|f| f.event.message.len() as u64)
                    .sum(),
            );
            for found in &page.events {
                inbox.bell.position = inbox.bell.position.max(found.event.timestamp);
                let Some(sender) = found.stream.strip_prefix(&prefix).and_then(|name| {
                    u64::from_str_radix(name, 16)
                        .ok()
                        .filter(|_| name.len() == 16)
                }) else {
                    // The bell and the mark.
                    continue;
                };
                let cursor = inbox
                    .senders
                    .entry(sender)
                    .or_insert_with(|| Cursor::new(found.event.timestamp, now));
                cursor.position = cursor.position.max(found.event.timestamp);
                cursor.last_heard = now;
                self.take(inbox, sender, &found.event, now);
            }
            token = page.next_token;
            if token.is_none() {
                break;
            }
        }
        Ok(())
    }

    async fn read_bell(&self, inbox: &mut Inbox, now: Instant) -> Result<Stop, StoreError> {
        let stream = bell_stream(&self.config.prefix, self.me);
        let mut cursor = inbox.bell.clone();
        let mut rings = Vec::new();
        let mut foreign = 0;
        let stop = self
            .read_on(&stream, &mut cursor, |event| {
                match parse_ring(&event.message) {
                    Some((sender, _epoch)) => rings.push(sender),
                    None => foreign += 1,
                }
            })
            .await;
        // Taken whatever the read ended with: these pages are past the token.
        inbox.bell = cursor;
        if foreign > 0 {
            self.ledger.note(Outcome::Rejected, foreign);
            tracing::warn!(%stream, events = foreign, "events in the bell stream that are not rings: skipped");
        }
        for sender in rings {
            inbox
                .senders
                .entry(sender)
                .and_modify(|c| c.last_heard = now)
                // A sender met for the first time: its stream from the start.
                .or_insert_with(|| Cursor::new(0, now));
        }
        stop
    }

    async fn read_sender(
        &self,
        inbox: &mut Inbox,
        sender: NodeId,
        now: Instant,
    ) -> Result<Stop, StoreError> {
        let stream = batch_stream(&self.config.prefix, self.me, sender);
        let Some(mut cursor) = inbox.senders.get(&sender).cloned() else {
            return Ok(Stop::Done);
        };
        let mut heard = false;
        let stop = self
            .read_on(&stream, &mut cursor, |event| {
                heard = true;
                self.take(inbox, sender, event, now);
            })
            .await;
        if heard {
            cursor.last_heard = now;
        }
        inbox.senders.insert(sender, cursor);
        stop
    }

    /// Asks the sequencer about the batch in `event` of `sender`'s stream.
    fn take(&self, inbox: &mut Inbox, sender: NodeId, event: &LogEvent, now: Instant) {
        let Some(received) = self.decode(sender, &event.message) else {
            return;
        };
        let (epoch, seq) = (received.epoch, received.seq);
        match inbox.seq.offer(sender, epoch, seq, now) {
            Verdict::Duplicate => self.ledger.note(Outcome::Duplicate, 1),
            Verdict::Wait { .. } => {
                inbox.held.insert(
                    (sender, epoch, seq),
                    Held {
                        received,
                        at: event.timestamp,
                    },
                );
            }
            Verdict::Deliver => self.deliver(inbox, received, None, now),
            Verdict::Skip { missing, reason } => {
                self.deliver(inbox, received, Some((missing, reason)), now)
            }
        }
    }

    fn deliver(
        &self,
        inbox: &mut Inbox,
        r: Received,
        skipped: Option<(u64, Skipped)>,
        now: Instant,
    ) {
        inbox.seq.delivered(r.sender, r.epoch, r.seq, now);
        if let Some((missing, reason)) = skipped {
            self.ledger.skipped(r.sender, missing, reason);
        }
        self.ledger.note(Outcome::Delivered, 1);
        inbox.ready.push(r);
    }

    /// Offers the held batches again, in order: a gap filled, or its grace period over.
    fn release_held(&self, inbox: &mut Inbox, now: Instant) {
        let keys: Vec<_> = inbox.held.keys().copied().collect();
        for key @ (sender, epoch, seq) in keys {
            match inbox.seq.offer(sender, epoch, seq, now) {
                Verdict::Wait { .. } => {}
                Verdict::Duplicate => {
                    inbox.held.remove(&key);
                    self.ledger.note(Outcome::Duplicate, 1);
                }
                verdict => {
                    let held = inbox.held.remove(&key).expect("listed");
                    let skipped = match verdict {
                        Verdict::Skip { missing, reason } => Some((missing, reason)),
                        _ => None,
                    };
                    self.deliver(inbox, held.received, skipped, now);
                }
            }
        }
    }

    /// An event's batch, checked to come from the stream's sender; `None` (counted) if it is
    /// not one.
    fn decode(&self, sender: NodeId, message: &str) -> Option<Received> {
        match self.check_event(sender, message) {
            Ok(received) => Some(received),
            // Counted, and logged once per sender, by the sealing.
            Err(None) => {
                self.ledger.note(Outcome::Unauthentic, 1);
                None
            }
            Err(Some(problem)) => {
                self.ledger.note(Outcome::Rejected, 1);
                tracing::warn!(
                    sender = format_args!("{sender:016x}"),
                    len = message.len(),
                    %problem,
                    "an event that is not a valid batch: skipped"
                );
                None
            }
        }
    }

    /// The batch in an event of `sender`'s stream: text, then the seal if the network seals,
    /// then the batch itself; the error is what is wrong with it, or `None` if its seal or
    /// its age refused it.
    fn check_event(&self, sender: NodeId, message: &str) -> Result<Received, Option<String>> {
        let mut buf = Vec::new();
        text::decode(message, &mut buf).map_err(|e| Some(e.to_string()))?;
        if let Some(sealing) = &self.config.sealing {
            buf = sealing.open(&buf, self.me, sender).map_err(|_| None)?;
        }
        let batch = Batch::new_checked(&buf[..]).map_err(|e| Some(e.to_string()))?;
        let header = batch.header();
        if header.sender != sender {
            return Err(Some(format!(
                "a batch of {:016x} in the stream of another sender",
                header.sender
            )));
        }
        let ranges: Vec<_> = batch.frame_ranges().collect();
        let body = Bytes::from(buf);
        Ok(Received {
            sender,
            epoch: header.epoch,
            seq: header.seq,
            frames: ranges.into_iter().map(|r| body.slice(r)).collect(),
        })
    }

    /// Writes where the inbox is, before what it took is handed over.
    async fn write_mark(&self, inbox: &Inbox) -> Result<(), StoreError> {
        let oldest_held = |sender: NodeId| {
            inbox
                .held
                .iter()
                .filter(|((s, _, _), _)| *s == sender)
                .map(|(_, h)| h.at)
                .min()
        };
        let mut streams: Vec<MarkEntry> = inbox
            .seq
            .expected()
            .filter_map(|e| {
                let cursor = inbox.senders.get(&e.sender)?;
                let position =
                    oldest_held(e.sender).map_or(cursor.position, |at| at.min(cursor.position));
                Some(MarkEntry {
                    sender: e.sender,
                    epoch: e.epoch,
                    next: e.next,
                    position,
                })
            })
            .collect();
        streams.sort_by_key(|e| (e.sender, e.epoch));
        let mut mark = Mark {
            bell: inbox.bell.position,
            streams,
        };
        let room = self.config.event_bytes - EVENT_OVERHEAD;
        let mut message = mark.to_message();
        if message.len() > room {
            // Thousands of streams: keep what fits; the rest are read from their start after a
            // restart, and the sequencer drops what repeats... or delivers it again.
            tracing::warn!(
                streams = mark.streams.len(),
                "more streams than a mark holds; marking the first"
            );
            while message.len() > room && !mark.streams.is_empty() {
                let keep = mark.streams.len() * room / message.len();
                mark.streams.truncate(keep.min(mark.streams.len() - 1));
                message = mark.to_message();
            }
        }
        let event = LogEvent {
            timestamp: self.now_ms(),
            message,
        };
        self.put(&mark_stream(&self.config.prefix, self.me), &[event])
            .await
    }
}
