//! Rendering cost: time per 1080p `promo` frame on one thread, and per layer
//! type (each layer alone on a 1080p frame, animated so it is drawn every
//! frame rather than cached as a static background).
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::hint::black_box;
use std::path::{Path, PathBuf};

use composition::scene::SceneBundle;
use composition::{CompositionSource, Props};
use criterion::{Criterion, criterion_group, criterion_main};
use timebase::FrameIndex;

fn promo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/promo")
}

/// One 1080p composition per layer type, in a temporary bundle that borrows
/// the promo's font and image.
fn layer_bundle(dir: &Path) -> SceneBundle {
    for f in ["DejaVuSans-Bold.ttf", "badge.png"] {
        std::fs::copy(promo_dir().join(f), dir.join(f)).expect("copy promo asset");
    }
    let fade = serde_json::json!({"keyframes": [{"frame": 0, "value": 0.5}, {"frame": 100, "value": 1.0}]});
    let layers = [
        (
            "solid",
            serde_json::json!({"type": "solid", "color": "#336699"}),
        ),
        (
            "linear-gradient",
            serde_json::json!({"type": "linear-gradient", "from": [0, 0], "to": [0, 1080],
            "stops": [{"offset": 0, "color": "#1e3a8a"}, {"offset": 1, "color": "#9333ea"}]}),
        ),
        (
            "radial-gradient",
            serde_json::json!({"type": "radial-gradient", "center": [960, 540], "radius": 800,
            "stops": [{"offset": 0, "color": "#ffffff"}, {"offset": 1, "color": "#000000"}]}),
        ),
        (
            "rect",
            serde_json::json!({"type": "rect", "size": [300, 300], "radius": 40, "fill": "#f59e0b",
            "anchor": [150, 150], "position": [1600, 540],
            "rotation": {"keyframes": [{"frame": 0, "value": 0}, {"frame": 300, "value": 360}]}}),
        ),
        (
            "ellipse",
            serde_json::json!({"type": "ellipse", "size": [400, 300], "fill": "#22c55e",
            "stroke": {"color": "#000000", "width": 8}, "position": [700, 400]}),
        ),
        (
            "path",
            serde_json::json!({"type": "path", "d": "M 0 0 L 200 0 Q 300 100 200 200 C 150 300 50 300 0 200 Z",
            "fill": "#ef4444", "position": [900, 400]}),
        ),
        (
            "text",
            serde_json::json!({"type": "text", "text": "Hello, Ada!", "font": "DejaVu Sans", "weight": 700,
            "font_size": 96, "line_height": 1.0, "color": "white", "align": "center", "size": [1920, 96],
            "position": [0, 480]}),
        ),
        (
            "image",
            serde_json::json!({"type": "image", "src": "badge.png", "anchor": [128, 128], "position": [228, 228],
            "scale": {"keyframes": [{"frame": 0, "value": 1.0}, {"frame": 30, "value": 1.2}]}}),
        ),
        (
            "group",
            serde_json::json!({"type": "group", "clip": [800, 600], "position": [100, 100], "layers": [
            {"type": "solid", "name": "Fill", "color": "#0ea5e9", "size": [800, 600]},
            {"type": "ellipse", "name": "Dot", "size": [200, 200], "fill": "#f43f5e", "position": [300, 200]}]}),
        ),
    ];
    let comps: Vec<serde_json::Value> = layers
        .into_iter()
        .map(|(id, mut layer)| {
            layer["name"] = id.into();
            layer["opacity"] = fade.clone();
            serde_json::json!({"id": id, "width": 1920, "height": 1080, "fps": 30, "duration": 300,
                "layers": [layer]})
        })
        .collect();
    let scene =
        serde_json::json!({"version": 1, "fonts": ["DejaVuSans-Bold.ttf"], "compositions": comps});
    std::fs::write(dir.join("scene.json"), scene.to_string()).expect("write scene");
    SceneBundle::open(dir).expect("bench bundle opens")
}

/// Renders frame after frame of `id` into one buffer, as `render_frame`
/// (the whole background copied each frame) or, with `reusing`, as the
/// worker's pipeline does (`render_frame_reusing`: only the region the
/// previous frame drew is repainted).
fn bench_composition(
    c: &mut Criterion,
    name: &str,
    source: &dyn CompositionSource,
    id: &str,
    reusing: bool,
) {
    let prepared = source
        .composition(id)
        .expect("composition")
        .prepare(&Props::new())
        .expect("prepare");
    let frames = prepared.meta().duration_frames;
    let mut rgba = vec![0u8; prepared.meta().frame_bytes()];
    let mut renderer = prepared.frame_renderer().expect("renderer");
    let mut f = 0u64;
    c.bench_function(name, |b| {
        b.iter(|| {
            let rgba = black_box(&mut rgba);
            if reusing {
                renderer.render_frame_reusing(FrameIndex(f), rgba)
            } else {
                renderer.render_frame(FrameIndex(f), rgba)
            }
            .expect("frame renders");
            f = (f + 1) % frames;
        })
    });
}

fn rendering(c: &mut Criterion) {
    let promo = SceneBundle::open(&promo_dir()).expect("promo bundle opens");
    bench_composition(c, "promo 1080p frame (1 thread)", &promo, "promo", false);
    bench_composition(
        c,
        "promo 1080p frame, reused buffer (1 thread)",
        &promo,
        "promo",
        true,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let layers = layer_bundle(dir.path());
    for id in layers.ids() {
        bench_composition(c, &format!("layer {id} 1080p"), &layers, &id, false);
    }
}

criterion_group!(benches, rendering);
criterion_main!(benches);
