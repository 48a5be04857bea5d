//! The README's measurements, beside the cost simulation's predictions: ping round trips while
//! active and after 5 minutes idle, a 100 MB TCP transfer, the calls (and bytes) they took. Not
//! run by `cargo test` (about 7 minutes, root). Over S3 (s3s-fs), or over CloudWatch Logs
//! (`moto_server`) with `MEASURE_LINK=cwl`:
//!
//! ```sh
//! cargo test --release -p tunnel --test measure
//! MEASURE_LINK=cwl cargo test --release -p tunnel --test measure
//! ```
//!
//! `MEASURE=transfer` measures only the TCP transfer, `MEASURE_RUNS` times (5) of `MEASURE_MB`
//! megabytes (100), each with its calls and cost per GiB, the CPU each process took per MB, the
//! packets the tunnels dropped and TCP's retransmissions; `MEASURE_ARGS` adds `tunnel up` flags
//! to both nodes.
//!
//! `MEASURE=userspace` measures instead a userspace node (`--userspace --expose`) against a
//! kernel TUN node on the same link and server: the same file fetched from each by a kernel TUN
//! node with curl, in turns, `MEASURE_RUNS` times (5), `MEASURE_MB` megabytes (20).

mod e2e;

use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::Duration;

use e2e::*;

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

/// The operations each backend's calls are counted under.
fn ops(net: &Net) -> &'static [&'static str] {
    match net.backend {
        Backend::S3 => &["put", "get", "list", "delete"],
        Backend::Cwl => &["put_log_events", "get_log_events", "create_log_stream"],
    }
}

/// Both tunnels' store calls so far by operation, then the bytes the first operation carried
/// (PutLogEvents: as ingestion is billed), then what it all cost.
fn calls(net: &Net) -> Vec<f64> {
    let ops = ops(net);
    let mut out = vec![0.0; ops.len() + 2];
    for side in [0, 1] {
        let node = [NODE_A, NODE_B][side];
        for (i, kind) in ops.iter().enumerate() {
            out[i] += net.metric(
                side,
                &format!("tunnel_store_calls_total{{node=\"{node:016x}\",kind=\"{kind}\"}}"),
            );
        }
        out[ops.len()] += net.metric(
            side,
            &format!(
                "tunnel_store_bytes_total{{node=\"{node:016x}\",kind=\"{}\"}}",
                ops[0]
            ),
        );
        out[ops.len() + 1] += net.metric(side, "tunnel_store_cost_dollars{");
    }
    out
}

/// What happened between two readings of [`calls`].
fn describe_calls(net: &Net, before: &[f64], after: &[f64]) -> String {
    let ops = ops(net);
    let d: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let by_op: Vec<String> = ops
        .iter()
        .zip(&d)
        .map(|(op, n)| format!("{n:.0} {}", op.to_uppercase()))
        .collect();
    format!(
        "{:.0} calls ({}), {:.0} bytes {}, ${:.5}",
        d[..ops.len()].iter().sum::<f64>(),
        by_op.join(", "),
        d[ops.len()],
        ops[0],
        d[ops.len() + 1]
    )
}

/// A 20 MB file served from namespace a by each node in turn, fetched by B.
fn userspace(mut net: Net) {
    let runs: usize = std::env::var("MEASURE_RUNS").map_or(5, |n| n.parse().unwrap());
    let mb: usize = std::env::var("MEASURE_MB").map_or(20, |n| n.parse().unwrap());
    let dir = std::env::temp_dir().join(format!("tunnel-measure-userspace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("file");
    run(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", file.display()),
            "bs=1M",
            &format!("count={mb}"),
        ],
    );
    let digest = |out: &Output| {
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_owned()
    };
    let expected = digest(&run("sha256sum", &[file.to_str().unwrap()]));
    // The userspace node exposes 127.0.0.1:8000; the kernel node's server listens on [::]:8080.
    let mut servers: Vec<std::process::Child> = [["127.0.0.1", "8000"], ["::", "8080"]]
        .iter()
        .map(|[bind, port]| {
            Command::new("ip")
                .args(["netns", "exec", net.ns(0), "python3", "-m", "http.server"])
                .args(["--bind", bind, "--directory", dir.to_str().unwrap(), port])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    const NODE_D: u64 = 0xd;
    net.up(0, NODE_A, &["--userspace", "--expose", "8000"]);
    net.up(0, NODE_D, &[]);
    net.up(1, NODE_B, &[]);
    let urls = [
        format!("http://[{}]:8000/file", node_addr(NODE_A)),
        format!("http://[{}]:8080/file", node_addr(NODE_D)),
    ];
    let mut seconds = [Vec::new(), Vec::new()];
    for round in 0..runs {
        for (i, url) in urls.iter().enumerate() {
            let started = std::time::Instant::now();
            let out = net.exec(
                1,
                &[
                    "sh",
                    "-c",
                    &format!(
                        "curl -sS -g --retry 5 --retry-connrefused --max-time 600 {url} | sha256sum"
                    ),
                ],
            );
            let took = started.elapsed().as_secs_f64();
            assert_eq!(digest(&out), expected, "{}", net.logs());
            println!(
                "round {round}: {} {mb} MB in {took:.2} s ({:.1} MB/s)",
                ["userspace", "kernel TUN"][i],
                mb as f64 / took
            );
            seconds[i].push(took);
        }
    }
    // Peak memory of each node's process, as a function's memory size has to hold it: A, the
    // userspace node, was started first, D second.
    let peak_kib = |tunnel: &Tunnel| {
        let status = std::fs::read_to_string(format!("/proc/{}/status", tunnel.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    };
    let (a_peak, d_peak) = (peak_kib(&net.tunnels[0]), peak_kib(&net.tunnels[1]));
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (user, kernel) = (median(&mut seconds[0]), median(&mut seconds[1]));
    println!(
        "{mb} MB, median of {runs}: userspace {user:.2} s ({:.1} MB/s), kernel TUN {kernel:.2} s \
         ({:.1} MB/s); userspace/kernel throughput {:.2}; peak memory userspace {a_peak:?} KiB, \
         kernel TUN {d_peak:?} KiB",
        mb as f64 / user,
        mb as f64 / kernel,
        kernel / user,
    );
    for server in &mut servers {
        let _ = server.kill();
        let _ = server.wait();
    }
    drop(net);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Where a round trip goes: each node's calls by kind, and its bundles' age, median and 99th
/// percentile in milliseconds over the exporter's last minute or so.
fn latencies(net: &Net) -> String {
    let ops = ops(net);
    let mut out = Vec::new();
    for side in [0, 1] {
        let node = [NODE_A, NODE_B][side];
        let q = |name: &str, labels: &str| {
            let at =
                |q: &str| net.metric(side, &format!("{name}{{{labels}quantile=\"{q}\"}}")) * 1e3;
            format!("{:.0}/{:.0}", at("0.5"), at("0.99"))
        };
        let mut parts: Vec<String> = ops
            .iter()
            .map(|kind| {
                let labels = format!("node=\"{node:016x}\",kind=\"{kind}\",");
                format!("{kind} {}", q("tunnel_store_call_seconds", &labels))
            })
            .collect();
        parts.push(format!(
            "bundle age {}",
            q("bundler_bundle_age_seconds", "bundler=\"tunnel-send\",")
        ));
        out.push(format!(
            "{} {}",
            ["sender", "receiver"][side],
            parts.join(", ")
        ));
    }
    format!("p50/p99 ms: {}", out.join("; "))
}

/// The bulk transfer alone, several times: throughput, calls and dollars per GiB.
fn transfers(mut net: Net) {
    let runs: usize = std::env::var("MEASURE_RUNS").map_or(5, |n| n.parse().unwrap());
    let mb: usize = std::env::var("MEASURE_MB").map_or(100, |n| n.parse().unwrap());
    let n_ops = ops(&net).len();
    // More `tunnel up` flags for both nodes, to compare settings (`--bulk-polls 0`).
    let extra = std::env::var("MEASURE_ARGS").unwrap_or_default();
    let extra: Vec<&str> = extra.split_whitespace().collect();
    net.up(0, NODE_A, &extra);
    net.up(1, NODE_B, &extra);
    assert!(ping(&net, 0, NODE_B, 1).status.success());
    // CPU seconds so far of a process (user + system), from /proc (10 ms ticks).
    let cpu = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (ticks(11) + ticks(12)) / 100.0
    };
    let pids = [
        net.tunnels[0].child.id(),
        net.tunnels[1].child.id(),
        std::process::id(),
    ];
    // Why a run is slow: packets the tunnels dropped, and TCP's retransmissions.
    let losses = |net: &Net| {
        let dropped: f64 = (0..2)
            .map(|side| net.metric(side, "tunnel_packets_dropped_total"))
            .sum();
        let nstat = net.exec(0, &["nstat", "-az", "TcpRetransSegs"]);
        let retransmitted: f64 = String::from_utf8_lossy(&nstat.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("TcpRetransSegs"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        (dropped, retransmitted)
    };
    let mut rates = Vec::new();
    for run in 0..runs {
        let lost_before = losses(&net);
        let cpu_before: Vec<f64> = pids.iter().map(|&pid| cpu(pid)).collect();
        let before = calls(&net);
        let transfer = Transfer::start(&net, 0, 1, NODE_B, mb * 1_000_000);
        let (bytes, digest, expected, seconds) = transfer.finish(Duration::from_secs(600));
        assert_eq!((bytes, &digest), (mb * 1_000_000, &expected));
        let after = calls(&net);
        let gib = (mb * 1_000_000) as f64 / f64::from(1u32 << 30);
        println!(
            "run {run}: {mb} MB over TCP in {seconds:.2} s, {:.1} MB/s; {}; {:.1} calls per MB, ${:.5} per GiB",
            mb as f64 / seconds,
            describe_calls(&net, &before, &after),
            (after[..n_ops].iter().sum::<f64>() - before[..n_ops].iter().sum::<f64>()) / mb as f64,
            (after[n_ops + 1] - before[n_ops + 1]) / gib,
        );
        let used: Vec<f64> = pids
            .iter()
            .zip(&cpu_before)
            .map(|(&pid, before)| (cpu(pid) - before) * 1000.0 / mb as f64)
            .collect();
        println!(
            "  CPU per MB: sender's tunnel {:.1} ms, receiver's tunnel {:.1} ms, the S3 server \
             (this process) {:.1} ms",
            used[0], used[1], used[2]
        );
        println!("  {}", latencies(&net));
        let lost = losses(&net);
        println!(
            "  packets dropped by the tunnels {:.0}, TCP segments retransmitted by the sender {:.0}",
            lost.0 - lost_before.0,
            lost.1 - lost_before.1
        );
        rates.push(mb as f64 / seconds);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "{mb} MB, {runs} runs: median {:.1} MB/s (min {:.1}, max {:.1})",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1]
    );
}

fn main() {
    let mut net = match std::env::var("MEASURE_LINK").as_deref() {
        Ok("cwl") => Net::new_cwl(14),
        Ok("s3") | Err(_) => Net::new(4),
        Ok(other) => panic!("MEASURE_LINK={other}: s3 or cwl"),
    };
    match std::env::var("MEASURE").as_deref() {
        Ok("userspace") => return userspace(net),
        Ok("transfer") => return transfers(net),
        _ => {}
    }
    let n_ops = ops(&net).len();
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
    let ping_calls = describe_calls(&net, &before, &calls(&net));
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
        describe_calls(&net, &before, &after),
        (after[..n_ops].iter().sum::<f64>() - before[..n_ops].iter().sum::<f64>()) / 100.0
    );

    let before = calls(&net);
    thread::sleep(Duration::from_secs(300));
    let idle_calls = describe_calls(&net, &before, &calls(&net));
    let wake = ping(&net, 0, NODE_B, 1);
    println!(
        "after 5 minutes idle ({idle_calls}): first ping {:?} ms",
        round_trips(&wake)
    );
}
