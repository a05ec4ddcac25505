//! Montage chunk worker: renders one frame range of a composition to H.264
//! in MPEG-TS plus exact PCM, served over gRPC.
//!
//! The library comes first: [`render_chunk`] renders a validated
//! [`ChunkRequest`] into a directory without any network, for embedding and
//! tests. The gRPC service ([`serve`], [`bind`]) is a thin layer over it
//! that adds slots, progress streaming, inline artifact delivery, bearer
//! tokens, health and graceful shutdown, and object storage: content-
//! addressed bundles (`BundleRef`) fetched once into a disk cache
//! ([`Bundles`]) and artifacts uploaded under `s3://bucket/prefix/`
//! ([`ArtifactTarget::Storage`]).
//!
//! Artifacts of chunk `i` (see [`ChunkRequest::artifact_names`]):
//! - `chunk-NNNNNN.ts`: H.264 (libx264, settings from [`VideoSettings`]) in
//!   MPEG-TS, exactly `frame_count` frames; the first is an IDR; the PTS of
//!   output frame `k` (counted from `composition_start`) is
//!   `k · 90000 · den / num` at the output rate `fps / every_nth_frame`.
//! - `chunk-NNNNNN.pcm`: raw interleaved stereo PCM at 48 kHz
//!   ([`PcmFormat`]), exactly the chunk's sample span `[S(a), S(b+1))`.
//!
//! ```no_run
//! use chunk_worker::{ArtifactTarget, ChunkRequest, ChunkSpan, PcmFormat, SourceSpec,
//!     VideoSettings, WorkerConfig, render_chunk};
//! use chunker::ChunkIndex;
//! use composition::Registry;
//! use timebase::FrameRange;
//! use tokio_util::sync::CancellationToken;
//!
//! let config = WorkerConfig::new(Registry::with_builtins());
//! let request = ChunkRequest {
//!     job_id: "demo".into(),
//!     source: SourceSpec::Registered,
//!     composition_id: "test-pattern".into(),
//!     props: composition::Props::new(),
//!     span: ChunkSpan {
//!         index: ChunkIndex(0),
//!         frames: FrameRange::new(0, 29).expect("0 <= 29"),
//!         composition_start: 0,
//!         every_nth_frame: 1,
//!     },
//!     video: VideoSettings::default(),
//!     pcm_format: PcmFormat::F32le,
//!     target: ArtifactTarget::Directory("out".into()),
//!     frames_to: Default::default(),
//! };
//! let result = render_chunk(&config, &request, &|_| {}, &CancellationToken::new())?;
//! assert_eq!(result.frame_count(), 30);
//! assert_eq!(result.audio.size, 48_000 * 8);
//! # Ok::<(), chunk_worker::WorkerError>(())
//! ```
#![deny(missing_docs)]

mod access;
mod convert;
mod encode;
mod error;
mod images;
mod limits;
pub mod metrics;
mod palette;
mod pipeline;
mod service;
#[cfg(target_arch = "x86_64")]
mod simd;
mod status;
mod stores;
pub mod video;
mod yuv_pool;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use composition::{CompositionError, CompositionSource, Registry};

pub use access::{ALLOW_PATH_FLAG, AllowedPaths};
pub use encode::{
    BITSTREAM_VERSION, FrameConverter, TS_CLOCK_HZ, X264_SYNC_LOOKAHEAD, YuvFrame, ffmpeg_cli_args,
    quiet_svt_av1, renderer_version, reuse_freed_memory,
};
pub use error::WorkerError;
pub use limits::{
    DEFAULT_MEMORY_PERCENT, ENCODER_FRAME_COPIES, FALLBACK_MAX_MEMORY, MIN_MAX_MEMORY,
    chunk_memory, default_max_memory,
};
pub use pipeline::{
    AUDIO_BLOCK_SAMPLES, ArtifactFile, AudioSink, ChunkResult, ProgressSink, RENDER_QUEUE_DEPTH,
    render_chunk, render_chunk_audio_first,
};
pub use yuv_pool::YUV_FRAMES_PER_THREAD;
// The request types a caller of `render_chunk` builds, from the pure `spec`
// crate, so an embedder needs no second dependency for them.
pub use service::{
    BoundWorker, INLINE_PIECE_BYTES, PROGRESS_INTERVAL, ServeConfig, ServerTls, bind, serve,
    shutdown_signal,
};
pub use spec::{
    ArtifactTarget, BundleRef, ChunkProgress, ChunkRequest, ChunkSpan, PcmFormat, PixelFormat,
    Quality, RendererVersion, SourceSpec, StageTimings, VideoSettings,
};
pub use status::{MAX_STATUS_MESSAGE_CHARS, error_class, to_status};
pub use storage::Stores;
pub use storage::{CachedBundle, S3Config};
pub use stores::{Bundles, DEFAULT_BUNDLE_CACHE_BYTES};

/// Opens a scene bundle directory as a composition source (the scene crate's
/// `SceneBundle::open`, wired in by the binary).
pub type BundleOpener =
    Arc<dyn Fn(&Path) -> Result<Arc<dyn CompositionSource>, CompositionError> + Send + Sync>;

/// The default number of render threads per chunk.
///
/// Two, although one thread keeps up with libx264 on the promo at 1080p
/// (render and conversion ~3-9 ms a frame against ~15-30 ms of encoding,
/// depending on the machine's load). Measured 2026-11-30 (`chunk-worker
/// serve --render-threads N`, one 1-chunk promo render, 3 interleaved
/// rounds, load average 5.5-6.7 on 2 cores): one thread saved ~17 MiB of
/// peak (245-247 against 262-266 MiB) but no CPU that the noise could show
/// (6.3-7.5 s against 6.5-7.9 s) and cost 0.5-2 s of wall (7.5-11.6 s
/// against 6.7-9.7 s): with one thread and two YUV frames there is only
/// one frame of slack when the scheduler leaves the thread waiting on a
/// busy machine. Both stay under the 300 MB target, so the wall wins.
pub const DEFAULT_RENDER_THREADS: usize = 2;

/// What a worker can render and how: its compositions and its threads.
#[derive(Clone)]
pub struct WorkerConfig {
    /// Rust compositions served for `registered` sources.
    pub registry: Arc<Registry>,
    /// Opens `bundle_path` sources; `None` refuses them with
    /// `INVALID_ARGUMENT`.
    pub bundle_opener: Option<BundleOpener>,
    /// Threads rendering frames of one chunk (each with its own
    /// `FrameRenderer`). Does not change the output bytes.
    pub render_threads: usize,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("registry", &self.registry)
            .field("bundle_opener", &self.bundle_opener.is_some())
            .field("render_threads", &self.render_threads)
            .finish()
    }
}

/// Opened scene bundles a worker keeps, so the chunks of one render do not
/// each parse the scene and load its fonts again.
pub const BUNDLE_CACHE_ENTRIES: usize = 16;

/// What identifies a bundle folder's contents without reading them: every
/// file's relative path, size and modification time, sorted.
type BundleFingerprint = Vec<(PathBuf, u64, Option<std::time::SystemTime>)>;

fn fingerprint(root: &Path) -> std::io::Result<BundleFingerprint> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                dirs.push(entry.path());
            } else {
                let rel = entry
                    .path()
                    .strip_prefix(root)
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                out.push((rel, meta.len(), meta.modified().ok()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Opens scene bundle directories with [`composition::scene::SceneBundle`],
/// keeping the [`BUNDLE_CACHE_ENTRIES`] most recently used opened bundles. A bundle is opened
/// again when any of its files changes (size, modification time, added or
/// removed).
pub fn scene_bundle_opener() -> BundleOpener {
    type Entry = (BundleFingerprint, Arc<dyn CompositionSource>);
    let capacity =
        std::num::NonZeroUsize::new(BUNDLE_CACHE_ENTRIES).unwrap_or(std::num::NonZeroUsize::MIN);
    let cache: Arc<std::sync::Mutex<lru::LruCache<PathBuf, Entry>>> =
        Arc::new(std::sync::Mutex::new(lru::LruCache::new(capacity)));
    Arc::new(move |path: &Path| {
        let root = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let print = fingerprint(&root).ok();
        if let Some(print) = &print
            && let Ok(mut entries) = cache.lock()
            && let Some((_, source)) = entries.get(&root).filter(|(f, _)| f == print)
        {
            return Ok(Arc::clone(source));
        }
        let bundle: Arc<dyn CompositionSource> = Arc::new(
            composition::scene::SceneBundle::open_with_video(path, video::FfmpegVideo::shared())?,
        );
        if let (Some(print), Ok(mut entries)) = (print, cache.lock()) {
            entries.put(root, (print, Arc::clone(&bundle)));
        }
        Ok(bundle)
    })
}

/// Refuses a path `ffmpeg-next` cannot open: it takes paths as `&str` and
/// panics on one that is not UTF-8 or holds a NUL byte. `Err` says why.
pub(crate) fn ffmpeg_path(path: &std::path::Path) -> Result<(), String> {
    match path.to_str() {
        Some(p) if !p.contains('\0') => Ok(()),
        _ => Err("FFmpeg opens files by UTF-8 paths without NUL bytes: rename it".into()),
    }
}

impl WorkerConfig {
    /// What the `chunk-worker` binary serves: the built-in compositions and
    /// scene bundles.
    pub fn standard() -> Self {
        WorkerConfig::new(Registry::with_builtins()).with_bundle_opener(scene_bundle_opener())
    }

    /// A worker serving `registry`, no bundle opener,
    /// [`DEFAULT_RENDER_THREADS`] render threads.
    pub fn new(registry: Registry) -> Self {
        WorkerConfig {
            registry: Arc::new(registry),
            bundle_opener: None,
            render_threads: DEFAULT_RENDER_THREADS,
        }
    }

    /// Opens scene bundles with `opener`.
    pub fn with_bundle_opener(mut self, opener: BundleOpener) -> Self {
        self.bundle_opener = Some(opener);
        self
    }

    /// Renders each chunk on `n` threads (at least 1).
    pub fn with_render_threads(mut self, n: usize) -> Self {
        self.render_threads = n.max(1);
        self
    }

    /// The composition source a request names.
    ///
    /// # Errors
    /// [`WorkerError::BundleNotFound`] for a bundle path that does not exist,
    /// [`WorkerError::Unsupported`] for a bundle when no opener is configured
    /// or for a content-addressed bundle ([`SourceSpec::BundleRef`]: this
    /// call does no I/O beyond the local disk; fetch it with
    /// [`Bundles::fetch`] and pass the unpacked directory as
    /// [`SourceSpec::BundlePath`]), and the opener's [`CompositionError`].
    pub fn source(&self, spec: &SourceSpec) -> Result<Arc<dyn CompositionSource>, WorkerError> {
        match spec {
            SourceSpec::Registered => Ok(self.registry.clone()),
            SourceSpec::BundlePath(path) => {
                if !path.exists() {
                    return Err(WorkerError::BundleNotFound { path: path.clone() });
                }
                let opener = self
                    .bundle_opener
                    .as_ref()
                    .ok_or_else(|| WorkerError::Unsupported {
                        field: "source.bundle_path",
                        message: "this worker has no scene bundle loader configured; use a registered composition".into(),
                    })?;
                Ok(opener(path)?)
            }
            SourceSpec::BundleRef(reference) => Err(WorkerError::Unsupported {
                field: "source.bundle",
                message: format!(
                    "`{}`: content-addressed bundles are fetched by the gRPC service; library callers fetch them with `Bundles::fetch` and render the unpacked directory as a bundle path",
                    reference.location
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opened_bundles_are_reused_until_a_file_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let promo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/promo");
        for entry in std::fs::read_dir(&promo).expect("promo bundle") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
        }
        let open = scene_bundle_opener();
        let a = open(dir.path()).expect("open");
        let b = open(dir.path()).expect("open again");
        assert!(
            Arc::ptr_eq(&a, &b),
            "the second open should come from the cache"
        );
        assert_eq!(b.ids(), vec!["promo".to_owned()]);

        std::fs::write(dir.path().join("notes.txt"), "changed").expect("write");
        let c = open(dir.path()).expect("open after a change");
        assert!(
            !Arc::ptr_eq(&a, &c),
            "a changed bundle must be opened again"
        );

        std::fs::remove_file(dir.path().join("scene.json")).expect("remove");
        let err = open(dir.path()).err().expect("no scene");
        assert!(err.to_string().contains("scene.json"), "{err}");
    }
}
