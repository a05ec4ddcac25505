//! A batch as a person or a log shipper reads it: a progress bar on a
//! terminal (rows done of total, variants per minute, ETA, failures) with
//! refused rows printed above it, or one JSON object per event on stdout.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{BatchEvent, RowStatus};
use crate::progress::{LogWriter, print_json_line};

/// Writes a batch's events as they come.
#[derive(Debug)]
pub struct BatchReporter {
    json: bool,
    bar: Option<ProgressBar>,
    started: Instant,
    total: u64,
    done: u64,
    variants: u64,
    failed: u64,
}

impl BatchReporter {
    /// A reporter writing JSON lines (`json`) or, when `tty`, a progress
    /// bar; refused rows are printed on stderr unless `json`.
    pub fn new(json: bool, tty: bool) -> Self {
        let bar = (!json && tty).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
            bar.set_style(
                ProgressStyle::with_template("[{bar:30}] {pos}/{len} rows ETA {eta} | {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("#>-"),
            );
            bar.enable_steady_tick(Duration::from_millis(500));
            LogWriter::show_bar(Some(bar.clone()));
            bar
        });
        BatchReporter {
            json,
            bar,
            started: Instant::now(),
            total: 0,
            done: 0,
            variants: 0,
            failed: 0,
        }
    }

    /// Reports one event.
    pub fn event(&mut self, event: &BatchEvent) {
        match event {
            BatchEvent::RowInvalid(e) if !self.json => self.line(&e.to_string()),
            BatchEvent::Queued {
                batch,
                queue,
                variants,
                ..
            } if !self.json => self.line(&format!(
                "batch {batch}: {variants} variants sent to {queue}"
            )),
            BatchEvent::BatchPlanned(p) => {
                self.total = p.rows;
                self.done = p.done_before;
            }
            BatchEvent::Row(r) => {
                self.done += 1;
                match r.status {
                    RowStatus::Rendered | RowStatus::Cached => self.variants += 1,
                    RowStatus::Failed => {
                        self.failed += 1;
                        if !self.json
                            && let Some(e) = &r.error
                        {
                            self.line(&format!("row {}: failed: {}", r.row, e.message));
                        }
                    }
                    RowStatus::Invalid => self.failed += 1,
                    RowStatus::Duplicate => {}
                }
            }
            _ => {}
        }
        if self.json {
            print_json_line(event);
            return;
        }
        if let Some(bar) = &self.bar {
            bar.set_length(self.total);
            bar.set_position(self.done);
            let minutes = self.started.elapsed().as_secs_f64() / 60.0;
            bar.set_message(format!(
                "{:.1} variants/min, {} failed",
                self.variants as f64 / minutes.max(1e-9),
                self.failed
            ));
        }
    }

    /// A line above the bar (or on stderr).
    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    /// Ends the bar, leaving its last state on screen.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
            LogWriter::show_bar(None);
        }
    }
}
