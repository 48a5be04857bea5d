//! Times PUTs and GETs of one size through [`S3Store`] against the in-process S3 server on
//! loopback: what a call of a bulk transfer costs before the tunnel adds anything.
//!
//! ```sh
//! cargo run --release -p tunnels --features local-s3 --example s3_calls -- 1300000 50
//! ```

use std::time::Instant;

use bytes::Bytes;
use tunnels::link::s3::local::LocalS3;
use tunnels::link::s3::{ObjectStore, S3Store};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let size: usize = args.next().map_or(1_300_000, |a| a.parse().expect("SIZE"));
    let n: usize = args.next().map_or(50, |a| a.parse().expect("N"));
    let root = std::env::temp_dir().join(format!("s3-calls-{}", std::process::id()));
    let server = LocalS3::start(&root, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("server");
    server.create_bucket("calls").expect("bucket");
    let store = S3Store::connect(&server.store_config("calls")).await;
    let body = Bytes::from(vec![7u8; size]);
    let (mut puts, mut gets) = (Vec::new(), Vec::new());
    for i in 0..n {
        let key = format!("k/{i}");
        let t = Instant::now();
        store.put(&key, body.clone()).await.expect("put");
        puts.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let got = store.get(&key).await.expect("get").expect("found");
        gets.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(got.len(), size);
    }
    for (name, mut ms) in [("PUT", puts), ("GET", gets)] {
        ms.sort_by(f64::total_cmp);
        let mb_s = size as f64 / 1e3 / ms[ms.len() / 2];
        println!(
            "{name} of {size} B: p50 {:.2} ms, p90 {:.2} ms, max {:.2} ms ({mb_s:.0} MB/s at p50)",
            ms[ms.len() / 2],
            ms[ms.len() * 9 / 10],
            ms[ms.len() - 1]
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(root);
}
