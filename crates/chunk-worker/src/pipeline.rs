//! The render → convert → encode pipeline and the PCM writer.
//!
//! ```text
//! render+convert thread 0 ─┐ (frames k ≡ 0 mod N, RGBA → YUV)
//! render+convert thread 1 ─┼─► encode (takes frames in order; libx264 → TS)
//! …                       ─┘
//! audio thread: PCM in blocks of AUDIO_BLOCK_SAMPLES
//! ```
//!
//! Each pool thread renders with its own `FrameRenderer`, straight into the
//! input buffer of its own [`FrameConverter`] (no RGBA frame is copied), and
//! converts there, so conversion scales with the pool instead of
//! bottlenecking one thread; the conversion is integer arithmetic, so which
//! thread converted a frame never shows in the bytes. The encoder reorders
//! simply by reading thread `k mod N`'s channel for frame `k`. Every arrow
//! is a bounded channel ([`RENDER_QUEUE_DEPTH`]) and each thread reuses one
//! RGBA buffer (the converter's), so memory is flat whatever the chunk's
//! length; the renderer is told so (`render_frame_changed`), only repaints
//! the region its previous frame drew, and reports where the bytes changed.
//! The encoder hands each YUV frame back to its thread after encoding it
//! (`yuv_pool`): a thread cycles through
//! [`YUV_FRAMES_PER_THREAD`](crate::YUV_FRAMES_PER_THREAD) frames and
//! converts into each only what changed since it last held a frame.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chunker::Chunk;
use composition::{CompositionMeta, Damage, Prepared};
use sha2::{Digest, Sha256};
use timebase::{Fps, FrameIndex, SampleSpan};
use tokio_util::sync::CancellationToken;

use crate::encode::{ChunkEncoder, FrameConverter, TS_CLOCK_HZ};
use crate::images::ImageWriter;
use crate::yuv_pool::{Pooled, YUV_FRAMES_PER_THREAD, YuvPool};
use crate::{WorkerConfig, WorkerError};
use spec::{
    ArtifactTarget, ChunkProgress, ChunkRequest, ChunkSpan, ContentHash, FrameSink, ImageTarget,
    PcmFormat, StageTimings,
};

/// Converted frames each pool thread may have queued for the encoder (one
/// more waits in the thread while the queue is full). One is enough: libx264
/// buffers its own lookahead, and each queued 1080p frame is 3 MB of peak
/// memory per thread (`--bench memory`: 1080p worker peak 336 MiB with 1,
/// 350 MiB with 2, same CPU and wall time).
pub const RENDER_QUEUE_DEPTH: usize = 1;

/// Audio is rendered and written this many samples at a time (one second at
/// 48 kHz), so a long chunk never holds all its PCM in memory.
pub const AUDIO_BLOCK_SAMPLES: u64 = 48_000;

/// Buffer size for artifact files.
const FILE_BUFFER_BYTES: usize = 1 << 20;

/// Receives progress from the pipeline's threads; must be cheap (called
/// after every frame).
pub type ProgressSink<'a> = dyn Fn(ChunkProgress) + Send + Sync + 'a;

/// Receives a chunk's PCM the moment it is complete and has its final name
/// (once, from the audio thread, while frames may still render).
pub type AudioSink<'a> = dyn Fn(&ArtifactFile) + Send + Sync + 'a;

/// Called by the audio thread with the finished PCM's digest.
type AudioDone<'a> = dyn Fn(Digested) -> Result<(), WorkerError> + Sync + 'a;

/// One artifact file and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactFile {
    /// Where it was written (its final name).
    pub path: PathBuf,
    /// The sha256 of the bytes.
    pub sha256: ContentHash,
    /// Size in bytes.
    pub size: u64,
}

/// What a rendered chunk produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkResult {
    /// The chunk, with its exact sample span.
    pub chunk: Chunk,
    /// The composition's resolved metadata.
    pub meta: CompositionMeta,
    /// The output video's frame rate (`fps / every_nth_frame`).
    pub output_fps: Fps,
    /// PTS of the chunk's first frame at 90 kHz:
    /// `first_output_frame · ticks_per_frame`.
    pub first_pts: u64,
    /// Duration of one output frame at 90 kHz.
    pub ticks_per_frame: u64,
    /// Format of the PCM artifact.
    pub pcm_format: PcmFormat,
    /// The encoded video, exactly `chunk.frame_count()` frames; `None`
    /// when the request's frames went elsewhere ([`FrameSink::Skip`],
    /// [`FrameSink::Images`]).
    pub video: Option<ArtifactFile>,
    /// For [`FrameSink::Images`]: the directory the frames were written
    /// to (the target itself, or for a storage target a directory in the
    /// request's, to upload from).
    pub images_dir: Option<PathBuf>,
    /// Interleaved stereo PCM at 48 kHz, exactly `chunk.samples().len()`
    /// sample frames.
    pub audio: ArtifactFile,
    /// Time per stage.
    pub timings: StageTimings,
}

impl ChunkResult {
    /// Frames in the video artifact.
    pub fn frame_count(&self) -> u64 {
        self.chunk.frame_count()
    }

    /// Stereo sample frames in the PCM artifact.
    pub fn sample_count(&self) -> u64 {
        self.chunk.samples().len()
    }
}

/// A temporary file beside `name` in `dir`, removed if dropped before it is
/// persisted (error, cancel or panic).
fn temp_artifact(dir: &Path, name: &str) -> Result<tempfile::TempPath, WorkerError> {
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map(tempfile::NamedTempFile::into_temp_path)
        .map_err(|e| WorkerError::io(dir, e))
}

/// Renames a finished artifact to its final name.
fn persist(tmp: tempfile::TempPath, dest: PathBuf) -> Result<PathBuf, WorkerError> {
    tmp.persist(&dest)
        .map_err(|e| WorkerError::io(&dest, e.error))?;
    Ok(dest)
}

/// Renders one chunk: frames `request.span.frames` to H.264 in MPEG-TS and
/// the chunk's exact sample span to PCM, both written into the request's
/// target directory (temporary names, renamed when complete).
///
/// Video timestamps are the frames' output indices relative to
/// `composition_start` times the output frame duration at 90 kHz; the first
/// frame is an IDR. `progress` is called after each frame; `cancel` is
/// checked between frames and audio blocks.
///
/// # Errors
/// - [`WorkerError::Composition`], [`WorkerError::BundleNotFound`] or
///   [`WorkerError::Unsupported`] if the composition cannot be resolved;
/// - [`WorkerError::Range`] if the frames are outside the composition or the
///   frame rate has no whole number of 90 kHz ticks;
/// - [`WorkerError::Field`] for invalid video settings or an odd size with
///   4:2:0;
/// - [`WorkerError::Encoder`] or [`WorkerError::Io`] if FFmpeg or the disk
///   fail;
/// - [`WorkerError::Cancelled`] if `cancel` fires. No artifact is left
///   behind on any error.
///
/// The directory target is created (with its parents) when missing.
pub fn render_chunk(
    config: &WorkerConfig,
    request: &ChunkRequest,
    progress: &ProgressSink<'_>,
    cancel: &CancellationToken,
) -> Result<ChunkResult, WorkerError> {
    render_chunk_audio_first(config, request, progress, None, cancel)
}

/// [`render_chunk`]; with `audio_ready`, the PCM gets its final name as
/// soon as it is complete and `audio_ready` is called with it while the
/// frames still render, so a caller can encode the audio meanwhile. An
/// error after that leaves the PCM behind (complete, with the bytes a
/// retry writes again), never the video.
///
/// # Errors
/// As [`render_chunk`].
pub fn render_chunk_audio_first(
    config: &WorkerConfig,
    request: &ChunkRequest,
    progress: &ProgressSink<'_>,
    audio_ready: Option<&AudioSink<'_>>,
    cancel: &CancellationToken,
) -> Result<ChunkResult, WorkerError> {
    render_into(
        config,
        request,
        progress,
        audio_ready,
        cancel,
        TargetDir::Create,
    )
}

/// Whether a chunk's directory target may be created.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetDir {
    /// Created (with its parents) when missing: a caller of the library.
    Create,
    /// Must exist. The gRPC service creates what it may at admission: a
    /// directory its client may remove once it stops waiting (a cancelled
    /// render's work directory) is never created again by a chunk that
    /// starts after that.
    Existing,
}

impl TargetDir {
    /// Creates `dir`, or checks that it exists.
    fn prepare(self, dir: &Path) -> Result<(), WorkerError> {
        match self {
            TargetDir::Create => std::fs::create_dir_all(dir).map_err(|e| WorkerError::io(dir, e)),
            TargetDir::Existing if !dir.is_dir() => Err(WorkerError::io(
                dir,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the output directory does not exist",
                ),
            )),
            TargetDir::Existing => Ok(()),
        }
    }
}

/// [`render_chunk_audio_first`], creating the directory target or not.
pub(crate) fn render_into(
    config: &WorkerConfig,
    request: &ChunkRequest,
    progress: &ProgressSink<'_>,
    audio_ready: Option<&AudioSink<'_>>,
    cancel: &CancellationToken,
    target_dir: TargetDir,
) -> Result<ChunkResult, WorkerError> {
    let started = Instant::now();
    let dir = match &request.target {
        ArtifactTarget::Directory(d) => d.clone(),
        ArtifactTarget::Inline | ArtifactTarget::Storage(_) => {
            return Err(WorkerError::Unsupported {
                field: "output",
                message: "inline delivery and uploads are done by the gRPC service; render_chunk needs a directory target".into(),
            });
        }
    };
    request.video.validate()?;
    let source = config.source(&request.source)?;
    let prepared = source
        .composition(&request.composition_id)?
        .prepare(&request.props)?;
    let meta = prepared.meta().clone();
    let span = request.span;
    let chunk_no = span.index.0;
    let ChunkTiming {
        chunk,
        output_fps,
        ticks_per_frame,
        first_pts,
    } = chunk_timing(&meta, &span)?;
    if request.frames_to.has_video_artifact() {
        request
            .video
            .check_frame_size(&meta.id, meta.width, meta.height)?;
    }
    target_dir.prepare(&dir)?;
    if cancel.is_cancelled() {
        return Err(WorkerError::Cancelled { chunk: chunk_no });
    }

    let (ts_name, pcm_name) = ChunkRequest::artifact_names(span.index, request.video.codec);
    let pcm_tmp = temp_artifact(&dir, &pcm_name)?;
    let pcm_at = pcm_tmp.to_path_buf();
    let pcm_dest = dir.join(&pcm_name);
    // Taken by the audio thread when it names the PCM early.
    let pcm_slot = std::sync::Mutex::new(Some(pcm_tmp));
    let name_early = audio_ready.map(|ready| {
        |(sha256, size): Digested| {
            let tmp = pcm_slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(tmp) = tmp {
                let path = persist(tmp, pcm_dest.clone())?;
                ready(&ArtifactFile { path, sha256, size });
            }
            Ok(())
        }
    });
    let (frames_out, ts_tmp, images_dir) = frames_out(request, &meta, &dir, &ts_name)?;
    let job = Job {
        prepared: prepared.as_ref(),
        meta: &meta,
        chunk,
        request,
        output_fps,
        render_threads: config.render_threads.max(1),
        progress,
        audio_done: name_early.as_ref().map(|f| f as &AudioDone<'_>),
        stop: cancel.child_token(),
        counters: Counters::default(),
    };
    let (video, audio) = job.run(&frames_out, &pcm_at)?;
    if cancel.is_cancelled() {
        return Err(WorkerError::Cancelled { chunk: chunk_no });
    }
    let video = match (ts_tmp, video) {
        (Some(tmp), Some((sha256, size))) => Some(ArtifactFile {
            path: persist(tmp, dir.join(&ts_name))?,
            sha256,
            size,
        }),
        _ => None,
    };
    let pcm_tmp = pcm_slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    let pcm_path = match pcm_tmp {
        Some(tmp) => persist(tmp, pcm_dest.clone())?,
        None => pcm_dest.clone(),
    };
    let c = &job.counters;
    let timings = StageTimings {
        render: nanos(&c.render_ns),
        convert: nanos(&c.convert_ns),
        encode: nanos(&c.encode_ns),
        audio: nanos(&c.audio_ns),
        deliver: Duration::ZERO,
        total: started.elapsed(),
    };
    log_rendered(request, &chunk, &timings);
    Ok(ChunkResult {
        chunk,
        meta,
        output_fps,
        first_pts,
        ticks_per_frame,
        pcm_format: request.pcm_format,
        video,
        images_dir,
        audio: ArtifactFile {
            path: pcm_path,
            sha256: audio.0,
            size: audio.1,
        },
        timings,
    })
}

/// The worker's log line for a rendered chunk, with its time per stage.
fn log_rendered(request: &ChunkRequest, chunk: &Chunk, timings: &StageTimings) {
    tracing::info!(
        render_id = %spec::quote(&request.job_id),
        chunk = request.span.index.0,
        frames = %request.span.frames,
        frame_count = chunk.frame_count(),
        samples = %chunk.samples(),
        render_ms = timings.render.as_millis() as u64,
        convert_ms = timings.convert.as_millis() as u64,
        encode_ms = timings.encode.as_millis() as u64,
        audio_ms = timings.audio.as_millis() as u64,
        total_ms = timings.total.as_millis() as u64,
        "chunk rendered"
    );
}

/// Where a chunk's frames go: the encoder (into a temporary artifact beside
/// its final name `ts_name`), nowhere, or image files (in the sequence's
/// directory, or one in `dir` to upload from); with the temporary artifact
/// and the images' directory.
fn frames_out(
    request: &ChunkRequest,
    meta: &CompositionMeta,
    dir: &Path,
    ts_name: &str,
) -> Result<(FramesOut, Option<tempfile::TempPath>, Option<PathBuf>), WorkerError> {
    Ok(match &request.frames_to {
        FrameSink::Encode => {
            let tmp = temp_artifact(dir, ts_name)?;
            (FramesOut::Encode(tmp.to_path_buf()), Some(tmp), None)
        }
        FrameSink::Skip => (FramesOut::Skip, None, None),
        FrameSink::Images(sequence) => {
            let images = match &sequence.target {
                ImageTarget::Directory(d) => d.clone(),
                ImageTarget::Storage(_) => dir.join(format!("frames-{:06}", request.span.index.0)),
            };
            let writer = ImageWriter::new(&images, sequence, meta.width, meta.height)?;
            (FramesOut::Images(writer), None, Some(images))
        }
    })
}

/// Where a chunk's frames and timestamps fall.
struct ChunkTiming {
    chunk: Chunk,
    output_fps: Fps,
    ticks_per_frame: u64,
    first_pts: u64,
}

/// The chunk `span` asks for in `meta`'s composition, and its output
/// timestamps on the 90 kHz clock, or why they cannot be.
fn chunk_timing(meta: &CompositionMeta, span: &ChunkSpan) -> Result<ChunkTiming, WorkerError> {
    let range_err = |message: String| WorkerError::Range {
        chunk: span.index.0,
        message,
    };
    if span.frames.last.0 >= meta.duration_frames {
        return Err(range_err(format!(
            "frames {} are outside composition `{}`: frames run 0-{} ({} frames)",
            span.frames,
            meta.id,
            meta.duration_frames - 1,
            meta.duration_frames
        )));
    }
    let chunk = span
        .to_chunk(meta.fps, composition::SAMPLE_RATE)
        .map_err(|e| range_err(e.to_string()))?;
    let output_fps = meta
        .fps
        .every_nth(span.every_nth_frame)
        .map_err(|e| range_err(format!("every_nth_frame {}: {e}", span.every_nth_frame)))?;
    let ticks_per_frame = output_fps.ticks_per_frame(TS_CLOCK_HZ).ok_or_else(|| {
        range_err(format!(
            "output frame rate {output_fps} has no whole number of 90 kHz ticks per frame"
        ))
    })?;
    let first_pts = chunk
        .first_output_frame()
        .checked_mul(ticks_per_frame)
        .filter(|p| i64::try_from(*p).is_ok())
        .ok_or_else(|| range_err("the chunk's timestamps overflow".into()))?;
    Ok(ChunkTiming {
        chunk,
        output_fps,
        ticks_per_frame,
        first_pts,
    })
}

fn nanos(a: &AtomicU64) -> Duration {
    Duration::from_nanos(a.load(Ordering::Relaxed))
}

fn add_elapsed(a: &AtomicU64, since: Instant) {
    let ns = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
    a.fetch_add(ns, Ordering::Relaxed);
}

#[derive(Default)]
struct Counters {
    rendered: AtomicU64,
    encoded: AtomicU64,
    render_ns: AtomicU64,
    convert_ns: AtomicU64,
    encode_ns: AtomicU64,
    audio_ns: AtomicU64,
}

struct Job<'a> {
    prepared: &'a dyn Prepared,
    meta: &'a CompositionMeta,
    chunk: Chunk,
    request: &'a ChunkRequest,
    output_fps: Fps,
    render_threads: usize,
    progress: &'a ProgressSink<'a>,
    /// Called by the audio thread once the PCM is complete.
    audio_done: Option<&'a AudioDone<'a>>,
    /// Cancelled by the caller or by the first stage that fails, so the
    /// others stop promptly.
    stop: CancellationToken,
    counters: Counters,
}

/// Where a chunk's frames go.
enum FramesOut {
    /// Encoded into the video artifact at this (temporary) path.
    Encode(PathBuf),
    /// Not rendered.
    Skip,
    /// Each written as an image file.
    Images(ImageWriter),
}

/// (sha256, size) of a finished artifact.
type Digested = (ContentHash, u64);

type Rendered = Result<(u64, Pooled), WorkerError>;

impl Job<'_> {
    fn cancelled(&self) -> WorkerError {
        WorkerError::Cancelled {
            chunk: self.chunk.index().0,
        }
    }

    fn report(&self) {
        (self.progress)(ChunkProgress {
            frames_rendered: self.counters.rendered.load(Ordering::Relaxed),
            frames_encoded: self.counters.encoded.load(Ordering::Relaxed),
            frames_total: self.chunk.frame_count(),
        });
    }

    /// Runs a stage; if it fails, stops the others.
    fn stage<T>(&self, f: impl FnOnce() -> Result<T, WorkerError>) -> Result<T, WorkerError> {
        let r = f();
        if r.is_err() {
            self.stop.cancel();
        }
        r
    }

    /// Runs the stages: render threads feeding the encoder (or writing
    /// images, or none when frames are skipped) and the audio thread.
    /// Returns the video artifact's digest when there is one, and the
    /// PCM's.
    fn run(
        &self,
        out: &FramesOut,
        pcm: &Path,
    ) -> Result<(Option<Digested>, Digested), WorkerError> {
        let n = match out {
            FramesOut::Skip => 0,
            _ => self.render_threads,
        };
        let total = self.chunk.frame_count();
        let frames: Vec<FrameIndex> = self.chunk.rendered_frames().collect();
        std::thread::scope(|s| {
            let mut rendered_rx = Vec::with_capacity(n);
            let mut returns = Vec::with_capacity(n);
            let mut renderers = Vec::with_capacity(n);
            for t in 0..n {
                let (tx, rx) = mpsc::sync_channel::<Rendered>(RENDER_QUEUE_DEPTH);
                rendered_rx.push(rx);
                // Never full: a thread has at most YUV_FRAMES_PER_THREAD
                // frames.
                let (back_tx, back_rx) = mpsc::channel::<Pooled>();
                returns.push(back_tx);
                let frames = &frames;
                renderers.push(
                    std::thread::Builder::new()
                        .name(format!("render-{t}"))
                        .spawn_scoped(s, move || {
                            self.stage(|| match out {
                                FramesOut::Images(writer) => self.image_stage(t, frames, writer),
                                _ => self.render_stage(t, frames, &tx, back_rx),
                            })
                        }),
                );
            }
            let encoder = std::thread::Builder::new()
                .name("encode".into())
                .spawn_scoped(s, move || match out {
                    FramesOut::Encode(ts) => self
                        .stage(|| self.encode_stage(ts, total, &rendered_rx, &returns))
                        .map(Some),
                    FramesOut::Skip | FramesOut::Images(_) => Ok(None),
                });
            let audio = std::thread::Builder::new()
                .name("audio".into())
                .spawn_scoped(s, move || {
                    self.stage(|| {
                        let digest = self.audio_stage(pcm)?;
                        if let Some(done) = self.audio_done {
                            done(digest)?;
                        }
                        Ok(digest)
                    })
                });

            fn join<T>(
                h: std::io::Result<std::thread::ScopedJoinHandle<'_, Result<T, WorkerError>>>,
                stage: &'static str,
            ) -> Result<T, WorkerError> {
                match h {
                    Err(e) => Err(WorkerError::encoder("thread spawn", e)),
                    Ok(h) => h.join().unwrap_or(Err(WorkerError::Panicked { stage })),
                }
            }
            let video = join(encoder, "encode");
            let audio = join(audio, "audio");
            let mut errors = Vec::new();
            for r in renderers {
                if let Err(e) = join(r, "render") {
                    errors.push(e);
                }
            }
            match (video, audio) {
                (Ok(v), Ok(a)) if errors.is_empty() => Ok((v, a)),
                (v, a) => {
                    self.stop.cancel();
                    errors.extend(v.err());
                    errors.extend(a.err());
                    // The first real error wins over the cancellations it
                    // caused in the other stages.
                    let real = errors
                        .iter()
                        .position(|e| !matches!(e, WorkerError::Cancelled { .. }));
                    Err(match real {
                        Some(i) => errors.swap_remove(i),
                        None => self.cancelled(),
                    })
                }
            }
        })
    }

    /// A render thread of an image sequence: renders its frames (`k ≡
    /// thread mod N`) and writes each as an image, in any order (each file
    /// is named by its own index).
    fn image_stage(
        &self,
        thread: usize,
        frames: &[FrameIndex],
        writer: &ImageWriter,
    ) -> Result<(), WorkerError> {
        let mut renderer = self.prepared.frame_renderer()?;
        let mut rgba = vec![0u8; self.meta.frame_bytes()];
        let first = self.chunk.first_output_frame();
        for k in (thread..frames.len()).step_by(self.render_threads) {
            if self.stop.is_cancelled() {
                return Err(self.cancelled());
            }
            let t = Instant::now();
            // `rgba` holds this renderer's previous frame (the writer only
            // reads it): only what that frame drew is repainted.
            renderer.render_frame_reusing(frames[k], &mut rgba)?;
            add_elapsed(&self.counters.render_ns, t);
            self.counters.rendered.fetch_add(1, Ordering::Relaxed);
            let t = Instant::now();
            writer.write(first + k as u64, &rgba)?;
            add_elapsed(&self.counters.encode_ns, t);
            self.counters.encoded.fetch_add(1, Ordering::Relaxed);
            self.report();
        }
        Ok(())
    }

    /// A render thread of an encoded chunk: renders its frames (`k ≡
    /// thread mod N`) into its converter's input, converts each into one of
    /// its pooled YUV frames (`returned` brings them back from the
    /// encoder) and queues it for the encoder.
    fn render_stage(
        &self,
        thread: usize,
        frames: &[FrameIndex],
        tx: &mpsc::SyncSender<Rendered>,
        returned: mpsc::Receiver<Pooled>,
    ) -> Result<(), WorkerError> {
        let mut renderer = self.prepared.frame_renderer()?;
        // Frames are rendered straight into the converter's input buffer.
        let mut conv = FrameConverter::new(
            self.meta.width,
            self.meta.height,
            self.request.video.pixel_format,
        )?
        .with_palette(self.request.video.gif_palette.as_ref())?;
        let mut pool = YuvPool::new(YUV_FRAMES_PER_THREAD, returned);
        let mut changed = Damage::default();
        for k in (thread..frames.len()).step_by(self.render_threads) {
            if self.stop.is_cancelled() {
                return Err(self.cancelled());
            }
            let t = Instant::now();
            // The converter only reads its input: it still holds this
            // renderer's previous frame, so only what that frame drew is
            // repainted (a failed frame ends the thread).
            let r = renderer.render_frame_changed(frames[k], conv.rgba_mut(), &mut changed);
            add_elapsed(&self.counters.render_ns, t);
            if let Err(e) = r {
                // The encoder reports it in frame order and stops the others.
                let _ = tx.send(Err(e.into()));
                return Err(self.cancelled());
            }
            pool.record(&changed);
            // May wait for the encoder to hand a frame back (as a full
            // queue would make `send` wait): not conversion time.
            let Some(target) = pool.target() else {
                return Err(self.cancelled());
            };
            let t = Instant::now();
            let yuv = match pool.fill(target, &mut conv) {
                Ok(yuv) => yuv,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return Err(self.cancelled());
                }
            };
            add_elapsed(&self.counters.convert_ns, t);
            self.counters.rendered.fetch_add(1, Ordering::Relaxed);
            self.report();
            if tx.send(Ok((k as u64, yuv))).is_err() {
                return Err(self.cancelled());
            }
        }
        if pool.replaced > 0 {
            tracing::debug!(
                thread,
                replaced = pool.replaced,
                "YUV frames the encoder still referenced were allocated again"
            );
        }
        Ok(())
    }

    fn encode_stage(
        &self,
        path: &Path,
        total: u64,
        rendered: &[mpsc::Receiver<Rendered>],
        returns: &[mpsc::Sender<Pooled>],
    ) -> Result<Digested, WorkerError> {
        let t = Instant::now();
        let mut enc = ChunkEncoder::create(
            path,
            self.meta.width,
            self.meta.height,
            self.output_fps,
            &self.request.video,
        )?;
        add_elapsed(&self.counters.encode_ns, t);
        let first = self.chunk.first_output_frame();
        let n = rendered.len() as u64;
        for i in 0..total {
            // Frame i comes from thread i mod N: reading the channels in
            // turn puts the frames back in order.
            let from = (i % n) as usize;
            let (got, mut frame) = match rendered[from].recv() {
                Ok(r) => r?,
                Err(_) => return Err(self.cancelled()),
            };
            debug_assert_eq!(got, i, "thread {from} sends its frames in order");
            if self.stop.is_cancelled() {
                return Err(self.cancelled());
            }
            let pts = i64::try_from(first + i).map_err(|_| self.cancelled())?;
            let t = Instant::now();
            enc.encode(&mut frame.frame, pts)?;
            add_elapsed(&self.counters.encode_ns, t);
            // Back to its thread for a later frame (which checks that the
            // encoder holds no reference to it any more). A thread that has
            // finished no longer listens.
            let _ = returns[from].send(frame);
            self.counters.encoded.store(enc.packets, Ordering::Relaxed);
            self.report();
        }
        let t = Instant::now();
        let packets = enc.finish()?;
        self.counters.encoded.store(packets, Ordering::Relaxed);
        self.report();
        if packets != self.chunk.frame_count() {
            return Err(WorkerError::encoder(
                "encoder flush",
                format!(
                    "wrote {packets} packets for {} frames",
                    self.chunk.frame_count()
                ),
            ));
        }
        let digest = digest_file(path)?;
        add_elapsed(&self.counters.encode_ns, t);
        Ok(digest)
    }

    fn audio_stage(&self, path: &Path) -> Result<Digested, WorkerError> {
        let t = Instant::now();
        let file = File::create(path).map_err(|e| WorkerError::io(path, e))?;
        let mut out = BufWriter::with_capacity(FILE_BUFFER_BYTES, file);
        let mut hasher = Sha256::new();
        let span = self.chunk.samples();
        let format = self.request.pcm_format;
        let mut samples = Vec::new();
        let mut bytes = Vec::new();
        let mut size = 0u64;
        let mut start = span.start.0;
        while start < span.end.0 {
            if self.stop.is_cancelled() {
                return Err(self.cancelled());
            }
            let end = (start + AUDIO_BLOCK_SAMPLES).min(span.end.0);
            let block = SampleSpan::new(start, end).expect("start < end by the loop condition");
            samples.resize((end - start) as usize * composition::AUDIO_CHANNELS, 0.0f32);
            self.prepared.render_audio(block, &mut samples)?;
            encode_pcm(&samples, format, &mut bytes);
            out.write_all(&bytes)
                .map_err(|e| WorkerError::io(path, e))?;
            hasher.update(&bytes);
            size += bytes.len() as u64;
            start = end;
        }
        out.flush().map_err(|e| WorkerError::io(path, e))?;
        add_elapsed(&self.counters.audio_ns, t);
        Ok((ContentHash::from_bytes(hasher.finalize().into()), size))
    }
}

/// Writes interleaved `f32` samples as `format` into `out` (replacing its
/// contents). s16le rounds to nearest and clamps to the 16-bit range.
pub(crate) fn encode_pcm(samples: &[f32], format: PcmFormat, out: &mut Vec<u8>) {
    out.clear();
    match format {
        PcmFormat::F32le => {
            out.reserve(samples.len() * 4);
            for s in samples {
                out.extend_from_slice(&s.to_le_bytes());
            }
        }
        PcmFormat::S16le => {
            out.reserve(samples.len() * 2);
            for s in samples {
                let v = (s * 32767.0).round().clamp(-32768.0, 32767.0) as i16;
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
}

/// sha256 and size of a file.
pub(crate) fn digest_file(path: &Path) -> Result<Digested, WorkerError> {
    let mut f = File::open(path).map_err(|e| WorkerError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; FILE_BUFFER_BYTES];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| WorkerError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((ContentHash::from_bytes(hasher.finalize().into()), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcm_encodings() {
        let mut out = Vec::new();
        encode_pcm(&[0.0, 1.0, -1.0, 2.0], PcmFormat::S16le, &mut out);
        assert_eq!(out, [0, 0, 0xff, 0x7f, 0x01, 0x80, 0xff, 0x7f]);
        encode_pcm(&[0.5], PcmFormat::F32le, &mut out);
        assert_eq!(out, 0.5f32.to_le_bytes());
    }

    fn pattern_chunk(dir: &Path) -> ChunkRequest {
        ChunkRequest {
            job_id: "dirs".into(),
            source: spec::SourceSpec::Registered,
            composition_id: "test-pattern".into(),
            props: serde_json::from_str(r#"{"width":64,"height":36,"duration":3}"#).expect("props"),
            span: spec::ChunkSpan {
                index: chunker::ChunkIndex(0),
                frames: timebase::FrameRange::new(0, 2).expect("0 <= 2"),
                composition_start: 0,
                every_nth_frame: 1,
            },
            video: spec::VideoSettings::default(),
            pcm_format: PcmFormat::F32le,
            target: ArtifactTarget::Directory(dir.to_path_buf()),
            frames_to: Default::default(),
        }
    }

    #[test]
    fn a_missing_directory_target_is_created_for_the_library_only() {
        let config = crate::WorkerConfig::new(composition::Registry::with_builtins());
        let root = tempfile::tempdir().expect("tempdir");
        let gone = root.path().join("work");
        let request = pattern_chunk(&gone);
        let cancel = CancellationToken::new();
        // The service's way: a client's directory that is gone (removed
        // after a cancel) is not created again.
        let err = render_into(
            &config,
            &request,
            &|_| {},
            None,
            &cancel,
            TargetDir::Existing,
        )
        .expect_err("a missing directory");
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(err.to_string().contains("work"), "{err}");
        assert!(!gone.exists());
        // The library's way: created.
        let result = render_chunk(&config, &request, &|_| {}, &cancel).expect("render");
        assert_eq!(result.frame_count(), 3);
        assert!(gone.is_dir());
    }

    /// `ffmpeg-next` panics on a path that is not UTF-8: a library caller
    /// with such a directory gets an error that says so instead.
    #[test]
    fn a_target_ffmpeg_cannot_open_is_an_error_not_a_panic() {
        use std::os::unix::ffi::OsStrExt as _;
        let config = crate::WorkerConfig::new(composition::Registry::with_builtins());
        let root = tempfile::tempdir().expect("tempdir");
        let odd = root
            .path()
            .join(std::ffi::OsStr::from_bytes(b"chunks-\xff"));
        let request = pattern_chunk(&odd);
        let err = render_chunk(&config, &request, &|_| {}, &CancellationToken::new())
            .expect_err("a path FFmpeg cannot take");
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }
}
