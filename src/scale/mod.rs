//! Global mode (`[scale] mode = "global"`): the Kafka side of partial windows. Each
//! instance publishes the partials of its partitions (`crate::stats::partial`) to the
//! partials topic, in one Kafka transaction with the input offsets they cover; the
//! owner of a stream reads them back with `read_committed` and merges them. Here: the
//! compacted topic and the transactional publisher (`publisher`), per-partition panes
//! turned into partials (`panes`), stream ownership and the partials reader (`owner`),
//! the owner's merge that hands out each window once (`assembler`), the pipeline
//! thread's publishing with the input offsets (`publishing`, hooked in by
//! `crate::monitor`), the owner's scoring loop and its committed progress (`scoring`),
//! and how the monitor starts both (`wiring`).

pub mod assembler;
pub mod owner;
pub mod panes;
pub mod publisher;
pub mod publishing;
pub mod scoring;
pub mod status;
pub mod wiring;

pub use publisher::{
    PartialsPublisher, ScaleError, ensure_partials_topic, owner_partition, partials_consumer_config,
};
