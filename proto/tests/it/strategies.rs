//! Generators of valid domain values, shared by the round trips and the
//! fuzzers.

use std::path::PathBuf;
use std::time::Duration;

use chunker::ChunkIndex;
use composition::CompositionMeta;
use proptest::prelude::*;
use spec::{
    ArtifactKind, ArtifactTarget, BundleRef, ChunkEvent, ChunkProgress, ChunkReport, ChunkRequest,
    ChunkSpan, ContentHash, DeliveredArtifact, DescribeRequest, H264_LEVELS, H264Profile, Location,
    MAX_BFRAMES, MAX_CRF, MAX_ENCODER_THREADS, MAX_KEYINT, PcmFormat, PixelFormat, Quality,
    RendererVersion, SourceSpec, StageTimings, VideoCodec, VideoSettings, X264_PRESETS,
};
use timebase::{Fps, FrameRange};

/// A path segment: what file and bucket names are made of.
fn segment() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._-]{0,11}".prop_filter("not . or ..", |s| s != "." && s != "..")
}

/// An absolute local path.
pub fn abs_path() -> impl Strategy<Value = PathBuf> {
    prop::collection::vec(segment(), 1..4).prop_map(|s| PathBuf::from(format!("/{}", s.join("/"))))
}

fn bucket() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9-]{2,20}[a-z0-9]"
}

pub fn hash() -> impl Strategy<Value = ContentHash> {
    any::<[u8; 32]>().prop_map(ContentHash::from_bytes)
}

/// Any text, up to the id limit, including what is not ASCII.
pub fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..max).prop_map(|c| c.into_iter().collect())
}

pub fn id() -> impl Strategy<Value = String> {
    text(40).prop_filter("non-empty", |s| !s.is_empty())
}

/// Props as a JSON object of the values scenes use.
pub fn props() -> impl Strategy<Value = spec::Props> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        text(16).prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(text(8), inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map(text(12), value, 0..5).prop_map(|m| m.into_iter().collect())
}

pub fn source() -> impl Strategy<Value = SourceSpec> {
    prop_oneof![
        Just(SourceSpec::Registered),
        abs_path().prop_map(SourceSpec::BundlePath),
        (
            bucket(),
            prop::collection::vec(segment(), 0..3),
            segment(),
            hash()
        )
            .prop_map(|(b, dirs, name, sha)| {
                let mut key = dirs.join("/");
                if !key.is_empty() {
                    key.push('/');
                }
                let reference =
                    BundleRef::parse(&format!("s3://{b}/{key}{name}.tar"), &sha.to_hex())
                        .expect("a valid S3 bundle");
                SourceSpec::BundleRef(reference)
            }),
        (abs_path(), hash()).prop_map(|(p, sha)| {
            let reference = BundleRef::parse(&format!("{}.tar", p.display()), &sha.to_hex())
                .expect("a valid local bundle");
            SourceSpec::BundleRef(reference)
        }),
    ]
}

pub fn target() -> impl Strategy<Value = ArtifactTarget> {
    prop_oneof![
        Just(ArtifactTarget::Inline),
        abs_path().prop_map(ArtifactTarget::Directory),
        (bucket(), prop::collection::vec(segment(), 0..3)).prop_map(|(b, dirs)| {
            let prefix: String = dirs.iter().map(|d| format!("{d}/")).collect();
            ArtifactTarget::Storage(
                Location::parse(&format!("s3://{b}/{prefix}")).expect("a valid prefix"),
            )
        }),
    ]
}

pub fn video() -> impl Strategy<Value = VideoSettings> {
    (
        prop::option::of(0..=MAX_CRF),
        prop::sample::select(X264_PRESETS.to_vec()),
        prop::sample::select(vec![
            H264Profile::Baseline,
            H264Profile::Main,
            H264Profile::High,
            H264Profile::High444,
        ]),
        prop::option::of(prop::sample::select(H264_LEVELS.to_vec())),
        1..=MAX_KEYINT,
        0..=MAX_BFRAMES,
        prop::sample::select(PixelFormat::ALL.to_vec()),
        prop::option::of(1..=MAX_ENCODER_THREADS),
        prop::sample::select(VideoCodec::ALL.to_vec()),
        any::<prop::sample::Index>(),
    )
        .prop_map(
            |(crf, preset, profile, level, keyint, bframes, pixel_format, threads, codec, pick)| {
                let mut v = VideoSettings {
                    codec,
                    quality: crf.map_or(Quality::Lossless, Quality::Crf),
                    preset: preset.to_owned(),
                    profile,
                    level: level.map(str::to_owned),
                    keyint,
                    bframes,
                    pixel_format,
                    encoder_threads: threads,
                    gif_palette: None,
                };
                // Other codecs than H.264 have their own pixel formats and
                // no level: pick among what they allow, so few are filtered.
                if codec != VideoCodec::H264 {
                    v.level = None;
                    v.pixel_format = *pick.get(v.pixel_formats());
                    if codec != VideoCodec::H265 {
                        v.bframes = 0;
                    }
                }
                if codec == VideoCodec::Gif {
                    // A palette of up to 256 colours from the pick.
                    let n = pick.index(256) + 1;
                    v.gif_palette = Some(
                        spec::GifPalette::new(
                            (0..n).map(|i| [i as u8, 255 - i as u8, 7]).collect(),
                        )
                        .expect("1-256 colours"),
                    );
                }
                v
            },
        )
        .prop_filter("valid settings", |v| v.validate().is_ok())
}

pub fn pcm() -> impl Strategy<Value = PcmFormat> {
    prop::sample::select(vec![PcmFormat::S16le, PcmFormat::F32le])
}

pub fn span() -> impl Strategy<Value = ChunkSpan> {
    (
        any::<u32>(),
        0..composition::MAX_DURATION_FRAMES,
        0..10_000u64,
        any::<prop::sample::Index>(),
        1..1000u32,
    )
        .prop_map(|(index, first, len, start, nth)| {
            let last = (first + len).min(composition::MAX_DURATION_FRAMES - 1);
            ChunkSpan {
                index: ChunkIndex(index),
                frames: FrameRange::new(first, last).expect("first <= last"),
                composition_start: start.index(usize::try_from(first + 1).unwrap_or(usize::MAX))
                    as u64,
                every_nth_frame: nth,
            }
        })
}

pub fn renderer() -> impl Strategy<Value = RendererVersion> {
    (
        text(30),
        text(30),
        text(30),
        proptest::collection::btree_map(text(8), text(30), 0..3),
    )
        .prop_map(|(montage, x264, ffmpeg, encoders)| RendererVersion {
            montage,
            x264,
            ffmpeg,
            encoders,
        })
}

pub fn chunk_request() -> impl Strategy<Value = ChunkRequest> {
    (
        text(60),
        source(),
        id(),
        props(),
        span(),
        video(),
        pcm(),
        target(),
        frame_sink(),
    )
        .prop_map(
            |(
                job_id,
                source,
                composition_id,
                props,
                span,
                video,
                pcm_format,
                target,
                frames_to,
            )| {
                ChunkRequest {
                    job_id,
                    source,
                    composition_id,
                    props,
                    span,
                    video,
                    pcm_format,
                    target,
                    frames_to,
                }
            },
        )
}

/// Every kind of frame sink: encode, skip, or images (PNG or JPEG, into a
/// directory or an S3 prefix).
pub fn frame_sink() -> impl Strategy<Value = spec::FrameSink> {
    let target = prop_oneof![
        "/[a-z]{1,8}/[a-z0-9-]{1,12}"
            .prop_map(|p| spec::ImageTarget::Directory(std::path::PathBuf::from(p))),
        "[a-z]{3,10}/[a-z]{1,8}/".prop_map(|p| {
            spec::ImageTarget::parse(&format!("s3://{p}")).expect("a valid prefix")
        }),
    ];
    let images = (
        prop_oneof![Just(spec::ImageFormat::Png), Just(spec::ImageFormat::Jpeg)],
        1u8..=100,
        target,
        1u64..=1_000_000,
    )
        .prop_map(|(format, jpeg_quality, target, total_frames)| {
            spec::FrameSink::Images(spec::ImageSequence {
                format,
                jpeg_quality,
                target,
                total_frames,
            })
        });
    prop_oneof![
        Just(spec::FrameSink::Encode),
        Just(spec::FrameSink::Skip),
        images,
    ]
}

pub fn describe_request() -> impl Strategy<Value = DescribeRequest> {
    (
        source(),
        id(),
        props(),
        proptest::collection::vec(any::<u64>(), 0..4),
    )
        .prop_map(
            |(source, composition_id, props, palette_frames)| DescribeRequest {
                source,
                composition_id,
                props,
                palette_frames,
            },
        )
}

pub fn meta() -> impl Strategy<Value = CompositionMeta> {
    (
        id(),
        1..=composition::MAX_DIMENSION,
        1..=composition::MAX_DIMENSION,
        prop::sample::select(vec![
            (24u32, 1u32),
            (25, 1),
            (30_000, 1001),
            (60, 1),
            (240, 1),
            (24_000, 1001),
            (1, 1),
        ]),
        1..=composition::MAX_DURATION_FRAMES,
        any::<bool>(),
        props(),
        text(20),
    )
        .prop_map(
            |(id, width, height, (num, den), duration_frames, has_audio, props, version)| {
                CompositionMeta {
                    id,
                    width,
                    height,
                    fps: Fps::new(num, den).expect("fps"),
                    duration_frames,
                    has_audio,
                    props,
                    version,
                }
            },
        )
}

fn micros() -> impl Strategy<Value = Duration> {
    (0..u64::MAX / 2).prop_map(Duration::from_micros)
}

/// A delivered artifact of one of `kinds`.
fn artifact(kinds: Vec<ArtifactKind>) -> impl Strategy<Value = DeliveredArtifact> {
    (
        prop::sample::select(kinds),
        prop::option::of(text(40).prop_filter("non-empty", |s| !s.is_empty())),
        hash(),
        any::<u64>(),
    )
        .prop_map(|(kind, location, sha256, size)| DeliveredArtifact {
            kind,
            location,
            sha256,
            size,
        })
}

pub fn report() -> impl Strategy<Value = ChunkReport> {
    let artifact = artifact(vec![ArtifactKind::VideoTs, ArtifactKind::AudioPcm]);
    (
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        pcm(),
        prop::collection::vec(artifact, 0..3),
        (micros(), micros(), micros(), micros(), micros(), micros()),
    )
        .prop_map(
            |(chunk_index, frame_count, sample_count, pcm_format, artifacts, t)| ChunkReport {
                chunk_index,
                frame_count,
                sample_count,
                pcm_format,
                artifacts,
                timings: StageTimings {
                    render: t.0,
                    convert: t.1,
                    encode: t.2,
                    audio: t.3,
                    deliver: t.4,
                    total: t.5,
                },
            },
        )
}

pub fn event() -> impl Strategy<Value = ChunkEvent> {
    prop_oneof![
        any::<(u64, u64, u64)>().prop_map(|(r, e, t)| ChunkEvent::Progress(ChunkProgress {
            frames_rendered: r,
            frames_encoded: e,
            frames_total: t,
        })),
        (
            prop::sample::select(vec![ArtifactKind::VideoTs, ArtifactKind::AudioPcm]),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(kind, offset, bytes)| ChunkEvent::Data {
                kind,
                offset,
                bytes,
            }),
        report().prop_map(ChunkEvent::Result),
        artifact(vec![ArtifactKind::AudioPcm]).prop_map(ChunkEvent::Audio),
    ]
}
