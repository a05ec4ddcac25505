//! Per output codec (issue 17): what the release `coordinator` pays to
//! render the promo in one chunk with `--codec X`, beside Debian's ffmpeg
//! CLI encoding the very same frames with the very same encoder settings.
//!
//! `cargo bench -p montage-benches --bench codecs` builds the release
//! `coordinator`, then for each codec (H.264, H.265, VP9, AV1, ProRes, GIF)
//! runs, as separate processes, in interleaved rounds:
//! - `coordinator render examples/promo --codec X --chunks 1 --cache off
//!   --out promo.EXT` (the container each codec is usually delivered in);
//! - `ffmpeg` encoding the promo's frames, converted once beforehand by the
//!   worker's own converter to the codec's pixel format and written raw,
//!   with the arguments `chunk_worker::ffmpeg_cli_args` derives from the
//!   same `VideoSettings` the worker's encoder is opened with, into the
//!   codec's chunk container: the cost of the encoder alone.
//!
//! CPU is that of each process's whole tree, medians over the rounds
//! (`MONTAGE_BENCH_RUNS`, default 1: six codecs at 1080p take minutes).
//! The ratio render / ffmpeg is printed beside the limit (1.10).
//! GIF has no baseline: its frames depend on the palette the coordinator
//! samples, which a raw `pal8` file cannot carry to the CLI.
//!
//! Started any other way than by `cargo bench` it runs a quick mode (a
//! 320x180, 30-frame copy of the promo, one round) with the binary of the
//! current profile, so CI keeps it working.

use std::path::Path;
use std::time::Duration;

use chunk_worker::VideoSettings;
use montage_benches::process::{self, BoxError};
use montage_benches::{env_or, full_run};
use spec::VideoCodec;

const COMPOSITION: &str = "promo";

/// The extension each codec's output is usually delivered with.
fn extension(codec: VideoCodec) -> &'static str {
    match codec {
        VideoCodec::H264 | VideoCodec::H265 => "mp4",
        VideoCodec::Vp9 | VideoCodec::Av1 => "webm",
        VideoCodec::Prores => "mov",
        VideoCodec::Gif => "gif",
    }
}

fn render_command(binary: &Path, bundle: &Path, codec: VideoCodec, out: &Path) -> Vec<String> {
    [
        binary.display().to_string(),
        "render".into(),
        bundle.display().to_string(),
        "--codec".into(),
        codec.as_str().into(),
        "--chunks".into(),
        "1".into(),
        "--cache".into(),
        "off".into(),
        "--out".into(),
        out.display().to_string(),
    ]
    .to_vec()
}

/// One codec's cases: the render, and ffmpeg's encode when it has one.
struct Row {
    codec: VideoCodec,
    render: process::Case,
    ffmpeg: Option<process::Case>,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Prints each codec's medians and its ratio to ffmpeg beside the limit.
fn report(header: &str, rows: &[Row], frames: u64) {
    println!("{header}");
    println!();
    println!(
        "| codec | render wall s | fps | render CPU s | CPU ms/frame | peak RSS MiB | ffmpeg CPU s | render / ffmpeg CPU | limit |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let per_frame = |d: Duration| secs(d) * 1000.0 / (frames.max(1) as f64);
    for row in rows {
        let r = row.render.median();
        let (ffmpeg_cpu, ratio) = match &row.ffmpeg {
            Some(f) => {
                let f = f.median();
                (
                    format!("{:.2}", secs(f.cpu)),
                    format!("{:.2}", secs(r.cpu) / secs(f.cpu).max(1e-9)),
                )
            }
            None => ("-".into(), "-".into()),
        };
        println!(
            "| {} | {:.2} | {:.1} | {:.2} | {:.1} | {:.0} | {ffmpeg_cpu} | {ratio} | ≤ 1.10 |",
            row.codec.as_str(),
            secs(r.wall),
            frames as f64 / secs(r.wall).max(1e-9),
            secs(r.cpu),
            per_frame(r.cpu),
            r.peak_kib as f64 / 1024.0,
        );
    }
}

fn main() -> Result<(), BoxError> {
    let full = full_run();
    let rounds: usize = env_or("MONTAGE_BENCH_RUNS", 1).max(1);
    let load_before = process::load_average();
    let binary = process::built_binary(full, "coordinator", "coordinator")?;
    let scratch = tempfile::tempdir()?;
    let bundle = montage_benches::promo_bundle(full, scratch.path())?;
    let out = |name: String| scratch.path().join(name);

    let mut rows = Vec::new();
    let mut frames = 0;
    let mut size = String::new();
    for codec in VideoCodec::ALL {
        let settings = VideoSettings::for_codec(codec, false)?;
        let render = process::Case::new(
            format!("coordinator render --codec {}", codec.as_str()),
            render_command(
                &binary,
                &bundle,
                codec,
                &out(format!("{}.{}", codec.as_str(), extension(codec))),
            ),
        );
        let ffmpeg = if codec == VideoCodec::Gif {
            None
        } else {
            let raw = out(format!("frames.{}.raw", settings.pixel_format.as_str()));
            let meta = if raw.exists() {
                chunk_worker::WorkerConfig::standard()
                    .source(&chunk_worker::SourceSpec::BundlePath(bundle.clone()))?
                    .composition(COMPOSITION)?
                    .describe(&composition::Props::new())?
            } else {
                montage_benches::write_raw_frames(&bundle, COMPOSITION, &settings, &raw)?
            };
            frames = meta.duration_frames;
            size = format!("{}x{} at {} fps", meta.width, meta.height, meta.fps);
            Some(process::Case::new(
                format!(
                    "ffmpeg CLI, {}",
                    chunk_worker::ffmpeg_cli_args(&settings, meta.width, meta.height)[1]
                ),
                montage_benches::ffmpeg_encode_command(
                    &settings,
                    &raw,
                    &meta,
                    &out(format!("{}.ffmpeg", codec.as_str())),
                ),
            ))
        };
        rows.push(Row {
            codec,
            render,
            ffmpeg,
        });
    }
    for _ in 0..rounds {
        for row in &mut rows {
            row.render.run()?;
            if let Some(f) = &mut row.ffmpeg {
                f.run()?;
            }
        }
    }
    let load_after = process::load_average();

    let header = format!(
        "codecs{}: `{COMPOSITION}` {size}, {frames} frames, 1 chunk; {}; {} cores; {rounds} round(s), medians; load average {load_before} before, {load_after} after",
        if full {
            ""
        } else {
            " (quick mode: not a cargo bench run)"
        },
        binary.display(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    report(&header, &rows, frames);
    Ok(())
}
