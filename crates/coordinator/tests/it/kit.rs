//! Test kit: worker processes on free loopback ports, the coordinator CLI,
//! and ffprobe/ffmpeg as independent judges.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub use testkit::WorkerProcess;

use sha2::{Digest, Sha256};

/// The `chunk-worker` binary, built beside ours by `cargo test --workspace`.
pub fn worker_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_coordinator")).with_file_name("chunk-worker");
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build -p chunk-worker`, or run the workspace tests)",
        path.display()
    );
    path
}

/// A `chunk-worker serve` process with `slots` slots, killed on drop.
pub fn start_worker(slots: u32) -> WorkerProcess {
    start_worker_with_env(slots, &[])
}

/// A worker with extra environment variables (e.g. the AWS ones).
pub fn start_worker_with_env(slots: u32, env: &[(&str, String)]) -> WorkerProcess {
    WorkerProcess::start(&worker_binary(), &["--slots", &slots.to_string()], env)
}

/// A `coordinator` command.
pub fn coordinator() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_coordinator"));
    c.env_remove("RUST_LOG");
    // Renders are independent unless a test passes --cache.
    c.env("MONTAGE_CACHE", "off");
    c
}

/// Runs a command and returns its output.
pub fn run(mut c: Command) -> Output {
    c.output().expect("run")
}

/// Runs Debian's `program` (`ffprobe` or `ffmpeg`) quietly on `file`, with
/// `after` following it, and returns its stdout; a failure fails the test.
fn judge(program: &str, before: &[&str], file: &Path, after: &[&str]) -> Vec<u8> {
    let out = Command::new(program)
        .args(["-v", "error"])
        .args(before)
        .arg(file)
        .args(after)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} failed on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn ffprobe(args: &[&str], file: &Path) -> String {
    String::from_utf8(judge("ffprobe", args, file, &[])).expect("utf8")
}

/// Video packets as (pts, dts, keyframe), in stream order.
pub fn video_packets(file: &Path) -> Vec<(i64, i64, bool)> {
    ffprobe(
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts,dts,flags",
            "-of",
            "csv=p=0",
        ],
        file,
    )
    .lines()
    .filter(|l| !l.is_empty())
    .map(|l| {
        let f: Vec<&str> = l.split(',').collect();
        (
            f[0].parse().expect("pts"),
            f[1].parse().expect("dts"),
            f[2].starts_with('K'),
        )
    })
    .collect()
}

/// A stream entry (`time_base`, `duration_ts`, `nb_frames`, ...) of stream
/// `sel` (`v:0`, `a:0`).
pub fn stream_entry(file: &Path, sel: &str, entry: &str) -> String {
    ffprobe(
        &[
            "-select_streams",
            sel,
            "-show_entries",
            &format!("stream={entry}"),
            "-of",
            "csv=p=0",
        ],
        file,
    )
    .trim()
    .to_owned()
}

/// The MD5 of every decoded video frame.
pub fn frame_md5s(file: &Path) -> Vec<String> {
    let out = judge(
        "ffmpeg",
        &["-i"],
        file,
        &["-map", "0:v:0", "-f", "framemd5", "-"],
    );
    String::from_utf8(out)
        .expect("utf8")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|s| s.trim().to_owned()))
        .collect()
}

/// Decoded audio as interleaved s16, trimmed to `samples` per channel (the
/// ffmpeg CLI keeps the AAC tail padding).
pub fn decoded_audio(file: &Path, samples: u64) -> Vec<u8> {
    let trim = format!("atrim=end_sample={samples}");
    judge(
        "ffmpeg",
        &["-i"],
        file,
        &["-map", "0:a:0", "-af", &trim, "-f", "s16le", "-"],
    )
}

/// Lines of the coordinator's `--json` output that are events of `kind`.
pub fn events<'a>(stdout: &'a str, kind: &str) -> Vec<&'a str> {
    let tag = format!("\"event\":\"{kind}\"");
    stdout.lines().filter(|l| l.contains(&tag)).collect()
}

pub fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("read output")))
}

/// `coordinator render --json` of `props` in `chunks` chunks on `workers`.
pub fn render_command(
    workers: &[&WorkerProcess],
    props: &str,
    chunks: u32,
    out: &Path,
    extra: &[&str],
) -> Command {
    let mut c = coordinator();
    c.args([
        "render",
        "--props",
        props,
        "--chunks",
        &chunks.to_string(),
        "--json",
        "--out",
    ])
    .arg(out);
    for w in workers {
        c.args(["--worker", &w.url]);
    }
    c.args(extra);
    c
}

pub fn render_on(
    workers: &[&WorkerProcess],
    props: &str,
    chunks: u32,
    out: &Path,
    extra: &[&str],
) -> std::process::Output {
    run(render_command(workers, props, chunks, out, extra))
}

/// Starts a `--json` render and calls `on_event` for each line until it
/// returns true; then reads the rest. Returns (exit code, stdout, stderr).
pub fn render_watching(
    workers: &[&WorkerProcess],
    props: &str,
    chunks: u32,
    out: &Path,
    extra: &[&str],
    mut on_event: impl FnMut(&str) -> bool,
) -> (Option<i32>, String, String) {
    let mut child = render_command(workers, props, chunks, out, extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn coordinator");
    let stdout = child.stdout.take().expect("stdout");
    let mut seen = String::new();
    let mut done = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if !done {
            done = on_event(&line);
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code(),
        seen,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
