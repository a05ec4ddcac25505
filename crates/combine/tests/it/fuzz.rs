//! Fuzzing that stays: `coordinator combine --manifest` reads JSON a person
//! or a script wrote. Whatever it holds, reading it (and checking its
//! chunks before any file is opened) gives a manifest or a
//! `CombineError`, never a panic. Each run tries the corpus in
//! `tests/fixtures/fuzz/manifest/`, its seeds with numbers replaced by
//! extreme values, byte-level mutations and random text.
//! `FUZZ_CASES=20000 cargo test -p combine fuzz` searches longer.

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256)
}

fn corpus() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/fuzz/manifest");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("the manifest corpus")
        .map(|e| {
            let path = e.expect("entry").path();
            (
                path.file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned(),
                String::from_utf8_lossy(&std::fs::read(&path).expect("read")).into_owned(),
            )
        })
        .collect();
    files.sort();
    files
}

/// What `coordinator combine` does with a manifest, up to reading chunks:
/// parse, then combine into a temporary file (the chunk files named do not
/// exist, so a manifest that gets that far fails there).
fn exercise(text: &str) {
    let Ok(manifest) = combine::Manifest::from_json(text) else {
        return;
    };
    let options = manifest.options();
    let dir = tempfile::tempdir().expect("tempdir");
    let _ = combine::combine_chunks(&manifest.chunks, &options, dir.path().join("out.mp4"));
}

fn extreme() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
        Just(json!(u64::MAX - 1)),
        Just(json!(u32::MAX)),
        Just(json!(u64::from(u32::MAX) + 1)),
        Just(json!(i64::MIN)),
        Just(json!(1e308)),
        Just(json!(0.5)),
        Just(json!("30000/1001")),
        Just(json!("1/4294967295")),
        Just(json!("0/0")),
        Just(json!(null)),
        any::<u64>().prop_map(|v| json!(v)),
    ]
}

/// JSON pointers to every number and string in `v`.
fn leaves(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Number(_) | Value::String(_) => out.push(at),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                leaves(x, format!("{at}/{i}"), out);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                leaves(x, format!("{at}/{k}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_corpus_never_panics() {
    let corpus = corpus();
    assert!(corpus.len() >= 3, "the manifest corpus is missing");
    for (name, text) in corpus {
        let outcome = std::panic::catch_unwind(|| exercise(&text));
        assert!(outcome.is_ok(), "corpus input {name} panicked");
    }
}

/// Found by `seeds_with_extreme_values_never_panic`: a chunk ending at
/// frame `u64::MAX` overflowed its length while being read.
#[test]
fn a_chunk_ending_at_the_last_u64_is_refused_naming_it() {
    let (_, text) = corpus()
        .into_iter()
        .find(|(n, _)| n == "crash-frames-0-to-u64-max.json")
        .expect("the crash is in the corpus");
    let err = combine::Manifest::from_json(&text).expect_err("refused");
    assert!(
        err.to_string().starts_with(
            "manifest: chunks[0].chunk: chunk 0: frames.last 18446744073709551615 is invalid: the frame after a chunk's last must exist"
        ),
        "{err}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn seeds_with_extreme_values_never_panic(
        pick in any::<Index>(),
        edits in prop::collection::vec((any::<Index>(), extreme()), 1..5),
    ) {
        let seeds: Vec<Value> = corpus()
            .into_iter()
            .filter(|(n, _)| n.starts_with("seed-"))
            .map(|(_, t)| serde_json::from_str(&t).expect("seeds are JSON"))
            .collect();
        let mut doc = pick.get(&seeds).clone();
        let mut paths = Vec::new();
        leaves(&doc, String::new(), &mut paths);
        for (i, v) in edits {
            let at = i.get(&paths);
            *doc.pointer_mut(at).expect("a leaf's pointer") = v;
        }
        exercise(&doc.to_string());
    }

    #[test]
    fn mutated_text_never_panics(
        pick in any::<Index>(),
        edits in prop::collection::vec((any::<Index>(), any::<char>()), 1..6),
    ) {
        let corpus = corpus();
        let mut chars: Vec<char> = pick.get(&corpus).1.chars().collect();
        for (i, c) in edits {
            let at = i.index(chars.len() + 1);
            if at < chars.len() && c.is_ascii_digit() {
                chars[at] = c;
            } else {
                chars.insert(at.min(chars.len()), c);
            }
        }
        exercise(&chars.into_iter().collect::<String>());
    }

    #[test]
    fn random_text_never_panics(text in ".{0,200}") {
        exercise(&text);
    }
}
