//! Drawing a prepared scene's layers with `tiny-skia`.

use tiny_skia::{
    BlendMode, Color, FillRule, FilterQuality, GradientStop, LinearGradient, Mask, Paint,
    PathBuilder, Pattern, Pixmap, PixmapPaint, Point, RadialGradient, Rect, Shader, SpreadMode,
    Stroke, Transform,
};

use super::canvas::{Canvas, Damage, PixelRect};

use super::anim::Anim;
use super::guard::guard;
use super::load::{Kind, Layer, ShapePaint, Stop, TextLayer, V2};
use super::template::Rgba;
use crate::CompositionError;

/// What drawing needs besides the layers.
pub struct Ctx {
    /// The composition's size: solids and gradients fill it by default.
    pub size: V2,
    /// The frame being drawn, for errors.
    pub frame: u64,
}

pub(super) fn color(c: Rgba, opacity: f32) -> Color {
    let k = |v: f64| (v as f32).clamp(0.0, 1.0);
    Color::from_rgba(k(c[0]), k(c[1]), k(c[2]), k(c[3]) * opacity.clamp(0.0, 1.0))
        .unwrap_or(Color::TRANSPARENT)
}

/// A solid paint of `c` at `opacity`.
pub(super) fn solid(c: Rgba, opacity: f32, blend: BlendMode) -> Paint<'static> {
    let mut p = Paint::default();
    p.set_color(color(c, opacity));
    p.anti_alias = true;
    p.blend_mode = blend;
    p
}

/// Gradient stops at time `t`, their colours at `opacity`.
pub(super) fn stops(stops: &[Stop], t: f64, opacity: f32) -> Vec<GradientStop> {
    stops
        .iter()
        .map(|s| GradientStop::new(s.offset as f32, color(s.color.at(t), opacity)))
        .collect()
}

fn box_rect(size: Option<V2>, ctx: &Ctx) -> Option<Rect> {
    let [w, h] = size.unwrap_or(ctx.size);
    Rect::from_xywh(0.0, 0.0, w as f32, h as f32)
}

/// A rectangle with round corners (radius clamped to half the short side),
/// corners drawn as cubic quarter circles.
pub fn rounded_rect(w: f32, h: f32, r: f32) -> Option<tiny_skia::Path> {
    let r = r.clamp(0.0, w.min(h) / 2.0);
    if r <= 0.0 {
        return Rect::from_xywh(0.0, 0.0, w, h).map(PathBuilder::from_rect);
    }
    // The control-point distance for a cubic quarter circle.
    let k = r * 0.552_284_8;
    let mut pb = PathBuilder::new();
    pb.move_to(r, 0.0);
    pb.line_to(w - r, 0.0);
    pb.cubic_to(w - r + k, 0.0, w, r - k, w, r);
    pb.line_to(w, h - r);
    pb.cubic_to(w, h - r + k, w - r + k, h, w - r, h);
    pb.line_to(r, h);
    pb.cubic_to(r - k, h, 0.0, h - r + k, 0.0, h - r);
    pb.line_to(0.0, r);
    pb.cubic_to(0.0, r - k, r - k, 0.0, r, 0.0);
    pb.close();
    pb.finish()
}

fn draw_shape(pm: &mut Canvas<'_>, path: &tiny_skia::Path, paint: &ShapePaint, look: &Look) {
    let (t, opacity, blend, tf) = (look.t, look.opacity, look.blend, look.tf);
    if let Some(fill) = &paint.fill {
        pm.fill_path(
            path,
            &solid(fill.at(t), opacity, blend),
            FillRule::Winding,
            tf,
            None,
        );
    }
    if let Some((c, w)) = &paint.stroke {
        let width = w.at(t) as f32;
        if width > 0.0 {
            let stroke = Stroke {
                width,
                ..Stroke::default()
            };
            pm.stroke_path(path, &solid(c.at(t), opacity, blend), &stroke, tf, None);
        }
    }
}

/// The transform of a layer at time `t`: anchor to origin, scale, rotate
/// (clockwise degrees), move to position.
pub fn layer_transform(l: &Layer, t: f64) -> Transform {
    let [ax, ay] = l.anchor.at(t);
    let [px, py] = l.position.at(t);
    let [sx, sy] = l.scale.at(t);
    let r = l.rotation.at(t);
    Transform::from_translate(px as f32, py as f32)
        .pre_rotate(r as f32)
        .pre_scale(sx as f32, sy as f32)
        .pre_translate(-ax as f32, -ay as f32)
}

/// Whether a layer looks the same on every frame in `0..duration`.
pub fn is_static(l: &Layer, duration: u64) -> bool {
    let timing = l.in_frame == 0 && l.out_frame.is_none_or(|o| o >= duration);
    !l.visible || (timing && settles_at(l) == Some(f64::NEG_INFINITY))
}

/// The layer time from which a layer, while it shows, draws the same
/// pixels on every frame: the latest frame at which any of its properties
/// settles (`-∞` when none ever changes), `None` when one keeps changing
/// (a loop, a video, captions, animated text effects, a group whose
/// content moves). [`is_static`] is the `-∞` case.
pub fn settles_at(l: &Layer) -> Option<f64> {
    let fill_stroke = |p: &ShapePaint| {
        let fill = p
            .fill
            .as_ref()
            .map_or(Some(f64::NEG_INFINITY), Anim::settles_at);
        let stroke = p.stroke.as_ref().map_or(Some(f64::NEG_INFINITY), |(c, w)| {
            latest([c.settles_at(), w.settles_at()])
        });
        latest([fill, stroke])
    };
    let size = |s: &Option<Anim<V2>>| s.as_ref().map_or(Some(f64::NEG_INFINITY), Anim::settles_at);
    let stops = |s: &[Stop]| latest(s.iter().map(|s| s.color.settles_at()));
    let kind = match &l.kind {
        Kind::Solid { color, size: sz } => latest([color.settles_at(), size(sz)]),
        Kind::Linear {
            from,
            to,
            stops: st,
            size: sz,
        } => latest([from.settles_at(), to.settles_at(), stops(st), size(sz)]),
        Kind::Radial {
            center,
            radius,
            stops: st,
            size: sz,
        } => latest([
            center.settles_at(),
            radius.settles_at(),
            stops(st),
            size(sz),
        ]),
        Kind::Rect {
            size: sz,
            radius,
            paint,
        } => latest([sz.settles_at(), radius.settles_at(), fill_stroke(paint)]),
        Kind::Ellipse { size: sz, paint } => latest([sz.settles_at(), fill_stroke(paint)]),
        Kind::Path { paint, .. } => fill_stroke(paint),
        Kind::Text(t) if t.captions.is_none() && super::text_fx::is_static(&t.fx) => {
            t.color.settles_at()
        }
        Kind::Text(_) | Kind::Video(_) => None,
        Kind::Image(_) => Some(f64::NEG_INFINITY),
        Kind::Group {
            layers,
            time_offset,
            ..
        } => (*time_offset <= 0 && layers.iter().all(|c| is_static(c, u64::MAX)))
            .then_some(f64::NEG_INFINITY),
    };
    latest([
        l.anchor.settles_at(),
        l.position.settles_at(),
        l.scale.settles_at(),
        l.rotation.settles_at(),
        l.opacity.settles_at(),
        kind,
    ])
}

/// The latest of some settling frames; `None` if any never settles.
fn latest(frames: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    frames
        .into_iter()
        .try_fold(f64::NEG_INFINITY, |m, f| Some(m.max(f?)))
}

/// What a top-level layer draws at frame `t`, when that is what it draws
/// on every frame in the same state: nothing (hidden, not in yet, out
/// already) or its settled look ([`settles_at`], passed in as `settles`).
/// `None` while it changes. Two frames with the same `Some` state draw
/// exactly the same pixels for this layer.
pub fn still_at(l: &Layer, t: f64, settles: Option<f64>) -> Option<Still> {
    if !l.visible {
        Some(Still::Hidden)
    } else if t < l.in_frame as f64 {
        Some(Still::NotIn)
    } else if l.out_frame.is_some_and(|o| t >= o as f64) {
        Some(Still::Out)
    } else {
        settles.filter(|s| t >= *s).map(|_| Still::Settled)
    }
}

/// The states in which a layer draws the same on every frame
/// ([`still_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Still {
    /// Not visible: draws nothing.
    Hidden,
    /// Before its `in` frame: draws nothing.
    NotIn,
    /// At or after its `out` frame: draws nothing.
    Out,
    /// Showing, with every property past its last change.
    Settled,
}

/// How many offscreen frames drawing `layers` may need at once: one per
/// level of nested groups that may be composited as one image
/// ([`paint_group`] draws the others straight into their parent).
pub fn composited_depth(layers: &[Layer]) -> usize {
    layers
        .iter()
        .map(|l| match &l.kind {
            Kind::Group { layers, clip, .. } => {
                usize::from(may_composite(l, clip)) + composited_depth(layers)
            }
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

/// Whether a group is, on some frame, composited as one image: it clips,
/// blends, or is not always fully opaque. Keyframes that are all 1 stay
/// exactly 1 whatever the easing (`1 + (1 − 1)·e`).
fn may_composite(l: &Layer, clip: &Option<V2>) -> bool {
    let always_opaque = match &l.opacity {
        Anim::Static(o) => *o >= 1.0,
        Anim::Keys { keys, .. } => keys.iter().all(|k| k.value >= 1.0),
    };
    clip.is_some() || l.blend != BlendMode::SourceOver || !always_opaque
}

/// Draws `layers` at layer time `t` under `parent`. `pool` holds one
/// scratch pixmap per level of group nesting below this one.
pub fn draw_layers(
    layers: &[Layer],
    pm: &mut Canvas<'_>,
    pool: &mut [Pixmap],
    t: f64,
    parent: Transform,
    ctx: &Ctx,
) -> Result<(), CompositionError> {
    for l in layers {
        draw_layer(l, pm, pool, t, parent, ctx)?;
    }
    Ok(())
}

/// How one layer is drawn at one time: what every kind of layer applies.
struct Look {
    /// Layer time.
    t: f64,
    opacity: f32,
    blend: BlendMode,
    /// Layer space to pixels.
    tf: Transform,
}

/// Draws one layer, if it shows at layer time `t`.
fn draw_layer(
    l: &Layer,
    pm: &mut Canvas<'_>,
    pool: &mut [Pixmap],
    t: f64,
    parent: Transform,
    ctx: &Ctx,
) -> Result<(), CompositionError> {
    if !l.visible || t < l.in_frame as f64 || l.out_frame.is_some_and(|o| t >= o as f64) {
        return Ok(());
    }
    let opacity = l.opacity.at(t) as f32;
    if opacity <= 0.0 {
        return Ok(());
    }
    let look = Look {
        t,
        opacity,
        blend: l.blend,
        tf: parent.pre_concat(layer_transform(l, t)),
    };
    if let Kind::Group {
        layers,
        time_offset,
        clip,
    } = &l.kind
    {
        let children = Children {
            layers,
            t: t - *time_offset as f64,
            clip: *clip,
        };
        return paint_group(pm, pool, &look, l, &children, ctx);
    }
    guard(
        || layer_context(l, ctx),
        "painter",
        || paint(pm, &look, l, ctx),
    )?
}

/// "frame 12: layer `Title`", where a painting panic happened.
fn layer_context(l: &Layer, ctx: &Ctx) -> String {
    format!("frame {}: layer `{}`", ctx.frame, l.path)
}

/// Paints a layer that is not a group.
fn paint(pm: &mut Canvas<'_>, look: &Look, l: &Layer, ctx: &Ctx) -> Result<(), CompositionError> {
    let (t, opacity) = (look.t, look.opacity);
    let box_of = |size: &Option<Anim<V2>>| box_rect(size.as_ref().map(|s| s.at(t)), ctx);
    match &l.kind {
        Kind::Solid { color, size } => {
            if let Some(r) = box_of(size) {
                pm.fill_rect(r, &solid(color.at(t), opacity, look.blend), look.tf, None);
            }
        }
        Kind::Linear {
            from,
            to,
            stops,
            size,
        } => {
            let ([x0, y0], [x1, y1]) = (from.at(t), to.at(t));
            paint_gradient(pm, look, stops, box_of(size), |stops| {
                LinearGradient::new(
                    Point::from_xy(x0 as f32, y0 as f32),
                    Point::from_xy(x1 as f32, y1 as f32),
                    stops,
                    SpreadMode::Pad,
                    Transform::identity(),
                )
            });
        }
        Kind::Radial {
            center,
            radius,
            stops,
            size,
        } => {
            let [cx, cy] = center.at(t);
            let c = Point::from_xy(cx as f32, cy as f32);
            let r = radius.at(t) as f32;
            paint_gradient(pm, look, stops, box_of(size), |stops| {
                RadialGradient::new(c, 0.0, c, r, stops, SpreadMode::Pad, Transform::identity())
            });
        }
        Kind::Rect {
            size,
            radius,
            paint,
        } => {
            let [w, h] = size.at(t);
            if let Some(path) = rounded_rect(w as f32, h as f32, radius.at(t) as f32) {
                draw_shape(pm, &path, paint, look);
            }
        }
        Kind::Ellipse { size, paint } => {
            let [w, h] = size.at(t);
            if let Some(path) =
                Rect::from_xywh(0.0, 0.0, w as f32, h as f32).and_then(PathBuilder::from_oval)
            {
                draw_shape(pm, &path, paint, look);
            }
        }
        Kind::Path { path, paint } => draw_shape(pm, path, paint, look),
        Kind::Text(text) => paint_text(pm, look, l, text, ctx)?,
        Kind::Image(img) => {
            let pixmap = loaded(&img.pixmap, "image was not loaded", l, ctx)?;
            paint_picture(pm, look, pixmap.as_ref().as_ref(), img.size, img.fit, false);
        }
        Kind::Video(v) => {
            let shown = super::video::frame(v, t).map_err(|m| CompositionError::Render {
                frame: ctx.frame,
                message: format!("layer `{}`: {m}", l.path),
            })?;
            if let Some(shown) = shown {
                let (w, h) = (shown.width, shown.height);
                let pixmap =
                    tiny_skia::PixmapRef::from_bytes(&shown.rgba, w, h).ok_or_else(|| {
                        CompositionError::Render {
                            frame: ctx.frame,
                            message: format!(
                                "layer `{}`: the decoded frame has the wrong size",
                                l.path
                            ),
                        }
                    })?;
                paint_picture(pm, look, pixmap, v.size, v.fit, shown.opaque);
            }
        }
        // Drawn by `paint_group`, which guards its own painting.
        Kind::Group { .. } => {}
    }
    Ok(())
}

/// Fills `rect` with a gradient made by `shader` from the layer's stops.
fn paint_gradient(
    pm: &mut Canvas<'_>,
    look: &Look,
    s: &[Stop],
    rect: Option<Rect>,
    shader: impl FnOnce(Vec<GradientStop>) -> Option<Shader<'static>>,
) {
    let shader = shader(stops(s, look.t, look.opacity));
    fill_shader(pm, shader, rect, look.blend, look.tf);
}

/// What preparing the scene filled in for a layer (shaped text, a decoded
/// image); its absence is a bug in preparing, reported as a render error.
fn loaded<'v, T>(
    value: &'v Option<T>,
    missing: &str,
    l: &Layer,
    ctx: &Ctx,
) -> Result<&'v T, CompositionError> {
    value.as_ref().ok_or_else(|| CompositionError::Render {
        frame: ctx.frame,
        message: format!("layer `{}`: {missing}", l.path),
    })
}

fn paint_text(
    pm: &mut Canvas<'_>,
    look: &Look,
    l: &Layer,
    text: &TextLayer,
    ctx: &Ctx,
) -> Result<(), CompositionError> {
    let fx_look = super::text_fx::Look {
        t: look.t,
        opacity: look.opacity,
        blend: look.blend,
        tf: look.tf,
    };
    if let Some(caps) = &text.captions {
        let cues = loaded(&caps.cues, "captions were not read", l, ctx)?;
        if let Some(cue) = super::captions::cue_at(cues, look.t) {
            let highlight = caps
                .highlight
                .as_ref()
                .map(|h| (super::captions::current_unit(cue, look.t), h.at(look.t)));
            super::text_fx::paint(pm, &fx_look, text, &cue.shaped, highlight);
        }
        return Ok(());
    }
    let shaped = loaded(&text.shaped, "text was not shaped", l, ctx)?;
    super::text_fx::paint(pm, &fx_look, text, shaped, None);
    Ok(())
}

/// Draws a picture (an image or a video frame) fitted to its box `size`
/// (default: its own size).
///
/// `opaque`: every pixel of `pixmap` has alpha 255 (a video frame without
/// alpha), which lets an unscaled, unfaded draw on whole pixels copy rows.
fn paint_picture(
    pm: &mut Canvas<'_>,
    look: &Look,
    pixmap: tiny_skia::PixmapRef<'_>,
    size: Option<V2>,
    fit: super::model::FitDoc,
    opaque: bool,
) {
    let (iw, ih) = (pixmap.width() as f64, pixmap.height() as f64);
    let [bw, bh] = size.unwrap_or([iw, ih]);
    let (sx, sy) = super::image::fit_scale(fit, [iw, ih], [bw, bh]);
    let (ox, oy) = ((bw - iw * sx) / 2.0, (bh - ih * sy) / 2.0);
    // Draw the part of the image inside the box.
    let (rx, ry) = (ox.max(0.0), oy.max(0.0));
    let (rw, rh) = ((iw * sx).min(bw), (ih * sy).min(bh));
    let Some(rect) = Rect::from_xywh(rx as f32, ry as f32, rw as f32, rh as f32) else {
        return;
    };
    let pattern = Transform::from_row(sx as f32, 0.0, 0.0, sy as f32, ox as f32, oy as f32);
    // Pixels that land exactly on pixels are copied; anything else is
    // filtered bilinearly (bicubic costs 3x for no visible gain at the scales
    // motion graphics use).
    let full = look.tf.pre_concat(pattern);
    let exact = full.sx == 1.0
        && full.sy == 1.0
        && full.kx == 0.0
        && full.ky == 0.0
        && full.tx.fract() == 0.0
        && full.ty.fract() == 0.0;
    if exact && opaque && copy_opaque(pm, look, pixmap, full, (rx, ry, rw, rh)) {
        return;
    }
    if look.blend == BlendMode::SourceOver && blit(pm, look, pixmap, [sx, sy, ox, oy], rect) {
        return;
    }
    let quality = if exact {
        FilterQuality::Nearest
    } else {
        FilterQuality::Bilinear
    };
    let shader = Pattern::new(pixmap, SpreadMode::Pad, quality, look.opacity, pattern);
    let paint = Paint {
        shader,
        anti_alias: true,
        blend_mode: look.blend,
        ..Paint::default()
    };
    pm.fill_rect(rect, &paint, look.tf, None);
}

/// Draws an opaque picture drawn at scale 1 (`full`, picture to pixels, is
/// a whole-pixel translation) by copying its rows into `rect` (layer space),
/// when the draw is plain: full opacity, source-over, a layer transform that
/// only moves by whole pixels and a rect on whole pixels. Returns whether
/// it drew.
///
/// The bytes are those of the filtered draw: at these conditions it samples
/// each picture pixel once (nearest), covers each pixel of the rect fully,
/// and source-over of an opaque pixel is that pixel. The copy skips
/// tiny-skia's per-pixel float pipeline, the largest cost of a full-frame
/// video layer.
fn copy_opaque(
    pm: &mut Canvas<'_>,
    look: &Look,
    pixmap: tiny_skia::PixmapRef<'_>,
    full: Transform,
    (rx, ry, rw, rh): (f64, f64, f64, f64),
) -> bool {
    let tf = look.tf;
    let whole = |v: f64| v.fract() == 0.0;
    let plain = look.opacity >= 1.0
        && look.blend == BlendMode::SourceOver
        && (tf.sx, tf.sy, tf.kx, tf.ky) == (1.0, 1.0, 0.0, 0.0)
        && tf.tx.fract() == 0.0
        && tf.ty.fract() == 0.0
        && [rx, ry, rw, rh].into_iter().all(whole);
    if !plain {
        return false;
    }
    // The rect in pixels, clipped to the target.
    let (tx, ty) = (f64::from(tf.tx), f64::from(tf.ty));
    let (pw, ph) = (f64::from(pm.width()), f64::from(pm.height()));
    let x0 = (rx + tx).clamp(0.0, pw);
    let y0 = (ry + ty).clamp(0.0, ph);
    let x1 = (rx + rw + tx).clamp(0.0, pw);
    let y1 = (ry + rh + ty).clamp(0.0, ph);
    // Picture pixel of target pixel (x, y): (x − full.tx, y − full.ty).
    let (fx, fy) = (f64::from(full.tx), f64::from(full.ty));
    let (iw, ih) = (f64::from(pixmap.width()), f64::from(pixmap.height()));
    if x0 >= x1 || y0 >= y1 || x0 - fx < 0.0 || y0 - fy < 0.0 || x1 - fx > iw || y1 - fy > ih {
        // Nothing to draw, or the rect reaches past the picture (the
        // pattern would pad): leave it to the pipeline.
        return x0 >= x1 || y0 >= y1;
    }
    let (sx0, sy0) = ((x0 - fx) as usize, (y0 - fy) as usize);
    let (x0, x1, y0, y1) = (x0 as u32, x1 as u32, y0 as u32, y1 as u32);
    let src_w = pixmap.width() as usize * 4;
    let src = pixmap.data();
    let Some((dst, dst_w)) = pm.pixels_mut(PixelRect { x0, y0, x1, y1 }) else {
        // Measured, not drawn.
        return true;
    };
    let (x0, x1, y0, y1) = (x0 as usize, x1 as usize, y0 as usize, y1 as usize);
    let len = (x1 - x0) * 4;
    for y in y0..y1 {
        let d = y * dst_w + x0 * 4;
        let s = (sy0 + y - y0) * src_w + sx0 * 4;
        dst[d..d + len].copy_from_slice(&src[s..s + len]);
    }
    true
}

/// Draws the picture with the integer sampler ([`super::blit`]): `fit` is
/// the picture-to-layer scale and offset `[sx, sy, ox, oy]`, `rect` the part
/// of the box drawn (layer space). Returns whether it drew: `false` leaves
/// the draw to tiny-skia (a transform the sampler's fixed point cannot hold).
fn blit(
    pm: &mut Canvas<'_>,
    look: &Look,
    pixmap: tiny_skia::PixmapRef<'_>,
    [sx, sy, ox, oy]: [f64; 4],
    rect: Rect,
) -> bool {
    let (iw, ih) = (f64::from(pixmap.width()), f64::from(pixmap.height()));
    // The rect in picture units; rounding may put it a hair outside.
    let (l, t) = (f64::from(rect.left()), f64::from(rect.top()));
    let (r, b) = (f64::from(rect.right()), f64::from(rect.bottom()));
    let src = [
        ((l - ox) / sx).clamp(0.0, iw),
        ((t - oy) / sy).clamp(0.0, ih),
        ((r - ox) / sx).clamp(0.0, iw),
        ((b - oy) / sy).clamp(0.0, ih),
    ];
    // Layer to pixels after picture to layer, in f64.
    let tf = look.tf;
    let (a, c, e) = (f64::from(tf.sx), f64::from(tf.kx), f64::from(tf.tx));
    let (bb, d, f) = (f64::from(tf.ky), f64::from(tf.sy), f64::from(tf.ty));
    let to_pixels = [
        a * sx,
        bb * sx,
        c * sy,
        d * sy,
        a * ox + c * oy + e,
        bb * ox + d * oy + f,
    ];
    let size = (pm.width(), pm.height());
    let Some(blit) = super::blit::Blit::new(
        (pixmap.width(), pixmap.height()),
        src,
        to_pixels,
        look.opacity,
        size,
    ) else {
        return false;
    };
    let Some((x0, y0, x1, y1)) = blit.bound() else {
        return true;
    };
    let Some((dst, stride)) = pm.pixels_mut(PixelRect { x0, y0, x1, y1 }) else {
        // Measured, not drawn.
        return true;
    };
    // The canvas's pixmap and the picture always match their sizes, so
    // the draw cannot refuse them; if it did, tiny-skia draws instead.
    blit.draw(pixmap.data(), dst, stride)
}

/// A group's children and the time they see.
struct Children<'a> {
    layers: &'a [Layer],
    t: f64,
    clip: Option<V2>,
}

fn paint_group(
    pm: &mut Canvas<'_>,
    pool: &mut [Pixmap],
    look: &Look,
    l: &Layer,
    children: &Children<'_>,
    ctx: &Ctx,
) -> Result<(), CompositionError> {
    if look.opacity >= 1.0 && look.blend == BlendMode::SourceOver && children.clip.is_none() {
        return draw_layers(children.layers, pm, pool, children.t, look.tf, ctx);
    }
    // Composite the group as one image: its opacity and blend apply to the
    // whole, not to each child.
    let Some((scratch, rest)) = pool.split_first_mut() else {
        return Err(CompositionError::Render {
            frame: ctx.frame,
            message: format!("layer `{}`: no scratch layer for the group", l.path),
        });
    };
    scratch.fill(Color::TRANSPARENT);
    // Where the children drew on the scratch layer does not matter: it is
    // drawn whole into the parent, which records the whole frame.
    draw_layers(
        children.layers,
        &mut Canvas::new(scratch.as_mut(), Damage::default()),
        rest,
        children.t,
        look.tf,
        ctx,
    )?;
    guard(
        || layer_context(l, ctx),
        "painter",
        || composite(pm, scratch, look, children.clip, ctx),
    )?
}

/// Draws a group's offscreen image into its parent with the group's
/// opacity, blend and clip.
fn composite(
    pm: &mut Canvas<'_>,
    scratch: &Pixmap,
    look: &Look,
    clip: Option<V2>,
    ctx: &Ctx,
) -> Result<(), CompositionError> {
    let mask = match clip {
        None => None,
        Some([w, h]) => {
            let mut m =
                Mask::new(pm.width(), pm.height()).ok_or_else(|| CompositionError::Render {
                    frame: ctx.frame,
                    message: "cannot allocate a clip mask".into(),
                })?;
            if let Some(r) = Rect::from_xywh(0.0, 0.0, w as f32, h as f32) {
                m.fill_path(&PathBuilder::from_rect(r), FillRule::Winding, true, look.tf);
            }
            Some(m)
        }
    };
    let paint = PixmapPaint {
        opacity: look.opacity,
        blend_mode: look.blend,
        quality: FilterQuality::Nearest,
    };
    pm.draw_pixmap(
        0,
        0,
        scratch.as_ref(),
        &paint,
        Transform::identity(),
        mask.as_ref(),
    );
    Ok(())
}

fn fill_shader(
    pm: &mut Canvas<'_>,
    shader: Option<Shader<'static>>,
    rect: Option<Rect>,
    blend: BlendMode,
    tf: Transform,
) {
    let (Some(shader), Some(rect)) = (shader, rect) else {
        return;
    };
    let paint = Paint {
        shader,
        anti_alias: true,
        blend_mode: blend,
        ..Paint::default()
    };
    pm.fill_rect(rect, &paint, tf, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    use testkit::noise;

    #[test]
    fn copying_an_opaque_picture_gives_the_bytes_of_the_filtered_draw() {
        let (iw, ih) = (13u32, 9u32);
        let mut picture = noise((iw * ih * 4) as usize, 1);
        for p in picture.chunks_exact_mut(4) {
            p[3] = 255;
        }
        let pic = tiny_skia::PixmapRef::from_bytes(&picture, iw, ih).expect("size");
        // Boxes and moves: the picture's size, a larger box (letterbox), a
        // smaller one (cropped by cover at scale 1), moves partly off the
        // target, and a half-pixel move and a fade that must not copy.
        use super::super::model::FitDoc::{Contain, Cover};
        let cases = [
            (None, Contain, (0.0, 0.0), 1.0),
            (None, Contain, (3.0, -2.0), 1.0),
            (Some([17.0, 9.0]), Contain, (-5.0, 4.0), 1.0),
            (Some([13.0, 5.0]), Cover, (8.0, 7.0), 1.0),
            (Some([17.0, 9.0]), Cover, (0.0, 0.0), 1.0),
            (None, Contain, (0.5, 1.0), 1.0),
            (None, Contain, (1.0, 1.0), 0.5),
        ];
        for (i, &(size, fit, (tx, ty), opacity)) in cases.iter().enumerate() {
            let look = Look {
                t: 0.0,
                opacity,
                blend: BlendMode::SourceOver,
                tf: Transform::from_translate(tx, ty),
            };
            let draw = |opaque: bool| {
                let mut target = Pixmap::from_vec(
                    noise(16 * 12 * 4, 2),
                    tiny_skia::IntSize::from_wh(16, 12).expect("size"),
                )
                .expect("pixmap");
                // Premultiplied: no channel above alpha.
                for p in target.data_mut().chunks_exact_mut(4) {
                    let a = p[3];
                    for c in &mut p[..3] {
                        *c = (*c).min(a);
                    }
                }
                let mut canvas = Canvas::new(target.as_mut(), Damage::default());
                paint_picture(&mut canvas, &look, pic, size, fit, opaque);
                target.data().to_vec()
            };
            assert_eq!(draw(true), draw(false), "case {i}");
        }
    }
}
