//! Renders through the CLI on real worker processes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use testkit::media::{self, PixFmt};

use crate::kit::{
    WorkerProcess, coordinator, events, render_command, render_on, render_watching, run, sha256,
    start_worker,
};

/// A small test pattern at 29.97 fps with a continuous sine.
const SMALL: &str = r#"{"width":160,"height":90,"duration":96,"fps":"30000/1001"}"#;
/// Longer chunks, so a worker can be killed while it renders.
const SLOW: &str = r#"{"width":640,"height":360,"duration":360,"fps":"30"}"#;

#[test]
fn sixteen_chunks_over_three_workers_equal_one_chunk() {
    let workers = [start_worker(2), start_worker(1), start_worker(1)];
    let refs: Vec<&WorkerProcess> = workers.iter().collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let one = dir.path().join("one.mp4");
    let sixteen = dir.path().join("sixteen.mp4");
    for (out, n) in [(&one, 1), (&sixteen, 16)] {
        let o = render_on(&refs, SMALL, n, out, &["--lossless"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let stdout = String::from_utf8(
        render_on(
            &refs,
            SMALL,
            16,
            &dir.path().join("again.mp4"),
            &["--lossless"],
        )
        .stdout,
    )
    .expect("utf8");
    // Every worker got work.
    let finished = events(&stdout, "chunk_finished");
    assert_eq!(finished.len(), 16);
    for w in &workers {
        assert!(
            finished.iter().any(|l| l.contains(&w.url)),
            "{} rendered nothing",
            w.url
        );
    }

    // Independent checks on the 16-chunk output: frame count, PTS of frame k
    // exactly k·1001/30000 s, DTS strictly increasing, a keyframe at every
    // chunk start (96 frames in chunks of 6).
    let media::Packets { time_base, packets } = media::video_packets(&sixteen);
    assert_eq!(packets.len(), 96);
    let (num, den) = (time_base.num, time_base.den);
    let mut pts: Vec<i64> = packets.iter().map(|p| p.pts).collect();
    pts.sort_unstable();
    for (k, p) in pts.iter().enumerate() {
        // p·num/den == k·1001/30000 exactly.
        assert_eq!(p * num * 30_000, k as i64 * 1001 * den, "frame {k}");
    }
    assert!(
        packets.windows(2).all(|w| w[0].dts < w[1].dts),
        "DTS not strictly increasing"
    );
    let keys: Vec<usize> = {
        let mut by_pts: Vec<(i64, bool)> = packets.iter().map(|p| (p.pts, p.key)).collect();
        by_pts.sort_unstable();
        by_pts
            .iter()
            .enumerate()
            .filter(|(_, p)| p.1)
            .map(|(i, _)| i)
            .collect()
    };
    // x264 may add keyframes at scene cuts; every chunk must start with one.
    for start in (0..96).step_by(6) {
        assert!(
            keys.contains(&start),
            "chunk start {start} is not a keyframe: {keys:?}"
        );
    }

    // Exact audio length: S(96) = floor(96·48000·1001/30000) samples.
    let samples: u64 = 96 * 48_000 * 1001 / 30_000;
    assert_eq!(
        media::probe(&sixteen).audio().duration_ts,
        Some(samples as i64)
    );

    // Decoded frames and samples equal the 1-chunk render's (--lossless
    // renders yuv444p).
    assert_eq!(
        media::probe(&sixteen).video().pix_fmt.as_deref(),
        Some("yuv444p")
    );
    media::assert_frames_eq(
        &media::decode_video_frames(&sixteen, PixFmt::Yuv444p),
        &media::decode_video_frames(&one, PixFmt::Yuv444p),
        "16 chunks against 1",
    );
    let a16 = media::decode_audio_trimmed(&sixteen, samples);
    assert_eq!(a16.len() as u64, samples);
    media::assert_audio_eq(
        &a16,
        &media::decode_audio_trimmed(&one, samples),
        "16 chunks against 1",
    );
}

#[test]
fn a_worker_killed_mid_render_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clean = dir.path().join("clean.mp4");
    let victim = start_worker(1);
    let others = [start_worker(1), start_worker(1)];
    let o = render_on(&[&others[0]], SLOW, 6, &clean, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let out = dir.path().join("killed.mp4");
    let all = [&victim, &others[0], &others[1]];
    let (code, stdout, stderr) =
        render_watching(&all, SLOW, 6, &out, &["--stall-timeout", "10"], |line| {
            if line.contains("\"chunk_started\"") && line.contains(&victim.url) {
                victim.signal("-9");
                return true;
            }
            false
        });
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        !events(&stdout, "chunk_retried").is_empty(),
        "no retry after kill -9:\n{stdout}"
    );
    // Same plan, same settings: byte-identical output whichever worker
    // rendered what.
    assert_eq!(sha256(&out), sha256(&clean));
}

#[test]
fn a_frozen_worker_is_caught_by_the_stall_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let frozen = start_worker(1);
    let healthy = start_worker(1);
    let out = dir.path().join("out.mp4");
    let (code, stdout, stderr) = render_watching(
        &[&frozen, &healthy],
        SMALL,
        4,
        &out,
        &["--stall-timeout", "2"],
        |line| {
            if line.contains("\"chunk_started\"") && line.contains(&frozen.url) {
                frozen.signal("-STOP");
                return true;
            }
            false
        },
    );
    frozen.signal("-CONT");
    assert_eq!(code, Some(0), "{stderr}");
    let retried = events(&stdout, "chunk_retried");
    assert!(
        retried
            .iter()
            .any(|l| l.contains("\"stalled\"") && l.contains(&frozen.url)),
        "no stall retry:\n{stdout}"
    );
    assert_eq!(media::video_packets(&out).packets.len(), 96);
}

#[test]
fn all_workers_gone_fails_with_every_attempt_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = start_worker(1);
    let b = start_worker(1);
    let out = dir.path().join("out.mp4");
    let (code, _, stderr) =
        render_watching(&[&a, &b], SLOW, 4, &out, &["--retries", "3"], |line| {
            if line.contains("\"planned\"") {
                a.signal("-9");
                b.signal("-9");
                return true;
            }
            false
        });
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("failed after 3 attempts"), "{stderr}");
    for n in 1..=3 {
        assert!(
            stderr.contains(&format!("attempt {n} on http://127.0.0.1:")),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains(&a.url) && stderr.contains(&b.url),
        "{stderr}"
    );
    assert!(!out.exists(), "a failed render left an output file");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn interrupt_cancels_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = start_worker(1);
    let out = dir.path().join("out.mp4");
    let mut child = render_command(&[&w], SLOW, 6, &out, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout");
    for line in BufReader::new(stdout).lines() {
        if line.expect("line").contains("\"chunk_progress\"") {
            let ok = Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()
                .expect("kill");
            assert!(ok.success());
            break;
        }
    }
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130));
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[track_caller]
fn check_bad_input(args: &[&str], expected: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.mp4");
    let mut c = coordinator();
    c.arg("render")
        .args(args)
        .args(["--local", "1", "--out"])
        .arg(&out);
    let o = run(c);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: not one line: {stderr}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(expected),
        "{args:?}: {stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn bad_input_exits_2_with_a_one_line_reason() {
    check_bad_input(
        &["/nonexistent/bundle", "--chunks", "2"],
        "/nonexistent/bundle",
    );
    check_bad_input(
        &["--composition", "nope", "--chunks", "2"],
        "composition `nope` not found",
    );
    check_bad_input(&["--prop", "width=0", "--chunks", "2"], "prop `width`");
    check_bad_input(
        &["--props", "[1]", "--chunks", "2"],
        "must be a JSON object",
    );
    check_bad_input(
        &["--props", SMALL, "--frames", "0-100", "--chunks", "2"],
        "frame range 0-100 is outside the composition: frames run 0-95",
    );
    check_bad_input(&["--chunks", "0"], "chunks 0 is invalid");
}

#[test]
fn kept_chunks_recombine_to_the_same_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = start_worker(2);
    let rendered = dir.path().join("rendered.mp4");
    let chunks = dir.path().join("chunks");
    let o = render_on(
        &[&w],
        SMALL,
        5,
        &rendered,
        &["--keep-chunks", chunks.to_str().expect("utf8")],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ts = std::fs::read_dir(&chunks)
        .expect("kept dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "ts"))
        })
        .count();
    assert_eq!(ts, 5);
    let again = dir.path().join("again.mp4");
    let mut c = coordinator();
    c.args(["combine", "--manifest"])
        .arg(chunks.join("manifest.json"))
        .arg("--out")
        .arg(&again);
    let o = run(c);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(sha256(&again), sha256(&rendered));

    // A manifest whose chunk 3 has an inverted range is refused before
    // anything is read, naming the chunk (exit 2, one line).
    let text = std::fs::read_to_string(chunks.join("manifest.json")).expect("manifest");
    let mut manifest: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    manifest["chunks"][3]["chunk"]["frames"] = serde_json::json!({"first": 5, "last": 1});
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, manifest.to_string()).expect("write");
    let mut c = coordinator();
    c.args(["combine", "--manifest"])
        .arg(&bad)
        .arg("--out")
        .arg(dir.path().join("never.mp4"));
    let o = run(c);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("chunks[3].chunk.frames") && stderr.contains("first 5 is after last 1"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!dir.path().join("never.mp4").exists());
}

#[test]
fn still_and_describe_take_props_like_render() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/promo");
    let png = dir.path().join("f45.png");
    let mut c = coordinator();
    c.arg("still")
        .arg(&bundle)
        .args(["--frame", "45", "--prop", "name=Grace", "--out"])
        .arg(&png);
    let o = run(c);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let probe = media::probe(&png);
    let v = probe.video();
    assert_eq!(
        (v.codec.as_str(), v.width, v.height),
        ("png", Some(1920), Some(1080))
    );
    let mut c = coordinator();
    c.arg("describe")
        .arg(&bundle)
        .args(["--props", r#"{"name":"Grace"}"#]);
    let o = run(c);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(meta["duration_frames"], 300);
    assert_eq!(meta["props"]["name"], "Grace");
}

#[test]
fn local_workers_and_remote_workers_give_the_same_file() {
    // Local workers write chunks into the work directory; remote ones stream
    // them back over gRPC. The output must not depend on which.
    let dir = tempfile::tempdir().expect("tempdir");
    let w = start_worker(2);
    let remote = dir.path().join("remote.mp4");
    let local = dir.path().join("local.mp4");
    let o = render_on(&[&w], SMALL, 4, &remote, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = render_on(&[], SMALL, 4, &local, &["--local", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(sha256(&local), sha256(&remote));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n != "remote.mp4" && n != "local.mp4")
        .collect();
    assert!(leftovers.is_empty(), "work files left: {leftovers:?}");
}

#[test]
fn without_chunks_the_planner_chooses_from_the_slots_and_the_length() {
    // 30 s at 30 fps. Two workers of 2 slots: 3 chunks per slot, 12 chunks
    // of 75 frames; one of them: 6 chunks of 150. 96 frames at 29.97 on 4
    // slots: 12 chunks would be 8 frames, under the 2-second minimum (60
    // frames), and two would be 48, so one chunk of 96.
    const THIRTY_SECONDS: &str = r#"{"width":64,"height":36,"duration":900,"fps":"30"}"#;
    let workers = [start_worker(2), start_worker(2)];
    let dir = tempfile::tempdir().expect("tempdir");
    let planned = |props: &str, pool: &[&WorkerProcess]| {
        let out = dir.path().join("auto.mp4");
        let mut c = coordinator();
        c.args(["render", "--props", props, "--json", "--out"])
            .arg(&out);
        for w in pool {
            // The pool knows a worker's slots from its URL, as users give it.
            c.args(["--worker", &format!("{}#2", w.url)]);
        }
        let o = run(c);
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let p: serde_json::Value =
            serde_json::from_str(events(&stdout, "planned")[0]).expect("planned JSON");
        let frames = media::count_video_frames(&out);
        (p["chunks"].as_u64(), p["frames_per_chunk"].as_u64(), frames)
    };
    let both = [&workers[0], &workers[1]];
    assert_eq!(planned(THIRTY_SECONDS, &both), (Some(12), Some(75), 900));
    assert_eq!(
        planned(THIRTY_SECONDS, &both[..1]),
        (Some(6), Some(150), 900)
    );
    assert_eq!(planned(SMALL, &both), (Some(1), Some(96), 96));
}

#[test]
fn a_video_layer_renders_the_same_in_three_chunks_as_in_one() {
    // A 24 fps source with a tone, shown at 30 fps: every chunk's decoder
    // seeks to its own keyframe, and every frame shows source frame
    // floor(f · 24 / 30).
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&bundle).expect("mkdir");
    media::indexed_video(
        &bundle.join("clip.mp4"),
        (64, 48),
        "24",
        72,
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000:duration=3",
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-c:a",
            "aac",
            "-c:v",
            "libx264",
            "-qp",
            "0",
            "-g",
            "12",
            "-pix_fmt",
            "yuv420p",
        ],
    );
    let render = |chunks: u32, out: &Path| render_clip(&bundle, chunks, out);
    let (one, three) = (dir.path().join("one.mp4"), dir.path().join("three.mp4"));
    render(1, &one);
    render(3, &three);
    let frames = media::decode_video_frames(&three, PixFmt::Yuv444p);
    media::assert_frames_eq(
        &frames,
        &media::decode_video_frames(&one, PixFmt::Yuv444p),
        "3 chunks against 1",
    );
    assert_shows_24_fps_at_30(&frames);
    let samples = 75 * 48_000 / 30;
    let a3 = media::decode_audio_trimmed(&three, samples);
    assert_eq!(a3.len() as u64, samples);
    assert!(
        a3.samples.iter().any(|s| s.abs() > 0.05),
        "the video's sound is heard"
    );
    media::assert_audio_eq(
        &a3,
        &media::decode_audio_trimmed(&one, samples),
        "3 chunks against 1",
    );
}

#[test]
fn an_open_gop_source_renders_the_same_in_eleven_chunks_as_in_one() {
    // x264's open GOPs: B-frames before each later I-frame (in display
    // order) reference it and the GOP before. A chunk whose first frame is
    // such a B-frame seeks to the keyframe before it; one that starts on
    // the I-frame sees the I-frame's leading B-frames decoded without
    // their references, and must not show them.
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&bundle).expect("mkdir");
    let clip = bundle.join("clip.mp4");
    media::indexed_video(
        &clip,
        (64, 48),
        "24",
        72,
        &[
            "-c:v",
            "libx264",
            "-crf",
            "1",
            "-g",
            "12",
            "-bf",
            "3",
            "-x264-params",
            "open-gop=1:scenecut=0:b-adapt=0",
            "-pix_fmt",
            "yuv420p",
        ],
    );
    // The source really has leading B-frames: a packet after a keyframe
    // (in decode order) shown before it.
    let packets = media::video_packets(&clip).packets;
    assert!(
        packets
            .windows(2)
            .any(|w| w[0].key && w[0].pts > 0 && w[1].pts < w[0].pts),
        "no open GOP in the source: {packets:?}"
    );
    let render = |chunks: u32, out: &Path| render_clip(&bundle, chunks, out);
    let (one, eleven) = (dir.path().join("one.mp4"), dir.path().join("eleven.mp4"));
    render(1, &one);
    render(11, &eleven);
    let frames = media::decode_video_frames(&eleven, PixFmt::Yuv444p);
    media::assert_frames_eq(
        &frames,
        &media::decode_video_frames(&one, PixFmt::Yuv444p),
        "11 chunks against 1",
    );
    assert_shows_24_fps_at_30(&frames);
}

/// A video whose sound starts later than its picture (an MP4 audio track
/// that begins 0.25 s in, as cameras and editors write them) keeps that
/// offset: a beep and a white flash made at the same instant are still at
/// the same instant in a 2-chunk render, where ffmpeg plays them in the
/// source.
#[test]
fn a_videos_sound_keeps_its_offset_from_the_picture() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&bundle).expect("mkdir");
    let clip = bundle.join("clip.mp4");
    // The flash at 0.5 s; the beep 0.25 s into a track delayed by 0.25 s.
    media::run(
        Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg("color=black:s=64x48:r=24:d=2,drawbox=c=white:t=fill:enable='gte(t,0.5)'")
            .args(["-itsoffset", "0.25", "-f", "lavfi", "-i"])
            .arg("aevalsrc='if(gte(t,0.25),0.5*sin(2*PI*440*t),0)':s=48000:d=1.75")
            .args([
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-shortest",
            ])
            .arg(&clip),
    );
    let scene = serde_json::json!({
        "version": 1,
        "compositions": [{
            "id": "clip", "width": 64, "height": 48, "fps": 24, "duration": 48,
            "layers": [{"type": "video", "name": "Clip", "src": "clip.mp4"}],
        }],
    });
    std::fs::write(bundle.join("scene.json"), scene.to_string()).expect("write scene");
    let out = dir.path().join("out.mp4");
    let mut c = coordinator();
    c.arg("render")
        .arg(&bundle)
        .args(["--chunks", "2", "--out"])
        .arg(&out);
    let o = run(c);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Seconds to the first loud sample (from the audio stream's start, plus
    // when that starts), and to the first white frame.
    let beep = |file: &Path| {
        let audio = media::decode_audio(file);
        let first = audio
            .channel(0)
            .position(|s| s.abs() > 0.1)
            .expect("a beep");
        let stream = media::probe(file).audio().clone();
        let start = stream.start_pts.unwrap_or(0) as f64 * stream.time_base.num as f64
            / stream.time_base.den as f64;
        start + first as f64 / f64::from(audio.sample_rate)
    };
    let flash = media::decode_video_frames(&out, PixFmt::Yuv420p)
        .iter()
        .position(|f| f.planes[0].row(24)[32] > 128)
        .expect("a flash") as f64
        / 24.0;
    assert_eq!(flash, 0.5);
    let (source, rendered) = (beep(&clip), beep(&out));
    assert!(
        (source - 0.5).abs() < 0.002,
        "ffmpeg plays the source's beep at {source} s"
    );
    assert!(
        (rendered - source).abs() < 0.002,
        "the beep is at {rendered} s, the flash at {flash} s (the source: {source} s)"
    );
}

/// Renders `bundle`'s `clip.mp4` as a 64x48, 30 fps, 75-frame composition
/// (written here) in `chunks` chunks, losslessly, to `out`.
fn render_clip(bundle: &Path, chunks: u32, out: &Path) {
    let scene = serde_json::json!({
        "version": 1,
        "compositions": [{
            "id": "clip", "width": 64, "height": 48, "fps": 30, "duration": 75,
            "layers": [{"type": "video", "name": "Clip", "src": "clip.mp4"}],
        }],
    });
    std::fs::write(bundle.join("scene.json"), scene.to_string()).expect("write scene");
    let mut c = coordinator();
    c.arg("render")
        .arg(bundle)
        .args(["--chunks", &chunks.to_string(), "--lossless", "--out"])
        .arg(out);
    let o = run(c);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Every frame of a 30 fps render of a 24 fps indexed source shows source
/// frame floor(f · 24 / 30).
#[track_caller]
fn assert_shows_24_fps_at_30(frames: &[media::Frame]) {
    let shown: Vec<u32> = frames
        .iter()
        .map(|f| media::read_index(f.planes[0].row(24)))
        .collect();
    let expected: Vec<u32> = (0..75).map(|f| f * 24 / 30).collect();
    assert_eq!(shown, expected);
}

/// The `threads=` libx264 wrote into its SEI of `video`.
fn x264_threads(video: &Path) -> u32 {
    let bytes = std::fs::read(video).expect("read output");
    let text = String::from_utf8_lossy(&bytes);
    let at = text
        .find(" threads=")
        .expect("libx264's SEI names its threads")
        + " threads=".len();
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a thread count")
}

#[test]
fn encoder_threads_follow_the_frame_size_unless_given() {
    let worker = start_worker(1);
    let dir = tempfile::tempdir().expect("tempdir");
    // (props, extra flags, threads libx264 must have used): 1 thread up to
    // 640x360, 2 above; an explicit --encoder-threads wins. On a remote
    // worker and on the embedded pool alike.
    let cases = [
        (r#"{"width":640,"height":360,"duration":3}"#, &[][..], 1),
        (r#"{"width":642,"height":360,"duration":3}"#, &[][..], 2),
        (
            r#"{"width":160,"height":90,"duration":3}"#,
            &["--encoder-threads", "3"][..],
            3,
        ),
    ];
    for (i, (props, extra, threads)) in cases.into_iter().enumerate() {
        for remote in [true, false] {
            let out = dir.path().join(format!("t{i}-{remote}.mp4"));
            let workers: &[&WorkerProcess] = if remote { &[&worker] } else { &[] };
            let o = render_on(workers, props, 1, &out, extra);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            assert_eq!(
                x264_threads(&out),
                threads,
                "{props} {extra:?} remote {remote}"
            );
        }
    }
}

/// The `montage-workers-*` directories in `tmp`.
fn local_worker_dirs(tmp: &Path) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir(tmp)
        .expect("read the temporary directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("montage-workers-"))
        })
        .collect();
    dirs.sort();
    dirs
}

/// Ten times [`SLOW`]: a render that cannot end while a test looks at it.
const LONGER: &str = r#"{"width":640,"height":360,"duration":3600,"fps":"30"}"#;

/// Starts a render of [`LONGER`] on one local worker with `tmp` as its
/// temporary directory, and returns it once a chunk has started, with its
/// local workers' directory (the one that appeared in `tmp`), its lock
/// file aged past the grace a just-made lock gets.
fn start_local_render(tmp: &Path, out: &Path) -> (std::process::Child, std::path::PathBuf) {
    let before = local_worker_dirs(tmp);
    let mut child = coordinator()
        .args(["render", "--local", "1", "--chunks", "6", "--json"])
        .args(["--props", LONGER, "--out"])
        .arg(out)
        .env("TMPDIR", tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn coordinator");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let started = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("\"event\":\"chunk_started\""));
    assert!(started, "the render ended before a chunk started");
    // Read to the end, so the render never writes to a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let dir = local_worker_dirs(tmp)
        .into_iter()
        .find(|d| !before.contains(d))
        .expect("the render's local workers' directory");
    let lock = std::fs::File::open(dir.join(".owner.lock")).expect("its lock file");
    let minutes_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(300);
    lock.set_modified(minutes_ago).expect("age the lock file");
    (child, dir)
}

/// A coordinator killed with SIGKILL cannot remove its local workers'
/// directory (their bundle caches and scratch) from the temporary
/// directory. The next coordinator to start local workers removes it, and
/// leaves alone the directory of one still running.
#[test]
fn a_killed_coordinators_local_workers_directory_is_swept_by_the_next() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).expect("mkdir tmp");

    let (mut killed, left) = start_local_render(&tmp, &dir.path().join("killed.mp4"));
    killed.kill().expect("kill -9 the coordinator");
    let _ = killed.wait();
    assert!(left.is_dir(), "SIGKILL leaves the directory behind");

    let (mut running, live) = start_local_render(&tmp, &dir.path().join("running.mp4"));
    let out = dir.path().join("next.mp4");
    let o = coordinator()
        .args(["render", "--local", "1", "--props", SMALL, "--out"])
        .arg(&out)
        .env("TMPDIR", &tmp)
        .output()
        .expect("run coordinator");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(media::count_video_frames(&out), 96);

    let after = local_worker_dirs(&tmp);
    assert!(
        !after.contains(&left),
        "the killed render's directory was not swept: {after:?}"
    );
    assert_eq!(
        after,
        vec![live.clone()],
        "only the running render's directory is left"
    );

    assert!(
        running.try_wait().expect("try_wait").is_none(),
        "the running render ended early"
    );

    // Its owner is unharmed: stopped with Ctrl-C, it removes its own.
    let ok = Command::new("kill")
        .args(["-INT", &running.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
    assert_eq!(running.wait().expect("wait").code(), Some(130));
    assert_eq!(local_worker_dirs(&tmp), Vec::<std::path::PathBuf>::new());
}
