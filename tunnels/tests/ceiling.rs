//! A ceiling in dollars a day (`NodeConfig::max_dollars_per_day`), over the in-memory S3 and
//! CloudWatch Logs with their prices, on the paused clock: no 24 hours spend more, whatever
//! the traffic, and nothing accepted is lost.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tunnels::link::cwl::{CwlLink, CwlLinkConfig, LogsModel, MemoryLogs};
use tunnels::link::s3::{LatencyModel, MemoryStore, S3Link, S3LinkConfig};
use tunnels::node::spend::Kind;
use tunnels::{Link, Node, NodeConfig, Received};

const A: u64 = 0xa;
const B: u64 = 0xb;
const DAY: Duration = Duration::from_secs(86_400);

/// Frames delivered, in order of arrival.
fn collect() -> (
    Arc<Mutex<Vec<Bytes>>>,
    impl FnMut(Received) + Send + 'static,
) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    (got, move |r: Received| {
        sink.lock().unwrap().extend(r.frames)
    })
}

/// Node A on `link` under `ceiling` dollars a day, with a buffer of 1 MiB (so that offering
/// more than it may send soon holds the offering back).
fn sender<L: Link>(link: Arc<L>, ceiling: f64) -> Node {
    let config = NodeConfig {
        max_dollars_per_day: Some(ceiling),
        buffered_bytes: 1 << 20,
        seed: Some(A),
        ..NodeConfig::default()
    };
    Node::start(link, config, |_| {})
}

/// Numbered frames of `size` bytes.
fn frame(n: u64, size: usize) -> Bytes {
    let mut frame = vec![0u8; size];
    frame[..8].copy_from_slice(&n.to_be_bytes());
    Bytes::from(frame)
}

/// What `link` spent in each minute, sampled until `until`.
fn sample_cost<L: Link>(link: Arc<L>, until: Instant) -> tokio::task::JoinHandle<Vec<f64>> {
    tokio::spawn(async move {
        let mut costs = vec![link.cost()];
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_secs(60)).await;
            costs.push(link.cost());
        }
        costs
    })
}

/// The most spent over any 24 hours (1,440 minutes) of `costs`, sampled each minute.
fn worst_day(costs: &[f64]) -> f64 {
    let day = 1_440;
    (0..costs.len())
        .map(|end| costs[end] - costs[end.saturating_sub(day)])
        .fold(0.0, f64::max)
}

/// Offers A's node a frame every `every`, waiting when its buffer is full, for `offer`; then
/// shuts A down (it sends what it accepted, within its ceiling) and waits for B to have it all.
async fn offer_then_drain(
    a: &Node,
    got: &Mutex<Vec<Bytes>>,
    every: Duration,
    size: usize,
    offer: Duration,
) -> u64 {
    let start = Instant::now();
    let mut accepted = 0;
    while start.elapsed() < offer {
        a.send_wait(B, frame(accepted, size)).await.expect("open");
        accepted += 1;
        tokio::time::sleep(every).await;
    }
    a.shutdown().await;
    let deadline = Instant::now() + 2 * DAY;
    while (got.lock().unwrap().len() as u64) < accepted {
        assert!(
            Instant::now() < deadline,
            "B never got everything A accepted"
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    accepted
}

fn assert_in_order(got: &[Bytes], accepted: u64) {
    assert_eq!(got.len() as u64, accepted, "exactly once");
    for (i, frame) in got.iter().enumerate() {
        let n = u64::from_be_bytes(frame[..8].try_into().unwrap());
        assert_eq!(n, i as u64, "in order");
    }
}

#[tokio::test(start_paused = true)]
async fn over_s3_a_busy_node_never_spends_more_than_its_ceiling_in_a_day_and_loses_nothing() {
    let store = MemoryStore::new(LatencyModel::S3_STANDARD, 7);
    let link = |me| Arc::new(S3Link::new(store.clone(), me, 1, S3LinkConfig::default()));
    let (link_a, link_b) = (link(A), link(B));
    // A cent a day: a few thousand calls, where a node sending a packet every 2 s for a day
    // with no ceiling makes tens of thousands.
    let ceiling = 0.01;
    let a = sender(Arc::clone(&link_a), ceiling);
    let (got, deliver) = collect();
    let b = Node::start(
        Arc::clone(&link_b),
        NodeConfig {
            seed: Some(B),
            ..NodeConfig::default()
        },
        deliver,
    );
    let costs = sample_cost(Arc::clone(&link_a), Instant::now() + 2 * DAY);

    let accepted = offer_then_drain(&a, &got, Duration::from_secs(2), 1_000, DAY + DAY / 4).await;
    assert_in_order(&got.lock().unwrap(), accepted);

    let costs = costs.await.unwrap();
    let worst = worst_day(&costs);
    assert!(worst <= ceiling, "A spent ${worst} in a day");
    // It spent what it may (the first day: a fifth at once and four fifths over the day).
    assert!(
        worst > 0.9 * ceiling,
        "A spent only ${worst} in its worst day"
    );
    // To stay inside, it held sends back (and they grew: far fewer PUTs than packets) and
    // polled more slowly.
    let spend = a.spend().expect("a ceiling").stats();
    assert!(spend.waits[Kind::Send as usize] > 0, "{spend:?}");
    assert!(spend.waits[Kind::Poll as usize] > 0, "{spend:?}");
    let puts = link_a.usage().calls("put");
    assert!(
        puts * 10 < accepted,
        "{puts} PUTs for {accepted} packets: bundles did not grow"
    );
    assert!(spend.spent_last_day <= ceiling);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn over_s3_a_node_within_its_ceiling_is_not_slowed() {
    let store = MemoryStore::new(LatencyModel::S3_STANDARD, 8);
    let link = |me| Arc::new(S3Link::new(store.clone(), me, 1, S3LinkConfig::default()));
    let (link_a, link_b) = (link(A), link(B));
    let a = Node::start(
        Arc::clone(&link_a),
        NodeConfig {
            // A dollar a day, against the few cents of a ping every 2 s for an hour.
            max_dollars_per_day: Some(1.0),
            seed: Some(A),
            ..NodeConfig::default()
        },
        |_| {},
    );
    let (got, deliver) = collect();
    let b = Node::start(Arc::clone(&link_b), NodeConfig::default(), deliver);
    let accepted = offer_then_drain(
        &a,
        &got,
        Duration::from_secs(2),
        100,
        Duration::from_secs(3_600),
    )
    .await;
    assert_in_order(&got.lock().unwrap(), accepted);
    let spend = a.spend().unwrap().stats();
    assert_eq!(spend.waits, [0, 0], "the ceiling never bound: {spend:?}");
    assert!((spend.spent - link_a.cost()).abs() < 1e-12);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn over_cloudwatch_logs_bytes_ingested_stay_within_the_ceiling() {
    let logs = MemoryLogs::new(LogsModel::CLOUDWATCH, 9);
    let link = |me| {
        Arc::new(CwlLink::new(logs.clone(), me, 1, CwlLinkConfig::default()).expect("settings"))
    };
    let (link_a, link_b) = (link(A), link(B));
    // A tenth of a cent a day: 2 MB ingested at $0.50 a GB, against 10 kB a second offered.
    let ceiling = 0.001;
    let a = sender(Arc::clone(&link_a), ceiling);
    let (got, deliver) = collect();
    let b = Node::start(Arc::clone(&link_b), NodeConfig::default(), deliver);
    let costs = sample_cost(Arc::clone(&link_a), Instant::now() + 3 * DAY);
    let accepted =
        offer_then_drain(&a, &got, Duration::from_millis(100), 1_000, DAY + DAY / 4).await;
    assert_in_order(&got.lock().unwrap(), accepted);
    let worst = worst_day(&costs.await.unwrap());
    assert!(worst <= ceiling, "A ingested ${worst} in a day");
    assert!(
        worst > 0.8 * ceiling,
        "A spent only ${worst} in its worst day"
    );
    let spend = a.spend().unwrap().stats();
    assert!(spend.waits[Kind::Send as usize] > 0);
    // Reads are free on CloudWatch Logs: polls never wait for money.
    assert_eq!(spend.waits[Kind::Poll as usize], 0);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn over_cloudwatch_logs_a_tight_ceiling_accepts_only_what_it_sends_within_hours() {
    let logs = MemoryLogs::new(LogsModel::CLOUDWATCH, 11);
    let link = |me| {
        Arc::new(CwlLink::new(logs.clone(), me, 1, CwlLinkConfig::default()).expect("settings"))
    };
    // The default buffer (64 MiB) holds a month of what $0.001 a day ingests (2 MB): the node
    // must not fill it, or what it accepts arrives weeks late.
    let config = NodeConfig {
        max_dollars_per_day: Some(0.001),
        seed: Some(A),
        ..NodeConfig::default()
    };
    let a = Node::start(link(A), config, |_| {});
    let arrived = Arc::new(Mutex::new(Vec::new()));
    let b = Node::start(link(B), NodeConfig::default(), {
        let arrived = Arc::clone(&arrived);
        move |r: Received| {
            let now = Instant::now();
            arrived
                .lock()
                .unwrap()
                .extend(r.frames.into_iter().map(|f| (f, now)));
        }
    });
    // 10 kB a second offered for two hours, each frame's acceptance noted.
    let start = Instant::now();
    let mut accepted_at = Vec::new();
    while start.elapsed() < Duration::from_secs(7_200) {
        a.send_wait(B, frame(accepted_at.len() as u64, 1_000))
            .await
            .expect("open");
        accepted_at.push(Instant::now());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        accepted_at.len() < 72_000 / 10,
        "{} frames accepted: the ceiling held none back",
        accepted_at.len()
    );
    let deadline = Instant::now() + DAY;
    while arrived.lock().unwrap().len() < accepted_at.len() {
        assert!(
            Instant::now() < deadline,
            "B never got everything A accepted"
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    let arrived = arrived.lock().unwrap().clone();
    let frames: Vec<Bytes> = arrived.iter().map(|(f, _)| f.clone()).collect();
    assert_in_order(&frames, accepted_at.len() as u64);
    let longest = arrived
        .iter()
        .zip(&accepted_at)
        .map(|((_, at), accepted)| *at - *accepted)
        .max()
        .unwrap();
    // The bucket pays for what the buffer holds in the six hours it takes to refill.
    assert!(
        longest <= Duration::from_secs(8 * 3_600),
        "a frame waited {longest:?} after it was accepted"
    );
    a.shutdown().await;
    b.shutdown().await;
}
