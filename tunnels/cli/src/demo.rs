//! `tunnel demo`: two nodes over an in-process S3-compatible server, pinging.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use tokio::sync::mpsc;
use tunnels::link::Usage;
use tunnels::link::s3::local::LocalS3;
use tunnels::link::s3::{S3Link, S3LinkConfig, S3Store};
use tunnels::net::ip::{self, Ipv6};
use tunnels::node::{Node, NodeConfig};
use tunnels::{Link, NodeId, Received};

use crate::{NETWORK, parse_duration};

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Echo requests to send.
    #[arg(long, default_value_t = 10)]
    count: u16,
    /// Time between echo requests (such as 500ms, 1s, 2m).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// How long to stay idle after the pings, measuring what idling costs.
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    idle: Duration,
    /// Directory for the local server's bucket [default: a new one under the system's temporary
    /// directory, removed at the end].
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// How often the idle phase says where it is: every 5 s, or every second for a short one.
fn progress_step(idle: Duration) -> Duration {
    if idle < Duration::from_secs(10) {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    }
}

/// Waits until `until` after `started`, printing a line every [`progress_step`]: the seconds
/// idle so far, the calls both nodes made so far and the current poll interval.
async fn idle_until(
    started: tokio::time::Instant,
    until: Duration,
    idle: Duration,
    links: &[&S3Link<S3Store>],
    node: &Node,
) {
    let step = progress_step(idle);
    loop {
        let elapsed = started.elapsed();
        if elapsed >= until {
            return;
        }
        // The next whole step, or the end of this stretch.
        let next = Duration::from_secs((elapsed.as_secs() / step.as_secs() + 1) * step.as_secs());
        if next > until {
            tokio::time::sleep_until(started + until).await;
            return;
        }
        tokio::time::sleep_until(started + next).await;
        if next >= idle {
            return;
        }
        println!(
            "  idle {}/{} s: {} calls so far, polling every {:.1} s",
            next.as_secs(),
            idle.as_secs(),
            usage(links).total_calls(),
            node.heart().interval().as_secs_f64()
        );
    }
}

const NODE_A: NodeId = 0xa;
const NODE_B: NodeId = 0xb;
const BUCKET: &str = "tunnel-demo";

/// A directory removed at the end, unless the user chose it.
struct DemoDir {
    path: PathBuf,
    remove: bool,
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The calls of both links.
fn usage(links: &[&S3Link<S3Store>]) -> Usage {
    links
        .iter()
        .fold(Usage::new(), |total, link| total.merged(&link.usage()))
}

pub(crate) async fn demo(args: DemoArgs) -> Result<(), String> {
    // The pings, the last reply's wait, and the idle phase.
    let about = args.interval * u32::from(args.count) + Duration::from_secs(2) + args.idle;
    println!(
        "tunnel demo: {} pings {:?} apart, then {:?} idle: about {:.0} s in all",
        args.count,
        args.interval,
        args.idle,
        about.as_secs_f64()
    );
    let dir = match args.dir {
        Some(path) => DemoDir {
            path,
            remove: false,
        },
        None => DemoDir {
            path: std::env::temp_dir().join(format!("tunnel-demo-{}", std::process::id())),
            remove: true,
        },
    };
    let server = LocalS3::start(&dir.path, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| {
            format!(
                "starting the local S3 server in {}: {e}",
                dir.path.display()
            )
        })?;
    server
        .create_bucket(BUCKET)
        .map_err(|e| format!("creating the bucket: {e}"))?;
    let store = S3Store::connect(&server.store_config(BUCKET)).await;
    store.check("demo/").await.map_err(|e| e.to_string())?;
    println!(
        "S3-compatible server (s3s-fs) at {}, bucket {BUCKET}, through the AWS SDK",
        server.endpoint_url()
    );

    let link_config = S3LinkConfig {
        prefix: "demo/".into(),
        ..S3LinkConfig::default()
    };
    let link_a = Arc::new(S3Link::new(store.clone(), NODE_A, 1, link_config.clone()));
    let link_b = Arc::new(S3Link::new(store, NODE_B, 1, link_config));
    // The demo idles for a minute, not an hour: it lingers 10 s (not 5 min) after traffic and
    // backs off to 20 s (not 60 s), so that its idle phase shows a node at rest.
    let node_config = NodeConfig {
        linger: Duration::from_secs(10),
        max_poll: Duration::from_secs(20),
        ..NodeConfig::default()
    };
    let (addr_a, addr_b) = (
        ip::node_addr(NETWORK, NODE_A),
        ip::node_addr(NETWORK, NODE_B),
    );
    println!("node A {addr_a}, node B {addr_b}");

    // B answers echo requests as a host would; A collects the replies.
    let (to_b, mut at_b) = mpsc::unbounded_channel::<Bytes>();
    let (to_a, mut at_a) = mpsc::unbounded_channel::<Bytes>();
    let frames = |tx: mpsc::UnboundedSender<Bytes>| {
        move |batch: Received| {
            for frame in batch.frames {
                let _ = tx.send(frame);
            }
        }
    };
    let node_a = Node::start(Arc::clone(&link_a), node_config.clone(), frames(to_a));
    let node_b = Arc::new(Node::start(Arc::clone(&link_b), node_config, frames(to_b)));
    let responder = tokio::spawn({
        let node_b = Arc::clone(&node_b);
        async move {
            while let Some(frame) = at_b.recv().await {
                if let Some(reply) = Ipv6::new_checked(&frame).and_then(|p| ip::echo_reply(&p)) {
                    let _ = node_b.send(NODE_A, Bytes::from(reply));
                }
            }
        }
    });

    let started = Instant::now();
    let mut sent_at = Vec::new();
    let mut rtts = Vec::new();
    let mut ticker = tokio::time::interval(args.interval);
    let data = [0x61u8; 56];
    println!(
        "PING {addr_b}: {} data bytes, every {:?}",
        data.len(),
        args.interval
    );
    let deadline = |sent: usize| sent >= usize::from(args.count);
    loop {
        tokio::select! {
            _ = ticker.tick(), if !deadline(sent_at.len()) => {
                let seq = sent_at.len() as u16 + 1;
                let request = ip::echo_request(addr_a, addr_b, 0x7e57, seq, &data);
                sent_at.push(Instant::now());
                node_a
                    .send(NODE_B, Bytes::from(request))
                    .map_err(|e| format!("sending: {e}"))?;
            }
            Some(frame) = at_a.recv() => {
                let Some(packet) = Ipv6::new_checked(&frame) else { continue };
                let Some(echo) = ip::echo(&packet).filter(|e| !e.request) else { continue };
                let Some(at) = sent_at.get(usize::from(echo.seq).wrapping_sub(1)) else { continue };
                let rtt = at.elapsed();
                rtts.push(rtt);
                println!(
                    "{} bytes from {}: icmp_seq={} time={:.0} ms",
                    frame.len() - ip::HEADER_LEN,
                    packet.src(),
                    echo.seq,
                    rtt.as_secs_f64() * 1e3
                );
                if rtts.len() == usize::from(args.count) {
                    break;
                }
            }
            () = tokio::time::sleep(Duration::from_secs(15)), if deadline(sent_at.len()) => {
                println!("(no reply for 15 s after the last request)");
                break;
            }
        }
    }
    let active = started.elapsed();
    let active_calls = usage(&[&link_a, &link_b]);
    let active_cost = link_a.cost() + link_b.cost();
    rtts.sort();
    println!(
        "\n--- {addr_b} ping statistics ---\n{} packets transmitted, {} received, rtt min/median/max = {:.0}/{:.0}/{:.0} ms",
        sent_at.len(),
        rtts.len(),
        rtts.first().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        rtts.get(rtts.len() / 2)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3),
        rtts.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
    let per_day = |cost: f64, over: Duration| cost / 2.0 * 86_400.0 / over.as_secs_f64();
    println!(
        "active for {:.1} s: {} calls ({}), ${:.6}, projected ${:.4} per node per day",
        active.as_secs_f64(),
        active_calls.total_calls(),
        active_calls,
        active_cost,
        per_day(active_cost, active)
    );

    println!(
        "\nidle for {:?}, measuring what a node at rest costs (a line every {:?})...",
        args.idle,
        progress_step(args.idle)
    );
    let started = tokio::time::Instant::now();
    let links: [&S3Link<S3Store>; 2] = [&link_a, &link_b];
    idle_until(started, args.idle / 2, args.idle, &links, &node_a).await;
    // Measure the second half: the first is the heart slowing down.
    let (before, cost_before) = (usage(&links), link_a.cost() + link_b.cost());
    let window = args.idle - args.idle / 2;
    idle_until(started, args.idle, args.idle, &links, &node_a).await;
    let idle_calls = &usage(&[&link_a, &link_b]) - &before;
    let idle_cost = link_a.cost() + link_b.cost() - cost_before;
    println!(
        "idle, over the last {:.0} s: {} calls ({}), polling every {:.1} s: projected ${:.5} per node per day",
        window.as_secs_f64(),
        idle_calls.total_calls(),
        idle_calls,
        node_a.heart().interval().as_secs_f64(),
        per_day(idle_cost, window)
    );
    println!(
        "(demo settings back off to 20 s; a node with the defaults backs off to 60 s and costs \
         $0.0007 a day idle, see the cost simulation)"
    );

    node_a.shutdown().await;
    responder.abort();
    node_b.shutdown().await;
    server.stop();
    if rtts.len() == usize::from(args.count) {
        Ok(())
    } else {
        Err(format!(
            "{} of {} echo requests were answered",
            rtts.len(),
            args.count
        ))
    }
}
