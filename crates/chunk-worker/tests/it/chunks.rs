//! Media checks of chunks rendered through the real worker.

use composition::{CompositionSource, Registry};
use montage_proto::v1 as pb;
use serde_json::json;
use testkit::media::{self, Rational, StreamKind};
use timebase::SampleSpan;

use crate::kit::{self, Worker};

fn s(f: u64, num: u64, den: u64) -> u64 {
    f * 48_000 * den / num
}

#[track_caller]
fn check_pts(packets: &[media::Packet], first_out: i64, count: i64, ticks: i64) {
    assert_eq!(packets.len() as i64, count, "packet count");
    assert!(packets[0].key, "first packet is a keyframe: {packets:?}");
    // Decode order: DTS strictly increase and never pass PTS (with B-frames
    // the first chunk's DTS start below 0; they are not shifted).
    assert!(
        packets.windows(2).all(|w| w[0].dts < w[1].dts),
        "{packets:?}"
    );
    assert!(packets.iter().all(|p| p.dts <= p.pts), "{packets:?}");
    let mut pts: Vec<i64> = packets.iter().map(|p| p.pts).collect();
    pts.sort_unstable();
    let expected: Vec<i64> = (first_out..first_out + count).map(|k| k * ticks).collect();
    assert_eq!(pts, expected, "PTS are those of the chunk's frames");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_at_30_fps_inline_has_exact_frames_pts_and_samples() {
    let w = Worker::start(&[]);
    let mut client = w.client().await;
    let props = json!({"width": 160, "height": 90, "fps": "30", "duration": 60});
    let mut req = kit::request(props, 20, 34, 10, None);
    req.chunk_index = 3;
    let c = kit::render(&mut client, req).await.expect("render");
    let r = c.result.expect("result");
    assert_eq!(r.chunk_index, 3);
    assert_eq!(r.frame_count, 15);
    let samples = s(35, 30, 1) - s(20, 30, 1);
    assert_eq!(r.sample_count, samples);
    assert_eq!(r.pcm_format, i32::from(pb::PcmFormat::S16le));
    assert_eq!(c.pcm.len() as u64, samples * 4, "s16le stereo");
    let [video, audio] = &r.artifacts[..] else {
        panic!("two artifacts: {:?}", r.artifacts)
    };
    assert_eq!(video.kind, i32::from(pb::ArtifactKind::VideoTs));
    assert_eq!(video.sha256, kit::sha256(&c.ts));
    assert_eq!(video.size, c.ts.len() as u64);
    assert_eq!(audio.sha256, kit::sha256(&c.pcm));
    assert!(
        video.location.is_empty(),
        "inline artifacts have no location"
    );
    assert!(!c.progress.is_empty() || r.timings.is_some());

    let ts = kit::write(w.dir.path(), "c.ts", &c.ts);
    // Output frames 10..=24 relative to composition_start 10 → PTS 30000… .
    check_pts(&media::video_packets(&ts).packets, 10, 15, 3000);
    let probe = media::probe(&ts);
    assert_eq!(probe.kinds(), [StreamKind::Video], "{probe:?}");
    let v = probe.video();
    let text = |s: &str| Some(s.to_owned());
    assert_eq!(
        (
            v.codec.as_str(),
            &v.profile,
            &v.pix_fmt,
            v.width,
            v.height,
            v.sample_aspect_ratio
        ),
        (
            "h264",
            &text("High"),
            &text("yuv420p"),
            Some(160),
            Some(90),
            Some(Rational::new(1, 1))
        ),
        "{v:?}"
    );
    assert_eq!(
        [
            &v.color_range,
            &v.color_space,
            &v.color_primaries,
            &v.color_transfer
        ],
        [&text("tv"), &text("bt709"), &text("bt709"), &text("bt709")],
        "{v:?}"
    );
    assert_eq!(media::count_video_frames(&ts), 15);
    // Inline scratch files are gone once delivered.
    assert_eq!(
        kit::files_in(&w.dir.path().join("cache/inflight")),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_at_29_97_to_directory_has_exact_pts_and_the_compositions_samples() {
    let w = Worker::start(&[]);
    let mut client = w.client().await;
    let props = json!({"width": 160, "height": 90, "fps": "30000/1001", "duration": 100});
    let out = w.out_dir("out");
    let mut req = kit::request(props.clone(), 37, 73, 0, Some(&out));
    req.chunk_index = 1;
    req.audio = Some(pb::AudioSettings {
        pcm_format: pb::PcmFormat::F32le.into(),
        ..Default::default()
    });
    let c = kit::render(&mut client, req).await.expect("render");
    let r = c.result.expect("result");
    assert!(c.ts.is_empty() && c.pcm.is_empty(), "nothing inline");
    assert_eq!(
        kit::files_in(&out),
        vec!["chunk-000001.pcm".to_owned(), "chunk-000001.ts".to_owned()],
        "only the final names, no temporaries"
    );
    let ts = out.join("chunk-000001.ts");
    assert_eq!(r.artifacts[0].location, ts.display().to_string());
    check_pts(&media::video_packets(&ts).packets, 37, 37, 3003);
    assert_eq!(media::count_video_frames(&ts), 37);

    // 37-frame chunks at 29.97 own 59259 or 59260 samples (MEDIA-NOTES).
    let span = SampleSpan::new(s(37, 30_000, 1001), s(74, 30_000, 1001)).expect("span");
    assert_eq!(span.len(), 59_259);
    assert_eq!(r.sample_count, span.len());
    let pcm = std::fs::read(out.join("chunk-000001.pcm")).expect("pcm");
    assert_eq!(pcm.len() as u64, span.len() * 8);
    assert_eq!(r.artifacts[1].sha256, kit::sha256(&pcm));
    // The bytes are exactly the composition's samples for that span.
    let prepared = Registry::with_builtins()
        .composition("test-pattern")
        .expect("test pattern")
        .prepare(props.as_object().expect("object"))
        .expect("prepare");
    let mut expected = vec![0f32; span.len() as usize * 2];
    prepared.render_audio(span, &mut expected).expect("audio");
    let expected: Vec<u8> = expected.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert!(
        pcm == expected,
        "PCM differs from the composition's samples"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nth_frame_times_frames_at_the_output_rate() {
    let w = Worker::start(&[]);
    let mut client = w.client().await;
    let props = json!({"width": 160, "height": 90, "fps": "30", "duration": 60});
    // Chunk 2 of a render of frames 0-59 keeping every 2nd frame: frames
    // 20..=29 render 20, 22, …, 28 → output frames 10..=14 at 15 fps.
    let mut req = kit::request(props, 20, 29, 0, None);
    req.every_nth_frame = Some(2);
    let c = kit::render(&mut client, req).await.expect("render");
    let r = c.result.expect("result");
    assert_eq!(r.frame_count, 5);
    assert_eq!(r.sample_count, s(30, 30, 1) - s(20, 30, 1));
    let ts = kit::write(w.dir.path(), "n.ts", &c.ts);
    check_pts(&media::video_packets(&ts).packets, 10, 5, 6000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_request_gives_identical_bytes_across_runs_slots_and_threads() {
    let a = Worker::start(&["--slots", "2", "--render-threads", "1"]);
    let b = Worker::start(&["--slots", "1", "--render-threads", "3"]);
    let props = json!({"width": 160, "height": 90, "fps": "30000/1001", "duration": 90});
    let req = kit::request(props, 5, 40, 0, None);
    let mut ca = a.client().await;
    let mut cb = b.client().await;
    let first = kit::render(&mut ca, req.clone()).await.expect("a");
    let again = kit::render(&mut ca, req.clone()).await.expect("a again");
    let other = kit::render(&mut cb, req).await.expect("b");
    let hashes = |c: &kit::Collected| {
        let r = c.result.as_ref().expect("result");
        (r.artifacts[0].sha256.clone(), r.artifacts[1].sha256.clone())
    };
    assert_eq!(hashes(&first), hashes(&again), "run vs re-run");
    assert_eq!(hashes(&first), hashes(&other), "1 vs 3 render threads");
    assert!(first.ts == other.ts && first.pcm == other.pcm);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_sets_are_identical_across_chunks_of_different_lengths() {
    let w = Worker::start(&[]);
    let mut client = w.client().await;
    let props = json!({"width": 160, "height": 90, "fps": "30", "duration": 60});
    let mut sets = Vec::new();
    for (i, (first, last)) in [(0, 0), (1, 12), (13, 59)].into_iter().enumerate() {
        let c = kit::render(
            &mut client,
            kit::request(props.clone(), first, last, 0, None),
        )
        .await
        .expect("render");
        let ts = kit::write(w.dir.path(), &format!("p{i}.ts"), &c.ts);
        let ps = media::h264_parameter_sets(&ts);
        assert_eq!(ps.len(), 2, "one SPS and one PPS in chunk {i}");
        sets.push(ps);
    }
    assert_eq!(sets[0], sets[1]);
    assert_eq!(sets[0], sets[2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossless_settings_give_high444_yuv444p() {
    let w = Worker::start(&[]);
    let mut client = w.client().await;
    let props = json!({"width": 160, "height": 90, "fps": "25", "duration": 10});
    let mut req = kit::request(props, 0, 4, 0, None);
    req.video = Some(pb::VideoSettings {
        lossless: true,
        ..Default::default()
    });
    let c = kit::render(&mut client, req).await.expect("render");
    let ts = kit::write(w.dir.path(), "l.ts", &c.ts);
    let probe = media::probe(&ts);
    assert_eq!(probe.video().pix_fmt.as_deref(), Some("yuv444p"));
    assert_eq!(
        probe.video().profile.as_deref(),
        Some("High 4:4:4 Predictive")
    );
    check_pts(&media::video_packets(&ts).packets, 0, 5, 3600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_chunk_keeps_pts_zero_despite_the_b_frame_delay() {
    let w = Worker::start(&[]);
    let mut client = w.client().await;
    let props = json!({"width": 160, "height": 90, "fps": "30", "duration": 60});
    let c = kit::render(&mut client, kit::request(props, 0, 29, 0, None))
        .await
        .expect("render");
    let ts = kit::write(w.dir.path(), "first.ts", &c.ts);
    let packets = media::video_packets(&ts).packets;
    check_pts(&packets, 0, 30, 3000);
    // x264 with B-frames delays decoding by two frames: the DTS start at
    // -6000 and the muxer must not shift the chunk to make them positive.
    assert_eq!(packets[0].dts, -6000, "{packets:?}");
}
