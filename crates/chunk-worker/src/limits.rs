//! What one chunk may cost a worker, checked before anything renders: the
//! planner's bounds again (a foreign client need not have planned), and the
//! memory the chunk needs against the worker's `--max-memory`.
//!
//! A chunk too big for this worker is refused with `INVALID_ARGUMENT`
//! naming the numbers, not `RESOURCE_EXHAUSTED`: the coordinator would only
//! send it to the next worker of the same fleet, and the fix is the input
//! (a smaller scene, more chunks) or the fleet's flag. A chunk that fits but
//! not beside the chunks in flight gets `RESOURCE_EXHAUSTED` (try another
//! worker), like a busy slot.

use std::sync::Arc;

use composition::{CompositionMeta, RenderBudget};
use spec::{ChunkRequest, VideoSettings};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::yuv_pool::YUV_FRAMES_PER_THREAD;
use crate::{WorkerConfig, WorkerError};

/// Frame-sized buffers libx264 holds, as copies of one input frame: its
/// lookahead (up to 60 frames at the slower presets), reference frames (up
/// to 16) and B-frames (up to 16), with their half-resolution copies. An
/// upper estimate: at 1080p and the `medium` preset x264 takes about 250 MB,
/// 80 copies of the 3.1 MB 4:2:0 frame.
pub const ENCODER_FRAME_COPIES: u64 = 96;

/// The share of the machine's memory (or of its cgroup's limit) a worker
/// takes for chunks unless told otherwise, in percent.
pub const DEFAULT_MEMORY_PERCENT: u64 = 75;

/// `--max-memory` when the machine's memory cannot be read: 4 GiB.
pub const FALLBACK_MAX_MEMORY: u64 = 4 << 30;

/// The smallest `--max-memory` accepted: 64 MiB.
pub const MIN_MAX_MEMORY: u64 = 64 << 20;

const MIB: u64 = 1 << 20;

/// The default `--max-memory`: [`DEFAULT_MEMORY_PERCENT`] of the memory
/// this process may use (the machine's, or its cgroup's limit if lower, as
/// in a container), else [`FALLBACK_MAX_MEMORY`].
pub fn default_max_memory() -> u64 {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let kib = l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?;
                kib.trim().parse::<u64>().ok()?.checked_mul(1024)
            })
        });
    // cgroup v2: a number of bytes, or `max` for no limit.
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok());
    machine
        .into_iter()
        .chain(cgroup)
        .min()
        .map_or(FALLBACK_MAX_MEMORY, |m| m / 100 * DEFAULT_MEMORY_PERCENT)
}

/// The memory one chunk of `meta` needs with `threads` render threads: the
/// composition's own [`RenderBudget`] (shared data plus one renderer per
/// thread), each thread's converted frames (the
/// [`YUV_FRAMES_PER_THREAD`] it cycles through the encoder; one more,
/// briefly, if the encoder still held one handed back), and libx264's
/// frames ([`ENCODER_FRAME_COPIES`]).
pub fn chunk_memory(
    budget: &RenderBudget,
    meta: &CompositionMeta,
    video: &VideoSettings,
    threads: usize,
) -> u64 {
    let threads = threads.max(1) as u64;
    let yuv = video.pixel_format.frame_bytes(meta.width, meta.height);
    let queued = threads.saturating_mul(YUV_FRAMES_PER_THREAD as u64);
    budget
        .memory_for_threads(threads)
        .saturating_add(yuv.saturating_mul(queued.saturating_add(ENCODER_FRAME_COPIES)))
}

/// Checks a chunk before it renders: its frame rate after
/// `every_nth_frame`, its audio samples and bytes (the planner's bounds),
/// and the memory it needs against `max_memory`. Returns that memory.
///
/// # Errors
/// [`WorkerError::TooLarge`] naming the numbers; the composition's and the
/// source's errors; [`WorkerError::Range`] for an inconsistent span.
pub(crate) fn check_chunk(
    config: &WorkerConfig,
    request: &ChunkRequest,
    max_memory: u64,
) -> Result<u64, WorkerError> {
    let span = request.span;
    let chunk_no = span.index.0;
    let too_large = |message: String| WorkerError::TooLarge {
        chunk: chunk_no,
        message,
    };
    let composition = config
        .source(&request.source)?
        .composition(&request.composition_id)?;
    let meta = composition.describe(&request.props)?;
    let chunk = span
        .to_chunk(meta.fps, composition::SAMPLE_RATE)
        .map_err(|e| WorkerError::Range {
            chunk: chunk_no,
            message: e.to_string(),
        })?;
    let output_fps = meta
        .fps
        .every_nth(span.every_nth_frame)
        .map_err(|e| too_large(format!("every_nth_frame {}: {e}", span.every_nth_frame)))?;
    chunker::check_output_fps(meta.fps, span.every_nth_frame, output_fps)
        .map_err(|e| too_large(e.to_string()))?;
    let cost = spec::chunk_cost(&request.video, meta.width, meta.height, request.pcm_format);
    // The planner's message names the chunk itself.
    chunk
        .check_size(composition::SAMPLE_RATE, Some(cost))
        .map_err(|e| WorkerError::Field(spec::FieldError::new("frames", e.to_string())))?;
    let budget = composition.budget(&request.props)?;
    let needed = chunk_memory(&budget, &meta, &request.video, config.render_threads);
    if needed > max_memory {
        return Err(too_large(format!(
            "rendering `{}` ({}x{}) needs about {} MiB ({} MiB shared, {} MiB per render thread × {}, the encoder's frames): this worker allows {} MiB (--max-memory)",
            spec::quote(&meta.id),
            meta.width,
            meta.height,
            needed.div_ceil(MIB),
            budget.shared_bytes.div_ceil(MIB),
            budget.renderer_bytes.div_ceil(MIB),
            config.render_threads.max(1),
            max_memory / MIB,
        )));
    }
    Ok(needed)
}

/// The worker's memory for chunks in flight, in MiB permits: a chunk holds
/// what it needs while it renders.
#[derive(Debug, Clone)]
pub(crate) struct MemoryPool {
    free: Arc<Semaphore>,
}

impl MemoryPool {
    /// A pool of `max_memory` bytes.
    pub(crate) fn new(max_memory: u64) -> Self {
        let mib = usize::try_from(max_memory / MIB)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        MemoryPool {
            free: Arc::new(Semaphore::new(mib)),
        }
    }

    /// Takes `bytes` for chunk `chunk` until the permit is dropped.
    ///
    /// # Errors
    /// [`WorkerError::MemoryBusy`] when chunks in flight hold too much of it.
    pub(crate) fn reserve(
        &self,
        chunk: u32,
        bytes: u64,
    ) -> Result<OwnedSemaphorePermit, WorkerError> {
        let needed_mib = bytes.div_ceil(MIB);
        let busy = || WorkerError::MemoryBusy {
            chunk,
            needed_mib,
            free_mib: self.free.available_permits() as u64,
        };
        let n = u32::try_from(needed_mib).map_err(|_| busy())?;
        Arc::clone(&self.free)
            .try_acquire_many_owned(n)
            .map_err(|_| busy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timebase::Fps;

    fn meta(width: u32, height: u32) -> CompositionMeta {
        CompositionMeta {
            id: "m".into(),
            width,
            height,
            fps: Fps::new(30, 1).expect("fps"),
            duration_frames: 10,
            has_audio: false,
            version: "1".into(),
            props: composition::Props::new(),
        }
    }

    #[test]
    fn memory_counts_renderers_queues_and_the_encoder() {
        let m = meta(1920, 1080);
        let budget = RenderBudget::frame_only(&m);
        let yuv = 3_110_400;
        let rgba = 1920 * 1080 * 4;
        assert_eq!(
            chunk_memory(&budget, &m, &VideoSettings::default(), 2),
            2 * rgba + yuv * (2 * 2 + ENCODER_FRAME_COPIES)
        );
    }

    #[test]
    fn the_pool_lends_memory_until_permits_drop() {
        let pool = MemoryPool::new(100 * MIB);
        let a = pool.reserve(0, 60 * MIB).expect("fits");
        let err = pool.reserve(1, 60 * MIB).expect_err("taken");
        assert_eq!(
            err.to_string(),
            "chunk 1 needs about 60 MiB and only 40 MiB of this worker's --max-memory is free: try another worker"
        );
        drop(a);
        assert!(pool.reserve(1, 60 * MIB).is_ok());
    }

    #[test]
    fn the_default_is_a_share_of_the_machine() {
        let m = default_max_memory();
        assert!(m >= MIN_MAX_MEMORY, "{m}");
    }
}
