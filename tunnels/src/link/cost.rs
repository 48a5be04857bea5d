//! What a link's calls cost: usage by operation, priced by a table of per-call and per-GB prices.
//!
//! Links are billed differently: S3 per request (a PUT costs 12.5 GETs, a DELETE nothing),
//! CloudWatch Logs per GB ingested and nothing per call. So a link counts, for each of its
//! operations, the calls it made (every attempt, retries included: each is billed) and the bytes
//! they carried, in a [`Meter`]; a [`Usage`] is a snapshot of those counts, and [`Prices`] turns
//! one into dollars. The operation names are the link's own (`put`, `get`, `list`, `delete` for
//! S3); they are the `kind` label of the calls metric.

use std::borrow::Cow;
use std::fmt;
use std::ops::Sub;
use std::sync::atomic::{AtomicU64, Ordering};

/// One operation's count: calls made and bytes they carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpUsage {
    /// Calls, every attempt counted.
    pub calls: u64,
    /// Bytes the calls carried, as the service bills them (a PUT's body, a GET's body, a log
    /// event's message plus its 26 bytes of overhead).
    pub bytes: u64,
}

/// Calls and bytes by operation, in the order the link lists its operations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    ops: Vec<(&'static str, OpUsage)>,
}

impl Usage {
    /// An empty usage.
    pub fn new() -> Self {
        Usage::default()
    }

    /// Adds `calls` and `bytes` to operation `op` (appended if new).
    pub fn add(&mut self, op: &'static str, calls: u64, bytes: u64) {
        match self.ops.iter_mut().find(|(name, _)| *name == op) {
            Some((_, usage)) => {
                usage.calls += calls;
                usage.bytes += bytes;
            }
            None => self.ops.push((op, OpUsage { calls, bytes })),
        }
    }

    /// The count of `op` (zero if the link has no such operation).
    pub fn get(&self, op: &str) -> OpUsage {
        self.ops
            .iter()
            .find(|(name, _)| *name == op)
            .map_or(OpUsage::default(), |(_, usage)| *usage)
    }

    /// Calls of `op`.
    pub fn calls(&self, op: &str) -> u64 {
        self.get(op).calls
    }

    /// Calls of every operation.
    pub fn total_calls(&self) -> u64 {
        self.ops.iter().map(|(_, usage)| usage.calls).sum()
    }

    /// Bytes of every operation.
    pub fn total_bytes(&self) -> u64 {
        self.ops.iter().map(|(_, usage)| usage.bytes).sum()
    }

    /// Each operation and its count, in the link's order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, OpUsage)> + '_ {
        self.ops.iter().copied()
    }

    /// The sum of two usages (of two links, say).
    pub fn merged(mut self, other: &Usage) -> Usage {
        for (op, usage) in other.iter() {
            self.add(op, usage.calls, usage.bytes);
        }
        self
    }
}

/// What happened between two snapshots of one link: `later - earlier`.
impl Sub<&Usage> for &Usage {
    type Output = Usage;

    fn sub(self, earlier: &Usage) -> Usage {
        let mut out = Usage::new();
        for (op, usage) in self.iter() {
            let before = earlier.get(op);
            out.add(
                op,
                usage.calls.saturating_sub(before.calls),
                usage.bytes.saturating_sub(before.bytes),
            );
        }
        out
    }
}

/// "12 PUT, 30 GET, 1 LIST, 12 DELETE": calls by operation, for people.
impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (op, usage)) in self.ops.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} {}", usage.calls, op.to_uppercase())?;
        }
        Ok(())
    }
}

/// Counts calls and bytes of a fixed set of operations, from any thread.
#[derive(Debug)]
pub struct Meter {
    ops: &'static [&'static str],
    calls: Box<[AtomicU64]>,
    bytes: Box<[AtomicU64]>,
}

impl Meter {
    /// A meter for `ops`, all at zero; operations are then named by their index in `ops`.
    pub fn new(ops: &'static [&'static str]) -> Self {
        let zeros = || ops.iter().map(|_| AtomicU64::new(0)).collect();
        Meter {
            ops,
            calls: zeros(),
            bytes: zeros(),
        }
    }

    /// Counts one call of operation `op` (an index into the meter's operations) carrying
    /// `bytes`.
    ///
    /// # Panics
    ///
    /// Panics if `op` is not an index of the meter's operations.
    pub fn record(&self, op: usize, bytes: u64) {
        self.calls[op].fetch_add(1, Ordering::Relaxed);
        self.bytes[op].fetch_add(bytes, Ordering::Relaxed);
    }

    /// Adds `bytes` to operation `op` without counting a call (bytes a call returned).
    ///
    /// # Panics
    ///
    /// Panics if `op` is not an index of the meter's operations.
    pub fn record_bytes(&self, op: usize, bytes: u64) {
        self.bytes[op].fetch_add(bytes, Ordering::Relaxed);
    }

    /// The name of operation `op` (an index into the meter's operations).
    ///
    /// # Panics
    ///
    /// Panics if `op` is not an index of the meter's operations.
    pub fn name(&self, op: usize) -> &'static str {
        self.ops[op]
    }

    /// A snapshot of the counts.
    pub fn usage(&self) -> Usage {
        let mut usage = Usage::new();
        for (i, &op) in self.ops.iter().enumerate() {
            usage.add(
                op,
                self.calls[i].load(Ordering::Relaxed),
                self.bytes[i].load(Ordering::Relaxed),
            );
        }
        usage
    }
}

/// The price of one operation: per 1,000 calls and per GB (10⁹ bytes, as AWS bills) carried.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Price {
    /// Dollars per 1,000 calls.
    pub per_1k_calls: f64,
    /// Dollars per GB carried.
    pub per_gb: f64,
}

impl Price {
    /// Billed per call only.
    pub const fn per_1k_calls(dollars: f64) -> Price {
        Price {
            per_1k_calls: dollars,
            per_gb: 0.0,
        }
    }

    /// Billed per byte only.
    pub const fn per_gb(dollars: f64) -> Price {
        Price {
            per_1k_calls: 0.0,
            per_gb: dollars,
        }
    }

    /// Free.
    pub const FREE: Price = Price {
        per_1k_calls: 0.0,
        per_gb: 0.0,
    };
}

/// A price list: a [`Price`] per operation; operations not listed are free.
///
/// # Examples
///
/// What a day of an idle node that LISTs twice a second costs on S3, and a GB of log events
/// on CloudWatch Logs:
///
/// ```
/// use tunnels::link::{Prices, Usage};
///
/// let mut hoshino = Usage::new();
/// hoshino.add("list", 172_800, 0);
/// assert!((Prices::S3_STANDARD.cost(&hoshino) - 0.864).abs() < 1e-9);
///
/// let mut logs = Usage::new();
/// logs.add("put_log_events", 1_000, 1_000_000_000);
/// assert!((Prices::CLOUDWATCH_LOGS_STANDARD.cost(&logs) - 0.50).abs() < 1e-9);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Prices {
    /// What the list prices, for reports ("S3 Standard").
    pub name: Cow<'static, str>,
    /// Prices by operation name.
    pub ops: Cow<'static, [(&'static str, Price)]>,
}

impl Prices {
    /// S3 Standard in us-east-1, late 2026: PUT and LIST $0.005, GET $0.0004 per 1,000;
    /// DELETE free. Transfer within the region is free.
    pub const S3_STANDARD: Prices = Prices {
        name: Cow::Borrowed("S3 Standard"),
        ops: Cow::Borrowed(&[
            ("put", Price::per_1k_calls(0.005)),
            ("get", Price::per_1k_calls(0.0004)),
            ("list", Price::per_1k_calls(0.005)),
            ("delete", Price::FREE),
        ]),
    };

    /// CloudWatch Logs Standard in us-east-1, late 2026: $0.50 per GB ingested (message bytes
    /// plus 26 per event), no charge per call; storage ($0.03 per GB-month) is not a call's.
    pub const CLOUDWATCH_LOGS_STANDARD: Prices = Prices {
        name: Cow::Borrowed("CloudWatch Logs Standard"),
        ops: Cow::Borrowed(&[("put_log_events", Price::per_gb(0.50))]),
    };

    /// Nothing costs anything (an in-process link).
    pub const FREE: Prices = Prices {
        name: Cow::Borrowed("free"),
        ops: Cow::Borrowed(&[]),
    };

    /// The price of `op` (free if unlisted).
    pub fn price(&self, op: &str) -> Price {
        self.ops
            .iter()
            .find(|(name, _)| *name == op)
            .map_or(Price::FREE, |(_, price)| *price)
    }

    /// The price of one call of `op` carrying nothing, in dollars.
    pub fn per_call(&self, op: &str) -> f64 {
        self.price(op).per_1k_calls / 1_000.0
    }

    /// What `usage` costs, in dollars.
    pub fn cost(&self, usage: &Usage) -> f64 {
        usage
            .iter()
            .map(|(op, n)| {
                let price = self.price(op);
                price.per_1k_calls * n.calls as f64 / 1_000.0 + price.per_gb * n.bytes as f64 / 1e9
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_s3_standard() {
        let p = Prices::S3_STANDARD;
        // Hoshino idle: 172,800 LISTs a day.
        let mut hoshino = Usage::new();
        hoshino.add("list", 172_800, 0);
        assert!((p.cost(&hoshino) - 0.864).abs() < 1e-9);
        // A GET probe is 12.5 times cheaper than a LIST.
        assert!((p.per_call("list") / p.per_call("get") - 12.5).abs() < 1e-9);
        // Bytes are free on S3 within the region, DELETE is free.
        let mut bulk = Usage::new();
        bulk.add("put", 0, 1 << 40);
        bulk.add("delete", 1_000_000, 0);
        assert_eq!(p.cost(&bulk), 0.0);
    }

    #[test]
    fn prices_per_gb_bill_bytes_not_calls() {
        let p = Prices::CLOUDWATCH_LOGS_STANDARD;
        let mut usage = Usage::new();
        usage.add("put_log_events", 1_000_000, 2_000_000_000);
        usage.add("get_log_events", 1_000_000, 2_000_000_000);
        assert!(
            (p.cost(&usage) - 1.0).abs() < 1e-9,
            "2 GB ingested at $0.50"
        );
        assert_eq!(p.per_call("put_log_events"), 0.0);
    }

    #[test]
    fn meters_snapshot_subtract_and_print() {
        let meter = Meter::new(&["put", "get"]);
        meter.record(0, 100);
        meter.record(1, 0);
        meter.record_bytes(1, 7);
        let before = meter.usage();
        meter.record(1, 3);
        let after = meter.usage();
        assert_eq!(
            after.get("get"),
            OpUsage {
                calls: 2,
                bytes: 10
            }
        );
        assert_eq!(after.total_calls(), 3);
        assert_eq!(after.total_bytes(), 110);
        let window = &after - &before;
        assert_eq!(window.to_string(), "0 PUT, 1 GET");
        assert_eq!(window.get("get").bytes, 3);
        assert_eq!(window.calls("list"), 0, "an unknown operation is zero");
        assert_eq!(after.clone().merged(&window).calls("get"), 3);
    }
}
