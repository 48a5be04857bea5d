//! TAP mode: what a node does with an Ethernet frame the host wrote to its TAP device, and the
//! frame it writes to the device for a packet a peer sent.
//!
//! The node sits where a switch port would, with every peer behind it:
//!
//! - an ARP request or a neighbour solicitation for a peer is answered at once from what the
//!   node knows ([`Neighbours`]), so resolving a neighbour costs no API call;
//! - a unicast IPv4 or IPv6 frame to a peer's MAC address goes to that peer, as the IP packet it
//!   carries: the Ethernet header is not sent (14 bytes a frame saved), so TAP and TUN nodes
//!   share one network, and the receiving node writes a header of its own;
//! - every other frame is counted by kind ([`Dropped`]) and dropped: broadcast and multicast
//!   (DHCP, mDNS, router solicitations, multicast listener reports) because carrying one means
//!   a call to every peer, and no node can list its peers without paying for a listing; a
//!   host's DHCP client or mDNS responder repeats its frames every few seconds to minutes, which
//!   would turn an idle node's bill of a cent a month into one of calls per peer per minute,
//!   for answers no peer gives (addresses follow from node ids, there is no DHCP server). Other
//!   protocols than IP (unicast) are dropped because a frame to a MAC address names only 40
//!   bits of a 64-bit node id, so it cannot be routed.
//!
//! A frame for the host goes to the MAC address that last sent one of this node's packets
//! (initially the device's own): when the device is a port of a bridge, or the node's address
//! lives on a bridge or in a container behind it, replies reach whoever holds the address.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};

use smoltcp::wire::{EthernetAddress, EthernetFrame, EthernetProtocol};

use super::ether::{Neighbours, mac_of};
use super::ip::{self, Ipv6};
use super::route::{Route, Router};
use crate::link::NodeId;

/// Bytes of an Ethernet header (no VLAN tag: the host writes none to a TAP device of its own).
pub const HEADER_LEN: usize = 14;

/// What becomes of a frame the host wrote to the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromHost<'a> {
    /// Write `reply` back to the device: a question about a peer answered locally.
    Answer {
        /// What was answered.
        kind: Answered,
        /// The reply, a whole Ethernet frame.
        reply: Vec<u8>,
    },
    /// The IP packet the frame carries, and where the router sends it (to a node only when
    /// the frame was addressed to that node's MAC address).
    Packet {
        /// Where the packet goes.
        route: Route,
        /// The packet, as long as its header says (Ethernet padding removed).
        packet: &'a [u8],
    },
    /// Not carried.
    Drop(Dropped),
}

/// The questions a node answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// An ARP request for a peer's IPv4 address.
    Arp,
    /// An ICMPv6 neighbour solicitation for a peer's IPv6 address.
    Ndp,
}

impl Answered {
    /// Every kind, for metrics.
    pub const ALL: [Answered; 2] = [Answered::Arp, Answered::Ndp];

    /// The kind's name in metrics (`kind="arp"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Answered::Arp => "arp",
            Answered::Ndp => "ndp",
        }
    }
}

/// Why a frame from the host is not carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// ARP that is not a request for a peer: gratuitous ARP, replies, requests for addresses
    /// outside the network.
    Arp,
    /// Neighbour discovery that is not a solicitation for a peer: router solicitations,
    /// advertisements, solicitations for other addresses (duplicate address detection of our
    /// own, say).
    Ndp,
    /// Multicast listener reports and queries (MLD, IPv6).
    Mld,
    /// IGMP (IPv4 multicast membership).
    Igmp,
    /// DHCP or DHCPv6: no peer serves addresses, they follow from node ids.
    Dhcp,
    /// Multicast DNS (UDP 5353).
    Mdns,
    /// Any other broadcast frame.
    Broadcast,
    /// Any other multicast frame.
    Multicast,
    /// Unicast, but neither IPv4 nor IPv6 (nor ARP).
    NotIp,
    /// Unicast IP to a peer's address, but not to its MAC address: the frame was for another
    /// host on the same segment (a bridge's other ports).
    WrongMac,
    /// Too short to be an Ethernet frame, or an IP ethertype whose payload is not a packet of
    /// that version.
    Malformed,
}

impl Dropped {
    /// Every kind, for metrics.
    pub const ALL: [Dropped; 11] = [
        Dropped::Arp,
        Dropped::Ndp,
        Dropped::Mld,
        Dropped::Igmp,
        Dropped::Dhcp,
        Dropped::Mdns,
        Dropped::Broadcast,
        Dropped::Multicast,
        Dropped::NotIp,
        Dropped::WrongMac,
        Dropped::Malformed,
    ];

    /// The kind's name in metrics (`kind="dhcp"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Dropped::Arp => "arp",
            Dropped::Ndp => "ndp",
            Dropped::Mld => "mld",
            Dropped::Igmp => "igmp",
            Dropped::Dhcp => "dhcp",
            Dropped::Mdns => "mdns",
            Dropped::Broadcast => "broadcast",
            Dropped::Multicast => "multicast",
            Dropped::NotIp => "not_ip",
            Dropped::WrongMac => "wrong_mac",
            Dropped::Malformed => "malformed",
        }
    }
}

/// A node's side of a TAP device: frames in, packets and answers out; packets in, frames out.
///
/// Shared by the task that reads the device and the one that writes to it (`&self`
/// everywhere; the host's MAC address is an atomic).
///
/// # Examples
///
/// ```
/// use tunnels::net::{Route, Router, ip};
/// use tunnels::net::ether::mac_of;
/// use tunnels::net::switch::{FromHost, Switch};
///
/// let a = Router::new("fd5e:59b8:f71d:9a3e::".parse().unwrap(), 0xa);
/// let switch = Switch::new(a, mac_of(0xa));
/// // The host pings b: an Ethernet frame to b's MAC address, read from the TAP device.
/// let ping = ip::echo_request(a.addr(), a.addr_of(0xb), 1, 1, b"hi");
/// let mut frame = Vec::new();
/// frame.extend_from_slice(&mac_of(0xb));
/// frame.extend_from_slice(&mac_of(0xa));
/// frame.extend_from_slice(&[0x86, 0xdd]);
/// frame.extend_from_slice(&ping);
/// assert_eq!(
///     switch.read_frame(&frame),
///     FromHost::Packet { route: Route::Node(0xb), packet: &ping[..] },
/// );
/// // b's answer, delivered by the link, is written to the device as a frame from b's MAC.
/// let b = Router::new(a.network(), 0xb);
/// let reply = ip::echo_request(b.addr(), a.addr(), 1, 1, b"hi");
/// let mut out = Vec::new();
/// switch.to_host(0xb, &reply, &mut out);
/// assert_eq!(&out[..6], &mac_of(0xa), "to the host");
/// assert_eq!(&out[6..12], &mac_of(0xb), "from b");
/// assert_eq!(&out[14..], &reply[..]);
/// ```
#[derive(Debug)]
pub struct Switch {
    router: Router,
    neighbours: Neighbours,
    host_mac: AtomicU64,
}

impl Switch {
    /// The TAP side of the node `router` routes for, on a device whose MAC address is
    /// `device_mac`.
    pub fn new(router: Router, device_mac: [u8; 6]) -> Switch {
        Switch {
            neighbours: Neighbours::new(router.network(), router.ipv4_net(), router.me()),
            router,
            host_mac: AtomicU64::new(mac_to_u64(device_mac)),
        }
    }

    /// The router behind it.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The MAC address frames for the host go to.
    pub fn host_mac(&self) -> [u8; 6] {
        let b = self.host_mac.load(Ordering::Relaxed).to_be_bytes();
        [b[2], b[3], b[4], b[5], b[6], b[7]]
    }

    /// What to do with `frame`, read from the device. Never panics, whatever the bytes.
    pub fn read_frame<'a>(&self, frame: &'a [u8]) -> FromHost<'a> {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return FromHost::Drop(Dropped::Malformed);
        };
        let (dst, src, ethertype) = (eth.dst_addr(), eth.src_addr(), eth.ethertype());
        let payload = &frame[HEADER_LEN..];
        // Only ARP and ICMPv6 straight after the IPv6 header (as neighbour solicitations come)
        // can be questions: the per-packet path parses nothing twice for the rest.
        let may_ask = ethertype == EthernetProtocol::Arp
            || (ethertype == EthernetProtocol::Ipv6 && payload.get(6) == Some(&ip::ICMPV6));
        if let Some(reply) = may_ask.then(|| self.neighbours.answer(frame)).flatten() {
            let kind = if ethertype == EthernetProtocol::Arp {
                Answered::Arp
            } else {
                Answered::Ndp
            };
            return FromHost::Answer { kind, reply };
        }
        if !dst.is_unicast() {
            return FromHost::Drop(group_kind(dst, ethertype, payload));
        }
        let version = match ethertype {
            EthernetProtocol::Ipv4 => 4,
            EthernetProtocol::Ipv6 => 6,
            EthernetProtocol::Arp => return FromHost::Drop(Dropped::Arp),
            _ => return FromHost::Drop(Dropped::NotIp),
        };
        let Some(packet) = ip_packet(version, payload) else {
            return FromHost::Drop(Dropped::Malformed);
        };
        let route = self.router.route(packet);
        if let Route::Node(to) = route {
            if dst.0 != mac_of(to) {
                return FromHost::Drop(Dropped::WrongMac);
            }
            let mac = mac_to_u64(src.0);
            if self.host_mac.load(Ordering::Relaxed) != mac
                && src.is_unicast()
                && self.sent_by_us(packet)
            {
                self.host_mac.store(mac, Ordering::Relaxed);
            }
        }
        FromHost::Packet { route, packet }
    }

    /// Whether `packet` (a valid IPv4 or IPv6 packet) comes from this node's own address.
    fn sent_by_us(&self, packet: &[u8]) -> bool {
        match Ipv6::new_checked(packet) {
            Some(v6) => v6.src() == self.router.addr(),
            None => {
                let src = packet.get(12..16).and_then(|b| <[u8; 4]>::try_from(b).ok());
                src.is_some() && src.map(Ipv4Addr::from) == self.router.ipv4_addr()
            }
        }
    }

    /// Writes into `out` (cleared first) the frame that carries `packet`, from `sender`, to the
    /// host: from the sender's MAC address to the host's. `packet` is one the router
    /// accepted ([`Router::accept`]), so its first nibble says its version.
    pub fn to_host(&self, sender: NodeId, packet: &[u8], out: &mut Vec<u8>) {
        let ethertype: u16 = if packet.first().is_some_and(|b| b >> 4 == 4) {
            0x0800
        } else {
            0x86dd
        };
        out.clear();
        out.extend_from_slice(&self.host_mac());
        out.extend_from_slice(&mac_of(sender));
        out.extend_from_slice(&ethertype.to_be_bytes());
        out.extend_from_slice(packet);
    }
}

fn mac_to_u64(mac: [u8; 6]) -> u64 {
    let mut b = [0u8; 8];
    b[2..].copy_from_slice(&mac);
    u64::from_be_bytes(b)
}

/// The IP packet of `version` at the start of `payload`, cut to the length its header gives;
/// `None` if it is not one.
fn ip_packet(version: u8, payload: &[u8]) -> Option<&[u8]> {
    if payload.first()? >> 4 != version {
        return None;
    }
    let len = if version == 6 {
        ip::HEADER_LEN + usize::from(u16::from_be_bytes([*payload.get(4)?, *payload.get(5)?]))
    } else {
        usize::from(u16::from_be_bytes([*payload.get(2)?, *payload.get(3)?]))
    };
    payload.get(..len)
}

/// Why a broadcast or multicast frame is dropped, by what it carries.
fn group_kind(dst: EthernetAddress, ethertype: EthernetProtocol, payload: &[u8]) -> Dropped {
    let other = if dst.is_broadcast() {
        Dropped::Broadcast
    } else {
        Dropped::Multicast
    };
    match ethertype {
        EthernetProtocol::Arp => Dropped::Arp,
        EthernetProtocol::Ipv4 => ipv4_kind(payload).unwrap_or(other),
        EthernetProtocol::Ipv6 => ipv6_kind(payload).unwrap_or(other),
        _ => other,
    }
}

fn ipv4_kind(packet: &[u8]) -> Option<Dropped> {
    let header = usize::from(packet.first()? & 0x0f) * 4;
    let body = packet.get(header..)?;
    match *packet.get(9)? {
        2 => Some(Dropped::Igmp),
        17 => udp_kind(body),
        _ => None,
    }
}

/// IPv6 protocol numbers of the extension headers skipped to find the payload's protocol: the
/// hop-by-hop options that every MLD report carries (its router alert), routing, destination
/// options.
const EXTENSIONS: [u8; 3] = [0, 43, 60];

fn ipv6_kind(packet: &[u8]) -> Option<Dropped> {
    let mut next = *packet.get(6)?;
    let mut rest = packet.get(ip::HEADER_LEN..)?;
    // Two extension headers at most: more would be no frame a host sends to a group.
    for _ in 0..2 {
        if !EXTENSIONS.contains(&next) {
            break;
        }
        let len = (usize::from(*rest.get(1)?) + 1) * 8;
        next = *rest.first()?;
        rest = rest.get(len..)?;
    }
    match next {
        ip::ICMPV6 => match *rest.first()? {
            130..=132 | 143 => Some(Dropped::Mld),
            133..=137 => Some(Dropped::Ndp),
            _ => None,
        },
        17 => udp_kind(rest),
        _ => None,
    }
}

fn udp_kind(udp: &[u8]) -> Option<Dropped> {
    let port = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    match port {
        67 | 68 | 546 | 547 => Some(Dropped::Dhcp),
        5353 => Some(Dropped::Mdns),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;
    use proptest::prelude::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv4Repr};

    use crate::net::Accept;
    use crate::net::ether::Ipv4Net;

    const NET: Ipv6Addr = Ipv6Addr::new(0xfd5e, 0x59b8, 0xf71d, 0x9a3e, 0, 0, 0, 0);
    const A: NodeId = 0xa;
    const B: NodeId = 0xb;

    fn range() -> Ipv4Net {
        Ipv4Net::new(Ipv4Addr::new(10, 77, 0, 0), 16).unwrap()
    }

    fn router(me: NodeId) -> Router {
        Router::new(NET, me).with_ipv4(range()).unwrap()
    }

    fn switch(me: NodeId) -> Switch {
        Switch::new(router(me), mac_of(me))
    }

    fn frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&dst);
        out.extend_from_slice(&src);
        out.extend_from_slice(&ethertype.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x60, 0, 0, 0];
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        out.extend_from_slice(&[next, 255]);
        out.extend_from_slice(&src.octets());
        out.extend_from_slice(&dst.octets());
        out.extend_from_slice(payload);
        out
    }

    fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
        let repr = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::from(protocol),
            payload_len: payload.len(),
            hop_limit: 64,
        };
        let mut out = vec![0; 20 + payload.len()];
        let mut packet = Ipv4Packet::new_unchecked(&mut out[..]);
        repr.emit(&mut packet, &ChecksumCapabilities::default());
        packet.payload_mut().copy_from_slice(payload);
        out
    }

    fn udp(src_port: u16, dst_port: u16) -> Vec<u8> {
        let mut out = Vec::new();
        for word in [src_port, dst_port, 12, 0] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out.extend_from_slice(b"abcd");
        out
    }

    fn addr6(id: NodeId) -> Ipv6Addr {
        ip::node_addr(NET, id)
    }

    fn addr4(id: NodeId) -> Ipv4Addr {
        range().addr_of(id).unwrap()
    }

    /// The MAC address of the multicast group `ip` (RFC 2464 for IPv6, RFC 1112 for IPv4).
    fn group6(ip: Ipv6Addr) -> [u8; 6] {
        let b = ip.octets();
        [0x33, 0x33, b[12], b[13], b[14], b[15]]
    }

    fn group4(ip: Ipv4Addr) -> [u8; 6] {
        let b = ip.octets();
        [0x01, 0x00, 0x5e, b[1] & 0x7f, b[2], b[3]]
    }

    const BROADCAST: [u8; 6] = [0xff; 6];

    #[test]
    fn unicast_ip_to_a_peers_mac_goes_to_that_peer_without_its_padding() {
        let s = switch(A);
        let ping = ip::echo_request(addr6(A), addr6(B), 7, 1, b"ping");
        let mut padded = frame(mac_of(B), mac_of(A), 0x86dd, &ping);
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(
            s.read_frame(&padded),
            FromHost::Packet {
                route: Route::Node(B),
                packet: &ping[..]
            }
        );
        let v4 = ipv4(addr4(A), addr4(B), 1, &[8, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            s.read_frame(&frame(mac_of(B), mac_of(A), 0x0800, &v4)),
            FromHost::Packet {
                route: Route::Node(B),
                packet: &v4[..]
            }
        );
        // Elsewhere (our own address, outside the network): the router's answer, as in TUN
        // mode, whatever the MAC address.
        let outside = ip::echo_request(addr6(A), "fd00::b".parse().unwrap(), 7, 1, b"x");
        assert!(matches!(
            s.read_frame(&frame(mac_of(B), mac_of(A), 0x86dd, &outside)),
            FromHost::Packet {
                route: Route::Outside,
                ..
            }
        ));
        // IPv4 in a network without a range: not carried, as in TUN mode.
        let v6_only = Switch::new(Router::new(NET, A), mac_of(A));
        assert!(matches!(
            v6_only.read_frame(&frame(mac_of(B), mac_of(A), 0x0800, &v4)),
            FromHost::Packet {
                route: Route::NotIpv6,
                ..
            }
        ));
    }

    #[test]
    fn a_packet_to_a_peer_but_another_mac_is_dropped() {
        let ping = ip::echo_request(addr6(A), addr6(B), 7, 1, b"ping");
        let other = [0x02, 0, 0, 0, 0, 0x0c];
        assert_eq!(
            switch(A).read_frame(&frame(other, mac_of(A), 0x86dd, &ping)),
            FromHost::Drop(Dropped::WrongMac)
        );
    }

    #[test]
    fn broadcast_and_multicast_are_dropped_by_kind() {
        let s = switch(A);
        let me = mac_of(A);
        let dhcp = ipv4(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 17, &udp(68, 67));
        let mdns4_ip = Ipv4Addr::new(224, 0, 0, 251);
        let mdns4 = ipv4(addr4(A), mdns4_ip, 17, &udp(5353, 5353));
        let mdns6_ip: Ipv6Addr = "ff02::fb".parse().unwrap();
        let mdns6 = ipv6(addr6(A), mdns6_ip, 17, &udp(5353, 5353));
        let dhcp6_ip: Ipv6Addr = "ff02::1:2".parse().unwrap();
        let dhcp6 = ipv6(addr6(A), dhcp6_ip, 17, &udp(546, 547));
        let all_routers: Ipv6Addr = "ff02::2".parse().unwrap();
        let rs = ipv6(addr6(A), all_routers, 58, &[133, 0, 0, 0, 0, 0, 0, 0]);
        // An MLDv2 report behind its hop-by-hop router alert.
        let mld_ip: Ipv6Addr = "ff02::16".parse().unwrap();
        let mut hop_by_hop = vec![58, 0, 5, 2, 0, 0, 1, 0];
        hop_by_hop.extend_from_slice(&[143, 0, 0, 0, 0, 0, 0, 0]);
        let mld = ipv6(addr6(A), mld_ip, 0, &hop_by_hop);
        let igmp_ip = Ipv4Addr::new(224, 0, 0, 22);
        let igmp = ipv4(addr4(A), igmp_ip, 2, &[0x22, 0, 0, 0, 0, 0, 0, 0]);
        let other4 = ipv4(addr4(A), Ipv4Addr::BROADCAST, 17, &udp(9, 9));
        let other6 = ipv6(addr6(A), "ff02::1".parse().unwrap(), 17, &udp(9, 9));
        // Gratuitous ARP: a request for our own address.
        let mut garp = vec![0, 1, 8, 0, 6, 4, 0, 1];
        garp.extend_from_slice(&me);
        garp.extend_from_slice(&addr4(A).octets());
        garp.extend_from_slice(&[0; 6]);
        garp.extend_from_slice(&addr4(A).octets());
        let cases = [
            (frame(BROADCAST, me, 0x0800, &dhcp), Dropped::Dhcp),
            (frame(group4(mdns4_ip), me, 0x0800, &mdns4), Dropped::Mdns),
            (frame(group6(mdns6_ip), me, 0x86dd, &mdns6), Dropped::Mdns),
            (frame(group6(dhcp6_ip), me, 0x86dd, &dhcp6), Dropped::Dhcp),
            (frame(group6(all_routers), me, 0x86dd, &rs), Dropped::Ndp),
            (frame(group6(mld_ip), me, 0x86dd, &mld), Dropped::Mld),
            (frame(group4(igmp_ip), me, 0x0800, &igmp), Dropped::Igmp),
            (frame(BROADCAST, me, 0x0806, &garp), Dropped::Arp),
            (frame(BROADCAST, me, 0x0800, &other4), Dropped::Broadcast),
            (
                frame(group6(mld_ip), me, 0x86dd, &other6),
                Dropped::Multicast,
            ),
            (frame(BROADCAST, me, 0x88cc, b"lldp"), Dropped::Broadcast),
            (frame(mac_of(B), me, 0x88cc, b"lldp"), Dropped::NotIp),
            (frame(mac_of(B), me, 0x0806, &garp), Dropped::Arp),
            (frame(mac_of(B), me, 0x86dd, &other4), Dropped::Malformed),
            (
                frame(mac_of(B), me, 0x0800, &other4[..10]),
                Dropped::Malformed,
            ),
            (me[..5].to_vec(), Dropped::Malformed),
        ];
        for (i, (frame, kind)) in cases.iter().enumerate() {
            assert_eq!(s.read_frame(frame), FromHost::Drop(*kind), "case {i}");
        }
        // Every kind has its own name, and `ALL` is in the kinds' order (metrics index it by
        // `kind as usize`).
        let names: std::collections::HashSet<_> = Dropped::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(names.len(), Dropped::ALL.len());
        for (i, kind) in Dropped::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i, "{kind:?}");
        }
        for (i, kind) in Answered::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i, "{kind:?}");
        }
    }

    #[test]
    fn questions_about_peers_are_answered_and_named() {
        let s = switch(A);
        let mut request = vec![0, 1, 8, 0, 6, 4, 0, 1];
        request.extend_from_slice(&mac_of(A));
        request.extend_from_slice(&addr4(A).octets());
        request.extend_from_slice(&[0; 6]);
        request.extend_from_slice(&addr4(B).octets());
        let FromHost::Answer { kind, reply } =
            s.read_frame(&frame(BROADCAST, mac_of(A), 0x0806, &request))
        else {
            panic!("not answered");
        };
        assert_eq!(kind, Answered::Arp);
        assert_eq!(&reply[6..12], &mac_of(B));
        // A unicast request (the kernel refreshing a stale entry) is answered too.
        let refresh = frame(mac_of(B), mac_of(A), 0x0806, &request);
        assert!(matches!(
            s.read_frame(&refresh),
            FromHost::Answer {
                kind: Answered::Arp,
                ..
            }
        ));
    }

    #[test]
    fn replies_go_to_whoever_sent_our_packets_last() {
        let s = switch(A);
        assert_eq!(s.host_mac(), mac_of(A));
        // The node's address on a bridge (or in a container behind it) with a MAC of its own.
        let bridge = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let ping = ip::echo_request(addr6(A), addr6(B), 7, 1, b"ping");
        let _ = s.read_frame(&frame(mac_of(B), bridge, 0x86dd, &ping));
        assert_eq!(s.host_mac(), bridge);
        let mut out = Vec::new();
        s.to_host(B, &ping, &mut out);
        assert_eq!(&out[..6], &bridge);
        // Another host of the bridge, not holding our address, does not take our replies.
        let stranger = [0x52, 0x54, 0, 0xde, 0xad, 0];
        let spoof = ip::echo_request(
            "fd5e:59b8:f71d:9a3e::99".parse().unwrap(),
            addr6(B),
            7,
            1,
            b"x",
        );
        let _ = s.read_frame(&frame(mac_of(B), stranger, 0x86dd, &spoof));
        let v4 = ipv4(
            Ipv4Addr::new(10, 77, 0, 99),
            addr4(B),
            1,
            &[8, 0, 0, 0, 0, 0, 0, 0],
        );
        let _ = s.read_frame(&frame(mac_of(B), stranger, 0x0800, &v4));
        assert_eq!(s.host_mac(), bridge);
        let ours = ipv4(addr4(A), addr4(B), 1, &[8, 0, 0, 0, 0, 0, 0, 0]);
        let _ = s.read_frame(&frame(mac_of(B), stranger, 0x0800, &ours));
        assert_eq!(s.host_mac(), stranger, "now it holds our IPv4 address");
    }

    proptest! {
        #[test]
        fn any_bytes_get_an_answer_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = switch(A).read_frame(&bytes);
        }

        /// A packet from A's host to B's MAC address reaches B's host as the same packet, in a
        /// frame from A's MAC address: TAP to TAP through the router's checks, for any node ids
        /// and payloads, IPv6 and IPv4.
        #[test]
        fn packets_cross_from_host_to_host_unchanged(
            a in 1u64..0xfffe,
            b in 1u64..0xfffe,
            data in proptest::collection::vec(any::<u8>(), 0..1400),
            v4 in any::<bool>(),
        ) {
            prop_assume!(a != b);
            let (sa, sb) = (switch(a), switch(b));
            let packet = if v4 {
                ipv4(addr4(a), addr4(b), 17, &data)
            } else {
                ipv6(addr6(a), addr6(b), 17, &data)
            };
            let ethertype = if v4 { 0x0800 } else { 0x86dd };
            let written = frame(mac_of(b), mac_of(a), ethertype, &packet);
            let FromHost::Packet { route, packet: carried } = sa.read_frame(&written) else {
                panic!("not carried");
            };
            prop_assert_eq!(route, Route::Node(b));
            prop_assert_eq!(sb.router().accept(a, carried), Accept::Deliver);
            let mut out = Vec::new();
            sb.to_host(a, carried, &mut out);
            prop_assert_eq!(&out[..6], &mac_of(b));
            prop_assert_eq!(&out[6..12], &mac_of(a));
            prop_assert_eq!(u16::from_be_bytes([out[12], out[13]]), ethertype);
            prop_assert_eq!(&out[HEADER_LEN..], &packet[..]);
        }
    }
}
