//! The scene document as written: serde types, from which the JSON Schema in
//! `docs/scene.schema.json` is generated. Validation into the typed scene
//! happens in `load`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::limits::{
    Blur, Coord, Degrees, Extent, FontSize, Frame, LetterSpacing, LineHeight, MAX_FRAME, Num,
    PlaybackRate, Radius, Scale, StrokeWidth, Unit, Volume,
};
use crate::{MAX_DIMENSION, MAX_DURATION_FRAMES, MAX_FPS};

/// A point `[x, y]` in pixels.
pub type PointDoc = [Num<Coord>; 2];

/// A size `[w, h]` in pixels.
pub type SizeDoc = [Num<Extent>; 2];

/// A scene document (`scene.json`): fonts and compositions.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SceneDoc {
    /// Editors' schema reference; ignored.
    #[serde(rename = "$schema", default)]
    pub schema: Option<String>,
    /// Format version: 1.
    #[schemars(range(min = 1, max = 1))]
    pub version: u32,
    /// Font files in the bundle (TrueType/OpenType), relative paths. Text
    /// uses these fonts and no others.
    #[serde(default)]
    pub fonts: Vec<String>,
    /// The compositions.
    pub compositions: Vec<CompositionDoc>,
}

/// A frame rate: an integer (`30`) or a fraction as text (`"30000/1001"`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum FpsDoc {
    /// Whole frames per second.
    Integer(#[schemars(range(min = 1, max = MAX_FPS))] u32),
    /// `"num/den"` or `"num"`.
    Text(String),
}

/// A whole number, or a template string filled from props (`"{frames}"`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CountDoc {
    /// The number.
    Number(#[schemars(range(min = 1, max = MAX_DURATION_FRAMES))] u64),
    /// A template that must yield a whole number.
    Template(String),
}

/// One composition.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompositionDoc {
    /// Unique id within the bundle.
    pub id: String,
    /// Width in pixels, 1-8192.
    #[schemars(range(min = 1, max = MAX_DIMENSION))]
    pub width: u32,
    /// Height in pixels, 1-8192.
    #[schemars(range(min = 1, max = MAX_DIMENSION))]
    pub height: u32,
    /// Frame rate.
    pub fps: FpsDoc,
    /// Duration in frames.
    pub duration: CountDoc,
    /// Declared props with their defaults; `null` declares a required prop.
    #[serde(default)]
    pub props: BTreeMap<String, serde_json::Value>,
    /// Layers, back to front.
    #[serde(default)]
    pub layers: Vec<LayerDoc>,
    /// Audio tracks, mixed.
    #[serde(default)]
    pub audio: Vec<AudioDoc>,
}

/// A property value, or keyframes of it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "AnimDoc_{T}")]
pub enum AnimDoc<T> {
    /// Keyframes.
    Keyframes(KeyframesDoc<T>),
    /// The same value on every frame.
    Static(T),
}

/// Keyframes of a property.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "KeyframesDoc_{T}")]
pub struct KeyframesDoc<T> {
    /// At least one keyframe, frames strictly increasing.
    pub keyframes: Vec<KeyframeDoc<T>>,
    /// Repeat the keyframes with period `last.frame − first.frame`.
    #[serde(default, rename = "loop")]
    pub looped: bool,
}

/// One keyframe.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "KeyframeDoc_{T}")]
pub struct KeyframeDoc<T> {
    /// Frame in the layer's time (a group's children count from the group's
    /// `time_offset`).
    pub frame: Num<Frame>,
    /// The value.
    pub value: T,
    /// Easing of the segment to the next keyframe: `hold`, `linear`
    /// (default), `ease-in-quad`, `ease-out-quad`, `ease-in-out-quad`,
    /// `ease-in-cubic`, `ease-out-cubic`, `ease-in-out-cubic`, `ease-in-sine`,
    /// `ease-out-sine`, `ease-in-out-sine`, `cubic-bezier(x1, y1, x2, y2)`.
    #[serde(default)]
    pub easing: Option<String>,
}

/// A scale: one number for both axes, or `[sx, sy]`.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ScaleDoc {
    /// Uniform.
    Uniform(Num<Scale>),
    /// Per axis.
    Xy([Num<Scale>; 2]),
}

/// The kind of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LayerType {
    /// Fills `size` (default: the composition) with `color`.
    Solid,
    /// A linear gradient from `from` to `to` through `stops`, filling `size`.
    LinearGradient,
    /// A radial gradient around `center` with `radius`, filling `size`.
    RadialGradient,
    /// A rectangle of `size` with corner `radius`, `fill` and `stroke`.
    Rect,
    /// An ellipse inscribed in `size`, with `fill` and `stroke`.
    Ellipse,
    /// SVG path data `d`, with `fill` and `stroke`.
    Path,
    /// Shaped text.
    Text,
    /// A PNG, JPEG, WebP or SVG image (still: animated files are refused).
    Image,
    /// A precomposition: its own `layers`, `time_offset` and optional `clip`.
    Group,
    /// Timed text from SRT or WebVTT (`src` file or `text`), one cue at a
    /// time, styled like text.
    Captions,
    /// A video file, decoded frame-exactly, with its sound.
    Video,
}

/// Blend modes, as in CSS `mix-blend-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)] // the names are the CSS ones
pub enum BlendDoc {
    #[default]
    Normal,
    Multiply,
    Screen,
    Overlay,
    Darken,
    Lighten,
    ColorDodge,
    ColorBurn,
    HardLight,
    SoftLight,
    Difference,
    Exclusion,
    Hue,
    Saturation,
    Color,
    Luminosity,
    Plus,
}

/// Horizontal text alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)] // self-explanatory
pub enum AlignDoc {
    #[default]
    Left,
    Center,
    Right,
}

/// Vertical text alignment within the text box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)] // self-explanatory
pub enum VAlignDoc {
    #[default]
    Top,
    Middle,
    Bottom,
}

/// What text does with its `size` box when it does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OverflowDoc {
    /// Draw all of it, outside the box too.
    #[default]
    Visible,
    /// Draw only what is inside the box.
    Clip,
    /// Cut the text at the last character that fits, ending it with `…`.
    Ellipsis,
    /// Lower the font size until it fits (`shrink_to_fit`).
    Shrink,
}

/// How an image fits its `size` box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FitDoc {
    /// Scale to fit inside, keep aspect, centre.
    #[default]
    Contain,
    /// Scale to cover, keep aspect, centre, clip to the box.
    Cover,
    /// Stretch to the box.
    Fill,
}

/// A gradient stop.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopDoc {
    /// Position along the gradient, 0-1, non-decreasing.
    pub offset: Num<Unit>,
    /// Colour (`#rrggbb`, `#rrggbbaa`, `#rgb`, `transparent`, `white`, `black`).
    pub color: AnimDoc<String>,
}

/// A stroke.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StrokeDoc {
    /// Colour.
    pub color: AnimDoc<String>,
    /// Width in pixels (layer space).
    pub width: AnimDoc<Num<StrokeWidth>>,
}

/// A drop shadow under text.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowDoc {
    /// Colour (its alpha is the shadow's strength).
    pub color: AnimDoc<String>,
    /// Offset `[dx, dy]` in layer pixels (default `[0, 0]`).
    #[serde(default)]
    pub offset: Option<AnimDoc<PointDoc>>,
    /// Blur radius in pixels (the Gaussian's standard deviation is half of
    /// it, as in CSS); default 0.
    #[serde(default)]
    pub blur: Option<AnimDoc<Num<Blur>>>,
}

/// A gradient fill of text, in the gradient layers' syntax (layer space).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum GradientDoc {
    /// From `from` to `to` through `stops`.
    LinearGradient {
        /// Start point.
        from: AnimDoc<PointDoc>,
        /// End point.
        to: AnimDoc<PointDoc>,
        /// At least two stops.
        stops: Vec<StopDoc>,
    },
    /// Around `center` out to `radius`.
    RadialGradient {
        /// Centre.
        center: AnimDoc<PointDoc>,
        /// Radius in pixels.
        radius: AnimDoc<Num<Radius>>,
        /// At least two stops.
        stops: Vec<StopDoc>,
    },
}

/// What an animation of text moves one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UnitDoc {
    /// Each laid-out line.
    Line,
    /// Each word (Unicode word boundaries).
    Word,
    /// Each character (grapheme cluster: an emoji sequence is one).
    Character,
}

/// Kinetic text: each unit (line, word or character, in reading order) gets
/// these properties, evaluated `i × stagger` frames later for unit `i`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnimateDoc {
    /// What moves: `line`, `word` or `character`.
    pub by: UnitDoc,
    /// Frames between one unit's start and the next's (fractions allowed).
    pub stagger: Num<Frame>,
    /// Opacity of each unit, times the layer's (default 1).
    #[serde(default)]
    pub opacity: Option<AnimDoc<Num<Unit>>>,
    /// Offset `[dx, dy]` of each unit in layer pixels (default `[0, 0]`).
    #[serde(default)]
    pub offset: Option<AnimDoc<PointDoc>>,
    /// Scale of each unit about its centre (default 1).
    #[serde(default)]
    pub scale: Option<AnimDoc<ScaleDoc>>,
    /// Clockwise rotation of each unit about its centre in degrees (default 0).
    #[serde(default)]
    pub rotation: Option<AnimDoc<Num<Degrees>>>,
}

/// A layer. `type` decides which of the kind-specific fields apply; a field
/// that does not apply to the type is an error.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LayerDoc {
    /// The kind of layer.
    #[serde(rename = "type")]
    pub kind: LayerType,
    /// Name, unique among its siblings, without `.`: overrides address
    /// layers by the dotted path of names (`Title Card.Headline`).
    pub name: String,
    /// First frame the layer shows (default 0).
    #[serde(default, rename = "in")]
    #[schemars(range(min = 0, max = MAX_FRAME))]
    pub in_frame: Option<u64>,
    /// First frame the layer no longer shows (default: never ends).
    #[serde(default, rename = "out")]
    #[schemars(range(min = 0, max = MAX_FRAME))]
    pub out_frame: Option<u64>,
    /// Whether the layer shows at all (default true).
    #[serde(default)]
    pub visible: Option<bool>,
    /// The point of the layer (layer space) placed at `position`; rotation
    /// and scale are about it. Default `[0, 0]`.
    #[serde(default)]
    pub anchor: Option<AnimDoc<PointDoc>>,
    /// Where the anchor goes in the parent. Default `[0, 0]`.
    #[serde(default)]
    pub position: Option<AnimDoc<PointDoc>>,
    /// Scale about the anchor. Default 1.
    #[serde(default)]
    pub scale: Option<AnimDoc<ScaleDoc>>,
    /// Clockwise rotation in degrees about the anchor. Default 0.
    #[serde(default)]
    pub rotation: Option<AnimDoc<Num<Degrees>>>,
    /// Opacity 0-1. Default 1.
    #[serde(default)]
    pub opacity: Option<AnimDoc<Num<Unit>>>,
    /// Blend mode. Default `normal`.
    #[serde(default)]
    pub blend: Option<BlendDoc>,

    /// `solid` and `text`: the colour.
    #[serde(default)]
    pub color: Option<AnimDoc<String>>,
    /// Box size `[w, h]`: of a solid or gradient (default the composition),
    /// rect, ellipse, image (default the image's own size) or text (wrapping
    /// width and the box for alignment and shrink-to-fit).
    #[serde(default)]
    pub size: Option<AnimDoc<SizeDoc>>,
    /// `linear-gradient`: start point.
    #[serde(default)]
    pub from: Option<AnimDoc<PointDoc>>,
    /// `linear-gradient`: end point.
    #[serde(default)]
    pub to: Option<AnimDoc<PointDoc>>,
    /// `radial-gradient`: centre.
    #[serde(default)]
    pub center: Option<AnimDoc<PointDoc>>,
    /// `radial-gradient`: radius; `rect`: corner radius.
    #[serde(default)]
    pub radius: Option<AnimDoc<Num<Radius>>>,
    /// Gradient stops, at least two.
    #[serde(default)]
    pub stops: Option<Vec<StopDoc>>,
    /// `rect`, `ellipse`, `path`: fill colour.
    #[serde(default)]
    pub fill: Option<AnimDoc<String>>,
    /// `rect`, `ellipse`, `path`: stroke; `text`, `captions`: an outline
    /// around the glyphs (`width` shows outside the fill).
    #[serde(default)]
    pub stroke: Option<StrokeDoc>,
    /// `path`: SVG path data.
    #[serde(default)]
    pub d: Option<String>,

    /// `text`: the text, with `{prop}` placeholders (`{{` for a literal `{`)
    /// and number formats (`{amount:.2f}`, `{count:,}`, `{n:05}`).
    #[serde(default)]
    pub text: Option<String>,
    /// `text`: font family name (one of the bundle's fonts).
    #[serde(default)]
    pub font: Option<String>,
    /// `text`: font weight 1-1000 (default 400); a face of exactly this weight,
    /// or a variable face whose `wght` axis covers it, must be in the bundle.
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub weight: Option<u16>,
    /// `text`: italic face (default false).
    #[serde(default)]
    pub italic: Option<bool>,
    /// `text`: font size in pixels.
    #[serde(default)]
    pub font_size: Option<Num<FontSize>>,
    /// `text`: line height as a multiple of the font size (default 1.2).
    #[serde(default)]
    pub line_height: Option<Num<LineHeight>>,
    /// `text`: extra space between characters in pixels (default 0).
    #[serde(default)]
    pub letter_spacing: Option<Num<LetterSpacing>>,
    /// `text`: horizontal alignment in the box (default `left`).
    #[serde(default)]
    pub align: Option<AlignDoc>,
    /// `text`: vertical alignment in the box (default `top`).
    #[serde(default)]
    pub valign: Option<VAlignDoc>,
    /// `text`: wrap at the box width (default true when `size` is given).
    #[serde(default)]
    pub wrap: Option<bool>,
    /// `text`: reduce the font size until the text fits `size` (default false).
    #[serde(default)]
    pub shrink_to_fit: Option<bool>,
    /// `text`, `captions`: what text that does not fit `size` does:
    /// `visible` (default), `clip`, `ellipsis` or `shrink`.
    #[serde(default)]
    pub overflow: Option<OverflowDoc>,
    /// `text`, `captions`: a drop shadow.
    #[serde(default)]
    pub shadow: Option<ShadowDoc>,
    /// `text`, `captions`: a gradient fill instead of `color`.
    #[serde(default)]
    pub gradient: Option<GradientDoc>,
    /// `text`: animate lines, words or characters one after another.
    #[serde(default)]
    pub animate: Option<AnimateDoc>,
    /// `captions`: the colour of the word being spoken, for cues with word
    /// timings (WebVTT `<00:00:01.500>` tags).
    #[serde(default)]
    pub highlight: Option<AnimDoc<String>>,

    /// `image`: PNG, JPEG, WebP or SVG file in the bundle; `video`: a video
    /// file (MP4, MOV, WebM, …); with `{prop}` placeholders.
    #[serde(default)]
    pub src: Option<String>,
    /// `image`, `video`: how the picture fits `size` (default `contain`).
    #[serde(default)]
    pub fit: Option<FitDoc>,

    /// `video`: layer frame where the video's first frame shows (default 0).
    #[serde(default)]
    #[schemars(range(min = 0, max = MAX_FRAME))]
    pub start: Option<u64>,
    /// `video`: skip this many frames' worth (at the composition's rate) of
    /// the video's start (default 0).
    #[serde(default)]
    #[schemars(range(min = 0, max = MAX_FRAME))]
    pub trim_start: Option<u64>,
    /// `video`: use the video only up to this many frames' worth from its
    /// start (default: all).
    #[serde(default)]
    #[schemars(range(min = 0, max = MAX_FRAME))]
    pub trim_end: Option<u64>,
    /// `video`: playback speed (default 1), a multiple of 0.001; the sound
    /// plays only at 1.
    #[serde(default)]
    pub playback_rate: Option<Num<PlaybackRate>>,
    /// `video`: repeat the trimmed video (default false).
    #[serde(default, rename = "loop")]
    pub looped: Option<bool>,
    /// `video`: gain of its sound, 0-4 (default 1), keyframeable in layer
    /// frames.
    #[serde(default)]
    pub volume: Option<AnimDoc<Num<Volume>>>,
    /// `video`: no sound (default false).
    #[serde(default)]
    pub muted: Option<bool>,

    /// `group`: child layers, back to front.
    #[serde(default)]
    pub layers: Option<Vec<LayerDoc>>,
    /// `group`: children see frame `f − time_offset` (default 0).
    #[serde(default)]
    #[schemars(range(min = -(MAX_FRAME as i64), max = MAX_FRAME))]
    pub time_offset: Option<i64>,
    /// `group`: clip children to `[0, 0, w, h]` in the group's space.
    #[serde(default)]
    pub clip: Option<SizeDoc>,
}

/// An audio track.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AudioDoc {
    /// Name, for errors and overrides.
    #[serde(default)]
    pub name: Option<String>,
    /// Audio file in the bundle (WAV, MP3, AAC/M4A, FLAC, Ogg Vorbis), with
    /// `{prop}` placeholders.
    pub src: String,
    /// Composition frame where the track starts (default 0).
    #[serde(default)]
    #[schemars(range(min = 0, max = MAX_FRAME))]
    pub start: Option<u64>,
    /// Composition frame where the track stops (default: its end, or the
    /// composition's end when looping).
    #[serde(default)]
    #[schemars(range(min = 0, max = MAX_FRAME))]
    pub end: Option<u64>,
    /// Skip this many frames' worth of the file's start (default 0).
    #[serde(default)]
    #[schemars(range(min = 0, max = MAX_FRAME))]
    pub trim_start: Option<u64>,
    /// Use the file only up to this many frames' worth (default: all).
    #[serde(default)]
    #[schemars(range(min = 0, max = MAX_FRAME))]
    pub trim_end: Option<u64>,
    /// Repeat the trimmed file (default false).
    #[serde(default, rename = "loop")]
    pub looped: Option<bool>,
    /// Gain, 0-4 (default 1), keyframeable in composition frames.
    #[serde(default)]
    pub volume: Option<AnimDoc<Num<Volume>>>,
    /// Fade in over this many frames from `start` (default 0).
    #[serde(default)]
    #[schemars(range(min = 0, max = MAX_FRAME))]
    pub fade_in: Option<u64>,
    /// Fade out over this many frames before the track stops (default 0).
    #[serde(default)]
    #[schemars(range(min = 0, max = MAX_FRAME))]
    pub fade_out: Option<u64>,
}
