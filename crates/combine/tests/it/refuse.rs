//! Every refusal names the chunk and the difference and leaves nothing at
//! the output path; audio-less compositions get no track unless asked.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Result, ensure};
use chunker::ChunkIndex;
use combine::{ChunkArtifact, CombineError, CombineOptions, PcmFormat, combine_chunks};
use testkit::media::{self, StreamKind};

use crate::support::*;

/// Runs a combine that must fail; checks the message and that the output
/// directory is still empty (no output, no temporary file).
#[track_caller]
fn refuse(
    dir: &Path,
    name: &str,
    chunks: &[ChunkArtifact],
    options: &CombineOptions,
    check: impl Fn(&CombineError) -> bool,
    message: &str,
) {
    let out = out_path(dir, &format!("{name}.mp4"));
    let err = combine_chunks(chunks, options, &out).expect_err(name);
    let text = err.to_string();
    assert!(check(&err), "{name}: unexpected error {err:?}");
    assert!(
        text.contains(message),
        "{name}: message `{text}` lacks `{message}`"
    );
    let left = list_dir(out.parent().expect("parent"));
    assert!(left.is_empty(), "{name}: left behind {left:?}");
}

/// Replaces chunk `i`'s video with `video`.
fn with_video(chunks: &[ChunkArtifact], i: usize, video: PathBuf) -> Vec<ChunkArtifact> {
    let mut v = chunks.to_vec();
    v[i].video = video;
    v
}

fn copy_with(dir: &Path, from: &Path, name: &str, edit: impl Fn(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(from).expect("read chunk");
    edit(&mut bytes);
    let to = dir.join(name);
    std::fs::write(&to, bytes).expect("write chunk");
    to
}

#[test]
fn refusals_name_the_chunk_and_leave_no_file() -> Result<()> {
    let tmp = temp_dir();
    let dir = tmp.path();
    let fps30 = fps(30, 1);
    let plan = fixture_plan(fps30, 30); // 30 + 30 + 16 frames
    let chunks = make_chunks(&dir.join("base"), &plan, Mode::Crf, Some(PcmFormat::S16le))?;
    let options = CombineOptions::new(fps30).with_expected_frames(plan.output_frames());
    let one = ChunkIndex(1);
    let c1 = plan.chunks()[1];
    let variant = |name: &str, v: Variant, count: u64| -> Result<PathBuf> {
        let out = dir.join(name);
        encode_chunks(
            fps30,
            Mode::Crf,
            &[(30, count)],
            &v,
            std::slice::from_ref(&out),
        )?;
        Ok(out)
    };

    // Stream parameters that differ from chunk 0's.
    let crf23 = variant(
        "crf23.ts",
        Variant {
            crf: Some(23),
            ..Variant::default()
        },
        30,
    )?;
    refuse(
        dir,
        "pps",
        &with_video(&chunks, 1, crf23),
        &options,
        |e| matches!(e, CombineError::StreamMismatch { chunk, field: "PPS", .. } if *chunk == one),
        "chunk 1: video PPS differs from chunk 0",
    );
    let big = variant(
        "big.ts",
        Variant {
            size: Some((192, 108)),
            ..Variant::default()
        },
        30,
    )?;
    refuse(
        dir,
        "size",
        &with_video(&chunks, 1, big),
        &options,
        |e| matches!(e, CombineError::StreamMismatch { chunk, field: "width", .. } if *chunk == one),
        "chunk 1: video width differs from chunk 0: chunk 0 has 160, this chunk has 192",
    );
    let yuv444 = variant(
        "444.ts",
        Variant {
            pix_fmt: Some("yuv444p"),
            ..Variant::default()
        },
        30,
    )?;
    refuse(
        dir,
        "pixfmt",
        &with_video(&chunks, 1, yuv444),
        &options,
        |e| matches!(e, CombineError::StreamMismatch { chunk, field: "pixel format", .. } if *chunk == one),
        "chunk 1: video pixel format differs from chunk 0: chunk 0 has YUV420P, this chunk has YUV444P",
    );

    // Frame counts that differ from the plan.
    let short = variant("29.ts", Variant::default(), 29)?;
    refuse(
        dir,
        "short",
        &with_video(&chunks, 1, short),
        &options,
        |e| matches!(e, CombineError::FrameCount { chunk, expected: 30, found: 29, .. } if *chunk == one),
        "holds 29 frames, the plan says 30",
    );
    let long = variant("31.ts", Variant::default(), 31)?;
    refuse(
        dir,
        "long",
        &with_video(&chunks, 1, long),
        &options,
        |e| matches!(e, CombineError::FrameCount { chunk, expected: 30, found: 31, .. } if *chunk == one),
        "holds 31 frames, the plan says 30",
    );

    // Missing, duplicated, out of order.
    let pick =
        |idx: &[usize]| -> Vec<ChunkArtifact> { idx.iter().map(|&i| chunks[i].clone()).collect() };
    refuse(
        dir,
        "missing",
        &pick(&[0, 2]),
        &options,
        |e| matches!(e, CombineError::MissingChunk { index, expected_frame: 30 } if *index == one),
        "chunk 1 is missing",
    );
    refuse(
        dir,
        "missing-last",
        &pick(&[0, 1]),
        &options,
        |e| {
            matches!(
                e,
                CombineError::MissingChunk {
                    index: ChunkIndex(2),
                    expected_frame: 60
                }
            )
        },
        "chunk 2 is missing",
    );
    refuse(
        dir,
        "duplicate",
        &pick(&[0, 1, 1, 2]),
        &options,
        |e| matches!(e, CombineError::DuplicateChunk { index, first: 1, second: 2 } if *index == one),
        "chunk 1 is duplicated",
    );
    refuse(
        dir,
        "order",
        &pick(&[0, 2, 1]),
        &options,
        |e| matches!(e, CombineError::OutOfOrder { position: 1, expected, found: ChunkIndex(2) } if *expected == one),
        "chunk 2 is out of order: position 1 must hold chunk 1",
    );

    // Truncated or corrupt video.
    let src = &chunks[2].video;
    let cut = copy_with(dir, src, "cut.ts", |b| b.truncate(b.len() - 100));
    refuse(
        dir,
        "truncated",
        &with_video(&chunks, 2, cut),
        &options,
        |e| {
            matches!(
                e,
                CombineError::CorruptVideo {
                    chunk: ChunkIndex(2),
                    ..
                }
            )
        },
        "is not a whole number of 188-byte TS packets",
    );
    let half = copy_with(dir, src, "half.ts", |b| b.truncate(b.len() / 2 / 188 * 188));
    refuse(
        dir,
        "truncated-at-packet",
        &with_video(&chunks, 2, half),
        &options,
        |e| {
            matches!(
                e,
                CombineError::FrameCount {
                    chunk: ChunkIndex(2),
                    expected: 16,
                    ..
                }
            )
        },
        "chunk 2: video",
    );
    let holed = copy_with(dir, src, "holed.ts", |b| {
        let at = b.len() / 2 / 188 * 188;
        b.drain(at..at + 3 * 188);
    });
    refuse(
        dir,
        "lost-packets",
        &with_video(&chunks, 2, holed),
        &options,
        |e| {
            matches!(
                e,
                CombineError::CorruptVideo {
                    chunk: ChunkIndex(2),
                    ..
                }
            )
        },
        "flagged corrupt by the demuxer",
    );
    let garbage = copy_with(dir, src, "garbage.ts", |b| b.fill(0x47));
    refuse(
        dir,
        "garbage",
        &with_video(&chunks, 2, garbage),
        &options,
        |e| {
            matches!(
                e,
                CombineError::CorruptVideo {
                    chunk: ChunkIndex(2),
                    ..
                }
            )
        },
        "chunk 2: video",
    );

    // Damaged bytes inside frames: the TS structure is intact, so only
    // decoding (opt-in) can tell.
    let damaged = copy_with(dir, &chunks[0].video, "damaged.ts", |b| {
        let mut hit = 0;
        for p in (0..b.len() / 188).map(|i| i * 188).skip(b.len() / 188 / 3) {
            let pid = (u16::from(b[p + 1] & 0x1f) << 8) | u16::from(b[p + 2]);
            let pusi = b[p + 1] & 0x40 != 0;
            let payload_only = b[p + 3] & 0x30 == 0x10;
            if pid == 0x100 && !pusi && payload_only {
                for x in &mut b[p + 8..p + 180] {
                    *x ^= 0x5a;
                }
                hit += 1;
                if hit == 8 {
                    break;
                }
            }
        }
        assert_eq!(hit, 8, "found video payload packets to damage");
    });
    refuse(
        dir,
        "damaged",
        &with_video(&chunks, 0, damaged),
        &options.clone().with_verify_decode(true),
        |e| {
            matches!(
                e,
                CombineError::CorruptVideo {
                    chunk: ChunkIndex(0),
                    ..
                }
            )
        },
        "chunk 0: video",
    );

    // Audio that does not match the plan.
    let mut short_pcm = chunks.clone();
    let pcm = short_pcm[1].audio.as_mut().expect("audio");
    pcm.path = copy_with(dir, &pcm.path, "short.pcm", |b| b.truncate(b.len() - 4));
    refuse(
        dir,
        "pcm-length",
        &short_pcm,
        &options,
        |e| matches!(e, CombineError::SampleCount { chunk, expected_bytes: 192_000, found_bytes: 191_996, .. } if *chunk == one),
        "chunk 1: audio",
    );
    let mut mixed = chunks.clone();
    mixed[1].audio = None;
    refuse(
        dir,
        "mixed-audio",
        &mixed,
        &options,
        |e| matches!(e, CombineError::MixedAudio { chunk, .. } if *chunk == one),
        "chunk 1 has no PCM audio but chunk 0 has",
    );
    refuse(
        dir,
        "wrong-fps",
        &chunks,
        &CombineOptions::new(fps(25, 1)),
        |e| {
            matches!(
                e,
                CombineError::PlanMismatch {
                    chunk: ChunkIndex(0),
                    field: "sample span",
                    ..
                }
            )
        },
        "chunk 0: sample span is [0, 48000)",
    );
    assert_eq!(c1.samples().len(), 48_000);

    // Cancelled before it starts.
    let flag = Arc::new(AtomicBool::new(true));
    refuse(
        dir,
        "cancel",
        &chunks,
        &options.clone().with_cancel(flag),
        |e| matches!(e, CombineError::Cancelled),
        "combine cancelled",
    );
    // Cancelled half-way through writing (the temporary file exists by
    // then): checks are polled between packets, so count them.
    let polls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = polls.clone();
    refuse(
        dir,
        "cancel-midway",
        &chunks,
        &options.clone().with_cancel_check(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= 60
        }),
        |e| matches!(e, CombineError::Cancelled),
        "combine cancelled",
    );
    ensure!(polls.load(std::sync::atomic::Ordering::Relaxed) > 60);
    refuse(
        dir,
        "empty",
        &[],
        &options,
        |e| matches!(e, CombineError::NoChunks),
        "no chunks",
    );

    // An output directory that does not exist: named, and nothing created.
    let missing = dir.join("no-such-dir").join("out.mp4");
    let err = combine_chunks(&chunks, &options, &missing).expect_err("no directory");
    ensure!(
        matches!(&err, CombineError::Output { path, .. } if *path == missing),
        "{err:?}"
    );
    ensure!(!dir.join("no-such-dir").exists());

    // The same inputs still combine (the refusals were about the changes).
    let out = out_path(dir, "good.mp4");
    combine_chunks(&chunks, &options.clone().with_verify_decode(true), &out)?;
    ensure!(out.exists());
    Ok(())
}

#[test]
fn no_audio_gives_no_track_unless_enforced() -> Result<()> {
    let tmp = temp_dir();
    let dir = tmp.path();
    let f = fps(30_000, 1001);
    let plan = fixture_plan(f, 30);
    let chunks = make_chunks(&dir.join("c"), &plan, Mode::Crf, None)?;
    let plain = out_path(dir, "plain.mp4");
    let report = combine_chunks(&chunks, &CombineOptions::new(f), &plain)?;
    ensure!(report.audio_samples.is_none());
    ensure!(media::probe(&plain).kinds() == [StreamKind::Video]);

    let silent = out_path(dir, "silent.mp4");
    let report = combine_chunks(
        &chunks,
        &CombineOptions::new(f).with_enforce_audio_track(true),
        &silent,
    )?;
    let total = plan.samples().len();
    ensure!(report.audio_samples == Some(total));
    let probe = media::probe(&silent);
    let a = probe.audio();
    ensure!(a.codec == "aac", "{a:?}");
    ensure!(a.start_pts == Some(0), "{a:?}");
    ensure!(a.duration_ts == Some(total as i64), "{a:?}");
    let decoded = media::decode_audio_trimmed(&silent, total);
    ensure!(decoded.len() as u64 == total && decoded.channels == 2);
    ensure!(
        decoded.samples.iter().all(|v| *v == 0.0),
        "silence decodes to zeros"
    );
    Ok(())
}

/// `ffmpeg-next` panics on a path that is not UTF-8. Chunks are opened by
/// the path's bytes, so one in such a directory combines as anywhere else;
/// an output there (which FFmpeg's muxer opens) is refused with an error
/// that says why, leaving nothing.
#[test]
fn paths_that_are_not_utf8_are_read_or_refused_never_a_panic() -> Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let tmp = temp_dir();
    let dir = tmp.path();
    let fps30 = fps(30, 1);
    let plan = fixture_plan(fps30, 30);
    let chunks = make_chunks(&dir.join("base"), &plan, Mode::Crf, Some(PcmFormat::S16le))?;
    let options = CombineOptions::new(fps30).with_expected_frames(plan.output_frames());
    let odd = dir.join(std::ffi::OsStr::from_bytes(b"odd-\xff"));
    std::fs::create_dir(&odd)?;

    // Chunk 0 (opened with stream info) and chunk 1 (headers only) there.
    let mut moved = chunks.clone();
    for c in &mut moved[..2] {
        let to = odd.join(c.video.file_name().expect("name"));
        std::fs::copy(&c.video, &to)?;
        c.video = to;
    }
    let (plain, from_odd) = (out_path(dir, "plain.mp4"), out_path(dir, "odd.mp4"));
    combine_chunks(&chunks, &options, &plain)?;
    combine_chunks(&moved, &options, &from_odd)?;
    ensure!(
        std::fs::read(&plain)? == std::fs::read(&from_odd)?,
        "different bytes"
    );

    let out = odd.join("out.mp4");
    let err = combine_chunks(&chunks, &options, &out).expect_err("an output FFmpeg cannot take");
    ensure!(
        matches!(err, CombineError::Output { .. }) && err.to_string().contains("UTF-8"),
        "unexpected error {err:?}"
    );
    ensure!(
        list_dir(&odd) == ["chunk-00.ts", "chunk-01.ts"],
        "left behind {:?}",
        list_dir(&odd)
    );
    Ok(())
}
