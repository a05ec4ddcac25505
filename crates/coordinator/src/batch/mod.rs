//! Campaigns: every row of a spreadsheet (CSV), JSON Lines file or JSON
//! array is a video of one template, rendered once per distinct variant,
//! resumably.
//!
//! [`Coordinator::batch`] runs a [`BatchRequest`] as its phases:
//!
//! 1. **validate** every row before anything renders, streaming the file
//!    ([`rows`]): columns are props or overrides ([`columns`]), each row is
//!    described by the composition (props, overrides, assets, frame range),
//!    named ([`names`]) and turned into a [`VariantJob`] whose id says
//!    which rows are the same video. Bad rows are listed; without
//!    `keep_going` the batch stops there. Rows a previous run finished (its
//!    `results.jsonl`) are skipped. What the render phase needs is written
//!    to a spill file (the `spill` module); memory keeps a few numbers per variant.
//! 2. **render** the distinct variants longest first, each on slots leased
//!    from the pool (the `slots` module): one slot for a short variant (one chunk),
//!    as many as it has chunks for a long one; a slot returns when the
//!    variant's chunks are done, so its combine and upload overlap the next
//!    render. Rows of the same variant get its output (copied when their
//!    names differ). Every row's [`RowResult`] goes to `results.jsonl` the
//!    moment it is known ([`results`]).
//! 3. **digest**: a [`BatchSummary`] and one line for a person
//!    ([`digest`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use coordinator::batch::{BatchEvent, BatchOutput, BatchRequest};
//! use coordinator::{Coordinator, CoordinatorOptions, PoolSpec, RenderSource};
//!
//! # async fn demo() -> Result<(), coordinator::Error> {
//! let coordinator = Arc::new(Coordinator::new(PoolSpec::local(), CoordinatorOptions::default()).await?);
//! let request = BatchRequest::new(
//!     RenderSource::Bundle("examples/promo".into()),
//!     "rows.csv",
//!     BatchOutput::parse("out/")?,
//! );
//! let mut batch = coordinator.batch(request);
//! while let Some(event) = batch.next_event().await {
//!     if let BatchEvent::Row(row) = event {
//!         println!("row {}: {:?} {}", row.row, row.status, row.output.unwrap_or_default());
//!     }
//! }
//! println!("{}", batch.finish().await?.digest());
//! # Ok(()) }
//! ```

pub mod columns;
pub mod digest;
pub mod names;
pub mod queue;
mod queued;
pub mod report;
pub mod results;
pub mod rows;
pub(crate) mod run;
pub(crate) mod slots;
mod spill;
mod validate;
pub mod variant;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use composition::Props;
use serde::Serialize;
use spec::ContentHash;

pub use digest::BatchSummary;
pub use names::NameTemplate;
pub use results::{FailureReason, RowError, RowFailure, RowResult, RowStatus};
pub use rows::{RawRow, VariantsFormat};
pub use variant::{
    BatchOutput, LONG_VARIANT_CHUNK_FRAMES, VARIANT_JOB_FORMAT, VariantContext, VariantJob,
    VariantSettings, VariantSource, WHOLE_VARIANT_MAX_FRAMES,
};

use crate::Error;
use crate::coordinator::Coordinator;
use crate::events::JobHandle;
use crate::request::RenderSource;

/// The results file's name when none is given: beside the outputs in a
/// local directory, in the current directory for an S3 prefix (and copied
/// under the prefix when the batch ends).
pub const RESULTS_FILE: &str = "results.jsonl";

/// Events buffered between a batch and its handle; the batch waits for
/// room, so memory stays flat when the handle reads slowly.
pub const BATCH_EVENT_BUFFER: usize = 256;

/// Everything a batch needs. Build with [`BatchRequest::new`], adjust the
/// public fields, and [`BatchRequest::validate`] (the batch validates again
/// before it starts).
#[derive(Debug, Clone)]
pub struct BatchRequest {
    /// Where the compositions come from.
    pub source: RenderSource,
    /// The composition of rows without a `composition` column (default:
    /// the source's only one).
    pub composition: Option<String>,
    /// Props every row starts from (its cells win).
    pub props: Props,
    /// The rows.
    pub variants: PathBuf,
    /// Their format (default: from the file's extension).
    pub format: Option<VariantsFormat>,
    /// Where the outputs go.
    pub output: BatchOutput,
    /// How outputs are named (a row's `out` cell wins; without either, by
    /// content hash).
    pub name: Option<NameTemplate>,
    /// The results file (default: [`RESULTS_FILE`], see there).
    pub results: Option<PathBuf>,
    /// Render the valid rows even when some are invalid (which are then
    /// results with status `invalid`).
    pub keep_going: bool,
    /// Split and encoding of every variant.
    pub settings: VariantSettings,
    /// Reuse cached chunks and outputs (when the coordinator has a cache).
    pub use_cache: bool,
    /// Send the variants to a queue for agents instead of rendering them
    /// on this coordinator's pool.
    pub queue: Option<QueueTarget>,
}

/// Where a queued batch's variants go, and whether the batch waits for
/// their results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueTarget {
    /// The queue's URL.
    pub url: String,
    /// Gather the agents' results into the results file and the digest
    /// (else the batch ends once every variant is sent).
    pub wait: bool,
    /// With `wait`: how long to wait for results before the variants
    /// still without one are recorded as failed (`timed_out`); `None`:
    /// until every variant has its result.
    pub wait_timeout: Option<Duration>,
}

impl BatchRequest {
    /// A batch of the rows in `variants` into `output`, default settings.
    pub fn new(source: RenderSource, variants: impl Into<PathBuf>, output: BatchOutput) -> Self {
        BatchRequest {
            source,
            composition: None,
            props: Props::new(),
            variants: variants.into(),
            format: None,
            output,
            name: None,
            results: None,
            keep_going: false,
            settings: VariantSettings::default(),
            use_cache: true,
            queue: None,
        }
    }

    /// Checks what can be checked before reading a row: the settings, the
    /// variants file's format, the results file.
    ///
    /// # Errors
    /// [`Error::Input`] naming the flag and the value.
    pub fn validate(&self) -> Result<(), Error> {
        self.settings.validate()?;
        self.format()?;
        if let Some(c) = &self.composition
            && c.is_empty()
        {
            return Err(Error::Input("--composition is empty".into()));
        }
        if self.queue.is_some() {
            if matches!(self.source, RenderSource::Registered) {
                return Err(Error::Input(
                    "--queue needs a bundle: agents render scene bundles (registered compositions render on a worker fleet with --worker)".into(),
                ));
            }
            queue::BatchState::new(&self.output, queue::BatchId::generate())?;
        }
        if self.results_path().is_dir() {
            return Err(Error::Input(format!(
                "--results {} is a directory: name a file",
                self.results_path().display()
            )));
        }
        Ok(())
    }

    /// The variants file's format.
    ///
    /// # Errors
    /// [`Error::Input`] when it is not given and the extension says none.
    pub fn format(&self) -> Result<VariantsFormat, Error> {
        match self.format {
            Some(f) => Ok(f),
            None => VariantsFormat::from_path(&self.variants)
                .map_err(|m| Error::Input(format!("--variants {m}"))),
        }
    }

    /// Where the results go.
    pub fn results_path(&self) -> PathBuf {
        match (&self.results, &self.output) {
            (Some(p), _) => p.clone(),
            (None, BatchOutput::Directory(dir)) => dir.join(RESULTS_FILE),
            (None, BatchOutput::Storage(_)) => PathBuf::from(RESULTS_FILE),
        }
    }
}

/// What the validate phase found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchPlan {
    /// Rows in the file.
    pub rows: u64,
    /// Rows that can render (or are done).
    pub valid: u64,
    /// Rows refused.
    pub invalid: u64,
    /// Rows an earlier run finished.
    pub done_before: u64,
    /// Distinct variants to render.
    pub variants: u64,
    /// Rows to be served by another row's variant.
    pub duplicates: u64,
    /// Output frames to render, all variants together.
    pub frames: u64,
}

/// What a running batch reports, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BatchEvent {
    /// A row was refused (before anything renders).
    RowInvalid(RowError),
    /// Every row was read and checked.
    BatchPlanned(BatchPlan),
    /// A variant started rendering.
    VariantStarted {
        /// Its id.
        variant: ContentHash,
        /// Its first row.
        row: u64,
        /// Its output frames.
        frames: u64,
        /// Slots it leased.
        slots: u32,
    },
    /// The variants were sent to a queue (`batch --queue`).
    Queued {
        /// The batch's id (for `batch-status`).
        batch: String,
        /// The queue.
        queue: String,
        /// Messages sent, one per distinct variant.
        variants: u64,
        /// Of those, payloads too large for a message, stored.
        stored: u64,
    },
    /// A row has its result (also written to the results file).
    Row(RowResult),
    /// The batch ended.
    BatchDone(BatchSummary),
}

/// A running batch: [`BatchEvent`]s, one `Row` per row among them, then a
/// [`BatchSummary`]. Dropping the handle cancels it; rows already finished
/// keep their results. A batch whose rows failed still ends with its
/// summary (`failed` counts them); [`JobHandle::finish`] fails with
/// [`Error::Input`] when rows are invalid and `keep_going` is off (each was
/// a [`BatchEvent::RowInvalid`]) or the file cannot be read,
/// [`Error::Cancelled`], or an error that stops the whole batch (the
/// results file cannot be written, no worker at all).
pub type BatchHandle = JobHandle<BatchEvent, BatchSummary>;

impl Coordinator {
    /// Starts a batch: every row of `request.variants` rendered (each
    /// distinct variant once) into `request.output`. Events, one per row
    /// among them, arrive on the handle.
    pub fn batch(self: &Arc<Self>, request: BatchRequest) -> BatchHandle {
        let this = Arc::clone(self);
        JobHandle::start(BATCH_EVENT_BUFFER, move |events, cancel| {
            run::BatchJob::new(this, request, events, cancel).run()
        })
    }
}
