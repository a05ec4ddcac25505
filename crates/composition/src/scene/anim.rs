//! Keyframed values and easing.
//!
//! A property is either static or a list of keyframes. The easing named on a
//! keyframe shapes the segment from it to the next keyframe; before the first
//! keyframe the value holds the first value, after the last the last value
//! (or, with `loop`, the keyframes repeat with period `last.frame -
//! first.frame`).

/// The largest overshoot of a `cubic-bezier` easing's `y1`, `y2` (either
/// sign): curves people draw stay within about -2 to 3, and a bound keeps an
/// eased value within a known multiple of its keyframes' range.
pub const MAX_BEZIER_Y: f64 = 10.0;

/// How a segment between two keyframes is interpolated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Easing {
    /// Keep the segment's start value until the next keyframe.
    Hold,
    /// Straight line.
    Linear,
    /// `p²`.
    EaseInQuad,
    /// `1 − (1 − p)²`.
    EaseOutQuad,
    /// Quadratic in, then out.
    EaseInOutQuad,
    /// `p³`.
    EaseInCubic,
    /// `1 − (1 − p)³`.
    EaseOutCubic,
    /// Cubic in, then out.
    EaseInOutCubic,
    /// `1 − cos(πp/2)`.
    EaseInSine,
    /// `sin(πp/2)`.
    EaseOutSine,
    /// `(1 − cos(πp))/2`.
    EaseInOutSine,
    /// CSS `cubic-bezier(x1, y1, x2, y2)`: `x1` and `x2` in `0..=1`.
    CubicBezier(f64, f64, f64, f64),
}

impl Easing {
    /// Parses an easing name: `hold`, `linear`, `ease-in-quad`, `ease-out-quad`,
    /// `ease-in-out-quad`, the same for `cubic` and `sine`, or
    /// `cubic-bezier(x1, y1, x2, y2)`.
    ///
    /// # Errors
    /// A message listing what is accepted.
    pub fn parse(s: &str) -> Result<Easing, String> {
        let e = match s.trim() {
            "hold" => Easing::Hold,
            "linear" => Easing::Linear,
            "ease-in-quad" => Easing::EaseInQuad,
            "ease-out-quad" => Easing::EaseOutQuad,
            "ease-in-out-quad" => Easing::EaseInOutQuad,
            "ease-in-cubic" => Easing::EaseInCubic,
            "ease-out-cubic" => Easing::EaseOutCubic,
            "ease-in-out-cubic" => Easing::EaseInOutCubic,
            "ease-in-sine" => Easing::EaseInSine,
            "ease-out-sine" => Easing::EaseOutSine,
            "ease-in-out-sine" => Easing::EaseInOutSine,
            other => {
                let inner = other
                    .strip_prefix("cubic-bezier(")
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| {
                        format!(
                            "unknown easing `{other}`: expected hold, linear, ease-in-quad, \
                             ease-out-quad, ease-in-out-quad, ease-in-cubic, ease-out-cubic, \
                             ease-in-out-cubic, ease-in-sine, ease-out-sine, ease-in-out-sine \
                             or cubic-bezier(x1, y1, x2, y2)"
                        )
                    })?;
                let nums: Vec<f64> = inner
                    .split(',')
                    .map(|n| n.trim().parse::<f64>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| format!("`{other}`: expected four numbers"))?;
                let [x1, y1, x2, y2] = nums[..] else {
                    return Err(format!("`{other}`: expected four numbers"));
                };
                if !(0.0..=1.0).contains(&x1)
                    || !(0.0..=1.0).contains(&x2)
                    || !(-MAX_BEZIER_Y..=MAX_BEZIER_Y).contains(&y1)
                    || !(-MAX_BEZIER_Y..=MAX_BEZIER_Y).contains(&y2)
                {
                    return Err(format!(
                        "`{other}`: x1 and x2 must be in 0-1 and y1, y2 in -{MAX_BEZIER_Y} to {MAX_BEZIER_Y}"
                    ));
                }
                Easing::CubicBezier(x1, y1, x2, y2)
            }
        };
        Ok(e)
    }

    /// The eased progress for linear progress `p` in `0..=1`.
    pub fn apply(self, p: f64) -> f64 {
        let p = p.clamp(0.0, 1.0);
        match self {
            Easing::Hold => 0.0,
            Easing::Linear => p,
            Easing::EaseInQuad => p * p,
            Easing::EaseOutQuad => 1.0 - (1.0 - p) * (1.0 - p),
            Easing::EaseInOutQuad => {
                if p < 0.5 {
                    2.0 * p * p
                } else {
                    1.0 - 2.0 * (1.0 - p) * (1.0 - p)
                }
            }
            Easing::EaseInCubic => p * p * p,
            Easing::EaseOutCubic => {
                let q = 1.0 - p;
                1.0 - q * q * q
            }
            Easing::EaseInOutCubic => {
                if p < 0.5 {
                    4.0 * p * p * p
                } else {
                    let q = 1.0 - p;
                    1.0 - 4.0 * q * q * q
                }
            }
            Easing::EaseInSine => 1.0 - (std::f64::consts::FRAC_PI_2 * p).cos(),
            Easing::EaseOutSine => (std::f64::consts::FRAC_PI_2 * p).sin(),
            Easing::EaseInOutSine => (1.0 - (std::f64::consts::PI * p).cos()) / 2.0,
            Easing::CubicBezier(x1, y1, x2, y2) => cubic_bezier(x1, y1, x2, y2, p),
        }
    }
}

/// Solves the CSS cubic Bézier timing function at `x` (bisection on the
/// monotonic x(t), a fixed number of steps: deterministic, exact at 0 and 1).
fn cubic_bezier(x1: f64, y1: f64, x2: f64, y2: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let bez = |a: f64, b: f64, t: f64| {
        let u = 1.0 - t;
        3.0 * u * u * t * a + 3.0 * u * t * t * b + t * t * t
    };
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    // 60 halvings take the bracket below f64 resolution.
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if bez(x1, x2, mid) < x {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    bez(y1, y2, (lo + hi) / 2.0)
}

/// A value that can be interpolated between keyframes.
pub trait Lerp: Clone {
    /// `a + (b − a)·t`.
    fn lerp(&self, other: &Self, t: f64) -> Self;
}

impl Lerp for f64 {
    fn lerp(&self, other: &Self, t: f64) -> Self {
        self + (other - self) * t
    }
}

impl<const N: usize> Lerp for [f64; N] {
    fn lerp(&self, other: &Self, t: f64) -> Self {
        std::array::from_fn(|i| self[i] + (other[i] - self[i]) * t)
    }
}

/// One keyframe.
#[derive(Debug, Clone, PartialEq)]
pub struct Key<T> {
    /// The frame (in the layer's time).
    pub frame: f64,
    /// The value at that frame.
    pub value: T,
    /// The easing of the segment from this keyframe to the next.
    pub easing: Easing,
}

/// A static or keyframed property.
#[derive(Debug, Clone, PartialEq)]
pub enum Anim<T> {
    /// The same value on every frame.
    Static(T),
    /// Keyframes, sorted by frame, at least one.
    Keys {
        /// The keyframes.
        keys: Vec<Key<T>>,
        /// Whether the keyframes repeat.
        looped: bool,
    },
}

impl<T: Lerp> Anim<T> {
    /// Whether the value is the same on every frame.
    pub fn is_static(&self) -> bool {
        self.settles_at() == Some(f64::NEG_INFINITY)
    }

    /// The frame from which the value never changes again: `-∞` for a
    /// value that never changes, `None` for one that keeps changing (a loop
    /// over a period). Past the last keyframe a value holds the last one.
    pub fn settles_at(&self) -> Option<f64> {
        match self {
            Anim::Static(_) => Some(f64::NEG_INFINITY),
            Anim::Keys { keys, .. } if keys.len() == 1 => Some(f64::NEG_INFINITY),
            Anim::Keys { keys, looped } => {
                let (first, last) = (keys.first()?, keys.last()?);
                if *looped && last.frame > first.frame {
                    None
                } else {
                    Some(last.frame)
                }
            }
        }
    }

    /// The value at (possibly fractional) frame `t`.
    pub fn at(&self, t: f64) -> T {
        match self {
            Anim::Static(v) => v.clone(),
            Anim::Keys { keys, looped } => sample(keys, *looped, t),
        }
    }
}

fn sample<T: Lerp>(keys: &[Key<T>], looped: bool, t: f64) -> T {
    let first = keys
        .first()
        .expect("keyframe lists are validated non-empty");
    let last = keys.last().expect("keyframe lists are validated non-empty");
    let mut t = t;
    let period = last.frame - first.frame;
    if looped && period > 0.0 && t > last.frame {
        t = first.frame + (t - first.frame).rem_euclid(period);
    }
    if t <= first.frame {
        return first.value.clone();
    }
    if t >= last.frame {
        return last.value.clone();
    }
    // Keyframes are few; a linear scan is cheaper than a search.
    let i = keys
        .windows(2)
        .position(|w| t < w[1].frame)
        .expect("t lies strictly inside the keyframe range");
    let (a, b) = (&keys[i], &keys[i + 1]);
    let p = (t - a.frame) / (b.frame - a.frame);
    let e = a.easing.apply(p);
    if a.easing == Easing::Hold {
        return a.value.clone();
    }
    a.value.lerp(&b.value, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(easing: &str, p: f64, expected: f64) {
        let e = Easing::parse(easing).expect("easing parses");
        let got = e.apply(p);
        assert!(
            (got - expected).abs() <= 1e-12,
            "{easing} at {p}: got {got}, expected {expected}"
        );
    }

    #[test]
    fn easing_exact_values() {
        for (name, p, v) in [
            ("linear", 0.25, 0.25),
            ("hold", 0.75, 0.0),
            ("ease-in-quad", 0.5, 0.25),
            ("ease-out-quad", 0.5, 0.75),
            ("ease-in-out-quad", 0.25, 0.125),
            ("ease-in-out-quad", 0.75, 0.875),
            ("ease-in-cubic", 0.5, 0.125),
            ("ease-out-cubic", 0.5, 0.875),
            ("ease-out-cubic", 1.0 / 3.0, 1.0 - 8.0 / 27.0),
            ("ease-in-out-cubic", 0.25, 0.0625),
            ("ease-in-out-cubic", 0.75, 0.9375),
            ("ease-in-sine", 1.0, 1.0),
            ("ease-out-sine", 1.0 / 3.0, 0.5),
            ("ease-in-out-sine", 0.5, 0.5),
            ("ease-in-out-sine", 1.0 / 3.0, 0.25),
            ("cubic-bezier(0, 0, 1, 1)", 0.3, 0.3),
            ("cubic-bezier(0.42, 0, 0.58, 1)", 0.5, 0.5),
            ("cubic-bezier(0.25, 0.1, 0.25, 1)", 0.0, 0.0),
            ("cubic-bezier(0.25, 0.1, 0.25, 1)", 1.0, 1.0),
        ] {
            check(name, p, v);
        }
        for name in [
            "linear",
            "ease-in-quad",
            "ease-out-cubic",
            "ease-in-out-sine",
        ] {
            check(name, 0.0, 0.0);
            check(name, 1.0, 1.0);
        }
    }

    #[test]
    fn bad_easings_are_named() {
        assert!(
            Easing::parse("bounce")
                .expect_err("bad")
                .starts_with("unknown easing `bounce`")
        );
        assert_eq!(
            Easing::parse("cubic-bezier(2, 0, 1, 1)").expect_err("x1 > 1"),
            "`cubic-bezier(2, 0, 1, 1)`: x1 and x2 must be in 0-1 and y1, y2 in -10 to 10"
        );
    }

    #[test]
    fn keyframes_hold_ends_and_loop() {
        let k = |frame: f64, value: f64, easing| Key {
            frame,
            value,
            easing,
        };
        let a = Anim::Keys {
            keys: vec![k(10.0, 1.0, Easing::Linear), k(20.0, 3.0, Easing::Hold)],
            looped: false,
        };
        assert_eq!(a.at(0.0), 1.0);
        assert_eq!(a.at(15.0), 2.0);
        assert_eq!(a.at(25.0), 3.0);
        let looped = Anim::Keys {
            keys: vec![k(0.0, 0.0, Easing::Linear), k(10.0, 10.0, Easing::Linear)],
            looped: true,
        };
        assert_eq!(looped.at(13.0), 3.0);
        let hold = Anim::Keys {
            keys: vec![k(0.0, 5.0, Easing::Hold), k(10.0, 7.0, Easing::Linear)],
            looped: false,
        };
        assert_eq!(hold.at(9.9), 5.0);
        assert_eq!(hold.at(10.0), 7.0);
    }
}
