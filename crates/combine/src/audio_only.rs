//! Audio-only outputs: the chunks' PCM joined in plan order and encoded
//! once, as the audio track of a video is, into WAV (16-bit PCM), M4A
//! (AAC-LC, priming under an edit list at a 48 kHz movie timescale), MP3
//! (libmp3lame; FFmpeg's muxer writes the LAME/Xing header with the encoder
//! delay and padding) or Opus in Ogg (pre-skip in the header, the end
//! trimmed by the last page's granule position).

use std::path::Path;

use chunker::{Chunk, ChunkIndex};
use ffmpeg_next as ffmpeg;

use crate::{
    AudioOnlyFormat, Cancel, ChunkArtifact, CombineError, CombineOptions, CombineReport, PcmAudio,
    audio, layout,
};

/// Joins the chunks' PCM (given in plan order: chunk `i` at position `i`,
/// each span starting where the previous one ended) and encodes it once to
/// `format` at `output`, through a temporary file renamed when complete.
/// The options' sample rate, bitrate and cancellation apply; their
/// container does not.
///
/// # Errors
/// [`CombineError::NoChunks`], [`CombineError::OutOfOrder`],
/// [`CombineError::PlanMismatch`] for a gap, [`CombineError::SampleCount`]
/// for a PCM file of another size, FFmpeg, I/O or cancellation errors.
/// Nothing is left at `output` on error.
pub fn write_audio_only(
    chunks: &[(Chunk, PcmAudio)],
    options: &CombineOptions,
    format: AudioOnlyFormat,
    output: impl AsRef<Path>,
) -> Result<CombineReport, CombineError> {
    let output = output.as_ref();
    options.validate()?;
    let parts = parts(chunks)?;
    let total: u64 = parts.iter().map(|p| p.samples).sum();
    let cancelled = || options.cancel.as_ref().is_some_and(Cancel::is_cancelled);
    ffmpeg::init().map_err(CombineError::ffmpeg("initialising FFmpeg"))?;
    let temp = crate::temp_beside(output)?;
    let packets = encode(parts, total, options, format, &temp, &cancelled)?;
    if cancelled() {
        return Err(CombineError::Cancelled);
    }
    crate::persist_output(temp, output)?;
    let bytes = std::fs::metadata(output)
        .map_err(|source| CombineError::Output {
            path: output.to_path_buf(),
            source,
        })?
        .len();
    Ok(CombineReport {
        output: output.to_path_buf(),
        chunks: chunks.len(),
        frames: 0,
        fps: options.fps,
        audio_samples: Some(total),
        audio_packets: packets,
        movie_timescale: match format {
            AudioOnlyFormat::M4a => options.sample_rate,
            _ => 0,
        },
        bytes,
    })
}

/// The chunks' PCM parts, checked: in order, contiguous, each its span's
/// size.
fn parts(chunks: &[(Chunk, PcmAudio)]) -> Result<Vec<audio::PcmPart>, CombineError> {
    let Some((first, _)) = chunks.first() else {
        return Err(CombineError::NoChunks);
    };
    let mut next = first.samples().start;
    let mut parts = Vec::with_capacity(chunks.len());
    for (position, (chunk, pcm)) in chunks.iter().enumerate() {
        let expected = ChunkIndex(u32::try_from(position).unwrap_or(u32::MAX));
        if chunk.index() != expected {
            return Err(CombineError::OutOfOrder {
                position,
                expected,
                found: chunk.index(),
            });
        }
        if chunk.samples().start != next {
            return Err(CombineError::PlanMismatch {
                chunk: chunk.index(),
                field: "sample span",
                expected: format!("one starting at sample {next}"),
                found: chunk.samples().to_string(),
            });
        }
        next = chunk.samples().end;
        // `pcm_part` checks a chunk's PCM; the video path is not read.
        let artifact = ChunkArtifact::new(*chunk, "").with_audio(pcm.clone());
        parts.push(layout::pcm_part(&artifact)?);
    }
    Ok(parts)
}

/// Muxes the encoded PCM into `path`; returns the packets written.
fn encode(
    parts: Vec<audio::PcmPart>,
    total: u64,
    options: &CombineOptions,
    format: AudioOnlyFormat,
    path: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Result<u64, CombineError> {
    let mut octx = crate::create_output(path, format.muxer())?;
    let global_header = octx
        .format()
        .flags()
        .contains(ffmpeg::format::flag::Flags::GLOBAL_HEADER);
    let (mut track, params) = audio::AacTrack::open(
        format.codec(),
        audio::Source::pcm(parts),
        total,
        options.sample_rate,
        options.audio_bitrate,
        global_header,
    )?;
    let tb = track.time_base();
    {
        let mut ost = octx
            .add_stream(ffmpeg::encoder::find(ffmpeg::codec::Id::None))
            .map_err(CombineError::ffmpeg("adding the audio stream"))?;
        ost.set_parameters(params);
        ost.set_time_base(tb);
    }
    let mut header = ffmpeg::Dictionary::new();
    // No encoder version or random stream serial: the same PCM gives the
    // same bytes.
    header.set("fflags", "+bitexact");
    if format == AudioOnlyFormat::M4a {
        header.set("movflags", "+faststart");
        // The edit list that hides AAC's priming, exact to the sample.
        header.set("movie_timescale", &options.sample_rate.to_string());
    }
    octx.write_header_with(header)
        .map_err(CombineError::ffmpeg("writing the output header"))?;
    let out_tb = octx
        .stream(0)
        .expect("the audio stream was added before the header")
        .time_base();
    let mut write = |mut packet: ffmpeg::Packet| {
        packet.set_stream(0);
        packet.rescale_ts(tb, out_tb);
        packet
            .write_interleaved(&mut octx)
            .map_err(CombineError::ffmpeg("writing an audio packet"))
    };
    // In blocks, so cancellation is seen within a second of audio; the
    // last call flushes the encoder.
    let block = u64::from(options.sample_rate);
    let mut until = 0u64;
    while track.sent() < total {
        if cancelled() {
            return Err(CombineError::Cancelled);
        }
        until = until.saturating_add(block);
        track.encode_until(until, &mut write)?;
    }
    track.encode_until(u64::MAX, &mut write)?;
    if track.sent() != total {
        return Err(CombineError::Ffmpeg {
            context: format!("audio ended after {} of {total} samples", track.sent()),
            source: ffmpeg::Error::Eof,
        });
    }
    octx.write_trailer()
        .map_err(CombineError::ffmpeg("finishing the output"))?;
    Ok(track.packets())
}
