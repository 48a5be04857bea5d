//! End to end: two network namespaces, each running `tunnel up` with its own TUN device and node
//! id, joined by veth pairs to an S3-compatible server (s3s-fs) on the host; real `ping -6` and
//! real TCP across, through the real AWS SDK (the harness is in `e2e/`).
//!
//! Needs root, `ip`, `ping` and `python3` (`scripts/test` installs them). Without them these
//! tests fail: they are the tunnel's proof.

mod e2e;

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use e2e::*;
use tunnels::link::s3::{ObjectStore, batch_key, bell_key};
use tunnels::wire::Header;

#[test]
fn ping_and_a_10_mb_transfer_cross_the_tunnel() {
    let mut net = Net::new(1);
    net.up(0, NODE_A, &[]);
    net.up(1, NODE_B, &[]);

    // The device has the node's address and the network's route, with its congestion control.
    let addr = String::from_utf8_lossy(
        &net.exec(0, &["ip", "-6", "addr", "show", "dev", "tun0"])
            .stdout,
    )
    .into_owned();
    assert!(
        addr.contains(&format!("{}/64", node_addr(NODE_A))),
        "{addr}"
    );
    let route = String::from_utf8_lossy(
        &net.exec(1, &["ip", "-6", "route", "show", "dev", "tun0"])
            .stdout,
    )
    .into_owned();
    assert!(
        route.contains(&format!("{NETWORK}::/64")) && route.contains("congctl cubic"),
        "{route}"
    );

    let ping = ping(&net, 0, NODE_B, 3);
    assert!(
        ping.status.success(),
        "ping failed:\n{}\n{}",
        received(&ping),
        net.logs()
    );
    assert!(
        received(&ping).contains("3 received"),
        "{}",
        received(&ping)
    );

    let transfer = Transfer::start(&net, 0, 1, NODE_B, 10_000_000);
    let (bytes, digest, expected, seconds) = transfer.finish(Duration::from_secs(300));
    assert_eq!(bytes, 10_000_000);
    assert_eq!(digest, expected);
    eprintln!("10 MB in {seconds:.1} s");
    // Neither device dropped a packet: the transmit queue holds a TCP window's burst.
    for side in [0, 1] {
        let stats = net.exec(side, &["ip", "-s", "-j", "link", "show", "tun0"]);
        let text = String::from_utf8_lossy(&stats.stdout);
        assert!(text.contains("\"txqlen\":10000"), "{text}");
        assert!(
            text.matches("\"dropped\":").count() == 2
                && text.matches("\"dropped\":0,").count() == 2,
            "{text}"
        );
    }

    // What went through is counted where users look: at least a packet per MTU (65,535 by
    // default on a TUN device) of the 10 MB.
    assert!(
        net.metric(
            0,
            &labels("tunnel_packets_total", NODE_A, "direction=\"out\"")
        ) > 10e6 / 65_535.0
    );
    assert!(net.metric(1, &labels("tunnel_bytes_total", NODE_B, "direction=\"in\"")) > 10e6);
    assert!(net.metric(0, "tunnel_store_calls_total{") > 0.0);
    assert!(net.metric(0, "tunnel_store_cost_dollars{") > 0.0);
    assert_eq!(net.metric(0, "tunnel_packets_dropped_total{"), 0.0);
    assert_eq!(net.metric(1, "tunnel_packets_dropped_total{"), 0.0);
}

/// Objects that are not batches, dropped into a node's inbox, are counted, deleted, and do not
/// disturb a ping running meanwhile.
#[test]
fn garbage_in_an_inbox_is_counted_deleted_and_harmless() {
    let mut net = Net::new(2);
    net.up(0, NODE_A, &[]);
    net.up(1, NODE_B, &[]);
    let store = net.store();

    let pinger = {
        let mut args = vec!["netns".to_owned(), "exec".to_owned(), net.ns(0).to_owned()];
        for a in ["ping", "-6", "-n", "-c", "10", "-i", "0.5", "-w", "90"] {
            args.push(a.to_owned());
        }
        args.push(node_addr(NODE_B));
        Command::new("ip")
            .args(&args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    thread::sleep(Duration::from_secs(2));

    let stranger = 0xbad;
    let mut valid = Vec::new();
    Header {
        sender: stranger,
        epoch: 1,
        seq: 1,
    }
    .emit(&[b"not a packet anyway".as_slice()], &mut valid)
    .unwrap();
    let mut wrong_magic = valid.clone();
    wrong_magic[..4].copy_from_slice(b"JUNK");
    let truncated = valid[..valid.len() - 5].to_vec();
    let random: Vec<u8> = (0..500u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let keys: Vec<String> = (0..3)
        .map(|seq| batch_key(PREFIX, NODE_B, stranger, 1, seq))
        .collect();
    net.runtime.block_on(async {
        for (key, body) in keys.iter().zip([random, wrong_magic, truncated]) {
            store.put(key, Bytes::from(body)).await.unwrap();
        }
        store
            .put(&bell_key(PREFIX, NODE_B), Bytes::new())
            .await
            .unwrap();
    });

    let deadline = Instant::now() + Duration::from_secs(60);
    while net.metric(
        1,
        &labels("tunnel_batches_total", NODE_B, "outcome=\"rejected\""),
    ) < 3.0
    {
        assert!(
            Instant::now() < deadline,
            "the garbage was not rejected:\n{}",
            net.logs()
        );
        thread::sleep(Duration::from_millis(500));
    }
    let inbox = format!("{PREFIX}{NODE_B:016x}/{stranger:016x}/");
    let left = net.runtime.block_on(store.list(&inbox, None, 100)).unwrap();
    assert!(left.is_empty(), "not deleted: {left:?}");

    let output = pinger.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && text.contains("10 received"),
        "{text}\n{}",
        net.logs()
    );

    // SIGTERM: a clean exit, and the device goes with the process.
    for side in [0, 1] {
        let pid = net.tunnels[side].child.id().to_string();
        run("kill", &["-TERM", &pid]);
        let status = net.tunnels[side].child.wait().unwrap();
        assert!(status.success(), "{status}\n{}", net.logs());
        // The log reader may still be reading the last lines.
        let deadline = Instant::now() + Duration::from_secs(5);
        let log = loop {
            let log = net.tunnels[side].log.lock().unwrap().join("\n");
            if log.contains(" down") || Instant::now() > deadline {
                break log;
            }
            thread::sleep(Duration::from_millis(50));
        };
        assert!(log.contains("stopping") && log.contains(" down"), "{log}");
        let links = net.exec(side, &["ip", "link", "show", "tun0"]);
        assert!(!links.status.success(), "tun0 outlived its tunnel");
    }
}

/// The server stopped for 10 s in the middle of a transfer and started again: the tunnel
/// recovers by itself and the transfer completes, intact.
#[test]
fn a_transfer_survives_the_server_stopping_for_10_s() {
    let mut net = Net::new(3);
    net.up(0, NODE_A, &[]);
    net.up(1, NODE_B, &[]);
    let transfer = Transfer::start(&net, 0, 1, NODE_B, 10_000_000);

    // Wait for data to flow, then pull the plug.
    let deadline = Instant::now() + Duration::from_secs(60);
    while net.metric(1, &labels("tunnel_bytes_total", NODE_B, "direction=\"in\"")) < 1e6 {
        assert!(Instant::now() < deadline, "no data flowed:\n{}", net.logs());
        thread::sleep(Duration::from_millis(100));
    }
    let addr = net.server_addr;
    net.server.take().unwrap().stop();
    thread::sleep(Duration::from_secs(10));
    net.start_server(addr);

    let (bytes, digest, expected, _) = transfer.finish(Duration::from_secs(300));
    assert_eq!(bytes, 10_000_000);
    assert_eq!(digest, expected);
    assert!(
        net.metric(0, "tunnel_store_retries_total") > 0.0,
        "the outage was not noticed:\n{}",
        net.logs()
    );
}

/// With --bulk-polls, a transfer's batches buy polls between heartbeats on both sides (the
/// sender's for the acknowledgements), and every byte still arrives once and in order.
#[test]
fn bulk_polls_carry_a_transfer_between_heartbeats() {
    let mut net = Net::new(19);
    net.up(0, NODE_A, &["--bulk-polls", "20"]);
    net.up(1, NODE_B, &["--bulk-polls", "20"]);
    let transfer = Transfer::start(&net, 0, 1, NODE_B, 10_000_000);
    let (bytes, digest, expected, _) = transfer.finish(Duration::from_secs(300));
    assert_eq!((bytes, digest), (10_000_000, expected));
    // The metrics are copied from the node's counts once a second.
    thread::sleep(Duration::from_millis(1500));
    for (side, node) in [(0, NODE_A), (1, NODE_B)] {
        let bulk = net.metric(side, &labels("tunnel_polls_total", node, "kind=\"bulk\""));
        assert!(
            bulk > 0.0,
            "node {node:x} made no bulk poll:\n{}",
            net.logs()
        );
        assert!(
            net.metric(
                side,
                &labels("tunnel_polls_total", node, "kind=\"heartbeat\"")
            ) > 0.0
        );
    }
}

/// A tight --max-dollars-per-day holds a node's sends back (its replies wait for money and
/// come later), nothing is lost, and the metrics say what is spent and what waits.
#[test]
fn a_dollar_ceiling_holds_a_node_back_and_says_so() {
    let mut net = Net::new(20);
    // A fifth of a cent a day: a bucket of about 40 sends at once, then one every 9 minutes.
    net.up(0, NODE_A, &["--max-dollars-per-day", "0.002"]);
    net.up(1, NODE_B, &[]);
    let addr = node_addr(NODE_A);
    let ping = net.exec(
        1,
        &[
            "ping", "-6", "-n", "-c", "120", "-i", "0.2", "-w", "32", &addr,
        ],
    );
    let text = received(&ping);
    let got: u32 = text
        .split(" received")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    // The bucket's burst carried the first replies, then A's sends waited for money (what
    // waits is queued, not lost: tunnels/tests/ceiling.rs follows it to delivery).
    assert!(
        (20..120).contains(&got),
        "{got} replies\n{text}\n{}",
        net.logs()
    );
    // The metrics are copied from the node's counts once a second.
    thread::sleep(Duration::from_millis(1500));
    let metric = |name: &str, label: &str| net.metric(0, &labels(name, NODE_A, label));
    assert_eq!(net.metric(0, "tunnel_budget_dollars_per_day{"), 0.002);
    let spent = net.metric(0, "tunnel_budget_spent_dollars{");
    assert!(spent > 0.0 && spent <= 0.002, "{spent}");
    assert!((net.metric(0, "tunnel_budget_spent_ratio{") - spent / 0.002).abs() < 1e-6);
    assert!(metric("tunnel_budget_waits_total", "kind=\"send\"") > 0.0);
    assert!(metric("tunnel_budget_waiting", "kind=\"send\"") > 0.0);
    // Polls have their own half: A kept reading B's requests.
    assert_eq!(metric("tunnel_budget_waits_total", "kind=\"poll\""), 0.0);
}

/// SIGTERM sends what is queued before the tunnel exits, even while the bucket is unreachable
/// for a while: a packet accepted is not lost to a restart.
#[test]
fn sigterm_sends_what_is_pending_first() {
    let mut net = Net::new(5);
    net.up(0, NODE_A, &[]);
    net.up(1, NODE_B, &[]);
    assert!(ping(&net, 0, NODE_B, 1).status.success(), "{}", net.logs());
    let out_a = labels("tunnel_packets_total", NODE_A, "direction=\"out\"");
    let in_b = labels("tunnel_packets_total", NODE_B, "direction=\"in\"");
    let (sent, arrived) = (net.metric(0, &out_a), net.metric(1, &in_b));

    // The server goes away; one echo request leaves A and its PUT retries.
    let addr = net.server_addr;
    net.server.take().unwrap().stop();
    let _ = net.exec(
        0,
        &["ping", "-6", "-n", "-c", "1", "-W", "1", &node_addr(NODE_B)],
    );
    assert_eq!(net.metric(0, &out_a), sent + 1.0);
    run("kill", &["-TERM", &net.tunnels[0].child.id().to_string()]);
    thread::sleep(Duration::from_secs(3));
    assert!(
        net.tunnels[0].child.try_wait().unwrap().is_none(),
        "the tunnel exited with a packet still queued:\n{}",
        net.logs()
    );

    net.start_server(addr);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = net.tunnels[0].child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit:\n{}", net.logs());
        thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}\n{}", net.logs());
    while net.metric(1, &in_b) < arrived + 1.0 {
        assert!(
            Instant::now() < deadline,
            "the queued packet never arrived:\n{}",
            net.logs()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// With `--ipv4`, IPv4 travels as IPv6 does: ping and a TCP transfer to a peer's IPv4 address.
#[test]
fn ipv4_ping_and_transfer_with_an_ipv4_range() {
    ipv4_ping_and_transfer(&mut Net::new(6));
}

/// `--mode tap`: neighbours resolved without a call, IPv4 and IPv6 pings and a TCP transfer.
#[test]
fn tap_mode_answers_neighbours_locally_and_carries_ipv4_and_ipv6() {
    tap_mode(&mut Net::new(7));
}

/// A TUN node and a TAP node share one network; the TAP device still works as a port of a
/// bridge that holds the node's addresses (the README's bridging recipe).
#[test]
fn a_tun_node_and_a_bridged_tap_node_share_a_network() {
    let mut net = Net::new(8);
    net.up(0, NODE_A, &["--ipv4", "10.77.0.0/16"]);
    net.up(1, NODE_B, &["--mode", "tap", "--ipv4", "10.77.0.0/16"]);
    let ping6 = ping(&net, 0, NODE_B, 2);
    assert!(
        ping6.status.success(),
        "{}\n{}",
        received(&ping6),
        net.logs()
    );

    // The recipe: a bridge with a MAC address of its own, the TAP device its port, the node's
    // addresses moved from the device to the bridge.
    let (v6, v4) = (format!("{}/64", node_addr(NODE_B)), "10.77.0.11/16");
    for step in [
        vec![
            "ip",
            "link",
            "add",
            "br0",
            "address",
            "52:54:00:12:34:56",
            "type",
            "bridge",
        ],
        vec!["ip", "link", "set", "tap0", "master", "br0"],
        vec!["ip", "addr", "del", &v6, "dev", "tap0"],
        vec!["ip", "addr", "del", v4, "dev", "tap0"],
        vec!["ip", "addr", "add", &v6, "dev", "br0", "nodad"],
        vec!["ip", "addr", "add", v4, "dev", "br0"],
        vec!["ip", "link", "set", "br0", "up"],
    ] {
        let out = net.exec(1, &step);
        assert!(
            out.status.success(),
            "{step:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_pings(&net, 1, &node_addr(NODE_A), 2);
    assert_pings(&net, 1, "10.77.0.10", 2);
    let back = ping(&net, 0, NODE_B, 2);
    assert!(back.status.success(), "{}\n{}", received(&back), net.logs());
    let transfer = Transfer::start(&net, 0, 1, NODE_B, 1_000_000);
    let (bytes, digest, expected, _) = transfer.finish(Duration::from_secs(120));
    assert_eq!((bytes, digest), (1_000_000, expected));
}

/// As the systemd unit in `deploy/` runs it: an unprivileged user holding only CAP_NET_ADMIN
/// (ambient, as `AmbientCapabilities=` gives it) brings the device up and carries a ping, in
/// TUN and in TAP mode.
#[test]
fn an_unprivileged_user_with_only_cap_net_admin_runs_the_tunnel() {
    let mut net = Net::new(9);
    // Distributions make /dev/net/tun 0666 (udev), so that such a user can open it; where it
    // is 0600, as on this project's machine, the namespace gets a 0666 node of its own (in a
    // tmpfs of its mount namespace, gone with it) instead of the host's being changed.
    // The user must be able to run the binary: a copy of it where everyone can (the build's
    // own directory may be private to its owner).
    let binary = std::env::temp_dir().join(format!("tunnel-nobody-{}", std::process::id()));
    std::fs::copy(env!("CARGO_BIN_EXE_tunnel"), &binary).unwrap();
    let script = format!(
        "mount -t tmpfs tun /dev/net && mknod -m 0666 /dev/net/tun c 10 200 && shift && \
         exec setpriv --reuid=nobody --regid=nogroup --clear-groups \
         --inh-caps=-all,+net_admin --ambient-caps=-all,+net_admin \
         --bounding-set=-all,+net_admin {} \"$@\"",
        binary.display()
    );
    // `sh -c SCRIPT sh BINARY up ...`: the script drops the harness's binary for the copy.
    let only_net_admin = ["sh", "-c", &script, "sh"];
    net.up_under(0, NODE_A, &[], &only_net_admin);
    net.up_under(1, NODE_B, &["--mode", "tap"], &only_net_admin);
    // The processes run as nobody, with CAP_NET_ADMIN (bit 12) and nothing else.
    for tunnel in &net.tunnels {
        let pid = tunnel.child.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            // `ip netns exec` runs the wrapper in its place; find the tunnel under it.
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            if status.contains("\nUid:\t65534") || Instant::now() > deadline {
                break status;
            }
            thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.contains("\nUid:\t65534\t65534\t65534\t65534"),
            "{status}"
        );
        assert!(status.contains("\nCapEff:\t0000000000001000"), "{status}");
    }
    let out = ping(&net, 0, NODE_B, 2);
    assert!(out.status.success(), "{}\n{}", received(&out), net.logs());
    let back = ping(&net, 1, NODE_A, 2);
    assert!(back.status.success(), "{}\n{}", received(&back), net.logs());
    drop(net);
    let _ = std::fs::remove_file(&binary);
}

/// The network key (`--key-file`): two nodes holding it ping and transfer; a node with another
/// key reaches neither device; a sealed batch moved to another inbox, replayed into the same
/// inbox after it was read, or replayed after the receiver restarted, is refused.
#[test]
fn sealed_nodes_talk_and_nothing_else_reaches_their_devices() {
    use std::sync::Arc;
    use tunnels::link::Sealing;
    use tunnels::link::s3::{S3Link, S3LinkConfig};
    use tunnels::net::ip;
    use tunnels::wire::sealed::{Key, Keys};
    use tunnels::{Link, NodeId};

    let mut net = Net::new(10);
    let key = Key::generate();
    let key_file = std::env::temp_dir().join(format!("tunnel-key-{}", std::process::id()));
    std::fs::write(&key_file, format!("{}\n", key.to_line())).unwrap();
    let key_arg = key_file.to_str().unwrap().to_owned();
    net.up(0, NODE_A, &["--key-file", &key_arg]);
    net.up(1, NODE_B, &["--key-file", &key_arg]);
    assert!(net.logs().contains("traffic is sealed"), "{}", net.logs());
    let ping = ping(&net, 0, NODE_B, 3);
    assert!(ping.status.success(), "{}\n{}", received(&ping), net.logs());
    let transfer = Transfer::start(&net, 0, 1, NODE_B, 1_000_000);
    let (bytes, digest, expected, _) = transfer.finish(Duration::from_secs(120));
    assert_eq!((bytes, digest), (1_000_000, expected));

    let in_b = labels("tunnel_packets_total", NODE_B, "direction=\"in\"");
    let unauthentic = labels("tunnel_batches_total", NODE_B, "outcome=\"unauthentic\"");
    let network = format!("s3://{BUCKET}/{PREFIX}");
    let echo = |from: NodeId| {
        let (src, dst) = (
            node_addr(from).parse().unwrap(),
            node_addr(NODE_B).parse().unwrap(),
        );
        Bytes::from(ip::echo_request(src, dst, 77, 1, b"from outside"))
    };

    // A third node, C, with a key of its own, sends real echo requests to B; first the
    // transfer's last segments settle.
    let mut before = net.metric(1, &in_b);
    loop {
        thread::sleep(Duration::from_secs(2));
        let now = net.metric(1, &in_b);
        if now == before {
            break;
        }
        before = now;
    }
    let stranger = Keys::new(Key::generate(), None).unwrap();
    let c = S3Link::new(
        net.store(),
        0xc,
        1,
        S3LinkConfig {
            prefix: PREFIX.into(),
            sealing: Some(Arc::new(Sealing::new(stranger, network.clone()))),
            ..S3LinkConfig::default()
        },
    );
    for _ in 0..3 {
        net.runtime.block_on(c.send(NODE_B, &[echo(0xc)])).unwrap();
    }
    wait_for(&net, "C's batches were not refused", |net| {
        net.metric(1, &unauthentic) >= 3.0
    });
    assert_eq!(net.metric(1, &in_b), before, "C reached B's device");
    assert!(
        net.logs()
            .contains("refused a batch not sealed with the network's key")
    );

    // A member's batch (sealed with the key by D, who holds it) for A, copied into B's inbox.
    let member = Sealing::new(Keys::new(key.clone(), None).unwrap(), network.clone());
    let d: NodeId = 0xd;
    let plain = |seq: u64| {
        let mut out = Vec::new();
        tunnels::wire::Header {
            sender: d,
            epoch: 5,
            seq,
        }
        .emit(&[echo(d)], &mut out)
        .unwrap();
        out
    };
    let store = net.store();
    let put = |net: &Net, seq: u64, body: &[u8]| {
        net.runtime.block_on(async {
            let key = batch_key(PREFIX, NODE_B, d, 5, seq);
            store.put(&key, Bytes::copy_from_slice(body)).await.unwrap();
            store
                .put(&bell_key(PREFIX, NODE_B), Bytes::new())
                .await
                .unwrap();
        })
    };
    let refused = net.metric(1, &unauthentic);
    put(&net, 0, &member.seal(&plain(0), NODE_A));
    wait_for(&net, "a batch for A was not refused in B's inbox", |net| {
        net.metric(1, &unauthentic) > refused
    });
    assert_eq!(net.metric(1, &in_b), before);

    // D's batch for B is delivered once; the same bytes put back after B read them are not.
    let for_b = member.seal(&plain(1), NODE_B);
    put(&net, 1, &for_b);
    wait_for(&net, "D's batch was not delivered", |net| {
        net.metric(1, &in_b) > before
    });
    let delivered = net.metric(1, &in_b);
    let duplicates = labels("tunnel_batches_total", NODE_B, "outcome=\"duplicate\"");
    let dup_before = net.metric(1, &duplicates);
    put(&net, 1, &for_b);
    wait_for(&net, "the replay was not dropped", |net| {
        net.metric(1, &duplicates) > dup_before
    });
    assert_eq!(
        net.metric(1, &in_b),
        delivered,
        "a replay reached B's device"
    );

    // B restarts (a new life, which remembers nothing); the old batch replayed is refused by
    // the time sealed in it, once the clock skew allowed (10 s) has passed.
    thread::sleep(Duration::from_secs(11));
    let _ = net.tunnels[1].child.kill();
    let _ = net.tunnels[1].child.wait();
    net.tunnels.remove(1);
    net.up(1, NODE_B, &["--key-file", &key_arg]);
    put(&net, 1, &for_b);
    wait_for(&net, "the replay after a restart was not refused", |net| {
        net.metric(1, &unauthentic) >= 1.0
    });
    assert_eq!(
        net.metric(1, &in_b),
        0.0,
        "the old batch reached B's device after a restart"
    );
    let _ = std::fs::remove_file(&key_file);
}

/// Waits up to a minute for `done`, failing with `what` and the logs.
fn wait_for(net: &Net, what: &str, done: impl Fn(&Net) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(net) {
        assert!(Instant::now() < deadline, "{what}:\n{}", net.logs());
        thread::sleep(Duration::from_millis(200));
    }
}
