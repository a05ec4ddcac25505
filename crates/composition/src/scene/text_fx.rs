//! Text effects (stroke, drop shadow, gradient fill) and kinetic text
//! (lines, words or characters animated one after another), loaded from a
//! text layer's document and drawn from the frame's time alone.

use tiny_skia::{
    BlendMode, FillRule, FilterQuality, GradientStop, LineJoin, LinearGradient, Mask, Paint,
    Pixmap, PixmapPaint, Point, RadialGradient, Rect, Shader, SpreadMode, Stroke, Transform,
};

use super::anim::Anim;
use super::canvas::{Canvas, Damage};
use super::load::{Stop, TextLayer, V2, anim, color, num, pair, stops_of};
use super::model::{AnimateDoc, GradientDoc, LayerDoc, OverflowDoc, ScaleDoc, ShadowDoc, UnitDoc};
use super::template::Rgba;
use super::text::{Shaped, Split};
use crate::CompositionError;

/// A text layer's effects; all `None` draws plain text.
#[derive(Debug, Clone, Default)]
pub struct Effects {
    /// Outline colour and the width that shows outside the fill.
    pub stroke: Option<(Anim<Rgba>, Anim<f64>)>,
    pub shadow: Option<Shadow>,
    pub gradient: Option<Gradient>,
    pub animate: Option<Animate>,
}

#[derive(Debug, Clone)]
pub struct Shadow {
    pub color: Anim<Rgba>,
    pub offset: Anim<V2>,
    /// Blur radius in pixels (σ = radius / 2).
    pub blur: Anim<f64>,
}

#[derive(Debug, Clone)]
pub enum Gradient {
    Linear {
        from: Anim<V2>,
        to: Anim<V2>,
        stops: Vec<Stop>,
    },
    Radial {
        center: Anim<V2>,
        radius: Anim<f64>,
        stops: Vec<Stop>,
    },
}

#[derive(Debug, Clone)]
pub struct Animate {
    pub by: UnitDoc,
    /// Frames between units.
    pub stagger: f64,
    pub opacity: Anim<f64>,
    pub offset: Anim<V2>,
    pub scale: Anim<V2>,
    pub rotation: Anim<f64>,
}

fn invalid(ctx: &str, message: String) -> CompositionError {
    CompositionError::Invalid {
        context: ctx.to_owned(),
        message,
    }
}

/// Converts the effect fields of a text or captions layer document.
///
/// # Errors
/// [`CompositionError::Invalid`] naming the layer and field.
pub fn load(d: &LayerDoc, ctx: &str) -> Result<Effects, CompositionError> {
    let stroke = match &d.stroke {
        None => None,
        Some(s) => Some((
            anim(&s.color, "stroke.color", ctx, color)?,
            anim(&s.width, "stroke.width", ctx, num)?,
        )),
    };
    let shadow = d.shadow.as_ref().map(|s| shadow(s, ctx)).transpose()?;
    let gradient = d.gradient.as_ref().map(|g| gradient(g, ctx)).transpose()?;
    let animate = d.animate.as_ref().map(|a| animate(a, ctx)).transpose()?;
    Ok(Effects {
        stroke,
        shadow,
        gradient,
        animate,
    })
}

fn shadow(s: &ShadowDoc, ctx: &str) -> Result<Shadow, CompositionError> {
    Ok(Shadow {
        color: anim(&s.color, "shadow.color", ctx, color)?,
        offset: match &s.offset {
            None => Anim::Static([0.0; 2]),
            Some(o) => anim(o, "shadow.offset", ctx, pair)?,
        },
        blur: match &s.blur {
            None => Anim::Static(0.0),
            Some(b) => anim(b, "shadow.blur", ctx, num)?,
        },
    })
}

fn gradient(g: &GradientDoc, ctx: &str) -> Result<Gradient, CompositionError> {
    Ok(match g {
        GradientDoc::LinearGradient { from, to, stops } => Gradient::Linear {
            from: anim(from, "gradient.from", ctx, pair)?,
            to: anim(to, "gradient.to", ctx, pair)?,
            stops: stops_of(stops, "gradient.stops", ctx)?,
        },
        GradientDoc::RadialGradient {
            center,
            radius,
            stops,
        } => Gradient::Radial {
            center: anim(center, "gradient.center", ctx, pair)?,
            radius: anim(radius, "gradient.radius", ctx, num)?,
            stops: stops_of(stops, "gradient.stops", ctx)?,
        },
    })
}

fn animate(a: &AnimateDoc, ctx: &str) -> Result<Animate, CompositionError> {
    let stagger = a
        .stagger
        .check()
        .map_err(|m| invalid(ctx, format!("`animate.stagger` {m}")))?;
    Ok(Animate {
        by: a.by,
        stagger,
        opacity: match &a.opacity {
            None => Anim::Static(1.0),
            Some(o) => anim(o, "animate.opacity", ctx, num)?,
        },
        offset: match &a.offset {
            None => Anim::Static([0.0; 2]),
            Some(o) => anim(o, "animate.offset", ctx, pair)?,
        },
        scale: match &a.scale {
            None => Anim::Static([1.0; 2]),
            Some(s) => anim(s, "animate.scale", ctx, |s| match s {
                ScaleDoc::Uniform(u) => u.check().map(|u| [u, u]),
                ScaleDoc::Xy(xy) => pair(xy),
            })?,
        },
        rotation: match &a.rotation {
            None => Anim::Static(0.0),
            Some(r) => anim(r, "animate.rotation", ctx, num)?,
        },
    })
}

/// How `text` is split into units for its animation.
pub fn split(fx: &Effects, text: &str) -> Split {
    match fx.animate.as_ref().map(|a| a.by) {
        None => Split::Whole,
        Some(UnitDoc::Line) => Split::Lines,
        Some(UnitDoc::Word) => Split::At(super::text::word_starts(text)),
        Some(UnitDoc::Character) => Split::At(super::text::character_starts(text)),
    }
}

/// Whether the effects look the same on every frame.
pub fn is_static(fx: &Effects) -> bool {
    let stops = |s: &[Stop]| s.iter().all(|s| s.color.is_static());
    fx.stroke
        .as_ref()
        .is_none_or(|(c, w)| c.is_static() && w.is_static())
        && fx
            .shadow
            .as_ref()
            .is_none_or(|s| s.color.is_static() && s.offset.is_static() && s.blur.is_static())
        && fx.gradient.as_ref().is_none_or(|g| match g {
            Gradient::Linear { from, to, stops: s } => {
                from.is_static() && to.is_static() && stops(s)
            }
            Gradient::Radial {
                center,
                radius,
                stops: s,
            } => center.is_static() && radius.is_static() && stops(s),
        })
        && fx.animate.is_none()
}

/// How the layer is drawn on this frame.
pub struct Look {
    /// Layer time.
    pub t: f64,
    pub opacity: f32,
    pub blend: BlendMode,
    /// Layer space to pixels.
    pub tf: Transform,
}

/// Draws shaped text with the layer's colour (or `highlight`: unit index
/// and colour), effects and animation.
pub fn paint(
    pm: &mut Canvas<'_>,
    look: &Look,
    text: &TextLayer,
    shaped: &Shaped,
    highlight: Option<(usize, Rgba)>,
) {
    let fx = &text.fx;
    // `overflow: clip`: nothing outside the box.
    let clip = match (text.overflow, text.size) {
        (OverflowDoc::Clip, Some([w, h])) => Rect::from_xywh(0.0, 0.0, w as f32, h as f32)
            .and_then(|r| {
                let mut m = Mask::new(pm.width(), pm.height())?;
                m.fill_path(
                    &tiny_skia::PathBuilder::from_rect(r),
                    FillRule::Winding,
                    true,
                    look.tf,
                );
                Some(m)
            }),
        _ => None,
    };
    let clip = clip.as_ref();
    // Each unit's transform and opacity on this frame.
    let units: Vec<(Transform, f32)> = shaped
        .units
        .iter()
        .enumerate()
        .map(|(i, u)| match &fx.animate {
            None => (look.tf, look.opacity),
            Some(a) => {
                let t = look.t - i as f64 * a.stagger;
                let [dx, dy] = a.offset.at(t);
                let [sx, sy] = a.scale.at(t);
                let [px, py] = u.pivot;
                let unit = Transform::from_translate(dx as f32 + px, dy as f32 + py)
                    .pre_rotate(a.rotation.at(t) as f32)
                    .pre_scale(sx as f32, sy as f32)
                    .pre_translate(-px, -py);
                let o = (a.opacity.at(t) as f32).clamp(0.0, 1.0);
                (look.tf.pre_concat(unit), look.opacity * o)
            }
        })
        .collect();
    if let Some(s) = &fx.shadow {
        paint_shadow(pm, look, s, shaped, &units, fx, clip);
    }
    if let Some((c, w)) = &fx.stroke {
        let width = w.at(look.t) as f32;
        if width > 0.0 {
            // Twice the width, under the fill: `width` shows outside.
            let stroke = Stroke {
                width: 2.0 * width,
                line_join: LineJoin::Round,
                ..Stroke::default()
            };
            let c = c.at(look.t);
            for (u, &(tf, o)) in shaped.units.iter().zip(&units) {
                if let Some(path) = &u.path
                    && o > 0.0
                {
                    pm.stroke_path(path, &solid(c, o, look.blend), &stroke, tf, clip);
                }
            }
        }
    }
    let colour = text.color.at(look.t);
    for (i, (u, &(tf, o))) in shaped.units.iter().zip(&units).enumerate() {
        if o <= 0.0 {
            continue;
        }
        if let Some(path) = &u.path {
            let paint = match (highlight, &fx.gradient) {
                (Some((h, c)), _) if h == i => solid(c, o, look.blend),
                (_, Some(g)) => gradient_paint(g, look.t, o, look.blend),
                _ => solid(colour, o, look.blend),
            };
            pm.fill_path(path, &paint, FillRule::Winding, tf, clip);
        }
        draw_colour(pm, u, tf, o, look.blend, clip);
    }
}

/// Draws a unit's colour glyphs as images under `tf`.
fn draw_colour(
    pm: &mut Canvas<'_>,
    u: &super::text::Unit,
    tf: Transform,
    opacity: f32,
    blend: BlendMode,
    clip: Option<&Mask>,
) {
    let paint = PixmapPaint {
        opacity,
        blend_mode: blend,
        quality: FilterQuality::Bilinear,
    };
    for g in &u.colour {
        pm.draw_pixmap(
            0,
            0,
            g.pixmap.as_ref().as_ref(),
            &paint,
            tf.pre_concat(g.place),
            clip,
        );
    }
}

fn solid(c: Rgba, opacity: f32, blend: BlendMode) -> Paint<'static> {
    super::render::solid(c, opacity, blend)
}

fn gradient_paint(g: &Gradient, t: f64, opacity: f32, blend: BlendMode) -> Paint<'static> {
    let stops = |s: &[Stop]| -> Vec<GradientStop> { super::render::stops(s, t, opacity) };
    let shader: Option<Shader<'static>> = match g {
        Gradient::Linear { from, to, stops: s } => {
            let ([x0, y0], [x1, y1]) = (from.at(t), to.at(t));
            LinearGradient::new(
                Point::from_xy(x0 as f32, y0 as f32),
                Point::from_xy(x1 as f32, y1 as f32),
                stops(s),
                SpreadMode::Pad,
                Transform::identity(),
            )
        }
        Gradient::Radial {
            center,
            radius,
            stops: s,
        } => {
            let [cx, cy] = center.at(t);
            let c = Point::from_xy(cx as f32, cy as f32);
            RadialGradient::new(
                c,
                0.0,
                c,
                radius.at(t) as f32,
                stops(s),
                SpreadMode::Pad,
                Transform::identity(),
            )
        }
    };
    match shader {
        Some(shader) => Paint {
            shader,
            anti_alias: true,
            blend_mode: blend,
            ..Paint::default()
        },
        // A degenerate gradient (equal points) shows its last stop, as the
        // gradient layers do through tiny-skia's fallback.
        None => {
            let last = match g {
                Gradient::Linear { stops, .. } | Gradient::Radial { stops, .. } => {
                    stops.last().map_or([0.0; 4], |s| s.color.at(t))
                }
            };
            solid(last, opacity, blend)
        }
    }
}

/// The drop shadow: the text's coverage (fill, stroke and colour glyphs)
/// drawn offscreen over its bounding box, blurred, tinted and composited
/// under the text.
fn paint_shadow(
    pm: &mut Canvas<'_>,
    look: &Look,
    s: &Shadow,
    shaped: &Shaped,
    units: &[(Transform, f32)],
    fx: &Effects,
    clip: Option<&Mask>,
) {
    let colour = s.color.at(look.t);
    if colour[3] <= 0.0 {
        return;
    }
    let [dx, dy] = s.offset.at(look.t);
    let shift = look.tf.pre_translate(dx as f32, dy as f32);
    // Offsets are in layer space: move each unit as the layer's transform
    // moves a layer-space offset.
    let (ox, oy) = (shift.tx - look.tf.tx, shift.ty - look.tf.ty);
    let scale = (look.tf.sx * look.tf.sy - look.tf.kx * look.tf.ky)
        .abs()
        .sqrt();
    let sigma = (s.blur.at(look.t) as f32 / 2.0 * scale).max(0.0);
    let pad = (3.0 * sigma).ceil() + 2.0;
    let stroke_w = fx.stroke.as_ref().map_or(0.0, |(_, w)| w.at(look.t) as f32);
    let Some(b) = shadow_bounds(shaped, units, (ox, oy), stroke_w) else {
        return;
    };
    let (fw, fh) = (pm.width() as f32, pm.height() as f32);
    let x0 = (b.left() - pad).floor().max(-pad);
    let y0 = (b.top() - pad).floor().max(-pad);
    let x1 = (b.right() + pad).ceil().min(fw + pad);
    let y1 = (b.bottom() + pad).ceil().min(fh + pad);
    if x1 <= x0 || y1 <= y0 {
        return;
    }
    let (w, h) = ((x1 - x0) as u32, (y1 - y0) as u32);
    let Some(mut scratch) = Pixmap::new(w, h) else {
        return;
    };
    let black = [0.0, 0.0, 0.0, 1.0];
    let stroke = Stroke {
        width: 2.0 * stroke_w,
        line_join: LineJoin::Round,
        ..Stroke::default()
    };
    for (u, &(tf, o)) in shaped.units.iter().zip(units) {
        if o <= 0.0 {
            continue;
        }
        let tf = tf.post_translate(ox - x0, oy - y0);
        if let Some(p) = &u.path {
            if stroke_w > 0.0 {
                scratch.stroke_path(
                    p,
                    &solid(black, o, BlendMode::SourceOver),
                    &stroke,
                    tf,
                    None,
                );
            }
            scratch.fill_path(
                p,
                &solid(black, o, BlendMode::SourceOver),
                FillRule::Winding,
                tf,
                None,
            );
        }
        // Offscreen: where it draws is bounded by the scratch's place.
        let mut offscreen = Canvas::new(scratch.as_mut(), Damage::default());
        draw_colour(&mut offscreen, u, tf, o, BlendMode::SourceOver, None);
    }
    let mut alpha: Vec<u8> = scratch.pixels().iter().map(|p| p.alpha()).collect();
    blur(&mut alpha, w as usize, h as usize, sigma);
    // Tint: the shadow colour premultiplied by the blurred coverage.
    let k = |v: f64| (v.clamp(0.0, 1.0) * 255.0).round() as u32;
    let (r, g, bl, a) = (k(colour[0]), k(colour[1]), k(colour[2]), k(colour[3]));
    for (px, &cov) in scratch.pixels_mut().iter_mut().zip(&alpha) {
        let pa = div255(a * u32::from(cov));
        let c = |v: u32| div255(v * pa) as u8;
        *px = tiny_skia::PremultipliedColorU8::from_rgba(c(r), c(g), c(bl), pa as u8)
            .unwrap_or(tiny_skia::PremultipliedColorU8::TRANSPARENT);
    }
    let paint = PixmapPaint {
        opacity: 1.0,
        blend_mode: look.blend,
        quality: FilterQuality::Nearest,
    };
    pm.draw_pixmap(
        x0 as i32,
        y0 as i32,
        scratch.as_ref(),
        &paint,
        Transform::identity(),
        clip,
    );
}

/// The device-space bounds of everything a shadow covers: the units moved
/// by `(ox, oy)`, outlines grown by the stroke.
fn shadow_bounds(
    shaped: &Shaped,
    units: &[(Transform, f32)],
    (ox, oy): (f32, f32),
    stroke_w: f32,
) -> Option<Rect> {
    // The device-space bounds of everything the shadow covers.
    let mut bounds: Option<Rect> = None;
    let mut add = |r: Option<Rect>| {
        if let Some(r) = r {
            bounds = Some(match bounds {
                None => r,
                Some(b) => Rect::from_ltrb(
                    b.left().min(r.left()),
                    b.top().min(r.top()),
                    b.right().max(r.right()),
                    b.bottom().max(r.bottom()),
                )
                .unwrap_or(b),
            });
        }
    };
    for (u, &(tf, _)) in shaped.units.iter().zip(units) {
        let tf = tf.post_translate(ox, oy);
        if let Some(p) = &u.path {
            let b = p.bounds();
            let grown = Rect::from_ltrb(
                b.left() - stroke_w,
                b.top() - stroke_w,
                b.right() + stroke_w,
                b.bottom() + stroke_w,
            );
            add(grown.and_then(|r| r.transform(tf)));
        }
        for g in &u.colour {
            let r = Rect::from_xywh(0.0, 0.0, g.pixmap.width() as f32, g.pixmap.height() as f32);
            add(r.and_then(|r| r.transform(tf.pre_concat(g.place))));
        }
    }
    bounds
}

/// `v / 255` rounded, exact for `v ≤ 255 × 255`.
fn div255(v: u32) -> u32 {
    (v + 128 + ((v + 128) >> 8)) >> 8
}

/// A Gaussian blur of standard deviation `sigma` approximated by three box
/// blurs (W3C filter effects' recipe), in integers: the same everywhere.
fn blur(a: &mut [u8], w: usize, h: usize, sigma: f32) {
    if sigma < 0.5 || w == 0 || h == 0 {
        return;
    }
    // The box size d of the recipe: floor(s·3·sqrt(2π)/4 + 0.5).
    let d = (sigma * 3.0 * (2.0 * std::f32::consts::PI).sqrt() / 4.0 + 0.5).floor() as usize;
    if d < 1 {
        return;
    }
    let mut tmp = vec![0u8; a.len()];
    // Odd d: three boxes of d centred; even d: two of d offset by half a
    // pixel each way and one of d + 1 centred.
    let boxes: [(usize, usize); 3] = if d % 2 == 1 {
        [(d / 2, d / 2); 3]
    } else {
        [(d / 2, d / 2 - 1), (d / 2 - 1, d / 2), (d / 2, d / 2)]
    };
    for &(left, right) in &boxes {
        box_pass(a, &mut tmp, w, h, left, right, true);
        box_pass(&tmp, a, w, h, left, right, false);
    }
}

/// One box blur along rows (`horizontal`) or columns: each output is the
/// rounded mean of the `left + 1 + right` inputs around it (outside: 0).
fn box_pass(
    src: &[u8],
    dst: &mut [u8],
    w: usize,
    h: usize,
    left: usize,
    right: usize,
    horizontal: bool,
) {
    let (len, lines) = if horizontal { (w, h) } else { (h, w) };
    let at = |line: usize, i: usize| {
        if horizontal {
            line * w + i
        } else {
            i * w + line
        }
    };
    let n = (left + 1 + right) as u32;
    for line in 0..lines {
        let mut sum: u32 = 0;
        // Window [i - left, i + right].
        for j in 0..=right.min(len.saturating_sub(1)) {
            sum += u32::from(src[at(line, j)]);
        }
        for i in 0..len {
            dst[at(line, i)] = ((sum + n / 2) / n) as u8;
            let add = i + right + 1;
            if add < len {
                sum += u32::from(src[at(line, add)]);
            }
            if i >= left {
                sum -= u32::from(src[at(line, i - left)]);
            }
        }
    }
}
