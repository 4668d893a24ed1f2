//! Protobuf `ModelInferRequest` / `ModelInferResponse` into held rows: prost decodes
//! the message (BYTES and raw contents as slices of one copy of the payload, no
//! allocation per value), then only the monitored tensors are looked at.

use super::proto::{InferTensorContents, ModelInferRequest, ModelInferResponse};
use super::tensor::{Data, Dtype, Refused, Tensor};
use super::{Held, REASON_MALFORMED, Wanted, load};
use prost::Message as _;
use prost::bytes::Bytes;

pub(super) fn decode_request(
    payload: &[u8],
    message: &mut ModelInferRequest,
    wanted: Wanted<'_>,
    held: &mut Held,
) -> Result<usize, Refused> {
    message.clear();
    message
        .merge(Bytes::copy_from_slice(payload))
        .map_err(|e| (REASON_MALFORMED, format!("not a ModelInferRequest: {e}")))?;
    take_id(&message.id, held);
    let (inputs, raw) = (&message.inputs, &message.raw_input_contents);
    load(wanted, held, |name| {
        let Some(i) = inputs.iter().position(|t| t.name == name) else {
            return Ok(None);
        };
        let t = &inputs[i];
        tensor(&t.name, &t.datatype, &t.shape, t.contents.as_ref(), raw, i).map(Some)
    })
}

pub(super) fn decode_response(
    payload: &[u8],
    message: &mut ModelInferResponse,
    wanted: Wanted<'_>,
    held: &mut Held,
) -> Result<usize, Refused> {
    message.clear();
    message
        .merge(Bytes::copy_from_slice(payload))
        .map_err(|e| (REASON_MALFORMED, format!("not a ModelInferResponse: {e}")))?;
    take_id(&message.id, held);
    let (outputs, raw) = (&message.outputs, &message.raw_output_contents);
    load(wanted, held, |name| {
        let Some(i) = outputs.iter().position(|t| t.name == name) else {
            return Ok(None);
        };
        let t = &outputs[i];
        tensor(&t.name, &t.datatype, &t.shape, t.contents.as_ref(), raw, i).map(Some)
    })
}

fn take_id(id: &str, held: &mut Held) {
    if !id.is_empty() {
        held.request_id.push_str(id);
        held.has_request_id = true;
        held.id_is_protocol = true;
    }
}

/// Tensor `index` of a message: its raw contents when the message has any (the
/// protocol then puts every tensor's data there, in order), else its typed contents.
fn tensor<'a>(
    name: &'a str,
    datatype: &str,
    shape: &[i64],
    contents: Option<&'a InferTensorContents>,
    raw: &'a [Bytes],
    index: usize,
) -> Result<Tensor<'a>, Refused> {
    let dtype = Dtype::of(name, datatype)?;
    let (data, elsewhere) = if raw.is_empty() {
        match contents {
            Some(c) => typed(c, dtype),
            // No data at all: right only for a tensor of no elements.
            None => (Data::Raw(&[]), false),
        }
    } else {
        let bytes = raw.get(index).ok_or_else(|| {
            (
                REASON_MALFORMED,
                format!("tensor `{name}`: no raw contents at index {index} ({} given)", raw.len()),
            )
        })?;
        (Data::Raw(bytes), false)
    };
    Tensor::checked(name, dtype, shape, data, elsewhere)
}

/// The field of `contents` that holds `dtype`'s values, and whether another field
/// holds values instead.
fn typed(c: &InferTensorContents, dtype: Dtype) -> (Data<'_>, bool) {
    let data = match dtype {
        Dtype::Bool => Data::Bool(&c.bool_contents),
        Dtype::I8 | Dtype::I16 | Dtype::I32 => Data::I32(&c.int_contents),
        Dtype::I64 => Data::I64(&c.int64_contents),
        Dtype::U8 | Dtype::U16 | Dtype::U32 => Data::U32(&c.uint_contents),
        Dtype::U64 => Data::U64(&c.uint64_contents),
        Dtype::F32 => Data::F32(&c.fp32_contents),
        Dtype::F64 => Data::F64(&c.fp64_contents),
        Dtype::Bytes => Data::Bytes(&c.bytes_contents),
        // The protocol has no typed field for FP16: it travels as raw contents only.
        Dtype::F16 => Data::F32(&[]),
    };
    let lens = [
        c.bool_contents.len(),
        c.int_contents.len(),
        c.int64_contents.len(),
        c.uint_contents.len(),
        c.uint64_contents.len(),
        c.fp32_contents.len(),
        c.fp64_contents.len(),
        c.bytes_contents.len(),
    ];
    let own = match data {
        Data::Bool(v) => v.len(),
        Data::I32(v) => v.len(),
        Data::I64(v) => v.len(),
        Data::U32(v) => v.len(),
        Data::U64(v) => v.len(),
        Data::F32(v) => v.len(),
        Data::F64(v) => v.len(),
        Data::Bytes(v) => v.len(),
        Data::Raw(_) | Data::Json(_) => 0,
    };
    (data, lens.iter().sum::<usize>() > own)
}
