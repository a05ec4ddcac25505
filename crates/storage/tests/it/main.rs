//! Integration tests of the storage crate: a real S3-protocol server (moto)
//! on loopback, a fault-injecting proxy, real files and real tar archives.
#![allow(clippy::unwrap_used, reason = "tests")]

mod archive;
mod cache;
mod local;
mod queue;
mod s3;
mod support;
