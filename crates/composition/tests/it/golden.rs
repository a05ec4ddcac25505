//! Golden images: exact equality with `tests/fixtures/golden/*.png`.
//! Regenerate on purpose with `UPDATE_GOLDEN=1 cargo test -p composition`;
//! a mismatch writes the actual image and a diff to `target/golden-diff/`.

use composition::CompositionSource;
use composition::scene::SceneBundle;

use crate::{props, render, root};

fn golden_dir() -> std::path::PathBuf {
    root().join("tests/fixtures/golden")
}

/// Compares premultiplied `rgba` with the golden `name`.
#[track_caller]
pub fn check_golden(name: &str, width: u32, height: u32, rgba: &[u8]) {
    let png = composition::still::encode_png(width, height, rgba).expect("encode");
    let path = golden_dir().join(format!("{name}.png"));
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(golden_dir()).expect("golden dir");
        std::fs::write(&path, &png).expect("write golden");
        return;
    }
    let expected = image::load_from_memory(&std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    }))
    .expect("golden decodes")
    .into_rgba8();
    let actual = image::load_from_memory(&png)
        .expect("ours decodes")
        .into_rgba8();
    assert_eq!(
        expected.dimensions(),
        (width, height),
        "{name}: golden size differs"
    );
    if expected.as_raw() == actual.as_raw() {
        return;
    }
    let mut diff = image::RgbaImage::new(width, height);
    let mut count = 0;
    let mut first = None;
    for (x, y, d) in diff.enumerate_pixels_mut() {
        let (e, a) = (expected.get_pixel(x, y), actual.get_pixel(x, y));
        if e == a {
            *d = image::Rgba([e[0] / 4, e[1] / 4, e[2] / 4, 255]);
        } else {
            *d = image::Rgba([255, 0, 0, 255]);
            count += 1;
            first.get_or_insert((x, y, *e, *a));
        }
    }
    let out = root().join("target/golden-diff");
    std::fs::create_dir_all(&out).expect("diff dir");
    diff.save(out.join(format!("{name}.diff.png")))
        .expect("write diff");
    std::fs::write(out.join(format!("{name}.actual.png")), &png).expect("write actual");
    let (x, y, e, a) = first.expect("a difference");
    panic!(
        "{name}: {count} pixels differ, first at ({x}, {y}): expected {e:?}, got {a:?}; see {}",
        out.display()
    );
}

#[test]
fn one_golden_per_layer_type_and_feature() {
    let scene: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/scenes/golden/scene.json"))
            .expect("scene"),
    )
    .expect("json");
    let dir = crate::bundle_with(&scene);
    let bundle = SceneBundle::open(dir.path()).expect("golden bundle opens");
    let frames = |id: &str| -> &[u64] {
        match id {
            "group" | "keyframes" => &[0, 10, 20],
            _ => &[0],
        }
    };
    for id in bundle.ids() {
        for &f in frames(&id) {
            let rgba = render(&bundle, &id, &props(serde_json::json!({})), f);
            check_golden(&format!("{id}_f{f}"), 160, 90, &rgba);
        }
    }
}
