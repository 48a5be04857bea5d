//! The simulation: two nodes, each a real `tunnels::Node` (cardio, bundler, wire, S3 link) over
//! one in-memory store with S3's latency and prices, on Tokio's paused clock. A simulated day
//! takes seconds, and every call is counted as S3 would bill it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};
use tunnels::link::Usage;
use tunnels::link::s3::{LatencyModel, MemoryStore, S3Link, S3LinkConfig, Strategy};
use tunnels::{Link, Node, NodeConfig, Received};

use crate::traces::{Reply, Side, Trace};

/// How a pair of nodes polls and sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// The seed's design: LIST every 500 ms, one object per packet.
    Hoshino,
    /// Poll every 500 ms, with bundling and probing.
    Fixed,
    /// Ours, the default: adaptive polling, bundling, probing.
    Adaptive,
    /// Ours with a budget of polls: a hard ceiling on what an idle or busy node spends.
    AdaptiveBudget,
}

impl Policy {
    /// Every policy, in report order.
    pub const ALL: [Policy; 4] = [
        Policy::Hoshino,
        Policy::Fixed,
        Policy::Adaptive,
        Policy::AdaptiveBudget,
    ];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Hoshino => "hoshino",
            Policy::Fixed => "fixed",
            Policy::Adaptive => "adaptive",
            Policy::AdaptiveBudget => "adaptive+budget",
        }
    }

    /// The policy named `name`.
    pub fn from_name(name: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The node and link settings of the policy.
    pub fn configs(self) -> (NodeConfig, S3LinkConfig) {
        let fixed = Duration::from_millis(500);
        match self {
            Policy::Hoshino => (
                NodeConfig {
                    min_poll: fixed,
                    max_poll: fixed,
                    send_delay: Duration::ZERO,
                    frames_per_send: 1,
                    ..NodeConfig::default()
                },
                S3LinkConfig {
                    strategy: Strategy::List,
                    // Hoshino has no bell; ours rings once, at the start.
                    ring_every: Duration::from_secs(u32::MAX.into()),
                    ..S3LinkConfig::default()
                },
            ),
            Policy::Fixed => (
                NodeConfig {
                    min_poll: fixed,
                    max_poll: fixed,
                    ..NodeConfig::default()
                },
                S3LinkConfig::default(),
            ),
            Policy::Adaptive => (NodeConfig::default(), S3LinkConfig::default()),
            Policy::AdaptiveBudget => (
                NodeConfig {
                    poll_budget: Some(tunnels::node::DEFAULT_POLL_BUDGET),
                    ..NodeConfig::default()
                },
                S3LinkConfig::default(),
            ),
        }
    }
}

/// What a run of a trace under a policy cost and how it went, for both nodes together.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The trace's name.
    pub trace: String,
    /// The policy.
    pub policy: Policy,
    /// How long the trace lasts.
    pub duration: Duration,
    /// Calls and bytes by kind (put, get, list, delete), of both nodes.
    pub calls: Usage,
    /// What the calls cost, in dollars.
    pub cost: f64,
    /// Packets sent, replies included.
    pub sent: u64,
    /// Packets delivered.
    pub delivered: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// One-way added latency of each delivered packet, sorted.
    pub latencies: Vec<Duration>,
}

impl Outcome {
    /// Request dollars per day, per node.
    pub fn per_node_day(&self) -> f64 {
        self.cost / 2.0 * 86_400.0 / self.duration.as_secs_f64()
    }

    /// Calls per day, per node.
    pub fn calls_per_node_day(&self) -> f64 {
        self.calls.total_calls() as f64 / 2.0 * 86_400.0 / self.duration.as_secs_f64()
    }

    /// Request dollars per GiB delivered, if anything was.
    pub fn per_gib(&self) -> Option<f64> {
        (self.bytes > 0).then(|| self.cost / (self.bytes as f64 / (1u64 << 30) as f64))
    }

    /// Packets sent and never delivered.
    pub fn lost(&self) -> u64 {
        self.sent - self.delivered
    }

    /// The latency at quantile `q` (0 to 1), if any packet was delivered.
    pub fn latency(&self, q: f64) -> Option<Duration> {
        let n = self.latencies.len();
        (n > 0).then(|| self.latencies[((n - 1) as f64 * q).round() as usize])
    }
}

const NODE_A: u64 = 0xa;
const NODE_B: u64 = 0xb;

fn node_id(side: Side) -> u64 {
    match side {
        Side::A => NODE_A,
        Side::B => NODE_B,
    }
}

/// A packet in flight: when it left, what it asks for, when it arrived.
#[derive(Debug, Clone, Copy)]
struct Packet {
    sent: Instant,
    size: usize,
    reply: Option<Reply>,
    delivered: Option<Instant>,
}

#[derive(Debug, Default)]
struct Registry {
    packets: Vec<Packet>,
}

impl Registry {
    /// Registers a packet and returns its frame: its id, padded to its size.
    fn frame(&mut self, size: usize, reply: Option<Reply>) -> Bytes {
        let id = self.packets.len() as u64;
        self.packets.push(Packet {
            sent: Instant::now(),
            size,
            reply,
            delivered: None,
        });
        let mut frame = vec![0u8; size.max(8)];
        frame[..8].copy_from_slice(&id.to_be_bytes());
        Bytes::from(frame)
    }

    fn all_delivered(&self) -> bool {
        self.packets.iter().all(|p| p.delivered.is_some())
    }
}

/// Runs `trace` under `policy` on a paused clock of its own.
///
/// # Panics
///
/// Panics if the runtime cannot be built.
pub fn run(trace: &Trace, policy: Policy) -> Outcome {
    run_on(trace, policy, LatencyModel::S3_STANDARD)
}

/// Runs `trace` under `policy` over a store with `latency` instead of S3's: `LatencyModel::NONE`
/// predicts a local server.
///
/// # Panics
///
/// Panics if the runtime cannot be built.
pub fn run_on(trace: &Trace, policy: Policy, latency: LatencyModel) -> Outcome {
    let (node, link) = policy.configs();
    paused(simulate(trace, policy, node, link, latency))
}

/// Runs `trace` with settings of your own, reported under `policy`'s name.
///
/// # Panics
///
/// Panics if the runtime cannot be built.
pub fn run_with(
    trace: &Trace,
    policy: Policy,
    node_config: NodeConfig,
    link_config: S3LinkConfig,
) -> Outcome {
    paused(simulate(
        trace,
        policy,
        node_config,
        link_config,
        LatencyModel::S3_STANDARD,
    ))
}

fn paused(simulation: impl Future<Output = Outcome>) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a paused runtime");
    rt.block_on(simulation)
}

async fn simulate(
    trace: &Trace,
    policy: Policy,
    node_config: NodeConfig,
    link_config: S3LinkConfig,
    latency: LatencyModel,
) -> Outcome {
    let store = MemoryStore::new(latency, 42);
    let link = |me| Arc::new(S3Link::new(store.clone(), me, 1, link_config.clone()));
    let (link_a, link_b) = (link(NODE_A), link(NODE_B));
    let registry = Arc::new(Mutex::new(Registry::default()));

    // Deliveries go to a host task that records them and answers.
    let (arrived, mut arrivals) = mpsc::unbounded_channel::<(Side, Bytes)>();
    let deliver = |side: Side| {
        let arrived = arrived.clone();
        move |batch: Received| {
            for frame in batch.frames {
                let _ = arrived.send((side, frame));
            }
        }
    };
    let seeded = |seed| NodeConfig {
        seed: Some(seed),
        ..node_config.clone()
    };
    let node_a = Arc::new(Node::start(
        Arc::clone(&link_a),
        seeded(NODE_A),
        deliver(Side::A),
    ));
    let node_b = Arc::new(Node::start(
        Arc::clone(&link_b),
        seeded(NODE_B),
        deliver(Side::B),
    ));
    drop(arrived);
    let node = {
        let (a, b) = (Arc::clone(&node_a), Arc::clone(&node_b));
        move |side: Side| match side {
            Side::A => Arc::clone(&a),
            Side::B => Arc::clone(&b),
        }
    };

    let host = tokio::spawn({
        let registry = Arc::clone(&registry);
        let node = node.clone();
        async move {
            while let Some((side, frame)) = arrivals.recv().await {
                let id = u64::from_be_bytes(frame[..8].try_into().expect("8 bytes"));
                let reply = {
                    let mut registry = registry.lock().expect("registry");
                    let packet = &mut registry.packets[id as usize];
                    packet.delivered.get_or_insert(Instant::now());
                    packet.reply
                };
                if let Some(reply) = reply {
                    for _ in 0..reply.packets {
                        let frame = registry.lock().expect("registry").frame(reply.size, None);
                        let _ = node(side).send_wait(node_id(side.peer()), frame).await;
                    }
                }
            }
        }
    });

    let start = Instant::now();
    for send in &trace.sends {
        sleep_until(start + send.at).await;
        let frame = registry
            .lock()
            .expect("registry")
            .frame(send.size, send.reply);
        let _ = node(send.from)
            .send_wait(node_id(send.from.peer()), frame)
            .await;
    }
    sleep_until(start + trace.duration).await;
    // Wait for stragglers: up to ten minutes past the end.
    let drain_until = Instant::now() + Duration::from_secs(600);
    while !registry.lock().expect("registry").all_delivered() && Instant::now() < drain_until {
        sleep(Duration::from_secs(1)).await;
    }

    drop(node);
    for node in [&node_a, &node_b] {
        node.shutdown().await;
    }
    host.abort();

    let calls = link_a.usage().merged(&link_b.usage());
    let cost = link_a.cost() + link_b.cost();
    let registry = registry.lock().expect("registry");
    let mut latencies: Vec<Duration> = registry
        .packets
        .iter()
        .filter_map(|p| p.delivered.map(|d| d - p.sent))
        .collect();
    latencies.sort();
    let delivered = latencies.len() as u64;
    let bytes = registry
        .packets
        .iter()
        .filter(|p| p.delivered.is_some())
        .map(|p| p.size as u64)
        .sum();
    Outcome {
        trace: trace.name.clone(),
        policy,
        duration: trace.duration,
        calls,
        cost,
        sent: registry.packets.len() as u64,
        delivered,
        bytes,
        latencies,
    }
}
