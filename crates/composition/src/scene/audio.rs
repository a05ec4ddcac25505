//! Mixing audio tracks, sample-exact: every output sample is computed from
//! its global index alone, so any span equals the whole render there.

use std::sync::Arc;

use timebase::{Fps, FrameIndex, SampleSpan};

use super::anim::Anim;
use super::audio_file::AudioFile;
use crate::{AUDIO_CHANNELS, CompositionError, SAMPLE_RATE};

/// A track placed on the composition's sample timeline.
#[derive(Debug, Clone)]
pub struct Placed {
    pub file: Arc<AudioFile>,
    /// "…: audio `Music`", for errors.
    pub ctx: String,
    /// First global sample.
    pub start: u64,
    /// First global sample past the track.
    pub end: u64,
    /// The part of the file used, in the file's samples: from `seg_start`,
    /// `seg_len` long (the loop's period when looping).
    pub seg_start: u64,
    pub seg_len: u64,
    pub looped: bool,
    pub volume: Anim<f64>,
    pub fade_in: u64,
    pub fade_out: u64,
    /// First global sample heard (a video's sound is silent while its layer
    /// is hidden by `in`); `start` for audio tracks.
    pub audible_from: u64,
    /// Composition frame of the volume keyframes' frame 0 (a video's
    /// keyframes are in its layer's time); 0 for audio tracks.
    pub volume_offset: i64,
}

/// The first sample of frame `f`.
pub fn sample_of(fps: Fps, f: u64) -> u64 {
    fps.first_sample_of(FrameIndex(f), SAMPLE_RATE).0
}

impl Placed {
    /// Output samples (48 kHz) the trimmed file lasts.
    pub fn output_len(file: &AudioFile, seg_len: u64) -> u64 {
        (u128::from(seg_len) * u128::from(SAMPLE_RATE) / u128::from(file.rate())) as u64
    }

    /// The track's own samples `[k0, k1)` at 48 kHz (sample 0 plays at
    /// `start`), interleaved stereo: the trimmed file (repeated when
    /// looping), resampled.
    fn samples(&self, k0: u64, k1: u64, out: &mut [f32]) -> Result<(), String> {
        match self.file.resampler() {
            None => self.source(k0 as i64, out),
            Some(r) => {
                let (first, end) = r.source_range(k0, k1);
                let mut src = vec![0.0f32; ((end - first) * 2) as usize];
                self.source(first, &mut src)?;
                r.run(k0, &src, first, out);
                Ok(())
            }
        }
    }

    /// The track's source samples from `first` (file rate, counted from the
    /// segment's start; before it the file's earlier samples, or when
    /// looping the loop's end).
    fn source(&self, first: i64, out: &mut [f32]) -> Result<(), String> {
        let seg_start = self.seg_start as i64;
        if !self.looped {
            return self.file.read(seg_start + first, out);
        }
        let period = self.seg_len as i64;
        let mut at = first;
        let mut done = 0usize;
        let total = out.len() / 2;
        while done < total {
            let phase = at.rem_euclid(period);
            let n = ((period - phase) as usize).min(total - done);
            self.file
                .read(seg_start + phase, &mut out[done * 2..(done + n) * 2])?;
            done += n;
            at += n as i64;
        }
        Ok(())
    }
}

/// Mixes `tracks` into `out` for `span` (interleaved stereo), clamping to
/// `[-1, 1]` rather than wrapping.
///
/// # Errors
/// [`CompositionError::Invalid`] naming the track whose file cannot be
/// decoded.
pub fn mix(
    tracks: &[Placed],
    fps: Fps,
    span: SampleSpan,
    out: &mut [f32],
) -> Result<(), CompositionError> {
    out.fill(0.0);
    // Samples per frame, to place volume keyframes (given in frames).
    let frames_per_sample = f64::from(fps.num()) / (f64::from(SAMPLE_RATE) * f64::from(fps.den()));
    let mut buf = Vec::new();
    for tr in tracks {
        let from = span.start.0.max(tr.start).max(tr.audible_from);
        let to = span.end.0.min(tr.end);
        if from >= to || tr.seg_len == 0 {
            continue;
        }
        let (k0, k1) = (from - tr.start, to - tr.start);
        buf.clear();
        buf.resize(((k1 - k0) as usize) * AUDIO_CHANNELS, 0.0);
        super::guard::guard(
            || tr.ctx.clone(),
            "audio decoder",
            || tr.samples(k0, k1, &mut buf),
        )?
        .map_err(|m| CompositionError::Invalid {
            context: tr.ctx.clone(),
            message: m,
        })?;
        let static_gain = match &tr.volume {
            Anim::Static(v) => Some(*v),
            Anim::Keys { .. } => None,
        };
        for (n, s) in (from..to).zip(buf.chunks_exact(AUDIO_CHANNELS)) {
            let k = n - tr.start;
            let mut gain = static_gain.unwrap_or_else(|| {
                tr.volume
                    .at(n as f64 * frames_per_sample - tr.volume_offset as f64)
            });
            if k < tr.fade_in {
                gain *= k as f64 / tr.fade_in as f64;
            }
            let left = tr.end - n;
            if left < tr.fade_out {
                gain *= left as f64 / tr.fade_out as f64;
            }
            let g = gain as f32;
            let dst = ((n - span.start.0) as usize) * AUDIO_CHANNELS;
            out[dst] += s[0] * g;
            out[dst + 1] += s[1] * g;
        }
    }
    for s in out.iter_mut() {
        *s = s.clamp(-1.0, 1.0);
    }
    Ok(())
}
