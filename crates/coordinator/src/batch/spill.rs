//! The batch's spill file: every valid row's record (and, for the first row
//! of each variant, its whole [`super::VariantJob`]) written once while the
//! rows are validated, and read back by position while they render. Memory
//! holds only positions, so it stays flat however many rows there are.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::VariantJob;
use super::results::{RowFailure, RowResult, RowStatus};
use crate::Error;

/// One valid row as the render phase needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SpilledRow {
    pub(crate) row: u64,
    /// The row's `out` cell.
    pub(crate) out: Option<String>,
    /// Its output name (`None`: by content hash).
    pub(crate) name: Option<String>,
    /// The job, for the first row of a variant.
    pub(crate) job: Option<VariantJob>,
}

impl SpilledRow {
    /// This row's result when its variant `variant` failed with `error`
    /// (`duplicate_of`: the variant's first row, for the others).
    pub(crate) fn failed(
        &self,
        variant: spec::ContentHash,
        duplicate_of: Option<u64>,
        error: RowFailure,
    ) -> RowResult {
        RowResult {
            row: self.row,
            out: self.out.clone(),
            status: RowStatus::Failed,
            variant: Some(variant),
            output: None,
            frames: None,
            seconds: None,
            cached: false,
            duplicate_of,
            error: Some(error),
        }
    }
}

/// Where a record is in the spill file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spot {
    offset: u64,
    len: u32,
}

/// Writes records while validating.
pub(crate) struct SpillWriter {
    out: BufWriter<File>,
    at: u64,
}

impl SpillWriter {
    /// A new spill file in the system's temporary directory, removed when
    /// closed (it is never linked into a directory).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub(crate) fn create() -> Result<Self, Error> {
        let file = tempfile::tempfile().map_err(Error::io("creating the batch's spill file"))?;
        Ok(SpillWriter {
            out: BufWriter::new(file),
            at: 0,
        })
    }

    /// Appends a record.
    ///
    /// # Errors
    /// [`Error::Io`], or [`Error::Internal`] for a record over 4 GiB.
    pub(crate) fn write(&mut self, row: &SpilledRow) -> Result<Spot, Error> {
        let bytes = serde_json::to_vec(row)
            .map_err(|e| Error::Internal(format!("encoding a spilled row: {e}")))?;
        let len = u32::try_from(bytes.len())
            .map_err(|_| Error::Internal("a spilled row over 4 GiB".into()))?;
        self.out
            .write_all(&bytes)
            .map_err(Error::io("writing the batch's spill file"))?;
        let spot = Spot {
            offset: self.at,
            len,
        };
        self.at += u64::from(len);
        Ok(spot)
    }

    /// Done writing: the file, for reading.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub(crate) fn finish(self) -> Result<Spill, Error> {
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::io("writing the batch's spill file")(e.into_error()))?;
        Ok(Spill {
            file: Mutex::new(file),
        })
    }
}

/// Reads records back by position.
#[derive(Debug)]
pub(crate) struct Spill {
    file: Mutex<File>,
}

impl Spill {
    /// The record at `spot`.
    ///
    /// # Errors
    /// [`Error::Io`], or [`Error::Internal`] for a record that does not
    /// parse (the file is this process's own).
    pub(crate) fn read(&self, spot: Spot) -> Result<SpilledRow, Error> {
        let mut bytes = vec![0u8; spot.len as usize];
        {
            let mut file = self
                .file
                .lock()
                .map_err(|_| Error::Internal("the spill file's lock is poisoned".into()))?;
            file.seek(SeekFrom::Start(spot.offset))
                .and_then(|_| file.read_exact(&mut bytes))
                .map_err(Error::io("reading the batch's spill file"))?;
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Internal(format!("the batch's spill file: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_by_position() {
        let mut w = SpillWriter::create().expect("create");
        let rows: Vec<SpilledRow> = (1..=3)
            .map(|row| SpilledRow {
                row,
                out: (row == 2).then(|| "b.mp4".to_owned()),
                name: Some(format!("{row}.mp4")),
                job: None,
            })
            .collect();
        let spots: Vec<Spot> = rows.iter().map(|r| w.write(r).expect("write")).collect();
        let spill = w.finish().expect("finish");
        for (r, s) in rows.iter().zip(&spots).rev() {
            assert_eq!(&spill.read(*s).expect("read"), r);
        }
    }
}
