//! Montage storage: one small trait over local directories and S3.
//!
//! Not built yet: see the storage issue. Until then artifacts travel inline
//! over gRPC or through local paths handled by the chunk worker and
//! coordinator.
#![deny(missing_docs)]
