//! Conversions between wire messages and domain types.
//!
//! `TryFrom<pb::X>` validates: a missing or out-of-range field is a
//! [`FieldError`] that names the field, so a worker can answer
//! `INVALID_ARGUMENT` with a message a person can act on.

use std::path::PathBuf;
use std::time::Duration;

use chunker::ChunkIndex;
use composition::CompositionMeta;
use spec::{
    ArtifactKind, ArtifactTarget, BundleRef, ChunkEvent, ChunkProgress, ChunkReport, ChunkRequest,
    ChunkSpan, ContentHash, DeliveredArtifact, DescribeRequest, FrameSink, H264Profile,
    ImageFormat, ImageSequence, ImageTarget, PcmFormat, PixelFormat, Quality, RendererVersion,
    SourceSpec, StageTimings, VideoCodec, VideoSettings,
};
use timebase::{Fps, FrameRange, SampleSpan};

use crate::v1 as pb;

pub use spec::FieldError;

impl TryFrom<pb::Fraction> for Fps {
    type Error = FieldError;
    fn try_from(f: pb::Fraction) -> Result<Self, Self::Error> {
        Fps::new(f.num, f.den).map_err(|e| FieldError::new("fps", e.to_string()))
    }
}

impl From<Fps> for pb::Fraction {
    fn from(fps: Fps) -> Self {
        pb::Fraction {
            num: fps.num(),
            den: fps.den(),
        }
    }
}

impl TryFrom<pb::FrameRange> for FrameRange {
    type Error = FieldError;
    fn try_from(r: pb::FrameRange) -> Result<Self, Self::Error> {
        FrameRange::new(r.first, r.last).ok_or_else(|| {
            FieldError::new(
                "frames",
                format!(
                    "range {}-{} is inverted: the first frame must not be after the last",
                    r.first, r.last
                ),
            )
        })
    }
}

impl From<FrameRange> for pb::FrameRange {
    fn from(r: FrameRange) -> Self {
        pb::FrameRange {
            first: r.first.0,
            last: r.last.0,
        }
    }
}

impl TryFrom<pb::SampleSpan> for SampleSpan {
    type Error = FieldError;
    fn try_from(s: pb::SampleSpan) -> Result<Self, Self::Error> {
        SampleSpan::new(s.start, s.end).ok_or_else(|| {
            FieldError::new(
                "samples",
                format!("span [{}, {}) ends before it starts", s.start, s.end),
            )
        })
    }
}

impl From<SampleSpan> for pb::SampleSpan {
    fn from(s: SampleSpan) -> Self {
        pb::SampleSpan {
            start: s.start.0,
            end: s.end.0,
        }
    }
}

/// Parses a props JSON string: empty means no props; anything else must be a
/// JSON object.
///
/// # Errors
/// A [`FieldError`] for `field` if the text is not a JSON object.
pub fn props_from_json(field: &str, text: &str) -> Result<composition::Props, FieldError> {
    if text.trim().is_empty() {
        return Ok(composition::Props::new());
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(other) => Err(FieldError::new(
            field,
            format!("props must be a JSON object, got {other}"),
        )),
        Err(e) => Err(FieldError::new(
            field,
            format!("props are not valid JSON: {e}"),
        )),
    }
}

impl TryFrom<pb::CompositionMeta> for CompositionMeta {
    type Error = FieldError;
    fn try_from(m: pb::CompositionMeta) -> Result<Self, Self::Error> {
        let fps = m
            .fps
            .ok_or_else(|| FieldError::missing("fps"))?
            .try_into()?;
        let meta = CompositionMeta {
            version: m.version,
            id: m.id,
            width: m.width,
            height: m.height,
            fps,
            duration_frames: m.duration_frames,
            has_audio: m.has_audio,
            props: props_from_json("props_json", &m.props_json)?,
        };
        meta.validate()
            .map_err(|e| FieldError::new("meta", e.to_string()))?;
        Ok(meta)
    }
}

impl From<&CompositionMeta> for pb::CompositionMeta {
    fn from(m: &CompositionMeta) -> Self {
        pb::CompositionMeta {
            id: m.id.clone(),
            width: m.width,
            height: m.height,
            fps: Some(m.fps.into()),
            duration_frames: m.duration_frames,
            has_audio: m.has_audio,
            props_json: serde_json::Value::Object(m.props.clone()).to_string(),
            version: m.version.clone(),
        }
    }
}

impl TryFrom<pb::VideoSettings> for VideoSettings {
    type Error = FieldError;

    /// Unset fields take the defaults ([`VideoSettings::default`], or the
    /// lossless ones when `lossless` is set); set fields are taken as given
    /// and validated.
    fn try_from(v: pb::VideoSettings) -> Result<Self, Self::Error> {
        let codec = match v.codec.as_deref() {
            None => VideoCodec::H264,
            Some(c) => VideoCodec::parse(c).ok_or_else(|| {
                FieldError::new(
                    "video.codec",
                    format!(
                        "`{}` is not supported; allowed: {}",
                        spec::quote(c),
                        VideoCodec::names()
                    ),
                )
            })?,
        };
        let d = if v.lossless {
            VideoSettings {
                codec,
                ..VideoSettings::lossless()
            }
        } else {
            VideoSettings::for_codec(codec, false)?
        };
        let profile = match v.profile.as_deref() {
            None => d.profile,
            Some(p) => H264Profile::parse(p).ok_or_else(|| {
                FieldError::new(
                    "video.profile",
                    format!(
                        "`{}` is not supported; allowed: baseline, main, high, high444",
                        spec::quote(p)
                    ),
                )
            })?,
        };
        let pixel_format = match v.pixel_format.as_deref() {
            None => d.pixel_format,
            Some(p) => PixelFormat::parse(p).ok_or_else(|| {
                FieldError::new(
                    "video.pixel_format",
                    format!(
                        "`{}` is not supported; allowed: {}",
                        spec::quote(p),
                        PixelFormat::ALL.map(PixelFormat::as_str).join(", ")
                    ),
                )
            })?,
        };
        let quality = match (v.lossless, v.crf) {
            (true, Some(crf)) => {
                return Err(FieldError::new(
                    "video.crf",
                    format!("{crf} given with lossless: leave crf unset"),
                ));
            }
            (true, None) => Quality::Lossless,
            (false, None) => d.quality,
            (false, Some(crf)) => Quality::Crf(u8::try_from(crf).map_err(|_| {
                FieldError::new(
                    "video.crf",
                    format!("{crf} is out of range: allowed 0-{}", spec::MAX_CRF),
                )
            })?),
        };
        let settings = VideoSettings {
            codec,
            quality,
            preset: v.preset.unwrap_or(d.preset),
            profile,
            level: v.level,
            keyint: v.keyint.unwrap_or(d.keyint),
            bframes: v.bframes.unwrap_or(d.bframes),
            pixel_format,
            encoder_threads: v.encoder_threads,
            gif_palette: v
                .gif_palette
                .as_deref()
                .map(spec::GifPalette::from_rgb)
                .transpose()?,
        };
        settings.validate()?;
        Ok(settings)
    }
}

impl From<&VideoSettings> for pb::VideoSettings {
    /// Every field explicit, so the worker's defaults never decide anything.
    fn from(v: &VideoSettings) -> Self {
        pb::VideoSettings {
            codec: Some(v.codec.as_str().to_owned()),
            crf: match v.quality {
                Quality::Crf(c) => Some(u32::from(c)),
                Quality::Lossless => None,
            },
            preset: Some(v.preset.clone()),
            profile: Some(v.profile.as_str().to_owned()),
            level: v.level.clone(),
            keyint: Some(v.keyint),
            bframes: Some(v.bframes),
            pixel_format: Some(v.pixel_format.as_str().to_owned()),
            lossless: v.quality == Quality::Lossless,
            encoder_threads: v.encoder_threads,
            gif_palette: v.gif_palette.as_ref().map(spec::GifPalette::to_rgb),
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

/// The PCM format a wire enum value names (unspecified: the default).
///
/// # Errors
/// A [`FieldError`] for `field` naming an unknown value.
pub fn pcm_format(field: &str, value: i32) -> Result<PcmFormat, FieldError> {
    match pb::PcmFormat::try_from(value) {
        Ok(pb::PcmFormat::Unspecified) => Ok(PcmFormat::default()),
        Ok(pb::PcmFormat::S16le) => Ok(PcmFormat::S16le),
        Ok(pb::PcmFormat::F32le) => Ok(PcmFormat::F32le),
        Err(_) => Err(FieldError::new(
            field,
            format!("{value} is not a known PCM format"),
        )),
    }
}

/// The source a request names.
///
/// # Errors
/// A [`FieldError`] naming `source…` when it is missing or invalid.
pub fn source(s: Option<pb::CompositionSource>) -> Result<SourceSpec, FieldError> {
    s.ok_or_else(|| FieldError::missing("source"))?.try_into()
}

impl TryFrom<pb::CompositionSource> for SourceSpec {
    type Error = FieldError;
    fn try_from(s: pb::CompositionSource) -> Result<Self, Self::Error> {
        use pb::composition_source::Kind;
        match s.kind {
            None => Err(FieldError::missing("source")),
            Some(Kind::Registered(_)) => Ok(SourceSpec::Registered),
            Some(Kind::BundlePath(p)) if p.is_empty() => {
                Err(FieldError::new("source.bundle_path", "is empty"))
            }
            Some(Kind::BundlePath(p)) => Ok(SourceSpec::BundlePath(PathBuf::from(p))),
            Some(Kind::Bundle(b)) => Ok(SourceSpec::BundleRef(BundleRef::parse(
                &b.location,
                &b.sha256,
            )?)),
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
                SourceSpec::BundleRef(b) => Kind::Bundle(pb::BundleRef {
                    location: b.location.to_string(),
                    sha256: b.sha256.to_hex(),
                }),
            }),
        }
    }
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
            Some(Kind::Location(loc)) => ArtifactTarget::parse_location(&loc),
        }
    }
}

impl From<&ArtifactTarget> for pb::ArtifactTarget {
    fn from(t: &ArtifactTarget) -> Self {
        use pb::artifact_target::Kind;
        pb::ArtifactTarget {
            kind: Some(match t.location() {
                None => Kind::Inline(pb::Inline {}),
                Some(location) => Kind::Location(location),
            }),
        }
    }
}

impl From<&RendererVersion> for pb::RendererVersion {
    fn from(r: &RendererVersion) -> Self {
        pb::RendererVersion {
            montage: r.montage.clone(),
            x264: r.x264.clone(),
            ffmpeg: r.ffmpeg.clone(),
            encoders: r
                .encoders
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

impl From<pb::RendererVersion> for RendererVersion {
    fn from(r: pb::RendererVersion) -> Self {
        RendererVersion {
            montage: r.montage,
            x264: r.x264,
            ffmpeg: r.ffmpeg,
            encoders: r.encoders.into_iter().collect(),
        }
    }
}

/// A chunk request as the wire carries it, with the renderer version the
/// caller expects (checked by the worker, not part of the domain request).
#[derive(Debug, Clone, PartialEq)]
pub struct WireChunkRequest {
    /// The request.
    pub request: ChunkRequest,
    /// The renderer the caller's cache keys assume, if it says.
    pub renderer: Option<RendererVersion>,
    /// Deliver the PCM as soon as it is complete and announce it
    /// ([`ChunkEvent::Audio`]) before the result, while frames still render
    /// (inline and directory targets; see the proto's `audio_first`).
    pub audio_first: bool,
}

impl TryFrom<pb::RenderChunkRequest> for WireChunkRequest {
    type Error = FieldError;
    fn try_from(r: pb::RenderChunkRequest) -> Result<Self, Self::Error> {
        spec::check_id("composition_id", &r.composition_id, false)?;
        spec::check_id("job_id", &r.job_id, true)?;
        let frames: FrameRange = r
            .frames
            .ok_or_else(|| FieldError::missing("frames"))?
            .try_into()?;
        // No composition is longer; and `last + 1`, which every span
        // computation needs, must exist.
        if frames.last.0 >= composition::MAX_DURATION_FRAMES {
            return Err(FieldError::new(
                "frames",
                format!(
                    "last frame {} is beyond the longest composition ({} frames)",
                    frames.last,
                    composition::MAX_DURATION_FRAMES
                ),
            ));
        }
        if r.composition_start > frames.first.0 {
            return Err(FieldError::new(
                "composition_start",
                format!(
                    "{} is after the chunk's first frame {}",
                    r.composition_start, frames.first
                ),
            ));
        }
        let every_nth_frame = match r.every_nth_frame {
            None => 1,
            Some(0) => {
                return Err(FieldError::new(
                    "every_nth_frame",
                    "0 is invalid: keep at least 1 frame in every 1 (leave unset for every frame)",
                ));
            }
            Some(n) => n,
        };
        let audio = r.audio.unwrap_or_default();
        if let Some(rate) = audio.sample_rate
            && rate != composition::SAMPLE_RATE
        {
            return Err(FieldError::new(
                "audio.sample_rate",
                format!(
                    "{rate} is not supported: compositions render at {} Hz",
                    composition::SAMPLE_RATE
                ),
            ));
        }
        if let Some(channels) = audio.channels
            && channels as usize != composition::AUDIO_CHANNELS
        {
            return Err(FieldError::new(
                "audio.channels",
                format!(
                    "{channels} is not supported: compositions render {} channels",
                    composition::AUDIO_CHANNELS
                ),
            ));
        }
        let video = match r.video {
            None => VideoSettings::default(),
            Some(v) => v.try_into()?,
        };
        Ok(WireChunkRequest {
            request: ChunkRequest {
                job_id: r.job_id,
                source: source(r.source)?,
                props: props_from_json("props_json", &r.props_json)?,
                composition_id: r.composition_id,
                span: ChunkSpan {
                    index: ChunkIndex(r.chunk_index),
                    frames,
                    composition_start: r.composition_start,
                    every_nth_frame,
                },
                video,
                pcm_format: pcm_format("audio.pcm_format", audio.pcm_format)?,
                target: r
                    .output
                    .ok_or_else(|| FieldError::missing("output"))?
                    .try_into()?,
                frames_to: match r.frames_to {
                    None => FrameSink::Encode,
                    Some(sink) => sink.try_into()?,
                },
            },
            renderer: r.renderer.map(RendererVersion::from),
            audio_first: r.audio_first,
        })
    }
}

impl From<&WireChunkRequest> for pb::RenderChunkRequest {
    fn from(w: &WireChunkRequest) -> Self {
        let r = &w.request;
        pb::RenderChunkRequest {
            job_id: r.job_id.clone(),
            chunk_index: r.span.index.0,
            source: Some((&r.source).into()),
            composition_id: r.composition_id.clone(),
            props_json: spec::canonical_json(&serde_json::Value::Object(r.props.clone())),
            frames: Some(r.span.frames.into()),
            composition_start: r.span.composition_start,
            every_nth_frame: Some(r.span.every_nth_frame),
            video: Some((&r.video).into()),
            audio: Some(pb::AudioSettings {
                sample_rate: Some(composition::SAMPLE_RATE),
                channels: Some(composition::AUDIO_CHANNELS as u32),
                pcm_format: pb::PcmFormat::from(r.pcm_format).into(),
            }),
            output: Some((&r.target).into()),
            renderer: w.renderer.as_ref().map(Into::into),
            frames_to: frame_sink_to_wire(&r.frames_to),
            audio_first: w.audio_first,
        }
    }
}

impl TryFrom<pb::FrameSink> for FrameSink {
    type Error = FieldError;
    fn try_from(s: pb::FrameSink) -> Result<Self, Self::Error> {
        use pb::frame_sink::Kind;
        match s
            .kind
            .ok_or_else(|| FieldError::missing("frames_to.kind"))?
        {
            Kind::Skip(_) => Ok(FrameSink::Skip),
            Kind::Images(i) => {
                let format = ImageFormat::parse(&i.format)
                    .filter(|f| f.for_sequences())
                    .ok_or_else(|| {
                        FieldError::new(
                            "frames_to.images.format",
                            format!("`{}` is not png or jpeg", spec::quote(&i.format)),
                        )
                    })?;
                let jpeg_quality = match i.jpeg_quality {
                    None => spec::DEFAULT_JPEG_QUALITY,
                    Some(q) => u8::try_from(q).unwrap_or(0),
                };
                if i.total_frames == 0 {
                    return Err(FieldError::new(
                        "frames_to.images.total_frames",
                        "0 is invalid: a sequence has at least 1 frame",
                    ));
                }
                let sequence = ImageSequence {
                    format,
                    jpeg_quality,
                    target: ImageTarget::parse(&i.location)
                        .map_err(|e| FieldError::new("frames_to.images.location", e.message))?,
                    total_frames: i.total_frames,
                };
                sequence
                    .validate()
                    .map_err(|e| FieldError::new("frames_to.images.jpeg_quality", e.message))?;
                Ok(FrameSink::Images(sequence))
            }
        }
    }
}

/// The wire's sink: none for [`FrameSink::Encode`], so requests that encode
/// are what they were before sinks existed.
fn frame_sink_to_wire(s: &FrameSink) -> Option<pb::FrameSink> {
    use pb::frame_sink::Kind;
    let kind = match s {
        FrameSink::Encode => return None,
        FrameSink::Skip => Kind::Skip(pb::SkipFrames {}),
        FrameSink::Images(i) => Kind::Images(pb::ImageSequence {
            format: i.format.as_str().to_owned(),
            jpeg_quality: Some(u32::from(i.jpeg_quality)),
            location: i.target.location(),
            total_frames: i.total_frames,
        }),
    };
    Some(pb::FrameSink { kind: Some(kind) })
}

impl TryFrom<pb::DescribeRequest> for DescribeRequest {
    type Error = FieldError;
    fn try_from(r: pb::DescribeRequest) -> Result<Self, Self::Error> {
        spec::check_id("composition_id", &r.composition_id, false)?;
        Ok(DescribeRequest {
            source: source(r.source)?,
            props: props_from_json("props_json", &r.props_json)?,
            composition_id: r.composition_id,
            palette_frames: r.palette_frames,
        })
    }
}

impl From<&DescribeRequest> for pb::DescribeRequest {
    fn from(r: &DescribeRequest) -> Self {
        pb::DescribeRequest {
            source: Some((&r.source).into()),
            composition_id: r.composition_id.clone(),
            props_json: spec::canonical_json(&serde_json::Value::Object(r.props.clone())),
            palette_frames: r.palette_frames.clone(),
        }
    }
}

/// A composition's metadata and the renderer that resolved it.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    /// The metadata.
    pub meta: CompositionMeta,
    /// The worker's renderer versions.
    pub renderer: RendererVersion,
    /// The GIF palette of the frames the request named, if it named any.
    pub gif_palette: Option<spec::GifPalette>,
}

impl TryFrom<pb::DescribeResponse> for Described {
    type Error = FieldError;
    fn try_from(r: pb::DescribeResponse) -> Result<Self, Self::Error> {
        Ok(Described {
            meta: r
                .meta
                .ok_or_else(|| FieldError::missing("meta"))?
                .try_into()?,
            renderer: r
                .renderer
                .ok_or_else(|| FieldError::missing("renderer"))?
                .into(),
            gif_palette: r
                .gif_palette
                .as_deref()
                .map(spec::GifPalette::from_rgb)
                .transpose()?,
        })
    }
}

impl From<&Described> for pb::DescribeResponse {
    fn from(d: &Described) -> Self {
        pb::DescribeResponse {
            meta: Some((&d.meta).into()),
            renderer: Some((&d.renderer).into()),
            gif_palette: d.gif_palette.as_ref().map(spec::GifPalette::to_rgb),
        }
    }
}

fn artifact_kind(field: &str, value: i32) -> Result<ArtifactKind, FieldError> {
    match pb::ArtifactKind::try_from(value) {
        Ok(pb::ArtifactKind::VideoTs) => Ok(ArtifactKind::VideoTs),
        Ok(pb::ArtifactKind::AudioPcm) => Ok(ArtifactKind::AudioPcm),
        Ok(pb::ArtifactKind::Unspecified) | Err(_) => Err(FieldError::new(
            field,
            format!("{value} is not an artifact kind"),
        )),
    }
}

impl From<ArtifactKind> for pb::ArtifactKind {
    fn from(k: ArtifactKind) -> Self {
        match k {
            ArtifactKind::VideoTs => pb::ArtifactKind::VideoTs,
            ArtifactKind::AudioPcm => pb::ArtifactKind::AudioPcm,
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl From<&StageTimings> for pb::StageTimings {
    fn from(t: &StageTimings) -> Self {
        pb::StageTimings {
            render_us: micros(t.render),
            convert_us: micros(t.convert),
            encode_us: micros(t.encode),
            audio_us: micros(t.audio),
            deliver_us: micros(t.deliver),
            total_us: micros(t.total),
        }
    }
}

impl From<pb::StageTimings> for StageTimings {
    fn from(t: pb::StageTimings) -> Self {
        StageTimings {
            render: Duration::from_micros(t.render_us),
            convert: Duration::from_micros(t.convert_us),
            encode: Duration::from_micros(t.encode_us),
            audio: Duration::from_micros(t.audio_us),
            deliver: Duration::from_micros(t.deliver_us),
            total: Duration::from_micros(t.total_us),
        }
    }
}

impl TryFrom<pb::ChunkResult> for ChunkReport {
    type Error = FieldError;
    fn try_from(r: pb::ChunkResult) -> Result<Self, Self::Error> {
        let artifacts = r
            .artifacts
            .into_iter()
            .enumerate()
            .map(|(i, a)| delivered_artifact(&format!("result.artifacts[{i}]"), a))
            .collect::<Result<Vec<_>, FieldError>>()?;
        Ok(ChunkReport {
            chunk_index: r.chunk_index,
            frame_count: r.frame_count,
            sample_count: r.sample_count,
            pcm_format: pcm_format("result.pcm_format", r.pcm_format)?,
            artifacts,
            timings: r.timings.unwrap_or_default().into(),
        })
    }
}

impl From<&ChunkReport> for pb::ChunkResult {
    fn from(r: &ChunkReport) -> Self {
        pb::ChunkResult {
            chunk_index: r.chunk_index,
            frame_count: r.frame_count,
            sample_count: r.sample_count,
            pcm_format: pb::PcmFormat::from(r.pcm_format).into(),
            artifacts: r.artifacts.iter().map(pb::Artifact::from).collect(),
            timings: Some((&r.timings).into()),
        }
    }
}

/// A delivered artifact from the wire; errors name `field` (the artifact's
/// place in its message).
fn delivered_artifact(field: &str, a: pb::Artifact) -> Result<DeliveredArtifact, FieldError> {
    Ok(DeliveredArtifact {
        kind: artifact_kind(&format!("{field}.kind"), a.kind)?,
        location: (!a.location.is_empty()).then_some(a.location),
        sha256: ContentHash::parse_lower_hex(&a.sha256)
            .map_err(|e| FieldError::new(format!("{field}.sha256"), e.to_string()))?,
        size: a.size,
    })
}

impl From<&DeliveredArtifact> for pb::Artifact {
    fn from(a: &DeliveredArtifact) -> Self {
        pb::Artifact {
            kind: pb::ArtifactKind::from(a.kind).into(),
            location: a.location.clone().unwrap_or_default(),
            sha256: a.sha256.to_hex(),
            size: a.size,
        }
    }
}

impl From<ChunkProgress> for pb::Progress {
    fn from(p: ChunkProgress) -> Self {
        pb::Progress {
            frames_rendered: p.frames_rendered,
            frames_encoded: p.frames_encoded,
            frames_total: p.frames_total,
        }
    }
}

impl TryFrom<pb::RenderChunkEvent> for ChunkEvent {
    type Error = FieldError;
    fn try_from(e: pb::RenderChunkEvent) -> Result<Self, Self::Error> {
        use pb::render_chunk_event::Event;
        match e.event.ok_or_else(|| FieldError::missing("event"))? {
            Event::Progress(p) => Ok(ChunkEvent::Progress(ChunkProgress {
                frames_rendered: p.frames_rendered,
                frames_encoded: p.frames_encoded,
                frames_total: p.frames_total,
            })),
            Event::Data(d) => Ok(ChunkEvent::Data {
                kind: artifact_kind("data.kind", d.kind)?,
                offset: d.offset,
                bytes: d.data,
            }),
            Event::Result(r) => Ok(ChunkEvent::Result(r.try_into()?)),
            Event::Audio(a) => {
                let a = delivered_artifact("audio", a)?;
                if a.kind != ArtifactKind::AudioPcm {
                    return Err(FieldError::new(
                        "audio.kind",
                        format!("{:?} announced as the chunk's audio", a.kind),
                    ));
                }
                Ok(ChunkEvent::Audio(a))
            }
        }
    }
}

impl From<ChunkEvent> for pb::RenderChunkEvent {
    fn from(e: ChunkEvent) -> Self {
        use pb::render_chunk_event::Event;
        pb::RenderChunkEvent {
            event: Some(match e {
                ChunkEvent::Progress(p) => Event::Progress(p.into()),
                ChunkEvent::Data {
                    kind,
                    offset,
                    bytes,
                } => Event::Data(pb::ArtifactData {
                    kind: pb::ArtifactKind::from(kind).into(),
                    offset,
                    data: bytes,
                }),
                ChunkEvent::Result(r) => Event::Result((&r).into()),
                ChunkEvent::Audio(a) => Event::Audio((&a).into()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_bad_fields_are_named() {
        let meta = CompositionMeta {
            id: "promo".into(),
            width: 1920,
            height: 1080,
            fps: Fps::new(30_000, 1001).expect("fps"),
            duration_frames: 300,
            has_audio: true,
            version: "1".into(),
            props: serde_json::json!({"name": "Ada"})
                .as_object()
                .cloned()
                .expect("object"),
        };
        let wire = pb::CompositionMeta::from(&meta);
        assert_eq!(
            CompositionMeta::try_from(wire.clone()).expect("valid"),
            meta
        );

        let mut no_fps = wire.clone();
        no_fps.fps = None;
        assert_eq!(
            CompositionMeta::try_from(no_fps)
                .expect_err("missing")
                .to_string(),
            "field `fps`: is required but was not set"
        );
        let mut wide = wire;
        wide.width = 9000;
        assert_eq!(
            CompositionMeta::try_from(wide)
                .expect_err("too wide")
                .to_string(),
            "field `meta`: composition `promo`: width 9000 is out of range: allowed 1-8192"
        );
    }

    #[test]
    fn props_must_be_an_object() {
        assert!(props_from_json("props_json", "").expect("empty").is_empty());
        assert_eq!(
            props_from_json("props_json", "[1]")
                .expect_err("array")
                .to_string(),
            "field `props_json`: props must be a JSON object, got [1]"
        );
        assert!(props_from_json("props_json", "{").is_err());
    }

    #[test]
    fn inverted_range_names_the_field() {
        let err = FrameRange::try_from(pb::FrameRange { first: 9, last: 3 }).expect_err("inverted");
        assert_eq!(
            err.within("request").to_string(),
            "field `request.frames`: range 9-3 is inverted: the first frame must not be after the last"
        );
    }
}
