//! What a Montage render asks for: the domain request types every other
//! crate shares, pure and validated.
//!
//! - [`VideoSettings`] and [`PcmFormat`]: how a chunk is encoded, checked by
//!   [`VideoSettings::validate`] with errors that name the field.
//! - [`SourceSpec`] (a registered composition, a bundle directory, or a
//!   content-addressed [`BundleRef`]), [`ArtifactTarget`] (inline, a
//!   directory, or a storage prefix), [`ChunkSpan`], [`ChunkRequest`] and
//!   [`DescribeRequest`].
//! - [`Location`] (`s3://bucket/key`, `file://` URLs, paths) and
//!   [`ContentHash`] (sha256), the names of everything stored.
//! - [`key`]: cache keys from a versioned, canonical encoding of what decides
//!   an artifact's bytes ([`ChunkIdentity`]).
//! - [`FieldError`] and [`quote`]: every refusal names the field and quotes
//!   at most [`QUOTE_LIMIT`] characters of what was given.
//!
//! The wire (`montage-proto`) converts to and from these types; nothing here
//! knows of gRPC, FFmpeg or I/O.
//!
//! ```
//! use spec::{ArtifactTarget, Location};
//!
//! let target = ArtifactTarget::parse_location("s3://renders/chunks/")?;
//! assert_eq!(target, ArtifactTarget::Storage(Location::parse("s3://renders/chunks/").unwrap()));
//! let err = ArtifactTarget::parse_location("s3://renders/one.ts").unwrap_err();
//! assert_eq!(err.field, "output.location");
//! # Ok::<(), spec::FieldError>(())
//! ```
#![deny(missing_docs)]

mod chunk;
mod field;
mod hash;
pub mod key;
mod location;
mod output;
mod report;
mod sink;
mod source;
mod target;
mod video;

pub use chunk::{ChunkRequest, ChunkSpan, DescribeRequest};
pub use field::{FieldError, MAX_ID_BYTES, QUOTE_LIMIT, check_id, quote, quote_within};
pub use hash::{ContentHash, HashError};
pub use key::{ChunkIdentity, RendererVersion, canonical_json};
pub use location::{Location, LocationError, check_key, check_prefix};
pub use output::{AudioCodec, ChunkContainer, Container, OutputFormat, VideoCodec};
pub use report::{
    ArtifactKind, ChunkEvent, ChunkProgress, ChunkReport, DeliveredArtifact, StageTimings,
};
pub use sink::{
    AudioOnlyFormat, DEFAULT_JPEG_QUALITY, FrameSink, ImageFormat, ImageSequence, ImageTarget,
    check_jpeg_quality,
};
pub use source::{BundleRef, SourceIdentity, SourceSpec};
pub use target::ArtifactTarget;
pub use video::{
    GifPalette, H264_LEVELS, H264Profile, MAX_BFRAMES, MAX_CRF, MAX_CRF_VP9_AV1,
    MAX_ENCODER_THREADS, MAX_GIF_COLORS, MAX_GIF_FPS, MAX_KEYINT, MIN_AV1_SIDE, PcmFormat,
    PixelFormat, Quality, VideoSettings, X264_PRESETS, chunk_cost,
};

/// Props: the JSON object of values a composition is rendered with (the
/// same type as `composition::Props`).
pub type Props = serde_json::Map<String, serde_json::Value>;
