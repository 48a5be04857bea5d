//! The CloudWatch Logs store on the AWS SDK against a real `moto_server` on loopback (installed
//! into `.venv` by `scripts/test`). A test whose server cannot be found fails; it does not skip.
//!
//! What is asserted is what the link relies on and what CloudWatch Logs documents; where
//! `moto_server` differs from the service, the test says so and asserts what both do.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tunnels::link::cwl::limits::CLASSIC_EVENT_BYTES;
use tunnels::link::cwl::{
    CwlLink, CwlLinkConfig, CwlStore, CwlStoreConfig, FilterPage, LogEvent, LogPage, LogStore,
    ReadFrom, check_put,
};
use tunnels::link::{StoreError, StoreErrorKind};
use tunnels::{Link, Received};

mod e2e;

use e2e::moto::Moto;

const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

async fn store_at(endpoint: &str) -> CwlStore {
    CwlStore::connect(&CwlStoreConfig {
        region: Some("us-east-1".into()),
        endpoint_url: Some(endpoint.into()),
        credentials: Some(("testing".into(), "testing".into())),
        ..CwlStoreConfig::default()
    })
    .await
}

/// Now, in milliseconds since the epoch: the service takes events from the last 14 days only.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn event(timestamp: i64, message: &str) -> LogEvent {
    LogEvent {
        timestamp,
        message: message.into(),
    }
}

fn messages(page: &LogPage) -> Vec<&str> {
    page.events.iter().map(|e| e.message.as_str()).collect()
}

/// A group and a stream in it, created.
async fn stream(store: &CwlStore, group: &str, stream: &str) {
    store.create_group(group).await.unwrap();
    store.create_stream(group, stream).await.unwrap();
}

#[tokio::test]
async fn creating_twice_is_success_and_retention_is_set() {
    let moto = Moto::start(LOOPBACK);
    let store = moto.store().await;
    assert_eq!(store.region(), Some("us-east-1"));
    store.create_group("net").await.unwrap();
    store.create_group("net").await.unwrap();
    store.set_retention("net", 1).await.unwrap();
    let groups = store
        .client()
        .describe_log_groups()
        .log_group_name_prefix("net")
        .send()
        .await
        .unwrap();
    let retention: Vec<_> = groups
        .log_groups()
        .iter()
        .map(|g| (g.log_group_name(), g.retention_in_days()))
        .collect();
    assert_eq!(retention, [(Some("net"), Some(1))]);
    store.create_stream("net", "t/b/a").await.unwrap();
    store.create_stream("net", "t/b/a").await.unwrap();

    let missing = store.set_retention("nonet", 1).await.unwrap_err();
    assert_eq!(missing.kind(), StoreErrorKind::NotFound, "{missing}");
    let missing = store.create_stream("nonet", "s").await.unwrap_err();
    assert_eq!(missing.kind(), StoreErrorKind::NotFound, "{missing}");
}

#[tokio::test]
async fn events_come_back_in_order_and_a_token_at_the_end_stays() {
    let moto = Moto::start(LOOPBACK);
    let store = moto.store().await;
    stream(&store, "net", "s").await;
    let t = now_ms();

    // A stream with nothing in it yet: a token to wait on.
    let empty = store
        .get_events("net", "s", ReadFrom::Time(0), None)
        .await
        .unwrap();
    assert!(empty.events.is_empty());
    let waiting = empty
        .next_forward_token
        .expect("a token from an empty stream");

    let first = [event(t, "one"), event(t + 1, "two"), event(t + 2, "three")];
    store.put_events("net", "s", &first).await.unwrap();
    store
        .put_events("net", "s", &[event(t + 3, "four")])
        .await
        .unwrap();

    let page = store
        .get_events("net", "s", ReadFrom::Time(0), None)
        .await
        .unwrap();
    assert_eq!(messages(&page), ["one", "two", "three", "four"]);
    assert_eq!(page.events[0], first[0]);
    let at_end = page.next_forward_token.unwrap();

    // What the service documents: at the end, nextForwardToken is the token passed.
    let again = store
        .get_events("net", "s", ReadFrom::Token(&at_end), None)
        .await
        .unwrap();
    assert!(again.events.is_empty(), "{again:?}");
    assert_eq!(again.next_forward_token.as_deref(), Some(at_end.as_str()));

    // The token taken on the empty stream reads everything since.
    let from_empty = store
        .get_events("net", "s", ReadFrom::Token(&waiting), None)
        .await
        .unwrap();
    assert_eq!(messages(&from_empty), ["one", "two", "three", "four"]);

    // Something new: read from the end token, once; then the new end stays.
    store
        .put_events("net", "s", &[event(t + 4, "five")])
        .await
        .unwrap();
    let new = store
        .get_events("net", "s", ReadFrom::Token(&at_end), None)
        .await
        .unwrap();
    assert_eq!(messages(&new), ["five"]);
    let new_end = new.next_forward_token.unwrap();
    assert_ne!(new_end, at_end);
    let nothing = store
        .get_events("net", "s", ReadFrom::Token(&new_end), None)
        .await
        .unwrap();
    assert!(nothing.events.is_empty());
    assert_eq!(nothing.next_forward_token, Some(new_end));

    // Reading from a time: the events at or after it.
    let late = store
        .get_events("net", "s", ReadFrom::Time(t + 3), None)
        .await
        .unwrap();
    assert_eq!(messages(&late), ["four", "five"]);
}

#[tokio::test]
async fn the_tail_with_a_limit_of_one_is_the_newest_event() {
    let moto = Moto::start(LOOPBACK);
    let store = moto.store().await;
    stream(&store, "net", "mark").await;
    let t = now_ms();
    let nothing = store
        .get_events("net", "mark", ReadFrom::Tail, Some(1))
        .await
        .unwrap();
    assert!(nothing.events.is_empty());
    for (i, m) in ["old", "older mark", "newest"].iter().enumerate() {
        store
            .put_events("net", "mark", &[event(t + i as i64, m)])
            .await
            .unwrap();
    }
    let tail = store
        .get_events("net", "mark", ReadFrom::Tail, Some(1))
        .await
        .unwrap();
    assert_eq!(tail.events, [event(t + 2, "newest")]);
}

/// Events in one millisecond, in one call and across calls: read back in the order they were
/// put, and a forward token read one at a time neither skips nor repeats any of them (what a
/// stream with one writer relies on).
#[tokio::test]
async fn events_in_one_millisecond_keep_their_order_and_tokens_step_through_them() {
    let moto = Moto::start(LOOPBACK);
    let store = moto.store().await;
    stream(&store, "net", "s").await;
    let t = now_ms();
    store
        .put_events("net", "s", &[event(t, "a"), event(t, "b")])
        .await
        .unwrap();
    store
        .put_events("net", "s", &[event(t, "c")])
        .await
        .unwrap();
    store
        .put_events("net", "s", &[event(t, "d"), event(t + 1, "e")])
        .await
        .unwrap();
    let all = store
        .get_events("net", "s", ReadFrom::Time(0), None)
        .await
        .unwrap();
    assert_eq!(messages(&all), ["a", "b", "c", "d", "e"]);

    let mut page = store
        .get_events("net", "s", ReadFrom::Time(0), Some(1))
        .await
        .unwrap();
    let mut read = messages(&page).join("");
    for _ in 0..10 {
        let token = page.next_forward_token.clone().unwrap();
        page = store
            .get_events("net", "s", ReadFrom::Token(&token), Some(1))
            .await
            .unwrap();
        read.push_str(&messages(&page).join(""));
        if page.events.is_empty() {
            assert_eq!(page.next_forward_token.as_deref(), Some(token.as_str()));
            break;
        }
    }
    assert_eq!(read, "abcde");
}

/// An event put with a time older than what a token read already saw. The link never writes
/// one (a stream has one writer, whose clock it keeps from going back), and CloudWatch Logs
/// does not say where such an event lands for a forward token. Asserted: reading by time sees
/// it in time order. Printed: what a read from the token saw (`moto_server` 5.2: the event the
/// token read had already returned, again, and not the late one: its tokens are positions in
/// the stream sorted by time).
#[tokio::test]
async fn an_older_event_put_after_a_token_read_is_in_time_order() {
    let moto = Moto::start(LOOPBACK);
    let store = moto.store().await;
    stream(&store, "net", "s").await;
    let t = now_ms();
    store
        .put_events("net", "s", &[event(t, "one"), event(t + 10, "two")])
        .await
        .unwrap();
    let page = store
        .get_events("net", "s", ReadFrom::Time(0), None)
        .await
        .unwrap();
    let token = page.next_forward_token.unwrap();
    store
        .put_events("net", "s", &[event(t + 5, "late")])
        .await
        .unwrap();
    let by_token = store
        .get_events("net", "s", ReadFrom::Token(&token), None)
        .await
        .unwrap();
    eprintln!(
        "from the token read before the late event: {:?}",
        messages(&by_token)
    );
    let by_time = store
        .get_events("net", "s", ReadFrom::Time(0), None)
        .await
        .unwrap();
    assert_eq!(messages(&by_time), ["one", "late", "two"]);
}

/// Both are `ResourceNotFoundException`. CloudWatch Logs says which is missing in the message;
/// `moto_server` 5.2 answers a GetLogEvents of a missing stream in a group that exists with
/// "The specified log group does not exist.", so only the kind is asserted.
#[tokio::test]
async fn a_missing_stream_or_group_is_not_found() {
    let moto = Moto::start(LOOPBACK);
    let store = moto.store().await;
    store.create_group("net").await.unwrap();
    let put = store
        .put_events("net", "missing", &[event(now_ms(), "x")])
        .await
        .unwrap_err();
    assert_eq!(put.kind(), StoreErrorKind::NotFound, "{put}");
    assert!(put.to_string().contains("logs:PutLogEvents"), "{put}");
    eprintln!("put to a missing stream: {put}");
    let get = store
        .get_events("net", "missing", ReadFrom::Time(0), None)
        .await
        .unwrap_err();
    assert_eq!(get.kind(), StoreErrorKind::NotFound, "{get}");
    assert!(get.to_string().contains("logs:GetLogEvents"), "{get}");
    eprintln!("get of a missing stream: {get}");

    let put = store
        .put_events("nonet", "s", &[event(now_ms(), "x")])
        .await
        .unwrap_err();
    assert_eq!(put.kind(), StoreErrorKind::NotFound, "{put}");
    eprintln!("put to a missing group: {put}");
    let get = store
        .get_events("nonet", "s", ReadFrom::Tail, Some(1))
        .await
        .unwrap_err();
    assert_eq!(get.kind(), StoreErrorKind::NotFound, "{get}");
    eprintln!("get in a missing group: {get}");
}

#[tokio::test]
async fn an_invalid_token_is_a_bad_request() {
    let moto = Moto::start(LOOPBACK);
    let store = moto.store().await;
    stream(&store, "net", "s").await;
    store
        .put_events("net", "s", &[event(now_ms(), "x")])
        .await
        .unwrap();
    let bad = store
        .get_events("net", "s", ReadFrom::Token("not a token"), None)
        .await
        .unwrap_err();
    assert_eq!(bad.kind(), StoreErrorKind::BadRequest, "{bad}");
    assert!(
        bad.to_string().contains("InvalidParameterException"),
        "{bad}"
    );
    eprintln!("an invalid token: {bad}");
}

#[tokio::test]
async fn nothing_listening_is_unavailable() {
    // A port that was free a moment ago.
    let port = std::net::TcpListener::bind((LOOPBACK, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = store_at(&format!("http://127.0.0.1:{port}")).await;
    let err = store
        .get_events("net", "s", ReadFrom::Tail, Some(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("logs:GetLogEvents"), "{err}");
    let err = store.create_group("net").await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err}");
}

/// The store as the link uses it, with every PutLogEvents checked against the service's limits
/// (moto enforces none of them) and throttling injected on demand.
#[derive(Debug, Clone)]
struct Checked {
    inner: CwlStore,
    /// Every limit a call broke.
    broken: Arc<Mutex<Vec<String>>>,
    /// PutLogEvents calls, and their events.
    puts: Arc<Mutex<Vec<usize>>>,
    /// The next so many calls are throttled.
    throttle: Arc<AtomicU32>,
}

impl Checked {
    fn new(inner: CwlStore) -> Checked {
        Checked {
            inner,
            broken: Arc::default(),
            puts: Arc::default(),
            throttle: Arc::default(),
        }
    }

    fn throttled(&self) -> Result<(), StoreError> {
        let left = self.throttle.load(Ordering::SeqCst);
        if left > 0 {
            self.throttle.store(left - 1, Ordering::SeqCst);
            return Err(StoreError::new(
                StoreErrorKind::Throttled,
                "ThrottlingException: Rate exceeded (injected)",
            ));
        }
        Ok(())
    }
}

impl LogStore for Checked {
    async fn create_group(&self, group: &str) -> Result<(), StoreError> {
        self.inner.create_group(group).await
    }

    async fn set_retention(&self, group: &str, days: u32) -> Result<(), StoreError> {
        self.inner.set_retention(group, days).await
    }

    async fn create_stream(&self, group: &str, stream: &str) -> Result<(), StoreError> {
        self.inner.create_stream(group, stream).await
    }

    async fn put_events(
        &self,
        group: &str,
        stream: &str,
        events: &[LogEvent],
    ) -> Result<(), StoreError> {
        self.throttled()?;
        if let Err(e) = check_put(events, CLASSIC_EVENT_BYTES, now_ms()) {
            self.broken.lock().unwrap().push(e.to_string());
        }
        self.puts.lock().unwrap().push(events.len());
        self.inner.put_events(group, stream, events).await
    }

    async fn get_events(
        &self,
        group: &str,
        stream: &str,
        from: ReadFrom<'_>,
        limit: Option<u32>,
    ) -> Result<LogPage, StoreError> {
        self.throttled()?;
        self.inner.get_events(group, stream, from, limit).await
    }

    async fn filter_events(
        &self,
        group: &str,
        stream_prefix: &str,
        start_time: i64,
        token: Option<&str>,
    ) -> Result<FilterPage, StoreError> {
        self.inner
            .filter_events(group, stream_prefix, start_time, token)
            .await
    }
}

fn link(store: &Checked, me: u64, epoch: u64) -> CwlLink<Checked> {
    let config = CwlLinkConfig {
        group: "net".into(),
        prefix: "t/".into(),
        ..CwlLinkConfig::default()
    };
    CwlLink::new(store.clone(), me, epoch, config).unwrap()
}

/// Polls `link` until it delivered `n` batches, or ten seconds passed.
async fn poll_for(link: &CwlLink<Checked>, n: usize) -> Vec<Received> {
    let mut got = Vec::new();
    for _ in 0..100 {
        got.extend(link.poll().await.unwrap_or_default());
        if got.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    got
}

/// The link over moto: small and full sends arrive once, in order, every call within the
/// service's limits.
#[tokio::test]
async fn the_link_delivers_over_moto_within_the_limits() {
    let moto = Moto::start(LOOPBACK);
    let store = Checked::new(moto.store().await);
    let (a, b) = (link(&store, 0xa, 1), link(&store, 0xb, 1));
    b.check().await.unwrap();
    let small = [Bytes::from_static(b"hello"), Bytes::from(vec![1u8; 1_400])];
    a.send(0xb, &small).await.unwrap();
    // As much as one send may carry, in 1,400-byte frames: four events of 256 KB, one call.
    let n = a.limits().max_bundle_bytes() / (1_400 + tunnels::wire::FRAME_OVERHEAD);
    let full: Vec<Bytes> = (0..n).map(|i| Bytes::from(vec![i as u8; 1_400])).collect();
    a.send(0xb, &full).await.unwrap();
    a.send(0xb, &small[..1]).await.unwrap();
    let got = poll_for(&b, 3).await;
    let frames: Vec<Bytes> = got.iter().flat_map(|r| r.frames.clone()).collect();
    let expected: Vec<Bytes> = small
        .iter()
        .chain(&full)
        .chain(&small[..1])
        .cloned()
        .collect();
    assert_eq!(frames, expected);
    assert!(b.poll().await.unwrap().is_empty(), "each batch once");
    assert!(
        store.broken.lock().unwrap().is_empty(),
        "{:?}",
        store.broken
    );
    assert!(
        store.puts.lock().unwrap().iter().any(|&events| events > 1),
        "a full send packs several events into one call: {:?}",
        store.puts
    );
}

/// A sender that restarts starts a new epoch in the same stream; a receiver that restarts
/// resumes from its mark and delivers nothing twice.
#[tokio::test]
async fn restarts_over_moto_deliver_everything_once() {
    let moto = Moto::start(LOOPBACK);
    let store = Checked::new(moto.store().await);
    let b = link(&store, 0xb, 1);
    link(&store, 0xa, 1)
        .send(0xb, &[Bytes::from_static(b"first life")])
        .await
        .unwrap();
    let a = link(&store, 0xa, 2);
    a.send(0xb, &[Bytes::from_static(b"second life")])
        .await
        .unwrap();
    let got = poll_for(&b, 2).await;
    let epochs: Vec<(u64, u64)> = got.iter().map(|r| (r.epoch, r.seq)).collect();
    assert_eq!(epochs, [(1, 0), (2, 0)]);
    drop(b);
    a.send(0xb, &[Bytes::from_static(b"while b was down")])
        .await
        .unwrap();
    let b = link(&store, 0xb, 2);
    let got = poll_for(&b, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].frames, [Bytes::from_static(b"while b was down")]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(b.poll().await.unwrap().is_empty(), "nothing again");
    assert_eq!(b.stats().lost.load(Ordering::Relaxed), 0);
    assert!(
        store.broken.lock().unwrap().is_empty(),
        "{:?}",
        store.broken
    );
}

/// Throttled writes are retried; a throttled read ends the poll and the next one reads on.
#[tokio::test]
async fn throttling_over_moto_loses_nothing() {
    let moto = Moto::start(LOOPBACK);
    let store = Checked::new(moto.store().await);
    let (a, b) = (link(&store, 0xa, 1), link(&store, 0xb, 1));
    a.send(0xb, &[Bytes::from_static(b"x")]).await.unwrap();
    store.throttle.store(2, Ordering::SeqCst);
    a.send(0xb, &[Bytes::from_static(b"y")]).await.unwrap();
    assert_eq!(a.stats().retries.load(Ordering::Relaxed), 2);
    store.throttle.store(1, Ordering::SeqCst);
    let err = b.poll().await.unwrap_err();
    assert!(err.to_string().contains("throttled"), "{err}");
    let got = poll_for(&b, 2).await;
    let frames: Vec<Bytes> = got.iter().flat_map(|r| r.frames.clone()).collect();
    assert_eq!(frames, [Bytes::from_static(b"x"), Bytes::from_static(b"y")]);
}
