//! Footage: what a full-frame video layer costs a render, beside decoding
//! the same frames with Debian's ffmpeg CLI, and what seeking costs per
//! chunk (issue 16's benchmark).
//!
//! `cargo bench -p montage-benches --bench footage` makes a 1920x1080,
//! 30 fps, 10 s H.264 source with ffmpeg (`testsrc2`, `veryfast`, a keyframe
//! every 2 s), a bundle with two compositions of the same size and length
//! (`footage`: the source full frame; `plain`: a solid colour), and runs as
//! separate processes (CPU of the whole process tree, interleaved rounds,
//! medians, `MONTAGE_BENCH_RUNS`, default 3) the release `coordinator`:
//! - `render footage` in 1 chunk, and in chunks of 150, 60, 30 and 15
//!   frames (`--frames-per-chunk`);
//! - `render plain` in the same chunkings;
//! - `ffmpeg -i source -f null -`: decoding alone;
//! - `ffmpeg -i source -c:v libx264 …`: decoding and encoding with the
//!   worker's x264 settings.
//!
//! It prints the CPU per output frame of each, the video layer's own cost
//! per frame (footage − plain, 1 chunk) against ffmpeg's decode per frame,
//! and, for each chunk length, the extra CPU per chunk that the video layer
//! adds over the plain composition's chunk overhead (the seek to the
//! keyframe before the chunk and the frames decoded up to its first): the
//! chunk length below which that seek costs more than the chunk's own
//! decoding is reported, for the planner.
//!
//! Started any other way than by `cargo bench` (e.g. by `cargo test
//! --all-targets`) it runs a quick mode: 320x180, 30 frames, chunks of 15
//! and 5 frames, one round, with the current profile's binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use montage_benches::process::{BoxError, Case, Cost, built_binary, load_average};
use montage_benches::{env_or, full_run};

/// The source and compositions' frame rate.
const FPS: u64 = 30;

/// The shape of the run.
struct Shape {
    width: u32,
    height: u32,
    frames: u64,
    /// Chunk lengths measured besides one chunk.
    chunk_lengths: &'static [u64],
}

/// Makes the H.264 source with Debian's ffmpeg.
fn make_source(shape: &Shape, path: &Path) -> Result<(), BoxError> {
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!(
            "testsrc2=size={}x{}:rate={FPS}",
            shape.width, shape.height
        ))
        .args(["-frames:v", &shape.frames.to_string()])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-crf", "20"])
        .args(["-g", &(2 * FPS).to_string(), "-pix_fmt", "yuv420p"])
        .arg(path)
        .status()?;
    if !status.success() {
        return Err(format!("ffmpeg could not make the source: {status}").into());
    }
    Ok(())
}

/// A bundle holding the source and the two compositions.
fn make_bundle(shape: &Shape, dir: &Path) -> Result<PathBuf, BoxError> {
    let bundle = dir.join("footage-bundle");
    std::fs::create_dir_all(&bundle)?;
    make_source(shape, &bundle.join("source.mp4"))?;
    let composition = |id: &str, layer: serde_json::Value| {
        serde_json::json!({
            "id": id, "width": shape.width, "height": shape.height,
            "fps": FPS, "duration": shape.frames, "layers": [layer],
        })
    };
    let scene = serde_json::json!({
        "version": 1,
        "compositions": [
            composition("footage", serde_json::json!({
                "type": "video", "name": "Clip", "src": "source.mp4",
                "size": [shape.width, shape.height], "fit": "cover", "muted": true,
            })),
            composition("plain", serde_json::json!({
                "type": "solid", "name": "Bg", "color": "#336699",
            })),
        ],
    });
    std::fs::write(
        bundle.join("scene.json"),
        serde_json::to_vec_pretty(&scene)?,
    )?;
    Ok(bundle)
}

fn render(
    binary: &Path,
    bundle: &Path,
    id: &str,
    per_chunk: Option<u64>,
    out: &Path,
) -> Vec<String> {
    let mut c = vec![
        binary.display().to_string(),
        "render".into(),
        bundle.display().to_string(),
        "--composition".into(),
        id.into(),
        "--cache".into(),
        "off".into(),
        "--json".into(),
        "--out".into(),
        out.display().to_string(),
    ];
    match per_chunk {
        Some(n) => c.extend(["--frames-per-chunk".into(), n.to_string()]),
        None => c.extend(["--chunks".into(), "1".into()]),
    }
    c
}

fn ffmpeg(args: &[&str], source: &Path) -> Vec<String> {
    let mut c: Vec<String> = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i"]
        .map(String::from)
        .to_vec();
    c.push(source.display().to_string());
    c.extend(args.iter().map(|a| (*a).to_owned()));
    c
}

fn ms_per_frame(cost: &Cost, frames: u64) -> f64 {
    cost.cpu.as_secs_f64() * 1000.0 / frames.max(1) as f64
}

/// Every case, in the order they run and print: each chunking of
/// `footage` then `plain`, then ffmpeg's decode, then its decode + encode.
fn cases(binary: &Path, bundle: &Path, lengths: &[Option<u64>], scratch: &Path) -> Vec<Case> {
    let source = bundle.join("source.mp4");
    let out = |name: &str| scratch.join(name);
    let label = |id: &str, n: Option<u64>| match n {
        None => format!("render {id}, 1 chunk"),
        Some(n) => format!("render {id}, chunks of {n}"),
    };
    let mut cases = Vec::new();
    for &n in lengths {
        for id in ["footage", "plain"] {
            cases.push(Case::new(
                label(id, n),
                render(binary, bundle, id, n, &out(&format!("{id}.mp4"))),
            ));
        }
    }
    cases.push(Case::new(
        "ffmpeg: decode only",
        ffmpeg(&["-f", "null", "-"], &source),
    ));
    let threads = "4";
    cases.push(Case::new(
        "ffmpeg: decode + libx264 encode",
        ffmpeg(
            &[
                "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-threads", threads, "-f",
                "mpegts",
            ],
            &source,
        )
        .into_iter()
        .chain([out("ffmpeg.ts").display().to_string()])
        .collect(),
    ));
    cases
}

/// Prints the table, the video layer's cost per frame against ffmpeg's
/// decode, and the seek cost per chunk for each chunk length.
fn report(shape: &Shape, lengths: &[Option<u64>], cases: &[Case]) {
    println!();
    println!(
        "| {:<40} | {:>7} | {:>7} | {:>9} | {:>8} |",
        "case", "wall s", "CPU s", "CPU ms/fr", "peak MiB"
    );
    println!(
        "|{:-<42}|{:-<9}|{:-<9}|{:-<11}|{:-<10}|",
        "", "", "", "", ""
    );
    let mut medians = Vec::new();
    for case in cases {
        let m = case.median();
        println!(
            "| {:<40} | {:>7.2} | {:>7.2} | {:>9.2} | {:>8} |",
            case.label,
            m.wall.as_secs_f64(),
            m.cpu.as_secs_f64(),
            ms_per_frame(&m, shape.frames),
            m.peak_kib / 1024
        );
        medians.push(m);
    }
    let frames = shape.frames;
    let pair = |i: usize| (medians[2 * i], medians[2 * i + 1]);
    let decode = medians[2 * lengths.len()];
    let (footage_1, plain_1) = pair(0);
    let layer_ms = ms_per_frame(&footage_1, frames) - ms_per_frame(&plain_1, frames);
    let decode_ms = ms_per_frame(&decode, frames);
    println!();
    println!(
        "video layer, 1 chunk: {layer_ms:.2} ms CPU per frame (footage − plain) against \
         ffmpeg's decode alone {decode_ms:.2} ms: ratio {:.2}",
        layer_ms / decode_ms.max(1e-9)
    );
    let mut crossover = None;
    for (i, n) in lengths.iter().enumerate().skip(1) {
        let Some(n) = n else { continue };
        let (footage, plain) = pair(i);
        let chunks = frames.div_ceil(*n) as f64;
        // What the video layer adds per extra chunk, beyond what every
        // chunk costs anyway (the plain composition's encoder start-up).
        let extra = (footage.cpu.as_secs_f64() - footage_1.cpu.as_secs_f64())
            - (plain.cpu.as_secs_f64() - plain_1.cpu.as_secs_f64());
        let per_chunk_ms = 1000.0 * extra / (chunks - 1.0).max(1.0);
        let decoding_ms = layer_ms * *n as f64;
        println!(
            "chunks of {n:>4} frames: the video layer's seek costs {per_chunk_ms:>7.1} ms CPU \
             per chunk, its decoding {decoding_ms:>7.1} ms per chunk"
        );
        if per_chunk_ms > decoding_ms && crossover.is_none() {
            crossover = Some(*n);
        }
    }
    match crossover {
        Some(n) => println!(
            "seeking costs more than decoding in chunks of {n} frames or fewer ({:.2} s)",
            n as f64 / FPS as f64
        ),
        None => println!(
            "seeking costs less than decoding down to chunks of {} frames",
            shape.chunk_lengths.last().copied().unwrap_or(frames)
        ),
    }
}

fn main() -> Result<(), BoxError> {
    let full = full_run();
    let shape = if full {
        Shape {
            width: 1920,
            height: 1080,
            frames: 300,
            chunk_lengths: &[150, 60, 30, 15],
        }
    } else {
        Shape {
            width: 320,
            height: 180,
            frames: 30,
            chunk_lengths: &[15, 5],
        }
    };
    let rounds: usize = if full {
        env_or("MONTAGE_BENCH_RUNS", 3)
    } else {
        1
    };
    let scratch = tempfile::tempdir()?;
    let load_before = load_average();
    let binary = built_binary(full, "coordinator", "coordinator")?;
    let bundle = make_bundle(&shape, scratch.path())?;
    let mut lengths = vec![None];
    lengths.extend(shape.chunk_lengths.iter().copied().map(Some));
    let mut cases = cases(&binary, &bundle, &lengths, scratch.path());
    for _ in 0..rounds {
        for case in &mut cases {
            case.run()?;
        }
    }
    let load_after = load_average();

    println!(
        "footage{}: {}x{} at {FPS} fps, {} frames of an H.264 source (keyframe every 2 s), \
         {rounds} round(s), medians; load average before {load_before}, after {load_after}",
        if full {
            ""
        } else {
            " (quick mode: not a cargo bench run)"
        },
        shape.width,
        shape.height,
        shape.frames,
    );
    report(&shape, &lengths, &cases);
    Ok(())
}
