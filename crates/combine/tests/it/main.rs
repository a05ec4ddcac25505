//! Integration tests for `combine`, judged by Debian's `ffprobe`/`ffmpeg`.

mod ahead;
mod browser;
mod codecs;
mod fuzz;
mod refuse;
mod seamless;
mod support;
