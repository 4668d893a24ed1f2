//! Decoders: turn JSON and Arrow records into values for sketches.

pub mod arrow;
pub mod json;
