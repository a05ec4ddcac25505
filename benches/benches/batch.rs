//! Batch throughput: many variants of a short promo, one after the other,
//! on the coordinator's embedded pool (one worker per core), as a user
//! rendering personalised videos would. Prints variants per hour.
//!
//! `cargo bench -p montage-benches --bench batch` renders
//! `MONTAGE_BENCH_VARIANTS` (default 100) variants of a copy of
//! `examples/promo` resized to 1280x720 and cut to 180 frames (6 s at
//! 30 fps; the layers keep their 1080p coordinates, so the layout is cropped,
//! not scaled), each with its own `name` and `count` props, split into one
//! chunk per worker. Started any other way (`cargo test --all-targets`) it
//! runs a quick mode: 2 variants at 320x180, 30 frames.
//!
//! The process first calls `chunk_worker::reuse_freed_memory()`, as the
//! binaries do; any `glibc.malloc` tunable in `GLIBC_TUNABLES` keeps glibc's
//! defaults instead, to compare.
//!
//! Then the cost of a cache hit beside a miss, on a coordinator with a local
//! render cache (see `cache_hits`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chunk_worker::WorkerConfig;
use chunker::ChunkSpec;
use coordinator::{Coordinator, CoordinatorOptions, RenderRequest, RenderSource};
use montage_benches::{cpu_time, env_or, full_run, peak_rss_kib, reset_peak_rss, resized_promo};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    // What the worker and coordinator binaries do first (see its docs).
    let malloc_tuned = chunk_worker::reuse_freed_memory();
    let full = full_run();
    let (variants, width, height, frames) = if full {
        (env_or("MONTAGE_BENCH_VARIANTS", 100u64), 1280, 720, 180)
    } else {
        (env_or("MONTAGE_BENCH_VARIANTS", 2u64), 320, 180, 30)
    };
    let scratch = tempfile::tempdir()?;
    let bundle = resized_promo(scratch.path(), "promo-batch", width, height, frames)?;
    let workers = coordinator::default_local_workers();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let coordinator = Arc::new(runtime.block_on(Coordinator::embedded(
        workers,
        WorkerConfig::standard(),
        CoordinatorOptions::default(),
    ))?);
    println!(
        "batch{}: {variants} variants of `promo` at {width}x{height}, {frames} frames each, \
         {workers} embedded workers, one chunk per worker; glibc malloc {}",
        if full {
            ""
        } else {
            " (quick mode: not a cargo bench run)"
        },
        if malloc_tuned {
            "keeps freed memory (chunk_worker::reuse_freed_memory)"
        } else {
            "defaults"
        }
    );
    reset_peak_rss();
    let c0 = cpu_time();
    let started = Instant::now();
    let mut per_variant = Vec::new();
    let mut combine = Duration::ZERO;
    for v in 0..variants {
        let out = scratch.path().join(format!("variant-{v}.mp4"));
        let mut request = RenderRequest::new(
            RenderSource::Bundle(bundle.clone()),
            "promo",
            ChunkSpec::Count(u32::try_from(workers).unwrap_or(1)),
            &out,
        );
        let mut props = composition::Props::new();
        props.insert("name".into(), format!("Viewer {v}").into());
        props.insert("count".into(), (v % 50 + 1).into());
        request.props = props;
        let t = Instant::now();
        let summary = runtime.block_on(async { coordinator.render(request).finish().await })?;
        per_variant.push(t.elapsed());
        combine += Duration::from_millis(summary.combine_ms);
        std::fs::remove_file(&out)?;
    }
    let wall = started.elapsed();
    let cpu = match (c0, cpu_time()) {
        (Some(a), Some(b)) => b.total().saturating_sub(a.total()),
        _ => Duration::ZERO,
    };
    per_variant.sort();
    let median = per_variant
        .get(per_variant.len() / 2)
        .copied()
        .unwrap_or_default();
    println!(
        "wall {:.1} s, CPU {:.1} s, peak {} MiB; median {:.2} s per variant; combine {:.1} % of wall",
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        peak_rss_kib(None).map_or_else(|| "?".into(), |k| format!("{:.0}", k as f64 / 1024.0)),
        median.as_secs_f64(),
        100.0 * combine.as_secs_f64() / wall.as_secs_f64().max(1e-9)
    );
    println!(
        "{:.0} variants per hour ({:.1} frames/s)",
        variants as f64 * 3600.0 / wall.as_secs_f64().max(1e-9),
        (variants * frames) as f64 / wall.as_secs_f64().max(1e-9)
    );
    if let Ok(c) = Arc::try_unwrap(coordinator) {
        runtime.block_on(c.shutdown());
    }
    cache_hits(&runtime, &bundle, scratch.path(), workers)?;
    Ok(())
}

/// The cost of a cache hit, side by side with a miss, on a coordinator with
/// a local render cache: a new variant (rendered), the same variant again
/// (the whole output from the cache), and the same chunks with another AAC
/// bitrate (every chunk from the cache, combined again). Medians of a few
/// variants.
fn cache_hits(
    runtime: &tokio::runtime::Runtime,
    bundle: &std::path::Path,
    scratch: &std::path::Path,
    workers: usize,
) -> Result<(), BoxError> {
    let options = CoordinatorOptions {
        cache: Some(scratch.join("cache").display().to_string()),
        ..CoordinatorOptions::default()
    };
    let coordinator = Arc::new(runtime.block_on(Coordinator::embedded(
        workers,
        WorkerConfig::standard(),
        options,
    ))?);
    let (mut miss, mut output_hit, mut chunk_hit) = (Vec::new(), Vec::new(), Vec::new());
    for v in 0..3u64 {
        let render = |bitrate: u32| -> Result<(Duration, u64, bool), BoxError> {
            let out = scratch.join(format!("cached-{v}.mp4"));
            let mut request = RenderRequest::new(
                RenderSource::Bundle(bundle.to_path_buf()),
                "promo",
                ChunkSpec::Count(u32::try_from(workers).unwrap_or(1)),
                &out,
            );
            request
                .props
                .insert("name".into(), format!("Cached {v}").into());
            request.audio_bitrate = bitrate;
            let t = Instant::now();
            let s = runtime.block_on(async { coordinator.render(request).finish().await })?;
            let took = t.elapsed();
            std::fs::remove_file(&out)?;
            Ok((took, s.cached_chunks as u64, s.output_cached))
        };
        let (t, cached, _) = render(192_000)?;
        assert_eq!(cached, 0, "a new variant must render");
        miss.push(t);
        let (t, _, whole) = render(192_000)?;
        assert!(whole, "the same variant must come from the cache");
        output_hit.push(t);
        let (t, cached, whole) = render(128_000)?;
        assert!(!whole && cached > 0, "the chunks must come from the cache");
        chunk_hit.push(t);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v.get(v.len() / 2)
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0
    };
    let (m, o, c) = (
        median(&mut miss),
        median(&mut output_hit),
        median(&mut chunk_hit),
    );
    println!(
        "cache: new variant {m:.0} ms; same variant (output from cache) {o:.0} ms = {:.1} % of a render; \
         same chunks, new AAC bitrate (combine only) {c:.0} ms = {:.1} %",
        100.0 * o / m.max(1e-9),
        100.0 * c / m.max(1e-9)
    );
    if let Ok(c) = Arc::try_unwrap(coordinator) {
        runtime.block_on(c.shutdown());
    }
    Ok(())
}
