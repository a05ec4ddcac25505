//! `coordinator batch`: campaigns of many rows through the real CLI (its
//! embedded workers), real files, judged by Debian's ffmpeg.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use testkit::media::{self, Frame, PixFmt};

use crate::kit::{coordinator, events, run, sha256};
use crate::s3::{bucket, download, keys};

/// A 64x36 template with the promo's font and badge: a title `{name}`, a
/// subtitle `{count}`, a rotating square, `{frames}` frames (6 by default).
pub(crate) fn tiny_bundle(dir: &Path) -> PathBuf {
    let bundle = dir.join("tiny");
    std::fs::create_dir_all(&bundle).expect("bundle dir");
    let promo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/promo");
    for f in ["DejaVuSans-Bold.ttf", "badge.png"] {
        std::fs::copy(promo.join(f), bundle.join(f)).expect("copy asset");
    }
    let scene = serde_json::json!({
        "version": 1,
        "fonts": ["DejaVuSans-Bold.ttf"],
        "compositions": [{
            "id": "promo", "width": 64, "height": 36, "fps": 30, "duration": "{frames}",
            "props": {"name": "Ada", "count": 12, "frames": 6},
            "layers": [
                {"type": "solid", "name": "Background", "color": "#1e3a8a"},
                {"type": "rect", "name": "Square", "size": [10, 10], "fill": "#f59e0b",
                 "position": [54, 26],
                 "rotation": {"keyframes": [{"frame": 0, "value": 0}, {"frame": 6, "value": 90}]}},
                {"type": "image", "name": "Badge", "src": "badge.png", "size": [12, 12],
                 "position": [2, 2]},
                {"type": "text", "name": "Title", "text": "{name}", "font": "DejaVu Sans",
                 "weight": 700, "font_size": 14, "color": "white", "align": "center",
                 "size": [64, 16], "position": [0, 12]},
                {"type": "text", "name": "Subtitle", "text": "{count}", "font": "DejaVu Sans",
                 "weight": 700, "font_size": 9, "color": "#fde68a", "align": "left",
                 "size": [30, 10], "position": [2, 26]}
            ]
        }]
    });
    std::fs::write(
        bundle.join("scene.json"),
        serde_json::to_vec_pretty(&scene).expect("json"),
    )
    .expect("scene.json");
    bundle
}

/// `coordinator batch BUNDLE --variants FILE --out OUT --json --local 2`
/// and `extra`.
pub(crate) fn batch(bundle: &Path, variants: &Path, out: &str, extra: &[&str]) -> Command {
    let mut c = coordinator();
    c.arg("batch")
        .arg(bundle)
        .arg("--variants")
        .arg(variants)
        .args(["--out", out, "--json", "--local", "2"])
        .args(extra);
    c
}

/// The results file's lines, parsed.
pub(crate) fn results(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("results.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn by_row(results: &[serde_json::Value]) -> BTreeMap<u64, serde_json::Value> {
    results
        .iter()
        .map(|r| (r["row"].as_u64().expect("row"), r.clone()))
        .collect()
}

fn status_counts(results: &[serde_json::Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in results {
        *counts
            .entry(r["status"].as_str().expect("status").to_owned())
            .or_default() += 1;
    }
    counts
}

/// `coordinator still` of `props` at `frame`, decoded to RGBA.
fn still(bundle: &Path, props: &[(&str, &str)], frame: u64, dir: &Path) -> Frame {
    let png = dir.join(format!("still-{}-{frame}.png", label(props)));
    let mut c = coordinator();
    c.arg("still")
        .arg(bundle)
        .args(["--frame", &frame.to_string()]);
    for (k, v) in props {
        c.args(["--prop", &format!("{k}={v}")]);
    }
    c.arg("--out").arg(&png);
    let o = run(c);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    media::decode_video_frames(&png, PixFmt::Rgba).remove(0)
}

fn label(props: &[(&str, &str)]) -> String {
    props
        .iter()
        .map(|(k, v)| format!("{k}_{v}"))
        .collect::<Vec<_>>()
        .join("-")
        .replace(['/', '.'], "_")
}

/// Pixels of two RGBA frames that differ by more than `tolerance` in some
/// channel (the video went through BT.709 YUV and back).
fn differing_pixels(a: &Frame, b: &Frame, tolerance: u8) -> usize {
    a.planes[0]
        .data
        .chunks_exact(4)
        .zip(b.planes[0].data.chunks_exact(4))
        .filter(|(p, q)| {
            p.iter()
                .zip(*q)
                .take(3)
                .any(|(x, y)| x.abs_diff(*y) > tolerance)
        })
        .count()
}

/// A colour conversion there and back moves a channel by a few levels;
/// text and shapes that differ move whole glyphs.
const TOLERANCE: u8 = 12;

#[test]
fn seven_rows_render_five_variants_that_look_like_their_stills() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = tiny_bundle(dir.path());
    let rows = dir.path().join("rows.csv");
    // Rows 3 and 6 repeat rows 1 and 2; row 4 overrides the subtitle
    // (header with the composition's id, as After Effects templates
    // write it); row 6 asks for its own file, a copy.
    std::fs::write(
        &rows,
        "name,count,text.promo.Subtitle,out\n\
         Ada,1,,\n\
         Bob,2,,\n\
         Ada,1,,\n\
         Cy,3,Hello,\n\
         Dee,4,,\n\
         Bob,2,,copy-of-bob.mp4\n\
         Eve,5,,\n",
    )
    .expect("rows");
    let out = dir.path().join("out");
    let o = run(batch(
        &bundle,
        &rows,
        out.to_str().expect("utf8"),
        &["--name", "{name}-{count}.mp4", "--lossless"],
    ));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    assert_eq!(events(&stdout, "row").len(), 7, "{stdout}");
    assert!(
        stderr.contains("5 variants in ") && stderr.contains("(7 rows, 2 duplicates)"),
        "{stderr}"
    );

    let results = results(&out.join("results.jsonl"));
    assert_eq!(results.len(), 7);
    assert_eq!(
        status_counts(&results),
        BTreeMap::from([("duplicate".into(), 2), ("rendered".into(), 5)])
    );
    let rows = by_row(&results);
    assert_eq!(rows[&3]["duplicate_of"], 1);
    assert_eq!(rows[&3]["variant"], rows[&1]["variant"]);
    assert_eq!(rows[&6]["duplicate_of"], 2);
    assert_eq!(rows[&6]["out"], "copy-of-bob.mp4");
    assert_eq!(
        sha256(&out.join("copy-of-bob.mp4")),
        sha256(&out.join("Bob-2.mp4"))
    );

    // Every output decodes to the frames of `coordinator still` with the
    // same props, and not to another row's.
    let cases: [(&str, &[(&str, &str)]); 5] = [
        ("Ada-1.mp4", &[("name", "Ada"), ("count", "1")]),
        ("Bob-2.mp4", &[("name", "Bob"), ("count", "2")]),
        (
            "Cy-3.mp4",
            &[("name", "Cy"), ("count", "3"), ("text.Subtitle", "Hello")],
        ),
        ("Dee-4.mp4", &[("name", "Dee"), ("count", "4")]),
        ("Eve-5.mp4", &[("name", "Eve"), ("count", "5")]),
    ];
    let pixels = 64 * 36;
    for (file, props) in cases {
        let frames = media::decode_video_frames(out.join(file), PixFmt::Rgba);
        assert_eq!(frames.len(), 6, "{file}");
        for f in [0, 5] {
            let expected = still(&bundle, props, f, dir.path());
            let off = differing_pixels(&frames[f as usize], &expected, TOLERANCE);
            println!("{file} frame {f}: {off} of {pixels} pixels differ from its still");
            assert!(
                off * 100 < pixels,
                "{file} frame {f}: {off} pixels differ from its still"
            );
        }
    }
    let ada = media::decode_video_frames(out.join("Ada-1.mp4"), PixFmt::Rgba);
    let bob = still(&bundle, &[("name", "Bob"), ("count", "2")], 5, dir.path());
    let off = differing_pixels(&ada[5], &bob, TOLERANCE);
    println!("Ada's video against Bob's still: {off} of {pixels} pixels differ");
    assert!(
        off * 20 > pixels,
        "Ada's video looks like Bob's still ({off} pixels differ)"
    );
}

#[test]
fn invalid_rows_are_each_named_and_keep_going_renders_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = tiny_bundle(dir.path());
    let rows = dir.path().join("rows.csv");
    std::fs::write(
        &rows,
        "name,count,image.Badge,transform.Square.scale,out\n\
         Ada,1,,,\n\
         Bob,lots,,,\n\
         Cy,3,nope.png,,\n\
         Dee,4,,huge,\n\
         Eve,5,,,Ada-1.mp4\n\
         Fay,6,,2,\n",
    )
    .expect("rows");
    let out = dir.path().join("out");
    let o = run(batch(
        &bundle,
        &rows,
        out.to_str().expect("utf8"),
        &["--name", "{name}-{count}.mp4"],
    ));
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let invalid: Vec<serde_json::Value> = events(&stdout, "row_invalid")
        .iter()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let named: Vec<(u64, Option<&str>, &str)> = invalid
        .iter()
        .map(|e| {
            (
                e["row"].as_u64().expect("row"),
                e["column"].as_str(),
                e["reason"].as_str().expect("reason"),
            )
        })
        .collect();
    assert_eq!(
        named,
        [
            (2, Some("count"), "invalid_cell"),
            (3, None, "missing_asset"),
            (4, None, "invalid_input"),
            (5, Some("out"), "output_name"),
        ],
        "{stdout}"
    );
    assert!(
        invalid[0]["message"]
            .as_str()
            .is_some_and(|m| m == "`lots` is not a number (the default of `count` is 12)"),
        "{stdout}"
    );
    assert!(
        invalid[1]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nope.png")),
        "{stdout}"
    );
    assert!(
        invalid[2]["message"]
            .as_str()
            .is_some_and(|m| m.contains("transform.Square.scale") && m.contains("huge")),
        "{stdout}"
    );
    assert!(
        stderr.contains("4 of 6 rows are invalid") && stderr.contains("--keep-going"),
        "{stderr}"
    );
    assert!(
        !out.join("Ada-1.mp4").exists(),
        "nothing renders before every row is valid"
    );

    // Without --json, each bad row is one line on stderr.
    let plain = run({
        let mut c = coordinator();
        c.arg("batch")
            .arg(&bundle)
            .arg("--variants")
            .arg(&rows)
            .arg("--out")
            .arg(&out)
            .args(["--local", "1", "--name", "{name}-{count}.mp4"]);
        c
    });
    let text = String::from_utf8_lossy(&plain.stderr);
    assert!(
        text.contains("row 2, column `count`: `lots` is not a number (the default of `count` is 12)\n")
            && text.contains("row 5, column `out`: output `Ada-1.mp4` is also the name of row 1, which renders different content\n"),
        "{text}"
    );

    // --keep-going renders the two valid rows; the others are results.
    let o = run(batch(
        &bundle,
        &rows,
        out.to_str().expect("utf8"),
        &["--name", "{name}-{count}.mp4", "--keep-going"],
    ));
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("2 variants in ")
            && stderr.contains(
                "4 failed: 1 invalid cell, 1 missing asset, 1 invalid input, 1 output name"
            ),
        "{stderr}"
    );
    let results = results(&out.join("results.jsonl"));
    assert_eq!(
        status_counts(&results),
        BTreeMap::from([("invalid".into(), 4), ("rendered".into(), 2)])
    );
    assert_eq!(by_row(&results)[&3]["error"]["class"], "input");
    assert_eq!(media::count_video_frames(out.join("Fay-6.mp4")), 6);
}

/// Sixteen distinct rows, long enough per variant that a kill lands
/// mid-batch.
fn sixteen_rows(dir: &Path) -> PathBuf {
    let rows = dir.join("rows.jsonl");
    let text: String = (0..16)
        .map(|i| format!("{{\"name\":\"V{i}\",\"count\":{i},\"frames\":90}}\n"))
        .collect();
    std::fs::write(&rows, text).expect("rows");
    rows
}

#[test]
fn a_killed_batch_resumes_with_only_the_rows_it_had_not_finished() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = tiny_bundle(dir.path());
    let rows = sixteen_rows(dir.path());
    let killed = dir.path().join("killed");
    let extra = ["--name", "{name}.mp4", "--preset", "medium"];

    let mut child = batch(&bundle, &rows, killed.to_str().expect("utf8"), &extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn coordinator");
    let stdout = child.stdout.take().expect("stdout");
    let mut finished = BTreeSet::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if line.contains("\"event\":\"row\"") {
            let v: serde_json::Value = serde_json::from_str(&line).expect("json");
            finished.insert(v["row"].as_u64().expect("row"));
            if finished.len() == 3 {
                child.kill().expect("kill -9 the coordinator");
                break;
            }
        }
    }
    let _ = child.wait();
    assert_eq!(finished.len(), 3, "the batch ended early");
    let before: BTreeSet<u64> = by_row(&results(&killed.join("results.jsonl")))
        .into_keys()
        .collect();
    assert!(before.len() < 16, "the kill came too late to test anything");

    // The same command again renders exactly the rows without a result.
    let o = run(batch(
        &bundle,
        &rows,
        killed.to_str().expect("utf8"),
        &extra,
    ));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let again: BTreeSet<u64> = events(&stdout, "row")
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["row"]
                .as_u64()
                .expect("row")
        })
        .collect();
    let all: BTreeSet<u64> = (1..=16).collect();
    assert_eq!(again, all.difference(&before).copied().collect());
    let planned: serde_json::Value =
        serde_json::from_str(events(&stdout, "batch_planned")[0]).expect("json");
    assert_eq!(planned["done_before"], before.len());

    // Every output is there, byte for byte what a clean run writes.
    let clean = dir.path().join("clean");
    let o = run(batch(&bundle, &rows, clean.to_str().expect("utf8"), &extra));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for i in 0..16 {
        let name = format!("V{i}.mp4");
        assert_eq!(
            sha256(&killed.join(&name)),
            sha256(&clean.join(&name)),
            "{name}"
        );
    }
    // A kill -9 can leave hidden temporary files (a work directory, a
    // combine's output before its rename), never a file under a final
    // name that is not whole: every visible file is an output above.
    let visible: BTreeSet<String> = std::fs::read_dir(&killed)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    let expected: BTreeSet<String> = (0..16)
        .map(|i| format!("V{i}.mp4"))
        .chain(["results.jsonl".to_owned()])
        .collect();
    assert_eq!(visible, expected);
}

/// Peak resident memory of process `pid` so far, in KiB.
fn peak_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[test]
fn ten_thousand_tiny_rows_with_many_duplicates_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = tiny_bundle(dir.path());
    let rows = dir.path().join("rows.csv");
    let mut text = String::from("name,count,frames\n");
    for i in 0..10_000u32 {
        // 40 distinct variants.
        text.push_str(&format!("N{},{},3\n", i % 8, i % 5));
    }
    std::fs::write(&rows, text).expect("rows");
    let out = dir.path().join("out");
    let mut child = batch(&bundle, &rows, out.to_str().expect("utf8"), &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn coordinator");
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        if let Some(k) = peak_kib(pid) {
            peak = peak.max(k);
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert!(status.success(), "{stderr}");
    println!(
        "10 000 rows: peak resident memory of the coordinator {} MiB; {}",
        peak / 1024,
        stderr.trim()
    );
    let results = results(&out.join("results.jsonl"));
    assert_eq!(results.len(), 10_000);
    assert_eq!(by_row(&results).len(), 10_000, "one result per row");
    assert_eq!(
        status_counts(&results),
        BTreeMap::from([("duplicate".into(), 9_960), ("rendered".into(), 40)])
    );
    assert!(stderr.contains("40 variants in "), "{stderr}");
    // Named by content hash: 40 files under ab/cd/.
    let outputs: BTreeSet<&str> = results
        .iter()
        .map(|r| r["output"].as_str().expect("output"))
        .collect();
    assert_eq!(outputs.len(), 40);
    for o in outputs {
        let file = Path::new(o);
        let name = file.file_stem().expect("stem").to_string_lossy();
        assert_eq!(sha256(file), name, "{o} is named by its sha256");
    }
}

#[test]
fn jsonl_rows_go_to_an_s3_prefix_named_by_content() {
    let (name, store) = bucket("batch");
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = tiny_bundle(dir.path());
    let rows = dir.path().join("rows.jsonl");
    std::fs::write(
        &rows,
        "{\"name\":\"Ada\",\"count\":1}\n\
         {\"name\":\"Bob\",\"count\":2,\"visible.Badge\":false}\n\
         {\"name\":\"Ada\",\"count\":1}\n\
         {\"name\":\"Ada\",\"count\":1,\"out\":\"named/ada.mp4\"}\n",
    )
    .expect("rows");
    let prefix = format!("s3://{name}/campaign/");
    let mut c = batch(&bundle, &rows, &prefix, &[]);
    c.envs(testkit::moto().aws_env()).current_dir(dir.path());
    let o = run(c);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Without --results: results.jsonl in the current directory.
    let results = by_row(&results(&dir.path().join("results.jsonl")));
    assert_eq!(results.len(), 4);
    assert_eq!(results[&3]["status"], "duplicate");
    assert_eq!(results[&3]["output"], results[&1]["output"]);
    assert_eq!(results[&4]["output"], format!("{prefix}named/ada.mp4"));
    let ada = results[&1]["output"].as_str().expect("url").to_owned();
    let bob = results[&2]["output"].as_str().expect("url").to_owned();
    let key_of = |url: &str| {
        url.strip_prefix(&format!("s3://{name}/"))
            .expect("in the bucket")
            .to_owned()
    };
    let mut listed = keys(&store, "campaign/");
    listed.sort();
    let mut expected = vec![
        key_of(&ada),
        key_of(&bob),
        "campaign/named/ada.mp4".to_owned(),
        "campaign/results.jsonl".to_owned(),
    ];
    expected.sort();
    assert_eq!(listed, expected);
    let local = dir.path().join("ada.mp4");
    download(&store, &key_of(&ada), &local);
    let hash = sha256(&local);
    assert!(
        ada.ends_with(&format!("/{}/{}/{hash}.mp4", &hash[..2], &hash[2..4])),
        "{ada}"
    );
    let copy = dir.path().join("copy.mp4");
    download(&store, "campaign/named/ada.mp4", &copy);
    assert_eq!(sha256(&copy), hash);
    assert_eq!(media::count_video_frames(&local), 6);
}

/// What an agent of a queue fleet does: a `VariantJob` received as JSON,
/// rendered by `Coordinator::render_variant`, gives the bytes the batch
/// gives for the same row.
#[test]
fn a_variant_job_renders_on_its_own_to_the_bytes_of_the_batch() {
    use coordinator::batch::{BatchOutput, VariantJob, VariantSource};
    use coordinator::{Coordinator, CoordinatorOptions, RenderSource};
    use std::sync::Arc;

    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = tiny_bundle(dir.path());
    let rows = dir.path().join("rows.csv");
    std::fs::write(&rows, "name,count\nAda,1\n").expect("rows");
    let batched = dir.path().join("batched");
    let o = run(batch(
        &bundle,
        &rows,
        batched.to_str().expect("utf8"),
        &["--name", "{name}.mp4"],
    ));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let alone = dir.path().join("alone");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (summary, refused) = runtime.block_on(async {
        let coordinator = Arc::new(
            Coordinator::embedded(
                1,
                chunk_worker::WorkerConfig::standard(),
                CoordinatorOptions::default(),
            )
            .await
            .expect("coordinator"),
        );
        let context = Arc::new(
            coordinator
                .variant_context(&RenderSource::Bundle(bundle.clone()))
                .await
                .expect("context"),
        );
        let VariantSource::Bundle { sha256 } = context.variant_source() else {
            panic!("a bundle's context");
        };
        let job = |sha: String| -> VariantJob {
            serde_json::from_value(serde_json::json!({
                "format": 1,
                "source": {"kind": "bundle", "sha256": sha},
                "composition": "promo",
                "props": {"name": "Ada", "count": 1, "frames": 6},
                "settings": {"chunks": null, "frames": null, "every_nth_frame": 1,
                             "video": spec::VideoSettings::default(),
                             "audio_bitrate": 192000, "enforce_audio_track": false},
                "split": {"count": 1},
                "output": "Ada.mp4"
            }))
            .expect("a job")
        };
        let root = BatchOutput::Directory(alone.clone());
        let summary = coordinator
            .render_variant(job(sha256.to_hex()), Arc::clone(&context), &root)
            .finish()
            .await
            .expect("renders");
        let other = "0".repeat(64);
        let refused = coordinator
            .render_variant(job(other), Arc::clone(&context), &root)
            .finish()
            .await
            .expect_err("another bundle");
        drop(context);
        if let Ok(c) = Arc::try_unwrap(coordinator) {
            c.shutdown().await;
        }
        (summary, refused)
    });
    assert_eq!(summary.frames, 6);
    assert_eq!(
        sha256(&alone.join("Ada.mp4")),
        sha256(&batched.join("Ada.mp4"))
    );
    assert_eq!(refused.kind(), coordinator::ErrorKind::Input);
    assert!(
        refused.to_string().starts_with("the job's source"),
        "{refused}"
    );
}

#[test]
fn an_interrupted_batch_exits_130_keeping_the_rows_it_finished() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = tiny_bundle(dir.path());
    let rows = sixteen_rows(dir.path());
    let out = dir.path().join("out");
    let mut child = batch(
        &bundle,
        &rows,
        out.to_str().expect("utf8"),
        &["--name", "{name}.mp4", "--preset", "medium"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn coordinator");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        if line.expect("line").contains("\"event\":\"row\"") {
            let o = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .output()
                .expect("kill");
            assert!(o.status.success());
            break;
        }
    }
    for _ in lines {}
    let o = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("cancelled: rows finished before keep their outputs and results"),
        "{stderr}"
    );
    let results = results(&out.join("results.jsonl"));
    assert!(!results.is_empty() && results.len() < 16, "{results:?}");
    // Every output present is whole and has its result; no other file is
    // left, not even a temporary one.
    let mut files: BTreeSet<String> = std::fs::read_dir(&out)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.remove("results.jsonl"));
    let with_results: BTreeSet<String> = results
        .iter()
        .map(|r| {
            Path::new(r["output"].as_str().expect("output"))
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(files, with_results);
    for f in &files {
        assert_eq!(media::count_video_frames(out.join(f)), 90, "{f}");
    }
}
