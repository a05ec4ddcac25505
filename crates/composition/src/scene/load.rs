//! From the document as written to the typed, validated scene.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tiny_skia::{BlendMode, Pixmap};

use super::anim::{Anim, Easing, Key, Lerp};
use super::guard::guard;
use super::limits::{Coord, Limit, MAX_FRAME, Num, check_int, check2};
use super::model::*;
use super::template::{Rgba, Template, parse_color};
use crate::{CompositionError, MAX_DURATION_FRAMES};
use timebase::Fps;

/// A 2-D point or size.
pub type V2 = [f64; 2];

/// The longest text a layer may hold, in characters.
pub const MAX_TEXT_CHARS: usize = 10_000;

/// The deepest nesting of groups.
pub const MAX_GROUP_DEPTH: usize = 16;

/// The most layers a composition may hold (all levels).
pub const MAX_LAYERS: usize = 10_000;

/// A validated composition.
#[derive(Debug, Clone)]
pub struct Comp {
    pub id: String,
    /// "scene.json: composition `promo`": the prefix of every error.
    pub ctx: String,
    pub width: u32,
    pub height: u32,
    pub fps: Fps,
    pub duration: Count,
    /// Declared props and their defaults (`Null`: required).
    pub props: BTreeMap<String, serde_json::Value>,
    pub layers: Vec<Layer>,
    pub audio: Vec<Track>,
}

/// A number given directly or by template.
#[derive(Debug, Clone)]
pub enum Count {
    Number(u64),
    Template(Template),
}

#[derive(Debug, Clone)]
pub struct Layer {
    pub name: String,
    /// Dotted path of names from the composition's top.
    pub path: String,
    pub in_frame: u64,
    pub out_frame: Option<u64>,
    pub visible: bool,
    pub anchor: Anim<V2>,
    pub position: Anim<V2>,
    pub scale: Anim<V2>,
    pub rotation: Anim<f64>,
    pub opacity: Anim<f64>,
    pub blend: BlendMode,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub struct Stop {
    pub offset: f64,
    pub color: Anim<Rgba>,
}

#[derive(Debug, Clone)]
pub struct ShapePaint {
    pub fill: Option<Anim<Rgba>>,
    pub stroke: Option<(Anim<Rgba>, Anim<f64>)>,
}

#[derive(Debug, Clone)]
pub enum Kind {
    Solid {
        color: Anim<Rgba>,
        size: Option<Anim<V2>>,
    },
    Linear {
        from: Anim<V2>,
        to: Anim<V2>,
        stops: Vec<Stop>,
        size: Option<Anim<V2>>,
    },
    Radial {
        center: Anim<V2>,
        radius: Anim<f64>,
        stops: Vec<Stop>,
        size: Option<Anim<V2>>,
    },
    Rect {
        size: Anim<V2>,
        radius: Anim<f64>,
        paint: ShapePaint,
    },
    Ellipse {
        size: Anim<V2>,
        paint: ShapePaint,
    },
    Path {
        path: Arc<tiny_skia::Path>,
        paint: ShapePaint,
    },
    Text(Box<TextLayer>),
    Image(ImageLayer),
    Video(Box<super::video::VideoLayer>),
    Group {
        layers: Vec<Layer>,
        time_offset: i64,
        clip: Option<V2>,
    },
}

#[derive(Debug, Clone)]
pub struct TextLayer {
    pub template: Template,
    /// Set by an override: used as is, not a template.
    pub text_override: Option<String>,
    pub family: String,
    pub weight: u16,
    pub italic: bool,
    pub font_size: f64,
    pub line_height: f64,
    pub letter_spacing: f64,
    pub align: AlignDoc,
    pub valign: VAlignDoc,
    pub size: Option<V2>,
    pub wrap: bool,
    pub shrink_to_fit: bool,
    pub overflow: OverflowDoc,
    pub color: Anim<Rgba>,
    /// Stroke, shadow, gradient and animation.
    pub fx: super::text_fx::Effects,
    /// For a `captions` layer: where its cues come from, and its cues.
    pub captions: Option<Box<super::captions::Captions>>,
    /// Filled when prepared: the glyphs in layer space (not for captions,
    /// whose cues hold theirs).
    pub shaped: Option<Arc<super::text::Shaped>>,
}

#[derive(Debug, Clone)]
pub struct ImageLayer {
    pub src: Template,
    pub size: Option<V2>,
    pub fit: FitDoc,
    /// Filled when prepared.
    pub pixmap: Option<Arc<Pixmap>>,
}

#[derive(Debug, Clone)]
pub struct Track {
    pub name: String,
    pub src: Template,
    pub start: u64,
    pub end: Option<u64>,
    pub trim_start: u64,
    pub trim_end: Option<u64>,
    pub looped: bool,
    pub volume: Anim<f64>,
    pub fade_in: u64,
    pub fade_out: u64,
}

fn invalid(ctx: &str, message: String) -> CompositionError {
    CompositionError::Invalid {
        context: ctx.to_owned(),
        message,
    }
}

/// Converts a possibly keyframed value, checking every value with `conv`.
pub fn anim<T, U: Lerp>(
    doc: &AnimDoc<T>,
    field: &str,
    ctx: &str,
    conv: impl Fn(&T) -> Result<U, String>,
) -> Result<Anim<U>, CompositionError> {
    let err = |m: String| invalid(ctx, format!("`{field}`: {m}"));
    match doc {
        AnimDoc::Static(v) => Ok(Anim::Static(conv(v).map_err(err)?)),
        AnimDoc::Keyframes(k) => {
            if k.keyframes.is_empty() {
                return Err(err("keyframes must not be empty".into()));
            }
            let mut keys = Vec::with_capacity(k.keyframes.len());
            for (i, kf) in k.keyframes.iter().enumerate() {
                let at = |m: String| err(format!("keyframes[{i}]: {m}"));
                let frame = kf.frame.check().map_err(|m| at(format!("frame {m}")))?;
                if let Some(prev) = keys.last().map(|k: &Key<U>| k.frame)
                    && frame <= prev
                {
                    return Err(at(format!(
                        "frame {frame} must be after the previous keyframe's frame {prev}"
                    )));
                }
                let easing = match &kf.easing {
                    None => Easing::Linear,
                    Some(e) => Easing::parse(e).map_err(at)?,
                };
                keys.push(Key {
                    frame,
                    value: conv(&kf.value).map_err(at)?,
                    easing,
                });
            }
            Ok(Anim::Keys {
                keys,
                looped: k.looped,
            })
        }
    }
}

/// A number within its kind's range.
pub(super) fn num<L: Limit>(v: &Num<L>) -> Result<f64, String> {
    v.check()
}

/// A pair of numbers, each within its kind's range.
pub(super) fn pair<L: Limit>(v: &[Num<L>; 2]) -> Result<V2, String> {
    check2(v)
}

/// A frame number of the scene (`in`, `out`, audio placement).
fn frame_number(v: Option<u64>, field: &str, ctx: &str) -> Result<Option<u64>, CompositionError> {
    v.map(|f| check_int(f, 0, i128::from(MAX_FRAME)))
        .transpose()
        .map_err(|m| invalid(ctx, format!("`{field}` {m}")))
}

#[allow(clippy::ptr_arg)] // a converter for `AnimDoc<String>` values, passed as `Fn(&String)`
pub(super) fn color(v: &String) -> Result<Rgba, String> {
    parse_color(v)
}

fn static_value<T: Clone + Lerp>(
    a: Anim<T>,
    field: &str,
    ctx: &str,
) -> Result<T, CompositionError> {
    match a {
        Anim::Static(v) => Ok(v),
        Anim::Keys { .. } => Err(invalid(ctx, format!("`{field}` cannot be keyframed"))),
    }
}

/// Blend mode from its CSS name.
pub fn blend_mode(b: BlendDoc) -> BlendMode {
    match b {
        BlendDoc::Normal => BlendMode::SourceOver,
        BlendDoc::Multiply => BlendMode::Multiply,
        BlendDoc::Screen => BlendMode::Screen,
        BlendDoc::Overlay => BlendMode::Overlay,
        BlendDoc::Darken => BlendMode::Darken,
        BlendDoc::Lighten => BlendMode::Lighten,
        BlendDoc::ColorDodge => BlendMode::ColorDodge,
        BlendDoc::ColorBurn => BlendMode::ColorBurn,
        BlendDoc::HardLight => BlendMode::HardLight,
        BlendDoc::SoftLight => BlendMode::SoftLight,
        BlendDoc::Difference => BlendMode::Difference,
        BlendDoc::Exclusion => BlendMode::Exclusion,
        BlendDoc::Hue => BlendMode::Hue,
        BlendDoc::Saturation => BlendMode::Saturation,
        BlendDoc::Color => BlendMode::Color,
        BlendDoc::Luminosity => BlendMode::Luminosity,
        BlendDoc::Plus => BlendMode::Plus,
    }
}

/// What the loader needs to check fonts.
pub trait FontCheck {
    /// Whether a face of this family, weight and style is in the bundle; the
    /// error lists what there is.
    fn check(&self, family: &str, weight: u16, italic: bool) -> Result<(), String>;
}

/// Converts a composition document.
pub fn composition(
    doc: &CompositionDoc,
    file: &str,
    fonts: &dyn FontCheck,
) -> Result<Comp, CompositionError> {
    let ctx = format!("{file}: composition `{}`", doc.id);
    if doc.id.is_empty() || doc.id.len() > 128 {
        return Err(invalid(&ctx, "`id` must be 1-128 characters".into()));
    }
    let fps = match &doc.fps {
        FpsDoc::Integer(n) => check_int(*n, i128::from(crate::MIN_FPS), i128::from(crate::MAX_FPS))
            .map_err(|m| invalid(&ctx, format!("`fps` {m}")))
            .and_then(|n| Fps::new(n, 1).map_err(|e| invalid(&ctx, format!("`fps`: {e}")))),
        FpsDoc::Text(s) => s
            .parse::<Fps>()
            .map_err(|e| e.to_string())
            .and_then(|fps| crate::check_fps(fps).map(|()| fps))
            .map_err(|m| invalid(&ctx, format!("`fps`: {m}"))),
    }?;
    for (name, v) in [("width", doc.width), ("height", doc.height)] {
        if v == 0 || v > crate::MAX_DIMENSION {
            return Err(invalid(
                &ctx,
                format!(
                    "`{name}` {v} is out of range: allowed 1-{}",
                    crate::MAX_DIMENSION
                ),
            ));
        }
    }
    let duration = match &doc.duration {
        CountDoc::Number(n) => Count::Number(
            check_int(*n, 1, i128::from(MAX_DURATION_FRAMES))
                .map_err(|m| invalid(&ctx, format!("`duration` {m}")))?,
        ),
        CountDoc::Template(t) => Count::Template(
            Template::parse(t).map_err(|m| invalid(&ctx, format!("`duration`: {m}")))?,
        ),
    };
    check_prop_names(doc, &ctx)?;
    let mut loader = Loader {
        ctx: &ctx,
        fonts,
        count: 0,
    };
    let layers = loader.layers(&doc.layers, "", 0)?;
    check_budget(&layers, doc, &duration, &ctx)?;
    let audio = doc
        .audio
        .iter()
        .enumerate()
        .map(|(i, a)| track(a, i, &ctx))
        .collect::<Result<Vec<_>, _>>()?;
    let comp = Comp {
        id: doc.id.clone(),
        ctx,
        width: doc.width,
        height: doc.height,
        fps,
        duration,
        props: doc.props.clone(),
        layers,
        audio,
    };
    check_templates(&comp)?;
    Ok(comp)
}

/// Refuses a scene over the render budget's limits before any prop is
/// known: text counts its literal characters, and without a fixed duration
/// the first layer is taken to be a cached background. `describe` checks
/// again with the props.
fn check_budget(
    layers: &[Layer],
    doc: &CompositionDoc,
    duration: &Count,
    ctx: &str,
) -> Result<(), CompositionError> {
    let tally = super::budget::tally(layers, &mut |_, t| Ok(t.template.literal_chars()))?;
    let background = layers.first().is_some_and(|l| match duration {
        Count::Number(n) => super::render::is_static(l, *n),
        Count::Template(_) => true,
    });
    let size = (doc.width, doc.height);
    let b = super::budget::budget(size, background, &tally, 0);
    super::budget::check(&b, size, &tally, ctx)
}

/// Prop names are plain words: a dot makes a key an override, braces would
/// not survive a placeholder.
fn check_prop_names(doc: &CompositionDoc, ctx: &str) -> Result<(), CompositionError> {
    for name in doc.props.keys() {
        if name.contains('.') || name.contains('{') || name.contains('}') || name.is_empty() {
            return Err(invalid(
                ctx,
                format!(
                    "prop `{name}`: prop names must be non-empty without `.`, `{{` or `}}` (dotted names are overrides)"
                ),
            ));
        }
    }
    Ok(())
}

/// Converts audio track `i` of the composition `ctx`.
fn track(a: &AudioDoc, i: usize, ctx: &str) -> Result<Track, CompositionError> {
    let name = a.name.clone().unwrap_or_else(|| format!("audio[{i}]"));
    let actx = format!("{ctx}: audio `{name}`");
    let volume = match &a.volume {
        None => Anim::Static(1.0),
        Some(v) => anim(v, "volume", &actx, num)?,
    };
    let start = frame_number(a.start, "start", &actx)?;
    let end = frame_number(a.end, "end", &actx)?;
    let trim_start = frame_number(a.trim_start, "trim_start", &actx)?;
    let trim_end = frame_number(a.trim_end, "trim_end", &actx)?;
    let fade_in = frame_number(a.fade_in, "fade_in", &actx)?;
    let fade_out = frame_number(a.fade_out, "fade_out", &actx)?;
    if let (Some(s), Some(e)) = (trim_start, trim_end)
        && e <= s
    {
        return Err(invalid(
            &actx,
            format!("`trim_end` {e} must be after `trim_start` {s}"),
        ));
    }
    if let Some(e) = end
        && e <= start.unwrap_or(0)
    {
        return Err(invalid(&actx, format!("`end` {e} must be after `start`")));
    }
    Ok(Track {
        name,
        src: Template::parse(&a.src).map_err(|m| invalid(&actx, format!("`src`: {m}")))?,
        start: start.unwrap_or(0),
        end,
        trim_start: trim_start.unwrap_or(0),
        trim_end,
        looped: a.looped.unwrap_or(false),
        volume,
        fade_in: fade_in.unwrap_or(0),
        fade_out: fade_out.unwrap_or(0),
    })
}

/// Every placeholder must name a declared prop.
fn check_templates(comp: &Comp) -> Result<(), CompositionError> {
    let mut used: Vec<(String, String)> = Vec::new();
    if let Count::Template(t) = &comp.duration {
        used.extend(t.props().map(|p| (p.to_owned(), "`duration`".to_owned())));
    }
    fn walk(layers: &[Layer], used: &mut Vec<(String, String)>) {
        for l in layers {
            match &l.kind {
                Kind::Text(t) => used.extend(
                    t.template
                        .props()
                        .map(|p| (p.to_owned(), format!("layer `{}`", l.path))),
                ),
                Kind::Image(i) => used.extend(
                    i.src
                        .props()
                        .map(|p| (p.to_owned(), format!("layer `{}`", l.path))),
                ),
                Kind::Video(v) => used.extend(
                    v.src
                        .props()
                        .map(|p| (p.to_owned(), format!("layer `{}`", l.path))),
                ),
                Kind::Group { layers, .. } => walk(layers, used),
                _ => {}
            }
        }
    }
    walk(&comp.layers, &mut used);
    for t in &comp.audio {
        used.extend(
            t.src
                .props()
                .map(|p| (p.to_owned(), format!("audio `{}`", t.name))),
        );
    }
    for (prop, by) in used {
        if !comp.props.contains_key(&prop) {
            return Err(invalid(
                &format!("{}: {by}", comp.ctx),
                format!(
                    "placeholder `{{{prop}}}` names no declared prop{}; declare it in `props`",
                    super::template::suggest(&prop, comp.props.keys().map(String::as_str))
                ),
            ));
        }
    }
    Ok(())
}

/// Loads the layer tree of one composition, counting layers on the way.
struct Loader<'a> {
    /// "scene.json: compositions[0]: composition `promo`".
    ctx: &'a str,
    fonts: &'a dyn FontCheck,
    /// Layers loaded so far, at every level.
    count: usize,
}

impl Loader<'_> {
    /// Loads sibling layers under the group at `parent` (a dotted path, empty
    /// at the top), `depth` groups deep.
    fn layers(
        &mut self,
        docs: &[LayerDoc],
        parent: &str,
        depth: usize,
    ) -> Result<Vec<Layer>, CompositionError> {
        if depth > MAX_GROUP_DEPTH {
            return Err(invalid(
                self.ctx,
                format!("groups nest deeper than {MAX_GROUP_DEPTH} levels"),
            ));
        }
        let mut names = BTreeSet::new();
        let mut out = Vec::with_capacity(docs.len());
        for d in docs {
            self.count += 1;
            if self.count > MAX_LAYERS {
                return Err(invalid(self.ctx, format!("more than {MAX_LAYERS} layers")));
            }
            let path = if parent.is_empty() {
                d.name.clone()
            } else {
                format!("{parent}.{}", d.name)
            };
            let lctx = format!("{}: layer `{path}`", self.ctx);
            if d.name.is_empty() || d.name.contains('.') || d.name.trim() != d.name {
                return Err(invalid(
                    &lctx,
                    "`name` must be non-empty, without `.` or surrounding spaces (overrides address layers by dotted paths)".into(),
                ));
            }
            if !names.insert(d.name.clone()) {
                return Err(invalid(
                    &lctx,
                    "another layer beside it has the same name: names must be unique among siblings"
                        .into(),
                ));
            }
            out.push(self.layer(d, path, &lctx, depth)?);
        }
        Ok(out)
    }

    /// Loads one layer: the fields its type takes, then what every layer has.
    fn layer(
        &mut self,
        d: &LayerDoc,
        path: String,
        lctx: &str,
        depth: usize,
    ) -> Result<Layer, CompositionError> {
        let f = Fields::new(d, lctx)?;
        let size = f.size()?;
        let kind = match d.kind {
            LayerType::Solid => f.solid(size)?,
            LayerType::LinearGradient => f.linear_gradient(size)?,
            LayerType::RadialGradient => f.radial_gradient(size)?,
            LayerType::Rect => f.rect(size)?,
            LayerType::Ellipse => f.ellipse(size)?,
            LayerType::Path => f.path()?,
            LayerType::Text => f.text(size, self.fonts)?,
            LayerType::Captions => f.captions(size, self.fonts)?,
            LayerType::Image => f.image(size)?,
            LayerType::Video => Kind::Video(Box::new(super::video::layer(
                d,
                lctx,
                f.static_size(size)?,
            )?)),
            LayerType::Group => self.group(&f, &path, depth)?,
        };
        f.common(path, kind)
    }

    /// A group: its children are loaded one level deeper.
    fn group(
        &mut self,
        f: &Fields<'_>,
        path: &str,
        depth: usize,
    ) -> Result<Kind, CompositionError> {
        let children = f.require(&f.d.layers, "layers")?;
        let clip =
            f.d.clip
                .as_ref()
                .map(pair)
                .transpose()
                .map_err(|m| f.invalid(format!("`clip`: {m}")))?;
        let max = i128::from(MAX_FRAME);
        let time_offset = check_int(f.d.time_offset.unwrap_or(0), -max, max)
            .map_err(|m| f.invalid(format!("`time_offset` {m}")))?;
        Ok(Kind::Group {
            layers: self.layers(children, path, depth + 1)?,
            time_offset,
            clip,
        })
    }
}

/// The fields of a layer document that only some layer types take, with the
/// name of that field in the document.
fn given_fields(d: &LayerDoc) -> [(&'static str, bool); 31] {
    [
        ("color", d.color.is_some()),
        ("size", d.size.is_some()),
        ("from", d.from.is_some()),
        ("to", d.to.is_some()),
        ("center", d.center.is_some()),
        ("radius", d.radius.is_some()),
        ("stops", d.stops.is_some()),
        ("fill", d.fill.is_some()),
        ("stroke", d.stroke.is_some()),
        ("d", d.d.is_some()),
        ("text", d.text.is_some()),
        ("font", d.font.is_some()),
        ("weight", d.weight.is_some()),
        ("italic", d.italic.is_some()),
        ("font_size", d.font_size.is_some()),
        ("line_height", d.line_height.is_some()),
        ("letter_spacing", d.letter_spacing.is_some()),
        ("align", d.align.is_some()),
        ("valign", d.valign.is_some()),
        ("wrap", d.wrap.is_some()),
        ("shrink_to_fit", d.shrink_to_fit.is_some()),
        ("overflow", d.overflow.is_some()),
        ("shadow", d.shadow.is_some()),
        ("gradient", d.gradient.is_some()),
        ("animate", d.animate.is_some()),
        ("highlight", d.highlight.is_some()),
        ("src", d.src.is_some()),
        ("fit", d.fit.is_some()),
        ("layers", d.layers.is_some()),
        ("time_offset", d.time_offset.is_some()),
        ("clip", d.clip.is_some()),
    ]
}

/// The fields text and captions layers share: font, layout and effects.
const TEXT_STYLE: &[&str] = &[
    "font",
    "weight",
    "italic",
    "font_size",
    "line_height",
    "letter_spacing",
    "align",
    "valign",
    "wrap",
    "shrink_to_fit",
    "size",
    "color",
    "overflow",
    "stroke",
    "shadow",
    "gradient",
];

/// The type-specific fields a layer type takes, in the order errors list them.
fn fields_of(kind: LayerType) -> Vec<&'static str> {
    match kind {
        LayerType::Solid => vec!["color", "size"],
        LayerType::LinearGradient => vec!["from", "to", "stops", "size"],
        LayerType::RadialGradient => vec!["center", "radius", "stops", "size"],
        LayerType::Rect => vec!["size", "radius", "fill", "stroke"],
        LayerType::Ellipse => vec!["size", "fill", "stroke"],
        LayerType::Path => vec!["d", "fill", "stroke"],
        LayerType::Text => [&["text"], TEXT_STYLE, &["animate"]].concat(),
        LayerType::Captions => [&["src", "text"], TEXT_STYLE, &["highlight"]].concat(),
        LayerType::Image => vec!["src", "size", "fit"],
        LayerType::Video => super::video::FIELDS.to_vec(),
        LayerType::Group => vec!["layers", "time_offset", "clip"],
    }
}

/// One layer document whose fields fit its type: converts those fields,
/// naming the layer in every error.
struct Fields<'a> {
    d: &'a LayerDoc,
    /// "…: layer `Title Card.Headline`".
    ctx: &'a str,
    /// The type as written (`linear-gradient`).
    type_name: String,
}

impl<'a> Fields<'a> {
    /// Checks that every field given applies to the layer's type.
    fn new(d: &'a LayerDoc, ctx: &'a str) -> Result<Fields<'a>, CompositionError> {
        let type_name = serde_json::to_value(d.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let allowed = fields_of(d.kind);
        let given = given_fields(d);
        let video = super::video::given_fields(d);
        if let Some((field, _)) = given
            .iter()
            .chain(&video)
            .find(|(f, set)| *set && !allowed.contains(f))
        {
            return Err(invalid(
                ctx,
                format!(
                    "`{field}` does not apply to a {type_name} layer; it takes {}",
                    allowed
                        .iter()
                        .map(|a| format!("`{a}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(Fields { d, ctx, type_name })
    }

    fn invalid(&self, message: String) -> CompositionError {
        invalid(self.ctx, message)
    }

    /// The error for a field this type of layer needs and does not have.
    fn missing(&self, field: &str) -> CompositionError {
        self.invalid(format!("a {} layer needs `{field}`", self.type_name))
    }

    /// A field this type of layer needs.
    fn require<'v, T>(&self, value: &'v Option<T>, field: &str) -> Result<&'v T, CompositionError> {
        value.as_ref().ok_or_else(|| self.missing(field))
    }

    /// An optional point, `[0, 0]` by default.
    fn point(
        &self,
        a: &Option<AnimDoc<PointDoc>>,
        field: &str,
    ) -> Result<Anim<V2>, CompositionError> {
        match a {
            None => Ok(Anim::Static([0.0; 2])),
            Some(a) => anim(a, field, self.ctx, pair),
        }
    }

    /// An optional number of the text layer with its default.
    fn number<L: Limit>(
        &self,
        v: Option<Num<L>>,
        field: &str,
        default: f64,
    ) -> Result<f64, CompositionError> {
        v.map_or(Ok(default), |v| v.check())
            .map_err(|m| self.invalid(format!("`{field}` {m}")))
    }

    /// `size`, which several types take.
    fn size(&self) -> Result<Option<Anim<V2>>, CompositionError> {
        self.d
            .size
            .as_ref()
            .map(|s| anim(s, "size", self.ctx, pair))
            .transpose()
    }

    /// A size that cannot be keyframed (text and image boxes).
    fn static_size(&self, size: Option<Anim<V2>>) -> Result<Option<V2>, CompositionError> {
        size.map(|s| static_value(s, "size", self.ctx)).transpose()
    }

    /// An optional colour.
    fn color(&self, default: Rgba) -> Result<Anim<Rgba>, CompositionError> {
        match &self.d.color {
            None => Ok(Anim::Static(default)),
            Some(c) => anim(c, "color", self.ctx, color),
        }
    }

    fn stops(&self) -> Result<Vec<Stop>, CompositionError> {
        stops_of(self.d.stops.as_deref().unwrap_or(&[]), "stops", self.ctx)
    }

    /// The fill and stroke of a shape: at least one of them.
    fn paint(&self) -> Result<ShapePaint, CompositionError> {
        let fill = self
            .d
            .fill
            .as_ref()
            .map(|f| anim(f, "fill", self.ctx, color))
            .transpose()?;
        let stroke = match &self.d.stroke {
            None => None,
            Some(s) => Some((
                anim(&s.color, "stroke.color", self.ctx, color)?,
                anim(&s.width, "stroke.width", self.ctx, num)?,
            )),
        };
        if fill.is_none() && stroke.is_none() {
            return Err(self.invalid("a shape needs `fill`, `stroke` or both".into()));
        }
        Ok(ShapePaint { fill, stroke })
    }

    fn solid(&self, size: Option<Anim<V2>>) -> Result<Kind, CompositionError> {
        let c = self.require(&self.d.color, "color")?;
        Ok(Kind::Solid {
            color: anim(c, "color", self.ctx, color)?,
            size,
        })
    }

    fn linear_gradient(&self, size: Option<Anim<V2>>) -> Result<Kind, CompositionError> {
        let from = self.require(&self.d.from, "from")?;
        let to = self.require(&self.d.to, "to")?;
        Ok(Kind::Linear {
            from: anim(from, "from", self.ctx, pair)?,
            to: anim(to, "to", self.ctx, pair)?,
            stops: self.stops()?,
            size,
        })
    }

    fn radial_gradient(&self, size: Option<Anim<V2>>) -> Result<Kind, CompositionError> {
        let center = self.require(&self.d.center, "center")?;
        let radius = self.require(&self.d.radius, "radius")?;
        Ok(Kind::Radial {
            center: anim(center, "center", self.ctx, pair)?,
            radius: anim(radius, "radius", self.ctx, num)?,
            stops: self.stops()?,
            size,
        })
    }

    fn rect(&self, size: Option<Anim<V2>>) -> Result<Kind, CompositionError> {
        let size = size.ok_or_else(|| self.missing("size"))?;
        Ok(Kind::Rect {
            size,
            radius: match &self.d.radius {
                None => Anim::Static(0.0),
                Some(r) => anim(r, "radius", self.ctx, num)?,
            },
            paint: self.paint()?,
        })
    }

    fn ellipse(&self, size: Option<Anim<V2>>) -> Result<Kind, CompositionError> {
        let size = size.ok_or_else(|| self.missing("size"))?;
        Ok(Kind::Ellipse {
            size,
            paint: self.paint()?,
        })
    }

    fn path(&self) -> Result<Kind, CompositionError> {
        let data = self.require(&self.d.d, "d")?;
        let path = guard(|| self.ctx.to_owned(), "path parser", || svg_path(data))?;
        Ok(Kind::Path {
            path: Arc::new(path.map_err(|m| self.invalid(format!("`d`: {m}")))?),
            paint: self.paint()?,
        })
    }

    fn text(
        &self,
        size: Option<Anim<V2>>,
        fonts: &dyn FontCheck,
    ) -> Result<Kind, CompositionError> {
        let d = self.d;
        let text = self.require(&d.text, "text")?;
        Ok(Kind::Text(self.styled_text(text, size, fonts)?))
    }

    /// A captions layer: cues from `src` (a file) or `text` (the captions
    /// themselves), styled as text.
    fn captions(
        &self,
        size: Option<Anim<V2>>,
        fonts: &dyn FontCheck,
    ) -> Result<Kind, CompositionError> {
        let d = self.d;
        let (source, from_file) = match (&d.src, &d.text) {
            (Some(src), None) => (src, true),
            (None, Some(text)) => (text, false),
            _ => {
                return Err(self.invalid(
                    "a captions layer needs `src` (an SRT or WebVTT file) or `text` (the captions themselves), not both".into(),
                ));
            }
        };
        let mut t = self.styled_text(source, size, fonts)?;
        t.captions = Some(Box::new(super::captions::Captions::new(
            from_file,
            d.highlight
                .as_ref()
                .map(|h| anim(h, "highlight", self.ctx, color))
                .transpose()?,
        )));
        Ok(Kind::Text(t))
    }

    /// A text layer with `text` (a template), styled by the document's
    /// text fields.
    fn styled_text(
        &self,
        text: &str,
        size: Option<Anim<V2>>,
        fonts: &dyn FontCheck,
    ) -> Result<Box<TextLayer>, CompositionError> {
        let d = self.d;
        let family = self.require(&d.font, "font")?;
        let font_size = *self.require(&d.font_size, "font_size")?;
        if text.chars().count() > MAX_TEXT_CHARS {
            return Err(self.invalid(format!("`text` is longer than {MAX_TEXT_CHARS} characters")));
        }
        let weight = check_int(d.weight.unwrap_or(400), 1, 1000)
            .map_err(|m| self.invalid(format!("`weight` {m}")))?;
        let italic = d.italic.unwrap_or(false);
        fonts
            .check(family, weight, italic)
            .map_err(|m| self.invalid(format!("`font`: {m}")))?;
        let font_size = self.number(Some(font_size), "font_size", 0.0)?;
        let line_height = self.number(d.line_height, "line_height", 1.2)?;
        let letter_spacing = self.number(d.letter_spacing, "letter_spacing", 0.0)?;
        let size = self.static_size(size)?;
        let overflow = d.overflow.unwrap_or_default();
        let shrink_to_fit = d.shrink_to_fit.unwrap_or(false) || overflow == OverflowDoc::Shrink;
        if shrink_to_fit && size.is_none() {
            return Err(self.invalid("`shrink_to_fit` needs a `size` box".into()));
        }
        if overflow != OverflowDoc::Visible && size.is_none() {
            return Err(self.invalid("`overflow` needs a `size` box".into()));
        }
        Ok(Box::new(TextLayer {
            template: Template::parse(text).map_err(|m| self.invalid(format!("`text`: {m}")))?,
            text_override: None,
            family: family.clone(),
            weight,
            italic,
            font_size,
            line_height,
            letter_spacing,
            align: d.align.unwrap_or_default(),
            valign: d.valign.unwrap_or_default(),
            size,
            wrap: d.wrap.unwrap_or(size.is_some()),
            shrink_to_fit,
            overflow,
            color: self.color([0.0, 0.0, 0.0, 1.0])?,
            fx: super::text_fx::load(d, self.ctx)?,
            captions: None,
            shaped: None,
        }))
    }

    fn image(&self, size: Option<Anim<V2>>) -> Result<Kind, CompositionError> {
        let src = self.require(&self.d.src, "src")?;
        Ok(Kind::Image(ImageLayer {
            src: Template::parse(src).map_err(|m| self.invalid(format!("`src`: {m}")))?,
            size: self.static_size(size)?,
            fit: self.d.fit.unwrap_or_default(),
            pixmap: None,
        }))
    }

    /// What every layer has: timing, transform, opacity and blend.
    fn common(&self, path: String, kind: Kind) -> Result<Layer, CompositionError> {
        let d = self.d;
        let in_frame = frame_number(d.in_frame, "in", self.ctx)?;
        let out_frame = frame_number(d.out_frame, "out", self.ctx)?;
        if let (Some(i), Some(o)) = (in_frame, out_frame)
            && o <= i
        {
            return Err(self.invalid(format!("`out` {o} must be after `in` {i}")));
        }
        Ok(Layer {
            name: d.name.clone(),
            path,
            in_frame: in_frame.unwrap_or(0),
            out_frame,
            visible: d.visible.unwrap_or(true),
            anchor: self.point(&d.anchor, "anchor")?,
            position: self.point(&d.position, "position")?,
            scale: match &d.scale {
                None => Anim::Static([1.0, 1.0]),
                Some(s) => anim(s, "scale", self.ctx, |s| match s {
                    ScaleDoc::Uniform(u) => u.check().map(|u| [u, u]),
                    ScaleDoc::Xy(xy) => pair(xy),
                })?,
            },
            rotation: match &d.rotation {
                None => Anim::Static(0.0),
                Some(r) => anim(r, "rotation", self.ctx, num)?,
            },
            opacity: match &d.opacity {
                None => Anim::Static(1.0),
                Some(o) => anim(o, "opacity", self.ctx, num)?,
            },
            blend: blend_mode(d.blend.unwrap_or_default()),
            kind,
        })
    }
}

/// Gradient stops (`field` names them in errors): at least two, offsets
/// not decreasing.
pub(super) fn stops_of(
    stops: &[StopDoc],
    field: &str,
    ctx: &str,
) -> Result<Vec<Stop>, CompositionError> {
    if stops.len() < 2 {
        return Err(invalid(
            ctx,
            format!("`{field}`: a gradient needs at least two stops"),
        ));
    }
    let mut out: Vec<Stop> = Vec::with_capacity(stops.len());
    for (i, s) in stops.iter().enumerate() {
        let off =
            num(&s.offset).map_err(|m| invalid(ctx, format!("`{field}[{i}].offset`: {m}")))?;
        if out.last().is_some_and(|p| p.offset > off) {
            return Err(invalid(
                ctx,
                format!("`{field}[{i}].offset`: offsets must not decrease"),
            ));
        }
        out.push(Stop {
            offset: off,
            color: anim(&s.color, &format!("{field}[{i}].color"), ctx, color)?,
        });
    }
    Ok(out)
}

/// Parses SVG path data (arcs become curves) into a path.
///
/// # Errors
/// A message naming the problem.
pub fn svg_path(data: &str) -> Result<tiny_skia::Path, String> {
    use svgtypes::SimplePathSegment as S;
    if data.len() > 1 << 20 {
        return Err("path data is longer than 1 MiB".into());
    }
    let mut pb = tiny_skia::PathBuilder::new();
    for seg in svgtypes::SimplifyingPathParser::from(data) {
        let seg = seg.map_err(|e| format!("invalid path data: {e}"))?;
        check_segment(&seg)?;
        let f = |v: f64| v as f32;
        match seg {
            S::MoveTo { x, y } => pb.move_to(f(x), f(y)),
            S::LineTo { x, y } => pb.line_to(f(x), f(y)),
            S::Quadratic { x1, y1, x, y } => pb.quad_to(f(x1), f(y1), f(x), f(y)),
            S::CurveTo {
                x1,
                y1,
                x2,
                y2,
                x,
                y,
            } => pb.cubic_to(f(x1), f(y1), f(x2), f(y2), f(x), f(y)),
            S::ClosePath => pb.close(),
        }
    }
    pb.finish()
        .ok_or_else(|| "path data draws nothing (empty or degenerate)".to_owned())
}

/// Every coordinate of a path segment within [`Coord`]'s range.
fn check_segment(seg: &svgtypes::SimplePathSegment) -> Result<(), String> {
    use svgtypes::SimplePathSegment as S;
    let coords: &[f64] = match *seg {
        S::MoveTo { x, y } | S::LineTo { x, y } => &[x, y],
        S::Quadratic { x1, y1, x, y } => &[x1, y1, x, y],
        S::CurveTo {
            x1,
            y1,
            x2,
            y2,
            x,
            y,
        } => &[x1, y1, x2, y2, x, y],
        S::ClosePath => &[],
    };
    for &v in coords {
        Coord::RANGE
            .check(v)
            .map_err(|m| format!("coordinate {m}"))?;
    }
    Ok(())
}
