//! Montage chunk worker: renders one frame range of a composition to H.264
//! in MPEG-TS plus exact PCM, served over gRPC.
//!
//! Not built yet beyond the contract it speaks (`montage_proto::v1`): see the
//! chunk worker issue.
#![deny(missing_docs)]

pub use montage_proto::v1 as pb;
