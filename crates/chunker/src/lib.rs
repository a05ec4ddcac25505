//! Pure chunk planning for Montage.
//!
//! The planner turns "this composition, these frames, this many chunks" into
//! an ordered list of [`Chunk`]s: each an inclusive frame range, the first
//! frame of the whole render (`composition_start`) and the exact half-open
//! audio sample span it owns. It does no I/O and knows nothing of gRPC,
//! codecs or workers.
//!
//! Rules (Remotion's, made exact):
//! - every chunk renders the same number of frames except the last, which may
//!   be shorter but never longer;
//! - asking for more chunks than frames gives fewer chunks, never empty ones;
//! - chunk `[a, b]` owns samples `[S(a), S(b+1))` with
//!   `S(f) = floor(f · rate · den / num)`, so the spans tile
//!   `[S(first), S(last+1))` exactly.
//!
//! ```
//! use chunker::{plan, ChunkSpec, PlanRequest};
//! use timebase::Fps;
//!
//! let request = PlanRequest::new(300, Fps::new(30, 1)?, ChunkSpec::Count(16));
//! let plan = plan(&request)?;
//! // 300 frames in 16 chunks: 15 chunks of 19 frames and a last one of 15.
//! assert_eq!(plan.chunks().len(), 16);
//! assert_eq!(plan.frames_per_chunk(), 19);
//! assert_eq!(plan.chunks()[15].frame_count(), 15);
//! // Chunk 1 renders frames 19..=37 and owns samples [30400, 60800).
//! let c = &plan.chunks()[1];
//! assert_eq!((c.frames().first.0, c.frames().last.0), (19, 37));
//! assert_eq!((c.samples().start.0, c.samples().end.0), (30_400, 60_800));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

use std::fmt;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};
use timebase::{DEFAULT_SAMPLE_RATE, Fps, FrameIndex, FrameRange, SampleSpan};

pub use timebase;

/// The index of a chunk in a plan (0-based, in output order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChunkIndex(pub u32);

impl fmt::Display for ChunkIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How to split the frames into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkSpec {
    /// At most this many chunks of equal size (the last may be shorter).
    Count(u32),
    /// Exactly this many output frames per chunk (the last may be shorter).
    FramesPerChunk(u64),
    /// Let the planner choose from the pool's slots
    /// ([`PlanRequest::with_slots`]) and the render's length:
    /// [`AUTO_CHUNKS_PER_SLOT`] chunks per slot, none shorter than
    /// [`AUTO_MIN_CHUNK_SECONDS`] of output, a whole number per slot when
    /// there are at least as many chunks as slots.
    Auto,
}

/// The most audio samples (per channel) one chunk may own: one hour at
/// 48 kHz. Every plan can stay under it with more chunks, since one output
/// frame lasts at most [`MAX_OUTPUT_FRAME_SECONDS`] (under 17 minutes).
pub const MAX_CHUNK_SAMPLES: u64 = 3600 * DEFAULT_SAMPLE_RATE as u64;

/// The most bytes one chunk may write, as [`ChunkCost`] estimates them:
/// 64 GB. A chunk is a unit of work a worker renders to its disk and may
/// lose to a failure; longer renders take more chunks.
pub const MAX_CHUNK_BYTES: u64 = 64_000_000_000;

/// The longest one output frame may last, in seconds (1/1001 fps).
/// Compositions run at 1 fps at least; `every_nth_frame` may slow the
/// output down to this and no further, which keeps every chunk's audio and
/// timestamps small whatever the request.
pub const MAX_OUTPUT_FRAME_SECONDS: u64 = 1001;

/// What a chunk's artifacts cost per output frame and per audio sample, for
/// the [`MAX_CHUNK_BYTES`] bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChunkCost {
    /// Bytes one encoded frame may take: an upper estimate (its raw size,
    /// which lossless encoding of noise reaches).
    pub frame_bytes: u64,
    /// Bytes of PCM per sample frame (all channels).
    pub sample_bytes: u64,
}
/// Chunks per slot [`ChunkSpec::Auto`] aims for. One per slot would cost the
/// fewest keyframes and encoder start-ups, but the slowest chunk then sets
/// the wall time (chunks differ in content, machines in load); a few per
/// slot let a slot that finishes early take more work.
pub const AUTO_CHUNKS_PER_SLOT: u32 = 3;

/// The shortest chunk [`ChunkSpec::Auto`] makes, in seconds of output (the
/// render's own length if shorter). Every chunk starts with an IDR frame and
/// an encoder start-up: 16 chunks of 19 frames made the promo's file 30 %
/// bigger than one chunk, so short renders get fewer chunks rather than
/// shorter ones.
pub const AUTO_MIN_CHUNK_SECONDS: u64 = 2;

/// Everything the planner needs. Build it with [`PlanRequest::new`] and the
/// `with_*` methods, then call [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRequest {
    /// The composition's duration in frames.
    pub duration_frames: u64,
    /// The composition's frame rate.
    pub fps: Fps,
    /// The inclusive frames to render; `None` renders the whole composition.
    pub frame_range: Option<RangeInclusive<u64>>,
    /// How to split the frames.
    pub chunks: ChunkSpec,
    /// A lower bound on output frames per chunk (fewer, longer chunks when
    /// [`ChunkSpec::Count`] would make them shorter).
    pub min_frames_per_chunk: Option<u64>,
    /// Render only every `n`th frame of the range (1 renders every frame).
    pub every_nth_frame: u32,
    /// Audio sample rate in Hz.
    pub sample_rate: u32,
    /// What each chunk's artifacts cost, to refuse chunks over
    /// [`MAX_CHUNK_BYTES`]; `None` checks only samples.
    pub cost: Option<ChunkCost>,
    /// Chunks that can render at once (the pool's slots), for
    /// [`ChunkSpec::Auto`]; at least 1.
    pub slots: u32,
}

impl PlanRequest {
    /// A request for the whole composition, every frame, at 48 kHz.
    pub fn new(duration_frames: u64, fps: Fps, chunks: ChunkSpec) -> Self {
        PlanRequest {
            duration_frames,
            fps,
            frame_range: None,
            chunks,
            min_frames_per_chunk: None,
            every_nth_frame: 1,
            sample_rate: DEFAULT_SAMPLE_RATE,
            cost: None,
            slots: 1,
        }
    }

    /// Plan [`ChunkSpec::Auto`] for `slots` chunks rendering at once (0
    /// counts as 1).
    pub fn with_slots(mut self, slots: u32) -> Self {
        self.slots = slots.max(1);
        self
    }

    /// Render only frames `range` (inclusive, as in `--frames 30-89`).
    pub fn with_frame_range(mut self, range: RangeInclusive<u64>) -> Self {
        self.frame_range = Some(range);
        self
    }

    /// Never make chunks shorter than `min` output frames (except the last).
    pub fn with_min_frames_per_chunk(mut self, min: u64) -> Self {
        self.min_frames_per_chunk = Some(min);
        self
    }

    /// Keep only every `n`th frame.
    pub fn with_every_nth_frame(mut self, n: u32) -> Self {
        self.every_nth_frame = n;
        self
    }

    /// Use audio sample rate `rate` (Hz).
    pub fn with_sample_rate(mut self, rate: u32) -> Self {
        self.sample_rate = rate;
        self
    }

    /// Refuse chunks whose artifacts would cost more than
    /// [`MAX_CHUNK_BYTES`].
    pub fn with_cost(mut self, cost: ChunkCost) -> Self {
        self.cost = Some(cost);
        self
    }
}

/// Why a request cannot be planned. Every message names the value given and
/// the values allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The composition has no frames.
    #[error("duration 0 frames is invalid: a composition must have at least 1 frame")]
    EmptyComposition,
    /// `ChunkSpec::Count(0)`.
    #[error("chunks 0 is invalid: ask for at least 1 chunk")]
    ZeroChunks,
    /// `ChunkSpec::FramesPerChunk(0)`.
    #[error("frames per chunk 0 is invalid: ask for at least 1 frame per chunk")]
    ZeroFramesPerChunk,
    /// `min_frames_per_chunk` of zero.
    #[error("minimum frames per chunk 0 is invalid: it must be at least 1")]
    ZeroMinFramesPerChunk,
    /// `every_nth_frame` of zero.
    #[error("every_nth_frame 0 is invalid: it must be at least 1 (1 keeps every frame)")]
    ZeroEveryNthFrame,
    /// A sample rate of zero.
    #[error("sample rate 0 is invalid: it must be at least 1 Hz (48000 is the default)")]
    ZeroSampleRate,
    /// A frame range whose first frame is after its last.
    #[error("frame range {first}-{last} is inverted: the first frame must not be after the last")]
    InvertedRange {
        /// First frame given.
        first: u64,
        /// Last frame given.
        last: u64,
    },
    /// A frame range that reaches outside the composition.
    #[error(
        "frame range {first}-{last} is outside the composition: frames run 0-{max} ({duration} frames)",
        max = duration - 1
    )]
    RangeOutOfBounds {
        /// First frame given.
        first: u64,
        /// Last frame given.
        last: u64,
        /// The composition's duration in frames.
        duration: u64,
    },
    /// `every_nth_frame` makes the output frame rate unrepresentable.
    #[error("every_nth_frame {n} is too large for fps {fps}")]
    EveryNthTooLarge {
        /// The value given.
        n: u32,
        /// The composition's frame rate.
        fps: Fps,
    },
    /// `every_nth_frame` makes output frames last longer than
    /// [`MAX_OUTPUT_FRAME_SECONDS`].
    #[error(
        "the output frame rate {output} fps (fps {fps} ÷ every_nth_frame {n}) is too slow: an output frame may last at most {MAX_OUTPUT_FRAME_SECONDS} seconds (1/{MAX_OUTPUT_FRAME_SECONDS} fps)"
    )]
    OutputFpsTooLow {
        /// The value given.
        n: u32,
        /// The composition's frame rate.
        fps: Fps,
        /// The output frame rate it makes.
        output: Fps,
    },
    /// A chunk owns more audio than [`MAX_CHUNK_SAMPLES`].
    #[error(
        "chunk {index} (frames {frames}) owns {samples} audio samples at {sample_rate} Hz; a chunk may own at most {MAX_CHUNK_SAMPLES} (one hour at 48000 Hz): split the render into more chunks"
    )]
    TooManySamples {
        /// The chunk.
        index: ChunkIndex,
        /// Its frames.
        frames: FrameRange,
        /// The samples it owns.
        samples: u64,
        /// The sample rate.
        sample_rate: u32,
    },
    /// A chunk would write more than [`MAX_CHUNK_BYTES`].
    #[error(
        "chunk {index} (frames {frames}) would write about {bytes} bytes ({output_frames} frames of up to {frame_bytes} bytes, {samples} samples of {sample_bytes} bytes); a chunk may write at most {MAX_CHUNK_BYTES}: split the render into more chunks"
    )]
    TooManyBytes {
        /// The chunk.
        index: ChunkIndex,
        /// Its frames.
        frames: FrameRange,
        /// The estimate.
        bytes: u64,
        /// Frames it renders.
        output_frames: u64,
        /// Bytes per frame estimated.
        frame_bytes: u64,
        /// Samples it owns.
        samples: u64,
        /// Bytes per sample frame.
        sample_bytes: u64,
    },
    /// A chunk description read from elsewhere (a manifest, a record) whose
    /// fields disagree with each other.
    #[error("chunk {index}: {field} {given} is invalid: {reason}")]
    InconsistentChunk {
        /// The chunk's index as given.
        index: ChunkIndex,
        /// The field that does not fit the others.
        field: &'static str,
        /// Its value.
        given: u64,
        /// What the other fields make it (or allow).
        reason: String,
    },
    /// The request would need more than `u32::MAX` chunks.
    #[error("{frames} frames at {per_chunk} frames per chunk need more than {max} chunks", max = u32::MAX)]
    TooManyChunks {
        /// Output frames to render.
        frames: u64,
        /// Frames per chunk.
        per_chunk: u64,
    },
}

/// One unit of work: a contiguous run of the composition's frames, rendered
/// (every `every_nth_frame`th of them) by one worker.
///
/// Deserializing checks what the fields say about each other (a frame range
/// that is not inverted, `every_nth_frame` of at least 1, the first output
/// frame and the frame count that the frames imply) and refuses a chunk that
/// disagrees with [`PlanError::InconsistentChunk`]. Its sample span can only
/// be checked against a frame rate: `combine` does that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "ChunkRepr")]
pub struct Chunk {
    index: ChunkIndex,
    frames: FrameRange,
    every_nth_frame: u32,
    composition_start: FrameIndex,
    first_output_frame: u64,
    output_frames: u64,
    samples: SampleSpan,
}

impl Chunk {
    /// The chunk's position in output order.
    pub fn index(&self) -> ChunkIndex {
        self.index
    }

    /// The composition frames this chunk owns (inclusive). With
    /// `every_nth_frame == 1` these are exactly the frames it renders.
    pub fn frames(&self) -> FrameRange {
        self.frames
    }

    /// The first frame of the whole render: timestamps are relative to it.
    pub fn composition_start(&self) -> FrameIndex {
        self.composition_start
    }

    /// Keep one frame in this many.
    pub fn every_nth_frame(&self) -> u32 {
        self.every_nth_frame
    }

    /// The index of this chunk's first frame in the output video.
    pub fn first_output_frame(&self) -> u64 {
        self.first_output_frame
    }

    /// Number of frames this chunk renders (and the output gets from it).
    pub fn frame_count(&self) -> u64 {
        self.output_frames
    }

    /// The audio samples this chunk owns: `[S(first), S(last+1))`.
    pub fn samples(&self) -> SampleSpan {
        self.samples
    }

    /// The composition frames this chunk renders, in order.
    pub fn rendered_frames(&self) -> impl DoubleEndedIterator<Item = FrameIndex> + use<> {
        let first = self.frames.first.0;
        let step = u64::from(self.every_nth_frame);
        (0..self.output_frames).map(move |k| FrameIndex(first + k * step))
    }

    /// Refuses a chunk that owns more than [`MAX_CHUNK_SAMPLES`] or whose
    /// artifacts would cost more than [`MAX_CHUNK_BYTES`] by `cost`
    /// (`None`: samples only).
    ///
    /// # Errors
    /// [`PlanError::TooManySamples`] or [`PlanError::TooManyBytes`] naming
    /// the chunk and the numbers.
    pub fn check_size(&self, sample_rate: u32, cost: Option<ChunkCost>) -> Result<(), PlanError> {
        let samples = self.samples.len();
        if samples > MAX_CHUNK_SAMPLES {
            return Err(PlanError::TooManySamples {
                index: self.index,
                frames: self.frames,
                samples,
                sample_rate,
            });
        }
        let Some(cost) = cost else {
            return Ok(());
        };
        let bytes = self
            .output_frames
            .saturating_mul(cost.frame_bytes)
            .saturating_add(samples.saturating_mul(cost.sample_bytes));
        if bytes > MAX_CHUNK_BYTES {
            return Err(PlanError::TooManyBytes {
                index: self.index,
                frames: self.frames,
                bytes,
                output_frames: self.output_frames,
                frame_bytes: cost.frame_bytes,
                samples,
                sample_bytes: cost.sample_bytes,
            });
        }
        Ok(())
    }

    /// Rebuilds a chunk description received from elsewhere (a worker request),
    /// checking that it is self-consistent.
    ///
    /// # Errors
    /// A [`PlanError`] naming the inconsistent value.
    pub fn from_parts(
        index: ChunkIndex,
        frames: RangeInclusive<u64>,
        every_nth_frame: u32,
        composition_start: u64,
        fps: Fps,
        sample_rate: u32,
    ) -> Result<Chunk, PlanError> {
        let (first, last) = (*frames.start(), *frames.end());
        let range = FrameRange::new(first, last).ok_or(PlanError::InvertedRange { first, last })?;
        if last == u64::MAX {
            return Err(PlanError::InconsistentChunk {
                index,
                field: "frames.last",
                given: last,
                reason: LAST_FRAME_REASON.into(),
            });
        }
        if every_nth_frame == 0 {
            return Err(PlanError::ZeroEveryNthFrame);
        }
        if sample_rate == 0 {
            return Err(PlanError::ZeroSampleRate);
        }
        if composition_start > first {
            return Err(PlanError::InvertedRange {
                first: composition_start,
                last: first,
            });
        }
        let (first_output_frame, output_frames) =
            output_position(range, every_nth_frame, composition_start);
        Ok(Chunk {
            index,
            frames: range,
            every_nth_frame,
            composition_start: FrameIndex(composition_start),
            first_output_frame,
            output_frames,
            samples: fps.sample_span_of(range, sample_rate),
        })
    }
}

/// A chunk's first output frame and output frame count, as its frames,
/// `every_nth_frame` and the render's first frame decide them. The caller
/// has checked `every_nth_frame >= 1` and `composition_start <= first`.
fn output_position(frames: FrameRange, every_nth_frame: u32, composition_start: u64) -> (u64, u64) {
    let step = u64::from(every_nth_frame);
    (
        (frames.first.0 - composition_start) / step,
        frames.len().div_ceil(step),
    )
}

/// Why a chunk may not end at frame `u64::MAX`: its end (`last + 1`), which
/// its length and sample span are made from, must exist.
const LAST_FRAME_REASON: &str =
    "the frame after a chunk's last must exist: the last frame may be at most 18446744073709551614";

/// What a serialized [`Chunk`] holds before it is checked.
#[derive(Deserialize)]
struct ChunkRepr {
    index: ChunkIndex,
    frames: FrameRange,
    every_nth_frame: u32,
    composition_start: FrameIndex,
    first_output_frame: u64,
    output_frames: u64,
    samples: SampleSpan,
}

impl TryFrom<ChunkRepr> for Chunk {
    type Error = PlanError;
    fn try_from(raw: ChunkRepr) -> Result<Self, Self::Error> {
        let bad = |field, given, reason: String| PlanError::InconsistentChunk {
            index: raw.index,
            field,
            given,
            reason,
        };
        let (frames, nth, start) = (raw.frames, raw.every_nth_frame, raw.composition_start.0);
        if frames.last.0 == u64::MAX {
            return Err(bad("frames.last", u64::MAX, LAST_FRAME_REASON.into()));
        }
        if nth == 0 {
            return Err(bad(
                "every_nth_frame",
                0,
                "it must be at least 1 (1 keeps every frame)".into(),
            ));
        }
        if start > frames.first.0 {
            return Err(bad(
                "composition_start",
                start,
                format!("it is after the chunk's first frame (frames {frames})"),
            ));
        }
        let (first_output_frame, output_frames) = output_position(frames, nth, start);
        if raw.first_output_frame != first_output_frame {
            return Err(bad(
                "first_output_frame",
                raw.first_output_frame,
                format!(
                    "frames {frames} every {nth} from composition start {start} make it {first_output_frame}"
                ),
            ));
        }
        if raw.output_frames != output_frames {
            return Err(bad(
                "output_frames",
                raw.output_frames,
                format!("frames {frames} every {nth} make it {output_frames}"),
            ));
        }
        Ok(Chunk {
            index: raw.index,
            frames,
            every_nth_frame: nth,
            composition_start: raw.composition_start,
            first_output_frame,
            output_frames,
            samples: raw.samples,
        })
    }
}

/// The result of [`plan`]: the chunks in output order and what they add up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    fps: Fps,
    output_fps: Fps,
    range: FrameRange,
    every_nth_frame: u32,
    frames_per_chunk: u64,
    output_frames: u64,
    sample_rate: u32,
    samples: SampleSpan,
    chunks: Vec<Chunk>,
}

impl Plan {
    /// The chunks, in output order.
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    /// The composition's frame rate.
    pub fn fps(&self) -> Fps {
        self.fps
    }

    /// The output video's frame rate (`fps / every_nth_frame`).
    pub fn output_fps(&self) -> Fps {
        self.output_fps
    }

    /// The composition frames rendered (inclusive).
    pub fn range(&self) -> FrameRange {
        self.range
    }

    /// Keep one frame in this many.
    pub fn every_nth_frame(&self) -> u32 {
        self.every_nth_frame
    }

    /// Output frames in every chunk but the last.
    pub fn frames_per_chunk(&self) -> u64 {
        self.frames_per_chunk
    }

    /// Frames in the output video.
    pub fn output_frames(&self) -> u64 {
        self.output_frames
    }

    /// Audio sample rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// All audio samples of the render: `[S(first), S(last+1))`.
    pub fn samples(&self) -> SampleSpan {
        self.samples
    }
}

/// Splits a render into chunks.
///
/// # Errors
/// A [`PlanError`] naming the bad value: zero chunks or frames per chunk, an
/// empty composition, an inverted range or one outside `[0, duration-1]`, a
/// zero `every_nth_frame` or sample rate, an output frame longer than
/// [`MAX_OUTPUT_FRAME_SECONDS`], a chunk over [`MAX_CHUNK_SAMPLES`] or (with
/// a [`ChunkCost`]) [`MAX_CHUNK_BYTES`].
///
/// ```
/// use chunker::{plan, ChunkSpec, PlanError, PlanRequest};
/// use timebase::Fps;
///
/// let fps = Fps::new(30_000, 1001)?;
/// // More chunks than frames: one chunk per frame, no empty chunks.
/// let p = plan(&PlanRequest::new(3, fps, ChunkSpec::Count(10)))?;
/// assert_eq!(p.chunks().len(), 3);
///
/// let err = plan(&PlanRequest::new(300, fps, ChunkSpec::Count(4)).with_frame_range(0..=300));
/// assert_eq!(
///     err.unwrap_err().to_string(),
///     "frame range 0-300 is outside the composition: frames run 0-299 (300 frames)"
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn plan(request: &PlanRequest) -> Result<Plan, PlanError> {
    let duration = request.duration_frames;
    if duration == 0 {
        return Err(PlanError::EmptyComposition);
    }
    if request.every_nth_frame == 0 {
        return Err(PlanError::ZeroEveryNthFrame);
    }
    if request.sample_rate == 0 {
        return Err(PlanError::ZeroSampleRate);
    }
    if request.min_frames_per_chunk == Some(0) {
        return Err(PlanError::ZeroMinFramesPerChunk);
    }
    let (first, last) = match &request.frame_range {
        Some(r) => (*r.start(), *r.end()),
        None => (0, duration - 1),
    };
    if first > last {
        return Err(PlanError::InvertedRange { first, last });
    }
    if last >= duration {
        return Err(PlanError::RangeOutOfBounds {
            first,
            last,
            duration,
        });
    }
    let range = FrameRange::new(first, last).ok_or(PlanError::InvertedRange { first, last })?;
    let step = u64::from(request.every_nth_frame);
    let output_fps = request
        .fps
        .every_nth(request.every_nth_frame)
        .map_err(|_| PlanError::EveryNthTooLarge {
            n: request.every_nth_frame,
            fps: request.fps,
        })?;
    check_output_fps(request.fps, request.every_nth_frame, output_fps)?;
    let output_frames = range.len().div_ceil(step);

    let per_chunk = frames_per_chunk(request, output_frames, output_fps)?;
    let count = output_frames.div_ceil(per_chunk);
    let count = u32::try_from(count).map_err(|_| PlanError::TooManyChunks {
        frames: output_frames,
        per_chunk,
    })?;

    let chunks = (0..count)
        .map(|i| {
            let out_first = u64::from(i) * per_chunk;
            let out_len = per_chunk.min(output_frames - out_first);
            let frame_first = first + out_first * step;
            // The chunk owns every composition frame up to the next chunk's
            // first frame, so with every_nth_frame > 1 its audio still covers
            // the time between the frames it renders.
            let frame_last = (frame_first + out_len * step - 1).min(last);
            let frames = FrameRange {
                first: FrameIndex(frame_first),
                last: FrameIndex(frame_last),
            };
            Chunk {
                index: ChunkIndex(i),
                frames,
                every_nth_frame: request.every_nth_frame,
                composition_start: FrameIndex(first),
                first_output_frame: out_first,
                output_frames: out_len,
                samples: request.fps.sample_span_of(frames, request.sample_rate),
            }
        })
        .collect::<Vec<Chunk>>();
    for c in &chunks {
        c.check_size(request.sample_rate, request.cost)?;
    }

    Ok(Plan {
        fps: request.fps,
        output_fps,
        range,
        every_nth_frame: request.every_nth_frame,
        frames_per_chunk: per_chunk,
        output_frames,
        sample_rate: request.sample_rate,
        samples: request.fps.sample_span_of(range, request.sample_rate),
        chunks,
    })
}

/// Output frames per chunk for `request`'s [`ChunkSpec`], within
/// `min_frames_per_chunk` and the render's length.
fn frames_per_chunk(
    request: &PlanRequest,
    output_frames: u64,
    output_fps: Fps,
) -> Result<u64, PlanError> {
    let per_chunk = match request.chunks {
        ChunkSpec::Count(0) => return Err(PlanError::ZeroChunks),
        ChunkSpec::FramesPerChunk(0) => return Err(PlanError::ZeroFramesPerChunk),
        ChunkSpec::Count(n) => output_frames.div_ceil(u64::from(n)),
        ChunkSpec::FramesPerChunk(k) => k,
        ChunkSpec::Auto => {
            output_frames.div_ceil(auto_chunk_count(output_frames, output_fps, request.slots))
        }
    };
    Ok(per_chunk
        .max(request.min_frames_per_chunk.unwrap_or(1))
        .min(output_frames))
}

/// How many chunks [`ChunkSpec::Auto`] makes of `output_frames`:
/// [`AUTO_CHUNKS_PER_SLOT`] per slot, fewer when chunks would be shorter
/// than [`AUTO_MIN_CHUNK_SECONDS`], and then a whole number per slot.
///
/// Every slot then renders the same number of equal chunks: with 5 chunks
/// on 2 slots, the fifth ran alone for a third of the render while the
/// other slot idled (a lone chunk uses both cores of a machine less well
/// than two). Fewer chunks than slots only when the render is that short.
fn auto_chunk_count(output_frames: u64, output_fps: Fps, slots: u32) -> u64 {
    let slots = u64::from(slots.max(1));
    // Whole frames in AUTO_MIN_CHUNK_SECONDS at the output rate.
    let min = (AUTO_MIN_CHUNK_SECONDS * u64::from(output_fps.num()))
        .div_ceil(u64::from(output_fps.den()))
        .max(1);
    let longest = (output_frames / min).max(1);
    let chunks = (slots * u64::from(AUTO_CHUNKS_PER_SLOT)).min(longest);
    if chunks >= slots {
        chunks / slots * slots
    } else {
        chunks
    }
}

/// Refuses an output frame rate (the composition's `fps` ÷ `n`) whose
/// frames last longer than [`MAX_OUTPUT_FRAME_SECONDS`].
///
/// # Errors
/// [`PlanError::OutputFpsTooLow`] naming the values.
pub fn check_output_fps(fps: Fps, n: u32, output: Fps) -> Result<(), PlanError> {
    // A frame lasts den/num seconds.
    if u64::from(output.den()) > MAX_OUTPUT_FRAME_SECONDS * u64::from(output.num()) {
        return Err(PlanError::OutputFpsTooLow { n, fps, output });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
