//! Video layers: which source frame a composition frame shows, computed
//! exactly, and the decoders that produce it.
//!
//! This crate decodes no video (it stays free of FFmpeg): a process that
//! renders video gives the bundle a [`VideoDecoders`] (the chunk worker's is
//! FFmpeg). A decoder is a plain forward cursor over a file's frames
//! ([`VideoStream`]: seek to a keyframe, next frame, its pixels); everything
//! that decides *which* frame shows lives here, in integers:
//!
//! composition frame `f` of a layer starting at `start` shows, at source time
//! `T = (trim_start + (f − start) · rate) / fps` seconds (looped modulo the
//! trimmed segment), the frame whose presentation interval `[pts, next pts)`
//! (in the stream's time base, from its first frame) contains `T`. `rate` is
//! a fraction with denominator [`RATE_DEN`], so every comparison is an
//! integer product in `i128`: no float decides a frame.
//!
//! A [`Cursor`] serves one layer for every renderer of a prepared scene:
//! frames are asked for roughly in order (render threads take frames in
//! turn), so it keeps the last [`KEPT_FRAMES`] converted frames and decodes
//! forward; a time behind them or more than [`MAX_DECODE_AHEAD_SECONDS`]
//! ahead seeks to the keyframe at or before it. Memory is bounded by the
//! frame size, never by the file's length.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use timebase::Fps;

use super::anim::Anim;
use super::audio::{Placed, sample_of};
use super::audio_file::AudioFile;
use super::limits::MAX_FRAME;
use super::load::{Kind, Layer, V2};
use super::model::{FitDoc, LayerDoc};
use super::template::Template;
use crate::CompositionError;

/// Playback rates are multiples of `1 / RATE_DEN`.
pub const RATE_DEN: u64 = 1000;

/// The slowest playback rate.
pub const MIN_PLAYBACK_RATE: f64 = 0.0625;

/// The fastest playback rate: at 30 fps a frame then skips 16 source frames
/// at most, which decoding forward still does faster than seeking.
pub const MAX_PLAYBACK_RATE: f64 = 16.0;

/// The largest video frame decoded, in pixels (4096 × 4096): a decoder holds
/// a few such frames, and a renderer [`KEPT_FRAMES`] converted ones.
pub const MAX_VIDEO_PIXELS: u64 = 4096 * 4096;

/// The largest width or height of a video source.
pub const MAX_VIDEO_DIMENSION: u32 = 8192;

/// Converted frames a layer keeps: enough for every render thread's next
/// frame to find its frame while the others run ahead.
pub const KEPT_FRAMES: usize = 8;

/// Layer frames before the one asked for whose source frames a cursor
/// keeps when it decodes past them: render threads take frames in turn, so
/// the others are at most a few frames behind.
pub const SOON_FRAMES: i64 = KEPT_FRAMES as i64 / 2;

/// How far ahead of the last decoded frame a time may be and still be
/// reached by decoding forward rather than by seeking.
pub const MAX_DECODE_AHEAD_SECONDS: i64 = 2;

/// Frame buffers a decoder holds besides the converted frames (its
/// reference frames and the frame being converted), counted in the budget.
pub const DECODER_FRAMES: u64 = 8;

/// An exact time in seconds, `num / den`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time {
    /// Numerator.
    pub num: i128,
    /// Denominator, positive.
    pub den: i128,
}

impl Time {
    /// Whether the timestamp `pts` (in `tb`, from the first frame) is at or
    /// before this time: `pts · tb.num / tb.den ≤ num / den`.
    pub fn reached_by(self, pts: i64, tb: (u32, u32)) -> bool {
        i128::from(pts) * i128::from(tb.0) * self.den <= self.num * i128::from(tb.1)
    }

    /// The largest timestamp in `tb` at or before this time.
    pub fn floor_pts(self, tb: (u32, u32)) -> i64 {
        let d = i128::from(tb.0) * self.den;
        let v = (self.num * i128::from(tb.1)).div_euclid(d);
        i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
    }
}

/// What a video source is, read from its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoInfo {
    /// Width as displayed (after rotation metadata), in pixels.
    pub width: u32,
    /// Height as displayed, in pixels.
    pub height: u32,
    /// The stream's time base, `num / den` seconds per tick.
    pub time_base: (u32, u32),
    /// The end of the last frame's presentation interval, in ticks from
    /// the first frame: the source's duration.
    pub duration_ticks: i64,
    /// Whether the file has an audio stream.
    pub has_audio: bool,
    /// Whether its frames may carry alpha (else every converted pixel has
    /// alpha 255, and no frame needs looking at to know it).
    pub alpha: bool,
    /// The decoder's description, for errors ("h264, yuv420p, bt709 limited").
    pub describe: String,
}

/// Decodes a process's video files; given to [`super::SceneBundle::open_with_video`].
pub trait VideoDecoders: Send + Sync + fmt::Debug {
    /// Opens a file (`rel` in the bundle, for messages) from its headers.
    ///
    /// # Errors
    /// A message (the caller names the layer and file) for a file that is
    /// missing, not a video, over the limits or undecodable.
    fn open(&self, path: &Path, rel: &str) -> Result<Arc<dyn VideoSource>, String>;
}

/// An opened video file: its description and cursors over its frames.
pub trait VideoSource: Send + Sync + fmt::Debug {
    /// The file's description.
    fn info(&self) -> &VideoInfo;

    /// A new decoder positioned before the first frame.
    ///
    /// # Errors
    /// A message if the file cannot be opened again.
    fn stream(&self) -> Result<Box<dyn VideoStream>, String>;
}

/// A decoded frame's presentation interval, in ticks from the first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTimes {
    /// Its timestamp.
    pub pts: i64,
    /// The next frame's timestamp; `None` for the last frame (it shows
    /// until the source's end).
    pub end: Option<i64>,
}

/// A forward decoder over one video file's frames in presentation order.
pub trait VideoStream: Send {
    /// Positions the decoder so that the next frame is the keyframe at or
    /// before `pts` (ticks from the first frame), or the first frame.
    ///
    /// # Errors
    /// A message if the file cannot be read.
    fn seek(&mut self, pts: i64) -> Result<(), String>;

    /// Decodes the next frame (and the one after, to know where this one
    /// ends); `None` after the last.
    ///
    /// # Errors
    /// A message if the file cannot be decoded.
    fn next_frame(&mut self) -> Result<Option<FrameTimes>, String>;

    /// The frame [`VideoStream::next_frame`] last returned, as premultiplied
    /// RGBA8 at the displayed size (`width · height · 4` bytes, rotation
    /// applied).
    ///
    /// # Errors
    /// A message if it cannot be converted.
    fn rgba(&mut self) -> Result<Vec<u8>, String>;
}

/// When a video layer shows what: the exact mapping from composition frames
/// to source times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// The composition's rate.
    pub fps: Fps,
    /// Layer frame of the source's first shown frame.
    pub start: u64,
    /// Frames (of `fps`) skipped at the source's start.
    pub trim_start: u64,
    /// Frames (of `fps`) of source used from its start, if trimmed.
    pub trim_end: Option<u64>,
    /// Playback rate in `1 / RATE_DEN`.
    pub rate: u64,
    /// Repeat the trimmed segment.
    pub looped: bool,
}

impl Timing {
    /// The trimmed segment `[start, end)` and the time one layer frame
    /// advances, all in units of `1 / (fps.num · RATE_DEN · tb.den)` s.
    fn segment(&self, tb: (u32, u32), duration_ticks: i64) -> (i128, i128, i128) {
        let (fnum, fden) = (i128::from(self.fps.num()), i128::from(self.fps.den()));
        let (tbn, tbd) = (i128::from(tb.0), i128::from(tb.1));
        let r = i128::from(RATE_DEN);
        let frames = |n: u64| i128::from(n) * fden * r * tbd;
        let file_end = i128::from(duration_ticks) * tbn * fnum * r;
        let seg_end = self.trim_end.map_or(file_end, |e| frames(e).min(file_end));
        (
            frames(self.trim_start),
            seg_end,
            i128::from(self.rate) * fden * tbd,
        )
    }

    /// The source time layer frame `t` shows, `None` before `start` and,
    /// unless looping, past the segment's end. `duration_ticks` and `tb` are
    /// the source's.
    pub fn source_time(&self, t: i64, tb: (u32, u32), duration_ticks: i64) -> Option<Time> {
        let k = t.checked_sub(i64::try_from(self.start).ok()?)?;
        if k < 0 {
            return None;
        }
        let (seg_start, seg_end, step) = self.segment(tb, duration_ticks);
        let len = seg_end - seg_start;
        if len <= 0 {
            return None;
        }
        let mut elapsed = i128::from(k) * step;
        if self.looped {
            elapsed = elapsed.rem_euclid(len);
        } else if elapsed >= len {
            return None;
        }
        Some(Time {
            num: seg_start + elapsed,
            den: i128::from(self.fps.num()) * i128::from(RATE_DEN) * i128::from(tb.1),
        })
    }

    /// The first layer frame past the source's segment; `None` when
    /// looping (no end).
    pub fn shown_until(&self, tb: (u32, u32), duration_ticks: i64) -> Option<u64> {
        if self.looped {
            return None;
        }
        let (seg_start, seg_end, step) = self.segment(tb, duration_ticks);
        // The first k whose elapsed time reaches the segment's length.
        let k = ((seg_end - seg_start).max(0) + step - 1) / step;
        Some((i128::from(self.start) + k).min(i128::from(MAX_FRAME)) as u64)
    }
}

/// A converted frame and its presentation interval.
struct Kept {
    times: FrameTimes,
    rgba: Arc<Vec<u8>>,
    opaque: bool,
}

/// The decoding state of one video layer, shared by a prepared scene's
/// renderers.
pub struct Cursor {
    source: Arc<dyn VideoSource>,
    stream: Option<Box<dyn VideoStream>>,
    /// The frame the stream returned last.
    last: Option<FrameTimes>,
    kept: Vec<Kept>,
    /// Seeks done, for tests and measurements.
    seeks: u64,
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cursor")
            .field("source", &self.source)
            .field("seeks", &self.seeks)
            .finish_non_exhaustive()
    }
}

/// A [`Cursor`] shared by the renderers of a prepared scene.
pub type SharedCursor = Arc<Mutex<Cursor>>;

impl Cursor {
    /// A cursor over `source`; nothing is decoded until a frame is asked for.
    pub fn new(source: Arc<dyn VideoSource>) -> Cursor {
        Cursor {
            source,
            stream: None,
            last: None,
            kept: Vec::new(),
            seeks: 0,
        }
    }

    /// The source's description.
    pub fn info(&self) -> &VideoInfo {
        self.source.info()
    }

    /// Seeks done so far.
    pub fn seeks(&self) -> u64 {
        self.seeks
    }

    /// The frame shown at `t`: premultiplied RGBA8 at the displayed size.
    /// Which frame that is depends on `t` alone, never on the frames asked
    /// for before: a seek lands on a keyframe and decodes forward.
    ///
    /// # Errors
    /// The decoder's message.
    ///
    /// `soon`: the times of the layer frames just before `t`, which other
    /// render threads may still ask for. A frame decoded on the way to `t`
    /// that shows at one of them is converted and kept, so that a thread
    /// running behind finds it instead of seeking back to the keyframe and
    /// decoding the group of pictures again (which made every frame cost
    /// several decodes); frames that no layer frame shows (a rate above 1)
    /// are passed without converting.
    pub fn frame_at(&mut self, t: Time, soon: &[Time]) -> Result<(Arc<Vec<u8>>, bool), String> {
        let tb = self.info().time_base;
        let contains =
            |f: &FrameTimes| t.reached_by(f.pts, tb) && f.end.is_none_or(|e| !t.reached_by(e, tb));
        if let Some(k) = self.kept.iter().find(|k| contains(&k.times)) {
            return Ok((Arc::clone(&k.rgba), k.opaque));
        }
        let target = t.floor_pts(tb);
        let ahead = i64::from(tb.1 / tb.0.max(1)).saturating_mul(MAX_DECODE_AHEAD_SECONDS);
        // Decoding on from the last frame reaches `t` if `t` is after it
        // and not far.
        let forward = self.stream.is_some()
            && self.last.is_some_and(|f| {
                f.end
                    .is_some_and(|e| t.reached_by(e, tb) && target.saturating_sub(e) <= ahead)
            });
        if !forward {
            let stream = self.stream_mut()?;
            stream.seek(target.max(0))?;
            self.last = None;
            self.seeks += 1;
        }
        let mut first = !forward;
        loop {
            let Some(times) = self.stream_mut()?.next_frame()? else {
                return Err(format!(
                    "no frame at {}/{} s: the video ends before its stated duration",
                    t.num, t.den
                ));
            };
            self.last = Some(times);
            // A first frame already past `t` after a seek: `t` is before
            // the source's first frame, which shows.
            if contains(&times) || (first && !t.reached_by(times.pts, tb)) {
                let kept = self.keep(times)?;
                return Ok((Arc::clone(&kept.rgba), kept.opaque));
            }
            let shows_soon = soon.iter().any(|s| {
                s.reached_by(times.pts, tb) && times.end.is_none_or(|e| !s.reached_by(e, tb))
            });
            if shows_soon && !self.kept.iter().any(|k| k.times == times) {
                self.keep(times)?;
            }
            first = false;
        }
    }

    /// Converts the frame the stream returned last and keeps it.
    fn keep(&mut self, times: FrameTimes) -> Result<&Kept, String> {
        let rgba = Arc::new(self.stream_mut()?.rgba()?);
        // Known from the source when it has no alpha; else checked once per
        // kept frame, so that drawing it can copy rather than blend.
        let opaque = !self.source.info().alpha || rgba.chunks_exact(4).all(|p| p[3] == u8::MAX);
        if self.kept.len() >= KEPT_FRAMES {
            self.kept.remove(0);
        }
        self.kept.push(Kept {
            times,
            rgba,
            opaque,
        });
        self.kept
            .last()
            .ok_or_else(|| "internal: a kept frame vanished".to_owned())
    }

    fn stream_mut(&mut self) -> Result<&mut Box<dyn VideoStream>, String> {
        if self.stream.is_none() {
            self.stream = Some(self.source.stream()?);
        }
        self.stream
            .as_mut()
            .ok_or_else(|| "the video decoder did not open".to_owned())
    }
}

/// A video layer as loaded: what the document says, and, once prepared,
/// its cursor.
#[derive(Debug, Clone)]
pub struct VideoLayer {
    /// The file, with `{prop}` placeholders.
    pub src: Template,
    /// The box it fits (default: the video's displayed size).
    pub size: Option<V2>,
    /// How it fits the box.
    pub fit: FitDoc,
    /// Layer frame of its first frame.
    pub start: u64,
    /// Frames skipped at its start.
    pub trim_start: u64,
    /// Frames used from its start, if trimmed.
    pub trim_end: Option<u64>,
    /// Playback rate in `1 / RATE_DEN`.
    pub rate: u64,
    /// Repeat the trimmed segment.
    pub looped: bool,
    /// Gain of its sound, keyframes in layer frames.
    pub volume: Anim<f64>,
    /// No sound.
    pub muted: bool,
    /// Filled when prepared.
    pub prepared: Option<PreparedVideo>,
}

/// A video layer's decoding state and timing, set when the scene is prepared.
#[derive(Debug, Clone)]
pub struct PreparedVideo {
    /// Shared by the scene's renderers.
    pub cursor: SharedCursor,
    /// The layer's timing at the composition's rate.
    pub timing: Timing,
    /// The source's description.
    pub info: VideoInfo,
}

/// A converted frame as a layer shows it.
#[derive(Debug, Clone)]
pub struct Shown {
    /// Premultiplied RGBA8, `width · height · 4` bytes.
    pub rgba: Arc<Vec<u8>>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Every pixel has alpha 255.
    pub opaque: bool,
}

/// The frame a prepared video layer shows at layer time `t` (a whole
/// frame: groups shift time by whole frames), with its size; `None` when it
/// shows nothing then.
///
/// # Errors
/// The decoder's message.
pub fn frame(v: &VideoLayer, t: f64) -> Result<Option<Shown>, String> {
    let p = v
        .prepared
        .as_ref()
        .ok_or("internal: the video was not opened")?;
    // Layer times are whole frames (frames and group offsets are integers),
    // so this conversion is exact.
    let t = t as i64;
    let Some(time) = p
        .timing
        .source_time(t, p.info.time_base, p.info.duration_ticks)
    else {
        return Ok(None);
    };
    let (tb, duration) = (p.info.time_base, p.info.duration_ticks);
    let soon: Vec<Time> = (1..=SOON_FRAMES)
        .filter_map(|k| p.timing.source_time(t - k, tb, duration))
        .collect();
    let (rgba, opaque) = super::lock(&p.cursor).frame_at(time, &soon)?;
    Ok(Some(Shown {
        rgba,
        width: p.info.width,
        height: p.info.height,
        opaque,
    }))
}

impl VideoLayer {
    /// The mapping from layer frames to source times at `fps`.
    pub fn timing(&self, fps: Fps) -> Timing {
        Timing {
            fps,
            start: self.start,
            trim_start: self.trim_start,
            trim_end: self.trim_end,
            rate: self.rate,
            looped: self.looped,
        }
    }
}

/// Converts the `video` fields of a layer document (`ctx` names the layer).
///
/// # Errors
/// [`CompositionError::Invalid`] naming the field.
pub fn layer(d: &LayerDoc, ctx: &str, size: Option<V2>) -> Result<VideoLayer, CompositionError> {
    let invalid = |message: String| CompositionError::Invalid {
        context: ctx.to_owned(),
        message,
    };
    let src = d
        .src
        .as_ref()
        .ok_or_else(|| invalid("a video layer needs `src`".into()))?;
    let frame = |v: Option<u64>, field: &str| match v {
        Some(v) if v > MAX_FRAME => Err(invalid(format!(
            "`{field}` {v} is out of range: allowed 0-{MAX_FRAME}"
        ))),
        v => Ok(v),
    };
    let start = frame(d.start, "start")?.unwrap_or(0);
    let trim_start = frame(d.trim_start, "trim_start")?.unwrap_or(0);
    let trim_end = frame(d.trim_end, "trim_end")?;
    if let Some(e) = trim_end
        && e <= trim_start
    {
        return Err(invalid(format!(
            "`trim_end` {e} must be after `trim_start` {trim_start}"
        )));
    }
    let rate = match &d.playback_rate {
        None => RATE_DEN,
        Some(r) => {
            let v = r
                .check()
                .map_err(|m| invalid(format!("`playback_rate` {m}")))?;
            let scaled = v * RATE_DEN as f64;
            let rounded = scaled.round();
            // A rate is exact in thousandths: anything finer would need a
            // float to decide frames.
            if (scaled - rounded).abs() > 1e-6 {
                return Err(invalid(format!(
                    "`playback_rate` {} is not a multiple of 0.001",
                    super::limits::show(v)
                )));
            }
            rounded as u64
        }
    };
    let volume = match &d.volume {
        None => Anim::Static(1.0),
        Some(v) => super::load::anim(v, "volume", ctx, |n| n.check())?,
    };
    Ok(VideoLayer {
        src: Template::parse(src).map_err(|m| invalid(format!("`src`: {m}")))?,
        size,
        fit: d.fit.unwrap_or_default(),
        start,
        trim_start,
        trim_end,
        rate,
        looped: d.looped.unwrap_or(false),
        volume,
        muted: d.muted.unwrap_or(false),
        prepared: None,
    })
}

/// The fields only a video layer takes, for the loader's check that every
/// field given applies to the layer's type.
pub fn given_fields(d: &LayerDoc) -> [(&'static str, bool); 7] {
    [
        ("start", d.start.is_some()),
        ("trim_start", d.trim_start.is_some()),
        ("trim_end", d.trim_end.is_some()),
        ("playback_rate", d.playback_rate.is_some()),
        ("loop", d.looped.is_some()),
        ("volume", d.volume.is_some()),
        ("muted", d.muted.is_some()),
    ]
}

/// The fields a video layer takes.
pub const FIELDS: &[&str] = &[
    "src",
    "size",
    "fit",
    "start",
    "trim_start",
    "trim_end",
    "playback_rate",
    "loop",
    "volume",
    "muted",
];

/// A video layer whose sound may play, placed on the composition's frames.
pub struct Sounding<'a> {
    /// The layer's dotted path.
    pub path: &'a str,
    /// The layer.
    pub video: &'a VideoLayer,
    /// Composition frame of layer frame 0 (the sum of its groups'
    /// `time_offset`s).
    pub offset: i64,
    /// The composition frames where the layer and every group holding it
    /// show: `[from, until)`.
    pub from: i64,
    /// See `from`; `None`: no end.
    pub until: Option<i64>,
}

/// The visible, unmuted video layers among `layers` at every level, with
/// where they sit in composition time.
pub fn sounding(layers: &[Layer]) -> Vec<Sounding<'_>> {
    fn walk<'a>(
        layers: &'a [Layer],
        offset: i64,
        window: (i64, Option<i64>),
        out: &mut Vec<Sounding<'a>>,
    ) {
        for l in layers {
            if !l.visible {
                continue;
            }
            let from = window.0.max(offset.saturating_add(l.in_frame as i64));
            let until = match (window.1, l.out_frame) {
                (a, None) => a,
                (None, Some(o)) => Some(offset.saturating_add(o as i64)),
                (Some(a), Some(o)) => Some(a.min(offset.saturating_add(o as i64))),
            };
            match &l.kind {
                Kind::Video(v) if !v.muted => out.push(Sounding {
                    path: &l.path,
                    video: v,
                    offset,
                    from,
                    until,
                }),
                Kind::Group {
                    layers,
                    time_offset,
                    ..
                } => walk(
                    layers,
                    offset.saturating_add(*time_offset),
                    (from, until),
                    out,
                ),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(layers, 0, (0, None), &mut out);
    out
}

/// Places a video layer's sound (`file`, the video file's audio) like an
/// audio track: its first video frame's time is the file's sample
/// `in_file(trim_start)`, and each frame after it advances exactly one
/// frame's worth of samples. `None` if it never sounds within `duration`
/// frames.
pub fn place_sound(
    s: &Sounding<'_>,
    file: Arc<AudioFile>,
    fps: Fps,
    duration: u64,
    ctx: String,
) -> Option<Placed> {
    let v = s.video;
    let rate = file.rate();
    let in_file = |f: u64| fps.first_sample_of(timebase::FrameIndex(f), rate).0;
    // Composition frame of the video's first frame; one that starts before
    // the composition is trimmed by what it has already played.
    let first = s.offset.saturating_add(v.start as i64);
    let skipped = first.min(0).unsigned_abs();
    let first = u64::try_from(first.max(0)).unwrap_or(0);
    let seg_start = in_file(v.trim_start);
    let seg_end = v
        .trim_end
        .map_or(file.frames(), |e| in_file(e).min(file.frames()));
    if seg_start >= seg_end {
        return None;
    }
    let (seg_start, seg_len) = if v.looped {
        (seg_start, seg_end - seg_start)
    } else {
        let s0 = seg_start.saturating_add(in_file(skipped));
        if s0 >= seg_end {
            return None;
        }
        (s0, seg_end - s0)
    };
    let start = sample_of(fps, first);
    let clamp = |f: i64| sample_of(fps, u64::try_from(f.max(0)).unwrap_or(0).min(duration));
    let mut end = sample_of(fps, duration);
    if let Some(u) = s.until {
        end = end.min(clamp(u));
    }
    if !v.looped {
        end = end.min(start.saturating_add(Placed::output_len(&file, seg_len)));
    }
    let audible_from = clamp(s.from).max(start);
    if audible_from >= end {
        return None;
    }
    Some(Placed {
        file,
        ctx,
        start,
        end,
        seg_start,
        seg_len,
        looped: v.looped,
        volume: v.volume.clone(),
        fade_in: 0,
        fade_out: 0,
        audible_from,
        volume_offset: s.offset,
    })
}

/// The video layers among `layers`, at every level, with their paths.
pub fn video_layers(layers: &[Layer]) -> Vec<(&str, &VideoLayer)> {
    fn walk<'a>(layers: &'a [Layer], out: &mut Vec<(&'a str, &'a VideoLayer)>) {
        for l in layers {
            match &l.kind {
                Kind::Video(v) => out.push((&l.path, v)),
                Kind::Group { layers, .. } => walk(layers, out),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(layers, &mut out);
    out
}

/// Bytes one video source holds while rendering: its kept converted frames
/// and the decoder's frames.
pub fn source_bytes(info: &VideoInfo) -> u64 {
    let frame = u64::from(info.width) * u64::from(info.height) * 4;
    frame.saturating_mul(KEPT_FRAMES as u64 + DECODER_FRAMES)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(fps: Fps, rate: u64, looped: bool) -> Timing {
        Timing {
            fps,
            start: 5,
            trim_start: 3,
            trim_end: Some(33),
            rate,
            looped,
        }
    }

    #[test]
    fn source_times_are_exact_rationals() {
        let ntsc = Fps::new(30000, 1001).expect("fps");
        // 1/90000 time base, 10 s source.
        let tb = (1, 90_000);
        let t = timing(ntsc, RATE_DEN, false);
        assert_eq!(t.source_time(4, tb, 900_000), None, "before start");
        // Layer frame 5 is trim_start: 3 frames = 3·1001/30000 s = 9009 ticks.
        let at5 = t.source_time(5, tb, 900_000).expect("shown");
        assert!(at5.reached_by(9009, tb) && !at5.reached_by(9010, tb));
        assert_eq!(at5.floor_pts(tb), 9009);
        // 30 frames of segment: frame 35 is past it without loop…
        assert_eq!(t.source_time(35, tb, 900_000), None);
        assert_eq!(t.shown_until(tb, 900_000), Some(35));
        // …and back at its start with loop.
        let looped = timing(ntsc, RATE_DEN, true);
        assert_eq!(
            looped.source_time(35, tb, 900_000).map(|x| x.floor_pts(tb)),
            Some(9009)
        );
        // Half speed: frame 7 is 3 + 2·0.5 = 4 frames' worth.
        let half = timing(ntsc, RATE_DEN / 2, false);
        assert_eq!(
            half.source_time(7, tb, 900_000).map(|x| x.floor_pts(tb)),
            Some(4 * 3003)
        );
        // A segment cut by the source's end: 1 s source at 30 fps ends
        // after 30 − 3 = 27 frames.
        let short = timing(Fps::new(30, 1).expect("fps"), RATE_DEN, false);
        assert_eq!(short.shown_until(tb, 90_000), Some(5 + 27));
        assert!(short.source_time(31, tb, 90_000).is_some());
        assert_eq!(short.source_time(32, tb, 90_000), None);
    }
}
