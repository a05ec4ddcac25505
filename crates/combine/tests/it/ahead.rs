//! Audio encoded while chunks render (`AudioPrefix`) gives the file a
//! combine that encodes everything gives, byte for byte, whatever share of
//! the audio was encoded ahead; and what it encoded must match the chunks.

use anyhow::Result;
use combine::{
    AudioPrefix, ChunkArtifact, CombineError, CombineOptions, PcmFormat, combine_chunks,
    combine_chunks_with_audio,
};

use crate::support::*;

#[test]
fn audio_encoded_ahead_gives_the_same_bytes() -> Result<()> {
    let dir = temp_dir();
    let fps = fps(30_000, 1001);
    // 7 chunks: the 1024-sample AAC frames straddle chunk boundaries.
    let plan = fixture_plan(fps, 11);
    let chunks = make_chunks(
        &dir.path().join("c"),
        &plan,
        Mode::Crf,
        Some(PcmFormat::F32le),
    )?;
    let options = CombineOptions::new(fps).with_expected_frames(plan.output_frames());
    let reference = out_path(dir.path(), "reference.mp4");
    combine_chunks(&chunks, &options, &reference)?;
    for ahead in [0, 1, 3, chunks.len()] {
        let mut audio = AudioPrefix::new(&options, plan.samples())?;
        for a in &chunks[..ahead] {
            audio.push(a)?;
        }
        assert_eq!(audio.chunks(), ahead);
        let out = out_path(dir.path(), &format!("ahead-{ahead}.mp4"));
        let report = combine_chunks_with_audio(&chunks, &options, audio, &out)?;
        assert_eq!(report.audio_samples, Some(plan.samples().len()));
        assert!(
            std::fs::read(&out)? == std::fs::read(&reference)?,
            "{ahead} chunks encoded ahead: the file differs"
        );
    }
    Ok(())
}

#[test]
fn audio_ahead_must_match_the_chunks() -> Result<()> {
    let dir = temp_dir();
    let fps = fps(30, 1);
    let plan = fixture_plan(fps, 30);
    let chunks = make_chunks(
        &dir.path().join("c"),
        &plan,
        Mode::Crf,
        Some(PcmFormat::S16le),
    )?;
    let options = CombineOptions::new(fps).with_expected_frames(plan.output_frames());

    // Out of order.
    let mut audio = AudioPrefix::new(&options, plan.samples())?;
    let err = audio.push(&chunks[1]).expect_err("chunk 1 first");
    assert_eq!(
        err.to_string(),
        "chunk 1 is out of order: position 0 must hold chunk 0"
    );

    // Another file for chunk 0 than the combine is given.
    let mut other = chunks.clone();
    let copy = dir.path().join("copy.pcm");
    let pcm = chunks[0].audio.as_ref().expect("audio");
    std::fs::copy(&pcm.path, &copy)?;
    other[0] = ChunkArtifact {
        audio: Some(combine::PcmAudio::new(&copy, pcm.format)),
        ..other[0].clone()
    };
    audio.push(&other[0])?;
    let out = out_path(dir.path(), "mismatch.mp4");
    let err = combine_chunks_with_audio(&chunks, &options, audio, &out).expect_err("mismatch");
    assert!(
        matches!(
            &err,
            CombineError::PlanMismatch {
                field: "audio encoded ahead",
                ..
            }
        ),
        "{err}"
    );
    assert!(!out.exists());

    // Made for another bitrate.
    let audio = AudioPrefix::new(&options.clone().with_audio_bitrate(96_000), plan.samples())?;
    let err = combine_chunks_with_audio(&chunks, &options, audio, &out).expect_err("bitrate");
    assert_eq!(
        err.to_string(),
        format!(
            "option `audio` = AAC encoded ahead for {} samples at 48000 Hz, 96000 b/s is invalid: audio encoded ahead for the chunks' own samples, sample rate, bitrate and codec",
            plan.samples().len()
        )
    );
    Ok(())
}
