//! A batch as its phases: [`BatchJob::run`] reads top to bottom as results
//! of an earlier run → the source resolved once → validate every row →
//! render the distinct variants → digest.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use spec::Location;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::digest::{BatchSummary, Tally};
use super::results::{ResultsWriter, RowFailure, RowResult, RowStatus, read_done};
use super::slots::{Lease, Slots};
use super::spill::{Spill, SpilledRow};
use super::validate::{DupEntry, Validation, Validator, VariantEntry};
use super::variant::{VariantContext, VariantRun};
use super::{BatchEvent, BatchOutput, BatchRequest, RESULTS_FILE};
use crate::coordinator::Coordinator;
use crate::events::RenderEvent;
use crate::job::copy_atomically;
use crate::request::Destination;
use crate::{Error, ErrorKind};

/// Row results buffered between running variants and the results file.
const ROW_RESULTS: usize = 256;

/// A variant that failed for its workers' sake (a worker died or could not
/// be reached on every attempt) is tried again this many times on other
/// workers (its chunks already retry on the workers it leased).
pub const VARIANT_RETRIES_ELSEWHERE: u32 = 1;

/// One batch in progress.
pub(crate) struct BatchJob {
    pub(super) coordinator: Arc<Coordinator>,
    pub(super) request: BatchRequest,
    events: mpsc::Sender<BatchEvent>,
    pub(super) cancel: CancellationToken,
    started: Instant,
}

/// The rows, variants and duplicates the render phase reads, shared by the
/// variants' tasks.
pub(super) struct Shared {
    pub(super) spill: Spill,
    pub(super) variants: Vec<VariantEntry>,
    pub(super) dups: Vec<DupEntry>,
}

impl Shared {
    pub(super) fn dups_of(&self, v: &VariantEntry) -> &[DupEntry] {
        let start = v.dup_start as usize;
        self.dups
            .get(start..start + v.dup_count as usize)
            .unwrap_or(&[])
    }
}

impl BatchJob {
    pub(crate) fn new(
        coordinator: Arc<Coordinator>,
        request: BatchRequest,
        events: mpsc::Sender<BatchEvent>,
        cancel: CancellationToken,
    ) -> Self {
        BatchJob {
            coordinator,
            request,
            events,
            cancel,
            started: Instant::now(),
        }
    }

    /// The whole batch, phase by phase.
    pub(crate) async fn run(self) -> Result<BatchSummary, Error> {
        self.request.validate()?;
        let results_path = self.request.results_path();
        self.fetch_results(&results_path).await?;
        let done = {
            let path = results_path.clone();
            tokio::task::spawn_blocking(move || read_done(&path))
                .await
                .map_err(Error::task("reading the results file"))??
        };
        let context = Arc::new(
            self.until_cancelled(self.coordinator.variant_context(&self.request.source))
                .await?,
        );
        let results = ResultsWriter::open(&results_path)?;
        let validation = self.validate(Arc::clone(&context), done, results).await?;
        let plan = validation.plan.clone();
        self.send(BatchEvent::BatchPlanned(plan.clone())).await;
        if plan.invalid > 0 && !self.request.keep_going {
            return Err(Error::Input(format!(
                "{} of {} rows are invalid (each is listed above); nothing was rendered: fix them, or pass --keep-going to render the others",
                plan.invalid, plan.rows
            )));
        }
        let mut tally = match self.request.queue.clone() {
            None => self.render(validation, context).await?,
            Some(target) => self.send_to_queue(validation, &target).await?,
        };
        let summary = tally.summary(self.started.elapsed(), results_path.display().to_string());
        self.deliver_results(&results_path).await?;
        // A queued batch that does not wait has nothing to summarise yet.
        if self.request.queue.as_ref().is_none_or(|q| q.wait) {
            self.coordinator.notify_batch(&summary);
        }
        self.send(BatchEvent::BatchDone(summary.clone())).await;
        Ok(summary)
    }

    /// Runs the validate phase on a blocking thread.
    async fn validate(
        &self,
        context: Arc<VariantContext>,
        done: super::results::Done,
        results: ResultsWriter,
    ) -> Result<Validation, Error> {
        let validator = Validator::new(
            Arc::clone(&self.coordinator),
            context,
            self.request.clone(),
            done,
            results,
            self.events.clone(),
            self.cancel.clone(),
        )?;
        tokio::task::spawn_blocking(move || validator.run())
            .await
            .map_err(Error::task("validating the rows"))?
    }

    /// Renders every variant, longest first, on leased slots, writing each
    /// row's result as it comes. Returns the tally of results.
    ///
    /// Long on purpose: it is one scheduling loop (a `select!` over cancel,
    /// row results, finished variants and slot leases) whose arms all share
    /// the same state (the queue, the running set, the slots, the results
    /// file, why it stopped), followed by the drain that loop's exit needs;
    /// split, every step would take and return all of it.
    async fn render(
        &self,
        validation: Validation,
        context: Arc<VariantContext>,
    ) -> Result<Tally, Error> {
        let Validation {
            spill,
            variants,
            dups,
            mut results,
            mut tally,
            ..
        } = validation;
        let mut queue: VecDeque<(u32, u32)> = longest_first(&variants)
            .into_iter()
            .map(|v| (v, 1))
            .collect();
        let shared = Arc::new(Shared {
            spill,
            variants,
            dups,
        });
        let slots = Arc::new(Slots::default());
        let stop_pool = self.cancel.child_token();
        let follower =
            super::slots::follow_pool(&self.coordinator, &slots, stop_pool.clone()).await;
        // Cancels the variants when the batch stops for any reason.
        let tasks_cancel = self.cancel.child_token();
        let (rows_tx, mut rows_rx) = mpsc::channel::<RowResult>(ROW_RESULTS);
        let mut running: JoinSet<Outcome> = JoinSet::new();
        let policy = self.coordinator.options.policy;
        let mut stopped: Option<Error> = None;
        while !(queue.is_empty() && running.is_empty()) {
            let want = queue
                .front()
                .map(|(v, _)| shared.variants[*v as usize].chunks);
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => {
                    stopped = Some(Error::Cancelled);
                    break;
                }
                Some(r) = rows_rx.recv() => {
                    if let Err(e) = self.record(&mut results, &mut tally, r).await {
                        stopped = Some(e);
                        break;
                    }
                }
                Some(joined) = running.join_next() => match joined {
                    Ok(Outcome::Retry { variant, attempt, workers }) => {
                        for w in &workers {
                            slots.set_aside(w, policy.quarantine);
                        }
                        queue.push_back((variant, attempt + 1));
                    }
                    Ok(Outcome::Fatal(e)) => {
                        stopped = Some(e);
                        break;
                    }
                    Ok(Outcome::Finished | Outcome::Cancelled) => {}
                    Err(e) => {
                        stopped = Some(Error::task("a variant")(e));
                        break;
                    }
                },
                lease = slots.lease(want.unwrap_or(1), policy.stall_timeout), if want.is_some() => {
                    let Some(lease) = lease else {
                        stopped = Some(Error::NoWorkers(
                            "no workers available: the worker pool is empty".into(),
                        ));
                        break;
                    };
                    let Some((variant, attempt)) = queue.pop_front() else { continue };
                    let entry = &shared.variants[variant as usize];
                    self.send(BatchEvent::VariantStarted {
                        variant: entry.id,
                        row: entry.first_row,
                        frames: entry.frames,
                        slots: lease.count(),
                    })
                    .await;
                    let task = VariantTask {
                        coordinator: Arc::clone(&self.coordinator),
                        context: Arc::clone(&context),
                        shared: Arc::clone(&shared),
                        root: self.request.output.clone(),
                        use_cache: self.request.use_cache,
                        rows: rows_tx.clone(),
                        cancel: tasks_cancel.clone(),
                        variant,
                        attempt,
                        last_attempt: attempt > VARIANT_RETRIES_ELSEWHERE,
                    };
                    running.spawn(task.run(lease));
                }
            }
        }
        if stopped.is_some() {
            tasks_cancel.cancel();
        }
        // Rows that finish while the others stop still get their results.
        drop(rows_tx);
        loop {
            tokio::select! {
                Some(r) = rows_rx.recv() => {
                    if let Err(e) = self.record(&mut results, &mut tally, r).await {
                        tasks_cancel.cancel();
                        stopped.get_or_insert(e);
                    }
                }
                joined = running.join_next() => if joined.is_none() { break },
            }
        }
        while let Ok(r) = rows_rx.try_recv() {
            self.record(&mut results, &mut tally, r).await?;
        }
        stop_pool.cancel();
        let _ = follower.await;
        match stopped {
            Some(e) => Err(e),
            None => Ok(tally),
        }
    }

    /// Writes a row's result and reports it.
    pub(super) async fn record(
        &self,
        results: &mut ResultsWriter,
        tally: &mut Tally,
        r: RowResult,
    ) -> Result<(), Error> {
        results.write(&r)?;
        tally.add(&r);
        self.send(BatchEvent::Row(r)).await;
        Ok(())
    }

    /// With an S3 output and no local results file, the one a run on
    /// another machine left under the prefix.
    async fn fetch_results(&self, path: &Path) -> Result<(), Error> {
        let BatchOutput::Storage(prefix) = &self.request.output else {
            return Ok(());
        };
        if path.exists() {
            return Ok(());
        }
        let store = self.coordinator.stores.open(prefix).await?;
        let key = format!("{}{RESULTS_FILE}", prefix.key());
        match store.get_file(&key, path, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// With an S3 output, a copy of the results file under the prefix.
    async fn deliver_results(&self, path: &Path) -> Result<(), Error> {
        let BatchOutput::Storage(prefix) = &self.request.output else {
            return Ok(());
        };
        let store = self.coordinator.stores.open(prefix).await?;
        store
            .put_file(&format!("{}{RESULTS_FILE}", prefix.key()), path)
            .await?;
        Ok(())
    }

    pub(super) async fn send(&self, event: BatchEvent) {
        let _ = self.events.send(event).await;
    }

    async fn until_cancelled<T>(
        &self,
        fut: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        tokio::select! {
            r = fut => r,
            () = self.cancel.cancelled() => Err(Error::Cancelled),
        }
    }
}

/// Variants in render order: most output frames first (they take longest;
/// started last, they would finish alone), then in row order.
pub(super) fn longest_first(variants: &[VariantEntry]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..u32::try_from(variants.len()).unwrap_or(u32::MAX)).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(variants[i as usize].frames));
    order
}

/// How a variant's task ended.
enum Outcome {
    /// Its rows have results.
    Finished,
    /// Its workers failed: try it again elsewhere.
    Retry {
        variant: u32,
        attempt: u32,
        workers: Vec<String>,
    },
    Cancelled,
    /// Something that stops the batch (the spill file cannot be read).
    Fatal(Error),
}

/// One variant: rendered on its leased slots, then its rows' results (its
/// duplicates' outputs copied where their names differ).
struct VariantTask {
    coordinator: Arc<Coordinator>,
    context: Arc<VariantContext>,
    shared: Arc<Shared>,
    root: BatchOutput,
    use_cache: bool,
    rows: mpsc::Sender<RowResult>,
    cancel: CancellationToken,
    variant: u32,
    attempt: u32,
    last_attempt: bool,
}

impl VariantTask {
    async fn run(self, lease: Lease) -> Outcome {
        match self.render(lease).await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Fatal(e),
        }
    }

    async fn render(&self, lease: Lease) -> Result<Outcome, Error> {
        let entry = &self.shared.variants[self.variant as usize];
        let first = self.shared.spill.read(entry.spot)?;
        let job = first
            .job
            .clone()
            .ok_or_else(|| Error::Internal(format!("row {} has no job", first.row)))?;
        let workers: Vec<String> = lease
            .pool()
            .borrow()
            .iter()
            .map(|w| w.address.clone())
            .collect();
        let from = job.destination(&self.root);
        let started = Instant::now();
        let mut handle = self.coordinator.run_variant(
            job,
            Arc::clone(&self.context),
            &self.root,
            VariantRun {
                use_cache: self.use_cache,
                pool: Some(lease.pool()),
            },
        );
        // The slots go back when the chunks are done: combining and
        // delivering this variant overlaps the next one's render.
        let mut lease = Some(lease);
        let mut cancelled = false;
        loop {
            tokio::select! {
                event = handle.next_event() => match event {
                    Some(RenderEvent::Combining | RenderEvent::Done(_)) => drop(lease.take()),
                    Some(_) => {}
                    None => break,
                },
                () = self.cancel.cancelled(), if !cancelled => {
                    cancelled = true;
                    handle.cancel();
                }
            }
        }
        let result = handle.finish().await;
        drop(lease);
        let summary = match result {
            Ok(s) => s,
            Err(Error::Cancelled) => return Ok(Outcome::Cancelled),
            Err(e) if e.kind() == ErrorKind::Worker && !self.last_attempt => {
                return Ok(Outcome::Retry {
                    variant: self.variant,
                    attempt: self.attempt,
                    workers,
                });
            }
            Err(e) => {
                self.fail(entry, &first, &e).await?;
                return Ok(Outcome::Finished);
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        let done = RowResult {
            row: first.row,
            out: first.out.clone(),
            status: if summary.output_cached {
                RowStatus::Cached
            } else {
                RowStatus::Rendered
            },
            variant: Some(entry.id),
            output: Some(summary.output.clone()),
            frames: Some(summary.frames),
            seconds: Some(seconds),
            cached: summary.output_cached,
            duplicate_of: None,
            error: None,
        };
        self.send(done.clone()).await;
        for d in self.shared.dups_of(entry) {
            let dup = self.shared.spill.read(d.spot)?;
            let result = self.duplicate(&dup, &first, &from, &done).await;
            self.send(result).await;
        }
        Ok(Outcome::Finished)
    }

    /// A duplicate row's result: the same output when it has the same
    /// name, else a copy under its own.
    async fn duplicate(
        &self,
        dup: &SpilledRow,
        first: &SpilledRow,
        from: &Destination,
        done: &RowResult,
    ) -> RowResult {
        let started = Instant::now();
        let mut result = RowResult {
            row: dup.row,
            out: dup.out.clone(),
            status: RowStatus::Duplicate,
            duplicate_of: Some(first.row),
            seconds: Some(0.0),
            ..done.clone()
        };
        if dup.name == first.name {
            return result;
        }
        let to = self.root.destination(dup.name.as_deref());
        let reported = done.output.as_deref().unwrap_or_default();
        match copy_output(&self.coordinator, from, reported, &to).await {
            Ok(output) => {
                result.output = Some(output);
                result.seconds = Some(started.elapsed().as_secs_f64());
            }
            Err(e) => {
                result.status = RowStatus::Failed;
                result.output = None;
                result.error = Some(RowFailure::of(&e));
            }
        }
        result
    }

    /// Every row of the variant failed with `e`.
    async fn fail(&self, entry: &VariantEntry, first: &SpilledRow, e: &Error) -> Result<(), Error> {
        let failed = |row: &SpilledRow, duplicate_of: Option<u64>| {
            row.failed(entry.id, duplicate_of, RowFailure::of(e))
        };
        self.send(failed(first, None)).await;
        for d in self.shared.dups_of(entry) {
            let dup = self.shared.spill.read(d.spot)?;
            self.send(failed(&dup, Some(first.row))).await;
        }
        Ok(())
    }

    async fn send(&self, r: RowResult) {
        let _ = self.rows.send(r).await;
    }
}

/// Copies a delivered output (`from`, reported as `reported`) to `to`:
/// from a local file or an S3 object, to a file or storage.
pub(crate) async fn copy_output(
    coordinator: &Coordinator,
    from: &Destination,
    reported: &str,
    to: &Destination,
) -> Result<String, Error> {
    let work = tempfile::tempdir().map_err(Error::io("creating a temporary directory"))?;
    let local: PathBuf = match from {
        Destination::File(p) => p.clone(),
        Destination::Storage(_) => match Location::parse(reported)
            .map_err(|e| Error::Internal(format!("the output's location: {e}")))?
        {
            Location::Local { root, key } => root.join(key),
            s3 @ Location::S3 { .. } => {
                let store = coordinator.stores.open(&s3).await?;
                let tmp = work.path().join("copy.mp4");
                store.get_file(s3.key(), &tmp, None).await?;
                tmp
            }
        },
    };
    match to {
        Destination::File(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(Error::io(format!("creating {}", dir.display())))?;
            }
            copy_atomically(&local, path).await?;
            Ok(path.display().to_string())
        }
        Destination::Storage(_) => Ok(coordinator.deliver_to(to, None, &local).await?.0),
    }
}
