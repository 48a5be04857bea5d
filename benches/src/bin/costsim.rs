//! The cost simulation: replays traffic through the real `cardio`, `bundler`, `wire` and link
//! code on a paused clock and reports what it would cost on S3 Standard or CloudWatch Logs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use benches::fleet::{self, Fleet, Topology};
use benches::sim::{self, LinkKind, Policy};
use benches::traces::{self, Trace};
use benches::{fleet_report, report};
use tunnels::link::cwl::{DEFAULT_READ_RATE, LogsModel};
use tunnels::link::s3::LatencyModel;

/// What would this traffic cost over S3 (or CloudWatch Logs)?
///
/// Replays traffic between two tunnel nodes through the real node code (adaptive heartbeat,
/// bundler, wire format, S3 link) over an in-memory S3 with S3's latency and prices, on a paused
/// clock: a simulated day takes seconds. Prints calls by kind, request dollars per node per day
/// and per GiB, packets delivered and one-way added latency (p50, p99, max) for each trace and
/// policy, then checks the default policy (adaptive) against its budgets. With `--link cwl`, the
/// same over an in-memory CloudWatch Logs (PutLogEvents's limits, the account's read quotas,
/// ingestion priced per GB), against the seed's design (`linklayer`).
///
/// With `--nodes`, a fleet instead: N real nodes on one bucket (with S3's request rates per
/// prefix) or one CloudWatch Logs account (with its read quota), in the topologies `idle`,
/// `hub`, `mesh` and `probe`; per node calls, dollars a day and latency, for the fleet the
/// peak calls a second per prefix and against the account's quota, and the goals it checks
/// (fleet.md). `costsim --nodes 2,100,1000 --topology idle` is an idle fleet growing;
/// `costsim --nodes 1001 --topology hub` a server with a thousand clients.
///
/// Exit status: 0 when every budget checked passed, 1 when one failed, 2 on a bad argument or
/// capture.
#[derive(Debug, Parser)]
#[command(name = "costsim", version)]
struct Args {
    /// Run only this built-in trace (repeatable): idle, ping, ssh, web, bulk, wake, pause.
    #[arg(long = "trace", value_name = "NAME", value_parser = builtin_trace)]
    traces: Vec<String>,

    /// Run only this policy (repeatable): over s3 hoshino, fixed, adaptive, adaptive+budget;
    /// over cwl linklayer, adaptive.
    #[arg(long = "policy", value_name = "NAME", value_parser = policy)]
    policies: Vec<Policy>,

    /// The service: s3 (S3 Standard) or cwl (CloudWatch Logs Standard). Default: s3 (both
    /// with --max-dollars-per-day).
    #[arg(long, value_name = "LINK", value_parser = link)]
    link: Option<LinkKind>,

    /// Replay a capture of your own (pcap or pcapng) instead of the built-in traces: the
    /// capturing host is one node, everyone it talks to the other (in a loopback capture, the
    /// endpoint that sent first, told apart by port).
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,

    /// With --pcap: the tunnel device's MTU. Larger captured packets (a loopback capture's, or
    /// segments merged by the network card) are replayed as the kernel would send them through
    /// a device of this MTU.
    #[arg(long, value_name = "BYTES", default_value_t = benches::pcap::DEFAULT_MTU,
          value_parser = mtu, requires = "pcap")]
    mtu: usize,

    /// The service's latency: s3 (the service's own: S3 Standard's, or CloudWatch Logs' with
    /// its read quotas; `cloudwatch` is the same) or none (a local server without quotas, to
    /// compare with measurements against one).
    #[arg(long, value_name = "MODEL", default_value = "s3", value_parser = latency,
          conflicts_with = "nodes")]
    latency: Latency,

    /// Seal every batch with a network key, as `tunnel up --key-file` does: what sealing
    /// adds to calls and dollars (48 bytes a batch).
    #[arg(long, conflicts_with = "nodes")]
    sealed: bool,

    /// Poll at the speed of the data while it flows in bulk, as `tunnel up --bulk-polls`
    /// does, in our policies (adaptive, adaptive+budget): after each batch of 256 KiB or more,
    /// sent or received, poll every --bulk-gap this many times, and send without waiting for
    /// company meanwhile: what they cost on the built-in traces, or on your capture (--pcap),
    /// against a run without the flag. 0 (the default, as in `tunnel up`): off.
    #[arg(long, value_name = "POLLS", default_value_t = 0)]
    bulk_polls: u32,

    /// The time between bulk polls (see --bulk-polls), as `tunnel up --bulk-gap`.
    #[arg(long, value_name = "DURATION", default_value = "10ms", value_parser = bulk_gap)]
    bulk_gap: Duration,

    /// Simulate fleets of these sizes (comma-separated, a hub's server included) instead of
    /// two nodes: see --topology and --hours.
    #[arg(long, value_name = "N[,N...]", value_delimiter = ',', value_parser = fleet_size)]
    nodes: Vec<usize>,

    /// With --nodes, how the nodes talk (repeatable, or comma-separated): idle (no traffic), hub (every node a
    /// client of node 0, pinging once a second and fetching 5 to 50 KB every minute or so),
    /// mesh (each node so with 3 random peers), probe (idle, and a ping between two random
    /// nodes every ten minutes: the first packet to an idle node). Default: idle, hub, mesh.
    #[arg(long = "topology", value_name = "NAME", value_delimiter = ',', value_parser = topology)]
    topologies: Vec<Topology>,

    /// With --nodes, hours of traffic to simulate (after a minute of nodes starting). Default:
    /// 24 for idle and probe, 0.1 (6 minutes) for hub and mesh.
    #[arg(long, value_name = "HOURS", value_parser = sim_hours)]
    hours: Option<f64>,

    /// Sweep these dollar ceilings per node per day (comma-separated), as `tunnel up
    /// --max-dollars-per-day` sets one: a day of each trace (idle, ping, ssh, web, and bulk as
    /// a GiB a day, 43 MiB every hour; or --trace) under each ceiling, with none, and under the
    /// seed's design, over both links (or --link). Checks that no node spends more than its ceiling in any 24 hours and that
    /// nothing accepted is lost; writes ceiling.md and ceiling.svg (p99 latency against dollars
    /// a day).
    #[arg(long, value_name = "D[,D...]", value_delimiter = ',', value_parser = dollars)]
    max_dollars_per_day: Vec<f64>,

    /// With --nodes, the seed of the traffic, the start times and the service's latency.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "nodes")]
    seed: u64,

    /// Where to write report.md and costsim.svg (fleet.md with --nodes).
    #[arg(long, value_name = "DIR", default_value = "target/costsim")]
    out: PathBuf,
}

/// A positive, finite number of dollars, such as `0.05` or `$1`.
fn dollars(text: &str) -> Result<f64, String> {
    match text.trim().trim_start_matches('$').parse::<f64>() {
        Ok(d) if d > 0.0 && d.is_finite() => Ok(d),
        _ => Err(format!(
            "{text:?} is not a number of dollars above zero (such as 0.05)"
        )),
    }
}

/// A duration above zero such as `10ms` or `0.01` (seconds), as `tunnel up` takes them.
fn bulk_gap(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let gap = match text.parse::<f64>() {
        Ok(seconds) => Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}")),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("{text:?} is not a duration such as 10ms or 0.01: {e}")),
    }?;
    if gap.is_zero() {
        return Err(
            "a gap of 0 would poll without pause: give one above zero, such as 10ms".into(),
        );
    }
    Ok(gap)
}

/// The bulk polls of `--bulk-polls` and `--bulk-gap`.
fn bulk(args: &Args) -> Option<tunnels::node::Bulk> {
    (args.bulk_polls > 0).then(|| tunnels::node::Bulk {
        polls: args.bulk_polls,
        gap: args.bulk_gap,
        ..tunnels::node::Bulk::default()
    })
}

/// The ceiling sweep: a day of each trace under each ceiling, over each link.
fn run_ceilings(args: &Args) -> ExitCode {
    if args.pcap.is_some()
        || !args.policies.is_empty()
        || args.sealed
        || args.latency != Latency::Service
    {
        eprintln!(
            "costsim: --max-dollars-per-day sweeps the built-in traces under ours and the \
             seed's design, with the service's latency: it takes no --pcap, --policy, --sealed \
             or --latency none"
        );
        return ExitCode::from(2);
    }
    let links = match args.link {
        Some(link) => vec![link],
        None => vec![LinkKind::S3, LinkKind::Cwl],
    };
    let traces = benches::ceiling::traces(&args.traces);
    let mut points = Vec::new();
    for &link in &links {
        for trace in &traces {
            points.extend(benches::ceiling::sweep(
                trace,
                link,
                &args.max_dollars_per_day,
                |p, wall| {
                    eprintln!(
                        "simulated {} {} under {} {} in {:.1} s",
                        link.name(),
                        p.trace(),
                        p.outcome.policy.name(),
                        p.outcome
                            .ceiling
                            .map_or_else(|| "with no ceiling".into(), |c| format!("${c} a day")),
                        wall.as_secs_f64()
                    );
                },
            ));
        }
    }
    let checks = benches::ceiling::checks(&points);
    println!("{}", benches::ceiling::table(&points));
    print!("{}", report::check_lines(&checks));
    let (md, svg) = (args.out.join("ceiling.md"), args.out.join("ceiling.svg"));
    if let Err(err) = std::fs::create_dir_all(&args.out)
        .and_then(|()| std::fs::write(&md, benches::ceiling::markdown(&points, &checks)))
        .and_then(|()| std::fs::write(&svg, benches::ceiling::svg(&points)))
    {
        eprintln!("costsim: writing {}: {err}", args.out.display());
        return ExitCode::from(2);
    }
    eprintln!("wrote {} and {}", md.display(), svg.display());
    if checks.iter().all(|c| c.pass) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// 2 to 100,000 nodes.
fn fleet_size(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if (2..=100_000).contains(&n) => Ok(n),
        _ => Err(format!("{text:?} is not a fleet size from 2 to 100000")),
    }
}

fn topology(name: &str) -> Result<Topology, String> {
    Topology::from_name(name).ok_or(format!(
        "no topology named {name:?}: idle, hub, mesh or probe"
    ))
}

/// A positive number of hours, at most a week.
fn sim_hours(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(h) if h > 0.0 && h <= 168.0 => Ok(h),
        _ => Err(format!(
            "{text:?} is not a number of hours above 0 and at most 168"
        )),
    }
}

/// The fleets: every size in every topology. Exit status as for the two-node run.
fn run_fleets(args: &Args) -> ExitCode {
    if args.pcap.is_some() || !args.traces.is_empty() || !args.policies.is_empty() {
        eprintln!(
            "costsim: --nodes runs the default policy over its topologies: it takes no --pcap, \
             --trace or --policy"
        );
        return ExitCode::from(2);
    }
    let topologies = if args.topologies.is_empty() {
        Topology::DEFAULT.to_vec()
    } else {
        args.topologies.clone()
    };
    let mut outcomes = Vec::new();
    for &topology in &topologies {
        for &nodes in &args.nodes {
            let hours = args.hours.unwrap_or(match topology {
                Topology::Idle | Topology::Probe => 24.0,
                Topology::Hub | Topology::Mesh => 0.1,
            });
            let outcome = fleet::run(Fleet {
                nodes,
                topology,
                link: args.link.unwrap_or_default(),
                duration: Duration::from_secs_f64(hours * 3_600.0),
                seed: args.seed,
            });
            eprintln!(
                "simulated {} {} of {nodes} nodes for {hours} h in {:.1} s",
                args.link.unwrap_or_default().name(),
                topology.name(),
                outcome.wall.as_secs_f64()
            );
            outcomes.push(outcome);
        }
    }
    let checks = fleet_report::checks(&outcomes);
    println!("{}", fleet_report::table(&outcomes));
    if let Some(largest) = fleet_report::largest_fleets(&outcomes) {
        println!("{largest}");
    }
    print!("{}", report::check_lines(&checks));
    let path = args.out.join("fleet.md");
    if let Err(err) = std::fs::create_dir_all(&args.out)
        .and_then(|()| std::fs::write(&path, fleet_report::markdown(&outcomes, &checks)))
    {
        eprintln!("costsim: writing {}: {err}", args.out.display());
        return ExitCode::from(2);
    }
    eprintln!("wrote {}", path.display());
    if checks.iter().all(|c| c.pass) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn builtin_trace(name: &str) -> Result<String, String> {
    if traces::builtin().iter().any(|t| t.name == name) {
        Ok(name.to_owned())
    } else {
        Err(format!("no built-in trace named {name:?}"))
    }
}

fn policy(name: &str) -> Result<Policy, String> {
    Policy::from_name(name).ok_or(format!("no policy named {name:?}"))
}

/// 1,280 (IPv6's least) to 65,535 (the wire format's largest frame), as `tunnel up --mtu`.
fn mtu(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1_280..=65_535).contains(&n) => Ok(n),
        _ => Err(format!("{text:?} is not an MTU from 1280 to 65535")),
    }
}

fn link(name: &str) -> Result<LinkKind, String> {
    match name {
        "s3" => Ok(LinkKind::S3),
        "cwl" => Ok(LinkKind::Cwl),
        other => Err(format!("no link named {other:?}: s3 or cwl")),
    }
}

/// The service's own latency, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Latency {
    Service,
    None,
}

fn latency(name: &str) -> Result<Latency, String> {
    match name {
        "s3" | "cloudwatch" => Ok(Latency::Service),
        "none" => Ok(Latency::None),
        other => Err(format!(
            "no latency model named {other:?}: s3, cloudwatch or none"
        )),
    }
}

fn load_pcap(path: &PathBuf, mtu: usize) -> Result<Trace, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let packets = benches::pcap::read(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path
        .file_stem()
        .map_or_else(|| "capture".into(), |s| s.to_string_lossy().into_owned());
    let replay = benches::pcap::replay(&name, &packets, mtu)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if replay.by_port {
        eprintln!(
            "{}: every packet goes from an address to itself (a loopback capture): the two \
             nodes are told apart by TCP or UDP port, node A being the endpoint that sent first",
            path.display()
        );
    }
    if replay.oversized > 0 {
        eprintln!(
            "{}: {} of {} packets are larger than the MTU ({mtu} bytes; --mtu), as in a \
             loopback capture or one with segmentation offload: replayed as {} packets of at \
             most {mtu} bytes, as a TUN device of that MTU would carry them",
            path.display(),
            replay.oversized,
            packets.len(),
            replay.segments
        );
    }
    Ok(replay.trace)
}

fn main() -> ExitCode {
    // Bad arguments exit with 2, as documented.
    let mut args = Args::parse();
    if !args.nodes.is_empty() && !args.max_dollars_per_day.is_empty() {
        eprintln!("costsim: --nodes and --max-dollars-per-day are separate runs: give one");
        return ExitCode::from(2);
    }
    if args.bulk_polls > 0 && (!args.nodes.is_empty() || !args.max_dollars_per_day.is_empty()) {
        eprintln!(
            "costsim: --bulk-polls goes with the two-node runs (the built-in traces or --pcap), \
             not with --nodes or --max-dollars-per-day"
        );
        return ExitCode::from(2);
    }
    if !args.nodes.is_empty() {
        return run_fleets(&args);
    }
    if !args.max_dollars_per_day.is_empty() {
        if !args.topologies.is_empty() || args.hours.is_some() {
            eprintln!("costsim: --topology and --hours go with --nodes");
            return ExitCode::from(2);
        }
        return run_ceilings(&args);
    }
    let link = args.link.unwrap_or_default();
    if !args.topologies.is_empty() || args.hours.is_some() {
        eprintln!("costsim: --topology and --hours go with --nodes");
        return ExitCode::from(2);
    }
    if args.policies.is_empty() {
        args.policies = Policy::of(link).to_vec();
    }
    if let Some(p) = args.policies.iter().find(|p| !Policy::of(link).contains(p)) {
        eprintln!(
            "costsim: policy {} does not run over --link {}: give one of {}",
            p.name(),
            link.name(),
            Policy::of(link)
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::from(2);
    }
    let traces: Vec<Trace> = match &args.pcap {
        Some(path) => match load_pcap(path, args.mtu) {
            Ok(trace) => vec![trace],
            Err(err) => {
                eprintln!("costsim: {err}");
                return ExitCode::from(2);
            }
        },
        None => traces::builtin()
            .into_iter()
            .filter(|t| args.traces.is_empty() || args.traces.contains(&t.name))
            .collect(),
    };

    let mut outcomes = Vec::new();
    for trace in &traces {
        for &policy in &args.policies {
            let started = std::time::Instant::now();
            let sealing = args.sealed.then(|| {
                let keys =
                    tunnels::wire::sealed::Keys::new(tunnels::wire::sealed::Key::generate(), None)
                        .expect("one key");
                std::sync::Arc::new(tunnels::link::Sealing::new(keys, "costsim"))
            });
            let tuning = sim::Tuning {
                sealing,
                bulk: bulk(&args),
            };
            let outcome = match (link, args.latency) {
                (LinkKind::S3, Latency::Service) => {
                    sim::run_tuned_on(trace, policy, LatencyModel::S3_STANDARD, &tuning)
                }
                (LinkKind::S3, Latency::None) => {
                    sim::run_tuned_on(trace, policy, LatencyModel::NONE, &tuning)
                }
                (LinkKind::Cwl, Latency::Service) => {
                    sim::run_cwl_tuned(trace, policy, LogsModel::CLOUDWATCH, &tuning)
                }
                (LinkKind::Cwl, Latency::None) => {
                    sim::run_cwl_tuned(trace, policy, LogsModel::LOCAL, &tuning)
                }
            };
            eprintln!(
                "simulated {} under {} in {:.1} s",
                trace.name,
                policy.name(),
                started.elapsed().as_secs_f64()
            );
            outcomes.push(outcome);
        }
    }

    let checks = match (args.pcap.is_some(), link) {
        (true, _) => Vec::new(),
        (false, LinkKind::S3) => report::checks(&outcomes),
        (false, LinkKind::Cwl) => report::checks_cwl(&outcomes, DEFAULT_READ_RATE),
    };
    if let Some(b) = bulk(&args) {
        println!(
            "With bulk polls (--bulk-polls {} --bulk-gap {}) in adaptive and adaptive+budget: \
             after a batch of {} KiB or more, sent or received.\n",
            b.polls,
            humantime::format_duration(b.gap),
            b.bytes >> 10
        );
    }
    println!("{}", report::table(&outcomes));
    print!("{}", report::check_lines(&checks));

    if let Err(err) = std::fs::create_dir_all(&args.out)
        .and_then(|()| {
            std::fs::write(
                args.out.join("report.md"),
                report::markdown(&outcomes, &checks),
            )
        })
        .and_then(|()| std::fs::write(args.out.join("costsim.svg"), report::svg(&outcomes)))
    {
        eprintln!("costsim: writing {}: {err}", args.out.display());
        return ExitCode::from(2);
    }
    eprintln!(
        "wrote {} and {}",
        args.out.join("report.md").display(),
        args.out.join("costsim.svg").display()
    );
    if checks.iter().all(|c| c.pass) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
