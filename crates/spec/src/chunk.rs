//! A request to render one chunk, and to describe a composition.

use std::fmt;
use std::path::Path;

use chunker::{Chunk, ChunkIndex, PlanError};
use timebase::{Fps, FrameRange};

use crate::{ArtifactTarget, PcmFormat, Props, SourceSpec, VideoCodec, VideoSettings};

/// The frames a chunk owns, as the coordinator planned them. Turned into a
/// [`chunker::Chunk`] (with its exact sample span) once the composition's fps
/// is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkSpan {
    /// Position of the chunk in the plan.
    pub index: ChunkIndex,
    /// Composition frames the chunk owns (inclusive).
    pub frames: FrameRange,
    /// First frame of the whole render: timestamps are relative to it.
    pub composition_start: u64,
    /// Keep one frame in this many (at least 1).
    pub every_nth_frame: u32,
}

impl From<&Chunk> for ChunkSpan {
    fn from(c: &Chunk) -> Self {
        ChunkSpan {
            index: c.index(),
            frames: c.frames(),
            composition_start: c.composition_start().0,
            every_nth_frame: c.every_nth_frame(),
        }
    }
}

impl ChunkSpan {
    /// The chunk this span describes in a composition at `fps`, its audio
    /// at `sample_rate` (the inverse of `ChunkSpan::from(&chunk)`).
    ///
    /// # Errors
    /// The planner's error for a span no plan could hold (inverted or
    /// overflowing frames).
    pub fn to_chunk(&self, fps: Fps, sample_rate: u32) -> Result<Chunk, PlanError> {
        Chunk::from_parts(
            self.index,
            self.frames.first.0..=self.frames.last.0,
            self.every_nth_frame,
            self.composition_start,
            fps,
            sample_rate,
        )
    }

    /// Output frames the span holds: one in every `every_nth_frame` of its
    /// frames.
    pub fn output_frames(&self) -> u64 {
        self.frames
            .len()
            .div_ceil(u64::from(self.every_nth_frame.max(1)))
    }
}

/// A validated request to render one chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRequest {
    /// The caller's id of the whole render, for logs.
    pub job_id: String,
    /// Where the composition comes from.
    pub source: SourceSpec,
    /// The composition's id within its source.
    pub composition_id: String,
    /// Props (empty: the composition's defaults).
    pub props: Props,
    /// The frames to render.
    pub span: ChunkSpan,
    /// Encoder settings.
    pub video: VideoSettings,
    /// Sample format of the PCM artifact.
    pub pcm_format: PcmFormat,
    /// Where the artifacts go.
    pub target: ArtifactTarget,
}

impl ChunkRequest {
    /// The artifact file names for chunk `index` of video in `codec`:
    /// `chunk-NNNNNN.ts` (or `.mkv`, see [`VideoCodec::chunk_container`])
    /// and `chunk-NNNNNN.pcm`.
    pub fn artifact_names(index: ChunkIndex, codec: VideoCodec) -> (String, String) {
        (
            format!(
                "chunk-{:06}.{}",
                index.0,
                codec.chunk_container().extension()
            ),
            format!("chunk-{:06}.pcm", index.0),
        )
    }

    /// The directory artifacts are written to, if the target is one.
    pub fn target_dir(&self) -> Option<&Path> {
        match &self.target {
            ArtifactTarget::Directory(d) => Some(d),
            ArtifactTarget::Inline | ArtifactTarget::Storage(_) => None,
        }
    }
}

impl fmt::Display for ChunkRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "job `{}` chunk {} of `{}` frames {}",
            crate::quote(&self.job_id),
            self.span.index,
            crate::quote(&self.composition_id),
            self.span.frames
        )
    }
}

/// A request to resolve a composition's metadata (the coordinator's select
/// step).
#[derive(Debug, Clone, PartialEq)]
pub struct DescribeRequest {
    /// Where the composition comes from.
    pub source: SourceSpec,
    /// The composition's id within its source.
    pub composition_id: String,
    /// Props (empty: the composition's defaults).
    pub props: Props,
    /// Composition frames to render and compute a GIF palette from (GIF
    /// renders only; empty for none).
    pub palette_frames: Vec<u64>,
}
