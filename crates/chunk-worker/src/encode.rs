//! FFmpeg glue: RGBA→YUV conversion ([`FrameConverter`], integer maths in
//! `convert.rs`) and H.264 encoding with libx264 into an MPEG-TS file.
//!
//! Every setting that reaches the bitstream comes from [`VideoSettings`] and
//! the composition's size and rate, never from the machine: the x264 thread
//! count is part of the request, the conversion is integer arithmetic, and
//! the muxer gets no wall-clock input. The same request therefore gives the
//! same bytes.

use std::path::Path;
use std::sync::Once;

use ffmpeg::format::Pixel;
use ffmpeg::{Dictionary, Rational, codec, color, frame};
use ffmpeg_next as ffmpeg;
use timebase::Fps;

use crate::{WorkerError, convert};
use composition::Damage;
use spec::{GifPalette, PixelFormat, Quality, RendererVersion, VideoCodec, VideoSettings};

/// The MPEG-TS system clock (ISO/IEC 13818-1, 2.4.2.2: PTS/DTS count 90 kHz).
pub const TS_CLOCK_HZ: u32 = timebase::MPEG_TS_CLOCK_HZ;

/// Frames buffered between libx264's lookahead thread and its encoding
/// threads (x264's `sync-lookahead`). x264 defaults to `bframes + threads`
/// frames, each a full frame with its half-resolution copies (about 6 MB at
/// 1080p); the slice-type and rate-control decisions do not depend on it,
/// so the bytes are the same with a shorter buffer and the worker's peak
/// memory is lower.
pub const X264_SYNC_LOOKAHEAD: u32 = 1;

static INIT: Once = Once::new();

/// Montage's own part of the renderer version: bumped whenever the same
/// request would give different bytes (a change in the renderer, the
/// encoder settings it derives, or the chunk format).
pub const BITSTREAM_VERSION: &str = concat!("montage-", env!("CARGO_PKG_VERSION"), "+bitstream.2");

/// The versions of everything in this process that decides the bytes a
/// chunk gets: [`BITSTREAM_VERSION`], the libx264 build (read from the
/// version string x264 writes into its own stream, since FFmpeg does not
/// expose it) and the FFmpeg libraries. Computed once.
///
/// # Errors
/// [`WorkerError::Encoder`] if libx264 cannot be opened.
pub fn renderer_version() -> Result<&'static RendererVersion, WorkerError> {
    static VERSION: std::sync::OnceLock<RendererVersion> = std::sync::OnceLock::new();
    if let Some(v) = VERSION.get() {
        return Ok(v);
    }
    let version = RendererVersion {
        montage: BITSTREAM_VERSION.to_owned(),
        x264: x264_build()?,
        ffmpeg: ffmpeg_versions(),
        encoders: encoder_library::versions(),
    };
    Ok(VERSION.get_or_init(|| version))
}

/// The versions of the encoder libraries FFmpeg was linked with, read from
/// the libraries themselves: `x265_version_str`, `vpx_codec_version_str()`
/// and `svt_av1_get_version()`. They are dependencies of libavcodec, not of
/// this program, so they are looked up by name in the process's global
/// symbol scope (where the dynamic loader put libavcodec's dependencies)
/// rather than linked. A library FFmpeg was built without is left out.
#[allow(unsafe_code)] // dlsym and calls through the pointers it returns; see SAFETY
mod encoder_library {
    use std::collections::BTreeMap;
    use std::ffi::{CStr, c_char};

    /// The address of `symbol` in the process, if any library defines it.
    fn lookup(symbol: &CStr) -> Option<*mut libc::c_void> {
        // SAFETY: RTLD_DEFAULT with a NUL-terminated name only reads the
        // loader's tables.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, symbol.as_ptr()) };
        (!p.is_null()).then_some(p)
    }

    /// A C string the library owns for the life of the process.
    ///
    /// SAFETY (for callers): `p` is null or points to a NUL-terminated
    /// string that lives as long as the process.
    unsafe fn text(p: *const c_char) -> Option<String> {
        // SAFETY: see the function's contract.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }

    /// A `const char *fn(void)` function's string.
    fn call(symbol: &CStr) -> Option<String> {
        let f = lookup(symbol)?;
        // SAFETY: the symbols passed here are `const char *f(void)` in their
        // libraries' headers (vpx_codec.h, EbSvtAv1Enc.h), returning
        // static strings.
        unsafe {
            let f: extern "C" fn() -> *const c_char = std::mem::transmute(f);
            text(f())
        }
    }

    /// A `const char *` variable's string.
    fn read(symbol: &CStr) -> Option<String> {
        let p = lookup(symbol)?;
        // SAFETY: x265.h declares `extern const char *x265_version_str`,
        // set at load time to a static string.
        unsafe { text(*(p as *const *const c_char)) }
    }

    pub(super) fn versions() -> BTreeMap<String, String> {
        [
            (
                "h265",
                read(c"x265_version_str").map(|v| format!("x265 {v}")),
            ),
            (
                "vp9",
                call(c"vpx_codec_version_str").map(|v| format!("libvpx {v}")),
            ),
            (
                "av1",
                call(c"svt_av1_get_version").map(|v| format!("SVT-AV1 {v}")),
            ),
        ]
        .into_iter()
        .filter_map(|(codec, v)| Some((codec.to_owned(), v?)))
        .collect()
    }
}

fn ffmpeg_versions() -> String {
    let v = |n: u32| format!("{}.{}.{}", n >> 16, (n >> 8) & 0xff, n & 0xff);
    format!(
        "avcodec {}, avformat {}, swscale {}, avutil {}",
        v(ffmpeg::codec::version()),
        v(ffmpeg::format::version()),
        v(ffmpeg::software::scaling::version()),
        v(ffmpeg::util::version()),
    )
}

/// Encodes one tiny frame and reads x264's self-description from the SEI it
/// writes before the first frame ("x264 - core 164 r3095 baee400 - H.264…").
fn x264_build() -> Result<String, WorkerError> {
    init()?;
    const STAGE: &str = "libx264 version";
    let codec = ffmpeg::encoder::find_by_name("libx264")
        .ok_or_else(|| WorkerError::encoder(STAGE, "this FFmpeg has no libx264 encoder"))?;
    let mut enc = codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(|e| WorkerError::encoder(STAGE, e))?;
    enc.set_width(16);
    enc.set_height(16);
    enc.set_format(Pixel::YUV420P);
    enc.set_time_base(Rational::new(1, 25));
    let mut opts = Dictionary::new();
    opts.set("preset", "ultrafast");
    let mut encoder = enc
        .open_with(opts)
        .map_err(|e| WorkerError::encoder(STAGE, e))?;
    let mut frame = frame::Video::new(Pixel::YUV420P, 16, 16);
    // FFmpeg leaves a new frame's bytes as the allocator found them: black,
    // so x264 never reads memory nobody wrote (valgrind flagged it).
    for (plane, value) in [(0, 16), (1, 128), (2, 128)] {
        frame.data_mut(plane).fill(value);
    }
    frame.set_pts(Some(0));
    encoder
        .send_frame(&frame)
        .and_then(|()| encoder.send_eof())
        .map_err(|e| WorkerError::encoder(STAGE, e))?;
    let mut bytes = Vec::new();
    let mut packet = ffmpeg::Packet::empty();
    while encoder.receive_packet(&mut packet).is_ok() {
        bytes.extend_from_slice(packet.data().unwrap_or_default());
    }
    let text = String::from_utf8_lossy(&bytes);
    let start = text
        .find("x264 - ")
        .map(|i| i + "x264 - ".len())
        .ok_or_else(|| WorkerError::encoder(STAGE, "x264 wrote no version string"))?;
    let rest = &text[start..];
    let end = rest.find(" - ").unwrap_or(rest.len().min(64));
    Ok(rest[..end].to_owned())
}

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
        PixelFormat::Yuva420p => Pixel::YUVA420P,
        PixelFormat::Yuv422p10le => Pixel::YUV422P10LE,
        PixelFormat::Yuv444p10le => Pixel::YUV444P10LE,
        PixelFormat::Yuva444p10le => Pixel::YUVA444P10LE,
        PixelFormat::Pal8 => Pixel::PAL8,
    }
}

/// Bytes per sample of a plane of `p`.
fn sample_bytes(p: PixelFormat) -> usize {
    match p {
        PixelFormat::Yuv420p | PixelFormat::Yuv444p | PixelFormat::Yuva420p | PixelFormat::Pal8 => {
            1
        }
        PixelFormat::Yuv422p10le | PixelFormat::Yuv444p10le | PixelFormat::Yuva444p10le => 2,
    }
}

/// Straight (unpremultiplied) colour from premultiplied RGBA, rounded to
/// nearest, in integers: what an encoder with an alpha plane expects.
/// Fully transparent pixels become black.
fn unpremultiply(src: &[u8], dst: &mut Vec<u8>) {
    dst.clear();
    dst.extend_from_slice(src);
    for p in dst.chunks_exact_mut(4) {
        let a = u32::from(p[3]);
        if a == 255 {
            continue;
        }
        for c in &mut p[..3] {
            *c = match a {
                0 => 0,
                _ => ((u32::from(*c) * 255 + a / 2) / a).min(255) as u8,
            };
        }
        if a == 0 {
            p[3] = 0;
        }
    }
}

/// Planes of 8-bit samples in memory, for conversions that widen them
/// afterwards.
struct Buffers {
    width: usize,
    planes: [Vec<u8>; 3],
}

impl convert::Planes for Buffers {
    fn row(&mut self, plane: usize, y: usize) -> &mut [u8] {
        let w = self.width;
        &mut self.planes[plane][y * w..(y + 1) * w]
    }
}

/// Converts RGBA frames to YUV exactly as a worker does before encoding:
/// BT.709 matrix, limited range, colour tagged BT.709, computed in integers
/// (see `convert.rs`: within ±1 of swscale's bilinear conversion, and the
/// same bytes on every CPU and instruction set).
///
/// The RGBA input is premultiplied and opaque (what a
/// [`composition::FrameRenderer`] produces), rows top to bottom, stride
/// `width · 4`. Render straight into [`FrameConverter::rgba_mut`] and call
/// [`FrameConverter::convert`]: the converter owns the input buffer, so no
/// frame is copied before conversion.
///
/// ```
/// use chunk_worker::{FrameConverter, PixelFormat};
///
/// let mut conv = FrameConverter::new(64, 36, PixelFormat::Yuv420p)?;
/// conv.rgba_mut().chunks_exact_mut(4).for_each(|p| p.copy_from_slice(&[255, 255, 255, 255]));
/// let yuv = conv.convert()?;
/// let mut planes = Vec::new();
/// yuv.write_packed(&mut planes);
/// assert_eq!(planes.len(), 64 * 36 * 3 / 2);
/// assert_eq!(planes[0], 235); // white is Y 235 in limited range
/// # Ok::<(), chunk_worker::WorkerError>(())
/// ```
pub struct FrameConverter {
    /// The input: `width · height` RGBA pixels, zeroed at first so a
    /// renderer that skips a pixel never exposes old memory.
    rgba: Vec<u8>,
    width: u32,
    height: u32,
    format: PixelFormat,
    isa: convert::Isa,
    scratch: convert::Scratch,
    /// The input unpremultiplied, for formats with alpha.
    straight: Vec<u8>,
    /// The palette lookup, for `pal8` (GIF).
    quantizer: Option<crate::palette::Quantizer>,
}

impl std::fmt::Debug for FrameConverter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameConverter")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl FrameConverter {
    /// A converter from `width`x`height` RGBA to `format`.
    ///
    /// # Errors
    /// [`WorkerError::Field`] for an empty size, or an odd one with
    /// `yuv420p`.
    pub fn new(width: u32, height: u32, format: PixelFormat) -> Result<Self, WorkerError> {
        init()?;
        let odd = (format.halves_width() && width % 2 == 1)
            || (format.halves_height() && height % 2 == 1);
        if width == 0 || height == 0 || odd {
            return Err(spec::FieldError::new(
                "video.pixel_format",
                format!(
                    "{width}x{height} cannot be converted to {}: {}",
                    format.as_str(),
                    if width == 0 || height == 0 {
                        "the frame is empty"
                    } else {
                        "subsampled chroma needs an even width (and height for 4:2:0); use a 4:4:4 format"
                    }
                ),
            )
            .into());
        }
        Ok(FrameConverter {
            rgba: vec![0; width as usize * height as usize * 4],
            width,
            height,
            format,
            isa: convert::Isa::detect(),
            scratch: convert::Scratch::default(),
            straight: Vec::new(),
            quantizer: None,
        })
    }

    /// Gives a `pal8` converter the render's palette (other formats ignore
    /// it).
    ///
    /// # Errors
    /// [`WorkerError::Field`] on `video.gif_palette` for `pal8` without one.
    pub fn with_palette(mut self, palette: Option<&GifPalette>) -> Result<Self, WorkerError> {
        if self.format == PixelFormat::Pal8 {
            let palette = palette.ok_or_else(|| {
                spec::FieldError::new(
                    "video.gif_palette",
                    "a gif chunk needs the render's palette (the coordinator computes it)",
                )
            })?;
            self.quantizer = Some(crate::palette::Quantizer::new(palette));
        }
        Ok(self)
    }

    /// Maps the input to palette indices (plane 0) and writes the palette
    /// (plane 1) of a PAL8 frame.
    fn convert_pal8(&self, frame: &mut frame::Video) -> Result<(), WorkerError> {
        let q = self.quantizer.as_ref().ok_or_else(|| {
            WorkerError::encoder(
                "pal8 frame",
                "no palette given (FrameConverter::with_palette)",
            )
        })?;
        if frame.planes() < 1 || !pal8::write_palette(frame, q.argb()) {
            return Err(WorkerError::encoder(
                "pal8 frame",
                format!(
                    "cannot allocate a {}x{} pal8 frame",
                    self.width, self.height
                ),
            ));
        }
        let w = self.width as usize;
        let stride = frame.stride(0);
        let data = frame.data_mut(0);
        for (y, src) in self.rgba.chunks_exact(w * 4).enumerate() {
            let row = &mut data[y * stride..(y + 1) * stride];
            row[w..].fill(0);
            for (x, px) in src.chunks_exact(4).enumerate() {
                row[x] = q.index(px, x, y);
            }
        }
        Ok(())
    }

    /// The RGBA input buffer, `width · height · 4` bytes: render the next
    /// frame into it, then call [`FrameConverter::convert`].
    pub fn rgba_mut(&mut self) -> &mut [u8] {
        &mut self.rgba
    }

    /// Converts what is in the input buffer into a new YUV frame, every
    /// byte of its rows (padding included) written.
    ///
    /// Formats with alpha take the colour unpremultiplied and the alpha
    /// plane from the input's alpha (full range); 10-bit formats get the
    /// 8-bit conversion scaled by 4 (limited range 16-235 becomes 64-940,
    /// as the standards define it), 4:2:2 chroma the mean of each pair.
    ///
    /// # Errors
    /// [`WorkerError::Encoder`] if FFmpeg cannot allocate the frame.
    pub fn convert(&mut self) -> Result<YuvFrame, WorkerError> {
        let mut yuv = frame::Video::new(pixel(self.format), self.width, self.height);
        let planes = match self.format {
            // The palette has no line size, so it is not counted.
            PixelFormat::Pal8 => 1,
            f if f.has_alpha() => 4,
            _ => 3,
        };
        if yuv.planes() != planes {
            return Err(WorkerError::encoder(
                "yuv frame",
                format!(
                    "cannot allocate a {}x{} {} frame",
                    self.width,
                    self.height,
                    self.format.as_str()
                ),
            ));
        }
        self.convert_whole(&mut yuv)?;
        Ok(YuvFrame(yuv))
    }

    /// Brings `yuv`, a frame this converter made from an earlier input that
    /// differs from the current one only inside `changed`, up to date: the
    /// same bytes as [`FrameConverter::convert`] gives, without a new frame.
    /// For `yuv420p` and `yuv444p` only the samples that depend on a pixel
    /// of `changed` are converted again (4:2:0 chroma reads column pairs
    /// and four rows, see `convert::rgba_to_yuv`); other formats
    /// are converted whole (alpha formats unpremultiply the whole input,
    /// 10-bit ones widen whole planes, and `pal8` is cheap next to the GIF
    /// encoder), as is a whole-frame `changed`.
    ///
    /// The caller must make sure nothing else reads or holds `yuv`'s
    /// buffers ([`YuvFrame::is_writable`]).
    ///
    /// # Errors
    /// [`WorkerError::Encoder`] if `yuv` is not a frame of this
    /// converter's size and format.
    pub(crate) fn convert_changed(
        &mut self,
        yuv: &mut YuvFrame,
        changed: &Damage,
    ) -> Result<(), WorkerError> {
        let frame = &mut yuv.0;
        if frame.format() != pixel(self.format)
            || (frame.width(), frame.height()) != (self.width, self.height)
        {
            return Err(WorkerError::encoder(
                "yuv frame",
                format!(
                    "a reused {}x{} {:?} frame for a {}x{} {} conversion",
                    frame.width(),
                    frame.height(),
                    frame.format(),
                    self.width,
                    self.height,
                    self.format.as_str()
                ),
            ));
        }
        let chroma = match self.format {
            _ if changed.is_whole() => None,
            PixelFormat::Yuv420p => Some(convert::Chroma::Yuv420),
            PixelFormat::Yuv444p => Some(convert::Chroma::Yuv444),
            PixelFormat::Yuva420p
            | PixelFormat::Yuv422p10le
            | PixelFormat::Yuv444p10le
            | PixelFormat::Yuva444p10le
            | PixelFormat::Pal8 => None,
        };
        let Some(chroma) = chroma else {
            return self.convert_whole(frame);
        };
        let size = (self.width as usize, self.height as usize);
        let planes = &mut FramePlanes::new(frame);
        for r in changed.rects() {
            let area = convert::Area {
                x0: r.x0 as usize,
                y0: r.y0 as usize,
                x1: r.x1 as usize,
                y1: r.y1 as usize,
            };
            convert::rgba_to_yuv(
                self.isa,
                chroma,
                &self.rgba,
                size,
                area,
                planes,
                &mut self.scratch,
            );
        }
        Ok(())
    }

    /// Converts the whole input into `yuv` (a frame of this converter's
    /// size and format), every byte of its rows (padding included)
    /// written, and tags its colour.
    fn convert_whole(&mut self, yuv: &mut frame::Video) -> Result<(), WorkerError> {
        if self.format == PixelFormat::Pal8 {
            return self.convert_pal8(yuv);
        }
        let (w, h) = (self.width as usize, self.height as usize);
        let source: &[u8] = if self.format.has_alpha() {
            unpremultiply(&self.rgba, &mut self.straight);
            &self.straight
        } else {
            &self.rgba
        };
        let whole = convert::Area::whole(w, h);
        match self.format {
            PixelFormat::Yuv420p | PixelFormat::Yuva420p | PixelFormat::Yuv444p => {
                let chroma = match self.format {
                    PixelFormat::Yuv444p => convert::Chroma::Yuv444,
                    _ => convert::Chroma::Yuv420,
                };
                let planes = &mut FramePlanes::new(yuv);
                convert::rgba_to_yuv(
                    self.isa,
                    chroma,
                    source,
                    (w, h),
                    whole,
                    planes,
                    &mut self.scratch,
                );
            }
            PixelFormat::Yuv422p10le | PixelFormat::Yuv444p10le | PixelFormat::Yuva444p10le => {
                let mut buffers = Buffers {
                    width: w,
                    planes: [vec![0; w * h], vec![0; w * h], vec![0; w * h]],
                };
                let chroma = convert::Chroma::Yuv444;
                let scratch = &mut self.scratch;
                convert::rgba_to_yuv(
                    self.isa,
                    chroma,
                    source,
                    (w, h),
                    whole,
                    &mut buffers,
                    scratch,
                );
                write_10bit(yuv, &buffers, self.format == PixelFormat::Yuv422p10le);
            }
            // Returned above: converted by `convert_pal8`.
            PixelFormat::Pal8 => {}
        }
        if self.format.has_alpha() {
            write_alpha(yuv, &self.rgba, w, self.format);
        }
        yuv.set_color_space(color::Space::BT709);
        yuv.set_color_range(color::Range::MPEG);
        yuv.set_color_primaries(color::Primaries::BT709);
        yuv.set_color_transfer_characteristic(color::TransferCharacteristic::BT709);
        Ok(())
    }
}

/// The palette plane of PAL8 frames, which `ffmpeg-next` does not expose
/// (its `data(1)` is sized by a line size FFmpeg leaves at 0 for palettes).
#[allow(unsafe_code)] // one write through the frame's own palette pointer; see SAFETY
mod pal8 {
    use ffmpeg_next::frame;

    /// Writes `argb` into the palette of `frame` (a PAL8 frame allocated by
    /// `frame::Video::new`); false if it has none.
    pub(super) fn write_palette(frame: &mut frame::Video, argb: &[u32; 256]) -> bool {
        // SAFETY: for a PAL8 frame, av_frame_get_buffer allocates data[1]
        // as the palette, AVPALETTE_SIZE (1024) bytes, 4-byte aligned
        // (libavutil/frame.c, get_video_buffer; pixfmt.h: "the palette is
        // stored in AVFrame.data[1]"); it is null otherwise. The frame is
        // ours and not shared while we write.
        unsafe {
            let p = (*frame.as_mut_ptr()).data[1] as *mut u32;
            if p.is_null() {
                return false;
            }
            std::ptr::copy_nonoverlapping(argb.as_ptr(), p, argb.len());
        }
        true
    }
}

/// Writes 8-bit 4:4:4 `buffers` into a 10-bit frame: samples times 4,
/// chroma pairs summed times 2 for 4:2:2 (their mean at 10 bits).
fn write_10bit(yuv: &mut frame::Video, buffers: &Buffers, halve_chroma: bool) {
    let w = buffers.width;
    for (plane, samples) in buffers.planes.iter().enumerate() {
        let pw = yuv.plane_width(plane) as usize;
        let stride = yuv.stride(plane);
        let data = yuv.data_mut(plane);
        for (y, src) in samples.chunks_exact(w).enumerate() {
            let row = &mut data[y * stride..(y + 1) * stride];
            row[pw * 2..].fill(0);
            for x in 0..pw {
                let v: u16 = if plane > 0 && halve_chroma {
                    let b = src.get(2 * x + 1).copied().unwrap_or(src[2 * x]);
                    (u16::from(src[2 * x]) + u16::from(b)) * 2
                } else {
                    u16::from(src[x]) * 4
                };
                row[2 * x..2 * x + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
    }
}

/// Writes plane 3 (alpha, full range) from the input's alpha bytes.
fn write_alpha(yuv: &mut frame::Video, rgba: &[u8], width: usize, format: PixelFormat) {
    let wide = sample_bytes(format) == 2;
    let stride = yuv.stride(3);
    let data = yuv.data_mut(3);
    for (y, src) in rgba.chunks_exact(width * 4).enumerate() {
        let row = &mut data[y * stride..(y + 1) * stride];
        let used = width * sample_bytes(format);
        row[used..].fill(0);
        for (x, px) in src.chunks_exact(4).enumerate() {
            if wide {
                let a = ((u32::from(px[3]) * 1023 + 127) / 255) as u16;
                row[2 * x..2 * x + 2].copy_from_slice(&a.to_le_bytes());
            } else {
                row[x] = px[3];
            }
        }
    }
}

/// An FFmpeg frame's Y, Cb and Cr planes as the converter writes them,
/// split once per conversion: looking a plane up through `ffmpeg-next`
/// for every row (its pixel format's descriptor, twice) cost as much as
/// converting the row when only the renderer's damage is converted.
struct FramePlanes<'a> {
    planes: [&'a mut [u8]; 3],
    widths: [usize; 3],
    strides: [usize; 3],
}

impl<'a> FramePlanes<'a> {
    /// The first three planes of `frame`, a planar YUV frame.
    fn new(frame: &'a mut frame::Video) -> Self {
        let widths = [0, 1, 2].map(|p| frame.plane_width(p) as usize);
        let strides = [0, 1, 2].map(|p| frame.stride(p));
        FramePlanes {
            planes: frame_refs::three_planes(frame),
            widths,
            strides,
        }
    }
}

impl convert::Planes for FramePlanes<'_> {
    fn row(&mut self, plane: usize, y: usize) -> &mut [u8] {
        let (width, stride) = (self.widths[plane], self.strides[plane]);
        let row = &mut self.planes[plane][y * stride..(y + 1) * stride];
        row[width..].fill(0);
        &mut row[..width]
    }
}

/// A converted frame, as the encoder receives it (see [`FrameConverter`]).
pub struct YuvFrame(pub(crate) frame::Video);

impl std::fmt::Debug for YuvFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("YuvFrame")
            .field("width", &self.0.width())
            .field("height", &self.0.height())
            .field("format", &self.0.format())
            .finish()
    }
}

impl YuvFrame {
    /// Whether this is the only reference to the frame's buffers, so that
    /// writing into it cannot change what anyone else reads: an encoder
    /// that kept a reference to a frame it was given (instead of copying
    /// the picture) makes it false until the encoder lets go
    /// (`av_frame_is_writable`: every plane's buffer has one reference and
    /// is not read-only).
    pub(crate) fn is_writable(&mut self) -> bool {
        frame_refs::is_writable(&mut self.0)
    }

    /// Appends the planes to `out` (Y, then U, then V), rows without
    /// padding: the layout `ffmpeg -f rawvideo -pix_fmt yuv420p` (or
    /// `yuv444p`) reads.
    pub fn write_packed(&self, out: &mut Vec<u8>) {
        let f = &self.0;
        let bytes = match f.format() {
            Pixel::YUV422P10LE | Pixel::YUV444P10LE | Pixel::YUVA444P10LE => 2,
            _ => 1,
        };
        for plane in 0..f.planes() {
            let row = f.plane_width(plane) as usize * bytes;
            let stride = f.stride(plane);
            let data = f.data(plane);
            for y in 0..f.plane_height(plane) as usize {
                out.extend_from_slice(&data[y * stride..y * stride + row]);
            }
        }
    }
}

/// Reference counts and planes of FFmpeg frames, which `ffmpeg-next` does
/// not expose.
#[allow(unsafe_code)] // FFI calls on frames we own; see SAFETY
mod frame_refs {
    use ffmpeg_next::{ffi, frame};

    /// `av_frame_is_writable`.
    pub(super) fn is_writable(frame: &mut frame::Video) -> bool {
        // SAFETY: the frame owns a valid AVFrame; av_frame_is_writable only
        // reads its buffer references (and returns 0 for a frame without
        // buffers).
        unsafe { ffi::av_frame_is_writable(frame.as_mut_ptr()) > 0 }
    }

    /// The first three planes of `frame` (which has at least three), each
    /// `stride × plane height` bytes as `frame::Video::data_mut` gives
    /// them, borrowed at once.
    ///
    /// # Panics
    /// If `frame` has fewer than three planes.
    pub(super) fn three_planes(frame: &mut frame::Video) -> [&mut [u8]; 3] {
        assert!(frame.planes() >= 3, "a planar frame has three planes");
        let lens = [0, 1, 2].map(|p| frame.stride(p) * frame.plane_height(p) as usize);
        // SAFETY: the frame owns a valid AVFrame whose planes 0-2 are
        // allocated (non-zero line sizes, checked above) for `stride ×
        // plane height` bytes each, the lengths `data_mut` uses. FFmpeg
        // lays a frame's planes out apart (one buffer per plane, or one
        // buffer cut into consecutive planes by `av_image_fill_pointers`),
        // so the three slices never overlap. They borrow `frame` mutably
        // for their whole life, so nothing else reaches its data meanwhile.
        let data = unsafe { (*frame.as_mut_ptr()).data };
        [0, 1, 2].map(|p| unsafe { std::slice::from_raw_parts_mut(data[p], lens[p]) })
    }

    /// A second reference to `frame`'s buffers (`av_frame_ref`), as an
    /// encoder that keeps its input holds one; `None` if FFmpeg fails.
    #[cfg(test)]
    pub(crate) fn share(frame: &frame::Video) -> Option<frame::Video> {
        let mut other = frame::Video::empty();
        // SAFETY: both frames own valid AVFrames; `other` is empty, as
        // av_frame_ref requires of its destination.
        let ret = unsafe { ffi::av_frame_ref(other.as_mut_ptr(), frame.as_ptr()) };
        (ret >= 0).then_some(other)
    }
}

/// Makes this process's allocator keep memory that libx264 frees, so the
/// next chunk reuses it instead of asking the kernel for fresh pages; call it
/// first thing in `main` of a process that renders chunks (a worker, or a
/// coordinator with embedded workers), before any thread starts. Returns
/// whether it was applied.
///
/// Every chunk opens and closes its own libx264 encoder, which allocates
/// about 250 MB at 1080p (frames, lookahead) and frees it at the end.
/// glibc's default gives that memory back to the kernel, so each chunk
/// faults in and zeroes it again: for 16 chunks of 19 frames, 20 % more CPU
/// than one chunk of 300 (`cargo bench -p montage-benches --bench e2e`,
/// (b)/(a)). This sets glibc's `malloc` to one arena (so the next encoder's
/// threads find the memory the last one freed), allocations up to 32 MiB
/// from the heap rather than `mmap`, and up to 1 GiB of free memory kept
/// rather than trimmed. Peak memory stays that of one chunk per slot; the
/// memory is held between chunks.
///
/// Both binaries call it. It was withdrawn once: the coordinator's cache
/// and S3 tests were seen to give different bytes with it under load. That
/// could not be reproduced since (repeated runs of those tests with it, and
/// the same scenarios with the release binaries), and nothing in a render
/// reads memory it did not write: valgrind's memcheck on a worker rendering
/// two chunks and on a coordinator with embedded workers reports no use of
/// an uninitialised value in any chunk's encode or in the combine (only a
/// 16-byte over-read in libx264's AVX2 `mbtree_propagate_cost`, whose extra
/// lanes are written to scratch space and never read). The frames given to
/// x264 have every byte of their rows written (padding zeroed), and the
/// chunk-worker test `perturbed_and_reused_memory_gives_the_same_bytes`
/// renders under `glibc.malloc.perturb` with this policy and compares bytes.
///
/// Does nothing (returns `false`) on other C libraries, or when
/// `GLIBC_TUNABLES` already sets a `glibc.malloc` tunable: the operator's
/// choice wins. Meant to change no output byte (see above).
pub fn reuse_freed_memory() -> bool {
    if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc")) {
        return false;
    }
    malloc_policy::apply()
}

/// Keeps SVT-AV1 to warnings and errors unless `SVT_LOG` is set already:
/// by default it prints sixteen lines of its settings to stderr for every
/// chunk it encodes. Call it first thing in `main`, before any thread
/// starts: it sets `SVT_LOG` (2), which each encoder reads when it opens.
/// Returns whether it set it.
#[allow(unsafe_code)] // std::env::set_var; see SAFETY
pub fn quiet_svt_av1() -> bool {
    if std::env::var_os("SVT_LOG").is_some() {
        return false;
    }
    // SAFETY: called before any thread starts (see above), so no other
    // thread reads or writes the environment meanwhile.
    unsafe { std::env::set_var("SVT_LOG", "2") };
    true
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // glibc's mallopt, with constants from <malloc.h>; see SAFETY
mod malloc_policy {
    use std::ffi::c_int;

    const M_TRIM_THRESHOLD: c_int = -1;
    const M_MMAP_THRESHOLD: c_int = -3;
    const M_ARENA_MAX: c_int = -8;
    /// glibc's largest `M_MMAP_THRESHOLD` on 64-bit (`HEAP_MAX_SIZE / 2`).
    const MMAP_THRESHOLD: c_int = 32 << 20;
    const TRIM_THRESHOLD: c_int = 1 << 30;

    unsafe extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }

    pub(super) fn apply() -> bool {
        // SAFETY: mallopt only changes allocator parameters; glibc documents
        // it as safe to call at any time (mallopt returns 0 on a bad value).
        unsafe {
            mallopt(M_ARENA_MAX, 1) == 1
                && mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod malloc_policy {
    pub(super) fn apply() -> bool {
        false
    }
}

/// swscale's conversion, kept for tests as the reference the integer
/// converter must stay within ±1 of. `ffmpeg-next` 9 has no wrapper for
/// `sws_setColorspaceDetails`, and without it swscale converts with the
/// BT.601 matrix: the one FFI call needed.
#[cfg(test)]
#[allow(unsafe_code)] // a single FFI call on a context we own; see SAFETY
pub(crate) mod sws_bt709 {
    use ffmpeg_next::ffi;
    use ffmpeg_next::software::scaling;

    use crate::WorkerError;

    pub(crate) fn set_bt709_limited(sws: &mut scaling::Context) -> Result<(), WorkerError> {
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

/// Held while a SVT-AV1 encoder opens or closes. SVT-AV1 (1.4 here, and
/// up to 2.3 at least) keeps process-wide state that each encoder's
/// set-up writes and each teardown frees (the CPU topology it reads from
/// `/proc/cpuinfo`), unsynchronised: two chunks of one process (embedded
/// workers, or a worker with two slots) opening and closing encoders at
/// once crashed it in `svt_av1_enc_init_handle` (a `memset` through the
/// freed pointer), one render in about 120 under load.
static SVT_AV1_SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// An opened video encoder whose opening and closing are serialised
/// across the process when its library needs that (SVT-AV1, see
/// [`SVT_AV1_SETUP`]).
struct OpenEncoder {
    /// Taken only when dropped.
    inner: Option<ffmpeg::encoder::Video>,
    serialised: bool,
}

impl OpenEncoder {
    fn open(
        enc: ffmpeg::encoder::video::Video,
        codec: VideoCodec,
        options: Dictionary<'_>,
    ) -> Result<Self, ffmpeg::Error> {
        let serialised = codec == VideoCodec::Av1;
        let _setup = serialised.then(lock_svt_av1_setup);
        let inner = enc.open_with(options)?;
        Ok(OpenEncoder {
            inner: Some(inner),
            serialised,
        })
    }
}

/// [`SVT_AV1_SETUP`], held; a panic elsewhere while it was held leaves
/// nothing half-done that the next encoder could see.
fn lock_svt_av1_setup() -> std::sync::MutexGuard<'static, ()> {
    SVT_AV1_SETUP.lock().unwrap_or_else(|e| e.into_inner())
}

impl std::ops::Deref for OpenEncoder {
    type Target = ffmpeg::encoder::Video;

    fn deref(&self) -> &Self::Target {
        self.inner
            .as_ref()
            .expect("an encoder is present until dropped")
    }
}

impl std::ops::DerefMut for OpenEncoder {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.inner
            .as_mut()
            .expect("an encoder is present until dropped")
    }
}

impl Drop for OpenEncoder {
    fn drop(&mut self) {
        let _setup = self.serialised.then(lock_svt_av1_setup);
        drop(self.inner.take());
    }
}

/// One chunk's encoder writing into its chunk container: libx264 or
/// libx265 into MPEG-TS, libvpx-vp9 or prores_ks into Matroska (see
/// [`spec::VideoCodec::chunk_container`]).
pub(crate) struct ChunkEncoder {
    octx: ffmpeg::format::context::Output,
    encoder: OpenEncoder,
    encoder_tb: Rational,
    stream_tb: Rational,
    packet: ffmpeg::Packet,
    /// The encoder's name, for errors ("libx264 encode").
    name: &'static str,
    /// Packets written so far (one per frame).
    pub(crate) packets: u64,
}

fn rational(num: u32, den: u32, what: &'static str) -> Result<Rational, WorkerError> {
    let n = i32::try_from(num).map_err(|_| WorkerError::encoder(what, "rate too large"))?;
    let d = i32::try_from(den).map_err(|_| WorkerError::encoder(what, "rate too large"))?;
    Ok(Rational::new(n, d))
}

/// The FFmpeg encoder that encodes `codec`.
fn encoder_name(codec: VideoCodec) -> &'static str {
    match codec {
        VideoCodec::H264 => "libx264",
        VideoCodec::H265 => "libx265",
        VideoCodec::Vp9 => "libvpx-vp9",
        VideoCodec::Av1 => "libsvtav1",
        VideoCodec::Prores => "prores_ks",
        VideoCodec::Gif => "gif",
    }
}

/// An x264 preset name on another encoder's speed scale whose fastest
/// setting used is `fastest`: `ultrafast` is `fastest`, each slower preset
/// one less (floored at 0).
fn speed_for_preset(preset: &str, fastest: u32) -> u32 {
    let rank = spec::X264_PRESETS
        .iter()
        .position(|p| *p == preset)
        .unwrap_or(2);
    fastest.saturating_sub(rank as u32)
}

/// libvpx's `cpu-used` for an x264 preset name (libvpx-vp9 runs 0-8 in
/// good-quality mode).
fn vpx_cpu_used(preset: &str) -> u32 {
    speed_for_preset(preset, 8)
}

/// SVT-AV1's preset (0 slowest to 13 fastest) for an x264 preset name:
/// `ultrafast` 12 down to `placebo` 3 (`veryfast` is 10).
fn svt_preset(preset: &str) -> u32 {
    speed_for_preset(preset, 12)
}

/// The encoder options of `settings` for its codec, with `threads` encoder
/// threads (resolved for the frame size). Every one that reaches the
/// bitstream is fixed here, never left to the machine.
fn encoder_options(settings: &VideoSettings, threads: u32) -> Dictionary<'static> {
    let mut opts = Dictionary::new();
    match settings.codec {
        VideoCodec::H264 => {
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
            // B-frames so every chunk has the same structure rules. The
            // lookahead thread's buffer only changes memory, not the bitstream.
            opts.set(
                "x264-params",
                &format!(
                    "keyint={}:bframes={}:open-gop=0:sync-lookahead={}",
                    settings.keyint, settings.bframes, X264_SYNC_LOOKAHEAD
                ),
            );
        }
        VideoCodec::H265 => {
            opts.set("preset", &settings.preset);
            let mut params = format!(
                "keyint={}:min-keyint=1:bframes={}:open-gop=0:frame-threads={}:pools={}:lookahead-slices=0:log-level=error",
                settings.keyint, settings.bframes, threads, threads
            );
            match settings.quality {
                Quality::Crf(crf) => opts.set("crf", &crf.to_string()),
                Quality::Lossless => params.push_str(":lossless=1"),
            }
            // x265 picks Main or Main 4:4:4 from the pixel format.
            opts.set("x265-params", &params);
        }
        VideoCodec::Vp9 => {
            match settings.quality {
                // Constant quality: CRF with no bitrate target.
                Quality::Crf(crf) => {
                    opts.set("crf", &crf.to_string());
                    opts.set("b", "0");
                }
                Quality::Lossless => opts.set("lossless", "1"),
            }
            opts.set("deadline", "good");
            opts.set("cpu-used", &vpx_cpu_used(&settings.preset).to_string());
            // Tiles and row threading are fixed, so the bitstream does not
            // depend on the thread count.
            opts.set("tile-columns", "0");
            opts.set("row-mt", "0");
            if settings.pixel_format.has_alpha() {
                // libvpx encodes the alpha plane as a second stream; an
                // alt-ref frame in one but not the other desynchronises them.
                opts.set("auto-alt-ref", "0");
            }
        }
        VideoCodec::Prores => {
            let profile = match settings.pixel_format {
                PixelFormat::Yuv422p10le => "hq",
                _ => "4444",
            };
            opts.set("profile", profile);
            // Apple's vendor id, as Apple's encoder writes it, so players
            // that look at it treat the file as theirs.
            opts.set("vendor", "apl0");
        }
        VideoCodec::Av1 => {
            opts.set("preset", &svt_preset(&settings.preset).to_string());
            // Validation refuses lossless AV1: CRF is the only mode here.
            if let Quality::Crf(crf) = settings.quality {
                opts.set("crf", &crf.to_string());
            }
            // Key frames are IDR (`irefresh-type=2`): a closed GOP, so no
            // frame references another chunk. No scene-change key frames,
            // so every chunk has the same structure rules (keyint comes
            // from the context's GOP size). `lp` bounds the threads SVT-AV1
            // starts; its bitstream does not depend on it (measured: the
            // same bytes with lp 1, 2 and 4).
            opts.set(
                "svtav1-params",
                &format!("irefresh-type=2:scd=0:lp={threads}"),
            );
        }
        VideoCodec::Gif => {}
    }
    opts
}

/// Debian's `ffmpeg` command-line arguments that encode as a chunk
/// encoder with `settings` does: `-c:v` and the encoder, the context
/// fields a chunk's encoder sets (GOP, B-frames, threads and their
/// kind, colour description) and every encoder option, so a benchmark can
/// put the CLI beside a worker with the very same settings for a
/// `width`x`height` frame (which the encoder threads may depend on).
pub fn ffmpeg_cli_args(settings: &VideoSettings, width: u32, height: u32) -> Vec<String> {
    let threads = settings.encoder_threads_for(width, height);
    let thread_type = match settings.codec {
        VideoCodec::Prores => "slice",
        _ => "frame",
    };
    let mut args: Vec<String> = [
        "-c:v",
        encoder_name(settings.codec),
        "-pix_fmt",
        settings.pixel_format.as_str(),
        "-g",
        &settings.keyint.to_string(),
        "-bf",
        &settings.bframes.to_string(),
        "-threads",
        &threads.to_string(),
        "-thread_type",
        thread_type,
        "-color_primaries",
        "bt709",
        "-color_trc",
        "bt709",
        "-colorspace",
        "bt709",
        "-color_range",
        "tv",
    ]
    .map(str::to_owned)
    .to_vec();
    for (key, value) in encoder_options(settings, threads).iter() {
        args.push(format!("-{key}"));
        args.push(value.to_owned());
    }
    args
}

impl ChunkEncoder {
    /// Opens the codec's encoder and the chunk muxer writing to `path`.
    /// Frames are timed in units of one output frame (`1 / output_fps`);
    /// TS packets are written at 90 kHz, Matroska's in milliseconds.
    pub(crate) fn create(
        path: &Path,
        width: u32,
        height: u32,
        output_fps: Fps,
        settings: &VideoSettings,
    ) -> Result<Self, WorkerError> {
        init()?;
        let threads = settings.encoder_threads_for(width, height);
        let name = encoder_name(settings.codec);
        let container = settings.codec.chunk_container();
        crate::ffmpeg_path(path).map_err(|e| {
            WorkerError::encoder("chunk muxer open", format!("{}: {e}", path.display()))
        })?;
        let mut octx = ffmpeg::format::output_as(path, container.muxer())
            .map_err(|e| WorkerError::encoder("chunk muxer open", e))?;
        let codec = ffmpeg::encoder::find_by_name(name).ok_or_else(|| {
            WorkerError::encoder(name, format!("this FFmpeg has no {name} encoder"))
        })?;
        let encoder_tb = rational(output_fps.den(), output_fps.num(), "encoder time base")?;
        let mut ctx = codec::context::Context::new_with_codec(codec);
        // The bitstream of x264 (and x265) depends on its thread count: fix
        // it from the request instead of letting FFmpeg pick the machine's
        // core count. ProRes slices and VP9 (fixed tiles) do not depend on it.
        ctx.set_threading(ffmpeg::threading::Config {
            kind: match settings.codec {
                VideoCodec::Prores => ffmpeg::threading::Type::Slice,
                _ => ffmpeg::threading::Type::Frame,
            },
            count: threads as usize,
            ..Default::default()
        });
        let mut enc = ctx
            .encoder()
            .video()
            .map_err(|e| WorkerError::encoder(name, e))?;
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
        if container == spec::ChunkContainer::Matroska
            && octx
                .format()
                .flags()
                .contains(ffmpeg::format::flag::Flags::GLOBAL_HEADER)
        {
            enc.set_flags(codec::Flags::GLOBAL_HEADER);
        }
        let encoder = OpenEncoder::open(enc, settings.codec, encoder_options(settings, threads))
            .map_err(|e| WorkerError::encoder(name, e))?;

        let mut stream = octx
            .add_stream(codec)
            .map_err(|e| WorkerError::encoder("chunk stream", e))?;
        stream.set_parameters(&*encoder);
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
            .map_err(|e| WorkerError::encoder("chunk header", e))?;
        let stream_tb = octx
            .stream(0)
            .map(|s| s.time_base())
            .ok_or_else(|| WorkerError::encoder("chunk header", "stream 0 missing"))?;
        Ok(ChunkEncoder {
            octx,
            encoder,
            encoder_tb,
            stream_tb,
            packet: ffmpeg::Packet::empty(),
            name,
            packets: 0,
        })
    }

    /// Encodes `frame` as output frame `pts` (in output frames relative to
    /// the render's first frame), writing whatever packets are ready.
    pub(crate) fn encode(&mut self, frame: &mut YuvFrame, pts: i64) -> Result<(), WorkerError> {
        frame.0.set_pts(Some(pts));
        self.encoder
            .send_frame(&frame.0)
            .map_err(|e| WorkerError::encoder(self.name, e))?;
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
                        .map_err(|e| WorkerError::encoder("chunk write", e))?;
                    self.packets += 1;
                }
                Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                    return Ok(());
                }
                Err(e) => return Err(WorkerError::encoder(self.name, e)),
            }
        }
    }

    /// Flushes the encoder and writes the muxer's trailer.
    pub(crate) fn finish(mut self) -> Result<u64, WorkerError> {
        self.encoder
            .send_eof()
            .map_err(|e| WorkerError::encoder(self.name, e))?;
        self.drain()?;
        self.octx
            .write_trailer()
            .map_err(|e| WorkerError::encoder("chunk trailer", e))?;
        Ok(self.packets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ffmpeg::software::scaling;

    /// swscale's conversion as the worker made it before the integer
    /// converter: bilinear, bit-exact, accurate rounding, BT.709 limited.
    fn swscale(rgba: &[u8], w: u32, h: u32, format: PixelFormat) -> Vec<u8> {
        init().expect("ffmpeg");
        let flags =
            scaling::Flags::BILINEAR | scaling::Flags::BITEXACT | scaling::Flags::ACCURATE_RND;
        let mut sws = scaling::Context::get(Pixel::RGBA, w, h, pixel(format), w, h, flags)
            .expect("swscale context");
        sws_bt709::set_bt709_limited(&mut sws).expect("bt709");
        let mut src = frame::Video::new(Pixel::RGBA, w, h);
        let stride = src.stride(0);
        let row = w as usize * 4;
        for (y, line) in rgba.chunks_exact(row).enumerate() {
            src.data_mut(0)[y * stride..y * stride + row].copy_from_slice(line);
        }
        let mut dst = frame::Video::new(pixel(format), w, h);
        sws.run(&src, &mut dst).expect("swscale");
        let mut out = Vec::new();
        YuvFrame(dst).write_packed(&mut out);
        out
    }

    fn ours(rgba: &[u8], w: u32, h: u32, format: PixelFormat) -> Vec<u8> {
        let mut conv = FrameConverter::new(w, h, format).expect("converter");
        conv.rgba_mut().copy_from_slice(rgba);
        let mut out = Vec::new();
        conv.convert().expect("convert").write_packed(&mut out);
        out
    }

    /// Pseudo-random opaque RGBA (xorshift).
    fn noise(w: u32, h: u32, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        (0..w as usize * h as usize * 4)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                if i % 4 == 3 { 255 } else { (s >> 24) as u8 }
            })
            .collect()
    }

    /// Worst difference per plane and where, as "plane p, row r, column c".
    fn worst(a: &[u8], b: &[u8], w: u32, h: u32, format: PixelFormat) -> (u8, String) {
        let (cw, ch) = match format {
            PixelFormat::Yuv420p => (w / 2, h / 2),
            _ => (w, h),
        };
        let sizes = [(w, h), (cw, ch), (cw, ch)];
        let mut at = 0;
        let mut worst = (0u8, String::new());
        for (p, (pw, ph)) in sizes.into_iter().enumerate() {
            for i in 0..(pw * ph) as usize {
                let d = a[at + i].abs_diff(b[at + i]);
                if d > worst.0 {
                    worst = (
                        d,
                        format!(
                            "plane {p}, row {}, column {}",
                            i / pw as usize,
                            i % pw as usize
                        ),
                    );
                }
            }
            at += (pw * ph) as usize;
        }
        worst
    }

    #[test]
    fn within_one_of_swscale() {
        // swscale's bilinear filter changes shape on frames under 8 rows or
        // columns (it then differs by up to 49 at the edges); from 8 up the
        // integer converter samples exactly as swscale does and differs
        // only by rounding.
        let mut same = (0usize, 0usize);
        for format in [PixelFormat::Yuv420p, PixelFormat::Yuv444p] {
            for (w, h, seed) in [
                (8, 8, 1),
                (16, 8, 2),
                (8, 16, 3),
                (64, 36, 4),
                (130, 66, 5),
                (320, 180, 6),
            ] {
                let rgba = noise(w, h, seed);
                let (a, b) = (ours(&rgba, w, h, format), swscale(&rgba, w, h, format));
                let (d, at) = worst(&a, &b, w, h, format);
                assert!(d <= 1, "{w}x{h} {format:?}: off by {d} at {at}");
                same.0 += a.iter().zip(&b).filter(|(x, y)| x == y).count();
                same.1 += a.len();
            }
        }
        // Most samples are identical: rounding differs, not the maths.
        assert!(
            same.0 * 10 > same.1 * 9,
            "{} of {} samples identical",
            same.0,
            same.1
        );
    }

    /// xorshift64.
    fn next(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    /// A random rectangle of a `w × h` frame, often at an edge, sometimes
    /// one pixel or one row.
    fn random_rect(s: &mut u64, w: u32, h: u32) -> composition::PixelRect {
        let mut span = |n: u32| {
            let a = match next(s) % 4 {
                0 => 0,
                _ => (next(s) % u64::from(n)) as u32,
            };
            let len = match next(s) % 4 {
                0 => 1,
                1 => n - a,
                _ => 1 + (next(s) % u64::from(n - a)) as u32,
            };
            (a, a + len)
        };
        let (x0, x1) = span(w);
        let (y0, y1) = span(h);
        composition::PixelRect { x0, y0, x1, y1 }
    }

    /// Packed planes of a frame.
    fn packed(f: &YuvFrame) -> Vec<u8> {
        let mut out = Vec::new();
        f.write_packed(&mut out);
        out
    }

    /// The pool's next frame, `conv`'s input converted into it.
    fn converted(
        pool: &mut crate::yuv_pool::YuvPool,
        conv: &mut FrameConverter,
    ) -> crate::yuv_pool::Pooled {
        let target = pool.target().expect("the sender is alive");
        pool.fill(target, conv).expect("converts")
    }

    /// Random damage sequences through a pool whose frames the "encoder"
    /// (this test) hands back after a random delay: each frame it gives
    /// must be, byte for byte, what a full conversion of the same input
    /// gives, whichever of its frames it reused and whatever changed since
    /// that frame was last converted.
    #[test]
    fn converting_only_what_changed_gives_the_bytes_of_a_full_conversion() {
        use crate::yuv_pool::YuvPool;
        let cases = [
            (PixelFormat::Yuv420p, 66, 34),
            (PixelFormat::Yuv420p, 2, 2),
            (PixelFormat::Yuv420p, 130, 8),
            (PixelFormat::Yuv444p, 37, 21),
            (PixelFormat::Yuv444p, 1, 3),
            // Converted whole: the reuse must still give the same bytes.
            (PixelFormat::Yuva420p, 34, 10),
        ];
        let mut isas = vec![convert::Isa::Baseline];
        if convert::Isa::detect() != convert::Isa::Baseline {
            isas.push(convert::Isa::detect());
        }
        for (format, w, h) in cases {
            for &isa in &isas {
                let mut s = u64::from(w * 977 + h) | 1;
                let mut conv = FrameConverter::new(w, h, format).expect("converter");
                conv.isa = isa;
                conv.rgba_mut().copy_from_slice(&noise(w, h, next(&mut s)));
                let mut fresh = FrameConverter::new(w, h, format).expect("converter");
                fresh.isa = isa;
                let (back, returned) = std::sync::mpsc::channel();
                let mut pool = YuvPool::new(3, returned);
                let mut held = std::collections::VecDeque::new();
                let mut reused = 0;
                for step in 0..60 {
                    let mut damage = Damage::default();
                    if step > 0 && next(&mut s).is_multiple_of(16) {
                        damage.set_whole();
                    }
                    for _ in 0..next(&mut s) % 4 {
                        let r = random_rect(&mut s, w, h);
                        damage.add_rect(r);
                        let rgba = conv.rgba_mut();
                        for y in r.y0..r.y1 {
                            for x in r.x0..r.x1 {
                                let at = ((y * w + x) * 4) as usize;
                                let v = next(&mut s).to_le_bytes();
                                let a = if format.has_alpha() { v[3] } else { 255 };
                                rgba[at..at + 4].copy_from_slice(&[
                                    v[0].min(a),
                                    v[1].min(a),
                                    v[2].min(a),
                                    a,
                                ]);
                            }
                        }
                    }
                    if damage.is_whole() {
                        let v = noise(w, h, next(&mut s));
                        conv.rgba_mut().copy_from_slice(&v);
                    }
                    pool.record(&damage);
                    let got = converted(&mut pool, &mut conv);
                    reused += usize::from(step >= 3);
                    fresh.rgba_mut().copy_from_slice(conv.rgba_mut());
                    let want = fresh.convert().expect("converts");
                    let (got_bytes, want_bytes) = (packed(&got.frame), packed(&want));
                    assert_eq!(got_bytes.len(), want_bytes.len());
                    let first = got_bytes.iter().zip(&want_bytes).position(|(a, b)| a != b);
                    assert!(
                        first.is_none(),
                        "{format:?} {w}x{h} {isa:?}, step {step}, slot {}: packed byte {first:?} differs",
                        got.slot
                    );
                    held.push_back(got);
                    // Hand back the oldest frames, 0-2 of them.
                    for _ in 0..next(&mut s) % 3 {
                        if let Some(p) = held.pop_front() {
                            back.send(p).expect("pool listens");
                        }
                    }
                    if held.len() == 3 {
                        back.send(held.pop_front().expect("3 held"))
                            .expect("pool listens");
                    }
                }
                assert!(reused > 0 && pool.replaced == 0);
            }
        }
    }

    /// A frame handed back while someone (an encoder) still holds a
    /// reference to its buffers is not written: the pool converts into a
    /// new frame, and the holder still reads what it was given.
    #[test]
    fn a_frame_still_referenced_is_replaced_not_written() {
        use crate::yuv_pool::YuvPool;
        let (w, h) = (34, 10);
        let mut conv = FrameConverter::new(w, h, PixelFormat::Yuv420p).expect("converter");
        conv.rgba_mut().copy_from_slice(&noise(w, h, 7));
        let (back, returned) = std::sync::mpsc::channel();
        let mut pool = YuvPool::new(1, returned);
        pool.record(&Damage::whole_frame());
        let mut first = converted(&mut pool, &mut conv);
        assert!(first.frame.is_writable());
        let held = frame_refs::share(&first.frame.0).expect("a second reference");
        assert!(!first.frame.is_writable());
        let before = packed(&first.frame);
        let first_buffer = first.frame.0.data(0).as_ptr();
        back.send(first).expect("pool listens");

        conv.rgba_mut()[..8].copy_from_slice(&[9, 200, 30, 255, 250, 1, 2, 255]);
        let mut damage = Damage::default();
        damage.add_rect(composition::PixelRect {
            x0: 0,
            y0: 0,
            x1: 2,
            y1: 1,
        });
        pool.record(&damage);
        let second = converted(&mut pool, &mut conv);
        assert_eq!(pool.replaced, 1);
        assert_ne!(second.frame.0.data(0).as_ptr(), first_buffer);
        assert_eq!(
            packed(&YuvFrame(held)),
            before,
            "the holder's frame changed"
        );
        let want = ours(conv.rgba_mut(), w, h, PixelFormat::Yuv420p);
        assert_eq!(packed(&second.frame), want);
        // Nobody else holds the new one: it is reused.
        let second_buffer = second.frame.0.data(0).as_ptr();
        back.send(second).expect("pool listens");
        pool.record(&damage);
        let third = converted(&mut pool, &mut conv);
        assert_eq!(pool.replaced, 1);
        assert_eq!(third.frame.0.data(0).as_ptr(), second_buffer);
    }

    /// What the reuse relies on for speed: libavcodec 5.1's
    /// `avcodec_send_frame` takes a reference to the frame
    /// (`av_frame_ref` into its `buffer_frame`), encodes it at once when no
    /// packet is pending, and unreferences it after libx264's
    /// `x264_encoder_encode` copied the picture; the encoder's drain to
    /// EAGAIN leaves no frame pending. So after `ChunkEncoder::encode` the
    /// frame is ours alone again, B-frames and lookahead notwithstanding.
    #[test]
    fn libx264_lets_go_of_its_input_frames() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (w, h) = (64, 36);
        let settings = VideoSettings::default();
        let fps = Fps::new(25, 1).expect("fps");
        let mut enc =
            ChunkEncoder::create(&dir.path().join("c.ts"), w, h, fps, &settings).expect("encoder");
        let mut conv = FrameConverter::new(w, h, PixelFormat::Yuv420p).expect("converter");
        for i in 0..12 {
            conv.rgba_mut().copy_from_slice(&noise(w, h, i + 1));
            let mut yuv = conv.convert().expect("converts");
            enc.encode(&mut yuv, i as i64).expect("encodes");
            assert!(yuv.is_writable(), "frame {i} is still referenced");
        }
        assert_eq!(enc.finish().expect("finishes"), 12);
    }

    /// The exact bytes, so any change to the converter is a decision (bump
    /// `BITSTREAM_VERSION`: cached chunks were made with the old bytes).
    #[test]
    fn golden_bytes() {
        use sha2::{Digest, Sha256};
        let (w, h) = (64, 36);
        let mut rgba = noise(w, h, 42);
        // A smooth gradient in the lower half, where rounding shows.
        for y in h as usize / 2..h as usize {
            for x in 0..w as usize {
                let p = (y * w as usize + x) * 4;
                rgba[p..p + 4].copy_from_slice(&[
                    (x * 4) as u8,
                    (y * 7) as u8,
                    (255 - x * 3) as u8,
                    255,
                ]);
            }
        }
        let hex = |f| hex::encode(Sha256::digest(ours(&rgba, w, h, f)));
        assert_eq!(
            hex(PixelFormat::Yuv420p),
            "42c8e4b7c7c9e0350c8db6eb4b69cc58fbe3234ad986fe422d8e0ef0a5186ce5"
        );
        assert_eq!(
            hex(PixelFormat::Yuv444p),
            "85b4be942fea7a25c347a0abd766b1231ec143beaf4c38bbf67d30a78ded9a55"
        );
    }
}
