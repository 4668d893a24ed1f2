//! Global mode (`[scale] mode = "global"`): the Kafka side of partial windows. Each
//! instance publishes the partials of its partitions (`crate::stats::partial`) to the
//! partials topic, in one Kafka transaction with the input offsets they cover; the
//! owner of a stream reads them back with `read_committed` and merges them. What is
//! here today: the compacted topic, the transactional publisher and the partials
//! reader's settings. Not yet here: wiring into the pipeline thread, the merging owner.

pub mod assembler;
pub mod owner;
pub mod panes;
pub mod publisher;

pub use publisher::{
    PartialsPublisher, ScaleError, ensure_partials_topic, owner_partition, partials_consumer_config,
};
