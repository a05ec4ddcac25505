//! The render entry point: select, plan, fan out, combine.

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

use crate::grpc::{ChunkFiles, GrpcRunner, MAX_MESSAGE_BYTES, authorize, classify};
use crate::pool::RemotePool;
use crate::schedule::{
    FailureKind, ScheduleError, ScheduleEvent, SchedulePolicy, WorkerInfo, run_chunks,
};

/// Where a render's composition comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderSource {
    /// A scene bundle directory. Workers must see the same path (local
    /// workers do); bundles shipped through storage come with the storage
    /// issue.
    Bundle(PathBuf),
    /// A Rust composition registered in the workers' binaries.
    Registered,
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
    /// The MP4 to write.
    pub output: PathBuf,
    /// Keep the chunk artifacts in this directory instead of a temporary one.
    pub keep_chunks: Option<PathBuf>,
}

impl RenderRequest {
    /// A render of `composition` from `source` into `output`, split per
    /// `chunks`, with default encoding.
    pub fn new(
        source: RenderSource,
        composition: impl Into<String>,
        chunks: ChunkSpec,
        output: impl Into<PathBuf>,
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
    /// The output file.
    pub output: PathBuf,
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
}

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
            options,
        })
    }

    /// A coordinator using remote workers.
    pub fn remote(pool: RemotePool, options: CoordinatorOptions) -> Self {
        Coordinator {
            pool: PoolKind::Remote(pool),
            options,
        }
    }

    /// Stops local workers (if any) and waits for them.
    pub async fn shutdown(self) {
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
        let stop = CancellationToken::new();
        let workers = self.workers(stop.clone()).await.borrow().clone();
        stop.cancel();
        let request = pb::DescribeRequest {
            source: Some(wire_source(source)?),
            composition_id: id.to_owned(),
            props_json: serde_json::Value::Object(props.clone()).to_string(),
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
        let meta = tokio::select! {
            m = self.select_composition(&request.source, &request.composition, &request.props) => m?,
            _ = cancel.cancelled() => return Err(RenderError::Cancelled),
        };
        let plan = plan_for(&meta, &request)?;
        request
            .video
            .validate()
            .map_err(|e| RenderError::BadInput(format!("video settings: {e}")))?;
        let _ = events.send(RenderEvent::Planned {
            composition: meta.id.clone(),
            width: meta.width,
            height: meta.height,
            fps: plan.output_fps().to_string(),
            frames: plan.output_frames(),
            chunks: plan.chunks().len(),
            frames_per_chunk: plan.frames_per_chunk(),
        });

        let work = WorkDir::create(&request)?;
        let template = pb::RenderChunkRequest {
            job_id: job_id(&request),
            chunk_index: 0,
            source: Some(wire_source(&request.source)?),
            composition_id: request.composition.clone(),
            props_json: serde_json::Value::Object(request.props.clone()).to_string(),
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
        let runner = GrpcRunner::new(
            template,
            work.path().to_path_buf(),
            self.options.token.clone(),
        );
        // Local workers write into the work directory; remote ones stream.
        let runner = Arc::new(match self.pool {
            PoolKind::Embedded { .. } => runner.with_shared_dir(),
            PoolKind::Remote(_) => runner,
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
            plan.chunks(),
            pool,
            self.options.policy,
            sched_tx,
            cancel.clone(),
        )
        .await;
        stop_pool.cancel();
        let _ = forward.await;
        let outcome = outcome?;

        let _ = events.send(RenderEvent::Combining);
        let combine_started = Instant::now();
        let report = combine_files(&plan, &meta, &request, &outcome.outputs, &cancel).await?;
        let combine_ms = combine_started.elapsed().as_millis() as u64;
        drop(work);

        let fps = plan.output_fps();
        let summary = RenderSummary {
            output: request.output.clone(),
            frames: report.frames,
            duration_seconds: report.frames as f64 * f64::from(fps.den()) / f64::from(fps.num()),
            chunks: plan.chunks().len(),
            attempts: outcome.attempts,
            retries: outcome.failures.len(),
            wall_ms: started.elapsed().as_millis() as u64,
            combine_ms,
            bytes: report.bytes,
        };
        let _ = events.send(RenderEvent::Done(summary.clone()));
        Ok(summary)
    }
}

async fn combine_files(
    plan: &Plan,
    meta: &CompositionMeta,
    request: &RenderRequest,
    files: &[ChunkFiles],
    cancel: &CancellationToken,
) -> Result<combine::CombineReport, RenderError> {
    let artifacts: Vec<ChunkArtifact> = plan
        .chunks()
        .iter()
        .zip(files)
        .map(|(chunk, f)| {
            let a = ChunkArtifact::new(*chunk, f.video.clone());
            match (&f.audio, meta.has_audio) {
                (Some(pcm), true) => {
                    a.with_audio(PcmAudio::new(pcm.clone(), combine::PcmFormat::F32Le))
                }
                _ => a,
            }
        })
        .collect();
    if let Some(dir) = &request.keep_chunks {
        // Kept chunks come with the manifest `coordinator combine` reads.
        let manifest = combine::Manifest {
            fps: plan.fps(),
            sample_rate: plan.sample_rate(),
            output_frames: Some(plan.output_frames()),
            chunks: artifacts.clone(),
        };
        let path = dir.join("manifest.json");
        let text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| RenderError::Unavailable(format!("writing {}: {e}", path.display())))?;
        std::fs::write(&path, text).map_err(io(format!("writing {}", path.display())))?;
    }
    let flag = Arc::new(AtomicBool::new(false));
    let options = CombineOptions::new(plan.fps())
        .with_audio_bitrate(request.audio_bitrate)
        .with_enforce_audio_track(request.enforce_audio_track)
        .with_expected_frames(plan.output_frames())
        .with_cancel(Arc::clone(&flag));
    let output = request.output.clone();
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

fn wire_source(source: &RenderSource) -> Result<pb::CompositionSource, RenderError> {
    let spec = match source {
        RenderSource::Registered => SourceSpec::Registered,
        RenderSource::Bundle(path) => {
            let abs = std::fs::canonicalize(path)
                .map_err(|e| RenderError::BadInput(format!("bundle {}: {e}", path.display())))?;
            if !abs.is_dir() {
                return Err(RenderError::BadInput(format!(
                    "bundle {} is not a directory",
                    path.display()
                )));
            }
            SourceSpec::BundlePath(abs)
        }
    };
    Ok((&spec).into())
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

/// The directory chunk artifacts land in: a temporary one beside the output
/// (removed afterwards) or the caller's `--keep-chunks` directory.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    fn create(request: &RenderRequest) -> Result<Self, RenderError> {
        if let Some(dir) = &request.keep_chunks {
            std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
            // Absolute, so the manifest's paths work from any directory.
            let path =
                std::fs::canonicalize(dir).map_err(io(format!("resolving {}", dir.display())))?;
            return Ok(WorkDir { path, keep: true });
        }
        let parent = request
            .output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = tempfile::Builder::new()
            .prefix(".montage-chunks-")
            .tempdir_in(parent)
            .map_err(io(format!(
                "creating a work directory in {}",
                parent.display()
            )))?;
        Ok(WorkDir {
            path: dir.keep(),
            keep: false,
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
