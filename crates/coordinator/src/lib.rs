//! Montage coordinator: the library entry point that selects a composition,
//! plans chunks, fans them out to workers, retries, reports and combines.
//!
//! The main embedding API is [`Coordinator::render`]: build a
//! [`Coordinator`] over a [`PoolSpec`] (workers in this process, a list of
//! addresses or a DNS name), then start renders described by a
//! [`RenderRequest`]; each returns a [`RenderHandle`] that streams
//! [`RenderEvent`]s, cancels on drop and ends with a [`RenderSummary`] or an
//! [`Error`] whose [`ErrorKind`] says whose fault it was.
//!
//! ```no_run
//! use std::sync::Arc;
//! use coordinator::{ChunkSpec, Coordinator, CoordinatorOptions, PoolSpec, RenderRequest, RenderSource};
//!
//! # async fn demo() -> Result<(), coordinator::Error> {
//! let options = CoordinatorOptions { cache: Some("/var/cache/montage".into()), ..Default::default() };
//! let coordinator = Arc::new(Coordinator::new(PoolSpec::local(), options).await?);
//! let request = RenderRequest::new(
//!     RenderSource::Bundle("examples/promo".into()),
//!     "promo",
//!     ChunkSpec::Count(16),
//!     std::path::PathBuf::from("promo.mp4"),
//! );
//! let summary = coordinator.render(request).finish().await?;
//! assert_eq!(summary.frames, 300);
//! # Ok(()) }
//! ```
//!
//! Without workers, the same crate selects, plans and renders stills
//! locally:
//!
//! ```
//! use coordinator::{plan_render, ChunkSpec};
//! use composition::{builtin::TEST_PATTERN_ID, Props, Registry};
//!
//! let registry = Registry::with_builtins();
//! let (meta, plan) = plan_render(&registry, TEST_PATTERN_ID, &Props::new(), ChunkSpec::Count(4), None)?;
//! assert_eq!(meta.duration_frames, 90);
//! assert_eq!(plan.chunks().len(), 4);
//! # Ok::<(), coordinator::Error>(())
//! ```
#![deny(missing_docs)]

pub mod agent;
pub mod batch;
pub mod cache;
mod coordinator;
mod error;
mod events;
mod grpc;
mod job;
pub mod pool;
pub mod progress;
mod request;
pub mod schedule;
mod scratch;
pub mod webhook;

use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;

pub use chunker::{ChunkSpec, Plan, PlanError, PlanRequest};
pub use composition::still::StillFormat;
pub use coordinator::{
    Coordinator, CoordinatorOptions, ErrorReport, PoolSpec, WEBHOOK_SETTLE, default_local_workers,
};
pub use error::{Error, ErrorKind};
pub use events::{EVENT_BUFFER, JobHandle, RenderEvent, RenderHandle, RenderSummary};
pub use grpc::{ClientTls, WorkerAccess};
pub use request::{
    AUDIO_BESIDE_FRAMES, Destination, ImageSequenceOutput, MAX_PRESIGN, RenderRequest, RenderSource,
};
pub use spec::{PcmFormat, VideoSettings};

use composition::scene::SceneBundle;
use composition::{CompositionMeta, CompositionSource, Props, Registry};

/// The compositions to choose from: the scene bundle in `bundle` if given,
/// otherwise the built-in registry.
///
/// # Errors
/// [`Error::Composition`] if the bundle does not open or validate.
pub fn open_source(bundle: Option<&Path>) -> Result<Arc<dyn CompositionSource>, Error> {
    Ok(match bundle {
        Some(dir) => Arc::new(SceneBundle::open_with_video(
            dir,
            chunk_worker::video::FfmpegVideo::shared(),
        )?),
        None => Arc::new(Registry::with_builtins()),
    })
}

/// The composition id to use: `requested`, or the source's only
/// composition.
///
/// # Errors
/// [`Error::Input`] if none was requested and the source
/// holds several (or none).
pub fn choose_composition(
    source: &dyn CompositionSource,
    requested: Option<&str>,
) -> Result<String, Error> {
    if let Some(id) = requested {
        return Ok(id.to_owned());
    }
    match source.ids().as_slice() {
        [only] => Ok(only.clone()),
        ids => Err(Error::Input(format!(
            "the source holds several compositions; choose one of: {}",
            ids.join(", ")
        ))),
    }
}

/// Renders one frame (the same code path as a full render) and writes it as
/// a PNG to `out`, through a temporary file renamed into place so that `out`
/// is never half-written.
///
/// # Errors
/// [`Error::Composition`] for a bad composition, props or frame,
/// [`Error::Io`] if the file cannot be written.
pub fn write_still(
    source: &dyn CompositionSource,
    id: &str,
    props: &Props,
    frame: u64,
    out: &Path,
) -> Result<CompositionMeta, Error> {
    write_still_as(source, id, props, frame, StillFormat::Png, out)
}

/// The format of a still: `format` if given (JPEG at `jpeg_quality`),
/// else `out`'s extension (`.png`, `.jpg`/`.jpeg`, `.webp`).
///
/// # Errors
/// [`Error::Input`] for an extension that names no image format, or a
/// quality outside 1-100.
pub fn still_format(
    out: &Path,
    format: Option<spec::ImageFormat>,
    jpeg_quality: u8,
) -> Result<StillFormat, Error> {
    let format = match format {
        Some(f) => f,
        None => spec::ImageFormat::from_file_name(&out.to_string_lossy()).ok_or_else(|| {
            Error::Input(format!(
                "--out {}: the extension names no image format (.png, .jpg, .jpeg, .webp); give --format",
                spec::quote(&out.to_string_lossy())
            ))
        })?,
    };
    spec::check_jpeg_quality(jpeg_quality)
        .map_err(|e| Error::Input(format!("--jpeg-quality {}", e.message)))?;
    Ok(match format {
        spec::ImageFormat::Png => StillFormat::Png,
        spec::ImageFormat::Jpeg => StillFormat::Jpeg {
            quality: jpeg_quality,
        },
        spec::ImageFormat::Webp => StillFormat::WebpLossless,
    })
}

/// [`write_still`] in `format`.
///
/// # Errors
/// As [`write_still`].
pub fn write_still_as(
    source: &dyn CompositionSource,
    id: &str,
    props: &Props,
    frame: u64,
    format: StillFormat,
    out: &Path,
) -> Result<CompositionMeta, Error> {
    let (meta, png) = composition::still::render_still(source, id, props, frame, format)?;
    let context = || format!("writing {}", out.display());
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(Error::io(context()))?;
    std::io::Write::write_all(&mut file, &png).map_err(Error::io(context()))?;
    file.persist(out).map_err(|e| Error::Io {
        context: context(),
        source: e.error,
    })?;
    Ok(meta)
}

/// Resolves a composition's metadata from a source, id and props (the
/// *select* step).
///
/// # Errors
/// [`Error::Composition`] for an unknown id or bad props.
pub fn select_composition(
    source: &dyn CompositionSource,
    id: &str,
    props: &Props,
) -> Result<CompositionMeta, Error> {
    Ok(source.composition(id)?.describe(props)?)
}

/// Selects a composition and plans its chunks ([`ChunkSpec::Auto`] for the
/// default local pool: one slot per core).
///
/// # Errors
/// [`Error`] for an unknown composition, bad props or a request
/// the planner refuses.
pub fn plan_render(
    source: &dyn CompositionSource,
    id: &str,
    props: &Props,
    chunks: ChunkSpec,
    frames: Option<RangeInclusive<u64>>,
) -> Result<(CompositionMeta, Plan), Error> {
    let meta = select_composition(source, id, props)?;
    let slots = u32::try_from(default_local_workers()).unwrap_or(u32::MAX);
    let mut request = PlanRequest::new(meta.duration_frames, meta.fps, chunks).with_slots(slots);
    if let Some(range) = frames {
        request = request.with_frame_range(range);
    }
    let plan = chunker::plan(&request).map_err(|e| Error::Input(e.to_string()))?;
    Ok((meta, plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

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
