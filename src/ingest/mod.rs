//! Ingest: where records come from (data files, Kafka).

pub mod files;
pub mod kafka;
pub mod message_queue;
pub mod replay;
