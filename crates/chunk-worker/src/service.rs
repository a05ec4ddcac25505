//! The gRPC service: a thin layer over [`crate::render_chunk`].
//!
//! Each `RenderChunk` call takes a slot (a [`Semaphore`] permit; none free →
//! `RESOURCE_EXHAUSTED`), runs the pipeline on a blocking thread, streams
//! progress every [`PROGRESS_INTERVAL`], then inline artifact pieces of at
//! most [`INLINE_PIECE_BYTES`], then exactly one result. A failed send means
//! the client left: the chunk is cancelled and its files removed.
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

use crate::pb;
use crate::pb::chunk_worker_server::{ChunkWorker, ChunkWorkerServer};
use crate::pipeline::{ChunkResult, Progress};
use crate::request::{ArtifactTarget, ChunkRequest, SourceSpec};
use crate::{WorkerConfig, WorkerError, render_chunk, to_status};

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
    /// Scratch space: inline artifacts are rendered under
    /// `cache_dir/inflight/` and removed once streamed.
    pub cache_dir: PathBuf,
    /// Shared secret: when set, calls must carry
    /// `authorization: Bearer <token>` or get `UNAUTHENTICATED`.
    pub token: Option<String>,
    /// How long in-flight chunks may run on after SIGTERM before they are
    /// cancelled.
    pub grace: Duration,
}

impl ServeConfig {
    /// One slot, no token, a 30 s grace period.
    pub fn new(listen: SocketAddr, cache_dir: PathBuf) -> Self {
        ServeConfig {
            listen,
            slots: 1,
            cache_dir,
            token: None,
            grace: Duration::from_secs(30),
        }
    }
}

struct Inner {
    worker: WorkerConfig,
    slots: Arc<Semaphore>,
    slot_count: usize,
    inflight_dir: PathBuf,
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
/// [`WorkerError::Io`] if the cache directory cannot be created,
/// [`WorkerError::Field`] for zero slots.
pub async fn bind(config: ServeConfig, worker: WorkerConfig) -> Result<BoundWorker, WorkerError> {
    if config.slots == 0 {
        return Err(montage_proto::convert::FieldError::new(
            "slots",
            "0 is invalid: a worker needs at least 1 slot",
        )
        .into());
    }
    crate::encode::init()?;
    let inflight_dir = config.cache_dir.join("inflight");
    // Leftovers of a crashed process: nothing there is ever reused.
    let _ = tokio::fs::remove_dir_all(&inflight_dir).await;
    tokio::fs::create_dir_all(&inflight_dir)
        .await
        .map_err(|e| WorkerError::io(&inflight_dir, e))?;
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
        let mut server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health_service)
                .add_service(svc)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                    stopped.cancelled().await
                }),
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

fn progress_event(p: Progress) -> pb::RenderChunkEvent {
    pb::RenderChunkEvent {
        event: Some(pb::render_chunk_event::Event::Progress(pb::Progress {
            frames_rendered: p.frames_rendered,
            frames_encoded: p.frames_encoded,
            frames_total: p.frames_total,
        })),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The wire result; `inline` leaves the artifact locations empty.
fn result_to_pb(r: &ChunkResult, inline: bool) -> pb::ChunkResult {
    let artifact = |kind: pb::ArtifactKind, f: &crate::ArtifactFile| pb::Artifact {
        kind: kind.into(),
        location: if inline {
            String::new()
        } else {
            f.path.to_string_lossy().into_owned()
        },
        sha256: f.sha256.clone(),
        size: f.size,
    };
    pb::ChunkResult {
        chunk_index: r.chunk.index().0,
        frame_count: r.frame_count(),
        sample_count: r.sample_count(),
        pcm_format: pb::PcmFormat::from(r.pcm_format).into(),
        artifacts: vec![
            artifact(pb::ArtifactKind::VideoTs, &r.video),
            artifact(pb::ArtifactKind::AudioPcm, &r.audio),
        ],
        timings: Some(pb::StageTimings {
            render_us: micros(r.timings.render),
            convert_us: micros(r.timings.convert),
            encode_us: micros(r.timings.encode),
            audio_us: micros(r.timings.audio),
            deliver_us: micros(r.timings.deliver),
            total_us: micros(r.timings.total),
        }),
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
        let inline_dir = match request.target {
            ArtifactTarget::Inline => {
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
            .render_and_deliver(&request, inline_dir.is_some(), &cancel, &tx, started)
            .await;
        if let Some(dir) = &inline_dir {
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

    async fn render_and_deliver(
        &self,
        request: &ChunkRequest,
        inline: bool,
        cancel: &CancellationToken,
        tx: &mpsc::Sender<EventResult>,
        started: Instant,
    ) -> Result<pb::RenderChunkEvent, WorkerError> {
        let state = Arc::new(Mutex::new(Progress {
            frames_total: request
                .span
                .frames
                .len()
                .div_ceil(u64::from(request.span.every_nth_frame.max(1))),
            ..Progress::default()
        }));
        let sink_state = state.clone();
        let worker = self.worker.clone();
        let req = request.clone();
        let token = cancel.clone();
        let mut handle = tokio::task::spawn_blocking(move || {
            let sink = move |p: Progress| {
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
        if inline {
            for (kind, file) in [
                (pb::ArtifactKind::VideoTs, &result.video),
                (pb::ArtifactKind::AudioPcm, &result.audio),
            ] {
                self.stream_file(kind, &file.path, tx, cancel, request.span.index.0)
                    .await?;
            }
        }
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
        Ok(pb::RenderChunkEvent {
            event: Some(pb::render_chunk_event::Event::Result(result_to_pb(
                &result, inline,
            ))),
        })
    }

    async fn stream_file(
        &self,
        kind: pb::ArtifactKind,
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
            let event = pb::RenderChunkEvent {
                event: Some(pb::render_chunk_event::Event::Data(pb::ArtifactData {
                    kind: kind.into(),
                    offset,
                    data: buf,
                })),
            };
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
        let request = ChunkRequest::try_from(request.into_inner())
            .map_err(|e| to_status(&WorkerError::Field(e)))?;
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
        let r = request.into_inner();
        let spec = SourceSpec::try_from(r.source).map_err(|e| to_status(&e.into()))?;
        let props = montage_proto::convert::props_from_json("props_json", &r.props_json)
            .map_err(|e| to_status(&e.into()))?;
        let worker = self.inner.worker.clone();
        let id = r.composition_id;
        let meta = tokio::task::spawn_blocking(move || -> Result<_, WorkerError> {
            Ok(worker.source(&spec)?.composition(&id)?.describe(&props)?)
        })
        .await
        .map_err(|_| to_status(&WorkerError::Panicked { stage: "describe" }))?
        .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::DescribeResponse {
            meta: Some((&meta).into()),
        }))
    }
}
