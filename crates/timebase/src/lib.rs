//! Exact time for Montage.
//!
//! This crate owns the arithmetic that decides which frame and which audio
//! sample happens when. Nothing here uses floating point: a frame rate is a
//! reduced fraction [`Fps`], frames and samples are [`FrameIndex`] and
//! [`SampleIndex`], and every conversion is a named method computed in `u128`
//! so it cannot overflow for any `u64` index.
//!
//! The central formula (see `DESIGN.md`, *Exact time*): the first audio sample
//! of frame `f` is `S(f) = floor(f · rate · den / num)`, always computed from
//! the frame's index in the *whole* video. A chunk of frames `[a, b]` owns the
//! samples `[S(a), S(b+1))`, so chunk spans telescope to `[0, S(N))`: no
//! sample is lost or doubled, whatever the frame rate.
//!
//! ```
//! use timebase::{Fps, FrameIndex, DEFAULT_SAMPLE_RATE};
//!
//! let ntsc = Fps::new(30_000, 1001)?;
//! // Frame 37 of a 29.97 fps video starts at sample 59_259 (48 kHz).
//! assert_eq!(ntsc.first_sample_of(FrameIndex(37), DEFAULT_SAMPLE_RATE).0, 59_259);
//! // Its MPEG-TS presentation time is 37 · 3003 ticks of the 90 kHz clock.
//! assert_eq!(ntsc.ticks_of(FrameIndex(37), 90_000), Some(37 * 3003));
//! # Ok::<(), timebase::TimeError>(())
//! ```
#![deny(missing_docs)]

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The MPEG-TS system clock used for PTS and DTS (ISO/IEC 13818-1, 2.4.2.1:
/// presentation time stamps count periods of a 90 kHz clock).
pub const MPEG_TS_CLOCK_HZ: u32 = 90_000;

/// The audio sample rate Montage renders at unless told otherwise.
pub const DEFAULT_SAMPLE_RATE: u32 = 48_000;

/// Audio channel count of every rendered track (interleaved stereo).
pub const AUDIO_CHANNELS: u16 = 2;

/// An error in time arithmetic or in a value that describes time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    /// A frame rate with a zero numerator or denominator.
    #[error("fps {num}/{den} is invalid: numerator and denominator must both be at least 1")]
    ZeroFps {
        /// The numerator given.
        num: u32,
        /// The denominator given.
        den: u32,
    },
    /// A frame rate string that is not `N`, `N/D` or a decimal like `29.97`.
    #[error(
        "fps `{given}` is not a frame rate: write it as an integer (`30`) or a fraction (`30000/1001`)"
    )]
    BadFpsSyntax {
        /// The text given.
        given: String,
    },
    /// A sample rate of zero.
    #[error("sample rate 0 is invalid: it must be at least 1 Hz")]
    ZeroSampleRate,
    /// A frame range whose first frame is after its last.
    #[error("frame range is inverted: first {first} is after last {last}")]
    InvertedFrameRange {
        /// The first frame given.
        first: u64,
        /// The last frame given.
        last: u64,
    },
    /// A sample span that ends before it starts.
    #[error("sample span is inverted: end {end} is before start {start}")]
    InvertedSampleSpan {
        /// The start given.
        start: u64,
        /// The end given.
        end: u64,
    },
}

/// A frame rate as a reduced fraction `num/den` of two non-zero integers.
///
/// `Fps` is always stored reduced, so `60/2` and `30/1` compare equal.
///
/// ```
/// use timebase::Fps;
/// assert_eq!(Fps::new(60, 2)?, Fps::new(30, 1)?);
/// assert_eq!("30000/1001".parse::<Fps>()?.to_string(), "30000/1001");
/// assert!(Fps::new(0, 1).is_err());
/// # Ok::<(), timebase::TimeError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "FpsRepr", into = "FpsRepr")]
pub struct Fps {
    num: u32,
    den: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum FpsRepr {
    Integer(u32),
    Fraction { num: u32, den: u32 },
    Text(String),
}

impl TryFrom<FpsRepr> for Fps {
    type Error = TimeError;
    fn try_from(repr: FpsRepr) -> Result<Self, Self::Error> {
        match repr {
            FpsRepr::Integer(n) => Fps::new(n, 1),
            FpsRepr::Fraction { num, den } => Fps::new(num, den),
            FpsRepr::Text(text) => text.parse(),
        }
    }
}

impl From<Fps> for FpsRepr {
    fn from(fps: Fps) -> Self {
        FpsRepr::Fraction {
            num: fps.num,
            den: fps.den,
        }
    }
}

const fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

impl Fps {
    /// Builds a frame rate from a numerator and denominator, reducing it.
    ///
    /// # Errors
    /// [`TimeError::ZeroFps`] if either part is zero.
    pub const fn new(num: u32, den: u32) -> Result<Self, TimeError> {
        if num == 0 || den == 0 {
            return Err(TimeError::ZeroFps { num, den });
        }
        let g = gcd(num as u64, den as u64) as u32;
        Ok(Fps {
            num: num / g,
            den: den / g,
        })
    }

    /// An integer frame rate such as 24, 25, 30 or 60.
    ///
    /// # Errors
    /// [`TimeError::ZeroFps`] if `n` is zero.
    pub const fn integer(n: u32) -> Result<Self, TimeError> {
        Fps::new(n, 1)
    }

    /// The numerator of the reduced fraction.
    pub const fn num(self) -> u32 {
        self.num
    }

    /// The denominator of the reduced fraction.
    pub const fn den(self) -> u32 {
        self.den
    }

    /// The frame rate when only every `n`th frame is kept: `num / (den · n)`.
    ///
    /// # Errors
    /// [`TimeError::ZeroFps`] if `n` is zero or the denominator overflows.
    pub fn every_nth(self, n: u32) -> Result<Self, TimeError> {
        let den = self.den.checked_mul(n).ok_or(TimeError::ZeroFps {
            num: self.num,
            den: 0,
        })?;
        Fps::new(self.num, den)
    }

    /// The first audio sample of frame `frame`: `floor(frame · rate · den / num)`.
    ///
    /// Always pass the frame's index in the whole video, never within a chunk:
    /// that is what makes chunk sample spans tile exactly.
    pub const fn first_sample_of(self, frame: FrameIndex, sample_rate: u32) -> SampleIndex {
        let n = frame.0 as u128 * sample_rate as u128 * self.den as u128 / self.num as u128;
        // frame < 2^64 and rate·den/num ≤ 2^32·2^32, but the quotient for any
        // real video (rate ≤ 2^32, fps ≥ 1/2^32) fits: saturate rather than wrap.
        if n > u64::MAX as u128 {
            SampleIndex(u64::MAX)
        } else {
            SampleIndex(n as u64)
        }
    }

    /// The samples owned by the inclusive frame range `range`: `[S(first), S(last+1))`.
    pub const fn sample_span_of(self, range: FrameRange, sample_rate: u32) -> SampleSpan {
        SampleSpan {
            start: self.first_sample_of(range.first, sample_rate),
            end: self.first_sample_of(FrameIndex(range.last.0 + 1), sample_rate),
        }
    }

    /// The start of `frame` in ticks of a clock running at `clock_hz`
    /// (`frame · clock_hz · den / num`), or `None` if that is not an integer.
    ///
    /// At 90 kHz every common rate gives integers (3000 ticks per frame at 30,
    /// 3003 at 30000/1001, 3600 at 25, 1500 at 60).
    pub const fn ticks_of(self, frame: FrameIndex, clock_hz: u32) -> Option<u64> {
        let scaled = frame.0 as u128 * clock_hz as u128 * self.den as u128;
        if !scaled.is_multiple_of(self.num as u128) {
            return None;
        }
        let q = scaled / self.num as u128;
        if q > u64::MAX as u128 {
            None
        } else {
            Some(q as u64)
        }
    }

    /// The duration of one frame in ticks of `clock_hz`, if it is an integer.
    pub const fn ticks_per_frame(self, clock_hz: u32) -> Option<u64> {
        self.ticks_of(FrameIndex(1), clock_hz)
    }

    /// The number of whole frames that start before `seconds_num / seconds_den`
    /// seconds, i.e. `ceil(t · num / den)`: how many frames a duration holds.
    pub const fn frames_in(self, seconds_num: u64, seconds_den: u64) -> u64 {
        let n = seconds_num as u128 * self.num as u128;
        let d = seconds_den as u128 * self.den as u128;
        let q = n.div_ceil(d);
        if q > u64::MAX as u128 {
            u64::MAX
        } else {
            q as u64
        }
    }
}

impl fmt::Display for Fps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

impl FromStr for Fps {
    type Err = TimeError;

    /// Parses `30`, `30000/1001`, or the conventional decimals `23.976`,
    /// `29.97` and `59.94` (which name the NTSC rates `N·1000/1001`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TimeError::BadFpsSyntax {
            given: s.to_owned(),
        };
        let t = s.trim();
        if let Some((n, d)) = t.split_once('/') {
            let num = n.trim().parse::<u32>().map_err(|_| bad())?;
            let den = d.trim().parse::<u32>().map_err(|_| bad())?;
            return Fps::new(num, den);
        }
        match t {
            "23.976" | "23.98" => return Fps::new(24_000, 1001),
            "29.97" => return Fps::new(30_000, 1001),
            "47.952" => return Fps::new(48_000, 1001),
            "59.94" => return Fps::new(60_000, 1001),
            _ => {}
        }
        let n = t.parse::<u32>().map_err(|_| bad())?;
        Fps::new(n, 1)
    }
}

/// The index of a frame in a composition (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FrameIndex(pub u64);

impl fmt::Display for FrameIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The index of an audio sample frame (one value per channel) in a composition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SampleIndex(pub u64);

impl fmt::Display for SampleIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An inclusive range of frames `[first, last]`, as users and Remotion write
/// frame ranges. Always non-empty: `first <= last`, also when deserialized
/// (`{"first": 5, "last": 1}` is refused with [`TimeError::InvertedFrameRange`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "FrameRangeRepr")]
pub struct FrameRange {
    /// The first frame in the range.
    pub first: FrameIndex,
    /// The last frame in the range (inclusive).
    pub last: FrameIndex,
}

impl FrameRange {
    /// The range `[first, last]`, or `None` if `first > last`.
    pub const fn new(first: u64, last: u64) -> Option<Self> {
        if first > last {
            None
        } else {
            Some(FrameRange {
                first: FrameIndex(first),
                last: FrameIndex(last),
            })
        }
    }

    /// Number of frames in the range (`last - first + 1`).
    pub const fn len(self) -> u64 {
        self.last.0 - self.first.0 + 1
    }

    /// Always false: a `FrameRange` holds at least one frame.
    pub const fn is_empty(self) -> bool {
        false
    }

    /// Whether `frame` lies in the range.
    pub const fn contains(self, frame: FrameIndex) -> bool {
        frame.0 >= self.first.0 && frame.0 <= self.last.0
    }
}

/// What a serialized [`FrameRange`] holds before it is checked.
#[derive(Deserialize)]
struct FrameRangeRepr {
    first: u64,
    last: u64,
}

impl TryFrom<FrameRangeRepr> for FrameRange {
    type Error = TimeError;
    fn try_from(FrameRangeRepr { first, last }: FrameRangeRepr) -> Result<Self, Self::Error> {
        FrameRange::new(first, last).ok_or(TimeError::InvertedFrameRange { first, last })
    }
}

impl fmt::Display for FrameRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// A half-open span of audio samples `[start, end)`, with `start <= end`, also
/// when deserialized ([`TimeError::InvertedSampleSpan`] otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "SampleSpanRepr")]
pub struct SampleSpan {
    /// The first sample in the span.
    pub start: SampleIndex,
    /// One past the last sample in the span.
    pub end: SampleIndex,
}

impl SampleSpan {
    /// The span `[start, end)`; `None` if `end < start`.
    pub const fn new(start: u64, end: u64) -> Option<Self> {
        if end < start {
            None
        } else {
            Some(SampleSpan {
                start: SampleIndex(start),
                end: SampleIndex(end),
            })
        }
    }

    /// Number of samples (per channel) in the span.
    pub const fn len(self) -> u64 {
        self.end.0 - self.start.0
    }

    /// Whether the span holds no samples.
    pub const fn is_empty(self) -> bool {
        self.end.0 == self.start.0
    }
}

/// What a serialized [`SampleSpan`] holds before it is checked.
#[derive(Deserialize)]
struct SampleSpanRepr {
    start: u64,
    end: u64,
}

impl TryFrom<SampleSpanRepr> for SampleSpan {
    type Error = TimeError;
    fn try_from(SampleSpanRepr { start, end }: SampleSpanRepr) -> Result<Self, Self::Error> {
        SampleSpan::new(start, end).ok_or(TimeError::InvertedSampleSpan { start, end })
    }
}

impl fmt::Display for SampleSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[track_caller]
    fn check_ticks(num: u32, den: u32, ticks: u64) {
        let fps = Fps::new(num, den).expect("valid fps");
        assert_eq!(fps.ticks_per_frame(MPEG_TS_CLOCK_HZ), Some(ticks), "{fps}");
    }

    #[test]
    fn common_rates_have_integer_90khz_frame_durations() {
        check_ticks(30, 1, 3000);
        check_ticks(30_000, 1001, 3003);
        check_ticks(25, 1, 3600);
        check_ticks(24, 1, 3750);
        check_ticks(60, 1, 1500);
        // 23.976 fps is the one common rate without an integer 90 kHz duration.
        let film = Fps::new(24_000, 1001).expect("valid fps");
        assert_eq!(film.ticks_per_frame(MPEG_TS_CLOCK_HZ), None);
        assert_eq!(film.ticks_of(FrameIndex(4), MPEG_TS_CLOCK_HZ), Some(15_015));
    }

    #[test]
    fn ntsc_spans_alternate_as_measured() {
        // At 30000/1001 a 37-frame chunk is 59259.2 samples: the integer
        // spans are 59259 or 59260 depending on where the chunk starts.
        let fps = Fps::new(30_000, 1001).expect("valid");
        let lens: Vec<u64> = (0..6)
            .map(|i: u64| {
                let r = FrameRange::new(i * 37, i * 37 + 36).expect("range");
                fps.sample_span_of(r, DEFAULT_SAMPLE_RATE).len()
            })
            .collect();
        assert_eq!(lens, vec![59_259, 59_259, 59_259, 59_259, 59_260, 59_259]);
    }

    #[test]
    fn zero_fps_is_an_error_naming_the_values() {
        let err = Fps::new(0, 1).expect_err("zero");
        assert_eq!(
            err.to_string(),
            "fps 0/1 is invalid: numerator and denominator must both be at least 1"
        );
        assert!(Fps::new(30, 0).is_err());
    }

    #[test]
    fn parses_and_prints() {
        for (text, num, den) in [
            ("30", 30, 1),
            ("30000/1001", 30_000, 1001),
            ("60/2", 30, 1),
            ("29.97", 30_000, 1001),
            ("59.94", 60_000, 1001),
        ] {
            let fps: Fps = text.parse().expect(text);
            assert_eq!((fps.num(), fps.den()), (num, den), "{text}");
        }
        assert!("thirty".parse::<Fps>().is_err());
        assert!("30.5".parse::<Fps>().is_err());
        assert_eq!(Fps::new(24, 1).expect("fps").to_string(), "24");
    }

    #[test]
    fn fps_serde_accepts_integer_fraction_and_text() {
        let a: Fps = serde_json::from_str("30").expect("int");
        let b: Fps = serde_json::from_str(r#"{"num":30000,"den":1001}"#).expect("frac");
        let c: Fps = serde_json::from_str(r#""30000/1001""#).expect("text");
        assert_eq!(a, Fps::new(30, 1).expect("fps"));
        assert_eq!(b, c);
        assert!(serde_json::from_str::<Fps>(r#"{"num":0,"den":1}"#).is_err());
    }

    #[test]
    fn ranges_and_spans_deserialize_through_their_checks() {
        let r: FrameRange = serde_json::from_str(r#"{"first":5,"last":5}"#).expect("one frame");
        assert_eq!(r, FrameRange::new(5, 5).expect("range"));
        let s: SampleSpan = serde_json::from_str(r#"{"start":7,"end":7}"#).expect("empty span");
        assert_eq!(s, SampleSpan::new(7, 7).expect("span"));
        // Round trip: what is written is read back.
        let text = serde_json::to_string(&r).expect("write");
        assert_eq!(serde_json::from_str::<FrameRange>(&text).expect("read"), r);

        let err = serde_json::from_str::<FrameRange>(r#"{"first":5,"last":1}"#)
            .expect_err("inverted range");
        assert_eq!(
            err.to_string(),
            "frame range is inverted: first 5 is after last 1"
        );
        let err = serde_json::from_str::<SampleSpan>(r#"{"start":9,"end":2}"#)
            .expect_err("inverted span");
        assert_eq!(
            err.to_string(),
            "sample span is inverted: end 2 is before start 9"
        );
        // Unknown shapes are still refused by serde itself.
        assert!(serde_json::from_str::<FrameRange>(r#"{"first":5}"#).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn sample_of_frame_is_floor_of_exact_product(
            f in 0u64..10_000_000,
            (num, den) in prop::sample::select(vec![(24u32, 1u32), (25, 1), (30, 1), (30_000, 1001), (60_000, 1001), (60, 1)]),
        ) {
            let fps = Fps::new(num, den).expect("valid");
            let s = fps.first_sample_of(FrameIndex(f), DEFAULT_SAMPLE_RATE).0 as u128;
            let exact_num = f as u128 * 48_000 * den as u128;
            // s = floor(exact_num / num) ⇔ s·num ≤ exact_num < (s+1)·num
            prop_assert!(s * num as u128 <= exact_num);
            prop_assert!(exact_num < (s + 1) * num as u128);
        }
    }
}
