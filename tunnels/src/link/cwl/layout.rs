//! Stream names, and the two small messages beside batches: rings and marks.
//!
//! ```text
//! {prefix}{dest}/{sender}   batches from sender to dest, one event each (wire::text)
//! {prefix}{dest}/bell       rings: "r1 {sender} {epoch}", a sender is talking to dest
//! {prefix}{dest}/mark       marks: where dest's receiver had read, written before it delivers
//! ```
//!
//! Node ids and epochs are 16 lower-case hex digits. A mark is
//!
//! ```text
//! m1 {bell position} {sender}.{epoch}.{next}.{position} ...
//! ```
//!
//! with positions in milliseconds since the epoch (decimal) and `next` the next sequence number
//! to deliver (decimal): one entry per live stream.

use crate::link::NodeId;

/// The longest stream name CloudWatch Logs takes.
pub const MAX_STREAM_NAME: usize = 512;

/// Why a stream prefix cannot be used.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if let Some(c) = prefix.chars().find(|c| matches!(c, ':' | '*')) {
        return Err(format!(
            "a log stream name cannot contain {c:?}: {prefix:?}"
        ));
    }
    // The longest name: prefix, 16 hex, '/', 16 hex.
    if prefix.len() + 33 > MAX_STREAM_NAME {
        return Err(format!(
            "stream prefix of {} bytes: at most {} leave room for the node ids",
            prefix.len(),
            MAX_STREAM_NAME - 33
        ));
    }
    Ok(())
}

/// The stream of batches from `sender` to `dest`.
pub fn batch_stream(prefix: &str, dest: NodeId, sender: NodeId) -> String {
    format!("{prefix}{dest:016x}/{sender:016x}")
}

/// The stream where senders ring `dest`.
pub fn bell_stream(prefix: &str, dest: NodeId) -> String {
    format!("{prefix}{dest:016x}/bell")
}

/// The stream where `dest`'s receiver writes how far it read.
pub fn mark_stream(prefix: &str, dest: NodeId) -> String {
    format!("{prefix}{dest:016x}/mark")
}

/// A ring: `sender` in `epoch` is sending to the bell's owner.
pub fn ring(sender: NodeId, epoch: u64) -> String {
    format!("r1 {sender:016x} {epoch:016x}")
}

/// The sender a ring names; `None` if the message is not a ring.
pub fn parse_ring(message: &str) -> Option<(NodeId, u64)> {
    let mut parts = message.split(' ');
    if parts.next()? != "r1" {
        return None;
    }
    let sender = hex16(parts.next()?)?;
    let epoch = hex16(parts.next()?)?;
    parts.next().is_none().then_some((sender, epoch))
}

/// Where a receiver had read: the bell, and each live stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mark {
    /// Read the bell from here (milliseconds since the epoch).
    pub bell: i64,
    /// Each stream: where it was.
    pub streams: Vec<MarkEntry>,
}

/// Where one (sender, epoch) stream was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkEntry {
    /// The sender.
    pub sender: NodeId,
    /// Its epoch.
    pub epoch: u64,
    /// The next sequence number to deliver.
    pub next: u64,
    /// Read the sender's stream from here (milliseconds since the epoch).
    pub position: i64,
}

impl Mark {
    /// The mark as a message.
    pub fn to_message(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!("m1 {}", self.bell);
        for e in &self.streams {
            let _ = write!(
                out,
                " {:016x}.{:016x}.{}.{}",
                e.sender, e.epoch, e.next, e.position
            );
        }
        out
    }

    /// The mark a message holds; `None` if it is not a mark.
    pub fn parse(message: &str) -> Option<Mark> {
        let mut parts = message.split(' ');
        if parts.next()? != "m1" {
            return None;
        }
        let bell = parts.next()?.parse().ok()?;
        let streams = parts
            .map(|entry| {
                let mut fields = entry.split('.');
                let e = MarkEntry {
                    sender: hex16(fields.next()?)?,
                    epoch: hex16(fields.next()?)?,
                    next: fields.next()?.parse().ok()?,
                    position: fields.next()?.parse().ok()?,
                };
                fields.next().is_none().then_some(e)
            })
            .collect::<Option<_>>()?;
        Some(Mark { bell, streams })
    }
}

fn hex16(s: &str) -> Option<u64> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_rings_and_marks_round_trip() {
        assert_eq!(
            batch_stream("net/", 0xb, 0xa),
            "net/000000000000000b/000000000000000a"
        );
        assert_eq!(bell_stream("", 0xb), "000000000000000b/bell");
        assert_eq!(mark_stream("", 0xb), "000000000000000b/mark");
        assert_eq!(parse_ring(&ring(0xa, 7)), Some((0xa, 7)));
        for bad in [
            "",
            "r1",
            "r1 a 7",
            "r2 000000000000000a 0000000000000007",
            "m1 0",
        ] {
            assert_eq!(parse_ring(bad), None, "{bad:?}");
        }
        let mark = Mark {
            bell: 1_800_000_000_123,
            streams: vec![
                MarkEntry {
                    sender: 0xa,
                    epoch: u64::MAX,
                    next: 12,
                    position: 1_800_000_000_000,
                },
                MarkEntry {
                    sender: 0xc,
                    epoch: 1,
                    next: 0,
                    position: 0,
                },
            ],
        };
        assert_eq!(Mark::parse(&mark.to_message()), Some(mark));
        assert_eq!(
            Mark::parse("m1 5"),
            Some(Mark {
                bell: 5,
                streams: vec![]
            })
        );
        for bad in [
            "",
            "m1",
            "m1 x",
            "m1 5 000000000000000a.1.2",
            "m1 5 a.1.2.3",
            "m1 5  ",
        ] {
            assert_eq!(Mark::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn prefixes_the_service_refuses_are_refused() {
        assert!(check_prefix("").is_ok());
        assert!(check_prefix("tunnel/").is_ok());
        assert!(check_prefix("a:b").is_err());
        assert!(check_prefix("a*").is_err());
        assert!(check_prefix(&"p".repeat(480)).is_err());
    }
}
