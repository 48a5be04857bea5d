//! Sending: one object per batch, numbered per destination, and the bell.

use bytes::Bytes;
use tokio::time::Instant;

use super::S3Link;
use super::keys::{batch_key, bell_key};
use super::store::{Call, ObjectStore};
use crate::link::{LinkError, NodeId};
use crate::wire::{Header, MAX_FRAME_LEN, encoded_len};

/// What a sender remembers of a destination.
#[derive(Debug)]
pub(super) struct Outbox {
    next_seq: u64,
    last_ring: Option<Instant>,
}

impl<S: ObjectStore> S3Link<S> {
    pub(super) async fn send_batch(&self, to: NodeId, frames: &[Bytes]) -> Result<(), LinkError> {
        let now = Instant::now();
        // Checked before a number is taken: frames that cannot be sent must use none, or the
        // receiver would wait out a gap for a batch that never comes.
        let fits = frames.len() <= u32::MAX as usize
            && frames.iter().all(|f| f.len() <= MAX_FRAME_LEN)
            && encoded_len(frames) + self.seal_overhead() <= self.config.object_bytes;
        if !fits {
            return Err(LinkError::TooLarge);
        }
        let (seq, ring) = {
            let mut outboxes = self.outboxes.lock().unwrap_or_else(|e| e.into_inner());
            let outbox = outboxes.entry(to).or_insert(Outbox {
                next_seq: 0,
                last_ring: None,
            });
            // A sequence number is used up even if the PUT fails: a PUT that timed out may
            // still have landed, and a number must never name two different batches.
            let seq = outbox.next_seq;
            outbox.next_seq += 1;
            let ring = outbox
                .last_ring
                .is_none_or(|at| now.duration_since(at) >= self.config.ring_every);
            if ring {
                outbox.last_ring = Some(now);
            }
            (seq, ring)
        };
        let mut buf = Vec::new();
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
        let body = Bytes::from(buf);
        let key = batch_key(&self.config.prefix, to, self.me, self.epoch, seq);
        self.call(Call::Put, body.len(), || self.store.put(&key, body.clone()))
            .await?;
        if ring {
            // After the batch, so a receiver that hears the bell finds the batch.
            let bell = bell_key(&self.config.prefix, to);
            match self
                .call(Call::Put, 0, || self.store.put(&bell, Bytes::new()))
                .await
            {
                Ok(()) => self.rang(),
                Err(_) => {
                    // The batch is there; ring again with the next one.
                    let mut outboxes = self.outboxes.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(outbox) = outboxes.get_mut(&to) {
                        outbox.last_ring = None;
                    }
                }
            }
        }
        Ok(())
    }
}
