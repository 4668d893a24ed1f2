//! Decoders: the one interface every message format implements, from a Kafka message
//! (value, key, headers) to zero, one or many rows of monitored values folded into a
//! sink, with the refusal reasons each format declares.
//!
//! A format is one module here (`json/`, `arrow.rs`, ...) implementing [`Decoder`],
//! one arm in [`for_stream`] and one in the config's `MessageFormat`. The windowing
//! (`monitor::stream`) is written once against this trait, whatever the format.

pub mod arrow;
pub mod avro;
pub mod confluent;
pub mod json;
pub mod open_inference;
pub mod protobuf;

use crate::config::{MessageFormat, StreamConfig};
use crate::stats::settings::FeatureKind;
use crate::stats::sketch::ValueSink;
use std::ops::Range;

/// Refusal reasons every stream can give, whatever its format: the monitor's own
/// checks (`empty`, `oversize`) and the windowing's (`bad_event_time`).
pub const COMMON_REASONS: [&str; 3] = ["empty", "oversize", "bad_event_time"];

/// The one refusal that is not about the message: the schema registry could not be
/// reached and the monitor is stopping (until then a decoder waits for it). The
/// monitor neither counts nor uses such a message and leaves it, and everything after
/// it, for the next start to read again.
pub const REGISTRY_UNAVAILABLE: &str = "registry_unavailable";

/// One Kafka message as a decoder sees it.
#[derive(Clone, Copy)]
pub struct Message<'a> {
    pub payload: &'a [u8],
    pub key: Option<&'a [u8]>,
    /// The message's headers (Open Inference Protocol and Confluent framing may carry
    /// what a decoder needs there).
    pub headers: &'a dyn Headers,
}

impl<'a> Message<'a> {
    /// A message of a value only (files, tests, the demo).
    pub fn value(payload: &'a [u8]) -> Message<'a> {
        Message { payload, key: None, headers: &NoHeaders }
    }
}

/// Read access to a message's headers by name (the first header of that name).
pub trait Headers {
    fn get(&self, name: &str) -> Option<&[u8]>;
}

/// A message without headers.
pub struct NoHeaders;

impl Headers for NoHeaders {
    fn get(&self, _name: &str) -> Option<&[u8]> {
        None
    }
}

/// Why a message was refused as a whole: `reason` is one of the decoder's declared
/// [`Decoder::reasons`] (a bounded metric label); `detail` is for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub reason: &'static str,
    pub detail: String,
}

impl Refusal {
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Refusal {
        Refusal { reason, detail: detail.into() }
    }
}

/// The event time of a row: `None` when the stream has no event-time field or the
/// row's is absent; `Some(Err(()))` when it holds something that is not a time.
pub type EventTime = Option<Result<i64, ()>>;

/// A monitored field as a decoder is asked to read it.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldBinding {
    /// The feature's name (and the default address in the message).
    pub name: String,
    /// Where the field is, in the format's addressing (a JSON pointer, an Arrow column,
    /// ...); `None`: by its name.
    pub path: Option<String>,
    /// The feature's position in the reference (the index given to the sink).
    pub feature: usize,
    pub kind: FeatureKind,
}

/// A message format. One decoder per stream, used by one thread; buffers are reused
/// from message to message. A decoded message's rows are held until they are folded:
/// a message refused halfway never reaches a sink.
///
/// Rows are numbered from 0 among the rows held. A decoder that [`appends`] keeps the
/// rows of many messages, one after another, until [`clear`]: the stream then folds
/// a whole batch of messages at once, feature by feature (each feature's sketch stays
/// in cache while its column is folded). One that does not replaces its rows at each
/// [`decode`], and the stream folds each message before the next.
///
/// The two fold methods exist so that the sinks stay concrete (no virtual call per
/// value): `W` is the window sketch, `R` the builder of a reference taken from the
/// stream. Implementations forward both to one generic function.
///
/// [`appends`]: Decoder::appends
/// [`clear`]: Decoder::clear
/// [`decode`]: Decoder::decode
pub trait Decoder<W: ValueSink, R: ValueSink>: Send {
    /// The label join's view of the message held, for a format whose decoder reads
    /// the prediction beside the monitored features (`open_inference` with labels);
    /// `None` for the others (the join reads a JSON message itself).
    fn held_predictions(&self) -> Option<&dyn HeldPredictions> {
        None
    }

    /// Every reason [`decode`](Decoder::decode) can refuse a message with (declared up
    /// front so each metric series exists at zero), except [`REGISTRY_UNAVAILABLE`],
    /// which is never counted.
    fn reasons(&self) -> &'static [&'static str];

    /// Decodes one message; returns how many rows it adds (0 is allowed: an empty
    /// batch). On `Err` the message adds no row (rows held before it stay).
    fn decode(&mut self, message: &Message<'_>) -> Result<usize, Refusal>;

    /// Whether [`decode`](Decoder::decode) appends to the rows held (until
    /// [`clear`](Decoder::clear)) rather than replacing them.
    fn appends(&self) -> bool {
        false
    }

    /// Drops the rows held (after they were folded).
    fn clear(&mut self) {}

    /// The event time of held row `row`.
    fn event_time_ms(&self, row: usize) -> EventTime;

    /// Folds held rows `rows` into a window: `add_records(rows.len())`, then one call
    /// per monitored feature and row.
    fn fold_window(&self, rows: Range<usize>, sink: &mut W);

    /// Folds held rows `rows` into a reference being taken from the stream.
    fn fold_reference(&self, rows: Range<usize>, sink: &mut R);
}

/// One held value of a message: a number (a numeric field) or a text (a categorical one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HeldValue<'a> {
    Number(f64),
    Text(&'a str),
}

/// What the label join reads of the message a decoder holds: its id and each row's
/// prediction, decoded with the monitored features (one decode per message).
pub trait HeldPredictions {
    /// The protocol's own request id of the message (not the Kafka key nor a header).
    fn protocol_id(&self) -> Option<&str>;

    /// Held row `row`'s prediction; `None` when the message has no usable prediction
    /// for it (the tensor missing, of other rows or columns, or the value missing).
    fn prediction(&self, row: usize) -> Option<HeldValue<'_>>;

    /// Held row `row`'s event time (the stream's event-time field), as the stream read it.
    fn event_time_ms(&self, row: usize) -> EventTime;
}

/// Why a stream's decoder cannot be built; `key` is relative to the stream's table.
#[derive(Debug, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct DecoderSetupError {
    pub key: String,
    pub message: String,
}

/// What the decoders of all streams share (made once per process: schema caches and the
/// clients that fill them).
#[derive(Default)]
pub struct DecodeContext {
    /// Schemas by id for Confluent-framed `avro` and `protobuf` streams (the registry
    /// client, `ingest::registry`); `None` without a `[registry]`.
    pub schemas: Option<std::sync::Arc<dyn confluent::SchemaSource>>,
    /// Told when a stream's messages switch schema id (the telemetry counter).
    pub schema_events: Option<std::sync::Arc<dyn confluent::SchemaEvents>>,
}

/// The decoder of `stream` for `fields`.
pub fn for_stream<W: ValueSink + 'static, R: ValueSink + 'static>(
    context: &DecodeContext,
    stream: &StreamConfig,
    fields: &[FieldBinding],
) -> Result<Box<dyn Decoder<W, R>>, DecoderSetupError> {
    match stream.format {
        MessageFormat::Json => Ok(Box::new(json::JsonMessages::new(stream, fields)?)),
        MessageFormat::ArrowIpc => Ok(Box::new(arrow::ArrowMessages::new(stream, fields))),
        MessageFormat::OpenInference => {
            Ok(Box::new(open_inference::OpenInference::for_stream(stream, fields)?))
        }
        MessageFormat::Avro => Ok(Box::new(avro::AvroDecoder::for_stream(context, stream, fields)?)),
        MessageFormat::Protobuf => {
            Ok(Box::new(protobuf::ProtobufDecoder::for_stream(context, stream, fields)?))
        }
    }
}
