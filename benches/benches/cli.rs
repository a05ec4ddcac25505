//! What a user running the release binaries pays, beside what encoding the
//! same frames costs with Debian's ffmpeg CLI.
//!
//! `cargo bench -p montage-benches --bench cli` first builds the release
//! `coordinator` (`cargo build --release -p coordinator --bin coordinator`,
//! so the binary measured is the code checked out), then runs, as separate
//! processes, in interleaved rounds (case 1, 2, 3, 4, then again):
//! - `coordinator render examples/promo --chunks 1 --cache off`;
//! - the same with `--chunks 16`;
//! - the same with no `--chunks` (the planner's default);
//! - `ffmpeg` (Debian's CLI) encoding the promo's frames with the worker's
//!   x264 settings (`veryfast`, CRF 18, the worker's thread count, keyint,
//!   B-frames and closed GOPs) from a raw `yuv420p` file written once
//!   beforehand by the worker's own converter: the cost of libx264 alone
//!   (issue 21's baseline);
//! - the same `ffmpeg` also encoding the promo's soundtrack to AAC at the
//!   combine's bitrate into an MP4: the same work as a render, so its ratio
//!   is printed beside (not instead of) the issue's.
//!
//! Each process's CPU time is that of its whole tree (user + system of the
//! process and every descendant it waited for: `cutime`/`cstime` of this
//! process in `/proc/self/stat` after waiting for it), its peak resident
//! memory is sampled from `/proc/<pid>/status` (`VmHWM`) while it runs, and
//! its wall time is measured from spawn to exit. The table shows the median
//! of each case over the rounds (`MONTAGE_BENCH_RUNS`, default 3), then the
//! ratios of issue 21 beside their limits (with the wall times of
//! HyperFrames and Remotion the issue measured on this machine), and the
//! machine's load average before and after (the machine is shared:
//! compare CPU, not wall).
//!
//! A second table breaks one chunk down in this process
//! (`chunk_worker::render_chunk`, then `combine::combine_chunks`): render,
//! RGBA→YUV conversion, x264 + MPEG-TS mux, audio, combine.
//!
//! Started any other way than by `cargo bench` (e.g. by `cargo test
//! --all-targets`) it runs a quick mode with the binary of the current
//! profile (built if missing): a copy of the promo at 320x180 and 30
//! frames, one round, the same tables.

use std::path::Path;
use std::time::{Duration, Instant};

use chunk_worker::{
    ArtifactTarget, ChunkRequest, ChunkSpan, PcmFormat, SourceSpec, VideoSettings, WorkerConfig,
    render_chunk,
};
use chunker::ChunkIndex;
use combine::{ChunkArtifact, CombineOptions, PcmAudio, combine_chunks};
use composition::{CompositionMeta, Props};
use montage_benches::process;
use montage_benches::{cpu_time, env_or, full_run};
use timebase::FrameRange;
use tokio_util::sync::CancellationToken;

use process::BoxError;

const COMPOSITION: &str = "promo";

/// The promo's soundtrack in its bundle (examples/promo/scene.json: from
/// frame 0, full volume).
const SOUNDTRACK: &str = "tone.wav";

/// Wall seconds HyperFrames 0.8.170 and Remotion 4.0.529 took for the same
/// 1080p promo on this machine class (issue 21's table; they are not
/// installed here, so they are constants).
const PEERS_WALL_S: [(&str, f64); 2] = [("HyperFrames", 27.09), ("Remotion", 33.71)];

/// Debian's ffmpeg encoding the raw file with the worker's x264 settings.
fn ffmpeg_command(yuv: &Path, meta: &CompositionMeta, out: &Path) -> Vec<String> {
    montage_benches::ffmpeg_encode_command(&VideoSettings::default(), yuv, meta, out)
}

/// [`ffmpeg_command`] also encoding `audio` (cut to the composition's
/// length) to AAC at the combine's bitrate, into an MP4.
fn ffmpeg_with_audio_command(
    yuv: &Path,
    audio: &Path,
    meta: &CompositionMeta,
    out: &Path,
) -> Vec<String> {
    let mut c = ffmpeg_command(yuv, meta, out);
    let out_arg = c.pop().expect("the command ends with its output");
    let seconds =
        meta.duration_frames as f64 * f64::from(meta.fps.den()) / f64::from(meta.fps.num());
    let at = c
        .iter()
        .position(|a| a == "-c:v")
        .expect("the command names its video codec");
    let input = [
        "-t".to_owned(),
        format!("{seconds}"),
        "-i".to_owned(),
        audio.display().to_string(),
        "-map".to_owned(),
        "0:v".to_owned(),
        "-map".to_owned(),
        "1:a".to_owned(),
        "-c:a".to_owned(),
        "aac".to_owned(),
        "-b:a".to_owned(),
        combine::DEFAULT_AUDIO_BITRATE.to_string(),
    ];
    c.splice(at..at, input);
    c.push(out_arg);
    c
}

fn render_command(binary: &Path, bundle: &Path, chunks: Option<u32>, out: &Path) -> Vec<String> {
    let mut c = vec![
        binary.display().to_string(),
        "render".to_owned(),
        bundle.display().to_string(),
        "--cache".to_owned(),
        "off".to_owned(),
        "--json".to_owned(),
        "--out".to_owned(),
        out.display().to_string(),
    ];
    if let Some(n) = chunks {
        c.extend(["--chunks".to_owned(), n.to_string()]);
    }
    c
}

/// The `done` event's summary in a coordinator's `--json` output.
fn summary(stdout: &str) -> Option<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "done")
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn ratio(a: Duration, b: Duration) -> f64 {
    secs(a) / secs(b).max(1e-9)
}

/// One chunk in this process, stage by stage: render, convert, encode (x264
/// and the TS muxer), audio, then combine.
fn breakdown(bundle: &Path, meta: &CompositionMeta, dir: &Path) -> Result<(), BoxError> {
    let config = WorkerConfig::standard();
    let request = ChunkRequest {
        job_id: "bench-cli".into(),
        source: SourceSpec::BundlePath(bundle.to_path_buf()),
        composition_id: COMPOSITION.into(),
        props: Props::new(),
        span: ChunkSpan {
            index: ChunkIndex(0),
            frames: FrameRange::new(0, meta.duration_frames - 1).ok_or("frames")?,
            composition_start: 0,
            every_nth_frame: 1,
        },
        video: VideoSettings::default(),
        pcm_format: PcmFormat::F32le,
        target: ArtifactTarget::Directory(dir.to_path_buf()),
        frames_to: Default::default(),
    };
    let c0 = cpu_time().ok_or("/proc/self/stat")?;
    let r = render_chunk(&config, &request, &|_| {}, &CancellationToken::new())?;
    let cpu = cpu_time()
        .ok_or("/proc/self/stat")?
        .own
        .saturating_sub(c0.own);
    let mut artifact = ChunkArtifact::new(
        r.chunk,
        &r.video.as_ref().expect("an encoded chunk has video").path,
    );
    if r.meta.has_audio {
        artifact = artifact.with_audio(PcmAudio::new(&r.audio.path, combine::PcmFormat::F32le));
    }
    let t = Instant::now();
    combine_chunks(
        &[artifact],
        &CombineOptions::new(r.meta.fps).with_expected_frames(meta.duration_frames),
        dir.join("breakdown.mp4"),
    )?;
    let combine = t.elapsed();
    let frames = meta.duration_frames as f64;
    let t = r.timings;
    println!();
    println!(
        "one chunk in this process (render_chunk: {:.2} s wall, {:.2} s CPU), time per stage summed over threads:",
        secs(t.total),
        secs(cpu)
    );
    println!("| stage | s | ms per frame |");
    println!("|---|---:|---:|");
    for (stage, d) in [
        ("render (RGBA)", t.render),
        ("convert (RGBA→YUV)", t.convert),
        ("encode (libx264 + TS mux)", t.encode),
        ("audio (PCM)", t.audio),
        ("combine (MP4, AAC)", combine),
    ] {
        println!(
            "| {stage} | {:.3} | {:.2} |",
            secs(d),
            secs(d) * 1000.0 / frames
        );
    }
    Ok(())
}

/// Prints the cases' medians, then the issue-21 ratios beside their
/// limits; the wall against the peers only for the full-size promo
/// (`full`), which is what they rendered.
fn report(header: &str, cases: &[process::Case; 5], full: bool) {
    println!("{header}");
    println!();
    println!("| case | wall s | CPU s | peak RSS MiB | chunks | combine ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    for case in cases {
        let m = case.median();
        let s = summary(&case.stdout);
        let field = |k: &str| {
            s.as_ref()
                .and_then(|s| s[k].as_u64())
                .map_or_else(|| "-".to_owned(), |v| v.to_string())
        };
        println!(
            "| {} | {:.2} | {:.2} | {:.0} | {} | {} |",
            case.label,
            secs(m.wall),
            secs(m.cpu),
            m.peak_kib as f64 / 1024.0,
            field("chunks"),
            field("combine_ms"),
        );
    }
    let [one, sixteen, default, ffmpeg, ffmpeg_aac] = cases;
    let (one_m, sixteen_m, default_m, ffmpeg_m, ffmpeg_aac_m) = (
        one.median(),
        sixteen.median(),
        default.median(),
        ffmpeg.median(),
        ffmpeg_aac.median(),
    );
    let combine_share = |case: &process::Case| {
        summary(&case.stdout)
            .and_then(|s| Some(100.0 * s["combine_ms"].as_f64()? / s["wall_ms"].as_f64()?.max(1.0)))
            .unwrap_or(f64::NAN)
    };
    println!();
    println!("| ratio | measured | limit |");
    println!("|---|---:|---:|");
    println!(
        "| CPU: 1 chunk / ffmpeg CLI | {:.2} | ≤ 1.10 |",
        ratio(one_m.cpu, ffmpeg_m.cpu)
    );
    println!(
        "| CPU: 1 chunk / ffmpeg CLI with the same AAC encode (same work) | {:.2} | - |",
        ratio(one_m.cpu, ffmpeg_aac_m.cpu)
    );
    println!(
        "| CPU: 16 chunks / 1 chunk | {:.2} | ≤ 1.10 |",
        ratio(sixteen_m.cpu, one_m.cpu)
    );
    println!(
        "| CPU: default chunks / 1 chunk | {:.2} | ≤ 1.10 |",
        ratio(default_m.cpu, one_m.cpu)
    );
    println!(
        "| combine, % of the 16-chunk render's wall | {:.1} | ≤ 2 |",
        combine_share(sixteen)
    );
    println!(
        "| combine, % of the default render's wall | {:.1} | ≤ 2 |",
        combine_share(default)
    );
    for (peer, wall) in PEERS_WALL_S.into_iter().filter(|_| full) {
        println!(
            "| wall: {peer} ({wall:.2} s) / default render | {:.1}× | ≥ 10× |",
            wall / secs(default_m.wall).max(1e-9)
        );
    }
}

fn main() -> Result<(), BoxError> {
    let full = full_run();
    let rounds: usize = env_or("MONTAGE_BENCH_RUNS", if full { 3 } else { 1 }).max(1);
    let load_before = montage_benches::process::load_average();
    let binary = montage_benches::process::built_binary(full, "coordinator", "coordinator")?;
    let scratch = tempfile::tempdir()?;
    let bundle = montage_benches::promo_bundle(full, scratch.path())?;
    let source = WorkerConfig::standard().source(&SourceSpec::BundlePath(bundle.clone()))?;
    let meta = source.composition(COMPOSITION)?.describe(&Props::new())?;
    let yuv = scratch.path().join("frames.yuv");
    montage_benches::write_raw_frames(&bundle, COMPOSITION, &VideoSettings::default(), &yuv)?;

    let out = |name: &str| scratch.path().join(name);
    let mut cases = [
        process::Case::new(
            "coordinator render, --chunks 1",
            render_command(&binary, &bundle, Some(1), &out("one.mp4")),
        ),
        process::Case::new(
            "coordinator render, --chunks 16",
            render_command(&binary, &bundle, Some(16), &out("sixteen.mp4")),
        ),
        process::Case::new(
            "coordinator render (default chunks)",
            render_command(&binary, &bundle, None, &out("default.mp4")),
        ),
        process::Case::new(
            "ffmpeg CLI, libx264 on the worker's raw YUV",
            ffmpeg_command(&yuv, &meta, &out("ffmpeg.ts")),
        ),
        process::Case::new(
            "ffmpeg CLI, the same plus AAC of the soundtrack, MP4",
            ffmpeg_with_audio_command(&yuv, &bundle.join(SOUNDTRACK), &meta, &out("ffmpeg.mp4")),
        ),
    ];
    for _ in 0..rounds {
        for case in &mut cases {
            case.run()?;
        }
    }
    let load_after = montage_benches::process::load_average();

    let header = format!(
        "cli{}: `{COMPOSITION}` {}x{} at {} fps, {} frames; {}; {} cores; {rounds} round(s), medians; load average {load_before} before, {load_after} after",
        if full {
            ""
        } else {
            " (quick mode: not a cargo bench run)"
        },
        meta.width,
        meta.height,
        meta.fps,
        meta.duration_frames,
        binary.display(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    report(&header, &cases, full);
    breakdown(&bundle, &meta, scratch.path())?;
    Ok(())
}
