//! Overrides by path, in the spreadsheet header syntax: `text.Title Card.Headline`,
//! `image.Logo`, `visible.Badge`, `color.Background`, `transform.Logo.position`,
//! `transform.Logo.scale`, `transform.Logo.rotation`, `transform.Logo.anchor`,
//! `opacity.Title`.

use serde_json::Value;

use super::anim::Anim;
use super::limits::{Coord, Degrees, Limit, Scale, Unit};
use super::load::{Comp, Kind, Layer};
use super::template::{Template, parse_color, suggest};
use crate::CompositionError;

const TRANSFORM_PROPS: [&str; 4] = ["position", "scale", "rotation", "anchor"];

/// Every override path the composition accepts, sorted.
pub fn paths(comp: &Comp) -> Vec<String> {
    fn walk(layers: &[Layer], out: &mut Vec<String>) {
        for l in layers {
            let p = &l.path;
            out.push(format!("visible.{p}"));
            out.push(format!("opacity.{p}"));
            for t in TRANSFORM_PROPS {
                out.push(format!("transform.{p}.{t}"));
            }
            match &l.kind {
                Kind::Text(_) => {
                    out.push(format!("text.{p}"));
                    out.push(format!("color.{p}"));
                }
                Kind::Image(_) => out.push(format!("image.{p}")),
                Kind::Video(_) => out.push(format!("video.{p}")),
                Kind::Solid { .. } => out.push(format!("color.{p}")),
                Kind::Rect { paint, .. }
                | Kind::Ellipse { paint, .. }
                | Kind::Path { paint, .. }
                    if paint.fill.is_some() =>
                {
                    out.push(format!("color.{p}"))
                }
                Kind::Group { layers, .. } => walk(layers, out),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(&comp.layers, &mut out);
    out.sort();
    out
}

fn find<'a>(layers: &'a mut [Layer], path: &str) -> Option<&'a mut Layer> {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let layer = layers.iter_mut().find(|l| l.name == head)?;
    match rest {
        None => Some(layer),
        Some(rest) => match &mut layer.kind {
            Kind::Group { layers, .. } => find(layers, rest),
            _ => None,
        },
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n: &f64| n.is_finite())
}

fn pair(v: &Value) -> Option<[f64; 2]> {
    match v {
        Value::Array(a) if a.len() == 2 => Some([number(&a[0])?, number(&a[1])?]),
        Value::String(s) => {
            let (a, b) = s.split_once(',')?;
            Some([a.trim().parse().ok()?, b.trim().parse().ok()?])
                .filter(|p: &[f64; 2]| p.iter().all(|x| x.is_finite()))
        }
        _ => None,
    }
}

/// Applies one override to `comp`.
///
/// # Errors
/// [`CompositionError::Invalid`] naming the override and, for an unknown path,
/// the nearest existing paths.
pub fn apply(comp: &mut Comp, key: &str, value: &Value) -> Result<(), CompositionError> {
    let o = Override {
        ctx: format!("{}: override `{key}`", comp.ctx),
        value,
    };
    let applied = match target(key) {
        None => false,
        Some((op, path, prop)) => match find(&mut comp.layers, path) {
            None => false,
            Some(layer) => o.assign(layer, op, prop)?,
        },
    };
    if applied {
        return Ok(());
    }
    let all = paths(comp);
    Err(CompositionError::Invalid {
        context: o.ctx,
        message: format!(
            "no such override path{}",
            suggest(key, all.iter().map(String::as_str))
        ),
    })
}

/// The layer path an override key names (`text.Card.Head` → `Card.Head`,
/// `transform.Logo.scale` → `Logo`); the key itself when it names none.
pub fn target_path(key: &str) -> &str {
    match target(key) {
        Some((_, path, _)) => path,
        None => key.split_once('.').map_or(key, |(_, rest)| rest),
    }
}

/// Splits an override key into what it sets, the layer path and, for
/// `transform`, the transform property.
fn target(key: &str) -> Option<(&str, &str, Option<&str>)> {
    let (op, rest) = key.split_once('.')?;
    if op != "transform" {
        return Some((op, rest, None));
    }
    match rest.rsplit_once('.') {
        Some((p, t)) if TRANSFORM_PROPS.contains(&t) => Some((op, p, Some(t))),
        _ => None,
    }
}

/// One override's value and where it was given, for errors.
struct Override<'a> {
    /// "…: override `text.Title`".
    ctx: String,
    value: &'a Value,
}

impl Override<'_> {
    /// The error for a value of the wrong form.
    fn bad(&self, expected: &str) -> CompositionError {
        CompositionError::Invalid {
            context: self.ctx.clone(),
            message: format!("{} is invalid: expected {expected}", self.value),
        }
    }

    /// Sets what `op` (and `prop`) name on `layer`; `false` if the layer has
    /// no such property.
    fn assign(
        &self,
        layer: &mut Layer,
        op: &str,
        prop: Option<&str>,
    ) -> Result<bool, CompositionError> {
        let value = self.value;
        match (op, prop, &mut layer.kind) {
            ("text", None, Kind::Text(t)) => {
                let s = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return Err(self.bad("text")),
                };
                if s.chars().count() > super::load::MAX_TEXT_CHARS {
                    return Err(self.bad("text of at most 10000 characters"));
                }
                t.text_override = Some(s);
            }
            ("image", None, Kind::Image(i)) => {
                let Value::String(s) = value else {
                    return Err(self.bad("a file path in the bundle"));
                };
                i.src = Template::from_literal(s);
                i.pixmap = None;
            }
            ("video", None, Kind::Video(v)) => {
                let Value::String(s) = value else {
                    return Err(self.bad("a file path in the bundle"));
                };
                v.src = Template::from_literal(s);
                v.prepared = None;
            }
            ("color", None, kind) => return self.color(kind),
            ("visible", None, _) => layer.visible = self.visible()?,
            ("opacity", None, _) => {
                let o = number(value)
                    .filter(|o| Unit::RANGE.check(*o).is_ok())
                    .ok_or_else(|| self.bad(&format!("a number in {}", Unit::RANGE)))?;
                layer.opacity = Anim::Static(o);
            }
            ("transform", Some("position"), _) => layer.position = Anim::Static(self.point()?),
            ("transform", Some("anchor"), _) => layer.anchor = Anim::Static(self.point()?),
            ("transform", Some("scale"), _) => {
                let s = pair(value)
                    .or_else(|| number(value).map(|n| [n, n]))
                    .filter(|s| Scale::RANGE.check2(*s).is_ok())
                    .ok_or_else(|| {
                        self.bad(&format!(
                            "a number, [sx, sy] or \"sx,sy\" within {}",
                            Scale::RANGE
                        ))
                    })?;
                layer.scale = Anim::Static(s);
            }
            ("transform", Some("rotation"), _) => {
                let r = number(value)
                    .filter(|r| Degrees::RANGE.check(*r).is_ok())
                    .ok_or_else(|| self.bad(&format!("degrees within {}", Degrees::RANGE)))?;
                layer.rotation = Anim::Static(r);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// A position or anchor.
    fn point(&self) -> Result<[f64; 2], CompositionError> {
        pair(self.value)
            .filter(|p| Coord::RANGE.check2(*p).is_ok())
            .ok_or_else(|| self.bad(&format!("[x, y] or \"x,y\" within {}", Coord::RANGE)))
    }

    /// Sets the colour of a solid, a text or a filled shape.
    fn color(&self, kind: &mut Kind) -> Result<bool, CompositionError> {
        let Value::String(s) = self.value else {
            return Err(self.bad("a colour such as #ff8800"));
        };
        let c = Anim::Static(parse_color(s).map_err(|m| CompositionError::Invalid {
            context: self.ctx.clone(),
            message: m,
        })?);
        match kind {
            Kind::Solid { color, .. } => *color = c,
            Kind::Text(t) => t.color = c,
            Kind::Rect { paint, .. } | Kind::Ellipse { paint, .. } | Kind::Path { paint, .. }
                if paint.fill.is_some() =>
            {
                paint.fill = Some(c)
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn visible(&self) -> Result<bool, CompositionError> {
        match self.value {
            Value::Bool(b) => Ok(*b),
            Value::Number(n) if n.as_f64() == Some(1.0) => Ok(true),
            Value::Number(n) if n.as_f64() == Some(0.0) => Ok(false),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Ok(true),
                "false" | "no" | "0" | "" => Ok(false),
                _ => Err(self.bad("true or false")),
            },
            _ => Err(self.bad("true or false")),
        }
    }
}
