//! The video path: demux one chunk (H.264 or H.265 in MPEG-TS; VP9, AV1 or
//! ProRes in Matroska), check it against chunk 0 and the plan, re-base its
//! timestamps from the chunk's planned first output frame, and hand the
//! packets on for stream copy.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use chunker::ChunkIndex;
use ffmpeg::{Rational, codec, media};
use ffmpeg_next as ffmpeg;

use crate::nal::{self, Syntax, Unit};
use crate::{CombineError, ffi};

/// MPEG-TS packets are exactly 188 bytes (ISO/IEC 13818-1, 2.4.3.2) and start
/// with the sync byte 0x47; a muxer writes whole packets, so any other file
/// length means the file was cut short.
const TS_PACKET_BYTES: u64 = 188;
const TS_SYNC_BYTE: u8 = 0x47;

/// The EBML magic every Matroska file starts with (RFC 8794, 8.1).
const EBML_MAGIC: [u8; 4] = [0x1a, 0x45, 0xdf, 0xa3];

/// The codecs a chunk may hold, by container: what the workers write.
const TS_CODECS: [codec::Id; 2] = [codec::Id::H264, codec::Id::HEVC];
const MATROSKA_CODECS: [codec::Id; 3] = [codec::Id::VP9, codec::Id::AV1, codec::Id::PRORES];

/// The stream parameters every chunk must share with chunk 0.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VideoParams {
    codec: codec::Id,
    width: u32,
    height: u32,
    pixel_format: ffmpeg::format::Pixel,
    sample_aspect_ratio: Rational,
    color_primaries: ffmpeg::color::Primaries,
    color_transfer: ffmpeg::color::TransferCharacteristic,
    color_space: ffmpeg::color::Space,
    color_range: ffmpeg::color::Range,
    time_base: Rational,
    /// In-band parameter sets of the first packet (H.264 and H.265), by
    /// name (`VPS`, `SPS`, `PPS`) in the order they came.
    parameter_sets: Vec<(&'static str, Vec<u8>)>,
}

impl VideoParams {
    /// Each differing field, as (name, chunk 0's value, this chunk's value).
    pub(crate) fn first_difference(
        &self,
        other: &VideoParams,
    ) -> Option<(&'static str, String, String)> {
        macro_rules! cmp {
            ($field:ident, $name:expr) => {
                if self.$field != other.$field {
                    return Some((
                        $name,
                        format!("{:?}", self.$field),
                        format!("{:?}", other.$field),
                    ));
                }
            };
        }
        cmp!(codec, "codec");
        cmp!(width, "width");
        cmp!(height, "height");
        cmp!(pixel_format, "pixel format");
        cmp!(time_base, "time base");
        cmp!(sample_aspect_ratio, "sample aspect ratio");
        cmp!(color_primaries, "colour primaries");
        cmp!(color_transfer, "colour transfer");
        cmp!(color_space, "colour matrix");
        cmp!(color_range, "colour range");
        for what in ["VPS", "SPS", "PPS"] {
            let (a, b) = (self.sets(what), other.sets(what));
            if a != b {
                let show = |v: Vec<&[u8]>| {
                    v.iter()
                        .map(|u| nal::describe(u))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Some((what, show(a), show(b)));
            }
        }
        None
    }

    /// The parameter sets named `what`, in order.
    fn sets(&self, what: &str) -> Vec<&[u8]> {
        self.parameter_sets
            .iter()
            .filter(|(name, _)| *name == what)
            .map(|(_, unit)| unit.as_slice())
            .collect()
    }

    /// The codec of the chunks.
    pub(crate) fn codec(&self) -> codec::Id {
        self.codec
    }
}

/// The Annex B syntax of `codec`, if it has one.
fn syntax(codec: codec::Id) -> Option<Syntax> {
    match codec {
        codec::Id::H264 => Some(Syntax::H264),
        codec::Id::HEVC => Some(Syntax::H265),
        _ => None,
    }
}

/// One chunk's video, opened and checked, ready to be copied.
pub(crate) struct ChunkVideo<'a> {
    chunk: ChunkIndex,
    path: &'a Path,
    input: ffmpeg::format::context::Input,
    stream: usize,
    pub(crate) params: VideoParams,
    pub(crate) codec_parameters: codec::Parameters,
    /// Where frames fall in the input's time base.
    grid: Grid,
    /// Stream metadata to carry over (Matroska's `alpha_mode`).
    pub(crate) alpha_mode: bool,
}

/// One output frame in the input's time base: `num / den` ticks. MPEG-TS
/// (90 kHz) holds every supported rate exactly (`den` divides `num`);
/// Matroska's milliseconds do not, and its timestamps are rounded to the
/// nearest tick, so frames are placed by rounding and accepted within one
/// tick of their exact time.
#[derive(Debug, Clone, Copy)]
struct Grid {
    num: i64,
    den: i64,
}

impl Grid {
    fn exact(self) -> bool {
        self.num % self.den == 0
    }

    /// The frame `rel` ticks after the chunk's first, if `rel` is on the
    /// grid (exactly, or within one tick when the grid is not exact).
    fn frame_of(self, rel: i64) -> Option<i64> {
        if rel < 0 {
            return None;
        }
        let scaled = i128::from(rel) * i128::from(self.den);
        let num = i128::from(self.num);
        let k = (scaled + num / 2) / num;
        let off = (scaled - k * num).abs();
        let ok = if self.exact() {
            off == 0
        } else {
            off <= i128::from(self.den)
        };
        ok.then(|| i64::try_from(k).ok()).flatten()
    }

    /// Whole frames covering `ticks` (rounded up).
    fn frames_ceil(self, ticks: i64) -> i64 {
        let scaled = i128::from(ticks) * i128::from(self.den);
        let num = i128::from(self.num);
        i64::try_from((scaled + num - 1).div_euclid(num)).unwrap_or(i64::MAX)
    }
}

impl std::fmt::Display for Grid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.exact() {
            write!(f, "{}", self.num / self.den)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

fn corrupt(chunk: ChunkIndex, path: &Path, detail: impl Into<String>) -> CombineError {
    CombineError::CorruptVideo {
        chunk,
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

fn unsupported(chunk: ChunkIndex, path: &Path, detail: impl Into<String>) -> CombineError {
    CombineError::UnsupportedVideo {
        chunk,
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Whether the file starts with Matroska's EBML magic (else it is taken
/// for MPEG-TS and checked as such).
fn starts_with_ebml(chunk: ChunkIndex, path: &Path) -> Result<bool, CombineError> {
    let mut file = File::open(path).map_err(|source| CombineError::Io {
        chunk,
        path: path.to_path_buf(),
        source,
    })?;
    let mut head = [0u8; 4];
    Ok(file.read_exact(&mut head).is_ok() && head == EBML_MAGIC)
}

/// Cheap structural checks before the demuxer sees the file: it must be a
/// whole number of TS packets and start with a sync byte.
fn check_ts_file(chunk: ChunkIndex, path: &Path) -> Result<(), CombineError> {
    let io = |source| CombineError::Io {
        chunk,
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size == 0 {
        return Err(corrupt(chunk, path, "the file is empty"));
    }
    if size % TS_PACKET_BYTES != 0 {
        return Err(corrupt(
            chunk,
            path,
            format!(
                "{size} bytes is not a whole number of 188-byte TS packets ({} bytes past the last whole packet)",
                size % TS_PACKET_BYTES
            ),
        ));
    }
    let mut first = [0u8; 1];
    file.read_exact(&mut first).map_err(io)?;
    if first[0] != TS_SYNC_BYTE {
        return Err(corrupt(
            chunk,
            path,
            format!(
                "it starts with byte 0x{:02x}, not the TS sync byte 0x47",
                first[0]
            ),
        ));
    }
    Ok(())
}

/// An H.264 decoder that fails on any bitstream error (FFmpeg's
/// `err_detect` with `explode`) or any frame it had to conceal, used to prove
/// a chunk decodes before its packets are trusted.
struct Verifier {
    decoder: ffmpeg::decoder::Video,
    frames: u64,
}

impl Verifier {
    fn open(params: &codec::Parameters) -> Result<Self, ffmpeg::Error> {
        let mut ctx = codec::Context::from_parameters(params.clone())?;
        ctx.set_threading(ffmpeg::threading::Config::kind(
            ffmpeg::threading::Type::Frame,
        ));
        let mut dec = ctx.decoder();
        dec.check(
            ffmpeg::decoder::Check::CRC
                | ffmpeg::decoder::Check::BITSTREAM
                | ffmpeg::decoder::Check::BUFFER
                | ffmpeg::decoder::Check::EXPLODE,
        );
        let id = params.id();
        let decoder = ffmpeg::decoder::find(id).ok_or(ffmpeg::Error::DecoderNotFound)?;
        let decoder = dec.open_as(decoder)?.video()?;
        Ok(Verifier { decoder, frames: 0 })
    }

    fn drain(&mut self) -> Result<(), ffmpeg::Error> {
        let mut frame = ffmpeg::frame::Video::empty();
        loop {
            match self.decoder.receive_frame(&mut frame) {
                Ok(()) => {
                    // The decoder conceals damage and flags the frame rather
                    // than failing (measured with FFmpeg 5.1's h264).
                    if frame.is_corrupt() || frame.has_decode_errors() {
                        return Err(ffmpeg::Error::InvalidData);
                    }
                    self.frames += 1;
                }
                Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn decode(&mut self, packet: &ffmpeg::Packet) -> Result<(), ffmpeg::Error> {
        self.decoder.send_packet(packet)?;
        self.drain()
    }

    fn finish(&mut self) -> Result<u64, ffmpeg::Error> {
        self.decoder.send_eof()?;
        self.drain()?;
        Ok(self.frames)
    }
}

/// The container a demuxer reads and the codecs a chunk in it may hold.
fn container_of(
    chunk: ChunkIndex,
    path: &Path,
    input: &ffmpeg::format::context::Input,
) -> Result<(&'static str, &'static [codec::Id]), CombineError> {
    match input.format().name() {
        "mpegts" => Ok(("MPEG-TS", &TS_CODECS[..])),
        name if name.starts_with("matroska") => Ok(("Matroska", &MATROSKA_CODECS[..])),
        name => Err(unsupported(
            chunk,
            path,
            format!("container is `{name}`, expected MPEG-TS or Matroska"),
        )),
    }
}

/// Where output frames fall in a stream of `time_base`, if they can:
/// Matroska rounds to its ticks; every other container must hold the
/// frames exactly.
fn grid_of(
    time_base: Rational,
    output_fps: chunker::timebase::Fps,
    matroska: bool,
) -> Option<Grid> {
    let (num, den) = (
        i64::from(time_base.numerator()),
        i64::from(time_base.denominator()),
    );
    let grid = Grid {
        num: den * i64::from(output_fps.den()),
        den: num * i64::from(output_fps.num()),
    };
    (num > 0 && den > 0 && (matroska || grid.exact())).then_some(grid)
}

/// Whether the stream metadata asks for Matroska's `alpha_mode`.
fn alpha_mode_of(input: &ffmpeg::format::context::Input) -> bool {
    input
        .streams()
        .best(media::Type::Video)
        .is_some_and(|st| st.metadata().get("alpha_mode") == Some("1"))
}

impl<'a> ChunkVideo<'a> {
    /// Opens a chunk's TS and reads its stream parameters, FFmpeg's way:
    /// `avformat_find_stream_info` decodes its first frames (up to 7 for
    /// H.264) and reads the file's end. Chunk 0's parameters found so are
    /// the output's video track, and every refusal of a chunk that differs
    /// is worded from them.
    pub(crate) fn open(
        chunk: ChunkIndex,
        path: &'a Path,
        output_fps: chunker::timebase::Fps,
    ) -> Result<Self, CombineError> {
        let matroska = starts_with_ebml(chunk, path)?;
        if !matroska {
            check_ts_file(chunk, path)?;
        }
        let input = ffi::open_input(path)
            .map_err(|e| corrupt(chunk, path, format!("FFmpeg cannot open it: {e}")))?;
        let (container, allowed) = container_of(chunk, path, &input)?;
        let alpha_mode = alpha_mode_of(&input);
        let (stream, time_base, codec_parameters) = {
            let st = input
                .streams()
                .best(media::Type::Video)
                .ok_or_else(|| unsupported(chunk, path, "it holds no video stream"))?;
            (st.index(), st.time_base(), st.parameters())
        };
        let ctx = codec::Context::from_parameters(codec_parameters.clone())
            .map_err(|e| corrupt(chunk, path, format!("unreadable stream parameters: {e}")))?;
        let codec = ctx.id();
        if !allowed.contains(&codec) {
            return Err(unsupported(
                chunk,
                path,
                format!(
                    "codec is {codec:?} in {container}; chunks hold H.264 or H.265 in MPEG-TS, VP9, AV1 or ProRes in Matroska"
                ),
            ));
        }
        let dec = ctx
            .decoder()
            .video()
            .map_err(|e| corrupt(chunk, path, format!("not a video stream: {e}")))?;
        let grid = grid_of(time_base, output_fps, matroska).ok_or_else(|| {
            unsupported(
                chunk,
                path,
                format!(
                    "time base {}/{} cannot express frames of {output_fps} fps in whole ticks",
                    time_base.numerator(),
                    time_base.denominator()
                ),
            )
        })?;
        let params = VideoParams {
            codec,
            width: dec.width(),
            height: dec.height(),
            pixel_format: dec.format(),
            sample_aspect_ratio: dec.aspect_ratio(),
            color_primaries: dec.color_primaries(),
            color_transfer: dec.color_transfer_characteristic(),
            color_space: dec.color_space(),
            color_range: dec.color_range(),
            time_base,
            parameter_sets: Vec::new(),
        };
        Ok(ChunkVideo {
            chunk,
            path,
            input,
            stream,
            params,
            codec_parameters,
            grid,
            alpha_mode,
        })
    }

    /// Opens a chunk from its container headers alone, taking its stream
    /// parameters to be `reference`'s (chunk 0's) apart from the codec and
    /// time base the headers give: no frame is decoded, which is what
    /// makes combining many chunks cheap (see [`ffi::open_input_headers_only`]).
    /// The caller must confirm the parameters before trusting them
    /// ([`ChunkVideo::probe_same`]), or have confirmed them already on a
    /// [`ChunkVideo::open`] of the same file.
    ///
    /// `None` when the file is anything but what a worker writes (one video
    /// stream of an allowed codec on a usable time base): the caller then
    /// uses [`ChunkVideo::open`], whose checks name the problem, so every
    /// refusal is worded as before.
    ///
    /// MPEG-TS is read with `fflags +nofillin`: the timestamps are the
    /// container's own. Without the decoder delay `find_stream_info` finds,
    /// FFmpeg's guesses for missing timestamps could otherwise rewrite a
    /// DTS it would have kept; TS chunks carry PTS and DTS on every frame,
    /// which a fully probed input passes through unchanged.
    pub(crate) fn open_headers_only(
        chunk: ChunkIndex,
        path: &'a Path,
        output_fps: chunker::timebase::Fps,
        reference: &VideoParams,
    ) -> Option<Self> {
        let matroska = starts_with_ebml(chunk, path).ok()?;
        let mut options = ffmpeg::Dictionary::new();
        if !matroska {
            check_ts_file(chunk, path).ok()?;
            options.set("fflags", "+nofillin");
        }
        let input = ffi::open_input_headers_only(path, options).ok()?;
        let (_, allowed) = container_of(chunk, path, &input).ok()?;
        if input.nb_streams() != 1 {
            return None;
        }
        let alpha_mode = alpha_mode_of(&input);
        let st = input.stream(0)?;
        let codec_parameters = st.parameters();
        let (codec, time_base) = (codec_parameters.id(), st.time_base());
        if codec_parameters.medium() != media::Type::Video || !allowed.contains(&codec) {
            return None;
        }
        let grid = grid_of(time_base, output_fps, matroska)?;
        let params = VideoParams {
            codec,
            time_base,
            parameter_sets: Vec::new(),
            ..reference.clone()
        };
        Some(ChunkVideo {
            chunk,
            path,
            input,
            stream: 0,
            params,
            codec_parameters,
            grid,
            alpha_mode,
        })
    }

    /// The next packet of the video stream, or `None` at the end.
    fn next_packet(&mut self, position: u64) -> Result<Option<ffmpeg::Packet>, CombineError> {
        loop {
            let mut packet = ffmpeg::Packet::empty();
            match packet.read(&mut self.input) {
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => return Ok(None),
                Err(e) => {
                    return Err(corrupt(
                        self.chunk,
                        self.path,
                        format!("demuxing failed after {position} packets: {e}"),
                    ));
                }
            }
            if packet.stream() != self.stream {
                continue;
            }
            if packet.is_corrupt() {
                return Err(corrupt(
                    self.chunk,
                    self.path,
                    format!(
                        "packet {position} is flagged corrupt by the demuxer (lost or damaged TS packets)"
                    ),
                ));
            }
            return Ok(Some(packet));
        }
    }

    /// Checks the first packet (an IDR carrying SPS and PPS), records the
    /// parameter sets and returns the decoder delay it declares, in frames
    /// (`PTS − DTS` of the first frame: 2 with x264's B-pyramid, 0 for a
    /// single-frame chunk).
    fn inspect_first(&mut self, packet: &ffmpeg::Packet) -> Result<i64, CombineError> {
        let (chunk, path) = (self.chunk, self.path);
        let syntax = syntax(self.params.codec);
        let mut has_idr = syntax.is_none();
        if let Some(syntax) = syntax {
            for unit in nal::nal_units(packet.data().unwrap_or(&[])) {
                match syntax.classify(unit) {
                    Unit::ParameterSet(name) => {
                        self.params.parameter_sets.push((name, unit.to_vec()));
                    }
                    Unit::Idr => has_idr = true,
                    Unit::Other => {}
                }
            }
        }
        if !packet.is_key() || !has_idr {
            return Err(unsupported(
                chunk,
                path,
                "its first packet is not an IDR frame: every chunk must start with a keyframe",
            ));
        }
        if syntax.is_some() && self.params.parameter_sets.is_empty() {
            return Err(unsupported(
                chunk,
                path,
                "its first packet carries no in-band SPS/PPS",
            ));
        }
        let pts = packet.pts().ok_or_else(|| CombineError::BadTimestamp {
            chunk,
            packet: 0,
            detail: "it has no presentation timestamp".into(),
        })?;
        let dts = packet.dts().unwrap_or(pts);
        if dts > pts {
            return Err(CombineError::BadTimestamp {
                chunk,
                packet: 0,
                detail: format!("DTS {dts} is after its PTS {pts}"),
            });
        }
        Ok(self.grid.frames_ceil(pts - dts))
    }

    /// Reads only the first packet: the chunk's parameters (SPS/PPS
    /// included) and its decoder delay in frames.
    pub(crate) fn probe(mut self) -> Result<(VideoParams, i64), CombineError> {
        let packet = self
            .next_packet(0)?
            .ok_or_else(|| corrupt(self.chunk, self.path, "it holds no video packets"))?;
        let delay = self.inspect_first(&packet)?;
        Ok((self.params, delay))
    }

    /// [`ChunkVideo::probe`] of a chunk opened with
    /// [`ChunkVideo::open_headers_only`]: its parameters and decoder delay
    /// if its first packet carries exactly `reference`'s parameter sets,
    /// else `None` (then [`ChunkVideo::open`] finds and names the
    /// difference). H.264 and H.265 only: the frame size, pixel format,
    /// aspect ratio and colour `ChunkVideo::open` would find are all read
    /// from those parameter sets (MPEG-TS says nothing else about them),
    /// so identical sets mean identical parameters.
    pub(crate) fn probe_same(mut self, reference: &VideoParams) -> Option<(VideoParams, i64)> {
        syntax(self.params.codec)?;
        let packet = self.next_packet(0).ok()??;
        let delay = self.inspect_first(&packet).ok()?;
        let same = self.params.parameter_sets == reference.parameter_sets
            && reference.first_difference(&self.params).is_none();
        same.then_some((self.params, delay))
    }

    /// Reads every packet, checks it against `reference` (chunk 0's
    /// parameters) and the plan, and passes it to `write` re-based: the
    /// chunk's frame `k` gets PTS `first_output_frame + k` and its `i`th
    /// packet in decode order DTS `first_output_frame + i − delay`, in frame
    /// units. With one `delay` for the whole file (the largest any chunk
    /// needs), DTS advance by exactly one frame per packet across chunk
    /// boundaries, so every frame has the same duration in the MP4.
    ///
    /// With `verify`, every packet is also decoded first and any decoding
    /// error refuses the chunk.
    #[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
    pub(crate) fn copy(
        mut self,
        reference: &VideoParams,
        delay: i64,
        first_output_frame: u64,
        frames: u64,
        verify: bool,
        cancelled: &dyn Fn() -> bool,
        write: &mut dyn FnMut(ffmpeg::Packet) -> Result<(), CombineError>,
    ) -> Result<(), CombineError> {
        let mut verifier = self.verifier(verify)?;
        let mut grid = FrameGrid::new(
            self.chunk,
            self.path,
            first_output_frame,
            frames,
            self.grid,
            delay,
        )?;
        let mut count: u64 = 0;
        loop {
            if cancelled() {
                return Err(CombineError::Cancelled);
            }
            let position = count;
            let Some(mut packet) = self.next_packet(position)? else {
                break;
            };
            if position == 0 {
                self.check_first(&packet, reference)?;
                grid.origin = packet.pts().unwrap_or(0);
            } else {
                if let Some(syntax) = syntax(reference.codec) {
                    check_repeated_parameter_sets(
                        self.chunk, syntax, reference, &packet, position,
                    )?;
                }
            }
            count += 1;
            let Some((out_pts, out_dts)) = grid.place(&packet, position)? else {
                // More frames than planned: counted for the error, not written.
                continue;
            };
            if let Some(v) = verifier.as_mut() {
                v.decode(&packet)
                    .map_err(|e| self.decode_error(position, e))?;
            }
            packet.set_pts(Some(out_pts));
            packet.set_dts(Some(out_dts));
            packet.set_duration(1);
            packet.set_position(-1);
            write(packet)?;
        }
        self.check_complete(count, frames, verifier)
    }

    /// A strict decoder for `verify_decode`, or none.
    fn verifier(&self, verify: bool) -> Result<Option<Verifier>, CombineError> {
        if !verify {
            return Ok(None);
        }
        Verifier::open(&self.codec_parameters)
            .map(Some)
            .map_err(|e| {
                unsupported(
                    self.chunk,
                    self.path,
                    format!("cannot open a decoder to verify it: {e}"),
                )
            })
    }

    fn decode_error(&self, position: u64, e: ffmpeg::Error) -> CombineError {
        corrupt(
            self.chunk,
            self.path,
            format!("it does not decode cleanly (at packet {position}): {e}"),
        )
    }

    /// The first packet is an IDR whose parameters are chunk 0's.
    fn check_first(
        &mut self,
        packet: &ffmpeg::Packet,
        reference: &VideoParams,
    ) -> Result<(), CombineError> {
        self.inspect_first(packet)?;
        if let Some((field, expected, found)) = reference.first_difference(&self.params) {
            return Err(CombineError::StreamMismatch {
                chunk: self.chunk,
                field,
                expected,
                found,
            });
        }
        Ok(())
    }

    /// All `count` packets were read: the plan's frame count, and with a
    /// verifier, as many frames decoded.
    fn check_complete(
        &self,
        count: u64,
        frames: u64,
        verifier: Option<Verifier>,
    ) -> Result<(), CombineError> {
        if count != frames {
            return Err(CombineError::FrameCount {
                chunk: self.chunk,
                path: self.path.to_path_buf(),
                expected: frames,
                found: count,
            });
        }
        if let Some(mut v) = verifier {
            let decoded = v.finish().map_err(|e| self.decode_error(count, e))?;
            if decoded != frames {
                return Err(corrupt(
                    self.chunk,
                    self.path,
                    format!("it decodes to {decoded} frames, the plan says {frames}"),
                ));
            }
        }
        Ok(())
    }
}

/// A parameter set repeated after the first packet (at a later IDR) must
/// repeat one of chunk 0's: the MP4's avcC/hvcC holds only those.
fn check_repeated_parameter_sets(
    chunk: ChunkIndex,
    syntax: Syntax,
    reference: &VideoParams,
    packet: &ffmpeg::Packet,
    position: u64,
) -> Result<(), CombineError> {
    for unit in nal::nal_units(packet.data().unwrap_or(&[])) {
        let Unit::ParameterSet(field) = syntax.classify(unit) else {
            continue;
        };
        let known = reference.sets(field);
        if !known.contains(&unit) {
            return Err(CombineError::StreamMismatch {
                chunk,
                field,
                expected: known
                    .iter()
                    .map(|u| nal::describe(u))
                    .collect::<Vec<_>>()
                    .join(", "),
                found: format!("{} (in packet {position})", nal::describe(unit)),
            });
        }
    }
    Ok(())
}

/// Places a chunk's packets on the output's frame grid: the packet showing
/// the chunk's frame `k` (from its PTS, relative to the first packet's)
/// gets output PTS `start + k`; the `i`th packet in decode order gets DTS
/// `start + i − delay`. Refuses packets off the grid, frames shown twice,
/// DTS that do not increase, and frames decoded earlier than the delay
/// allows.
struct FrameGrid {
    chunk: ChunkIndex,
    /// The chunk's first output frame.
    start: i64,
    /// Frames the plan gives the chunk.
    frames: u64,
    /// One frame in the input's time base.
    grid: Grid,
    /// Decoder delay of the whole output, in frames.
    delay: i64,
    /// The first packet's PTS: the chunk's frame 0.
    origin: i64,
    /// Which of the chunk's frames have been seen.
    seen: Vec<bool>,
    last_in_dts: Option<i64>,
    /// A frame beyond the plan was seen: the rest are only counted.
    overflow: bool,
}

impl FrameGrid {
    fn new(
        chunk: ChunkIndex,
        path: &Path,
        first_output_frame: u64,
        frames: u64,
        grid: Grid,
        delay: i64,
    ) -> Result<FrameGrid, CombineError> {
        let start = i64::try_from(first_output_frame)
            .map_err(|_| unsupported(chunk, path, "first output frame beyond 2^63"))?;
        Ok(FrameGrid {
            chunk,
            start,
            frames,
            grid,
            delay,
            origin: 0,
            seen: vec![false; usize::try_from(frames).unwrap_or(usize::MAX).min(1 << 32)],
            last_in_dts: None,
            overflow: false,
        })
    }

    /// The output (PTS, DTS), in frames, of the packet at `position` in
    /// decode order; `None` once the chunk holds more frames than planned.
    fn place(
        &mut self,
        packet: &ffmpeg::Packet,
        position: u64,
    ) -> Result<Option<(i64, i64)>, CombineError> {
        let bad = |detail: String| CombineError::BadTimestamp {
            chunk: self.chunk,
            packet: position,
            detail,
        };
        let (tpf, origin, delay) = (self.grid, self.origin, self.delay);
        let pts = packet
            .pts()
            .ok_or_else(|| bad("it has no presentation timestamp".into()))?;
        let Some(k) = tpf.frame_of(pts - origin) else {
            return Err(bad(format!(
                "PTS {pts} is not on the chunk's frame grid (first frame at {origin}, {tpf} ticks per frame)"
            )));
        };
        if k as u64 >= self.frames || self.overflow {
            self.overflow = true;
            return Ok(None);
        }
        let slot = self
            .seen
            .get_mut(k as usize)
            .ok_or_else(|| bad(format!("frame {k} is beyond the chunk")))?;
        if *slot {
            return Err(bad(format!("frame {k} (PTS {pts}) appears twice")));
        }
        *slot = true;
        let in_dts = packet.dts().unwrap_or(pts);
        if let Some(last) = self.last_in_dts
            && in_dts <= last
        {
            return Err(bad(format!(
                "DTS {in_dts} does not follow the previous packet's {last}"
            )));
        }
        self.last_in_dts = Some(in_dts);
        let out_pts = self.start + k;
        let out_dts = self.start + position as i64 - delay;
        if out_dts > out_pts {
            return Err(bad(format!(
                "frame {k} is decoded {} frames before it is shown, more than the {delay} frames of decoder delay the first chunks declare",
                position as i64 - k
            )));
        }
        Ok(Some((out_pts, out_dts)))
    }
}
