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

use super::{StoreError, StoreErrorKind};

/// The credentials the standard chain found, as a start-up check reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundCredentials {
    /// The SDK's name of the provider that gave them (`Environment`, `ProfileFile`,
    /// `IMDSv2`, ...).
    pub provider: String,
    /// The access key id (not secret: it names the key, as IAM lists it).
    pub access_key_id: String,
}

/// Where the standard chain looks, in its order, for a message that says what to set.
const CHAIN: &str = "the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), the shared \
    files (~/.aws/credentials and ~/.aws/config, or AWS_SHARED_CREDENTIALS_FILE and \
    AWS_CONFIG_FILE; the profile of --profile or AWS_PROFILE, else `default`), web identity (AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN), a \
    container's credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI), and the EC2 \
    instance's role (instance metadata)";

/// Asks `provider` (a client's credential chain) for credentials once, so that their absence
/// shows at start as what it is, not as a failed call.
///
/// # Errors
///
/// [`StoreErrorKind::NoCredentials`], with where the chain looked and what to set.
pub(crate) async fn find_credentials(
    provider: Option<aws_credential_types::provider::SharedCredentialsProvider>,
) -> Result<FoundCredentials, StoreError> {
    use aws_credential_types::provider::ProvideCredentials;
    use aws_credential_types::provider::error::CredentialsError;

    let none = |why: String| {
        StoreError::new(
            StoreErrorKind::NoCredentials,
            format!(
                "the standard chain looked in {CHAIN} and found none \
                 ({why}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, give --profile \
                 with keys in ~/.aws/credentials, or run where a role is attached"
            ),
        )
    };
    let Some(provider) = provider else {
        return Err(none("no provider configured".into()));
    };
    match provider.provide_credentials().await {
        Ok(credentials) => {
            // The provider's name is only in the Debug form (the secret is redacted there).
            let debug = format!("{credentials:?}");
            let provider = debug
                .split("provider_name: \"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("the standard chain")
                .to_owned();
            Ok(FoundCredentials {
                provider,
                access_key_id: credentials.access_key_id().to_owned(),
            })
        }
        // A profile that names what does not work: the fix is in the profile.
        Err(err @ CredentialsError::InvalidConfiguration(_)) => Err(StoreError::new(
            StoreErrorKind::NoCredentials,
            format!(
                "the credential configuration is invalid: {} (check --profile, AWS_PROFILE and \
                 the shared files)",
                chain_of_causes(&err)
            ),
        )),
        // Otherwise the chain ran to its end (the instance metadata, last, failing or
        // refusing) with nothing found before it.
        Err(err) => Err(none(chain_of_causes(&err))),
    }
}

/// An error and its sources, joined by `: `.
fn chain_of_causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

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
        other => chain_of_causes(other),
    }
}
