//! Integration tests of the chunk worker: the real `chunk-worker` binary on
//! 127.0.0.1, real gRPC, Debian's `ffprobe`/`ffmpeg` as judges, and the
//! real moto S3 server (`testkit`).

mod chunks;
mod kit;
mod library;
mod memory;
mod metrics;
mod object_storage;
mod service;
mod sinks;
mod trust;
mod video;
