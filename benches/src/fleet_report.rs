//! What `costsim --nodes` prints and writes: one row per fleet, the goals it checks, and over
//! CloudWatch Logs the largest fleet one account polls at a given latency.

use std::fmt::Write as _;
use std::time::Duration;

use crate::fleet::{FleetOutcome, S3_GET_RATE, S3_PUT_RATE, Topology};
use crate::report::Check;
use crate::sim::LinkKind;

/// How far an idle node's calls and dollars a day may move as the fleet grows.
pub const IDLE_SPREAD: f64 = 0.05;

/// The p99 one-way latency a hub's (or a mesh's) packets must stay within, on S3, all
/// packets of the fleet together. A client pings once a second: its packets are bundled
/// (20 ms), PUT, found by the hub's next poll and read; the answer goes the same way back.
/// Measured (`costsim --nodes 1001 --topology hub`, 6 minutes): p50 317 ms, p99 7.3 s; the
/// tail is the hub's inbound at the start: idle until then, its heart backed off to about
/// 9 s, its first poll after the clients begin finds 10,030 batches and takes 6.9 s to read
/// them (its polls take 200 ms at the median from then on).
pub const HUB_P99_S3: Duration = Duration::from_secs(10);

/// The same on CloudWatch Logs, whose account-wide read quota (10 GetLogEvents a second) a
/// hub's clients share: a minute, the longest an idle node waits between reads. Measured
/// (`costsim --link cwl --nodes 21,51,101 --topology hub --hours 0.05`): 101 s at 21 nodes, so
/// the goal fails from there on; the quota, which the hub shares equally with each client,
/// bounds a CloudWatch Logs hub to a few dozen busy clients.
pub const HUB_P99_CWL: Duration = Duration::from_secs(60);

/// The latencies the CloudWatch Logs table gives the largest fleet for.
pub const PROBE_LATENCIES: [Duration; 4] = [
    Duration::from_secs(60),
    Duration::from_secs(120),
    Duration::from_secs(300),
    Duration::from_secs(900),
];

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".into(),
        |d| {
            if d >= Duration::from_secs(10) {
                format!("{:.0} s", d.as_secs_f64())
            } else {
                format!("{:.0} ms", d.as_secs_f64() * 1e3)
            }
        },
    )
}

fn hours(d: Duration) -> String {
    let h = d.as_secs_f64() / 3_600.0;
    if h >= 1.0 {
        format!("{h:.0} h")
    } else {
        format!("{:.0} min", h * 60.0)
    }
}

/// The fleets as a Markdown table, one row each.
pub fn table(outcomes: &[FleetOutcome]) -> String {
    let mut out = String::from(
        "| link | topology | nodes | traffic | calls/node/day (median, max) | $/node/day (mean, max) \
         | packets delivered | p50 | p99 | worst node's p99 | peak PUT/s, GET/s (one prefix) \
         | fleet calls/s (peak, mean) | throttled | wall |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        let (calls_median, calls_max) = o.median_max(|n| n.calls_per_day());
        let (_, cost_max) = o.median_max(|n| n.cost_per_day());
        let prefix = match (&o.peak_puts, &o.peak_gets) {
            (Some((_, puts)), Some((_, gets))) => format!("{puts}, {gets}"),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.0}, {:.0} | ${:.5}, ${:.5} | {}/{} | {} | {} | {} | {} | {}, {:.1} | {} | {:.1} s |",
            o.link.name(),
            o.topology.name(),
            o.size(),
            hours(o.duration),
            calls_median,
            calls_max,
            o.mean_cost_per_day(),
            cost_max,
            o.delivered(),
            o.sent(),
            ms(o.latency.quantile(0.5)),
            ms(o.latency.quantile(0.99)),
            ms(o.node_latency(0.99).map(|(_, worst)| worst)),
            prefix,
            o.peak_per_sec,
            o.mean_per_sec,
            o.throttled,
            o.wall.as_secs_f64(),
        );
    }
    out
}

/// The goals the fleets run can check.
///
/// - `idle`: a node's calls and dollars a day stay within [`IDLE_SPREAD`] of the smallest
///   fleet's, whatever the fleet's size;
/// - `hub` and `mesh`: every packet is delivered, with a p99 within [`HUB_P99_S3`] (or
///   [`HUB_P99_CWL`]); on S3, no prefix ever goes over S3's rates, and nothing is throttled.
pub fn checks(outcomes: &[FleetOutcome]) -> Vec<Check> {
    let mut checks = Vec::new();
    for link in [LinkKind::S3, LinkKind::Cwl] {
        let idle: Vec<&FleetOutcome> = outcomes
            .iter()
            .filter(|o| o.link == link && o.topology == Topology::Idle)
            .collect();
        if let Some(smallest) = idle.iter().min_by_key(|o| o.size()) {
            for o in idle.iter().filter(|o| o.size() != smallest.size()) {
                for (what, base, now) in [
                    (
                        "calls",
                        smallest.mean_calls_per_day(),
                        o.mean_calls_per_day(),
                    ),
                    (
                        "dollars",
                        smallest.mean_cost_per_day(),
                        o.mean_cost_per_day(),
                    ),
                ] {
                    let spread = (now - base).abs() / base.max(1e-12);
                    checks.push(Check {
                        what: format!(
                            "{} idle: a node's {what} a day at {} nodes within {:.0}% of {} nodes'",
                            link.name(),
                            o.size(),
                            IDLE_SPREAD * 100.0,
                            smallest.size()
                        ),
                        pass: spread <= IDLE_SPREAD,
                        detail: if what == "calls" {
                            format!("{now:.0} against {base:.0} ({:+.1}%)", spread * 100.0)
                        } else {
                            format!("${now:.5} against ${base:.5} ({:+.1}%)", spread * 100.0)
                        },
                    });
                }
            }
        }
    }
    for o in outcomes
        .iter()
        .filter(|o| matches!(o.topology, Topology::Hub | Topology::Mesh))
    {
        let name = format!("{} {} of {}", o.link.name(), o.topology.name(), o.size());
        checks.push(Check {
            what: format!("{name}: every packet delivered"),
            pass: o.lost() == 0,
            detail: format!("{} of {}", o.delivered(), o.sent()),
        });
        let bound = match o.link {
            LinkKind::S3 => HUB_P99_S3,
            LinkKind::Cwl => HUB_P99_CWL,
        };
        let p99 = o.latency.quantile(0.99);
        checks.push(Check {
            what: format!("{name}: p99 within {}", ms(Some(bound))),
            pass: p99.is_some_and(|p| p <= bound),
            detail: ms(p99),
        });
        if o.link == LinkKind::S3 {
            let puts = o.peak_puts.as_ref().map_or(0, |p| p.1);
            let gets = o.peak_gets.as_ref().map_or(0, |p| p.1);
            checks.push(Check {
                what: format!("{name}: no prefix over S3's rates, nothing throttled"),
                pass: puts <= S3_PUT_RATE && gets <= S3_GET_RATE && o.throttled == 0,
                detail: format!(
                    "peak {puts} PUT/s of {S3_PUT_RATE}, {gets} GET/s of {S3_GET_RATE}, {} throttled",
                    o.throttled
                ),
            });
        }
    }
    checks
}

/// Over CloudWatch Logs, from `probe` fleets: the largest fleet whose probes (the first packet
/// to an idle node) arrived within each of [`PROBE_LATENCIES`] at p99, as a Markdown table;
/// `None` without a CloudWatch Logs probe fleet.
pub fn largest_fleets(outcomes: &[FleetOutcome]) -> Option<String> {
    let mut probes: Vec<&FleetOutcome> = outcomes
        .iter()
        .filter(|o| o.link == LinkKind::Cwl && o.topology == Topology::Probe)
        .collect();
    if probes.is_empty() {
        return None;
    }
    probes.sort_by_key(|o| o.size());
    let mut out = String::from(
        "| nodes | reads/s (mean, peak; quota 10) | throttled reads | probe p50 | probe p99 | lost |\n\
         |---|---|---|---|---|---|\n",
    );
    for o in &probes {
        let _ = writeln!(
            out,
            "| {} | {:.1}, {} | {} | {} | {} | {} |",
            o.size(),
            o.mean_per_sec,
            o.peak_per_sec,
            o.throttled,
            ms(o.latency.quantile(0.5)),
            ms(o.latency.quantile(0.99)),
            o.lost()
        );
    }
    out.push_str(
        "\n| first packet to an idle node within (p99) | largest fleet simulated |\n|---|---|\n",
    );
    for bound in PROBE_LATENCIES {
        let largest = probes
            .iter()
            .filter(|o| o.lost() == 0 && o.latency.quantile(0.99).is_some_and(|p| p <= bound))
            .map(|o| o.size())
            .max();
        let _ = writeln!(
            out,
            "| {} | {} |",
            ms(Some(bound)),
            largest.map_or_else(|| "none simulated".into(), |n| n.to_string())
        );
    }
    Some(out)
}

/// The whole report as Markdown (`fleet.md`).
pub fn markdown(outcomes: &[FleetOutcome], checks: &[Check]) -> String {
    let mut out = String::from("# Fleet simulation\n\n");
    out.push_str(
        "Real nodes on one in-memory bucket (S3's latency, prices and request rates per \
         prefix) or one CloudWatch Logs account (its latency, ingestion price and read quota), \
         on a paused clock. Calls and dollars per node are scaled to a day; latency is one \
         way, from a send to its delivery.\n\n",
    );
    out.push_str(&table(outcomes));
    if let Some(largest) = largest_fleets(outcomes) {
        out.push_str("\n## CloudWatch Logs: the largest fleet one account polls\n\n");
        out.push_str(&largest);
    }
    out.push_str("\n## Goals\n\n```text\n");
    out.push_str(&crate::report::check_lines(checks));
    out.push_str("```\n");
    out
}
