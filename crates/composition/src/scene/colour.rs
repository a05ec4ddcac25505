//! Converting an image's colours to sRGB: ICC profiles (parsed with
//! `moxcms`), and PNG `gAMA`/`cHRM` chunks without a profile.
//!
//! Only the parsing is the library's; the conversion itself is written here
//! in plain scalar `f64` arithmetic, with `libm` for powers, so it gives the
//! same bytes on every CPU (colour-management libraries pick SIMD code paths
//! at run time, whose rounding differs). Matrix/TRC profiles (RGB and gray:
//! what cameras, phones and image editors embed — sRGB, Display P3, Adobe RGB,
//! ProPhoto) are converted with the relative colorimetric intent, colours
//! outside sRGB clipped; other profiles (LUT-based, CMYK, Lab) are refused
//! with an error that says so.

/// A conversion of 8-bit RGB values to sRGB.
#[derive(Debug, Clone)]
pub struct ToSrgb {
    /// Each channel's 8-bit value to linear light.
    linear: [[f64; 256]; 3],
    /// Linear source RGB to linear sRGB.
    matrix: [[f64; 3]; 3],
    /// `thresholds[k]`: the linear value from which sRGB code `k + 1` is
    /// the nearest (the midpoint between codes `k` and `k + 1`).
    thresholds: [f64; 255],
}

/// How a PNG without an ICC profile describes its colours.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PngColour {
    /// `gAMA`: the encoding gamma × 100 000 (45 455 for 1/2.2).
    pub gamma: Option<u32>,
    /// `cHRM`: white, red, green, blue chromaticities (x, y) × 100 000.
    pub chrm: Option<[u32; 8]>,
}

/// A 3×3 matrix, rows first.
type M3 = [[f64; 3]; 3];

/// The D50 white of the ICC profile connection space.
const D50: [f64; 3] = [0.9642, 1.0, 0.8249];

/// sRGB (BT.709 primaries, D65 white) as chromaticities.
const SRGB_XY: [[f64; 2]; 4] = [[0.3127, 0.3290], [0.64, 0.33], [0.30, 0.60], [0.15, 0.06]];

/// Bradford cone response matrix (ICC.1:2010 Annex E).
const BRADFORD: M3 = [
    [0.8951, 0.2664, -0.1614],
    [-0.7502, 1.7135, 0.0367],
    [0.0389, -0.0685, 1.0296],
];

impl ToSrgb {
    /// The conversion an ICC profile asks for: `Ok(None)` if the profile is
    /// sRGB (or indistinguishable from it at 8 bits), so the pixels stay as
    /// they are.
    ///
    /// # Errors
    /// A message naming what the profile is when it cannot be converted.
    pub fn from_icc(icc: &[u8]) -> Result<Option<ToSrgb>, String> {
        use moxcms::{ColorProfile, DataColorSpace};
        let p = ColorProfile::new_from_slice(icc)
            .map_err(|e| format!("its ICC colour profile is unreadable ({e})"))?;
        let trc = |c: &Option<moxcms::ToneReprCurve>, name: &str| {
            c.as_ref()
                .ok_or_else(|| format!("its ICC profile has no {name} tone curve"))
                .and_then(curve_table)
        };
        let unsupported = |what: &str| {
            format!(
                "its ICC colour profile is {what}: only matrix/TRC RGB and gray profiles are converted; export the image as sRGB"
            )
        };
        let (linear, source) = match p.color_space {
            DataColorSpace::Rgb if p.is_matrix_shaper() => {
                let colorant = |c: moxcms::Xyzd| [c.x, c.y, c.z];
                let (r, g, b) = (
                    colorant(p.red_colorant),
                    colorant(p.green_colorant),
                    colorant(p.blue_colorant),
                );
                (
                    [
                        trc(&p.red_trc, "red")?,
                        trc(&p.green_trc, "green")?,
                        trc(&p.blue_trc, "blue")?,
                    ],
                    columns(r, g, b),
                )
            }
            DataColorSpace::Gray => {
                let t = trc(&p.gray_trc, "gray")?;
                // Gray maps to the PCS white (D50), which sRGB's adapted
                // matrix maps back to R = G = B.
                let srgb = srgb_to_d50();
                ([t, t, t], srgb)
            }
            DataColorSpace::Rgb => return Err(unsupported("LUT-based")),
            DataColorSpace::Cmyk => return Err(unsupported("CMYK")),
            other => return Err(unsupported(&format!("for {other:?} data"))),
        };
        Ok(ToSrgb::new(linear, source))
    }

    /// The conversion PNG `gAMA` (and `cHRM`) ask for, `None` when the
    /// image is sRGB as far as 8 bits tell. A gamma within 1 % of 1/2.2
    /// with sRGB primaries is taken as sRGB, as libpng does: that is what
    /// the many files written with `gAMA` 45 455 mean.
    pub fn from_png(c: PngColour) -> Option<ToSrgb> {
        let primaries = match c.chrm {
            None => SRGB_XY,
            Some(v) => {
                let xy = |i: usize| [f64::from(v[i]) / 1e5, f64::from(v[i + 1]) / 1e5];
                [xy(0), xy(2), xy(4), xy(6)]
            }
        };
        let srgb_primaries = primaries
            .iter()
            .flatten()
            .zip(SRGB_XY.iter().flatten())
            .all(|(a, b)| (a - b).abs() < 0.001);
        let gamma = match c.gamma {
            Some(g) if g > 0 => f64::from(g) / 1e5,
            // cHRM alone: the sRGB curve with those primaries.
            _ => 1.0 / 2.2,
        };
        let srgb_curve = c.gamma.is_none() || (gamma * 2.2 - 1.0).abs() < 0.01;
        if srgb_primaries && srgb_curve {
            return None;
        }
        let table: [f64; 256] = if c.gamma.is_none() {
            std::array::from_fn(|v| srgb_decode(v as f64 / 255.0))
        } else {
            let exponent = 1.0 / gamma;
            std::array::from_fn(|v| libm::pow(v as f64 / 255.0, exponent))
        };
        let source = rgb_to_d50(primaries)?;
        ToSrgb::new([table, table, table], source)
    }

    /// Builds the conversion from each channel's linearisation and the
    /// source's RGB → XYZ (D50) matrix; `None` when it changes no 8-bit
    /// value.
    fn new(linear: [[f64; 256]; 3], source: M3) -> Option<ToSrgb> {
        let to_srgb = invert(srgb_to_d50())?;
        let matrix = mul(&to_srgb, &source);
        let thresholds = std::array::from_fn(|k| srgb_decode((k as f64 + 0.5) / 255.0));
        let t = ToSrgb {
            linear,
            matrix,
            thresholds,
        };
        let near_identity = (0..3).all(|r| {
            (0..3).all(|c| (t.matrix[r][c] - if r == c { 1.0 } else { 0.0 }).abs() < 2e-3)
        });
        let curves_identity =
            (0..3).all(|c| (0..256).all(|v| usize::from(t.encode(t.linear[c][v])) == v));
        if near_identity && curves_identity {
            None
        } else {
            Some(t)
        }
    }

    /// Linear light to the nearest sRGB code, clipped to 0-255.
    fn encode(&self, v: f64) -> u8 {
        // 255 thresholds: the count of those at or below `v` is 0-255.
        self.thresholds.partition_point(|&t| t <= v) as u8
    }

    /// Converts straight-alpha RGBA pixels in place (alpha untouched).
    pub fn apply(&self, rgba: &mut [u8]) {
        let m = &self.matrix;
        for px in rgba.chunks_exact_mut(4) {
            let lin = [
                self.linear[0][usize::from(px[0])],
                self.linear[1][usize::from(px[1])],
                self.linear[2][usize::from(px[2])],
            ];
            for (out, row) in px.iter_mut().zip(m) {
                *out = self.encode(row[0] * lin[0] + row[1] * lin[1] + row[2] * lin[2]);
            }
        }
    }
}

/// The sRGB decoding curve (IEC 61966-2-1).
fn srgb_decode(v: f64) -> f64 {
    if v <= 0.04045 {
        v / 12.92
    } else {
        libm::pow((v + 0.055) / 1.055, 2.4)
    }
}

/// An ICC tone curve evaluated at the 256 8-bit values.
fn curve_table(c: &moxcms::ToneReprCurve) -> Result<[f64; 256], String> {
    use moxcms::ToneReprCurve;
    let x = |v: usize| v as f64 / 255.0;
    Ok(match c {
        ToneReprCurve::Lut(t) if t.is_empty() => std::array::from_fn(x),
        // One entry: a gamma in u8Fixed8 (ICC.1 `curv`).
        ToneReprCurve::Lut(t) if t.len() == 1 => {
            let g = f64::from(t[0]) / 256.0;
            std::array::from_fn(|v| libm::pow(x(v), g))
        }
        ToneReprCurve::Lut(t) => {
            let last = (t.len() - 1) as f64;
            std::array::from_fn(|v| {
                let pos = x(v) * last;
                let i = pos.floor() as usize;
                let j = (i + 1).min(t.len() - 1);
                let f = pos - i as f64;
                let (a, b) = (f64::from(t[i]), f64::from(t[j]));
                (a + (b - a) * f) / 65535.0
            })
        }
        ToneReprCurve::Parametric(p) => {
            let p: Vec<f64> = p.iter().map(|&v| f64::from(v)).collect();
            let pow = |base: f64, g: f64| if base > 0.0 { libm::pow(base, g) } else { 0.0 };
            // ICC.1:2010 table 65: the five parametric curve types.
            let f: Box<dyn Fn(f64) -> f64> = match p.len() {
                1 => Box::new(|x| pow(x, p[0])),
                3 => Box::new(|x| {
                    if x >= -p[2] / p[1] {
                        pow(p[1] * x + p[2], p[0])
                    } else {
                        0.0
                    }
                }),
                4 => Box::new(|x| {
                    if x >= -p[2] / p[1] {
                        pow(p[1] * x + p[2], p[0]) + p[3]
                    } else {
                        p[3]
                    }
                }),
                5 => Box::new(|x| {
                    if x >= p[4] {
                        pow(p[1] * x + p[2], p[0])
                    } else {
                        p[3] * x
                    }
                }),
                7 => Box::new(|x| {
                    if x >= p[4] {
                        pow(p[1] * x + p[2], p[0]) + p[5]
                    } else {
                        p[3] * x + p[6]
                    }
                }),
                n => return Err(format!("its ICC tone curve has {n} parameters")),
            };
            std::array::from_fn(|v| f(x(v)).clamp(0.0, 1.0))
        }
    })
}

/// A matrix whose columns are `r`, `g`, `b`.
fn columns(r: [f64; 3], g: [f64; 3], b: [f64; 3]) -> M3 {
    [[r[0], g[0], b[0]], [r[1], g[1], b[1]], [r[2], g[2], b[2]]]
}

fn mul(a: &M3, b: &M3) -> M3 {
    std::array::from_fn(|r| std::array::from_fn(|c| (0..3).map(|k| a[r][k] * b[k][c]).sum()))
}

fn apply3(m: &M3, v: [f64; 3]) -> [f64; 3] {
    std::array::from_fn(|r| m[r][0] * v[0] + m[r][1] * v[1] + m[r][2] * v[2])
}

fn invert(m: M3) -> Option<M3> {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    if det.abs() < 1e-12 || !det.is_finite() {
        return None;
    }
    let c =
        |r1: usize, c1: usize, r2: usize, c2: usize| m[r1][c1] * m[r2][c2] - m[r1][c2] * m[r2][c1];
    Some([
        [
            c(1, 1, 2, 2) / det,
            -c(0, 1, 2, 2) / det,
            c(0, 1, 1, 2) / det,
        ],
        [
            -c(1, 0, 2, 2) / det,
            c(0, 0, 2, 2) / det,
            -c(0, 0, 1, 2) / det,
        ],
        [
            c(1, 0, 2, 1) / det,
            -c(0, 0, 2, 1) / det,
            c(0, 0, 1, 1) / det,
        ],
    ])
}

/// XYZ of chromaticity `xy` with Y = 1.
fn xyz([x, y]: [f64; 2]) -> [f64; 3] {
    [x / y, 1.0, (1.0 - x - y) / y]
}

/// The RGB → XYZ matrix of primaries `[white, red, green, blue]` (xy),
/// adapted to the D50 white with Bradford, as an ICC profile stores it.
/// `None` for degenerate primaries.
fn rgb_to_d50(xy: [[f64; 2]; 4]) -> Option<M3> {
    if xy
        .iter()
        .any(|p| p[1].is_nan() || p[1] <= 0.0 || !p[0].is_finite())
    {
        return None;
    }
    let white = xyz(xy[0]);
    let p = columns(xyz(xy[1]), xyz(xy[2]), xyz(xy[3]));
    let s = apply3(&invert(p)?, white);
    let to_xyz = mul(&p, &[[s[0], 0.0, 0.0], [0.0, s[1], 0.0], [0.0, 0.0, s[2]]]);
    // Bradford: scale cone responses from the source white to D50.
    let cone_src = apply3(&BRADFORD, white);
    let cone_dst = apply3(&BRADFORD, D50);
    let scale = [
        [cone_dst[0] / cone_src[0], 0.0, 0.0],
        [0.0, cone_dst[1] / cone_src[1], 0.0],
        [0.0, 0.0, cone_dst[2] / cone_src[2]],
    ];
    let adapt = mul(&invert(BRADFORD)?, &mul(&scale, &BRADFORD));
    Some(mul(&adapt, &to_xyz))
}

/// sRGB's RGB → XYZ (D50) matrix.
fn srgb_to_d50() -> M3 {
    rgb_to_d50(SRGB_XY).expect("sRGB's primaries are not degenerate")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srgb_is_left_alone_and_linear_light_is_brightened() {
        assert!(
            ToSrgb::from_png(PngColour {
                gamma: Some(45_455),
                chrm: None
            })
            .is_none()
        );
        let linear = ToSrgb::from_png(PngColour {
            gamma: Some(100_000),
            chrm: None,
        })
        .expect("gamma 1.0 is not sRGB");
        let mut px = [0, 64, 128, 200, 255, 255, 255, 7];
        linear.apply(&mut px);
        // Linear 64/255 is sRGB 137; 128/255 is 188; alpha stays.
        assert_eq!(px, [0, 137, 188, 200, 255, 255, 255, 7]);
    }

    #[test]
    fn the_srgb_matrix_maps_white_to_d50() {
        let w = apply3(&srgb_to_d50(), [1.0, 1.0, 1.0]);
        for (a, b) in w.iter().zip(D50) {
            assert!((a - b).abs() < 1e-4, "{w:?}");
        }
    }
}
