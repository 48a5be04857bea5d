//! Just enough IPv6 for a tunnel: a packet's addresses, node addresses in a /64, and ICMPv6
//! echo (for the demo's ping and its answer).
//!
//! ```text
//!  0       4       8              16              24              32
//! +-------+-------+---------------+-------------------------------+
//! |version| traffic class | flow label                            |
//! +-------------------------------+---------------+---------------+
//! |        payload length         |  next header  |   hop limit   |
//! +-------------------------------+---------------+---------------+
//! |                 source address (16 bytes)                     |
//! |                 destination address (16 bytes)                |
//! +---------------------------------------------------------------+
//! ```
//!
//! [`Ipv6::new_checked`] checks the length and version before any accessor reads; after that no
//! accessor panics.

use std::net::Ipv6Addr;

/// Bytes of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;
/// IPv6's next-header number of ICMPv6.
pub const ICMPV6: u8 = 58;
const ECHO_REQUEST: u8 = 128;
const ECHO_REPLY: u8 = 129;

/// A checked view of an IPv6 packet.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6<'a> {
    bytes: &'a [u8],
}

impl<'a> Ipv6<'a> {
    /// Wraps `bytes` if they hold an IPv6 header and the payload it announces.
    pub fn new_checked(bytes: &'a [u8]) -> Option<Ipv6<'a>> {
        if bytes.len() < HEADER_LEN || bytes[0] >> 4 != 6 {
            return None;
        }
        let payload = usize::from(u16::from_be_bytes([bytes[4], bytes[5]]));
        // `then`, not `then_some`: the slice must not be taken before the length is checked.
        (bytes.len() >= HEADER_LEN + payload).then(|| Ipv6 {
            bytes: &bytes[..HEADER_LEN + payload],
        })
    }

    /// The source address.
    pub fn src(&self) -> Ipv6Addr {
        addr(&self.bytes[8..24])
    }

    /// The destination address.
    pub fn dst(&self) -> Ipv6Addr {
        addr(&self.bytes[24..40])
    }

    /// The next header (the payload's protocol, without extension headers).
    pub fn next_header(&self) -> u8 {
        self.bytes[6]
    }

    /// The payload, as long as the header says.
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN..]
    }
}

fn addr(bytes: &[u8]) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(bytes);
    Ipv6Addr::from(octets)
}

/// The address of node `id` in the /64 `network`: the network's first 64 bits, then the id.
pub fn node_addr(network: Ipv6Addr, id: u64) -> Ipv6Addr {
    let bits = (u128::from(network) & !u128::from(u64::MAX)) | u128::from(id);
    Ipv6Addr::from(bits)
}

/// The node an address in the /64 `network` belongs to, if it is in that network.
pub fn node_id(network: Ipv6Addr, addr: Ipv6Addr) -> Option<u64> {
    let prefix = |a: Ipv6Addr| u128::from(a) >> 64;
    (prefix(addr) == prefix(network)).then_some(u128::from(addr) as u64)
}

/// The Internet checksum of ICMPv6 `message` between `src` and `dst`, over the pseudo-header.
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(message.len() as u32).to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    add(message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn icmpv6_packet(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    kind: u8,
    id: u16,
    seq: u16,
    data: &[u8],
) -> Vec<u8> {
    let mut message = vec![kind, 0, 0, 0];
    message.extend_from_slice(&id.to_be_bytes());
    message.extend_from_slice(&seq.to_be_bytes());
    message.extend_from_slice(data);
    let checksum = icmpv6_checksum(src, dst, &message);
    message[2..4].copy_from_slice(&checksum.to_be_bytes());
    let mut packet = Vec::with_capacity(HEADER_LEN + message.len());
    packet.extend_from_slice(&[0x60, 0, 0, 0]);
    packet.extend_from_slice(&(message.len() as u16).to_be_bytes());
    packet.extend_from_slice(&[ICMPV6, 64]);
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    packet.extend_from_slice(&message);
    packet
}

/// An ICMPv6 echo request from `src` to `dst`, as `ping -6` sends.
pub fn echo_request(src: Ipv6Addr, dst: Ipv6Addr, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    icmpv6_packet(src, dst, ECHO_REQUEST, id, seq, data)
}

/// An ICMPv6 echo message read from a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo<'a> {
    /// A request (or else a reply).
    pub request: bool,
    /// Identifier.
    pub id: u16,
    /// Sequence number.
    pub seq: u16,
    /// Data.
    pub data: &'a [u8],
}

/// The ICMPv6 echo in `packet`, if it is one with a correct checksum.
pub fn echo<'a>(packet: &Ipv6<'a>) -> Option<Echo<'a>> {
    let message = packet.payload();
    if packet.next_header() != ICMPV6 || message.len() < 8 {
        return None;
    }
    if icmpv6_checksum(packet.src(), packet.dst(), message) != 0 {
        return None;
    }
    let request = match (message[0], message[1]) {
        (ECHO_REQUEST, 0) => true,
        (ECHO_REPLY, 0) => false,
        _ => return None,
    };
    Some(Echo {
        request,
        id: u16::from_be_bytes([message[4], message[5]]),
        seq: u16::from_be_bytes([message[6], message[7]]),
        data: &message[8..],
    })
}

/// The reply to an echo request, as a host answers it.
pub fn echo_reply(request: &Ipv6<'_>) -> Option<Vec<u8>> {
    let echo = echo(request).filter(|e| e.request)?;
    Some(icmpv6_packet(
        request.dst(),
        request.src(),
        ECHO_REPLY,
        echo.id,
        echo.seq,
        echo.data,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET: Ipv6Addr = Ipv6Addr::new(0xfd5e, 0x59b8, 0xf71d, 0x9a3e, 0, 0, 0, 0);

    #[test]
    fn node_addresses_round_trip() {
        let a = node_addr(NET, 0xc05f_7f48_de53_428f);
        assert_eq!(a.to_string(), "fd5e:59b8:f71d:9a3e:c05f:7f48:de53:428f");
        assert_eq!(node_id(NET, a), Some(0xc05f_7f48_de53_428f));
        assert_eq!(node_id(NET, "fd00::1".parse().unwrap()), None);
    }

    #[test]
    fn echo_request_and_reply() {
        let (a, b) = (node_addr(NET, 0xa), node_addr(NET, 0xb));
        let request = echo_request(a, b, 7, 1, b"abcdefgh");
        let packet = Ipv6::new_checked(&request).unwrap();
        assert_eq!((packet.src(), packet.dst()), (a, b));
        let e = echo(&packet).unwrap();
        assert_eq!(
            (e.request, e.id, e.seq, e.data),
            (true, 7, 1, &b"abcdefgh"[..])
        );
        let reply = echo_reply(&packet).unwrap();
        let reply = Ipv6::new_checked(&reply).unwrap();
        assert_eq!((reply.src(), reply.dst()), (b, a));
        let e = echo(&reply).unwrap();
        assert!(!e.request);
        assert_eq!((e.id, e.seq), (7, 1));
        assert!(echo_reply(&reply).is_none(), "a reply is not answered");
    }

    #[test]
    fn checksum_matches_one_computed_apart() {
        // ::1 to ::1, id 0x1234, seq 1, data "abcd": RFC 4443's checksum (the one's complement
        // of the one's-complement sum over pseudo-header and message), computed apart from this
        // code: 0xa8bb.
        let lo = Ipv6Addr::LOCALHOST;
        let request = echo_request(lo, lo, 0x1234, 1, b"abcd");
        assert_eq!(&request[42..44], &[0xa8, 0xbb]);
    }

    #[test]
    fn refuses_what_is_not_ipv6_or_not_an_echo() {
        assert!(Ipv6::new_checked(&[0x45; 60]).is_none(), "IPv4");
        assert!(Ipv6::new_checked(&[0x60; 39]).is_none(), "short");
        let mut request = echo_request(NET, NET, 1, 1, b"");
        request[5] = 200; // a payload longer than the packet
        assert!(Ipv6::new_checked(&request).is_none());
        let mut request = echo_request(NET, NET, 1, 1, b"x");
        request[48] ^= 1; // damage the data: the checksum catches it
        assert!(echo(&Ipv6::new_checked(&request).unwrap()).is_none());
    }
}
