//! Bundle files: path safety, image decoding and audio decoding.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::{CompositionError, SAMPLE_RATE};

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
    read_limited(path, rel, context, MAX_ASSET_BYTES)
}

/// Reads a bundle file whole, refusing files over `max` bytes.
///
/// # Errors
/// [`CompositionError::Invalid`] naming the file.
pub fn read_limited(
    path: &Path,
    rel: &str,
    context: &str,
    max: u64,
) -> Result<Vec<u8>, CompositionError> {
    let invalid = |message: String| CompositionError::Invalid {
        context: context.to_owned(),
        message,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| invalid(format!("cannot read `{rel}`: {e}")))?
        .len();
    if len > max {
        return Err(invalid(format!("`{rel}` is {len} bytes: at most {max} allowed")));
    }
    std::fs::read(path).map_err(|e| invalid(format!("cannot read `{rel}`: {e}")))
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
}
