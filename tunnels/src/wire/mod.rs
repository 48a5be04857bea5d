//! The wire format: many frames per API call.
//!
//! A [`Batch`] carries the frames of one API call (one S3 object, one log event) with the
//! sender's id, epoch and sequence number, so that a receiver drops duplicates and notices a
//! restarted sender, and a CRC32C, so that damaged or foreign bytes are refused instead of
//! delivered. [`text`] writes batches as UTF-8 for transports that carry only text.
//! [`sealed`] encrypts and authenticates a batch with the network's key (its module docs hold
//! the threat model).
//!
//! Decoding never panics on any input (the `fuzz/` targets check that), and refuses
//! truncation, foreign bytes, unknown versions, damage and lying lengths with a [`WireError`].

mod batch;
pub mod sealed;
pub mod text;

pub use batch::{
    Batch, FRAME_OVERHEAD, FrameRanges, HEADER_LEN, Header, MAGIC, MAX_FRAME_LEN, TRAILER_LEN,
    VERSION, WireError, encoded_len, flags,
};
