//! The simulation: two nodes, each a real `tunnels::Node` (cardio, bundler, wire, and the S3 or
//! the CloudWatch Logs link) over one in-memory service with its latency, limits and prices, on
//! Tokio's paused clock. A simulated day takes seconds, and every call is counted as the
//! service would bill it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};
use tunnels::link::cwl::{CwlLink, CwlLinkConfig, LogsModel, MemoryLogs, ReadMode};
use tunnels::link::s3::{LatencyModel, MemoryStore, S3Link, S3LinkConfig, Strategy};
use tunnels::link::{Sealing, Usage};
use tunnels::node::Bulk;
use tunnels::wire::text::TextEncoding;
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
    /// The seed of the CloudWatch Logs tunnel (Richard Linklayer): one frame per PutLogEvents
    /// call, at most one call per 200 ms, FilterLogEvents every 250 ms, base64.
    Linklayer,
}

impl Policy {
    /// Every policy, in report order.
    pub const ALL: [Policy; 4] = [
        Policy::Hoshino,
        Policy::Fixed,
        Policy::Adaptive,
        Policy::AdaptiveBudget,
    ];

    /// The policies of a run over CloudWatch Logs, in report order.
    pub const CWL: [Policy; 2] = [Policy::Linklayer, Policy::Adaptive];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Hoshino => "hoshino",
            Policy::Fixed => "fixed",
            Policy::Adaptive => "adaptive",
            Policy::AdaptiveBudget => "adaptive+budget",
            Policy::Linklayer => "linklayer",
        }
    }

    /// The policy named `name`.
    pub fn from_name(name: &str) -> Option<Policy> {
        Policy::ALL
            .into_iter()
            .chain([Policy::Linklayer])
            .find(|p| p.name() == name)
    }

    /// The policies a link runs.
    pub fn of(link: LinkKind) -> &'static [Policy] {
        match link {
            LinkKind::S3 => &Policy::ALL,
            LinkKind::Cwl => &Policy::CWL,
        }
    }

    /// The node and link settings of the policy over CloudWatch Logs; `None` for a policy that
    /// is S3's only.
    pub fn cwl_configs(self) -> Option<(NodeConfig, CwlLinkConfig)> {
        match self {
            Policy::Adaptive => Some((NodeConfig::default(), CwlLinkConfig::default())),
            Policy::Linklayer => {
                let one = std::num::NonZeroU32::MIN;
                Some((
                    NodeConfig {
                        min_poll: Duration::from_millis(250),
                        max_poll: Duration::from_millis(250),
                        send_delay: Duration::ZERO,
                        frames_per_send: 1,
                        // A call per 200 ms tick, at most.
                        send_budget: Some(
                            cardio::Budget::new(
                                std::num::NonZeroU32::new(5).expect("nonzero"),
                                Duration::from_secs(1),
                            )
                            .with_burst(one),
                        ),
                        bulk: None,
                        ..NodeConfig::default()
                    },
                    CwlLinkConfig {
                        encoding: TextEncoding::Base64,
                        read: ReadMode::Filter,
                        // The seed has no bell, and reads as often as it likes (the account's
                        // quota of 5 filter calls a second throttles it).
                        ring_every: Duration::from_secs(u32::MAX.into()),
                        read_rate: tunnels::link::cwl::read_rate(1_000.0).expect("a rate"),
                        ..CwlLinkConfig::default()
                    },
                ))
            }
            _ => None,
        }
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
                    bulk: None,
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
                    bulk: None,
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
            // Not an S3 policy; as close as S3 gets: one object per packet.
            Policy::Linklayer => Policy::Hoshino.configs(),
        }
    }
}

/// Which service a run goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LinkKind {
    /// S3 Standard (`MemoryStore`).
    #[default]
    S3,
    /// CloudWatch Logs Standard (`MemoryLogs`).
    Cwl,
}

impl LinkKind {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            LinkKind::S3 => "s3",
            LinkKind::Cwl => "cwl",
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
    /// From the first send to the last delivery.
    pub span: Duration,
    /// How long the run lasted, stragglers included (at least the trace's duration).
    pub elapsed: Duration,
    /// The link the run went through.
    pub link: LinkKind,
    /// Calls the service refused for breaking its limits (CloudWatch Logs' PutLogEvents).
    pub refused: usize,
    /// Calls the service throttled (the account's quotas).
    pub throttled: u64,
    /// The dollar ceiling per node per day the run was under ([`run_ceiling`]).
    pub ceiling: Option<f64>,
    /// Packets the nodes accepted (the rest were held back at the door: a node under its
    /// ceiling with a full buffer, or an offer given up on).
    pub accepted: u64,
    /// The most one node spent over any 24 hours of the run, sampled each minute (measured by
    /// [`run_ceiling`] only; zero otherwise).
    pub worst_day: f64,
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

    /// Packets a node accepted and never delivered: what a ceiling must never cause.
    pub fn lost_accepted(&self) -> u64 {
        self.accepted.saturating_sub(self.delivered)
    }

    /// Packets offered and never accepted (held back by a full buffer until the offer was
    /// given up on).
    pub fn held_back(&self) -> u64 {
        self.sent - self.accepted
    }

    /// Bytes delivered per second, from the first send to the last delivery.
    pub fn throughput(&self) -> f64 {
        self.bytes as f64 / self.span.as_secs_f64().max(1e-3)
    }

    /// Read calls (GetLogEvents and FilterLogEvents) of both nodes.
    pub fn reads(&self) -> u64 {
        self.calls.calls("get_log_events") + self.calls.calls("filter_log_events")
    }

    /// Read calls per node per day.
    pub fn reads_per_node_day(&self) -> f64 {
        self.reads() as f64 / 2.0 * 86_400.0 / self.duration.as_secs_f64()
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
    accepted: bool,
    delivered: Option<Instant>,
}

#[derive(Debug, Default)]
struct Registry {
    packets: Vec<Packet>,
    /// Packets accepted, and delivered (each counted once).
    accepted: u64,
    delivered: u64,
}

impl Registry {
    /// Registers a packet sent at `sent` and returns its id and frame: its id, padded to its
    /// size.
    fn frame_at(&mut self, sent: Instant, size: usize, reply: Option<Reply>) -> (usize, Bytes) {
        let id = self.packets.len();
        self.packets.push(Packet {
            sent,
            size,
            reply,
            accepted: false,
            delivered: None,
        });
        let mut frame = vec![0u8; size.max(8)];
        frame[..8].copy_from_slice(&(id as u64).to_be_bytes());
        (id, Bytes::from(frame))
    }

    fn all_delivered(&self) -> bool {
        self.packets.iter().all(|p| p.delivered.is_some())
    }

    /// Whether every packet accepted was delivered (a delivered packet was accepted first).
    fn all_accepted_delivered(&self) -> bool {
        self.delivered >= self.accepted
    }

    fn accept(&mut self, id: usize) {
        self.packets[id].accepted = true;
        self.accepted += 1;
    }

    fn deliver(&mut self, id: usize) -> Option<Reply> {
        let packet = &mut self.packets[id];
        if packet.delivered.is_none() {
            packet.delivered = Some(Instant::now());
            self.delivered += 1;
        }
        packet.reply
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
    run_tuned_on(trace, policy, latency, &Tuning::default())
}

/// What `costsim`'s flags change in a policy's settings.
#[derive(Debug, Clone, Default)]
pub struct Tuning {
    /// Seal every batch (`costsim --sealed`): what sealing adds to the bill.
    pub sealing: Option<Arc<Sealing>>,
    /// Poll at the speed of the data while it flows in bulk (`costsim --bulk-polls`, as
    /// `tunnel up --bulk-polls`): what [`NodeConfig::bulk`] costs. Our policies only
    /// (`adaptive`, `adaptive+budget`); `fixed` and the seeds' designs poll as they do.
    pub bulk: Option<Bulk>,
}

impl Tuning {
    fn node(&self, policy: Policy, mut node: NodeConfig) -> NodeConfig {
        if matches!(policy, Policy::Adaptive | Policy::AdaptiveBudget) {
            node.bulk = self.bulk;
        }
        node
    }
}

/// The same, with `tuning`'s changes to the policy's settings (`costsim --sealed`,
/// `--bulk-polls`): what sealing, or bulk polls, add to the bill.
///
/// # Panics
///
/// Panics if the runtime cannot be built.
pub fn run_tuned_on(
    trace: &Trace,
    policy: Policy,
    latency: LatencyModel,
    tuning: &Tuning,
) -> Outcome {
    let (node, mut link) = policy.configs();
    link.sealing = tuning.sealing.clone();
    let node = tuning.node(policy, node);
    paused(simulate(trace, policy, node, link, latency))
}

/// Runs `trace` under `policy` over an in-memory CloudWatch Logs under `model` (its limits,
/// quotas and latency), on a paused clock of its own. Under `linklayer`, a run stops offering
/// packets ten minutes after the trace's end (what was not offered counts as sent and not
/// delivered): the seed's design would take days to send a bulk trace.
///
/// # Panics
///
/// Panics if `policy` has no CloudWatch Logs settings (see [`Policy::CWL`]) or the runtime
/// cannot be built.
pub fn run_cwl(trace: &Trace, policy: Policy, model: LogsModel) -> Outcome {
    run_cwl_tuned(trace, policy, model, &Tuning::default())
}

/// The same, with `tuning`'s changes to the policy's settings (`costsim --sealed`,
/// `--bulk-polls`).
///
/// # Panics
///
/// As [`run_cwl`].
pub fn run_cwl_tuned(trace: &Trace, policy: Policy, model: LogsModel, tuning: &Tuning) -> Outcome {
    let (node_config, mut link_config) = policy
        .cwl_configs()
        .unwrap_or_else(|| panic!("{} is not a CloudWatch Logs policy", policy.name()));
    link_config.sealing = tuning.sealing.clone();
    let node_config = tuning.node(policy, node_config);
    paused(async {
        let logs = MemoryLogs::new(model, 42);
        let link = |me| {
            Arc::new(
                CwlLink::new(logs.clone(), me, 1, link_config.clone()).expect("valid settings"),
            )
        };
        let mut outcome = drive(
            trace,
            policy,
            node_config,
            (link(NODE_A), link(NODE_B)),
            Drive {
                // The seed's design would take days to offer a bulk trace; ours is given its
                // time.
                cutoff: Some(if policy == Policy::Linklayer {
                    Duration::from_secs(600)
                } else {
                    Duration::from_secs(86_400)
                }),
                sweep: false,
            },
        )
        .await;
        outcome.link = LinkKind::Cwl;
        outcome.refused = logs.refused().len();
        outcome.throttled = logs.throttled();
        outcome
    })
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
    drive(
        trace,
        policy,
        node_config,
        (link(NODE_A), link(NODE_B)),
        Drive::default(),
    )
    .await
}

/// Runs `trace` over `link` (with the service's own latency, limits and prices) under
/// `policy`, each node under a ceiling of `ceiling` dollars a day when it is given
/// (`NodeConfig::max_dollars_per_day`), as `costsim --max-dollars-per-day` does.
///
/// Unlike [`run`], each packet's latency counts from the time the trace schedules it, so the
/// time it waits to be accepted (a node holding back under its ceiling) is in it; what one
/// node spends is sampled each minute for [`Outcome::worst_day`]; the run waits until every
/// accepted packet is delivered (up to sixty days past the trace's end); and packets not yet
/// accepted an hour after the trace's end are given up on ([`Outcome::held_back`]).
///
/// # Panics
///
/// Panics if `policy` does not run over `link`, `ceiling` is not a positive number, or the
/// runtime cannot be built.
pub fn run_ceiling(trace: &Trace, link: LinkKind, policy: Policy, ceiling: Option<f64>) -> Outcome {
    let how = Drive {
        cutoff: Some(Duration::from_secs(3_600)),
        sweep: true,
    };
    let mut outcome = match link {
        LinkKind::S3 => {
            let (mut node, link) = policy.configs();
            node.max_dollars_per_day = ceiling;
            paused(async {
                let store = MemoryStore::new(LatencyModel::S3_STANDARD, 42);
                let link = |me| Arc::new(S3Link::new(store.clone(), me, 1, link.clone()));
                drive(trace, policy, node, (link(NODE_A), link(NODE_B)), how).await
            })
        }
        LinkKind::Cwl => {
            let (mut node, link_config) = policy
                .cwl_configs()
                .unwrap_or_else(|| panic!("{} is not a CloudWatch Logs policy", policy.name()));
            node.max_dollars_per_day = ceiling;
            paused(async {
                let logs = MemoryLogs::new(LogsModel::CLOUDWATCH, 42);
                let link = |me| {
                    Arc::new(
                        CwlLink::new(logs.clone(), me, 1, link_config.clone())
                            .expect("valid settings"),
                    )
                };
                let mut outcome =
                    drive(trace, policy, node, (link(NODE_A), link(NODE_B)), how).await;
                outcome.refused = logs.refused().len();
                outcome.throttled = logs.throttled();
                outcome
            })
        }
    };
    outcome.link = link;
    outcome.ceiling = ceiling;
    outcome
}

/// How [`drive`] plays a trace.
#[derive(Debug, Clone, Copy, Default)]
struct Drive {
    /// Packets not yet offered this long after the trace's end are given up on (counted as
    /// sent, not accepted and never delivered).
    cutoff: Option<Duration>,
    /// A ceiling run ([`run_ceiling`]): latency from each packet's scheduled time, each node's
    /// spend sampled every minute, and a drain until everything accepted is delivered.
    sweep: bool,
}

/// The most spent over any 24 hours (1,440 minutes) of `costs`, sampled each minute.
fn worst_day(costs: &[f64]) -> f64 {
    let day = 1_440;
    (0..costs.len())
        .map(|end| costs[end] - costs[end.saturating_sub(day)])
        .fold(0.0, f64::max)
}

/// Plays `trace` through two nodes on `links`, as `how` says.
async fn drive<L: Link>(
    trace: &Trace,
    policy: Policy,
    node_config: NodeConfig,
    (link_a, link_b): (Arc<L>, Arc<L>),
    how: Drive,
) -> Outcome {
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
    let accept = {
        let registry = Arc::clone(&registry);
        move |id: usize| registry.lock().expect("registry").accept(id)
    };

    let host = tokio::spawn({
        let registry = Arc::clone(&registry);
        let node = node.clone();
        let accept = accept.clone();
        async move {
            while let Some((side, frame)) = arrivals.recv().await {
                let id = u64::from_be_bytes(frame[..8].try_into().expect("8 bytes"));
                let reply = registry.lock().expect("registry").deliver(id as usize);
                if let Some(reply) = reply {
                    for _ in 0..reply.packets {
                        let (id, frame) = registry.lock().expect("registry").frame_at(
                            Instant::now(),
                            reply.size,
                            None,
                        );
                        if node(side)
                            .send_wait(node_id(side.peer()), frame)
                            .await
                            .is_ok()
                        {
                            accept(id);
                        }
                    }
                }
            }
        }
    });

    let start = Instant::now();
    // What each node has spent, each minute.
    let stop_sampling = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = how.sweep.then(|| {
        let (a, b) = (Arc::clone(&link_a), Arc::clone(&link_b));
        let stop = Arc::clone(&stop_sampling);
        tokio::spawn(async move {
            let mut costs = (vec![a.cost()], vec![b.cost()]);
            let mut minute = tokio::time::interval(Duration::from_secs(60));
            minute.tick().await;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                minute.tick().await;
                costs.0.push(a.cost());
                costs.1.push(b.cost());
            }
            costs
        })
    });
    let give_up = how.cutoff.map(|c| start + trace.duration + c);
    let mut abandoned = 0;
    for send in &trace.sends {
        let at = start + send.at;
        sleep_until(at).await;
        if give_up.is_some_and(|at| Instant::now() >= at) {
            abandoned += 1;
            continue;
        }
        // A ceiling run counts latency from when the trace sends, waiting at the door
        // included; the others from when the packet is offered.
        let sent = if how.sweep { at } else { Instant::now() };
        let (id, frame) = registry
            .lock()
            .expect("registry")
            .frame_at(sent, send.size, send.reply);
        let sender = node(send.from);
        let offer = sender.send_wait(node_id(send.from.peer()), frame);
        let accepted = match give_up {
            Some(at) => matches!(tokio::time::timeout_at(at, offer).await, Ok(Ok(()))),
            None => offer.await.is_ok(),
        };
        if accepted {
            accept(id);
        }
    }
    sleep_until(start + trace.duration).await;
    // Wait for stragglers: up to ten minutes past the end (an hour with a cutoff, as over
    // CloudWatch Logs, where a bulk trace takes longer to read than to write; sixty days under
    // a ceiling, which may take weeks to pay for sending a full buffer).
    let drain = match (how.sweep, how.cutoff) {
        (true, _) => 60 * 86_400,
        (false, Some(_)) => 3_600,
        (false, None) => 600,
    };
    let drain_until = Instant::now() + Duration::from_secs(drain);
    let done = |r: &Registry| {
        if how.sweep {
            r.all_accepted_delivered()
        } else {
            r.all_delivered()
        }
    };
    // A ceiling run looks each minute: it may wait weeks.
    let look = Duration::from_secs(if how.sweep { 60 } else { 1 });
    while !done(&registry.lock().expect("registry")) && Instant::now() < drain_until {
        sleep(look).await;
    }

    drop(node);
    for node in [&node_a, &node_b] {
        node.shutdown().await;
    }
    host.abort();
    let elapsed = Instant::now() - start;
    let worst = match sampler {
        Some(sampler) => {
            // The sampler's next minute sees the calls of the shutdown, and is its last.
            stop_sampling.store(true, std::sync::atomic::Ordering::Relaxed);
            let (a, b) = sampler.await.expect("the sampler");
            worst_day(&a).max(worst_day(&b))
        }
        None => 0.0,
    };

    let span = registry
        .lock()
        .expect("registry")
        .packets
        .iter()
        .filter_map(|p| p.delivered)
        .max()
        .map_or(Duration::ZERO, |last| last - start);
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
        sent: registry.packets.len() as u64 + abandoned,
        delivered,
        bytes,
        latencies,
        span,
        elapsed,
        link: LinkKind::S3,
        refused: 0,
        throttled: 0,
        ceiling: None,
        accepted: registry.accepted,
        worst_day: worst,
    }
}
