//! Traffic to replay: packets that start a conversation, and what the far side answers.
//!
//! Traces are deterministic (a fixed seed), so two runs of the simulation print the same table.

use std::time::Duration;

use rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One of the two nodes of a simulated link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The node that starts conversations (the client).
    A,
    /// The other one (the server).
    B,
}

impl Side {
    /// The other side.
    pub fn peer(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// What the receiving side sends back when a packet arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Packets sent back.
    pub packets: u32,
    /// Bytes per packet.
    pub size: usize,
}

/// A packet sent at a given time, whatever else happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Send {
    /// Since the trace started.
    pub at: Duration,
    /// Who sends it.
    pub from: Side,
    /// Bytes, IP header included.
    pub size: usize,
    /// What the receiver answers, if anything.
    pub reply: Option<Reply>,
}

/// A trace: scheduled packets, for a duration.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Its name in reports.
    pub name: String,
    /// How long it lasts (packets after the last send are still waited for).
    pub duration: Duration,
    /// Scheduled packets, in time order.
    pub sends: Vec<Send>,
}

/// The traces' randomness: ChaCha8 from a fixed seed, the same numbers on every platform.
struct Rng(ChaCha8Rng);

impl Rng {
    fn seeded(seed: u64) -> Rng {
        Rng(ChaCha8Rng::seed_from_u64(seed))
    }

    /// Uniform in `[lo, hi)`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0.random_range(lo..hi.max(lo + 1))
    }
}

const HOUR: Duration = Duration::from_secs(3_600);
/// An ICMPv6 echo with 56 bytes of data, as `ping -6` sends: 40 + 8 + 56.
const PING: usize = 104;
/// A TCP acknowledgement over IPv6: 40 + 20 + 12 bytes of options.
const ACK: usize = 72;
/// A full-size TCP segment at a 1,500-byte MTU.
const SEGMENT: usize = 1_500;

/// 24 hours with no traffic at all.
pub fn idle() -> Trace {
    Trace {
        name: "idle".into(),
        duration: Duration::from_secs(86_400),
        sends: Vec::new(),
    }
}

/// One echo request a second for an hour, each answered.
pub fn ping() -> Trace {
    let sends = (0..3_600)
        .map(|s| Send {
            at: Duration::from_secs(s),
            from: Side::A,
            size: PING,
            reply: Some(Reply {
                packets: 1,
                size: PING,
            }),
        })
        .collect();
    Trace {
        name: "ping".into(),
        duration: HOUR,
        sends,
    }
}

/// An hour of interactive shell: bursts of typing (5 to 10 keys a second for 5 to 30 seconds,
/// each key echoed and acknowledged), pauses of 20 seconds to 3 minutes between them, and now
/// and then a command whose output comes back in a few segments.
pub fn ssh() -> Trace {
    let mut rng = Rng::seeded(22);
    let mut sends = Vec::new();
    let mut t = Duration::from_secs(5);
    while t < HOUR {
        let burst = Duration::from_secs(rng.range(5, 30));
        let end = t + burst;
        while t < end {
            sends.push(Send {
                at: t,
                from: Side::A,
                size: 100,
                reply: Some(Reply {
                    packets: 1,
                    size: 100,
                }),
            });
            t += Duration::from_millis(rng.range(100, 200));
        }
        // The command runs: its output, a few segments.
        sends.push(Send {
            at: t,
            from: Side::A,
            size: 100,
            reply: Some(Reply {
                packets: rng.range(1, 8) as u32,
                size: SEGMENT,
            }),
        });
        t += Duration::from_secs(rng.range(20, 180));
    }
    Trace {
        name: "ssh".into(),
        duration: HOUR,
        sends,
    }
}

/// An hour of browsing: a page every 30 to 120 seconds, each page 4 to 12 requests of 600
/// bytes, each answered by a response of 5 to 200 KB in full segments. The client's
/// acknowledgements go one per two segments.
pub fn web() -> Trace {
    let mut rng = Rng::seeded(80);
    let mut sends = Vec::new();
    let mut t = Duration::from_secs(2);
    while t < HOUR {
        for i in 0..rng.range(4, 13) {
            let bytes = rng.range(5_000, 200_000) as usize;
            let segments = bytes.div_ceil(SEGMENT) as u32;
            let at = t + Duration::from_millis(i * 50);
            sends.push(Send {
                at,
                from: Side::A,
                size: 600,
                reply: Some(Reply {
                    packets: segments,
                    size: SEGMENT,
                }),
            });
            // The acknowledgements of the response, while it arrives.
            for k in 0..segments.div_ceil(2) {
                sends.push(Send {
                    at: at + Duration::from_millis(200 + u64::from(k)),
                    from: Side::A,
                    size: ACK,
                    reply: None,
                });
            }
        }
        t += Duration::from_secs(rng.range(30, 120));
    }
    sends.sort_by_key(|s| s.at);
    Trace {
        name: "web".into(),
        duration: HOUR,
        sends,
    }
}

/// 1 GiB from A to B in full segments at 200 Mbit/s, B acknowledging every second segment.
pub fn bulk() -> Trace {
    bulk_of(1 << 30)
}

/// `bytes` from A to B as [`bulk`] sends them (full segments at 200 Mbit/s, B acknowledging
/// every second segment), named `bulk` too.
pub fn bulk_of(bytes: u64) -> Trace {
    let segments = bytes.div_ceil(SEGMENT as u64);
    let gap = Duration::from_secs_f64(SEGMENT as f64 * 8.0 / 200e6);
    let sends = (0..segments)
        .map(|i| Send {
            at: gap * i as u32,
            from: Side::A,
            size: SEGMENT,
            reply: (i % 2 == 1).then_some(Reply {
                packets: 1,
                size: ACK,
            }),
        })
        .collect();
    Trace {
        name: "bulk".into(),
        duration: gap * segments as u32,
        sends,
    }
}

/// An hour of silence, then one echo request: how long the first packet after a quiet spell
/// waits.
pub fn wake() -> Trace {
    Trace {
        name: "wake".into(),
        duration: HOUR + Duration::from_secs(1),
        sends: vec![Send {
            at: HOUR,
            from: Side::A,
            size: PING,
            reply: Some(Reply {
                packets: 1,
                size: PING,
            }),
        }],
    }
}

/// A ping, five minutes of silence, then another: how long the first packet after a pause in a
/// conversation waits (the node is at the end of its linger).
pub fn pause() -> Trace {
    let echo = |at| Send {
        at,
        from: Side::A,
        size: PING,
        reply: Some(Reply {
            packets: 1,
            size: PING,
        }),
    };
    let pause = Duration::from_secs(300);
    Trace {
        name: "pause".into(),
        duration: pause + Duration::from_secs(2),
        sends: vec![
            echo(Duration::from_secs(1)),
            echo(pause + Duration::from_secs(1)),
        ],
    }
}

/// The built-in traces, in report order.
pub fn builtin() -> Vec<Trace> {
    vec![idle(), ping(), ssh(), web(), bulk(), wake(), pause()]
}

/// A day of `trace`: played again every hour (or as soon as it ends, if it lasts longer) until
/// 24 hours are filled, so that a day of `bulk` is a GiB at the start of every hour. A trace of
/// a day or more is returned as it is.
pub fn day_of(trace: &Trace) -> Trace {
    const DAY: Duration = Duration::from_secs(86_400);
    if trace.duration >= DAY {
        return trace.clone();
    }
    let period = trace.duration.max(HOUR);
    let mut sends = Vec::new();
    let mut offset = Duration::ZERO;
    while offset + trace.duration <= DAY {
        sends.extend(trace.sends.iter().map(|s| Send {
            at: offset + s.at,
            ..*s
        }));
        offset += period;
    }
    Trace {
        name: trace.name.clone(),
        duration: offset - period + trace.duration,
        sends,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_of_a_trace_repeats_it_every_hour_for_24_hours() {
        let ping = ping();
        let day = day_of(&ping);
        assert_eq!(day.duration, Duration::from_secs(86_400));
        assert_eq!(day.sends.len(), 24 * ping.sends.len());
        assert_eq!(day.sends[ping.sends.len()].at, HOUR + ping.sends[0].at);
        assert!(day.sends.windows(2).all(|w| w[0].at <= w[1].at));

        let bulk = bulk();
        let day = day_of(&bulk);
        assert_eq!(day.sends.len(), 24 * bulk.sends.len(), "a GiB every hour");
        assert_eq!(day.duration, 23 * HOUR + bulk.duration);

        assert_eq!(day_of(&idle()), idle());
    }
}
