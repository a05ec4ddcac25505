//! Test kit: worker processes on free loopback ports and the coordinator
//! CLI. Media is judged with `testkit::media`.

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
