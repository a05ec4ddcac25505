//! The error of a request field that is missing or out of range.

/// A request field (from the wire or a caller) that is missing or invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct FieldError {
    /// The field's path in the request, e.g. `frames.last`.
    pub field: String,
    /// What is wrong with it and what is allowed.
    pub message: String,
}

impl FieldError {
    /// An error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The error for a required field that was not set.
    pub fn missing(field: impl Into<String>) -> Self {
        FieldError::new(field, "is required but was not set")
    }

    /// Nests the error under `outer` (`meta` + `fps` → `meta.fps`).
    #[must_use]
    pub fn within(self, outer: &str) -> Self {
        FieldError {
            field: format!("{outer}.{}", self.field),
            message: self.message,
        }
    }
}

/// The most characters of any input an error message quotes: a client that
/// sends a megabyte of id gets a short, readable status, not its megabyte
/// back (which would not even fit a gRPC status header).
pub const QUOTE_LIMIT: usize = 200;

/// `text` as an error message may quote it: whole if it is at most
/// [`QUOTE_LIMIT`] characters, else its first [`QUOTE_LIMIT`] characters and
/// how much was left out.
///
/// ```
/// assert_eq!(spec::quote("ok"), "ok");
/// let long = "x".repeat(1000);
/// assert_eq!(spec::quote(&long), format!("{}… (800 more characters)", "x".repeat(200)));
/// ```
pub fn quote(text: &str) -> String {
    quote_within(text, QUOTE_LIMIT)
}

/// `text` cut to at most `limit` characters, saying how much was left out,
/// as [`quote`] does at [`QUOTE_LIMIT`]: for whole messages passed on
/// (a worker's status), which get a larger bound than an input quoted in
/// one.
pub fn quote_within(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        None => text.to_owned(),
        Some((cut, _)) => format!(
            "{}… ({} more characters)",
            &text[..cut],
            text[cut..].chars().count()
        ),
    }
}

/// The longest id (a job id, a composition id) a request may carry, in
/// bytes: ids are echoed in logs and errors, so a client cannot make every
/// log line a megabyte.
pub const MAX_ID_BYTES: usize = 1024;

/// Checks an id field: at most [`MAX_ID_BYTES`] bytes, and not empty unless
/// `may_be_empty`.
///
/// # Errors
/// A [`FieldError`] naming `field`, quoting at most [`QUOTE_LIMIT`]
/// characters of the id.
///
/// ```
/// assert!(spec::check_id("job_id", "render-1", true).is_ok());
/// let err = spec::check_id("composition_id", &"x".repeat(2000), false).unwrap_err();
/// assert!(err.to_string().starts_with("field `composition_id`: 2000 bytes is too long (at most 1024): `xxx"));
/// assert!(err.to_string().len() < 400);
/// ```
pub fn check_id(field: &str, id: &str, may_be_empty: bool) -> Result<(), FieldError> {
    if id.is_empty() && !may_be_empty {
        return Err(FieldError::new(field, "is empty"));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(FieldError::new(
            field,
            format!(
                "{} bytes is too long (at most {MAX_ID_BYTES}): `{}`",
                id.len(),
                quote(id)
            ),
        ));
    }
    Ok(())
}
