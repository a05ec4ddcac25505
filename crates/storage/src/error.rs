//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong in storage. Every variant names the location,
/// key, path or archive entry involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A location string (`s3://…`, `file://…` or a path) could not be parsed.
    #[error("location `{text}`: {reason}")]
    InvalidLocation {
        /// The text as given.
        text: String,
        /// Why it was refused.
        reason: String,
    },
    /// An object key is not acceptable (empty, absolute, `..`, …).
    #[error("key `{key}`: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// Why it was refused.
        reason: String,
    },
    /// A sha256 digest string is not 64 hexadecimal digits.
    #[error("sha256 `{text}`: {reason}")]
    InvalidHash {
        /// The text as given.
        text: String,
        /// Why it was refused.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("{field} = {value}: {reason}")]
    InvalidConfig {
        /// The configuration field.
        field: &'static str,
        /// The value given.
        value: String,
        /// The range allowed.
        reason: String,
    },
    /// The object does not exist.
    #[error("{location}: no such object")]
    NotFound {
        /// The object's URL.
        location: String,
    },
    /// A local file operation failed.
    #[error("{}: {op}: {source}", path.display())]
    Io {
        /// What was being done (`create`, `rename`, `read`, …).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A byte stream given to `put_stream` failed.
    #[error("{location}: the input stream failed: {source}")]
    Input {
        /// The object being written.
        location: String,
        /// The stream's error.
        #[source]
        source: std::io::Error,
    },
    /// An S3 request failed with an error that retrying will not fix.
    #[error("{location}: S3 {op} failed: {message}")]
    S3 {
        /// The S3 operation (`PutObject`, `UploadPart`, …).
        op: &'static str,
        /// The object's URL.
        location: String,
        /// The service's or client's error, flattened to text.
        message: String,
    },
    /// S3 refused access (403: `AccessDenied`, bad credentials, a bucket
    /// policy): retrying will not help, and neither will another worker.
    #[error(
        "{location}: S3 {op} was refused: {message} (check the credentials and the bucket's policy)"
    )]
    PermissionDenied {
        /// The S3 operation.
        op: &'static str,
        /// The object's URL.
        location: String,
        /// The service's error, flattened to text.
        message: String,
    },
    /// A transient failure (5xx, throttling, timeout, connection reset)
    /// persisted through every attempt. Each attempt's error is kept.
    #[error("{location}: S3 {op} failed after {} attempts: {}", attempts.len(), attempts.join("; "))]
    RetriesExhausted {
        /// The S3 operation.
        op: &'static str,
        /// The object's URL.
        location: String,
        /// One message per attempt, in order.
        attempts: Vec<String>,
    },
    /// A downloaded or archived object does not have the expected sha256.
    #[error("{location}: sha256 mismatch: expected {expected}, got {actual}")]
    HashMismatch {
        /// The object's URL or the file's path.
        location: String,
        /// The hash that was asked for.
        expected: String,
        /// The hash of the bytes received.
        actual: String,
    },
    /// The backend cannot do this (for example a presigned URL for a local file).
    #[error("{location}: {op} is not supported by the {backend} backend")]
    Unsupported {
        /// What was asked.
        op: &'static str,
        /// The backend (`local`, `s3`).
        backend: &'static str,
        /// The object's URL.
        location: String,
    },
    /// A bundle directory could not be packed.
    #[error("packing {}: `{entry}`: {reason}", dir.display())]
    Pack {
        /// The directory being packed.
        dir: PathBuf,
        /// The offending entry, relative to the directory.
        entry: String,
        /// Why.
        reason: String,
    },
    /// An archive was refused while unpacking (unsafe entry, limits exceeded,
    /// malformed tar).
    #[error("unpacking {archive}: `{entry}`: {reason}")]
    Unpack {
        /// The archive (its path or URL).
        archive: String,
        /// The offending entry's path as written in the archive.
        entry: String,
        /// Why.
        reason: String,
    },
    /// The operation was cancelled.
    #[error("{location}: cancelled")]
    Cancelled {
        /// The object's URL.
        location: String,
    },
}

impl StorageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Whether this is [`StorageError::NotFound`].
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// Whether this is [`StorageError::PermissionDenied`].
    #[must_use]
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Self::PermissionDenied { .. })
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

impl From<spec::LocationError> for StorageError {
    fn from(e: spec::LocationError) -> Self {
        StorageError::InvalidLocation {
            text: e.text,
            reason: e.reason,
        }
    }
}

impl From<spec::HashError> for StorageError {
    fn from(e: spec::HashError) -> Self {
        StorageError::InvalidHash {
            text: e.text,
            reason: e.reason,
        }
    }
}

/// Checks an object key (not a prefix).
pub(crate) fn validate_key(key: &str) -> Result<()> {
    spec::check_key(key).map_err(|reason| StorageError::InvalidKey {
        key: spec::quote(key),
        reason,
    })
}

/// Checks a listing prefix: empty, or a key that may end with `/`.
pub(crate) fn validate_prefix(prefix: &str) -> Result<()> {
    spec::check_prefix(prefix).map_err(|reason| StorageError::InvalidKey {
        key: spec::quote(prefix),
        reason,
    })
}
