//! Reads a packet capture (pcap or pcapng) into a [`Trace`], so the simulation can answer
//! "what would my traffic cost?".
//!
//! The container formats (pcap in both byte orders, with micro- or nanosecond times, and its
//! "modified" variant; pcapng with its sections, interfaces and time resolutions) are parsed by
//! `pcap-parser`. Only what the simulation needs is read: each IP packet's time, length,
//! addresses and TCP or UDP ports. The link-layer header in front of the IP packet is skipped
//! here, because pcap-parser hands Ethernet frames over whole: Ethernet (with 802.1Q tags), raw
//! IP, Linux cooked (v1 and v2) and BSD loopback. Any input gives a [`Trace`] or a
//! [`PcapError`], never a panic (the `pcap` fuzz target checks it).
//!
//! # What is replayed, and what cannot be
//!
//! - **Two nodes.** The capturing host (the address seen most often) becomes node A, everyone
//!   it talks to node B. A capture in which every packet goes from an address to itself (one
//!   taken on the loopback device) cannot be split by address: then the nodes are told apart by
//!   TCP or UDP port, and node A is the endpoint that sent the first packet.
//! - **Packets larger than the tunnel's MTU.** A capture on the loopback device (MTU 65,536),
//!   or one taken where the network card merges segments (GRO, TSO), holds TCP segments of up to
//!   64 KB, which no tunnel device carries: the wire format's frames end at 65,535 bytes and
//!   `tunnel up`'s device at its `--mtu` (1,500 by default). They are replayed as the kernel
//!   would send them through a TUN device of that MTU: a packet of `n` bytes as `n / mtu`
//!   packets of `mtu` bytes and one of the rest, at the same time (the headers of the extra
//!   segments are not added). [`replay`] says how many were split, and costsim prints it.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use pcap_parser::nom;

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
    /// TCP or UDP source and destination ports, if it is either (right after the IP header).
    pub ports: Option<(u16, u16)>,
}

/// What went wrong in the container format, as far as the reader's caller cares.
fn container_error(err: nom::Err<pcap_parser::PcapError<&[u8]>>) -> PcapError {
    use pcap_parser::PcapError as E;
    match err {
        nom::Err::Incomplete(_) => PcapError::Truncated,
        nom::Err::Error(E::Incomplete(_) | E::UnexpectedEof | E::Eof)
        | nom::Err::Failure(E::Incomplete(_) | E::UnexpectedEof | E::Eof) => PcapError::Truncated,
        nom::Err::Error(E::HeaderNotRecognized) | nom::Err::Failure(E::HeaderNotRecognized) => {
            PcapError::BadMagic
        }
        _ => PcapError::BadLength,
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
        [0xa1, 0xb2, 0xc3, 0xd4]
        | [0xd4, 0xc3, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0x3c, 0x4d]
        | [0x4d, 0x3c, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0xcd, 0x34]
        | [0x34, 0xcd, 0xb2, 0xa1] => read_pcap(data)?,
        _ => return Err(PcapError::BadMagic),
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
    let (mut rest, header) = pcap_parser::parse_pcap_header(data).map_err(container_error)?;
    let link = header.network.0 as u32;
    let nanos = header.is_nanosecond_precision();
    let mut packets = Vec::new();
    while !rest.is_empty() {
        let parsed = if header.is_modified_format() {
            pcap_parser::parse_pcap_frame_modified(rest)
        } else if header.is_bigendian() {
            pcap_parser::parse_pcap_frame_be(rest)
        } else {
            pcap_parser::parse_pcap_frame(rest)
        };
        let (next, frame) = parsed.map_err(container_error)?;
        let time = if nanos {
            Duration::new(u64::from(frame.ts_sec), frame.ts_usec.min(999_999_999))
        } else {
            Duration::new(u64::from(frame.ts_sec), frame.ts_usec.min(999_999) * 1_000)
        };
        let data = frame
            .data
            .get(..frame.caplen as usize)
            .unwrap_or(frame.data);
        if let Some(p) = ip_packet(link, data, frame.origlen as usize, time) {
            packets.push(p);
        }
        rest = next;
    }
    Ok(packets)
}

fn read_pcapng(data: &[u8]) -> Result<Vec<Captured>, PcapError> {
    use pcap_parser::pcapng::{Block, parse_block_be, parse_block_le, parse_sectionheaderblock};
    let mut packets = Vec::new();
    // Per section: byte order, and each interface's link type and time resolution.
    let mut big = false;
    let mut interfaces: Vec<(u32, u64)> = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let section = rest.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]);
        if section {
            // A section header: its byte-order magic decides how to read the rest.
            big = match rest.get(8..12).ok_or(PcapError::Truncated)? {
                [0x1a, 0x2b, 0x3c, 0x4d] => true,
                [0x4d, 0x3c, 0x2b, 0x1a] => false,
                _ => return Err(PcapError::BadMagic),
            };
            interfaces.clear();
        }
        // Every block's length is checked here, before pcap-parser reads the block: its
        // parser for some block kinds subtracts 12 from a length it has only checked to be
        // at least 4, and panics (found by the `pcap` fuzz target).
        let len: [u8; 4] = rest
            .get(4..8)
            .and_then(|b| b.try_into().ok())
            .ok_or(PcapError::Truncated)?;
        let len = if big {
            u32::from_be_bytes(len)
        } else {
            u32::from_le_bytes(len)
        } as usize;
        if len < 12 || !len.is_multiple_of(4) {
            return Err(PcapError::BadLength);
        }
        let whole = rest.get(..len).ok_or(PcapError::Truncated)?;
        if section {
            parse_sectionheaderblock(whole).map_err(container_error)?;
            rest = &rest[len..];
            continue;
        }
        let parsed = if big {
            parse_block_be(whole)
        } else {
            parse_block_le(whole)
        };
        let (_, block) = parsed.map_err(container_error)?;
        let next = &rest[len..];
        match block {
            Block::InterfaceDescription(idb) => {
                interfaces.push((idb.linktype.0 as u32, per_second(idb.if_tsresol)));
            }
            Block::EnhancedPacket(epb) => {
                let (link, per_sec) = *interfaces
                    .get(epb.if_id as usize)
                    .ok_or(PcapError::BadLength)?;
                let ts = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                let fraction = Duration::from_secs_f64((ts % per_sec) as f64 / per_sec as f64);
                let time = Duration::from_secs(ts / per_sec).checked_add(fraction);
                let frame = epb.data.get(..epb.caplen as usize).unwrap_or(epb.data);
                if let Some(p) = time.and_then(|t| ip_packet(link, frame, epb.origlen as usize, t))
                {
                    packets.push(p);
                }
            }
            _ => {}
        }
        rest = next;
    }
    Ok(packets)
}

/// Units per second of an interface's timestamps (option `if_tsresol`, default microseconds):
/// a power of 10, or of 2 when the top bit is set. pcap-parser's own reading of it refuses
/// every power of 2, so it is read here.
fn per_second(tsresol: u8) -> u64 {
    let per_sec = if tsresol & 0x80 == 0 {
        10u64.checked_pow(u32::from(tsresol))
    } else {
        2u64.checked_pow(u32::from(tsresol & 0x7f))
    };
    per_sec.unwrap_or(u64::MAX)
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
    let (src, dst, protocol, transport) = match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            (ip.get(12..16)?, ip.get(16..20)?, ip.get(9), ip.get(ihl..))
        }
        6 => (ip.get(8..24)?, ip.get(24..40)?, ip.get(6), ip.get(40..)),
        _ => return None,
    };
    let ports = match (protocol, transport) {
        (Some(6 | 17), Some([a, b, c, d, ..])) => {
            Some((u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d])))
        }
        _ => None,
    };
    Some(Captured {
        at,
        len: origlen.saturating_sub(header).max(1),
        src: src.to_vec(),
        dst: dst.to_vec(),
        ports,
    })
}

/// The largest packet a tunnel device carries by default: `tunnel up --mtu`'s default.
pub const DEFAULT_MTU: usize = 1_500;

/// A capture made into a trace, and what had to change for it to be replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// The trace.
    pub trace: Trace,
    /// Every packet went from an address to itself (a loopback capture), so the nodes were
    /// told apart by port.
    pub by_port: bool,
    /// Captured packets larger than the MTU...
    pub oversized: usize,
    /// ...and the packets of at most the MTU they were replayed as.
    pub segments: usize,
}

/// A trace of the captured packets between the capturing host (A) and everyone else (B),
/// replayed as captured (no replies are added: they are in the capture), packets over the
/// default MTU split as a tunnel device would carry them; see [`replay`].
///
/// # Errors
///
/// [`PcapError::NoIpPackets`] if there is nothing to replay.
pub fn to_trace(name: &str, packets: &[Captured]) -> Result<Trace, PcapError> {
    replay(name, packets, DEFAULT_MTU).map(|r| r.trace)
}

/// A trace of the captured packets between two nodes, packets larger than `mtu` split into
/// packets of at most `mtu` bytes; see the module docs for the rules.
///
/// # Errors
///
/// [`PcapError::NoIpPackets`] if there is nothing to replay.
///
/// # Panics
///
/// Panics if `mtu` is zero.
pub fn replay(name: &str, packets: &[Captured], mtu: usize) -> Result<Replay, PcapError> {
    assert!(mtu > 0, "an MTU of zero carries nothing");
    let first = packets.first().ok_or(PcapError::NoIpPackets)?;
    let by_port = packets.iter().all(|p| p.src == p.dst);
    let is_a: Box<dyn Fn(&Captured) -> bool> = if by_port {
        // One address: the endpoint that sent first is A.
        let a = (first.src.clone(), first.ports.map(|(src, _)| src));
        Box::new(move |p: &Captured| (&p.src, p.ports.map(|(src, _)| src)) == (&a.0, a.1))
    } else {
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
        Box::new(move |p: &Captured| p.src == host)
    };
    let (mut oversized, mut segments) = (0, 0);
    let mut sends = Vec::with_capacity(packets.len());
    for p in packets {
        let from = if is_a(p) { Side::A } else { Side::B };
        let mut left = p.len;
        if left > mtu {
            oversized += 1;
            segments += left.div_ceil(mtu);
        }
        while left > 0 {
            let size = left.min(mtu);
            sends.push(Send {
                at: p.at,
                from,
                size,
                reply: None,
            });
            left -= size;
        }
    }
    let duration = sends.last().map_or(Duration::ZERO, |s| s.at) + Duration::from_secs(1);
    Ok(Replay {
        trace: Trace {
            name: name.to_owned(),
            duration,
            sends,
        },
        by_port,
        oversized,
        segments,
    })
}

/// Never panics, whatever the bytes: the fuzz target's check, here so that `cargo test`
/// replays the committed corpus on stable.
#[doc(hidden)]
pub fn fuzz(data: &[u8]) {
    if let Ok(packets) = read(data) {
        let replay = replay("fuzz", &packets, DEFAULT_MTU).expect("read returns packets");
        let sends = &replay.trace.sends;
        assert_eq!(
            sends.len(),
            packets.len() - replay.oversized + replay.segments
        );
        assert!(sends.iter().all(|s| (1..=DEFAULT_MTU).contains(&s.size)));
        assert!(sends.windows(2).all(|w| w[0].at <= w[1].at));
    }
}
