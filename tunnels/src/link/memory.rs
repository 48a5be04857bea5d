//! A lossless in-process link, for tests of what sits above links (nodes, routing, devices).
//!
//! What a node sends is in the destination's inbox at once, in order, and the next poll takes
//! it; nothing fails, nothing costs. For a link that behaves like a service (latency, failures,
//! prices), use the S3 link over [`MemoryStore`](super::s3::MemoryStore).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use bundler::ApiLimits;
use bytes::Bytes;

use super::{Ledger, Link, LinkError, LinkStats, NodeId, Outcome, Prices, Received, Usage};
use crate::wire::{FRAME_OVERHEAD, MAX_FRAME_LEN};

/// The operations a memory link counts.
const OPS: &[&str] = &["send", "poll"];

/// Inboxes of in-process links; cloning shares them.
///
/// # Examples
///
/// Two nodes, one frame:
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use bytes::Bytes;
/// use tokio::sync::mpsc;
/// use tunnels::link::MemoryNetwork;
/// use tunnels::{Node, NodeConfig, Received};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let net = MemoryNetwork::new();
/// let a = Node::start(Arc::new(net.link(1, 1 << 20)), NodeConfig::default(), |_| {});
/// let (tx, mut rx) = mpsc::unbounded_channel();
/// let b = Node::start(Arc::new(net.link(2, 1 << 20)), NodeConfig::default(), move |r: Received| {
///     let _ = tx.send(r.frames);
/// });
/// a.send(2, Bytes::from_static(b"hello")).unwrap();
/// let frames = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
/// assert_eq!(frames, [Bytes::from_static(b"hello")]);
/// a.shutdown().await;
/// b.shutdown().await;
/// # });
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryNetwork {
    inboxes: Arc<Mutex<HashMap<NodeId, VecDeque<Received>>>>,
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> Self {
        MemoryNetwork::default()
    }

    /// The link of node `me`, carrying at most `batch_bytes` of frames a send (each frame
    /// counted with its 2-byte length, as on the wire).
    pub fn link(&self, me: NodeId, batch_bytes: usize) -> MemoryLink {
        MemoryLink {
            network: self.clone(),
            me,
            batch_bytes,
            next_seq: Mutex::default(),
            ledger: Ledger::new(me, OPS, Prices::FREE),
        }
    }
}

/// One node's link on a [`MemoryNetwork`].
#[derive(Debug)]
pub struct MemoryLink {
    network: MemoryNetwork,
    me: NodeId,
    batch_bytes: usize,
    next_seq: Mutex<HashMap<NodeId, u64>>,
    ledger: Ledger,
}

impl Link for MemoryLink {
    fn limits(&self) -> ApiLimits {
        ApiLimits::new(
            "memory",
            self.batch_bytes,
            usize::MAX,
            MAX_FRAME_LEN + FRAME_OVERHEAD,
        )
        .with_item_overhead(FRAME_OVERHEAD)
    }

    async fn send(&self, to: NodeId, frames: &[Bytes]) -> Result<(), LinkError> {
        let bytes: usize = frames.iter().map(|f| f.len() + FRAME_OVERHEAD).sum();
        if bytes > self.batch_bytes || frames.iter().any(|f| f.len() > MAX_FRAME_LEN) {
            return Err(LinkError::TooLarge);
        }
        self.ledger.call(0, bytes as u64);
        let seq = {
            let mut next = self.next_seq.lock().unwrap_or_else(PoisonError::into_inner);
            let seq = next.entry(to).or_insert(0);
            *seq += 1;
            *seq - 1
        };
        let batch = Received {
            sender: self.me,
            epoch: 0,
            seq,
            frames: frames.to_vec(),
        };
        let mut inboxes = self
            .network
            .inboxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        inboxes.entry(to).or_default().push_back(batch);
        Ok(())
    }

    async fn poll(&self) -> Result<Vec<Received>, LinkError> {
        let batches: Vec<Received> = {
            let mut inboxes = self
                .network
                .inboxes
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            inboxes
                .get_mut(&self.me)
                .map(|inbox| inbox.drain(..).collect())
                .unwrap_or_default()
        };
        let bytes: usize = batches
            .iter()
            .flat_map(|b| &b.frames)
            .map(|f| f.len() + FRAME_OVERHEAD)
            .sum();
        self.ledger.call(1, bytes as u64);
        self.ledger.note(Outcome::Delivered, batches.len() as u64);
        Ok(batches)
    }

    fn usage(&self) -> Usage {
        self.ledger.usage()
    }

    fn prices(&self) -> &Prices {
        self.ledger.prices()
    }

    fn stats(&self) -> &LinkStats {
        self.ledger.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_in_order_to_the_destination_only() {
        let net = MemoryNetwork::new();
        let (a, b, c) = (net.link(1, 1_000), net.link(2, 1_000), net.link(3, 1_000));
        a.send(2, &[Bytes::from_static(b"x")]).await.unwrap();
        a.send(2, &[Bytes::from_static(b"y"), Bytes::from_static(b"z")])
            .await
            .unwrap();
        assert!(c.poll().await.unwrap().is_empty());
        let got = b.poll().await.unwrap();
        assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(got[1].frames, [&b"y"[..], b"z"]);
        assert!(b.poll().await.unwrap().is_empty());
        assert_eq!(a.usage().get("send").bytes, 9, "3 bytes and 3 lengths");
        assert_eq!(b.usage().calls("poll"), 2);
        assert_eq!(a.cost(), 0.0);
        assert_eq!(
            a.send(2, &[Bytes::from(vec![0; 999])]).await,
            Err(LinkError::TooLarge)
        );
    }
}
