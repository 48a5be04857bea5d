//! A batch of frames: what travels as one S3 object or one log event.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +---------------------------------------------------------------+
//! |                     magic "CBAT" (4 bytes)                    |
//! +---------------+---------------+-------------------------------+
//! |   version 1   |     flags     |       key id (reserved)       |
//! +---------------+---------------+-------------------------------+
//! |                       sender id (8 bytes)                     |
//! |                                                               |
//! +---------------------------------------------------------------+
//! |                     sender epoch (8 bytes)                    |
//! |                                                               |
//! +---------------------------------------------------------------+
//! |                    sequence number (8 bytes)                  |
//! |                                                               |
//! +---------------------------------------------------------------+
//! |                       frame count (4 bytes)                   |
//! +-------------------------------+-------------------------------+
//! |     frame length (2 bytes)    |  frame bytes ...              |
//! +-------------------------------+                               |
//! |  ... frame count times                                        |
//! +---------------------------------------------------------------+
//! |             CRC32C of every byte above (4 bytes)              |
//! +---------------------------------------------------------------+
//! ```
//!
//! All numbers are big-endian. The epoch changes whenever a sender restarts, so a receiver
//! tells a restarted sender (new epoch, sequence from 0) from a replay (old epoch). The `SEALED`
//! flag and the key id are reserved for authenticated encryption: a sealed batch will carry a
//! nonce after the header and a tag before the checksum. Version 1 decoders reject it, and any
//! other flag, rather than misread it.
//!
//! The contract, as in smoltcp: once [`Batch::new_checked`] accepted a buffer, no accessor
//! panics, and iterating the frames copies nothing.

use std::fmt;
use std::ops::Range;

/// The first four bytes of every batch.
pub const MAGIC: [u8; 4] = *b"CBAT";
/// The version this code writes and reads.
pub const VERSION: u8 = 1;
/// Bytes of header before the first frame.
pub const HEADER_LEN: usize = field::FRAMES.start;
/// Bytes of checksum after the last frame.
pub const TRAILER_LEN: usize = 4;
/// Bytes each frame adds besides its own: its length.
pub const FRAME_OVERHEAD: usize = 2;
/// The longest frame a batch carries (the length is 16 bits): an IPv6 packet without jumbo
/// extension headers.
pub const MAX_FRAME_LEN: usize = u16::MAX as usize;

/// Flag bits.
pub mod flags {
    /// Reserved: the frames are encrypted and authenticated. Not supported by version 1.
    pub const SEALED: u8 = 0b0000_0001;
}

mod field {
    use std::ops::Range;

    pub(super) const MAGIC: Range<usize> = 0..4;
    pub(super) const VERSION: usize = 4;
    pub(super) const FLAGS: usize = 5;
    pub(super) const KEY_ID: Range<usize> = 6..8;
    pub(super) const SENDER: Range<usize> = 8..16;
    pub(super) const EPOCH: Range<usize> = 16..24;
    pub(super) const SEQ: Range<usize> = 24..32;
    pub(super) const COUNT: Range<usize> = 32..36;
    /// Where frames start; they end [`super::TRAILER_LEN`] bytes before the end.
    pub(super) const FRAMES: Range<usize> = 36..36;
}

/// Why bytes are not a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than a header and a checksum, or than the frames it announces.
    Truncated,
    /// Does not start with [`MAGIC`]: not a batch at all.
    BadMagic,
    /// A version this code does not read.
    UnknownVersion(u8),
    /// Flags this code does not support (a sealed batch, or unknown bits).
    UnsupportedFlags(u8),
    /// A reserved field (the key id of an unsealed batch) is not zero.
    Reserved,
    /// The checksum does not match: the bytes were damaged.
    BadChecksum,
    /// The frame lengths do not add up to the batch's length.
    BadLength,
    /// A frame longer than [`MAX_FRAME_LEN`], or more frames than the count field holds (on
    /// encoding).
    TooLong,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated => f.write_str("batch is truncated"),
            WireError::BadMagic => f.write_str("not a batch: bad magic"),
            WireError::UnknownVersion(v) => write!(f, "unknown batch version {v}"),
            WireError::UnsupportedFlags(x) => write!(f, "unsupported batch flags {x:#04x}"),
            WireError::Reserved => f.write_str("reserved batch field is not zero"),
            WireError::BadChecksum => f.write_str("batch checksum mismatch"),
            WireError::BadLength => f.write_str("batch frame lengths do not add up"),
            WireError::TooLong => f.write_str("frame or frame count too large for a batch"),
        }
    }
}

impl std::error::Error for WireError {}

/// A checked view of a batch in a buffer.
#[derive(Debug, Clone)]
pub struct Batch<T: AsRef<[u8]>> {
    buffer: T,
}

fn be_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(bytes);
    u64::from_be_bytes(b)
}

fn be_u32(bytes: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(bytes);
    u32::from_be_bytes(b)
}

impl<T: AsRef<[u8]>> Batch<T> {
    /// Wraps `buffer` after checking everything: length, magic, version, flags, checksum, and
    /// that the frames fill the batch exactly.
    ///
    /// # Errors
    ///
    /// A [`WireError`] saying what is wrong; nothing in the buffer is trusted until then.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let batch = Batch { buffer };
        batch.check()?;
        Ok(batch)
    }

    fn check(&self) -> Result<(), WireError> {
        let data = self.buffer.as_ref();
        if data.len() < field::MAGIC.end {
            return Err(if MAGIC.starts_with(data) {
                WireError::Truncated
            } else {
                WireError::BadMagic
            });
        }
        if data[field::MAGIC] != MAGIC {
            return Err(WireError::BadMagic);
        }
        if data.len() < HEADER_LEN + TRAILER_LEN {
            return Err(WireError::Truncated);
        }
        if data[field::VERSION] != VERSION {
            return Err(WireError::UnknownVersion(data[field::VERSION]));
        }
        if data[field::FLAGS] != 0 {
            return Err(WireError::UnsupportedFlags(data[field::FLAGS]));
        }
        if data[field::KEY_ID] != [0, 0] {
            // Only a sealed batch names a key; found by fuzzing: accepting it made two byte
            // strings decode to the same batch.
            return Err(WireError::Reserved);
        }
        let (body, trailer) = data.split_at(data.len() - TRAILER_LEN);
        if crc32c::crc32c(body) != be_u32(trailer) {
            return Err(WireError::BadChecksum);
        }
        // Walk the frames once: their lengths must fill the body exactly.
        let mut at = HEADER_LEN;
        for _ in 0..be_u32(&data[field::COUNT]) {
            let Some(len) = body.get(at..at + FRAME_OVERHEAD) else {
                return Err(WireError::BadLength);
            };
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            at += FRAME_OVERHEAD + len;
            if at > body.len() {
                return Err(WireError::BadLength);
            }
        }
        if at != body.len() {
            return Err(WireError::BadLength);
        }
        Ok(())
    }

    /// The sending node.
    pub fn sender(&self) -> u64 {
        be_u64(&self.buffer.as_ref()[field::SENDER])
    }

    /// The sender's epoch: changes when the sender restarts.
    pub fn epoch(&self) -> u64 {
        be_u64(&self.buffer.as_ref()[field::EPOCH])
    }

    /// The batch's sequence number within the sender's epoch, per destination.
    pub fn seq(&self) -> u64 {
        be_u64(&self.buffer.as_ref()[field::SEQ])
    }

    /// The key id (reserved; zero in version 1).
    pub fn key_id(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::KEY_ID];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// How many frames the batch carries.
    pub fn frame_count(&self) -> u32 {
        be_u32(&self.buffer.as_ref()[field::COUNT])
    }

    /// The header's fields.
    pub fn header(&self) -> Header {
        Header {
            sender: self.sender(),
            epoch: self.epoch(),
            seq: self.seq(),
        }
    }

    /// The frames, borrowed from the buffer.
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let data = self.buffer.as_ref();
        self.frame_ranges().map(move |range| &data[range])
    }

    /// Where each frame lies in the buffer, to slice a shared buffer (`bytes::Bytes`) without
    /// copying.
    pub fn frame_ranges(&self) -> FrameRanges<'_> {
        FrameRanges {
            data: self.buffer.as_ref(),
            at: HEADER_LEN,
            left: self.frame_count(),
        }
    }

    /// The buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// Iterator over the byte ranges of a checked batch's frames.
#[derive(Debug, Clone)]
pub struct FrameRanges<'a> {
    data: &'a [u8],
    at: usize,
    left: u32,
}

impl Iterator for FrameRanges<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // `new_checked` walked these same lengths and found them in bounds.
        let len = self.data.get(self.at..self.at + FRAME_OVERHEAD)?;
        let start = self.at + FRAME_OVERHEAD;
        let end = start + usize::from(u16::from_be_bytes([len[0], len[1]]));
        self.at = end;
        Some(start..end)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.left as usize;
        (left, Some(left))
    }
}

/// The header fields a sender chooses: who, which life, which batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// The sending node.
    pub sender: u64,
    /// The sender's epoch.
    pub epoch: u64,
    /// The sequence number.
    pub seq: u64,
}

/// The exact length of a batch of `frames`.
pub fn encoded_len<F: AsRef<[u8]>>(frames: &[F]) -> usize {
    HEADER_LEN
        + TRAILER_LEN
        + frames
            .iter()
            .map(|f| FRAME_OVERHEAD + f.as_ref().len())
            .sum::<usize>()
}

impl Header {
    /// Writes a batch of `frames` under this header into `buf`, which is cleared first and
    /// grows at most once (to [`encoded_len`]), so one buffer serves every batch.
    ///
    /// # Errors
    ///
    /// [`WireError::TooLong`] if a frame is longer than [`MAX_FRAME_LEN`] or there are more
    /// than `u32::MAX` frames; `buf` is then left empty.
    ///
    /// # Examples
    ///
    /// ```
    /// use tunnels::wire::{Batch, Header};
    ///
    /// let header = Header { sender: 7, epoch: 1, seq: 42 };
    /// let mut buf = Vec::new();
    /// header.emit(&[b"ping".as_slice(), b"pong"], &mut buf).unwrap();
    ///
    /// let batch = Batch::new_checked(&buf[..]).unwrap();
    /// assert_eq!(batch.header(), header);
    /// assert_eq!(batch.frames().collect::<Vec<_>>(), [b"ping", b"pong"]);
    /// ```
    pub fn emit<F: AsRef<[u8]>>(&self, frames: &[F], buf: &mut Vec<u8>) -> Result<(), WireError> {
        buf.clear();
        let count = u32::try_from(frames.len()).map_err(|_| WireError::TooLong)?;
        if frames.iter().any(|f| f.as_ref().len() > MAX_FRAME_LEN) {
            return Err(WireError::TooLong);
        }
        buf.reserve_exact(encoded_len(frames));
        buf.extend_from_slice(&MAGIC);
        buf.push(VERSION);
        buf.push(0); // flags
        buf.extend_from_slice(&0u16.to_be_bytes()); // key id
        buf.extend_from_slice(&self.sender.to_be_bytes());
        buf.extend_from_slice(&self.epoch.to_be_bytes());
        buf.extend_from_slice(&self.seq.to_be_bytes());
        buf.extend_from_slice(&count.to_be_bytes());
        for frame in frames {
            let frame = frame.as_ref();
            // Checked above: every frame is at most u16::MAX long.
            buf.extend_from_slice(&(frame.len() as u16).to_be_bytes());
            buf.extend_from_slice(frame);
        }
        let crc = crc32c::crc32c(buf);
        buf.extend_from_slice(&crc.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch from sender 0x0102030405060708, epoch 9, sequence 10, with frames "hi" and "".
    static FIXTURE: [u8; 46] = [
        b'C', b'B', b'A', b'T', 1, 0, 0, 0, // magic, version, flags, key id
        1, 2, 3, 4, 5, 6, 7, 8, // sender
        0, 0, 0, 0, 0, 0, 0, 9, // epoch
        0, 0, 0, 0, 0, 0, 0, 10, // sequence
        0, 0, 0, 2, // frame count
        0, 2, b'h', b'i', // frame "hi"
        0, 0, // frame ""
        0xaf, 0x7f, 0xd7, 0xa6, // CRC32C, computed apart from this code
    ];

    fn header() -> Header {
        Header {
            sender: 0x0102_0304_0506_0708,
            epoch: 9,
            seq: 10,
        }
    }

    #[test]
    fn parses_the_fixture() {
        let batch = Batch::new_checked(&FIXTURE[..]).unwrap();
        assert_eq!(batch.header(), header());
        assert_eq!(batch.key_id(), 0);
        assert_eq!(batch.frame_count(), 2);
        assert_eq!(batch.frames().collect::<Vec<_>>(), [&b"hi"[..], b""]);
        assert_eq!(batch.frame_ranges().collect::<Vec<_>>(), [38..40, 42..42]);
    }

    #[test]
    fn emits_the_fixture_exactly() {
        let mut buf = vec![0xff; 3]; // a reused buffer is cleared first
        header().emit(&[&b"hi"[..], b""], &mut buf).unwrap();
        assert_eq!(buf, FIXTURE);
        assert_eq!(encoded_len(&[&b"hi"[..], b""]), FIXTURE.len());
    }

    #[test]
    fn rejects_what_is_not_a_whole_batch() {
        let check = |bytes: &[u8]| Batch::new_checked(bytes).map(|_| ()).unwrap_err();
        assert_eq!(check(b""), WireError::Truncated);
        assert_eq!(check(b"CB"), WireError::Truncated);
        assert_eq!(check(b"GET / HTTP/1.1"), WireError::BadMagic);
        for cut in 4..FIXTURE.len() {
            let err = check(&FIXTURE[..cut]);
            assert!(
                matches!(err, WireError::Truncated | WireError::BadChecksum),
                "{cut}: {err:?}"
            );
        }
        let mut bad = FIXTURE;
        bad[4] = 2;
        assert_eq!(check(&bad), WireError::UnknownVersion(2));
        let mut bad = FIXTURE;
        bad[5] = flags::SEALED;
        assert_eq!(check(&bad), WireError::UnsupportedFlags(1));
        let mut bad = FIXTURE;
        bad[7] = 34; // a key id without the sealed flag
        assert_eq!(check(&bad), WireError::Reserved);
        let mut bad = FIXTURE;
        bad[39] ^= 1; // a bit of a frame
        assert_eq!(check(&bad), WireError::BadChecksum);
    }

    /// Re-seals a damaged body with a valid checksum, so that only the lengths are wrong.
    fn resealed(mut bytes: Vec<u8>) -> Vec<u8> {
        let body = bytes.len() - TRAILER_LEN;
        let crc = crc32c::crc32c(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn rejects_lying_lengths_even_with_a_good_checksum() {
        let check = |bytes: Vec<u8>| Batch::new_checked(resealed(bytes)).map(|_| ()).unwrap_err();
        let mut more = FIXTURE.to_vec();
        more[35] = 3; // three frames announced, two present
        assert_eq!(check(more), WireError::BadLength);
        let mut fewer = FIXTURE.to_vec();
        fewer[35] = 1; // one frame announced: bytes left over
        assert_eq!(check(fewer), WireError::BadLength);
        let mut long = FIXTURE.to_vec();
        long[37] = 200; // a frame longer than the batch
        assert_eq!(check(long), WireError::BadLength);
        let mut huge = FIXTURE.to_vec();
        huge[32..36].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(check(huge), WireError::BadLength);
    }

    #[test]
    fn refuses_to_emit_a_frame_too_long() {
        let mut buf = Vec::new();
        let frame = vec![0u8; MAX_FRAME_LEN + 1];
        assert_eq!(header().emit(&[frame], &mut buf), Err(WireError::TooLong));
        assert!(buf.is_empty());
        let frame = vec![0u8; MAX_FRAME_LEN];
        header().emit(&[&frame], &mut buf).unwrap();
        assert_eq!(
            Batch::new_checked(&buf)
                .unwrap()
                .frames()
                .next()
                .unwrap()
                .len(),
            MAX_FRAME_LEN
        );
    }
}
