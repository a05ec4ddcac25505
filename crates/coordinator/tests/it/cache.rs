//! The render cache, through the CLI on real processes: a killed render
//! resumes from the chunks it finished, identical variants render once,
//! `--no-cache` renders again, and a damaged cache entry is rendered again
//! rather than trusted.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use testkit::media;

use crate::kit::{coordinator, events, render_command, render_on, run, sha256, start_worker};

/// Twelve 60-frame chunks: long enough that the coordinator can be killed
/// with most of them unrendered.
const LONG: &str = r#"{"width":480,"height":270,"duration":720,"fps":"30"}"#;
/// A quick one.
const QUICK: &str = r#"{"width":160,"height":90,"duration":60,"fps":"30"}"#;

/// The `chunk` number of every event line of `kind`.
fn chunks_of(stdout: &str, kind: &str) -> BTreeSet<u64> {
    events(stdout, kind)
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("event JSON");
            v["chunk"].as_u64().expect("chunk number")
        })
        .collect()
}

/// The chunks of the `cache_hit` event, and whether it was the whole output.
fn cache_hits(stdout: &str) -> (BTreeSet<u64>, bool) {
    match events(stdout, "cache_hit").first() {
        None => (BTreeSet::new(), false),
        Some(l) => {
            let v: serde_json::Value = serde_json::from_str(l).expect("event JSON");
            let chunks = v["chunks"]
                .as_array()
                .expect("chunks")
                .iter()
                .map(|c| c.as_u64().expect("chunk number"))
                .collect();
            (chunks, v["output"].as_bool().expect("output flag"))
        }
    }
}

fn done_event(stdout: &str) -> serde_json::Value {
    let line = events(stdout, "done")
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no done event:\n{stdout}"));
    serde_json::from_str(line).expect("done JSON")
}

fn cache_arg(dir: &Path) -> [String; 2] {
    ["--cache".into(), dir.display().to_string()]
}

#[test]
fn a_killed_coordinator_resumes_from_the_chunks_it_finished() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let workers = [start_worker(1), start_worker(1)];
    let pool = [&workers[0], &workers[1]];
    let [flag, value] = cache_arg(&cache);
    let extra = [flag.as_str(), value.as_str()];

    // Kill -9 the coordinator once three chunks are finished.
    let killed = dir.path().join("killed.mp4");
    let mut child = render_command(&pool, LONG, 12, &killed, &extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn coordinator");
    let stdout = child.stdout.take().expect("stdout");
    let mut finished = BTreeSet::new();
    let mut seen = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line.expect("line");
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("\"event\":\"chunk_finished\"") {
            finished.extend(chunks_of(&line, "chunk_finished"));
            if finished.len() == 3 {
                child.kill().expect("kill -9 the coordinator");
                break;
            }
        }
    }
    let _ = child.wait();
    assert_eq!(finished.len(), 3, "the render ended early:\n{seen}");
    assert!(!killed.exists(), "a killed render must leave no output");

    // The same render again: only the missing chunks are rendered.
    let out = dir.path().join("resumed.mp4");
    let o = render_on(&pool, LONG, 12, &out, &extra);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (hits, whole) = cache_hits(&stdout);
    assert!(!whole, "no output was finished before the kill");
    assert!(
        hits.is_superset(&finished),
        "finished chunks {finished:?} were not reused (hits {hits:?})"
    );
    assert!(hits.len() < 12, "the kill came too late to test anything");
    let started = chunks_of(&stdout, "chunk_started");
    let all: BTreeSet<u64> = (0..12).collect();
    assert_eq!(
        started,
        all.difference(&hits).copied().collect(),
        "exactly the missing chunks are rendered"
    );
    assert_eq!(done_event(&stdout)["cached_chunks"], hits.len());

    // And the result is the file a render without any cache gives.
    let fresh = dir.path().join("fresh.mp4");
    let o = render_on(&pool, LONG, 12, &fresh, &["--cache", "off"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(sha256(&out), sha256(&fresh));
    assert_eq!(media::count_video_frames(&out), 720);
}

/// `coordinator render` of the built-in pattern on the embedded pool.
fn render_local(props: &str, out: &Path, extra: &[&str]) -> (String, String) {
    let mut c = coordinator();
    c.args(["render", "--local", "2", "--chunks", "4", "--json"])
        .args(["--props", props, "--out"])
        .arg(out)
        .args(extra);
    let o = run(c);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    (String::from_utf8_lossy(&o.stdout).into_owned(), stderr)
}

fn files_named(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                found.push(p);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn identical_variants_render_once_and_damaged_entries_render_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let c = cache.display().to_string();
    let with_cache = ["--cache", c.as_str()];

    let first = dir.path().join("first.mp4");
    let (stdout, _) = render_local(QUICK, &first, &with_cache);
    assert_eq!(chunks_of(&stdout, "chunk_started").len(), 4);
    assert_eq!(files_named(&cache, "ts").len(), 4);

    // The same variant again (props spelled in another order): nothing is
    // rendered, the output comes from the cache, byte for byte.
    let reordered = r#"{"fps":"30","duration":60,"height":90,"width":160}"#;
    let again = dir.path().join("again.mp4");
    let (stdout, stderr) = render_local(reordered, &again, &with_cache);
    assert!(events(&stdout, "chunk_started").is_empty(), "{stdout}");
    assert_eq!(cache_hits(&stdout), ((0..4).collect(), true));
    assert_eq!(done_event(&stdout)["output_cached"], true);
    assert!(stderr.contains("taken from the cache"), "{stderr}");
    assert_eq!(sha256(&again), sha256(&first));

    // --no-cache renders every chunk again, to the same bytes.
    let forced = dir.path().join("forced.mp4");
    let mut args = with_cache.to_vec();
    args.push("--no-cache");
    let (stdout, _) = render_local(QUICK, &forced, &args);
    assert_eq!(chunks_of(&stdout, "chunk_started").len(), 4);
    assert!(events(&stdout, "cache_hit").is_empty());
    assert_eq!(sha256(&forced), sha256(&first));

    // A damaged chunk is not trusted: with the output record gone, the
    // render reuses three chunks and renders the damaged one again.
    for json in files_named(&cache.join("outputs"), "json") {
        std::fs::remove_file(json).expect("remove output record");
    }
    let victim = files_named(&cache, "ts")[0].clone();
    let mut bytes = std::fs::read(&victim).expect("read chunk");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&victim, bytes).expect("damage chunk");
    let repaired = dir.path().join("repaired.mp4");
    let (stdout, _) = render_local(QUICK, &repaired, &with_cache);
    let (hits, whole) = cache_hits(&stdout);
    assert!(!whole);
    assert_eq!(hits.len(), 3, "{stdout}");
    assert_eq!(chunks_of(&stdout, "chunk_started").len(), 1);
    assert_eq!(sha256(&repaired), sha256(&first));

    // A different variant renders.
    let other = dir.path().join("other.mp4");
    let (stdout, _) = render_local(
        r#"{"width":160,"height":90,"duration":60,"fps":"30","frequency":660}"#,
        &other,
        &with_cache,
    );
    assert_eq!(chunks_of(&stdout, "chunk_started").len(), 4);
    assert_ne!(sha256(&other), sha256(&first));
}

#[test]
fn bad_cache_flags_are_refused_with_the_flag_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("x.mp4");
    for (args, expected) in [
        (
            vec!["--cache", "ftp://host/x"],
            "cache `ftp://host/x`: location `ftp://host/x/`: unsupported scheme",
        ),
        (
            vec!["--cache-size", "lots"],
            "--cache-size `lots` is not a size",
        ),
        (vec!["--presign", "60"], "--presign needs an s3:// output"),
    ] {
        let mut c = coordinator();
        c.args([
            "render", "--local", "1", "--chunks", "1", "--props", QUICK, "--out",
        ])
        .arg(&out)
        .args(&args);
        let o = run(c);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!out.exists());
    }
}
