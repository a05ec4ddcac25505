//! AV1 and GIF chunks: joined when they match, refused naming the chunk and
//! the difference when they do not (issue 17). The chunks are made with
//! Debian's `ffmpeg` CLI with the worker's settings.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, ensure};
use chunker::Plan;
use combine::{
    ChunkArtifact, CombineError, CombineOptions, Container, OutputFormat, combine_chunks,
};
use testkit::media;

use crate::support::*;

/// One chunk's frames of the `testsrc2` fixture at `size`, through
/// `codec_args`, into `out`.
pub fn encode(
    first: u64,
    count: u64,
    size: (u32, u32),
    filter_tail: &str,
    extra_inputs: &[&str],
    codec_args: &[&str],
    out: &Path,
) {
    let src = format!("testsrc2=size={}x{}:rate=30", size.0, size.1);
    let graph = format!(
        "[0:v]trim=start_frame={first}:end_frame={},setpts=PTS-STARTPTS,setsar=1{filter_tail}",
        first + count
    );
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", &src])
        .args(extra_inputs)
        .args(["-filter_complex", &graph])
        .args(codec_args)
        .arg("-an")
        .arg(out);
    media::run(&mut cmd);
}

/// The plan's chunks encoded by `encode_one(index, first, count, out)`.
pub fn chunks(
    dir: &Path,
    plan: &Plan,
    ext: &str,
    encode_one: impl Fn(u32, u64, u64, &Path),
) -> Vec<ChunkArtifact> {
    std::fs::create_dir_all(dir).expect("chunk dir");
    plan.chunks()
        .iter()
        .map(|c| {
            let out: PathBuf = dir.join(format!("chunk-{:02}.{ext}", c.index().0));
            encode_one(c.index().0, c.frames().first.0, c.frame_count(), &out);
            ChunkArtifact::new(*c, out)
        })
        .collect()
}

/// Combine options for `plan` into `container`, without audio.
pub fn options(plan: &Plan, container: Container) -> CombineOptions {
    let mut o = CombineOptions::new(plan.fps()).with_expected_frames(plan.output_frames());
    o.output = OutputFormat {
        container,
        audio: None,
    };
    o
}

/// The worker's SVT-AV1 settings (see chunk-worker's encode.rs).
pub const AV1: [&str; 14] = [
    "-c:v",
    "libsvtav1",
    "-preset",
    "12",
    "-crf",
    "35",
    "-g",
    "250",
    "-svtav1-params",
    "irefresh-type=2:scd=0:lp=1",
    "-pix_fmt",
    "yuv420p",
    "-f",
    "matroska",
];

/// The worker's libvpx-vp9 settings (see chunk-worker's encode.rs).
pub const VP9: [&str; 20] = [
    "-c:v",
    "libvpx-vp9",
    "-crf",
    "31",
    "-b:v",
    "0",
    "-deadline",
    "good",
    "-cpu-used",
    "6",
    "-tile-columns",
    "0",
    "-row-mt",
    "0",
    "-g",
    "250",
    "-pix_fmt",
    "yuv420p",
    "-f",
    "matroska",
];

/// A palette of at most `colours` colours of the fixture, as a PNG in `dir`.
fn palette(dir: &Path, colours: u32) -> PathBuf {
    let out = dir.join(format!("palette-{colours}.png"));
    media::run(Command::new("ffmpeg").args([
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={WIDTH}x{HEIGHT}:rate=30:duration=2"),
        "-vf",
        &format!("palettegen=max_colors={colours}"),
        out.to_str().expect("utf-8 path"),
    ]));
    out
}

/// The plan's chunks as GIFs mapped to one palette of at most `colours`
/// colours (in `dir/gif-<colours>`).
pub fn gif_chunks(dir: &Path, plan: &Plan, colours: u32) -> Vec<ChunkArtifact> {
    let pal = palette(dir, colours);
    let p = pal.to_str().expect("utf-8 path").to_owned();
    chunks(
        &dir.join(format!("gif-{colours}")),
        plan,
        "gif",
        |_, first, count, out| {
            encode(
                first,
                count,
                (WIDTH, HEIGHT),
                "[v];[v][1:v]paletteuse=dither=bayer",
                &["-i", &p],
                &["-c:v", "gif", "-f", "gif"],
                out,
            )
        },
    )
}

#[test]
fn av1_chunks_join_into_webm_and_a_chunk_of_another_size_is_refused() -> Result<()> {
    let tmp = temp_dir();
    let dir = tmp.path();
    let plan = fixture_plan(fps(30, 1), 30); // 30 + 30 + 16 frames
    let av1 = |size: (u32, u32)| {
        move |_: u32, first: u64, count: u64, out: &Path| {
            encode(first, count, size, "", &[], &AV1, out)
        }
    };
    let good = chunks(&dir.join("good"), &plan, "mkv", av1((WIDTH, HEIGHT)));
    let out = out_path(dir, "av1.webm");
    combine_chunks(&good, &options(&plan, Container::Webm), &out)?;
    ensure!(media::count_video_frames(&out) == FRAMES);
    ensure!(media::probe(&out).video().codec == "av1");

    let other = chunks(&dir.join("other"), &plan, "mkv", av1((128, 72)));
    let mixed = vec![good[0].clone(), other[1].clone(), good[2].clone()];
    let out = out_path(dir, "mixed.webm");
    let err = combine_chunks(&mixed, &options(&plan, Container::Webm), &out)
        .expect_err("a chunk of another size");
    assert!(
        matches!(err, CombineError::StreamMismatch { field: "width", .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "chunk 1: video width differs from chunk 0: chunk 0 has 160, this chunk has 128"
    );
    ensure!(!out.exists());
    Ok(())
}

#[test]
fn gif_chunks_join_with_one_palette_and_others_are_refused() -> Result<()> {
    let tmp = temp_dir();
    let dir = tmp.path();
    let plan = fixture_plan(fps(30, 1), 30);
    // Two palettes: the fixture's own, and one of 8 colours.
    let good = gif_chunks(dir, &plan, 256);
    let out = out_path(dir, "joined.gif");
    let report = combine_chunks(&good, &options(&plan, Container::Gif), &out)?;
    ensure!(report.frames == FRAMES, "{report:?}");
    ensure!(media::count_video_frames(&out) == FRAMES);

    let other = gif_chunks(dir, &plan, 8);
    let mixed = vec![good[0].clone(), good[1].clone(), other[2].clone()];
    let out = out_path(dir, "mixed.gif");
    let err = combine_chunks(&mixed, &options(&plan, Container::Gif), &out)
        .expect_err("a chunk with another palette");
    assert!(
        matches!(
            err,
            CombineError::StreamMismatch {
                field: "palette",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("chunk 2: video palette differs from chunk 0: chunk 0 has 256 colours"),
        "{err}"
    );
    ensure!(!out.exists());

    // A chunk of another codec (an AV1 chunk in a GIF).
    let av1 = dir.join("av1.mkv");
    encode(60, 16, (WIDTH, HEIGHT), "", &[], &AV1, &av1);
    let mut mixed = good.clone();
    mixed[2].video = av1;
    let err = combine_chunks(&mixed, &options(&plan, Container::Gif), &out)
        .expect_err("an AV1 chunk in a GIF");
    assert!(
        err.to_string().starts_with("chunk 2: video ")
            && err
                .to_string()
                .contains("it is not a GIF chunk (the gif codec's chunks are GIFs)"),
        "{err}"
    );
    ensure!(!out.exists());
    Ok(())
}
