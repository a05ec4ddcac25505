//! The `montage.render.v1` gRPC contract between coordinator and chunk
//! workers.
//!
//! Generated at build time from `proto/montage/render/v1/render.proto` with
//! `tonic`/`prost` and the pure-Rust `protox` compiler. Only the chunk worker
//! and the coordinator depend on this crate; domain types live in their own
//! crates and never derive `prost::Message`. The hand-written conversions in
//! [`convert`] turn wire messages into validated domain values, with errors
//! that name the bad field.
//!
//! ```
//! use montage_proto::v1::Fraction;
//! use timebase::Fps;
//!
//! let fps = Fps::try_from(Fraction { num: 60_000, den: 2002 })?;
//! assert_eq!(fps.to_string(), "30000/1001");
//! let err = Fps::try_from(Fraction { num: 0, den: 1 }).unwrap_err();
//! assert_eq!(err.to_string(), "field `fps`: fps 0/1 is invalid: numerator and denominator must both be at least 1");
//! # Ok::<(), montage_proto::convert::FieldError>(())
//! ```
#![deny(missing_docs)]

pub mod codec;
pub mod convert;

/// gRPC metadata carrying the render's id on every request, so a worker's
/// log lines group with the coordinator's (`grep render_id=…` across
/// machines).
pub const RENDER_ID_METADATA: &str = "x-montage-render-id";

/// gRPC metadata carrying one chunk attempt's id
/// (`<render id>/<chunk>/<attempt>`, [`attempt_id`]).
pub const ATTEMPT_ID_METADATA: &str = "x-montage-attempt-id";

/// The id of attempt `attempt` (from 1) at chunk `chunk` of render
/// `render_id`: what the coordinator logs and sends as
/// [`ATTEMPT_ID_METADATA`].
///
/// ```
/// assert_eq!(montage_proto::attempt_id("r-7", 3, 2), "r-7/3/2");
/// ```
pub fn attempt_id(render_id: &str, chunk: u32, attempt: u32) -> String {
    format!("{render_id}/{chunk}/{attempt}")
}

/// Version 1 of the render protocol, as generated.
pub mod v1 {
    #![allow(missing_docs)] // generated code; the .proto file documents every item
    #![allow(clippy::all, clippy::unwrap_used)] // generated code
    tonic::include_proto!("montage.render.v1");
}
