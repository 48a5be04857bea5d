//! Devices: where a node's packets come from and go to.
//!
//! A [`Device`] reads a packet (or, for a TAP device, an Ethernet frame) into a buffer, writes
//! one without waiting, and says its name and MTU. The node's driver reads from it and writes
//! what the link delivered to it; a write that would block is a dropped packet, counted, as a
//! router's full queue would drop it, so that a slow device never stalls delivery.
//!
//! - `tun` (feature `tun`, Linux): a TUN device on `tun-rs`, its route set over `rtnetlink`.
//! - `tap` (feature `tun`, Linux): the same as a TAP device, which reads and writes Ethernet
//!   frames; [`net::switch`](crate::net::switch) turns them into packets and back.

use std::future::Future;
use std::io;

#[cfg(all(feature = "tun", target_os = "linux"))]
mod tap;
#[cfg(all(feature = "tun", target_os = "linux"))]
mod tun;

#[cfg(all(feature = "tun", target_os = "linux"))]
pub use tap::Tap;
#[cfg(all(feature = "tun", target_os = "linux"))]
pub use tun::{Tun, TunConfig};

/// A source and sink of packets.
pub trait Device: Send + Sync + 'static {
    /// The device's name, as the system knows it.
    fn name(&self) -> &str;

    /// The largest packet the device carries, in bytes.
    fn mtu(&self) -> usize;

    /// Reads the next packet into `buf`, returning its length.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a packet is either read whole or left for the next call.
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send;

    /// Writes `packet` if the device can take it now; `WouldBlock` if it cannot.
    fn try_send(&self, packet: &[u8]) -> io::Result<()>;
}
