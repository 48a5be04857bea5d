//! The CloudWatch Logs link: batches as log events, a log stream per sender per destination.
//!
//! # Layout
//!
//! One log group per network (created on demand with a retention of one day: a batch is read
//! within seconds, and storage is billed by the GB-month), and in it, per destination node:
//!
//! ```text
//! {prefix}{dest}/{sender}   batches from sender to dest: one event each, as wire::text (Z85)
//! {prefix}{dest}/bell       rings: "a sender is talking to you"
//! {prefix}{dest}/mark       where dest's receiver had read, written before it delivers
//! ```
//!
//! Node ids are 16 lower-case hex digits ([`layout`] has the formats).
//!
//! Why this layout, by the cost model: PutLogEvents is billed per byte ingested, not per call,
//! so the layout cannot make writing cheaper; what it decides is how many *reads* a receiver
//! makes, and reads are what an account may make only a few of. GetLogEvents: 10 a second per
//! account and region in AWS's published quotas, shared by every node (some accounts see more
//! now: check Service Quotas; the simulation assumes 10). FilterLogEvents: 5 a second, a hard
//! quota (AWS Knowledge Center, "How do I determine throttling in my CloudWatch logs?"). A stream per sender per
//! destination has one writer, whose events land in order with times that never go back, so a
//! forward token reads it exactly: no event is skipped or read twice, whatever shares a
//! millisecond. A stream shared by all senders of a destination would take one read a poll,
//! but its events interleave by time from writers with different clocks and a token read can
//! miss a late one; the seed (Richard Linklayer) used a log group per destination and
//! FilterLogEvents with a time cursor, which skips events sharing a millisecond and spends the
//! account's 5 filter calls a second on one busy node.
//!
//! # Sending
//!
//! A send packs its frames, in order, into batches of one event each (256 KB with the 26 bytes
//! of overhead by default, [`CwlLinkConfig::event_bytes`]), numbered per destination from 0 in
//! each epoch, and writes them in one PutLogEvents call: four full events fill the call's
//! 1,048,576 bytes ([`limits`]; the link's [`limits`](crate::Link::limits) size the node's
//! bundles so a bundle always fits one call). Sends to one destination are serialised, so its
//! stream has one writer at a time. A missing stream (or group) is created and the call made
//! again. A sender rings a destination's bell after its first send, and again when it speaks
//! after [`CwlLinkConfig::ring_every`] of silence.
//!
//! # Receiving
//!
//! A receiver reads, with GetLogEvents from the token its last read returned, the stream of
//! each sender it heard from within [`CwlLinkConfig::forget_after`], and its bell: on every
//! poll while it hears from no one (an idle node's poll is one read), every
//! [`CwlLinkConfig::bell_every`] otherwise. A ring names a sender; a sender met for the first
//! time is read from the start of its stream (what the retention kept); a sender forgotten is
//! read on from where the receiver left it. A read goes on in the same poll while the token
//! moves and the page was empty (the service may return nothing while more exists) or large;
//! otherwise the next poll goes on. A token expires after a day: the read starts again from the
//! last event's time, and the sequencer drops what repeats.
//!
//! Every read takes one from the node's read rate ([`CwlLinkConfig::read_rate`], `tunnel up
//! --read-rate`, a `cardio` budget): when it is spent, the poll ends and the rest waits for the
//! next one. A read that is throttled (`ThrottlingException`) or fails ends the poll too, which
//! fails if it took nothing, and the node's heart slows; the next poll reads on from the same
//! token, so nothing is lost. Writes are retried with backoff and jitter.
//!
//! The account's quota is shared by every node, so a throttle also widens the gap a node
//! leaves between its reads: from none to 100 ms, doubling with each throttle up to 30 s,
//! shrinking by a sixteenth with each read the service answers, jittered so that nodes spread
//! out. A fleet whose reads outrun the quota settles near a share each, and a hub whose many
//! clients poll for replies still reads its senders (a read waits out the gap; it does not end
//! the poll).
//!
//! # Exactly once
//!
//! The [`Sequencer`](crate::link::Sequencer) decides about each batch, as on S3. Events cannot
//! be deleted, so a receiver writes a *mark* (each live stream's sender, epoch, next sequence
//! number and read position, and the bell's position) to its mark stream before it hands over
//! what a poll took. A receiver that restarts reads its last mark (one read), resumes each
//! stream there, and reads on from those positions: what its previous life delivered is a
//! duplicate. A batch past a gap is held in memory until the gap fills or its grace period
//! ends, and a mark never points past it. A receiver with no mark reads every stream from its
//! start.
//!
//! Costs: a mark is about 70 bytes per live stream, written once per poll that delivered
//! something; a ring is 37 bytes. Both are ingested at $0.50 per GB: a busy day of marks costs
//! cents, an idle day nothing.
//!
//! # Parts
//!
//! - [`layout`]: stream names, rings and marks.
//! - [`limits`]: what one PutLogEvents call may carry, and a checker.
//! - [`store`]: the calls the link makes, as a trait ([`LogStore`]).
//! - `memory`: [`MemoryLogs`], CloudWatch Logs in memory (limits, quotas, latency), for the
//!   simulation and tests.
//! - `aws` (feature `aws`): [`CwlStore`], the store on the AWS SDK.

#[cfg(feature = "aws")]
mod aws;
mod inbox;
pub mod layout;
pub mod limits;
mod link;
mod memory;
mod outbox;
pub mod store;

#[cfg(feature = "aws")]
pub use aws::{CwlStore, CwlStoreConfig};
pub use limits::{LimitError, check_put};
pub use link::{CwlLink, CwlLinkConfig, DEFAULT_READ_RATE, ReadMode, read_rate};
pub use memory::{LogsModel, MemoryLogs};
pub use store::{Call, FilterPage, FoundEvent, LogEvent, LogPage, LogStore, ReadFrom};
