//! One received message as its phases: [`JobRun::run`] reads as hold the
//! lease (heartbeat) → check the message → already done? → the payload →
//! render, copy, record → settle the message (delete, or give it back).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use spec::Location;
use storage::queue::Message;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::batch::queue::{
    BatchState, JobPayload, JobResult, QUEUE_JOB_FORMAT, QueueJob, read_record, write_record,
};
use crate::batch::slots::Lease;
use crate::batch::variant::VariantRun;
use crate::batch::{RowFailure, RowStatus, VariantSource};
use crate::events::RenderEvent;
use crate::{Error, ErrorKind};

/// How a job ended, for the agent's report and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Rendered,
    Cached,
    Duplicate,
    Failed,
    Invalid,
    Released,
}

impl Outcome {
    /// The metrics label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Rendered => "rendered",
            Outcome::Cached => "cached",
            Outcome::Duplicate => "duplicate",
            Outcome::Failed => "failed",
            Outcome::Invalid => "invalid",
            Outcome::Released => "released",
        }
    }
}

/// What the work phase came to.
enum Worked {
    /// Recorded: delete the message.
    Done(JobResult),
    /// The output is there already: delete the message.
    Duplicate,
    /// The message itself is wrong.
    Invalid(Error),
    /// The job failed (the message parsed).
    Failed(QueueJob, Error),
    /// Shut down while working.
    Cancelled,
}

/// One received message.
pub(crate) struct JobRun {
    shared: Arc<Shared>,
    message: Message,
    cancel: CancellationToken,
    received: Instant,
}

impl JobRun {
    pub(crate) fn new(shared: Arc<Shared>, message: Message, cancel: CancellationToken) -> Self {
        JobRun {
            shared,
            message,
            cancel,
            received: Instant::now(),
        }
    }

    /// The whole job, phase by phase, on `lease`.
    pub(crate) async fn run(self, lease: Lease) -> Outcome {
        if let Some(m) = &self.shared.metrics {
            m.received(&self.message);
            m.busy(1);
        }
        tracing::info!(message_id = %self.message.id, receive_count = self.message.receive_count, "job started");
        let heartbeat = self.heartbeat();
        let worked = self.work(lease).await;
        heartbeat.abort();
        let outcome = self.settle(worked).await;
        if let Some(m) = &self.shared.metrics {
            if matches!(outcome, Outcome::Duplicate | Outcome::Released) {
                m.settled(outcome.label());
            }
            m.busy(-1);
        }
        tracing::info!(message_id = %self.message.id, outcome = outcome.label(), "job settled");
        outcome
    }

    /// Extends the lease every third of the visibility timeout until
    /// aborted.
    fn heartbeat(&self) -> tokio::task::JoinHandle<()> {
        let shared = Arc::clone(&self.shared);
        let receipt = self.message.receipt.clone();
        let id = self.message.id.clone();
        tokio::spawn(async move {
            let every = shared.options.heartbeat();
            loop {
                tokio::time::sleep(every).await;
                match shared
                    .queue
                    .extend(&receipt, shared.options.visibility_timeout)
                    .await
                {
                    Ok(()) => {
                        if let Some(m) = &shared.metrics {
                            m.lease_extended();
                        }
                    }
                    Err(e) => {
                        tracing::warn!(message_id = %id, error = %e, "extending the lease failed")
                    }
                }
            }
        })
    }

    /// Checks, renders and records the job.
    async fn work(&self, lease: Lease) -> Worked {
        let job = match QueueJob::parse(&self.message.body, &self.message.id) {
            Ok(j) => j,
            Err(e) => return Worked::Invalid(e),
        };
        let result = tokio::select! {
            r = self.render(&job, lease) => r,
            () = self.cancel.cancelled() => Err(Error::Cancelled),
        };
        match result {
            Ok(Some(r)) => Worked::Done(r),
            Ok(None) => Worked::Duplicate,
            Err(Error::Cancelled) => Worked::Cancelled,
            Err(e) => Worked::Failed(job, e),
        }
    }

    /// The job's output, rendered, copied and recorded; `None` when a
    /// previous delivery did it already.
    async fn render(&self, job: &QueueJob, lease: Lease) -> Result<Option<JobResult>, Error> {
        let state = job.state()?;
        if self.already_done(job, &state).await? {
            return Ok(None);
        }
        let payload = self.payload(job, &state).await?;
        let VariantSource::Bundle { sha256 } = payload.job.source else {
            return Err(Error::Input("job.source: not a bundle".into()));
        };
        let context = self.shared.context(&state, &sha256).await?;
        check_assets(&context, &payload.job).await?;
        let root = job.output()?;
        let from = payload.job.destination(&root);
        let mut handle = self.shared.coordinator.run_variant(
            payload.job.clone(),
            context,
            &root,
            VariantRun {
                use_cache: job.use_cache,
                pool: Some(lease.pool()),
            },
        );
        let mut lease = Some(lease);
        while let Some(event) = handle.next_event().await {
            // The slot goes back when the chunks are done.
            if matches!(event, RenderEvent::Combining | RenderEvent::Done(_)) {
                drop(lease.take());
            }
        }
        let summary = handle.finish().await?;
        drop(lease);
        let mut copies = std::collections::BTreeMap::new();
        for name in &payload.copies {
            let to = root.destination(Some(name));
            let url = crate::batch::run::copy_output(
                &self.shared.coordinator,
                &from,
                &summary.output,
                &to,
            )
            .await?;
            copies.insert(name.clone(), url);
        }
        let meta = self.head(&summary.output).await?;
        let result = JobResult {
            status: if summary.output_cached {
                RowStatus::Cached
            } else {
                RowStatus::Rendered
            },
            output: Some(summary.output.clone()),
            sha256: meta.sha256,
            bytes: Some(meta.size),
            copies,
            frames: Some(summary.frames),
            seconds: Some(self.received.elapsed().as_secs_f64()),
            last: true,
            error: None,
            ..self.result(job)
        };
        self.record(&state, &result).await?;
        Ok(Some(result))
    }

    /// Whether a previous delivery recorded this variant done and its
    /// outputs are still there with the recorded sha256.
    async fn already_done(&self, job: &QueueJob, state: &BatchState) -> Result<bool, Error> {
        let at = state.result(&job.variant);
        let store = self.shared.coordinator.stores.open(&at).await?;
        let Some(bytes) = read_record(store.as_ref(), at.key()).await? else {
            return Ok(false);
        };
        let recorded = match JobResult::parse(&bytes, &job.batch, &job.variant, at.key()) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "an unreadable result: rendering again");
                return Ok(false);
            }
        };
        let (Some(output), Some(sha256), true) =
            (&recorded.output, recorded.sha256, recorded.status.is_done())
        else {
            return Ok(false);
        };
        let root = job.output()?;
        let main = self.head(output).await?;
        if main.sha256 != Some(sha256) || !self.inside(&root, output) {
            return Ok(false);
        }
        for url in recorded.copies.values() {
            if !self.inside(&root, url) || self.head(url).await?.sha256 != Some(sha256) {
                return Ok(false);
            }
        }
        tracing::info!(message_id = %self.message.id, output = %output, "duplicate delivery: the output is there already");
        Ok(true)
    }

    /// Whether `url` is under the batch's root (a record names nothing
    /// else).
    fn inside(&self, root: &crate::batch::BatchOutput, url: &str) -> bool {
        url.starts_with(&root.to_string())
    }

    /// The payload: in the message, or stored (checked the same way).
    async fn payload(&self, job: &QueueJob, state: &BatchState) -> Result<JobPayload, Error> {
        if let Some(p) = &job.payload {
            return Ok(p.clone());
        }
        let at = state.job(&job.variant);
        let store = self.shared.coordinator.stores.open(&at).await?;
        let bytes = read_record(store.as_ref(), at.key())
            .await?
            .ok_or_else(|| Error::Input(format!("the job's payload {at} is missing")))?;
        let payload: JobPayload = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Input(format!("the job's payload {at}: {e}")))?;
        payload
            .check(&job.variant)
            .map_err(|e| Error::Input(format!("the job's payload {at}: {e}")))?;
        Ok(payload)
    }

    /// Size and sha256 of a stored output.
    async fn head(&self, url: &str) -> Result<storage::ObjectMeta, Error> {
        let at = Location::parse(url)
            .map_err(|e| Error::Internal(format!("the output's location: {e}")))?;
        let store = self.shared.coordinator.stores.open(&at).await?;
        store.head(at.key()).await?.ok_or_else(|| {
            Error::Storage(storage::StorageError::NotFound {
                location: url.to_owned(),
            })
        })
    }

    /// A result of this delivery, to be filled in.
    fn result(&self, job: &QueueJob) -> JobResult {
        JobResult {
            format: QUEUE_JOB_FORMAT,
            batch: job.batch.clone(),
            variant: job.variant,
            status: RowStatus::Failed,
            output: None,
            sha256: None,
            bytes: None,
            copies: Default::default(),
            frames: None,
            seconds: None,
            agent: self.shared.name.clone(),
            message: self.message.id.clone(),
            receive_count: self.message.receive_count,
            last: false,
            error: None,
        }
    }

    async fn record(&self, state: &BatchState, result: &JobResult) -> Result<(), Error> {
        let at = state.result(&result.variant);
        let store = self.shared.coordinator.stores.open(&at).await?;
        write_record(store.as_ref(), at.key(), result).await
    }

    /// Deletes the message of a finished job, or gives it back: at once
    /// when cancelled, after a short delay when it failed (until the
    /// redrive policy takes it to the dead-letter queue).
    async fn settle(&self, worked: Worked) -> Outcome {
        let queue = &self.shared.queue;
        let receipt = &self.message.receipt;
        let last = self.message.receive_count >= self.shared.max_receives;
        let retry_later = RETRY_DELAY_CAP
            .min(super::RETRY_DELAY.saturating_mul(self.message.receive_count.max(1)));
        let (outcome, delete) = match worked {
            Worked::Done(result) => {
                self.observe(&result, None);
                self.notify("job.succeeded", &result);
                let outcome = if result.status == RowStatus::Cached {
                    Outcome::Cached
                } else {
                    Outcome::Rendered
                };
                (outcome, true)
            }
            Worked::Duplicate => (Outcome::Duplicate, true),
            Worked::Cancelled => {
                if let Err(e) = queue.release(receipt).await {
                    tracing::warn!(message_id = %self.message.id, error = %e, "giving the job back failed: it returns when its lease ends");
                }
                return Outcome::Released;
            }
            Worked::Invalid(e) => {
                tracing::error!(message_id = %self.message.id, class = e.kind().as_str(), error = %e, "a message that is not a job");
                if let Some(m) = &self.shared.metrics {
                    m.failed(e.kind().as_str());
                }
                (Outcome::Invalid, !self.shared.dead_letter)
            }
            Worked::Failed(job, e) => {
                let mut result = self.result(&job);
                result.error = Some(RowFailure::of(&e));
                result.last = last;
                result.seconds = Some(self.received.elapsed().as_secs_f64());
                tracing::warn!(message_id = %self.message.id, class = e.kind().as_str(), last, error = %e, "job failed");
                self.observe(&result, Some(e.kind()));
                if let Ok(state) = job.state()
                    && let Err(w) = self.record(&state, &result).await
                {
                    tracing::warn!(message_id = %self.message.id, error = %w, "recording the failure failed");
                }
                self.notify("job.failed", &result);
                (Outcome::Failed, last && !self.shared.dead_letter)
            }
        };
        let settled = if delete {
            queue.delete(receipt).await
        } else {
            queue.extend(receipt, retry_later).await
        };
        if let Err(e) = settled {
            tracing::warn!(message_id = %self.message.id, error = %e, "settling the message failed: it returns when its lease ends");
        }
        outcome
    }

    fn observe(&self, result: &JobResult, class: Option<ErrorKind>) {
        let Some(m) = &self.shared.metrics else {
            return;
        };
        match class {
            Some(k) => m.failed(k.as_str()),
            None => m.done(
                result.status,
                Duration::from_secs_f64(result.seconds.unwrap_or(0.0)),
            ),
        }
    }

    fn notify(&self, event: &'static str, result: &JobResult) {
        #[derive(Serialize)]
        struct JobEvent<'a> {
            event: &'static str,
            #[serde(flatten)]
            result: &'a JobResult,
        }
        if let Some(w) = &self.shared.webhooks {
            w.notify(event, &JobEvent { event, result });
        }
    }
}

/// Checks a job as a batch checks a row before anything renders: its
/// props and overrides described by the composition, and the images and
/// fonts they name present, from their headers (a missing asset is named
/// here, not by a worker mid-render).
async fn check_assets(
    context: &crate::batch::VariantContext,
    job: &crate::batch::VariantJob,
) -> Result<(), Error> {
    use composition::CompositionSource as _;
    let Some(bundle) = context.bundle().cloned() else {
        return Ok(());
    };
    let (id, props) = (job.composition.clone(), job.props.clone());
    tokio::task::spawn_blocking(move || -> Result<(), Error> {
        let composition = bundle.composition(&id)?;
        composition.describe(&props)?;
        composition.budget(&props)?;
        Ok(())
    })
    .await
    .map_err(Error::task("checking a job"))?
}

/// The longest a failed job waits before it comes back.
const RETRY_DELAY_CAP: Duration = Duration::from_secs(60);
