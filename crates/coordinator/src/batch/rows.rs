//! Reading a batch's rows, one at a time: CSV (RFC 4180 through the `csv`
//! crate; UTF-8, a byte-order mark tolerated), JSON Lines (one object per
//! line) or a JSON array of objects, streamed so that memory does not grow
//! with the number of rows.
//!
//! A row that cannot be read (a CSV record with the wrong number of fields
//! or invalid UTF-8, a JSONL line that is not a JSON object) is handed on as
//! a row with an error, so the batch can name it among the other invalid
//! rows; a file that cannot be read at all (an unreadable header, a JSON
//! array that is not valid JSON, an I/O error) stops reading with an error.

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

/// The longest JSONL line read as a row; a longer one is an invalid row
/// (its bytes are skipped, not held).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// How a variants file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VariantsFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// One JSON array of objects.
    Json,
}

impl VariantsFormat {
    /// The format a file name says: `.csv`, `.jsonl` (or `.ndjson`),
    /// `.json`.
    ///
    /// # Errors
    /// A message naming the file when its extension is none of those.
    pub fn from_path(path: &Path) -> Result<Self, String> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            Some("csv") => Ok(VariantsFormat::Csv),
            Some("jsonl" | "ndjson") => Ok(VariantsFormat::Jsonl),
            Some("json") => Ok(VariantsFormat::Json),
            _ => Err(format!(
                "{}: name a .csv, .jsonl or .json file (one row per video)",
                spec::quote(&path.display().to_string())
            )),
        }
    }
}

/// A cell as read.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Spreadsheet text (CSV), given the type of its prop's default later.
    Text(String),
    /// A JSON value (JSONL or a JSON array), used as it is typed.
    Json(Value),
}

impl Cell {
    /// The cell as text: CSV text as it is, a JSON string without quotes,
    /// other JSON values in JSON form.
    pub fn text(&self) -> String {
        match self {
            Cell::Text(s) | Cell::Json(Value::String(s)) => s.clone(),
            Cell::Json(v) => v.to_string(),
        }
    }
}

/// A row's cells: `(column, cell)` in column order, blank cells (empty CSV
/// fields, JSON `null`) left out.
pub type Cells = Vec<(Arc<str>, Cell)>;

/// One row as read.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRow {
    /// 1-based: the first data row is row 1 (a CSV header is not counted;
    /// in a spreadsheet, row `n` is on line `n + 1`).
    pub row: u64,
    /// The cells, or why the row could not be read.
    pub cells: Result<Cells, String>,
}

/// Why a variants file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError(pub String);

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What reading a variants file yields, in order.
#[derive(Debug)]
pub enum RowsEvent<'a> {
    /// A CSV file's header, before its rows (JSON rows have none).
    Header(&'a [Arc<str>]),
    /// A row.
    Row(RawRow),
}

/// Reads every row of `input` in `format`, calling `each` with a CSV
/// header and then each row in order, until it returns
/// [`ControlFlow::Break`]. Returns the number of rows read.
///
/// # Errors
/// [`ReadError`] when the file as a whole cannot be read: an I/O error, a
/// CSV header that is not UTF-8, empty or repeated, a JSON array that is
/// not valid JSON.
pub fn read_rows(
    input: impl Read,
    format: VariantsFormat,
    each: &mut dyn FnMut(RowsEvent<'_>) -> ControlFlow<()>,
) -> Result<u64, ReadError> {
    let mut rows = |r: RawRow| each(RowsEvent::Row(r));
    match format {
        VariantsFormat::Csv => read_csv(input, each),
        VariantsFormat::Jsonl => read_jsonl(input, &mut rows),
        VariantsFormat::Json => read_json_array(input, &mut rows),
    }
}

fn read_csv(
    input: impl Read,
    each: &mut dyn FnMut(RowsEvent<'_>) -> ControlFlow<()>,
) -> Result<u64, ReadError> {
    // `flexible`: a record with the wrong number of fields is reported as
    // that row's error rather than ending the read.
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(input);
    let header = reader
        .headers()
        .map_err(|e| ReadError(format!("the header row: {}", csv_error(&e))))?
        .clone();
    let columns = header_columns(&header)?;
    if each(RowsEvent::Header(&columns)).is_break() {
        return Ok(0);
    }
    let mut record = csv::StringRecord::new();
    let mut row = 0u64;
    loop {
        let more = match reader.read_record(&mut record) {
            Ok(more) => more,
            Err(e) if matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) => {
                row += 1;
                if each(RowsEvent::Row(RawRow {
                    row,
                    cells: Err(csv_error(&e)),
                }))
                .is_break()
                {
                    return Ok(row);
                }
                continue;
            }
            Err(e) => return Err(ReadError(format!("row {}: {}", row + 1, csv_error(&e)))),
        };
        if !more {
            return Ok(row);
        }
        row += 1;
        let cells = if record.len() == columns.len() {
            Ok(columns
                .iter()
                .zip(record.iter())
                .filter(|(_, v)| !v.is_empty())
                .map(|(c, v)| (Arc::clone(c), Cell::Text(v.to_owned())))
                .collect())
        } else {
            Err(format!(
                "has {} fields; the header has {}",
                record.len(),
                columns.len()
            ))
        };
        if each(RowsEvent::Row(RawRow { row, cells })).is_break() {
            return Ok(row);
        }
    }
}

/// The header's column names, trimmed; refused when one is empty or
/// repeated.
fn header_columns(header: &csv::StringRecord) -> Result<Vec<Arc<str>>, ReadError> {
    let mut columns: Vec<Arc<str>> = Vec::with_capacity(header.len());
    for (i, name) in header.iter().enumerate() {
        let name = name.trim();
        if name.is_empty() {
            return Err(ReadError(format!(
                "the header row: column {} has no name",
                i + 1
            )));
        }
        if columns.iter().any(|c| &**c == name) {
            return Err(ReadError(format!(
                "the header row: column `{}` appears twice",
                spec::quote(name)
            )));
        }
        columns.push(Arc::from(name));
    }
    Ok(columns)
}

fn csv_error(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!(
            "field {} is not valid UTF-8 (save the file as UTF-8)",
            err.field() + 1
        ),
        _ => e.to_string(),
    }
}

fn read_jsonl(
    input: impl Read,
    each: &mut dyn FnMut(RawRow) -> ControlFlow<()>,
) -> Result<u64, ReadError> {
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    let mut row = 0u64;
    let mut line_no = 0u64;
    loop {
        line.clear();
        line_no += 1;
        let (read, complete) = read_line_bounded(&mut reader, &mut line)
            .map_err(|e| ReadError(format!("line {line_no}: {e}")))?;
        if read == 0 {
            return Ok(row);
        }
        let text = if complete {
            trim_ascii(&line)
        } else {
            &line[..0]
        };
        if complete && text.is_empty() {
            continue;
        }
        row += 1;
        let cells = if complete {
            object_cells(text).map_err(|e| format!("line {line_no}: {e}"))
        } else {
            Err(format!(
                "line {line_no}: longer than {MAX_LINE_BYTES} bytes"
            ))
        };
        if each(RawRow { row, cells }).is_break() {
            return Ok(row);
        }
    }
}

/// Reads one line (without its `\n`) into `line`, keeping at most
/// [`MAX_LINE_BYTES`] of it: returns the bytes consumed and whether the
/// line fit.
fn read_line_bounded(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
) -> std::io::Result<(usize, bool)> {
    let mut consumed = 0;
    let mut complete = true;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok((consumed, complete));
        }
        let (take, end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        if complete && line.len() + take <= MAX_LINE_BYTES {
            line.extend_from_slice(&buf[..take]);
        } else {
            complete = false;
            line.clear();
        }
        let used = take + usize::from(end);
        reader.consume(used);
        consumed += used;
        if end {
            return Ok((consumed, complete));
        }
    }
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    bytes.trim_ascii()
}

/// The cells of one JSON object given as bytes.
fn object_cells(bytes: &[u8]) -> Result<Cells, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not valid UTF-8 ({e})"))?;
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    value_cells(value)
}

fn value_cells(value: Value) -> Result<Cells, String> {
    match value {
        Value::Object(map) => Ok(map
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (Arc::from(k.trim()), Cell::Json(v)))
            .collect()),
        other => Err(format!(
            "a row must be a JSON object, not `{}`",
            spec::quote(&other.to_string())
        )),
    }
}

/// Streams the elements of a JSON array: serde visits them one by one, so
/// only the element being read is in memory.
fn read_json_array(
    input: impl Read,
    each: &mut dyn FnMut(RawRow) -> ControlFlow<()>,
) -> Result<u64, ReadError> {
    use serde::de::{Deserializer as _, SeqAccess, Visitor};

    struct Rows<'a> {
        each: &'a mut dyn FnMut(RawRow) -> ControlFlow<()>,
    }

    impl<'de> Visitor<'de> for Rows<'_> {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON array of row objects")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
            let mut row = 0u64;
            while let Some(value) = seq.next_element::<Value>()? {
                row += 1;
                let cells = value_cells(value);
                if (self.each)(RawRow { row, cells }).is_break() {
                    // The rest is not read; `IgnoredAny` would read it.
                    return Ok(row);
                }
            }
            Ok(row)
        }
    }

    let mut input = BufReader::new(input);
    // A byte-order mark is tolerated here too.
    if input
        .fill_buf()
        .map_err(|e| ReadError(e.to_string()))?
        .starts_with(b"\xEF\xBB\xBF")
    {
        input.consume(3);
    }
    let mut de = serde_json::Deserializer::from_reader(input);
    let rows = de
        .deserialize_seq(Rows { each })
        .map_err(|e| ReadError(format!("not a JSON array of rows: {e}")))?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read(bytes: &[u8], format: VariantsFormat) -> Result<Vec<RawRow>, ReadError> {
        let mut rows = Vec::new();
        read_rows(bytes, format, &mut |e| {
            if let RowsEvent::Row(r) = e {
                rows.push(r);
            }
            ControlFlow::Continue(())
        })?;
        Ok(rows)
    }

    fn text(cells: &[(&str, &str)]) -> Cells {
        cells
            .iter()
            .map(|(k, v)| (Arc::from(*k), Cell::Text((*v).to_owned())))
            .collect()
    }

    #[test]
    fn csv_rows_skip_blank_cells_and_name_bad_rows() {
        let file = "\u{feff}name, count ,text.Title\r\nAda,12,\"Hello, \"\"you\"\"\"\r\nBob,,\nonly,two\n\"multi\nline\",3,x\n";
        let rows = read(file.as_bytes(), VariantsFormat::Csv).expect("reads");
        assert_eq!(rows.len(), 4);
        assert_eq!(
            rows[0].cells,
            Ok(text(&[
                ("name", "Ada"),
                ("count", "12"),
                ("text.Title", "Hello, \"you\"")
            ]))
        );
        assert_eq!(rows[1].cells, Ok(text(&[("name", "Bob")])));
        assert_eq!(
            rows[2],
            RawRow {
                row: 3,
                cells: Err("has 2 fields; the header has 3".into())
            }
        );
        assert_eq!(
            rows[3].cells,
            Ok(text(&[
                ("name", "multi\nline"),
                ("count", "3"),
                ("text.Title", "x")
            ]))
        );
        let bad = read(b"name,name\nx,y\n", VariantsFormat::Csv).expect_err("repeated");
        assert_eq!(
            bad.to_string(),
            "the header row: column `name` appears twice"
        );
        let bad = read(b"name,\nx,y\n", VariantsFormat::Csv).expect_err("unnamed");
        assert_eq!(bad.to_string(), "the header row: column 2 has no name");
        let rows = read(b"name\n\xff\xfe\nok\n", VariantsFormat::Csv).expect("reads");
        assert_eq!(
            rows[0].cells,
            Err("field 1 is not valid UTF-8 (save the file as UTF-8)".into())
        );
        assert_eq!(rows[1].cells, Ok(text(&[("name", "ok")])));
    }

    #[test]
    fn json_rows_keep_types_and_name_bad_lines() {
        let file = b"{\"name\":\"Ada\",\"count\":12,\"visible.Badge\":null}\n\n[1]\n{oops\n";
        let rows = read(file, VariantsFormat::Jsonl).expect("reads");
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0].cells,
            // In key order: serde_json's objects are sorted by key.
            Ok(vec![
                (Arc::from("count"), Cell::Json(12.into())),
                (Arc::from("name"), Cell::Json("Ada".into())),
            ])
        );
        assert_eq!(
            rows[1].cells,
            Err("line 3: a row must be a JSON object, not `[1]`".into())
        );
        assert!(
            rows[2]
                .cells
                .as_ref()
                .is_err_and(|e| e.starts_with("line 4: not JSON")),
            "{:?}",
            rows[2]
        );
        let rows = read(
            b"\xef\xbb\xbf [{\"name\":\"Ada\"}, 3, {\"count\": 1}]",
            VariantsFormat::Json,
        )
        .expect("reads");
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[1].cells,
            Err("a row must be a JSON object, not `3`".into())
        );
        let bad = read(b"[{\"name\":1},", VariantsFormat::Json).expect_err("truncated");
        assert!(
            bad.to_string().starts_with("not a JSON array of rows: EOF"),
            "{bad}"
        );
        let bad = read(b"{}", VariantsFormat::Json).expect_err("object");
        assert!(
            bad.to_string()
                .contains("expected a JSON array of row objects"),
            "{bad}"
        );
    }

    #[test]
    fn a_line_too_long_is_an_invalid_row_not_a_memory_spike() {
        let mut file = b"{\"name\":\"".to_vec();
        file.extend(std::iter::repeat_n(b'a', MAX_LINE_BYTES + 10));
        file.extend(b"\"}\n{\"name\":\"b\"}\n");
        let rows = read(&file, VariantsFormat::Jsonl).expect("reads");
        assert_eq!(
            rows[0].cells,
            Err(format!("line 1: longer than {MAX_LINE_BYTES} bytes"))
        );
        assert_eq!(
            rows[1].cells,
            Ok(vec![(Arc::from("name"), Cell::Json("b".into()))])
        );
    }

    /// The corpus of the fuzz test: files that once broke a parser, or
    /// could (BOMs, quotes, CR/LF, ragged rows, bad UTF-8, deep JSON).
    fn corpus() -> Vec<(String, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/fuzz/rows");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("tests/fixtures/fuzz/rows")
            .map(|e| {
                let path = e.expect("entry").path();
                let name = path
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned();
                (name, std::fs::read(&path).expect("read"))
            })
            .collect();
        files.sort();
        assert!(!files.is_empty(), "the corpus is empty");
        files
    }

    /// Rows are numbered 1, 2, 3… with no gap, and every cell has a named
    /// column.
    #[track_caller]
    fn check_rows(rows: &[RawRow]) {
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r.row, i as u64 + 1);
            if let Ok(cells) = &r.cells {
                assert!(cells.iter().all(|(c, _)| !c.is_empty()), "{r:?}");
            }
        }
    }

    #[test]
    fn the_corpus_reads_without_panicking() {
        for (name, bytes) in corpus() {
            for format in [
                VariantsFormat::Csv,
                VariantsFormat::Jsonl,
                VariantsFormat::Json,
            ] {
                if let Ok(rows) = read(&bytes, format) {
                    check_rows(&rows);
                }
            }
            let _ = name;
        }
    }

    /// Spreadsheet text: commas, quotes, line breaks, non-ASCII.
    fn cell_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9 ]{0,8}",
            Just(String::new()),
            Just("a,b".to_owned()),
            Just("say \"hi\"".to_owned()),
            Just("two\nlines".to_owned()),
            Just("crlf\r\nline".to_owned()),
            Just("Zoë 東京 🎬".to_owned()),
            Just(" padded ".to_owned()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

        /// Any mutation of a corpus file reads as rows or fails whole with
        /// a message, in every format: never a panic, rows numbered without
        /// gaps.
        #[test]
        fn mutated_files_never_panic(
            pick in any::<prop::sample::Index>(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
        ) {
            let files = corpus();
            let (_, mut bytes) = files[pick.index(files.len())].clone();
            for (at, byte, op) in edits {
                let i = at.index(bytes.len() + 1);
                match op {
                    0 => bytes.insert(i, byte),
                    1 if i < bytes.len() => bytes[i] = byte,
                    _ if i < bytes.len() => { bytes.remove(i); }
                    _ => bytes.push(byte),
                }
            }
            for format in [VariantsFormat::Csv, VariantsFormat::Jsonl, VariantsFormat::Json] {
                if let Ok(rows) = read(&bytes, format) {
                    check_rows(&rows);
                }
            }
        }

        /// What the `csv` writer writes (with or without a BOM, LF or CRLF)
        /// reads back cell for cell, blank cells left out; the same rows as
        /// JSONL read back too.
        #[test]
        fn written_rows_read_back(
            rows in prop::collection::vec(prop::collection::vec(cell_text(), 3), 0..12),
            bom in any::<bool>(),
            crlf in any::<bool>(),
        ) {
            let header = ["name", "count", "text.Title Card.Headline"];
            let mut out = Vec::new();
            if bom {
                out.extend_from_slice(b"\xEF\xBB\xBF");
            }
            {
                let terminator = if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') };
                let mut w = csv::WriterBuilder::new().terminator(terminator).from_writer(&mut out);
                w.write_record(header).expect("header");
                for r in &rows {
                    w.write_record(r).expect("row");
                }
                w.flush().expect("flush");
            }
            let read_back = read(&out, VariantsFormat::Csv).expect("reads");
            prop_assert_eq!(read_back.len(), rows.len());
            let mut jsonl = Vec::new();
            for (r, got) in rows.iter().zip(&read_back) {
                let expected: Vec<(&str, &str)> = header
                    .iter()
                    .zip(r)
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(h, v)| (*h, v.as_str()))
                    .collect();
                prop_assert_eq!(got.cells.clone(), Ok(text(&expected)));
                let object: serde_json::Map<String, Value> = expected
                    .iter()
                    .map(|(h, v)| ((*h).to_owned(), Value::String((*v).to_owned())))
                    .collect();
                jsonl.extend(serde_json::to_vec(&object).expect("json"));
                jsonl.extend(if crlf { &b"\r\n"[..] } else { &b"\n"[..] });
            }
            let lines = read(&jsonl, VariantsFormat::Jsonl).expect("reads");
            prop_assert_eq!(lines.len(), rows.len());
            for (line, csv_row) in lines.iter().zip(&read_back) {
                // JSON objects need not keep their keys' order: compare sorted.
                let sorted = |cells: &Result<Cells, String>| -> Option<Vec<(Arc<str>, String)>> {
                    let mut v: Vec<_> = cells.as_ref().ok()?.iter().map(|(k, v)| (Arc::clone(k), v.text())).collect();
                    v.sort();
                    Some(v)
                };
                prop_assert_eq!(sorted(&line.cells), sorted(&csv_row.cells));
            }
        }
    }
}
