//! Coordinator integration tests: the real `coordinator` CLI driving real
//! `chunk-worker` processes over gRPC on loopback, judged by Debian's
//! ffprobe/ffmpeg.

mod batch;
mod cache;
mod deploy;
mod kit;
mod logs;
mod outputs;
mod protocol;
mod queue;
mod render;
mod s3;
mod sequences;
mod trust;
mod webhook;
