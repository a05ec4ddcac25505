//! Band-limited resampling to 48 kHz: a Kaiser-windowed sinc evaluated at
//! exact rational positions (polyphase), in scalar code.
//!
//! Output sample `n` sits at source position `n·from/to`, split in integers
//! into a source index and a phase, and is the dot product of the source
//! samples around it with that phase's filter. It depends on nothing but `n`
//! and the source, so any span of output equals the same span of a whole
//! render. The tables are built with `libm` (the same sines and powers on
//! every machine) and the sums are plain `f64` loops in a fixed order (no
//! run-time SIMD dispatch, whose rounding would differ between workers).
//!
//! Design (Kaiser's formulas): stop band from the lower Nyquist frequency
//! `min(from, to)/2` at 100 dB, pass band to 20 kHz (or, below 44.1 kHz,
//! the same 90.7 % of the lower Nyquist frequency that 20 kHz is of
//! 22.05 kHz), ripple below 0.001 dB. Images and aliases are thus ≤ −100 dB
//! (the goal is −90 dBFS) and the pass band flat to ±0.1 dB.

/// Stop-band attenuation in dB.
const ATTENUATION_DB: f64 = 100.0;

/// The widest pass band, in Hz.
const PASS_BAND_HZ: f64 = 20_000.0;

/// 20 kHz as a fraction of 22.05 kHz: the pass band's share of the Nyquist
/// frequency when that is lower than 22.05 kHz.
const PASS_FRACTION: f64 = 20_000.0 / 22_050.0;

/// Phases tabulated exactly; a rate pair needing more (an odd rate such as
/// 44 056 Hz) interpolates linearly between this many.
const MAX_PHASES: u64 = 4096;

/// A resampler from one rate to another.
#[derive(Debug)]
pub struct Resampler {
    /// The rates divided by their greatest common divisor: output `n` is at
    /// source position `n·step/phases`.
    step: u64,
    phases: u64,
    /// Taps either side: the filter of output `n` reads source samples
    /// `i − half + 1 ..= i + half` around `i = floor(n·step/phases)`.
    half: u64,
    /// Tabulated phases (`phases`, or `MAX_PHASES + 1` when interpolating).
    table_phases: u64,
    /// `table_phases` rows of `2·half` coefficients.
    table: Vec<f64>,
}

impl Resampler {
    /// A resampler from `from` Hz to `to` Hz (both non-zero).
    pub fn new(from: u32, to: u32) -> Resampler {
        let g = gcd(u64::from(from), u64::from(to));
        let (step, phases) = (u64::from(from) / g, u64::from(to) / g);
        let (fin, fout) = (f64::from(from), f64::from(to));
        let stop = fin.min(fout) / 2.0;
        let pass = PASS_BAND_HZ.min(stop * PASS_FRACTION);
        let cutoff = (pass + stop) / 2.0;
        // Kaiser: length for the transition width, β for the attenuation.
        let transition = (stop - pass) / fin;
        let taps = (ATTENUATION_DB - 7.95) / (14.36 * transition);
        let half = (taps / 2.0).ceil() as u64 + 1;
        let beta = 0.1102 * (ATTENUATION_DB - 8.7);
        let exact = phases <= MAX_PHASES;
        let table_phases = if exact { phases } else { MAX_PHASES + 1 };
        let width = 2 * half;
        let i0_beta = bessel_i0(beta);
        let gain = 2.0 * cutoff / fin;
        let mut table = Vec::with_capacity((table_phases * width) as usize);
        for p in 0..table_phases {
            let frac = if exact {
                p as f64 / phases as f64
            } else {
                p as f64 / MAX_PHASES as f64
            };
            let row: Vec<f64> = (0..width)
                .map(|j| {
                    // Distance in source samples from output position to tap j.
                    let t = (half - 1) as f64 - j as f64 + frac;
                    let x = t / half as f64;
                    let window = if x.abs() >= 1.0 {
                        0.0
                    } else {
                        bessel_i0(beta * (1.0 - x * x).sqrt()) / i0_beta
                    };
                    gain * sinc(gain * t) * window
                })
                .collect();
            // Each phase passes DC exactly: otherwise the phases' slightly
            // different gains would modulate a steady signal.
            let sum: f64 = row.iter().sum();
            table.extend(row.iter().map(|c| c / sum));
        }
        Resampler {
            step,
            phases,
            half,
            table_phases,
            table,
        }
    }

    /// The source index and phase of output sample `n`.
    fn position(&self, n: u64) -> (u64, u64) {
        let p = u128::from(n) * u128::from(self.step);
        let phases = u128::from(self.phases);
        ((p / phases) as u64, (p % phases) as u64)
    }

    /// The source samples outputs `[n0, n1)` read: `[first, end)`, which may
    /// start before 0.
    pub fn source_range(&self, n0: u64, n1: u64) -> (i64, i64) {
        let (a, _) = self.position(n0);
        let (b, _) = self.position(n1.max(n0 + 1) - 1);
        (
            a as i64 - self.half as i64 + 1,
            b as i64 + self.half as i64 + 1,
        )
    }

    /// Outputs `[n0, n0 + out.len()/2)` (interleaved stereo) from `src`,
    /// the stereo source samples from index `first` (as
    /// [`Resampler::source_range`] gave).
    pub fn run(&self, n0: u64, src: &[f32], first: i64, out: &mut [f32]) {
        let width = (2 * self.half) as usize;
        let mut coef = vec![0.0f64; width];
        for (k, o) in out.chunks_exact_mut(2).enumerate() {
            let (i, phase) = self.position(n0 + k as u64);
            let row = self.coefficients(phase, &mut coef);
            let start = ((i as i64 - self.half as i64 + 1) - first) as usize * 2;
            let taps = &src[start..start + 2 * width];
            let (mut l, mut r) = (0.0f64, 0.0f64);
            for (c, s) in row.iter().zip(taps.chunks_exact(2)) {
                l += c * f64::from(s[0]);
                r += c * f64::from(s[1]);
            }
            o[0] = l as f32;
            o[1] = r as f32;
        }
    }

    /// The filter of `phase`: a table row, or two rows mixed into `buf`.
    fn coefficients<'a>(&'a self, phase: u64, buf: &'a mut [f64]) -> &'a [f64] {
        let width = (2 * self.half) as usize;
        if self.table_phases == self.phases {
            let at = phase as usize * width;
            return &self.table[at..at + width];
        }
        let scaled = u128::from(phase) * u128::from(MAX_PHASES);
        let q = (scaled / u128::from(self.phases)) as usize;
        let frac = (scaled % u128::from(self.phases)) as f64 / self.phases as f64;
        let (a, b) = (
            &self.table[q * width..(q + 1) * width],
            &self.table[(q + 1) * width..(q + 2) * width],
        );
        for ((o, x), y) in buf.iter_mut().zip(a).zip(b) {
            *o = x + (y - x) * frac;
        }
        buf
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `sin(πx)/(πx)`.
fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        libm::sin(px) / px
    }
}

/// The modified Bessel function of the first kind, order 0, by its series
/// (only products and sums: the same on every machine).
fn bessel_i0(x: f64) -> f64 {
    let q = x * x / 4.0;
    let (mut sum, mut term, mut k) = (1.0f64, 1.0f64, 1.0f64);
    while term > sum * 1e-17 {
        term *= q / (k * k);
        sum += term;
        k += 1.0;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_phase_passes_dc_unchanged() {
        for (from, to) in [
            (44_100, 48_000),
            (96_000, 48_000),
            (8_000, 48_000),
            (44_056, 48_000),
        ] {
            let r = Resampler::new(from, to);
            let width = (2 * r.half) as usize;
            for p in 0..r.table_phases as usize {
                let sum: f64 = r.table[p * width..(p + 1) * width].iter().sum();
                assert!((sum - 1.0).abs() < 1e-12, "{from}: phase {p} sums to {sum}");
            }
        }
    }

    #[test]
    fn spans_equal_the_whole() {
        let r = Resampler::new(44_100, 48_000);
        let src: Vec<f32> = (0..2000)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let at = |n0: u64, n1: u64| {
            let (first, end) = r.source_range(n0, n1);
            let padded: Vec<f32> = (first..end)
                .flat_map(|i| {
                    let v = usize::try_from(i).ok().and_then(|i| src.get(i)).copied();
                    let v = v.unwrap_or(0.0);
                    [v, -v]
                })
                .collect();
            let mut out = vec![0.0; ((n1 - n0) * 2) as usize];
            r.run(n0, &padded, first, &mut out);
            out
        };
        let whole = at(0, 2176);
        assert_eq!(&whole[2 * 123..2 * 1456], &at(123, 1456)[..]);
        assert_eq!(&whole[2 * 2175..], &at(2175, 2176)[..]);
    }
}
