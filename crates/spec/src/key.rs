//! Cache keys: the sha256 of a versioned, canonical encoding of everything
//! that decides an artifact's bytes.
//!
//! A chunk's bytes depend on the composition source's contents, the
//! composition and its *resolved* props (defaults merged, so `{}` and the
//! defaults written out are one key), the span, the encoder and audio
//! settings, and the versions of the code that renders and encodes them:
//! Montage's renderer, the libx264 and FFmpeg builds the worker runs, and
//! for other codecs their encoder library (libx265, libvpx, SVT-AV1: Debian
//! ships each as its own package, upgraded apart from FFmpeg). A
//! fleet upgraded worker by worker therefore never mixes chunks that cannot
//! join: their keys differ.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{ChunkSpan, ContentHash, PcmFormat, Props, SourceIdentity, VideoCodec, VideoSettings};

/// The version of the key encoding itself: bumped whenever the encoding
/// changes, so older entries stop matching.
pub const KEY_FORMAT: u32 = 2;

/// The versions of everything on a worker that decides the bytes it
/// renders, as the worker reports them (`Describe`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct RendererVersion {
    /// Montage's renderer and bitstream version, e.g.
    /// `montage-0.1.0+bitstream.1`.
    pub montage: String,
    /// The libx264 build, as the encoder writes it into its stream, e.g.
    /// `core 164 r3095 baee400`.
    pub x264: String,
    /// The FFmpeg libraries, e.g. `avcodec 59.37.100, avformat 59.27.100,
    /// swscale 6.7.100, avutil 57.28.100`.
    pub ffmpeg: String,
    /// The builds of the encoder libraries of codecs other than H.264, by
    /// codec name (`h265`: `x265 3.5+1-f0c1022b6`, `vp9`: `libvpx v1.12.0`,
    /// `av1`: `SVT-AV1 v1.4.1`). FFmpeg's version does not pin them: they
    /// are separate shared libraries. Empty (and left out of the JSON) for a
    /// renderer that reports none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub encoders: BTreeMap<String, String>,
}

impl RendererVersion {
    /// The versions that decide chunks of `codec`: everything but the
    /// encoder libraries of other codecs. An H.264 chunk's key therefore
    /// stays what it was before other encoders were reported, and a libvpx
    /// upgrade changes VP9 chunks' keys only.
    pub fn for_codec(&self, codec: VideoCodec) -> RendererVersion {
        RendererVersion {
            encoders: self
                .encoders
                .iter()
                .filter(|(name, _)| name.as_str() == codec.as_str())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ..self.clone()
        }
    }
}

impl std::fmt::Display for RendererVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; x264 {}; {}", self.montage, self.x264, self.ffmpeg)?;
        for (codec, version) in &self.encoders {
            write!(f, "; {codec}: {version}")?;
        }
        Ok(())
    }
}

/// Everything that decides one chunk's bytes (not where it goes, who asked
/// or which worker renders it).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ChunkIdentity<'a> {
    /// The renderer's versions.
    pub renderer: &'a RendererVersion,
    /// The source's contents.
    pub source: &'a SourceIdentity,
    /// The composition's id.
    pub composition: &'a str,
    /// Props with the composition's defaults merged in.
    pub resolved_props: &'a Props,
    /// The frames.
    #[serde(serialize_with = "span_fields")]
    pub span: &'a ChunkSpan,
    /// Encoder settings.
    pub video: &'a VideoSettings,
    /// PCM format of the audio artifact.
    pub pcm_format: PcmFormat,
}

fn span_fields<S: serde::Serializer>(span: &&ChunkSpan, s: S) -> Result<S::Ok, S::Error> {
    // The index is where the chunk sits in one plan, not what it holds: two
    // plans that give a chunk the same frames share it.
    serde_json::json!({
        "first": span.frames.first.0,
        "last": span.frames.last.0,
        "composition_start": span.composition_start,
        "every_nth_frame": span.every_nth_frame,
    })
    .serialize(s)
}

impl ChunkIdentity<'_> {
    /// The chunk's cache key, naming only the encoder library of the
    /// chunk's codec ([`RendererVersion::for_codec`]).
    pub fn key(&self) -> ContentHash {
        let renderer = self.renderer.for_codec(self.video.codec);
        key_of(
            "montage-chunk",
            &ChunkIdentity {
                renderer: &renderer,
                ..*self
            },
        )
    }
}

/// The key of `value` in the `domain` namespace: sha256 over the domain,
/// [`KEY_FORMAT`] and the value's canonical JSON.
pub fn key_of(domain: &str, value: &impl Serialize) -> ContentHash {
    let json = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
    let text = format!("{domain}/{KEY_FORMAT}\n{}", canonical_json(&json));
    ContentHash::of_bytes(text.as_bytes())
}

/// `value` as JSON with object keys sorted at every level, whatever
/// `serde_json` features the build enabled.
pub fn canonical_json(value: &serde_json::Value) -> String {
    fn write(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&map[k], out);
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chunker::ChunkIndex;
    use timebase::FrameRange;

    fn renderer() -> RendererVersion {
        RendererVersion {
            montage: "m".into(),
            x264: "core 164".into(),
            ffmpeg: "avcodec 59".into(),
            encoders: [("vp9".to_owned(), "libvpx v1.12.0".to_owned())].into(),
        }
    }

    #[test]
    fn keys_follow_what_decides_the_bytes() {
        let renderer = renderer();
        let source = SourceIdentity::Registered {
            version: "1".into(),
        };
        let props: Props = serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":1}}"#).expect("json");
        let reordered: Props = serde_json::from_str(r#"{"a":{"x":1,"y":2},"b":1}"#).expect("json");
        let span = ChunkSpan {
            index: ChunkIndex(3),
            frames: FrameRange::new(30, 59).expect("range"),
            composition_start: 0,
            every_nth_frame: 1,
        };
        let video = VideoSettings::default();
        let id = ChunkIdentity {
            renderer: &renderer,
            source: &source,
            composition: "c",
            resolved_props: &props,
            span: &span,
            video: &video,
            pcm_format: PcmFormat::F32le,
        };
        let key = id.key();
        // Key order and the chunk's index in its plan do not matter.
        let moved = ChunkSpan {
            index: ChunkIndex(7),
            ..span
        };
        assert_eq!(
            ChunkIdentity {
                resolved_props: &reordered,
                span: &moved,
                ..id
            }
            .key(),
            key
        );
        // Everything else does.
        let newer = RendererVersion {
            x264: "core 165".into(),
            ..renderer.clone()
        };
        let other_source = SourceIdentity::Registered {
            version: "2".into(),
        };
        let lossless = VideoSettings::lossless();
        let later = ChunkSpan {
            frames: FrameRange::new(31, 59).expect("range"),
            ..span
        };
        for changed in [
            ChunkIdentity {
                renderer: &newer,
                ..id
            },
            ChunkIdentity {
                source: &other_source,
                ..id
            },
            ChunkIdentity {
                composition: "d",
                ..id
            },
            ChunkIdentity {
                video: &lossless,
                ..id
            },
            ChunkIdentity { span: &later, ..id },
            ChunkIdentity {
                pcm_format: PcmFormat::S16le,
                ..id
            },
        ] {
            assert_ne!(changed.key(), key, "{changed:?}");
        }
    }

    #[test]
    fn only_the_codecs_own_encoder_library_is_keyed() {
        let renderer = renderer();
        let newer_vpx = RendererVersion {
            encoders: [("vp9".to_owned(), "libvpx v1.13.0".to_owned())].into(),
            ..renderer.clone()
        };
        let without = RendererVersion {
            encoders: BTreeMap::new(),
            ..renderer.clone()
        };
        let source = SourceIdentity::Registered {
            version: "1".into(),
        };
        let props = Props::default();
        let span = ChunkSpan {
            index: ChunkIndex(0),
            frames: FrameRange::new(0, 9).expect("range"),
            composition_start: 0,
            every_nth_frame: 1,
        };
        let h264 = VideoSettings::default();
        let vp9 = VideoSettings::for_codec(VideoCodec::Vp9, false).expect("vp9");
        let key = |renderer: &RendererVersion, video: &VideoSettings| {
            ChunkIdentity {
                renderer,
                source: &source,
                composition: "c",
                resolved_props: &props,
                span: &span,
                video,
                pcm_format: PcmFormat::F32le,
            }
            .key()
        };
        // H.264 keys ignore libvpx (and stay those of a renderer that
        // reports no encoder library); VP9 keys follow it.
        assert_eq!(key(&renderer, &h264), key(&newer_vpx, &h264));
        assert_eq!(key(&renderer, &h264), key(&without, &h264));
        assert_ne!(key(&renderer, &vp9), key(&newer_vpx, &vp9));
        assert_eq!(
            renderer.to_string(),
            "m; x264 core 164; avcodec 59; vp9: libvpx v1.12.0"
        );
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"b":[{"d":1,"c":2}],"a":"x"}"#).expect("json");
        assert_eq!(canonical_json(&v), r#"{"a":"x","b":[{"c":2,"d":1}]}"#);
    }
}
