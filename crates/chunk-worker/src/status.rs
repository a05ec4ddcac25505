//! The one place where worker errors become gRPC status codes. The
//! coordinator decides whether to retry from the code alone, never from the
//! message.

use composition::ErrorKind;
use tonic::{Code, Status};

use crate::WorkerError;

/// The status a [`WorkerError`] is reported as:
/// - bad request fields, scene, props or range, unsupported sources →
///   `INVALID_ARGUMENT` (not worth retrying);
/// - missing asset or bundle → `NOT_FOUND`;
/// - encoder, disk or internal failures → `INTERNAL`;
/// - no free slot → `RESOURCE_EXHAUSTED` (try another worker);
/// - draining → `UNAVAILABLE`; cancelled → `CANCELLED`;
/// - missing or wrong bearer token → `UNAUTHENTICATED`.
pub fn to_status(err: &WorkerError) -> Status {
    Status::new(code(err), err.to_string())
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
        WorkerError::Encoder { .. }
        | WorkerError::Io { .. }
        | WorkerError::Panicked { .. }
        | WorkerError::Server { .. } => Code::Internal,
        WorkerError::Cancelled { .. } => Code::Cancelled,
        WorkerError::Busy { .. } => Code::ResourceExhausted,
        WorkerError::Draining => Code::Unavailable,
        WorkerError::Unauthenticated { .. } => Code::Unauthenticated,
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
    }
}
