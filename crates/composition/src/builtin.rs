//! Built-in Rust compositions.
//!
//! [`TestPattern`] is a synthetic composition for tests, benchmarks and smoke
//! checks of a worker fleet: it needs no assets, renders fast at any size and
//! rate, and makes every frame identifiable from its pixels (the frame index
//! is drawn as a row of black and white blocks) and every sample predictable
//! (a continuous sine computed from the global sample index).

use std::sync::Arc;

use timebase::{Fps, FrameIndex, SampleSpan};

use crate::{
    AUDIO_CHANNELS, Composition, CompositionError, CompositionMeta, FrameRenderer, Prepared, Props,
    SAMPLE_RATE, check_audio_buffer, check_frame_buffer,
};

/// The id of [`TestPattern`].
pub const TEST_PATTERN_ID: &str = "test-pattern";

/// The test pattern's version (see [`crate::CompositionMeta::version`]).
pub const TEST_PATTERN_VERSION: &str = "1";

/// Number of bits of the frame index drawn as blocks along the top.
pub const TEST_PATTERN_INDEX_BITS: u32 = 16;

/// A synthetic composition: moving colour bars, a sweeping box, the frame
/// index as blocks, and a continuous sine.
///
/// Props (all optional): `width` (320), `height` (180), `fps` (`"30"`; any
/// fraction such as `"30000/1001"`), `duration` in frames (90), `audio`
/// (`true`), `frequency` in Hz (440), `amplitude` (0.25).
#[derive(Debug, Clone, Default)]
pub struct TestPattern;

impl TestPattern {
    /// The test pattern composition.
    pub fn new() -> Self {
        TestPattern
    }
}

#[derive(Debug, Clone)]
struct Settings {
    meta: CompositionMeta,
    frequency: u32,
    amplitude: f32,
}

fn prop_u64(
    props: &Props,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, CompositionError> {
    let Some(v) = props.get(name) else {
        return Ok(default);
    };
    let n = v
        .as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()));
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(CompositionError::Invalid {
            context: format!("prop `{name}`"),
            message: format!("{v} is invalid: expected an integer in {min}-{max}"),
        }),
    }
}

fn resolve(props: &Props) -> Result<Settings, CompositionError> {
    let known = [
        "width",
        "height",
        "fps",
        "duration",
        "audio",
        "frequency",
        "amplitude",
    ];
    if let Some(unknown) = props.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(CompositionError::Invalid {
            context: format!("prop `{unknown}`"),
            message: format!(
                "unknown prop for `{TEST_PATTERN_ID}`; known props: {}",
                known.join(", ")
            ),
        });
    }
    let width = prop_u64(props, "width", 320, 2, u64::from(crate::MAX_DIMENSION))? as u32;
    let height = prop_u64(props, "height", 180, 2, u64::from(crate::MAX_DIMENSION))? as u32;
    let duration = prop_u64(props, "duration", 90, 1, crate::MAX_DURATION_FRAMES)?;
    let frequency = prop_u64(props, "frequency", 440, 1, 20_000)? as u32;
    let fps = match props.get("fps") {
        None => Fps::new(30, 1).map_err(|e| CompositionError::Invalid {
            context: "prop `fps`".into(),
            message: e.to_string(),
        })?,
        Some(v) => {
            serde_json::from_value::<Fps>(v.clone()).map_err(|e| CompositionError::Invalid {
                context: "prop `fps`".into(),
                message: format!("{v} is invalid: {e}"),
            })?
        }
    };
    let has_audio = match props.get("audio") {
        None => true,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(v) => {
            return Err(CompositionError::Invalid {
                context: "prop `audio`".into(),
                message: format!("{v} is invalid: expected true or false"),
            });
        }
    };
    let amplitude = match props.get("amplitude") {
        None => 0.25,
        Some(v) => match v.as_f64() {
            Some(a) if (0.0..=1.0).contains(&a) => a as f32,
            _ => {
                return Err(CompositionError::Invalid {
                    context: "prop `amplitude`".into(),
                    message: format!("{v} is invalid: expected a number in 0-1"),
                });
            }
        },
    };
    let mut resolved = props.clone();
    resolved.insert("width".into(), width.into());
    resolved.insert("height".into(), height.into());
    resolved.insert("fps".into(), fps.to_string().into());
    resolved.insert("duration".into(), duration.into());
    resolved.insert("audio".into(), has_audio.into());
    resolved.insert("frequency".into(), frequency.into());
    let meta = CompositionMeta {
        id: TEST_PATTERN_ID.to_owned(),
        width,
        height,
        fps,
        duration_frames: duration,
        has_audio,
        props: resolved,
        version: TEST_PATTERN_VERSION.to_owned(),
    };
    meta.validate()?;
    Ok(Settings {
        meta,
        frequency,
        amplitude,
    })
}

impl Composition for TestPattern {
    fn id(&self) -> &str {
        TEST_PATTERN_ID
    }

    fn describe(&self, props: &Props) -> Result<CompositionMeta, CompositionError> {
        Ok(resolve(props)?.meta)
    }

    fn prepare(&self, props: &Props) -> Result<Arc<dyn Prepared>, CompositionError> {
        Ok(Arc::new(resolve(props)?))
    }
}

impl Prepared for Settings {
    fn meta(&self) -> &CompositionMeta {
        &self.meta
    }

    fn frame_renderer(&self) -> Result<Box<dyn FrameRenderer>, CompositionError> {
        Ok(Box::new(PatternRenderer {
            meta: self.meta.clone(),
        }))
    }

    fn render_audio(&self, span: SampleSpan, out: &mut [f32]) -> Result<(), CompositionError> {
        check_audio_buffer(span, out)?;
        if !self.meta.has_audio {
            out.fill(0.0);
            return Ok(());
        }
        let rate = u64::from(SAMPLE_RATE);
        let freq = u64::from(self.frequency);
        for (i, frame) in out.chunks_exact_mut(AUDIO_CHANNELS).enumerate() {
            let n = span.start.0 + i as u64;
            // Reduce the phase exactly in integers so a sample's value depends
            // only on its global index, never on where a span began.
            let phase = (n % rate) * freq % rate;
            let v =
                (std::f64::consts::TAU * phase as f64 / rate as f64).sin() as f32 * self.amplitude;
            frame.fill(v);
        }
        Ok(())
    }
}

struct PatternRenderer {
    meta: CompositionMeta,
}

/// Eight bar colours (premultiplied, opaque), shifted by one bar per frame.
const BARS: [[u8; 3]; 8] = [
    [235, 235, 235],
    [235, 235, 16],
    [16, 235, 235],
    [16, 235, 16],
    [235, 16, 235],
    [235, 16, 16],
    [16, 16, 235],
    [16, 16, 16],
];

impl FrameRenderer for PatternRenderer {
    fn render_frame(&mut self, frame: FrameIndex, rgba: &mut [u8]) -> Result<(), CompositionError> {
        check_frame_buffer(&self.meta, rgba)?;
        if frame.0 >= self.meta.duration_frames {
            return Err(CompositionError::Render {
                frame: frame.0,
                message: format!(
                    "outside the composition: frames run 0-{}",
                    self.meta.duration_frames - 1
                ),
            });
        }
        let (w, h) = (self.meta.width as usize, self.meta.height as usize);
        let f = frame.0 as usize;
        let bar_w = w.div_ceil(BARS.len()).max(1);
        let block = (w / TEST_PATTERN_INDEX_BITS as usize).clamp(1, 16);
        let box_size = (h / 4).max(1);
        let box_x = (f * 7) % w.saturating_sub(box_size).max(1);
        let box_y = h / 2;
        for (y, row) in rgba.chunks_exact_mut(w * 4).enumerate() {
            for (x, px) in row.chunks_exact_mut(4).enumerate() {
                let mut c = BARS[(x / bar_w + f) % BARS.len()];
                if y >= box_y && y < box_y + box_size && x >= box_x && x < box_x + box_size {
                    c = [128, 128, 128];
                }
                if y < block {
                    let bit = x / block;
                    if bit < TEST_PATTERN_INDEX_BITS as usize {
                        let on = (f >> (TEST_PATTERN_INDEX_BITS as usize - 1 - bit)) & 1 == 1;
                        c = if on { [255, 255, 255] } else { [0, 0, 0] };
                    }
                }
                px.copy_from_slice(&[c[0], c[1], c[2], 255]);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn props(json: serde_json::Value) -> Props {
        json.as_object().cloned().expect("object")
    }

    #[test]
    fn resolves_defaults_and_props() {
        let m = TestPattern.describe(&Props::new()).expect("defaults");
        assert_eq!((m.width, m.height, m.duration_frames), (320, 180, 90));
        let m = TestPattern
            .describe(&props(
                serde_json::json!({"fps": "30000/1001", "duration": 7}),
            ))
            .expect("props");
        assert_eq!(m.fps, Fps::new(30_000, 1001).expect("fps"));
        assert_eq!(m.duration_frames, 7);
    }

    #[test]
    fn bad_props_name_the_prop() {
        let err = TestPattern
            .describe(&props(serde_json::json!({"width": 0})))
            .expect_err("width 0");
        assert_eq!(
            err.to_string(),
            "prop `width`: 0 is invalid: expected an integer in 2-8192"
        );
        let err = TestPattern
            .describe(&props(serde_json::json!({"colour": 1})))
            .expect_err("unknown");
        assert!(
            err.to_string().starts_with("prop `colour`: unknown prop"),
            "{err}"
        );
    }

    #[test]
    fn frames_encode_their_index_and_are_deterministic() {
        let p = TestPattern.prepare(&Props::new()).expect("prepare");
        let mut a = vec![0; p.meta().frame_bytes()];
        let mut b = vec![0; p.meta().frame_bytes()];
        let mut r1 = p.frame_renderer().expect("renderer");
        let mut r2 = p.frame_renderer().expect("renderer");
        r1.render_frame(FrameIndex(5), &mut a).expect("frame");
        r2.render_frame(FrameIndex(6), &mut b).expect("frame");
        r2.render_frame(FrameIndex(5), &mut b).expect("frame");
        assert_eq!(a, b);
        // Bit 15 (the last block) of frame 5 is 1, bit 14 is 0.
        let block = 16; // min(320 / 16, 16): blocks are capped at 16 px
        let px = |x: usize| a[x * 4];
        assert_eq!(px(15 * block), 255);
        assert_eq!(px(14 * block), 0);
        assert_eq!(px(13 * block), 255);
        let err = r1
            .render_frame(FrameIndex(90), &mut a)
            .expect_err("out of range");
        assert_eq!(
            err.to_string(),
            "frame 90: outside the composition: frames run 0-89"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn audio_spans_equal_the_whole(split in 0u64..4800, len in 1u64..4800) {
            let p = TestPattern.prepare(&Props::new()).expect("prepare");
            let whole_span = SampleSpan::new(0, split + len).expect("span");
            let mut whole = vec![0.0; whole_span.len() as usize * 2];
            p.render_audio(whole_span, &mut whole).expect("whole");
            let part_span = SampleSpan::new(split, split + len).expect("span");
            let mut part = vec![0.0; len as usize * 2];
            p.render_audio(part_span, &mut part).expect("part");
            prop_assert_eq!(&whole[split as usize * 2..], &part[..]);
        }
    }
}
