//! Drawing a prepared scene's layers with `tiny-skia`.

use tiny_skia::{
    BlendMode, Color, FillRule, FilterQuality, GradientStop, LinearGradient, Mask, Paint,
    PathBuilder, Pattern, Pixmap, PixmapMut, PixmapPaint, Point, RadialGradient, Rect, Shader,
    SpreadMode, Stroke, Transform,
};

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

fn draw_shape(pm: &mut PixmapMut<'_>, path: &tiny_skia::Path, paint: &ShapePaint, look: &Look) {
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
    if !l.visible {
        return true;
    }
    let common = timing
        && l.anchor.is_static()
        && l.position.is_static()
        && l.scale.is_static()
        && l.rotation.is_static()
        && l.opacity.is_static();
    let paint_static = |p: &ShapePaint| {
        p.fill.as_ref().is_none_or(|f| f.is_static())
            && p.stroke
                .as_ref()
                .is_none_or(|(c, w)| c.is_static() && w.is_static())
    };
    let stops_static = |s: &[Stop]| s.iter().all(|s| s.color.is_static());
    let kind = match &l.kind {
        Kind::Solid { color, size } => {
            color.is_static() && size.as_ref().is_none_or(|s| s.is_static())
        }
        Kind::Linear {
            from,
            to,
            stops,
            size,
        } => {
            from.is_static()
                && to.is_static()
                && stops_static(stops)
                && size.as_ref().is_none_or(|s| s.is_static())
        }
        Kind::Radial {
            center,
            radius,
            stops,
            size,
        } => {
            center.is_static()
                && radius.is_static()
                && stops_static(stops)
                && size.as_ref().is_none_or(|s| s.is_static())
        }
        Kind::Rect {
            size,
            radius,
            paint,
        } => size.is_static() && radius.is_static() && paint_static(paint),
        Kind::Ellipse { size, paint } => size.is_static() && paint_static(paint),
        Kind::Path { paint, .. } => paint_static(paint),
        Kind::Text(t) => {
            t.color.is_static() && t.captions.is_none() && super::text_fx::is_static(&t.fx)
        }
        Kind::Image(_) => true,
        Kind::Video(_) => false,
        Kind::Group {
            layers,
            time_offset,
            ..
        } => *time_offset <= 0 && layers.iter().all(|c| is_static(c, u64::MAX)),
    };
    common && kind
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
    pm: &mut PixmapMut<'_>,
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
    pm: &mut PixmapMut<'_>,
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
fn paint(
    pm: &mut PixmapMut<'_>,
    look: &Look,
    l: &Layer,
    ctx: &Ctx,
) -> Result<(), CompositionError> {
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
            paint_picture(pm, look, pixmap.as_ref().as_ref(), img.size, img.fit);
        }
        Kind::Video(v) => {
            let shown = super::video::frame(v, t).map_err(|m| CompositionError::Render {
                frame: ctx.frame,
                message: format!("layer `{}`: {m}", l.path),
            })?;
            if let Some((rgba, w, h)) = shown {
                let pixmap = tiny_skia::PixmapRef::from_bytes(&rgba, w, h).ok_or_else(|| {
                    CompositionError::Render {
                        frame: ctx.frame,
                        message: format!(
                            "layer `{}`: the decoded frame has the wrong size",
                            l.path
                        ),
                    }
                })?;
                paint_picture(pm, look, pixmap, v.size, v.fit);
            }
        }
        // Drawn by `paint_group`, which guards its own painting.
        Kind::Group { .. } => {}
    }
    Ok(())
}

/// Fills `rect` with a gradient made by `shader` from the layer's stops.
fn paint_gradient(
    pm: &mut PixmapMut<'_>,
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
    pm: &mut PixmapMut<'_>,
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
fn paint_picture(
    pm: &mut PixmapMut<'_>,
    look: &Look,
    pixmap: tiny_skia::PixmapRef<'_>,
    size: Option<V2>,
    fit: super::model::FitDoc,
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

/// A group's children and the time they see.
struct Children<'a> {
    layers: &'a [Layer],
    t: f64,
    clip: Option<V2>,
}

fn paint_group(
    pm: &mut PixmapMut<'_>,
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
    draw_layers(
        children.layers,
        &mut scratch.as_mut(),
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
    pm: &mut PixmapMut<'_>,
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
    pm: &mut PixmapMut<'_>,
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
