//! Outputs beyond H.264 MP4 (issue 17): each codec rendered in several
//! chunks decodes (Debian's ffmpeg) to what one chunk gives, with exact
//! frame timing and audio length, alpha kept where asked, and the same
//! request giving the same bytes.

use std::path::Path;

use testkit::media::{self, PixFmt};

use crate::kit::{render_on, sha256};

/// A tiny test pattern with a sine: 36 frames at 30 fps (1.2 s).
const TINY: &str = r#"{"width":64,"height":36,"duration":36,"fps":"30"}"#;
/// Its audio: S(36) samples at 48 kHz.
const TINY_SAMPLES: u64 = 36 * 48_000 / 30;

/// A 64x36 scene of a half-transparent box moving over nothing.
const OVERLAY: &str = r##"{
  "version": 1,
  "compositions": [{
    "id": "overlay", "width": 64, "height": 36, "fps": 30, "duration": 24,
    "layers": [
      {"type": "rect", "name": "Box", "size": [24, 16], "fill": "#f59e0b80",
       "position": {"keyframes": [{"frame": 0, "value": [4, 4]}, {"frame": 23, "value": [36, 16]}]}}
    ]
  }]
}"##;

/// Renders the test pattern in `chunks` chunks on `local` embedded workers.
#[track_caller]
fn render(out: &Path, chunks: u32, extra: &[&str]) {
    let o = render_on(&[], TINY, chunks, out, extra);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Renders the overlay scene (written into `dir`) in `chunks` chunks.
#[track_caller]
fn render_overlay(dir: &Path, out: &Path, chunks: u32, extra: &[&str]) {
    let bundle = dir.join("overlay");
    std::fs::create_dir_all(&bundle).expect("bundle dir");
    std::fs::write(bundle.join("scene.json"), OVERLAY).expect("scene");
    let mut c = crate::kit::coordinator();
    c.arg("render")
        .arg(&bundle)
        .args(["--chunks", &chunks.to_string(), "--out"])
        .arg(out)
        .args(extra);
    let o = crate::kit::run(c);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Frame `k` of the video is shown at exactly `k / 30` s, one packet per
/// frame, and the audio holds exactly `samples` samples.
#[track_caller]
fn check_timing(path: &Path, frames: usize) {
    let media::Packets { time_base, packets } = media::video_packets(path);
    assert_eq!(packets.len(), frames, "{path:?}: packets");
    let mut pts: Vec<i64> = packets.iter().map(|p| p.pts).collect();
    pts.sort_unstable();
    let first = pts[0];
    for (k, p) in pts.iter().enumerate() {
        // (p - first)·num/den == k/30, to the container's tick.
        let exact = (p - first) * time_base.num * 30;
        let want = k as i64 * time_base.den;
        assert!(
            (exact - want).abs() < 30 * time_base.num,
            "{path:?}: frame {k} at {p} ({time_base:?})"
        );
    }
}

/// The video stream's codec tag (`hvc1`, `av01`, …).
fn codec_tag(path: &Path) -> String {
    let tag = media::run(std::process::Command::new("ffprobe").args([
        "-v",
        "error",
        "-select_streams",
        "v:0",
        "-show_entries",
        "stream=codec_tag_string",
        "-of",
        "csv=p=0",
        path.to_str().expect("utf-8 path"),
    ]));
    String::from_utf8_lossy(&tag).trim().to_owned()
}

#[test]
fn h265_chunks_equal_one_chunk_in_mp4_and_mov() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = dir.path().join("one.mp4");
    let four = dir.path().join("four.mp4");
    let mov = dir.path().join("four.mov");
    let args = ["--codec", "h265", "--lossless"];
    render(&one, 1, &args);
    render(&four, 4, &args);
    render(&mov, 4, &args);
    let probe = media::probe(&four);
    assert_eq!(probe.video().codec, "hevc");
    assert_eq!(probe.video().pix_fmt.as_deref(), Some("yuv444p"));
    assert_eq!(probe.audio().codec, "aac");
    assert_eq!(probe.audio().duration_ts, Some(TINY_SAMPLES as i64));
    assert_eq!(codec_tag(&four), "hvc1");
    check_timing(&four, 36);
    check_timing(&mov, 36);
    let frames = media::decode_video_frames(&one, PixFmt::Yuv444p);
    assert_eq!(frames.len(), 36);
    media::assert_frames_eq(
        &media::decode_video_frames(&four, PixFmt::Yuv444p),
        &frames,
        "4 H.265 chunks against 1",
    );
    media::assert_frames_eq(
        &media::decode_video_frames(&mov, PixFmt::Yuv444p),
        &frames,
        "H.265 in MOV against MP4",
    );
    media::assert_audio_eq(
        &media::decode_audio_trimmed(&four, TINY_SAMPLES),
        &media::decode_audio_trimmed(&one, TINY_SAMPLES),
        "4 chunks against 1",
    );

    // Lossy, the same request gives the same bytes whichever worker
    // rendered which chunk (one worker, then three).
    let a = dir.path().join("a.mp4");
    let b = dir.path().join("b.mp4");
    render(&a, 4, &["--codec", "h265", "--local", "1"]);
    render(&b, 4, &["--codec", "h265", "--local", "3"]);
    assert_eq!(sha256(&a), sha256(&b), "H.265 bytes depend on the workers");
}

#[test]
fn vp9_webm_keeps_alpha_and_gets_opus_of_exact_length() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Alpha: the decoded alpha plane is the scene's, in 3 chunks as in 1.
    let one = dir.path().join("one.webm");
    let three = dir.path().join("three.webm");
    let args = ["--codec", "vp9", "--transparent", "--lossless"];
    render_overlay(dir.path(), &one, 1, &args);
    render_overlay(dir.path(), &three, 3, &args);
    let decoded = media::decode_video_frames(&three, PixFmt::Rgba);
    assert_eq!(decoded.len(), 24);
    media::assert_frames_eq(
        &decoded,
        &media::decode_video_frames(&one, PixFmt::Rgba),
        "3 VP9 chunks against 1",
    );
    check_timing(&three, 24);
    // Frame 0: the box (alpha 0x80) covers columns 4-27 of rows 4-19;
    // everything else is transparent.
    let alpha = |x: usize, y: usize| decoded[0].planes[0].row(y)[4 * x + 3];
    assert_eq!(
        [
            alpha(3, 10),
            alpha(4, 10),
            alpha(27, 19),
            alpha(28, 10),
            alpha(10, 20)
        ],
        [0, 128, 128, 0, 0]
    );

    // Audio: Opus encoded once, pre-skip and end padding signalled, so the
    // decoder gives exactly the render's samples, equal in 4 chunks and 1.
    let a1 = dir.path().join("a1.webm");
    let a4 = dir.path().join("a4.webm");
    render(&a1, 1, &["--codec", "vp9"]);
    render(&a4, 4, &["--codec", "vp9"]);
    assert_eq!(media::probe(&a4).audio().codec, "opus");
    let audio = media::decode_audio(&a4);
    assert_eq!(audio.len() as u64, TINY_SAMPLES, "Opus samples decoded");
    media::assert_audio_eq(&audio, &media::decode_audio(&a1), "4 chunks against 1");
    check_timing(&a4, 36);
    let again = dir.path().join("again.webm");
    render(&again, 4, &["--codec", "vp9", "--local", "1"]);
    assert_eq!(
        sha256(&a4),
        sha256(&again),
        "VP9 bytes depend on the workers"
    );
}

#[test]
fn prores_4444_with_alpha_and_422_hq_with_pcm_in_mov() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = dir.path().join("one.mov");
    let three = dir.path().join("three.mov");
    let args = ["--codec", "prores", "--transparent"];
    render_overlay(dir.path(), &one, 1, &args);
    render_overlay(dir.path(), &three, 3, &args);
    let probe = media::probe(&three);
    assert_eq!(probe.video().codec, "prores");
    assert_eq!(probe.video().profile.as_deref(), Some("4444"));
    // Intra-only: every frame is the same bytes however the chunks fall.
    let decoded = media::decode_video_frames(&three, PixFmt::Rgba);
    media::assert_frames_eq(
        &decoded,
        &media::decode_video_frames(&one, PixFmt::Rgba),
        "3 ProRes chunks against 1",
    );
    check_timing(&three, 24);
    let alpha = |x: usize, y: usize| decoded[0].planes[0].row(y)[4 * x + 3];
    assert_eq!([alpha(3, 10), alpha(28, 10), alpha(10, 20)], [0, 0, 0]);
    assert!((127..=129).contains(&alpha(4, 10)), "{}", alpha(4, 10));

    let hq = dir.path().join("hq.mov");
    render(&hq, 3, &["--codec", "prores", "--audio-codec", "pcm"]);
    let probe = media::probe(&hq);
    assert_eq!(probe.video().profile.as_deref(), Some("HQ"));
    assert_eq!(probe.video().pix_fmt.as_deref(), Some("yuv422p10le"));
    assert_eq!(probe.audio().codec, "pcm_s16le");
    // PCM has no priming or padding: the decoder gives exactly S(N).
    assert_eq!(media::decode_audio(&hq).len() as u64, TINY_SAMPLES);
    check_timing(&hq, 36);
}

#[track_caller]
fn check_refused(args: &[&str], out: &str, expected: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(out);
    let o = render_on(&[], TINY, 1, &path, args);
    let stderr = String::from_utf8_lossy(&o.stderr).replace(&path.display().to_string(), "OUT");
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim(), expected);
}

#[test]
fn a_codec_the_container_cannot_hold_is_refused_naming_both() {
    check_refused(
        &["--codec", "prores"],
        "x.mp4",
        "error: --codec prores --out OUT: a .mp4 file cannot hold prores video; it holds h264, h265, av1",
    );
    check_refused(
        &["--transparent"],
        "x.mp4",
        "error: --transparent: h264 video has no alpha channel; use vp9 (.webm) or prores (.mov)",
    );
    check_refused(
        &["--codec", "vp9", "--audio-codec", "aac"],
        "x.webm",
        "error: --codec vp9 --out OUT: a .webm file cannot hold aac audio; it holds opus",
    );
}

/// The test pattern at the smallest size SVT-AV1 encodes in both
/// dimensions' steps (it refuses under 64 pixels a side): 24 frames at 30
/// fps.
const AV1_PATTERN: &str = r#"{"width":128,"height":72,"duration":24,"fps":"30"}"#;

/// The indices of the key frames, in presentation order.
fn key_frames(path: &Path) -> Vec<usize> {
    let mut packets = media::video_packets(path).packets;
    packets.sort_unstable_by_key(|p| p.pts);
    packets
        .iter()
        .enumerate()
        .filter(|(_, p)| p.key)
        .map(|(k, _)| k)
        .collect()
}

/// The mean absolute difference of two decoded frames' luma planes.
fn mean_luma_difference(a: &media::Frame, b: &media::Frame) -> f64 {
    let (x, y) = (&a.planes[0].data, &b.planes[0].data);
    assert_eq!(x.len(), y.len(), "frame sizes");
    let sum: u64 = x
        .iter()
        .zip(y)
        .map(|(p, q)| u64::from(p.abs_diff(*q)))
        .sum();
    sum as f64 / x.len() as f64
}

#[test]
fn av1_chunks_start_with_key_frames_and_join_into_webm_and_mp4() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |out: &Path, chunks: u32, extra: &[&str]| {
        let mut c = crate::kit::render_command(&[], AV1_PATTERN, chunks, out, extra);
        c.env_remove("SVT_LOG");
        let o = crate::kit::run(c);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{}: {stderr}", o.status);
        // SVT-AV1 prints its settings for every chunk unless told not to
        // (SVT_LOG=3 would bring them back).
        assert!(!stderr.contains("Svt[info]"), "{stderr}");
    };
    let one = dir.path().join("one.webm");
    let webm = dir.path().join("three.webm");
    let mp4 = dir.path().join("three.mp4");
    run(&one, 1, &["--codec", "av1"]);
    run(&webm, 3, &["--codec", "av1"]);
    run(&mp4, 3, &["--codec", "av1"]);
    let probe = media::probe(&webm);
    assert_eq!(probe.video().codec, "av1");
    assert_eq!(probe.audio().codec, "opus");
    let probe = media::probe(&mp4);
    assert_eq!(probe.video().codec, "av1");
    assert_eq!(probe.audio().codec, "aac");
    assert_eq!(codec_tag(&mp4), "av01");
    for path in [&one, &webm, &mp4] {
        check_timing(path, 24);
    }
    // Keyint is 250 and scene cuts are off: the only key frames are the
    // chunks' first frames (the plan splits 24 frames into 8 + 8 + 8).
    assert_eq!(key_frames(&one), [0]);
    assert_eq!(key_frames(&webm), [0, 8, 16]);
    assert_eq!(key_frames(&mp4), [0, 8, 16]);
    // Stream copy changes no frame: the same chunks decode alike in both
    // containers. Against one chunk the encoder made other decisions
    // (key frames at 8 and 16), so only closeness holds.
    let decoded = media::decode_video_frames(&webm, PixFmt::Yuv420p);
    assert_eq!(decoded.len(), 24);
    media::assert_frames_eq(
        &media::decode_video_frames(&mp4, PixFmt::Yuv420p),
        &decoded,
        "AV1 chunks in MP4 against WebM",
    );
    for (k, (a, b)) in decoded
        .iter()
        .zip(&media::decode_video_frames(&one, PixFmt::Yuv420p))
        .enumerate()
    {
        let d = mean_luma_difference(a, b);
        assert!(
            d < 3.0,
            "frame {k}: mean luma difference {d} against 1 chunk"
        );
    }
    media::assert_audio_eq(
        &media::decode_audio(&webm),
        &media::decode_audio(&one),
        "3 chunks against 1",
    );
    assert_eq!(media::decode_audio(&webm).len(), 24 * 48_000 / 30);

    // SVT-AV1's bytes do not depend on the workers (one, then three).
    let again = dir.path().join("again.webm");
    let o = render_on(
        &[],
        AV1_PATTERN,
        3,
        &again,
        &["--codec", "av1", "--local", "1"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let other = dir.path().join("other.webm");
    let o = render_on(
        &[],
        AV1_PATTERN,
        3,
        &other,
        &["--codec", "av1", "--local", "3"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        sha256(&again),
        sha256(&other),
        "AV1 bytes depend on the workers"
    );
    assert_eq!(
        sha256(&webm),
        sha256(&other),
        "AV1 bytes differ between renders"
    );
}

#[test]
fn av1_refuses_frames_under_64_pixels_naming_the_size() {
    check_refused(
        &["--codec", "av1"],
        "x.webm",
        "error: field `video.codec`: composition `test-pattern` is 64x36: av1 (SVT-AV1) needs at least 64x64",
    );
}

#[test]
fn a_gif_faster_than_browsers_play_is_refused_before_rendering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("fast.gif");
    let fast = r#"{"width":64,"height":36,"duration":12,"fps":"60"}"#;
    let o = render_on(&[], fast, 1, &out, &["--codec", "gif"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "error: field `video.codec`: composition `test-pattern` gives 60 fps: a GIF plays right up to 50 fps (browsers show a frame under 2/100 s for 1/10 s); every_nth_frame 2 gives 30 fps"
    );
    assert!(!out.exists());
    // Every other frame plays right: 6 frames of 3/100 s or 4/100 s.
    let o = render_on(
        &[],
        fast,
        1,
        &out,
        &["--codec", "gif", "--every-nth-frame", "2"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let media::Packets { packets, .. } = media::video_packets(&out);
    assert_eq!(packets.len(), 6);
    assert!(
        packets.iter().all(|p| p.duration.unwrap_or(0) >= 3),
        "{packets:?}"
    );
}

#[test]
fn gif_chunks_share_one_palette_loop_and_last_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = dir.path().join("one.gif");
    let three = dir.path().join("three.gif");
    render(&one, 1, &["--codec", "gif"]);
    render(&three, 3, &["--codec", "gif"]);
    let probe = media::probe(&three);
    assert_eq!(probe.video().codec, "gif");
    assert_eq!(
        probe.kinds(),
        [media::StreamKind::Video],
        "a GIF has no sound"
    );
    // One palette and positional dithering: every frame's indices are
    // those of the one-chunk render, so the decoded frames are equal.
    let frames = media::decode_video_frames(&one, PixFmt::Rgba);
    assert_eq!(frames.len(), 36);
    media::assert_frames_eq(
        &media::decode_video_frames(&three, PixFmt::Rgba),
        &frames,
        "3 GIF chunks against 1",
    );
    // Delays in 1/100 s spread the remainder (3, 3, 4, …): frame k starts
    // at ⌊100k/30⌋ and the 36 frames last exactly 1.2 s.
    let media::Packets { time_base, packets } = media::video_packets(&three);
    assert_eq!(time_base, media::Rational { num: 1, den: 100 });
    let starts: Vec<i64> = packets.iter().map(|p| p.pts - packets[0].pts).collect();
    let expected: Vec<i64> = (0..36).map(|k| k * 100 / 30).collect();
    assert_eq!(starts, expected);
    let last = packets.last().expect("36 packets");
    assert_eq!(last.pts - packets[0].pts + last.duration.unwrap_or(0), 120);
    // It loops forever: the NETSCAPE2.0 extension with a count of 0.
    let bytes = std::fs::read(&three).expect("read gif");
    assert!(
        bytes
            .windows(15)
            .any(|w| w == b"NETSCAPE2.0\x03\x01\x00\x00"),
        "no infinite-loop extension"
    );
    assert_eq!(sha256(&three), {
        let again = dir.path().join("again.gif");
        render(&again, 3, &["--codec", "gif", "--local", "1"]);
        sha256(&again)
    });
}
