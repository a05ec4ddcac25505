//! Montage benchmarks. The benchmark targets live in `benches/`; run them
//! with `cargo bench -p montage-benches` (see the README for the full run and
//! the latest numbers).
#![deny(missing_docs)]
