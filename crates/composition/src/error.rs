//! The composition crate's error type.

/// How a caller should treat an error: the chunk worker maps this to a gRPC
/// status code in one place, never by reading messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The scene, props or request are wrong: retrying will not help.
    InvalidInput,
    /// A referenced file or composition does not exist.
    NotFound,
    /// Something failed inside the renderer.
    Internal,
}

/// An error from resolving or rendering a composition. Messages name the
/// file, the JSON or layer path, and the frame where they apply.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CompositionError {
    /// No composition with this id.
    #[error("composition `{id}` not found; available: {}", available.join(", "))]
    UnknownComposition {
        /// The id asked for.
        id: String,
        /// The ids that exist.
        available: Vec<String>,
    },
    /// A value in the scene or props is invalid.
    #[error("{context}: {message}")]
    Invalid {
        /// Where: a file, JSON path, layer path or prop name.
        context: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// A prop the composition needs is missing.
    #[error("prop `{name}` is missing (needed by {needed_by})")]
    MissingProp {
        /// The prop's name.
        name: String,
        /// What needs it.
        needed_by: String,
    },
    /// A file the composition refers to does not exist.
    #[error("{context}: {path} not found")]
    MissingAsset {
        /// Where it is referred to.
        context: String,
        /// The path as written, relative to the bundle.
        path: String,
    },
    /// A buffer of the wrong size was passed in.
    #[error("{what} buffer holds {given} values, expected {expected}")]
    Buffer {
        /// "frame" or "audio".
        what: &'static str,
        /// The length required.
        expected: usize,
        /// The length given.
        given: usize,
    },
    /// Rendering a frame failed.
    #[error("frame {frame}: {message}")]
    Render {
        /// The frame.
        frame: u64,
        /// What failed.
        message: String,
    },
    /// Code the renderer calls (the text shaper, an image or audio decoder,
    /// the path parser, the painter) panicked on this input. It would panic
    /// the same way on any machine, so it is the input's error: not retried.
    #[error("{context}: the {component} failed: {message}")]
    Crashed {
        /// Where: the layer or track, and the frame when painting.
        context: String,
        /// What failed: "text shaper", "image decoder", …
        component: &'static str,
        /// The panic's message.
        message: String,
    },
    /// A duplicate id in a registry.
    #[error("composition `{id}` is registered twice")]
    DuplicateId {
        /// The id.
        id: String,
    },
}

impl CompositionError {
    /// How the caller should treat this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CompositionError::UnknownComposition { .. }
            | CompositionError::Invalid { .. }
            | CompositionError::MissingProp { .. }
            | CompositionError::DuplicateId { .. }
            | CompositionError::Crashed { .. } => ErrorKind::InvalidInput,
            CompositionError::MissingAsset { .. } => ErrorKind::NotFound,
            CompositionError::Buffer { .. } | CompositionError::Render { .. } => {
                ErrorKind::Internal
            }
        }
    }

    /// Prefixes the error's context with `outer` ("scene.json: …"), the way
    /// errors gain their *where* as they travel up.
    pub fn within(self, outer: &str) -> CompositionError {
        match self {
            CompositionError::Invalid { context, message } => CompositionError::Invalid {
                context: format!("{outer}: {context}"),
                message,
            },
            CompositionError::MissingAsset { context, path } => CompositionError::MissingAsset {
                context: format!("{outer}: {context}"),
                path,
            },
            CompositionError::Crashed {
                context,
                component,
                message,
            } => CompositionError::Crashed {
                context: format!("{outer}: {context}"),
                component,
                message,
            },
            other => other,
        }
    }
}
