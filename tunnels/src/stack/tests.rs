//! Two stacks joined back to back (what one sends, the other receives), with real local sockets
//! on loopback at both ends.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv6Packet, Ipv6Repr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::*;

const A: &str = "fd5e:59b8:f71d:9a3e::a";
const B: &str = "fd5e:59b8:f71d:9a3e::b";

/// Stacks for nodes a and b, packets carried between them while `cut` is false.
struct Pair {
    a: Arc<Stack>,
    b: Arc<Stack>,
    cut: Arc<AtomicBool>,
}

fn pair(tune: impl Fn(&mut StackConfig)) -> Pair {
    let config = |addr: &str| {
        let mut config = StackConfig::new(addr.parse().unwrap());
        tune(&mut config);
        config
    };
    let a = Arc::new(Stack::start(config(A)));
    let b = Arc::new(Stack::start(config(B)));
    let cut = Arc::new(AtomicBool::new(false));
    for (from, to) in [(&a, &b), (&b, &a)] {
        let (from, to, cut) = (Arc::clone(from), Arc::clone(to), Arc::clone(&cut));
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok(n) = from.recv(&mut buf).await {
                if !cut.load(Ordering::Relaxed) {
                    to.try_send(&buf[..n]).expect("the queue has room");
                }
            }
        });
    }
    Pair { a, b, cut }
}

/// A local TCP echo server.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut rd, mut wr) = stream.split();
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
            });
        }
    });
    addr
}

/// A port on loopback with nothing listening.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn at(node: &str, port: u16) -> SocketAddr {
    SocketAddr::new(node.parse().unwrap(), port)
}

async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "waited for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn open(stack: &Stack) -> u64 {
    stack.stats().tcp_open.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_connection_reaches_an_exposed_port_and_carries_bytes_exactly() {
    let net = pair(|_| {});
    net.a.expose(Protocol::Tcp, 8000, echo_server().await);
    let local = net
        .b
        .forward(Protocol::Tcp, "127.0.0.1:0".parse().unwrap(), at(A, 8000))
        .await
        .unwrap();
    let mut stream = TcpStream::connect(local).await.unwrap();
    // 3 MB of varied bytes, written and read at once: windows fill and reopen.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let (mut rd, mut wr) = stream.split();
    let write = async {
        wr.write_all(&data).await.unwrap();
        wr.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let read = rd.read_to_end(&mut back);
    let ((), read) = tokio::join!(write, read);
    read.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "the echo differs");
    assert_eq!(net.a.stats().tcp_accepted.load(Ordering::Relaxed), 1);
    assert_eq!(net.b.stats().tcp_connected.load(Ordering::Relaxed), 1);
    // Both ends closed: the connections end (b's after TIME-WAIT) and nothing stays.
    wait_until("the connections to end", || {
        open(&net.a) + open(&net.b) == 0
    })
    .await;
    assert_eq!(net.a.stats().resets.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_or_unexposed_port_resets_the_connection() {
    let net = pair(|_| {});
    net.a.expose(Protocol::Tcp, 8001, closed_port().await);
    for port in [8001, 8002] {
        let local = net
            .b
            .forward(Protocol::Tcp, "127.0.0.1:0".parse().unwrap(), at(A, port))
            .await
            .unwrap();
        // The reset may come before the connect returned, or after.
        let read = async {
            let mut stream = TcpStream::connect(local).await?;
            stream.read(&mut [0u8; 1]).await
        };
        let read = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("the connection ends at once");
        assert_eq!(
            read.map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::ConnectionReset),
            "port {port}"
        );
    }
    // The exposed port's refusal is counted; the other port is smoltcp's to refuse.
    assert_eq!(net.a.stats().refused.load(Ordering::Relaxed), 1);
    assert_eq!(net.b.stats().resets.load(Ordering::Relaxed), 2);
    wait_until("nothing to stay open", || open(&net.a) + open(&net.b) == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_connections_in_a_row_leave_nothing_behind() {
    let net = pair(|_| {});
    net.a.expose(Protocol::Tcp, 7, echo_server().await);
    let local = net
        .b
        .forward(Protocol::Tcp, "127.0.0.1:0".parse().unwrap(), at(A, 7))
        .await
        .unwrap();
    for i in 0..100u32 {
        let mut stream = TcpStream::connect(local).await.unwrap();
        let line = format!("hello {i}\n");
        stream.write_all(line.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut back = String::new();
        stream.read_to_string(&mut back).await.unwrap();
        assert_eq!(back, line);
    }
    assert_eq!(net.a.stats().tcp_accepted.load(Ordering::Relaxed), 100);
    wait_until("all connections to end", || {
        open(&net.a) + open(&net.b) == 0
    })
    .await;
    assert_eq!(net.a.stats().resets.load(Ordering::Relaxed), 0);
    assert_eq!(net.b.stats().resets.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_peer_times_the_connection_out() {
    let net = pair(|config| config.tcp_timeout = Duration::from_secs(2));
    net.a.expose(Protocol::Tcp, 7, echo_server().await);
    let local = net
        .b
        .forward(Protocol::Tcp, "127.0.0.1:0".parse().unwrap(), at(A, 7))
        .await
        .unwrap();
    let mut stream = TcpStream::connect(local).await.unwrap();
    stream.write_all(b"ping\n").await.unwrap();
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf).await.unwrap();
    // A vanishes: nothing reaches it, nothing comes back.
    net.cut.store(true, Ordering::Relaxed);
    stream.write_all(b"anyone?\n").await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
        .await
        .expect("the connection times out");
    assert_eq!(
        read.map_err(|e| e.kind()).err(),
        Some(io::ErrorKind::ConnectionReset)
    );
    assert_eq!(open(&net.b), 0, "b's connection is gone");
    assert_eq!(net.b.stats().resets.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_go_through_a_udp_forward_to_an_exposed_udp_port_and_back() {
    let net = pair(|_| {});
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = server.recv_from(&mut buf).await {
            let mut reply = b"echo ".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = server.send_to(&reply, from).await;
        }
    });
    net.a.expose(Protocol::Udp, 9000, server_addr);
    let local = net
        .b
        .forward(Protocol::Udp, "127.0.0.1:0".parse().unwrap(), at(A, 9000))
        .await
        .unwrap();
    // Two clients, each answered on its own flow.
    for name in ["one", "two"] {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(local).await.unwrap();
        for i in 0..3 {
            let message = format!("{name} {i}");
            client.send(message.as_bytes()).await.unwrap();
            let mut buf = [0u8; 2048];
            let n = tokio::time::timeout(Duration::from_secs(10), client.recv(&mut buf))
                .await
                .expect("an answer")
                .unwrap();
            assert_eq!(&buf[..n], format!("echo {message}").as_bytes());
        }
    }
    assert_eq!(net.a.stats().udp_flows.load(Ordering::Relaxed), 2);
    assert_eq!(net.b.stats().udp_flows.load(Ordering::Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_to_an_address_off_the_network_is_refused() {
    let net = pair(|_| {});
    let err = net
        .b
        .forward(
            Protocol::Tcp,
            "127.0.0.1:0".parse().unwrap(),
            "[fd00::1]:80".parse().unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_answers_pings_to_its_address() {
    let stack = Stack::start(StackConfig::new(A.parse().unwrap()));
    let (src, dst) = (B.parse().unwrap(), A.parse().unwrap());
    let echo = Icmpv6Repr::EchoRequest {
        ident: 7,
        seq_no: 1,
        data: b"are you there",
    };
    let ip = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: echo.buffer_len(),
        hop_limit: 64,
    };
    let mut packet = vec![0; ip.buffer_len() + echo.buffer_len()];
    let mut ipv6 = Ipv6Packet::new_unchecked(&mut packet);
    ip.emit(&mut ipv6);
    echo.emit(
        &src,
        &dst,
        &mut Icmpv6Packet::new_unchecked(ipv6.payload_mut()),
        &ChecksumCapabilities::default(),
    );
    stack.try_send(&packet).unwrap();
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(5), stack.recv(&mut buf))
        .await
        .expect("a reply")
        .unwrap();
    let reply = Ipv6Packet::new_checked(&buf[..n]).unwrap();
    assert_eq!((reply.src_addr(), reply.dst_addr()), (dst, src));
    let icmp = Icmpv6Packet::new_checked(reply.payload()).unwrap();
    let repr = Icmpv6Repr::parse(&dst, &src, &icmp, &ChecksumCapabilities::default()).unwrap();
    assert_eq!(
        repr,
        Icmpv6Repr::EchoReply {
            ident: 7,
            seq_no: 1,
            data: b"are you there",
        }
    );
}

/// On one thread the engine runs only when the test yields: the queue's bound is exact.
#[tokio::test]
async fn a_full_queue_refuses_packets_until_the_stack_took_them() {
    let stack = Stack::start(StackConfig {
        queue_bytes: 3000,
        ..StackConfig::new(A.parse().unwrap())
    });
    let packet = vec![0x60u8; 1400];
    stack.try_send(&packet).unwrap();
    stack.try_send(&packet).unwrap();
    let err = stack.try_send(&packet).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    // The engine takes them (and smoltcp drops them: they are not IPv6 packets).
    tokio::time::sleep(Duration::from_millis(10)).await;
    stack.try_send(&packet).unwrap();
    stack.try_send(&packet).unwrap();
}
