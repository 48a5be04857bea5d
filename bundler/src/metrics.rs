//! Metric handles, registered once per bundler (see `cardio`'s for why).

use metrics::{Counter, Gauge, Histogram, SharedString};

/// Label that carries the bundler's name on every metric.
pub(crate) const LABEL: &str = "bundler";

/// Names of the metrics a bundler records.
pub mod names {
    /// Counter: bundles handed to the handler, labelled `reason` (see [`Reason`](crate::Reason)).
    pub const BUNDLES: &str = "bundler_bundles_total";
    /// Histogram: items per bundle handed to the handler.
    pub const BUNDLE_ITEMS: &str = "bundler_bundle_items";
    /// Histogram: bytes per bundle handed to the handler, overheads included.
    pub const BUNDLE_BYTES: &str = "bundler_bundle_bytes";
    /// Histogram: seconds from a bundle's first item to its handler call.
    pub const BUNDLE_AGE_SECONDS: &str = "bundler_bundle_age_seconds";
    /// Gauge: bytes accepted and not yet handled.
    pub const BUFFERED_BYTES: &str = "bundler_buffered_bytes";
    /// Gauge: keys with an open bundle.
    pub const OPEN_KEYS: &str = "bundler_open_keys";
    /// Gauge: handler calls running.
    pub const HANDLERS_IN_FLIGHT: &str = "bundler_handlers_in_flight";
    /// Counter: handler calls that panicked (their bundle counts as handled).
    pub const HANDLER_PANICS: &str = "bundler_handler_panics_total";
}

/// Why a bundle went to the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// It reached `count_threshold`.
    Count,
    /// It reached `byte_threshold`.
    Bytes,
    /// `delay_threshold` passed since its first item.
    Delay,
    /// The next item would have broken `byte_limit` or the API's limits, or a new key needed
    /// its place under `key_limit`.
    Limit,
    /// `flush()` was called.
    Manual,
    /// The bundler was closing.
    Close,
    /// It passed a threshold while the call budget was spent, and went with the next call.
    Budget,
}

impl Reason {
    pub(crate) const ALL: [Reason; 7] = [
        Reason::Count,
        Reason::Bytes,
        Reason::Delay,
        Reason::Limit,
        Reason::Manual,
        Reason::Close,
        Reason::Budget,
    ];

    /// The `reason` label's value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Count => "count",
            Reason::Bytes => "bytes",
            Reason::Delay => "delay",
            Reason::Limit => "limit",
            Reason::Manual => "manual",
            Reason::Close => "close",
            Reason::Budget => "budget",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Metrics {
    bundles: [Counter; 7],
    pub(crate) items: Histogram,
    pub(crate) bytes: Histogram,
    pub(crate) age: Histogram,
    pub(crate) buffered: Gauge,
    pub(crate) open_keys: Gauge,
    pub(crate) in_flight: Gauge,
    pub(crate) panics: Counter,
}

impl Metrics {
    pub(crate) fn register(name: &SharedString) -> Self {
        let n = || name.clone();
        Metrics {
            bundles: Reason::ALL.map(|reason| {
                metrics::counter!(names::BUNDLES, LABEL => n(), "reason" => reason.as_str())
            }),
            items: metrics::histogram!(names::BUNDLE_ITEMS, LABEL => n()),
            bytes: metrics::histogram!(names::BUNDLE_BYTES, LABEL => n()),
            age: metrics::histogram!(names::BUNDLE_AGE_SECONDS, LABEL => n()),
            buffered: metrics::gauge!(names::BUFFERED_BYTES, LABEL => n()),
            open_keys: metrics::gauge!(names::OPEN_KEYS, LABEL => n()),
            in_flight: metrics::gauge!(names::HANDLERS_IN_FLIGHT, LABEL => n()),
            panics: metrics::counter!(names::HANDLER_PANICS, LABEL => n()),
        }
    }

    pub(crate) fn bundle(&self, reason: Reason) -> &Counter {
        &self.bundles[reason as usize]
    }
}
