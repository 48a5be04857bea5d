//! Which node a packet from the device goes to, and which frames from a sender reach the device.
//!
//! A network is an IPv6 /64; a node's address is the network plus its node id. A network may
//! have an IPv4 range too ([`Router::with_ipv4`]), where a node's address is the range plus its
//! node id ([`Ipv4Net::addr_of`]). A packet leaves for the node its destination names, if that
//! is another node of the network; a frame that arrives is written to the device only if it is
//! an IP packet from its sender's own address to ours, so that a node cannot speak for
//! another, nor reach beyond the network.

use std::net::{Ipv4Addr, Ipv6Addr};

use smoltcp::wire::{Ipv4Packet, Ipv4Repr};

use super::ether::Ipv4Net;
use super::ip::{self, Ipv6};
use crate::link::NodeId;

/// Where a packet from the device goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To this node of the network.
    Node(NodeId),
    /// Not IPv6 (nor IPv4 in a network with an IPv4 range): not carried.
    NotIpv6,
    /// IPv6, but not to another node of the network (multicast, this node, elsewhere).
    Outside,
}

/// What becomes of a frame a sender delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Write it to the device.
    Deliver,
    /// Not an IPv6 packet (nor IPv4 in a network with an IPv4 range).
    Malformed,
    /// Not from its sender's address, or not to ours.
    WrongAddress,
}

/// The routing of one node of a network.
///
/// # Examples
///
/// ```
/// use tunnels::net::{Accept, Route, Router, ip};
///
/// let a = Router::new("fd5e:59b8:f71d:9a3e::".parse().unwrap(), 0xa);
/// let b = Router::new(a.network(), 0xb);
/// let ping = ip::echo_request(a.addr(), b.addr(), 1, 1, b"hi");
/// assert_eq!(a.route(&ping), Route::Node(0xb));
/// assert_eq!(b.accept(0xa, &ping), Accept::Deliver);
/// assert_eq!(b.accept(0xc, &ping), Accept::WrongAddress, "c cannot speak for a");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Router {
    network: Ipv6Addr,
    me: NodeId,
    addr: Ipv6Addr,
    ipv4: Option<(Ipv4Net, Ipv4Addr)>,
}

impl Router {
    /// The routing of node `me` in `network` (a /64: its last 64 bits are ignored).
    pub fn new(network: Ipv6Addr, me: NodeId) -> Router {
        let network = Ipv6Addr::from(u128::from(network) & !u128::from(u64::MAX));
        Router {
            network,
            me,
            addr: ip::node_addr(network, me),
            ipv4: None,
        }
    }

    /// The same, with the IPv4 range `net` too; `None` if this node's id does not fit the
    /// range's host bits (it would have no address in it).
    ///
    /// ```
    /// use std::net::Ipv4Addr;
    /// use tunnels::net::Router;
    /// use tunnels::net::ether::Ipv4Net;
    ///
    /// let net = Ipv4Net::new(Ipv4Addr::new(10, 77, 0, 0), 16).unwrap();
    /// let a = Router::new("fd5e:59b8:f71d:9a3e::".parse().unwrap(), 0xa);
    /// assert_eq!(a.with_ipv4(net).unwrap().ipv4_addr(), Some(Ipv4Addr::new(10, 77, 0, 10)));
    /// let far = Router::new(a.network(), 0x1_0000);
    /// assert!(far.with_ipv4(net).is_none(), "0x10000 has no address in a /16");
    /// ```
    pub fn with_ipv4(self, net: Ipv4Net) -> Option<Router> {
        let addr = net.addr_of(self.me)?;
        Some(Router {
            ipv4: Some((net, addr)),
            ..self
        })
    }

    /// This node's IPv4 address, if the network has an IPv4 range.
    pub fn ipv4_addr(&self) -> Option<Ipv4Addr> {
        self.ipv4.map(|(_, addr)| addr)
    }

    /// The network's IPv4 range, if it has one.
    pub fn ipv4_net(&self) -> Option<Ipv4Net> {
        self.ipv4.map(|(net, _)| net)
    }

    /// An IPv4 packet's (source, destination), if `packet` is a valid one and the network
    /// has an IPv4 range.
    fn ipv4_ends(&self, packet: &[u8]) -> Option<(Ipv4Net, Ipv4Repr)> {
        let (net, _) = self.ipv4?;
        let packet = Ipv4Packet::new_checked(packet).ok()?;
        let repr = Ipv4Repr::parse(&packet, &smoltcp::phy::ChecksumCapabilities::default()).ok()?;
        Some((net, repr))
    }

    /// The network.
    pub fn network(&self) -> Ipv6Addr {
        self.network
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// This node's address.
    pub fn addr(&self) -> Ipv6Addr {
        self.addr
    }

    /// The address of node `id`.
    pub fn addr_of(&self, id: NodeId) -> Ipv6Addr {
        ip::node_addr(self.network, id)
    }

    /// Where `packet`, read from the device, goes.
    pub fn route(&self, packet: &[u8]) -> Route {
        if packet.first().is_some_and(|b| b >> 4 == 4) {
            let Some((net, repr)) = self.ipv4_ends(packet) else {
                return Route::NotIpv6;
            };
            return match net.node_of(repr.dst_addr) {
                Some(id) if id != self.me => Route::Node(id),
                _ => Route::Outside,
            };
        }
        let Some(packet) = Ipv6::new_checked(packet) else {
            return Route::NotIpv6;
        };
        match ip::node_id(self.network, packet.dst()) {
            Some(id) if id != self.me && id != 0 => Route::Node(id),
            _ => Route::Outside,
        }
    }

    /// Whether `frame`, delivered from `sender`, may go to the device.
    pub fn accept(&self, sender: NodeId, frame: &[u8]) -> Accept {
        if frame.first().is_some_and(|b| b >> 4 == 4) {
            let Some((net, repr)) = self.ipv4_ends(frame) else {
                return Accept::Malformed;
            };
            let from_sender = net.addr_of(sender) == Some(repr.src_addr);
            return if from_sender && Some(repr.dst_addr) == self.ipv4_addr() {
                Accept::Deliver
            } else {
                Accept::WrongAddress
            };
        }
        let Some(packet) = Ipv6::new_checked(frame) else {
            return Accept::Malformed;
        };
        if packet.src() != self.addr_of(sender) || packet.dst() != self.addr {
            return Accept::WrongAddress;
        }
        Accept::Deliver
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hoshino's network.
    const NETWORK: Ipv6Addr = Ipv6Addr::new(0xfd5e, 0x59b8, 0xf71d, 0x9a3e, 0, 0, 0, 0);

    #[test]
    fn packets_go_to_other_nodes_of_the_network_only() {
        let router = Router::new(NETWORK, 0xa);
        let from = router.addr();
        let to_b = ip::echo_request(from, router.addr_of(0xb), 1, 1, b"x");
        assert_eq!(router.route(&to_b), Route::Node(0xb));
        let to_me = ip::echo_request(from, from, 1, 1, b"x");
        assert_eq!(router.route(&to_me), Route::Outside);
        let multicast = ip::echo_request(from, "ff02::2".parse().unwrap(), 1, 1, b"x");
        assert_eq!(router.route(&multicast), Route::Outside);
        let elsewhere = ip::echo_request(from, "fd00::b".parse().unwrap(), 1, 1, b"x");
        assert_eq!(router.route(&elsewhere), Route::Outside);
        let anycast = ip::echo_request(from, NETWORK, 1, 1, b"x");
        assert_eq!(router.route(&anycast), Route::Outside);
        let ipv4 = [0x45u8; 40];
        assert_eq!(router.route(&ipv4), Route::NotIpv6);
    }

    #[test]
    fn frames_are_accepted_only_from_their_sender_to_us() {
        let (a, b) = (Router::new(NETWORK, 0xa), Router::new(NETWORK, 0xb));
        let ping = ip::echo_request(a.addr(), b.addr(), 1, 1, b"x");
        assert_eq!(b.accept(0xa, &ping), Accept::Deliver);
        assert_eq!(
            b.accept(0xc, &ping),
            Accept::WrongAddress,
            "c speaking for a"
        );
        let to_c = ip::echo_request(a.addr(), a.addr_of(0xc), 1, 1, b"x");
        assert_eq!(b.accept(0xa, &to_c), Accept::WrongAddress, "not for us");
        assert_eq!(b.accept(0xa, b"\x60garbage"), Accept::Malformed);
        assert_eq!(b.accept(0xa, &[0x45; 40]), Accept::Malformed);
    }

    /// An IPv4 packet (ICMP echo, with a valid header checksum) from `src` to `dst`.
    fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let repr = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: smoltcp::wire::IpProtocol::Icmp,
            payload_len: 8,
            hop_limit: 64,
        };
        let mut out = vec![0; 20 + 8];
        repr.emit(
            &mut Ipv4Packet::new_unchecked(&mut out[..]),
            &smoltcp::phy::ChecksumCapabilities::default(),
        );
        out
    }

    #[test]
    fn with_an_ipv4_range_ipv4_packets_travel_like_ipv6_ones() {
        let net = Ipv4Net::new(Ipv4Addr::new(10, 77, 0, 0), 16).unwrap();
        let a = Router::new(NETWORK, 0xa).with_ipv4(net).unwrap();
        let b = Router::new(NETWORK, 0xb).with_ipv4(net).unwrap();
        let (ip_a, ip_b) = (a.ipv4_addr().unwrap(), b.ipv4_addr().unwrap());
        assert_eq!(ip_b, Ipv4Addr::new(10, 77, 0, 11));
        let to_b = ipv4_packet(ip_a, ip_b);
        assert_eq!(a.route(&to_b), Route::Node(0xb));
        assert_eq!(b.accept(0xa, &to_b), Accept::Deliver);
        assert_eq!(
            b.accept(0xc, &to_b),
            Accept::WrongAddress,
            "c speaking for a"
        );
        let to_me = ipv4_packet(ip_a, ip_a);
        assert_eq!(a.route(&to_me), Route::Outside);
        for dst in [
            Ipv4Addr::new(10, 78, 0, 11),
            Ipv4Addr::new(10, 77, 255, 255),
            Ipv4Addr::new(10, 77, 0, 0),
        ] {
            assert_eq!(a.route(&ipv4_packet(ip_a, dst)), Route::Outside, "{dst}");
        }
        let mut damaged = to_b.clone();
        damaged[10] ^= 1; // the header checksum
        assert_eq!(a.route(&damaged), Route::NotIpv6);
        assert_eq!(b.accept(0xa, &damaged), Accept::Malformed);
        // Without a range, IPv4 is not carried, as before.
        let v6_only = Router::new(NETWORK, 0xa);
        assert_eq!(v6_only.route(&to_b), Route::NotIpv6);
        assert_eq!(
            Router::new(NETWORK, 0xb).accept(0xa, &to_b),
            Accept::Malformed
        );
        // IPv6 still goes as it did.
        let ping6 = ip::echo_request(a.addr(), b.addr(), 1, 1, b"x");
        assert_eq!(a.route(&ping6), Route::Node(0xb));
    }

    #[test]
    fn the_network_is_its_slash_64() {
        let router = Router::new("fd00:1:2:3:ffff::1".parse().unwrap(), 5);
        assert_eq!(
            router.network(),
            "fd00:1:2:3::".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(router.addr(), "fd00:1:2:3::5".parse::<Ipv6Addr>().unwrap());
    }
}
