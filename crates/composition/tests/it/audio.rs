//! Audio: spans equal the whole render, mixing (start, trim, loop, volume,
//! fades, clamping), resampling, and decoding of every supported format
//! (files made by Debian's ffmpeg).

use std::process::Command;

use composition::scene::SceneBundle;
use composition::{CompositionSource, Prepared, Props};
use proptest::prelude::*;
use testkit::media;
use timebase::SampleSpan;

use crate::{bundle_with, promo_dir};

fn audio(p: &dyn Prepared, start: u64, end: u64) -> Vec<f32> {
    let mut out = vec![0.0; ((end - start) * 2) as usize];
    p.render_audio(SampleSpan::new(start, end).expect("span"), &mut out)
        .expect("audio");
    out
}

/// A 16-bit PCM WAV.
fn wav(channels: u16, rate: u32, samples: &[i16]) -> Vec<u8> {
    let mut v = crate::wav_header(1, channels, rate, 16, (samples.len() * 2) as u32);
    for s in samples {
        v.extend_from_slice(&s.to_le_bytes());
    }
    v
}

fn promo_prepared() -> std::sync::Arc<dyn Prepared> {
    SceneBundle::open(&promo_dir())
        .expect("promo")
        .composition("promo")
        .expect("promo")
        .prepare(&Props::new())
        .expect("prepare")
}

#[test]
fn promo_audio_is_tone_wav_as_ffmpeg_decodes_it() {
    let p = promo_prepared();
    let ours = audio(p.as_ref(), 0, 480_000);
    let theirs = media::decode_audio(promo_dir().join("tone.wav"));
    assert_eq!(
        theirs.len() * 2,
        ours.len(),
        "tone.wav is 10.000 s of stereo"
    );
    media::assert_samples_within(&theirs, &ours, 2, 1e-6, "ffmpeg against ours");
    // −12 dBFS peak.
    let peak = ours.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    assert!((peak - 0.251).abs() < 0.01, "peak {peak}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn promo_spans_equal_the_whole(a in 0u64..96_000, len in 1u64..20_000) {
        let p = promo_prepared();
        let whole = audio(p.as_ref(), 0, 116_000);
        let part = audio(p.as_ref(), a, a + len);
        prop_assert_eq!(&whole[(a * 2) as usize..((a + len) * 2) as usize], &part[..]);
    }
}

fn mix_scene() -> serde_json::Value {
    serde_json::json!({"version": 1, "compositions": [{
        "id": "mix", "width": 16, "height": 16, "fps": 30, "duration": 30,
        "audio": [
            // 0.5 constant, mono at 24 kHz: resampled, starts at frame 3, fades in over 3 frames.
            {"name": "Low", "src": "half24k.wav", "start": 3, "fade_in": 3},
            // 0.75 constant, looped after trimming, volume keyframed, fade out.
            {"name": "Loop", "src": "ramp.wav", "trim_start": 1, "trim_end": 2, "loop": true,
             "volume": {"keyframes": [{"frame": 0, "value": 1.0}, {"frame": 10, "value": 2.0}]},
             "fade_out": 5, "end": 25}
        ]
    }]})
}

fn mix_bundle() -> (tempfile::TempDir, std::sync::Arc<dyn Prepared>) {
    let dir = bundle_with(&mix_scene());
    std::fs::write(
        dir.path().join("half24k.wav"),
        wav(1, 24_000, &vec![16_384i16; 24_000]),
    )
    .expect("wav");
    // Frame k of 1600 samples holds the value k·1000 (ramp of steps).
    let ramp: Vec<i16> = (0..4 * 1600)
        .flat_map(|i| {
            let v = (i / 1600) as i16 * 1000;
            [v, -v]
        })
        .collect();
    std::fs::write(dir.path().join("ramp.wav"), wav(2, 48_000, &ramp)).expect("wav");
    let p = SceneBundle::open(dir.path())
        .expect("mix bundle")
        .composition("mix")
        .expect("mix")
        .prepare(&Props::new())
        .expect("prepare");
    (dir, p)
}

#[test]
fn tracks_mix_with_start_trim_loop_volume_fades_and_clamp() {
    let (_dir, p) = mix_bundle();
    let all = audio(p.as_ref(), 0, 48_000);
    let at = |n: usize, ch: usize| all[n * 2 + ch];
    let loop_value = 1000.0 / 32768.0;
    // Before frame 3 only the looped trim (value 1000, frame 1 of the file) plays, at volume 1 at sample 0.
    assert_eq!(at(0, 0), loop_value);
    assert_eq!(at(0, 1), -loop_value);
    // At frame 5 (sample 8000) the volume is 1.5 and the low track is 2/3 faded in.
    let n = 8000;
    let low = 0.5f32 * ((n - 4800) as f64 / 4800.0) as f32;
    let expected = low + loop_value * 1.5f32;
    assert!(
        (at(n, 0) - expected).abs() < 1e-6,
        "{} vs {expected}",
        at(n, 0)
    );
    // From frame 10 the loop track is at volume 2; after frame 25 (sample 40000) it has stopped.
    assert!((at(20_000, 0) - (0.5 + loop_value * 2.0)).abs() < 1e-6);
    assert_eq!(at(40_000, 0), 0.5);
    // Fading out: at 4 samples before the end the gain is 2 · 4/8000.
    let g = (2.0 * 4.0 / 8000.0) as f32;
    assert!((at(39_996, 0) - (0.5 + loop_value * g)).abs() < 1e-6);
    // The low file lasts 1 s: from frame 3 to sample 4800 + 48000, past the composition.
}

#[test]
fn overflow_clamps_instead_of_wrapping() {
    let scene = serde_json::json!({"version": 1, "compositions": [{
        "id": "loud", "width": 16, "height": 16, "fps": 25, "duration": 10,
        "audio": [{"src": "full.wav", "volume": 3.0}, {"src": "full.wav"}]
    }]});
    let dir = bundle_with(&scene);
    let full: Vec<i16> = (0..19_200).flat_map(|_| [32_767i16, -32_768]).collect();
    std::fs::write(dir.path().join("full.wav"), wav(2, 48_000, &full)).expect("wav");
    let p = SceneBundle::open(dir.path())
        .expect("bundle")
        .composition("loud")
        .expect("loud")
        .prepare(&Props::new())
        .expect("prepare");
    let out = audio(p.as_ref(), 0, 19_200);
    assert!(out.chunks_exact(2).all(|s| s == [1.0, -1.0]));
}

#[test]
fn every_supported_format_decodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let formats = [
        ("mp3", "libmp3lame"),
        ("flac", "flac"),
        ("ogg", "libvorbis"),
        ("m4a", "aac"),
        ("wav", "pcm_s16le"),
    ];
    let mut comps = Vec::new();
    for (ext, codec) in formats {
        let file = dir.path().join(format!("sine.{ext}"));
        let st = Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=44100:duration=0.5",
                "-ac",
                "2",
                "-c:a",
                codec,
            ])
            .arg(&file)
            .status()
            .expect("ffmpeg runs");
        assert!(st.success(), "ffmpeg could not make {ext}");
        comps.push(
            serde_json::json!({"id": ext, "width": 16, "height": 16, "fps": 30, "duration": 30,
            "audio": [{"src": format!("sine.{ext}")}]}),
        );
    }
    std::fs::write(
        dir.path().join("scene.json"),
        serde_json::json!({"version": 1, "compositions": comps}).to_string(),
    )
    .expect("scene");
    let bundle = SceneBundle::open(dir.path()).expect("bundle with every format");
    for (ext, _) in formats {
        let p = bundle
            .composition(ext)
            .expect("comp")
            .prepare(&Props::new())
            .expect("prepare");
        let out = audio(p.as_ref(), 0, 48_000);
        // Sound in the middle of the half second, silence after it.
        let rms = |a: usize, b: usize| {
            (out[a * 2..b * 2].iter().map(|s| s * s).sum::<f32>() / ((b - a) * 2) as f32).sqrt()
        };
        let mid = rms(10_000, 20_000);
        // ffmpeg's sine is 1/8 full scale, upmixed at −3 dB: RMS ≈ 0.0625.
        assert!(
            (mid - 0.0625).abs() < 0.01,
            "{ext}: rms {mid} in the middle"
        );
        assert_eq!(rms(30_000, 48_000), 0.0, "{ext}: silence after the file");
    }
}
