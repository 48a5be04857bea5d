//! The few CloudWatch Logs calls the link needs, as a trait.
//!
//! The link's logic (stream names, batching into events, reading by token, resuming) is plain
//! code over [`LogStore`], so the same code runs against CloudWatch Logs
//! ([`CwlStore`](super::CwlStore)), against `moto_server` in the tests, and in the cost
//! simulation on [`MemoryLogs`](super::MemoryLogs).

use std::future::Future;

use crate::link::StoreError;

/// One log event: a time in milliseconds since the Unix epoch, and a UTF-8 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// Milliseconds since 1970-01-01 UTC.
    pub timestamp: i64,
    /// The message.
    pub message: String,
}

/// Where a [`LogStore::get_events`] read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom<'a> {
    /// At a token a previous read returned (its `next_forward_token`).
    Token(&'a str),
    /// At the oldest event whose time is at least this many milliseconds since the epoch
    /// (0: the oldest event kept), reading forward (`startFromHead`).
    Time(i64),
    /// At the newest events, reading backward (`startFromHead` false): with a `limit` of 1, the
    /// newest event.
    Tail,
}

/// What a read returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPage {
    /// The events, oldest first.
    pub events: Vec<LogEvent>,
    /// Where the next read forward starts. The same token as the one passed means nothing new;
    /// a page may be empty while more exists, with a token that moved.
    pub next_forward_token: Option<String>,
}

/// An event a filter found, and the stream it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundEvent {
    /// The stream's name.
    pub stream: String,
    /// The event.
    pub event: LogEvent,
}

/// What a filter returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterPage {
    /// The events, by time.
    pub events: Vec<FoundEvent>,
    /// Set when more events match: pass it to read on.
    pub next_token: Option<String>,
}

/// CloudWatch Logs, or anything that behaves like it for these calls.
///
/// Errors are [`StoreError`]s: a missing log group or stream is
/// [`NotFound`](crate::link::StoreErrorKind::NotFound), a token the service no longer takes (it
/// expires after 24 hours) or a call outside the service's limits is
/// [`BadRequest`](crate::link::StoreErrorKind::BadRequest), `ThrottlingException` is
/// [`Throttled`](crate::link::StoreErrorKind::Throttled).
pub trait LogStore: Send + Sync + 'static {
    /// Creates log group `group`; one that already exists is success.
    fn create_group(&self, group: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Sets how many days `group` keeps its events.
    fn set_retention(
        &self,
        group: &str,
        days: u32,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Creates log stream `stream` in `group`; one that already exists is success.
    fn create_stream(
        &self,
        group: &str,
        stream: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Puts `events` (in time order) into `stream` in one PutLogEvents call.
    fn put_events(
        &self,
        group: &str,
        stream: &str,
        events: &[LogEvent],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Reads events of `stream` from `from`, at most `limit` (the service's own limit if
    /// `None`: 10,000 events or 1 MB), in one GetLogEvents call.
    fn get_events(
        &self,
        group: &str,
        stream: &str,
        from: ReadFrom<'_>,
        limit: Option<u32>,
    ) -> impl Future<Output = Result<LogPage, StoreError>> + Send;

    /// Events of every stream of `group` whose name starts with `stream_prefix`, from
    /// `start_time` (milliseconds since the epoch) on, by time, in one FilterLogEvents call;
    /// `token` reads on from where a previous page ended. The seed's way of reading (every
    /// 250 ms), kept for the cost simulation's baseline: its quota is 5 calls a second per
    /// account, and events that arrive late, or in the same millisecond, are easily skipped.
    fn filter_events(
        &self,
        group: &str,
        stream_prefix: &str,
        start_time: i64,
        token: Option<&str>,
    ) -> impl Future<Output = Result<FilterPage, StoreError>> + Send;
}

/// The kinds of call, as the link counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    /// PutLogEvents: billed per GB ingested (message bytes plus 26 per event).
    PutLogEvents,
    /// GetLogEvents: not billed, but limited by the account's quota.
    GetLogEvents,
    /// CreateLogStream.
    CreateLogStream,
    /// CreateLogGroup.
    CreateLogGroup,
    /// PutRetentionPolicy.
    PutRetentionPolicy,
    /// FilterLogEvents: not billed per call; a quota of 5 calls a second per account.
    FilterLogEvents,
}

impl Call {
    /// Every kind, in the order of the link's [`Usage`](crate::link::Usage).
    pub const ALL: [Call; 6] = [
        Call::PutLogEvents,
        Call::GetLogEvents,
        Call::CreateLogStream,
        Call::CreateLogGroup,
        Call::PutRetentionPolicy,
        Call::FilterLogEvents,
    ];

    /// Their names, as the link's [`Usage`](crate::link::Usage), prices and metrics know them.
    pub const NAMES: &'static [&'static str] = &[
        "put_log_events",
        "get_log_events",
        "create_log_stream",
        "create_log_group",
        "put_retention_policy",
        "filter_log_events",
    ];

    /// Lower-case name, for labels.
    pub const fn as_str(self) -> &'static str {
        Call::NAMES[self as usize]
    }

    /// The IAM action the call needs.
    pub const fn action(self) -> &'static str {
        match self {
            Call::PutLogEvents => "logs:PutLogEvents",
            Call::GetLogEvents => "logs:GetLogEvents",
            Call::CreateLogStream => "logs:CreateLogStream",
            Call::CreateLogGroup => "logs:CreateLogGroup",
            Call::PutRetentionPolicy => "logs:PutRetentionPolicy",
            Call::FilterLogEvents => "logs:FilterLogEvents",
        }
    }
}
