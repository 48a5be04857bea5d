//! Reads a packet capture (pcap or pcapng) into a [`Trace`], so the simulation can answer
//! "what would my traffic cost?".
//!
//! Only what the simulation needs is read: each IP packet's time, length and addresses. The
//! capturing host (the address seen most often) becomes node A, everyone it talks to node B.
//! Link types: Ethernet (with 802.1Q tags), raw IP, Linux cooked (v1 and v2) and BSD loopback.
//! Every read is bounds-checked: any input gives a [`Trace`] or a [`PcapError`], never a panic
//! (the `pcap` fuzz target checks it).

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::traces::{Send, Side, Trace};

/// Why a capture could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PcapError {
    /// Neither a pcap nor a pcapng file.
    BadMagic,
    /// The file ends inside a header or a block.
    Truncated,
    /// A block or record whose length is impossible.
    BadLength,
    /// The capture holds no IP packet this reader understands.
    NoIpPackets,
}

impl fmt::Display for PcapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PcapError::BadMagic => "not a pcap or pcapng file",
            PcapError::Truncated => "capture is truncated",
            PcapError::BadLength => "capture has a block of impossible length",
            PcapError::NoIpPackets => "capture holds no IP packets",
        })
    }
}

impl std::error::Error for PcapError {}

/// An IP packet from a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// When it was captured.
    pub at: Duration,
    /// Its length on the wire, IP header included.
    pub len: usize,
    /// Its source address (4 or 16 bytes).
    pub src: Vec<u8>,
    /// Its destination address.
    pub dst: Vec<u8>,
}

/// Bounds-checked little or big-endian reads.
#[derive(Debug, Clone, Copy)]
struct Bytes<'a> {
    data: &'a [u8],
    big: bool,
}

impl<'a> Bytes<'a> {
    fn slice(&self, at: usize, len: usize) -> Result<&'a [u8], PcapError> {
        at.checked_add(len)
            .and_then(|end| self.data.get(at..end))
            .ok_or(PcapError::Truncated)
    }

    fn u16(&self, at: usize) -> Result<u16, PcapError> {
        let b: [u8; 2] = self
            .slice(at, 2)?
            .try_into()
            .map_err(|_| PcapError::Truncated)?;
        Ok(if self.big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    fn u32(&self, at: usize) -> Result<u32, PcapError> {
        let b: [u8; 4] = self
            .slice(at, 4)?
            .try_into()
            .map_err(|_| PcapError::Truncated)?;
        Ok(if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }
}

/// Reads every IP packet of a pcap or pcapng capture, times relative to the first.
///
/// # Errors
///
/// A [`PcapError`] if the bytes are not a capture this reader understands.
pub fn read(data: &[u8]) -> Result<Vec<Captured>, PcapError> {
    let magic = data.get(..4).ok_or(PcapError::Truncated)?;
    let mut packets = match magic {
        [0x0a, 0x0d, 0x0d, 0x0a] => read_pcapng(data)?,
        _ => read_pcap(data)?,
    };
    if packets.is_empty() {
        return Err(PcapError::NoIpPackets);
    }
    packets.sort_by_key(|p| p.at);
    let first = packets[0].at;
    for p in &mut packets {
        p.at -= first;
    }
    Ok(packets)
}

fn read_pcap(data: &[u8]) -> Result<Vec<Captured>, PcapError> {
    let (big, nanos) = match data.get(..4) {
        Some([0xa1, 0xb2, 0xc3, 0xd4]) => (true, false),
        Some([0xd4, 0xc3, 0xb2, 0xa1]) => (false, false),
        Some([0xa1, 0xb2, 0x3c, 0x4d]) => (true, true),
        Some([0x4d, 0x3c, 0xb2, 0xa1]) => (false, true),
        _ => return Err(PcapError::BadMagic),
    };
    let r = Bytes { data, big };
    let link = r.u32(20)?;
    let mut at = 24;
    let mut packets = Vec::new();
    while at < data.len() {
        let secs = r.u32(at)?;
        let frac = r.u32(at + 4)?;
        let caplen = r.u32(at + 8)? as usize;
        let origlen = r.u32(at + 12)? as usize;
        let frame = r.slice(at + 16, caplen)?;
        let time = if nanos {
            Duration::new(u64::from(secs), frac.min(999_999_999))
        } else {
            Duration::new(u64::from(secs), frac.min(999_999) * 1_000)
        };
        if let Some(p) = ip_packet(link, frame, origlen, time) {
            packets.push(p);
        }
        at += 16 + caplen;
    }
    Ok(packets)
}

fn read_pcapng(data: &[u8]) -> Result<Vec<Captured>, PcapError> {
    let mut packets = Vec::new();
    // Per section: byte order, and each interface's link type and time resolution.
    let mut r = Bytes { data, big: false };
    let mut interfaces: Vec<(u32, u64)> = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let kind = r.u32(at)?;
        if kind == 0x0a0d_0d0a {
            // Section header: its byte-order magic decides how to read the rest.
            r.big = match r.slice(at + 8, 4)? {
                [0x1a, 0x2b, 0x3c, 0x4d] => true,
                [0x4d, 0x3c, 0x2b, 0x1a] => false,
                _ => return Err(PcapError::BadMagic),
            };
            interfaces.clear();
        }
        let len = r.u32(at + 4)? as usize;
        if len < 12 || !len.is_multiple_of(4) {
            return Err(PcapError::BadLength);
        }
        let body = r.slice(at + 8, len - 12)?;
        let b = Bytes {
            data: body,
            big: r.big,
        };
        match kind {
            1 => interfaces.push((u32::from(b.u16(0)?), tsresol(b))),
            6 => {
                let (link, per_sec) = *interfaces
                    .get(b.u32(0)? as usize)
                    .ok_or(PcapError::BadLength)?;
                let ts = (u64::from(b.u32(4)?) << 32) | u64::from(b.u32(8)?);
                let caplen = b.u32(12)? as usize;
                let origlen = b.u32(16)? as usize;
                let frame = b.slice(20, caplen)?;
                let fraction = Duration::from_secs_f64((ts % per_sec) as f64 / per_sec as f64);
                let time = Duration::from_secs(ts / per_sec).checked_add(fraction);
                if let Some(p) = time.and_then(|t| ip_packet(link, frame, origlen, t)) {
                    packets.push(p);
                }
            }
            _ => {}
        }
        at += len;
    }
    Ok(packets)
}

/// Units per second of an interface's timestamps (option `if_tsresol`, default microseconds).
fn tsresol(idb: Bytes<'_>) -> u64 {
    let mut at = 8;
    while let (Ok(code), Ok(len)) = (idb.u16(at), idb.u16(at + 2)) {
        if code == 0 {
            break;
        }
        if code == 9
            && let Ok(&[v]) = idb.slice(at + 4, 1)
        {
            // A power of 10, or of 2 when the top bit is set.
            let per_sec = if v & 0x80 == 0 {
                10u64.checked_pow(u32::from(v))
            } else {
                2u64.checked_pow(u32::from(v & 0x7f))
            };
            return per_sec.unwrap_or(u64::MAX);
        }
        at += 4 + usize::from(len).div_ceil(4) * 4;
    }
    1_000_000
}

/// The IP packet in a link-layer frame, if there is one.
fn ip_packet(link: u32, frame: &[u8], origlen: usize, at: Duration) -> Option<Captured> {
    let header = match link {
        // DLT_NULL: a 4-byte address family in host order.
        0 => 4,
        // Ethernet, and 802.1Q tags.
        1 => {
            let mut offset = 12;
            while matches!(frame.get(offset..offset + 2)?, [0x81, 0x00] | [0x88, 0xa8]) {
                offset += 4;
            }
            offset + 2
        }
        // Raw IP, IPv4, IPv6.
        101 | 228 | 229 => 0,
        // Linux cooked capture v1 and v2.
        113 => 16,
        276 => 20,
        _ => return None,
    };
    let ip = frame.get(header..)?;
    let (src, dst) = match ip.first()? >> 4 {
        4 => (ip.get(12..16)?, ip.get(16..20)?),
        6 => (ip.get(8..24)?, ip.get(24..40)?),
        _ => return None,
    };
    Some(Captured {
        at,
        len: origlen.saturating_sub(header).max(1),
        src: src.to_vec(),
        dst: dst.to_vec(),
    })
}

/// A trace of the captured packets between the capturing host (A) and everyone else (B),
/// replayed as captured (no replies are added: they are in the capture).
///
/// # Errors
///
/// [`PcapError::NoIpPackets`] if there is nothing to replay.
pub fn to_trace(name: &str, packets: &[Captured]) -> Result<Trace, PcapError> {
    let mut seen: HashMap<&[u8], usize> = HashMap::new();
    for p in packets {
        *seen.entry(&p.src).or_default() += 1;
        *seen.entry(&p.dst).or_default() += 1;
    }
    let host = seen
        .into_iter()
        .max_by_key(|(addr, n)| (*n, std::cmp::Reverse(addr.to_vec())))
        .map(|(addr, _)| addr.to_vec())
        .ok_or(PcapError::NoIpPackets)?;
    let sends: Vec<Send> = packets
        .iter()
        .map(|p| Send {
            at: p.at,
            from: if p.src == host { Side::A } else { Side::B },
            size: p.len,
            reply: None,
        })
        .collect();
    let duration = sends.last().map_or(Duration::ZERO, |s| s.at) + Duration::from_secs(1);
    Ok(Trace {
        name: name.to_owned(),
        duration,
        sends,
    })
}

/// Never panics, whatever the bytes: the fuzz target's check, here so that `cargo test`
/// replays the committed corpus on stable.
#[doc(hidden)]
pub fn fuzz(data: &[u8]) {
    if let Ok(packets) = read(data) {
        let trace = to_trace("fuzz", &packets).expect("read returns packets");
        assert_eq!(trace.sends.len(), packets.len());
        assert!(trace.sends.windows(2).all(|w| w[0].at <= w[1].at));
    }
}
