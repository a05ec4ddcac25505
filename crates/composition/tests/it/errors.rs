//! Bad scenes and props get errors that name the file, JSON path, layer path,
//! prop or override, with suggestions.

use composition::scene::SceneBundle;
use composition::{CompositionSource, ErrorKind, Props};

use crate::{bundle_with, props};

fn scene(layers: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"version": 1, "fonts": ["DejaVuSans-Bold.ttf"], "compositions": [{
        "id": "c", "width": 64, "height": 36, "fps": 30, "duration": 10,
        "props": {"name": "Ada", "logo": null},
        "layers": layers
    }]})
}

fn title() -> serde_json::Value {
    serde_json::json!({"type": "text", "name": "Title", "text": "Hi {name}", "font": "DejaVu Sans",
        "weight": 700, "font_size": 12})
}

#[track_caller]
fn check_open(scene: serde_json::Value, expected: &str) {
    let dir = bundle_with(&scene);
    let err = SceneBundle::open(dir.path()).expect_err("the scene is bad");
    assert_eq!(err.to_string(), expected);
}

#[test]
fn bad_scenes_name_where() {
    let ctx = "scene.json: compositions[0]: composition `c`";
    check_open(
        scene(serde_json::json!([{"type": "solid", "name": "Bg", "colour": "#fff"}])),
        "scene.json: compositions[0].layers[0].colour: unknown field `colour`, expected one of `type`, `name`, `in`, `out`, `visible`, `anchor`, `position`, `scale`, `rotation`, `opacity`, `blend`, `color`, `size`, `from`, `to`, `center`, `radius`, `stops`, `fill`, `stroke`, `d`, `text`, `font`, `weight`, `italic`, `font_size`, `line_height`, `letter_spacing`, `align`, `valign`, `wrap`, `shrink_to_fit`, `overflow`, `shadow`, `gradient`, `animate`, `highlight`, `src`, `fit`, `start`, `trim_start`, `trim_end`, `playback_rate`, `loop`, `volume`, `muted`, `layers`, `time_offset`, `clip` at line 10 column 18",
    );
    check_open(
        scene(
            serde_json::json!([{"type": "group", "name": "Card", "layers": [
            {"type": "text", "name": "Head", "text": "x", "font": "DejaVu Sans", "weight": 700, "font_size": 10, "radius": 3}]}]),
        ),
        &format!(
            "{ctx}: layer `Card.Head`: `radius` does not apply to a text layer; it takes `text`, `font`, `weight`, `italic`, `font_size`, `line_height`, `letter_spacing`, `align`, `valign`, `wrap`, `shrink_to_fit`, `size`, `color`, `overflow`, `stroke`, `shadow`, `gradient`, `animate`"
        ),
    );
    check_open(
        scene(
            serde_json::json!([{"type": "text", "name": "T", "text": "x", "font": "DejaVu Sans", "font_size": 10}]),
        ),
        &format!(
            "{ctx}: layer `T`: `font`: no face `DejaVu Sans` weight 400 in the bundle's fonts; they hold: DejaVu Sans 700"
        ),
    );
    check_open(
        scene(
            serde_json::json!([{"type": "text", "name": "T", "text": "Hi {nmae}", "font": "DejaVu Sans", "weight": 700, "font_size": 10}]),
        ),
        &format!(
            "{ctx}: layer `T`: placeholder `{{nmae}}` names no declared prop; did you mean `name`?; declare it in `props`"
        ),
    );
    check_open(
        scene(serde_json::json!([{"type": "image", "name": "Logo", "src": "../badge.png"}])),
        &format!(
            "{ctx}: layer `Logo`: asset path `../badge.png` contains `..`: paths stay inside the bundle"
        ),
    );
    check_open(
        scene(
            serde_json::json!([{"type": "rect", "name": "R", "size": [4, 4], "fill": "#ff00zz"}]),
        ),
        &format!(
            "{ctx}: layer `R`: `fill`: `#ff00zz` is not a colour: expected #rgb, #rrggbb, #rrggbbaa, transparent, white or black"
        ),
    );
    check_open(
        scene(
            serde_json::json!([{"type": "rect", "name": "R", "size": [4, 4], "fill": "#fff",
            "opacity": {"keyframes": [{"frame": 5, "value": 1}, {"frame": 2, "value": 0}]}}]),
        ),
        &format!(
            "{ctx}: layer `R`: `opacity`: keyframes[1]: frame 2 must be after the previous keyframe's frame 5"
        ),
    );
    check_open(
        scene(
            serde_json::json!([{"type": "rect", "name": "R", "size": [4, 4], "fill": "#fff"},
                                 {"type": "rect", "name": "R", "size": [4, 4], "fill": "#fff"}]),
        ),
        &format!(
            "{ctx}: layer `R`: another layer beside it has the same name: names must be unique among siblings"
        ),
    );
    let mut wide = scene(serde_json::json!([]));
    wide["compositions"][0]["width"] = 9000.into();
    check_open(
        wide,
        &format!("{ctx}: `width` 9000 is out of range: allowed 1-8192"),
    );
}

#[test]
fn uncovered_characters_are_listed() {
    let mut s = scene(serde_json::json!([title()]));
    s["compositions"][0]["props"] = serde_json::json!({"name": "漢字 ok"});
    check_open(
        s,
        "scene.json: compositions[0]: composition `c`: layer `Title`: no bundle font covers `字` (U+5B57), `漢` (U+6F22)",
    );
}

#[test]
fn props_and_overrides_are_checked_with_suggestions() {
    let dir = bundle_with(&scene(serde_json::json!([title(),
        {"type": "image", "name": "Logo", "src": "{logo}"}])));
    let bundle = SceneBundle::open(dir.path()).expect("a required prop defers asset checks");
    let comp = bundle.composition("c").expect("c");
    let err = comp.describe(&Props::new()).expect_err("logo missing");
    assert_eq!(
        err.to_string(),
        "prop `logo` is missing (needed by composition `c`)"
    );
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let ok = props(serde_json::json!({"logo": "badge.png"}));
    comp.prepare(&ok).expect("with the prop it prepares");

    let mut p = ok.clone();
    p.insert("text.Titel".into(), "x".into());
    assert_eq!(
        comp.describe(&p).expect_err("unknown override").to_string(),
        "scene.json: compositions[0]: composition `c`: override `text.Titel`: no such override path; did you mean `text.Title`?"
    );
    let mut p = ok.clone();
    p.insert("nmae".into(), "x".into());
    assert_eq!(
        comp.describe(&p).expect_err("unknown prop").to_string(),
        "scene.json: compositions[0]: composition `c`: prop `nmae`: not a declared prop; did you mean `name`?; declared: `logo`, `name`"
    );
    let mut p = ok.clone();
    p.insert("opacity.Title".into(), 2.into());
    assert_eq!(
        comp.describe(&p).expect_err("bad value").to_string(),
        "scene.json: compositions[0]: composition `c`: override `opacity.Title`: 2 is invalid: expected a number in 0-1"
    );
    let missing = comp
        .prepare(&props(serde_json::json!({"logo": "nope.png"})))
        .err()
        .expect("missing file");
    assert_eq!(
        missing.to_string(),
        "scene.json: compositions[0]: composition `c`: layer `Logo`: nope.png not found"
    );
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    let err = bundle.composition("d").err().expect("unknown id");
    assert_eq!(err.to_string(), "composition `d` not found; available: c");
}

#[test]
fn schema_in_docs_is_current() {
    let path = crate::root().join("docs/scene.schema.json");
    let generated =
        serde_json::to_string_pretty(&composition::scene::json_schema()).expect("json") + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).expect("write schema");
        return;
    }
    let current = std::fs::read_to_string(&path).expect("docs/scene.schema.json exists");
    assert!(
        current == generated,
        "docs/scene.schema.json is stale: run UPDATE_GOLDEN=1 cargo test -p composition"
    );
}

#[test]
fn duration_can_come_from_props() {
    let mut s = scene(serde_json::json!([]));
    s["compositions"][0]["duration"] = "{frames}".into();
    s["compositions"][0]["props"] = serde_json::json!({"frames": 10});
    let dir = bundle_with(&s);
    let bundle = SceneBundle::open(dir.path()).expect("opens");
    let comp = bundle.composition("c").expect("c");
    assert_eq!(
        comp.describe(&Props::new())
            .expect("default")
            .duration_frames,
        10
    );
    assert_eq!(
        comp.describe(&props(serde_json::json!({"frames": "90"})))
            .expect("prop")
            .duration_frames,
        90
    );
    assert_eq!(
        comp.describe(&props(serde_json::json!({"frames": "ten"})))
            .expect_err("not a number")
            .to_string(),
        "scene.json: compositions[0]: composition `c`: duration: `ten` is not a whole number of frames"
    );
    assert_eq!(
        comp.describe(&props(serde_json::json!({"frames": 0})))
            .expect_err("zero")
            .to_string(),
        "composition `c`: duration 0 frames is out of range: allowed 1-5184000"
    );
}
