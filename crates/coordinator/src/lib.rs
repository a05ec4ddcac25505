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

pub mod cache;
pub mod grpc;
pub mod pool;
pub mod progress;
pub mod render;
pub mod schedule;

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use chunker::{ChunkSpec, Plan, PlanError, PlanRequest};
use composition::scene::SceneBundle;
use composition::{CompositionError, CompositionMeta, CompositionSource, Props, Registry};

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
    /// A source holds several compositions and none was chosen.
    #[error("the source holds several compositions; choose one of: {}", available.join(", "))]
    NoComposition {
        /// The ids available.
        available: Vec<String>,
    },
    /// Writing an output file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// The compositions to choose from: the scene bundle in `bundle` if given,
/// otherwise the built-in registry.
///
/// # Errors
/// [`CoordinatorError::Composition`] if the bundle does not open or validate.
pub fn open_source(bundle: Option<&Path>) -> Result<Arc<dyn CompositionSource>, CoordinatorError> {
    Ok(match bundle {
        Some(dir) => Arc::new(SceneBundle::open(dir)?),
        None => Arc::new(Registry::with_builtins()),
    })
}

/// The composition id to use: `requested`, or the source's only
/// composition.
///
/// # Errors
/// [`CoordinatorError::NoComposition`] if none was requested and the source
/// holds several (or none).
pub fn choose_composition(
    source: &dyn CompositionSource,
    requested: Option<&str>,
) -> Result<String, CoordinatorError> {
    if let Some(id) = requested {
        return Ok(id.to_owned());
    }
    match source.ids().as_slice() {
        [only] => Ok(only.clone()),
        ids => Err(CoordinatorError::NoComposition {
            available: ids.to_vec(),
        }),
    }
}

/// Renders one frame (the same code path as a full render) and writes it as
/// a PNG to `out`, through a temporary file renamed into place so that `out`
/// is never half-written.
///
/// # Errors
/// [`CoordinatorError::Composition`] for a bad composition, props or frame,
/// [`CoordinatorError::Io`] if the file cannot be written.
pub fn write_still(
    source: &dyn CompositionSource,
    id: &str,
    props: &Props,
    frame: u64,
    out: &Path,
) -> Result<CompositionMeta, CoordinatorError> {
    let (meta, png) = composition::still::render_still_png(source, id, props, frame)?;
    let io = |source| CoordinatorError::Io {
        path: out.to_owned(),
        source,
    };
    let name = out.file_name().ok_or_else(|| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a file name",
        ))
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = out.with_file_name(tmp_name);
    std::fs::write(&tmp, &png).map_err(io)?;
    std::fs::rename(&tmp, out).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })?;
    Ok(meta)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn promo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/promo")
    }

    #[test]
    fn still_writes_a_png_that_ffprobe_reads() {
        let source = open_source(Some(&promo())).expect("promo opens");
        let id = choose_composition(source.as_ref(), None).expect("one composition");
        assert_eq!(id, "promo");
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("frame.png");
        let meta = write_still(source.as_ref(), &id, &Props::new(), 45, &out).expect("still");
        assert_eq!((meta.width, meta.height), (1920, 1080));
        let probe = std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,width,height",
                "-of",
                "csv=p=0",
            ])
            .arg(&out)
            .output()
            .expect("ffprobe runs");
        assert_eq!(
            String::from_utf8_lossy(&probe.stdout).trim(),
            "png,1920,1080"
        );
        // Only the PNG is left: the temporary file was renamed.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["frame.png"]);
        let err =
            write_still(source.as_ref(), &id, &Props::new(), 300, &out).expect_err("past the end");
        assert_eq!(
            err.to_string(),
            "frame 300: outside the composition: frames run 0-299"
        );
    }

    #[test]
    fn builtins_need_a_choice_when_several() {
        let source = open_source(None).expect("builtins");
        let id = choose_composition(source.as_ref(), Some("test-pattern")).expect("named");
        assert_eq!(
            select_composition(source.as_ref(), &id, &Props::new())
                .expect("meta")
                .width,
            320
        );
    }
}
