//! The GIF path: every chunk is a GIF of its own frames, encoded with the
//! render's one palette as its global colour table. The output takes chunk
//! 0's logical screen and palette, loops forever (NETSCAPE2.0, count 0),
//! and copies every chunk's frames with their LZW data untouched (`gif`
//! crate, frame decoding skipped), each given its exact delay.
//!
//! Delays: GIF counts them in 1/100 s. Frame `f` starts at
//! `⌊f · 100 · den / num⌋` hundredths, from the global frame index, so the
//! remainder is spread (30 fps: 3, 3, 4, 3, 3, 4, …) and the `N` frames
//! last exactly `⌊N · 100 · den / num⌋` hundredths, as `S(f)` does for audio
//! (MEDIA-NOTES). Above 100 fps some delays are 0 (players show such
//! frames for about 0.1 s).

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

use chunker::timebase::Fps;

use crate::layout::Layout;
use crate::{ChunkArtifact, CombineError, CombineReport};

/// Hundredths of a second from the start to output frame `f`.
fn centiseconds(f: u64, fps: Fps) -> u64 {
    let t = u128::from(f) * 100 * u128::from(fps.den()) / u128::from(fps.num());
    u64::try_from(t).unwrap_or(u64::MAX)
}

/// The delay of output frame `f`, in hundredths.
fn delay(f: u64, fps: Fps) -> Result<u16, CombineError> {
    let d = centiseconds(f + 1, fps) - centiseconds(f, fps);
    u16::try_from(d).map_err(|_| CombineError::InvalidOption {
        option: "fps",
        given: fps.to_string(),
        allowed: "a rate whose frames last at most 655.35 s (a GIF delay is 16 bits of 1/100 s)",
    })
}

/// What every chunk must share with chunk 0.
#[derive(PartialEq)]
struct Screen {
    width: u16,
    height: u16,
    palette: Vec<u8>,
}

/// Opens chunk `a`'s GIF for copying its frames' LZW data.
fn open(a: &ChunkArtifact) -> Result<(gif::Decoder<BufReader<File>>, Screen), CombineError> {
    let chunk = a.chunk.index();
    let file = File::open(&a.video).map_err(|source| CombineError::Io {
        chunk,
        path: a.video.clone(),
        source,
    })?;
    let mut options = gif::DecodeOptions::new();
    options.skip_frame_decoding(true);
    options.set_color_output(gif::ColorOutput::Indexed);
    let decoder =
        options
            .read_info(BufReader::new(file))
            .map_err(|e| CombineError::UnsupportedVideo {
                chunk,
                path: a.video.clone(),
                detail: format!("it is not a GIF chunk (the gif codec's chunks are GIFs): {e}"),
            })?;
    let screen = Screen {
        width: decoder.width(),
        height: decoder.height(),
        palette: decoder.global_palette().unwrap_or_default().to_vec(),
    };
    if screen.palette.is_empty() {
        return Err(CombineError::UnsupportedVideo {
            chunk,
            path: a.video.clone(),
            detail: "it has no global palette: chunks are encoded with the render's one palette"
                .into(),
        });
    }
    Ok((decoder, screen))
}

/// Checks `screen` against chunk 0's.
fn check_screen(
    a: &ChunkArtifact,
    reference: &Screen,
    screen: &Screen,
) -> Result<(), CombineError> {
    let mismatch = |field, expected: String, found: String| CombineError::StreamMismatch {
        chunk: a.chunk.index(),
        field,
        expected,
        found,
    };
    if screen.width != reference.width {
        return Err(mismatch(
            "width",
            reference.width.to_string(),
            screen.width.to_string(),
        ));
    }
    if screen.height != reference.height {
        return Err(mismatch(
            "height",
            reference.height.to_string(),
            screen.height.to_string(),
        ));
    }
    if screen.palette != reference.palette {
        let hash = |p: &[u8]| {
            use sha2::Digest;
            let h = sha2::Sha256::digest(p);
            format!("{} colours, sha256 {}", p.len() / 3, hex::encode(&h[..8]))
        };
        return Err(mismatch(
            "palette",
            hash(&reference.palette),
            hash(&screen.palette),
        ));
    }
    Ok(())
}

/// An error of the GIF encoder writing `path`, while doing `context`.
fn gif_error(
    path: &Path,
    context: &'static str,
) -> impl FnOnce(gif::EncodingError) -> CombineError {
    let path = path.to_path_buf();
    move |e| CombineError::Output {
        path,
        source: std::io::Error::other(format!("{context}: {e}")),
    }
}

/// Copies chunk `a`'s frames, read from `decoder`, into `out` untouched
/// but for their delays (frame `k` of the render starts at ⌊100·k/fps⌋
/// hundredths). Returns how many frames it copied: exactly the chunk's.
fn copy_frames<W: std::io::Write>(
    a: &ChunkArtifact,
    mut decoder: gif::Decoder<BufReader<File>>,
    out: &mut gif::Encoder<W>,
    fps: Fps,
    cancelled: &dyn Fn() -> bool,
    path: &Path,
) -> Result<u64, CombineError> {
    let chunk = a.chunk.index();
    let start = a.chunk.first_output_frame();
    let mut count = 0u64;
    loop {
        if cancelled() {
            return Err(CombineError::Cancelled);
        }
        let frame = decoder
            .read_next_frame()
            .map_err(|e| CombineError::CorruptVideo {
                chunk,
                path: a.video.clone(),
                detail: format!("frame {count} cannot be read: {e}"),
            })?;
        let Some(frame) = frame else { break };
        if count < a.chunk.frame_count() {
            let mut frame = frame.clone();
            frame.delay = delay(start + count, fps)?;
            out.write_lzw_pre_encoded_frame(&frame)
                .map_err(gif_error(path, "writing a frame"))?;
        }
        count += 1;
    }
    if count != a.chunk.frame_count() {
        return Err(CombineError::FrameCount {
            chunk,
            path: a.video.clone(),
            expected: a.chunk.frame_count(),
            found: count,
        });
    }
    Ok(count)
}

/// Writes the chunks' frames as one looping GIF at `path`.
pub(crate) fn write_output(
    chunks: &[ChunkArtifact],
    layout: Layout,
    path: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Result<CombineReport, CombineError> {
    let first = chunks.first().ok_or(CombineError::NoChunks)?;
    let mut opened = Vec::with_capacity(chunks.len());
    let (decoder, reference) = open(first)?;
    opened.push(decoder);
    for a in &chunks[1..] {
        if cancelled() {
            return Err(CombineError::Cancelled);
        }
        let (decoder, screen) = open(a)?;
        check_screen(a, &reference, &screen)?;
        opened.push(decoder);
    }
    let file = File::create(path).map_err(|source| CombineError::Output {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = gif::Encoder::new(
        BufWriter::new(file),
        reference.width,
        reference.height,
        &reference.palette,
    )
    .map_err(gif_error(path, "writing the GIF header"))?;
    out.set_repeat(gif::Repeat::Infinite)
        .map_err(gif_error(path, "writing the loop extension"))?;
    let fps = layout.output_fps;
    let mut frames = 0u64;
    for (a, decoder) in chunks.iter().zip(opened) {
        frames += copy_frames(a, decoder, &mut out, fps, cancelled, path)?;
    }
    let file = out
        .into_inner()
        .map_err(|e| CombineError::Output {
            path: path.to_path_buf(),
            source: e,
        })?
        .into_inner()
        .map_err(|e| CombineError::Output {
            path: path.to_path_buf(),
            source: e.into_error(),
        })?;
    file.sync_all().map_err(|source| CombineError::Output {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes =
        std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(|source| CombineError::Output {
                path: path.to_path_buf(),
                source,
            })?;
    Ok(CombineReport {
        output: path.to_path_buf(),
        chunks: chunks.len(),
        frames,
        fps,
        audio_samples: None,
        audio_packets: 0,
        movie_timescale: 0,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_spread_the_remainder_and_sum_exactly() {
        let f = |n, d| Fps::new(n, d).expect("fps");
        let d30: Vec<u16> = (0..6).map(|k| delay(k, f(30, 1)).expect("delay")).collect();
        assert_eq!(d30, [3, 3, 4, 3, 3, 4]);
        for fps in [f(30, 1), f(30_000, 1001), f(24, 1), f(25, 1), f(15, 1)] {
            let n = 1000u64;
            let sum: u64 = (0..n)
                .map(|k| u64::from(delay(k, fps).expect("delay")))
                .sum();
            assert_eq!(
                sum,
                n * 100 * u64::from(fps.den()) / u64::from(fps.num()),
                "{fps}"
            );
        }
    }
}
