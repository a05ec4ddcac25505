//! Renders whose bytes live in a real S3-protocol server (moto on
//! loopback): outputs under stable keys and presigned URLs, the cache in a
//! bucket, and renders through a proxy injecting S3 faults (503, slow
//! answers, a connection reset mid-upload).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use storage::{ObjectStore as _, S3Config, S3Store};
use testkit::fault::{Action, FaultProxy};
use testkit::media;

use crate::kit::{coordinator, events, run, sha256, start_worker_with_env};

const QUICK: &str = r#"{"width":160,"height":90,"duration":60,"fps":"30"}"#;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A fresh bucket on the shared moto server, and a client for it.
pub fn bucket(tag: &str) -> (String, S3Store) {
    let moto = testkit::moto();
    let name = testkit::bucket(tag);
    moto.create_bucket(&name);
    let config = S3Config::static_endpoint(
        &moto.endpoint,
        testkit::REGION,
        testkit::ACCESS_KEY,
        testkit::SECRET_KEY,
    );
    let store = runtime()
        .block_on(S3Store::connect(&name, &config))
        .expect("connect");
    (name, store)
}

pub fn keys(store: &S3Store, prefix: &str) -> Vec<String> {
    runtime()
        .block_on(store.list(prefix))
        .expect("list")
        .into_iter()
        .map(|m| m.key)
        .collect()
}

pub fn download(store: &S3Store, key: &str, dest: &Path) {
    runtime()
        .block_on(store.get_file(key, dest, None))
        .expect("download");
}

/// The coordinator with the AWS environment pointing at moto.
fn s3_coordinator() -> Command {
    let mut c = coordinator();
    c.envs(testkit::moto().aws_env());
    c
}

fn done(stdout: &str) -> serde_json::Value {
    serde_json::from_str(events(stdout, "done").first().expect("done event")).expect("JSON")
}

#[test]
fn outputs_go_to_stable_keys_with_presigned_urls() {
    let (name, store) = bucket("out");
    let dir = tempfile::tempdir().expect("tempdir");
    // Local workers with the cache in the bucket: they write their chunks
    // into it.
    let local = dir.path().join("local.mp4");
    let o = run({
        let mut c = s3_coordinator();
        c.args(["render", "--local", "2", "--chunks", "3", "--props", QUICK])
            .args(["--cache", &format!("s3://{name}/cache"), "--out"])
            .arg(&local);
        c
    });
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cached = keys(&store, "cache/chunks/");
    assert_eq!(
        cached.iter().filter(|k| k.ends_with("/chunk.json")).count(),
        3,
        "{cached:?}"
    );
    assert_eq!(keys(&store, "cache/outputs/").len(), 2, "mp4 and record");

    // An exact key.
    let o = run({
        let mut c = s3_coordinator();
        c.args(["render", "--local", "2", "--chunks", "3", "--props", QUICK])
            .args(["--cache", "off", "--json", "--out"])
            .arg(format!("s3://{name}/exact/video.mp4"));
        c
    });
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary = done(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(summary["output"], format!("s3://{name}/exact/video.mp4"));
    let fetched = dir.path().join("fetched.mp4");
    download(&store, "exact/video.mp4", &fetched);
    assert_eq!(sha256(&fetched), sha256(&local));

    // A prefix: named by the MP4's sha256 over two hashed levels, with a
    // presigned URL that Debian's ffprobe can read.
    let o = run({
        let mut c = s3_coordinator();
        c.args(["render", "--local", "2", "--chunks", "3", "--props", QUICK])
            .args(["--cache", "off", "--json", "--presign", "600", "--out"])
            .arg(format!("s3://{name}/batch/"));
        c
    });
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary = done(&String::from_utf8_lossy(&o.stdout));
    let hash = sha256(&local);
    let key = format!("batch/{}/{}/{hash}.mp4", &hash[0..2], &hash[2..4]);
    assert_eq!(summary["output"], format!("s3://{name}/{key}"));
    assert_eq!(keys(&store, "batch/"), vec![key]);
    let url = summary["presigned_url"].as_str().expect("presigned URL");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(media::count_video_frames(url), 60);
    assert_eq!(media::count_video_frames(&local), 60);
}

#[test]
fn a_bad_output_url_is_refused_before_rendering() {
    let o = run({
        let mut c = s3_coordinator();
        c.args(["render", "--local", "1", "--chunks", "1", "--props", QUICK])
            .args(["--out", "s3://Not_A_Bucket/x.mp4"]);
        c
    });
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--out: location `s3://Not_A_Bucket/x.mp4`"),
        "{stderr}"
    );
}

/// A small scene bundle: the golden test scene (composition `keyframes`,
/// 160x90, 30 frames) with the font and image it uses.
fn small_bundle() -> tempfile::TempDir {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        repo.join("tests/fixtures/scenes/golden/scene.json"),
        dir.path().join("scene.json"),
    )
    .expect("copy scene");
    for f in ["DejaVuSans-Bold.ttf", "badge.png"] {
        std::fs::copy(repo.join("examples/promo").join(f), dir.path().join(f)).expect("copy asset");
    }
    dir
}

#[test]
fn a_fleet_shares_an_s3_cache_and_gets_the_bundle_by_hash() {
    let (name, store) = bucket("fleet");
    let bundle = small_bundle();
    let env = testkit::moto().aws_env();
    let workers = [
        start_worker_with_env(1, &env),
        start_worker_with_env(1, &env),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let render = |extra: &[&str], out: &str| {
        let mut c = s3_coordinator();
        c.arg("render")
            .arg(bundle.path())
            .args(["--composition", "keyframes", "--chunks", "3", "--json"])
            .args(extra)
            .args(["--out", out]);
        let o = run(c);
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        stdout
    };
    let cache = format!("s3://{name}/cache/");
    let remote = [
        "--worker",
        &workers[0].url,
        "--worker",
        &workers[1].url,
        "--cache",
        &cache,
    ];
    let stdout = render(&remote, &format!("s3://{name}/renders/"));
    assert_eq!(events(&stdout, "chunk_started").len(), 3);
    let summary = done(&stdout);

    // The bundle went up once, as a content-addressed archive, and the
    // workers unpacked it from there into their own caches.
    let archives = keys(&store, "cache/bundles/");
    assert_eq!(archives.len(), 1, "{archives:?}");
    let sha = archives[0]
        .strip_prefix("cache/bundles/")
        .and_then(|k| k.strip_suffix(".tar"))
        .expect("bundles/<sha256>.tar")
        .to_owned();
    let unpacked = workers
        .iter()
        .filter(|w| {
            w.cache_dir()
                .join("bundles")
                .join(&sha)
                .join("scene.json")
                .is_file()
        })
        .count();
    assert!(unpacked >= 1, "no worker unpacked bundle {sha}");

    // The workers wrote the chunks straight into the bucket, each with its
    // record.
    let chunk_keys = keys(&store, "cache/chunks/");
    assert_eq!(
        chunk_keys
            .iter()
            .filter(|k| k.ends_with("/chunk.json"))
            .count(),
        3,
        "{chunk_keys:?}"
    );
    assert_eq!(
        chunk_keys.iter().filter(|k| k.ends_with(".ts")).count(),
        3,
        "{chunk_keys:?}"
    );

    // The output is the file local workers make from the same bundle.
    let output = summary["output"].as_str().expect("output URL").to_owned();
    let key = output
        .strip_prefix(&format!("s3://{name}/"))
        .expect("in the bucket");
    let fetched = dir.path().join("fetched.mp4");
    download(&store, key, &fetched);
    let hash = sha256(&fetched);
    assert!(key.ends_with(&format!("{hash}.mp4")), "{key}");
    let local = dir.path().join("local.mp4");
    render(
        &["--local", "2", "--cache", "off"],
        &local.display().to_string(),
    );
    assert_eq!(sha256(&local), hash);
    assert_eq!(media::count_video_frames(&local), 30);

    // The same render again is served from the bucket without rendering.
    let stdout = render(&remote, &format!("s3://{name}/renders/"));
    assert!(events(&stdout, "chunk_started").is_empty(), "{stdout}");
    let again = done(&stdout);
    assert_eq!(again["output_cached"], true);
    assert_eq!(again["output"], output.as_str());
}

/// A fault proxy in front of moto, served by its own runtime while the CLI
/// runs in this thread.
fn fault_proxy(
    rule: impl Fn(usize, &str) -> Action + Send + Sync + 'static,
) -> (tokio::runtime::Runtime, FaultProxy) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let proxy = rt.block_on(FaultProxy::start(testkit::moto().addr, rule));
    (rt, proxy)
}

/// A render of QUICK in 3 chunks on 2 local workers with the cache in
/// `bucket`, S3 reached through `endpoint`.
fn cached_render(bucket: &str, endpoint: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut c = coordinator();
    c.envs(testkit::moto().aws_env())
        .env("AWS_ENDPOINT_URL", endpoint)
        .args(["render", "--local", "2", "--chunks", "3", "--props", QUICK])
        .args(["--cache", &format!("s3://{bucket}/cache"), "--out"])
        .arg(out)
        .args(extra);
    run(c)
}

/// Whether a request line uploads a chunk artifact into the cache.
fn is_artifact_put(line: &str) -> bool {
    line.starts_with("PUT ") && line.contains("/cache/chunks/") && line.contains("/chunk-0")
}

/// Every chunk record in the cache, with each artifact it names downloaded
/// and checked against the record's size and sha256.
fn verified_records(store: &S3Store, dir: &Path) -> usize {
    let records: Vec<String> = keys(store, "cache/chunks/")
        .into_iter()
        .filter(|k| k.ends_with("/chunk.json"))
        .collect();
    for key in &records {
        let json = dir.join("record.json");
        download(store, key, &json);
        let record: coordinator::cache::ChunkRecord =
            serde_json::from_slice(&std::fs::read(&json).expect("read")).expect("a record");
        let chunk_dir = key.trim_end_matches("chunk.json");
        for a in &record.artifacts {
            let dest = dir.join(&a.name);
            let sha = storage::ContentHash::parse_lower_hex(&a.sha256).expect("sha");
            runtime()
                .block_on(store.get_file(&format!("{chunk_dir}{}", a.name), &dest, Some(&sha)))
                .unwrap_or_else(|e| panic!("{key} names {}, which does not verify: {e}", a.name));
            assert_eq!(std::fs::metadata(&dest).expect("size").len(), a.size);
        }
    }
    records.len()
}

#[test]
fn a_cached_render_through_s3_faults_retries_and_caches_only_whole_chunks() {
    let (name, store) = bucket("faults");
    let dir = tempfile::tempdir().expect("tempdir");
    // The first chunk upload gets 503 SlowDown, the second a connection
    // reset while its body is on the way; the first downloads are slow.
    let (puts, gets) = (
        std::sync::Arc::new(AtomicUsize::new(0)),
        std::sync::Arc::new(AtomicUsize::new(0)),
    );
    let (p, g) = (puts.clone(), gets.clone());
    let (_rt, proxy) = fault_proxy(move |_, line| {
        if is_artifact_put(line) {
            match p.fetch_add(1, Ordering::SeqCst) {
                0 => Action::Respond(503, "SlowDown"),
                1 => Action::Drop,
                _ => Action::Forward,
            }
        } else if line.starts_with("GET ") && line.contains("/cache/chunks/") {
            match g.fetch_add(1, Ordering::SeqCst) {
                0..=2 => Action::Delay(Duration::from_millis(500)),
                _ => Action::Forward,
            }
        } else {
            Action::Forward
        }
    });
    let out = dir.path().join("faults.mp4");
    let o = cached_render(&name, &proxy.endpoint, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Both faults happened: six artifacts took at least eight uploads.
    assert!(
        puts.load(Ordering::SeqCst) >= 8,
        "{:?}",
        proxy.request_lines()
    );
    assert!(
        gets.load(Ordering::SeqCst) >= 3,
        "{:?}",
        proxy.request_lines()
    );

    // The same bytes as a render that saw no fault and no cache.
    let clean = dir.path().join("clean.mp4");
    let o = run({
        let mut c = s3_coordinator();
        c.args(["render", "--local", "2", "--chunks", "3", "--props", QUICK])
            .args(["--cache", "off", "--out"])
            .arg(&clean);
        c
    });
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(sha256(&out), sha256(&clean));
    // Every record's bytes are there and verify.
    assert_eq!(verified_records(&store, dir.path()), 3);
}

#[test]
fn a_cached_render_whose_uploads_keep_failing_fails_naming_s3_and_records_nothing() {
    let (name, store) = bucket("down");
    let dir = tempfile::tempdir().expect("tempdir");
    let (_rt, proxy) = fault_proxy(|_, line| {
        if is_artifact_put(line) {
            Action::Respond(503, "SlowDown")
        } else {
            Action::Forward
        }
    });
    let out = dir.path().join("never.mp4");
    let o = cached_render(&name, &proxy.endpoint, &out, &["--retries", "2"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("PutObject") && stderr.contains("SlowDown") && stderr.contains("s3://"),
        "{stderr}"
    );
    assert!(!out.exists());
    assert_eq!(verified_records(&store, dir.path()), 0);
    assert!(keys(&store, "cache/outputs/").is_empty());
}
