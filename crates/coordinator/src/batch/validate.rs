//! The validate phase: every row read, resolved into a [`VariantJob`],
//! named and grouped by variant before anything renders. Runs on one
//! blocking thread (describing a scene composition is CPU work), streaming
//! the file; what the render phase needs goes to the spill file, and memory
//! keeps per variant its id, length and position (about 100 bytes), per
//! duplicate row its position, per output name its hash.

use std::collections::HashMap;
use std::fs::File;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use composition::{CompositionMeta, CompositionSource, Props};
use serde_json::Value;
use spec::ContentHash;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::columns::{COMPOSITION_COLUMN, Column, Columns, OUT_COLUMN};
use super::digest::Tally;
use super::names::{Names, check_name};
use super::results::{Done, FailureReason, ResultsWriter, RowError, RowResult};
use super::rows::{Cell, Cells, RawRow, RowsEvent, read_rows};
use super::spill::{Spill, SpillWriter, SpilledRow, Spot};
use super::variant::{VARIANT_JOB_FORMAT, VariantContext, VariantJob};
use super::{BatchEvent, BatchOutput, BatchPlan, BatchRequest};
use crate::Error;
use crate::coordinator::Coordinator;

/// A distinct variant to render.
#[derive(Debug, Clone)]
pub(crate) struct VariantEntry {
    pub(crate) id: ContentHash,
    /// Output frames.
    pub(crate) frames: u64,
    /// Chunks in its plan.
    pub(crate) chunks: u32,
    /// Its first row.
    pub(crate) first_row: u64,
    /// Its first row's record (with the job).
    pub(crate) spot: Spot,
    /// Its duplicate rows: `dups[dup_start..dup_start + dup_count]`.
    pub(crate) dup_start: u32,
    pub(crate) dup_count: u32,
}

/// A row served by another row's variant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DupEntry {
    pub(crate) variant: u32,
    pub(crate) spot: Spot,
}

/// What the validate phase hands to the render phase.
pub(crate) struct Validation {
    pub(crate) plan: BatchPlan,
    pub(crate) spill: Spill,
    pub(crate) variants: Vec<VariantEntry>,
    /// Sorted by variant, then row.
    pub(crate) dups: Vec<DupEntry>,
    pub(crate) results: ResultsWriter,
    pub(crate) tally: Tally,
}

/// A row resolved into its job.
struct Resolved {
    row: u64,
    out: Option<String>,
    name: Option<String>,
    job: VariantJob,
    id: ContentHash,
    frames: u64,
    chunks: u32,
}

/// A refused row, with what is known of it.
struct Refused {
    error: RowError,
    out: Option<String>,
    variant: Option<ContentHash>,
}

fn refused(row: u64, column: Option<&str>, reason: FailureReason, message: String) -> Box<Refused> {
    Box::new(Refused {
        error: RowError {
            row,
            column: column.map(str::to_owned),
            reason,
            message,
        },
        out: None,
        variant: None,
    })
}

/// The validate phase's state.
pub(crate) struct Validator {
    coordinator: Arc<Coordinator>,
    context: Arc<VariantContext>,
    request: BatchRequest,
    runtime: tokio::runtime::Handle,
    events: mpsc::Sender<BatchEvent>,
    cancel: CancellationToken,
    done: Done,
    columns: HashMap<String, Columns>,
    names: Names,
    /// Variant id → index in `variants`.
    seen: HashMap<ContentHash, u32>,
    variants: Vec<VariantEntry>,
    dups: Vec<DupEntry>,
    spill: SpillWriter,
    results: ResultsWriter,
    tally: Tally,
    plan: BatchPlan,
    /// The results file's name under a local output directory, which no
    /// output may take.
    results_name: Option<PathBuf>,
    /// An error that stops the phase (the callbacks cannot return one).
    fatal: Option<Error>,
}

impl Validator {
    /// A validator writing results to `results`, skipping rows in `done`.
    pub(crate) fn new(
        coordinator: Arc<Coordinator>,
        context: Arc<VariantContext>,
        request: BatchRequest,
        done: Done,
        results: ResultsWriter,
        events: mpsc::Sender<BatchEvent>,
        cancel: CancellationToken,
    ) -> Result<Self, Error> {
        let results_name = match &request.output {
            BatchOutput::Directory(dir) => results
                .path()
                .strip_prefix(dir)
                .ok()
                .map(std::path::Path::to_path_buf),
            BatchOutput::Storage(_) => Some(PathBuf::from(super::RESULTS_FILE)),
        };
        Ok(Validator {
            coordinator,
            context,
            request,
            runtime: tokio::runtime::Handle::current(),
            events,
            cancel,
            done,
            columns: HashMap::new(),
            names: Names::default(),
            seen: HashMap::new(),
            variants: Vec::new(),
            dups: Vec::new(),
            spill: SpillWriter::create()?,
            results,
            tally: Tally::default(),
            plan: BatchPlan::default(),
            results_name,
            fatal: None,
        })
    }

    /// Reads and checks every row (blocking: run it on a blocking thread).
    ///
    /// # Errors
    /// [`Error::Input`] when the file cannot be read or its header names
    /// columns the composition does not have; [`Error::Cancelled`]; I/O
    /// errors of the spill or results file.
    pub(crate) fn run(mut self) -> Result<Validation, Error> {
        let path = self.request.variants.clone();
        let format = self.request.format()?;
        let file = File::open(&path)
            .map_err(|e| Error::Input(format!("--variants {}: {e}", path.display())))?;
        let read = read_rows(std::io::BufReader::new(file), format, &mut |event| {
            let raw = match event {
                RowsEvent::Header(header) => return self.header(header),
                RowsEvent::Row(raw) => raw,
            };
            if self.cancel.is_cancelled() {
                self.fatal = Some(Error::Cancelled);
                return ControlFlow::Break(());
            }
            match self.row(raw) {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    self.fatal = Some(e);
                    ControlFlow::Break(())
                }
            }
        })
        .map_err(|e| Error::Input(format!("--variants {}: {e}", path.display())))?;
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
        self.plan.rows = read;
        self.finish()
    }

    /// Sorts the duplicates by variant and tells each variant where its
    /// duplicates are.
    fn finish(mut self) -> Result<Validation, Error> {
        self.dups.sort_by_key(|d| d.variant);
        let mut at = 0usize;
        for (i, v) in self.variants.iter_mut().enumerate() {
            let start = at;
            while self.dups.get(at).is_some_and(|d| d.variant as usize == i) {
                at += 1;
            }
            v.dup_start = u32::try_from(start).unwrap_or(u32::MAX);
            v.dup_count = u32::try_from(at - start).unwrap_or(u32::MAX);
        }
        self.plan.variants = self.variants.len() as u64;
        self.plan.duplicates = self.dups.len() as u64;
        // Invalid rows written during validation are in the tally already.
        let mut tally = self.tally;
        tally.set_rows(self.plan.rows, self.plan.done_before);
        Ok(Validation {
            plan: self.plan,
            spill: self.spill.finish()?,
            variants: self.variants,
            dups: self.dups,
            results: self.results,
            tally,
        })
    }

    /// A CSV header, checked against the default composition when no
    /// `composition` column chooses per row: a column the composition does
    /// not have stops the batch at once, naming every such column (rather
    /// than every row).
    fn header(&mut self, header: &[Arc<str>]) -> ControlFlow<()> {
        if header.iter().any(|h| &**h == COMPOSITION_COLUMN) {
            return ControlFlow::Continue(());
        }
        let mut check = || -> Result<(), Error> {
            let id = self.default_composition()?;
            let variants = self.request.variants.display().to_string();
            let columns = self.columns(&id).map_err(|m| Error::Input(m.1))?;
            let bad: Vec<String> = header
                .iter()
                .filter_map(|h| {
                    columns
                        .column(h)
                        .err()
                        .map(|m| format!("column `{h}`: {m}"))
                })
                .collect();
            if bad.is_empty() {
                return Ok(());
            }
            Err(Error::Input(format!(
                "--variants {variants}: {}",
                bad.join("\n  ")
            )))
        };
        match check() {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                self.fatal = Some(e);
                ControlFlow::Break(())
            }
        }
    }

    /// One row: refused, skipped (done before), a duplicate, or a new
    /// variant. `Err` only for what stops the batch.
    fn row(&mut self, raw: RawRow) -> Result<(), Error> {
        let r = match self.resolve(raw) {
            Ok(r) => r,
            Err(refused) => return self.refuse(*refused),
        };
        if let Some(name) = &r.name
            && let Err(message) = self.names.claim(name, r.id, r.row)
        {
            let column = r.out.as_ref().map(|_| OUT_COLUMN);
            let mut e = refused(r.row, column, FailureReason::OutputName, message);
            e.out = r.out;
            e.variant = Some(r.id);
            return self.refuse(*e);
        }
        self.plan.valid += 1;
        if self.done.get(&r.row) == Some(&r.id) {
            self.plan.done_before += 1;
            return Ok(());
        }
        let spilled = SpilledRow {
            row: r.row,
            out: r.out,
            name: r.name,
            job: None,
        };
        if let Some(&variant) = self.seen.get(&r.id) {
            let spot = self.spill.write(&spilled)?;
            self.dups.push(DupEntry { variant, spot });
            return Ok(());
        }
        let spot = self.spill.write(&SpilledRow {
            job: Some(r.job),
            ..spilled
        })?;
        let index = u32::try_from(self.variants.len())
            .map_err(|_| Error::Input("more than 4 294 967 295 distinct variants".into()))?;
        self.seen.insert(r.id, index);
        self.plan.frames += r.frames;
        self.variants.push(VariantEntry {
            id: r.id,
            frames: r.frames,
            chunks: r.chunks,
            first_row: r.row,
            spot,
            dup_start: 0,
            dup_count: 0,
        });
        Ok(())
    }

    /// Reports a refused row; with `keep_going` it is also a result.
    fn refuse(&mut self, r: Refused) -> Result<(), Error> {
        self.plan.invalid += 1;
        let _ = self
            .events
            .blocking_send(BatchEvent::RowInvalid(r.error.clone()));
        if self.request.keep_going {
            let result = RowResult::invalid(&r.error, r.out, r.variant);
            self.results.write(&result)?;
            self.tally.add(&result);
            let _ = self.events.blocking_send(BatchEvent::Row(result));
        }
        Ok(())
    }

    fn default_composition(&self) -> Result<String, Error> {
        if let Some(id) = &self.request.composition {
            return Ok(id.clone());
        }
        match self.context.bundle() {
            Some(bundle) => crate::choose_composition(bundle, None),
            None => Err(Error::Input(
                "--composition is needed for compositions registered in the workers".into(),
            )),
        }
    }

    /// The columns of composition `id` (classified once).
    fn columns(&mut self, id: &str) -> Result<&mut Columns, (FailureReason, String)> {
        if !self.columns.contains_key(id) {
            let columns = match self.context.bundle() {
                Some(bundle) => Columns::of_bundle(bundle, id)
                    .map_err(|e| (FailureReason::InvalidInput, e.to_string()))?,
                None => Columns::registered(id),
            };
            self.columns.insert(id.to_owned(), columns);
        }
        self.columns
            .get_mut(id)
            .ok_or_else(|| (FailureReason::Internal, "columns were just added".into()))
    }

    /// A row's cells as props and overrides, described by its composition
    /// (which checks props, overrides, assets and the frame range), split,
    /// named and turned into its job.
    fn resolve(&mut self, raw: RawRow) -> Result<Resolved, Box<Refused>> {
        let row = raw.row;
        let cells = raw
            .cells
            .map_err(|m| refused(row, None, FailureReason::InvalidCell, m))?;
        let out = cell(&cells, OUT_COLUMN).map(Cell::text);
        let with_out = |mut r: Box<Refused>| {
            r.out.clone_from(&out);
            r
        };
        let id = match cell(&cells, COMPOSITION_COLUMN) {
            Some(c) => c.text(),
            None => self.default_composition().map_err(|e| {
                with_out(refused(
                    row,
                    None,
                    FailureReason::InvalidInput,
                    e.to_string(),
                ))
            })?,
        };
        let (props, typed) = self.props(row, &id, &cells).map_err(with_out)?;
        let meta = self
            .describe(&id, &props)
            .map_err(|e| with_out(refused(row, None, FailureReason::of(&e), e.to_string())))?;
        let (split, frames, chunks) = self.request.settings.split_for(&meta).map_err(|e| {
            with_out(refused(
                row,
                None,
                FailureReason::InvalidInput,
                e.to_string(),
            ))
        })?;
        let mut job = VariantJob {
            format: VARIANT_JOB_FORMAT,
            source: self.context.variant_source(),
            composition: id,
            props: meta.props.clone(),
            settings: self.request.settings.clone(),
            split,
            output: None,
        };
        let variant = job.id();
        let name = self
            .name(row, out.as_deref(), typed, &meta, &job, variant)
            .map_err(|mut r| {
                r.variant = Some(variant);
                with_out(r)
            })?;
        job.output.clone_from(&name);
        Ok(Resolved {
            row,
            out,
            name,
            job,
            id: variant,
            frames,
            chunks,
        })
    }

    /// The props a row gives composition `id` (the request's props, then
    /// its cells, each given its prop's type), and its cells as typed (for
    /// `--name`).
    fn props(&mut self, row: u64, id: &str, cells: &Cells) -> Result<(Props, Props), Box<Refused>> {
        let mut props = self.request.props.clone();
        let mut typed = Props::new();
        let columns = self
            .columns(id)
            .map_err(|(reason, m)| refused(row, Some(COMPOSITION_COLUMN), reason, m))?;
        for (header, c) in cells {
            let column = columns
                .column(header)
                .map_err(|m| refused(row, Some(header), FailureReason::InvalidInput, m))?;
            let value = columns
                .value(&column, c)
                .map_err(|m| refused(row, Some(header), FailureReason::InvalidCell, m))?;
            match column {
                Column::Prop(name) | Column::Override(name) => {
                    props.insert(name, value);
                }
                Column::Out | Column::Composition => {}
            }
            typed.insert(header.to_string(), Value::String(c.text()));
        }
        Ok((props, typed))
    }

    /// Describes a variant: here when its bundle is open here (also
    /// checking, from their headers, the images it names), else by a
    /// worker.
    fn describe(&self, id: &str, props: &Props) -> Result<CompositionMeta, Error> {
        match self.context.bundle() {
            Some(bundle) => {
                let composition = bundle.composition(id)?;
                let meta = composition.describe(props)?;
                composition.budget(props)?;
                Ok(meta)
            }
            None => {
                let spec = self.context.prepared_spec().clone();
                let described = self
                    .runtime
                    .block_on(self.coordinator.describe(&spec, id, props))?;
                Ok(described.meta)
            }
        }
    }

    /// The row's output name: its `out` cell, else `--name` filled from its
    /// cells as typed, then its resolved props, `row`, `composition` and
    /// `variant`; else none (by content hash).
    fn name(
        &self,
        row: u64,
        out: Option<&str>,
        mut values: Props,
        meta: &CompositionMeta,
        job: &VariantJob,
        variant: ContentHash,
    ) -> Result<Option<String>, Box<Refused>> {
        let (name, column) = match (out, &self.request.name) {
            (Some(out), _) => {
                check_name(out)
                    .map_err(|m| refused(row, Some(OUT_COLUMN), FailureReason::OutputName, m))?;
                (out.to_owned(), Some(OUT_COLUMN))
            }
            (None, Some(template)) => {
                for (k, v) in &meta.props {
                    values.entry(k.clone()).or_insert_with(|| v.clone());
                }
                values.insert("row".into(), row.into());
                values.insert("composition".into(), job.composition.clone().into());
                values.insert("variant".into(), variant.to_hex().into());
                let name = template
                    .fill(&values)
                    .map_err(|m| refused(row, None, FailureReason::OutputName, m))?;
                (name, None)
            }
            (None, None) => return Ok(None),
        };
        if self.results_name.as_deref() == Some(std::path::Path::new(&name)) {
            return Err(refused(
                row,
                column,
                FailureReason::OutputName,
                format!("output name `{}` is the results file's", spec::quote(&name)),
            ));
        }
        Ok(Some(name))
    }
}

fn cell<'a>(cells: &'a Cells, column: &str) -> Option<&'a Cell> {
    cells.iter().find(|(h, _)| &**h == column).map(|(_, c)| c)
}
