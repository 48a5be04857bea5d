//! A TCP/IP stack in the process, for nodes with no device and no privileges (feature
//! `userspace`): the node's addresses live in [`smoltcp`], and its TCP connections and UDP
//! flows are bridged to sockets on this machine, as onetun bridges smoltcp to Tokio.
//!
//! ```text
//! link ─▶ node ─▶ Stack::try_send ─▶ smoltcp ─▶ TCP/UDP sockets ◀─▶ pump tasks ◀─▶ 127.0.0.1:PORT
//! link ◀─ node ◀─ Stack::recv     ◀─ smoltcp ◀─┘                 (expose, forward)
//! ```
//!
//! A [`Stack`] is a [`Device`]: the node reads the packets the stack sends and writes the ones
//! the link delivered, as it does with a TUN device. The stack answers pings to its addresses
//! itself; [`expose`](Stack::expose) makes connections (or datagrams) to one of its ports reach
//! a local server, and [`forward`](Stack::forward) carries a local listener's connections (or
//! datagrams) to a peer's port.
//!
//! Sized for a link whose round trip is a poll interval (hundreds of milliseconds): each TCP
//! connection gets [`StackConfig::tcp_buffer`] bytes each way (window scaling advertises it
//! whole; the memory is taken as it fills), and the stack never drops what TCP sent for lack
//! of room: smoltcp gets a transmit token only while the queue to the node has room, so a whole
//! window (thousands of segments) goes out as fast as the node takes it and not faster (the
//! burst smoltcp's issue 949 warns of). Its timers run on `poll_delay`: an idle stack sleeps.
//!
//! A connection to an exposed port is dialled locally when its SYN arrives, before smoltcp
//! sees the SYN: if the local port refuses, smoltcp answers the SYN with a reset, as a host
//! with nothing listening would, and the peer sees "connection refused".
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use tunnels::stack::{Protocol, Stack, StackConfig};
//!
//! let stack = Stack::start(StackConfig::new("fd5e:59b8:f71d:9a3e::a".parse().unwrap()));
//! // Peers reach a local HTTP server at [fd5e:59b8:f71d:9a3e::a]:3000.
//! stack.expose(Protocol::Tcp, 3000, "127.0.0.1:3000".parse().unwrap());
//! // Local clients of 127.0.0.1:8080 reach port 80 of node b.
//! stack
//!     .forward(
//!         Protocol::Tcp,
//!         "127.0.0.1:8080".parse().unwrap(),
//!         "[fd5e:59b8:f71d:9a3e::b]:80".parse().unwrap(),
//!     )
//!     .await?;
//! // Then run a node with `stack` as its device.
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::device::Device;

pub(crate) mod classify;
mod engine;
mod pump;

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP: connections.
    Tcp,
    /// UDP: datagrams, grouped into flows by their source.
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// Settings of a [`Stack`].
#[derive(Debug, Clone, PartialEq)]
pub struct StackConfig {
    /// The node's IPv6 address.
    pub ipv6: Ipv6Addr,
    /// The length of the network's IPv6 prefix (peers are on it).
    pub ipv6_prefix: u8,
    /// The node's IPv4 address and the network's prefix length, if it has one.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// The largest packet, in bytes.
    pub mtu: usize,
    /// Each TCP connection's buffer each way, in bytes: its window. Throughput is at most this
    /// over the round trip: 4 MiB over a 300 ms round trip is 14 MB/s.
    pub tcp_buffer: usize,
    /// A connection whose peer does not answer for this long (data unacknowledged, a connect
    /// unanswered, or keep-alives unanswered) is reset.
    pub tcp_timeout: Duration,
    /// Keep-alive probes on idle connections this often, so that an idle connection to a
    /// vanished peer times out too. Each probe is a packet, so a call; none by default.
    pub tcp_keepalive: Option<Duration>,
    /// A UDP flow (a remote address and port) with no datagram either way for this long is
    /// forgotten, and its local socket closed.
    pub udp_idle: Duration,
    /// Packets from the link waiting for the stack, in bytes: room for a burst of a whole
    /// window. Beyond it, packets are refused (the node counts them as dropped).
    pub queue_bytes: usize,
}

impl StackConfig {
    /// The defaults for a node at `ipv6` on a /64.
    pub fn new(ipv6: Ipv6Addr) -> StackConfig {
        StackConfig {
            ipv6,
            ipv6_prefix: 64,
            ipv4: None,
            mtu: 1500,
            tcp_buffer: 4 << 20,
            tcp_timeout: Duration::from_secs(300),
            tcp_keepalive: None,
            udp_idle: Duration::from_secs(120),
            queue_bytes: 32 << 20,
        }
    }

    /// Whether `addr` is on the network (a peer's address, or this node's).
    pub fn on_network(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V6(addr) => {
                let bits = u32::from(self.ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                u128::from(addr) & mask == u128::from(self.ipv6) & mask
            }
            IpAddr::V4(addr) => self.ipv4.is_some_and(|(own, len)| {
                let bits = u32::from(len.min(32));
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                u32::from(addr) & mask == u32::from(own) & mask
            }),
        }
    }
}

/// Counts of a stack's connections.
#[derive(Debug, Default)]
pub struct StackStats {
    /// TCP connections open now.
    pub tcp_open: AtomicU64,
    /// UDP flows open now.
    pub udp_open: AtomicU64,
    /// TCP connections accepted on exposed ports.
    pub tcp_accepted: AtomicU64,
    /// TCP connections opened for forwarded local connections.
    pub tcp_connected: AtomicU64,
    /// UDP flows started (either way).
    pub udp_flows: AtomicU64,
    /// Connections to an exposed port that the local port refused (answered with a reset).
    pub refused: AtomicU64,
    /// TCP connections that ended without a close from both sides: reset by either side, or
    /// timed out.
    pub resets: AtomicU64,
    /// Datagrams dropped: a socket's buffer full, or no local socket to be had.
    pub udp_dropped: AtomicU64,
}

impl StackStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Packets between the node and the engine.
#[derive(Debug, Default)]
struct Queue {
    packets: VecDeque<Vec<u8>>,
    bytes: usize,
}

/// What the [`Stack`] handle, the engine and the pump tasks share.
#[derive(Debug)]
struct Shared {
    /// From the link, for the stack.
    inbound: Mutex<Queue>,
    /// From the stack, for the link.
    outbound: Mutex<Queue>,
    /// Wakes the engine: packets came, room was made, a pump moved data.
    wake: Notify,
    /// Wakes the reader of [`Stack::recv`].
    readable: Notify,
    queue_bytes: usize,
    /// Cancelled when the stack is dropped: the pumps end.
    stopped: tokio_util::sync::CancellationToken,
}

/// The most packets waiting for the node: smoltcp gets no transmit token beyond it.
const OUTBOUND_PACKETS: usize = 512;

impl Shared {
    fn lock(queue: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
        queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What the [`Stack`] asks of its engine.
#[derive(Debug)]
enum Command {
    Expose {
        protocol: Protocol,
        port: u16,
        target: SocketAddr,
    },
    Connect {
        stream: tokio::net::TcpStream,
        remote: SocketAddr,
    },
    ForwardUdp {
        socket: Arc<UdpSocket>,
        remote: SocketAddr,
    },
}

/// A TCP/IP stack holding a node's addresses: a [`Device`] for the node. Dropping it stops the
/// stack and closes its connections.
#[derive(Debug)]
pub struct Stack {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    config: StackConfig,
    stats: Arc<StackStats>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    engine: JoinHandle<()>,
}

impl Stack {
    /// Starts a stack.
    ///
    /// # Panics
    ///
    /// Panics outside a Tokio runtime.
    pub fn start(config: StackConfig) -> Stack {
        let shared = Arc::new(Shared {
            inbound: Mutex::new(Queue::default()),
            outbound: Mutex::new(Queue::default()),
            wake: Notify::new(),
            readable: Notify::new(),
            queue_bytes: config.queue_bytes,
            stopped: tokio_util::sync::CancellationToken::new(),
        });
        let stats = Arc::new(StackStats::default());
        let (commands, receiver) = mpsc::unbounded_channel();
        let engine = engine::Engine::new(
            config.clone(),
            Arc::clone(&shared),
            Arc::clone(&stats),
            receiver,
        );
        let engine = tokio::spawn(engine.run());
        Stack {
            shared,
            commands,
            config,
            stats,
            tasks: Mutex::new(Vec::new()),
            engine,
        }
    }

    /// The stack's settings.
    pub fn config(&self) -> &StackConfig {
        &self.config
    }

    /// The stack's counts.
    pub fn stats(&self) -> &Arc<StackStats> {
        &self.stats
    }

    /// Connections (TCP) or datagrams (UDP) to this node's `port` go to `target` on this
    /// machine. A TCP connection is dialled when it arrives; one that `target` refuses is
    /// reset. Exposing a port again changes its target.
    pub fn expose(&self, protocol: Protocol, port: u16, target: SocketAddr) {
        let _ = self.commands.send(Command::Expose {
            protocol,
            port,
            target,
        });
    }

    /// Listens on `listen` on this machine and carries each connection (TCP) or each client's
    /// datagrams (UDP) to `remote`, a peer's address on the network, from a port of this node's.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `remote` is not on the network; what binding `listen` gave.
    pub async fn forward(
        &self,
        protocol: Protocol,
        listen: SocketAddr,
        remote: SocketAddr,
    ) -> io::Result<SocketAddr> {
        if !self.config.on_network(remote.ip()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{remote} is not an address of the network"),
            ));
        }
        let commands = self.commands.clone();
        let (bound, task) = match protocol {
            Protocol::Tcp => {
                let listener = TcpListener::bind(listen).await?;
                let bound = listener.local_addr()?;
                let task = tokio::spawn(async move {
                    loop {
                        match listener.accept().await {
                            Ok((stream, _)) => {
                                if commands.send(Command::Connect { stream, remote }).is_err() {
                                    return;
                                }
                            }
                            Err(err) => {
                                // Out of descriptors, most likely: wait rather than spin.
                                tracing::warn!(%listen, error = %err, "accepting a connection");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                });
                (bound, task)
            }
            Protocol::Udp => {
                let socket = Arc::new(UdpSocket::bind(listen).await?);
                let bound = socket.local_addr()?;
                let _ = commands.send(Command::ForwardUdp { socket, remote });
                (bound, tokio::spawn(async {}))
            }
        };
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(task);
        Ok(bound)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shared.stopped.cancel();
        self.engine.abort();
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }
}

impl Device for Stack {
    fn name(&self) -> &str {
        "userspace"
    }

    fn mtu(&self) -> usize {
        self.config.mtu
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // Registered before looking, so that a packet queued in between wakes it.
            let readable = self.shared.readable.notified();
            let packet = {
                let mut out = Shared::lock(&self.shared.outbound);
                let packet = out.packets.pop_front();
                if let Some(packet) = &packet {
                    out.bytes -= packet.len();
                    if out.packets.len() + 1 == OUTBOUND_PACKETS {
                        // The engine may be waiting for room to send.
                        self.shared.wake.notify_one();
                    }
                }
                packet
            };
            if let Some(packet) = packet {
                let n = packet.len().min(buf.len());
                buf[..n].copy_from_slice(&packet[..n]);
                return Ok(n);
            }
            if self.engine.is_finished() {
                return Err(io::Error::other("the userspace stack stopped"));
            }
            readable.await;
        }
    }

    fn try_send(&self, packet: &[u8]) -> io::Result<()> {
        {
            let mut inbound = Shared::lock(&self.shared.inbound);
            if inbound.bytes + packet.len() > self.shared.queue_bytes {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            inbound.bytes += packet.len();
            inbound.packets.push_back(packet.to_vec());
        }
        self.shared.wake.notify_one();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
