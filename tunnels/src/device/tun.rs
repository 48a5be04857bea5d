//! A Linux TUN device: created and addressed by `tun-rs`, its route (with the TCP congestion
//! control of connections through it) set over `rtnetlink`, which tun-rs does not do.
//!
//! The device is not persistent: it disappears with its address and route when the [`Tun`] is
//! dropped or the process exits, so nothing is left behind. Creating one needs `CAP_NET_ADMIN`
//! (root, or `setcap cap_net_admin+ep` on the binary).
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use tunnels::device::{Device, Tun, TunConfig};
//!
//! let tun = Tun::create(&TunConfig {
//!     name: "tunnel0",
//!     addr: "fd5e:59b8:f71d:9a3e::a".parse().unwrap(),
//!     prefix_len: 64,
//!     mtu: 1500,
//!     tx_queue_len: 10_000,
//!     ipv4: None,
//! })?;
//! tun.set_congestion("cubic").await?;
//! let mut packet = vec![0; 65_536];
//! let n = tun.recv(&mut packet).await?;
//! println!("{n} bytes from the kernel on {}", tun.name());
//! # Ok(()) }
//! ```

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::route::{
    RouteAttribute, RouteMessage, RouteMetric, RouteProtocol, RouteScope,
};

use super::Device;

/// How [`Tun::create`] sets a device up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunConfig<'a> {
    /// The device's name; `%d` picks the next free number.
    pub name: &'a str,
    /// The device's address.
    pub addr: Ipv6Addr,
    /// The network's prefix length: `addr/prefix_len` is routed through the device.
    pub prefix_len: u8,
    /// The MTU (1280 to 65535 for IPv6).
    pub mtu: u16,
    /// Packets the kernel queues for the device before it drops them. TCP sends bursts of a
    /// whole window at once, and a tunnel carries windows of thousands of packets: Linux's
    /// default of 500 drops part of every large burst.
    pub tx_queue_len: u32,
    /// An IPv4 address and prefix length besides (`--ipv4`), if any.
    pub ipv4: Option<(Ipv4Addr, u8)>,
}

/// The metric the kernel gives the prefix route of an address: the route replaced below.
const PREFIX_ROUTE_METRIC: u32 = 256;

/// A TUN device, up, addressed, routed.
pub struct Tun {
    device: tun_rs::AsyncDevice,
    name: String,
    index: u32,
    mtu: usize,
    addr: Ipv6Addr,
    prefix_len: u8,
    ipv4: Option<(Ipv4Addr, u8)>,
}

impl Tun {
    /// Creates the device and brings it up with its MTU, queue length and address; the kernel
    /// routes the network (`addr/prefix_len`) through it. Must run inside a Tokio runtime.
    ///
    /// # Errors
    ///
    /// The system's answer, with its kind: `PermissionDenied` without `CAP_NET_ADMIN`,
    /// `NotFound` without `/dev/net/tun`, `InvalidInput` for a name or prefix it refuses.
    pub fn create(config: &TunConfig<'_>) -> io::Result<Tun> {
        Tun::build(config, None)
    }

    /// The same, as a TAP device (Ethernet frames) with MAC address `mac` when one is given.
    pub(super) fn build(config: &TunConfig<'_>, mac: Option<[u8; 6]>) -> io::Result<Tun> {
        if config.prefix_len > 128 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("prefix length {} is longer than 128", config.prefix_len),
            ));
        }
        let mut builder = tun_rs::DeviceBuilder::new()
            .name(config.name)
            .mtu(config.mtu)
            .tx_queue_len(config.tx_queue_len)
            .ipv6(config.addr, config.prefix_len);
        if let Some(mac) = mac {
            builder = builder.layer(tun_rs::Layer::L2).mac_addr(mac);
        }
        if let Some((addr, prefix_len)) = config.ipv4 {
            if prefix_len > 32 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("IPv4 prefix length {prefix_len} is longer than 32"),
                ));
            }
            builder = builder.ipv4(addr, prefix_len, None);
        }
        let device = builder.enable(true).build_async()?;
        let name = device.name()?;
        let index = device.if_index()?;
        Ok(Tun {
            device,
            name,
            index,
            mtu: usize::from(config.mtu),
            addr: config.addr,
            prefix_len: config.prefix_len,
            ipv4: config.ipv4,
        })
    }

    /// The interface index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Sets the TCP congestion control of connections through the device, on the network's
    /// route: replaces the prefix route the kernel made for the address with one that carries
    /// it (`ip -6 route replace NET/LEN dev NAME metric 256 proto static congctl NAME`), and
    /// likewise for the IPv4 address, if any (`ip route replace NET/LEN dev NAME scope link
    /// proto static congctl NAME`).
    ///
    /// # Errors
    ///
    /// `NotFound` for a congestion control the kernel does not have (see
    /// `/proc/sys/net/ipv4/tcp_available_congestion_control`), `PermissionDenied` without
    /// `CAP_NET_ADMIN`.
    pub async fn set_congestion(&self, congestion: &str) -> io::Result<()> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        let connection = tokio::spawn(connection);
        let bits = u32::from(self.prefix_len);
        let network = if bits == 0 {
            Ipv6Addr::UNSPECIFIED
        } else {
            Ipv6Addr::from(u128::from(self.addr) & (u128::MAX << (128 - bits)))
        };
        let with_cc = |mut route: RouteMessage| {
            route
                .attributes
                .push(RouteAttribute::Metrics(vec![RouteMetric::CcAlgo(
                    congestion.to_owned(),
                )]));
            route
        };
        let route = with_cc(
            RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(network, self.prefix_len)
                .output_interface(self.index)
                .priority(PREFIX_ROUTE_METRIC)
                .protocol(RouteProtocol::Static)
                .build(),
        );
        // With an IPv4 address, its prefix route too (the kernel's has metric 0, scope link).
        let route4 = self.ipv4.map(|(addr, prefix_len)| {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            with_cc(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(Ipv4Addr::from(u32::from(addr) & mask), prefix_len)
                    .output_interface(self.index)
                    .scope(RouteScope::Link)
                    .protocol(RouteProtocol::Static)
                    .build(),
            )
        });
        let mut result = handle.route().add(route).replace().execute().await;
        if let (Ok(()), Some(route4)) = (&result, route4) {
            result = handle.route().add(route4).replace().execute().await;
        }
        connection.abort();
        result.map_err(netlink_error).map_err(|err| {
            // Everything else in the request is known good: EINVAL is the name.
            if err.kind() == io::ErrorKind::InvalidInput {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no TCP congestion control {congestion:?} in the kernel ({err})"),
                )
            } else {
                err
            }
        })
    }
}

impl std::fmt::Debug for Tun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tun")
            .field("name", &self.name)
            .field("index", &self.index)
            .field("mtu", &self.mtu)
            .finish_non_exhaustive()
    }
}

/// The kernel's error number as an `io::Error` of its kind (ENOENT is `NotFound`, EPERM
/// `PermissionDenied`), anything else as it came.
fn netlink_error(err: rtnetlink::Error) -> io::Error {
    match &err {
        rtnetlink::Error::NetlinkError(message) => match message.code {
            Some(code) => io::Error::from_raw_os_error(-code.get()),
            None => io::Error::other(err),
        },
        _ => io::Error::other(err),
    }
}

impl Device for Tun {
    fn name(&self) -> &str {
        &self.name
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.device.recv(buf).await
    }

    fn try_send(&self, packet: &[u8]) -> io::Result<()> {
        self.device.try_send(packet).map(drop)
    }
}
