//! Bundles fetched from and artifacts uploaded to a real S3-protocol server
//! (moto), by real worker processes configured only through the standard
//! AWS environment.

use std::path::{Path, PathBuf};

use montage_proto::v1 as pb;
use storage::archive::PackedArchive;
use storage::{ObjectStore as _, S3Config, S3Store};
use testkit::media;
use tonic::Code;

use crate::kit::{self, Worker};

/// The animated composition of the golden scene (160x90, 30 fps, 30
/// frames): shapes, text with a font and an image, all from the bundle.
const COMPOSITION: &str = "keyframes";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A small scene bundle: the golden test scene with the font and image it
/// uses.
fn bundle_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        repo().join("tests/fixtures/scenes/golden/scene.json"),
        dir.path().join("scene.json"),
    )
    .expect("copy scene");
    for f in ["DejaVuSans-Bold.ttf", "badge.png"] {
        std::fs::copy(repo().join("examples/promo").join(f), dir.path().join(f))
            .expect("copy asset");
    }
    dir
}

/// A fresh bucket on the shared moto server and a store on it, for the
/// test's own uploads and checks (the worker gets only `aws_env`).
async fn bucket(tag: &str) -> S3Store {
    let moto = testkit::moto();
    let bucket = testkit::bucket(tag);
    moto.create_bucket(&bucket);
    let config = S3Config::static_endpoint(
        &moto.endpoint,
        testkit::REGION,
        testkit::ACCESS_KEY,
        testkit::SECRET_KEY,
    );
    S3Store::connect(&bucket, &config).await.expect("connect")
}

fn worker(extra: &[&str]) -> Worker {
    Worker::start_with_env(extra, &testkit::moto().aws_env())
}

/// A TCP proxy in front of moto that counts the requests starting with
/// `needle` (e.g. `GET /bucket/bundles/`) it forwards. Aborted on drop.
struct CountingProxy {
    endpoint: String,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    async fn start(needle: String) -> CountingProxy {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = count.clone();
        let target = testkit::moto().addr;
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let (counter, needle) = (counter.clone(), needle.clone());
                tokio::spawn(async move {
                    let (mut client_rd, mut client_wr) = client.into_split();
                    let (mut server_rd, mut server_wr) = server.into_split();
                    let back = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut server_rd, &mut client_wr).await;
                    });
                    // Requests carry no body here, so scanning the bytes
                    // sent finds each request line; `seen` keeps a needle's
                    // length of context across reads.
                    let mut seen: Vec<u8> = Vec::new();
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = client_rd.read(&mut buf).await {
                        if n == 0 || server_wr.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        let keep = seen.len().min(needle.len() - 1);
                        seen.drain(..seen.len() - keep);
                        seen.extend_from_slice(&buf[..n]);
                        let hits = seen
                            .windows(needle.len())
                            .filter(|w| *w == needle.as_bytes())
                            .count();
                        counter.fetch_add(hits, std::sync::atomic::Ordering::SeqCst);
                    }
                    back.abort();
                });
            }
        });
        CountingProxy {
            endpoint,
            count,
            task,
        }
    }

    fn count(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// moto's AWS environment, with the endpoint replaced by this proxy.
    fn aws_env(&self) -> Vec<(&'static str, String)> {
        with_endpoint(&self.endpoint)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// moto's AWS environment with another endpoint.
fn with_endpoint(endpoint: &str) -> Vec<(&'static str, String)> {
    testkit::moto()
        .aws_env()
        .into_iter()
        .map(|(k, v)| match k {
            "AWS_ENDPOINT_URL" => (k, endpoint.to_owned()),
            _ => (k, v),
        })
        .collect()
}

/// Packs `dir` the way the coordinator does and uploads it as
/// `bundles/<sha256>.tar`; returns the archive and its URL.
async fn upload_bundle(store: &S3Store, dir: &Path, scratch: &Path) -> (PackedArchive, String) {
    let packed = storage::archive::pack_to_file(dir, scratch).expect("pack");
    let key = format!("bundles/{}.tar", packed.sha256);
    store.put_file(&key, &packed.path).await.expect("upload");
    (packed, store.url(&key))
}

fn bundle_source(location: &str, sha256: &str) -> Option<pb::CompositionSource> {
    Some(pb::CompositionSource {
        kind: Some(pb::composition_source::Kind::Bundle(pb::BundleRef {
            location: location.to_owned(),
            sha256: sha256.to_owned(),
        })),
    })
}

/// Frames 0-9 of the bundle's animated composition, inline.
fn bundle_request(source: Option<pb::CompositionSource>) -> pb::RenderChunkRequest {
    let mut req = kit::request(serde_json::json!({}), 0, 9, 0, None);
    req.source = source;
    req.composition_id = COMPOSITION.to_owned();
    req
}

/// Every path under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(
                p.strip_prefix(dir)
                    .expect("under dir")
                    .display()
                    .to_string(),
            );
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_from_s3_renders_like_the_same_bundle_on_disk_and_stays_cached() {
    let store = bucket("bundle").await;
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = bundle_dir();
    let (packed, url) = upload_bundle(&store, dir.path(), scratch.path()).await;
    let sha = packed.sha256.to_hex();
    let proxy = CountingProxy::start(format!("GET /{}/bundles/", store.bucket())).await;
    let w = Worker::start_with_env(&["--slots", "2"], &proxy.aws_env());
    let mut client = w.client().await;

    // Two chunks asking for the bundle at the same moment share one
    // download.
    let (mut c1, mut c2) = (client.clone(), client.clone());
    let (a, b) = tokio::join!(
        kit::render(&mut c1, bundle_request(bundle_source(&url, &sha))),
        kit::render(&mut c2, bundle_request(bundle_source(&url, &sha))),
    );
    let (a, b) = (a.expect("render from s3"), b.expect("second render"));
    assert_eq!(a.ts, b.ts);
    assert_eq!(proxy.count(), 1, "bundle downloads");
    assert_eq!(
        media::count_video_frames(kit::write(scratch.path(), "a.ts", &a.ts)),
        10
    );

    // The same request naming the directory on disk gives the same bytes.
    let from_disk = kit::render(
        &mut client,
        bundle_request(Some(pb::CompositionSource {
            kind: Some(pb::composition_source::Kind::BundlePath(
                dir.path().display().to_string(),
            )),
        })),
    )
    .await
    .expect("render from disk");
    assert_eq!(
        from_disk.ts, a.ts,
        "video differs between bundle_path and BundleRef"
    );
    assert_eq!(from_disk.pcm, a.pcm);

    // Unpacked once, under the cache dir, named by its sha256.
    let bundles = w.dir.path().join("cache/bundles");
    assert_eq!(kit::files_in(&bundles), vec![sha.clone()]);
    assert!(bundles.join(&sha).join("scene.json").is_file());

    // Gone from the bucket: served from the worker's cache.
    store
        .delete(&format!("bundles/{sha}.tar"))
        .await
        .expect("delete");
    assert!(
        store
            .head(&format!("bundles/{sha}.tar"))
            .await
            .expect("head")
            .is_none()
    );
    let again = kit::render(&mut client, bundle_request(bundle_source(&url, &sha)))
        .await
        .expect("render from the cache");
    assert_eq!(again.ts, a.ts);
    assert_eq!(proxy.count(), 1, "bundle downloads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_sha256_is_data_loss_and_nothing_is_cached() {
    let store = bucket("wrongsha").await;
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = bundle_dir();
    let (packed, url) = upload_bundle(&store, dir.path(), scratch.path()).await;
    let w = worker(&[]);
    let mut client = w.client().await;

    let wrong = storage::ContentHash::of_bytes(b"another bundle").to_hex();
    let err = kit::render(&mut client, bundle_request(bundle_source(&url, &wrong)))
        .await
        .expect_err("wrong hash");
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert_eq!(
        err.message(),
        format!(
            "source.bundle: {url}: sha256 mismatch: expected {wrong}, got {}",
            packed.sha256
        )
    );
    assert_eq!(
        tree(&w.dir.path().join("cache/bundles")),
        Vec::<String>::new()
    );

    // A missing archive is NOT_FOUND, naming it.
    let missing = format!("s3://{}/bundles/{wrong}.tar", store.bucket());
    let err = kit::render(&mut client, bundle_request(bundle_source(&missing, &wrong)))
        .await
        .expect_err("missing");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(
        err.message(),
        format!("source.bundle: {missing}: no such object")
    );

    // A malformed reference is refused before any download, naming the field.
    let err = kit::render(
        &mut client,
        bundle_request(bundle_source(&url, &wrong.to_ascii_uppercase())),
    )
    .await
    .expect_err("upper-case hex");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().starts_with("field `source.bundle.sha256`: "),
        "{err:?}"
    );
    assert_eq!(
        tree(&w.dir.path().join("cache/bundles")),
        Vec::<String>::new()
    );
}

/// A tar with one regular file whose name is written verbatim (the `tar`
/// crate's builder refuses `..`).
fn evil_tar(name: &str) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    let body = b"owned";
    {
        let gnu = header.as_gnu_mut().expect("gnu header");
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
    }
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(body.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, &body[..]).expect("append");
    builder.into_inner().expect("finish")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_escaping_its_directory_is_refused_naming_the_entry() {
    let store = bucket("escape").await;
    let bytes = evil_tar("../escape.txt");
    let sha = storage::ContentHash::of_bytes(&bytes).to_hex();
    let key = format!("bundles/{sha}.tar");
    store.put_bytes(&key, bytes.into()).await.expect("upload");
    let url = store.url(&key);
    let w = worker(&[]);
    let mut client = w.client().await;

    let err = kit::render(&mut client, bundle_request(bundle_source(&url, &sha)))
        .await
        .expect_err("escape");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(
        err.message(),
        format!(
            "source.bundle: unpacking {url}: `../escape.txt`: `..` in the path leads outside the target"
        )
    );
    // Nothing written anywhere in the worker's directory but its log and
    // its (empty) cache directories.
    assert_eq!(
        tree(w.dir.path()),
        ["cache", "cache/bundles", "cache/inflight", "worker.log"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_go_to_an_s3_prefix_and_verify() {
    let store = bucket("artifacts").await;
    let w = worker(&[]);
    let mut client = w.client().await;
    let prefix = format!("s3://{}/runs/chunks/ab/cd/k1/", store.bucket());

    let mut req = kit::request(
        serde_json::json!({"width": 160, "height": 90, "duration": 60}),
        30,
        44,
        0,
        None,
    );
    req.chunk_index = 3;
    req.output = Some(pb::ArtifactTarget {
        kind: Some(pb::artifact_target::Kind::Location(prefix.clone())),
    });
    let got = kit::render(&mut client, req).await.expect("render to s3");
    assert!(got.ts.is_empty() && got.pcm.is_empty(), "nothing inline");
    assert!(!got.progress.is_empty());
    let result = got.result.expect("result");
    assert_eq!(result.frame_count, 15);
    let timings = result.timings.expect("timings");
    assert!(timings.deliver_us > 0 && timings.deliver_us <= timings.total_us);

    let scratch = tempfile::tempdir().expect("tempdir");
    let mut names = Vec::new();
    for a in &result.artifacts {
        let name = a.location.rsplit('/').next().expect("a name").to_owned();
        assert_eq!(a.location, format!("{prefix}{name}"));
        let parsed = storage::Location::parse(&a.location).expect("a URL storage parses");
        let local = scratch.path().join(&name);
        let meta = store
            .get_file(parsed.key(), &local, None)
            .await
            .expect("the object exists");
        let bytes = std::fs::read(&local).expect("read");
        assert_eq!(kit::sha256(&bytes), a.sha256, "{name}");
        assert_eq!(bytes.len() as u64, a.size, "{name}");
        assert_eq!(meta.sha256.map(|h| h.to_hex()), Some(a.sha256.clone()));
        names.push(name);
    }
    assert_eq!(names, ["chunk-000003.ts", "chunk-000003.pcm"]);
    let ts = scratch.path().join("chunk-000003.ts");
    assert_eq!(media::count_video_frames(&ts), 15);
    let probe = media::probe(&ts);
    assert_eq!(
        (probe.video().width, probe.video().height),
        (Some(160), Some(90))
    );
    // 15 frames at 30 fps of 48 kHz stereo s16le.
    assert_eq!(result.artifacts[1].size, 24_000 * 4);

    let listed: Vec<_> = store
        .list("runs/")
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        listed,
        [
            "runs/chunks/ab/cd/k1/chunk-000003.pcm",
            "runs/chunks/ab/cd/k1/chunk-000003.ts"
        ]
    );
    assert_eq!(
        kit::files_in(&w.dir.path().join("cache/inflight")),
        Vec::<String>::new()
    );

    // An object name instead of a prefix is refused, naming the field.
    let mut req = kit::request(serde_json::json!({}), 0, 1, 0, None);
    req.output = Some(pb::ArtifactTarget {
        kind: Some(pb::artifact_target::Kind::Location(
            prefix.trim_end_matches('/').to_owned(),
        )),
    });
    let err = kit::render(&mut client, req).await.expect_err("no slash");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().starts_with("field `output.location`: "),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_fetches_a_bundle_from_s3_or_a_local_archive() {
    let store = bucket("describe").await;
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = bundle_dir();
    let (packed, url) = upload_bundle(&store, dir.path(), scratch.path()).await;
    let sha = packed.sha256.to_hex();
    for location in [url, format!("file://{}", packed.path.display())] {
        // A fresh worker each time, so each location is really fetched.
        let w = worker(&[]);
        let mut client = w.client().await;
        let meta = client
            .describe(pb::DescribeRequest {
                source: bundle_source(&location, &sha),
                composition_id: COMPOSITION.to_owned(),
                props_json: String::new(),
                palette_frames: Vec::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("describe {location}: {e:?}"))
            .into_inner()
            .meta
            .expect("meta");
        assert_eq!(
            (
                meta.id.as_str(),
                meta.width,
                meta.height,
                meta.duration_frames
            ),
            (COMPOSITION, 160, 90, 30),
            "{location}"
        );
        assert_eq!(
            kit::files_in(&w.dir.path().join("cache/bundles")),
            vec![sha.clone()]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_upload_keeps_reporting_progress_and_stops_when_the_client_leaves() {
    // An "S3 endpoint" that accepts connections and never answers.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", hole.local_addr().expect("addr"));
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = connections.clone();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = hole.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(conn);
        }
    });
    let w = Worker::start_with_env(&["--slots", "1"], &with_endpoint(&endpoint));
    let mut client = w.client().await;
    let mut req = kit::request(
        serde_json::json!({"width": 160, "height": 90, "duration": 10}),
        0,
        9,
        0,
        None,
    );
    req.output = Some(pb::ArtifactTarget {
        kind: Some(pb::artifact_target::Kind::Location(
            "s3://nowhere/chunks/".to_owned(),
        )),
    });
    let mut stream = client
        .render_chunk(req)
        .await
        .expect("accepted")
        .into_inner();
    // Rendering ends quickly; the upload then hangs, and progress keeps
    // coming (the coordinator's stall timeout counts silence).
    let mut after_encoding = 0;
    while after_encoding < 5 {
        let event = stream.message().await.expect("stream").expect("an event");
        match event.event {
            Some(pb::render_chunk_event::Event::Progress(p)) if p.frames_encoded == 10 => {
                after_encoding += 1;
            }
            Some(pb::render_chunk_event::Event::Progress(_)) => {}
            other => panic!("unexpected event while uploading: {other:?}"),
        }
    }
    assert!(
        connections.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the upload never reached the endpoint"
    );
    let inflight = w.dir.path().join("cache/inflight");
    assert_ne!(kit::files_in(&inflight), Vec::<String>::new());

    // The client leaves: the upload is dropped, the scratch files removed
    // and the slot freed.
    drop(stream);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !kit::files_in(&inflight).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "scratch files left: {:?}",
            tree(&inflight)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The slot is released just after the files are removed.
    let small = kit::request(
        serde_json::json!({"width": 160, "height": 90}),
        0,
        1,
        0,
        None,
    );
    while let Err(e) = kit::render(&mut client, small.clone()).await {
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(
            std::time::Instant::now() < deadline,
            "the slot never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(w.log().contains("chunk cancelled"), "{}", w.log());
    holder.abort();
}
