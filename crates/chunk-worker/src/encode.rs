//! FFmpeg glue: RGBA→YUV conversion with swscale and H.264 encoding with
//! libx264 into an MPEG-TS file.
//!
//! Every setting that reaches the bitstream comes from [`VideoSettings`] and
//! the composition's size and rate, never from the machine: the x264 thread
//! count is part of the request, swscale runs bit-exact, and the muxer gets
//! no wall-clock input. The same request therefore gives the same bytes.

use std::path::Path;
use std::sync::Once;

use ffmpeg::format::Pixel;
use ffmpeg::{Dictionary, Rational, codec, color, frame, software::scaling};
use ffmpeg_next as ffmpeg;
use timebase::Fps;

use crate::WorkerError;
use crate::request::{PixelFormat, Quality, VideoSettings};

/// The MPEG-TS system clock (ISO/IEC 13818-1, 2.4.2.2: PTS/DTS count 90 kHz).
pub const TS_CLOCK_HZ: u32 = timebase::MPEG_TS_CLOCK_HZ;

static INIT: Once = Once::new();

/// Initialises FFmpeg once per process and keeps its logging to errors
/// (x264 prints statistics at info level for every chunk).
pub(crate) fn init() -> Result<(), WorkerError> {
    let mut result = Ok(());
    INIT.call_once(|| {
        result = ffmpeg::init().map_err(|e| WorkerError::encoder("ffmpeg init", e));
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Error);
    });
    result
}

fn pixel(p: PixelFormat) -> Pixel {
    match p {
        PixelFormat::Yuv420p => Pixel::YUV420P,
        PixelFormat::Yuv444p => Pixel::YUV444P,
    }
}

/// Converts premultiplied, opaque RGBA frames to tagged BT.709 limited-range
/// YUV.
pub(crate) struct Converter {
    sws: scaling::Context,
    rgba: frame::Video,
    width: u32,
    height: u32,
    format: Pixel,
}

impl Converter {
    pub(crate) fn new(width: u32, height: u32, format: PixelFormat) -> Result<Self, WorkerError> {
        init()?;
        let format = pixel(format);
        // Same size in and out, so the filter only matters for chroma
        // subsampling. BITEXACT + ACCURATE_RND make swscale give the same
        // bytes whatever SIMD the CPU has.
        let flags =
            scaling::Flags::BILINEAR | scaling::Flags::BITEXACT | scaling::Flags::ACCURATE_RND;
        let mut sws =
            scaling::Context::get(Pixel::RGBA, width, height, format, width, height, flags)
                .map_err(|e| WorkerError::encoder("swscale setup", e))?;
        sws_bt709::set_bt709_limited(&mut sws)?;
        Ok(Converter {
            sws,
            rgba: frame::Video::new(Pixel::RGBA, width, height),
            width,
            height,
            format,
        })
    }

    /// Converts one RGBA frame (stride `width · 4`) into a new YUV frame.
    pub(crate) fn convert(&mut self, rgba: &[u8]) -> Result<frame::Video, WorkerError> {
        let row = self.width as usize * 4;
        let stride = self.rgba.stride(0);
        let plane = self.rgba.data_mut(0);
        for (y, src) in rgba
            .chunks_exact(row)
            .take(self.height as usize)
            .enumerate()
        {
            plane[y * stride..y * stride + row].copy_from_slice(src);
        }
        let mut yuv = frame::Video::new(self.format, self.width, self.height);
        self.sws
            .run(&self.rgba, &mut yuv)
            .map_err(|e| WorkerError::encoder("swscale convert", e))?;
        yuv.set_color_space(color::Space::BT709);
        yuv.set_color_range(color::Range::MPEG);
        yuv.set_color_primaries(color::Primaries::BT709);
        yuv.set_color_transfer_characteristic(color::TransferCharacteristic::BT709);
        Ok(yuv)
    }
}

/// The one place that needs FFmpeg's C API directly: `ffmpeg-next` 9 has no
/// wrapper for `sws_setColorspaceDetails`, and without it swscale converts
/// with the BT.601 matrix.
#[allow(unsafe_code)] // a single FFI call on a context we own; see SAFETY
mod sws_bt709 {
    use ffmpeg_next::ffi;
    use ffmpeg_next::software::scaling;

    use crate::WorkerError;

    pub(super) fn set_bt709_limited(sws: &mut scaling::Context) -> Result<(), WorkerError> {
        // SAFETY: `sws` owns a valid SwsContext for its whole lifetime;
        // sws_getCoefficients returns a pointer to a static table of 4 ints.
        let ret = unsafe {
            let table = ffi::sws_getCoefficients(ffi::SWS_CS_ITU709);
            // Source RGB is full range (1), destination YUV limited (0);
            // brightness 0, contrast and saturation 1.0 in 16.16 fixed point
            // (swscale's defaults).
            ffi::sws_setColorspaceDetails(sws.as_mut_ptr(), table, 1, table, 0, 0, 1 << 16, 1 << 16)
        };
        if ret < 0 {
            return Err(WorkerError::encoder(
                "swscale setup",
                "the BT.709 matrix is not supported for this conversion",
            ));
        }
        Ok(())
    }
}

/// libx264 writing into an MPEG-TS file.
pub(crate) struct TsEncoder {
    octx: ffmpeg::format::context::Output,
    encoder: ffmpeg::encoder::Video,
    encoder_tb: Rational,
    stream_tb: Rational,
    packet: ffmpeg::Packet,
    /// Packets written so far (one per frame).
    pub(crate) packets: u64,
}

fn rational(num: u32, den: u32, what: &'static str) -> Result<Rational, WorkerError> {
    let n = i32::try_from(num).map_err(|_| WorkerError::encoder(what, "rate too large"))?;
    let d = i32::try_from(den).map_err(|_| WorkerError::encoder(what, "rate too large"))?;
    Ok(Rational::new(n, d))
}

impl TsEncoder {
    /// Opens libx264 and the MPEG-TS muxer writing to `path`. Frames are
    /// timed in units of one output frame (`1 / output_fps`); packets are
    /// written at 90 kHz.
    pub(crate) fn create(
        path: &Path,
        width: u32,
        height: u32,
        output_fps: Fps,
        settings: &VideoSettings,
    ) -> Result<Self, WorkerError> {
        init()?;
        let mut octx = ffmpeg::format::output_as(path, "mpegts")
            .map_err(|e| WorkerError::encoder("mpegts open", e))?;
        let codec = ffmpeg::encoder::find_by_name("libx264").ok_or_else(|| {
            WorkerError::encoder("libx264 open", "this FFmpeg has no libx264 encoder")
        })?;
        let encoder_tb = rational(output_fps.den(), output_fps.num(), "encoder time base")?;
        let mut ctx = codec::context::Context::new_with_codec(codec);
        // x264's bitstream depends on its thread count: fix it from the
        // request instead of letting FFmpeg pick the machine's core count.
        ctx.set_threading(ffmpeg::threading::Config {
            kind: ffmpeg::threading::Type::Frame,
            count: settings.encoder_threads as usize,
            ..Default::default()
        });
        let mut enc = ctx
            .encoder()
            .video()
            .map_err(|e| WorkerError::encoder("libx264 open", e))?;
        enc.set_width(width);
        enc.set_height(height);
        enc.set_format(pixel(settings.pixel_format));
        enc.set_time_base(encoder_tb);
        enc.set_frame_rate(Some(rational(
            output_fps.num(),
            output_fps.den(),
            "frame rate",
        )?));
        // An unset SAR or colour description changes the SPS (MEDIA-NOTES):
        // set them all, always.
        // Set on the context as well as in x264-params: libx264 copies
        // these context fields over x264's own settings, and left at their
        // defaults they came out as 0 B-frames here.
        enc.set_max_b_frames(settings.bframes as usize);
        enc.set_gop(settings.keyint);
        enc.set_aspect_ratio(Rational::new(1, 1));
        enc.set_colorspace(color::Space::BT709);
        enc.set_color_range(color::Range::MPEG);
        enc.set_color_primaries(color::Primaries::BT709);
        enc.set_color_transfer_characteristic(color::TransferCharacteristic::BT709);

        let mut opts = Dictionary::new();
        opts.set("preset", &settings.preset);
        match settings.quality {
            Quality::Crf(crf) => opts.set("crf", &crf.to_string()),
            Quality::Lossless => opts.set("qp", "0"),
        }
        opts.set("profile", settings.profile.as_str());
        if let Some(level) = &settings.level {
            opts.set("level", level);
        }
        // Closed GOPs so no frame references another chunk; fixed keyint and
        // B-frames so every chunk has the same structure rules.
        opts.set(
            "x264-params",
            &format!(
                "keyint={}:bframes={}:open-gop=0",
                settings.keyint, settings.bframes
            ),
        );
        let encoder = enc
            .open_with(opts)
            .map_err(|e| WorkerError::encoder("libx264 open", e))?;

        let mut stream = octx
            .add_stream(codec)
            .map_err(|e| WorkerError::encoder("mpegts stream", e))?;
        stream.set_parameters(&encoder);
        stream.set_time_base(Rational::new(1, TS_CLOCK_HZ as i32));
        stream.set_avg_frame_rate(rational(output_fps.num(), output_fps.den(), "frame rate")?);

        let mut mux_opts = Dictionary::new();
        // With B-frames the first chunk's first DTS is negative. The default
        // (`auto` → make_non_negative) would shift that chunk, and only that
        // one, by the decoder delay (MEDIA-NOTES): keep every chunk's PTS the
        // frames' own times instead. TS timestamps wrap modulo 2^33 and
        // demuxers unwrap them.
        mux_opts.set("avoid_negative_ts", "disabled");
        // No library version strings in the output.
        mux_opts.set("fflags", "+bitexact");
        octx.write_header_with(mux_opts)
            .map_err(|e| WorkerError::encoder("mpegts header", e))?;
        let stream_tb = octx
            .stream(0)
            .map(|s| s.time_base())
            .ok_or_else(|| WorkerError::encoder("mpegts header", "stream 0 missing"))?;
        Ok(TsEncoder {
            octx,
            encoder,
            encoder_tb,
            stream_tb,
            packet: ffmpeg::Packet::empty(),
            packets: 0,
        })
    }

    /// Encodes `frame` as output frame `pts` (in output frames relative to
    /// the render's first frame), writing whatever packets are ready.
    pub(crate) fn encode(&mut self, frame: &mut frame::Video, pts: i64) -> Result<(), WorkerError> {
        frame.set_pts(Some(pts));
        self.encoder
            .send_frame(frame)
            .map_err(|e| WorkerError::encoder("libx264 encode", e))?;
        self.drain()
    }

    fn drain(&mut self) -> Result<(), WorkerError> {
        loop {
            match self.encoder.receive_packet(&mut self.packet) {
                Ok(()) => {
                    self.packet.set_stream(0);
                    self.packet.rescale_ts(self.encoder_tb, self.stream_tb);
                    self.packet
                        .write_interleaved(&mut self.octx)
                        .map_err(|e| WorkerError::encoder("mpegts write", e))?;
                    self.packets += 1;
                }
                Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                    return Ok(());
                }
                Err(e) => return Err(WorkerError::encoder("libx264 encode", e)),
            }
        }
    }

    /// Flushes the encoder and writes the muxer's trailer.
    pub(crate) fn finish(mut self) -> Result<u64, WorkerError> {
        self.encoder
            .send_eof()
            .map_err(|e| WorkerError::encoder("libx264 flush", e))?;
        self.drain()?;
        self.octx
            .write_trailer()
            .map_err(|e| WorkerError::encoder("mpegts trailer", e))?;
        Ok(self.packets)
    }
}
