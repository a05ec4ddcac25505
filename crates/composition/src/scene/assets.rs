//! Bundle files: path safety, image decoding and audio decoding.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use tiny_skia::Pixmap;

use super::model::FitDoc;

use crate::{CompositionError, SAMPLE_RATE};

/// The largest image, in pixels, a bundle may hold (checked before decoding,
/// against decompression bombs): 8192 × 8192.
pub const MAX_IMAGE_PIXELS: u64 = 8192 * 8192;

/// The longest audio file, after decoding, in seconds at 48 kHz: protects a
/// worker's memory (one hour of stereo `f32` is 1.4 GB).
pub const MAX_AUDIO_SECONDS: u64 = 3600;

/// The largest file the bundle may hold that a scene reads whole.
pub const MAX_ASSET_BYTES: u64 = 1 << 30;

/// Resolves `rel` inside the bundle `root`: a relative path without `..`,
/// whose real location (symlinks followed) stays inside the bundle.
///
/// # Errors
/// [`CompositionError::Invalid`] for unsafe paths, [`CompositionError::MissingAsset`]
/// if the file does not exist.
pub fn resolve_path(root: &Path, rel: &str, context: &str) -> Result<PathBuf, CompositionError> {
    let invalid = |message: String| CompositionError::Invalid {
        context: context.to_owned(),
        message,
    };
    let p = Path::new(rel);
    if rel.is_empty() {
        return Err(invalid("asset path is empty".into()));
    }
    for c in p.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(invalid(format!(
                    "asset path `{rel}` contains `..`: paths stay inside the bundle"
                )));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(invalid(format!(
                    "asset path `{rel}` is absolute: paths are relative to the bundle"
                )));
            }
        }
    }
    let joined = root.join(p);
    let real = match joined.canonicalize() {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CompositionError::MissingAsset {
                context: context.to_owned(),
                path: rel.to_owned(),
            });
        }
        Err(e) => return Err(invalid(format!("cannot open `{rel}`: {e}"))),
    };
    if !real.starts_with(root) {
        return Err(invalid(format!(
            "asset path `{rel}` leads outside the bundle (through a symlink)"
        )));
    }
    if !real.is_file() {
        return Err(invalid(format!("asset path `{rel}` is not a file")));
    }
    Ok(real)
}

/// Reads a bundle file whole, refusing files over [`MAX_ASSET_BYTES`].
///
/// # Errors
/// [`CompositionError::Invalid`] naming the file.
pub fn read_file(path: &Path, rel: &str, context: &str) -> Result<Vec<u8>, CompositionError> {
    let invalid = |message: String| CompositionError::Invalid {
        context: context.to_owned(),
        message,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| invalid(format!("cannot read `{rel}`: {e}")))?
        .len();
    if len > MAX_ASSET_BYTES {
        return Err(invalid(format!(
            "`{rel}` is {len} bytes: at most {MAX_ASSET_BYTES} allowed"
        )));
    }
    std::fs::read(path).map_err(|e| invalid(format!("cannot read `{rel}`: {e}")))
}

/// Decodes a PNG, JPEG or WebP into a premultiplied pixmap, checking the
/// pixel count from the header before decoding.
///
/// # Errors
/// [`CompositionError::Invalid`] naming the file and what is wrong.
pub fn decode_image(
    bytes: &[u8],
    rel: &str,
    context: &str,
) -> Result<Arc<Pixmap>, CompositionError> {
    let invalid = |message: String| image_error(rel, context, message);
    let (format, (w, h)) = header(
        image::ImageReader::new(std::io::Cursor::new(bytes)),
        rel,
        context,
    )?;
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(MAX_IMAGE_PIXELS * 8);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| invalid(e.to_string()))?
        .into_rgba8();
    let mut pixmap = Pixmap::new(w, h).ok_or_else(|| invalid("cannot allocate".into()))?;
    for (dst, src) in pixmap
        .data_mut()
        .chunks_exact_mut(4)
        .zip(img.as_raw().chunks_exact(4))
    {
        let a = u16::from(src[3]);
        // Premultiply with rounding: (c·a + 127) / 255.
        for i in 0..3 {
            dst[i] = ((u16::from(src[i]) * a + 127) / 255) as u8;
        }
        dst[3] = src[3];
    }
    Ok(Arc::new(pixmap))
}

fn image_error(rel: &str, context: &str, message: String) -> CompositionError {
    CompositionError::Invalid {
        context: context.to_owned(),
        message: format!("image `{rel}`: {message}"),
    }
}

/// The format and size an image's header declares, refusing formats other
/// than PNG, JPEG and WebP and sizes over [`MAX_IMAGE_PIXELS`].
fn header<R: std::io::BufRead + std::io::Seek>(
    reader: image::ImageReader<R>,
    rel: &str,
    context: &str,
) -> Result<(image::ImageFormat, (u32, u32)), CompositionError> {
    let invalid = |message: String| image_error(rel, context, message);
    let reader = reader
        .with_guessed_format()
        .map_err(|e| invalid(e.to_string()))?;
    let Some(format) = reader.format() else {
        return Err(invalid("not a PNG, JPEG or WebP file".into()));
    };
    if !matches!(
        format,
        image::ImageFormat::Png | image::ImageFormat::Jpeg | image::ImageFormat::WebP
    ) {
        return Err(invalid(format!(
            "{format:?} is not supported: use PNG, JPEG or WebP"
        )));
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| invalid(e.to_string()))?;
    if u64::from(w) * u64::from(h) > MAX_IMAGE_PIXELS || w == 0 || h == 0 {
        return Err(invalid(format!(
            "{w}x{h} is too large or empty: at most {MAX_IMAGE_PIXELS} pixels"
        )));
    }
    Ok((format, (w, h)))
}

/// The size of the image in the bundle file `path` from its header alone
/// (what decoding it will allocate is known before decoding).
///
/// # Errors
/// [`CompositionError::Invalid`] naming the file, as [`decode_image`] would.
pub fn image_dimensions(
    path: &Path,
    rel: &str,
    context: &str,
) -> Result<(u32, u32), CompositionError> {
    let file = std::fs::File::open(path)
        .map_err(|e| image_error(rel, context, format!("cannot read: {e}")))?;
    let reader = image::ImageReader::new(std::io::BufReader::new(file));
    Ok(header(reader, rel, context)?.1)
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

/// Decoded audio: interleaved stereo `f32` at [`SAMPLE_RATE`].
#[derive(Debug, Clone, PartialEq)]
pub struct Pcm {
    /// Interleaved L, R samples.
    pub samples: Vec<f32>,
}

impl Pcm {
    /// Number of stereo sample frames.
    pub fn frames(&self) -> u64 {
        (self.samples.len() / 2) as u64
    }
}

/// Decodes an audio file with Symphonia (WAV, MP3, AAC/M4A, FLAC, Ogg
/// Vorbis), takes the first two channels (mono is duplicated) and resamples
/// to 48 kHz.
///
/// # Errors
/// [`CompositionError::Invalid`] naming the file.
pub fn decode_audio(bytes: Vec<u8>, rel: &str, context: &str) -> Result<Pcm, CompositionError> {
    use symphonia::core::audio::SampleBuffer;
    use symphonia::core::codecs::DecoderOptions;
    use symphonia::core::errors::Error as SymError;
    use symphonia::core::formats::FormatOptions;
    use symphonia::core::io::MediaSourceStream;
    use symphonia::core::meta::MetadataOptions;
    use symphonia::core::probe::Hint;

    let invalid = |message: String| CompositionError::Invalid {
        context: context.to_owned(),
        message: format!("audio `{rel}`: {message}"),
    };
    let mut hint = Hint::new();
    if let Some(ext) = Path::new(rel).extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let mss = MediaSourceStream::new(Box::new(std::io::Cursor::new(bytes)), Default::default());
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            mss,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| invalid(format!("not a decodable audio file: {e}")))?;
    let mut format = probed.format;
    let track = format
        .default_track()
        .ok_or_else(|| invalid("no audio track".into()))?;
    let track_id = track.id;
    let rate = track
        .codec_params
        .sample_rate
        .ok_or_else(|| invalid("unknown sample rate".into()))?;
    if !(1000..=384_000).contains(&rate) {
        return Err(invalid(format!(
            "sample rate {rate} Hz is out of range 1000-384000"
        )));
    }
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| invalid(format!("unsupported codec: {e}")))?;
    let max_frames = MAX_AUDIO_SECONDS * u64::from(rate);
    let mut stereo: Vec<f32> = Vec::new();
    let mut buf: Option<SampleBuffer<f32>> = None;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => break,
            Err(e) => return Err(invalid(format!("reading packets: {e}"))),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            // A corrupt packet is skipped, as every player does.
            Err(SymError::DecodeError(_)) => continue,
            Err(e) => return Err(invalid(format!("decoding: {e}"))),
        };
        let spec = *decoded.spec();
        let channels = spec.channels.count();
        if channels == 0 {
            return Err(invalid("no channels".into()));
        }
        let sb = match &mut buf {
            Some(b) if b.capacity() >= decoded.capacity() * channels => b,
            _ => buf.insert(SampleBuffer::new(decoded.capacity() as u64, spec)),
        };
        sb.copy_interleaved_ref(decoded);
        for frame in sb.samples().chunks_exact(channels) {
            let l = frame[0];
            let r = if channels > 1 { frame[1] } else { frame[0] };
            stereo.push(l);
            stereo.push(r);
        }
        if (stereo.len() / 2) as u64 > max_frames {
            return Err(invalid(format!(
                "longer than {MAX_AUDIO_SECONDS} s: too long for a scene"
            )));
        }
    }
    Ok(Pcm {
        samples: resample(&stereo, rate, SAMPLE_RATE),
    })
}

/// Resamples interleaved stereo from `from` Hz to `to` Hz by linear
/// interpolation. Output sample `n` sits at source position `n·from/to`,
/// computed in integers, so the result depends on nothing but the input.
pub fn resample(stereo: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to {
        return stereo.to_vec();
    }
    let frames = (stereo.len() / 2) as u64;
    let out_frames = frames * u64::from(to) / u64::from(from);
    let mut out = Vec::with_capacity(out_frames as usize * 2);
    for n in 0..out_frames {
        let pos = n * u64::from(from);
        let i = pos / u64::from(to);
        let frac = (pos % u64::from(to)) as f32 / to as f32;
        let j = (i + 1).min(frames - 1);
        for ch in 0..2 {
            let a = stereo[(i * 2) as usize + ch];
            let b = stereo[(j * 2) as usize + ch];
            out.push(a + (b - a) * frac);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canonical");
        std::fs::write(root.join("a.png"), b"x").expect("write");
        assert!(resolve_path(&root, "a.png", "c").is_ok());
        let e = resolve_path(&root, "../a.png", "layer `X`").expect_err("dotdot");
        assert_eq!(
            e.to_string(),
            "layer `X`: asset path `../a.png` contains `..`: paths stay inside the bundle"
        );
        assert!(resolve_path(&root, "/etc/passwd", "c").is_err());
        assert_eq!(
            resolve_path(&root, "b.png", "layer `X`")
                .expect_err("missing")
                .to_string(),
            "layer `X`: b.png not found"
        );
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), b"x").expect("write");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(outside.path().join("secret"), root.join("link"))
                .expect("symlink");
            let e = resolve_path(&root, "link", "c").expect_err("symlink out");
            assert!(e.to_string().contains("leads outside the bundle"), "{e}");
        }
    }

    #[test]
    fn resample_is_exact_at_integer_positions() {
        let src: Vec<f32> = (0..8).flat_map(|i| [i as f32, -(i as f32)]).collect();
        let out = resample(&src, 24_000, 48_000);
        assert_eq!(out.len(), 32);
        assert_eq!(&out[..6], &[0.0, 0.0, 0.5, -0.5, 1.0, -1.0]);
    }

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
        let e = decode_image(&png, "bomb.png", "layer `B`").expect_err("bomb");
        assert!(
            e.to_string().starts_with("layer `B`: image `bomb.png`:"),
            "{e}"
        );
    }
}
