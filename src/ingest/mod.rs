//! Ingest: where records come from (data files, Kafka).

pub mod dead_letters;
pub(crate) mod feed;
pub mod files;
pub mod handover;
pub mod kafka;
pub mod message_queue;
pub mod registry;
pub mod replay;
