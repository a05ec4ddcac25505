//! Montage combine: stitch chunk artifacts into one MP4 with no seam.
//!
//! A render is split into chunks (`chunker::plan`); each chunk's worker
//! delivers H.264 in MPEG-TS, starting with an IDR frame, and optionally the
//! exact PCM of the chunk's sample span `[S(a), S(b+1))`. [`combine_chunks`]
//! turns the chunks, in order, into one MP4:
//!
//! - **video** packets are stream-copied, never re-encoded. Each chunk's
//!   timestamps are re-based from its *planned* first output frame (the
//!   chunk muxer's own origin is ignored), so frame `k` of the output has PTS
//!   `k · den/num` seconds whatever the chunks' muxers did; frame durations
//!   are constant and DTS strictly increasing;
//! - **audio** is the chunks' PCM joined in order and encoded to AAC-LC once,
//!   so the packets are those of an unsplit encode: no seam can exist. The
//!   encoder's priming is signalled by the MP4 edit list, and the movie
//!   timescale is chosen so both edit lists are exact;
//! - every chunk is checked against chunk 0 (codec, size, pixel format,
//!   colour, time base, SPS/PPS) and against the plan (order, duplicates,
//!   gaps, frame count, sample count, truncation), and refused with a
//!   [`CombineError`] naming the chunk and the difference;
//! - with [`CombineOptions::verify_decode`], every packet is also decoded
//!   and chunks with damaged frames are refused (off by default: it costs a
//!   full decode, while truncation and lost TS packets are caught without);
//! - the file is written beside the output under a temporary name and renamed
//!   when complete: on any error or cancellation nothing is left at the output
//!   path. Packets are streamed through, so memory stays flat in the video's
//!   length.
//!
//! Per-chunk AAC (workers encoding padded AAC that is copied by packet index)
//! is not implemented: PCM joined and encoded once is exact and cheap (about
//! 2 s per minute of audio).
//!
//! ```no_run
//! use std::path::PathBuf;
//! use combine::{combine_chunks, ChunkArtifact, CombineOptions, PcmAudio, PcmFormat};
//! use chunker::{plan, ChunkSpec, PlanRequest};
//! use chunker::timebase::Fps;
//!
//! let fps = Fps::new(30_000, 1001)?;
//! let plan = plan(&PlanRequest::new(300, fps, ChunkSpec::Count(4)))?;
//! let chunks: Vec<ChunkArtifact> = plan
//!     .chunks()
//!     .iter()
//!     .map(|c| {
//!         ChunkArtifact::new(*c, PathBuf::from(format!("chunk-{}.ts", c.index())))
//!             .with_audio(PcmAudio::new(format!("chunk-{}.pcm", c.index()), PcmFormat::S16Le))
//!     })
//!     .collect();
//! let options = CombineOptions::new(fps).with_expected_frames(plan.output_frames());
//! let report = combine_chunks(&chunks, &options, "out.mp4")?;
//! println!("{} frames, {:?} audio samples", report.frames, report.audio_samples);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod audio;
mod error;
mod ffi;
mod h264;
mod video;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use chunker::Chunk;
use chunker::timebase::{DEFAULT_SAMPLE_RATE, Fps, SampleSpan};
use ffmpeg::Rational;
use ffmpeg_next as ffmpeg;
use serde::{Deserialize, Serialize};

pub use chunker;
pub use error::CombineError;

/// Sets FFmpeg's process-wide log level to errors only. Binaries call this:
/// at FFmpeg's default level the AAC encoder prints statistics ("Qavg") to
/// stderr. A library leaves the choice to its caller.
pub fn quiet_ffmpeg_logs() {
    ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Error);
}

/// The AAC bitrate used unless told otherwise, in bits per second.
pub const DEFAULT_AUDIO_BITRATE: u32 = 192_000;

/// The lowest AAC bitrate accepted, in bits per second.
pub const MIN_AUDIO_BITRATE: u32 = 16_000;

/// The highest AAC bitrate accepted, in bits per second.
pub const MAX_AUDIO_BITRATE: u32 = 512_000;

/// How a chunk's PCM samples are stored: interleaved stereo, little endian.
/// In JSON: `"s16le"` or `"f32le"` (FFmpeg's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PcmFormat {
    /// Signed 16-bit integers.
    #[serde(rename = "s16le")]
    S16Le,
    /// 32-bit IEEE floats in `[-1, 1]`.
    #[serde(rename = "f32le")]
    F32Le,
}

/// A chunk's rendered PCM: a headerless file of interleaved stereo samples
/// holding exactly the chunk's planned sample span.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcmAudio {
    /// The file.
    pub path: PathBuf,
    /// Its sample format.
    pub format: PcmFormat,
}

impl PcmAudio {
    /// PCM in `path`, stored as `format`.
    pub fn new(path: impl Into<PathBuf>, format: PcmFormat) -> Self {
        PcmAudio {
            path: path.into(),
            format,
        }
    }
}

/// One finished chunk: its planned description and its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkArtifact {
    /// The chunk as planned (`chunker::plan` or `Chunk::from_parts`): index,
    /// frames, composition start and sample span.
    pub chunk: Chunk,
    /// H.264 in MPEG-TS, starting with an IDR frame.
    pub video: PathBuf,
    /// The chunk's PCM, if the composition has audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<PcmAudio>,
}

/// A combine job as data (what `coordinator combine --manifest` reads):
/// the composition's fps, the chunks in order, and the render's size.
///
/// ```
/// let json = r#"{
///   "fps": "30000/1001",
///   "output_frames": 2,
///   "chunks": [{
///     "chunk": {"index": 0, "frames": {"first": 0, "last": 1}, "every_nth_frame": 1,
///               "composition_start": 0, "first_output_frame": 0, "output_frames": 2,
///               "samples": {"start": 0, "end": 3203}},
///     "video": "chunk-00.ts",
///     "audio": {"path": "chunk-00.pcm", "format": "s16le"}
///   }]
/// }"#;
/// let manifest: combine::Manifest = serde_json::from_str(json)?;
/// assert_eq!(manifest.options().expected_frames, Some(2));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The composition's frame rate (as planned).
    pub fps: Fps,
    /// The audio sample rate the plan used.
    #[serde(default = "default_sample_rate")]
    pub sample_rate: u32,
    /// The render's output frame count, to detect chunks missing at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_frames: Option<u64>,
    /// The chunks, in output order.
    pub chunks: Vec<ChunkArtifact>,
}

fn default_sample_rate() -> u32 {
    DEFAULT_SAMPLE_RATE
}

impl Manifest {
    /// Default options for this manifest (bitrate, audio track and
    /// cancellation can then be set on them).
    pub fn options(&self) -> CombineOptions {
        let mut o = CombineOptions::new(self.fps).with_sample_rate(self.sample_rate);
        o.expected_frames = self.output_frames;
        o
    }
}

impl ChunkArtifact {
    /// A chunk with video only.
    pub fn new(chunk: Chunk, video: impl Into<PathBuf>) -> Self {
        ChunkArtifact {
            chunk,
            video: video.into(),
            audio: None,
        }
    }

    /// Adds the chunk's PCM.
    pub fn with_audio(mut self, audio: PcmAudio) -> Self {
        self.audio = Some(audio);
        self
    }
}

/// How to combine. Build with [`CombineOptions::new`] and the `with_*`
/// methods.
#[derive(Debug, Clone)]
pub struct CombineOptions {
    /// The composition's frame rate, as given to `chunker::plan` (the output
    /// runs at this rate divided by the chunks' `every_nth_frame`).
    pub fps: Fps,
    /// The audio sample rate the chunks' spans were planned at (Hz).
    pub sample_rate: u32,
    /// AAC bitrate in bits per second (default 192 kb/s).
    pub audio_bitrate: u32,
    /// Give the MP4 a silent audio track of the planned length when the
    /// chunks carry no audio (Remotion's `enforceAudioTrack`).
    pub enforce_audio_track: bool,
    /// Output frames of the whole render (`Plan::output_frames`). When set,
    /// chunks missing at the end of the list are detected too.
    pub expected_frames: Option<u64>,
    /// Polled between packets: once it reports cancellation the combine
    /// returns [`CombineError::Cancelled`] and leaves nothing at the output
    /// path.
    pub cancel: Option<Cancel>,
    /// Also decode every video packet (FFmpeg's H.264 decoder with strict
    /// error detection) and refuse chunks that do not decode cleanly. The
    /// structural checks (whole TS packets, continuity counters, frame
    /// counts, timestamps) catch truncation and lost packets without it, but
    /// only decoding catches damaged bytes inside a frame. Costs a decode of
    /// the whole video (see the crate notes for numbers).
    pub verify_decode: bool,
}

impl CombineOptions {
    /// Defaults: 48 kHz, 192 kb/s AAC, no forced audio track, no cancel flag.
    pub fn new(fps: Fps) -> Self {
        CombineOptions {
            fps,
            sample_rate: DEFAULT_SAMPLE_RATE,
            audio_bitrate: DEFAULT_AUDIO_BITRATE,
            enforce_audio_track: false,
            expected_frames: None,
            cancel: None,
            verify_decode: false,
        }
    }

    /// Decodes every video packet as well, refusing chunks with damaged
    /// frames (see [`CombineOptions::verify_decode`]).
    pub fn with_verify_decode(mut self, verify: bool) -> Self {
        self.verify_decode = verify;
        self
    }

    /// Sets the AAC bitrate (bits per second).
    pub fn with_audio_bitrate(mut self, bitrate: u32) -> Self {
        self.audio_bitrate = bitrate;
        self
    }

    /// Sets the audio sample rate the plan used.
    pub fn with_sample_rate(mut self, rate: u32) -> Self {
        self.sample_rate = rate;
        self
    }

    /// Forces an audio track (silent if the chunks have none).
    pub fn with_enforce_audio_track(mut self, enforce: bool) -> Self {
        self.enforce_audio_track = enforce;
        self
    }

    /// Sets the whole render's output frame count.
    pub fn with_expected_frames(mut self, frames: u64) -> Self {
        self.expected_frames = Some(frames);
        self
    }

    /// Cancels when `flag` becomes `true` (set it from any thread).
    pub fn with_cancel(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = Some(Cancel::from_flag(flag));
        self
    }

    /// Cancels when `check` returns `true`, e.g.
    /// `move || token.is_cancelled()` for a `tokio_util` `CancellationToken`.
    pub fn with_cancel_check(mut self, check: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.cancel = Some(Cancel::from_fn(check));
        self
    }

    /// Checks the options.
    ///
    /// # Errors
    /// [`CombineError::InvalidOption`] naming the option and the range
    /// allowed.
    pub fn validate(&self) -> Result<(), CombineError> {
        if !(8_000..=768_000).contains(&self.sample_rate) {
            return Err(CombineError::InvalidOption {
                option: "sample_rate",
                given: self.sample_rate.to_string(),
                allowed: "8000 to 768000 Hz (48000 is the default)",
            });
        }
        if !(MIN_AUDIO_BITRATE..=MAX_AUDIO_BITRATE).contains(&self.audio_bitrate) {
            return Err(CombineError::InvalidOption {
                option: "audio_bitrate",
                given: self.audio_bitrate.to_string(),
                allowed: "16000 to 512000 bits per second (192000 is the default)",
            });
        }
        Ok(())
    }
}

/// A cancellation check, polled between packets (so a cancel takes effect
/// within about one frame's work). Cheap to clone.
#[derive(Clone)]
pub struct Cancel(Arc<dyn Fn() -> bool + Send + Sync>);

impl Cancel {
    /// Cancelled once `flag` is `true`.
    pub fn from_flag(flag: Arc<AtomicBool>) -> Self {
        Cancel(Arc::new(move || flag.load(Ordering::Relaxed)))
    }

    /// Cancelled once `check` returns `true`.
    pub fn from_fn(check: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Cancel(Arc::new(check))
    }

    /// Whether the combine should stop now.
    pub fn is_cancelled(&self) -> bool {
        (self.0)()
    }
}

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cancel(..)")
    }
}

/// What [`combine_chunks`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CombineReport {
    /// The output file.
    pub output: PathBuf,
    /// Chunks combined.
    pub chunks: usize,
    /// Video frames in the output.
    pub frames: u64,
    /// The output's frame rate.
    pub fps: Fps,
    /// Audio samples (per channel) in the output's audio track, if it has one.
    pub audio_samples: Option<u64>,
    /// AAC packets written (including the encoder's priming packet).
    pub audio_packets: u64,
    /// The MP4 movie timescale (ticks per second) used for the edit lists.
    pub movie_timescale: u32,
    /// Size of the output file in bytes.
    pub bytes: u64,
}

/// Combines chunk artifacts, given in output order, into one MP4 at `output`.
///
/// See the crate documentation for what is checked and how time is handled.
///
/// # Errors
/// A [`CombineError`] naming the chunk and the problem: a chunk list that is
/// empty, out of order, duplicated, has gaps or disagrees with the options;
/// chunks whose stream parameters differ from chunk 0's; frame or sample
/// counts that differ from the plan; truncated or corrupt files; FFmpeg or
/// I/O failures; cancellation. Whatever the error, nothing is left at
/// `output` (a file already there is not touched).
pub fn combine_chunks(
    chunks: &[ChunkArtifact],
    options: &CombineOptions,
    output: impl AsRef<Path>,
) -> Result<CombineReport, CombineError> {
    let output = output.as_ref();
    options.validate()?;
    let layout = check_plan(chunks, options)?;
    let cancelled = || options.cancel.as_ref().is_some_and(Cancel::is_cancelled);
    if cancelled() {
        return Err(CombineError::Cancelled);
    }
    ffmpeg::init().map_err(CombineError::ffmpeg("initialising FFmpeg"))?;

    let temp = TempOutput::beside(output);
    // On error `temp` is dropped, which removes the partial file.
    let mut report = write_mp4(chunks, options, &layout, &temp.path, &cancelled)?;
    if cancelled() {
        return Err(CombineError::Cancelled);
    }
    temp.persist(output)?;
    report.output = output.to_path_buf();
    Ok(report)
}

/// What the chunk list adds up to, once checked.
struct Layout {
    output_fps: Fps,
    frames: u64,
    samples: SampleSpan,
    audio: AudioPlan,
}

enum AudioPlan {
    None,
    Pcm(Vec<audio::PcmPart>),
    Silence,
}

/// Checks order, gaps, duplicates and consistency of the planned chunks, and
/// the PCM file sizes, before anything is written.
fn check_plan(chunks: &[ChunkArtifact], options: &CombineOptions) -> Result<Layout, CombineError> {
    let first = chunks.first().ok_or(CombineError::NoChunks)?;
    let c0 = first.chunk;
    let nth = c0.every_nth_frame();
    let output_fps = options
        .fps
        .every_nth(nth)
        .map_err(|_| CombineError::InvalidOption {
            option: "fps",
            given: format!("{} with every_nth_frame {nth}", options.fps),
            allowed: "a frame rate whose denominator times every_nth_frame fits in 32 bits",
        })?;
    if output_fps
        .ticks_per_frame(chunker::timebase::MPEG_TS_CLOCK_HZ)
        .is_none()
    {
        return Err(CombineError::InvalidOption {
            option: "fps",
            given: output_fps.to_string(),
            allowed: "an output frame rate with a whole number of 90 kHz ticks per frame (24000/1001 has none)",
        });
    }

    // Order, duplicates and gaps, judged by planned index.
    for (pos, a) in chunks.iter().enumerate() {
        let idx = a.chunk.index();
        if let Some(earlier) = chunks[..pos].iter().position(|b| b.chunk.index() == idx) {
            return Err(CombineError::DuplicateChunk {
                index: idx,
                first: earlier,
                second: pos,
            });
        }
    }
    for (pos, a) in chunks.iter().enumerate() {
        let expected = chunker::ChunkIndex(u32::try_from(pos).unwrap_or(u32::MAX));
        let found = a.chunk.index();
        if found == expected {
            continue;
        }
        if chunks.iter().any(|b| b.chunk.index() == expected) {
            return Err(CombineError::OutOfOrder {
                position: pos,
                expected,
                found,
            });
        }
        let expected_frame = chunks[..pos]
            .iter()
            .map(|b| b.chunk.frame_count())
            .sum::<u64>();
        return Err(CombineError::MissingChunk {
            index: expected,
            expected_frame,
        });
    }

    // Continuity of frames and samples, and consistency with the options.
    let mut next_output = 0u64;
    let mut next_frame = c0.frames().first.0;
    let mut next_sample = c0.samples().start;
    let mismatch = |chunk: &Chunk, field: &'static str, expected: String, found: String| {
        Err(CombineError::PlanMismatch {
            chunk: chunk.index(),
            field,
            expected,
            found,
        })
    };
    for a in chunks {
        let c = &a.chunk;
        if c.every_nth_frame() != nth {
            return mismatch(
                c,
                "every_nth_frame",
                nth.to_string(),
                c.every_nth_frame().to_string(),
            );
        }
        if c.composition_start() != c0.composition_start() {
            return mismatch(
                c,
                "composition start",
                c0.composition_start().to_string(),
                c.composition_start().to_string(),
            );
        }
        if c.first_output_frame() != next_output {
            return mismatch(
                c,
                "first output frame",
                next_output.to_string(),
                c.first_output_frame().to_string(),
            );
        }
        let planned_frames = c.frames().len().div_ceil(u64::from(nth));
        if c.frame_count() != planned_frames {
            return mismatch(
                c,
                "output frame count",
                format!("{planned_frames} (frames {} every {nth})", c.frames()),
                c.frame_count().to_string(),
            );
        }
        if c.frames().first.0 != next_frame {
            return mismatch(
                c,
                "first frame",
                next_frame.to_string(),
                c.frames().first.to_string(),
            );
        }
        let span = options.fps.sample_span_of(c.frames(), options.sample_rate);
        if c.samples() != span || c.samples().start != next_sample {
            return mismatch(
                c,
                "sample span",
                format!(
                    "{span} (frames {} at {} fps, {} Hz)",
                    c.frames(),
                    options.fps,
                    options.sample_rate
                ),
                c.samples().to_string(),
            );
        }
        next_output += c.frame_count();
        next_frame = c.frames().last.0 + 1;
        next_sample = c.samples().end;
    }
    if let Some(expected) = options.expected_frames
        && next_output != expected
    {
        if next_output < expected {
            return Err(CombineError::MissingChunk {
                index: chunker::ChunkIndex(u32::try_from(chunks.len()).unwrap_or(u32::MAX)),
                expected_frame: next_output,
            });
        }
        return Err(CombineError::InvalidOption {
            option: "expected_frames",
            given: format!("{expected} (the chunks hold {next_output})"),
            allowed: "the sum of the chunks' planned frame counts",
        });
    }
    let samples = SampleSpan {
        start: c0.samples().start,
        end: next_sample,
    };

    // Audio: all chunks or none; every file exactly its span.
    let has = |a: &ChunkArtifact| if a.audio.is_some() { "has" } else { "has no" };
    if let Some(odd) = chunks
        .iter()
        .find(|a| a.audio.is_some() != first.audio.is_some())
    {
        return Err(CombineError::MixedAudio {
            chunk: odd.chunk.index(),
            has: has(odd),
            first_has: has(first),
        });
    }
    let audio = if first.audio.is_some() {
        let mut parts = Vec::with_capacity(chunks.len());
        for a in chunks {
            let pcm = a
                .audio
                .as_ref()
                .expect("every chunk has audio, checked above");
            let span = a.chunk.samples();
            let channels = chunker::timebase::AUDIO_CHANNELS;
            let bps = pcm.format.bytes_per_sample();
            let expected_bytes = span.len() * u64::from(channels) * bps as u64;
            let found_bytes = std::fs::metadata(&pcm.path)
                .map_err(|source| CombineError::Io {
                    chunk: a.chunk.index(),
                    path: pcm.path.clone(),
                    source,
                })?
                .len();
            if found_bytes != expected_bytes {
                return Err(CombineError::SampleCount {
                    chunk: a.chunk.index(),
                    path: pcm.path.clone(),
                    span,
                    samples: span.len(),
                    channels,
                    bytes_per_sample: bps as u8,
                    expected_bytes,
                    found_bytes,
                });
            }
            parts.push(audio::PcmPart {
                chunk: a.chunk.index(),
                path: pcm.path.clone(),
                format: pcm.format,
                samples: span.len(),
            });
        }
        AudioPlan::Pcm(parts)
    } else if options.enforce_audio_track {
        AudioPlan::Silence
    } else {
        AudioPlan::None
    };
    Ok(Layout {
        output_fps,
        frames: next_output,
        samples,
        audio,
    })
}

const fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

/// The smallest MP4 movie timescale in which both edit lists are exact: a
/// duration of `n` frames is `n · den / num` s, a whole number of ticks for
/// every `n` iff `num` divides the timescale; `m` samples need the sample
/// rate to divide it (ISO/IEC 14496-12, 8.6.6: `segment_duration` is in the
/// movie timescale).
fn movie_timescale(output_fps: Fps, sample_rate: u32) -> Result<u32, CombineError> {
    let (a, b) = (u64::from(output_fps.num()), u64::from(sample_rate));
    let lcm = a / gcd(a, b) * b;
    u32::try_from(lcm)
        .ok()
        .filter(|t| *t <= i32::MAX as u32)
        .ok_or(CombineError::InvalidOption {
            option: "fps",
            given: format!("{output_fps} with a {sample_rate} Hz audio rate"),
            allowed: "rates whose common timescale fits in 31 bits",
        })
}

fn write_mp4(
    chunks: &[ChunkArtifact],
    options: &CombineOptions,
    layout: &Layout,
    temp: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Result<CombineReport, CombineError> {
    let output_fps = layout.output_fps;
    let frame_tb = Rational::new(output_fps.den() as i32, output_fps.num() as i32);
    let timescale = movie_timescale(output_fps, options.sample_rate)?;

    let mut octx =
        ffmpeg::format::output_as(temp, "mp4").map_err(|source| CombineError::Ffmpeg {
            context: format!("creating {}", temp.display()),
            source,
        })?;
    let global_header = octx
        .format()
        .flags()
        .contains(ffmpeg::format::flag::Flags::GLOBAL_HEADER);

    // Every chunk's parameters and decoder delay, read from its first packet
    // before anything is written, so mismatches are refused early.
    let mut reference: Option<video::VideoParams> = None;
    let mut delay = 0;
    let mut first_parameters = None;
    for a in chunks {
        if cancelled() {
            return Err(CombineError::Cancelled);
        }
        let opened = video::ChunkVideo::open(a.chunk.index(), &a.video, output_fps)?;
        if first_parameters.is_none() {
            first_parameters = Some(opened.codec_parameters.clone());
        }
        let (params, chunk_delay) = opened.probe()?;
        match &reference {
            None => reference = Some(params),
            Some(r) => {
                if let Some((field, expected, found)) = r.first_difference(&params) {
                    return Err(CombineError::StreamMismatch {
                        chunk: a.chunk.index(),
                        field,
                        expected,
                        found,
                    });
                }
            }
        }
        delay = delay.max(chunk_delay);
    }
    let reference = reference.expect("there is at least one chunk");

    // Video stream: chunk 0's parameters, stream-copied.
    {
        let mut params = first_parameters.expect("there is at least one chunk");
        ffi::clear_codec_tag(&mut params);
        let mut ost = octx
            .add_stream(ffmpeg::encoder::find(ffmpeg::codec::Id::None))
            .map_err(CombineError::ffmpeg("adding the video stream"))?;
        ost.set_parameters(params);
        ost.set_time_base(frame_tb);
        ost.set_avg_frame_rate(Rational::new(
            output_fps.num() as i32,
            output_fps.den() as i32,
        ));
        ost.set_rate(Rational::new(
            output_fps.num() as i32,
            output_fps.den() as i32,
        ));
    }

    // Audio stream: AAC encoded once from the joined PCM (or silence).
    let total_samples = layout.samples.len();
    let mut aac = match &layout.audio {
        AudioPlan::None => None,
        plan => {
            let source = match plan {
                AudioPlan::Pcm(parts) => audio::Source::pcm(
                    parts
                        .iter()
                        .map(|p| audio::PcmPart {
                            chunk: p.chunk,
                            path: p.path.clone(),
                            format: p.format,
                            samples: p.samples,
                        })
                        .collect(),
                ),
                _ => audio::Source::Silence {
                    left: total_samples,
                },
            };
            let (track, params) = audio::AacTrack::open(
                source,
                total_samples,
                options.sample_rate,
                options.audio_bitrate,
                global_header,
            )?;
            let mut ost = octx
                .add_stream(ffmpeg::encoder::find(ffmpeg::codec::Id::None))
                .map_err(CombineError::ffmpeg("adding the audio stream"))?;
            ost.set_parameters(params);
            ost.set_time_base(track.time_base());
            Some(track)
        }
    };

    let mut header = ffmpeg::Dictionary::new();
    // Moov first so browsers can start playing before the whole file loads.
    header.set("movflags", "+faststart");
    header.set("movie_timescale", &timescale.to_string());
    octx.write_header_with(header)
        .map_err(CombineError::ffmpeg("writing the MP4 header"))?;
    let video_tb = octx
        .stream(0)
        .expect("the video stream was added above")
        .time_base();
    let audio_tb = octx.stream(1).map(|s| s.time_base());

    let write_audio = |octx: &mut ffmpeg::format::context::Output,
                       track: &mut audio::AacTrack,
                       until: u64|
     -> Result<(), CombineError> {
        let tb = track.time_base();
        let out_tb = audio_tb.expect("an audio stream exists when there is a track");
        track.encode_until(until, &mut |mut packet| {
            packet.set_stream(1);
            packet.rescale_ts(tb, out_tb);
            packet
                .write_interleaved(octx)
                .map_err(CombineError::ffmpeg("writing an AAC packet"))
        })
    };

    for a in chunks {
        if cancelled() {
            return Err(CombineError::Cancelled);
        }
        let chunk_video = video::ChunkVideo::open(a.chunk.index(), &a.video, output_fps)?;
        let mut sink = |mut packet: ffmpeg::Packet| -> Result<(), CombineError> {
            // Keep the audio just ahead of the video so the interleaver
            // never holds more than a frame or so of either.
            if let Some(track) = aac.as_mut() {
                let dts_frames = packet.dts().unwrap_or(0).max(0) as u128 + 1;
                let until =
                    dts_frames * u128::from(options.sample_rate) * u128::from(output_fps.den())
                        / u128::from(output_fps.num());
                write_audio(&mut octx, track, u64::try_from(until).unwrap_or(u64::MAX))?;
            }
            packet.set_stream(0);
            packet.rescale_ts(frame_tb, video_tb);
            packet
                .write_interleaved(&mut octx)
                .map_err(CombineError::ffmpeg("writing a video packet"))
        };
        chunk_video.copy(
            &reference,
            delay,
            a.chunk.first_output_frame(),
            a.chunk.frame_count(),
            options.verify_decode,
            cancelled,
            &mut sink,
        )?;
    }
    let mut audio_packets = 0;
    if let Some(track) = aac.as_mut() {
        write_audio(&mut octx, track, u64::MAX)?;
        if track.sent() != total_samples {
            return Err(CombineError::Ffmpeg {
                context: format!(
                    "audio ended after {} of {total_samples} samples",
                    track.sent()
                ),
                source: ffmpeg::Error::Eof,
            });
        }
        audio_packets = track.packets();
    }
    if cancelled() {
        return Err(CombineError::Cancelled);
    }
    octx.write_trailer().map_err(CombineError::ffmpeg(
        "finishing the MP4 (moving the index to the front)",
    ))?;
    drop(octx);
    let bytes = std::fs::metadata(temp)
        .map_err(|source| CombineError::Output {
            path: temp.to_path_buf(),
            source,
        })?
        .len();
    Ok(CombineReport {
        output: temp.to_path_buf(),
        chunks: chunks.len(),
        frames: layout.frames,
        fps: output_fps,
        audio_samples: aac.as_ref().map(|_| total_samples),
        audio_packets,
        movie_timescale: timescale,
        bytes,
    })
}

/// A temporary file beside the output, removed on drop unless persisted.
struct TempOutput {
    path: PathBuf,
    keep: bool,
}

impl TempOutput {
    fn beside(output: &Path) -> Self {
        let dir = output.parent().unwrap_or(Path::new(""));
        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into());
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = dir.join(format!(
            ".{name}.{}-{nanos}.combine-tmp",
            std::process::id()
        ));
        TempOutput { path, keep: false }
    }

    fn persist(mut self, output: &Path) -> Result<(), CombineError> {
        std::fs::rename(&self.path, output).map_err(|source| CombineError::Output {
            path: output.to_path_buf(),
            source,
        })?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if !self.keep {
            // Best effort: the file may not exist if creating it failed.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn movie_timescale_makes_both_edit_lists_exact() {
        let f = |n, d| Fps::new(n, d).expect("fps");
        assert_eq!(movie_timescale(f(30, 1), 48_000).expect("ok"), 48_000);
        assert_eq!(
            movie_timescale(f(30_000, 1001), 48_000).expect("ok"),
            240_000
        );
        assert_eq!(movie_timescale(f(25, 1), 48_000).expect("ok"), 48_000);
        assert_eq!(
            movie_timescale(f(60_000, 1001), 48_000).expect("ok"),
            240_000
        );
    }
}
