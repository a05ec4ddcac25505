//! Text as personalised videos use it (issue 19): colour emoji (CBDT from
//! Debian's Noto Color Emoji, COLR v0/v1 from a small fixture font),
//! stroke, shadow and gradient fills, kinetic words rendered from the frame
//! index alone, and captions from SRT/WebVTT.

use composition::scene::SceneBundle;
use composition::{CompositionSource, Props};
use serde_json::{Value, json};
use timebase::FrameIndex;

use crate::golden::check_golden;
use crate::{bundle_with, props, render, root};

/// Debian's `fonts-noto-color-emoji` (scripts/setup.sh installs it).
const NOTO_EMOJI: &str = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf";

/// A bundle with `layers` in one 160×90 composition `c` of 30 frames at
/// 30 fps over a dark background, with the promo's font, Noto Color Emoji
/// and the COLR fixture font.
fn bundle(layers: Value, comp_props: Value) -> tempfile::TempDir {
    let mut all = vec![json!({"type": "solid", "name": "Bg", "color": "#202020"})];
    all.extend(layers.as_array().cloned().unwrap_or_default());
    let scene = json!({"version": 1,
        "fonts": ["DejaVuSans-Bold.ttf", "NotoColorEmoji.ttf", "MontageColrTest.ttf"],
        "compositions": [{"id": "c", "width": 160, "height": 90, "fps": 30, "duration": 30,
            "props": comp_props, "layers": all}]});
    let dir = bundle_with(&scene);
    std::fs::copy(NOTO_EMOJI, dir.path().join("NotoColorEmoji.ttf")).unwrap_or_else(|e| {
        panic!("{NOTO_EMOJI}: {e}; run scripts/setup.sh (fonts-noto-color-emoji)")
    });
    std::fs::copy(
        root().join("tests/fixtures/fonts/MontageColrTest.ttf"),
        dir.path().join("MontageColrTest.ttf"),
    )
    .expect("copy the COLR fixture font");
    dir
}

fn open(dir: &tempfile::TempDir) -> SceneBundle {
    SceneBundle::open(dir.path()).expect("bundle opens")
}

fn px(rgba: &[u8], x: usize, y: usize) -> [u8; 4] {
    let i = (y * 160 + x) * 4;
    [rgba[i], rgba[i + 1], rgba[i + 2], rgba[i + 3]]
}

/// Pixels in the box whose channels differ by more than 80: coloured, not
/// grey (the background and white or black text are grey).
fn coloured(rgba: &[u8], x0: usize, y0: usize, x1: usize, y1: usize) -> usize {
    let mut n = 0;
    for y in y0..y1 {
        for x in x0..x1 {
            let [r, g, b, _] = px(rgba, x, y);
            let (hi, lo) = (r.max(g).max(b), r.min(g).min(b));
            if hi - lo > 80 {
                n += 1;
            }
        }
    }
    n
}

/// Pixels in the box brighter than the background.
fn ink(rgba: &[u8], x0: usize, y0: usize, x1: usize, y1: usize) -> usize {
    let mut n = 0;
    for y in y0..y1 {
        for x in x0..x1 {
            let [r, g, b, _] = px(rgba, x, y);
            if r.max(g).max(b) > 0x40 {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn colour_emoji_from_cbdt_render_in_colour_on_the_baseline() {
    let dir = bundle(
        json!([{"type": "text", "name": "T", "text": "Hi {name}!", "font": "DejaVu Sans",
            "weight": 700, "font_size": 24, "color": "white", "position": [8, 20]}]),
        json!({"name": "Ada 🎉"}),
    );
    let b = open(&dir);
    let rgba = render(&b, "c", &props(json!({})), 0);
    check_golden("text-emoji_f0", 160, 90, &rgba);
    // The party popper is drawn, in colour, right of "Hi Ada".
    let n = coloured(&rgba, 80, 10, 160, 70);
    assert!(n > 200, "only {n} coloured pixels where the emoji is");
    // The text before it stays white and grey.
    assert_eq!(coloured(&rgba, 0, 0, 78, 90), 0);
    // With the layer at half opacity the emoji is fainter, not gone.
    let faded = render(
        &b,
        "c",
        &props(json!({"opacity.T": 0.5, "transform.T.scale": 1.1})),
        0,
    );
    assert!(coloured(&faded, 80, 10, 160, 80) > 100);
    assert_ne!(faded, rgba);
}

#[test]
fn colr_v0_and_v1_glyphs_render_their_layers_and_gradients() {
    let dir = bundle(
        json!([{"type": "text", "name": "T", "text": "ABCx", "font": "Montage Colr Test",
            "font_size": 36, "color": "white", "position": [4, 20]}]),
        json!({}),
    );
    let rgba = render(&open(&dir), "c", &props(json!({})), 0);
    check_golden("text-colr_f0", 160, 90, &rgba);
    // A (COLR v0): the red square's corner, the blue triangle's middle.
    // The em is 36 px in a 43.2 px line box: the baseline is at
    // 20 + 3.6 + 0.8·36 = 52.4 px, the square spans x 7.6-36.4, y 23.6-52.4.
    let [r, g, b, _] = px(&rgba, 9, 26);
    assert!(r > 200 && g < 40 && b < 40, "A's red corner: {r} {g} {b}");
    let [r, g, b, _] = px(&rgba, 22, 45);
    assert!(
        b > 200 && r < 40 && g < 40,
        "A's blue triangle: {r} {g} {b}"
    );
    // B (COLR v1): red at the left of the linear gradient, green at the
    // right, yellow at the radial disc's centre.
    let [r, g, _, _] = px(&rgba, 46, 30);
    assert!(r > 150 && g < 80, "B's left: {r} {g}");
    let [r, g, _, _] = px(&rgba, 69, 30);
    assert!(g > 120 && r < 80, "B's right: {r} {g}");
    let [r, g, b, _] = px(&rgba, 58, 38);
    assert!(r > 200 && g > 180 && b < 80, "B's disc centre: {r} {g} {b}");
    // x is a plain outline: white.
    assert_eq!(px(&rgba, 130, 45)[..3], [255, 255, 255]);
}

#[test]
fn stroke_shadow_and_gradient_fill() {
    let dir = bundle(
        json!([
            {"type": "text", "name": "Outlined", "text": "Ab", "font": "DejaVu Sans", "weight": 700,
             "font_size": 36, "color": "white", "position": [4, 4],
             "stroke": {"color": "#e11d48", "width": 3},
             "shadow": {"color": "#000000", "offset": [4, 4], "blur": 4}},
            {"type": "text", "name": "Gradient", "text": "Cd", "font": "DejaVu Sans", "weight": 700,
             "font_size": 36, "position": [84, 40],
             "gradient": {"type": "linear-gradient", "from": [0, 0], "to": [60, 0],
                 "stops": [{"offset": 0, "color": "#facc15"}, {"offset": 1, "color": "#22d3ee"}]},
             "shadow": {"color": "#ffffff80",
                 "offset": {"keyframes": [{"frame": 0, "value": [0, 0]}, {"frame": 20, "value": [6, 6]}]}}}
        ]),
        json!({}),
    );
    let b = open(&dir);
    let f0 = render(&b, "c", &props(json!({})), 0);
    check_golden("text-effects_f0", 160, 90, &f0);
    let f20 = render(&b, "c", &props(json!({})), 20);
    check_golden("text-effects_f20", 160, 90, &f20);
    // The outline is rose, around white glyphs.
    assert!(coloured(&f0, 0, 0, 80, 50) > 100);
    // The gradient runs from yellow on the left to cyan on the right.
    let yellow = (84..110)
        .flat_map(|x| (40..90).map(move |y| (x, y)))
        .filter(|&(x, y)| {
            let [r, g, b, _] = px(&f0, x, y);
            r > 200 && g > 150 && b < 100
        })
        .count();
    let cyan = (115..160)
        .flat_map(|x| (40..90).map(move |y| (x, y)))
        .filter(|&(x, y)| {
            let [r, g, b, _] = px(&f0, x, y);
            r < 120 && g > 150 && b > 180
        })
        .count();
    assert!(yellow > 30 && cyan > 30, "yellow {yellow}, cyan {cyan}");
    // Rendering is deterministic.
    assert_eq!(render(&b, "c", &props(json!({})), 20), f20);
}

/// A scene of words flying in one after another.
fn kinetic(by: &str, text: &str) -> tempfile::TempDir {
    bundle(
        json!([{"type": "text", "name": "K", "text": text, "font": "DejaVu Sans", "weight": 700,
            "font_size": 24, "color": "white", "size": [160, 60], "position": [0, 20],
            "align": "center",
            "animate": {"by": by, "stagger": 4,
                "opacity": {"keyframes": [{"frame": 0, "value": 0}, {"frame": 6, "value": 1}]},
                "offset": {"keyframes": [{"frame": 0, "value": [0, 20]},
                                         {"frame": 6, "value": [0, 0], "easing": "ease-out-cubic"}]},
                "scale": {"keyframes": [{"frame": 0, "value": 0.5}, {"frame": 6, "value": 1}]},
                "rotation": {"keyframes": [{"frame": 0, "value": -20}, {"frame": 6, "value": 0}]}}}]),
        json!({}),
    )
}

#[test]
fn kinetic_words_render_the_same_in_one_chunk_or_three() {
    let dir = kinetic("word", "one two three");
    let b = open(&dir);
    let comp = b.composition("c").expect("c");
    // One chunk: one renderer, frames 0-29 in order.
    let whole: Vec<Vec<u8>> = {
        let p = comp.prepare(&Props::new()).expect("prepare");
        let mut r = p.frame_renderer().expect("renderer");
        (0..30)
            .map(|f| {
                let mut rgba = vec![0u8; p.meta().frame_bytes()];
                r.render_frame(FrameIndex(f), &mut rgba).expect("render");
                rgba
            })
            .collect()
    };
    // Three chunks, each prepared and rendered on its own, last first.
    let mut chunks = vec![Vec::new(); 3];
    for c in (0..3).rev() {
        let p = comp.prepare(&Props::new()).expect("prepare");
        let mut r = p.frame_renderer().expect("renderer");
        for f in c * 10..c * 10 + 10 {
            let mut rgba = vec![0u8; p.meta().frame_bytes()];
            r.render_frame(FrameIndex(f), &mut rgba).expect("render");
            chunks[c as usize].push(rgba);
        }
    }
    let chunked: Vec<Vec<u8>> = chunks.into_iter().flatten().collect();
    for (f, (a, b)) in whole.iter().zip(&chunked).enumerate() {
        assert!(a == b, "frame {f} differs between one chunk and three");
    }
    check_golden("text-kinetic_f5", 160, 90, &whole[5]);
    // Frame 0 shows nothing yet, frame 4 only the first word (left), frame
    // 29 all three.
    assert_eq!(ink(&whole[0], 0, 0, 160, 90), 0);
    assert!(ink(&whole[4], 0, 0, 75, 90) > 20);
    assert_eq!(ink(&whole[4], 80, 0, 160, 90), 0);
    assert!(ink(&whole[29], 110, 0, 160, 90) > 20);
}

#[test]
fn kinetic_characters_and_right_to_left_words_follow_reading_order() {
    // Hebrew reads right to left: its first word is drawn on the right and
    // appears first.
    let dir = kinetic("word", "שלום עולם");
    let b = open(&dir);
    let f4 = render(&b, "c", &props(json!({})), 4);
    assert!(
        ink(&f4, 80, 0, 160, 90) > 20,
        "the first word, on the right"
    );
    assert_eq!(ink(&f4, 0, 0, 75, 90), 0, "the second word, not yet");
    // By character: at frame 4 one character shows, at frame 8 two.
    let dir = kinetic("character", "ABCD");
    let b = open(&dir);
    let cols = |rgba: &[u8]| (0..160).filter(|&x| ink(rgba, x, 0, x + 1, 90) > 0).count();
    let (f4, f8) = (
        render(&b, "c", &props(json!({})), 4),
        render(&b, "c", &props(json!({})), 8),
    );
    assert!(cols(&f4) > 0 && cols(&f8) > cols(&f4));
    assert_eq!(ink(&f4, 90, 0, 160, 90), 0);
}

fn captions(extra: Value, comp_props: Value) -> tempfile::TempDir {
    let mut layer = json!({"type": "captions", "name": "Subs", "font": "DejaVu Sans",
        "weight": 700, "font_size": 14, "color": "white", "size": [150, 40], "position": [5, 45],
        "align": "center", "stroke": {"color": "#000", "width": 1}});
    if let (Some(o), Value::Object(e)) = (layer.as_object_mut(), extra) {
        o.extend(e);
    }
    bundle(json!([layer]), comp_props)
}

#[test]
fn captions_show_each_cue_for_exactly_its_frames() {
    let srt = "1\n00:00:00,100 --> 00:00:00,500\nHello there\n\n2\n00:00:00,500 --> 00:00:00,900\nSecond cue\n";
    let dir = captions(json!({"text": "{subs}"}), json!({"subs": srt}));
    let b = open(&dir);
    let p = props(json!({}));
    // 0.1 s is frame 3 at 30 fps; 0.5 s frame 15; 0.9 s frame 27.
    let f = |n: u64| render(&b, "c", &p, n);
    assert_eq!(ink(&f(2), 0, 0, 160, 90), 0, "before the first cue");
    let first = f(3);
    assert!(ink(&first, 0, 40, 160, 90) > 50);
    assert_eq!(f(14), first, "the first cue holds to its end");
    let second = f(15);
    assert!(ink(&second, 0, 40, 160, 90) > 50);
    assert_ne!(second, first);
    assert_eq!(ink(&f(27), 0, 0, 160, 90), 0, "after the last cue");
    check_golden("text-captions_f3", 160, 90, &first);
    // Each row of a batch can carry its own captions through the prop.
    let other = render(
        &b,
        "c",
        &props(json!({"subs": "1\n00:00:00,000 --> 00:00:01,000\nOther\n"})),
        3,
    );
    assert_ne!(other, first);
}

#[test]
fn captions_from_a_webvtt_file_highlight_the_spoken_word() {
    let vtt = "WEBVTT\n\n00:00.000 --> 00:01.000\nRed <00:00.500>green\n";
    let dir = captions(
        json!({"src": "subs.vtt", "highlight": "#22c55e", "stroke": null}),
        json!({}),
    );
    std::fs::write(dir.path().join("subs.vtt"), vtt).expect("write vtt");
    let b = open(&dir);
    let p = props(json!({}));
    let green = |rgba: &[u8], x0: usize, x1: usize| {
        (x0..x1)
            .flat_map(|x| (40..90).map(move |y| (x, y)))
            .filter(|&(x, y)| {
                let [r, g, b, _] = px(rgba, x, y);
                g > 150 && r < 100 && b < 140
            })
            .count()
    };
    // Frame 0: the first word is spoken (green, on the left); frame 15
    // (0.5 s): the second.
    let (f0, f15) = (render(&b, "c", &p, 0), render(&b, "c", &p, 15));
    check_golden("text-captions-highlight_f15", 160, 90, &f15);
    assert!(green(&f0, 0, 70) > 20 && green(&f0, 72, 160) == 0);
    assert!(green(&f15, 72, 160) > 20 && green(&f15, 0, 70) == 0);
}

#[test]
fn bad_captions_name_the_file_and_line() {
    let dir = captions(json!({"src": "subs.srt"}), json!({}));
    std::fs::write(
        dir.path().join("subs.srt"),
        "1\n00:00:01,000 --> 00:00:02,000\nfine\n\n2\n00:00:03,000 -> 00:00:04,000\nbad\n",
    )
    .expect("write srt");
    let e = SceneBundle::open(dir.path())
        .expect_err("bad timing")
        .to_string();
    assert_eq!(
        e,
        "scene.json: compositions[0]: composition `c`: layer `Subs`: captions `subs.srt`: line 5: expected a cue timing `00:00:01,000 --> 00:00:02,000`, found `2`"
    );
    let dir = captions(json!({"src": "subs.srt", "text": "x"}), json!({}));
    let e = SceneBundle::open(dir.path()).expect_err("both").to_string();
    assert!(e.ends_with("a captions layer needs `src` (an SRT or WebVTT file) or `text` (the captions themselves), not both"), "{e}");
}

#[test]
fn variable_fonts_draw_the_weight_asked_for() {
    let scene = |weight: u64, text: &str| {
        let s = json!({"version": 1, "fonts": ["DejaVuSans-Bold.ttf", "MontageVarTest.ttf"],
            "compositions": [{"id": "c", "width": 160, "height": 90, "fps": 30, "duration": 1,
                "layers": [{"type": "solid", "name": "Bg", "color": "#202020"},
                    {"type": "text", "name": "T", "text": text, "font": "Montage Var Test",
                     "weight": weight, "font_size": 50, "color": "white", "position": [10, 10]}]}]});
        let dir = bundle_with(&s);
        std::fs::copy(
            root().join("tests/fixtures/fonts/MontageVarTest.ttf"),
            dir.path().join("MontageVarTest.ttf"),
        )
        .expect("copy the variable fixture font");
        dir
    };
    let width = |weight: u64| {
        let dir = scene(weight, "I");
        let rgba = render(&open(&dir), "c", &props(json!({})), 0);
        (0..160)
            .filter(|&x| ink(&rgba, x, 0, x + 1, 90) > 0)
            .count()
    };
    // The bar is 200 units at 400, 600 at 900, 50 at 100 (1000 per em).
    let (w100, w400, w900) = (width(100), width(400), width(900));
    assert!((10..=11).contains(&w400), "weight 400: {w400} px");
    assert!((30..=31).contains(&w900), "weight 900: {w900} px");
    assert!((2..=4).contains(&w100), "weight 100: {w100} px");
    // The advance follows the axis too: "II" at 900 is two wide bars apart.
    let dir = scene(900, "II");
    let rgba = render(&open(&dir), "c", &props(json!({})), 0);
    let cols: Vec<usize> = (0..160)
        .filter(|&x| ink(&rgba, x, 0, x + 1, 90) > 0)
        .collect();
    assert!(
        cols.len() >= 60 && cols.last() > Some(&(10 + 50)),
        "{cols:?}"
    );
    // A weight outside the axis is refused with the range there is.
    let dir = scene(950, "I");
    let e = SceneBundle::open(dir.path()).expect_err("950").to_string();
    assert!(
        e.ends_with("`font`: no face `Montage Var Test` weight 950 in the bundle's fonts; they hold: DejaVu Sans 700, Montage Var Test 100-900 (variable)"),
        "{e}"
    );
}

#[test]
fn overflow_clips_or_ellipsizes_text_that_does_not_fit_its_box() {
    let long = "Ada Lovelace, Countess of Lovelace and Supercalifragilisticexpialidocious";
    let frame = |overflow: &str| {
        let dir = bundle(
            json!([{"type": "text", "name": "T", "text": long, "font": "DejaVu Sans",
                "weight": 700, "font_size": 12, "color": "white", "size": [100, 30],
                "position": [10, 10], "overflow": overflow}]),
            json!({}),
        );
        render(&open(&dir), "c", &props(json!({})), 0)
    };
    let outside = |rgba: &[u8]| ink(rgba, 0, 42, 160, 90) + ink(rgba, 112, 0, 160, 90);
    let visible = frame("visible");
    assert!(outside(&visible) > 50, "the long text runs past its box");
    let clip = frame("clip");
    assert_eq!(outside(&clip), 0);
    assert!(ink(&clip, 10, 10, 110, 40) > 100);
    let ellipsis = frame("ellipsis");
    assert_eq!(outside(&ellipsis), 0);
    assert_ne!(ellipsis, clip);
    check_golden("text-ellipsis_f0", 160, 90, &ellipsis);
    let shrink = frame("shrink");
    assert_eq!(outside(&shrink), 0);
    // A box is needed.
    let dir = bundle(
        json!([{"type": "text", "name": "T", "text": "x", "font": "DejaVu Sans",
            "weight": 700, "font_size": 12, "overflow": "clip"}]),
        json!({}),
    );
    let e = SceneBundle::open(dir.path())
        .expect_err("no box")
        .to_string();
    assert!(
        e.ends_with("layer `T`: `overflow` needs a `size` box"),
        "{e}"
    );
}

#[test]
fn a_glyph_we_cannot_draw_is_an_error_naming_character_font_and_format() {
    let s = json!({"version": 1, "fonts": ["DejaVuSans-Bold.ttf", "MontageSvgTest.ttf"],
        "compositions": [{"id": "c", "width": 160, "height": 90, "fps": 30, "duration": 1,
            "layers": [{"type": "text", "name": "T", "text": "A", "font": "Montage Svg Test",
                "font_size": 20}]}]});
    let dir = bundle_with(&s);
    std::fs::copy(
        root().join("tests/fixtures/fonts/MontageSvgTest.ttf"),
        dir.path().join("MontageSvgTest.ttf"),
    )
    .expect("copy the SVG fixture font");
    let e = SceneBundle::open(dir.path())
        .expect_err("an SVG glyph")
        .to_string();
    assert_eq!(
        e,
        "scene.json: compositions[0]: composition `c`: layer `T`: `A` (U+0041) in font `Montage Svg Test 400` cannot be drawn: it is an SVG-in-OpenType glyph, which Montage does not draw (use a CBDT, sbix or COLR emoji font such as Noto Color Emoji)"
    );
}
