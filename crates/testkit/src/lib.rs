//! Montage's test kit, for tests only: a real S3-protocol server (moto's
//! standalone server, installed by `scripts/setup-s3-test-server.sh`) on
//! loopback, shared by the storage, chunk-worker and coordinator tests, and
//! a fault-injecting proxy in front of it ([`fault::FaultProxy`]);
//! [`WorkerProcess`], a real `chunk-worker serve` process on a free port; and
//! [`media`], Debian's `ffprobe`/`ffmpeg` as the judges of what the chunk
//! worker, combine and the coordinator write.
//!
//! ```no_run
//! let s3 = testkit::moto();
//! let bucket = testkit::bucket("demo");
//! // Child processes reach it through the standard AWS variables.
//! let mut cmd = std::process::Command::new("coordinator");
//! cmd.envs(s3.aws_env());
//! # let _ = bucket;
//! ```

pub mod fault;
pub mod media;

use std::io::Read as _;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The access key moto accepts (any key works; tests use this one).
pub const ACCESS_KEY: &str = "testing";
/// The secret key paired with [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "testing";
/// The region tests use.
pub const REGION: &str = "us-east-1";

/// How long moto may take to start answering.
const MOTO_START_TIMEOUT: Duration = Duration::from_secs(60);

/// A `moto_server` process on 127.0.0.1, killed on drop. A small shell
/// watchdog also kills it when the test binary exits (its stdin closes),
/// since the shared instance lives in a static; if moto dies, the shell
/// exits too and the start-up loop reports moto's log at once.
pub struct MotoServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The socket address.
    pub addr: SocketAddr,
}

impl MotoServer {
    /// Starts a server on a free port and waits until it answers.
    ///
    /// # Panics
    /// When moto is not installed or does not answer within a minute
    /// (with its log).
    pub fn start() -> MotoServer {
        let port = StdListener::bind("127.0.0.1:0")
            .expect("bind a free port")
            .local_addr()
            .expect("local addr")
            .port();
        // `python3 -m moto.server` runs the server of the moto that
        // `python3 -m pip` installed (scripts/setup-s3-test-server.sh), with
        // no dependence on PATH shims; $MOTO_SERVER overrides it.
        let program =
            std::env::var("MOTO_SERVER").unwrap_or_else(|_| "python3 -m moto.server".to_owned());
        let log = std::env::temp_dir().join(format!("montage-moto-{port}.log"));
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec 3<&0; $1 -H 127.0.0.1 -p "$2" >"$3" 2>&1 </dev/null & pid=$!; (read _ignored <&3; kill $pid 2>/dev/null) & wait $pid"#)
            .arg("sh")
            .arg(&program)
            .arg(port.to_string())
            .arg(&log)
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn sh for moto");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut server = MotoServer {
            child,
            endpoint: format!("http://{addr}"),
            addr,
        };
        let start = Instant::now();
        loop {
            if let Ok(mut s) = StdStream::connect(addr) {
                use std::io::Write as _;
                let _ = s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n");
                let mut buf = [0u8; 12];
                if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") {
                    return server;
                }
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                panic!(
                    "moto_server exited with {status} (install it with scripts/setup-s3-test-server.sh): {text}"
                );
            }
            assert!(
                start.elapsed() < MOTO_START_TIMEOUT,
                "moto_server did not answer on {addr} within {MOTO_START_TIMEOUT:?}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
            let _ = &mut server;
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // Closing stdin makes the watchdog kill moto.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// One moto server shared by every test in this binary (each test uses its
/// own bucket).
pub fn moto() -> &'static MotoServer {
    static SERVER: OnceLock<MotoServer> = OnceLock::new();
    SERVER.get_or_init(MotoServer::start)
}

static BUCKET_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh bucket name.
pub fn bucket(tag: &str) -> String {
    format!(
        "t-{tag}-{}-{}",
        std::process::id(),
        BUCKET_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl MotoServer {
    /// The standard AWS environment variables that point an SDK client (or
    /// a child process such as a worker or the coordinator CLI) at this
    /// server with test credentials.
    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            // No shared config files or IMDS lookups from the test machine.
            ("AWS_CONFIG_FILE", "/dev/null".to_owned()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
    }

    /// Creates `bucket` with a plain HTTP `PUT` (path-style), so tests need
    /// no SDK to prepare one.
    ///
    /// # Panics
    /// When the server refuses.
    pub fn create_bucket(&self, bucket: &str) {
        use std::io::Write as _;
        let mut s = StdStream::connect(self.addr).expect("connect to moto");
        write!(
            s,
            "PUT /{bucket} HTTP/1.0\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
            self.addr
        )
        .expect("send PUT bucket");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("read moto's answer");
        assert!(
            answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
            "creating bucket {bucket}: {answer}"
        );
    }
}

/// A `chunk-worker serve` process listening on a free loopback port, with
/// its cache directory and log (`worker.log`) in a fresh temporary
/// directory. Killed (and resumed first, if stopped) on drop.
pub struct WorkerProcess {
    child: Option<Child>,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The temporary directory: `cache/` (the `--cache-dir`) and `worker.log`.
    pub dir: tempfile::TempDir,
}

impl WorkerProcess {
    /// Starts `binary serve --listen 127.0.0.1:0 --cache-dir <tmp>/cache`
    /// with `extra` flags and `env` variables, and waits for its
    /// `listening on ADDR` line.
    ///
    /// # Panics
    /// When the worker cannot start or prints something else first.
    pub fn start(binary: &Path, extra: &[&str], env: &[(&str, String)]) -> WorkerProcess {
        let dir = tempfile::Builder::new()
            .prefix("montage-worker-")
            .tempdir()
            .expect("worker temp dir");
        let log = std::fs::File::create(dir.path().join("worker.log")).expect("worker log file");
        let mut child = Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--cache-dir"])
            .arg(dir.path().join("cache"))
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let stdout = child.stdout.take().expect("stdout piped");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("read the listening line");
        let Some(addr) = line.trim().strip_prefix("listening on ").map(str::to_owned) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "unexpected first line {line:?}; log:\n{}",
                std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default()
            );
        };
        WorkerProcess {
            child: Some(child),
            url: format!("http://{addr}"),
            addr,
            dir,
        }
    }

    /// The worker's `--cache-dir`.
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// The process id.
    ///
    /// # Panics
    /// When the worker has already been waited for.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("worker running")
    }

    /// Sends a signal with `kill` (`-9`, `-TERM`, `-STOP`, `-CONT`).
    ///
    /// # Panics
    /// When `kill` fails.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} {} failed", self.pid());
    }

    /// What the worker logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("worker.log")).unwrap_or_default()
    }

    /// Waits for the process to exit.
    ///
    /// # Panics
    /// When it is still running after `within` (it is killed, and the log
    /// shown).
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("worker running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "worker did not exit within {within:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `n` bytes from a small deterministic generator (xorshift32 seeded by
/// `seed`): the same bytes on every machine, for pictures and planes tests
/// compare or hash.
pub fn noise(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}
