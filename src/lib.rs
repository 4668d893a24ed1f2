//! driftscope: windowed drift scoring of ML feature and prediction streams.
//!
//! The pipeline reads top to bottom: [`ingest`] (Kafka, data files) -> [`decode`]
//! (one `Decoder` interface: JSON, Arrow IPC) -> [`stats`] (window sketches, references, scores) -> outputs.

pub mod backtest;
pub mod clock;
pub mod config;
pub mod decode;
pub mod demo;
pub mod fsutil;
pub mod health;
pub mod ingest;
pub mod monitor;
pub mod offline;
pub mod outputs;
pub mod scale;
pub mod secret;
pub mod service;
pub mod shutdown;
pub mod stats;
pub mod telemetry;
