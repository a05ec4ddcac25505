//! Drawing a picture (an image or a video frame) under an affine transform
//! with an integer bilinear sampler, in place of tiny-skia's float pipeline.
//!
//! A draw maps a rectangle of the picture (picture units, inside the
//! picture) to pixels through an invertible affine transform, at an
//! opacity, source-over. For every pixel of the draw's bound the sampler
//! steps four affine functions of the pixel centre in 32.32 fixed point:
//! the picture position `(u, v)` and the distance to the rectangle's edges,
//! in pixels, along each picture axis. From them it takes:
//!
//! - the colour: bilinear between the four picture pixels around
//!   `(u − ½, v − ½)` with 8-bit weights, taps clamped to the picture (as
//!   tiny-skia's `SpreadMode::Pad`), on premultiplied bytes; the nearest
//!   pixel when the draw only moves the picture (tiny-skia's choice for a
//!   translated pattern, kept so unscaled pictures stay sharp);
//! - the coverage: how much of the pixel lies inside the rectangle, from
//!   the distance of the pixel centre to each edge, `clamp(d + ½, 0, 1)`
//!   per edge, the two edges of an axis combined as the overlap of the
//!   pixel's span with the rectangle's and the two axes multiplied. It is
//!   the exact area for edges along the pixel grid and within a few
//!   hundredths of it for rotated ones, so an edge fades over one pixel as
//!   tiny-skia's anti-aliasing does;
//! - the result: colour × coverage × opacity (8-bit factors, rounded),
//!   composited source-over with a rounded division by 255.
//!
//! Only the inverse transform and the starting values are computed in
//! `f64` (once per draw, with correctly rounded operations only: no
//! `hypot`, sines or fused multiply-adds), then rounded to fixed point;
//! the per-pixel loop is integer additions, multiplications and shifts, so
//! the bytes are the same on every machine. A draw whose numbers do not fit
//! the fixed-point ranges (a near-singular transform, a picture moved
//! millions of pixels away) is refused ([`Blit::new`] returns `None`) and
//! the caller draws it with tiny-skia.
//!
//! Bytes are premultiplied RGBA8, four per pixel, rows without padding.

/// The most a fixed-point value may reach, in units: starting values,
/// steps and every value over the draw's bound stay within ±2²⁴ so that
/// 32.32 sums (±2³¹) cannot overflow, with room for the rounding drift of
/// thousands of steps.
const MAX_UNITS: f64 = 16_777_216.0;

/// One in 32.32 fixed point.
const ONE: f64 = 4_294_967_296.0;

/// Red and blue (or alpha and green, shifted down) of a pixel read as a
/// little-endian `u32`, in two 16-bit lanes.
const LANES: u32 = 0x00FF_00FF;

/// Half of 256 in both lanes: rounds a lane product before `>> 8`.
const HALF: u32 = 0x0080_0080;

/// A value affine in the pixel position, in 32.32 fixed point: the value at
/// the draw bound's top-left pixel centre and its steps per column and row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Affine {
    start: i64,
    dx: i64,
    dy: i64,
}

/// A draw prepared for the integer sampler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blit {
    /// Picture size in pixels.
    pic: (u32, u32),
    /// Pixels written: columns `x0..x1`, rows `y0..y1` of the target.
    bound: (u32, u32, u32, u32),
    /// Sample position `u − ½`, `v − ½` (picture pixels).
    u: Affine,
    v: Affine,
    /// Distance along each picture axis, in pixels of the target
    /// (`u · ku`, `v · kv`), and the edges' values of it, each moved half a
    /// pixel outwards: coverage of an edge is `value − near` (or
    /// `far − value`) clamped to 0..1.
    du: Affine,
    dv: Affine,
    u_edges: (i64, i64),
    v_edges: (i64, i64),
    /// Opacity in 1/256ths (0..=256).
    opacity: u32,
    /// The mask of the fraction bits kept as bilinear weights: `0xFF`, or
    /// 0 for nearest sampling.
    weights: i64,
}

/// A value in 32.32 fixed point, if it is within [`MAX_UNITS`].
fn fixed(v: f64) -> Option<i64> {
    // `round` and the cast are exact IEEE operations: the same on every
    // machine. The range check also refuses NaN.
    (v.abs() < MAX_UNITS).then(|| (v * ONE).round() as i64)
}

impl Blit {
    /// Prepares drawing the picture rectangle `src` (`[left, top, right,
    /// bottom]` in picture units, inside `0..width × 0..height` of a
    /// `pic`-sized picture) through `to_pixels` (`[sx, ky, kx, sy, tx, ty]`
    /// as tiny-skia's `Transform`: `x' = sx·x + kx·y + tx`,
    /// `y' = ky·x + sy·y + ty`) at `opacity` onto a `target`-sized frame.
    ///
    /// `None` when the sampler cannot draw it exactly (a transform that is
    /// not invertible, numbers past the fixed-point range, an empty
    /// picture or rectangle); draws that miss the target give a `Blit`
    /// with nothing to draw ([`Blit::bound`] is `None`).
    pub fn new(
        pic: (u32, u32),
        src: [f64; 4],
        to_pixels: [f64; 6],
        opacity: f32,
        target: (u32, u32),
    ) -> Option<Blit> {
        let [l, t, r, b] = src;
        let (pw, ph) = (f64::from(pic.0), f64::from(pic.1));
        let inside = 0.0 <= l && l < r && r <= pw && 0.0 <= t && t < b && b <= ph;
        if !inside || !opacity.is_finite() {
            return None;
        }
        let [sx, ky, kx, sy, tx, ty] = to_pixels;
        let det = sx * sy - kx * ky;
        if !det.is_finite() || det.abs() < 1e-9 || to_pixels.iter().any(|v| !v.is_finite()) {
            return None;
        }
        // Pixel (x, y) to picture (u, v): u = a·x + b·y + c, v = d·x + e·y + f.
        let (a, b_, c) = (sy / det, -kx / det, (kx * ty - sy * tx) / det);
        let (d, e, f) = (-ky / det, sx / det, (ky * tx - sx * ty) / det);
        // The rectangle's corners in pixels give the bound; a pixel whose
        // centre is within half a pixel of an edge gets some coverage.
        let corners = [(l, t), (r, t), (l, b), (r, b)].map(|(u, v)| {
            let x = sx * u + kx * v + tx;
            let y = ky * u + sy * v + ty;
            (x, y)
        });
        let lo_x = corners.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
        let hi_x = corners
            .iter()
            .map(|p| p.0)
            .fold(f64::NEG_INFINITY, f64::max);
        let lo_y = corners.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let hi_y = corners
            .iter()
            .map(|p| p.1)
            .fold(f64::NEG_INFINITY, f64::max);
        if ![lo_x, hi_x, lo_y, hi_y].iter().all(|v| v.abs() < MAX_UNITS) {
            return None;
        }
        let clamp = |v: f64, hi: u32| v.clamp(0.0, f64::from(hi)) as u32;
        let bound = (
            clamp((lo_x - 1.0).floor(), target.0),
            clamp((lo_y - 1.0).floor(), target.1),
            clamp((hi_x + 1.0).ceil(), target.0),
            clamp((hi_y + 1.0).ceil(), target.1),
        );
        // Picture units per pixel along each axis' gradient, inverted: the
        // distance in pixels of a pixel centre from a line u = const is
        // (u − const)·ku. `sqrt` is correctly rounded, unlike `hypot`.
        let ku = 1.0 / (a * a + b_ * b_).sqrt();
        let kv = 1.0 / (d * d + e * e).sqrt();
        let (x0, y0) = (f64::from(bound.0) + 0.5, f64::from(bound.1) + 0.5);
        // A draw that only moves the picture is sampled nearest, as
        // tiny-skia samples a pattern whose transform is a translation: the
        // picture keeps its sharpness (at the cost of moving by whole
        // pixels), and an unscaled image looks as it did before the sampler.
        let nearest = (sx, ky, kx, sy) == (1.0, 0.0, 0.0, 1.0);
        let centre = if nearest { 0.0 } else { -0.5 };
        let affine = |a: f64, b: f64, c: f64, k: f64, shift: f64| -> Option<Affine> {
            let (ak, bk) = (a * k, b * k);
            let start = (a * x0 + b * y0 + c) * k + shift;
            // The value over the bound stays between its corners' values.
            let w = f64::from(bound.2.saturating_sub(bound.0));
            let h = f64::from(bound.3.saturating_sub(bound.1));
            let far = start.abs() + ak.abs() * w + bk.abs() * h;
            (far < MAX_UNITS).then_some(())?;
            Some(Affine {
                start: fixed(start)?,
                dx: fixed(ak)?,
                dy: fixed(bk)?,
            })
        };
        Some(Blit {
            pic,
            bound,
            u: affine(a, b_, c, 1.0, centre)?,
            v: affine(d, e, f, 1.0, centre)?,
            du: affine(a, b_, c, ku, 0.0)?,
            dv: affine(d, e, f, kv, 0.0)?,
            u_edges: (fixed(l * ku - 0.5)?, fixed(r * ku + 0.5)?),
            v_edges: (fixed(t * kv - 0.5)?, fixed(b * kv + 0.5)?),
            opacity: (opacity.clamp(0.0, 1.0) * 256.0).round() as u32,
            weights: if nearest { 0 } else { 0xFF },
        })
    }

    /// The pixels the draw may write (`x0, y0, x1, y1`, clipped to the
    /// target), or `None` when it writes none.
    pub fn bound(&self) -> Option<(u32, u32, u32, u32)> {
        let (x0, y0, x1, y1) = self.bound;
        (x0 < x1 && y0 < y1 && self.opacity > 0).then_some(self.bound)
    }

    /// Draws `picture` (its bytes, `pic` pixels as given to [`Blit::new`])
    /// onto `target` (rows `stride` bytes apart, at least as large as the
    /// target given to [`Blit::new`]). Writes only pixels inside
    /// [`Blit::bound`]. Returns `false`, drawing nothing, when the buffers
    /// are smaller than their sizes say.
    pub fn draw(&self, picture: &[u8], target: &mut [u8], stride: usize) -> bool {
        self.draw_using(picture, target, stride, Kernel::Fastest)
    }

    /// [`Blit::draw`] with a chosen kernel; every kernel gives the same
    /// bytes (the tests hold them to it).
    pub fn draw_using(
        &self,
        picture: &[u8],
        target: &mut [u8],
        stride: usize,
        kernel: Kernel,
    ) -> bool {
        let Some((x0, y0, x1, y1)) = self.bound() else {
            return true;
        };
        let (pw, ph) = (self.pic.0 as usize, self.pic.1 as usize);
        let needed = (y1 as usize - 1) * stride + x1 as usize * 4;
        if picture.len() < pw * ph * 4 || target.len() < needed || stride < x1 as usize * 4 {
            return false;
        }
        // Neither rotated nor skewed: u depends on the column only and v
        // on the row only, so rows of the picture can be filtered across
        // once and then between (same sums, same roundings).
        let separable = self.u.dy == 0 && self.du.dy == 0 && self.v.dx == 0 && self.dv.dx == 0;
        if separable && kernel != Kernel::PerPixel {
            self.draw_separable(picture, target, stride, kernel == Kernel::Fastest);
            return true;
        }
        for row in 0..(y1 - y0) {
            let at = |f: &Affine| f.start + f.dy * i64::from(row);
            let y = (y0 + row) as usize;
            let line = &mut target[y * stride + x0 as usize * 4..y * stride + x1 as usize * 4];
            self.row(
                picture,
                line,
                [at(&self.u), at(&self.v), at(&self.du), at(&self.dv)],
            );
        }
        true
    }

    /// A draw that neither rotates nor skews: each needed picture row is
    /// filtered across into a buffer (two kept, consecutive target rows
    /// mostly share them), then each target row is the vertical blend of
    /// two buffers, scaled and composited in one pass that SSE2 does four
    /// pixels at a time.
    fn draw_separable(&self, picture: &[u8], target: &mut [u8], stride: usize, simd: bool) {
        let (x0, y0, x1, y1) = self.bound;
        let (pw, ph) = (i64::from(self.pic.0), i64::from(self.pic.1));
        let width = (x1 - x0) as usize;
        // Per column: taps, weight and coverage (the per-pixel sampler's
        // values at row 0, which are every row's: `u.dy == du.dy == 0`).
        // Weights and scales are kept as four little-endian `u16`s a pixel,
        // one per channel, the layout the SSE2 kernels load.
        let mut c0 = Vec::with_capacity(width);
        let mut c1 = Vec::with_capacity(width);
        let mut fx = Vec::with_capacity(width * 8);
        let mut cu = Vec::with_capacity(width);
        let (mut u, mut du) = (self.u.start, self.du.start);
        for _ in 0..width {
            let iu = u >> 32;
            c0.push(iu.clamp(0, pw - 1) as usize);
            c1.push((iu + 1).clamp(0, pw - 1) as usize);
            fx.extend_from_slice(&spread(((u >> 24) & self.weights) as u16));
            cu.push(coverage(du, self.u_edges));
            u += self.u.dx;
            du += self.du.dx;
        }
        let mut rows: [(Option<i64>, Vec<u8>); 2] =
            [(None, vec![0; width * 4]), (None, vec![0; width * 4])];
        let mut scale = vec![0u8; width * 8];
        let mut last_cv = None;
        let line_len = pw as usize * 4;
        for row in 0..(y1 - y0) {
            let v = self.v.start + self.v.dy * i64::from(row);
            let dv = self.dv.start + self.dv.dy * i64::from(row);
            let cv = coverage(dv, self.v_edges);
            if cv == 0 {
                continue;
            }
            if last_cv != Some(cv) {
                for (s, &cu) in scale.chunks_exact_mut(8).zip(&cu) {
                    let k = (((cu * cv + 128) >> 8) * self.opacity + 128) >> 8;
                    s.copy_from_slice(&spread(k as u16));
                }
                last_cv = Some(cv);
            }
            let iv = v >> 32;
            let fy = ((v >> 24) & self.weights) as u32;
            let (r0, r1) = (iv.clamp(0, ph - 1), (iv + 1).clamp(0, ph - 1));
            // Fill the buffers for r0 and r1, reusing what they hold.
            for want in [r0, r1] {
                if rows.iter().any(|(r, _)| *r == Some(want)) {
                    continue;
                }
                let keep = if rows[0].0 == Some(r0) || rows[0].0 == Some(r1) {
                    1
                } else {
                    0
                };
                let (id, buf) = &mut rows[keep];
                let src = &picture[want as usize * line_len..(want as usize + 1) * line_len];
                across(src, &c0, &c1, &fx, buf, simd);
                *id = Some(want);
            }
            let top = if rows[0].0 == Some(r0) { 0 } else { 1 };
            let bot = if rows[0].0 == Some(r1) { 0 } else { 1 };
            let y = (y0 + row) as usize;
            let line = &mut target[y * stride + x0 as usize * 4..y * stride + x1 as usize * 4];
            between(&rows[top].1, &rows[bot].1, fy, &scale, line, simd);
        }
    }

    /// One row of the bound: `acc` holds `u, v, du, dv` at its first pixel.
    #[inline]
    fn row(&self, picture: &[u8], line: &mut [u8], mut acc: [i64; 4]) {
        let (pw, ph) = (i64::from(self.pic.0), i64::from(self.pic.1));
        let steps = [self.u.dx, self.v.dx, self.du.dx, self.dv.dx];
        for px in line.chunks_exact_mut(4) {
            let [u, v, du, dv] = acc;
            for (a, s) in acc.iter_mut().zip(steps) {
                *a += s;
            }
            let cov = coverage(du, self.u_edges) * coverage(dv, self.v_edges);
            if cov == 0 {
                continue;
            }
            let scale = (((cov + 128) >> 8) * self.opacity + 128) >> 8;
            // Taps: the whole part, clamped to the picture; the weights:
            // the first 8 bits of the fraction.
            let (iu, iv) = (u >> 32, v >> 32);
            let (fx, fy) = (
                ((u >> 24) & self.weights) as u32,
                ((v >> 24) & self.weights) as u32,
            );
            let col = |i: i64| i.clamp(0, pw - 1) as usize;
            let line_of = |i: i64| i.clamp(0, ph - 1) as usize * pw as usize;
            let (c0, c1) = (col(iu), col(iu + 1));
            let (r0, r1) = (line_of(iv), line_of(iv + 1));
            let tap = |i: usize| {
                let p = &picture[i * 4..i * 4 + 4];
                u32::from_le_bytes([p[0], p[1], p[2], p[3]])
            };
            let (p00, p01, p10, p11) = (tap(r0 + c0), tap(r0 + c1), tap(r1 + c0), tap(r1 + c1));
            if p00 | p01 | p10 | p11 == 0 {
                continue;
            }
            let src = lerp(lerp(p00, p01, fx), lerp(p10, p11, fx), fy);
            let src = if scale == 256 { src } else { times(src, scale) };
            let dst = u32::from_le_bytes([px[0], px[1], px[2], px[3]]);
            px.copy_from_slice(&over(src, dst).to_le_bytes());
        }
    }
}

/// Which code draws: every kernel gives the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// The fastest this machine has: for draws that neither rotate nor
    /// skew, picture rows filtered across once, then blended between and
    /// composited with SSE2 (on x86-64, where SSE2 is always present);
    /// the per-pixel sampler for the others.
    Fastest,
    /// As [`Kernel::Fastest`] in portable integer code only.
    Portable,
    /// The per-pixel sampler for every draw.
    PerPixel,
}

/// A 16-bit factor four times, little-endian: one per channel.
fn spread(k: u16) -> [u8; 8] {
    let [a, b] = k.to_le_bytes();
    [a, b, a, b, a, b, a, b]
}

/// The factor of pixel `i` in a [`spread`] table.
fn factor(table: &[u8], i: usize) -> u32 {
    u32::from(u16::from_le_bytes([table[i * 8], table[i * 8 + 1]]))
}

/// A pixel's bytes as a little-endian `u32`.
fn pixel(bytes: &[u8], i: usize) -> u32 {
    let p = &bytes[i * 4..i * 4 + 4];
    u32::from_le_bytes([p[0], p[1], p[2], p[3]])
}

/// One picture row filtered across: pixel `i` of `out` blends the row's
/// pixels `c0[i]` and `c1[i]` by weight `i` of `fx` (a [`spread`] table).
fn across(src: &[u8], c0: &[usize], c1: &[usize], fx: &[u8], out: &mut [u8], simd: bool) {
    let done = if simd {
        #[allow(unsafe_code)]
        // a call into SSE2 code; see SAFETY
        // SAFETY: SSE2 is part of the x86-64 baseline, so the CPU has it
        // (the stub for other targets is safe code).
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_unsafe))]
        unsafe {
            sse2::across(src, c0, c1, fx, out)
        }
    } else {
        0
    };
    for (i, o) in out.chunks_exact_mut(4).enumerate().skip(done) {
        let p = lerp(pixel(src, c0[i]), pixel(src, c1[i]), factor(fx, i));
        o.copy_from_slice(&p.to_le_bytes());
    }
}

/// One target row: `top` towards `bottom` by `fy`/256, times `scale` (a
/// [`spread`] table) /256, over the row's pixels.
fn between(top: &[u8], bottom: &[u8], fy: u32, scale: &[u8], line: &mut [u8], simd: bool) {
    let done = if simd {
        #[allow(unsafe_code)]
        // a call into SSE2 code; see SAFETY
        // SAFETY: SSE2 is part of the x86-64 baseline, so the CPU has it
        // (the stub for other targets is safe code).
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_unsafe))]
        unsafe {
            sse2::between(top, bottom, fy, scale, line)
        }
    } else {
        0
    };
    for (i, px) in line.chunks_exact_mut(4).enumerate().skip(done) {
        let src = times(lerp(pixel(top, i), pixel(bottom, i), fy), factor(scale, i));
        px.copy_from_slice(&over(src, pixel(px, 0)).to_le_bytes());
    }
}

/// [`across`] and [`between`] four pixels at a time in 16-bit lanes: the
/// same sums and roundings as [`lerp`], [`times`] and [`over`] (no lane
/// passes 65 535).
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi16, _mm_loadu_si128, _mm_mullo_epi16, _mm_packus_epi16, _mm_set_epi32,
        _mm_set1_epi16, _mm_setzero_si128, _mm_shufflehi_epi16, _mm_shufflelo_epi16,
        _mm_srli_epi16, _mm_storeu_si128, _mm_sub_epi16, _mm_unpackhi_epi8, _mm_unpacklo_epi8,
    };

    /// 16 bytes as a register.
    #[target_feature(enable = "sse2")]
    fn load(bytes: &[u8; 16]) -> __m128i {
        #[allow(unsafe_code)] // an unaligned load; see SAFETY
        // SAFETY: `bytes` is 16 readable bytes and `loadu` has no
        // alignment requirement; SSE2 is part of x86-64.
        unsafe {
            _mm_loadu_si128(bytes.as_ptr().cast())
        }
    }

    /// A register as 16 bytes.
    #[target_feature(enable = "sse2")]
    fn store(bytes: &mut [u8; 16], v: __m128i) {
        #[allow(unsafe_code)] // an unaligned store; see SAFETY
        // SAFETY: `bytes` is 16 writable bytes and `storeu` has no
        // alignment requirement; SSE2 is part of x86-64.
        unsafe {
            _mm_storeu_si128(bytes.as_mut_ptr().cast(), v)
        }
    }

    /// 16 bytes at `at` of `bytes` (in bounds: the callers iterate whole
    /// chunks).
    #[target_feature(enable = "sse2")]
    fn load_at(bytes: &[u8], at: usize) -> __m128i {
        load(bytes[at..at + 16].try_into().expect("16 bytes in bounds"))
    }

    /// `(t·(256 − w) + b·w + 128) >> 8` per 16-bit lane, at most 65 408
    /// before the shift.
    #[target_feature(enable = "sse2")]
    fn lerp(t: __m128i, b: __m128i, w: __m128i) -> __m128i {
        let k = _mm_sub_epi16(_mm_set1_epi16(256), w);
        let sum = _mm_add_epi16(_mm_mullo_epi16(t, k), _mm_mullo_epi16(b, w));
        _mm_srli_epi16::<8>(_mm_add_epi16(sum, _mm_set1_epi16(128)))
    }

    /// Two pixels in 16-bit lanes: blended, scaled, composited.
    #[target_feature(enable = "sse2")]
    fn two(t: __m128i, b: __m128i, fy: __m128i, s: __m128i, d: __m128i) -> __m128i {
        let half = _mm_set1_epi16(128);
        let c = lerp(t, b, fy);
        // times: (c·s + 128) >> 8, s ≤ 256.
        let c = _mm_srli_epi16::<8>(_mm_add_epi16(_mm_mullo_epi16(c, s), half));
        // over: c + div255(d·(255 − alpha) + 128).
        let alpha = _mm_shufflehi_epi16::<0xFF>(_mm_shufflelo_epi16::<0xFF>(c));
        let inv = _mm_sub_epi16(_mm_set1_epi16(255), alpha);
        let t = _mm_add_epi16(_mm_mullo_epi16(d, inv), half);
        let q = _mm_srli_epi16::<8>(_mm_add_epi16(t, _mm_srli_epi16::<8>(t)));
        _mm_add_epi16(c, q)
    }

    /// Filters the first multiple of four pixels of the row; returns how
    /// many.
    #[target_feature(enable = "sse2")]
    pub(super) fn across(
        src: &[u8],
        c0: &[usize],
        c1: &[usize],
        fx: &[u8],
        out: &mut [u8],
    ) -> usize {
        let zero = _mm_setzero_si128();
        let tap = |i: usize| super::pixel(src, i) as i32;
        let mut n = 0;
        let quads = out
            .chunks_exact_mut(16)
            .zip(c0.chunks_exact(4))
            .zip(c1.chunks_exact(4));
        for (k, ((o, a), b)) in quads.enumerate() {
            let t = _mm_set_epi32(tap(a[3]), tap(a[2]), tap(a[1]), tap(a[0]));
            let b = _mm_set_epi32(tap(b[3]), tap(b[2]), tap(b[1]), tap(b[0]));
            let lo = lerp(
                _mm_unpacklo_epi8(t, zero),
                _mm_unpacklo_epi8(b, zero),
                load_at(fx, k * 32),
            );
            let hi = lerp(
                _mm_unpackhi_epi8(t, zero),
                _mm_unpackhi_epi8(b, zero),
                load_at(fx, k * 32 + 16),
            );
            store(
                o.try_into().expect("chunks of 16"),
                _mm_packus_epi16(lo, hi),
            );
            n += 4;
        }
        n
    }

    /// Draws the first multiple of four pixels of the row; returns how
    /// many it drew.
    #[target_feature(enable = "sse2")]
    pub(super) fn between(
        top: &[u8],
        bottom: &[u8],
        fy: u32,
        scale: &[u8],
        line: &mut [u8],
    ) -> usize {
        let zero = _mm_setzero_si128();
        let fy = _mm_set1_epi16(fy as i16);
        let mut n = 0;
        for (k, dst) in line.chunks_exact_mut(16).enumerate() {
            let (t, b) = (load_at(top, k * 16), load_at(bottom, k * 16));
            let dst: &mut [u8; 16] = dst.try_into().expect("chunks of 16");
            let d = load(dst);
            let lo = two(
                _mm_unpacklo_epi8(t, zero),
                _mm_unpacklo_epi8(b, zero),
                fy,
                load_at(scale, k * 32),
                _mm_unpacklo_epi8(d, zero),
            );
            let hi = two(
                _mm_unpackhi_epi8(t, zero),
                _mm_unpackhi_epi8(b, zero),
                fy,
                load_at(scale, k * 32 + 16),
                _mm_unpackhi_epi8(d, zero),
            );
            store(dst, _mm_packus_epi16(lo, hi));
            n += 4;
        }
        n
    }
}

/// Without SSE2 the portable code draws every pixel.
#[cfg(not(target_arch = "x86_64"))]
mod sse2 {
    pub(super) fn across(_: &[u8], _: &[usize], _: &[usize], _: &[u8], _: &mut [u8]) -> usize {
        0
    }

    pub(super) fn between(_: &[u8], _: &[u8], _: u32, _: &[u8], _: &mut [u8]) -> usize {
        0
    }
}

/// Coverage of a pixel along one axis, in 1/256ths: the overlap of its
/// span with the rectangle's, from its distance `d` and the edges moved
/// half a pixel out (so `d − near` is the near edge's coverage).
#[inline]
fn coverage(d: i64, (near, far): (i64, i64)) -> u32 {
    let c = |v: i64| (v >> 24).clamp(0, 256);
    (c(d - near) + c(far - d) - 256).max(0) as u32
}

/// `p` towards `q` by `w`/256 per channel, rounded.
#[inline]
fn lerp(p: u32, q: u32, w: u32) -> u32 {
    // Each 16-bit lane holds at most 255·256 + 128: no carry between lanes.
    let k = 256 - w;
    let rb = (((p & LANES) * k + (q & LANES) * w + HALF) >> 8) & LANES;
    let ag = ((((p >> 8) & LANES) * k + ((q >> 8) & LANES) * w + HALF) >> 8) & LANES;
    rb | (ag << 8)
}

/// `p` times `s`/256 per channel (`s` ≤ 256), rounded.
#[inline]
fn times(p: u32, s: u32) -> u32 {
    let rb = (((p & LANES) * s + HALF) >> 8) & LANES;
    let ag = ((((p >> 8) & LANES) * s + HALF) >> 8) & LANES;
    rb | (ag << 8)
}

/// Premultiplied `src` over `dst`: `src + dst·(255 − src alpha)/255`, the
/// division rounded (`(t + (t >> 8)) >> 8` of `t + 128` is exact rounding
/// for t ≤ 255²).
#[inline]
fn over(src: u32, dst: u32) -> u32 {
    let inv = 255 - (src >> 24);
    if inv == 0 {
        return src;
    }
    let div = |t: u32| ((t + ((t >> 8) & LANES)) >> 8) & LANES;
    let rb = div((dst & LANES) * inv + HALF);
    let ag = div(((dst >> 8) & LANES) * inv + HALF);
    // Premultiplied channels never exceed alpha, so no channel passes 255.
    src + (rb | (ag << 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lane_arithmetic_matches_per_channel_arithmetic() {
        let px = |c: [u32; 4]| c[0] | c[1] << 8 | c[2] << 16 | c[3] << 24;
        let ch = |p: u32, i: u32| (p >> (8 * i)) & 0xFF;
        for (p, q) in [
            ([255, 0, 128, 255], [0, 255, 1, 255]),
            ([10, 20, 30, 40], [200, 100, 50, 250]),
        ] {
            let (p, q) = (px(p), px(q));
            for w in [0, 1, 127, 128, 255, 256] {
                let got = lerp(p, q, w);
                for i in 0..4 {
                    let want = (ch(p, i) * (256 - w) + ch(q, i) * w + 128) >> 8;
                    assert_eq!(ch(got, i), want, "lerp w {w} channel {i}");
                }
                let got = times(p, w);
                for i in 0..4 {
                    assert_eq!(ch(got, i), (ch(p, i) * w + 128) >> 8, "times");
                }
            }
        }
        // Source-over against exact rounded division, every alpha.
        for sa in 0..=255u32 {
            let src = px([sa / 2, 0, sa, sa]);
            let dst = px([255, 17, 0, 255]);
            let got = over(src, dst);
            for i in 0..4 {
                let want = ch(src, i) + (ch(dst, i) * (255 - sa) + 127) / 255;
                assert_eq!(ch(got, i), want, "over alpha {sa} channel {i}");
            }
        }
    }
}
