//! The S3 backend, over `aws-sdk-s3`. No AWS type appears in this crate's
//! public API.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::{ByteStream as SdkByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use tokio::task::JoinSet;
use tokio_util::io::ReaderStream;

use crate::error::{Result, StorageError};
use crate::error::{validate_key, validate_prefix};
use crate::fsutil::{self, TempPath};
use crate::hash::ContentHash;
use crate::store::{ByteStream, MultipartConfig, ObjectMeta, ObjectStore, RetryPolicy};

/// The user-metadata name under which the object's sha256 is stored
/// (`x-amz-meta-sha256`).
pub const SHA256_METADATA: &str = "sha256";
/// The region used when neither the configuration nor the environment names
/// one (S3-compatible servers mostly ignore it).
pub const DEFAULT_REGION: &str = "us-east-1";
/// How long establishing a connection may take before the attempt fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may stay silent while a response is awaited or
/// streamed before the attempt fails (and is retried).
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// S3 error codes that mean "try again later".
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    // SQS's.
    "InternalFailure",
    "RequestThrottled",
    "AWS.SimpleQueueService.ServiceUnavailable",
];

/// Static credentials, for callers that do not use the AWS environment or
/// profile chain.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// A session token for temporary credentials.
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// How to reach S3. Every `None` falls back to the standard AWS chain:
/// `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`), `AWS_REGION`,
/// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`,
/// `AWS_PROFILE` and the shared config files, web identity, ECS and EC2
/// instance credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Config {
    /// The endpoint of an S3-compatible server (`http://127.0.0.1:9000`).
    pub endpoint_url: Option<String>,
    /// The region; [`DEFAULT_REGION`] when neither this nor the environment
    /// names one.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`) instead of virtual
    /// hosts (`bucket.endpoint/key`). Defaults to on when an endpoint URL is
    /// configured (S3-compatible servers), off for AWS.
    pub force_path_style: Option<bool>,
    /// Explicit credentials instead of the standard chain.
    pub credentials: Option<S3Credentials>,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Multipart thresholds.
    pub multipart: MultipartConfig,
}

impl S3Config {
    /// An S3-compatible server at `endpoint_url` (path-style addressing) with
    /// static credentials, ignoring the AWS environment's endpoint and keys:
    /// for self-hosted servers and tests.
    ///
    /// ```
    /// let c = storage::S3Config::static_endpoint("http://127.0.0.1:9000", "us-east-1", "key", "secret");
    /// assert_eq!(c.endpoint_url.as_deref(), Some("http://127.0.0.1:9000"));
    /// ```
    #[must_use]
    pub fn static_endpoint(
        endpoint_url: &str,
        region: &str,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> Self {
        S3Config {
            endpoint_url: Some(endpoint_url.to_owned()),
            region: Some(region.to_owned()),
            credentials: Some(S3Credentials {
                access_key_id: access_key_id.to_owned(),
                secret_access_key: secret_access_key.to_owned(),
                session_token: None,
            }),
            ..S3Config::default()
        }
    }
}

/// Objects in one S3 bucket.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    region: String,
    retry: RetryPolicy,
    multipart: MultipartConfig,
    /// Aborts of multipart uploads whose futures were dropped mid-way.
    cleanups: Arc<Mutex<JoinSet<()>>>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("retry", &self.retry)
            .field("multipart", &self.multipart)
            .finish_non_exhaustive()
    }
}

/// How one attempt failed.
pub(crate) enum Failure {
    /// Worth another attempt (5xx, throttling, timeout, connection reset).
    Transient(String),
    /// Final.
    Fatal(StorageError),
}

impl S3Store {
    /// Connects to `bucket` (no request is made yet).
    ///
    /// # Errors
    /// [`StorageError::InvalidConfig`] when the retry or multipart settings
    /// are out of range.
    pub async fn connect(bucket: &str, config: &S3Config) -> Result<Self> {
        config.retry.validate()?;
        config.multipart.validate()?;
        let sdk = crate::aws::sdk_config(config).await;
        let region = sdk
            .region()
            .map_or_else(|| DEFAULT_REGION.to_owned(), |r| r.as_ref().to_owned());
        let path_style = config
            .force_path_style
            .unwrap_or_else(|| sdk.endpoint_url().is_some());
        let s3_config = aws_sdk_s3::config::Builder::from(&sdk)
            .region(Region::new(region.clone()))
            .force_path_style(path_style)
            // Plain Content-Length bodies: S3-compatible servers do not all
            // accept the newer default of aws-chunked CRC trailers.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Ok(Self {
            client: Client::from_conf(s3_config),
            bucket: bucket.to_owned(),
            region,
            retry: config.retry,
            multipart: config.multipart,
            cleanups: Arc::new(Mutex::new(JoinSet::new())),
        })
    }

    /// The bucket.
    #[must_use]
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the bucket unless it exists.
    ///
    /// # Errors
    /// A failed request.
    pub async fn ensure_bucket(&self) -> Result<()> {
        let url = format!("s3://{}", self.bucket);
        let exists = self
            .retry("HeadBucket", &url, || async {
                match self.client.head_bucket().bucket(&self.bucket).send().await {
                    Ok(_) => Ok(true),
                    Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                        Ok(false)
                    }
                    Err(e) => Err(classify("HeadBucket", &url, &e)),
                }
            })
            .await?;
        if exists {
            return Ok(());
        }
        self.retry("CreateBucket", &url, || async {
            let mut req = self.client.create_bucket().bucket(&self.bucket);
            if self.region != DEFAULT_REGION {
                req = req.create_bucket_configuration(
                    aws_sdk_s3::types::CreateBucketConfiguration::builder()
                        .location_constraint(self.region.as_str().into())
                        .build(),
                );
            }
            match req.send().await {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => Ok(()),
                Err(e) => Err(classify("CreateBucket", &url, &e)),
            }
        })
        .await
    }

    /// The keys of multipart uploads still open under `prefix` (a failed or
    /// cancelled upload of this crate leaves none).
    ///
    /// # Errors
    /// A failed request.
    pub async fn open_multipart_uploads(&self, prefix: &str) -> Result<Vec<String>> {
        let url = self.url(prefix);
        let out = self
            .retry("ListMultipartUploads", &url, || async {
                self.client
                    .list_multipart_uploads()
                    .bucket(&self.bucket)
                    .prefix(prefix)
                    .send()
                    .await
                    .map_err(|e| classify("ListMultipartUploads", &url, &e))
            })
            .await?;
        Ok(out
            .uploads()
            .iter()
            .filter_map(|u| u.key().map(str::to_owned))
            .collect())
    }

    /// Runs `attempt` until it succeeds, fails for good, or
    /// `retry.max_attempts` transient failures happened, sleeping
    /// exponentially longer between attempts.
    async fn retry<T, F, Fut>(&self, op: &'static str, location: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = std::result::Result<T, Failure>> + Send,
        T: Send,
    {
        retry_loop(&self.retry, op, location, &mut attempt).await
    }

    async fn put_small(&self, key: &str, bytes: Bytes, sha: ContentHash) -> Result<ObjectMeta> {
        let url = self.url(key);
        let size = bytes.len() as u64;
        let out = self
            .retry("PutObject", &url, || async {
                self.client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .content_length(i64::try_from(size).unwrap_or(i64::MAX))
                    .metadata(SHA256_METADATA, sha.to_hex())
                    .body(SdkByteStream::from(bytes.clone()))
                    .send()
                    .await
                    .map_err(|e| classify("PutObject", &url, &e))
            })
            .await?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size,
            sha256: Some(sha),
            etag: out.e_tag().map(str::to_owned),
        })
    }

    async fn put_whole_file(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        sha: ContentHash,
    ) -> Result<ObjectMeta> {
        let url = self.url(key);
        let out = self
            .retry("PutObject", &url, || async {
                let body = file_body(path, 0, size).await?;
                self.client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .content_length(i64::try_from(size).unwrap_or(i64::MAX))
                    .metadata(SHA256_METADATA, sha.to_hex())
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| classify("PutObject", &url, &e))
            })
            .await?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size,
            sha256: Some(sha),
            etag: out.e_tag().map(str::to_owned),
        })
    }

    async fn put_multipart(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        sha: ContentHash,
    ) -> Result<ObjectMeta> {
        let url = self.url(key);
        let created = self
            .retry("CreateMultipartUpload", &url, || async {
                self.client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .metadata(SHA256_METADATA, sha.to_hex())
                    .send()
                    .await
                    .map_err(|e| classify("CreateMultipartUpload", &url, &e))
            })
            .await?;
        let Some(upload_id) = created.upload_id().map(str::to_owned) else {
            return Err(StorageError::S3 {
                op: "CreateMultipartUpload",
                location: url,
                message: "the response has no upload id".to_owned(),
            });
        };
        // From here on, leaving early (error or drop) aborts the upload.
        let mut guard = AbortGuard {
            store: self.clone(),
            key: key.to_owned(),
            upload_id: upload_id.clone(),
            armed: true,
        };
        match self.upload_parts(key, path, size, &upload_id).await {
            Ok(etag) => {
                guard.armed = false;
                Ok(ObjectMeta {
                    key: key.to_owned(),
                    size,
                    sha256: Some(sha),
                    etag,
                })
            }
            Err(e) => {
                guard.armed = false;
                abort_upload(&self.client, &self.bucket, key, &upload_id, &self.retry).await;
                Err(e)
            }
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        upload_id: &str,
    ) -> Result<Option<String>> {
        let url = self.url(key);
        let part_size = self.multipart.part_size_for(size);
        let mut parts = Vec::new();
        let mut offset = 0u64;
        let mut number = 1i32;
        while offset < size {
            let len = part_size.min(size - offset);
            let part = self
                .retry("UploadPart", &url, || async {
                    let body = file_body(path, offset, len).await?;
                    self.client
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(upload_id)
                        .part_number(number)
                        .content_length(i64::try_from(len).unwrap_or(i64::MAX))
                        .body(body)
                        .send()
                        .await
                        .map_err(|e| classify("UploadPart", &url, &e))
                })
                .await?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_owned))
                    .build(),
            );
            offset += len;
            number += 1;
        }
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(parts))
            .build();
        let out = self
            .retry("CompleteMultipartUpload", &url, || async {
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .multipart_upload(completed.clone())
                    .send()
                    .await
                    .map_err(|e| classify("CompleteMultipartUpload", &url, &e))
            })
            .await?;
        Ok(out.e_tag().map(str::to_owned))
    }
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    fn backend(&self) -> &'static str {
        "s3"
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<ObjectMeta> {
        validate_key(key)?;
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| StorageError::io("stat", path, e))?
            .len();
        let sha = crate::hash_file(path).await?;
        if size >= self.multipart.threshold {
            self.put_multipart(key, path, size, sha).await
        } else {
            self.put_whole_file(key, path, size, sha).await
        }
    }

    async fn put_stream(&self, key: &str, mut body: ByteStream) -> Result<ObjectMeta> {
        validate_key(key)?;
        let url = self.url(key);
        let input_error = |source| StorageError::Input {
            location: url.clone(),
            source,
        };
        // Buffer up to the multipart threshold in memory.
        let threshold = usize::try_from(self.multipart.threshold).unwrap_or(usize::MAX);
        let mut buf = BytesMut::new();
        while buf.len() < threshold {
            match body.next().await {
                Some(chunk) => buf.extend_from_slice(&chunk.map_err(input_error)?),
                None => {
                    let bytes = buf.freeze();
                    let sha = ContentHash::of_bytes(&bytes);
                    return self.put_small(key, bytes, sha).await;
                }
            }
        }
        // Large: spool to a temporary file so the hash is known up front and
        // every part can be re-read for a retry.
        let spool = TempPath::inside(&std::env::temp_dir(), "montage-upload-spool");
        let head = futures_util::stream::once(async move { Ok(buf.freeze()) });
        let (size, sha) =
            fsutil::stream_to_file(Box::pin(head.chain(body)), spool.path(), None, &url).await?;
        if size >= self.multipart.threshold {
            self.put_multipart(key, spool.path(), size, sha).await
        } else {
            self.put_whole_file(key, spool.path(), size, sha).await
        }
    }

    async fn get_stream(&self, key: &str) -> Result<ByteStream> {
        validate_key(key)?;
        let url = self.url(key);
        let out = self
            .retry("GetObject", &url, || async {
                self.client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| classify("GetObject", &url, &e))
            })
            .await?;
        let reader = out.body.into_async_read();
        Ok(Box::pin(ReaderStream::new(reader).map(move |r| {
            r.map_err(|e| std::io::Error::new(e.kind(), format!("{url}: download: {e}")))
        })))
    }

    async fn get_file(
        &self,
        key: &str,
        dest: &Path,
        expected: Option<&ContentHash>,
    ) -> Result<ObjectMeta> {
        validate_key(key)?;
        let url = self.url(key);
        let dest: PathBuf = dest.to_path_buf();
        self.retry("GetObject", &url, || async {
            let out = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| classify("GetObject", &url, &e))?;
            let stored = stored_sha(out.metadata(), &url).map_err(Failure::Fatal)?;
            let etag = out.e_tag().map(str::to_owned);
            let check = expected.copied().or(stored);
            let reader = out.body.into_async_read();
            let stream: ByteStream = Box::pin(ReaderStream::new(reader));
            match fsutil::stream_to_file(stream, &dest, check.as_ref(), &url).await {
                Ok((size, sha)) => Ok(ObjectMeta {
                    key: key.to_owned(),
                    size,
                    sha256: Some(sha),
                    etag,
                }),
                // The body broke off mid-way: download again.
                Err(StorageError::Input { source, .. }) => {
                    Err(Failure::Transient(format!("body: {source}")))
                }
                Err(e) => Err(Failure::Fatal(e)),
            }
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        validate_key(key)?;
        let url = self.url(key);
        let out = self
            .retry("HeadObject", &url, || async {
                self.client
                    .head_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| classify("HeadObject", &url, &e))
            })
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(ObjectMeta {
            key: key.to_owned(),
            size: out
                .content_length()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            sha256: stored_sha(out.metadata(), &url)?,
            etag: out.e_tag().map(str::to_owned),
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        validate_prefix(prefix)?;
        let url = self.url(prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .retry("ListObjectsV2", &url, || async {
                    self.client
                        .list_objects_v2()
                        .bucket(&self.bucket)
                        .prefix(prefix)
                        .set_continuation_token(token.clone())
                        .send()
                        .await
                        .map_err(|e| classify("ListObjectsV2", &url, &e))
                })
                .await?;
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                out.push(ObjectMeta {
                    key: key.to_owned(),
                    size: obj.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                    sha256: None,
                    etag: obj.e_tag().map(str::to_owned),
                });
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        let url = self.url(key);
        self.retry("DeleteObject", &url, || async {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify("DeleteObject", &url, &e))
        })
        .await
    }

    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<String> {
        validate_key(key)?;
        let url = self.url(key);
        let config =
            PresigningConfig::expires_in(expires_in).map_err(|e| StorageError::InvalidConfig {
                field: "expires_in",
                value: format!("{expires_in:?}"),
                reason: e.to_string(),
            })?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| StorageError::S3 {
                op: "presign GetObject",
                location: url,
                message: DisplayErrorContext(&e).to_string(),
            })?;
        Ok(req.uri().to_owned())
    }

    async fn settle(&self) {
        loop {
            let mut pending = {
                let mut guard = self
                    .cleanups
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                std::mem::take(&mut *guard)
            };
            if pending.is_empty() {
                return;
            }
            while pending.join_next().await.is_some() {}
        }
    }
}

/// The retry loop itself, free of `self` so it is easy to read: attempt,
/// keep the error, back off, attempt again.
pub(crate) async fn retry_loop<T, F, Fut>(
    policy: &RetryPolicy,
    op: &'static str,
    location: &str,
    attempt: &mut F,
) -> Result<T>
where
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = std::result::Result<T, Failure>> + Send,
{
    let mut errors = Vec::new();
    for n in 1..=policy.max_attempts {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Transient(message)) => {
                tracing::warn!(op, location, attempt = n, error = %message, "transient storage failure");
                errors.push(format!("attempt {n}: {message}"));
                if n < policy.max_attempts {
                    tokio::time::sleep(policy.backoff().delay(n)).await;
                }
            }
        }
    }
    Err(StorageError::RetriesExhausted {
        op,
        location: location.to_owned(),
        attempts: errors,
    })
}

/// Sorts an SDK error into transient (retry) or fatal.
pub(crate) fn classify<E>(op: &'static str, location: &str, err: &SdkError<E>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let message = DisplayErrorContext(err).to_string();
    let status = err.raw_response().map(|r| r.status().as_u16());
    let transient = match err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(d) => !d.is_user(),
        SdkError::ServiceError(_) => {
            status.is_some_and(|s| s >= 500 || s == 429)
                || err.code().is_some_and(|c| TRANSIENT_CODES.contains(&c))
        }
        _ => false,
    };
    if transient {
        return Failure::Transient(message);
    }
    let not_found =
        status == Some(404) && !matches!(err.code(), Some("NoSuchBucket" | "NoSuchUpload"));
    if not_found {
        return Failure::Fatal(StorageError::NotFound {
            location: location.to_owned(),
        });
    }
    let denied = status == Some(403)
        || err.code().is_some_and(|c| {
            matches!(
                c,
                "AccessDenied"
                    | "InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "ExpiredToken"
                    | "InvalidToken"
            )
        });
    if denied {
        return Failure::Fatal(StorageError::PermissionDenied {
            op,
            location: location.to_owned(),
            message,
        });
    }
    Failure::Fatal(StorageError::S3 {
        op,
        location: location.to_owned(),
        message,
    })
}

/// A body reading `len` bytes of `path` from `offset`; a fresh one per attempt.
async fn file_body(
    path: &Path,
    offset: u64,
    len: u64,
) -> std::result::Result<SdkByteStream, Failure> {
    SdkByteStream::read_from()
        .path(path)
        .offset(offset)
        .length(Length::Exact(len))
        .build()
        .await
        .map_err(|e| Failure::Fatal(StorageError::io("read", path, std::io::Error::other(e))))
}

/// The sha256 stored with an object, if any.
fn stored_sha(
    metadata: Option<&std::collections::HashMap<String, String>>,
    location: &str,
) -> Result<Option<ContentHash>> {
    let Some(text) = metadata.and_then(|m| m.get(SHA256_METADATA)) else {
        return Ok(None);
    };
    text.parse()
        .map(Some)
        .map_err(|e: spec::HashError| StorageError::S3 {
            op: "read metadata",
            location: location.to_owned(),
            message: format!("x-amz-meta-{SHA256_METADATA}: {e}"),
        })
}

/// Aborts an upload, retrying transient failures; failures are logged (the
/// bucket's lifecycle rule for incomplete uploads is the last resort).
async fn abort_upload(
    client: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    policy: &RetryPolicy,
) {
    let url = format!("s3://{bucket}/{key}");
    let result = retry_loop(policy, "AbortMultipartUpload", &url, &mut || async {
        match client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match classify("AbortMultipartUpload", &url, &e) {
                // Already gone.
                Failure::Fatal(StorageError::NotFound { .. }) => Ok(()),
                other => Err(other),
            },
        }
    })
    .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "could not abort a multipart upload");
    }
}

/// Aborts the multipart upload when an upload future is dropped mid-way
/// (cancelled). The abort runs as a task the store keeps, so
/// [`ObjectStore::settle`] can wait for it.
struct AbortGuard {
    store: S3Store,
    key: String,
    upload_id: String,
    armed: bool,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::error!(key = %self.key, "upload dropped outside a runtime: multipart upload left open");
            return;
        };
        let client = self.store.client.clone();
        let bucket = self.store.bucket.clone();
        let key = std::mem::take(&mut self.key);
        let upload_id = std::mem::take(&mut self.upload_id);
        let policy = self.store.retry;
        let mut tasks = self
            .store
            .cleanups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tasks.spawn_on(
            async move { abort_upload(&client, &bucket, &key, &upload_id, &policy).await },
            &handle,
        );
    }
}
