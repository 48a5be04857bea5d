//! CloudWatch Logs in memory, for the cost simulation and tests: PutLogEvents's limits enforced
//! as the service enforces them, the account's read quota as throttling, tokens that expire
//! after 24 hours, and a latency model.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cardio::{Budget, TokenBucket};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use tokio::time::Instant;

use super::limits::{self, EVENT_OVERHEAD};
use super::store::{Call, FilterPage, FoundEvent, LogEvent, LogPage, LogStore, ReadFrom};
use crate::link::{Meter, StoreError, StoreErrorKind, Usage};

/// How long a token stays good.
const TOKEN_LIFE_MS: i64 = 24 * 3_600 * 1_000;

/// The most a GetLogEvents call returns: events, and bytes counted as for PutLogEvents.
const PAGE_EVENTS: usize = 10_000;
const PAGE_BYTES: usize = 1_048_576;

/// Settings of the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogsModel {
    /// Latency of PutLogEvents: median and 99th percentile.
    pub put_latency: (Duration, Duration),
    /// Latency of GetLogEvents (and the other calls): median and 99th percentile.
    pub get_latency: (Duration, Duration),
    /// The account's GetLogEvents quota, calls a second shared by every node; `None` for none.
    pub read_quota: Option<u32>,
    /// The account's FilterLogEvents quota, calls a second; `None` for none.
    pub filter_quota: Option<u32>,
    /// The largest event taken, message plus 26.
    pub max_event_bytes: usize,
}

impl LogsModel {
    /// CloudWatch Logs from within the region: PutLogEvents 40 ms median and 150 ms p99,
    /// GetLogEvents 30/120 ms (no published figures: what SDK traces of these calls commonly
    /// show), the account's GetLogEvents quota of 10 calls a second (AWS's published figure) and
    /// FilterLogEvents quota of 5, events of 1 MB.
    pub const CLOUDWATCH: LogsModel = LogsModel {
        put_latency: (Duration::from_millis(40), Duration::from_millis(150)),
        get_latency: (Duration::from_millis(30), Duration::from_millis(120)),
        read_quota: Some(10),
        filter_quota: Some(5),
        max_event_bytes: limits::MAX_EVENT_BYTES,
    };

    /// No latency, no quota: a local server.
    pub const LOCAL: LogsModel = LogsModel {
        put_latency: (Duration::ZERO, Duration::ZERO),
        get_latency: (Duration::ZERO, Duration::ZERO),
        read_quota: None,
        filter_quota: None,
        max_event_bytes: limits::MAX_EVENT_BYTES,
    };

    fn sample(&self, call: Call, z: f64) -> Duration {
        let (median, p99) = match call {
            Call::PutLogEvents => self.put_latency,
            _ => self.get_latency,
        };
        if median.is_zero() {
            return Duration::ZERO;
        }
        let sigma = (p99.as_secs_f64() / median.as_secs_f64()).ln() / 2.326;
        Duration::from_secs_f64(median.as_secs_f64() * (sigma * z.clamp(-20.0, 20.0)).exp())
    }
}

/// CloudWatch Logs in memory. Cloning shares it: the nodes of a simulation share one account.
#[derive(Debug, Clone)]
pub struct MemoryLogs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    model: LogsModel,
    state: Mutex<State>,
    meter: Meter,
    /// The wall clock at the start, and the tokio instant it was read at: time in the model
    /// follows tokio's clock, paused or not.
    base: (i64, Instant),
}

#[derive(Debug)]
struct State {
    groups: HashMap<String, Group>,
    rng: ChaCha8Rng,
    quota: Option<TokenBucket>,
    filter_quota: Option<TokenBucket>,
    /// Calls to fail on purpose: (call, kind, how many more).
    faults: Vec<(Call, StoreErrorKind, u32)>,
    unavailable: bool,
    throttled: u64,
    refused: Vec<String>,
}

#[derive(Debug, Default)]
struct Group {
    retention_days: Option<u32>,
    streams: HashMap<String, Vec<LogEvent>>,
}

impl MemoryLogs {
    /// An empty account under `model`, its latencies drawn from a generator seeded with `seed`.
    pub fn new(model: LogsModel, seed: u64) -> Self {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let bucket = |quota: Option<u32>| {
            quota
                .and_then(std::num::NonZeroU32::new)
                .map(|n| TokenBucket::new(Budget::new(n, Duration::from_secs(1)).with_burst(n)))
        };
        MemoryLogs {
            inner: Arc::new(Inner {
                model,
                state: Mutex::new(State {
                    groups: HashMap::new(),
                    rng: ChaCha8Rng::seed_from_u64(seed),
                    quota: bucket(model.read_quota),
                    filter_quota: bucket(model.filter_quota),
                    faults: Vec::new(),
                    unavailable: false,
                    throttled: 0,
                    refused: Vec::new(),
                }),
                meter: Meter::new(Call::NAMES),
                base: (now_ms, Instant::now()),
            }),
        }
    }

    /// The model's time, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        let (ms, at) = self.inner.base;
        ms + Instant::now().duration_since(at).as_millis() as i64
    }

    /// Calls made so far, by kind (refused and throttled ones included), and the bytes ingested
    /// (message plus 26 per event).
    pub fn usage(&self) -> Usage {
        self.inner.meter.usage()
    }

    /// GetLogEvents and FilterLogEvents calls refused for the account's quotas.
    pub fn throttled(&self) -> u64 {
        self.state().throttled
    }

    /// Every PutLogEvents call refused for breaking a limit, and why: empty if the link kept to
    /// them.
    pub fn refused(&self) -> Vec<String> {
        self.state().refused.clone()
    }

    /// Makes every call fail as unavailable until set back.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.state().unavailable = unavailable;
    }

    /// Fails the next `times` calls of `call` with `kind`.
    pub fn fail_next(&self, call: Call, kind: StoreErrorKind, times: u32) {
        self.state().faults.push((call, kind, times));
    }

    /// Appends an event to a stream directly (creating both), with no latency or accounting:
    /// for tests that drop foreign events into a stream.
    pub fn insert(&self, group: &str, stream: &str, event: LogEvent) {
        let mut state = self.state();
        let events = state
            .groups
            .entry(group.to_owned())
            .or_default()
            .streams
            .entry(stream.to_owned())
            .or_default();
        insert_sorted(events, event);
    }

    /// The events of a stream, oldest first (empty if there is no such stream).
    pub fn events(&self, group: &str, stream: &str) -> Vec<LogEvent> {
        self.state()
            .groups
            .get(group)
            .and_then(|g| g.streams.get(stream))
            .cloned()
            .unwrap_or_default()
    }

    /// The streams of a group, sorted.
    pub fn streams(&self, group: &str) -> Vec<String> {
        let mut names: Vec<_> = self
            .state()
            .groups
            .get(group)
            .map(|g| g.streams.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// A group's retention, if it exists and has one.
    pub fn retention(&self, group: &str) -> Option<u32> {
        self.state().groups.get(group)?.retention_days
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a call, waits out its latency, and fails it if a fault, an outage or the quota
    /// says so.
    async fn call(&self, call: Call, bytes: usize) -> Result<(), StoreError> {
        self.inner.meter.record(call as usize, bytes as u64);
        let latency = {
            let mut state = self.state();
            let z: f64 = state.rng.sample(StandardNormal);
            self.inner.model.sample(call, z)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut state = self.state();
        if state.unavailable {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "memory logs are switched off",
            ));
        }
        if let Some(fault) = state.faults.iter_mut().find(|f| f.0 == call && f.2 > 0) {
            fault.2 -= 1;
            let kind = fault.1;
            state.faults.retain(|f| f.2 > 0);
            return Err(StoreError::new(
                kind,
                format!("{} failed on purpose", call.as_str()),
            ));
        }
        let quota = match call {
            Call::GetLogEvents => state.quota.as_mut(),
            Call::FilterLogEvents => state.filter_quota.as_mut(),
            _ => None,
        };
        if let Some(quota) = quota
            && quota.try_take(Instant::now()).is_err()
        {
            state.throttled += 1;
            return Err(StoreError::new(
                StoreErrorKind::Throttled,
                format!(
                    "ThrottlingException: Rate exceeded ({}, account quota)",
                    call.as_str()
                ),
            ));
        }
        Ok(())
    }
}

fn insert_sorted(events: &mut Vec<LogEvent>, event: LogEvent) {
    // After every event of the same time: the order of arrival among equals.
    let at = events.partition_point(|e| e.timestamp <= event.timestamp);
    events.insert(at, event);
}

fn not_found(what: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::NotFound,
        format!("ResourceNotFoundException: {what} does not exist"),
    )
}

fn token(index: usize, issued_ms: i64) -> String {
    format!("f/{index:020}/{issued_ms}")
}

fn parse_token(token: &str) -> Option<(usize, i64)> {
    let mut parts = token.strip_prefix("f/")?.split('/');
    let index = parts.next()?.parse().ok()?;
    let issued = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((index, issued))
}

impl LogStore for MemoryLogs {
    async fn create_group(&self, group: &str) -> Result<(), StoreError> {
        self.call(Call::CreateLogGroup, 0).await?;
        self.state().groups.entry(group.to_owned()).or_default();
        Ok(())
    }

    async fn set_retention(&self, group: &str, days: u32) -> Result<(), StoreError> {
        self.call(Call::PutRetentionPolicy, 0).await?;
        let mut state = self.state();
        let group = state
            .groups
            .get_mut(group)
            .ok_or_else(|| not_found(&format!("log group {group}")))?;
        group.retention_days = Some(days);
        Ok(())
    }

    async fn create_stream(&self, group: &str, stream: &str) -> Result<(), StoreError> {
        self.call(Call::CreateLogStream, 0).await?;
        let mut state = self.state();
        let g = state
            .groups
            .get_mut(group)
            .ok_or_else(|| not_found(&format!("log group {group}")))?;
        g.streams.entry(stream.to_owned()).or_default();
        Ok(())
    }

    async fn put_events(
        &self,
        group: &str,
        stream: &str,
        events: &[LogEvent],
    ) -> Result<(), StoreError> {
        self.call(Call::PutLogEvents, limits::call_bytes(events))
            .await?;
        let now = self.now_ms();
        let mut state = self.state();
        if let Err(e) = limits::check_put(events, self.inner.model.max_event_bytes, now) {
            state.refused.push(e.to_string());
            return Err(StoreError::new(
                StoreErrorKind::BadRequest,
                format!("InvalidParameterException: {e}"),
            ));
        }
        let log = state
            .groups
            .get_mut(group)
            .ok_or_else(|| not_found(&format!("log group {group}")))?
            .streams
            .get_mut(stream)
            .ok_or_else(|| not_found(&format!("log stream {stream}")))?;
        for event in events {
            insert_sorted(log, event.clone());
        }
        Ok(())
    }

    async fn get_events(
        &self,
        group: &str,
        stream: &str,
        from: ReadFrom<'_>,
        limit: Option<u32>,
    ) -> Result<LogPage, StoreError> {
        self.call(Call::GetLogEvents, 0).await?;
        let now = self.now_ms();
        let state = self.state();
        let log = state
            .groups
            .get(group)
            .ok_or_else(|| not_found(&format!("log group {group}")))?
            .streams
            .get(stream)
            .ok_or_else(|| not_found(&format!("log stream {stream}")))?;
        let limit = limit.map_or(PAGE_EVENTS, |l| (l as usize).clamp(1, PAGE_EVENTS));
        let start = match from {
            ReadFrom::Token(t) => match parse_token(t) {
                Some((index, issued)) if now - issued < TOKEN_LIFE_MS => index.min(log.len()),
                Some(_) => {
                    return Err(StoreError::new(
                        StoreErrorKind::BadRequest,
                        "InvalidParameterException: the token has expired",
                    ));
                }
                None => {
                    return Err(StoreError::new(
                        StoreErrorKind::BadRequest,
                        "InvalidParameterException: the specified nextToken is invalid",
                    ));
                }
            },
            ReadFrom::Time(ms) => log.partition_point(|e| e.timestamp < ms),
            ReadFrom::Tail => log.len().saturating_sub(limit),
        };
        let mut end = start;
        let mut bytes = 0;
        while end < log.len() && end - start < limit {
            bytes += log[end].message.len() + EVENT_OVERHEAD;
            if bytes > PAGE_BYTES && end > start {
                break;
            }
            end += 1;
        }
        let events = log[start..end].to_vec();
        drop(state);
        self.inner.meter.record_bytes(
            Call::GetLogEvents as usize,
            events.iter().map(|e| e.message.len() as u64).sum(),
        );
        // At the end of the stream the service hands back the token it was given: that is how
        // a reader knows it has read everything.
        let next_forward_token = match from {
            ReadFrom::Token(t) if end == start => t.to_owned(),
            _ => token(end, now),
        };
        Ok(LogPage {
            events,
            next_forward_token: Some(next_forward_token),
        })
    }

    async fn filter_events(
        &self,
        group: &str,
        stream_prefix: &str,
        start_time: i64,
        token: Option<&str>,
    ) -> Result<FilterPage, StoreError> {
        self.call(Call::FilterLogEvents, 0).await?;
        let state = self.state();
        let g = state
            .groups
            .get(group)
            .ok_or_else(|| not_found(&format!("log group {group}")))?;
        let mut found: Vec<FoundEvent> = g
            .streams
            .iter()
            .filter(|(name, _)| name.starts_with(stream_prefix))
            .flat_map(|(name, events)| {
                let from = events.partition_point(|e| e.timestamp < start_time);
                events[from..].iter().map(|e| FoundEvent {
                    stream: name.clone(),
                    event: e.clone(),
                })
            })
            .collect();
        drop(state);
        // By time; among equal times by stream, each stream's events in its order.
        found.sort_by(|a, b| (a.event.timestamp, &a.stream).cmp(&(b.event.timestamp, &b.stream)));
        let skip = match token {
            Some(t) => t
                .strip_prefix("o/")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| {
                    StoreError::new(
                        StoreErrorKind::BadRequest,
                        "InvalidParameterException: the specified nextToken is invalid",
                    )
                })?,
            None => 0,
        };
        let mut events = Vec::new();
        let mut bytes = 0;
        for found in found.iter().skip(skip) {
            bytes += found.event.message.len() + EVENT_OVERHEAD;
            if events.len() == PAGE_EVENTS || (bytes > PAGE_BYTES && !events.is_empty()) {
                break;
            }
            events.push(found.clone());
        }
        let end = skip + events.len();
        self.inner.meter.record_bytes(
            Call::FilterLogEvents as usize,
            events.iter().map(|e| e.event.message.len() as u64).sum(),
        );
        Ok(FilterPage {
            next_token: (end < found.len()).then(|| format!("o/{end}")),
            events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(timestamp: i64, message: &str) -> LogEvent {
        LogEvent {
            timestamp,
            message: message.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reads_by_token_and_by_time_and_refuses_what_the_service_refuses() {
        let logs = MemoryLogs::new(LogsModel::LOCAL, 1);
        let now = logs.now_ms();
        assert_eq!(
            logs.create_stream("g", "s").await.unwrap_err().kind(),
            StoreErrorKind::NotFound
        );
        logs.create_group("g").await.unwrap();
        logs.create_group("g").await.unwrap();
        logs.create_stream("g", "s").await.unwrap();
        let page = logs
            .get_events("g", "s", ReadFrom::Time(0), None)
            .await
            .unwrap();
        assert!(page.events.is_empty());
        let t0 = page.next_forward_token.unwrap();
        logs.put_events("g", "s", &[event(now, "a"), event(now, "b")])
            .await
            .unwrap();
        let page = logs
            .get_events("g", "s", ReadFrom::Token(&t0), None)
            .await
            .unwrap();
        assert_eq!(page.events, [event(now, "a"), event(now, "b")]);
        let t1 = page.next_forward_token.unwrap();
        let again = logs
            .get_events("g", "s", ReadFrom::Token(&t1), None)
            .await
            .unwrap();
        assert!(again.events.is_empty());
        assert_eq!(
            again.next_forward_token.as_deref(),
            Some(&t1[..]),
            "at the end"
        );
        let tail = logs
            .get_events("g", "s", ReadFrom::Tail, Some(1))
            .await
            .unwrap();
        assert_eq!(tail.events, [event(now, "b")]);
        let late = logs
            .put_events("g", "s", &[event(now + 1, "c"), event(now, "d")])
            .await
            .unwrap_err();
        assert_eq!(late.kind(), StoreErrorKind::BadRequest);
        assert_eq!(logs.refused().len(), 1);
        assert_eq!(
            logs.put_events("g", "t", &[event(now, "a")])
                .await
                .unwrap_err()
                .kind(),
            StoreErrorKind::NotFound
        );
        tokio::time::advance(Duration::from_secs(86_400)).await;
        assert_eq!(
            logs.get_events("g", "s", ReadFrom::Token(&t1), None)
                .await
                .unwrap_err()
                .kind(),
            StoreErrorKind::BadRequest,
            "a token expires after a day"
        );
        // Every attempt counted, refused ones too: two taken, two refused, one to no stream.
        assert_eq!(logs.usage().get("put_log_events").bytes, 5 * 27);
    }

    #[tokio::test(start_paused = true)]
    async fn the_account_read_quota_throttles() {
        let logs = MemoryLogs::new(
            LogsModel {
                read_quota: Some(5),
                ..LogsModel::LOCAL
            },
            1,
        );
        logs.create_group("g").await.unwrap();
        logs.create_stream("g", "s").await.unwrap();
        let mut throttled = 0;
        for _ in 0..10 {
            if logs
                .get_events("g", "s", ReadFrom::Time(0), None)
                .await
                .is_err()
            {
                throttled += 1;
            }
        }
        assert_eq!(throttled, 5);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            logs.get_events("g", "s", ReadFrom::Time(0), None)
                .await
                .is_ok()
        );
        assert_eq!(logs.throttled(), 5);
    }
}
