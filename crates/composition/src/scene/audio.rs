//! Mixing audio tracks, sample-exact: every output sample is computed from
//! its global index alone, so any span equals the whole render there.

use std::sync::Arc;

use timebase::{Fps, FrameIndex, SampleSpan};

use super::anim::Anim;
use super::assets::Pcm;
use crate::{AUDIO_CHANNELS, SAMPLE_RATE};

/// A track placed on the composition's sample timeline.
#[derive(Debug, Clone)]
pub struct Placed {
    pub pcm: Arc<Pcm>,
    /// First global sample.
    pub start: u64,
    /// First global sample past the track.
    pub end: u64,
    /// The part of the file used: `[seg_start, seg_end)` in its samples.
    pub seg_start: u64,
    pub seg_len: u64,
    pub looped: bool,
    pub volume: Anim<f64>,
    pub fade_in: u64,
    pub fade_out: u64,
}

/// The first sample of frame `f`.
pub fn sample_of(fps: Fps, f: u64) -> u64 {
    fps.first_sample_of(FrameIndex(f), SAMPLE_RATE).0
}

/// Mixes `tracks` into `out` for `span` (interleaved stereo), clamping to
/// `[-1, 1]` rather than wrapping.
pub fn mix(tracks: &[Placed], fps: Fps, span: SampleSpan, out: &mut [f32]) {
    out.fill(0.0);
    // Samples per frame, to place volume keyframes (given in frames).
    let frames_per_sample = f64::from(fps.num()) / (f64::from(SAMPLE_RATE) * f64::from(fps.den()));
    for tr in tracks {
        let from = span.start.0.max(tr.start);
        let to = span.end.0.min(tr.end);
        if from >= to || tr.seg_len == 0 {
            continue;
        }
        let static_gain = match &tr.volume {
            Anim::Static(v) => Some(*v),
            Anim::Keys { .. } => None,
        };
        for n in from..to {
            let k = n - tr.start;
            let idx = if tr.looped { k % tr.seg_len } else { k };
            if idx >= tr.seg_len {
                break;
            }
            let src = ((tr.seg_start + idx) as usize) * AUDIO_CHANNELS;
            let mut gain =
                static_gain.unwrap_or_else(|| tr.volume.at(n as f64 * frames_per_sample));
            if k < tr.fade_in {
                gain *= k as f64 / tr.fade_in as f64;
            }
            let left = tr.end - n;
            if left < tr.fade_out {
                gain *= left as f64 / tr.fade_out as f64;
            }
            let g = gain as f32;
            let dst = ((n - span.start.0) as usize) * AUDIO_CHANNELS;
            out[dst] += tr.pcm.samples[src] * g;
            out[dst + 1] += tr.pcm.samples[src + 1] * g;
        }
    }
    for s in out.iter_mut() {
        *s = s.clamp(-1.0, 1.0);
    }
}
