//! Audio files read by the span: opened from their headers (rate, length,
//! encoder delay and padding), decoded in fixed blocks on demand.
//!
//! A file's samples are numbered on its *timeline*: the samples a player
//! plays, after the encoder's priming and padding are removed (MP3 LAME/Xing
//! gapless info and Ogg granule positions through Symphonia's gapless mode,
//! MP4 edit lists and `iTunSMPB` read in [`super::mp4`]). Sample 0 is the
//! first sample ffmpeg's decode of the same file gives.
//!
//! Blocks of [`BLOCK_FRAMES`] timeline samples are decoded independently: a
//! fresh reader seeks to [`PREROLL_FRAMES`] before the block (the decoder's
//! state — MDCT overlap, MP3 bit reservoir — is rebuilt by then) and the
//! samples before the block are dropped. So the value of a sample depends on
//! its index alone, whatever span asked for it and in whatever order: the
//! property that lets chunks render their audio independently. Only the
//! blocks a span touches are decoded, and a few are kept per file, so memory
//! is bounded by the span, not the file: a two-hour file trimmed to 30 s
//! decodes 30 s, and describing a composition decodes nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CODEC_TYPE_NULL, CODEC_TYPE_OPUS, DecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader, SeekMode, SeekTo};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use super::resample::Resampler;
use crate::SAMPLE_RATE;

/// Timeline samples per decoded block (5.5 s at 48 kHz; 2 MiB of stereo
/// `f32`).
pub const BLOCK_FRAMES: u64 = 1 << 18;

/// Samples decoded and dropped before a block: more than any supported
/// codec needs to rebuild its state after a seek (an MP3 bit reservoir at
/// 32 kb/s spans six frames, 6 912 samples; AAC and Vorbis overlap one
/// block of at most 8 192).
pub const PREROLL_FRAMES: u64 = 16_384;

/// Blocks kept per file: the span being rendered and its neighbours.
const CACHED_BLOCKS: usize = 6;

/// The longest audio file, in seconds (24 hours, the longest composition),
/// checked from its header before anything is decoded.
pub const MAX_AUDIO_SECONDS: u64 = 24 * 3600;

/// The formats named in errors.
pub const SUPPORTED: &str = "WAV, MP3, AAC (M4A/MP4), FLAC or Ogg Vorbis";

/// An audio file of the bundle, opened from its headers.
#[derive(Debug)]
pub struct AudioFile {
    path: PathBuf,
    rel: String,
    /// The track Symphonia decodes.
    track: u32,
    rate: u32,
    /// Timeline samples.
    frames: u64,
    /// The decoder's timestamp of timeline sample 0 (Symphonia's own
    /// gapless trimming already applied).
    offset: i64,
    /// To 48 kHz, unless the file is at 48 kHz.
    resampler: Option<Resampler>,
    /// Decoded blocks, most recently used last.
    blocks: Mutex<Vec<(u64, Arc<Vec<f32>>)>>,
}

impl AudioFile {
    /// Opens `path` (`rel` in the bundle) from its headers: format, codec,
    /// rate, length and gapless timing. Decodes nothing unless the file
    /// states no length, when its packets are counted (not decoded).
    ///
    /// # Errors
    /// A message (the caller names the file) for unreadable or unsupported
    /// files, naming the supported formats.
    pub fn open(path: &Path, rel: &str) -> Result<AudioFile, String> {
        let mut head = [0u8; 4];
        if let Ok(mut f) = std::fs::File::open(path) {
            use std::io::Read as _;
            let _ = f.read(&mut head);
        }
        if head == [0x1a, 0x45, 0xdf, 0xa3] {
            return Err(format!(
                "WebM/Matroska (and the Opus in it) is not supported: use {SUPPORTED}"
            ));
        }
        let (format, track) = probe(path, rel)?;
        let t = format
            .tracks()
            .iter()
            .find(|t| t.id == track)
            .ok_or("no audio track")?;
        let params = t.codec_params.clone();
        if params.codec == CODEC_TYPE_OPUS {
            return Err(format!("Opus is not supported: use {SUPPORTED}"));
        }
        if let Err(e) = symphonia::default::get_codecs().make(&params, &DecoderOptions::default()) {
            let name = symphonia::default::get_codecs()
                .get_codec(params.codec)
                .map_or_else(|| format!("{}", params.codec), |d| d.long_name.to_owned());
            return Err(format!(
                "the codec {name} is not supported ({e}): use {SUPPORTED}"
            ));
        }
        let rate = params.sample_rate.ok_or("unknown sample rate")?;
        if !(1000..=384_000).contains(&rate) {
            return Err(format!("sample rate {rate} Hz is out of range 1000-384000"));
        }
        let mp4 = super::mp4::gapless(path, track as usize, rate)
            .map_err(|m| format!("reading its MP4 boxes: {m}"))?;
        let offset = mp4.map_or(0, |g| g.offset);
        // Timestamps must count samples: an MP4 whose media timescale is
        // not its sample rate would need every position converted.
        if let Some(tb) = params.time_base
            && (tb.numer != 1 || tb.denom != rate)
        {
            return Err(format!(
                "its time base {}/{} is not its sample rate {rate} Hz: not supported",
                tb.numer, tb.denom
            ));
        }
        let decoded = match params.n_frames {
            Some(n) => n,
            None => count_frames(format, track)?,
        };
        let available = (decoded as i64 - offset).max(0) as u64;
        let frames = mp4
            .and_then(|g| g.frames)
            .map_or(available, |f| f.min(available));
        if frames == 0 {
            return Err("holds no audio".into());
        }
        if frames > MAX_AUDIO_SECONDS * u64::from(rate) {
            return Err(format!(
                "is {} s long: at most {MAX_AUDIO_SECONDS} s",
                frames / u64::from(rate)
            ));
        }
        Ok(AudioFile {
            path: path.to_owned(),
            rel: rel.to_owned(),
            track,
            rate,
            frames,
            offset,
            resampler: (rate != SAMPLE_RATE).then(|| Resampler::new(rate, SAMPLE_RATE)),
            blocks: Mutex::new(Vec::new()),
        })
    }

    /// The file's sample rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Samples on the file's timeline.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The resampler to 48 kHz, if the file is at another rate.
    pub fn resampler(&self) -> Option<&Resampler> {
        self.resampler.as_ref()
    }

    /// Stereo samples `[start, start + out.len()/2)` of the timeline at the
    /// file's rate; zero outside the file.
    ///
    /// # Errors
    /// A message if the file can no longer be read.
    pub fn read(&self, start: i64, out: &mut [f32]) -> Result<(), String> {
        out.fill(0.0);
        let len = (out.len() / 2) as i64;
        let from = start.max(0);
        let to = (start + len).min(self.frames as i64);
        let mut at = from;
        while at < to {
            let k = at as u64 / BLOCK_FRAMES;
            let block = self.block(k)?;
            let block_start = (k * BLOCK_FRAMES) as i64;
            let end = to.min(block_start + (block.len() / 2) as i64);
            if end <= at {
                break;
            }
            let src = &block[((at - block_start) * 2) as usize..((end - block_start) * 2) as usize];
            out[((at - start) * 2) as usize..((end - start) * 2) as usize].copy_from_slice(src);
            at = end;
        }
        Ok(())
    }

    /// Block `k`, from the cache or decoded.
    fn block(&self, k: u64) -> Result<Arc<Vec<f32>>, String> {
        {
            let mut blocks = super::lock(&self.blocks);
            if let Some(i) = blocks.iter().position(|(b, _)| *b == k) {
                let hit = blocks.remove(i);
                let data = hit.1.clone();
                blocks.push(hit);
                return Ok(data);
            }
        }
        let data = Arc::new(self.decode_block(k)?);
        let mut blocks = super::lock(&self.blocks);
        if blocks.len() >= CACHED_BLOCKS {
            blocks.remove(0);
        }
        blocks.push((k, data.clone()));
        Ok(data)
    }

    /// Decodes timeline samples `[k·BLOCK, (k+1)·BLOCK)` with a fresh
    /// reader and decoder, so the result depends on `k` alone.
    fn decode_block(&self, k: u64) -> Result<Vec<f32>, String> {
        let first = k * BLOCK_FRAMES;
        let len = BLOCK_FRAMES.min(self.frames.saturating_sub(first));
        let mut out = vec![0.0f32; (len * 2) as usize];
        // In the decoder's timestamps.
        let want = first as i64 + self.offset;
        let want_end = want + len as i64;
        let (mut format, _) = probe(&self.path, &self.rel)?;
        let seek_to = want - PREROLL_FRAMES as i64;
        if seek_to > 0 {
            let to = SeekTo::TimeStamp {
                ts: seek_to as u64,
                track_id: self.track,
            };
            if format.seek(SeekMode::Accurate, to).is_err() {
                // Decoding from the start gives the same samples, slowly;
                // it happens for this block every time, so stays exact.
                format = probe(&self.path, &self.rel)?.0;
            }
        }
        let params = format
            .tracks()
            .iter()
            .find(|t| t.id == self.track)
            .ok_or("no audio track")?
            .codec_params
            .clone();
        let mut decoder = symphonia::default::get_codecs()
            .make(&params, &DecoderOptions::default())
            .map_err(|e| format!("decoding: {e}"))?;
        let mut buf: Option<SampleBuffer<f32>> = None;
        loop {
            let packet = match format.next_packet() {
                Ok(p) => p,
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(SymError::ResetRequired) => break,
                Err(e) => return Err(format!("reading packets: {e}")),
            };
            if packet.track_id() != self.track {
                continue;
            }
            let ts = packet.ts() as i64;
            if ts >= want_end {
                break;
            }
            if ts + (packet.dur() as i64) < want - PREROLL_FRAMES as i64 {
                // Far before the block (an inexact seek): not decoded.
                continue;
            }
            let decoded = match decoder.decode(&packet) {
                Ok(d) => d,
                // A corrupt packet is silence, as every player skips it.
                Err(SymError::DecodeError(_)) => continue,
                Err(e) => return Err(format!("decoding: {e}")),
            };
            copy_stereo(&mut buf, decoded, ts, want, &mut out)?;
        }
        Ok(out)
    }
}

/// Copies the part of a decoded packet starting at timestamp `ts` that
/// falls in `out` (stereo from timestamp `want`): the first two channels,
/// mono doubled.
fn copy_stereo(
    buf: &mut Option<SampleBuffer<f32>>,
    decoded: symphonia::core::audio::AudioBufferRef<'_>,
    ts: i64,
    want: i64,
    out: &mut [f32],
) -> Result<(), String> {
    let spec = *decoded.spec();
    let channels = spec.channels.count();
    if channels == 0 {
        return Err("no channels".into());
    }
    let sb = match buf {
        Some(b) if b.capacity() >= decoded.capacity() * channels => b,
        _ => buf.insert(SampleBuffer::new(decoded.capacity() as u64, spec)),
    };
    sb.copy_interleaved_ref(decoded);
    let len = (out.len() / 2) as i64;
    for (i, frame) in sb.samples().chunks_exact(channels).enumerate() {
        let at = ts + i as i64 - want;
        if at < 0 {
            continue;
        }
        if at >= len {
            break;
        }
        let l = frame[0];
        let r = if channels > 1 { frame[1] } else { frame[0] };
        out[(at * 2) as usize] = l;
        out[(at * 2 + 1) as usize] = r;
    }
    Ok(())
}

/// A fresh format reader for the file, in gapless mode, and the audio
/// track to decode.
fn probe(path: &Path, rel: &str) -> Result<(Box<dyn FormatReader>, u32), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut hint = Hint::new();
    if let Some(ext) = Path::new(rel).extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let options = FormatOptions {
        enable_gapless: true,
        ..FormatOptions::default()
    };
    let probed = symphonia::default::get_probe()
        .format(&hint, mss, &options, &MetadataOptions::default())
        .map_err(|e| format!("not a decodable audio file ({e}): use {SUPPORTED}"))?;
    let format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL && t.codec_params.sample_rate.is_some())
        .ok_or("no audio track")?
        .id;
    Ok((format, track))
}

/// The length of a file whose header states none, from its packets'
/// timestamps (read, not decoded).
fn count_frames(mut format: Box<dyn FormatReader>, track: u32) -> Result<u64, String> {
    let mut end = 0u64;
    loop {
        match format.next_packet() {
            Ok(p) if p.track_id() == track => end = end.max(p.ts() + p.dur()),
            Ok(_) => {}
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => break,
            Err(e) => return Err(format!("reading packets: {e}")),
        }
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 59-minute 48 kHz stereo WAV whose samples are a sparse file's
    /// zeros, with a marker written at `marker` (a sample index).
    fn long_wav(dir: &Path, marker: u64) -> PathBuf {
        let data: u64 = 3540 * 48_000 * 4;
        let mut h = b"RIFF".to_vec();
        h.extend_from_slice(&((36 + data) as u32).to_le_bytes());
        h.extend_from_slice(b"WAVEfmt ");
        h.extend_from_slice(&16u32.to_le_bytes());
        for v in [1u16, 2] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        for v in [48_000u32, 48_000 * 4] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        for v in [4u16, 16] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        h.extend_from_slice(b"data");
        h.extend_from_slice(&(data as u32).to_le_bytes());
        let path = dir.join("long.wav");
        std::fs::write(&path, &h).expect("header");
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        f.set_len(44 + data).expect("sparse");
        f.seek(std::io::SeekFrom::Start(44 + marker * 4))
            .expect("seek");
        f.write_all(&16_384i16.to_le_bytes()).expect("marker");
        path
    }

    #[test]
    fn opening_decodes_nothing_and_reading_decodes_only_the_span() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = 40 * 60 * 48_000 + 7;
        let path = long_wav(dir.path(), marker);
        let file = AudioFile::open(&path, "long.wav").expect("opens");
        assert_eq!(file.frames(), 3540 * 48_000);
        assert!(
            super::super::lock(&file.blocks).is_empty(),
            "opening decodes nothing"
        );
        let mut out = vec![0.0f32; 2 * 48_000];
        file.read(marker as i64 - 10, &mut out).expect("reads");
        assert_eq!(out[20], 0.5, "the marker, 40 minutes in");
        assert_eq!(out[21], 0.0);
        let decoded: Vec<u64> = super::super::lock(&file.blocks)
            .iter()
            .map(|b| b.0)
            .collect();
        assert_eq!(decoded, vec![marker / BLOCK_FRAMES], "one block decoded");
        // Reading on keeps at most CACHED_BLOCKS blocks.
        for k in 0..20 {
            file.read((k * BLOCK_FRAMES) as i64, &mut out)
                .expect("reads");
        }
        assert_eq!(super::super::lock(&file.blocks).len(), CACHED_BLOCKS);
    }
}
