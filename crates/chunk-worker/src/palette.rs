//! GIF's palette: computed once per render from frames sampled across it
//! (a worker does it for the coordinator, through `Describe`), then used by
//! every chunk to map its frames to palette indices, so all chunks share
//! one global colour table and join into one GIF.
//!
//! Both steps are integer arithmetic on the rendered RGBA, so the same
//! frames give the same palette and the same indices on every machine.

use spec::{GifPalette, MAX_GIF_COLORS};

use crate::WorkerError;

/// The most sampled frames a palette is computed from.
pub const MAX_PALETTE_FRAMES: usize = 64;

/// The most pixels NeuQuant learns from: larger samples are thinned evenly
/// (every n-th pixel), which changes the palette little and bounds the
/// time at any frame size.
const MAX_PALETTE_PIXELS: usize = 1 << 20;

/// NeuQuant's sampling factor: 1 learns from every pixel given (best; the
/// input is already thinned to [`MAX_PALETTE_PIXELS`]).
const NEUQUANT_SAMPLE_FACTOR: i32 = 1;

/// Renders composition frames `frames` of `prepared` and returns their
/// palette ([`palette_of`]).
///
/// # Errors
/// [`WorkerError::Field`] on `palette_frames` for none or more than
/// [`MAX_PALETTE_FRAMES`]; the renderer's error for a frame it cannot
/// render (one past the end included).
pub(crate) fn sample(
    prepared: &dyn composition::Prepared,
    frames: &[u64],
) -> Result<GifPalette, WorkerError> {
    if frames.is_empty() || frames.len() > MAX_PALETTE_FRAMES {
        return Err(spec::FieldError::new(
            "palette_frames",
            format!(
                "{} frames: a palette is sampled from 1-{MAX_PALETTE_FRAMES}",
                frames.len()
            ),
        )
        .into());
    }
    let mut renderer = prepared.frame_renderer()?;
    let bytes = prepared.meta().frame_bytes();
    let mut rendered = Vec::with_capacity(frames.len());
    for &f in frames {
        let mut rgba = vec![0u8; bytes];
        renderer.render_frame(timebase::FrameIndex(f), &mut rgba)?;
        rendered.push(rgba);
    }
    Ok(palette_of(&rendered)?)
}

/// The palette of `frames` (premultiplied, opaque RGBA of equal size): up
/// to 256 colours learnt by NeuQuant (`color_quant`, deterministic).
pub fn palette_of(frames: &[Vec<u8>]) -> Result<GifPalette, spec::FieldError> {
    let total: usize = frames.iter().map(|f| f.len() / 4).sum();
    let step = total.div_ceil(MAX_PALETTE_PIXELS).max(1);
    let mut pixels = Vec::with_capacity(total / step * 4 + 4);
    for (i, px) in frames.iter().flat_map(|f| f.chunks_exact(4)).enumerate() {
        if i % step == 0 {
            // Opaque: GIF frames here carry no transparency.
            pixels.extend_from_slice(&[px[0], px[1], px[2], 255]);
        }
    }
    let nq = color_quant::NeuQuant::new(NEUQUANT_SAMPLE_FACTOR, MAX_GIF_COLORS, &pixels);
    GifPalette::from_rgb(&nq.color_map_rgb())
}

/// Side of a cell of the colour lookup table: 5 bits a channel.
const CELL_SHIFT: u32 = 3;

/// A 4x4 Bayer matrix, for ordered dithering: each pixel's offset depends
/// on its position only, so a frame's indices do not depend on any other
/// pixel (or frame, or chunk).
const BAYER4: [[i16; 4]; 4] = [[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]];

/// Maps RGB to the nearest palette entry, through a 32x32x32 lookup table
/// built once per chunk, with ordered dithering of half a cell.
pub struct Quantizer {
    table: Vec<u8>,
    /// The palette as FFmpeg's PAL8 frames carry it: 256 native-endian
    /// `0xAARRGGBB` words (unused entries opaque black).
    argb: [u32; 256],
}

impl std::fmt::Debug for Quantizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quantizer").finish_non_exhaustive()
    }
}

impl Quantizer {
    /// The table for `palette`: each cell's centre mapped to the entry at
    /// the least squared RGB distance (the lowest index on a tie).
    pub fn new(palette: &GifPalette) -> Self {
        let colors = palette.colors();
        let cells = 1usize << (3 * (8 - CELL_SHIFT));
        let side = 1u32 << (8 - CELL_SHIFT);
        let half = 1i32 << (CELL_SHIFT - 1);
        let mut table = vec![0u8; cells];
        for (i, slot) in table.iter_mut().enumerate() {
            let i = i as u32;
            let c = [i / (side * side), (i / side) % side, i % side]
                .map(|v| ((v << CELL_SHIFT) as i32) + half);
            let mut best = (i32::MAX, 0usize);
            for (k, p) in colors.iter().enumerate() {
                let d: i32 = (0..3).map(|j| (c[j] - i32::from(p[j])).pow(2)).sum();
                if d < best.0 {
                    best = (d, k);
                }
            }
            *slot = best.1 as u8;
        }
        let mut argb = [0xff00_0000u32; 256];
        for (slot, p) in argb.iter_mut().zip(colors) {
            *slot = 0xff00_0000 | u32::from(p[0]) << 16 | u32::from(p[1]) << 8 | u32::from(p[2]);
        }
        Quantizer { table, argb }
    }

    /// The palette words for a PAL8 frame's second plane.
    pub fn argb(&self) -> &[u32; 256] {
        &self.argb
    }

    /// The index of pixel `px` (RGBA) at column `x`, row `y`.
    pub fn index(&self, px: &[u8], x: usize, y: usize) -> u8 {
        // The Bayer value (0-15) as an offset of -4..+3.5 within an 8-wide
        // cell, in halves.
        let d = BAYER4[y & 3][x & 3] - 8;
        let ch = |v: u8| -> usize {
            let v = (i16::from(v) * 2 + d).clamp(0, 511) / 2;
            (v as usize) >> CELL_SHIFT
        };
        let bits = 8 - CELL_SHIFT;
        self.table[(ch(px[0]) << (2 * bits)) | (ch(px[1]) << bits) | ch(px[2])]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_colours_map_to_themselves() {
        let colors = vec![
            [0, 0, 0],
            [255, 0, 0],
            [0, 255, 0],
            [0, 0, 255],
            [255, 255, 255],
        ];
        let q = Quantizer::new(&GifPalette::new(colors.clone()).expect("palette"));
        for (k, c) in colors.iter().enumerate() {
            for (x, y) in [(0, 0), (1, 2), (3, 3)] {
                assert_eq!(q.index(&[c[0], c[1], c[2], 255], x, y), k as u8, "{c:?}");
            }
        }
        assert_eq!(q.argb()[1], 0xffff_0000);
    }

    #[test]
    fn the_palette_of_two_colours_holds_both() {
        let frame: Vec<u8> = (0..64 * 64)
            .flat_map(|i| {
                if i % 2 == 0 {
                    [250, 10, 10, 255]
                } else {
                    [10, 10, 250, 255]
                }
            })
            .collect();
        let p = palette_of(&[frame.clone(), frame]).expect("palette");
        assert_eq!(p.colors().len(), 256);
        let near = |c: [u8; 3]| {
            p.colors()
                .iter()
                .any(|q| (0..3).all(|j| q[j].abs_diff(c[j]) <= 8))
        };
        assert!(
            near([250, 10, 10]) && near([10, 10, 250]),
            "{:?}",
            &p.colors()[..8]
        );
    }
}
