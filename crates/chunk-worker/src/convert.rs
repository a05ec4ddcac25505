//! RGBA → YUV in integer arithmetic: the BT.709 matrix, limited ("tv")
//! range, 4:2:0 or 4:4:4.
//!
//! Integer maths gives the same bytes whatever instructions compute it, so
//! the plain Rust loops here (the reference, and what other CPUs run) and
//! the AVX2 intrinsics of `mod avx2` (chosen at run time on x86-64: about
//! 5x faster, under 1 ms of CPU per 1080p 4:2:0 frame) give the same output
//! on every machine; the tests compare the two byte for byte and pin the
//! bytes with a golden hash.
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

/// Scratch rows a conversion reuses between frames.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// Baseline 4:2:0: per channel, the column-pair sums of the last four
    /// RGBA rows.
    pairs: Vec<u16>,
    /// AVX2 4:2:0: the same sums of the last four rows, interleaved.
    #[cfg(target_arch = "x86_64")]
    quads: Vec<std::arch::x86_64::__m256i>,
    /// Chroma rows computed before their plane's row is borrowed (a
    /// [`Planes`] lends one row at a time).
    chroma: Vec<u8>,
}

/// A rectangle of an RGBA frame: columns `x0..x1`, rows `y0..y1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Area {
    /// First column.
    pub(crate) x0: usize,
    /// First row.
    pub(crate) y0: usize,
    /// One past the last column.
    pub(crate) x1: usize,
    /// One past the last row.
    pub(crate) y1: usize,
}

impl Area {
    /// The whole `width × height` frame.
    pub(crate) fn whole(width: usize, height: usize) -> Area {
        Area {
            x0: 0,
            y0: 0,
            x1: width,
            y1: height,
        }
    }

    /// This area within a `width × height` frame, if any of it is.
    pub(crate) fn clipped(self, width: usize, height: usize) -> Option<Area> {
        let a = Area {
            x0: self.x0.min(width),
            y0: self.y0.min(height),
            x1: self.x1.min(width),
            y1: self.y1.min(height),
        };
        (a.x0 < a.x1 && a.y0 < a.y1).then_some(a)
    }

    /// The 4:2:0 samples that depend on a pixel of this area (non-empty,
    /// within a frame of even `height`): the column pairs `cx0..cx1` it
    /// touches, and the chroma rows `j0..j1` whose four source rows
    /// (`chroma_source_rows`: `2j − 1 ..= 2j + 2`) meet rows `y0..y1`.
    fn chroma_420(self, height: usize) -> (usize, usize, usize, usize) {
        let (cx0, cx1) = (self.x0 / 2, self.x1.div_ceil(2));
        // Row 2j + 2 ≥ y0, and row 2j − 1 ≤ y1 − 1.
        let j0 = self.y0.saturating_sub(1) / 2;
        let j1 = (self.y1 / 2 + 1).min(height / 2);
        (cx0, cx1, j0, j1)
    }
}

/// Which chroma resolution a conversion writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chroma {
    /// 4:2:0: half the width and half the height (both even).
    Yuv420,
    /// 4:4:4: a chroma sample per pixel.
    Yuv444,
}

/// Converts `rgba` (`width · height` opaque pixels, rows `width · 4` bytes
/// apart) into `chroma` planes, the samples that depend on a pixel of
/// `area` (clipped to the frame; [`Area::whole`] for the whole frame),
/// and maybe a few more. Every byte of the rows written, padding included,
/// is written; the other samples are left as they are, so when the planes
/// hold the conversion of a frame that differs from `rgba` only inside
/// `area`, they then hold exactly `rgba`'s conversion.
///
/// A 4:4:4 sample depends on its own pixel. A 4:2:0 chroma sample reads
/// its column pair and four rows, so the columns are widened to whole
/// pairs and the rows to every chroma row whose filter reaches into `area`
/// (and the luma of those rows is written too).
pub(crate) fn rgba_to_yuv(
    isa: Isa,
    chroma: Chroma,
    rgba: &[u8],
    (width, height): (usize, usize),
    area: Area,
    planes: &mut impl Planes,
    scratch: &mut Scratch,
) {
    let Some(area) = area.clipped(width, height) else {
        return;
    };
    match (isa, chroma) {
        (Isa::Baseline, Chroma::Yuv420) => yuv420(rgba, width, height, area, planes, scratch),
        (Isa::Baseline, Chroma::Yuv444) => yuv444(rgba, width, area, planes),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, chroma) => {
            #[allow(unsafe_code)] // target_feature functions; see SAFETY
            // SAFETY: `Isa::Avx2` is only made by `Isa::detect` on a CPU
            // that has AVX2 (and by tests after the same check).
            unsafe {
                match chroma {
                    Chroma::Yuv420 => avx2::yuv420(rgba, width, height, area, planes, scratch),
                    Chroma::Yuv444 => avx2::yuv444(rgba, width, area, planes, scratch),
                }
            }
        }
    }
}

/// The four RGBA rows whose pair sums make 4:2:0 chroma row `j`: rows
/// `2j − 1 ..= 2j + 2`, the top and bottom rows repeated at the edges.
fn chroma_source_rows(j: usize, height: usize) -> [usize; 4] {
    [
        (2 * j).saturating_sub(1),
        2 * j,
        2 * j + 1,
        (2 * j + 2).min(height - 1),
    ]
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

/// The reference 4:4:4 conversion of `area` (within the frame), one plain
/// loop per plane.
fn yuv444(rgba: &[u8], width: usize, area: Area, planes: &mut impl Planes) {
    let (x0, x1) = (area.x0, area.x1);
    for row in area.y0..area.y1 {
        let src = &rgba[(row * width + x0) * 4..(row * width + x1) * 4];
        luma_row(src, &mut planes.row(0, row)[x0..x1]);
        chroma_row_444(src, &mut planes.row(1, row)[x0..x1], [U_R, U_G, U_B]);
        chroma_row_444(src, &mut planes.row(2, row)[x0..x1], [V_R, V_G, V_B]);
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

/// The reference 4:2:0 conversion of the samples that depend on `area`
/// (within the frame; see [`rgba_to_yuv`]): every RGBA row is read
/// once for its luma and its column-pair sums (kept for the next chroma
/// rows in a ring of 4).
fn yuv420(
    rgba: &[u8],
    width: usize,
    height: usize,
    area: Area,
    planes: &mut impl Planes,
    scratch: &mut Scratch,
) {
    let (cx0, cx1, j0, j1) = area.chroma_420(height);
    let cw = cx1 - cx0;
    let row_bytes = width * 4;
    // Ring of the last 4 rows' pair sums: [row % 4][channel][column].
    scratch.pairs.resize(4 * 3 * cw, 0);
    let mut done = chroma_source_rows(j0, height)[0];
    for j in j0..j1 {
        let rows = chroma_source_rows(j, height);
        while done <= rows[3] {
            let src = &rgba[done * row_bytes + cx0 * 8..done * row_bytes + cx1 * 8];
            luma_row(src, &mut planes.row(0, done)[2 * cx0..2 * cx1]);
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
        chroma_row_420(sums, &mut planes.row(1, j)[cx0..cx1], [U_R, U_G, U_B]);
        chroma_row_420(sums, &mut planes.row(2, j)[cx0..cx1], [V_R, V_G, V_B]);
    }
}

/// The same arithmetic in AVX2 intrinsics, 32 pixels at a time.
///
/// Every product and sum is exact in its lanes (bounds at each step below),
/// so the bytes are the reference's; the tests compare the two on every
/// width class, edge values and noise.
///
/// - Pixels are spread to 16-bit lanes by byte shuffles as the pairs
///   `(R, G)` and `(B, G)`, and `_mm256_madd_epi16` forms
///   `c0·R + c1·G` and `c2·B + c3·G` in 32-bit lanes. `Y_G` does not fit in
///   an i16, so luma takes half of it from each pair.
/// - 4:2:0 column-pair sums come from one shuffle (`R0 R1 G0 G1 B0 B1 A0 A1`)
///   and `_mm256_maddubs_epi16` by ones: `(ΣR, ΣG, ΣB, ΣA)` per pair in
///   16-bit lanes (≤ 510), kept per row in a ring of 4 rows. The vertical
///   1, 3, 3, 1 filter of four such rows stays in 16 bits (≤ 8 · 510),
///   then one `madd` by `(c0, c1, c2, 0)` and a horizontal add give the
///   chroma sum of each pair in 32 bits.
/// - Results (16..=240) are packed to bytes with saturating packs that
///   never saturate, and the lane order is restored by permutes.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _MM_HINT_T0, _mm_prefetch, _mm256_add_epi16, _mm256_add_epi32,
        _mm256_castsi256_si128, _mm256_extracti128_si256, _mm256_hadd_epi32, _mm256_madd_epi16,
        _mm256_maddubs_epi16, _mm256_packs_epi32, _mm256_packus_epi16, _mm256_permute4x64_epi64,
        _mm256_permutevar8x32_epi32, _mm256_set1_epi8, _mm256_set1_epi32, _mm256_set1_epi64x,
        _mm256_setr_epi8, _mm256_setr_epi32, _mm256_setzero_si256, _mm256_shuffle_epi8,
        _mm256_srai_epi32,
    };

    use crate::simd::{load, store, store_half};

    use super::{
        Area, CHROMA_420_LOG2, CHROMA_ROWS, Planes, SHIFT, Scratch, U_B, U_G, U_R, V_B, V_G, V_R,
        Y_B, Y_G, Y_OFFSET, Y_R, chroma_offset, chroma_source_rows,
    };

    /// Pixels per block: four registers of RGBA.
    const BLOCK: usize = 32;
    /// Column pairs per block; their sums fill `BLOCK_QUADS` registers.
    const BLOCK_PAIRS: usize = BLOCK / 2;
    const BLOCK_QUADS: usize = 4;
    /// How far ahead of the block being converted the RGBA rows are
    /// requested into the cache: at 1080p on a busy 2-core machine the
    /// conversion took 0.8-0.9 ms instead of 1.25-1.5 ms with it (the
    /// hardware prefetcher alone does not run far enough ahead).
    const PREFETCH_AHEAD: usize = 4096;

    // The kernels below rely on these: the luma split of `Y_G` and the
    // 1, 3, 3, 1 filter computed as `(r0 + r3) + 3 · (r1 + r2)`.
    const _: () = assert!(Y_G % 2 == 0 && Y_G / 2 <= i16::MAX as i32);
    const _: () = assert!(matches!(CHROMA_ROWS, [1, 3, 3, 1]));

    /// Asks for the bytes `PREFETCH_AHEAD` past `block` into the cache.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn prefetch(block: &[u8; 4 * BLOCK]) {
        // A hint (a safe intrinsic): it never faults, whatever the address,
        // so past the frame's end is fine; `wrapping_add` makes the address
        // without claiming it is in bounds.
        let ahead = block.as_ptr().wrapping_add(PREFETCH_AHEAD);
        _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64).cast());
    }

    /// The coefficients one `madd` applies to the `(R, G)` lanes and one to
    /// the `(B, G)` lanes (see `spread`).
    #[derive(Clone, Copy)]
    struct Coefs {
        rg: __m256i,
        bg: __m256i,
        offset: __m256i,
    }

    impl Coefs {
        /// `c[0]·R + c[1]·G + c[2]·B + offset`, `c[1]` split in two halves
        /// (`G` is in both lane pairs).
        #[inline]
        #[target_feature(enable = "avx2")]
        fn new(c: [i32; 3], g_halves: bool, offset: i32) -> Coefs {
            // Two 16-bit coefficients (lo, hi) in every 32-bit lane; all
            // fit in an i16 (`Y_G` only as halves, asserted above).
            let pair = |lo: i32, hi: i32| _mm256_set1_epi32((lo & 0xFFFF) | (hi << 16));
            let (g_rg, g_bg) = if g_halves {
                (c[1] / 2, c[1] / 2)
            } else {
                (c[1], 0)
            };
            Coefs {
                rg: pair(c[0], g_rg),
                bg: pair(c[2], g_bg),
                offset: _mm256_set1_epi32(offset),
            }
        }

        /// The sums of 8 pixels shifted right by `SHIFT`, in 32-bit lanes,
        /// from their `spread` lanes. Exact: each `madd` is at most
        /// 255 · (|c0| + |c1|) ≤ 255 · 32093.
        #[inline]
        #[target_feature(enable = "avx2")]
        fn apply(self, (rg, bg): (__m256i, __m256i)) -> __m256i {
            let sum = _mm256_add_epi32(
                _mm256_madd_epi16(rg, self.rg),
                _mm256_madd_epi16(bg, self.bg),
            );
            _mm256_srai_epi32::<{ SHIFT as i32 }>(_mm256_add_epi32(sum, self.offset))
        }
    }

    /// The `(R, G)` and `(B, G)` 16-bit lanes of 8 RGBA pixels.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn spread(px: __m256i) -> (__m256i, __m256i) {
        const Z: i8 = -1; // a shuffle index with the top bit set gives 0
        #[rustfmt::skip]
        let rg = _mm256_setr_epi8(
            0, Z, 1, Z, 4, Z, 5, Z, 8, Z, 9, Z, 12, Z, 13, Z,
            0, Z, 1, Z, 4, Z, 5, Z, 8, Z, 9, Z, 12, Z, 13, Z,
        );
        #[rustfmt::skip]
        let bg = _mm256_setr_epi8(
            2, Z, 1, Z, 6, Z, 5, Z, 10, Z, 9, Z, 14, Z, 13, Z,
            2, Z, 1, Z, 6, Z, 5, Z, 10, Z, 9, Z, 14, Z, 13, Z,
        );
        (_mm256_shuffle_epi8(px, rg), _mm256_shuffle_epi8(px, bg))
    }

    /// The column-pair sums `(ΣR, ΣG, ΣB, ΣA)` of 8 RGBA pixels in 16-bit
    /// lanes (≤ 510).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn pair_sums(px: __m256i) -> __m256i {
        #[rustfmt::skip]
        let order = _mm256_setr_epi8(
            0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15,
            0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15,
        );
        _mm256_maddubs_epi16(_mm256_shuffle_epi8(px, order), _mm256_set1_epi8(1))
    }

    /// Four registers of 8 results each (in 0..=255) as 32 bytes in order.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn pack(v0: __m256i, v1: __m256i, v2: __m256i, v3: __m256i) -> __m256i {
        // packs/packus interleave their inputs per 128-bit lane: the bytes
        // come out as 4-byte groups 0a 1a 2a 3a | 0b 1b 2b 3b.
        let bytes = _mm256_packus_epi16(_mm256_packs_epi32(v0, v1), _mm256_packs_epi32(v2, v3));
        _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }

    /// The four registers of a block of 32 RGBA pixels.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn load_block(px: &[u8; 4 * BLOCK]) -> [__m256i; 4] {
        let (regs, _) = px.as_chunks::<32>();
        [
            load(&regs[0]),
            load(&regs[1]),
            load(&regs[2]),
            load(&regs[3]),
        ]
    }

    /// Luma of 32 pixels into `y`, and their 16 column-pair sums into
    /// `quads`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn luma_block(px: &[u8; 4 * BLOCK], y: &mut [u8; BLOCK], quads: &mut [__m256i; BLOCK_QUADS]) {
        let c = Coefs::new([Y_R, Y_G, Y_B], true, Y_OFFSET);
        let [p0, p1, p2, p3] = load_block(px);
        let l0 = c.apply(spread(p0));
        let l1 = c.apply(spread(p1));
        let l2 = c.apply(spread(p2));
        let l3 = c.apply(spread(p3));
        store(y, pack(l0, l1, l2, l3));
        *quads = [pair_sums(p0), pair_sums(p1), pair_sums(p2), pair_sums(p3)];
    }

    /// Luma and, in the same pass, the column-pair sums of one RGBA row
    /// (`quads`: `BLOCK_QUADS` registers per started block).
    #[target_feature(enable = "avx2")]
    fn luma_row(src: &[u8], y: &mut [u8], quads: &mut [__m256i]) {
        let (blocks, tail) = src.as_chunks::<{ 4 * BLOCK }>();
        let (ys, _) = y.as_chunks_mut::<BLOCK>();
        let (qs, _) = quads.as_chunks_mut::<BLOCK_QUADS>();
        for ((px, y), q) in blocks.iter().zip(ys).zip(qs.iter_mut()) {
            prefetch(px);
            luma_block(px, y, q);
        }
        if let Some(q) = qs.get_mut(blocks.len()).filter(|_| !tail.is_empty()) {
            // The last pixels, zero-padded to a block: the lanes are
            // independent, so the padding changes none of them.
            let mut px = [0; 4 * BLOCK];
            px[..tail.len()].copy_from_slice(tail);
            let mut out = [0; BLOCK];
            luma_block(&px, &mut out, q);
            let n = tail.len() / 4;
            y[blocks.len() * BLOCK..][..n].copy_from_slice(&out[..n]);
        }
    }

    /// Luma, Cb and Cr of 32 pixels.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn block_444(
        px: &[u8; 4 * BLOCK],
        y: &mut [u8; BLOCK],
        u: &mut [u8; BLOCK],
        v: &mut [u8; BLOCK],
    ) {
        let cy = Coefs::new([Y_R, Y_G, Y_B], true, Y_OFFSET);
        let cu = Coefs::new([U_R, U_G, U_B], false, chroma_offset(0));
        let cv = Coefs::new([V_R, V_G, V_B], false, chroma_offset(0));
        let [p0, p1, p2, p3] = load_block(px);
        let (s0, s1, s2, s3) = (spread(p0), spread(p1), spread(p2), spread(p3));
        store(
            y,
            pack(cy.apply(s0), cy.apply(s1), cy.apply(s2), cy.apply(s3)),
        );
        store(
            u,
            pack(cu.apply(s0), cu.apply(s1), cu.apply(s2), cu.apply(s3)),
        );
        store(
            v,
            pack(cv.apply(s0), cv.apply(s1), cv.apply(s2), cv.apply(s3)),
        );
    }

    /// 4:4:4 of one RGBA row into `y`, `u` and `v`.
    #[target_feature(enable = "avx2")]
    fn row_444(src: &[u8], y: &mut [u8], u: &mut [u8], v: &mut [u8]) {
        let (blocks, tail) = src.as_chunks::<{ 4 * BLOCK }>();
        let (ys, _) = y.as_chunks_mut::<BLOCK>();
        let (us, _) = u.as_chunks_mut::<BLOCK>();
        let (vs, _) = v.as_chunks_mut::<BLOCK>();
        for (((px, y), u), v) in blocks.iter().zip(ys).zip(us).zip(vs) {
            prefetch(px);
            block_444(px, y, u, v);
        }
        if !tail.is_empty() {
            // As in `luma_row`: zero-padded, then the real pixels copied out.
            let mut px = [0; 4 * BLOCK];
            px[..tail.len()].copy_from_slice(tail);
            let mut out = [[0; BLOCK]; 3];
            let [oy, ou, ov] = &mut out;
            block_444(&px, oy, ou, ov);
            let (done, n) = (blocks.len() * BLOCK, tail.len() / 4);
            y[done..][..n].copy_from_slice(&oy[..n]);
            u[done..][..n].copy_from_slice(&ou[..n]);
            v[done..][..n].copy_from_slice(&ov[..n]);
        }
    }

    /// Cb (low half) and Cr (high half) of 16 column pairs from the pair
    /// sums of their four rows.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn chroma_block_420(rows: [&[__m256i; BLOCK_QUADS]; 4]) -> __m256i {
        // (c0, c1, c2, 0) for each pair's (ΣR, ΣG, ΣB, ΣA).
        let quad = |c: [i32; 3]| {
            let lane = |x: i32, at: u32| i64::from(x & 0xFFFF) << at;
            _mm256_set1_epi64x(lane(c[0], 0) | lane(c[1], 16) | lane(c[2], 32))
        };
        let (u_c, v_c) = (quad([U_R, U_G, U_B]), quad([V_R, V_G, V_B]));
        let offset = _mm256_set1_epi32(chroma_offset(CHROMA_420_LOG2));
        let [r0, r1, r2, r3] = rows;
        let mut u = [_mm256_setzero_si256(); BLOCK_QUADS];
        let mut v = u;
        for k in 0..BLOCK_QUADS {
            // 1, 3, 3, 1 rows: ≤ 8 · 510, in 16 bits.
            let mid = _mm256_add_epi16(r1[k], r2[k]);
            let sum = _mm256_add_epi16(
                _mm256_add_epi16(r0[k], r3[k]),
                _mm256_add_epi16(mid, _mm256_add_epi16(mid, mid)),
            );
            // Per pair, (c0·ΣR + c1·ΣG, c2·ΣB) in 32 bits: ≤ 4080 · 28784.
            u[k] = _mm256_madd_epi16(sum, u_c);
            v[k] = _mm256_madd_epi16(sum, v_c);
        }
        // hadd leaves pairs in the order 0 1 4 5 | 2 3 6 7 (8.. likewise).
        let shift = |a: __m256i, b: __m256i| {
            let sum = _mm256_add_epi32(_mm256_hadd_epi32(a, b), offset);
            _mm256_srai_epi32::<{ (SHIFT + CHROMA_420_LOG2) as i32 }>(sum)
        };
        let u = _mm256_packs_epi32(shift(u[0], u[1]), shift(u[2], u[3]));
        let v = _mm256_packs_epi32(shift(v[0], v[1]), shift(v[2], v[3]));
        // Bytes: U 0 1 4 5 8 9 12 13, V likewise | U 2 3 6 7 .., V likewise.
        let bytes = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi16(u, v));
        #[rustfmt::skip]
        let order = _mm256_setr_epi8(
            0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15,
            0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15,
        );
        _mm256_shuffle_epi8(bytes, order)
    }

    /// One 4:2:0 chroma row of Cb into `u` and Cr into `v` (the same
    /// length, at most `BLOCK_PAIRS` per block of `rows`).
    #[target_feature(enable = "avx2")]
    fn chroma_row_420(rows: [&[__m256i]; 4], u: &mut [u8], v: &mut [u8]) {
        let [r0, r1, r2, r3] = rows;
        let (r0, r1, r2, r3) = (
            r0.as_chunks().0,
            r1.as_chunks().0,
            r2.as_chunks().0,
            r3.as_chunks().0,
        );
        let (us, u_tail) = u.as_chunks_mut::<BLOCK_PAIRS>();
        let (vs, v_tail) = v.as_chunks_mut::<BLOCK_PAIRS>();
        let full = us.len();
        for (i, (u, v)) in us.iter_mut().zip(vs).enumerate() {
            let uv = chroma_block_420([&r0[i], &r1[i], &r2[i], &r3[i]]);
            store_half(u, _mm256_castsi256_si128(uv));
            store_half(v, _mm256_extracti128_si256::<1>(uv));
        }
        if !u_tail.is_empty() {
            // The block holds the tail's pairs (and padding's).
            let mut out = [0; 32];
            store(
                &mut out,
                chroma_block_420([&r0[full], &r1[full], &r2[full], &r3[full]]),
            );
            let n = u_tail.len();
            u_tail.copy_from_slice(&out[..n]);
            v_tail.copy_from_slice(&out[BLOCK_PAIRS..][..n]);
        }
    }

    /// 4:2:0, as the reference `yuv420`.
    #[target_feature(enable = "avx2")]
    pub(super) fn yuv420(
        rgba: &[u8],
        width: usize,
        height: usize,
        area: Area,
        planes: &mut impl Planes,
        scratch: &mut Scratch,
    ) {
        let (cx0, cx1, j0, j1) = area.chroma_420(height);
        let cw = cx1 - cx0;
        let row_bytes = width * 4;
        // Ring of the last 4 rows' pair sums, each row whole blocks.
        let ring_row = cw.div_ceil(BLOCK_PAIRS) * BLOCK_QUADS;
        scratch.quads.clear();
        scratch.quads.resize(4 * ring_row, _mm256_setzero_si256());
        scratch.chroma.resize(cw, 0);
        let mut done = chroma_source_rows(j0, height)[0];
        for j in j0..j1 {
            let rows = chroma_source_rows(j, height);
            while done <= rows[3] {
                let src = &rgba[done * row_bytes + cx0 * 8..done * row_bytes + cx1 * 8];
                let slot = &mut scratch.quads[(done % 4) * ring_row..][..ring_row];
                luma_row(src, &mut planes.row(0, done)[2 * cx0..2 * cx1], slot);
                done += 1;
            }
            let ring = &scratch.quads;
            let sum = |row: usize| &ring[(row % 4) * ring_row..][..ring_row];
            let sums = [sum(rows[0]), sum(rows[1]), sum(rows[2]), sum(rows[3])];
            let cr = &mut scratch.chroma[..cw];
            chroma_row_420(sums, &mut planes.row(1, j)[cx0..cx1], cr);
            planes.row(2, j)[cx0..cx1].copy_from_slice(cr);
        }
    }

    /// 4:4:4, as the reference `yuv444`.
    #[target_feature(enable = "avx2")]
    pub(super) fn yuv444(
        rgba: &[u8],
        width: usize,
        area: Area,
        planes: &mut impl Planes,
        scratch: &mut Scratch,
    ) {
        let (x0, x1) = (area.x0, area.x1);
        let w = x1 - x0;
        scratch.chroma.resize(2 * w, 0);
        for row in area.y0..area.y1 {
            let src = &rgba[(row * width + x0) * 4..(row * width + x1) * 4];
            let (cb, cr) = scratch.chroma[..2 * w].split_at_mut(w);
            row_444(src, &mut planes.row(0, row)[x0..x1], cb, cr);
            planes.row(1, row)[x0..x1].copy_from_slice(cb);
            planes.row(2, row)[x0..x1].copy_from_slice(cr);
        }
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
        let chroma = if chroma_420 {
            Chroma::Yuv420
        } else {
            Chroma::Yuv444
        };
        let whole = Area::whole(w, h);
        rgba_to_yuv(
            isa,
            chroma,
            rgba,
            (w, h),
            whole,
            &mut planes,
            &mut Scratch::default(),
        );
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

    /// Opaque pixels cycling through black, white and the colours with the
    /// extreme chroma (yellow/blue, cyan/red), neighbours never alike.
    fn extremes(w: usize, h: usize) -> Vec<u8> {
        const COLOURS: [[u8; 4]; 6] = [
            [0, 0, 0, 255],
            [255, 255, 255, 255],
            [255, 255, 0, 255],
            [0, 0, 255, 255],
            [0, 255, 255, 255],
            [255, 0, 0, 255],
        ];
        (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| COLOURS[(x + 3 * y) % COLOURS.len()]))
            .collect()
    }

    /// The test inputs of a `w`×`h` frame: uniform black and white,
    /// alternating bytes, extreme colours, and noise (once with noisy
    /// alpha, which the conversion must ignore).
    fn inputs(w: usize, h: usize) -> Vec<(&'static str, Vec<u8>)> {
        let seed = (w * 31 + h) as u64;
        let mut noisy_alpha = noise(w, h, seed + 1);
        let alpha = noise(w, h, seed + 2);
        for (px, a) in noisy_alpha.chunks_exact_mut(4).zip(alpha.chunks_exact(4)) {
            px[3] = a[0];
        }
        vec![
            ("zeros", vec![0; w * h * 4]),
            ("255s", vec![255; w * h * 4]),
            (
                "alternating",
                (0..w * h * 4)
                    .map(|i| if i % 2 == 0 { 255 } else { 0 })
                    .collect(),
            ),
            ("extremes", extremes(w, h)),
            ("noise", noise(w, h, seed)),
            ("noisy alpha", noisy_alpha),
        ]
    }

    #[test]
    fn every_instruction_set_gives_the_same_bytes() {
        let isa = Isa::detect();
        if isa == Isa::Baseline {
            // Nothing to compare on this CPU: the baseline is the only path.
            return;
        }
        // Whole blocks of 32 pixels and every kind of remainder (odd pair
        // counts; for 4:4:4 odd widths too), the edge rows of short frames.
        let widths_420 = [2, 32, 34, 64, 66, 130, 322, 1922];
        let widths_444 = [1, 2, 31, 33, 34, 66, 130, 322, 1922];
        for chroma_420 in [true, false] {
            let widths: &[usize] = if chroma_420 { &widths_420 } else { &widths_444 };
            for &w in widths {
                for h in 2..=8 {
                    if chroma_420 && h % 2 == 1 {
                        continue;
                    }
                    for (name, rgba) in inputs(w, h) {
                        assert_eq!(
                            convert(Isa::Baseline, &rgba, w, h, chroma_420),
                            convert(isa, &rgba, w, h, chroma_420),
                            "{name} {w}x{h}, 4:2:0 {chroma_420}"
                        );
                    }
                }
            }
        }
        // A frame of several row-ring turns and blocks.
        let (w, h) = (322, 182);
        let rgba = noise(w, h, 182);
        for chroma_420 in [true, false] {
            assert_eq!(
                convert(Isa::Baseline, &rgba, w, h, chroma_420),
                convert(isa, &rgba, w, h, chroma_420),
                "{w}x{h}, 4:2:0 {chroma_420}"
            );
        }
    }

    /// The exact bytes, so that any change to the arithmetic (which would
    /// change every rendered video) is a deliberate one: SHA-256 of the
    /// packed planes of a 66x10 noise frame, as the converter made them
    /// when the AVX2 kernels were written.
    #[test]
    fn the_bytes_are_the_golden_ones() {
        use sha2::{Digest, Sha256};
        let (w, h) = (66, 10);
        let rgba = noise(w, h, 21);
        for (chroma_420, golden) in [(true, GOLDEN_420), (false, GOLDEN_444)] {
            for isa in [Isa::Baseline, Isa::detect()] {
                let planes = convert(isa, &rgba, w, h, chroma_420);
                assert_eq!(
                    hex::encode(Sha256::digest(&planes)),
                    golden,
                    "{isa:?}, 4:2:0 {chroma_420}"
                );
            }
        }
    }

    const GOLDEN_420: &str = "982feeaa2229960c00bd64de5851fb7ce3fd4c0f63f0187c2f6a1fb2df0adec1";
    const GOLDEN_444: &str = "1d3ff6c1b0770286cd0a5540814e988ebd640b8d019cddc05d50de7c6adf2e31";
}
