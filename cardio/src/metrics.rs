//! Metric handles, registered once per heartbeat.
//!
//! Handles are looked up when the heartbeat is built and kept, so a beat costs one branch on a
//! no-op handle when no recorder is installed, and no key lookup or allocation when one is.
//! The flip side: a recorder installed after the heartbeat is built does not see it.

use metrics::{Counter, Gauge, SharedString};

/// Label that carries the heartbeat's name on every metric.
pub(crate) const LABEL: &str = "heartbeat";

/// Names of the metrics a heartbeat records.
pub mod names {
    /// Gauge: the current interval between beats, in seconds.
    pub const INTERVAL_SECONDS: &str = "cardio_interval_seconds";
    /// Counter: beats delivered.
    pub const BEATS: &str = "cardio_beats_total";
    /// Counter: beats that were missed because the consumer was late, and merged into one.
    pub const COALESCED: &str = "cardio_coalesced_beats_total";
    /// Counter: calls to `faster()`.
    pub const FASTER: &str = "cardio_faster_total";
    /// Counter: calls to `slower()`.
    pub const SLOWER: &str = "cardio_slower_total";
    /// Counter: calls to `rush()`.
    pub const RUSH: &str = "cardio_rush_total";
    /// Counter: beats that the budget held back past their interval.
    pub const BUDGET_DEFERRED: &str = "cardio_budget_deferred_total";
}

#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) interval: Gauge,
    pub(crate) beats: Counter,
    pub(crate) coalesced: Counter,
    pub(crate) faster: Counter,
    pub(crate) slower: Counter,
    pub(crate) rush: Counter,
    pub(crate) budget_deferred: Counter,
}

impl Metrics {
    pub(crate) fn register(name: SharedString) -> Self {
        let n = || name.clone();
        Metrics {
            interval: metrics::gauge!(names::INTERVAL_SECONDS, LABEL => n()),
            beats: metrics::counter!(names::BEATS, LABEL => n()),
            coalesced: metrics::counter!(names::COALESCED, LABEL => n()),
            faster: metrics::counter!(names::FASTER, LABEL => n()),
            slower: metrics::counter!(names::SLOWER, LABEL => n()),
            rush: metrics::counter!(names::RUSH, LABEL => n()),
            budget_deferred: metrics::counter!(names::BUDGET_DEFERRED, LABEL => n()),
        }
    }
}
