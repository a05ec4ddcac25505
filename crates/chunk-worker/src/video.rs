//! Video layers' decoding with FFmpeg: the worker's implementation of the
//! scene's [`VideoDecoders`].
//!
//! The scene decides which frame shows (exact times, in integers); this
//! module only walks a file forward from keyframes and converts frames:
//!
//! - timestamps count from the stream's first frame (`start_time`);
//! - a seek asks the demuxer for the keyframe at or before the time and
//!   checks the first decoded frame: if it is still after the time (an
//!   imprecise index), it seeks a second earlier, then two, … so the frame
//!   shown never depends on where decoding started;
//! - one decoder thread per stream, frames looked ahead by one to know each
//!   frame's interval, so memory is a few frames whatever the file's length;
//! - YUV is converted to RGB in integers ([`yuv_to_rgba`]): BT.601, BT.709
//!   or BT.2020 by the frame's matrix (unstated: BT.709 from 720 lines up,
//!   BT.601 below, as players do), limited or full range, chroma taken from
//!   the co-sited sample; other pixel formats are first brought to 8-bit
//!   planar YUV by swscale with bit-exact flags, so every machine gives the
//!   same bytes;
//! - rotation metadata (90°, 180°, 270°) is applied as players apply it;
//! - alpha (VP9 with alpha, decoded by `libvpx-vp9` as FFmpeg's own VP9 decoder drops it; ProRes 4444)
//!   is kept, premultiplied.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use composition::scene::{
    FrameTimes, MAX_VIDEO_DIMENSION, MAX_VIDEO_PIXELS, VideoDecoders, VideoInfo, VideoSource,
    VideoStream,
};
use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg::util::color;
use ffmpeg_next as ffmpeg;

use crate::convert::Isa;

/// FFmpeg's microseconds (`AV_TIME_BASE`), the unit of container seeks.
const MICROS: i128 = 1_000_000;

/// How many times a seek backs off (1 s, 2 s, 4 s, … earlier) before it
/// decodes from the file's start.
const SEEK_RETRIES: u32 = 6;

/// Decodes video layers with FFmpeg.
#[derive(Debug, Default, Clone, Copy)]
pub struct FfmpegVideo;

impl FfmpegVideo {
    /// The decoders, shareable with [`composition::scene::SceneBundle::open_with_video`].
    pub fn shared() -> Arc<dyn VideoDecoders> {
        Arc::new(FfmpegVideo)
    }
}

impl VideoDecoders for FfmpegVideo {
    fn open(&self, path: &Path, _rel: &str) -> Result<Arc<dyn VideoSource>, String> {
        let _ = ffmpeg::init();
        let source = Source::open(path)?;
        // Decode the first frame now, so a file that opens but does not
        // decode is refused when the bundle opens, not mid-render.
        let mut stream = source.stream()?;
        stream
            .next_frame()?
            .ok_or_else(|| "has no video frames".to_owned())?;
        stream.rgba()?;
        Ok(Arc::new(source))
    }
}

/// Clockwise rotation a player applies, in quarter turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rotation {
    None,
    Quarter,
    Half,
    ThreeQuarters,
}

#[derive(Debug)]
struct Source {
    path: PathBuf,
    index: usize,
    /// The first frame's timestamp in the stream's time base.
    start: i64,
    /// Coded size.
    coded: (u32, u32),
    rotation: Rotation,
    /// VP9 with an alpha channel (WebM `alpha_mode`): FFmpeg's own VP9
    /// decoder drops the alpha, libvpx's keeps it.
    vp9_alpha: bool,
    info: VideoInfo,
}

impl Source {
    fn open(path: &Path) -> Result<Source, String> {
        crate::ffmpeg_path(path)?;
        let input = ffmpeg::format::input(&path).map_err(|e| format!("not a video file ({e})"))?;
        let stream = input
            .streams()
            .best(ffmpeg::media::Type::Video)
            .ok_or("has no video stream")?;
        let params = stream.parameters();
        let codec_id = params.id();
        let decoder = ffmpeg::codec::context::Context::from_parameters(params)
            .and_then(|c| c.decoder().video())
            .map_err(|e| format!("its codec {codec_id:?} cannot be decoded here ({e})"))?;
        let (w, h) = (decoder.width(), decoder.height());
        if w == 0 || h == 0 {
            return Err("states no frame size".into());
        }
        if w > MAX_VIDEO_DIMENSION
            || h > MAX_VIDEO_DIMENSION
            || u64::from(w) * u64::from(h) > MAX_VIDEO_PIXELS
        {
            return Err(format!(
                "{w}×{h} is larger than the limit: at most {MAX_VIDEO_DIMENSION} pixels a side and {MAX_VIDEO_PIXELS} pixels"
            ));
        }
        let tb = stream.time_base();
        let (num, den) = (
            u32::try_from(tb.numerator()).ok().filter(|n| *n > 0),
            u32::try_from(tb.denominator()).ok().filter(|d| *d > 0),
        );
        let (Some(num), Some(den)) = (num, den) else {
            return Err(format!("has an invalid time base {tb}"));
        };
        let start = match stream.start_time() {
            ffmpeg::ffi::AV_NOPTS_VALUE => 0,
            s => s,
        };
        let duration = match stream.duration() {
            d if d > 0 && d != ffmpeg::ffi::AV_NOPTS_VALUE => d,
            _ => {
                // The container's duration (µs), in the stream's ticks.
                let us = input.duration();
                if us <= 0 {
                    return Err("states no duration".into());
                }
                i64::try_from(i128::from(us) * i128::from(den) / (i128::from(num) * MICROS))
                    .map_err(|_| "states an impossible duration".to_owned())?
            }
        };
        let rotation = rotation(&stream);
        let vp9_alpha =
            codec_id == ffmpeg::codec::Id::VP9 && stream.metadata().get("alpha_mode") == Some("1");
        let (dw, dh) = match rotation {
            Rotation::Quarter | Rotation::ThreeQuarters => (h, w),
            _ => (w, h),
        };
        let has_audio = input
            .streams()
            .any(|s| s.parameters().medium() == ffmpeg::media::Type::Audio);
        let info = VideoInfo {
            width: dw,
            height: dh,
            time_base: (num, den),
            duration_ticks: duration,
            has_audio,
            // Grey + alpha or colour + alpha components, or VP9's alpha
            // side stream.
            alpha: vp9_alpha
                || decoder
                    .format()
                    .descriptor()
                    .is_some_and(|d| matches!(d.nb_components(), 2 | 4)),
            describe: format!("{codec_id:?} {:?} {w}×{h}", decoder.format()),
        };
        Ok(Source {
            path: path.to_owned(),
            index: stream.index(),
            start,
            coded: (w, h),
            rotation,
            vp9_alpha,
            info,
        })
    }
}

/// The rotation a player applies, from the stream's display matrix (whole
/// quarter turns; anything else shows unrotated).
fn rotation(stream: &ffmpeg::format::stream::Stream<'_>) -> Rotation {
    let Some(sd) = stream
        .side_data()
        .find(|sd| sd.kind() == ffmpeg::codec::packet::side_data::Type::DisplayMatrix)
    else {
        return Rotation::None;
    };
    let data = sd.data();
    if data.len() < 36 {
        return Rotation::None;
    }
    let m = |i: usize| {
        let b = [
            data[i * 4],
            data[i * 4 + 1],
            data[i * 4 + 2],
            data[i * 4 + 3],
        ];
        i32::from_ne_bytes(b)
    };
    // The matrix's first column is (cos θ, sin θ)·scale for a
    // counter-clockwise θ; players turn the picture by −θ, i.e. clockwise
    // by atan2(m1, m0).
    match (m(0).signum(), m(1).signum()) {
        (0, 1) => Rotation::Quarter,
        (-1, 0) => Rotation::Half,
        (0, -1) => Rotation::ThreeQuarters,
        _ => Rotation::None,
    }
}

impl VideoSource for Source {
    fn info(&self) -> &VideoInfo {
        &self.info
    }

    fn stream(&self) -> Result<Box<dyn VideoStream>, String> {
        Ok(Box::new(Stream::open(self)?))
    }
}

/// An open input and decoder walking one file forward.
struct Stream {
    input: ffmpeg::format::context::Input,
    decoder: ffmpeg::decoder::Video,
    index: usize,
    start: i64,
    tb: (u32, u32),
    coded: (u32, u32),
    rotation: Rotation,
    /// The frame `next_frame` returned, and the one after it.
    current: Option<(i64, ffmpeg::frame::Video)>,
    ahead: Option<(i64, ffmpeg::frame::Video)>,
    /// Whether the end of the input was given to the decoder.
    drained: bool,
    /// To 8-bit planar YUV, for pixel formats converted in two steps.
    scaler: Option<(Pixel, scaling::Context)>,
}

// SAFETY: `input`, `decoder`, the frames and `scaler` are owned by this
// `Stream` alone (nothing else holds their pointers; the decoder's context
// was made from parameters, so it has no shared owner), and FFmpeg allows a
// context to move between threads as long as calls do not overlap, which
// `&mut self` guarantees (the scene's cursor keeps a stream under a lock).
#[allow(unsafe_code)] // ffmpeg-next's contexts are not `Send`; see SAFETY
unsafe impl Send for Stream {}

impl Stream {
    fn open(s: &Source) -> Result<Stream, String> {
        crate::ffmpeg_path(&s.path)?;
        let input = ffmpeg::format::input(&s.path).map_err(|e| format!("cannot open: {e}"))?;
        let stream = input
            .stream(s.index)
            .ok_or("the video stream disappeared")?;
        let mut ctx = ffmpeg::codec::context::Context::from_parameters(stream.parameters())
            .map_err(|e| format!("cannot set up its decoder: {e}"))?;
        // One thread: the render threads already use the cores, and frame
        // threading would hold a frame per thread.
        ctx.set_threading(ffmpeg::threading::Config {
            kind: ffmpeg::threading::Type::Slice,
            count: 1,
            ..ffmpeg::threading::Config::default()
        });
        let decoder = match ffmpeg::decoder::find_by_name("libvpx-vp9").filter(|_| s.vp9_alpha) {
            Some(libvpx) => ctx.decoder().open_as(libvpx).and_then(|o| o.video()),
            None => ctx.decoder().video(),
        }
        .map_err(|e| format!("cannot open its decoder: {e}"))?;
        Ok(Stream {
            input,
            decoder,
            index: s.index,
            start: s.start,
            tb: s.info.time_base,
            coded: s.coded,
            rotation: s.rotation,
            current: None,
            ahead: None,
            drained: false,
            scaler: None,
        })
    }

    /// The next frame the decoder gives, with its timestamp from the first
    /// frame; `None` at the end.
    fn decode(&mut self) -> Result<Option<(i64, ffmpeg::frame::Video)>, String> {
        loop {
            let mut frame = ffmpeg::frame::Video::empty();
            match self.decoder.receive_frame(&mut frame) {
                Ok(()) => {
                    let Some(ts) = frame.timestamp().or(frame.pts()) else {
                        continue;
                    };
                    if (frame.width(), frame.height()) != self.coded {
                        return Err(format!(
                            "changes frame size mid-stream ({}×{} after {}×{})",
                            frame.width(),
                            frame.height(),
                            self.coded.0,
                            self.coded.1
                        ));
                    }
                    return Ok(Some((ts - self.start, frame)));
                }
                Err(ffmpeg::Error::Eof) => return Ok(None),
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::error::EAGAIN => {}
                Err(e) => return Err(format!("cannot be decoded: {e}")),
            }
            if self.drained {
                return Ok(None);
            }
            // Feed the decoder the next packet of the video stream.
            loop {
                let mut packet = ffmpeg::Packet::empty();
                match packet.read(&mut self.input) {
                    Ok(()) if packet.stream() == self.index => {
                        self.decoder
                            .send_packet(&packet)
                            .map_err(|e| format!("cannot be decoded: {e}"))?;
                        break;
                    }
                    Ok(()) => {}
                    Err(ffmpeg::Error::Eof) => {
                        self.drained = true;
                        self.decoder
                            .send_eof()
                            .map_err(|e| format!("cannot be decoded: {e}"))?;
                        break;
                    }
                    Err(e) => return Err(format!("cannot be read: {e}")),
                }
            }
        }
    }

    /// A container seek to the keyframe at or before `us` microseconds.
    fn seek_us(&mut self, us: i64) -> Result<(), String> {
        self.input
            .seek(us, ..us)
            .map_err(|e| format!("cannot seek: {e}"))?;
        self.decoder.flush();
        self.drained = false;
        self.current = None;
        self.ahead = None;
        Ok(())
    }
}

impl VideoStream for Stream {
    fn seek(&mut self, pts: i64) -> Result<(), String> {
        let (num, den) = (i128::from(self.tb.0), i128::from(self.tb.1));
        let abs = i128::from(self.start) + i128::from(pts);
        let us = i64::try_from((abs * num * MICROS).div_euclid(den)).unwrap_or(0);
        let mut back = 0i64;
        for attempt in 0..=SEEK_RETRIES {
            let at = if attempt == SEEK_RETRIES {
                i64::MIN / 2
            } else {
                us.saturating_sub(back)
            };
            self.seek_us(at)?;
            let first = self.decode()?;
            // The demuxer's index can be imprecise: decoding must start at
            // or before `pts`, or the frame shown would depend on the seek.
            let landed = first.as_ref().is_none_or(|(ts, _)| *ts <= pts);
            self.ahead = first;
            if landed || attempt == SEEK_RETRIES {
                return Ok(());
            }
            back = if back == 0 { MICROS as i64 } else { back * 2 };
        }
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<FrameTimes>, String> {
        let next = match self.ahead.take() {
            Some(f) => Some(f),
            None => self.decode()?,
        };
        let Some((pts, frame)) = next else {
            self.current = None;
            return Ok(None);
        };
        // The frame after it, skipping any that would not be after it.
        let mut ahead = self.decode()?;
        while ahead.as_ref().is_some_and(|(p, _)| *p <= pts) {
            ahead = self.decode()?;
        }
        let end = ahead.as_ref().map(|(p, _)| *p);
        self.ahead = ahead;
        self.current = Some((pts, frame));
        Ok(Some(FrameTimes { pts, end }))
    }

    fn rgba(&mut self) -> Result<Vec<u8>, String> {
        let Some((_, frame)) = &self.current else {
            return Err("internal: no frame decoded".into());
        };
        let (w, h) = self.coded;
        let matrix = Matrix::of(frame.color_space(), h);
        let mut full = frame.color_range() == color::Range::JPEG;
        let converted;
        let planar = match frame.format() {
            Pixel::YUVJ420P | Pixel::YUVJ422P | Pixel::YUVJ444P => {
                full = true;
                frame
            }
            Pixel::YUV420P | Pixel::YUV422P | Pixel::YUV444P | Pixel::YUVA420P => frame,
            other => {
                let alpha = other.descriptor().is_some_and(|d| d.nb_components() == 4);
                let target = if alpha {
                    Pixel::YUVA444P
                } else {
                    Pixel::YUV444P
                };
                if self.scaler.as_ref().is_none_or(|(f, _)| *f != other) {
                    let ctx = scaling::Context::get(
                        other,
                        w,
                        h,
                        target,
                        w,
                        h,
                        scaling::Flags::BITEXACT
                            | scaling::Flags::ACCURATE_RND
                            | scaling::Flags::POINT,
                    )
                    .map_err(|e| format!("pixel format {other:?} cannot be converted: {e}"))?;
                    self.scaler = Some((other, ctx));
                }
                let mut out = ffmpeg::frame::Video::new(target, w, h);
                if let Some((_, s)) = &mut self.scaler {
                    s.run(frame, &mut out)
                        .map_err(|e| format!("pixel format {other:?} cannot be converted: {e}"))?;
                }
                converted = out;
                &converted
            }
        };
        let planes = Planes::of(planar)?;
        let mut rgba = vec![0u8; w as usize * h as usize * 4];
        yuv_to_rgba(&planes, matrix, full, &mut rgba);
        Ok(rotate(rgba, (w, h), self.rotation))
    }
}

/// 8-bit planar YUV(A) of one frame.
pub struct Planes<'a> {
    /// Width and height in pixels.
    pub size: (u32, u32),
    /// Y, U, V (and A) rows with their strides.
    pub planes: Vec<(&'a [u8], usize)>,
    /// Chroma subsampling as shifts (`(1, 1)` for 4:2:0).
    pub chroma_shift: (u32, u32),
}

impl<'a> Planes<'a> {
    fn of(f: &'a ffmpeg::frame::Video) -> Result<Planes<'a>, String> {
        let shift = match f.format() {
            Pixel::YUV420P | Pixel::YUVJ420P | Pixel::YUVA420P => (1, 1),
            Pixel::YUV422P | Pixel::YUVJ422P => (1, 0),
            Pixel::YUV444P | Pixel::YUVJ444P | Pixel::YUVA444P => (0, 0),
            other => return Err(format!("internal: {other:?} is not planar YUV")),
        };
        let n = if matches!(f.format(), Pixel::YUVA420P | Pixel::YUVA444P) {
            4
        } else {
            3
        };
        Ok(Planes {
            size: (f.width(), f.height()),
            planes: (0..n).map(|i| (f.data(i), f.stride(i))).collect(),
            chroma_shift: shift,
        })
    }
}

/// A YUV → RGB matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matrix {
    /// ITU-R BT.601 (SD).
    Bt601,
    /// ITU-R BT.709 (HD).
    Bt709,
    /// ITU-R BT.2020, non-constant luminance.
    Bt2020,
}

impl Matrix {
    /// The frame's matrix; unstated, BT.709 from 720 lines up and BT.601
    /// below, as players guess.
    fn of(space: color::Space, height: u32) -> Matrix {
        match space {
            color::Space::BT709 => Matrix::Bt709,
            color::Space::BT470BG | color::Space::SMPTE170M | color::Space::FCC => Matrix::Bt601,
            color::Space::BT2020NCL | color::Space::BT2020CL => Matrix::Bt2020,
            _ if height >= 720 => Matrix::Bt709,
            _ => Matrix::Bt601,
        }
    }

    /// `(Kr, Kb)` in 1/10000.
    fn k(self) -> (i64, i64) {
        match self {
            Matrix::Bt601 => (2990, 1140),
            Matrix::Bt709 => (2126, 722),
            Matrix::Bt2020 => (2627, 593),
        }
    }
}

/// Fixed-point coefficients (16 fractional bits), computed with integers
/// only so they are the same everywhere. Each is below 2^18, so with 8-bit
/// samples every sum stays far inside `i32`.
struct Coeffs {
    y_off: i32,
    y_mul: i32,
    cr_r: i32,
    cb_g: i32,
    cr_g: i32,
    cb_b: i32,
}

impl Coeffs {
    fn new(m: Matrix, full: bool) -> Coeffs {
        const ONE: i64 = 1 << 16;
        const K: i64 = 10_000;
        let (kr, kb) = m.k();
        let kg = K - kr - kb;
        // Limited range: Y in 16-235, chroma in 16-240 around 128.
        let (y_off, y_mul, c_num, c_den) = if full {
            (0, ONE, 255, 255)
        } else {
            (16, (255 * ONE + 109) / 219, 255, 224)
        };
        // Every coefficient is below 2^18 (the largest, BT.2020's Cb→B in
        // limited range, is about 1.1 · 2^17), so the narrowing is exact.
        let round = |n: i64, d: i64| ((2 * n + d) / (2 * d)) as i32;
        Coeffs {
            y_off,
            y_mul: y_mul as i32,
            cr_r: round(2 * (K - kr) * ONE * c_num, K * c_den),
            cb_g: round(2 * kb * (K - kb) * ONE * c_num, K * kg * c_den),
            cr_g: round(2 * kr * (K - kr) * ONE * c_num, K * kg * c_den),
            cb_b: round(2 * (K - kb) * ONE * c_num, K * c_den),
        }
    }
}

/// Converts planar YUV(A) to premultiplied RGBA8 in integers: the same
/// bytes on every machine.
///
/// Row by row, a pair of pixels per chroma sample when chroma is halved
/// horizontally, in `i32` (every intermediate stays below 2^26): plain
/// loops, or on x86-64 with AVX2 the same arithmetic in intrinsics (about
/// 1 ms of CPU per 1080p frame instead of 9), which the tests compare byte
/// for byte.
pub fn yuv_to_rgba(p: &Planes<'_>, m: Matrix, full: bool, out: &mut [u8]) {
    yuv_to_rgba_on(Isa::detect(), p, m, full, out);
}

/// [`yuv_to_rgba`] on a chosen instruction set.
fn yuv_to_rgba_on(isa: Isa, p: &Planes<'_>, m: Matrix, full: bool, out: &mut [u8]) {
    let c = Coeffs::new(m, full);
    let (w, h) = (p.size.0 as usize, p.size.1 as usize);
    let (sx, sy) = p.chroma_shift;
    let cw = (w + (1 << sx) - 1) >> sx;
    fn row((plane, stride): (&[u8], usize), y: usize, len: usize) -> &[u8] {
        &plane[y * stride..y * stride + len]
    }
    for (y, out_row) in out.chunks_exact_mut(w * 4).take(h).enumerate() {
        let cy = y >> sy;
        let ys = row(p.planes[0], y, w);
        let us = row(p.planes[1], cy, cw);
        let vs = row(p.planes[2], cy, cw);
        match isa {
            Isa::Baseline if sx == 1 => convert_row::<2>(&c, ys, us, vs, out_row),
            Isa::Baseline => convert_row::<1>(&c, ys, us, vs, out_row),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                #[allow(unsafe_code)] // a target_feature function; see SAFETY
                // SAFETY: `Isa::Avx2` is only made by `Isa::detect` on a CPU
                // that has AVX2 (and by tests after the same check).
                unsafe {
                    avx2::convert_row(&c, ys, us, vs, out_row, sx == 1)
                }
            }
        }
        if let Some(&a) = p.planes.get(3) {
            premultiply(row(a, y, w), out_row);
        }
    }
}

/// Converts one row, `N` pixels per chroma sample (1 or 2), to opaque RGBA.
fn convert_row<const N: usize>(c: &Coeffs, ys: &[u8], us: &[u8], vs: &[u8], out: &mut [u8]) {
    let whole = ys.len() / N * N;
    let (ys, y_tail) = ys.split_at(whole);
    let (out, out_tail) = out.split_at_mut(whole * 4);
    let pixels = out.chunks_exact_mut(4 * N).zip(ys.chunks_exact(N));
    for ((o, y), (&u, &v)) in pixels.zip(us.iter().zip(vs)) {
        let ch = Chroma::new(c, u, v);
        for (o, &y) in o.chunks_exact_mut(4).zip(y) {
            ch.put(c, y, o);
        }
    }
    // An odd width's last pixel has a chroma sample of its own.
    if let (Some(&u), Some(&v)) = (us.get(whole / N), vs.get(whole / N)) {
        let ch = Chroma::new(c, u, v);
        for (o, &y) in out_tail.chunks_exact_mut(4).zip(y_tail) {
            ch.put(c, y, o);
        }
    }
}

/// `convert_row` in AVX2 intrinsics, 8 pixels per register: the same `i32`
/// products and sums (`_mm256_mullo_epi32`, exact), and the clamp to
/// 0..=255 done by the saturating packs that gather the bytes.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm_cvtsi64_si128, _mm256_add_epi32, _mm256_cvtepu8_epi32, _mm256_mullo_epi32,
        _mm256_packs_epi32, _mm256_packus_epi16, _mm256_permutevar8x32_epi32, _mm256_set1_epi32,
        _mm256_setr_epi8, _mm256_setr_epi32, _mm256_shuffle_epi8, _mm256_srai_epi32,
        _mm256_sub_epi32,
    };

    use super::Coeffs;
    use crate::simd::store;

    /// 8 samples zero-extended to 32-bit lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn widen(bytes: &[u8; 8]) -> __m256i {
        _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(i64::from_le_bytes(*bytes)))
    }

    /// `Coeffs` in every lane.
    #[derive(Clone, Copy)]
    struct Lanes {
        y_off: __m256i,
        y_mul: __m256i,
        cr_r: __m256i,
        cb_g: __m256i,
        cr_g: __m256i,
        cb_b: __m256i,
    }

    impl Lanes {
        #[inline]
        #[target_feature(enable = "avx2")]
        fn new(c: &Coeffs) -> Lanes {
            Lanes {
                y_off: _mm256_set1_epi32(c.y_off),
                y_mul: _mm256_set1_epi32(c.y_mul),
                cr_r: _mm256_set1_epi32(c.cr_r),
                cb_g: _mm256_set1_epi32(c.cb_g),
                cr_g: _mm256_set1_epi32(c.cr_g),
                cb_b: _mm256_set1_epi32(c.cb_b),
            }
        }

        /// The shares of R, G and B of 8 chroma samples, as `Chroma::new`.
        #[inline]
        #[target_feature(enable = "avx2")]
        fn chroma(self, u: &[u8; 8], v: &[u8; 8]) -> [__m256i; 3] {
            let (half, mid) = (_mm256_set1_epi32(1 << 15), _mm256_set1_epi32(128));
            let cb = _mm256_sub_epi32(widen(u), mid);
            let cr = _mm256_sub_epi32(widen(v), mid);
            let g = _mm256_sub_epi32(half, _mm256_mullo_epi32(self.cb_g, cb));
            [
                _mm256_add_epi32(_mm256_mullo_epi32(self.cr_r, cr), half),
                _mm256_sub_epi32(g, _mm256_mullo_epi32(self.cr_g, cr)),
                _mm256_add_epi32(_mm256_mullo_epi32(self.cb_b, cb), half),
            ]
        }

        /// 8 opaque RGBA pixels from their luma and chroma shares, as
        /// `Chroma::put`.
        #[inline]
        #[target_feature(enable = "avx2")]
        fn put(self, y: &[u8; 8], [r, g, b]: [__m256i; 3], out: &mut [u8; 32]) {
            let luma = _mm256_mullo_epi32(_mm256_sub_epi32(widen(y), self.y_off), self.y_mul);
            let channel = |share| _mm256_srai_epi32::<16>(_mm256_add_epi32(luma, share));
            // Saturating to i16, then to u8: exactly `clamp(0, 255)`.
            let rg = _mm256_packs_epi32(channel(r), channel(g));
            let ba = _mm256_packs_epi32(channel(b), _mm256_set1_epi32(255));
            // Per 128-bit lane R0-3 G0-3 B0-3 A0-3, transposed to pixels.
            let planar = _mm256_packus_epi16(rg, ba);
            #[rustfmt::skip]
            let order = _mm256_setr_epi8(
                0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
            );
            store(out, _mm256_shuffle_epi8(planar, order));
        }
    }

    /// 16 pixels sharing 8 chroma samples in pairs.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn block_pairs(k: Lanes, y: &[u8; 16], u: &[u8; 8], v: &[u8; 8], out: &mut [u8; 64]) {
        let [r, g, b] = k.chroma(u, v);
        let first = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
        let second = _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7);
        let (ys, _) = y.as_chunks::<8>();
        let (outs, _) = out.as_chunks_mut::<32>();
        let pairs = |lanes| {
            [
                _mm256_permutevar8x32_epi32(r, lanes),
                _mm256_permutevar8x32_epi32(g, lanes),
                _mm256_permutevar8x32_epi32(b, lanes),
            ]
        };
        k.put(&ys[0], pairs(first), &mut outs[0]);
        k.put(&ys[1], pairs(second), &mut outs[1]);
    }

    /// One row, chroma halved horizontally (`pairs`: `us` and `vs` hold
    /// `ys.len() / 2` samples, rounded up) or not (as many as `ys`).
    #[target_feature(enable = "avx2")]
    pub(super) fn convert_row(
        c: &Coeffs,
        ys: &[u8],
        us: &[u8],
        vs: &[u8],
        out: &mut [u8],
        pairs: bool,
    ) {
        let k = Lanes::new(c);
        // Pixels and chroma samples per block.
        let (n, cn) = if pairs { (16, 8) } else { (8, 8) };
        let blocks = ys.len() / n;
        for i in 0..blocks {
            let y = &ys[i * n..][..n];
            let (u, v) = (&us[i * cn..][..cn], &vs[i * cn..][..cn]);
            let o = &mut out[i * n * 4..][..n * 4];
            block(k, y, u, v, o, pairs);
        }
        let tail = ys.len() - blocks * n;
        if tail > 0 {
            // The last pixels, zero-padded to a block: the lanes are
            // independent, so the padding changes none of them.
            let (mut y, mut u, mut v, mut o) = ([0; 16], [0; 8], [0; 8], [0; 64]);
            y[..tail].copy_from_slice(&ys[blocks * n..]);
            let chroma = (us.len() - blocks * cn).min(cn);
            u[..chroma].copy_from_slice(&us[blocks * cn..][..chroma]);
            v[..chroma].copy_from_slice(&vs[blocks * cn..][..chroma]);
            block(k, &y[..n], &u, &v, &mut o[..n * 4], pairs);
            out[blocks * n * 4..].copy_from_slice(&o[..tail * 4]);
        }
    }

    /// One block of `convert_row`: 16 pixels in pairs or 8 alone.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn block(k: Lanes, y: &[u8], u: &[u8], v: &[u8], out: &mut [u8], pairs: bool) {
        let (u, v) = (u.as_chunks::<8>().0, v.as_chunks::<8>().0);
        if pairs {
            let (y, out) = (y.as_chunks::<16>().0, out.as_chunks_mut::<64>().0);
            block_pairs(k, &y[0], &u[0], &v[0], &mut out[0]);
        } else {
            let (y, out) = (y.as_chunks::<8>().0, out.as_chunks_mut::<32>().0);
            k.put(&y[0], k.chroma(&u[0], &v[0]), &mut out[0]);
        }
    }
}

/// One chroma sample's share of R, G and B, with the rounding half.
struct Chroma {
    r: i32,
    g: i32,
    b: i32,
}

impl Chroma {
    fn new(c: &Coeffs, u: u8, v: u8) -> Chroma {
        const HALF: i32 = 1 << 15;
        let (cb, cr) = (i32::from(u) - 128, i32::from(v) - 128);
        Chroma {
            r: c.cr_r * cr + HALF,
            g: HALF - c.cb_g * cb - c.cr_g * cr,
            b: c.cb_b * cb + HALF,
        }
    }

    fn put(&self, c: &Coeffs, y: u8, o: &mut [u8]) {
        let luma = (i32::from(y) - c.y_off) * c.y_mul;
        let clamp = |v: i32| (v >> 16).clamp(0, 255) as u8;
        o[0] = clamp(luma + self.r);
        o[1] = clamp(luma + self.g);
        o[2] = clamp(luma + self.b);
        o[3] = 255;
    }
}

/// Sets a converted row's alpha and premultiplies its colour by it.
fn premultiply(alpha: &[u8], out: &mut [u8]) {
    for (o, &a) in out.chunks_exact_mut(4).zip(alpha) {
        let pre = |v: u8| ((u16::from(v) * u16::from(a) + 127) / 255) as u8;
        o[0] = pre(o[0]);
        o[1] = pre(o[1]);
        o[2] = pre(o[2]);
        o[3] = a;
    }
}

/// Turns an RGBA frame of `size` clockwise by `r`.
fn rotate(rgba: Vec<u8>, (w, h): (u32, u32), r: Rotation) -> Vec<u8> {
    let (w, h) = (w as usize, h as usize);
    let px = |x: usize, y: usize| &rgba[(y * w + x) * 4..(y * w + x) * 4 + 4];
    let mut out = Vec::with_capacity(rgba.len());
    match r {
        Rotation::None => return rgba,
        Rotation::Half => {
            for y in (0..h).rev() {
                for x in (0..w).rev() {
                    out.extend_from_slice(px(x, y));
                }
            }
        }
        // Output is h wide, w tall: output (x', y') shows source
        // (y', h − 1 − x') turning clockwise, (w − 1 − y', x') counter.
        Rotation::Quarter => {
            for y in 0..w {
                for x in 0..h {
                    out.extend_from_slice(px(y, h - 1 - x));
                }
            }
        }
        Rotation::ThreeQuarters => {
            for y in 0..w {
                for x in 0..h {
                    out.extend_from_slice(px(w - 1 - y, x));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(y: u8, u: u8, v: u8, m: Matrix, full: bool) -> [u8; 4] {
        let (yp, up, vp) = ([y], [u], [v]);
        let p = Planes {
            size: (1, 1),
            planes: vec![(&yp[..], 1), (&up[..], 1), (&vp[..], 1)],
            chroma_shift: (0, 0),
        };
        let mut out = [0u8; 4];
        yuv_to_rgba(&p, m, full, &mut out);
        out
    }

    #[test]
    fn limited_and_full_range_reach_black_and_white() {
        for m in [Matrix::Bt601, Matrix::Bt709, Matrix::Bt2020] {
            assert_eq!(convert(16, 128, 128, m, false), [0, 0, 0, 255]);
            assert_eq!(convert(235, 128, 128, m, false), [255, 255, 255, 255]);
            assert_eq!(convert(0, 128, 128, m, true), [0, 0, 0, 255]);
            assert_eq!(convert(255, 128, 128, m, true), [255, 255, 255, 255]);
        }
    }

    #[test]
    fn primaries_convert_by_their_matrix() {
        // BT.709 limited red (Y 63, Cb 102, Cr 240) and BT.601 limited red
        // (Y 81, Cb 90, Cr 240), as ffmpeg's colour tables give them.
        let red709 = convert(63, 102, 240, Matrix::Bt709, false);
        let red601 = convert(81, 90, 240, Matrix::Bt601, false);
        for red in [red709, red601] {
            assert!(red[0] >= 253 && red[1] <= 2 && red[2] <= 2, "{red:?}");
        }
        // The same YUV is a different colour in the other matrix.
        assert_ne!(convert(63, 102, 240, Matrix::Bt601, false), red709);
    }

    /// Makes `n` samples of a test plane from a seed.
    type Input = fn(usize, u32) -> Vec<u8>;

    #[test]
    fn every_instruction_set_gives_the_same_bytes() {
        let isa = Isa::detect();
        if isa == Isa::Baseline {
            // Nothing to compare on this CPU: the baseline is the only path.
            return;
        }
        // 4:2:0, 4:2:2 and 4:4:4; whole blocks and every kind of remainder
        // (odd widths give the last pixel a chroma sample of its own).
        let widths = [1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 66, 130, 322, 1921];
        for shift in [(1, 1), (1, 0), (0, 0)] {
            for &w in &widths {
                for h in 1..=4 {
                    let cw = (w + (1 << shift.0) - 1) >> shift.0;
                    let ch = (h + (1 << shift.1) - 1) >> shift.1;
                    let inputs: [(&str, Input); 4] = [
                        ("zeros", |n, _| vec![0; n]),
                        ("255s", |n, _| vec![255; n]),
                        ("alternating", |n, _| {
                            (0..n).map(|i| (i % 2) as u8 * 255).collect()
                        }),
                        ("noise", testkit::noise),
                    ];
                    for (name, input) in inputs {
                        let (y, u, v) = (input(w * h, 1), input(cw * ch, 2), input(cw * ch, 3));
                        // With and without an alpha plane (premultiplied after).
                        let a = testkit::noise(w * h, 4);
                        for alpha in [false, true] {
                            let mut planes = vec![(&y[..], w), (&u[..], cw), (&v[..], cw)];
                            if alpha {
                                planes.push((&a[..], w));
                            }
                            let p = Planes {
                                size: (w as u32, h as u32),
                                planes,
                                chroma_shift: shift,
                            };
                            for m in [Matrix::Bt601, Matrix::Bt709, Matrix::Bt2020] {
                                for full in [false, true] {
                                    let mut want = vec![0; w * h * 4];
                                    let mut got = vec![1; w * h * 4];
                                    yuv_to_rgba_on(Isa::Baseline, &p, m, full, &mut want);
                                    yuv_to_rgba_on(isa, &p, m, full, &mut got);
                                    assert!(
                                        want == got,
                                        "{name} {w}x{h} {shift:?} {m:?} full {full} alpha {alpha}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn rotation_turns_clockwise() {
        // 2×1: [A, B] → a quarter turn clockwise gives 1×2: A above B.
        let a = [1, 1, 1, 1];
        let b = [2, 2, 2, 2];
        let src = [a, b].concat();
        assert_eq!(
            rotate(src.clone(), (2, 1), Rotation::Quarter),
            [a, b].concat()
        );
        assert_eq!(
            rotate(src.clone(), (2, 1), Rotation::ThreeQuarters),
            [b, a].concat()
        );
        assert_eq!(rotate(src, (2, 1), Rotation::Half), [b, a].concat());
    }
}
