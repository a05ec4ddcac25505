//! Image files as users bring them: PNG, JPEG and WebP turned upright by
//! their EXIF orientation and converted to sRGB by their colour profile,
//! damaged files refused, animated files refused by name, and SVG rendered
//! with resvg at the size it is shown.

use std::io::{BufRead, Cursor, Seek};
use std::path::Path;
use std::sync::Arc;

use tiny_skia::Pixmap;

use super::colour::{PngColour, ToSrgb};
use super::load::V2;
use super::model::FitDoc;
use crate::CompositionError;

/// The largest image, in pixels, a bundle may hold (checked before decoding,
/// against decompression bombs): 8192 × 8192. An SVG is held to it at the
/// size it is drawn.
pub const MAX_IMAGE_PIXELS: u64 = 8192 * 8192;

/// The largest SVG file read: a logo is kilobytes; a document this large is
/// not a logo, and parsing it costs time on every prepare.
pub const MAX_SVG_BYTES: u64 = 16 << 20;

/// What an image file is, learned from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The size of the pixmap decoding gives: the raster's upright size, or
    /// the size an SVG is rendered at.
    pub size: (u32, u32),
    /// Whether it is an SVG (rendered at the size it is shown, so cached by
    /// that size).
    pub svg: bool,
}

fn image_error(rel: &str, context: &str, message: impl std::fmt::Display) -> CompositionError {
    CompositionError::Invalid {
        context: context.to_owned(),
        message: format!("image `{rel}`: {message}"),
    }
}

/// Whether `bytes` (the start of a file at least) look like SVG: XML text
/// (after an optional byte-order mark and white space) or an `.svg` name.
fn looks_like_svg(head: &[u8], rel: &str) -> bool {
    let ext = Path::new(rel)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if ext.as_deref() == Some("svg") {
        return true;
    }
    let head = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
    let text = head.trim_ascii_start();
    text.starts_with(b"<?xml") || text.starts_with(b"<svg") || text.starts_with(b"<!--")
}

/// What the file at `path` is and the size decoding will give, from its
/// header (an SVG is parsed), without decoding pixels. `shown` is the
/// layer's box and fit, which decide an SVG's size.
///
/// # Errors
/// [`CompositionError::Invalid`] naming the file, as [`decode`] would.
pub fn probe(
    path: &Path,
    rel: &str,
    context: &str,
    shown: Option<(V2, FitDoc)>,
) -> Result<Probe, CompositionError> {
    let file = std::fs::File::open(path)
        .map_err(|e| image_error(rel, context, format!("cannot read: {e}")))?;
    let mut reader = std::io::BufReader::new(file);
    let head = reader
        .fill_buf()
        .map_err(|e| image_error(rel, context, format!("cannot read: {e}")))?;
    if looks_like_svg(head, rel) {
        let bytes = super::assets::read_limited(path, rel, context, MAX_SVG_BYTES)?;
        let tree = svg_tree(&bytes, rel, context)?;
        return Ok(Probe {
            size: svg_size(&tree, shown, rel, context)?,
            svg: true,
        });
    }
    let (_, size) = raster_header(reader, rel, context)?;
    Ok(Probe { size, svg: false })
}

/// Decodes an image file's bytes into a premultiplied sRGB pixmap of
/// `probe.size`.
///
/// # Errors
/// [`CompositionError::Invalid`] naming the file and what is wrong.
pub fn decode(
    bytes: &[u8],
    probe: Probe,
    rel: &str,
    context: &str,
) -> Result<Arc<Pixmap>, CompositionError> {
    if probe.svg {
        return render_svg(bytes, probe.size, rel, context).map(Arc::new);
    }
    let invalid = |m: String| image_error(rel, context, m);
    let (format, _) = raster_header(Cursor::new(bytes), rel, context)?;
    let mut rgba = decode_raster(bytes, format).map_err(invalid)?;
    let colour = colour_of(bytes, format, &mut rgba.icc).map_err(invalid)?;
    if let Some(c) = colour {
        c.apply(&mut rgba.pixels);
    }
    let (w, h) = (rgba.width, rgba.height);
    if (w, h) != probe.size {
        return Err(invalid(format!(
            "decoded as {w}x{h}, but its header says {}x{}",
            probe.size.0, probe.size.1
        )));
    }
    let mut pixmap = Pixmap::new(w, h).ok_or_else(|| invalid("cannot allocate".into()))?;
    premultiply(&rgba.pixels, pixmap.data_mut());
    Ok(Arc::new(pixmap))
}

/// Straight RGBA, premultiplied with rounding: `(c·a + 127) / 255`.
fn premultiply(src: &[u8], dst: &mut [u8]) {
    for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
        let a = u16::from(s[3]);
        for i in 0..3 {
            d[i] = ((u16::from(s[i]) * a + 127) / 255) as u8;
        }
        d[3] = s[3];
    }
}

/// The format and upright size an image's header declares, refusing
/// formats other than PNG, JPEG and WebP, animated files and sizes over
/// [`MAX_IMAGE_PIXELS`].
fn raster_header<R: BufRead + Seek>(
    reader: R,
    rel: &str,
    context: &str,
) -> Result<(image::ImageFormat, (u32, u32)), CompositionError> {
    use image::ImageDecoder as _;
    use image::ImageFormat as F;
    let invalid = |message: String| image_error(rel, context, message);
    let reader = image::ImageReader::new(reader)
        .with_guessed_format()
        .map_err(|e| invalid(e.to_string()))?;
    let format = match reader.format() {
        Some(f @ (F::Png | F::Jpeg | F::WebP)) => f,
        Some(F::Gif) => {
            return Err(invalid(
                "GIF is not supported (animated images are not either): use PNG, JPEG, WebP or SVG"
                    .into(),
            ));
        }
        Some(other) => {
            return Err(invalid(format!(
                "{other:?} is not supported: use PNG, JPEG, WebP or SVG"
            )));
        }
        None => return Err(invalid("not a PNG, JPEG, WebP or SVG file".into())),
    };
    let inner = reader.into_inner();
    let animated = |kind: &str| {
        invalid(format!(
            "{kind} is animated: animated images are not supported; use a still image (its first frame exported as PNG)"
        ))
    };
    let (mut decoder, size): (Box<dyn image::ImageDecoder>, (u32, u32)) = match format {
        F::Png => {
            let d =
                image::codecs::png::PngDecoder::new(inner).map_err(|e| invalid(e.to_string()))?;
            if d.is_apng().map_err(|e| invalid(e.to_string()))? {
                return Err(animated("this APNG"));
            }
            let size = d.dimensions();
            (Box::new(d), size)
        }
        F::WebP => {
            let d =
                image::codecs::webp::WebPDecoder::new(inner).map_err(|e| invalid(e.to_string()))?;
            if d.has_animation() {
                return Err(animated("this WebP"));
            }
            let size = d.dimensions();
            (Box::new(d), size)
        }
        _ => {
            let d =
                image::codecs::jpeg::JpegDecoder::new(inner).map_err(|e| invalid(e.to_string()))?;
            let size = d.dimensions();
            (Box::new(d), size)
        }
    };
    let (w, h) = size;
    if u64::from(w) * u64::from(h) > MAX_IMAGE_PIXELS || w == 0 || h == 0 {
        return Err(invalid(format!(
            "{w}x{h} is too large or empty: at most {MAX_IMAGE_PIXELS} pixels"
        )));
    }
    // Orientations 5-8 swap width and height.
    let orientation = decoder.orientation().map_err(|e| invalid(e.to_string()))?;
    use image::metadata::Orientation as O;
    let upright = match orientation {
        O::Rotate90 | O::Rotate270 | O::Rotate90FlipH | O::Rotate270FlipH => (h, w),
        _ => (w, h),
    };
    Ok((format, upright))
}

/// Decoded straight-alpha RGBA, upright, with its ICC profile.
struct Rgba {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
    icc: Option<Vec<u8>>,
}

/// Decodes PNG, JPEG or WebP pixels, applies the EXIF orientation and keeps
/// the ICC profile. A JPEG is decoded in strict mode: a truncated or
/// corrupt file is an error, not a picture grey below the damage.
fn decode_raster(bytes: &[u8], format: image::ImageFormat) -> Result<Rgba, String> {
    use image::ImageDecoder as _;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_IMAGE_PIXELS * 8);
    let cursor = || Cursor::new(bytes);
    let mut decoder: Box<dyn image::ImageDecoder> = match format {
        image::ImageFormat::Png => Box::new(
            image::codecs::png::PngDecoder::with_limits(cursor(), limits.clone())
                .map_err(|e| e.to_string())?,
        ),
        image::ImageFormat::WebP => {
            Box::new(image::codecs::webp::WebPDecoder::new(cursor()).map_err(|e| e.to_string())?)
        }
        _ => Box::new(image::codecs::jpeg::JpegDecoder::new(cursor()).map_err(|e| e.to_string())?),
    };
    decoder.set_limits(limits).map_err(|e| e.to_string())?;
    let orientation = decoder.orientation().map_err(|e| e.to_string())?;
    let icc = decoder.icc_profile().map_err(|e| e.to_string())?;
    let mut img = if format == image::ImageFormat::Jpeg {
        drop(decoder);
        strict_jpeg(bytes)?
    } else {
        image::DynamicImage::from_decoder(decoder).map_err(|e| e.to_string())?
    };
    img.apply_orientation(orientation);
    let rgba = img.into_rgba8();
    Ok(Rgba {
        width: rgba.width(),
        height: rgba.height(),
        pixels: rgba.into_raw(),
        icc,
    })
}

/// A JPEG decoded by zune-jpeg in strict mode (the `image` crate decodes
/// leniently, filling what is missing with grey).
fn strict_jpeg(bytes: &[u8]) -> Result<image::DynamicImage, String> {
    use zune_core::colorspace::ColorSpace;
    let options = zune_core::options::DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(8192 * 8)
        .set_max_height(8192 * 8)
        .jpeg_set_out_colorspace(ColorSpace::RGBA);
    let mut d = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(bytes),
        options,
    );
    let pixels = d
        .decode()
        .map_err(|e| format!("the JPEG data is damaged or truncated ({e:?})"))?;
    let (w, h) = d
        .dimensions()
        .ok_or_else(|| "the JPEG has no size".to_owned())?;
    image::RgbaImage::from_raw(w as u32, h as u32, pixels)
        .map(image::DynamicImage::ImageRgba8)
        .ok_or_else(|| "the JPEG decoded to fewer pixels than its size".to_owned())
}

/// The conversion to sRGB the file asks for: its ICC profile, or for a PNG
/// without one its `sRGB`, `gAMA` and `cHRM` chunks. `None`: already sRGB.
fn colour_of(
    bytes: &[u8],
    format: image::ImageFormat,
    icc: &mut Option<Vec<u8>>,
) -> Result<Option<ToSrgb>, String> {
    if let Some(icc) = icc.take() {
        return ToSrgb::from_icc(&icc);
    }
    if format != image::ImageFormat::Png {
        return Ok(None);
    }
    Ok(png_colour(bytes).and_then(ToSrgb::from_png))
}

/// A PNG's `gAMA` and `cHRM` chunks (before the image data), unless it says
/// it is sRGB (`sRGB`) or has a profile (`iCCP`, handled before this).
fn png_colour(bytes: &[u8]) -> Option<PngColour> {
    let mut colour = PngColour {
        gamma: None,
        chrm: None,
    };
    let mut at = 8usize;
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    while let Some(head) = bytes.get(at..at + 8) {
        let len = be(&head[..4]) as usize;
        let data = bytes.get(at + 8..(at + 8).checked_add(len)?)?;
        match &head[4..8] {
            b"IDAT" | b"IEND" => break,
            b"sRGB" | b"iCCP" => return None,
            b"gAMA" if len == 4 => colour.gamma = Some(be(data)),
            b"cHRM" if len == 32 => {
                colour.chrm = Some(std::array::from_fn(|i| be(&data[i * 4..])));
            }
            _ => {}
        }
        at = at.checked_add(12 + len)?;
    }
    (colour.gamma.is_some() || colour.chrm.is_some()).then_some(colour)
}

/// Parses an SVG, refusing what it would silently drop: text (this renderer
/// takes no system fonts: convert text to paths) and embedded or linked
/// images. No file outside the SVG is ever read.
fn svg_tree(bytes: &[u8], rel: &str, context: &str) -> Result<resvg::usvg::Tree, CompositionError> {
    use resvg::usvg;
    let invalid = |m: String| image_error(rel, context, m);
    let text = std::str::from_utf8(bytes).map_err(|_| {
        invalid("is not UTF-8 text: SVG files are XML (a compressed .svgz must be unzipped)".into())
    })?;
    let opt = usvg::roxmltree::ParsingOptions {
        // Editors write a DOCTYPE with entities; roxmltree bounds entity
        // expansion, and a logo has far fewer nodes than this.
        allow_dtd: true,
        nodes_limit: 1_000_000,
        ..Default::default()
    };
    let doc = usvg::roxmltree::Document::parse_with_options(text, opt)
        .map_err(|e| invalid(format!("is not valid SVG: {e}")))?;
    let svg_ns = "http://www.w3.org/2000/svg";
    for n in doc.descendants().filter(|n| n.is_element()) {
        let name = n.tag_name();
        if name.namespace() == Some(svg_ns) || name.namespace().is_none() {
            match name.name() {
                "text" => {
                    return Err(invalid(
                        "SVG text is not supported (fonts are the bundle's only): convert the text to paths (outlines)".into(),
                    ));
                }
                "image" => {
                    return Err(invalid(
                        "SVG with an embedded or linked image is not supported: use the image as its own layer".into(),
                    ));
                }
                _ => {}
            }
        }
    }
    let options = usvg::Options {
        // Nothing outside the bundle's file: no resources directory, and
        // image references resolve to nothing (refused above anyway).
        resources_dir: None,
        image_href_resolver: usvg::ImageHrefResolver {
            resolve_data: Box::new(|_, _, _| None),
            resolve_string: Box::new(|_, _| None),
        },
        ..usvg::Options::default()
    };
    usvg::Tree::from_str(text, &options).map_err(|e| invalid(format!("is not valid SVG: {e}")))
}

/// The pixel size an SVG is rendered at: its own size fitted into the
/// layer's box, or its own size.
fn svg_size(
    tree: &resvg::usvg::Tree,
    shown: Option<(V2, FitDoc)>,
    rel: &str,
    context: &str,
) -> Result<(u32, u32), CompositionError> {
    let own = [
        f64::from(tree.size().width()),
        f64::from(tree.size().height()),
    ];
    let (sx, sy) = match shown {
        Some((b, fit)) => fit_scale(fit, own, b),
        None => (1.0, 1.0),
    };
    let w = (own[0] * sx).round().max(1.0);
    let h = (own[1] * sy).round().max(1.0);
    if w * h > MAX_IMAGE_PIXELS as f64 || !w.is_finite() || !h.is_finite() {
        return Err(image_error(
            rel,
            context,
            format!("drawn at {w}x{h}: at most {MAX_IMAGE_PIXELS} pixels"),
        ));
    }
    Ok((w as u32, h as u32))
}

/// Renders an SVG at `size` pixels (premultiplied, as tiny-skia draws).
fn render_svg(
    bytes: &[u8],
    (w, h): (u32, u32),
    rel: &str,
    context: &str,
) -> Result<Pixmap, CompositionError> {
    let tree = svg_tree(bytes, rel, context)?;
    let mut pixmap =
        Pixmap::new(w, h).ok_or_else(|| image_error(rel, context, "cannot allocate"))?;
    let s = tree.size();
    let t = tiny_skia::Transform::from_scale(w as f32 / s.width(), h as f32 / s.height());
    resvg::render(&tree, t, &mut pixmap.as_mut());
    Ok(pixmap)
}

/// The scale that fits an image of `image` size into `box_size` with `fit`.
pub fn fit_scale(fit: FitDoc, [iw, ih]: [f64; 2], [bw, bh]: [f64; 2]) -> (f64, f64) {
    match fit {
        FitDoc::Fill => (bw / iw, bh / ih),
        FitDoc::Contain => {
            let s = (bw / iw).min(bh / ih);
            (s, s)
        }
        FitDoc::Cover => {
            let s = (bw / iw).max(bh / ih);
            (s, s)
        }
    }
}

/// The size to reduce an image of size `(width, height)` to before drawing
/// it into a `box_size` box with `fit`, if it is shown at less than 3/4 of
/// its size.
pub fn reduced_size(
    (width, height): (u32, u32),
    box_size: [f64; 2],
    fit: FitDoc,
) -> Option<(u32, u32)> {
    let (iw, ih) = (f64::from(width), f64::from(height));
    let (sx, sy) = fit_scale(fit, [iw, ih], box_size);
    if sx >= 0.75 && sy >= 0.75 {
        return None;
    }
    let w = (iw * sx.min(1.0)).round().max(1.0) as u32;
    let h = (ih * sy.min(1.0)).round().max(1.0) as u32;
    Some((w, h))
}

/// Reduces a premultiplied image with a triangle (area) filter: every output
/// pixel is a convex mix of input pixels, so premultiplication stays valid.
pub fn reduce(image: &Pixmap, (w, h): (u32, u32)) -> Arc<Pixmap> {
    let src = image::RgbaImage::from_raw(image.width(), image.height(), image.data().to_vec())
        .expect("a pixmap holds width·height·4 bytes");
    let small = image::imageops::resize(&src, w, h, image::imageops::FilterType::Triangle);
    let mut out = Pixmap::new(w, h).expect("reduced sizes are at least 1x1 and below the original");
    out.data_mut().copy_from_slice(small.as_raw());
    Arc::new(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_bombs_are_refused_before_decoding() {
        // A PNG header claiming 100000 x 100000 pixels.
        let mut png = Vec::new();
        png.extend_from_slice(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
        png.extend_from_slice(&100_000u32.to_be_bytes());
        png.extend_from_slice(&100_000u32.to_be_bytes());
        png.extend_from_slice(&[8, 6, 0, 0, 0]);
        let crc = 0u32; // the header check comes before the CRC matters
        png.extend_from_slice(&crc.to_be_bytes());
        let e = raster_header(Cursor::new(&png[..]), "bomb.png", "layer `B`").expect_err("bomb");
        assert!(
            e.to_string().starts_with("layer `B`: image `bomb.png`:"),
            "{e}"
        );
    }
}
