//! Routing: which node a packet goes to, and which packets a node accepts from a sender.
//!
//! Plain code over bytes, tested without a device:
//!
//! - [`ether`]: Ethernet for TAP mode: each node's MAC address, IPv4 ranges, and ARP and
//!   neighbour solicitations for peers answered locally.
//! - [`ip`]: the few IPv6 fields a tunnel reads, node addresses, ICMPv6 echo.
//! - [`route`]: a node's [`Router`]: the node a packet from the device goes to, and whether a
//!   frame a sender delivered may reach the device.
//! - [`switch`]: TAP mode: the [`Switch`] between a TAP device's Ethernet frames and the
//!   router's packets, answering ARP and neighbour solicitations for peers itself.

pub mod ether;
pub mod ip;
pub mod route;
pub mod switch;

pub use route::{Accept, Route, Router};
pub use switch::Switch;
