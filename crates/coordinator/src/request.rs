//! What a render asks for: [`RenderRequest`], checked whole by
//! [`RenderRequest::validate`] before anything runs.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chunker::ChunkSpec;
use composition::Props;
use spec::{
    AudioCodec, AudioOnlyFormat, Container, FrameSink, ImageFormat, ImageSequence, ImageTarget,
    Location, OutputFormat, VideoSettings,
};

use crate::Error;

/// The longest presigned URL S3 signs (7 days, SigV4's limit).
pub const MAX_PRESIGN: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where a render's composition comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderSource {
    /// A scene bundle directory. Local workers read it in place; remote
    /// workers get it as a content-addressed archive through an S3 cache
    /// (`CoordinatorOptions::cache`), or, without one, must see the same
    /// path (a shared file system).
    Bundle(PathBuf),
    /// A Rust composition registered in the workers' binaries.
    Registered,
}

/// Where a render's MP4 goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A file on this machine (written under a temporary name and renamed).
    File(PathBuf),
    /// An object in storage: `s3://bucket/path.mp4`, or a prefix
    /// (`s3://bucket/renders/`) under which the MP4 is named by its sha256,
    /// spread over two levels of hashed prefixes
    /// (`renders/ab/cd/<sha256>.mp4`).
    Storage(Location),
}

impl Destination {
    /// Parses what a user typed: `s3://…` is storage; `file://` URLs and
    /// anything else are local paths.
    ///
    /// # Errors
    /// [`Error::Input`] naming the text when it is not a valid location or
    /// names a local directory.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let quoted = spec::quote(text);
        let bad = |e: spec::LocationError| Error::Input(format!("--out: {e}"));
        if text.starts_with("s3://") {
            let location = Location::parse(text).map_err(bad)?;
            if location.key().is_empty() {
                return Err(Error::Input(format!(
                    "--out `{quoted}`: name an object (s3://bucket/path.mp4) or a prefix (s3://bucket/renders/)"
                )));
            }
            return Ok(Destination::Storage(location));
        }
        let directory = || Error::Input(format!("--out `{quoted}` names a directory, not a file"));
        if text.starts_with("file://") {
            return match Location::parse(text).map_err(bad)? {
                Location::Local { root, key } if !key.is_empty() => {
                    Ok(Destination::File(root.join(key)))
                }
                _ => Err(directory()),
            };
        }
        if text.is_empty() || text.ends_with('/') {
            return Err(directory());
        }
        Ok(Destination::File(PathBuf::from(text)))
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::File(p) => write!(f, "{}", p.display()),
            Destination::Storage(location) => write!(f, "{location}"),
        }
    }
}

impl From<PathBuf> for Destination {
    fn from(p: PathBuf) -> Self {
        Destination::File(p)
    }
}

impl From<&Path> for Destination {
    fn from(p: &Path) -> Self {
        Destination::File(p.to_path_buf())
    }
}

impl From<&PathBuf> for Destination {
    fn from(p: &PathBuf) -> Self {
        Destination::File(p.clone())
    }
}

/// Everything a render needs. Build with [`RenderRequest::new`], adjust the
/// public fields, and [`RenderRequest::validate`] (the coordinator validates
/// again before it starts).
#[derive(Debug, Clone)]
pub struct RenderRequest {
    /// Where the composition comes from.
    pub source: RenderSource,
    /// The composition's id.
    pub composition: String,
    /// Props (empty: defaults).
    pub props: Props,
    /// How to split the frames.
    pub chunks: ChunkSpec,
    /// Render only these frames (inclusive).
    pub frames: Option<RangeInclusive<u64>>,
    /// Keep one frame in this many.
    pub every_nth_frame: u32,
    /// Encoder settings, identical for every chunk.
    pub video: VideoSettings,
    /// AAC (or Opus) bitrate in bits per second.
    pub audio_bitrate: u32,
    /// The audio codec; `None` takes the container's default (AAC in MP4,
    /// MOV and Matroska, Opus in WebM).
    pub audio_codec: Option<AudioCodec>,
    /// Add a silent audio track when the composition has none.
    pub enforce_audio_track: bool,
    /// Where the output goes; its extension decides the container (see
    /// [`RenderRequest::output_format`]).
    pub output: Destination,
    /// Also copy the chunk artifacts into this directory, with the
    /// `manifest.json` that `coordinator combine` reads.
    pub keep_chunks: Option<PathBuf>,
    /// Reuse cached chunks and outputs (when the coordinator has a cache).
    /// `false` renders everything again; what it renders is still recorded.
    pub use_cache: bool,
    /// Render only the audio (`--audio-only`): workers render no frame and
    /// the joined PCM is written as the output's extension says (`.wav`,
    /// `.m4a`, `.mp3`, `.opus`). The render cache is not used.
    pub audio_only: bool,
    /// Write the frames as images instead of a video (`--image-sequence`);
    /// `output` is then where the audio goes (`audio.wav` beside the
    /// frames, written only when the composition has audio). The render
    /// cache is not used.
    pub image_sequence: Option<ImageSequenceOutput>,
    /// Also make a presigned GET URL of a storage destination, valid this
    /// long (at most [`MAX_PRESIGN`]).
    pub presign: Option<Duration>,
}

/// Where an image sequence goes and how its frames are encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSequenceOutput {
    /// A directory on the workers (under their `--allow-path`) or an
    /// `s3://bucket/prefix/`.
    pub target: ImageTarget,
    /// PNG (alpha kept) or JPEG.
    pub format: ImageFormat,
    /// JPEG quality, 1-100.
    pub jpeg_quality: u8,
}

impl ImageSequenceOutput {
    /// Where the sequence's `audio.wav` goes: beside the frames.
    ///
    /// # Errors
    /// [`Error::Input`] for a prefix that cannot hold the name.
    pub fn audio_destination(&self) -> Result<Destination, Error> {
        match &self.target {
            ImageTarget::Directory(dir) => Ok(Destination::File(dir.join(AUDIO_BESIDE_FRAMES))),
            ImageTarget::Storage(prefix) => {
                Destination::parse(&format!("{prefix}{AUDIO_BESIDE_FRAMES}"))
            }
        }
    }
}

/// The name of an image sequence's audio, beside its frames.
pub const AUDIO_BESIDE_FRAMES: &str = "audio.wav";

impl RenderRequest {
    /// Whether the output is one video file (not audio only, not an image
    /// sequence).
    pub fn writes_video(&self) -> bool {
        !self.audio_only && self.image_sequence.is_none()
    }

    /// The local directory of an image sequence, if it goes to one.
    pub fn local_sequence_dir(&self) -> Option<&Path> {
        match &self.image_sequence.as_ref()?.target {
            ImageTarget::Directory(dir) => Some(dir),
            ImageTarget::Storage(_) => None,
        }
    }

    /// What the workers do with the frames of a render of `total_frames`
    /// output frames.
    pub fn frame_sink(&self, total_frames: u64) -> FrameSink {
        match (&self.image_sequence, self.audio_only) {
            (Some(s), _) => FrameSink::Images(ImageSequence {
                format: s.format,
                jpeg_quality: s.jpeg_quality,
                target: s.target.clone(),
                total_frames,
            }),
            (None, true) => FrameSink::Skip,
            (None, false) => FrameSink::Encode,
        }
    }

    /// The file an audio-only render writes, from the output's extension.
    ///
    /// # Errors
    /// [`Error::Input`] naming the output and the extensions allowed.
    pub fn audio_only_format(&self) -> Result<AudioOnlyFormat, Error> {
        let name = self.output_name().unwrap_or_default();
        AudioOnlyFormat::from_file_name(&name).ok_or_else(|| {
            Error::Input(format!(
                "--audio-only --out {}: the extension must be one of {}",
                self.output,
                AudioOnlyFormat::names()
            ))
        })
    }

    /// The output's file name (`None` for a storage prefix).
    fn output_name(&self) -> Option<String> {
        match &self.output {
            Destination::File(path) => path.file_name().map(|n| n.to_string_lossy().into_owned()),
            Destination::Storage(location) if !location.is_prefix() => {
                Some(location.key().to_owned())
            }
            Destination::Storage(_) => None,
        }
    }

    /// Refuses output options that make no sense together, naming both;
    /// checks the container of a video output.
    fn check_output_kind(&self) -> Result<(), Error> {
        let both = |a: &str, b: &str, why: &str| Err(Error::Input(format!("{a} with {b}: {why}")));
        let codec_given = !self.video.codec.is_h264();
        let transparent = self.video.pixel_format.has_alpha();
        if self.audio_only {
            if self.image_sequence.is_some() {
                return both("--audio-only", "--image-sequence", "choose one output");
            }
            if codec_given {
                return both(
                    "--audio-only",
                    &format!("--codec {}", self.video.codec),
                    "an audio-only render encodes no video",
                );
            }
            if transparent {
                return both("--audio-only", "--transparent", "audio has no alpha");
            }
            if let Some(codec) = self.audio_codec {
                return both(
                    "--audio-only",
                    &format!("--audio-codec {codec}"),
                    "the extension of --out picks the codec (.wav, .m4a, .mp3, .opus)",
                );
            }
            if self.keep_chunks.is_some() {
                return both(
                    "--audio-only",
                    "--keep-chunks",
                    "there are no video chunks to keep",
                );
            }
            if self.enforce_audio_track {
                return both(
                    "--audio-only",
                    "--enforce-audio-track",
                    "an audio-only render needs a composition with audio",
                );
            }
            self.audio_only_format()?;
            return Ok(());
        }
        if let Some(sequence) = &self.image_sequence {
            let flag = "--image-sequence";
            if codec_given {
                return both(
                    flag,
                    &format!("--codec {}", self.video.codec),
                    "frames are written as images, not encoded",
                );
            }
            if let Some(codec) = self.audio_codec {
                return both(
                    flag,
                    &format!("--audio-codec {codec}"),
                    "the audio beside the frames is audio.wav",
                );
            }
            if self.keep_chunks.is_some() {
                return both(flag, "--keep-chunks", "there are no video chunks to keep");
            }
            if !sequence.format.for_sequences() {
                return Err(Error::Input(format!(
                    "--image-format {}: sequences are png or jpeg",
                    sequence.format
                )));
            }
            spec::check_jpeg_quality(sequence.jpeg_quality)
                .map_err(|e| Error::Input(format!("--jpeg-quality {}", e.message)))?;
            return Ok(());
        }
        if let Some(name) = self.output_name()
            && let Some(format) = AudioOnlyFormat::from_file_name(&name)
        {
            return both(
                &format!("--out {}", self.output),
                &format!("a video render (.{format} holds audio only)"),
                "add --audio-only, or give a video extension",
            );
        }
        self.output_format().map(|_| ())
    }

    /// A render of `composition` from `source` into `output`, split per
    /// `chunks`, with default encoding.
    pub fn new(
        source: RenderSource,
        composition: impl Into<String>,
        chunks: ChunkSpec,
        output: impl Into<Destination>,
    ) -> Self {
        RenderRequest {
            source,
            composition: composition.into(),
            props: Props::new(),
            chunks,
            frames: None,
            every_nth_frame: 1,
            video: VideoSettings::default(),
            audio_bitrate: combine::DEFAULT_AUDIO_BITRATE,
            audio_codec: None,
            enforce_audio_track: false,
            output: output.into(),
            keep_chunks: None,
            use_cache: true,
            audio_only: false,
            image_sequence: None,
            presign: None,
        }
    }

    /// The container and audio codec of the output: the container from the
    /// output's extension (`.mp4`, `.mov`, `.webm`, `.mkv`, `.gif`, any
    /// case); a name without one of those, or a storage prefix (named by
    /// content hash), gets the codec's default container (MP4 for H.264,
    /// H.265 and AV1, WebM for VP9, MOV for ProRes).
    ///
    /// # Errors
    /// [`Error::Input`] when the container cannot hold the video codec or
    /// the audio codec, naming both.
    pub fn output_format(&self) -> Result<OutputFormat, Error> {
        let name = match &self.output {
            Destination::File(path) => path.file_name().map(|n| n.to_string_lossy().into_owned()),
            Destination::Storage(location) if !location.is_prefix() => {
                Some(location.key().to_owned())
            }
            Destination::Storage(_) => None,
        };
        let container = name
            .and_then(|n| Container::from_file_name(&n).ok())
            .unwrap_or_else(|| self.video.codec.default_container());
        let format = OutputFormat {
            container,
            audio: self.audio_codec,
        };
        format.check(self.video.codec).map_err(|e| {
            Error::Input(format!(
                "--codec {} --out {}: {}",
                self.video.codec, self.output, e.message
            ))
        })?;
        Ok(format)
    }

    /// Checks everything that can be checked without a worker: the encoder
    /// settings, the output's container against the codec, the split, the frame range's order, the frame step, the
    /// AAC bitrate and the presigned URL's lifetime and destination. (The
    /// composition, props and range against its length are checked when it
    /// is selected.)
    ///
    /// # Errors
    /// [`Error::Input`] naming the field (as its CLI flag) and the value.
    pub fn validate(&self) -> Result<(), Error> {
        let input = |m: String| Err(Error::Input(m));
        if self.composition.is_empty() {
            return input("the composition id is empty".into());
        }
        self.video
            .validate()
            .map_err(|e| Error::Input(format!("video settings: {e}")))?;
        self.check_output_kind()?;
        match self.chunks {
            ChunkSpec::Count(0) => return input("--chunks 0 is invalid: give at least 1".into()),
            ChunkSpec::FramesPerChunk(0) => {
                return input("--frames-per-chunk 0 is invalid: give at least 1".into());
            }
            _ => {}
        }
        if let Some(r) = &self.frames
            && r.start() > r.end()
        {
            return input(format!(
                "--frames {}-{}: the first frame is after the last",
                r.start(),
                r.end()
            ));
        }
        if self.every_nth_frame == 0 {
            return input("--every-nth-frame 0 is invalid: give at least 1".into());
        }
        if !(combine::MIN_AUDIO_BITRATE..=combine::MAX_AUDIO_BITRATE).contains(&self.audio_bitrate)
        {
            return input(format!(
                "--audio-bitrate {} is out of range: allowed {}-{}",
                self.audio_bitrate,
                combine::MIN_AUDIO_BITRATE,
                combine::MAX_AUDIO_BITRATE
            ));
        }
        if let Some(ttl) = self.presign {
            if !matches!(self.output, Destination::Storage(_)) {
                return input(format!(
                    "--presign needs an s3:// output, not {}",
                    self.output
                ));
            }
            if ttl.is_zero() || ttl > MAX_PRESIGN {
                return input(format!(
                    "--presign {} is out of range: allowed 1-{} seconds",
                    ttl.as_secs(),
                    MAX_PRESIGN.as_secs()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RenderRequest {
        RenderRequest::new(
            RenderSource::Registered,
            "test-pattern",
            ChunkSpec::Count(2),
            PathBuf::from("out.mp4"),
        )
    }

    #[track_caller]
    fn check(change: impl FnOnce(&mut RenderRequest), expected: Result<(), &str>) {
        let mut r = request();
        change(&mut r);
        assert_eq!(
            r.validate().map_err(|e| e.to_string()),
            expected.map_err(str::to_owned)
        );
    }

    #[test]
    fn requests_are_checked_whole_with_the_flag_named() {
        check(|_| {}, Ok(()));
        check(
            |r| r.chunks = ChunkSpec::Count(0),
            Err("--chunks 0 is invalid: give at least 1"),
        );
        check(
            // As typed on the command line (`--frames 9-3`).
            |r| r.frames = Some(RangeInclusive::new(9, 3)),
            Err("--frames 9-3: the first frame is after the last"),
        );
        check(
            |r| r.every_nth_frame = 0,
            Err("--every-nth-frame 0 is invalid: give at least 1"),
        );
        check(
            |r| r.presign = Some(Duration::from_secs(60)),
            Err("--presign needs an s3:// output, not out.mp4"),
        );
        check(
            |r| {
                r.output = Destination::parse("s3://b-1/x.mp4").expect("valid");
                r.presign = Some(MAX_PRESIGN + Duration::from_secs(1));
            },
            Err("--presign 604801 is out of range: allowed 1-604800 seconds"),
        );
        check(
            |r| r.video.preset = "warp".into(),
            Err(
                "video settings: field `video.preset`: `warp` is not an x264 preset; allowed: ultrafast, superfast, veryfast, faster, fast, medium, slow, slower, veryslow, placebo",
            ),
        );
        check(
            |r| r.audio_bitrate = 1,
            Err("--audio-bitrate 1 is out of range: allowed 16000-512000"),
        );
        check(
            |r| {
                r.video = VideoSettings::for_codec(spec::VideoCodec::Prores, false).expect("prores")
            },
            Err(
                "--codec prores --out out.mp4: a .mp4 file cannot hold prores video; it holds h264, h265, av1",
            ),
        );
        check(
            |r| {
                r.video = VideoSettings::for_codec(spec::VideoCodec::Vp9, true).expect("vp9");
                r.output = Destination::File("a.WEBM".into());
                r.audio_codec = Some(AudioCodec::Aac);
            },
            Err("--codec vp9 --out a.WEBM: a .webm file cannot hold aac audio; it holds opus"),
        );
    }

    #[test]
    fn the_container_follows_the_extension() {
        let mut r = request();
        r.video = VideoSettings::for_codec(spec::VideoCodec::Prores, true).expect("prores");
        r.output = Destination::File("x/overlay.mov".into());
        assert_eq!(
            r.output_format().expect("mov holds prores").container,
            Container::Mov
        );
        r.output = Destination::parse("s3://b-1/renders/").expect("prefix");
        assert_eq!(
            r.output_format().expect("default").container,
            Container::Mov
        );
    }

    #[test]
    fn destinations_name_the_text() {
        assert_eq!(
            Destination::parse("out/x.mp4").expect("file"),
            Destination::File("out/x.mp4".into())
        );
        assert_eq!(
            Destination::parse("out/").expect_err("dir").to_string(),
            "--out `out/` names a directory, not a file"
        );
        assert_eq!(
            Destination::parse("s3://b-1")
                .expect_err("bucket")
                .to_string(),
            "--out `s3://b-1`: name an object (s3://bucket/path.mp4) or a prefix (s3://bucket/renders/)"
        );
        assert!(matches!(
            Destination::parse("s3://b-1/renders/").expect("prefix"),
            Destination::Storage(l) if l.is_prefix()
        ));
    }

    #[test]
    fn outputs_other_than_video_are_checked_naming_both() {
        let sequence = || ImageSequenceOutput {
            target: ImageTarget::Directory("/frames".into()),
            format: ImageFormat::Png,
            jpeg_quality: 90,
        };
        check(
            |r| {
                r.audio_only = true;
                r.output = Destination::File("a.opus".into());
            },
            Ok(()),
        );
        check(
            |r| {
                r.audio_only = true;
                r.output = Destination::File("a.opus".into());
                r.video = VideoSettings::for_codec(spec::VideoCodec::Vp9, true).expect("vp9");
            },
            Err("--audio-only with --codec vp9: an audio-only render encodes no video"),
        );
        check(
            |r| {
                r.audio_only = true;
                r.output = Destination::File("a.wav".into());
                r.image_sequence = Some(sequence());
            },
            Err("--audio-only with --image-sequence: choose one output"),
        );
        check(
            |r| r.audio_only = true,
            Err("--audio-only --out out.mp4: the extension must be one of .wav, .m4a, .mp3, .opus"),
        );
        check(
            |r| r.output = Destination::File("talk.m4a".into()),
            Err(
                "--out talk.m4a with a video render (.m4a holds audio only): add --audio-only, or give a video extension",
            ),
        );
        check(|r| r.image_sequence = Some(sequence()), Ok(()));
        check(
            |r| {
                r.image_sequence = Some(sequence());
                r.audio_codec = Some(AudioCodec::Opus);
            },
            Err(
                "--image-sequence with --audio-codec opus: the audio beside the frames is audio.wav",
            ),
        );
        check(
            |r| {
                r.image_sequence = Some(ImageSequenceOutput {
                    jpeg_quality: 0,
                    ..sequence()
                });
            },
            Err("--jpeg-quality 0 is out of range: allowed 1-100"),
        );
        let mut r = request();
        r.image_sequence = Some(sequence());
        assert_eq!(
            r.frame_sink(7),
            FrameSink::Images(ImageSequence {
                format: ImageFormat::Png,
                jpeg_quality: 90,
                target: ImageTarget::Directory("/frames".into()),
                total_frames: 7,
            })
        );
        assert_eq!(
            sequence().audio_destination().expect("dir"),
            Destination::File("/frames/audio.wav".into())
        );
    }
}
