//! A Linux TAP device: a [`Tun`] that reads and writes Ethernet frames, with a MAC address of
//! its own.
//!
//! Everything else is the TUN device's: the address and prefix route, the MTU (of the IP
//! packets inside; frames are 14 bytes longer), the queue length, the congestion control, the
//! device going away with the process. The node answers the host's ARP and neighbour
//! solicitations for peers and carries the IP packets inside frames
//! ([`net::switch`](crate::net::switch)).
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use tunnels::device::{Device, Tap, TunConfig};
//! use tunnels::net::ether::mac_of;
//!
//! let config = TunConfig {
//!     name: "tunnel0",
//!     addr: "fd5e:59b8:f71d:9a3e::a".parse().unwrap(),
//!     prefix_len: 64,
//!     mtu: 1500,
//!     tx_queue_len: 10_000,
//!     ipv4: None,
//! };
//! let tap = Tap::create(&config, mac_of(0xa))?;
//! let mut frame = vec![0; 65_536];
//! let n = tap.recv(&mut frame).await?;
//! println!("a frame of {n} bytes to {:02x?}", &frame[..6]);
//! # Ok(()) }
//! ```

use std::io;

use super::{Device, Tun, TunConfig};

/// A TAP device, up, addressed, routed.
#[derive(Debug)]
pub struct Tap {
    tun: Tun,
    mac: [u8; 6],
}

impl Tap {
    /// Creates the device with MAC address `mac` and brings it up as [`Tun::create`] does.
    ///
    /// # Errors
    ///
    /// As [`Tun::create`]'s.
    pub fn create(config: &TunConfig<'_>, mac: [u8; 6]) -> io::Result<Tap> {
        Ok(Tap {
            tun: Tun::build(config, Some(mac))?,
            mac,
        })
    }

    /// The device's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The interface index.
    pub fn index(&self) -> u32 {
        self.tun.index()
    }

    /// As [`Tun::set_congestion`].
    ///
    /// # Errors
    ///
    /// As [`Tun::set_congestion`]'s.
    pub async fn set_congestion(&self, congestion: &str) -> io::Result<()> {
        self.tun.set_congestion(congestion).await
    }
}

impl Device for Tap {
    fn name(&self) -> &str {
        self.tun.name()
    }

    fn mtu(&self) -> usize {
        self.tun.mtu()
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.tun.recv(buf).await
    }

    fn try_send(&self, frame: &[u8]) -> io::Result<()> {
        self.tun.try_send(frame)
    }
}
