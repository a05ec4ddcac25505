//! Montage combine: stitch chunk artifacts into one MP4 with no seam.
//!
//! Not built yet: see the combine issue.
#![deny(missing_docs)]

pub use chunker;
