//! Chunks whose frames are not encoded (issue 17): audio-only chunks render
//! no frame at all; image-sequence chunks write each frame as a file named
//! by its global output index, only where the worker's operator allows,
//! locally or under an S3 prefix.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chunk_worker::{
    ArtifactTarget, ChunkRequest, ChunkSpan, PcmFormat, SourceSpec, VideoSettings, WorkerConfig,
    render_chunk,
};
use chunker::ChunkIndex;
use composition::Registry;
use montage_proto::v1 as pb;
use serde_json::json;
use spec::{FrameSink, ImageFormat, ImageSequence, ImageTarget};
use timebase::FrameRange;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::kit::{self, Worker};

fn request(dir: &std::path::Path, props: serde_json::Value, sink: FrameSink) -> ChunkRequest {
    ChunkRequest {
        job_id: "sinks".into(),
        source: SourceSpec::Registered,
        composition_id: "test-pattern".into(),
        props: props.as_object().cloned().expect("object"),
        span: ChunkSpan {
            index: ChunkIndex(1),
            frames: FrameRange::new(10, 19).expect("range"),
            composition_start: 0,
            every_nth_frame: 1,
        },
        video: VideoSettings::default(),
        pcm_format: PcmFormat::F32le,
        target: ArtifactTarget::Directory(dir.to_path_buf()),
        frames_to: sink,
    }
}

#[test]
fn an_audio_only_chunk_renders_no_frame() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = WorkerConfig::new(Registry::with_builtins());
    let rendered = AtomicU64::new(0);
    let sink = |p: chunk_worker::ChunkProgress| {
        rendered.fetch_max(p.frames_rendered, Ordering::Relaxed);
    };
    // 4K frames: ten of them would take seconds to render and convert.
    let props = json!({"width": 3840, "height": 2160, "duration": 30});
    let r = render_chunk(
        &config,
        &request(dir.path(), props, FrameSink::Skip),
        &sink,
        &CancellationToken::new(),
    )
    .expect("render");
    assert_eq!(rendered.load(Ordering::Relaxed), 0, "frames rendered");
    assert_eq!(r.timings.render, Duration::ZERO);
    assert_eq!(r.timings.convert, Duration::ZERO);
    assert_eq!(r.timings.encode, Duration::ZERO);
    assert_eq!(r.video, None);
    // Frames 10-19 at 30 fps: samples 16000-32000, f32 stereo.
    assert_eq!(r.audio.size, 16_000 * 8);
    assert_eq!(kit::files_in(dir.path()), ["chunk-000001.pcm"]);
}

fn sequence(target: ImageTarget, format: ImageFormat) -> FrameSink {
    FrameSink::Images(ImageSequence {
        format,
        jpeg_quality: 90,
        target,
        total_frames: 120,
    })
}

#[test]
fn an_image_chunk_writes_its_frames_by_global_index_and_no_video() {
    let dir = tempfile::tempdir().expect("tempdir");
    let frames = dir.path().join("frames");
    let config = WorkerConfig::new(Registry::with_builtins());
    let props = json!({"width": 64, "height": 36, "duration": 120});
    let req = request(
        dir.path(),
        props.clone(),
        sequence(ImageTarget::Directory(frames.clone()), ImageFormat::Png),
    );
    let r = render_chunk(&config, &req, &|_| {}, &CancellationToken::new()).expect("render");
    assert_eq!(r.video, None);
    assert_eq!(r.images_dir.as_deref(), Some(frames.as_path()));
    let names: Vec<String> = (10..=19).map(|i| format!("frame-{i:03}.png")).collect();
    assert_eq!(kit::files_in(&frames), names);
    assert_eq!(kit::files_in(dir.path()), ["chunk-000001.pcm", "frames"]);
    // Frame 13 is the still of frame 13, byte for byte.
    let source = composition::Registry::with_builtins();
    let (_, still) = composition::still::render_still_png(
        &source,
        "test-pattern",
        props.as_object().expect("object"),
        13,
    )
    .expect("still");
    assert_eq!(
        std::fs::read(frames.join("frame-013.png")).expect("frame"),
        still
    );
    // Rendered again (a retried chunk): the same bytes, no temporary left.
    let before = std::fs::read(frames.join("frame-017.png")).expect("frame");
    render_chunk(&config, &req, &|_| {}, &CancellationToken::new()).expect("again");
    assert_eq!(
        std::fs::read(frames.join("frame-017.png")).expect("frame"),
        before
    );
    assert_eq!(kit::files_in(&frames), names);
}

fn images_request(location: &str, total_frames: u64) -> pb::RenderChunkRequest {
    let mut req = kit::request(
        json!({"width": 64, "height": 36, "duration": 12}),
        4,
        7,
        0,
        None,
    );
    req.chunk_index = 1;
    req.frames_to = Some(pb::FrameSink {
        kind: Some(pb::frame_sink::Kind::Images(pb::ImageSequence {
            format: "jpeg".into(),
            jpeg_quality: Some(80),
            location: location.to_owned(),
            total_frames,
        })),
    });
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_go_only_where_the_worker_allows() {
    let allowed = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let w = Worker::start_exact(
        &["--allow-path", &allowed.path().display().to_string()],
        &[],
    );
    let mut client = w.client().await;

    let target = outside.path().join("seq");
    let err = kit::render(
        &mut client,
        images_request(&target.display().to_string(), 12),
    )
    .await
    .expect_err("outside");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    for part in [
        "field `frames_to.images.location`",
        &target.display().to_string(),
        "--allow-path DIR",
    ] {
        assert!(
            err.message().contains(part),
            "{:?} lacks {part:?}",
            err.message()
        );
    }
    assert!(!target.exists(), "nothing created outside");

    let inside = allowed.path().join("seq");
    let got = kit::render(
        &mut client,
        images_request(&inside.display().to_string(), 12),
    )
    .await
    .expect("inside");
    assert!(got.ts.is_empty(), "no video artifact");
    let result = got.result.expect("result");
    let kinds: Vec<i32> = result.artifacts.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, [pb::ArtifactKind::AudioPcm as i32]);
    assert_eq!(
        kit::files_in(&inside),
        [
            "frame-04.jpg",
            "frame-05.jpg",
            "frame-06.jpg",
            "frame-07.jpg"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_go_under_an_s3_prefix() {
    let moto = testkit::moto();
    let bucket = testkit::bucket("images");
    moto.create_bucket(&bucket);
    let w = Worker::start_with_env(&[], &moto.aws_env());
    let mut client = w.client().await;
    let local = w.out_dir("seq-local");
    kit::render(
        &mut client,
        images_request(&local.display().to_string(), 1000),
    )
    .await
    .expect("local");
    let prefix = format!("s3://{bucket}/renders/seq/");
    kit::render(&mut client, images_request(&prefix, 1000))
        .await
        .expect("s3");
    let config = storage::S3Config::static_endpoint(
        &moto.endpoint,
        testkit::REGION,
        testkit::ACCESS_KEY,
        testkit::SECRET_KEY,
    );
    let store = storage::S3Store::connect(&bucket, &config)
        .await
        .expect("connect");
    let names = [
        "frame-004.jpg",
        "frame-005.jpg",
        "frame-006.jpg",
        "frame-007.jpg",
    ];
    let listed: Vec<String> = storage::ObjectStore::list(&store, "renders/")
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(listed, names.map(|n| format!("renders/seq/{n}")).to_vec());
    let scratch = tempfile::tempdir().expect("tempdir");
    for name in names {
        let got = scratch.path().join(name);
        storage::ObjectStore::get_file(&store, &format!("renders/seq/{name}"), &got, None)
            .await
            .expect("get");
        assert_eq!(
            std::fs::read(&got).expect("read"),
            std::fs::read(local.join(name)).expect("local"),
            "{name}"
        );
    }
}
