//! The real binaries as measured processes: CPU of the whole process tree,
//! sampled peak memory, wall time, medians over interleaved runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{cpu_time, peak_rss_kib};

/// What the benches' `main`s return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How often a running process's peak memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// What one run of one process cost.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    /// From spawn to exit.
    pub wall: Duration,
    /// User + system time of the process and every descendant it waited for.
    pub cpu: Duration,
    /// Peak resident memory (`VmHWM`), sampled while it ran.
    pub peak_kib: u64,
}

/// One case of the table: a command line and its runs.
pub struct Case {
    /// The table row's label.
    pub label: String,
    /// The program and its arguments.
    pub command: Vec<String>,
    /// What each run cost.
    pub runs: Vec<Cost>,
    /// The last run's stdout (the coordinator's JSON events).
    pub stdout: String,
}

impl Case {
    /// A case with no runs yet.
    pub fn new(label: impl Into<String>, command: Vec<String>) -> Self {
        Case {
            label: label.into(),
            command,
            runs: Vec::new(),
            stdout: String::new(),
        }
    }

    /// The median of each measure over the runs (at least one).
    pub fn median(&self) -> Cost {
        let pick = |f: fn(&Cost) -> Duration| {
            let mut v: Vec<Duration> = self.runs.iter().map(f).collect();
            v.sort();
            v[v.len() / 2]
        };
        let mut peaks: Vec<u64> = self.runs.iter().map(|c| c.peak_kib).collect();
        peaks.sort_unstable();
        Cost {
            wall: pick(|c| c.wall),
            cpu: pick(|c| c.cpu),
            peak_kib: peaks[peaks.len() / 2],
        }
    }

    /// Runs the command once as a child process and records what it cost.
    ///
    /// # Errors
    /// When it cannot start or exits unsuccessfully (with its stderr).
    pub fn run(&mut self) -> Result<(), BoxError> {
        let before = cpu_time().ok_or("/proc/self/stat is not readable")?;
        let started = Instant::now();
        let mut child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.command[0]))?;
        let pid = child.id();
        let mut out = child.stdout.take().ok_or("stdout")?;
        let mut err = child.stderr.take().ok_or("stderr")?;
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut s);
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut s);
            s
        });
        let mut peak_kib = 0;
        let status = loop {
            if let Some(kib) = peak_rss_kib(Some(pid)) {
                peak_kib = peak_kib.max(kib);
            }
            if let Some(status) = child.try_wait()? {
                break status;
            }
            std::thread::sleep(SAMPLE_EVERY);
        };
        let wall = started.elapsed();
        let after = cpu_time().ok_or("/proc/self/stat is not readable")?;
        let stdout = reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        if !status.success() {
            return Err(
                format!("`{}` failed ({status}):\n{stderr}", self.command.join(" ")).into(),
            );
        }
        self.runs.push(Cost {
            wall,
            cpu: after.children.saturating_sub(before.children),
            peak_kib,
        });
        self.stdout = stdout;
        Ok(())
    }
}

/// The binary `bin` of package `package` to measure. A full run builds the
/// release one first (a stale binary would measure other code); the quick
/// mode uses the one beside this bench (the current profile's, which `cargo
/// test` has built), building it only if it is missing.
///
/// # Errors
/// When it cannot be found or built.
pub fn built_binary(full: bool, package: &str, bin: &str) -> Result<PathBuf, BoxError> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<bench>-<hash> → target/<profile>/<bin>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot find the target directory from this bench's path")?;
    let binary = profile_dir.join(bin);
    if full || !binary.exists() {
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args(["build", "-p", package, "--bin", bin]);
        if full {
            cargo.arg("--release");
        }
        let status = cargo.status()?;
        if !status.success() {
            return Err(format!("building {bin} failed: {status}").into());
        }
    }
    if !binary.exists() {
        return Err(format!("{} was not built", binary.display()).into());
    }
    Ok(binary)
}

/// The machine's load averages (1, 5, 15 minutes), for the report.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}
