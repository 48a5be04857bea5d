//! [`ObjectStore`] on Amazon S3 (or any S3-compatible server) through the AWS SDK.
//!
//! Configuration is the standard AWS one: the credential chain (environment, profile, SSO,
//! instance and container roles), the region, and `AWS_ENDPOINT_URL`, plus an explicit endpoint
//! and path-style addressing for S3-compatible servers.
//!
//! The SDK's own retries are off: the S3 link retries throttling and failures itself, with
//! backoff and jitter, and counts every attempt as the billed call it is. Retries inside the SDK
//! would be calls nobody counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use bytes::Bytes;

use super::store::ObjectStore;
use crate::link::{StoreError, StoreErrorKind};

/// Where and how to reach the bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3StoreConfig {
    /// The bucket.
    pub bucket: String,
    /// The region; otherwise the standard chain (`AWS_REGION`, the profile).
    pub region: Option<String>,
    /// The profile to read credentials and region from; otherwise `AWS_PROFILE` or `default`.
    pub profile: Option<String>,
    /// An S3-compatible endpoint, such as `http://127.0.0.1:9000`; otherwise `AWS_ENDPOINT_URL`
    /// or AWS's own.
    pub endpoint_url: Option<String>,
    /// Address buckets by path (`endpoint/bucket/key`) rather than by host name, as most
    /// S3-compatible servers want.
    pub path_style: bool,
    /// An access key and secret key to use instead of the credential chain (a local server's).
    pub credentials: Option<(String, String)>,
}

/// A bucket on S3 or an S3-compatible server.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// Set by [`S3Store::check`] when S3 answers a GET of a missing key with 403: the caller
    /// may read the prefix's objects but not list the bucket unconditionally.
    forbidden_is_missing: Arc<AtomicBool>,
    /// The chain the client signs with, for [`S3Store::credentials`].
    credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
}

impl S3Store {
    /// Builds a client from the standard AWS configuration and `config`. Makes no call.
    pub async fn connect(config: &S3StoreConfig) -> S3Store {
        let shared = crate::link::sdk::load(crate::link::sdk::Connect {
            region: config.region.as_deref(),
            profile: config.profile.as_deref(),
            endpoint_url: config.endpoint_url.as_deref(),
            credentials: config.credentials.as_ref(),
            attempt_timeout: Duration::from_secs(60),
        })
        .await;
        // Every batch carries its own CRC32C, checked by its receiver end to end (and a seal
        // in a network with a key): the SDK's CRC32 of every body, both ways, only repeated
        // it (and made each PUT an `aws-chunked` upload with a trailer).
        let s3 = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        S3Store {
            client: Client::from_conf(s3),
            bucket: config.bucket.clone(),
            forbidden_is_missing: Arc::new(AtomicBool::new(false)),
            credentials: shared.credentials_provider(),
        }
    }

    /// The SDK client, for calls beyond the store's four (creating a bucket in a test).
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

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Checks, under `prefix`, every call the link makes: LIST (of the prefix only, so a policy
    /// that allows listing just the tunnel's prefix passes), PUT, GET and DELETE of a check
    /// object, and a GET of a key that does not exist: a clear error at start-up instead of
    /// failures later.
    ///
    /// S3 answers a GET of a missing key with 403 instead of 404 when the caller may not
    /// `s3:ListBucket` without conditions, as under a least-privilege policy. When the check
    /// finds that (having just read its own object under the prefix), this store reads 403 on
    /// a GET as "no such key" from then on, so receivers can probe for objects.
    ///
    /// # Errors
    ///
    /// [`StoreErrorKind::NoSuchBucket`], [`StoreErrorKind::AccessDenied`] (naming the call that
    /// was refused), or whatever else a call failed with.
    pub async fn check(&self, prefix: &str) -> Result<(), StoreError> {
        let refused = |call: &'static str| {
            move |e: StoreError| {
                if e.kind() == StoreErrorKind::AccessDenied {
                    StoreError::new(e.kind(), format!("{call} under {prefix:?}: {e}"))
                } else {
                    e
                }
            }
        };
        self.client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| store_error(&e))
            .map_err(refused("s3:ListBucket"))?;
        let nonce = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let key = format!("{prefix}.check/{nonce:032x}");
        let body = Bytes::from_static(b"tunnel start-up check");
        self.put(&key, body.clone())
            .await
            .map_err(refused("s3:PutObject"))?;
        let read = self.get(&key).await.map_err(refused("s3:GetObject"))?;
        self.delete_many(std::slice::from_ref(&key))
            .await
            .map_err(refused("s3:DeleteObject"))?;
        if read != Some(body) {
            return Err(StoreError::new(
                StoreErrorKind::Other,
                format!("{key} read back differs from what was written"),
            ));
        }
        let missing = format!("{key}-missing");
        match self.get(&missing).await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(StoreError::new(
                StoreErrorKind::Other,
                format!("{missing} exists, though nothing wrote it"),
            )),
            Err(e) if e.kind() == StoreErrorKind::AccessDenied => {
                tracing::info!(
                    "S3 answers 403 for missing keys under {prefix:?} (no unconditional \
                     s3:ListBucket): reading a 403 on GET as a missing key"
                );
                self.forbidden_is_missing.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Sorts an SDK failure into the kinds the link reacts to.
fn store_error<E>(err: &SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let kind = match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StoreErrorKind::Unavailable
        }
        SdkError::ServiceError(service) => match service.err().code() {
            Some("SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded") => {
                StoreErrorKind::Throttled
            }
            Some("InternalError" | "ServiceUnavailable" | "RequestTimeout") => {
                StoreErrorKind::Unavailable
            }
            Some("NoSuchBucket") => StoreErrorKind::NoSuchBucket,
            Some(
                "AccessDenied"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "InvalidToken"
                | "NotSignedUp"
                | "AllAccessDisabled",
            ) => StoreErrorKind::AccessDenied,
            // A code we do not know: the status says enough.
            _ => match service.raw().status().as_u16() {
                403 => StoreErrorKind::AccessDenied,
                503 => StoreErrorKind::Throttled,
                500..=599 => StoreErrorKind::Unavailable,
                _ => StoreErrorKind::Other,
            },
        },
        _ => StoreErrorKind::Other,
    };
    let message = crate::link::sdk::detail(err);
    StoreError::new(kind, message)
}

impl ObjectStore for S3Store {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            // No SHA-256 of the body in the signature (`UNSIGNED-PAYLOAD`): it was the largest
            // single cost of a bulk sender's CPU (18% of its samples). The headers are still
            // signed. What it guarded, a body changed on its way to S3, TLS guards on S3's
            // HTTPS endpoints, and on any endpoint the batch's CRC32C (and the seal, with
            // `--key-file`) is checked by the receiver, which a signed PUT never covered: a
            // GET's answer is not signed.
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map(drop)
            .map_err(|e| store_error(&e))
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let output = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(output) => output,
            Err(SdkError::ServiceError(e)) if e.err().is_no_such_key() => return Ok(None),
            Err(e) => {
                let err = store_error(&e);
                if err.kind() == StoreErrorKind::AccessDenied
                    && self.forbidden_is_missing.load(Ordering::Relaxed)
                {
                    return Ok(None);
                }
                return Err(err);
            }
        };
        let body = output.body.collect().await.map_err(|e| {
            StoreError::new(StoreErrorKind::Unavailable, format!("reading {key}: {e}"))
        })?;
        Ok(Some(body.into_bytes()))
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> Result<Vec<String>, StoreError> {
        let output = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_start_after(start_after.map(str::to_owned))
            .max_keys(max_keys.min(1_000) as i32)
            .send()
            .await
            .map_err(|e| store_error(&e))?;
        Ok(output
            .contents()
            .iter()
            .filter_map(|object| object.key().map(str::to_owned))
            .collect())
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let objects = keys
            .iter()
            .map(|key| ObjectIdentifier::builder().key(key).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::new(StoreErrorKind::Other, e.to_string()))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| StoreError::new(StoreErrorKind::Other, e.to_string()))?;
        self.client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await
            .map(drop)
            .map_err(|e| store_error(&e))
    }
}
