//! Outputs that are not one video (issue 17): image sequences written by
//! the workers, audio-only renders, and stills as JPEG or WebP. Chunking
//! never shows: three chunks give the same files as one.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use testkit::media::{self, PixFmt};

use crate::kit::{coordinator, run};

/// A tiny test pattern with a sine: 36 frames at 30 fps (1.2 s).
const TINY: &str = r#"{"width":64,"height":36,"duration":36,"fps":"30"}"#;
/// Its audio: S(36) samples at 48 kHz.
const TINY_SAMPLES: u64 = 36 * 48_000 / 30;

/// `coordinator render --props TINY --chunks N` plus `extra`, on the
/// embedded pool.
fn render(chunks: u32, extra: &[&str]) -> Output {
    let mut c = coordinator();
    c.args(["render", "--props", TINY, "--chunks", &chunks.to_string()])
        .args(extra);
    run(c)
}

#[track_caller]
fn succeeded(o: &Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Every file of `dir` by name, with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read"),
            )
        })
        .collect()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn image_sequences_are_the_same_files_in_three_chunks_as_in_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (one, three) = (dir.path().join("one"), dir.path().join("three"));
    succeeded(&render(1, &["--image-sequence", path(&one)]));
    succeeded(&render(3, &["--image-sequence", path(&three)]));
    let got = files(&three);
    let mut names: Vec<String> = (0..36).map(|i| format!("frame-{i:02}.png")).collect();
    names.push("audio.wav".into());
    names.sort();
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), names);
    assert!(got == files(&one), "3 chunks and 1 chunk differ");

    // Frame 7 decodes to the pixels of `still --frame 7`.
    let still = dir.path().join("still.png");
    let mut c = coordinator();
    c.args(["still", "--props", TINY, "--frame", "7", "--out"])
        .arg(&still);
    succeeded(&run(c));
    media::assert_frames_eq(
        &media::decode_video_frames(three.join("frame-07.png"), PixFmt::Rgba),
        &media::decode_video_frames(&still, PixFmt::Rgba),
        "frame 7 against its still",
    );

    // The audio beside the frames is the audio-only render's WAV.
    let wav = dir.path().join("audio.wav");
    succeeded(&render(2, &["--audio-only", "--out", path(&wav)]));
    assert!(got["audio.wav"] == std::fs::read(&wav).expect("wav"));

    // JPEG: the same bytes whatever the chunking, named .jpg.
    let (j1, j2) = (dir.path().join("j1"), dir.path().join("j2"));
    for (chunks, d) in [(1, &j1), (2, &j2)] {
        succeeded(&render(
            chunks,
            &[
                "--image-sequence",
                path(d),
                "--image-format",
                "jpeg",
                "--jpeg-quality",
                "75",
            ],
        ));
    }
    let jpegs = files(&j2);
    assert_eq!(jpegs.len(), 37);
    assert!(jpegs.contains_key("frame-35.jpg"));
    assert!(jpegs == files(&j1), "jpeg: 2 chunks and 1 chunk differ");
}

/// The 16-bit samples the combine step makes of 1-chunk f32 PCM (FFmpeg's
/// scale: `round(x · 32768)`, clamped).
fn s16_of_f32_pcm(pcm: &[u8]) -> Vec<u8> {
    pcm.chunks_exact(4)
        .flat_map(|b| {
            let s = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            ((s * 32768.0).round().clamp(-32768.0, 32767.0) as i16).to_le_bytes()
        })
        .collect()
}

#[test]
fn audio_only_renders_no_video_and_the_same_audio_in_any_chunking() {
    let dir = tempfile::tempdir().expect("tempdir");
    for ext in ["wav", "m4a", "mp3", "opus"] {
        let one = dir.path().join(format!("one.{ext}"));
        let three = dir.path().join(format!("three.{ext}"));
        succeeded(&render(1, &["--audio-only", "--out", path(&one)]));
        succeeded(&render(3, &["--audio-only", "--out", path(&three)]));
        assert!(
            std::fs::read(&one).expect("one") == std::fs::read(&three).expect("three"),
            ".{ext}: 3 chunks and 1 chunk differ"
        );
        let probe = media::probe(&three);
        assert_eq!(probe.kinds(), [media::StreamKind::Audio], ".{ext}: streams");
    }
    let at = |ext: &str| dir.path().join(format!("three.{ext}"));

    // WAV: exactly the 1-chunk PCM, as 16-bit samples.
    let kept = dir.path().join("kept");
    succeeded(&render(
        1,
        &[
            "--out",
            path(&dir.path().join("v.mp4")),
            "--keep-chunks",
            path(&kept),
        ],
    ));
    let pcm = std::fs::read(kept.join("chunk-000000.pcm")).expect("pcm");
    let wav_samples = media::run(
        std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(at("wav"))
            .args(["-f", "s16le", "-c:a", "pcm_s16le", "-"]),
    );
    assert_eq!(wav_samples.len() as u64, TINY_SAMPLES * 4);
    assert!(wav_samples == s16_of_f32_pcm(&pcm), "wav samples");

    // M4A: the edit list gives exactly the render's length.
    let m4a = media::probe(at("m4a"));
    assert_eq!(m4a.audio().duration_ts, Some(TINY_SAMPLES as i64));
    assert_eq!(m4a.audio().time_base.den, 48_000);
    // Opus (pre-skip and end trimming) and MP3 (the LAME header's encoder
    // delay and padding) decode to exactly the render's samples.
    for ext in ["opus", "mp3"] {
        assert_eq!(
            media::decode_audio(at(ext)).len() as u64,
            TINY_SAMPLES,
            ".{ext}: decoded samples"
        );
    }
}

#[track_caller]
fn refused(args: &[&str], expected: &str) {
    let o = render(1, args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(expected), "{args:?}: {stderr}");
}

#[test]
fn outputs_that_make_no_sense_are_refused_naming_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = |name: &str| dir.path().join(name).display().to_string();
    refused(
        &["--audio-only", "--codec", "vp9", "--out", &out("a.wav")],
        "'--audio-only' cannot be used with '--codec <CODEC>'",
    );
    refused(
        &["--audio-only", "--transparent", "--out", &out("a.wav")],
        "'--audio-only' cannot be used with '--transparent'",
    );
    refused(
        &["--image-sequence", &out("seq"), "--codec", "h265"],
        "'--image-sequence <DIR|URL>' cannot be used with '--codec <CODEC>'",
    );
    refused(
        &["--out", &out("a.mp3")],
        "a.mp3 with a video render (.mp3 holds audio only): add --audio-only",
    );
    refused(
        &["--audio-only", "--out", &out("a.mp4")],
        "--audio-only --out",
    );
    refused(
        &[
            "--image-sequence",
            &out("seq"),
            "--image-format",
            "jpeg",
            "--transparent",
        ],
        "--image-format jpeg with --transparent: JPEG has no alpha",
    );
    let mut c = coordinator();
    c.args([
        "render",
        "--props",
        r#"{"width":64,"height":36,"duration":6,"audio":false}"#,
    ])
    .args(["--chunks", "1", "--audio-only", "--out", &out("silent.wav")]);
    let o = run(c);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("--audio-only: composition `test-pattern` has no audio"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!dir.path().join("silent.wav").exists());
}

/// PSNR in dB of `a` against `b` over the RGB bytes of RGBA frames.
fn psnr_rgb(a: &[u8], b: &[u8]) -> f64 {
    let (mut sum, mut n) = (0f64, 0f64);
    for (pa, pb) in a.chunks_exact(4).zip(b.chunks_exact(4)) {
        for c in 0..3 {
            let d = f64::from(pa[c]) - f64::from(pb[c]);
            sum += d * d;
            n += 1.0;
        }
    }
    10.0 * (255.0f64 * 255.0 / (sum / n).max(1e-12)).log10()
}

#[test]
fn stills_are_png_webp_or_jpeg_by_extension_or_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let still = |name: &str, extra: &[&str]| {
        let p = dir.path().join(name);
        let mut c = coordinator();
        c.args(["still", "--props", TINY, "--frame", "11", "--out"])
            .arg(&p)
            .args(extra);
        let o = run(c);
        (p, o)
    };
    let (png, o) = still("f.png", &[]);
    succeeded(&o);
    let (webp, o) = still("f.webp", &[]);
    succeeded(&o);
    let (jpeg, o) = still("f.jpg", &["--jpeg-quality", "95"]);
    succeeded(&o);
    let (named, o) = still("f.image", &["--format", "webp"]);
    succeeded(&o);
    assert_eq!(media::probe(&webp).video().codec, "webp");
    assert_eq!(media::probe(&jpeg).video().codec, "mjpeg");
    let reference = media::decode_video_frames(&png, PixFmt::Rgba);
    media::assert_frames_eq(
        &media::decode_video_frames(&webp, PixFmt::Rgba),
        &reference,
        "lossless webp against png",
    );
    assert!(std::fs::read(&named).expect("named") == std::fs::read(&webp).expect("webp"));
    let decoded = media::decode_video_frames(&jpeg, PixFmt::Rgba);
    let psnr = psnr_rgb(&decoded[0].planes[0].data, &reference[0].planes[0].data);
    assert!(psnr > 30.0, "jpeg at quality 95: PSNR {psnr:.1} dB");
    // The same frame gives the same bytes.
    let (again, o) = still("again.jpg", &["--jpeg-quality", "95"]);
    succeeded(&o);
    assert!(std::fs::read(&again).expect("again") == std::fs::read(&jpeg).expect("jpeg"));
    let (_, o) = still("f.gif", &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("the extension names no image format"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
