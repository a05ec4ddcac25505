//! Overrides by path, in the spreadsheet header syntax: `text.Title Card.Headline`,
//! `image.Logo`, `visible.Badge`, `color.Background`, `transform.Logo.position`,
//! `transform.Logo.scale`, `transform.Logo.rotation`, `transform.Logo.anchor`,
//! `opacity.Title`.

use serde_json::Value;

use super::anim::Anim;
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
    let ctx = format!("{}: override `{key}`", comp.ctx);
    let unknown = |comp: &Comp| {
        let all = paths(comp);
        CompositionError::Invalid {
            context: ctx.clone(),
            message: format!(
                "no such override path{}",
                suggest(key, all.iter().map(String::as_str))
            ),
        }
    };
    let bad = |expected: &str| CompositionError::Invalid {
        context: ctx.clone(),
        message: format!("{value} is invalid: expected {expected}"),
    };
    let Some((op, rest)) = key.split_once('.') else {
        return Err(unknown(comp));
    };
    let (path, prop) = if op == "transform" {
        match rest.rsplit_once('.') {
            Some((p, t)) if TRANSFORM_PROPS.contains(&t) => (p, Some(t)),
            _ => return Err(unknown(comp)),
        }
    } else {
        (rest, None)
    };
    let Some(layer) = find(&mut comp.layers, path) else {
        return Err(unknown(comp));
    };
    match (op, prop, &mut layer.kind) {
        ("text", None, Kind::Text(t)) => {
            let s = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(bad("text")),
            };
            if s.chars().count() > super::load::MAX_TEXT_CHARS {
                return Err(bad("text of at most 10000 characters"));
            }
            t.text_override = Some(s);
        }
        ("image", None, Kind::Image(i)) => {
            let Value::String(s) = value else {
                return Err(bad("a file path in the bundle"));
            };
            i.src = Template::from_literal(s);
            i.pixmap = None;
        }
        ("color", None, kind) => {
            let Value::String(s) = value else {
                return Err(bad("a colour such as #ff8800"));
            };
            let c = Anim::Static(parse_color(s).map_err(|m| CompositionError::Invalid {
                context: ctx.clone(),
                message: m,
            })?);
            match kind {
                Kind::Solid { color, .. } => *color = c,
                Kind::Text(t) => t.color = c,
                Kind::Rect { paint, .. }
                | Kind::Ellipse { paint, .. }
                | Kind::Path { paint, .. }
                    if paint.fill.is_some() =>
                {
                    paint.fill = Some(c)
                }
                _ => return Err(unknown(comp)),
            }
        }
        ("visible", None, _) => {
            layer.visible = match value {
                Value::Bool(b) => *b,
                Value::Number(n) if n.as_f64() == Some(1.0) => true,
                Value::Number(n) if n.as_f64() == Some(0.0) => false,
                Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                    "true" | "yes" | "1" => true,
                    "false" | "no" | "0" | "" => false,
                    _ => return Err(bad("true or false")),
                },
                _ => return Err(bad("true or false")),
            };
        }
        ("opacity", None, _) => {
            let o = number(value)
                .filter(|o| (0.0..=1.0).contains(o))
                .ok_or_else(|| bad("a number in 0-1"))?;
            layer.opacity = Anim::Static(o);
        }
        ("transform", Some("position"), _) => {
            layer.position = Anim::Static(pair(value).ok_or_else(|| bad("[x, y] or \"x,y\""))?);
        }
        ("transform", Some("anchor"), _) => {
            layer.anchor = Anim::Static(pair(value).ok_or_else(|| bad("[x, y] or \"x,y\""))?);
        }
        ("transform", Some("scale"), _) => {
            let s = pair(value)
                .or_else(|| number(value).map(|n| [n, n]))
                .ok_or_else(|| bad("a number, [sx, sy] or \"sx,sy\""))?;
            layer.scale = Anim::Static(s);
        }
        ("transform", Some("rotation"), _) => {
            layer.rotation = Anim::Static(number(value).ok_or_else(|| bad("degrees"))?);
        }
        _ => return Err(unknown(comp)),
    }
    Ok(())
}
