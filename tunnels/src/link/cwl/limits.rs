//! What one PutLogEvents call may carry, checked before it is made.
//!
//! CloudWatch Logs refuses (or, for time, silently drops) events outside these limits; local
//! servers such as `moto_server` enforce none of them. So the link sizes its calls by them, the
//! in-memory model refuses what breaks them as the service would, and the tests check every call
//! the link makes against a real server with [`check_put`].
//!
//! From the PutLogEvents API reference (late 2026):
//!
//! - a call carries at most 1,048,576 bytes, counted as the sum of each event's message bytes
//!   (UTF-8) plus 26;
//! - at most 10,000 events;
//! - events in chronological order of their timestamps;
//! - the events of a call span less than 24 hours;
//! - no event older than 14 days or more than 2 hours in the future;
//! - an event's size (message plus 26) at most [`MAX_EVENT_BYTES`]: 256 KB was the limit for
//!   years, and the link keeps to it by default; the newest API reference gives 1 MB, which
//!   [`CwlLinkConfig::event_bytes`](super::CwlLinkConfig::event_bytes) may choose.

use std::fmt;

use super::store::LogEvent;

/// The most bytes one PutLogEvents call may carry, events counted as message plus 26.
pub const MAX_CALL_BYTES: usize = 1_048_576;

/// What each event adds to a call's size beside its message.
pub const EVENT_OVERHEAD: usize = 26;

/// The most events in one call.
pub const MAX_EVENTS: usize = 10_000;

/// The largest event the service takes, message plus 26 (the newest API reference).
pub const MAX_EVENT_BYTES: usize = 1_048_576;

/// The largest event every version of the service has taken: 256 KB, message plus 26. The
/// link's default.
pub const CLASSIC_EVENT_BYTES: usize = 262_144;

/// How far apart the first and last events of one call may be, in milliseconds (under 24 h).
pub const MAX_SPAN_MS: i64 = 24 * 3_600 * 1_000;

/// How old an event may be, in milliseconds (14 days).
pub const MAX_AGE_MS: i64 = 14 * 24 * 3_600 * 1_000;

/// How far ahead an event may be, in milliseconds (2 hours).
pub const MAX_AHEAD_MS: i64 = 2 * 3_600 * 1_000;

/// A PutLogEvents call outside the service's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitError {
    /// A call with no event.
    NoEvents,
    /// More than [`MAX_EVENTS`] events.
    TooManyEvents(usize),
    /// More than [`MAX_CALL_BYTES`], counted as the service counts.
    TooManyBytes(usize),
    /// Event `index` is larger than the event size limit.
    EventTooLarge {
        /// Which event.
        index: usize,
        /// Its size, message plus 26.
        bytes: usize,
    },
    /// Event `index` is older than the one before it.
    OutOfOrder {
        /// Which event.
        index: usize,
    },
    /// The events span 24 hours or more.
    SpanTooLong(i64),
    /// Event `index` is more than 14 days old or more than 2 hours ahead of `now`.
    OutOfRange {
        /// Which event.
        index: usize,
    },
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitError::NoEvents => f.write_str("PutLogEvents with no event"),
            LimitError::TooManyEvents(n) => {
                write!(f, "PutLogEvents with {n} events (at most {MAX_EVENTS})")
            }
            LimitError::TooManyBytes(n) => {
                write!(
                    f,
                    "PutLogEvents of {n} bytes (at most {MAX_CALL_BYTES}, 26 per event counted)"
                )
            }
            LimitError::EventTooLarge { index, bytes } => {
                write!(
                    f,
                    "log event {index} is {bytes} bytes with its 26 of overhead, over the limit"
                )
            }
            LimitError::OutOfOrder { index } => {
                write!(f, "log event {index} is older than the one before it")
            }
            LimitError::SpanTooLong(ms) => {
                write!(f, "PutLogEvents spanning {ms} ms (under 24 hours allowed)")
            }
            LimitError::OutOfRange { index } => write!(
                f,
                "log event {index} is more than 14 days old or more than 2 hours ahead"
            ),
        }
    }
}

impl std::error::Error for LimitError {}

/// The size of `events` as the service counts it: message bytes plus 26 each.
pub fn call_bytes(events: &[LogEvent]) -> usize {
    events
        .iter()
        .map(|e| e.message.len() + EVENT_OVERHEAD)
        .sum()
}

/// Checks one PutLogEvents call against the service's limits, with events at most
/// `max_event_bytes` each (message plus 26) and `now` the time in milliseconds.
pub fn check_put(events: &[LogEvent], max_event_bytes: usize, now: i64) -> Result<(), LimitError> {
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Err(LimitError::NoEvents);
    };
    if events.len() > MAX_EVENTS {
        return Err(LimitError::TooManyEvents(events.len()));
    }
    let bytes = call_bytes(events);
    if bytes > MAX_CALL_BYTES {
        return Err(LimitError::TooManyBytes(bytes));
    }
    for (index, event) in events.iter().enumerate() {
        let size = event.message.len() + EVENT_OVERHEAD;
        if size > max_event_bytes.min(MAX_EVENT_BYTES) {
            return Err(LimitError::EventTooLarge { index, bytes: size });
        }
        if index > 0 && event.timestamp < events[index - 1].timestamp {
            return Err(LimitError::OutOfOrder { index });
        }
        if event.timestamp < now.saturating_sub(MAX_AGE_MS)
            || event.timestamp > now.saturating_add(MAX_AHEAD_MS)
        {
            return Err(LimitError::OutOfRange { index });
        }
    }
    let span = last.timestamp - first.timestamp;
    if span >= MAX_SPAN_MS {
        return Err(LimitError::SpanTooLong(span));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(timestamp: i64, len: usize) -> LogEvent {
        LogEvent {
            timestamp,
            message: "x".repeat(len),
        }
    }

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn a_full_call_of_four_classic_events_fits_and_one_byte_more_does_not() {
        let full = vec![event(NOW, CLASSIC_EVENT_BYTES - EVENT_OVERHEAD); 4];
        assert_eq!(call_bytes(&full), MAX_CALL_BYTES);
        assert_eq!(check_put(&full, CLASSIC_EVENT_BYTES, NOW), Ok(()));
        let mut over = full.clone();
        over[3].message.push('x');
        assert!(matches!(
            check_put(&over, MAX_EVENT_BYTES, NOW),
            Err(LimitError::TooManyBytes(1_048_577))
        ));
        assert_eq!(
            check_put(&over[3..], CLASSIC_EVENT_BYTES, NOW),
            Err(LimitError::EventTooLarge {
                index: 0,
                bytes: CLASSIC_EVENT_BYTES + 1
            })
        );
        assert_eq!(check_put(&over[3..], MAX_EVENT_BYTES, NOW), Ok(()));
    }

    #[test]
    fn counts_order_span_and_age_are_checked() {
        assert_eq!(
            check_put(&[], MAX_EVENT_BYTES, NOW),
            Err(LimitError::NoEvents)
        );
        let many = vec![event(NOW, 1); MAX_EVENTS + 1];
        assert_eq!(
            check_put(&many, MAX_EVENT_BYTES, NOW),
            Err(LimitError::TooManyEvents(MAX_EVENTS + 1))
        );
        assert_eq!(check_put(&many[1..], MAX_EVENT_BYTES, NOW), Ok(()));
        let backwards = [event(NOW, 1), event(NOW - 1, 1)];
        assert_eq!(
            check_put(&backwards, MAX_EVENT_BYTES, NOW),
            Err(LimitError::OutOfOrder { index: 1 })
        );
        let same_ms = [event(NOW, 1), event(NOW, 1)];
        assert_eq!(check_put(&same_ms, MAX_EVENT_BYTES, NOW), Ok(()));
        let day = [event(NOW - MAX_SPAN_MS, 1), event(NOW, 1)];
        assert_eq!(
            check_put(&day, MAX_EVENT_BYTES, NOW),
            Err(LimitError::SpanTooLong(MAX_SPAN_MS))
        );
        let stale = [event(NOW - MAX_AGE_MS - 1, 1)];
        assert_eq!(
            check_put(&stale, MAX_EVENT_BYTES, NOW),
            Err(LimitError::OutOfRange { index: 0 })
        );
        let ahead = [event(NOW + MAX_AHEAD_MS + 1, 1)];
        assert_eq!(
            check_put(&ahead, MAX_EVENT_BYTES, NOW),
            Err(LimitError::OutOfRange { index: 0 })
        );
    }
}
