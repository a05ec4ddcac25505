//! Panics of the code the renderer calls (cosmic-text, ttf-parser,
//! tiny-skia, the image decoders, Symphonia, svgtypes), caught at the layer
//! or track that called it and reported as [`CompositionError::Crashed`]
//! naming that layer, instead of taking down the process (exit 101) or a
//! worker's request (INTERNAL).
//!
//! This needs unwinding: the release profile must not set `panic = "abort"`.
//! The default panic hook still prints the panic to stderr; the error a
//! caller sees is ours.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::CompositionError;

/// Runs `f`, which calls into third-party code for the layer or track
/// `context`, turning a panic into [`CompositionError::Crashed`].
///
/// `f` is treated as unwind-safe (`AssertUnwindSafe`): on a panic every
/// caller drops what `f` was building (a decoded image, an outline, a
/// half-drawn frame that is then not returned) or, for the font system whose
/// caches shaping updates, rebuilds it (see `Fonts::shape`), so no state a
/// panic may have left half-updated is used again.
///
/// # Errors
/// [`CompositionError::Crashed`] with the panic's message.
pub fn guard<T>(
    context: impl FnOnce() -> String,
    component: &'static str,
    f: impl FnOnce() -> T,
) -> Result<T, CompositionError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| CompositionError::Crashed {
        context: context(),
        component,
        message: panic_message(payload.as_ref()),
    })
}

/// The message a panic was raised with (`panic!("…")` gives a `&str` or a
/// `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_named_errors() {
        let e = guard(
            || "layer `Title`".to_owned(),
            "text shaper",
            || -> u8 { panic!("line height cannot be 0") },
        )
        .expect_err("the closure panics");
        assert_eq!(
            e.to_string(),
            "layer `Title`: the text shaper failed: line height cannot be 0"
        );
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        let n = 3;
        let e = guard(|| "x".into(), "painter", || -> u8 { panic!("{n} apples") })
            .expect_err("formatted panic");
        assert_eq!(e.to_string(), "x: the painter failed: 3 apples");
        assert_eq!(guard(|| "x".into(), "painter", || 7), Ok(7));
    }
}
