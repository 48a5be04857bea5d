//! Temporary driver.
use benches::sim::{Policy, run};
fn main() {
    let which: Vec<String> = std::env::args().skip(1).collect();
    for trace in benches::traces::builtin()
        .into_iter()
        .filter(|t| which.is_empty() || which.contains(&t.name))
    {
        for policy in Policy::ALL {
            let t0 = std::time::Instant::now();
            let o = run(&trace, policy);
            println!(
                "{:6} {:16} ${:.4}/node/day calls/node/day {:.0} $/GiB {:?} lost {} p50 {:?} p99 {:?} max {:?} calls {:?} ({:.1}s)",
                o.trace,
                policy.name(),
                o.per_node_day(),
                o.calls_per_node_day(),
                o.per_gib(),
                o.lost(),
                o.latency(0.5),
                o.latency(0.99),
                o.latency(1.0),
                o.calls,
                t0.elapsed().as_secs_f64()
            );
        }
    }
}
