//! What a hostile or careless network client cannot do to a worker: name
//! local paths outside `--allow-path`, reach an open worker without
//! authentication, get INTERNAL (and so retries) for garbage bytes, get its
//! megabyte back in a status, or start a chunk too big for the worker.

use std::path::Path;
use std::process::{Command, Stdio};

use montage_proto::v1 as pb;
use serde_json::json;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::kit::{self, Worker};

fn bundle_path(path: &Path) -> Option<pb::CompositionSource> {
    Some(pb::CompositionSource {
        kind: Some(pb::composition_source::Kind::BundlePath(
            path.display().to_string(),
        )),
    })
}

#[track_caller]
fn assert_refused(status: &tonic::Status, code: Code, parts: &[&str]) {
    assert_eq!(status.code(), code, "{status:?}");
    for part in parts {
        assert!(
            status.message().contains(part),
            "{:?} lacks {part:?}",
            status.message()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_paths_outside_the_allowed_directories_are_refused() {
    let allowed = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let root = allowed.path().display().to_string();
    let w = Worker::start_exact(&["--allow-path", &root], &[]);
    let mut client = w.client().await;
    let small = json!({"width": 64, "height": 36, "duration": 4});

    // Artifacts into a directory outside: refused, nothing created there.
    let target = outside.path().join("chunks");
    let err = kit::render(
        &mut client,
        kit::request(small.clone(), 0, 1, 0, Some(&target)),
    )
    .await
    .expect_err("outside");
    assert_refused(
        &err,
        Code::PermissionDenied,
        &[
            "field `output.location`",
            &target.display().to_string(),
            "--allow-path DIR",
        ],
    );
    assert!(!target.exists());

    // `..` out of the root, and a symlink out of it.
    let climbing = allowed.path().join("..").join(
        outside
            .path()
            .file_name()
            .expect("name")
            .to_string_lossy()
            .as_ref(),
    );
    let err = kit::render(
        &mut client,
        kit::request(small.clone(), 0, 1, 0, Some(&climbing)),
    )
    .await
    .expect_err("dot-dot");
    assert_refused(&err, Code::PermissionDenied, &["it contains `..`"]);
    std::os::unix::fs::symlink(outside.path(), allowed.path().join("link")).expect("symlink");
    let err = kit::render(
        &mut client,
        kit::request(
            small.clone(),
            0,
            1,
            0,
            Some(&allowed.path().join("link/chunks")),
        ),
    )
    .await
    .expect_err("symlink");
    assert_refused(&err, Code::PermissionDenied, &["through a symlink"]);
    assert!(!outside.path().join("chunks").exists());

    // A bundle directory outside, existing or not, gets the same answer.
    for bundle in [outside.path(), Path::new("/nonexistent/bundle")] {
        let mut req = kit::request(small.clone(), 0, 1, 0, None);
        req.source = bundle_path(bundle);
        let err = kit::render(&mut client, req)
            .await
            .expect_err("bundle outside");
        assert_refused(
            &err,
            Code::PermissionDenied,
            &["field `source.bundle_path`", "--allow-path DIR"],
        );
        let err = client
            .describe(pb::DescribeRequest {
                source: bundle_path(bundle),
                composition_id: "promo".into(),
                props_json: String::new(),
                palette_frames: Vec::new(),
            })
            .await
            .expect_err("describe outside");
        assert_refused(
            &err,
            Code::PermissionDenied,
            &["field `source.bundle_path`"],
        );
    }

    // A bundle archive named by a file:// URL outside.
    let mut req = kit::request(small.clone(), 0, 1, 0, None);
    req.source = Some(pb::CompositionSource {
        kind: Some(pb::composition_source::Kind::Bundle(pb::BundleRef {
            location: format!("file://{}/x.tar", outside.path().display()),
            sha256: "0".repeat(64),
        })),
    });
    let err = kit::render(&mut client, req)
        .await
        .expect_err("archive outside");
    assert_refused(
        &err,
        Code::PermissionDenied,
        &["field `source.bundle.location`"],
    );

    // Inside the root, the same request renders into the directory.
    let inside = allowed.path().join("out/chunks");
    let done = kit::render(&mut client, kit::request(small, 0, 1, 0, Some(&inside)))
        .await
        .expect("inside");
    assert!(done.result.is_some());
    assert_eq!(
        kit::files_in(&inside),
        vec!["chunk-000000.pcm".to_owned(), "chunk-000000.ts".to_owned()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_allowed_paths_takes_registered_sources_inline() {
    let w = Worker::start_exact(&[], &[]);
    let mut client = w.client().await;
    let ok = kit::render(
        &mut client,
        kit::request(
            json!({"width": 64, "height": 36, "duration": 4}),
            0,
            1,
            0,
            None,
        ),
    )
    .await
    .expect("inline render needs no path");
    assert!(!ok.ts.is_empty());
    let err = kit::render(
        &mut client,
        kit::request(json!({}), 0, 1, 0, Some(&w.out_dir("out"))),
    )
    .await
    .expect_err("no paths allowed");
    assert_refused(
        &err,
        Code::PermissionDenied,
        &["this worker allows no local paths: start it with `--allow-path DIR`"],
    );
}

/// `chunk-worker serve` with `flags`: its exit status and stderr if it
/// exits, or `None` once it says it is listening (then it is killed).
fn serve_outcome(flags: &[&str]) -> Option<(i32, String)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_chunk-worker"))
        .args(["serve", "--cache-dir"])
        .arg(dir.path().join("cache"))
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("read");
    if line.starts_with("listening on ") {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    }
    let out = child.wait_with_output().expect("wait");
    Some((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn an_open_address_needs_authentication_or_an_explicit_flag() {
    let (code, stderr) = serve_outcome(&["--listen", "0.0.0.0:0"]).expect("refused");
    assert_ne!(code, 0);
    assert!(
        stderr.contains("--listen: 0.0.0.0:0 is reachable from other hosts")
            && stderr.contains("--token-file FILE, or --insecure-no-auth"),
        "{stderr}"
    );
    assert_eq!(
        serve_outcome(&["--listen", "0.0.0.0:0", "--insecure-no-auth"]),
        None
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken").expect("token");
    assert_eq!(
        serve_outcome(&[
            "--listen",
            "0.0.0.0:0",
            "--token-file",
            token.to_str().expect("utf8")
        ]),
        None
    );
    // Loopback needs neither.
    assert_eq!(serve_outcome(&["--listen", "127.0.0.1:0"]), None);
    let (_, stderr) = serve_outcome(&["--allow-path", "/nonexistent/root"]).expect("refused");
    assert!(stderr.contains("/nonexistent/root"), "{stderr}");
}

/// A codec that sends raw bytes: the foreign client a fuzzer would be.
#[derive(Default)]
struct Raw;

struct RawEncoder;
struct RawDecoder;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(buf);
        Ok(Some(bytes::Buf::copy_to_bytes(buf, n).to_vec()))
    }
}

async fn send_raw(w: &Worker, method: &str, body: Vec<u8>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(w.channel().await);
    grpc.ready().await.expect("ready");
    let path = format!("/montage.render.v1.ChunkWorker/{method}")
        .parse()
        .expect("path");
    if method == "RenderChunk" {
        match grpc
            .server_streaming(tonic::Request::new(body), path, Raw)
            .await
        {
            Ok(response) => response
                .into_inner()
                .message()
                .await
                .expect_err("an error")
                .to_owned(),
            Err(status) => status,
        }
    } else {
        grpc.unary(tonic::Request::new(body), path, Raw)
            .await
            .expect_err("an error")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_bytes_are_invalid_arguments() {
    let w = Worker::start(&[]);
    for method in ["RenderChunk", "Describe"] {
        // Not protobuf: field 31, wire type 7 does not exist.
        let status = send_raw(&w, method, vec![0xff, 0xff, 0xff, 0xff]).await;
        assert_refused(&status, Code::InvalidArgument, &["undecodable message"]);
        // Field 1 (`job_id` / `source`) as a string of invalid UTF-8.
        let status = send_raw(&w, method, vec![0x0a, 0x02, 0xff, 0xfe]).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{method}: {status:?}");
    }
    let status = send_raw(&w, "RenderChunk", vec![0x0a, 0x02, 0xff, 0xfe]).await;
    assert_refused(&status, Code::InvalidArgument, &["UTF-8"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_of_id_gets_a_short_status() {
    let w = Worker::start(&[]);
    let mut client = w.client().await;
    let huge = "x".repeat(1 << 20);
    let mut req = kit::request(json!({}), 0, 1, 0, None);
    req.job_id = huge.clone();
    let err = kit::render(&mut client, req)
        .await
        .expect_err("long job id");
    assert_refused(
        &err,
        Code::InvalidArgument,
        &["field `job_id`: 1048576 bytes is too long (at most 1024)"],
    );
    assert!(err.message().len() < 400, "{} bytes", err.message().len());

    let mut req = kit::request(json!({}), 0, 1, 0, None);
    req.composition_id = huge.clone();
    let err = kit::render(&mut client, req).await.expect_err("long id");
    assert_refused(&err, Code::InvalidArgument, &["field `composition_id`"]);
    assert!(err.message().len() < 400, "{} bytes", err.message().len());

    let err = client
        .describe(pb::DescribeRequest {
            source: Some(pb::CompositionSource {
                kind: Some(pb::composition_source::Kind::Registered(pb::Registered {})),
            }),
            composition_id: huge,
            props_json: String::new(),
            palette_frames: Vec::new(),
        })
        .await
        .expect_err("long id");
    assert_refused(&err, Code::InvalidArgument, &["field `composition_id`"]);
    assert!(err.message().len() < 400, "{} bytes", err.message().len());

    // A long path is quoted, not echoed.
    let mut req = kit::request(json!({}), 0, 1, 0, None);
    req.source = bundle_path(&Path::new("/").join("y".repeat(100_000)));
    let err = kit::render(&mut client, req).await.expect_err("long path");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().len() < 600, "{} bytes", err.message().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_over_the_limits_are_refused_before_rendering() {
    let w = Worker::start(&["--max-memory", "64M"]);
    let mut client = w.client().await;
    // 1920x1080 with libx264's frames needs about 330 MiB.
    let out = w.out_dir("big");
    let err = kit::render(
        &mut client,
        kit::request(
            json!({"width": 1920, "height": 1080, "duration": 2}),
            0,
            1,
            0,
            Some(&out),
        ),
    )
    .await
    .expect_err("over --max-memory");
    assert_refused(
        &err,
        Code::InvalidArgument,
        &[
            "chunk 0: rendering `test-pattern` (1920x1080) needs about",
            "this worker allows 64 MiB (--max-memory)",
        ],
    );
    assert!(kit::files_in(&out).is_empty(), "{:?}", kit::files_in(&out));

    // Two hours of audio in one chunk: refused before a sample is written.
    let frames = 2 * 3600 * 30;
    let err = kit::render(
        &mut client,
        kit::request(
            json!({"width": 64, "height": 36, "fps": "30", "duration": frames}),
            0,
            frames - 1,
            0,
            Some(&out),
        ),
    )
    .await
    .expect_err("too long");
    assert_refused(
        &err,
        Code::InvalidArgument,
        &["owns 345600000 audio samples at 48000 Hz; a chunk may own at most 172800000"],
    );
    assert!(kit::files_in(&out).is_empty(), "{:?}", kit::files_in(&out));

    // A small chunk fits.
    kit::render(
        &mut client,
        kit::request(
            json!({"width": 64, "height": 36, "duration": 2}),
            0,
            1,
            0,
            None,
        ),
    )
    .await
    .expect("fits");
}
