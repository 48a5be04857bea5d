//! End to end: two network namespaces, each running `tunnel up` with its own TUN device and node
//! id, joined by veth pairs to an S3-compatible server (s3s-fs) on the host; real `ping -6` and
//! real TCP across, through the real AWS SDK.
//!
//! Needs root (namespaces, veth, TUN), `ip` (iproute2), `ping` (iputils-ping) and `python3`,
//! which `scripts/test` installs. Without them these tests fail: they are the tunnel's proof.
//! Everything a test creates (namespaces with their veth and TUN devices, processes, the
//! server's directory) is removed when it ends, also when it fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tunnels::aws::S3Store;
use tunnels::local_s3::{self, LocalS3};
use tunnels::s3::{batch_key, bell_key};
use tunnels::store::ObjectStore;
use tunnels::wire::Header;

const BUCKET: &str = "e2e";
const PREFIX: &str = "net/";
/// The tunnel's own network (`tunnel up`'s default).
const NETWORK: &str = "fd5e:59b8:f71d:9a3e";
const NODE_A: u64 = 0xa;
const NODE_B: u64 = 0xb;

fn node_addr(id: u64) -> String {
    format!("{NETWORK}::{id:x}")
}

/// Runs a command, failing the test with its output if it fails.
fn run(program: &str, args: &[&str]) -> Output {
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
struct Tunnel {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

/// Two namespaces, their veth pairs to the host, the server, and the two tunnels. Dropping it
/// removes them all.
struct Net {
    tag: String,
    namespaces: Vec<String>,
    host_links: Vec<String>,
    tunnels: Vec<Tunnel>,
    runtime: tokio::runtime::Runtime,
    server: Option<LocalS3>,
    server_addr: SocketAddr,
    dir: PathBuf,
}

impl Net {
    /// Sets up namespaces `a` and `b` and the server; `k` tells this test's apart from the
    /// others running at once.
    fn new(k: u16) -> Net {
        let euid = String::from_utf8(run("id", &["-u"]).stdout).unwrap();
        assert_eq!(
            euid.trim(),
            "0",
            "the end-to-end tests need root for namespaces and TUN devices"
        );
        let pid = std::process::id() % 100_000;
        let tag = format!("{pid}{k}");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("tunnel-e2e-{tag}"));
        let mut net = Net {
            tag: tag.clone(),
            namespaces: Vec::new(),
            host_links: Vec::new(),
            tunnels: Vec::new(),
            runtime,
            server: None,
            server_addr: SocketAddr::from(([0; 16], 0)),
            dir,
        };
        // Host side fd7e:<pid>:<k>:<side>::1, namespace side ::2.
        let site = format!("fd7e:{:x}:{k:x}", pid % 0xffff);
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
        net.start_server(SocketAddr::from((server_ip, 0)));
        net.server_addr = net.server.as_ref().unwrap().addr();
        net.server.as_ref().unwrap().create_bucket(BUCKET).unwrap();
        net
    }

    fn start_server(&mut self, addr: SocketAddr) {
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

    fn ns(&self, side: usize) -> &str {
        &self.namespaces[side]
    }

    /// The namespace side's address of pair `side`, where its tunnel serves metrics.
    fn metrics_addr(&self, side: usize) -> SocketAddr {
        let pid = std::process::id() % 100_000;
        let k = &self.tag[self.tag.len() - 1..];
        let name = ["a", "b"][side];
        let ip: Ipv6Addr = format!("fd7e:{:x}:{k}:{name}::2", pid % 0xffff)
            .parse()
            .unwrap();
        SocketAddr::from((ip, 9100))
    }

    /// Starts `tunnel up` in namespace `side` as node `id`, and waits until it is up.
    fn up(&mut self, side: usize, id: u64, extra: &[&str]) {
        let endpoint = format!("http://{}", self.server_addr);
        let link = format!("s3://{BUCKET}/{PREFIX}");
        let node_id = format!("{id:x}");
        let metrics = self.metrics_addr(side).to_string();
        let mut args = vec![
            "netns",
            "exec",
            self.ns(side),
            env!("CARGO_BIN_EXE_tunnel"),
            "up",
            "--link",
            &link,
            "--node-id",
            &node_id,
            "--endpoint-url",
            &endpoint,
            "--path-style",
            "--region",
            "us-east-1",
            "--device",
            "tun0",
            "--metrics",
            &metrics,
        ];
        args.extend_from_slice(extra);
        let mut child = Command::new("ip")
            .args(&args)
            .env("AWS_ACCESS_KEY_ID", local_s3::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", local_s3::SECRET_KEY)
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
        self.tunnels.push(Tunnel { child, log });
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            panic!("tunnel {id:x} did not come up:\n{}", self.logs());
        }
    }

    fn logs(&self) -> String {
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
    fn exec(&self, side: usize, args: &[&str]) -> Output {
        let mut all = vec!["netns", "exec", self.ns(side)];
        all.extend_from_slice(args);
        Command::new("ip").args(&all).output().unwrap()
    }

    /// The sum of the metric lines starting with `prefix` on tunnel `side`.
    fn metric(&self, side: usize, prefix: &str) -> f64 {
        let mut stream =
            TcpStream::connect_timeout(&self.metrics_addr(side), Duration::from_secs(5))
                .expect("connecting to the metrics endpoint");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: tunnel\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).unwrap();
        body.lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit(' ').next())
            .map(|value| value.parse::<f64>().unwrap())
            .sum()
    }

    fn store(&self) -> S3Store {
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
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ping(net: &Net, from: usize, to: u64, count: u32) -> Output {
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

const RECEIVER: &str = r#"
import hashlib, socket, sys
server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
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

const SENDER: &str = r#"
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
struct Transfer {
    receiver: Option<Child>,
    sender: Option<Child>,
    expected: String,
    file: PathBuf,
}

impl Transfer {
    fn start(net: &Net, from: usize, to_side: usize, to: u64, bytes: usize) -> Transfer {
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
        let addr = node_addr(to);
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
    fn finish(mut self, within: Duration) -> (usize, String, String, f64) {
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
fn labels(name: &str, node: u64, label: &str) -> String {
    format!("{name}{{node=\"{node:016x}\",{label}}}")
}

fn received(ping: &Output) -> String {
    String::from_utf8_lossy(&ping.stdout).into_owned()
}

#[test]
fn ping_and_a_10_mb_transfer_cross_the_tunnel() {
    let mut net = Net::new(1);
    net.up(0, NODE_A, &[]);
    net.up(1, NODE_B, &[]);

    // The device has the node's address and the network's route, with its congestion control.
    let addr = String::from_utf8_lossy(
        &net.exec(0, &["ip", "-6", "addr", "show", "dev", "tun0"])
            .stdout,
    )
    .into_owned();
    assert!(
        addr.contains(&format!("{}/64", node_addr(NODE_A))),
        "{addr}"
    );
    let route = String::from_utf8_lossy(
        &net.exec(1, &["ip", "-6", "route", "show", "dev", "tun0"])
            .stdout,
    )
    .into_owned();
    assert!(
        route.contains(&format!("{NETWORK}::/64")) && route.contains("congctl cubic"),
        "{route}"
    );

    let ping = ping(&net, 0, NODE_B, 3);
    assert!(
        ping.status.success(),
        "ping failed:\n{}\n{}",
        received(&ping),
        net.logs()
    );
    assert!(
        received(&ping).contains("3 received"),
        "{}",
        received(&ping)
    );

    let transfer = Transfer::start(&net, 0, 1, NODE_B, 10_000_000);
    let (bytes, digest, expected, seconds) = transfer.finish(Duration::from_secs(300));
    assert_eq!(bytes, 10_000_000);
    assert_eq!(digest, expected);
    eprintln!("10 MB in {seconds:.1} s");
    // Neither device dropped a packet: the transmit queue holds a TCP window's burst.
    for side in [0, 1] {
        let stats = net.exec(side, &["ip", "-s", "-j", "link", "show", "tun0"]);
        let text = String::from_utf8_lossy(&stats.stdout);
        assert!(text.contains("\"txqlen\":10000"), "{text}");
        assert!(
            text.matches("\"dropped\":").count() == 2
                && text.matches("\"dropped\":0,").count() == 2,
            "{text}"
        );
    }

    // What went through is counted where users look.
    assert!(
        net.metric(
            0,
            &labels("tunnel_packets_total", NODE_A, "direction=\"out\"")
        ) > 7_000.0
    );
    assert!(net.metric(1, &labels("tunnel_bytes_total", NODE_B, "direction=\"in\"")) > 10e6);
    assert!(net.metric(0, "tunnel_store_calls_total{") > 0.0);
    assert!(net.metric(0, "tunnel_store_cost_dollars{") > 0.0);
    assert_eq!(net.metric(0, "tunnel_packets_dropped_total{"), 0.0);
    assert_eq!(net.metric(1, "tunnel_packets_dropped_total{"), 0.0);
}

/// Objects that are not batches, dropped into a node's inbox, are counted, deleted, and do not
/// disturb a ping running meanwhile.
#[test]
fn garbage_in_an_inbox_is_counted_deleted_and_harmless() {
    let mut net = Net::new(2);
    net.up(0, NODE_A, &[]);
    net.up(1, NODE_B, &[]);
    let store = net.store();

    let pinger = {
        let mut args = vec!["netns".to_owned(), "exec".to_owned(), net.ns(0).to_owned()];
        for a in ["ping", "-6", "-n", "-c", "10", "-i", "0.5", "-w", "90"] {
            args.push(a.to_owned());
        }
        args.push(node_addr(NODE_B));
        Command::new("ip")
            .args(&args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    thread::sleep(Duration::from_secs(2));

    let stranger = 0xbad;
    let mut valid = Vec::new();
    Header {
        sender: stranger,
        epoch: 1,
        seq: 1,
    }
    .emit(&[b"not a packet anyway".as_slice()], &mut valid)
    .unwrap();
    let mut wrong_magic = valid.clone();
    wrong_magic[..4].copy_from_slice(b"JUNK");
    let truncated = valid[..valid.len() - 5].to_vec();
    let random: Vec<u8> = (0..500u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let keys: Vec<String> = (0..3)
        .map(|seq| batch_key(PREFIX, NODE_B, stranger, 1, seq))
        .collect();
    net.runtime.block_on(async {
        for (key, body) in keys.iter().zip([random, wrong_magic, truncated]) {
            store.put(key, Bytes::from(body)).await.unwrap();
        }
        store
            .put(&bell_key(PREFIX, NODE_B), Bytes::new())
            .await
            .unwrap();
    });

    let deadline = Instant::now() + Duration::from_secs(60);
    while net.metric(
        1,
        &labels("tunnel_batches_total", NODE_B, "outcome=\"rejected\""),
    ) < 3.0
    {
        assert!(
            Instant::now() < deadline,
            "the garbage was not rejected:\n{}",
            net.logs()
        );
        thread::sleep(Duration::from_millis(500));
    }
    let inbox = format!("{PREFIX}{NODE_B:016x}/{stranger:016x}/");
    let left = net.runtime.block_on(store.list(&inbox, None, 100)).unwrap();
    assert!(left.is_empty(), "not deleted: {left:?}");

    let output = pinger.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && text.contains("10 received"),
        "{text}\n{}",
        net.logs()
    );

    // SIGTERM: a clean exit, and the device goes with the process.
    for side in [0, 1] {
        let pid = net.tunnels[side].child.id().to_string();
        run("kill", &["-TERM", &pid]);
        let status = net.tunnels[side].child.wait().unwrap();
        assert!(status.success(), "{status}\n{}", net.logs());
        // The log reader may still be reading the last lines.
        let deadline = Instant::now() + Duration::from_secs(5);
        let log = loop {
            let log = net.tunnels[side].log.lock().unwrap().join("\n");
            if log.contains(" down") || Instant::now() > deadline {
                break log;
            }
            thread::sleep(Duration::from_millis(50));
        };
        assert!(log.contains("stopping") && log.contains(" down"), "{log}");
        let links = net.exec(side, &["ip", "link", "show", "tun0"]);
        assert!(!links.status.success(), "tun0 outlived its tunnel");
    }
}

/// The server stopped for 10 s in the middle of a transfer and started again: the tunnel
/// recovers by itself and the transfer completes, intact.
#[test]
fn a_transfer_survives_the_server_stopping_for_10_s() {
    let mut net = Net::new(3);
    net.up(0, NODE_A, &[]);
    net.up(1, NODE_B, &[]);
    let transfer = Transfer::start(&net, 0, 1, NODE_B, 10_000_000);

    // Wait for data to flow, then pull the plug.
    let deadline = Instant::now() + Duration::from_secs(60);
    while net.metric(1, &labels("tunnel_bytes_total", NODE_B, "direction=\"in\"")) < 1e6 {
        assert!(Instant::now() < deadline, "no data flowed:\n{}", net.logs());
        thread::sleep(Duration::from_millis(100));
    }
    let addr = net.server_addr;
    net.server.take().unwrap().stop();
    thread::sleep(Duration::from_secs(10));
    net.start_server(addr);

    let (bytes, digest, expected, _) = transfer.finish(Duration::from_secs(300));
    assert_eq!(bytes, 10_000_000);
    assert_eq!(digest, expected);
    assert!(
        net.metric(0, "tunnel_store_retries_total") > 0.0,
        "the outage was not noticed:\n{}",
        net.logs()
    );
}

/// SIGTERM sends what is queued before the tunnel exits, even while the bucket is unreachable
/// for a while: a packet accepted is not lost to a restart.
#[test]
fn sigterm_sends_what_is_pending_first() {
    let mut net = Net::new(5);
    net.up(0, NODE_A, &[]);
    net.up(1, NODE_B, &[]);
    assert!(ping(&net, 0, NODE_B, 1).status.success(), "{}", net.logs());
    let out_a = labels("tunnel_packets_total", NODE_A, "direction=\"out\"");
    let in_b = labels("tunnel_packets_total", NODE_B, "direction=\"in\"");
    let (sent, arrived) = (net.metric(0, &out_a), net.metric(1, &in_b));

    // The server goes away; one echo request leaves A and its PUT retries.
    let addr = net.server_addr;
    net.server.take().unwrap().stop();
    let _ = net.exec(
        0,
        &["ping", "-6", "-n", "-c", "1", "-W", "1", &node_addr(NODE_B)],
    );
    assert_eq!(net.metric(0, &out_a), sent + 1.0);
    run("kill", &["-TERM", &net.tunnels[0].child.id().to_string()]);
    thread::sleep(Duration::from_secs(3));
    assert!(
        net.tunnels[0].child.try_wait().unwrap().is_none(),
        "the tunnel exited with a packet still queued:\n{}",
        net.logs()
    );

    net.start_server(addr);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = net.tunnels[0].child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit:\n{}", net.logs());
        thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}\n{}", net.logs());
    while net.metric(1, &in_b) < arrived + 1.0 {
        assert!(
            Instant::now() < deadline,
            "the queued packet never arrived:\n{}",
            net.logs()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// Round-trip times in milliseconds from `ping` output, in order.
fn round_trips(ping: &Output) -> Vec<f64> {
    received(ping)
        .lines()
        .filter_map(|line| line.split("time=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(|ms| ms.parse().unwrap())
        .collect()
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Both tunnels' store calls so far: PUT, GET, LIST, DELETE, and what they cost.
fn calls(net: &Net) -> [f64; 5] {
    let mut out = [0.0; 5];
    for side in [0, 1] {
        for (i, kind) in ["put", "get", "list", "delete"].iter().enumerate() {
            out[i] += net.metric(
                side,
                &format!(
                    "tunnel_store_calls_total{{node=\"{:016x}\",kind=\"{kind}\"}}",
                    [NODE_A, NODE_B][side]
                ),
            );
        }
        out[4] += net.metric(side, "tunnel_store_cost_dollars{");
    }
    out
}

/// What happened between two readings of [`calls`].
fn describe_calls(before: [f64; 5], after: [f64; 5]) -> String {
    let d: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    format!(
        "{:.0} calls ({:.0} PUT, {:.0} GET, {:.0} LIST, {:.0} DELETE), ${:.5}",
        d[..4].iter().sum::<f64>(),
        d[0],
        d[1],
        d[2],
        d[3],
        d[4]
    )
}

/// The README's measurements, beside the cost simulation's predictions. About 7 minutes:
/// `cargo test --release -p tunnels --test netns -- --ignored --nocapture measure`
#[test]
#[ignore = "a measurement for the README, about 7 minutes"]
fn measure() {
    let mut net = Net::new(4);
    net.up(0, NODE_A, &[]);
    net.up(1, NODE_B, &[]);
    assert!(ping(&net, 0, NODE_B, 1).status.success());

    // As the simulation's `ping` trace: one echo a second.
    let before = calls(&net);
    let active = net.exec(
        0,
        &[
            "ping",
            "-6",
            "-n",
            "-c",
            "100",
            "-i",
            "1",
            &node_addr(NODE_B),
        ],
    );
    let mut rtts = round_trips(&active);
    assert_eq!(rtts.len(), 100, "{}", received(&active));
    let ping_calls = describe_calls(before, calls(&net));
    rtts.sort_by(f64::total_cmp);
    println!(
        "ping, one a second, 100: round trip p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {ping_calls}",
        quantile(&rtts, 0.5),
        quantile(&rtts, 0.99),
        rtts[rtts.len() - 1],
    );

    // The transfer's packets, for `costsim --pcap` to predict the same traffic's calls.
    let pcap = std::env::temp_dir().join("tunnel-measure-transfer.pcap");
    let mut tcpdump = Command::new("ip")
        .args([
            "netns",
            "exec",
            net.ns(0),
            "tcpdump",
            "-i",
            "tun0",
            "-s",
            "96",
            "-U",
            "-w",
        ])
        .arg(&pcap)
        .stderr(Stdio::null())
        .spawn()
        .expect("tcpdump");
    thread::sleep(Duration::from_secs(2));
    let before = calls(&net);
    let transfer = Transfer::start(&net, 0, 1, NODE_B, 100_000_000);
    let (bytes, digest, expected, seconds) = transfer.finish(Duration::from_secs(600));
    run("kill", &["-INT", &tcpdump.id().to_string()]);
    tcpdump.wait().unwrap();
    println!("the transfer's packets: {}", pcap.display());
    assert_eq!((bytes, &digest), (100_000_000, &expected));
    let after = calls(&net);
    println!(
        "100 MB over TCP: {seconds:.1} s, {:.1} MB/s; {}, {:.1} calls per MB",
        100.0 / seconds,
        describe_calls(before, after),
        (after[..4].iter().sum::<f64>() - before[..4].iter().sum::<f64>()) / 100.0
    );

    let before = calls(&net);
    thread::sleep(Duration::from_secs(300));
    let idle_calls = describe_calls(before, calls(&net));
    let wake = ping(&net, 0, NODE_B, 1);
    println!(
        "after 5 minutes idle ({idle_calls}): first ping {:?} ms",
        round_trips(&wake)
    );
}
