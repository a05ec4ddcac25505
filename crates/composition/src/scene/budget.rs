//! What a scene costs to render, counted from the layer tree before anything
//! is shaped, decoded or drawn, and the hard limits every scene must fit:
//! a scene inside the per-field limits can still ask for gigabytes of
//! offscreen frames or seconds of shaping per still.

use super::load::{Kind, Layer, TextLayer};
use super::render;
use crate::{CompositionError, RenderBudget};

/// The most bytes of frame-sized buffers (and clip mask) one renderer may
/// hold: 2 GB. An 8192x8192 frame is 268 MB, so that size allows the frame,
/// its background and five levels of composited groups.
pub const MAX_FRAME_BUFFER_BYTES: u64 = 2_000_000_000;

/// The most glyphs preparing a composition may shape (characters of text,
/// times the layouts `shrink_to_fit` may try): about a second of shaping.
pub const MAX_SHAPED_GLYPHS: u64 = 200_000;

/// The most bytes of decoded images (RGBA, reduced copies included) one
/// composition may use: 2 GB.
pub const MAX_IMAGE_BYTES: u64 = 2_000_000_000;

/// Bytes of outline a shaped glyph keeps (points and verbs of its path), an
/// upper estimate: Latin glyphs of DejaVu Sans Bold take about 220 (twice
/// that with the path's spare capacity); CJK glyphs take more.
pub const GLYPH_OUTLINE_BYTES: u64 = 1024;

/// Layouts `shrink_to_fit` may try: the first, the 1 px floor, then the
/// bisection steps of `text::shape`.
pub const SHRINK_LAYOUTS: u64 = 16;

/// What a layer tree holds, counted without rendering.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Layers at every level.
    pub layers: u64,
    /// Characters of text.
    pub glyphs: u64,
    /// Characters times the layouts each text layer may try.
    pub shaped_glyphs: u64,
    /// Levels of nested groups composited offscreen (see
    /// [`render::composited_depth`]).
    pub composited_depth: u64,
    /// Whether some group clips (a renderer then holds a clip mask).
    pub clips: bool,
}

/// Counts `layers`; `chars` says how many characters a text layer holds.
///
/// # Errors
/// Whatever `chars` returns (a missing prop).
pub fn tally(
    layers: &[Layer],
    chars: &mut dyn FnMut(&Layer, &TextLayer) -> Result<u64, CompositionError>,
) -> Result<Tally, CompositionError> {
    fn walk(
        layers: &[Layer],
        t: &mut Tally,
        chars: &mut dyn FnMut(&Layer, &TextLayer) -> Result<u64, CompositionError>,
    ) -> Result<(), CompositionError> {
        for l in layers {
            t.layers += 1;
            match &l.kind {
                Kind::Text(text) => {
                    let n = chars(l, text)?;
                    let layouts = if text.shrink_to_fit
                        || text.overflow == super::model::OverflowDoc::Ellipsis
                    {
                        SHRINK_LAYOUTS
                    } else {
                        1
                    };
                    t.glyphs = t.glyphs.saturating_add(n);
                    t.shaped_glyphs = t.shaped_glyphs.saturating_add(n.saturating_mul(layouts));
                }
                Kind::Group { layers, clip, .. } => {
                    t.clips |= clip.is_some();
                    walk(layers, t, chars)?;
                }
                _ => {}
            }
        }
        Ok(())
    }
    let mut t = Tally {
        composited_depth: render::composited_depth(layers) as u64,
        ..Tally::default()
    };
    walk(layers, &mut t, chars)?;
    Ok(t)
}

/// The budget of a `width`x`height` composition whose layers count as `t`,
/// with a cached static background or not, and `image_bytes` of images.
pub fn budget(
    (width, height): (u32, u32),
    background: bool,
    t: &Tally,
    image_bytes: u64,
) -> RenderBudget {
    let pixels = u64::from(width) * u64::from(height);
    let frame_buffers = 1 + u64::from(background) + t.composited_depth;
    // One clip mask (a byte per pixel) at a time: a group's mask is made
    // after its children, whose masks are gone by then.
    let mask = if t.clips { pixels } else { 0 };
    RenderBudget {
        shared_bytes: image_bytes.saturating_add(t.glyphs.saturating_mul(GLYPH_OUTLINE_BYTES)),
        renderer_bytes: (pixels * 4).saturating_mul(frame_buffers) + mask,
        frame_buffers,
        glyphs: t.glyphs,
        shaped_glyphs: t.shaped_glyphs,
        layers: t.layers,
    }
}

/// Refuses a budget over the hard limits, naming the number and the limit.
///
/// # Errors
/// [`CompositionError::Invalid`] in `ctx`.
pub fn check(
    b: &RenderBudget,
    (width, height): (u32, u32),
    t: &Tally,
    ctx: &str,
) -> Result<(), CompositionError> {
    let invalid = |message: String| CompositionError::Invalid {
        context: ctx.to_owned(),
        message,
    };
    if b.renderer_bytes > MAX_FRAME_BUFFER_BYTES {
        let mut what = "the frame".to_owned();
        if b.frame_buffers > 1 + t.composited_depth {
            what += ", its static background";
        }
        if t.composited_depth > 0 {
            what += &format!(
                ", {} nested groups composited offscreen",
                t.composited_depth
            );
        }
        if t.clips {
            what += ", a clip mask";
        }
        return Err(invalid(format!(
            "the scene needs {} of frame buffers ({width}x{height} × {} buffers: {what}); the limit is {}",
            size(b.renderer_bytes),
            b.frame_buffers,
            size(MAX_FRAME_BUFFER_BYTES)
        )));
    }
    if b.shaped_glyphs > MAX_SHAPED_GLYPHS {
        return Err(invalid(format!(
            "the scene shapes {} glyphs ({} characters of text, each `shrink_to_fit` layout counted); the limit is {MAX_SHAPED_GLYPHS}",
            b.shaped_glyphs, b.glyphs
        )));
    }
    Ok(())
}

/// Refuses decoded images over [`MAX_IMAGE_BYTES`].
///
/// # Errors
/// [`CompositionError::Invalid`] in `ctx`.
pub fn check_images(bytes: u64, ctx: &str) -> Result<(), CompositionError> {
    if bytes > MAX_IMAGE_BYTES {
        return Err(CompositionError::Invalid {
            context: ctx.to_owned(),
            message: format!(
                "the scene's images need {} decoded; the limit is {}",
                size(bytes),
                size(MAX_IMAGE_BYTES)
            ),
        });
    }
    Ok(())
}

/// Bytes for people: `5.1 GB`, `537 MB`, `12 kB`.
pub fn size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.0} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.0} kB", b / 1e3)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(5_100_000_000), "5.1 GB");
        assert_eq!(size(536_870_912), "537 MB");
        assert_eq!(size(12_000), "12 kB");
        assert_eq!(size(12), "12 bytes");
    }

    #[test]
    fn frame_buffers_count_the_frame_background_groups_and_mask() {
        let t = Tally {
            composited_depth: 16,
            clips: true,
            ..Tally::default()
        };
        let b = budget((8192, 8192), true, &t, 0);
        assert_eq!(b.frame_buffers, 18);
        assert_eq!(b.renderer_bytes, 8192 * 8192 * (4 * 18 + 1));
        assert_eq!(
            check(&b, (8192, 8192), &t, "c")
                .expect_err("too big")
                .to_string(),
            "c: the scene needs 4.9 GB of frame buffers (8192x8192 × 18 buffers: the frame, its static background, 16 nested groups composited offscreen, a clip mask); the limit is 2.0 GB"
        );
        let small = budget((1920, 1080), true, &Tally::default(), 0);
        assert_eq!(small.renderer_bytes, 1920 * 1080 * 4 * 2);
        assert_eq!(check(&small, (1920, 1080), &Tally::default(), "c"), Ok(()));
    }
}
