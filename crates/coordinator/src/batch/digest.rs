//! The batch's summary and the digest a person reads in the morning:
//! "4 832 variants in 38 min (6 021 rows, 1 189 duplicates), p95 41 s,
//! 12 failed: 9 missing asset, 3 worker lost".

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::results::{FailureReason, RowResult, RowStatus};

/// How a batch went.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BatchSummary {
    /// Rows in the variants file.
    pub rows: u64,
    /// Rows refused before rendering.
    pub invalid: u64,
    /// Rows done by an earlier run (skipped).
    pub done_before: u64,
    /// Distinct variants this run rendered.
    pub rendered: u64,
    /// Distinct variants whose output came whole from the render cache.
    pub cached: u64,
    /// Rows that reused another row's variant.
    pub duplicates: u64,
    /// Rows that failed (invalid rows included).
    pub failed: u64,
    /// Failed rows by reason.
    #[serde(serialize_with = "by_label")]
    pub failures: BTreeMap<FailureReason, u64>,
    /// Wall time, in milliseconds.
    pub wall_ms: u64,
    /// Median seconds per variant (start to output delivered).
    pub p50_seconds: f64,
    /// 95th percentile of the same.
    pub p95_seconds: f64,
    /// The results file.
    pub results: String,
}

/// Failures by reason, serialized by the reasons' labels.
pub(crate) fn by_label<S: serde::Serializer>(
    failures: &BTreeMap<FailureReason, u64>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(failures.iter().map(|(r, n)| (r.label(), n)))
}

impl BatchSummary {
    /// Variants produced: rendered or taken from the cache.
    pub fn variants(&self) -> u64 {
        self.rendered + self.cached
    }

    /// The one-line digest.
    pub fn digest(&self) -> String {
        let mut rows = format!(
            "{} rows, {} duplicates",
            grouped(self.rows),
            grouped(self.duplicates)
        );
        if self.cached > 0 {
            rows.push_str(&format!(", {} from the cache", grouped(self.cached)));
        }
        if self.done_before > 0 {
            rows.push_str(&format!(", {} done before", grouped(self.done_before)));
        }
        let failed = if self.failed == 0 {
            "none failed".to_owned()
        } else {
            let reasons: Vec<String> = self
                .failures
                .iter()
                .map(|(r, n)| format!("{} {}", grouped(*n), r.label()))
                .collect();
            format!("{} failed: {}", grouped(self.failed), reasons.join(", "))
        };
        format!(
            "{} variants in {} ({rows}), p95 {}, {failed}",
            grouped(self.variants()),
            span(Duration::from_millis(self.wall_ms)),
            seconds(self.p95_seconds)
        )
    }
}

/// Folds row results into a [`BatchSummary`]. Keeps one number per
/// variant (its seconds, for the percentiles): 4 bytes a variant.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    summary: BatchSummary,
    variant_seconds: Vec<f32>,
}

impl Tally {
    /// Sets the rows of the file and those done before.
    pub(crate) fn set_rows(&mut self, rows: u64, done_before: u64) {
        self.summary.rows = rows;
        self.summary.done_before = done_before;
    }

    /// Counts one row's result.
    pub(crate) fn add(&mut self, r: &RowResult) {
        let s = &mut self.summary;
        match r.status {
            RowStatus::Rendered | RowStatus::Cached => {
                if r.status == RowStatus::Rendered {
                    s.rendered += 1;
                } else {
                    s.cached += 1;
                }
                self.variant_seconds.push(r.seconds.unwrap_or(0.0) as f32);
            }
            RowStatus::Duplicate => s.duplicates += 1,
            RowStatus::Failed | RowStatus::Invalid => {
                s.failed += 1;
                if r.status == RowStatus::Invalid {
                    s.invalid += 1;
                }
                if let Some(e) = &r.error {
                    *s.failures.entry(e.reason).or_default() += 1;
                }
            }
        }
    }

    /// The summary, with the wall time and the results file.
    pub(crate) fn summary(&mut self, wall: Duration, results: String) -> BatchSummary {
        self.variant_seconds.sort_by(f32::total_cmp);
        let pct = |p: f64| -> f64 {
            if self.variant_seconds.is_empty() {
                return 0.0;
            }
            // Nearest rank.
            let rank = ((p * self.variant_seconds.len() as f64).ceil() as usize).max(1);
            f64::from(self.variant_seconds[rank.min(self.variant_seconds.len()) - 1])
        };
        BatchSummary {
            wall_ms: wall.as_millis() as u64,
            p50_seconds: pct(0.5),
            p95_seconds: pct(0.95),
            results,
            ..self.summary.clone()
        }
    }
}

/// `4832` as `4 832`.
pub(crate) fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// A wall time as a person reads it: `12 s`, `38 min`, `2 h 5 min`.
pub(crate) fn span(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..60 => seconds(d.as_secs_f64()),
        60..3600 => format!("{} min", (secs + 30) / 60),
        _ => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
    }
}

/// Seconds: `0.4 s`, `3.2 s`, `41 s`.
pub(crate) fn seconds(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.1} s")
    } else {
        format!("{s:.0} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::batch::results::RowFailure;

    fn row(status: RowStatus, seconds: f64, reason: Option<FailureReason>) -> RowResult {
        RowResult {
            row: 1,
            out: None,
            status,
            variant: None,
            output: None,
            frames: None,
            seconds: Some(seconds),
            cached: false,
            duplicate_of: None,
            error: reason.map(|reason| RowFailure {
                class: reason.class(),
                reason,
                column: None,
                message: "x".into(),
            }),
        }
    }

    #[test]
    fn the_digest_reads_like_the_morning_report() {
        let mut t = Tally::default();
        t.set_rows(6021, 0);
        for i in 0..4832 {
            t.add(&row(RowStatus::Rendered, f64::from(i % 100) / 2.0, None));
        }
        for _ in 0..1189 {
            t.add(&row(RowStatus::Duplicate, 0.0, None));
        }
        for _ in 0..9 {
            t.add(&row(
                RowStatus::Failed,
                0.0,
                Some(FailureReason::MissingAsset),
            ));
        }
        for _ in 0..3 {
            t.add(&row(
                RowStatus::Failed,
                0.0,
                Some(FailureReason::WorkerLost),
            ));
        }
        let s = t.summary(Duration::from_secs(38 * 60), "results.jsonl".into());
        assert_eq!(
            s.digest(),
            "4 832 variants in 38 min (6 021 rows, 1 189 duplicates), p95 47 s, 12 failed: 9 missing asset, 3 worker lost"
        );
        assert_eq!(s.failures[&FailureReason::WorkerLost], 3);
        assert_eq!(FailureReason::WorkerLost.class(), ErrorKind::Worker);
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(json["failures"]["missing asset"], 9);
    }

    #[test]
    fn numbers_and_times() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1 000");
        assert_eq!(grouped(1_234_567), "1 234 567");
        assert_eq!(span(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(span(Duration::from_secs(41)), "41 s");
        assert_eq!(span(Duration::from_secs(3 * 3600 + 5 * 60)), "3 h 5 min");
        let mut t = Tally::default();
        t.set_rows(2, 1);
        t.add(&row(RowStatus::Cached, 0.2, None));
        assert_eq!(
            t.summary(Duration::from_secs(2), String::new()).digest(),
            "1 variants in 2.0 s (2 rows, 0 duplicates, 1 from the cache, 1 done before), p95 0.2 s, none failed"
        );
    }
}
