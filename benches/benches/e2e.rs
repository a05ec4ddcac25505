//! End to end on the reference promo bundle (`examples/promo`): how close the
//! whole pipeline comes to the cost of encoding alone on this machine.
//!
//! `cargo bench -p montage-benches --bench e2e` renders the promo at
//! 1920x1080, 30 fps, 300 frames, libx264 `veryfast`, CRF 18 (the
//! [`VideoSettings`] defaults otherwise: High profile, keyint 250, 3
//! B-frames, 4 encoder threads), four ways:
//! - (a) the full pipeline, 1 chunk, in this process: `render_chunk` then
//!   `combine_chunks` into an MP4;
//! - (b) the same through `Coordinator::embedded` (one worker per core, over
//!   gRPC on 127.0.0.1) with 16 chunks;
//! - (c) encode only: the promo's frames rendered beforehand into memory
//!   (RGBA), then `render_chunk` of a composition that only copies them
//!   out (`montage_benches::CopiedFrames`), so what is measured is the
//!   worker's RGBA→YUV conversion and libx264 encode with identical
//!   settings (the chunk-worker crate does not expose its encoder on its
//!   own);
//! - (d) Debian's `ffmpeg` CLI encoding the same frames as YUV from a raw
//!   file, converted beforehand by the worker's own `FrameConverter`
//!   (`-f rawvideo -pix_fmt yuv420p ... -c:v libx264 -preset veryfast -crf 18
//!   -threads 4`): libx264 alone;
//! - (d') the same from the RGBA frames (`-pix_fmt rgba`), so ffmpeg
//!   converts with its own (not bit-exact, SIMD) swscale path, as (c) does
//!   with the worker's.
//!
//! For each it prints wall time, CPU time (user + system of this process and
//! its waited-for children, from `/proc/self/stat`), peak resident memory
//! (`VmHWM`, reset before each case; for (d) the ffmpeg process's, sampled)
//! and frames per second; then the ratios (a)/(c), (b)/(a) in CPU time,
//! (c)/(d), (c)/(d'), and combine's share of (b). It also times the
//! worker's RGBA→YUV conversion of all frames on one thread.
//!
//! The process first calls `chunk_worker::reuse_freed_memory()`, as the
//! worker and coordinator binaries do; `GLIBC_TUNABLES=glibc.malloc.arena_test=8`
//! (any `glibc.malloc` tunable) keeps glibc's defaults instead, to compare.
//!
//! `MONTAGE_BENCH_RUNS=N` runs each case N times and keeps the run with the
//! median wall time. Started any other way than by `cargo bench` (e.g. by
//! `cargo test --all-targets`) it runs a quick mode: a copy of the bundle at
//! 320x180 and 30 frames, the same four cases.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chunk_worker::{
    ArtifactTarget, ChunkRequest, ChunkSpan, FrameConverter, PcmFormat, PixelFormat, Quality,
    SourceSpec, VideoSettings, WorkerConfig, render_chunk,
};
use chunker::{ChunkIndex, ChunkSpec};
use combine::{ChunkArtifact, CombineOptions, PcmAudio, combine_chunks};
use composition::{CompositionError, CompositionMeta, Prepared, Props, Registry};
use coordinator::{Coordinator, CoordinatorOptions, RenderRequest, RenderSource};
use montage_benches::{
    CopiedFrames, cpu_time, env_or, full_run, peak_rss_kib, reset_peak_rss, rss_kib,
};
use timebase::{FrameIndex, FrameRange};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const COMPOSITION: &str = "promo";
const CHUNKS_B: u32 = 16;

/// One measured case.
#[derive(Debug, Clone)]
struct Sample {
    wall: Duration,
    cpu: Duration,
    /// Peak resident memory during the case, KiB.
    peak_kib: Option<u64>,
    /// Resident memory when the case started, KiB.
    start_kib: Option<u64>,
    frames: u64,
}

impl Sample {
    fn fps(&self) -> f64 {
        self.frames as f64 / self.wall.as_secs_f64()
    }
}

/// Runs `f` `runs` times, measuring each in this process, and keeps the
/// run with the median wall time (with its value).
fn measure<T>(
    runs: usize,
    frames: u64,
    mut f: impl FnMut() -> Result<T, BoxError>,
) -> Result<(T, Sample), BoxError> {
    let mut all = Vec::new();
    for _ in 0..runs.max(1) {
        reset_peak_rss();
        let start_kib = rss_kib();
        let c0 = cpu_time();
        let t0 = Instant::now();
        let value = f()?;
        let wall = t0.elapsed();
        let cpu = match (c0, cpu_time()) {
            (Some(a), Some(b)) => b.total().saturating_sub(a.total()),
            _ => Duration::ZERO,
        };
        let sample = Sample {
            wall,
            cpu,
            peak_kib: peak_rss_kib(None),
            start_kib,
            frames,
        };
        all.push((value, sample));
    }
    all.sort_by_key(|(_, s)| s.wall);
    let mid = all.len() / 2;
    Ok(all.swap_remove(mid))
}

fn video_settings() -> VideoSettings {
    VideoSettings {
        quality: Quality::Crf(18),
        preset: "veryfast".to_owned(),
        ..VideoSettings::default()
    }
}

fn chunk_request(source: SourceSpec, id: &str, frames: u64, dir: &Path) -> ChunkRequest {
    ChunkRequest {
        job_id: format!("bench-e2e-{id}"),
        source,
        composition_id: id.to_owned(),
        props: Props::new(),
        span: ChunkSpan {
            index: ChunkIndex(0),
            frames: FrameRange::new(0, frames - 1).expect("frames >= 1 (checked by validate)"),
            composition_start: 0,
            every_nth_frame: 1,
        },
        video: video_settings(),
        pcm_format: PcmFormat::F32le,
        target: ArtifactTarget::Directory(dir.to_path_buf()),
        frames_to: Default::default(),
    }
}

/// (a): one chunk rendered in this process, then combined. Returns the
/// combine time and the MP4's size.
fn one_process(
    config: &WorkerConfig,
    bundle: &Path,
    frames: u64,
    dir: &Path,
) -> Result<(Duration, u64), BoxError> {
    let request = chunk_request(
        SourceSpec::BundlePath(bundle.to_path_buf()),
        COMPOSITION,
        frames,
        dir,
    );
    let r = render_chunk(config, &request, &|_| {}, &CancellationToken::new())?;
    let mut artifact = ChunkArtifact::new(
        r.chunk,
        &r.video.as_ref().expect("an encoded chunk has video").path,
    );
    if r.meta.has_audio {
        artifact = artifact.with_audio(PcmAudio::new(&r.audio.path, combine::PcmFormat::F32le));
    }
    let t = Instant::now();
    let report = combine_chunks(
        &[artifact],
        &CombineOptions::new(r.meta.fps).with_expected_frames(frames),
        dir.join("a.mp4"),
    )?;
    Ok((t.elapsed(), report.bytes))
}

/// Renders the first `frames` frames of `prepared` into memory on `threads`
/// threads.
fn render_to_memory(
    prepared: &Arc<dyn Prepared>,
    frames: u64,
    threads: usize,
) -> Result<Vec<Vec<u8>>, BoxError> {
    let bytes = prepared.meta().frame_bytes();
    let mut out: Vec<Vec<u8>> = (0..frames).map(|_| vec![0u8; bytes]).collect();
    let per_thread = out.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| -> Result<(), BoxError> {
        let handles: Vec<_> = out
            .chunks_mut(per_thread)
            .enumerate()
            .map(|(t, part)| {
                let prepared = Arc::clone(prepared);
                s.spawn(move || -> Result<(), CompositionError> {
                    let mut renderer = prepared.frame_renderer()?;
                    for (k, buf) in part.iter_mut().enumerate() {
                        renderer.render_frame(FrameIndex((t * per_thread + k) as u64), buf)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "a render thread panicked")??;
        }
        Ok(())
    })?;
    Ok(out)
}

/// (d), (d'): Debian's ffmpeg encoding `raw` (frames of `pix_fmt`).
/// Returns the output size and the ffmpeg process's peak resident memory
/// (sampled every 10 ms).
fn ffmpeg_encode(
    raw: &Path,
    pix_fmt: &str,
    meta: &CompositionMeta,
    out: &Path,
) -> Result<(u64, Option<u64>), BoxError> {
    let video = video_settings();
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "rawvideo", "-pix_fmt", pix_fmt])
        .args(["-s", &format!("{}x{}", meta.width, meta.height)])
        .args(["-r", &meta.fps.to_string()])
        .arg("-i")
        .arg(raw)
        .args(["-c:v", "libx264", "-preset", &video.preset, "-crf", "18"])
        .args(["-pix_fmt", "yuv420p"])
        .args([
            "-threads",
            &video
                .encoder_threads_for(meta.width, meta.height)
                .to_string(),
        ])
        .args(["-an", "-f", "mpegts"])
        .arg(out)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting Debian's `ffmpeg`: {e}"))?;
    let mut peak = None;
    let status = loop {
        if let Some(kib) = peak_rss_kib(Some(child.id())) {
            peak = Some(kib);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if !status.success() {
        return Err(format!("ffmpeg encoding {} failed: {status}", raw.display()).into());
    }
    Ok((std::fs::metadata(out)?.len(), peak))
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "?".to_owned(), |k| format!("{:.0}", k as f64 / 1024.0))
}

/// One table row; `peak_kib` is `None` for this process's own peak (and
/// then the growth over the start is shown too).
fn print_row(label: &str, s: &Sample, peak_kib: Option<u64>, note: &str) {
    let (peak_kib, added) = match peak_kib {
        Some(p) => (Some(p), None),
        None => (
            s.peak_kib,
            s.peak_kib
                .zip(s.start_kib)
                .map(|(p, a)| p.saturating_sub(a)),
        ),
    };
    println!(
        "| {label:<40} | {:>7.2} | {:>7.2} | {:>8} | {:>8} | {:>6.1} | {note}",
        s.wall.as_secs_f64(),
        s.cpu.as_secs_f64(),
        mib(peak_kib),
        mib(added),
        s.fps()
    );
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

/// The case (b): the coordinator's embedded pool, [`CHUNKS_B`] chunks.
fn embedded(
    runs: usize,
    frames: u64,
    bundle: &Path,
    out: &Path,
) -> Result<(coordinator::RenderSummary, Sample), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let coordinator = Arc::new(runtime.block_on(Coordinator::embedded(
        coordinator::default_local_workers(),
        WorkerConfig::standard(),
        CoordinatorOptions::default(),
    ))?);
    let result = measure(runs, frames, || {
        let mut request = RenderRequest::new(
            RenderSource::Bundle(bundle.to_path_buf()),
            COMPOSITION,
            ChunkSpec::Count(CHUNKS_B),
            out,
        );
        request.video = video_settings();
        let summary = runtime.block_on(async { coordinator.render(request).finish().await })?;
        Ok(summary)
    });
    if let Ok(c) = Arc::try_unwrap(coordinator) {
        runtime.block_on(c.shutdown());
    }
    result
}

/// The case (c): encode only, from frames rendered beforehand into memory
/// (handed over, and dropped once encoded). Returns the TS's size.
fn encode_only(
    runs: usize,
    meta: &CompositionMeta,
    rendered: Arc<Vec<Vec<u8>>>,
    dir: &Path,
) -> Result<(u64, Sample), BoxError> {
    let frames = meta.duration_frames;
    let memory = CopiedFrames::new(
        CompositionMeta {
            id: "memory-frames".to_owned(),
            has_audio: false,
            props: Props::new(),
            ..meta.clone()
        },
        Arc::new(move |f, rgba: &mut [u8]| {
            let src = usize::try_from(f)
                .ok()
                .and_then(|i| rendered.get(i))
                .ok_or_else(|| {
                    format!("only {} frames were rendered beforehand", rendered.len())
                })?;
            rgba.copy_from_slice(src);
            Ok(())
        }),
    );
    let mut registry = Registry::new();
    registry.register(memory)?;
    let config =
        WorkerConfig::new(registry).with_render_threads(WorkerConfig::standard().render_threads);
    std::fs::create_dir_all(dir)?;
    measure(runs, frames, || {
        let request = chunk_request(SourceSpec::Registered, "memory-frames", frames, dir);
        let r = render_chunk(&config, &request, &|_| {}, &CancellationToken::new())?;
        Ok(r.video.as_ref().map_or(0, |v| v.size))
    })
}

/// Writes the frames as raw RGBA to `raw` and, converted by the worker's
/// own [`FrameConverter`], as raw YUV to `yuv`; returns the conversion's
/// time on one thread.
fn write_raw_frames(
    meta: &CompositionMeta,
    pixel_format: PixelFormat,
    rendered: &[Vec<u8>],
    raw: &Path,
    yuv: &Path,
) -> Result<Duration, BoxError> {
    let mut convert = Duration::ZERO;
    let mut rgba_file = std::io::BufWriter::new(std::fs::File::create(raw)?);
    let mut yuv_file = std::io::BufWriter::new(std::fs::File::create(yuv)?);
    let mut conv = FrameConverter::new(meta.width, meta.height, pixel_format)?;
    let mut planes = Vec::new();
    for frame in rendered {
        rgba_file.write_all(frame)?;
        conv.rgba_mut().copy_from_slice(frame);
        let t = Instant::now();
        let converted = conv.convert()?;
        convert += t.elapsed();
        planes.clear();
        converted.write_packed(&mut planes);
        yuv_file.write_all(&planes)?;
    }
    rgba_file.flush()?;
    yuv_file.flush()?;
    Ok(convert)
}

/// Every case measured.
struct Results {
    frames: u64,
    a: Sample,
    combine_a: Duration,
    bytes_a: u64,
    b: Sample,
    summary: coordinator::RenderSummary,
    c: Sample,
    bytes_c: u64,
    d: Sample,
    bytes_d: u64,
    peak_d: Option<u64>,
    d2: Sample,
    bytes_d2: u64,
    peak_d2: Option<u64>,
    pre_render: Duration,
    convert: Duration,
}

/// Prints the table and the ratios.
fn report(r: &Results) {
    let frames = r.frames;
    println!();
    println!(
        "| {:<40} | {:>7} | {:>7} | {:>8} | {:>8} | {:>6} | output",
        "case", "wall s", "CPU s", "peak MiB", "+MiB", "fps"
    );
    println!(
        "|{:-<42}|{:-<9}|{:-<9}|{:-<10}|{:-<10}|{:-<8}|-------",
        "", "", "", "", "", ""
    );
    print_row(
        "(a) full pipeline, 1 chunk, 1 process",
        &r.a,
        None,
        &format!(
            "{} B MP4, combine {:.0} ms",
            r.bytes_a,
            r.combine_a.as_secs_f64() * 1000.0
        ),
    );
    print_row(
        &format!(
            "(b) coordinator, {CHUNKS_B} chunks, {} workers",
            coordinator::default_local_workers()
        ),
        &r.b,
        None,
        &format!(
            "{} B MP4, combine {} ms",
            r.summary.bytes, r.summary.combine_ms
        ),
    );
    print_row(
        "(c) encode only (frames in memory)",
        &r.c,
        None,
        &format!(
            "{} B TS, video only; peak includes the frames held",
            r.bytes_c
        ),
    );
    print_row(
        "(d) ffmpeg CLI, raw YUV file",
        &r.d,
        Some(r.peak_d.unwrap_or(0)),
        &format!("{} B TS; peak is ffmpeg's own (+MiB: n/a)", r.bytes_d),
    );
    print_row(
        "(d') ffmpeg CLI, raw RGBA file",
        &r.d2,
        Some(r.peak_d2.unwrap_or(0)),
        &format!("{} B TS; ffmpeg converts to yuv420p itself", r.bytes_d2),
    );
    println!();
    println!(
        "pre-rendering {frames} frames into memory took {:.2} s",
        r.pre_render.as_secs_f64()
    );
    println!(
        "(a)/(c): wall {:.2}, CPU {:.2}   (target <= 1.10)",
        ratio(r.a.wall, r.c.wall),
        ratio(r.a.cpu, r.c.cpu)
    );
    println!(
        "(b)/(a): CPU {:.2}, wall {:.2}   (target <= 1.10 in CPU)",
        ratio(r.b.cpu, r.a.cpu),
        ratio(r.b.wall, r.a.wall)
    );
    println!(
        "worker RGBA->YUV conversion (FrameConverter) of {frames} frames on one thread: {:.2} s",
        r.convert.as_secs_f64()
    );
    println!(
        "(c)/(d): wall {:.2}, CPU {:.2}   (c)/(d'): wall {:.2}, CPU {:.2}",
        ratio(r.c.wall, r.d.wall),
        ratio(r.c.cpu, r.d.cpu),
        ratio(r.c.wall, r.d2.wall),
        ratio(r.c.cpu, r.d2.cpu)
    );
    println!(
        "combine share of (b): {:.1} % of wall ({} of {} ms)   (target <= 2 %)",
        100.0 * r.summary.combine_ms as f64 / r.summary.wall_ms.max(1) as f64,
        r.summary.combine_ms,
        r.summary.wall_ms
    );
}

fn main() -> Result<(), BoxError> {
    // As the binaries do: FFmpeg's AAC encoder prints statistics otherwise.
    combine::quiet_ffmpeg_logs();
    // What the worker and coordinator binaries do first (see its docs).
    let malloc_tuned = chunk_worker::reuse_freed_memory();
    let full = full_run();
    let runs: usize = env_or("MONTAGE_BENCH_RUNS", 1);
    let scratch = tempfile::tempdir()?;
    let bundle = montage_benches::promo_bundle(full, scratch.path())?;
    let config = WorkerConfig::standard();
    let source = config.source(&SourceSpec::BundlePath(bundle.clone()))?;
    let promo = source.composition(COMPOSITION)?;
    let meta = promo.describe(&Props::new())?;
    let frames = meta.duration_frames;
    let video = video_settings();
    println!(
        "e2e{}: `{COMPOSITION}` from {}, {}x{} at {} fps, {frames} frames; libx264 {} {:?}, \
         {} encoder threads, {} render threads per chunk; {} cores; {runs} run(s) per case; \
         glibc malloc {}",
        if full {
            ""
        } else {
            " (quick mode: not a cargo bench run)"
        },
        bundle.display(),
        meta.width,
        meta.height,
        meta.fps,
        video.preset,
        video.quality,
        video.encoder_threads_for(meta.width, meta.height),
        config.render_threads,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        if malloc_tuned {
            "keeps freed memory (chunk_worker::reuse_freed_memory)"
        } else {
            "defaults"
        },
    );

    // (a) One chunk in one process.
    let dir_a = scratch.path().join("a");
    std::fs::create_dir_all(&dir_a)?;
    let ((combine_a, bytes_a), a) = measure(runs, frames, || {
        one_process(&config, &bundle, frames, &dir_a)
    })?;
    // (b) The coordinator's embedded pool.
    let (summary, b) = embedded(runs, frames, &bundle, &scratch.path().join("b.mp4"))?;

    // Frames rendered beforehand for (c) and (d).
    let prepared = promo.prepare(&Props::new())?;
    let pre_render_start = Instant::now();
    let rendered = Arc::new(render_to_memory(
        &prepared,
        frames,
        std::thread::available_parallelism().map_or(2, |n| n.get()),
    )?);
    let pre_render = pre_render_start.elapsed();
    let raw = scratch.path().join("frames.rgba");
    let yuv = scratch.path().join("frames.yuv");
    let convert = write_raw_frames(&meta, video.pixel_format, &rendered, &raw, &yuv)?;
    // (c) Encode only, from memory (the frames are dropped after).
    let (bytes_c, c) = encode_only(runs, &meta, rendered, &scratch.path().join("c"))?;

    // (d) Debian's ffmpeg on the same frames as YUV from a raw file, (d')
    // from the RGBA frames.
    let out_d = scratch.path().join("d.ts");
    let yuv_fmt = video.pixel_format.as_str();
    let ((bytes_d, peak_d), d) =
        measure(runs, frames, || ffmpeg_encode(&yuv, yuv_fmt, &meta, &out_d))?;
    let ((bytes_d2, peak_d2), d2) =
        measure(runs, frames, || ffmpeg_encode(&raw, "rgba", &meta, &out_d))?;
    report(&Results {
        frames,
        a,
        combine_a,
        bytes_a,
        b,
        summary,
        c,
        bytes_c,
        d,
        bytes_d,
        peak_d,
        d2,
        bytes_d2,
        peak_d2,
        pre_render,
        convert,
    });
    Ok(())
}
