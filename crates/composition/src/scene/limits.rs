//! The range of every number in the scene format. Each range is written
//! once, here: the loader refuses values outside it and the JSON Schema
//! states it as `minimum`/`maximum` (through [`Num`] for decimals, through
//! `#[schemars(range)]` naming these constants for whole numbers), so the
//! two cannot disagree. `docs/scene-format.md` lists them.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer};

/// Largest distance from the origin of a coordinate (anchor, position,
/// gradient points, path data), in pixels: far beyond any frame (8192), small
/// enough that `f32` geometry stays exact to a hundredth of a pixel.
pub const MAX_COORD: f64 = 1_000_000.0;

/// The last frame number a scene may name (layer `in`/`out`, keyframes,
/// group `time_offset`, audio placement): the longest composition.
pub const MAX_FRAME: u64 = crate::MAX_DURATION_FRAMES;

/// A closed range of allowed values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    /// The smallest allowed value.
    pub min: f64,
    /// The largest allowed value.
    pub max: f64,
}

impl Range {
    /// `v` if it is a finite number within the range.
    ///
    /// # Errors
    /// "`v` is out of range: allowed `min`-`max`".
    pub fn check(self, v: f64) -> Result<f64, String> {
        if v.is_finite() && v >= self.min && v <= self.max {
            Ok(v)
        } else {
            Err(format!("{} is out of range: allowed {self}", show(v)))
        }
    }

    /// Both values of a pair, each within the range.
    ///
    /// # Errors
    /// "`[x, y]` is out of range: allowed `min`-`max` for each".
    pub fn check2(self, [x, y]: [f64; 2]) -> Result<[f64; 2], String> {
        if self.check(x).is_ok() && self.check(y).is_ok() {
            Ok([x, y])
        } else {
            Err(format!(
                "[{}, {}] is out of range: allowed {self} for each",
                show(x),
                show(y)
            ))
        }
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min < 0.0 {
            write!(f, "{} to {}", show(self.min), show(self.max))
        } else {
            write!(f, "{}-{}", show(self.min), show(self.max))
        }
    }
}

/// A number as people read it: `96`, `0.5`, and `1e-320` or `1e308` rather
/// than hundreds of digits.
pub fn show(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && a.is_finite() && !(1e-6..1e15).contains(&a) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// A whole number's allowed range, checked with its exact value.
///
/// # Errors
/// "`v` is out of range: allowed `min`-`max`".
pub fn check_int<T: Copy + Into<i128> + fmt::Display>(
    v: T,
    min: i128,
    max: i128,
) -> Result<T, String> {
    if (min..=max).contains(&v.into()) {
        Ok(v)
    } else if min < 0 {
        Err(format!("{v} is out of range: allowed {min} to {max}"))
    } else {
        Err(format!("{v} is out of range: allowed {min}-{max}"))
    }
}

/// A kind of number in the scene format: its range and the name of its
/// schema definition.
pub trait Limit {
    /// The schema definition's name (`FontSize`).
    const NAME: &'static str;
    /// What the number is, for the schema.
    const DESCRIPTION: &'static str;
    /// The allowed values.
    const RANGE: Range;
}

macro_rules! limits {
    ($($(#[$doc:meta])* $name:ident = $min:expr, $max:expr, $desc:literal;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub enum $name {}
        impl Limit for $name {
            const NAME: &'static str = stringify!($name);
            const DESCRIPTION: &'static str = $desc;
            const RANGE: Range = Range { min: $min, max: $max };
        }
    )*};
}

limits! {
    /// Anchor, position, gradient points, path data.
    Coord = -MAX_COORD, MAX_COORD, "A coordinate in pixels.";
    /// Box sizes and group clips.
    Extent = 0.0, MAX_COORD, "A width or height in pixels.";
    /// Rect corner radius, radial gradient radius.
    Radius = 0.0, MAX_COORD, "A radius in pixels.";
    /// Scale factors (negative mirrors).
    Scale = -1000.0, 1000.0, "A scale factor (negative mirrors).";
    /// Rotation.
    Degrees = -1_000_000.0, 1_000_000.0, "An angle in degrees, clockwise.";
    /// Opacity and gradient stop offsets.
    Unit = 0.0, 1.0, "A fraction from 0 to 1.";
    /// Stroke width.
    StrokeWidth = 0.0, 10_000.0, "A stroke width in pixels.";
    /// Audio gain.
    Volume = 0.0, 4.0, "An audio gain (1: as recorded).";
    /// Video playback rate, in multiples of 1/1000 (`super::video::RATE_DEN`).
    PlaybackRate = super::video::MIN_PLAYBACK_RATE, super::video::MAX_PLAYBACK_RATE, "A video playback rate (1: as recorded), a multiple of 0.001.";
    /// Text size: below 1 px nothing is legible, and cosmic-text refuses a
    /// line of height 0.
    FontSize = 1.0, 4096.0, "A font size in pixels.";
    /// Line height as a multiple of the font size.
    LineHeight = 0.1, 10.0, "A line height as a multiple of the font size.";
    /// Extra space between characters.
    LetterSpacing = -1000.0, 1000.0, "Extra space between characters in pixels.";
    /// Text shadow blur radius.
    Blur = 0.0, 1000.0, "A blur radius in pixels.";
    /// Keyframe times (fractional frames are allowed).
    Frame = 0.0, MAX_FRAME as f64, "A frame number (fractions allowed).";
}

/// A decimal number of the kind `L`, as written in the document. Its value is
/// read through [`Num::check`], which applies `L`'s range, so no unchecked
/// number reaches the renderer.
pub struct Num<L> {
    value: f64,
    limit: PhantomData<fn() -> L>,
}

impl<L: Limit> Num<L> {
    /// A number as if written in the document (for documents built in code).
    pub fn new(value: f64) -> Self {
        Num {
            value,
            limit: PhantomData,
        }
    }

    /// The value, if within `L`'s range.
    ///
    /// # Errors
    /// A message naming the value and the range.
    pub fn check(&self) -> Result<f64, String> {
        L::RANGE.check(self.value)
    }
}

impl<L> Clone for Num<L> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<L> Copy for Num<L> {}

impl<L> fmt::Debug for Num<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<'de, L> Deserialize<'de> for Num<L> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Num {
            value: f64::deserialize(d)?,
            limit: PhantomData,
        })
    }
}

impl<L: Limit> JsonSchema for Num<L> {
    fn schema_name() -> Cow<'static, str> {
        L::NAME.into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": L::DESCRIPTION,
            "type": "number",
            "minimum": L::RANGE.min,
            "maximum": L::RANGE.max,
        })
    }
}

/// Both values of a pair of `L`.
///
/// # Errors
/// A message naming the pair and the range.
pub fn check2<L: Limit>([x, y]: &[Num<L>; 2]) -> Result<[f64; 2], String> {
    L::RANGE.check2([x.value, y.value])
}
