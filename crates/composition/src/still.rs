//! One frame as an image file: the preview path (`coordinator still`) and
//! each frame of an image sequence, using the same renderer as a full
//! render. Every encoder here has fixed settings, so the same frame always
//! gives the same bytes.

use image::ImageEncoder as _;
use timebase::FrameIndex;

use crate::{CompositionError, CompositionMeta, CompositionSource, Props};

/// Converts a premultiplied RGBA8 frame to straight alpha, as PNG stores it.
pub fn unpremultiply(rgba: &mut [u8]) {
    for px in rgba.chunks_exact_mut(4) {
        let a = u16::from(px[3]);
        if a == 0 {
            px[..3].fill(0);
        } else if a < 255 {
            for c in &mut px[..3] {
                *c = ((u16::from(*c) * 255 + a / 2) / a).min(255) as u8;
            }
        }
    }
}

/// Encodes a premultiplied RGBA8 frame of `width × height` as a PNG.
///
/// # Errors
/// [`CompositionError::Buffer`] if `rgba` does not hold the frame,
/// [`CompositionError::Render`] if encoding fails.
pub fn encode_png(width: u32, height: u32, rgba: &[u8]) -> Result<Vec<u8>, CompositionError> {
    encode_image(width, height, rgba, StillFormat::Png)
}

/// An image file format and its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StillFormat {
    /// PNG, straight-alpha RGBA, the `png` crate's default compression.
    Png,
    /// Baseline JPEG at `quality` (1-100). JPEG has no alpha: the frame is
    /// composited over black (its premultiplied colour).
    Jpeg {
        /// 1-100.
        quality: u8,
    },
    /// Lossless WebP, straight-alpha RGBA.
    WebpLossless,
}

/// Encodes a premultiplied RGBA8 frame of `width × height` as `format`.
///
/// # Errors
/// [`CompositionError::Buffer`] if `rgba` does not hold the frame,
/// [`CompositionError::Render`] if encoding fails.
pub fn encode_image(
    width: u32,
    height: u32,
    rgba: &[u8],
    format: StillFormat,
) -> Result<Vec<u8>, CompositionError> {
    let expected = width as usize * height as usize * 4;
    if rgba.len() != expected {
        return Err(CompositionError::Buffer {
            what: "frame",
            expected,
            given: rgba.len(),
        });
    }
    let failed = |what: &str, e: image::ImageError| CompositionError::Render {
        frame: 0,
        message: format!("encoding {what}: {e}"),
    };
    let mut out = Vec::new();
    match format {
        StillFormat::Png => {
            let mut straight = rgba.to_vec();
            unpremultiply(&mut straight);
            image::codecs::png::PngEncoder::new(&mut out)
                .write_image(&straight, width, height, image::ExtendedColorType::Rgba8)
                .map_err(|e| failed("PNG", e))?;
        }
        StillFormat::Jpeg { quality } => {
            let rgb: Vec<u8> = rgba
                .chunks_exact(4)
                .flat_map(|px| [px[0], px[1], px[2]])
                .collect();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100))
                .write_image(&rgb, width, height, image::ExtendedColorType::Rgb8)
                .map_err(|e| failed("JPEG", e))?;
        }
        StillFormat::WebpLossless => {
            let mut straight = rgba.to_vec();
            unpremultiply(&mut straight);
            image::codecs::webp::WebPEncoder::new_lossless(&mut out)
                .write_image(&straight, width, height, image::ExtendedColorType::Rgba8)
                .map_err(|e| failed("WebP", e))?;
        }
    }
    Ok(out)
}

/// Renders frame `frame` of composition `id` as `format`; returns the
/// metadata and the file's bytes.
///
/// # Errors
/// As [`render_still_png`].
pub fn render_still(
    source: &dyn CompositionSource,
    id: &str,
    props: &Props,
    frame: u64,
    format: StillFormat,
) -> Result<(CompositionMeta, Vec<u8>), CompositionError> {
    let prepared = source.composition(id)?.prepare(props)?;
    let meta = prepared.meta().clone();
    let mut rgba = vec![0u8; meta.frame_bytes()];
    prepared
        .frame_renderer()?
        .render_frame(FrameIndex(frame), &mut rgba)?;
    let bytes = encode_image(meta.width, meta.height, &rgba, format)?;
    Ok((meta, bytes))
}

/// Renders frame `frame` of composition `id` with `props` and returns the
/// metadata and the PNG bytes.
///
/// # Errors
/// [`CompositionError`] for an unknown composition, bad props, a frame
/// outside the composition, or a failed render.
pub fn render_still_png(
    source: &dyn CompositionSource,
    id: &str,
    props: &Props,
    frame: u64,
) -> Result<(CompositionMeta, Vec<u8>), CompositionError> {
    render_still(source, id, props, frame, StillFormat::Png)
}
