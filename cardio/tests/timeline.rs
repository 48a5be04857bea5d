//! Timeline tests on Tokio's paused clock. Each test draws the beats it expects as a timeline:
//! `|` is a beat, numbers are seconds since the heart started.

use std::num::NonZeroU32;
use std::time::Duration;

use cardio::{Budget, Heartbeat, heartbeat};
use futures_util::StreamExt;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Takes `n` beats, applying `after_beat` after each, and returns when each came, relative to
/// `start`.
async fn beats(
    heart: &mut Heartbeat,
    start: Instant,
    n: usize,
    mut after_beat: impl FnMut(&Heartbeat),
) -> Vec<Duration> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        heart.tick().await.expect("heart stopped");
        times.push(start.elapsed());
        after_beat(heart);
    }
    times
}

#[tokio::test(start_paused = true)]
async fn first_beat_at_once_then_every_start_interval() {
    // |    |    |    |
    // 0    1    2    3     (start = min = 1 s)
    let start = Instant::now();
    let mut heart = heartbeat(secs(1), secs(60));
    assert_eq!(
        beats(&mut heart, start, 4, |_| {}).await,
        [secs(0), secs(1), secs(2), secs(3)]
    );
}

#[tokio::test(start_paused = true)]
async fn builder_chooses_the_starting_interval() {
    let start = Instant::now();
    let mut heart = Heartbeat::builder(secs(1), secs(60)).start(secs(5)).build();
    assert_eq!(
        beats(&mut heart, start, 3, |_| {}).await,
        [secs(0), secs(5), secs(10)]
    );
}

#[tokio::test(start_paused = true)]
async fn slower_doubles_up_to_max() {
    // | |  |    |        |        |
    // 0 1  3    7        15       23    (gaps 1, 2, 4, 8, 8: clamped at max = 8)
    let start = Instant::now();
    let mut heart = heartbeat(secs(1), secs(8));
    let times = beats(&mut heart, start, 6, |h| {
        h.slower();
    })
    .await;
    assert_eq!(
        times,
        [secs(0), secs(2), secs(6), secs(14), secs(22), secs(30)]
    );
    assert_eq!(heart.interval(), secs(8));
    assert_eq!(heart.slower(), secs(8), "slower() at max stays at max");
}

#[tokio::test(start_paused = true)]
async fn faster_halves_down_to_min() {
    // |       |   | | | |
    // 0       4   6 7 8 9    (start 8; faster after each beat: 4, 2, 1, 1, 1)
    let start = Instant::now();
    let mut heart = Heartbeat::builder(secs(1), secs(60)).start(secs(8)).build();
    let times = beats(&mut heart, start, 6, |h| {
        h.faster();
    })
    .await;
    assert_eq!(
        times,
        [secs(0), secs(4), secs(6), secs(7), secs(8), secs(9)]
    );
    assert_eq!(heart.faster(), secs(1), "faster() at min stays at min");
}

#[tokio::test(start_paused = true)]
async fn clamps_when_the_factor_overshoots_a_bound() {
    // A factor of 3 from 2 s: 6, then 18 clamps to 10; down: 10/3 = 3.33, then 1.11 clamps to 1.5.
    let heart = Heartbeat::builder(ms(1500), secs(10))
        .factor(3.0)
        .start(secs(2))
        .build();
    assert_eq!(heart.slower(), secs(6));
    assert_eq!(heart.slower(), secs(10));
    assert_eq!(heart.faster(), Duration::from_nanos(3_333_333_333));
    assert_eq!(heart.faster(), ms(1500));
    assert_eq!(heart.interval(), ms(1500));
}

#[tokio::test(start_paused = true)]
async fn rush_jumps_to_min() {
    // |                   |  | |
    // 0                   30 31 32    (start 30 s; rush() after the second beat)
    let start = Instant::now();
    let mut heart = Heartbeat::builder(secs(1), secs(60))
        .start(secs(30))
        .build();
    let mut times = beats(&mut heart, start, 2, |_| {}).await;
    assert_eq!(heart.rush(), secs(1));
    times.extend(beats(&mut heart, start, 2, |_| {}).await);
    assert_eq!(times, [secs(0), secs(30), secs(31), secs(32)]);
}

#[tokio::test(start_paused = true)]
async fn a_change_mid_sleep_moves_the_pending_beat_at_once() {
    // |.....x..|               the interval is 8 s; at 5 s it becomes 2 s: the beat due at
    // 0     5  8               0 + 2 = 2 s is overdue and fires at once, at 5 s.
    let start = Instant::now();
    let mut heart = Heartbeat::builder(secs(1), secs(60)).start(secs(8)).build();
    heart.tick().await;
    let handle = heart.handle();
    let (beat, ()) = tokio::join!(heart.tick(), async {
        sleep(secs(5)).await;
        handle.faster();
        handle.faster();
    });
    assert_eq!(beat.unwrap().at() - start, secs(5));

    // The last beat was at 5 s, the interval is 2 s; at 6 s it becomes 4 s: due at 9 s.
    let (beat, ()) = tokio::join!(heart.tick(), async {
        sleep(secs(1)).await;
        handle.slower();
    });
    assert_eq!(beat.unwrap().at() - start, secs(9));

    // The last beat was at 9 s, the interval is 4 s; at 10 s it becomes 2 s: due at 11 s, not 13 s.
    let (beat, ()) = tokio::join!(heart.tick(), async {
        sleep(secs(1)).await;
        handle.faster();
    });
    assert_eq!(beat.unwrap().at() - start, secs(11));
}

#[tokio::test(start_paused = true)]
async fn a_slow_consumer_gets_one_beat_not_a_burst() {
    // |   the consumer works 3.5 s after each beat; beats due at 1, 2, 3 coalesce into
    // 0   one at 3.5 (two missed: 2 and 3), and the heart slows itself to 2 s.
    let start = Instant::now();
    let mut heart = heartbeat(secs(1), secs(60));
    assert_eq!(heart.tick().await.unwrap().coalesced(), 0);
    sleep(ms(3500)).await;
    let beat = heart.tick().await.unwrap();
    assert_eq!(beat.at() - start, ms(3500));
    assert_eq!(beat.coalesced(), 2);
    assert_eq!(heart.interval(), secs(2));
    // A consumer that keeps up again gets beats on time, none coalesced.
    let beat = heart.tick().await.unwrap();
    assert_eq!(beat.at() - start, ms(5500));
    assert_eq!(beat.coalesced(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_consumer_late_by_less_than_an_interval_loses_nothing() {
    let start = Instant::now();
    let mut heart = heartbeat(secs(2), secs(60));
    heart.tick().await;
    sleep(ms(3500)).await; // due at 2 s, taken at 3.5 s: late by less than one interval
    let beat = heart.tick().await.unwrap();
    assert_eq!(beat.coalesced(), 0);
    assert_eq!(heart.interval(), secs(2));
    // The next beat is one interval after delivery, so no two beats come closer than `min`.
    assert_eq!(heart.tick().await.unwrap().at() - start, ms(5500));
}

#[tokio::test(start_paused = true)]
async fn a_handle_on_another_task_wakes_the_heart() {
    let start = Instant::now();
    let mut heart = Heartbeat::builder(ms(100), secs(60))
        .start(secs(60))
        .build();
    heart.tick().await;
    let handle = heart.handle();
    let sender = tokio::spawn(async move {
        sleep(secs(3)).await;
        // A request went out: a reply is likely.
        handle.rush()
    });
    // Due at 3.1 s: the rush at 3 s plus the 100 ms interval from the beat at 0 has passed,
    // so the beat fires at once, at 3 s.
    let beat = heart.tick().await.unwrap();
    assert_eq!(beat.at() - start, secs(3));
    assert_eq!(sender.await.unwrap(), ms(100));
    assert_eq!(heart.tick().await.unwrap().at() - start, ms(3100));
}

#[tokio::test(start_paused = true)]
async fn every_change_from_another_task_wakes_the_heart() {
    // The consumer slows to 64 s after every beat; another task rushes at 5, 7 and 10 s. Each
    // rush must wake the consumer's task on its own (it sleeps on nothing else):
    // |    |  |  |
    // 0    5  7  10
    let start = Instant::now();
    let mut heart = Heartbeat::builder(secs(1), secs(64))
        .start(secs(64))
        .build();
    let handle = heart.handle();
    let sender = tokio::spawn(async move {
        for wait in [5, 2, 3] {
            sleep(secs(wait)).await;
            handle.rush();
        }
    });
    let times = beats(&mut heart, start, 4, |h| {
        for _ in 0..6 {
            h.slower();
        }
    })
    .await;
    assert_eq!(times, [secs(0), secs(5), secs(7), secs(10)]);
    sender.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn handle_is_send_sync_and_outlives_the_heart() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>(_: &T) {}
    let heart = heartbeat(secs(1), secs(4));
    let handle = heart.handle();
    assert_send_sync(&handle);
    drop(heart);
    assert_eq!(handle.slower(), secs(2));
    assert_eq!(handle.faster(), secs(1));
    assert_eq!(handle.rush(), secs(1));
    assert_eq!(handle.clone().interval(), secs(1));
}

#[tokio::test(start_paused = true)]
async fn cancellation_ends_the_stream() {
    let token = CancellationToken::new();
    let start = Instant::now();
    let mut heart = Heartbeat::builder(secs(1), secs(60))
        .start(secs(60))
        .cancel_on(token.clone())
        .build();
    heart.tick().await;
    let (beat, ()) = tokio::join!(heart.tick(), async {
        sleep(secs(2)).await;
        token.cancel();
    });
    assert_eq!(beat, None);
    assert_eq!(
        start.elapsed(),
        secs(2),
        "cancellation wakes the sleeping heart"
    );
    assert_eq!(heart.tick().await, None, "a cancelled heart stays stopped");
    assert_eq!(heart.next().await, None);
    assert!(futures_util::stream::FusedStream::is_terminated(&heart));
}

#[tokio::test(start_paused = true)]
async fn is_a_stream_of_beats() {
    let start = Instant::now();
    let heart = heartbeat(secs(1), secs(60));
    let times: Vec<_> = heart.take(3).map(|b| b.at() - start).collect().await;
    assert_eq!(times, [secs(0), secs(1), secs(2)]);
}

#[tokio::test(start_paused = true)]
async fn tick_is_cancel_safe() {
    // A `select!` that gives up on tick() after 0.5 s must not lose or move the beat due at 1 s.
    let start = Instant::now();
    let mut heart = heartbeat(secs(1), secs(60));
    heart.tick().await;
    tokio::select! {
        _ = heart.tick() => panic!("the beat is not due yet"),
        () = sleep(ms(500)) => {}
    }
    assert_eq!(heart.tick().await.unwrap().at() - start, secs(1));
}

#[tokio::test(start_paused = true)]
async fn jitter_spreads_gaps_within_bounds() {
    let jitter = 0.25;
    let mut heart = Heartbeat::builder(secs(4), secs(4)).jitter(jitter).build();
    let mut last = heart.tick().await.unwrap().at();
    let mut gaps = Vec::new();
    for _ in 0..200 {
        let at = heart.tick().await.unwrap().at();
        gaps.push(at - last);
        last = at;
    }
    // The timer rounds deadlines up to the millisecond.
    let low = secs(3);
    let high = secs(5) + ms(1);
    assert!(gaps.iter().all(|g| low <= *g && *g <= high), "{gaps:?}");
    let shortest = gaps.iter().min().unwrap();
    let longest = gaps.iter().max().unwrap();
    assert!(
        *longest - *shortest > secs(1),
        "200 draws should spread over most of [3 s, 5 s]: {shortest:?}..{longest:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_jitter_seed_repeats_the_timeline() {
    let start = Instant::now();
    let seeded = |seed| {
        Heartbeat::builder(secs(1), secs(1))
            .jitter(0.5)
            .jitter_seed(seed)
            .build()
    };
    let (mut a, mut b, mut c) = (seeded(7), seeded(7), seeded(8));
    let ta = beats(&mut a, start, 20, |_| {}).await;
    let start = Instant::now();
    let tb = beats(&mut b, start, 20, |_| {}).await;
    let start = Instant::now();
    let tc = beats(&mut c, start, 20, |_| {}).await;
    assert_eq!(ta, tb, "the same seed, the same gaps");
    assert_ne!(ta, tc, "another seed, other gaps");
}

#[tokio::test(start_paused = true)]
async fn budget_stretches_the_interval() {
    // Two beats back to back, then one every 10 s on average, however hard faster() pushes:
    // |  |        |         |         |
    // 0  1        10        20        30
    let start = Instant::now();
    let budget =
        Budget::new(NonZeroU32::new(1).unwrap(), secs(10)).with_burst(NonZeroU32::new(2).unwrap());
    let mut heart = Heartbeat::builder(secs(1), secs(60)).budget(budget).build();
    let times = beats(&mut heart, start, 5, |h| {
        h.rush();
    })
    .await;
    assert_eq!(times, [secs(0), secs(1), secs(10), secs(20), secs(30)]);
    assert_eq!(heart.budget(), Some(budget));
}

#[tokio::test(start_paused = true)]
async fn budget_refills_while_idle() {
    // After a long idle stretch the bucket is full again: a burst of 3 at the `min` interval.
    let start = Instant::now();
    let budget =
        Budget::new(NonZeroU32::new(1).unwrap(), secs(10)).with_burst(NonZeroU32::new(3).unwrap());
    let mut heart = Heartbeat::builder(secs(1), secs(100))
        .start(secs(100))
        .budget(budget)
        .build();
    let mut times = beats(&mut heart, start, 2, |_| {}).await;
    heart.rush();
    times.extend(beats(&mut heart, start, 4, |_| {}).await);
    assert_eq!(
        times,
        [
            secs(0),
            secs(100),
            secs(101),
            secs(102),
            secs(110),
            secs(120)
        ]
    );
}

#[test]
#[should_panic(expected = "`min`, the shortest interval between beats, must not be zero")]
fn zero_min_panics_naming_the_argument() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    heartbeat(Duration::ZERO, secs(1));
}

#[test]
#[should_panic(
    expected = "`min` (10s), the shortest interval between beats, is greater than \
                           `max` (1s), the longest; did you pass them the other way round?"
)]
fn swapped_bounds_panic_naming_the_arguments() {
    let _ = Heartbeat::builder(secs(10), secs(1));
}

#[test]
#[should_panic(expected = "`start` (1ms) must lie between `min` (1s) and `max` (2s)")]
fn start_outside_the_bounds_panics() {
    let _ = Heartbeat::builder(secs(1), secs(2)).start(ms(1));
}

#[test]
#[should_panic(expected = "`jitter` must be at least 0 and less than 1")]
fn jitter_of_one_panics() {
    let _ = Heartbeat::builder(secs(1), secs(2)).jitter(1.0);
}

#[test]
#[should_panic(expected = "`factor` must be finite and greater than 1")]
fn factor_of_one_panics() {
    let _ = Heartbeat::builder(secs(1), secs(2)).factor(1.0);
}

/// Tokio's timer fires at a deadline rounded up to its millisecond. Scheduled from the previous
/// delivery, every 1.5 ms interval would become 2 ms (a third fewer beats); scheduled from the
/// previous deadline, the rate is the interval's.
#[tokio::test(start_paused = true)]
async fn the_rate_is_the_intervals_despite_the_timers_millisecond() {
    let start = Instant::now();
    let interval = Duration::from_micros(1500);
    let mut heart = heartbeat(interval, interval);
    let times = beats(&mut heart, start, 1001, |_| {}).await;
    // Beat k is due at k × 1.5 ms and delivered within the millisecond after.
    for (k, at) in times.iter().enumerate() {
        let due = interval * k as u32;
        assert!(
            *at >= due && *at < due + ms(1),
            "beat {k} at {at:?}, due {due:?}"
        );
    }
    assert_eq!(times[1000], ms(1500));
}

/// Below the timer's resolution, the timer's rounding is not a consumer falling behind: the
/// heart neither counts missed beats nor slows down.
#[tokio::test(start_paused = true)]
async fn the_timers_rounding_is_not_a_late_consumer() {
    let start = Instant::now();
    let interval = Duration::from_micros(400);
    let mut heart = heartbeat(interval, secs(1));
    let mut coalesced = 0;
    for _ in 0..101 {
        coalesced += heart.tick().await.unwrap().coalesced();
    }
    assert_eq!(coalesced, 0);
    assert_eq!(heart.interval(), interval);
    // The rate is still the interval's: the beats due within one of the timer's milliseconds
    // come together when it fires, never before they are due.
    let elapsed = start.elapsed();
    assert!(
        elapsed >= interval * 100 && elapsed < interval * 100 + ms(1),
        "100 intervals of 400 µs took {elapsed:?}"
    );
}

/// Up to 5 ms late, a beat keeps the schedule's phase; later than that, the consumer took it
/// late and the next one comes a whole interval after delivery.
#[tokio::test(start_paused = true)]
async fn five_milliseconds_late_is_on_time_and_later_restarts_the_schedule() {
    //   0    10  14  20        30     36        46
    //   |    .   |   |         .      |         |
    let start = Instant::now();
    let mut heart = heartbeat(ms(10), ms(10));
    heart.tick().await;
    sleep(ms(14)).await; // due at 10, taken at 14
    assert_eq!(heart.tick().await.unwrap().at() - start, ms(14));
    assert_eq!(heart.tick().await.unwrap().at() - start, ms(20));
    sleep(ms(16)).await; // due at 30, taken at 36
    assert_eq!(heart.tick().await.unwrap().at() - start, ms(36));
    assert_eq!(heart.tick().await.unwrap().at() - start, ms(46));
}

/// A beat out of turn: `min` does not hold it back, the budget does, and the schedule goes on
/// from it.
#[tokio::test(start_paused = true)]
async fn a_beat_now_comes_at_once_within_the_budget_and_the_next_an_interval_later() {
    //   0  0.3  0.3(refused)   1.3
    //   |  |                   |
    let start = Instant::now();
    let two = NonZeroU32::new(2).unwrap();
    let budget = Budget::new(two, secs(60)).with_burst(two);
    let mut heart = Heartbeat::builder(secs(1), secs(8)).budget(budget).build();
    heart.tick().await;
    sleep(ms(300)).await;
    let beat = heart.beat_now().expect("the budget has a second beat");
    assert_eq!(beat.at() - start, ms(300));
    assert!(heart.beat_now().is_none(), "the budget has no third");
    // The refused beat changed nothing; the next is due an interval after the one out of turn,
    // and waits for the budget (two a minute).
    let beat = heart.tick().await.unwrap();
    assert_eq!(beat.at() - start, secs(30));
    let mut free = heartbeat(secs(1), secs(8));
    free.tick().await;
    let now = free.beat_now().unwrap().at();
    assert_eq!(free.tick().await.unwrap().at() - now, secs(1));
}
