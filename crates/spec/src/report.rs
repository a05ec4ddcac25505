//! What a worker reports while and after it renders a chunk.

use std::time::Duration;

use crate::{ContentHash, PcmFormat};

/// Progress of one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct ChunkProgress {
    /// Frames rendered to RGBA.
    pub frames_rendered: u64,
    /// Frames that came out of the encoder.
    pub frames_encoded: u64,
    /// Frames the chunk has.
    pub frames_total: u64,
}

/// What kind of bytes an artifact holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    /// The chunk's video: H.264 or H.265 in MPEG-TS, or VP9, AV1 or
    /// ProRes in Matroska (the codec's [`crate::VideoCodec::chunk_container`]).
    /// Named for the first kind, as the wire's `VIDEO_TS` is.
    VideoTs,
    /// Raw interleaved PCM in the request's format.
    AudioPcm,
}

impl ArtifactKind {
    /// The file extension of the kind for H.264: `ts` or `pcm` (see
    /// [`crate::ChunkRequest::artifact_names`] for the others).
    pub fn extension(self) -> &'static str {
        match self {
            ArtifactKind::VideoTs => "ts",
            ArtifactKind::AudioPcm => "pcm",
        }
    }
}

/// One artifact as the worker delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredArtifact {
    /// What it holds.
    pub kind: ArtifactKind,
    /// Where it was delivered: a local path or the object's URL; `None` when
    /// its bytes were streamed in the call.
    pub location: Option<String>,
    /// The sha256 of its bytes.
    pub sha256: ContentHash,
    /// Its size in bytes.
    pub size: u64,
}

/// Time spent per stage of a chunk (stages overlap: they run in parallel
/// threads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StageTimings {
    /// Rendering RGBA frames (summed over render threads).
    pub render: Duration,
    /// RGBA→YUV conversion.
    pub convert: Duration,
    /// libx264 and the muxer, including the final flush and hashing.
    pub encode: Duration,
    /// Rendering and writing PCM.
    pub audio: Duration,
    /// Delivering the artifacts (streaming them inline or uploading them).
    pub deliver: Duration,
    /// Wall time of the whole chunk.
    pub total: Duration,
}

/// The result of one rendered chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkReport {
    /// Position of the chunk in the plan.
    pub chunk_index: u32,
    /// Frames in the video artifact.
    pub frame_count: u64,
    /// Sample frames (per channel) in the audio artifact.
    pub sample_count: u64,
    /// Format of the PCM artifact.
    pub pcm_format: PcmFormat,
    /// The artifacts.
    pub artifacts: Vec<DeliveredArtifact>,
    /// Time per stage.
    pub timings: StageTimings,
}

impl ChunkReport {
    /// The artifact of `kind`, if delivered.
    pub fn artifact(&self, kind: ArtifactKind) -> Option<&DeliveredArtifact> {
        self.artifacts.iter().find(|a| a.kind == kind)
    }
}

/// What a `RenderChunk` call streams: progress, inline artifact bytes (in
/// order, offsets adding up), then exactly one result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkEvent {
    /// Progress so far (also a heartbeat).
    Progress(ChunkProgress),
    /// A piece of an inline artifact.
    Data {
        /// Which artifact.
        kind: ArtifactKind,
        /// Where the piece starts in it.
        offset: u64,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// The chunk is done.
    Result(ChunkReport),
    /// The chunk's PCM is complete, before its frames are (only when asked
    /// for): where it was delivered, or, for an inline target, that every
    /// piece of it was sent.
    Audio(DeliveredArtifact),
}
