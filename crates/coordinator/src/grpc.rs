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
use std::sync::Mutex;
use std::time::Duration;

use chunker::Chunk;
use montage_proto::v1 as pb;
use pb::chunk_worker_client::ChunkWorkerClient;
use sha2::{Digest, Sha256};
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

/// One chunk's artifacts on the coordinator's disk, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkFiles {
    /// The chunk's index.
    pub chunk: u32,
    /// H.264 in MPEG-TS.
    pub video: PathBuf,
    /// Raw interleaved PCM, if the render has audio.
    pub audio: Option<PathBuf>,
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

/// Runs chunks on workers over gRPC, receiving artifacts inline and writing
/// them under a work directory.
pub struct GrpcRunner {
    template: pb::RenderChunkRequest,
    work_dir: PathBuf,
    shared_dir: bool,
    token: Option<String>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl GrpcRunner {
    /// A runner sending `template` (everything but the chunk's own fields)
    /// for every chunk, writing artifacts under `work_dir`, authenticating
    /// with `token` when given.
    pub fn new(template: pb::RenderChunkRequest, work_dir: PathBuf, token: Option<String>) -> Self {
        GrpcRunner {
            template,
            work_dir,
            shared_dir: false,
            token,
            channels: Mutex::default(),
        }
    }

    /// Workers see the work directory (they run on this machine): they
    /// write artifacts straight into it instead of streaming them back.
    pub fn with_shared_dir(mut self) -> Self {
        self.shared_dir = true;
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
    fn commit(mut self, expected: &pb::Artifact, dest: &Path) -> Result<(), String> {
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
        Ok(())
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
        let mut request = self.template.clone();
        request.chunk_index = chunk.index().0;
        request.frames = Some(chunk.frames().into());
        request.composition_start = chunk.composition_start().0;
        request.every_nth_frame = chunk.every_nth_frame();
        request.output = Some(pb::ArtifactTarget {
            kind: Some(if self.shared_dir {
                pb::artifact_target::Kind::Location(self.work_dir.to_string_lossy().into_owned())
            } else {
                pb::artifact_target::Kind::Inline(pb::Inline {})
            }),
        });
        let token = self.token.clone();
        let dir = self.work_dir.clone();
        Box::pin(async move {
            let channel = channel?;
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
                            return finish(r, index, &dir, video, audio);
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

/// An artifact the worker wrote into the shared work directory: it must be
/// there with the size the worker reported (the worker hashed it while
/// writing; re-reading it here would only cost I/O).
fn written_by_worker(artifact: &pb::Artifact) -> Result<PathBuf, String> {
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
    Ok(path)
}

fn finish(
    result: pb::ChunkResult,
    index: u32,
    dir: &Path,
    video: Option<PartFile>,
    audio: Option<PartFile>,
) -> Result<ChunkFiles, AttemptError> {
    let bad = |m: String| AttemptError::new(FailureKind::Transient, m);
    if result.chunk_index != index {
        return Err(bad(format!(
            "the worker answered for chunk {} instead of {index}",
            result.chunk_index
        )));
    }
    let (video_path, audio_path) = artifact_paths(dir, index);
    let find = |kind: pb::ArtifactKind| result.artifacts.iter().find(|a| a.kind() == kind);
    let video_artifact = find(pb::ArtifactKind::VideoTs)
        .ok_or_else(|| bad("the worker's result lists no video artifact".into()))?;
    let video_path = match video {
        Some(part) => {
            part.commit(video_artifact, &video_path).map_err(bad)?;
            video_path
        }
        None => written_by_worker(video_artifact).map_err(bad)?,
    };
    let audio_path = match (find(pb::ArtifactKind::AudioPcm), audio) {
        (Some(artifact), None) if !artifact.location.is_empty() => {
            Some(written_by_worker(artifact).map_err(bad)?)
        }
        (Some(artifact), Some(part)) => {
            part.commit(artifact, &audio_path).map_err(bad)?;
            Some(audio_path)
        }
        (Some(artifact), None) if artifact.size == 0 => {
            File::create(&audio_path).map_err(|e| bad(format!("{}: {e}", audio_path.display())))?;
            Some(audio_path)
        }
        (Some(_), None) => {
            return Err(bad("the worker listed audio but sent no audio bytes".into()));
        }
        (None, _) => None,
    };
    Ok(ChunkFiles {
        chunk: index,
        video: video_path,
        audio: audio_path,
        pcm_format: result.pcm_format(),
        frame_count: result.frame_count,
        sample_count: result.sample_count,
        timings: result.timings.unwrap_or_default(),
    })
}
