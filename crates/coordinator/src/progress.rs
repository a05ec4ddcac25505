//! Turning render events into what a person or a log shipper reads: a
//! one-line progress bar on a terminal, or one JSON object per event.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

use crate::render::{RenderEvent, RenderSummary};
use crate::schedule::ScheduleEvent;

/// Tracks a render's progress from its events.
#[derive(Debug)]
pub struct ProgressState {
    started: Instant,
    total_frames: u64,
    chunks: usize,
    frames_per_chunk: u64,
    done_chunks: usize,
    retries: usize,
    frames_by_chunk: BTreeMap<u32, u64>,
    combining: bool,
}

impl Default for ProgressState {
    fn default() -> Self {
        ProgressState {
            started: Instant::now(),
            total_frames: 0,
            chunks: 0,
            frames_per_chunk: 0,
            done_chunks: 0,
            retries: 0,
            frames_by_chunk: BTreeMap::new(),
            combining: false,
        }
    }
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

    /// The progress line: frames, percentage, fps, ETA, chunks and retries.
    pub fn line(&self) -> String {
        let done = self.frames_done();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let fps = done as f64 / secs;
        let width = 30usize;
        let filled = if self.total_frames == 0 {
            0
        } else {
            (done as usize * width) / self.total_frames as usize
        };
        let bar: String = "#".repeat(filled) + &"-".repeat(width - filled.min(width));
        let eta = if fps > 0.0 && done < self.total_frames {
            format!("{:.0}s", (self.total_frames - done) as f64 / fps)
        } else {
            "-".into()
        };
        let stage = if self.combining { " combining" } else { "" };
        format!(
            "[{bar}] {done}/{} frames {fps:.1} fps ETA {eta} | chunks {}/{} retried {}{stage}",
            self.total_frames, self.done_chunks, self.chunks, self.retries
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

/// Writes events as they come: JSON lines on stdout, or a progress bar on
/// stderr when it is a terminal.
#[derive(Debug)]
pub struct Reporter {
    json: bool,
    tty: bool,
    state: ProgressState,
    last_draw: Option<Instant>,
}

impl Reporter {
    /// A reporter writing JSON lines (`json`) or a progress bar (when `tty`).
    pub fn new(json: bool, tty: bool) -> Self {
        Reporter {
            json,
            tty,
            state: ProgressState::default(),
            last_draw: None,
        }
    }

    /// Reports one event.
    pub fn event(&mut self, event: &RenderEvent) {
        self.state.apply(event);
        if self.json {
            if let Ok(line) = serde_json::to_string(event) {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            return;
        }
        if !self.tty {
            return;
        }
        // Redraw at most 10 times a second, and always on chunk boundaries.
        let important = !matches!(
            event,
            RenderEvent::Chunk(ScheduleEvent::ChunkProgress { .. })
        );
        let due = self
            .last_draw
            .is_none_or(|t| t.elapsed().as_millis() >= 100);
        if important || due {
            self.last_draw = Some(Instant::now());
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{}", self.state.line());
            let _ = err.flush();
        }
    }

    /// Ends the bar line (if one was drawn).
    pub fn finish(&mut self) {
        if self.tty && !self.json && self.last_draw.is_some() {
            let _ = writeln!(std::io::stderr());
        }
    }
}
