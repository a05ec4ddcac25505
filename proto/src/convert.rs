//! Conversions between wire messages and domain types.
//!
//! `TryFrom<pb::X>` validates: a missing or out-of-range field is a
//! [`FieldError`] that names the field, so a worker can answer
//! `INVALID_ARGUMENT` with a message a person can act on.

use composition::CompositionMeta;
use timebase::{Fps, FrameRange, SampleSpan};

use crate::v1 as pb;

/// A wire message with a missing or invalid field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct FieldError {
    /// The field's path in the message, e.g. `frames.last`.
    pub field: String,
    /// What is wrong with it and what is allowed.
    pub message: String,
}

impl FieldError {
    /// An error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The error for a required message field that was not set.
    pub fn missing(field: impl Into<String>) -> Self {
        FieldError::new(field, "is required but was not set")
    }

    /// Nests the error under `outer` (`meta` + `fps` → `meta.fps`).
    pub fn within(self, outer: &str) -> Self {
        FieldError {
            field: format!("{outer}.{}", self.field),
            message: self.message,
        }
    }
}

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
