//! `render_chunk` without gRPC.

use std::sync::atomic::{AtomicU64, Ordering};

use chunk_worker::{
    ArtifactTarget, ChunkRequest, ChunkSpan, PcmFormat, SourceSpec, VideoSettings, WorkerConfig,
    WorkerError, render_chunk,
};
use chunker::ChunkIndex;
use composition::Registry;
use serde_json::json;
use timebase::FrameRange;
use tokio_util::sync::CancellationToken;

fn request(dir: &std::path::Path, first: u64, last: u64) -> ChunkRequest {
    ChunkRequest {
        job_id: "lib".into(),
        source: SourceSpec::Registered,
        composition_id: "test-pattern".into(),
        props: json!({"width": 160, "height": 90, "duration": 300})
            .as_object()
            .cloned()
            .expect("object"),
        span: ChunkSpan {
            index: ChunkIndex(4),
            frames: FrameRange::new(first, last).expect("range"),
            composition_start: 0,
            every_nth_frame: 1,
        },
        video: VideoSettings::default(),
        pcm_format: PcmFormat::S16le,
        target: ArtifactTarget::Directory(dir.to_path_buf()),
        frames_to: Default::default(),
    }
}

#[test]
fn renders_reports_progress_and_times_stages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = WorkerConfig::new(Registry::with_builtins());
    let last_encoded = AtomicU64::new(0);
    let sink = |p: chunk_worker::ChunkProgress| {
        assert_eq!(p.frames_total, 10);
        last_encoded.fetch_max(p.frames_encoded, Ordering::Relaxed);
    };
    let r = render_chunk(
        &config,
        &request(dir.path(), 30, 39),
        &sink,
        &CancellationToken::new(),
    )
    .expect("render");
    assert_eq!(last_encoded.load(Ordering::Relaxed), 10);
    assert_eq!(r.frame_count(), 10);
    assert_eq!(r.first_pts, 30 * 3000);
    assert_eq!(r.ticks_per_frame, 3000);
    assert_eq!(r.audio.size, 16_000 * 4);
    assert!(r.timings.total >= r.timings.audio);
    assert_eq!(
        r.video.expect("video").path,
        dir.path().join("chunk-000004.ts")
    );
}

#[test]
fn a_cancelled_chunk_leaves_no_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = WorkerConfig::new(Registry::with_builtins());
    let cancel = CancellationToken::new();
    let after_three = |p: chunk_worker::ChunkProgress| {
        if p.frames_rendered >= 3 {
            cancel.cancel();
        }
    };
    let err = render_chunk(&config, &request(dir.path(), 0, 299), &after_three, &cancel)
        .expect_err("cancelled");
    assert!(matches!(err, WorkerError::Cancelled { chunk: 4 }), "{err}");
    assert_eq!(crate::kit::files_in(dir.path()), Vec::<String>::new());
}

#[test]
fn bad_ranges_and_sources_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = WorkerConfig::new(Registry::with_builtins());
    let none = |_: chunk_worker::ChunkProgress| {};
    let cancel = CancellationToken::new();
    let err =
        render_chunk(&config, &request(dir.path(), 290, 300), &none, &cancel).expect_err("outside");
    assert_eq!(
        err.to_string(),
        "chunk 4: frames 290-300 are outside composition `test-pattern`: frames run 0-299 (300 frames)"
    );
    let mut odd = request(dir.path(), 0, 1);
    odd.props.insert("width".into(), 161.into());
    let err = render_chunk(&config, &odd, &none, &cancel).expect_err("odd");
    assert!(
        err.to_string().starts_with("field `video.pixel_format`"),
        "{err}"
    );
    let mut inline = request(dir.path(), 0, 1);
    inline.target = ArtifactTarget::Inline;
    assert!(matches!(
        render_chunk(&config, &inline, &none, &cancel),
        Err(WorkerError::Unsupported {
            field: "output",
            ..
        })
    ));
    assert_eq!(crate::kit::files_in(dir.path()), Vec::<String>::new());
}

#[test]
fn bundle_paths_go_through_the_configured_opener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(&bundle).expect("bundle dir");
    let opened = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = opened.clone();
    let opener: chunk_worker::BundleOpener = std::sync::Arc::new(move |path| {
        seen.lock().expect("lock").push(path.to_path_buf());
        Ok(std::sync::Arc::new(Registry::with_builtins()) as std::sync::Arc<_>)
    });
    let config = WorkerConfig::new(Registry::new()).with_bundle_opener(opener);
    let none = |_: chunk_worker::ChunkProgress| {};
    let mut req = request(&dir.path().join("out"), 0, 2);
    req.source = SourceSpec::BundlePath(bundle.clone());
    let r = render_chunk(&config, &req, &none, &CancellationToken::new()).expect("render");
    assert_eq!(r.frame_count(), 3);
    assert_eq!(*opened.lock().expect("lock"), vec![bundle]);

    req.source = SourceSpec::BundlePath(dir.path().join("missing"));
    let err = render_chunk(&config, &req, &none, &CancellationToken::new()).expect_err("missing");
    assert!(matches!(err, WorkerError::BundleNotFound { .. }), "{err}");
    // Registered sources use the (empty) registry, not the bundle.
    req.source = SourceSpec::Registered;
    let err = render_chunk(&config, &req, &none, &CancellationToken::new()).expect_err("empty");
    assert_eq!(
        err.to_string(),
        "composition `test-pattern` not found; available: "
    );
}
