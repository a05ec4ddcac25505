//! One frame as a PNG: the preview path (`coordinator still`), using the same
//! renderer as a full render.

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
    let expected = width as usize * height as usize * 4;
    if rgba.len() != expected {
        return Err(CompositionError::Buffer {
            what: "frame",
            expected,
            given: rgba.len(),
        });
    }
    let mut straight = rgba.to_vec();
    unpremultiply(&mut straight);
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(&straight, width, height, image::ExtendedColorType::Rgba8)
        .map_err(|e| CompositionError::Render {
            frame: 0,
            message: format!("encoding PNG: {e}"),
        })?;
    Ok(out)
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
    let prepared = source.composition(id)?.prepare(props)?;
    let meta = prepared.meta().clone();
    let mut rgba = vec![0u8; meta.frame_bytes()];
    prepared
        .frame_renderer()?
        .render_frame(FrameIndex(frame), &mut rgba)?;
    let png = encode_png(meta.width, meta.height, &rgba)?;
    Ok((meta, png))
}
