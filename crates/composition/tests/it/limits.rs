//! Every limited number of the scene format: the JSON Schema in
//! `docs/scene.schema.json` and the loader agree. For each field the test
//! reads `minimum`/`maximum` from the schema file, then checks that the
//! loader accepts both bounds and refuses the nearest value outside each,
//! with an error naming the layer (or track), the field, the value and the
//! range.

use composition::scene::SceneBundle;
use composition::scene::limits::{Range, show};
use serde_json::{Value, json};

use crate::bundle_with;

/// A limited field: where its number schema is, a scene that sets it, and
/// the loader's error for a value outside its range.
struct Field {
    /// The schema definition and property holding the number.
    def: &'static str,
    prop: &'static str,
    /// Whole numbers step by 1 outside their bounds, decimals by a millionth.
    integer: bool,
    /// The scene with the field set to a value.
    scene: fn(Value) -> Value,
    /// The error after the composition's context, with `{v}` for the value
    /// and `{r}` for the range.
    error: &'static str,
}

const CTX: &str = "scene.json: compositions[0]: composition `c`";

fn comp(layers: Value, audio: Value) -> Value {
    json!({"version": 1, "fonts": ["DejaVuSans-Bold.ttf"], "compositions": [{
        "id": "c", "width": 32, "height": 18, "fps": 30, "duration": 10,
        "layers": layers, "audio": audio
    }]})
}

fn layer(l: Value) -> Value {
    comp(json!([l]), json!([]))
}

fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(o), Value::Object(e)) = (base.as_object_mut(), extra) {
        o.extend(e);
    }
    base
}

/// A rect named `R` with `extra` fields.
fn rect(extra: Value) -> Value {
    layer(with(
        json!({"type": "rect", "name": "R", "size": [4, 4], "fill": "#fff"}),
        extra,
    ))
}

fn text(extra: Value) -> Value {
    layer(with(
        json!({"type": "text", "name": "T", "text": "Hi", "font": "DejaVu Sans",
            "weight": 700, "font_size": 12}),
        extra,
    ))
}

fn group(extra: Value) -> Value {
    layer(with(
        json!({"type": "group", "name": "G", "layers": []}),
        extra,
    ))
}

fn track(extra: Value) -> Value {
    comp(
        json!([]),
        json!([with(json!({"name": "Tone", "src": "tone.wav"}), extra)]),
    )
}

fn video(extra: Value) -> Value {
    layer(with(
        json!({"type": "video", "name": "V", "src": "v.mp4"}),
        extra,
    ))
}

fn top(field: &str, v: Value) -> Value {
    let mut s = comp(json!([]), json!([]));
    s["compositions"][0][field] = v;
    s
}

fn fields() -> Vec<Field> {
    vec![
        Field {
            def: "LayerDoc",
            prop: "font_size",
            integer: false,
            scene: |v| text(json!({"font_size": v})),
            error: "layer `T`: `font_size` {v} is out of range: allowed {r}",
        },
        Field {
            def: "LayerDoc",
            prop: "line_height",
            integer: false,
            scene: |v| text(json!({"line_height": v})),
            error: "layer `T`: `line_height` {v} is out of range: allowed {r}",
        },
        Field {
            def: "LayerDoc",
            prop: "letter_spacing",
            integer: false,
            scene: |v| text(json!({"letter_spacing": v})),
            error: "layer `T`: `letter_spacing` {v} is out of range: allowed {r}",
        },
        Field {
            def: "LayerDoc",
            prop: "weight",
            integer: true,
            scene: |v| text(json!({"weight": v})),
            error: "layer `T`: `weight` {v} is out of range: allowed {r}",
        },
        Field {
            def: "ShadowDoc",
            prop: "blur",
            integer: false,
            scene: |v| text(json!({"shadow": {"color": "#000", "blur": v}})),
            error: "layer `T`: `shadow.blur`: {v} is out of range: allowed {r}",
        },
        Field {
            def: "ShadowDoc",
            prop: "offset",
            integer: false,
            scene: |v| text(json!({"shadow": {"color": "#000", "offset": [v, 1]}})),
            error: "layer `T`: `shadow.offset`: [{v}, 1] is out of range: allowed {r} for each",
        },
        Field {
            def: "AnimateDoc",
            prop: "stagger",
            integer: false,
            scene: |v| text(json!({"animate": {"by": "word", "stagger": v}})),
            error: "layer `T`: `animate.stagger` {v} is out of range: allowed {r}",
        },
        Field {
            def: "AnimateDoc",
            prop: "opacity",
            integer: false,
            scene: |v| text(json!({"animate": {"by": "word", "stagger": 1, "opacity": v}})),
            error: "layer `T`: `animate.opacity`: {v} is out of range: allowed {r}",
        },
        Field {
            def: "AnimateDoc",
            prop: "offset",
            integer: false,
            scene: |v| text(json!({"animate": {"by": "word", "stagger": 1, "offset": [1, v]}})),
            error: "layer `T`: `animate.offset`: [1, {v}] is out of range: allowed {r} for each",
        },
        Field {
            def: "AnimateDoc",
            prop: "scale",
            integer: false,
            scene: |v| text(json!({"animate": {"by": "line", "stagger": 1, "scale": v}})),
            error: "layer `T`: `animate.scale`: {v} is out of range: allowed {r}",
        },
        Field {
            def: "AnimateDoc",
            prop: "rotation",
            integer: false,
            scene: |v| text(json!({"animate": {"by": "character", "stagger": 1, "rotation": v}})),
            error: "layer `T`: `animate.rotation`: {v} is out of range: allowed {r}",
        },
        Field {
            def: "LayerDoc",
            prop: "in",
            integer: true,
            scene: |v| rect(json!({"in": v})),
            error: "layer `R`: `in` {v} is out of range: allowed {r}",
        },
        Field {
            def: "LayerDoc",
            prop: "out",
            integer: true,
            scene: |v| rect(json!({"out": v})),
            error: "layer `R`: `out` {v} is out of range: allowed {r}",
        },
        Field {
            def: "LayerDoc",
            prop: "time_offset",
            integer: true,
            scene: |v| group(json!({"time_offset": v})),
            error: "layer `G`: `time_offset` {v} is out of range: allowed {r}",
        },
        Field {
            def: "LayerDoc",
            prop: "rotation",
            integer: false,
            scene: |v| rect(json!({"rotation": v})),
            error: "layer `R`: `rotation`: {v} is out of range: allowed {r}",
        },
        Field {
            def: "LayerDoc",
            prop: "opacity",
            integer: false,
            scene: |v| rect(json!({"opacity": v})),
            error: "layer `R`: `opacity`: {v} is out of range: allowed {r}",
        },
        Field {
            def: "LayerDoc",
            prop: "scale",
            integer: false,
            scene: |v| rect(json!({"scale": v})),
            error: "layer `R`: `scale`: {v} is out of range: allowed {r}",
        },
        Field {
            def: "LayerDoc",
            prop: "radius",
            integer: false,
            scene: |v| rect(json!({"radius": v})),
            error: "layer `R`: `radius`: {v} is out of range: allowed {r}",
        },
        Field {
            def: "StrokeDoc",
            prop: "width",
            integer: false,
            scene: |v| rect(json!({"stroke": {"color": "#000", "width": v}})),
            error: "layer `R`: `stroke.width`: {v} is out of range: allowed {r}",
        },
        Field {
            def: "LayerDoc",
            prop: "position",
            integer: false,
            scene: |v| rect(json!({"position": [v, 1]})),
            error: "layer `R`: `position`: [{v}, 1] is out of range: allowed {r} for each",
        },
        Field {
            def: "LayerDoc",
            prop: "anchor",
            integer: false,
            scene: |v| rect(json!({"anchor": [1, v]})),
            error: "layer `R`: `anchor`: [1, {v}] is out of range: allowed {r} for each",
        },
        Field {
            def: "LayerDoc",
            prop: "size",
            integer: false,
            scene: |v| rect(json!({"size": [v, 1]})),
            error: "layer `R`: `size`: [{v}, 1] is out of range: allowed {r} for each",
        },
        Field {
            def: "LayerDoc",
            prop: "clip",
            integer: false,
            scene: |v| group(json!({"clip": [1, v]})),
            error: "layer `G`: `clip`: [1, {v}] is out of range: allowed {r} for each",
        },
        Field {
            def: "LayerDoc",
            prop: "center",
            integer: false,
            scene: |v| {
                layer(
                    json!({"type": "radial-gradient", "name": "R", "center": [v, 0], "radius": 5,
                    "stops": [{"offset": 0, "color": "#000"}, {"offset": 1, "color": "#fff"}]}),
                )
            },
            error: "layer `R`: `center`: [{v}, 0] is out of range: allowed {r} for each",
        },
        Field {
            def: "LayerDoc",
            prop: "from",
            integer: false,
            scene: |v| {
                layer(
                    json!({"type": "linear-gradient", "name": "R", "from": [0, v], "to": [1, 1],
                    "stops": [{"offset": 0, "color": "#000"}, {"offset": 1, "color": "#fff"}]}),
                )
            },
            error: "layer `R`: `from`: [0, {v}] is out of range: allowed {r} for each",
        },
        Field {
            def: "StopDoc",
            prop: "offset",
            integer: false,
            scene: |v| {
                layer(
                    json!({"type": "linear-gradient", "name": "R", "from": [0, 0], "to": [1, 1],
                    "stops": [{"offset": v, "color": "#000"}, {"offset": 1, "color": "#fff"}]}),
                )
            },
            error: "layer `R`: `stops[0].offset`: {v} is out of range: allowed {r}",
        },
        Field {
            def: "KeyframeDoc_Unit",
            prop: "frame",
            integer: false,
            scene: |v| {
                rect(
                    json!({"opacity": {"keyframes": [{"frame": v, "value": 1}, {"frame": 5184000, "value": 1}]}}),
                )
            },
            error: "layer `R`: `opacity`: keyframes[0]: frame {v} is out of range: allowed {r}",
        },
        Field {
            def: "LayerDoc",
            prop: "to",
            integer: false,
            scene: |v| {
                layer(
                    json!({"type": "linear-gradient", "name": "R", "from": [0, 0], "to": [v, 1],
                    "stops": [{"offset": 0, "color": "#000"}, {"offset": 1, "color": "#fff"}]}),
                )
            },
            error: "layer `R`: `to`: [{v}, 1] is out of range: allowed {r} for each",
        },
        Field {
            def: "KeyframeDoc_Unit",
            prop: "value",
            integer: false,
            scene: |v| rect(json!({"opacity": {"keyframes": [{"frame": 0, "value": v}]}})),
            error: "layer `R`: `opacity`: keyframes[0]: {v} is out of range: allowed {r}",
        },
        Field {
            def: "CompositionDoc",
            prop: "width",
            integer: true,
            scene: |v| top("width", v),
            error: "`width` {v} is out of range: allowed {r}",
        },
        Field {
            def: "CompositionDoc",
            prop: "height",
            integer: true,
            scene: |v| top("height", v),
            error: "`height` {v} is out of range: allowed {r}",
        },
        Field {
            def: "CompositionDoc",
            prop: "duration",
            integer: true,
            scene: |v| top("duration", v),
            error: "`duration` {v} is out of range: allowed {r}",
        },
        Field {
            def: "CompositionDoc",
            prop: "fps",
            integer: true,
            scene: |v| top("fps", v),
            error: "`fps` {v} is out of range: allowed {r}",
        },
        Field {
            def: "AudioDoc",
            prop: "volume",
            integer: false,
            scene: |v| track(json!({"volume": v})),
            error: "audio `Tone`: `volume`: {v} is out of range: allowed {r}",
        },
        Field {
            def: "AudioDoc",
            prop: "start",
            integer: true,
            scene: |v| track(json!({"start": v})),
            error: "audio `Tone`: `start` {v} is out of range: allowed {r}",
        },
        Field {
            def: "AudioDoc",
            prop: "end",
            integer: true,
            scene: |v| track(json!({"end": v})),
            error: "audio `Tone`: `end` {v} is out of range: allowed {r}",
        },
        Field {
            def: "AudioDoc",
            prop: "trim_start",
            integer: true,
            scene: |v| track(json!({"trim_start": v})),
            error: "audio `Tone`: `trim_start` {v} is out of range: allowed {r}",
        },
        Field {
            def: "AudioDoc",
            prop: "trim_end",
            integer: true,
            scene: |v| track(json!({"trim_end": v})),
            error: "audio `Tone`: `trim_end` {v} is out of range: allowed {r}",
        },
        Field {
            def: "AudioDoc",
            prop: "fade_in",
            integer: true,
            scene: |v| track(json!({"fade_in": v})),
            error: "audio `Tone`: `fade_in` {v} is out of range: allowed {r}",
        },
        Field {
            def: "AudioDoc",
            prop: "fade_out",
            integer: true,
            scene: |v| track(json!({"fade_out": v})),
            error: "audio `Tone`: `fade_out` {v} is out of range: allowed {r}",
        },
        Field {
            def: "LayerDoc",
            prop: "start",
            integer: true,
            scene: |v| video(json!({"start": v})),
            error: "layer `V`: `start` {v} is out of range: allowed {r}",
        },
        Field {
            def: "LayerDoc",
            prop: "trim_start",
            integer: true,
            scene: |v| video(json!({"trim_start": v})),
            error: "layer `V`: `trim_start` {v} is out of range: allowed {r}",
        },
        Field {
            def: "LayerDoc",
            prop: "trim_end",
            integer: true,
            scene: |v| video(json!({"trim_end": v})),
            error: "layer `V`: `trim_end` {v} is out of range: allowed {r}",
        },
        Field {
            def: "LayerDoc",
            prop: "playback_rate",
            integer: false,
            scene: |v| video(json!({"playback_rate": v})),
            error: "layer `V`: `playback_rate` {v} is out of range: allowed {r}",
        },
        Field {
            def: "LayerDoc",
            prop: "volume",
            integer: false,
            scene: |v| video(json!({"volume": v})),
            error: "layer `V`: `volume`: {v} is out of range: allowed {r}",
        },
    ]
}

/// The `minimum` and `maximum` of the number a property holds: through
/// `$ref`s, optional (`null`) branches, the static branch of keyframeable
/// values, and array items.
fn number_range(root: &Value, node: &Value) -> Option<(f64, f64)> {
    if let Some(r) = node.get("$ref").and_then(Value::as_str) {
        if r.contains("KeyframesDoc") {
            return None;
        }
        let name = r.trim_start_matches("#/$defs/");
        return number_range(root, &root["$defs"][name]);
    }
    if let (Some(min), Some(max)) = (node.get("minimum"), node.get("maximum")) {
        return Some((min.as_f64()?, max.as_f64()?));
    }
    if let Some(branches) = node.get("anyOf").and_then(Value::as_array) {
        return branches.iter().find_map(|b| number_range(root, b));
    }
    node.get("items").and_then(|i| number_range(root, i))
}

fn schema() -> Value {
    let text = std::fs::read_to_string(crate::root().join("docs/scene.schema.json"))
        .expect("docs/scene.schema.json");
    serde_json::from_str(&text).expect("the schema is JSON")
}

/// `Ok` or the error text of opening `scene`.
fn open(scene: &Value) -> Result<(), String> {
    let dir = bundle_with(scene);
    SceneBundle::open(dir.path())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn number(v: f64, integer: bool) -> Value {
    if integer { json!(v as i64) } else { json!(v) }
}

#[test]
fn schema_and_loader_agree_on_every_limit() {
    let schema = schema();
    for f in fields() {
        let node = &schema["$defs"][f.def]["properties"][f.prop];
        let (min, max) = number_range(&schema, node).unwrap_or_else(|| {
            panic!("{}.{}: no minimum and maximum in the schema", f.def, f.prop)
        });
        let range = Range { min, max }.to_string();
        let outside = if f.integer {
            [min - 1.0, max + 1.0]
        } else {
            // Just outside, by a step serde_json's float parsing keeps (it
            // may round a one-ulp difference away).
            let step = |v: f64| 1e-6 * v.abs().max(1.0);
            [min - step(min), max + step(max)]
        };
        for v in outside {
            // Below an unsigned type's zero, the document's types refuse
            // the value before the loader sees it.
            let unsigned = f.integer && min == 0.0 && v < 0.0 && f.prop != "time_offset";
            let shown = if f.integer {
                (v as i64).to_string()
            } else {
                show(v)
            };
            let expected = format!(
                "{CTX}: {}",
                f.error.replace("{v}", &shown).replace("{r}", &range)
            );
            let scene = (f.scene)(number(v, f.integer));
            if unsigned {
                let e = open(&scene).expect_err("a negative whole number");
                assert!(
                    e.starts_with("scene.json: compositions[0].")
                        && e.contains("invalid value: integer `-1`"),
                    "{}.{} = -1: {e}",
                    f.def,
                    f.prop
                );
                continue;
            }
            assert_eq!(
                open(&scene).err().as_deref(),
                Some(expected.as_str()),
                "{}.{} = {shown}, outside the schema's {range}",
                f.def,
                f.prop
            );
        }
        for v in [min, max] {
            // A bound may still break another rule (`end` 0 is not after
            // `start`), but never the range.
            if let Err(e) = open(&(f.scene)(number(v, f.integer))) {
                assert!(
                    !e.contains("out of range"),
                    "{}.{} = {v}, a bound of the schema's {range}, is refused: {e}",
                    f.def,
                    f.prop
                );
            }
        }
    }
}

/// Whether a property holds a number (through references, options, the
/// static branch of keyframeable values and arrays; not inside objects).
fn holds_number(root: &Value, node: &Value) -> bool {
    if let Some(r) = node.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/$defs/");
        return !name.starts_with("KeyframesDoc") && holds_number(root, &root["$defs"][name]);
    }
    let types = match node.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if types.iter().any(|t| *t == "number" || *t == "integer") {
        return true;
    }
    if let Some(branches) = node.get("anyOf").and_then(Value::as_array) {
        return branches.iter().any(|b| holds_number(root, b));
    }
    node.get("items").is_some_and(|i| holds_number(root, i))
}

#[test]
fn every_number_in_the_schema_is_limited_and_tested() {
    let schema = schema();
    let tested: Vec<(&str, &str)> = fields().iter().map(|f| (f.def, f.prop)).collect();
    // The root is the scene document.
    let root = ("SceneDoc".to_owned(), schema.clone());
    let defs = schema["$defs"].as_object().expect("$defs");
    let mut untested = Vec::new();
    for (def, d) in defs.iter().chain([(&root.0, &root.1)]) {
        // Every keyframe's frame is the same `Frame` number; one is tested.
        if def.starts_with("KeyframeDoc_") && def != "KeyframeDoc_Unit" {
            continue;
        }
        for (prop, p) in d
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if !holds_number(&schema, p) {
                continue;
            }
            assert!(
                number_range(&schema, p).is_some(),
                "{def}.{prop} holds a number with no minimum and maximum in the schema"
            );
            if !tested.contains(&(def.as_str(), prop.as_str())) {
                untested.push(format!("{def}.{prop}"));
            }
        }
    }
    // The format version is checked for equality, not as a range.
    assert_eq!(
        number_range(&schema, &schema["properties"]["version"]),
        Some((1.0, 1.0))
    );
    assert_eq!(
        untested,
        ["SceneDoc.version"],
        "limited numbers no test covers"
    );
}
