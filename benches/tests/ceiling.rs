//! The dollar ceiling in the simulation (`costsim --max-dollars-per-day`): a day of traffic
//! through two real nodes over S3 and CloudWatch Logs with their prices, on the paused clock.

use std::time::Duration;

use benches::ceiling;
use benches::sim::{self, LinkKind, Policy};
use benches::traces::{Reply, Send, Side, Trace};

/// `size`-byte packets from A every `every` for a day, each answered with a ping-sized reply.
fn a_day_of(every: Duration, size: usize) -> Trace {
    let day = Duration::from_secs(86_400);
    let count = (day.as_secs_f64() / every.as_secs_f64()) as u32;
    Trace {
        name: "test".into(),
        duration: day,
        sends: (0..count)
            .map(|i| Send {
                at: every * i,
                from: Side::A,
                size,
                reply: Some(Reply {
                    packets: 1,
                    size: 104,
                }),
            })
            .collect(),
    }
}

#[test]
fn over_s3_a_ceiling_holds_a_days_spend_and_loses_nothing_it_accepted() {
    let trace = a_day_of(Duration::from_secs(30), 104);
    let free = sim::run_ceiling(&trace, LinkKind::S3, Policy::Adaptive, None);
    let ceiling = 0.002;
    assert!(
        free.worst_day > 2.0 * ceiling,
        "the ceiling must bind: {} a day without it",
        free.worst_day
    );
    let held = sim::run_ceiling(&trace, LinkKind::S3, Policy::Adaptive, Some(ceiling));
    assert!(held.worst_day <= ceiling, "{} spent", held.worst_day);
    assert!(held.worst_day > 0.8 * ceiling, "{} spent", held.worst_day);
    assert_eq!(
        held.accepted, held.sent,
        "a small buffer holds a day of pings"
    );
    assert_eq!(held.lost_accepted(), 0);
    assert_eq!(held.delivered, held.sent);
    assert!(
        held.latency(0.99) > free.latency(0.99),
        "what the ceiling saves costs latency: {:?} against {:?}",
        held.latency(0.99),
        free.latency(0.99)
    );
}

#[test]
fn over_cloudwatch_logs_a_ceiling_on_the_bytes_holds_and_loses_nothing_it_accepted() {
    // 8.6 MB a day, about $0.007 of ingestion as text; the ceiling pays for under a third.
    let trace = a_day_of(Duration::from_secs(600), 60_000);
    let ceiling = 0.002;
    let held = sim::run_ceiling(&trace, LinkKind::Cwl, Policy::Adaptive, Some(ceiling));
    assert_eq!(held.refused, 0, "no call breaks PutLogEvents's limits");
    assert!(held.worst_day <= ceiling, "{} spent", held.worst_day);
    assert!(held.worst_day > 0.8 * ceiling, "{} spent", held.worst_day);
    assert_eq!(held.lost_accepted(), 0);
    assert_eq!(held.delivered, held.accepted);
    // The node buffers no more than its bucket pays to send (a few of these packets), so it
    // holds the rest back at the door rather than accept a day of them and send them over
    // the following days.
    assert!(
        held.accepted < held.sent,
        "{} of {} accepted",
        held.accepted,
        held.sent
    );
    assert!(
        held.accepted > held.sent / 3,
        "{} of {} accepted: it carries what the ceiling pays for",
        held.accepted,
        held.sent
    );
    assert!(
        held.elapsed < trace.duration + Duration::from_secs(12 * 3_600),
        "what it accepted arrives within hours of the day's end: {:?}",
        held.elapsed
    );
}

#[test]
fn a_sweep_puts_the_seed_and_ours_on_one_chart_and_checks_every_ceiling() {
    let wake = benches::traces::wake();
    let points = ceiling::sweep(&wake, LinkKind::S3, &[0.0002], |_, _| {});
    let policies: Vec<(Policy, Option<f64>)> = points
        .iter()
        .map(|p| (p.outcome.policy, p.outcome.ceiling))
        .collect();
    assert_eq!(
        policies,
        [
            (Policy::Hoshino, None),
            (Policy::Adaptive, None),
            (Policy::Adaptive, Some(0.0002))
        ]
    );
    // Hoshino's LIST every 500 ms costs $0.86 a day whatever the traffic; ours a few
    // hundredths of that (each wake polls fast for a while), and under the ceiling less.
    assert!(points[0].per_day > 0.5, "{}", points[0].per_day);
    assert!(
        points[1].per_day < points[0].per_day / 20.0,
        "{}",
        points[1].per_day
    );
    assert!(points[2].per_day <= 0.0002, "{}", points[2].per_day);
    let checks = ceiling::checks(&points);
    assert_eq!(checks.len(), 3, "{checks:?}");
    assert!(checks.iter().all(|c| c.pass), "{checks:?}");
    let svg = ceiling::svg(&points);
    assert!(svg.starts_with("<svg") && svg.contains("hoshino"), "{svg}");
    assert!(ceiling::markdown(&points, &checks).contains("| s3 | wake | $0.00020 |"));
}
