//! Turning render events into what a person or a log shipper reads: a
//! progress bar on a terminal (`indicatif`), or one JSON object per event.
//! Log lines written through [`LogWriter`] while a bar is shown are printed
//! above it instead of through it.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::events::{RenderEvent, RenderSummary};
use crate::schedule::ScheduleEvent;

/// Tracks a render's progress from its events.
#[derive(Debug, Default)]
pub struct ProgressState {
    total_frames: u64,
    chunks: usize,
    frames_per_chunk: u64,
    done_chunks: usize,
    retries: usize,
    frames_by_chunk: BTreeMap<u32, u64>,
    combining: bool,
}

impl ProgressState {
    /// Folds one event in.
    pub fn apply(&mut self, event: &RenderEvent) {
        match event {
            RenderEvent::Planned {
                frames,
                chunks,
                frames_per_chunk,
                ..
            } => {
                self.total_frames = *frames;
                self.chunks = *chunks;
                self.frames_per_chunk = *frames_per_chunk;
            }
            RenderEvent::Chunk(ScheduleEvent::ChunkProgress { chunk, progress }) => {
                let entry = self.frames_by_chunk.entry(*chunk).or_default();
                *entry = (*entry).max(progress.frames_encoded);
            }
            RenderEvent::Chunk(ScheduleEvent::ChunkStarted { chunk, .. }) => {
                // A retry starts the chunk over.
                self.frames_by_chunk.insert(*chunk, 0);
            }
            RenderEvent::Chunk(ScheduleEvent::ChunkFinished { chunk, .. }) => {
                self.done_chunks += 1;
                let frames = self.chunk_frames(*chunk);
                self.frames_by_chunk.insert(*chunk, frames);
            }
            RenderEvent::Chunk(ScheduleEvent::ChunkRetried { .. }) => self.retries += 1,
            RenderEvent::CacheHit { chunks, .. } => {
                for &chunk in chunks {
                    self.done_chunks += 1;
                    let frames = self.chunk_frames(chunk);
                    self.frames_by_chunk.insert(chunk, frames);
                }
            }
            RenderEvent::Combining => self.combining = true,
            _ => {}
        }
    }

    fn chunk_frames(&self, chunk: u32) -> u64 {
        let start = u64::from(chunk) * self.frames_per_chunk;
        self.frames_per_chunk
            .min(self.total_frames.saturating_sub(start))
    }

    /// Frames encoded so far.
    pub fn frames_done(&self) -> u64 {
        self.frames_by_chunk
            .values()
            .sum::<u64>()
            .min(self.total_frames)
    }

    /// Frames in the render.
    pub fn total_frames(&self) -> u64 {
        self.total_frames
    }

    /// What the bar says beside the frames: chunks done, retries, stage.
    pub fn message(&self) -> String {
        let stage = if self.combining { " combining" } else { "" };
        format!(
            "chunks {}/{} retried {}{stage}",
            self.done_chunks, self.chunks, self.retries
        )
    }
}

/// The one-line summary printed at the end of a render.
pub fn summary_line(s: &RenderSummary) -> String {
    let secs = s.wall_ms as f64 / 1000.0;
    if s.output_cached {
        return format!(
            "{} frames ({:.2} s of video) taken from the cache in {:.1} s -> {} ({} bytes)",
            s.frames, s.duration_seconds, secs, s.output, s.bytes
        );
    }
    let cached = match s.cached_chunks {
        0 => String::new(),
        n => format!(" ({n} from the cache)"),
    };
    format!(
        "rendered {} frames ({:.2} s of video) in {:.1} s ({:.1} fps), {} chunks{cached}, {} retries, combine {:.2} s -> {} ({} bytes)",
        s.frames,
        s.duration_seconds,
        secs,
        s.frames as f64 / secs.max(1e-3),
        s.chunks,
        s.retries,
        s.combine_ms as f64 / 1000.0,
        s.output,
        s.bytes
    )
}

/// Prints `value` as one line of JSON on stdout, flushed at once (a log
/// shipper reads it as it comes); a closed stdout is not an error.
pub(crate) fn print_json_line(value: &impl serde::Serialize) {
    if let Ok(line) = serde_json::to_string(value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// The bar being shown, if any: log lines are printed above it.
static ACTIVE_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// A `tracing` writer for stderr that suspends the progress bar while a
/// line is written, so logs and the bar never interleave.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl LogWriter {
    /// Log lines are printed above `bar` while it is shown (`None`: no bar).
    pub(crate) fn show_bar(bar: Option<ProgressBar>) {
        if let Ok(mut active) = ACTIVE_BAR.lock() {
            *active = bar;
        }
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = ACTIVE_BAR.lock().ok().and_then(|b| b.clone());
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}

/// Writes events as they come: JSON lines on stdout, or a progress bar on
/// stderr when it is a terminal.
#[derive(Debug)]
pub struct Reporter {
    json: bool,
    state: ProgressState,
    bar: Option<ProgressBar>,
}

impl Reporter {
    /// A reporter writing JSON lines (`json`) or a progress bar (when `tty`).
    pub fn new(json: bool, tty: bool) -> Self {
        let bar = (!json && tty).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
            bar.set_style(
                ProgressStyle::with_template(
                    "[{bar:30}] {pos}/{len} frames {per_sec:.1} ETA {eta} | {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("#>-"),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            if let Ok(mut active) = ACTIVE_BAR.lock() {
                *active = Some(bar.clone());
            }
            bar
        });
        Reporter {
            json,
            state: ProgressState::default(),
            bar,
        }
    }

    /// Reports one event.
    pub fn event(&mut self, event: &RenderEvent) {
        self.state.apply(event);
        if self.json {
            print_json_line(event);
            return;
        }
        if let Some(bar) = &self.bar {
            bar.set_length(self.state.total_frames());
            bar.set_position(self.state.frames_done());
            bar.set_message(self.state.message());
        }
    }

    /// Ends the bar (if one was drawn), leaving its last state on screen.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
            if let Ok(mut active) = ACTIVE_BAR.lock() {
                *active = None;
            }
        }
    }
}
