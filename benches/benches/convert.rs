//! RGBA→YUV conversion as the worker does it before encoding
//! ([`chunk_worker::FrameConverter`]: integer maths, BT.709 limited range,
//! the same bytes on every instruction set), per frame of the promo at 1920x1080 and 1280x720 to `yuv420p`,
//! and at 1080p to `yuv444p` (the lossless settings). The input is a real
//! promo frame, rendered once into the converter's buffer.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::hint::black_box;

use chunk_worker::{FrameConverter, PixelFormat};
use composition::scene::SceneBundle;
use composition::{CompositionSource, Props};
use criterion::{Criterion, criterion_group, criterion_main};
use timebase::FrameIndex;

fn converter(width: u32, height: u32, format: PixelFormat) -> FrameConverter {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = montage_benches::resized_promo(dir.path(), "promo", width, height, 300)
        .expect("resized promo");
    let prepared = SceneBundle::open(&bundle)
        .expect("promo bundle opens")
        .composition("promo")
        .expect("promo")
        .prepare(&Props::new())
        .expect("prepare");
    let mut conv = FrameConverter::new(width, height, format).expect("converter");
    prepared
        .frame_renderer()
        .expect("renderer")
        .render_frame(FrameIndex(150), conv.rgba_mut())
        .expect("frame renders");
    conv
}

fn conversion(c: &mut Criterion) {
    for (width, height, format, name) in [
        (1920, 1080, PixelFormat::Yuv420p, "yuv420p"),
        (1280, 720, PixelFormat::Yuv420p, "yuv420p"),
        (1920, 1080, PixelFormat::Yuv444p, "yuv444p"),
    ] {
        let mut conv = converter(width, height, format);
        c.bench_function(&format!("rgba to {name} {width}x{height}"), |b| {
            b.iter(|| black_box(conv.convert().expect("converts")))
        });
    }
}

criterion_group!(benches, conversion);
criterion_main!(benches);
