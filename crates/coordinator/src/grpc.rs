//! The production [`ChunkRunner`]: one `RenderChunk` call over gRPC.
//!
//! This is the only module of the coordinator that sees generated proto
//! types: requests go out as domain types converted by `montage-proto`, and
//! events come back converted into domain types before anything else reads
//! them. Status codes decide what happens next (never message text):
//! `INVALID_ARGUMENT`, `NOT_FOUND` and `UNAUTHENTICATED` fail the render as
//! the input's fault, `PERMISSION_DENIED` fails it naming the permission,
//! `RESOURCE_EXHAUSTED` sends the chunk elsewhere without counting an
//! attempt, anything else (`FAILED_PRECONDITION`: another renderer version)
//! is retried on another worker.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chunker::Chunk;
use composition::CompositionMeta;
use montage_proto::convert::WireChunkRequest;
use montage_proto::v1 as pb;
use pb::chunk_worker_client::ChunkWorkerClient;
use sha2::{Digest, Sha256};
use spec::{
    ArtifactKind, ArtifactTarget, ChunkEvent, ChunkReport, ChunkRequest, ChunkSpan,
    DeliveredArtifact, DescribeRequest, PcmFormat, RendererVersion, StageTimings,
};
use storage::{ContentHash, ObjectStore};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::schedule::{
    AttemptError, AttemptFuture, ChunkProgress, ChunkRunner, FailureKind, WorkerInfo,
};

/// How long to wait for a TCP connection to a worker.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest gRPC message accepted from a worker (inline artifact pieces are
/// at most 1 MiB; headroom for framing).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// One artifact on the coordinator's disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalArtifact {
    /// The file.
    pub path: PathBuf,
    /// The sha256 of its bytes (as the worker reported and the coordinator
    /// checked, or trusted for a worker on this machine).
    pub sha256: ContentHash,
    /// Bytes.
    pub size: u64,
}

/// One chunk's artifacts on the coordinator's disk, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkFiles {
    /// The chunk's index.
    pub chunk: u32,
    /// The encoded video (H.264 in MPEG-TS, or the codec's chunk
    /// container); `None` when the render's frames go elsewhere (audio
    /// only, image sequences).
    pub video: Option<LocalArtifact>,
    /// Raw interleaved PCM, if the render has audio.
    pub audio: Option<LocalArtifact>,
    /// The PCM sample format.
    pub pcm_format: PcmFormat,
    /// Frames the worker reported.
    pub frame_count: u64,
    /// Samples (per channel) the worker reported.
    pub sample_count: u64,
    /// The worker's stage timings.
    pub timings: StageTimings,
}

/// How the coordinator checks `https://` workers and proves itself to
/// them. All PEM.
#[derive(Clone, Default)]
pub struct ClientTls {
    /// CA certificates the workers' certificates must chain to
    /// (`--tls-ca`); `None`: the system's trusted roots.
    pub ca_pem: Option<Vec<u8>>,
    /// The coordinator's certificate chain, for workers that require client
    /// certificates (`--tls-client-cert`, with `client_key_pem`).
    pub client_cert_pem: Option<Vec<u8>>,
    /// Its private key (`--tls-client-key`).
    pub client_key_pem: Option<Vec<u8>>,
    /// The name workers' certificates are checked against; `None`: the host
    /// of each worker's URL (for a DNS pool, the DNS name).
    pub server_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ClientTls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_cert", &self.client_cert_pem.is_some())
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    fn config(&self) -> tonic::transport::ClientTlsConfig {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let mut config = ClientTlsConfig::new();
        config = match &self.ca_pem {
            Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
            None => config.with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&self.client_cert_pem, &self.client_key_pem) {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        config
    }

    /// Checks that the certificates parse and that a client certificate
    /// comes with its key.
    ///
    /// # Errors
    /// A message naming the flags.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.client_cert_pem.is_some() != self.client_key_pem.is_some() {
            return Err("--tls-client-cert and --tls-client-key go together: give both".into());
        }
        Endpoint::from_static("https://worker.invalid:443")
            .tls_config(self.config())
            .map(drop)
            .map_err(|e| {
                format!(
                    "--tls-ca/--tls-client-cert/--tls-client-key: the certificates cannot be used: {}",
                    error_chain(&e)
                )
            })
    }
}

/// An error and its sources, `a: b: c` (tonic's transport errors say little
/// at the top: "transport error").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        // Wrappers often repeat their cause's text.
        let cause = s.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = s.source();
    }
    text
}

/// How the coordinator reaches its workers: the bearer token and, for
/// `https://` workers, TLS.
#[derive(Debug, Clone, Default)]
pub struct WorkerAccess {
    /// The bearer token sent with every call.
    pub token: Option<String>,
    /// TLS settings for `https://` workers (`None`: the system's roots, no
    /// client certificate).
    pub tls: Option<ClientTls>,
}

impl WorkerAccess {
    /// The endpoint of the worker at `address`: TLS for `https://`, plain
    /// HTTP/2 for `http://`.
    fn endpoint(&self, address: &str) -> Result<Endpoint, AttemptError> {
        let endpoint = Endpoint::from_shared(address.to_owned())
            .map_err(|e| {
                AttemptError::new(
                    FailureKind::Invalid,
                    format!(
                        "worker address `{}` is not a URL: {e}",
                        spec::quote(address)
                    ),
                )
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        if !address.starts_with("https://") {
            return Ok(endpoint);
        }
        endpoint
            .tls_config(self.tls.clone().unwrap_or_default().config())
            .map_err(|e| {
                AttemptError::new(
                    FailureKind::Invalid,
                    format!(
                        "TLS for worker `{}`: {}",
                        spec::quote(address),
                        error_chain(&e)
                    ),
                )
            })
    }
}

/// What a failed call says: the worker's message (quoted), or for a
/// failure of the connection itself (a status tonic made, with a source)
/// its causes and what to check: a worker serving TLS closes plain
/// connections, and one requiring client certificates ends handshakes
/// without one.
fn status_text(address: &str, status: &tonic::Status) -> String {
    // As workers bound them (a message from something else on that port
    // may be longer).
    let mut text = spec::quote_within(status.message(), chunk_worker::MAX_STATUS_MESSAGE_CHARS);
    let mut source = std::error::Error::source(status);
    let transport = source.is_some() || status.code() == tonic::Code::Unavailable;
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if transport {
        text.push_str(transport_hint(address));
    }
    text
}

/// What to check when the connection to `address` fails.
fn transport_hint(address: &str) -> &'static str {
    if address.starts_with("https://") {
        " (check the TLS settings: the worker's CA in --tls-ca, and --tls-client-cert/--tls-client-key if it requires client certificates)"
    } else {
        " (if this worker serves TLS, address it as https://)"
    }
}

/// Maps a gRPC status to what the scheduler does next.
pub fn classify(status: &tonic::Status) -> FailureKind {
    use tonic::Code;
    match status.code() {
        Code::InvalidArgument | Code::NotFound | Code::Unauthenticated => FailureKind::Invalid,
        Code::PermissionDenied => FailureKind::Permission,
        Code::ResourceExhausted => FailureKind::Busy,
        _ => FailureKind::Transient,
    }
}

fn status_error(address: &str, status: &tonic::Status) -> AttemptError {
    AttemptError::new(
        classify(status),
        format!("{:?}: {}", status.code(), status_text(address, status)),
    )
}

/// Where one chunk's artifacts go and how they reach the coordinator's disk.
#[derive(Debug, Clone)]
pub enum ChunkTarget {
    /// Streamed back over the call and written into this directory.
    Inline(PathBuf),
    /// Written by a worker on this machine straight into this directory.
    SharedDir(PathBuf),
    /// Written by the worker under a storage prefix, then downloaded (and
    /// verified) into `dir`.
    Store {
        /// The store the prefix is in.
        store: Arc<dyn ObjectStore>,
        /// The prefix's key in the store (ends with `/`).
        prefix: String,
        /// The local directory downloads go to.
        dir: PathBuf,
    },
}

impl ChunkTarget {
    /// What the worker is told.
    fn target(&self) -> Result<ArtifactTarget, AttemptError> {
        Ok(match self {
            ChunkTarget::Inline(_) => ArtifactTarget::Inline,
            ChunkTarget::SharedDir(dir) => ArtifactTarget::Directory(dir.clone()),
            ChunkTarget::Store { store, prefix, .. } => {
                ArtifactTarget::parse_location(&store.url(prefix)).map_err(|e| {
                    AttemptError::new(FailureKind::Invalid, format!("chunk target: {e}"))
                })?
            }
        })
    }

    /// The local directory the chunk's files end up in.
    pub fn dir(&self) -> &Path {
        match self {
            ChunkTarget::Inline(d) | ChunkTarget::SharedDir(d) => d,
            ChunkTarget::Store { dir, .. } => dir,
        }
    }
}

/// Runs chunks on workers over gRPC, each to its [`ChunkTarget`].
pub struct GrpcRunner {
    template: ChunkRequest,
    renderer: Option<RendererVersion>,
    targets: HashMap<u32, ChunkTarget>,
    access: WorkerAccess,
    channels: Mutex<HashMap<String, Channel>>,
    audio_ready: Option<AudioReady>,
}

/// Receives a chunk's PCM (its index, the checked file in place) as soon as
/// it arrived, before the chunk's frames are done.
pub type AudioReady = Arc<dyn Fn(u32, &LocalArtifact) + Send + Sync>;

impl GrpcRunner {
    /// A runner sending `template` (everything but the chunk's own span and
    /// target) for every chunk, expecting workers that run `renderer` (when
    /// given: others refuse), delivering chunk `i`'s artifacts to
    /// `targets[&i]`, reaching workers with `access` (token, TLS).
    pub fn new(
        template: ChunkRequest,
        renderer: Option<RendererVersion>,
        targets: HashMap<u32, ChunkTarget>,
        access: WorkerAccess,
    ) -> Self {
        GrpcRunner {
            template,
            renderer,
            targets,
            access,
            channels: Mutex::default(),
            audio_ready: None,
        }
    }

    /// Asks workers to deliver each chunk's PCM before its frames (inline
    /// and shared-directory targets; uploads deliver both at the end) and
    /// hands it to `ready` on arrival, so the audio can be encoded while the
    /// frames render. An attempt that fails later may have handed its PCM
    /// over already: a retry's PCM is the same file, by name and bytes.
    #[must_use]
    pub fn with_audio_first(mut self, ready: AudioReady) -> Self {
        self.audio_ready = Some(ready);
        self
    }

    fn channel(&self, address: &str) -> Result<Channel, AttemptError> {
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| AttemptError::new(FailureKind::Transient, "channel cache poisoned"))?;
        if let Some(c) = channels.get(address) {
            return Ok(c.clone());
        }
        let channel = self.access.endpoint(address)?.connect_lazy();
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }
}

/// The `authorization` header value for `token`.
///
/// # Errors
/// A message when the token holds characters a header cannot carry.
pub(crate) fn check_token(
    token: &str,
) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>, String> {
    format!("Bearer {token}")
        .parse()
        .map_err(|_| "the worker token contains characters not allowed in a header".to_owned())
}

/// Adds the bearer token to a request.
fn authorize<T>(request: &mut tonic::Request<T>, token: Option<&str>) -> Result<(), String> {
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", check_token(token)?);
    }
    Ok(())
}

/// Labels a request with the render's id and the attempt's, for the
/// worker's logs. Ids that are not valid metadata (not visible ASCII) are
/// left out: they still travel in the request body.
fn label<T>(request: &mut tonic::Request<T>, render_id: &str, attempt_id: &str) {
    use tonic::metadata::MetadataValue;
    let metadata = request.metadata_mut();
    if let Ok(v) = MetadataValue::try_from(render_id) {
        metadata.insert(montage_proto::RENDER_ID_METADATA, v);
    }
    if let Ok(v) = MetadataValue::try_from(attempt_id) {
        metadata.insert(montage_proto::ATTEMPT_ID_METADATA, v);
    }
}

/// An inline artifact arriving in pieces: a temporary file in the target
/// directory (removed if dropped before it is committed), hashed as it is
/// written.
struct PartFile {
    file: tempfile::NamedTempFile,
    hasher: Sha256,
    written: u64,
}

impl PartFile {
    fn create(dir: &Path, tag: &str) -> std::io::Result<Self> {
        let file = tempfile::Builder::new()
            .prefix(&format!("{tag}."))
            .suffix(".part")
            .tempfile_in(dir)?;
        Ok(PartFile {
            file,
            hasher: Sha256::new(),
            written: 0,
        })
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
        if offset != self.written {
            return Err(format!(
                "artifact piece at offset {offset}, expected {}",
                self.written
            ));
        }
        self.file
            .write_all(data)
            .map_err(|e| format!("writing {}: {e}", self.file.path().display()))?;
        self.hasher.update(data);
        self.written += data.len() as u64;
        Ok(())
    }

    /// Checks size and hash against the worker's result and renames the file
    /// into place.
    fn commit(
        mut self,
        expected: &DeliveredArtifact,
        dest: &Path,
    ) -> Result<LocalArtifact, String> {
        self.file
            .flush()
            .and_then(|()| self.file.as_file().sync_all())
            .map_err(|e| format!("writing {}: {e}", self.file.path().display()))?;
        let sha = ContentHash::from_bytes(self.hasher.finalize().into());
        if self.written != expected.size || sha != expected.sha256 {
            return Err(format!(
                "artifact {:?} arrived as {} bytes with sha256 {sha}, but the worker reported {} bytes with sha256 {}",
                expected.kind, self.written, expected.size, expected.sha256
            ));
        }
        self.file
            .persist(dest)
            .map_err(|e| format!("renaming into {}: {}", dest.display(), e.error))?;
        Ok(LocalArtifact {
            path: dest.to_path_buf(),
            sha256: sha,
            size: self.written,
        })
    }
}

/// The final file names of a chunk's artifacts under a directory (as the
/// worker names them: [`ChunkRequest::artifact_names`]).
pub fn artifact_paths(dir: &Path, chunk: u32, codec: spec::VideoCodec) -> (PathBuf, PathBuf) {
    let (video, pcm) = ChunkRequest::artifact_names(chunker::ChunkIndex(chunk), codec);
    (dir.join(video), dir.join(pcm))
}

/// A worker's answer to `Describe`: the composition's metadata and the
/// versions of the renderer that will render it.
///
/// # Errors
/// The [`AttemptError`] to report: `Invalid` for a request the worker
/// refuses (a missing bundle or composition is the caller's input when
/// selecting), `Transient` when it cannot be reached or answers badly.
pub async fn describe(
    worker: &WorkerInfo,
    request: &DescribeRequest,
    access: &WorkerAccess,
) -> Result<Described, AttemptError> {
    use montage_proto::convert::Described as Wire;
    let address = &worker.address;
    let channel = access.endpoint(address)?.connect().await.map_err(|e| {
        AttemptError::new(
            FailureKind::Transient,
            format!("connecting: {}{}", error_chain(&e), transport_hint(address)),
        )
    })?;
    let mut client = ChunkWorkerClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut req = tonic::Request::new(pb::DescribeRequest::from(request));
    authorize(&mut req, access.token.as_deref())
        .map_err(|m| AttemptError::new(FailureKind::Invalid, m))?;
    let response = client
        .describe(req)
        .await
        .map_err(|s| AttemptError::new(classify(&s), status_text(address, &s)))?
        .into_inner();
    let Wire {
        meta,
        renderer,
        gif_palette,
    } = Wire::try_from(response).map_err(|e| {
        AttemptError::new(FailureKind::Transient, format!("the worker's answer: {e}"))
    })?;
    Ok(Described {
        meta,
        renderer,
        gif_palette,
    })
}

/// A composition's metadata and the renderer that resolved it.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    /// The metadata.
    pub meta: CompositionMeta,
    /// The worker's renderer versions.
    pub renderer: RendererVersion,
    /// The GIF palette of the frames asked for, if any were.
    pub gif_palette: Option<spec::GifPalette>,
}

impl ChunkRunner for GrpcRunner {
    type Output = ChunkFiles;

    fn run(
        &self,
        worker: &WorkerInfo,
        chunk: Chunk,
        attempt: u32,
        progress: mpsc::Sender<ChunkProgress>,
        cancel: CancellationToken,
    ) -> AttemptFuture<ChunkFiles> {
        // tonic channels reconnect by themselves: one per worker is enough.
        let channel = self.channel(&worker.address);
        let target = self.targets.get(&chunk.index().0).cloned();
        let mut request = self.template.clone();
        request.span = ChunkSpan::from(&chunk);
        let request_render_id = request.job_id.clone();
        let renderer = self.renderer.clone();
        let token = self.access.token.clone();
        let address = worker.address.clone();
        let audio_ready = self.audio_ready.clone();
        let attempt_id = montage_proto::attempt_id(&request.job_id, chunk.index().0, attempt);
        tracing::Span::current().record("attempt_id", attempt_id.as_str());
        Box::pin(async move {
            let channel = channel?;
            let target = target.ok_or_else(|| {
                AttemptError::new(
                    FailureKind::Invalid,
                    format!("chunk {} has no artifact target", chunk.index().0),
                )
            })?;
            request.target = target.target()?;
            // `None`: the chunk has no video artifact (audio only, image
            // sequences).
            let codec = request
                .frames_to
                .has_video_artifact()
                .then_some(request.video.codec);
            let audio_first = audio_ready.is_some() && !matches!(target, ChunkTarget::Store { .. });
            let wire = pb::RenderChunkRequest::from(&WireChunkRequest {
                request,
                renderer,
                audio_first,
            });
            let mut client =
                ChunkWorkerClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
            let mut req = tonic::Request::new(wire);
            authorize(&mut req, token.as_deref())
                .map_err(|m| AttemptError::new(FailureKind::Invalid, m))?;
            label(&mut req, &request_render_id, &attempt_id);
            let call = async {
                let stream = client
                    .render_chunk(req)
                    .await
                    .map_err(|s| status_error(&address, &s))?
                    .into_inner();
                tracing::info!("chunk accepted by the worker");
                let tag = format!("chunk-{:06}.attempt-{attempt}", chunk.index().0);
                let mut receiver =
                    Receiver::new(chunk.index().0, &target, tag, &progress, &address, codec);
                receiver.audio_ready = audio_ready.as_ref();
                receiver.receive(stream).await
            };
            tokio::select! {
                r = call => r,
                _ = cancel.cancelled() => Err(AttemptError::new(FailureKind::Transient, "cancelled")),
            }
        })
    }
}

/// One attempt's side of a `RenderChunk` stream: progress forwarded, inline
/// artifact pieces written to their files, the result checked.
struct Receiver<'a> {
    index: u32,
    target: &'a ChunkTarget,
    tag: String,
    progress: &'a mpsc::Sender<ChunkProgress>,
    /// The worker's address, for what to check when the stream breaks.
    address: &'a str,
    video: Option<PartFile>,
    audio: Option<PartFile>,
    /// The video codec: it decides the video artifact's file name; `None`
    /// when the chunk has no video artifact.
    codec: Option<spec::VideoCodec>,
    /// Where PCM delivered before the frames goes.
    audio_ready: Option<&'a AudioReady>,
    /// The PCM the worker delivered before its frames, in place.
    early_audio: Option<LocalArtifact>,
}

impl<'a> Receiver<'a> {
    fn new(
        index: u32,
        target: &'a ChunkTarget,
        tag: String,
        progress: &'a mpsc::Sender<ChunkProgress>,
        address: &'a str,
        codec: Option<spec::VideoCodec>,
    ) -> Self {
        Receiver {
            index,
            target,
            tag,
            progress,
            address,
            video: None,
            audio: None,
            codec,
            audio_ready: None,
            early_audio: None,
        }
    }

    /// Reads the stream until the worker's result, and finishes with it.
    async fn receive(
        mut self,
        mut stream: tonic::Streaming<pb::RenderChunkEvent>,
    ) -> Result<ChunkFiles, AttemptError> {
        loop {
            let event = stream
                .message()
                .await
                .map_err(|s| status_error(self.address, &s))?
                .ok_or_else(|| {
                    AttemptError::new(
                        FailureKind::Transient,
                        "the worker ended the stream without a result",
                    )
                })?;
            let event = ChunkEvent::try_from(event).map_err(|e| {
                AttemptError::new(FailureKind::Transient, format!("the worker sent {e}"))
            })?;
            match event {
                ChunkEvent::Progress(p) => {
                    let _ = self.progress.send(p).await;
                }
                ChunkEvent::Data {
                    kind,
                    offset,
                    bytes,
                } => self
                    .piece(kind, offset, &bytes)
                    .map_err(|m| AttemptError::new(FailureKind::Transient, m))?,
                ChunkEvent::Audio(a) => self
                    .audio_first(&a)
                    .map_err(|m| AttemptError::new(FailureKind::Transient, m))?,
                ChunkEvent::Result(r) => {
                    let parts = Parts {
                        video: self.video,
                        audio: self.audio,
                        early_audio: self.early_audio,
                    };
                    return finish(r, self.index, self.codec, self.target, parts, self.progress)
                        .await;
                }
            }
        }
    }

    /// The chunk's PCM, complete before its frames: checked and put in
    /// place as at the end, then handed on.
    fn audio_first(&mut self, artifact: &DeliveredArtifact) -> Result<(), String> {
        if self.early_audio.is_some() {
            return Err("the worker announced its audio twice".into());
        }
        let shared = match self.target {
            ChunkTarget::Inline(_) => false,
            ChunkTarget::SharedDir(_) => true,
            ChunkTarget::Store { .. } => {
                return Err("the worker announced its audio early for an upload".into());
            }
        };
        let (_, path) = artifact_paths(
            self.target.dir(),
            self.index,
            self.codec.unwrap_or_default(),
        );
        let local = in_place(self.audio.take(), artifact, &path, shared)?;
        if let Some(ready) = self.audio_ready {
            ready(self.index, &local);
        }
        self.early_audio = Some(local);
        Ok(())
    }

    /// Writes one inline artifact piece.
    fn piece(&mut self, kind: ArtifactKind, offset: u64, bytes: &[u8]) -> Result<(), String> {
        let dir = self.target.dir();
        let slot = match kind {
            ArtifactKind::VideoTs => &mut self.video,
            ArtifactKind::AudioPcm => &mut self.audio,
        };
        if slot.is_none() {
            let name = format!("{}.{}", self.tag, kind.extension());
            *slot = Some(
                PartFile::create(dir, &name)
                    .map_err(|e| format!("creating a chunk file in {}: {e}", dir.display()))?,
            );
        }
        if let Some(part) = slot.as_mut() {
            part.write(offset, bytes)?;
        }
        // Bytes arriving are liveness too.
        let _ = self.progress.try_send(ChunkProgress::default());
        Ok(())
    }
}

/// An artifact the worker wrote into the directory this coordinator gave it,
/// on this machine: it must be exactly the file the coordinator expects
/// (nothing a worker names elsewhere is accepted), with the size the worker
/// reported (the worker hashed it while writing; re-reading it here would
/// only cost I/O).
fn written_by_worker(
    artifact: &DeliveredArtifact,
    expected: &Path,
) -> Result<LocalArtifact, String> {
    let Some(location) = &artifact.location else {
        return Err(format!("the worker sent no {:?} bytes", artifact.kind));
    };
    if Path::new(location) != expected {
        return Err(format!(
            "the worker wrote its {:?} to `{}`, not to `{}` where it was asked",
            artifact.kind,
            spec::quote(location),
            expected.display()
        ));
    }
    let size = std::fs::metadata(expected)
        .map_err(|e| format!("the worker's {}: {e}", expected.display()))?
        .len();
    if size != artifact.size {
        return Err(format!(
            "{} holds {size} bytes, but the worker reported {}",
            expected.display(),
            artifact.size
        ));
    }
    Ok(LocalArtifact {
        path: expected.to_path_buf(),
        sha256: artifact.sha256,
        size,
    })
}

/// Downloads an artifact the worker stored under `prefix`, verifying its
/// sha256, into `dir` under the object's own name (so the cache record the
/// coordinator writes names the objects); pings `progress` meanwhile
/// (downloads are liveness).
async fn download(
    store: &Arc<dyn ObjectStore>,
    prefix: &str,
    artifact: &DeliveredArtifact,
    dir: &Path,
    progress: &mpsc::Sender<ChunkProgress>,
) -> Result<LocalArtifact, String> {
    let expected_url_prefix = store.url(prefix);
    let location = artifact.location.as_deref().unwrap_or_default();
    let name = location
        .strip_prefix(&expected_url_prefix)
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| {
            format!(
                "the worker stored its {:?} at `{}`, outside `{expected_url_prefix}`",
                artifact.kind,
                spec::quote(location)
            )
        })?;
    let key = format!("{prefix}{name}");
    let dest = dir.join(name);
    let get = store.get_file(&key, &dest, Some(&artifact.sha256));
    tokio::pin!(get);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let meta = loop {
        tokio::select! {
            r = &mut get => break r.map_err(|e| format!("downloading {location}: {e}"))?,
            _ = ticker.tick() => { let _ = progress.try_send(ChunkProgress::default()); }
        }
    };
    Ok(LocalArtifact {
        path: dir.join(name),
        sha256: artifact.sha256,
        size: meta.size,
    })
}

/// What an attempt received before its result: inline pieces, and the PCM
/// delivered before the frames.
struct Parts {
    video: Option<PartFile>,
    audio: Option<PartFile>,
    early_audio: Option<LocalArtifact>,
}

/// An artifact in place at `path`: the inline pieces received (`part`)
/// checked and renamed there, or an empty artifact created, or, when the
/// worker writes into the coordinator's directory (`shared`), the file it
/// wrote there.
fn in_place(
    part: Option<PartFile>,
    artifact: &DeliveredArtifact,
    path: &Path,
    shared: bool,
) -> Result<LocalArtifact, String> {
    match part {
        Some(part) => part.commit(artifact, path),
        // An empty artifact sends no bytes.
        None if artifact.size == 0 && artifact.location.is_none() => {
            File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(LocalArtifact {
                path: path.to_path_buf(),
                sha256: artifact.sha256,
                size: 0,
            })
        }
        None if shared => written_by_worker(artifact, path),
        None => Err(format!(
            "the worker sent no {:?} bytes for an inline target",
            artifact.kind
        )),
    }
}

async fn finish(
    result: ChunkReport,
    index: u32,
    codec: Option<spec::VideoCodec>,
    target: &ChunkTarget,
    parts: Parts,
    progress: &mpsc::Sender<ChunkProgress>,
) -> Result<ChunkFiles, AttemptError> {
    let bad = |m: String| AttemptError::new(FailureKind::Transient, m);
    if result.chunk_index != index {
        return Err(bad(format!(
            "the worker answered for chunk {} instead of {index}",
            result.chunk_index
        )));
    }
    let video_artifact = match (codec, result.artifact(ArtifactKind::VideoTs)) {
        (Some(_), None) => return Err(bad("the worker's result lists no video artifact".into())),
        (None, Some(_)) => {
            return Err(bad(
                "the worker sent a video artifact for a chunk whose frames go elsewhere".into(),
            ));
        }
        (_, artifact) => artifact,
    };
    let audio_artifact = result.artifact(ArtifactKind::AudioPcm);
    let Parts {
        video,
        audio,
        early_audio,
    } = parts;
    if let Some(early) = &early_audio
        && audio_artifact.is_none_or(|a| a.sha256 != early.sha256 || a.size != early.size)
    {
        return Err(bad(
            "the worker's result lists other audio than it delivered first".into(),
        ));
    }
    let (video, audio) = match target {
        ChunkTarget::Store { store, prefix, dir } => {
            let video = match video_artifact {
                Some(v) => Some(
                    download(store, prefix, v, dir, progress)
                        .await
                        .map_err(bad)?,
                ),
                None => None,
            };
            let audio = match audio_artifact {
                Some(a) => Some(
                    download(store, prefix, a, dir, progress)
                        .await
                        .map_err(bad)?,
                ),
                None => None,
            };
            (video, audio)
        }
        ChunkTarget::Inline(dir) | ChunkTarget::SharedDir(dir) => {
            let (video_path, audio_path) = artifact_paths(dir, index, codec.unwrap_or_default());
            let shared = matches!(target, ChunkTarget::SharedDir(_));
            let video = match video_artifact {
                Some(v) => Some(in_place(video, v, &video_path, shared).map_err(bad)?),
                None => None,
            };
            let audio = match (early_audio, audio_artifact) {
                (Some(early), _) => Some(early),
                (None, Some(a)) => Some(in_place(audio, a, &audio_path, shared).map_err(bad)?),
                (None, None) => None,
            };
            (video, audio)
        }
    };
    Ok(ChunkFiles {
        chunk: index,
        video,
        audio,
        pcm_format: result.pcm_format,
        frame_count: result.frame_count,
        sample_count: result.sample_count,
        timings: result.timings,
    })
}
