//! `tunnel up`: a node on a TUN device, its packets carried through an S3 bucket or a
//! CloudWatch Logs log group.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bundler::AddErrorKind;
use bytes::Bytes;
use clap::{Args, ValueEnum};
use metrics::Counter;
use tracing::{debug, error, info, warn};
use tunnels::device::{Device, Tap, Tun, TunConfig};
use tunnels::link::cwl::{CwlLink, CwlLinkConfig, CwlStore, CwlStoreConfig};
use tunnels::link::s3::{S3Link, S3LinkConfig, S3Store, S3StoreConfig, Strategy};
use tunnels::link::{Sealing, StoreError, StoreErrorKind};
use tunnels::net::ether::{Ipv4Net, mac_of};
use tunnels::net::switch::{Answered, Dropped, FromHost, Switch};
use tunnels::net::{Accept, Route, Router};
use tunnels::node::{Node, NodeConfig, NodeStats};
use tunnels::stack::{Protocol, Stack, StackConfig};
use tunnels::wire::sealed::Keys;
use tunnels::{Link, NodeId, Received};

use crate::parse_duration;

#[derive(Debug, Args)]
#[command(after_long_help = METRICS_HELP)]
pub(crate) struct UpArgs {
    /// Where the network lives: an S3 bucket and key prefix (s3://my-bucket/tunnel; the bucket
    /// must exist), or a CloudWatch Logs log group and stream prefix (cwl://tunnel-net/net1;
    /// the group is created with a retention of one day if it is missing). Every node of one
    /// network gives the same. S3 bills per request ($0.005 per 1,000 PUTs, $0.0004 per 1,000
    /// GETs): an idle node costs about $0.0007 a day, bulk about $0.007 per GiB. CloudWatch Logs
    /// bills per byte ingested ($0.50 per GB, text encoding included: about $0.67 per GiB of
    /// packets) and nothing per call, but an account may make only a few reads a second
    /// (--read-rate).
    #[arg(long, value_name = "s3://BUCKET[/PREFIX] | cwl://LOG_GROUP[/STREAM_PREFIX]", value_parser = parse_link)]
    link: LinkUrl,

    /// This node's id, in hexadecimal: the last 64 bits of its address (`--node-id a` gives
    /// fd5e:59b8:f71d:9a3e::a). [default: the first 16 hex digits of /etc/machine-id; nodes
    /// sharing a machine (or a machine-id) need their own]
    #[arg(long, value_name = "HEX", value_parser = parse_node_id)]
    node_id: Option<NodeId>,

    /// The network's /64, shared by all its nodes. Pick your own unique local (fd00::/8) prefix
    /// for a network of your own.
    #[arg(long, value_name = "PREFIX/64", default_value = "fd5e:59b8:f71d:9a3e::/64", value_parser = parse_network)]
    network: Ipv6Addr,

    /// An IPv4 range for the network too, such as 10.77.0.0/16, the same on every node: a
    /// node's IPv4 address is the range plus its node id (`--node-id b` gives 10.77.0.11), so
    /// node ids must fit the range's host bits (a /24 holds ids 1 to fe). IPv4 packets to a
    /// peer's address then travel like IPv6 ones. It must not overlap the host's own routes.
    /// [default: IPv6 only; IPv4 packets are counted and ignored]
    #[arg(long, value_name = "CIDR", value_parser = parse_ipv4)]
    ipv4: Option<Ipv4Net>,

    /// The kind of device. `tun` carries IP packets: IPv6, and IPv4 with --ipv4. `tap` is an
    /// Ethernet device for bridging and software that speaks Ethernet: its MAC address follows
    /// from the node id (02, then the id's low 40 bits: `--node-id b` gives 02:00:00:00:00:0b),
    /// the node answers ARP requests and neighbour solicitations for peers itself (no API
    /// call), carries the IP packet of each frame to a peer's MAC address, and counts and drops
    /// broadcast, multicast and non-IP frames (DHCP, mDNS, router solicitations: each would
    /// cost a call per peer, for answers no peer gives). Nodes of both kinds share a network,
    /// at the same cost per packet.
    #[arg(long, value_enum, default_value_t = Mode::Tun)]
    mode: Mode,

    /// No device and no privileges: the node's addresses (IPv6, and IPv4 with --ipv4) live in
    /// a TCP/IP stack in this process, which answers pings; --expose and --forward connect it
    /// to this machine. For sandboxes, containers and AWS Lambda functions, where a process
    /// can open no TUN device. Each TCP connection gets a 4 MiB window each way.
    #[arg(long, conflicts_with_all = ["mode", "device", "txqueuelen", "tcp_congestion"])]
    userspace: bool,

    /// (--userspace) Connections to this node's PORT (or datagrams, with /udp) go to
    /// 127.0.0.1:PORT on this machine: `--expose 3000` makes a local HTTP server on port
    /// 3000 reachable from the network. A connection the local port refuses is reset.
    /// Repeatable.
    #[arg(long, value_name = "PORT[/udp]", requires = "userspace", value_parser = parse_expose)]
    expose: Vec<(Protocol, u16)>,

    /// (--userspace) Listen on LISTEN on this machine and carry each connection (or each
    /// client's datagrams, with /udp) to PORT of NODE, a node id (`b`) or an address of the
    /// network (`[fd5e:59b8:f71d:9a3e::b]`, or an IPv4 one with --ipv4):
    /// `--forward 127.0.0.1:8080=b:80`. Repeatable.
    #[arg(long, value_name = "LISTEN=NODE:PORT[/udp]", requires = "userspace", value_parser = parse_forward)]
    forward: Vec<Forward>,

    /// (--userspace) A TCP connection whose peer has not answered for this long (data
    /// unacknowledged, or a connect unanswered) is reset. Allow for --max: the first packet
    /// to an idle peer waits up to its poll interval.
    #[arg(long, default_value = "5m", value_parser = parse_duration, requires = "userspace")]
    tcp_timeout: Duration,

    /// (--userspace) Keep-alive probes on idle TCP connections this often, so that one to a
    /// vanished peer times out too (after --tcp-timeout). Each probe is a packet, so an API
    /// call, and keeps both nodes polling fast for --linger. [default: none]
    #[arg(long, value_parser = parse_duration, requires = "userspace")]
    tcp_keepalive: Option<Duration>,

    /// The TUN (or TAP) device to create (`%d` picks the next free number).
    #[arg(long, default_value = "tunnel0")]
    device: String,

    /// The device's MTU, in bytes (1280 to 65535). Objects and log events have no MTU, and
    /// every frame costs 2 bytes on the wire whatever its size: a TUN device's default, 65535,
    /// lets the kernel hand it 64 KB segments, for half the CPU per MB and fewer, larger
    /// objects in bulk transfers (README, "Bulk transfers"). TCP takes the smaller MSS of its
    /// two ends, so connections that leave the far node for a network of 1500 are not
    /// affected; UDP datagrams larger than that network's MTU are fragmented there. A TAP
    /// device's default, 1500, matches the Ethernet segments it is bridged to (its most is
    /// 65521: a frame adds 14 bytes), and the userspace stack's (--userspace) too.
    /// [default: 65535 (tun), 1500 (tap, --userspace)]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1280..=65535))]
    mtu: Option<u32>,

    /// Packets the kernel queues for the device before dropping them. TCP sends a whole window
    /// at once, thousands of packets over this tunnel; Linux's default of 500 dropped part of
    /// every large burst (and cost retransmissions) in the end-to-end measurements.
    #[arg(long, value_name = "PACKETS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    txqueuelen: u32,

    /// The TCP congestion control for connections through the tunnel, set on its route
    /// (`ip route ... congctl`); `system` leaves the system's default. BBR, a common default,
    /// takes the rare short round trips (a poll right after a PUT, ~30 ms) for the path's delay
    /// and keeps a window of a tenth of what the tunnel carries; cubic fills it.
    #[arg(long, value_name = "NAME", default_value = "cubic")]
    tcp_congestion: String,

    #[command(flatten)]
    service: ServiceArgs,

    /// The shortest interval between polls of the inbox, while packets flow. The cost
    /// simulation's ping and ssh traces meet their latency budgets with 200ms. (Over
    /// CloudWatch Logs, --read-rate bounds the polls too.)
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    min: Duration,

    /// The longest interval between polls, when idle. With 60s an idle node costs about $0.0007
    /// a day on S3 and makes about 1,460 free reads a day on CloudWatch Logs (cost simulation,
    /// idle trace); the first packet after a long silence waits up to about this long.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    max: Duration,

    /// A ceiling on polls per day, a fifth of them allowed at once, whatever the traffic: the
    /// bill's upper bound for polling. 100000 polls cost at most $0.08 a day on S3 Standard
    /// with one peer (a poll is one or two GETs; each further active peer adds one), and never bind in the cost simulation's hour-long traces (its adaptive+budget
    /// policy); a node busy for hours then polls about once every 0.9 s. 0 turns it off.
    #[arg(long, value_name = "POLLS", default_value_t = 100_000)]
    budget: u32,

    /// While data flows in bulk (a batch of 256 KiB or more sent or received), poll every
    /// --bulk-gap, this many times after each such batch, instead of every --min: the round
    /// trip of a transfer is then a few calls, not a poll interval. The polls count against
    /// --budget, and show as tunnel_polls_total{kind="bulk"}; while they last, sends do not
    /// wait --send-delay for company. Off (0) by default: over a local S3 server, 20 took a
    /// 100 MB transfer from a median 11.0 to 56.9 MB/s, for $0.0072 per GiB instead of
    /// $0.0046; in the cost simulation it costs 4.6% more on the web trace and 22% more per
    /// GiB on the bulk trace (README, "Bulk transfers"). `costsim --bulk-polls 20 --pcap
    /// FILE` says what they would cost on your own traffic.
    #[arg(long, value_name = "POLLS", default_value_t = 0)]
    bulk_polls: u32,

    /// A ceiling on what this node's calls cost, in dollars a day at the link's prices (S3
    /// Standard per call; CloudWatch Logs per GB ingested): no 24 hours spend more, whatever
    /// the traffic. A fifth of it may go at once, the rest over the day; polls and sends each
    /// have half (all of it to sends over cwl://, whose reads are free). When it binds, polls
    /// wait for money (polling slower) and so do sends (bundles wait longer and grow), until
    /// the node's buffer is full and packets from the device are dropped (buffer_full); nothing
    /// accepted is lost. The metrics tunnel_budget_* say how much is spent and what waits.
    /// For scale: an idle node costs about $0.0007 a day on S3, one polling every 200 ms all
    /// day about $0.17, and a PUT costs $0.000005. What a ceiling buys, from the cost
    /// simulation (`costsim --max-dollars-per-day`, a day of one ping a second, p99 one way):
    /// on s3://, no ceiling spends $0.63 for 0.5 s; $0.30 gives 10 s, $0.10 32 s, $0.03
    /// 2.4 min, $0.01 7 min and $0.001 72 min, for ssh and web as well. On cwl://, which bills bytes ingested, a ceiling
    /// below what the traffic's bytes cost ($0.50 a GB; that ping $0.013 a day) cannot carry
    /// it and holds packets back: set it above, as a guard against a runaway bill.
    /// [default: none]
    #[arg(long, value_name = "DOLLARS", value_parser = parse_dollars)]
    max_dollars_per_day: Option<f64>,

    /// The time between bulk polls (see --bulk-polls), above zero.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    bulk_gap: Duration,

    /// How long a packet waits for company before its batch is sent: longer means fewer,
    /// larger PUTs (or PutLogEvents) and more latency. What piles up while a send to the same
    /// peer is under way goes with the next one whatever this is. 0 sends a bundle as soon as
    /// the previous send to its peer is done, and the first packet of a burst alone; bulk polls
    /// (--bulk-polls) set it to 0 while they last.
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    send_delay: Duration,

    /// How long after the last packet the node keeps polling at most every 400 ms, before it
    /// backs off towards --max: conversations pause and resume.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    linger: Duration,

    /// How the inbox is read (s3:// only): `probe` GETs the next expected object of each recent
    /// sender, `list` LISTs the inbox, `auto` probes while fewer than 12 senders are active.
    /// [default: auto]
    #[arg(long, value_enum)]
    strategy: Option<StrategyArg>,

    /// GetLogEvents calls a second this node may make, on average, five seconds' worth at once
    /// (cwl:// only). Reads are not billed, but an account and region share a quota of them
    /// (10 a second in AWS's published quotas), so every node must stay within its share:
    /// a busy node reads about once a poll per peer, an idle one about once a minute. Bulk
    /// throughput is about 0.8 MB a second per read. Fractions allowed (0.5).
    #[arg(long, value_name = "CALLS", default_value_t = 2.0)]
    read_rate: f64,

    /// The network key file (`tunnel keygen > FILE`, mode 0600), the same on every node: every
    /// batch is then sealed (XChaCha20-Poly1305, 48 bytes a batch), and what does not open
    /// with it, or is older than this node's start, never reaches the device. A second key
    /// line is accepted as well, for rotating keys. The environment variable TUNNEL_KEY may
    /// hold the file's text instead. [default: not sealed: anyone who can read the bucket or
    /// log group sees the packets, and anyone who can write there can inject them]
    #[arg(long, value_name = "FILE", env = "TUNNEL_KEY_FILE")]
    key_file: Option<std::path::PathBuf>,

    /// Serve Prometheus metrics on this address, such as 127.0.0.1:9100 (see below).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
}

const METRICS_HELP: &str = "\
Metrics (--metrics), each labelled with the node id:
  tunnel_packets_total{direction=\"out\"|\"in\"}    packets into the tunnel / delivered to the device
  tunnel_bytes_total{direction}                 their bytes
  tunnel_packets_dropped_total{reason}          buffer_full, too_large, device, send_failed
  tunnel_packets_ignored_total{reason}          not_ipv6, outside_network (not carried)
  tunnel_polls_total{kind}                      polls of the inbox: heartbeat, bulk (--bulk-polls)
  tunnel_packets_rejected_total{reason}         received frames that are not IPv6 (malformed) or
                                                not from their sender to this node (wrong_address)
  tunnel_frames_answered_total{kind}            --mode tap: arp, ndp: questions about peers the
                                                node answered itself, without a call
  tunnel_frames_dropped_total{kind}             --mode tap: frames from the host not carried:
                                                arp, ndp (not for a peer), mld, igmp, dhcp, mdns,
                                                broadcast, multicast (others), not_ip, wrong_mac
                                                (to a peer's address but another MAC), malformed
  tunnel_batches_total{outcome}                 delivered, duplicate, rejected (bad objects), lost,
                                                skipped (before the first batch met of a sender's
                                                life: what this node took before a restart)
                                                unauthentic (--key-file: another key, tampered,
                                                moved, unsealed, or replayed from before start)
  tunnel_store_calls_total{kind}                calls (retries included): on S3 put, get, list,
                                                delete; on CloudWatch Logs put_log_events,
                                                get_log_events, create_log_stream,
                                                create_log_group, put_retention_policy
  tunnel_store_call_seconds{kind}               how long those calls took (a summary: median,
                                                p99...), retries and their waits included
  tunnel_store_bytes_total{kind}                the bytes those calls carried (PutLogEvents: as
                                                ingestion is billed, 26 per event included)
  tunnel_store_retries_total                    calls retried after throttling or failure
  tunnel_store_cost_dollars                     what the calls cost at S3 Standard or CloudWatch
                                                Logs Standard prices (ingestion included)
  tunnel_bells_total                            \"look at your inbox\" signals rung to peers
  tunnel_reads_deferred_total                   CloudWatch Logs reads left for a later poll, the
                                                node's --read-rate being spent
  tunnel_userspace_connections{proto}           --userspace: TCP connections and UDP flows open
  tunnel_userspace_connections_total{proto,direction}  TCP accepted on exposed ports (in),
                                                opened for forwards (out); UDP flows (both)
  tunnel_userspace_refused_total                connections to an exposed port that the local
                                                port refused (the peer got a reset)
  tunnel_userspace_resets_total                 TCP connections ended by a reset or a timeout
  tunnel_userspace_datagrams_dropped_total      UDP datagrams with no room in a socket
  cardio_interval_seconds{heartbeat=\"tunnel-poll\"}  the current interval between polls
  tunnel_budget_dollars_per_day                 --max-dollars-per-day: the ceiling
  tunnel_budget_spent_dollars                   spent over the last 24 hours
  tunnel_budget_spent_ratio                     that, as a share of the ceiling (0 to 1)
  tunnel_budget_available_dollars               in the bucket now, for calls at once
  tunnel_budget_waiting{kind=\"poll\"|\"send\"}     calls waiting for money now: polling slower,
                                                bundles waiting longer
  tunnel_budget_waits_total{kind}               calls that waited for money
  tunnel_budget_wait_seconds_total{kind}        how long they waited (waits that ended)

Logs go to standard error: the tunnel's own lines from info, the AWS SDK's errors only (its
warnings are its provider chains and retries, which the tunnel reports in its own words).
RUST_LOG sets the level (error, warn, info, debug, trace), also per module
(RUST_LOG=info,tunnels=debug; RUST_LOG=info,aws_config=debug shows how credentials were found).";

/// Where the service is and as whom to call it: the flags `tunnel up` and `tunnel check`
/// share.
#[derive(Debug, Args)]
pub(crate) struct ServiceArgs {
    /// An S3-compatible (or CloudWatch Logs-compatible) endpoint, such as
    /// http://127.0.0.1:9000 [default: AWS_ENDPOINT_URL, or AWS's own].
    #[arg(long, value_name = "URL")]
    pub(crate) endpoint_url: Option<String>,

    /// Address the bucket by path (endpoint/bucket/key), as most S3-compatible servers want
    /// (s3:// only).
    #[arg(long)]
    pub(crate) path_style: bool,

    /// The bucket's (or log group's) region [default: AWS_REGION, or the profile's].
    #[arg(long)]
    pub(crate) region: Option<String>,

    /// The AWS profile for credentials and region [default: AWS_PROFILE, or `default`]. The
    /// rest of the standard chain applies too (AWS_ACCESS_KEY_ID, instance roles, ...).
    #[arg(long)]
    pub(crate) profile: Option<String>,
}

impl ServiceArgs {
    /// The S3 store's settings for `bucket`.
    pub(crate) fn s3(&self, bucket: &str) -> S3StoreConfig {
        S3StoreConfig {
            bucket: bucket.to_owned(),
            region: self.region.clone(),
            profile: self.profile.clone(),
            endpoint_url: self.endpoint_url.clone(),
            path_style: self.path_style,
            credentials: None,
        }
    }

    /// The CloudWatch Logs store's settings.
    pub(crate) fn cwl(&self) -> CwlStoreConfig {
        CwlStoreConfig {
            region: self.region.clone(),
            profile: self.profile.clone(),
            endpoint_url: self.endpoint_url.clone(),
            credentials: None,
        }
    }
}

/// `--forward LISTEN=NODE:PORT[/udp]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Forward {
    protocol: Protocol,
    listen: SocketAddr,
    node: ForwardNode,
    port: u16,
}

/// Where a forward goes: a node id or an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ForwardNode {
    Id(NodeId),
    Addr(std::net::IpAddr),
}

/// `TEXT` or `TEXT/udp` (or `/tcp`).
fn split_protocol(text: &str) -> (&str, Protocol) {
    if let Some(rest) = text.strip_suffix("/udp") {
        (rest, Protocol::Udp)
    } else {
        (text.strip_suffix("/tcp").unwrap_or(text), Protocol::Tcp)
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{text:?} is not a port (1 to 65535)")),
        Ok(port) => Ok(port),
    }
}

fn parse_expose(text: &str) -> Result<(Protocol, u16), String> {
    let (port, protocol) = split_protocol(text);
    Ok((protocol, parse_port(port)?))
}

fn parse_forward(text: &str) -> Result<Forward, String> {
    let (text, protocol) = split_protocol(text);
    let (listen, to) = text
        .split_once('=')
        .ok_or("expected LISTEN=NODE:PORT, such as 127.0.0.1:8080=b:80")?;
    let listen: SocketAddr = listen.parse().map_err(|_| {
        format!("{listen:?} is not an address and port to listen on, such as 127.0.0.1:8080")
    })?;
    let (node, port) = to
        .rsplit_once(':')
        .ok_or_else(|| format!("{to:?}: expected NODE:PORT, such as b:80"))?;
    let port = parse_port(port)?;
    let node = match node.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => ForwardNode::Addr(
            v6.parse::<Ipv6Addr>()
                .map_err(|_| format!("{node:?} is not an IPv6 address"))?
                .into(),
        ),
        None => match node.parse::<Ipv4Addr>() {
            Ok(v4) => ForwardNode::Addr(v4.into()),
            Err(_) => ForwardNode::Id(parse_node_id(node).map_err(|_| {
                format!(
                    "{node:?} is neither a node id (hexadecimal) nor an address ([IPv6] or IPv4)"
                )
            })?),
        },
    };
    Ok(Forward {
        protocol,
        listen,
        node,
        port,
    })
}

/// `--mode`: the kind of device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// IP packets.
    Tun,
    /// Ethernet frames.
    Tap,
}

/// The bytes a TAP device's frame adds to its packet: destination, source, EtherType.
const ETHERNET_HEADER: usize = 14;

impl UpArgs {
    /// What clap cannot check: an `Err` is a usage error.
    pub(crate) fn check(&self) -> Result<(), String> {
        // A TAP device's frames carry a 14-byte Ethernet header, and a frame holds at most
        // 65535 bytes on the wire: past 65521, the largest packets could never be sent.
        let most = tunnels::wire::MAX_FRAME_LEN - ETHERNET_HEADER;
        if self.mode == Mode::Tap && !self.userspace && self.mtu() as usize > most {
            return Err(format!(
                "--mtu {} is too large for a TAP device: its frames add a {ETHERNET_HEADER}-byte \
                 Ethernet header, and a frame carries at most {} bytes (--mtu {most} at most)",
                self.mtu(),
                tunnels::wire::MAX_FRAME_LEN
            ));
        }
        // Bulk polls with no gap would go back to back, 20 GETs or more at once per batch.
        if self.bulk_polls > 0 && self.bulk_gap.is_zero() {
            return Err(
                "--bulk-gap 0 would poll without pause: give one above zero, such as \
                        10ms (the default)"
                    .into(),
            );
        }
        Ok(())
    }

    /// `--mtu`, or the device's default: 65535 for a TUN device, 1500 for a TAP device and
    /// the userspace stack.
    fn mtu(&self) -> u32 {
        self.mtu.unwrap_or(match self.mode {
            Mode::Tun if !self.userspace => 65_535,
            _ => 1_500,
        })
    }
}

impl Mode {
    pub(crate) fn device_kind(self) -> &'static str {
        match self {
            Mode::Tun => "TUN",
            Mode::Tap => "TAP",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StrategyArg {
    Auto,
    Probe,
    List,
}

/// `s3://bucket/prefix` or `cwl://group/prefix`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkUrl {
    S3 {
        bucket: String,
        /// "" or ending in `/`.
        prefix: String,
    },
    Cwl {
        group: String,
        /// "" or ending in `/`.
        prefix: String,
    },
}

impl std::fmt::Display for LinkUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            LinkUrl::Cwl { group, prefix } => write!(f, "cwl://{group}/{prefix}"),
        }
    }
}

/// Picks the link from the address's scheme.
pub(crate) fn parse_link(text: &str) -> Result<LinkUrl, String> {
    match text.split_once("://") {
        Some(("s3", rest)) => parse_s3(rest),
        Some(("cwl", rest)) => parse_cwl(rest),
        Some((scheme, _)) => Err(format!(
            "{scheme}:// is not a link this tunnel knows: give s3://BUCKET/PREFIX or \
             cwl://LOG_GROUP/STREAM_PREFIX"
        )),
        None => Err(format!(
            "{text:?} is not an address such as s3://BUCKET/PREFIX or cwl://LOG_GROUP/PREFIX"
        )),
    }
}

/// "" or the prefix with one `/` at its end.
fn slash_prefix(prefix: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    }
}

/// `BUCKET[/PREFIX]` of an `s3://` address.
fn parse_s3(rest: &str) -> Result<LinkUrl, String> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !bucket.starts_with(['.', '-'])
        && !bucket.ends_with(['.', '-']);
    if !valid {
        return Err(format!(
            "{bucket:?} is not a bucket name (3 to 63 lower-case letters, digits, '.' and '-')"
        ));
    }
    Ok(LinkUrl::S3 {
        bucket: bucket.to_owned(),
        prefix: slash_prefix(prefix),
    })
}

/// `LOG_GROUP[/STREAM_PREFIX]` of a `cwl://` address: the group is what comes before the first
/// `/` (so a group whose name holds `/` cannot be named here).
fn parse_cwl(rest: &str) -> Result<LinkUrl, String> {
    let (group, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = (1..=512).contains(&group.len())
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'#'));
    if !valid {
        return Err(format!(
            "{group:?} is not a log group name (1 to 512 letters, digits, '_', '-', '.', '#')"
        ));
    }
    let prefix = slash_prefix(prefix);
    tunnels::link::cwl::layout::check_prefix(&prefix)?;
    Ok(LinkUrl::Cwl {
        group: group.to_owned(),
        prefix,
    })
}

fn parse_ipv4(text: &str) -> Result<Ipv4Net, String> {
    let (addr, len) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not an IPv4 range such as 10.77.0.0/16"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|&n| n <= 32)
        .ok_or_else(|| format!("/{len} is not a prefix length (0 to 32)"))?;
    Ipv4Net::new(addr, len).ok_or_else(|| {
        if len > 30 {
            format!("{text} leaves no room for nodes: give a /30 or larger")
        } else {
            format!("{text} has bits set past the prefix: give the range's first address")
        }
    })
}

/// The host's IPv4 routes (other than a default route) that share an address with `net`, as
/// "DEST/LEN on DEVICE", from `/proc/net/route`.
fn host_routes_overlapping(net: &Ipv4Net) -> Vec<String> {
    let Ok(table) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, mask) = (fields.first()?, fields.get(1)?, fields.get(7)?);
            // Little-endian hex, as the kernel writes them.
            let dest = Ipv4Addr::from(u32::from_str_radix(dest, 16).ok()?.swap_bytes());
            let mask = u32::from_str_radix(mask, 16).ok()?.swap_bytes();
            let len = mask.leading_ones() as u8;
            (len > 0 && net.overlaps(dest, len)).then(|| format!("{dest}/{len} on {iface}"))
        })
        .collect()
}

fn parse_node_id(text: &str) -> Result<NodeId, String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    let id = NodeId::from_str_radix(digits, 16)
        .map_err(|_| format!("{text:?} is not a node id: 1 to 16 hexadecimal digits"))?;
    if id == 0 {
        return Err("node id 0 is the network's own address (subnet-router anycast)".into());
    }
    Ok(id)
}

fn parse_network(text: &str) -> Result<Ipv6Addr, String> {
    let (addr, len) = text.split_once('/').unwrap_or((text, "64"));
    let addr: Ipv6Addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv6 address"))?;
    if len != "64" {
        return Err(format!(
            "the network must be a /64 (node ids are the last 64 bits), not /{len}"
        ));
    }
    if u128::from(addr) & u128::from(u64::MAX) != 0 {
        return Err(format!(
            "{text} has bits set past the /64: give the network, such as {}/64",
            Ipv6Addr::from(u128::from(addr) & !u128::from(u64::MAX))
        ));
    }
    Ok(addr)
}

/// The first 16 hex digits of /etc/machine-id, as the seed's Hoshino does.
fn machine_node_id() -> Result<NodeId, String> {
    const PATH: &str = "/etc/machine-id";
    let text = std::fs::read_to_string(PATH)
        .map_err(|e| format!("reading {PATH} for the node id: {e} (or give --node-id)"))?;
    node_id_of_machine(&text).ok_or_else(|| {
        format!("{PATH} does not start with 16 hexadecimal digits (not zero): give --node-id")
    })
}

/// The node id in a machine-id: its first 16 hex digits.
fn node_id_of_machine(machine_id: &str) -> Option<NodeId> {
    let digits = machine_id.trim().get(..16)?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    NodeId::from_str_radix(digits, 16)
        .ok()
        .filter(|&id| id != 0)
}

/// The `tunnel_packets_*` and `tunnel_bytes_*` counters.
#[derive(Debug)]
struct PacketMetrics {
    packets_out: Counter,
    bytes_out: Counter,
    packets_in: Counter,
    bytes_in: Counter,
    dropped_full: Counter,
    dropped_too_large: Counter,
    dropped_device: Counter,
    dropped_send_failed: Counter,
    /// Polls of the inbox: on the heartbeat, and bulk polls between beats (`--bulk-polls`).
    polls_heartbeat: Counter,
    polls_bulk: Counter,
    ignored_not_ipv6: Counter,
    ignored_outside: Counter,
    rejected_malformed: Counter,
    rejected_address: Counter,
    /// By [`Answered`], in its order.
    answered: Vec<Counter>,
    /// By [`Dropped`], in its order.
    frames_dropped: Vec<Counter>,
}

impl PacketMetrics {
    fn register(me: NodeId) -> PacketMetrics {
        let node = format!("{me:016x}");
        let counter = |name: &'static str, label: &'static str, value: &'static str| metrics::counter!(name, "node" => node.clone(), label => value);
        PacketMetrics {
            packets_out: counter("tunnel_packets_total", "direction", "out"),
            bytes_out: counter("tunnel_bytes_total", "direction", "out"),
            packets_in: counter("tunnel_packets_total", "direction", "in"),
            bytes_in: counter("tunnel_bytes_total", "direction", "in"),
            dropped_full: counter("tunnel_packets_dropped_total", "reason", "buffer_full"),
            dropped_too_large: counter("tunnel_packets_dropped_total", "reason", "too_large"),
            dropped_device: counter("tunnel_packets_dropped_total", "reason", "device"),
            dropped_send_failed: counter("tunnel_packets_dropped_total", "reason", "send_failed"),
            polls_heartbeat: counter("tunnel_polls_total", "kind", "heartbeat"),
            polls_bulk: counter("tunnel_polls_total", "kind", "bulk"),
            ignored_not_ipv6: counter("tunnel_packets_ignored_total", "reason", "not_ipv6"),
            ignored_outside: counter("tunnel_packets_ignored_total", "reason", "outside_network"),
            rejected_malformed: counter("tunnel_packets_rejected_total", "reason", "malformed"),
            rejected_address: counter("tunnel_packets_rejected_total", "reason", "wrong_address"),
            answered: Answered::ALL
                .iter()
                .map(|kind| counter("tunnel_frames_answered_total", "kind", kind.as_str()))
                .collect(),
            frames_dropped: Dropped::ALL
                .iter()
                .map(|kind| counter("tunnel_frames_dropped_total", "kind", kind.as_str()))
                .collect(),
        }
    }
}

/// What the link delivers goes to the device if the router accepts it: an IP packet from its
/// sender's address to this node's; on a TAP device, in a frame from the sender's MAC address.
fn deliver<D: Device>(
    tun: Arc<D>,
    router: Router,
    switch: Option<Arc<Switch>>,
    metrics: Arc<PacketMetrics>,
) -> impl FnMut(Received) + Send + 'static {
    let mut framed = Vec::new();
    move |batch: Received| {
        for frame in batch.frames {
            match router.accept(batch.sender, &frame) {
                Accept::Deliver => {}
                Accept::Malformed => {
                    metrics.rejected_malformed.increment(1);
                    debug!(sender = %router.addr_of(batch.sender), len = frame.len(), "rejected a frame that is not IPv6");
                    continue;
                }
                Accept::WrongAddress => {
                    metrics.rejected_address.increment(1);
                    debug!(sender = %router.addr_of(batch.sender), "rejected a frame with the wrong addresses");
                    continue;
                }
            }
            let written = match &switch {
                None => tun.try_send(&frame),
                Some(switch) => {
                    switch.to_host(batch.sender, &frame, &mut framed);
                    tun.try_send(&framed)
                }
            };
            match written {
                Ok(()) => {
                    metrics.packets_in.increment(1);
                    metrics.bytes_in.increment(frame.len() as u64);
                }
                Err(err) => {
                    metrics.dropped_device.increment(1);
                    debug!(error = %err, "the device did not take a packet");
                }
            }
        }
    }
}

/// The log filter without RUST_LOG: our own lines from `info`, other crates' warnings, and the
/// AWS SDK's errors only: its warnings are its provider chains and retries (a line of a
/// thousand characters when instance metadata is absent), which the tunnel reports itself,
/// in its own words.
pub(crate) const DEFAULT_LOGS: &str =
    "warn,aws=error,tunnel=info,tunnels=info,cardio=info,bundler=info";

pub(crate) fn init_logs() -> Result<(), String> {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let directives = std::env::var("RUST_LOG").unwrap_or_default();
    let filter: Targets = if directives.trim().is_empty() {
        DEFAULT_LOGS.parse()
    } else {
        directives.parse()
    }
    .map_err(|e| format!("RUST_LOG={directives:?}: {e}"))?;
    // Colours only for a terminal: a journal, a file or a function's log would keep the escapes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi),
        )
        .with(filter)
        .try_init()
        .map_err(|e| format!("starting the logs: {e}"))
}

fn store_problem(err: &StoreError, link: &LinkUrl, endpoint: Option<&str>) -> String {
    match link {
        LinkUrl::S3 { bucket, .. } => {
            let endpoint = endpoint.unwrap_or("S3");
            match err.kind() {
                StoreErrorKind::NoSuchBucket => format!(
                    "bucket {bucket:?} does not exist at {endpoint} (create it first, or check \
                     --region): {err}"
                ),
                StoreErrorKind::AccessDenied => format!(
                    "access denied listing {link}: check the credentials (--profile, \
                     AWS_PROFILE, AWS_ACCESS_KEY_ID) and that the policy allows s3:ListBucket \
                     on the prefix and s3:GetObject, s3:PutObject, s3:DeleteObject under it \
                     (README, \"Deploying on AWS\"): {err}"
                ),
                StoreErrorKind::Unavailable | StoreErrorKind::Throttled => {
                    format!("cannot reach {endpoint} for {link}: {err}")
                }
                _ => format!("checking {link} at {endpoint}: {err}"),
            }
        }
        LinkUrl::Cwl { group, .. } => {
            let endpoint = endpoint.unwrap_or("CloudWatch Logs");
            match err.kind() {
                StoreErrorKind::AccessDenied => format!(
                    "access denied on log group {group:?}: check the credentials (--profile, \
                     AWS_PROFILE, AWS_ACCESS_KEY_ID) and that the policy allows \
                     logs:PutLogEvents, logs:GetLogEvents and logs:CreateLogStream on the group \
                     (and logs:CreateLogGroup, logs:PutRetentionPolicy if it may be missing; \
                     README, \"CloudWatch Logs: IAM policy\"): {err}"
                ),
                StoreErrorKind::NotFound => format!(
                    "log group {group:?} does not exist at {endpoint} and could not be created \
                     (check --region, or create it): {err}"
                ),
                StoreErrorKind::Unavailable | StoreErrorKind::Throttled => {
                    format!("cannot reach {endpoint} for {link}: {err}")
                }
                _ => format!("checking {link} at {endpoint}: {err}"),
            }
        }
    }
}

pub(crate) fn device_problem(err: &std::io::Error, mode: Mode, device: &str) -> String {
    let kind = mode.device_kind();
    match err.kind() {
        std::io::ErrorKind::PermissionDenied => format!(
            "no permission to create the {kind} device {device:?}: it needs CAP_NET_ADMIN (run \
             as root, or `setcap cap_net_admin+ep` on the binary): {err}"
        ),
        std::io::ErrorKind::NotFound => format!(
            "no /dev/net/tun to create the {kind} device {device:?} with: load the tun module \
             (`modprobe tun`): {err}"
        ),
        _ => format!("creating the {kind} device {device:?}: {err}"),
    }
}

/// The network's keys: from `file`, or from the environment variable TUNNEL_KEY; none if
/// neither is given.
pub(crate) fn load_keys(file: Option<&std::path::Path>) -> Result<Option<Keys>, String> {
    let (text, from) = match file {
        Some(path) => (
            std::fs::read_to_string(path)
                .map_err(|e| format!("reading the key file {}: {e}", path.display()))?,
            path.display().to_string(),
        ),
        None => match std::env::var("TUNNEL_KEY") {
            Ok(text) if !text.trim().is_empty() => (text, "TUNNEL_KEY".to_owned()),
            _ => return Ok(None),
        },
    };
    Keys::parse(&text)
        .map(Some)
        .map_err(|e| format!("the network key in {from}: {e}"))
}

/// Waits for SIGINT or SIGTERM; returns its name.
async fn stop_signal() -> Result<&'static str, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| format!("signals: {e}"))?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| format!("signals: {e}"))?;
    Ok(tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    })
}

pub(crate) async fn up(args: UpArgs) -> Result<(), String> {
    init_logs()?;
    if args.min.is_zero() || args.min > args.max {
        return Err(format!(
            "--min {:?} must be above zero and at most --max {:?}",
            args.min, args.max
        ));
    }
    let read_rate = tunnels::link::cwl::read_rate(args.read_rate).ok_or_else(|| {
        format!(
            "--read-rate {} must be a number of calls a second above zero",
            args.read_rate
        )
    })?;
    let me = match args.node_id {
        Some(id) => id,
        None => machine_node_id()?,
    };
    // The network's name in every seal: the link's address, the same on every node. (Said
    // in the logs once the link checked out, so that a real problem is the first line.)
    let sealing = load_keys(args.key_file.as_deref())?
        .map(|keys| Arc::new(Sealing::new(keys, args.link.to_string())));
    let sealed = sealing.as_ref().map(|s| s.keys().sealing().id());
    // Before the link exists: it registers its metrics when it is made.
    if let Some(listen) = args.metrics {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(listen)
            .install()
            .map_err(|e| format!("serving metrics on {listen}: {e}"))?;
        info!(%listen, "metrics at http://{listen}/metrics");
    }
    // A new epoch at every start: receivers then expect this node's batches from 0 again.
    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64);
    let problem =
        |e: StoreError| store_problem(&e, &args.link, args.service.endpoint_url.as_deref());
    let no_region =
        || "no region: give --region, or set AWS_REGION or a region in the profile".to_owned();
    match &args.link {
        LinkUrl::S3 { bucket, prefix } => {
            let store = S3Store::connect(&args.service.s3(bucket)).await;
            if store.region().is_none() {
                return Err(no_region());
            }
            let found = store.credentials().await.map_err(|e| e.to_string())?;
            info!(provider = %found.provider, access_key = %found.access_key_id, "credentials");
            store.check(prefix).await.map_err(problem)?;
            let strategy = match args.strategy.unwrap_or(StrategyArg::Auto) {
                StrategyArg::Auto => Strategy::Auto,
                StrategyArg::Probe => Strategy::Probe,
                StrategyArg::List => Strategy::List,
            };
            let link = S3Link::new(
                store,
                me,
                epoch,
                S3LinkConfig {
                    prefix: prefix.clone(),
                    strategy,
                    sealing: sealing.clone(),
                    ..S3LinkConfig::default()
                },
            );
            run(&args, me, sealed, Arc::new(link)).await
        }
        LinkUrl::Cwl { group, prefix } => {
            if args.service.path_style {
                return Err("--path-style is for s3:// links".into());
            }
            if args.strategy.is_some() {
                return Err("--strategy is for s3:// links".into());
            }
            let store = CwlStore::connect(&args.service.cwl()).await;
            if store.region().is_none() {
                return Err(no_region());
            }
            let found = store.credentials().await.map_err(|e| e.to_string())?;
            info!(provider = %found.provider, access_key = %found.access_key_id, "credentials");
            let link = CwlLink::new(
                store,
                me,
                epoch,
                CwlLinkConfig {
                    group: group.clone(),
                    prefix: prefix.clone(),
                    read_rate,
                    sealing: sealing.clone(),
                    ..CwlLinkConfig::default()
                },
            )?;
            link.check().await.map_err(problem)?;
            run(&args, me, sealed, Arc::new(link)).await
        }
    }
}

/// The router and the device (TUN or TAP, by --mode) for the node on `link`, then [`serve`].
async fn run<L: Link>(
    args: &UpArgs,
    me: NodeId,
    sealed: Option<std::num::NonZeroU16>,
    link: Arc<L>,
) -> Result<(), String> {
    match sealed {
        Some(key) => info!(key = format_args!("{key:04x}"), "traffic is sealed"),
        None => warn!(
            "traffic is not sealed: anyone who can read {} sees the packets, and anyone who can \
             write there can inject them (tunnel keygen, --key-file)",
            args.link
        ),
    }
    let network = args.network;
    let mut router = Router::new(network, me);
    if let Some(net) = args.ipv4 {
        // A userspace node's addresses are its own: the host's routes do not see them.
        let overlaps = if args.userspace {
            Vec::new()
        } else {
            host_routes_overlapping(&net)
        };
        if !overlaps.is_empty() {
            return Err(format!(
                "--ipv4 {net} overlaps the host's own routes ({}): packets for those \
                 addresses would be sent two ways; pick another range",
                overlaps.join(", ")
            ));
        }
        let most = (1u64 << (32 - u32::from(net.prefix_len()))) - 2;
        router = router.with_ipv4(net).ok_or_else(|| {
            format!(
                "node id {me:x} has no address in --ipv4 {net}: a /{} holds node ids 1 to \
                 {most:x}; give a larger range or a smaller --node-id",
                net.prefix_len()
            )
        })?;
    }
    let addr = router.addr();
    if u128::from(network) >> 121 != 0x7e {
        warn!(%network, "the network is not a unique local address (fc00::/7)");
    }

    if args.userspace {
        let stack = userspace(args, &router).await?;
        return serve(args, me, link, router, stack, None).await;
    }
    let config = TunConfig {
        name: &args.device,
        addr,
        prefix_len: 64,
        mtu: u16::try_from(args.mtu()).expect("clap keeps --mtu within 1280..=65535"),
        tx_queue_len: args.txqueuelen,
        ipv4: router
            .ipv4_addr()
            .zip(args.ipv4.map(|net| net.prefix_len())),
    };
    let problem = |e| device_problem(&e, args.mode, &args.device);
    match args.mode {
        Mode::Tun => {
            let tun = Tun::create(&config).map_err(problem)?;
            if args.tcp_congestion != "system" {
                let set = tun.set_congestion(&args.tcp_congestion).await;
                congestion_problem(set, tun.name(), &args.tcp_congestion)?;
            }
            serve(args, me, link, router, Arc::new(tun), None).await
        }
        Mode::Tap => {
            let mac = mac_of(me);
            let tap = Tap::create(&config, mac).map_err(problem)?;
            if args.tcp_congestion != "system" {
                let set = tap.set_congestion(&args.tcp_congestion).await;
                congestion_problem(set, tap.name(), &args.tcp_congestion)?;
            }
            let switch = Arc::new(Switch::new(router, mac));
            serve(args, me, link, router, Arc::new(tap), Some(switch)).await
        }
    }
}

/// The userspace stack for `router`'s addresses, its ports exposed and forwarded, and a task
/// that copies its counts into metrics.
async fn userspace(args: &UpArgs, router: &Router) -> Result<Arc<Stack>, String> {
    let mut config = StackConfig::new(router.addr());
    config.ipv4 = router
        .ipv4_addr()
        .zip(router.ipv4_net().map(|n| n.prefix_len()));
    config.mtu = args.mtu() as usize;
    config.tcp_timeout = args.tcp_timeout;
    config.tcp_keepalive = args.tcp_keepalive;
    let stack = Arc::new(Stack::start(config));
    for &(protocol, port) in &args.expose {
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        stack.expose(protocol, port, target);
        info!(port, protocol = protocol.as_str(), %target, "exposed");
    }
    for forward in &args.forward {
        let ip = match forward.node {
            ForwardNode::Id(id) => router.addr_of(id).into(),
            ForwardNode::Addr(ip) => ip,
        };
        let remote = SocketAddr::new(ip, forward.port);
        let listening = stack
            .forward(forward.protocol, forward.listen, remote)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::InvalidInput => format!(
                    "--forward {}: {remote} is not an address of the network {}/64{}",
                    forward.listen,
                    router.network(),
                    router
                        .ipv4_net()
                        .map(|n| format!(" or {n}"))
                        .unwrap_or_default()
                ),
                _ => format!("--forward: listening on {}: {e}", forward.listen),
            })?;
        info!(%listening, protocol = forward.protocol.as_str(), %remote, "forwarding");
    }
    tokio::spawn(watch_stack(Arc::clone(stack.stats()), router.me()));
    Ok(stack)
}

/// A number of dollars, such as `0.05` or `$1`: positive and finite.
fn parse_dollars(text: &str) -> Result<f64, String> {
    match text.trim().trim_start_matches('$').parse::<f64>() {
        Ok(d) if d.is_finite() && d > 0.0 => Ok(d),
        _ => Err(format!(
            "{text:?} is not a number of dollars above zero (such as 0.05)"
        )),
    }
}

/// Copies the dollar ceiling's state into metrics every second.
async fn watch_spend(spend: Arc<tunnels::node::spend::Spend>, me: NodeId) {
    use tunnels::node::spend::Kind;
    let node = format!("{me:016x}");
    let gauge = |name: &'static str| metrics::gauge!(name, "node" => node.clone());
    let (ceiling, spent, ratio, available) = (
        gauge("tunnel_budget_dollars_per_day"),
        gauge("tunnel_budget_spent_dollars"),
        gauge("tunnel_budget_spent_ratio"),
        gauge("tunnel_budget_available_dollars"),
    );
    let kinds = [Kind::Poll, Kind::Send];
    let by_kind = |name: &'static str| kinds.map(|kind| (name, node.clone(), kind.as_str()));
    let waiting = by_kind("tunnel_budget_waiting")
        .map(|(name, node, kind)| metrics::gauge!(name, "node" => node, "kind" => kind));
    let waits = by_kind("tunnel_budget_waits_total")
        .map(|(name, node, kind)| metrics::counter!(name, "node" => node, "kind" => kind));
    let waited = by_kind("tunnel_budget_wait_seconds_total")
        .map(|(name, node, kind)| metrics::gauge!(name, "node" => node, "kind" => kind));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let stats = spend.stats();
        ceiling.set(stats.per_day);
        spent.set(stats.spent_last_day);
        ratio.set(stats.spent_last_day / stats.per_day);
        available.set(stats.available);
        for i in 0..kinds.len() {
            waiting[i].set(f64::from(stats.waiting[i]));
            waits[i].absolute(stats.waits[i]);
            waited[i].set(stats.waited[i].as_secs_f64());
        }
    }
}

/// Copies the userspace stack's counts into metrics every second.
async fn watch_stack(stats: Arc<tunnels::stack::StackStats>, me: NodeId) {
    use std::sync::atomic::Ordering::Relaxed;
    let node = format!("{me:016x}");
    let gauge = |proto: &'static str| metrics::gauge!("tunnel_userspace_connections", "node" => node.clone(), "proto" => proto);
    let total = |proto: &'static str, direction: &'static str| metrics::counter!("tunnel_userspace_connections_total", "node" => node.clone(), "proto" => proto, "direction" => direction);
    let (tcp_open, udp_open) = (gauge("tcp"), gauge("udp"));
    let (tcp_in, tcp_out, udp) = (
        total("tcp", "in"),
        total("tcp", "out"),
        total("udp", "both"),
    );
    let refused = metrics::counter!("tunnel_userspace_refused_total", "node" => node.clone());
    let resets = metrics::counter!("tunnel_userspace_resets_total", "node" => node.clone());
    let dropped =
        metrics::counter!("tunnel_userspace_datagrams_dropped_total", "node" => node.clone());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        tcp_open.set(stats.tcp_open.load(Relaxed) as f64);
        udp_open.set(stats.udp_open.load(Relaxed) as f64);
        tcp_in.absolute(stats.tcp_accepted.load(Relaxed));
        tcp_out.absolute(stats.tcp_connected.load(Relaxed));
        udp.absolute(stats.udp_flows.load(Relaxed));
        refused.absolute(stats.refused.load(Relaxed));
        resets.absolute(stats.resets.load(Relaxed));
        dropped.absolute(stats.udp_dropped.load(Relaxed));
    }
}

/// What setting the congestion control gave, as the error a user can act on.
fn congestion_problem(set: std::io::Result<()>, device: &str, name: &str) -> Result<(), String> {
    set.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "configuring the device {device}: the kernel has no TCP congestion control \
                 {name:?} (see /proc/sys/net/ipv4/tcp_available_congestion_control, or give \
                 --tcp-congestion system): {e}"
            )
        } else {
            format!("configuring the device {device}: {e}")
        }
    })
}

/// The node on `link` and the loops between it and the device, until a signal or the device
/// ends. With a `switch`, the device is a TAP device and frames pass through it.
async fn serve<L: Link, D: Device>(
    args: &UpArgs,
    me: NodeId,
    link: Arc<L>,
    router: Router,
    tun: Arc<D>,
    switch: Option<Arc<Switch>>,
) -> Result<(), String> {
    let addr = router.addr();
    let config = NodeConfig {
        min_poll: args.min,
        max_poll: args.max,
        linger: args.linger,
        poll_budget: NonZeroU32::new(args.budget).map(tunnels::node::poll_budget),
        bulk: (args.bulk_polls > 0).then(|| tunnels::node::Bulk {
            polls: args.bulk_polls,
            gap: args.bulk_gap,
            ..tunnels::node::Bulk::default()
        }),
        max_dollars_per_day: args.max_dollars_per_day,
        send_delay: args.send_delay,
        ..NodeConfig::default()
    };
    let packet_metrics = Arc::new(PacketMetrics::register(me));
    let node = Arc::new(Node::start(
        Arc::clone(&link),
        config,
        deliver(
            Arc::clone(&tun),
            router,
            switch.clone(),
            Arc::clone(&packet_metrics),
        ),
    ));
    info!(
        device = tun.name(),
        mode = if args.userspace { "userspace" } else { args.mode.device_kind() },
        mac = switch.as_ref().map(|_| format_mac(mac_of(me))),
        %addr,
        ipv4 = ?router.ipv4_addr(),
        node = format_args!("{me:016x}"),
        link = %args.link,
        mtu = args.mtu(),
        "up"
    );

    let mut reader = tokio::spawn(read_device(
        Arc::clone(&tun),
        Arc::clone(&node),
        router,
        switch,
        Arc::clone(&packet_metrics),
    ));
    let watcher = tokio::spawn(watch(Arc::clone(node.stats()), Arc::clone(&packet_metrics)));
    let spend_watcher = node
        .spend()
        .map(|spend| tokio::spawn(watch_spend(Arc::clone(spend), me)));

    let outcome = tokio::select! {
        signal = stop_signal() => {
            info!(signal = signal?, "stopping: sending what is pending");
            Ok(())
        }
        read = &mut reader => match read {
            Ok(Err(err)) => Err(format!("reading the device {}: {err}", tun.name())),
            _ => Err(format!("the device {} closed", tun.name())),
        },
    };
    reader.abort();
    watcher.abort();
    let _ = tokio::join!(reader, watcher);
    if let Some(spend) = node.spend() {
        let held = spend.stats().waiting;
        if held.iter().any(|&n| n > 0) {
            info!(
                available = spend.available(),
                "the dollar ceiling is spent: what is queued goes as the budget refills \
                 (a second signal drops it)"
            );
        }
    }
    let stats = Arc::clone(node.stats());
    tokio::select! {
        () = node.shutdown() => {}
        signal = stop_signal() => {
            warn!(signal = signal?, "stopping now: packets still queued are dropped");
        }
    }
    if let Some(watcher) = spend_watcher {
        watcher.abort();
    }
    let count =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    info!(
        frames_sent = count(&stats.frames_sent),
        frames_lost = count(&stats.frames_lost),
        frames_received = count(&stats.frames_received),
        calls = link.usage().total_calls(),
        dollars = link.cost(),
        "down"
    );
    outcome
}

/// Device to link: each packet for another node of the network goes to the bundler. On a TAP
/// device (with a `switch`), questions about peers are answered at once and the IP packet of
/// each frame to a peer is sent.
async fn read_device<D: Device>(
    tun: Arc<D>,
    node: Arc<Node>,
    router: Router,
    switch: Option<Arc<Switch>>,
    metrics: Arc<PacketMetrics>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 65_536];
    loop {
        let n = tun.recv(&mut buf).await?;
        let (route, packet) = match switch.as_deref().map(|s| s.read_frame(&buf[..n])) {
            None => (router.route(&buf[..n]), &buf[..n]),
            Some(FromHost::Packet { route, packet }) => (route, packet),
            Some(FromHost::Answer { kind, reply }) => {
                match tun.try_send(&reply) {
                    Ok(()) => metrics.answered[kind as usize].increment(1),
                    Err(_) => metrics.dropped_device.increment(1),
                }
                continue;
            }
            Some(FromHost::Drop(kind)) => {
                metrics.frames_dropped[kind as usize].increment(1);
                continue;
            }
        };
        let to = match route {
            Route::Node(to) => to,
            Route::NotIpv6 => {
                metrics.ignored_not_ipv6.increment(1);
                continue;
            }
            Route::Outside => {
                metrics.ignored_outside.increment(1);
                continue;
            }
        };
        let len = packet.len() as u64;
        match node.send(to, Bytes::copy_from_slice(packet)) {
            Ok(()) => {
                metrics.packets_out.increment(1);
                metrics.bytes_out.increment(len);
            }
            Err(err) => match err.kind() {
                AddErrorKind::Overflow { .. } => metrics.dropped_full.increment(1),
                AddErrorKind::Oversized { .. } => metrics.dropped_too_large.increment(1),
                // Closed: the node is stopping.
                _ => return Ok(()),
            },
        }
    }
}

/// `02:00:00:00:00:0b`.
fn format_mac(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// Copies the node's counts into metrics every second and logs losses.
async fn watch(stats: Arc<NodeStats>, metrics: Arc<PacketMetrics>) {
    use std::sync::atomic::Ordering::Relaxed;
    let (mut lost, mut poll_errors, mut heartbeat_polls, mut bulk_polls) = (0, 0, 0, 0);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let (now_lost, now_errors) = (
            stats.frames_lost.load(Relaxed),
            stats.poll_errors.load(Relaxed),
        );
        // `polls` counts the bulk ones too (a bulk poll is counted as such a moment earlier).
        let now_bulk = stats.bulk_polls.load(Relaxed);
        let now_heartbeat = stats
            .polls
            .load(Relaxed)
            .saturating_sub(now_bulk)
            .max(heartbeat_polls);
        metrics
            .polls_heartbeat
            .increment(now_heartbeat - heartbeat_polls);
        metrics.polls_bulk.increment(now_bulk - bulk_polls);
        (heartbeat_polls, bulk_polls) = (now_heartbeat, now_bulk);
        if now_lost > lost {
            metrics.dropped_send_failed.increment(now_lost - lost);
            error!(
                frames = now_lost - lost,
                "sends failed after retries: packets lost"
            );
        }
        if now_errors > poll_errors {
            warn!(
                polls = now_errors - poll_errors,
                "polls of the inbox failed; slowing down"
            );
        }
        (lost, poll_errors) = (now_lost, now_errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_parsed_and_checked() {
        let s3 = |bucket: &str, prefix: &str| LinkUrl::S3 {
            bucket: bucket.into(),
            prefix: prefix.into(),
        };
        assert_eq!(
            parse_link("s3://my-bucket/tunnel/net1/"),
            Ok(s3("my-bucket", "tunnel/net1/"))
        );
        assert_eq!(parse_link("s3://my-bucket"), Ok(s3("my-bucket", "")));
        assert_eq!(parse_link("s3://my-bucket/"), Ok(s3("my-bucket", "")));
        let cwl = |group: &str, prefix: &str| LinkUrl::Cwl {
            group: group.into(),
            prefix: prefix.into(),
        };
        assert_eq!(parse_link("cwl://tunnel-net"), Ok(cwl("tunnel-net", "")));
        assert_eq!(
            parse_link("cwl://tunnel_net.1/a/b"),
            Ok(cwl("tunnel_net.1", "a/b/"))
        );
        for bad in ["cwl://", "cwl://a b", "cwl://net/a:b", "cwl://net/*"] {
            assert!(parse_link(bad).is_err(), "{bad}");
        }
        assert!(
            parse_link("gs://my-bucket/x")
                .unwrap_err()
                .contains("gs://")
        );
        for bad in [
            "my-bucket/x",
            "s3://",
            "s3://My_Bucket/x",
            "s3://ab/x",
            "s3://-ab/x",
        ] {
            assert!(parse_link(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ipv4_ranges_are_parsed_and_checked() {
        let net = parse_ipv4("10.77.0.0/16").unwrap();
        assert_eq!(net.to_string(), "10.77.0.0/16");
        for bad in [
            "10.77.0.0",
            "10.77.0.1/16",
            "10.77.0.0/31",
            "10.77.0.0/33",
            "x/16",
        ] {
            assert!(parse_ipv4(bad).is_err(), "{bad}");
        }
        // The loopback range is every host's own.
        let lo = parse_ipv4("127.0.0.0/8").unwrap();
        let _ = host_routes_overlapping(&lo);
    }

    #[test]
    fn exposed_ports_and_forwards_are_parsed_and_checked() {
        assert_eq!(parse_expose("3000"), Ok((Protocol::Tcp, 3000)));
        assert_eq!(parse_expose("53/udp"), Ok((Protocol::Udp, 53)));
        assert_eq!(parse_expose("53/tcp"), Ok((Protocol::Tcp, 53)));
        for bad in ["0", "65536", "http", "", "80/sctp"] {
            assert!(parse_expose(bad).is_err(), "{bad}");
        }
        let forward = parse_forward("127.0.0.1:8080=b:80").unwrap();
        assert_eq!(
            forward,
            Forward {
                protocol: Protocol::Tcp,
                listen: "127.0.0.1:8080".parse().unwrap(),
                node: ForwardNode::Id(0xb),
                port: 80,
            }
        );
        let forward = parse_forward("[::1]:5353=[fd5e:59b8:f71d:9a3e::c]:53/udp").unwrap();
        assert_eq!(forward.protocol, Protocol::Udp);
        assert_eq!(forward.listen, "[::1]:5353".parse().unwrap());
        assert_eq!(
            forward.node,
            ForwardNode::Addr("fd5e:59b8:f71d:9a3e::c".parse().unwrap())
        );
        let forward = parse_forward("127.0.0.1:1=10.77.0.11:22").unwrap();
        assert_eq!(
            forward.node,
            ForwardNode::Addr("10.77.0.11".parse().unwrap())
        );
        for bad in [
            "b:80",
            "8080=b:80",
            "127.0.0.1:8080=b",
            "127.0.0.1:8080=zz:80",
            "127.0.0.1:8080=b:0",
            "127.0.0.1:8080=[nope]:80",
        ] {
            assert!(parse_forward(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn node_ids_are_hexadecimal_and_not_zero() {
        assert_eq!(parse_node_id("a"), Ok(10));
        assert_eq!(parse_node_id("0x1f"), Ok(31));
        assert_eq!(parse_node_id("ffffffffffffffff"), Ok(u64::MAX));
        for bad in ["0", "g", "", "1ffffffffffffffff", "-1"] {
            assert!(parse_node_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_machine_id_gives_its_first_16_hex_digits() {
        assert_eq!(
            node_id_of_machine("c05f7f48de53428f0123456789abcdef\n"),
            Some(0xc05f_7f48_de53_428f)
        );
        for bad in [
            "",
            "c05f7f48",
            "+05f7f48de53428f0",
            "0000000000000000ffff",
            "uninitialized",
        ] {
            assert_eq!(node_id_of_machine(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn networks_are_slash_64_without_host_bits() {
        let net: Ipv6Addr = "fd00:1:2:3::".parse().unwrap();
        assert_eq!(parse_network("fd00:1:2:3::/64"), Ok(net));
        assert_eq!(parse_network("fd00:1:2:3::"), Ok(net));
        assert!(parse_network("fd00:1:2:3::/48").is_err());
        assert!(parse_network("fd00:1:2:3::1/64").is_err());
        assert!(parse_network("10.0.0.0/64").is_err());
    }
}
