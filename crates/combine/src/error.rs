//! The one error type of the combine crate.

use std::path::PathBuf;

use chunker::ChunkIndex;

/// Why a combine was refused or failed. Every variant names the chunk (by
/// its planned index) or the file involved and, for mismatches, the
/// difference. Whatever the error, nothing is left at the output path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CombineError {
    /// No chunks were given.
    #[error("no chunks to combine: give at least one chunk artifact")]
    NoChunks,
    /// An option is out of range.
    #[error("option `{option}` = {given} is invalid: {allowed}")]
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// The value given.
        given: String,
        /// What is allowed.
        allowed: &'static str,
    },
    /// The same planned chunk appears twice.
    #[error(
        "chunk {index} is duplicated: it appears at positions {first} and {second} of the list"
    )]
    DuplicateChunk {
        /// The chunk's planned index.
        index: ChunkIndex,
        /// First position in the list (0-based).
        first: usize,
        /// Second position in the list (0-based).
        second: usize,
    },
    /// A planned chunk is absent.
    #[error(
        "chunk {index} is missing: the list jumps from frame {expected_frame} to a later chunk"
    )]
    MissingChunk {
        /// The planned index of the missing chunk.
        index: ChunkIndex,
        /// The first output frame it would have supplied.
        expected_frame: u64,
    },
    /// The chunks are all there but not in output order.
    #[error("chunk {found} is out of order: position {position} must hold chunk {expected}")]
    OutOfOrder {
        /// Position in the list (0-based).
        position: usize,
        /// The chunk index that belongs there.
        expected: ChunkIndex,
        /// The chunk index found there.
        found: ChunkIndex,
    },
    /// A chunk description does not fit the others or the options (its
    /// frames, composition start, every-nth-frame or sample span).
    #[error("chunk {chunk}: {field} is {found}, expected {expected}")]
    PlanMismatch {
        /// The chunk's planned index.
        chunk: ChunkIndex,
        /// What differs.
        field: &'static str,
        /// What the plan (or the first chunk) says.
        expected: String,
        /// What this chunk says.
        found: String,
    },
    /// Some chunks carry audio and others do not.
    #[error(
        "chunk {chunk} {has} PCM audio but chunk 0 {first_has}: give audio for every chunk or none"
    )]
    MixedAudio {
        /// The chunk that differs from chunk 0.
        chunk: ChunkIndex,
        /// "has" or "has no".
        has: &'static str,
        /// "has" or "has no".
        first_has: &'static str,
    },
    /// A chunk file cannot be read.
    #[error("chunk {chunk}: cannot read {path}: {source}")]
    Io {
        /// The chunk's planned index.
        chunk: ChunkIndex,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A chunk's video file is not whole (cut short or damaged on the way).
    #[error("chunk {chunk}: video {path} is truncated or corrupt: {detail}")]
    CorruptVideo {
        /// The chunk's planned index.
        chunk: ChunkIndex,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A chunk's video stream differs from chunk 0's in a way the output
    /// cannot carry (one MP4 track describes one set of parameters).
    #[error(
        "chunk {chunk}: video {field} differs from chunk 0: chunk 0 has {expected}, this chunk has {found}"
    )]
    StreamMismatch {
        /// The chunk's planned index.
        chunk: ChunkIndex,
        /// The parameter that differs (codec, width, height, pixel format,
        /// SPS, PPS, time base, ...).
        field: &'static str,
        /// Chunk 0's value.
        expected: String,
        /// This chunk's value.
        found: String,
    },
    /// A chunk's video is not what the combine can stream-copy.
    #[error("chunk {chunk}: video {path}: {detail}")]
    UnsupportedVideo {
        /// The chunk's planned index.
        chunk: ChunkIndex,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A chunk holds a different number of frames than planned.
    #[error("chunk {chunk}: video {path} holds {found} frames, the plan says {expected}")]
    FrameCount {
        /// The chunk's planned index.
        chunk: ChunkIndex,
        /// The file.
        path: PathBuf,
        /// Planned frames.
        expected: u64,
        /// Frames found.
        found: u64,
    },
    /// A packet's timestamp does not fall on one of the chunk's frames.
    #[error("chunk {chunk}: video packet {packet}: {detail}")]
    BadTimestamp {
        /// The chunk's planned index.
        chunk: ChunkIndex,
        /// The packet's position in the chunk (0-based, decode order).
        packet: u64,
        /// What is wrong.
        detail: String,
    },
    /// A chunk's PCM holds a different number of samples than its span.
    #[error(
        "chunk {chunk}: audio {path} holds {found_bytes} bytes, the plan's span {span} needs {expected_bytes} ({samples} samples × {channels} channels × {bytes_per_sample} bytes)"
    )]
    SampleCount {
        /// The chunk's planned index.
        chunk: ChunkIndex,
        /// The file.
        path: PathBuf,
        /// The planned span.
        span: chunker::timebase::SampleSpan,
        /// Samples per channel in the span.
        samples: u64,
        /// Channels.
        channels: u16,
        /// Bytes per sample value.
        bytes_per_sample: u8,
        /// Expected file size.
        expected_bytes: u64,
        /// Actual file size.
        found_bytes: u64,
    },
    /// A manifest ([`crate::Manifest::from_json`]) that is not valid JSON or
    /// holds a bad value.
    #[error("manifest: {}{detail}", if path == "." { String::new() } else { format!("{path}: ") })]
    InvalidManifest {
        /// Where in the document, as `chunks[3].chunk.frames` (`.` for the
        /// document itself).
        path: String,
        /// What is wrong, with its line and column.
        detail: String,
    },
    /// The combine was cancelled through its cancellation flag.
    #[error("combine cancelled")]
    Cancelled,
    /// The unnamed temporary file holding AAC packets encoded ahead
    /// ([`crate::AudioPrefix`]) could not be created, written or read.
    #[error("the temporary file of AAC encoded ahead: {source}")]
    AudioScratch {
        /// What the system said.
        source: std::io::Error,
    },
    /// FFmpeg failed while writing the output or encoding audio.
    #[error("{context}: {source}")]
    Ffmpeg {
        /// What was being done.
        context: String,
        /// FFmpeg's error.
        #[source]
        source: ffmpeg_next::Error,
    },
    /// The output file could not be created, finished or moved into place.
    #[error("output {path}: {source}")]
    Output {
        /// The path concerned (the temporary file or the final output).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl CombineError {
    pub(crate) fn ffmpeg(context: impl Into<String>) -> impl FnOnce(ffmpeg_next::Error) -> Self {
        let context = context.into();
        move |source| CombineError::Ffmpeg { context, source }
    }
}
