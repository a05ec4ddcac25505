//! Output names: `--name '{name}-{count}.mp4'` is a template over a row's
//! columns in the scene format's `{column}` syntax (`{{`/`}}` for literal
//! braces); a row's `out` cell names its output directly; without either,
//! an output is named by the sha256 of its bytes (`ab/cd/<sha256>.mp4`).
//! `Names` remembers which variant each name was given to, so two rows
//! that would write different bytes to one name are refused before
//! anything renders.

use std::collections::HashMap;

use composition::Props;
use composition::scene::Template;
use spec::ContentHash;

use crate::Error;

/// The longest output name accepted, in bytes (S3's key limit).
pub const MAX_NAME_BYTES: usize = 1024;

/// A `--name` template.
#[derive(Debug, Clone, PartialEq)]
pub struct NameTemplate {
    text: String,
    template: Template,
}

impl NameTemplate {
    /// Parses `text`: literal text and `{column}` placeholders, where a
    /// column is any of the row's columns (`{name}`, `{text.Title}`), a
    /// prop's default when the row leaves it blank, `{row}` (the row's
    /// number), `{composition}` or `{variant}` (the variant's id, 64 hex
    /// digits).
    ///
    /// # Errors
    /// [`Error::Input`] naming the template: an unclosed or empty
    /// placeholder, or no placeholder at all (every row would write the
    /// same name).
    pub fn parse(text: &str) -> Result<Self, Error> {
        let template = Template::parse(text).map_err(|m| Error::Input(format!("--name {m}")))?;
        if template.props().next().is_none() {
            return Err(Error::Input(format!(
                "--name `{}` has no {{column}}: every row would write the same file",
                spec::quote(text)
            )));
        }
        Ok(NameTemplate {
            text: text.to_owned(),
            template,
        })
    }

    /// The template as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The name for a row whose placeholders take their values from
    /// `values`.
    ///
    /// # Errors
    /// A message naming the missing column, or why the name is refused.
    pub(crate) fn fill(&self, values: &Props) -> Result<String, String> {
        let name = self.template.fill(values, "--name").map_err(|e| match e {
            composition::CompositionError::MissingProp { name, .. } => format!(
                "--name `{}`: the row has no `{name}`",
                spec::quote(&self.text)
            ),
            other => other.to_string(),
        })?;
        check_name(&name)?;
        Ok(name)
    }
}

/// Checks an output name: a relative `/`-separated key with no empty, `.`
/// or `..` segment, no `\` or NUL, at most [`MAX_NAME_BYTES`].
///
/// # Errors
/// A message quoting the name.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "output name `{}` is longer than {MAX_NAME_BYTES} bytes",
            spec::quote(name)
        ));
    }
    spec::check_key(name).map_err(|reason| {
        format!(
            "output name `{}` is not a relative file name: {reason}",
            spec::quote(name)
        )
    })
}

/// Which variant each output name was given to, and by which row. Names
/// are kept as their sha256 so that memory per name is small and fixed.
#[derive(Debug, Default)]
pub(crate) struct Names {
    by_name: HashMap<ContentHash, (ContentHash, u64)>,
}

impl Names {
    /// Gives `name` to `variant` for `row`; refuses it when an earlier row
    /// gave it to another variant.
    ///
    /// # Errors
    /// A message naming the name and the earlier row.
    pub(crate) fn claim(
        &mut self,
        name: &str,
        variant: ContentHash,
        row: u64,
    ) -> Result<(), String> {
        let key = spec::key::key_of("montage-output-name", &name);
        match self.by_name.get(&key) {
            Some((v, _)) if *v == variant => Ok(()),
            Some((_, first)) => Err(format!(
                "output `{}` is also the name of row {first}, which renders different content",
                spec::quote(name)
            )),
            None => {
                self.by_name.insert(key, (variant, row));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn values(pairs: &[(&str, Value)]) -> Props {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn templates_fill_from_columns_and_refuse_bad_names() {
        let t = NameTemplate::parse("{name}/{count}-{text.Title}.mp4").expect("parses");
        let v = values(&[
            ("name", "Ada".into()),
            ("count", 12.into()),
            ("text.Title", "Hi".into()),
        ]);
        assert_eq!(t.fill(&v).as_deref(), Ok("Ada/12-Hi.mp4"));
        assert_eq!(
            t.fill(&values(&[("name", "Ada".into())])),
            Err("--name `{name}/{count}-{text.Title}.mp4`: the row has no `count`".into())
        );
        let dots = NameTemplate::parse("{name}.mp4").expect("parses");
        assert_eq!(
            dots.fill(&values(&[("name", "..".into())])).as_deref(),
            Ok("...mp4")
        );
        assert_eq!(
            dots.fill(&values(&[("name", "../x".into())])),
            Err("output name `../x.mp4` is not a relative file name: a key may not have a `..` segment".into())
        );
        assert_eq!(
            dots.fill(&values(&[("name", "/etc/x".into())])),
            Err("output name `/etc/x.mp4` is not a relative file name: a key may not start with `/`".into())
        );
        assert_eq!(
            NameTemplate::parse("all.mp4")
                .expect_err("constant")
                .to_string(),
            "--name `all.mp4` has no {column}: every row would write the same file"
        );
        assert!(NameTemplate::parse("{name.mp4").is_err());
    }

    #[test]
    fn a_name_belongs_to_one_variant() {
        let a = spec::key::key_of("t", &1);
        let b = spec::key::key_of("t", &2);
        let mut names = Names::default();
        assert_eq!(names.claim("x.mp4", a, 1), Ok(()));
        assert_eq!(names.claim("x.mp4", a, 3), Ok(()));
        assert_eq!(
            names.claim("x.mp4", b, 4),
            Err("output `x.mp4` is also the name of row 1, which renders different content".into())
        );
        assert_eq!(names.claim("y.mp4", b, 4), Ok(()));
    }
}
