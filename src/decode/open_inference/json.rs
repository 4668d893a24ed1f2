//! JSON messages of the protocol into held rows: v2 tensors (`inputs` or `outputs`,
//! `data` flat or nested, row-major) and KServe v1 rows (`instances` or `predictions`:
//! a list of objects, whose keys are then the tensors, of lists, or of scalars, which
//! make one tensor named after the list).

use super::tensor::{Data, Dtype, Refused, Tensor};
use super::{Held, REASON_MALFORMED, REASON_SHAPE, Wanted, load};
use crate::config::InferenceMessage;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;

#[derive(Deserialize)]
struct JsonTensor<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    datatype: Cow<'a, str>,
    shape: Vec<i64>,
    #[serde(default)]
    data: Value,
}

/// A request: its `outputs` (the outputs asked for) are not read.
#[derive(Deserialize)]
struct Request<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    inputs: Option<Vec<JsonTensor<'a>>>,
    #[serde(default)]
    instances: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct Response<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    outputs: Option<Vec<JsonTensor<'a>>>,
    #[serde(default)]
    predictions: Option<Vec<Value>>,
}

pub(super) fn decode(
    payload: &[u8],
    message: InferenceMessage,
    wanted: Wanted<'_>,
    held: &mut Held,
) -> Result<usize, Refused> {
    let malformed = |e: serde_json::Error| (REASON_MALFORMED, format!("not Open Inference JSON: {e}"));
    let (id, tensors, rows) = match message {
        InferenceMessage::Request => {
            let r: Request<'_> = serde_json::from_slice(payload).map_err(malformed)?;
            (r.id, r.inputs, r.instances)
        }
        InferenceMessage::Response => {
            let r: Response<'_> = serde_json::from_slice(payload).map_err(malformed)?;
            (r.id, r.outputs, r.predictions)
        }
    };
    if let Some(id) = id.filter(|id| !id.is_empty()) {
        held.request_id.push_str(&id);
        held.has_request_id = true;
        held.id_is_protocol = true;
    }
    match (tensors, rows) {
        (Some(tensors), _) => {
            let flat: Vec<Vec<Option<&Value>>> = tensors
                .iter()
                .map(|t| {
                    let mut out = Vec::new();
                    if wanted.reads(&t.name) {
                        flatten(&t.data, &mut out);
                    }
                    out
                })
                .collect();
            load(wanted, held, |name| {
                let Some(i) = tensors.iter().position(|t| t.name == name) else {
                    return Ok(None);
                };
                let t = &tensors[i];
                let dtype = Dtype::of(&t.name, &t.datatype)?;
                Tensor::checked(&t.name, dtype, &t.shape, Data::Json(&flat[i]), false).map(Some)
            })
        }
        (None, Some(rows)) => {
            let list = if message == InferenceMessage::Request { "instances" } else { "predictions" };
            let mut columns: Vec<(&str, Vec<Option<&Value>>, usize)> = Vec::new();
            for name in wanted.fields.iter().map(|f| f.tensor.as_str()).chain(wanted.event_time) {
                if !columns.iter().any(|(n, ..)| *n == name)
                    && let Some((values, width)) = v1_tensor(&rows, name, list)?
                {
                    columns.push((name, values, width));
                }
            }
            // The prediction never refuses the message.
            if let Some(name) = wanted.prediction.map(|p| p.tensor.as_str())
                && !columns.iter().any(|(n, ..)| *n == name)
                && let Ok(Some((values, width))) = v1_tensor(&rows, name, list)
            {
                columns.push((name, values, width));
            }
            load(wanted, held, |name| {
                Ok(columns.iter().find(|(n, ..)| *n == name).map(|(_, values, width)| Tensor {
                    dtype: None,
                    rows: rows.len(),
                    width: *width,
                    data: Data::Json(values),
                }))
            })
        }
        (None, None) => Err((
            REASON_MALFORMED,
            match message {
                InferenceMessage::Request => "a request needs `inputs` or `instances`".into(),
                InferenceMessage::Response => "a response needs `outputs` or `predictions`".into(),
            },
        )),
    }
}

/// `data` in row-major order: nested lists flattened (serde_json's nesting limit
/// bounds the depth).
fn flatten<'v>(data: &'v Value, out: &mut Vec<Option<&'v Value>>) {
    match data {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        v => out.push(Some(v)),
    }
}

/// A KServe v1 tensor: its values row-major (`None` where a row lacks it) and its width.
type V1Tensor<'v> = (Vec<Option<&'v Value>>, usize);

/// Tensor `name` of KServe v1 rows, row-major, and its width; `None` when no row has
/// it. Rows of objects hold it under its name (a value or a list per row); rows of
/// lists or scalars are the one tensor named after the list itself.
fn v1_tensor<'v>(rows: &'v [Value], name: &str, list: &str) -> Result<Option<V1Tensor<'v>>, Refused> {
    let objects = rows.iter().filter(|r| r.is_object()).count();
    if objects != 0 && objects != rows.len() {
        return Err((REASON_SHAPE, format!("`{list}` mixes objects with other rows")));
    }
    let cells: Vec<Option<&Value>> = if objects > 0 {
        rows.iter().map(|r| r.get(name)).collect()
    } else if name == list {
        rows.iter().map(Some).collect()
    } else {
        return Ok(None);
    };
    if cells.iter().all(Option::is_none) {
        return Ok(None);
    }
    // A row's width: a list's length, else 1; every row present must agree.
    let mut width = None;
    for cell in cells.iter().flatten() {
        let w = cell.as_array().map_or(1, Vec::len);
        match width {
            Some(other) if other != w => {
                return Err((
                    REASON_SHAPE,
                    format!("`{list}`: `{name}` has rows of {other} and of {w} values"),
                ));
            }
            _ => width = Some(w),
        }
    }
    let width = width.unwrap_or(1);
    if width == 0 {
        return Err((REASON_SHAPE, format!("`{list}`: `{name}` has empty rows")));
    }
    let mut out = Vec::with_capacity(cells.len() * width);
    for cell in cells {
        match cell {
            Some(Value::Array(items)) => out.extend(items.iter().map(Some)),
            Some(v) => out.push(Some(v)),
            None => out.extend(std::iter::repeat_n(None, width)),
        }
    }
    Ok(Some((out, width)))
}
