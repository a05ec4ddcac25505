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
use tracing::Instrument as _;

use montage_proto::convert::{Described, WireChunkRequest};
use montage_proto::v1 as pb;
use pb::chunk_worker_server::{ChunkWorker, ChunkWorkerServer};
use spec::{
    ArtifactKind, ArtifactTarget, ChunkEvent, ChunkProgress, ChunkReport, ChunkRequest,
    DeliveredArtifact, DescribeRequest, FrameSink, ImageTarget, SourceSpec,
};

use crate::metrics::WorkerMetrics;
use crate::status::error_class;
use storage::{CachedBundle, Location, S3Config};

use crate::access::{AllowedPaths, check_token};
use crate::limits::{MIN_MAX_MEMORY, MemoryPool, default_max_memory};
use crate::pipeline::{ArtifactFile, ChunkResult};
use crate::pipeline::{TargetDir, render_into};
use crate::stores::{Bundles, DEFAULT_BUNDLE_CACHE_BYTES};
use crate::{WorkerConfig, WorkerError, to_status};
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
    /// The local paths clients may name (`--allow-path`); by default none.
    pub allowed_paths: AllowedPaths,
    /// Serve on a non-loopback address with neither a token nor client
    /// certificates (`--insecure-no-auth`); otherwise [`bind`] refuses.
    pub insecure_no_auth: bool,
    /// Serve TLS (and require client certificates when it names a client
    /// CA); `None` serves plain HTTP/2.
    pub tls: Option<ServerTls>,
    /// The memory chunks in flight may need together (`--max-memory`,
    /// default [`default_max_memory`]): a chunk needing more is refused
    /// with `INVALID_ARGUMENT`, one that does not fit beside the others
    /// gets `RESOURCE_EXHAUSTED`.
    pub max_memory: u64,
    /// Serve Prometheus metrics on `http://ADDR/metrics` (none: no metrics
    /// server).
    pub metrics_listen: Option<SocketAddr>,
}

/// A worker's TLS identity and, for mutual TLS, the CA its clients'
/// certificates must chain to. All PEM.
#[derive(Clone)]
pub struct ServerTls {
    /// The certificate chain the worker presents (`--tls-cert`).
    pub cert_pem: Vec<u8>,
    /// Its private key (`--tls-key`).
    pub key_pem: Vec<u8>,
    /// CA certificates clients must present a certificate from
    /// (`--tls-client-ca`); `None` accepts any client (authenticated by the
    /// bearer token, if any).
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ServerTls")
            .field("client_ca", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    fn config(&self) -> tonic::transport::ServerTlsConfig {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        let mut config =
            ServerTlsConfig::new().identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        if let Some(ca) = &self.client_ca_pem {
            config = config.client_ca_root(Certificate::from_pem(ca));
        }
        config
    }
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
            allowed_paths: AllowedPaths::default(),
            insecure_no_auth: false,
            tls: None,
            max_memory: default_max_memory(),
            metrics_listen: None,
        }
    }

    /// Checks what can be checked before binding: slots, the memory limit,
    /// authentication on an open address, the path rule's token, TLS files.
    ///
    /// # Errors
    /// [`WorkerError::Field`] for zero slots, [`WorkerError::Config`]
    /// naming the flag otherwise.
    pub fn validate(&self) -> Result<(), WorkerError> {
        if self.slots == 0 {
            return Err(spec::FieldError::new(
                "slots",
                "0 is invalid: a worker needs at least 1 slot",
            )
            .into());
        }
        if self.max_memory < MIN_MAX_MEMORY {
            return Err(WorkerError::Config {
                setting: "--max-memory",
                message: format!(
                    "{} bytes is too small: allowed at least {} MiB",
                    self.max_memory,
                    MIN_MAX_MEMORY >> 20
                ),
            });
        }
        if self.token.as_deref().is_some_and(str::is_empty) {
            return Err(WorkerError::Config {
                setting: "--token-file",
                message: "the token is empty".into(),
            });
        }
        let client_certs = self.tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some());
        let authenticated = self.token.is_some() || client_certs;
        if !self.listen.ip().is_loopback() && !authenticated && !self.insecure_no_auth {
            return Err(WorkerError::Config {
                setting: "--listen",
                message: format!(
                    "{} is reachable from other hosts, and without --token-file (or --tls-client-ca) anyone who reaches it can render on this worker and read and write the paths it allows: give --token-file FILE, or --insecure-no-auth to serve without authentication",
                    self.listen
                ),
            });
        }
        if self.allowed_paths == AllowedPaths::Any && self.token.is_none() {
            return Err(WorkerError::Config {
                setting: "allowed_paths",
                message: "allowing any local path needs a token, so only the process that made it can call this worker".into(),
            });
        }
        if let Some(tls) = &self.tls {
            tonic::transport::Server::builder()
                .tls_config(tls.config())
                .map_err(|e| WorkerError::Config {
                    setting: "--tls-cert/--tls-key/--tls-client-ca",
                    message: format!("the TLS certificates cannot be used: {}", error_chain(&e)),
                })?;
        }
        Ok(())
    }
}

/// An error and its sources, `a: b: c` (tonic's transport errors say little
/// at the top).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

struct Inner {
    worker: WorkerConfig,
    /// Which local paths clients may name (roots canonical).
    allowed: AllowedPaths,
    /// Memory for chunks in flight.
    memory: MemoryPool,
    max_memory: u64,
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
    metrics: Arc<WorkerMetrics>,
}

#[derive(Clone)]
struct Service {
    inner: Arc<Inner>,
}

/// A worker bound to its address, ready to [`BoundWorker::run`].
pub struct BoundWorker {
    listener: tokio::net::TcpListener,
    metrics_listener: Option<tokio::net::TcpListener>,
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
/// cannot be created or an allowed path does not exist, and what
/// [`ServeConfig::validate`] refuses.
pub async fn bind(config: ServeConfig, worker: WorkerConfig) -> Result<BoundWorker, WorkerError> {
    config.validate()?;
    let allowed = config.allowed_paths.canonical()?;
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
    let metrics = Arc::new(WorkerMetrics::new(config.slots));
    let bundles = Bundles::open(
        config.cache_dir.join("bundles"),
        config.bundle_cache_bytes,
        stores,
    )
    .await?
    .with_metrics(Arc::clone(&metrics));
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
    let metrics_listener = match config.metrics_listen {
        Some(listen) => Some(crate::metrics::bind(listen).await?),
        None => None,
    };
    let inner = Arc::new(Inner {
        worker,
        allowed,
        memory: MemoryPool::new(config.max_memory),
        max_memory: config.max_memory,
        slots: Arc::new(Semaphore::new(config.slots)),
        slot_count: config.slots,
        inflight_dir,
        bundles,
        draining: AtomicBool::new(false),
        cancel_all: CancellationToken::new(),
        tracker: TaskTracker::new(),
        next_id: AtomicU64::new(0),
        metrics,
    });
    Ok(BoundWorker {
        listener,
        metrics_listener,
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
            metrics_listener,
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
                check_token(t, req.metadata()).map_err(|e| to_status(&e))?;
            }
            Ok(req)
        });
        let stop_server = CancellationToken::new();
        let stopped = stop_server.clone();
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &config.tls {
            // Checked by `bind` (`ServeConfig::validate`).
            builder = builder
                .tls_config(tls.config())
                .map_err(|e| WorkerError::Config {
                    setting: "--tls-cert/--tls-key/--tls-client-ca",
                    message: error_chain(&e),
                })?;
        }
        let mut server = tokio::spawn(
            builder
                .add_service(health_service)
                .add_service(svc)
                .serve_with_incoming_shutdown(no_delay(listener), async move {
                    stopped.cancelled().await
                }),
        );
        let metrics_server = metrics_listener.map(|listener| {
            if let Ok(bound) = listener.local_addr() {
                tracing::info!(metrics = %bound, "serving metrics on /metrics");
            }
            let metrics = Arc::clone(&inner.metrics);
            let stopped = stop_server.clone();
            crate::metrics::serve(listener, Arc::new(move || metrics.encode()), async move {
                stopped.cancelled().await
            })
        });
        tracing::info!(
            %addr,
            slots = config.slots,
            tls = config.tls.is_some(),
            client_certs = config.tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some()),
            token = config.token.is_some(),
            max_memory_mib = config.max_memory >> 20,
            "worker serving"
        );
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

        inner.drain(&health, config.slots, config.grace).await;
        stop_server.cancel();
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "server stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "server task failed"),
        }
        if let Some(task) = metrics_server {
            let _ = task.await;
        }
        let _ = tokio::fs::remove_dir_all(&inner.inflight_dir).await;
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// The listener's connections with Nagle's algorithm off: a chunk's last
/// small frames (its result, the end of the stream) would otherwise wait
/// for the client's delayed ACK, about 40 ms per chunk.
fn no_delay(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt as _;
    TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::warn!(error = %e, "could not disable Nagle's algorithm");
            }
        })
    })
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

/// Refuses the request's local paths outside the directories the worker
/// allows, and replaces them by their canonical form (symlinks followed),
/// so what renders is what was checked. A target directory is created.
fn admit_paths(allowed: &AllowedPaths, request: &mut ChunkRequest) -> Result<(), WorkerError> {
    admit_source(allowed, &mut request.source)?;
    if let ArtifactTarget::Directory(dir) = &mut request.target {
        *dir = allowed.writable_dir("output.location", dir)?;
    }
    if let FrameSink::Images(sequence) = &mut request.frames_to
        && let ImageTarget::Directory(dir) = &mut sequence.target
    {
        *dir = allowed.writable_dir("frames_to.images.location", dir)?;
    }
    Ok(())
}

/// [`admit_paths`] for a source: a bundle directory, or a bundle archive
/// named by a local path or `file://` URL.
fn admit_source(allowed: &AllowedPaths, source: &mut SourceSpec) -> Result<(), WorkerError> {
    match source {
        SourceSpec::BundlePath(path) => {
            *path = allowed.readable("source.bundle_path", path)?;
        }
        SourceSpec::BundleRef(reference) => {
            if let Location::Local { root, key } = &reference.location {
                allowed.readable("source.bundle.location", &root.join(key))?;
            }
        }
        SourceSpec::Registered => {}
    }
    Ok(())
}

/// What happens to a chunk's work when its client leaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WhenGone {
    /// Drop it at once (aborts a download or an upload).
    Drop,
    /// Let it see the cancellation and finish (the render threads clean up
    /// their files before the slot is released).
    Finish,
}

/// Runs `work` while sending the progress in `state` every
/// [`PROGRESS_INTERVAL`] (the coordinator counts silence towards its stall
/// timeout, also while a bundle downloads or artifacts upload). When the
/// client leaves, `cancel` fires and the work is dropped or finished as
/// `when_gone` says; either way the result is `None`. A `Drop` work is also
/// dropped when `cancel` fires from elsewhere (shutdown).
async fn report_while<T>(
    work: impl Future<Output = T>,
    state: &Mutex<ChunkProgress>,
    tx: &mpsc::Sender<EventResult>,
    cancel: &CancellationToken,
    when_gone: WhenGone,
) -> Option<T> {
    tokio::pin!(work);
    let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
    let mut gone = false;
    loop {
        let client_left = tokio::select! {
            r = &mut work => return (!gone).then_some(r),
            _ = ticker.tick(), if !gone => {
                let p = state.lock().map(|s| *s).unwrap_or_default();
                matches!(tx.try_send(Ok(progress_event(p))), Err(mpsc::error::TrySendError::Closed(_)))
            }
            _ = tx.closed(), if !gone => true,
            _ = cancel.cancelled(), if when_gone == WhenGone::Drop => return None,
        };
        if client_left {
            tracing::info!("client gone: cancelling the chunk");
            gone = true;
            cancel.cancel();
            if when_gone == WhenGone::Drop {
                return None;
            }
        }
    }
}

/// Where a chunk's artifacts were delivered.
enum Delivered {
    /// Streamed in the call: the result's locations are empty.
    Inline,
    /// Left in the request's local directory: the locations are the paths.
    Directory,
    /// Uploaded: the objects' URLs (video, if any, and audio).
    Uploaded(Option<String>, String),
}

/// The chunk's report as the client gets it.
fn report(r: &ChunkResult, delivered: &Delivered) -> ChunkReport {
    let artifact = |kind: ArtifactKind, f: &ArtifactFile| DeliveredArtifact {
        kind,
        location: match (delivered, kind) {
            (Delivered::Inline, _) => None,
            (Delivered::Directory, _) => Some(f.path.to_string_lossy().into_owned()),
            (Delivered::Uploaded(video, _), ArtifactKind::VideoTs) => video.clone(),
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
        artifacts: r
            .video
            .iter()
            .map(|v| artifact(ArtifactKind::VideoTs, v))
            .chain([artifact(ArtifactKind::AudioPcm, &r.audio)])
            .collect(),
        timings: r.timings,
    }
}

/// A chunk request a worker took, with the slot it holds.
struct Admitted {
    request: ChunkRequest,
    /// Deliver the PCM before the frames are done (the wire's
    /// `audio_first`).
    audio_first: bool,
    permit: OwnedSemaphorePermit,
}

impl Inner {
    /// Stops taking chunks (health says `NOT_SERVING`), lets in-flight
    /// chunks finish within `grace`, then cancels them and settles the
    /// uploads they leave.
    async fn drain(
        &self,
        health: &tonic_health::server::HealthReporter,
        slots: usize,
        grace: Duration,
    ) {
        self.draining.store(true, Ordering::SeqCst);
        health
            .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
            .await;
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        let in_flight = slots - self.slots.available_permits();
        tracing::info!(in_flight, grace_s = grace.as_secs_f64(), "draining");
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over: cancelling in-flight chunks");
            self.cancel_all.cancel();
            if tokio::time::timeout(CANCEL_WAIT, self.tracker.wait())
                .await
                .is_err()
            {
                tracing::error!("chunks did not stop after cancellation; exiting anyway");
            }
        }
        // Cancelled uploads abort their multipart uploads in the background.
        self.bundles.stores().settle().await;
    }

    /// Checks a request and takes a slot for it, or says why not.
    fn admit(&self, wire: pb::RenderChunkRequest) -> Result<Admitted, WorkerError> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(WorkerError::Draining);
        }
        let WireChunkRequest {
            mut request,
            renderer,
            audio_first,
        } = WireChunkRequest::try_from(wire)?;
        check_renderer(renderer.as_ref(), request.video.codec)?;
        can_open(&self.worker, &request.source)?;
        admit_paths(&self.allowed, &mut request).inspect_err(|e| {
            tracing::warn!(error = %e, "path refused");
        })?;
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| {
            tracing::info!("no free slot");
            WorkerError::Busy {
                slots: self.slot_count,
            }
        })?;
        Ok(Admitted {
            request,
            audio_first,
            permit,
        })
    }

    /// Renders one chunk and streams its events; owns the slot until done.
    async fn run_chunk(self: Arc<Self>, admitted: Admitted, tx: mpsc::Sender<EventResult>) {
        let Admitted {
            mut request,
            audio_first,
            permit: _permit,
        } = admitted;
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
        let outcome = async {
            // The pipeline renders into an existing directory only.
            if let Some(dir) = &scratch_dir {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| WorkerError::io(dir, e))?;
            }
            self.render_and_deliver(
                request.clone(),
                &delivery,
                audio_first,
                &cancel,
                &tx,
                started,
            )
            .await
        }
        .await;
        if let Some(dir) = &scratch_dir {
            let _ = tokio::fs::remove_dir_all(dir).await;
        }
        match outcome {
            Ok(report) => {
                self.metrics.done(report.frame_count, &report.timings);
                // Exactly one final result; if the client left, nothing to do.
                let _ = tx.send(Ok(ChunkEvent::Result(report).into())).await;
            }
            Err(e) => {
                self.metrics.failed(&e);
                match &e {
                    WorkerError::Cancelled { .. } => {
                        tracing::info!("chunk cancelled")
                    }
                    _ => {
                        tracing::warn!(class = error_class(&e), error = %e, "chunk failed")
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
        audio_first: bool,
        cancel: &CancellationToken,
        tx: &mpsc::Sender<EventResult>,
        started: Instant,
    ) -> Result<ChunkReport, WorkerError> {
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
                let bundle = report_while(fetch, &state, tx, cancel, WhenGone::Drop)
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
        let (memory, max_memory) = (self.memory.clone(), self.max_memory);
        // Uploads deliver both artifacts at the end.
        let audio_first = audio_first && !matches!(delivery, ArtifactTarget::Storage(_));
        let (audio_tx, mut audio_rx) = mpsc::unbounded_channel::<ArtifactFile>();
        // The blocking thread logs in the chunk's span too.
        let span = tracing::Span::current();
        let handle = tokio::task::spawn_blocking(move || {
            let _span = span.enter();
            // Refused before anything renders; the memory is held while it
            // does.
            let needed = crate::limits::check_chunk(&worker, &req, max_memory)?;
            let _memory = memory.reserve(req.span.index.0, needed)?;
            let sink = move |p: ChunkProgress| {
                if let Ok(mut s) = sink_state.lock() {
                    *s = p;
                }
            };
            let ready = move |f: &ArtifactFile| {
                let _ = audio_tx.send(f.clone());
            };
            let ready = audio_first.then_some(&ready as &crate::AudioSink<'_>);
            // The target exists: created at admission or below, or by the
            // trusted caller of an embedded worker.
            render_into(&worker, &req, &sink, ready, &token, TargetDir::Existing)
        });
        let render = report_while(handle, &state, tx, cancel, WhenGone::Finish);
        let early = self.deliver_audio_early(&mut audio_rx, delivery, tx, cancel, chunk);
        let (rendered, audio_delivered) = tokio::join!(render, early);
        let rendered = rendered.ok_or(WorkerError::Cancelled { chunk })?;
        let mut result = rendered.map_err(|_| WorkerError::Panicked { stage: "render" })??;
        let audio_delivered = audio_delivered?;
        let deliver = Instant::now();
        if let (FrameSink::Images(sequence), Some(dir)) = (&request.frames_to, &result.images_dir)
            && let ImageTarget::Storage(prefix) = &sequence.target
        {
            let upload = self.upload_images(prefix, dir);
            report_while(upload, &state, tx, cancel, WhenGone::Drop)
                .await
                .ok_or(WorkerError::Cancelled { chunk })??;
        }
        let delivered = match delivery {
            ArtifactTarget::Inline => {
                let video = result.video.iter().map(|v| (ArtifactKind::VideoTs, v));
                let audio = (!audio_delivered).then_some((ArtifactKind::AudioPcm, &result.audio));
                for (kind, file) in video.chain(audio) {
                    self.stream_file(kind, &file.path, tx, cancel, chunk)
                        .await?;
                }
                Delivered::Inline
            }
            ArtifactTarget::Directory(_) => Delivered::Directory,
            ArtifactTarget::Storage(prefix) => {
                let upload = self.upload(prefix, request, &result);
                let (video, audio) = report_while(upload, &state, tx, cancel, WhenGone::Drop)
                    .await
                    .ok_or(WorkerError::Cancelled { chunk })??;
                Delivered::Uploaded(video, audio)
            }
        };
        result.timings.deliver = deliver.elapsed();
        result.timings.total = started.elapsed();
        tracing::info!(
            frames = result.frame_count(),
            samples = result.sample_count(),
            deliver_ms = result.timings.deliver.as_millis() as u64,
            total_ms = result.timings.total.as_millis() as u64,
            "chunk delivered"
        );
        Ok(report(&result, &delivered))
    }

    /// Waits for the render's PCM to be complete (`ready`), then delivers it
    /// ahead of the frames: streams it for an inline target, and announces
    /// it ([`ChunkEvent::Audio`]). Returns whether it did: `false` when the
    /// render ended without announcing its PCM.
    async fn deliver_audio_early(
        &self,
        ready: &mut mpsc::UnboundedReceiver<ArtifactFile>,
        delivery: &ArtifactTarget,
        tx: &mpsc::Sender<EventResult>,
        cancel: &CancellationToken,
        chunk: u32,
    ) -> Result<bool, WorkerError> {
        let Some(file) = ready.recv().await else {
            return Ok(false);
        };
        let location = match delivery {
            ArtifactTarget::Inline => {
                self.stream_file(ArtifactKind::AudioPcm, &file.path, tx, cancel, chunk)
                    .await?;
                None
            }
            _ => Some(file.path.to_string_lossy().into_owned()),
        };
        let event = ChunkEvent::Audio(DeliveredArtifact {
            kind: ArtifactKind::AudioPcm,
            location,
            sha256: file.sha256,
            size: file.size,
        });
        tx.send(Ok(event.into()))
            .await
            .map_err(|_| WorkerError::Cancelled { chunk })?;
        Ok(true)
    }

    /// Uploads both artifacts (at once) under `prefix`; returns their URLs
    /// (video, audio). Dropping the future aborts the uploads.
    async fn upload(
        &self,
        prefix: &Location,
        request: &ChunkRequest,
        result: &ChunkResult,
    ) -> Result<(Option<String>, String), WorkerError> {
        const FIELD: &str = "output.location";
        let store = self.store(prefix, FIELD).await?;
        let (ts_name, pcm_name) =
            ChunkRequest::artifact_names(request.span.index, request.video.codec);
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
        let video = async {
            match &result.video {
                Some(v) => put(ts_name, v).await.map(Some),
                None => Ok(None),
            }
        };
        tokio::try_join!(video, put(pcm_name, &result.audio))
    }

    /// Uploads every frame a chunk of an image sequence wrote into `dir`
    /// under `prefix`, one after another (each frame is small; the chunks
    /// of a render upload in parallel). An upload is complete or absent, so
    /// a retried chunk replaces a frame with the same bytes.
    /// The store of `prefix`'s bucket; its errors name `field`.
    async fn store(
        &self,
        prefix: &Location,
        field: &'static str,
    ) -> Result<Arc<dyn storage::ObjectStore>, WorkerError> {
        self.bundles
            .stores()
            .open(prefix)
            .await
            .map_err(WorkerError::storage(field))
    }

    async fn upload_images(
        &self,
        prefix: &Location,
        dir: &std::path::Path,
    ) -> Result<(), WorkerError> {
        const FIELD: &str = "frames_to.images.location";
        let store = self.store(prefix, FIELD).await?;
        let mut names = Vec::new();
        let mut entries = tokio::fs::read_dir(dir)
            .await
            .map_err(|e| WorkerError::io(dir, e))?;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| WorkerError::io(dir, e))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Temporary files of frames still being written start with `.`.
            if !name.starts_with('.') {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            store
                .put_file(&format!("{}{name}", prefix.key()), &dir.join(&name))
                .await
                .map_err(WorkerError::storage(FIELD))?;
        }
        Ok(())
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

/// The span every log line about one chunk request is in: the render's and
/// the attempt's ids from the request's metadata (set by the coordinator,
/// quoted and bounded: they come from the network), and the chunk index,
/// so one `grep render_id=…` across machines finds a render's story.
fn chunk_span(request: &Request<pb::RenderChunkRequest>) -> tracing::Span {
    let metadata = request.metadata();
    let text = |key: &str| {
        metadata
            .get(key)
            .and_then(|v| v.to_str().ok())
            .map(spec::quote)
    };
    let body = request.get_ref();
    let render_id =
        text(montage_proto::RENDER_ID_METADATA).unwrap_or_else(|| spec::quote(&body.job_id));
    let attempt_id = text(montage_proto::ATTEMPT_ID_METADATA).unwrap_or_default();
    tracing::info_span!(
        "chunk",
        render_id = %render_id,
        attempt_id = %attempt_id,
        chunk = body.chunk_index
    )
}

#[tonic::async_trait]
impl ChunkWorker for Service {
    type RenderChunkStream = ChunkEvents;

    async fn render_chunk(
        &self,
        request: Request<pb::RenderChunkRequest>,
    ) -> Result<Response<Self::RenderChunkStream>, Status> {
        let inner = &self.inner;
        let span = chunk_span(&request);
        let admitted = span
            .in_scope(|| inner.admit(request.into_inner()))
            .map_err(|e| {
                inner.metrics.refused(&e);
                to_status(&e)
            })?;
        inner.metrics.started();
        span.in_scope(|| {
            tracing::info!(
                composition = %spec::quote(&admitted.request.composition_id),
                frames = %admitted.request.span.frames,
                audio_first = admitted.audio_first,
                "chunk accepted"
            )
        });
        let (tx, rx) = mpsc::channel(EVENT_QUEUE_DEPTH);
        inner
            .tracker
            .spawn(inner.clone().run_chunk(admitted, tx).instrument(span));
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
            palette_frames,
        } = DescribeRequest::try_from(request.into_inner()).map_err(|e| to_status(&e.into()))?;
        can_open(&self.inner.worker, &source).map_err(|e| to_status(&e))?;
        admit_source(&self.inner.allowed, &mut source).map_err(|e| to_status(&e))?;
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
        let (meta, gif_palette) = tokio::task::spawn_blocking(move || -> Result<_, WorkerError> {
            let composition = worker.source(&source)?.composition(&composition_id)?;
            if palette_frames.is_empty() {
                return Ok((composition.describe(&props)?, None));
            }
            let prepared = composition.prepare(&props)?;
            let palette = crate::palette::sample(prepared.as_ref(), &palette_frames)?;
            Ok((prepared.meta().clone(), Some(palette)))
        })
        .await
        .map_err(|_| to_status(&WorkerError::Panicked { stage: "describe" }))?
        .map_err(|e| to_status(&e))?;
        let renderer = crate::renderer_version()
            .map_err(|e| to_status(&e))?
            .clone();
        Ok(Response::new(
            (&Described {
                meta,
                renderer,
                gif_palette,
            })
                .into(),
        ))
    }
}

/// Refuses a request whose caller expects another renderer: its cache keys
/// say so, and chunks from two renderers may not join. Only the encoder
/// library of the request's codec counts (as in the keys).
fn check_renderer(
    expected: Option<&spec::RendererVersion>,
    codec: spec::VideoCodec,
) -> Result<(), WorkerError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let (expected, ours) = (
        expected.for_codec(codec),
        crate::renderer_version()?.for_codec(codec),
    );
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
