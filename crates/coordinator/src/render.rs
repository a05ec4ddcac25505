//! The render entry point: select, plan, fan out, combine.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chunk_worker::{PcmFormat as WirePcm, ServeConfig, SourceSpec, VideoSettings, WorkerConfig};
use chunker::{ChunkSpec, Plan, PlanRequest};
use combine::{ChunkArtifact, CombineOptions, PcmAudio};
use composition::{CompositionMeta, Props};
use montage_proto::v1 as pb;
use pb::chunk_worker_client::ChunkWorkerClient;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use storage::{ContentHash, Location, S3Config, StorageError, Stores};

use crate::cache::{
    ArtifactRecord, CachedChunk, ChunkRecord, OutputSettings, RenderCache, SourceIdentity,
    canonical_json, chunk_key, output_key,
};
use crate::grpc::{
    ChunkFiles, ChunkTarget, GrpcRunner, LocalArtifact, MAX_MESSAGE_BYTES, artifact_paths,
    authorize, chunk_request, classify,
};
use crate::pool::RemotePool;
use crate::schedule::{
    AttemptFuture, ChunkProgress, ChunkRunner, FailureKind, ScheduleError, ScheduleEvent,
    SchedulePolicy, WorkerInfo, run_chunks,
};

/// Where a render's composition comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderSource {
    /// A scene bundle directory. Local workers read it in place; remote
    /// workers get it as a content-addressed archive through an S3 cache
    /// (`CoordinatorOptions::cache`), or, without one, must see the same
    /// path (a shared file system).
    Bundle(PathBuf),
    /// A Rust composition registered in the workers' binaries.
    Registered,
}

/// Where a render's MP4 goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A file on this machine (written under a temporary name and renamed).
    File(PathBuf),
    /// An object in storage: `s3://bucket/path.mp4`, or a prefix
    /// (`s3://bucket/renders/`) under which the MP4 is named by its sha256,
    /// spread over two levels of hashed prefixes
    /// (`renders/ab/cd/<sha256>.mp4`).
    Storage(Location),
}

impl Destination {
    /// Parses what a user typed: `s3://…` is storage; `file://` URLs and
    /// anything else are local paths.
    ///
    /// # Errors
    /// [`RenderError::BadInput`] naming the text when it is not a valid
    /// location or names a local directory.
    pub fn parse(text: &str) -> Result<Self, RenderError> {
        let bad = |e: StorageError| RenderError::BadInput(format!("--out: {e}"));
        if text.starts_with("s3://") {
            let location = Location::parse(text).map_err(bad)?;
            if location.key().is_empty() {
                return Err(RenderError::BadInput(format!(
                    "--out `{text}`: name an object (s3://bucket/path.mp4) or a prefix (s3://bucket/renders/)"
                )));
            }
            return Ok(Destination::Storage(location));
        }
        if text.starts_with("file://") {
            return match Location::parse(text).map_err(bad)? {
                Location::Local { root, key } if !key.is_empty() => {
                    Ok(Destination::File(root.join(key)))
                }
                _ => Err(RenderError::BadInput(format!(
                    "--out `{text}` names a directory, not a file"
                ))),
            };
        }
        if text.is_empty() || text.ends_with('/') {
            return Err(RenderError::BadInput(format!(
                "--out `{text}` names a directory, not a file"
            )));
        }
        Ok(Destination::File(PathBuf::from(text)))
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::File(p) => write!(f, "{}", p.display()),
            Destination::Storage(Location::S3 { bucket, key }) => write!(f, "s3://{bucket}/{key}"),
            Destination::Storage(Location::Local { root, key }) => {
                write!(f, "{}", root.join(key).display())
            }
        }
    }
}

impl From<PathBuf> for Destination {
    fn from(p: PathBuf) -> Self {
        Destination::File(p)
    }
}

impl From<&Path> for Destination {
    fn from(p: &Path) -> Self {
        Destination::File(p.to_path_buf())
    }
}

impl From<&PathBuf> for Destination {
    fn from(p: &PathBuf) -> Self {
        Destination::File(p.clone())
    }
}

/// Everything a render needs. Build with [`RenderRequest::new`] and adjust
/// the public fields.
#[derive(Debug, Clone)]
pub struct RenderRequest {
    /// Where the composition comes from.
    pub source: RenderSource,
    /// The composition's id.
    pub composition: String,
    /// Props (empty: defaults).
    pub props: Props,
    /// How to split the frames.
    pub chunks: ChunkSpec,
    /// Render only these frames (inclusive).
    pub frames: Option<RangeInclusive<u64>>,
    /// Keep one frame in this many.
    pub every_nth_frame: u32,
    /// Encoder settings, identical for every chunk.
    pub video: VideoSettings,
    /// AAC bitrate in bits per second.
    pub audio_bitrate: u32,
    /// Add a silent audio track when the composition has none.
    pub enforce_audio_track: bool,
    /// Where the MP4 goes.
    pub output: Destination,
    /// Also copy the chunk artifacts into this directory, with the
    /// `manifest.json` that `coordinator combine` reads.
    pub keep_chunks: Option<PathBuf>,
    /// Reuse cached chunks and outputs (when the coordinator has a cache).
    /// `false` renders everything again; what it renders is still recorded.
    pub use_cache: bool,
    /// Also make a presigned GET URL of a storage destination, valid this
    /// long.
    pub presign: Option<Duration>,
}

impl RenderRequest {
    /// A render of `composition` from `source` into `output`, split per
    /// `chunks`, with default encoding.
    pub fn new(
        source: RenderSource,
        composition: impl Into<String>,
        chunks: ChunkSpec,
        output: impl Into<Destination>,
    ) -> Self {
        RenderRequest {
            source,
            composition: composition.into(),
            props: Props::new(),
            chunks,
            frames: None,
            every_nth_frame: 1,
            video: VideoSettings::default(),
            audio_bitrate: combine::DEFAULT_AUDIO_BITRATE,
            enforce_audio_track: false,
            output: output.into(),
            keep_chunks: None,
            use_cache: true,
            presign: None,
        }
    }
}

/// What happens during a render, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RenderEvent {
    /// The composition was selected and the chunks planned.
    Planned {
        /// Composition metadata.
        composition: String,
        /// Frame size.
        width: u32,
        /// Frame size.
        height: u32,
        /// Output frame rate, e.g. `30000/1001`.
        fps: String,
        /// Output frames.
        frames: u64,
        /// Chunks.
        chunks: usize,
        /// Frames per chunk (the last may have fewer).
        frames_per_chunk: u64,
    },
    /// These chunks (or, with `output`, the whole output) were found in the
    /// cache, verified, and are not rendered again.
    CacheHit {
        /// The chunks.
        chunks: Vec<u32>,
        /// Whether the finished output itself came from the cache.
        output: bool,
    },
    /// Every chunk is done; combining started.
    Combining,
    /// The output is written.
    Done(RenderSummary),
    /// A chunk event from the scheduler (tagged with its own `event`).
    #[serde(untagged)]
    Chunk(ScheduleEvent),
}

/// The result of a finished render.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RenderSummary {
    /// The output: a local path or a storage URL.
    pub output: String,
    /// A presigned GET URL of the output, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presigned_url: Option<String>,
    /// Frames in the output.
    pub frames: u64,
    /// Output duration in seconds (exact fraction printed as a decimal).
    pub duration_seconds: f64,
    /// Chunks rendered.
    pub chunks: usize,
    /// Attempts per chunk, in chunk order.
    pub attempts: Vec<u32>,
    /// Failed attempts that were retried.
    pub retries: usize,
    /// Wall time of the whole render, in milliseconds.
    pub wall_ms: u64,
    /// Wall time of the combine step, in milliseconds.
    pub combine_ms: u64,
    /// Output size in bytes.
    pub bytes: u64,
    /// Chunks found in the cache instead of being rendered.
    pub cached_chunks: usize,
    /// Whether the whole output came from the cache.
    pub output_cached: bool,
}

/// Why a render failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// The request is wrong (unknown composition, bad props, bad range,
    /// invalid settings): fix the input.
    #[error("{0}")]
    BadInput(String),
    /// Chunks could not be rendered (every attempt listed).
    #[error(transparent)]
    Schedule(ScheduleError),
    /// Combining failed.
    #[error("combining chunks: {0}")]
    Combine(#[from] combine::CombineError),
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// No worker could answer.
    #[error("{0}")]
    Unavailable(String),
    /// Storage (the cache or the destination) failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The render was cancelled.
    #[error("render cancelled")]
    Cancelled,
}

impl RenderError {
    /// Whether the error is the caller's input (the CLI exits 2 for these).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, RenderError::BadInput(_))
            || matches!(self, RenderError::Schedule(ScheduleError::Invalid { .. }))
    }
}

impl From<ScheduleError> for RenderError {
    fn from(e: ScheduleError) -> Self {
        match e {
            ScheduleError::Cancelled => RenderError::Cancelled,
            other => RenderError::Schedule(other),
        }
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RenderError {
    let context = context.into();
    move |source| RenderError::Io { context, source }
}

/// Options of a [`Coordinator`].
#[derive(Debug, Clone, Default)]
pub struct CoordinatorOptions {
    /// Retry and stall policy.
    pub policy: SchedulePolicy,
    /// Bearer token for the workers.
    pub token: Option<String>,
    /// The render cache: a directory, `file://` URL or `s3://bucket/prefix/`
    /// holding bundles, chunks and outputs by content hash (see
    /// [`crate::cache`]). `None`: no cache, chunks go to a temporary
    /// directory.
    pub cache: Option<String>,
    /// A local cache is trimmed to this many bytes after each render
    /// (0: [`crate::cache::DEFAULT_LOCAL_CACHE_BYTES`]).
    pub cache_max_bytes: u64,
    /// S3 settings (endpoint, region, credentials, retries); the default
    /// reads the standard AWS environment.
    pub s3: S3Config,
}

enum PoolKind {
    Embedded {
        workers: Vec<WorkerInfo>,
        stop: CancellationToken,
        tasks: tokio::task::JoinSet<()>,
        _cache: tempfile::TempDir,
    },
    Remote(RemotePool),
}

/// The main routine: a worker pool and options. Cheap to keep around; one
/// coordinator runs any number of renders.
pub struct Coordinator {
    pool: PoolKind,
    options: CoordinatorOptions,
    cache: tokio::sync::OnceCell<Option<RenderCache>>,
    /// S3 clients, one per bucket, shared by the cache and every output.
    stores: Stores,
    last_trim: std::sync::Mutex<Option<Instant>>,
}

/// A local cache is trimmed at most this often.
const TRIM_INTERVAL: Duration = Duration::from_secs(60);

/// Workers an embedded pool starts unless told otherwise: one per core.
pub fn default_local_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Coordinator {
    /// Starts `n` workers in this process, each on its own loopback port with
    /// one slot, serving `worker`'s compositions; they stop with the
    /// coordinator.
    ///
    /// # Errors
    /// [`RenderError::Io`] or [`RenderError::Unavailable`] if a worker
    /// cannot start.
    pub async fn embedded(
        n: usize,
        worker: WorkerConfig,
        options: CoordinatorOptions,
    ) -> Result<Self, RenderError> {
        let cache = tempfile::Builder::new()
            .prefix("montage-workers-")
            .tempdir()
            .map_err(io("creating the local workers' cache directory"))?;
        let stop = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        let mut workers = Vec::new();
        for i in 0..n.max(1) {
            let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
            let mut config = ServeConfig::new(listen, cache.path().join(format!("worker-{i}")));
            config.slots = 1;
            config.token = options.token.clone();
            // Local workers reach the same buckets as the coordinator.
            config.s3 = options.s3.clone();
            let bound = chunk_worker::bind(config, worker.clone())
                .await
                .map_err(|e| RenderError::Unavailable(format!("starting local worker {i}: {e}")))?;
            workers.push(WorkerInfo {
                address: format!("http://{}", bound.local_addr()),
                slots: 1,
            });
            let stop = stop.clone();
            tasks.spawn(async move {
                if let Err(e) = bound.run(stop.cancelled_owned()).await {
                    tracing::error!(error = %e, "local worker stopped with an error");
                }
            });
        }
        Ok(Coordinator {
            pool: PoolKind::Embedded {
                workers,
                stop,
                tasks,
                _cache: cache,
            },
            cache: tokio::sync::OnceCell::new(),
            stores: Stores::new(options.s3.clone()),
            last_trim: std::sync::Mutex::new(None),
            options,
        })
    }

    /// A coordinator using remote workers.
    pub fn remote(pool: RemotePool, options: CoordinatorOptions) -> Self {
        Coordinator {
            pool: PoolKind::Remote(pool),
            cache: tokio::sync::OnceCell::new(),
            stores: Stores::new(options.s3.clone()),
            last_trim: std::sync::Mutex::new(None),
            options,
        }
    }

    /// Stops local workers (if any) and waits for them, and for cancelled
    /// uploads to be aborted.
    pub async fn shutdown(self) {
        self.stores.settle().await;
        if let PoolKind::Embedded {
            stop, mut tasks, ..
        } = self.pool
        {
            stop.cancel();
            while tasks.join_next().await.is_some() {}
        }
    }

    async fn workers(&self, stop: CancellationToken) -> watch::Receiver<Vec<WorkerInfo>> {
        match &self.pool {
            PoolKind::Embedded { workers, .. } => watch::channel(workers.clone()).1,
            PoolKind::Remote(pool) => pool.watch(stop).await,
        }
    }

    /// Resolves a composition's metadata by asking a worker (`Describe`), so
    /// compositions registered only in worker binaries work too.
    ///
    /// # Errors
    /// [`RenderError::BadInput`] for an unknown composition, bad props or a
    /// missing bundle; [`RenderError::Unavailable`] if no worker answers.
    pub async fn select_composition(
        &self,
        source: &RenderSource,
        id: &str,
        props: &Props,
    ) -> Result<CompositionMeta, RenderError> {
        let cache = self.cache().await?;
        let prepared = self.prepare_source(source, cache).await?;
        self.describe(&prepared.wire, id, props).await
    }

    async fn describe(
        &self,
        source: &pb::CompositionSource,
        id: &str,
        props: &Props,
    ) -> Result<CompositionMeta, RenderError> {
        let stop = CancellationToken::new();
        let workers = self.workers(stop.clone()).await.borrow().clone();
        stop.cancel();
        let request = pb::DescribeRequest {
            source: Some(source.clone()),
            composition_id: id.to_owned(),
            props_json: canonical_json(&serde_json::Value::Object(props.clone())),
        };
        let mut failures = Vec::new();
        for w in &workers {
            match describe_on(w, request.clone(), self.options.token.as_deref()).await {
                Ok(meta) => return Ok(meta),
                Err((FailureKind::Invalid, m)) => return Err(RenderError::BadInput(m)),
                Err((_, m)) => failures.push(format!("{}: {m}", w.address)),
            }
        }
        if failures.is_empty() {
            return Err(RenderError::Unavailable(
                "no workers available: the worker pool is empty".into(),
            ));
        }
        Err(RenderError::Unavailable(format!(
            "no worker could describe `{id}`:\n  {}",
            failures.join("\n  ")
        )))
    }

    /// The render cache, opened on first use.
    async fn cache(&self) -> Result<Option<&RenderCache>, RenderError> {
        let cell = self
            .cache
            .get_or_try_init(|| async {
                match &self.options.cache {
                    None => Ok(None),
                    Some(location) => RenderCache::open(location, &self.stores)
                        .await
                        .map(Some)
                        .map_err(|e| match e {
                            StorageError::InvalidLocation { .. }
                            | StorageError::InvalidConfig { .. } => {
                                RenderError::BadInput(format!("cache `{location}`: {e}"))
                            }
                            other => RenderError::Storage(other),
                        }),
                }
            })
            .await?;
        Ok(cell.as_ref())
    }

    /// What workers are told about the source, and what identifies its
    /// bytes in cache keys. A bundle is hashed as its deterministic archive
    /// when there is a cache, and shipped as that archive when remote
    /// workers share an S3 cache.
    async fn prepare_source(
        &self,
        source: &RenderSource,
        cache: Option<&RenderCache>,
    ) -> Result<PreparedSource, RenderError> {
        let path = match source {
            RenderSource::Registered => {
                return Ok(PreparedSource {
                    wire: (&SourceSpec::Registered).into(),
                    identity: SourceIdentity::Registered,
                });
            }
            RenderSource::Bundle(path) => path,
        };
        let abs = std::fs::canonicalize(path)
            .map_err(|e| RenderError::BadInput(format!("bundle {}: {e}", path.display())))?;
        if !abs.is_dir() {
            return Err(RenderError::BadInput(format!(
                "bundle {} is not a directory",
                path.display()
            )));
        }
        let by_path = (&SourceSpec::BundlePath(abs.clone())).into();
        let Some(cache) = cache else {
            return Ok(PreparedSource {
                wire: by_path,
                identity: SourceIdentity::Registered,
            });
        };
        let ship = matches!(self.pool, PoolKind::Remote(_)) && cache.local_root().is_none();
        let packed = tokio::task::spawn_blocking(move || -> Result<_, StorageError> {
            if ship {
                let dir = tempfile::tempdir().map_err(|source| StorageError::Io {
                    op: "create directory",
                    path: std::env::temp_dir(),
                    source,
                })?;
                let archive = storage::archive::pack_to_file(&abs, dir.path())?;
                Ok((archive.sha256, Some((dir, archive.path))))
            } else {
                Ok((storage::archive::pack(&abs, std::io::sink())?, None))
            }
        })
        .await
        .map_err(|e| RenderError::Unavailable(format!("packing the bundle: {e}")))?
        .map_err(|e| match e {
            StorageError::Pack { .. } => {
                RenderError::BadInput(format!("bundle {}: {e}", path.display()))
            }
            other => RenderError::Storage(other),
        })?;
        let (hash, archive) = packed;
        let wire = match archive {
            Some((_dir, file)) => {
                let url = cache.ship_bundle(&hash, &file).await?;
                pb::CompositionSource {
                    kind: Some(pb::composition_source::Kind::Bundle(pb::BundleRef {
                        location: url,
                        sha256: hash.to_hex(),
                    })),
                }
            }
            None => by_path,
        };
        Ok(PreparedSource {
            wire,
            identity: SourceIdentity::Bundle(hash),
        })
    }

    /// Starts a render. Events arrive on the handle; `cancel()` stops it.
    pub fn render(self: &Arc<Self>, request: RenderRequest) -> RenderHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let this = Arc::clone(self);
        let token = cancel.clone();
        let task = tokio::spawn(async move { this.run(request, tx, token).await });
        RenderHandle {
            events: rx,
            cancel,
            task,
        }
    }

    async fn run(
        &self,
        request: RenderRequest,
        events: mpsc::UnboundedSender<RenderEvent>,
        cancel: CancellationToken,
    ) -> Result<RenderSummary, RenderError> {
        let started = Instant::now();
        if request.presign.is_some() && !matches!(request.output, Destination::Storage(_)) {
            return Err(RenderError::BadInput(format!(
                "--presign needs an s3:// output, not {}",
                request.output
            )));
        }
        request
            .video
            .validate()
            .map_err(|e| RenderError::BadInput(format!("video settings: {e}")))?;
        let cache = until_cancelled(&cancel, self.cache()).await?;
        let source = until_cancelled(&cancel, self.prepare_source(&request.source, cache)).await?;
        let meta = until_cancelled(
            &cancel,
            self.describe(&source.wire, &request.composition, &request.props),
        )
        .await?;
        let plan = plan_for(&meta, &request)?;
        let _ = events.send(RenderEvent::Planned {
            composition: meta.id.clone(),
            width: meta.width,
            height: meta.height,
            fps: plan.output_fps().to_string(),
            frames: plan.output_frames(),
            chunks: plan.chunks().len(),
            frames_per_chunk: plan.frames_per_chunk(),
        });

        let work = WorkDir::create(&request.output)?;
        let template = pb::RenderChunkRequest {
            job_id: job_id(&request),
            chunk_index: 0,
            source: Some(source.wire.clone()),
            composition_id: request.composition.clone(),
            props_json: canonical_json(&serde_json::Value::Object(request.props.clone())),
            frames: None,
            composition_start: 0,
            every_nth_frame: request.every_nth_frame,
            video: Some((&request.video).into()),
            audio: Some(pb::AudioSettings {
                sample_rate: plan.sample_rate(),
                channels: 2,
                pcm_format: pb::PcmFormat::from(WirePcm::F32le) as i32,
            }),
            output: None,
        };
        let keys: Vec<ContentHash> = plan
            .chunks()
            .iter()
            .map(|c| chunk_key(&chunk_request(&template, c), &source.identity))
            .collect();
        let out_key = output_key(
            &keys,
            &OutputSettings {
                fps: plan.output_fps().to_string(),
                sample_rate: plan.sample_rate(),
                frames: plan.output_frames(),
                has_audio: meta.has_audio,
                audio_bitrate: request.audio_bitrate,
                enforce_audio_track: request.enforce_audio_track,
            },
        );
        let all_chunks: Vec<u32> = plan.chunks().iter().map(|c| c.index().0).collect();

        // The whole output, if it was made before.
        if let Some(cache) = cache.filter(|_| request.use_cache && request.keep_chunks.is_none())
            && let Some((record, key)) =
                cancellable(&cancel, lookup(cache.lookup_output(&out_key))).await?
        {
            let _ = events.send(RenderEvent::CacheHit {
                chunks: all_chunks.clone(),
                output: true,
            });
            let (output, presigned_url) = until_cancelled(
                &cancel,
                self.deliver_cached(cache, &key, &record, &request, work.path()),
            )
            .await?;
            let summary = RenderSummary {
                output,
                presigned_url,
                frames: record.frames,
                duration_seconds: seconds(&plan, record.frames),
                chunks: plan.chunks().len(),
                attempts: vec![0; plan.chunks().len()],
                retries: 0,
                wall_ms: started.elapsed().as_millis() as u64,
                combine_ms: 0,
                bytes: record.size,
                cached_chunks: plan.chunks().len(),
                output_cached: true,
            };
            let _ = events.send(RenderEvent::Done(summary.clone()));
            return Ok(summary);
        }

        // Chunks made before.
        let mut hits: HashMap<u32, CachedChunk> = HashMap::new();
        if let Some(cache) = cache.filter(|_| request.use_cache) {
            let lookups =
                plan.chunks().iter().zip(&keys).map(|(c, k)| async move {
                    (c.index().0, lookup(cache.lookup_chunk(k)).await)
                });
            let found = cancellable(&cancel, futures_util::future::join_all(lookups)).await?;
            hits.extend(found.into_iter().filter_map(|(i, hit)| Some((i, hit?))));
        }
        if !hits.is_empty() {
            let mut chunks: Vec<u32> = hits.keys().copied().collect();
            chunks.sort_unstable();
            let _ = events.send(RenderEvent::CacheHit {
                chunks,
                output: false,
            });
        }
        // Cached chunks stored in S3 download while the others render.
        let hit_downloads = {
            let mut set = tokio::task::JoinSet::new();
            for (&index, hit) in &hits {
                let (cache, hit, dir) = (cache.cloned(), hit.clone(), work.path().to_path_buf());
                let has_audio = meta.has_audio;
                set.spawn(async move {
                    let cache = cache.ok_or_else(|| {
                        RenderError::Unavailable("a cache hit without a cache".into())
                    })?;
                    cached_files(&cache, &hit, index, has_audio, &dir).await
                });
            }
            set
        };

        let misses: Vec<chunker::Chunk> = plan
            .chunks()
            .iter()
            .filter(|c| !hits.contains_key(&c.index().0))
            .copied()
            .collect();
        let embedded = matches!(self.pool, PoolKind::Embedded { .. });
        let mut targets = HashMap::new();
        for chunk in &misses {
            let index = chunk.index().0;
            let key = &keys[index as usize];
            let target = match cache {
                Some(cache) => match cache.local_root() {
                    Some(_) => {
                        let dir = PathBuf::from(cache.chunk_dir_url(key));
                        std::fs::create_dir_all(&dir)
                            .map_err(io(format!("creating {}", dir.display())))?;
                        if embedded {
                            ChunkTarget::SharedDir(dir)
                        } else {
                            ChunkTarget::Inline(dir)
                        }
                    }
                    None => ChunkTarget::Store {
                        store: Arc::clone(cache.store()),
                        prefix: cache.chunk_dir_key(key),
                        dir: work.path().to_path_buf(),
                    },
                },
                None if embedded => ChunkTarget::SharedDir(work.path().to_path_buf()),
                None => ChunkTarget::Inline(work.path().to_path_buf()),
            };
            targets.insert(index, target);
        }
        let runner = Arc::new(RecordingRunner {
            inner: GrpcRunner::new(template, targets, self.options.token.clone()),
            cache: cache.cloned(),
            keys: keys.clone(),
        });
        let stop_pool = cancel.child_token();
        let pool = self.workers(stop_pool.clone()).await;
        let (sched_tx, mut sched_rx) = mpsc::unbounded_channel();
        let forward = {
            let events = events.clone();
            tokio::spawn(async move {
                while let Some(e) = sched_rx.recv().await {
                    let _ = events.send(RenderEvent::Chunk(e));
                }
            })
        };
        let outcome = run_chunks(
            runner,
            &misses,
            pool,
            self.options.policy,
            sched_tx,
            cancel.clone(),
        )
        .await;
        stop_pool.cancel();
        let _ = forward.await;
        let outcome = outcome?;

        let mut files: HashMap<u32, ChunkFiles> = HashMap::new();
        let mut attempts: HashMap<u32, u32> = HashMap::new();
        for ((chunk, f), n) in misses.iter().zip(outcome.outputs).zip(outcome.attempts) {
            attempts.insert(chunk.index().0, n);
            files.insert(chunk.index().0, f);
        }
        let downloaded = cancellable(&cancel, hit_downloads.join_all()).await?;
        for f in downloaded {
            let f = f?;
            files.insert(f.chunk, f);
        }
        let files: Vec<ChunkFiles> = all_chunks
            .iter()
            .map(|i| {
                files
                    .remove(i)
                    .ok_or_else(|| RenderError::Unavailable(format!("chunk {i} has no artifacts")))
            })
            .collect::<Result<_, _>>()?;

        let _ = events.send(RenderEvent::Combining);
        let combine_started = Instant::now();
        let combined = match &request.output {
            Destination::File(path) => path.clone(),
            Destination::Storage(_) => work.path().join("output.mp4"),
        };
        let report = combine_files(&plan, &meta, &request, &files, &combined, &cancel).await?;
        let combine_ms = combine_started.elapsed().as_millis() as u64;
        if let Some(cache) = cache {
            // A failure to record is not a failed render.
            if let Err(e) = cancellable(
                &cancel,
                cache.record_output(&out_key, &combined, report.frames),
            )
            .await?
            {
                tracing::warn!(error = %e, "could not store the output in the cache");
            }
        }
        let (output, presigned_url) =
            until_cancelled(&cancel, self.deliver(&request, &combined)).await?;
        drop(work);
        if let Some(cache) = cache
            && self.trim_due()
        {
            let max = match self.options.cache_max_bytes {
                0 => crate::cache::DEFAULT_LOCAL_CACHE_BYTES,
                n => n,
            };
            cache.trim(max).await;
        }

        let summary = RenderSummary {
            output,
            presigned_url,
            frames: report.frames,
            duration_seconds: seconds(&plan, report.frames),
            chunks: plan.chunks().len(),
            attempts: all_chunks
                .iter()
                .map(|i| attempts.get(i).copied().unwrap_or(0))
                .collect(),
            retries: outcome.failures.len(),
            wall_ms: started.elapsed().as_millis() as u64,
            combine_ms,
            bytes: report.bytes,
            cached_chunks: hits.len(),
            output_cached: false,
        };
        let _ = events.send(RenderEvent::Done(summary.clone()));
        Ok(summary)
    }

    /// Whether the local cache is due a trim: at most once a minute, so a
    /// batch of many short renders does not walk the cache after each.
    fn trim_due(&self) -> bool {
        let Ok(mut last) = self.last_trim.lock() else {
            return false;
        };
        let due = last.is_none_or(|t| t.elapsed() >= TRIM_INTERVAL);
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    /// Uploads a finished local MP4 to a storage destination (a file
    /// destination is written already). Returns the output's URL or path,
    /// and a presigned URL when asked for.
    async fn deliver(
        &self,
        request: &RenderRequest,
        file: &Path,
    ) -> Result<(String, Option<String>), RenderError> {
        let location = match &request.output {
            Destination::File(path) => return Ok((path.display().to_string(), None)),
            Destination::Storage(location) => location,
        };
        let store = self.stores.open(location).await?;
        let hash = ContentHash::of_file(file).await?;
        let key = if location.is_prefix() {
            storage::content_key(location.key(), &hash, "mp4")
        } else {
            location.key().to_owned()
        };
        // The same bytes under the same key (a re-run): nothing to upload.
        let present = store
            .head(&key)
            .await?
            .is_some_and(|m| m.sha256 == Some(hash));
        if !present {
            store.put_file(&key, file).await?;
        }
        let presigned = match request.presign {
            Some(ttl) => Some(store.presign_get(&key, ttl).await?),
            None => None,
        };
        Ok((store.url(&key), presigned))
    }

    /// Delivers an output found in the cache.
    async fn deliver_cached(
        &self,
        cache: &RenderCache,
        key: &str,
        record: &crate::cache::OutputRecord,
        request: &RenderRequest,
        work: &Path,
    ) -> Result<(String, Option<String>), RenderError> {
        let hash: ContentHash = record.sha256.parse()?;
        let local = match (&request.output, cache.local_path(key)) {
            // A local cache and a local file: copy.
            (Destination::File(path), Some(cached)) => {
                copy_atomically(&cached, path).await?;
                path.clone()
            }
            // A remote cache: download, verified.
            (Destination::File(path), None) => {
                cache.store().get_file(key, path, Some(&hash)).await?;
                path.clone()
            }
            (Destination::Storage(_), Some(cached)) => cached,
            (Destination::Storage(_), None) => {
                let tmp = work.join("output.mp4");
                cache.store().get_file(key, &tmp, Some(&hash)).await?;
                tmp
            }
        };
        self.deliver(request, &local).await
    }
}

/// Where a render's source comes from, as workers are told.
struct PreparedSource {
    wire: pb::CompositionSource,
    identity: SourceIdentity,
}

/// Runs a future unless the render is cancelled first.
async fn cancellable<T>(
    cancel: &CancellationToken,
    fut: impl Future<Output = T>,
) -> Result<T, RenderError> {
    tokio::select! {
        r = fut => Ok(r),
        _ = cancel.cancelled() => Err(RenderError::Cancelled),
    }
}

/// Runs a fallible future unless the render is cancelled first.
async fn until_cancelled<T, E>(
    cancel: &CancellationToken,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, RenderError>
where
    RenderError: From<E>,
{
    cancellable(cancel, fut).await?.map_err(RenderError::from)
}

/// A cache lookup whose storage failure is reported but does not fail the
/// render: the chunk is rendered again instead.
async fn lookup<T>(fut: impl Future<Output = Result<Option<T>, StorageError>>) -> Option<T> {
    fut.await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cache lookup failed: rendering instead");
        None
    })
}

fn seconds(plan: &Plan, frames: u64) -> f64 {
    let fps = plan.output_fps();
    frames as f64 * f64::from(fps.den()) / f64::from(fps.num())
}

/// Copies `from` to `to` through a temporary file beside `to`.
async fn copy_atomically(from: &Path, to: &Path) -> Result<(), RenderError> {
    let parent = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".montage-out-")
        .tempfile_in(parent)
        .map_err(io(format!("creating a file in {}", parent.display())))?
        .into_temp_path();
    tokio::fs::copy(from, &tmp).await.map_err(io(format!(
        "copying {} to {}",
        from.display(),
        tmp.display()
    )))?;
    tmp.persist(to).map_err(|e| RenderError::Io {
        context: format!("writing {}", to.display()),
        source: e.error,
    })?;
    Ok(())
}

/// A cached chunk's files on this machine: in place for a local cache,
/// downloaded (and verified) into `dir` for a remote one.
async fn cached_files(
    cache: &RenderCache,
    hit: &CachedChunk,
    index: u32,
    has_audio: bool,
    dir: &Path,
) -> Result<ChunkFiles, RenderError> {
    let mut video = None;
    let mut audio = None;
    for a in &hit.record.artifacts {
        let key = cache.artifact_key(hit, &a.name);
        let path = match cache.local_path(&key) {
            Some(p) => p,
            None => {
                let dest = dir.join(format!("cached-{index:06}-{}", a.name));
                let hash: ContentHash = a.sha256.parse()?;
                cache.store().get_file(&key, &dest, Some(&hash)).await?;
                dest
            }
        };
        let file = LocalArtifact {
            path,
            sha256: a.sha256.clone(),
            size: a.size,
        };
        match a.kind.as_str() {
            "video_ts" => video = Some(file),
            "audio_pcm" => audio = Some(file),
            _ => {}
        }
    }
    let video = video.ok_or_else(|| {
        RenderError::Unavailable(format!("cached chunk {} has no video", hit.dir_key))
    })?;
    if has_audio && audio.is_none() {
        return Err(RenderError::Unavailable(format!(
            "cached chunk {} has no audio",
            hit.dir_key
        )));
    }
    Ok(ChunkFiles {
        chunk: index,
        video,
        audio,
        pcm_format: pb::PcmFormat::F32le,
        frame_count: hit.record.frame_count,
        sample_count: hit.record.sample_count,
        timings: pb::StageTimings::default(),
    })
}

/// The gRPC runner, recording every finished chunk in the cache at once, so
/// a render killed later keeps what it finished.
struct RecordingRunner {
    inner: GrpcRunner,
    cache: Option<RenderCache>,
    keys: Vec<ContentHash>,
}

impl ChunkRunner for RecordingRunner {
    type Output = ChunkFiles;

    fn run(
        &self,
        worker: &WorkerInfo,
        chunk: chunker::Chunk,
        attempt: u32,
        progress: mpsc::Sender<ChunkProgress>,
        cancel: CancellationToken,
    ) -> AttemptFuture<ChunkFiles> {
        let attempt = self.inner.run(worker, chunk, attempt, progress, cancel);
        let cache = self.cache.clone();
        let key = self.keys.get(chunk.index().0 as usize).copied();
        Box::pin(async move {
            let files = attempt.await?;
            if let (Some(cache), Some(key)) = (cache, key) {
                let record = chunk_record(&key, &files);
                if let Err(e) = cache.record_chunk(&key, &record).await {
                    tracing::warn!(chunk = files.chunk, error = %e, "could not record the chunk in the cache");
                }
            }
            Ok(files)
        })
    }
}

fn chunk_record(key: &ContentHash, files: &ChunkFiles) -> ChunkRecord {
    let artifact = |kind: &str, a: &LocalArtifact| ArtifactRecord {
        kind: kind.to_owned(),
        name: a
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sha256: a.sha256.clone(),
        size: a.size,
    };
    let mut artifacts = vec![artifact("video_ts", &files.video)];
    if let Some(a) = &files.audio {
        artifacts.push(artifact("audio_pcm", a));
    }
    ChunkRecord {
        format: 1,
        key: key.to_hex(),
        frame_count: files.frame_count,
        sample_count: files.sample_count,
        artifacts,
    }
}

async fn combine_files(
    plan: &Plan,
    meta: &CompositionMeta,
    request: &RenderRequest,
    files: &[ChunkFiles],
    output: &Path,
    cancel: &CancellationToken,
) -> Result<combine::CombineReport, RenderError> {
    let artifacts: Vec<ChunkArtifact> = plan
        .chunks()
        .iter()
        .zip(files)
        .map(|(chunk, f)| {
            let a = ChunkArtifact::new(*chunk, f.video.path.clone());
            match (&f.audio, meta.has_audio) {
                (Some(pcm), true) => {
                    a.with_audio(PcmAudio::new(pcm.path.clone(), combine::PcmFormat::F32Le))
                }
                _ => a,
            }
        })
        .collect();
    if let Some(dir) = &request.keep_chunks {
        keep_chunks(dir, plan, &artifacts)?;
    }
    let flag = Arc::new(AtomicBool::new(false));
    let options = CombineOptions::new(plan.fps())
        .with_audio_bitrate(request.audio_bitrate)
        .with_enforce_audio_track(request.enforce_audio_track)
        .with_expected_frames(plan.output_frames())
        .with_cancel(Arc::clone(&flag));
    let output = output.to_path_buf();
    let mut job =
        tokio::task::spawn_blocking(move || combine::combine_chunks(&artifacts, &options, output));
    let report = tokio::select! {
        r = &mut job => r,
        _ = cancel.cancelled() => {
            flag.store(true, Ordering::Relaxed);
            let _ = job.await;
            return Err(RenderError::Cancelled);
        }
    };
    match report {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(combine::CombineError::Cancelled)) => Err(RenderError::Cancelled),
        Ok(Err(e)) => Err(RenderError::Combine(e)),
        Err(join) => Err(RenderError::Unavailable(format!(
            "the combine step panicked: {join}"
        ))),
    }
}

/// Copies the chunks into `dir` as `chunk-NNNNNN.ts`/`.pcm` with the
/// `manifest.json` that `coordinator combine` reads.
fn keep_chunks(dir: &Path, plan: &Plan, artifacts: &[ChunkArtifact]) -> Result<(), RenderError> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    // Absolute, so the manifest's paths work from any directory.
    let dir = std::fs::canonicalize(dir).map_err(io(format!("resolving {}", dir.display())))?;
    let mut kept = Vec::with_capacity(artifacts.len());
    for (chunk, a) in plan.chunks().iter().zip(artifacts) {
        let (video, pcm) = artifact_paths(&dir, chunk.index().0);
        let copy = |from: &Path, to: &Path| {
            std::fs::copy(from, to).map(|_| ()).map_err(io(format!(
                "copying {} to {}",
                from.display(),
                to.display()
            )))
        };
        copy(&a.video, &video)?;
        let mut k = ChunkArtifact::new(*chunk, video);
        if let Some(audio) = &a.audio {
            copy(&audio.path, &pcm)?;
            k = k.with_audio(PcmAudio::new(pcm, audio.format));
        }
        kept.push(k);
    }
    let manifest = combine::Manifest {
        fps: plan.fps(),
        sample_rate: plan.sample_rate(),
        output_frames: Some(plan.output_frames()),
        chunks: kept,
    };
    let path = dir.join("manifest.json");
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| RenderError::Unavailable(format!("writing {}: {e}", path.display())))?;
    std::fs::write(&path, text).map_err(io(format!("writing {}", path.display())))?;
    Ok(())
}

fn plan_for(meta: &CompositionMeta, request: &RenderRequest) -> Result<Plan, RenderError> {
    let mut p = PlanRequest::new(meta.duration_frames, meta.fps, request.chunks)
        .with_every_nth_frame(request.every_nth_frame);
    if let Some(r) = &request.frames {
        p = p.with_frame_range(r.clone());
    }
    chunker::plan(&p).map_err(|e| RenderError::BadInput(e.to_string()))
}

fn job_id(request: &RenderRequest) -> String {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    format!("{}-{stamp}-{}", request.composition, std::process::id())
}

async fn describe_on(
    worker: &WorkerInfo,
    request: pb::DescribeRequest,
    token: Option<&str>,
) -> Result<CompositionMeta, (FailureKind, String)> {
    let endpoint = tonic::transport::Endpoint::from_shared(worker.address.clone())
        .map_err(|e| {
            (
                FailureKind::Invalid,
                format!("worker address `{}`: {e}", worker.address),
            )
        })?
        .connect_timeout(crate::grpc::CONNECT_TIMEOUT);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| (FailureKind::Transient, format!("connecting: {e}")))?;
    let mut client = ChunkWorkerClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut req = tonic::Request::new(request);
    authorize(&mut req, token).map_err(|m| (FailureKind::Invalid, m))?;
    let response = client
        .describe(req)
        .await
        .map_err(|s| {
            // When selecting, a missing bundle or composition is the
            // caller's input too.
            let kind = match s.code() {
                tonic::Code::NotFound => FailureKind::Invalid,
                _ => classify(&s),
            };
            (kind, s.message().to_owned())
        })?
        .into_inner();
    let meta = response.meta.ok_or((
        FailureKind::Transient,
        "the worker's answer has no metadata".to_owned(),
    ))?;
    CompositionMeta::try_from(meta).map_err(|e| (FailureKind::Transient, e.to_string()))
}

/// A running render.
pub struct RenderHandle {
    events: mpsc::UnboundedReceiver<RenderEvent>,
    cancel: CancellationToken,
    task: JoinHandle<Result<RenderSummary, RenderError>>,
}

impl RenderHandle {
    /// The next event, or `None` once the render has ended.
    pub async fn next_event(&mut self) -> Option<RenderEvent> {
        self.events.recv().await
    }

    /// Stops the render: every chunk call is cancelled, temporary files are
    /// removed and no output file appears.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// A token that cancels the render when cancelled (for signal handlers).
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Waits for the result.
    ///
    /// # Errors
    /// The render's [`RenderError`].
    pub async fn finish(self) -> Result<RenderSummary, RenderError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(RenderError::Unavailable(format!(
                "the render task failed: {e}"
            ))),
        }
    }
}

/// A temporary directory for one render (chunks without a local cache,
/// downloads, an output on its way to storage): beside a local output so
/// renames stay on one file system, else in the system's temporary
/// directory. Removed when dropped.
struct WorkDir {
    dir: tempfile::TempDir,
}

impl WorkDir {
    fn create(output: &Destination) -> Result<Self, RenderError> {
        let parent = match output {
            Destination::File(path) => path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
            Destination::Storage(_) => std::env::temp_dir(),
        };
        let dir = tempfile::Builder::new()
            .prefix(".montage-work-")
            .tempdir_in(&parent)
            .map_err(io(format!(
                "creating a work directory in {}",
                parent.display()
            )))?;
        Ok(WorkDir { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}
