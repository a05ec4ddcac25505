//! A batch's render phase when its variants go to a queue: the bundle
//! uploaded once by hash, `batch.json`, one message per distinct variant
//! (payloads over the message limit stored, the message holding the
//! reference), then, with `--wait`, the agents' results gathered into the
//! results file and the digest as a local batch writes them.

use std::collections::HashMap;
use std::time::Duration;

use storage::Backoff;
use storage::queue::{MAX_MESSAGE_BYTES, Queue};

use super::digest::Tally;
use super::queue::{
    BatchId, BatchManifest, BatchState, DeadLetters, JobPayload, JobResult, QUEUE_JOB_FORMAT,
    QueueJob, read_record, settle_dead_letters, variant_of, write_record,
};
use super::results::{FailureReason, ResultsWriter, RowFailure, RowResult, RowStatus};
use super::run::{BatchJob, Shared, longest_first};
use super::spill::SpilledRow;
use super::validate::{Validation, VariantEntry};
use super::{BatchEvent, QueueTarget};
use crate::Error;
use crate::coordinator::pack_bundle;
use crate::request::RenderSource;

/// The first wait between two looks at the results, doubling while none
/// arrives, up to [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(250);
/// The longest wait between two looks at the results.
const POLL_MAX: Duration = Duration::from_secs(5);
/// Every how many quiet looks at the results the dead-letter queue is
/// looked at too.
const DEAD_LETTER_EVERY: u32 = 3;

impl BatchJob {
    /// Sends every variant to the queue and, when asked, waits for their
    /// results. Returns the tally of rows with results.
    pub(super) async fn send_to_queue(
        &self,
        validation: Validation,
        target: &QueueTarget,
    ) -> Result<Tally, Error> {
        let Validation {
            spill,
            variants,
            dups,
            mut results,
            tally,
            plan,
        } = validation;
        let state = BatchState::new(&self.request.output, BatchId::generate())?;
        let queue = Queue::connect(&target.url, &self.coordinator.options.s3)
            .await
            .map_err(|e| Error::Input(format!("--queue: {e}")))?;
        let shared = Shared {
            spill,
            variants,
            dups,
        };
        self.upload_bundle(&state).await?;
        let manifest = BatchManifest {
            format: QUEUE_JOB_FORMAT,
            batch: state.id().clone(),
            queue: target.url.clone(),
            rows: plan.rows,
            variants: shared.variants.len() as u64,
        };
        let at = state.manifest();
        let store = self.coordinator.stores.open(&at).await?;
        write_record(store.as_ref(), at.key(), &manifest).await?;
        let mut stored = 0u64;
        for v in longest_first(&shared.variants) {
            if self.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let entry = &shared.variants[v as usize];
            if self.send_variant(&queue, &state, &shared, entry).await? {
                stored += 1;
            }
        }
        self.send(BatchEvent::Queued {
            batch: state.id().to_string(),
            queue: target.url.clone(),
            variants: manifest.variants,
            stored,
        })
        .await;
        let mut tally = tally;
        if target.wait {
            let deadline = target.wait_timeout.map(|t| tokio::time::Instant::now() + t);
            self.gather(&queue, &state, &shared, deadline, &mut results, &mut tally)
                .await?;
        }
        Ok(tally)
    }

    /// Uploads the bundle's archive under the root, by hash, unless it is
    /// there already.
    async fn upload_bundle(&self, state: &BatchState) -> Result<(), Error> {
        let RenderSource::Bundle(path) = &self.request.source else {
            return Err(Error::Input("--queue needs a bundle".into()));
        };
        let abs = std::fs::canonicalize(path)
            .map_err(|e| Error::Input(format!("bundle {}: {e}", path.display())))?;
        let (hash, archive) = pack_bundle(path, abs, true).await?;
        let Some((_dir, file)) = archive else {
            return Err(Error::Internal(
                "the bundle was packed without its archive".into(),
            ));
        };
        let at = state.bundle(&hash);
        let store = self.coordinator.stores.open(&at).await?;
        let present = store
            .head(at.key())
            .await?
            .is_some_and(|m| m.sha256 == Some(hash));
        if !present {
            store.put_file(at.key(), &file).await?;
        }
        Ok(())
    }

    /// Sends one variant's message (its payload stored when too large for
    /// one). Returns whether the payload was stored.
    async fn send_variant(
        &self,
        queue: &Queue,
        state: &BatchState,
        shared: &Shared,
        entry: &VariantEntry,
    ) -> Result<bool, Error> {
        let first = shared.spill.read(entry.spot)?;
        let job = first
            .job
            .clone()
            .ok_or_else(|| Error::Internal(format!("row {} has no job", first.row)))?;
        let mut copies: Vec<String> = Vec::new();
        for d in shared.dups_of(entry) {
            let dup = shared.spill.read(d.spot)?;
            if dup.name_differs(&first)
                && let Some(name) = dup.name
                && !copies.contains(&name)
            {
                copies.push(name);
            }
        }
        let payload = JobPayload { job, copies };
        let reference = QueueJob {
            format: QUEUE_JOB_FORMAT,
            batch: state.id().clone(),
            root: state.root().to_string(),
            variant: entry.id,
            use_cache: self.request.use_cache,
            payload: None,
        };
        let inline = QueueJob {
            payload: Some(payload.clone()),
            ..reference.clone()
        };
        let mut body = inline.to_body()?;
        let stored = body.len() > MAX_MESSAGE_BYTES;
        if stored {
            let at = state.job(&entry.id);
            let store = self.coordinator.stores.open(&at).await?;
            store
                .put_bytes(at.key(), payload.to_bytes()?.into())
                .await?;
            body = reference.to_body()?;
        }
        queue.send(&body).await?;
        Ok(stored)
    }

    /// Waits for every variant's final result (done, or failed on its last
    /// delivery), turning each into its rows' results; looks in the
    /// dead-letter queue while no result arrives (a job whose agent died
    /// on its last delivery has no other); at `deadline`, records the
    /// variants still pending as timed out.
    async fn gather(
        &self,
        queue: &Queue,
        state: &BatchState,
        shared: &Shared,
        deadline: Option<tokio::time::Instant>,
        results: &mut ResultsWriter,
        tally: &mut Tally,
    ) -> Result<(), Error> {
        let mut pending: HashMap<spec::ContentHash, usize> = shared
            .variants
            .iter()
            .enumerate()
            .map(|(i, v)| (v.id, i))
            .collect();
        let prefix = state.results();
        let store = self.coordinator.stores.open(&prefix).await?;
        let dead = DeadLetters::of(queue).await?;
        let poll = Backoff::exponential(POLL_FIRST, POLL_MAX);
        let mut quiet = 0u32;
        while !pending.is_empty() {
            let mut progress = false;
            for meta in store.list(prefix.key()).await? {
                let Some(variant) = variant_of(&meta.key) else {
                    continue;
                };
                let Some(&index) = pending.get(&variant) else {
                    continue;
                };
                let Some(bytes) = read_record(store.as_ref(), &meta.key).await? else {
                    continue;
                };
                let result = match JobResult::parse(&bytes, state.id(), &variant, &meta.key) {
                    Ok(r) if r.is_final() => r,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping an unreadable result");
                        continue;
                    }
                };
                pending.remove(&variant);
                progress = true;
                for row in rows_of(shared, &shared.variants[index], &result)? {
                    self.record(results, tally, row).await?;
                }
            }
            if progress {
                quiet = 0;
                continue;
            }
            quiet = quiet.saturating_add(1);
            if let Some(dead) = &dead
                && quiet.is_multiple_of(DEAD_LETTER_EVERY)
                && settle_dead_letters(dead, state, store.as_ref()).await? > 0
            {
                continue;
            }
            let mut sleep = poll.delay(quiet);
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    return self.time_out(shared, pending, results, tally).await;
                }
                sleep = sleep.min(left);
            }
            tokio::select! {
                () = self.cancel.cancelled() => return Err(Error::Cancelled),
                () = tokio::time::sleep(sleep) => {}
            }
        }
        Ok(())
    }

    /// Records the rows of the variants still `pending` at the deadline as
    /// failed (`timed_out`).
    async fn time_out(
        &self,
        shared: &Shared,
        pending: HashMap<spec::ContentHash, usize>,
        results: &mut ResultsWriter,
        tally: &mut Tally,
    ) -> Result<(), Error> {
        let mut left: Vec<usize> = pending.into_values().collect();
        left.sort_unstable();
        for index in left {
            let entry = &shared.variants[index];
            let first = shared.spill.read(entry.spot)?;
            let failure = RowFailure {
                class: crate::ErrorKind::Worker,
                reason: FailureReason::TimedOut,
                column: None,
                message: format!(
                    "no result within --wait-timeout (variant {}); it may still render: `coordinator batch-status` reads later results",
                    entry.id
                ),
            };
            let head = first.row;
            let mut rows = vec![first];
            for d in shared.dups_of(entry) {
                rows.push(shared.spill.read(d.spot)?);
            }
            for row in rows {
                let duplicate_of = (row.row != head).then_some(head);
                let result = row.failed(entry.id, duplicate_of, failure.clone());
                self.record(results, tally, result).await?;
            }
        }
        Ok(())
    }
}

impl SpilledRow {
    /// Whether this row's output name differs from `first`'s (then it
    /// needs a copy).
    fn name_differs(&self, first: &SpilledRow) -> bool {
        self.name != first.name
    }
}

/// The results of a variant's rows from its agent's result.
fn rows_of(
    shared: &Shared,
    entry: &VariantEntry,
    result: &JobResult,
) -> Result<Vec<RowResult>, Error> {
    let first = shared.spill.read(entry.spot)?;
    let done = result.status.is_done();
    let head = RowResult {
        row: first.row,
        out: first.out.clone(),
        status: result.status,
        variant: Some(entry.id),
        output: result.output.clone().filter(|_| done),
        frames: result.frames,
        seconds: result.seconds,
        cached: result.status == RowStatus::Cached,
        duplicate_of: None,
        error: result.error.clone(),
    };
    let mut rows = vec![head.clone()];
    for d in shared.dups_of(entry) {
        let dup = shared.spill.read(d.spot)?;
        let output = match &dup.name {
            Some(name) if dup.name_differs(&first) => result.copies.get(name).cloned(),
            _ => head.output.clone(),
        };
        rows.push(RowResult {
            row: dup.row,
            out: dup.out.clone(),
            status: if done {
                RowStatus::Duplicate
            } else {
                RowStatus::Failed
            },
            output: output.filter(|_| done),
            seconds: Some(0.0),
            duplicate_of: Some(first.row),
            ..head.clone()
        });
    }
    Ok(rows)
}
