//! Colour glyphs (emoji): CBDT/CBLC and sbix bitmaps decoded from their
//! PNG data, COLR v0 layers and COLR v1 paint graphs painted with
//! `tiny-skia`. Each becomes a premultiplied pixmap made once per glyph and
//! size when the text is shaped, placed in layer space, and drawn like an
//! image, so opacity, blend and transforms apply to it as to any layer.
//!
//! A glyph the font defines in a way we cannot draw is an error naming the
//! format, never a blank.

use std::sync::Arc;

use tiny_skia::{
    BlendMode, Color, FillRule, GradientStop, LinearGradient, Mask, Paint, Pixmap, PixmapPaint,
    Point, RadialGradient, Shader, SpreadMode, SweepGradient, Transform,
};
use ttf_parser::colr::{self, CompositeMode, GradientExtend};
use ttf_parser::{Face, GlyphId, RasterImageFormat, RgbaColor};

/// How much finer than the layer's pixels a COLR glyph is painted, so it
/// stays sharp under moderate `scale`.
pub const COLR_OVERSAMPLE: f32 = 2.0;

/// The largest side of a colour glyph's pixmap.
const MAX_SIDE: f32 = 1024.0;

/// A colour glyph's pixels and where they go.
#[derive(Debug, Clone)]
pub struct ColourGlyph {
    /// Premultiplied RGBA.
    pub pixmap: Arc<Pixmap>,
    /// Pixmap pixels to layer space.
    pub place: Transform,
}

/// A colour glyph's pixmap and its placement relative to the glyph's pen
/// position on the baseline (`place` maps pixmap pixels to layer space for
/// a glyph at the origin).
#[derive(Debug, Clone)]
pub struct Raster {
    /// Premultiplied RGBA.
    pub pixmap: Arc<Pixmap>,
    /// Pixmap pixels to layer space, for a pen at (0, 0).
    pub place: Transform,
}

impl Raster {
    /// The glyph with its pen at (`x`, `y`) in layer space.
    pub fn at(&self, x: f32, y: f32) -> ColourGlyph {
        ColourGlyph {
            pixmap: self.pixmap.clone(),
            place: self.place.post_translate(x, y),
        }
    }
}

/// What a glyph is drawn with.
pub enum Drawn {
    /// Its outline (or nothing: a space).
    Outline,
    /// A colour raster.
    Colour(Raster),
}

/// Decides how glyph `gid` of `face` is drawn at `font_size` px, making its
/// raster if it is a colour glyph. `foreground` is the text colour COLR
/// glyphs may use.
///
/// # Errors
/// The format of a glyph the font defines but we cannot draw ("an SVG
/// glyph", "a COLR glyph whose paint data is malformed", …).
pub fn classify(
    face: &Face<'_>,
    gid: u16,
    font_size: f32,
    foreground: RgbaColor,
) -> Result<Drawn, String> {
    let glyph = GlyphId(gid);
    if face.is_color_glyph(glyph) {
        return colr(face, glyph, font_size, foreground).map(Drawn::Colour);
    }
    if has_outline(face, glyph) {
        return Ok(Drawn::Outline);
    }
    let ppem = font_size.ceil().clamp(1.0, f32::from(u16::MAX)) as u16;
    if let Some(img) = face.glyph_raster_image(glyph, ppem) {
        return bitmap(&img, font_size).map(Drawn::Colour);
    }
    if face.glyph_svg_image(glyph).is_some() {
        return Err("it is an SVG-in-OpenType glyph, which Montage does not draw (use a CBDT, sbix or COLR emoji font such as Noto Color Emoji)".into());
    }
    Ok(Drawn::Outline)
}

fn has_outline(face: &Face<'_>, glyph: GlyphId) -> bool {
    struct Any(bool);
    impl ttf_parser::OutlineBuilder for Any {
        fn move_to(&mut self, _: f32, _: f32) {
            self.0 = true;
        }
        fn line_to(&mut self, _: f32, _: f32) {}
        fn quad_to(&mut self, _: f32, _: f32, _: f32, _: f32) {}
        fn curve_to(&mut self, _: f32, _: f32, _: f32, _: f32, _: f32, _: f32) {}
        fn close(&mut self) {}
    }
    let mut any = Any(false);
    face.outline_glyph(glyph, &mut any);
    any.0
}

/// Whether a face holds colour glyphs of any kind: a glyph of such a face
/// with neither outline nor colour data is one we could not draw.
pub fn has_colour_tables(face: &Face<'_>) -> bool {
    let t = face.tables();
    t.colr.is_some() || t.cbdt.is_some() || t.sbix.is_some() || t.svg.is_some()
}

/// A CBDT or sbix bitmap: PNG data decoded, scaled from its strike to the
/// font size, its bottom-left corner at its offset from the pen.
fn bitmap(img: &ttf_parser::RasterGlyphImage<'_>, font_size: f32) -> Result<Raster, String> {
    if img.format != RasterImageFormat::PNG {
        return Err(format!(
            "it is a {:?} bitmap glyph; Montage draws PNG bitmaps (CBDT, sbix) only",
            img.format
        ));
    }
    let decoded = image::load_from_memory_with_format(img.data, image::ImageFormat::Png)
        .map_err(|e| format!("its CBDT/sbix PNG bitmap does not decode: {e}"))?
        .to_rgba8();
    let (w, h) = decoded.dimensions();
    let mut pixmap = Pixmap::new(w, h).ok_or("its CBDT/sbix bitmap is empty")?;
    for (dst, src) in pixmap.pixels_mut().iter_mut().zip(decoded.pixels()) {
        let [r, g, b, a] = src.0;
        *dst = tiny_skia::ColorU8::from_rgba(r, g, b, a).premultiply();
    }
    let s = font_size / f32::from(img.pixels_per_em.max(1));
    // The offset is in strike pixels, y up from the baseline to the
    // bitmap's bottom edge; the pixmap's own size decides its extent.
    let left = f32::from(img.x) * s;
    let top = -(f32::from(img.y) + h as f32) * s;
    Ok(Raster {
        pixmap: Arc::new(pixmap),
        place: Transform::from_row(s, 0.0, 0.0, s, left, top),
    })
}

/// Paints a COLR (v0 or v1) glyph into a pixmap at `font_size` ×
/// [`COLR_OVERSAMPLE`].
fn colr(
    face: &Face<'_>,
    glyph: GlyphId,
    font_size: f32,
    foreground: RgbaColor,
) -> Result<Raster, String> {
    let malformed = || "its COLR paint data is malformed".to_owned();
    // First the extent: the union of every outline painted.
    let mut bounds = Bounds {
        face,
        stack: vec![Transform::identity()],
        outline: None,
        rect: None,
    };
    face.paint_color_glyph(glyph, 0, foreground, &mut bounds)
        .ok_or_else(malformed)?;
    let Some(r) = bounds.rect else {
        // A colour glyph that paints nothing (a coloured space).
        let pixmap = Pixmap::new(1, 1).ok_or_else(malformed)?;
        return Ok(Raster {
            pixmap: Arc::new(pixmap),
            place: Transform::from_scale(0.0, 0.0),
        });
    };
    let per_unit = font_size / f32::from(face.units_per_em().max(1));
    let mut s = per_unit * COLR_OVERSAMPLE;
    let longest = (r.width().max(r.height()) * s).max(1.0);
    if longest > MAX_SIDE {
        s *= MAX_SIDE / longest;
    }
    let w = (r.width() * s).ceil() as u32 + 2;
    let h = (r.height() * s).ceil() as u32 + 2;
    // Font units (y up) to pixmap pixels, one pixel of margin.
    let (tx, ty) = (1.0 - r.left() * s, 1.0 + r.bottom() * s);
    let base = Transform::from_row(s, 0.0, 0.0, -s, tx, ty);
    let canvas = Pixmap::new(w, h).ok_or_else(malformed)?;
    let mut painter = Painter {
        face,
        stack: vec![base],
        outline: None,
        clips: vec![None],
        layers: vec![(canvas, BlendMode::SourceOver)],
        error: None,
    };
    face.paint_color_glyph(glyph, 0, foreground, &mut painter)
        .ok_or_else(malformed)?;
    if let Some(e) = painter.error {
        return Err(e);
    }
    let (canvas, _) = painter.layers.swap_remove(0);
    // Pixmap pixels back to layer space: undo `base`, then font units to
    // layer pixels (y down).
    let k = per_unit / s;
    Ok(Raster {
        pixmap: Arc::new(canvas),
        place: Transform::from_row(k, 0.0, 0.0, k, -tx * k, -ty * k),
    })
}

/// A glyph outline in font units (y up).
fn outline(face: &Face<'_>, glyph: GlyphId) -> Option<tiny_skia::Path> {
    struct B(tiny_skia::PathBuilder);
    impl ttf_parser::OutlineBuilder for B {
        fn move_to(&mut self, x: f32, y: f32) {
            self.0.move_to(x, y);
        }
        fn line_to(&mut self, x: f32, y: f32) {
            self.0.line_to(x, y);
        }
        fn quad_to(&mut self, x1: f32, y1: f32, x: f32, y: f32) {
            self.0.quad_to(x1, y1, x, y);
        }
        fn curve_to(&mut self, x1: f32, y1: f32, x2: f32, y2: f32, x: f32, y: f32) {
            self.0.cubic_to(x1, y1, x2, y2, x, y);
        }
        fn close(&mut self) {
            self.0.close();
        }
    }
    let mut b = B(tiny_skia::PathBuilder::new());
    face.outline_glyph(glyph, &mut b)?;
    b.0.finish()
}

fn to_ts(t: ttf_parser::Transform) -> Transform {
    Transform::from_row(t.a, t.b, t.c, t.d, t.e, t.f)
}

/// The first pass: where the glyph paints.
struct Bounds<'f, 'a> {
    face: &'f Face<'a>,
    stack: Vec<Transform>,
    outline: Option<tiny_skia::Path>,
    rect: Option<tiny_skia::Rect>,
}

impl<'a> colr::Painter<'a> for Bounds<'_, 'a> {
    fn outline_glyph(&mut self, glyph_id: GlyphId) {
        self.outline = outline(self.face, glyph_id);
    }
    fn paint(&mut self, _: colr::Paint<'a>) {
        let tf = self.stack.last().copied().unwrap_or_default();
        if let Some(b) = self
            .outline
            .clone()
            .and_then(|p| p.transform(tf))
            .map(|p| p.bounds())
        {
            self.rect = Some(match self.rect {
                None => b,
                Some(r) => tiny_skia::Rect::from_ltrb(
                    r.left().min(b.left()),
                    r.top().min(b.top()),
                    r.right().max(b.right()),
                    r.bottom().max(b.bottom()),
                )
                .unwrap_or(r),
            });
        }
    }
    fn push_clip(&mut self) {}
    fn push_clip_box(&mut self, _: colr::ClipBox) {}
    fn pop_clip(&mut self) {}
    fn push_layer(&mut self, _: CompositeMode) {}
    fn pop_layer(&mut self) {}
    fn push_transform(&mut self, t: ttf_parser::Transform) {
        let top = self.stack.last().copied().unwrap_or_default();
        self.stack.push(top.pre_concat(to_ts(t)));
    }
    fn pop_transform(&mut self) {
        self.stack.pop();
    }
}

/// The second pass: painting with tiny-skia.
struct Painter<'f, 'a> {
    face: &'f Face<'a>,
    /// Font units to pixels, innermost last.
    stack: Vec<Transform>,
    outline: Option<tiny_skia::Path>,
    /// The clip in force, innermost last (`None`: no clip).
    clips: Vec<Option<Mask>>,
    /// Offscreen layers and how each composites onto the one below.
    layers: Vec<(Pixmap, BlendMode)>,
    error: Option<String>,
}

impl Painter<'_, '_> {
    fn tf(&self) -> Transform {
        self.stack.last().copied().unwrap_or_default()
    }

    fn size(&self) -> (u32, u32) {
        self.layers
            .first()
            .map_or((1, 1), |(p, _)| (p.width(), p.height()))
    }

    fn clip_with(&mut self, path: &tiny_skia::Path) {
        let tf = self.tf();
        let (w, h) = self.size();
        let mask = match self.clips.last().cloned().flatten() {
            Some(mut m) => {
                m.intersect_path(path, FillRule::Winding, true, tf);
                Some(m)
            }
            None => Mask::new(w, h).map(|mut m| {
                m.fill_path(path, FillRule::Winding, true, tf);
                m
            }),
        };
        self.clips.push(mask);
    }

    fn shader(&mut self, paint: &colr::Paint<'_>) -> Option<Shader<'static>> {
        let coords = self.face.variation_coordinates();
        let stops = |it: colr::GradientStopsIter<'_, '_>| -> Vec<GradientStop> {
            it.map(|s| GradientStop::new(s.stop_offset, color(s.color)))
                .collect()
        };
        let spread = |e: GradientExtend| match e {
            GradientExtend::Pad => SpreadMode::Pad,
            GradientExtend::Repeat => SpreadMode::Repeat,
            GradientExtend::Reflect => SpreadMode::Reflect,
        };
        match paint {
            colr::Paint::Solid(c) => Some(Shader::SolidColor(color(*c))),
            colr::Paint::LinearGradient(g) => {
                // COLR v1 turns p0→p1 to be perpendicular to p0→p2.
                let (nx, ny) = (-(g.y2 - g.y0), g.x2 - g.x0);
                let nn = nx * nx + ny * ny;
                let (ex, ey) = if nn > 0.0 {
                    let k = ((g.x1 - g.x0) * nx + (g.y1 - g.y0) * ny) / nn;
                    (g.x0 + k * nx, g.y0 + k * ny)
                } else {
                    (g.x1, g.y1)
                };
                LinearGradient::new(
                    Point::from_xy(g.x0, g.y0),
                    Point::from_xy(ex, ey),
                    stops(g.stops(0, coords)),
                    spread(g.extend),
                    Transform::identity(),
                )
            }
            colr::Paint::RadialGradient(g) => RadialGradient::new(
                Point::from_xy(g.x0, g.y0),
                g.r0.max(0.0),
                Point::from_xy(g.x1, g.y1),
                g.r1.max(0.0),
                stops(g.stops(0, coords)),
                spread(g.extend),
                Transform::identity(),
            ),
            colr::Paint::SweepGradient(g) => {
                // Angles are stored as half turns.
                let (a0, a1) = (g.start_angle * 180.0, g.end_angle * 180.0);
                SweepGradient::new(
                    Point::from_xy(g.center_x, g.center_y),
                    a0.min(a1),
                    a0.max(a1),
                    stops(g.stops(0, coords)),
                    spread(g.extend),
                    Transform::identity(),
                )
            }
        }
    }
}

fn color(c: RgbaColor) -> Color {
    Color::from_rgba8(c.red, c.green, c.blue, c.alpha)
}

fn blend(mode: CompositeMode) -> BlendMode {
    match mode {
        CompositeMode::Clear => BlendMode::Clear,
        CompositeMode::Source => BlendMode::Source,
        CompositeMode::Destination => BlendMode::Destination,
        CompositeMode::SourceOver => BlendMode::SourceOver,
        CompositeMode::DestinationOver => BlendMode::DestinationOver,
        CompositeMode::SourceIn => BlendMode::SourceIn,
        CompositeMode::DestinationIn => BlendMode::DestinationIn,
        CompositeMode::SourceOut => BlendMode::SourceOut,
        CompositeMode::DestinationOut => BlendMode::DestinationOut,
        CompositeMode::SourceAtop => BlendMode::SourceAtop,
        CompositeMode::DestinationAtop => BlendMode::DestinationAtop,
        CompositeMode::Xor => BlendMode::Xor,
        CompositeMode::Plus => BlendMode::Plus,
        CompositeMode::Screen => BlendMode::Screen,
        CompositeMode::Overlay => BlendMode::Overlay,
        CompositeMode::Darken => BlendMode::Darken,
        CompositeMode::Lighten => BlendMode::Lighten,
        CompositeMode::ColorDodge => BlendMode::ColorDodge,
        CompositeMode::ColorBurn => BlendMode::ColorBurn,
        CompositeMode::HardLight => BlendMode::HardLight,
        CompositeMode::SoftLight => BlendMode::SoftLight,
        CompositeMode::Difference => BlendMode::Difference,
        CompositeMode::Exclusion => BlendMode::Exclusion,
        CompositeMode::Multiply => BlendMode::Multiply,
        CompositeMode::Hue => BlendMode::Hue,
        CompositeMode::Saturation => BlendMode::Saturation,
        CompositeMode::Color => BlendMode::Color,
        CompositeMode::Luminosity => BlendMode::Luminosity,
    }
}

impl<'a> colr::Painter<'a> for Painter<'_, 'a> {
    fn outline_glyph(&mut self, glyph_id: GlyphId) {
        self.outline = outline(self.face, glyph_id);
    }

    fn paint(&mut self, paint: colr::Paint<'a>) {
        let Some(path) = self.outline.clone() else {
            return;
        };
        let Some(shader) = self.shader(&paint) else {
            // A degenerate gradient (equal points, one radius 0 at one
            // centre) paints nothing, as in browsers.
            return;
        };
        let tf = self.tf();
        let mask = self.clips.last().cloned().flatten();
        let p = Paint {
            shader,
            anti_alias: true,
            ..Paint::default()
        };
        if let Some((top, _)) = self.layers.last_mut() {
            top.fill_path(&path, &p, FillRule::Winding, tf, mask.as_ref());
        }
    }

    fn push_clip(&mut self) {
        match self.outline.clone() {
            Some(path) => self.clip_with(&path),
            None => {
                // Clipping to an empty outline shows nothing.
                let (w, h) = self.size();
                self.clips.push(Mask::new(w, h));
            }
        }
    }

    fn push_clip_box(&mut self, b: colr::ClipBox) {
        match tiny_skia::Rect::from_ltrb(b.x_min, b.y_min, b.x_max, b.y_max) {
            Some(r) => self.clip_with(&tiny_skia::PathBuilder::from_rect(r)),
            None => {
                let (w, h) = self.size();
                self.clips.push(Mask::new(w, h));
            }
        }
    }

    fn pop_clip(&mut self) {
        if self.clips.len() > 1 {
            self.clips.pop();
        }
    }

    fn push_layer(&mut self, mode: CompositeMode) {
        let (w, h) = self.size();
        match Pixmap::new(w, h) {
            Some(p) => self.layers.push((p, blend(mode))),
            None => self.error = Some("its COLR layer could not be allocated".into()),
        }
    }

    fn pop_layer(&mut self) {
        if self.layers.len() < 2 {
            return;
        }
        if let Some((layer, mode)) = self.layers.pop()
            && let Some((below, _)) = self.layers.last_mut()
        {
            let paint = PixmapPaint {
                blend_mode: mode,
                ..PixmapPaint::default()
            };
            below.draw_pixmap(0, 0, layer.as_ref(), &paint, Transform::identity(), None);
        }
    }

    fn push_transform(&mut self, t: ttf_parser::Transform) {
        let top = self.tf();
        self.stack.push(top.pre_concat(to_ts(t)));
    }

    fn pop_transform(&mut self) {
        if self.stack.len() > 1 {
            self.stack.pop();
        }
    }
}
