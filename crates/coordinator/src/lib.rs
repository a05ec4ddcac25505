//! Montage coordinator: the library entry point that selects a composition,
//! plans chunks, fans them out to workers, retries, reports and combines.
//!
//! Today it selects and plans; fan-out, retries and combining arrive with the
//! coordinator issue.
//!
//! ```
//! use coordinator::{plan_render, ChunkSpec};
//! use composition::{builtin::TEST_PATTERN_ID, Props, Registry};
//!
//! let registry = Registry::with_builtins();
//! let (meta, plan) = plan_render(&registry, TEST_PATTERN_ID, &Props::new(), ChunkSpec::Count(4), None)?;
//! assert_eq!(meta.duration_frames, 90);
//! assert_eq!(plan.chunks().len(), 4);
//! # Ok::<(), coordinator::CoordinatorError>(())
//! ```
#![deny(missing_docs)]

pub mod grpc;
pub mod pool;
pub mod schedule;

use std::ops::RangeInclusive;

pub use chunker::{ChunkSpec, Plan, PlanError, PlanRequest};
use composition::{CompositionError, CompositionMeta, CompositionSource, Props};

/// An error from the coordinator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// The composition could not be selected or resolved.
    #[error(transparent)]
    Composition(#[from] CompositionError),
    /// The render could not be planned.
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// Resolves a composition's metadata from a source, id and props (the
/// *select* step).
///
/// # Errors
/// [`CoordinatorError::Composition`] for an unknown id or bad props.
pub fn select_composition(
    source: &dyn CompositionSource,
    id: &str,
    props: &Props,
) -> Result<CompositionMeta, CoordinatorError> {
    Ok(source.composition(id)?.describe(props)?)
}

/// Selects a composition and plans its chunks.
///
/// # Errors
/// [`CoordinatorError`] for an unknown composition, bad props or a request
/// the planner refuses.
pub fn plan_render(
    source: &dyn CompositionSource,
    id: &str,
    props: &Props,
    chunks: ChunkSpec,
    frames: Option<RangeInclusive<u64>>,
) -> Result<(CompositionMeta, Plan), CoordinatorError> {
    let meta = select_composition(source, id, props)?;
    let mut request = PlanRequest::new(meta.duration_frames, meta.fps, chunks);
    if let Some(range) = frames {
        request = request.with_frame_range(range);
    }
    let plan = chunker::plan(&request)?;
    Ok((meta, plan))
}
