//! What a column means: a plain name is a prop (`name`, `count`), a dotted
//! one an override in the scene format's spreadsheet path syntax
//! (`text.Title`, `transform.Square.position`), which may name the
//! composition first as in After Effects templates (`text.promo.Title`);
//! `out` and `composition` are reserved. CSV text is given the type of its
//! prop's default.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use composition::Props;
use composition::scene::{SceneBundle, suggest};
use serde_json::Value;

use super::rows::Cell;

/// The reserved column naming a row's output.
pub const OUT_COLUMN: &str = "out";
/// The reserved column naming a row's composition.
pub const COMPOSITION_COLUMN: &str = "composition";

/// What a column sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Column {
    /// A prop, by its name.
    Prop(String),
    /// An override, by its path without a composition prefix.
    Override(String),
    /// The row's output name.
    Out,
    /// The row's composition.
    Composition,
}

/// The columns of one composition, classified once per header.
#[derive(Debug)]
pub(crate) struct Columns {
    id: String,
    /// Declared props and their defaults (`null`: required); `None` when
    /// the composition is registered in the workers (its props are checked
    /// by describing it).
    declared: Option<Props>,
    /// Every override path it accepts; `None` as above.
    paths: Option<BTreeSet<String>>,
    known: HashMap<Arc<str>, Result<Column, String>>,
}

impl Columns {
    /// The columns of composition `id` of `bundle`.
    ///
    /// # Errors
    /// The bundle's error for an unknown composition.
    pub(crate) fn of_bundle(
        bundle: &SceneBundle,
        id: &str,
    ) -> Result<Self, composition::CompositionError> {
        Ok(Columns {
            id: id.to_owned(),
            declared: Some(bundle.declared_props(id)?),
            paths: Some(bundle.override_paths(id)?.into_iter().collect()),
            known: HashMap::new(),
        })
    }

    /// The columns of a composition registered in the workers: plain names
    /// are props, dotted ones overrides, all checked when described.
    pub(crate) fn registered(id: &str) -> Self {
        Columns {
            id: id.to_owned(),
            declared: None,
            paths: None,
            known: HashMap::new(),
        }
    }

    /// What `header` sets.
    ///
    /// # Errors
    /// A message naming the column and the nearest props or override paths
    /// when it is neither.
    pub(crate) fn column(&mut self, header: &Arc<str>) -> Result<Column, String> {
        if let Some(known) = self.known.get(header) {
            return known.clone();
        }
        let c = self.classify(header);
        self.known.insert(Arc::clone(header), c.clone());
        c
    }

    fn classify(&self, header: &str) -> Result<Column, String> {
        match header {
            OUT_COLUMN => return Ok(Column::Out),
            COMPOSITION_COLUMN => return Ok(Column::Composition),
            _ => {}
        }
        let Some((op, rest)) = header.split_once('.') else {
            return match &self.declared {
                Some(declared) if !declared.contains_key(header) => Err(format!(
                    "not a prop of `{}` nor an override (`text.Layer`, …){}; its props: {}",
                    self.id,
                    suggest(header, declared.keys().map(String::as_str)),
                    list(declared.keys())
                )),
                _ => Ok(Column::Prop(header.to_owned())),
            };
        };
        let Some(paths) = &self.paths else {
            return Ok(Column::Override(header.to_owned()));
        };
        if paths.contains(header) {
            return Ok(Column::Override(header.to_owned()));
        }
        // `text.promo.Title`: the composition's id first, as After Effects
        // template headers name their main comp.
        if let Some(path) = rest.strip_prefix(&format!("{}.", self.id)) {
            let unprefixed = format!("{op}.{path}");
            if paths.contains(&unprefixed) {
                return Ok(Column::Override(unprefixed));
            }
        }
        Err(format!(
            "no such override path in `{}`{}",
            self.id,
            suggest(header, paths.iter().map(String::as_str))
        ))
    }

    /// The value `cell` gives `column`: CSV text in the type of the prop's
    /// default (a number where the default is a number, `true`/`false`/
    /// `yes`/`no`/`1`/`0` where it is a boolean, JSON where it is an array
    /// or object), overrides as text (the scene format reads numbers,
    /// `x,y` pairs and booleans from text), JSON values as typed.
    ///
    /// # Errors
    /// A message naming the value and the type wanted.
    pub(crate) fn value(&self, column: &Column, cell: &Cell) -> Result<Value, String> {
        let text = match cell {
            Cell::Json(v) => return Ok(v.clone()),
            Cell::Text(text) => text,
        };
        let Column::Prop(prop) = column else {
            return Ok(Value::String(text.clone()));
        };
        let Some(default) = self.declared.as_ref().and_then(|d| d.get(prop)) else {
            return Ok(Value::String(text.clone()));
        };
        coerce(text, default).map_err(|wanted| {
            format!(
                "`{}` is not {wanted} (the default of `{prop}` is {})",
                spec::quote(text),
                spec::quote(&default.to_string())
            )
        })
    }
}

/// `text` as a value of the type of `default`, or what was wanted.
fn coerce(text: &str, default: &Value) -> Result<Value, &'static str> {
    let trimmed = text.trim();
    match default {
        Value::Number(_) => {
            if let Ok(i) = trimmed.parse::<i64>() {
                return Ok(i.into());
            }
            trimmed
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or("a number")
        }
        Value::Bool(_) => match trimmed.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(Value::Bool(true)),
            "false" | "no" | "0" => Ok(Value::Bool(false)),
            _ => Err("true or false"),
        },
        Value::Array(_) => match serde_json::from_str(trimmed) {
            Ok(v @ Value::Array(_)) => Ok(v),
            _ => Err("a JSON array"),
        },
        Value::Object(_) => match serde_json::from_str(trimmed) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => Err("a JSON object"),
        },
        // Strings, and required props (no default to take a type from).
        Value::String(_) | Value::Null => Ok(Value::String(text.to_owned())),
    }
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let all: Vec<String> = names.map(|n| format!("`{n}`")).collect();
    if all.is_empty() {
        "none".to_owned()
    } else {
        all.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn promo() -> SceneBundle {
        SceneBundle::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/promo"))
            .expect("promo opens")
    }

    #[track_caller]
    fn check(columns: &mut Columns, header: &str, expected: Result<Column, &str>) {
        assert_eq!(
            columns.column(&Arc::from(header)),
            expected.map_err(str::to_owned)
        );
    }

    #[test]
    fn headers_are_props_overrides_or_reserved() {
        let mut c = Columns::of_bundle(&promo(), "promo").expect("promo");
        check(&mut c, "name", Ok(Column::Prop("name".into())));
        check(&mut c, "out", Ok(Column::Out));
        check(&mut c, "composition", Ok(Column::Composition));
        check(
            &mut c,
            "text.Title",
            Ok(Column::Override("text.Title".into())),
        );
        check(
            &mut c,
            "text.promo.Title",
            Ok(Column::Override("text.Title".into())),
        );
        check(
            &mut c,
            "transform.promo.Square.position",
            Ok(Column::Override("transform.Square.position".into())),
        );
        check(
            &mut c,
            "nmae",
            Err(
                "not a prop of `promo` nor an override (`text.Layer`, …); did you mean `name`?; its props: `amount`, `count`, `name`",
            ),
        );
        check(
            &mut c,
            "colour.Square",
            Err(
                "no such override path in `promo`; did you mean `color.Square`, `color.Title`, `color.Subtitle`?",
            ),
        );
        let mut r = Columns::registered("test-pattern");
        check(&mut r, "width", Ok(Column::Prop("width".into())));
        check(&mut r, "a.b", Ok(Column::Override("a.b".into())));
    }

    #[test]
    fn csv_text_takes_the_type_of_the_default() {
        let c = Columns::of_bundle(&promo(), "promo").expect("promo");
        let prop = |p: &str| Column::Prop(p.into());
        let text = |t: &str| Cell::Text(t.into());
        assert_eq!(c.value(&prop("count"), &text(" 7 ")), Ok(7.into()));
        assert_eq!(
            c.value(&prop("count"), &text("2.5")),
            Ok(serde_json::json!(2.5))
        );
        assert_eq!(
            c.value(&prop("count"), &text("seven")),
            Err("`seven` is not a number (the default of `count` is 12)".into())
        );
        assert_eq!(
            c.value(&prop("count"), &text("NaN")),
            Err("`NaN` is not a number (the default of `count` is 12)".into())
        );
        // `amount` defaults to a string: "007" stays as typed.
        assert_eq!(c.value(&prop("amount"), &text("007")), Ok("007".into()));
        assert_eq!(
            c.value(&Column::Override("visible.Badge".into()), &text("no")),
            Ok("no".into())
        );
        assert_eq!(
            c.value(&prop("count"), &Cell::Json("x".into())),
            Ok("x".into())
        );
        assert_eq!(coerce("Yes", &Value::Bool(false)), Ok(Value::Bool(true)));
        assert_eq!(
            coerce("[1,2]", &serde_json::json!([0])),
            Ok(serde_json::json!([1, 2]))
        );
        assert_eq!(coerce("{", &serde_json::json!({})), Err("a JSON object"));
    }
}
