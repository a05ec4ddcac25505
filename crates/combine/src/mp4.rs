//! Writing the output (MP4, MOV, WebM or Matroska), phase by phase: open
//! the chunks' video and check them against chunk 0 and the container, add
//! the streams, write the header, copy every chunk's re-based packets with
//! the audio encoded just ahead of them, finish the audio, and (MP4, MOV)
//! move the index to the front.

use std::path::Path;

use chunker::timebase::Fps;
use ffmpeg::{Rational, codec};
use ffmpeg_next as ffmpeg;

use crate::layout::{AudioPlan, Layout};
use crate::{
    ChunkArtifact, CombineError, CombineOptions, CombineReport, Container, audio, ffi, video,
};

/// The video codec of the chunks as Montage names it (for errors and the
/// container check).
fn video_codec(id: codec::Id) -> Option<spec::VideoCodec> {
    match id {
        codec::Id::H264 => Some(spec::VideoCodec::H264),
        codec::Id::HEVC => Some(spec::VideoCodec::H265),
        codec::Id::VP9 => Some(spec::VideoCodec::Vp9),
        codec::Id::AV1 => Some(spec::VideoCodec::Av1),
        codec::Id::PRORES => Some(spec::VideoCodec::Prores),
        _ => None,
    }
}

/// Writes the checked chunks as one file at `path`, in the options'
/// container.
pub(crate) fn write_output(
    chunks: &[ChunkArtifact],
    options: &CombineOptions,
    layout: Layout,
    path: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Result<CombineReport, CombineError> {
    let inputs = ChunkInputs::open(chunks, layout.output_fps, options.verify_decode, cancelled)?;
    let container = options.output.container;
    let held = video_codec(inputs.reference.codec())
        .is_some_and(|c| container.video_codecs().contains(&c));
    if !held {
        return Err(CombineError::InvalidOption {
            option: "container",
            given: format!(
                ".{container} with {} chunks",
                video_codec(inputs.reference.codec()).map_or("unknown".into(), |c| c.to_string())
            ),
            allowed: "a container that holds the chunks' codec (mp4: h264, h265, av1; mov: h264, h265, prores; webm: vp9, av1; mkv: all but gif)",
        });
    }
    let mut mp4 = Mp4Writer::create(path, options, &layout, cancelled)?;
    mp4.add_video_stream(inputs.first_parameters.clone(), inputs.alpha_mode)?;
    mp4.add_audio_stream(layout.audio, layout.samples.len())?;
    mp4.write_header()?;
    for a in chunks {
        mp4.copy_video(a, &inputs)?;
    }
    mp4.finish_audio()?;
    mp4.finish(chunks.len(), layout.frames)
}

/// Every chunk's video opened once before anything is written, so a chunk
/// that cannot join is refused early.
struct ChunkInputs {
    /// Chunk 0's parameters (SPS/PPS included), which every chunk repeats.
    reference: video::VideoParams,
    /// The largest decoder delay any chunk declares, in frames.
    delay: i64,
    /// Chunk 0's stream parameters, copied into the MP4's video track.
    first_parameters: codec::Parameters,
    /// Chunk 0's video has an alpha channel signalled in the container
    /// (VP9 in Matroska).
    alpha_mode: bool,
}

impl ChunkInputs {
    /// Reads each chunk's first packet: its parameters, compared with chunk
    /// 0's, and its decoder delay.
    ///
    /// Chunk 0 is probed fully (its parameters become the output's video
    /// track). An H.264 or H.265 chunk after it whose first packet repeats
    /// chunk 0's parameter sets byte for byte is taken from its headers
    /// alone: a full probe decodes frames, about 6 ms per 1080p chunk,
    /// most of the combine's time with many chunks. Any other chunk, or
    /// any chunk when decoding is verified, is probed fully as well, so
    /// every difference is found and named as before.
    fn open(
        chunks: &[ChunkArtifact],
        output_fps: Fps,
        verify: bool,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<ChunkInputs, CombineError> {
        let Some((first, rest)) = chunks.split_first() else {
            return Err(CombineError::NoChunks);
        };
        if cancelled() {
            return Err(CombineError::Cancelled);
        }
        let opened = video::ChunkVideo::open(first.chunk.index(), &first.video, output_fps)?;
        let first_parameters = opened.codec_parameters.clone();
        let alpha_mode = opened.alpha_mode;
        let (reference, delay) = opened.probe()?;
        let mut inputs = ChunkInputs {
            reference,
            delay,
            first_parameters,
            alpha_mode,
        };
        for a in rest {
            if cancelled() {
                return Err(CombineError::Cancelled);
            }
            let (chunk, path) = (a.chunk.index(), a.video.as_path());
            let quick = if verify {
                None
            } else {
                video::ChunkVideo::open_headers_only(chunk, path, output_fps, &inputs.reference)
                    .and_then(|v| v.probe_same(&inputs.reference))
            };
            let (params, delay) = match quick {
                Some(found) => found,
                None => video::ChunkVideo::open(chunk, path, output_fps)?.probe()?,
            };
            if let Some((field, expected, found)) = inputs.reference.first_difference(&params) {
                return Err(CombineError::StreamMismatch {
                    chunk,
                    field,
                    expected,
                    found,
                });
            }
            inputs.delay = inputs.delay.max(delay);
        }
        Ok(inputs)
    }
}

/// The output being written, with one method per phase in the order they
/// run.
struct Mp4Writer<'a> {
    octx: ffmpeg::format::context::Output,
    path: &'a Path,
    options: &'a CombineOptions,
    cancelled: &'a dyn Fn() -> bool,
    output_fps: Fps,
    /// One tick per output frame: the time base packets are re-based in.
    frame_tb: Rational,
    /// The movie timescale that makes both edit lists exact (MP4 and MOV).
    timescale: u32,
    container: Container,
    /// The AAC encoder and its source, when there is an audio track.
    aac: Option<audio::AacTrack>,
    /// Samples the audio track must hold.
    total_samples: u64,
    /// The muxer's time bases for the video and audio streams, known once
    /// the header is written.
    video_tb: Rational,
    audio_tb: Option<Rational>,
}

impl<'a> Mp4Writer<'a> {
    /// Opens FFmpeg's MP4 muxer on `path`.
    fn create(
        path: &'a Path,
        options: &'a CombineOptions,
        layout: &Layout,
        cancelled: &'a dyn Fn() -> bool,
    ) -> Result<Self, CombineError> {
        let output_fps = layout.output_fps;
        let frame_tb = Rational::new(output_fps.den() as i32, output_fps.num() as i32);
        let container = options.output.container;
        let timescale = match container {
            Container::Mp4 | Container::Mov => movie_timescale(output_fps, options.sample_rate)?,
            _ => 0,
        };
        let octx = crate::create_output(path, container.muxer())?;
        Ok(Mp4Writer {
            octx,
            path,
            options,
            cancelled,
            output_fps,
            frame_tb,
            timescale,
            container,
            aac: None,
            total_samples: 0,
            video_tb: frame_tb,
            audio_tb: None,
        })
    }

    /// Stream 0: chunk 0's parameters, stream-copied, tagged for the
    /// container.
    fn add_video_stream(
        &mut self,
        mut params: codec::Parameters,
        alpha_mode: bool,
    ) -> Result<(), CombineError> {
        match (params.id(), self.container) {
            // `hvc1` rather than FFmpeg's default `hev1`: Safari and
            // QuickTime play only `hvc1`.
            (codec::Id::HEVC, Container::Mp4 | Container::Mov) => {
                ffi::set_codec_tag(&mut params, *b"hvc1");
            }
            // Matroska's ProRes tag (`apch`, `ap4h`) is MOV's own.
            (codec::Id::PRORES, Container::Mov) => {}
            // Other tags are the chunk container's (TS stream types), which
            // the output's muxer would refuse: it picks its own.
            _ => ffi::clear_codec_tag(&mut params),
        }
        let mut ost = self
            .octx
            .add_stream(ffmpeg::encoder::find(codec::Id::None))
            .map_err(CombineError::ffmpeg("adding the video stream"))?;
        ost.set_parameters(params);
        ost.set_time_base(self.frame_tb);
        let rate = Rational::new(self.output_fps.num() as i32, self.output_fps.den() as i32);
        ost.set_avg_frame_rate(rate);
        ost.set_rate(rate);
        if alpha_mode && matches!(self.container, Container::Webm | Container::Mkv) {
            // The Matroska muxer writes AlphaMode (and the packets' alpha
            // as BlockAdditional) only when the stream says so.
            let mut metadata = ffmpeg::Dictionary::new();
            metadata.set("alpha_mode", "1");
            ost.set_metadata(metadata);
        }
        Ok(())
    }

    /// Stream 1, unless the output has no audio: AAC encoded once from the
    /// joined PCM (or silence) of `total_samples` samples, or encoded ahead.
    fn add_audio_stream(
        &mut self,
        plan: AudioPlan,
        total_samples: u64,
    ) -> Result<(), CombineError> {
        self.total_samples = total_samples;
        let source = match plan {
            AudioPlan::None => return Ok(()),
            AudioPlan::Pcm(parts) => audio::Source::pcm(parts),
            AudioPlan::Silence => audio::Source::Silence {
                left: total_samples,
            },
            AudioPlan::Encoded(prefix) => {
                let (track, params) = audio::AacTrack::replay(*prefix);
                return self.add_audio_track(track, params);
            }
        };
        let global_header = self
            .octx
            .format()
            .flags()
            .contains(ffmpeg::format::flag::Flags::GLOBAL_HEADER);
        let codec = self
            .options
            .output
            .audio_codec()
            .ok_or(CombineError::InvalidOption {
                option: "audio",
                given: format!("audio for a .{} file", self.container),
                allowed: "a container with audio (gif has none)",
            })?;
        let (track, params) = audio::AacTrack::open(
            codec,
            source,
            total_samples,
            self.options.sample_rate,
            self.options.audio_bitrate,
            global_header,
        )?;
        self.add_audio_track(track, params)
    }

    fn add_audio_track(
        &mut self,
        track: audio::AacTrack,
        params: codec::Parameters,
    ) -> Result<(), CombineError> {
        let mut ost = self
            .octx
            .add_stream(ffmpeg::encoder::find(codec::Id::None))
            .map_err(CombineError::ffmpeg("adding the audio stream"))?;
        ost.set_parameters(params);
        ost.set_time_base(track.time_base());
        self.aac = Some(track);
        Ok(())
    }

    /// Writes the header with the options that shape the file, and reads
    /// back the time bases the muxer chose.
    fn write_header(&mut self) -> Result<(), CombineError> {
        let mut header = ffmpeg::Dictionary::new();
        match self.container {
            Container::Mp4 | Container::Mov => {
                // Moov first so browsers can start playing before the whole
                // file loads.
                header.set("movflags", "+faststart");
                header.set("movie_timescale", &self.timescale.to_string());
            }
            // Without it Matroska writes a random segment UID and the
            // date: the same chunks would give other bytes each time.
            _ => header.set("fflags", "+bitexact"),
        }
        self.octx
            .write_header_with(header)
            .map_err(CombineError::ffmpeg("writing the output header"))?;
        self.video_tb = self
            .octx
            .stream(0)
            .expect("the video stream was added before the header")
            .time_base();
        self.audio_tb = self.octx.stream(1).map(|s| s.time_base());
        Ok(())
    }

    /// Copies one chunk's packets, re-based from its planned first output
    /// frame, with the audio kept just ahead of them.
    fn copy_video(&mut self, a: &ChunkArtifact, inputs: &ChunkInputs) -> Result<(), CombineError> {
        let cancelled = self.cancelled;
        if cancelled() {
            return Err(CombineError::Cancelled);
        }
        // Every chunk's parameters were checked by `ChunkInputs::open`, so
        // the copy needs only the container's headers, unless the decoder
        // that verifies it needs the full parameters.
        let verify = self.options.verify_decode;
        let (chunk, path) = (a.chunk.index(), a.video.as_path());
        let headers_only = if verify {
            None
        } else {
            video::ChunkVideo::open_headers_only(chunk, path, self.output_fps, &inputs.reference)
        };
        let chunk_video = match headers_only {
            Some(v) => v,
            None => video::ChunkVideo::open(chunk, path, self.output_fps)?,
        };
        chunk_video.copy(
            &inputs.reference,
            inputs.delay,
            a.chunk.first_output_frame(),
            a.chunk.frame_count(),
            verify,
            cancelled,
            &mut |packet| self.write_video_packet(packet),
        )
    }

    /// Writes one re-based video packet (PTS and DTS in frames), after the
    /// audio up to the end of its frame, so the interleaver never holds
    /// more than a frame or so of either.
    fn write_video_packet(&mut self, mut packet: ffmpeg::Packet) -> Result<(), CombineError> {
        if self.aac.is_some() {
            let dts_frames = packet.dts().unwrap_or(0).max(0) as u128 + 1;
            let fps = self.output_fps;
            let until = dts_frames * u128::from(self.options.sample_rate) * u128::from(fps.den())
                / u128::from(fps.num());
            self.encode_audio_until(u64::try_from(until).unwrap_or(u64::MAX))?;
        }
        packet.set_stream(0);
        packet.rescale_ts(self.frame_tb, self.video_tb);
        packet
            .write_interleaved(&mut self.octx)
            .map_err(CombineError::ffmpeg("writing a video packet"))
    }

    /// Encodes and writes audio until `until` samples have been sent (or the
    /// track is complete).
    fn encode_audio_until(&mut self, until: u64) -> Result<(), CombineError> {
        let Some(track) = self.aac.as_mut() else {
            return Ok(());
        };
        let tb = track.time_base();
        let out_tb = self
            .audio_tb
            .expect("an audio stream exists when there is a track");
        let octx = &mut self.octx;
        track.encode_until(until, &mut |mut packet| {
            packet.set_stream(1);
            packet.rescale_ts(tb, out_tb);
            packet
                .write_interleaved(octx)
                .map_err(CombineError::ffmpeg("writing an audio packet"))
        })
    }

    /// Encodes the rest of the audio and flushes the encoder; the track must
    /// then hold exactly the planned samples.
    fn finish_audio(&mut self) -> Result<(), CombineError> {
        if self.aac.is_none() {
            return Ok(());
        }
        self.encode_audio_until(u64::MAX)?;
        let sent = self.aac.as_ref().map_or(0, audio::AacTrack::sent);
        if sent != self.total_samples {
            return Err(CombineError::Ffmpeg {
                context: format!("audio ended after {sent} of {} samples", self.total_samples),
                source: ffmpeg::Error::Eof,
            });
        }
        Ok(())
    }

    /// Writes the trailer (moving the index to the front) and reports what
    /// was written.
    fn finish(mut self, chunks: usize, frames: u64) -> Result<CombineReport, CombineError> {
        if (self.cancelled)() {
            return Err(CombineError::Cancelled);
        }
        self.octx.write_trailer().map_err(CombineError::ffmpeg(
            "finishing the output (writing its index)",
        ))?;
        drop(self.octx);
        let bytes = std::fs::metadata(self.path)
            .map_err(|source| CombineError::Output {
                path: self.path.to_path_buf(),
                source,
            })?
            .len();
        Ok(CombineReport {
            output: self.path.to_path_buf(),
            chunks,
            frames,
            fps: self.output_fps,
            audio_samples: self.aac.as_ref().map(|_| self.total_samples),
            audio_packets: self.aac.as_ref().map_or(0, audio::AacTrack::packets),
            movie_timescale: self.timescale,
            bytes,
        })
    }
}

const fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

/// The smallest MP4 movie timescale in which both edit lists are exact: a
/// duration of `n` frames is `n · den / num` s, a whole number of ticks for
/// every `n` iff `num` divides the timescale; `m` samples need the sample
/// rate to divide it (ISO/IEC 14496-12, 8.6.6: `segment_duration` is in the
/// movie timescale).
fn movie_timescale(output_fps: Fps, sample_rate: u32) -> Result<u32, CombineError> {
    let (a, b) = (u64::from(output_fps.num()), u64::from(sample_rate));
    let lcm = a / gcd(a, b) * b;
    u32::try_from(lcm)
        .ok()
        .filter(|t| *t <= i32::MAX as u32)
        .ok_or(CombineError::InvalidOption {
            option: "fps",
            given: format!("{output_fps} with a {sample_rate} Hz audio rate"),
            allowed: "rates whose common timescale fits in 31 bits",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn movie_timescale_makes_both_edit_lists_exact() {
        let f = |n, d| Fps::new(n, d).expect("fps");
        assert_eq!(movie_timescale(f(30, 1), 48_000).expect("ok"), 48_000);
        assert_eq!(
            movie_timescale(f(30_000, 1001), 48_000).expect("ok"),
            240_000
        );
        assert_eq!(movie_timescale(f(25, 1), 48_000).expect("ok"), 48_000);
        assert_eq!(
            movie_timescale(f(60_000, 1001), 48_000).expect("ok"),
            240_000
        );
    }
}
