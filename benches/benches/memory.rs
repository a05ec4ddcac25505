//! Peak resident memory of a chunk worker, as a user running one would see
//! it: each case starts a separate worker process (this binary re-started
//! in worker mode: `chunk_worker::reuse_freed_memory`, then `bind` + `run`
//! with `WorkerConfig::standard()`, what the `chunk-worker` binary runs),
//! drives it over gRPC on 127.0.0.1 with `Coordinator::remote`, then reads
//! the worker's `VmHWM` and CPU time from `/proc/<pid>` before stopping it.
//!
//! `cargo bench -p montage-benches --bench memory` renders copies of
//! `examples/promo` (layout cropped, not scaled) with the default video
//! settings (libx264 `veryfast`, CRF 18, 4 encoder threads, 2 render
//! threads):
//! - 1280x720, 300 frames, 1 chunk, and 1280x720, 3000 frames, 1 chunk: the
//!   peak should not grow with the chunk's length (bounded queues);
//! - 1920x1080, 300 frames, 1 chunk: the figure for the 300 MB target;
//! - 1920x1080, 300 frames as 16 chunks on the same worker: memory kept
//!   between chunks must not add up.
//!
//! `MONTAGE_BENCH_CASE=1920x1080x300x16` (`WxHxFRAMESxCHUNKS`) runs only
//! that case.
//!
//! Started any other way (`cargo test --all-targets` runs it once with the
//! dev profile) it runs a quick mode: the same cases at 320x180 with 30
//! frames (3 chunks for the last).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chunk_worker::{AllowedPaths, ServeConfig, WorkerConfig};
use chunker::ChunkSpec;
use coordinator::pool::RemotePool;
use coordinator::schedule::WorkerInfo;
use coordinator::{Coordinator, CoordinatorOptions, RenderRequest, RenderSource};
use montage_benches::{full_run, peak_rss_kib, process_cpu_time, resized_promo, status_kib};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Set (to a scratch directory) in the environment of the worker process
/// this binary starts.
const WORKER_ENV: &str = "MONTAGE_BENCH_MEMORY_WORKER";

/// What the worker prints once it listens (as the `chunk-worker` binary does).
const LISTENING: &str = "listening on ";

/// Worker mode: serve until stdin closes (the parent dropping its end), so
/// the worker never outlives the bench.
fn serve_worker(cache_dir: &str) -> Result<(), BoxError> {
    chunk_worker::reuse_freed_memory();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut config = ServeConfig::new(([127, 0, 0, 1], 0).into(), cache_dir.into());
        // The bundle is rendered by path from the scratch directory that
        // holds the cache directory.
        let scratch = Path::new(cache_dir)
            .parent()
            .ok_or("the cache dir's parent")?;
        config.allowed_paths = AllowedPaths::Under(vec![scratch.to_path_buf()]);
        let bound = chunk_worker::bind(config, WorkerConfig::standard()).await?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{LISTENING}{}", bound.local_addr())?;
            out.flush()?;
        }
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        });
        bound
            .run(async {
                let _ = stdin_closed.await;
            })
            .await?;
        Ok(())
    })
}

/// A worker process, stopped (stdin closed, then killed if need be) on
/// drop.
struct Worker {
    child: Child,
    address: String,
}

impl Worker {
    fn start(cache_dir: &Path) -> Result<Worker, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .env(WORKER_ENV, cache_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("worker stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let address = line
            .trim()
            .strip_prefix(LISTENING)
            .ok_or_else(|| format!("the worker printed {line:?} instead of its address"))?
            .to_owned();
        Ok(Worker {
            child,
            address: format!("http://{address}"),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Case {
    width: u32,
    height: u32,
    frames: u64,
    chunks: u32,
}

struct Measured {
    idle_kib: u64,
    peak_kib: u64,
    cpu: Duration,
    wall: Duration,
}

fn run_case(case: &Case, scratch: &Path) -> Result<Measured, BoxError> {
    let name = format!(
        "promo-{}x{}-{}-{}",
        case.width, case.height, case.frames, case.chunks
    );
    let bundle = resized_promo(scratch, &name, case.width, case.height, case.frames)?;
    let cache = scratch.join(format!("{name}-worker"));
    std::fs::create_dir_all(&cache)?;
    let worker = Worker::start(&cache)?;
    let pid = Some(worker.pid());
    let idle_kib = status_kib(pid, "VmRSS:").ok_or("worker VmRSS")?;
    let cpu0 = process_cpu_time(pid).ok_or("worker CPU time")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let pool = coordinator::PoolSpec::Remote(RemotePool::Addresses(vec![WorkerInfo {
        address: worker.address.clone(),
        slots: 1,
    }]));
    let coordinator = std::sync::Arc::new(
        runtime.block_on(Coordinator::new(pool, CoordinatorOptions::default()))?,
    );
    let request = RenderRequest::new(
        RenderSource::Bundle(bundle),
        "promo",
        ChunkSpec::Count(case.chunks),
        scratch.join(format!("{name}.mp4")),
    );
    let started = Instant::now();
    let summary = runtime.block_on(async { coordinator.render(request).finish().await })?;
    let wall = started.elapsed();
    if summary.frames != case.frames {
        return Err(format!("rendered {} frames, not {}", summary.frames, case.frames).into());
    }
    let peak_kib = peak_rss_kib(pid).ok_or("worker VmHWM")?;
    let cpu = process_cpu_time(pid)
        .ok_or("worker CPU time")?
        .own
        .saturating_sub(cpu0.own);
    Ok(Measured {
        idle_kib,
        peak_kib,
        cpu,
        wall,
    })
}

/// `WxHxFRAMESxCHUNKS`, e.g. `1920x1080x300x16`.
fn parse_case(spec: &str) -> Option<(u32, u32, u64, u32)> {
    let mut parts = spec.split('x');
    let case = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    parts.next().is_none().then_some(case)
}

fn main() -> Result<(), BoxError> {
    // As the binaries do: FFmpeg's AAC encoder prints statistics otherwise.
    combine::quiet_ffmpeg_logs();
    if let Ok(dir) = std::env::var(WORKER_ENV) {
        return serve_worker(&dir);
    }
    let full = full_run();
    let cases = if let Ok(spec) = std::env::var("MONTAGE_BENCH_CASE") {
        vec![parse_case(&spec).ok_or("MONTAGE_BENCH_CASE must look like 1920x1080x300x16")?]
    } else if full {
        vec![
            (1280, 720, 300, 1),
            (1280, 720, 3000, 1),
            (1920, 1080, 300, 1),
            (1920, 1080, 300, 16),
        ]
    } else {
        vec![
            (320, 180, 30, 1),
            (320, 180, 60, 1),
            (320, 180, 30, 1),
            (320, 180, 30, 3),
        ]
    };
    println!(
        "memory{}: peak resident memory (VmHWM) of a separate chunk-worker process \
         (WorkerConfig::standard(), {} render threads; libx264 defaults: encoder threads by frame size, 1080p {}), \
         driven over gRPC by Coordinator::remote",
        if full {
            ""
        } else {
            " (quick mode: not a cargo bench run)"
        },
        WorkerConfig::standard().render_threads,
        chunk_worker::VideoSettings::auto_encoder_threads(spec::VideoCodec::H264, 1920, 1080),
    );
    println!();
    println!(
        "| {:<9} | {:>6} | {:>6} | {:>8} | {:>8} | {:>8} | {:>7} | {:>7} |",
        "size", "frames", "chunks", "idle MiB", "peak MiB", "peak MB", "wall s", "CPU s"
    );
    println!(
        "|-----------|--------|--------|----------|----------|----------|---------|---------|"
    );
    let scratch = tempfile::tempdir()?;
    for (width, height, frames, chunks) in cases {
        let case = Case {
            width,
            height,
            frames,
            chunks,
        };
        let m = run_case(&case, scratch.path())?;
        println!(
            "| {:<9} | {frames:>6} | {chunks:>6} | {:>8.0} | {:>8.0} | {:>8.0} | {:>7.2} | {:>7.2} |",
            format!("{width}x{height}"),
            m.idle_kib as f64 / 1024.0,
            m.peak_kib as f64 / 1024.0,
            m.peak_kib as f64 * 1024.0 / 1e6,
            m.wall.as_secs_f64(),
            m.cpu.as_secs_f64(),
        );
    }
    println!();
    println!("target: worker peak <= 300 MB (= 286 MiB) at 1920x1080");
    Ok(())
}
