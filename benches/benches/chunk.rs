//! Frames per second of one chunk through the worker pipeline
//! (`chunk_worker::render_chunk`: render → RGBA→YUV → libx264 → MPEG-TS, plus
//! PCM), and the time spent per stage.
//!
//! `cargo bench -p montage-benches --bench chunk` renders a 300-frame chunk
//! of the built-in test pattern at 1920x1080, 30 fps, with the default video
//! settings. Set `MONTAGE_BENCH_FRAMES`, `MONTAGE_BENCH_SIZE` (`WxH`) or
//! `MONTAGE_BENCH_RENDER_THREADS` to change it; the peak resident memory is
//! printed too (run 3000 frames at 1280x720 to check that memory stays flat).
//!
//! Started any other way (`cargo test --all-targets` runs it once with the
//! dev profile) it runs a quick mode: 30 frames at 320x180, the same code
//! and the same printout, so CI keeps it working.

use std::time::Duration;

use chunk_worker::{
    ArtifactTarget, ChunkRequest, ChunkSpan, PcmFormat, SourceSpec, VideoSettings, WorkerConfig,
    render_chunk,
};
use chunker::ChunkIndex;
use composition::Registry;
use montage_benches::{env_or, full_run, peak_rss_kib};
use timebase::FrameRange;
use tokio_util::sync::CancellationToken;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let full = full_run();
    let (default_frames, default_size) = if full {
        (300, "1920x1080")
    } else {
        (30, "320x180")
    };
    let frames: u64 = env_or("MONTAGE_BENCH_FRAMES", default_frames);
    let size = std::env::var("MONTAGE_BENCH_SIZE").unwrap_or_else(|_| default_size.into());
    let (w, h) = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .ok_or("MONTAGE_BENCH_SIZE must look like 1920x1080")?;
    let threads: usize = env_or(
        "MONTAGE_BENCH_RENDER_THREADS",
        std::thread::available_parallelism().map_or(2, |n| n.get()),
    );
    let dir = tempfile::tempdir()?;
    let config = WorkerConfig::new(Registry::with_builtins()).with_render_threads(threads);
    let props = serde_json::json!({"width": w, "height": h, "fps": "30", "duration": frames});
    let request = ChunkRequest {
        job_id: "bench".into(),
        source: SourceSpec::Registered,
        composition_id: "test-pattern".into(),
        props: props.as_object().cloned().ok_or("props")?,
        span: ChunkSpan {
            index: ChunkIndex(0),
            frames: FrameRange::new(0, frames - 1).ok_or("frames")?,
            composition_start: 0,
            every_nth_frame: 1,
        },
        video: VideoSettings::default(),
        pcm_format: PcmFormat::F32le,
        target: ArtifactTarget::Directory(dir.path().to_path_buf()),
        frames_to: Default::default(),
    };
    let r = render_chunk(&config, &request, &|_| {}, &CancellationToken::new())?;
    let t = r.timings;
    let busy = t.render + t.convert + t.encode;
    let share = |d: Duration| 100.0 * d.as_secs_f64() / busy.as_secs_f64();
    println!(
        "chunk{}: {frames} frames of test-pattern at {w}x{h}, {threads} render threads, libx264 {} crf/preset {:?}/{}, {} encoder threads",
        if full {
            ""
        } else {
            " (quick mode: not a cargo bench run)"
        },
        request.video.profile.as_str(),
        request.video.quality,
        request.video.preset,
        request.video.encoder_threads_for(w, h)
    );
    println!(
        "wall {:.0} ms = {:.1} frames/s; video {} bytes, PCM {} bytes",
        ms(t.total),
        frames as f64 / t.total.as_secs_f64(),
        r.video.as_ref().map_or(0, |v| v.size),
        r.audio.size
    );
    println!(
        "stage time (summed over threads): render {:.0} ms ({:.0}%), convert {:.0} ms ({:.0}%), encode {:.0} ms ({:.0}%), audio {:.0} ms",
        ms(t.render),
        share(t.render),
        ms(t.convert),
        share(t.convert),
        ms(t.encode),
        share(t.encode),
        ms(t.audio)
    );
    println!(
        "per frame: render {:.2} ms, convert {:.2} ms, encode {:.2} ms",
        ms(t.render) / frames as f64,
        ms(t.convert) / frames as f64,
        ms(t.encode) / frames as f64
    );
    if let Some(kib) = peak_rss_kib(None) {
        println!("peak resident memory: {:.1} MiB", kib as f64 / 1024.0);
    }
    Ok(())
}
