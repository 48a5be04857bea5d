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

/// The pid of the process whose arguments `matches` says yes to (processes under wrappers
/// have no handle of their own here), waiting for it for up to 10 s.
fn pid_of(what: &str, matches: impl Fn(&[&[u8]]) -> bool) -> u32 {
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
            if matches(&args) {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no process for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// The pid of the tunnel serving metrics at `metrics`.
fn tunnel_pid(metrics: &str) -> u32 {
    pid_of(metrics, |args| {
        args.first().is_some_and(|a| a.ends_with(b"/tunnel")) && args.contains(&metrics.as_bytes())
    })
}

/// Writes `len` pseudo-random bytes to `path` and returns their SHA-256, by `sha256sum`.
fn random_file(path: &std::path::Path, len: usize) -> String {
    let mut data = vec![0u8; len];
    let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ len as u64;
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(path, &data).unwrap();
    let sum = run("sha256sum", &[path.to_str().unwrap()]);
    String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// The SHA-256 of what `curl` fetched from `url` in namespace `side` within `max_time`
/// seconds, and what curl said on its standard error.
fn fetch_digest(net: &Net, side: usize, url: &str, max_time: u32) -> (String, String) {
    let fetched = net.exec(
        side,
        &[
            "sh",
            "-c",
            &format!("curl -sS -g --max-time {max_time} {url} | sha256sum"),
        ],
    );
    let digest = String::from_utf8_lossy(&fetched.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned();
    (
        digest,
        String::from_utf8_lossy(&fetched.stderr).into_owned(),
    )
}

#[test]
fn a_userspace_node_in_a_sandbox_serves_forwards_and_answers_pings() {
    let mut net = Net::new(17);
    let dir = std::env::temp_dir().join(format!("tunnel-userspace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let expected = random_file(&dir.join("file"), 10 << 20);
    let _servers = servers(&net, &dir);

    // The sandbox: / read-only, a fresh /tmp, a /dev without net/tun, then nobody with no
    // capabilities at all; its own pid namespace, which ends with bwrap (killed when the test
    // ends), so that no tunnel outlives the test. The binary is copied into the sandbox's /tmp
    // (the build directory may be private to its owner).
    let binary = dir.join("tunnel");
    std::fs::copy(env!("CARGO_BIN_EXE_tunnel"), &binary).unwrap();
    let script = format!(
        "shift && exec bwrap --unshare-pid --die-with-parent --ro-bind / / --tmpfs /tmp \
         --dev /dev --proc /proc \
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
    // B, on a kernel TUN device, fetches the 10 MB file from A's local HTTP server. (The
    // measurement run compares this with a kernel TUN node: `MEASURE=userspace`.)
    let (digest, stderr) = fetch_digest(&net, 1, &format!("http://[{a}]:8000/file"), 300);
    assert_eq!(digest, expected, "{stderr}\n{}", net.logs());
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
    let c_metrics = net.tunnels.last().unwrap().metrics;
    // The stack's counts reach the metrics once a second: wait for the hundredth, then check
    // that no connection was counted twice.
    let out_total = "tunnel_userspace_connections_total{node=\"000000000000000c\",proto=\"tcp\",direction=\"out\"}";
    let wait = Instant::now() + Duration::from_secs(5);
    while net.metric_at(c_metrics, out_total) < 100.0 && Instant::now() < wait {
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(net.metric_at(c_metrics, out_total), 100.0);
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
    // The sandboxed tunnel ended with its sandbox (its pid, unless reused, is gone).
    let metrics = a_metrics.to_string();
    let alive = || {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == metrics.as_bytes()))
    };
    let gone = Instant::now() + Duration::from_secs(10);
    while alive() {
        assert!(
            Instant::now() < gone,
            "the sandboxed tunnel outlived its test"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// AWS Lambda's Runtime API, as much of it as a custom runtime uses, on 127.0.0.1 at a port it
/// chooses: `invocations` invocations, each with a deadline `hold_ms` after it is handed out,
/// then none (a `next` that never answers, as a frozen function's). It prints one line per
/// event: `port P`, `invoked ID DEADLINE_MS`, `posted PATH AT_MS ERROR_TYPE BODY`.
const RUNTIME_API: &str = r#"
import http.server, sys, time
holds = [int(ms) for ms in sys.argv[1:]]
count = 0
class Api(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def do_GET(self):
        global count
        if self.path != "/2018-06-01/runtime/invocation/next":
            self.send_error(404)
            return
        if count >= len(holds):
            time.sleep(3600)
            return
        deadline = int(time.time() * 1000) + holds[count]
        count += 1
        body = b'{"n": %d}' % count
        self.send_response(200)
        self.send_header("Lambda-Runtime-Aws-Request-Id", "request-%d" % count)
        self.send_header("Lambda-Runtime-Deadline-Ms", str(deadline))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        print("invoked request-%d %d" % (count, deadline), flush=True)
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()
        kind = self.headers.get("Lambda-Runtime-Function-Error-Type") or "-"
        print("posted %s %d %s %s" % (self.path, int(time.time() * 1000), kind, body), flush=True)
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
print("port %d" % server.server_address[1], flush=True)
server.serve_forever()
"#;

/// An event of [`RUNTIME_API`]'s.
#[derive(Debug)]
enum Runtime {
    Invoked {
        id: String,
        deadline_ms: u64,
    },
    Posted {
        path: String,
        at_ms: u64,
        kind: String,
        body: String,
    },
}

struct RuntimeApi {
    child: Child,
    port: u16,
    events: std::sync::mpsc::Receiver<Runtime>,
}

impl RuntimeApi {
    /// Starts the API in namespace `ns` (the host's if `None`), one invocation per hold.
    fn start(ns: Option<&str>, holds_ms: &[u64]) -> RuntimeApi {
        let holds: Vec<String> = holds_ms.iter().map(u64::to_string).collect();
        let mut command = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "python3"]);
                c
            }
            None => Command::new("python3"),
        };
        let mut child = command
            .args(["-c", RUNTIME_API])
            .args(&holds)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let stdout = child.stdout.take().unwrap();
        let (ports, port) = std::sync::mpsc::channel();
        let (tx, events) = std::sync::mpsc::channel();
        thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let mut words = line.splitn(5, ' ');
                let event = match words.next() {
                    Some("port") => {
                        let _ = ports.send(words.next().unwrap().parse::<u16>().unwrap());
                        continue;
                    }
                    Some("invoked") => Runtime::Invoked {
                        id: words.next().unwrap().to_owned(),
                        deadline_ms: words.next().unwrap().parse().unwrap(),
                    },
                    Some("posted") => Runtime::Posted {
                        path: words.next().unwrap().to_owned(),
                        at_ms: words.next().unwrap().parse().unwrap(),
                        kind: words.next().unwrap().to_owned(),
                        body: words.next().unwrap_or("").to_owned(),
                    },
                    _ => panic!("the runtime API said {line:?}"),
                };
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        let port = port
            .recv_timeout(Duration::from_secs(10))
            .expect("the runtime API starts");
        RuntimeApi {
            child,
            port,
            events,
        }
    }

    fn next(&self, within: Duration, why: &str) -> Runtime {
        self.events
            .recv_timeout(within)
            .unwrap_or_else(|_| panic!("the runtime API saw nothing within {within:?}: {why}"))
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A function's package, as `deploy/lambda/README.md` builds it: `bootstrap` and `tunnel`, and
/// whatever the handler serves.
fn package(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let bootstrap = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/lambda/bootstrap");
    std::fs::copy(bootstrap, dir.join("bootstrap")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_tunnel"), dir.join("tunnel")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for file in ["bootstrap", "tunnel"] {
        std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn the_lambda_bootstrap_says_what_keeps_it_from_starting() {
    let dir = std::env::temp_dir().join(format!("tunnel-lambda-init-{}", std::process::id()));
    package(&dir);
    let api = RuntimeApi::start(None, &[]);
    let bootstrap = |env: &[(&str, &str)]| {
        let out = Command::new("sh")
            .arg(dir.join("bootstrap"))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{}", api.port))
            .env("LAMBDA_TASK_ROOT", &dir)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        match api.next(Duration::from_secs(30), "an init error") {
            Runtime::Posted {
                path, kind, body, ..
            } => {
                assert_eq!(path, "/2018-06-01/runtime/init/error");
                (kind, body)
            }
            other => panic!("{other:?}"),
        }
    };
    let (kind, body) = bootstrap(&[]);
    assert_eq!(kind, "Runtime.ConfigError");
    assert!(body.contains("TUNNEL_LINK is not set"), "{body}");
    let (kind, body) = bootstrap(&[("TUNNEL_LINK", "cwl://e2e/net/")]);
    assert_eq!(kind, "Runtime.ConfigError");
    assert!(body.contains("TUNNEL_NODE_ID is not set"), "{body}");
    // The tunnel itself refuses: no credentials in the environment. Lambda is told why, in the
    // tunnel's words, and the JSON stays one line.
    let (kind, body) = bootstrap(&[
        ("TUNNEL_LINK", "cwl://e2e/net/"),
        ("TUNNEL_NODE_ID", "7a"),
        ("AWS_REGION", "us-east-1"),
    ]);
    assert_eq!(kind, "Runtime.TunnelError");
    assert!(
        body.starts_with(r#"{"errorType":"Runtime.TunnelError","errorMessage":"tunnel up exited with 1: tunnel: no AWS credentials"#),
        "{body}"
    );
    assert!(body.ends_with("\"}") && !body.contains('\n'), "{body}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The pid of the shell running `/var/task/bootstrap` (not of the wrappers that started it).
fn bootstrap_pid() -> u32 {
    pid_of("/var/task/bootstrap", |args| {
        args.contains(&b"/var/task/bootstrap".as_slice())
            && !args
                .first()
                .is_some_and(|a| a.ends_with(b"bwrap") || a.ends_with(b"setpriv"))
    })
}

#[test]
fn a_lambda_function_is_reachable_over_cloudwatch_logs_while_invoked() {
    let mut net = Net::new_cwl(18);
    let dir = std::env::temp_dir().join(format!("tunnel-lambda-{}", std::process::id()));
    package(&dir);
    let expected = random_file(&dir.join("page"), 256 << 10);

    // Two invocations: a long one while B fetches and pings, then a short one.
    const MARGIN_MS: u64 = 2000;
    let api = RuntimeApi::start(Some(net.ns(0)), &[60_000, 6_000]);
    let endpoint = format!("--endpoint-url http://{}", net.server_addr);
    // The sandbox as Lambda's: only the function's environment, / read-only, the package
    // read-only at /var/task, a /tmp of its own, no /dev/net/tun, nobody with no capabilities.
    let task = dir.to_str().unwrap();
    let sandbox_env = [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("LAMBDA_TASK_ROOT", "/var/task"),
        ("_HANDLER", "python3 -m http.server --bind 127.0.0.1 3000"),
        ("AWS_ACCESS_KEY_ID", e2e::moto::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", e2e::moto::SECRET_KEY),
        ("AWS_SESSION_TOKEN", "a-session-token-as-lambda-gives"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("TUNNEL_LINK", "cwl://e2e/net/"),
        ("TUNNEL_NODE_ID", "a"),
        ("TUNNEL_EXPOSE", "3000"),
        ("TUNNEL_ARGS", &endpoint),
        ("TUNNEL_MARGIN_MS", "2000"),
    ];
    let runtime_api = format!("127.0.0.1:{}", api.port);
    let mut args: Vec<&str> = vec!["netns", "exec", net.ns(0), "bwrap", "--clearenv"];
    for (name, value) in &sandbox_env {
        args.extend_from_slice(&["--setenv", name, value]);
    }
    args.extend_from_slice(&["--setenv", "AWS_LAMBDA_RUNTIME_API", &runtime_api]);
    args.extend_from_slice(&[
        "--unshare-pid",
        "--die-with-parent",
        "--ro-bind",
        "/",
        "/",
        "--perms",
        "1777",
        "--tmpfs",
        "/tmp",
        "--tmpfs",
        "/var",
        "--ro-bind",
        task,
        "/var/task",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--",
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "/var/task/bootstrap",
    ]);
    // Killed when dropped, should the test fail: bwrap is the init of the sandbox's own pid
    // namespace, and everything in it ends with it.
    let mut function = Servers(vec![
        Command::new("ip")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ]);
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let stderr = function.0[0].stderr.take().unwrap();
    let reader = thread::spawn({
        let log = std::sync::Arc::clone(&log);
        move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        }
    });
    let function_log = || log.lock().unwrap().clone();

    let Runtime::Invoked { id, deadline_ms } =
        api.next(Duration::from_secs(60), "the first invocation")
    else {
        panic!("{}", function_log());
    };
    assert_eq!(id, "request-1");
    // The bootstrap takes an invocation once the tunnel is up: the log says so.
    assert!(function_log().contains(" up "), "{}", function_log());
    let pid = bootstrap_pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.contains("\nUid:\t65534\t65534\t65534\t65534"),
        "{status}"
    );
    assert!(status.contains("\nCapEff:\t0000000000000000"), "{status}");

    // While invoked: B, on a kernel TUN device, fetches the page from the function's server and
    // pings the function.
    net.up(1, NODE_B, &[]);
    let url = format!("http://[{}]:3000/page", node_addr(NODE_A));
    let (digest, stderr) = fetch_digest(&net, 1, &url, 45);
    assert_eq!(
        digest,
        expected,
        "{stderr}\n{}\n{}",
        function_log(),
        net.logs()
    );
    let pings = e2e::ping(&net, 1, NODE_A, 2);
    assert!(
        pings.status.success(),
        "{}\n{}",
        received(&pings),
        function_log()
    );

    // The invocation returns just before its deadline, then the next is taken by the same
    // runtime and the same tunnel.
    for (n, within) in [(1, 70), (2, 20)] {
        if n == 2 {
            let Runtime::Invoked { id, .. } = api.next(Duration::from_secs(10), "the second")
            else {
                panic!("{}", function_log());
            };
            assert_eq!(id, "request-2");
        }
        let Runtime::Posted {
            path, at_ms, body, ..
        } = api.next(Duration::from_secs(within), "a response")
        else {
            panic!("{}", function_log());
        };
        assert_eq!(
            path,
            format!("/2018-06-01/runtime/invocation/request-{n}/response")
        );
        assert!(body.starts_with(r#"{"node":"a","reachable_ms":"#), "{body}");
        if n == 1 {
            assert!(
                at_ms + MARGIN_MS >= deadline_ms && at_ms < deadline_ms,
                "returned at {at_ms}, deadline {deadline_ms}"
            );
        }
    }
    assert_eq!(
        function_log().matches(": up ").count(),
        1,
        "{}",
        function_log()
    );

    // Lambda's shutdown: SIGTERM to the runtime, which stops the tunnel cleanly.
    run("kill", &["-TERM", &pid.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while function.0[0].try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the function stops on SIGTERM\n{}",
            function_log()
        );
        thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap();
    assert!(function_log().contains(" down "), "{}", function_log());
    drop(net);
    let _ = std::fs::remove_dir_all(&dir);
}
