//! What the stores on the AWS SDK share: one HTTP client (hyper and rustls on ring), the
//! standard configuration chain with the SDK's own retries off, and errors told to people.
//!
//! The SDK's retries are off because every link retries itself, with backoff and jitter, and
//! counts each attempt as the call it is: retries inside the SDK would be calls nobody counted.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

/// Where and as whom a store calls, beside the standard chain.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Connect<'a> {
    pub(crate) region: Option<&'a str>,
    pub(crate) profile: Option<&'a str>,
    pub(crate) endpoint_url: Option<&'a str>,
    pub(crate) credentials: Option<&'a (String, String)>,
    /// The longest one attempt may take.
    pub(crate) attempt_timeout: Duration,
}

/// The shared SDK configuration for `connect`. Makes no call.
pub(crate) async fn load(connect: Connect<'_>) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(connect.attempt_timeout)
                .build(),
        );
    if let Some(region) = connect.region {
        loader = loader.region(aws_config::Region::new(region.to_owned()));
    }
    if let Some(profile) = connect.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(endpoint) = connect.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some((access_key, secret_key)) = connect.credentials {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            access_key, secret_key, None, None, "tunnel",
        ));
    }
    loader.load().await
}

/// What went wrong, for people: the service's code and message, or for a call that got no
/// answer, the chain of causes (the SDK's own words say only "dispatch failure").
pub(crate) fn detail<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            format!(
                "{}: {}",
                e.code().unwrap_or("error"),
                e.message().unwrap_or("no message")
            )
        }
        other => {
            let mut message = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                message.push_str(": ");
                message.push_str(&cause.to_string());
                source = cause.source();
            }
            message
        }
    }
}
