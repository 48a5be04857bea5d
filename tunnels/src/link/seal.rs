//! A link's side of sealing: every batch it sends sealed for its destination, every batch it
//! receives opened, its age checked, and refusals counted and logged once per sender.
//!
//! The format and the threat model are [`wire::sealed`](crate::wire::sealed)'s. Both links
//! call [`Sealing::seal`] on the bytes of a plain batch just before the call that stores it,
//! and [`Sealing::open`] on what they read before anything else looks at it, so the sequencer
//! and the node see plain batches, as in a network without a key.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use super::NodeId;
use crate::wire::sealed::{self, Freshness, Keys, Place, SealError};

/// What a link seals with: the network's keys, its name, and the receiver's freshness rule.
#[derive(Debug)]
pub struct Sealing {
    keys: Keys,
    network: Vec<u8>,
    freshness: Freshness,
    /// Senders whose refusal was logged already.
    warned: Mutex<HashSet<NodeId>>,
}

/// Why [`Sealing::open`] refused a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The seal: see [`SealError`].
    Seal(SealError),
    /// Sealed before this receiver started (less the clock skew), or longer ago than a batch
    /// may wait: an old batch replayed.
    Stale {
        /// When it was sealed, in ms since 1970.
        sent_ms: u64,
    },
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Seal(e) => write!(f, "{e}"),
            Refused::Stale { sent_ms } => write!(
                f,
                "sealed at {sent_ms} ms, before this receiver started or too long ago: a replay"
            ),
        }
    }
}

/// The most senders whose refusal is logged: past that, refusals are only counted, so that a
/// writer inventing sender ids cannot grow the set without bound.
const MAX_WARNED: usize = 1_024;

/// The bytes sealing adds to each batch of a link with these settings: none without a key.
pub(crate) fn overhead(sealing: Option<&Arc<Sealing>>) -> usize {
    sealing.map_or(0, |_| sealed::SEAL_OVERHEAD)
}

/// Milliseconds since 1970 on this machine's clock.
pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One sealing is equal only to itself: link settings compare equal when they share it.
impl PartialEq for Sealing {
    fn eq(&self, other: &Sealing) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Sealing {
    /// Seals with `keys` for the network named `network` (every node of it gives the same
    /// name: the link's address), refusing batches sealed before now (less the skew).
    pub fn new(keys: Keys, network: impl Into<Vec<u8>>) -> Sealing {
        Sealing::with_freshness(keys, network, Freshness::since(wall_ms()))
    }

    /// The same, with a freshness rule of the caller's.
    pub fn with_freshness(
        keys: Keys,
        network: impl Into<Vec<u8>>,
        freshness: Freshness,
    ) -> Sealing {
        Sealing {
            keys,
            network: network.into(),
            freshness,
            warned: Mutex::default(),
        }
    }

    /// The keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// `plain`, a batch for node `to`, sealed (stamped with this machine's time).
    ///
    /// # Panics
    ///
    /// If `plain` is not a valid batch: the links seal only what they just encoded.
    pub fn seal(&self, plain: &[u8], to: NodeId) -> Vec<u8> {
        let place = Place {
            network: &self.network,
            destination: to,
        };
        let mut out = Vec::new();
        sealed::seal(plain, &self.keys, &place, wall_ms(), &mut out)
            .expect("the link seals batches it encoded");
        out
    }

    /// The plain batch `bytes` (read from the inbox of `me`) carries, if its seal and its age
    /// are good. A refusal is logged the first time for each `sender` (the one the object's
    /// place names), then only counted by the caller.
    pub fn open(&self, bytes: &[u8], me: NodeId, sender: NodeId) -> Result<Vec<u8>, Refused> {
        let place = Place {
            network: &self.network,
            destination: me,
        };
        let mut out = Vec::new();
        let opened = sealed::open(bytes, &self.keys, &place, &mut out)
            .map_err(Refused::Seal)
            .and_then(|sent_ms| {
                if self.freshness.accepts(sent_ms, wall_ms()) {
                    Ok(out)
                } else {
                    Err(Refused::Stale { sent_ms })
                }
            });
        if let Err(refused) = &opened {
            let first = {
                let mut warned = self
                    .warned
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                warned.len() < MAX_WARNED && warned.insert(sender)
            };
            if first {
                tracing::warn!(
                    sender = format_args!("{sender:016x}"),
                    problem = %refused,
                    "refused a batch not sealed with the network's key (further refusals of \
                     this sender are counted, not logged)"
                );
            }
        }
        opened
    }
}
