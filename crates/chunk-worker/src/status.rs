//! The one place where worker errors become gRPC status codes. The
//! coordinator decides whether to retry from the code alone, never from the
//! message.

use composition::ErrorKind;
use storage::StorageError;
use tonic::{Code, Status};

use crate::WorkerError;

/// The status a [`WorkerError`] is reported as:
/// - bad request fields, scene, props or range, unsupported sources →
///   `INVALID_ARGUMENT` (not worth retrying);
/// - missing asset or bundle → `NOT_FOUND`, also a bundle archive missing
///   from storage;
/// - a bundle archive refused while unpacking (an entry outside the target,
///   size or entry limits, not a tar) → `INVALID_ARGUMENT`;
/// - a bundle archive whose bytes do not hash to the requested sha256 →
///   `DATA_LOSS`;
/// - storage refusing access (403) → `PERMISSION_DENIED` (no worker would
///   do better);
/// - a request for another renderer version → `FAILED_PRECONDITION` (try a
///   worker of that version);
/// - any other storage failure (network, S3 errors, retries exhausted, the
///   worker's disk) → `UNAVAILABLE`, so the coordinator tries again;
/// - encoder, disk or internal failures → `INTERNAL`;
/// - no free slot → `RESOURCE_EXHAUSTED` (try another worker);
/// - draining → `UNAVAILABLE`; cancelled → `CANCELLED`;
/// - missing or wrong bearer token → `UNAUTHENTICATED`.
pub fn to_status(err: &WorkerError) -> Status {
    Status::new(code(err), err.to_string())
}

/// The class of an error in metrics and logs: `input`, `not_found`,
/// `permission`, `storage`, `encoder`, `internal`, `busy`, `draining`,
/// `unauthenticated`, `renderer_mismatch` or `cancelled` — one per status
/// code the error maps to, so dashboards group failures the way the
/// coordinator treats them.
pub fn error_class(err: &WorkerError) -> &'static str {
    match code(err) {
        Code::InvalidArgument => "input",
        Code::NotFound => "not_found",
        Code::PermissionDenied => "permission",
        Code::DataLoss => "storage",
        Code::Cancelled => "cancelled",
        Code::ResourceExhausted => "busy",
        Code::Unauthenticated => "unauthenticated",
        Code::FailedPrecondition => "renderer_mismatch",
        Code::Unavailable if matches!(err, WorkerError::Draining) => "draining",
        Code::Unavailable => "storage",
        _ if matches!(err, WorkerError::Encoder { .. }) => "encoder",
        _ => "internal",
    }
}

fn code(err: &WorkerError) -> Code {
    match err {
        WorkerError::Field(_) | WorkerError::Range { .. } | WorkerError::Unsupported { .. } => {
            Code::InvalidArgument
        }
        WorkerError::Composition(e) => match e.kind() {
            ErrorKind::InvalidInput => Code::InvalidArgument,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::Internal => Code::Internal,
            _ => Code::Internal,
        },
        WorkerError::BundleNotFound { .. } => Code::NotFound,
        WorkerError::Storage { source, .. } => storage_code(source),
        WorkerError::Encoder { .. }
        | WorkerError::Io { .. }
        | WorkerError::Panicked { .. }
        | WorkerError::Server { .. } => Code::Internal,
        WorkerError::Cancelled { .. } => Code::Cancelled,
        WorkerError::Busy { .. } => Code::ResourceExhausted,
        WorkerError::Draining => Code::Unavailable,
        WorkerError::RendererMismatch { .. } => Code::FailedPrecondition,
        WorkerError::Unauthenticated { .. } => Code::Unauthenticated,
    }
}

fn storage_code(err: &StorageError) -> Code {
    match err {
        StorageError::NotFound { .. } => Code::NotFound,
        StorageError::Unpack { .. }
        | StorageError::InvalidLocation { .. }
        | StorageError::InvalidKey { .. }
        | StorageError::InvalidHash { .. } => Code::InvalidArgument,
        StorageError::HashMismatch { .. } => Code::DataLoss,
        StorageError::PermissionDenied { .. } => Code::PermissionDenied,
        StorageError::Cancelled { .. } => Code::Cancelled,
        _ => Code::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use composition::CompositionError;

    #[track_caller]
    fn check(err: WorkerError, expected: Code) {
        assert_eq!(to_status(&err).code(), expected, "{err}");
    }

    #[test]
    fn codes() {
        check(
            WorkerError::Composition(CompositionError::Invalid {
                context: "prop `width`".into(),
                message: "bad".into(),
            }),
            Code::InvalidArgument,
        );
        check(
            WorkerError::Composition(CompositionError::MissingAsset {
                context: "scene.json".into(),
                path: "a.png".into(),
            }),
            Code::NotFound,
        );
        check(
            WorkerError::Composition(CompositionError::Render {
                frame: 3,
                message: "x".into(),
            }),
            Code::Internal,
        );
        check(
            WorkerError::BundleNotFound {
                path: "/nope".into(),
            },
            Code::NotFound,
        );
        check(
            WorkerError::Encoder {
                stage: "libx264 open",
                message: "x".into(),
            },
            Code::Internal,
        );
        check(WorkerError::Busy { slots: 1 }, Code::ResourceExhausted);
        check(WorkerError::Draining, Code::Unavailable);
        check(
            WorkerError::Unauthenticated { reason: "x" },
            Code::Unauthenticated,
        );
        check(WorkerError::Cancelled { chunk: 1 }, Code::Cancelled);
        check(
            WorkerError::Range {
                chunk: 0,
                message: "x".into(),
            },
            Code::InvalidArgument,
        );
        let storage = |source| WorkerError::Storage {
            field: "source.bundle",
            source,
        };
        check(
            storage(StorageError::NotFound {
                location: "s3://b/k.tar".into(),
            }),
            Code::NotFound,
        );
        check(
            storage(StorageError::Unpack {
                archive: "s3://b/k.tar".into(),
                entry: "../escape".into(),
                reason: "x".into(),
            }),
            Code::InvalidArgument,
        );
        check(
            storage(StorageError::HashMismatch {
                location: "s3://b/k.tar".into(),
                expected: "a".into(),
                actual: "b".into(),
            }),
            Code::DataLoss,
        );
        check(
            storage(StorageError::RetriesExhausted {
                op: "GetObject",
                location: "s3://b/k.tar".into(),
                attempts: vec!["503".into()],
            }),
            Code::Unavailable,
        );
        check(
            storage(StorageError::PermissionDenied {
                op: "PutObject",
                location: "s3://b/k".into(),
                message: "AccessDenied".into(),
            }),
            Code::PermissionDenied,
        );
        check(
            WorkerError::RendererMismatch {
                expected: "a".into(),
                ours: "b".into(),
            },
            Code::FailedPrecondition,
        );
    }
}
