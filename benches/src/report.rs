//! The simulation's report: a table, the budgets the default policy must meet, Markdown, and an
//! SVG chart of cost against latency.

use std::fmt::Write as _;
use std::time::Duration;

use crate::sim::{LinkKind, Outcome, Policy};

/// A budget check: what, whether it held, and the figures behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// What is checked, e.g. "idle: at most 2,000 calls a day per node".
    pub what: String,
    /// Whether it held.
    pub pass: bool,
    /// The measured figure beside the bound.
    pub detail: String,
}

pub(crate) fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".into(),
        |d| format!("{:.0} ms", d.as_secs_f64() * 1e3),
    )
}

pub(crate) fn dollars(x: f64) -> String {
    if x == 0.0 {
        "$0".into()
    } else if x < 0.01 {
        format!("${x:.5}")
    } else {
        format!("${x:.3}")
    }
}

/// The operations of the outcomes' links, in the order they first appear: the table's call
/// columns (an operation no run made is left out).
fn operations(outcomes: &[Outcome]) -> Vec<&'static str> {
    let mut ops: Vec<&'static str> = Vec::new();
    for o in outcomes {
        for (op, usage) in o.calls.iter() {
            let always = matches!(op, "put" | "get" | "list" | "delete");
            if (always || usage.calls > 0) && !ops.contains(&op) {
                ops.push(op);
            }
        }
    }
    ops
}

/// The table of outcomes, as Markdown (which also reads well in a terminal).
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    let ops = operations(outcomes);
    let calls: Vec<String> = ops.iter().map(|op| op.to_uppercase()).collect();
    let cwl = outcomes.iter().any(|o| o.link == LinkKind::Cwl);
    let extra = if cwl { " | throttled" } else { "" };
    let _ = writeln!(
        out,
        "| trace | policy | {} | $/node/day | $/GiB | delivered | p50 | p99 | max{extra} |",
        calls.join(" | ")
    );
    let columns = ops.len() + 8 + usize::from(cwl);
    let _ = writeln!(out, "|{}", "---|".repeat(columns));
    for o in outcomes {
        let extra = if cwl {
            format!(" | {}", o.throttled)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {}/{} | {} | {} | {}{extra} |",
            o.trace,
            o.policy.name(),
            ops.iter()
                .map(|op| o.calls.calls(op).to_string())
                .collect::<Vec<_>>()
                .join(" | "),
            dollars(o.per_node_day()),
            o.per_gib().map_or_else(|| "-".into(), dollars),
            o.delivered,
            o.sent,
            ms(o.latency(0.5)),
            ms(o.latency(0.99)),
            ms(o.latency(1.0)),
        );
    }
    out
}

fn find<'a>(outcomes: &'a [Outcome], trace: &str, policy: Policy) -> Option<&'a Outcome> {
    outcomes
        .iter()
        .find(|o| o.trace == trace && o.policy == policy)
}

/// The budgets of the default policy ([`Policy::Adaptive`]), for the traces that were run.
pub fn checks(outcomes: &[Outcome]) -> Vec<Check> {
    let ours = Policy::Adaptive;
    let mut checks = Vec::new();
    if let Some(idle) = find(outcomes, "idle", ours) {
        let calls = idle.calls_per_node_day();
        checks.push(Check {
            what: "idle: at most 2,000 calls a day per node".into(),
            pass: calls <= 2_000.0,
            detail: format!("{calls:.0} calls"),
        });
        let cost = idle.per_node_day();
        checks.push(Check {
            what: "idle: at most $0.002 a day per node".into(),
            pass: cost <= 0.002,
            detail: dollars(cost),
        });
    }
    if let Some(bulk) = find(outcomes, "bulk", ours) {
        let per_gib = bulk.per_gib().unwrap_or(f64::INFINITY);
        checks.push(Check {
            what: "bulk: at most $0.01 of requests per GiB".into(),
            pass: per_gib <= 0.01,
            detail: dollars(per_gib),
        });
    }
    for trace in ["ping", "ssh", "web"] {
        let (Some(o), Some(h)) = (
            find(outcomes, trace, ours),
            find(outcomes, trace, Policy::Hoshino),
        ) else {
            continue;
        };
        let cheaper = h.cost / o.cost;
        checks.push(Check {
            what: format!("{trace}: at least 2x cheaper than hoshino"),
            pass: cheaper >= 2.0,
            detail: format!(
                "{cheaper:.2}x ({} against {})",
                dollars(o.cost),
                dollars(h.cost)
            ),
        });
        let (ours_p99, theirs) = (o.latency(0.99), h.latency(0.99));
        checks.push(Check {
            what: format!("{trace}: p99 latency no worse than hoshino's"),
            pass: ours_p99 <= theirs,
            detail: format!("{} against {}", ms(ours_p99), ms(theirs)),
        });
    }
    for o in outcomes.iter().filter(|o| o.policy == ours) {
        checks.push(Check {
            what: format!("{}: no packet lost", o.trace),
            pass: o.lost() == 0,
            detail: format!("{} of {} delivered", o.delivered, o.sent),
        });
    }
    checks
}

/// The budgets of the default policy over CloudWatch Logs ([`Policy::Adaptive`] against the
/// seed's [`Policy::Linklayer`]), for the traces that were run, with a node's read rate.
pub fn checks_cwl(outcomes: &[Outcome], read_rate: cardio::Budget) -> Vec<Check> {
    let ours = Policy::Adaptive;
    let mut checks = Vec::new();
    if let Some(idle) = find(outcomes, "idle", ours) {
        let reads = idle.reads_per_node_day();
        checks.push(Check {
            what: "idle: at most 2,000 read calls a day per node".into(),
            pass: reads <= 2_000.0,
            detail: format!("{reads:.0} reads"),
        });
        let cost = idle.per_node_day();
        checks.push(Check {
            what: "idle: at most $0.001 a day per node".into(),
            pass: cost <= 0.001,
            detail: dollars(cost),
        });
    }
    if let Some(bulk) = find(outcomes, "bulk", ours) {
        let per_gib = bulk.per_gib().unwrap_or(f64::INFINITY);
        checks.push(Check {
            what: "bulk: at most $0.70 per GiB of payload".into(),
            pass: per_gib <= 0.70,
            detail: dollars(per_gib),
        });
        if let Some(seed) = find(outcomes, "bulk", Policy::Linklayer) {
            let times = bulk.throughput() / seed.throughput().max(1e-9);
            checks.push(Check {
                what: "bulk: at least 100x linklayer's throughput".into(),
                pass: times >= 100.0,
                detail: format!(
                    "{times:.0}x ({:.2} MB/s against {:.4} MB/s)",
                    bulk.throughput() / 1e6,
                    seed.throughput() / 1e6
                ),
            });
        }
    }
    for trace in ["ping", "ssh", "web"] {
        let (Some(o), Some(seed)) = (
            find(outcomes, trace, ours),
            find(outcomes, trace, Policy::Linklayer),
        ) else {
            continue;
        };
        let (ours_p99, theirs) = (o.latency(0.99), seed.latency(0.99));
        checks.push(Check {
            what: format!("{trace}: p99 latency no worse than linklayer's"),
            pass: ours_p99 <= theirs,
            detail: format!("{} against {}", ms(ours_p99), ms(theirs)),
        });
    }
    let per_second = f64::from(read_rate.beats().get()) / read_rate.per().as_secs_f64();
    for o in outcomes.iter().filter(|o| o.policy == ours) {
        // What the rate allows over the whole run, its burst included, against what the
        // busier node read (the two share the reads about evenly; each is held to its own).
        let allowed = per_second * o.elapsed.as_secs_f64() + f64::from(read_rate.burst().get());
        let reads = o.reads() as f64 / 2.0;
        checks.push(Check {
            what: format!("{}: reads within the node's read rate", o.trace),
            pass: reads <= allowed,
            detail: format!(
                "{reads:.0} a node in {:.0} s, {allowed:.0} allowed at {per_second}/s",
                o.elapsed.as_secs_f64()
            ),
        });
        checks.push(Check {
            what: format!("{}: no packet lost", o.trace),
            pass: o.lost() == 0,
            detail: format!("{} of {} delivered", o.delivered, o.sent),
        });
    }
    for o in outcomes {
        checks.push(Check {
            what: format!(
                "{} under {}: no PutLogEvents refused for the service's limits",
                o.trace,
                o.policy.name()
            ),
            pass: o.refused == 0,
            detail: format!("{} refused", o.refused),
        });
    }
    checks
}

/// The checks as PASS/FAIL lines.
pub fn check_lines(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let verdict = if c.pass { "PASS" } else { "FAIL" };
        let _ = writeln!(out, "{verdict}  {}: {}", c.what, c.detail);
    }
    out
}

/// The whole report as Markdown.
pub fn markdown(outcomes: &[Outcome], checks: &[Check]) -> String {
    let mut out = String::from("# Cost simulation\n\n");
    if outcomes.iter().any(|o| o.link == LinkKind::Cwl) {
        out.push_str("Costs on CloudWatch Logs Standard (us-east-1: ingestion, no charge per ");
        out.push_str("call) and one-way added latency, both nodes together; `$/node/day` ");
        out.push_str("scales the trace to a day.\n\n");
    } else {
        out.push_str("Request costs on S3 Standard (us-east-1) and one-way added latency, ");
        out.push_str("both nodes together; `$/node/day` scales the trace to a day.\n\n");
    }
    out.push_str(&table(outcomes));
    out.push_str("\n## Budgets of the default policy (adaptive)\n\n```text\n");
    out.push_str(&check_lines(checks));
    out.push_str("```\n\n![cost against p99 latency](costsim.svg)\n");
    out
}

/// The whole decades a log-scale axis spans to show every one of `logs` (base-10 logarithms):
/// (0, 1) when there are none.
pub(crate) fn decades(logs: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let lo = logs.clone().fold(f64::INFINITY, f64::min).floor();
    let hi = logs.fold(f64::NEG_INFINITY, f64::max).ceil();
    if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (0.0, 1.0)
    }
}

/// The label of the tick at 10^`d` milliseconds, in the unit a reader thinks in: "100 ms",
/// "10 s", "17 min", "2.8 h", "12 d" (a tick's value has two significant digits at most).
pub(crate) fn decade_of_ms(d: i32) -> String {
    let ms = 10f64.powi(d);
    let (value, unit) = match ms {
        ms if ms < 1e3 => (ms, "ms"),
        ms if ms < 1e5 => (ms / 1e3, "s"),
        ms if ms < 6e6 => (ms / 6e4, "min"),
        ms if ms < 864e5 => (ms / 36e5, "h"),
        ms => (ms / 864e5, "d"),
    };
    let rounded = if value >= 10.0 {
        format!("{value:.0}")
    } else {
        let s = format!("{value:.1}");
        s.strip_suffix(".0").map_or(s.clone(), str::to_owned)
    };
    format!("{rounded} {unit}")
}

/// An SVG chart: request dollars per node-day (log) against p99 latency (log), a point per
/// trace and policy. Traces without latency (idle) are left out.
pub fn svg(outcomes: &[Outcome]) -> String {
    let points: Vec<(f64, f64, &Outcome)> = outcomes
        .iter()
        .filter_map(|o| {
            let p99 = o.latency(0.99)?.as_secs_f64() * 1e3;
            let cost = o.per_node_day();
            (p99 > 0.0 && cost > 0.0).then_some((p99.log10(), cost.log10(), o))
        })
        .collect();
    let (w, h, left, bottom, top, right) = (760.0, 460.0, 70.0, 50.0, 30.0, 170.0);
    let (x0, x1) = decades(points.iter().map(|p| p.0));
    let (y0, y1) = decades(points.iter().map(|p| p.1));
    let px = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| h - bottom - (y - y0) / (y1 - y0) * (h - bottom - top);
    let color = |p: Policy| match p {
        Policy::Hoshino => "#d62728",
        Policy::Fixed => "#ff7f0e",
        Policy::Adaptive => "#2ca02c",
        Policy::AdaptiveBudget => "#1f77b4",
        Policy::Linklayer => "#9467bd",
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let _ = writeln!(
        s,
        "<text x=\"{left}\" y=\"18\" font-size=\"14\">Request cost against p99 one-way latency (log scales)</text>"
    );
    for d in (x0 as i32)..=(x1 as i32) {
        let x = px(f64::from(d));
        let _ = writeln!(
            s,
            "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            top,
            h - bottom,
            h - bottom + 16.0,
            decade_of_ms(d)
        );
    }
    for d in (y0 as i32)..=(y1 as i32) {
        let y = py(f64::from(d));
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">${}</text>",
            w - right,
            left - 6.0,
            y + 4.0,
            10f64.powi(d)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">p99 one-way latency</text>\
         <text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">$ per node per day</text>",
        (left + w - right) / 2.0,
        h - 12.0,
        (top + h - bottom) / 2.0,
        (top + h - bottom) / 2.0
    );
    for (x, y, o) in &points {
        let (cx, cy) = (px(*x), py(*y));
        let _ = writeln!(
            s,
            "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"5\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>",
            color(o.policy),
            cx + 7.0,
            cy + 3.0,
            o.trace
        );
    }
    let link = outcomes.first().map_or(LinkKind::S3, |o| o.link);
    for (i, p) in Policy::of(link).iter().enumerate() {
        let y = top + 20.0 + i as f64 * 20.0;
        let x = w - right + 20.0;
        let _ = writeln!(
            s,
            "<circle cx=\"{x}\" cy=\"{y}\" r=\"5\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            color(*p),
            x + 10.0,
            y + 4.0,
            p.name()
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decades_are_labelled_in_the_unit_a_reader_thinks_in() {
        let labels: Vec<String> = (-1..=10).map(decade_of_ms).collect();
        assert_eq!(
            labels,
            [
                "0.1 ms", "1 ms", "10 ms", "100 ms", "1 s", "10 s", "1.7 min", "17 min", "2.8 h",
                "1.2 d", "12 d", "116 d"
            ]
        );
    }
}
