//! A Linux TUN device, and its configuration through netlink: address, link up, MTU and a route
//! to the network.
//!
//! The device is not persistent: it disappears with its address and route when the [`Tun`] is
//! dropped or the process exits, so nothing is left behind.
//!
//! Creating a device needs `CAP_NET_ADMIN` (root, or `setcap cap_net_admin+ep` on the binary).
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use tunnels::tun::{Settings, Tun, configure};
//!
//! let tun = Tun::create("tunnel0")?;
//! let settings = Settings {
//!     addr: "fd5e:59b8:f71d:9a3e::a".parse().unwrap(),
//!     prefix_len: 64,
//!     mtu: 1500,
//!     tx_queue_len: 10_000,
//!     congestion: Some("cubic"),
//! };
//! configure(tun.index(), &settings)?;
//! let mut packet = vec![0; 65_536];
//! let n = tun.recv(&mut packet).await?;
//! println!("{n} bytes from the kernel");
//! # Ok(()) }
//! ```
//!
//! This is the crate's only `unsafe` code: five system calls (`ioctl`, `socket`, `sendto`,
//! `recv`, `if_nametoindex`) and the registration of the device with Tokio, each with its
//! reason beside it. Messages are built and parsed in
//! safe code.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The longest interface name Linux accepts (`IFNAMSIZ` less the terminating zero).
pub const MAX_NAME_LEN: usize = 15;

/// An open TUN device carrying bare IP packets (no protocol header).
#[derive(Debug)]
pub struct Tun {
    fd: AsyncFd<File>,
    name: String,
    index: u32,
}

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags in the union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl Tun {
    /// Creates the TUN device `name` (`%d` in it picks the next free number) and opens it.
    ///
    /// # Errors
    ///
    /// `PermissionDenied` without `CAP_NET_ADMIN`; `NotFound` without `/dev/net/tun` (the `tun`
    /// module); `InvalidInput` for a name longer than [`MAX_NAME_LEN`] or with a `/`, a space or
    /// a zero byte; `ResourceBusy` if the device is in use. Must be called in a Tokio runtime.
    pub fn create(name: &str) -> io::Result<Tun> {
        if name.is_empty()
            || name.len() > MAX_NAME_LEN
            || name
                .bytes()
                .any(|b| b == 0 || b == b'/' || b.is_ascii_whitespace())
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{name:?} is not a valid interface name (1 to {MAX_NAME_LEN} bytes, no '/', space or NUL)"
                ),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: `file` is an open descriptor of /dev/net/tun; TUNSETIFF reads and writes one
        // `struct ifreq`, and `req` is one (name, short flags, padding to its 40 bytes) that
        // lives across the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReq) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let len = req
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(req.name.len());
        let name = String::from_utf8_lossy(&req.name[..len]).into_owned();
        let index = if_index(&name)?;
        // SAFETY: `File` owns its descriptor, keeps it open until dropped, and `as_raw_fd`
        // always returns that same descriptor; the `AsyncFd` owns the `File` and never gives it
        // away.
        let fd = unsafe {
            AsyncFd::register_with_interest(file, Interest::READABLE | Interest::WRITABLE)
        }
        .map_err(io::Error::from)?;
        Ok(Tun { fd, name, index })
    }

    /// The device's name, such as `tunnel0`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device's interface index, for [`configure`].
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Reads one packet into `buf`, waiting for it; returns its length. A packet longer than
    /// `buf` is cut short, so give it room for the MTU.
    ///
    /// # Errors
    ///
    /// The device's read errors.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|file| file.get_ref().read(buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes one packet to the device if the kernel takes it now.
    ///
    /// # Errors
    ///
    /// `WouldBlock` when the kernel's queue is full; otherwise as [`send`](Tun::send).
    pub fn try_send(&self, packet: &[u8]) -> io::Result<usize> {
        self.fd.get_ref().write(packet)
    }

    /// Writes one packet to the device, waiting while the kernel's queue is full.
    ///
    /// # Errors
    ///
    /// The device's write errors; `InvalidInput` for what the kernel does not take as a packet.
    pub async fn send(&self, packet: &[u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|file| file.get_ref().write(packet)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

fn if_index(name: &str) -> io::Result<u32> {
    let c_name = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c_name` is a valid NUL-terminated string that outlives the call, which only
    // reads it.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(index)
}

// Netlink route messages (linux/netlink.h, linux/rtnetlink.h, linux/if_addr.h).
const NLMSG_HDR_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const IFLA_MTU: u16 = 4;
const IFLA_TXQLEN: u16 = 13;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
/// Usable at once: no duplicate address detection on a point-to-point device.
const IFA_F_NODAD: u32 = 0x02;
/// The route comes from the explicit RTM_NEWROUTE below, not from the address.
const IFA_F_NOPREFIXROUTE: u32 = 0x200;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_METRICS: u16 = 8;
const RTAX_CC_ALGO: u16 = 16;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

/// Builds one netlink request: header, fixed part, attributes, each padded to 4 bytes.
struct Request {
    bytes: Vec<u8>,
}

impl Request {
    fn new(kind: u16, flags: u16, seq: u32, fixed: &[u8]) -> Request {
        let mut bytes = Vec::with_capacity(128);
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // length, set in `finish`
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        bytes.extend_from_slice(&seq.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        bytes.extend_from_slice(fixed);
        let mut request = Request { bytes };
        request.pad();
        request
    }

    /// An attribute holding one nested attribute.
    fn nested(self, kind: u16, inner: u16, value: &[u8]) -> Request {
        let mut nested = Vec::with_capacity(4 + value.len() + 3);
        let len = u16::try_from(4 + value.len()).expect("attributes here are short");
        nested.extend_from_slice(&len.to_ne_bytes());
        nested.extend_from_slice(&inner.to_ne_bytes());
        nested.extend_from_slice(value);
        while !nested.len().is_multiple_of(4) {
            nested.push(0);
        }
        self.attr(kind, &nested)
    }

    fn attr(mut self, kind: u16, value: &[u8]) -> Request {
        let len = u16::try_from(4 + value.len()).expect("attributes here are short");
        self.bytes.extend_from_slice(&len.to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(value);
        self.pad();
        self
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.bytes.len() as u32;
        self.bytes[..4].copy_from_slice(&len.to_ne_bytes());
        self.bytes
    }
}

/// How [`configure`] sets a device up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings<'a> {
    /// The device's address.
    pub addr: Ipv6Addr,
    /// The network's prefix length: `addr/prefix_len` is routed through the device.
    pub prefix_len: u8,
    /// The MTU (at least 1280 for IPv6).
    pub mtu: u32,
    /// Packets the kernel queues for the device before it drops them. TCP sends bursts of a
    /// whole window at once, and a tunnel carries windows of thousands of packets: Linux's
    /// default of 500 drops part of every large burst.
    pub tx_queue_len: u32,
    /// The TCP congestion control for connections on the route, as `ip route ... congctl`
    /// sets it; `None` leaves the system's.
    pub congestion: Option<&'a str>,
}

/// Brings interface `index` up as `settings` says, gives it its address, and routes the network
/// through it. Replaces an address or route already there, so it can be run again.
///
/// # Errors
///
/// The kernel's answer: `PermissionDenied` without `CAP_NET_ADMIN`, `InvalidInput` for an MTU
/// the device refuses (below 1280 with IPv6) or a prefix longer than 128, `NotFound` for a
/// congestion control the kernel does not have, and so on.
pub fn configure(index: u32, settings: &Settings<'_>) -> io::Result<()> {
    let Settings {
        addr,
        prefix_len,
        mtu,
        tx_queue_len,
        congestion,
    } = *settings;
    if prefix_len > 128 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("prefix length {prefix_len} is longer than 128"),
        ));
    }
    let socket = Netlink::open()?;
    let index_i32 = index as i32;

    // struct ifinfomsg: family, pad, type, index, flags, change.
    let mut link = Vec::with_capacity(16);
    link.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
    link.extend_from_slice(&0u16.to_ne_bytes());
    link.extend_from_slice(&index_i32.to_ne_bytes());
    link.extend_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
    link.extend_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
    socket.call(
        Request::new(RTM_NEWLINK, 0, 1, &link)
            .attr(IFLA_MTU, &mtu.to_ne_bytes())
            .attr(IFLA_TXQLEN, &tx_queue_len.to_ne_bytes()),
    )?;

    // struct ifaddrmsg: family, prefix length, flags, scope, index.
    let mut address = vec![libc::AF_INET6 as u8, prefix_len, 0, RT_SCOPE_UNIVERSE];
    address.extend_from_slice(&index.to_ne_bytes());
    socket.call(
        Request::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, 2, &address)
            .attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets())
            .attr(
                IFA_FLAGS,
                &(IFA_F_NODAD | IFA_F_NOPREFIXROUTE).to_ne_bytes(),
            ),
    )?;

    // struct rtmsg: family, dst len, src len, tos, table, protocol, scope, type, flags.
    let network = network_of(addr, prefix_len);
    let mut route = vec![
        libc::AF_INET6 as u8,
        prefix_len,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_STATIC,
        RT_SCOPE_UNIVERSE,
        RTN_UNICAST,
    ];
    route.extend_from_slice(&0u32.to_ne_bytes());
    let mut request = Request::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, 3, &route)
        .attr(RTA_DST, &network.octets())
        .attr(RTA_OIF, &index.to_ne_bytes());
    if let Some(name) = congestion {
        let mut value = name.as_bytes().to_vec();
        value.push(0);
        request = request.nested(RTA_METRICS, RTAX_CC_ALGO, &value);
    }
    socket.call(request)
}

/// `addr` with the bits past `prefix_len` cleared.
fn network_of(addr: Ipv6Addr, prefix_len: u8) -> Ipv6Addr {
    let bits = u128::from(addr);
    let mask = u128::MAX
        .checked_shl(128 - u32::from(prefix_len))
        .unwrap_or(0);
    Ipv6Addr::from(bits & mask)
}

/// A NETLINK_ROUTE socket.
struct Netlink {
    fd: OwnedFd,
}

impl Netlink {
    fn open() -> io::Result<Netlink> {
        // SAFETY: plain system call with constant arguments; it returns a new descriptor or -1.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket() and is owned by nothing else.
        Ok(Netlink {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Sends one request and waits for its acknowledgement.
    fn call(&self, request: Request) -> io::Result<()> {
        let message = request.finish();
        // SAFETY: an all-zero sockaddr_nl is valid (it addresses the kernel).
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `message` and `kernel` are valid for the lengths given and outlive the call,
        // which only reads them.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let seq = u32::from_ne_bytes(message[8..12].try_into().expect("4 bytes"));
        let mut reply = vec![0u8; 8192];
        loop {
            // SAFETY: `reply` is valid for writes of its length and outlives the call.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    reply.as_mut_ptr().cast(),
                    reply.len(),
                    0,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if let Some(answer) = ack(&reply[..n as usize], seq) {
                return answer;
            }
        }
    }
}

/// Finds the acknowledgement of request `seq` in a reply: `Some(Ok)` for success, `Some(Err)`
/// with the kernel's error, `None` if the reply holds neither.
fn ack(mut reply: &[u8], seq: u32) -> Option<io::Result<()>> {
    while reply.len() >= NLMSG_HDR_LEN {
        let len = u32::from_ne_bytes(reply[..4].try_into().ok()?) as usize;
        if len < NLMSG_HDR_LEN || len > reply.len() {
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed netlink reply",
            )));
        }
        let kind = u16::from_ne_bytes(reply[4..6].try_into().ok()?);
        let msg_seq = u32::from_ne_bytes(reply[8..12].try_into().ok()?);
        if kind == NLMSG_ERROR && msg_seq == seq && len >= NLMSG_HDR_LEN + 4 {
            let code = i32::from_ne_bytes(reply[16..20].try_into().ok()?);
            return Some(if code == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(-code))
            });
        }
        reply = &reply[len.next_multiple_of(4).min(reply.len())..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_laid_out_as_the_kernel_reads_them() {
        let bytes = Request::new(RTM_NEWLINK, 0, 7, &[1, 2, 3])
            .attr(IFLA_MTU, &1500u32.to_ne_bytes())
            .finish();
        // 16 header + 3 fixed padded to 4 + 8 attribute.
        assert_eq!(bytes.len(), 28);
        assert_eq!(u32::from_ne_bytes(bytes[..4].try_into().unwrap()), 28);
        assert_eq!(u16::from_ne_bytes(bytes[4..6].try_into().unwrap()), 16);
        assert_eq!(
            u16::from_ne_bytes(bytes[6..8].try_into().unwrap()),
            NLM_F_REQUEST | NLM_F_ACK
        );
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 7);
        assert_eq!(&bytes[16..20], &[1, 2, 3, 0]);
        assert_eq!(u16::from_ne_bytes(bytes[20..22].try_into().unwrap()), 8);
        assert_eq!(u16::from_ne_bytes(bytes[22..24].try_into().unwrap()), 4);
        assert_eq!(u32::from_ne_bytes(bytes[24..28].try_into().unwrap()), 1500);
    }

    fn error_message(seq: u32, code: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&code.to_ne_bytes());
        m.extend_from_slice(&[0; 16]);
        m
    }

    #[test]
    fn nested_attributes_are_padded_inside_and_out() {
        let bytes = Request::new(RTM_NEWROUTE, 0, 1, &[])
            .nested(RTA_METRICS, RTAX_CC_ALGO, b"cubic\0")
            .finish();
        // Outer header 4 + inner header 4 + "cubic\0" 6 padded to 8.
        let outer = &bytes[16..];
        assert_eq!(u16::from_ne_bytes(outer[..2].try_into().unwrap()), 16);
        assert_eq!(
            u16::from_ne_bytes(outer[2..4].try_into().unwrap()),
            RTA_METRICS
        );
        assert_eq!(u16::from_ne_bytes(outer[4..6].try_into().unwrap()), 10);
        assert_eq!(
            u16::from_ne_bytes(outer[6..8].try_into().unwrap()),
            RTAX_CC_ALGO
        );
        assert_eq!(&outer[8..16], b"cubic\0\0\0");
    }

    #[test]
    fn acknowledgements_and_errors_are_read_from_replies() {
        assert!(matches!(ack(&error_message(3, 0), 3), Some(Ok(()))));
        let err = ack(&error_message(3, -libc::EPERM), 3)
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        // Another request's answer, then ours.
        let mut two = error_message(2, -libc::EEXIST);
        two.extend(error_message(3, 0));
        assert!(matches!(ack(&two, 3), Some(Ok(()))));
        assert!(ack(&error_message(2, 0), 3).is_none());
        // A length past the end is an error, not a panic.
        let mut bad = error_message(3, 0);
        bad[..4].copy_from_slice(&100u32.to_ne_bytes());
        assert!(matches!(ack(&bad, 3), Some(Err(_))));
        assert!(ack(&[0; 7], 3).is_none());
    }

    #[test]
    fn the_network_keeps_the_prefix_bits() {
        let addr: Ipv6Addr = "fd5e:59b8:f71d:9a3e:1:2:3:4".parse().unwrap();
        assert_eq!(
            network_of(addr, 64),
            "fd5e:59b8:f71d:9a3e::".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(network_of(addr, 0), Ipv6Addr::UNSPECIFIED);
        assert_eq!(network_of(addr, 128), addr);
    }

    #[test]
    fn bad_names_are_refused_before_any_system_call() {
        for name in ["", "much-too-long-name", "a/b", "a b"] {
            let err = Tun::create(name).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
    }
}
