//! The node over the lossless in-process link, on the paused clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bundler::ApiLimits;
use bytes::Bytes;
use tunnels::link::{LinkError, LinkStats, MemoryLink, MemoryNetwork, Prices, Usage};
use tunnels::{Link, Node, NodeConfig, NodeId, Received};

/// A link whose first poll panics, as a bug in a link or a store might.
struct PanicsOnce {
    link: MemoryLink,
    panicked: AtomicBool,
}

impl Link for PanicsOnce {
    fn limits(&self) -> ApiLimits {
        self.link.limits()
    }

    async fn send(&self, to: NodeId, frames: &[Bytes]) -> Result<(), LinkError> {
        self.link.send(to, frames).await
    }

    async fn poll(&self) -> Result<Vec<Received>, LinkError> {
        if !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("a bug in the link");
        }
        self.link.poll().await
    }

    fn usage(&self) -> Usage {
        self.link.usage()
    }

    fn prices(&self) -> &Prices {
        self.link.prices()
    }

    fn stats(&self) -> &LinkStats {
        self.link.stats()
    }
}

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

#[tokio::test(start_paused = true)]
async fn a_poll_that_panics_does_not_stop_the_node_from_receiving() {
    let net = MemoryNetwork::new();
    let a = Node::start(
        Arc::new(net.link(1, 1 << 20)),
        NodeConfig::default(),
        |_| {},
    );
    let (got, deliver) = collect();
    let b = Node::start(
        Arc::new(PanicsOnce {
            link: net.link(2, 1 << 20),
            panicked: AtomicBool::new(false),
        }),
        NodeConfig::default(),
        deliver,
    );
    a.send(2, Bytes::from_static(b"after the panic")).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        *got.lock().unwrap(),
        [Bytes::from_static(b"after the panic")]
    );
    assert_eq!(b.stats().poll_panics.load(Ordering::Relaxed), 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_delivery_that_panics_costs_that_batch_only() {
    let net = MemoryNetwork::new();
    let a = Node::start(
        Arc::new(net.link(1, 1 << 20)),
        NodeConfig::default(),
        |_| {},
    );
    let got = Arc::new(Mutex::new(Vec::new()));
    let b = Node::start(Arc::new(net.link(2, 1 << 20)), NodeConfig::default(), {
        let got = Arc::clone(&got);
        move |r: Received| {
            assert!(r.frames[0] != "poison", "a bug in the receiver");
            got.lock().unwrap().extend(r.frames);
        }
    });
    for frame in ["before", "poison", "after"] {
        a.send(2, Bytes::from_static(frame.as_bytes())).unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert_eq!(*got.lock().unwrap(), ["before", "after"]);
    assert_eq!(b.stats().poll_panics.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_by_reference_sends_what_is_queued_while_others_hold_the_node() {
    let net = MemoryNetwork::new();
    let config = NodeConfig {
        send_delay: Duration::from_secs(30),
        ..NodeConfig::default()
    };
    let a = Arc::new(Node::start(Arc::new(net.link(1, 1 << 20)), config, |_| {}));
    let (got, deliver) = collect();
    let b = Node::start(
        Arc::new(net.link(2, 1 << 20)),
        NodeConfig::default(),
        deliver,
    );
    let holder = Arc::clone(&a);
    a.send(2, Bytes::from_static(b"queued")).unwrap();
    // Long before its 30 s delay: shutdown sends it, though another Arc holds the node.
    a.shutdown().await;
    assert!(
        holder.send(2, Bytes::from_static(b"late")).is_err(),
        "closed"
    );
    a.shutdown().await; // a second call returns too
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(*got.lock().unwrap(), [Bytes::from_static(b"queued")]);
    b.shutdown().await;
}

/// Megabytes sent and received buy polls at the speed of the data, beats out of turn of the
/// poll heart: the poll budget caps them with the others, and without `bulk` there are none.
#[tokio::test(start_paused = true)]
async fn bulk_batches_buy_polls_at_the_speed_of_the_data_within_the_budget() {
    use tunnels::node::Bulk;
    let bulk = Bulk {
        bytes: 256 << 10,
        polls: 20,
        gap: Duration::from_millis(10),
        send_delay: Duration::from_millis(20),
    };
    let net = MemoryNetwork::new();
    let start = |id, bulk, budget| {
        let config = NodeConfig {
            bulk,
            poll_budget: budget,
            ..NodeConfig::default()
        };
        Node::start(Arc::new(net.link(id, 4 << 20)), config, |_| {})
    };
    let five = std::num::NonZeroU32::new(5).unwrap();
    let a = start(1, Some(bulk), None);
    let b = start(2, Some(bulk), None);
    let c = start(3, None, None);
    let d = start(
        4,
        Some(bulk),
        Some(cardio::Budget::per_day(five).with_burst(five)),
    );
    let frame = Bytes::from(vec![7u8; 1_000]);
    for to in [2, 3, 4] {
        for _ in 0..300 {
            a.send(to, frame.clone()).unwrap();
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bulk_polls = |node: &Node| node.stats().bulk_polls.load(Ordering::Relaxed);
    let received = |node: &Node| node.stats().frames_received.load(Ordering::Relaxed);
    assert_eq!((received(&b), received(&c), received(&d)), (300, 300, 300));
    // The sender's 300 KB batches and B's receipt each bought 20 (refilled, not added up).
    assert!((20..=60).contains(&bulk_polls(&a)), "{}", bulk_polls(&a));
    assert_eq!(bulk_polls(&b), 20);
    assert_eq!(bulk_polls(&c), 0);
    // D's budget: five polls in all, bulk ones included.
    assert!(d.stats().polls.load(Ordering::Relaxed) <= 5);
    assert!(bulk_polls(&d) < 5);
    for node in [a, b, c, d] {
        node.shutdown().await;
    }
}

/// While bulk polls last, a frame does not wait for company ([`Bulk::send_delay`], zero by
/// default): it goes at once, and its peer, polling at the speed of the data, reads it within
/// a bulk gap. Once the polls are spent, frames wait `send_delay` for company again.
#[tokio::test(start_paused = true)]
async fn while_data_flows_in_bulk_frames_do_not_wait_for_company() {
    use tokio::time::Instant;
    use tunnels::node::Bulk;
    let net = MemoryNetwork::new();
    let config = NodeConfig {
        bulk: Some(Bulk::default()),
        ..NodeConfig::default()
    };
    // B's deliveries: when, and how many frames each batch carried.
    let got: Arc<Mutex<Vec<(Instant, usize)>>> = Arc::default();
    let a = Node::start(Arc::new(net.link(1, 4 << 20)), config.clone(), |_| {});
    let b = Node::start(Arc::new(net.link(2, 4 << 20)), config.clone(), {
        let got = Arc::clone(&got);
        move |batch: Received| {
            got.lock()
                .unwrap()
                .push((Instant::now(), batch.frames.len()));
        }
    });
    let batches = |since: Instant| -> Vec<(Duration, usize)> {
        let got = got.lock().unwrap();
        (got.iter().filter(|(at, _)| *at >= since))
            .map(|&(at, n)| (at - since, n))
            .collect()
    };
    let big = Bytes::from(vec![7u8; 1_000]);
    let start = Instant::now();
    // Two batches of 300 KB, the second sent once B has the first: each bought bulk polls,
    // A's when it sent, B's when it read.
    for n in 1..=2 {
        for _ in 0..300 {
            a.send(2, big.clone()).unwrap();
        }
        while batches(start).len() < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert_eq!(
        batches(start).iter().map(|b| b.1).collect::<Vec<_>>(),
        [300, 300]
    );
    let small = Bytes::from_static(b"ack");
    let t1 = Instant::now();
    a.send(2, small.clone()).unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    a.send(2, small.clone()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let during = batches(t1);
    // Each went alone, at once, and B read the first within its bulk gap (10 ms).
    assert_eq!(during.iter().map(|b| b.1).collect::<Vec<_>>(), [1, 1]);
    assert!(during[0].0 <= config.bulk.unwrap().gap, "{during:?}");
    // The polls spent, two frames 5 ms apart wait for company and go together.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let t2 = Instant::now();
    a.send(2, small.clone()).unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    a.send(2, small).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = batches(t2);
    assert_eq!(
        after.iter().map(|b| b.1).collect::<Vec<_>>(),
        [2],
        "{after:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}
