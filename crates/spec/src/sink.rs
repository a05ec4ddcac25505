//! Outputs that are not one video file: what a worker does with the frames
//! it renders ([`FrameSink`]: encode them, skip them for an audio-only
//! render, or write each as an image of an [`ImageSequence`]), and the
//! files an audio-only render writes ([`AudioOnlyFormat`]).

use std::path::PathBuf;

use crate::{AudioCodec, FieldError, Location};

/// What a worker does with the frames of its chunk.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum FrameSink {
    /// Encode them into the chunk's video artifact (the default).
    #[default]
    Encode,
    /// Render no frame at all: the chunk is its PCM only (audio-only
    /// renders).
    Skip,
    /// Write each frame as one image file straight to the sequence's
    /// target; the chunk has no video artifact.
    Images(ImageSequence),
}

impl FrameSink {
    /// Whether the chunk has a video artifact.
    pub fn has_video_artifact(&self) -> bool {
        matches!(self, FrameSink::Encode)
    }
}

/// The image format of a sequence's frames (and of stills).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ImageFormat {
    /// PNG, RGBA (alpha kept), fixed compression (the default).
    #[default]
    Png,
    /// Baseline JPEG, RGB, at a fixed quality.
    Jpeg,
    /// Lossless WebP, RGBA (stills only).
    Webp,
}

impl ImageFormat {
    /// Every format, in the order errors list them.
    pub const ALL: [ImageFormat; 3] = [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Webp];

    /// The name users type and the wire carries.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Webp => "webp",
        }
    }

    /// The file extension (without the dot).
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpg",
            ImageFormat::Webp => "webp",
        }
    }

    /// The format named `s` (`jpg` is `jpeg`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "jpg" => Some(ImageFormat::Jpeg),
            _ => Self::ALL.into_iter().find(|f| f.as_str() == s),
        }
    }

    /// The format of a file named `name`, by its extension (any case).
    pub fn from_file_name(name: &str) -> Option<Self> {
        let ext = std::path::Path::new(name)
            .extension()?
            .to_string_lossy()
            .to_ascii_lowercase();
        Self::parse(&ext)
    }

    /// Whether image sequences may use it (PNG and JPEG).
    pub fn for_sequences(self) -> bool {
        matches!(self, ImageFormat::Png | ImageFormat::Jpeg)
    }
}

impl std::fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JPEG quality used unless told otherwise.
pub const DEFAULT_JPEG_QUALITY: u8 = 90;

/// Where a sequence's frames go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ImageTarget {
    /// A local directory on the worker (it must be under the worker's
    /// `--allow-path`).
    Directory(PathBuf),
    /// An object-storage prefix (`s3://bucket/prefix/`).
    Storage(Location),
}

impl ImageTarget {
    /// The target `text` names: `s3://bucket/prefix` (a `/` is added when
    /// missing) or a local directory.
    ///
    /// # Errors
    /// A [`FieldError`] on `image_sequence.location`.
    pub fn parse(text: &str) -> Result<Self, FieldError> {
        const FIELD: &str = "image_sequence.location";
        if text.is_empty() {
            return Err(FieldError::new(FIELD, "is empty"));
        }
        if text.starts_with("s3://") {
            let with_slash = if text.ends_with('/') {
                text.to_owned()
            } else {
                format!("{text}/")
            };
            let location =
                Location::parse(&with_slash).map_err(|e| FieldError::new(FIELD, e.to_string()))?;
            return Ok(ImageTarget::Storage(location));
        }
        if text.contains("://") {
            return match Location::parse(text).map_err(|e| FieldError::new(FIELD, e.to_string()))? {
                Location::Local { root, key } => Ok(ImageTarget::Directory(root.join(key))),
                s3 @ Location::S3 { .. } => Ok(ImageTarget::Storage(s3)),
            };
        }
        Ok(ImageTarget::Directory(PathBuf::from(text)))
    }

    /// The text [`ImageTarget::parse`] reads back.
    pub fn location(&self) -> String {
        match self {
            ImageTarget::Directory(d) => d.to_string_lossy().into_owned(),
            ImageTarget::Storage(l) => l.to_string(),
        }
    }
}

impl std::fmt::Display for ImageTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.location())
    }
}

/// An image sequence: every output frame as one file named by its global
/// output index ([`ImageSequence::file_name`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageSequence {
    /// PNG or JPEG.
    pub format: ImageFormat,
    /// JPEG quality, 1-100 (ignored for PNG).
    pub jpeg_quality: u8,
    /// Where the files go.
    pub target: ImageTarget,
    /// Output frames of the whole render: decides the width of the
    /// zero-padded index in every name, so a chunk names its frames
    /// without knowing the others.
    pub total_frames: u64,
}

impl ImageSequence {
    /// The name of output frame `index` (counted from the render's first
    /// frame): `frame-` + the index zero-padded to the digits of the last
    /// index (`total_frames - 1`, at least one digit) + the extension, e.g.
    /// `frame-042.png` in a render of 100 to 1000 frames.
    pub fn file_name(&self, index: u64) -> String {
        let width = self.total_frames.saturating_sub(1).max(1).ilog10() as usize + 1;
        format!("frame-{index:0width$}.{}", self.format.extension())
    }

    /// Checks the format and the quality.
    ///
    /// # Errors
    /// A [`FieldError`] on `image_sequence.format` or
    /// `image_sequence.jpeg_quality`.
    pub fn validate(&self) -> Result<(), FieldError> {
        if !self.format.for_sequences() {
            return Err(FieldError::new(
                "image_sequence.format",
                format!("{} is for stills; sequences are png or jpeg", self.format),
            ));
        }
        check_jpeg_quality(self.jpeg_quality)
    }
}

/// Checks a JPEG quality (1-100).
///
/// # Errors
/// A [`FieldError`] on `jpeg_quality`.
pub fn check_jpeg_quality(quality: u8) -> Result<(), FieldError> {
    if (1..=100).contains(&quality) {
        Ok(())
    } else {
        Err(FieldError::new(
            "jpeg_quality",
            format!("{quality} is out of range: allowed 1-100"),
        ))
    }
}

/// The file an audio-only render writes, chosen by the output's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioOnlyFormat {
    /// RIFF WAVE, 16-bit PCM (`.wav`).
    Wav,
    /// AAC-LC in MPEG-4 audio (`.m4a`), priming under an edit list.
    M4a,
    /// MP3 with libmp3lame (`.mp3`), with a LAME/Xing header holding the
    /// encoder delay and padding.
    Mp3,
    /// Opus in Ogg (`.opus`), its pre-skip in the header and the end
    /// trimmed by the last page's granule position.
    Opus,
}

impl AudioOnlyFormat {
    /// Every format, in the order errors list them.
    pub const ALL: [AudioOnlyFormat; 4] = [
        AudioOnlyFormat::Wav,
        AudioOnlyFormat::M4a,
        AudioOnlyFormat::Mp3,
        AudioOnlyFormat::Opus,
    ];

    /// The file extension (without the dot).
    pub fn extension(self) -> &'static str {
        match self {
            AudioOnlyFormat::Wav => "wav",
            AudioOnlyFormat::M4a => "m4a",
            AudioOnlyFormat::Mp3 => "mp3",
            AudioOnlyFormat::Opus => "opus",
        }
    }

    /// FFmpeg's muxer name.
    pub fn muxer(self) -> &'static str {
        match self {
            AudioOnlyFormat::Wav => "wav",
            AudioOnlyFormat::M4a => "ipod",
            AudioOnlyFormat::Mp3 => "mp3",
            AudioOnlyFormat::Opus => "ogg",
        }
    }

    /// The audio codec the joined PCM is encoded to.
    pub fn codec(self) -> AudioCodec {
        match self {
            AudioOnlyFormat::Wav => AudioCodec::Pcm,
            AudioOnlyFormat::M4a => AudioCodec::Aac,
            AudioOnlyFormat::Mp3 => AudioCodec::Mp3,
            AudioOnlyFormat::Opus => AudioCodec::Opus,
        }
    }

    /// The format of a file named `name`, by its extension (any case), or
    /// `None` for any other extension.
    pub fn from_file_name(name: &str) -> Option<Self> {
        let ext = std::path::Path::new(name)
            .extension()?
            .to_string_lossy()
            .to_ascii_lowercase();
        Self::ALL.into_iter().find(|f| f.extension() == ext)
    }

    /// The extensions, for error messages (`.wav, .m4a, .mp3, .opus`).
    pub fn names() -> String {
        Self::ALL.map(|f| format!(".{}", f.extension())).join(", ")
    }
}

impl std::fmt::Display for AudioOnlyFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.extension())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequence(total_frames: u64) -> ImageSequence {
        ImageSequence {
            format: ImageFormat::Png,
            jpeg_quality: DEFAULT_JPEG_QUALITY,
            target: ImageTarget::Directory("out".into()),
            total_frames,
        }
    }

    #[test]
    fn names_are_padded_to_the_last_index() {
        assert_eq!(sequence(1).file_name(0), "frame-0.png");
        assert_eq!(sequence(10).file_name(9), "frame-9.png");
        assert_eq!(sequence(11).file_name(3), "frame-03.png");
        assert_eq!(sequence(1000).file_name(123), "frame-123.png");
        assert_eq!(sequence(1001).file_name(123), "frame-0123.png");
        let jpeg = ImageSequence {
            format: ImageFormat::Jpeg,
            ..sequence(124)
        };
        assert_eq!(jpeg.file_name(7), "frame-007.jpg");
    }

    #[test]
    fn targets_and_formats_parse() {
        assert_eq!(
            ImageTarget::parse("s3://b-1/seq").map(|t| t.location()),
            Ok("s3://b-1/seq/".to_owned())
        );
        assert_eq!(
            ImageTarget::parse("frames/"),
            Ok(ImageTarget::Directory("frames/".into()))
        );
        assert_eq!(
            AudioOnlyFormat::from_file_name("a/b.MP3"),
            Some(AudioOnlyFormat::Mp3)
        );
        assert_eq!(AudioOnlyFormat::from_file_name("a.mp4"), None);
        assert_eq!(ImageFormat::parse("jpg"), Some(ImageFormat::Jpeg));
        assert_eq!(
            sequence(3)
                .validate()
                .and_then(|()| check_jpeg_quality(0))
                .map_err(|e| e.to_string()),
            Err("field `jpeg_quality`: 0 is out of range: allowed 1-100".to_owned())
        );
    }
}
