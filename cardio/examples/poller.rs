//! A poll loop that speeds up when it finds work and backs off when it finds none.
//!
//! An "inbox" (standing in for an S3 prefix or a log stream) receives two bursts of messages.
//! The poller checks it on every beat: `faster()` when it found something, `slower()` when not.
//! A sender on another task calls `rush()` through a handle after it sends a request, because a
//! reply is likely. At the end it compares its calls with a fixed interval at the same latency.
//!
//! Run it with `cargo run -p cardio --example poller`; it takes about five seconds.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

const MIN: Duration = Duration::from_millis(20);
const MAX: Duration = Duration::from_millis(640);
const RUN_FOR: Duration = Duration::from_secs(5);

type Inbox = Arc<Mutex<Vec<String>>>;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let inbox: Inbox = Arc::default();
    let stop = CancellationToken::new();
    let mut heart = cardio::Heartbeat::builder(MIN, MAX)
        .name("example-inbox")
        .cancel_on(stop.clone())
        .build();

    // The remote side: a burst of replies at 0.8 s, and at 3 s a request of ours (so we rush)
    // whose replies trickle in.
    let sender = tokio::spawn(traffic(Arc::clone(&inbox), heart.handle()));
    let stopper = tokio::spawn({
        let stop = stop.clone();
        async move {
            sleep(RUN_FOR).await;
            stop.cancel();
        }
    });

    let start = Instant::now();
    let mut polls = 0u32;
    let mut received = 0usize;
    while let Some(beat) = heart.tick().await {
        polls += 1;
        // The "API call": take whatever is in the inbox.
        let found = std::mem::take(&mut *inbox.lock().unwrap());
        received += found.len();
        let interval = if found.is_empty() {
            heart.slower()
        } else {
            heart.faster()
        };
        println!(
            "{:>6.3}s  poll {polls:>3}  found {:>2}  next in {:>4} ms{}",
            (beat.at() - start).as_secs_f64(),
            found.len(),
            interval.as_millis(),
            if beat.coalesced() > 0 {
                "  (late consumer)"
            } else {
                ""
            },
        );
    }
    sender.await.unwrap();
    stopper.await.unwrap();

    let fixed = RUN_FOR.as_millis() / MIN.as_millis() + 1;
    println!(
        "\n{received} messages in {polls} polls; a fixed {} ms interval would have made {fixed} \
         polls for the same latency under load.",
        MIN.as_millis()
    );
}

async fn traffic(inbox: Inbox, heart: cardio::Handle) {
    let send = |n: usize, what: &str| {
        let mut inbox = inbox.lock().unwrap();
        inbox.extend((0..n).map(|i| format!("{what} {i}")));
    };
    sleep(Duration::from_millis(800)).await;
    for _ in 0..5 {
        send(3, "burst");
        sleep(Duration::from_millis(30)).await;
    }
    sleep(Duration::from_millis(2000)).await;
    // We send a request: its replies will land in our inbox soon.
    heart.rush();
    for _ in 0..4 {
        sleep(Duration::from_millis(60)).await;
        send(1, "reply");
    }
}
