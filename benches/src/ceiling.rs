//! The dollar ceiling in the simulation (`costsim --max-dollars-per-day`): a day of each trace
//! through two real nodes under each ceiling (`NodeConfig::max_dollars_per_day`), checked
//! against it (no 24 hours spend more, nothing accepted is lost), and the chart a user picks a
//! ceiling from: p99 latency against dollars a day, one curve per link, the seed designs as
//! points.

use std::fmt::Write as _;

use crate::report::{Check, decade_of_ms, decades, dollars, ms};
use crate::sim::{self, LinkKind, Outcome, Policy};
use crate::traces::{self, Trace};

/// The traces of a sweep, by default: a day of each (see [`traces::day_of`]).
pub const TRACES: [&str; 5] = ["idle", "ping", "ssh", "web", "bulk"];

/// The bulk transfer of a sweep's day: a GiB in all, [`BULK_PER_DAY`] / 24 at the start of
/// every hour.
pub const BULK_PER_DAY: u64 = 1 << 30;

/// The sweep's traces named in `names` (all of [`TRACES`] when it is empty), in that order:
/// the built-in ones, except `bulk`, which is [`BULK_PER_DAY`] / 24 (about 43 MiB at
/// 200 Mbit/s) so that its day is a GiB.
///
/// Why not the built-in GiB every hour: a day of it is 24 GiB, which CloudWatch Logs keeps
/// (events cannot be deleted), and so does its in-memory model: more than this machine's
/// memory. A GiB a day is also nearer what a node that moves files now and then carries, and
/// its cost (under a cent a day on S3, about $0.7 on CloudWatch Logs) sits inside the range
/// of ceilings a user would set.
pub fn traces(names: &[String]) -> Vec<Trace> {
    traces::builtin()
        .into_iter()
        .map(|t| {
            if t.name == "bulk" {
                traces::bulk_of(BULK_PER_DAY / 24)
            } else {
                t
            }
        })
        .filter(|t| {
            if names.is_empty() {
                TRACES.contains(&t.name.as_str())
            } else {
                names.contains(&t.name)
            }
        })
        .collect()
}

/// One point of the sweep: a trace over a link under a policy and a ceiling.
#[derive(Debug, Clone)]
pub struct Point {
    /// The run (a day of the trace for ours; one hour of it for the seed designs).
    pub outcome: Outcome,
    /// What the dearer node spends in a day: its most over any 24 hours of the run for ours,
    /// its hour's spend times 24 for the seed designs (whose polling does not depend on the
    /// past, so that every hour of the day costs the same).
    pub per_day: f64,
}

impl Point {
    /// The trace's name.
    pub fn trace(&self) -> &str {
        &self.outcome.trace
    }
}

/// The seed's design over `link`: Hoshino's over S3, Linklayer's over CloudWatch Logs.
pub fn seed(link: LinkKind) -> Policy {
    match link {
        LinkKind::S3 => Policy::Hoshino,
        LinkKind::Cwl => Policy::Linklayer,
    }
}

/// `trace` lasting at least an hour (silence after its last packet): one hour of a day of it.
fn hour_of(trace: &Trace) -> Trace {
    Trace {
        duration: trace.duration.max(std::time::Duration::from_secs(3_600)),
        ..trace.clone()
    }
}

/// Runs the sweep of `trace` over `link`: the seed's design, ours with no ceiling, and ours
/// under each of `ceilings` (dollars a day per node), calling `progress` after each run.
pub fn sweep(
    trace: &Trace,
    link: LinkKind,
    ceilings: &[f64],
    mut progress: impl FnMut(&Point, std::time::Duration),
) -> Vec<Point> {
    let day = traces::day_of(trace);
    let mut points = Vec::new();
    let mut push = |point: Point, started: std::time::Instant| {
        progress(&point, started.elapsed());
        points.push(point);
    };
    // The seed's design: one hour (a day of idle is a day already), scaled to the day.
    let started = std::time::Instant::now();
    let hour = if trace.duration >= std::time::Duration::from_secs(86_400) {
        day.clone()
    } else {
        hour_of(trace)
    };
    let outcome = sim::run_ceiling(&hour, link, seed(link), None);
    let hours_a_day = (86_400.0 / hour.duration.as_secs_f64()).max(1.0).round();
    push(
        Point {
            per_day: outcome.worst_day * hours_a_day,
            outcome,
        },
        started,
    );
    for ceiling in std::iter::once(None).chain(ceilings.iter().copied().map(Some)) {
        let started = std::time::Instant::now();
        let outcome = sim::run_ceiling(&day, link, Policy::Adaptive, ceiling);
        push(
            Point {
                per_day: outcome.worst_day,
                outcome,
            },
            started,
        );
    }
    points
}

/// The checks of a sweep: under each ceiling, no node spent more than it in any 24 hours and
/// nothing accepted was lost; with none, nothing was lost at all.
pub fn checks(points: &[Point]) -> Vec<Check> {
    let mut checks = Vec::new();
    for p in points
        .iter()
        .filter(|p| p.outcome.policy == Policy::Adaptive)
    {
        let o = &p.outcome;
        let name = format!(
            "{} {} under {}",
            o.link.name(),
            o.trace,
            o.ceiling.map_or_else(
                || "no ceiling".to_owned(),
                |c| format!("{} a day", dollars(c))
            )
        );
        if let Some(ceiling) = o.ceiling {
            checks.push(Check {
                what: format!("{name}: no node spends more than the ceiling in any 24 hours"),
                // A float's rounding aside.
                pass: o.worst_day <= ceiling * (1.0 + 1e-9),
                detail: format!("{} at most", dollars(o.worst_day)),
            });
        }
        checks.push(Check {
            what: format!("{name}: nothing accepted is lost"),
            pass: o.lost_accepted() == 0,
            detail: format!(
                "{} of {} accepted delivered ({} of {} offered held back)",
                o.delivered,
                o.accepted,
                o.held_back(),
                o.sent
            ),
        });
    }
    checks
}

fn ceiling_name(o: &Outcome) -> String {
    match (o.policy, o.ceiling) {
        (Policy::Adaptive, None) => "none".into(),
        (Policy::Adaptive, Some(c)) => dollars(c),
        (seed, _) => format!("{} (seed)", seed.name()),
    }
}

/// The sweep as a Markdown table.
pub fn table(points: &[Point]) -> String {
    let mut out = String::from(
        "| link | trace | ceiling $/node/day | spent in a day (dearer node) | calls | accepted of offered | delivered | p50 | p99 | max |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for p in points {
        let o = &p.outcome;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {}/{} | {} | {} | {} | {} |",
            o.link.name(),
            o.trace,
            ceiling_name(o),
            dollars(p.per_day),
            o.calls.total_calls(),
            o.accepted,
            o.sent,
            o.delivered,
            ms(o.latency(0.5)),
            ms(o.latency(0.99)),
            ms(o.latency(1.0)),
        );
    }
    out
}

/// The sweep's report, as Markdown.
pub fn markdown(points: &[Point], checks: &[Check]) -> String {
    let mut out = String::from("# A ceiling in dollars a day\n\n");
    out.push_str(
        "A day of each trace (played again every hour) through two nodes under each ceiling \
         (`max_dollars_per_day`, per node), over S3 Standard or CloudWatch Logs with their \
         latency, limits and prices. Latency counts from when the trace sends a packet, the \
         time it waits to be accepted included. The seed designs run one hour of the trace, \
         their spend times 24. A day of bulk is a GiB, 43 MiB at 200 Mbit/s every hour.\n\n",
    );
    out.push_str(&table(points));
    out.push_str("\n## Checks\n\n```text\n");
    out.push_str(&crate::report::check_lines(checks));
    out.push_str("```\n\n![p99 latency against dollars a day](ceiling.svg)\n");
    out
}

/// An SVG chart: a panel per trace, p99 latency (log) against dollars a day (log); a curve
/// per link through our points (no ceiling, and each ceiling), the seed designs as squares.
/// A point whose node held packets back (not accepted) is hollow.
pub fn svg(points: &[Point]) -> String {
    let plotted: Vec<(f64, f64, &Point)> = points
        .iter()
        .filter_map(|p| {
            let p99 = p.outcome.latency(0.99)?.as_secs_f64() * 1e3;
            (p99 > 0.0 && p.per_day > 0.0).then_some((p.per_day.log10(), p99.log10(), p))
        })
        .collect();
    let mut names: Vec<&str> = Vec::new();
    for (_, _, p) in &plotted {
        if !names.contains(&p.trace()) {
            names.push(p.trace());
        }
    }
    let (x0, x1) = decades(plotted.iter().map(|p| p.0));
    let (y0, y1) = decades(plotted.iter().map(|p| p.1));
    let (pw, ph, left, top, gap) = (330.0, 260.0, 70.0, 50.0, 60.0);
    let cols = names.len().clamp(1, 2);
    let rows = names.len().div_ceil(cols).max(1);
    let (w, h) = (
        left + cols as f64 * (pw + gap) + 190.0,
        top + rows as f64 * (ph + gap) + 10.0,
    );
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"20\" font-size=\"14\">p99 one-way latency against dollars a day per node, as the ceiling varies (log scales)</text>\n"
    );
    let color = |link: LinkKind| match link {
        LinkKind::S3 => "#2ca02c",
        LinkKind::Cwl => "#1f77b4",
    };
    for (i, name) in names.iter().enumerate() {
        let (ox, oy) = (
            left + (i % cols) as f64 * (pw + gap),
            top + (i / cols) as f64 * (ph + gap),
        );
        let px = |x: f64| ox + (x - x0) / (x1 - x0) * pw;
        let py = |y: f64| oy + ph - (y - y0) / (y1 - y0) * ph;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" font-size=\"13\" text-anchor=\"middle\">a day of {name}</text>",
            ox + pw / 2.0,
            oy - 6.0
        );
        for d in (x0 as i32)..=(x1 as i32) {
            let x = px(f64::from(d));
            let _ = writeln!(
                s,
                "<line x1=\"{x}\" y1=\"{oy}\" x2=\"{x}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">${}</text>",
                oy + ph,
                oy + ph + 14.0,
                10f64.powi(d)
            );
        }
        for d in (y0 as i32)..=(y1 as i32) {
            let y = py(f64::from(d));
            let _ = writeln!(
                s,
                "<line x1=\"{ox}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
                ox + pw,
                ox - 4.0,
                y + 4.0,
                decade_of_ms(d)
            );
        }
        for link in [LinkKind::S3, LinkKind::Cwl] {
            let mut ours: Vec<&(f64, f64, &Point)> = plotted
                .iter()
                .filter(|(_, _, p)| {
                    p.trace() == *name
                        && p.outcome.link == link
                        && p.outcome.policy == Policy::Adaptive
                })
                .collect();
            ours.sort_by(|a, b| a.0.total_cmp(&b.0));
            let line: Vec<String> = ours
                .iter()
                .map(|(x, y, _)| format!("{:.1},{:.1}", px(*x), py(*y)))
                .collect();
            if line.len() > 1 {
                let _ = writeln!(
                    s,
                    "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>",
                    line.join(" "),
                    color(link)
                );
            }
            for (x, y, p) in plotted
                .iter()
                .filter(|(_, _, p)| p.trace() == *name && p.outcome.link == link)
            {
                let (cx, cy) = (px(*x), py(*y));
                let fill = if p.outcome.held_back() > 0 {
                    "white"
                } else {
                    color(link)
                };
                if p.outcome.policy == Policy::Adaptive {
                    let _ = writeln!(
                        s,
                        "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"4\" fill=\"{fill}\" stroke=\"{}\" stroke-width=\"1.5\"/>",
                        color(link)
                    );
                } else {
                    let _ = writeln!(
                        s,
                        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"9\" height=\"9\" fill=\"{fill}\" stroke=\"#d62728\" stroke-width=\"2\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>",
                        cx - 4.5,
                        cy - 4.5,
                        cx + 8.0,
                        cy + 4.0,
                        p.outcome.policy.name()
                    );
                }
            }
        }
    }
    let lx = left + cols as f64 * (pw + gap) - 20.0;
    for (i, (what, color)) in [
        ("ours over S3", color(LinkKind::S3)),
        ("ours over CloudWatch Logs", color(LinkKind::Cwl)),
        ("seed designs", "#d62728"),
        ("hollow: some held back", "#999"),
    ]
    .iter()
    .enumerate()
    {
        let y = top + 10.0 + i as f64 * 18.0;
        let _ = writeln!(
            s,
            "<rect x=\"{lx}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{what}</text>",
            y - 8.0,
            lx + 14.0,
            y + 1.0
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_of_bulk_in_a_sweep_is_a_gib() {
        let sweep = traces(&["bulk".to_owned()]);
        assert_eq!(sweep.len(), 1);
        let day = traces::day_of(&sweep[0]);
        let sent: u64 = day
            .sends
            .iter()
            .filter(|s| s.from == traces::Side::A)
            .map(|s| s.size as u64)
            .sum();
        // Each hour's share rounds up to whole segments.
        assert!(
            (BULK_PER_DAY..BULK_PER_DAY + 24 * 1_500).contains(&sent),
            "{sent}"
        );
        assert_eq!(
            day.duration,
            std::time::Duration::from_secs(23 * 3_600) + sweep[0].duration
        );
    }

    #[test]
    fn a_sweep_takes_its_default_traces_or_the_ones_named() {
        let names: Vec<String> = traces(&[]).into_iter().map(|t| t.name).collect();
        assert_eq!(names, TRACES);
        let named: Vec<String> = traces(&["wake".to_owned(), "ping".to_owned()])
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(named, ["ping", "wake"], "in report order");
    }
}
