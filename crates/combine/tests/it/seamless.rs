//! An N-chunk combine decodes to exactly what a 1-chunk combine decodes to.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use chunker::Plan;
use chunker::timebase::Fps;
use combine::{ChunkArtifact, CombineOptions, PcmFormat, combine_chunks};
use testkit::media::{self, Rational};

use crate::support::*;

/// Frames per chunk giving 1, 2, 3, 7 and 16 chunks of the 76-frame fixture,
/// all with a shorter last chunk but the first (16 ends with one frame).
const SPLITS: [(u64, usize); 5] = [(76, 1), (40, 2), (30, 3), (11, 7), (5, 16)];

struct Combined {
    plan: Plan,
    chunks: Vec<ChunkArtifact>,
    output: PathBuf,
}

fn render_and_combine(
    dir: &Path,
    fps: Fps,
    mode: Mode,
    pcm: PcmFormat,
    per_chunk: u64,
) -> Result<Combined> {
    let plan = fixture_plan(fps, per_chunk);
    let chunks = make_chunks(&dir.join(format!("c{per_chunk}")), &plan, mode, Some(pcm))?;
    let output = out_path(dir, &format!("out-{per_chunk}.mp4"));
    let options = CombineOptions::new(fps).with_expected_frames(plan.output_frames());
    let report = combine_chunks(&chunks, &options, &output)?;
    ensure!(report.frames == FRAMES, "report frames {}", report.frames);
    ensure!(report.audio_samples == Some(plan.samples().len()));
    Ok(Combined {
        plan,
        chunks,
        output,
    })
}

/// Timestamps, keyframes, frame count and colour tags of one output.
#[track_caller]
fn check_video_timing(c: &Combined, fps: Fps, mode: Mode) -> Result<()> {
    let n = c.chunks.len();
    let media::Packets { time_base, packets } = media::video_packets(&c.output);
    let (tb_num, tb_den) = (time_base.num, time_base.den);
    ensure!(
        packets.len() as u64 == FRAMES,
        "{n} chunks: {} packets, expected {FRAMES}",
        packets.len()
    );
    for w in packets.windows(2) {
        ensure!(w[0].dts < w[1].dts, "{n} chunks: DTS not increasing: {w:?}");
    }
    // Constant frame durations: every packet lasts one frame.
    for (i, p) in packets.iter().enumerate() {
        let duration = p
            .duration
            .with_context(|| format!("{n} chunks: packet {i}: {p:?}"))?;
        let lhs = i128::from(duration) * i128::from(tb_num) * i128::from(fps.num());
        let rhs = i128::from(fps.den()) * i128::from(tb_den);
        ensure!(
            lhs == rhs,
            "{n} chunks: packet {i} lasts {duration} ticks: {p:?}"
        );
    }
    let mut by_pts = packets.clone();
    by_pts.sort_by_key(|p| p.pts);
    let starts: Vec<u64> = c
        .plan
        .chunks()
        .iter()
        .map(|c| c.first_output_frame())
        .collect();
    for (k, p) in by_pts.iter().enumerate() {
        // PTS · tb == k · den / num, in integers.
        let lhs = i128::from(p.pts) * i128::from(tb_num) * i128::from(fps.num());
        let rhs = k as i128 * i128::from(fps.den()) * i128::from(tb_den);
        ensure!(
            lhs == rhs,
            "{n} chunks: frame {k} has PTS {} × {tb_num}/{tb_den}, expected {k}·{}/{} s",
            p.pts,
            fps.den(),
            fps.num()
        );
        ensure!(
            p.key == starts.contains(&(k as u64)),
            "{n} chunks: frame {k} keyframe flag {} but chunk starts are {starts:?}",
            p.key
        );
    }
    let probe = media::probe(&c.output);
    let v = probe.video();
    let bt709 = Some("bt709".to_owned());
    for (what, ok) in [
        ("codec", v.codec == "h264"),
        ("width", v.width == Some(WIDTH)),
        ("height", v.height == Some(HEIGHT)),
        (
            "pixel format",
            v.pix_fmt.as_deref() == Some(mode.pix_fmt().name()),
        ),
        ("colour primaries", v.color_primaries == bt709),
        ("colour transfer", v.color_transfer == bt709),
        ("colour matrix", v.color_space == bt709),
        ("frame count", v.frames == Some(FRAMES)),
        (
            "average frame rate",
            v.avg_frame_rate == Some(Rational::new(i64::from(fps.num()), i64::from(fps.den()))),
        ),
    ] {
        ensure!(ok, "{n} chunks: {what} in {v:?}");
    }
    // +faststart: the index comes before the media data.
    let boxes = top_level_boxes(&c.output)?;
    let moov = boxes.iter().position(|t| t == "moov");
    let mdat = boxes.iter().position(|t| t == "mdat");
    ensure!(
        moov.is_some() && mdat.is_some() && moov < mdat,
        "{n} chunks: boxes {boxes:?}"
    );
    Ok(())
}

/// Top-level MP4 box types in file order (ISO/IEC 14496-12, 4.2: 32-bit
/// size, type, and a 64-bit size when the 32-bit one is 1).
fn top_level_boxes(file: &Path) -> Result<Vec<String>> {
    let b = std::fs::read(file)?;
    let mut at = 0usize;
    let mut types = Vec::new();
    while at + 8 <= b.len() {
        let size32 = u32::from_be_bytes(b[at..at + 4].try_into()?) as usize;
        let kind = String::from_utf8_lossy(&b[at + 4..at + 8]).into_owned();
        let size = match size32 {
            0 => b.len() - at,
            1 => u64::from_be_bytes(b[at + 8..at + 16].try_into()?) as usize,
            n => n,
        };
        ensure!(size >= 8, "box {kind} at {at} has size {size}");
        types.push(kind);
        at += size;
    }
    ensure!(
        at == b.len(),
        "boxes end at {at}, file is {} bytes",
        b.len()
    );
    Ok(types)
}

/// Audio: identical to the reference, exact length, starts at 0, no seam.
#[track_caller]
fn check_audio(c: &Combined, reference: &media::Audio) -> Result<()> {
    let n = c.chunks.len();
    let total = c.plan.samples().len();
    let probe = media::probe(&c.output);
    let a = probe.audio();
    ensure!(a.codec == "aac", "{a:?}");
    ensure!(a.sample_rate == Some(48_000), "{a:?}");
    ensure!(a.channels == Some(2), "{a:?}");
    ensure!(
        a.start_pts == Some(0),
        "{n} chunks: audio does not start at 0: {a:?}"
    );
    ensure!(
        a.duration_ts == Some(total as i64),
        "{n} chunks: audio duration should be S(N) = {total} samples: {a:?}"
    );
    let audio = media::decode_audio_trimmed(&c.output, total);
    ensure!(
        audio.len() as u64 == total,
        "{n} chunks: decoded {} samples, expected {total}",
        audio.len()
    );
    media::assert_audio_eq(
        &audio,
        reference,
        &format!("{n} chunks against the 1-chunk output"),
    );
    let decoded = &audio.samples;
    // No lag: the decoded audio follows the sine sample for sample (AAC is
    // lossy, so within a tolerance; 1024 samples late would be way off).
    let err: f64 = (0..total as usize)
        .map(|i| f64::from(decoded[2 * i] - sine(i as u64, 0)).powi(2))
        .sum::<f64>()
        / total as f64;
    ensure!(
        err.sqrt() < 0.02,
        "{n} chunks: RMS error against the sine {}",
        err.sqrt()
    );
    // Seam check: the largest step near each boundary is no larger than the
    // largest step elsewhere.
    let left: Vec<f32> = decoded.iter().step_by(2).copied().collect();
    let bounds: Vec<usize> = c
        .plan
        .chunks()
        .iter()
        .skip(1)
        .map(|c| c.samples().start.0 as usize)
        .collect();
    let near = |i: usize| bounds.iter().any(|&b| i + 256 >= b && i <= b + 256);
    let step = |i: usize| (left[i + 1] - left[i]).abs();
    let elsewhere = (0..left.len() - 1)
        .filter(|&i| !near(i))
        .map(step)
        .fold(0f32, f32::max);
    for &b in &bounds {
        let lo = b.saturating_sub(256);
        let hi = (b + 256).min(left.len() - 1);
        let seam = (lo..hi).map(step).fold(0f32, f32::max);
        ensure!(
            seam <= elsewhere,
            "{n} chunks: step {seam} near the seam at sample {b} exceeds {elsewhere} elsewhere"
        );
    }
    Ok(())
}

fn check_fixture(fps: Fps, mode: Mode, pcm: PcmFormat) -> Result<()> {
    let dir = temp_dir();
    let mut outputs = Vec::new();
    for (per_chunk, count) in SPLITS {
        let c = render_and_combine(dir.path(), fps, mode, pcm, per_chunk)
            .with_context(|| format!("{count} chunks"))?;
        ensure!(
            c.chunks.len() == count,
            "plan gave {} chunks",
            c.chunks.len()
        );
        outputs.push(c);
    }
    let reference_audio =
        media::decode_audio_trimmed(&outputs[0].output, outputs[0].plan.samples().len());
    let reference_video = media::decode_video_frames(&outputs[0].output, mode.pix_fmt());
    ensure!(reference_video.len() as u64 == FRAMES);
    for c in &outputs {
        let n = c.chunks.len();
        check_video_timing(c, fps, mode).with_context(|| format!("{n} chunks at {fps}"))?;
        check_audio(c, &reference_audio).with_context(|| format!("{n} chunks at {fps}"))?;
        // Frame k of the output is frame k of the chunk that rendered it.
        let out = media::decode_video_frames(&c.output, mode.pix_fmt());
        let from_chunks: Vec<media::Frame> = c
            .chunks
            .iter()
            .flat_map(|a| media::decode_video_frames(&a.video, mode.pix_fmt()))
            .collect();
        media::assert_frames_eq(
            &out,
            &from_chunks,
            &format!("{n} chunks at {fps}: output against its chunks"),
        );
        if mode == Mode::Lossless {
            media::assert_frames_eq(
                &out,
                &reference_video,
                &format!("{n} chunks at {fps} (lossless) against 1 chunk"),
            );
        }
    }
    Ok(())
}

#[test]
fn crf_30fps_is_frame_exact_and_audio_identical() -> Result<()> {
    check_fixture(fps(30, 1), Mode::Crf, PcmFormat::S16le)
}

#[test]
fn crf_ntsc_is_frame_exact_and_audio_identical() -> Result<()> {
    check_fixture(fps(30_000, 1001), Mode::Crf, PcmFormat::F32le)
}

#[test]
fn lossless_30fps_decodes_identically_to_one_chunk() -> Result<()> {
    check_fixture(fps(30, 1), Mode::Lossless, PcmFormat::F32le)
}

#[test]
fn lossless_ntsc_decodes_identically_to_one_chunk() -> Result<()> {
    check_fixture(fps(30_000, 1001), Mode::Lossless, PcmFormat::S16le)
}
