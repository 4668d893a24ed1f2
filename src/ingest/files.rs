//! Data files as Arrow record batches: CSV, Parquet, Arrow IPC (file or stream) and
//! JSON Lines. Used to build reference profiles and by the offline `score` command.

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchReader};
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Rows per record batch when a reader lets us choose.
const BATCH_ROWS: usize = 8192;

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
