//! The gRPC service: a thin layer over [`crate::render_chunk`].
//!
//! Each `RenderChunk` call takes a slot (a [`Semaphore`] permit; none free →
//! `RESOURCE_EXHAUSTED`), fetches a `BundleRef` source into the bundle cache
//! if needed, runs the pipeline on a blocking thread, then delivers: inline
//! artifact pieces of at most [`INLINE_PIECE_BYTES`], or an upload under an
//! `s3://` prefix, or nothing more for a local directory. Progress is
//! streamed every [`PROGRESS_INTERVAL`] throughout (fetch, render and
//! upload), then exactly one result. A failed send means the client left:
//! the chunk is cancelled (a download or upload in progress is aborted) and
//! its files removed.
//!
//! Shutdown (mini-redis style): stop taking chunks (`UNAVAILABLE`, health
//! `NOT_SERVING`), wait for in-flight chunks up to the grace period, cancel
//! the rest, then stop the server.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;

use montage_proto::convert::{Described, WireChunkRequest};
use montage_proto::v1 as pb;
use pb::chunk_worker_server::{ChunkWorker, ChunkWorkerServer};
use spec::{
    ArtifactKind, ArtifactTarget, ChunkEvent, ChunkProgress, ChunkReport, ChunkRequest,
    DeliveredArtifact, DescribeRequest, SourceSpec,
};
use storage::{CachedBundle, Location, S3Config};

use crate::pipeline::{ArtifactFile, ChunkResult};
use crate::stores::{Bundles, DEFAULT_BUNDLE_CACHE_BYTES};
use crate::{WorkerConfig, WorkerError, render_chunk, to_status};
use storage::Stores;

/// How often progress is streamed while a chunk renders (the contract asks
/// for at least every 250 ms).
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// The largest inline `ArtifactData` piece (the contract's 1 MiB bound).
pub const INLINE_PIECE_BYTES: usize = 1 << 20;

/// Events buffered per call before the sender waits for the client.
const EVENT_QUEUE_DEPTH: usize = 8;

/// Once the grace period is over and chunks are cancelled, how long to wait
/// for them to clean up before stopping anyway.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// The fully qualified gRPC service name, as health checks ask for it.
const SERVICE_NAME: &str = "montage.render.v1.ChunkWorker";

/// How a worker process serves.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Chunks rendered at once; more requests get `RESOURCE_EXHAUSTED`.
    pub slots: usize,
    /// The worker's disk: inline and uploaded artifacts are rendered under
    /// `cache_dir/inflight/` and removed once delivered; fetched bundles are
    /// unpacked under `cache_dir/bundles/<sha256>/`.
    pub cache_dir: PathBuf,
    /// Shared secret: when set, calls must carry
    /// `authorization: Bearer <token>` or get `UNAUTHENTICATED`.
    pub token: Option<String>,
    /// How long in-flight chunks may run on after SIGTERM before they are
    /// cancelled.
    pub grace: Duration,
    /// The most bytes of unpacked bundles kept under `cache_dir/bundles/`
    /// (least recently used evicted first; a bundle in use is never
    /// evicted).
    pub bundle_cache_bytes: u64,
    /// How to reach S3 for `s3://` bundles and artifact prefixes. The
    /// default takes everything from the standard AWS environment
    /// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, …).
    pub s3: S3Config,
}

impl ServeConfig {
    /// One slot, no token, a 30 s grace period, a
    /// [`DEFAULT_BUNDLE_CACHE_BYTES`] bundle cache, S3 from the AWS
    /// environment.
    pub fn new(listen: SocketAddr, cache_dir: PathBuf) -> Self {
        ServeConfig {
            listen,
            slots: 1,
            cache_dir,
            token: None,
            grace: Duration::from_secs(30),
            bundle_cache_bytes: DEFAULT_BUNDLE_CACHE_BYTES,
            s3: S3Config::default(),
        }
    }
}

struct Inner {
    worker: WorkerConfig,
    slots: Arc<Semaphore>,
    slot_count: usize,
    inflight_dir: PathBuf,
    /// Fetched bundles, and the stores they and uploads go through.
    bundles: Bundles,
    draining: AtomicBool,
    /// Cancels every in-flight chunk (after the grace period).
    cancel_all: CancellationToken,
    tracker: TaskTracker,
    next_id: AtomicU64,
}

#[derive(Clone)]
struct Service {
    inner: Arc<Inner>,
}

/// A worker bound to its address, ready to [`BoundWorker::run`].
pub struct BoundWorker {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    config: ServeConfig,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BoundWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundWorker")
            .field("addr", &self.addr)
            .field("config", &self.config)
            .finish()
    }
}

/// Binds the listen address and prepares the cache directory. This is how an
/// embedding service runs a worker with its own Rust compositions:
///
/// ```no_run
/// use chunk_worker::{ServeConfig, WorkerConfig};
/// use composition::{builtin::TestPattern, Registry};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut registry = Registry::new();
/// registry.register(TestPattern::new())?; // or your own `impl Composition`
/// let mut config = ServeConfig::new("127.0.0.1:0".parse()?, "/var/cache/montage".into());
/// config.slots = 2;
/// let worker = chunk_worker::bind(config, WorkerConfig::new(registry)).await?;
/// println!("listening on {}", worker.local_addr());
/// worker.run(chunk_worker::shutdown_signal()).await?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`WorkerError::Server`] if the address cannot be bound,
/// [`WorkerError::Io`] or [`WorkerError::Storage`] if the cache directory
/// cannot be created, [`WorkerError::Field`] for zero slots.
pub async fn bind(config: ServeConfig, worker: WorkerConfig) -> Result<BoundWorker, WorkerError> {
    if config.slots == 0 {
        return Err(
            spec::FieldError::new("slots", "0 is invalid: a worker needs at least 1 slot").into(),
        );
    }
    crate::encode::init()?;
    // Fails here, at start-up, rather than on the first chunk.
    crate::renderer_version()?;
    let inflight_dir = config.cache_dir.join("inflight");
    // Leftovers of a crashed process: nothing there is ever reused.
    let _ = tokio::fs::remove_dir_all(&inflight_dir).await;
    tokio::fs::create_dir_all(&inflight_dir)
        .await
        .map_err(|e| WorkerError::io(&inflight_dir, e))?;
    let stores = Arc::new(Stores::new(config.s3.clone()));
    let bundles = Bundles::open(
        config.cache_dir.join("bundles"),
        config.bundle_cache_bytes,
        stores,
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| WorkerError::Server {
            addr: config.listen.to_string(),
            message: e.to_string(),
        })?;
    let addr = listener.local_addr().map_err(|e| WorkerError::Server {
        addr: config.listen.to_string(),
        message: e.to_string(),
    })?;
    let inner = Arc::new(Inner {
        worker,
        slots: Arc::new(Semaphore::new(config.slots)),
        slot_count: config.slots,
        inflight_dir,
        bundles,
        draining: AtomicBool::new(false),
        cancel_all: CancellationToken::new(),
        tracker: TaskTracker::new(),
        next_id: AtomicU64::new(0),
    });
    Ok(BoundWorker {
        listener,
        addr,
        config,
        inner,
    })
}

/// Binds and serves until SIGTERM or SIGINT, then drains (see
/// [`BoundWorker::run`]).
///
/// # Errors
/// As [`bind`] and [`BoundWorker::run`].
pub async fn serve(config: ServeConfig, worker: WorkerConfig) -> Result<(), WorkerError> {
    bind(config, worker).await?.run(shutdown_signal()).await
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn check_token(expected: &str, req: &Request<()>) -> Result<(), WorkerError> {
    let given = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(given) = given else {
        return Err(WorkerError::Unauthenticated {
            reason: "missing `authorization: Bearer <token>` metadata",
        });
    };
    // Constant time over the longer length, so timing says nothing about
    // how much of the token matched.
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    if diff != 0 {
        return Err(WorkerError::Unauthenticated {
            reason: "wrong bearer token",
        });
    }
    Ok(())
}

impl BoundWorker {
    /// The address actually bound (the port chosen for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves, then drains: new chunks get
    /// `UNAVAILABLE` and health says `NOT_SERVING`; in-flight chunks get the
    /// grace period to finish, then are cancelled; then the server stops.
    ///
    /// # Errors
    /// [`WorkerError::Server`] if the transport fails.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), WorkerError> {
        let BoundWorker {
            listener,
            addr,
            config,
            inner,
        } = self;
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status(SERVICE_NAME, ServingStatus::Serving)
            .await;
        health.set_service_status("", ServingStatus::Serving).await;

        let service = Service {
            inner: inner.clone(),
        };
        let token = config.token.clone();
        let svc = ChunkWorkerServer::with_interceptor(service, move |req: Request<()>| {
            if let Some(t) = &token {
                check_token(t, &req).map_err(|e| to_status(&e))?;
            }
            Ok(req)
        });
        let stop_server = CancellationToken::new();
        let stopped = stop_server.clone();
        // tonic ignores its own `tcp_nodelay` for a listener of ours. Without
        // it, a chunk's result (a DATA frame, then the trailers) waited for
        // the client's delayed ACK: 40 ms of idle per chunk (Nagle).
        let incoming = tokio_stream::StreamExt::map(TcpListenerStream::new(listener), |conn| {
            conn.inspect(|stream| {
                let _ = stream.set_nodelay(true);
            })
        });
        let mut server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health_service)
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async move { stopped.cancelled().await }),
        );
        tracing::info!(%addr, slots = config.slots, "worker serving");
        tokio::select! {
            _ = shutdown => {}
            r = &mut server => {
                return match r {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(WorkerError::Server { addr: addr.to_string(), message: e.to_string() }),
                    Err(e) => Err(WorkerError::Server { addr: addr.to_string(), message: e.to_string() }),
                };
            }
        }

        inner.draining.store(true, Ordering::SeqCst);
        health
            .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
            .await;
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        let in_flight = config.slots - inner.slots.available_permits();
        tracing::info!(in_flight, grace_s = config.grace.as_secs_f64(), "draining");
        inner.tracker.close();
        if tokio::time::timeout(config.grace, inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over: cancelling in-flight chunks");
            inner.cancel_all.cancel();
            if tokio::time::timeout(CANCEL_WAIT, inner.tracker.wait())
                .await
                .is_err()
            {
                tracing::error!("chunks did not stop after cancellation; exiting anyway");
            }
        }
        // Cancelled uploads abort their multipart uploads in the background.
        inner.bundles.stores().settle().await;
        stop_server.cancel();
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "server stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "server task failed"),
        }
        let _ = tokio::fs::remove_dir_all(&inner.inflight_dir).await;
        tracing::info!("worker stopped");
        Ok(())
    }
}

type EventResult = Result<pb::RenderChunkEvent, Status>;

/// A chunk's event stream as sent to the client. It holds a tracker token
/// until the last event has been handed to the transport (or the client has
/// left): the rendering task can finish with events still queued, and a
/// draining worker must not exit before they are delivered.
pub(crate) struct ChunkEvents {
    events: ReceiverStream<EventResult>,
    _delivering: tokio_util::task::task_tracker::TaskTrackerToken,
}

impl tokio_stream::Stream for ChunkEvents {
    type Item = EventResult;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.events).poll_next(cx)
    }
}

fn progress_event(p: ChunkProgress) -> pb::RenderChunkEvent {
    ChunkEvent::Progress(p).into()
}

/// Refuses a `BundleRef` on a worker that cannot open scene bundles, before
/// anything is downloaded.
fn can_open(worker: &WorkerConfig, source: &SourceSpec) -> Result<(), WorkerError> {
    match source {
        SourceSpec::BundleRef(_) if worker.bundle_opener.is_none() => {
            Err(WorkerError::Unsupported {
                field: "source.bundle",
                message: "this worker has no scene bundle loader configured; use a registered composition".into(),
            })
        }
        _ => Ok(()),
    }
}

/// Runs `work` while sending the progress in `state` every
/// [`PROGRESS_INTERVAL`] (the coordinator counts silence towards its stall
/// timeout, also while a bundle downloads or artifacts upload). Returns
/// `None`, dropping `work` (which aborts a download or an upload), when the
/// client leaves or `cancel` fires.
async fn report_while<T>(
    work: impl Future<Output = T>,
    state: &Mutex<ChunkProgress>,
    tx: &mpsc::Sender<EventResult>,
    cancel: &CancellationToken,
) -> Option<T> {
    tokio::pin!(work);
    let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
    loop {
        tokio::select! {
            r = &mut work => return Some(r),
            _ = ticker.tick() => {
                let p = state.lock().map(|s| *s).unwrap_or_default();
                if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(Ok(progress_event(p))) {
                    cancel.cancel();
                    return None;
                }
            }
            _ = tx.closed() => {
                cancel.cancel();
                return None;
            }
            _ = cancel.cancelled() => return None,
        }
    }
}

/// Where a chunk's artifacts were delivered.
enum Delivered {
    /// Streamed in the call: the result's locations are empty.
    Inline,
    /// Left in the request's local directory: the locations are the paths.
    Directory,
    /// Uploaded: the objects' URLs (video, audio).
    Uploaded(String, String),
}

/// The chunk's report as the client gets it.
fn report(r: &ChunkResult, delivered: &Delivered) -> ChunkReport {
    let artifact = |kind: ArtifactKind, f: &ArtifactFile| DeliveredArtifact {
        kind,
        location: match (delivered, kind) {
            (Delivered::Inline, _) => None,
            (Delivered::Directory, _) => Some(f.path.to_string_lossy().into_owned()),
            (Delivered::Uploaded(video, _), ArtifactKind::VideoTs) => Some(video.clone()),
            (Delivered::Uploaded(_, audio), ArtifactKind::AudioPcm) => Some(audio.clone()),
        },
        sha256: f.sha256,
        size: f.size,
    };
    ChunkReport {
        chunk_index: r.chunk.index().0,
        frame_count: r.frame_count(),
        sample_count: r.sample_count(),
        pcm_format: r.pcm_format,
        artifacts: vec![
            artifact(ArtifactKind::VideoTs, &r.video),
            artifact(ArtifactKind::AudioPcm, &r.audio),
        ],
        timings: r.timings,
    }
}

impl Inner {
    /// Renders one chunk and streams its events; owns the slot until done.
    async fn run_chunk(
        self: Arc<Self>,
        mut request: ChunkRequest,
        permit: OwnedSemaphorePermit,
        tx: mpsc::Sender<EventResult>,
    ) {
        let _permit = permit;
        let started = Instant::now();
        let cancel = self.cancel_all.child_token();
        // Inline and uploaded artifacts are rendered into a private scratch
        // directory, removed whatever happens.
        let delivery = request.target.clone();
        let scratch_dir = match delivery {
            ArtifactTarget::Inline | ArtifactTarget::Storage(_) => {
                let n = self.next_id.fetch_add(1, Ordering::Relaxed);
                let dir = self
                    .inflight_dir
                    .join(format!("{}-{}", request.span.index.0, n));
                request.target = ArtifactTarget::Directory(dir.clone());
                Some(dir)
            }
            ArtifactTarget::Directory(_) => None,
        };
        let outcome = self
            .render_and_deliver(request.clone(), &delivery, &cancel, &tx, started)
            .await;
        if let Some(dir) = &scratch_dir {
            let _ = tokio::fs::remove_dir_all(dir).await;
        }
        match outcome {
            Ok(result) => {
                // Exactly one final result; if the client left, nothing to do.
                let _ = tx.send(Ok(result)).await;
            }
            Err(e) => {
                match &e {
                    WorkerError::Cancelled { .. } => {
                        tracing::info!(job_id = %request.job_id, chunk = request.span.index.0, "chunk cancelled")
                    }
                    _ => {
                        tracing::warn!(job_id = %request.job_id, chunk = request.span.index.0, error = %e, "chunk failed")
                    }
                }
                let _ = tx.send(Err(to_status(&e))).await;
            }
        }
    }

    /// Fetches the bundle, renders and delivers to `delivery` (the request's
    /// own target is already a directory to render into).
    async fn render_and_deliver(
        &self,
        mut request: ChunkRequest,
        delivery: &ArtifactTarget,
        cancel: &CancellationToken,
        tx: &mpsc::Sender<EventResult>,
        started: Instant,
    ) -> Result<pb::RenderChunkEvent, WorkerError> {
        let chunk = request.span.index.0;
        let state = Arc::new(Mutex::new(ChunkProgress {
            frames_total: request
                .span
                .frames
                .len()
                .div_ceil(u64::from(request.span.every_nth_frame.max(1))),
            ..ChunkProgress::default()
        }));
        // Held until the chunk is done, so the bundle is not evicted while
        // it renders.
        let _bundle: Option<CachedBundle> = match &request.source {
            SourceSpec::BundleRef(reference) => {
                let fetch = self.bundles.fetch(reference);
                let bundle = report_while(fetch, &state, tx, cancel)
                    .await
                    .ok_or(WorkerError::Cancelled { chunk })??;
                request.source = SourceSpec::BundlePath(bundle.path().to_path_buf());
                Some(bundle)
            }
            _ => None,
        };
        let request = &request;
        let sink_state = state.clone();
        let worker = self.worker.clone();
        let req = request.clone();
        let token = cancel.clone();
        let mut handle = tokio::task::spawn_blocking(move || {
            let sink = move |p: ChunkProgress| {
                if let Ok(mut s) = sink_state.lock() {
                    *s = p;
                }
            };
            render_chunk(&worker, &req, &sink, &token)
        });
        let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
        let mut client_gone = false;
        let rendered = loop {
            tokio::select! {
                r = &mut handle => break r,
                _ = ticker.tick() => {
                    let p = state.lock().map(|s| *s).unwrap_or_default();
                    match tx.try_send(Ok(progress_event(p))) {
                        Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            client_gone = true;
                            cancel.cancel();
                        }
                    }
                }
                _ = tx.closed(), if !client_gone => {
                    tracing::info!(job_id = %request.job_id, chunk = request.span.index.0, "client gone: cancelling");
                    client_gone = true;
                    cancel.cancel();
                }
            }
        };
        let mut result = match rendered {
            Ok(r) => r?,
            Err(_) => return Err(WorkerError::Panicked { stage: "render" }),
        };
        if client_gone {
            return Err(WorkerError::Cancelled {
                chunk: request.span.index.0,
            });
        }
        let deliver = Instant::now();
        let delivered = match delivery {
            ArtifactTarget::Inline => {
                for (kind, file) in [
                    (ArtifactKind::VideoTs, &result.video),
                    (ArtifactKind::AudioPcm, &result.audio),
                ] {
                    self.stream_file(kind, &file.path, tx, cancel, chunk)
                        .await?;
                }
                Delivered::Inline
            }
            ArtifactTarget::Directory(_) => Delivered::Directory,
            ArtifactTarget::Storage(prefix) => {
                let upload = self.upload(prefix, request, &result);
                let (video, audio) = report_while(upload, &state, tx, cancel)
                    .await
                    .ok_or(WorkerError::Cancelled { chunk })??;
                Delivered::Uploaded(video, audio)
            }
        };
        result.timings.deliver = deliver.elapsed();
        result.timings.total = started.elapsed();
        tracing::info!(
            job_id = %request.job_id,
            chunk = request.span.index.0,
            frames = result.frame_count(),
            samples = result.sample_count(),
            deliver_ms = result.timings.deliver.as_millis() as u64,
            total_ms = result.timings.total.as_millis() as u64,
            "chunk delivered"
        );
        Ok(ChunkEvent::Result(report(&result, &delivered)).into())
    }

    /// Uploads both artifacts (at once) under `prefix`; returns their URLs
    /// (video, audio). Dropping the future aborts the uploads.
    async fn upload(
        &self,
        prefix: &Location,
        request: &ChunkRequest,
        result: &ChunkResult,
    ) -> Result<(String, String), WorkerError> {
        const FIELD: &str = "output.location";
        let store = self
            .bundles
            .stores()
            .open(prefix)
            .await
            .map_err(WorkerError::storage(FIELD))?;
        let (ts_name, pcm_name) = ChunkRequest::artifact_names(request.span.index);
        let put = |name: String, file: &ArtifactFile| {
            let store = Arc::clone(&store);
            let key = format!("{}{name}", prefix.key());
            let (path, sha256, size) = (file.path.clone(), file.sha256, file.size);
            async move {
                let meta = store
                    .put_file(&key, &path)
                    .await
                    .map_err(WorkerError::storage(FIELD))?;
                if meta.sha256 != Some(sha256) || meta.size != size {
                    let uploaded = meta.sha256.map(|h| h.to_hex()).unwrap_or_default();
                    // The file changed between rendering and uploading.
                    return Err(WorkerError::Storage {
                        field: FIELD,
                        source: storage::StorageError::HashMismatch {
                            location: store.url(&key),
                            expected: format!("{sha256} ({size} bytes)"),
                            actual: format!("{uploaded} ({} bytes)", meta.size),
                        },
                    });
                }
                Ok(store.url(&key))
            }
        };
        tokio::try_join!(put(ts_name, &result.video), put(pcm_name, &result.audio))
    }

    async fn stream_file(
        &self,
        kind: ArtifactKind,
        path: &std::path::Path,
        tx: &mpsc::Sender<EventResult>,
        cancel: &CancellationToken,
        chunk: u32,
    ) -> Result<(), WorkerError> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| WorkerError::io(path, e))?;
        let mut offset = 0u64;
        loop {
            let mut buf = vec![0u8; INLINE_PIECE_BYTES];
            let mut filled = 0;
            while filled < buf.len() {
                let n = file
                    .read(&mut buf[filled..])
                    .await
                    .map_err(|e| WorkerError::io(path, e))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                return Ok(());
            }
            buf.truncate(filled);
            let event = ChunkEvent::Data {
                kind,
                offset,
                bytes: buf,
            }
            .into();
            offset += filled as u64;
            tokio::select! {
                r = tx.send(Ok(event)) => {
                    if r.is_err() {
                        return Err(WorkerError::Cancelled { chunk });
                    }
                }
                _ = cancel.cancelled() => return Err(WorkerError::Cancelled { chunk }),
            }
        }
    }
}

#[tonic::async_trait]
impl ChunkWorker for Service {
    type RenderChunkStream = ChunkEvents;

    async fn render_chunk(
        &self,
        request: Request<pb::RenderChunkRequest>,
    ) -> Result<Response<Self::RenderChunkStream>, Status> {
        let inner = &self.inner;
        if inner.draining.load(Ordering::SeqCst) {
            return Err(to_status(&WorkerError::Draining));
        }
        let WireChunkRequest { request, renderer } =
            WireChunkRequest::try_from(request.into_inner())
                .map_err(|e| to_status(&WorkerError::Field(e)))?;
        check_renderer(renderer.as_ref()).map_err(|e| to_status(&e))?;
        can_open(&inner.worker, &request.source).map_err(|e| to_status(&e))?;
        let permit = inner.slots.clone().try_acquire_owned().map_err(|_| {
            tracing::info!(job_id = %request.job_id, chunk = request.span.index.0, "no free slot");
            to_status(&WorkerError::Busy {
                slots: inner.slot_count,
            })
        })?;
        tracing::info!(
            job_id = %request.job_id,
            chunk = request.span.index.0,
            composition = %request.composition_id,
            frames = %request.span.frames,
            "chunk accepted"
        );
        let (tx, rx) = mpsc::channel(EVENT_QUEUE_DEPTH);
        inner
            .tracker
            .spawn(inner.clone().run_chunk(request, permit, tx));
        Ok(Response::new(ChunkEvents {
            events: ReceiverStream::new(rx),
            _delivering: inner.tracker.token(),
        }))
    }

    async fn describe(
        &self,
        request: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let DescribeRequest {
            mut source,
            composition_id,
            props,
        } = DescribeRequest::try_from(request.into_inner()).map_err(|e| to_status(&e.into()))?;
        can_open(&self.inner.worker, &source).map_err(|e| to_status(&e))?;
        // Held until described, so the bundle is not evicted meanwhile.
        let _bundle = match &source {
            SourceSpec::BundleRef(reference) => {
                let bundle = self
                    .inner
                    .bundles
                    .fetch(reference)
                    .await
                    .map_err(|e| to_status(&e))?;
                source = SourceSpec::BundlePath(bundle.path().to_path_buf());
                Some(bundle)
            }
            _ => None,
        };
        let worker = self.inner.worker.clone();
        let meta = tokio::task::spawn_blocking(move || -> Result<_, WorkerError> {
            Ok(worker
                .source(&source)?
                .composition(&composition_id)?
                .describe(&props)?)
        })
        .await
        .map_err(|_| to_status(&WorkerError::Panicked { stage: "describe" }))?
        .map_err(|e| to_status(&e))?;
        let renderer = crate::renderer_version()
            .map_err(|e| to_status(&e))?
            .clone();
        Ok(Response::new((&Described { meta, renderer }).into()))
    }
}

/// Refuses a request whose caller expects another renderer: its cache keys
/// say so, and chunks from two renderers may not join.
fn check_renderer(expected: Option<&spec::RendererVersion>) -> Result<(), WorkerError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let ours = crate::renderer_version()?;
    if expected != ours {
        return Err(WorkerError::RendererMismatch {
            expected: expected.to_string(),
            ours: ours.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_ref_needs_a_bundle_opener() {
        let bundle = SourceSpec::BundleRef(
            spec::BundleRef::parse("s3://b-1/x.tar", &"0".repeat(64)).expect("valid"),
        );
        let bare = WorkerConfig::new(composition::Registry::new());
        let err = can_open(&bare, &bundle).expect_err("no opener");
        assert_eq!(to_status(&err).code(), tonic::Code::InvalidArgument);
        assert!(
            err.to_string()
                .starts_with("field `source.bundle`: this worker has no scene bundle loader"),
            "{err}"
        );
        assert!(can_open(&bare, &SourceSpec::Registered).is_ok());
        assert!(can_open(&WorkerConfig::standard(), &bundle).is_ok());
    }
}
