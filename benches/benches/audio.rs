//! Scene audio mixing (`Prepared::render_audio`: 48 kHz stereo `f32`, every
//! sample from its global index): the promo's track for one second and for
//! one chunk's worth (19 frames at 30 fps, a 300-frame render in 16
//! chunks), and four overlapping tracks with keyframed volume, fades, a loop
//! and a trim for one second.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::hint::black_box;
use std::path::Path;

use composition::scene::SceneBundle;
use composition::{AUDIO_CHANNELS, CompositionSource, Prepared, Props, SAMPLE_RATE};
use criterion::{Criterion, criterion_group, criterion_main};
use timebase::{FrameIndex, SampleSpan};

/// The promo's `tone.wav` as four tracks that overlap everywhere.
fn four_tracks(dir: &Path) -> SceneBundle {
    std::fs::copy(
        montage_benches::reference_bundle().join("tone.wav"),
        dir.join("tone.wav"),
    )
    .expect("copy tone.wav");
    let volume = serde_json::json!({"keyframes": [{"frame": 0, "value": 1.0}, {"frame": 300, "value": 0.2}]});
    let scene = serde_json::json!({"version": 1, "compositions": [{
    "id": "mix", "width": 64, "height": 36, "fps": 30, "duration": 300,
    "layers": [{"type": "solid", "name": "Bg", "color": "#000000"}],
    "audio": [
        {"name": "A", "src": "tone.wav", "start": 0},
        {"name": "B", "src": "tone.wav", "start": 0, "volume": volume},
        {"name": "C", "src": "tone.wav", "start": 0, "loop": true, "trim_start": 5, "trim_end": 20},
        {"name": "D", "src": "tone.wav", "start": 0, "fade_in": 30, "fade_out": 30, "volume": 0.5}
    ]}]});
    std::fs::write(dir.join("scene.json"), scene.to_string()).expect("write scene");
    SceneBundle::open(dir).expect("mix bundle opens")
}

fn prepared(source: &dyn CompositionSource, id: &str) -> std::sync::Arc<dyn Prepared> {
    source
        .composition(id)
        .expect("composition")
        .prepare(&Props::new())
        .expect("prepare")
}

fn bench_span(c: &mut Criterion, name: &str, prepared: &dyn Prepared, first: u64, last: u64) {
    let fps = prepared.meta().fps;
    let span = SampleSpan::new(
        fps.first_sample_of(FrameIndex(first), SAMPLE_RATE).0,
        fps.first_sample_of(FrameIndex(last + 1), SAMPLE_RATE).0,
    )
    .expect("a non-empty span");
    let mut out = vec![0f32; span.len() as usize * AUDIO_CHANNELS];
    c.bench_function(name, |b| {
        b.iter(|| {
            prepared
                .render_audio(span, black_box(&mut out))
                .expect("audio renders")
        })
    });
}

fn mixing(c: &mut Criterion) {
    let promo = SceneBundle::open(&montage_benches::reference_bundle()).expect("promo opens");
    let promo = prepared(&promo, "promo");
    bench_span(c, "promo audio 1 s", promo.as_ref(), 30, 59);
    bench_span(
        c,
        "promo audio 1 chunk (19 frames)",
        promo.as_ref(),
        133,
        151,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mix = four_tracks(dir.path());
    bench_span(
        c,
        "4 tracks audio 1 s",
        prepared(&mix, "mix").as_ref(),
        30,
        59,
    );
}

criterion_group!(benches, mixing);
criterion_main!(benches);
