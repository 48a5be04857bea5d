//! The fleet simulation: a small fleet of real nodes on one bucket.

use std::time::Duration;

use benches::fleet::{self, Fleet, Topology};
use benches::sim::LinkKind;

#[test]
fn a_small_hub_delivers_everything_within_s3s_rates() {
    let outcome = fleet::run(Fleet {
        nodes: 5,
        topology: Topology::Hub,
        link: LinkKind::S3,
        duration: Duration::from_secs(60),
        seed: 42,
    });
    assert!(outcome.sent() > 4 * 50, "{}", outcome.sent());
    assert_eq!(outcome.lost(), 0);
    assert_eq!(outcome.throttled, 0);
    let (_, puts) = outcome.peak_puts.clone().unwrap();
    assert!(puts > 0 && puts < fleet::S3_PUT_RATE);
    assert!(outcome.latency.quantile(0.99).unwrap() < Duration::from_secs(5));
    eprintln!(
        "{} sent, p50 {:?} p99 {:?}, {:.0} calls/node/day, wall {:?}",
        outcome.sent(),
        outcome.latency.quantile(0.5),
        outcome.latency.quantile(0.99),
        outcome.mean_calls_per_day(),
        outcome.wall
    );
}

/// Twenty clients of one hub read more than one account's quota of GetLogEvents (10 a
/// second) allows: the nodes widen the gaps between their reads as they are throttled, so
/// the hub still gets its share and every packet arrives. (Before, the clients took every
/// token the quota refilled and the hub, its polls throttled, slowed until it read nothing:
/// none of 3,595 packets arrived.)
#[test]
fn a_hub_of_twenty_clients_over_one_cloudwatch_logs_account_delivers_everything() {
    let outcome = fleet::run(Fleet {
        nodes: 21,
        topology: Topology::Hub,
        link: LinkKind::Cwl,
        duration: Duration::from_secs(180),
        seed: 1,
    });
    assert!(outcome.sent() > 20 * 150, "{}", outcome.sent());
    assert!(outcome.throttled > 0, "the quota binds");
    assert_eq!(
        outcome.lost(),
        0,
        "{} of {}",
        outcome.delivered(),
        outcome.sent()
    );
    assert!(
        outcome.nodes[0].delivered >= 20 * 150,
        "the hub hears its clients: {}",
        outcome.nodes[0].delivered
    );
}
