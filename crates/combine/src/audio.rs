//! The audio path: the chunks' PCM read in order as one stream, encoded to
//! AAC-LC once, so the AAC packets are those of an unsplit encode and no seam
//! can exist (see `MEDIA-NOTES.md`, *PCM from workers, AAC once*).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;

use chunker::ChunkIndex;
use ffmpeg::{ChannelLayout, Rational, codec, format::Sample, frame};
use ffmpeg_next as ffmpeg;

use crate::{CombineError, PcmFormat};

/// Samples per AAC-LC frame (ISO/IEC 14496-3, 4.5.1.1: 1024 spectral lines
/// per frame); the native encoder takes exactly this many per input frame.
pub(crate) const AAC_FRAME_SAMPLES: usize = 1024;

/// Interleaved stereo: every rendered track has two channels.
const CHANNELS: usize = chunker::timebase::AUDIO_CHANNELS as usize;

/// Bytes read from a PCM file at a time.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// One chunk's PCM, checked against its span before reading starts.
pub(crate) struct PcmPart {
    pub(crate) chunk: ChunkIndex,
    pub(crate) path: PathBuf,
    pub(crate) format: PcmFormat,
    pub(crate) samples: u64,
}

/// Where the samples come from: the chunks' PCM, or silence of the planned
/// length (`enforce_audio_track` for a composition without audio).
pub(crate) enum Source {
    Pcm {
        parts: std::vec::IntoIter<PcmPart>,
        current: Option<(PcmPart, BufReader<File>, u64)>,
    },
    Silence {
        left: u64,
    },
}

impl Source {
    pub(crate) fn pcm(parts: Vec<PcmPart>) -> Self {
        Source::Pcm {
            parts: parts.into_iter(),
            current: None,
        }
    }

    /// Fills `left` and `right` with up to their length of samples; returns
    /// how many were written (fewer only at the end of the whole track).
    fn read(&mut self, l: &mut [f32], r: &mut [f32]) -> Result<usize, CombineError> {
        match self {
            Source::Silence { left } => {
                let n = (l.len() as u64).min(*left) as usize;
                l[..n].fill(0.0);
                r[..n].fill(0.0);
                *left -= n as u64;
                Ok(n)
            }
            Source::Pcm { parts, current } => {
                let mut filled = 0;
                while filled < l.len() {
                    if current.as_ref().is_none_or(|(_, _, left)| *left == 0) {
                        match parts.next() {
                            None => break,
                            Some(part) => {
                                let file =
                                    File::open(&part.path).map_err(|source| CombineError::Io {
                                        chunk: part.chunk,
                                        path: part.path.clone(),
                                        source,
                                    })?;
                                let left = part.samples;
                                *current = Some((
                                    part,
                                    BufReader::with_capacity(READ_BUFFER_BYTES, file),
                                    left,
                                ));
                                continue;
                            }
                        }
                    }
                    let (part, reader, left) = current.as_mut().expect("a part is open");
                    let want = ((l.len() - filled) as u64).min(*left) as usize;
                    let width = part.format.bytes_per_sample() * CHANNELS;
                    let mut bytes = vec![0u8; want * width];
                    reader
                        .read_exact(&mut bytes)
                        .map_err(|source| CombineError::Io {
                            chunk: part.chunk,
                            path: part.path.clone(),
                            source,
                        })?;
                    for (i, s) in bytes.chunks_exact(width).enumerate() {
                        let (a, b) = s.split_at(width / 2);
                        l[filled + i] = decode(part.format, a);
                        r[filled + i] = decode(part.format, b);
                    }
                    filled += want;
                    *left -= want as u64;
                    if *left == 0 {
                        // The span is consumed: the file must end here too,
                        // or it grew since its size was checked.
                        let mut probe = [0u8; 1];
                        let extra = reader.read(&mut probe).map_err(|source| CombineError::Io {
                            chunk: part.chunk,
                            path: part.path.clone(),
                            source,
                        })?;
                        if extra != 0 {
                            return Err(CombineError::Io {
                                chunk: part.chunk,
                                path: part.path.clone(),
                                source: std::io::Error::new(
                                    std::io::ErrorKind::InvalidData,
                                    "the file holds more samples than its span (it changed while being read)",
                                ),
                            });
                        }
                    }
                }
                Ok(filled)
            }
        }
    }
}

/// One sample value in `format` as a float in `[-1, 1]`.
fn decode(format: PcmFormat, b: &[u8]) -> f32 {
    match format {
        PcmFormat::S16le => f32::from(i16::from_le_bytes([b[0], b[1]])) / 32_768.0,
        PcmFormat::F32le => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
    }
}

/// The AAC-LC encoder fed from a [`Source`], one 1024-sample frame at a time,
/// with `pts` = running sample index so its priming (1024 samples, first
/// packet at pts −1024) becomes the MP4 edit list.
pub(crate) struct AacTrack {
    encoder: ffmpeg::encoder::Audio,
    source: Source,
    sample_rate: u32,
    total: u64,
    sent: u64,
    packets: u64,
    flushed: bool,
}

impl AacTrack {
    pub(crate) fn open(
        source: Source,
        total: u64,
        sample_rate: u32,
        bitrate: u32,
        global_header: bool,
    ) -> Result<(Self, codec::Parameters), CombineError> {
        let aac = ffmpeg::encoder::find_by_name("aac").ok_or(CombineError::Ffmpeg {
            context: "finding FFmpeg's native `aac` encoder".into(),
            source: ffmpeg::Error::EncoderNotFound,
        })?;
        let mut enc = codec::Context::new_with_codec(aac)
            .encoder()
            .audio()
            .map_err(CombineError::ffmpeg("creating the AAC encoder"))?;
        let rate = i32::try_from(sample_rate).map_err(|_| CombineError::InvalidOption {
            option: "sample_rate",
            given: sample_rate.to_string(),
            allowed: "at most 2^31-1 Hz",
        })?;
        enc.set_rate(rate);
        enc.set_channel_layout(ChannelLayout::STEREO);
        enc.set_channels(CHANNELS as i32);
        enc.set_format(Sample::F32(ffmpeg::format::sample::Type::Planar));
        enc.set_bit_rate(bitrate as usize);
        enc.set_time_base(Rational::new(1, rate));
        if global_header {
            enc.set_flags(codec::Flags::GLOBAL_HEADER);
        }
        let encoder = enc
            .open_as(aac)
            .map_err(CombineError::ffmpeg("opening the AAC encoder"))?;
        let params = codec::Parameters::from(&encoder);
        Ok((
            AacTrack {
                encoder,
                source,
                sample_rate,
                total,
                sent: 0,
                packets: 0,
                flushed: false,
            },
            params,
        ))
    }

    /// Samples given to the encoder so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }

    /// AAC packets written so far.
    pub(crate) fn packets(&self) -> u64 {
        self.packets
    }

    pub(crate) fn time_base(&self) -> Rational {
        Rational::new(1, self.sample_rate as i32)
    }

    /// Encodes frames until at least `until` samples have been sent (or the
    /// track is complete), handing each packet to `write`.
    pub(crate) fn encode_until(
        &mut self,
        until: u64,
        write: &mut dyn FnMut(ffmpeg::Packet) -> Result<(), CombineError>,
    ) -> Result<(), CombineError> {
        while self.sent < until.min(self.total) {
            let n = (self.total - self.sent).min(AAC_FRAME_SAMPLES as u64) as usize;
            // A fresh frame each time: the encoder may keep a reference to
            // the previous one's buffers.
            let mut frame = frame::Audio::new(
                Sample::F32(ffmpeg::format::sample::Type::Planar),
                n,
                ChannelLayout::STEREO,
            );
            frame.set_channels(CHANNELS as u16);
            frame.set_rate(self.sample_rate);
            let mut l = vec![0f32; n];
            let mut r = vec![0f32; n];
            let got = self.source.read(&mut l, &mut r)?;
            if got != n {
                return Err(CombineError::Ffmpeg {
                    context: format!(
                        "audio ended after {} samples, {} expected",
                        self.sent + got as u64,
                        self.total
                    ),
                    source: ffmpeg::Error::Eof,
                });
            }
            frame.plane_mut::<f32>(0)[..n].copy_from_slice(&l);
            frame.plane_mut::<f32>(1)[..n].copy_from_slice(&r);
            frame.set_pts(Some(self.sent as i64));
            self.encoder
                .send_frame(&frame)
                .map_err(CombineError::ffmpeg("encoding AAC"))?;
            self.sent += n as u64;
            self.drain(write)?;
        }
        if self.sent >= self.total && !self.flushed {
            self.encoder
                .send_eof()
                .map_err(CombineError::ffmpeg("flushing the AAC encoder"))?;
            self.flushed = true;
            self.drain(write)?;
        }
        Ok(())
    }

    fn drain(
        &mut self,
        write: &mut dyn FnMut(ffmpeg::Packet) -> Result<(), CombineError>,
    ) -> Result<(), CombineError> {
        loop {
            let mut packet = ffmpeg::Packet::empty();
            match self.encoder.receive_packet(&mut packet) {
                Ok(()) => {
                    self.packets += 1;
                    write(packet)?;
                }
                Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                    return Ok(());
                }
                Err(e) => return Err(CombineError::ffmpeg("encoding AAC")(e)),
            }
        }
    }
}
