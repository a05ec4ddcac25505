//! What the output is: the video codec the workers encode with, the
//! container the chunks are joined into, and the audio codec the joined PCM
//! is encoded to once.

use serde::{Deserialize, Serialize};

use crate::FieldError;

/// The video codec every chunk is encoded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoCodec {
    /// H.264 with libx264 (the default).
    #[default]
    H264,
    /// H.265/HEVC with libx265.
    H265,
    /// VP9 with libvpx (alpha with `yuva420p`).
    Vp9,
    /// AV1 with libsvtav1.
    Av1,
    /// Apple ProRes with prores_ks: 422 HQ (`yuv422p10le`) or 4444
    /// (`yuv444p10le`, `yuva444p10le` with alpha).
    Prores,
    /// Animated GIF.
    Gif,
}

impl VideoCodec {
    /// Every codec, in the order errors list them.
    pub const ALL: [VideoCodec; 6] = [
        VideoCodec::H264,
        VideoCodec::H265,
        VideoCodec::Vp9,
        VideoCodec::Av1,
        VideoCodec::Prores,
        VideoCodec::Gif,
    ];

    /// The name users type (`--codec`) and the wire carries.
    pub fn as_str(self) -> &'static str {
        match self {
            VideoCodec::H264 => "h264",
            VideoCodec::H265 => "h265",
            VideoCodec::Vp9 => "vp9",
            VideoCodec::Av1 => "av1",
            VideoCodec::Prores => "prores",
            VideoCodec::Gif => "gif",
        }
    }

    /// The codec named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether this is the default codec (H.264): left out of cache keys,
    /// so the keys of H.264 renders stay what they were before codecs
    /// other than H.264 existed.
    pub fn is_h264(&self) -> bool {
        *self == VideoCodec::H264
    }

    /// The names of every codec, for error messages.
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }

    /// Whether the workers can encode it yet.
    pub fn is_implemented(self) -> bool {
        matches!(
            self,
            VideoCodec::H264
                | VideoCodec::H265
                | VideoCodec::Vp9
                | VideoCodec::Av1
                | VideoCodec::Prores
                | VideoCodec::Gif
        )
    }

    /// The container a render into a storage prefix (named by content hash)
    /// gets.
    pub fn default_container(self) -> Container {
        match self {
            VideoCodec::H264 | VideoCodec::H265 | VideoCodec::Av1 => Container::Mp4,
            VideoCodec::Vp9 => Container::Webm,
            VideoCodec::Prores => Container::Mov,
            VideoCodec::Gif => Container::Gif,
        }
    }

    /// The chunk artifact's container: MPEG-TS for H.264 and H.265 (Annex
    /// B with in-band parameter sets, 90 kHz timestamps), Matroska for the
    /// rest. MPEG-TS cannot carry VP9, AV1 (in FFmpeg 5.1) or ProRes;
    /// Matroska carries all three with their codec private data and VP9's
    /// alpha (BlockAdditional), and its millisecond timestamps lose nothing
    /// here: none of these codecs reorders frames in the container, so the
    /// combine step places frame `k` of a chunk by its position and only
    /// checks the timestamp against it.
    ///
    /// A GIF chunk is a GIF: FFmpeg's Matroska muxer keeps only the first
    /// of the GIF encoder's packets, and the combine step copies a GIF's
    /// frames with their compressed data as they are.
    pub fn chunk_container(self) -> ChunkContainer {
        match self {
            VideoCodec::H264 | VideoCodec::H265 => ChunkContainer::MpegTs,
            VideoCodec::Vp9 | VideoCodec::Av1 | VideoCodec::Prores => ChunkContainer::Matroska,
            VideoCodec::Gif => ChunkContainer::Gif,
        }
    }
}

impl std::fmt::Display for VideoCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The container of one chunk's video artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChunkContainer {
    /// MPEG-TS (`.ts`).
    MpegTs,
    /// Matroska (`.mkv`).
    Matroska,
    /// GIF (`.gif`).
    Gif,
}

impl ChunkContainer {
    /// The artifact file's extension.
    pub fn extension(self) -> &'static str {
        match self {
            ChunkContainer::MpegTs => "ts",
            ChunkContainer::Matroska => "mkv",
            ChunkContainer::Gif => "gif",
        }
    }

    /// FFmpeg's muxer name.
    pub fn muxer(self) -> &'static str {
        match self {
            ChunkContainer::MpegTs => "mpegts",
            ChunkContainer::Matroska => "matroska",
            ChunkContainer::Gif => "gif",
        }
    }
}

/// The container of the combined output, chosen by the output's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Container {
    /// MP4 (`.mp4`, the default).
    #[default]
    Mp4,
    /// QuickTime (`.mov`).
    Mov,
    /// WebM (`.webm`).
    Webm,
    /// Matroska (`.mkv`).
    Mkv,
    /// GIF (`.gif`).
    Gif,
}

impl Container {
    /// Every container, in the order errors list them.
    pub const ALL: [Container; 5] = [
        Container::Mp4,
        Container::Mov,
        Container::Webm,
        Container::Mkv,
        Container::Gif,
    ];

    /// The file extension (without the dot).
    pub fn extension(self) -> &'static str {
        match self {
            Container::Mp4 => "mp4",
            Container::Mov => "mov",
            Container::Webm => "webm",
            Container::Mkv => "mkv",
            Container::Gif => "gif",
        }
    }

    /// FFmpeg's muxer name.
    pub fn muxer(self) -> &'static str {
        match self {
            Container::Mp4 => "mp4",
            Container::Mov => "mov",
            Container::Webm => "webm",
            Container::Mkv => "matroska",
            Container::Gif => "gif",
        }
    }

    /// Whether this is the default container (MP4): left out of cache
    /// keys, as [`VideoCodec::is_h264`].
    pub fn is_mp4(&self) -> bool {
        *self == Container::Mp4
    }

    /// The container for a file named `name`, by its extension (any case).
    ///
    /// # Errors
    /// A [`FieldError`] on `output` naming the extension and those known.
    pub fn from_file_name(name: &str) -> Result<Self, FieldError> {
        let ext = std::path::Path::new(name)
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        Self::ALL
            .into_iter()
            .find(|c| c.extension() == ext)
            .ok_or_else(|| {
                FieldError::new(
                    "output",
                    format!(
                        "`{}` has no video extension Montage knows; use one of: {}",
                        crate::quote(name),
                        Self::ALL.map(|c| format!(".{}", c.extension())).join(", ")
                    ),
                )
            })
    }

    /// The video codecs this container holds.
    pub fn video_codecs(self) -> &'static [VideoCodec] {
        use VideoCodec::*;
        match self {
            Container::Mp4 => &[H264, H265, Av1],
            Container::Mov => &[H264, H265, Prores],
            Container::Webm => &[Vp9, Av1],
            Container::Mkv => &[H264, H265, Vp9, Av1, Prores],
            Container::Gif => &[Gif],
        }
    }

    /// The audio codecs this container holds, the default first (`None`
    /// for GIF, which has no audio).
    pub fn audio_codecs(self) -> &'static [AudioCodec] {
        use AudioCodec::*;
        match self {
            Container::Mp4 => &[Aac],
            Container::Mov => &[Aac, Pcm],
            Container::Webm => &[Opus],
            Container::Mkv => &[Aac, Opus, Pcm],
            Container::Gif => &[],
        }
    }

    /// Checks that the container holds `codec`.
    ///
    /// # Errors
    /// A [`FieldError`] on `video.codec` naming both and the codecs the
    /// container holds.
    pub fn check_codec(self, codec: VideoCodec) -> Result<(), FieldError> {
        if self.video_codecs().contains(&codec) {
            return Ok(());
        }
        Err(FieldError::new(
            "video.codec",
            format!(
                "a .{} file cannot hold {codec} video; it holds {}",
                self.extension(),
                self.video_codecs()
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))
    }

    /// The audio codec used unless told otherwise.
    pub fn default_audio(self) -> Option<AudioCodec> {
        self.audio_codecs().first().copied()
    }
}

impl std::fmt::Display for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.extension())
    }
}

/// The codec the joined PCM is encoded to, once, in the combine step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AudioCodec {
    /// AAC-LC (FFmpeg's native encoder).
    Aac,
    /// Opus (libopus).
    Opus,
    /// 16-bit PCM, uncompressed.
    Pcm,
}

impl AudioCodec {
    /// Every audio codec, in the order errors list them.
    pub const ALL: [AudioCodec; 3] = [AudioCodec::Aac, AudioCodec::Opus, AudioCodec::Pcm];

    /// The name users type (`--audio-codec`).
    pub fn as_str(self) -> &'static str {
        match self {
            AudioCodec::Aac => "aac",
            AudioCodec::Opus => "opus",
            AudioCodec::Pcm => "pcm",
        }
    }

    /// The codec named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for AudioCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the combine step writes: the container and its audio codec,
/// checked against the video codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct OutputFormat {
    /// The container.
    pub container: Container,
    /// The audio codec; `None` takes the container's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioCodec>,
}

impl OutputFormat {
    /// Whether it is the default (MP4, its default audio): left out of
    /// output cache keys, so H.264 MP4 keys stay what they were.
    pub fn is_default(&self) -> bool {
        *self == OutputFormat::default()
    }

    /// The audio codec used: the one asked for, or the container's default
    /// (`None` when the container has no audio).
    pub fn audio_codec(&self) -> Option<AudioCodec> {
        self.audio.or_else(|| self.container.default_audio())
    }

    /// Checks that the container holds `codec` and the audio codec.
    ///
    /// # Errors
    /// A [`FieldError`] on `video.codec` or `audio.codec` naming the
    /// container and the codec.
    pub fn check(&self, codec: VideoCodec) -> Result<(), FieldError> {
        self.container.check_codec(codec)?;
        if let Some(audio) = self.audio
            && !self.container.audio_codecs().contains(&audio)
        {
            let held = self.container.audio_codecs();
            return Err(FieldError::new(
                "audio.codec",
                format!(
                    "a .{} file cannot hold {audio} audio; it holds {}",
                    self.container.extension(),
                    if held.is_empty() {
                        "no audio".to_owned()
                    } else {
                        held.iter()
                            .map(|c| c.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_come_from_the_extension() {
        assert_eq!(Container::from_file_name("a/b.MOV"), Ok(Container::Mov));
        assert_eq!(Container::from_file_name("x.webm"), Ok(Container::Webm));
        assert_eq!(
            Container::from_file_name("x.avi").map_err(|e| e.to_string()),
            Err(
                "field `output`: `x.avi` has no video extension Montage knows; use one of: .mp4, .mov, .webm, .mkv, .gif"
                    .to_owned()
            )
        );
    }

    #[test]
    fn a_codec_the_container_cannot_hold_names_both() {
        assert_eq!(Container::Mp4.check_codec(VideoCodec::H265), Ok(()));
        assert_eq!(
            Container::Mp4
                .check_codec(VideoCodec::Prores)
                .map_err(|e| e.to_string()),
            Err(
                "field `video.codec`: a .mp4 file cannot hold prores video; it holds h264, h265, av1"
                    .to_owned()
            )
        );
        let webm_aac = OutputFormat {
            container: Container::Webm,
            audio: Some(AudioCodec::Aac),
        };
        assert_eq!(
            webm_aac.check(VideoCodec::Vp9).map_err(|e| e.to_string()),
            Err(
                "field `audio.codec`: a .webm file cannot hold aac audio; it holds opus".to_owned()
            )
        );
        assert_eq!(
            OutputFormat {
                container: Container::Webm,
                audio: None
            }
            .audio_codec(),
            Some(AudioCodec::Opus)
        );
    }
}
