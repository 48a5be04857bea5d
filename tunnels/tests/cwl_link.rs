//! The CloudWatch Logs link's logic over the in-memory service, on the paused clock: every
//! PutLogEvents the link makes is checked against the service's limits by the model, which
//! refuses what the service would.

use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use cardio::Budget;
use tunnels::link::StoreErrorKind;
use tunnels::link::cwl::layout::{batch_stream, bell_stream, mark_stream};
use tunnels::link::cwl::{Call, CwlLink, CwlLinkConfig, LogEvent, LogsModel, MemoryLogs, ReadMode};
use tunnels::{Link, Received};

const A: u64 = 0xa;
const B: u64 = 0xb;
const GROUP: &str = "net";

fn config() -> CwlLinkConfig {
    CwlLinkConfig {
        group: GROUP.into(),
        prefix: "t/".into(),
        ..CwlLinkConfig::default()
    }
}

fn link(logs: &MemoryLogs, me: u64, epoch: u64) -> CwlLink<MemoryLogs> {
    CwlLink::new(logs.clone(), me, epoch, config()).unwrap()
}

fn frames(items: &[&'static str]) -> Vec<Bytes> {
    items
        .iter()
        .map(|s| Bytes::from_static(s.as_bytes()))
        .collect()
}

fn payloads(received: &[Received]) -> Vec<Vec<&[u8]>> {
    received
        .iter()
        .map(|r| r.frames.iter().map(|f| &f[..]).collect())
        .collect()
}

fn reads(link: &CwlLink<MemoryLogs>) -> u64 {
    link.usage().calls(Call::GetLogEvents.as_str())
}

/// Polls until `n` batches came (or a minute passed), a second apart.
async fn poll_for(link: &CwlLink<MemoryLogs>, n: usize) -> Vec<Received> {
    let mut got = Vec::new();
    for _ in 0..60 {
        got.extend(link.poll().await.unwrap_or_default());
        if got.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    got
}

#[tokio::test(start_paused = true)]
async fn delivers_in_order_creating_the_group_and_streams_on_demand() {
    let logs = MemoryLogs::new(LogsModel::CLOUDWATCH, 1);
    let (a, b) = (link(&logs, A, 1), link(&logs, B, 1));
    assert!(
        b.poll().await.unwrap().is_empty(),
        "nothing yet, no group yet"
    );
    a.send(B, &frames(&["one", "two"])).await.unwrap();
    a.send(B, &frames(&["three"])).await.unwrap();
    assert_eq!(logs.retention(GROUP), Some(1), "a day of retention");
    assert_eq!(
        logs.streams(GROUP),
        [batch_stream("t/", B, A), bell_stream("t/", B)],
    );
    assert_eq!(a.rings(), 1, "rung once, when A started talking to B");

    let got = b.poll().await.unwrap();
    assert_eq!(payloads(&got), [vec![&b"one"[..], b"two"], vec![b"three"]]);
    assert_eq!((got[0].sender, got[0].epoch, got[0].seq), (A, 1, 0));
    assert_eq!(got[1].seq, 1);
    assert!(b.poll().await.unwrap().is_empty(), "each batch once");
    assert_eq!(b.stats().delivered.load(Ordering::Relaxed), 2);
    // A mark was written before the batches were handed over.
    assert_eq!(logs.events(GROUP, &mark_stream("t/", B)).len(), 1);
    assert!(logs.refused().is_empty(), "{:?}", logs.refused());
    // Ingestion is billed per byte: the link's usage counts message bytes plus 26 per event.
    assert!(a.cost() > 0.0);
    // Two sends and a ring, and a first try into each stream before it existed.
    assert_eq!(a.usage().calls("put_log_events"), 5);
    // The first CreateLogStream found no group: created, then the stream again.
    assert_eq!(a.usage().calls("create_log_stream"), 3);
    assert_eq!(a.usage().calls("create_log_group"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_large_send_fills_events_and_calls_to_the_limits_and_no_further() {
    let logs = MemoryLogs::new(LogsModel::CLOUDWATCH, 2);
    let (a, b) = (link(&logs, A, 1), link(&logs, B, 1));
    let limits = a.limits();
    // As much as the link says one send may carry, in 1,400-byte frames.
    let n = limits.max_bundle_bytes() / (1_400 + tunnels::wire::FRAME_OVERHEAD);
    let sent: Vec<Bytes> = (0..n).map(|i| Bytes::from(vec![i as u8; 1_400])).collect();
    a.send(B, &sent).await.unwrap();
    assert!(logs.refused().is_empty(), "{:?}", logs.refused());
    let events = logs.events(GROUP, &batch_stream("t/", B, A));
    assert!(events.len() <= 4, "at most four events of 256 KB");
    // One call for the batches (a first try before the stream existed, and the ring).
    assert_eq!(a.usage().calls("put_log_events"), 4);
    let bytes = a.usage().get("put_log_events").bytes;
    assert!(bytes > 3 * (256 << 10), "{bytes} bytes ingested");
    let got = poll_for(&b, 4).await;
    let frames: Vec<Bytes> = got.into_iter().flat_map(|r| r.frames).collect();
    assert_eq!(frames, sent);
}

#[tokio::test(start_paused = true)]
async fn a_receiver_that_restarts_resumes_from_its_mark_and_delivers_nothing_twice() {
    let logs = MemoryLogs::new(LogsModel::CLOUDWATCH, 3);
    let a = link(&logs, A, 1);
    let b = link(&logs, B, 1);
    for _ in 0..3 {
        a.send(B, &frames(&["before"])).await.unwrap();
    }
    assert_eq!(poll_for(&b, 3).await.len(), 3);
    drop(b);
    a.send(B, &frames(&["while down"])).await.unwrap();
    let b = link(&logs, B, 2);
    let got = poll_for(&b, 1).await;
    assert_eq!(payloads(&got), [vec![&b"while down"[..]]]);
    a.send(B, &frames(&["after"])).await.unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let got = poll_for(&b, 1).await;
    assert_eq!(payloads(&got), [vec![&b"after"[..]]]);
    let stats = b.stats();
    assert_eq!(stats.lost.load(Ordering::Relaxed), 0);
    assert_eq!(stats.skipped.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn a_sender_that_restarts_starts_a_new_epoch_in_the_same_stream() {
    let logs = MemoryLogs::new(LogsModel::CLOUDWATCH, 4);
    let b = link(&logs, B, 1);
    link(&logs, A, 1)
        .send(B, &frames(&["first life"]))
        .await
        .unwrap();
    let a = link(&logs, A, 2);
    a.send(B, &frames(&["second life"])).await.unwrap();
    let got = poll_for(&b, 2).await;
    assert_eq!(
        payloads(&got),
        [vec![&b"first life"[..]], vec![b"second life"]]
    );
    assert_eq!((got[1].epoch, got[1].seq), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn throttling_and_outages_lose_nothing() {
    let logs = MemoryLogs::new(LogsModel::CLOUDWATCH, 5);
    let (a, b) = (link(&logs, A, 1), link(&logs, B, 1));
    a.send(B, &frames(&["x"])).await.unwrap();
    // Writes are retried with backoff.
    logs.fail_next(Call::PutLogEvents, StoreErrorKind::Throttled, 2);
    a.send(B, &frames(&["y"])).await.unwrap();
    assert_eq!(a.stats().retries.load(Ordering::Relaxed), 2);
    // A throttled read ends the poll; the next one reads on from the same place.
    logs.fail_next(Call::GetLogEvents, StoreErrorKind::Throttled, 3);
    let err = b.poll().await.unwrap_err();
    assert!(err.to_string().contains("throttled"), "{err}");
    logs.set_unavailable(true);
    assert!(b.poll().await.is_err());
    logs.set_unavailable(false);
    let got = poll_for(&b, 2).await;
    assert_eq!(payloads(&got), [vec![&b"x"[..]], vec![b"y"]]);
}

#[tokio::test(start_paused = true)]
async fn events_that_are_not_batches_are_counted_and_skipped() {
    let logs = MemoryLogs::new(LogsModel::CLOUDWATCH, 6);
    let (a, b) = (link(&logs, A, 1), link(&logs, B, 1));
    a.send(B, &frames(&["one"])).await.unwrap();
    let junk = |message: &str| LogEvent {
        timestamp: logs.now_ms(),
        message: message.into(),
    };
    logs.insert(
        GROUP,
        &batch_stream("t/", B, A),
        junk("{\"not\":\"a batch\"}"),
    );
    logs.insert(GROUP, &batch_stream("t/", B, A), junk("zzzzz"));
    logs.insert(GROUP, &bell_stream("t/", B), junk("hello"));
    // A valid batch of another sender, in A's stream.
    let mut other = Vec::new();
    let c = link(&logs, 0xc, 1);
    c.send(B, &frames(&["from c"])).await.unwrap();
    for e in logs.events(GROUP, &batch_stream("t/", B, 0xc)) {
        other.push(e);
    }
    logs.insert(GROUP, &batch_stream("t/", B, A), other[0].clone());
    a.send(B, &frames(&["two"])).await.unwrap();
    let got = poll_for(&b, 3).await;
    let mut got = payloads(&got);
    got.sort();
    assert_eq!(got, [vec![&b"from c"[..]], vec![b"one"], vec![b"two"]]);
    assert_eq!(b.stats().rejected.load(Ordering::Relaxed), 4);
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_is_replaced_by_the_last_events_time() {
    let logs = MemoryLogs::new(LogsModel::CLOUDWATCH, 7);
    let (a, b) = (link(&logs, A, 1), link(&logs, B, 1));
    a.send(B, &frames(&["day one"])).await.unwrap();
    assert_eq!(poll_for(&b, 1).await.len(), 1);
    // A conversation a day later, kept going so B never forgets A's stream.
    tokio::time::sleep(Duration::from_secs(25 * 3_600)).await;
    a.send(B, &frames(&["day two"])).await.unwrap();
    let got = poll_for(&b, 1).await;
    assert_eq!(payloads(&got), [vec![&b"day two"[..]]]);
    assert_eq!(b.stats().delivered.load(Ordering::Relaxed), 2);
    // Read on from the last event's time, "day one" came again and was dropped.
    assert_eq!(b.stats().duplicates.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn an_idle_receiver_reads_its_bell_once_a_poll_and_keeps_to_its_read_rate() {
    let logs = MemoryLogs::new(LogsModel::CLOUDWATCH, 8);
    let b = CwlLink::new(
        logs.clone(),
        B,
        1,
        CwlLinkConfig {
            read_rate: Budget::new(NonZeroU32::new(1).unwrap(), Duration::from_secs(1))
                .with_burst(NonZeroU32::MIN),
            ..config()
        },
    )
    .unwrap();
    // The first poll reads the mark; the others, the bell (twice: one read moves the token).
    b.poll().await.unwrap();
    let before = reads(&b);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(60)).await;
        b.poll().await.unwrap();
    }
    let idle = reads(&b) - before;
    assert!(idle <= 20, "{idle} reads in 10 idle polls");
    // Polled as fast as it likes, it reads no faster than its rate.
    let start = reads(&b);
    for _ in 0..100 {
        b.poll().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let made = reads(&b) - start;
    assert!(made <= 11, "{made} reads in 10 s at 1 a second");
    assert!(b.deferred_reads() > 0);
}

/// At the end of a stream the service hands back the token it was given, so a receiver that
/// has read its bell reads it once a poll, not on until its read rate is spent.
#[tokio::test(start_paused = true)]
async fn a_bell_read_to_its_end_is_read_once_a_poll() {
    let logs = MemoryLogs::new(LogsModel::CLOUDWATCH, 8);
    let (a, b) = (link(&logs, A, 1), link(&logs, B, 1));
    a.send(B, &frames(&["x"])).await.unwrap();
    assert_eq!(payloads(&poll_for(&b, 1).await), [vec![&b"x"[..]]]);
    // A is forgotten after three quiet minutes; then a poll reads the bell alone.
    tokio::time::sleep(Duration::from_secs(240)).await;
    b.poll().await.unwrap();
    let before = reads(&b);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(b.poll().await.unwrap().is_empty());
    }
    let idle = reads(&b) - before;
    assert_eq!(idle, 10, "{idle} reads in 10 idle polls");
    assert_eq!(b.deferred_reads(), 0);
}

/// A read the account's quota throttled makes the node's next read wait: the nodes of an
/// account that outrun its quota spread their reads out instead of taking every token in
/// turn.
#[tokio::test(start_paused = true)]
async fn a_throttled_read_makes_the_next_one_wait() {
    let logs = MemoryLogs::new(LogsModel::LOCAL, 9);
    let (a, b) = (link(&logs, A, 1), link(&logs, B, 1));
    a.send(B, &frames(&["x"])).await.unwrap();
    logs.fail_next(Call::GetLogEvents, StoreErrorKind::Throttled, 1);
    let start = tokio::time::Instant::now();
    assert!(b.poll().await.is_err());
    assert!(
        start.elapsed() < Duration::from_millis(10),
        "no latency locally"
    );
    let start = tokio::time::Instant::now();
    assert_eq!(payloads(&b.poll().await.unwrap()), [vec![&b"x"[..]]]);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(100),
        "the next read waited {waited:?}"
    );
    // Answered reads shrink the gap until there is none.
    for _ in 0..100 {
        b.poll().await.unwrap();
    }
    let start = tokio::time::Instant::now();
    b.poll().await.unwrap();
    assert!(start.elapsed() < Duration::from_millis(10));
}

#[tokio::test(start_paused = true)]
async fn the_seeds_filter_reading_delivers_too_with_one_call_a_poll() {
    let logs = MemoryLogs::new(LogsModel::CLOUDWATCH, 9);
    let b = CwlLink::new(
        logs.clone(),
        B,
        1,
        CwlLinkConfig {
            read: ReadMode::Filter,
            ..config()
        },
    )
    .unwrap();
    let (a, c) = (link(&logs, A, 1), link(&logs, 0xc, 1));
    for i in 0..3 {
        a.send(B, &[Bytes::from(format!("a{i}"))]).await.unwrap();
        c.send(B, &[Bytes::from(format!("c{i}"))]).await.unwrap();
    }
    let got = poll_for(&b, 6).await;
    let from = |sender| -> Vec<Bytes> {
        got.iter()
            .filter(|r| r.sender == sender)
            .flat_map(|r| r.frames.clone())
            .collect()
    };
    assert_eq!(from(A), ["a0", "a1", "a2"]);
    assert_eq!(from(0xc), ["c0", "c1", "c2"]);
    let polls_reads = b.usage().calls("filter_log_events");
    b.poll().await.unwrap();
    assert_eq!(b.usage().calls("filter_log_events"), polls_reads + 1);
    assert_eq!(
        b.usage().calls("get_log_events"),
        1,
        "only the mark, at the start"
    );
}

/// A receiver that polls faster than its read rate allows (every 200 ms at 2 reads a second,
/// as a lingering node does) shares its reads among its senders: the second sender is read
/// too, not starved by the first one's reads every poll.
#[tokio::test(start_paused = true)]
async fn reads_are_shared_among_senders_when_the_read_rate_binds() {
    let logs = MemoryLogs::new(LogsModel::CLOUDWATCH, 9);
    let (a, b, c) = (link(&logs, A, 1), link(&logs, B, 1), link(&logs, 0xc, 1));
    a.send(B, &frames(&["from a"])).await.unwrap();
    // B knows A, and polls on every 200 ms, its reads spent by A's stream each time.
    let mut got = Vec::new();
    for _ in 0..50 {
        got.extend(b.poll().await.unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(got.len(), 1);
    c.send(B, &frames(&["from c"])).await.unwrap();
    a.send(B, &frames(&["from a again"])).await.unwrap();
    for _ in 0..150 {
        got.extend(b.poll().await.unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let senders: Vec<u64> = got.iter().map(|r| r.sender).collect();
    assert!(senders.contains(&0xc), "C was never read: {senders:?}");
    assert_eq!(got.len(), 3, "{senders:?}");
}
