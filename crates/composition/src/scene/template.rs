//! `{name}` placeholders filled from props, colours, and nearest-name
//! suggestions.

use crate::{CompositionError, Props};

/// A string with `{name}` placeholders; `{{` and `}}` are literal braces.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Prop(String),
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
                    let name = name.trim().to_owned();
                    if name.is_empty() {
                        return Err(format!("`{text}`: empty placeholder `{{}}`"));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Prop(name));
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
            Part::Prop(n) => Some(n.as_str()),
            Part::Lit(_) => None,
        })
    }

    /// Fills the placeholders from `props` (strings as they are, numbers and
    /// booleans in JSON form).
    ///
    /// # Errors
    /// [`CompositionError::MissingProp`] naming the prop and `needed_by`.
    pub fn fill(&self, props: &Props, needed_by: &str) -> Result<String, CompositionError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Prop(name) => match props.get(name) {
                    None | Some(serde_json::Value::Null) => {
                        return Err(CompositionError::MissingProp {
                            name: name.clone(),
                            needed_by: needed_by.to_owned(),
                        });
                    }
                    Some(serde_json::Value::String(s)) => out.push_str(s),
                    Some(v) => out.push_str(&v.to_string()),
                },
            }
        }
        Ok(out)
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
