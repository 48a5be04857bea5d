//! Sealed batches: encrypted and authenticated with the network's key, bound to their place.
//!
//! ```text
//! +---------------------------------------------------------------+
//! | header, as a plain batch's (36 bytes), flags SEALED, key id K |
//! +---------------------------------------------------------------+
//! |                     nonce (24 bytes, random)                  |
//! +---------------------------------------------------------------+
//! | encrypted: time sealed (8 bytes, ms since 1970) and the       |
//! | frames exactly as a plain batch lays them out                 |
//! +---------------------------------------------------------------+
//! |                   Poly1305 tag (16 bytes)                     |
//! +---------------------------------------------------------------+
//! |             CRC32C of every byte above (4 bytes)              |
//! +---------------------------------------------------------------+
//! ```
//!
//! The AEAD is XChaCha20-Poly1305 (RFC 8439's ChaCha20-Poly1305 with HChaCha20's 192-bit
//! nonces). Why: nonces are drawn at random per batch by every node of a network, with no
//! counter to keep across restarts; 192 random bits make a repeat negligible for any number
//! of batches a network will ever send (96-bit nonces would want a counter, or a new key every
//! few billion batches), and ChaCha20 is fast without AES hardware, on every machine a node
//! runs on. The associated data is the header (sender, epoch, sequence number, frame count,
//! key id), the destination node and the network's name, so a batch cannot be moved to another
//! inbox, another sender or another position, nor into another network sharing the key. The
//! CRC32C stays, outside the tag, so that damage is told apart from forgery cheaply.
//!
//! Sealing costs [`SEAL_OVERHEAD`] bytes a batch (nonce, tag, time), not a byte a frame.
//!
//! # Threat model
//!
//! The attacker can read, write, delete and copy objects under the tunnel's S3 prefix or
//! events in its log group (a leaked key, a shared bucket, a curious auditor), and sees every
//! call's timing and size. They do not hold the network key.
//!
//! - They **cannot read** packets: frames are encrypted. They learn a batch's sender,
//!   destination, epoch, sequence number, frame count, size and time.
//! - They **cannot inject**: a batch that does not open under one of the node's keys, with its
//!   own header, destination and network, is rejected and never reaches the device; a plain
//!   batch in a sealed network likewise.
//! - They **cannot replay**: a batch already delivered (same sender, epoch, sequence) is a
//!   duplicate for the sequencer; a whole old epoch replayed after the receiver restarted is
//!   refused by the time sealed inside it, which must not be older than the receiver's own
//!   start (less the allowed clock skew) nor older than the longest age a batch may wait
//!   ([`Freshness`]). What remains: a batch copied within the clock skew before a receiver
//!   restarts can be delivered twice, once to each life, as a network may repeat a packet.
//! - They **can** delay, drop, reorder (the sequencer restores order or counts a loss), and
//!   cost the owner money (calls, ingestion, rings of the bell). Without sealing, anyone who
//!   can write there can put packets into a node's device, and anyone who can read there sees
//!   every packet in the clear.
//!
//! Keys: a network has one key or, while it rotates, two: [`Keys`] seals with the first and
//! opens with either, by key id.

use std::fmt;
use std::num::NonZeroU16;

use base64::Engine;
use chacha20poly1305::aead::{AeadInPlace, KeyInit, OsRng, rand_core::RngCore};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

use super::batch::{Batch, HEADER_LEN, MAGIC, TRAILER_LEN, VERSION, WireError, flags};

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// Bytes of the random nonce after the header.
pub const NONCE_LEN: usize = 24;
/// Bytes of the authentication tag.
pub const TAG_LEN: usize = 16;
/// Bytes of the time sealed in with the frames.
pub const SENT_LEN: usize = 8;
/// What sealing adds to a batch, whatever its frames.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + SENT_LEN + TAG_LEN;

/// Where in a batch the flags and the key id are (as in a plain batch).
const FLAGS: usize = 5;
const KEY_ID: std::ops::Range<usize> = 6..8;

/// A network key and its id.
#[derive(Clone)]
pub struct Key {
    id: NonZeroU16,
    bytes: [u8; KEY_LEN],
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Why a key or a key file is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

impl Key {
    /// The key `bytes`, known as `id`.
    pub fn new(id: NonZeroU16, bytes: [u8; KEY_LEN]) -> Key {
        Key {
            id,
            bytes,
            cipher: XChaCha20Poly1305::new(&bytes.into()),
        }
    }

    /// A new random key (from the operating system's generator) with a random id.
    pub fn generate() -> Key {
        let mut bytes = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut bytes);
        let id = loop {
            if let Some(id) = NonZeroU16::new(OsRng.next_u32() as u16) {
                break id;
            }
        };
        Key::new(id, bytes)
    }

    /// The key's id, carried in every batch it seals.
    pub fn id(&self) -> NonZeroU16 {
        self.id
    }

    /// The key as one line of a key file: `tunnel-key <id, 4 hex digits> <base64 of 32 bytes>`.
    ///
    /// ```
    /// use tunnels::wire::sealed::Key;
    ///
    /// let key = Key::generate();
    /// let again = Key::parse(&key.to_line()).unwrap();
    /// assert_eq!(again.id(), key.id());
    /// assert_eq!(again.to_line(), key.to_line());
    /// ```
    pub fn to_line(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.bytes);
        format!("tunnel-key {:04x} {b64}", self.id)
    }

    /// Reads a line written by [`Key::to_line`].
    ///
    /// # Errors
    ///
    /// A [`KeyError`] that says what is wrong, never quoting the key.
    pub fn parse(line: &str) -> Result<Key, KeyError> {
        let mut words = line.split_whitespace();
        let (Some("tunnel-key"), Some(id), Some(b64), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(KeyError(
                "not a key line: expected `tunnel-key ID BASE64`, as `tunnel keygen` prints".into(),
            ));
        };
        let id = u16::from_str_radix(id, 16)
            .ok()
            .and_then(NonZeroU16::new)
            .ok_or_else(|| KeyError(format!("key id {id:?} is not 1 to 4 hex digits, not 0")))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| <[u8; KEY_LEN]>::try_from(b).ok())
            .ok_or_else(|| KeyError(format!("key {id:04x} is not {KEY_LEN} bytes in base64")))?;
        Ok(Key::new(id, bytes))
    }
}

/// The keys a node holds: the one it seals with, and one more it accepts while a network
/// rotates its key.
#[derive(Debug, Clone)]
pub struct Keys {
    seal: Key,
    also: Option<Key>,
}

impl Keys {
    /// Seals with `seal`; opens with it and with `also`.
    ///
    /// # Errors
    ///
    /// When the two keys share an id (a batch would not say which opens it).
    pub fn new(seal: Key, also: Option<Key>) -> Result<Keys, KeyError> {
        if also.as_ref().is_some_and(|k| k.id == seal.id) {
            return Err(KeyError(format!(
                "two keys with the id {:04x}: give the new key its own (tunnel keygen)",
                seal.id
            )));
        }
        Ok(Keys { seal, also })
    }

    /// Reads a key file: one or two key lines ([`Key::to_line`]); the first seals, both open.
    /// Blank lines and lines starting with `#` are skipped.
    ///
    /// # Errors
    ///
    /// No key, more than two, a line that is not a key, or two keys with one id.
    pub fn parse(text: &str) -> Result<Keys, KeyError> {
        let mut keys = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .enumerate()
            .map(|(i, line)| {
                Key::parse(line).map_err(|e| KeyError(format!("line {}: {e}", i + 1)))
            });
        let seal = keys
            .next()
            .ok_or_else(|| KeyError("no key in the key file (tunnel keygen makes one)".into()))??;
        let also = keys.next().transpose()?;
        if keys.next().is_some() {
            return Err(KeyError(
                "more than two keys: a node holds the key it seals with and at most one more"
                    .into(),
            ));
        }
        Keys::new(seal, also)
    }

    /// The key batches are sealed with.
    pub fn sealing(&self) -> &Key {
        &self.seal
    }

    fn by_id(&self, id: u16) -> Option<&Key> {
        std::iter::once(&self.seal)
            .chain(self.also.as_ref())
            .find(|k| k.id.get() == id)
    }
}

/// Where a batch belongs: what its seal binds it to, besides its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place<'a> {
    /// The network's name (the link's address: bucket and prefix, or log group and prefix).
    pub network: &'a [u8],
    /// The node the batch is for.
    pub destination: u64,
}

fn aad(header: &[u8], place: &Place<'_>) -> Vec<u8> {
    let mut aad = Vec::with_capacity(HEADER_LEN + 8 + 2 + place.network.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(&place.destination.to_be_bytes());
    // The length first, so that no two (destination, network) pairs give the same bytes.
    aad.extend_from_slice(&(place.network.len() as u64).to_be_bytes());
    aad.extend_from_slice(place.network);
    aad
}

/// Why a sealed batch is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    /// Not a batch at all (or damaged): the wire's own reason.
    Wire(WireError),
    /// A plain batch, where the network seals.
    Unsealed,
    /// Sealed with a key this node does not hold (another network's, or a retired one).
    UnknownKey(u16),
    /// The tag does not match: a wrong key under a known id, tampered bytes, or a batch moved
    /// to another inbox, sender, position or network.
    Forged,
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealError::Wire(e) => write!(f, "{e}"),
            SealError::Unsealed => f.write_str("batch is not sealed, but the network is"),
            SealError::UnknownKey(id) => write!(f, "batch sealed with unknown key {id:04x}"),
            SealError::Forged => f.write_str("sealed batch failed authentication"),
        }
    }
}

impl std::error::Error for SealError {}

/// Seals `plain`, a plain batch ([`Batch::new_checked`] must accept it), for `place` with
/// `keys`' sealing key and a random nonce, stamping it `sent_ms`; writes the sealed batch into
/// `out`, which is cleared first.
///
/// # Errors
///
/// The [`WireError`] if `plain` is not a valid plain batch.
///
/// # Examples
///
/// ```
/// use tunnels::wire::Header;
/// use tunnels::wire::sealed::{self, Key, Keys, Place};
///
/// let keys = Keys::new(Key::generate(), None).unwrap();
/// let place = Place { network: b"s3://bucket/net/", destination: 0xb };
/// let mut plain = Vec::new();
/// Header { sender: 0xa, epoch: 1, seq: 0 }.emit(&[b"ping"], &mut plain).unwrap();
/// let mut sealed = Vec::new();
/// sealed::seal(&plain, &keys, &place, 1_700_000_000_000, &mut sealed).unwrap();
/// assert_eq!(sealed.len(), plain.len() + sealed::SEAL_OVERHEAD);
///
/// let mut opened = Vec::new();
/// let sent = sealed::open(&sealed, &keys, &place, &mut opened).unwrap();
/// assert_eq!((sent, &opened[..]), (1_700_000_000_000, &plain[..]));
/// // Moved to another inbox, it no longer opens.
/// let elsewhere = Place { destination: 0xc, ..place };
/// assert!(sealed::open(&sealed, &keys, &elsewhere, &mut opened).is_err());
/// ```
pub fn seal(
    plain: &[u8],
    keys: &Keys,
    place: &Place<'_>,
    sent_ms: u64,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    out.clear();
    Batch::new_checked(plain)?;
    let key = &keys.seal;
    let frames = &plain[HEADER_LEN..plain.len() - TRAILER_LEN];
    out.reserve_exact(plain.len() + SEAL_OVERHEAD);
    out.extend_from_slice(&plain[..HEADER_LEN]);
    out[FLAGS] = flags::SEALED;
    out[KEY_ID].copy_from_slice(&key.id.get().to_be_bytes());
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    out.extend_from_slice(&nonce);
    let body = out.len();
    out.extend_from_slice(&sent_ms.to_be_bytes());
    out.extend_from_slice(frames);
    let aad = aad(&out[..HEADER_LEN], place);
    let (head, text) = out.split_at_mut(body);
    let tag = key
        .cipher
        .encrypt_in_place_detached(XNonce::from_slice(&head[HEADER_LEN..]), &aad, text)
        .expect("XChaCha20-Poly1305 seals any length a batch can have");
    out.extend_from_slice(&tag);
    let crc = crc32c::crc32c(out);
    out.extend_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Opens `sealed` for `place` with whichever of `keys` its key id names, writing the plain
/// batch it carries into `out` (cleared first); returns the time it was sealed, in ms since
/// 1970. Never panics, whatever the bytes.
///
/// # Errors
///
/// A [`SealError`]: not a batch, not sealed, an unknown key, or failed authentication.
pub fn open(
    sealed: &[u8],
    keys: &Keys,
    place: &Place<'_>,
    out: &mut Vec<u8>,
) -> Result<u64, SealError> {
    out.clear();
    let min = HEADER_LEN + NONCE_LEN + SENT_LEN + TAG_LEN + TRAILER_LEN;
    if sealed.len() < 4 || sealed[..4] != MAGIC {
        return Err(SealError::Wire(WireError::BadMagic));
    }
    if sealed.len() < HEADER_LEN + TRAILER_LEN {
        return Err(SealError::Wire(WireError::Truncated));
    }
    if sealed[4] != VERSION {
        return Err(SealError::Wire(WireError::UnknownVersion(sealed[4])));
    }
    match sealed[FLAGS] {
        0 => return Err(SealError::Unsealed),
        flags::SEALED => {}
        other => return Err(SealError::Wire(WireError::UnsupportedFlags(other))),
    }
    if sealed.len() < min {
        return Err(SealError::Wire(WireError::Truncated));
    }
    let (body, trailer) = sealed.split_at(sealed.len() - TRAILER_LEN);
    if crc32c::crc32c(body).to_be_bytes() != trailer {
        return Err(SealError::Wire(WireError::BadChecksum));
    }
    let id = u16::from_be_bytes([sealed[KEY_ID.start], sealed[KEY_ID.start + 1]]);
    let key = keys.by_id(id).ok_or(SealError::UnknownKey(id))?;
    let header = &sealed[..HEADER_LEN];
    let nonce = &sealed[HEADER_LEN..HEADER_LEN + NONCE_LEN];
    let (text, tag) =
        body[HEADER_LEN + NONCE_LEN..].split_at(body.len() - HEADER_LEN - NONCE_LEN - TAG_LEN);
    out.extend_from_slice(header);
    out.extend_from_slice(text);
    key.cipher
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            &aad(header, place),
            &mut out[HEADER_LEN..],
            Tag::from_slice(tag),
        )
        .map_err(|_| {
            out.clear();
            SealError::Forged
        })?;
    let mut sent = [0u8; SENT_LEN];
    sent.copy_from_slice(&out[HEADER_LEN..HEADER_LEN + SENT_LEN]);
    // The plain batch: the header without the seal's marks, the frames, a checksum of its own.
    out.drain(HEADER_LEN..HEADER_LEN + SENT_LEN);
    out[FLAGS] = 0;
    out[KEY_ID].copy_from_slice(&[0, 0]);
    let crc = crc32c::crc32c(out);
    out.extend_from_slice(&crc.to_be_bytes());
    // Authentic bytes whose frames do not add up came from a key holder's bug: still refused.
    if let Err(e) = Batch::new_checked(&out[..]) {
        out.clear();
        return Err(SealError::Wire(e));
    }
    Ok(u64::from_be_bytes(sent))
}

/// How old a sealed batch may be when it is opened: what stops an old epoch's batches, replayed
/// after the receiver restarted, from being delivered again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// When this receiver started, in ms since 1970: a batch sealed before it (less `skew`)
    /// was for a previous life, which may have delivered it already.
    pub started_ms: u64,
    /// How far the sender's clock may run behind the receiver's.
    pub skew_ms: u64,
    /// The longest a batch may wait to be read (the links' retry window and more).
    pub max_age_ms: u64,
}

impl Freshness {
    /// The defaults: 10 s of clock skew (NTP keeps machines within milliseconds), batches at
    /// most 10 minutes old (a send is retried for two).
    pub fn since(started_ms: u64) -> Freshness {
        Freshness {
            started_ms,
            skew_ms: 10_000,
            max_age_ms: 600_000,
        }
    }

    /// Whether a batch sealed at `sent_ms` may be delivered at `now_ms`.
    pub fn accepts(&self, sent_ms: u64, now_ms: u64) -> bool {
        sent_ms.saturating_add(self.skew_ms) >= self.started_ms
            && sent_ms.saturating_add(self.max_age_ms) >= now_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Header;
    use proptest::prelude::*;

    fn key(id: u16, byte: u8) -> Key {
        Key::new(NonZeroU16::new(id).unwrap(), [byte; KEY_LEN])
    }

    fn keys() -> Keys {
        Keys::new(key(1, 7), None).unwrap()
    }

    const PLACE: Place<'static> = Place {
        network: b"s3://bucket/net/",
        destination: 0xb,
    };

    fn plain(frames: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        Header {
            sender: 0xa,
            epoch: 5,
            seq: 9,
        }
        .emit(frames, &mut out)
        .unwrap();
        out
    }

    fn sealed(frames: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        seal(&plain(frames), &keys(), &PLACE, 1_000, &mut out).unwrap();
        out
    }

    #[test]
    fn a_sealed_batch_hides_its_frames_and_costs_a_fixed_overhead() {
        let frames: [&[u8]; 2] = [b"secret packet one", b"secret packet two"];
        let s = sealed(&frames);
        assert_eq!(s.len(), plain(&frames).len() + SEAL_OVERHEAD);
        assert!(!s.windows(6).any(|w| w == b"secret"));
        assert_eq!(s[FLAGS], flags::SEALED);
        // A plain decoder refuses it, as version 1 always has.
        assert_eq!(
            Batch::new_checked(&s[..]).map(|_| ()),
            Err(WireError::UnsupportedFlags(flags::SEALED))
        );
        // Two seals of the same batch differ (a fresh nonce each time).
        assert_ne!(s, sealed(&frames));
    }

    #[test]
    fn refusals_say_why() {
        let s = sealed(&[b"x"]);
        let mut out = Vec::new();
        let other_network = Keys::new(key(2, 7), None).unwrap();
        assert_eq!(
            open(&s, &other_network, &PLACE, &mut out),
            Err(SealError::UnknownKey(1))
        );
        let same_id_other_bytes = Keys::new(key(1, 8), None).unwrap();
        assert_eq!(
            open(&s, &same_id_other_bytes, &PLACE, &mut out),
            Err(SealError::Forged)
        );
        assert!(out.is_empty(), "nothing of a forged batch is left");
        assert_eq!(
            open(&plain(&[b"x"]), &keys(), &PLACE, &mut out),
            Err(SealError::Unsealed)
        );
        let other_net = Place {
            network: b"s3://bucket/other/",
            ..PLACE
        };
        assert_eq!(
            open(&s, &keys(), &other_net, &mut out),
            Err(SealError::Forged)
        );
        assert_eq!(
            open(b"hello", &keys(), &PLACE, &mut out),
            Err(SealError::Wire(WireError::BadMagic))
        );
        assert_eq!(
            open(&s[..s.len() - 1], &keys(), &PLACE, &mut out),
            Err(SealError::Wire(WireError::BadChecksum))
        );
    }

    /// Moving a batch to another sender, epoch or position: its header changes, and with it
    /// the associated data (the checksum made good again, as an attacker would).
    #[test]
    fn a_batch_moved_to_another_sender_epoch_or_position_does_not_open() {
        let s = sealed(&[b"x"]);
        for field in [8..16, 16..24, 24..32] {
            let mut moved = s.clone();
            moved[field.end - 1] ^= 1;
            let n = moved.len() - TRAILER_LEN;
            let crc = crc32c::crc32c(&moved[..n]);
            moved[n..].copy_from_slice(&crc.to_be_bytes());
            let mut out = Vec::new();
            assert_eq!(
                open(&moved, &keys(), &PLACE, &mut out),
                Err(SealError::Forged),
                "{field:?}"
            );
        }
    }

    #[test]
    fn a_rotating_network_opens_with_either_key_and_seals_with_the_first() {
        let (old, new) = (key(1, 7), key(2, 9));
        let before = Keys::new(old.clone(), None).unwrap();
        let during = Keys::new(new.clone(), Some(old.clone())).unwrap();
        let after = Keys::new(new.clone(), None).unwrap();
        let mut s = Vec::new();
        let mut out = Vec::new();
        seal(&plain(&[b"x"]), &before, &PLACE, 1, &mut s).unwrap();
        assert!(open(&s, &during, &PLACE, &mut out).is_ok());
        assert!(open(&s, &after, &PLACE, &mut out).is_err());
        seal(&plain(&[b"x"]), &during, &PLACE, 1, &mut s).unwrap();
        assert_eq!(u16::from_be_bytes([s[6], s[7]]), 2);
        assert!(open(&s, &after, &PLACE, &mut out).is_ok());
        assert!(
            Keys::new(old.clone(), Some(key(1, 9))).is_err(),
            "one id, two keys"
        );
    }

    #[test]
    fn key_files_hold_one_or_two_keys() {
        let (a, b) = (Key::generate(), Key::generate());
        let one = Keys::parse(&format!("# the network's key\n{}\n", a.to_line())).unwrap();
        assert_eq!(one.sealing().id(), a.id());
        if a.id() != b.id() {
            let two = Keys::parse(&format!("{}\n\n{}", b.to_line(), a.to_line())).unwrap();
            assert_eq!(two.sealing().id(), b.id());
            assert!(two.by_id(a.id().get()).is_some());
        }
        let three = format!(
            "{}\n{}\n{}",
            a.to_line(),
            b.to_line(),
            Key::generate().to_line()
        );
        assert!(
            Keys::parse(&three)
                .unwrap_err()
                .to_string()
                .contains("more than two")
        );
        assert!(Keys::parse("").unwrap_err().to_string().contains("no key"));
        for bad in [
            "tunnel-key 0000 AAAA",
            "tunnel-key 1 c2hvcnQ=",
            "key 1 AAAA",
            "tunnel-key zz AAAA",
        ] {
            let err = Key::parse(bad).unwrap_err().to_string();
            assert!(!err.contains("c2hvcnQ"), "a key is never quoted: {err}");
        }
        assert!(
            !format!("{a:?}").contains(&a.to_line()[16..]),
            "Debug hides the key"
        );
    }

    #[test]
    fn freshness_refuses_what_a_previous_life_or_a_long_wait_saw() {
        let f = Freshness::since(1_000_000);
        assert!(f.accepts(1_000_000, 1_000_500));
        assert!(f.accepts(995_000, 1_000_500), "within the clock skew");
        assert!(!f.accepts(900_000, 1_000_500), "before this life");
        assert!(!f.accepts(1_000_000, 1_700_000), "too old");
    }

    proptest! {
        #[test]
        fn sealing_round_trips_for_any_frames(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            sent in any::<u64>(),
            network in proptest::collection::vec(any::<u8>(), 0..40),
            destination in any::<u64>(),
        ) {
            let frames: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            let place = Place { network: &network, destination };
            let p = plain(&frames);
            let mut s = Vec::new();
            seal(&p, &keys(), &place, sent, &mut s).unwrap();
            let mut out = Vec::new();
            prop_assert_eq!(open(&s, &keys(), &place, &mut out), Ok(sent));
            prop_assert_eq!(out, p);
        }

        /// Every single-bit change anywhere in a sealed batch is refused, whether or not the
        /// checksum is made good again.
        #[test]
        fn every_single_bit_change_is_refused(bit in 0usize..(8 * 80), fix_crc in any::<bool>()) {
            let s = sealed(&[b"some packet", b"another"]);
            let bit = bit % (8 * s.len());
            let mut changed = s.clone();
            changed[bit / 8] ^= 1 << (bit % 8);
            if fix_crc && bit / 8 < s.len() - TRAILER_LEN {
                let n = changed.len() - TRAILER_LEN;
                let crc = crc32c::crc32c(&changed[..n]);
                changed[n..].copy_from_slice(&crc.to_be_bytes());
            }
            let mut out = Vec::new();
            prop_assert!(open(&changed, &keys(), &PLACE, &mut out).is_err());
            prop_assert!(out.is_empty());
        }

        #[test]
        fn any_bytes_are_refused_or_opened_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut out = Vec::new();
            let _ = open(&bytes, &keys(), &PLACE, &mut out);
        }
    }
}
