//! Integration tests for `combine`, judged by Debian's `ffprobe`/`ffmpeg`.

mod ahead;
mod browser;
pub mod codecs;
mod fuzz;
mod refuse;
mod seamless;
mod support;
