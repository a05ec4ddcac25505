//! The chunk worker's error type.

use std::path::PathBuf;

use composition::CompositionError;
use spec::FieldError;

/// Why a chunk could not be rendered or delivered. The gRPC layer maps each
/// variant to a status code in exactly one place (`status.rs`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// A request field is missing or invalid.
    #[error(transparent)]
    Field(#[from] FieldError),
    /// The composition layer refused the scene, props or an asset.
    #[error(transparent)]
    Composition(#[from] CompositionError),
    /// The chunk does not fit the composition (range outside it, inconsistent
    /// parts).
    #[error("chunk {chunk}: {message}")]
    Range {
        /// The chunk index.
        chunk: u32,
        /// What is wrong, with the values given and allowed.
        message: String,
    },
    /// The source asks for something this worker is not configured for.
    #[error("field `{field}`: {message}")]
    Unsupported {
        /// The request field.
        field: &'static str,
        /// What is unsupported and what is.
        message: String,
    },
    /// A local path the client named that this worker does not allow (see
    /// `AllowedPaths`).
    #[error("field `{field}`: `{path}` is not allowed: {reason}")]
    PathNotAllowed {
        /// The request field (`output.location`, `source.bundle_path`,
        /// `source.bundle.location`).
        field: &'static str,
        /// The path as given, quoted (at most 200 characters).
        path: String,
        /// Why, naming the flag that allows directories.
        reason: String,
    },
    /// The chunk needs more than this worker or any worker allows (memory,
    /// audio samples, bytes): the input's problem for this fleet.
    #[error("chunk {chunk}: {message}")]
    TooLarge {
        /// The chunk index.
        chunk: u32,
        /// The numbers: what the chunk needs and the limit.
        message: String,
    },
    /// The memory the chunk needs is taken by chunks in flight: try another
    /// worker.
    #[error(
        "chunk {chunk} needs about {needed_mib} MiB and only {free_mib} MiB of this worker's --max-memory is free: try another worker"
    )]
    MemoryBusy {
        /// The chunk index.
        chunk: u32,
        /// What it needs.
        needed_mib: u64,
        /// What is free.
        free_mib: u64,
    },
    /// The worker's own configuration is unusable (TLS files, an open
    /// listener without authentication).
    #[error("{setting}: {message}")]
    Config {
        /// The setting, as its `chunk-worker serve` flag.
        setting: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
    /// A scene bundle directory that does not exist on this worker.
    #[error("bundle {}: not found on this worker", spec::quote(&path.to_string_lossy()))]
    BundleNotFound {
        /// The path given.
        path: PathBuf,
    },
    /// Fetching a bundle or uploading an artifact through object storage
    /// failed. The storage error names the location, key or archive entry.
    #[error("{field}: {source}")]
    Storage {
        /// The request field whose location was being used
        /// (`source.bundle`, `output.location`).
        field: &'static str,
        /// The cause.
        source: storage::StorageError,
    },
    /// FFmpeg (swscale, libx264 or the MPEG-TS muxer) failed.
    #[error("{stage}: {message}")]
    Encoder {
        /// Which step failed, e.g. "libx264 open".
        stage: &'static str,
        /// FFmpeg's message.
        message: String,
    },
    /// Reading or writing an artifact failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A pipeline thread panicked (a bug, reported rather than propagated).
    #[error("{stage} thread panicked")]
    Panicked {
        /// The stage.
        stage: &'static str,
    },
    /// The chunk was cancelled (client gone, shutdown or caller's token).
    #[error("chunk {chunk} cancelled")]
    Cancelled {
        /// The chunk index.
        chunk: u32,
    },
    /// Every slot is busy.
    #[error("all {slots} slots are busy: try another worker")]
    Busy {
        /// The worker's slot count.
        slots: usize,
    },
    /// The call lacks the worker's bearer token or carries a wrong one.
    #[error("{reason}")]
    Unauthenticated {
        /// What was wrong with the credentials.
        reason: &'static str,
    },
    /// The request expects a renderer (libx264, FFmpeg, Montage) other than
    /// the one this worker runs: its chunks would not join the others.
    #[error(
        "this worker runs {ours}, but the request expects {expected}: try a worker of that version"
    )]
    RendererMismatch {
        /// What the request expects.
        expected: String,
        /// What this worker runs.
        ours: String,
    },
    /// The worker is shutting down and takes no new chunks.
    #[error("the worker is draining and takes no new chunks")]
    Draining,
    /// The gRPC server could not bind or failed.
    #[error("gRPC server on {addr}: {message}")]
    Server {
        /// The listen address.
        addr: String,
        /// What failed.
        message: String,
    },
}

impl WorkerError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        WorkerError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn storage(field: &'static str) -> impl FnOnce(storage::StorageError) -> Self {
        move |source| WorkerError::Storage { field, source }
    }

    pub(crate) fn encoder(stage: &'static str, err: impl std::fmt::Display) -> Self {
        WorkerError::Encoder {
            stage,
            message: err.to_string(),
        }
    }
}
