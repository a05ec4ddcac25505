//! Rendering into a reused buffer (`FrameRenderer::render_frame_reusing`):
//! the renderer only puts the background back where the previous frame drew,
//! and every frame must still come out byte for byte as a fresh
//! `render_frame` into a new buffer, whatever was rendered before it.

use composition::scene::SceneBundle;
use composition::{CompositionSource, Prepared, Props};
use serde_json::{Value, json};
use timebase::FrameIndex;

use crate::{bundle_with, promo_dir, props};

/// The orders a chunk's threads may render frames in: sequential, stride 2
/// (two threads' frames back to back), backwards, shuffled, and each frame
/// twice.
fn orders(frames: &[u64]) -> Vec<(&'static str, Vec<u64>)> {
    let n = frames.len();
    let stride: Vec<u64> = (0..2)
        .flat_map(|s| frames.iter().copied().skip(s).step_by(2))
        .collect();
    let mut shuffled = frames.to_vec();
    let mut x = 0x9e37_79b9_u32;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        shuffled.swap(i, x as usize % (i + 1));
    }
    let twice = frames.iter().flat_map(|&f| [f, f]).collect();
    vec![
        ("sequential", frames.to_vec()),
        ("stride 2", stride),
        ("backwards", frames.iter().rev().copied().collect()),
        ("shuffled", shuffled),
        ("twice", twice),
    ]
}

/// A fresh render of `frame` into a new buffer by a new renderer.
fn fresh(p: &dyn Prepared, frame: u64) -> Vec<u8> {
    let mut rgba = vec![0u8; p.meta().frame_bytes()];
    p.frame_renderer()
        .expect("renderer")
        .render_frame(FrameIndex(frame), &mut rgba)
        .expect("fresh render");
    rgba
}

/// Fails naming the first pixel that differs.
#[track_caller]
fn assert_same(got: &[u8], want: &[u8], width: u32, what: &str) {
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        let px = i / 4;
        let (x, y) = (px % width as usize, px / width as usize);
        let at = px * 4;
        panic!(
            "{what}: pixel ({x}, {y}) is {:?}, a fresh render gives {:?}",
            &got[at..at + 4],
            &want[at..at + 4]
        );
    }
}

/// Renders `frames` of `p` in every order of [`orders`] through one renderer
/// and one reused buffer and checks each against a fresh render.
#[track_caller]
fn check_orders(p: &dyn Prepared, frames: &[u64], name: &str) {
    let want: Vec<Vec<u8>> = frames.iter().map(|&f| fresh(p, f)).collect();
    let width = p.meta().width;
    for (order, list) in orders(frames) {
        let mut r = p.frame_renderer().expect("renderer");
        let mut rgba = vec![0u8; p.meta().frame_bytes()];
        let mut before = None;
        for f in list {
            r.render_frame_reusing(FrameIndex(f), &mut rgba)
                .expect("renders");
            let i = frames.iter().position(|&x| x == f).expect("a listed frame");
            let what = format!("{name}, {order}: frame {f} after {before:?}");
            assert_same(&rgba, &want[i], width, &what);
            before = Some(f);
        }
    }
}

/// A bundle with one composition `c` of `w × h`, 24 frames at 24 fps, the
/// promo's font and badge.
fn scene(layers: Value, w: u32, h: u32) -> tempfile::TempDir {
    bundle_with(&json!({"version": 1, "fonts": ["DejaVuSans-Bold.ttf"],
        "compositions": [{"id": "c", "width": w, "height": h, "fps": 24, "duration": 24,
            "props": {"subs": ""}, "layers": layers}]}))
}

/// Checks every frame of `layers` (over a static gradient background unless
/// `background` is false) in every order.
#[track_caller]
fn check_layers(name: &str, layers: Value, background: bool, p: Props) {
    let mut all = Vec::new();
    if background {
        all.push(
            json!({"type": "linear-gradient", "name": "Bg", "from": [0, 0], "to": [96, 64],
            "stops": [{"offset": 0, "color": "#1e3a8a"}, {"offset": 1, "color": "#9333ea"}]}),
        );
    }
    all.extend(layers.as_array().cloned().unwrap_or_default());
    let dir = scene(Value::Array(all), 96, 64);
    let bundle = SceneBundle::open(dir.path()).expect("bundle opens");
    let prepared = bundle
        .composition("c")
        .expect("c")
        .prepare(&p)
        .expect("prepare");
    let frames: Vec<u64> = (0..24).collect();
    check_orders(prepared.as_ref(), &frames, name);
}

/// Keyframes of `value` from frame 0 to `to` at frame 23.
fn keys(from: Value, to: Value) -> Value {
    json!({"keyframes": [{"frame": 0, "value": from}, {"frame": 23, "value": to}]})
}

#[test]
fn shapes_that_move_stroke_blend_and_leave_the_frame() {
    let layers = json!([
        {"type": "rect", "name": "Rect", "size": [30, 20], "radius": 6, "anchor": [15, 10],
         "fill": "#f59e0b", "stroke": {"color": "#ffffff", "width": keys(json!(1), json!(7))},
         "position": keys(json!([-30, 10]), json!([130, 50])), "rotation": keys(json!(0), json!(135))},
        {"type": "ellipse", "name": "Grows", "size": [10, 6], "anchor": [5, 3], "position": [70, 40],
         "fill": "#22c55e80", "stroke": {"color": "#000000", "width": 0.3},
         "scale": keys(json!([0.2, 0.2]), json!([12, 3]))},
        // A 33° corner: its miter reaches 3.5 half-widths past the point.
        {"type": "path", "name": "Miter", "d": "M 0 0 L 20 6 L 0 12",
         "stroke": {"color": "#e11d48", "width": 6}, "position": keys(json!([10, 40]), json!([50, 5])),
         "rotation": keys(json!(0), json!(-60))},
        // Sharper than the miter limit: bevelled.
        {"type": "path", "name": "Spike", "d": "M 0 0 L 30 2 L 0 4",
         "stroke": {"color": "#22d3ee", "width": 5}, "position": keys(json!([60, 60]), json!([20, 5]))},
        {"type": "path", "name": "Hairline", "d": "M 0 0 C 20 -10 40 30 60 0",
         "stroke": {"color": "#ffffff", "width": 0.2}, "position": keys(json!([5, 30]), json!([40, 32]))},
        {"type": "solid", "name": "Multiply", "color": "#80ff80", "size": [12, 12],
         "blend": "multiply", "position": keys(json!([90, 60]), json!([-10, -10]))},
        {"type": "radial-gradient", "name": "Glow", "center": [10, 10], "radius": keys(json!(2), json!(10)),
         "size": [20, 20], "blend": "screen", "position": keys(json!([40, 0]), json!([60, 40])),
         "stops": [{"offset": 0, "color": "#ffffff"}, {"offset": 1, "color": "#ffffff00"}]},
        {"type": "linear-gradient", "name": "Bar", "from": [0, 0], "to": [8, 0], "size": [8, 64],
         "stops": [{"offset": 0, "color": "#000000"}, {"offset": 1, "color": "#00ffff"}],
         "position": keys(json!([-8, 0]), json!([100, 0])), "blend": "difference"},
        {"type": "rect", "name": "Blinks", "size": [14, 14], "fill": "#ff0000", "position": [3, 3],
         "in": 5, "out": 12},
        {"type": "rect", "name": "Fades", "size": [20, 8], "fill": "#0000ff", "position": [60, 2],
         "opacity": {"keyframes": [{"frame": 0, "value": 1}, {"frame": 8, "value": 0},
                                    {"frame": 14, "value": 0}, {"frame": 23, "value": 1}]}},
        {"type": "rect", "name": "Vanishes", "size": [10, 10], "fill": "#ffff00", "position": [40, 30],
         "anchor": [5, 5], "scale": keys(json!(1), json!(0))}
    ]);
    check_layers("shapes", layers, true, Props::new());
}

#[test]
fn layers_that_settle_are_kept_or_drawn_again_over_what_moves() {
    // After the first dynamic layer nothing is background: the static and
    // settled layers below are kept between frames, and drawn again
    // wherever a moving layer passes under or over them.
    let layers = json!([
        {"type": "rect", "name": "Mover", "size": [16, 16], "fill": "#f59e0b",
         "position": keys(json!([-16, 24]), json!([96, 24]))},
        // Static, half transparent, across the mover's path: drawn again
        // (over what the mover leaves) on every frame the mover touches it.
        {"type": "rect", "name": "Glass", "size": [20, 40], "fill": "#ffffff80", "position": [38, 12]},
        // Settles at frame 8 over the path, then kept.
        {"type": "text", "name": "Label", "text": "Hi", "font": "DejaVu Sans", "weight": 700,
         "font_size": 14, "color": "white", "size": [40, 16], "position": [30, 26],
         "opacity": {"keyframes": [{"frame": 0, "value": 0}, {"frame": 8, "value": 1}]}},
        // Blends with whatever is under it once it settles.
        {"type": "solid", "name": "Tint", "color": "#80ff80", "size": [30, 10], "blend": "multiply",
         "position": {"keyframes": [{"frame": 0, "value": [0, 0]}, {"frame": 4, "value": [50, 28]}]}},
        // Settled far from everything: never drawn again.
        {"type": "ellipse", "name": "Corner", "size": [8, 8], "fill": "#22c55e", "position": [86, 54]},
        // Shows only on frames 10-15, over the path.
        {"type": "rect", "name": "Flash", "size": [10, 30], "fill": "#e11d48", "position": [60, 10],
         "in": 10, "out": 16},
        // Moves over the static ones, then stops on them.
        {"type": "ellipse", "name": "Lands", "size": [12, 12], "fill": "#0000ff",
         "position": {"keyframes": [{"frame": 0, "value": [0, 50]}, {"frame": 14, "value": [40, 20]}]}}
    ]);
    check_layers("settled", layers.clone(), true, Props::new());
    check_layers("settled, no background", layers, false, Props::new());
}

#[test]
fn images_scaled_rotated_and_moved_by_whole_pixels() {
    let layers = json!([
        {"type": "image", "name": "Spin", "src": "badge.png", "size": [24, 24], "anchor": [12, 12],
         "position": keys(json!([0, 0]), json!([100, 70])), "rotation": keys(json!(0), json!(200)),
         "scale": keys(json!([0.5, 0.5]), json!([2, 1]))},
        // A scale-1 draw on whole pixels (the nearest filter) and a faded
        // blend.
        {"type": "image", "name": "Whole", "src": "badge.png", "size": [20, 20], "fit": "cover",
         "position": {"keyframes": [{"frame": 0, "value": [70, 40], "easing": "hold"},
                                     {"frame": 12, "value": [5, 10]}]}},
        {"type": "image", "name": "Screen", "src": "badge.png", "size": [32, 16], "fit": "fill",
         "blend": "screen", "opacity": 0.5, "position": keys(json!([40, -20]), json!([40, 60]))}
    ]);
    check_layers("images", layers, true, Props::new());
}

#[test]
fn text_with_effects_animation_clipping_and_captions() {
    let text = |name: &str, extra: Value| {
        let mut l = json!({"type": "text", "name": name, "text": "Hey Ada", "font": "DejaVu Sans",
            "weight": 700, "font_size": 16, "color": "white"});
        if let (Some(o), Value::Object(e)) = (l.as_object_mut(), extra) {
            o.extend(e);
        }
        l
    };
    let srt = "1\n00:00:00,100 --> 00:00:00,400\nHello there\n\n2\n00:00:00,400 --> 00:00:00,800\nSecond <i>cue</i>\n";
    let layers = json!([
        text("Plain", json!({"position": keys(json!([-40, 0]), json!([80, 20])),
            "rotation": keys(json!(0), json!(30))})),
        text("Effects", json!({"position": keys(json!([10, 40]), json!([30, 10])),
            "stroke": {"color": "#e11d48", "width": keys(json!(1), json!(4))},
            "shadow": {"color": "#000000", "offset": keys(json!([0, 0]), json!([8, 6])),
                       "blur": keys(json!(0), json!(6))}})),
        text("Kinetic", json!({"position": [0, 44], "size": [96, 20], "align": "center",
            "animate": {"by": "character", "stagger": 2,
                "opacity": {"keyframes": [{"frame": 0, "value": 0}, {"frame": 4, "value": 1}]},
                "offset": {"keyframes": [{"frame": 0, "value": [0, 20]}, {"frame": 6, "value": [0, 0]}]},
                "rotation": {"keyframes": [{"frame": 0, "value": -40}, {"frame": 6, "value": 0}]}}})),
        text("Clipped", json!({"position": keys(json!([60, 0]), json!([20, 30])), "size": [30, 12],
            "overflow": "clip", "shadow": {"color": "#ffffff80", "offset": [3, 3], "blur": 2},
            "gradient": {"type": "linear-gradient", "from": [0, 0], "to": [40, 0],
                "stops": [{"offset": 0, "color": "#facc15"}, {"offset": 1, "color": "#22d3ee"}]}})),
        {"type": "captions", "name": "Subs", "text": "{subs}", "font": "DejaVu Sans", "weight": 700,
         "font_size": 10, "color": "white", "size": [90, 20], "position": [3, 40], "align": "center",
         "highlight": "#22c55e", "stroke": {"color": "#000", "width": 1},
         "shadow": {"color": "#000", "offset": [1, 1], "blur": 1}}
    ]);
    check_layers("text", layers, true, props(json!({"subs": srt})));
}

#[test]
fn groups_drawn_through_or_composited_with_clip_opacity_and_blend() {
    let child = |name: &str, from: Value, to: Value| {
        json!({"type": "rect", "name": name, "size": [16, 10], "fill": "#f59e0b",
            "stroke": {"color": "#ffffff", "width": 2}, "position": keys(from, to),
            "rotation": keys(json!(0), json!(90))})
    };
    let layers = json!([
        // Drawn straight into the frame: its children's bounds count.
        {"type": "group", "name": "Through", "position": keys(json!([0, 0]), json!([30, 10])),
         "time_offset": 4,
         "layers": [child("A", json!([-10, 5]), json!([50, 40])),
                    {"type": "group", "name": "Inner", "scale": keys(json!(1), json!(2)),
                     "layers": [child("B", json!([60, 40]), json!([0, 0]))]}]},
        {"type": "group", "name": "Clipped", "position": [20, 10], "clip": [40, 30],
         "rotation": keys(json!(0), json!(20)),
         "layers": [child("C", json!([-20, 0]), json!([60, 30]))]},
        {"type": "group", "name": "Faded", "opacity": keys(json!(0.2), json!(1)),
         "layers": [child("D", json!([80, 50]), json!([10, 10]))]},
        {"type": "group", "name": "Blended", "blend": "overlay", "in": 6, "out": 18,
         "layers": [child("E", json!([50, 0]), json!([50, 60]))]}
    ]);
    check_layers("groups", layers, true, Props::new());
}

#[test]
fn scenes_without_a_static_background_restore_transparent_black() {
    let layers = json!([
        {"type": "rect", "name": "First", "size": [30, 20], "fill": "#f59e0b80",
         "position": keys(json!([-10, -10]), json!([80, 50]))},
        {"type": "solid", "name": "Flash", "color": "#ffffff", "in": 10, "out": 11},
        {"type": "ellipse", "name": "Dot", "size": [9, 9], "fill": "#22c55e",
         "position": keys(json!([90, 0]), json!([0, 60]))}
    ]);
    check_layers("no background", layers, false, Props::new());
}

#[test]
fn the_promo_renders_the_same_through_a_reused_buffer() {
    let bundle = SceneBundle::open(&promo_dir()).expect("promo opens");
    let prepared = bundle
        .composition("promo")
        .expect("promo")
        .prepare(&props(json!({"name": "Grace"})))
        .expect("prepare");
    // The title fading and moving in, the subtitle appearing at 45, the
    // badge's pulse, the square at far apart angles.
    check_orders(
        prepared.as_ref(),
        &[0, 1, 29, 30, 44, 45, 150, 299],
        "promo",
    );
}

/// A 40×30 scene whose only dynamic layer stays inside x 10-30, y 10-20: the
/// pixel (0, 0) is never drawn on after the background.
fn small(dir: &tempfile::TempDir) -> std::sync::Arc<dyn Prepared> {
    SceneBundle::open(dir.path())
        .expect("bundle opens")
        .composition("c")
        .expect("c")
        .prepare(&Props::new())
        .expect("prepare")
}

#[test]
fn the_buffer_is_trusted_only_as_promised() {
    let dir = scene(
        json!([{"type": "solid", "name": "Bg", "color": "#336699"},
               {"type": "rect", "name": "Moves", "size": [4, 4], "fill": "#ffffff",
                "position": keys(json!([12, 12]), json!([24, 14]))}]),
        40,
        30,
    );
    let p = small(&dir);
    let width = p.meta().width;
    let mut r = p.frame_renderer().expect("renderer");
    let mut rgba = vec![0u8; p.meta().frame_bytes()];
    let tamper = |rgba: &mut Vec<u8>| rgba[..4].copy_from_slice(&[1, 2, 3, 4]);
    r.render_frame_reusing(FrameIndex(0), &mut rgba)
        .expect("renders");
    assert_same(&rgba, &fresh(p.as_ref(), 0), width, "frame 0");
    // Only the region the last frame drew is repainted: a pixel written
    // behind the renderer's back elsewhere stays (the promise was broken).
    tamper(&mut rgba);
    r.render_frame_reusing(FrameIndex(1), &mut rgba)
        .expect("renders");
    assert_eq!(
        rgba[..4],
        [1, 2, 3, 4],
        "the background is not copied whole"
    );
    assert_same(&rgba[4..], &fresh(p.as_ref(), 1)[4..], width, "frame 1");
    // Forgotten: the whole background again.
    r.forget_previous();
    r.render_frame_reusing(FrameIndex(2), &mut rgba)
        .expect("renders");
    assert_same(&rgba, &fresh(p.as_ref(), 2), width, "after forget_previous");
    // A failed frame leaves nothing trusted.
    tamper(&mut rgba);
    let err = r
        .render_frame_reusing(FrameIndex(24), &mut rgba)
        .expect_err("outside the composition");
    assert_eq!(
        err.to_string(),
        "frame 24: outside the composition: frames run 0-23"
    );
    r.render_frame_reusing(FrameIndex(3), &mut rgba)
        .expect("renders");
    assert_same(&rgba, &fresh(p.as_ref(), 3), width, "after an error");
    // `render_frame` in between, into another buffer: trust nothing.
    tamper(&mut rgba);
    let mut other = vec![0u8; rgba.len()];
    r.render_frame(FrameIndex(4), &mut other).expect("renders");
    r.render_frame_reusing(FrameIndex(5), &mut rgba)
        .expect("renders");
    assert_same(&rgba, &fresh(p.as_ref(), 5), width, "after render_frame");
    // Another buffer than last time is never trusted.
    r.render_frame_reusing(FrameIndex(6), &mut rgba)
        .expect("renders");
    let mut moved = rgba.clone();
    tamper(&mut moved);
    r.render_frame_reusing(FrameIndex(7), &mut moved)
        .expect("renders");
    assert_same(&moved, &fresh(p.as_ref(), 7), width, "another buffer");
}
