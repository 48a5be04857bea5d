//! The stack's one task: smoltcp's interface and sockets, and the bridges between them and the
//! pump tasks of local sockets.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes};
use chacha20poly1305::aead::{OsRng, rand_core::RngCore};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{HardwareAddress, IpCidr, IpEndpoint, IpListenEndpoint};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc::{self, error::TryRecvError, error::TrySendError};
use tokio::task::AbortHandle;

use super::pump::{self, FromLocal};
use super::{Command, OUTBOUND_PACKETS, Protocol, Shared, StackConfig, StackStats, classify};

/// The most bytes moved from a TCP socket to its pump at once.
pub(super) const CHUNK: usize = 64 << 10;
/// Chunks waiting for a pump, each way.
const CHUNKS: usize = 16;
/// Datagrams a UDP socket holds each way, and their bytes.
const UDP_PACKETS: usize = 256;
const UDP_BYTES: usize = 512 << 10;
/// Ephemeral ports, as IANA suggests them.
const EPHEMERAL: std::ops::RangeInclusive<u16> = 49_152..=65_535;

/// What pump and dial tasks tell the engine.
#[derive(Debug)]
enum Event {
    /// The local dial for a SYN to an exposed port ended.
    Dialed {
        key: (SocketAddr, u16),
        syn: Vec<u8>,
        result: std::io::Result<TcpStream>,
    },
    /// A datagram from a local socket, to go into the network.
    Datagram { to: Flow, data: Bytes },
}

/// A UDP flow: where its datagrams from this machine go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Flow {
    /// Replies of the local server of exposed `port` to `remote`.
    Exposed { port: u16, remote: SocketAddr },
    /// Datagrams of `client` to forward number `forward`.
    Forwarded { forward: usize, client: SocketAddr },
}

/// A TCP connection and its pump.
#[derive(Debug)]
struct Conn {
    /// The remote endpoint and the local port.
    key: (SocketAddr, u16),
    /// To the pump, until the peer closed and all it sent was handed over.
    to_local: Option<mpsc::Sender<Bytes>>,
    from_local: mpsc::Receiver<FromLocal>,
    /// The local side closed (its end of stream is in the socket).
    local_done: bool,
    /// What the pump sent that the socket has not yet taken.
    pending: Bytes,
    /// Set when the connection ends other than by a close from both sides.
    reset: Arc<AtomicBool>,
    /// A port of ours to give back at the end (outgoing connections).
    ephemeral: Option<u16>,
}

/// An exposed UDP port: its smoltcp socket and a local socket per remote.
#[derive(Debug)]
struct ExposedUdp {
    handle: SocketHandle,
    target: SocketAddr,
    flows: HashMap<SocketAddr, LocalFlow>,
}

/// A local socket of an exposed UDP port's flow.
#[derive(Debug)]
struct LocalFlow {
    /// For sending: a clone of the reader's socket. (Tokio's `try_send` on a socket just made
    /// refuses until the reactor has seen it writable; the socket itself need not.)
    socket: std::net::UdpSocket,
    reader: AbortHandle,
    last: tokio::time::Instant,
}

/// A forwarded UDP listener: a smoltcp socket per local client.
#[derive(Debug)]
struct ForwardedUdp {
    /// For sending, as in [`LocalFlow`].
    socket: std::net::UdpSocket,
    remote: SocketAddr,
    reader: AbortHandle,
    flows: HashMap<SocketAddr, RemoteFlow>,
}

#[derive(Debug)]
struct RemoteFlow {
    handle: SocketHandle,
    port: u16,
    last: tokio::time::Instant,
}

pub(super) struct Engine {
    iface: Interface,
    sockets: SocketSet<'static>,
    phy: Phy,
    config: StackConfig,
    shared: Arc<Shared>,
    stats: Arc<StackStats>,
    epoch: tokio::time::Instant,
    tcp: HashMap<SocketHandle, Conn>,
    /// The connections by remote endpoint and local port.
    keys: HashSet<(SocketAddr, u16)>,
    exposed_tcp: HashMap<u16, SocketAddr>,
    /// SYNs to exposed ports whose local dial is under way.
    dialling: HashSet<(SocketAddr, u16)>,
    exposed_udp: HashMap<u16, ExposedUdp>,
    forwarded_udp: Vec<ForwardedUdp>,
    ports: HashSet<u16>,
    rng: ChaCha8Rng,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Receiver<Event>,
    events_tx: mpsc::Sender<Event>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("tcp", &self.tcp.len())
            .finish_non_exhaustive()
    }
}

/// Why the engine woke.
enum Wakeup {
    Nudged,
    Timer,
    Command(Command),
    Event(Event),
    Stopped,
}

impl Engine {
    pub(super) fn new(
        config: StackConfig,
        shared: Arc<Shared>,
        stats: Arc<StackStats>,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> Engine {
        let mut phy = Phy {
            rx: VecDeque::new(),
            shared: Arc::clone(&shared),
            mtu: config.mtu,
        };
        let epoch = tokio::time::Instant::now();
        let mut iface_config = Config::new(HardwareAddress::Ip);
        iface_config.random_seed = OsRng.next_u64();
        let mut iface = Interface::new(iface_config, &mut phy, smoltcp::time::Instant::ZERO);
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(config.ipv6.into(), config.ipv6_prefix));
            if let Some((ipv4, len)) = config.ipv4 {
                let _ = addrs.push(IpCidr::new(ipv4.into(), len));
            }
        });
        let (events_tx, events) = mpsc::channel(1024);
        Engine {
            iface,
            sockets: SocketSet::new(Vec::new()),
            phy,
            config,
            shared,
            stats,
            epoch,
            tcp: HashMap::new(),
            keys: HashSet::new(),
            exposed_tcp: HashMap::new(),
            dialling: HashSet::new(),
            exposed_udp: HashMap::new(),
            forwarded_udp: Vec::new(),
            ports: HashSet::new(),
            rng: ChaCha8Rng::seed_from_u64(OsRng.next_u64()),
            commands,
            events,
            events_tx,
        }
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    pub(super) async fn run(mut self) {
        loop {
            self.intake();
            self.turn();
            let now = self.now();
            let mut delay = self
                .iface
                .poll_delay(now, &self.sockets)
                .map_or(Duration::from_secs(3600), |d| {
                    Duration::from_micros(d.total_micros())
                });
            if self.has_udp_flows() {
                delay = delay.min(self.config.udp_idle / 4);
            }
            let shared = Arc::clone(&self.shared);
            let wakeup = tokio::select! {
                () = shared.wake.notified() => Wakeup::Nudged,
                () = tokio::time::sleep(delay) => Wakeup::Timer,
                command = self.commands.recv() => command.map_or(Wakeup::Stopped, Wakeup::Command),
                Some(event) = self.events.recv() => Wakeup::Event(event),
            };
            match wakeup {
                Wakeup::Nudged => {}
                Wakeup::Timer => self.sweep_udp(),
                Wakeup::Command(command) => self.command(command),
                Wakeup::Event(event) => self.event(event),
                Wakeup::Stopped => return,
            }
        }
    }

    /// Polls the interface and moves data between sockets and pumps until nothing moves.
    fn turn(&mut self) {
        for _ in 0..64 {
            let now = self.now();
            self.iface.poll(now, &mut self.phy, &mut self.sockets);
            let moved = self.bridge_tcp() | self.bridge_udp();
            self.reap();
            if !moved && self.phy.rx.is_empty() {
                return;
            }
        }
        // Still busy: come back at once, after the other tasks had a turn.
        self.shared.wake.notify_one();
    }

    /// Packets from the link into smoltcp's receive queue, but SYNs to exposed TCP ports,
    /// which wait for their local dial.
    fn intake(&mut self) {
        let packets = {
            let mut inbound = Shared::lock(&self.shared.inbound);
            inbound.bytes = 0;
            std::mem::take(&mut inbound.packets)
        };
        for packet in packets {
            if let Some(syn) = classify::syn(&packet)
                && let Some(&target) = self.exposed_tcp.get(&syn.port)
                && self.is_mine(syn.to)
            {
                let key = (syn.from, syn.port);
                if self.dialling.contains(&key) {
                    continue; // the SYN again, while the first one's dial is under way
                }
                if !self.keys.contains(&key) {
                    self.dialling.insert(key);
                    let events = self.events_tx.clone();
                    let shared = Arc::clone(&self.shared);
                    tokio::spawn(async move {
                        let result = TcpStream::connect(target).await;
                        let _ = events
                            .send(Event::Dialed {
                                key,
                                syn: packet,
                                result,
                            })
                            .await;
                        shared.wake.notify_one();
                    });
                    continue;
                }
            }
            self.phy.rx.push_back(packet);
        }
    }

    fn is_mine(&self, addr: std::net::IpAddr) -> bool {
        match addr {
            std::net::IpAddr::V6(addr) => addr == self.config.ipv6,
            std::net::IpAddr::V4(addr) => self.config.ipv4.is_some_and(|(own, _)| own == addr),
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Expose {
                protocol: Protocol::Tcp,
                port,
                target,
            } => {
                self.exposed_tcp.insert(port, target);
            }
            Command::Expose {
                protocol: Protocol::Udp,
                port,
                target,
            } => {
                if let Some(exposed) = self.exposed_udp.get_mut(&port) {
                    exposed.target = target;
                    return;
                }
                let mut socket = udp_socket();
                if socket.bind(IpListenEndpoint { addr: None, port }).is_err() {
                    tracing::warn!(port, "cannot expose UDP port 0");
                    return;
                }
                let handle = self.sockets.add(socket);
                self.exposed_udp.insert(
                    port,
                    ExposedUdp {
                        handle,
                        target,
                        flows: HashMap::new(),
                    },
                );
            }
            Command::Connect { stream, remote } => self.connect(stream, remote),
            Command::ForwardUdp { socket, remote } => {
                let forward = self.forwarded_udp.len();
                let sender = match socket.as_ref().as_fd().try_clone_to_owned() {
                    Ok(fd) => std::net::UdpSocket::from(fd),
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot forward UDP");
                        return;
                    }
                };
                let events = self.events_tx.clone();
                let shared = Arc::clone(&self.shared);
                let reader = tokio::spawn({
                    let socket = Arc::clone(&socket);
                    async move {
                        let mut buf = vec![0u8; 65_536];
                        while let Ok((n, client)) = socket.recv_from(&mut buf).await {
                            let to = Flow::Forwarded { forward, client };
                            let data = Bytes::copy_from_slice(&buf[..n]);
                            if events.send(Event::Datagram { to, data }).await.is_err() {
                                return;
                            }
                            shared.wake.notify_one();
                        }
                    }
                })
                .abort_handle();
                self.forwarded_udp.push(ForwardedUdp {
                    socket: sender,
                    remote,
                    reader,
                    flows: HashMap::new(),
                });
            }
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Dialed { key, syn, result } => {
                self.dialling.remove(&key);
                match result {
                    Ok(stream) => {
                        let mut socket = self.tcp_socket();
                        if socket.listen(key.1).is_err() {
                            return;
                        }
                        let handle = self.sockets.add(socket);
                        self.add_conn(handle, key, stream, None);
                        StackStats::add(&self.stats.tcp_accepted, 1);
                    }
                    Err(err) => {
                        tracing::debug!(from = %key.0, port = key.1, error = %err, "an exposed port refused a connection");
                        StackStats::add(&self.stats.refused, 1);
                    }
                }
                // The SYN alone: a listening socket takes it (and no other SYN can), or with
                // none smoltcp answers it with a reset.
                self.phy.rx.push_back(syn);
                let now = self.now();
                self.iface.poll(now, &mut self.phy, &mut self.sockets);
            }
            Event::Datagram { to, data } => self.datagram_out(to, &data),
        }
    }

    fn tcp_socket(&self) -> tcp::Socket<'static> {
        let buffer = || tcp::SocketBuffer::new(vec![0; self.config.tcp_buffer]);
        let mut socket = tcp::Socket::new(buffer(), buffer());
        socket.set_timeout(Some(self.config.tcp_timeout.into()));
        socket.set_keep_alive(self.config.tcp_keepalive.map(Into::into));
        // The node bundles what goes out within its send delay anyway; Nagle's wait for an
        // acknowledgement would add a round trip (a poll) to every small write.
        socket.set_nagle_enabled(false);
        socket
    }

    fn add_conn(
        &mut self,
        handle: SocketHandle,
        key: (SocketAddr, u16),
        stream: TcpStream,
        ephemeral: Option<u16>,
    ) {
        let (to_local, down) = mpsc::channel(CHUNKS);
        let (up, from_local) = mpsc::channel(CHUNKS);
        let reset = Arc::new(AtomicBool::new(false));
        tokio::spawn(pump::tcp(
            stream,
            down,
            up,
            Arc::clone(&reset),
            Arc::clone(&self.shared),
        ));
        self.keys.insert(key);
        self.tcp.insert(
            handle,
            Conn {
                key,
                to_local: Some(to_local),
                from_local,
                local_done: false,
                pending: Bytes::new(),
                reset,
                ephemeral,
            },
        );
        self.stats
            .tcp_open
            .store(self.tcp.len() as u64, Ordering::Relaxed);
    }

    /// A forwarded local connection: a connection from an ephemeral port of ours to `remote`.
    fn connect(&mut self, stream: TcpStream, remote: SocketAddr) {
        let Some(port) = self.ephemeral_port() else {
            tracing::warn!(%remote, "no ephemeral port free: refusing a forwarded connection");
            return;
        };
        let mut socket = self.tcp_socket();
        if let Err(err) = socket.connect(self.iface.context(), IpEndpoint::from(remote), port) {
            tracing::warn!(%remote, error = %err, "connecting");
            self.ports.remove(&port);
            return;
        }
        let handle = self.sockets.add(socket);
        self.add_conn(handle, (remote, port), stream, Some(port));
        StackStats::add(&self.stats.tcp_connected, 1);
    }

    fn ephemeral_port(&mut self) -> Option<u16> {
        let span = usize::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
        if self.ports.len() >= span {
            return None;
        }
        loop {
            let port = self.rng.random_range(EPHEMERAL);
            if self.ports.insert(port) {
                return Some(port);
            }
        }
    }

    /// Moves data between each TCP socket and its pump; whether any moved.
    fn bridge_tcp(&mut self) -> bool {
        let mut moved = false;
        for (&handle, conn) in &mut self.tcp {
            let socket = self.sockets.get_mut::<tcp::Socket<'_>>(handle);
            // The network to the local socket, as far as the pump has room.
            if let Some(to_local) = &conn.to_local {
                while socket.can_recv() {
                    match to_local.try_reserve() {
                        Ok(permit) => {
                            let chunk = socket.recv(|buf| {
                                let n = buf.len().min(CHUNK);
                                (n, Bytes::copy_from_slice(&buf[..n]))
                            });
                            match chunk {
                                Ok(chunk) => {
                                    permit.send(chunk);
                                    moved = true;
                                }
                                Err(_) => break,
                            }
                        }
                        Err(TrySendError::Full(())) => break,
                        Err(TrySendError::Closed(())) => {
                            // The local side went away: the peer is reset.
                            socket.abort();
                            break;
                        }
                    }
                }
                let peer_closed = matches!(
                    socket.state(),
                    tcp::State::CloseWait
                        | tcp::State::LastAck
                        | tcp::State::Closing
                        | tcp::State::TimeWait
                );
                if peer_closed && !socket.can_recv() {
                    // All the peer sent was handed over: the pump closes its writing half.
                    conn.to_local = None;
                }
            }
            // The local socket to the network, as far as the socket has room.
            while !conn.local_done {
                if conn.pending.is_empty() {
                    match conn.from_local.try_recv() {
                        Ok(FromLocal::Data(data)) => conn.pending = data,
                        Ok(FromLocal::Eof) => {
                            socket.close();
                            conn.local_done = true;
                            moved = true;
                            break;
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            // The pump ended without an end of stream: a reset.
                            socket.abort();
                            conn.local_done = true;
                            break;
                        }
                    }
                }
                if !socket.can_send() {
                    break;
                }
                match socket.send_slice(&conn.pending) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        conn.pending.advance(n);
                        moved = true;
                    }
                }
            }
        }
        moved
    }

    /// Sockets of connections that ended are removed, and their pumps told how.
    fn reap(&mut self) {
        let closed: Vec<SocketHandle> = self
            .tcp
            .keys()
            .copied()
            .filter(|&handle| {
                let state = self.sockets.get::<tcp::Socket<'_>>(handle).state();
                // A socket still listening did not take its SYN: there is no connection.
                matches!(state, tcp::State::Closed | tcp::State::Listen)
            })
            .collect();
        for handle in closed {
            let conn = self.tcp.remove(&handle).expect("listed");
            self.sockets.remove(handle);
            self.keys.remove(&conn.key);
            if let Some(port) = conn.ephemeral {
                self.ports.remove(&port);
            }
            if conn.to_local.is_some() || !conn.local_done {
                conn.reset.store(true, Ordering::Relaxed);
                StackStats::add(&self.stats.resets, 1);
            }
            // Dropping the channels ends the pump.
        }
        self.stats
            .tcp_open
            .store(self.tcp.len() as u64, Ordering::Relaxed);
    }

    fn has_udp_flows(&self) -> bool {
        self.exposed_udp.values().any(|e| !e.flows.is_empty())
            || self.forwarded_udp.iter().any(|f| !f.flows.is_empty())
    }

    /// Datagrams from the network to local sockets; whether any moved.
    fn bridge_udp(&mut self) -> bool {
        let mut moved = false;
        let now = tokio::time::Instant::now();
        for (&port, exposed) in &mut self.exposed_udp {
            let socket = self.sockets.get_mut::<udp::Socket<'_>>(exposed.handle);
            while let Ok((data, meta)) = socket.recv() {
                moved = true;
                let remote = SocketAddr::from(meta.endpoint);
                let flow = match exposed.flows.entry(remote) {
                    std::collections::hash_map::Entry::Occupied(flow) => flow.into_mut(),
                    std::collections::hash_map::Entry::Vacant(vacant) => {
                        match local_flow(
                            exposed.target,
                            Flow::Exposed { port, remote },
                            &self.events_tx,
                            &self.shared,
                        ) {
                            Ok(flow) => {
                                StackStats::add(&self.stats.udp_flows, 1);
                                vacant.insert(flow)
                            }
                            Err(err) => {
                                tracing::warn!(target = %exposed.target, error = %err, "a local UDP socket");
                                StackStats::add(&self.stats.udp_dropped, 1);
                                continue;
                            }
                        }
                    }
                };
                flow.last = now;
                if flow.socket.send(data).is_err() {
                    StackStats::add(&self.stats.udp_dropped, 1);
                }
            }
        }
        for forward in &mut self.forwarded_udp {
            for (client, flow) in &mut forward.flows {
                let socket = self.sockets.get_mut::<udp::Socket<'_>>(flow.handle);
                while let Ok((data, _)) = socket.recv() {
                    moved = true;
                    flow.last = now;
                    if forward.socket.send_to(data, *client).is_err() {
                        StackStats::add(&self.stats.udp_dropped, 1);
                    }
                }
            }
        }
        self.count_udp();
        moved
    }

    /// A datagram from a local socket into the network.
    fn datagram_out(&mut self, to: Flow, data: &[u8]) {
        let now = tokio::time::Instant::now();
        let sent = match to {
            Flow::Exposed { port, remote } => {
                let Some(exposed) = self.exposed_udp.get_mut(&port) else {
                    return;
                };
                if let Some(flow) = exposed.flows.get_mut(&remote) {
                    flow.last = now;
                }
                let socket = self.sockets.get_mut::<udp::Socket<'_>>(exposed.handle);
                socket.send_slice(data, IpEndpoint::from(remote)).is_ok()
            }
            Flow::Forwarded { forward, client } => {
                let Some(remote) = self.forwarded_udp.get(forward).map(|f| f.remote) else {
                    return;
                };
                let handle = match self.forwarded_udp[forward].flows.get_mut(&client) {
                    Some(flow) => {
                        flow.last = now;
                        flow.handle
                    }
                    None => {
                        let Some(port) = self.ephemeral_port() else {
                            StackStats::add(&self.stats.udp_dropped, 1);
                            return;
                        };
                        let mut socket = udp_socket();
                        if socket.bind(port).is_err() {
                            self.ports.remove(&port);
                            return;
                        }
                        let handle = self.sockets.add(socket);
                        self.forwarded_udp[forward].flows.insert(
                            client,
                            RemoteFlow {
                                handle,
                                port,
                                last: now,
                            },
                        );
                        StackStats::add(&self.stats.udp_flows, 1);
                        handle
                    }
                };
                let socket = self.sockets.get_mut::<udp::Socket<'_>>(handle);
                socket.send_slice(data, IpEndpoint::from(remote)).is_ok()
            }
        };
        if !sent {
            StackStats::add(&self.stats.udp_dropped, 1);
        }
        self.count_udp();
        self.turn();
    }

    /// Flows idle for longer than `udp_idle` are forgotten.
    fn sweep_udp(&mut self) {
        let now = tokio::time::Instant::now();
        let idle = self.config.udp_idle;
        for exposed in self.exposed_udp.values_mut() {
            exposed.flows.retain(|_, flow| {
                let keep = now.duration_since(flow.last) < idle;
                if !keep {
                    flow.reader.abort();
                }
                keep
            });
        }
        for forward in &mut self.forwarded_udp {
            let sockets = &mut self.sockets;
            let ports = &mut self.ports;
            forward.flows.retain(|_, flow| {
                let keep = now.duration_since(flow.last) < idle;
                if !keep {
                    sockets.remove(flow.handle);
                    ports.remove(&flow.port);
                }
                keep
            });
        }
        self.count_udp();
    }

    fn count_udp(&self) {
        let open = self
            .exposed_udp
            .values()
            .map(|e| e.flows.len())
            .sum::<usize>()
            + self
                .forwarded_udp
                .iter()
                .map(|f| f.flows.len())
                .sum::<usize>();
        self.stats.udp_open.store(open as u64, Ordering::Relaxed);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for exposed in self.exposed_udp.values() {
            for flow in exposed.flows.values() {
                flow.reader.abort();
            }
        }
        for forward in &self.forwarded_udp {
            forward.reader.abort();
        }
    }
}

fn udp_socket() -> udp::Socket<'static> {
    let buffer = || {
        udp::PacketBuffer::new(
            vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
            vec![0; UDP_BYTES],
        )
    };
    udp::Socket::new(buffer(), buffer())
}

/// A local socket for a flow to `target`, and its reader task, which hands the replies to the
/// engine.
fn local_flow(
    target: SocketAddr,
    flow: Flow,
    events: &mpsc::Sender<Event>,
    shared: &Arc<Shared>,
) -> std::io::Result<LocalFlow> {
    let bind: SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::LOCALHOST, 0).into()
    } else {
        (std::net::Ipv6Addr::LOCALHOST, 0).into()
    };
    let socket = std::net::UdpSocket::bind(bind)?;
    socket.connect(target)?;
    socket.set_nonblocking(true)?;
    let sender = socket.try_clone()?;
    let socket = UdpSocket::from_std(socket)?;
    let reader = tokio::spawn({
        let (events, shared) = (events.clone(), Arc::clone(shared));
        async move {
            let mut buf = vec![0u8; 65_536];
            // Errors such as a refused port (ICMP) are the local server's; keep listening.
            loop {
                if let Ok(n) = socket.recv(&mut buf).await {
                    let data = Bytes::copy_from_slice(&buf[..n]);
                    if events
                        .send(Event::Datagram { to: flow, data })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    shared.wake.notify_one();
                }
            }
        }
    })
    .abort_handle();
    Ok(LocalFlow {
        socket: sender,
        reader,
        last: tokio::time::Instant::now(),
    })
}

/// smoltcp's side of the queues: packets from the link in `rx`, packets out to the node's
/// queue while it has room.
#[derive(Debug)]
struct Phy {
    rx: VecDeque<Vec<u8>>,
    shared: Arc<Shared>,
    mtu: usize,
}

impl phy::Device for Phy {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(
        &mut self,
        _timestamp: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        // A reply to a received packet (an acknowledgement, a reset, an echo) may go beyond
        // the queue's bound: it is one packet per packet received.
        Some((RxToken(packet), TxToken(&self.shared)))
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        let room = Shared::lock(&self.shared.outbound).packets.len() < OUTBOUND_PACKETS;
        room.then_some(TxToken(&self.shared))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

#[derive(Debug)]
struct RxToken(Vec<u8>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

#[derive(Debug)]
struct TxToken<'a>(&'a Arc<Shared>);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0; len];
        let result = f(&mut packet);
        {
            let mut out = Shared::lock(&self.0.outbound);
            out.bytes += packet.len();
            out.packets.push_back(packet);
        }
        self.0.readable.notify_one();
        result
    }
}
