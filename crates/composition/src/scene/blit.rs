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
        let Some((x0, y0, x1, y1)) = self.bound() else {
            return true;
        };
        let (pw, ph) = (self.pic.0 as usize, self.pic.1 as usize);
        let needed = (y1 as usize - 1) * stride + x1 as usize * 4;
        if picture.len() < pw * ph * 4 || target.len() < needed || stride < x1 as usize * 4 {
            return false;
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
