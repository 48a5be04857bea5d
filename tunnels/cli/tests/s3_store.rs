//! The store on the AWS SDK against real S3-compatible servers on loopback: `s3s-fs` in this
//! process, and `moto_server` (installed into `.venv` by `scripts/test`). A test whose server
//! cannot be found fails; it does not skip.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tunnels::Link;
use tunnels::link::s3::local::{Answers, LocalS3};
use tunnels::link::s3::{ObjectStore, S3Link, S3LinkConfig, S3Store, S3StoreConfig, Strategy};
use tunnels::link::{RetryPolicy, StoreErrorKind};

mod e2e;

use e2e::moto::Moto;

/// A directory removed when the test ends, however it ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("tunnels-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What every S3-compatible server must do for the link: the four calls, in S3's order.
async fn behaves_like_s3(store: &S3Store) {
    for key in ["net/b/2", "net/b/1", "net/c/1", "net/b/3", "net/b0"] {
        store
            .put(key, Bytes::from(format!("body of {key}")))
            .await
            .unwrap();
    }
    assert_eq!(
        store.get("net/b/1").await.unwrap(),
        Some(Bytes::from_static(b"body of net/b/1"))
    );
    assert_eq!(
        store.get("net/b/9").await.unwrap(),
        None,
        "a missing key is None"
    );
    assert_eq!(
        store.list("net/b/", None, 1_000).await.unwrap(),
        ["net/b/1", "net/b/2", "net/b/3"]
    );
    assert_eq!(
        store.list("net/b/", Some("net/b/1"), 1).await.unwrap(),
        ["net/b/2"]
    );
    store
        .delete_many(&["net/b/1".into(), "net/b/2".into(), "net/missing".into()])
        .await
        .unwrap();
    assert_eq!(
        store.list("net/b/", None, 1_000).await.unwrap(),
        ["net/b/3"]
    );
    // A batch as large as a default object, in one PUT.
    let big = Bytes::from(vec![7u8; 8 << 20]);
    store.put("net/big", big.clone()).await.unwrap();
    assert_eq!(store.get("net/big").await.unwrap(), Some(big));
}

async fn link_round_trip(store: &S3Store) {
    let config = S3LinkConfig {
        prefix: "tunnel/".into(),
        ..S3LinkConfig::default()
    };
    let a = S3Link::new(store.clone(), 0xa, 1, config.clone());
    let b = S3Link::new(store.clone(), 0xb, 1, config);
    let frames = [Bytes::from_static(b"hello"), Bytes::from(vec![1u8; 1_400])];
    a.send(0xb, &frames).await.unwrap();
    a.send(0xb, &frames[..1]).await.unwrap();
    let got = b.poll().await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].frames, frames);
    assert_eq!(got[1].frames, frames[..1]);
    assert!(store.list("tunnel/", None, 1_000).await.unwrap().is_empty());
}

async fn local_server(dir: &Path) -> LocalS3 {
    local_server_answering(dir, Answers::default()).await
}

/// A local server with the bucket "bucket", answering as `answers` says.
async fn local_server_answering(dir: &Path, answers: Answers) -> LocalS3 {
    let server = LocalS3::start_with(dir, SocketAddr::from(([127, 0, 0, 1], 0)), answers)
        .await
        .unwrap();
    server.create_bucket("bucket").unwrap();
    server
}

#[tokio::test]
async fn the_store_on_s3s_fs() {
    let dir = TempDir::new("s3s-store");
    let server = local_server(&dir.0).await;
    let store = S3Store::connect(&server.store_config("bucket")).await;
    store.check("").await.unwrap();
    behaves_like_s3(&store).await;
    link_round_trip(&store).await;
}

/// Under a least-privilege policy S3 answers a GET of a missing key with 403, not 404. The
/// start-up check notices, and from then on the store reads that 403 as "missing", so receivers
/// can probe (which GETs keys that mostly do not exist yet).
#[tokio::test]
async fn a_403_for_a_missing_key_is_read_as_missing_once_the_check_saw_it() {
    let dir = TempDir::new("s3s-forbidden");
    let server = local_server_answering(
        &dir.0,
        Answers {
            missing_key_forbidden: true,
            ..Answers::default()
        },
    )
    .await;
    let store = S3Store::connect(&server.store_config("bucket")).await;
    let before = store.get("tunnel/nothing").await.unwrap_err();
    assert_eq!(before.kind(), StoreErrorKind::AccessDenied);

    store.check("tunnel/").await.unwrap();
    assert_eq!(store.get("tunnel/nothing").await.unwrap(), None);
    link_round_trip(&store).await;
    // Probing now: the first poll listed; these GET the next keys, present and then missing.
    let config = S3LinkConfig {
        prefix: "tunnel/".into(),
        strategy: Strategy::Probe,
        ..S3LinkConfig::default()
    };
    let a = S3Link::new(store.clone(), 0xa, 2, config.clone());
    let b = S3Link::new(store.clone(), 0xb, 2, config);
    a.send(0xb, &[Bytes::from_static(b"first")]).await.unwrap();
    assert_eq!(b.poll().await.unwrap().len(), 1);
    a.send(0xb, &[Bytes::from_static(b"second")]).await.unwrap();
    let got = b.poll().await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].frames, [Bytes::from_static(b"second")]);
    assert!(b.poll().await.unwrap().is_empty());
    assert!(b.usage().calls("get") >= 3, "{}", b.usage());

    // A plain server's store keeps 403 an error.
    let plain_dir = TempDir::new("s3s-plain");
    let plain = local_server(&plain_dir.0).await;
    let plain_store = S3Store::connect(&plain.store_config("bucket")).await;
    plain_store.check("tunnel/").await.unwrap();
    assert_eq!(plain_store.get("tunnel/nothing").await.unwrap(), None);
}

/// 503 SlowDown, as S3 answers a prefix that gets too many requests, comes through the SDK as
/// `Throttled`; the link retries it and loses nothing.
#[tokio::test]
async fn slow_down_is_throttling_and_the_link_retries_it() {
    let dir = TempDir::new("s3s-slowdown");
    let server = local_server_answering(
        &dir.0,
        Answers {
            slow_down_every: 3,
            ..Answers::default()
        },
    )
    .await;
    let store = S3Store::connect(&server.store_config("bucket")).await;
    let mut answers = Vec::new();
    for i in 0..3 {
        answers.push(store.put(&format!("k/{i}"), Bytes::from_static(b"x")).await);
    }
    assert!(answers[..2].iter().all(Result::is_ok), "{answers:?}");
    assert_eq!(
        answers[2].as_ref().unwrap_err().kind(),
        StoreErrorKind::Throttled
    );

    let config = S3LinkConfig {
        prefix: "tunnel/".into(),
        retry: RetryPolicy {
            base: Duration::from_millis(10),
            ..RetryPolicy::default()
        },
        ..S3LinkConfig::default()
    };
    let a = S3Link::new(store.clone(), 0xa, 1, config.clone());
    let b = S3Link::new(store.clone(), 0xb, 1, config);
    let mut sent = Vec::new();
    for i in 0..10u8 {
        let frame = Bytes::from(vec![i; 100]);
        a.send(0xb, std::slice::from_ref(&frame)).await.unwrap();
        sent.push(frame);
    }
    let mut got = Vec::new();
    for _ in 0..50 {
        if got.len() >= sent.len() {
            break;
        }
        for batch in b.poll().await.unwrap() {
            got.extend(batch.frames);
        }
    }
    assert_eq!(got, sent);
    let retries = a.stats().retries.load(std::sync::atomic::Ordering::Relaxed)
        + b.stats().retries.load(std::sync::atomic::Ordering::Relaxed);
    assert!(retries >= 5, "{retries} retries");
}

#[tokio::test]
async fn a_missing_bucket_and_bad_credentials_are_clear_errors() {
    let dir = TempDir::new("s3s-errors");
    let server = local_server(&dir.0).await;
    let missing = S3Store::connect(&server.store_config("no-such-bucket")).await;
    let err = missing.check("").await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::NoSuchBucket, "{err}");

    let wrong = S3Store::connect(&S3StoreConfig {
        credentials: Some(("someone".into(), "else".into())),
        ..server.store_config("bucket")
    })
    .await;
    let err = wrong.check("").await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::AccessDenied, "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_server_that_goes_away_is_retried_until_it_is_back() {
    let dir = TempDir::new("s3s-outage");
    let server = local_server(&dir.0).await;
    let addr = server.addr();
    let config = server.store_config("bucket");
    let store = S3Store::connect(&config).await;
    let link = S3Link::new(
        store.clone(),
        0xa,
        1,
        S3LinkConfig {
            retry: RetryPolicy {
                base: Duration::from_millis(50),
                max: Duration::from_millis(500),
                window: Duration::from_secs(30),
            },
            ..S3LinkConfig::default()
        },
    );
    server.stop();
    let unreachable = store.check("").await.unwrap_err();
    assert_eq!(
        unreachable.kind(),
        StoreErrorKind::Unavailable,
        "{unreachable}"
    );
    assert!(unreachable.is_retryable());

    let restart = tokio::spawn({
        let root = dir.0.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            LocalS3::start(&root, addr).await.unwrap()
        }
    });
    link.send(0xb, &[Bytes::from_static(b"through the outage")])
        .await
        .unwrap();
    let _server = restart.await.unwrap();
    assert!(
        link.stats()
            .retries
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    let receiver = S3Link::new(store, 0xb, 1, S3LinkConfig::default());
    let got = receiver.poll().await.unwrap();
    assert_eq!(got[0].frames, [Bytes::from_static(b"through the outage")]);
}

#[tokio::test]
async fn the_store_on_moto() {
    let moto = Moto::start(std::net::IpAddr::from([127, 0, 0, 1]));
    let config = S3StoreConfig {
        bucket: "bucket".into(),
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.endpoint_url()),
        path_style: true,
        credentials: Some(("testing".into(), "testing".into())),
        ..S3StoreConfig::default()
    };
    let store = S3Store::connect(&config).await;
    assert_eq!(
        store.check("").await.unwrap_err().kind(),
        StoreErrorKind::NoSuchBucket
    );
    store
        .client()
        .create_bucket()
        .bucket("bucket")
        .send()
        .await
        .unwrap();
    store.check("").await.unwrap();
    behaves_like_s3(&store).await;
    link_round_trip(&store).await;
}
