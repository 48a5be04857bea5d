//! `tunnel up --userspace` end to end: node A runs as an unprivileged user in a sandbox like a
//! Lambda function's (a read-only file system but /tmp, no /dev/net/tun, no capabilities,
//! credentials from the environment), its stack beside local servers; node B, on a kernel TUN
//! device, fetches a file from A with curl and pings it; node C, userspace too, forwards local
//! TCP and UDP ports to A. Needs root, as the other end-to-end tests, and bwrap and curl
//! (`scripts/test` installs them).

mod e2e;

use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use e2e::{NODE_A, NODE_B, Net, node_addr, received, run};

const NODE_C: u64 = 0xc;
const NODE_D: u64 = 0xd;

/// Local servers in namespace a, on 127.0.0.1: HTTP on 8000 (serving `dir`), TCP echo on 7007,
/// UDP echo on 9000. Killed when dropped.
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

const ECHO: &str = r#"
import socket, threading
tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("127.0.0.1", 7007)); tcp.listen(128)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("127.0.0.1", 9000))
def serve_udp():
    while True:
        data, peer = udp.recvfrom(65536)
        udp.sendto(b"echo " + data, peer)
threading.Thread(target=serve_udp, daemon=True).start()
def echo(conn):
    while True:
        data = conn.recv(65536)
        if not data:
            break
        conn.sendall(data)
    conn.close()
while True:
    conn, _ = tcp.accept()
    threading.Thread(target=echo, args=(conn,), daemon=True).start()
"#;

fn servers(net: &Net, dir: &std::path::Path) -> Servers {
    let spawn = |args: &[&str]| {
        let mut all = vec!["netns", "exec", net.ns(0)];
        all.extend_from_slice(args);
        Command::new("ip")
            .args(&all)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let http = spawn(&[
        "python3",
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        "--directory",
        dir.to_str().unwrap(),
        "8000",
    ]);
    let echo = spawn(&["python3", "-c", ECHO]);
    let servers = Servers(vec![http, echo]);
    // Both listening before the test goes on.
    for port in [8000, 7007] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !net
            .exec(
                0,
                &[
                    "python3",
                    "-c",
                    &format!("import socket; socket.create_connection(('127.0.0.1', {port}))"),
                ],
            )
            .status
            .success()
        {
            assert!(
                Instant::now() < deadline,
                "the server on {port} did not start"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
    servers
}

/// The pid of the tunnel serving metrics at `metrics` (it runs under wrappers).
fn tunnel_pid(metrics: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            if args.first().is_some_and(|a| a.ends_with(b"/tunnel"))
                && args.contains(&metrics.as_bytes())
            {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no tunnel process for {metrics}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_userspace_node_in_a_sandbox_serves_forwards_and_answers_pings() {
    let mut net = Net::new(17);
    let dir = std::env::temp_dir().join(format!("tunnel-userspace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut data = vec![0u8; 10 << 20];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(dir.join("file"), &data).unwrap();
    let expected = {
        let sum = run("sha256sum", &[dir.join("file").to_str().unwrap()]);
        String::from_utf8_lossy(&sum.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let _servers = servers(&net, &dir);

    // The sandbox: / read-only, a fresh /tmp, a /dev without net/tun, then nobody with no
    // capabilities at all. The binary is copied into the sandbox's /tmp (the build directory
    // may be private to its owner).
    let binary = dir.join("tunnel");
    std::fs::copy(env!("CARGO_BIN_EXE_tunnel"), &binary).unwrap();
    let script = format!(
        "shift && exec bwrap --ro-bind / / --tmpfs /tmp --dev /dev --proc /proc \
         --ro-bind {} /tmp/tunnel -- setpriv --reuid=nobody --regid=nogroup --clear-groups \
         --inh-caps=-all --bounding-set=-all /tmp/tunnel \"$@\"",
        binary.display()
    );
    let sandbox = ["sh", "-c", &script, "sh"];
    net.up_under(
        0,
        NODE_A,
        &[
            "--userspace",
            "--expose",
            "8000",
            "--expose",
            "8001",
            "--expose",
            "7007",
            "--expose",
            "9000/udp",
        ],
        &sandbox,
    );
    let a_metrics = net.tunnels[0].metrics;
    let pid = tunnel_pid(&a_metrics.to_string());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.contains("\nUid:\t65534\t65534\t65534\t65534"),
        "{status}"
    );
    assert!(status.contains("\nCapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("\nCapBnd:\t0000000000000000"), "{status}");
    let root = format!("/proc/{pid}/root");
    assert!(
        !std::path::Path::new(&format!("{root}/dev/net/tun")).exists(),
        "the sandbox has no /dev/net/tun"
    );
    let write = std::fs::write(format!("{root}/etc/tunnel-probe"), b"x").unwrap_err();
    assert_eq!(write.raw_os_error(), Some(30), "EROFS: {write}");

    net.up(1, NODE_B, &[]);
    let a = node_addr(NODE_A);
    // B, on a kernel TUN device, fetches the 10 MB file from A's local HTTP server.
    let url = format!("http://[{a}]:8000/file");
    let started = Instant::now();
    let fetched = net.exec(
        1,
        &[
            "sh",
            "-c",
            &format!("curl -sS -g --max-time 300 {url} | sha256sum"),
        ],
    );
    let seconds = started.elapsed().as_secs_f64();
    let digest = String::from_utf8_lossy(&fetched.stdout);
    assert_eq!(
        digest.split_whitespace().next(),
        Some(expected.as_str()),
        "{}\n{}",
        String::from_utf8_lossy(&fetched.stderr),
        net.logs()
    );
    // The same file from a kernel TUN node in a's namespace, for the README's comparison
    // (printed, not asserted: a test is no benchmark).
    let _kernel_server = Servers(vec![
        Command::new("ip")
            .args(["netns", "exec", net.ns(0), "python3", "-m", "http.server"])
            .args(["--bind", "::", "--directory", dir.to_str().unwrap(), "8080"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ]);
    net.up(0, NODE_D, &[]);
    let url = format!("http://[{}]:8080/file", node_addr(NODE_D));
    let started = Instant::now();
    let fetched = net.exec(
        1,
        &[
            "sh",
            "-c",
            &format!("curl -sS -g --retry 5 --retry-connrefused --max-time 300 {url} | sha256sum"),
        ],
    );
    let kernel_seconds = started.elapsed().as_secs_f64();
    assert_eq!(
        String::from_utf8_lossy(&fetched.stdout)
            .split_whitespace()
            .next(),
        Some(expected.as_str())
    );
    eprintln!(
        "10 MB over the same link: userspace {seconds:.2} s, kernel TUN {kernel_seconds:.2} s \
         (userspace/kernel throughput {:.2})",
        kernel_seconds / seconds
    );
    let pings = e2e::ping(&net, 1, NODE_A, 3);
    assert!(
        pings.status.success(),
        "{}\n{}",
        received(&pings),
        net.logs()
    );

    // A port exposed with nothing listening behind it is refused, as by a host: curl says
    // "couldn't connect" (7), not a timeout.
    let refused = net.exec(
        1,
        &[
            "curl",
            "-sS",
            "-g",
            "--max-time",
            "60",
            &format!("http://[{a}]:8001/"),
        ],
    );
    assert_eq!(
        refused.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // C, userspace too, in b's namespace: local TCP and UDP ports forwarded to A.
    net.up(
        1,
        NODE_C,
        &[
            "--userspace",
            "--forward",
            "127.0.0.1:7070=a:7007",
            "--forward",
            "127.0.0.1:9090=a:9000/udp",
        ],
    );
    let client = r#"
import socket, sys
for i in range(100):
    conn = socket.create_connection(("127.0.0.1", 7070), timeout=120)
    line = b"hello %d\n" % i
    conn.sendall(line)
    conn.shutdown(socket.SHUT_WR)
    back = b""
    while True:
        data = conn.recv(65536)
        if not data:
            break
        back += data
    assert back == line, (i, back)
    conn.close()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.settimeout(60)
udp.sendto(b"over udp", ("127.0.0.1", 9090))
data, _ = udp.recvfrom(65536)
assert data == b"echo over udp", data
print("ok")
"#;
    let out = net.exec(1, &["python3", "-c", client]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        net.logs()
    );
    let c_metrics = net.tunnels[3].metrics;
    let connections_out = net.metric_at(
        c_metrics,
        "tunnel_userspace_connections_total{node=\"000000000000000c\",proto=\"tcp\",direction=\"out\"}",
    );
    assert_eq!(connections_out, 100.0);
    // The refusal was counted where it happened.
    let wait = Instant::now() + Duration::from_secs(5);
    while net.metric_at(a_metrics, "tunnel_userspace_refused_total") < 1.0 {
        assert!(Instant::now() < wait, "A counts the refusal");
        thread::sleep(Duration::from_millis(200));
    }
    // The hundred connections all ended: none stays open on C (TIME-WAIT is 10 s).
    let wait = Instant::now() + Duration::from_secs(30);
    while net.metric_at(
        c_metrics,
        "tunnel_userspace_connections{node=\"000000000000000c\",proto=\"tcp\"}",
    ) > 0.0
    {
        assert!(Instant::now() < wait, "C's connections end\n{}", net.logs());
        thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        net.metric_at(c_metrics, "tunnel_userspace_resets_total"),
        0.0
    );

    drop(net);
    let _ = std::fs::remove_dir_all(&dir);
}
