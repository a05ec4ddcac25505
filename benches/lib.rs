//! Montage benchmarks. The benchmark targets live in `benches/`; run them
//! with `cargo bench -p montage-benches` (see the README for the full run and
//! the latest numbers).
//!
//! This library holds what the plain (non-criterion) bench binaries share:
//! whether this is a full run or CI's quick mode, and the process's CPU time
//! and peak memory read from `/proc` (Linux only; `None` elsewhere).
#![deny(missing_docs)]

pub mod process;

use std::sync::Arc;
use std::time::Duration;

use composition::{Composition, CompositionError, CompositionMeta, FrameRenderer, Prepared, Props};
use timebase::{FrameIndex, SampleSpan};

/// Whether the binary was started by `cargo bench` (which passes `--bench`).
/// Otherwise it runs under `cargo test --all-targets`, with the dev profile,
/// and should run a quick mode that only checks that the code works.
pub fn full_run() -> bool {
    std::env::args().skip(1).any(|a| a == "--bench")
}

/// The value of the environment variable `name` parsed as `T`, or `default`
/// when it is unset or does not parse.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time used so far, from `/proc/self/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTime {
    /// User plus system time of this process (all its threads).
    pub own: Duration,
    /// User plus system time of its children that were waited for.
    pub children: Duration,
}

impl CpuTime {
    /// Own plus children's time.
    pub fn total(&self) -> Duration {
        self.own + self.children
    }
}

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`, 100
/// on every Linux architecture we run on).
const USER_HZ: u64 = 100;

/// This process's CPU time so far, or `None` where `/proc/self/stat` is not
/// readable.
pub fn cpu_time() -> Option<CpuTime> {
    process_cpu_time(None)
}

/// CPU time so far of this process (`pid` `None`) or of process `pid`, or
/// `None` where its `/proc/<pid>/stat` is not readable.
pub fn process_cpu_time(pid: Option<u32>) -> Option<CpuTime> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces; the
    // fields after it start with field 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(1)
        .take(15)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // Fields 14-17 (utime, stime, cutime, cstime) are at 10..14 here.
    let ticks = |i: usize| fields.get(i).copied().unwrap_or(0);
    let dur = |t: u64| Duration::from_millis(t * 1000 / USER_HZ);
    Some(CpuTime {
        own: dur(ticks(10) + ticks(11)),
        children: dur(ticks(12) + ticks(13)),
    })
}

/// A memory line of `/proc/<pid>/status` (`pid` `None`: this process) in
/// KiB, e.g. `key` `"VmRSS:"` or `"VmHWM:"`.
pub fn status_kib(pid: Option<u32>, key: &str) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Peak resident memory (`VmHWM`) in KiB of this process (`pid` `None`) or
/// of process `pid`, since it started or since [`reset_peak_rss`].
pub fn peak_rss_kib(pid: Option<u32>) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// Resident memory (`VmRSS`) of this process now, in KiB.
pub fn rss_kib() -> Option<u64> {
    status_kib(None, "VmRSS:")
}

/// Resets this process's peak resident memory to its current resident
/// memory (writes `5` to `/proc/self/clear_refs`), so [`peak_rss_kib`]
/// measures one phase. Returns whether it worked.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The reference promo bundle shipped in `examples/promo`.
pub fn reference_bundle() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/promo")
}

/// A copy of the reference promo bundle in `dir/name` with every composition
/// resized to `width`x`height` and cut to `frames` frames (the layout is
/// cropped, not scaled).
///
/// # Errors
/// I/O errors and a `scene.json` without a `compositions` array.
pub fn resized_promo(
    dir: &std::path::Path,
    name: &str,
    width: u32,
    height: u32,
    frames: u64,
) -> Result<std::path::PathBuf, Box<dyn std::error::Error + Send + Sync>> {
    let reference = reference_bundle();
    let copy = dir.join(name);
    std::fs::create_dir_all(&copy)?;
    for entry in std::fs::read_dir(&reference)
        .map_err(|e| format!("reference bundle {}: {e}", reference.display()))?
    {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), copy.join(entry.file_name()))?;
        }
    }
    let scene_path = copy.join("scene.json");
    let mut scene: serde_json::Value = serde_json::from_slice(&std::fs::read(&scene_path)?)?;
    let compositions = scene
        .get_mut("compositions")
        .and_then(|c| c.as_array_mut())
        .ok_or("scene.json: `compositions` is not an array")?;
    for c in compositions {
        c["width"] = width.into();
        c["height"] = height.into();
        c["duration"] = frames.into();
    }
    std::fs::write(&scene_path, serde_json::to_vec_pretty(&scene)?)?;
    Ok(copy)
}

/// The bundle a bench renders: the reference promo for a full run, or a
/// copy of it resized to 320x180 and cut to 30 frames for the quick mode.
///
/// # Errors
/// When the reference bundle cannot be found or copied.
pub fn promo_bundle(
    full: bool,
    scratch: &std::path::Path,
) -> Result<std::path::PathBuf, Box<dyn std::error::Error + Send + Sync>> {
    if full {
        let reference = reference_bundle();
        return Ok(std::fs::canonicalize(&reference)
            .map_err(|e| format!("reference bundle {}: {e}", reference.display()))?);
    }
    resized_promo(scratch, "promo-quick", 320, 180, 30)
}

/// Writes the frames of composition `id` of `bundle` (default props),
/// converted by the worker's own converter to `settings`' pixel format, to
/// a raw file (no compression: an encoder reading it pays no decode).
///
/// # Errors
/// When the bundle does not open or render, or the file cannot be written.
pub fn write_raw_frames(
    bundle: &std::path::Path,
    id: &str,
    settings: &chunk_worker::VideoSettings,
    path: &std::path::Path,
) -> Result<CompositionMeta, Box<dyn std::error::Error + Send + Sync>> {
    use std::io::Write as _;
    let config = chunk_worker::WorkerConfig::standard();
    let composition = config
        .source(&chunk_worker::SourceSpec::BundlePath(bundle.to_path_buf()))?
        .composition(id)?;
    let meta = composition.describe(&Props::new())?;
    let prepared = composition.prepare(&Props::new())?;
    let mut renderer = prepared.frame_renderer()?;
    let mut conv =
        chunk_worker::FrameConverter::new(meta.width, meta.height, settings.pixel_format)?
            .with_palette(settings.gif_palette.as_ref())?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut planes = Vec::new();
    for f in 0..meta.duration_frames {
        // As the worker's pipeline: the converter's buffer is reused.
        renderer.render_frame_reusing(FrameIndex(f), conv.rgba_mut())?;
        planes.clear();
        conv.convert()?.write_packed(&mut planes);
        file.write_all(&planes)?;
    }
    file.flush()?;
    Ok(meta)
}

/// Debian's `ffmpeg` encoding a raw file of `meta`'s frames (as
/// [`write_raw_frames`] writes them) with `settings`, exactly as a chunk
/// worker's encoder is set up ([`chunk_worker::ffmpeg_cli_args`]), into
/// the codec's chunk container at `out`.
pub fn ffmpeg_encode_command(
    settings: &chunk_worker::VideoSettings,
    raw: &std::path::Path,
    meta: &CompositionMeta,
    out: &std::path::Path,
) -> Vec<String> {
    let mut c: Vec<String> = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        settings.pixel_format.as_str(),
        "-s",
        &format!("{}x{}", meta.width, meta.height),
        "-r",
        &meta.fps.to_string(),
        "-i",
        &raw.display().to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    c.extend(chunk_worker::ffmpeg_cli_args(
        settings,
        meta.width,
        meta.height,
    ));
    c.extend(
        [
            "-an",
            "-f",
            settings.codec.chunk_container().muxer(),
            &out.display().to_string(),
        ]
        .map(str::to_owned),
    );
    c
}

/// A composition whose frames were rendered beforehand and are only copied
/// out, so that what a pipeline around it costs is its conversion and
/// encoding alone. `read(frame, rgba)` fills one frame or says why not;
/// the audio is silent.
#[derive(Clone)]
pub struct CopiedFrames {
    meta: CompositionMeta,
    read: Arc<ReadFrame>,
}

/// Fills frame `f` into an RGBA buffer.
pub type ReadFrame = dyn Fn(u64, &mut [u8]) -> Result<(), String> + Send + Sync;

impl CopiedFrames {
    /// Frames of `meta`'s size and rate, filled by `read`.
    pub fn new(meta: CompositionMeta, read: Arc<ReadFrame>) -> Self {
        CopiedFrames { meta, read }
    }
}

impl Composition for CopiedFrames {
    fn id(&self) -> &str {
        &self.meta.id
    }

    fn describe(&self, _props: &Props) -> Result<CompositionMeta, CompositionError> {
        Ok(self.meta.clone())
    }

    fn prepare(&self, _props: &Props) -> Result<Arc<dyn Prepared>, CompositionError> {
        Ok(Arc::new(self.clone()))
    }
}

impl Prepared for CopiedFrames {
    fn meta(&self) -> &CompositionMeta {
        &self.meta
    }

    fn frame_renderer(&self) -> Result<Box<dyn FrameRenderer>, CompositionError> {
        Ok(Box::new(self.clone()))
    }

    fn render_audio(&self, span: SampleSpan, out: &mut [f32]) -> Result<(), CompositionError> {
        composition::check_audio_buffer(span, out)?;
        out.fill(0.0);
        Ok(())
    }
}

impl FrameRenderer for CopiedFrames {
    fn render_frame(&mut self, frame: FrameIndex, rgba: &mut [u8]) -> Result<(), CompositionError> {
        composition::check_frame_buffer(&self.meta, rgba)?;
        (self.read)(frame.0, rgba).map_err(|message| CompositionError::Render {
            frame: frame.0,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_readings_are_plausible() {
        let before = cpu_time().expect("Linux has /proc/self/stat");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = cpu_time().expect("Linux has /proc/self/stat");
        assert!(after.own >= before.own);
        assert!(reset_peak_rss());
        let peak = peak_rss_kib(None).expect("VmHWM");
        assert!(peak > 0);
        assert!(peak_rss_kib(Some(std::process::id())).is_some());
        let mine = process_cpu_time(Some(std::process::id())).expect("/proc/<pid>/stat");
        assert!(mine.own >= after.own);
        assert!(rss_kib().expect("VmRSS") > 0);
    }
}
