//! The coordinator's one error type, and the kinds that decide what happens
//! next: an input error is never retried (exit 2), a worker's or the
//! network's is retried elsewhere, a storage permission error is not
//! retried and is named, a cancelled render writes nothing (exit 130).

use composition::CompositionError;
use storage::StorageError;

use crate::schedule::{FailedAttempt, FailureKind};

/// Whose fault an error is, which decides whether retrying can help and how
/// the CLI exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request is wrong (composition, props, range, settings, a missing
    /// asset or bundle): fix the input; never retried.
    Input,
    /// A worker or the network failed (every attempt, or no worker could
    /// answer): retried elsewhere while attempts remain.
    Worker,
    /// Storage failed (the cache, a bundle, the destination).
    Storage,
    /// Storage refused access (credentials, bucket policy): not retried.
    Permission,
    /// The render was cancelled.
    Cancelled,
    /// A bug: a panic or a broken invariant.
    Internal,
}

impl ErrorKind {
    /// The name used in events and logs (`input`, `worker`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Input => "input",
            ErrorKind::Worker => "worker",
            ErrorKind::Storage => "storage",
            ErrorKind::Permission => "permission",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Internal => "internal",
        }
    }

    /// The `coordinator` CLI's exit code: 2 for input, 130 cancelled, 1
    /// otherwise.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Input => 2,
            ErrorKind::Cancelled => 130,
            _ => 1,
        }
    }
}

/// Why a render (or a select, plan or still) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is wrong; the message names the field or flag.
    #[error("{0}")]
    Input(String),
    /// The composition could not be selected, resolved or rendered
    /// locally; [`CompositionError::kind`] says whose fault.
    #[error(transparent)]
    Composition(#[from] CompositionError),
    /// A worker refused a chunk (as invalid, or storage refused it
    /// access): retrying cannot help.
    #[error("chunk {chunk} was refused as {} by {worker}: {message}", refusal(*kind))]
    Refused {
        /// The chunk.
        chunk: u32,
        /// The worker.
        worker: String,
        /// The worker's message.
        message: String,
        /// [`FailureKind::Invalid`] or [`FailureKind::Permission`].
        kind: FailureKind,
    },
    /// A chunk failed on every attempt.
    #[error(
        "chunk {chunk} failed after {tries} attempts; failed attempts of this render:\n{}",
        format_attempts(attempts)
    )]
    ChunkFailed {
        /// The chunk.
        chunk: u32,
        /// Attempts the chunk had.
        tries: u32,
        /// Every failed attempt of the render (all chunks), oldest first.
        attempts: Vec<FailedAttempt>,
    },
    /// No worker could take the work (the pool is empty, or none answered).
    #[error("{0}")]
    NoWorkers(String),
    /// Combining the chunks failed.
    #[error("combining chunks: {0}")]
    Combine(#[from] combine::CombineError),
    /// Storage (the cache, a bundle or the destination) failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// A bug: a task panicked or an invariant broke.
    #[error("internal error: {0}")]
    Internal(String),
    /// The render was cancelled.
    #[error("render cancelled")]
    Cancelled,
}

impl Error {
    /// Whose fault the error is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Refused {
                kind: FailureKind::Permission,
                ..
            } => ErrorKind::Permission,
            Error::Input(_) | Error::Refused { .. } => ErrorKind::Input,
            Error::Composition(e) => match e.kind() {
                composition::ErrorKind::InvalidInput | composition::ErrorKind::NotFound => {
                    ErrorKind::Input
                }
                _ => ErrorKind::Internal,
            },
            Error::ChunkFailed { .. } | Error::NoWorkers(_) => ErrorKind::Worker,
            Error::Storage(e) if e.is_permission_denied() => ErrorKind::Permission,
            Error::Storage(
                StorageError::InvalidLocation { .. } | StorageError::InvalidConfig { .. },
            ) => ErrorKind::Input,
            Error::Storage(_) => ErrorKind::Storage,
            Error::Combine(_) | Error::Io { .. } | Error::Internal(_) => ErrorKind::Internal,
            Error::Cancelled => ErrorKind::Cancelled,
        }
    }

    /// An [`Error::Io`] naming what was being done.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    /// An [`Error::Internal`] for a task that panicked or was aborted.
    pub(crate) fn task(what: &str) -> impl FnOnce(tokio::task::JoinError) -> Self + '_ {
        move |e| Error::Internal(format!("{what}: {e}"))
    }
}

fn refusal(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::Permission => "not permitted",
        _ => "invalid",
    }
}

fn format_attempts(attempts: &[FailedAttempt]) -> String {
    attempts
        .iter()
        .map(|a| {
            format!(
                "  chunk {} attempt {} on {}: {:?}: {}",
                a.chunk, a.attempt, a.worker, a.error.kind, a.error.message
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(err: Error, kind: ErrorKind, exit: u8) {
        assert_eq!(err.kind(), kind, "{err}");
        assert_eq!(err.kind().exit_code(), exit, "{err}");
    }

    #[test]
    fn kinds_decide_exit_codes() {
        check(Error::Input("--retries 0".into()), ErrorKind::Input, 2);
        check(
            Error::Refused {
                chunk: 1,
                worker: "w".into(),
                message: "bad".into(),
                kind: FailureKind::Invalid,
            },
            ErrorKind::Input,
            2,
        );
        check(
            Error::Refused {
                chunk: 1,
                worker: "w".into(),
                message: "AccessDenied".into(),
                kind: FailureKind::Permission,
            },
            ErrorKind::Permission,
            1,
        );
        check(
            Error::Composition(CompositionError::MissingAsset {
                context: "scene.json".into(),
                path: "a.png".into(),
            }),
            ErrorKind::Input,
            2,
        );
        check(
            Error::ChunkFailed {
                chunk: 0,
                tries: 3,
                attempts: Vec::new(),
            },
            ErrorKind::Worker,
            1,
        );
        check(Error::NoWorkers("none".into()), ErrorKind::Worker, 1);
        check(
            Error::Storage(StorageError::PermissionDenied {
                op: "PutObject",
                location: "s3://b/k".into(),
                message: "AccessDenied".into(),
            }),
            ErrorKind::Permission,
            1,
        );
        check(
            Error::Storage(StorageError::NotFound {
                location: "s3://b/k".into(),
            }),
            ErrorKind::Storage,
            1,
        );
        check(Error::Cancelled, ErrorKind::Cancelled, 130);
        check(Error::Internal("x".into()), ErrorKind::Internal, 1);
    }
}
