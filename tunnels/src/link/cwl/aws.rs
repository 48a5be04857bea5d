//! [`LogStore`] on Amazon CloudWatch Logs (or anything that speaks its API, such as
//! `moto_server`) through the AWS SDK.
//!
//! Configuration is the standard AWS one: the credential chain (environment, profile, SSO,
//! instance and container roles), the region, and `AWS_ENDPOINT_URL`, plus an explicit endpoint
//! and credentials for a local server.
//!
//! The SDK's own retries are off: the link retries throttling and failures itself, with backoff
//! and jitter, and counts every attempt as the call it is (GetLogEvents spends the account's
//! quota of 10 a second whether it succeeds or not). Retries inside the SDK would be calls
//! nobody counted.
//!
//! Errors name the IAM action of the call that failed (`logs:PutLogEvents`, ...), so that a
//! refused call says which permission is missing.

use std::time::Duration;

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::config::http::HttpResponse;
use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatchlogs::types::InputLogEvent;

use super::store::{Call, FilterPage, FoundEvent, LogEvent, LogPage, LogStore, ReadFrom};
use crate::link::{StoreError, StoreErrorKind};

/// The most events one GetLogEvents call returns (its `limit`'s maximum).
const MAX_LIMIT: u32 = 10_000;

/// Where and how to reach CloudWatch Logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CwlStoreConfig {
    /// The region; otherwise the standard chain (`AWS_REGION`, the profile).
    pub region: Option<String>,
    /// The profile to read credentials and region from; otherwise `AWS_PROFILE` or `default`.
    pub profile: Option<String>,
    /// An endpoint such as `http://127.0.0.1:5000` (a local `moto_server`); otherwise
    /// `AWS_ENDPOINT_URL` or AWS's own.
    pub endpoint_url: Option<String>,
    /// An access key and secret key to use instead of the credential chain (a local server's).
    pub credentials: Option<(String, String)>,
}

/// CloudWatch Logs in one account and region.
#[derive(Debug, Clone)]
pub struct CwlStore {
    client: Client,
    /// The chain the client signs with, for [`CwlStore::credentials`].
    credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
}

impl CwlStore {
    /// Builds a client from the standard AWS configuration and `config`. Makes no call.
    pub async fn connect(config: &CwlStoreConfig) -> CwlStore {
        let shared = crate::link::sdk::load(crate::link::sdk::Connect {
            region: config.region.as_deref(),
            profile: config.profile.as_deref(),
            endpoint_url: config.endpoint_url.as_deref(),
            credentials: config.credentials.as_ref(),
            attempt_timeout: Duration::from_secs(30),
        })
        .await;
        CwlStore {
            client: Client::new(&shared),
            credentials: shared.credentials_provider(),
        }
    }

    /// The SDK client, for calls beyond the store's (deleting a log group in a test).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The region the client signs for, if the configuration named one.
    pub fn region(&self) -> Option<&str> {
        self.client.config().region().map(|r| r.as_ref())
    }

    /// Asks the credential chain for credentials once (no call to the service): which
    /// provider gave them, or where the chain looked when it found none.
    ///
    /// # Errors
    ///
    /// [`StoreErrorKind::NoCredentials`](crate::link::StoreErrorKind::NoCredentials), saying
    /// where the chain looked and what to set.
    pub async fn credentials(&self) -> Result<crate::link::FoundCredentials, StoreError> {
        crate::link::sdk::find_credentials(self.credentials.clone()).await
    }
}

/// What a call was about, for messages: a log group, or a stream in one.
fn target(group: &str, stream: Option<&str>) -> String {
    match stream {
        Some(stream) => format!("log stream {stream:?} of log group {group:?}"),
        None => format!("log group {group:?}"),
    }
}

/// Sorts an SDK failure of `call` on `target` into the kinds the link reacts to.
///
/// The message names the call's IAM action. A [`StoreErrorKind::NotFound`] message is the
/// service's own ("The specified log stream does not exist."), without the names of the group
/// and stream: the link tells a missing group from a missing stream by the word "group" in it.
fn store_error<E>(call: Call, target: &str, err: &SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let action = call.action();
    let kind = match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StoreErrorKind::Unavailable
        }
        SdkError::ServiceError(service) => match service.err().code() {
            Some("ThrottlingException" | "Throttling" | "RequestLimitExceeded") => {
                StoreErrorKind::Throttled
            }
            Some("ServiceUnavailableException" | "InternalFailure" | "ServiceUnavailable") => {
                StoreErrorKind::Unavailable
            }
            Some("ResourceNotFoundException") => StoreErrorKind::NotFound,
            Some("InvalidParameterException") => StoreErrorKind::BadRequest,
            Some(
                "AccessDeniedException"
                | "UnrecognizedClientException"
                | "InvalidClientTokenId"
                | "InvalidSignatureException"
                | "IncompleteSignature"
                | "MissingAuthenticationToken"
                | "ExpiredTokenException",
            ) => StoreErrorKind::AccessDenied,
            // A code we do not know: the status says enough.
            _ => match service.raw().status().as_u16() {
                403 => StoreErrorKind::AccessDenied,
                429 => StoreErrorKind::Throttled,
                500..=599 => StoreErrorKind::Unavailable,
                _ => StoreErrorKind::Other,
            },
        },
        _ => StoreErrorKind::Other,
    };
    let detail = crate::link::sdk::detail(err);
    let message = match kind {
        StoreErrorKind::NotFound => format!("{action}: {detail}"),
        StoreErrorKind::AccessDenied => {
            format!("{action} on {target} refused ({detail}): the credentials need {action}")
        }
        _ => format!("{action} on {target}: {detail}"),
    };
    StoreError::new(kind, message)
}

/// `ResourceAlreadyExistsException`: what a create of something that exists fails with.
fn already_exists<E>(err: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata,
{
    matches!(err, SdkError::ServiceError(service)
        if service.err().code() == Some("ResourceAlreadyExistsException"))
}

/// A limit as the SDK takes it: at least 1, at most what the service allows.
fn sdk_limit(limit: u32) -> i32 {
    limit.clamp(1, MAX_LIMIT) as i32
}

impl LogStore for CwlStore {
    async fn create_group(&self, group: &str) -> Result<(), StoreError> {
        match self
            .client
            .create_log_group()
            .log_group_name(group)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if already_exists(&e) => Ok(()),
            Err(e) => Err(store_error(Call::CreateLogGroup, &target(group, None), &e)),
        }
    }

    async fn set_retention(&self, group: &str, days: u32) -> Result<(), StoreError> {
        let days = i32::try_from(days).map_err(|_| {
            StoreError::new(
                StoreErrorKind::BadRequest,
                format!("a retention of {days} days is out of range"),
            )
        })?;
        self.client
            .put_retention_policy()
            .log_group_name(group)
            .retention_in_days(days)
            .send()
            .await
            .map(drop)
            .map_err(|e| store_error(Call::PutRetentionPolicy, &target(group, None), &e))
    }

    async fn create_stream(&self, group: &str, stream: &str) -> Result<(), StoreError> {
        match self
            .client
            .create_log_stream()
            .log_group_name(group)
            .log_stream_name(stream)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if already_exists(&e) => Ok(()),
            Err(e) => Err(store_error(
                Call::CreateLogStream,
                &target(group, Some(stream)),
                &e,
            )),
        }
    }

    async fn put_events(
        &self,
        group: &str,
        stream: &str,
        events: &[LogEvent],
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let log_events = events
            .iter()
            .map(|event| {
                InputLogEvent::builder()
                    .timestamp(event.timestamp)
                    .message(&event.message)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::new(StoreErrorKind::Other, e.to_string()))?;
        let output = self
            .client
            .put_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .set_log_events(Some(log_events))
            .send()
            .await
            .map_err(|e| store_error(Call::PutLogEvents, &target(group, Some(stream)), &e))?;
        // Events too old, too new or past the retention are not an error to the service: it
        // drops them and says so. To the link they are a batch lost, so they are an error.
        if let Some(rejected) = output.rejected_log_events_info() {
            return Err(StoreError::new(
                StoreErrorKind::BadRequest,
                format!(
                    "{} on {}: events refused by time (too new from index {:?}, too old up to \
                     {:?}, expired up to {:?})",
                    Call::PutLogEvents.action(),
                    target(group, Some(stream)),
                    rejected.too_new_log_event_start_index(),
                    rejected.too_old_log_event_end_index(),
                    rejected.expired_log_event_end_index(),
                ),
            ));
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
        let request = self
            .client
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .set_limit(limit.map(sdk_limit));
        let request = match from {
            ReadFrom::Token(token) => request.next_token(token).start_from_head(true),
            ReadFrom::Time(ms) => request.start_time(ms).start_from_head(true),
            ReadFrom::Tail => request.start_from_head(false),
        };
        let output = request
            .send()
            .await
            .map_err(|e| store_error(Call::GetLogEvents, &target(group, Some(stream)), &e))?;
        let events = output
            .events()
            .iter()
            .filter_map(|event| {
                Some(LogEvent {
                    timestamp: event.timestamp()?,
                    message: event.message().unwrap_or_default().to_owned(),
                })
            })
            .collect();
        Ok(LogPage {
            events,
            next_forward_token: output.next_forward_token().map(str::to_owned),
        })
    }

    async fn filter_events(
        &self,
        group: &str,
        stream_prefix: &str,
        start_time: i64,
        token: Option<&str>,
    ) -> Result<FilterPage, StoreError> {
        let output = self
            .client
            .filter_log_events()
            .log_group_name(group)
            // The service takes no empty prefix: none means every stream.
            .set_log_stream_name_prefix(
                (!stream_prefix.is_empty()).then(|| stream_prefix.to_owned()),
            )
            .start_time(start_time)
            .set_next_token(token.map(str::to_owned))
            .send()
            .await
            .map_err(|e| store_error(Call::FilterLogEvents, &target(group, None), &e))?;
        let events = output
            .events()
            .iter()
            .filter_map(|event| {
                Some(FoundEvent {
                    stream: event.log_stream_name()?.to_owned(),
                    event: LogEvent {
                        timestamp: event.timestamp()?,
                        message: event.message().unwrap_or_default().to_owned(),
                    },
                })
            })
            .collect();
        Ok(FilterPage {
            events,
            next_token: output.next_token().map(str::to_owned),
        })
    }
}
