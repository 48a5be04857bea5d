//! The end-to-end harness: two network namespaces, each running `tunnel up` with its own TUN
//! device and node id, joined by veth pairs to a server on the host: S3-compatible (s3s-fs, in
//! the test process) or CloudWatch Logs (`moto_server`). Shared by the end-to-end tests and the
//! measurement run.
//!
//! Needs root (namespaces, veth, TUN), `ip` (iproute2), `ping` (iputils-ping) and `python3`,
//! which `scripts/test` installs. Everything a `Net` creates (namespaces with their veth and TUN
//! devices, processes, the server's directory) is removed when it is dropped, also when a test
//! fails.
#![allow(dead_code)] // each test target uses part of it

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tunnels::link::s3::S3Store;
use tunnels::link::s3::local::{self as local_s3, LocalS3};

pub(crate) mod moto;

use moto::Moto;

pub(crate) const BUCKET: &str = "e2e";
/// The log group of the CloudWatch Logs runs.
pub(crate) const GROUP: &str = "e2e";
pub(crate) const PREFIX: &str = "net/";
/// The tunnel's own network (`tunnel up`'s default).
pub(crate) const NETWORK: &str = "fd5e:59b8:f71d:9a3e";
pub(crate) const NODE_A: u64 = 0xa;
pub(crate) const NODE_B: u64 = 0xb;

pub(crate) fn node_addr(id: u64) -> String {
    format!("{NETWORK}::{id:x}")
}

/// The `tunnel` binary, run by `wrapper` (such as `setpriv ...`) if one is given.
pub(crate) fn tunnel_command(wrapper: &[&str]) -> Command {
    let binary = env!("CARGO_BIN_EXE_tunnel");
    match wrapper {
        [] => Command::new(binary),
        [program, rest @ ..] => {
            let mut command = Command::new(program);
            command.args(rest).arg(binary);
            command
        }
    }
}

/// Runs a command, failing the test with its output if it fails.
pub(crate) fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e} (is it installed?)"));
    assert!(
        output.status.success(),
        "{program} {}: {}\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A `tunnel up` in a namespace, its standard error collected.
pub(crate) struct Tunnel {
    pub(crate) child: Child,
    /// The namespace it runs in, and where it serves metrics.
    pub(crate) side: usize,
    pub(crate) metrics: SocketAddr,
    pub(crate) log: Arc<Mutex<Vec<String>>>,
}

/// Which service the tunnels go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// S3, served by s3s-fs in this process.
    S3,
    /// CloudWatch Logs, served by `moto_server`.
    Cwl,
}

/// Two namespaces, their veth pairs to the host, the server, and the two tunnels. Dropping it
/// removes them all.
pub(crate) struct Net {
    pub(crate) backend: Backend,
    pub(crate) moto: Option<Moto>,
    /// This net's /48 for the veth pairs: `{site}:a::/64` and `{site}:b::/64`.
    site: String,
    namespaces: Vec<String>,
    host_links: Vec<String>,
    pub(crate) tunnels: Vec<Tunnel>,
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) server: Option<LocalS3>,
    pub(crate) server_addr: SocketAddr,
    dir: PathBuf,
}

impl Net {
    /// Sets up namespaces `a` and `b` and an S3-compatible server; `k` tells this test's apart
    /// from the others running at once.
    pub(crate) fn new(k: u16) -> Net {
        Net::with(k, Backend::S3)
    }

    /// The same, with CloudWatch Logs (`moto_server`) for the server.
    pub(crate) fn new_cwl(k: u16) -> Net {
        Net::with(k, Backend::Cwl)
    }

    fn with(k: u16, backend: Backend) -> Net {
        let euid = String::from_utf8(run("id", &["-u"]).stdout).unwrap();
        assert_eq!(
            euid.trim(),
            "0",
            "the end-to-end tests need root for namespaces and TUN devices"
        );
        let pid = std::process::id() % 100_000;
        let tag = format!("{pid}{k}");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("tunnel-e2e-{tag}"));
        // Host side fd7e:<pid>:<k>:<side>::1, namespace side ::2.
        let site = format!("fd7e:{:x}:{k:x}", pid % 0xffff);
        let mut net = Net {
            backend,
            moto: None,
            site: site.clone(),
            namespaces: Vec::new(),
            host_links: Vec::new(),
            tunnels: Vec::new(),
            runtime,
            server: None,
            server_addr: SocketAddr::from(([0; 16], 0)),
            dir,
        };
        for side in ["a", "b"] {
            let ns = format!("tunnel-e2e-{tag}-{side}");
            let (host, peer) = (format!("te{tag}{side}"), format!("tn{tag}{side}"));
            run("ip", &["netns", "add", &ns]);
            net.namespaces.push(ns.clone());
            run(
                "ip",
                &[
                    "link", "add", &host, "type", "veth", "peer", "name", &peer, "netns", &ns,
                ],
            );
            net.host_links.push(host.clone());
            let (host_addr, ns_addr) = (format!("{site}:{side}::1"), format!("{site}:{side}::2"));
            run(
                "ip",
                &[
                    "addr",
                    "add",
                    &format!("{host_addr}/64"),
                    "dev",
                    &host,
                    "nodad",
                ],
            );
            run("ip", &["link", "set", &host, "up"]);
            run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
            run("ip", &["-n", &ns, "link", "set", &peer, "up"]);
            run(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{ns_addr}/64"),
                    "dev",
                    &peer,
                    "nodad",
                ],
            );
            // The server listens on the host side of a's pair; b reaches it through its own.
            run(
                "ip",
                &[
                    "-n",
                    &ns,
                    "route",
                    "add",
                    &format!("{site}::/48"),
                    "via",
                    &host_addr,
                ],
            );
        }
        let server_ip: Ipv6Addr = format!("{site}:a::1").parse().unwrap();
        match backend {
            Backend::S3 => {
                net.start_server(SocketAddr::from((server_ip, 0)));
                net.server_addr = net.server.as_ref().unwrap().addr();
                net.server.as_ref().unwrap().create_bucket(BUCKET).unwrap();
            }
            Backend::Cwl => {
                let moto = Moto::start(server_ip.into());
                net.server_addr = moto.addr();
                net.moto = Some(moto);
            }
        }
        net
    }

    pub(crate) fn start_server(&mut self, addr: SocketAddr) {
        // Binding the port just released may take a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.runtime.block_on(LocalS3::start(&self.dir, addr)) {
                Ok(server) => {
                    self.server = Some(server);
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("binding {addr}: {e}; again");
                    thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("starting the server on {addr}: {e}"),
            }
        }
    }

    pub(crate) fn ns(&self, side: usize) -> &str {
        &self.namespaces[side]
    }

    /// The namespace side's address of pair `side`, where its tunnel serves metrics.
    pub(crate) fn metrics_addr(&self, side: usize) -> SocketAddr {
        let ip: Ipv6Addr = format!("{}:{}::2", self.site, ["a", "b"][side])
            .parse()
            .unwrap();
        SocketAddr::from((ip, 9100))
    }

    /// Starts `tunnel up` in namespace `side` as node `id`, and waits until it is up. Its device
    /// is `tun0`, or `tap0` with `--mode tap` among `extra`.
    pub(crate) fn up(&mut self, side: usize, id: u64, extra: &[&str]) {
        self.up_under(side, id, extra, &[]);
    }

    /// The same, the binary started by `wrapper` (such as `setpriv ...`) inside the namespace.
    pub(crate) fn up_under(&mut self, side: usize, id: u64, extra: &[&str], wrapper: &[&str]) {
        let device = if extra.windows(2).any(|w| w == ["--mode", "tap"]) {
            "tap0"
        } else {
            "tun0"
        };
        let endpoint = format!("http://{}", self.server_addr);
        let (link, keys) = match self.backend {
            Backend::S3 => (
                format!("s3://{BUCKET}/{PREFIX}"),
                (local_s3::ACCESS_KEY, local_s3::SECRET_KEY),
            ),
            Backend::Cwl => (
                format!("cwl://{GROUP}/{PREFIX}"),
                (moto::ACCESS_KEY, moto::SECRET_KEY),
            ),
        };
        let node_id = format!("{id:x}");
        // A second tunnel in a namespace serves its metrics on the next port.
        let mut metrics_addr = self.metrics_addr(side);
        let before = self.tunnels.iter().filter(|t| t.side == side).count();
        metrics_addr.set_port(metrics_addr.port() + before as u16);
        let metrics = metrics_addr.to_string();
        let userspace = extra.contains(&"--userspace");
        let mut args = vec!["netns", "exec", self.ns(side)];
        args.extend_from_slice(wrapper);
        args.extend_from_slice(&[
            env!("CARGO_BIN_EXE_tunnel"),
            "up",
            "--link",
            &link,
            "--node-id",
            &node_id,
            "--endpoint-url",
            &endpoint,
            "--region",
            "us-east-1",
            "--metrics",
            &metrics,
        ]);
        if !userspace {
            args.extend_from_slice(&["--device", device]);
        }
        if self.backend == Backend::S3 {
            args.push("--path-style");
        }
        args.extend_from_slice(extra);
        let mut child = Command::new("ip")
            .args(&args)
            .env("AWS_ACCESS_KEY_ID", keys.0)
            .env("AWS_SECRET_ACCESS_KEY", keys.1)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "info,tunnels=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting tunnel up");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn({
            let log = Arc::clone(&log);
            move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains(" up ") || line.ends_with(" up") {
                        let _ = tx.send(());
                    }
                    log.lock().unwrap().push(line);
                }
            }
        });
        self.tunnels.push(Tunnel {
            child,
            side,
            metrics: metrics_addr,
            log,
        });
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            panic!("tunnel {id:x} did not come up:\n{}", self.logs());
        }
    }

    pub(crate) fn logs(&self) -> String {
        let mut out = String::new();
        for (i, tunnel) in self.tunnels.iter().enumerate() {
            out += &format!("--- tunnel {i} ---\n");
            for line in tunnel.log.lock().unwrap().iter() {
                out += line;
                out.push('\n');
            }
        }
        out
    }

    /// Runs a command in namespace `side`.
    pub(crate) fn exec(&self, side: usize, args: &[&str]) -> Output {
        let mut all = vec!["netns", "exec", self.ns(side)];
        all.extend_from_slice(args);
        Command::new("ip").args(&all).output().unwrap()
    }

    /// The sum of the metric lines starting with `prefix` on tunnel `side`.
    pub(crate) fn metric(&self, side: usize, prefix: &str) -> f64 {
        self.metric_at(self.metrics_addr(side), prefix)
    }

    /// The same, of the tunnel serving metrics at `addr` (see [`Tunnel::metrics`]).
    pub(crate) fn metric_at(&self, addr: SocketAddr, prefix: &str) -> f64 {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .expect("connecting to the metrics endpoint");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: tunnel\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).unwrap();
        let values: Vec<f64> = body
            .lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit(' ').next())
            .map(|value| value.parse().unwrap())
            .collect();
        // A misspelt name must not read as zero.
        assert!(!values.is_empty(), "no metric {prefix}… in:\n{body}");
        values.iter().sum()
    }

    pub(crate) fn store(&self) -> S3Store {
        let config = self.server.as_ref().unwrap().store_config(BUCKET);
        self.runtime.block_on(S3Store::connect(&config))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for tunnel in &mut self.tunnels {
            let _ = tunnel.child.kill();
            let _ = tunnel.child.wait();
        }
        if thread::panicking() {
            eprintln!("{}", self.logs());
        }
        // Deleting a namespace deletes its end of each veth pair, which deletes the other end,
        // and its TUN device; the host ends are deleted too in case a namespace was not made.
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        for link in &self.host_links {
            let _ = Command::new("ip")
                .args(["link", "del", link])
                .stderr(Stdio::null())
                .status();
        }
        if let Some(server) = self.server.take() {
            server.stop();
        }
        self.moto = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `ping` from namespace `from` to `addr` (IPv4 or IPv6, by its form), `count` echoes half a
/// second apart within 60 s, failing the test with what ping and the tunnels said unless all
/// were answered.
pub(crate) fn assert_pings(net: &Net, from: usize, addr: &str, count: u32) {
    let family = if addr.contains(':') { "-6" } else { "-4" };
    let count = count.to_string();
    let args = [
        "ping", family, "-n", "-c", &count, "-i", "0.5", "-w", "60", addr,
    ];
    let out = net.exec(from, &args);
    assert!(out.status.success(), "{}\n{}", received(&out), net.logs());
}

pub(crate) fn ping(net: &Net, from: usize, to: u64, count: u32) -> Output {
    net.exec(
        from,
        &[
            "ping",
            "-6",
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            "0.5",
            "-w",
            "90",
            &node_addr(to),
        ],
    )
}

pub(crate) const RECEIVER: &str = r#"
import hashlib, socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
server = socket.socket(family, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], 5001))
server.listen(1)
print("listening", flush=True)
conn, _ = server.accept()
digest, total = hashlib.sha256(), 0
while True:
    data = conn.recv(1 << 16)
    if not data:
        break
    digest.update(data)
    total += len(data)
print(total, digest.hexdigest(), flush=True)
conn.close()
"#;

pub(crate) const SENDER: &str = r#"
import socket, sys, time
data = open(sys.argv[2], "rb").read()
conn = socket.create_connection((sys.argv[1], 5001), timeout=300)
started = time.monotonic()
conn.sendall(data)
conn.shutdown(socket.SHUT_WR)
conn.recv(1)
print(len(data), time.monotonic() - started, flush=True)
"#;

/// A TCP transfer of `bytes` random bytes from `from` to node `to` in namespace `to_side`,
/// under way.
pub(crate) struct Transfer {
    receiver: Option<Child>,
    sender: Option<Child>,
    expected: String,
    file: PathBuf,
}

impl Transfer {
    pub(crate) fn start(net: &Net, from: usize, to_side: usize, to: u64, bytes: usize) -> Transfer {
        Transfer::start_at(net, from, to_side, &node_addr(to), bytes)
    }

    /// The same, to address `addr` (IPv6 or IPv4) in namespace `to_side`.
    pub(crate) fn start_at(
        net: &Net,
        from: usize,
        to_side: usize,
        addr: &str,
        bytes: usize,
    ) -> Transfer {
        let file = net.dir.with_extension(format!("{bytes}.bin"));
        let mut data = vec![0u8; bytes];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ bytes as u64;
        for chunk in data.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        std::fs::write(&file, &data).unwrap();
        // The digest from another implementation than the receiver's.
        let sum = run("sha256sum", &[file.to_str().unwrap()]);
        let expected = String::from_utf8_lossy(&sum.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        let addr = addr.to_owned();
        let mut receiver = Command::new("ip")
            .args([
                "netns",
                "exec",
                net.ns(to_side),
                "python3",
                "-c",
                RECEIVER,
                &addr,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 10];
        receiver
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut first)
            .expect("the receiver starts");
        assert_eq!(&first, b"listening\n");
        let sender = Command::new("ip")
            .args(["netns", "exec", net.ns(from), "python3", "-c", SENDER])
            .args([&addr, file.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Transfer {
            receiver: Some(receiver),
            sender: Some(sender),
            expected,
            file,
        }
    }

    /// Waits for the end; returns (bytes, SHA-256) as received, the expected SHA-256, and the
    /// sender's seconds.
    pub(crate) fn finish(mut self, within: Duration) -> (usize, String, String, f64) {
        let deadline = Instant::now() + within;
        let mut sender = self.sender.take().unwrap();
        while sender.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = sender.kill();
                panic!("the transfer did not finish within {within:?}");
            }
            thread::sleep(Duration::from_millis(200));
        }
        let sender = sender.wait_with_output().unwrap();
        assert!(
            sender.status.success(),
            "sender: {}",
            String::from_utf8_lossy(&sender.stderr)
        );
        let seconds: f64 = String::from_utf8_lossy(&sender.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let receiver = self.receiver.take().unwrap().wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&receiver.stdout).into_owned();
        let mut words = out.split_whitespace();
        let bytes = words.next().unwrap().parse().unwrap();
        let digest = words.next().unwrap().to_owned();
        (bytes, digest, self.expected.clone(), seconds)
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        for child in [&mut self.sender, &mut self.receiver].into_iter().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.file);
    }
}

/// `name{node="…",label}`, as the exporter writes it.
pub(crate) fn labels(name: &str, node: u64, label: &str) -> String {
    format!("{name}{{node=\"{node:016x}\",{label}}}")
}

/// Both nodes up with `--ipv4 10.77.0.0/16`; then B has its IPv4 address, and A reaches it
/// with `ping -4` and a 2 MB TCP transfer that arrives intact.
pub(crate) fn ipv4_ping_and_transfer(net: &mut Net) {
    net.up(0, NODE_A, &["--ipv4", "10.77.0.0/16"]);
    net.up(1, NODE_B, &["--ipv4", "10.77.0.0/16"]);
    let addr = net.exec(1, &["ip", "-4", "addr", "show", "dev", "tun0"]);
    let addr = String::from_utf8_lossy(&addr.stdout);
    assert!(addr.contains("10.77.0.11/16"), "{addr}");
    assert_pings(net, 0, "10.77.0.11", 2);
    let transfer = Transfer::start_at(net, 0, 1, "10.77.0.11", 2_000_000);
    let (bytes, digest, expected, _) = transfer.finish(Duration::from_secs(120));
    assert_eq!((bytes, digest), (2_000_000, expected));
}

/// What `ping` printed, its errors included.
pub(crate) fn received(ping: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr)
    )
}

/// The kind label of the calls that send (PutObject, PutLogEvents) on `net`'s service.
pub(crate) fn send_kind(net: &Net) -> &'static str {
    match net.backend {
        Backend::S3 => "kind=\"put\"",
        Backend::Cwl => "kind=\"put_log_events\"",
    }
}

/// Both nodes up with `--mode tap --ipv4 10.77.0.0/16`: each namespace resolves its peer's
/// IPv4 and IPv6 addresses to the peer's MAC address with no call made (the nodes answer
/// ARP and neighbour solicitations themselves), then IPv4 and IPv6 pings and a TCP transfer
/// cross, intact.
pub(crate) fn tap_mode(net: &mut Net) {
    let tap = ["--mode", "tap", "--ipv4", "10.77.0.0/16"];
    net.up(0, NODE_A, &tap);
    net.up(1, NODE_B, &tap);
    let link = net.exec(1, &["ip", "link", "show", "dev", "tap0"]);
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(link.contains("link/ether 02:00:00:00:00:0b"), "{link}");

    let sends = |net: &Net| {
        let kind = send_kind(net);
        net.metric(0, &labels("tunnel_store_calls_total", NODE_A, kind))
            + net.metric(1, &labels("tunnel_store_calls_total", NODE_B, kind))
    };
    let before = sends(net);
    // The kernel resolves a managed neighbour by itself, without a packet to send: what it
    // learns comes from ARP and neighbour discovery alone.
    let peers = [(0, NODE_B, "10.77.0.11"), (1, NODE_A, "10.77.0.10")];
    for (side, peer, ipv4) in peers {
        for addr in [ipv4.to_owned(), node_addr(peer)] {
            let add = ["ip", "neigh", "add", &addr, "dev", "tap0", "managed"];
            let out = net.exec(side, &add);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    for (side, peer, ipv4) in peers {
        let mac = format!("lladdr 02:00:00:00:00:{peer:02x}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let table = net.exec(side, &["ip", "neigh", "show", "dev", "tap0"]);
            let table = String::from_utf8_lossy(&table.stdout).into_owned();
            let resolved = |addr: &str| {
                table
                    .lines()
                    .any(|l| l.starts_with(&format!("{addr} ")) && l.contains(&mac))
            };
            if resolved(ipv4) && resolved(&node_addr(peer)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "namespace {side} did not resolve its peer:\n{table}\n{}",
                net.logs()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
    // Polls go on; no send was made.
    thread::sleep(Duration::from_secs(2));
    assert_eq!(sends(net), before, "a call was made to resolve a neighbour");
    for (side, node) in [(0, NODE_A), (1, NODE_B)] {
        for kind in ["kind=\"arp\"", "kind=\"ndp\""] {
            let answered = labels("tunnel_frames_answered_total", node, kind);
            assert!(net.metric(side, &answered) >= 1.0, "{answered}");
        }
        // The kernel's own multicast (its duplicate address detection, at least) is dropped.
        let dropped = labels("tunnel_frames_dropped_total", node, "kind=\"ndp\"");
        assert!(net.metric(side, &dropped) >= 1.0, "{dropped}");
    }

    let ping6 = ping(net, 0, NODE_B, 2);
    assert!(
        ping6.status.success(),
        "{}\n{}",
        received(&ping6),
        net.logs()
    );
    assert_pings(net, 0, "10.77.0.11", 2);
    let transfer = Transfer::start(net, 0, 1, NODE_B, 2_000_000);
    let (bytes, digest, expected, _) = transfer.finish(Duration::from_secs(120));
    assert_eq!((bytes, digest), (2_000_000, expected));
    assert!(sends(net) > before);
}
