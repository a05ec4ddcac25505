//! Montage compositions: what gets rendered.
//!
//! A [`Composition`] has an id and resolves, for a set of [`Props`], its
//! [`CompositionMeta`] (size, exact fps, duration in frames, audio). Once
//! resolved it is [`Prepared`]: frames can be rendered in any order, on any
//! thread, each thread with its own [`FrameRenderer`] (and its caches), and
//! audio can be rendered for any half-open sample span, giving exactly the
//! samples a whole render gives at those positions.
//!
//! Before preparing, [`Composition::budget`] estimates what rendering needs
//! (memory of frame buffers, images and glyphs, shaping work) from the
//! composition alone, so a worker can refuse what it cannot hold.
//!
//! Sources of compositions implement [`CompositionSource`]: a [`Registry`] of
//! Rust compositions (how an embedding service serves its own), or a scene
//! bundle on disk.
//!
//! This crate knows nothing of chunks, codecs or the network.
//!
//! ```
//! use composition::{builtin::TestPattern, CompositionSource, Props, Registry};
//! use timebase::FrameIndex;
//!
//! let mut registry = Registry::new();
//! registry.register(TestPattern::new())?;
//! let comp = registry.composition("test-pattern")?;
//! let prepared = comp.prepare(&Props::new())?;
//! let meta = prepared.meta();
//! let mut rgba = vec![0u8; meta.frame_bytes()];
//! prepared.frame_renderer()?.render_frame(FrameIndex(0), &mut rgba)?;
//! # Ok::<(), composition::CompositionError>(())
//! ```
#![deny(missing_docs)]

pub mod builtin;
mod error;
mod registry;
pub mod scene;
pub mod still;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use timebase::{Fps, FrameIndex, SampleSpan};

pub use error::{CompositionError, ErrorKind};
pub use registry::Registry;
pub use scene::canvas::{Damage, PixelRect};

/// Props: the JSON object of values a composition is rendered with.
pub type Props = serde_json::Map<String, serde_json::Value>;

/// The largest width or height a composition may have, in pixels.
pub const MAX_DIMENSION: u32 = 8192;

/// The longest composition, in frames (24 hours at 60 fps): protects workers
/// from a duration that could never finish.
pub const MAX_DURATION_FRAMES: u64 = 24 * 3600 * 60;

/// The lowest frame rate, in frames per second: at 1 fps one frame's audio is
/// already 48 000 samples, and a slower rate would make a frame's span grow
/// without bound (`1/2147483647` would give one frame 10^14 samples).
pub const MIN_FPS: u32 = 1;

/// The highest frame rate, in frames per second.
pub const MAX_FPS: u32 = 240;

/// The largest denominator of a frame rate (reduced): 1001, the NTSC family
/// (`24000/1001`, `30000/1001`, `60000/1001`, …). With [`MAX_FPS`] it keeps
/// the numerator at most 240 240, so time arithmetic stays small.
pub const MAX_FPS_DEN: u32 = 1001;

/// Checks a frame rate against [`MIN_FPS`], [`MAX_FPS`] and [`MAX_FPS_DEN`].
/// Every common rate (23.976, 24, 25, 29.97, 30, 50, 59.94, 60, 120, 240)
/// passes.
///
/// # Errors
/// A message naming the rate and the range allowed.
pub fn check_fps(fps: Fps) -> Result<(), String> {
    let (num, den) = (u64::from(fps.num()), u64::from(fps.den()));
    if num < u64::from(MIN_FPS) * den
        || num > u64::from(MAX_FPS) * den
        || den > u64::from(MAX_FPS_DEN)
    {
        return Err(format!(
            "fps {fps} is out of range: allowed {MIN_FPS}-{MAX_FPS} frames per second with a denominator of at most {MAX_FPS_DEN} (such as 30000/1001)"
        ));
    }
    Ok(())
}

/// Audio channels rendered by every composition: interleaved stereo.
pub const AUDIO_CHANNELS: usize = 2;

/// The sample rate audio is rendered at.
pub const SAMPLE_RATE: u32 = timebase::DEFAULT_SAMPLE_RATE;

/// A composition's metadata, resolved from props.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompositionMeta {
    /// The composition's id.
    pub id: String,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Exact frame rate.
    pub fps: Fps,
    /// Duration in frames.
    pub duration_frames: u64,
    /// Whether the composition has an audio track.
    pub has_audio: bool,
    /// The props it was resolved with, defaults merged in.
    pub props: Props,
    /// The composition's version, set by its author: a registered (Rust)
    /// composition bumps it whenever its code would render different
    /// pixels or samples for the same props, so cached chunks stop
    /// matching. Scene bundles are identified by their contents instead and
    /// say [`SCENE_VERSION`].
    #[serde(default)]
    pub version: String,
}

/// The version every scene-bundle composition reports: the bundle's bytes
/// and the renderer's version decide its output.
pub const SCENE_VERSION: &str = "scene";

impl CompositionMeta {
    /// Bytes of one RGBA8 frame: `width · height · 4`.
    pub fn frame_bytes(&self) -> usize {
        self.width as usize * self.height as usize * 4
    }

    /// Checks the limits that protect a worker: size in `1..=MAX_DIMENSION`,
    /// duration in `1..=MAX_DURATION_FRAMES`, fps as [`check_fps`] allows.
    ///
    /// # Errors
    /// [`CompositionError::Invalid`] naming the field, value and allowed range.
    pub fn validate(&self) -> Result<(), CompositionError> {
        let invalid = |message: String| CompositionError::Invalid {
            context: format!("composition `{}`", self.id),
            message,
        };
        for (name, v) in [("width", self.width), ("height", self.height)] {
            if v == 0 || v > MAX_DIMENSION {
                return Err(invalid(format!(
                    "{name} {v} is out of range: allowed 1-{MAX_DIMENSION}"
                )));
            }
        }
        if self.duration_frames == 0 || self.duration_frames > MAX_DURATION_FRAMES {
            return Err(invalid(format!(
                "duration {} frames is out of range: allowed 1-{MAX_DURATION_FRAMES}",
                self.duration_frames
            )));
        }
        check_fps(self.fps).map_err(invalid)
    }
}

/// What rendering a composition needs, estimated from the composition
/// before anything is rendered (see [`Composition::budget`]).
///
/// Memory is split in what the prepared composition holds once (decoded
/// images, glyph outlines) and what each [`FrameRenderer`] holds (the frame
/// it renders into, a cached background, one offscreen frame per level of
/// nested groups composited as one image, a clip mask): a process rendering
/// with `n` threads needs [`RenderBudget::memory_for_threads`]`(n)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RenderBudget {
    /// Bytes held once per prepared composition: decoded images and shaped
    /// glyph outlines.
    pub shared_bytes: u64,
    /// Bytes one frame renderer holds, the frame it renders into included.
    pub renderer_bytes: u64,
    /// Frame-sized buffers one renderer holds at once.
    pub frame_buffers: u64,
    /// Characters of text drawn (at most) on each frame.
    pub glyphs: u64,
    /// Glyphs shaped when preparing: the characters times the layouts
    /// `shrink_to_fit` may try.
    pub shaped_glyphs: u64,
    /// Layers, at every level of groups.
    pub layers: u64,
}

impl RenderBudget {
    /// The budget of a composition that holds nothing but the frame it renders
    /// into: what a Rust composition reports unless it says more.
    pub fn frame_only(meta: &CompositionMeta) -> RenderBudget {
        RenderBudget {
            renderer_bytes: meta.frame_bytes() as u64,
            frame_buffers: 1,
            ..RenderBudget::default()
        }
    }

    /// Peak bytes to render with one thread: the shared part and one renderer.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_for_threads(1)
    }

    /// Peak bytes to render with `threads` renderers at once.
    pub fn memory_for_threads(&self, threads: u64) -> u64 {
        self.shared_bytes
            .saturating_add(self.renderer_bytes.saturating_mul(threads))
    }
}

/// Something that can be rendered: resolves metadata and prepares renders.
pub trait Composition: Send + Sync {
    /// The composition's id, unique within its source.
    fn id(&self) -> &str;

    /// Resolves the metadata for `props` (the duration may depend on them).
    ///
    /// # Errors
    /// [`CompositionError`] for props that do not fit the composition.
    fn describe(&self, props: &Props) -> Result<CompositionMeta, CompositionError>;

    /// Resolves props and loads what rendering needs (fonts, images, audio).
    ///
    /// # Errors
    /// [`CompositionError`] for bad props or missing or unreadable assets.
    fn prepare(&self, props: &Props) -> Result<Arc<dyn Prepared>, CompositionError>;

    /// Estimates what rendering with `props` needs, without preparing or
    /// rendering anything: a caller compares it with the memory it has before
    /// calling [`Composition::prepare`]. The default is
    /// [`RenderBudget::frame_only`]; scene bundles count their frame buffers,
    /// images and text.
    ///
    /// # Errors
    /// [`CompositionError`] for props that do not fit the composition.
    fn budget(&self, props: &Props) -> Result<RenderBudget, CompositionError> {
        Ok(RenderBudget::frame_only(&self.describe(props)?))
    }
}

/// A composition resolved with its props, ready to render.
pub trait Prepared: Send + Sync {
    /// The resolved metadata.
    fn meta(&self) -> &CompositionMeta;

    /// A renderer for one thread. Each holds its own scratch state and caches;
    /// any number may run in parallel.
    ///
    /// # Errors
    /// [`CompositionError`] if the renderer cannot be set up.
    fn frame_renderer(&self) -> Result<Box<dyn FrameRenderer>, CompositionError>;

    /// Renders audio for the half-open sample span `span` at [`SAMPLE_RATE`]
    /// into `out`, interleaved stereo `f32` (`out.len() == 2 · span.len()`).
    /// The samples equal those of a whole render at the same positions,
    /// whatever the split. A composition without audio writes silence.
    ///
    /// # Errors
    /// [`CompositionError`] if `out` has the wrong length or audio fails.
    fn render_audio(&self, span: SampleSpan, out: &mut [f32]) -> Result<(), CompositionError>;
}

/// Renders frames of a [`Prepared`] composition on one thread.
pub trait FrameRenderer: Send {
    /// Renders frame `frame` into `rgba`: premultiplied RGBA8, rows top to
    /// bottom, stride `width · 4`, `rgba.len() == meta.frame_bytes()`. The
    /// result depends only on the composition, props and frame: the same
    /// bytes on every run, thread and machine.
    ///
    /// # Errors
    /// [`CompositionError`] naming the frame if it cannot be rendered.
    fn render_frame(&mut self, frame: FrameIndex, rgba: &mut [u8]) -> Result<(), CompositionError>;

    /// Renders frame `frame` into `rgba` exactly as
    /// [`FrameRenderer::render_frame`] does (the same bytes, whatever was
    /// rendered before), but may trust what `rgba` already holds to do less
    /// work: a scene only repaints the region its previous frame drew on.
    ///
    /// The caller promises that `rgba` is the buffer this renderer's previous
    /// call of this method rendered into, untouched since. A renderer trusts
    /// nothing on its first call, after [`FrameRenderer::render_frame`],
    /// after a call that failed and after [`FrameRenderer::forget_previous`]:
    /// call that whenever the buffer is replaced or written by anything else.
    /// The default renders with [`FrameRenderer::render_frame`].
    ///
    /// # Errors
    /// As [`FrameRenderer::render_frame`]; the next call then trusts nothing.
    fn render_frame_reusing(
        &mut self,
        frame: FrameIndex,
        rgba: &mut [u8],
    ) -> Result<(), CompositionError> {
        self.render_frame(frame, rgba)
    }

    /// Renders frame `frame` into `rgba` as
    /// [`FrameRenderer::render_frame_reusing`] does (the same bytes, the
    /// same promise about `rgba`, and the same trust for the calls after),
    /// and sets `changed` to a bound of the pixels whose bytes may differ
    /// from what `rgba` held before the call: what the previous frame drew
    /// (put back) and what this one drew, or the whole frame when nothing
    /// was trusted. Pixels outside `changed` hold exactly the bytes they
    /// held before, so a consumer of the frame (a colour converter) only
    /// has to redo those.
    ///
    /// The default renders with [`FrameRenderer::render_frame_reusing`] and
    /// reports the whole frame.
    ///
    /// # Errors
    /// As [`FrameRenderer::render_frame`]; `changed` and `rgba` are then
    /// unspecified and the next call trusts nothing.
    fn render_frame_changed(
        &mut self,
        frame: FrameIndex,
        rgba: &mut [u8],
        changed: &mut Damage,
    ) -> Result<(), CompositionError> {
        self.render_frame_reusing(frame, rgba)?;
        changed.set_whole();
        Ok(())
    }

    /// Forgets what the previous [`FrameRenderer::render_frame_reusing`] left
    /// in its buffer: the next call renders the whole frame. The default does
    /// nothing (the default `render_frame_reusing` trusts nothing).
    fn forget_previous(&mut self) {}
}

/// Where compositions come from: a registry of Rust compositions, a scene
/// bundle, …
pub trait CompositionSource: Send + Sync {
    /// The ids of the compositions this source holds, sorted.
    fn ids(&self) -> Vec<String>;

    /// The composition with this id.
    ///
    /// # Errors
    /// [`CompositionError::UnknownComposition`] listing the ids available.
    fn composition(&self, id: &str) -> Result<Arc<dyn Composition>, CompositionError>;
}

/// Checks the buffer sizes that [`FrameRenderer::render_frame`] and
/// [`Prepared::render_audio`] implementations must agree on.
///
/// # Errors
/// [`CompositionError::Buffer`] naming the expected and given lengths.
pub fn check_frame_buffer(meta: &CompositionMeta, rgba: &[u8]) -> Result<(), CompositionError> {
    if rgba.len() != meta.frame_bytes() {
        return Err(CompositionError::Buffer {
            what: "frame",
            expected: meta.frame_bytes(),
            given: rgba.len(),
        });
    }
    Ok(())
}

/// Checks that `out` holds exactly `span` of interleaved stereo samples.
///
/// # Errors
/// [`CompositionError::Buffer`] naming the expected and given lengths.
pub fn check_audio_buffer(span: SampleSpan, out: &[f32]) -> Result<(), CompositionError> {
    let expected = usize::try_from(span.len())
        .ok()
        .and_then(|n| n.checked_mul(AUDIO_CHANNELS))
        .unwrap_or(usize::MAX);
    if out.len() != expected {
        return Err(CompositionError::Buffer {
            what: "audio",
            expected,
            given: out.len(),
        });
    }
    Ok(())
}
