//! How a node paces its polls: a pure function of what the last poll found, the current
//! interval and the time since the last traffic.
//!
//! The heart beats faster when polls find data (or at once at the shortest interval: traffic
//! comes in bursts), slower when they find nothing, and slower still when they fail. For a
//! while after the last traffic (`linger`) empty polls slow it only up to `linger_poll`:
//! conversations pause and resume, and a GET probe is cheap. After that it backs off to the
//! longest interval.

use std::time::Duration;

use super::{NodeConfig, OnData};

/// What the last poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polled {
    /// Batches.
    Data,
    /// Nothing.
    Empty,
    /// The poll failed.
    Failed,
}

/// What to do to the heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// `faster()`: halve the interval.
    Faster,
    /// `rush()`: jump to the shortest interval.
    Rush,
    /// `slower()`: lengthen the interval.
    Slower,
    /// Keep the interval.
    Hold,
}

/// The settings pacing depends on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    /// What `slower()` multiplies the interval by.
    pub factor: f64,
    /// What a poll that found data does.
    pub on_data: OnData,
    /// How long after the last traffic empty polls slow the heart only up to `linger_poll`.
    pub linger: Duration,
    /// The longest interval while lingering.
    pub linger_poll: Duration,
}

impl Pacing {
    /// The pacing of a node with `config`.
    pub fn of(config: &NodeConfig) -> Pacing {
        Pacing {
            factor: config.poll_factor,
            on_data: config.on_data,
            linger: config.linger,
            linger_poll: config.linger_poll,
        }
    }

    /// What to do after a poll that found `polled`, with the heart at `interval` and the last
    /// traffic (sent or received) `since_traffic` ago (`None`: no traffic yet; starting is not
    /// traffic, so an idle node does not linger).
    pub fn next(
        &self,
        polled: Polled,
        interval: Duration,
        since_traffic: Option<Duration>,
    ) -> Pace {
        match polled {
            Polled::Data => match self.on_data {
                OnData::Faster => Pace::Faster,
                OnData::Rush => Pace::Rush,
            },
            Polled::Failed => Pace::Slower,
            Polled::Empty => {
                let lingering = since_traffic.is_some_and(|since| since < self.linger);
                if !lingering || interval.mul_f64(self.factor) <= self.linger_poll {
                    Pace::Slower
                } else {
                    Pace::Hold
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn pacing(on_data: OnData) -> Pacing {
        Pacing {
            on_data,
            ..Pacing::of(&NodeConfig::default())
        }
    }

    #[test]
    fn data_rushes_or_speeds_up() {
        assert_eq!(
            pacing(OnData::Rush).next(Polled::Data, ms(800), None),
            Pace::Rush
        );
        assert_eq!(
            pacing(OnData::Faster).next(Polled::Data, ms(800), None),
            Pace::Faster
        );
    }

    #[test]
    fn failures_slow_down_even_while_lingering() {
        let p = pacing(OnData::Rush);
        assert_eq!(p.next(Polled::Failed, ms(200), Some(ms(1))), Pace::Slower);
    }

    #[test]
    fn empty_polls_linger_at_up_to_400_ms_for_five_minutes_after_traffic() {
        // Defaults: factor 1.25, linger 5 min, linger_poll 400 ms.
        let p = pacing(OnData::Rush);
        let recent = Some(Duration::from_secs(10));
        assert_eq!(p.next(Polled::Empty, ms(200), recent), Pace::Slower); // 250 ms next
        assert_eq!(p.next(Polled::Empty, ms(320), recent), Pace::Slower); // 400 ms next
        assert_eq!(p.next(Polled::Empty, ms(400), recent), Pace::Hold); // 500 would exceed
        let long_ago = Some(Duration::from_secs(300));
        assert_eq!(p.next(Polled::Empty, ms(400), long_ago), Pace::Slower);
        assert_eq!(
            p.next(Polled::Empty, ms(400), None),
            Pace::Slower,
            "no traffic yet: no lingering"
        );
    }
}
