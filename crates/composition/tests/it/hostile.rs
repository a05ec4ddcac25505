//! Input that crashed or exhausted the renderer, each case kept with the
//! exact error it now gets: the scene corpus in `tests/fixtures/fuzz/scene`,
//! corrupt fonts, hostile overrides and frame rates, and scenes over the
//! render budget.

use std::sync::Mutex;

use composition::builtin::TestPattern;
use composition::scene::SceneBundle;
use composition::{Composition, CompositionSource, Props};
use serde_json::{Value, json};
use timebase::{FrameIndex, SampleSpan};

use crate::{bundle_with, promo_dir, props, root};

fn corpus_dir() -> std::path::PathBuf {
    root().join("tests/fixtures/fuzz/scene")
}

/// Opens `dir` and, if it opens, describes, prepares and renders the first,
/// middle and last frame and a little audio of every composition.
pub fn open_and_render(dir: &std::path::Path) -> Result<(), String> {
    let bundle = SceneBundle::open(dir).map_err(|e| e.to_string())?;
    for id in bundle.ids() {
        let comp = bundle.composition(&id).map_err(|e| e.to_string())?;
        let meta = comp.describe(&Props::new()).map_err(|e| e.to_string())?;
        let prepared = comp.prepare(&Props::new()).map_err(|e| e.to_string())?;
        let mut renderer = prepared.frame_renderer().map_err(|e| e.to_string())?;
        let mut rgba = vec![0u8; meta.frame_bytes()];
        let last = meta.duration_frames - 1;
        for f in [0, last / 2, last] {
            renderer
                .render_frame(FrameIndex(f), &mut rgba)
                .map_err(|e| e.to_string())?;
        }
        let mut pcm = vec![0.0f32; 2 * 480];
        prepared
            .render_audio(SampleSpan::new(0, 480).expect("span"), &mut pcm)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

const PROMO: &str = "scene.json: compositions[0]: composition `promo`";

#[test]
fn corpus_scenes_get_their_errors() {
    let expected: &[(&str, Result<(), String>)] = &[
        ("at-the-limits.json", Ok(())),
        (
            "bezier-overshoot.json",
            Err(format!(
                "{PROMO}: layer `Square`: `rotation`: keyframes[0]: `cubic-bezier(0.5, 1e308, 0.5, 1)`: x1 and x2 must be in 0-1 and y1, y2 in -10 to 10"
            )),
        ),
        (
            "deep-composited-groups-8k.json",
            Err("scene.json: compositions[0]: composition `deep`: the scene needs 4.8 GB of frame buffers (8192x8192 × 18 buffers: the frame, its static background, 16 nested groups composited offscreen); the limit is 2.0 GB".into()),
        ),
        (
            "duration-u64-max.json",
            Err(format!(
                "{PROMO}: `duration` 18446744073709551615 is out of range: allowed 1-5184000"
            )),
        ),
        (
            "font-size-denormal.json",
            Err(format!(
                "{PROMO}: layer `Subtitle`: `font_size` 1e-320 is out of range: allowed 1-4096"
            )),
        ),
        (
            "fps-1-over-2147483647.json",
            Err(format!(
                "{PROMO}: `fps`: fps 1/2147483647 is out of range: allowed 1-240 frames per second with a denominator of at most 1001 (such as 30000/1001)"
            )),
        ),
        (
            "fps-1-over-4294967295.json",
            Err(format!(
                "{PROMO}: `fps`: fps 1/4294967295 is out of range: allowed 1-240 frames per second with a denominator of at most 1001 (such as 30000/1001)"
            )),
        ),
        (
            "keyframe-frame-huge.json",
            Err(format!(
                "{PROMO}: layer `Square`: `rotation`: keyframes[1]: frame 1e308 is out of range: allowed 0-5184000"
            )),
        ),
        (
            "line-height-tiny.json",
            Err(format!(
                "{PROMO}: layer `Title`: `line_height` 1e-308 is out of range: allowed 0.1-10"
            )),
        ),
        (
            "path-huge-coordinates.json",
            Err(format!(
                "{PROMO}: layer `Far`: `d`: coordinate 1e30 is out of range: allowed -1000000 to 1000000"
            )),
        ),
    ];
    let mut files: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("the corpus folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let named: Vec<&str> = expected.iter().map(|(f, _)| *f).collect();
    assert_eq!(
        files, named,
        "every corpus scene needs its expected result here, and every row its file"
    );
    for (file, want) in expected {
        let scene: Value = serde_json::from_str(
            &std::fs::read_to_string(corpus_dir().join(file)).expect("corpus scene"),
        )
        .expect("corpus scenes are JSON");
        let dir = bundle_with(&scene);
        assert_eq!(&open_and_render(dir.path()), want, "{file}");
    }
}

/// A capturing logger: fontdb reports the faces it skips through `log`,
/// which a binary prints as a `WARN fontdb` line before our error.
struct Captured(Mutex<Vec<String>>);

impl log::Log for Captured {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target().starts_with("fontdb") {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

static LOGGED: Captured = Captured(Mutex::new(Vec::new()));

#[test]
fn corrupt_fonts_are_one_error_and_no_warning() {
    log::set_logger(&LOGGED).expect("the only logger of this test binary");
    log::set_max_level(log::LevelFilter::Trace);
    let font = std::fs::read(promo_dir().join("DejaVuSans-Bold.ttf")).expect("font");
    // The `name` table renamed: the face parses, but has no family name.
    let mut nameless = font.clone();
    let tables = usize::from(u16::from_be_bytes([font[4], font[5]]));
    let dir_end = 12 + 16 * tables;
    let at = font[..dir_end]
        .windows(4)
        .position(|w| w == b"name")
        .expect("a name table");
    nameless[at..at + 4].copy_from_slice(b"nam_");
    // A collection header claiming 2^32 - 1 faces (fontdb would reserve room
    // for all of them).
    let mut huge_collection = b"ttcf".to_vec();
    huge_collection.extend_from_slice(&[0, 1, 0, 0]);
    huge_collection.extend_from_slice(&u32::MAX.to_be_bytes());
    let ctx = "scene.json: fonts: font `DejaVuSans-Bold.ttf`";
    let cases: [(&str, Vec<u8>, String); 4] = [
        (
            "truncated",
            font[..5000].to_vec(),
            format!(
                "{ctx} holds no usable face (not a TrueType/OpenType font?): the head table is missing or malformed"
            ),
        ),
        (
            "not a font",
            b"junk".to_vec(),
            format!("{ctx} holds no usable face (not a TrueType/OpenType font?): unknown magic"),
        ),
        (
            "nameless",
            nameless,
            format!(
                "{ctx} holds no usable face (not a TrueType/OpenType font?): it has no family name"
            ),
        ),
        (
            "huge collection",
            huge_collection,
            format!("{ctx} is a collection of 4294967295 faces: 1-256 allowed"),
        ),
    ];
    for (what, bytes, expected) in cases {
        let dir = bundle_with(&json!({"version": 1, "fonts": ["DejaVuSans-Bold.ttf"],
            "compositions": [{"id": "c", "width": 8, "height": 8, "fps": 30, "duration": 1}]}));
        std::fs::write(dir.path().join("DejaVuSans-Bold.ttf"), bytes).expect("font");
        assert_eq!(
            open_and_render(dir.path()).err().as_deref(),
            Some(expected.as_str()),
            "{what}"
        );
    }
    let logged = LOGGED
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    assert!(logged.is_empty(), "fontdb logged: {logged:?}");
}

#[test]
fn hostile_overrides_are_refused_with_the_range() {
    let bundle = SceneBundle::open(&promo_dir()).expect("promo");
    let comp = bundle.composition("promo").expect("promo");
    let ctx = "scene.json: compositions[0]: composition `promo`: override";
    for (key, value, expected) in [
        (
            "transform.Square.position",
            json!("1e308,0"),
            "`transform.Square.position`: \"1e308,0\" is invalid: expected [x, y] or \"x,y\" within -1000000 to 1000000",
        ),
        (
            "transform.Badge.anchor",
            json!([0, -2e6]),
            "`transform.Badge.anchor`: [0,-2000000.0] is invalid: expected [x, y] or \"x,y\" within -1000000 to 1000000",
        ),
        (
            "transform.Square.scale",
            json!(1e9),
            "`transform.Square.scale`: 1000000000.0 is invalid: expected a number, [sx, sy] or \"sx,sy\" within -1000 to 1000",
        ),
        (
            "transform.Square.rotation",
            json!(1e300),
            "`transform.Square.rotation`: 1e+300 is invalid: expected degrees within -1000000 to 1000000",
        ),
    ] {
        let err = comp
            .describe(&props(json!({ key: value })))
            .expect_err("out of range");
        assert_eq!(err.to_string(), format!("{ctx} {expected}"));
    }
}

#[test]
fn frame_rates_outside_1_to_240_are_refused_everywhere() {
    let pattern = TestPattern::new();
    for fps in ["1/2147483647", "1/4294967295", "241", "1/2", "240241/1001"] {
        let err = pattern
            .describe(&props(json!({ "fps": fps })))
            .expect_err("out of range");
        let shown: timebase::Fps = fps.parse().expect("a fraction");
        assert_eq!(
            err.to_string(),
            format!(
                "composition `test-pattern`: fps {shown} is out of range: allowed 1-240 frames per second with a denominator of at most 1001 (such as 30000/1001)"
            )
        );
    }
    for fps in [
        "24000/1001",
        "24",
        "25",
        "30000/1001",
        "30",
        "48",
        "50",
        "60000/1001",
        "60",
        "120",
        "240000/1001",
        "240",
        "1",
    ] {
        pattern
            .describe(&props(json!({ "fps": fps })))
            .unwrap_or_else(|e| panic!("{fps}: {e}"));
    }
}

#[test]
fn scenes_over_the_budget_are_refused_before_rendering() {
    // 500 text layers of 10 000 characters (16 s for one still before).
    let long = "lorem ipsum ".repeat(834)[..10_000].to_owned();
    let layers: Vec<Value> = (0..500)
        .map(|i| {
            json!({"type": "text", "name": format!("T{i}"), "text": long, "font": "DejaVu Sans",
                "weight": 700, "font_size": 12})
        })
        .collect();
    let dir = bundle_with(&json!({"version": 1, "fonts": ["DejaVuSans-Bold.ttf"],
        "compositions": [{"id": "c", "width": 64, "height": 36, "fps": 30, "duration": 1,
            "layers": layers}]}));
    assert_eq!(
        open_and_render(dir.path()).err().as_deref(),
        Some(
            "scene.json: compositions[0]: composition `c`: the scene shapes 5000000 glyphs (5000000 characters of text, each `shrink_to_fit` layout counted); the limit is 200000"
        )
    );

    // A prop fills the text: refused by `describe`, before shaping.
    let shrinking = |name: &str| {
        json!({"type": "text", "name": name, "text": "{t}", "font": "DejaVu Sans",
            "weight": 700, "font_size": 12, "size": [64, 36], "shrink_to_fit": true})
    };
    let dir = bundle_with(&json!({"version": 1, "fonts": ["DejaVuSans-Bold.ttf"],
        "compositions": [{"id": "c", "width": 64, "height": 36, "fps": 30, "duration": 1,
            "props": {"t": null}, "layers": [shrinking("A"), shrinking("B")]}]}));
    let bundle = SceneBundle::open(dir.path()).expect("opens: the text is not known yet");
    let comp = bundle.composition("c").expect("c");
    assert_eq!(
        comp.describe(&props(json!({"t": "x".repeat(10_000)})))
            .expect_err("too much shaping")
            .to_string(),
        "scene.json: compositions[0]: composition `c`: the scene shapes 320000 glyphs (20000 characters of text, each `shrink_to_fit` layout counted); the limit is 200000"
    );

    // Eight distinct 8192x8192 images: 2.1 GB decoded, refused from their
    // headers before any is decoded.
    let layers: Vec<Value> = (0..8)
        .map(|i| json!({"type": "image", "name": format!("I{i}"), "src": format!("big{i}.png")}))
        .collect();
    let dir = bundle_with(
        &json!({"version": 1, "compositions": [{"id": "c", "width": 64,
        "height": 36, "fps": 30, "duration": 1, "layers": layers}]}),
    );
    for i in 0..8 {
        std::fs::write(
            dir.path().join(format!("big{i}.png")),
            png_header(8192, 8192),
        )
        .expect("png");
    }
    assert_eq!(
        open_and_render(dir.path()).err().as_deref(),
        Some(
            "scene.json: compositions[0]: composition `c`: the scene's images need 2.1 GB decoded; the limit is 2.0 GB"
        )
    );
}

/// A PNG signature, a header chunk declaring `w`x`h` RGBA pixels and an
/// empty data chunk.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut chunk = b"IHDR".to_vec();
    chunk.extend_from_slice(&w.to_be_bytes());
    chunk.extend_from_slice(&h.to_be_bytes());
    chunk.extend_from_slice(&[8, 6, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\r".to_vec();
    png.extend_from_slice(&chunk);
    png.extend_from_slice(&crc32(&chunk).to_be_bytes());
    // An empty data chunk: readers stop reading the header at the first.
    png.extend_from_slice(&0u32.to_be_bytes());
    png.extend_from_slice(b"IDAT");
    png.extend_from_slice(&crc32(b"IDAT").to_be_bytes());
    png
}

/// The CRC-32 of PNG chunks (ISO 3309, as in the PNG specification's
/// sample code).
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = u32::MAX;
    for b in bytes {
        c ^= u32::from(*b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn budgets_count_frame_buffers_images_and_text() {
    let bundle = SceneBundle::open(&promo_dir()).expect("promo");
    let b = bundle
        .composition("promo")
        .expect("promo")
        .budget(&Props::new())
        .expect("budget");
    let frame = 1920 * 1080 * 4;
    // The frame and the cached background (the gradient never changes).
    assert_eq!(b.frame_buffers, 2);
    assert_eq!(b.renderer_bytes, 2 * frame);
    // "Hello, Ada!" and "Your 12 referrals earned $340.00".
    assert_eq!((b.glyphs, b.shaped_glyphs), (43, 43));
    assert_eq!(b.layers, 5);
    // The 256x256 badge, and the glyphs' outlines.
    assert_eq!(
        b.shared_bytes,
        256 * 256 * 4 + 43 * composition::scene::GLYPH_OUTLINE_BYTES
    );
    assert_eq!(b.memory_bytes(), b.shared_bytes + 2 * frame);
    assert_eq!(b.memory_for_threads(4), b.shared_bytes + 8 * frame);

    // Only groups that may be composited as one image need an offscreen
    // frame: an opaque normal group is drawn straight into its parent, and
    // keyframes that are all 1 stay 1.
    let group = |name: &str, extra: Value, layers: Value| {
        let mut g = json!({"type": "group", "name": name, "layers": layers});
        if let (Some(g), Value::Object(e)) = (g.as_object_mut(), extra) {
            g.extend(e);
        }
        g
    };
    let dot = json!([{"type": "ellipse", "name": "Dot", "size": [8, 8], "fill": "#fff",
        "position": {"keyframes": [{"frame": 0, "value": [0, 0]}, {"frame": 9, "value": [20, 9]}]}}]);
    let tree = group(
        "Plain",
        json!({"opacity": {"keyframes": [{"frame": 0, "value": 1}, {"frame": 5, "value": 1}]}}),
        json!([
            group(
                "Faded",
                json!({"opacity": 0.5}),
                json!([group("Clipped", json!({"clip": [16, 16]}), dot.clone())]),
            ),
            group("Screen", json!({"blend": "screen"}), dot)
        ]),
    );
    let dir = bundle_with(
        &json!({"version": 1, "compositions": [{"id": "c", "width": 40,
        "height": 20, "fps": 30, "duration": 10, "layers": [tree]}]}),
    );
    open_and_render(dir.path()).expect("renders with the frames it counted");
    let bundle = SceneBundle::open(dir.path()).expect("opens");
    let b = bundle
        .composition("c")
        .expect("c")
        .budget(&Props::new())
        .expect("budget");
    // The frame, then `Faded` and `Clipped` nested (`Screen` reuses
    // `Faded`'s level); the dot moves, so no background; one clip mask.
    assert_eq!(b.frame_buffers, 3);
    assert_eq!(b.renderer_bytes, 40 * 20 * (3 * 4 + 1));
    assert_eq!(b.layers, 6);

    let pattern = TestPattern::new();
    let b = pattern.budget(&Props::new()).expect("budget");
    assert_eq!(
        (b.frame_buffers, b.renderer_bytes, b.shared_bytes),
        (1, 320 * 180 * 4, 0)
    );
}
