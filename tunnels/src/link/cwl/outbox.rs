//! Sending: frames packed into batches of one event each, as few calls as the limits allow,
//! one writer per stream, and the bell.

use std::sync::{Arc, PoisonError};

use bytes::Bytes;
use tokio::time::Instant;

use super::CwlLink;
use super::layout::{batch_stream, bell_stream, ring};
use super::limits::{EVENT_OVERHEAD, MAX_CALL_BYTES};
use super::store::{LogEvent, LogStore};
use crate::link::{LinkError, NodeId};
use crate::wire::{FRAME_OVERHEAD, HEADER_LEN, Header, MAX_FRAME_LEN, TRAILER_LEN, text};

/// What a sender remembers of a destination. Held (an async lock) for the whole of a send, so
/// that the destination's stream has one writer at a time: its events land in the order of
/// their sequence numbers, with times that never go back.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    next_seq: u64,
    last_ms: i64,
    last_send: Option<Instant>,
}

impl<S: LogStore> CwlLink<S> {
    pub(super) async fn send_batches(&self, to: NodeId, frames: &[Bytes]) -> Result<(), LinkError> {
        let room = self.batch_bytes - HEADER_LEN - TRAILER_LEN;
        // Checked before a number is taken: frames that cannot be sent must use none.
        if frames.is_empty()
            || frames
                .iter()
                .any(|f| f.len() > MAX_FRAME_LEN || f.len() + FRAME_OVERHEAD > room)
        {
            return Err(LinkError::TooLarge);
        }
        // Greedy, in order: each batch as full as its event allows.
        let mut batches: Vec<&[Bytes]> = Vec::new();
        let (mut start, mut used) = (0, 0);
        for (i, frame) in frames.iter().enumerate() {
            let need = frame.len() + FRAME_OVERHEAD;
            if used + need > room {
                batches.push(&frames[start..i]);
                (start, used) = (i, 0);
            }
            used += need;
        }
        batches.push(&frames[start..]);

        let outbox = {
            let mut outboxes = self.outboxes.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(outboxes.entry(to).or_default())
        };
        let mut outbox = outbox.lock().await;
        let now = Instant::now();
        // Times never go back within a stream, whatever the clock does.
        let ms = self.now_ms().max(outbox.last_ms);
        outbox.last_ms = ms;
        let ring_due = outbox
            .last_send
            .is_none_or(|at| now.duration_since(at) >= self.config.ring_every);
        let mut events = Vec::with_capacity(batches.len());
        let mut buf = Vec::new();
        for frames in batches {
            // A number is used up even if the call fails: a call that timed out may still have
            // landed, and a number must never name two different batches.
            let seq = outbox.next_seq;
            outbox.next_seq += 1;
            buf.clear();
            Header {
                sender: self.me,
                epoch: self.epoch,
                seq,
            }
            .emit(frames, &mut buf)
            .map_err(|_| LinkError::TooLarge)?;
            if let Some(sealing) = &self.config.sealing {
                buf = sealing.seal(&buf, to);
            }
            let mut message =
                String::with_capacity(text::encoded_len(buf.len(), self.config.encoding));
            text::encode(&buf, self.config.encoding, &mut message);
            events.push(LogEvent {
                timestamp: ms,
                message,
            });
        }
        let stream = batch_stream(&self.config.prefix, to, self.me);
        let per_call = self.events_per_call();
        let mut rest = &events[..];
        while !rest.is_empty() {
            let (mut n, mut bytes) = (0, 0);
            while n < rest.len().min(per_call)
                && bytes + rest[n].message.len() + EVENT_OVERHEAD <= MAX_CALL_BYTES
            {
                bytes += rest[n].message.len() + EVENT_OVERHEAD;
                n += 1;
            }
            self.put(&stream, &rest[..n]).await?;
            rest = &rest[n..];
        }
        outbox.last_send = Some(now);
        if ring_due {
            // After the batches, so a receiver that hears the ring finds them.
            let event = LogEvent {
                timestamp: ms,
                message: ring(self.me, self.epoch),
            };
            match self
                .put(&bell_stream(&self.config.prefix, to), &[event])
                .await
            {
                Ok(()) => self.rang(),
                // The batches are there; ring again with the next send.
                Err(_) => outbox.last_send = None,
            }
        }
        Ok(())
    }
}
