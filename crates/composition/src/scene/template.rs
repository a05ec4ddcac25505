//! `{name}` and `{name:spec}` placeholders filled from props, colours, and
//! nearest-name suggestions.

use super::number::{Decimal, Spec};
use crate::{CompositionError, Props};

/// A string with `{name}` placeholders, optionally with a number format
/// (`{amount:.2f}`); `{{` and `}}` are literal braces.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Prop(Placeholder),
}

/// One `{name:spec}`.
#[derive(Debug, Clone, PartialEq)]
struct Placeholder {
    name: String,
    spec: Option<Spec>,
    /// As written, for errors: `{amount:.2f}`.
    written: String,
}

impl Template {
    /// Parses `text`.
    ///
    /// # Errors
    /// A message naming an unclosed or empty placeholder.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let placeholder = Placeholder::parse(text, &mut chars)?;
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Prop(placeholder));
                }
                '}' => {
                    return Err(format!(
                        "`{text}`: `}}` without `{{` (write `}}}}` for a literal brace)"
                    ));
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template { parts })
    }

    /// A template that is just `text`.
    pub fn from_literal(text: &str) -> Template {
        Template {
            parts: vec![Part::Lit(text.to_owned())],
        }
    }

    /// The text, if the template has no placeholders.
    pub fn literal(&self) -> Option<String> {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Lit(s) => Some(s.as_str()),
                Part::Prop(_) => None,
            })
            .collect()
    }

    /// Characters of the text outside placeholders.
    pub fn literal_chars(&self) -> u64 {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Lit(s) => s.chars().count() as u64,
                Part::Prop(_) => 0,
            })
            .sum()
    }

    /// The prop names used.
    pub fn props(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Prop(p) => Some(p.name.as_str()),
            Part::Lit(_) => None,
        })
    }

    /// Fills the placeholders from `props`: a string as it is (or, with a
    /// format spec, read as a decimal number); a number in positional
    /// decimal form, shortest for its value (`340.5`, `12`, never `1e+21`),
    /// or as its spec says. `needed_by` names what is being filled.
    ///
    /// # Errors
    /// [`CompositionError::MissingProp`] naming the prop and `needed_by`;
    /// [`CompositionError::Invalid`] for a boolean, array or object, or a
    /// formatted prop that is not a number.
    pub fn fill(&self, props: &Props, needed_by: &str) -> Result<String, CompositionError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Prop(p) => out.push_str(&p.show(props, needed_by)?),
            }
        }
        Ok(out)
    }
}

impl Placeholder {
    /// Reads a placeholder of template `text` from `chars`, just after its
    /// `{`: up to its `}`, a name and an optional `:spec`.
    fn parse(
        text: &str,
        chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    ) -> Result<Placeholder, String> {
        let mut name = String::new();
        loop {
            match chars.next() {
                Some('}') => break,
                Some(c) => name.push(c),
                None => {
                    return Err(format!(
                        "`{text}`: placeholder `{{{name}` is not closed (write `{{{{` for a literal brace)"
                    ));
                }
            }
        }
        let written = format!("{{{name}}}");
        let (name, spec) = match name.split_once(':') {
            Some((n, spec)) => (
                n,
                Some(
                    Spec::parse(spec.trim())
                        .map_err(|m| format!("`{text}`: placeholder `{written}`: {m}"))?,
                ),
            ),
            None => (name.as_str(), None),
        };
        let name = name.trim().to_owned();
        if name.is_empty() {
            return Err(format!("`{text}`: empty placeholder `{written}`"));
        }
        Ok(Placeholder {
            name,
            spec,
            written,
        })
    }

    /// The text this placeholder shows with `props`.
    fn show(&self, props: &Props, needed_by: &str) -> Result<String, CompositionError> {
        use serde_json::Value;
        let bad = |message: String| CompositionError::Invalid {
            context: format!("{needed_by}: placeholder `{}`", self.written),
            message,
        };
        let number = match props.get(&self.name) {
            None | Some(Value::Null) => {
                return Err(CompositionError::MissingProp {
                    name: self.name.clone(),
                    needed_by: needed_by.to_owned(),
                });
            }
            Some(Value::String(s)) => match self.spec {
                None => return Ok(s.clone()),
                Some(_) => Decimal::parse(s).ok_or_else(|| {
                    bad(format!(
                        "prop `{}` is \"{}\", not a number: a format spec needs a number such as 1234.5",
                        self.name,
                        quote(s)
                    ))
                })?,
            },
            Some(Value::Number(n)) => number_of(n)
                .ok_or_else(|| bad(format!("prop `{}` is not a finite number", self.name)))?,
            Some(other) => {
                let what = match other {
                    Value::Bool(_) => "a boolean",
                    Value::Array(_) => "an array",
                    _ => "an object",
                };
                return Err(bad(format!(
                    "prop `{}` is {what} ({}): text shows strings and numbers only; pass the text to show as a string",
                    self.name,
                    quote(&other.to_string())
                )));
            }
        };
        match &self.spec {
            None => Ok(number.to_string()),
            Some(spec) => spec.format(number).map_err(bad),
        }
    }
}

/// A JSON number as an exact decimal: integers digit for digit (even past
/// 2^53), others by their shortest round-trip form.
fn number_of(n: &serde_json::Number) -> Option<Decimal> {
    if n.is_i64() || n.is_u64() {
        Decimal::parse(&n.to_string())
    } else {
        Decimal::from_f64(n.as_f64()?)
    }
}

/// At most 200 characters of `s`, for error messages.
pub(super) fn quote(s: &str) -> String {
    const MAX: usize = 200;
    match s.char_indices().nth(MAX) {
        None => s.to_owned(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

/// A colour with straight (not premultiplied) alpha, components 0-1.
pub type Rgba = [f64; 4];

/// Parses `#rgb`, `#rrggbb`, `#rrggbbaa`, `transparent`, `white` or `black`.
///
/// # Errors
/// A message naming the value and the accepted forms.
pub fn parse_color(s: &str) -> Result<Rgba, String> {
    let bad = || {
        format!(
            "`{s}` is not a colour: expected #rgb, #rrggbb, #rrggbbaa, transparent, white or black"
        )
    };
    match s.trim() {
        "transparent" => return Ok([0.0; 4]),
        "white" => return Ok([1.0; 4]),
        "black" => return Ok([0.0, 0.0, 0.0, 1.0]),
        _ => {}
    }
    let hex = s.trim().strip_prefix('#').ok_or_else(bad)?;
    if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let digits: Vec<u8> = hex
        .chars()
        .map(|c| c.to_digit(16).map(|d| d as u8).ok_or_else(bad))
        .collect::<Result<_, _>>()?;
    let bytes: Vec<u8> = match digits.len() {
        3 | 4 => digits.iter().map(|d| d * 17).collect(),
        6 | 8 => digits.chunks(2).map(|p| p[0] * 16 + p[1]).collect(),
        _ => return Err(bad()),
    };
    let c = |i: usize| f64::from(bytes.get(i).copied().unwrap_or(255)) / 255.0;
    Ok([c(0), c(1), c(2), c(3)])
}

/// Up to three of `candidates` nearest to `wanted`, formatted as
/// "; did you mean `a`, `b`?" (empty when nothing is close).
pub fn suggest<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let mut scored: Vec<(usize, &str)> = candidates
        .into_iter()
        .map(|c| {
            (
                strsim::levenshtein(&wanted.to_lowercase(), &c.to_lowercase()),
                c,
            )
        })
        .filter(|(d, c)| *d <= (c.chars().count().max(wanted.chars().count()) / 2).max(2))
        .collect();
    scored.sort();
    scored.dedup();
    if scored.is_empty() {
        return String::new();
    }
    let names: Vec<String> = scored
        .iter()
        .take(3)
        .map(|(_, c)| format!("`{c}`"))
        .collect();
    format!("; did you mean {}?", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_and_name_missing_props() {
        let t = Template::parse("Your {count} referrals earned ${amount} {{ok}}").expect("parses");
        let props = serde_json::json!({"count": 12, "amount": "340.00"});
        let props = props.as_object().expect("object");
        assert_eq!(
            t.fill(props, "x").expect("fills"),
            "Your 12 referrals earned $340.00 {ok}"
        );
        let err = Template::parse("Hi {name}")
            .expect("parses")
            .fill(props, "layer `Title`")
            .expect_err("missing");
        assert_eq!(
            err.to_string(),
            "prop `name` is missing (needed by layer `Title`)"
        );
        assert!(Template::parse("a {b").is_err());
        assert!(Template::parse("a }").is_err());
    }

    #[track_caller]
    fn filled(template: &str, props: serde_json::Value) -> Result<String, String> {
        let props = props.as_object().expect("object").clone();
        Template::parse(template)
            .expect("parses")
            .fill(&props, "layer `T`")
            .map_err(|e| e.to_string())
    }

    #[test]
    fn numbers_show_as_written_decimals_or_by_their_spec() {
        let p = serde_json::json!({
            "amount": 340.50, "whole": 12.0, "huge": 1e21, "count": 1234567,
            "cell": "340.50", "n": 42, "rate": 0.125, "big": 9007199254740993u64
        });
        for (template, expected) in [
            ("{amount}", "340.5"),
            ("${amount:.2f}", "$340.50"),
            ("{whole}", "12"),
            ("{huge}", "1000000000000000000000"),
            ("{count:,}", "1,234,567"),
            ("{cell}", "340.50"),
            ("{cell:,.2f}", "340.50"),
            ("{n:05}", "00042"),
            ("{rate:.1%}", "12.5%"),
            ("{big}", "9007199254740993"),
            ("{ amount : .1f }", "340.5"),
        ] {
            assert_eq!(
                filled(template, p.clone()).as_deref(),
                Ok(expected),
                "{template}"
            );
        }
    }

    #[test]
    fn booleans_arrays_objects_and_non_numbers_are_refused() {
        let p = serde_json::json!({"vip": true, "list": [1, 2], "obj": {"a": 1}, "name": "Ada"});
        for (template, expected) in [
            (
                "{vip}",
                "layer `T`: placeholder `{vip}`: prop `vip` is a boolean (true): text shows strings and numbers only; pass the text to show as a string",
            ),
            (
                "{list}",
                "layer `T`: placeholder `{list}`: prop `list` is an array ([1,2]): text shows strings and numbers only; pass the text to show as a string",
            ),
            (
                "{obj:.2f}",
                "layer `T`: placeholder `{obj:.2f}`: prop `obj` is an object ({\"a\":1}): text shows strings and numbers only; pass the text to show as a string",
            ),
            (
                "{name:.2f}",
                "layer `T`: placeholder `{name:.2f}`: prop `name` is \"Ada\", not a number: a format spec needs a number such as 1234.5",
            ),
        ] {
            assert_eq!(
                filled(template, p.clone()),
                Err(expected.to_owned()),
                "{template}"
            );
        }
        assert_eq!(
            Template::parse("{amount:.2x}").expect_err("bad spec"),
            "`{amount:.2x}`: placeholder `{amount:.2x}`: `x` is not understood: a format spec is [+][0][width][,][.precision][f|d|%], such as `.2f`, `,`, `05` or `.1%`"
        );
        assert!(Template::parse("{:.2f}").is_err());
    }

    #[test]
    fn colours() {
        assert_eq!(parse_color("#ff0000").expect("hex"), [1.0, 0.0, 0.0, 1.0]);
        assert_eq!(parse_color("#fff8").expect("short")[3], 136.0 / 255.0);
        assert!(parse_color("red").is_err());
        assert!(parse_color("#12345").is_err());
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("text.Titel", ["text.Title", "text.Subtitle", "image.Badge"]),
            "; did you mean `text.Title`, `text.Subtitle`?"
        );
        assert_eq!(suggest("zzzzzz", ["text.Title"]), "");
    }
}
