//! Validated chunk requests: what to render, how to encode it, where the
//! artifacts go. Built from the wire message with [`ChunkRequest::try_from`],
//! whose errors name the bad field.

use std::fmt;
use std::path::{Path, PathBuf};

use chunker::{Chunk, ChunkIndex};
use composition::Props;
use montage_proto::convert::{FieldError, props_from_json};
use storage::{ContentHash, Location};
use timebase::FrameRange;

use crate::pb;

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

/// The H.264 profile written into the SPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// The name libx264 knows it by.
    pub fn as_str(self) -> &'static str {
        match self {
            H264Profile::Baseline => "baseline",
            H264Profile::Main => "main",
            H264Profile::High => "high",
            H264Profile::High444 => "high444",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "baseline" => H264Profile::Baseline,
            "main" => H264Profile::Main,
            "high" => H264Profile::High,
            "high444" => H264Profile::High444,
            _ => return None,
        })
    }
}

/// The pixel format of the encoded video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// 4:2:0, 8 bit (the default; plays everywhere).
    Yuv420p,
    /// 4:4:4, 8 bit (for lossless comparisons).
    Yuv444p,
}

impl PixelFormat {
    /// FFmpeg's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            PixelFormat::Yuv420p => "yuv420p",
            PixelFormat::Yuv444p => "yuv444p",
        }
    }
}

/// Rate control of the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quality {
    /// x264 constant rate factor, 0-51 (18 by default).
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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VideoSettings {
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
    /// libx264 threads (1-[`MAX_ENCODER_THREADS`]). The bitstream depends on
    /// this number (frame threads limit motion search), never on the
    /// machine's core count, so it is part of the request.
    pub encoder_threads: u32,
}

impl Default for VideoSettings {
    /// libx264, CRF 18, `veryfast`, High profile, keyint 250, 3 B-frames,
    /// `yuv420p`, 4 encoder threads.
    fn default() -> Self {
        VideoSettings {
            quality: Quality::Crf(18),
            preset: "veryfast".to_owned(),
            profile: H264Profile::High,
            level: None,
            keyint: 250,
            bframes: 3,
            pixel_format: PixelFormat::Yuv420p,
            encoder_threads: 4,
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

    /// Checks every value against the range allowed.
    ///
    /// # Errors
    /// A [`FieldError`] naming the field (`video.crf`, `video.profile`, …),
    /// the value given and what is allowed.
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Quality::Crf(crf) = self.quality
            && crf > 51
        {
            return Err(FieldError::new(
                "video.crf",
                format!("{crf} is out of range: allowed 0-51"),
            ));
        }
        if !X264_PRESETS.contains(&self.preset.as_str()) {
            return Err(FieldError::new(
                "video.preset",
                format!(
                    "`{}` is not an x264 preset; allowed: {}",
                    self.preset,
                    X264_PRESETS.join(", ")
                ),
            ));
        }
        if let Some(level) = &self.level
            && !H264_LEVELS.contains(&level.as_str())
        {
            return Err(FieldError::new(
                "video.level",
                format!(
                    "`{level}` is not an H.264 level; allowed: {}",
                    H264_LEVELS.join(", ")
                ),
            ));
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
        if self.profile == H264Profile::Baseline && self.bframes > 0 {
            return Err(FieldError::new(
                "video.bframes",
                format!(
                    "{} B-frames with profile baseline: baseline allows none",
                    self.bframes
                ),
            ));
        }
        if !(1..=MAX_ENCODER_THREADS).contains(&self.encoder_threads) {
            return Err(FieldError::new(
                "video.encoder_threads",
                format!(
                    "{} is out of range: allowed 1-{MAX_ENCODER_THREADS}",
                    self.encoder_threads
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

impl TryFrom<pb::VideoSettings> for VideoSettings {
    type Error = FieldError;

    /// Empty strings and zero `keyint`/`encoder_threads`/`crf` take the
    /// defaults; everything else, `bframes` included (0 means none), is
    /// taken as given and validated. An absent message takes
    /// [`VideoSettings::default`] whole.
    fn try_from(v: pb::VideoSettings) -> Result<Self, Self::Error> {
        let d = VideoSettings::default();
        if !(v.codec.is_empty() || v.codec == "h264") {
            return Err(FieldError::new(
                "video.codec",
                format!("`{}` is not supported: only h264 (libx264)", v.codec),
            ));
        }
        let profile = if v.profile.is_empty() {
            if v.lossless {
                H264Profile::High444
            } else {
                d.profile
            }
        } else {
            H264Profile::parse(&v.profile).ok_or_else(|| {
                FieldError::new(
                    "video.profile",
                    format!(
                        "`{}` is not supported; allowed: baseline, main, high, high444",
                        v.profile
                    ),
                )
            })?
        };
        let pixel_format = match v.pixel_format.as_str() {
            "" if v.lossless => PixelFormat::Yuv444p,
            "" => d.pixel_format,
            "yuv420p" => PixelFormat::Yuv420p,
            "yuv444p" => PixelFormat::Yuv444p,
            other => {
                return Err(FieldError::new(
                    "video.pixel_format",
                    format!("`{other}` is not supported; allowed: yuv420p, yuv444p"),
                ));
            }
        };
        let quality = if v.lossless {
            Quality::Lossless
        } else if v.crf == 0 {
            d.quality
        } else {
            Quality::Crf(u8::try_from(v.crf).map_err(|_| {
                FieldError::new(
                    "video.crf",
                    format!("{} is out of range: allowed 0-51", v.crf),
                )
            })?)
        };
        let settings = VideoSettings {
            quality,
            preset: if v.preset.is_empty() {
                d.preset
            } else {
                v.preset
            },
            profile,
            level: (!v.level.is_empty()).then_some(v.level),
            keyint: if v.keyint == 0 { d.keyint } else { v.keyint },
            bframes: v.bframes,
            pixel_format,
            encoder_threads: if v.encoder_threads == 0 {
                d.encoder_threads
            } else {
                v.encoder_threads
            },
        };
        settings.validate()?;
        Ok(settings)
    }
}

impl From<&VideoSettings> for pb::VideoSettings {
    fn from(v: &VideoSettings) -> Self {
        pb::VideoSettings {
            codec: "h264".to_owned(),
            crf: match v.quality {
                Quality::Crf(c) => u32::from(c),
                Quality::Lossless => 0,
            },
            preset: v.preset.clone(),
            profile: v.profile.as_str().to_owned(),
            level: v.level.clone().unwrap_or_default(),
            keyint: v.keyint,
            bframes: v.bframes,
            pixel_format: v.pixel_format.as_str().to_owned(),
            lossless: v.quality == Quality::Lossless,
            encoder_threads: v.encoder_threads,
        }
    }
}

/// The sample format of the PCM artifact (always 48 kHz, interleaved stereo).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PcmFormat {
    /// Signed 16-bit little-endian: 4 bytes per stereo sample.
    S16le,
    /// 32-bit float little-endian, exactly the composition's samples: 8 bytes
    /// per stereo sample (the default).
    #[default]
    F32le,
}

impl PcmFormat {
    /// Bytes per interleaved stereo sample frame.
    pub fn bytes_per_sample_frame(self) -> u64 {
        match self {
            PcmFormat::S16le => 4,
            PcmFormat::F32le => 8,
        }
    }

    /// FFmpeg's name for it (`-f s16le`, `-f f32le`).
    pub fn as_str(self) -> &'static str {
        match self {
            PcmFormat::S16le => "s16le",
            PcmFormat::F32le => "f32le",
        }
    }
}

impl From<PcmFormat> for pb::PcmFormat {
    fn from(f: PcmFormat) -> Self {
        match f {
            PcmFormat::S16le => pb::PcmFormat::S16le,
            PcmFormat::F32le => pb::PcmFormat::F32le,
        }
    }
}

/// Where the chunk's artifacts go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ArtifactTarget {
    /// Streamed back in the gRPC call. [`crate::render_chunk`] itself always
    /// writes files: the service renders inline requests into a private
    /// directory under its cache dir and streams them from there.
    Inline,
    /// Written into this local directory as `chunk-NNNNNN.ts` and
    /// `chunk-NNNNNN.pcm` (the chunk index, six digits), each under a
    /// temporary name in that directory and renamed when complete.
    Directory(PathBuf),
    /// Uploaded as `chunk-NNNNNN.ts` and `chunk-NNNNNN.pcm` under this
    /// object-storage prefix (`s3://bucket/prefix/`, always ending with `/`
    /// or empty). The gRPC service renders into its scratch directory and
    /// uploads; [`crate::render_chunk`] refuses it.
    Storage(Location),
}

impl TryFrom<pb::ArtifactTarget> for ArtifactTarget {
    type Error = FieldError;

    /// `inline`; a plain path or `file://` URL is a local directory; an
    /// `s3://bucket/prefix/` URL is a storage prefix and must end with `/`.
    fn try_from(t: pb::ArtifactTarget) -> Result<Self, Self::Error> {
        use pb::artifact_target::Kind;
        match t.kind {
            None => Err(FieldError::missing("output.kind")),
            Some(Kind::Inline(_)) => Ok(ArtifactTarget::Inline),
            Some(Kind::Location(loc)) => {
                if loc.is_empty() {
                    return Err(FieldError::new("output.location", "is empty"));
                }
                if !loc.contains("://") {
                    return Ok(ArtifactTarget::Directory(PathBuf::from(loc)));
                }
                let parsed = Location::parse(&loc)
                    .map_err(|e| FieldError::new("output.location", e.to_string()))?;
                match parsed {
                    Location::Local { root, key } => {
                        Ok(ArtifactTarget::Directory(if key.is_empty() {
                            root
                        } else {
                            root.join(key)
                        }))
                    }
                    Location::S3 { .. } if !parsed.is_prefix() => Err(FieldError::new(
                        "output.location",
                        format!(
                            "`{loc}` names one object: artifacts go under a prefix, which must end with `/` (e.g. `{loc}/`)"
                        ),
                    )),
                    s3 @ Location::S3 { .. } => Ok(ArtifactTarget::Storage(s3)),
                }
            }
        }
    }
}

/// Where the composition comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SourceSpec {
    /// A Rust composition registered in the worker's
    /// [`composition::Registry`].
    Registered,
    /// A scene bundle directory on the worker's disk.
    BundlePath(PathBuf),
    /// A content-addressed bundle archive in storage. The gRPC service
    /// fetches it into its bundle cache; library callers use
    /// [`crate::Bundles::fetch`] and render the unpacked directory as a
    /// [`SourceSpec::BundlePath`]. Requests built from the wire have both
    /// fields checked with [`SourceSpec::parse_bundle_ref`].
    BundleRef {
        /// Storage location of the archive: a path, `file://` URL or
        /// `s3://bucket/key`.
        location: String,
        /// Lower-case hex sha256 of the archive.
        sha256: String,
    },
}

impl SourceSpec {
    /// Checks a bundle reference: `location` must parse as a storage
    /// location naming one object (not a prefix) and `sha256` must be 64
    /// lower-case hexadecimal digits.
    ///
    /// # Errors
    /// A [`FieldError`] naming `source.bundle.location` or
    /// `source.bundle.sha256`.
    pub fn parse_bundle_ref(
        location: &str,
        sha256: &str,
    ) -> Result<(Location, ContentHash), FieldError> {
        const LOCATION: &str = "source.bundle.location";
        const SHA256: &str = "source.bundle.sha256";
        if location.is_empty() {
            return Err(FieldError::new(LOCATION, "is empty"));
        }
        let parsed =
            Location::parse(location).map_err(|e| FieldError::new(LOCATION, e.to_string()))?;
        if parsed.is_prefix() {
            return Err(FieldError::new(
                LOCATION,
                format!(
                    "`{location}` names a directory or prefix: expected the bundle archive itself"
                ),
            ));
        }
        let lower_hex = sha256.len() == 64
            && sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !lower_hex {
            return Err(FieldError::new(
                SHA256,
                format!(
                    "`{sha256}`: expected the archive's sha256 as 64 lower-case hexadecimal digits"
                ),
            ));
        }
        let hash = sha256
            .parse::<ContentHash>()
            .map_err(|e| FieldError::new(SHA256, e.to_string()))?;
        Ok((parsed, hash))
    }
}

impl TryFrom<Option<pb::CompositionSource>> for SourceSpec {
    type Error = FieldError;
    fn try_from(s: Option<pb::CompositionSource>) -> Result<Self, Self::Error> {
        use pb::composition_source::Kind;
        match s.and_then(|s| s.kind) {
            None => Err(FieldError::missing("source")),
            Some(Kind::Registered(_)) => Ok(SourceSpec::Registered),
            Some(Kind::BundlePath(p)) if p.is_empty() => {
                Err(FieldError::new("source.bundle_path", "is empty"))
            }
            Some(Kind::BundlePath(p)) => Ok(SourceSpec::BundlePath(PathBuf::from(p))),
            Some(Kind::Bundle(b)) => {
                SourceSpec::parse_bundle_ref(&b.location, &b.sha256)?;
                Ok(SourceSpec::BundleRef {
                    location: b.location,
                    sha256: b.sha256,
                })
            }
        }
    }
}

impl From<&SourceSpec> for pb::CompositionSource {
    fn from(s: &SourceSpec) -> Self {
        use pb::composition_source::Kind;
        pb::CompositionSource {
            kind: Some(match s {
                SourceSpec::Registered => Kind::Registered(pb::Registered {}),
                SourceSpec::BundlePath(p) => Kind::BundlePath(p.to_string_lossy().into_owned()),
                SourceSpec::BundleRef { location, sha256 } => Kind::Bundle(pb::BundleRef {
                    location: location.clone(),
                    sha256: sha256.clone(),
                }),
            }),
        }
    }
}

/// The frames a chunk owns, as the coordinator planned them. Turned into a
/// [`chunker::Chunk`] (with its exact sample span) once the composition's fps
/// is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkSpan {
    /// Position of the chunk in the plan.
    pub index: ChunkIndex,
    /// Composition frames the chunk owns (inclusive).
    pub frames: FrameRange,
    /// First frame of the whole render: timestamps are relative to it.
    pub composition_start: u64,
    /// Keep one frame in this many (at least 1).
    pub every_nth_frame: u32,
}

impl From<&Chunk> for ChunkSpan {
    fn from(c: &Chunk) -> Self {
        ChunkSpan {
            index: c.index(),
            frames: c.frames(),
            composition_start: c.composition_start().0,
            every_nth_frame: c.every_nth_frame(),
        }
    }
}

/// A validated request to render one chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRequest {
    /// The caller's id of the whole render, for logs.
    pub job_id: String,
    /// Where the composition comes from.
    pub source: SourceSpec,
    /// The composition's id within its source.
    pub composition_id: String,
    /// Props (empty: the composition's defaults).
    pub props: Props,
    /// The frames to render.
    pub span: ChunkSpan,
    /// Encoder settings.
    pub video: VideoSettings,
    /// Sample format of the PCM artifact.
    pub pcm_format: PcmFormat,
    /// Where the artifacts go.
    pub target: ArtifactTarget,
}

impl ChunkRequest {
    /// The artifact file names for chunk `index`: `chunk-NNNNNN.ts` and
    /// `chunk-NNNNNN.pcm`.
    pub fn artifact_names(index: ChunkIndex) -> (String, String) {
        (
            format!("chunk-{:06}.ts", index.0),
            format!("chunk-{:06}.pcm", index.0),
        )
    }

    /// The directory artifacts are written to, if the target is one.
    pub fn target_dir(&self) -> Option<&Path> {
        match &self.target {
            ArtifactTarget::Directory(d) => Some(d),
            ArtifactTarget::Inline | ArtifactTarget::Storage(_) => None,
        }
    }
}

impl fmt::Display for ChunkRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "job `{}` chunk {} of `{}` frames {}",
            self.job_id, self.span.index, self.composition_id, self.span.frames
        )
    }
}

impl TryFrom<pb::RenderChunkRequest> for ChunkRequest {
    type Error = FieldError;
    fn try_from(r: pb::RenderChunkRequest) -> Result<Self, Self::Error> {
        if r.composition_id.is_empty() {
            return Err(FieldError::new("composition_id", "is empty"));
        }
        let frames: FrameRange = r
            .frames
            .ok_or_else(|| FieldError::missing("frames"))?
            .try_into()?;
        if r.composition_start > frames.first.0 {
            return Err(FieldError::new(
                "composition_start",
                format!(
                    "{} is after the chunk's first frame {}",
                    r.composition_start, frames.first
                ),
            ));
        }
        let audio = r.audio.unwrap_or_default();
        if !(audio.sample_rate == 0 || audio.sample_rate == composition::SAMPLE_RATE) {
            return Err(FieldError::new(
                "audio.sample_rate",
                format!(
                    "{} is not supported: compositions render at {} Hz",
                    audio.sample_rate,
                    composition::SAMPLE_RATE
                ),
            ));
        }
        if !(audio.channels == 0 || audio.channels as usize == composition::AUDIO_CHANNELS) {
            return Err(FieldError::new(
                "audio.channels",
                format!(
                    "{} is not supported: compositions render {} channels",
                    audio.channels,
                    composition::AUDIO_CHANNELS
                ),
            ));
        }
        let pcm_format = match pb::PcmFormat::try_from(audio.pcm_format) {
            Ok(pb::PcmFormat::Unspecified) => PcmFormat::default(),
            Ok(pb::PcmFormat::S16le) => PcmFormat::S16le,
            Ok(pb::PcmFormat::F32le) => PcmFormat::F32le,
            Err(_) => {
                return Err(FieldError::new(
                    "audio.pcm_format",
                    format!("{} is not a known PCM format", audio.pcm_format),
                ));
            }
        };
        let video = match r.video {
            None => VideoSettings::default(),
            Some(v) => v.try_into()?,
        };
        Ok(ChunkRequest {
            job_id: r.job_id,
            source: SourceSpec::try_from(r.source)?,
            props: props_from_json("props_json", &r.props_json)?,
            composition_id: r.composition_id,
            span: ChunkSpan {
                index: ChunkIndex(r.chunk_index),
                frames,
                composition_start: r.composition_start,
                every_nth_frame: r.every_nth_frame.max(1),
            },
            video,
            pcm_format,
            target: r
                .output
                .ok_or_else(|| FieldError::missing("output"))?
                .try_into()?,
        })
    }
}

impl From<&ChunkRequest> for pb::RenderChunkRequest {
    fn from(r: &ChunkRequest) -> Self {
        use pb::artifact_target::Kind;
        pb::RenderChunkRequest {
            job_id: r.job_id.clone(),
            chunk_index: r.span.index.0,
            source: Some((&r.source).into()),
            composition_id: r.composition_id.clone(),
            props_json: serde_json::Value::Object(r.props.clone()).to_string(),
            frames: Some(r.span.frames.into()),
            composition_start: r.span.composition_start,
            every_nth_frame: r.span.every_nth_frame,
            video: Some((&r.video).into()),
            audio: Some(pb::AudioSettings {
                sample_rate: composition::SAMPLE_RATE,
                channels: composition::AUDIO_CHANNELS as u32,
                pcm_format: pb::PcmFormat::from(r.pcm_format).into(),
            }),
            output: Some(pb::ArtifactTarget {
                kind: Some(match &r.target {
                    ArtifactTarget::Inline => Kind::Inline(pb::Inline {}),
                    ArtifactTarget::Directory(d) => {
                        Kind::Location(d.to_string_lossy().into_owned())
                    }
                    ArtifactTarget::Storage(prefix) => Kind::Location(prefix.to_string()),
                }),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(v: pb::VideoSettings, expected: Result<VideoSettings, &str>) {
        let got = VideoSettings::try_from(v).map_err(|e| e.to_string());
        assert_eq!(got, expected.map_err(str::to_owned));
    }

    #[test]
    fn video_settings_from_wire() {
        // bframes is taken as given (0 is a valid choice); the rest default.
        check(
            pb::VideoSettings {
                bframes: 3,
                ..Default::default()
            },
            Ok(VideoSettings::default()),
        );
        check(
            pb::VideoSettings {
                lossless: true,
                bframes: 3,
                ..Default::default()
            },
            Ok(VideoSettings::lossless()),
        );
        check(
            pb::VideoSettings {
                crf: 60,
                ..Default::default()
            },
            Err("field `video.crf`: 60 is out of range: allowed 0-51"),
        );
        check(
            pb::VideoSettings {
                preset: "warp".into(),
                ..Default::default()
            },
            Err(
                "field `video.preset`: `warp` is not an x264 preset; allowed: ultrafast, superfast, veryfast, faster, fast, medium, slow, slower, veryslow, placebo",
            ),
        );
        check(
            pb::VideoSettings {
                pixel_format: "yuv444p".into(),
                ..Default::default()
            },
            Err("field `video.profile`: `high` cannot carry yuv444p video: use high444"),
        );
        check(
            pb::VideoSettings {
                codec: "vp9".into(),
                ..Default::default()
            },
            Err("field `video.codec`: `vp9` is not supported: only h264 (libx264)"),
        );
        check(
            pb::VideoSettings {
                keyint: 5000,
                ..Default::default()
            },
            Err("field `video.keyint`: 5000 is out of range: allowed 1-1000"),
        );
    }

    #[test]
    fn video_settings_round_trip() {
        for v in [VideoSettings::default(), VideoSettings::lossless()] {
            let wire = pb::VideoSettings::from(&v);
            assert_eq!(VideoSettings::try_from(wire).expect("valid"), v);
        }
    }

    #[track_caller]
    fn check_target(location: &str, expected: Result<ArtifactTarget, &str>) {
        let got = ArtifactTarget::try_from(pb::ArtifactTarget {
            kind: Some(pb::artifact_target::Kind::Location(location.into())),
        })
        .map_err(|e| e.to_string());
        assert_eq!(got, expected.map_err(str::to_owned));
    }

    #[test]
    fn artifact_targets() {
        check_target(
            "out/chunks",
            Ok(ArtifactTarget::Directory("out/chunks".into())),
        );
        check_target(
            "file:///tmp/a%20b/",
            Ok(ArtifactTarget::Directory("/tmp/a b/".into())),
        );
        check_target(
            "s3://renders/p/chunks/ab/cd/k/",
            Ok(ArtifactTarget::Storage(
                Location::parse("s3://renders/p/chunks/ab/cd/k/").expect("valid"),
            )),
        );
        check_target(
            "s3://renders",
            Ok(ArtifactTarget::Storage(
                Location::parse("s3://renders").expect("valid"),
            )),
        );
        check_target(
            "s3://renders/a//b/",
            Err(
                "field `output.location`: location `s3://renders/a//b/`: a key may not have empty segments (`//`)",
            ),
        );
        check_target(
            "gs://renders/x/",
            Err(
                "field `output.location`: location `gs://renders/x/`: unsupported scheme `gs://` (expected s3://, file:// or a path)",
            ),
        );
    }

    #[track_caller]
    fn check_bundle(location: &str, sha256: &str, expected: Result<(), &str>) {
        let got = SourceSpec::try_from(Some(pb::CompositionSource {
            kind: Some(pb::composition_source::Kind::Bundle(pb::BundleRef {
                location: location.into(),
                sha256: sha256.into(),
            })),
        }))
        .map(|_| ())
        .map_err(|e| e.to_string());
        assert_eq!(got, expected.map_err(str::to_owned));
    }

    #[test]
    fn bundle_refs_are_checked() {
        let sha = "0123456789abcdef".repeat(4);
        check_bundle("s3://b-1/p/bundles/x.tar", &sha, Ok(()));
        check_bundle("/srv/bundles/x.tar", &sha, Ok(()));
        check_bundle("file:///srv/bundles/x.tar", &sha, Ok(()));
        check_bundle("", &sha, Err("field `source.bundle.location`: is empty"));
        check_bundle(
            "s3://b-1/p/",
            &sha,
            Err(
                "field `source.bundle.location`: `s3://b-1/p/` names a directory or prefix: expected the bundle archive itself",
            ),
        );
        check_bundle(
            "ftp://x/y.tar",
            &sha,
            Err(
                "field `source.bundle.location`: location `ftp://x/y.tar`: unsupported scheme `ftp://` (expected s3://, file:// or a path)",
            ),
        );
        let upper = sha.to_ascii_uppercase();
        check_bundle(
            "s3://b-1/x.tar",
            &upper,
            Err(&format!(
                "field `source.bundle.sha256`: `{upper}`: expected the archive's sha256 as 64 lower-case hexadecimal digits"
            )),
        );
        check_bundle(
            "s3://b-1/x.tar",
            "abc",
            Err(
                "field `source.bundle.sha256`: `abc`: expected the archive's sha256 as 64 lower-case hexadecimal digits",
            ),
        );
    }

    #[test]
    fn request_fields_are_named() {
        let good = ChunkRequest {
            job_id: "j".into(),
            source: SourceSpec::Registered,
            composition_id: "test-pattern".into(),
            props: Props::new(),
            span: ChunkSpan {
                index: ChunkIndex(2),
                frames: FrameRange::new(10, 19).expect("range"),
                composition_start: 0,
                every_nth_frame: 1,
            },
            video: VideoSettings::default(),
            pcm_format: PcmFormat::S16le,
            target: ArtifactTarget::Directory("/tmp/x".into()),
        };
        let wire = pb::RenderChunkRequest::from(&good);
        assert_eq!(ChunkRequest::try_from(wire.clone()).expect("valid"), good);

        let mut bad = wire.clone();
        bad.output = None;
        assert_eq!(
            ChunkRequest::try_from(bad)
                .expect_err("no output")
                .to_string(),
            "field `output`: is required but was not set"
        );
        let mut bad = wire.clone();
        bad.composition_start = 11;
        assert_eq!(
            ChunkRequest::try_from(bad).expect_err("start").to_string(),
            "field `composition_start`: 11 is after the chunk's first frame 10"
        );
        let mut bad = wire.clone();
        bad.output = Some(pb::ArtifactTarget {
            kind: Some(pb::artifact_target::Kind::Location("s3://bkt/k".into())),
        });
        assert_eq!(
            ChunkRequest::try_from(bad).expect_err("s3").to_string(),
            "field `output.location`: `s3://bkt/k` names one object: artifacts go under a prefix, which must end with `/` (e.g. `s3://bkt/k/`)"
        );
        let mut bad = wire;
        bad.audio = Some(pb::AudioSettings {
            sample_rate: 44_100,
            ..Default::default()
        });
        assert_eq!(
            ChunkRequest::try_from(bad).expect_err("rate").to_string(),
            "field `audio.sample_rate`: 44100 is not supported: compositions render at 48000 Hz"
        );
    }
}
