//! Per-row results: [`RowResult`], written to `results.jsonl` one line per
//! row the moment the row finishes, so that a batch killed at any point
//! resumes where it stopped: a re-run skips every row whose last result
//! says it is done *for the same variant* (a row whose props, the bundle or
//! the settings changed renders again).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use spec::ContentHash;

use crate::{Error, ErrorKind};

/// What became of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowStatus {
    /// Its variant was rendered.
    Rendered,
    /// Its variant's output came whole from the render cache.
    Cached,
    /// Another row of this batch has the same variant: its output was
    /// reused (copied when the names differ).
    Duplicate,
    /// Rendering or delivering failed.
    Failed,
    /// The row was refused before rendering (with `--keep-going`).
    Invalid,
}

impl RowStatus {
    /// Whether the row has its output.
    pub fn is_done(self) -> bool {
        matches!(
            self,
            RowStatus::Rendered | RowStatus::Cached | RowStatus::Duplicate
        )
    }
}

/// Why a row failed, in the words of the morning digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureReason {
    /// A cell could not be given its prop's type, or the row could not be
    /// read.
    InvalidCell,
    /// An image, audio file or font the row names is not in the bundle.
    MissingAsset,
    /// Props or overrides the composition refuses.
    InvalidInput,
    /// The output name is refused or taken by another variant.
    OutputName,
    /// Workers failed or could not be reached on every attempt.
    WorkerLost,
    /// No result arrived within `--wait-timeout` (the variant may still
    /// render: `batch-status` reads later results).
    TimedOut,
    /// Storage failed.
    Storage,
    /// Storage refused access.
    Permission,
    /// A bug.
    Internal,
}

impl FailureReason {
    /// How the digest names it: "missing asset", "worker lost", ….
    pub fn label(self) -> &'static str {
        match self {
            FailureReason::InvalidCell => "invalid cell",
            FailureReason::MissingAsset => "missing asset",
            FailureReason::InvalidInput => "invalid input",
            FailureReason::OutputName => "output name",
            FailureReason::WorkerLost => "worker lost",
            FailureReason::TimedOut => "timed out",
            FailureReason::Storage => "storage error",
            FailureReason::Permission => "storage permission",
            FailureReason::Internal => "internal error",
        }
    }

    /// The reason for an error of a render, from its kind (never from its
    /// message).
    pub fn of(error: &Error) -> Self {
        if let Error::Composition(e) = error
            && e.kind() == composition::ErrorKind::NotFound
        {
            return FailureReason::MissingAsset;
        }
        match error.kind() {
            ErrorKind::Input => FailureReason::InvalidInput,
            ErrorKind::Worker => FailureReason::WorkerLost,
            ErrorKind::Storage => FailureReason::Storage,
            ErrorKind::Permission => FailureReason::Permission,
            _ => FailureReason::Internal,
        }
    }

    /// The error class it belongs to.
    pub fn class(self) -> ErrorKind {
        match self {
            FailureReason::InvalidCell
            | FailureReason::MissingAsset
            | FailureReason::InvalidInput
            | FailureReason::OutputName => ErrorKind::Input,
            FailureReason::WorkerLost | FailureReason::TimedOut => ErrorKind::Worker,
            FailureReason::Storage => ErrorKind::Storage,
            FailureReason::Permission => ErrorKind::Permission,
            FailureReason::Internal => ErrorKind::Internal,
        }
    }
}

/// Why a row is not rendered: its number, the column to blame when there
/// is one, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    /// The row (1-based; see [`super::RawRow::row`]).
    pub row: u64,
    /// The column, when one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// The digest's class of it.
    pub reason: FailureReason,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.column {
            Some(c) => write!(f, "row {}, column `{}`: {}", self.row, c, self.message),
            None => write!(f, "row {}: {}", self.row, self.message),
        }
    }
}

/// A failed row's error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowFailure {
    /// Whose fault ([`ErrorKind`]).
    pub class: ErrorKind,
    /// What kind of failure, as the digest counts it.
    pub reason: FailureReason,
    /// The column to blame, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// The error.
    pub message: String,
}

impl RowFailure {
    /// The failure of a render.
    pub fn of(error: &Error) -> Self {
        let reason = FailureReason::of(error);
        RowFailure {
            class: error.kind(),
            reason,
            column: None,
            message: format!("{error}"),
        }
    }
}

impl From<&RowError> for RowFailure {
    fn from(e: &RowError) -> Self {
        RowFailure {
            class: e.reason.class(),
            reason: e.reason,
            column: e.column.clone(),
            message: e.message.clone(),
        }
    }
}

/// One line of `results.jsonl`: what became of one row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowResult {
    /// The row (1-based).
    pub row: u64,
    /// The row's `out` cell, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out: Option<String>,
    /// What became of it.
    pub status: RowStatus,
    /// Its variant's id ([`super::VariantJob::id`]); absent for a row
    /// refused before it resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<ContentHash>,
    /// The output's path or URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Frames in the output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames: Option<u64>,
    /// Wall time from its variant's start to this row's result, in
    /// seconds (for a duplicate: of the copy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// Whether the output came whole from the render cache.
    pub cached: bool,
    /// The row of this batch whose variant it shares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<u64>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RowFailure>,
}

impl RowResult {
    /// The result of a row refused before rendering.
    pub fn invalid(e: &RowError, out: Option<String>, variant: Option<ContentHash>) -> Self {
        RowResult {
            row: e.row,
            out,
            status: RowStatus::Invalid,
            variant,
            output: None,
            frames: None,
            seconds: None,
            cached: false,
            duplicate_of: None,
            error: Some(RowFailure::from(e)),
        }
    }
}

/// The rows a results file says are done, with the variant each was done
/// for. Later lines win (a row that failed and was retried is done).
pub(crate) type Done = HashMap<u64, ContentHash>;

/// Reads the rows done in an earlier run from `path` (none if it does not
/// exist). A line that does not parse, such as the last line of a process
/// killed while writing it, is skipped.
///
/// # Errors
/// [`Error::Io`] when the file exists but cannot be read.
pub(crate) fn read_done(path: &Path) -> Result<Done, Error> {
    #[derive(Deserialize)]
    struct Line {
        row: u64,
        status: RowStatus,
        variant: Option<ContentHash>,
    }
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Done::new()),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()))(e)),
    };
    let mut done = Done::new();
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(Error::io(format!("reading {}", path.display())))?;
        let Ok(l) = serde_json::from_slice::<Line>(&line) else {
            continue;
        };
        match (l.status.is_done(), l.variant) {
            (true, Some(v)) => {
                done.insert(l.row, v);
            }
            _ => {
                done.remove(&l.row);
            }
        }
    }
    Ok(done)
}

/// Appends results, one line each, written through at once so that a
/// process killed afterwards keeps it.
#[derive(Debug)]
pub(crate) struct ResultsWriter {
    path: PathBuf,
    file: File,
}

impl ResultsWriter {
    /// Opens `path` for appending (creating it and its directory), first
    /// ending a line left unfinished by a killed run.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file.
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        let context = || format!("opening {}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(Error::io(context()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(Error::io(context()))?;
        let len = file.seek(SeekFrom::End(0)).map_err(Error::io(context()))?;
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))
                .and_then(|_| std::io::Read::read_exact(&mut file, &mut last))
                .map_err(Error::io(context()))?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(Error::io(context()))?;
            }
        }
        Ok(ResultsWriter {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one result as one line, in one write.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file.
    pub(crate) fn write(&mut self, result: &RowResult) -> Result<(), Error> {
        let mut line = serde_json::to_vec(result)
            .map_err(|e| Error::Internal(format!("encoding a result: {e}")))?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(Error::io(format!("writing {}", self.path.display())))
    }

    /// The file written.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(row: u64, status: RowStatus, variant: u8) -> RowResult {
        RowResult {
            row,
            out: None,
            status,
            variant: Some(spec::key::key_of("t", &variant)),
            output: Some(format!("out/{row}.mp4")),
            frames: Some(3),
            seconds: Some(0.5),
            cached: false,
            duplicate_of: None,
            error: None,
        }
    }

    #[test]
    fn a_killed_run_leaves_a_file_the_next_one_resumes_from() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("deep/results.jsonl");
        let mut w = ResultsWriter::open(&path).expect("open");
        w.write(&result(1, RowStatus::Rendered, 1)).expect("write");
        w.write(&result(2, RowStatus::Failed, 2)).expect("write");
        w.write(&result(3, RowStatus::Duplicate, 1)).expect("write");
        drop(w);
        // A process killed in the middle of a line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(b"{\"row\":4,\"status\":\"rend").expect("write");
        drop(f);
        let done = read_done(&path).expect("reads");
        assert_eq!(done.len(), 2);
        assert_eq!(done[&1], spec::key::key_of("t", &1u8));
        assert!(done.contains_key(&3) && !done.contains_key(&2));
        // The next run starts on a new line; a retried row is done.
        let mut w = ResultsWriter::open(&path).expect("reopen");
        w.write(&result(2, RowStatus::Cached, 2)).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.contains("\"rend\n{\"row\":2,\"status\":\"cached\""),
            "{text}"
        );
        assert_eq!(read_done(&path).expect("reads").len(), 3);
        assert!(
            read_done(&dir.path().join("none.jsonl"))
                .expect("none")
                .is_empty()
        );
    }
}
