//! The production [`ChunkRunner`]: one `RenderChunk` call over gRPC.
//!
//! This is the only module of the coordinator that sees generated proto
//! types. Status codes decide what happens next (never message text):
//! `INVALID_ARGUMENT` and `UNAUTHENTICATED` fail the render, `RESOURCE_EXHAUSTED`
//! sends the chunk elsewhere without counting an attempt, anything else is
//! retried on another worker.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chunker::Chunk;
use montage_proto::v1 as pb;
use pb::chunk_worker_client::ChunkWorkerClient;
use sha2::{Digest, Sha256};
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
    /// Lower-case hex sha256 of its bytes (as the worker reported and the
    /// coordinator checked, or trusted for a worker on this machine).
    pub sha256: String,
    /// Bytes.
    pub size: u64,
}

/// One chunk's artifacts on the coordinator's disk, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkFiles {
    /// The chunk's index.
    pub chunk: u32,
    /// H.264 in MPEG-TS.
    pub video: LocalArtifact,
    /// Raw interleaved PCM, if the render has audio.
    pub audio: Option<LocalArtifact>,
    /// The PCM sample format.
    pub pcm_format: pb::PcmFormat,
    /// Frames the worker reported.
    pub frame_count: u64,
    /// Samples (per channel) the worker reported.
    pub sample_count: u64,
    /// The worker's stage timings.
    pub timings: pb::StageTimings,
}

/// Maps a gRPC status to what the scheduler does next.
pub fn classify(status: &tonic::Status) -> FailureKind {
    use tonic::Code;
    match status.code() {
        Code::InvalidArgument | Code::Unauthenticated | Code::PermissionDenied => {
            FailureKind::Invalid
        }
        Code::ResourceExhausted => FailureKind::Busy,
        _ => FailureKind::Transient,
    }
}

fn status_error(status: &tonic::Status) -> AttemptError {
    AttemptError::new(
        classify(status),
        format!("{:?}: {}", status.code(), status.message()),
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
    fn wire(&self) -> pb::artifact_target::Kind {
        match self {
            ChunkTarget::Inline(_) => pb::artifact_target::Kind::Inline(pb::Inline {}),
            ChunkTarget::SharedDir(dir) => {
                pb::artifact_target::Kind::Location(dir.to_string_lossy().into_owned())
            }
            ChunkTarget::Store { store, prefix, .. } => {
                pb::artifact_target::Kind::Location(store.url(prefix))
            }
        }
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
    template: pb::RenderChunkRequest,
    targets: HashMap<u32, ChunkTarget>,
    token: Option<String>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl GrpcRunner {
    /// A runner sending `template` (everything but the chunk's own fields)
    /// for every chunk, delivering chunk `i`'s artifacts to `targets[&i]`,
    /// authenticating with `token` when given.
    pub fn new(
        template: pb::RenderChunkRequest,
        targets: HashMap<u32, ChunkTarget>,
        token: Option<String>,
    ) -> Self {
        GrpcRunner {
            template,
            targets,
            token,
            channels: Mutex::default(),
        }
    }

    /// The request chunk `chunk` is rendered with (also what its cache key
    /// is computed from).
    pub fn request_for(&self, chunk: &Chunk) -> pb::RenderChunkRequest {
        chunk_request(&self.template, chunk)
    }

    fn channel(&self, address: &str) -> Result<Channel, AttemptError> {
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| AttemptError::new(FailureKind::Transient, "channel cache poisoned"))?;
        if let Some(c) = channels.get(address) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(address.to_owned())
            .map_err(|e| {
                AttemptError::new(
                    FailureKind::Invalid,
                    format!("worker address `{address}` is not a URL: {e}"),
                )
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }
}

/// Adds the bearer token to a request.
pub fn authorize<T>(request: &mut tonic::Request<T>, token: Option<&str>) -> Result<(), String> {
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().map_err(|_| {
            "the worker token contains characters not allowed in a header".to_owned()
        })?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(())
}

/// A temporary artifact file that is removed unless committed.
struct PartFile {
    tmp: PathBuf,
    file: Option<File>,
    hasher: Sha256,
    written: u64,
}

impl PartFile {
    fn create(tmp: PathBuf) -> std::io::Result<Self> {
        let file = File::create(&tmp)?;
        Ok(PartFile {
            tmp,
            file: Some(file),
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
        let file = self.file.as_mut().ok_or("artifact already closed")?;
        file.write_all(data)
            .map_err(|e| format!("writing {}: {e}", self.tmp.display()))?;
        self.hasher.update(data);
        self.written += data.len() as u64;
        Ok(())
    }

    /// Checks size and hash against the worker's result and renames the file
    /// into place.
    fn commit(mut self, expected: &pb::Artifact, dest: &Path) -> Result<LocalArtifact, String> {
        if let Some(mut f) = self.file.take() {
            f.flush()
                .and_then(|_| f.sync_all())
                .map_err(|e| format!("writing {}: {e}", self.tmp.display()))?;
        }
        let sha = hex::encode(self.hasher.clone().finalize());
        if self.written != expected.size || sha != expected.sha256 {
            return Err(format!(
                "artifact {:?} arrived as {} bytes with sha256 {sha}, but the worker reported {} bytes with sha256 {}",
                expected.kind(),
                self.written,
                expected.size,
                expected.sha256
            ));
        }
        std::fs::rename(&self.tmp, dest)
            .map_err(|e| format!("renaming {} to {}: {e}", self.tmp.display(), dest.display()))?;
        self.tmp = PathBuf::new();
        Ok(LocalArtifact {
            path: dest.to_path_buf(),
            sha256: sha,
            size: self.written,
        })
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            self.file.take();
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The final file names of a chunk's artifacts under a directory.
pub fn artifact_paths(dir: &Path, chunk: u32) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("chunk-{chunk:06}.ts")),
        dir.join(format!("chunk-{chunk:06}.pcm")),
    )
}

/// `template` with one chunk's own fields filled in (no target).
pub fn chunk_request(template: &pb::RenderChunkRequest, chunk: &Chunk) -> pb::RenderChunkRequest {
    let mut request = template.clone();
    request.chunk_index = chunk.index().0;
    request.frames = Some(chunk.frames().into());
    request.composition_start = chunk.composition_start().0;
    request.every_nth_frame = chunk.every_nth_frame();
    request.output = None;
    request
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
        let mut request = self.request_for(&chunk);
        let token = self.token.clone();
        Box::pin(async move {
            let channel = channel?;
            let target = target.ok_or_else(|| {
                AttemptError::new(
                    FailureKind::Invalid,
                    format!("chunk {} has no artifact target", chunk.index().0),
                )
            })?;
            request.output = Some(pb::ArtifactTarget {
                kind: Some(target.wire()),
            });
            let dir = target.dir().to_path_buf();
            let mut client =
                ChunkWorkerClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
            let mut req = tonic::Request::new(request);
            authorize(&mut req, token.as_deref())
                .map_err(|m| AttemptError::new(FailureKind::Invalid, m))?;
            let index = chunk.index().0;
            let tag = format!("chunk-{index:06}.attempt-{attempt}");
            let call = async {
                let mut stream = client
                    .render_chunk(req)
                    .await
                    .map_err(|s| status_error(&s))?
                    .into_inner();
                let mut video: Option<PartFile> = None;
                let mut audio: Option<PartFile> = None;
                loop {
                    let event = stream
                        .message()
                        .await
                        .map_err(|s| status_error(&s))?
                        .ok_or_else(|| {
                            AttemptError::new(
                                FailureKind::Transient,
                                "the worker ended the stream without a result",
                            )
                        })?;
                    match event.event {
                        Some(pb::render_chunk_event::Event::Progress(p)) => {
                            let _ = progress
                                .send(ChunkProgress {
                                    frames_rendered: p.frames_rendered,
                                    frames_encoded: p.frames_encoded,
                                })
                                .await;
                        }
                        Some(pb::render_chunk_event::Event::Data(d)) => {
                            let (slot, ext) = match d.kind() {
                                pb::ArtifactKind::VideoTs => (&mut video, "ts"),
                                pb::ArtifactKind::AudioPcm => (&mut audio, "pcm"),
                                pb::ArtifactKind::Unspecified => {
                                    return Err(AttemptError::new(
                                        FailureKind::Transient,
                                        "the worker sent artifact data of unspecified kind",
                                    ));
                                }
                            };
                            if slot.is_none() {
                                let tmp = dir.join(format!("{tag}.{ext}.part"));
                                *slot = Some(PartFile::create(tmp).map_err(|e| {
                                    AttemptError::new(
                                        FailureKind::Transient,
                                        format!("creating a chunk file in {}: {e}", dir.display()),
                                    )
                                })?);
                            }
                            if let Some(part) = slot.as_mut() {
                                part.write(d.offset, &d.data)
                                    .map_err(|m| AttemptError::new(FailureKind::Transient, m))?;
                            }
                            // Bytes arriving are liveness too.
                            let _ = progress.try_send(ChunkProgress::default());
                        }
                        Some(pb::render_chunk_event::Event::Result(r)) => {
                            return finish(r, index, &target, video, audio, &progress).await;
                        }
                        None => {}
                    }
                }
            };
            tokio::select! {
                r = call => r,
                _ = cancel.cancelled() => Err(AttemptError::new(FailureKind::Transient, "cancelled")),
            }
        })
    }
}

/// An artifact the worker wrote into a directory on this machine: it must be
/// there with the size the worker reported (the worker hashed it while
/// writing; re-reading it here would only cost I/O).
fn written_by_worker(artifact: &pb::Artifact) -> Result<LocalArtifact, String> {
    if artifact.location.is_empty() {
        return Err(format!("the worker sent no {:?} bytes", artifact.kind()));
    }
    let path = PathBuf::from(&artifact.location);
    let size = std::fs::metadata(&path)
        .map_err(|e| format!("the worker's {}: {e}", path.display()))?
        .len();
    if size != artifact.size {
        return Err(format!(
            "{} holds {size} bytes, but the worker reported {}",
            path.display(),
            artifact.size
        ));
    }
    Ok(LocalArtifact {
        path,
        sha256: artifact.sha256.clone(),
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
    artifact: &pb::Artifact,
    dir: &Path,
    progress: &mpsc::Sender<ChunkProgress>,
) -> Result<LocalArtifact, String> {
    let expected_url_prefix = store.url(prefix);
    let name = artifact
        .location
        .strip_prefix(&expected_url_prefix)
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| {
            format!(
                "the worker stored its {:?} at `{}`, outside `{expected_url_prefix}`",
                artifact.kind(),
                artifact.location
            )
        })?;
    let hash: ContentHash = artifact
        .sha256
        .parse()
        .map_err(|e| format!("the worker's {:?}: {e}", artifact.kind()))?;
    let key = format!("{prefix}{name}");
    let dest = dir.join(name);
    let get = store.get_file(&key, &dest, Some(&hash));
    tokio::pin!(get);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let meta = loop {
        tokio::select! {
            r = &mut get => break r.map_err(|e| format!("downloading {}: {e}", artifact.location))?,
            _ = ticker.tick() => { let _ = progress.try_send(ChunkProgress::default()); }
        }
    };
    Ok(LocalArtifact {
        path: dir.join(name),
        sha256: artifact.sha256.clone(),
        size: meta.size,
    })
}

async fn finish(
    result: pb::ChunkResult,
    index: u32,
    target: &ChunkTarget,
    video: Option<PartFile>,
    audio: Option<PartFile>,
    progress: &mpsc::Sender<ChunkProgress>,
) -> Result<ChunkFiles, AttemptError> {
    let bad = |m: String| AttemptError::new(FailureKind::Transient, m);
    if result.chunk_index != index {
        return Err(bad(format!(
            "the worker answered for chunk {} instead of {index}",
            result.chunk_index
        )));
    }
    let find = |kind: pb::ArtifactKind| result.artifacts.iter().find(|a| a.kind() == kind);
    let video_artifact = find(pb::ArtifactKind::VideoTs)
        .ok_or_else(|| bad("the worker's result lists no video artifact".into()))?;
    let audio_artifact = find(pb::ArtifactKind::AudioPcm);
    let (video, audio) = match target {
        ChunkTarget::Store { store, prefix, dir } => {
            let video = download(store, prefix, video_artifact, dir, progress)
                .await
                .map_err(bad)?;
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
            let (video_path, audio_path) = artifact_paths(dir, index);
            let video = match video {
                Some(part) => part.commit(video_artifact, &video_path).map_err(bad)?,
                None => written_by_worker(video_artifact).map_err(bad)?,
            };
            let audio = match (audio_artifact, audio) {
                (Some(artifact), None) if !artifact.location.is_empty() => {
                    Some(written_by_worker(artifact).map_err(bad)?)
                }
                (Some(artifact), Some(part)) => {
                    Some(part.commit(artifact, &audio_path).map_err(bad)?)
                }
                (Some(artifact), None) if artifact.size == 0 => {
                    File::create(&audio_path)
                        .map_err(|e| bad(format!("{}: {e}", audio_path.display())))?;
                    Some(LocalArtifact {
                        path: audio_path,
                        sha256: artifact.sha256.clone(),
                        size: 0,
                    })
                }
                (Some(_), None) => {
                    return Err(bad("the worker listed audio but sent no audio bytes".into()));
                }
                (None, _) => None,
            };
            (video, audio)
        }
    };
    Ok(ChunkFiles {
        chunk: index,
        video,
        audio,
        pcm_format: result.pcm_format(),
        frame_count: result.frame_count,
        sample_count: result.sample_count,
        timings: result.timings.unwrap_or_default(),
    })
}
