//! Integration tests of the composition crate: golden images, the reference
//! `promo`, audio mixing and decoding, the errors bad scenes get, the limits
//! of every number, hostile input and a bounded fuzzer.

mod audio;
mod audio_files;
mod blit;
mod damage;
mod errors;
mod fuzz;
mod golden;
mod hostile;
mod images;
mod limits;
mod promo;
mod text;

use std::path::{Path, PathBuf};

use composition::{CompositionSource, Props};
use timebase::FrameIndex;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The promo bundle.
pub fn promo_dir() -> PathBuf {
    root().join("examples/promo")
}

/// A temporary bundle holding `scene` (JSON) plus the promo's font and badge.
pub fn bundle_with(scene: &serde_json::Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["DejaVuSans-Bold.ttf", "badge.png", "tone.wav"] {
        std::fs::copy(promo_dir().join(f), dir.path().join(f)).expect("copy asset");
    }
    std::fs::write(
        dir.path().join("scene.json"),
        serde_json::to_string_pretty(scene).expect("json"),
    )
    .expect("write scene");
    dir
}

/// A WAV header: `format` 1 (integer PCM) or 3 (IEEE float), `bits` per
/// sample, `data_len` bytes of samples to follow.
pub fn wav_header(format: u16, channels: u16, rate: u32, bits: u16, data_len: u32) -> Vec<u8> {
    let block = channels * bits / 8;
    let mut v = Vec::with_capacity(44);
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data_len).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&format.to_le_bytes());
    v.extend_from_slice(&channels.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
    v.extend_from_slice(&block.to_le_bytes());
    v.extend_from_slice(&bits.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&data_len.to_le_bytes());
    v
}

/// Props from a JSON object.
pub fn props(v: serde_json::Value) -> Props {
    v.as_object().cloned().expect("props are an object")
}

/// Renders one frame with a fresh renderer.
pub fn render(source: &dyn CompositionSource, id: &str, props: &Props, frame: u64) -> Vec<u8> {
    let p = source
        .composition(id)
        .expect("composition")
        .prepare(props)
        .expect("prepare");
    let mut rgba = vec![0u8; p.meta().frame_bytes()];
    p.frame_renderer()
        .expect("renderer")
        .render_frame(FrameIndex(frame), &mut rgba)
        .expect("render");
    rgba
}
