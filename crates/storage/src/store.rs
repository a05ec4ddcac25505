//! The storage trait and the types it speaks.

use std::fmt;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

use crate::error::{Result, StorageError};
use crate::hash::ContentHash;

/// A stream of bytes going into or coming out of a store. Errors are
/// `std::io::Error` so the stream plugs into `tokio_util::io::StreamReader`.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Objects at least this large are uploaded in parts.
pub const MULTIPART_THRESHOLD: u64 = 32 * 1024 * 1024;
/// The size of each uploaded part (the last may be smaller).
pub const PART_SIZE: u64 = 16 * 1024 * 1024;
/// S3's smallest allowed part (except the last), 5 MiB.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's largest allowed part, 5 GiB.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// S3's largest number of parts in one upload. Larger objects get larger
/// parts.
pub const MAX_PARTS: u64 = 10_000;

/// Attempts made for one request before a transient failure is reported.
pub const MAX_ATTEMPTS: u32 = 5;
/// The wait after the first failed attempt; it doubles after each failure.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What is known of a stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The key inside the store.
    pub key: String,
    /// The size in bytes.
    pub size: u64,
    /// The sha256 of the contents, when known (S3 objects written by this
    /// crate carry it as `x-amz-meta-sha256`; every successful download and
    /// upload computes it).
    pub sha256: Option<ContentHash>,
    /// The S3 ETag, when the backend has one.
    pub etag: Option<String>,
}

/// When and how large objects are uploaded in parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MultipartConfig {
    /// Objects of at least this many bytes use a multipart upload.
    pub threshold: u64,
    /// Bytes per part (raised when an object would need more than
    /// [`MAX_PARTS`] parts).
    pub part_size: u64,
}

impl Default for MultipartConfig {
    fn default() -> Self {
        Self {
            threshold: MULTIPART_THRESHOLD,
            part_size: PART_SIZE,
        }
    }
}

impl MultipartConfig {
    /// Checks the sizes against S3's limits.
    ///
    /// # Errors
    /// [`StorageError::InvalidConfig`] naming the field when `part_size` is
    /// outside [`MIN_PART_SIZE`]..=[`MAX_PART_SIZE`] or `threshold` is below
    /// `part_size`.
    pub fn validate(&self) -> Result<()> {
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return Err(StorageError::InvalidConfig {
                field: "multipart.part_size",
                value: self.part_size.to_string(),
                reason: format!(
                    "must be {MIN_PART_SIZE} to {MAX_PART_SIZE} bytes (S3's part limits)"
                ),
            });
        }
        if self.threshold < self.part_size {
            return Err(StorageError::InvalidConfig {
                field: "multipart.threshold",
                value: self.threshold.to_string(),
                reason: format!("must be at least multipart.part_size ({})", self.part_size),
            });
        }
        Ok(())
    }

    /// The part size for an object of `size` bytes: `part_size`, raised so
    /// the upload needs at most [`MAX_PARTS`] parts.
    #[must_use]
    pub fn part_size_for(&self, size: u64) -> u64 {
        self.part_size.max(size.div_ceil(MAX_PARTS))
    }
}

/// How transient failures are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included (at least 1).
    pub max_attempts: u32,
    /// The wait after the first failure; it doubles after each failure.
    pub initial_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: MAX_ATTEMPTS,
            initial_backoff: INITIAL_BACKOFF,
            max_backoff: MAX_BACKOFF,
        }
    }
}

impl RetryPolicy {
    /// Checks the policy.
    ///
    /// # Errors
    /// [`StorageError::InvalidConfig`] when `max_attempts` is 0 or
    /// `max_backoff` is below `initial_backoff`.
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(StorageError::InvalidConfig {
                field: "retry.max_attempts",
                value: "0".to_owned(),
                reason: "must be at least 1".to_owned(),
            });
        }
        if self.max_backoff < self.initial_backoff {
            return Err(StorageError::InvalidConfig {
                field: "retry.max_backoff",
                value: format!("{:?}", self.max_backoff),
                reason: format!(
                    "must be at least retry.initial_backoff ({:?})",
                    self.initial_backoff
                ),
            });
        }
        Ok(())
    }

    /// The waits between attempts: exponential from `initial_backoff` to
    /// `max_backoff`, with [`crate::backoff::DEFAULT_JITTER`].
    #[must_use]
    pub fn backoff(&self) -> crate::Backoff {
        crate::Backoff::exponential(self.initial_backoff, self.max_backoff)
            .with_jitter(crate::backoff::DEFAULT_JITTER)
    }
}

/// One small interface over object storage: a local directory or an S3
/// bucket. Keys are `/`-separated relative paths; a key with an empty, `.`
/// or `..` segment is refused. Writes are all-or-nothing: a failed or
/// cancelled (dropped) write leaves no object and no open multipart upload.
#[async_trait::async_trait]
pub trait ObjectStore: fmt::Debug + Send + Sync {
    /// The backend's name: `local` or `s3`.
    fn backend(&self) -> &'static str;

    /// The URL of `key`: `s3://bucket/key` or a local path.
    fn url(&self, key: &str) -> String;

    /// Uploads a file, in parts when it is large. The object carries the
    /// file's sha256.
    ///
    /// # Errors
    /// An invalid key, an unreadable file, or a failed upload (each
    /// attempt's error kept when transient failures persisted).
    async fn put_file(&self, key: &str, path: &Path) -> Result<ObjectMeta>;

    /// Uploads a byte stream. Small streams are buffered in memory; streams
    /// reaching the multipart threshold are spooled to a temporary file first
    /// so their sha256 is known before the upload starts and every part can
    /// be retried.
    ///
    /// # Errors
    /// As [`ObjectStore::put_file`], plus [`StorageError::Input`] when the
    /// stream fails.
    async fn put_stream(&self, key: &str, body: ByteStream) -> Result<ObjectMeta>;

    /// Uploads bytes held in memory.
    ///
    /// # Errors
    /// As [`ObjectStore::put_stream`].
    async fn put_bytes(&self, key: &str, bytes: Bytes) -> Result<ObjectMeta> {
        let once = futures_util::stream::once(async move { Ok(bytes) });
        self.put_stream(key, Box::pin(once)).await
    }

    /// Opens an object for reading. Transient failures of the request are
    /// retried; an error in the middle of the body ends the stream with an
    /// `std::io::Error` naming the object.
    ///
    /// # Errors
    /// [`StorageError::NotFound`], an invalid key, or a failed request.
    async fn get_stream(&self, key: &str) -> Result<ByteStream>;

    /// Downloads an object into `dest` (written beside it under a temporary
    /// name and renamed, so `dest` is never partial), computing its sha256
    /// and checking it against `expected` and against the sha256 stored with
    /// the object. A download interrupted by a transient failure starts
    /// over.
    ///
    /// # Errors
    /// [`StorageError::HashMismatch`] when the bytes do not match (and
    /// `dest` is left untouched), [`StorageError::NotFound`], or a failed
    /// download or write.
    async fn get_file(
        &self,
        key: &str,
        dest: &Path,
        expected: Option<&ContentHash>,
    ) -> Result<ObjectMeta>;

    /// Size, sha256 (when stored) and ETag of an object; `None` when it does
    /// not exist.
    ///
    /// # Errors
    /// An invalid key or a failed request.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>>;

    /// Every object whose key starts with `prefix`, sorted by key. Listed
    /// objects have no sha256 (use [`ObjectStore::head`]).
    ///
    /// # Errors
    /// An invalid prefix or a failed request.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Deletes an object; deleting a missing object succeeds.
    ///
    /// # Errors
    /// An invalid key or a failed request.
    async fn delete(&self, key: &str) -> Result<()>;

    /// A URL that lets anyone holding it GET the object for `expires_in`.
    ///
    /// # Errors
    /// [`StorageError::Unsupported`] for local stores; a signing failure
    /// (no credentials, or `expires_in` over S3's 7 days).
    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<String>;

    /// Waits until background clean-up of dropped uploads (aborting their
    /// multipart uploads) has finished. Call it before shutting down.
    async fn settle(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_validate() {
        assert!(MultipartConfig::default().validate().is_ok());
        let err = MultipartConfig {
            threshold: 1,
            part_size: 1,
        }
        .validate()
        .expect_err("too small");
        assert!(
            err.to_string().starts_with("multipart.part_size = 1: "),
            "{err}"
        );
        assert_eq!(MultipartConfig::default().part_size_for(1), PART_SIZE);
        assert_eq!(
            MultipartConfig::default().part_size_for(PART_SIZE * MAX_PARTS * 2),
            PART_SIZE * 2
        );
        assert!(RetryPolicy::default().validate().is_ok());
        assert!(
            RetryPolicy {
                max_attempts: 0,
                ..RetryPolicy::default()
            }
            .validate()
            .is_err()
        );
    }
}
