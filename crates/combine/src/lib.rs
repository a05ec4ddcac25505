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
//!             .with_audio(PcmAudio::new(format!("chunk-{}.pcm", c.index()), PcmFormat::S16le))
//!     })
//!     .collect();
//! let options = CombineOptions::new(fps).with_expected_frames(plan.output_frames());
//! let report = combine_chunks(&chunks, &options, "out.mp4")?;
//! println!("{} frames, {:?} audio samples", report.frames, report.audio_samples);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod audio;
mod audio_only;
mod error;
mod ffi;
mod layout;
mod looping_gif;
mod mp4;
mod nal;
mod video;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chunker::timebase::{DEFAULT_SAMPLE_RATE, Fps};
use chunker::{Chunk, ChunkIndex};
use ffmpeg_next as ffmpeg;
use serde::{Deserialize, Serialize};

pub use audio_only::write_audio_only;
pub use chunker;
pub use error::CombineError;
pub use spec::{AudioCodec, AudioOnlyFormat, Container, OutputFormat};

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

/// How a chunk's PCM samples are stored: interleaved stereo, little endian;
/// in JSON `"s16le"` or `"f32le"` (FFmpeg's names). The one type the
/// workers write and combine reads.
pub use spec::PcmFormat;

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
/// let manifest = combine::Manifest::from_json(json)?;
/// assert_eq!(manifest.options().expected_frames, Some(2));
/// # Ok::<(), combine::CombineError>(())
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
    /// Reads a manifest from JSON, checking every chunk as it is read (see
    /// `chunker::Chunk`): a bad value is refused with its place in the
    /// document, e.g. `chunks[3].chunk.frames`.
    ///
    /// ```
    /// let bad = r#"{"fps": 30, "chunks": [{"chunk": {"index": 0,
    ///     "frames": {"first": 5, "last": 1}, "every_nth_frame": 1, "composition_start": 0,
    ///     "first_output_frame": 0, "output_frames": 1, "samples": {"start": 0, "end": 1}},
    ///     "video": "chunk-00.ts"}]}"#;
    /// let err = combine::Manifest::from_json(bad).unwrap_err();
    /// assert!(err.to_string().starts_with(
    ///     "manifest: chunks[0].chunk.frames: frame range is inverted: first 5 is after last 1"
    /// ));
    /// ```
    ///
    /// # Errors
    /// [`CombineError::InvalidManifest`] naming the JSON path of the bad
    /// value and what is wrong with it.
    pub fn from_json(json: &str) -> Result<Manifest, CombineError> {
        let mut de = serde_json::Deserializer::from_str(json);
        let manifest: Manifest = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            // Text that is not JSON fails before any field: the path is
            // then `?`, which says less than "the document".
            let path = match e.path().to_string() {
                p if p == "?" => ".".to_owned(),
                p => p,
            };
            CombineError::InvalidManifest {
                path,
                detail: e.inner().to_string(),
            }
        })?;
        // Trailing characters after the document are an error too.
        de.end().map_err(|e| CombineError::InvalidManifest {
            path: ".".into(),
            detail: e.to_string(),
        })?;
        Ok(manifest)
    }

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
    /// AAC (or Opus) bitrate in bits per second (default 192 kb/s).
    pub audio_bitrate: u32,
    /// The container written and its audio codec (default MP4 with AAC).
    /// The chunks' video codec must fit the container.
    pub output: OutputFormat,
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
            output: OutputFormat::default(),
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

    /// Writes `output`'s container and audio codec instead of MP4 with AAC.
    pub fn with_output(mut self, output: OutputFormat) -> Self {
        self.output = output;
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
        if let Some(audio) = self.output.audio
            && !self.output.container.audio_codecs().contains(&audio)
        {
            return Err(CombineError::InvalidOption {
                option: "audio_codec",
                given: format!("{audio} in .{}", self.output.container),
                allowed: "an audio codec the container holds (mp4: aac; mov: aac, pcm; webm: opus; mkv: aac, opus, pcm)",
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
    /// Audio packets written (including the encoder's priming packet).
    pub audio_packets: u64,
    /// The MP4/MOV movie timescale (ticks per second) used for the edit
    /// lists (0 for other containers).
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
    combine(chunks, options, None, output.as_ref())
}

fn combine(
    chunks: &[ChunkArtifact],
    options: &CombineOptions,
    ahead: Option<AudioPrefix>,
    output: &Path,
) -> Result<CombineReport, CombineError> {
    options.validate()?;
    let mut layout = layout::Layout::check(chunks, options)?;
    let cancelled = || options.cancel.as_ref().is_some_and(Cancel::is_cancelled);
    if let Some(ahead) = ahead {
        layout.audio = finish_ahead(ahead, chunks, options, &layout)?;
    }
    if cancelled() {
        return Err(CombineError::Cancelled);
    }
    ffmpeg::init().map_err(CombineError::ffmpeg("initialising FFmpeg"))?;

    // Removed when dropped: on any error nothing is left beside the output.
    let temp = temp_beside(output)?;
    let mut report = if options.output.container == Container::Gif {
        looping_gif::write_output(chunks, layout, &temp, &cancelled)?
    } else {
        mp4::write_output(chunks, options, layout, &temp, &cancelled)?
    };
    if cancelled() {
        return Err(CombineError::Cancelled);
    }
    persist_output(temp, output)?;
    report.output = output.to_path_buf();
    Ok(report)
}

/// Renames a finished temporary file to the output's name.
pub(crate) fn persist_output(temp: tempfile::TempPath, output: &Path) -> Result<(), CombineError> {
    temp.persist(output).map_err(|e| CombineError::Output {
        path: output.to_path_buf(),
        source: e.error,
    })
}

/// Completes audio encoded ahead: what it encoded must be the first of
/// `chunks`' PCM parts, for the same track; the rest is encoded now.
fn finish_ahead(
    mut ahead: AudioPrefix,
    chunks: &[ChunkArtifact],
    options: &CombineOptions,
    layout: &layout::Layout,
) -> Result<layout::AudioPlan, CombineError> {
    let same_track = ahead.inner.total() == layout.samples.len()
        && ahead.sample_rate == options.sample_rate
        && ahead.bitrate == options.audio_bitrate
        && Some(ahead.inner.codec()) == options.output.audio_codec();
    if !same_track {
        return Err(CombineError::InvalidOption {
            option: "audio",
            given: format!(
                "{} encoded ahead for {} samples at {} Hz, {} b/s",
                match ahead.inner.codec() {
                    AudioCodec::Aac => "AAC",
                    AudioCodec::Opus => "Opus",
                    AudioCodec::Pcm => "PCM",
                    AudioCodec::Mp3 => "MP3",
                },
                ahead.inner.total(),
                ahead.sample_rate,
                ahead.bitrate
            ),
            allowed: "audio encoded ahead for the chunks' own samples, sample rate, bitrate and codec",
        });
    }
    let layout::AudioPlan::Pcm(parts) = &layout.audio else {
        return Err(CombineError::MixedAudio {
            chunk: ChunkIndex(0),
            has: "has no",
            first_has: "has",
        });
    };
    for (done, planned) in ahead.inner.parts.iter().zip(parts) {
        if done != planned {
            return Err(CombineError::PlanMismatch {
                chunk: planned.chunk,
                field: "audio encoded ahead",
                expected: format!("{}", planned.path.display()),
                found: format!("{}", done.path.display()),
            });
        }
    }
    if ahead.chunks() > chunks.len() {
        return Err(CombineError::MissingChunk {
            index: ChunkIndex(u32::try_from(chunks.len()).unwrap_or(u32::MAX)),
            expected_frame: layout.frames,
        });
    }
    for a in &chunks[ahead.chunks()..] {
        ahead.push(a)?;
    }
    Ok(layout::AudioPlan::Encoded(Box::new(ahead.inner)))
}

/// The audio of a render encoded while its chunks are still rendering: push
/// each chunk's PCM (chunk 0 first, then in plan order) as soon as it and
/// every chunk before it are done, then hand the encoder to
/// [`combine_chunks_with_audio`], which pushes whatever is left and muxes.
/// The AAC packets, and so the MP4's bytes, are those [`combine_chunks`]
/// writes: the same frames are encoded, and the muxer is handed the packets
/// in the same order. Packets wait in an unnamed temporary file, so memory
/// stays flat in the render's length.
///
/// ```no_run
/// use combine::{AudioPrefix, ChunkArtifact, CombineOptions, combine_chunks_with_audio};
/// # fn chunks() -> (chunker::Plan, Vec<ChunkArtifact>) { unimplemented!() }
/// let (plan, finished) = chunks();
/// let options = CombineOptions::new(plan.fps()).with_expected_frames(plan.output_frames());
/// let mut audio = AudioPrefix::new(&options, plan.samples())?;
/// for chunk in &finished[..2] {
///     audio.push(chunk)?; // while the rest still render
/// }
/// combine_chunks_with_audio(&finished, &options, audio, "out.mp4")?;
/// # Ok::<(), combine::CombineError>(())
/// ```
pub struct AudioPrefix {
    inner: audio::Prefix,
    sample_rate: u32,
    bitrate: u32,
    cancel: Option<Cancel>,
    next_sample: chunker::timebase::SampleIndex,
}

impl std::fmt::Debug for AudioPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioPrefix")
            .field("chunks", &self.chunks())
            .field("total", &self.inner.total())
            .finish_non_exhaustive()
    }
}

impl AudioPrefix {
    /// An encoder for a render whose audio is `samples` (`Plan::samples`),
    /// at `options`' sample rate and AAC bitrate, cancelled with it.
    ///
    /// # Errors
    /// [`CombineError::InvalidOption`] for bad options,
    /// [`CombineError::Ffmpeg`] if the AAC encoder cannot open,
    /// [`CombineError::AudioScratch`] if no temporary file can be made.
    pub fn new(
        options: &CombineOptions,
        samples: chunker::timebase::SampleSpan,
    ) -> Result<Self, CombineError> {
        options.validate()?;
        ffmpeg::init().map_err(CombineError::ffmpeg("initialising FFmpeg"))?;
        let codec = options
            .output
            .audio_codec()
            .ok_or(CombineError::InvalidOption {
                option: "audio",
                given: format!("audio for a .{} file", options.output.container),
                allowed: "a container with audio",
            })?;
        Ok(AudioPrefix {
            inner: audio::Prefix::open(
                codec,
                samples.len(),
                options.sample_rate,
                options.audio_bitrate,
            )?,
            sample_rate: options.sample_rate,
            bitrate: options.audio_bitrate,
            cancel: options.cancel.clone(),
            next_sample: samples.start,
        })
    }

    /// Chunks encoded so far: the next one pushed must have this index.
    pub fn chunks(&self) -> usize {
        self.inner.parts.len()
    }

    /// Encodes chunk `a`'s PCM, which must be the next chunk in plan order
    /// and hold exactly its sample span.
    ///
    /// # Errors
    /// [`CombineError::OutOfOrder`] for another chunk,
    /// [`CombineError::PlanMismatch`] for a span that does not continue the
    /// chunks so far, [`CombineError::MixedAudio`] for a chunk without
    /// audio, [`CombineError::SampleCount`] for a PCM file of another size,
    /// I/O, FFmpeg or cancellation errors.
    pub fn push(&mut self, a: &ChunkArtifact) -> Result<(), CombineError> {
        let expected = ChunkIndex(u32::try_from(self.chunks()).unwrap_or(u32::MAX));
        if a.chunk.index() != expected {
            return Err(CombineError::OutOfOrder {
                position: self.chunks(),
                expected,
                found: a.chunk.index(),
            });
        }
        if a.audio.is_none() {
            return Err(CombineError::MixedAudio {
                chunk: a.chunk.index(),
                has: "has no",
                first_has: "has",
            });
        }
        if a.chunk.samples().start != self.next_sample {
            return Err(CombineError::PlanMismatch {
                chunk: a.chunk.index(),
                field: "sample span",
                expected: format!("one starting at sample {}", self.next_sample),
                found: a.chunk.samples().to_string(),
            });
        }
        let part = layout::pcm_part(a)?;
        let cancel = self.cancel.clone();
        let cancelled = move || cancel.as_ref().is_some_and(Cancel::is_cancelled);
        self.inner.push(part, &cancelled)?;
        self.next_sample = a.chunk.samples().end;
        Ok(())
    }
}

/// [`combine_chunks`] with the audio encoded ahead in `audio`: the chunks
/// it has not encoded yet are encoded now, then the MP4 is written with the
/// same bytes [`combine_chunks`] would write.
///
/// # Errors
/// As [`combine_chunks`]; also [`CombineError::PlanMismatch`] when the
/// chunks `audio` encoded are not the first of `chunks` (other files or
/// spans), and [`CombineError::InvalidOption`] when it was made for
/// another length, sample rate or bitrate.
pub fn combine_chunks_with_audio(
    chunks: &[ChunkArtifact],
    options: &CombineOptions,
    audio: AudioPrefix,
    output: impl AsRef<Path>,
) -> Result<CombineReport, CombineError> {
    combine(chunks, options, Some(audio), output.as_ref())
}

/// FFmpeg's `muxer` writing to `path`. A path `ffmpeg-next` cannot take
/// (it takes paths as `&str` and panics on one that is not UTF-8 or holds
/// a NUL byte) is an [`CombineError::Output`] that says why.
pub(crate) fn create_output(
    path: &Path,
    muxer: &str,
) -> Result<ffmpeg::format::context::Output, CombineError> {
    if path.to_str().is_none_or(|p| p.contains('\0')) {
        return Err(CombineError::Output {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "FFmpeg opens files by UTF-8 paths without NUL bytes: rename it",
            ),
        });
    }
    ffmpeg::format::output_as(path, muxer).map_err(|source| CombineError::Ffmpeg {
        context: format!("creating {}", path.display()),
        source,
    })
}

/// An empty temporary file in the output's directory (so the final rename
/// stays on one file system), named after the output and hidden.
fn temp_beside(output: &Path) -> Result<tempfile::TempPath, CombineError> {
    let dir = match output.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".combine-tmp");
    // The mode FFmpeg creates files with (less the umask), as the output had
    // when FFmpeg created it directly; tempfile's default 0600 would hide
    // the finished video from other users.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    builder
        .tempfile_in(dir)
        .map(tempfile::NamedTempFile::into_temp_path)
        .map_err(|source| CombineError::Output {
            path: output.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chunker::{ChunkSpec, PlanRequest, plan};

    /// A manifest of 5 chunks of 10 frames at 30 fps, as JSON, after `edit`.
    fn manifest_json(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let fps = Fps::new(30, 1).expect("fps");
        let p = plan(&PlanRequest::new(50, fps, ChunkSpec::Count(5))).expect("plan");
        let manifest = Manifest {
            fps,
            sample_rate: DEFAULT_SAMPLE_RATE,
            output_frames: Some(p.output_frames()),
            chunks: p
                .chunks()
                .iter()
                .map(|c| {
                    ChunkArtifact::new(*c, format!("chunk-{}.ts", c.index())).with_audio(
                        PcmAudio::new(format!("chunk-{}.pcm", c.index()), PcmFormat::S16le),
                    )
                })
                .collect(),
        };
        let mut json = serde_json::to_value(&manifest).expect("serialize");
        edit(&mut json);
        json.to_string()
    }

    /// The error's message without serde_json's " at line L column C",
    /// which points into the long generated JSON.
    fn without_location(err: &CombineError) -> String {
        let text = err.to_string();
        match text.rsplit_once(" at line ") {
            Some((message, place)) if place.contains(" column ") => message.to_owned(),
            _ => text,
        }
    }

    #[track_caller]
    fn check_refused(edit: impl FnOnce(&mut serde_json::Value), message: &str) {
        let json = manifest_json(edit);
        let err = Manifest::from_json(&json).expect_err("refused");
        assert!(
            matches!(err, CombineError::InvalidManifest { .. }),
            "{err:?}"
        );
        assert_eq!(without_location(&err), message);
    }

    #[test]
    fn a_written_manifest_reads_back() {
        let json = manifest_json(|_| {});
        let m = Manifest::from_json(&json).expect("valid");
        assert_eq!(m.chunks.len(), 5);
        assert_eq!(m.chunks[3].chunk.frames().first.0, 30);
        let again: serde_json::Value = serde_json::to_value(&m).expect("write");
        assert_eq!(again.to_string(), json);
    }

    #[test]
    fn bad_manifests_name_the_chunk_and_the_values() {
        check_refused(
            |j| j["chunks"][3]["chunk"]["frames"] = serde_json::json!({"first": 5, "last": 1}),
            "manifest: chunks[3].chunk.frames: frame range is inverted: first 5 is after last 1",
        );
        check_refused(
            |j| j["chunks"][1]["chunk"]["samples"]["end"] = serde_json::json!(0),
            "manifest: chunks[1].chunk.samples: sample span is inverted: end 0 is before start 16000",
        );
        check_refused(
            |j| j["chunks"][2]["chunk"]["output_frames"] = serde_json::json!(11),
            "manifest: chunks[2].chunk: chunk 2: output_frames 11 is invalid: frames 20-29 every 1 make it 10",
        );
        check_refused(
            |j| j["chunks"][4]["chunk"]["every_nth_frame"] = serde_json::json!(0),
            "manifest: chunks[4].chunk: chunk 4: every_nth_frame 0 is invalid: it must be at least 1 (1 keeps every frame)",
        );
        check_refused(
            |j| j["fps"] = serde_json::json!({"num": 0, "den": 1}),
            "manifest: fps: fps 0/1 is invalid: numerator and denominator must both be at least 1",
        );
        check_refused(
            |j| j["chunks"][0]["audio"]["format"] = serde_json::json!("u8"),
            "manifest: chunks[0].audio.format: unknown variant `u8`, expected `s16le` or `f32le`",
        );
    }

    #[test]
    fn text_that_is_not_one_json_document_is_refused() {
        let err = Manifest::from_json("{").expect_err("truncated");
        assert_eq!(
            err.to_string(),
            "manifest: EOF while parsing an object at line 1 column 1"
        );
        let json = manifest_json(|_| {}) + " {}";
        let err = Manifest::from_json(&json).expect_err("trailing");
        assert!(
            err.to_string()
                .starts_with("manifest: trailing characters at line 1 column"),
            "{err}"
        );
    }
}
