//! Video encoder settings: every value fixed by the request, so chunks
//! rendered on different machines have identical stream parameters.

use serde::{Deserialize, Serialize};

use timebase::Fps;

use crate::{FieldError, VideoCodec};

/// The x264 presets, fastest first.
pub const X264_PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

/// The H.264 levels libx264 accepts, as written.
pub const H264_LEVELS: [&str; 20] = [
    "1", "1b", "1.1", "1.2", "1.3", "2", "2.1", "2.2", "3", "3.1", "3.2", "4", "4.1", "4.2", "5",
    "5.1", "5.2", "6", "6.1", "6.2",
];

/// The largest keyframe interval allowed, in frames.
pub const MAX_KEYINT: u32 = 1000;

/// The most consecutive B-frames allowed (x264's limit).
pub const MAX_BFRAMES: u32 = 16;

/// The most libx264 threads a request may ask for.
pub const MAX_ENCODER_THREADS: u32 = 16;

/// The largest x264 (and x265) constant rate factor.
pub const MAX_CRF: u8 = 51;

/// The largest libvpx-vp9 and SVT-AV1 constant rate factor.
pub const MAX_CRF_VP9_AV1: u8 = 63;

/// The smallest width and height SVT-AV1 encodes (its "Forced Max
/// Height must be at least 64" refusal, measured with SVT-AV1 1.4.1).
pub const MIN_AV1_SIDE: u32 = 64;

/// The fastest GIF that plays at its rate everywhere: GIF delays are whole
/// hundredths of a second, and browsers show a frame of under 2/100 s
/// for 1/10 s instead, so a faster GIF plays several times too slowly.
pub const MAX_GIF_FPS: u32 = 50;

/// The H.264 profile written into the SPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum H264Profile {
    /// Constrained to I/P frames, 4:2:0.
    Baseline,
    /// Main profile, 4:2:0.
    Main,
    /// High profile, 4:2:0 (the default).
    High,
    /// High 4:4:4 Predictive: needed for `yuv444p` and for lossless.
    High444,
}

impl H264Profile {
    /// Every profile, in the order errors list them.
    pub const ALL: [H264Profile; 4] = [
        H264Profile::Baseline,
        H264Profile::Main,
        H264Profile::High,
        H264Profile::High444,
    ];

    /// The name libx264 knows it by.
    pub fn as_str(self) -> &'static str {
        match self {
            H264Profile::Baseline => "baseline",
            H264Profile::Main => "main",
            H264Profile::High => "high",
            H264Profile::High444 => "high444",
        }
    }

    /// The profile named `s` (libx264's names).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// The pixel format of the encoded video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PixelFormat {
    /// 4:2:0, 8 bit (the default; plays everywhere).
    Yuv420p,
    /// 4:4:4, 8 bit (for lossless comparisons).
    Yuv444p,
    /// 4:2:0, 8 bit, with an alpha plane (VP9).
    Yuva420p,
    /// 4:2:2, 10 bit (ProRes 422 HQ).
    Yuv422p10le,
    /// 4:4:4, 10 bit (ProRes 4444).
    Yuv444p10le,
    /// 4:4:4, 10 bit, with a 10-bit alpha plane (ProRes 4444 with alpha).
    Yuva444p10le,
    /// 8-bit indices into a palette of at most 256 colours (GIF).
    Pal8,
}

impl PixelFormat {
    /// Every pixel format, in the order errors list them.
    pub const ALL: [PixelFormat; 7] = [
        PixelFormat::Yuv420p,
        PixelFormat::Yuv444p,
        PixelFormat::Yuva420p,
        PixelFormat::Yuv422p10le,
        PixelFormat::Yuv444p10le,
        PixelFormat::Yuva444p10le,
        PixelFormat::Pal8,
    ];

    /// FFmpeg's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            PixelFormat::Yuv420p => "yuv420p",
            PixelFormat::Yuv444p => "yuv444p",
            PixelFormat::Yuva420p => "yuva420p",
            PixelFormat::Yuv422p10le => "yuv422p10le",
            PixelFormat::Yuv444p10le => "yuv444p10le",
            PixelFormat::Yuva444p10le => "yuva444p10le",
            PixelFormat::Pal8 => "pal8",
        }
    }

    /// The pixel format named `s` (FFmpeg's names).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Whether it carries an alpha plane.
    pub fn has_alpha(self) -> bool {
        matches!(self, PixelFormat::Yuva420p | PixelFormat::Yuva444p10le)
    }

    /// Whether chroma is halved horizontally (4:2:0 and 4:2:2: the width
    /// must be even).
    pub fn halves_width(self) -> bool {
        matches!(
            self,
            PixelFormat::Yuv420p | PixelFormat::Yuva420p | PixelFormat::Yuv422p10le
        )
    }

    /// Whether chroma is halved vertically (4:2:0: the height must be even).
    pub fn halves_height(self) -> bool {
        matches!(self, PixelFormat::Yuv420p | PixelFormat::Yuva420p)
    }

    /// Bytes of one raw `width`x`height` frame in this format (chroma planes
    /// rounded up for odd sizes).
    pub fn frame_bytes(self, width: u32, height: u32) -> u64 {
        let (w, h) = (u64::from(width), u64::from(height));
        let chroma = 2 * w.div_ceil(2) * h.div_ceil(2);
        match self {
            PixelFormat::Yuv420p => w * h + chroma,
            PixelFormat::Yuva420p => 2 * w * h + chroma,
            PixelFormat::Yuv444p => 3 * w * h,
            PixelFormat::Yuv422p10le => 2 * (w * h + 2 * w.div_ceil(2) * h),
            PixelFormat::Yuv444p10le => 6 * w * h,
            PixelFormat::Yuva444p10le => 8 * w * h,
            PixelFormat::Pal8 => w * h,
        }
    }
}

/// The most colours a GIF palette holds.
pub const MAX_GIF_COLORS: usize = 256;

/// The one palette every chunk of a GIF is encoded with, computed once from
/// frames sampled across the render (so chunks join into one GIF with one
/// global colour table). In JSON (and so in cache keys) a hex string of
/// its RGB triplets, `"ff0000 00ff00 …"` without the spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GifPalette(Vec<[u8; 3]>);

impl GifPalette {
    /// A palette of `colors` (1 to [`MAX_GIF_COLORS`]).
    ///
    /// # Errors
    /// A [`FieldError`] on `video.gif_palette` for none or too many.
    pub fn new(colors: Vec<[u8; 3]>) -> Result<Self, FieldError> {
        if colors.is_empty() || colors.len() > MAX_GIF_COLORS {
            return Err(FieldError::new(
                "video.gif_palette",
                format!(
                    "{} colours: a GIF palette holds 1-{MAX_GIF_COLORS}",
                    colors.len()
                ),
            ));
        }
        Ok(GifPalette(colors))
    }

    /// The palette from its packed RGB bytes (3 a colour), as the wire
    /// carries it.
    ///
    /// # Errors
    /// A [`FieldError`] on `video.gif_palette` for a length that is not a
    /// whole number of 1 to 256 colours.
    pub fn from_rgb(bytes: &[u8]) -> Result<Self, FieldError> {
        if !bytes.len().is_multiple_of(3) {
            return Err(FieldError::new(
                "video.gif_palette",
                format!("{} bytes is not a whole number of RGB colours", bytes.len()),
            ));
        }
        Self::new(bytes.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect())
    }

    /// The colours, index order.
    pub fn colors(&self) -> &[[u8; 3]] {
        &self.0
    }

    /// The packed RGB bytes (3 a colour).
    pub fn to_rgb(&self) -> Vec<u8> {
        self.0.concat()
    }
}

impl Serialize for GifPalette {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let hex: String = self.to_rgb().iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&hex)
    }
}

impl<'de> Deserialize<'de> for GifPalette {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let hex = String::deserialize(d)?;
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| D::Error::custom("a GIF palette is hex digits in pairs"))
            })
            .collect::<Result<Vec<u8>, _>>()?;
        GifPalette::from_rgb(&bytes).map_err(D::Error::custom)
    }
}

/// Rate control of the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// x264 constant rate factor, 0-[`MAX_CRF`] (18 by default).
    Crf(u8),
    /// Lossless: x264 constant QP 0 (needs [`H264Profile::High444`]).
    Lossless,
}

/// Video encoder settings. Every value is fixed by the request so chunks from
/// different machines have identical stream parameters: the SPS/PPS depend on
/// them, and so does every byte of the stream.
///
/// The colour description is not configurable: RGBA is converted with the
/// BT.709 matrix to limited ("tv") range and tagged BT.709 primaries,
/// transfer and matrix, with a 1:1 sample aspect ratio.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VideoSettings {
    /// The codec. Left out of the serialized form (and so of cache keys)
    /// when it is H.264, the default.
    #[serde(default, skip_serializing_if = "VideoCodec::is_h264")]
    pub codec: VideoCodec,
    /// Rate control.
    pub quality: Quality,
    /// x264 preset, one of [`X264_PRESETS`].
    pub preset: String,
    /// H.264 profile.
    pub profile: H264Profile,
    /// H.264 level as written (one of [`H264_LEVELS`]); `None` lets x264
    /// choose from size and rate (still deterministic).
    pub level: Option<String>,
    /// Maximum distance between keyframes, in frames (1-[`MAX_KEYINT`]).
    pub keyint: u32,
    /// Maximum consecutive B-frames (0-[`MAX_BFRAMES`]).
    pub bframes: u32,
    /// Pixel format of the encoded video.
    pub pixel_format: PixelFormat,
    /// Encoder threads (1-[`MAX_ENCODER_THREADS`]), or `None` to take
    /// [`VideoSettings::auto_encoder_threads`] for the frame size. The
    /// bitstream depends on this number (x264's frame threads limit motion
    /// search), never on the machine's core count, so it is part of the
    /// request: a coordinator resolves `None` before it computes cache keys,
    /// and a worker given `None` resolves it the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_threads: Option<u32>,
    /// GIF only: the palette every chunk maps its frames to. The
    /// coordinator computes it once per render (left unset in requests it
    /// is given); a worker refuses a GIF chunk without one. Left out of the
    /// serialized form when unset, so other codecs' keys are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gif_palette: Option<GifPalette>,
}

impl Default for VideoSettings {
    /// libx264, CRF 18, `veryfast`, High profile, keyint 250, 3 B-frames,
    /// `yuv420p`, encoder threads chosen from the frame size.
    fn default() -> Self {
        VideoSettings {
            codec: VideoCodec::H264,
            quality: Quality::Crf(18),
            preset: "veryfast".to_owned(),
            profile: H264Profile::High,
            level: None,
            keyint: 250,
            bframes: 3,
            pixel_format: PixelFormat::Yuv420p,
            encoder_threads: None,
            gif_palette: None,
        }
    }
}

impl VideoSettings {
    /// Lossless settings for exact comparisons in tests: QP 0, `yuv444p`,
    /// High 4:4:4 Predictive; otherwise the defaults.
    pub fn lossless() -> Self {
        VideoSettings {
            quality: Quality::Lossless,
            profile: H264Profile::High444,
            pixel_format: PixelFormat::Yuv444p,
            ..VideoSettings::default()
        }
    }

    /// The defaults for `codec`: H.264's ([`VideoSettings::default`]);
    /// CRF 31 for VP9 and 35 for AV1 (their scales run to 63); 10-bit
    /// 4:2:2 (ProRes 422 HQ) for ProRes. `transparent` picks the codec's
    /// pixel format with alpha (`yuva420p` for VP9, `yuva444p10le` for
    /// ProRes 4444).
    ///
    /// # Errors
    /// A [`FieldError`] on `video.transparent` for a codec without alpha.
    pub fn for_codec(codec: VideoCodec, transparent: bool) -> Result<Self, FieldError> {
        let d = VideoSettings::default();
        let mut v = match codec {
            VideoCodec::H264 | VideoCodec::H265 => VideoSettings { codec, ..d },
            VideoCodec::Gif => VideoSettings {
                codec,
                bframes: 0,
                pixel_format: PixelFormat::Pal8,
                ..d
            },
            VideoCodec::Vp9 => VideoSettings {
                codec,
                quality: Quality::Crf(31),
                bframes: 0,
                ..d
            },
            VideoCodec::Av1 => VideoSettings {
                codec,
                quality: Quality::Crf(35),
                bframes: 0,
                ..d
            },
            VideoCodec::Prores => VideoSettings {
                codec,
                bframes: 0,
                pixel_format: PixelFormat::Yuv422p10le,
                ..d
            },
        };
        if transparent {
            v.pixel_format = match codec {
                VideoCodec::Vp9 => PixelFormat::Yuva420p,
                VideoCodec::Prores => PixelFormat::Yuva444p10le,
                _ => {
                    return Err(FieldError::new(
                        "video.transparent",
                        format!(
                            "{codec} video has no alpha channel; use vp9 (.webm) or prores (.mov)"
                        ),
                    ));
                }
            };
        }
        Ok(v)
    }

    /// The encoder threads a `width`x`height` frame gets when the request
    /// leaves them unset. H.264: 1 up to 640x360, 2 up to 1920x1088, 4
    /// above. Chunks give a render its parallelism, so each encoder needs
    /// few threads, and every libx264 frame thread holds its own frames: at
    /// 1080p, 2 threads instead of 4 cost 6-10 % less CPU and about 45 MB
    /// less memory for the same picture (issue 21). The other codecs keep
    /// the 4 they were measured with. A function of the size and codec
    /// only, so the bytes never depend on the machine.
    pub fn auto_encoder_threads(codec: VideoCodec, width: u32, height: u32) -> u32 {
        if codec != VideoCodec::H264 {
            return 4;
        }
        let pixels = u64::from(width) * u64::from(height);
        if pixels <= 640 * 360 {
            1
        } else if pixels <= 1920 * 1088 {
            2
        } else {
            4
        }
    }

    /// The encoder threads for a `width`x`height` frame: the request's, or
    /// [`VideoSettings::auto_encoder_threads`] when unset.
    pub fn encoder_threads_for(&self, width: u32, height: u32) -> u32 {
        self.encoder_threads
            .unwrap_or_else(|| Self::auto_encoder_threads(self.codec, width, height))
    }

    /// These settings with [`VideoSettings::encoder_threads`] resolved for a
    /// `width`x`height` frame (what a coordinator sends and keys).
    pub fn resolved_for(&self, width: u32, height: u32) -> VideoSettings {
        VideoSettings {
            encoder_threads: Some(self.encoder_threads_for(width, height)),
            ..self.clone()
        }
    }

    /// The pixel formats `self.codec` is encoded in here.
    pub fn pixel_formats(&self) -> &'static [PixelFormat] {
        use PixelFormat::*;
        match self.codec {
            VideoCodec::H264 | VideoCodec::H265 => &[Yuv420p, Yuv444p],
            VideoCodec::Vp9 => &[Yuv420p, Yuva420p, Yuv444p],
            VideoCodec::Av1 => &[Yuv420p],
            VideoCodec::Gif => &[Pal8],
            VideoCodec::Prores => &[Yuv422p10le, Yuv444p10le, Yuva444p10le],
        }
    }

    /// Checks every value against the range allowed for the codec.
    ///
    /// # Errors
    /// A [`FieldError`] naming the field (`video.crf`, `video.profile`, …),
    /// the value given and what is allowed.
    pub fn validate(&self) -> Result<(), FieldError> {
        let codec = self.codec;
        self.validate_codec_choices()?;
        if !X264_PRESETS.contains(&self.preset.as_str()) {
            return Err(FieldError::new(
                "video.preset",
                format!(
                    "`{}` is not an x264 preset; allowed: {}",
                    crate::quote(&self.preset),
                    X264_PRESETS.join(", ")
                ),
            ));
        }
        if let Some(level) = &self.level {
            if codec != VideoCodec::H264 {
                return Err(FieldError::new(
                    "video.level",
                    format!("a level applies to h264 only, not {codec}: leave it unset"),
                ));
            }
            if !H264_LEVELS.contains(&level.as_str()) {
                return Err(FieldError::new(
                    "video.level",
                    format!(
                        "`{}` is not an H.264 level; allowed: {}",
                        crate::quote(level),
                        H264_LEVELS.join(", ")
                    ),
                ));
            }
        }
        if !(1..=MAX_KEYINT).contains(&self.keyint) {
            return Err(FieldError::new(
                "video.keyint",
                format!("{} is out of range: allowed 1-{MAX_KEYINT}", self.keyint),
            ));
        }
        if self.bframes > MAX_BFRAMES {
            return Err(FieldError::new(
                "video.bframes",
                format!("{} is out of range: allowed 0-{MAX_BFRAMES}", self.bframes),
            ));
        }
        if self.bframes > 0 && !matches!(codec, VideoCodec::H264 | VideoCodec::H265) {
            return Err(FieldError::new(
                "video.bframes",
                format!("{codec} has no B-frames: give 0"),
            ));
        }
        if self.gif_palette.is_some() && codec != VideoCodec::Gif {
            return Err(FieldError::new(
                "video.gif_palette",
                format!("a palette applies to gif only, not {codec}: leave it unset"),
            ));
        }
        if let Some(n) = self.encoder_threads
            && !(1..=MAX_ENCODER_THREADS).contains(&n)
        {
            return Err(FieldError::new(
                "video.encoder_threads",
                format!("{n} is out of range: allowed 1-{MAX_ENCODER_THREADS}"),
            ));
        }
        if codec == VideoCodec::H264 {
            self.validate_h264()?;
        }
        Ok(())
    }

    /// The codec, its quality scale, lossless mode and pixel format.
    fn validate_codec_choices(&self) -> Result<(), FieldError> {
        let codec = self.codec;
        if !codec.is_implemented() {
            return Err(FieldError::new(
                "video.codec",
                format!(
                    "{codec} is not implemented yet; use {}",
                    VideoCodec::ALL
                        .into_iter()
                        .filter(|c| c.is_implemented())
                        .map(VideoCodec::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let max_crf = match codec {
            VideoCodec::Vp9 | VideoCodec::Av1 => MAX_CRF_VP9_AV1,
            _ => MAX_CRF,
        };
        if let Quality::Crf(crf) = self.quality
            && crf > max_crf
        {
            return Err(FieldError::new(
                "video.crf",
                format!("{crf} is out of range for {codec}: allowed 0-{max_crf}"),
            ));
        }
        if self.quality == Quality::Lossless
            && !matches!(codec, VideoCodec::H264 | VideoCodec::H265 | VideoCodec::Vp9)
        {
            return Err(FieldError::new(
                "video.lossless",
                format!("{codec} has no lossless mode here; use h264, h265 or vp9"),
            ));
        }
        if !self.pixel_formats().contains(&self.pixel_format) {
            return Err(FieldError::new(
                "video.pixel_format",
                format!(
                    "{codec} is not encoded in {} here; allowed: {}",
                    self.pixel_format.as_str(),
                    self.pixel_formats()
                        .iter()
                        .map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// Checks that a `width`x`height` frame of composition `id` can be
    /// encoded with these settings: subsampled chroma needs an even size,
    /// and SVT-AV1 refuses frames under [`MIN_AV1_SIDE`] pixels a side.
    ///
    /// # Errors
    /// A [`FieldError`] on `video.pixel_format` or `video.codec` naming the
    /// composition, its size and what is needed.
    pub fn check_frame_size(&self, id: &str, width: u32, height: u32) -> Result<(), FieldError> {
        let format = self.pixel_format;
        if (format.halves_width() && width % 2 == 1) || (format.halves_height() && height % 2 == 1)
        {
            return Err(FieldError::new(
                "video.pixel_format",
                format!(
                    "composition `{}` is {width}x{height}: {} needs an even {}; use a 4:4:4 format",
                    crate::quote(id),
                    format.as_str(),
                    if format.halves_height() {
                        "width and height"
                    } else {
                        "width"
                    }
                ),
            ));
        }
        if self.codec == VideoCodec::Av1 && (width < MIN_AV1_SIDE || height < MIN_AV1_SIDE) {
            return Err(FieldError::new(
                "video.codec",
                format!(
                    "composition `{}` is {width}x{height}: av1 (SVT-AV1) needs at least {MIN_AV1_SIDE}x{MIN_AV1_SIDE}",
                    crate::quote(id)
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a GIF output faster than [`MAX_GIF_FPS`]: composition `id`
    /// at `fps` (`num`/`den`), keeping every `every_nth_frame`-th frame.
    ///
    /// # Errors
    /// A [`FieldError`] on `video.codec` naming the composition, its output
    /// rate and the smallest `every_nth_frame` that plays right.
    pub fn check_frame_rate(
        &self,
        id: &str,
        fps: Fps,
        every_nth_frame: u32,
    ) -> Result<(), FieldError> {
        let per_second = |n: u32| u64::from(MAX_GIF_FPS) * u64::from(fps.den()) * u64::from(n);
        let n = every_nth_frame.max(1);
        if self.codec != VideoCodec::Gif || u64::from(fps.num()) <= per_second(n) {
            return Ok(());
        }
        let shown = fps
            .every_nth(n)
            .map_or_else(|_| format!("{fps}/{n}"), |f| f.to_string());
        let advice = u32::try_from(u64::from(fps.num()).div_ceil(per_second(1)))
            .ok()
            .and_then(|k| Some((k, fps.every_nth(k).ok()?)))
            .map(|(k, f)| format!("; every_nth_frame {k} gives {f} fps"))
            .unwrap_or_default();
        Err(FieldError::new(
            "video.codec",
            format!(
                "composition `{}` gives {shown} fps: a GIF plays right up to {MAX_GIF_FPS} fps (browsers show a frame under 2/100 s for 1/10 s){advice}",
                crate::quote(id),
            ),
        ))
    }

    /// The H.264 profile against the B-frames and the pixel format.
    fn validate_h264(&self) -> Result<(), FieldError> {
        if self.profile == H264Profile::Baseline && self.bframes > 0 {
            return Err(FieldError::new(
                "video.bframes",
                format!(
                    "{} B-frames with profile baseline: baseline allows none",
                    self.bframes
                ),
            ));
        }
        let needs_444 =
            self.pixel_format == PixelFormat::Yuv444p || self.quality == Quality::Lossless;
        if needs_444 && self.profile != H264Profile::High444 {
            return Err(FieldError::new(
                "video.profile",
                format!(
                    "`{}` cannot carry {} video: use high444",
                    self.profile.as_str(),
                    if self.quality == Quality::Lossless {
                        "lossless"
                    } else {
                        "yuv444p"
                    }
                ),
            ));
        }
        Ok(())
    }
}

/// The sample format of a chunk's PCM artifact: interleaved stereo, little
/// endian, at the composition's sample rate. In JSON: `"s16le"` or
/// `"f32le"` (FFmpeg's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum PcmFormat {
    /// Signed 16-bit integers: 4 bytes per stereo sample.
    #[serde(rename = "s16le")]
    S16le,
    /// 32-bit IEEE floats, exactly the composition's samples: 8 bytes per
    /// stereo sample (the default).
    #[default]
    #[serde(rename = "f32le")]
    F32le,
}

/// What a chunk of a `width`x`height` composition costs per output frame
/// (its raw size in `video`'s pixel format: the upper estimate, which
/// lossless encoding of noise reaches) and per audio sample in `pcm`, for
/// the planner's bound on bytes per chunk ([`chunker::MAX_CHUNK_BYTES`]).
pub fn chunk_cost(
    video: &VideoSettings,
    width: u32,
    height: u32,
    pcm: PcmFormat,
) -> chunker::ChunkCost {
    chunker::ChunkCost {
        frame_bytes: video.pixel_format.frame_bytes(width, height),
        sample_bytes: pcm.bytes_per_sample_frame(),
    }
}

impl PcmFormat {
    /// Bytes of one sample of one channel.
    pub fn bytes_per_sample(self) -> usize {
        match self {
            PcmFormat::S16le => 2,
            PcmFormat::F32le => 4,
        }
    }

    /// Bytes per interleaved stereo sample frame.
    pub fn bytes_per_sample_frame(self) -> u64 {
        2 * self.bytes_per_sample() as u64
    }

    /// FFmpeg's name for it (`-f s16le`, `-f f32le`).
    pub fn as_str(self) -> &'static str {
        match self {
            PcmFormat::S16le => "s16le",
            PcmFormat::F32le => "f32le",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(v: VideoSettings, expected: Result<(), &str>) {
        assert_eq!(
            v.validate().map_err(|e| e.to_string()),
            expected.map_err(str::to_owned)
        );
    }

    #[test]
    fn settings_are_checked_with_the_field_named() {
        check(VideoSettings::default(), Ok(()));
        check(VideoSettings::lossless(), Ok(()));
        check(
            VideoSettings {
                quality: Quality::Crf(60),
                ..Default::default()
            },
            Err("field `video.crf`: 60 is out of range for h264: allowed 0-51"),
        );
        check(
            VideoSettings {
                preset: "warp".into(),
                ..Default::default()
            },
            Err(
                "field `video.preset`: `warp` is not an x264 preset; allowed: ultrafast, superfast, veryfast, faster, fast, medium, slow, slower, veryslow, placebo",
            ),
        );
        check(
            VideoSettings {
                pixel_format: PixelFormat::Yuv444p,
                ..Default::default()
            },
            Err("field `video.profile`: `high` cannot carry yuv444p video: use high444"),
        );
        check(
            VideoSettings {
                keyint: 5000,
                ..Default::default()
            },
            Err("field `video.keyint`: 5000 is out of range: allowed 1-1000"),
        );
        check(
            VideoSettings {
                profile: H264Profile::Baseline,
                ..Default::default()
            },
            Err("field `video.bframes`: 3 B-frames with profile baseline: baseline allows none"),
        );
    }

    #[test]
    fn each_codec_has_its_own_ranges() {
        let vp9 = VideoSettings::for_codec(VideoCodec::Vp9, true).expect("vp9 has alpha");
        assert_eq!(vp9.pixel_format, PixelFormat::Yuva420p);
        check(vp9.clone(), Ok(()));
        check(
            VideoSettings {
                quality: Quality::Crf(63),
                ..vp9.clone()
            },
            Ok(()),
        );
        check(
            VideoSettings { bframes: 2, ..vp9 },
            Err("field `video.bframes`: vp9 has no B-frames: give 0"),
        );
        let prores = VideoSettings::for_codec(VideoCodec::Prores, false).expect("prores");
        check(prores.clone(), Ok(()));
        check(
            VideoSettings {
                pixel_format: PixelFormat::Yuv420p,
                ..prores
            },
            Err(
                "field `video.pixel_format`: prores is not encoded in yuv420p here; allowed: yuv422p10le, yuv444p10le, yuva444p10le",
            ),
        );
        check(
            VideoSettings {
                pixel_format: PixelFormat::Yuv444p,
                ..VideoSettings::for_codec(VideoCodec::H265, false).expect("h265")
            },
            Ok(()),
        );
        assert_eq!(
            VideoSettings::for_codec(VideoCodec::H264, true).map_err(|e| e.to_string()),
            Err("field `video.transparent`: h264 video has no alpha channel; use vp9 (.webm) or prores (.mov)".to_owned())
        );
    }

    #[test]
    fn unset_encoder_threads_follow_the_frame_size() {
        let h264 = VideoSettings::default();
        for ((w, h), threads) in [
            ((64, 36), 1),
            ((640, 360), 1),
            ((642, 360), 2),
            ((1920, 1080), 2),
            ((1920, 1088), 2),
            ((1920, 1090), 4),
            ((3840, 2160), 4),
        ] {
            assert_eq!(h264.encoder_threads_for(w, h), threads, "{w}x{h}");
        }
        let resolved = h264.resolved_for(1920, 1080);
        assert_eq!(resolved.encoder_threads, Some(2));
        assert_eq!(resolved.resolved_for(64, 36), resolved, "a set count stays");
        let vp9 = VideoSettings::for_codec(VideoCodec::Vp9, false).expect("vp9");
        assert_eq!(vp9.encoder_threads_for(64, 36), 4);
        check(
            VideoSettings {
                encoder_threads: Some(0),
                ..Default::default()
            },
            Err("field `video.encoder_threads`: 0 is out of range: allowed 1-16"),
        );
    }

    #[test]
    fn gifs_play_right_up_to_fifty_frames_a_second() {
        let gif = VideoSettings::for_codec(VideoCodec::Gif, false).expect("gif");
        let rate = |(num, den), n| {
            let fps = Fps::new(num, den).expect("fps");
            gif.check_frame_rate("c", fps, n).map_err(|e| e.to_string())
        };
        assert_eq!(rate((50, 1), 1), Ok(()));
        assert_eq!(rate((60, 1), 2), Ok(()));
        assert_eq!(rate((100, 2), 1), Ok(()));
        assert_eq!(
            rate((60, 1), 1),
            Err("field `video.codec`: composition `c` gives 60 fps: a GIF plays right up to 50 fps (browsers show a frame under 2/100 s for 1/10 s); every_nth_frame 2 gives 30 fps".to_owned())
        );
        assert_eq!(
            rate((120_000, 1001), 2),
            Err("field `video.codec`: composition `c` gives 60000/1001 fps: a GIF plays right up to 50 fps (browsers show a frame under 2/100 s for 1/10 s); every_nth_frame 3 gives 40000/1001 fps".to_owned())
        );
        // Other codecs have no such limit.
        let h264 = VideoSettings::default();
        let fast = Fps::new(240, 1).expect("fps");
        assert_eq!(h264.check_frame_rate("c", fast, 1), Ok(()));
    }
}

#[cfg(test)]
mod cost_tests {
    use super::*;

    #[test]
    fn raw_frame_sizes_round_chroma_up() {
        assert_eq!(PixelFormat::Yuv420p.frame_bytes(1920, 1080), 3_110_400);
        assert_eq!(PixelFormat::Yuv420p.frame_bytes(3, 3), 9 + 2 * 4);
        assert_eq!(PixelFormat::Yuv444p.frame_bytes(1920, 1080), 6_220_800);
        let cost = chunk_cost(&VideoSettings::lossless(), 2, 2, PcmFormat::S16le);
        assert_eq!((cost.frame_bytes, cost.sample_bytes), (12, 4));
    }
}
