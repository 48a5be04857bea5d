//! End to end over CloudWatch Logs: two network namespaces, each running `tunnel up --link
//! cwl://…` on its own TUN device, joined by veth pairs to `moto_server` on the host; real
//! `ping -6` and real TCP across, through the real AWS SDK (the harness is in `e2e/`).
//!
//! Needs root, `ip`, `ping`, `python3` and moto (`scripts/test` installs them). Without them
//! these tests fail.

mod e2e;

use std::thread;
use std::time::{Duration, Instant};

use e2e::*;
use tunnels::link::cwl::layout::batch_stream;
use tunnels::link::cwl::{LogEvent, LogStore};

/// Waits until B has taken in at least `bytes` from the tunnel.
fn wait_for_data(net: &Net, bytes: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while net.metric(1, &labels("tunnel_bytes_total", NODE_B, "direction=\"in\"")) < bytes {
        assert!(Instant::now() < deadline, "no data flowed:\n{}", net.logs());
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ping_a_10_mb_transfer_and_foreign_events_over_cloudwatch_logs() {
    let mut net = Net::new_cwl(11);
    net.up(0, NODE_A, &[]);
    net.up(1, NODE_B, &[]);

    let first = ping(&net, 0, NODE_B, 3);
    assert!(
        first.status.success(),
        "{}\n{}",
        received(&first),
        net.logs()
    );

    // Events that are not batches, in the very stream A writes to B: counted and skipped.
    let stream = batch_stream(PREFIX, NODE_B, NODE_A);
    let store = net.runtime.block_on(net.moto.as_ref().unwrap().store());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let junk: Vec<LogEvent> = ["hello", "{\"not\": \"a batch\"}", "z0abc"]
        .into_iter()
        .map(|message| LogEvent {
            timestamp: now,
            message: message.into(),
        })
        .collect();
    net.runtime
        .block_on(store.put_events(GROUP, &stream, &junk))
        .unwrap();

    let transfer = Transfer::start(&net, 0, 1, NODE_B, 10_000_000);
    let (bytes, digest, expected, seconds) = transfer.finish(Duration::from_secs(300));
    assert_eq!(bytes, 10_000_000);
    assert_eq!(digest, expected);
    eprintln!("10 MB over CloudWatch Logs (moto) in {seconds:.1} s");

    let rejected = labels("tunnel_batches_total", NODE_B, "outcome=\"rejected\"");
    assert!(net.metric(1, &rejected) >= 3.0, "{}", net.logs());
    // With a deadline (-w), ping succeeds once it has its count of replies (it may have sent
    // one more, still on its way when it stops).
    let back = ping(&net, 1, NODE_A, 2);
    assert!(back.status.success(), "{}", received(&back));
    // Calls are counted under CloudWatch Logs' names, and ingestion is priced.
    let puts = labels(
        "tunnel_store_calls_total",
        NODE_A,
        "kind=\"put_log_events\"",
    );
    assert!(net.metric(0, &puts) > 10.0);
    let reads = labels(
        "tunnel_store_calls_total",
        NODE_B,
        "kind=\"get_log_events\"",
    );
    assert!(net.metric(1, &reads) > 10.0);
    assert!(net.metric(0, "tunnel_store_cost_dollars") > 0.0);
}

/// The service stops answering for 10 s in the middle of a transfer: the tunnel waits it out
/// and the transfer completes, intact.
#[test]
fn a_transfer_over_cloudwatch_logs_survives_the_service_stopping_for_10_s() {
    let mut net = Net::new_cwl(12);
    net.up(0, NODE_A, &[]);
    net.up(1, NODE_B, &[]);
    let transfer = Transfer::start(&net, 0, 1, NODE_B, 10_000_000);
    wait_for_data(&net, 1e6);
    let moto = net.moto.as_ref().unwrap();
    moto.pause();
    thread::sleep(Duration::from_secs(10));
    moto.resume();
    let (bytes, digest, expected, _) = transfer.finish(Duration::from_secs(300));
    assert_eq!(bytes, 10_000_000);
    assert_eq!(digest, expected);
    let lost = labels("tunnel_batches_total", NODE_B, "outcome=\"lost\"");
    assert_eq!(net.metric(1, &lost), 0.0, "{}", net.logs());
}

/// With `--ipv4`, over CloudWatch Logs too: ping and a TCP transfer to a peer's IPv4 address.
#[test]
fn ipv4_over_cloudwatch_logs_with_an_ipv4_range() {
    ipv4_ping_and_transfer(&mut Net::new_cwl(13));
}

/// `--mode tap` over CloudWatch Logs: neighbours resolved without a call, IPv4 and IPv6 pings
/// and a TCP transfer.
#[test]
fn tap_mode_over_cloudwatch_logs() {
    tap_mode(&mut Net::new_cwl(15));
}

/// The network key over CloudWatch Logs: two nodes holding it ping; a node with another key,
/// writing into their log group, reaches neither device.
#[test]
fn sealed_nodes_over_cloudwatch_logs_refuse_a_stranger() {
    use std::sync::Arc;
    use tunnels::Link;
    use tunnels::link::Sealing;
    use tunnels::link::cwl::{CwlLink, CwlLinkConfig};
    use tunnels::net::ip;
    use tunnels::wire::sealed::{Key, Keys};

    let mut net = Net::new_cwl(16);
    let key_file = std::env::temp_dir().join(format!("tunnel-cwl-key-{}", std::process::id()));
    std::fs::write(&key_file, Key::generate().to_line()).unwrap();
    let key_arg = key_file.to_str().unwrap().to_owned();
    net.up(0, NODE_A, &["--key-file", &key_arg]);
    net.up(1, NODE_B, &["--key-file", &key_arg]);
    let ping = ping(&net, 0, NODE_B, 2);
    assert!(ping.status.success(), "{}\n{}", received(&ping), net.logs());

    let in_b = labels("tunnel_packets_total", NODE_B, "direction=\"in\"");
    let unauthentic = labels("tunnel_batches_total", NODE_B, "outcome=\"unauthentic\"");
    thread::sleep(Duration::from_secs(2));
    let before = net.metric(1, &in_b);
    let store = net.runtime.block_on(net.moto.as_ref().unwrap().store());
    // A life that began now, as a node's does (an epoch of 1970 would be long dead).
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let stranger = CwlLink::new(
        store,
        0xc,
        epoch,
        CwlLinkConfig {
            group: GROUP.into(),
            prefix: PREFIX.into(),
            sealing: Some(Arc::new(Sealing::new(
                Keys::new(Key::generate(), None).unwrap(),
                format!("cwl://{GROUP}/{PREFIX}"),
            ))),
            ..CwlLinkConfig::default()
        },
    )
    .unwrap();
    let echo = ip::echo_request(
        node_addr(0xc).parse().unwrap(),
        node_addr(NODE_B).parse().unwrap(),
        9,
        1,
        b"from outside",
    );
    for _ in 0..2 {
        net.runtime
            .block_on(stranger.send(NODE_B, &[bytes::Bytes::from(echo.clone())]))
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while net.metric(1, &unauthentic) < 2.0 {
        assert!(Instant::now() < deadline, "not refused:\n{}", net.logs());
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        net.metric(1, &in_b),
        before,
        "the stranger reached B's device"
    );
    let _ = std::fs::remove_file(&key_file);
}
