//! The README's measurements, beside the cost simulation's predictions: ping round trips while
//! active and after 5 minutes idle, a 100 MB TCP transfer, the calls (and bytes) they took. Not
//! run by `cargo test` (about 7 minutes, root). Over S3 (s3s-fs), or over CloudWatch Logs
//! (`moto_server`) with `MEASURE_LINK=cwl`:
//!
//! ```sh
//! cargo test --release -p tunnel --test measure
//! MEASURE_LINK=cwl cargo test --release -p tunnel --test measure
//! ```

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

fn main() {
    let mut net = match std::env::var("MEASURE_LINK").as_deref() {
        Ok("cwl") => Net::new_cwl(14),
        Ok("s3") | Err(_) => Net::new(4),
        Ok(other) => panic!("MEASURE_LINK={other}: s3 or cwl"),
    };
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
