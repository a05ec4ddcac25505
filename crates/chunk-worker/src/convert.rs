//! RGBA → YUV in integer arithmetic: the BT.709 matrix, limited ("tv")
//! range, 4:2:0 or 4:4:4.
//!
//! Integer maths gives the same bytes whatever instructions the compiler
//! picks, so one plain Rust loop, compiled twice (for the baseline x86-64
//! instruction set and again with AVX2, chosen at run time), gives the same
//! output on every machine; the tests compare the two. The loops are written
//! so that LLVM vectorises them (no branches, fixed-width integer lanes).
//!
//! Definitions (ITU-R BT.709-6 table 3, with the 8-bit limited-range
//! quantisation of its item 3.4): with `Kr = 0.2126`, `Kb = 0.0722`,
//! `Kg = 1 − Kr − Kb` and `R, G, B` in 0-255,
//! - `Y  = 16  + 219/255 · (Kr·R + Kg·G + Kb·B)`
//! - `Cb = 128 + 224/255 · (B − Y′) / (2 − 2·Kb)`
//! - `Cr = 128 + 224/255 · (R − Y′) / (2 − 2·Kr)`
//!
//! each coefficient in 16-bit fixed point, rounded to nearest. For 4:2:0 a
//! chroma sample is taken from the two pixels of its column pair (MPEG-2 /
//! H.264 "left" siting, averaged as swscale does for RGB input) and from
//! four rows with weights 1, 3, 3, 1 (a bilinear 2:1 filter centred between
//! rows `2j` and `2j + 1`, the top and bottom rows repeated at the edges):
//! the same sampling as FFmpeg's swscale with `SWS_BILINEAR`, whose output
//! this is within ±1 of.

/// Fixed-point precision of the matrix coefficients.
const SHIFT: u32 = 16;

/// `Y` coefficients: `219/255 · K · 2^16`, rounded. They add up to
/// `219/255 · 2^16` rounded, so white is exactly 235.
const Y_R: i32 = 11966;
const Y_G: i32 = 40254;
const Y_B: i32 = 4064;
/// 16 in fixed point, plus one half for rounding.
const Y_OFFSET: i32 = (16 << SHIFT) + (1 << (SHIFT - 1));

/// `Cb` coefficients: `224/255 · (−Kr, −Kg, 1 − Kb) / (2 − 2·Kb) · 2^16`,
/// rounded, the green one adjusted so they add up to 0 (grey is exactly 128).
const U_R: i32 = -6596;
const U_G: i32 = -22188;
const U_B: i32 = 28784;
/// `Cr` coefficients, likewise.
const V_R: i32 = 28784;
const V_G: i32 = -26145;
const V_B: i32 = -2639;

/// 4:2:0 chroma weights of the four rows around a chroma sample, and the
/// log2 of everything a 4:2:0 chroma sample sums: 2 columns × (1+3+3+1).
const CHROMA_ROWS: [i32; 4] = [1, 3, 3, 1];
const CHROMA_420_LOG2: u32 = 4;

/// 128 in fixed point, plus one half, for a sum scaled by `2^extra`.
const fn chroma_offset(extra: u32) -> i32 {
    (128 << (SHIFT + extra)) + (1 << (SHIFT + extra - 1))
}

/// Where converted rows go: plane 0 (Y), 1 (Cb) or 2 (Cr), row `y`.
pub(crate) trait Planes {
    /// The picture bytes of row `y` of `plane` (its width in samples). The
    /// row's padding up to the next row must be zeroed by the time this
    /// returns, so that no byte of the frame is left as the allocator
    /// found it.
    fn row(&mut self, plane: usize, y: usize) -> &mut [u8];
}

/// Which compiled copy of the loops runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// The baseline instruction set of the target.
    Baseline,
    /// x86-64 with AVX2 (only when the CPU has it).
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Isa {
    /// The best this CPU runs.
    pub(crate) fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Isa::Avx2;
        }
        Isa::Baseline
    }
}

/// Scratch rows a conversion reuses: per channel, the column-pair sums of
/// the last four RGBA rows (4:2:0), and one chroma row.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pairs: Vec<u16>,
}

/// Converts `rgba` (`width · height` opaque pixels, rows `width · 4` bytes
/// apart) into 4:2:0 planes (`width` and `height` even). Every byte of the
/// planes' rows, padding included, is written.
pub(crate) fn rgba_to_yuv420(
    isa: Isa,
    rgba: &[u8],
    width: usize,
    height: usize,
    planes: &mut impl Planes,
    scratch: &mut Scratch,
) {
    match isa {
        Isa::Baseline => yuv420(rgba, width, height, planes, scratch),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            #[allow(unsafe_code)] // a target_feature function; see SAFETY
            // SAFETY: `Isa::Avx2` is only made by `Isa::detect` on a CPU
            // that has AVX2 (and by tests after the same check).
            unsafe {
                avx2::yuv420(rgba, width, height, planes, scratch)
            }
        }
    }
}

/// Converts `rgba` into 4:4:4 planes, as [`rgba_to_yuv420`].
pub(crate) fn rgba_to_yuv444(
    isa: Isa,
    rgba: &[u8],
    width: usize,
    height: usize,
    planes: &mut impl Planes,
) {
    match isa {
        Isa::Baseline => yuv444(rgba, width, height, planes),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            #[allow(unsafe_code)] // a target_feature function; see SAFETY
            // SAFETY: as in `rgba_to_yuv420`.
            unsafe {
                avx2::yuv444(rgba, width, height, planes)
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Planes, Scratch};

    #[target_feature(enable = "avx2")]
    pub(super) fn yuv420(
        rgba: &[u8],
        width: usize,
        height: usize,
        planes: &mut impl Planes,
        scratch: &mut Scratch,
    ) {
        super::yuv420(rgba, width, height, planes, scratch);
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn yuv444(rgba: &[u8], width: usize, height: usize, planes: &mut impl Planes) {
        super::yuv444(rgba, width, height, planes);
    }
}

#[inline(always)]
fn luma_row(src: &[u8], dst: &mut [u8]) {
    for (px, y) in src.chunks_exact(4).zip(dst.iter_mut()) {
        let (r, g, b) = (i32::from(px[0]), i32::from(px[1]), i32::from(px[2]));
        // In 16..=235: the coefficients are positive and add up to 219/255.
        *y = ((Y_R * r + Y_G * g + Y_B * b + Y_OFFSET) >> SHIFT) as u8;
    }
}

/// One chroma row of 4:4:4: `coef` applied to each pixel.
#[inline(always)]
fn chroma_row_444(src: &[u8], dst: &mut [u8], coef: [i32; 3]) {
    let offset = chroma_offset(0);
    for (px, c) in src.chunks_exact(4).zip(dst.iter_mut()) {
        let (r, g, b) = (i32::from(px[0]), i32::from(px[1]), i32::from(px[2]));
        // In 16..=240: the coefficients add up to 0 and their positive part
        // is 224/255 · 1/2.
        *c = ((coef[0] * r + coef[1] * g + coef[2] * b + offset) >> SHIFT) as u8;
    }
}

#[inline(always)]
fn yuv444(rgba: &[u8], width: usize, height: usize, planes: &mut impl Planes) {
    for (row, src) in rgba.chunks_exact(width * 4).take(height).enumerate() {
        luma_row(src, planes.row(0, row));
        chroma_row_444(src, planes.row(1, row), [U_R, U_G, U_B]);
        chroma_row_444(src, planes.row(2, row), [V_R, V_G, V_B]);
    }
}

/// The sums of each column pair's R, G and B of one RGBA row.
#[inline(always)]
fn pair_sums(src: &[u8], r: &mut [u16], g: &mut [u16], b: &mut [u16]) {
    for (((px, r), g), b) in src
        .chunks_exact(8)
        .zip(r.iter_mut())
        .zip(g.iter_mut())
        .zip(b.iter_mut())
    {
        *r = u16::from(px[0]) + u16::from(px[4]);
        *g = u16::from(px[1]) + u16::from(px[5]);
        *b = u16::from(px[2]) + u16::from(px[6]);
    }
}

/// One 4:2:0 chroma row from the pair sums of its four rows (`[channel][row]`).
#[inline(always)]
fn chroma_row_420(rows: [[&[u16]; 4]; 3], dst: &mut [u8], coef: [i32; 3]) {
    let offset = chroma_offset(CHROMA_420_LOG2);
    let [w0, w1, w2, w3] = CHROMA_ROWS;
    let [[r0, r1, r2, r3], [g0, g1, g2, g3], [b0, b1, b2, b3]] = rows;
    let n = dst.len();
    let (r0, r1, r2, r3) = (&r0[..n], &r1[..n], &r2[..n], &r3[..n]);
    let (g0, g1, g2, g3) = (&g0[..n], &g1[..n], &g2[..n], &g3[..n]);
    let (b0, b1, b2, b3) = (&b0[..n], &b1[..n], &b2[..n], &b3[..n]);
    for i in 0..n {
        let r = w0 * i32::from(r0[i])
            + w1 * i32::from(r1[i])
            + w2 * i32::from(r2[i])
            + w3 * i32::from(r3[i]);
        let g = w0 * i32::from(g0[i])
            + w1 * i32::from(g1[i])
            + w2 * i32::from(g2[i])
            + w3 * i32::from(g3[i]);
        let b = w0 * i32::from(b0[i])
            + w1 * i32::from(b1[i])
            + w2 * i32::from(b2[i])
            + w3 * i32::from(b3[i]);
        // In 16..=240 as in `chroma_row_444`, the sum being 16 pixels'.
        dst[i] =
            ((coef[0] * r + coef[1] * g + coef[2] * b + offset) >> (SHIFT + CHROMA_420_LOG2)) as u8;
    }
}

#[inline(always)]
fn yuv420(
    rgba: &[u8],
    width: usize,
    height: usize,
    planes: &mut impl Planes,
    scratch: &mut Scratch,
) {
    let cw = width / 2;
    let row_bytes = width * 4;
    // Ring of the last 4 rows' pair sums: [row % 4][channel][column].
    scratch.pairs.resize(4 * 3 * cw, 0);
    let mut done = 0;
    for j in 0..height / 2 {
        // Rows 2j-1 ..= 2j+2, the edges repeated.
        let rows = [
            (2 * j).saturating_sub(1),
            2 * j,
            2 * j + 1,
            (2 * j + 2).min(height - 1),
        ];
        while done <= rows[3] {
            let src = &rgba[done * row_bytes..(done + 1) * row_bytes];
            luma_row(src, planes.row(0, done));
            let slot = &mut scratch.pairs[(done % 4) * 3 * cw..(done % 4 + 1) * 3 * cw];
            let (r, gb) = slot.split_at_mut(cw);
            let (g, b) = gb.split_at_mut(cw);
            pair_sums(src, r, g, b);
            done += 1;
        }
        let pairs = &scratch.pairs;
        let channel = |c: usize| {
            rows.map(|row| {
                let at = (row % 4) * 3 * cw + c * cw;
                &pairs[at..at + cw]
            })
        };
        let sums = [channel(0), channel(1), channel(2)];
        chroma_row_420(sums, planes.row(1, j), [U_R, U_G, U_B]);
        chroma_row_420(sums, planes.row(2, j), [V_R, V_G, V_B]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_f64(c: i32) -> f64 {
        f64::from(c) / f64::from(1 << SHIFT)
    }

    #[test]
    fn coefficients_are_bt709_limited_range_rounded() {
        let (kr, kb) = (0.2126, 0.0722);
        let kg = 1.0 - kr - kb;
        let (ys, cs) = (219.0 / 255.0, 224.0 / 255.0);
        let one = f64::from(1 << SHIFT);
        let near = |c: i32, x: f64| (f64::from(c) - x * one).abs() <= 1.0;
        assert!(near(Y_R, ys * kr) && near(Y_G, ys * kg) && near(Y_B, ys * kb));
        let cb = cs / (2.0 - 2.0 * kb);
        let cr = cs / (2.0 - 2.0 * kr);
        assert!(near(U_R, -kr * cb) && near(U_G, -kg * cb) && near(U_B, (1.0 - kb) * cb));
        assert!(near(V_R, (1.0 - kr) * cr) && near(V_G, -kg * cr) && near(V_B, -kb * cr));
        assert_eq!(U_R + U_G + U_B, 0);
        assert_eq!(V_R + V_G + V_B, 0);
        assert!((to_f64(Y_R + Y_G + Y_B) - ys).abs() < 1.0 / one);
    }

    /// Planes in vectors, rows padded and filled with garbage beforehand.
    struct Padded {
        planes: [(Vec<u8>, usize, usize); 3],
    }

    impl Planes for Padded {
        fn row(&mut self, plane: usize, y: usize) -> &mut [u8] {
            let (data, stride, width) = &mut self.planes[plane];
            let row = &mut data[y * *stride..(y + 1) * *stride];
            row[*width..].fill(0);
            &mut row[..*width]
        }
    }

    /// Converts one frame on `isa`; returns the packed planes.
    fn convert(isa: Isa, rgba: &[u8], w: usize, h: usize, chroma_420: bool) -> Vec<u8> {
        let (cw, ch) = if chroma_420 { (w / 2, h / 2) } else { (w, h) };
        // Strides with padding, filled with garbage that must be overwritten.
        let (ys, cs) = (w + 7, cw + 5);
        let mut planes = Padded {
            planes: [
                (vec![0xAA; ys * h], ys, w),
                (vec![0xAA; cs * ch], cs, cw),
                (vec![0xAA; cs * ch], cs, cw),
            ],
        };
        if chroma_420 {
            rgba_to_yuv420(isa, rgba, w, h, &mut planes, &mut Scratch::default());
        } else {
            rgba_to_yuv444(isa, rgba, w, h, &mut planes);
        }
        let mut out = Vec::new();
        for (plane, stride, width) in &planes.planes {
            for row in plane.chunks_exact(*stride) {
                assert!(row[*width..].iter().all(|&b| b == 0), "padding is zeroed");
                out.extend_from_slice(&row[..*width]);
            }
        }
        out
    }

    /// Pseudo-random opaque RGBA (xorshift), every value reachable.
    fn noise(w: usize, h: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        (0..w * h * 4)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                if i % 4 == 3 { 255 } else { (s >> 24) as u8 }
            })
            .collect()
    }

    #[test]
    fn primaries_land_on_their_limited_range_values() {
        // (R, G, B) → (Y, Cb, Cr), rounded from the real-valued formulas.
        let cases: [([u8; 3], [u8; 3]); 5] = [
            ([0, 0, 0], [16, 128, 128]),
            ([255, 255, 255], [235, 128, 128]),
            ([255, 0, 0], [63, 102, 240]),
            ([0, 255, 0], [173, 42, 26]),
            ([0, 0, 255], [32, 240, 118]),
        ];
        for (rgb, want) in cases {
            let rgba: Vec<u8> = (0..4).flat_map(|_| [rgb[0], rgb[1], rgb[2], 255]).collect();
            for chroma_420 in [true, false] {
                let out = convert(Isa::Baseline, &rgba, 2, 2, chroma_420);
                let n = if chroma_420 { 1 } else { 4 };
                assert_eq!(&out[..4], &[want[0]; 4], "{rgb:?} Y");
                assert_eq!(&out[4..4 + n], &vec![want[1]; n][..], "{rgb:?} Cb");
                assert_eq!(&out[4 + n..], &vec![want[2]; n][..], "{rgb:?} Cr");
            }
        }
    }

    #[test]
    fn every_instruction_set_gives_the_same_bytes() {
        let isa = Isa::detect();
        if isa == Isa::Baseline {
            // Nothing to compare on this CPU: the baseline is the only path.
            return;
        }
        for (w, h) in [(64, 36), (322, 182), (2, 2)] {
            let rgba = noise(w, h, (w * h) as u64);
            for chroma_420 in [true, false] {
                assert_eq!(
                    convert(Isa::Baseline, &rgba, w, h, chroma_420),
                    convert(isa, &rgba, w, h, chroma_420),
                    "{w}x{h}, 4:2:0 {chroma_420}"
                );
            }
        }
    }
}
