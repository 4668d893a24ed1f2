//! Data files as Arrow record batches: CSV, Parquet, Arrow IPC (file or stream) and
//! JSON Lines. Used to build reference profiles and by the offline `score` command.
//!
//! [`DataSource`] reads a file in batches of [`BATCH_ROWS`], optionally only some of
//! its columns, so the memory it takes does not grow with the file's length (CSV is
//! read twice: once to decide each column's type, once to make batches);
//! [`read_data_file`] reads a whole (small) file into memory.

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchReader};
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Rows per record batch when a reader lets us choose.
pub const BATCH_ROWS: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error(
        "{path}: unknown data file type; use a .csv, .parquet, .arrow/.feather/.ipc or .jsonl/.ndjson extension"
    )]
    UnknownType { path: PathBuf },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFormat {
    Csv,
    Parquet,
    ArrowIpc,
    JsonLines,
}

/// A data file read whole into record batches.
#[derive(Debug)]
pub struct DataFile {
    pub path: PathBuf,
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl DataFile {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// The format of `path`, from its extension or, failing that, its magic bytes.
pub fn detect_format(path: &Path) -> Result<DataFormat, FileError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "csv" => return Ok(DataFormat::Csv),
        "parquet" | "pq" => return Ok(DataFormat::Parquet),
        "arrow" | "feather" | "ipc" | "arrows" => return Ok(DataFormat::ArrowIpc),
        "jsonl" | "ndjson" | "json" => return Ok(DataFormat::JsonLines),
        _ => {}
    }
    let mut magic = [0u8; 6];
    let mut file = File::open(path).map_err(|error| FileError::Io { path: path.into(), error })?;
    let read = file.read(&mut magic).map_err(|error| FileError::Io { path: path.into(), error })?;
    match &magic[..read] {
        [b'P', b'A', b'R', b'1', ..] => Ok(DataFormat::Parquet),
        b"ARROW1" | [0xff, 0xff, 0xff, 0xff, ..] => Ok(DataFormat::ArrowIpc),
        _ => Err(FileError::UnknownType { path: path.into() }),
    }
}

/// Record batches of a [`DataSource`], read as they are asked for.
pub type Batches = Box<dyn Iterator<Item = Result<RecordBatch, FileError>> + Send>;

/// An opened data file: its format, schema and row count, read in batches on demand.
#[derive(Debug, Clone)]
pub struct DataSource {
    pub path: PathBuf,
    pub schema: SchemaRef,
    format: DataFormat,
    rows: usize,
}

impl DataSource {
    /// Opens `path`: reads its schema (and, for CSV and JSON Lines, every row once to
    /// infer the types and count the rows; for Arrow IPC, one column to count them).
    pub fn open(path: &Path) -> Result<DataSource, FileError> {
        let format = detect_format(path)?;
        let format_err = |message: String| FileError::Format { path: path.into(), message };
        let mut source = DataSource { path: path.into(), schema: Arc::new(Schema::empty()), format, rows: 0 };
        match format {
            DataFormat::Parquet => {
                let builder =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(source.file()?)
                        .map_err(|e| format_err(e.to_string()))?;
                source.schema = builder.schema().clone();
                source.rows = usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
            }
            DataFormat::Csv => {
                let (schema, rows) = infer_csv(source.file()?).map_err(format_err)?;
                source.schema = schema;
                source.rows = rows;
            }
            DataFormat::JsonLines => {
                let mut reader = BufReader::new(source.file()?);
                let (schema, _) = arrow::json::reader::infer_json_schema_from_seekable(&mut reader, None)
                    .map_err(|e| format_err(e.to_string()))?;
                source.schema = Arc::new(schema);
                source.rows = source.count_rows()?;
            }
            DataFormat::ArrowIpc => {
                // Making the reader reads the schema only; batches are read when asked for.
                let (schema, _) = source.ipc_batches(None)?;
                source.schema = schema;
                source.rows = source.count_rows()?;
            }
        }
        Ok(source)
    }

    /// Rows in the file.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The file's batches with the columns at `columns` (schema indices, in schema
    /// order), or every column.
    pub fn batches(&self, columns: Option<&[usize]>) -> Result<Batches, FileError> {
        let path = self.path.clone();
        let format_err = move |message: String| FileError::Format { path: path.clone(), message };
        let projection: Option<Vec<usize>> = columns.map(<[usize]>::to_vec);
        let batches: Batches = match self.format {
            DataFormat::Parquet => {
                let builder =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(self.file()?)
                        .map_err(|e| format_err(e.to_string()))?;
                let builder = match &projection {
                    Some(columns) => {
                        let mask =
                            parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), columns.clone());
                        builder.with_projection(mask)
                    }
                    None => builder,
                };
                let reader =
                    builder.with_batch_size(BATCH_ROWS).build().map_err(|e| format_err(e.to_string()))?;
                Box::new(reader.map(move |b| b.map_err(|e| format_err(e.to_string()))))
            }
            DataFormat::ArrowIpc => self.ipc_batches(projection)?.1,
            DataFormat::JsonLines => {
                let schema = match &projection {
                    Some(columns) => {
                        Arc::new(self.schema.project(columns).map_err(|e| format_err(e.to_string()))?)
                    }
                    None => self.schema.clone(),
                };
                let reader = arrow::json::ReaderBuilder::new(schema)
                    .with_batch_size(BATCH_ROWS)
                    .build(BufReader::new(self.file()?))
                    .map_err(|e| format_err(e.to_string()))?;
                Box::new(reader.map(move |b| b.map_err(|e| format_err(e.to_string()))))
            }
            DataFormat::Csv => Box::new(CsvBatches::new(self, projection)?),
        };
        Ok(batches)
    }

    fn file(&self) -> Result<File, FileError> {
        File::open(&self.path).map_err(|error| FileError::Io { path: self.path.clone(), error })
    }

    fn count_rows(&self) -> Result<usize, FileError> {
        let first = if self.schema.fields().is_empty() { Vec::new() } else { vec![0] };
        let mut rows = 0;
        for batch in self.batches(Some(&first))? {
            rows += batch?.num_rows();
        }
        Ok(rows)
    }

    /// An Arrow IPC file or stream's schema and batches.
    fn ipc_batches(&self, projection: Option<Vec<usize>>) -> Result<(SchemaRef, Batches), FileError> {
        let path = self.path.clone();
        let format_err = move |message: String| FileError::Format { path: path.clone(), message };
        let mut file = self.file()?;
        let mut magic = [0u8; 6];
        let is_file = file.read(&mut magic).map(|n| n == 6 && &magic == b"ARROW1").unwrap_or(false);
        file.rewind().map_err(|error| FileError::Io { path: self.path.clone(), error })?;
        Ok(if is_file {
            let reader = arrow::ipc::reader::FileReader::try_new(BufReader::new(file), projection)
                .map_err(|e| format_err(e.to_string()))?;
            let schema = reader.schema();
            (schema, Box::new(reader.map(move |b| b.map_err(|e| format_err(e.to_string())))))
        } else {
            let reader = arrow::ipc::reader::StreamReader::try_new(BufReader::new(file), projection)
                .map_err(|e| format_err(e.to_string()))?;
            let schema = reader.schema();
            (schema, Box::new(reader.map(move |b| b.map_err(|e| format_err(e.to_string())))))
        })
    }
}

/// Reads a whole data file.
pub fn read_data_file(path: &Path) -> Result<DataFile, FileError> {
    let format_err = |message: String| FileError::Format { path: path.into(), message };
    let open = || File::open(path).map_err(|error| FileError::Io { path: path.into(), error });
    let (schema, batches) = match detect_format(path)? {
        DataFormat::Csv => read_csv(open()?).map_err(format_err)?,
        DataFormat::Parquet => {
            let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(open()?)
                .map_err(|e| format_err(e.to_string()))?;
            let reader =
                builder.with_batch_size(BATCH_ROWS).build().map_err(|e| format_err(e.to_string()))?;
            let schema = reader.schema();
            let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| format_err(e.to_string()))?;
            (schema, batches)
        }
        DataFormat::ArrowIpc => {
            let mut file = open()?;
            let mut magic = [0u8; 6];
            let is_file = file.read(&mut magic).map(|n| n == 6 && &magic == b"ARROW1").unwrap_or(false);
            file.rewind().map_err(|error| FileError::Io { path: path.into(), error })?;
            if is_file {
                let reader = arrow::ipc::reader::FileReader::try_new(BufReader::new(file), None)
                    .map_err(|e| format_err(e.to_string()))?;
                let schema = reader.schema();
                (schema, reader.collect::<Result<Vec<_>, _>>().map_err(|e| format_err(e.to_string()))?)
            } else {
                let reader = arrow::ipc::reader::StreamReader::try_new(BufReader::new(file), None)
                    .map_err(|e| format_err(e.to_string()))?;
                let schema = reader.schema();
                (schema, reader.collect::<Result<Vec<_>, _>>().map_err(|e| format_err(e.to_string()))?)
            }
        }
        DataFormat::JsonLines => {
            let mut reader = BufReader::new(open()?);
            let (schema, _) = arrow::json::reader::infer_json_schema_from_seekable(&mut reader, None)
                .map_err(|e| format_err(e.to_string()))?;
            let schema = Arc::new(schema);
            let reader = arrow::json::ReaderBuilder::new(schema.clone())
                .with_batch_size(BATCH_ROWS)
                .build(reader)
                .map_err(|e| format_err(e.to_string()))?;
            (schema, reader.collect::<Result<Vec<_>, _>>().map_err(|e| format_err(e.to_string()))?)
        }
    };
    Ok(DataFile { path: path.into(), schema, batches })
}

/// CSV with types decided per column from all its values: numbers (including `NaN`,
/// `inf`, `-inf`) make a numeric column, `true`/`false` a boolean one, anything else
/// text; an empty field is missing. Written by hand over the `csv` crate because
/// arrow-csv's inference reads `NaN`/`inf` columns as text.
fn read_csv(file: File) -> Result<(SchemaRef, Vec<RecordBatch>), String> {
    let mut reader =
        csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(BufReader::new(file));
    let headers: Vec<String> =
        reader.headers().map_err(|e| e.to_string())?.iter().map(str::to_owned).collect();
    let mut columns: Vec<Vec<Option<String>>> = vec![Vec::new(); headers.len()];
    for (row, record) in reader.records().enumerate() {
        let record = record.map_err(|e| format!("row {}: {e}", row + 2))?;
        for (column, value) in columns.iter_mut().zip(record.iter()) {
            column.push(if value.is_empty() { None } else { Some(value.to_owned()) });
        }
    }
    let mut fields = Vec::with_capacity(headers.len());
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(headers.len());
    for (name, values) in headers.iter().zip(columns) {
        let present = || values.iter().flatten();
        let (data_type, array): (DataType, ArrayRef) = if present().all(|v| v.trim().parse::<i64>().is_ok()) {
            // Integers stay integers, so a categorical override reads `1`, not `1.0`.
            let parsed: Int64Array =
                values.iter().map(|v| v.as_ref().and_then(|v| v.trim().parse().ok())).collect();
            (DataType::Int64, Arc::new(parsed))
        } else if present().all(|v| v.trim().parse::<f64>().is_ok()) {
            let parsed: Float64Array =
                values.iter().map(|v| v.as_ref().and_then(|v| v.trim().parse().ok())).collect();
            (DataType::Float64, Arc::new(parsed))
        } else if present().all(|v| v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false")) {
            let parsed: BooleanArray =
                values.iter().map(|v| v.as_ref().map(|v| v.eq_ignore_ascii_case("true"))).collect();
            (DataType::Boolean, Arc::new(parsed))
        } else {
            (DataType::Utf8, Arc::new(values.iter().map(|v| v.as_deref()).collect::<StringArray>()))
        };
        fields.push(Field::new(name, data_type, true));
        arrays.push(array);
    }
    let schema = Arc::new(Schema::new(fields));
    if arrays.first().is_none_or(|a| a.is_empty()) {
        return Ok((schema, Vec::new()));
    }
    let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(|e| e.to_string())?;
    Ok((schema, vec![batch]))
}

/// What a CSV column's values allow it to be, narrowed value by value (see [`read_csv`]).
#[derive(Debug, Clone, Copy)]
struct CsvColumnType {
    int: bool,
    float: bool,
    boolean: bool,
}

impl CsvColumnType {
    fn see(&mut self, value: &str) {
        if value.is_empty() {
            return;
        }
        let trimmed = value.trim();
        self.int = self.int && trimmed.parse::<i64>().is_ok();
        self.float = self.float && trimmed.parse::<f64>().is_ok();
        self.boolean =
            self.boolean && (value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false"));
    }

    fn data_type(self) -> DataType {
        if self.int {
            DataType::Int64
        } else if self.float {
            DataType::Float64
        } else if self.boolean {
            DataType::Boolean
        } else {
            DataType::Utf8
        }
    }
}

fn csv_reader(file: File) -> csv::Reader<BufReader<File>> {
    csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(BufReader::new(file))
}

/// The schema [`read_csv`] would give, and the row count, from one streaming pass.
fn infer_csv(file: File) -> Result<(SchemaRef, usize), String> {
    let mut reader = csv_reader(file);
    let headers: Vec<String> =
        reader.headers().map_err(|e| e.to_string())?.iter().map(str::to_owned).collect();
    let mut types = vec![CsvColumnType { int: true, float: true, boolean: true }; headers.len()];
    let mut record = csv::StringRecord::new();
    let mut rows = 0usize;
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(format!("row {}: {e}", rows + 2)),
        }
        for (t, value) in types.iter_mut().zip(record.iter()) {
            t.see(value);
        }
        rows += 1;
    }
    let fields: Vec<Field> =
        headers.iter().zip(&types).map(|(name, t)| Field::new(name, t.data_type(), true)).collect();
    Ok((Arc::new(Schema::new(fields)), rows))
}

/// A CSV file's rows as typed batches (the types [`infer_csv`] decided), only the
/// projected columns kept.
struct CsvBatches {
    reader: csv::Reader<BufReader<File>>,
    path: PathBuf,
    schema: SchemaRef,
    /// Schema index of each kept column.
    columns: Vec<usize>,
    rows_read: usize,
    done: bool,
}

impl CsvBatches {
    fn new(source: &DataSource, projection: Option<Vec<usize>>) -> Result<CsvBatches, FileError> {
        let columns = projection.unwrap_or_else(|| (0..source.schema.fields().len()).collect());
        let schema = Arc::new(
            source
                .schema
                .project(&columns)
                .map_err(|e| FileError::Format { path: source.path.clone(), message: e.to_string() })?,
        );
        let mut reader = csv_reader(source.file()?);
        reader
            .headers()
            .map_err(|e| FileError::Format { path: source.path.clone(), message: e.to_string() })?;
        Ok(CsvBatches { reader, path: source.path.clone(), schema, columns, rows_read: 0, done: false })
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>, String> {
        let mut values: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(BATCH_ROWS); self.columns.len()];
        let mut record = csv::StringRecord::new();
        let mut rows = 0;
        while rows < BATCH_ROWS {
            match self.reader.read_record(&mut record) {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    break;
                }
                Err(e) => return Err(format!("row {}: {e}", self.rows_read + rows + 2)),
            }
            for (kept, &column) in values.iter_mut().zip(&self.columns) {
                let value = record.get(column).unwrap_or("");
                kept.push(if value.is_empty() { None } else { Some(value.to_owned()) });
            }
            rows += 1;
        }
        self.rows_read += rows;
        if rows == 0 {
            return Ok(None);
        }
        let arrays: Vec<ArrayRef> = self
            .schema
            .fields()
            .iter()
            .zip(&values)
            .map(|(field, values)| csv_array(field.data_type(), values))
            .collect();
        let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

impl Iterator for CsvBatches {
    type Item = Result<RecordBatch, FileError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_batch() {
            Ok(batch) => batch.map(Ok),
            Err(message) => {
                self.done = true;
                Some(Err(FileError::Format { path: self.path.clone(), message }))
            }
        }
    }
}

/// One CSV column's values as an array of `data_type`, parsed as [`read_csv`] does.
fn csv_array(data_type: &DataType, values: &[Option<String>]) -> ArrayRef {
    match data_type {
        DataType::Int64 => Arc::new(
            values.iter().map(|v| v.as_ref().and_then(|v| v.trim().parse().ok())).collect::<Int64Array>(),
        ),
        DataType::Float64 => Arc::new(
            values.iter().map(|v| v.as_ref().and_then(|v| v.trim().parse().ok())).collect::<Float64Array>(),
        ),
        DataType::Boolean => Arc::new(
            values
                .iter()
                .map(|v| v.as_ref().map(|v| v.eq_ignore_ascii_case("true")))
                .collect::<BooleanArray>(),
        ),
        _ => Arc::new(values.iter().map(|v| v.as_deref()).collect::<StringArray>()),
    }
}
