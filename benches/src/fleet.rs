//! The fleet simulation (`costsim --nodes`): many real `tunnels::Node`s, each on its own link,
//! all over one in-memory S3 bucket (`MemoryStore`, with S3's request rates per prefix) or one
//! CloudWatch Logs account (`MemoryLogs`, with the account's read quota), on Tokio's paused
//! clock, under the default policy (`NodeConfig::default()`, `S3LinkConfig::default()`,
//! `CwlLinkConfig::default()`).
//!
//! A run starts its nodes at seeded random moments over the first minute (a fleet does not
//! start in one millisecond), then plays its topology's traffic for the run's duration, then
//! waits up to ten minutes for packets still in flight. Calls and dollars are taken at the end
//! of the traffic and scaled to a day over each node's life.
//!
//! Topologies:
//!
//! - `idle`: no traffic at all.
//! - `hub`: node 0 is a server; every other node is a client that sends it a ping (104 bytes)
//!   every 0.8 to 1.2 s, each answered with a ping, and every 30 to 90 s a fetch instead (a
//!   600-byte request answered by 5 to 50 KB in 1,500-byte segments).
//! - `mesh`: every node talks so to [`MESH_PEERS`] peers drawn at random, in turn.
//! - `probe`: an idle fleet in which, every ten minutes, one node drawn at random pings another:
//!   how long the first packet to an idle node waits as the fleet grows (over CloudWatch Logs,
//!   against the account's read quota).
//!
//! Latency is one-way added latency (from the sender's `send` to the receiver's delivery),
//! counted for the receiving node, in a histogram of 1% wide buckets.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};
use tunnels::link::cwl::{CwlLink, CwlLinkConfig, LogsModel, MemoryLogs};
use tunnels::link::s3::{LatencyModel, MemoryStore, RateLimits, S3Link, S3LinkConfig};
use tunnels::{Link, Node, NodeConfig, Received};

use crate::sim::LinkKind;

/// The peers each node of a mesh talks to.
pub const MESH_PEERS: usize = 3;

/// S3's request rates per prefix a second: PUT-class, GET-class (LIST counted with GET).
pub const S3_PUT_RATE: u32 = 3_500;
/// See [`S3_PUT_RATE`].
pub const S3_GET_RATE: u32 = 5_500;

/// How nodes talk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topology {
    /// No traffic.
    Idle,
    /// Clients of one server.
    Hub,
    /// Each node with a few random peers.
    Mesh,
    /// An idle fleet with a ping every ten minutes between two random nodes.
    Probe,
}

impl Topology {
    /// The topologies `costsim --nodes` runs unless told otherwise.
    pub const DEFAULT: [Topology; 3] = [Topology::Idle, Topology::Hub, Topology::Mesh];

    /// Every topology.
    pub const ALL: [Topology; 4] = [
        Topology::Idle,
        Topology::Hub,
        Topology::Mesh,
        Topology::Probe,
    ];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Topology::Idle => "idle",
            Topology::Hub => "hub",
            Topology::Mesh => "mesh",
            Topology::Probe => "probe",
        }
    }

    /// The topology named `name`.
    pub fn from_name(name: &str) -> Option<Topology> {
        Topology::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// Durations in buckets 1% wide (from 1 µs to hours): a node's latencies in 20 KB, whatever
/// their number. Quantiles read a bucket's upper bound: at most 1% above the true figure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    n: u64,
}

const RATIO: f64 = 1.01;

impl Histogram {
    fn bucket(d: Duration) -> usize {
        let us = d.as_secs_f64() * 1e6;
        if us <= 1.0 {
            0
        } else {
            (us.ln() / RATIO.ln()).ceil() as usize
        }
    }

    fn upper(bucket: usize) -> Duration {
        Duration::from_secs_f64(RATIO.powi(bucket as i32) / 1e6)
    }

    /// Counts one duration.
    pub fn record(&mut self, d: Duration) {
        let b = Self::bucket(d);
        if self.counts.len() <= b {
            self.counts.resize(b + 1, 0);
        }
        self.counts[b] += 1;
        self.n += 1;
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.n += other.n;
    }

    /// Durations counted.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// Whether none was counted.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The duration at quantile `q` (0 to 1), if any was counted.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.n == 0 {
            return None;
        }
        let rank = ((self.n - 1) as f64 * q).round() as u64;
        let mut seen = 0;
        for (b, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen > rank {
                return Some(Self::upper(b));
            }
        }
        None
    }
}

/// What one node of a fleet did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeOutcome {
    /// Calls its link made (retries and throttled calls included), until the traffic ended.
    pub calls: u64,
    /// Read calls among them (CloudWatch Logs' GetLogEvents and FilterLogEvents).
    pub reads: u64,
    /// What they cost, in dollars.
    pub cost: f64,
    /// How long it ran until the traffic ended.
    pub life: Duration,
    /// Packets it sent (its traffic and its answers).
    pub sent: u64,
    /// Packets delivered to it.
    pub delivered: u64,
    /// One-way latency of the packets delivered to it.
    pub latency: Histogram,
}

impl NodeOutcome {
    /// Calls per day.
    pub fn calls_per_day(&self) -> f64 {
        self.calls as f64 * 86_400.0 / self.life.as_secs_f64().max(1e-9)
    }

    /// Dollars per day.
    pub fn cost_per_day(&self) -> f64 {
        self.cost * 86_400.0 / self.life.as_secs_f64().max(1e-9)
    }
}

/// What a fleet did.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetOutcome {
    /// How the nodes talked.
    pub topology: Topology,
    /// The service.
    pub link: LinkKind,
    /// How long the traffic lasted (after the minute the nodes take to start).
    pub duration: Duration,
    /// Every node, node 0 (a hub's server) first.
    pub nodes: Vec<NodeOutcome>,
    /// Every delivered packet's one-way latency.
    pub latency: Histogram,
    /// Calls the service throttled: over a prefix's rate on S3, over the account's read quota
    /// on CloudWatch Logs.
    pub throttled: u64,
    /// What the throttled calls cost (billed as any other; GetLogEvents is free).
    pub throttled_cost: f64,
    /// S3: the busiest prefix's most PUT-class requests in one second, and the prefix.
    pub peak_puts: Option<(String, u32)>,
    /// S3: the busiest prefix's most GET-class requests (LIST included) in one second.
    pub peak_gets: Option<(String, u32)>,
    /// The whole fleet's most calls in one second of the clock (on CloudWatch Logs, read calls:
    /// the account's quota is on those).
    pub peak_per_sec: u64,
    /// The whole fleet's calls a second on average over the run (on CloudWatch Logs, reads).
    pub mean_per_sec: f64,
    /// Wall-clock time the simulation took.
    pub wall: Duration,
}

impl FleetOutcome {
    /// Packets sent.
    pub fn sent(&self) -> u64 {
        self.nodes.iter().map(|n| n.sent).sum()
    }

    /// Packets delivered.
    pub fn delivered(&self) -> u64 {
        self.nodes.iter().map(|n| n.delivered).sum()
    }

    /// Packets sent and never delivered.
    pub fn lost(&self) -> u64 {
        self.sent().saturating_sub(self.delivered())
    }

    /// The nodes in the fleet.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Mean calls per node per day.
    pub fn mean_calls_per_day(&self) -> f64 {
        mean(self.nodes.iter().map(NodeOutcome::calls_per_day))
    }

    /// Mean dollars per node per day.
    pub fn mean_cost_per_day(&self) -> f64 {
        mean(self.nodes.iter().map(NodeOutcome::cost_per_day))
    }

    /// The median and the largest of `f` over the nodes.
    pub fn median_max(&self, f: impl Fn(&NodeOutcome) -> f64) -> (f64, f64) {
        let mut xs: Vec<f64> = self.nodes.iter().map(f).collect();
        xs.sort_by(f64::total_cmp);
        match xs.len() {
            0 => (0.0, 0.0),
            n => (xs[(n - 1) / 2], xs[n - 1]),
        }
    }

    /// The median node's and the worst node's latency at quantile `q`, among nodes that
    /// received something.
    pub fn node_latency(&self, q: f64) -> Option<(Duration, Duration)> {
        let mut xs: Vec<Duration> = self
            .nodes
            .iter()
            .filter_map(|n| n.latency.quantile(q))
            .collect();
        xs.sort();
        let n = xs.len();
        (n > 0).then(|| (xs[(n - 1) / 2], xs[n - 1]))
    }
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// A fleet to simulate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fleet {
    /// Nodes, a hub's server included.
    pub nodes: usize,
    /// How they talk.
    pub topology: Topology,
    /// The service.
    pub link: LinkKind,
    /// How long the traffic lasts.
    pub duration: Duration,
    /// The seed of the traffic, the start times and the service's latencies.
    pub seed: u64,
}

/// The minute over which a fleet's nodes start.
pub const WARMUP: Duration = Duration::from_secs(60);
/// How long packets still in flight at the end are waited for.
pub const DRAIN: Duration = Duration::from_secs(600);

/// Runs `fleet` on a paused clock of its own.
///
/// # Panics
///
/// Panics if the runtime cannot be built, or with fewer than two nodes.
pub fn run(fleet: Fleet) -> FleetOutcome {
    assert!(fleet.nodes >= 2, "a fleet has at least two nodes");
    let wall = std::time::Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a paused runtime");
    let mut outcome = rt.block_on(async {
        let ids = 1..=fleet.nodes as u64;
        match fleet.link {
            LinkKind::S3 => {
                let store = MemoryStore::with_rate_limits(
                    LatencyModel::S3_STANDARD,
                    fleet.seed,
                    RateLimits::s3(S3LinkConfig::default().prefix),
                );
                let links = ids
                    .map(|id| Arc::new(S3Link::new(store.clone(), id, 1, S3LinkConfig::default())))
                    .collect();
                let monitored = store.clone();
                let mut outcome =
                    drive(fleet, links, move || monitored.usage().total_calls()).await;
                outcome.throttled = store.throttled();
                outcome.throttled_cost = S3LinkConfig::default()
                    .prices
                    .cost(&store.throttled_usage());
                let rates = store.prefix_rates();
                outcome.peak_puts = rates
                    .iter()
                    .max_by_key(|(p, r)| (r.peak_puts, std::cmp::Reverse(*p)))
                    .map(|(p, r)| (p.clone(), r.peak_puts));
                outcome.peak_gets = rates
                    .iter()
                    .max_by_key(|(p, r)| (r.peak_gets, std::cmp::Reverse(*p)))
                    .map(|(p, r)| (p.clone(), r.peak_gets));
                outcome
            }
            LinkKind::Cwl => {
                let logs = MemoryLogs::new(LogsModel::CLOUDWATCH, fleet.seed);
                let links = ids
                    .map(|id| {
                        Arc::new(
                            CwlLink::new(logs.clone(), id, 1, CwlLinkConfig::default())
                                .expect("valid settings"),
                        )
                    })
                    .collect();
                let monitored = logs.clone();
                let mut outcome = drive(fleet, links, move || {
                    let usage = monitored.usage();
                    usage.calls("get_log_events") + usage.calls("filter_log_events")
                })
                .await;
                outcome.throttled = logs.throttled();
                // Only GetLogEvents and FilterLogEvents are throttled, and neither is billed
                // per call (CloudWatch Logs bills the bytes ingested).
                outcome.throttled_cost = CwlLinkConfig::default().prices.per_call("get_log_events")
                    * logs.throttled() as f64;
                outcome
            }
        }
    });
    outcome.wall = wall.elapsed();
    outcome
}

/// What a frame asks of its receiver.
const NO_REPLY: u8 = 0;
const PING_REPLY: u8 = 1;
const FETCH_REPLY: u8 = 2;

/// An ICMPv6 echo with 56 bytes of data.
const PING: usize = 104;
/// A request of a fetch.
const REQUEST: usize = 600;
/// A full segment at a 1,500-byte MTU.
const SEGMENT: usize = 1_500;

/// A frame: when it was sent (nanoseconds since `t0`), who sent it, what it asks for.
fn frame(t0: Instant, from: usize, size: usize, reply: u8, segments: u32) -> Bytes {
    let mut f = vec![0u8; size.max(17)];
    let at = Instant::now().duration_since(t0).as_nanos() as u64;
    f[..8].copy_from_slice(&at.to_be_bytes());
    f[8..12].copy_from_slice(&(from as u32).to_be_bytes());
    f[12] = reply;
    f[13..17].copy_from_slice(&segments.to_be_bytes());
    Bytes::from(f)
}

#[derive(Debug, Default)]
struct Tally {
    sent: Vec<u64>,
    delivered: Vec<u64>,
    latency: Vec<Histogram>,
}

/// Sends a frame from node `from` to node `to` (indices), counting it sent.
fn send(nodes: &[Node], tally: &Mutex<Tally>, from: usize, to: usize, frame: Bytes) {
    tally.lock().expect("tally").sent[from] += 1;
    // A frame the node refuses (its buffer full) counts as sent and never delivered.
    let _ = nodes[from].send(to as u64 + 1, frame);
}

/// The peers node `i` of `n` sends to.
fn peers(topology: Topology, i: usize, n: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    match topology {
        Topology::Idle | Topology::Probe => Vec::new(),
        Topology::Hub if i == 0 => Vec::new(),
        Topology::Hub => vec![0],
        Topology::Mesh => {
            let mut peers = Vec::new();
            while peers.len() < MESH_PEERS.min(n - 1) {
                let p = rng.random_range(0..n);
                if p != i && !peers.contains(&p) {
                    peers.push(p);
                }
            }
            peers
        }
    }
}

async fn drive<L: Link>(
    fleet: Fleet,
    links: Vec<Arc<L>>,
    monitored: impl Fn() -> u64 + Send + 'static,
) -> FleetOutcome {
    let n = fleet.nodes;
    let t0 = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(fleet.seed);
    let tally = Arc::new(Mutex::new(Tally {
        sent: vec![0; n],
        delivered: vec![0; n],
        latency: vec![Histogram::default(); n],
    }));

    // Deliveries go to one host task, which records them and answers.
    let (arrived, mut arrivals) = mpsc::unbounded_channel::<(usize, Bytes)>();
    let mut starts: Vec<(Duration, usize)> = (0..n)
        .map(|i| (Duration::from_millis(rng.random_range(0..60_000)), i))
        .collect();
    starts.sort();
    let mut started: Vec<Option<(Node, Instant)>> = (0..n).map(|_| None).collect();
    for (at, i) in starts {
        sleep_until(t0 + at).await;
        let arrived = arrived.clone();
        let node = Node::start(
            Arc::clone(&links[i]),
            NodeConfig {
                seed: Some(fleet.seed ^ (i as u64 + 1)),
                ..NodeConfig::default()
            },
            move |batch: Received| {
                for frame in batch.frames {
                    let _ = arrived.send((i, frame));
                }
            },
        );
        started[i] = Some((node, Instant::now()));
    }
    drop(arrived);
    let (nodes, born): (Vec<Node>, Vec<Instant>) =
        started.into_iter().map(|s| s.expect("started")).unzip();
    let nodes = Arc::new(nodes);
    sleep_until(t0 + WARMUP).await;

    let host = tokio::spawn({
        let (nodes, tally) = (Arc::clone(&nodes), Arc::clone(&tally));
        async move {
            while let Some((to, f)) = arrivals.recv().await {
                let at = Duration::from_nanos(u64::from_be_bytes(f[..8].try_into().expect("8")));
                let from = u32::from_be_bytes(f[8..12].try_into().expect("4")) as usize;
                let latency = Instant::now().duration_since(t0 + at);
                {
                    let mut tally = tally.lock().expect("tally");
                    tally.delivered[to] += 1;
                    tally.latency[to].record(latency);
                }
                match f[12] {
                    PING_REPLY => send(&nodes, &tally, to, from, frame(t0, to, PING, NO_REPLY, 0)),
                    FETCH_REPLY => {
                        let segments = u32::from_be_bytes(f[13..17].try_into().expect("4"));
                        for _ in 0..segments {
                            send(
                                &nodes,
                                &tally,
                                to,
                                from,
                                frame(t0, to, SEGMENT, NO_REPLY, 0),
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
    });

    // The whole fleet's calls (or reads) a second.
    let monitor = tokio::spawn(async move {
        let mut peak = 0;
        let mut last = monitored();
        let mut tick =
            tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = monitored();
            peak = peak.max(now - last);
            last = now;
            if Instant::now() >= t0 + WARMUP + fleet.duration {
                return (peak, now);
            }
        }
    });

    let end = t0 + WARMUP + fleet.duration;
    let mut traffic = Vec::new();
    for i in 0..n {
        let peers = peers(fleet.topology, i, n, &mut rng);
        if peers.is_empty() {
            continue;
        }
        let (nodes, tally) = (Arc::clone(&nodes), Arc::clone(&tally));
        let mut rng = ChaCha8Rng::seed_from_u64(fleet.seed.wrapping_mul(31) ^ (i as u64 + 1));
        traffic.push(tokio::spawn(async move {
            let mut k = 0;
            let mut next_fetch = Instant::now() + Duration::from_secs(rng.random_range(30..90));
            loop {
                sleep(Duration::from_millis(rng.random_range(800..1_200))).await;
                if Instant::now() >= end {
                    return;
                }
                let peer = peers[k % peers.len()];
                k += 1;
                let f = if Instant::now() >= next_fetch {
                    next_fetch += Duration::from_secs(rng.random_range(30..90));
                    // 5 to 50 KB.
                    frame(t0, i, REQUEST, FETCH_REPLY, rng.random_range(4..34))
                } else {
                    frame(t0, i, PING, PING_REPLY, 0)
                };
                send(&nodes, &tally, i, peer, f);
            }
        }));
    }
    if fleet.topology == Topology::Probe {
        let (nodes, tally) = (Arc::clone(&nodes), Arc::clone(&tally));
        let mut rng = ChaCha8Rng::seed_from_u64(fleet.seed.wrapping_mul(77));
        traffic.push(tokio::spawn(async move {
            loop {
                sleep(Duration::from_secs(600)).await;
                if Instant::now() >= end {
                    return;
                }
                let from = rng.random_range(0..n);
                let to = (from + rng.random_range(1..n)) % n;
                send(
                    &nodes,
                    &tally,
                    from,
                    to,
                    frame(t0, from, PING, PING_REPLY, 0),
                );
            }
        }));
    }

    sleep_until(end).await;
    let (peak_per_sec, monitored_total) = monitor.await.expect("monitor");
    let usage: Vec<(u64, u64, f64)> = links
        .iter()
        .map(|l| {
            let u = l.usage();
            let reads = u.calls("get_log_events") + u.calls("filter_log_events");
            (u.total_calls(), reads, l.cost())
        })
        .collect();
    for t in traffic {
        let _ = t.await;
    }
    // Stragglers: what is still in flight.
    let drain_until = Instant::now() + DRAIN;
    loop {
        let done = {
            let tally = tally.lock().expect("tally");
            tally.sent.iter().sum::<u64>() == tally.delivered.iter().sum::<u64>()
        };
        if done || Instant::now() >= drain_until {
            break;
        }
        sleep(Duration::from_secs(1)).await;
    }
    for node in nodes.iter() {
        node.shutdown().await;
    }
    host.abort();

    let tally = tally.lock().expect("tally");
    let mut latency = Histogram::default();
    let nodes = (0..n)
        .map(|i| {
            latency.merge(&tally.latency[i]);
            NodeOutcome {
                calls: usage[i].0,
                reads: usage[i].1,
                cost: usage[i].2,
                life: end.duration_since(born[i]),
                sent: tally.sent[i],
                delivered: tally.delivered[i],
                latency: tally.latency[i].clone(),
            }
        })
        .collect();
    FleetOutcome {
        topology: fleet.topology,
        link: fleet.link,
        duration: fleet.duration,
        nodes,
        latency,
        throttled: 0,
        throttled_cost: 0.0,
        peak_puts: None,
        peak_gets: None,
        peak_per_sec,
        mean_per_sec: monitored_total as f64 / (WARMUP + fleet.duration).as_secs_f64(),
        wall: Duration::ZERO,
    }
}
