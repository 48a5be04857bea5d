//! Ethernet for TAP mode: each node's MAC address, and the neighbour questions a node answers
//! itself from what it knows, so that resolving a peer costs no API call.
//!
//! A node's addresses follow from its id: IPv6 is the network's /64 plus the id; IPv4 (with
//! `--ipv4`) is the range plus the id, when the id fits the range's host bits; the MAC address
//! is `02` (locally administered, unicast) followed by the id's low 40 bits. Two ids with the
//! same low 40 bits share a MAC address: ids that differ only above bit 40 cannot share a TAP
//! network (machine-id-derived ids differ within their low 40 bits but for one pair in a
//! trillion); a node does not answer for a peer whose MAC address would be its own.
//!
//! [`Neighbours::answer`] takes a frame the host wrote to the device and, if it is an ARP
//! request for a peer's IPv4 address or an ICMPv6 neighbour solicitation for a peer's IPv6
//! address, returns the reply to write back: the peer's MAC address, at once, where the seed's
//! design (Richard Linklayer) polled a broadcast log group once a second on every node to
//! carry ARP. Parsing and emitting are `smoltcp`'s; nothing here panics on any input (the
//! `ether` fuzz target checks that).

use std::net::{Ipv4Addr, Ipv6Addr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv6Packet, Ipv6Repr, NdiscNeighborFlags,
    NdiscRepr, RawHardwareAddress,
};

use crate::link::NodeId;

/// Node `id`'s MAC address: `02` (locally administered, unicast), then the id's low 40 bits.
///
/// ```
/// use tunnels::net::ether::mac_of;
///
/// assert_eq!(mac_of(0xa), [0x02, 0, 0, 0, 0, 0x0a]);
/// assert_eq!(mac_of(0x1234_5678_9abc_def0), [0x02, 0x78, 0x9a, 0xbc, 0xde, 0xf0]);
/// ```
pub fn mac_of(id: NodeId) -> [u8; 6] {
    let b = id.to_be_bytes();
    [0x02, b[3], b[4], b[5], b[6], b[7]]
}

/// An IPv4 range given to a network (`--ipv4 CIDR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Net {
    /// The range `network/prefix_len`; `None` if bits are set past the prefix or the prefix
    /// leaves fewer than two host bits.
    pub fn new(network: Ipv4Addr, prefix_len: u8) -> Option<Ipv4Net> {
        let net = Ipv4Net {
            network,
            prefix_len,
        };
        (prefix_len <= 30 && u32::from(network) & net.host_mask() == 0).then_some(net)
    }

    /// The range's first address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether the range and `other/prefix_len` share any address.
    pub fn overlaps(&self, other: Ipv4Addr, prefix_len: u8) -> bool {
        let shorter = self.prefix_len.min(prefix_len);
        let mask = u32::MAX.checked_shl(32 - u32::from(shorter)).unwrap_or(0);
        u32::from(self.network) & mask == u32::from(other) & mask
    }

    fn host_mask(&self) -> u32 {
        u32::MAX
            .checked_shr(u32::from(self.prefix_len))
            .unwrap_or(0)
    }

    /// Node `id`'s address in the range; `None` if the id does not fit its host bits (or is
    /// the broadcast address's).
    pub fn addr_of(&self, id: NodeId) -> Option<Ipv4Addr> {
        let mask = u64::from(self.host_mask());
        (id != 0 && id < mask).then(|| Ipv4Addr::from(u32::from(self.network) | id as u32))
    }

    /// The node whose address `addr` is; `None` outside the range, for the network's own
    /// address and for its broadcast address.
    pub fn node_of(&self, addr: Ipv4Addr) -> Option<NodeId> {
        let mask = self.host_mask();
        let host = u32::from(addr) & mask;
        (u32::from(addr) & !mask == u32::from(self.network) && host != 0 && host != mask)
            .then_some(NodeId::from(host))
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// What a node knows of its network's neighbours: enough to answer for every peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbours {
    network: Ipv6Addr,
    ipv4: Option<Ipv4Net>,
    me: NodeId,
}

impl Neighbours {
    /// Node `me` of the IPv6 /64 `network` and, with `--ipv4`, of the range `ipv4`.
    pub fn new(network: Ipv6Addr, ipv4: Option<Ipv4Net>, me: NodeId) -> Neighbours {
        Neighbours { network, ipv4, me }
    }

    /// The peer whose IPv6 address `addr` is, if it is one of the network's and not ours.
    fn peer6(&self, addr: Ipv6Addr) -> Option<NodeId> {
        let bits = u128::from(addr);
        let id = bits as u64;
        (bits >> 64 == u128::from(self.network) >> 64 && id != 0).then_some(id)
    }

    /// `peer`, if it is not us and its MAC address is not ours: an id with our low 40 bits
    /// cannot be told apart from us on Ethernet, so it is not answered for (the host would take
    /// the peer for itself).
    fn distinct(&self, peer: NodeId) -> Option<NodeId> {
        (peer != self.me && mac_of(peer) != mac_of(self.me)).then_some(peer)
    }

    /// The reply to write back to the device if `frame` asks for a peer's address (an ARP
    /// request, an ICMPv6 neighbour solicitation); `None` for every other frame, malformed
    /// ones included.
    pub fn answer(&self, frame: &[u8]) -> Option<Vec<u8>> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        let eth_repr = EthernetRepr::parse(&eth).ok()?;
        match eth_repr.ethertype {
            EthernetProtocol::Arp => self.answer_arp(&eth_repr, eth.payload()),
            EthernetProtocol::Ipv6 => self.answer_ndp(&eth_repr, eth.payload()),
            _ => None,
        }
    }

    fn answer_arp(&self, eth: &EthernetRepr, payload: &[u8]) -> Option<Vec<u8>> {
        let packet = ArpPacket::new_checked(payload).ok()?;
        let ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        } = ArpRepr::parse(&packet).ok()?
        else {
            return None;
        };
        let peer = self.distinct(self.ipv4?.node_of(target_protocol_addr)?)?;
        if !source_hardware_addr.is_unicast() || source_hardware_addr != eth.src_addr {
            return None;
        }
        let mac = EthernetAddress(mac_of(peer));
        let reply = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: mac,
            source_protocol_addr: target_protocol_addr,
            target_hardware_addr: source_hardware_addr,
            target_protocol_addr: source_protocol_addr,
        };
        let mut out = vec![0; 14 + reply.buffer_len()];
        let mut frame = EthernetFrame::new_unchecked(&mut out[..]);
        EthernetRepr {
            src_addr: mac,
            dst_addr: source_hardware_addr,
            ethertype: EthernetProtocol::Arp,
        }
        .emit(&mut frame);
        reply.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
        Some(out)
    }

    fn answer_ndp(&self, eth: &EthernetRepr, payload: &[u8]) -> Option<Vec<u8>> {
        let ip = Ipv6Packet::new_checked(payload).ok()?;
        let ip_repr = Ipv6Repr::parse(&ip).ok()?;
        // Neighbour discovery comes from a neighbour only (RFC 4861: hop limit 255).
        if ip_repr.next_header != IpProtocol::Icmpv6 || ip_repr.hop_limit != 255 {
            return None;
        }
        let icmp = Icmpv6Packet::new_checked(ip.payload()).ok()?;
        let caps = ChecksumCapabilities::default();
        let Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr, .. }) =
            Icmpv6Repr::parse(&ip_repr.src_addr, &ip_repr.dst_addr, &icmp, &caps).ok()?
        else {
            return None;
        };
        let peer = self.distinct(self.peer6(target_addr)?)?;
        let mac = EthernetAddress(mac_of(peer));
        // Duplicate address detection (from ::) is answered to all nodes, unsolicited.
        let dad = ip_repr.src_addr.is_unspecified();
        let (dst_ip, dst_mac, flags) = if dad {
            (
                Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
                EthernetAddress([0x33, 0x33, 0, 0, 0, 1]),
                NdiscNeighborFlags::OVERRIDE,
            )
        } else {
            (
                ip_repr.src_addr,
                eth.src_addr,
                NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE,
            )
        };
        let advert = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            flags,
            target_addr,
            lladdr: Some(RawHardwareAddress::from_bytes(&mac.0)),
        });
        let reply_ip = Ipv6Repr {
            src_addr: target_addr,
            dst_addr: dst_ip,
            next_header: IpProtocol::Icmpv6,
            payload_len: advert.buffer_len(),
            hop_limit: 255,
        };
        let mut out = vec![0; 14 + reply_ip.buffer_len() + advert.buffer_len()];
        let mut frame = EthernetFrame::new_unchecked(&mut out[..]);
        EthernetRepr {
            src_addr: mac,
            dst_addr: dst_mac,
            ethertype: EthernetProtocol::Ipv6,
        }
        .emit(&mut frame);
        let mut packet = Ipv6Packet::new_unchecked(frame.payload_mut());
        reply_ip.emit(&mut packet);
        advert.emit(
            &target_addr,
            &dst_ip,
            &mut Icmpv6Packet::new_unchecked(packet.payload_mut()),
            &caps,
        );
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NET: Ipv6Addr = Ipv6Addr::new(0xfd5e, 0x59b8, 0xf71d, 0x9a3e, 0, 0, 0, 0);
    const HOST_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x0a]);

    fn ipv4() -> Ipv4Net {
        Ipv4Net::new(Ipv4Addr::new(10, 77, 0, 0), 16).unwrap()
    }

    fn neighbours() -> Neighbours {
        Neighbours::new(NET, Some(ipv4()), 0xa)
    }

    fn addr6(id: NodeId) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(NET) | u128::from(id))
    }

    fn arp(operation: ArpOperation, target: Ipv4Addr) -> Vec<u8> {
        let repr = ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr: HOST_MAC,
            source_protocol_addr: Ipv4Addr::new(10, 77, 0, 10),
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: target,
        };
        let mut out = vec![0; 14 + repr.buffer_len()];
        let mut frame = EthernetFrame::new_unchecked(&mut out[..]);
        EthernetRepr {
            src_addr: HOST_MAC,
            dst_addr: EthernetAddress::BROADCAST,
            ethertype: EthernetProtocol::Arp,
        }
        .emit(&mut frame);
        repr.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
        out
    }

    fn solicit(src: Ipv6Addr, target: Ipv6Addr, hop_limit: u8) -> Vec<u8> {
        let icmp = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
            target_addr: target,
            lladdr: Some(RawHardwareAddress::from_bytes(&HOST_MAC.0)),
        });
        let b = target.octets();
        let dst = Ipv6Addr::new(
            0xff02,
            0,
            0,
            0,
            0,
            1,
            0xff00 | u16::from(b[13]),
            u16::from_be_bytes([b[14], b[15]]),
        );
        let ip = Ipv6Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Icmpv6,
            payload_len: icmp.buffer_len(),
            hop_limit,
        };
        let mut out = vec![0; 14 + ip.buffer_len() + icmp.buffer_len()];
        let mut frame = EthernetFrame::new_unchecked(&mut out[..]);
        EthernetRepr {
            src_addr: HOST_MAC,
            dst_addr: EthernetAddress([0x33, 0x33, 0xff, b[13], b[14], b[15]]),
            ethertype: EthernetProtocol::Ipv6,
        }
        .emit(&mut frame);
        let mut packet = Ipv6Packet::new_unchecked(frame.payload_mut());
        ip.emit(&mut packet);
        icmp.emit(
            &src,
            &dst,
            &mut Icmpv6Packet::new_unchecked(packet.payload_mut()),
            &ChecksumCapabilities::default(),
        );
        out
    }

    /// The ARP reply in `frame`, checked: (its Ethernet source and destination, sender MAC
    /// and address, target MAC and address).
    fn arp_reply(frame: &[u8]) -> (EthernetRepr, ArpRepr) {
        let eth = EthernetFrame::new_checked(frame).unwrap();
        let eth_repr = EthernetRepr::parse(&eth).unwrap();
        let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
        (eth_repr, arp)
    }

    /// The neighbour advertisement in `frame`, its checksum checked: (Ethernet, IPv6, NDISC).
    fn advert(frame: &[u8]) -> (EthernetRepr, Ipv6Repr, NeighborAdvert) {
        let eth = EthernetFrame::new_checked(frame).unwrap();
        let eth_repr = EthernetRepr::parse(&eth).unwrap();
        let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
        let ip_repr = Ipv6Repr::parse(&ip).unwrap();
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        let Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            flags,
            target_addr,
            lladdr,
        }) = Icmpv6Repr::parse(
            &ip_repr.src_addr,
            &ip_repr.dst_addr,
            &icmp,
            &ChecksumCapabilities::default(),
        )
        .unwrap()
        else {
            panic!("not an advertisement");
        };
        (
            eth_repr,
            ip_repr,
            NeighborAdvert {
                flags,
                target_addr,
                lladdr: lladdr.map(|l| l.as_bytes().to_vec()),
            },
        )
    }

    #[derive(Debug)]
    struct NeighborAdvert {
        flags: NdiscNeighborFlags,
        target_addr: Ipv6Addr,
        lladdr: Option<Vec<u8>>,
    }

    #[test]
    fn an_arp_request_for_a_peer_is_answered_with_its_mac() {
        let reply = neighbours()
            .answer(&arp(ArpOperation::Request, Ipv4Addr::new(10, 77, 0, 0xb)))
            .expect("answered");
        let (eth, arp) = arp_reply(&reply);
        assert_eq!(eth.src_addr, EthernetAddress(mac_of(0xb)));
        assert_eq!(eth.dst_addr, HOST_MAC);
        assert_eq!(
            arp,
            ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: EthernetAddress(mac_of(0xb)),
                source_protocol_addr: Ipv4Addr::new(10, 77, 0, 0xb),
                target_hardware_addr: HOST_MAC,
                target_protocol_addr: Ipv4Addr::new(10, 77, 0, 10),
            }
        );
    }

    #[test]
    fn arp_for_ourselves_outside_the_range_or_without_ipv4_is_not_answered() {
        let n = neighbours();
        for target in [
            Ipv4Addr::new(10, 77, 0, 0xa),
            Ipv4Addr::new(10, 78, 0, 0xb),
            Ipv4Addr::new(10, 77, 0, 0),
            Ipv4Addr::new(10, 77, 255, 255),
        ] {
            assert_eq!(
                n.answer(&arp(ArpOperation::Request, target)),
                None,
                "{target}"
            );
        }
        let peer = Ipv4Addr::new(10, 77, 0, 0xb);
        assert_eq!(n.answer(&arp(ArpOperation::Reply, peer)), None);
        let v6_only = Neighbours::new(NET, None, 0xa);
        assert_eq!(v6_only.answer(&arp(ArpOperation::Request, peer)), None);
    }

    #[test]
    fn a_neighbour_solicitation_for_a_peer_is_advertised_with_its_mac() {
        let frame = solicit(addr6(0xa), addr6(0xb), 255);
        let (eth, ip, na) = advert(&neighbours().answer(&frame).expect("answered"));
        assert_eq!(eth.src_addr, EthernetAddress(mac_of(0xb)));
        assert_eq!(eth.dst_addr, HOST_MAC);
        assert_eq!(
            (ip.src_addr, ip.dst_addr, ip.hop_limit),
            (addr6(0xb), addr6(0xa), 255)
        );
        assert_eq!(na.target_addr, addr6(0xb));
        assert_eq!(
            na.flags,
            NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE
        );
        assert_eq!(na.lladdr.as_deref(), Some(&mac_of(0xb)[..]));
    }

    #[test]
    fn solicitations_for_ourselves_off_link_or_outside_the_network_are_not_answered() {
        let n = neighbours();
        assert_eq!(n.answer(&solicit(addr6(0xa), addr6(0xa), 255)), None);
        // An id with our low 40 bits would have our MAC address (found by the fuzzer).
        let twin = 0x2500_0000_0000_000a;
        assert_eq!(mac_of(twin), mac_of(0xa));
        assert_eq!(n.answer(&solicit(addr6(0xa), addr6(twin), 255)), None);
        assert_eq!(
            n.answer(&solicit(addr6(0xa), addr6(0xb), 64)),
            None,
            "hop limit"
        );
        let outside = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0xb);
        assert_eq!(n.answer(&solicit(addr6(0xa), outside, 255)), None);
        // Duplicate address detection of a peer's address: told to every node.
        let (eth, ip, na) = advert(
            &n.answer(&solicit(Ipv6Addr::UNSPECIFIED, addr6(0xb), 255))
                .unwrap(),
        );
        assert_eq!(ip.dst_addr, Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1));
        assert_eq!(eth.dst_addr, EthernetAddress([0x33, 0x33, 0, 0, 0, 1]));
        assert_eq!(na.flags, NdiscNeighborFlags::OVERRIDE);
    }

    #[test]
    fn ipv4_addresses_follow_from_node_ids_that_fit_the_range() {
        let net = Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 24).unwrap();
        assert_eq!(net.addr_of(0xb), Some(Ipv4Addr::new(10, 0, 0, 0xb)));
        assert_eq!(net.addr_of(0xff), None, "the broadcast address");
        assert_eq!(net.addr_of(0x100), None, "too large for a /24");
        assert_eq!(net.addr_of(0), None);
        assert_eq!(net.node_of(Ipv4Addr::new(10, 0, 0, 0xb)), Some(0xb));
        assert_eq!(net.node_of(Ipv4Addr::new(10, 0, 1, 0xb)), None);
        assert!(
            Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 1), 24).is_none(),
            "host bits set"
        );
        assert!(
            Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 31).is_none(),
            "no room"
        );
    }

    proptest! {
        #[test]
        fn any_bytes_are_answered_or_not_without_panicking(frame in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = neighbours().answer(&frame);
        }

        #[test]
        fn every_peer_in_the_range_is_answered_with_its_own_mac(id in 1u64..0xfffe) {
            prop_assume!(id != 0xa);
            let target = ipv4().addr_of(id).unwrap();
            let reply = neighbours().answer(&arp(ArpOperation::Request, target)).unwrap();
            let (eth, arp) = arp_reply(&reply);
            prop_assert_eq!(eth.src_addr, EthernetAddress(mac_of(id)));
            let ArpRepr::EthernetIpv4 { source_protocol_addr, .. } = arp else { unreachable!() };
            prop_assert_eq!(source_protocol_addr, target);
            prop_assert_eq!(ipv4().node_of(target), Some(id));
        }

        #[test]
        fn every_peer_in_the_network_is_advertised_with_its_own_mac(id in any::<u64>()) {
            prop_assume!(id != 0 && mac_of(id) != mac_of(0xa));
            let (_, _, na) = advert(&neighbours().answer(&solicit(addr6(0xa), addr6(id), 255)).unwrap());
            prop_assert_eq!(na.target_addr, addr6(id));
            prop_assert_eq!(na.lladdr.as_deref(), Some(&mac_of(id)[..]));
        }
    }
}
