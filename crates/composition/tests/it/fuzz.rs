//! Fuzzing that stays in CI: the promo's `scene.json` with numbers replaced
//! by extreme values (0, -0, denormals, 1e308, huge and negative integers,
//! `NaN` and `Infinity` as strings) must open, describe, prepare and render
//! a small frame, or fail with a `CompositionError`: never panic. A bounded
//! number of cases keeps it to seconds; the scenes it found are kept in
//! `tests/fixtures/fuzz/scene` (see `hostile.rs`).

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};

use crate::hostile::open_and_render;
use crate::{bundle_with, promo_dir};

/// Values a hostile or careless editor writes where numbers go, and the
/// bounds of what the format allows.
fn extreme() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(-0.0)),
        Just(json!(1e-320)),
        Just(json!(1e-308)),
        Just(json!(1e308)),
        Just(json!(-1e308)),
        Just(json!("NaN")),
        Just(json!("Infinity")),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(u32::MAX)),
        Just(json!(-1)),
        Just(json!(1_000_001)),
        Just(json!(0.5)),
        // The bounds of the format's ranges, where rendering still runs.
        Just(json!(1e-300)),
        Just(json!(0.1)),
        Just(json!(1)),
        Just(json!(10)),
        Just(json!(240)),
        Just(json!(1000)),
        Just(json!(-1000)),
        Just(json!(4096)),
        Just(json!(1_000_000)),
        Just(json!(-1_000_000)),
        Just(json!(9_007_199_254_740_993u64)),
        (-1e7f64..1e7).prop_map(|v| json!(v)),
    ]
}

/// JSON pointers to every number in `v`.
fn numbers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Number(_) => out.push(at),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                numbers(x, format!("{at}/{i}"), out);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                numbers(
                    x,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        _ => {}
    }
}

/// The promo at a tenth of its size, so a case renders in milliseconds.
fn small_promo() -> Value {
    let text = std::fs::read_to_string(promo_dir().join("scene.json")).expect("promo scene");
    let mut scene: Value = serde_json::from_str(&text).expect("promo is JSON");
    scene["compositions"][0]["width"] = json!(192);
    scene["compositions"][0]["height"] = json!(108);
    scene
}

/// Cases per run: 64 in CI; `FUZZ_CASES=5000 cargo test -p composition fuzz`
/// searches longer.
fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]
    #[test]
    fn mutated_promo_never_panics(edits in prop::collection::vec((any::<Index>(), extreme()), 1..4)) {
        let mut scene = small_promo();
        let mut paths = Vec::new();
        numbers(&scene, String::new(), &mut paths);
        for (i, v) in edits {
            let at = i.get(&paths);
            *scene.pointer_mut(at).expect("a number's pointer") = v;
        }
        let dir = bundle_with(&scene);
        // Ok or an error; a panic fails the case (proptest catches it and
        // shrinks to the smallest edit list).
        let outcome = open_and_render(dir.path());
        if std::env::var_os("FUZZ_SHOW").is_some() {
            eprintln!("{outcome:?}");
        }
    }
}
