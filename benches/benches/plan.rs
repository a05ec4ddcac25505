//! Chunk planning cost: a planner call must be negligible next to rendering.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use chunker::{ChunkSpec, PlanRequest, plan};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use timebase::Fps;

fn planning(c: &mut Criterion) {
    let ntsc = Fps::new(30_000, 1001).expect("valid fps");
    c.bench_function("plan 1h at 29.97 into 16 chunks", |b| {
        b.iter(|| {
            plan(black_box(&PlanRequest::new(
                107_892,
                ntsc,
                ChunkSpec::Count(16),
            )))
        })
    });
    c.bench_function("plan 1h at 29.97 into 1-frame chunks", |b| {
        b.iter(|| {
            plan(black_box(&PlanRequest::new(
                107_892,
                ntsc,
                ChunkSpec::FramesPerChunk(1),
            )))
        })
    });
}

criterion_group!(benches, planning);
criterion_main!(benches);
