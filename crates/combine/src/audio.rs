//! The audio path: the chunks' PCM read in order as one stream, encoded
//! once (AAC-LC, Opus or 16-bit PCM), so the packets are those of an
//! unsplit encode and no seam can exist (see `MEDIA-NOTES.md`, *PCM from
//! workers, AAC once*). The encoder's priming (AAC's 1024 samples, Opus's
//! pre-skip of 312) is signalled by the container (MP4 edit list, WebM
//! CodecDelay and OpusHead), and Opus's end padding by the last packet's
//! skip-samples side data (WebM DiscardPadding).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read, Seek, Write};
use std::path::PathBuf;

use chunker::ChunkIndex;
use ffmpeg::{ChannelLayout, Rational, codec, format::Sample, frame};
use ffmpeg_next as ffmpeg;

use crate::{AudioCodec, CombineError, PcmFormat, ffi};

/// Samples per frame given to encoders that take any number (PCM). AAC-LC
/// takes exactly 1024 (ISO/IEC 14496-3, 4.5.1.1), Opus 960 here: each
/// encoder's own frame size is used.
const PCM_FRAME_SAMPLES: usize = 1024;

/// Interleaved stereo: every rendered track has two channels.
const CHANNELS: usize = chunker::timebase::AUDIO_CHANNELS as usize;

/// Bytes read from a PCM file at a time.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// One chunk's PCM, checked against its span before reading starts.
#[derive(Debug, Clone, PartialEq, Eq)]
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
        /// Parts not opened yet, in order (more may be appended).
        parts: VecDeque<PcmPart>,
        current: Option<(PcmPart, BufReader<File>, u64)>,
    },
    Silence {
        left: u64,
    },
}

impl Source {
    pub(crate) fn pcm(parts: Vec<PcmPart>) -> Self {
        Source::Pcm {
            parts: parts.into(),
            current: None,
        }
    }

    /// Appends the next part (PCM sources only).
    fn push(&mut self, part: PcmPart) {
        if let Source::Pcm { parts, .. } = self {
            parts.push_back(part);
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
                        match parts.pop_front() {
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

/// The audio encoder and how far it got: FFmpeg's native AAC-LC encoder,
/// libopus or 16-bit PCM, given frames of exactly its frame size (1024
/// samples for AAC, 960 (20 ms) for Opus; the last may be shorter) with
/// `pts` = running sample index, so its priming (AAC: first packet at pts
/// −1024) becomes the container's edit list or codec delay.
pub(crate) struct AacEncoder {
    encoder: ffmpeg::encoder::Audio,
    sample_rate: u32,
    total: u64,
    sent: u64,
    packets: u64,
    flushed: bool,
    /// Samples per frame sent.
    frame_samples: usize,
    /// The sample format the encoder takes.
    format: Sample,
    /// The codec, for errors.
    codec: AudioCodec,
}

/// The FFmpeg encoder of `codec` and the sample format given to it.
fn encoder_of(codec: AudioCodec) -> (&'static str, Sample) {
    use ffmpeg::format::sample::Type;
    match codec {
        AudioCodec::Aac => ("aac", Sample::F32(Type::Planar)),
        AudioCodec::Opus => ("libopus", Sample::F32(Type::Packed)),
        AudioCodec::Pcm => ("pcm_s16le", Sample::I16(Type::Packed)),
        AudioCodec::Mp3 => ("libmp3lame", Sample::F32(Type::Planar)),
    }
}

impl AacEncoder {
    /// An encoder for `total` samples at `sample_rate`; `global_header` as
    /// the muxer wants it (MP4 and WebM do).
    fn open(
        codec: AudioCodec,
        total: u64,
        sample_rate: u32,
        bitrate: u32,
        global_header: bool,
    ) -> Result<(Self, codec::Parameters), CombineError> {
        let (name, format) = encoder_of(codec);
        let found = ffmpeg::encoder::find_by_name(name).ok_or(CombineError::Ffmpeg {
            context: format!("finding FFmpeg's `{name}` encoder"),
            source: ffmpeg::Error::EncoderNotFound,
        })?;
        let mut enc = codec::Context::new_with_codec(found)
            .encoder()
            .audio()
            .map_err(CombineError::ffmpeg("creating the audio encoder"))?;
        let rate = i32::try_from(sample_rate).map_err(|_| CombineError::InvalidOption {
            option: "sample_rate",
            given: sample_rate.to_string(),
            allowed: "at most 2^31-1 Hz",
        })?;
        enc.set_rate(rate);
        enc.set_channel_layout(ChannelLayout::STEREO);
        enc.set_channels(CHANNELS as i32);
        enc.set_format(format);
        if codec != AudioCodec::Pcm {
            enc.set_bit_rate(bitrate as usize);
        }
        enc.set_time_base(Rational::new(1, rate));
        if global_header {
            enc.set_flags(codec::Flags::GLOBAL_HEADER);
        }
        let encoder = enc
            .open_as(found)
            .map_err(CombineError::ffmpeg("opening the audio encoder"))?;
        let frame_samples = match encoder.frame_size() {
            0 => PCM_FRAME_SAMPLES,
            n => n as usize,
        };
        let params = codec::Parameters::from(&encoder);
        Ok((
            AacEncoder {
                encoder,
                sample_rate,
                total,
                sent: 0,
                packets: 0,
                flushed: false,
                frame_samples,
                format,
                codec,
            },
            params,
        ))
    }

    /// Reads the next frame's samples from `source` and encodes them,
    /// handing each packet ready to `write`.
    fn send_next(
        &mut self,
        source: &mut Source,
        write: &mut dyn FnMut(ffmpeg::Packet) -> Result<(), CombineError>,
    ) -> Result<(), CombineError> {
        let n = (self.total - self.sent).min(self.frame_samples as u64) as usize;
        // A fresh frame each time: the encoder may keep a reference to
        // the previous one's buffers.
        let mut frame = frame::Audio::new(self.format, n, ChannelLayout::STEREO);
        frame.set_channels(CHANNELS as u16);
        frame.set_rate(self.sample_rate);
        let mut l = vec![0f32; n];
        let mut r = vec![0f32; n];
        let got = source.read(&mut l, &mut r)?;
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
        fill(&mut frame, self.format, &l, &r);
        frame.set_pts(Some(self.sent as i64));
        let codec = self.codec;
        self.encoder
            .send_frame(&frame)
            .map_err(|e| CombineError::Ffmpeg {
                context: format!("encoding {codec}"),
                source: e,
            })?;
        self.sent += n as u64;
        self.drain(write)
    }

    /// Flushes the encoder once every sample was sent.
    fn flush(
        &mut self,
        write: &mut dyn FnMut(ffmpeg::Packet) -> Result<(), CombineError>,
    ) -> Result<(), CombineError> {
        if self.sent >= self.total && !self.flushed {
            self.encoder
                .send_eof()
                .map_err(CombineError::ffmpeg("flushing the audio encoder"))?;
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
                Err(e) => return Err(CombineError::ffmpeg("encoding audio")(e)),
            }
        }
    }
}

/// Puts `l` and `r` into `frame` in the encoder's sample format: planar or
/// interleaved floats, or 16-bit integers rounded to nearest and clamped
/// (as the workers' `s16le`).
fn fill(frame: &mut frame::Audio, format: Sample, l: &[f32], r: &[f32]) {
    use ffmpeg::format::sample::Type;
    let n = l.len();
    match format {
        Sample::F32(Type::Planar) => {
            frame.plane_mut::<f32>(0)[..n].copy_from_slice(l);
            frame.plane_mut::<f32>(1)[..n].copy_from_slice(r);
        }
        Sample::F32(Type::Packed) => {
            let out = &mut frame.data_mut(0)[..n * 8];
            for (i, (a, b)) in l.iter().zip(r).enumerate() {
                out[8 * i..8 * i + 4].copy_from_slice(&a.to_le_bytes());
                out[8 * i + 4..8 * i + 8].copy_from_slice(&b.to_le_bytes());
            }
        }
        _ => {
            let s16 =
                |v: f32| ((v * 32768.0).round().clamp(-32768.0, 32767.0) as i16).to_le_bytes();
            let out = &mut frame.data_mut(0)[..n * 4];
            for (i, (a, b)) in l.iter().zip(r).enumerate() {
                out[4 * i..4 * i + 2].copy_from_slice(&s16(*a));
                out[4 * i + 2..4 * i + 4].copy_from_slice(&s16(*b));
            }
        }
    }
}

/// The samples the live encoder would have sent after
/// `encode_until(until)`, starting from `sent`: whole frames of
/// `frame_samples` until `until` is reached or passed, the last shorter.
fn sent_after(mut sent: u64, until: u64, total: u64, frame_samples: u64) -> u64 {
    while sent < until.min(total) {
        sent += (total - sent).min(frame_samples);
    }
    sent
}

/// The audio track of an MP4 being written: encoded here from a
/// [`Source`] as the video needs it, or replayed from a [`Prefix`] encoded
/// while the chunks rendered. Either way the muxer is handed the same
/// packets in the same order, so the file's bytes are the same.
pub(crate) enum AacTrack {
    /// Encoded as the muxer goes.
    Live { encoder: AacEncoder, source: Source },
    /// Encoded ahead: packets replayed from the log.
    Replay {
        log: PacketLog,
        next: usize,
        sent: u64,
    },
}

impl AacTrack {
    /// A live track encoding `total` samples from `source` to `codec`.
    pub(crate) fn open(
        codec: AudioCodec,
        source: Source,
        total: u64,
        sample_rate: u32,
        bitrate: u32,
        global_header: bool,
    ) -> Result<(Self, codec::Parameters), CombineError> {
        let (encoder, params) =
            AacEncoder::open(codec, total, sample_rate, bitrate, global_header)?;
        Ok((AacTrack::Live { encoder, source }, params))
    }

    /// A track replaying what `prefix` encoded (it must be complete).
    pub(crate) fn replay(prefix: Prefix) -> (Self, codec::Parameters) {
        (
            AacTrack::Replay {
                log: prefix.log,
                next: 0,
                sent: 0,
            },
            prefix.params,
        )
    }

    fn total(&self) -> u64 {
        match self {
            AacTrack::Live { encoder, .. } => encoder.total,
            AacTrack::Replay { log, .. } => log.total,
        }
    }

    /// Samples given to the encoder so far.
    pub(crate) fn sent(&self) -> u64 {
        match self {
            AacTrack::Live { encoder, .. } => encoder.sent,
            AacTrack::Replay { sent, .. } => *sent,
        }
    }

    /// AAC packets written so far.
    pub(crate) fn packets(&self) -> u64 {
        match self {
            AacTrack::Live { encoder, .. } => encoder.packets,
            AacTrack::Replay { next, .. } => *next as u64,
        }
    }

    pub(crate) fn time_base(&self) -> Rational {
        let rate = match self {
            AacTrack::Live { encoder, .. } => encoder.sample_rate,
            AacTrack::Replay { log, .. } => log.sample_rate,
        };
        Rational::new(1, rate as i32)
    }

    /// Encodes (or replays) frames until at least `until` samples have been
    /// sent (or the track is complete), handing each packet to `write`.
    pub(crate) fn encode_until(
        &mut self,
        until: u64,
        write: &mut dyn FnMut(ffmpeg::Packet) -> Result<(), CombineError>,
    ) -> Result<(), CombineError> {
        let total = self.total();
        match self {
            AacTrack::Live { encoder, source } => {
                while encoder.sent < until.min(total) {
                    encoder.send_next(source, write)?;
                }
                encoder.flush(write)
            }
            AacTrack::Replay { log, next, sent } => {
                *sent = sent_after(*sent, until, total, log.frame_samples);
                // Packets the live encoder would have drained by now: made
                // by a send up to `sent`, and the flush once all was sent.
                let done = if *sent >= total { u64::MAX } else { *sent };
                while let Some(entry) = log.entries.get(*next).copied() {
                    if entry.after_sent > done {
                        break;
                    }
                    write(log.packet(&entry)?)?;
                    *next += 1;
                }
                Ok(())
            }
        }
    }
}

/// Where a logged packet stands: written once `after_sent` samples were
/// sent (`u64::MAX`: by the flush), its timing, and its bytes in the log's
/// file.
#[derive(Debug, Clone, Copy)]
struct LogEntry {
    after_sent: u64,
    pts: Option<i64>,
    dts: Option<i64>,
    duration: i64,
    key: bool,
    offset: u64,
    size: usize,
    /// Samples to discard at the end of the packet (Opus's last packet:
    /// its skip-samples side data, which the container turns into WebM's
    /// DiscardPadding), or 0.
    discard_end: u32,
}

/// AAC packets encoded ahead of the muxer: their bytes in an unnamed
/// temporary file (an hour of 192 kb/s AAC is 86 MB, which the coordinator
/// should not hold), their timing in memory.
pub(crate) struct PacketLog {
    file: File,
    end: u64,
    entries: Vec<LogEntry>,
    total: u64,
    sample_rate: u32,
    /// Samples per frame the encoder was sent.
    frame_samples: u64,
}

impl PacketLog {
    fn io(source: std::io::Error) -> CombineError {
        CombineError::AudioScratch { source }
    }

    fn record(&mut self, packet: &ffmpeg::Packet, after_sent: u64) -> Result<(), CombineError> {
        let data = packet.data().unwrap_or_default();
        self.file.write_all(data).map_err(Self::io)?;
        self.entries.push(LogEntry {
            after_sent,
            pts: packet.pts(),
            dts: packet.dts(),
            duration: packet.duration(),
            key: packet.is_key(),
            offset: self.end,
            size: data.len(),
            discard_end: ffi::discard_end(packet),
        });
        self.end += data.len() as u64;
        Ok(())
    }

    fn packet(&mut self, e: &LogEntry) -> Result<ffmpeg::Packet, CombineError> {
        let mut data = vec![0u8; e.size];
        self.file
            .seek(std::io::SeekFrom::Start(e.offset))
            .and_then(|_| self.file.read_exact(&mut data))
            .map_err(Self::io)?;
        self.file
            .seek(std::io::SeekFrom::Start(self.end))
            .map_err(Self::io)?;
        let mut packet = ffmpeg::Packet::copy(&data);
        packet.set_pts(e.pts);
        packet.set_dts(e.dts);
        packet.set_duration(e.duration);
        if e.key {
            packet.set_flags(ffmpeg::packet::Flags::KEY);
        }
        if e.discard_end > 0 {
            ffi::set_discard_end(&mut packet, e.discard_end);
        }
        Ok(packet)
    }
}

/// The AAC of a render's first chunks, encoded as they arrive (see
/// [`crate::AudioPrefix`]).
pub(crate) struct Prefix {
    encoder: AacEncoder,
    params: codec::Parameters,
    source: Source,
    /// Samples of the parts pushed so far.
    available: u64,
    pub(crate) parts: Vec<PcmPart>,
    log: PacketLog,
}

impl Prefix {
    /// A prefix encoder of `codec` for `total` samples; MP4 and WebM want
    /// a global header.
    pub(crate) fn open(
        codec: AudioCodec,
        total: u64,
        sample_rate: u32,
        bitrate: u32,
    ) -> Result<Self, CombineError> {
        let (encoder, params) = AacEncoder::open(codec, total, sample_rate, bitrate, true)?;
        let frame_samples = encoder.frame_samples as u64;
        let file = tempfile::tempfile().map_err(PacketLog::io)?;
        Ok(Prefix {
            encoder,
            params,
            source: Source::pcm(Vec::new()),
            available: 0,
            parts: Vec::new(),
            log: PacketLog {
                file,
                end: 0,
                entries: Vec::new(),
                total,
                sample_rate,
                frame_samples,
            },
        })
    }

    /// The codec it encodes.
    pub(crate) fn codec(&self) -> AudioCodec {
        self.encoder.codec
    }

    /// Samples the encoder must hold in all.
    pub(crate) fn total(&self) -> u64 {
        self.encoder.total
    }

    /// Appends the next part and encodes every whole frame now available
    /// (and, once the last part is in, the rest and the flush), checking
    /// `cancelled` between frames.
    pub(crate) fn push(
        &mut self,
        part: PcmPart,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<(), CombineError> {
        self.available += part.samples;
        self.parts.push(part.clone());
        self.source.push(part);
        let total = self.encoder.total;
        let Prefix {
            encoder,
            source,
            log,
            available,
            ..
        } = self;
        let frame = encoder.frame_samples as u64;
        loop {
            let sent = encoder.sent;
            let whole = sent + frame <= *available;
            let last = *available >= total && sent < total;
            if !(whole || last) {
                break;
            }
            if cancelled() {
                return Err(CombineError::Cancelled);
            }
            // Packets drained after this send: the live encoder would have
            // written them once it had sent this frame.
            let after = sent + (total - sent).min(frame);
            encoder.send_next(source, &mut |p| log.record(&p, after))?;
        }
        encoder.flush(&mut |p| log.record(&p, u64::MAX))
    }
}
