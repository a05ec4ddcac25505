//! Combines a directory of chunk artifacts and prints how long it took.
//!
//! ```text
//! cargo run --release -p combine --example combine_dir -- DIR FPS FRAMES FRAMES_PER_CHUNK OUT.mp4 [--verify]
//! ```
//!
//! `DIR` holds `chunk-00.ts`, `chunk-01.ts`, … (H.264 in MPEG-TS, one per
//! planned chunk) and, optionally, `chunk-00.pcm`, … (s16le stereo 48 kHz,
//! exactly each chunk's planned sample span). The plan is rebuilt with
//! `chunker::plan(FRAMES, FPS, FramesPerChunk(FRAMES_PER_CHUNK))`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use chunker::timebase::Fps;
use chunker::{ChunkSpec, PlanRequest, plan};
use combine::{ChunkArtifact, CombineOptions, PcmAudio, PcmFormat, combine_chunks};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (args, verify) = match args.split_last() {
        Some((last, rest)) if last == "--verify" => (rest, true),
        _ => (args.as_slice(), false),
    };
    let [dir, fps, frames, per_chunk, out] = args else {
        anyhow::bail!("usage: combine_dir DIR FPS FRAMES FRAMES_PER_CHUNK OUT.mp4 [--verify]");
    };
    let dir = PathBuf::from(dir);
    let fps: Fps = fps.parse()?;
    let plan = plan(&PlanRequest::new(
        frames.parse().context("FRAMES")?,
        fps,
        ChunkSpec::FramesPerChunk(per_chunk.parse().context("FRAMES_PER_CHUNK")?),
    ))?;
    let chunks: Vec<ChunkArtifact> = plan
        .chunks()
        .iter()
        .map(|c| {
            let name = format!("chunk-{:02}", c.index().0);
            let a = ChunkArtifact::new(*c, dir.join(format!("{name}.ts")));
            let pcm = dir.join(format!("{name}.pcm"));
            if pcm.exists() {
                a.with_audio(PcmAudio::new(pcm, PcmFormat::S16le))
            } else {
                a
            }
        })
        .collect();
    let options = CombineOptions::new(fps)
        .with_expected_frames(plan.output_frames())
        .with_verify_decode(verify);
    let started = Instant::now();
    let report = combine_chunks(&chunks, &options, out)?;
    let took = started.elapsed();
    println!(
        "combined {} chunks, {} frames at {} fps, {:?} audio samples, {} bytes in {:.3} s",
        report.chunks,
        report.frames,
        report.fps,
        report.audio_samples,
        report.bytes,
        took.as_secs_f64()
    );
    Ok(())
}
