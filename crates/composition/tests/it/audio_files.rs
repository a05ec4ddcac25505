//! Audio files as users bring them, each made here by Debian's ffmpeg (or
//! written as float WAV): band-limited resampling measured by its spectrum,
//! encoder delay and padding removed sample-exactly against ffmpeg's decode
//! (AAC in M4A, MP3 at 48 and 44.1 kHz), seamless loops, Opus and WebM named
//! in errors, and long files read by the span.

use std::path::Path;
use std::process::Command;

use composition::scene::SceneBundle;
use composition::{CompositionSource, Prepared, Props};
use testkit::media;
use timebase::SampleSpan;

/// A 32-bit float WAV (no quantisation spurs to mistake for aliases).
fn wav_f32(rate: u32, channels: u16, samples: &[f32]) -> Vec<u8> {
    let mut v = crate::wav_header(3, channels, rate, 32, (samples.len() * 4) as u32);
    for s in samples {
        v.extend_from_slice(&s.to_le_bytes());
    }
    v
}

/// A bundle in `dir` whose composition `c` (30 fps, `frames` long) plays
/// `track` (a JSON audio track).
fn bundle(dir: &Path, frames: u64, track: serde_json::Value) -> std::sync::Arc<dyn Prepared> {
    let scene = serde_json::json!({"version": 1, "compositions": [{
        "id": "c", "width": 16, "height": 16, "fps": 30, "duration": frames, "audio": [track]}]});
    std::fs::write(dir.join("scene.json"), scene.to_string()).expect("scene");
    SceneBundle::open(dir)
        .expect("bundle opens")
        .composition("c")
        .expect("c")
        .prepare(&Props::new())
        .expect("prepare")
}

fn render(p: &dyn Prepared, start: u64, end: u64) -> Vec<f32> {
    let mut out = vec![0.0; ((end - start) * 2) as usize];
    p.render_audio(SampleSpan::new(start, end).expect("span"), &mut out)
        .expect("audio");
    out
}

fn left(stereo: &[f32]) -> Vec<f64> {
    stereo.iter().step_by(2).map(|&s| f64::from(s)).collect()
}

/// The zeroth-order modified Bessel function, for the Kaiser window.
fn i0(x: f64) -> f64 {
    let (mut sum, mut term, mut k) = (1.0, 1.0, 1.0);
    while term > sum * 1e-17 {
        term *= (x * x / 4.0) / (k * k);
        sum += term;
        k += 1.0;
    }
    sum
}

/// Amplitude (of a sine, 1.0 = full scale) at `freq` Hz in `x` at 48 kHz,
/// through a Kaiser window (β = 20: side lobes far below −150 dB).
struct Spectrum {
    x: Vec<f64>,
}

impl Spectrum {
    fn new(x: &[f64]) -> Spectrum {
        let n = x.len() as f64;
        let b = i0(20.0);
        let w: Vec<f64> = (0..x.len())
            .map(|i| {
                let r = 2.0 * i as f64 / (n - 1.0) - 1.0;
                i0(20.0 * (1.0 - r * r).max(0.0).sqrt()) / b
            })
            .collect();
        let sum: f64 = w.iter().sum();
        Spectrum {
            x: x.iter().zip(&w).map(|(v, w)| 2.0 * v * w / sum).collect(),
        }
    }

    fn amplitude(&self, freq: f64) -> f64 {
        let step = 2.0 * std::f64::consts::PI * freq / 48_000.0;
        let (mut re, mut im) = (0.0, 0.0);
        // Rotate a phasor instead of calling sin/cos per sample.
        let (c, s) = (step.cos(), step.sin());
        let (mut pr, mut pi) = (1.0f64, 0.0f64);
        for (i, v) in self.x.iter().enumerate() {
            re += v * pr;
            im -= v * pi;
            (pr, pi) = (pr * c - pi * s, pr * s + pi * c);
            if i % 1024 == 1023 {
                let a = (i + 1) as f64 * step;
                (pr, pi) = (a.cos(), a.sin());
            }
        }
        (re * re + im * im).sqrt()
    }

    /// The largest amplitude in dBFS between 20 Hz and 24 kHz, `skip` Hz
    /// either side of each of `tones` left out.
    fn worst_outside(&self, tones: &[f64], skip: f64) -> (f64, f64) {
        let mut worst = (f64::NEG_INFINITY, 0.0);
        let mut f = 20.0;
        while f < 23_990.0 {
            if tones.iter().all(|t| (f - t).abs() > skip) {
                let db = 20.0 * self.amplitude(f).log10();
                if db > worst.0 {
                    worst = (db, f);
                }
            }
            f += 6.0;
        }
        worst
    }
}

/// Renders a float WAV of `tones` (Hz, amplitude) at `rate` through a
/// scene, and returns 16 384 samples of the middle of the 48 kHz output.
fn resampled(rate: u32, tones: &[(f64, f64)]) -> Vec<f64> {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = rate as usize / 2;
    let mono: Vec<f32> = (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            tones
                .iter()
                .map(|(f, a)| a * (2.0 * std::f64::consts::PI * f * t).sin())
                .sum::<f64>() as f32
        })
        .collect();
    std::fs::write(dir.path().join("t.wav"), wav_f32(rate, 1, &mono)).expect("wav");
    let p = bundle(dir.path(), 15, serde_json::json!({"src": "t.wav"}));
    left(&render(p.as_ref(), 4_000, 4_000 + 16_384))
}

#[test]
fn resampling_keeps_the_pass_band_and_leaves_no_aliases() {
    // 44.1 kHz music: the 12 + 15 kHz pair that linear interpolation left
    // 2-3.5 dB low with an alias at 18.9 kHz at −27 dBFS; 20 kHz at the
    // pass band's edge.
    let tones = [(12_000.0, 0.3), (15_000.0, 0.3), (20_000.0, 0.3)];
    let out = resampled(44_100, &tones);
    let s = Spectrum::new(&out);
    for (f, a) in tones {
        let db = 20.0 * (s.amplitude(f) / a).log10();
        assert!(db.abs() <= 0.1, "44.1 kHz: {f} Hz comes out {db:+.3} dB");
    }
    let (db, at) = s.worst_outside(&[12_000.0, 15_000.0, 20_000.0], 60.0);
    assert!(db <= -90.0, "44.1 kHz: {db:.1} dBFS at {at} Hz");
    // Zero delay: the output is the band-limited input at the same instants.
    for (k, y) in out.iter().enumerate().step_by(97) {
        let t = (4_000 + k) as f64 / 48_000.0;
        let ideal: f64 = tones
            .iter()
            .map(|(f, a)| a * (2.0 * std::f64::consts::PI * f * t).sin())
            .sum();
        assert!((y - ideal).abs() < 1e-3, "sample {k}: {y} vs {ideal}");
    }

    // 96 kHz: an inaudible 30 kHz tone must not fold to an audible 18 kHz.
    let out = resampled(96_000, &[(1_000.0, 0.4), (30_000.0, 0.5)]);
    let s = Spectrum::new(&out);
    let db = 20.0 * (s.amplitude(1_000.0) / 0.4).log10();
    assert!(db.abs() <= 0.1, "96 kHz: 1 kHz comes out {db:+.3} dB");
    let (db, at) = s.worst_outside(&[1_000.0], 60.0);
    assert!(db <= -90.0, "96 kHz: {db:.1} dBFS at {at} Hz");

    // 8 kHz voice: no images above 4 kHz.
    let out = resampled(8_000, &[(440.0, 0.4), (3_000.0, 0.4)]);
    let s = Spectrum::new(&out);
    for f in [440.0, 3_000.0] {
        let db = 20.0 * (s.amplitude(f) / 0.4).log10();
        assert!(db.abs() <= 0.1, "8 kHz: {f} Hz comes out {db:+.3} dB");
    }
    let (db, at) = s.worst_outside(&[440.0, 3_000.0], 60.0);
    assert!(db <= -90.0, "8 kHz: {db:.1} dBFS at {at} Hz");
}

/// Encodes `lavfi` with ffmpeg `args` into `dir/name`.
fn encode(dir: &Path, name: &str, lavfi: &str, args: &[&str]) {
    media::run(
        Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i", lavfi])
            .args(args)
            .arg(dir.join(name)),
    );
}

/// ffmpeg's decode of `file` at 48 kHz (soxr at its best for other rates),
/// `samples` long at most, as stereo: mono doubled at full level, as the
/// scene's decoder doubles it (ffmpeg's own upmix is 3 dB down).
fn ffmpeg_48k(file: &Path, samples: u64) -> Vec<f32> {
    let channels = media::probe(file).audio().channels.unwrap_or(2);
    let raw = media::run(
        Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(file)
            .args([
                "-af",
                &format!("aresample=48000:resampler=soxr:precision=28,atrim=end_sample={samples}"),
                "-f",
                "f32le",
                "-",
            ]),
    );
    let values: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    match channels {
        1 => values.iter().flat_map(|&v| [v, v]).collect(),
        _ => values,
    }
}

#[track_caller]
fn assert_close(ours: &[f32], theirs: &[f32], tolerance: f32, what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    if let Some(i) = ours
        .iter()
        .zip(theirs)
        .position(|(a, b)| (a - b).abs() > tolerance)
    {
        panic!(
            "{what}: sample {}, channel {}: ours {} vs ffmpeg {}",
            i / 2,
            i % 2,
            ours[i],
            theirs[i]
        );
    }
}

#[test]
fn encoder_delay_and_padding_are_removed_as_ffmpeg_removes_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A chirp (no period to hide an offset): one sample of offset changes
    // values by up to 0.1 at its top.
    let tone = |rate: u32| format!("aevalsrc=0.3*sin(2*PI*(200+3000*t)*t):s={rate}:d=1");
    for (name, rate, args, tolerance) in [
        (
            "aac.m4a",
            48_000,
            &["-c:a", "aac", "-b:a", "192k"][..],
            2e-3,
        ),
        (
            "lame48.mp3",
            48_000,
            &["-c:a", "libmp3lame", "-b:a", "192k"][..],
            2e-3,
        ),
        (
            "lame44.mp3",
            44_100,
            &["-c:a", "libmp3lame", "-b:a", "192k"][..],
            5e-3,
        ),
        ("vorbis.ogg", 48_000, &["-c:a", "libvorbis"][..], 2e-3),
    ] {
        encode(dir.path(), name, &tone(rate), args);
        let p = bundle(dir.path(), 45, serde_json::json!({"src": name}));
        let ours = render(p.as_ref(), 0, 72_000);
        // The file is one second: 48 000 samples of tone, then silence.
        let theirs = ffmpeg_48k(&dir.path().join(name), 48_000);
        assert_eq!(theirs.len(), 96_000, "{name}: ffmpeg's length");
        assert_close(&ours[..96_000], &theirs, tolerance, name);
        assert!(
            ours[96_000..].iter().all(|s| *s == 0.0),
            "{name}: the encoder's padding is cut"
        );
    }
}

#[test]
fn a_looped_one_second_aac_clip_has_no_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    encode(
        dir.path(),
        "clip.m4a",
        "sine=frequency=1000:sample_rate=48000:duration=1",
        &["-c:a", "aac", "-b:a", "192k"],
    );
    let p = bundle(
        dir.path(),
        90,
        serde_json::json!({"src": "clip.m4a", "loop": true}),
    );
    let out = left(&render(p.as_ref(), 0, 144_000));
    // RMS over 5 ms windows: a 1 kHz sine at 1/8 full scale is 0.088 in
    // every one, including those across the loop points (48 000, 96 000).
    for w in out.chunks_exact(240).skip(1) {
        let rms = (w.iter().map(|s| s * s).sum::<f64>() / 240.0).sqrt();
        assert!((rms - 0.0884).abs() < 0.01, "a 5 ms window has RMS {rms}");
    }
    // The period is one second: the loop repeats the clip exactly.
    assert_eq!(out[1_000..47_000], out[49_000..95_000]);
}

#[test]
fn opus_and_webm_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tone = "sine=frequency=440:sample_rate=48000:duration=0.3";
    for (name, message) in [
        (
            "v.opus",
            "Opus is not supported: use WAV, MP3, AAC (M4A/MP4), FLAC or Ogg Vorbis",
        ),
        (
            "v.webm",
            "WebM/Matroska (and the Opus in it) is not supported: use WAV, MP3, AAC (M4A/MP4), FLAC or Ogg Vorbis",
        ),
    ] {
        encode(dir.path(), name, tone, &["-c:a", "libopus"]);
        let scene = serde_json::json!({"version": 1, "compositions": [{
            "id": "c", "width": 16, "height": 16, "fps": 30, "duration": 10,
            "audio": [{"name": "Voice", "src": name}]}]});
        std::fs::write(dir.path().join("scene.json"), scene.to_string()).expect("scene");
        let e = SceneBundle::open(dir.path())
            .expect_err("refused")
            .to_string();
        assert!(
            e.ends_with(&format!("audio `Voice`: audio `{name}`: {message}")),
            "{e}"
        );
    }
}

#[test]
fn long_files_are_read_by_the_span_and_spans_equal_the_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 12 s files, longer than two decoding blocks, in every lossy format
    // and FLAC: whole renders equal ffmpeg's continuous decode (so the
    // blocks' pre-roll rebuilds the decoders' state) and any span equals
    // the whole.
    // (Faded out: at an abrupt end AAC switches to short windows, where
    // Symphonia's and ffmpeg's decoders differ by a few percent.)
    let lavfi = "aevalsrc=0.3*sin(2*PI*(200+300*t)*t)|0.3*sin(2*PI*700*t):s=48000:d=12,afade=t=out:st=11.5:d=0.5";
    for (name, args, tolerance) in [
        ("long.flac", &["-c:a", "flac"][..], 1e-6),
        (
            "long.mp3",
            &["-c:a", "libmp3lame", "-b:a", "128k"][..],
            2e-3,
        ),
        ("long.m4a", &["-c:a", "aac", "-b:a", "128k"][..], 2e-3),
        ("long.ogg", &["-c:a", "libvorbis"][..], 2e-3),
    ] {
        encode(dir.path(), name, lavfi, args);
        let p = bundle(dir.path(), 360, serde_json::json!({"src": name}));
        let whole = render(p.as_ref(), 0, 576_000);
        let theirs = ffmpeg_48k(&dir.path().join(name), 576_000);
        assert_close(&whole, &theirs, tolerance, name);
        for (a, b) in [
            (262_000, 263_000),
            (100, 530_000),
            (524_287, 524_289),
            (575_000, 576_000),
        ] {
            assert_eq!(
                &whole[a * 2..b * 2],
                &render(p.as_ref(), a as u64, b as u64)[..],
                "{name}: span {a}-{b}"
            );
        }
    }

    // A 2-hour WAV (sparse: its samples are zeros on disk) trimmed to 30 s
    // opens from its header (the old decoder refused it after an hour of
    // decoding), and a 59-minute one does not make describe or prepare
    // decode it.
    for (seconds, trim_end) in [(7_200u64, Some(900)), (3_540, None)] {
        let data = seconds * 48_000 * 4;
        let header = crate::wav_header(1, 2, 48_000, 16, data as u32);
        let path = dir.path().join("long.wav");
        std::fs::write(&path, &header).expect("header");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(44 + data))
            .expect("sparse");
        let mut track = serde_json::json!({"src": "long.wav", "start": 0});
        if let Some(e) = trim_end {
            track["trim_end"] = serde_json::json!(e);
        }
        let p = bundle(dir.path(), 1_800, track);
        let tail = render(p.as_ref(), 1_439_000, 1_441_000);
        assert!(
            tail.iter().all(|s| *s == 0.0),
            "{seconds} s: silence decoded"
        );
    }
}

/// An MP4 box.
fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    b.extend_from_slice(kind);
    b.extend_from_slice(body);
    b
}

#[test]
fn itunsmpb_without_an_edit_list_trims_as_the_edit_list_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    encode(
        dir.path(),
        "edit.m4a",
        "aevalsrc=0.3*sin(2*PI*(200+3000*t)*t):s=48000:d=1",
        &["-c:a", "aac", "-b:a", "192k"],
    );
    let mut file = std::fs::read(dir.path().join("edit.m4a")).expect("m4a");
    // ffmpeg writes `moov` last: drop its edit list (retyped `free`) and
    // append iTunes' gapless tag (delay 1024, 48 000 samples).
    let find = |hay: &[u8], what: &[u8]| hay.windows(4).rposition(|w| w == what).expect("box");
    let moov = find(&file, b"moov") - 4;
    let edts = find(&file, b"edts");
    file[edts..edts + 4].copy_from_slice(b"free");
    let full = |b: &[u8]| [&[0u8; 4][..], b].concat();
    let text = b" 00000000 00000400 000001C0 000000000000BB80 00000000 00000000";
    let item = [
        mp4_box(b"mean", &full(b"com.apple.iTunes")),
        mp4_box(b"name", &full(b"iTunSMPB")),
        mp4_box(b"data", &[&[0, 0, 0, 1, 0, 0, 0, 0][..], text].concat()),
    ]
    .concat();
    let hdlr = mp4_box(
        b"hdlr",
        &full(&[&[0u8; 4][..], b"mdir", &[0u8; 13][..]].concat()),
    );
    let meta = mp4_box(
        b"meta",
        &full(&[hdlr, mp4_box(b"ilst", &mp4_box(b"----", &item))].concat()),
    );
    file.extend_from_slice(&mp4_box(b"udta", &meta));
    let size = (file.len() - moov) as u32;
    file[moov..moov + 4].copy_from_slice(&size.to_be_bytes());
    std::fs::write(dir.path().join("smpb.m4a"), &file).expect("write");

    let theirs = ffmpeg_48k(&dir.path().join("edit.m4a"), 48_000);
    for name in ["edit.m4a", "smpb.m4a"] {
        let p = bundle(dir.path(), 45, serde_json::json!({"src": name}));
        let ours = render(p.as_ref(), 0, 72_000);
        assert_close(&ours[..96_000], &theirs, 2e-3, name);
        assert!(
            ours[96_000..].iter().all(|s| *s == 0.0),
            "{name}: padding cut"
        );
    }
}
