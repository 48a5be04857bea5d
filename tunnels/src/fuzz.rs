//! The properties the fuzz targets check, here so that `cargo test` replays the committed corpus
//! through the very same code on stable (see `tests/fuzz_corpus.rs`).

use crate::wire::Batch;
use crate::wire::text::{self, TextEncoding};

/// Decoding arbitrary bytes never panics; what decodes re-encodes to the same bytes (the format
/// is canonical), and decodes again to the same batch.
pub fn batch(data: &[u8]) {
    let Ok(batch) = Batch::new_checked(data) else {
        return;
    };
    let frames: Vec<&[u8]> = batch.frames().collect();
    assert_eq!(frames.len(), batch.frame_count() as usize);
    let mut again = Vec::new();
    batch
        .header()
        .emit(&frames, &mut again)
        .expect("decoded frames fit");
    assert_eq!(again, data, "decode then encode changed the bytes");
    let reparsed = Batch::new_checked(&again[..]).expect("re-encoded batch decodes");
    assert_eq!(reparsed.header(), batch.header());
}

/// Decoding arbitrary text never panics; what decodes re-encodes to the same text.
pub fn text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut bytes = Vec::new();
    if text::decode(text, &mut bytes).is_err() {
        return;
    }
    let encoding = if text.starts_with('z') {
        TextEncoding::Z85
    } else {
        TextEncoding::Base64
    };
    let mut again = String::new();
    text::encode(&bytes, encoding, &mut again);
    assert_eq!(again, text, "decode then encode changed the text");
    // A text-borne batch goes through both decoders in a link.
    batch(&bytes);
}

/// Reading any bytes as an IPv6 packet (what a tunnel does with every packet from its device
/// and from the link) never panics; an echo request is answered with a valid reply.
pub fn ip(data: &[u8]) {
    use crate::net::ip::{Ipv6, echo, echo_reply};
    let Some(packet) = Ipv6::new_checked(data) else {
        return;
    };
    let _ = (packet.src(), packet.dst(), packet.payload().len());
    if let Some(reply) = echo_reply(&packet) {
        let reply = Ipv6::new_checked(&reply).expect("a reply is a packet");
        let answer = echo(&reply).expect("a reply is an echo");
        assert!(!answer.request);
        assert_eq!(reply.dst(), packet.src());
    }
}

/// Whatever events a CloudWatch Logs stream holds (anyone who may write to the log group can
/// put anything there), a receiver never panics, delivers only valid batches of the stream's
/// sender, each once; marks and rings parse back to what they say.
///
/// The input is split at 0xff bytes into events; each event's first byte picks its stream (the
/// sender's, the bell or the mark) and the rest is its message, read as UTF-8 (lossily, as the
/// service would have refused invalid UTF-8).
pub fn cwl(data: &[u8]) {
    use crate::link::Link;
    use crate::link::cwl::layout::{self, Mark};
    use crate::link::cwl::{CwlLink, CwlLinkConfig, LogEvent, LogsModel, MemoryLogs};

    const A: u64 = 0xa;
    const B: u64 = 0xb;
    let messages: Vec<(u8, String)> = data
        .split(|&b| b == 0xff)
        .take(64)
        .filter_map(|part| {
            let (&kind, message) = part.split_first()?;
            Some((kind % 3, String::from_utf8_lossy(message).into_owned()))
        })
        .collect();
    for (_, message) in &messages {
        if let Some(mark) = Mark::parse(message) {
            assert_eq!(Mark::parse(&mark.to_message()), Some(mark));
        }
        if let Some((sender, epoch)) = layout::parse_ring(message) {
            assert_eq!(
                layout::parse_ring(&layout::ring(sender, epoch)),
                Some((sender, epoch))
            );
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let logs = MemoryLogs::new(LogsModel::LOCAL, 0);
        // No grace (a gap is skipped at once) and reads without limit: every path, no waiting.
        let config = CwlLinkConfig {
            group: "g".into(),
            gap_grace: std::time::Duration::ZERO,
            read_rate: crate::link::cwl::read_rate(1e6).expect("a rate"),
            ..CwlLinkConfig::default()
        };
        let now = logs.now_ms();
        for (i, (kind, message)) in messages.into_iter().enumerate() {
            let stream = match kind {
                0 => layout::batch_stream("", B, A),
                1 => layout::bell_stream("", B),
                _ => layout::mark_stream("", B),
            };
            let event = LogEvent {
                timestamp: now + i as i64,
                message,
            };
            logs.insert("g", &stream, event);
        }
        let b = CwlLink::new(logs, B, 1, config).expect("valid settings");
        let mut seen = std::collections::HashSet::new();
        for _ in 0..4 {
            for got in b.poll().await.unwrap_or_default() {
                assert_eq!(got.sender, A, "only the stream's sender");
                assert!(seen.insert((got.epoch, got.seq)), "delivered twice");
            }
        }
    });
}

/// Any frame the host writes to a TAP device: answering it never panics, and an answer is a
/// well-formed Ethernet frame (ARP or IPv6) from the MAC address of the peer asked about. The
/// TAP mode's switch never panics either: what it carries is the IP packet inside the frame,
/// for a peer whose MAC address the frame named, and it is framed again for the peer's host
/// unchanged. The same bytes read as an IP packet (IPv4 or IPv6) by a router with an IPv4
/// range never panic.
pub fn ether(data: &[u8]) {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use crate::net::ether::{Ipv4Net, Neighbours, mac_of};
    use crate::net::switch::{FromHost, HEADER_LEN, Switch};
    use crate::net::{Accept, Route, Router};

    let network = Ipv6Addr::new(0xfd5e, 0x59b8, 0xf71d, 0x9a3e, 0, 0, 0, 0);
    let ipv4 = Ipv4Net::new(Ipv4Addr::new(10, 77, 0, 0), 16);
    if let Some(router) = ipv4.and_then(|net| Router::new(network, 0xa).with_ipv4(net)) {
        let _ = (router.route(data), router.accept(0xb, data));
        let switch = Switch::new(router, mac_of(0xa));
        if let FromHost::Packet {
            route: Route::Node(to),
            packet,
        } = switch.read_frame(data)
        {
            assert_eq!(&data[..6], &mac_of(to)[..], "to the MAC address it named");
            assert!(data[HEADER_LEN..].starts_with(packet));
            let peer = Switch::new(Router::new(network, to), mac_of(to));
            if peer.router().accept(0xa, packet) == Accept::Deliver {
                let mut out = Vec::new();
                peer.to_host(0xa, packet, &mut out);
                assert_eq!(&out[HEADER_LEN..], packet);
            }
        }
    }
    let Some(reply) = Neighbours::new(network, ipv4, 0xa).answer(data) else {
        return;
    };
    assert!(reply.len() >= 14 + 28, "a frame too short to be an answer");
    let ethertype = u16::from_be_bytes([reply[12], reply[13]]);
    assert!(ethertype == 0x0806 || ethertype == 0x86dd, "{ethertype:#x}");
    // The source is a peer's MAC address, never ours.
    assert_eq!(reply[6], 0x02);
    assert_ne!(&reply[6..12], &mac_of(0xa)[..]);
}

/// Any bytes as a sealed batch, opened by a node holding two keys: opening never panics, and
/// what opens is a valid plain batch that seals and opens again to the same bytes. Bytes that
/// are a plain batch are sealed, opened back unchanged, and with any one bit flipped (chosen
/// by the input, the checksum recomputed) refused.
pub fn sealed(data: &[u8]) {
    use std::num::NonZeroU16;

    use crate::wire::Batch;
    use crate::wire::sealed::{self, Key, Keys, Place};

    let key = |id: u16, byte: u8| Key::new(NonZeroU16::new(id).expect("not zero"), [byte; 32]);
    let keys = Keys::new(key(1, 0x11), Some(key(2, 0x22))).expect("two ids");
    let place = Place {
        network: b"s3://fuzz/net/",
        destination: 0xb,
    };
    let mut opened = Vec::new();
    if let Ok(sent) = sealed::open(data, &keys, &place, &mut opened) {
        assert!(
            Batch::new_checked(&opened[..]).is_ok(),
            "opened a batch that is not one"
        );
        let mut again = Vec::new();
        sealed::seal(&opened, &keys, &place, sent, &mut again).expect("a plain batch seals");
        let mut twice = Vec::new();
        assert_eq!(sealed::open(&again, &keys, &place, &mut twice), Ok(sent));
        assert_eq!(twice, opened);
    }
    if Batch::new_checked(data).is_ok() {
        let mut s = Vec::new();
        sealed::seal(data, &keys, &place, 42, &mut s).expect("a plain batch seals");
        assert_eq!(sealed::open(&s, &keys, &place, &mut opened), Ok(42));
        assert_eq!(opened, data);
        let bit = usize::from(data[data.len() - 1]) * 31 % (8 * s.len());
        s[bit / 8] ^= 1 << (bit % 8);
        // The checksum made good again, as a forger would: the tag alone must refuse it.
        let n = s.len() - 4;
        if bit / 8 < n {
            let crc = crc32c::crc32c(&s[..n]);
            s[n..].copy_from_slice(&crc.to_be_bytes());
        }
        assert!(
            sealed::open(&s, &keys, &place, &mut opened).is_err(),
            "bit {bit} flipped"
        );
    }
}

/// Whatever packets a peer sends a userspace node (through the link, anyone who may write to
/// the bucket or log group), its stack never panics: the SYN classifier reads them, and the
/// stack (with exposed TCP and UDP ports) takes them and answers what it answers. The input is
/// split at each `0xff 0xfe` into packets.
#[cfg(feature = "userspace")]
pub fn userspace(data: &[u8]) {
    use crate::device::Device;
    use crate::stack::{Protocol, Stack, StackConfig, classify};

    thread_local! {
        static STACK: (tokio::runtime::Runtime, Stack) = {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let stack = runtime.block_on(async {
                let mut config = StackConfig::new("fd5e:59b8:f71d:9a3e::a".parse().unwrap());
                config.ipv4 = Some(("10.77.0.10".parse().unwrap(), 16));
                let stack = Stack::start(config);
                // Nothing listens on port 1: SYNs to 80 are dialled, refused and reset.
                stack.expose(Protocol::Tcp, 80, "127.0.0.1:1".parse().unwrap());
                stack.expose(Protocol::Udp, 53, "127.0.0.1:1".parse().unwrap());
                stack
            });
            (runtime, stack)
        };
    }
    let mut packets = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(2).position(|w| w == [0xff, 0xfe]) {
        packets.push(&rest[..at]);
        rest = &rest[at + 2..];
    }
    packets.push(rest);
    STACK.with(|(runtime, stack)| {
        runtime.block_on(async {
            for packet in packets {
                if classify::syn(packet).is_some() {
                    assert!(packet.len() >= 40, "a SYN is a whole TCP/IP header");
                }
                let _ = stack.try_send(packet);
            }
            // Let the engine take them, then take what it sent.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            let mut buf = vec![0u8; 65_536];
            while let Ok(Ok(_)) =
                tokio::time::timeout(std::time::Duration::ZERO, stack.recv(&mut buf)).await
            {
            }
        });
    });
}
