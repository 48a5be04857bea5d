//! Which node a packet from the device goes to, and which frames from a sender reach the device.
//!
//! A network is an IPv6 /64; a node's address is the network plus its node id. A packet leaves
//! for the node its destination names, if that is another node of the network; a frame that
//! arrives is written to the device only if it is an IPv6 packet from its sender's own address
//! to ours, so that a node cannot speak for another, nor reach beyond the network.

use std::net::Ipv6Addr;

use super::ip::{self, Ipv6};
use crate::link::NodeId;

/// Where a packet from the device goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To this node of the network.
    Node(NodeId),
    /// Not IPv6: not carried.
    NotIpv6,
    /// IPv6, but not to another node of the network (multicast, this node, elsewhere).
    Outside,
}

/// What becomes of a frame a sender delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Write it to the device.
    Deliver,
    /// Not an IPv6 packet.
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
}

impl Router {
    /// The routing of node `me` in `network` (a /64: its last 64 bits are ignored).
    pub fn new(network: Ipv6Addr, me: NodeId) -> Router {
        let network = Ipv6Addr::from(u128::from(network) & !u128::from(u64::MAX));
        Router {
            network,
            me,
            addr: ip::node_addr(network, me),
        }
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
