//! One message's tensors as the decoder reads them, whatever their encoding: the
//! datatype, the geometry checked against the data actually present (so a declared
//! shape never sizes an allocation), and the columns of the monitored features, copied
//! into buffers reused from message to message.

use super::{REASON_MALFORMED, REASON_SHAPE, REASON_UNSUPPORTED, REASON_WRONG_DATATYPE};
use crate::stats::settings::FeatureKind;
use prost::bytes::Bytes;
use serde_json::Value;
use std::fmt::Write as _;

/// A tensor datatype of the protocol that driftscope reads: every numeric type and
/// BYTES (BF16 and anything else is refused as unsupported).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dtype {
    Bool,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F16,
    F32,
    F64,
    Bytes,
}

impl Dtype {
    /// The datatype of monitored tensor `tensor`, or the refusal.
    pub(super) fn of(tensor: &str, datatype: &str) -> Result<Dtype, Refused> {
        Dtype::parse(datatype).ok_or_else(|| {
            (REASON_UNSUPPORTED, format!("tensor `{tensor}`: datatype `{datatype}` is not supported"))
        })
    }

    pub(super) fn parse(name: &str) -> Option<Dtype> {
        Some(match name {
            "BOOL" => Dtype::Bool,
            "INT8" => Dtype::I8,
            "INT16" => Dtype::I16,
            "INT32" => Dtype::I32,
            "INT64" => Dtype::I64,
            "UINT8" => Dtype::U8,
            "UINT16" => Dtype::U16,
            "UINT32" => Dtype::U32,
            "UINT64" => Dtype::U64,
            "FP16" => Dtype::F16,
            "FP32" => Dtype::F32,
            "FP64" => Dtype::F64,
            "BYTES" => Dtype::Bytes,
            _ => return None,
        })
    }

    /// Bytes per element in raw contents; `None` for BYTES (length-prefixed).
    fn width(self) -> Option<usize> {
        Some(match self {
            Dtype::Bool | Dtype::I8 | Dtype::U8 => 1,
            Dtype::I16 | Dtype::U16 | Dtype::F16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::U64 | Dtype::F64 => 8,
            Dtype::Bytes => return None,
        })
    }
}

/// Where a tensor's elements are, row-major.
#[derive(Clone, Copy)]
pub(super) enum Data<'a> {
    Bool(&'a [bool]),
    I32(&'a [i32]),
    I64(&'a [i64]),
    U32(&'a [u32]),
    U64(&'a [u64]),
    F32(&'a [f32]),
    F64(&'a [f64]),
    Bytes(&'a [Bytes]),
    /// Raw contents: fixed-width little-endian elements of the tensor's datatype, or
    /// for BYTES each element preceded by its 4-byte little-endian length.
    Raw(&'a [u8]),
    /// JSON elements (nested `data` flattened, or KServe v1 rows: `None` for a row
    /// without the field).
    Json(&'a [Option<&'a Value>]),
}

/// A tensor of one message.
#[derive(Clone, Copy)]
pub(super) struct Tensor<'a> {
    /// `None` for KServe v1 rows, which carry no datatype (each value's own JSON type
    /// decides).
    pub dtype: Option<Dtype>,
    pub rows: usize,
    /// Elements per row: the product of the dimensions after the first.
    pub width: usize,
    pub data: Data<'a>,
}

/// Why a message is refused: a declared reason and its detail.
pub(super) type Refused = (&'static str, String);

impl<'a> Tensor<'a> {
    /// Checks a monitored tensor read from the protocol: its shape, and that its data
    /// holds exactly the elements the shape declares, in the field of its datatype.
    /// Only monitored tensors are checked: an unmonitored tensor of an unsupported type
    /// is no reason to refuse a message.
    ///
    /// `typed_elsewhere`: typed contents hold values in a field other than the one of
    /// the tensor's datatype (which `data` is).
    pub(super) fn checked(
        name: &'a str,
        dtype: Dtype,
        shape: &[i64],
        data: Data<'a>,
        typed_elsewhere: bool,
    ) -> Result<Tensor<'a>, Refused> {
        let (&first, rest) = shape
            .split_first()
            .ok_or_else(|| (REASON_SHAPE, format!("tensor `{name}`: a shape with no batch dimension")))?;
        let dim = |d: i64| {
            usize::try_from(d).map_err(|_| (REASON_SHAPE, format!("tensor `{name}`: negative dimension {d}")))
        };
        let rows = dim(first)?;
        let mut width = 1usize;
        for &d in rest {
            width = width
                .checked_mul(dim(d)?)
                .ok_or_else(|| (REASON_SHAPE, format!("tensor `{name}`: shape {shape:?} overflows")))?;
        }
        if width == 0 && rows > 0 {
            return Err((REASON_SHAPE, format!("tensor `{name}`: shape {shape:?} has rows but no columns")));
        }
        let declared = rows
            .checked_mul(width)
            .ok_or_else(|| (REASON_SHAPE, format!("tensor `{name}`: shape {shape:?} overflows")))?;
        let present = match (data, dtype) {
            (Data::Raw(bytes), Dtype::Bytes) => count_raw_bytes(bytes)
                .ok_or_else(|| (REASON_MALFORMED, format!("tensor `{name}`: raw BYTES element overruns")))?,
            (Data::Raw(bytes), _) => {
                let w = dtype.width().unwrap_or(1);
                if bytes.len() % w != 0 {
                    return Err((
                        REASON_SHAPE,
                        format!(
                            "tensor `{name}`: {} raw bytes are not whole {dtype:?} elements",
                            bytes.len()
                        ),
                    ));
                }
                bytes.len() / w
            }
            (Data::Json(values), _) => values.len(),
            (typed, _) => {
                let (len, matches) = match typed {
                    Data::Bool(v) => (v.len(), dtype == Dtype::Bool),
                    Data::I32(v) => (v.len(), matches!(dtype, Dtype::I8 | Dtype::I16 | Dtype::I32)),
                    Data::I64(v) => (v.len(), dtype == Dtype::I64),
                    Data::U32(v) => (v.len(), matches!(dtype, Dtype::U8 | Dtype::U16 | Dtype::U32)),
                    Data::U64(v) => (v.len(), dtype == Dtype::U64),
                    Data::F32(v) => (v.len(), dtype == Dtype::F32),
                    Data::F64(v) => (v.len(), dtype == Dtype::F64),
                    Data::Bytes(v) => (v.len(), dtype == Dtype::Bytes),
                    Data::Raw(_) | Data::Json(_) => unreachable!("matched above"),
                };
                if (!matches && len > 0) || (declared > 0 && len == 0 && typed_elsewhere) {
                    return Err((
                        REASON_WRONG_DATATYPE,
                        format!("tensor `{name}`: its contents are not of its datatype {dtype:?}"),
                    ));
                }
                len
            }
        };
        if present != declared {
            return Err((
                REASON_SHAPE,
                format!(
                    "tensor `{name}`: shape {shape:?} declares {declared} elements, the data holds {present}"
                ),
            ));
        }
        Ok(Tensor { dtype: Some(dtype), rows, width, data })
    }
}

/// The elements of raw BYTES contents, or `None` when one overruns the buffer.
fn count_raw_bytes(mut bytes: &[u8]) -> Option<usize> {
    let mut n = 0;
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
        bytes = rest.get(len..)?;
        n += 1;
    }
    Some(n)
}

/// Where each element of raw BYTES contents is, found once per tensor and message
/// rather than once per column read from it (the elements can only be found in order).
#[derive(Debug, Default)]
pub(super) struct ByteSpans {
    /// The contents the spans are of (address, length); reset for every message, so
    /// that another message's buffer at the same address is never taken for this one.
    of: (usize, usize),
    spans: Vec<(u32, u32)>,
}

impl ByteSpans {
    pub(super) fn reset(&mut self) {
        self.of = (0, 0);
    }

    /// The elements' spans in `bytes` (checked by `count_raw_bytes`).
    fn of(&mut self, bytes: &[u8]) -> &[(u32, u32)] {
        let key = (bytes.as_ptr() as usize, bytes.len());
        if self.of != key {
            self.of = key;
            self.spans.clear();
            let mut at = 0usize;
            while let Some(len) = bytes.get(at..at + 4) {
                let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
                // Offsets fit in u32: contents over 4 GiB cannot be in a Kafka message.
                self.spans.push(((at + 4) as u32, (at + 4 + len) as u32));
                at += 4 + len;
            }
        }
        &self.spans
    }
}

/// One value of a row when it is not a plain number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    Value,
    Missing,
    Invalid,
}

/// How a held column is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fill {
    /// The tensor is not in the message: every row is missing.
    Missing,
    /// A BYTES tensor read as a numeric feature: every row is invalid.
    Invalid,
    /// Every row a number in `numbers`: folded as one slice.
    Numbers,
    /// Numbers with missing or invalid rows (`status` per row).
    Mixed,
    /// Categories: `status` and a span of `text` per row.
    Text,
}

/// A monitored feature's values for the held rows.
#[derive(Debug)]
pub(super) struct Column {
    pub fill: Fill,
    pub numbers: Vec<f64>,
    pub status: Vec<Status>,
    pub text: String,
    pub spans: Vec<(u32, u32)>,
}

impl Column {
    pub(super) fn new() -> Column {
        Column {
            fill: Fill::Missing,
            numbers: Vec::new(),
            status: Vec::new(),
            text: String::new(),
            spans: Vec::new(),
        }
    }

    fn clear(&mut self) {
        self.numbers.clear();
        self.status.clear();
        self.text.clear();
        self.spans.clear();
    }

    /// Copies column `column` (0 for a tensor of width 1) of `tensor` for a feature of
    /// `kind`. The tensor was checked, so every index is in range.
    pub(super) fn fill(
        &mut self,
        tensor: &Tensor<'_>,
        column: usize,
        kind: FeatureKind,
        spans: &mut ByteSpans,
    ) {
        self.clear();
        if tensor.rows == 0 {
            // No rows (and maybe no columns either, shape [0, 0]: nothing to step over).
            self.fill = match kind {
                FeatureKind::Numeric => Fill::Numbers,
                FeatureKind::Categorical => Fill::Text,
            };
            return;
        }
        match kind {
            FeatureKind::Numeric => self.fill_numeric(tensor, column),
            FeatureKind::Categorical => self.fill_text(tensor, column, spans),
        }
    }

    fn fill_numeric(&mut self, t: &Tensor<'_>, col: usize) {
        let (rows, width) = (t.rows, t.width);
        macro_rules! strided {
            ($slice:expr, $conv:expr) => {
                self.numbers
                    .extend($slice[col.min($slice.len())..].iter().step_by(width).take(rows).map($conv))
            };
        }
        macro_rules! raw {
            ($n:literal, $conv:expr) => {{
                let chunks = match t.data {
                    Data::Raw(bytes) => bytes.chunks_exact($n),
                    _ => unreachable!("raw"),
                };
                self.numbers.extend(
                    chunks
                        .skip(col)
                        .step_by(width)
                        .take(rows)
                        .map(|c| <[u8; $n]>::try_from(c).map_or(0.0, $conv)),
                )
            }};
        }
        self.fill = Fill::Numbers;
        match (t.data, t.dtype) {
            (Data::Bool(v), _) => strided!(v, |&b| f64::from(u8::from(b))),
            (Data::I32(v), _) => strided!(v, |&x| f64::from(x)),
            (Data::I64(v), _) => strided!(v, |&x| x as f64),
            (Data::U32(v), _) => strided!(v, |&x| f64::from(x)),
            (Data::U64(v), _) => strided!(v, |&x| x as f64),
            (Data::F32(v), _) => strided!(v, |&x| f64::from(x)),
            (Data::F64(v), _) => strided!(v, |&x| x),
            (Data::Bytes(_), _) | (Data::Raw(_), Some(Dtype::Bytes) | None) => self.fill = Fill::Invalid,
            (Data::Raw(_), Some(Dtype::Bool)) => raw!(1, |b| f64::from(u8::from(b[0] != 0))),
            (Data::Raw(_), Some(Dtype::I8)) => raw!(1, |b| f64::from(i8::from_le_bytes(b))),
            (Data::Raw(_), Some(Dtype::U8)) => raw!(1, |b| f64::from(b[0])),
            (Data::Raw(_), Some(Dtype::I16)) => raw!(2, |b| f64::from(i16::from_le_bytes(b))),
            (Data::Raw(_), Some(Dtype::U16)) => raw!(2, |b| f64::from(u16::from_le_bytes(b))),
            (Data::Raw(_), Some(Dtype::F16)) => raw!(2, |b| f64::from(half::f16::from_le_bytes(b))),
            (Data::Raw(_), Some(Dtype::I32)) => raw!(4, |b| f64::from(i32::from_le_bytes(b))),
            (Data::Raw(_), Some(Dtype::U32)) => raw!(4, |b| f64::from(u32::from_le_bytes(b))),
            (Data::Raw(_), Some(Dtype::F32)) => raw!(4, |b| f64::from(f32::from_le_bytes(b))),
            (Data::Raw(_), Some(Dtype::I64)) => raw!(8, |b| i64::from_le_bytes(b) as f64),
            (Data::Raw(_), Some(Dtype::U64)) => raw!(8, |b| u64::from_le_bytes(b) as f64),
            (Data::Raw(_), Some(Dtype::F64)) => raw!(8, f64::from_le_bytes),
            (Data::Json(values), dtype) => {
                if dtype == Some(Dtype::Bytes) {
                    self.fill = Fill::Invalid;
                    return;
                }
                let accepts_bool = matches!(dtype, Some(Dtype::Bool) | None);
                for value in values[col.min(values.len())..].iter().step_by(width).take(rows) {
                    let (x, status) = match value {
                        None | Some(Value::Null) => (0.0, Status::Missing),
                        Some(Value::Number(n)) => {
                            n.as_f64().map_or((0.0, Status::Invalid), |x| (x, Status::Value))
                        }
                        Some(Value::Bool(b)) if accepts_bool => (f64::from(u8::from(*b)), Status::Value),
                        Some(_) => (0.0, Status::Invalid),
                    };
                    self.numbers.push(x);
                    self.status.push(status);
                }
                if self.status.iter().all(|&s| s == Status::Value) {
                    self.status.clear();
                } else {
                    self.fill = Fill::Mixed;
                }
            }
        }
    }

    fn fill_text(&mut self, t: &Tensor<'_>, col: usize, spans: &mut ByteSpans) {
        self.fill = Fill::Text;
        let (rows, width) = (t.rows, t.width);
        macro_rules! display {
            ($slice:expr) => {
                for x in $slice[col.min($slice.len())..].iter().step_by(width).take(rows) {
                    self.push_display(x);
                }
            };
        }
        match (t.data, t.dtype) {
            (Data::Bool(v), _) => display!(v),
            (Data::I32(v), _) => display!(v),
            (Data::I64(v), _) => display!(v),
            (Data::U32(v), _) => display!(v),
            (Data::U64(v), _) => display!(v),
            (Data::F32(v), _) => display!(v),
            (Data::F64(v), _) => display!(v),
            (Data::Bytes(v), _) => {
                for b in v[col.min(v.len())..].iter().step_by(width).take(rows) {
                    self.push_bytes(b);
                }
            }
            (Data::Raw(bytes), Some(Dtype::Bytes)) => {
                for &(a, b) in spans.of(bytes).get(col..).unwrap_or_default().iter().step_by(width).take(rows)
                {
                    self.push_bytes(bytes.get(a as usize..b as usize).unwrap_or_default());
                }
            }
            (Data::Raw(_), Some(dtype)) => {
                // A numeric tensor read as categories: each number's text, as for JSON.
                let mut numbers = Column::new();
                numbers.fill_numeric(t, col);
                for &x in &numbers.numbers {
                    match dtype {
                        Dtype::Bool => self.push_display(&(x != 0.0)),
                        Dtype::F16 | Dtype::F32 | Dtype::F64 => self.push_display(&x),
                        _ => self.push_display(&(x as i128)),
                    }
                }
            }
            (Data::Raw(_), None) => (0..rows).for_each(|_| self.push_none(Status::Invalid)),
            (Data::Json(values), _) => {
                for value in values[col.min(values.len())..].iter().step_by(width).take(rows) {
                    match value {
                        None | Some(Value::Null) => self.push_none(Status::Missing),
                        Some(Value::String(s)) => self.push_str(s),
                        Some(Value::Number(n)) => self.push_display(n),
                        Some(Value::Bool(b)) => self.push_display(b),
                        Some(_) => self.push_none(Status::Invalid),
                    }
                }
            }
        }
    }

    fn push_str(&mut self, s: &str) {
        let start = self.text.len();
        self.text.push_str(s);
        self.push_span(start);
    }

    fn push_display(&mut self, x: &dyn std::fmt::Display) {
        let start = self.text.len();
        // Writing to a String cannot fail.
        let _ = write!(self.text, "{x}");
        self.push_span(start);
    }

    fn push_bytes(&mut self, b: &[u8]) {
        match std::str::from_utf8(b) {
            Ok(s) => self.push_str(s),
            Err(_) => self.push_none(Status::Invalid),
        }
    }

    /// A row without a category (`spans` stays aligned with `status`).
    fn push_none(&mut self, status: Status) {
        self.spans.push((0, 0));
        self.status.push(status);
    }

    fn push_span(&mut self, start: usize) {
        // Text past 4 GiB cannot come from a message under `kafka.max_message_bytes`.
        let span =
            (u32::try_from(start).unwrap_or(u32::MAX), u32::try_from(self.text.len()).unwrap_or(u32::MAX));
        self.spans.push(span);
        self.status.push(Status::Value);
    }
}
