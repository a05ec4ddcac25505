//! Test support: chunk artifacts of the kind the chunk worker produces
//! (H.264 from libx264 in MPEG-TS, one encoder run per chunk starting with an
//! IDR, identical settings; PCM of exactly the chunk's planned span), made
//! with Debian's `ffmpeg` CLI. The output is judged by `testkit::media`,
//! independently of our own demuxing.
//!
//! The CLI's TS muxer adds its own timestamp origin (1.4 s by default, plus a
//! B-frame shift on the first chunk): combine must re-base every chunk from
//! its planned first frame anyway, so that is part of what is tested.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use chunker::timebase::Fps;
use chunker::{ChunkSpec, Plan, PlanRequest, plan};
use combine::{ChunkArtifact, PcmAudio, PcmFormat};
use testkit::media::{self, PixFmt};

/// Width and height of the test fixture.
pub const WIDTH: u32 = 160;
pub const HEIGHT: u32 = 90;
/// Frames in the fixture: 76 lets a 5-frames-per-chunk plan end with a
/// single-frame chunk (15 × 5 + 1).
pub const FRAMES: u64 = 76;
pub const RATE: u32 = 48_000;

/// How chunks are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The default: CRF 18, preset veryfast, yuv420p.
    Crf,
    /// Lossless: QP 0, yuv444p.
    Lossless,
}

impl Mode {
    /// The pixel format the chunks are encoded in (and decode to).
    pub fn pix_fmt(self) -> PixFmt {
        match self {
            Mode::Crf => PixFmt::Yuv420p,
            Mode::Lossless => PixFmt::Yuv444p,
        }
    }
}

/// Per-chunk encoder variations for refusal tests.
#[derive(Debug, Clone, Default)]
pub struct Variant {
    pub crf: Option<u32>,
    pub size: Option<(u32, u32)>,
    pub pix_fmt: Option<&'static str>,
}

pub fn fps(num: u32, den: u32) -> Fps {
    Fps::new(num, den).expect("valid fps")
}

/// The planned chunks of the fixture at `frames_per_chunk`.
pub fn fixture_plan(fps: Fps, frames_per_chunk: u64) -> Plan {
    plan(&PlanRequest::new(
        FRAMES,
        fps,
        ChunkSpec::FramesPerChunk(frames_per_chunk),
    ))
    .expect("plan")
}

/// Encodes each `(first, count)` range of the fixture's composition frames
/// (the lavfi `testsrc2` pattern, whose frame `f` depends only on `f`) into
/// its own TS with the chunk worker's settings. One ffmpeg process, but one
/// libx264 instance per output: each output is a separate encoder run that
/// starts with an IDR, exactly as separate workers would produce.
pub fn encode_chunks(
    fps: Fps,
    mode: Mode,
    ranges: &[(u64, u64)],
    variant: &Variant,
    outs: &[PathBuf],
) -> Result<()> {
    let (w, h) = variant.size.unwrap_or((WIDTH, HEIGHT));
    let src = format!("testsrc2=size={w}x{h}:rate={}/{}", fps.num(), fps.den());
    let mut graph = format!("[0:v]split={}", ranges.len());
    for i in 0..ranges.len() {
        graph.push_str(&format!("[s{i}]"));
    }
    for (i, (first, count)) in ranges.iter().enumerate() {
        graph.push_str(&format!(
            ";[s{i}]trim=start_frame={first}:end_frame={},setsar=1[o{i}]",
            first + count
        ));
    }
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", &src])
        .args(["-filter_complex", &graph]);
    for (i, out) in outs.iter().enumerate() {
        cmd.args(["-map", &format!("[o{i}]")])
            .args(["-c:v", "libx264", "-preset", "veryfast", "-threads", "1"]);
        match mode {
            Mode::Crf => {
                let crf = variant.crf.unwrap_or(18).to_string();
                cmd.args(["-crf", &crf]);
            }
            Mode::Lossless => {
                cmd.args(["-qp", "0"]);
            }
        }
        cmd.args(["-pix_fmt", variant.pix_fmt.unwrap_or(mode.pix_fmt().name())]);
        cmd.args([
            "-color_primaries",
            "bt709",
            "-color_trc",
            "bt709",
            "-colorspace",
            "bt709",
            "-color_range",
            "tv",
            "-an",
            "-f",
            "mpegts",
        ])
        .arg(out);
    }
    media::run(&mut cmd);
    Ok(())
}

/// Sample `i` (global index) of the fixture's audio: a continuous sine per
/// channel, so every chunk's PCM is a slice of the same signal.
pub fn sine(i: u64, channel: usize) -> f32 {
    let (freq, amp) = if channel == 0 {
        (440.0, 0.5)
    } else {
        (660.0, 0.3)
    };
    let t = i as f64 / f64::from(RATE);
    (amp * (2.0 * std::f64::consts::PI * freq * t).sin()) as f32
}

/// Writes the PCM of samples `[start, end)` in `format`.
pub fn write_pcm(start: u64, end: u64, format: PcmFormat, out: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    for i in start..end {
        for ch in 0..2 {
            let v = sine(i, ch);
            match format {
                PcmFormat::S16le => {
                    bytes.extend_from_slice(&((v * 32_767.0).round() as i16).to_le_bytes())
                }
                PcmFormat::F32le => bytes.extend_from_slice(&v.to_le_bytes()),
            }
        }
    }
    std::fs::write(out, bytes).with_context(|| out.display().to_string())
}

/// Renders every chunk of `plan` into `dir`, returning the artifacts.
pub fn make_chunks(
    dir: &Path,
    plan: &Plan,
    mode: Mode,
    audio: Option<PcmFormat>,
) -> Result<Vec<ChunkArtifact>> {
    std::fs::create_dir_all(dir)?;
    let ranges: Vec<(u64, u64)> = plan
        .chunks()
        .iter()
        .map(|c| (c.frames().first.0, c.frame_count()))
        .collect();
    let outs: Vec<PathBuf> = plan
        .chunks()
        .iter()
        .map(|c| dir.join(format!("chunk-{:02}.ts", c.index().0)))
        .collect();
    encode_chunks(plan.fps(), mode, &ranges, &Variant::default(), &outs)?;
    plan.chunks()
        .iter()
        .zip(outs)
        .map(|(c, ts)| {
            let mut a = ChunkArtifact::new(*c, ts);
            if let Some(format) = audio {
                let pcm = dir.join(format!("chunk-{:02}.pcm", c.index().0));
                write_pcm(c.samples().start.0, c.samples().end.0, format, &pcm)?;
                a = a.with_audio(PcmAudio::new(pcm, format));
            }
            Ok(a)
        })
        .collect()
}

/// Lists a directory's file names (sorted).
pub fn list_dir(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

pub fn temp_dir() -> tempfile::TempDir {
    // Every test starts with a temp dir: keep FFmpeg's info-level chatter
    // (the faststart "second pass" note, the AAC encoder's Qavg) out of the
    // test output.
    ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Error);
    tempfile::Builder::new()
        .prefix("combine-it-")
        .tempdir()
        .expect("temp dir")
}

pub fn out_path(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    out.join(name)
}
