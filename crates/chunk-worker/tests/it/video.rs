//! Video layers decoded by the worker's FFmpeg decoders: every composition
//! frame shows the source frame the exact time formula names, whatever
//! frame a renderer starts at. Sources are made here by Debian's ffmpeg
//! with each frame's index drawn in its pixels.

use std::path::Path;
use std::sync::Arc;

use chunk_worker::video::FfmpegVideo;
use composition::scene::SceneBundle;
use composition::{CompositionSource, Prepared, Props};
use testkit::media::{self, indexed_video, read_index};
use timebase::FrameIndex;

/// Composition size and rate of these tests.
const W: usize = 64;
const H: usize = 48;
const FPS: u64 = 30;

/// Writes a bundle with one composition of `frames` frames at 30 fps
/// holding `layers`, with `video` (a path in the bundle) already made.
fn bundle(dir: &Path, frames: u64, layers: serde_json::Value) -> SceneBundle {
    let scene = serde_json::json!({
        "version": 1,
        "compositions": [{
            "id": "clip", "width": W, "height": H, "fps": FPS, "duration": frames,
            "layers": layers,
        }],
    });
    std::fs::write(dir.join("scene.json"), scene.to_string()).expect("write scene");
    SceneBundle::open_with_video(dir, FfmpegVideo::shared()).expect("bundle opens")
}

fn prepare(b: &SceneBundle) -> Arc<dyn Prepared> {
    b.composition("clip")
        .expect("clip")
        .prepare(&Props::new())
        .expect("prepares")
}

/// Frames `from..to` rendered by one renderer of a fresh prepared scene
/// (a fresh decoder: what a chunk starting at `from` does).
fn render(b: &SceneBundle, from: u64, to: u64) -> Vec<Vec<u8>> {
    let p = prepare(b);
    let mut r = p.frame_renderer().expect("renderer");
    (from..to)
        .map(|f| {
            let mut rgba = vec![0u8; W * H * 4];
            r.render_frame(FrameIndex(f), &mut rgba).expect("renders");
            rgba
        })
        .collect()
}

/// The index drawn in a rendered frame (its middle row's red channel).
fn shown(rgba: &[u8]) -> u32 {
    let row: Vec<u8> = rgba[(H / 2) * W * 4..(H / 2 + 1) * W * 4]
        .chunks_exact(4)
        .map(|p| p[0])
        .collect();
    read_index(&row)
}

/// Renders `frames` frames whole and in chunks of 7 (each chunk a fresh
/// decoder that seeks, rendering into one reused buffer), asserts both are
/// byte-identical, and returns the indices shown.
#[track_caller]
fn indices_whole_and_chunked(b: &SceneBundle, frames: u64) -> Vec<u32> {
    let whole = render(b, 0, frames);
    // Each chunk renders into one reused buffer, as the worker's threads do
    // (`render_frame_reusing`): the same bytes as fresh buffers.
    let mut chunked = Vec::new();
    for start in (0..frames).step_by(7) {
        let p = prepare(b);
        let mut r = p.frame_renderer().expect("renderer");
        let mut rgba = vec![0u8; W * H * 4];
        for f in start..(start + 7).min(frames) {
            r.render_frame_reusing(FrameIndex(f), &mut rgba)
                .expect("renders");
            chunked.push(rgba.clone());
        }
    }
    for (f, (a, c)) in whole.iter().zip(&chunked).enumerate() {
        assert!(
            a == c,
            "frame {f}: a 7-frame chunk (one reused buffer) differs from the whole render"
        );
    }
    whole.iter().map(|f| shown(f)).collect()
}

fn video_layer(extra: serde_json::Value) -> serde_json::Value {
    let mut l = serde_json::json!({"type": "video", "name": "Clip", "src": "clip.mp4"});
    if let (Some(l), Some(extra)) = (l.as_object_mut(), extra.as_object()) {
        l.extend(extra.clone());
    }
    serde_json::json!([l])
}

/// H.264 in MP4 with B-frames and a keyframe every 12 frames: seeks land on
/// keyframes before the frame asked for.
const H264: &[&str] = &[
    "-c:v", "libx264", "-qp", "0", "-g", "12", "-pix_fmt", "yuv420p",
];

#[test]
fn constant_rate_sources_show_the_frame_of_the_exact_time() {
    let frames = 60u64;
    for (rate, num, den) in [
        ("24", 24u64, 1u64),
        ("25", 25, 1),
        ("30000/1001", 30000, 1001),
        ("60", 60, 1),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let source_frames = (3 * num / den) as u32;
        indexed_video(
            &dir.path().join("clip.mp4"),
            (W, H),
            rate,
            source_frames,
            H264,
        );
        let b = bundle(dir.path(), frames, video_layer(serde_json::json!({})));
        let got = indices_whole_and_chunked(&b, frames);
        // Frame f at 30 fps is time f/30; source frame i starts at i·den/num.
        let expected: Vec<u32> = (0..frames)
            .map(|f| (f * num / (FPS * den)) as u32)
            .collect();
        assert_eq!(got, expected, "{rate} fps source at 30 fps");
    }
}

#[test]
fn variable_rate_sources_show_the_frame_whose_interval_holds_the_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 60 fps with every third frame (n mod 3 = 1) dropped and timestamps
    // kept: gaps of 1/60 and 2/60 s.
    let vfr = [
        &[
            "-vf",
            "select='not(eq(mod(n\\,3)\\,1))'",
            "-fps_mode",
            "vfr",
        ][..],
        H264,
    ]
    .concat();
    indexed_video(&dir.path().join("clip.mp4"), (W, H), "60", 150, &vfr);
    let frames = 60u64;
    let b = bundle(dir.path(), frames, video_layer(serde_json::json!({})));
    let got = indices_whole_and_chunked(&b, frames);
    let expected: Vec<u32> = (0..frames)
        .map(|f| {
            // The last kept source frame at or before f/30 s = 2f/60.
            let mut n = 2 * f;
            while n % 3 == 1 {
                n -= 1;
            }
            n as u32
        })
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn trim_rate_loop_start_and_groups_follow_the_formula() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 24 fps, 48 frames (2 s).
    indexed_video(&dir.path().join("clip.mp4"), (W, H), "24", 48, H264);
    let frames = 90u64;
    // Source frame at composition-frame-time `num/den` seconds.
    let at = |num: u64, den: u64| (num * 24 / den) as u32;
    type Expected = Box<dyn Fn(u64) -> Option<u32>>;
    let cases: Vec<(serde_json::Value, Expected)> = vec![
        // Half speed: frame f shows time f/60.
        (
            serde_json::json!({"playback_rate": 0.5}),
            Box::new(move |f| Some(at(f, 60))),
        ),
        // Double speed: time 2f/30, the 2 s source ends at frame 30.
        (
            serde_json::json!({"playback_rate": 2}),
            Box::new(move |f| (f < 30).then(|| at(2 * f, 30))),
        ),
        // Trimmed to [15, 45) frames (0.5-1.5 s) and looped.
        (
            serde_json::json!({"trim_start": 15, "trim_end": 45, "loop": true}),
            Box::new(move |f| Some(at(15 + f % 30, 30))),
        ),
        // Starting at frame 10.
        (
            serde_json::json!({"start": 10}),
            Box::new(move |f| (10..70).contains(&f).then(|| at(f - 10, 30))),
        ),
    ];
    for (extra, expected) in cases {
        let b = bundle(dir.path(), frames, video_layer(extra.clone()));
        let got = indices_whole_and_chunked(&b, frames);
        let want: Vec<u32> = (0..frames).map(|f| expected(f).unwrap_or(0)).collect();
        assert_eq!(got, want, "{extra}");
    }
    // Inside a group whose children see frame f − 20.
    let layers = serde_json::json!([{
        "type": "group", "name": "Later", "time_offset": 20,
        "layers": video_layer(serde_json::json!({})),
    }]);
    let b = bundle(dir.path(), frames, layers);
    let got = indices_whole_and_chunked(&b, frames);
    let want: Vec<u32> = (0..frames)
        .map(|f| {
            if (20..80).contains(&f) {
                at(f - 20, 30)
            } else {
                0
            }
        })
        .collect();
    assert_eq!(got, want, "group with time_offset 20");
}

#[test]
fn rotation_metadata_turns_the_picture_as_players_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 48×64 coded, displayed turned a quarter clockwise: 64×48, the
    // blocks along a column.
    let tmp = dir.path().join("upright.mp4");
    indexed_video(&tmp, (H, W), "30", 10, H264);
    media::run(
        std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-y", "-i"])
            .arg(&tmp)
            .args(["-c", "copy", "-metadata:s:v:0", "rotate=90"])
            .arg(dir.path().join("clip.mp4")),
    );
    // Debian's ffmpeg turns it as players do (ffprobe states the coded
    // 48×64, so its planes are re-read here as the 64-wide picture the CLI
    // writes).
    let cli = media::decode_video_frames(dir.path().join("clip.mp4"), media::PixFmt::Yuv444p);
    let b = bundle(dir.path(), 10, video_layer(serde_json::json!({})));
    for (f, rgba) in render(&b, 0, 10).iter().enumerate() {
        // Every pixel: white, black or grey alike.
        let level = |v: u8| (u16::from(v) + 64) / 128;
        let cli_luma = &cli[f].planes[0].data;
        for (i, (c, o)) in cli_luma.iter().zip(rgba.chunks_exact(4)).enumerate() {
            assert_eq!(
                level(*c),
                level(o[0]),
                "frame {f}, pixel ({}, {}): ffmpeg {c} vs ours {}",
                i % W,
                i / W,
                o[0]
            );
        }
    }
}

#[test]
fn colour_matrix_and_range_decide_the_colour() {
    // Pure red encoded four ways: BT.601 and BT.709, limited and full.
    for (matrix, range) in [
        ("bt709", "tv"),
        ("bt709", "pc"),
        ("bt470bg", "tv"),
        ("bt470bg", "pc"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let vf = format!(
            "scale=out_color_matrix={}:out_range={range},format=yuv444p",
            if matrix == "bt709" { "bt709" } else { "bt601" }
        );
        media::run(
            std::process::Command::new("ffmpeg")
                .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
                .arg(format!("color=c=red:s={W}x{H}:r=30:d=0.5"))
                .args(["-vf", &vf, "-c:v", "libx264", "-qp", "0"])
                .args(["-colorspace", matrix, "-color_range", range])
                .arg(dir.path().join("clip.mp4")),
        );
        let b = bundle(dir.path(), 2, video_layer(serde_json::json!({})));
        let rgba = &render(&b, 0, 1)[0];
        let px = &rgba[(H / 2 * W + W / 2) * 4..][..4];
        assert!(
            px[0] >= 250 && px[1] <= 5 && px[2] <= 5 && px[3] == 255,
            "{matrix} {range}: red came out as {px:?}"
        );
    }
}

#[test]
fn odd_sizes_decode() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 65×37 in 4:4:4 (4:2:0 needs even sizes).
    indexed_video(
        &dir.path().join("clip.mp4"),
        (65, 37),
        "30",
        10,
        &["-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p"],
    );
    let b = bundle(
        dir.path(),
        10,
        video_layer(serde_json::json!({"size": [65, 37], "fit": "fill"})),
    );
    let got = indices_whole_and_chunked(&b, 10);
    assert_eq!(got, (0..10).collect::<Vec<u32>>());
}

#[test]
fn missing_corrupt_and_oversized_sources_name_the_layer_and_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scene = |src: &str| {
        serde_json::json!({
            "version": 1,
            "compositions": [{
                "id": "clip", "width": W, "height": H, "fps": FPS, "duration": 10,
                "layers": [{"type": "video", "name": "Clip", "src": src}],
            }],
        })
        .to_string()
    };
    let open = |src: &str| {
        std::fs::write(dir.path().join("scene.json"), scene(src)).expect("write");
        SceneBundle::open_with_video(dir.path(), FfmpegVideo::shared())
            .expect_err("refused")
            .to_string()
    };
    let missing = open("nope.mp4");
    assert!(
        missing.contains("layer `Clip`") && missing.contains("nope.mp4"),
        "{missing}"
    );
    std::fs::write(dir.path().join("junk.mp4"), b"this is not a video at all").expect("write");
    let junk = open("junk.mp4");
    assert!(
        junk.contains("layer `Clip`") && junk.contains("video `junk.mp4`: not a video file"),
        "{junk}"
    );
    media::run(
        std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg("color=c=red:s=8200x16:r=30:d=0.1")
            .args(["-c:v", "ffv1"])
            .arg(dir.path().join("huge.mkv")),
    );
    let huge = open("huge.mkv");
    assert!(
        huge.contains("layer `Clip`")
            && huge.contains("video `huge.mkv`: 8200×16 is larger than the limit"),
        "{huge}"
    );
    // Without decoders a video layer is refused, naming it.
    std::fs::write(dir.path().join("scene.json"), scene("junk.mp4")).expect("write");
    let plain = SceneBundle::open(dir.path())
        .expect_err("refused")
        .to_string();
    assert!(plain.contains("this process decodes no video"), "{plain}");
}

/// A bundle's audio for its whole duration, and the same span rendered in
/// pieces at awkward boundaries: the pieces must equal the whole.
fn audio(layers: serde_json::Value, tracks: serde_json::Value, dir: &Path) -> Vec<f32> {
    let scene = serde_json::json!({
        "version": 1,
        "compositions": [{
            "id": "clip", "width": W, "height": H, "fps": FPS, "duration": 60,
            "layers": layers, "audio": tracks,
        }],
    });
    std::fs::write(dir.join("scene.json"), scene.to_string()).expect("write scene");
    let b = SceneBundle::open_with_video(dir, FfmpegVideo::shared()).expect("bundle opens");
    let p = prepare(&b);
    // 60 frames at 30 fps: 96 000 samples.
    let total = 96_000u64;
    let mut whole = vec![0f32; total as usize * 2];
    p.render_audio(
        timebase::SampleSpan::new(0, total).expect("span"),
        &mut whole,
    )
    .expect("audio");
    let mut pieces = Vec::new();
    let cuts = [0u64, 1, 1601, 33_333, 33_334, 70_001, total];
    for w in cuts.windows(2) {
        let mut out = vec![0f32; (w[1] - w[0]) as usize * 2];
        p.render_audio(
            timebase::SampleSpan::new(w[0], w[1]).expect("span"),
            &mut out,
        )
        .expect("audio");
        pieces.extend(out);
    }
    assert!(
        pieces == whole,
        "audio rendered in pieces differs from the whole"
    );
    whole
}

#[test]
fn a_videos_sound_is_mixed_exactly_like_an_audio_track_of_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = [
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000:duration=2",
        ][..],
        &["-map", "0:v", "-map", "1:a", "-c:a", "aac", "-b:a", "128k"],
        H264,
    ]
    .concat();
    indexed_video(&dir.path().join("clip.mp4"), (W, H), "30", 60, &args);
    let none = serde_json::json!([]);
    let video = |extra: serde_json::Value| video_layer(extra);
    // Start 10, trimmed by 6 frames, volume 0.5: the track placed the same.
    let from_video = audio(
        video(serde_json::json!({"start": 10, "trim_start": 6, "volume": 0.5})),
        none.clone(),
        dir.path(),
    );
    let from_track = audio(
        none.clone(),
        serde_json::json!([{"src": "clip.mp4", "start": 10, "trim_start": 6, "volume": 0.5}]),
        dir.path(),
    );
    assert!(
        from_video.iter().any(|s| s.abs() > 0.05),
        "the tone is heard"
    );
    assert!(
        from_video == from_track,
        "a video's sound differs from the audio track of its file"
    );
    // In a group 20 frames later: the track starting at 20.
    let grouped = audio(
        serde_json::json!([{"type": "group", "name": "G", "time_offset": 20, "layers": video(serde_json::json!({}))}]),
        none.clone(),
        dir.path(),
    );
    let later = audio(
        none.clone(),
        serde_json::json!([{"src": "clip.mp4", "start": 20}]),
        dir.path(),
    );
    assert!(
        grouped == later,
        "a grouped video's sound is not shifted by the group"
    );
    // Muted, or at another rate: silent.
    for extra in [
        serde_json::json!({"muted": true}),
        serde_json::json!({"playback_rate": 2}),
    ] {
        let silent = audio(video(extra.clone()), none.clone(), dir.path());
        assert!(silent.iter().all(|s| *s == 0.0), "{extra}: not silent");
    }
}

/// Makes `file` from half-transparent white in `pix_fmt` with `codec`
/// args, renders it over nothing and checks the premultiplied result
/// (≈ 128 in every channel).
#[track_caller]
fn half_transparent_white(file: &str, pix_fmt: &str, codec: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    media::run(
        std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg(format!(
                "color=c=white@0.5:s={W}x{H}:r=30:d=0.2,format={pix_fmt}"
            ))
            .args(codec)
            .args(["-pix_fmt", pix_fmt])
            .arg(dir.path().join(file)),
    );
    let layers = serde_json::json!([{"type": "video", "name": "Clip", "src": file}]);
    let b = bundle(dir.path(), 2, layers);
    let rgba = &render(&b, 0, 1)[0];
    let px = &rgba[(H / 2 * W + W / 2) * 4..][..4];
    assert!(
        px.iter().all(|v| (120..=136).contains(v)) && px[0] <= px[3],
        "{file}: half-transparent white came out as {px:?}"
    );
}

#[test]
fn prores_4444_alpha_is_kept_premultiplied() {
    half_transparent_white(
        "clip.mov",
        "yuva444p10le",
        &["-c:v", "prores_ks", "-profile:v", "4444"],
    );
}

#[test]
fn vp9_alpha_is_decoded_by_libvpx_and_kept() {
    // FFmpeg's own VP9 decoder would drop the alpha (alpha 255).
    half_transparent_white(
        "clip.webm",
        "yuva420p",
        &["-c:v", "libvpx-vp9", "-lossless", "1"],
    );
}
