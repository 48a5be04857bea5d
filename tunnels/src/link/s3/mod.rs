//! The S3 link: batches as objects in a bucket, one inbox per node.
//!
//! # Layout
//!
//! ```text
//! {prefix}{dest}/{sender}/{epoch}/{seq}    a batch, every number 16 lower-case hex digits
//! {prefix}{dest}.bell                      "look at your inbox": rung by senders
//! ```
//!
//! Hex of fixed width sorts like the numbers, so listing an inbox (S3 lists in UTF-8 binary
//! order) gives each sender's batches in order, epoch by epoch. A receiver deletes what it read
//! (DELETE is free), so an inbox holds only what is new, and a LIST of it is short.
//!
//! # Receiving: list or probe
//!
//! - **list** (Hoshino's way): LIST the inbox, GET what is new, DELETE it. A LIST costs as much
//!   as a PUT, $0.005 per 1,000.
//! - **probe**: GET the next expected key of each sender we know ($0.0004 per 1,000, 12.5 times
//!   cheaper than a LIST), and GET our bell. A sender PUTs the bell *after* its batch when it
//!   starts talking to us and then every `ring_every` while it does; a receiver that finds the
//!   bell deletes it *before* it LISTs, so no ring is lost between the two. A LIST also runs
//!   every `list_every`, and when a missing batch's grace period ends, to recover from anything
//!   else.
//!
//! [`Strategy::Auto`] probes while fewer senders are active than a LIST is worth in GETs, and
//! lists when more are.
//!
//! # Order, duplicates, gaps
//!
//! What to do with each batch found is the [`Sequencer`](crate::link::Sequencer)'s call: each
//! sender numbers its batches per destination from 0 in each epoch (a new epoch when it
//! restarts), and the receiver delivers them in order, drops what it passed (a retried PUT),
//! waits `gap_grace` for a missing batch (a PUT may still be under way), then counts it lost. A
//! batch moves its stream only once its GET returned the bytes, and is handed over only once
//! its object is deleted: a failed GET leaves it for the next poll, and a receiver that restarts
//! never delivers it again. An object that is not a valid batch, or whose header disagrees with
//! its key, is counted, deleted and skipped; it never stops the inbox.
//!
//! # Parts
//!
//! - [`keys`]: the key layout.
//! - `outbox`: sending, and ringing bells.
//! - `inbox`: receiving by list or probe.
//! - [`store`]: the four calls the link makes, as a trait ([`ObjectStore`]).
//! - `memory`: [`MemoryStore`], an S3 in memory with a latency model, for the simulation.
//! - `aws` (feature `aws`): [`S3Store`], the store on the AWS SDK.
//! - `local` (feature `local-s3`): an S3-compatible server in process, for the demo and tests.

#[cfg(feature = "aws")]
mod aws;
mod inbox;
pub mod keys;
mod link;
#[cfg(feature = "local-s3")]
pub mod local;
mod memory;
mod outbox;
pub mod store;

#[cfg(feature = "aws")]
pub use aws::{S3Store, S3StoreConfig};
pub use keys::{batch_key, bell_key};
pub use link::{S3Link, S3LinkConfig, Strategy};
pub use memory::{LatencyModel, MemoryStore, PrefixRate, RateLimits};
pub use store::{Call, ObjectStore};
